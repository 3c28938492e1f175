"""Does the env's battery, with the model off, follow the battery logs the real traces came from?

Each phone and laptop trace of a built set carries the log's own state of charge (``soc_frac``). Replayed through the
env's battery (``runtime.dynamics.battery_step``: the device kind's idle power plus the trace's ``base_load_w``
drawn, the trace's ``supply_w`` in, ``charge_efficiency`` of a surplus stored), the simulated SoC should follow the
logged one. This compares trace sets built by different importer versions (e.g. before and after
``traces.importers._common.device_side_power``) on the same logs. Writes ``OUT.md``, ``OUT.json``, ``OUT.png``::

    python benchmarks/replay_soc.py --sets data/real,data/real_v2 --labels "until 2026-12-05,device_side_power" \\
        --out benchmarks/results/replay_soc

Per trace: the SoC error at the trace's end (simulated − logged, in points of SoC) and the mean absolute error over
its rows. Traces whose log has no SoC are left out.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runtime.dynamics import battery_step, device_constants  # noqa: E402
from traces import TraceSet  # noqa: E402

KINDS = ("phone", "laptop")


def replay(tr) -> np.ndarray:
    """SoC after each row of ``tr`` with the model off, in the env's battery."""
    d = device_constants(tr.meta.device_kind)
    cap_j = tr.meta.capacity_wh * 3600.0
    soc, out = float(tr.meta.initial_soc), np.empty(len(tr))
    base = np.nan_to_num(tr.base_load_w) if tr.base_load_w is not None else np.zeros(len(tr))
    for i in range(len(tr)):
        soc, _ = battery_step(soc, float(tr.supply_w[i]), d.idle_power_w + float(base[i]), float(tr.hold_s[i]), cap_j,
                              d.charge_efficiency)
        soc = max(soc, 0.0)
        out[i] = soc
    return out


def errors(folder: Path) -> dict[str, dict]:
    """{trace: {kind, hours, plugged_frac, end_err_pts, mae_pts}} for the set's traces with a logged SoC."""
    out = {}
    for tr in TraceSet.load(folder):
        if tr.meta.device_kind not in KINDS or tr.soc_frac is None or np.isfinite(tr.soc_frac).sum() < 2:
            continue
        sim, logged = replay(tr), tr.soc_frac
        # the simulated SoC after row i is the logged SoC at the start of row i + 1
        ok = np.isfinite(logged[1:])
        d = (sim[:-1] - logged[1:])[ok]
        out[tr.name] = {"kind": tr.meta.device_kind, "hours": round(tr.duration_s / 3600.0, 3),
                        "plugged_frac": round(float(np.mean(tr.plugged)), 3),
                        "end_err_pts": round(100.0 * float(d[-1]), 3),
                        "mae_pts": round(100.0 * float(np.mean(np.abs(d))), 3)}
    return out


def summary(per: dict[str, dict], kind: str) -> dict:
    rows = [r for r in per.values() if r["kind"] == kind]
    if not rows:
        return {"traces": 0}
    end = np.array([r["end_err_pts"] for r in rows])
    mae = np.array([r["mae_pts"] for r in rows])
    unpl = np.array([r["end_err_pts"] for r in rows if r["plugged_frac"] == 0.0])
    chg = np.array([r["end_err_pts"] for r in rows if r["plugged_frac"] > 0.0])
    return {"traces": len(rows), "end_err_mean_pts": round(float(end.mean()), 3),
            "end_abs_err_median_pts": round(float(np.median(np.abs(end))), 3),
            "end_abs_err_p90_pts": round(float(np.percentile(np.abs(end), 90)), 3),
            "mae_mean_pts": round(float(mae.mean()), 3),
            "unplugged_end_err_mean_pts": round(float(unpl.mean()), 3) if unpl.size else None,
            "with_charger_end_err_mean_pts": round(float(chg.mean()), 3) if chg.size else None}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", required=True, help="comma-separated built trace sets (same logs, different builds)")
    ap.add_argument("--labels", default=None, help="comma-separated label per set (default: the folder names)")
    ap.add_argument("--out", default="benchmarks/results/replay_soc")
    a = ap.parse_args(argv)
    sets = [Path(s) for s in a.sets.split(",")]
    labels = a.labels.split(",") if a.labels else [s.name for s in sets]
    if len(labels) != len(sets):
        ap.error(f"--labels has {len(labels)} labels for {len(sets)} sets; give one per set")
    for s in sets:
        if not (s / "manifest.json").is_file():
            ap.error(f"--sets: {s} is not a built trace set (no manifest.json); build one with "
                     "python -m traces.build_real --shared ../shared/traces --out FOLDER")
    t0 = time.time()
    res = {lab: errors(s) for lab, s in zip(labels, sets, strict=True)}
    summ = {lab: {k: summary(per, k) for k in KINDS} for lab, per in res.items()}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"sets": dict(zip(labels, map(str, sets), strict=True)),
                                                    "summary": summ, "per_trace": res}, indent=1))
    lines = [f"# The env's battery against the battery logs, model off ({time.strftime('%Y-%m-%d')})", "",
             "Each phone and laptop trace replayed through `runtime.dynamics.battery_step` with the model off (the "
             "device kind's idle power plus `base_load_w` drawn, `supply_w` in, the kind's charge efficiency), "
             "against the SoC its log recorded. Error = simulated − logged, in points of SoC (negative: the env "
             f"drains faster than the phone did). Generated by `benchmarks/replay_soc.py --sets {a.sets}` "
             f"in {time.time() - t0:.0f} s.", "",
             "| build | kind | traces | end error, mean | \\|end error\\|, median / p90 "
             "| mean \\|error\\| over the trace "
             "| end error, unplugged throughout | end error, with a charger |",
             "|---|---|---|---|---|---|---|---|"]
    for lab in labels:
        for k in KINDS:
            s = summ[lab][k]
            if not s["traces"]:
                continue
            f = lambda v: "–" if v is None else f"{v:+.2f}"  # noqa: E731
            lines.append(f"| {lab} | {k} | {s['traces']} | {f(s['end_err_mean_pts'])} | "
                         f"{s['end_abs_err_median_pts']:.2f} / {s['end_abs_err_p90_pts']:.2f} | "
                         f"{s['mae_mean_pts']:.2f} | "
                         f"{f(s['unplugged_end_err_mean_pts'])} | {f(s['with_charger_end_err_mean_pts'])} |")
    worst = sorted(res[labels[0]].items(), key=lambda kv: kv[1]["end_err_pts"])[:5]
    lines += ["", f"Largest end errors in `{labels[0]}`, and the same traces in the other builds:", "",
              "| trace | kind | hours | " + " | ".join(labels) + " |", "|---|---|---|" + "---|" * len(labels)]
    for name, r in worst:
        cells = [f"{res[lab][name]['end_err_pts']:+.2f}" if name in res[lab] else "–" for lab in labels]
        lines.append(f"| {name} | {r['kind']} | {r['hours']:.2f} | " + " | ".join(cells) + " |")
    lines += ["", f"![end errors per build]({out.name}.png)", ""]
    out.with_suffix(".md").write_text("\n".join(lines))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(KINDS), figsize=(10, 3.6))
    for ax, k in zip(axes, KINDS, strict=True):
        data = [[r["end_err_pts"] for r in res[lab].values() if r["kind"] == k] for lab in labels]
        ax.boxplot(data, tick_labels=labels, showfliers=True)
        ax.axhline(0.0, color="grey", lw=0.8)
        ax.set_title(f"{k} ({len(data[0])} traces)")
        ax.set_ylabel("SoC at the end, env − log (points)")
    fig.suptitle("The env's battery, model off, against the logs")
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=110)
    print(f"wrote {out}.md/.json/.png", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
