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

A **breach** is a decision that returns anything but the safe configuration while a hard limit
holds (judged on the last valid readings, with LOST readings counted as the worst case).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from runtime.rules import HOT_MARGIN_C, Feasibility


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
    """

    t_max_c: float
    r_th_c_per_w: float
    reserve_soc: float
    temp_margin_c: float = 2.0
    temp_hyst_c: float = 3.0
    soc_hyst: float = 0.02

    @property
    def ceiling_c(self) -> float:
        return self.t_max_c + self.temp_margin_c


class Shield:
    """Hard limits and feasibility rules over a fixed set of configurations.

    Args:
        params: The limits.
        energy_j_per_token: Per-configuration energy per token (J), from the profile.
    """

    def __init__(self, params: ShieldParams, energy_j_per_token: np.ndarray) -> None:
        self.p = params
        self.rules = Feasibility(energy_j_per_token)
        self.ept = self.rules.ept
        self.safe = self.rules.safe
        self._mask = np.ones(self.ept.shape[0], dtype=bool)
        self.hot_c = params.t_max_c - HOT_MARGIN_C
        self.ceiling_c = params.ceiling_c
        self.reserve = params.reserve_soc

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
             supply_w: float) -> np.ndarray | None:
        """The feasibility mask when a rule is active (hot or below reserve), else None."""
        if temp_c > self.hot_c or soc < self.reserve:
            return self.rules.mask(demand_tps, temp_c, ambient_c, self.p.t_max_c, self.p.r_th_c_per_w,
                                   base_w, soc, self.reserve, supply_w, out=self._mask)
        return None

    def mask_reason(self, temp_c: float) -> Reason:
        return Reason.THERMAL_MASK if temp_c > self.hot_c else Reason.BATTERY_MASK


def is_breach(final_action: int, safe_action: int, params: ShieldParams, temp_c: float, soc: float,
              plugged: float, unknown: bool) -> bool:
    """The breach definition: a non-safe action while a hard limit holds (see module docstring)."""
    if final_action == safe_action:
        return False
    return unknown or temp_c >= params.ceiling_c or (soc <= params.reserve_soc and plugged < 0.5)
