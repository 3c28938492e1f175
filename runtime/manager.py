"""The runtime manager: sensors → observation → policy → shield → configuration, as a state machine.

numpy + the standard library only.

States and transitions (``TRANSITIONS`` is the table the code follows; any other move raises)::

    NORMAL    --sensor_fault-->  DEGRADED    a sensed field is HELD/LOST, or a required one ASSUMED or modelled
    NORMAL    --critical------>  EMERGENCY   a hard limit holds (shield tier 1)
    DEGRADED  --sensors_ok---->  NORMAL      every field OK for `recover_decisions` decisions
    DEGRADED  --critical------>  EMERGENCY
    EMERGENCY --cleared------->  NORMAL      limits cleared by their hysteresis margins and at
    EMERGENCY --cleared_degraded-> DEGRADED  least `emergency_min_s` in EMERGENCY
    NORMAL / DEGRADED / EMERGENCY --policy_bad--> FALLBACK   the policy file failed to load
    FALLBACK  --policy_loaded->  NORMAL      a valid policy was loaded (``load_policy``)

What each state does: NORMAL — the policy decides, the shield checks; DEGRADED — the same on
last-good / assumed values (LOST required values count as the worst case); EMERGENCY — the safe
configuration (lowest energy per token), whatever the policy says; FALLBACK — the safe
configuration, no policy at all.

Against thrashing: a policy-driven switch needs ``min_dwell_decisions`` decisions and
``min_dwell_s`` seconds since the previous switch (shield overrides switch at once), and
EMERGENCY is left only with hysteresis (``temp_hyst_c``, ``soc_hyst``) after ``emergency_min_s``.

Every decision is recorded (time, state, observation summary, policy action, final action,
override reason, sensor flags, and what the model did since the previous decision: tokens and median
decode latency, :meth:`RuntimeManager.set_interval`) in a buffer that :class:`Telemetry` writes as JSONL.

Online correction (``runtime.correction``): measurements given to :meth:`RuntimeManager.observe_measurement`
(decode latency, model power of the running configuration) keep measured/predicted ratios; at most
every ``correction_every_decisions`` decisions the shield's feasibility rules get the corrected
energy per token and the predicted latency (used when ``latency_over_slo`` is None) the corrected
decode time. The hard limits and the safe configuration never change.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import IO, Any

import numpy as np

from runtime import observation
from runtime.configspace import SPLIT_LOCAL
from runtime.correction import MIN_SAMPLES, OnlineCorrection
from runtime.dynamics import SCALAR as _SCALAR
from runtime.dynamics import DeviceConstants, EnvParams
from runtime.objective import ObjectiveTracker
from runtime.observation import (
    ObsLayout,
    costliest_config,
    demand_avg_update,
    goal_values,
    hint_table,
    model_layout,
    thermal_scale_w,
    thermal_values,
)
from runtime.placement import role_mask
from runtime.policy import NumpyPolicy, PolicyFile, PolicyFileError, load_policy_file
from runtime.rules import NO_SWITCH_YET, SchedutilRule, since_switch_after
from runtime.sensors import (
    AMBIENT,
    BANDWIDTH,
    FIELDS,
    PLUGGED,
    POWER,
    SOC,
    SUPPLY,
    TEMP,
    SensorHub,
)
from runtime.shield import (
    REASON_NAMES,
    Reason,
    Shield,
    ShieldParams,
    device_limits,
    policy_device_entry,
    reserve_limit,
    stricter_device,
)


def _log():  # logging is imported on the first transition, not at import time
    import logging

    return logging.getLogger("wattwise.runtime")


class State(IntEnum):
    NORMAL = 0
    DEGRADED = 1
    EMERGENCY = 2
    FALLBACK = 3


TRANSITIONS: dict[tuple[State, str], State] = {
    (State.NORMAL, "sensor_fault"): State.DEGRADED,
    (State.NORMAL, "critical"): State.EMERGENCY,
    (State.NORMAL, "policy_bad"): State.FALLBACK,
    (State.DEGRADED, "sensors_ok"): State.NORMAL,
    (State.DEGRADED, "critical"): State.EMERGENCY,
    (State.DEGRADED, "policy_bad"): State.FALLBACK,
    (State.EMERGENCY, "cleared"): State.NORMAL,
    (State.EMERGENCY, "cleared_degraded"): State.DEGRADED,
    (State.EMERGENCY, "policy_bad"): State.FALLBACK,
    (State.FALLBACK, "policy_bad"): State.FALLBACK,
    (State.FALLBACK, "policy_loaded"): State.NORMAL,
}


@dataclass
class ManagerConfig:
    """Tunables of the manager (units in the names).

    Attributes:
        temp_margin_c: Hard temperature ceiling above the device trip point ``t_max_c``.
        temp_hyst_c: Hysteresis below the ceiling to leave EMERGENCY.
        soc_hyst: Hysteresis above the reserve to leave EMERGENCY.
        reserve_soc: The device's battery reserve (None: ``runtime.shield.DEFAULT_RESERVE_SOC``); the
            shield enforces the higher of this and the policy file's (the training env's).
        saver_s: The device's (or user's) battery saver, s (``EnvParams.saver_s``; None: none of its own); the
            shield uses the longer of this and the policy file's. ``deploy.py run --battery-saver-min``.
        saver_to_deadline: The saver's horizon reaches the deadline (``EnvParams.saver_to_deadline``): on when
            this or the policy file's says so (None: the policy file's). ``deploy.py run --saver-to-deadline``.
        saver_floor_frac: Where the saver counts its charge from, as a share of the reserve
            (``EnvParams.saver_floor_frac``; 1 the reserve, 0 empty); None: the policy file's.
            ``deploy.py run --saver-floor``.
        floor_rule: Hold a min-energy quality floor in the shield's masks (``ShieldParams.floor_rule``; None: on,
            whatever the policy file was trained with: the floor is the user's). ``deploy.py run --no-floor-rule``
            turns it off.
        budget_rule: Hold the user's power budget in the shield's masks (``ShieldParams.budget_rule``; None: on,
            whatever the policy file was trained with: the budget is the user's). ``deploy.py run --no-budget-rule``
            turns it off.
        budget_reserve_s: What the budget rule keeps in hand, seconds of budget (``EnvParams.budget_reserve_s``);
            None: the policy file's. ``deploy.py run --budget-reserve-s``.
        budget_reserve_tps: The burst the budget rule's reserve also pays for, tok/s
            (``EnvParams.budget_reserve_tps``); None: the policy file's. ``deploy.py run --budget-reserve-tps``.
        budget_floor_reserve_s: What is kept in hand where holding the quality floor needs the budget's reserve,
            seconds of budget (``EnvParams.budget_floor_reserve_s``); None: the policy file's.
            ``deploy.py run --budget-floor-reserve-s``.
        min_dwell_decisions: Decisions between two policy-driven switches.
        min_dwell_s: Seconds between two policy-driven switches.
        emergency_min_s: Minimum time in EMERGENCY.
        recover_decisions: Consecutive all-OK decisions to leave DEGRADED.
        capacity_wh: Battery capacity (stored energy = SoC × capacity) when nothing better is known.
        charger_w: Supply power assumed while plugged when no sensor measures it.
        horizon_s: Rolling horizon without a deadline (affordable power = stored energy / this); None: the
            policy's (``EnvParams.horizon_s``, one training episode, 2 h by default), as the env computes it.
        correction_every_decisions: Decisions between two applications of the online correction to
            the shield and the predicted latency (only when new measurements came in).
        correction_event_decisions: Decisions between two ``correction`` telemetry events (at most).
        correction_loosens_shield: Let a measured energy per token *below* the profile's loosen the
            feasibility masks (default False: the shield uses max(corrected, profile)).
        shield: Keep the shield (default). False runs the policy's own choice every decision: no masks, no
            emergency hold, no dwell; for measuring what the shield is worth (``agents.evaluate --policy``
            reports both), never for a device.

    The SLO, the backlog cap, the budget grace and the look-ahead are the environment's
    (``runtime.dynamics.EnvParams``, stored in the policy file): :attr:`RuntimeManager.params`.
    """

    temp_margin_c: float = 2.0
    temp_hyst_c: float = 3.0
    soc_hyst: float = 0.02
    reserve_soc: float | None = None
    saver_s: float | None = None
    saver_to_deadline: bool | None = None
    saver_floor_frac: float | None = None
    floor_rule: bool | None = None
    budget_rule: bool | None = None
    budget_reserve_s: float | None = None
    budget_reserve_tps: float | None = None
    budget_floor_reserve_s: float | None = None
    min_dwell_decisions: int = 3
    min_dwell_s: float = 0.0
    emergency_min_s: float = 2.0
    recover_decisions: int = 10
    capacity_wh: float = 15.0
    charger_w: float = 20.0
    horizon_s: float | None = None
    correction_every_decisions: int = 200  # an update costs ~0.2 ms: keep it under 1 % of decisions (p99)
    correction_event_decisions: int = 1000
    correction_loosens_shield: bool = False
    shield: bool = True


@dataclass
class FallbackSpec:
    """What the manager needs when no policy file can be loaded.

    Attributes:
        names: Configuration names (the caller maps the returned index to one).
        energy_j_per_token: Energy per token per configuration (or a proxy such as resident
            bytes: only the argmin matters).
        device: Thermal parameters for the shield.
        reserve_soc: Battery reserve.
    """

    names: Sequence[str]
    energy_j_per_token: Sequence[float]
    device: DeviceConstants = DeviceConstants(r_th_c_per_w=5.0, tau_s=240.0, t_max_c=45.0)
    reserve_soc: float = 0.05


_STATE_NAMES = [s.name for s in State]


def _num(x: float) -> str:
    """A float as JSON (NaN and infinities as null)."""
    return repr(float(x)) if x == x and x not in (math.inf, -math.inf) else "null"


DECISION_KEYS = ("t_s", "state", "soc", "temp_c", "plugged", "power_w", "demand_tps", "policy_action",
                 "final_action", "reason", "sensor_flags", "tokens", "decode_ms")


class Telemetry:
    """Buffers decision records and writes them as JSON lines (one object per line).

    Recording a decision appends a tuple (no formatting on the decision path); every
    ``flush_every`` records, and on :meth:`close`, the buffer is serialised. NaN becomes null.

    Args:
        path_or_file: Output path or an open text file; ``None`` keeps only counters.
        names: Configuration names (the JSON carries the names next to the indices).
        flush_every: Records per write.
        overwrite: Replace an existing file at ``path_or_file``; by default an existing file is never
            touched (``FileExistsError``: the file is created exclusively).
    """

    def __init__(self, path_or_file: str | Path | IO[str] | None, names: Sequence[str] = (),
                 flush_every: int = 1024, overwrite: bool = False) -> None:
        self._own = isinstance(path_or_file, (str, Path))
        mode = "w" if overwrite else "x"
        self.fh: IO[str] | None = open(path_or_file, mode, encoding="utf-8") if self._own else path_or_file  # noqa: SIM115
        self.names = list(names)
        self.flush_every = int(flush_every)
        self.buf: list[Any] = []
        self.written = 0
        self._flag_cache: dict[int, str] = {}

    @property
    def enabled(self) -> bool:
        return self.fh is not None

    def record(self, rec: tuple) -> None:
        self.buf.append(rec)
        if len(self.buf) >= self.flush_every:
            self.flush()

    def event(self, **kw: Any) -> None:
        """A non-decision record (state transitions, policy loads)."""
        if self.fh is not None:
            self.buf.append(kw)

    def _line(self, rec: tuple) -> str:
        t, st, soc, temp, plugged, power, demand, pa, fa, reason, flags, tokens, dec_ms = rec
        n = len(self.names)
        fl = self._flag_cache.get(flags)
        if fl is None:
            fl = self._flag_cache[flags] = json.dumps([FIELDS[i] for i in range(len(FIELDS)) if flags >> i & 1])
        pc = json.dumps(self.names[pa]) if 0 <= pa < n else "null"
        fc = json.dumps(self.names[fa]) if 0 <= fa < n else "null"
        return (f'{{"t_s": {_num(t)}, "state": "{_STATE_NAMES[st]}", "soc": {_num(soc)}, "temp_c": {_num(temp)}, '
                f'"plugged": {_num(plugged)}, "power_w": {_num(power)}, "demand_tps": {_num(demand)}, '
                f'"policy_action": {pa}, "final_action": {fa}, "reason": "{REASON_NAMES[reason]}", '
                f'"sensor_flags": {fl}, "policy_config": {pc}, "final_config": {fc}, '
                f'"tokens": {"null" if tokens is None else int(tokens)}, '
                f'"decode_ms": {"null" if dec_ms is None else _num(dec_ms)}}}')

    def flush(self) -> None:
        if self.fh is None:
            self.buf.clear()
            return
        lines = [self._line(r) if isinstance(r, tuple) else json.dumps(r) for r in self.buf]
        if lines:
            self.fh.write("\n".join(lines) + "\n")
            self.fh.flush()
        self.written += len(lines)
        self.buf.clear()

    def close(self) -> None:
        self.flush()
        if self._own and self.fh is not None:
            self.fh.close()
        self.fh = None


def hint_rule(pf: PolicyFile) -> SchedutilRule | None:
    """The rule behind a policy's rule hint (``EnvParams.rule_hint``) over the policy file's tables, as the env
    builds it from the profile; None for a policy without the hint."""
    if not pf.params.rule_hint:
        return None
    sp = pf.space
    offload = (np.array([float(c.split != SPLIT_LOCAL) for c in sp.configs]) if "split" in sp.knob_names else None)
    return SchedutilRule(pf.decode_tokens_per_s, pf.energy_j_per_token, pf.quality, pf.params.step_s,
                         pf.params.backlog_cap_tokens, offload)


class RuntimeManager:
    """Decides the model configuration from sensors, a policy and the shield.

    Args:
        policy: A loaded :class:`PolicyFile`, or None (FALLBACK from the start; needs ``fallback``).
        hub: The sensor hub.
        config: Tunables.
        telemetry: Where decisions go (default: counters only).
        fallback: Used when ``policy`` is None (default: a single "safe" configuration).
        device: The device's own constants (a user-supplied configuration) for the shield and the
            observation. Default: ``runtime.dynamics.DEVICES[device_kind]``.
        clock: Time source when ``decide`` is called without ``now_s``.
        policy_error: Why the policy is missing (recorded in telemetry).
        device_kind: The device kind (default: the one the policy file was exported for).

    The shield's hard limits never come from the policy file alone: with ``device_kind`` known (given,
    or the policy's when ``device`` is None), the device's own constants are made stricter — never
    looser — by the policy file's entry for that kind (``runtime.shield.device_limits``); the
    reserve is the higher of the device's (``config.reserve_soc``) and the policy's.
    """

    def __init__(self, policy: PolicyFile | None, hub: SensorHub, config: ManagerConfig | None = None,
                 telemetry: Telemetry | None = None, fallback: FallbackSpec | None = None,
                 device: DeviceConstants | Mapping[str, float] | None = None,
                 clock: Callable[[], float] = time.monotonic, policy_error: str | None = None,
                 device_kind: str | None = None) -> None:
        self.cfg = config or ManagerConfig()
        self.hub, self.clock = hub, clock
        self.policy_error = policy_error
        self.pf = policy
        #: (tokens/s, J/token) the thermal block as a fraction is measured against (once per policy file)
        self._costliest = (costliest_config(policy.decode_tokens_per_s, policy.energy_j_per_token)
                           if policy is not None else (1.0, 1.0))
        if policy is not None:
            kind = device_kind or policy.meta["mask_rules"]["device_kind"]
            if device is None:
                dev = device_limits(kind, policy.meta)
            elif device_kind is not None:
                dev = stricter_device(device, policy_device_entry(policy.meta, kind))
            else:  # the caller's constants for a device whose kind it did not say: they alone
                dev = device
            self.params: EnvParams = policy.params
            ept, names = policy.energy_j_per_token, policy.names
            self.features = [tuple(float(x) for x in row) for row in policy.config_features]
            self.policy: NumpyPolicy | None = NumpyPolicy(policy)
            self.layout: ObsLayout = policy.layout
            reserve = reserve_limit(self.cfg.reserve_soc, self.params.reserve_soc)
            self.correction: OnlineCorrection | None = OnlineCorrection.from_policy(policy)
            self._hint_rule = hint_rule(policy)
            self._hint_table = hint_table(policy.space) if self._hint_rule is not None else None
        else:
            fb = fallback or FallbackSpec(["safe"], [1.0])
            dev = device if device is not None else (device_limits(device_kind) if device_kind else fb.device)
            self.params = EnvParams(reserve_soc=fb.reserve_soc)
            ept, names = np.asarray(fb.energy_j_per_token, dtype=np.float64), list(fb.names)
            self.layout = model_layout(0)
            self.features = [(1.0,) * self.layout.n_config] * len(names)
            self.policy = None
            self._hint_rule = None
            reserve = fb.reserve_soc if self.cfg.reserve_soc is None else self.cfg.reserve_soc
            self.correction = None
        self.lookahead = self.layout.lookahead
        self.device = dev if isinstance(dev, DeviceConstants) else DeviceConstants.from_dict(dev)
        self.names = list(names)
        sp = policy.space if policy is not None else None
        offload = (np.array([float(c.split != SPLIT_LOCAL) for c in sp.configs])
                   if sp is not None and "split" in sp.knob_names else None)
        roles = (np.array([role_mask(c.place) for c in sp.configs])
                 if sp is not None and "place" in sp.knob_names else None)
        saver = max(float(self.cfg.saver_s or 0.0), float(self.params.saver_s))
        to_deadline = bool(self.cfg.saver_to_deadline) or bool(self.params.saver_to_deadline)
        floor_frac = float(self.params.saver_floor_frac if self.cfg.saver_floor_frac is None
                           else self.cfg.saver_floor_frac)  # the user's word, else the policy's
        floor_rule = True if self.cfg.floor_rule is None else bool(self.cfg.floor_rule)  # the user's, not the file's
        budget_rule = True if self.cfg.budget_rule is None else bool(self.cfg.budget_rule)  # so too the budget
        keep_s = float(self.params.budget_reserve_s if self.cfg.budget_reserve_s is None
                       else self.cfg.budget_reserve_s)  # the user's word, else the policy's
        keep_tps = float(self.params.budget_reserve_tps if self.cfg.budget_reserve_tps is None
                         else self.cfg.budget_reserve_tps)
        floor_keep_s = float(self.params.budget_floor_reserve_s if self.cfg.budget_floor_reserve_s is None
                             else self.cfg.budget_floor_reserve_s)
        self.shield = Shield(ShieldParams(self.device.t_max_c, self.device.r_th_c_per_w, reserve,
                                          self.cfg.temp_margin_c, self.cfg.temp_hyst_c, self.cfg.soc_hyst, saver,
                                          to_deadline, floor_frac, floor_rule, budget_rule,
                                          keep_s, keep_tps, floor_keep_s), ept,
                             offload, self.params.link.connected_w,
                             policy.device_bytes if policy is not None else None, self.device.memory_mb * 1e6,
                             roles, policy.quality if policy is not None else None,
                             policy.decode_tokens_per_s if policy is not None else None,
                             policy.switch_j if policy is not None else None)
        self.safe = self.shield.safe
        self.telemetry = telemetry or Telemetry(None, self.names)
        if not self.telemetry.names:
            self.telemetry.names = self.names
        self.obs = np.zeros(self.layout.dim, dtype=np.float32)
        self._head = observation.scalar_head_values  # the float twin, compiled here once, not at import
        # workload and limits (set by the caller: set_workload or the attributes directly)
        self.demand_tps = 0.0
        self.demand_avg_tps: float | None = None  # the smoothed demand (EnvParams.demand_avg_s), once decided
        self.backlog_frac = 0.0
        #: the user's objective (runtime.objective.ObjectiveTracker; set_objective), None: not tracked
        self.objective: ObjectiveTracker | None = None
        #: processor roles unavailable now (bit mask over runtime.placement.ROLES): the live model's
        #: processor health (model.placement) sets it; a replay's outage scenario in simulation
        self.procs_down = 0
        self.latency_over_slo: float | None = None  # None: predicted (corrected decode time + backlog)
        #: what ran since the previous decision (``set_interval``; telemetry only, cleared by each decision):
        #: tokens generated and the median measured decode latency per token, ms (None: not given / none measured)
        self.interval_tokens: int | None = None
        self.interval_decode_ms: float | None = None
        self.budget_w = math.nan
        self.budget_left_j = 0.0  # the budget's allowance left at the last decision, its grace included, J
        self._demand_given = False  # set_workload gave the demand (else the model generates flat out)
        #: the token rate the budget rule prices, tok/s (None: the demand + the backlog drained in one step when a
        #: demand was given, else flat out; ``math.inf``: flat out, each configuration at its own throughput, as a
        #: live model generating a job is)
        self.budget_rate_tps: float | None = None
        self.deadline_left_s = math.nan
        self.horizon_left_s: float | None = None
        self.base_w: float | None = None
        self.stored_energy_j: float | None = None
        self.capacity_j = self.cfg.capacity_wh * 3600.0
        self.supply_ahead_w: Sequence[float] = ()
        # decision state
        self.current = self.safe
        self.state = State.NORMAL
        self.state_since_s = -math.inf
        self._t0: float | None = None
        self._last_t: float | None = None
        self._since_switch = NO_SWITCH_YET
        self._switch_t = -math.inf
        self._ok_run = 0
        self._energy_used_j = 0.0
        self.decisions = 0
        self.switches = 0
        self.overrides = [0] * len(Reason)
        self.state_decisions = [0] * len(State)
        self.transitions: list[tuple[float, str, str, str]] = []
        self.last_policy_action = -1
        self.last_reason = Reason.NONE
        self.hint_config = -1  # the rule hint's configuration in the last observation (-1: none)
        # online correction: corrected decode ms per configuration (the profile's until measured)
        self._profile_ept = self.shield.ept.copy()
        self._dec_ms = self.correction.decode_ms.copy() if self.correction is not None else None
        self._corr_pending = False
        self._corr_next = 0
        self._corr_event_next = 0
        if self.policy is None:
            self._go(State.FALLBACK, "policy_bad", -math.inf, policy_error or "no policy")

    # ---- construction helpers ---------------------------------------------------------------
    @classmethod
    def from_policy_path(cls, path: str | Path, hub: SensorHub, config: ManagerConfig | None = None,
                         telemetry: Telemetry | None = None, fallback: FallbackSpec | None = None,
                         device: DeviceConstants | Mapping[str, float] | None = None,
                         clock: Callable[[], float] = time.monotonic, device_kind: str | None = None) -> RuntimeManager:
        """Loads the policy file; on :class:`PolicyFileError` starts in FALLBACK (logged, not raised)."""
        try:
            pf: PolicyFile | None = load_policy_file(path)
            err = None
        except PolicyFileError as exc:
            _log().error("policy file rejected, using the safe fallback configuration: %s", exc)
            pf, err = None, str(exc)
        return cls(pf, hub, config, telemetry, fallback, device, clock, policy_error=err, device_kind=device_kind)

    def load_policy(self, path: str | Path) -> bool:
        """Loads a new policy file in FALLBACK (same configuration space and layout); returns success."""
        try:
            pf = load_policy_file(path)
        except PolicyFileError as exc:
            self.policy_error = str(exc)
            self.telemetry.event(event="policy_rejected", error=str(exc))
            return False
        if list(pf.space.names) != self.names or pf.layout.names != self.layout.names:
            self.policy_error = (f"{path}: {pf.n_actions} configurations / {pf.layout.dim} features, manager has "
                                 f"{len(self.names)} / {self.layout.dim} (another configuration space or look-ahead)")
            return False
        self.pf, self.policy, self.params = pf, NumpyPolicy(pf), pf.params
        self._costliest = costliest_config(pf.decode_tokens_per_s, pf.energy_j_per_token)
        fresh = OnlineCorrection.from_policy(pf)
        c = self.correction
        if c is None or not (np.array_equal(c.decode_ms, fresh.decode_ms) and np.array_equal(c.power_w, fresh.power_w)
                             and np.array_equal(c.ept_j, fresh.ept_j)):
            self.correction, self._dec_ms = fresh, fresh.decode_ms.copy()  # another profile: start over
        self.features = [tuple(float(x) for x in row) for row in pf.config_features]
        self._hint_rule = hint_rule(pf)
        self._hint_table = hint_table(pf.space) if self._hint_rule is not None else None
        self.policy_error = None
        if self.state == State.FALLBACK:
            self._go(State.NORMAL, "policy_loaded", self._last_t or 0.0, pf.sha256[:12])
        return True

    # ---- inputs -------------------------------------------------------------------------------
    _WORKLOAD = frozenset(("demand_tps", "backlog_frac", "latency_over_slo", "budget_w", "deadline_left_s",
                           "horizon_left_s", "base_w", "stored_energy_j", "capacity_j", "supply_ahead_w"))

    def set_workload(self, **kw: float | None) -> None:
        """Sets any of ``demand_tps``, ``backlog_frac``, ``latency_over_slo``, ``budget_w``,
        ``deadline_left_s``, ``horizon_left_s``, ``base_w``, ``stored_energy_j``, ``capacity_j``,
        ``supply_ahead_w``."""
        for k, v in kw.items():
            if k not in self._WORKLOAD:
                raise KeyError(f"unknown workload input {k!r}")
            setattr(self, k, v)
        if "demand_tps" in kw:
            self._demand_given = True

    def start_at(self, config: int) -> None:
        """The configuration the model runs before the first decision (default: the safe one). The
        observation's configuration block reads it, as the environment's does at an episode's start; call it
        before the first :meth:`decide` with what the live model has loaded."""
        if self.decisions:
            raise RuntimeError("start_at: only before the first decision")
        if not 0 <= int(config) < len(self.names):
            raise ValueError(f"start_at: configuration {config} outside 0..{len(self.names) - 1}")
        if self.state != State.FALLBACK:
            self.current = int(config)

    def set_objective(self, kind: str, budget_w: float = math.nan, quality_floor: float = math.nan,
                      deadline_s: float = math.nan, window_s: float = 60.0, budget_j: float = math.nan,
                      budget_until_s: float = math.nan) -> ObjectiveTracker:
        """Track the user's objective (``runtime.objective``): ``budget_w`` (max-quality) or the energy budget
        ``budget_j`` until ``budget_until_s`` (max-quality; re-paced into a power budget every decision),
        ``quality_floor`` (min-energy), ``deadline_s`` on this manager's clock (last-until). A goal-conditioned
        policy (its observation has the objective block) also reads it; any other policy is only measured
        against it."""
        self.objective = ObjectiveTracker(kind, budget_w=budget_w, quality_floor=quality_floor, deadline_s=deadline_s,
                                          reserve_soc=self.shield.reserve, grace_s=self.params.budget_grace_s,
                                          window_s=window_s, budget_j=budget_j, budget_until_s=budget_until_s)
        if kind == "min-energy" and self.shield.p.floor_rule and self.shield.rules.quality is None:
            _log().warning("the policy file has no quality table: the shield cannot hold the quality floor %.2f "
                           "(re-export it with `python deploy.py export`); the floor is only measured",
                           quality_floor)
        if kind == "max-quality" and budget_w == budget_w:
            self.budget_w = budget_w
        if budget_j == budget_j:
            self.budget_w = self.objective.pace_w(self._last_t if self._last_t is not None else self.clock())
        if kind == "last-until":
            self.deadline_left_s = deadline_s - (self._last_t if self._last_t is not None else self.clock())
        return self.objective

    def set_interval(self, tokens: int | None, decode_ms: float | None) -> None:
        """What the model did since the previous decision, for the next decision's telemetry record
        (``tokens``, ``decode_ms``): the tokens generated and the median measured decode latency per token
        (ms; None when none was measured). Nothing the manager decides reads them."""
        self.interval_tokens, self.interval_decode_ms = tokens, decode_ms

    def observe_measurement(self, latency_ms: float | None = None, power_w: float | None = None,
                            config: int | None = None) -> bool:
        """A measurement of the configuration that ran (default: the current one) for the online
        correction: ``latency_ms`` the decode latency per token (ms), ``power_w`` the model's own
        power (W: the device's power less idle and other load). Cheap (no array work); the shield
        and the predicted latency take it up at the next correction point. Returns whether it was used."""
        c = self.correction
        if c is None:
            return False
        i = self.current if config is None else config
        n0 = (c.lat[i].n, c.pow[i].n, c.lat_all.n, c.pow_all.n)
        used = c.observe(i, latency_ms, power_w)
        if used:
            self._corr_pending = True
            n1 = (c.lat[i].n, c.pow[i].n, c.lat_all.n, c.pow_all.n)
            if any(a < MIN_SAMPLES <= b for a, b in zip(n0, n1)):
                self._corr_next = 0  # a ratio just became trusted: take it up at the next decision
        return used

    def _apply_correction(self, now_s: float) -> None:
        """The corrected energy per token to the shield's feasibility rules, the corrected decode
        time to the predicted latency; a telemetry event at most every ``correction_event_decisions``."""
        c = self.correction
        self._corr_pending = False
        self._corr_next = self.decisions + max(1, self.cfg.correction_every_decisions)
        ept = c.corrected_ept_j()
        if not self.cfg.correction_loosens_shield:
            ept = np.maximum(ept, self._profile_ept)
        self.shield.set_energy_per_token(ept)
        self._dec_ms = c.corrected_decode_ms()
        if self.decisions >= self._corr_event_next:
            self._corr_event_next = self.decisions + max(1, self.cfg.correction_event_decisions)
            self._correction_event(now_s)

    def _correction_event(self, now_s: float | None) -> None:
        if self.correction is not None and self.correction.samples:
            self.telemetry.event(event="correction", t_s=now_s if now_s is not None and math.isfinite(now_s) else None,
                                 decisions=self.decisions, **self.correction.state())

    def predicted_latency_ms(self) -> float:
        """The latency the observation uses when ``latency_over_slo`` is None: as the environment
        computes it (decode time + queueing of the backlog), with the corrected decode time."""
        if self._dec_ms is None:
            return 0.0
        dec = float(self._dec_ms[self.current])
        return dec * (1.0 + self.backlog_frac * self.params.backlog_cap_tokens)

    def save_calibrated_profile(self, base_profile_path: str | Path, out_path: str | Path,
                                force: bool = False) -> Path:
        """Writes the profile at ``base_profile_path`` calibrated by the online correction
        (``OnlineCorrection.to_profile``) to ``out_path``, atomically; an existing ``out_path`` is
        refused (``runtime.safeio.ExistsError``) unless ``force``."""
        from runtime.safeio import atomic_write_text, file_sha256, refuse_existing

        if self.correction is None:
            raise RuntimeError("no policy loaded: nothing to calibrate")
        out = refuse_existing(out_path, force, "calibrated profile")
        with open(base_profile_path, encoding="utf-8") as fh:
            base = json.load(fh)
        span = (self._last_t - self._t0) if self._t0 is not None and self._last_t is not None else 0.0
        prof = self.correction.to_profile(base, self.decisions, file_sha256(base_profile_path), str(base_profile_path),
                                          span)
        atomic_write_text(out, json.dumps(prof, indent=1, sort_keys=False) + "\n")
        return out

    # ---- the state machine ------------------------------------------------------------------------
    def _go(self, to: State, event: str, now_s: float, cause: str) -> None:
        frm = self.state
        nxt = TRANSITIONS.get((frm, event))
        if nxt is None or nxt != to:
            raise RuntimeError(f"illegal transition {frm.name} --{event}--> {to.name}")
        self.state, self.state_since_s = to, now_s
        self.transitions.append((now_s, frm.name, to.name, cause))
        self.telemetry.event(event="transition", t_s=now_s if math.isfinite(now_s) else None, frm=frm.name,
                             to=to.name, trigger=event, cause=cause)
        _log().info("runtime state %s -> %s (%s: %s)", frm.name, to.name, event, cause)

    def decide(self, now_s: float | None = None) -> int:
        """One decision: poll sensors, move the state machine, build the observation, run the
        policy and the shield, commit.

        Args:
            now_s: Current time on the hub's clock (default ``clock()``).

        Returns:
            The configuration index to run (into the configuration space / ``names``).
        """
        if now_s is None:
            now_s = self.clock()
        if self._t0 is None:
            self._t0 = now_s
        dt = now_s - self._last_t if self._last_t is not None else 0.0
        self._last_t = now_s
        ob = self.objective
        if ob is not None and ob.budget_j == ob.budget_j:  # an energy budget: re-paced into a power budget
            self.budget_w = ob.pace_w(now_s)
        hub = self.hub
        hub.poll(now_s)
        v = hub.values
        temp, soc, plugged = v[TEMP], v[SOC], v[PLUGGED]
        unknown = hub.lost_required
        hard = self.shield.hard_limit(temp, soc, plugged, unknown)
        st = self._transition(now_s, hard, temp, soc, plugged, unknown)
        supply, base_w = self._observe(now_s, dt, v, temp, soc, plugged)
        if self.objective is not None:  # the interval that just ended ran self.current
            ran = self.current
            q = float(self.pf.quality[ran]) if self.pf is not None and self.pf.quality is not None else math.nan
            stored = self.stored_energy_j if self.stored_energy_j is not None else soc * self.capacity_j
            self.objective.update(now_s, dt, v[POWER] - base_w, float(self.interval_tokens or 0), q, soc, stored,
                                  v[POWER])
        a_pol, final, reason = self._choose(now_s, st, hard, temp, soc, v[AMBIENT], base_w, supply, v[BANDWIDTH])
        self._commit(now_s, st, a_pol, final, reason, soc, temp, plugged, v[POWER])
        return final

    def _transition(self, now_s: float, hard: Reason, temp: float, soc: float, plugged: float,
                    unknown: bool) -> State:
        """Phase 1: move the state machine on the hard limits and the sensors' health."""
        st, hub = self.state, self.hub
        if st == State.FALLBACK:
            return st
        if hard:
            self._ok_run = 0
            if st != State.EMERGENCY:
                self._go(State.EMERGENCY, "critical", now_s, REASON_NAMES[hard])
        elif st == State.EMERGENCY:
            if now_s - self.state_since_s >= self.cfg.emergency_min_s and \
                    self.shield.cleared(temp, soc, plugged, unknown):
                if hub.degraded:
                    self._go(State.DEGRADED, "cleared_degraded", now_s, "limits cleared; sensors degraded")
                else:
                    self._go(State.NORMAL, "cleared", now_s, "limits cleared")
        elif hub.degraded:
            self._ok_run = 0
            if st == State.NORMAL:
                self._go(State.DEGRADED, "sensor_fault", now_s, self._flag_names(hub.flags))
        elif st == State.DEGRADED:
            self._ok_run += 1
            if self._ok_run >= self.cfg.recover_decisions:
                self._go(State.NORMAL, "sensors_ok", now_s, "all fields OK")
        return self.state

    def _observe(self, now_s: float, dt: float, v: Sequence[float], temp: float, soc: float,
                 plugged: float) -> tuple[float, float]:
        """Phase 2: the observation vector (``runtime.observation``, as in training); returns the
        supply and the non-model power the shield needs."""
        hub = self.hub
        supply = v[SUPPLY] if hub.sensed[SUPPLY] or hub.status[SUPPLY] == 2 else plugged * self.cfg.charger_w
        base_w = self.base_w if self.base_w is not None else self.device.idle_power_w
        power = v[POWER]
        budget = self.budget_w
        if budget == budget and budget > 0:  # the budget covers the LLM's own energy (as in the env)
            llm_w = power - base_w
            self._energy_used_j += (llm_w if llm_w > 0.0 else 0.0) * dt
            ob = self.objective
            if ob is not None and ob.budget_j == ob.budget_j:  # energy left, with the paced budget's grace
                budget_left = ob.budget_j - self._energy_used_j + budget * self.params.budget_grace_s
            else:
                budget_left = budget * (now_s - self._t0 + self.params.budget_grace_s) - self._energy_used_j
        else:
            budget_left = 0.0
        self.budget_left_j = budget_left
        lat = self.latency_over_slo
        if lat is None:
            lat = self.predicted_latency_ms() / self.params.slo_ms
        stored = self.stored_energy_j if self.stored_energy_j is not None else soc * self.capacity_j
        horizon = self.horizon_left_s if self.horizon_left_s is not None else \
            (self.cfg.horizon_s if self.cfg.horizon_s is not None else self.params.horizon_s)
        head = self._head(_SCALAR, soc, supply, plugged, temp, self.device.t_max_c, budget, budget_left,
                          self.deadline_left_s, stored, horizon, self.demand_tps, self.backlog_frac, lat, v[BANDWIDTH])
        # a new array each decision: building one is cheaper than filling a kept buffer from a list
        goal = ()
        if self.layout.goal:  # a goal-conditioned policy reads the objective (default: max-quality)
            ob = self.objective
            goal = goal_values(ob.kind if ob else "max-quality", ob.quality_floor if ob else 0.0, budget)
        therm = ()
        if self.layout.thermal:  # the device's own constants, at the policy's step (as in training)
            d = self.device
            therm = thermal_values(_SCALAR, temp, v[AMBIENT], d.t_max_c, d.r_th_c_per_w, d.tau_s, self.params.step_s,
                                   base_w, thermal_scale_w(_SCALAR, self.params.thermal_cap, self.demand_tps,
                                                           self._costliest))
        if self.layout.demand_avg:  # the smoothed demand, from the first decision's demand on (as the env's reset)
            self.demand_avg_tps = self.demand_tps if self.demand_avg_tps is None else demand_avg_update(
                _SCALAR, self.demand_avg_tps, self.demand_tps, dt, self.params.demand_avg_s)
        pw = self.layout.power_block(_SCALAR, power, head, base_w, self.demand_tps, self._costliest)
        self.obs = self.layout.write(None, head, self.features[self.current], power, v[AMBIENT], self.supply_ahead_w,
                                     self.procs_down, goal, therm, self.demand_avg_tps or 0.0, pw)
        return supply, base_w

    def _choose(self, now_s: float, st: State, hard: Reason, temp: float, soc: float, ambient: float,
                base_w: float, supply: float, bandwidth_mbps: float = 1.0) -> tuple[int, int, Reason]:
        """Phase 3: the policy's action, then the shield's and the dwell rule's overrides."""
        cur, sh = self.current, self.shield
        if st == State.FALLBACK:
            return -1, self.safe, Reason.FALLBACK
        pol = self.policy
        # min-energy's floor, for the shield's floor rule (ShieldParams.floor_rule; the shield holds it with the safety
        # rules, or under a budget within its budget rule's mask: runtime.rules.floor_within_budget)
        ob = self.objective
        q_min = ob.quality_floor if ob is not None and ob.kind == "min-energy" else math.nan
        # the budget rule (ShieldParams.budget_rule): the rate the next decision serves, the demand + the backlog
        # drained in one step (as the env's masks price it), against the allowance left; with no demand given
        # (set_workload), the model generates flat out: each configuration at its own throughput
        dt = self.params.step_s
        rate = (self.budget_rate_tps if self.budget_rate_tps is not None
                else self.demand_tps + self.backlog_frac * self.params.backlog_cap_tokens / dt if self._demand_given
                else math.inf)
        bud = (self.budget_w, self.budget_left_j, rate, dt, cur)  # the switch from cur is priced into the budget
        if not self.cfg.shield:  # evaluation only: the policy alone (its rule hint still under the shield's mask)
            if self._hint_rule is not None:
                self._set_hint(sh.mask(self.demand_tps, temp, ambient, base_w, soc, supply, bandwidth_mbps,
                                       self.procs_down, self.full_charge_j(soc), self.deadline_left_s, q_min, *bud))
            a_pol = pol.act(self.obs)
            return a_pol, a_pol, Reason.NONE
        mask = sh.mask(self.demand_tps, temp, ambient, base_w, soc, supply, bandwidth_mbps, self.procs_down,
                       self.full_charge_j(soc), self.deadline_left_s, q_min, *bud)
        self._set_hint(mask)
        a_pol = pol.act(self.obs, mask) if mask is not None and pol.uses_masks else pol.act(self.obs)
        if st == State.EMERGENCY:
            return a_pol, self.safe, (hard if hard else Reason.EMERGENCY_HOLD)
        if mask is not None and not mask[a_pol]:
            return a_pol, pol.masked_argmax(mask), sh.mask_reason(temp, soc, a_pol, self.procs_down)
        if a_pol != cur and (self._since_switch < self.cfg.min_dwell_decisions
                             or now_s - self._switch_t < self.cfg.min_dwell_s) and (mask is None or mask[cur]):
            return a_pol, cur, Reason.DWELL
        return a_pol, a_pol, Reason.NONE

    def full_charge_j(self, soc: float) -> float:
        """The battery's full charge, J: stored energy / SoC when the sensors report both, else
        ``ManagerConfig.capacity_wh``. The battery saver sizes its raise of the reserve with it."""
        stored = self.stored_energy_j
        if stored is not None and soc > 0.01:
            return stored / soc
        return self.capacity_j

    def _set_hint(self, mask: np.ndarray | None) -> None:
        """The rule hint (``EnvParams.rule_hint``): the schedutil-like rule's choice from this observation, held
        to the shield's mask (None: nothing masked), written into the observation as in training."""
        r = self._hint_rule
        if r is None:
            return
        self.hint_config = r.masked(r.choose(*(float(x) for x in self.layout.hint_inputs(self.obs))), mask)
        self.layout.set_hint(self.obs, self._hint_table[self.hint_config])

    def _commit(self, now_s: float, st: State, a_pol: int, final: int, reason: Reason, soc: float, temp: float,
                plugged: float, power: float) -> None:
        """Phase 4: switch, count, record."""
        switched = final != self.current
        if switched:
            self.switches += 1
            self._switch_t = now_s
            self.current = final
        self._since_switch = since_switch_after(self._since_switch, switched)
        self.decisions += 1
        self.overrides[reason] += 1
        self.state_decisions[st] += 1
        self.last_policy_action, self.last_reason = a_pol, reason
        tel = self.telemetry
        if tel.fh is not None:
            tel.record((now_s, int(st), soc, temp, plugged, power, self.demand_tps, a_pol, final, int(reason),
                        self.hub.flags, self.interval_tokens, self.interval_decode_ms))
        self.interval_tokens = self.interval_decode_ms = None
        if self._corr_pending and self.decisions >= self._corr_next:
            self._apply_correction(now_s)

    # ---- reporting ------------------------------------------------------------------------------
    @staticmethod
    def _flag_names(flags: int) -> str:
        return ",".join(FIELDS[i] for i in range(len(FIELDS)) if flags >> i & 1) or "none"

    def summary(self) -> dict[str, Any]:
        """Counters: decisions, switches, overrides by reason, decisions per state, transitions."""
        return {
            "decisions": self.decisions, "switches": self.switches, "state": self.state.name,
            "overrides": {REASON_NAMES[Reason(i)]: n for i, n in enumerate(self.overrides) if n and i},
            "decisions_per_state": {State(i).name: n for i, n in enumerate(self.state_decisions) if n},
            "transitions": len(self.transitions), "policy_error": self.policy_error,
            "sensor_failures": dict(self.hub.failures),
            "policy_sha256": self.pf.sha256 if self.pf is not None else None,
            "correction": self.correction.state() if self.correction is not None and self.correction.samples else None,
            "objective": self.objective.summary() if self.objective is not None else None,
        }

    def close(self) -> None:
        """Writes the final ``correction`` event (if anything was measured) and closes the telemetry."""
        if self.telemetry.fh is not None:
            self._correction_event(self._last_t)
        self.telemetry.close()
