"""How well does a calibrated profile predict this host? Base vs calibrated decode latency error.

    python benchmarks/calibration.py [--base profiles/reference-cpu.json] [--budget-s 60] [--repeats 6]
        [--threads 2] [--device cpu|cuda] [--decode-tokens 64] [--out benchmarks/results/calibration.json]
        [--truth PROFILE] [--profile-out my-device.json] [--force]

1. Calibrates ``--base`` to this host exactly as ``python -m model.profile --calibrate`` does
   (``model.profile.calibrate``, default method, ``--budget-s``).
2. Measures ALL configurations once on this host with the same timer (``model.profile.measure_config``,
   ``--repeats`` × 64 decode steps each, round-robin over the configurations): the ground truth.
3. Per configuration, the absolute relative error of the predicted decode latency (median ms/token) against
   the ground truth, for (a) the uncalibrated base profile and (b) the calibrated profile, for every
   prediction method of ``model.profile.CALIBRATION_METHODS`` fitted on the same measured subset; median and
   worst over all configurations and over the predicted ones only (the measured ones differ from the ground
   truth by measurement noise alone, so they show the noise floor).
   ``--truth PROFILE`` takes a fully measured profile of this host (``python -m model.profile`` just before,
   same device and threads) as the ground truth instead of measuring again.
4. Energy per token the same way, against the ground truth's energy under the same meter: the base profile's
   figure, and the calibrated profile's (measured records: the meter; predicted ones: the predicted time ×
   the measured records' effective power of the precision). With no meter on the host (``modelled``), the
   "ground truth" is the energy model's too and the row says so.

``--device cuda`` runs the model on the GPU (``model.profile.gpu_model``) with NVML as the meter
(``model.profile.gpu_meter``): a CPU base profile calibrated onto a GPU.

Writes the JSON with the date and the host fingerprint, and prints a Markdown table (docs/profiles.md).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

import model as M
from model.cli import positive_float, positive_int
from model.energy_model import best_available_meter
from model.profile import (
    CALIBRATION_METHODS,
    DEFAULT_CALIBRATION_METHOD,
    calibrate,
    device_block,
    gpu_meter,
    gpu_model,
    host_fingerprint,
    measure_config,
    predict_from_measured,
)
from model.profile_schema import load_profile, save_profile
from runtime.safeio import atomic_write_text, file_sha256, refuse_existing


def _stats(errs: list[float]) -> dict:
    a = np.abs(np.asarray(errs, dtype=float))
    return {"median_abs_pct": float(np.median(a)), "worst_abs_pct": float(np.max(a)),
            "mean_abs_pct": float(np.mean(a)), "n": int(a.size)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base", default="profiles/reference-cpu.json")
    p.add_argument("--budget-s", type=positive_float, default=60.0)
    p.add_argument("--repeats", type=positive_int, default=6, help="ground-truth repeats per configuration")
    p.add_argument("--threads", type=positive_int, default=2)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where the model runs")
    p.add_argument("--decode-tokens", type=positive_int, default=64,
                   help="decode steps per repeat (calibration and ground truth; at most 192)")
    p.add_argument("--out", default="benchmarks/results/calibration.json")
    p.add_argument("--truth", default=None, metavar="PROFILE",
                   help="a fully measured profile of this host and device to use as the ground truth")
    p.add_argument("--profile-out", default=None, help="also write the calibrated profile here")
    p.add_argument("--force", action="store_true", help="replace existing outputs")
    a = p.parse_args(argv)
    try:
        refuse_existing(a.out, a.force, "calibration report")
        if a.profile_out:
            refuse_existing(a.profile_out, a.force, "profile")
    except FileExistsError as exc:
        raise SystemExit(f"benchmarks/calibration.py: {exc}") from None
    if a.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("benchmarks/calibration.py --device cuda: torch sees no CUDA GPU here; use --device cpu")
    if a.decode_tokens > 192:
        p.error("argument --decode-tokens: at most 192 (the model's context less the 64-token prompt)")
    base = load_profile(a.base)
    torch.set_num_threads(a.threads)
    m = M.load(M.DEFAULT_CHECKPOINT, expect_sha256=base.data["model"]["checkpoint_sha256"])
    meter = best_available_meter()
    if a.device == "cuda":
        m, meter = gpu_model(m), gpu_meter()
    t0 = time.time()
    cal = calibrate(m, base.data, threads=a.threads, budget_s=a.budget_s, name="calibrated", meter=meter,
                    decode_tokens=a.decode_tokens, base_label=a.base, base_sha256=file_sha256(a.base))
    t_cal = time.time() - t0
    if a.profile_out:
        save_profile(cal, a.profile_out)
    # ground truth: every configuration, same timer
    t1 = time.time()
    truth_prof = load_profile(a.truth) if a.truth else None
    if truth_prof is not None:
        bad = [r["name"] for r in truth_prof.configs if r.get("source", "measured") != "measured"]
        if bad or sorted(truth_prof.names) != sorted(base.names):
            raise SystemExit(f"benchmarks/calibration.py --truth {a.truth}: not a fully measured profile of the "
                             f"base's configurations ({len(bad)} predicted records); write one with "
                             f"python -m model.profile --device {a.device} --out PROFILE")
        if truth_prof.data["device"]["kind"] != a.device:
            raise SystemExit(f"benchmarks/calibration.py --truth {a.truth}: measured on "
                             f"{truth_prof.data['device']['kind']}, this run is on {a.device}")
    samples: dict[str, dict] = {r["name"]: {"decode": [], "prefill": [], "energy_j": 0.0} for r in base.configs}
    for r in base.configs if truth_prof is None else []:
        measure_config(m, r["name"], repeats=1, decode_tokens=4, prefill_tokens=8)  # warm
    # round-robin, like calibrate: a slow spell of the host hits every configuration
    for _ in range(a.repeats if truth_prof is None else 0):
        for r in base.configs:
            s = measure_config(m, r["name"], repeats=1, decode_tokens=a.decode_tokens, prefill_tokens=128,
                               meter=meter)
            samples[r["name"]]["decode"] += s["decode"]
            samples[r["name"]]["prefill"] += s["prefill"]
            samples[r["name"]]["energy_j"] += s["energy_j"]
    if truth_prof is None:
        truth = {n: {"decode_ms_per_token_median": float(np.median(s["decode"])),
                     "prefill_ms_per_token_median": float(np.median(s["prefill"])),
                     "energy_j_per_token": s["energy_j"] / len(s["decode"])} for n, s in samples.items()}
    else:
        truth = {r["name"]: {k: float(r[k]) for k in ("decode_ms_per_token_median", "prefill_ms_per_token_median",
                                                       "energy_j_per_token")} for r in truth_prof.configs}
    t_truth = time.time() - t1
    measured_names = set(cal["calibration"]["measured"])
    subset_meas = {r["name"]: {k: r[k] for k in ("decode_ms_per_token_median", "prefill_ms_per_token_median")}
                   for r in cal["configs"] if r["name"] in measured_names}
    preds = {meth: predict_from_measured(base.configs, subset_meas, meth)[0] for meth in CALIBRATION_METHODS}
    cal_by = {r["name"]: r for r in cal["configs"]}
    rows = []
    for r in base.configs:
        n, meas = r["name"], truth[r["name"]]["decode_ms_per_token_median"]
        row = {"name": n, "bits": r["bits"], "active_params": r["active_params"],
               "source": cal_by[n]["source"], "measured_ms": meas,
               "base_ms": r["decode_ms_per_token_median"], "calibrated_ms": cal_by[n]["decode_ms_per_token_median"]}
        row["base_err_pct"] = 100 * (row["base_ms"] - meas) / meas
        row["calibrated_err_pct"] = 100 * (row["calibrated_ms"] - meas) / meas
        e_meas = truth[n]["energy_j_per_token"]
        row.update({"measured_j": e_meas, "base_j": r["energy_j_per_token"],
                    "calibrated_j": cal_by[n]["energy_j_per_token"]})
        row["base_energy_err_pct"] = 100 * (row["base_j"] - e_meas) / e_meas
        row["calibrated_energy_err_pct"] = 100 * (row["calibrated_j"] - e_meas) / e_meas
        for meth in CALIBRATION_METHODS:
            # measured configurations keep their measured value in a calibrated profile, whatever the method
            v = row["calibrated_ms"] if n in measured_names else preds[meth][n]["decode_ms_per_token_median"]
            row[f"{meth}_err_pct"] = 100 * (v - meas) / meas
        rows.append(row)
    pred_rows = [r for r in rows if r["source"] == "predicted"]
    summary = {
        "base": _stats([r["base_err_pct"] for r in rows]),
        "calibrated": _stats([r["calibrated_err_pct"] for r in rows]),
        "calibrated_predicted_only": _stats([r["calibrated_err_pct"] for r in pred_rows]),
        "calibrated_measured_only_noise_floor": _stats([r["calibrated_err_pct"] for r in rows
                                                        if r["source"] == "measured"]),
        "energy": {"source": meter.energy_source,
                   "base": _stats([r["base_energy_err_pct"] for r in rows]),
                   "calibrated": _stats([r["calibrated_energy_err_pct"] for r in rows]),
                   "calibrated_predicted_only": _stats([r["calibrated_energy_err_pct"] for r in pred_rows])},
        "by_method": {meth: {"all": _stats([r[f"{meth}_err_pct"] for r in rows]),
                             "predicted_only": _stats([r[f"{meth}_err_pct"] for r in pred_rows])}
                      for meth in CALIBRATION_METHODS},
    }
    out = {
        "date": time.strftime("%Y-%m-%d"), "load_avg_1min_at_end": os.getloadavg()[0],
        "calibration_load_avg_1min": cal["calibration"]["load_avg_1min"],
        "host_fingerprint": host_fingerprint(a.threads), "device": device_block(m, a.threads),
        "energy_meter": meter.describe() if hasattr(meter, "describe") else {"name": meter.name},
        "idle_power_w": cal["idle_power_w"], "idle_power_w_basis": cal["energy_assumptions"]["idle_power_w_basis"],
        "base_profile": {"path": a.base, "sha256": file_sha256(a.base), "created_utc": base.data["created_utc"]},
        "method": DEFAULT_CALIBRATION_METHOD, "budget_s": a.budget_s,
        "calibration_seconds_used": cal["calibration"]["seconds_used"], "calibration_wall_s": t_cal,
        "calibration_repeats": cal["calibration"]["repeats"], "measured": sorted(measured_names),
        "ground_truth": ({"repeats": a.repeats, "decode_tokens": a.decode_tokens, "prefill_tokens": 128,
                          "threads": a.threads, "wall_s": t_truth} if truth_prof is None else
                         {"profile": a.truth, "sha256": file_sha256(a.truth), **truth_prof.data["method"]}),
        "measured_over_base_decode_geomean": cal["calibration"]["measured_over_base_decode_geomean"],
        "summary": summary, "fits": cal["calibration"]["fits"], "rows": rows,
    }
    atomic_write_text(a.out, json.dumps(out, indent=1) + "\n")
    fp = out["host_fingerprint"]
    print(f"{out['date']}, host {fp['cpu_model']} ({fp['cores_logical']} cores, torch {fp['torch_version']}, "
          f"{fp['threads']} threads, bench_score_us {fp['bench_score_us']}), model on {out['device']['name']}; "
          f"calibration {t_cal:.0f} s "
          f"(budget {a.budget_s:.0f} s, {out['calibration_repeats']} repeats), ground truth "
          + (f"{t_truth:.0f} s\n" if truth_prof is None else f"from {a.truth}\n"))
    print("| profile | median abs error | worst abs error |\n|---|---|---|")
    for label, s in (("base (uncalibrated)", summary["base"]), (f"calibrated ({DEFAULT_CALIBRATION_METHOD})",
                                                                summary["calibrated"]),
                     ("calibrated, predicted configurations only", summary["calibrated_predicted_only"]),
                     ("calibrated, measured configurations only (noise)",
                      summary["calibrated_measured_only_noise_floor"])):
        print(f"| {label} | {s['median_abs_pct']:.1f} % | {s['worst_abs_pct']:.1f} % |")
    for meth, s in summary["by_method"].items():
        print(f"| method {meth}: all / predicted only | {s['all']['median_abs_pct']:.1f} / "
              f"{s['predicted_only']['median_abs_pct']:.1f} % | {s['all']['worst_abs_pct']:.1f} / "
              f"{s['predicted_only']['worst_abs_pct']:.1f} % |")
    en = summary["energy"]
    print(f"\nenergy per token against the ground truth under the same meter ({en['source']}"
          f"{'; modelled, not measured' if en['source'] == 'modelled' else ''}):\n")
    print("| profile | median abs error | worst abs error |\n|---|---|---|")
    for label, key in (("base (uncalibrated)", "base"), ("calibrated", "calibrated"),
                       ("calibrated, predicted configurations only", "calibrated_predicted_only")):
        print(f"| {label} | {en[key]['median_abs_pct']:.1f} % | {en[key]['worst_abs_pct']:.1f} % |")
    print(f"\nwrote {Path(a.out)}")


if __name__ == "__main__":
    main()
