"""runtime.hardware: shipped descriptions validate, feed the roofline, errors name file/processor/field,
host_hardware() with and without a (mocked) CUDA GPU, numpy + stdlib only at import."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from runtime import hardware as rh
from runtime.dynamics import DEVICES
from runtime.hardware import (
    HARDWARE_FOR_KIND,
    Hardware,
    HardwareError,
    hardware_for_kind,
    host_hardware,
    list_hardware,
    load_hardware,
    modelled_fields,
)
from runtime.placement import ROLES

REPO = Path(__file__).resolve().parent.parent
SHIPPED = list_hardware()


def test_shipped_files_are_the_expected_ones() -> None:
    assert {"phone-sd8gen2", "jetson-orin-nano-8gb", "laptop-i7-1260p"} <= set(SHIPPED)
    assert set(HARDWARE_FOR_KIND) == set(DEVICES)  # every trace device kind has hardware
    for kind, name in HARDWARE_FOR_KIND.items():
        assert name in SHIPPED
        hw = hardware_for_kind(kind)
        assert hw.name == name
        assert hw.device_kind == (kind if kind != "default" else "phone")
    assert hardware_for_kind("no-such-kind").name == HARDWARE_FOR_KIND["default"]


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_file_loads_validates_and_round_trips(name: str) -> None:
    hw = load_hardware(name)
    assert hw.name == name and hw.has("cpu")
    assert hw.roles == tuple(r for r in ROLES if r in hw.processors)
    assert all(p.role == r for r, p in hw.processors.items())
    again = Hardware.from_dict(json.loads(json.dumps(hw.to_dict())), "<round trip>")
    assert again == hw
    assert hw.sources and all(len(s) > 20 for s in hw.sources)
    # by path too
    assert load_hardware(rh.HARDWARE_DIR / f"{name}.json") == hw


@pytest.mark.parametrize("name", SHIPPED)
def test_every_processor_passes_the_roofline_spec_validator(name: str) -> None:
    from model.roofline import peak_ops_per_s, spec_from_dict  # the test may import model/; the module may not

    hw = load_hardware(name)
    for role, p in hw.processors.items():
        spec = spec_from_dict(hw.roofline_dict(role), f"{name}:{role}")
        assert spec.kind == p.kind and spec.mem_bandwidth_gbs == p.mem_bandwidth_gbs
        assert spec.name == f"{name}:{role}" and list(spec.sources) == list(hw.sources)
        spec_from_dict(p.roofline_dict())  # stand-alone, with the default pointer source
        for bits in p.weight_bits:
            assert peak_ops_per_s(spec, bits)[0] > 0


def test_phone_has_all_four_roles_and_an_int_only_npu() -> None:
    hw = load_hardware("phone-sd8gen2")
    assert hw.roles == ("cpu", "lcpu", "gpu", "npu")
    npu = hw.processors["npu"]
    assert 32 not in npu.weight_bits and set(npu.weight_bits) == {8, 4}
    assert npu.activation_bits == (16, 8)
    assert hw.processors["cpu"].cores == 5 and hw.processors["lcpu"].cores == 3
    # all heat of an SoC ends up in the handset
    assert all(p.thermal_share == 1.0 for p in hw.processors.values())
    assert hw.processors["gpu"].trip_offset_c < 0 < hw.processors["npu"].trip_offset_c
    # the phone's memory budget is runtime.dynamics' phone budget
    assert all(p.memory_mb == DEVICES["phone"].memory_mb for p in hw.processors.values())


def test_hand_computed_figures() -> None:
    phone = load_hardware("phone-sd8gen2")
    # X3: 32 FLOP/cycle x 3.2 GHz + 4 cores x 16 FLOP/cycle x 2.8 GHz = 102.4 + 179.2
    assert phone.processors["cpu"].peak_fp32_gflops == pytest.approx(281.6, abs=0.5)
    # LPDDR5X 8400 MT/s x 8 bytes
    assert phone.processors["npu"].mem_bandwidth_gbs == pytest.approx(8400e6 * 8 / 1e9)
    jet = load_hardware("jetson-orin-nano-8gb")
    assert jet.processors["gpu"].peak_fp32_gflops == pytest.approx(1024 * 2 * 0.625)
    assert jet.processors["cpu"].peak_fp32_gflops == pytest.approx(6 * 16 * 1.5)
    lap = load_hardware("laptop-i7-1260p")
    assert lap.processors["gpu"].peak_fp32_gflops == pytest.approx(96 * 16 * 1.4, rel=0.01)
    ic = phone.interconnect
    # 1 MB at 20 GB/s = 0.05 ms, + 50 us latency; 1e6 B x 80 pJ/B = 80 uJ
    assert ic.transfer_ms(1e6) == pytest.approx(0.05 + 0.05)
    assert ic.transfer_j(1e6) == pytest.approx(80e-6)


@pytest.mark.parametrize("name", SHIPPED)
def test_modelled_fields_are_reported(name: str) -> None:
    hw = load_hardware(name)
    mf = modelled_fields(hw)
    expected = [f"{r}.{k}" for r, p in hw.processors.items() for k, v in p.notes.items() if "assumption" in v]
    expected += [f"interconnect.{k}" for k, v in hw.interconnect.notes.items() if "assumption" in v]
    assert mf == expected and mf
    assert hw.modelled is True
    for f in mf:
        role, field = f.split(".")
        notes = hw.interconnect.notes if role == "interconnect" else hw.processors[role].notes
        assert notes[field].startswith("assumption (modelled):")


# ---- errors name the file, the processor and the field --------------------------------------------

def _phone() -> dict:
    return json.loads((rh.HARDWARE_DIR / "phone-sd8gen2.json").read_text())


def _err(d: dict, src: str = "my-phone.json") -> str:
    with pytest.raises(HardwareError) as ei:
        Hardware.from_dict(d, src)
    return str(ei.value)


def test_error_missing_field_names_file_processor_field() -> None:
    d = _phone()
    del d["processors"]["gpu"]["dispatch_ms"]
    msg = _err(d)
    assert "my-phone.json" in msg and "'gpu'" in msg and "dispatch_ms" in msg and "add" in msg


def test_error_unknown_role() -> None:
    d = _phone()
    d["processors"]["tpu"] = d["processors"]["npu"]
    msg = _err(d)
    assert "my-phone.json" in msg and "'tpu'" in msg and "roles are" in msg


def test_error_negative_power() -> None:
    d = _phone()
    d["processors"]["lcpu"]["idle_power_w"] = -0.1
    msg = _err(d)
    assert "my-phone.json" in msg and "'lcpu'" in msg and "idle_power_w" in msg and ">= 0" in msg
    d = _phone()
    d["processors"]["npu"]["active_power_w"] = -3
    msg = _err(d)
    assert "'npu'" in msg and "active_power_w" in msg and "> 0" in msg


def test_error_weight_bits_outside_the_model_precisions() -> None:
    d = _phone()
    d["processors"]["npu"]["weight_bits"] = [16, 8]
    msg = _err(d)
    assert "my-phone.json" in msg and "'npu'" in msg and "weight_bits" in msg and "[16]" in msg
    assert "[32, 8, 4]" in msg


@pytest.mark.parametrize("mutate, words", [
    (lambda d: d["processors"]["cpu"].update(surprise=1), ["unknown field", "surprise"]),
    (lambda d: d.update(colour="red"), ["unknown field", "colour"]),
    (lambda d: d["processors"]["gpu"]["notes"].pop("peak_int8_gops"), ["'gpu'", "peak_int8_gops", "note"]),
    (lambda d: d["processors"]["gpu"]["notes"].update(peak_fp32_gflops="about 2 TFLOPS"), ["must start with"]),
    (lambda d: d["processors"]["cpu"]["notes"].update(peak_fp32_gflops="derived: assumes 3 GHz"),
     ["assumption (modelled)"]),
    (lambda d: d.update(modelled=False), ["'modelled'", "set it to true"]),
    (lambda d: d["processors"].pop("cpu"), ["no 'cpu'"]),
    (lambda d: d["processors"]["gpu"].update(kind="npu"), ["'gpu'", "kind"]),
    (lambda d: d["processors"]["gpu"].update(cores=4), ["'gpu'", "cores", "null"]),
    (lambda d: d["processors"]["cpu"].update(cores=0), ["'cpu'", "cores"]),
    (lambda d: d["processors"]["cpu"].update(efficiency=1.5), ["efficiency", "<= 1"]),
    (lambda d: d["processors"]["cpu"].update(thermal_share=0), ["thermal_share", "> 0"]),
    (lambda d: d["processors"]["cpu"].update(trip_offset_c=273), ["trip_offset_c", "<= 30"]),
    (lambda d: d["processors"]["cpu"].update(idle_power_w=9.0), ["idle_power_w", "exceeds"]),
    (lambda d: d["processors"]["npu"].update(activation_bits=[8, 8]), ["activation_bits", "duplicate"]),
    (lambda d: d["processors"]["npu"].update(peak_fp32_gflops=None), ["peak_fp32_gflops", "null"]),
    (lambda d: d["interconnect"].update(latency_us=-1), ["interconnect", "latency_us"]),
    (lambda d: d.update(device_kind="toaster"), ["device_kind", "toaster"]),
    (lambda d: d.update(sources=[]), ["sources"]),
])
def test_other_errors(mutate, words) -> None:
    d = copy.deepcopy(_phone())
    mutate(d)
    msg = _err(d)
    assert "my-phone.json" in msg
    for w in words:
        assert w in msg, (w, msg)


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(HardwareError, match="shipped"):
        load_hardware("no-such-device")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(HardwareError, match="bad.json: not valid JSON"):
        load_hardware(bad)
    d = _phone()
    d["processors"]["npu"]["weight_bits"] = [64]
    p = tmp_path / "mine.json"
    p.write_text(json.dumps(d))
    with pytest.raises(HardwareError, match=r"mine\.json: processor 'npu' field 'weight_bits'"):
        load_hardware(p)


# ---- this host ---------------------------------------------------------------------------------

def _fake_torch(monkeypatch, available: bool, name: str = "NVIDIA H200", total: int = 150_000_000_000) -> None:
    props = types.SimpleNamespace(name=name, total_memory=total, multi_processor_count=132)
    cuda = types.SimpleNamespace(is_available=lambda: available, get_device_properties=lambda i: props)
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=cuda))


def test_host_without_cuda(monkeypatch) -> None:
    _fake_torch(monkeypatch, available=False)
    hw = host_hardware()
    assert hw.device_kind == "host" and hw.roles == ("cpu",)
    cpu = hw.processors["cpu"]
    assert cpu.cores == os.cpu_count()
    assert cpu.name and cpu.name != "unknown CPU"
    assert hw.modelled and "cpu.peak_fp32_gflops" in modelled_fields(hw)
    assert Hardware.from_dict(hw.to_dict()) == hw
    assert host_hardware(cuda=False).roles == ("cpu",)


def test_host_with_mocked_cuda_gpu(monkeypatch) -> None:
    from model.roofline import spec_from_dict

    _fake_torch(monkeypatch, available=True, name="NVIDIA H200", total=150_000_000_000)
    hw = host_hardware()
    gpu = hw.processors["gpu"]
    assert gpu.name == "NVIDIA H200" and gpu.memory_mb == pytest.approx(150_000.0)
    assert gpu.peak_fp32_gflops == 67_000 and gpu.mem_bandwidth_gbs == 4800  # H200 SXM datasheet
    assert gpu.notes["mem_bandwidth_gbs"].startswith("datasheet:")
    assert any("H200" in s for s in hw.sources)
    assert hw.interconnect.bytes_per_s == pytest.approx(63e9 * 0.8)  # PCIe Gen5 x16
    spec_from_dict(hw.roofline_dict("gpu"))
    # an unknown GPU gets modelled defaults, said so
    _fake_torch(monkeypatch, available=True, name="NVIDIA Mystery 9000", total=8_000_000_000)
    hw = host_hardware()
    assert hw.processors["gpu"].name == "NVIDIA Mystery 9000"
    assert "gpu.peak_fp32_gflops" in modelled_fields(hw) and "gpu.mem_bandwidth_gbs" in modelled_fields(hw)
    # the A100 40GB has the slower HBM2
    _fake_torch(monkeypatch, available=True, name="NVIDIA A100-SXM4-40GB", total=42_000_000_000)
    assert host_hardware().processors["gpu"].mem_bandwidth_gbs == 1555


def test_host_measured_figures_replace_modelled_ones(monkeypatch) -> None:
    _fake_torch(monkeypatch, available=False)
    hw = host_hardware(measured={"mem_bandwidth_gbs": 11.5, "active_power_w": 14.0}, measured_note="stream + RAPL")
    cpu = hw.processors["cpu"]
    assert cpu.mem_bandwidth_gbs == 11.5 and cpu.notes["active_power_w"] == "measured: stream + RAPL"
    assert "cpu.mem_bandwidth_gbs" not in modelled_fields(hw)
    with pytest.raises(HardwareError, match="not a numeric processor field"):
        host_hardware(measured={"colour": 1.0}, cuda=False)
    with pytest.raises(HardwareError, match="active_power_w"):
        host_hardware(measured={"active_power_w": -1.0}, cuda=False)


# ---- isolation and CLI ---------------------------------------------------------------------------

def test_import_pulls_in_no_torch_or_model() -> None:
    code = ("import sys, runtime.hardware as h\n"
            "h.load_hardware('phone-sd8gen2'); h.host_hardware(cuda=False)\n"
            "heavy = [m for m in sys.modules if m.split('.')[0] in ('torch', 'model', 'envs', 'agents', 'gymnasium')]\n"
            "assert not heavy, heavy\n"
            "print('ok')\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "ok"


def test_cli(capsys, monkeypatch) -> None:
    assert rh.main([]) == 0
    out = capsys.readouterr().out
    assert all(n in out for n in SHIPPED)
    assert rh.main(["phone-sd8gen2"]) == 0
    out = capsys.readouterr().out
    assert "| npu | Hexagon" in out and "interconnect: 20 GB/s" in out
    assert rh.main(["jetson-orin-nano-8gb", "--json"]) == 0
    assert Hardware.from_dict(json.loads(capsys.readouterr().out)).name == "jetson-orin-nano-8gb"
    _fake_torch(monkeypatch, available=False)
    assert rh.main(["--host"]) == 0
    assert "| cpu |" in capsys.readouterr().out
    assert rh.main(["nope"]) == 2
    assert "shipped" in capsys.readouterr().err


def test_docs_table_lists_every_shipped_processor() -> None:
    doc = (REPO / "docs" / "hardware.md").read_text(encoding="utf-8")
    for name in SHIPPED:
        hw = load_hardware(name)
        assert f"`{name}`" in doc
        for role, p in hw.processors.items():
            assert f"| {role} | {p.name} |" in doc, (name, role)
