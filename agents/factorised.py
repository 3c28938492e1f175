"""A factorised action head: one categorical per knob family instead of one over every configuration.

With placement and split the flat action table grows into the hundreds or thousands: 464 configurations
for the phone's placement profile, 1,824 for the full placement space. A ``MultiDiscrete`` action with
one component per knob family (depth, heads, bits, place, ...) has a head of ``sum(len(values))`` logits
instead of ``prod``. sb3-contrib's MaskablePPO masks each component.

* :class:`Factorisation` maps a knob-value vector to a configuration index. A combination that is not
  in the space (a rule or the profile removed it) runs the nearest valid configuration: the fewest value
  steps over all knobs, ties to the lower index.
* Per-family masks come from the flat feasibility mask: value ``v`` of family ``f`` is allowed when some
  allowed configuration has it. The joint choice may still be infeasible; it then runs its nearest
  allowed configuration, so the env's rules always hold.
* :class:`FactorisedVecEnv` wraps the batched env for training.
* :class:`FactorisedController` wraps a trained policy behind the same ``predict()`` as every controller.
  It returns configuration indices.

The comparison with the flat head is ``benchmarks/factorised_head.py``.
"""

from __future__ import annotations

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env import VecEnvWrapper


class Factorisation:
    """Knob-value vectors ↔ configuration indices of a ``runtime.configspace.ConfigSpace``."""

    def __init__(self, space) -> None:
        self.space = space
        self.dims = np.array([len(k.values) for k in space.knobs], dtype=np.int64)
        #: (n_configs, n_knobs): each configuration's value index per knob
        self.values = np.array([[k.values.index(v) for k, v in zip(space.knobs, cfg)] for cfg in space.configs])
        self._stride = np.concatenate([np.cumprod(self.dims[::-1])[::-1][1:], [1]])
        grid = np.stack(np.meshgrid(*[np.arange(d) for d in self.dims], indexing="ij"), -1).reshape(-1, len(self.dims))
        dist = np.abs(grid[:, None, :] - self.values[None, :, :]).sum(-1)  # (n_product, n_configs)
        #: product point (flattened value vector) -> nearest configuration index (itself when valid)
        self.table = np.argmin(dist, axis=1)
        self._offsets = np.concatenate([[0], np.cumsum(self.dims)[:-1]])

    def index(self, actions: np.ndarray, allowed: np.ndarray | None = None) -> np.ndarray:
        """(n, n_knobs) value vectors -> (n,) configuration indices; with ``allowed`` ((n, n_configs) bool),
        an infeasible joint choice runs its nearest allowed configuration."""
        a = np.asarray(actions, dtype=np.int64).reshape(-1, len(self.dims))
        idx = self.table[a @ self._stride]
        if allowed is None:
            return idx
        allowed = np.asarray(allowed, bool).reshape(len(a), -1)
        bad = ~allowed[np.arange(len(a)), idx]
        for j in np.flatnonzero(bad):  # rare: only when the per-family masks allow a forbidden joint choice
            ok = np.flatnonzero(allowed[j])
            d = np.abs(self.values[ok] - a[j]).sum(-1)
            idx[j] = ok[np.argmin(d)]
        return idx

    def masks(self, allowed: np.ndarray) -> np.ndarray:
        """(n, n_configs) flat masks -> (n, sum(dims)) per-family masks (sb3-contrib's MultiDiscrete layout)."""
        allowed = np.asarray(allowed, bool).reshape(-1, len(self.values))
        out = np.zeros((len(allowed), int(self.dims.sum())), bool)
        for f, (off, d) in enumerate(zip(self._offsets, self.dims)):
            for v in range(d):
                out[:, off + v] = allowed[:, self.values[:, f] == v].any(1)
        return out


class FactorisedVecEnv(VecEnvWrapper):
    """The batched env (``envs.batched.BatchedPowerEnv``) with a ``MultiDiscrete`` action per knob family."""

    def __init__(self, venv) -> None:
        self.fac = Factorisation(venv.ref.space if hasattr(venv, "ref") else venv.unwrapped.space)
        super().__init__(venv, action_space=spaces.MultiDiscrete(self.fac.dims))
        self._allowed = None

    def reset(self):
        return self.venv.reset()

    def action_masks(self) -> np.ndarray:
        self._allowed = np.asarray(self.venv.action_masks(), bool)
        return self.fac.masks(self._allowed)

    def env_method(self, method_name, *args, indices=None, **kwargs):
        if method_name == "action_masks":  # sb3-contrib asks the VecEnv for its masks through env_method
            return list(self.action_masks())
        return self.venv.env_method(method_name, *args, indices=indices, **kwargs)

    def step_async(self, actions) -> None:
        self.venv.step_async(self.fac.index(actions, self._allowed))

    def step_wait(self):
        return self.venv.step_wait()


class FactorisedController:
    """A policy trained with :class:`FactorisedVecEnv`, acting with configuration indices (SB3's predict)."""

    uses_masks = True

    def __init__(self, policy, stats: dict | None, space, name: str = "rl:factorised") -> None:
        self.policy, self.stats, self.fac, self.name = policy, stats, Factorisation(space), name

    def predict(self, observation, state=None, episode_start=None, deterministic=True, action_masks=None):
        from agents.run_io import normalize_obs

        obs = normalize_obs(np.asarray(observation, dtype=np.float64), self.stats)
        single = obs.ndim == 1
        allowed = None if action_masks is None else np.asarray(action_masks, bool).reshape(1 if single else len(obs),
                                                                                           -1)
        fm = None if allowed is None else self.fac.masks(allowed)
        act, _ = self.policy.predict(obs, deterministic=deterministic,
                                     action_masks=fm if fm is None or not single else fm[0])
        idx = self.fac.index(np.asarray(act).reshape(-1, len(self.fac.dims)), allowed)
        return (int(idx[0]) if single else idx), state


__all__ = ["Factorisation", "FactorisedController", "FactorisedVecEnv"]
