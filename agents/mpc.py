"""Forecast model-predictive control, and the batched dynamics model it shares with the oracle.

``batched_model(env)`` wraps the environment's own vectorised dynamics
(``envs.batched.BatchedPowerEnv._step``) around an existing ``MicroLLMPowerEnv`` — the same
profile and traces, no second copy of the equations. Callers set its state arrays (``k, i, soc,
temp, backlog, a, budget_left``) to any batch size and call ``_step(actions)``.

``ForecastMPC`` (receding horizon, re-planned every step):

1. forecast: supply = mean of the last ``history`` observed supplies (feature 1, past and
   present only), demand = mean of the last observed demands (feature 10), ambient = the last
   observed ambient (18), the other device load = ``ObsModel.base_w``, the LLM's power budget
   = ``BudgetEstimator`` (inferred from feature 6);
2. model: the device it runs on — thermal parameters, battery capacity and charge efficiency,
   idle power — read from the bound env's current trace (the plant model a deployed MPC gets by
   characterising its device; the *future* of the trace is never read);
3. roll every configuration, held for ``horizon`` steps, through ``BatchedPowerEnv._step`` on
   a one-row forecast trace, from the observed SoC, temperature, backlog and configuration;
4. a configuration is *safe* when the rollout has no battery death, no temperature above the
   trip point, no budget violation, and its mean net battery draw (power − forecast supply) is
   at most the affordable power (feature 9, stored energy / time left) — so it could last until
   the deadline or the end of the trace; pick the safe configuration with the highest predicted
   return (quality × tokens minus SLO / drop penalties), else the lowest energy per token.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from agents.base import BaseController
from agents.baselines import BudgetEstimator, F, ObsModel, smallest_config


def batched_model(env):
    """A ``BatchedPowerEnv`` over ``env``'s profile, traces and parameters (for ``_step`` only).

    Args:
        env: A ``MicroLLMPowerEnv`` (wrappers are unwrapped).

    Returns:
        ``BatchedPowerEnv`` whose ``_step`` is the env's dynamics, vectorised.
    """
    from envs.batched import BatchedPowerEnv

    env = env.unwrapped
    model = BatchedPowerEnv(n_envs=1, ref=env)
    assert model.ref is env
    return model


def set_batch(model, n: int, k, i, soc, temp_c, backlog, prev_a, budget_left_j) -> None:
    """Set the state arrays of ``model`` (a ``batched_model``) to a batch of ``n`` states."""
    model.k = np.broadcast_to(np.asarray(k, dtype=int), (n,)).copy()
    model.i = np.broadcast_to(np.asarray(i, dtype=int), (n,)).copy()
    model.soc = np.broadcast_to(np.asarray(soc, dtype=float), (n,)).copy()
    model.temp = np.broadcast_to(np.asarray(temp_c, dtype=float), (n,)).copy()
    model.backlog = np.broadcast_to(np.asarray(backlog, dtype=float), (n,)).copy()
    model.a = np.broadcast_to(np.asarray(prev_a, dtype=int), (n,)).copy()
    model.budget_left = np.broadcast_to(np.asarray(budget_left_j, dtype=float), (n,)).copy()


class ForecastMPC(BaseController):
    """Receding-horizon MPC on a forecast made from past observations only (module docstring).

    Args:
        env: The env whose profile/step it models; ``bind`` it (or a list, one per VecEnv index)
            to the env(s) it acts on, so it knows the device of the current trace.
        horizon: Prediction horizon, steps (default 30 = 5 min at 10 s).
        history: Steps of past supply/demand averaged into the forecast.
    """

    name = "mpc"

    def __init__(self, env, horizon: int = 30, history: int = 30):
        self.m = ObsModel(env)
        self.horizon, self.history = int(horizon), int(history)
        self.model = batched_model(env)
        c = self.m.costs
        self.n = len(c.names)
        self.actions = np.arange(self.n)
        self.cheapest = smallest_config(c)
        self.grace_s = float(env.unwrapped.budget_grace_s)
        self.mem: dict[int, dict] = {}
        self.envs = [env.unwrapped]

    def bind(self, envs) -> ForecastMPC:
        """Act on ``envs`` (one env, or a list indexed like the VecEnv's sub-envs)."""
        self.envs = [e.unwrapped for e in (envs if isinstance(envs, (list, tuple)) else [envs])]
        return self

    def reset(self, env_index: int) -> None:
        self.mem.pop(env_index, None)

    def _memory(self, j: int) -> dict:
        if j not in self.mem:
            self.mem[j] = {"supply": deque(maxlen=self.history), "demand": deque(maxlen=self.history),
                           "budget": BudgetEstimator(self.m.dt)}
        return self.mem[j]

    def _load_device(self, env) -> None:
        """One-row forecast trace with the bound env's device parameters."""
        tr, md = env.trace, self.model
        d = tr.device
        md.tr_rth, md.tr_tau, md.tr_tmax = np.array([d.r_th_c_per_w]), np.array([d.tau_s]), np.array([d.t_max_c])
        md.tr_k, md.tr_tmin = np.array([d.throttle_per_c]), np.array([d.throttle_min])
        md.tr_eta, md.tr_idle = np.array([d.charge_efficiency]), np.array([d.idle_power_w])
        md.tr_cap, md.tr_n = np.array([tr.capacity_j]), np.array([10**9])

    def act(self, obs: np.ndarray, env_index: int) -> int:
        mem = self._memory(env_index)
        mem["supply"].append(float(obs[F["supply_w"]]))
        mem["demand"].append(float(obs[F["demand_tps"]]))
        budget_w = mem["budget"].update(obs, self.m.llm_w(obs))
        env = self.envs[min(env_index, len(self.envs) - 1)]
        self._load_device(env)
        md, n = self.model, self.n
        supply = float(np.mean(mem["supply"]))
        idle = float(md.tr_idle[0])
        base = max(self.m.base_w(obs) - idle, 0.0)  # _step adds the device's idle power itself
        md.T_supply, md.T_dem = np.array([[supply]]), np.array([[float(np.mean(mem["demand"]))]])
        md.T_amb, md.T_base = np.array([[float(obs[F["ambient_c"]])]]), np.array([[base]])
        md.T_bud = np.array([[budget_w if budget_w is not None else np.nan]])
        if budget_w is not None:  # feature 6 = (allowance + B·grace) / (B·3600)
            left_j = float(obs[F["budget_left_frac"]]) * budget_w * 3600.0 - budget_w * self.grace_s
        else:
            left_j = 0.0
        set_batch(md, n, 0, 0, float(obs[F["soc"]]), float(obs[F["temp_c"]]), self.m.backlog_tokens(obs),
                  self.m.prev_config(obs), left_j)
        ret, energy_j = np.zeros(n), np.zeros(n)
        unsafe = np.zeros(n, dtype=bool)
        for _ in range(self.horizon):
            md.i = np.zeros(n, dtype=int)  # the forecast row holds for the whole horizon
            r, dead, _ = md._step(self.actions)
            t = md.last_terms
            ret += r
            energy_j += md.last_energy_j
            unsafe |= dead | (t["thermal"] < 0) | (t["budget"] < 0)
        drain_w = energy_j / (self.horizon * self.m.dt) - supply
        unsafe |= drain_w > float(obs[F["affordable_power_w"]])
        if unsafe.all():
            return self.cheapest
        return int(np.argmax(np.where(unsafe, -np.inf, ret)))


__all__ = ["ForecastMPC", "batched_model", "set_batch"]
