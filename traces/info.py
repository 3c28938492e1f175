"""Summarise a trace set or a trace file: durations, energies, splits.

Usage::

    python -m traces.info traces/data/default            # per-split table
    python -m traces.info data/real --per-trace          # plus one line per trace
    python -m traces.info my.csv                         # one trace
    python -m traces.info traces/data/default --json     # machine-readable

Exit codes: 0 done, 1 an input file problem (the message names the file), 2 a usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from traces.schema import Trace, TraceValidationError
from traces.store import SPLITS, TraceSet, load_trace


def trace_figures(t: Trace) -> dict[str, Any]:
    """Figures of one trace (hours, Wh, tokens, plugged share, outage share, ...)."""
    hold = t.hold_s
    dur = float(hold.sum())
    return {
        "name": t.name,
        "device_kind": t.meta.device_kind,
        "unit": t.meta.unit,
        "rows": len(t),
        "step_s": round(t.step_s, 3),
        "duration_h": round(t.duration_s / 3600.0, 3),
        "capacity_wh": t.meta.capacity_wh,
        "initial_soc": t.meta.initial_soc,
        "supply_energy_wh": round(t.supply_energy_j / 3600.0, 3),
        "base_load_energy_wh": (None if np.isnan(t.base_load_energy_j)
                                else round(t.base_load_energy_j / 3600.0, 3)),
        "plugged_frac": round(float(np.sum(t.plugged * hold) / dur), 4),
        "ambient_c_min_mean_max": [round(float(t.ambient_c.min()), 2),
                                   round(float(np.sum(t.ambient_c * hold) / dur), 2),
                                   round(float(t.ambient_c.max()), 2)],
        "demand_tps_mean": round(t.demand_tokens / dur, 2),
        "demand_tps_p95": round(float(np.percentile(t.demand_tps, 95)), 2),
        "bandwidth_mbps_mean": round(float(np.sum(t.bandwidth_mbps * hold) / dur), 3),
        "link_down_frac": round(float(np.sum((t.bandwidth_mbps <= 0) * hold) / dur), 4),
        "deadline_h": None if t.meta.deadline_s is None else round(t.meta.deadline_s / 3600.0, 3),
        "has_budget": t.has_budget,
    }


def set_figures(ts: TraceSet, *, load: bool = True) -> dict[str, Any]:
    """Per-split aggregates; with ``load`` also plugged share, link-down share, mean demand."""
    out = ts.summary()
    if load:
        for s in SPLITS + ("all",):
            trs = [ts.get(e.name) for e in ts.entries if s == "all" or e.split == s]
            if not trs:
                continue
            hold = np.concatenate([t.hold_s for t in trs])
            dur = float(hold.sum())
            plugged = np.concatenate([t.plugged for t in trs])
            bw = np.concatenate([t.bandwidth_mbps for t in trs])
            base = [t.base_load_energy_j for t in trs if not np.isnan(t.base_load_energy_j)]
            out[s].update({
                "plugged_frac": round(float(np.sum(plugged * hold) / dur), 4),
                "link_down_frac": round(float(np.sum((bw <= 0) * hold) / dur), 4),
                "bandwidth_mbps_mean": round(float(np.sum(bw * hold) / dur), 3),
                "demand_tps_mean": round(sum(t.demand_tokens for t in trs) / dur, 2),
                "base_load_energy_wh": round(sum(base) / 3600.0, 3) if base else None,
                "capacity_wh_total": round(sum(t.meta.capacity_wh for t in trs), 2),
            })
    return out


def format_summary(ts: TraceSet, *, load: bool = True) -> str:
    """Human-readable per-split table."""
    fig = set_figures(ts, load=load)
    lines = [f"trace set {ts.name!r} at {ts.root}: {len(ts)} traces, {len(ts.units())} units"]
    hdr = (f"{'split':6} {'traces':>6} {'units':>5} {'hours':>9} {'supply Wh':>10} {'base Wh':>9} "
           f"{'Mtokens':>8} {'tok/s':>6} {'plugged':>7} {'link0':>6} {'Mbit/s':>7}  kinds")
    lines.append(hdr)
    for s in SPLITS + ("all",):
        f = fig[s]
        lines.append(
            f"{s:6} {f['traces']:>6} {f['units']:>5} {f['duration_h']:>9.2f} {f['supply_energy_wh']:>10.1f} "
            f"{(f.get('base_load_energy_wh') or 0):>9.1f} {f['demand_mtokens']:>8.3f} "
            f"{f.get('demand_tps_mean', 0):>6.1f} {f.get('plugged_frac', 0):>7.3f} "
            f"{f.get('link_down_frac', 0):>6.3f} {f.get('bandwidth_mbps_mean', 0):>7.2f}  "
            + ", ".join(f"{k}={v}" for k, v in f["device_kinds"].items())
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    ap = argparse.ArgumentParser(prog="python -m traces.info", description=__doc__.split("\n\n")[0])
    ap.add_argument("target", type=Path, help="trace-set folder (with manifest.json) or a trace CSV")
    ap.add_argument("--per-trace", action="store_true", help="one line per trace")
    ap.add_argument("--json", action="store_true", help="print JSON")
    ap.add_argument("--fast", action="store_true", help="manifest figures only (do not read CSVs)")
    args = ap.parse_args(argv)
    try:
        if args.target.is_dir():
            ts = TraceSet.load(args.target)
            if args.json:
                doc: dict[str, Any] = {"set": set_figures(ts, load=not args.fast)}
                if args.per_trace:
                    doc["traces"] = [dict(trace_figures(t), split=e.split) for e, t in zip(ts.entries, ts)]
                print(json.dumps(doc, indent=1))
                return 0
            print(format_summary(ts, load=not args.fast))
            if args.per_trace:
                for e in ts.entries:
                    f = trace_figures(ts.get(e.name))
                    print(f"  [{e.split:5}] {f['name']:48} {f['device_kind']:10} {f['duration_h']:7.2f} h "
                          f"supply {f['supply_energy_wh']:8.2f} Wh  demand {f['demand_tps_mean']:6.1f} tok/s "
                          f"plugged {f['plugged_frac']:.2f} link0 {f['link_down_frac']:.2f}")
            return 0
        t = load_trace(args.target)
        print(json.dumps(trace_figures(t), indent=1))
        return 0
    except (TraceValidationError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
