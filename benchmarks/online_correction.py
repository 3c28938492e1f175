"""How well the runtime's online correction predicts a live run: the samples of an ``envs.live`` report
(``--repeats`` ≥ 2; each configuration's per-repeat medians, ``samples_ms``), replayed in the order they were
measured through ``runtime.correction.OnlineCorrection`` on top of the base profile and, when the run had one,
the calibrated profile, with the estimator's global level only, with its precision level, and with its
precision level and size curve. Each sample is predicted from the samples measured before it
(``envs.live.online_corrected``); per configuration the median error after the first round; over configurations
the median and the worst.

    python benchmarks/online_correction.py benchmarks/results/live_calibrated_2026-12-04c.json \
        --out benchmarks/results/online_correction_2026-12-04c.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def replay(report: dict) -> dict:
    """{variant: {"median_pct", "worst_pct"}} for one envs.live report (its JSON): the profile(s) as they are and
    corrected online by the estimator at three levels of detail (global only; per precision; per precision with
    the size curve)."""
    from envs.live import online_corrected
    from envs.power_env import load_cost_tables

    rows, meta = report["rows"], report["meta"]
    if not rows or "samples_ms" not in rows[0]:
        raise SystemExit("this report has no per-repeat samples (samples_ms): envs.live did not record them yet "
                         "when it was written; fix: run python -m envs.live --repeats 5 again")
    costs = load_cost_tables(meta["profile"])
    if list(costs.names) != [r["name"] for r in rows]:
        raise SystemExit(f"the report's configurations are not those of {meta['profile']} in its order")
    repeats = min(len(r["samples_ms"]) for r in rows)
    if repeats < 2:
        raise SystemExit("the report has one repeat: nothing to predict from; fix: envs.live --repeats 2 or more")
    order = [(a, float(r["samples_ms"][k])) for k in range(repeats) for a, r in enumerate(rows)]
    profiles = {"profile": np.asarray(costs.decode_ms, dtype=float)}
    if "calibrated_predicted_ms_per_token" in rows[0]:
        profiles["calibrated"] = np.array([r["calibrated_predicted_ms_per_token"] for r in rows])
    meas = np.array([r["measured_ms_per_token"] for r in rows])
    out = {}
    for label, pred in profiles.items():
        err = np.abs(100.0 * (pred - meas) / meas)
        out[label] = {"median_pct": float(np.median(err)), "worst_pct": float(err.max())}
        for level, curve, what in ((False, False, "global level only"), (True, False, "precision level"),
                                   (True, True, "precision level and size curve")):
            e = np.abs([v for v in online_corrected(costs, pred, order, precision_level=level, size_curve=curve)
                        if v is not None])
            out[f"{label} + online ({what})"] = {"median_pct": float(np.median(e)), "worst_pct": float(e.max())}
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("reports", nargs="+", help="envs.live report JSONs (with samples_ms)")
    p.add_argument("--out", default=None, help="Markdown table (a .json beside it); default: print only")
    a = p.parse_args(argv)
    lines = ["| live run | predicted by | median abs error % | worst abs error % |", "|---|---|---|---|"]
    res = {}
    for f in a.reports:
        try:
            rep = json.loads(Path(f).read_text())
        except OSError as exc:
            raise SystemExit(f"{f}: cannot read it ({exc.strerror}); fix: pass the .json an envs.live run wrote "
                             "beside its report") from None
        except ValueError as exc:
            raise SystemExit(f"{f}: not JSON ({exc}); fix: pass the .json an envs.live run wrote, "
                             "not its .md") from None
        if not isinstance(rep, dict) or not isinstance(rep.get("rows"), list) or "profile" not in rep.get("meta", {}):
            raise SystemExit(f"{f}: not an envs.live report (no meta.profile / rows)")
        r = res[f] = replay(rep)
        for k, v in r.items():
            lines.append(f"| `{Path(f).name}` | {k} | {v['median_pct']:.1f} | {v['worst_pct']:.1f} |")
    from runtime.safeio import write_table_and_json

    write_table_and_json(a.out, "\n".join(lines) + "\n", res)


if __name__ == "__main__":
    main()
