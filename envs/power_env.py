"""``wattwise/MicroLLMPower-v0``: pick the micro-LLM's configuration under power, battery,
thermal and latency limits, driven by a measured cost profile and replayed traces.

## Description
A device runs the elastic micro-LLM (``model/``) and serves a token workload. Each control
step (``step_s``, default 10 s) the agent picks one configuration of the model (depth × heads
× weight bits, from the profile; with a split profile also where it runs: on the device, or split
with a server after ``split`` blocks, its activations compressed by ``wire``; docs/split.md; with a
placement profile also on which of the device's processors, ``place``: docs/placement.md).
The chosen configuration serves the workload at its
*measured* throughput and energy per token; the battery, the device temperature and the
request queue evolve; the trace supplies the charger/harvester power, ambient temperature,
workload and link bandwidth.

## Action Space
``Discrete(n_configs)``: index into the profile's configuration space (``runtime.configspace``;
``env.decode_table`` gives each index's canonical name and knob values). ``action_masks()`` (sb3-contrib) and
``info["action_mask"]`` (Gymnasium) mark configurations infeasible now (``runtime.rules``); with
``EnvParams.min_dwell_steps`` N > 1 they also hold the current configuration for the N − 1 steps after a switch, as
the runtime manager's dwell rule does on the device (``runtime.rules.dwell_mask``). With ``EnvParams.saver_s`` > 0
(the battery saver) the battery rule's reserve is raised by the charge the device's own load and the cheapest
configuration, less the supply, would take in that many seconds (``runtime.rules.saver_soc``); with
``EnvParams.saver_to_deadline`` that time reaches the episode's deadline while one is ahead (the one the observation
shows: the trace's, e.g. a session's end the user told, ``traces.objectives --session-end``; for last-until without
one, the episode's end; ``runtime.rules.saver_horizon_s``); with ``EnvParams.saver_floor_frac`` < 1 that charge is
counted from that share of the reserve (0: from empty) instead of the reserve itself. Under ``min-energy`` with
``EnvParams.floor_rule`` (off by default; the scoring tools and the runtime turn it on) the masks also hold the
quality floor: of the configurations the other rules
allow, only those whose quality meets the floor, when one does (the floor gives way to every safety rule, and
to a power budget: under one it is held within what the budget rule allows, and is only a cost without that rule;
``runtime.rules.Feasibility.floor_mask``, ``floor_in_force``, ``floor_within_budget``). When none does, the step
misses the floor whatever runs, and of the allowed configurations those another allowed one beats on both energy per
token and tokens/s are masked (``Feasibility.undominated``; split configurations stay). With
``EnvParams.budget_rule`` (off by default; the scoring tools and the runtime turn it on) the masks hold the episode's
power budget: a configuration above the budget whose LLM power at the demand just seen plus the backlog drained in
one step would take the budget's allowance (grace included) below ``EnvParams.budget_reserve_s`` of budget this step
is masked, unless none of those the safety rules allow meets the budget (then the least power of them;
``runtime.rules.Feasibility.budget_mask``).

## Observation Space
``Box(float32)``, built by ``runtime.observation.ObsLayout`` (the device builds the same vector).
The configuration block (14–16 here) has one feature per knob feature of the space, so the
indices after it move when a knob is added; ``python -m envs.describe`` prints the table of any
profile. For the elastic model's three knobs:

| index | feature | unit | min | max |
|---|---|---|---|---|
| 0 | state of charge | frac | 0 | 1 |
| 1 | supply power (charger / harvester) | W | 0 | 500 |
| 2 | plugged | 0/1 | 0 | 1 |
| 3 | device temperature | °C | -40 | 150 |
| 4 | headroom to throttling, T_max − T | °C | -190 | 190 |
| 5 | has a power budget | 0/1 | 0 | 1 |
| 6 | budget left (energy allowance / budget·1 h) | frac | -10 | 1 |
| 7 | has a deadline | 0/1 | 0 | 1 |
| 8 | time to deadline | h | 0 | 100 |
| 9 | affordable power (stored energy / time to the deadline, else / ``EnvParams.horizon_s``) | W | 0 | 500 |
| 10 | demand of the last step | tok/s | 0 | 10000 |
| 11 | backlog / backlog capacity | frac | 0 | 1 |
| 12 | last latency / SLO | ratio | 0 | 100 |
| 13 | link bandwidth (drives split configurations; 0 = down) | Mbit/s | 0 | 10000 |
| 14-16 | current configuration (``runtime.configspace``): depth/max, heads, bits/32 (+ split knobs) | frac | 0 | 1 |
| 17 | device power draw of the last step | W | 0 | 500 |
| 18 | ambient temperature | °C | -40 | 80 |
| (thermal) | ``thermal_sustain_w``, ``thermal_step_w``: model power at T_max, steady / next step | W | -100 | 500 |
| (demand) | ``demand_avg_tps``: the demand smoothed over ``EnvParams.demand_avg_s`` | tok/s | 0 | 10000 |
| (power) | ``power_frac``, ``affordable_power_frac`` (+ ``supply_frac``): over the costliest's draw | frac | 0 | cap |
| (hint) | ``hint_<knob>_<value>``: the schedutil-like rule's choice under the mask, one-hot per knob | 0/1 | 0 | 1 |
| (place) | ``proc_up_<role>`` for cpu, lcpu, gpu, npu: the processor is available | 0/1 | 0 | 1 |
| (goal) | ``obj_<objective>`` one-hot (3), ``quality_floor``, ``budget_w`` | | 0 | 1 / 500 W |
| 19.. | supply power look-ahead, ``lookahead`` steps (optional) | W | 0 | 500 |

The thermal block (the model power beyond the base load that holds the device at T_max at steady state, and
the one that brings it to T_max at the end of the next step) follows the tail only with
``EnvParams.thermal_obs``: it turns degrees of headroom into watts with the device kind's R_th and time
constant, which the rest of the observation does not carry (with ``EnvParams.thermal_cap`` > 0, as fractions of
the costliest configuration's power at the observed demand, clipped to ±cap). The smoothed demand
(``demand_avg_tps``, tok/s, 0..10000; an exponential average with time constant ``EnvParams.demand_avg_s``)
follows it only when that is > 0. The power block follows only with ``EnvParams.power_cap`` > 0, its supply row
only with ``EnvParams.power_supply`` (``runtime.observation.power_values``: the last step's draw, the affordable
power and the supply over the device's draw running the costliest configuration at the observed demand, its own
load included, clipped to [0, cap]). The rule hint follows only with ``EnvParams.rule_hint``: the configuration the
schedutil-like rule (``runtime.rules.SchedutilRule``, the baseline ``schedutil``) would run from this observation,
stepped down to the action mask as the evaluation holds the rule, given as its knob values one-hot
(``hint_config`` on the env is its index). The processor block follows only for a space with
the ``place`` knob; the objective block (goal-conditioned policies) only with ``EnvParams.objective.goal_obs``
or ``kind = "mix"``. Without them the layout is the one every earlier policy reads.

## Dynamics (per step of ``dt = step_s``; ``runtime.dynamics.step_core``, shared by every simulator)
* throttle ``θ = 1`` if ``T ≤ T_max`` else ``max(θ_min, 1 − k·(T − T_max))``;
* switching from configuration i to j costs ``t_sw[i, j]`` seconds of compute (the measured
  KV-cache repair + ``set_config``) and ``t_sw · P_j`` joules;
* time per token ``τ_j = dec_j/θ``; a split configuration (``offload_j = 1``) adds its uplink bits at
  the trace's bandwidth, the server's compute and the link's round trip (``EnvParams.link``) and runs
  at ``1000/τ_j`` tok/s instead of ``tps_j·θ``; at 0 Mbit/s it serves nothing (and is masked);
* served tokens ``S = min(backlog + demand·dt, rate_j · (dt − t_sw))``; the rest queues up
  to ``backlog_cap_tokens``, beyond which tokens are dropped;
* energy ``E = S · e_j + t_sw·P_j + E_radio + (P_idle + P_base)·dt`` (P_base: the trace's other device
  load; ``E_radio`` for a split configuration: bits both ways × the 5G logs' energy per bit plus the
  radio's connected-state power for a step that used the link); draw ``P = E / dt``;
* battery (capacity from the trace): surplus ``supply − P ≥ 0`` charges with efficiency
  ``η``, a deficit discharges at 100 %; SoC ≤ 0 is **battery death**;
* temperature, exact for constant power over the step:
  ``T ← T_∞ + (T − T_∞)·exp(−dt/τ)``, ``T_∞ = T_amb + R_th·P`` (constants per device kind:
  ``runtime.dynamics.DEVICES``);
* latency of the step: ``τ_j + 1000·backlog / rate_j`` (time per token plus the queueing wait of
  the last queued token), against ``slo_ms``;
* budget (traces with ``budget_w``, a power budget for the LLM itself): an allowance
  ``budget_w·(elapsed + budget_grace_s) − E_llm_used``; while it is negative, an LLM power
  above ``budget_w`` is a violation.
* placement (``place``): each segment's processor throttles at ``T_max`` plus its own offset, the
  interconnect's time is added, ``heat_frac`` of the model's energy heats the device; a configuration
  on a processor that is down (``EnvParams.avail``'s seeded outages) runs on the CPU instead.

## Rewards
``r = quality_j · S / (100·dt) − w_thermal·max(0, T − T_max) − w_slo·[latency > SLO]
− w_budget·max(0, P_llm − budget_w)/budget_w·[allowance < 0] − w_drop·dropped/(100·dt) − w_death·[death]``.
plus the objective's terms (``EnvParams.objective``, docs/objectives.md): for ``min-energy`` the
quality term is off and ``− w_energy·P_llm − w_floor·[served quality < floor]`` is added; for
``last-until`` ``− w_reserve·[SoC < reserve before the deadline]``; ``max-quality`` (the default) adds
nothing. ``quality_j`` is the profile's multiple-choice skill above chance, ``(acc − 0.25)/0.75``, so a
step serving 100 tok/s with the full model earns ≈ its skill (≈ 0.5). Default weights and why:
``w_death = 50`` (about a hundred steps of full-quality serving: dying must never pay; one real phone
session shows that a policy without foresight can earn as much by dying late, docs/agents.md),
``w_thermal = 0.5`` per °C over (a few degrees cost as much as the whole step's quality),
``w_slo = 0.5``, ``w_budget = 1.0`` per unit of relative overdraw, ``w_drop = 0.5`` (a dropped
token costs about what serving it would have earned).

## Info
``info["step"]`` is the step's ``runtime.dynamics.StepResult`` (a named tuple, so the step costs
no dictionary building): ``soc``, ``temp_c``, ``backlog``, ``budget_left_j``, ``dead``,
``reward`` and its terms ``r_quality``, ``r_thermal``, ``r_slo``, ``r_budget``, ``r_drop``,
``r_death``; the violations ``over_c`` (°C above the trip point), ``slo_bad``, ``over_budget``
(relative overdraw); ``served``, ``dropped`` (tokens), ``energy_j``, ``power_w``,
``latency_ms``, ``throttle``, ``radio_j``. ``info["step"]._asdict()`` gives a dict. Besides it: ``config``
(the index run), ``switched``, ``action_mask`` and ``cost`` (the number of violated
constraints, safety-gymnasium convention).

## Starting State
Objective: ``EnvParams.objective.kind``, or drawn per episode from the env's generator for ``mix``
(or ``options["objective"]``; ``options["quality_floor"]`` overrides the trace's floor). Trace: uniform
over the split (or ``options["trace"]``); start row uniform over the trace
(``random_start``) or 0 (or ``options["start"]``); SoC: the trace's ``initial_soc`` (or
``options["soc"]``); battery capacity: the trace's (times ``options["capacity_scale"]``, > 0: the
battery randomisation of ``envs.batched``); ambient: the trace's (plus ``options["ambient_shift_c"]``, °C,
everywhere it is read: the weather randomisation of ``envs.batched``); temperature: ambient + R_th·(idle + base
load) (or ``options["temp_c"]``).

## Episode End
Terminated: battery death. Truncated: the trace ends, or ``max_episode_steps`` (registration:
720 steps = 2 h at 10 s) via ``TimeLimit``.

## Arguments
``profile`` (path, ``Profile`` or dict; default the committed reference profile), ``traces``
(trace-set dir or a list of ``Trace``; default the generated default set), ``split``,
``params`` (``runtime.dynamics.EnvParams``: ``step_s``, ``slo_ms``, ``backlog_cap_tokens``,
``reserve_soc``, ``saver_s``, ``saver_to_deadline``, ``saver_floor_frac``, ``floor_rule``, ``budget_rule``,
``budget_grace_s``,
``lookahead``,
``max_episode_steps``,
``weights``, ``link``, ``avail``, ``objective``; any of
them may also be passed as a keyword, e.g. ``gym.make(ENV_ID, lookahead=3)``), ``random_start``.

## Version History
* v0: first release; the configuration space, dynamics and parameters moved to ``runtime/``
  (same dynamics, same returns); the per-step figures moved from flat ``info`` keys into
  ``info["step"]`` (2026-12-01). Split configurations (knobs ``split``, ``wire``), ``EnvParams.link``,
  ``info["step"].radio_j``; profiles without split records step exactly as before (2026-12-01).
  Placement (knob ``place``, ``EnvParams.avail``, the processor block) and the user's objective
  (``EnvParams.objective``, reward terms ``r_energy``, ``r_floor``, ``r_reserve``, the objective block);
  single-processor max-quality episodes step exactly as before (2026-12-01). The battery saver
  (``EnvParams.saver_s``, default 0: the masks as before; 2026-12-04); its horizon to the deadline
  (``EnvParams.saver_to_deadline``, default off; 2026-12-05); where it counts from
  (``EnvParams.saver_floor_frac``, default 1: the reserve, as before; 2026-12-05). The floor rule
  (``EnvParams.floor_rule``, default off: as before; on, min-energy's masks hold the quality floor; 2026-12-06).
  The budget rule (``EnvParams.budget_rule``, default off: as before; on, the masks hold a power budget;
  2026-12-06).
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.tables import DEFAULT_PROFILE, CostTables, TraceArrays, load_cost_tables, prepare_traces
from runtime.dynamics import (
    SCALAR,
    TOK_SCALE,
    EnvParams,
    RewardWeights,
    StepResult,
    episode_objective,
    scalar_step_core,
    start_temp_c,
)
from runtime.observation import (
    costliest_config,
    demand_avg_update,
    goal_values,
    hint_table,
    params_layout,
    scalar_head_values,
    thermal_scale_w,
    thermal_values,
)
from runtime.rules import (
    HOT_MARGIN_C,
    NO_SWITCH_YET,
    Feasibility,
    SchedutilRule,
    dwell_mask,
    floor_in_force,
    floor_within_budget,
    saver_horizon_s,
    saver_soc,
    since_switch_after,
)

__all__ = ["DEFAULT_PROFILE", "TOK_SCALE", "CostTables", "MicroLLMPowerEnv", "RewardWeights", "TraceArrays",
           "load_cost_tables", "make_params", "prepare_traces"]


_POWER, _LATENCY, _COST = (StepResult._fields.index(f) for f in ("power_w", "latency_ms", "cost"))


def make_params(params: EnvParams | dict | None = None, **overrides: Any) -> EnvParams:
    """``EnvParams`` from an instance or dict, with keyword overrides (``weights`` may be a dict)."""
    base = params if isinstance(params, EnvParams) else EnvParams.from_dict(params or {})
    if not overrides:
        return base
    return EnvParams.from_dict({**base.to_dict(), **{k: (asdict(v) if isinstance(v, RewardWeights) else v)
                                                     for k, v in overrides.items()}})


class MicroLLMPowerEnv(gym.Env):
    """See the module docstring: it is this environment's spec sheet."""

    metadata = {"render_modes": ["ansi"], "render_fps": 1}

    def __init__(self, profile=None, traces=None, split: str = "train", params: EnvParams | dict | None = None,
                 random_start: bool = True, render_mode: str | None = None, **param_overrides: Any):
        super().__init__()
        self.params = p = make_params(params, **param_overrides)
        self.costs = load_cost_tables(profile if profile is not None else DEFAULT_PROFILE)
        self.space = self.costs.space
        self.traces = prepare_traces(traces, split, p.step_s, p.avail)
        self.trace_source = traces  # the set the traces came from (None: the default set), for its other splits
        self.split, self.random_start, self.render_mode = split, random_start, render_mode
        self.step_s, self.lookahead, self.slo_ms = p.step_s, p.lookahead, p.slo_ms
        # the rolling horizon of ``affordable_power_w`` without a deadline: what a device knows (never when the
        # trace ends); the runtime manager uses the same figure (ManagerConfig.horizon_s)
        self._horizon_s = p.horizon_s
        self.backlog_cap, self.reserve_soc, self.w = p.backlog_cap_tokens, p.reserve_soc, p.weights
        n = len(self.costs)
        self.action_space = spaces.Discrete(n)
        self.layout = params_layout(self.space, p)
        self.observation_space = spaces.Box(self.layout.lo, self.layout.hi, dtype=np.float32)
        self.feature_names = self.layout.names
        c = self.costs
        self._costliest = costliest_config(c.tps, c.ept_j)  # the thermal block as a fraction is measured against it
        self._avg_s = p.demand_avg_s  # the smoothed demand's time constant (0: none)
        self._demand_avg = 0.0
        # plain lists: scalar indexing of a list is ~10x faster than of a numpy array
        self._tps, self._ept, self._dec = c.tps.tolist(), c.ept_j.tolist(), c.decode_ms.tolist()
        self._q, self._feat = c.quality.tolist(), [tuple(f) for f in c.features.tolist()]
        self._sw_s, self._sw_j = c.switch_s.tolist(), c.switch_j.tolist()
        self._off, self._up, self._srv = c.offload.tolist(), c.up_bits.tolist(), c.server_ms.tolist()
        self._seg2, self._xfer, self._trip1 = c.seg2_ms.tolist(), c.xfer_ms.tolist(), c.trip1_c.tolist()
        self._trip2, self._heat = c.trip2_c.tolist(), c.heat_frac.tolist()
        self._roles, self._twin = c.roles.tolist(), c.cpu_twin.tolist()
        # the action masks (runtime.rules, as the device's shield)
        self.rules = Feasibility(c.ept_j, c.offload, p.link.connected_w, c.device_bytes, c.roles, c.quality, c.tps)
        self._has_split = self.rules.has_split
        self._has_place = self.rules.has_place
        self._budget_rule = bool(p.budget_rule)  # the user's power budget in the masks (Feasibility.budget_mask)
        self._saver_s = float(p.saver_s)  # the battery saver raises the reserve of the masks (runtime.rules.saver_soc)
        self._saver_dl = False  # this episode's saver reaches its deadline (EnvParams.saver_to_deadline; reset)
        self._min_dwell = int(p.min_dwell_steps)  # the manager's dwell rule in the masks (runtime.rules.dwell_mask)
        # the rule hint (EnvParams.rule_hint): the schedutil-like rule over the profile's tables
        self.hint_config = -1  # the rule hint's configuration index in the last observation (-1: none)
        self._hint_rule = SchedutilRule(c.tps, c.ept_j, c.quality, p.step_s, p.backlog_cap_tokens,
                                        c.offload) if p.rule_hint else None
        self._hint_table = hint_table(self.space) if p.rule_hint else None
        self.full_config = int(np.argmax(c.quality))  # the best-quality configuration starts an episode
        self.decode_table = c.decode_table()
        self._tr: TraceArrays | None = None

    # ---- Gymnasium API ----------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        o = options or {}
        rng = self.np_random
        if "trace" in o:
            k = o["trace"]
            k = k if isinstance(k, int) else [t.name for t in self.traces].index(k)
        else:
            k = int(rng.integers(len(self.traces)))
        tr = self._tr = self.traces[k]
        if "start" in o:
            self._i = int(o["start"])
            if not 0 <= self._i < tr.n:
                raise ValueError(f"options['start'] must be a row of trace {tr.name} (0 <= start < {tr.n}), "
                                 f"got {o['start']!r}")
        else:
            self._i = int(rng.integers(0, max(1, tr.n - 1))) if self.random_start else 0
        self._i0 = self._i
        self.soc = float(o.get("soc", tr.initial_soc))
        if not 0.0 <= self.soc <= 1.0:
            raise ValueError(f"options['soc'] is the state of charge as a fraction in [0, 1] (0.8, not 80), "
                             f"got {o['soc']!r}")
        scale = float(o.get("capacity_scale", 1.0))
        if not (math.isfinite(scale) and scale > 0.0):
            raise ValueError(f"options['capacity_scale'] must be a finite number > 0, got {o['capacity_scale']!r}")
        self._capacity_j = tr.capacity_j * scale
        self._capacity_scale = scale
        dev = tr.device
        self._idle_w = dev.idle_power_w
        self._plant = (self._capacity_j, dev.r_th_c_per_w, dev.tau_s, dev.t_max_c, dev.throttle_per_c,
                       dev.throttle_min, dev.charge_efficiency, dev.idle_power_w)
        self._hot_c = dev.t_max_c - HOT_MARGIN_C  # the masks start this far below the trip point
        self._fits = self.rules.fits(dev.memory_mb * 1e6)  # this device's memory (read-only; all_ok if all fit)
        # the trace's columns as attributes of the env: one attribute read less per use in step()
        self._supply, self._ambient, self._demand = tr.supply_w, tr.ambient_c, tr.demand_tps
        shift = float(o.get("ambient_shift_c", 0.0))
        if not math.isfinite(shift):
            raise ValueError(f"options['ambient_shift_c'] must be finite (deg C), got {o['ambient_shift_c']!r}")
        if shift:
            self._ambient = [a + shift for a in tr.ambient_c]  # lists: the fastest scalar indexing
        self._ambient_shift_c = shift
        self._base, self._budget, self._n, self._bw = tr.base_w, tr.budget_w, tr.n, tr.bandwidth_mbps
        self._t_max_c, self._grace_s = dev.t_max_c, self.params.budget_grace_s
        self._down = tr.procs_down
        self._set_objective(o, tr)
        # the floor rule (EnvParams.floor_rule): min-energy's floor in the masks; with no other rule active the mask
        # is this episode's fixed one, computed once
        self._mask_qmin = self._qmin if self.params.floor_rule else math.nan
        self._floor_ok = self.rules.floor_mask(self._mask_qmin, self._fits)
        self._floor_ok.flags.writeable = False
        # the saver's horizon reaches the deadline when the episode has one (runtime.rules.saver_horizon_s)
        self._saver_dl = bool(self.params.saver_to_deadline) and self._deadline_s == self._deadline_s
        i = self._i
        self.temp_c = float(o.get("temp_c", start_temp_c(self._ambient[i], self._idle_w, tr.base_w[i],
                                                          dev.r_th_c_per_w)))
        self.backlog = 0.0
        self._a = int(o.get("config", self.full_config))
        self._since_switch = NO_SWITCH_YET  # the dwell rule (EnvParams.min_dwell_steps): none before a switch
        self._budget_left_j = 0.0
        self._last_power_w = self._idle_w + tr.base_w[i]
        self._last_lat_ms = 0.0
        self._last_demand = self._demand_avg = tr.demand_tps[i]
        self._mask = self._rules_mask()  # the rules of step(), from the first decision on
        obs = self._obs()
        return obs, {"action_mask": self._mask.copy(), "trace": tr.name, "start": self._i,
                     "soc": self.soc, "temp_c": self.temp_c}

    def step(self, action):
        a = int(action)
        i, prev = self._i, self._a
        if self._has_place and self._down[i] and self._roles[a] & self._down[i]:
            a = self._twin[a]  # its processor is down: the runtime re-places it on the CPU
        demand = self._demand[i]
        r = scalar_step_core(SCALAR, self.step_s, self.params, self._tps[a], self._ept[a], self._dec[a], self._q[a],
                             self._off[a], self._up[a], self._srv[a], self._seg2[a], self._xfer[a], self._trip1[a],
                             self._trip2[a], self._heat[a], self._sw_s[prev][a], self._sw_j[prev][a],
                             self.soc, self.temp_c, self.backlog, self._budget_left_j, demand, self._supply[i],
                             self._ambient[i], self._base[i], self._budget[i], self._bw[i], self._wq, self._we,
                             self._qmin, 1.0 if i < self._until_row else 0.0, *self._plant)
        # one unpacking instead of a dozen attribute reads (the step's hot path)
        self.soc, self.temp_c, self.backlog, self._budget_left_j, dead, reward = r[:6]
        self._a, self._last_power_w, self._last_lat_ms, self._last_demand = a, r[_POWER], r[_LATENCY], demand
        if self._avg_s:
            self._demand_avg = demand_avg_update(SCALAR, self._demand_avg, demand, self.step_s, self._avg_s)
        self._i = i + 1
        truncated = self._i >= self._n
        if truncated:
            self._i = self._n - 1  # observation of the last row; the episode is over
        self._mask = self._rules_mask()
        obs = self._obs()  # the rule hint reads the mask before the dwell rule, as the runtime manager's does
        if self._min_dwell > 1:
            self._since_switch = since_switch_after(self._since_switch, a != prev)
            self._mask = dwell_mask(self._mask, a, self._since_switch, self._min_dwell)
        info = {"step": r, "config": a, "switched": a != prev, "action_mask": self._mask.copy(), "cost": r[_COST]}
        return obs, reward, dead, truncated and not dead, info

    def action_masks(self) -> np.ndarray:
        """Configurations allowed now (sb3-contrib MaskablePPO convention)."""
        return self._mask.copy()

    def _low_soc(self) -> float:
        """The state of charge below which the battery rule holds now: the reserve, raised by the battery saver
        (up to the deadline with ``EnvParams.saver_to_deadline``)."""
        if not (self._saver_s or self._saver_dl):
            return self.reserve_soc
        i = self._i
        horizon = saver_horizon_s(self._saver_s, self._deadline_s - i * self.step_s, self._saver_dl)
        return saver_soc(self.reserve_soc, horizon, self._capacity_j, self._tr.base_w[i] + self._idle_w,
                         self._last_demand, self.rules.ept_min, self._tr.supply_w[i], self.params.saver_floor_frac)

    def _rules_mask(self) -> np.ndarray:
        """The action mask at row ``_i`` in the current state: the rules' own (``_compute_mask``) where one can bind
        (near the trip point, below the battery rule's threshold, the link or a processor down), else those that fit
        the device's memory, held to the episode's quality floor where it is in force (``EnvParams.floor_rule``;
        ``runtime.rules.floor_in_force``; under a power budget only within the budget rule's mask, and only with it)."""
        i = self._i
        low_soc = self._low_soc() if self._saver_s or self._saver_dl else self.reserve_soc  # no call when off
        if self.temp_c > self._hot_c or self.soc < low_soc or (self._has_split and self._bw[i] <= 0.0) \
                or (self._has_place and self._down[i]):
            return self._compute_mask(low_soc)
        b = self._budget[i]
        if b != b:
            return self._floor_ok
        return self._budget_masked(self._fits) if self._budget_rule else self._fits

    def _budget_masked(self, allowed: np.ndarray) -> np.ndarray:
        """The budget rule on ``allowed`` (``EnvParams.budget_rule``; ``runtime.rules.Feasibility.budget_mask``), then
        min-energy's floor within what it allows where the floor rule holds it (``runtime.rules.floor_within_budget``;
        the floor was out of force in ``allowed``). The rate it prices is the demand just seen + the backlog drained in
        one step, the allowance the budget left with its grace (what the observation shows), plus the energy of
        switching from the current configuration."""
        b, dt = self._budget[self._i], self.step_s
        p = self.params
        return self.rules.budget_floor_mask(self._last_demand + self.backlog / dt, b,
                                            self._budget_left_j + b * self._grace_s, dt, allowed,
                                            self.costs.switch_j[self._a], p.budget_reserve_s, p.budget_reserve_tps,
                                            floor_within_budget(self._mask_qmin, b), p.budget_floor_reserve_s)

    def _compute_mask(self, low_soc: float | None = None) -> np.ndarray:
        """The masks now; ``low_soc``: the battery rule's threshold when the caller has it (else ``_low_soc()``)."""
        tr, i = self._tr, self._i
        m = self.rules.mask(self._last_demand, self.temp_c, self._ambient[i], tr.device.t_max_c,
                            tr.device.r_th_c_per_w, tr.base_w[i] + self._idle_w, self.soc,
                            self._low_soc() if low_soc is None else low_soc,
                            tr.supply_w[i], bandwidth_mbps=tr.bandwidth_mbps[i], fits=self._fits,
                            down=self._down[i], q_min=floor_in_force(self._mask_qmin, self._budget[i]))
        return self._budget_masked(m) if self._budget_rule else m

    def _obs(self) -> np.ndarray:
        tr, i, dt, soc = self._tr, self._i, self.step_s, self.soc
        b = self._budget[i]
        head = scalar_head_values(SCALAR, soc, self._supply[i], tr.plugged[i], self.temp_c, self._t_max_c, b,
                                  self._budget_left_j + (b * self._grace_s if b == b else 0.0),
                                  self._deadline_s - i * dt, soc * self._capacity_j, self._horizon_s, self._last_demand,
                                  self.backlog / self.backlog_cap, self._last_lat_ms / self.slo_ms,
                                  tr.bandwidth_mbps[i])
        ahead = [self._supply[min(i + k, self._n - 1)] for k in range(1, self.lookahead + 1)] if self.lookahead else ()
        goal = goal_values(self.objective, self._qmin_obs, b) if self.layout.goal else ()
        therm = thermal_values(SCALAR, self.temp_c, self._ambient[i], self._t_max_c, tr.device.r_th_c_per_w,
                               tr.device.tau_s, dt, self._idle_w + self._base[i],
                               thermal_scale_w(SCALAR, self.params.thermal_cap, self._last_demand, self._costliest)
                               ) if self.layout.thermal else ()
        pw = self.layout.power_block(SCALAR, self._last_power_w, head, self._idle_w + self._base[i],
                                     self._last_demand, self._costliest)
        obs = self.layout.write(None, head, self._feat[self._a], self._last_power_w, self._ambient[i], ahead,
                                self._down[i], goal, therm, self._demand_avg, pw)
        if self._hint_rule is not None:  # the rule's choice from this observation, under this step's mask
            r = self._hint_rule
            self.hint_config = r.masked(r.choose(*(float(x) for x in self.layout.hint_inputs(obs))), self._mask)
            self.layout.set_hint(obs, self._hint_table[self.hint_config])
        return obs

    def _set_objective(self, o: dict, tr: TraceArrays) -> None:
        """This episode's objective (``EnvParams.objective``; ``options["objective"]`` overrides; ``mix``
        draws it from the env's generator) and the ``step_core`` inputs it sets."""
        e = episode_objective(self.params, self.np_random, tr.quality_floor, tr.deadline_s, self._i0,
                              o.get("objective"), o.get("quality_floor"))
        self.objective, self._wq, self._we, self._qmin = e.kind, e.w_q, e.w_e, e.q_min
        self._qmin_obs, self._deadline_s, self._until_row = e.floor, e.deadline_s, e.until_row

    def render(self):
        if self.render_mode == "ansi":
            return (f"t={self._i * self.step_s:7.0f}s soc={self.soc:.3f} T={self.temp_c:5.1f}°C "
                    f"cfg={self.space.names[self._a]} P={self._last_power_w:.2f}W backlog={self.backlog:.0f}")
        return None

    # ---- state, for controllers that plan from it (oracle) -----------------------------------
    @property
    def trace(self) -> TraceArrays:
        return self._tr

    def device_view(self) -> dict[str, Any]:
        """What a device running this episode would show its runtime manager now: the sensors' fields
        (``soc_frac``, ``temp_c``, ``plugged``, ``ambient_c``, ``power_w``, ``supply_w``, ``bandwidth_mbps``),
        the workload and limits (``demand_tps``, ``backlog_frac``, ``latency_over_slo``, ``budget_w``,
        ``budget_left_j``, ``deadline_left_s``, ``horizon_left_s``, ``base_w`` (idle + other load),
        ``capacity_j``, ``supply_ahead_w``), the processors down (``procs_down``), the time ``t_s`` and the
        objective. ``agents.deployed`` drives the runtime manager from it."""
        tr, i, dt = self._tr, self._i, self.step_s
        b = self._budget[i]
        return {
            "t_s": i * dt, "soc_frac": float(self.soc), "temp_c": float(self.temp_c), "plugged": float(tr.plugged[i]),
            "ambient_c": float(self._ambient[i]), "power_w": float(self._last_power_w),
            "supply_w": float(self._supply[i]), "bandwidth_mbps": float(tr.bandwidth_mbps[i]),
            "demand_tps": float(self._last_demand), "backlog_frac": self.backlog / self.backlog_cap,
            "latency_over_slo": self._last_lat_ms / self.slo_ms, "budget_w": float(b),
            "budget_left_j": self._budget_left_j + (b * self._grace_s if b == b else 0.0),
            "deadline_left_s": self._deadline_s - i * dt, "horizon_left_s": self._horizon_s,
            "base_w": self._idle_w + float(self._base[i]), "capacity_j": float(self._capacity_j),
            "supply_ahead_w": [float(self._supply[min(i + k, self._n - 1)]) for k in range(1, self.lookahead + 1)],
            "procs_down": int(self._down[i]), "objective": self.objective, "quality_floor": float(self._qmin_obs),
            "device": tr.device, "device_kind": tr.device_kind,
        }

    def sim_state(self) -> dict[str, Any]:
        """The true simulator state (public: the oracle acts from it, never from private fields)."""
        return {"soc": float(self.soc), "temp_c": float(self.temp_c), "backlog": float(self.backlog),
                "config": int(self._a), "allowance_j": float(self._budget_left_j), "row": int(self._i),
                "episode_start": int(self._i0), "objective": self.objective,
                "objective_inputs": (self._wq, self._we, self._qmin), "until_row": int(self._until_row),
                "ambient_shift_c": float(self._ambient_shift_c), "capacity_scale": float(self._capacity_scale)}

