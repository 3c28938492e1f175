"""Seeded scenario generators. Randomness only via ``numpy.random.default_rng(seed)``.

Every generator takes ``seed`` plus keyword parameters and returns a :class:`~traces.schema.Trace`
on a uniform grid from 0. A parameter left as ``None`` is drawn from the seeded generator within
the documented range, so one seed = one reproducible trace; the values used are recorded in
``meta.extra["params"]``.

Shared building blocks (documented once here):

* **Ambient** (:func:`ambient_profile`): ``mean_c + swing_c * cos(2 pi (hour - peak_hour) / 24)``
  plus an AR(1) noise with 30 min correlation time and ``noise_c`` std.
* **Link** (:func:`link_bandwidth`): log-normal AR(1) capacity around ``mean_mbps`` (60 s
  correlation, ``variability`` = std of log capacity) times an on/off outage process: up periods
  ``Exp(3600 / outages_per_h)``, outages ``Exp(outage_mean_s)`` at exactly 0 Mbit/s.
* **Plugging** (:func:`plug_schedule`): alternating plugged/unplugged periods with exponential
  lengths.
* **Demand**: :func:`traces.demand.chat_sessions` (bursty chat + optional background jobs).
* **Base load** (``base_load_w``: the rest of the device, not the LLM): ``idle_w`` plus
  ``active_w`` x the fraction of the step the user is in a chat session (screen on).
* **Solar** (:func:`clear_sky_ghi_w_m2`): clear-sky global horizontal irradiance
  ``1098 * sin(elev) * exp(-0.057 / sin(elev))`` W/m^2 (Haurwitz model) from latitude, day of
  year and hour, times a cloud transmittance from a 3-state Markov regime (clear 0.95-1.0,
  broken 0.35-0.95 with fast flicker, overcast 0.15-0.35; regime length ``Exp(cloud_regime_mean_h)``),
  times panel area x efficiency; below the converter cut-in (0.05 W) the harvester gives 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from traces.demand import chat_sessions
from traces.schema import Trace, TraceMeta, make_trace

GENERATOR_VERSION = "wattwise-traces-gen/1"
GENERATED_LICENSE = "CC0-1.0"
HARVEST_CUT_IN_W = 0.05


# --- building blocks ------------------------------------------------------------------------------
def _grid(duration_h: float, step_s: float) -> np.ndarray:
    n = int(round(duration_h * 3600.0 / step_s))
    if n < 2:
        raise ValueError(f"duration_h={duration_h} at step_s={step_s} gives fewer than 2 steps")
    return np.arange(n, dtype=np.float64) * step_s


def _ar1(rng: np.random.Generator, n: int, step_s: float, tau_s: float, std: float) -> np.ndarray:
    """Stationary AR(1) with correlation time tau_s and marginal std."""
    rho = math.exp(-step_s / tau_s)
    eps = rng.standard_normal(n) * std * math.sqrt(1.0 - rho * rho)
    out = np.empty(n)
    x = rng.standard_normal() * std
    for i in range(n):
        x = rho * x + eps[i]
        out[i] = x
    return out


def ambient_profile(
    rng: np.random.Generator,
    time_s: np.ndarray,
    *,
    start_hour: float,
    mean_c: float,
    swing_c: float,
    noise_c: float = 0.4,
    peak_hour: float = 15.0,
) -> np.ndarray:
    """Diurnal ambient temperature, deg C (see module docstring)."""
    hours = start_hour + time_s / 3600.0
    step = float(time_s[1] - time_s[0]) if time_s.size > 1 else 60.0
    noise = _ar1(rng, time_s.size, step, 1800.0, noise_c)
    return mean_c + swing_c * np.cos(2.0 * np.pi * (hours - peak_hour) / 24.0) + noise


def _alternating(rng: np.random.Generator, n: int, step_s: float, start_on: bool,
                 on_mean_s: float, off_mean_s: float) -> np.ndarray:
    """0/1 per step from alternating exponential on/off periods (state at each step start)."""
    out = np.zeros(n)
    t, on = 0.0, start_on
    horizon = n * step_s
    while t < horizon:
        dur = rng.exponential(on_mean_s if on else off_mean_s)
        if on:
            i0, i1 = int(math.ceil(t / step_s)), int(math.ceil(min(t + dur, horizon) / step_s))
            out[i0:i1] = 1.0
        t += dur
        on = not on
    return out


def plug_schedule(rng: np.random.Generator, n: int, step_s: float, *, start_plugged: bool,
                  plugged_mean_s: float, unplugged_mean_s: float) -> np.ndarray:
    """Plugged (1) / unplugged (0) per step."""
    return _alternating(rng, n, step_s, start_plugged, plugged_mean_s, unplugged_mean_s)


def link_bandwidth(
    rng: np.random.Generator,
    n: int,
    step_s: float,
    *,
    mean_mbps: float,
    variability: float = 0.5,
    outages_per_h: float = 0.5,
    outage_mean_s: float = 30.0,
) -> np.ndarray:
    """Link capacity per step, Mbit/s, with outages at 0 (see module docstring)."""
    log_x = _ar1(rng, n, step_s, 60.0, variability)
    bw = mean_mbps * np.exp(log_x - 0.5 * variability**2)
    if outages_per_h > 0:
        up = _alternating(rng, n, step_s, True, 3600.0 / outages_per_h, outage_mean_s)
        bw = bw * up
    return bw


def clear_sky_ghi_w_m2(hours: np.ndarray, *, latitude_deg: float, day_of_year: float) -> np.ndarray:
    """Haurwitz clear-sky global horizontal irradiance, W/m^2, at local solar time ``hours``."""
    doy = day_of_year + hours / 24.0
    decl = math.radians(23.45) * np.sin(2.0 * np.pi * (284.0 + doy) / 365.0)
    lat = math.radians(latitude_deg)
    hour_angle = np.radians(15.0 * (np.mod(hours, 24.0) - 12.0))
    sin_elev = np.sin(lat) * np.sin(decl) + np.cos(lat) * np.cos(decl) * np.cos(hour_angle)
    out = np.zeros_like(hours)
    up = sin_elev > 0.01
    out[up] = 1098.0 * sin_elev[up] * np.exp(-0.057 / sin_elev[up])
    return out


def cloud_transmittance(rng: np.random.Generator, n: int, step_s: float, *,
                        cloudiness: float, regime_mean_h: float = 2.0) -> np.ndarray:
    """Cloud transmittance 0..1 per step from a 3-state Markov regime (see module docstring)."""
    out = np.empty(n)
    probs = np.array([1.0 - cloudiness, 0.6 * cloudiness, 0.4 * cloudiness])
    probs = probs / probs.sum()
    i = 0
    while i < n:
        length = max(1, int(rng.exponential(regime_mean_h * 3600.0) / step_s))
        regime = int(rng.choice(3, p=probs))
        j = min(n, i + length)
        if regime == 0:
            out[i:j] = rng.uniform(0.95, 1.0)
        elif regime == 1:
            flicker = rng.uniform(0.35, 0.95, size=j - i)  # broken clouds: fast passing shadows
            out[i:j] = flicker
        else:
            out[i:j] = rng.uniform(0.15, 0.35)
        i = j
    return out


def _pick(rng: np.random.Generator, value: float | None, lo: float, hi: float) -> float:
    """Uses the given value, else draws uniformly from [lo, hi] (always consuming one draw so
    passing a parameter does not shift the rest of the random stream)."""
    drawn = float(rng.uniform(lo, hi))
    return drawn if value is None else float(value)


def _meta(scenario: str, seed: int, unit: str | None, *, capacity_wh: float, initial_soc: float,
          device_kind: str, params: dict[str, Any], deadline_s: float | None = None,
          notes: str = "") -> TraceMeta:
    return TraceMeta(
        capacity_wh=round(capacity_wh, 4),
        initial_soc=round(initial_soc, 4),
        device_kind=device_kind,
        source=f"{GENERATOR_VERSION}:{scenario}",
        license=GENERATED_LICENSE,
        unit=unit or f"gen-{scenario}-seed{seed}",
        deadline_s=None if deadline_s is None else round(deadline_s, 3),
        notes=notes,
        seed=seed,
        extra={"scenario": scenario,
               "params": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in params.items()}},
    )


# --- scenarios ----------------------------------------------------------------------------------
def phone_on_battery(
    seed: int,
    *,
    name: str | None = None,
    unit: str | None = None,
    duration_h: float | None = None,
    step_s: float = 10.0,
    capacity_wh: float | None = None,
    initial_soc: float | None = None,
    start_hour: float | None = None,
    ambient_mean_c: float | None = None,
    cellular_mbps: float | None = None,
    sessions_per_h: float | None = None,
    charge_probability: float = 0.3,
    charger_w: float | None = None,
) -> Trace:
    """A phone on battery through part of a day, with chat usage bursts.

    Args:
        seed: RNG seed.
        name: Trace name (default ``phone-s<seed>``).
        unit: Split unit (default one per seed: a synthetic user).
        duration_h: Length, h; default U(2, 4).
        step_s: Grid step, s.
        capacity_wh: Battery, Wh; default U(11, 19) (3000-5000 mAh at 3.85 V).
        initial_soc: Start SoC; default U(0.4, 1.0).
        start_hour: Local clock hour at t=0; default U(7, 20).
        ambient_mean_c: Daily mean ambient, deg C; default U(18, 28).
        cellular_mbps: Mean link capacity; default U(5, 40) Mbit/s, 1 outage/h of ~20 s.
        sessions_per_h: Chat sessions per hour; default U(1, 3). Background jobs 0.7/h at 60 tok/s.
        charge_probability: Chance that one charger top-up (10-40 min) happens.
        charger_w: Charger power while plugged; default U(10, 18) W.

    Base load: 0.35 W idle + 1.2 W while the user is in a session (screen on).
    """
    rng = np.random.default_rng(seed)
    duration_h = _pick(rng, duration_h, 2.0, 4.0)
    capacity_wh = _pick(rng, capacity_wh, 11.0, 19.0)
    initial_soc = _pick(rng, initial_soc, 0.4, 1.0)
    start_hour = _pick(rng, start_hour, 7.0, 20.0)
    ambient_mean_c = _pick(rng, ambient_mean_c, 18.0, 28.0)
    cellular_mbps = _pick(rng, cellular_mbps, 5.0, 40.0)
    sessions_per_h = _pick(rng, sessions_per_h, 1.0, 3.0)
    charger_w = _pick(rng, charger_w, 10.0, 18.0)
    t = _grid(duration_h, step_s)
    n = t.size
    plugged = np.zeros(n)
    if rng.uniform() < charge_probability:
        start = int(rng.uniform(0.2, 0.8) * n)
        length = int(rng.uniform(600.0, 2400.0) / step_s)
        plugged[start:start + length] = 1.0
    d = chat_sessions(rng, n, step_s, sessions_per_h=sessions_per_h,
                      background_tps=60.0, background_jobs_per_h=0.7)
    ambient = ambient_profile(rng, t, start_hour=start_hour, mean_c=ambient_mean_c, swing_c=4.0)
    bw = link_bandwidth(rng, n, step_s, mean_mbps=cellular_mbps, variability=0.6,
                        outages_per_h=1.0, outage_mean_s=20.0)
    params = dict(duration_h=duration_h, step_s=step_s, start_hour=start_hour,
                  ambient_mean_c=ambient_mean_c, cellular_mbps=cellular_mbps,
                  sessions_per_h=sessions_per_h, charger_w=charger_w)
    return make_trace(
        name or f"phone-s{seed}",
        _meta("phone_on_battery", seed, unit, capacity_wh=capacity_wh, initial_soc=initial_soc,
              device_kind="phone", params=params),
        t, supply_w=plugged * charger_w, plugged=plugged, ambient_c=ambient,
        demand_tps=d.demand_tps, bandwidth_mbps=bw, base_load_w=0.35 + 1.2 * d.active_frac,
    )


def laptop_plug_cycles(
    seed: int,
    *,
    name: str | None = None,
    unit: str | None = None,
    duration_h: float | None = None,
    step_s: float = 20.0,
    capacity_wh: float | None = None,
    initial_soc: float | None = None,
    charger_w: float | None = None,
    plugged_mean_min: float | None = None,
    unplugged_mean_min: float | None = None,
    wifi_mbps: float | None = None,
    start_hour: float | None = None,
) -> Trace:
    """A laptop plugged and unplugged through a working day.

    Args:
        seed: RNG seed.
        name, unit: As for :func:`phone_on_battery` (default name ``laptop-s<seed>``).
        duration_h: Length, h; default U(4, 7).
        step_s: Grid step, s (20 s: laptop power changes slowly; the env resamples).
        capacity_wh: Battery, Wh; default U(40, 70).
        initial_soc: Start SoC; default U(0.3, 1.0).
        charger_w: Charger rating, W; default U(45, 90).
        plugged_mean_min: Mean plugged period, min; default U(40, 120).
        unplugged_mean_min: Mean unplugged period, min; default U(40, 150).
        wifi_mbps: Mean Wi-Fi capacity, Mbit/s; default U(20, 150), 0.3 outages/h of ~40 s.
        start_hour: Local hour at t=0; default U(8, 14).

    Demand: chat 1-2.5 sessions/h plus background summarisation jobs (1.5/h at 120 tok/s).
    Base load: 4 W idle + 5 W while in a session. Ambient: indoor 21-25 deg C, small swing.
    """
    rng = np.random.default_rng(seed)
    duration_h = _pick(rng, duration_h, 4.0, 7.0)
    capacity_wh = _pick(rng, capacity_wh, 40.0, 70.0)
    initial_soc = _pick(rng, initial_soc, 0.3, 1.0)
    charger_w = _pick(rng, charger_w, 45.0, 90.0)
    plugged_mean_min = _pick(rng, plugged_mean_min, 40.0, 120.0)
    unplugged_mean_min = _pick(rng, unplugged_mean_min, 40.0, 150.0)
    wifi_mbps = _pick(rng, wifi_mbps, 20.0, 150.0)
    start_hour = _pick(rng, start_hour, 8.0, 14.0)
    indoor_c = float(rng.uniform(21.0, 25.0))
    t = _grid(duration_h, step_s)
    n = t.size
    plugged = plug_schedule(rng, n, step_s, start_plugged=bool(rng.uniform() < 0.5),
                            plugged_mean_s=plugged_mean_min * 60.0,
                            unplugged_mean_s=unplugged_mean_min * 60.0)
    d = chat_sessions(rng, n, step_s, sessions_per_h=float(rng.uniform(1.0, 2.5)),
                      background_tps=120.0, background_jobs_per_h=1.5)
    ambient = ambient_profile(rng, t, start_hour=start_hour, mean_c=indoor_c, swing_c=1.0, noise_c=0.2)
    bw = link_bandwidth(rng, n, step_s, mean_mbps=wifi_mbps, variability=0.35,
                        outages_per_h=0.3, outage_mean_s=40.0)
    params = dict(duration_h=duration_h, step_s=step_s, charger_w=charger_w,
                  plugged_mean_min=plugged_mean_min, unplugged_mean_min=unplugged_mean_min,
                  wifi_mbps=wifi_mbps, start_hour=start_hour, indoor_c=indoor_c)
    return make_trace(
        name or f"laptop-s{seed}",
        _meta("laptop_plug_cycles", seed, unit, capacity_wh=capacity_wh, initial_soc=initial_soc,
              device_kind="laptop", params=params),
        t, supply_w=plugged * charger_w, plugged=plugged, ambient_c=ambient,
        demand_tps=d.demand_tps, bandwidth_mbps=bw, base_load_w=4.0 + 5.0 * d.active_frac,
    )


def solar_node(
    seed: int,
    *,
    name: str | None = None,
    unit: str | None = None,
    duration_h: float = 48.0,
    step_s: float = 300.0,
    storage: str | None = None,
    capacity_wh: float | None = None,
    initial_soc: float | None = None,
    panel_area_m2: float | None = None,
    panel_efficiency: float = 0.18,
    latitude_deg: float | None = None,
    day_of_year: float | None = None,
    cloudiness: float | None = None,
    start_hour: float = 0.0,
) -> Trace:
    """A solar-harvesting node with a small battery or a supercapacitor: day, night, clouds.

    Args:
        seed: RNG seed.
        name, unit: As for :func:`phone_on_battery` (default name ``solar-s<seed>``).
        duration_h: Length, h (default 48: two day/night cycles).
        step_s: Grid step, s (300 s: irradiance regimes change over minutes; the env resamples).
        storage: ``"battery"`` or ``"supercap"``; default battery with p=0.7.
        capacity_wh: Storage, Wh; default battery U(5, 20), supercap U(0.05, 0.3)
            (e.g. 50-200 F at 5 V).
        initial_soc: Start SoC; default U(0.2, 0.8).
        panel_area_m2: Panel area; default U(0.02, 0.08) m^2 (2-14 W peak at 18 %).
        panel_efficiency: Panel + converter efficiency.
        latitude_deg: Default U(25, 55).
        day_of_year: Default U(1, 365).
        cloudiness: 0 (always clear) .. 1 (mostly cloudy); default U(0.1, 0.8).
        start_hour: Local solar hour at t=0 (default midnight).

    Supply: see module docstring (Haurwitz clear sky x clouds x area x efficiency, cut-in 0.05 W);
    ``plugged`` = 1 while the harvester delivers power. Demand: background sensor-summary jobs
    (2/h at 40 tok/s) plus occasional queries (0.3 sessions/h). Base load 0.3 W (SBC idle).
    Link: weak cellular, U(2, 10) Mbit/s with 2 outages/h of ~60 s. Ambient: outdoor, diurnal
    swing 6 deg C, cooler under overcast skies.
    """
    rng = np.random.default_rng(seed)
    storage = storage or ("battery" if rng.uniform() < 0.7 else "supercap")
    if storage not in ("battery", "supercap"):
        raise ValueError(f"storage must be 'battery' or 'supercap', got {storage!r}")
    lo, hi = (5.0, 20.0) if storage == "battery" else (0.05, 0.3)
    capacity_wh = _pick(rng, capacity_wh, lo, hi)
    initial_soc = _pick(rng, initial_soc, 0.2, 0.8)
    panel_area_m2 = _pick(rng, panel_area_m2, 0.02, 0.08)
    latitude_deg = _pick(rng, latitude_deg, 25.0, 55.0)
    day_of_year = _pick(rng, day_of_year, 1.0, 365.0)
    cloudiness = _pick(rng, cloudiness, 0.1, 0.8)
    # Seasonal daily mean: ~2 deg C mid-January, ~22 deg C mid-July at 40 deg N; colder further north.
    mean_c = 12.0 - 10.0 * math.cos(2 * math.pi * (day_of_year - 15.0) / 365.0) - 0.3 * (latitude_deg - 40.0)
    t = _grid(duration_h, step_s)
    n = t.size
    hours = start_hour + t / 3600.0
    ghi = clear_sky_ghi_w_m2(hours, latitude_deg=latitude_deg, day_of_year=day_of_year)
    trans = cloud_transmittance(rng, n, step_s, cloudiness=cloudiness)
    supply = ghi * trans * panel_area_m2 * panel_efficiency
    supply = np.where(supply >= HARVEST_CUT_IN_W, supply, 0.0)
    ambient = ambient_profile(rng, t, start_hour=start_hour, mean_c=mean_c, swing_c=6.0, noise_c=0.6)
    ambient = ambient - 3.0 * (1.0 - trans) * (ghi > 0)  # clouds cool the afternoon
    d = chat_sessions(rng, n, step_s, sessions_per_h=0.3, background_tps=40.0, background_jobs_per_h=2.0)
    bw = link_bandwidth(rng, n, step_s, mean_mbps=float(rng.uniform(2.0, 10.0)), variability=0.7,
                        outages_per_h=2.0, outage_mean_s=60.0)
    params = dict(duration_h=duration_h, step_s=step_s, storage=storage, panel_area_m2=panel_area_m2,
                  panel_efficiency=panel_efficiency, latitude_deg=latitude_deg,
                  day_of_year=day_of_year, cloudiness=cloudiness, start_hour=start_hour)
    return make_trace(
        name or f"solar-s{seed}",
        _meta("solar_node", seed, unit, capacity_wh=capacity_wh, initial_soc=initial_soc,
              device_kind="solar-node", params=params,
              notes=f"{storage} storage; clear-sky Haurwitz x Markov clouds x panel"),
        t, supply_w=supply, plugged=(supply > 0).astype(float), ambient_c=ambient,
        demand_tps=d.demand_tps, bandwidth_mbps=bw, base_load_w=0.3,
    )


def must_last_until(
    seed: int,
    *,
    name: str | None = None,
    unit: str | None = None,
    duration_h: float | None = None,
    deadline_h: float | None = None,
    step_s: float = 10.0,
    capacity_wh: float | None = None,
    initial_soc: float | None = None,
    budget_w: float | None = None,
    with_budget: bool | None = None,
    start_hour: float | None = None,
) -> Trace:
    """"Must last until T": a phone with a low battery, no charger, and a deadline (maybe a budget).

    Args:
        seed: RNG seed.
        name, unit: As for :func:`phone_on_battery` (default name ``deadline-s<seed>``).
        duration_h: Length, h; default U(3, 5).
        deadline_h: The device must still run at this time; default = duration_h
            (``meta.deadline_s``).
        step_s: Grid step, s.
        capacity_wh: Battery, Wh; default U(11, 17).
        initial_soc: Start SoC; default U(0.2, 0.45) (the battery is tight on purpose).
        budget_w: User power budget for the LLM, W, written to ``budget_w``; default U(0.8, 2.5)
            when a budget is used.
        with_budget: Whether the trace carries a budget; default p=0.5.
        start_hour: Local hour at t=0; default U(14, 20) (afternoon: last until the evening).

    Demand: 1.5-3 chat sessions/h; base load 0.35 W + 1.2 W active; link as a phone's.
    """
    rng = np.random.default_rng(seed)
    duration_h = _pick(rng, duration_h, 3.0, 5.0)
    deadline_h = duration_h if deadline_h is None else float(deadline_h)
    capacity_wh = _pick(rng, capacity_wh, 11.0, 17.0)
    initial_soc = _pick(rng, initial_soc, 0.2, 0.45)
    budget_w = _pick(rng, budget_w, 0.8, 2.5)
    use_budget = bool(rng.uniform() < 0.5) if with_budget is None else with_budget
    start_hour = _pick(rng, start_hour, 14.0, 20.0)
    t = _grid(duration_h, step_s)
    n = t.size
    d = chat_sessions(rng, n, step_s, sessions_per_h=float(rng.uniform(1.5, 3.0)))
    ambient = ambient_profile(rng, t, start_hour=start_hour, mean_c=float(rng.uniform(18, 26)), swing_c=4.0)
    bw = link_bandwidth(rng, n, step_s, mean_mbps=float(rng.uniform(5, 40)), variability=0.6,
                        outages_per_h=1.0, outage_mean_s=20.0)
    params = dict(duration_h=duration_h, deadline_h=deadline_h, step_s=step_s,
                  budget_w=budget_w if use_budget else None, start_hour=start_hour)
    return make_trace(
        name or f"deadline-s{seed}",
        _meta("must_last_until", seed, unit, capacity_wh=capacity_wh, initial_soc=initial_soc,
              device_kind="phone", params=params, deadline_s=deadline_h * 3600.0,
              notes="no charger; the device must still run at deadline_s"),
        t, supply_w=0.0, plugged=0.0, ambient_c=ambient, demand_tps=d.demand_tps,
        bandwidth_mbps=bw, budget_w=budget_w if use_budget else None,
        base_load_w=0.35 + 1.2 * d.active_frac,
    )


def heat_wave(
    seed: int,
    *,
    name: str | None = None,
    unit: str | None = None,
    device_kind: str | None = None,
    duration_h: float | None = None,
    step_s: float = 10.0,
    peak_c: float | None = None,
    start_hour: float | None = None,
    sun_exposure_per_h: float = 1.0,
) -> Trace:
    """A hot afternoon: ambient climbs towards ``peak_c``; spells in direct sun add 4-8 deg C.

    Args:
        seed: RNG seed.
        name, unit: As for :func:`phone_on_battery` (default name ``heat-s<seed>``).
        device_kind: ``"phone"`` or ``"laptop"``; default phone with p=0.6.
        duration_h: Length, h; default U(3, 4).
        step_s: Grid step, s.
        peak_c: Afternoon peak, deg C; default U(36, 44).
        start_hour: Local hour at t=0; default U(11, 13).
        sun_exposure_per_h: Sun spells per hour (each ~10 min, +U(4, 8) deg C).

    Ambient: diurnal model with mean ``peak_c - 6`` and swing 6 deg C peaking at 15:30, plus sun
    spells. Phone: battery 11-19 Wh, no charger; laptop: 40-70 Wh, plugged half the time (65 W).
    """
    rng = np.random.default_rng(seed)
    kind = device_kind or ("phone" if rng.uniform() < 0.6 else "laptop")
    duration_h = _pick(rng, duration_h, 3.0, 4.0)
    peak_c = _pick(rng, peak_c, 36.0, 44.0)
    start_hour = _pick(rng, start_hour, 11.0, 13.0)
    t = _grid(duration_h, step_s)
    n = t.size
    ambient = ambient_profile(rng, t, start_hour=start_hour, mean_c=peak_c - 6.0, swing_c=6.0,
                              noise_c=0.5, peak_hour=15.5)
    sun = _alternating(rng, n, step_s, False, 600.0, 3600.0 / max(sun_exposure_per_h, 1e-6))
    ambient = ambient + sun * float(rng.uniform(4.0, 8.0))
    if kind == "phone":
        capacity_wh, idle_w, active_w = float(rng.uniform(11, 19)), 0.35, 1.2
        plugged = np.zeros(n)
        charger_w = 0.0
        bw_mean = float(rng.uniform(5, 40))
    else:
        capacity_wh, idle_w, active_w = float(rng.uniform(40, 70)), 4.0, 5.0
        plugged = plug_schedule(rng, n, step_s, start_plugged=True, plugged_mean_s=3600.0,
                                unplugged_mean_s=3600.0)
        charger_w = 65.0
        bw_mean = float(rng.uniform(20, 100))
    initial_soc = float(rng.uniform(0.5, 1.0))
    d = chat_sessions(rng, n, step_s, sessions_per_h=float(rng.uniform(1.0, 2.5)),
                      background_tps=50.0, background_jobs_per_h=0.5)
    bw = link_bandwidth(rng, n, step_s, mean_mbps=bw_mean, variability=0.5, outages_per_h=0.5)
    params = dict(duration_h=duration_h, step_s=step_s, peak_c=peak_c, start_hour=start_hour,
                  sun_exposure_per_h=sun_exposure_per_h)
    return make_trace(
        name or f"heat-s{seed}",
        _meta("heat_wave", seed, unit, capacity_wh=capacity_wh, initial_soc=initial_soc,
              device_kind=kind, params=params, notes="heat wave: ambient up to peak_c + sun spells"),
        t, supply_w=plugged * charger_w, plugged=plugged, ambient_c=ambient,
        demand_tps=d.demand_tps, bandwidth_mbps=bw, base_load_w=idle_w + active_w * d.active_frac,
    )


def flaky_link(
    seed: int,
    *,
    name: str | None = None,
    unit: str | None = None,
    device_kind: str | None = None,
    duration_h: float | None = None,
    step_s: float = 10.0,
    mean_mbps: float | None = None,
    outages_per_h: float | None = None,
    outage_mean_s: float | None = None,
) -> Trace:
    """A link with frequent outages (tunnels, lifts, a train): for the edge/cloud split policy.

    Args:
        seed: RNG seed.
        name, unit: As for :func:`phone_on_battery` (default name ``link-s<seed>``).
        device_kind: ``"phone"`` or ``"laptop"``; default phone with p=0.7.
        duration_h: Length, h; default U(1.5, 3).
        step_s: Grid step, s.
        mean_mbps: Mean capacity when up; default U(2, 30) Mbit/s, variability 0.9.
        outages_per_h: Default U(3, 10).
        outage_mean_s: Default U(20, 180) s.

    Otherwise like :func:`phone_on_battery` (phone) or :func:`laptop_plug_cycles` (laptop).
    """
    rng = np.random.default_rng(seed)
    kind = device_kind or ("phone" if rng.uniform() < 0.7 else "laptop")
    duration_h = _pick(rng, duration_h, 1.5, 3.0)
    mean_mbps = _pick(rng, mean_mbps, 2.0, 30.0)
    outages_per_h = _pick(rng, outages_per_h, 3.0, 10.0)
    outage_mean_s = _pick(rng, outage_mean_s, 20.0, 180.0)
    t = _grid(duration_h, step_s)
    n = t.size
    if kind == "phone":
        capacity_wh, idle_w, active_w, charger_w = float(rng.uniform(11, 19)), 0.35, 1.2, 15.0
        plugged = np.zeros(n)
    else:
        capacity_wh, idle_w, active_w, charger_w = float(rng.uniform(40, 70)), 4.0, 5.0, 65.0
        plugged = plug_schedule(rng, n, step_s, start_plugged=False, plugged_mean_s=2400.0,
                                unplugged_mean_s=4800.0)
    initial_soc = float(rng.uniform(0.4, 1.0))
    ambient = ambient_profile(rng, t, start_hour=float(rng.uniform(7, 20)),
                              mean_c=float(rng.uniform(15, 28)), swing_c=3.0)
    d = chat_sessions(rng, n, step_s, sessions_per_h=float(rng.uniform(1.5, 3.0)),
                      background_tps=30.0, background_jobs_per_h=0.5)
    bw = link_bandwidth(rng, n, step_s, mean_mbps=mean_mbps, variability=0.9,
                        outages_per_h=outages_per_h, outage_mean_s=outage_mean_s)
    params = dict(duration_h=duration_h, step_s=step_s, mean_mbps=mean_mbps,
                  outages_per_h=outages_per_h, outage_mean_s=outage_mean_s)
    return make_trace(
        name or f"link-s{seed}",
        _meta("flaky_link", seed, unit, capacity_wh=capacity_wh, initial_soc=initial_soc,
              device_kind=kind, params=params, notes="frequent link outages"),
        t, supply_w=plugged * charger_w, plugged=plugged, ambient_c=ambient,
        demand_tps=d.demand_tps, bandwidth_mbps=bw, base_load_w=idle_w + active_w * d.active_frac,
    )


#: Scenario name -> generator function.
SCENARIOS: dict[str, Callable[..., Trace]] = {
    "phone_on_battery": phone_on_battery,
    "laptop_plug_cycles": laptop_plug_cycles,
    "solar_node": solar_node,
    "must_last_until": must_last_until,
    "heat_wave": heat_wave,
    "flaky_link": flaky_link,
}

#: Default set: scenario -> (short prefix, number of traces). One synthetic unit per trace.
DEFAULT_SET_PLAN: dict[str, tuple[str, int]] = {
    "phone_on_battery": ("phone", 8),
    "laptop_plug_cycles": ("laptop", 6),
    "solar_node": ("solar", 6),
    "must_last_until": ("deadline", 6),
    "heat_wave": ("heat", 4),
    "flaky_link": ("link", 5),
}
DEFAULT_SET_SEED = 2024


def default_set_traces(base_seed: int = DEFAULT_SET_SEED, extra: int = 0) -> list[Trace]:
    """The traces of the default set: for scenario k and index i, seed = base_seed*1000 + 100k + i.

    ``extra`` more traces per scenario continue each scenario's index (``phone-08``, ...) with the same seed rule,
    so the first traces are those of the default set, byte for byte (``traces.generate --extra-val``)."""
    most = 100 - max(c for _, c in DEFAULT_SET_PLAN.values())  # the seed rule gives each scenario 100 indices
    if not 0 <= extra <= most:
        raise ValueError(f"extra={extra}: 0 to {most} more traces per scenario (the seed rule gives each scenario "
                         f"100 indices)")
    out: list[Trace] = []
    for k, (scenario, (prefix, count)) in enumerate(DEFAULT_SET_PLAN.items()):
        fn = SCENARIOS[scenario]
        for i in range(count + extra):
            seed = base_seed * 1000 + 100 * k + i
            out.append(fn(seed, name=f"{prefix}-{i:02d}", unit=f"gen-{prefix}-{i:02d}"))
    return out
