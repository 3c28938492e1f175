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

__all__ = ["EnergyDeficitShaping", "quality_per_joule"]


def quality_per_joule(quality: np.ndarray, ept_j: np.ndarray, full: int, dt: float) -> float:
    """Reward lost per joule saved by the cheapest step down from configuration ``full`` (``kappa`` above).

    Raises ``ValueError`` when no configuration spends less per token than ``full`` (nothing to save)."""
    q, e = np.asarray(quality, float), np.asarray(ept_j, float)
    saves = e < e[full]
    if not saves.any():
        raise ValueError("no configuration spends less energy per token than the full one: nothing to price")
    rate = (q[full] - q[saves]) / ((e[full] - e[saves]) * TOK_SCALE * dt)
    return float(max(0.0, rate.min()))


class EnergyDeficitShaping(VecEnvWrapper):
    """``r <- r + gamma * Phi(s') - Phi(s)`` with the energy-deficit potential of the module docstring.

    Args:
        venv: A vec env whose ``unwrapped`` is an ``envs.batched.BatchedPowerEnv`` (it reads the batch's state:
            row, step, charge, capacity); wrap it outside ``VecMonitor`` so that episode returns stay unshaped.
        scale: ``K``, the multiple of the profile's ``kappa`` (> 0).
        gamma: The agent's discount factor (the shaping is policy-invariant for this gamma).
    """

    def __init__(self, venv, scale: float, gamma: float):
        super().__init__(venv)
        from envs.batched import BatchedPowerEnv  # lazy: keeps this module importable without the env's imports

        env = venv.unwrapped
        if not isinstance(env, BatchedPowerEnv):
            raise TypeError(f"EnergyDeficitShaping needs a BatchedPowerEnv underneath, got {type(env).__name__}")
        if not (np.isfinite(scale) and scale > 0):
            raise ValueError(f"the shaping scale must be a finite number > 0, got {scale!r}")
        if not 0.0 < gamma <= 1.0:
            raise ValueError(f"gamma must be in (0, 1], got {gamma!r}")
        self.env, self.gamma = env, float(gamma)
        c, full, tr = env.costs, env.ref.full_config, env.tr
        self.kappa = quality_per_joule(c.quality, c.ept_j, full, env.dt)
        self.price_per_j = float(scale) * self.kappa
        f = {k: np.nan_to_num(tr.flat[k]) for k in ("demand", "supply", "base")}  # padding rows: 0
        need_w = np.minimum(f["demand"], c.tps[full]) * c.ept_j[full] + f["base"] - f["supply"]
        self._cum_j = np.concatenate([[0.0], np.cumsum(need_w * env.dt)])  # exclusive prefix sums over flat rows
        self._phi = np.zeros(env.num_envs)
        self.shaping_sum, self.shaping_n = 0.0, 0  # for the run's log: mean |F| per step

    def deficit_j(self) -> np.ndarray:
        """(n_envs,) energy the full model would lack until each episode ends, J (0 where it would not)."""
        e = self.env
        rem = np.maximum(np.minimum(e.n_rows - e.i, e.max_steps - e.t), 0)  # rows left, this one included
        need = self._cum_j[e.fi + rem] - self._cum_j[e.fi] + e.plant.idle_power_w * rem * e.dt
        avail = (e.soc - e.params.reserve_soc) * e.plant.capacity_j
        return np.maximum(0.0, need - avail)

    def potential(self) -> np.ndarray:
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
