"""Tests of model.roofline: hand-computed roofline cases, shipped specs, projected profiles."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from model.profile_schema import example_profile, load_profile, save_profile, validate_profile
from model.roofline import (
    DeviceSpec,
    DeviceSpecError,
    list_device_specs,
    load_device_spec,
    main,
    peak_ops_per_s,
    project,
    project_profile,
)


def _spec(**kw: object) -> DeviceSpec:
    base = dict(
        name="toy",
        kind="gpu",
        peak_fp32_gflops=100.0,
        peak_fp16_gflops=200.0,
        peak_int8_gops=400.0,
        peak_int4_gops=None,
        mem_bandwidth_gbs=10.0,
        active_power_w=10.0,
        idle_power_w=1.0,
        efficiency=0.5,
        per_token_overhead_ms=0.1,
        per_layer_overhead_ms=0.05,
        sources=("test",),
    )
    base.update(kw)
    return DeviceSpec(**base)  # type: ignore[arg-type]


CFG = {"active_params": 1_000_000, "resident_bytes": 4_000_000, "depth": 2, "heads": 1.0, "bits": 32}


def test_memory_bound_hand_computed() -> None:
    r = project(CFG, _spec(), context_tokens=0)
    # flops = 2e6 -> 2e6 / 100e9 = 20 us; bytes = 4e6 / 10e9 = 400 us -> memory-bound
    # time = 400 us / 0.5 + (0.1 + 2 * 0.05) ms = 0.8 + 0.2 = 1.0 ms
    assert r["bound"] == "memory"
    assert r["decode_ms_per_token"] == pytest.approx(1.0)
    assert r["energy_j_per_token"] == pytest.approx(1.0e-3 * 10.0)
    assert r["power_w"] == 10.0 and r["energy_source"] == "modelled"
    assert r["compute_path"] == "fp32"
    assert r["flops_per_token"] == 2e6 and r["bytes_per_token"] == 4e6


def test_compute_bound_hand_computed() -> None:
    spec = _spec(
        mem_bandwidth_gbs=1000.0, peak_fp32_gflops=1.0, per_token_overhead_ms=0.0, per_layer_overhead_ms=0.0
    )
    r = project(CFG, spec)
    # flops 2e6 / 1e9 = 2 ms; bytes 4e6 / 1e12 = 4 us -> compute-bound; / 0.5 = 4 ms
    assert r["bound"] == "compute"
    assert r["decode_ms_per_token"] == pytest.approx(4.0)
    assert r["energy_j_per_token"] == pytest.approx(0.04)


def test_attention_and_prefill_terms() -> None:
    spec = _spec(per_token_overhead_ms=0.0, per_layer_overhead_ms=0.0)
    cfg = {**CFG, "heads": 0.5, "bits": 8, "resident_bytes": 1_000_000}
    r = project(cfg, spec, context_tokens=100, prefill_tokens=10, d_model=64, kv_bytes_per_elem=2.0)
    attn_width = 0.5 * 64 * 2  # heads * d_model * depth = 64
    assert r["flops_per_token"] == pytest.approx(2e6 + 4 * 100 * attn_width)
    assert r["bytes_per_token"] == pytest.approx(1e6 + 2 * 100 * attn_width * 2)
    # decode: bytes 1.0256e6 / 10e9 = 102.56 us vs flops 2.0256e6 / 400e9 = 5.06 us -> memory
    assert r["decode_ms_per_token"] == pytest.approx((1e6 + 25600) / 10e9 / 0.5 * 1e3)
    # prefill: bytes 1e6/10 + 2*64*2 = 100256 -> 10.0256 us; flops (2e6 + 4*5.5*64)/400e9 = 5.0035 us
    assert r["prefill_bound"] == "memory"
    assert r["prefill_ms_per_token"] == pytest.approx((1e5 + 256) / 10e9 / 0.5 * 1e3)
    assert r["compute_path"] == "int8"


def test_peak_fallbacks() -> None:
    s = _spec()
    assert peak_ops_per_s(s, 4) == (400e9, "int8")  # no int4 rate -> int8
    assert peak_ops_per_s(_spec(peak_int4_gops=800.0), 4) == (800e9, "int4")
    assert peak_ops_per_s(_spec(peak_int8_gops=None), 8) == (200e9, "fp16")
    assert peak_ops_per_s(_spec(peak_fp16_gflops=None, peak_int8_gops=None), 8) == (100e9, "fp32")
    assert peak_ops_per_s(s, 32) == (100e9, "fp32")
    with pytest.raises(DeviceSpecError, match="bits"):
        peak_ops_per_s(s, 5)


def test_shipped_specs_load_and_cite() -> None:
    names = list_device_specs()
    assert len(names) >= 2
    assert {"jetson-orin-nano-8gb", "snapdragon-8gen2-hexagon", "apple-m2-cpu"} <= set(names)
    for n in names:
        s = load_device_spec(n)
        assert s.sources and all(isinstance(x, str) and x for x in s.sources)
        assert 0 < s.efficiency <= 1
        assert s.idle_power_w < s.active_power_w
        for key in ("peak_int8_gops", "mem_bandwidth_gbs", "active_power_w", "efficiency"):
            assert key in s.notes, f"{n}: no provenance note for {key}"


def test_spec_errors(tmp_path: Path) -> None:
    with pytest.raises(DeviceSpecError, match="shipped specs"):
        load_device_spec("no-such-device")
    good = json.loads((Path(__file__).resolve().parents[1] / "model/devices/apple-m2-cpu.json").read_text())
    bad = dict(good)
    del bad["mem_bandwidth_gbs"]
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(bad))
    with pytest.raises(DeviceSpecError, match="mem_bandwidth_gbs is missing"):
        load_device_spec(p)
    bad = dict(good, efficiency=1.5)
    p.write_text(json.dumps(bad))
    with pytest.raises(DeviceSpecError, match="efficiency"):
        load_device_spec(p)
    bad = dict(good, sources=[])
    p.write_text(json.dumps(bad))
    with pytest.raises(DeviceSpecError, match="sources"):
        load_device_spec(p)


@pytest.mark.parametrize("name", ["jetson-orin-nano-8gb", "snapdragon-8gen2-hexagon", "apple-m2-cpu"])
def test_projected_profile_validates(name: str, tmp_path: Path) -> None:
    src = example_profile(6)
    out = project_profile(src, name)
    validate_profile(out, "projected")
    assert out["device"] == {"kind": "projected", "name": out["device"]["name"], "spec": name}
    assert out["energy_source"] == "modelled"
    assert out["energy_assumptions"]["spec"]["name"] == name
    assert out["name"] == f"example@{name}"
    for c_src, c in zip(src["configs"], out["configs"], strict=True):
        assert c["device"] == name and c["energy_source"] == "modelled"
        assert c["val_loss"] == c_src["val_loss"]  # quality is carried over
        assert c["decode_ms_per_token_p90"] == c["decode_ms_per_token_median"]
        assert c["bound"] in ("memory", "compute")
    assert src["device"]["kind"] == "cpu"  # the source is not modified
    loaded = load_profile(save_profile(out, tmp_path / "proj.json"))
    assert loaded.data["device"]["kind"] == "projected"


def test_projection_monotone_in_params_per_bits() -> None:
    out = project_profile(example_profile(9), "jetson-orin-nano-8gb")
    for bits in (32, 8, 4):
        cs = sorted((c for c in out["configs"] if c["bits"] == bits), key=lambda c: c["active_params"])
        lat = [c["decode_ms_per_token_median"] for c in cs]
        assert lat == sorted(lat)


def test_cli_writes_projections(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = save_profile(example_profile(3), tmp_path / "cpu.json")
    assert main([str(p), "--spec", "apple-m2-cpu", "--out-dir", str(tmp_path)]) == 0
    assert (tmp_path / "cpu@apple-m2-cpu.json").is_file()
    assert "modelled" in capsys.readouterr().out
    assert main(["--list"]) == 0
