"""Throughput traces (3G/4G/5G, FCC, ...) -> traces whose ``bandwidth_mbps`` is measured.

Accepted input (a file or a folder; no extension needed; gz ok):

* two or more columns, whitespace-, tab- or comma-separated: ``time throughput`` (Lumos5G
  ``time_s throughput_Mbps`` with spaces; Pensieve/Norway/FCC ``time_s<TAB>throughput_Mbps``);
  an optional header line is skipped. Time in ms is recognised (median step >= 500 and integer).
* one column of non-decreasing integers: Mahimahi packet-delivery times in ms (each line one
  1500-byte packet) -> Mbit/s per second.
* one column of other numbers: throughput samples at 1 s.

``unit_scale`` (``"Mbps"`` default, ``"kbps"``, ``"bps"``) converts the throughput. Rows that are
not numeric are skipped; rows are sorted by time and duplicates dropped; gaps longer than
``max_gap_s`` split the file (a missing measurement is not an outage).

The split unit is the *route*, derived from the file name so that repeated runs of one route
never straddle splits: ``norway_<mode>_<n>`` -> ``norway-<mode>``; ``test_fcc_trace_<unit>_...`` ->
``fcc-<unit>``; ``<g>g_trace_<mode>_<id>_<dir>`` -> ``lumos-<g>g-<mode>-<dir>``;
``5g_trace_<n>_<mode>`` -> ``lumos-5g-<mode>``; otherwise the file stem.

The returned traces carry default device columns (a phone on battery: supply 0, ambient 22 deg C,
15 Wh at SoC 1.0, seeded chat demand with the seed from the file name). ``build_real`` only takes
``time_s`` and ``bandwidth_mbps`` from them and attaches those to device traces.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from traces.demand import chat_sessions
from traces.importers._common import (
    ImportFormatError,
    clean_order,
    list_files,
    open_text,
    segments_at_gaps,
    slug,
    stable_seed,
    stem_of,
    to_float,
)
from traces.schema import Trace, TraceMeta, make_trace

_SCALES = {"mbps": 1.0, "kbps": 1e-3, "bps": 1e-6, "gbps": 1e3}


def route_unit(name: str) -> str:
    """Route id from a bandwidth trace file name (see module docstring)."""
    low = name.lower()
    m = re.match(r"norway_([a-z]+)_", low)
    if m:
        return f"norway-{m.group(1)}"
    m = re.match(r"(?:test_)?fcc_trace_([0-9]+)_", low)
    if m:
        return f"fcc-{m.group(1)}"
    m = re.match(r"(\d)g_trace_(driving|walking|[a-z]+)_\d+_([a-z]+)", low)
    if m:
        return f"lumos-{m.group(1)}g-{m.group(2)}-{m.group(3)}"
    m = re.match(r"(\d)g_trace_\d+_([a-z]+)", low)
    if m:
        return f"lumos-{m.group(1)}g-{m.group(2)}"
    return slug(stem_of(Path(name)))


def read_throughput(f: Path, *, unit_scale: str = "Mbps") -> tuple[np.ndarray, np.ndarray]:
    """(time_s, Mbit/s) from one throughput file, cleaned (sorted, deduplicated)."""
    scale = _SCALES.get(unit_scale.lower())
    if scale is None:
        raise ValueError(f"unit_scale must be one of {sorted(_SCALES)}, got {unit_scale!r}")
    rows: list[list[float]] = []
    for line in open_text(f).splitlines():
        cells = re.split(r"[\s,;]+", line.strip())
        if not cells or not cells[0]:
            continue
        vals = [to_float(c) for c in cells]
        if any(np.isnan(v) for v in vals[:2]):
            continue  # header or odd row
        rows.append(vals[:2])
    if len(rows) < 2:
        raise ImportFormatError(f"{f.name}: fewer than 2 numeric rows; fix: expected 'time throughput' lines")
    width = min(len(r) for r in rows)
    if width >= 2:
        t = np.array([r[0] for r in rows])
        bw = np.array([r[1] for r in rows]) * scale
        d = np.diff(t)
        if np.median(d) >= 500 and np.all(np.mod(t, 1) == 0):
            t = t / 1000.0  # ms
    else:
        x = np.array([r[0] for r in rows])
        if np.all(np.diff(x) >= 0) and np.all(np.mod(x, 1) == 0):  # Mahimahi: ms per packet
            sec = np.floor(x / 1000.0).astype(int)
            sec -= sec[0]
            counts = np.bincount(sec)
            t = np.arange(counts.size, dtype=float)
            bw = counts * 1500 * 8 / 1e6
        else:
            t = np.arange(x.size, dtype=float)
            bw = x * scale
    t, (bw,), _ = clean_order(t, bw)
    bw = np.clip(np.nan_to_num(bw, nan=0.0), 0.0, None)
    return t, bw


def import_bandwidth(
    path: str | Path,
    *,
    unit_scale: str = "Mbps",
    max_gap_s: float = 30.0,
    min_duration_s: float = 60.0,
    license: str = "see source",
    unit: str | None = None,
    seed: int | None = None,
) -> list[Trace]:
    """Imports throughput traces (module docstring).

    Args:
        path: File or folder.
        unit_scale: Throughput unit in the file.
        max_gap_s: Split at longer gaps.
        min_duration_s: Drop shorter pieces.
        license: License for meta.
        unit: Route override (default from the file name).
        seed: Demand seed (default from the file name).
    """
    out: list[Trace] = []
    for f in list_files(Path(path)):
        t, bw = read_throughput(f, unit_scale=unit_scale)
        segs = segments_at_gaps(t, max_gap_s)
        for k, sg in enumerate(segs):
            ts = t[sg]
            if ts.size < 2 or ts[-1] - ts[0] < min_duration_s:
                continue
            s = (seed if seed is not None else stable_seed("bandwidth", f.name)) + k
            step = float(np.median(np.diff(ts)))
            demand = chat_sessions(np.random.default_rng(s), ts.size, step).demand_tps
            name = slug(stem_of(f)) + (f"-seg{k}" if len(segs) > 1 else "")
            meta = TraceMeta(
                capacity_wh=15.0, initial_soc=1.0, device_kind="phone",
                source=f"bandwidth:{f.parent.name}/{f.name}", license=license,
                unit=unit or route_unit(f.name), seed=s,
                notes="measured bandwidth; device columns are defaults (phone on battery)",
                extra={"file": f.name, "folder": f.parent.name, "route": route_unit(f.name)},
            )
            out.append(make_trace(name, meta, ts - ts[0], supply_w=0.0, plugged=0.0, ambient_c=22.0,
                                  demand_tps=demand, bandwidth_mbps=bw[sg]))
    return out


__all__ = ["import_bandwidth", "read_throughput", "route_unit"]
