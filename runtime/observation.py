"""The policy's observation vector — one builder shared by the environment and the device.

The scalar environment, the batched environment and the runtime manager all fill it through an
:class:`ObsLayout`, from the same named quantities, so a policy trained in simulation reads the
same features, in the same order and units, on the device. numpy + standard library only.

The layout is: 14 device/workload features, then the "current configuration" block (one or more
features per knob, declared in ``runtime.configspace``, so its length follows the number of
knobs), then the last step's power and the ambient temperature, then the optional blocks: the thermal
headroom (``EnvParams.thermal_obs``), the smoothed demand (``EnvParams.demand_avg_s``), the power block
(``EnvParams.power_cap``), the rule hint
(``EnvParams.rule_hint``), the processors' availability (a space with placement), the objective (goal-conditioned
policies) and ``lookahead`` supply-power
forecasts. For the elastic model's three
knobs, without the optional blocks but the look-ahead:

========  ==========================  ======  =======  =======
index     feature                     unit    min      max
========  ==========================  ======  =======  =======
0         soc                         frac    0        1
1         supply_w                    W       0        500
2         plugged                     0/1     0        1
3         temp_c                      °C      -40      150
4         temp_headroom_c (Tmax − T)  °C      -190     190
5         has_budget                  0/1     0        1
6         budget_left_frac            frac    -10      1
7         has_deadline                0/1     0        1
8         time_to_deadline_h          h       0        100
9         affordable_power_w          W       0        500
10        demand_tps                  tok/s   0        10000
11        backlog_frac (of cap)       frac    0        1
12        latency_over_slo            ratio   0        100
13        bandwidth_mbps              Mbit/s  0        10000
14        config_depth_frac           frac    0        1
15        config_heads_frac           frac    0        1
16        config_bits_frac (bits/32)  frac    0        1
17        power_w (last step draw)    W       0        500
18        ambient_c                   °C      -40      80
19..      supply_w_ahead_k (opt.)     W       0        500
========  ==========================  ======  =======  =======

``python -m envs.describe`` prints the table of any profile's space.

``affordable_power_w`` is the average power the battery can sustain until the deadline
(stored energy / time left), or over a rolling ``EnvParams.horizon_s`` (one episode, 2 h) when there
is no deadline — the single number a budget-aware rule needs. Never the time left in the trace: a
device does not know when its session will end, so the policy must not learn to rely on it.
Values are clipped to the bounds so that observations always
lie in the declared space.

The thermal block (``thermal_sustain_w``, ``thermal_step_w``, W, −100..500) is the model power beyond the base
load that the device can hold at its trip point forever, and the power that would bring it exactly to the trip
point at the end of the next step (:func:`thermal_values`). A policy sees the temperature and its headroom in
°C, but turning them into watts needs the device's thermal resistance and time constant, which differ per kind
(``runtime.dynamics.DEVICES``): without the block, a policy trained over phones, laptops and solar nodes keeps a
margin of degrees that is too wide on one kind and too narrow on another. With ``EnvParams.thermal_cap`` > 0
the block is ``thermal_sustain_frac``, ``thermal_step_frac``: the same powers divided by the power the largest
configuration would draw at the current demand (:func:`thermal_scale_w`), clipped to ±cap. Above 1 the largest
configuration fits; a laptop's ample headroom then reads like a cool phone's instead of lying far outside
every value training saw.

The rule hint (``hint_<knob>_<value>``, 0/1: one per value of each knob, :func:`hint_rows`) is the configuration
the schedutil-like rule (``runtime.rules.SchedutilRule``, the strongest hand-written baseline) would run now, held
to the current action mask as the evaluation holds it (``runtime.rules.step_down``), its knob values one-hot:
computed from this observation's demand, backlog and thermal headroom and the profile's tables, after the rest is
written (:meth:`ObsLayout.set_hint`). A policy that copies it plays the rule; RL only has to learn where to depart
from it. One-hot rather than the configuration block's fractions: ``int4`` and ``int8`` are 0.125 and 0.25 as
fractions, and a clone mixed them up in hot states it had rarely seen.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from runtime.dynamics import Ops, max_power_for_temp_w, scalar_twin
from runtime.placement import ROLES

_ROLE_BIT = {r: i for i, r in enumerate(ROLES)}

try:  # the clip ufunc itself: one call instead of np.clip's Python wrapper (numpy >= 2 / 1.x)
    from numpy._core.umath import clip as _clip
except ImportError:  # pragma: no cover - older numpy
    try:
        from numpy.core.umath import clip as _clip
    except ImportError:
        _clip = None

#: Features before the configuration block: (name, unit, min, max).
HEAD: tuple[tuple[str, str, float, float], ...] = (
    ("soc", "frac", 0.0, 1.0),
    ("supply_w", "W", 0.0, 500.0),
    ("plugged", "0/1", 0.0, 1.0),
    ("temp_c", "degC", -40.0, 150.0),
    ("temp_headroom_c", "degC", -190.0, 190.0),
    ("has_budget", "0/1", 0.0, 1.0),
    ("budget_left_frac", "frac", -10.0, 1.0),
    ("has_deadline", "0/1", 0.0, 1.0),
    ("time_to_deadline_h", "h", 0.0, 100.0),
    ("affordable_power_w", "W", 0.0, 500.0),
    ("demand_tps", "tok/s", 0.0, 10000.0),
    ("backlog_frac", "frac", 0.0, 1.0),
    ("latency_over_slo", "ratio", 0.0, 100.0),
    ("bandwidth_mbps", "Mbit/s", 0.0, 10000.0),
)
#: Features after the configuration block.
TAIL: tuple[tuple[str, str, float, float], ...] = (
    ("power_w", "W", 0.0, 500.0),
    ("ambient_c", "degC", -40.0, 80.0),
)
LOOKAHEAD = ("supply_w_ahead", "W", 0.0, 500.0)
#: The thermal block (``EnvParams.thermal_obs``; :func:`thermal_values`): the model's own power, beyond the
#: device's base load, that the device can hold without passing its trip point, at steady state and over the
#: next step. R_th, the time constant and the base load differ per device kind and are not in the head, so a
#: policy could not compute these from it; after the tail, before the processors.
THERMAL: tuple[tuple[str, str, float, float], ...] = (
    ("thermal_sustain_w", "W", -100.0, 500.0),
    ("thermal_step_w", "W", -100.0, 500.0),
)


def thermal_rows(cap: float = 0.0) -> tuple[tuple[str, str, float, float], ...]:
    """The thermal block's rows: ``THERMAL`` in watts (``cap`` 0), or as fractions of the power the largest
    configuration would draw at the current demand, clipped to ±``cap`` (``EnvParams.thermal_cap``)."""
    if not cap:
        return THERMAL
    return tuple((n[:-2] + "_frac", "frac", -float(cap), float(cap)) for n, *_ in THERMAL)
#: The smoothed demand (``EnvParams.demand_avg_s``; :func:`demand_avg_update`): an exponential moving average of
#: the demand over the past, the schedutil-like signal a policy needs where the last step's demand swings from a
#: few to hundreds of tokens per second inside one burst; after the thermal block, before the processors.
DEMAND_AVG = ("demand_avg_tps", "tok/s", 0.0, 10000.0)
#: The power block (``EnvParams.power_cap``; :func:`power_values`): the last step's draw and the affordable power
#: as fractions of what the device would draw running the costliest configuration at the current demand, its base
#: load included, clipped to ``[0, cap]``; after the smoothed demand, before the rule hint.
POWER = (("power_frac", "frac"), ("affordable_power_frac", "frac"))
#: the power block's supply row (``EnvParams.power_supply``), after ``POWER``
POWER_SUPPLY = ("supply_frac", "frac")


def power_rows(cap: float, supply: bool = False) -> tuple[tuple[str, str, float, float], ...]:
    """The power block's rows, clipped to ``[0, cap]`` (``EnvParams.power_cap``; none for 0), with the supply's
    (``EnvParams.power_supply``)."""
    if not cap:
        return ()
    return tuple((n, u, 0.0, float(cap)) for n, u in (*POWER, *((POWER_SUPPLY,) if supply else ())))


def power_values(o: Ops, power_w, affordable_w, base_w, demand_tps, costliest: tuple[float, float], supply_w=None):
    """The power block, unclipped, for floats (``SCALAR``) or arrays (``VECTOR``): the last step's draw
    (``power_w``), the affordable power (``affordable_w``, the head's ``affordable_power_w``) and, when given, the
    supply (``supply_w``, the head's ``supply_w``; ``EnvParams.power_supply``) divided by ``base_w`` (idle + other
    load) plus the power the costliest configuration would draw serving ``demand_tps`` (:func:`costliest_power_w`),
    at least 1 mW. In watts a laptop (6 W of its own load, a 60 Wh battery, a 40 W charger) lies far outside every
    phone; as fractions "the largest model fits the battery" and "the charger covers it" read the same on both."""
    scale = o.maximum(base_w + costliest_power_w(o, demand_tps, costliest), 1e-3)
    if supply_w is None:
        return power_w / scale, affordable_w / scale
    return power_w / scale, affordable_w / scale, supply_w / scale


def demand_avg_update(o: Ops, avg_tps, demand_tps, dt_s, tau_s):
    """The smoothed demand after a step of ``dt_s`` in which ``demand_tps`` was asked: an exponential moving
    average with time constant ``tau_s`` (``EnvParams.demand_avg_s``). Floats or arrays; ``dt_s`` 0 keeps it."""
    a = o.exp(-dt_s / tau_s)
    return a * avg_tps + (1.0 - a) * demand_tps


#: The objective block (goal-conditioned policies, ``Objective.observed``): which objective, its floor and
#: the power budget in watts; after the processors, before the look-ahead.
GOAL: tuple[tuple[str, str, float, float], ...] = (
    ("obj_max_quality", "0/1", 0.0, 1.0),
    ("obj_min_energy", "0/1", 0.0, 1.0),
    ("obj_last_until", "0/1", 0.0, 1.0),
    ("quality_floor", "frac", 0.0, 1.0),
    ("budget_w", "W", 0.0, 500.0),
)
GOAL_KINDS = ("max-quality", "min-energy", "last-until")
#: where the head keeps ``affordable_power_w`` and ``supply_w`` (what :func:`power_values` divides)
AFFORDABLE_I = next(i for i, r in enumerate(HEAD) if r[0] == "affordable_power_w")
SUPPLY_I = next(i for i, r in enumerate(HEAD) if r[0] == "supply_w")
#: the head features the rule hint's rule reads (runtime.rules.SchedutilRule.choose)
_HINT_IN = tuple(next(i for i, r in enumerate(HEAD) if r[0] == n) for n in ("demand_tps", "backlog_frac",
                                                                           "temp_headroom_c"))


def goal_values(kind: str, quality_floor: float, budget_w: float) -> tuple[float, ...]:
    """The objective block's values (``GOAL``): one-hot of the objective, its floor (0 unless min-energy)
    and the budget (0 without one)."""
    return (*(1.0 if kind == k else 0.0 for k in GOAL_KINDS),
            float(quality_floor) if kind == "min-energy" else 0.0,
            float(budget_w) if budget_w == budget_w and budget_w > 0 else 0.0)


def thermal_values(o: Ops, temp_c, ambient_c, t_max_c, r_th_c_per_w, tau_s, dt_s, base_w, scale_w=1.0):
    """The thermal block (``THERMAL``), unclipped, for floats (``SCALAR``) or arrays (``VECTOR``): the model
    power (W, beyond ``base_w`` = idle + other load) whose steady state is ``t_max_c``
    (``runtime.dynamics.max_power_for_temp_w``, the action mask's thermal rule), and the one that brings the
    device from ``temp_c`` to exactly ``t_max_c`` at the end of a step of ``dt_s`` (the first-order model of
    ``runtime.dynamics.thermal_update``, solved for the power). Negative: even idle, the device heats past it.
    Both divided by ``scale_w`` (:func:`thermal_scale_w`; 1 for the block in watts)."""
    a = o.exp(-dt_s / tau_s)
    sustain_w = max_power_for_temp_w(t_max_c, ambient_c, r_th_c_per_w) - base_w
    step_w = max_power_for_temp_w((t_max_c - temp_c * a) / (1.0 - a), ambient_c, r_th_c_per_w) - base_w
    return sustain_w / scale_w, step_w / scale_w


def thermal_scale_w(o: Ops, cap: float, demand_tps, costliest: tuple[float, float]):
    """What :func:`thermal_values` divides by: 1 W for the block in watts (``cap`` 0), else the power the costliest
    configuration would draw serving ``demand_tps`` (W, at least 1 mW): ``min(demand, its tokens/s) × its energy
    per token``. A fraction above 1 says the largest model fits the thermal headroom at this demand.
    ``costliest``: :func:`costliest_config` of the cost tables (or of the policy file): with the reference profile,
    the six-layer model at fp32 (``L6-H075-fp32``)."""
    if not cap:
        return 1.0
    return o.maximum(costliest_power_w(o, demand_tps, costliest), 1e-3)


def costliest_power_w(o: Ops, demand_tps, costliest: tuple[float, float]):
    """The power (W) the costliest configuration (:func:`costliest_config`) draws serving ``demand_tps``:
    ``min(demand, its tokens/s) × its energy per token``; what the thermal and power blocks measure against."""
    tps, ept_j = costliest
    return o.minimum(demand_tps, tps) * ept_j


def costliest_config(tps: Any, ept_j: Any) -> tuple[float, float]:
    """(tokens/s, J/token) of the configuration that spends the most energy per token: the one a thermal
    fraction is measured against (:func:`thermal_scale_w`)."""
    i = int(np.argmax(ept_j))
    return float(tps[i]), float(ept_j[i])


def head_values(o: Ops, soc, supply_w, plugged, temp_c, t_max_c, budget_w, budget_left_j, deadline_left_s,
                stored_energy_j, horizon_left_s, demand_tps, backlog_frac, latency_over_slo, bandwidth_mbps):
    """The 14 head features, unclipped, for floats (``SCALAR``) or arrays (``VECTOR``).

    ``budget_w`` is NaN without a budget, ``deadline_left_s`` NaN without a deadline,
    ``budget_left_j`` the energy still allowed by the budget (budget × (elapsed + grace) − used).
    """
    has_b = (budget_w == budget_w) & (budget_w > 0)
    has_d = deadline_left_s == deadline_left_s
    left_s = o.maximum(o.where(has_d, deadline_left_s, horizon_left_s), 1.0)
    return (soc, supply_w, plugged, temp_c, t_max_c - temp_c,
            o.where(has_b, 1.0, 0.0),
            o.where(has_b, budget_left_j / (o.where(has_b, budget_w, 1.0) * 3600.0), 1.0),  # hours of budget
            o.where(has_d, 1.0, 0.0),
            o.where(has_d, o.maximum(deadline_left_s, 0.0) / 3600.0, 0.0),
            stored_energy_j / left_s,
            demand_tps, backlog_frac, latency_over_slo, bandwidth_mbps)


class ObsLayout:
    """The observation of one configuration space and look-ahead (module docstring).

    Args:
        config_features: The space's features (``ConfigSpace.features``: objects with ``name``,
            ``unit``, ``lo``, ``hi``), or ``(name, unit, lo, hi)`` tuples.
        lookahead: Supply-power forecast steps appended at the end.
        processors: Processor roles whose availability follows the thermal block.
        goal: With the objective block.
        thermal: With the thermal block; ``thermal_cap`` its form (:func:`thermal_rows`).
        demand_avg: With the smoothed demand (``DEMAND_AVG``).
        power_cap: With the power block clipped to ``[0, power_cap]`` (:func:`power_rows`); 0: none.
        power_supply: With the power block's supply row (``supply_frac``; needs ``power_cap``).
        hint: The rule hint's rows (:func:`hint_rows`: one 0/1 feature per knob value) for the schedutil-like
            rule's choice under the masks (``EnvParams.rule_hint``; filled by :meth:`set_hint`); empty: none.
    """

    def __init__(self, config_features: Sequence[Any], lookahead: int = 0, processors: Sequence[str] = (),
                 goal: bool = False, thermal: bool = False, thermal_cap: float = 0.0,
                 demand_avg: bool = False, hint: Sequence[tuple[str, str, float, float]] = (),
                 power_cap: float = 0.0, power_supply: bool = False) -> None:
        cfg = [(f.name, f.unit, f.lo, f.hi) if hasattr(f, "name") else tuple(f) for f in config_features]
        self.lookahead = int(lookahead)
        self.n_config = len(cfg)
        ahead = [(f"{LOOKAHEAD[0]}_{i + 1}", *LOOKAHEAD[1:]) for i in range(self.lookahead)]
        #: processor roles whose availability follows the tail (a space with placement; else none)
        self.processors = tuple(processors)
        self._proc_bits = [1 << _ROLE_BIT[r] for r in self.processors]
        procs = [(f"proc_up_{r}", "0/1", 0.0, 1.0) for r in self.processors]
        self.goal = bool(goal)
        goals = GOAL if self.goal else ()
        self.thermal = bool(thermal)
        therm = thermal_rows(thermal_cap) if self.thermal else ()
        self.demand_avg = bool(demand_avg)
        dem = (DEMAND_AVG,) if self.demand_avg else ()
        pw = power_rows(power_cap, power_supply)
        self.power = bool(pw)
        #: the power block has the supply row: callers pass the head's supply to :func:`power_values`
        self.power_supply = self.power and bool(power_supply)
        hints = [tuple(r) for r in hint]
        self.hint = bool(hints)
        self.rows: tuple[tuple[str, str, float, float], ...] = (*HEAD, *cfg, *TAIL, *therm, *dem, *pw, *hints, *procs,
                                                                  *goals, *ahead)
        self.names = [r[0] for r in self.rows]
        self.units = [r[1] for r in self.rows]
        self.dim = len(self.rows)
        self.index = {n: i for i, n in enumerate(self.names)}
        if len(self.index) != self.dim:
            raise ValueError(f"duplicate observation feature names in {self.names}")
        self.lo = np.array([r[2] for r in self.rows], dtype=np.float32)
        self.hi = np.array([r[3] for r in self.rows], dtype=np.float32)
        self.cfg_start = len(HEAD)
        self.tail_start = self.cfg_start + self.n_config
        self.thermal_start = self.tail_start + len(TAIL)
        self.demand_avg_start = self.thermal_start + len(therm)
        self.power_start = self.demand_avg_start + len(dem)
        self.hint_start = self.power_start + len(pw)
        self.proc_start = self.hint_start + len(hints)
        self.goal_start = self.proc_start + len(self.processors)
        self.ahead_start = self.goal_start + len(goals)
        self._lo64, self._hi64 = self.lo.astype(np.float64), self.hi.astype(np.float64)
        #: the features that echo the previous action: the configuration block, and the last step's latency and
        #: draw (with the power block, its draw as a fraction too), in layout order. From an expert that rarely
        #: switches, a clone learns that they predict its next choice and repeats its own last one, small or not
        #: (the copycat problem; docs/agents.md, "The policy that copies its own last choice"); ``train.py
        #: --obs-drop echo`` holds them at 0.
        self.echo: tuple[str, ...] = tuple(n for i, n in enumerate(self.names)
                                           if self.cfg_start <= i < self.tail_start
                                           or n in ("latency_over_slo", "power_w", "power_frac"))

    def table(self) -> list[dict[str, Any]]:
        """Rows ``{"index", "name", "unit", "min", "max"}``."""
        return [{"index": i, "name": n, "unit": u, "min": lo, "max": hi} for i, (n, u, lo, hi) in enumerate(self.rows)]

    def write(self, out: np.ndarray | None, head: tuple, config_features: Sequence[float], power_w: float,
              ambient_c: float, supply_ahead_w: Sequence[float] = (), down: int = 0,
              goal: Sequence[float] = (), thermal: Sequence[float] = (), demand_avg_tps: float = 0.0,
              power: Sequence[float] = ()) -> np.ndarray:
        """The observation from floats, clipped to the bounds: into ``out`` (float32, ``dim``) in
        place, or a new array when ``out`` is None.

        ``head``: :func:`head_values` with ``SCALAR``. ``down``: bit mask of the unavailable processor
        roles (``runtime.placement.ROLES`` order). Clipping after the float32 conversion equals
        clipping before it (the bounds are float32 numbers and rounding is monotone). ``thermal``:
        :func:`thermal_values` with ``SCALAR`` when the layout has the thermal block; ``demand_avg_tps`` the
        smoothed demand when it has that feature; ``power`` :func:`power_values` with ``SCALAR`` when it has the
        power block.
        """
        vals = [*head, *config_features, power_w, ambient_c]
        if self.thermal:
            vals += thermal
        if self.demand_avg:
            vals.append(demand_avg_tps)
        if self.power:
            vals += power
        if self.hint:  # filled by set_hint once the masks are known
            vals += [0.0] * (self.proc_start - self.hint_start)
        if self.processors:
            vals += [0.0 if down & b else 1.0 for b in self._proc_bits]
        if self.goal:
            vals += goal  # goal_values(...)
        if self.lookahead:
            vals += supply_ahead_w[:self.lookahead]
        if out is None:
            out = np.array(vals, dtype=np.float32)
        else:
            out[:] = vals
        if _clip is not None:
            return _clip(out, self.lo, self.hi, out)
        np.maximum(out, self.lo, out=out)
        return np.minimum(out, self.hi, out=out)

    def power_block(self, o: Ops, power_w, head: Sequence[Any], base_w, demand_tps, costliest: tuple[float, float]):
        """This layout's power block, unclipped (:func:`power_values` with the head's affordable power, and its
        supply where the layout has the supply row); () without the block."""
        if not self.power:
            return ()
        return power_values(o, power_w, head[AFFORDABLE_I], base_w, demand_tps, costliest,
                            head[SUPPLY_I] if self.power_supply else None)

    def set_hint(self, obs: np.ndarray, hint_values: np.ndarray) -> np.ndarray:
        """Writes the rule hint into ``obs`` ((dim,) with one row of :func:`hint_table`, or (n, dim) with (n, ...)
        rows) in place."""
        obs[..., self.hint_start:self.proc_start] = hint_values
        return obs

    def hint_inputs(self, obs: np.ndarray) -> tuple:
        """What the rule reads from an observation ((dim,) or (n, dim)): demand, backlog fraction and thermal
        headroom, as float64 (the float32 values a rule-based controller would read)."""
        o = np.asarray(obs, dtype=np.float64)
        return o[..., _HINT_IN[0]], o[..., _HINT_IN[1]], o[..., _HINT_IN[2]]

    def batch(self, head: tuple, config_features: np.ndarray, power_w: np.ndarray, ambient_c: np.ndarray,
              supply_ahead_w: np.ndarray | None = None, down: np.ndarray | None = None,
              goal: np.ndarray | None = None, thermal: tuple | None = None,
              demand_avg_tps: np.ndarray | None = None, power: tuple | None = None) -> np.ndarray:
        """(n, dim) float32 from arrays (``head``: :func:`head_values` with ``VECTOR``).

        Built feature-major, (dim, n), so that every feature is one contiguous write, then
        transposed by the float32 conversion.
        """
        n = len(power_w)
        obs = np.empty((self.dim, n))
        for j, v in enumerate(head):
            obs[j] = v
        obs[self.cfg_start:self.tail_start] = config_features.T
        obs[self.tail_start] = power_w
        obs[self.tail_start + 1] = ambient_c
        if self.thermal:  # thermal_values(VECTOR, ...)
            for j, v in enumerate(thermal):
                obs[self.thermal_start + j] = v
        if self.demand_avg:
            obs[self.demand_avg_start] = demand_avg_tps
        if self.power:  # power_values(VECTOR, ...)
            for j, v in enumerate(power):
                obs[self.power_start + j] = v
        if self.hint:  # filled by set_hint once the masks are known
            obs[self.hint_start:self.proc_start] = 0.0
        for j, b in enumerate(self._proc_bits):
            obs[self.proc_start + j] = 1.0 if down is None else (np.asarray(down) & b) == 0
        if self.goal:  # (n, len(GOAL)): goal_values per env
            obs[self.goal_start:self.ahead_start] = np.asarray(goal).T
        if self.lookahead:
            obs[self.ahead_start:] = supply_ahead_w.T
        np.clip(obs, self._lo64[:, None], self._hi64[:, None], out=obs)
        return np.ascontiguousarray(obs.T, dtype=np.float32)


def __getattr__(name: str) -> Any:
    """``scalar_head_values``: :func:`head_values` for floats (its float twin,
    ``runtime.dynamics.scalar_twin``; call it with ``SCALAR``), compiled on first use."""
    if name == "scalar_head_values":
        twin = globals()[name] = scalar_twin(head_values)
        return twin
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def hint_rows(space: Any) -> tuple[tuple[str, str, float, float], ...]:
    """The rule hint's rows over a configuration space: ``hint_<knob>_<value>`` (0/1), one per value of each knob
    (e.g. ``hint_bits_int4``), in the factorised head's order (``runtime.factorised``): a categorical input for
    each categorical choice, which a policy maps to its knob's logits directly."""
    return tuple((f"hint_{k.name}_{k.fragment(v)}", "0/1", 0.0, 1.0) for k in space.knobs for v in k.values)


def hint_table(space: Any) -> np.ndarray:
    """(n_configs, len(hint_rows(space))) float64: each configuration's rule-hint values, its knob values one-hot
    (``runtime.factorised.Factorisation.onehot``: the factorised head's logit order)."""
    from runtime.factorised import Factorisation

    return Factorisation(space).onehot


def params_layout(space: Any, params: Any) -> ObsLayout:
    """The layout a policy trained with ``params`` (``runtime.dynamics.EnvParams``) reads over a configuration
    space: its knobs' features, processor availability when it has the ``place`` knob, the thermal block when
    ``params.thermal_obs`` (in watts, or fractions clipped to ``params.thermal_cap``), the objective block when
    ``params.objective.observed``, the smoothed demand when ``params.demand_avg_s``, the power block when
    ``params.power_cap`` (with its supply row when ``params.power_supply``) and ``params.lookahead``
    forecasts. The environments, the policy file, the
    exporter and the manager all build it here."""
    return ObsLayout(space.features, params.lookahead, ROLES if "place" in space.knob_names else (),
                     params.objective.observed, params.thermal_obs, params.thermal_cap, params.demand_avg_s > 0,
                     hint_rows(space) if params.rule_hint else (), params.power_cap,
                     params.power_supply)


def model_layout(lookahead: int = 0) -> ObsLayout:
    """The layout of the elastic model's default space (depth × heads × bits)."""
    from runtime.configspace import model_space

    return ObsLayout(model_space().features, lookahead)


__all__ = ["AFFORDABLE_I", "DEMAND_AVG", "GOAL", "GOAL_KINDS", "HEAD", "LOOKAHEAD", "POWER", "POWER_SUPPLY", "SUPPLY_I",
           "TAIL", "THERMAL",
           "ObsLayout", "costliest_config", "costliest_power_w", "demand_avg_update", "goal_values", "head_values",
           "hint_rows", "hint_table", "model_layout", "params_layout", "power_rows", "power_values", "thermal_rows",
           "thermal_scale_w", "thermal_values"]
