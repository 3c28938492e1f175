"""Build the real-data trace set from a folder of public traces (kept out of the repository).

Usage::

    python -m traces.build_real --shared ../shared/traces --out data/real

What it does (no layout contract: every file's format is detected from its content, see
:func:`traces.importers.detect_format`; unknown files are listed as skipped):

1. Imports every device source: Android sessions -> ``phone`` (unit = user), Linux power_supply
   logs -> ``laptop`` (unit = log file; gap-separated segments), irradiance + PVDAQ -> ``solar-node``
   (unit = station/system; 48 h windows). The license of each file is read from the nearest
   ``PROVENANCE.md`` ("License:" line).
2. Resamples device traces to a per-kind step (phone 10 s, laptop 60 s, solar-node 60 s;
   ``--step-s`` overrides all) with the energy-conserving rules of ``Trace.resample``.
3. Splits units train/val/test (:func:`traces.store.assign_splits`, stratified by device kind;
   a kind with one unit goes to test). Bandwidth traces are split the same way by *route*
   (stratified by dataset family: lumos / norway / fcc / ...).
4. Attaches measured bandwidth: each device trace gets a seeded random concatenation of bandwidth
   traces **from its own split** (resampled to its step) covering its duration. Phones keep 0
   where their log says they were offline. The routes used are recorded in ``meta.extra``.
5. Writes the set (CSV + manifest), ``radio_energy_per_bit.json`` from 5G power logs, and prints
   the :mod:`traces.info` summary.

An ``--out`` folder that already holds a set (``manifest.json``) is refused before any work unless
``--force``; with it only the files this build writes are replaced (nothing is deleted, so traces of
an older build that this one does not write stay as unlisted files). Exit codes: 0 done, 1 an
input/output folder problem, 2 a usage error.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from model.cli import nonneg_int, positive_float, positive_int
from runtime.safeio import ExistsError, refuse_existing
from traces.importers import TRACE_IMPORTERS, detect_format, import_5g_power, save_energy_table
from traces.importers._common import is_data_file, read_provenance_license, stable_seed
from traces.schema import Trace
from traces.store import TraceSet, assign_splits, shared_traces_dir

DEFAULT_STEP_S: dict[str, float] = {"phone": 10.0, "laptop": 60.0, "solar-node": 60.0}
RADIO_TABLE = "radio_energy_per_bit.json"


def _progress(items: list[Any], desc: str, enabled: bool) -> Iterable[Any]:
    if not enabled:
        return items
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is optional: plain iteration without it
        return items
    return tqdm(items, desc=desc, unit="file", leave=False, file=sys.stderr)


def discover(shared: Path) -> tuple[dict[str, list[Path]], list[str]]:
    """Files under ``shared`` by detected format, and the skipped data files."""
    found: dict[str, list[Path]] = defaultdict(list)
    skipped: list[str] = []
    for p in sorted(shared.rglob("*")):
        if not p.is_file() or not is_data_file(p):
            continue
        fmt = detect_format(p)
        if fmt is None:
            skipped.append(f"{p.relative_to(shared)} (format not recognised)")
        else:
            found[fmt].append(p)
    return dict(found), skipped


def _unique(traces: list[Trace]) -> list[Trace]:
    seen: dict[str, int] = {}
    out = []
    for t in traces:
        n = seen.get(t.name, 0)
        seen[t.name] = n + 1
        out.append(t if n == 0 else t.replace(name=f"{t.name}-{n + 1}"))
    return out


def attach_bandwidth(
    trace: Trace, pool: list[Trace], *, seed: int, keep_offline: bool
) -> Trace:
    """Replaces ``bandwidth_mbps`` by a seeded concatenation of ``pool`` traces (same step)."""
    if not pool:
        return trace
    rng = np.random.default_rng(seed)
    step = trace.step_s
    n = len(trace)
    parts: list[np.ndarray] = []
    used: list[str] = []
    total = 0
    while total < n:
        b = pool[int(rng.integers(len(pool)))]
        arr = b.resample(step).bandwidth_mbps if b.duration_s >= step else np.array([b.bandwidth_mbps.mean()])
        parts.append(arr)
        used.append(b.name)
        total += arr.size
    bw = np.concatenate(parts)[:n]
    if keep_offline:
        bw = np.where(trace.bandwidth_mbps > 0, bw, 0.0)
    extra = dict(trace.meta.extra)
    extra["bandwidth_routes"] = sorted({p.meta.unit for p in pool if p.name in used})
    extra["bandwidth_traces"] = used[:20] + (["..."] if len(used) > 20 else [])
    notes = (trace.meta.notes + "; " if trace.meta.notes else "") + "bandwidth: measured traces attached"
    return trace.replace(bandwidth_mbps=bw, meta=dataclasses.replace(trace.meta, extra=extra, notes=notes))


def build_real(
    shared: Path,
    out: Path,
    *,
    step_s: float | None = None,
    seed: int = 0,
    limit_per_format: int | None = None,
    progress: bool = True,
    verbose: bool = True,
    force: bool = False,
    objectives: bool = False,
) -> TraceSet:
    """Builds and saves the real-data set (module docstring).

    Args:
        shared: Folder of public traces (e.g. ``../shared/traces``).
        out: Output set folder (gitignored ``data/real`` by convention).
        step_s: One step for all kinds (default per kind, :data:`DEFAULT_STEP_S`).
        seed: Seed for split assignment and bandwidth attachment.
        limit_per_format: Import at most this many files per format (quick builds/tests).
        progress: Show tqdm progress bars.
        verbose: Print what was done.
        force: Replace the files this build writes when ``out`` already holds a set.

    Returns:
        The saved TraceSet.
    """
    t0 = time.time()
    shared = Path(shared)
    if not shared.is_dir():
        raise FileNotFoundError(f"{shared}: not a folder; fix: pass --shared or set WATTWISE_SHARED_TRACES")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ExistsError(f"{out}: exists and is not a folder; choose a folder for the set")
    refuse_existing(out / "manifest.json", force, "trace set")  # before the (long) import
    found, skipped = discover(shared)
    if limit_per_format:
        found = {k: v[:limit_per_format] for k, v in found.items()}
    by_fmt: dict[str, list[Trace]] = defaultdict(list)
    licenses: dict[str, str] = {}
    for fmt in ("android-batteryapp", "linux-power-supply", "nsrdb-irradiance", "pvdaq", "bandwidth"):
        fn = TRACE_IMPORTERS[fmt]
        for f in _progress(found.get(fmt, []), fmt, progress):
            lic = licenses.setdefault(str(f.parent), read_provenance_license(f.parent) or "unknown")
            try:
                by_fmt[fmt].extend(fn(f, license=lic))
            except Exception as exc:  # one bad file must not sink the build: report it
                skipped.append(f"{f.relative_to(shared)} ({fmt}: {exc})")
    devices = _unique(by_fmt["android-batteryapp"] + by_fmt["linux-power-supply"]
                      + by_fmt["nsrdb-irradiance"] + by_fmt["pvdaq"])
    bandwidth = by_fmt["bandwidth"]

    # Splits: device units by kind; bandwidth routes by dataset family.
    dev_split = assign_splits([t.meta.unit for t in devices],
                              strata={t.meta.unit: t.meta.device_kind for t in devices}, seed=seed)
    bw_split = assign_splits([t.meta.unit for t in bandwidth],
                             strata={t.meta.unit: t.meta.unit.split("-")[0] for t in bandwidth}, seed=seed)
    pools: dict[str, list[Trace]] = defaultdict(list)
    for b in bandwidth:
        pools[bw_split[b.meta.unit]].append(b)

    final: list[Trace] = []
    for t in _progress(devices, "resample+attach", progress):
        st = step_s or DEFAULT_STEP_S.get(t.meta.device_kind, 10.0)
        r = t.resample(st) if t.duration_s >= st else t
        if len(r) < 2:
            continue
        r = attach_bandwidth(r, pools.get(dev_split[t.meta.unit], []),
                             seed=stable_seed(str(seed), t.name), keep_offline=t.meta.device_kind == "phone")
        final.append(r)

    radio: dict[str, Any] | None = None
    if found.get("5g-power"):
        try:
            radio = import_5g_power(found["5g-power"])
        except ValueError as exc:
            skipped.append(f"5g-power: {exc}")

    info = {
        "built_by": "python -m traces.build_real",
        "shared_folder_name": shared.name,
        "seed": seed,
        "step_s": step_s or DEFAULT_STEP_S,
        "files_by_format": {k: len(v) for k, v in sorted(found.items())},
        "skipped": skipped,
        "bandwidth_route_splits": dict(sorted(bw_split.items())),
        "bandwidth_traces_by_split": {k: len(v) for k, v in sorted(pools.items())},
        "radio_table": RADIO_TABLE if radio else None,
    }
    if objectives:  # user budgets, floors and deadlines that bind (traces.objectives, seeded rules)
        from traces.objectives import overlay, rules

        final = [overlay(t, seed) for t in final]
        info["objectives"] = {"seed": seed, **rules(), "by": "python -m traces.build_real --objectives"}
    ts = TraceSet.from_traces(
        final, name="real", splits=dev_split, seed=seed, info=info,
        description="Real-data traces composed from public measurements (not redistributable; "
        "rebuild with python -m traces.build_real).",
    )
    if radio:
        refuse_existing(out / RADIO_TABLE, force, "5G energy table")
    ts.save(out, force=force)
    if radio:
        save_energy_table(radio, out / RADIO_TABLE)
    if verbose:
        from traces.info import format_summary

        print(format_summary(ts))
        print("bandwidth routes: " + ", ".join(f"{s}={sum(1 for v in bw_split.values() if v == s)}"
                                                 for s in ("train", "val", "test"))
              + f"; skipped files: {len(skipped)}; built in {time.time() - t0:.1f} s -> {out}")
        for s in skipped[:20]:
            print(f"  skipped: {s}")
    return ts


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    ap = argparse.ArgumentParser(prog="python -m traces.build_real", description=__doc__.split("\n\n")[0])
    ap.add_argument("--shared", type=Path, default=None,
                    help="folder of public traces "
                         "(default: $WATTWISE_SHARED_TRACES or <repo>/../shared/traces)")
    ap.add_argument("--out", type=Path, default=Path("data/real"), help="output set folder (gitignored)")
    ap.add_argument("--step-s", type=positive_float, default=None,
                    help="one step for all kinds (default per kind)")
    ap.add_argument("--seed", type=nonneg_int, default=0, help="split / attachment seed")
    ap.add_argument("--limit", type=positive_int, default=None, help="at most N files per format (quick build)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars")
    ap.add_argument("--objectives", action="store_true",
                    help="overlay user budgets, quality floors and deadlines that bind (traces.objectives)")
    ap.add_argument("--force", action="store_true",
                    help="replace the files this build writes if --out already holds a set")
    args = ap.parse_args(argv)
    shared = args.shared or shared_traces_dir()
    try:
        build_real(shared, args.out, step_s=args.step_s, seed=args.seed, limit_per_format=args.limit,
                   objectives=args.objectives,
                   progress=not args.no_progress, force=args.force)
    except (OSError, ValueError) as exc:  # missing folder, existing output, a set that breaks the schema
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
