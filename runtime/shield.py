"""The safety shield: hard limits that hold no matter what the policy says (numpy + stdlib only).

Two tiers, checked on every decision:

1. **Hard limits** (force the safe configuration = lowest energy per token):

   * temperature ceiling: ``temp_c ≥ t_max_c + temp_margin_c``;
   * battery reserve: ``soc ≤ reserve_soc`` while not plugged in;
   * unknown: a required reading (temperature, SoC, plugged) has had no valid value for longer
     than the sensor hub's hold time — unknown is treated as the worst case.

2. **Feasibility rules** (``runtime.rules.Feasibility``, the same rules as the environment's
   action mask): near the trip point (``temp_c > t_max_c − HOT_MARGIN_C``) or below the reserve
   SoC, configurations that would keep the device too hot or drain an empty battery are masked
   out; if the policy's choice is masked, the best allowed action by the policy's own logits
   replaces it.

**Where the limits come from.** The hard limits are the *device's*, never the policy file's alone:
:func:`device_limits` starts from the device's own constants (``runtime.dynamics.DEVICES[kind]``,
or a user-supplied device configuration) and only lets the policy file's entry for the same kind
make them stricter (lower ``t_max_c``, higher ``r_th_c_per_w``); :func:`reserve_limit` does the
same for the battery reserve (the higher of the device's/user's reserve and the policy's). A
policy file whose metadata was edited (``t_max_c: 1000``, ``reserve_soc: 0``) and re-hashed can
therefore never loosen the shield.

A **breach** is a decision that returns anything but the safe configuration while a hard limit
holds (judged on the last valid readings, with LOST readings counted as the worst case).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from enum import IntEnum
from typing import Any

import numpy as np

from runtime.dynamics import DEVICES, DeviceConstants, EnvParams
from runtime.rules import HOT_MARGIN_C, Feasibility, floor_in_force, floor_within_budget, saver_horizon_s, saver_soc

#: The battery reserve a device keeps when nobody configured one (the environment's default).
_ENV_DEFAULTS = EnvParams()
DEFAULT_RESERVE_SOC = _ENV_DEFAULTS.reserve_soc


def _as_device(d: DeviceConstants | Mapping[str, Any]) -> DeviceConstants:
    return d if isinstance(d, DeviceConstants) else DeviceConstants.from_dict(d)


def stricter_device(own: DeviceConstants | Mapping[str, Any],
                    other: DeviceConstants | Mapping[str, Any] | None) -> DeviceConstants:
    """``own`` (the device's constants), with the safety limits made stricter by ``other`` where it
    is stricter: the lower ``t_max_c``, the higher ``r_th_c_per_w`` (the feasibility rule
    predicts a hotter device) and the lower ``memory_mb``. The physics constants (time constant, idle
    power, ...) stay ``own``'s.
    ``other`` values that are not finite numbers are ignored."""
    dev = _as_device(own)
    if other is None:
        return dev
    o = dict(other) if not isinstance(other, DeviceConstants) else {f.name: getattr(other, f.name)
                                                                      for f in fields(DeviceConstants)}

    def num(key: str) -> float | None:
        v = o.get(key)
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf")
        return float(v) if ok else None

    t, r, mem = num("t_max_c"), num("r_th_c_per_w"), num("memory_mb")
    return replace(dev, t_max_c=min(dev.t_max_c, t) if t is not None else dev.t_max_c,
                   r_th_c_per_w=max(dev.r_th_c_per_w, r) if r is not None and r > 0 else dev.r_th_c_per_w,
                   memory_mb=min(dev.memory_mb, mem) if mem is not None and mem > 0 else dev.memory_mb)


def policy_device_entry(meta: Mapping[str, Any] | None, kind: str) -> Mapping[str, Any] | None:
    """The policy file's device constants for ``kind`` (its ``devices`` table, or ``device`` when
    the file was exported for that kind); None when the file has none for it."""
    if not meta:
        return None
    rules = meta.get("mask_rules") or {}
    table = rules.get("devices") or {}
    if kind in table:
        return table[kind]
    if rules.get("device_kind") == kind:
        return rules.get("device")
    return None


def device_limits(kind: str, policy_meta: Mapping[str, Any] | None = None,
                  user_device: DeviceConstants | Mapping[str, Any] | None = None) -> DeviceConstants:
    """The device constants the shield enforces for a device of ``kind``.

    The device's own configuration (``user_device`` if given, else ``runtime.dynamics.DEVICES[kind]``,
    ``default`` for an unknown kind), made stricter — never looser — by the policy file's entry for
    the same kind (:func:`stricter_device`)."""
    own = _as_device(user_device) if user_device is not None else DEVICES.get(kind, DEVICES["default"])
    return stricter_device(own, policy_device_entry(policy_meta, kind))


def reserve_limit(own: float | None, policy: float | None) -> float:
    """The battery reserve the shield enforces: the higher of the device's (or user's) reserve
    (default :data:`DEFAULT_RESERVE_SOC`) and the policy's."""
    r = DEFAULT_RESERVE_SOC if own is None else float(own)
    if policy is not None and policy == policy and 0.0 <= policy < 1.0:
        r = max(r, float(policy))
    return r


class Reason(IntEnum):
    """Why the final configuration differs from the policy's (0 = it does not)."""

    NONE = 0
    THERMAL_CEILING = 1
    BATTERY_RESERVE = 2
    SENSOR_UNKNOWN = 3
    EMERGENCY_HOLD = 4  # limits cleared but hysteresis / minimum time in EMERGENCY not yet
    THERMAL_MASK = 5
    BATTERY_MASK = 6
    FALLBACK = 7  # no valid policy: the safe configuration
    DWELL = 8  # the policy asked to switch before the minimum dwell time: keep the current one
    LINK_MASK = 9  # a split configuration while the link to the split server is down
    MEMORY_MASK = 10  # a configuration that does not fit the device's memory
    PROCESSOR_MASK = 11  # a placement on a processor that is busy, lost or quarantined (docs/placement.md)
    FLOOR_MASK = 12  # min-energy: a configuration below the user's quality floor (ShieldParams.floor_rule)
    BUDGET_MASK = 13  # a configuration that would overdraw the user's power budget (ShieldParams.budget_rule)


REASON_NAMES = {r: r.name.lower() for r in Reason}


@dataclass(frozen=True)
class ShieldParams:
    """Limits of the shield.

    Attributes:
        t_max_c: Throttling trip point of the device, °C.
        r_th_c_per_w: Thermal resistance (for the feasibility rule), °C/W.
        reserve_soc: Battery reserve, fraction.
        temp_margin_c: The hard ceiling is ``t_max_c + temp_margin_c``.
        temp_hyst_c: Leave EMERGENCY only below ``ceiling − temp_hyst_c``.
        soc_hyst: Leave EMERGENCY only above ``reserve_soc + soc_hyst`` (or when plugged).
        saver_s: Battery saver, s (``EnvParams.saver_s``): the feasibility masks' reserve is raised by the charge
            the device's own load and the safe configuration, less the supply, would take in this time (the hard
            limit stays at ``reserve_soc``); 0: off.
        saver_to_deadline: The saver's horizon reaches a deadline ahead (``EnvParams.saver_to_deadline``;
            ``runtime.rules.saver_horizon_s``): the ``deadline_left_s`` that :meth:`Shield.mask` is given.
        saver_floor_frac: Where the saver counts its charge from, as a share of ``reserve_soc``
            (``EnvParams.saver_floor_frac``): 1 the reserve, 0 empty.
        floor_rule: Hold the quality floor that :meth:`Shield.mask` is given (``EnvParams.floor_rule``;
            ``runtime.rules.Feasibility.floor_mask``); it gives way to every safety rule.
        budget_rule: Hold the power budget that :meth:`Shield.mask` is given (``EnvParams.budget_rule``;
            ``runtime.rules.Feasibility.budget_mask``); it gives way to every safety rule.
        budget_reserve_s: The seconds of budget the budget rule keeps in hand (``EnvParams.budget_reserve_s``).
        budget_reserve_tps: The burst the reserve also pays for, tok/s (``EnvParams.budget_reserve_tps``).
        budget_floor_reserve_s: What is kept in hand where holding the quality floor needs the reserve, seconds of
            budget (``EnvParams.budget_floor_reserve_s``; ≥ ``budget_reserve_s``: the same reserve).
    """

    t_max_c: float
    r_th_c_per_w: float
    reserve_soc: float
    temp_margin_c: float = 2.0
    temp_hyst_c: float = 3.0
    soc_hyst: float = 0.02
    saver_s: float = 0.0
    saver_to_deadline: bool = False
    saver_floor_frac: float = 1.0
    floor_rule: bool = True
    budget_rule: bool = True
    # the budget rule's settings default to the simulator's (one owner: EnvParams)
    budget_reserve_s: float = _ENV_DEFAULTS.budget_reserve_s
    budget_reserve_tps: float = _ENV_DEFAULTS.budget_reserve_tps
    budget_floor_reserve_s: float = _ENV_DEFAULTS.budget_floor_reserve_s

    @property
    def ceiling_c(self) -> float:
        return self.t_max_c + self.temp_margin_c


class Shield:
    """Hard limits and feasibility rules over a fixed set of configurations.

    Args:
        params: The limits.
        energy_j_per_token: Per-configuration energy per token (J), from the profile.
        offload: Per-configuration 1 for a split configuration (docs/split.md), else 0 (default: none).
        connected_w: The radio's connected-state power a split configuration adds, W.
        roles: Per-configuration bit mask of the processor roles it runs on (``runtime.placement.role_mask``;
            default: all on the CPU).
        quality: Per-configuration quality (the floor rule; None: unknown, no floor is held).
        tokens_per_s: Per-configuration decode throughput (the budget rule's cap on the tokens a configuration
            serves; None: unknown).
        switch_j: (n, n) energy of a switch i → j, J (``runtime.policy.PolicyFile.switch_j``): the budget rule
            prices the switch from the current configuration (``mask(current=)``) into the step, as the env's
            masks do; None: switches cost nothing.
    """

    def __init__(self, params: ShieldParams, energy_j_per_token: np.ndarray, offload: np.ndarray | None = None,
                 connected_w: float = 0.0, device_bytes: np.ndarray | None = None,
                 memory_bytes: float = float("inf"), roles: np.ndarray | None = None,
                 quality: np.ndarray | None = None, tokens_per_s: np.ndarray | None = None,
                 switch_j: np.ndarray | None = None) -> None:
        self.p = params
        self.switch_j = None if switch_j is None else np.asarray(switch_j, dtype=np.float64)
        self._offload, self._connected_w, self._device_bytes = offload, connected_w, device_bytes
        self._roles, self._quality, self._tps = roles, quality, tokens_per_s
        self.memory_bytes = memory_bytes
        self.rules = Feasibility(energy_j_per_token, offload, connected_w, device_bytes, roles, quality, tokens_per_s)
        self.fits = self.rules.fits(memory_bytes)
        self.ept = self.rules.ept
        self.safe = self.rules.safe
        self._mask = np.ones(self.ept.shape[0], dtype=bool)
        self.hot_c = params.t_max_c - HOT_MARGIN_C
        self.ceiling_c = params.ceiling_c
        self.reserve = params.reserve_soc
        self.low_soc = params.reserve_soc  # the masks' reserve at the last mask(): raised by the battery saver
        # the last mask() before the user's rule (the floor or the budget; None: it held neither) and that rule
        self._before_user_rule: np.ndarray | None = None
        self._within_budget: np.ndarray | None = None  # the budget rule's mask before the floor held within it
        self._user_reason = Reason.FLOOR_MASK

    def set_energy_per_token(self, energy_j_per_token: np.ndarray) -> None:
        """Replaces the feasibility rules' energy per token (the runtime's online correction).
        The hard limits and the safe configuration (:attr:`safe`, the profile's lowest energy per
        token, which EMERGENCY and FALLBACK run) do not change."""
        self.rules = Feasibility(energy_j_per_token, self._offload, self._connected_w, self._device_bytes, self._roles,
                                 self._quality, self._tps)
        self.ept = self.rules.ept
        self.fits = self.rules.fits(self.memory_bytes)

    def hard_limit(self, temp_c: float, soc: float, plugged: float, unknown: bool) -> Reason:
        """Which hard limit holds now (``Reason.NONE`` if none)."""
        if unknown:
            return Reason.SENSOR_UNKNOWN
        if temp_c >= self.ceiling_c:
            return Reason.THERMAL_CEILING
        if soc <= self.reserve and plugged < 0.5:
            return Reason.BATTERY_RESERVE
        return Reason.NONE

    def cleared(self, temp_c: float, soc: float, plugged: float, unknown: bool) -> bool:
        """Whether every hard limit is cleared by its hysteresis margin (to leave EMERGENCY)."""
        p = self.p
        return (not unknown and temp_c <= self.ceiling_c - p.temp_hyst_c
                and (plugged >= 0.5 or soc >= p.reserve_soc + p.soc_hyst))

    def mask(self, demand_tps: float, temp_c: float, ambient_c: float, base_w: float, soc: float,
             supply_w: float, bandwidth_mbps: float = 1.0, down: int = 0,
             capacity_j: float = math.inf, deadline_left_s: float = math.nan,
             q_min: float = math.nan, budget_w: float = math.nan, allowance_j: float = 0.0,
             rate_tps: float | None = None, dt_s: float = 10.0, current: int | None = None) -> np.ndarray | None:
        """The feasibility mask when a rule is active (hot, below reserve, the link down with split
        configurations, a processor down with placements, or a quality floor to hold), else None. ``capacity_j``
        (the battery's full charge) sizes the battery saver's raise of the reserve (``ShieldParams.saver_s``);
        ``deadline_left_s`` (NaN: none) its horizon with ``ShieldParams.saver_to_deadline``; ``q_min`` (NaN: none)
        is the min-energy quality floor, held with ``ShieldParams.floor_rule`` when the quality table is known: with the
        safety rules where no budget is set (``runtime.rules.floor_in_force``), within what the budget rule allows
        where one is (``runtime.rules.floor_within_budget``), not at all under a budget the shield does not hold (then
        it is only a cost); ``budget_w`` (NaN: none) the user's power budget,
        held with ``ShieldParams.budget_rule`` over a ``dt_s`` decision at ``rate_tps`` tokens/s (default the
        demand; ``inf``: flat out, each configuration at its own throughput) with ``allowance_j`` left (its grace
        included; ``runtime.rules.Feasibility.budget_mask``), the energy of the switch from ``current`` (the
        configuration running; None: not priced) included when the shield knows its switch costs."""
        horizon = saver_horizon_s(self.p.saver_s, deadline_left_s, self.p.saver_to_deadline)
        lo = self.low_soc = saver_soc(self.reserve, horizon, capacity_j, base_w, demand_tps,
                                      self.rules.ept_min, supply_w, self.p.saver_floor_frac)
        budget = budget_w == budget_w and self.p.budget_rule
        held = self.p.floor_rule and self.rules.quality is not None
        q_pre = floor_in_force(q_min, budget_w) if held else math.nan  # with the safety rules (no budget set)
        q_post = floor_within_budget(q_min, budget_w) if held and budget else math.nan  # within the budget's mask
        floor = q_pre == q_pre or q_post == q_post
        self._before_user_rule = self._within_budget = None
        if self.rules.active(temp_c, self.p.t_max_c, soc, lo, bandwidth_mbps, down) \
                or self.fits is not self.rules.all_ok or floor or budget:
            m = self.rules.mask(demand_tps, temp_c, ambient_c, self.p.t_max_c, self.p.r_th_c_per_w,
                                base_w, soc, lo, supply_w, out=self._mask,
                                bandwidth_mbps=bandwidth_mbps, fits=self.fits, down=down)
            if floor or budget:  # the user's rule last, on what the safety rules allow (kept for mask_reason)
                self._before_user_rule = m.copy()
                if q_pre == q_pre:
                    self._user_reason = Reason.FLOOR_MASK
                    m[:] = self.rules.floor_mask(q_pre, self._before_user_rule)
                if budget:
                    self._user_reason = Reason.BUDGET_MASK
                    rate, before = demand_tps if rate_tps is None else rate_tps, m.copy()
                    sw = (self.switch_j[current] if self.switch_j is not None and current is not None and current >= 0
                          else None)
                    m[:] = self.rules.budget_mask(rate, budget_w, allowance_j, dt_s, before, sw,
                                                  keep_s=self.p.budget_reserve_s, keep_tps=self.p.budget_reserve_tps)
                    if q_post == q_post:  # the floor within what the budget allows (that kept for mask_reason)
                        self._within_budget = m.copy()
                        m[:] = self.rules.budget_floor_mask(rate, budget_w, allowance_j, dt_s, before, sw,
                                                            self.p.budget_reserve_s, self.p.budget_reserve_tps,
                                                            q_post, self.p.budget_floor_reserve_s,
                                                            budget_masked=self._within_budget)
            return m
        return None

    def mask_reason(self, temp_c: float, soc: float = 1.0, action: int | None = None, down: int = 0) -> Reason:
        if action is not None and not self.fits[action]:
            return Reason.MEMORY_MASK
        if action is not None and down and int(self.rules.roles[action]) & int(down):
            return Reason.PROCESSOR_MASK
        if action is not None and self._within_budget is not None and self._within_budget[action]:
            return Reason.FLOOR_MASK  # the budget allows it, the floor held within the budget does not
        if action is not None and self._before_user_rule is not None and self._before_user_rule[action]:
            return self._user_reason  # only the user's floor or budget forbids it
        if temp_c > self.hot_c:
            return Reason.THERMAL_MASK
        return Reason.BATTERY_MASK if soc < self.low_soc else Reason.LINK_MASK


def is_breach(final_action: int, safe_action: int, params: ShieldParams, temp_c: float, soc: float,
              plugged: float, unknown: bool) -> bool:
    """The breach definition: a non-safe action while a hard limit holds (see module docstring)."""
    if final_action == safe_action:
        return False
    return unknown or temp_c >= params.ceiling_c or (soc <= params.reserve_soc and plugged < 0.5)
