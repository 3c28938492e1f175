"""Forecast model-predictive control on the shared dynamics core.

``ForecastMPC`` (receding horizon, re-planned every step):

1. forecast: supply = mean of the last ``history`` observed supplies (past and present only),
   demand = mean of the last observed demands, ambient = the last observed ambient, the other
   device load = ``ObsModel.base_w``, the LLM's power budget = ``BudgetEstimator`` (inferred
   from the budget feature);
2. model: the device it runs on — thermal constants, battery capacity and charge efficiency,
   idle power — from the bound env's current trace (the plant model a deployed MPC gets by
   characterising its device; the *future* of the trace is never read);
3. roll every configuration, held for ``horizon`` steps, through ``runtime.dynamics.Dynamics``
   (the environments' own ``step_core``, state in, state out) on the forecast inputs, from the
   observed SoC, temperature, backlog and configuration;
4. a configuration is *safe* when the rollout has no battery death, no temperature above the
   trip point, no budget violation, and its mean net battery draw (power − forecast supply) is
   at most the affordable power (stored energy / time to the deadline, else over the rolling
   ``EnvParams.horizon_s``) — so it could last; pick the safe configuration with the highest predicted
   return (quality × tokens minus SLO / drop penalties), else the lowest energy per token.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from agents.base import BaseController
from agents.baselines import BudgetEstimator, F, ObsModel, smallest_config
from runtime.dynamics import Dynamics, Inputs, plant_of


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
        self.dyn = Dynamics(env.unwrapped.costs, env.unwrapped.params)
        c = self.m.costs
        self.n = len(c.names)
        self.actions = np.arange(self.n)
        self.cheapest = smallest_config(c)
        self.grace_s = float(env.unwrapped.params.budget_grace_s)
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

    def act(self, obs: np.ndarray, env_index: int) -> int:
        mem = self._memory(env_index)
        mem["supply"].append(float(obs[F["supply_w"]]))
        mem["demand"].append(float(obs[F["demand_tps"]]))
        budget_w = mem["budget"].update(obs, self.m.llm_w(obs))
        env = self.envs[min(env_index, len(self.envs) - 1)]
        tr, n = env.trace, self.n
        plant = plant_of(tr.capacity_j, tr.device)
        supply = float(np.mean(mem["supply"]))
        base = max(self.m.base_w(obs) - tr.device.idle_power_w, 0.0)  # the dynamics add idle power themselves
        x = Inputs(float(np.mean(mem["demand"])), supply, float(obs[self.m.i_ambient]), base,
                   budget_w if budget_w is not None else np.nan,
                   float(obs[F["bandwidth_mbps"]]))  # the link holds as last seen (persistence forecast)
        if budget_w is not None:  # budget feature = (allowance + B·grace) / (B·3600)
            left_j = float(obs[F["budget_left_frac"]]) * budget_w * 3600.0 - budget_w * self.grace_s
        else:
            left_j = 0.0
        state = self.dyn.state(n, float(obs[F["soc"]]), float(obs[F["temp_c"]]), self.m.backlog_tokens(obs),
                               left_j, self.m.prev_config(obs))
        ret, energy_j = np.zeros(n), np.zeros(n)
        unsafe = np.zeros(n, dtype=bool)
        for _ in range(self.horizon):  # the forecast holds for the whole horizon
            state, r = self.dyn.step(state, self.actions, x, plant)
            ret += r.reward
            energy_j += r.energy_j
            unsafe |= r.dead | (r.r_thermal < 0) | (r.r_budget < 0)
        drain_w = energy_j / (self.horizon * self.m.dt) - supply
        unsafe |= drain_w > float(obs[F["affordable_power_w"]])
        if unsafe.all():
            return self.cheapest
        return int(np.argmax(np.where(unsafe, -np.inf, ret)))


__all__ = ["ForecastMPC"]
