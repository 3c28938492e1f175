"""Heuristic baselines: the rules a person would write by hand, behind ``predict()``.

Every controller here is built from a ``MicroLLMPowerEnv`` (it reads the per-configuration cost
tables ``env.costs`` and the step length) and then decides from the observation vector only
(``runtime.observation``). Rules, in one line each (``docs/agents.md`` has the details):

* ``random``: a uniformly random configuration from its own seeded ``numpy`` Generator.
* ``static-largest``: always the highest-quality configuration (ties: lowest energy/token).
* ``static-smallest``: always the lowest-energy-per-token configuration.
* ``static-fit``: always the best-quality configuration whose power at the split's average
  demand fits the split's average supply plus the battery's energy spread over the trace.
* ``battery-ladder``: plugged → largest; else SoC ≥ 0.6 / 0.3 / 0.15 / below → four descending
  quality tiers of the efficient frontier.
* ``greedy-budget``: highest quality whose predicted power ``base + rate·e_token`` fits
  ``supply + affordable power`` (feature 9), and whose model power ``rate·e_token`` fits the
  LLM's power budget when there is one.
* ``schedutil``: the slowest efficient configuration whose throughput covers 1.25 × the needed
  token rate (the lowest "frequency" with 25 % headroom), capped as thermal headroom shrinks.

The rules run the model on the device: with a split profile (docs/split.md) they choose among its
local configurations only (``local_configs``); the split-aware rules are in ``agents.split_baselines``.

Shared helpers (also used by ``agents.mpc``): the observation indices ``F``, the efficient
frontier, the previous-configuration / base-load / budget estimators.
"""

from __future__ import annotations

import numpy as np

from agents.base import BaseController
from runtime.observation import HEAD
from runtime.rules import SCHEDUTIL_HEADROOM, THERMAL_CAP_C, SchedutilRule, efficient_frontier
from runtime.rules import local_configs as _local_configs

#: observation feature name → index for the features before the configuration block
#: (``runtime.observation.HEAD``: the same indices for every configuration space); the features
#: after it (``power_w``, ``ambient_c``, look-ahead) are in ``ObsModel``, from the env's layout.
F: dict[str, int] = {row[0]: i for i, row in enumerate(HEAD)}
BATTERY_LADDER_SOC = (0.6, 0.3, 0.15)  # SoC thresholds of the ladder's four tiers


def local_configs(costs) -> np.ndarray:
    """Indices of the configurations that run entirely on the device (all, without split ones)."""
    return _local_configs(len(costs.quality), getattr(costs, "offload", None))


def efficient_configs(costs) -> np.ndarray:
    """Indices of the local configurations on the (quality ↑, energy/token ↓) Pareto frontier, sorted by energy
    per token ascending (``runtime.rules.efficient_frontier`` of the cost tables).

    Args:
        costs: ``envs.power_env.CostTables``.
    """
    return efficient_frontier(costs.quality, costs.ept_j, getattr(costs, "offload", None))


def schedutil_rule(env, headroom: float = SCHEDUTIL_HEADROOM, thermal_cap_c: float = THERMAL_CAP_C) -> SchedutilRule:
    """The schedutil-like rule (``runtime.rules.SchedutilRule``) over an env's cost tables and step."""
    env = env.unwrapped
    c = env.costs
    return SchedutilRule(c.tps, c.ept_j, c.quality, env.step_s, env.backlog_cap, getattr(c, "offload", None),
                         headroom, thermal_cap_c)


def largest_config(costs) -> int:
    """Highest quality (local configurations); among equals, the lowest energy per token."""
    loc = local_configs(costs)
    return int(loc[np.lexsort((costs.ept_j[loc], -costs.quality[loc]))[0]])


def smallest_config(costs) -> int:
    """Lowest energy per token (local configurations); among equals, the highest quality."""
    loc = local_configs(costs)
    return int(loc[np.lexsort((-costs.quality[loc], costs.ept_j[loc]))[0]])


class ObsModel:
    """Quantities a rule needs that the observation gives only indirectly.

    * the previous configuration: matched from its features (the configuration block);
    * the power of everything but the model's tokens (idle + the rest of the device): the last
      step's draw (17) minus the previous configuration's modelled token power;
    * the token rate to serve: last demand (10) + backlog (11 × cap) drained in one step.
    """

    def __init__(self, env):
        env = env.unwrapped
        c = env.costs
        self.costs = c
        self.dt = float(env.step_s)
        self.backlog_cap = float(env.backlog_cap)
        self.features = np.asarray(c.features, dtype=np.float64)
        lay = env.layout
        self.cfg_slice = slice(lay.cfg_start, lay.tail_start)
        self.i_power, self.i_ambient = lay.index["power_w"], lay.index["ambient_c"]

    def prev_config(self, obs: np.ndarray) -> int:
        feat = np.asarray(obs[self.cfg_slice], dtype=np.float64)
        return int(np.argmin(np.abs(self.features - feat).sum(1)))

    def backlog_tokens(self, obs: np.ndarray) -> float:
        return float(obs[F["backlog_frac"]]) * self.backlog_cap

    def need_tps(self, obs: np.ndarray) -> float:
        """Tokens/s to serve this step: the demand just seen plus the backlog, drained now."""
        return float(obs[F["demand_tps"]]) + self.backlog_tokens(obs) / self.dt

    def llm_w(self, obs: np.ndarray) -> float:
        """The model's own power in the last step, W: served rate × the previous configuration's
        energy per token.

        The served rate is not observed: a non-empty backlog means the previous configuration
        ran flat out (its throughput), else it served the demand. A zero latency feature means
        nothing was served yet (the first observation of an episode). Switch energy is ignored.
        """
        if float(obs[F["latency_over_slo"]]) <= 0.0:
            return 0.0
        j = self.prev_config(obs)
        tps = float(self.costs.tps[j])
        rate = tps if obs[F["backlog_frac"]] > 0 else min(float(obs[F["demand_tps"]]), tps)
        return min(rate * float(self.costs.ept_j[j]), float(obs[self.i_power]))

    def base_w(self, obs: np.ndarray) -> float:
        """Non-model power (idle + device base load), W: the last step's draw minus ``llm_w``."""
        return max(float(obs[self.i_power]) - self.llm_w(obs), 0.0)

    def token_w(self, obs: np.ndarray) -> np.ndarray:
        """Predicted model power (W) of every configuration this step: served rate × e_token."""
        return np.minimum(self.need_tps(obs), self.costs.tps) * self.costs.ept_j

    def power_w(self, obs: np.ndarray, base_w: float | None = None) -> np.ndarray:
        """Predicted draw (W) of every configuration this step: base + served rate × e_token."""
        base = self.base_w(obs) if base_w is None else base_w
        return base + self.token_w(obs)


class BudgetEstimator:
    """The LLM's power budget in watts, inferred from two consecutive observations.

    The observation carries the budget allowance in hours of budget (feature 6,
    ``(allowance + B·grace)/(B·3600)``) but not the budget B itself. Between two steps the
    allowance grows by ``B·dt − P_llm·dt`` with P_llm the model's own power in the last step
    (``ObsModel.llm_w``), so ``B = P_llm / (1 − 3600·Δ/dt)``: exact (up to float32 rounding)
    when the last step served the demand without a switch. While feature 6 sits on a clip
    bound (it saturates at 1 h of budget), or the model drew nothing, the last estimate is kept.
    """

    def __init__(self, dt_s: float):
        self.dt = float(dt_s)
        self.prev: float | None = None
        self.budget_w: float | None = None

    def reset(self) -> None:
        self.prev, self.budget_w = None, None

    def update(self, obs: np.ndarray, llm_w: float) -> float | None:
        """Feed the next observation and the model's power of the step that led to it."""
        if obs[F["has_budget"]] < 0.5:
            self.prev = None
            return None
        frac = float(obs[F["budget_left_frac"]])
        if self.prev is not None and -10.0 < frac < 1.0 and -10.0 < self.prev < 1.0:
            denom = 1.0 - 3600.0 * (frac - self.prev) / self.dt
            if denom > 1e-3 and llm_w > 0:
                self.budget_w = llm_w / denom
        self.prev = frac
        return self.budget_w


class RandomController(BaseController):
    """Uniformly random configuration, from its own seeded Generator (reproducible)."""

    name = "random"
    under_masks = False  # the score's zero: uniform over every configuration, as it always was

    def __init__(self, env, seed: int = 0):
        self.n = int(env.unwrapped.action_space.n)
        self.rng = np.random.default_rng(seed)

    def act(self, obs: np.ndarray, env_index: int) -> int:
        return int(self.rng.integers(self.n))


class StaticController(BaseController):
    """Always the same configuration."""

    def __init__(self, env, config: int, name: str):
        self.config, self.name = int(config), name

    def act(self, obs: np.ndarray, env_index: int) -> int:
        return self.config


def static_largest(env) -> StaticController:
    return StaticController(env, largest_config(env.unwrapped.costs), "static-largest")


def static_smallest(env) -> StaticController:
    return StaticController(env, smallest_config(env.unwrapped.costs), "static-smallest")


def static_fit_config(env) -> int:
    """Best quality whose power at the split's mean demand fits the split's mean supply.

    Per trace of the env's split: available power = mean supply + initial battery energy /
    trace duration; needed power of configuration j = idle + mean base load + min(mean demand,
    tps_j) · e_j. Both are averaged over the traces (each trace weighs the same, as each is one
    evaluation episode). Falls back to the lowest-energy configuration when none fits.
    """
    env = env.unwrapped
    c = env.costs
    trs = env.traces
    avail = np.mean([np.mean(t.supply_w) + t.capacity_j * t.initial_soc / (t.n * env.step_s) for t in trs])
    other = np.mean([t.device.idle_power_w + np.mean(t.base_w) for t in trs])
    demand = np.mean([np.mean(t.demand_tps) for t in trs])
    need = other + np.minimum(demand, c.tps) * c.ept_j
    loc = local_configs(c)
    fits = loc[need[loc] <= avail]
    if fits.size == 0:
        return smallest_config(c)
    return int(fits[np.lexsort((c.ept_j[fits], -c.quality[fits]))[0]])


def static_fit(env) -> StaticController:
    return StaticController(env, static_fit_config(env), "static-fit")


class BatteryLadderController(BaseController):
    """Plugged → largest; else four quality tiers by SoC (≥ 0.6, ≥ 0.3, ≥ 0.15, below).

    The tiers are the efficient frontier's top, 2/3, 1/3 and bottom configurations by quality.
    """

    name = "battery-ladder"

    def __init__(self, env, thresholds: tuple[float, ...] = BATTERY_LADDER_SOC):
        c = env.unwrapped.costs
        front = efficient_configs(c)[::-1]  # quality descending
        m = len(thresholds) + 1
        self.tiers = [int(front[round(k * (len(front) - 1) / (m - 1))]) for k in range(m)]
        self.tiers[0] = largest_config(c)
        self.thresholds = tuple(thresholds)

    def act(self, obs: np.ndarray, env_index: int) -> int:
        if obs[F["plugged"]] > 0.5:
            return self.tiers[0]
        soc = float(obs[F["soc"]])
        for tier, th in enumerate(self.thresholds):
            if soc >= th:
                return self.tiers[tier]
        return self.tiers[-1]


class GreedyBudgetController(BaseController):
    """Highest quality whose predicted power fits ``supply + affordable power`` (and the budget).

    Predicted device power of j: ``base + min(need, tps_j)·e_j`` (``ObsModel``), at most
    ``supply (1) + affordable power (9)``; with a budget (``BudgetEstimator``; it covers the
    LLM's own power) also ``min(need, tps_j)·e_j ≤ budget``. Nothing fits → the lowest energy
    per token.
    """

    name = "greedy-budget"

    def __init__(self, env):
        self.m = ObsModel(env)
        c = self.m.costs
        loc = local_configs(c)
        self.order = loc[np.lexsort((c.ept_j[loc], -c.quality[loc]))]  # quality descending, then cheaper first
        self.cheapest = smallest_config(c)
        self.budgets: dict[int, BudgetEstimator] = {}

    def reset(self, env_index: int) -> None:
        self.budgets.pop(env_index, None)

    def act(self, obs: np.ndarray, env_index: int) -> int:
        est = self.budgets.setdefault(env_index, BudgetEstimator(self.m.dt))
        budget_w = est.update(obs, self.m.llm_w(obs))
        cap = float(obs[F["supply_w"]]) + float(obs[F["affordable_power_w"]])
        base, tok = self.m.base_w(obs), self.m.token_w(obs)
        ok = base + tok <= cap
        if budget_w is not None:
            ok &= tok <= budget_w
        ok = ok[self.order]  # local configurations, best first
        return int(self.order[np.argmax(ok)]) if ok.any() else self.cheapest


class SchedutilController(BaseController):
    """schedutil-like: lowest "frequency" (throughput) covering 1.25 × the needed rate.

    Needed rate = last demand + backlog / dt. Among efficient configurations (quality ↑ as
    throughput ↓), pick the slowest whose throughput ≥ 1.25 × need (else the fastest). Thermal
    cap, like the kernel's thermal pressure on the max frequency: with headroom h < 5 °C only
    configurations whose token power ≤ (h / 5 °C) × the largest token power are allowed; the
    choice steps down the frontier until allowed (the cheapest when none is). The rule itself is
    ``runtime.rules.SchedutilRule`` (also the policy's rule hint, ``EnvParams.rule_hint``).
    """

    name = "schedutil"

    def __init__(self, env, headroom: float = SCHEDUTIL_HEADROOM, thermal_cap_c: float = THERMAL_CAP_C):
        self.m = ObsModel(env)
        self.rule = schedutil_rule(env, headroom, thermal_cap_c)
        self.headroom, self.thermal_cap_c = headroom, thermal_cap_c

    @property
    def front(self) -> np.ndarray:
        """The frontier the rule walks, energy ascending = throughput roughly descending (a subclass may narrow it)."""
        return self.rule.front

    @front.setter
    def front(self, front: np.ndarray) -> None:
        self.rule.front = front

    def act(self, obs: np.ndarray, env_index: int) -> int:
        return self.rule.choose(float(obs[F["demand_tps"]]), float(obs[F["backlog_frac"]]),
                                float(obs[F["temp_headroom_c"]]))


__all__ = [
    "F", "efficient_configs", "local_configs", "largest_config", "smallest_config", "ObsModel", "BudgetEstimator",
    "RandomController", "StaticController", "static_largest", "static_smallest", "static_fit",
    "static_fit_config", "BatteryLadderController", "GreedyBudgetController", "SchedutilController", "schedutil_rule",
    "SCHEDUTIL_HEADROOM", "THERMAL_CAP_C",
]
