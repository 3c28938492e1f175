"""Plot a trace or a trace set: one panel per column versus time in hours.

Usage::

    python -m traces.plot traces/data/default/phone-00.csv --out phone.png
    python -m traces.plot traces/data/default --split test --max-traces 6 --out test.png

matplotlib is imported lazily (only here), with the non-interactive Agg backend. An existing PNG is
replaced only with ``--force`` (written atomically). Exit codes: 0 done, 1 an input/output file
problem (the message names the file), 2 a usage error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from model.cli import positive_int
from runtime.safeio import atomic_writer, refuse_existing
from traces.schema import (
    AMBIENT_C,
    BANDWIDTH_MBPS,
    BASE_LOAD_W,
    BUDGET_W,
    DEMAND_TPS,
    PLUGGED,
    SOC_FRAC,
    SUPPLY_W,
    Trace,
    TraceValidationError,
)
from traces.store import SPLITS, TraceSet, load_trace

PANELS: tuple[tuple[str, str], ...] = (
    (SUPPLY_W, "supply (W)"),
    (PLUGGED, "plugged"),
    (AMBIENT_C, "ambient (°C)"),
    (DEMAND_TPS, "demand (tok/s)"),
    (BANDWIDTH_MBPS, "bandwidth (Mbit/s)"),
)
OPTIONAL_PANELS: tuple[tuple[str, str], ...] = (
    (BASE_LOAD_W, "base load (W)"),
    (BUDGET_W, "budget (W)"),
    (SOC_FRAC, "measured SoC"),
)


def plot_traces(traces: Sequence[Trace], out: str | Path, *, title: str | None = None,
                smooth_s: float | None = None) -> Path:
    """Writes a multi-panel PNG of one or more traces.

    Args:
        traces: Traces to overlay (time re-based to 0, in hours).
        out: PNG path.
        title: Figure title (default: the trace name(s)).
        smooth_s: Resample to this step before plotting (default: a step giving <= 4000 points).

    Returns:
        The PNG path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(PANELS) + [p for p in OPTIONAL_PANELS
                             if any(np.isfinite(getattr(t, p[0])).any() for t in traces)]
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, 1.7 * len(panels) + 0.8), sharex=True)
    for t in traces:
        step = smooth_s or max(t.step_s, t.duration_s / 4000.0)
        r = t.resample(step) if step > t.step_s else t
        hours = (r.time_s - r.time_s[0]) / 3600.0
        for ax, (col, _) in zip(axes, panels):
            ax.step(hours, getattr(r, col), where="post", lw=0.8, label=t.name)
    for ax, (col, label) in zip(axes, panels):
        ax.set_ylabel(label, fontsize=8)
        ax.grid(alpha=0.3)
        if col == PLUGGED:
            ax.set_ylim(-0.1, 1.1)
    for t in traces:
        if t.meta.deadline_s is not None:
            for ax in axes:
                ax.axvline(t.meta.deadline_s / 3600.0, color="red", ls="--", lw=0.8)
    axes[-1].set_xlabel("time (h)")
    if len(traces) <= 8:
        axes[0].legend(fontsize=7, ncol=2, loc="upper right")
    fig.suptitle(title or ", ".join(t.name for t in traces[:4]) + (" ..." if len(traces) > 4 else ""),
                 fontsize=10)
    fig.tight_layout()
    out = Path(out)
    try:
        with atomic_writer(out, "wb") as fh:
            fig.savefig(fh, dpi=110, format=out.suffix.lstrip(".").lower() or "png")
    finally:
        plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    ap = argparse.ArgumentParser(prog="python -m traces.plot", description=__doc__.split("\n\n")[0])
    ap.add_argument("target", type=Path, help="trace CSV or trace-set folder")
    ap.add_argument("--out", type=Path, required=True, help="PNG to write")
    ap.add_argument("--split", choices=SPLITS, default=None, help="only this split (sets)")
    ap.add_argument("--name", action="append", default=None, help="only these trace names (sets; repeatable)")
    ap.add_argument("--max-traces", type=positive_int, default=6, help="at most this many traces overlaid")
    ap.add_argument("--force", action="store_true", help="replace --out if it exists")
    args = ap.parse_args(argv)
    try:
        refuse_existing(args.out, args.force, "plot")
        if args.target.is_dir():
            ts = TraceSet.load(args.target)
            names = [e.name for e in ts.entries if (args.split is None or e.split == args.split)
                     and (args.name is None or e.name in args.name)]
            traces = [ts.get(n) for n in names[: args.max_traces]]
            title = (f"{ts.name}" + (f" [{args.split}]" if args.split else "")
                     + f": {len(traces)} of {len(names)}")
        else:
            traces = [load_trace(args.target)]
            title = None
        if not traces:
            print("error: no traces selected", file=sys.stderr)
            return 1
        print(f"wrote {plot_traces(traces, args.out, title=title)}")
        return 0
    except (TraceValidationError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
