"""Feasibility rules for configurations — shared by the environment's action mask and the
device runtime's safety shield (numpy + standard library only).

A configuration is infeasible *now* when running it at the current demand would

* keep the device above its thermal trip point: near or above ``t_max_c`` only configurations
  whose steady-state temperature ``T_amb + R_th · (P_base + P_idle + demand · e_token)`` stays
  at or below ``t_max_c`` are allowed;
* drain a battery that is already at its reserve: below ``reserve_soc`` while the supply does
  not cover the draw, only the cheapest quarter of configurations (energy per token) is allowed;
* need a link that is down: at 0 Mbit/s a split configuration (``offload``) is not allowed;
* need a processor that is unavailable (busy, lost or quarantined; ``down``, a bit mask over
  ``runtime.placement.ROLES``): a placement on it is not allowed (the CPU is never down);
* not fit the device's memory: a configuration whose ``device_bytes`` (weights + KV cache of the
  blocks on the device) exceed the device's ``memory_mb`` is never allowed (:meth:`Feasibility.fits`).

A split configuration's energy per token counts its radio: ``e_token + P_conn / NOMINAL_TPS`` (the
connected-state power spread over a nominal demand) for the cheap set, and ``P_conn`` is added to
its power in the thermal rule.

At least one configuration (the lowest energy per token) always stays allowed, so a masked
policy can always act. :class:`Feasibility` holds the rules for one set of configurations; the
environment's action masks, the batched env and the runtime shield all use it.
"""

from __future__ import annotations

import numpy as np

from runtime.dynamics import max_power_for_temp_w

HOT_MARGIN_C = 1.0  # start masking this far below the trip point: the model lags by τ


def step_down(action: int, allowed: np.ndarray, energy_j_per_token: np.ndarray, quality: np.ndarray) -> int:
    """An allowed configuration for a choice the mask forbids, for a controller without logits (a rule): the
    highest-quality allowed configuration that costs no more energy per token than the choice (ties: the
    cheaper), else the cheapest allowed one; the choice itself when it is allowed. This is how
    ``agents.evaluate`` holds a hand-written rule to the same masks as a masked policy, the way a device's
    shield would (a policy with logits takes its best allowed action instead, ``masked_argmax``)."""
    allowed = np.asarray(allowed, dtype=bool)
    if allowed[action] or not allowed.any():
        return int(action)
    ept, q = np.asarray(energy_j_per_token, dtype=np.float64), np.asarray(quality, dtype=np.float64)
    ok = np.flatnonzero(allowed & (ept <= ept[action]))
    if ok.size:
        return int(ok[np.lexsort((ept[ok], -q[ok]))[0]])
    ok = np.flatnonzero(allowed)
    return int(ok[np.argmin(ept[ok])])


class Feasibility:
    """The feasibility rules over one set of configurations (module docstring), with what they need
    precomputed: the cheapest quarter by energy per token and the safe (lowest-energy) configuration.

    The environment's action mask, the batched env's masks and the runtime shield all use this class.

    Args:
        energy_j_per_token: Per-configuration energy per token (J), (n_configs,).
    """

    CHEAP_QUANTILE = 0.25
    NOMINAL_TPS = 10.0  # tokens/s over which a split configuration's connected-state power is spread

    def __init__(self, energy_j_per_token: np.ndarray, offload: np.ndarray | None = None,
                 connected_w: float = 0.0, device_bytes: np.ndarray | None = None,
                 roles: np.ndarray | None = None) -> None:
        n = np.shape(energy_j_per_token)[0]
        # processor roles each configuration needs (runtime.placement.role_mask; 1 = the CPU only)
        self.roles = np.ones(n, np.int64) if roles is None else np.asarray(roles, dtype=np.int64)
        self.has_place = bool((self.roles != 1).any())
        self.device_bytes = np.zeros(n) if device_bytes is None else np.asarray(device_bytes, dtype=np.float64)
        self.offload = np.zeros(n, bool) if offload is None else np.asarray(offload) > 0
        self.extra_w = np.where(self.offload, float(connected_w), 0.0)  # radio power of a split configuration
        self.ept_device = np.asarray(energy_j_per_token, dtype=np.float64)  # the model's tokens on the device
        self.ept = self.ept_device + self.extra_w / self.NOMINAL_TPS
        # the safe configuration runs on the device's CPU: it needs neither the link nor an accelerator
        local = ~self.offload & (self.roles == 1)
        self.safe = int(np.flatnonzero(local)[np.argmin(self.ept[local])]) if local.any() else int(np.argmin(self.ept))
        self.ept_min = float(self.ept[self.safe])
        self.cheap = self.ept <= np.quantile(self.ept, self.CHEAP_QUANTILE)
        self.cheap[self.safe] = True
        self.has_split = bool(self.offload.any())
        self.local = ~self.offload
        self.all_ok = np.ones(n, dtype=bool)
        self.all_ok.flags.writeable = False

    def fits(self, memory_bytes: float) -> np.ndarray:
        """Read-only mask of the configurations that fit ``memory_bytes`` (the safe one always stays)."""
        m = self.device_bytes <= memory_bytes
        if m.all():
            return self.all_ok
        m[self.safe] = True
        m.flags.writeable = False
        return m

    def active(self, temp_c: float, t_max_c: float, soc: float, reserve_soc: float,
               bandwidth_mbps: float = 1.0, down: int = 0) -> bool:
        """Whether any rule can mask something now (hot, below the reserve, the link or a processor down)."""
        return (temp_c > t_max_c - HOT_MARGIN_C or soc < reserve_soc or (self.has_split and bandwidth_mbps <= 0.0)
                or (self.has_place and down != 0))

    def mask(self, demand_tps: float, temp_c: float, ambient_c: float, t_max_c: float, r_th_c_per_w: float,
             base_w: float, soc: float, reserve_soc: float, supply_w: float,
             out: np.ndarray | None = None, bandwidth_mbps: float = 1.0,
             fits: np.ndarray | None = None, down: int = 0) -> np.ndarray:
        """Boolean mask (n_configs,) of the configurations allowed right now.

        ``base_w`` is all power that is not the model's tokens (device base load + idle power).
        At least the safe configuration always stays allowed: when the thermal rule removes even
        it, it alone is allowed (the cheapest set always contains it; it never needs the link).
        """
        hot = temp_c > t_max_c - HOT_MARGIN_C
        low = soc < reserve_soc and supply_w < base_w + demand_tps * self.ept_min
        if hot:
            allowed_w = max_power_for_temp_w(t_max_c, ambient_c, r_th_c_per_w) - base_w
            if demand_tps * self.ept_min > allowed_w:  # nothing fits, not even the safe one
                m = np.zeros(self.ept.shape[0], dtype=bool)
                m[self.safe] = True
            else:
                m = demand_tps * self.ept_device + self.extra_w <= allowed_w
                if low:
                    m &= self.cheap
        elif low:
            m = self.cheap.copy()
        else:
            m = self.all_ok.copy()
        if self.has_split and bandwidth_mbps <= 0.0:
            m &= self.local
        if self.has_place and down:  # processors that are busy, lost or quarantined
            m &= (self.roles & int(down)) == 0
        if fits is not None:  # the device's memory (``fits(memory_bytes)``)
            m &= fits
        m[self.safe] = True
        if out is None:
            return m
        out[:] = m
        return out
