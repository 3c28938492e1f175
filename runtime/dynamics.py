"""The device physics, once: battery, thermal model and throttling, request queue, latency, budget
and reward — and the parameters they read. numpy + the standard library only.

Everything that simulates the device calls :func:`step_core`: the scalar Gymnasium env and the
batched VecEnv (``envs/``), the oracle's dynamic programme and the MPC's roll-outs (``agents/``,
through :class:`Dynamics`), the trace replay (:func:`battery_step`, :func:`thermal_step`), the
feasibility rules (:func:`max_power_for_temp_w`) and the trace importer that removes a phone's
self-heating (:func:`thermal_step`). ``step_core`` is written once for Python floats and numpy
arrays alike: the caller passes the operations (:data:`SCALAR` or :data:`VECTOR`), so the scalar
env keeps the speed of plain float arithmetic and the batch the speed of numpy, from the same
lines. For floats, :func:`scalar_twin` compiles the same source once more with ``where(c, a, b)``
written as ``a if c else b`` and the other operations as ``min`` / ``max`` / ``math.exp``: the
same lines without the cost of a function call per operation (a parity test pins the two).

Per step of ``dt = step_s`` with configuration ``a`` (previous ``p``):

* throttle ``θ = 1`` if ``T ≤ T_max`` else ``max(θ_min, 1 − k·(T − T_max))``;
* a switch costs ``t_sw[p, a]`` seconds of compute and ``t_sw · P_a`` joules;
* per-token time ``τ_a = dec_a/θ`` on the device; a split configuration (``off_a = 1``, docs/split.md)
  adds its uplink ``bits_a / bandwidth``, the server's ``srv_a`` and the link's round trip, and its rate
  is ``1000/τ_a`` tokens/s (the local rate is ``tps_a·θ``); a link at 0 Mbit/s serves nothing;
* served ``S = min(backlog + demand·dt, rate_a·max(dt − t_sw, 0))``; the rest queues up to the
  backlog cap, beyond which tokens are dropped;
* radio (split only): ``E_radio = S·(bits_a·e_up + reply_bits·e_down) + P_conn·dt`` when ``S > 0``;
* energy ``E = S·e_a + E_sw + E_radio + (P_idle + P_base)·dt``, draw ``P = E/dt``;
* battery: a surplus ``supply − P > 0`` charges with efficiency η, a deficit discharges at
  100 %; SoC ≤ 0 is death (SoC clipped to [0, 1]);
* temperature, exact for constant power: ``T ← T_∞ + (T − T_∞)·exp(−dt/τ)``, ``T_∞ = T_amb + R_th·P``;
* latency ``τ_a + 1000·backlog/rate_a`` ms against the SLO;
* budget (power budget ``B`` of the LLM itself): allowance ``A ← A + (B·dt − E_llm)``; while
  ``A + B·grace < 0`` an LLM power above B is a violation of relative size ``(P_llm − B)/B``;
* reward ``q_a·S/(100·dt) − w_T·(T − T_max)⁺ − w_slo·[lat > SLO] − w_B·overdraw
  − w_drop·dropped/(100·dt) − w_death·[death]``.

Device constants per device kind (``DEVICES``) are modelled, order-of-magnitude values:

* phone: passively cooled handset, skin-temperature limit ≈ 43–45 °C (vendor skin-temperature
  guidelines); a phone sustaining 3–4 W settles 15–20 °C above ambient → R_th ≈ 5 °C/W;
  handset thermal time constants are minutes → τ = 240 s; SoC idle ≈ 0.2 W.
* laptop: fan-cooled chassis; ≈ 2–3 °C/W from package power to chassis, throttle point of the
  sensor the governor watches set to 70 °C; τ = 120 s (fan reacts quickly); idle ≈ 2 W.
* solar-node: sealed outdoor enclosure (e.g. a Raspberry-Pi-class board in an IP65 box):
  ≈ 10 °C/W, slow (τ = 600 s), component limit 60 °C; idle ≈ 0.5 W.
* default: used for unknown kinds; phone-like.

Memory for the model (``memory_mb``, modelled): an Android app's large-heap class is typically
512 MB (``ActivityManager.getLargeMemoryClass``); a laptop gives a model several GB (4 GB here); a
Raspberry-Pi-class node with 1 GB keeps a quarter for the model. A configuration whose device share
(weights at its precision + the KV cache of its device blocks at full context, a profile's
``device_bytes``) exceeds it is infeasible (``runtime.rules``).

Idle power is the simulated platform's power while the model waits (a profile's
``idle_power_w`` describes the machine the profile was measured on, not the simulated device).
"""

from __future__ import annotations

import ast
import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, NamedTuple

import numpy as np

TOK_SCALE = 100.0  # tokens per second that make one unit of reward


# ---- parameters ------------------------------------------------------------------------------

@dataclass(frozen=True)
class DeviceConstants:
    """Thermal and battery constants of a simulated device kind (a trace's ``device_kind``)."""

    r_th_c_per_w: float  # steady-state temperature rise per watt dissipated, °C/W
    tau_s: float  # thermal time constant, s
    t_max_c: float  # throttling trip point, °C
    throttle_per_c: float = 0.1  # throughput lost per °C above t_max_c (fraction)
    throttle_min: float = 0.3  # throughput never scaled below this fraction
    charge_efficiency: float = 0.9  # fraction of surplus supply power stored in the battery
    idle_power_w: float = 0.2  # platform idle power while the model waits, W
    memory_mb: float = 512.0  # memory the model may hold on the device (weights + KV cache), MB

    @classmethod
    def from_dict(cls, d: Any) -> DeviceConstants:
        """From a mapping (extra keys ignored; missing optional keys take the defaults)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: float(v) for k, v in dict(d).items() if k in names})


DEVICES: dict[str, DeviceConstants] = {
    "phone": DeviceConstants(r_th_c_per_w=5.0, tau_s=240.0, t_max_c=45.0, idle_power_w=0.2, memory_mb=512.0),
    "laptop": DeviceConstants(r_th_c_per_w=2.5, tau_s=120.0, t_max_c=70.0, idle_power_w=2.0, memory_mb=4096.0),
    "solar-node": DeviceConstants(r_th_c_per_w=10.0, tau_s=600.0, t_max_c=60.0, idle_power_w=0.5, memory_mb=256.0),
    "default": DeviceConstants(r_th_c_per_w=5.0, tau_s=240.0, t_max_c=45.0, idle_power_w=0.2, memory_mb=512.0),
}


def device_constants(kind: str) -> DeviceConstants:
    """Constants of a device kind (``default`` for unknown kinds)."""
    return DEVICES.get(kind, DEVICES["default"])


@dataclass(frozen=True)
class RewardWeights:
    death: float = 50.0
    """battery death: about a hundred steps of full-quality serving, so dying never pays"""
    thermal_per_c: float = 0.5
    """per °C above the trip point: a few degrees cost as much as a whole step's quality"""
    slo: float = 0.5
    """a step whose latency exceeds the SLO"""
    budget: float = 1.0
    """per unit of relative overdraw of the LLM's power budget"""
    drop: float = 0.5
    """per 100 dropped tokens per second: about what serving them would have earned"""
    energy: float = 0.1
    """min-energy objective: per W of the LLM's power (serving 10 tok/s at 20 mJ/token costs 0.02, less
    than dropping them, 0.05: the objective saves energy, it does not stop serving)"""
    floor: float = 0.5
    """min-energy objective: a step whose served quality per token is below the floor (as an SLO miss)"""
    reserve: float = 0.5
    """last-until objective: a step before the deadline that ends with the battery below the reserve"""


@dataclass(frozen=True)
class LinkConstants:
    """The device↔server link of split configurations (docs/split.md). Bandwidth comes from the trace
    (``bandwidth_mbps``, 0 = down); everything else here is ``modelled`` from the cited sources."""

    rtt_ms: float = 40.0
    """round trip per token, ms: LTE/5G-NSA median RTTs of 30–60 ms (Narayanan et al., SIGCOMM 2021)"""
    uplink_nj_per_bit: float = 18.39
    """radio energy per bit sent, nJ: least-squares fit over 48,843 1-s samples of the SIGCOMM 2021
    phone 5G power logs (traces.import 5g-power, all network types)"""
    downlink_nj_per_bit: float = 2.59
    """radio energy per bit received, nJ: the same fit"""
    connected_w: float = 1.06
    """radio power above idle in a step that used the link (connected state plus tail), W: LTE tail
    power 1,060 mW held ≈ 11.6 s after the last packet (Huang et al., MobiSys 2012), longer than a step"""
    reply_bits: float = 1392.0
    """bits received per token: the split server's step reply (JSON header with the token and timings,
    174 bytes with its WebSocket frame; ``model.split_profile.framing_bytes``, pinned by a test)"""
    server_w: float = 30.0
    """server power attributed to the model's share while it computes, W: modelled, a few cores of a
    ~200 W two-socket server (reported as the server's energy per token, not in the reward)"""


@dataclass(frozen=True)
class Availability:
    """Processor outages of the seeded scenario generator (docs/placement.md; ``runtime.placement.outages``):
    the GPU, the NPU and the little CPU cluster are taken by another app for a while, or lost until the
    episode ends. The big CPU cluster is never unavailable (the survivor of last resort). All rates 0: no
    outages (the default). ``modelled``: no measured outage statistics exist for these processors."""

    busy_per_h: float = 0.0
    """outages per hour per accelerator in which another app holds it (camera pipeline on the NPU, a game on the GPU)"""
    busy_mean_s: float = 300.0
    """mean length of such an outage, s (exponentially distributed)"""
    lost_per_h: float = 0.0
    """per accelerator and hour: it is lost (driver reset, thermal shutdown) until the trace ends"""
    seed: int = 0
    """seed of the scenario; each trace's outages derive from it and the trace's name"""


OBJECTIVES: tuple[str, ...] = ("max-quality", "min-energy", "last-until")


@dataclass(frozen=True)
class Objective:
    """The user's objective (docs/objectives.md). Per episode one of :data:`OBJECTIVES`:

    * ``max-quality``: quality is maximised; a power budget (the trace's ``budget_w``, or a user-set one)
      is the constraint. An energy budget (Wh until a time) is served on the device by re-pacing it every
      decision into the power budget energy left / time left (``runtime.objective``, ``deploy.py run
      --budget-wh``), so the simulator and the policies need only power budgets;
    * ``min-energy``: the LLM's power is minimised (``RewardWeights.energy`` per W) subject to a quality
      floor: a step whose served quality per token is below ``quality_floor`` is a violation
      (``RewardWeights.floor``; the window is one control step, which keeps the oracle exact);
    * ``last-until``: quality is maximised while the battery stays above ``EnvParams.reserve_soc`` until
      the deadline (the trace's ``deadline_s``, else the end of the episode); each step below it before
      the deadline is a violation (``RewardWeights.reserve``).

    ``kind = "mix"`` draws the objective per episode (``mix_min_energy``, ``mix_last_until``, the rest
    max-quality) from the env's own generator, for one goal-conditioned policy. The objective and its
    parameters enter the observation when ``goal_obs`` is on (always with ``mix``).
    """

    kind: str = "max-quality"
    """max-quality | min-energy | last-until | mix"""
    quality_floor: float = 0.45
    """min-energy: the floor on the served quality per token (skill above chance, 0..1); a trace's
    meta.extra["quality_floor"] overrides it"""
    mix_min_energy: float = 1.0 / 3.0
    """mix: share of episodes with min-energy"""
    mix_last_until: float = 1.0 / 3.0
    """mix: share of episodes with last-until (the rest: max-quality)"""
    goal_obs: bool = False
    """the objective block in the observation (goal-conditioned policies; on with mix)"""

    @property
    def observed(self) -> bool:
        return self.goal_obs or self.kind == "mix"


def objective_inputs(kind: str, quality_floor: float) -> tuple[float, float, float]:
    """``(w_q, w_e, q_min)`` of ``step_core`` for an episode's objective (``until`` is per step)."""
    if kind == "min-energy":
        return 0.0, 1.0, float(quality_floor)
    return 1.0, 0.0, math.nan


class EpisodeObjective(NamedTuple):
    """One episode's objective and the ``step_core`` inputs it sets (:func:`episode_objective`)."""

    kind: str
    w_q: float
    w_e: float
    q_min: float  # NaN unless min-energy
    floor: float  # the floor in force (observation), whatever the objective
    deadline_s: float  # the trace's deadline; for last-until without one, the episode's end
    until_row: int  # the first row at which the last-until deadline is no longer ahead (-1: none)


def episode_objective(p: EnvParams, rng: Any, trace_floor: float, trace_deadline_s: float, start_row: int,
                      kind: str | None = None, floor: float | None = None) -> EpisodeObjective:
    """The objective of an episode starting at ``start_row``: ``kind`` if given, else ``p.objective.kind``,
    drawn with one ``rng.random()`` for ``mix``; the floor ``floor``, else the trace's, else the objective's;
    last-until's deadline the trace's, else the episode's end. Shared by the scalar and the batched env."""
    ob = p.objective
    if kind is None:
        kind = ob.kind
        if kind == "mix":
            u = float(rng.random())
            kind = ("min-energy" if u < ob.mix_min_energy else
                    "last-until" if u < ob.mix_min_energy + ob.mix_last_until else "max-quality")
    if kind not in OBJECTIVES:
        raise ValueError(f"objective {kind!r}: choose one of {list(OBJECTIVES)}")
    q = float(floor if floor is not None else trace_floor if trace_floor == trace_floor else ob.quality_floor)
    w_q, w_e, q_min = objective_inputs(kind, q)
    deadline, until_row = trace_deadline_s, -1
    if kind == "last-until":
        if deadline != deadline:
            deadline = (start_row + p.max_episode_steps) * p.step_s
        until_row = math.ceil(deadline / p.step_s)
    return EpisodeObjective(kind, w_q, w_e, q_min, q, deadline, until_row)


@dataclass(frozen=True)
class EnvParams:
    """The one set of environment parameters: the env, the batched env, the oracle, the MPC, the
    run folder, the exported policy and the runtime manager all read this."""

    step_s: float = 10.0
    """control step, seconds: a decision every 10 s follows the traces' resolution and keeps switches rare"""
    slo_ms: float = 500.0
    """latency objective per token (decode + queueing), ms: a chat reply that starts within half a second"""
    backlog_cap_tokens: float = 5000.0
    """queued tokens beyond this are dropped (about a minute of demand at the default rates)"""
    reserve_soc: float = 0.05
    """battery reserve: below it only the cheapest configurations are allowed (masks, shield)"""
    saver_s: float = 0.0
    """battery saver, seconds: the reserve of the masks and the shield is raised by the charge that the device's own
    load and the safe configuration, less the supply, would take in this time (runtime.rules.saver_soc), so that only
    the cheap set runs while the battery would reach its reserve within it. A device does not know when its session
    ends or when a charger comes; hedging like this is how a policy without that foresight outlives a nearly empty
    battery, at a measured cost in quality (docs/agents.md, "The battery saver"). 0: off (the default, as every
    committed score)"""
    saver_to_deadline: bool = False
    """the battery saver's horizon reaches a deadline ahead (the observation's, runtime.rules.saver_horizon_s): when
    the user says when the session ends or the charger comes (``deploy.py run --until``), the cheap set runs while
    the device's own load and the safe configuration would take the battery to its reserve before then. Off by
    default, as every committed score (docs/agents.md, "The user's word on the session's end")"""
    saver_floor_frac: float = 1.0
    """where the battery saver counts its charge from, as a share of reserve_soc (runtime.rules.saver_soc): 1 keeps
    the whole reserve until the saver's horizon (the cheap set runs while the battery would reach its reserve
    within it); 0 only keeps the device alive that long (the cheap set runs while the battery would be empty
    within it), and the reserve may be spent before the horizon, as the oracle spends it. The hard limit stays at
    the reserve either way. 1 by default, as every committed score (docs/agents.md, "The saver that spends the
    reserve")"""
    floor_rule: bool = False
    """min-energy: the action masks hold the quality floor (runtime.rules.Feasibility.floor_mask): of the
    configurations the safety rules allow, only those that meet the floor stay allowed, when one does. It gives way
    to every safety rule and to a power budget: where the episode has one, the floor is held within what the budget
    rule allows (runtime.rules.floor_within_budget), and is only a cost without that rule (floor_in_force). Off in
    training by default, as every committed score: trained with it, the goal-conditioned recipe scored lower on three
    seeds (docs/objectives.md, "The floor as a mask rule"). Scoring and deploying hold the floor whatever a run was
    trained with (agents.evaluate, the objectives reports and deploy.py run turn it on unless told --no-floor-rule):
    without it a policy served below the floor on hundreds of steps of a test split"""
    budget_rule: bool = False
    """a power budget in the action masks (runtime.rules.Feasibility.budget_mask): while a configuration's power at
    the current rate (the demand + the backlog drained in one step) is above the budget and would take the budget's
    allowance, grace included, below what the rule keeps in hand (budget_reserve_s) by the end of the step, it is
    masked, unless nothing the other rules allow meets the budget (then the least power of those). It gives way to
    every safety rule; the floor rule comes after it, within what it allows (floor_within_budget), so the floor never
    overdraws the budget. Off in training by default, as every committed score; scoring and deploying hold the user's
    budget whatever a run was trained with (agents.evaluate, the objectives reports and deploy.py run turn it on
    unless told --no-budget-rule; docs/objectives.md, "The budget as a mask rule")"""
    budget_reserve_s: float = 900.0
    """budget_rule: the seconds of budget the rule keeps in hand (budget_w × this, of the allowance with its grace): a
    configuration above the budget runs only while the allowance left after the step stays above it. A burst of
    demand can take even the smallest model over the budget, and only savings held back pay for it: spent down to
    zero, the allowance overdraws at the next burst. Chosen on the objectives set's train and val splits (0, 300,
    900, 1800, 3600 s; docs/objectives.md, "The budget as a mask rule")"""
    budget_reserve_tps: float = 50.0
    """budget_rule: the burst the reserve must also pay for, tok/s: the rule keeps at least budget_reserve_s of the
    safe configuration serving this rate (its energy per token × this), when that is more than budget_reserve_s of
    the budget. A budget far below what a burst costs even the smallest model needs savings in proportion to the
    burst, not to the budget; 0: seconds of budget only. Chosen on the objectives set's train and val splits (0, 50,
    100, 200 tok/s at 900 s; docs/objectives.md, "The budget as a mask rule")"""
    budget_floor_reserve_s: float = 300.0
    """budget_rule with floor_rule, min-energy: the seconds of budget kept in hand where holding the quality floor
    needs the reserve (runtime.rules.Feasibility.budget_floor_mask): a configuration that meets the floor may take the
    allowance down to this instead of budget_reserve_s (0: down to zero, its grace included; the budget is never
    overdrawn for the floor). The reserve guards against a burst that may come; a step below the floor is a violation
    now. ≥ budget_reserve_s: the same reserve for the floor as for anything else (as before 2026-12-06, 900 s). Chosen
    over 0, 300, 600 and 900 s on the splits a choice may see (the real folds' val splits, where 0 s was best, and
    the generated objectives set's train and val, where 0 s overdrew most; docs/objectives.md, "The floor may spend
    the budget's reserve")"""
    budget_grace_s: float = 300.0
    """seconds of budget the LLM may borrow before an overdraw counts (bursts are allowed)"""
    lookahead: int = 0
    """supply-power forecast steps appended to the observation (0: none)"""
    thermal_obs: bool = False
    """add the thermal headroom in watts to the observation (runtime.observation.THERMAL): the model power the
    device can hold at its trip point, which a policy cannot compute from degrees without the kind's R_th;
    off by default so that policy files written before it keep their observation"""
    thermal_cap: float = 0.0
    """with thermal_obs: 0 gives the block in watts; > 0 divides it by the power the costliest configuration (the
    most energy per token) would draw at the current demand and clips it to ±this, so that "the largest model fits"
    reads the same on a phone and on a laptop (in watts a laptop's headroom lies far outside anything phones show:
    crossval_thermal)"""
    demand_avg_s: float = 0.0
    """time constant of the observation's smoothed demand (runtime.observation.DEMAND_AVG), s; 0: no such feature.
    Inside a burst the last step's demand swings between a few and hundreds of tokens per second, and a policy
    that reads only it drops to a small configuration at every lull (docs/agents.md)"""
    power_cap: float = 0.0
    """> 0 adds the power block (runtime.observation.POWER): the last step's draw and the affordable power divided by
    what the device would draw running the costliest configuration at the current demand (its own load included),
    clipped to [0, this]. In watts a laptop's draw and battery lie 14-27 σ outside every phone's, and a policy that
    never saw a laptop reads them through untrained weights (docs/agents.md, "A device never seen"); 0: none"""
    power_supply: bool = False
    """with power_cap: one more row in the power block, ``supply_frac``: the supply (charger or harvest) divided by
    the same power, clipped to [0, power_cap]. The affordable power counts the stored energy only, and in watts a
    laptop's 40 W charger lies above everything the data's phones (at most 27 W) and solar panels supply: as a
    fraction, "the charger covers the largest model" reads the same on every device (docs/objectives.md, "Where the
    gap lies"); off: the block as before"""
    rule_hint: bool = False
    """add the schedutil-like rule's choice under the action masks to the observation, as its knob features
    (runtime.observation, "hint_" rows; runtime.rules.SchedutilRule): the policy builds on the rule's decision
    instead of re-learning its thermal cap from a few hot traces (docs/agents.md, "The rule hint")"""
    min_dwell_steps: int = 0
    """the runtime manager's dwell rule in the action masks (runtime.rules.dwell_mask): within this many steps of a
    switch only the current configuration is allowed, unless the other rules forbid it. 0 or 1: no rule (the
    default, as every committed score). ``deploy.py run`` holds a policy to 3 decisions (``--min-dwell``); a policy
    trained without the rule meets on the device states it never saw in training (held in a configuration it left
    after one step), and one measured policy stayed in such a state for 88 decisions (docs/agents.md)"""
    max_episode_steps: int = 720
    """episode length of training and evaluation (720 = 2 h at 10 s)"""
    weights: RewardWeights = RewardWeights()
    """reward weights (runtime.dynamics.RewardWeights)"""
    link: LinkConstants = LinkConstants()
    """the device↔server link of split configurations (runtime.dynamics.LinkConstants)"""
    avail: Availability = Availability()
    """processor outages for placement configurations (runtime.dynamics.Availability; none by default)"""
    objective: Objective = Objective()
    """the user's objective (runtime.dynamics.Objective): max-quality (default), min-energy, last-until, mix"""

    @property
    def horizon_s(self) -> float:
        """The rolling horizon of the observation's ``affordable_power_w`` without a deadline (stored energy /
        this), s: one episode's length. A device never knows when its session ends, so neither does the
        policy; the runtime manager's default ``ManagerConfig.horizon_s`` is this figure."""
        return float(self.max_episode_steps) * float(self.step_s)

    def __post_init__(self) -> None:
        problems = []
        for name in ("step_s", "slo_ms", "backlog_cap_tokens"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                problems.append(f"{name} must be a positive finite number, got {v!r}")
        if not 0.0 <= self.reserve_soc < 1.0:
            problems.append(f"reserve_soc must be in [0, 1), got {self.reserve_soc!r}")
        if not (isinstance(self.saver_s, (int, float)) and math.isfinite(self.saver_s) and self.saver_s >= 0):
            problems.append(f"saver_s must be a finite number of seconds >= 0 (0: no battery saver), got "
                            f"{self.saver_s!r}")
        if not (isinstance(self.saver_floor_frac, (int, float)) and 0.0 <= self.saver_floor_frac <= 1.0):
            problems.append(f"saver_floor_frac must be in [0, 1] (1: the reserve, 0: empty), got "
                            f"{self.saver_floor_frac!r}")
        if self.floor_rule not in (0, 1):  # a bool (from_dict stores it as 0.0 / 1.0, as every switch)
            problems.append(f"floor_rule must be true or false, got {self.floor_rule!r}")
        if self.budget_rule not in (0, 1):
            problems.append(f"budget_rule must be true or false, got {self.budget_rule!r}")
        if not (isinstance(self.budget_reserve_s, (int, float)) and math.isfinite(self.budget_reserve_s)
                and self.budget_reserve_s >= 0):
            problems.append(f"budget_reserve_s must be a finite number of seconds >= 0, got {self.budget_reserve_s!r}")
        if not (isinstance(self.budget_floor_reserve_s, (int, float)) and math.isfinite(self.budget_floor_reserve_s)
                and self.budget_floor_reserve_s >= 0):
            problems.append("budget_floor_reserve_s must be a finite number of seconds >= 0, got "
                            f"{self.budget_floor_reserve_s!r}")
        if not (isinstance(self.budget_reserve_tps, (int, float)) and math.isfinite(self.budget_reserve_tps)
                and self.budget_reserve_tps >= 0):
            problems.append(f"budget_reserve_tps must be a finite token rate >= 0, got {self.budget_reserve_tps!r}")
        if not (math.isfinite(self.budget_grace_s) and self.budget_grace_s >= 0):
            problems.append(f"budget_grace_s must be >= 0, got {self.budget_grace_s!r}")
        if int(self.lookahead) != self.lookahead or not 0 <= self.lookahead <= 100:
            problems.append(f"lookahead must be an integer in 0..100, got {self.lookahead!r}")
        if not (math.isfinite(self.thermal_cap) and 0.0 <= self.thermal_cap <= 100.0):
            problems.append(f"thermal_cap must be in [0, 100] (0: watts), got {self.thermal_cap!r}")
        elif self.thermal_cap and not self.thermal_obs:
            problems.append(f"thermal_cap {self.thermal_cap!r} shapes the thermal block: set thermal_obs too, "
                            "or thermal_cap 0 for no block")
        if not (math.isfinite(self.power_cap) and 0.0 <= self.power_cap <= 100.0):
            problems.append(f"power_cap must be in [0, 100] (0: no power block), got {self.power_cap!r}")
        elif self.power_supply and not self.power_cap:
            problems.append("power_supply adds a row to the power block: set power_cap > 0 too, or power_supply "
                            "off")
        if not (math.isfinite(self.demand_avg_s) and self.demand_avg_s >= 0.0):
            problems.append(f"demand_avg_s must be >= 0 s (0: none), got {self.demand_avg_s!r}")
        if int(self.min_dwell_steps) != self.min_dwell_steps or not 0 <= self.min_dwell_steps <= 1000:
            problems.append(f"min_dwell_steps must be an integer in 0..1000 (0: no dwell rule), got "
                            f"{self.min_dwell_steps!r}")
        if int(self.max_episode_steps) != self.max_episode_steps or self.max_episode_steps < 1:
            problems.append(f"max_episode_steps must be a positive integer, got {self.max_episode_steps!r}")
        for f in fields(RewardWeights):
            v = getattr(self.weights, f.name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                problems.append(f"weights.{f.name} must be a finite number >= 0, got {v!r}")
        for f in fields(LinkConstants):
            v = getattr(self.link, f.name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                problems.append(f"link.{f.name} must be a finite number >= 0, got {v!r}")
        for f in fields(Availability):
            v = getattr(self.avail, f.name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                problems.append(f"avail.{f.name} must be a finite number >= 0, got {v!r}")
        if self.avail.busy_mean_s <= 0:
            problems.append(f"avail.busy_mean_s must be > 0, got {self.avail.busy_mean_s!r}")
        ob = self.objective
        if ob.kind not in (*OBJECTIVES, "mix"):
            problems.append(f"objective.kind must be one of {[*OBJECTIVES, 'mix']}, got {ob.kind!r}")
        if not 0.0 <= ob.quality_floor <= 1.0:
            problems.append(f"objective.quality_floor must be in [0, 1], got {ob.quality_floor!r}")
        if not (0.0 <= ob.mix_min_energy and 0.0 <= ob.mix_last_until and ob.mix_min_energy + ob.mix_last_until <= 1.0):
            problems.append("objective.mix_min_energy and mix_last_until must be >= 0 and sum to at most 1")
        if problems:
            raise ValueError("invalid environment parameters: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> EnvParams:
        """From :meth:`to_dict` output (unknown keys are an error naming them; missing keys take defaults)."""
        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        extra = sorted(set(d) - known)
        if extra:
            raise ValueError(f"unknown environment parameters {extra}; known: {sorted(known)}")
        for key, sub in (("weights", RewardWeights), ("link", LinkConstants), ("avail", Availability)):
            w = d.pop(key, None)
            if isinstance(w, dict):
                wk = {f.name for f in fields(sub)}
                bad = sorted(set(w) - wk)
                if bad:
                    raise ValueError(f"unknown {key} fields {bad}; known: {sorted(wk)}")
                ty = {f.name: f.type for f in fields(sub)}
                d[key] = sub(**{k: int(v) if ty[k] in ("int", int) else float(v) for k, v in w.items()})
            elif isinstance(w, sub):
                d[key] = w
        ob = d.pop("objective", None)
        if isinstance(ob, dict):
            known_o = {f.name for f in fields(Objective)}
            bad = sorted(set(ob) - known_o)
            if bad:
                raise ValueError(f"unknown objective fields {bad}; known: {sorted(known_o)}")
            conv = {"kind": str, "goal_obs": bool}
            d["objective"] = Objective(**{k: conv.get(k, float)(v) for k, v in ob.items()})
        elif isinstance(ob, Objective):
            d["objective"] = ob
        types = {f.name: f.type for f in fields(cls)}
        for k in list(d):
            if k not in ("weights", "link", "avail", "objective") and d[k] is not None:
                d[k] = int(d[k]) if types[k] in ("int", int) else float(d[k])
        return cls(**d)

    def replace(self, **changes: Any) -> EnvParams:
        return replace(self, **changes)


# ---- the core ----------------------------------------------------------------------------------

class Ops(NamedTuple):
    """The four operations ``step_core`` needs, for floats or for arrays."""

    where: Any
    minimum: Any
    maximum: Any
    exp: Any


def _where(c, a, b):
    return a if c else b


SCALAR = Ops(_where, min, max, math.exp)
VECTOR = Ops(np.where, np.minimum, np.maximum, np.exp)


class Plant(NamedTuple):
    """The simulated device: battery capacity and the kind's constants (floats or arrays)."""

    capacity_j: Any
    r_th_c_per_w: Any
    tau_s: Any
    t_max_c: Any
    throttle_per_c: Any
    throttle_min: Any
    charge_efficiency: Any
    idle_power_w: Any


class StepResult(NamedTuple):
    """Everything one step produces (floats or arrays). Order of ``terms``: quality, thermal,
    slo, budget, drop, death."""

    soc: Any
    temp_c: Any
    backlog: Any
    budget_left_j: Any
    dead: Any
    reward: Any
    r_quality: Any
    r_thermal: Any
    r_slo: Any
    r_budget: Any
    r_drop: Any
    r_death: Any
    over_c: Any
    slo_bad: Any
    over_budget: Any
    served: Any
    dropped: Any
    energy_j: Any
    power_w: Any
    latency_ms: Any
    throttle: Any
    cost: Any  # violated constraints this step: thermal + SLO + budget + death
    radio_j: Any  # the device's radio energy this step (split configurations), J
    r_energy: Any  # the objective's terms (Objective): the LLM's power (min-energy),
    r_floor: Any  # a served quality below the floor (min-energy),
    r_reserve: Any  # the battery below the reserve before the deadline (last-until)


TERM_NAMES = ("quality", "thermal", "slo", "budget", "drop", "death")
#: the objective's reward terms (StepResult.r_energy, r_floor, r_reserve), after TERM_NAMES
OBJECTIVE_TERMS = ("energy", "floor", "reserve")
_new = tuple.__new__


def step_core(o: Ops, dt: float, p: EnvParams,
              tps, ept_j, dec_ms, quality, off, up_bits, server_ms, seg2_ms, xfer_ms, trip1_c, trip2_c, heat_frac,
              sw_s, sw_j,
              soc, temp_c, backlog, budget_left_j,
              demand_tps, supply_w, ambient_c, base_w, budget_w, bw_mbps, w_q, w_e, q_min, until,
              capacity_j, r_th, tau_s, t_max, thr_k, thr_min, eta, idle_w) -> StepResult:
    """One step of the device (module docstring), for floats (``o = SCALAR``) or arrays (``VECTOR``).

    Per-configuration inputs are those of the chosen configuration (``tps`` …), and ``sw_s`` /
    ``sw_j`` those of the switch from the previous one. ``budget_w`` is NaN without a budget.
    ``off`` is 1 for a split configuration (its ``dec_ms``/``ept_j`` are the device's share,
    ``up_bits`` the bits it sends per token, ``server_ms`` the server's compute) and 0 for a local one.
    Placement (docs/placement.md): ``dec_ms`` is the whole device time per token, of which ``seg2_ms``
    runs on the second segment's processor and ``xfer_ms`` crosses the interconnect (both 0 for a
    single-processor placement); each segment's processor throttles at ``t_max`` plus its own offset
    (``trip1_c``, ``trip2_c``), and ``heat_frac`` of the model's energy heats the device.
    The user's objective (``Objective``; ``objective_inputs``): ``w_q`` weighs the quality term (0 for
    min-energy), ``w_e`` 1 for min-energy (the LLM's power costs ``weights.energy`` per W), ``q_min`` the
    quality floor (NaN: none), ``until`` 1 while the last-until deadline is ahead (the battery must stay
    above the reserve).
    """
    where, mx = o.where, o.maximum
    theta = throttle(o, temp_c, t_max, trip1_c, thr_k, thr_min)
    lk = p.link
    # a second processor throttles at its own trip point; a where, so the float twin skips the second
    # throttle and the interconnect for a single-processor configuration (bit-identical: x + 0.0 = x)
    dev_ms = where(seg2_ms + xfer_ms > 0.0, (dec_ms - seg2_ms - xfer_ms) / theta
                   + seg2_ms / throttle(o, temp_c, t_max, trip2_c, thr_k, thr_min) + xfer_ms, dec_ms / theta)
    tok_ms = token_ms(o, dev_ms, 1.0, off, up_bits, server_ms, bw_mbps, lk.rtt_ms)
    rate = where((off > 0.0) | (seg2_ms + xfer_ms > 0.0), 1000.0 / tok_ms, tps * theta)
    served, dropped, backlog = queue_update(o, backlog, demand_tps, dt, mx(dt - sw_s, 0.0), rate,
                                            p.backlog_cap_tokens)
    other_j = (idle_w + base_w) * dt
    # radio: bits × energy per bit both ways, plus the connected-state power for a step that used the link
    radio_j = where(off > 0.0, served * radio_j_per_token(up_bits, lk) + where(served > 0.0, lk.connected_w * dt, 0.0),
                    0.0)
    energy_j = served * ept_j + sw_j + other_j + radio_j
    power_w = energy_j / dt
    soc, dead = battery_update(o, soc, supply_w, power_w, dt, capacity_j, eta)
    # the heat: a processor with its own heat path (thermal share < 1) warms the device less
    heat_w = (served * ept_j * heat_frac + sw_j + other_j + radio_j) / dt
    temp_c = thermal_update(o, temp_c, ambient_c, heat_w, dt, r_th, tau_s)
    lat_ms = tok_ms + 1000.0 * backlog / rate
    over_c = mx(temp_c - t_max, 0.0)
    slo_bad = lat_ms > p.slo_ms
    # budget: the allowance covers the LLM's own energy (traces/ schema)
    has_b = budget_w == budget_w
    llm_j = energy_j - other_j
    b0 = where(has_b, budget_w, 0.0)
    budget_left_j = where(has_b, budget_left_j + (b0 * dt - llm_j), budget_left_j)
    over_b = where(has_b & (budget_left_j + b0 * p.budget_grace_s < 0) & (llm_j > b0 * dt),
                   (llm_j / dt - b0) / where(has_b, b0, 1.0), 0.0)
    w = p.weights
    r_q = w_q * quality * served / (TOK_SCALE * dt)
    r_t = -w.thermal_per_c * over_c
    r_s = -w.slo * slo_bad
    r_b = -w.budget * over_b
    r_d = -w.drop * dropped / (TOK_SCALE * dt)
    r_x = -w.death * dead
    # the objective's terms: the LLM's power (min-energy), a served quality below the floor (min-energy),
    # the battery below the reserve while the deadline is ahead (last-until)
    r_e = -w.energy * w_e * llm_j / dt
    floor_bad = (served > 0.0) & (quality < q_min)  # False for q_min NaN
    r_f = -w.floor * floor_bad
    low = (until > 0.0) & (soc < p.reserve_soc)
    r_r = -w.reserve * low
    reward = r_q + r_t + r_s + r_b + r_d + r_x + r_e + r_f + r_r
    # violated constraints; a float first, as numpy adds two bool arrays as a logical or
    cost = (over_c > 0) * 1.0 + slo_bad + (over_b > 0) + dead + floor_bad + low
    # tuple.__new__: a named tuple's own __new__ costs a microsecond at 21 fields, as much as the physics
    return _new(StepResult, (soc, temp_c, backlog, budget_left_j, dead, reward, r_q, r_t, r_s, r_b, r_d, r_x,
                             over_c, slo_bad, over_b, served, dropped, energy_j, power_w, lat_ms, theta, cost,
                             radio_j, r_e, r_f, r_r))


def throttle(o: Ops, temp_c, t_max_c, trip_c, per_c, min_frac):
    """Throughput factor θ of a processor whose trip point is ``t_max_c + trip_c`` (°C): 1 up to it, then
    ``max(min_frac, 1 − per_c·(temp_c − trip point))``. Floats (``SCALAR``) or arrays (``VECTOR``)."""
    return o.where(temp_c <= t_max_c + trip_c, 1.0, o.maximum(min_frac, 1.0 - per_c * (temp_c - t_max_c - trip_c)))


def queue_update(o: Ops, backlog, demand_tps, dt_s, serve_s, rate_tps, cap_tokens):
    """The request queue over ``dt_s`` seconds: ``demand_tps`` arrives on top of ``backlog`` tokens,
    ``rate_tps`` tokens/s are served for ``serve_s`` seconds (the step less a switch's time), and what
    stays beyond ``cap_tokens`` is dropped. Returns (served, dropped, backlog) in tokens."""
    requested = backlog + demand_tps * dt_s
    served = o.minimum(requested, rate_tps * serve_s)
    left = requested - served
    dropped = o.maximum(left - cap_tokens, 0.0)
    return served, dropped, left - dropped


def token_ms(o: Ops, dec_ms, theta, off, up_bits, server_ms, bw_mbps, rtt_ms):
    """Time per token, ms: the device's share (throttled by θ) and, for a split configuration
    (``off = 1``), the uplink at the link's bandwidth, the server and one round trip. A link at
    0 Mbit/s takes ~forever (1e-9 Mbit/s)."""
    # a where, not a product: the float twin turns it into a conditional expression, so a local
    # configuration (off = 0) skips the link's arithmetic
    return dec_ms / theta + o.where(off > 0.0, up_bits / (o.maximum(bw_mbps, 1e-9) * 1e3) + server_ms + rtt_ms, 0.0)


def radio_j_per_token(up_bits, link: LinkConstants):
    """The radio's energy per token of a split configuration, J: its bits up and the reply's bits down
    at the link's energy per bit (the connected-state power is per step, not per token)."""
    return (up_bits * link.uplink_nj_per_bit + link.reply_bits * link.downlink_nj_per_bit) * 1e-9


def battery_update(o: Ops, soc, supply_w, power_w, dt_s, capacity_j, eta):
    """(SoC, died) after ``dt_s`` at constant draw: a surplus charges with efficiency η, a deficit
    discharges at 100 %; SoC ≤ 0 is death (SoC clipped to [0, 1])."""
    net_w = supply_w - power_w
    soc = o.minimum(soc + o.where(net_w > 0, net_w * eta, net_w) * dt_s / capacity_j, 1.0)
    dead = soc <= 0.0
    return o.maximum(soc, 0.0), dead  # 0 at death


def thermal_update(o: Ops, temp_c, ambient_c, power_w, dt_s, r_th_c_per_w, tau_s):
    """Temperature after ``dt_s`` at constant power: the exact first-order solution, °C."""
    t_inf = ambient_c + r_th_c_per_w * power_w
    return t_inf + (temp_c - t_inf) * o.exp(-dt_s / tau_s)


# ---- the float twin ----------------------------------------------------------------------------

class _Scalarise(ast.NodeTransformer):
    """``o.where(c, a, b)`` / ``where(c, a, b)`` → ``(a if c else b)``; ``o.minimum`` / ``mn`` → ``min``;
    ``o.maximum`` / ``mx`` → ``max``; ``o.exp`` → ``math.exp``; drops ``where, mn, mx = o.…``."""

    NAMES = {"where": "where", "mn": "min", "mx": "max"}
    ATTRS = {"where": "where", "minimum": "min", "maximum": "max", "exp": "math.exp"}

    def visit_Assign(self, node: ast.Assign) -> ast.AST | None:
        if isinstance(node.value, ast.Tuple) and all(
                isinstance(e, ast.Attribute) and isinstance(e.value, ast.Name) and e.value.id == "o"
                for e in node.value.elts):
            return None  # the local aliases of the operations
        return self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        f = node.func
        op = None
        if isinstance(f, ast.Name) and f.id in self.NAMES:
            op = self.NAMES[f.id]
        elif isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id == "o" \
                and f.attr in self.ATTRS:
            op = self.ATTRS[f.attr]
        if op is None:
            return node
        if op == "where":
            c, a, b = node.args
            return ast.copy_location(ast.IfExp(test=c, body=a, orelse=b), node)
        node.func = ast.parse(op, mode="eval").body
        return node


class _Inline(ast.NodeTransformer):
    """``x, y = f(args)`` / ``x = f(args)`` where ``f`` is in ``funcs`` (simple functions: assignments
    then one ``return``) → ``f``'s body with its parameters and locals renamed, then the assignment of
    its return expression: a call less on the hot path, from the same source."""

    def __init__(self, funcs: dict[str, ast.FunctionDef]) -> None:
        self.funcs = funcs

    def visit_Assign(self, node: ast.Assign) -> Any:
        v = node.value
        if not (isinstance(v, ast.Call) and isinstance(v.func, ast.Name) and v.func.id in self.funcs):
            return node
        fd = self.funcs[v.func.id]
        prefix = f"_{fd.name}_"
        params = [a.arg for a in fd.args.args]
        renamed = {n: prefix + n for n in params}
        for st in fd.body:
            for t in ast.walk(st):
                if isinstance(t, ast.Name) and isinstance(t.ctx, ast.Store):
                    renamed.setdefault(t.id, prefix + t.id)

        class Rename(ast.NodeTransformer):
            def visit_Name(self, n: ast.Name) -> ast.Name:
                return ast.copy_location(ast.Name(renamed.get(n.id, n.id), n.ctx), n)

        used = {n.id for st in fd.body for n in ast.walk(st) if isinstance(n, ast.Name)}
        out: list[ast.stmt] = [ast.Assign([ast.Name(renamed[p], ast.Store())], arg)
                               for p, arg in zip(params, v.args) if p in used]
        body = [Rename().visit(ast.parse(ast.unparse(st)).body[0]) for st in fd.body
                if not (isinstance(st, ast.Expr) and isinstance(st.value, ast.Constant))]  # docstrings
        ret = body.pop()
        assert isinstance(ret, ast.Return), f"{fd.name}: only assignments then one return can be inlined"
        out += body + [ast.Assign(node.targets, ret.value)]
        return [ast.copy_location(x, node) for x in out]


def scalar_twin(fn: Any, inline: tuple = (), **globals_: Any) -> Any:
    """``fn`` (written against ``o: Ops``) compiled again from its own source for floats.

    ``inline``: functions (written the same way) whose calls are inlined into the twin.
    ``globals_`` replace names in the twin's globals.
    """
    import inspect  # lazily: the twins are compiled on first use, not when the runtime starts
    import textwrap

    def tree_of(f: Any) -> ast.Module:
        return ast.parse(textwrap.dedent(inspect.getsource(f)))

    tree = tree_of(fn)
    if inline:  # scalarise the callees first: inlining renames their ``o``
        funcs = {f.__name__: _Scalarise().visit(tree_of(f)).body[0] for f in inline}
        tree = _Inline(funcs).visit(tree)
    tree = ast.fix_missing_locations(_Scalarise().visit(tree))
    ns: dict[str, Any] = {}
    exec(compile(tree, f"<scalar twin of {fn.__module__}.{fn.__qualname__}>", "exec"),  # noqa: S102
         {**fn.__globals__, "math": math, **globals_}, ns)
    twin = ns[fn.__name__]
    twin.__doc__ = f"Float twin of :func:`{fn.__name__}` (``scalar_twin``): the same lines, compiled for floats."
    return twin


def __getattr__(name: str) -> Any:
    """``scalar_step_core``: ``step_core`` for floats (call it as ``scalar_step_core(SCALAR, dt, params,
    ...)``), compiled on first use — the device runtime, which never steps the env, never pays for it."""
    if name == "scalar_step_core":
        twin = globals()[name] = scalar_twin(step_core, inline=(battery_update, thermal_update, token_ms,
                                                                throttle, queue_update))
        return twin
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---- pieces used on their own ------------------------------------------------------------------

def thermal_step(temp_c: float, ambient_c: float, power_w: float, dt_s: float, r_th_c_per_w: float,
                 tau_s: float) -> float:
    """Temperature after ``dt_s`` at constant power, °C (floats; ``thermal_update``)."""
    return thermal_update(SCALAR, temp_c, ambient_c, power_w, dt_s, r_th_c_per_w, tau_s)


def battery_step(soc: float, supply_w: float, power_w: float, dt_s: float, capacity_j: float,
                 charge_efficiency: float) -> tuple[float, bool]:
    """State of charge after ``dt_s`` and whether the battery died (floats; ``battery_update``)."""
    return battery_update(SCALAR, soc, supply_w, power_w, dt_s, capacity_j, charge_efficiency)


def steady_temp_c(ambient_c, power_w, r_th_c_per_w):
    """Temperature the device settles at under constant power, °C (``T_∞``)."""
    return ambient_c + r_th_c_per_w * power_w


def max_power_for_temp_w(temp_limit_c, ambient_c, r_th_c_per_w):
    """The constant power whose steady state is ``temp_limit_c`` (inverse of :func:`steady_temp_c`), W."""
    return (temp_limit_c - ambient_c) / r_th_c_per_w


def start_temp_c(ambient_c, idle_w, base_w, r_th_c_per_w):
    """An episode's starting temperature: steady state at idle + base load."""
    return steady_temp_c(ambient_c, idle_w + base_w, r_th_c_per_w)


# ---- a batch, through a public API (oracle, MPC) -------------------------------------------------

class BatchState(NamedTuple):
    """The state that ``Dynamics.step`` advances (arrays of one batch)."""

    soc: np.ndarray
    temp_c: np.ndarray
    backlog: np.ndarray
    budget_left_j: np.ndarray
    config: np.ndarray  # int: the configuration that ran last (switch costs)


class Inputs(NamedTuple):
    """Exogenous inputs of one step (arrays, or scalars that broadcast)."""

    demand_tps: Any
    supply_w: Any
    ambient_c: Any
    base_w: Any
    budget_w: Any  # NaN without a budget
    bandwidth_mbps: Any = 0.0  # link capacity (split configurations), 0 = down
    procs_down: Any = 0  # int bit mask of unavailable processor roles (placement), 0 = all up
    w_q: Any = 1.0  # the objective's inputs (objective_inputs): quality weight,
    w_e: Any = 0.0  # energy weight (min-energy),
    q_min: Any = math.nan  # quality floor (min-energy; NaN: none),
    until: Any = 0.0  # 1 while a last-until deadline is ahead


class Dynamics:
    """``step_core`` over a batch with the configuration tables gathered: state in, state out.

    Args:
        tables: Anything with per-configuration arrays ``tps``, ``ept_j``, ``decode_ms``,
            ``quality``, ``offload``, ``up_bits``, ``server_ms`` (n,) and ``switch_s``, ``switch_j``
            (n, n) (``envs.tables.CostTables``).
        params: The environment parameters.
    """

    def __init__(self, tables: Any, params: EnvParams) -> None:
        self.t, self.p = tables, params

    def state(self, n: int, soc, temp_c, backlog=0.0, budget_left_j=0.0, config=0) -> BatchState:
        """A batch of ``n`` states from scalars or arrays (broadcast and copied)."""
        def b(x, dtype=float):
            return np.broadcast_to(np.asarray(x, dtype=dtype), (n,)).copy()

        return BatchState(b(soc), b(temp_c), b(backlog), b(budget_left_j), b(config, int))

    def step(self, s: BatchState, action: np.ndarray, x: Inputs, plant: Plant) -> tuple[BatchState, StepResult]:
        """Advance ``s`` by one step under ``action`` (ints, one per row)."""
        t = self.t
        a = runs_on(t, np.asarray(action), x.procs_down)
        r = step_core(VECTOR, self.p.step_s, self.p, t.tps[a], t.ept_j[a], t.decode_ms[a], t.quality[a],
                      t.offload[a], t.up_bits[a], t.server_ms[a], *placement_columns(t, a),
                      t.switch_s[s.config, a], t.switch_j[s.config, a],
                      s.soc, s.temp_c, s.backlog, s.budget_left_j, x.demand_tps, x.supply_w, x.ambient_c, x.base_w,
                      x.budget_w, x.bandwidth_mbps, x.w_q, x.w_e, x.q_min, x.until, *plant)
        ns = BatchState(r.soc, r.temp_c, r.backlog, r.budget_left_j,
                        np.broadcast_to(a, np.shape(r.soc)).astype(int))
        return ns, r


def runs_on(tables: Any, a: Any, procs_down: Any) -> Any:
    """The configuration(s) that actually run for action(s) ``a`` while the processors in ``procs_down``
    are unavailable: a placement on a processor that is down runs all on the CPU at the same depth,
    heads and bits (``tables.cpu_twin``; the runtime's re-placement, ``model.placement``). Ints or arrays."""
    roles = getattr(tables, "roles", None)
    if roles is None or not np.any(procs_down):
        return a
    if np.ndim(a) == 0 and np.ndim(procs_down) == 0:
        return int(tables.cpu_twin[a]) if int(roles[a]) & int(procs_down) else a
    return np.where((roles[a] & np.asarray(procs_down, dtype=np.int64)) != 0, tables.cpu_twin[a], a)


PLACEMENT_COLUMNS = ("seg2_ms", "xfer_ms", "trip1_c", "trip2_c", "heat_frac")
#: a table without placement columns: one processor, no transfer, the device's own trip point, all heat
PLACEMENT_NEUTRAL = (0.0, 0.0, 0.0, 0.0, 1.0)


def placement_columns(tables: Any, a: Any) -> tuple:
    """The placement inputs of ``step_core`` for configuration(s) ``a`` of ``tables`` (neutral values for a
    table without the columns, e.g. a hand-made one)."""
    return tuple(getattr(tables, n)[a] if getattr(tables, n, None) is not None else v
                 for n, v in zip(PLACEMENT_COLUMNS, PLACEMENT_NEUTRAL))


def plant_of(capacity_j: Any, d: DeviceConstants) -> Plant:
    """A Plant for one device (scalars)."""
    return Plant(capacity_j, d.r_th_c_per_w, d.tau_s, d.t_max_c, d.throttle_per_c, d.throttle_min,
                 d.charge_efficiency, d.idle_power_w)


__all__ = ["OBJECTIVES", "OBJECTIVE_TERMS", "EpisodeObjective", "Objective", "episode_objective",
           "objective_inputs", "Availability", "DEVICES", "SCALAR",
           "TERM_NAMES", "TOK_SCALE", "VECTOR", "BatchState", "DeviceConstants",
           "Dynamics",
           "EnvParams", "Inputs", "LinkConstants", "Ops", "Plant", "RewardWeights", "StepResult", "battery_step",
           "battery_update",
           "device_constants", "max_power_for_temp_w", "plant_of", "scalar_twin", "start_temp_c",
           "placement_columns", "PLACEMENT_COLUMNS", "PLACEMENT_NEUTRAL", "queue_update", "throttle",
           "radio_j_per_token", "runs_on", "steady_temp_c", "step_core", "thermal_step", "thermal_update", "token_ms"]
