"""The policy's observation vector — one definition shared by the environment and the device.

The Gymnasium environment (``envs.power_env``) fills it from simulated state; the runtime
manager fills it from real sensors. Both call ``write_observation`` with the same named
quantities, so a policy trained in simulation reads the same features, in the same order and
units, on the device. numpy + standard library only.

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
19..      supply_w look-ahead (opt.)  W       0        500
========  ==========================  ======  =======  =======

``affordable_power_w`` is the average power the battery can sustain until the deadline
(stored energy / time left), or until ``horizon_s`` when there is no deadline — the single
number a budget-aware rule needs. Values are clipped to the bounds so that observations always
lie in the declared space.
"""

from __future__ import annotations

import numpy as np

FEATURES: tuple[tuple[str, str, float, float], ...] = (
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
    ("config_depth_frac", "frac", 0.0, 1.0),
    ("config_heads_frac", "frac", 0.0, 1.0),
    ("config_bits_frac", "frac", 0.0, 1.0),
    ("power_w", "W", 0.0, 500.0),
    ("ambient_c", "degC", -40.0, 80.0),
)
N_BASE = len(FEATURES)
LOOKAHEAD = ("supply_w_ahead", "W", 0.0, 500.0)


def feature_names(lookahead: int = 0) -> list[str]:
    return [f[0] for f in FEATURES] + [f"supply_w_ahead_{i + 1}" for i in range(lookahead)]


def bounds(lookahead: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) float32 arrays of the observation space."""
    lo = [f[2] for f in FEATURES] + [LOOKAHEAD[2]] * lookahead
    hi = [f[3] for f in FEATURES] + [LOOKAHEAD[3]] * lookahead
    return np.array(lo, dtype=np.float32), np.array(hi, dtype=np.float32)


_LO, _HI = bounds(0)
_LO_L = [float(x) for x in _LO]
_HI_L = [float(x) for x in _HI]


def write_observation(out: np.ndarray, soc: float, supply_w: float, plugged: float, temp_c: float,
                      t_max_c: float, budget_w: float, budget_left_j: float, deadline_left_s: float,
                      stored_energy_j: float, horizon_left_s: float, demand_tps: float,
                      backlog_frac: float, latency_over_slo: float, bandwidth_mbps: float,
                      config_features: tuple[float, float, float], power_w: float, ambient_c: float,
                      supply_ahead_w=()) -> np.ndarray:
    """Fill ``out`` (float32, length N_BASE + lookahead) in place and return it.

    Args use the units of the table above; ``budget_w`` is NaN without a budget,
    ``deadline_left_s`` is NaN without a deadline, ``budget_left_j`` the energy still allowed
    by the budget (budget × (elapsed + allowance) − used).
    """
    has_b = budget_w == budget_w and budget_w > 0  # NaN-safe without numpy calls
    has_d = deadline_left_s == deadline_left_s
    left_s = max(deadline_left_s, 1.0) if has_d else max(horizon_left_s, 1.0)
    vals = (
        soc, supply_w, plugged, temp_c, t_max_c - temp_c,
        1.0 if has_b else 0.0,
        budget_left_j / (budget_w * 3600.0) if has_b else 1.0,  # in hours of budget, capped at 1
        1.0 if has_d else 0.0,
        max(deadline_left_s, 0.0) / 3600.0 if has_d else 0.0,
        stored_energy_j / left_s,
        demand_tps, backlog_frac, latency_over_slo, bandwidth_mbps,
        config_features[0], config_features[1], config_features[2], power_w, ambient_c,
    )
    lo, hi = _LO_L, _HI_L
    for i, v in enumerate(vals):
        out[i] = lo[i] if v < lo[i] else hi[i] if v > hi[i] else v
    for j, v in enumerate(supply_ahead_w):
        out[N_BASE + j] = 0.0 if v < 0.0 else 500.0 if v > 500.0 else v
    return out
