"""Feasibility rules for configurations — shared by the environment's action mask and the
device runtime's safety shield (numpy + standard library only).

A configuration is infeasible *now* when running it at the current demand would

* keep the device above its thermal trip point: near or above ``t_max_c`` only configurations
  whose steady-state temperature ``T_amb + R_th · (P_base + P_idle + demand · e_token)`` stays
  at or below ``t_max_c`` are allowed;
* drain a battery that is already at its reserve: below ``reserve_soc`` while the supply does
  not cover the draw, only the cheapest quarter of configurations (energy per token) is allowed.

At least one configuration (the lowest energy per token) always stays allowed, so a masked
policy can always act.
"""

from __future__ import annotations

import numpy as np

from runtime.dynamics import max_power_for_temp_w

HOT_MARGIN_C = 1.0  # start masking this far below the trip point: the model lags by τ


def feasible_mask(energy_j_per_token: np.ndarray, demand_tps: float, temp_c: float, ambient_c: float,
                  t_max_c: float, r_th_c_per_w: float, base_w: float, soc: float, reserve_soc: float,
                  supply_w: float, cheap_set: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Boolean mask (n_configs,) of configurations allowed right now (see module docstring).

    ``cheap_set`` is the precomputed boolean mask of the cheapest quarter of configurations.
    ``base_w`` is all power that is not the model's tokens (device base load + idle power).
    """
    n = energy_j_per_token.shape[0]
    mask = np.ones(n, dtype=bool) if out is None else out
    mask[:] = True
    if temp_c > t_max_c - HOT_MARGIN_C:
        allowed_w = max_power_for_temp_w(t_max_c, ambient_c, r_th_c_per_w) - base_w
        mask &= demand_tps * energy_j_per_token <= allowed_w
    if soc < reserve_soc and supply_w < base_w + demand_tps * float(energy_j_per_token.min()):
        mask &= cheap_set
    if not mask.any():
        mask[int(np.argmin(energy_j_per_token))] = True
    return mask
