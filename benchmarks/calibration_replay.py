"""Re-predict recorded calibrations with every prediction method, without measuring again.

A ``benchmarks/calibration.py`` report (``--out X.md`` writes ``X.json``) records, for every configuration, what
the calibration measured on its subset and what the full ground-truth sweep measured. This script takes the
subset's measurements from such a report, predicts every configuration with each method of
``model.profile.CALIBRATION_METHODS`` (the power laws in active parameters and the one in depth) from the report's
base profile, and scores the predictions against the recorded ground truth: median and worst absolute error of the
decode time per token, per report. It also prints a floor: the worst error
that *any* prediction from (depth, precision) alone must leave, because configurations of equal depth and
precision (they differ only in heads) were measured at different times. Where that floor is high the ground truth's
own noise, not the prediction family, sets the worst case.

Run:  python benchmarks/calibration_replay.py benchmarks/results/calibration.json \\
          benchmarks/results/calibration_quiet.json benchmarks/results/cuda_h200/calibration_cuda.json \\
          --out benchmarks/results/calibration_replay.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

FIELD = "decode_ms_per_token_median"


def _base_records(report: dict, path: Path) -> list[dict]:
    base = report.get("base_profile") or {}
    p = Path(base.get("path", ""))
    p = p if p.is_absolute() else REPO / p
    if not p.is_file():
        raise SystemExit(f"{path}: its base profile {base.get('path')!r} is not in this checkout; fix: check out "
                         "the commit that recorded the report")
    recs = json.loads(p.read_text())["configs"]
    digest = base.get("sha256")
    if digest:
        from model.evaluate import file_sha256

        if file_sha256(p) != digest:
            raise SystemExit(f"{path}: {p} is not the base profile the report was made from (sha256 differs); "
                             "fix: check out the commit that recorded the report")
    return recs


def depth_bits_floor(rows: list[dict], base: dict[str, dict]) -> float:
    """The least worst-case relative error of any predictor that sees only (depth, bits): per group, the best
    single value p for measurements v_min … v_max gives max |p/v − 1| = (v_max − v_min)/(v_max + v_min)."""
    groups: dict[tuple, list[float]] = {}
    for r in rows:
        b = base[r["name"]]
        groups.setdefault((b["depth"], b["bits"]), []).append(float(r["measured_ms"]))
    return max((max(v) - min(v)) / (max(v) + min(v)) for v in groups.values())


def replay(path: Path) -> dict:
    from model.profile import CALIBRATION_METHODS, predict_from_measured

    report = json.loads(path.read_text())
    rows = report.get("rows")
    if not rows or "measured_ms" not in rows[0]:
        raise SystemExit(f"{path}: not a benchmarks/calibration.py report (no rows with measured_ms); fix: pass the "
                         ".json that benchmarks/calibration.py --out writes")
    base_recs = _base_records(report, path)
    base = {r["name"]: r for r in base_recs}
    missing = [r["name"] for r in rows if r["name"] not in base]
    if missing:
        raise SystemExit(f"{path}: configurations {missing[:3]} are not in the base profile; fix: pass a report "
                         "made from a base profile in this checkout")
    # the calibration's own measurements of its subset (a measured row's calibrated value is that measurement);
    # prefill is not in the rows, so it is passed through from the base and not scored
    measured = {r["name"]: {FIELD: float(r["calibrated_ms"]),
                            "prefill_ms_per_token_median": float(base[r["name"]]["prefill_ms_per_token_median"])}
                for r in rows if r["source"] == "measured"}
    truth = {r["name"]: float(r["measured_ms"]) for r in rows}
    out = {"report": str(path.relative_to(REPO) if path.is_relative_to(REPO) else path),
           "date": report.get("date"), "host": report.get("host_fingerprint", {}).get("cpu_model"),
           "device": (report.get("device") or {}).get("name", "cpu") if isinstance(report.get("device"), dict)
           else (report.get("device") or "cpu"),
           "measured": sorted(measured), "methods": {}, "floor_depth_bits": depth_bits_floor(rows, base)}
    base_err = np.array([abs(float(base[n][FIELD]) / truth[n] - 1) for n in truth])
    out["methods"]["base (uncalibrated)"] = {"median": float(np.median(base_err)), "worst": float(base_err.max())}
    for meth in CALIBRATION_METHODS:
        pred, _ = predict_from_measured(base_recs, measured, meth)
        err = np.array([abs(pred[n][FIELD] / truth[n] - 1) for n in truth])
        worst = max(truth, key=lambda n: abs(pred[n][FIELD] / truth[n] - 1))
        out["methods"][meth] = {"median": float(np.median(err)), "worst": float(err.max()), "worst_config": worst}
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("reports", nargs="+", help="benchmarks/calibration.py JSON reports")
    p.add_argument("--out", default=None, help="write the Markdown table here (and the JSON beside it)")
    a = p.parse_args(argv)
    for r in a.reports:
        if not Path(r).is_file():
            raise SystemExit(f"{r}: no such file; fix: pass a benchmarks/calibration.py report (.json)")
    from model.profile import CALIBRATION_METHODS
    from runtime.safeio import write_table_and_json

    res = [replay(Path(r).resolve()) for r in a.reports]
    cols = ["base (uncalibrated)", *CALIBRATION_METHODS]
    lines = ["Decode time per token: median / worst absolute error of each method's prediction against the "
             "recorded ground truth, from the calibration's own measurements of its subset "
             "(`benchmarks/calibration_replay.py`).", "",
             "| report | device | " + " | ".join(cols) + " | floor from (depth, bits) |",
             "|---|---|" + "---|" * len(cols) + "---|"]
    for r in res:
        cells = [f"{100 * r['methods'][c]['median']:.1f} / {100 * r['methods'][c]['worst']:.1f} %" for c in cols]
        lines.append(f"| `{Path(r['report']).name}` ({r['date']}) | {r['device']} | " + " | ".join(cells)
                     + f" | {100 * r['floor_depth_bits']:.1f} % |")
    lines += ["", "Floor: the worst error any prediction from depth and precision alone must leave, since "
              "configurations that differ only in heads were measured apart; the ground truth's own noise."]
    write_table_and_json(a.out, "\n".join(lines) + "\n", {"reports": res})


if __name__ == "__main__":
    main()
