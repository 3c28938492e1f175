"""Phone power versus throughput (5G/LTE) -> a radio energy-per-bit table (JSON).

For the later edge/cloud split: how many joules the phone's radio spends per bit sent or
received, per network type. Accepted inputs (CSV, header or not, gz ok; a folder is searched):

* "combined"/per-run files: ``Timestamp,nrStatus,LTE_RSRP,nr_ssRsrp,nr_ssSinr,downlink_Mbps,
  uplink_Mbps,software_power,hardware_power,hardware_power_full`` (header-less per-run files use
  the same order). Power = ``hardware_power_full`` (Monsoon total, mW). Network type =
  ``<file group>:<NR if nrStatus == CONNECTED else LTE>``.
* cleaned logs with ``avg_power`` (mW), ``downlink_mbps``, ``uplink_mbps`` and ``radio_type_used``.
* transfer tables with ``throughput``, ``avg_power``, ``direction``, ``network type``, ``provider``.

Per-run files inside ``merged_<group>/`` are skipped when ``<group>_combined.csv[.gz]`` exists
beside the folder (same rows). Model per network type, least squares over all 1-s samples:
``P = idle_w + a * downlink_Mbps + b * uplink_Mbps``; ``a`` W per Mbit/s = J/Mbit -> reported as
nJ/bit (x 1000), clipped at >= 0. Also the median power in throughput bins (for a lookup-table
model) and R^2.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from runtime.safeio import atomic_write_text
from traces.importers._common import find_column, list_files, read_table, stem_of, to_float

TABLE_SCHEMA = "wattwise-radio-energy/1"
_COMBINED_ORDER = ["timestamp", "nrstatus", "lte_rsrp", "nr_ssrsrp", "nr_sssinr", "downlink_mbps",
                   "uplink_mbps", "software_power", "hardware_power", "hardware_power_full"]


def _group_of(f: Path) -> str:
    stem = stem_of(f)
    m = re.match(r"(.+?)_combined", stem)
    if m:
        return m.group(1)
    if f.parent.name.startswith("merged_"):
        return f.parent.name[len("merged_"):]
    return re.sub(r"_all$", "", stem)


def _samples(f: Path) -> list[tuple[str, float, float, float]]:
    """(network type, downlink Mbps, uplink Mbps, power W) rows of one file."""
    tab = read_table(f)
    h = [c.lower() for c in (tab.header or _COMBINED_ORDER[: max(len(r) for r in tab.rows[:5])])]
    group = _group_of(f)
    out = []
    i_p = find_column(h, ["hardware_power_full", "avg_power", "power_mw", "power"])
    i_dl = find_column(h, ["downlink_mbps", "downlink"])
    i_ul = find_column(h, ["uplink_mbps", "uplink"])
    i_thr = find_column(h, ["throughput", "throughput_mbps"])
    i_dir = find_column(h, ["direction"])
    i_type = find_column(h, ["radio_type_used", "network type", "network_type", "nrstatus"])
    i_prov = find_column(h, ["provider"])
    if i_p is None or (i_dl is None and i_thr is None):
        return []
    for r in tab.rows:
        def cell(i: int | None, r: list[str] = r) -> str:
            return r[i] if (i is not None and i < len(r)) else ""

        p = to_float(cell(i_p)) / 1000.0  # mW -> W
        if i_dl is not None:
            dl, ul = to_float(cell(i_dl)), to_float(cell(i_ul)) if i_ul is not None else 0.0
        else:
            thr = to_float(cell(i_thr))
            up = cell(i_dir).strip().lower().startswith("up")
            dl, ul = (0.0, thr) if up else (thr, 0.0)
        if not (np.isfinite(p) and np.isfinite(dl) and np.isfinite(ul)) or p <= 0:
            continue
        typ = cell(i_type).strip()
        if h[i_type or 0] == "nrstatus" and i_type is not None:
            typ = "NR" if typ.upper() == "CONNECTED" else "LTE"
        prov = cell(i_prov).strip()
        label = f"{prov + ':' if prov else ''}{typ}" if i_prov is not None else f"{group}:{typ or 'all'}"
        out.append((label, dl, ul, p))
    return out


def _fit(dl: np.ndarray, ul: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    x = np.column_stack([np.ones_like(dl), dl, ul])
    coef, *_ = np.linalg.lstsq(x, p, rcond=None)
    idle, a, b = float(coef[0]), max(0.0, float(coef[1])), max(0.0, float(coef[2]))
    pred = idle + a * dl + b * ul
    ss_res = float(np.sum((p - pred) ** 2))
    ss_tot = float(np.sum((p - p.mean()) ** 2)) or 1.0
    thr = dl + ul
    edges = np.array([0, 1, 5, 20, 50, 100, 200, 500, 1000, 2000, 5000], dtype=float)
    bins = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (thr >= lo) & (thr < hi)
        if m.sum() >= 5:
            bins.append({"mbps_lo": lo, "mbps_hi": hi, "median_power_w": round(float(np.median(p[m])), 4),
                         "n": int(m.sum())})
    return {
        "idle_w": round(idle, 4),
        "downlink_nj_per_bit": round(a * 1000.0, 4),
        "uplink_nj_per_bit": round(b * 1000.0, 4),
        "r2": round(1.0 - ss_res / ss_tot, 4),
        "n_samples": int(p.size),
        "mean_power_w": round(float(p.mean()), 4),
        "median_downlink_mbps": round(float(np.median(dl)), 3),
        "median_uplink_mbps": round(float(np.median(ul)), 3),
        "throughput_bins": bins,
    }


def import_5g_power(path: str | Path | Sequence[Path], *, min_samples: int = 30) -> dict[str, Any]:
    """Builds the energy-per-bit table (module docstring).

    Args:
        path: File, folder, or a list of files.
        min_samples: Network types with fewer samples are left out.

    Returns:
        ``{"schema", "model", "sources", "networks": {type: fit}, "overall": fit}``.
    """
    if isinstance(path, (str, Path)):
        root = Path(path)
        files = list_files(root, ("*.csv", "*.csv.gz"))
    else:
        files = sorted(Path(p) for p in path)
        root = Path(os.path.commonpath([str(f.parent) for f in files])) if files else Path(".")
    used: list[str] = []
    rows: list[tuple[str, float, float, float]] = []
    for f in files:
        if f.parent.name.startswith("merged_"):
            grp = f.parent.name[len("merged_"):]
            if any((f.parent.parent / f"{grp}_combined{ext}").exists() for ext in (".csv", ".csv.gz")):
                continue  # the combined file holds the same rows
        got = _samples(f)
        if got:
            used.append(str(f.relative_to(root)) if root.is_dir() else f.name)
            rows.extend(got)
    if not rows:
        raise ValueError(f"{root}: no power/throughput rows found; fix: point at 5G power logs")
    labels = np.array([r[0] for r in rows])
    dl = np.array([r[1] for r in rows])
    ul = np.array([r[2] for r in rows])
    p = np.array([r[3] for r in rows])
    nets = {}
    for lab in sorted(set(labels.tolist())):
        m = labels == lab
        if m.sum() >= min_samples:
            nets[lab] = _fit(dl[m], ul[m], p[m])
    return {
        "schema": TABLE_SCHEMA,
        "model": "P_w = idle_w + downlink_nj_per_bit/1000 * downlink_Mbps"
                 " + uplink_nj_per_bit/1000 * uplink_Mbps",
        "sources": used,
        "networks": nets,
        "overall": _fit(dl, ul, p),
    }


def save_energy_table(table: dict[str, Any], path: str | Path) -> Path:
    """Writes the table as stable JSON, atomically (callers check ``--force`` first)."""
    path = Path(path)
    atomic_write_text(path, json.dumps(table, indent=1, sort_keys=True) + "\n")
    return path


__all__ = ["TABLE_SCHEMA", "import_5g_power", "save_energy_table"]
