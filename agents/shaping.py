"""Potential-based reward shaping by the battery's energy deficit (``train.py --shape-energy K``).

Why. Where the battery cannot run the full model until the episode ends, the oracle saves charge early (e.g. int8
for 448 of deadline-00's first 609 steps, benchmarks/results/oracle_vs_schedutil_deadline00.md) so that the shield
never forces the smallest configuration near the end. The reward for that saving arrives 300-600 steps after the
decision, beyond what PPO's advantage estimates credit at gamma 0.995 (docs/agents.md). Shaping moves the credit
to the step that saves: while the remaining energy falls short of what the full model would need until the
episode ends, every joule saved earns ``price_per_j`` at once.

How. Ng, Harada & Russell (1999): adding ``F = gamma * Phi(s') - Phi(s)`` to the reward, for any function
``Phi`` of the state, leaves the optimal policy unchanged (``Phi`` of a terminal state is 0). Here

    Phi(s) = -price_per_j * max(0, need_j - avail_j)

* ``avail_j = (soc - reserve_soc) * capacity_j``: the energy above the reserve, where the shield takes over;
* ``need_j``: what running the full configuration on the trace's demand until the episode ends would draw, net
  of the supply: the sum over the episode's remaining rows of ``(min(demand, tps_full) * ept_full + base + idle
  - supply) * dt`` (prefix sums over the trace rows; charge efficiency and a full battery ignored).

``--shape-potential dual`` (a price per state instead of one constant): the value the energy constraint costs,
from the Lagrangian dual of "maximise the remaining quality reward subject to the remaining energy":

    Phi(s) = scale * min over lambda in LAMBDAS of  sum over the remaining rows of h_lambda(row) + lambda * avail_j
    h_lambda(row) = max_j (r_j - lambda * E_j) - max_j r_j - lambda * (idle + base - supply) * dt

with ``r_j = q_j * min(demand, tps_j) / TOK_SCALE`` and ``E_j = min(demand, tps_j) * dt * ept_j`` the reward and
energy of configuration j serving the row's demand (device configurations that fit the trace's device; queueing,
heat and switching ignored). lambda = 0 gives 0, so Phi <= 0 and is 0 wherever the remaining energy lets every
row run its best configuration; where it does not, the minimising lambda is that state's shadow price of a joule,
``avail_j`` is the energy above the reserve, as for the deficit (below it the shield forces the smallest
configuration, which is what saving avoids; deadline-00 is only tight against the reserve). The price is high where
the battery barely covers the smallest configuration (a phone session that starts at 15 %) and low
where int8 for a while suffices (deadline-00). Precomputed per trace as prefix sums over ``LAMBDAS`` (float32,
restarting at each trace so that the sums stay small); a step reads two rows per env.

The potential reads the trace's future (privileged information). That is allowed: it only shapes training
rewards, the policy never sees it, and the env, the val split and every score use the unshaped reward.

The price. ``price_per_j = K * kappa``, with ``kappa`` the profile's cheapest exchange of quality for energy:
the smallest ``(q_full - q_j) / ((e_full - e_j) * TOK_SCALE * dt)`` over configurations ``j`` that spend less
per token than the full one (reward lost per joule saved, serving the same tokens). At ``K = 1`` a step down to
that configuration in a deficit state is shaped to cost nothing now; whether it pays is left to the return.
"""

from __future__ import annotations

import numpy as np
from stable_baselines3.common.vec_env import VecEnvWrapper

from runtime.dynamics import TOK_SCALE

__all__ = ["LAMBDAS", "POTENTIALS", "DeathWeight", "EnergyShaping", "dual_prefix_sums", "quality_per_joule"]

#: the potentials of ``train.py --shape-potential``
POTENTIALS = ("deficit", "dual")
#: the dual potential's grid of energy prices, reward per J: 0, then log-spaced up to 0.02 (a shortfall of 2.5 kJ below
#: what the smallest configuration needs, about a phone battery's last 5 %, then costs about the death weight, 50;
#: a higher cap makes the potential of a hopeless episode, e.g. a solar node at night, hundreds of rewards deep)
LAMBDAS = np.concatenate([[0.0], np.geomspace(3e-5, 0.02, 15)])


def quality_per_joule(quality: np.ndarray, ept_j: np.ndarray, full: int, dt: float) -> float:
    """Reward lost per joule saved by the cheapest step down from configuration ``full`` (``kappa`` above).

    Raises ``ValueError`` when no configuration spends less per token than ``full`` (nothing to save)."""
    q, e = np.asarray(quality, float), np.asarray(ept_j, float)
    saves = e < e[full]
    if not saves.any():
        raise ValueError("no configuration spends less energy per token than the full one: nothing to price")
    rate = (q[full] - q[saves]) / ((e[full] - e[saves]) * TOK_SCALE * dt)
    return float(max(0.0, rate.min()))


def _trace_prefix_sums(tr, row_terms, width: int, dtype) -> tuple[np.ndarray, np.ndarray]:
    """``(offsets, S)``: ``S[offsets[k] + i]`` is the sum of ``row_terms(k, n_k)`` (an ``(n_k, width)`` array) over
    rows ``0..i-1`` of trace ``k`` (``n_k + 1`` entries per trace, restarting at each trace so the sums stay small)."""
    offsets = np.concatenate([[0], np.cumsum(tr.n + 1)[:-1]]).astype(np.int64)
    out = np.zeros((int((tr.n + 1).sum()), width), dtype)
    for k, n in enumerate(tr.n):
        out[offsets[k] + 1: offsets[k] + n + 1] = np.cumsum(row_terms(k, n), axis=0)
    return offsets, out


def dual_prefix_sums(env, lambdas: np.ndarray = LAMBDAS) -> tuple[np.ndarray, np.ndarray]:
    """``(offsets, H)`` of the dual potential for a ``BatchedPowerEnv``'s traces: ``H[offsets[k] + i, l]`` is the sum
    of ``h_lambda_l`` over rows ``0..i-1`` of trace ``k`` (``n_k + 1`` entries per trace, float32)."""
    c, tr, dt = env.costs, env.tr, env.dt
    dev = np.flatnonzero(np.asarray(c.offload) == 0)  # configurations that run on the device
    lam = np.asarray(lambdas, float)

    def terms(k: int, n: int) -> np.ndarray:
        ok = dev[env._fits[k][dev]]  # the ones that fit this trace's device
        d = np.nan_to_num(tr.demand[k, :n])[:, None]
        served = np.minimum(d, c.tps[ok][None, :])  # tok/s, (n, configs)
        r = c.quality[ok][None, :] * served / TOK_SCALE
        e = served * dt * c.ept_j[ok][None, :]
        rest_j = (tr.idle[k] + np.nan_to_num(tr.base[k, :n]) - np.nan_to_num(tr.supply[k, :n])) * dt
        r_max = r.max(axis=1)
        return np.stack([(r - x * e).max(axis=1) - r_max - x * rest_j for x in lam], axis=1)

    return _trace_prefix_sums(tr, terms, len(lam), np.float32)


def deficit_prefix_sums(env) -> tuple[np.ndarray, np.ndarray]:
    """``(offsets, N)``: ``N[offsets[k] + i, 0]`` is what the full configuration would draw on trace ``k``'s demand,
    net of the supply and the other load, over rows ``0..i-1``, J (float64; the device's idle power is added per
    env)."""
    c, tr, full = env.costs, env.tr, env.ref.full_config

    def terms(k: int, n: int) -> np.ndarray:
        need_w = (np.minimum(np.nan_to_num(tr.demand[k, :n]), c.tps[full]) * c.ept_j[full]
                  + np.nan_to_num(tr.base[k, :n]) - np.nan_to_num(tr.supply[k, :n]))
        return (need_w * env.dt)[:, None]

    return _trace_prefix_sums(tr, terms, 1, np.float64)


class EnergyShaping(VecEnvWrapper):
    """``r <- r + gamma * Phi(s') - Phi(s)`` with the energy-deficit (default) or dual potential of the module
    docstring.

    Args:
        venv: A vec env whose ``unwrapped`` is an ``envs.batched.BatchedPowerEnv`` (it reads the batch's state:
            row, step, charge, capacity); wrap it outside ``VecMonitor`` so that episode returns stay unshaped.
        scale: ``K``, the multiple of the profile's ``kappa`` (deficit) or of the dual value (dual); > 0.
        gamma: The agent's discount factor (the shaping is policy-invariant for this gamma).
        potential: ``"deficit"`` or ``"dual"`` (``POTENTIALS``).
    """

    def __init__(self, venv, scale: float, gamma: float, potential: str = "deficit"):
        super().__init__(venv)
        from envs.batched import BatchedPowerEnv  # lazy: keeps this module importable without the env's imports

        env = venv.unwrapped
        if not isinstance(env, BatchedPowerEnv):
            raise TypeError(f"EnergyShaping needs a BatchedPowerEnv underneath, got {type(env).__name__}")
        if not (np.isfinite(scale) and scale > 0):
            raise ValueError(f"the shaping scale must be a finite number > 0, got {scale!r}")
        if not 0.0 < gamma <= 1.0:
            raise ValueError(f"gamma must be in (0, 1], got {gamma!r}")
        if potential not in POTENTIALS:
            raise ValueError(f"potential must be one of {', '.join(POTENTIALS)}, got {potential!r}")
        self.kind, self.scale = potential, float(scale)
        self.env, self.gamma = env, float(gamma)
        c, full = env.costs, env.ref.full_config
        self.kappa = quality_per_joule(c.quality, c.ept_j, full, env.dt)
        self.price_per_j = float(scale) * self.kappa
        # one table of per-trace prefix sums, for the potential asked for only (built once, at start-up)
        if potential == "dual":
            self._lam = LAMBDAS
            self._off, self._table = dual_prefix_sums(env, LAMBDAS)
        else:
            self._off, self._table = deficit_prefix_sums(env)
        self._phi = np.zeros(env.num_envs)
        self.shaping_sum, self.shaping_n = 0.0, 0  # for the run's log: mean |F| per step

    def _rows_left(self) -> np.ndarray:
        e = self.env
        return np.maximum(np.minimum(e.n_rows - e.i, e.max_steps - e.t), 0)  # rows left, this one included

    def _remaining(self) -> np.ndarray:
        """(n_envs, width): the table's sums over each episode's remaining rows (this one included)."""
        e = self.env
        a = self._off[e.k] + e.i
        return self._table[a + self._rows_left()].astype(float) - self._table[a]

    def _avail_j(self) -> np.ndarray:
        e = self.env
        return (e.soc - e.params.reserve_soc) * e.plant.capacity_j

    def deficit_j(self) -> np.ndarray:
        """(n_envs,) energy the full model would lack until each episode ends, J (0 where it would not)."""
        if self.kind != "deficit":
            raise RuntimeError("deficit_j needs potential='deficit' (this wrapper built the dual's table)")
        e = self.env
        need = self._remaining()[:, 0] + e.plant.idle_power_w * self._rows_left() * e.dt
        return np.maximum(0.0, need - self._avail_j())

    def dual_value(self) -> tuple[np.ndarray, np.ndarray]:
        """Two (n_envs,) arrays: the dual potential before ``scale`` (what the energy constraint costs the rest of
        the episode, <= 0) and the minimising price per env (reward per J)."""
        if self.kind != "dual":
            raise RuntimeError("dual_value needs potential='dual' (this wrapper built the deficit's table)")
        v = self._remaining() + self._lam[None, :] * self._avail_j()[:, None]  # (n_envs, lambdas)
        best = v.argmin(axis=1)
        return v[np.arange(len(best)), best], self._lam[best]

    def potential(self) -> np.ndarray:
        if self.kind == "dual":
            return self.scale * self.dual_value()[0]
        return -self.price_per_j * self.deficit_j()

    def reset(self):
        obs = self.venv.reset()
        self._phi = self.potential()
        return obs

    def step_wait(self):
        obs, rew, done, infos = self.venv.step_wait()
        phi = self.potential()  # envs that ended are reset already: theirs is the next episode's start
        f = self.gamma * np.where(done, 0.0, phi) - self._phi
        self._phi = phi
        self.shaping_sum += float(np.abs(f).sum())
        self.shaping_n += f.size
        return obs, (rew + f).astype(np.float32), done, infos


class DeathWeight(VecEnvWrapper):
    """A training-only price on battery death (``train.py --train-death-weight W``): ``r <- r - extra`` on the step
    an episode ends in death, with ``extra = W - weights.death`` (the env's own weight is already in ``r``).

    Why. A device knows neither when its session ends nor when a charger comes; the oracle that labels the warm
    start does, and spends a low battery to the last joule where the session ends in time. A policy that imitates
    it dies where the session goes on. A higher price on death in training only asks the policy to hedge where its
    observations cannot tell the two apart; unlike shaping it changes the optimal policy, on purpose. Episode
    returns (outside, in ``VecMonitor``), val and every score keep the env's weight.

    A death is an episode end that is not a truncation: the batched env terminates only at death
    (``envs.batched``: ``term`` is ``dead``) and marks every other end ``TimeLimit.truncated``.
    """

    def __init__(self, venv, weight: float, env_weight: float):
        super().__init__(venv)
        if not (np.isfinite(weight) and weight >= env_weight):
            raise ValueError(f"the training death weight must be a finite number >= the env's ({env_weight:g}), "
                             f"got {weight!r}")
        self.extra = float(weight) - float(env_weight)  # deaths are logged already: reward_terms/death

    def reset(self):
        return self.venv.reset()

    def step_wait(self):
        obs, rew, done, infos = self.venv.step_wait()
        dead = np.array([bool(d) and not info.get("TimeLimit.truncated", True) for d, info in zip(done, infos)])
        if dead.any():
            rew = rew - self.extra * dead
        return obs, np.asarray(rew, dtype=np.float32), done, infos
