"""Import real traces of one format into a trace set folder.

Usage::

    python -m traces.import android-batteryapp ~/my_sessions/ --out my_set
    python -m traces.import linux-power-supply BAT0.log --out my_set --capacity-wh 50
    python -m traces.import nsrdb-irradiance 724699_rad_only.csv.gz --out solar --panel-area-m2 0.05
    python -m traces.import pvdaq serf_east_15min_ac_power.csv --out solar --peak-w 10
    python -m traces.import bandwidth lumos5g/4G/ --out links
    python -m traces.import 5g-power phone-5g-power-throughput/ --out radio   # -> radio_energy_per_bit.json
    python -m traces.import auto ../shared/traces/solar-nsrdb-hourly --out solar  # detect per file

Importing into an existing set **merges**: the new traces are added to ``manifest.json`` (existing
entries, their files and their splits are kept; a unit already in the set keeps its split). A new
trace whose name (or file) is already there is an error naming it; ``--force`` replaces those
traces. Nothing is ever deleted. ``auto`` lists every file it skipped, with the reason, and fails
when nothing usable was found. Exit codes: 0 done, 1 an input/output file problem (message names
the file), 2 a usage error.

The module is named ``import`` (a keyword) so that ``python -m traces.import`` reads naturally; code
should call :func:`main` via ``importlib.import_module("traces.import")`` or use
:mod:`traces.importers` directly.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from model.cli import float_in, nonneg_int, positive_float
from runtime.safeio import ExistsError, refuse_existing
from traces.importers import FORMATS, TRACE_IMPORTERS, detect_format, import_5g_power, save_energy_table
from traces.importers._common import ImportFormatError, is_data_file, read_provenance_license
from traces.schema import Trace, TraceValidationError
from traces.store import MANIFEST, SPLITS, TraceSet

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


def scan(source: Path) -> tuple[list[tuple[Path, str]], list[str]]:
    """For ``auto``: (file, format) of every importable file under ``source`` and ``"file (reason)"``
    for every other file (documentation, unknown content, empty, 5G tables)."""
    if not source.exists():
        raise FileNotFoundError(f"{source}: no such file or folder")
    files = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
    found: list[tuple[Path, str]] = []
    skipped: list[str] = []
    for f in files:
        if f.name.startswith("."):
            continue
        if not is_data_file(f):
            skipped.append(f"{f} (documentation/metadata file, not data)")
            continue
        if f.stat().st_size == 0:
            skipped.append(f"{f} (empty file)")
            continue
        fmt = detect_format(f)
        if fmt is None:
            skipped.append(f"{f} (format not recognised: not a known trace format, or not text)")
        elif fmt == "5g-power":
            skipped.append(f"{f} (a 5G power table, not a trace: use python -m traces.import 5g-power)")
        else:
            found.append((f, fmt))
    return found, skipped


def _validated(traces: list[Trace], source: Path) -> list[Trace]:
    """Checks every imported trace now, so an error names the source file (not the output)."""
    for t in traces:
        t.validate(file=f"{source} -> trace {t.name}")
    return traces


def merge_into(out: Path, traces: list[Trace], *, split: str | None, force: bool, fmt: str) -> TraceSet:
    """The set to write to ``out``: the existing set (if any) plus ``traces``.

    Units already in the set keep their split; new units are assigned by unit (or ``split``). A name
    or file that already exists is an :class:`ExistsError` unless ``force`` (then it is replaced).
    """
    if out.exists() and not out.is_dir():
        raise ExistsError(f"{out}: exists and is not a folder; --out must be a trace-set folder")
    old = TraceSet.load(out) if (out / MANIFEST).exists() else None
    old_entries = list(old.entries) if old else []
    new_names = {t.name for t in traces}
    clash = sorted(new_names & {e.name for e in old_entries})
    if not force:
        clash += sorted(f"{t.name}.csv" for t in traces
                        if t.name not in clash and (out / f"{t.name}.csv").exists())
        if clash:
            raise ExistsError(f"{out}: trace(s) already in the set or folder: {', '.join(clash[:8])}"
                              f"{' ...' if len(clash) > 8 else ''}; rename the source, import into another "
                              "set, or pass --force to replace them")
    kept = [e for e in old_entries if e.name not in new_names]
    unit_split = {e.meta.unit: e.split for e in kept}
    fixed: dict[str, str] = {}
    for t in traces:
        u = t.meta.unit
        if u in unit_split:
            if split and split != unit_split[u]:
                raise TraceValidationError(
                    f"unit {u!r} is already in split {unit_split[u]!r}; --split {split} would put it in two",
                    file=str(out / MANIFEST), fix=f"drop --split or use --split {unit_split[u]}")
            fixed[u] = unit_split[u]
        elif split:
            fixed[u] = split
    new = TraceSet.from_traces(traces, name=out.name, splits=fixed,
                               description=f"imported with python -m traces.import {fmt}")
    if old is None:
        return new
    info = dict(old.info)
    info["imports"] = list(info.get("imports", [])) + [{"format": fmt, "traces": sorted(new_names)}]
    return TraceSet(kept + new.entries, name=old.name, description=old.description, info=info,
                    traces={t.name: t for t in traces})


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    ap = argparse.ArgumentParser(prog="python -m traces.import", description=__doc__.split("\n\n")[0])
    ap.add_argument("format", choices=list(FORMATS) + ["auto"],
                    help="source format ('auto' = detect per file)")
    ap.add_argument("source", type=Path, help="file or folder")
    ap.add_argument("--out", type=Path, required=True,
                    help="trace-set folder to write or to add to (merged), or for 5g-power a .json/folder")
    ap.add_argument("--force", action="store_true",
                    help="replace traces (or the 5G table) that already exist; nothing else is touched")
    ap.add_argument("--capacity-wh", type=float_in(0.0, 10_000.0, lo_open=True), default=None,
                    help="stated battery/storage capacity, Wh")
    ap.add_argument("--unit", default=None, help="split unit for all traces (default from the source)")
    ap.add_argument("--split", choices=SPLITS, default=None,
                    help="put every trace in this split (default: by unit, a single unit -> test)")
    ap.add_argument("--license", default=None,
                    help="license string (default: PROVENANCE.md 'License:' if found)")
    ap.add_argument("--seed", type=nonneg_int, default=None,
                    help="demand seed where the source has no usage signal")
    ap.add_argument("--panel-area-m2", type=float_in(0.0, 10.0, lo_open=True), default=0.05,
                    help="solar panel area (irradiance)")
    ap.add_argument("--panel-efficiency", type=float_in(0.0, 1.0, lo_open=True), default=0.18,
                    help="panel+converter efficiency")
    ap.add_argument("--peak-w", type=float_in(0.0, 1000.0, lo_open=True), default=10.0,
                    help="device panel peak for PV power scaling")
    ap.add_argument("--window-h", type=positive_float, default=48.0, help="solar window length, h")
    ap.add_argument("--windows", type=nonneg_int, default=4, help="solar windows per file (0 = all)")
    ap.add_argument("--sample-period-s", type=positive_float, default=None,
                    help="irradiance sample period (default: detect)")
    ap.add_argument("--unit-scale", default=None, type=str.lower, choices=["mbps", "kbps", "bps", "gbps"],
                    help="bandwidth unit in the file: Mbps (default), kbps, bps, gbps")
    ap.add_argument("--max-gap-s", type=positive_float, default=None, help="split sources at longer gaps")
    args = ap.parse_args(argv)
    if args.unit is not None and not args.unit.strip():
        ap.error("argument --unit: must not be empty")
    try:
        return _run(args)
    except (ImportFormatError, TraceValidationError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    if args.format == "5g-power":
        table = import_5g_power(args.source)
        target = args.out if args.out.suffix == ".json" else args.out / RADIO_TABLE
        refuse_existing(target, args.force, "5G energy table")
        save_energy_table(table, target)
        for net, fit in table["networks"].items():
            print(f"{net:28} idle {fit['idle_w']:6.2f} W  DL {fit['downlink_nj_per_bit']:8.2f} nJ/bit  "
                  f"UL {fit['uplink_nj_per_bit']:8.2f} nJ/bit  (n={fit['n_samples']}, R2={fit['r2']})")
        print(f"wrote {target}")
        return 0
    traces: list[Trace] = []
    skipped: list[str] = []
    if args.format == "auto":
        found, skipped = scan(args.source)
        for f, fmt in found:
            kw = _kwargs(fmt, args)
            kw.setdefault("license", read_provenance_license(f.parent) or "unknown")
            try:
                got = _validated(TRACE_IMPORTERS[fmt](f, **kw), f)
            except (ImportFormatError, TraceValidationError, ValueError) as exc:
                skipped.append(f"{f} ({fmt}: {exc})")
                continue
            if not got:
                skipped.append(f"{f} ({fmt}: no segment long enough to make a trace)")
            traces.extend(got)
        for s in skipped:
            print(f"skipped: {s}", file=sys.stderr)
    else:
        kw = _kwargs(args.format, args)
        folder = args.source if args.source.is_dir() else args.source.parent
        kw.setdefault("license", read_provenance_license(folder) or "unknown")
        traces = _validated(TRACE_IMPORTERS[args.format](args.source, **kw), args.source)
    if not traces:
        print(f"error: no traces imported from {args.source}"
              + (f" ({len(skipped)} file(s) skipped, listed above)" if skipped else ""), file=sys.stderr)
        return 1
    seen: dict[str, int] = {}
    for i, t in enumerate(traces):
        k = seen.get(t.name, 0)
        seen[t.name] = k + 1
        if k:
            traces[i] = t.replace(name=f"{t.name}-{k + 1}")
    ts = merge_into(args.out, traces, split=args.split, force=args.force, fmt=args.format)
    ts.save(args.out, force=args.force, write=[t.name for t in traces], update_manifest=True)
    s = ts.summary()
    hours = s["all"]["duration_h"]
    added = f"added {len(traces)} trace(s); " if len(ts) != len(traces) else ""
    print(f"wrote {len(ts)} traces ({added}{hours:.2f} h, {len(ts.units())} units) to {args.out}: "
          + ", ".join(f"{k} {s[k]['traces']}" for k in SPLITS)
          + (f"; skipped {len(skipped)} file(s)" if skipped else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
