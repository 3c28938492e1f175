"""A factorised action head: one categorical per knob family instead of one over every configuration.

With placement and split the flat action table grows into the hundreds or thousands: 464 configurations
for the phone's placement profile, 1,824 for the full placement space. A ``MultiDiscrete`` action with
one component per knob family (depth, heads, bits, place, ...) has a head of ``sum(len(values))`` logits
instead of ``prod``. sb3-contrib's MaskablePPO masks each component.

* :class:`runtime.factorised.Factorisation` (numpy only, shared with the device) maps a knob-value vector
  to a configuration index: a combination not in the space runs the nearest valid configuration, an
  infeasible joint choice its nearest allowed one; per-family masks come from the flat feasibility mask.
* :class:`FactorisedVecEnv` wraps the batched env for training (``train.py --action-head factorised``),
  :class:`FactorisedEnv` a scalar env (the val evaluations).
* :class:`FactorisedController` wraps a trained policy behind the same ``predict()`` as every controller.
  It returns configuration indices.

The comparison with the flat head is ``benchmarks/factorised_head.py``.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env import VecEnvWrapper

from runtime.factorised import Factorisation  # the one owner (numpy only; the device decodes with it too)


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


class FactorisedEnv(gym.Wrapper):
    """A scalar env (``MicroLLMPowerEnv``, wrappers allowed) with a ``MultiDiscrete`` action per knob family."""

    def __init__(self, env) -> None:
        super().__init__(env)
        self.fac = Factorisation(env.unwrapped.space)
        self.action_space = spaces.MultiDiscrete(self.fac.dims)

    def action_masks(self) -> np.ndarray:
        return self.fac.masks(self.env.unwrapped.action_masks())[0]

    def step(self, action):
        allowed = self.env.unwrapped.action_masks()[None]
        return self.env.step(int(self.fac.index(np.asarray(action).reshape(1, -1), allowed)[0]))


class FactorisedController:
    """A policy trained with :class:`FactorisedVecEnv`, acting with configuration indices (SB3's predict)."""

    uses_masks = True

    def __init__(self, policy, stats: dict | None, space, name: str = "rl:factorised", maskable: bool = True) -> None:
        self.policy, self.stats, self.fac, self.name = policy, stats, Factorisation(space), name
        #: the policy's own predict takes per-family masks (MaskablePPO); plain PPO's does not, and the masks
        #: then only pick the allowed configuration nearest to its knob values (Factorisation.index)
        self.maskable = maskable

    def predict(self, observation, state=None, episode_start=None, deterministic=True, action_masks=None):
        from agents.run_io import normalize_obs

        obs = normalize_obs(np.asarray(observation, dtype=np.float64), self.stats)
        single = obs.ndim == 1
        allowed = None if action_masks is None else np.asarray(action_masks, bool).reshape(1 if single else len(obs),
                                                                                           -1)
        fm = None if allowed is None or not self.maskable else self.fac.masks(allowed)
        kw = {"action_masks": fm if fm is None or not single else fm[0]} if self.maskable else {}
        act, _ = self.policy.predict(obs, deterministic=deterministic, **kw)
        idx = self.fac.index(np.asarray(act).reshape(-1, len(self.fac.dims)), allowed)
        return (idx[0].copy() if single else idx), state  # SB3's form: an array, shape () for one observation


__all__ = ["Factorisation", "FactorisedController", "FactorisedEnv", "FactorisedVecEnv"]
