"""How far is the placement roofline from a measured processor? Projected vs measured decode latency and energy.

    python benchmarks/roofline_vs_measured.py --hardware HOST.json --measured PROFILE --role gpu
        [--base profiles/reference-cpu.json] [--out benchmarks/results/roofline_vs_measured.json] [--force]

Projects every configuration onto ``--role`` of ``--hardware`` (``model.placement_profile.build``, one
processor, no cut: the figures a placement profile uses where nothing was measured) and compares each with the
same configuration in ``--measured`` (a full ``python -m model.profile`` of that processor, e.g. the GPU
profile of ``benchmarks/cuda_profile.sh``; its description from ``python -m runtime.hardware --host --json`` on
the same machine). Per configuration the signed error (projected − measured) / measured of decode ms/token and of
energy J/token; median and worst absolute error, per precision and overall. Writes JSON (date, hardware,
profile hashes, rows) and prints a Markdown table (docs/placement.md).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from model.placement_profile import build
from model.profile_schema import load_profile
from runtime.hardware import load_hardware
from runtime.safeio import atomic_write_text, file_sha256, refuse_existing


def _stats(v: list[float]) -> dict:
    a = np.abs(np.asarray(v, dtype=float))
    return {"median_abs_pct": float(np.median(a)), "worst_abs_pct": float(np.max(a)),
            "median_signed_pct": float(np.median(v)), "n": int(a.size)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--hardware", required=True, help="a hardware description (runtime.hardware --host --json)")
    p.add_argument("--measured", required=True, help="a fully measured profile of that processor")
    p.add_argument("--role", default="gpu", help="the processor role of --hardware to project onto")
    p.add_argument("--base", default="profiles/reference-cpu.json")
    p.add_argument("--out", default="benchmarks/results/roofline_vs_measured.json")
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    a = p.parse_args(argv)
    try:
        refuse_existing(a.out, a.force, "report")
    except FileExistsError as exc:
        raise SystemExit(f"benchmarks/roofline_vs_measured.py: {exc}") from None
    hw = load_hardware(a.hardware)
    if a.role not in hw.processors:
        raise SystemExit(f"benchmarks/roofline_vs_measured.py: {a.hardware} has no processor role {a.role!r} "
                         f"(it has {sorted(hw.processors)})")
    meas = load_profile(a.measured)
    pred = [r for r in meas.configs if r.get("source", "measured") != "measured"]
    if pred:
        raise SystemExit(f"benchmarks/roofline_vs_measured.py: {a.measured} has {len(pred)} predicted records; "
                         "give a fully measured profile (python -m model.profile)")
    proj = build(hw, load_profile(a.base), None, [a.role], "none")
    by_meas = {r["name"]: r for r in meas.configs}
    rows = []
    for r in proj["configs"]:
        base_name = "-".join(r["name"].split("-")[:3])  # L6-H100-fp32-gpu -> L6-H100-fp32
        m = by_meas.get(base_name)
        if m is None:
            continue
        row = {"name": base_name, "bits": int(m["bits"]), "projected_ms": r["decode_ms_per_token_median"],
               "measured_ms": m["decode_ms_per_token_median"], "projected_j": r["energy_j_per_token"],
               "measured_j": m["energy_j_per_token"]}
        row["latency_err_pct"] = 100 * (row["projected_ms"] - row["measured_ms"]) / row["measured_ms"]
        row["energy_err_pct"] = 100 * (row["projected_j"] - row["measured_j"]) / row["measured_j"]
        rows.append(row)
    if not rows:
        raise SystemExit("benchmarks/roofline_vs_measured.py: no configuration in common between the projection "
                         f"and {a.measured}")
    summary = {"all": {"latency": _stats([r["latency_err_pct"] for r in rows]),
                       "energy": _stats([r["energy_err_pct"] for r in rows])}}
    for bits in sorted({r["bits"] for r in rows}, reverse=True):
        g = [r for r in rows if r["bits"] == bits]
        summary[f"{bits}-bit"] = {"latency": _stats([r["latency_err_pct"] for r in g]),
                                  "energy": _stats([r["energy_err_pct"] for r in g])}
    out = {"date": time.strftime("%Y-%m-%d"), "hardware": {"path": a.hardware, "sha256": file_sha256(a.hardware),
                                                            "processor": hw.processors[a.role].name},
           "measured_profile": {"path": a.measured, "sha256": file_sha256(a.measured),
                                "device": meas.data["device"], "energy_source": meas.data["energy_source"],
                                "created_utc": meas.data["created_utc"]},
           "role": a.role, "summary": summary, "rows": rows}
    atomic_write_text(a.out, json.dumps(out, indent=1) + "\n")
    print(f"{out['date']}: roofline projection onto {out['hardware']['processor']} vs {a.measured} "
          f"({meas.data['device']['name']}, energy {meas.data['energy_source']})\n")
    print("| precision | latency: median / worst abs error (median signed) | energy: median / worst abs error "
          "(median signed) |\n|---|---|---|")
    for k, s in summary.items():
        lat, en = s["latency"], s["energy"]
        print(f"| {k} | {lat['median_abs_pct']:.0f} / {lat['worst_abs_pct']:.0f} % ({lat['median_signed_pct']:+.0f} %) "
              f"| {en['median_abs_pct']:.0f} / {en['worst_abs_pct']:.0f} % ({en['median_signed_pct']:+.0f} %) |")
    print(f"\nwrote {a.out}")


if __name__ == "__main__":
    main()
