"""Linux ``/sys/class/power_supply/BAT*`` logs -> laptop traces.

Accepted input: CSV with or without a header, optionally gzipped, or a folder of them.

* Without a header (e.g. simple-battery-log): ``unix_time,status,energy_full_design,energy_now``
  (uWh). Other header-less layouts are read by content: the first numeric column is time, the
  text column is status, the remaining numeric columns are ``energy_full_design``,
  (``energy_full``,) ``energy_now`` in that order.
* With a header: any of ``time|unix_time|timestamp``, ``status``, ``energy_now``, ``energy_full``,
  ``energy_full_design``, ``power_now``, ``charge_now``, ``charge_full``, ``voltage_now``,
  ``current_now``, ``capacity`` (the ``POWER_SUPPLY_`` prefix and case are ignored).

Units follow sysfs (uWh, uAh, uW, uV, uA); values small enough to be Wh/mWh are recognised by
size. Derivation:

* Energy ``E`` (Wh) = ``energy_now``, else ``charge_now x voltage_now``, else ``capacity% x full``.
* ``capacity_wh`` = ``energy_full`` (the worn battery's real capacity) if present, else
  ``energy_full_design``; ``initial_soc = E[0] / capacity``.
* Battery power = ``-dE/dt`` between samples (``power_now`` when logged), smoothed with a centred
  moving average over ``smooth_samples`` samples because ``energy_now`` is quantised (10 mWh
  steps = 0.6 W at 1 min).
* ``plugged`` = status Charging / Full / Not charging; Discharging = 0; Unknown -> rising energy.
* ``base_load_w`` = discharge power while unplugged; while plugged, the median discharge power of
  the whole log (the laptop's typical draw). ``supply_w`` while plugged = charge power + that base
  load (the charger power actually drawn); 0 unplugged.
* The log has no temperature, usage or network: ``ambient_c`` = 22 deg C (indoor), demand =
  seeded :func:`traces.demand.chat_sessions` (seed from the file name, in meta),
  ``bandwidth_mbps`` = 50 (nominal Wi-Fi; ``build_real`` attaches measured traces).
* Gaps longer than ``max_gap_s`` (suspend, power-off) split the log into segments: one trace each.
* Impossible raw values are **rejected** (:class:`ImportFormatError` naming the file, line, column,
  value and fix), never silently imported: a negative energy, or an energy above
  ``1.5 x`` the full capacity (``energy_full``/``design``; without one, above 500 Wh). One
  ``energy_now=1e30`` row would otherwise become a 1e25 W base load, and ``-5`` a 2400 W spike.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from traces.demand import chat_sessions
from traces.importers._common import (
    ImportFormatError,
    clean_order,
    device_side_power,
    find_column,
    list_files,
    looks_numeric,
    moving_average,
    parse_times,
    read_table,
    segments_at_gaps,
    slug,
    stable_seed,
    stem_of,
)
from traces.schema import Trace, TraceMeta, make_trace

INDOOR_AMBIENT_C = 22.0
NOMINAL_WIFI_MBPS = 50.0
#: A logged energy above this multiple of the full capacity is a glitch (worn-battery slack included).
MAX_ENERGY_OVER_FULL = 1.5
#: Without a logged full capacity: no laptop battery holds more than this, Wh.
MAX_BATTERY_WH = 500.0
_PLUGGED_WORDS = {"charging": 1.0, "full": 1.0, "not charging": 1.0, "discharging": 0.0}


def _to_wh(x: np.ndarray) -> np.ndarray:
    """uWh (sysfs) -> Wh; mWh and Wh recognised by size (a device battery is < 500 Wh)."""
    med = np.nanmedian(np.abs(x)) if np.isfinite(x).any() else 0.0
    if med > 5e5:
        return x / 1e6
    if med > 500:
        return x / 1e3
    return x


def import_linux_power_supply(
    path: str | Path,
    *,
    max_gap_s: float = 900.0,
    min_duration_s: float = 600.0,
    smooth_samples: int = 5,
    device_kind: str = "laptop",
    license: str = "see source",
    unit: str | None = None,
    seed: int | None = None,
) -> list[Trace]:
    """Imports power_supply logs (see module docstring).

    Args:
        path: Log file or folder.
        max_gap_s: Split at gaps longer than this (default 15 min).
        min_duration_s: Drop segments shorter than this.
        smooth_samples: Moving-average width for the power derived from energy.
        device_kind: Meta device kind.
        license: License string for meta.
        unit: Split unit override (default: ``<parent folder>-<file stem>``).
        seed: Demand seed (default: from the file name).

    Returns:
        One trace per gap-free segment.
    """
    out: list[Trace] = []
    for f in list_files(Path(path)):
        out.extend(_import_one(f, max_gap_s=max_gap_s, min_duration_s=min_duration_s,
                               smooth_samples=smooth_samples, device_kind=device_kind,
                               license=license, unit=unit, seed=seed))
    return out


def _columns(f: Path) -> dict[str, np.ndarray | list[str]]:
    tab = read_table(f)
    cols: dict[str, np.ndarray | list[str]] = {"_line": np.array(tab.line_nos, dtype=np.int64)}
    if tab.header:
        h = [c.lower().replace("power_supply_", "") for c in tab.header]
        names = {
            "time": ["time", "unix_time", "timestamp", "date", "epoch"],
            "status": ["status"],
            "energy_now": ["energy_now"], "energy_full": ["energy_full"],
            "energy_full_design": ["energy_full_design"], "power_now": ["power_now"],
            "charge_now": ["charge_now"], "charge_full": ["charge_full"],
            "charge_full_design": ["charge_full_design"], "voltage_now": ["voltage_now"],
            "current_now": ["current_now"], "capacity": ["capacity", "percent"],
        }
        for key, aliases in names.items():
            i = find_column(h, aliases)
            if i is None:
                continue
            cols[key] = tab.col(i) if key in ("time", "status") else tab.floats(i)
    else:
        if not tab.rows:
            raise ImportFormatError(f"{f.name}: empty")
        width = max(len(r) for r in tab.rows[:50])
        sample = tab.rows[: min(50, len(tab.rows))]
        text_cols = [i for i in range(width)
                     if sum(not looks_numeric(r[i]) for r in sample if i < len(r)) > len(sample) // 2]
        num_cols = [i for i in range(width) if i not in text_cols]
        if not num_cols:
            raise ImportFormatError(f"{f.name} line {tab.line_nos[0]}: no numeric columns; fix: expected "
                                    "unix_time,status,energy_full_design,energy_now")
        cols["time"] = tab.col(num_cols[0])
        if text_cols:
            cols["status"] = tab.col(text_cols[0])
        rest = num_cols[1:]
        if len(rest) == 1:
            cols["energy_now"] = tab.floats(rest[0])
        elif len(rest) == 2:
            cols["energy_full_design"], cols["energy_now"] = tab.floats(rest[0]), tab.floats(rest[1])
        elif len(rest) >= 3:
            cols["energy_full_design"] = tab.floats(rest[0])
            cols["energy_full"] = tab.floats(rest[1])
            cols["energy_now"] = tab.floats(rest[2])
    return cols


def _reject_impossible(f: Path, line_nos: np.ndarray, column: str, raw: np.ndarray, energy_wh: np.ndarray,
                       full_wh: float | None) -> None:
    """Raises on the first negative or above-capacity energy (file, line, column, value, fix)."""
    if full_wh is not None and not (math.isfinite(full_wh) and 0 < full_wh <= MAX_BATTERY_WH):
        raise ImportFormatError(f"{f.name}: full capacity {full_wh:g} Wh is impossible for a laptop battery; "
                                f"fix: check the energy_full / energy_full_design columns (uWh)")
    limit = MAX_ENERGY_OVER_FULL * full_wh if full_wh else MAX_BATTERY_WH
    with np.errstate(invalid="ignore"):
        bad = (raw < 0) | (energy_wh < 0) | (energy_wh > limit)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        what = ("is negative" if raw[i] < 0 or energy_wh[i] < 0 else
                f"is {energy_wh[i]:.4g} Wh, above {limit:g} Wh ("
                + (f"{MAX_ENERGY_OVER_FULL:g} x the {full_wh:g} Wh full capacity)" if full_wh else
                   "no laptop battery holds more)"))
        raise ImportFormatError(
            f"{f.name} line {int(line_nos[i])}: {column} {raw[i]:g} {what}; "
            f"fix: delete or repair that row (a logger glitch), or check the unit (sysfs logs uWh)")


def _import_one(f: Path, *, max_gap_s: float, min_duration_s: float, smooth_samples: int,
                device_kind: str, license: str, unit: str | None, seed: int | None) -> list[Trace]:
    cols = _columns(f)
    if "time" not in cols:
        raise ImportFormatError(f"{f.name} line 1: no time column; fix: add unix_time (s)")
    t_raw, _ = parse_times(list(cols["time"]))  # type: ignore[arg-type]
    n = t_raw.size
    nan = np.full(n, np.nan)

    def num(key: str) -> np.ndarray:
        v = cols.get(key)
        return np.asarray(v, dtype=np.float64) if v is not None else nan.copy()

    status = [s.strip().lower() for s in cols.get("status", [""] * n)]  # type: ignore[union-attr]
    plug_raw = np.array([_PLUGGED_WORDS.get(s, math.nan) for s in status])
    e_full = _to_wh(num("energy_full"))
    e_design = _to_wh(num("energy_full_design"))
    energy = _to_wh(num("energy_now"))
    source_col, raw_energy = "energy_now", num("energy_now")
    volt_v = num("voltage_now") / 1e6
    if not np.isfinite(energy).any() and np.isfinite(num("charge_now")).any():
        energy = num("charge_now") / 1e6 * volt_v  # uAh x V = uWh/1e6 -> Wh
        e_full = num("charge_full") / 1e6 * volt_v
        e_design = num("charge_full_design") / 1e6 * volt_v
        source_col, raw_energy = "charge_now", num("charge_now")
    cap_candidates = [x for x in (e_full, e_design) if np.isfinite(x).any()]
    if not np.isfinite(energy).any() and np.isfinite(num("capacity")).any() and cap_candidates:
        energy = num("capacity") / 100.0 * np.nanmedian(cap_candidates[0])
        source_col, raw_energy = "capacity", num("capacity")
    _reject_impossible(f, cols["_line"], source_col, raw_energy, energy,  # type: ignore[arg-type]
                       float(np.nanmedian(cap_candidates[0])) if cap_candidates else None)
    if not np.isfinite(energy).any():
        raise ImportFormatError(f"{f.name}: no energy_now / charge_now / capacity values; fix: log "
                                "energy_now (uWh) from /sys/class/power_supply/BAT0")
    power_now = num("power_now")
    power_now = np.abs(power_now) / 1e6 if np.isfinite(power_now).any() else power_now
    if not np.isfinite(power_now).any() and np.isfinite(num("current_now")).any():
        power_now = np.abs(num("current_now")) / 1e6 * volt_v

    t_raw = np.where(np.isfinite(energy), t_raw, np.nan)
    t, (energy, plug_raw, e_full, e_design, power_now), _ = clean_order(
        t_raw, energy, plug_raw, e_full, e_design, power_now, source=f.name)
    if t.size < 2:
        return []
    cap = float(np.nanmedian(e_full)) if np.isfinite(e_full).any() else (
        float(np.nanmedian(e_design)) if np.isfinite(e_design).any() else float(np.nanmax(energy)))
    unit_id = unit or slug(f"{f.parent.name}-{stem_of(f)}")
    base_seed = seed if seed is not None else stable_seed("linux", f.name)

    # Log-wide typical discharge power (for the plugged periods' base load).
    dt_all = np.diff(t)
    p_all = -np.diff(energy) * 3600.0 / dt_all
    unpl = (plug_raw[:-1] == 0.0) & (dt_all <= max_gap_s)
    typical_w = float(np.median(p_all[unpl])) if unpl.any() else 8.0
    typical_w = max(typical_w, 0.5)

    traces: list[Trace] = []
    segs = segments_at_gaps(t, max_gap_s)
    for k, sg in enumerate(segs):
        ts, e = t[sg], energy[sg]
        if ts.size < 3 or ts[-1] - ts[0] < min_duration_s:
            continue
        dt = np.diff(ts)
        p = -np.diff(e) * 3600.0 / dt  # W, + discharging
        p = np.append(p, p[-1])
        pn = power_now[sg]
        if np.isfinite(pn).mean() > 0.5:
            sign = np.where(np.append(np.diff(e), 0.0) > 0, -1.0, 1.0)
            p = np.where(np.isfinite(pn), pn * sign, p)
        else:
            p = moving_average(p, smooth_samples)
        pr = plug_raw[sg]
        plugged = np.where(np.isfinite(pr), pr, (p < 0).astype(float))
        base, supply = device_side_power(device_kind, np.where(plugged < 0.5, np.maximum(p, 0.0), typical_w),
                                         np.maximum(-p, 0.0), plugged)
        m = ts.size
        hold = float(np.median(dt))
        s = base_seed + k
        demand = chat_sessions(np.random.default_rng(s), m, hold, background_tps=120.0,
                               background_jobs_per_h=1.5).demand_tps
        name = slug(f"{f.parent.name}-{stem_of(f)}") + (f"-seg{k}" if len(segs) > 1 else "")
        meta = TraceMeta(
            capacity_wh=round(cap, 4), initial_soc=float(np.clip(e[0] / cap, 0.0, 1.0)),
            device_kind=device_kind, source=f"linux-power-supply:{f.name}", license=license,
            unit=unit_id, seed=s,
            notes="power = -dE/dt of energy_now (smoothed); ambient 22 C assumed; demand seeded; "
                  "bandwidth nominal 50 Mbit/s",
            extra={"file": f.name, "segment": k, "typical_discharge_w": round(typical_w, 3),
                   "clock_hour_start": round(float((ts[0] % 86400) / 3600.0), 3)},
        )
        traces.append(make_trace(
            name, meta, ts - ts[0], supply_w=supply, plugged=plugged, ambient_c=INDOOR_AMBIENT_C,
            demand_tps=demand, bandwidth_mbps=NOMINAL_WIFI_MBPS, base_load_w=base,
            soc_frac=np.clip(e / cap, 0.0, 1.0),
        ))
    return traces


__all__ = ["import_linux_power_supply"]
