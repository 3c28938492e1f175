"""Android battery logs -> traces (BatteryApp sessions, and ADB/dumpsys-style CSVs alike).

Accepted input: one CSV (optionally gzipped) per session with a header, or a folder of them.
Columns are found by name, case-insensitively (first alias present wins):

============== ====================================================== ==========================
meaning        aliases                                                unit handling
============== ====================================================== ==========================
time           Timestamp, timestamp, time, Time, date                 Unix ms / s / ISO / HH:MM:SS
level          level, Level, battery_level, capacity, soc             % (fraction if max <= 1)
temperature    temperature, Temp, temp, battery_temp                  deg C (0.1 deg C if > 100)
voltage        voltage, Voltage, voltage_now                          V (mV if > 100)
status         status, Status, charge_status, plugged                 BatteryManager code or text
cpu usage      usage, CPU_Sum_UserSys, cpu, cpu_usage                 % (0-100)
screen         isInteractive, Screen_State, screen, interactive       true/false, Awake/Dozing
connectivity   WiFi, Cellular (booleans) or WiFi_RSSI (dBm)
current        Current_uA, current_now, current                       uA / mA / A by name or size
user           ID, user                                               (else file-name prefix)
model          brandModel, model
============== ====================================================== ==========================

Derivation (documented in docs/traces.md):

* ``soc_frac`` = level / 100; ``initial_soc`` = first level.
* ``plugged`` = status in {2 charging, 4 not charging, 5 full} (or the words); without a status
  column, plugged where the level rises.
* Power from the level trajectory, for a stated capacity: the level is quantised to 1 %, so the
  rate is measured between *level ticks* (the samples where the level changes) within each run of
  constant plug state: ``rate = d level / d t`` between consecutive ticks, applied to the samples
  between them (before the first / after the last tick: the nearest interval's rate, capped at
  ``1 % / T`` where ``T`` is how long the level then stayed unchanged; a run of >= 10 min with
  fewer than 2 ticks: ``(|delta level| + 0.5 %) / run length``; shorter such runs: the session's
  median rate for the same plug state; a battery at 100 % is not charging). Android sometimes reports two
  ticks seconds apart, so the rate is smoothed by a centred 5-min moving average within each run.
  Then busy moments draw more: the discharge power is multiplied by the usage weight
  ``1 + cpu_util + 0.5 * screen_on`` divided by its own 5-min moving average (energy over the
  window unchanged). ``1 %/s`` of a ``C`` Wh battery = ``36 * C`` W.
  If a current column is present and numeric, ``|I| x V`` is used instead (a direct measurement).
* ``base_load_w`` (the phone's own consumption) = that discharge power while unplugged; while
  plugged, the session's median discharge power (or ``0.5 + 1.5 * cpu_util`` W when the session
  never discharges) weighted like above.
* ``supply_w`` while plugged = battery charge power (from the rising level) + the base load: the
  charger power the phone actually drew. Full / not charging: the base load. Unplugged: 0.
* ``ambient_c`` = the battery temperature **minus the phone's modelled self-heating**. The battery
  temperature is the *device* temperature (the only one these logs carry): warmer than the air
  because the phone's own load heats it. The env adds that load's heat again
  (``T∞ = T_amb + R_th·(idle + base + LLM)``), so the importer inverts the same first-order model:
  ``ambient = T_batt − R_th · lowpass_τ(base + idle)`` with the phone's ``R_th = 5 °C/W``,
  ``τ = 240 s`` and ``idle = 0.2 W`` (:data:`SELF_HEATING` is the env's own phone,
  ``runtime.dynamics.DEVICES["phone"]``, and the step is the env's ``thermal_step``). With the
  model off, the env then reproduces the logged battery temperature. Pass
  ``self_heating=None`` to keep the raw battery temperature.
* ``demand_tps`` = :func:`traces.demand.from_usage` (screen on + CPU usage) when those columns
  exist, else seeded :func:`traces.demand.chat_sessions` (seed from the file name, in meta).
* ``bandwidth_mbps`` = nominal link from connectivity flags: Wi-Fi 50, cellular 10, neither 0
  (offline); 20 when the log has no connectivity columns. ``build_real`` replaces the nominal rate
  by measured bandwidth traces (keeping 0 where the phone was offline).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from runtime.dynamics import DEVICES, DeviceConstants, thermal_step
from traces.demand import chat_sessions, from_usage
from traces.importers._common import (
    ImportFormatError,
    clean_order,
    device_side_power,
    ffill,
    find_column,
    list_files,
    moving_average,
    parse_bool,
    parse_times,
    read_table,
    segments_at_gaps,
    slug,
    stable_seed,
    stem_of,
    to_float,
)
from traces.schema import Trace, TraceMeta, make_trace

DEFAULT_PHONE_CAPACITY_WH = 15.0
NOMINAL_VOLTAGE_V = 3.85
WIFI_NOMINAL_MBPS = 50.0
CELLULAR_NOMINAL_MBPS = 10.0
UNKNOWN_LINK_MBPS = 20.0
#: Width of the centred moving average applied to the level-derived power, s.
SMOOTH_S = 300.0


#: The phone whose self-heating is removed: the env's own constants (one owner: ``runtime.dynamics``).
SELF_HEATING: DeviceConstants = DEVICES["phone"]


def self_heating_c(t_s: np.ndarray, power_w: np.ndarray, model: DeviceConstants) -> np.ndarray:
    """Temperature rise (°C) that ``power_w`` (held from each sample to the next) plus the idle
    power causes under ``model``, starting in steady state: the env's own ``thermal_step`` with
    a 0 °C ambient."""
    p = np.asarray(power_w, dtype=float) + model.idle_power_w
    out = np.empty(p.size)
    if p.size == 0:
        return out
    dt = np.diff(np.asarray(t_s, dtype=float), prepend=float(t_s[0]))
    y = model.r_th_c_per_w * p[0]
    for i in range(p.size):
        # the power of the previous sample held over dt heats towards R_th * p[i - 1]
        y = thermal_step(y, 0.0, p[i - 1] if i else p[0], dt[i], model.r_th_c_per_w, model.tau_s)
        out[i] = y
    return out

#: Nominal battery capacity (mAh) of phone models seen in public logs, from vendors' spec sheets
#: (approximate; x 3.85 V nominal). Keys are matched as substrings of the lower-cased model name.
PHONE_CAPACITY_MAH: dict[str, float] = {
    "redmi note 9s": 5020, "redmi note 8t": 4000, "redmi note 7": 4000, "redmi note 5": 4000,
    "mi 9 lite": 4030, "mi 9t": 4000, "mi 9 se": 3070, "mi a2": 3000,
    "sm-a520f": 3000, "sm-a307fn": 4000, "sm-a415f": 3500, "ta-1021": 3000,
    "nexus 5x": 2700, "vtr-l29": 3200, "ac2003": 4115,
}

_STATUS_PLUGGED = {"2": 1.0, "4": 1.0, "5": 1.0, "3": 0.0, "1": math.nan}
_STATUS_WORDS = {"charging": 1.0, "full": 1.0, "not charging": 1.0, "notcharging": 1.0,
                 "discharging": 0.0, "unknown": math.nan}


def capacity_for_model(model: str | None) -> tuple[float, str]:
    """(capacity Wh, how it was chosen) for a phone model name."""
    if model:
        low = model.lower()
        for key in sorted(PHONE_CAPACITY_MAH, key=len, reverse=True):
            if key in low:
                return PHONE_CAPACITY_MAH[key] * NOMINAL_VOLTAGE_V / 1000.0, f"model table ({key})"
    return DEFAULT_PHONE_CAPACITY_WH, "default"


def _status_to_plugged(cells: list[str]) -> np.ndarray:
    out = np.full(len(cells), np.nan)
    for i, c in enumerate(cells):
        low = c.strip().lower()
        if low in _STATUS_WORDS:
            out[i] = _STATUS_WORDS[low]
            continue
        v = to_float(low)
        if math.isfinite(v):
            out[i] = _STATUS_PLUGGED.get(str(int(v)), math.nan)
        elif low in ("true", "ac", "usb", "wireless"):
            out[i] = 1.0
        elif low in ("false", "none"):
            out[i] = 0.0
    return out


def _tick_rates(t: np.ndarray, level: np.ndarray, runs: list[slice], hold: np.ndarray) -> np.ndarray:
    """Level rate (%/s) per sample from level ticks, per run of constant plug state.

    Before the first / after the last tick the level stayed constant for ``T`` seconds, so the
    nearest interval's rate is capped at ``1 % / T``. Runs shorter than 10 min without two ticks
    get NaN (filled by the caller with the session's typical rate for that plug state). A battery
    at 100 % is not charging.
    """
    rate = np.full(t.size, np.nan)
    for r in runs:
        tt, lv = t[r], level[r]
        n = tt.size
        span = float(np.sum(hold[r]))
        ticks = np.flatnonzero(np.diff(lv) != 0) + 1
        if ticks.size < 2:
            if span >= 600.0:
                d = lv[-1] - lv[0]
                sign = np.sign(d) if d != 0 else -1.0
                rate[r] = (d + 0.5 * sign) / span
            continue
        seg_rate = np.diff(lv[ticks]) / np.maximum(np.diff(tt[ticks]), 1e-9)
        idx = np.clip(np.searchsorted(ticks, np.arange(n), side="right") - 1, 0, seg_rate.size - 1)
        local = seg_rate[idx]
        pre = np.arange(n) < ticks[0]
        post = np.arange(n) >= ticks[-1]
        t_pre = max(tt[ticks[0]] - tt[0], 1.0)
        t_post = max(tt[-1] + hold[r][-1] - tt[ticks[-1]], 1.0)
        local[pre] = np.sign(local[pre]) * np.minimum(np.abs(local[pre]), 1.0 / t_pre)
        local[post] = np.sign(local[post]) * np.minimum(np.abs(local[post]), 1.0 / t_post)
        rate[r] = local
    rate[(level >= 100.0) & (rate > 0)] = 0.0
    return rate


def _fill_by_state(rate: np.ndarray, plugged: np.ndarray) -> np.ndarray:
    """Fills NaN rates with the median rate of the same plug state (0 if none)."""
    out = rate.copy()
    for state in (0.0, 1.0):
        m = plugged == state
        fin = m & np.isfinite(rate)
        fill = float(np.median(rate[fin])) if fin.any() else 0.0
        out[m & ~np.isfinite(rate)] = fill
    out[~np.isfinite(out)] = 0.0
    return out


def import_android_batteryapp(
    path: str | Path,
    *,
    capacity_wh: float | None = None,
    min_duration_s: float = 600.0,
    max_gap_s: float = 600.0,
    license: str = "see source",
    unit: str | None = None,
    seed: int | None = None,
    self_heating: DeviceConstants | None = SELF_HEATING,
) -> list[Trace]:
    """Imports Android battery session CSV(s) (see module docstring for columns and rules).

    Args:
        path: A session file or a folder of them (``*.csv``, ``*.csv.gz``, recursive).
        capacity_wh: Stated battery capacity; default: model table, else 15 Wh.
        min_duration_s: Drop sessions (or gap-separated segments) shorter than this.
        max_gap_s: Split a session where samples are further apart than this.
        license: License string for meta (``build_real`` reads it from PROVENANCE.md).
        unit: Split unit override (default: the user id column, else the file-name prefix).
        seed: Demand seed when the log has no usage columns (default: from the file name).
        self_heating: Thermal model whose self-heating is removed from the battery temperature to
            estimate the ambient (module docstring); ``None`` keeps the raw battery temperature.

    Returns:
        One trace per session segment, sorted by file name.

    Raises:
        ImportFormatError: a file lacks a time or level column (message names file and fix).
    """
    out: list[Trace] = []
    for f in list_files(Path(path), ("*.csv", "*.csv.gz", "*.CSV")):
        out.extend(_import_one(f, capacity_wh=capacity_wh, min_duration_s=min_duration_s,
                               max_gap_s=max_gap_s, license=license, unit=unit, seed=seed,
                               self_heating=self_heating))
    return out


def _import_one(f: Path, *, capacity_wh: float | None, min_duration_s: float, max_gap_s: float,
                license: str, unit: str | None, seed: int | None,
                self_heating: DeviceConstants | None = SELF_HEATING) -> list[Trace]:
    tab = read_table(f, header=True)
    h = tab.header or []
    i_time = find_column(h, ["Timestamp", "timestamp_ms", "time", "datetime", "date", "ts"])
    i_level = find_column(h, ["level", "battery_level", "batterylevel", "soc", "capacity", "percent"])
    if i_time is None or i_level is None:
        raise ImportFormatError(
            f"{f.name} line 1: no {'time' if i_time is None else 'level'} column in header {h[:8]}; "
            "fix: an Android battery log needs a time (Timestamp ms / ISO / HH:MM:SS) and a level (%) column"
        )
    i_temp = find_column(h, ["temperature", "temp", "battery_temp", "batt_temp"])
    i_volt = find_column(h, ["voltage", "voltage_now", "volt"])
    i_status = find_column(h, ["status", "charge_status", "charging_status", "plugged"])
    i_usage = find_column(h, ["usage", "cpu_sum_usersys", "cpu_usage", "cpu", "cpu_percent"])
    i_screen = find_column(h, ["isInteractive", "screen_state", "screen", "interactive", "screen_on"])
    i_wifi = find_column(h, ["WiFi", "wifi_connected"])
    i_rssi = find_column(h, ["WiFi_RSSI", "wifi_rssi", "rssi"])
    i_cell = find_column(h, ["Cellular", "mobile_data", "cellular_connected"])
    i_cur = find_column(h, ["Current_uA", "current_now", "current_ua", "current_ma", "current"])
    i_user = find_column(h, ["ID", "user", "user_id", "userid"])
    i_model = find_column(h, ["brandModel", "model", "device_model"])

    t_raw, time_kind = parse_times(tab.col(i_time))
    date_m = re.search(r"(20\d\d)(\d\d)(\d\d)", f.name)
    level = tab.floats(i_level)

    def col(i: int | None) -> np.ndarray:
        return tab.floats(i) if i is not None else np.full(len(tab.rows), np.nan)

    temp, volt, usage, cur = col(i_temp), col(i_volt), col(i_usage), col(i_cur)
    missing = np.full(len(tab.rows), np.nan)
    plugged_raw = _status_to_plugged(tab.col(i_status)) if i_status is not None else missing.copy()
    screen = parse_bool(tab.col(i_screen)) if i_screen is not None else missing.copy()
    wifi = parse_bool(tab.col(i_wifi)) if i_wifi is not None else missing.copy()
    if i_wifi is None and i_rssi is not None:
        rssi = col(i_rssi)
        wifi = np.where(np.isfinite(rssi), (rssi > -100.0) & (rssi < 0.0), np.nan).astype(float)
    cell = parse_bool(tab.col(i_cell)) if i_cell is not None else missing.copy()

    def first_cell(i: int | None) -> str | None:
        return tab.rows[0][i] if (i is not None and tab.rows and i < len(tab.rows[0])) else None

    user, model = first_cell(i_user), first_cell(i_model)

    # Rows without a level reading (e.g. 'N/A' lines) carry no information: drop them.
    t_raw = np.where(np.isfinite(level), t_raw, np.nan)
    t, cols, _ = clean_order(t_raw, level, temp, volt, usage, cur, plugged_raw, screen, wifi, cell,
                          source=f.name)
    level, temp, volt, usage, cur, plugged_raw, screen, wifi, cell = cols
    if t.size < 2:
        return []
    fin_level = level[np.isfinite(level)]
    # a fraction (0.57), not a dying phone's last percent (1 -> 0): BatteryManager's level is a whole percentage
    if np.nanmax(level) <= 1.0 and np.any(fin_level != np.round(fin_level)):
        level = level * 100.0
    fin_temp = temp[np.isfinite(temp)]
    if fin_temp.size and np.median(fin_temp) > 100.0:  # tenths of a degree (dumpsys)
        temp = temp / 10.0
    fin_v = volt[np.isfinite(volt)]
    if fin_v.size and np.median(fin_v) > 100.0:  # mV
        volt = volt / 1000.0

    if unit is None:
        if user:
            unit_id = "android-" + slug(user)[:16]
        else:
            m = re.match(r"([0-9a-f]{8,})[-_]", f.name)
            unit_id = "android-" + (m.group(1)[:16] if m else slug(stem_of(f)))
    else:
        unit_id = unit
    cap, cap_how = (capacity_wh, "stated") if capacity_wh else capacity_for_model(model)
    the_seed = seed if seed is not None else stable_seed("android", f.name)

    traces: list[Trace] = []
    segs = segments_at_gaps(t, max_gap_s)
    for k, sg in enumerate(segs):
        ts = t[sg]
        if ts[-1] - ts[0] < min_duration_s:
            continue
        name = slug(stem_of(f)) + (f"-seg{k}" if len(segs) > 1 else "")
        tr = _derive(ts, level[sg], temp[sg], volt[sg], usage[sg], cur[sg], plugged_raw[sg], screen[sg],
                     wifi[sg], cell[sg], capacity_wh=cap, seed=the_seed + k, name=name,
                     current_name=h[i_cur] if i_cur is not None else "", self_heating=self_heating)
        meta = TraceMeta(
            capacity_wh=round(cap, 4), initial_soc=float(np.clip(level[sg][0] / 100.0, 0.0, 1.0)),
            device_kind="phone", source=f"android-batteryapp:{f.name}", license=license, unit=unit_id,
            notes=("ambient_c is the battery temperature" if self_heating is None else
                   f"ambient_c is the battery temperature minus modelled self-heating "
                   f"(R_th {self_heating.r_th_c_per_w} C/W, tau {self_heating.tau_s:g} s, "
                   f"idle {self_heating.idle_power_w} W)")
                  + "; power from level ticks x capacity; "
                  + ("demand from usage signals" if tr[1] else "demand seeded (no usage columns)"),
            seed=None if tr[1] else the_seed + k,
            extra={"file": f.name, "model": model or "", "capacity_source": cap_how,
                   "time_kind": time_kind, "date_from_name": "-".join(date_m.groups()) if date_m else "",
                   "clock_hour_start": round(float((ts[0] % 86400) / 3600.0), 3)},
        )
        traces.append(tr[0].replace(meta=meta))
    return traces


def _derive(t: np.ndarray, level: np.ndarray, temp: np.ndarray, volt: np.ndarray, usage: np.ndarray,
            cur: np.ndarray, plugged_raw: np.ndarray, screen: np.ndarray, wifi: np.ndarray,
            cell: np.ndarray, *, capacity_wh: float, seed: int, name: str,
            current_name: str, smooth_s: float = SMOOTH_S,
            self_heating: DeviceConstants | None = SELF_HEATING) -> tuple[Trace, bool]:
    n = t.size
    hold = np.append(np.diff(t), np.median(np.diff(t)))
    level = ffill(level, 50.0)
    util = np.clip(ffill(usage, 0.0) / 100.0, 0.0, 1.0)
    has_usage = bool(np.isfinite(usage).any() or np.isfinite(screen).any())
    scr = ffill(screen, 1.0) if np.isfinite(screen).any() else np.ones(n)

    # Plug state: status column, else the level trend.
    if np.isfinite(plugged_raw).any():
        plugged = ffill(plugged_raw, 0.0)
        plug_source = "status"
    else:
        plugged = np.zeros(n)
        plug_source = "level trend"
    runs = [slice(int(a), int(b)) for a, b in _runs(plugged)]
    rate = _fill_by_state(_tick_rates(t, level, runs, hold), plugged)
    if plug_source == "level trend":
        plugged = (rate > 0).astype(float)
        runs = [slice(int(a), int(b)) for a, b in _runs(plugged)]
        rate = _fill_by_state(_tick_rates(t, level, runs, hold), plugged)

    # Direct current measurement beats the level estimate when present.
    cur_fin = cur[np.isfinite(cur)]
    volts = ffill(volt, NOMINAL_VOLTAGE_V)
    direct = None
    if cur_fin.size > 0.5 * n:
        low = current_name.lower()
        scale = 1e-6 if "ua" in low else 1e-3 if "ma" in low else (
            1e-6 if np.median(np.abs(cur_fin)) > 20000 else 1e-3 if np.median(np.abs(cur_fin)) > 20 else 1.0)
        direct = np.abs(ffill(cur, 0.0)) * scale * volts

    batt_w = rate * capacity_wh * 36.0  # + charging, - discharging
    # Tick intervals can be very short when Android reports two level changes close together;
    # a centred moving average over smooth_s (per plug run) keeps the rate physical.
    step = float(np.median(hold))
    k = max(1, int(round(smooth_s / step)))
    weight = 1.0 + util + 0.5 * scr
    batt_s = np.empty(n)
    w_norm = np.empty(n)
    for a, b in _runs(plugged):
        batt_s[a:b] = moving_average(batt_w[a:b], k)
        w_norm[a:b] = weight[a:b] / moving_average(weight[a:b], k)
    unplugged = plugged < 0.5
    if direct is not None:
        discharge = np.where(unplugged, direct, 0.0)
    else:
        # Busy moments draw more: modulate by the usage weight, normalised over the same window.
        discharge = np.where(unplugged, np.maximum(-batt_s, 0.0) * w_norm, 0.0)
    if unplugged.any() and np.sum(hold[unplugged]) > 0:
        typical = float(np.sum(discharge[unplugged] * hold[unplugged]) / np.sum(hold[unplugged]))
        base_plugged = typical * weight / np.mean(weight[unplugged])
    else:
        base_plugged = 0.5 + 1.5 * util
    measured = np.where(unplugged, discharge, base_plugged)
    charge_w = np.where(unplugged, 0.0, np.maximum(direct if direct is not None else batt_s, 0.0))
    base, supply = device_side_power("phone", measured, charge_w, plugged)

    if has_usage:
        demand = from_usage(util, scr)
    else:
        demand = chat_sessions(np.random.default_rng(seed), n, float(np.median(hold))).demand_tps
    if np.isfinite(wifi).any() or np.isfinite(cell).any():
        w = ffill(wifi, 0.0)
        c = ffill(cell, 0.0)
        bw = np.where(w > 0.5, WIFI_NOMINAL_MBPS, np.where(c > 0.5, CELLULAR_NOMINAL_MBPS, 0.0))
    else:
        bw = np.full(n, UNKNOWN_LINK_MBPS)
    ambient = ffill(temp, 25.0)
    if self_heating is not None:
        ambient = ambient - self_heating_c(t, base, self_heating)
    tr = make_trace(
        name, TraceMeta(capacity_wh, 0.5, "phone", "", "", "tmp"), t - t[0],
        supply_w=supply, plugged=plugged, ambient_c=ambient, demand_tps=demand, bandwidth_mbps=bw,
        base_load_w=base, soc_frac=np.clip(level / 100.0, 0.0, 1.0),
    )
    return tr, has_usage


def _runs(x: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) index pairs of constant-value runs."""
    if x.size == 0:
        return []
    cut = np.flatnonzero(np.diff(x) != 0) + 1
    b = np.concatenate([[0], cut, [x.size]])
    return list(zip(b[:-1].tolist(), b[1:].tolist()))


__all__ = ["PHONE_CAPACITY_MAH", "capacity_for_model", "import_android_batteryapp"]
