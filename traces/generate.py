"""Generate the default trace set (or one scenario trace), deterministically.

Usage::

    python -m traces.generate --out traces/data/default --force  # regenerate the committed default set
    python -m traces.generate --out traces/data/default --check  # exit 1 if files would change
    python -m traces.generate --scenario solar_node --seed 7 --out solar.csv
    python -m traces.generate --extra-val 2 --out data/default-val+2  # the default set, 12 more val traces

Files are never deleted: other files in the folder are left alone, and replacing a file this command
writes (a trace CSV or manifest.json) needs ``--force``. Exit codes: 0 done, 1 a file problem
(output exists, --check differs), 2 a usage error.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from model.cli import nonneg_int
from runtime.safeio import ExistsError
from traces.generators import (
    DEFAULT_SET_PLAN,
    DEFAULT_SET_SEED,
    GENERATOR_VERSION,
    SCENARIOS,
    default_set_traces,
)
from traces.schema import TraceMeta
from traces.store import TraceSet, assign_splits, default_trace_set_dir, save_trace


def _scenario_stratum(meta: TraceMeta) -> str:
    return str(meta.extra.get("scenario", meta.device_kind))


def build_default_set(base_seed: int = DEFAULT_SET_SEED, extra_val: int = 0) -> TraceSet:
    """The default set in memory: every scenario, units split train/val/test per scenario.

    ``extra_val`` more traces per scenario, all in val: the default set's traces keep their files and splits (the
    test split is the default one), and model selection (``train.py --select-best``) sees more units."""
    traces = default_set_traces(base_seed, extra=extra_val)
    count = {prefix: n for prefix, n in DEFAULT_SET_PLAN.values()}
    base = [t for t in traces if int(t.name.rsplit("-", 1)[1]) < count[t.name.rsplit("-", 1)[0]]]
    # the default set's own units are assigned alone, exactly as without extra_val; the extra ones are val
    splits = assign_splits([t.meta.unit for t in base], strata={t.meta.unit: _scenario_stratum(t.meta) for t in base},
                           seed=base_seed)
    splits |= {t.meta.unit: "val" for t in traces if t.meta.unit not in splits}
    info = {"generator": GENERATOR_VERSION, "base_seed": base_seed,
            "plan": {k: v[1] for k, v in DEFAULT_SET_PLAN.items()}}
    if extra_val:
        info["extra_val_per_scenario"] = extra_val
    name = "default" if not extra_val else f"default-val+{extra_val}"
    cmd = "python -m traces.generate --out traces/data/default" + (f" --extra-val {extra_val}" if extra_val else "")
    return TraceSet.from_traces(
        traces,
        name=name,
        description="Synthetic traces from traces.generators (seeded; no external data). "
        f"Regenerate with: {cmd}",
        splits=splits,
        seed=base_seed,
        info=info,
    )


def _same_tree(a: Path, b: Path) -> list[str]:
    names = sorted({p.name for p in a.iterdir()} | {p.name for p in b.iterdir()})
    diff = []
    for n in names:
        pa, pb = a / n, b / n
        if not (pa.exists() and pb.exists()) or pa.read_bytes() != pb.read_bytes():
            diff.append(n)
    return diff


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    ap = argparse.ArgumentParser(prog="python -m traces.generate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=None,
                    help="set folder (default: the committed default set) or, with --scenario, a CSV")
    ap.add_argument("--seed", type=nonneg_int, default=None,
                    help=f"base seed of the set (default {DEFAULT_SET_SEED}) or the scenario seed")
    ap.add_argument("--scenario", choices=sorted(SCENARIOS), help="generate one trace of this scenario")
    ap.add_argument("--extra-val", type=nonneg_int, default=0,
                    help="this many more traces per scenario, all in val (the default set's traces, splits and "
                    "test split unchanged): a larger val split for model selection; write it outside the "
                    "committed default set, e.g. --out data/default-val+2 (default 0)")
    ap.add_argument("--check", action="store_true", help="only compare with --out; exit 1 on difference")
    ap.add_argument("--force", action="store_true",
                    help="replace the files this command writes if they exist (others are never touched)")
    args = ap.parse_args(argv)
    if args.check and args.scenario:
        ap.error("argument --check: compares a whole set; not allowed with --scenario")
    if args.extra_val and args.scenario:
        ap.error("argument --extra-val: adds traces to the whole set; not allowed with --scenario")
    if args.extra_val and args.out is None:
        ap.error("argument --extra-val: needs --out (the committed default set stays the default one)")
    try:
        return _run(args)
    except (ExistsError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    if args.scenario:
        trace = SCENARIOS[args.scenario](args.seed if args.seed is not None else 0)
        out = args.out or Path(f"{trace.name}.csv")
        if out.is_dir():
            raise ExistsError(f"{out}: is a folder; with --scenario, --out is a CSV file")
        save_trace(trace, out, force=args.force)
        print(f"wrote {out} ({len(trace)} rows, {trace.duration_s / 3600:.2f} h)")
        return 0
    out = args.out or default_trace_set_dir()
    ts = build_default_set(DEFAULT_SET_SEED if args.seed is None else args.seed, extra_val=args.extra_val)
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            ts.save(tmp, force=True)
            if not out.is_dir():
                print(f"{out} does not exist", file=sys.stderr)
                return 1
            diff = _same_tree(Path(tmp), out)
        if diff:
            print(f"{len(diff)} file(s) differ from a fresh generation: {', '.join(diff[:10])}",
                  file=sys.stderr)
            return 1
        print(f"{out}: identical to a fresh generation ({len(ts)} traces)")
        return 0
    ts.save(out, force=args.force)
    size = sum((out / e.file).stat().st_size for e in ts.entries)
    s = ts.summary()
    print(f"wrote {len(ts)} traces to {out} ({size / 1e6:.2f} MB): "
          + ", ".join(f"{k} {s[k]['traces']}" for k in ("train", "val", "test")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
