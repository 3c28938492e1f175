"""Solar sources -> solar-node traces: NSRDB-style irradiance series and PVDAQ PV power.

**Irradiance** (``nsrdb-irradiance``): ``index,value`` rows (header optional, e.g. ``,irrad``) or a
single value column; no timestamps. Values are irradiance in uW/cm^2 (1 W/m^2 = 100 uW/cm^2) when
the maximum exceeds 5000, else taken as W/m^2 already. The sample period is not in the file: it is
detected from the day/night rhythm (the median distance between the starts of the longest dark
runs = one day), snapped to 30 s / 1 / 5 / 10 / 15 / 30 / 60 min; pass ``sample_period_s`` to fix it
(NSRDB is hourly, EnHANTs 30 s). Each sample is the mean over its period (hold semantics), which is
exactly how the trace schema reads it. Index 0 is taken as local midnight.

**PV power** (``pvdaq``): CSV (or parquet when ``pyarrow`` is installed) with a timestamp column
and one of: an AC power column (``ac_power*``; kW when the name says ``kw``), a DC power column, or
an irradiance column (``poa``/``ghi``/``global horizontal``/``irradiance``, W/m^2). PV power is
*scaled* to a device panel: ``supply = P * peak_w / P_ref`` with ``P_ref`` the 99.5th percentile of
the system's positive output, so a 5 kW array becomes a ``peak_w`` (default 10 W) panel with the
same weather. Irradiance becomes ``W/m^2 x panel_area_m2 x panel_efficiency``. Negative readings
(inverter standby draw, sensor offsets at night) are clipped to 0; below the 0.05 W converter
cut-in the harvester gives 0. Gaps longer than ``max_gap_s`` split the series.

Both: ``plugged`` = 1 while the harvester delivers power; long records are cut into windows of
``window_h`` hours starting at midnight (``windows`` evenly spread over the record, 0 = all);
storage ``capacity_wh`` (default 10 Wh) at ``initial_soc`` (default 0.5); ``ambient_c`` from an
ambient-temperature column when the file has one, else a proxy: ``ambient_mean_c + 8 x (irradiance
smoothed over 3 h, lagged 2 h, / 1000 W/m^2) - 3``; demand seeded
:func:`traces.demand.chat_sessions` (background sensor-summary jobs 2/h at 40 tok/s + 0.3 chat
sessions/h; seed from the file name + window, in meta); ``bandwidth_mbps`` nominal 5 Mbit/s
(``build_real`` attaches measured traces); ``base_load_w`` = 0.3 W (idle single-board computer).
The split unit is the station / system (from the file name), never a window.
"""

from __future__ import annotations

import re
import warnings
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from traces.demand import chat_sessions
from traces.importers._common import (
    ImportFormatError,
    clean_order,
    ffill,
    find_column,
    list_files,
    moving_average,
    parse_times,
    read_table,
    segments_at_gaps,
    slug,
    stable_seed,
    stem_of,
    to_float,
)
from traces.schema import Trace, TraceMeta, make_trace

DEFAULT_PANEL_AREA_M2 = 0.05
DEFAULT_PANEL_EFFICIENCY = 0.18
DEFAULT_PEAK_W = 10.0
DEFAULT_NODE_CAPACITY_WH = 10.0
HARVEST_CUT_IN_W = 0.05
NODE_BASE_LOAD_W = 0.3
NODE_NOMINAL_MBPS = 5.0
_CANDIDATE_PERIODS_S = (30.0, 60.0, 300.0, 600.0, 900.0, 1800.0, 3600.0)


def detect_sample_period_s(values: np.ndarray) -> float | None:
    """Sample period from the day/night rhythm (None when no nights are visible)."""
    dark = values <= max(1e-9, 0.002 * float(np.nanmax(values)) if values.size else 0.0)
    if dark.sum() < 3 or (~dark).sum() < 3:
        return None
    edges = np.diff(np.concatenate([[0], dark.astype(np.int8), [0]]))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    lengths = ends - starts
    if starts.size < 3:
        return None
    # Nights are the longest dark runs: keep those at least half as long as the longest 20 %.
    thresh = 0.5 * np.percentile(lengths, 80)
    nights = starts[lengths >= max(thresh, 2)]
    if nights.size < 3:
        return None
    samples_per_day = float(np.median(np.diff(nights)))
    period = 86400.0 / samples_per_day
    return min(_CANDIDATE_PERIODS_S, key=lambda c: abs(np.log(c / period)))


def ambient_proxy(t_s: np.ndarray, irradiance_w_m2: np.ndarray, mean_c: float) -> np.ndarray:
    """Ambient proxy from irradiance (module docstring): warmer after sunny hours."""
    step = float(np.median(np.diff(t_s))) if t_s.size > 1 else 3600.0
    k = max(1, int(round(3 * 3600.0 / step)))
    lag = max(0, int(round(2 * 3600.0 / step)))
    sm = moving_average(irradiance_w_m2, k)
    lagged = np.concatenate([np.full(min(lag, sm.size), sm[0]), sm[: max(0, sm.size - lag)]])
    return mean_c + 8.0 * np.clip(lagged / 1000.0, 0.0, 1.5) - 3.0


def _node_trace(name: str, t: np.ndarray, supply: np.ndarray, ambient: np.ndarray, meta: TraceMeta,
                seed: int) -> Trace:
    supply = np.where(supply >= HARVEST_CUT_IN_W, supply, 0.0)
    step = float(np.median(np.diff(t)))
    d = chat_sessions(np.random.default_rng(seed), t.size, step, sessions_per_h=0.3,
                      background_tps=40.0, background_jobs_per_h=2.0)
    return make_trace(name, meta, t - t[0], supply_w=supply, plugged=(supply > 0).astype(float),
                      ambient_c=ambient, demand_tps=d.demand_tps, bandwidth_mbps=NODE_NOMINAL_MBPS,
                      base_load_w=NODE_BASE_LOAD_W)


def _window_starts(n: int, per_day: int, window: int, windows: int) -> list[int]:
    if n < window:
        return [0] if n >= max(2, per_day // 4) else []
    n_days = (n - window) // per_day
    if windows <= 0:
        return list(range(0, n - window + 1, window))
    if windows == 1:
        return [0]
    days = sorted({int(round(d)) for d in np.linspace(0, n_days, windows + 2)[1:-1]})
    return [d * per_day for d in days]


def import_irradiance(
    path: str | Path,
    *,
    panel_area_m2: float = DEFAULT_PANEL_AREA_M2,
    panel_efficiency: float = DEFAULT_PANEL_EFFICIENCY,
    sample_period_s: float | None = None,
    unit_scale: str | None = None,
    window_h: float = 48.0,
    windows: int = 4,
    capacity_wh: float = DEFAULT_NODE_CAPACITY_WH,
    initial_soc: float = 0.5,
    ambient_mean_c: float = 15.0,
    license: str = "see source",
    unit: str | None = None,
    seed: int | None = None,
) -> list[Trace]:
    """Imports hourly (or any-rate) irradiance series as solar-node traces (module docstring).

    Args:
        path: File or folder (``*.csv``, ``*.csv.gz``).
        panel_area_m2: Panel area.
        panel_efficiency: Panel + converter efficiency.
        sample_period_s: Sample period; default detected from day/night.
        unit_scale: ``"uW/cm2"`` or ``"W/m2"``; default by size.
        window_h: Window length, h.
        windows: Windows per file (evenly spread; 0 = all consecutive windows).
        capacity_wh: Node storage, Wh.
        initial_soc: Start SoC.
        ambient_mean_c: Mean of the ambient proxy, deg C.
        license: License for meta.
        unit: Split-unit override (default ``nsrdb-<station>`` from the file name).
        seed: Demand seed base (default from the file name).
    """
    out: list[Trace] = []
    for f in list_files(Path(path), ("*.csv", "*.csv.gz", "*.txt")):
        tab = read_table(f)
        width = max(len(r) for r in tab.rows[:20])
        vals = tab.floats(width - 1) if width >= 2 else tab.floats(0)
        vals = vals[np.isfinite(vals)]
        if vals.size < 24:
            raise ImportFormatError(f"{f.name}: only {vals.size} numeric irradiance values; fix: "
                                    "expected 'index,irradiance' rows")
        scale = unit_scale or ("uW/cm2" if np.max(vals) > 5000 else "W/m2")
        w_m2 = np.clip(vals / 100.0 if scale.lower().startswith("u") else vals, 0.0, None)
        period = sample_period_s or detect_sample_period_s(w_m2) or 3600.0
        per_day = max(1, int(round(86400.0 / period)))
        window = max(2, int(round(window_h * 3600.0 / period)))
        m = re.match(r"(\d{5,7})", f.name)
        station = m.group(1) if m else slug(stem_of(f))
        unit_id = unit or f"nsrdb-{station}"
        base_seed = seed if seed is not None else stable_seed("irradiance", f.name)
        for j, s0 in enumerate(_window_starts(w_m2.size, per_day, window, windows)):
            w = w_m2[s0:s0 + window]
            t = np.arange(w.size) * period
            day = s0 // per_day
            meta = TraceMeta(
                capacity_wh=capacity_wh, initial_soc=initial_soc, device_kind="solar-node",
                source=f"nsrdb-irradiance:{f.name}", license=license, unit=unit_id, seed=base_seed + j,
                notes=f"supply = irradiance x {panel_area_m2} m2 x {panel_efficiency}; ambient proxy; "
                      "demand seeded; bandwidth nominal",
                extra={"file": f.name, "station": station, "start_day_index": int(day),
                       "sample_period_s": period, "irradiance_unit": scale,
                       "panel_area_m2": panel_area_m2, "panel_efficiency": panel_efficiency},
            )
            out.append(_node_trace(f"{slug(unit_id)}-d{day:05d}", t, w * panel_area_m2 * panel_efficiency,
                                   ambient_proxy(t, w, ambient_mean_c), meta, base_seed + j))
    return out


#: Irradiance above this (W/m²) is taken as a sensor fault: the solar constant is 1361 W/m², and brief cloud-edge
#: enhancement on the ground stays below about 1,800 (the window is skipped, with a warning naming file and time).
MAX_IRRADIANCE_W_M2 = 1800.0

_POWER_COLS = ("ac_power", "acpower", "ac_power_kw", "dc_power", "power")
_IRR_COLS = ("poa_irradiance", "poa", "plane of array", "ghi", "global horizontal", "irradiance",
             "global cmp22", "global")
_AMBIENT_COLS = ("ambient_temp", "ambient temperature", "air_temp", "temp_air", "ambient")


def _read_frame(f: Path) -> tuple[list[str], list[list[str]] | None, dict[str, np.ndarray] | None]:
    if f.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq  # optional dependency, only for parquet
        except ImportError as exc:
            raise ImportFormatError(
                f"{f.name}: reading parquet needs pyarrow; fix: pip install pyarrow, or convert to CSV"
            ) from exc
        table = pq.read_table(f)
        cols = {}
        names = list(table.column_names)
        for nm in names:
            arr = table.column(nm).to_pylist()
            cols[nm] = arr
        return names, None, cols  # type: ignore[return-value]
    tab = read_table(f, header=True)
    return tab.header or [], tab.rows, None


def _unit_of_pv_file(f: Path) -> str:
    """Station/system id from a PVDAQ-style file name (resolution and measurement words dropped)."""
    stop = re.compile(r"^(\d+min|\d+s|ac|dc|power|poa|ghi|irradiance|module|temperature|weather|data|"
                      r"full|dst|\d{8})$", re.I)
    toks = re.split(r"[_\-\s]+", stem_of(f))
    keep = []
    for tok in toks:
        if stop.match(tok):
            break
        keep.append(tok)
    return "pvdaq-" + slug("-".join(keep) or stem_of(f))


def import_pvdaq(
    path: str | Path,
    *,
    peak_w: float = DEFAULT_PEAK_W,
    panel_area_m2: float = DEFAULT_PANEL_AREA_M2,
    panel_efficiency: float = DEFAULT_PANEL_EFFICIENCY,
    column: str | None = None,
    window_h: float = 48.0,
    windows: int = 4,
    max_gap_s: float = 3600.0,
    min_duration_s: float = 6 * 3600.0,
    capacity_wh: float = DEFAULT_NODE_CAPACITY_WH,
    initial_soc: float = 0.5,
    ambient_mean_c: float = 15.0,
    license: str = "see source",
    unit: str | None = None,
    seed: int | None = None,
) -> list[Trace]:
    """Imports PVDAQ-style PV power / irradiance files as solar-node traces (module docstring).

    Args:
        path: File or folder (``*.csv``, ``*.csv.gz``, ``*.parquet``).
        peak_w: Device panel peak the system's output is scaled to, W.
        panel_area_m2: Panel area for irradiance columns.
        panel_efficiency: Efficiency for irradiance columns.
        column: Use this column (default: first AC power, else DC power, else irradiance).
        window_h: Window length, h.
        windows: Windows per gap-free segment (0 = all consecutive).
        max_gap_s: Split at longer gaps.
        min_duration_s: Drop shorter segments.
        capacity_wh: Node storage, Wh.
        initial_soc: Start SoC.
        ambient_mean_c: Ambient proxy mean when the file has no ambient column.
        license: License for meta.
        unit: Split-unit override (default: system/station from the file name).
        seed: Demand seed base.

    Raises:
        ImportFormatError: no time or no power/irradiance column (or parquet without pyarrow).
    """
    out: list[Trace] = []
    for f in list_files(Path(path), ("*.csv", "*.csv.gz", "*.parquet")):
        names, rows, frame = _read_frame(f)

        def cells(i: int, frame: dict | None = frame, names: list[str] = names,
                  rows: list[list[str]] | None = rows) -> list[str]:
            if frame is not None:
                return [str(v) if v is not None else "" for v in frame[names[i]]]
            return [r[i] if i < len(r) else "" for r in rows or []]

        def floats(i: int, cells=cells) -> np.ndarray:  # noqa: ANN001 - bound helper
            return np.array([to_float(c) for c in cells(i)])

        i_time = find_column(names, ["measured_on", "timestamp", "time", "datetime", "date", "index", ""])
        if i_time is None:
            i_time = 0
        lower = [n.lower() for n in names]
        i_val, kind = None, ""
        if column:
            i_val = find_column(names, [column])
            is_irr = any(k in column.lower() for k in ("poa", "ghi", "irrad", "global"))
            kind = "irradiance" if is_irr else "power"
        else:
            for aliases, k in ((_POWER_COLS, "power"), (_IRR_COLS, "irradiance")):
                for a in aliases:
                    cand = [i for i, n in enumerate(lower) if a in n and i != i_time
                            and "inv" not in n[:4] and "current" not in n and "volt" not in n]
                    if cand:
                        i_val, kind = cand[0], k
                        break
                if i_val is not None:
                    break
        if i_val is None:
            raise ImportFormatError(f"{f.name} line 1: no AC/DC power or irradiance column in {names[:8]}; "
                                    "fix: pass --column NAME")
        t_raw, _ = parse_times(cells(i_time))
        v = floats(i_val)
        i_amb = next((i for i, n in enumerate(lower) for a in _AMBIENT_COLS if a in n), None)
        amb = floats(i_amb) if i_amb is not None else np.full(v.size, np.nan)
        t_raw = np.where(np.isfinite(v), t_raw, np.nan)
        t, (v, amb), _ = clean_order(t_raw, v, amb, source=f.name)
        if t.size < 3:
            continue
        v = np.clip(v, 0.0, None)
        if kind == "power":
            if "kw" in lower[i_val]:
                v = v * 1000.0
            pos = v[v > 0]
            p_ref = float(np.percentile(pos, 99.5)) if pos.size else 1.0
            supply = v * peak_w / p_ref
            irr_proxy = supply / peak_w * 1000.0
            how = f"power x {peak_w} W / {p_ref:.4g} (p99.5)"
        else:
            supply = v * panel_area_m2 * panel_efficiency
            irr_proxy = v
            how = f"irradiance x {panel_area_m2} m2 x {panel_efficiency}"
        faulty: list[tuple[int, float, float]] = []  # (window index, unix s, W/m2) of windows skipped as faulty
        unit_id = unit or _unit_of_pv_file(f)
        base_seed = seed if seed is not None else stable_seed("pvdaq", f.name)
        j = 0
        for sg in segments_at_gaps(t, max_gap_s):
            ts = t[sg]
            if ts[-1] - ts[0] < min_duration_s:
                continue
            period = float(np.median(np.diff(ts)))
            per_day = max(1, int(round(86400.0 / period)))
            window = max(2, int(round(window_h * 3600.0 / period)))
            # Windows start at the first sample (timestamps carry the clock; no midnight snapping).
            for s0 in _window_starts(ts.size, per_day, window, windows):
                w = slice(sg.start + s0, min(sg.start + s0 + window, sg.stop))
                tw = t[w]
                if kind == "irradiance" and np.nanmax(v[w]) > MAX_IRRADIANCE_W_M2:
                    # a sensor fault, not weather: skipped (its index too, so the other windows keep their names)
                    k_bad = int(np.argmax(v[w] > MAX_IRRADIANCE_W_M2))
                    faulty.append((j, float(tw[k_bad]), float(v[w][k_bad])))
                    j += 1
                    continue
                ambient = amb[w]
                if not np.isfinite(ambient).mean() > 0.9:
                    ambient = ambient_proxy(tw, irr_proxy[w], ambient_mean_c)
                else:
                    ambient = ffill(ambient, ambient_mean_c)
                meta = TraceMeta(
                    capacity_wh=capacity_wh, initial_soc=initial_soc, device_kind="solar-node",
                    source=f"pvdaq:{f.name}", license=license, unit=unit_id, seed=base_seed + j,
                    notes=f"supply = {how}; demand seeded; bandwidth nominal",
                    extra={"file": f.name, "column": names[i_val], "kind": kind,
                           "start_unix_s": float(tw[0]), "sample_period_s": period},
                )
                out.append(_node_trace(f"pvdaq-{slug(stem_of(f))}-w{j}", tw, supply[w],
                                       ambient, meta, base_seed + j))
                j += 1
        if faulty:
            j0, t0, v0 = faulty[0]
            warnings.warn(f"{f.name}: {len(faulty)} window(s) skipped with irradiance above "
                          f"{MAX_IRRADIANCE_W_M2:g} W/m2, "
                          f"which sunlight never reaches (a sensor fault), the first w{j0} at "
                          f"{datetime.fromtimestamp(t0, UTC).isoformat()} ({v0:.0f} W/m2); fix: repair or drop "
                          "those rows at the source", stacklevel=2)
    return out


__all__ = ["ambient_proxy", "detect_sample_period_s", "import_irradiance", "import_pvdaq"]
