"""The GPU profile's reports: benchmarks/calibration.py against a given ground-truth profile (energy errors
included) and benchmarks/roofline_vs_measured.py on the committed H200 profile. Both run on the CPU here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bench_helpers import load_benchmark

REPO = Path(__file__).resolve().parent.parent
H200 = REPO / "benchmarks" / "results" / "cuda_h200"


def test_calibration_report_scores_latency_and_energy_against_a_truth_profile(tmp_path):
    cal = load_benchmark("calibration")
    out = tmp_path / "cal.json"
    cal.main(["--budget-s", "2", "--decode-tokens", "4", "--threads", "1", "--truth",
              str(REPO / "profiles" / "reference-cpu.json"), "--out", str(out)])
    d = json.loads(out.read_text())
    assert len(d["rows"]) == 48 and d["ground_truth"]["profile"].endswith("reference-cpu.json")
    truth = {r["name"]: r for r in json.loads((REPO / "profiles" / "reference-cpu.json").read_text())["configs"]}
    for r in d["rows"]:  # the truth is the profile's own figures; the base IS that profile here
        assert r["measured_ms"] == truth[r["name"]]["decode_ms_per_token_median"]
        assert r["measured_j"] == truth[r["name"]]["energy_j_per_token"]
        assert r["base_err_pct"] == pytest.approx(0.0) and r["base_energy_err_pct"] == pytest.approx(0.0)
    e = d["summary"]["energy"]
    assert e["source"] in ("rapl", "nvml", "power_supply", "modelled") and e["base"]["worst_abs_pct"] < 1e-9
    assert e["calibrated"]["n"] == 48


def test_calibration_report_refuses_a_predicted_truth(tmp_path):
    cal = load_benchmark("calibration")
    with pytest.raises(SystemExit, match="not a fully measured profile"):
        cal.main(["--budget-s", "1", "--decode-tokens", "4", "--truth",
                  str(REPO / "profiles" / "calibrated-intel-xeon-2c.json"), "--out", str(tmp_path / "x.json")])


def test_roofline_vs_measured_on_the_h200_profile(tmp_path):
    rv = load_benchmark("roofline_vs_measured")
    out = tmp_path / "rv.json"
    rv.main(["--hardware", str(H200 / "host.json"), "--measured", str(REPO / "profiles" / "cuda-h200.json"),
             "--out", str(out)])
    d = json.loads(out.read_text())
    assert d["hardware"]["processor"].startswith("NVIDIA H200") and len(d["rows"]) == 48
    meas = {r["name"]: r for r in json.loads((REPO / "profiles" / "cuda-h200.json").read_text())["configs"]}
    for r in d["rows"]:
        m = meas[r["name"]]
        assert r["latency_err_pct"] == pytest.approx(
            100 * (r["projected_ms"] - m["decode_ms_per_token_median"]) / m["decode_ms_per_token_median"])
    assert set(d["summary"]) == {"all", "32-bit", "8-bit", "4-bit"}
    with pytest.raises(SystemExit, match="has no processor role 'npu'"):
        rv.main(["--hardware", str(H200 / "host.json"), "--measured", str(REPO / "profiles" / "cuda-h200.json"),
                 "--role", "npu", "--out", str(tmp_path / "y.json")])


def test_the_committed_h200_profile_is_a_measured_gpu_profile_with_nvml_energy():
    from model.profile_schema import load_profile

    p = load_profile(REPO / "profiles" / "cuda-h200.json")
    assert p.data["device"]["kind"] == "cuda" and p.energy_source == "nvml"
    assert p.data["energy_assumptions"]["idle_power_w_basis"].startswith("measured: mean nvml power")
    assert all(r["energy_source"] == "nvml" and r["energy_j_per_token"] > 0 for r in p.configs)
