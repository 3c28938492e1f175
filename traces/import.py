"""Import real traces of one format into a trace set folder.

Usage::

    python -m traces.import android-batteryapp ~/my_sessions/ --out my_set
    python -m traces.import linux-power-supply BAT0.log --out my_set --capacity-wh 50
    python -m traces.import nsrdb-irradiance 724699_rad_only.csv.gz --out solar --panel-area-m2 0.05
    python -m traces.import pvdaq serf_east_15min_ac_power.csv --out solar --peak-w 10
    python -m traces.import bandwidth lumos5g/4G/ --out links
    python -m traces.import 5g-power phone-5g-power-throughput/ --out radio   # -> radio_energy_per_bit.json
    python -m traces.import auto ../shared/traces/solar-nsrdb-hourly --out solar  # detect per file

The module is named ``import`` (a keyword) so that ``python -m traces.import`` reads naturally; code
should call :func:`main` via ``importlib.import_module("traces.import")`` or use
:mod:`traces.importers` directly.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from traces.importers import FORMATS, TRACE_IMPORTERS, detect_format, import_5g_power, save_energy_table
from traces.importers._common import ImportFormatError, list_files, read_provenance_license
from traces.schema import TraceValidationError
from traces.store import SPLITS, TraceSet

RADIO_TABLE = "radio_energy_per_bit.json"


def _kwargs(fmt: str, args: argparse.Namespace) -> dict[str, Any]:
    kw: dict[str, Any] = {}
    if args.license:
        kw["license"] = args.license
    if args.unit:
        kw["unit"] = args.unit
    if args.seed is not None:
        kw["seed"] = args.seed
    if fmt == "android-batteryapp" and args.capacity_wh:
        kw["capacity_wh"] = args.capacity_wh
    if fmt in ("nsrdb-irradiance", "pvdaq"):
        if args.capacity_wh:
            kw["capacity_wh"] = args.capacity_wh
        kw["panel_area_m2"] = args.panel_area_m2
        kw["panel_efficiency"] = args.panel_efficiency
        kw["window_h"] = args.window_h
        kw["windows"] = args.windows
    if fmt == "nsrdb-irradiance" and args.sample_period_s:
        kw["sample_period_s"] = args.sample_period_s
    if fmt == "pvdaq":
        kw["peak_w"] = args.peak_w
    if fmt == "bandwidth" and args.unit_scale:
        kw["unit_scale"] = args.unit_scale
    if args.max_gap_s and fmt in ("android-batteryapp", "linux-power-supply", "pvdaq", "bandwidth"):
        kw["max_gap_s"] = args.max_gap_s
    return kw


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    ap = argparse.ArgumentParser(prog="python -m traces.import", description=__doc__.split("\n\n")[0])
    ap.add_argument("format", choices=list(FORMATS) + ["auto"],
                    help="source format ('auto' = detect per file)")
    ap.add_argument("source", type=Path, help="file or folder")
    ap.add_argument("--out", type=Path, required=True, help="trace-set folder to write")
    ap.add_argument("--capacity-wh", type=float, default=None, help="stated battery/storage capacity, Wh")
    ap.add_argument("--unit", default=None, help="split unit for all traces (default from the source)")
    ap.add_argument("--split", choices=SPLITS, default=None,
                    help="put every trace in this split (default: by unit, a single unit -> test)")
    ap.add_argument("--license", default=None,
                    help="license string (default: PROVENANCE.md 'License:' if found)")
    ap.add_argument("--seed", type=int, default=None, help="demand seed where the source has no usage signal")
    ap.add_argument("--panel-area-m2", type=float, default=0.05, help="solar panel area (irradiance)")
    ap.add_argument("--panel-efficiency", type=float, default=0.18, help="panel+converter efficiency")
    ap.add_argument("--peak-w", type=float, default=10.0, help="device panel peak for PV power scaling")
    ap.add_argument("--window-h", type=float, default=48.0, help="solar window length, h")
    ap.add_argument("--windows", type=int, default=4, help="solar windows per file (0 = all)")
    ap.add_argument("--sample-period-s", type=float, default=None,
                    help="irradiance sample period (default: detect)")
    ap.add_argument("--unit-scale", default=None,
                    help="bandwidth unit in the file: Mbps (default), kbps, bps")
    ap.add_argument("--max-gap-s", type=float, default=None, help="split sources at longer gaps")
    args = ap.parse_args(argv)
    try:
        if args.format == "5g-power":
            table = import_5g_power(args.source)
            target = args.out if args.out.suffix == ".json" else args.out / RADIO_TABLE
            save_energy_table(table, target)
            for net, fit in table["networks"].items():
                print(f"{net:28} idle {fit['idle_w']:6.2f} W  DL {fit['downlink_nj_per_bit']:8.2f} nJ/bit  "
                      f"UL {fit['uplink_nj_per_bit']:8.2f} nJ/bit  (n={fit['n_samples']}, R2={fit['r2']})")
            print(f"wrote {target}")
            return 0
        traces = []
        if args.format == "auto":
            for f in list_files(args.source):
                fmt = detect_format(f)
                if fmt is None or fmt == "5g-power":
                    continue
                kw = _kwargs(fmt, args)
                kw.setdefault("license", read_provenance_license(f.parent) or "unknown")
                traces.extend(TRACE_IMPORTERS[fmt](f, **kw))
        else:
            kw = _kwargs(args.format, args)
            folder = args.source if args.source.is_dir() else args.source.parent
            kw.setdefault("license", read_provenance_license(folder) or "unknown")
            traces = TRACE_IMPORTERS[args.format](args.source, **kw)
        if not traces:
            print(f"error: no traces imported from {args.source}", file=sys.stderr)
            return 1
        seen: dict[str, int] = {}
        for i, t in enumerate(traces):
            k = seen.get(t.name, 0)
            seen[t.name] = k + 1
            if k:
                traces[i] = t.replace(name=f"{t.name}-{k + 1}")
        splits = {t.meta.unit: args.split for t in traces} if args.split else None
        ts = TraceSet.from_traces(traces, name=args.out.name, splits=splits,
                                  description=f"imported with python -m traces.import {args.format}")
        ts.save(args.out, clean=False)
        s = ts.summary()
        hours = s["all"]["duration_h"]
        print(f"wrote {len(ts)} traces ({hours:.2f} h, {len(ts.units())} units) to {args.out}: "
              + ", ".join(f"{k} {s[k]['traces']}" for k in SPLITS))
        return 0
    except (ImportFormatError, TraceValidationError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
