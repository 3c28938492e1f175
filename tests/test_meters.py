"""Tests of runtime.meters against fake sysfs trees, fake NVML and monkeypatched psutil, and of the
modelled CPU energy (model.energy_model) that profiling falls back to."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

from model import energy_model
from model.energy_model import ModelledCpuEnergy
from runtime.meters import (
    EnergyMeter,
    MeterError,
    NullMeter,
    NvmlMeter,
    PowerSupplyMeter,
    PsutilBattery,
    RaplMeter,
    best_available_meter,
    measure,
    probe_meters,
)

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- fake sysfs helpers
def _write(path: Path, text: str | int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{text}\n")


def _zone(root: Path, dirname: str, name: str, energy_uj: int, max_uj: int = 1_000_000_000) -> Path:
    d = root / dirname
    _write(d / "name", name)
    _write(d / "energy_uj", energy_uj)
    _write(d / "max_energy_range_uj", max_uj)
    return d


@pytest.fixture
def rapl_root(tmp_path: Path) -> Path:
    """Two packages, each with a core sub-zone; package 0 also has a DRAM sub-zone; plus mmio."""
    root = tmp_path / "powercap"
    _write(root / "intel-rapl" / "enabled", 1)  # the control-type directory, not a zone
    _zone(root, "intel-rapl:0", "package-0", 1_000_000)
    _zone(root, "intel-rapl:0:0", "core", 700_000)
    _zone(root, "intel-rapl:0:1", "dram", 50_000)
    _zone(root, "intel-rapl:1", "package-1", 2_000_000)
    _zone(root, "intel-rapl:1:0", "core", 900_000)
    _zone(root, "intel-rapl-mmio:0", "package-0", 1_000_000)  # mirror of package 0
    return root


def _bump(root: Path, dirname: str, value: int) -> None:
    _write(root / dirname / "energy_uj", value)


# ----------------------------------------------------------------------------- RAPL
def test_rapl_sums_packages_and_dram_not_subzones(rapl_root: Path) -> None:
    m = RaplMeter(rapl_root)
    assert m.available(), m.reason
    assert set(m.zones) == {"package-0", "dram", "package-1"}
    assert m.read_energy_j() == 0.0  # first read is the origin
    _bump(rapl_root, "intel-rapl:0", 1_000_000 + 3_000_000)  # +3 J
    _bump(rapl_root, "intel-rapl:0:0", 700_000 + 2_000_000)  # core: inside package, ignored
    _bump(rapl_root, "intel-rapl:0:1", 50_000 + 500_000)  # dram +0.5 J
    _bump(rapl_root, "intel-rapl:1", 2_000_000 + 1_000_000)  # +1 J
    _bump(rapl_root, "intel-rapl-mmio:0", 9_000_000)  # ignored
    assert m.read_energy_j() == pytest.approx(4.5)
    assert m.energy_source == "rapl"


def test_rapl_without_dram(rapl_root: Path) -> None:
    m = RaplMeter(rapl_root, include_dram=False)
    assert m.available()
    assert set(m.zones) == {"package-0", "package-1"}
    m.read_energy_j()
    _bump(rapl_root, "intel-rapl:0:1", 10_000_000)
    assert m.read_energy_j() == 0.0


def test_rapl_counter_wrap(tmp_path: Path) -> None:
    root = tmp_path / "powercap"
    _zone(root, "intel-rapl:0", "package-0", 900, max_uj=1000)
    m = RaplMeter(root)
    assert m.available()
    assert m.read_energy_j() == 0.0
    _bump(root, "intel-rapl:0", 980)  # +80
    assert m.read_energy_j() == pytest.approx(80e-6)
    _bump(root, "intel-rapl:0", 30)  # wrapped: +20 to the max, +30 after = +50
    assert m.read_energy_j() == pytest.approx(130e-6)
    _bump(root, "intel-rapl:0", 530)  # +500
    assert m.read_energy_j() == pytest.approx(630e-6)


def test_rapl_skips_psys(tmp_path: Path) -> None:
    root = tmp_path / "powercap"
    _zone(root, "intel-rapl:0", "package-0", 0)
    _zone(root, "intel-rapl:1", "psys", 0)
    m = RaplMeter(root)
    assert m.available()
    assert m.zones == ["package-0"]


def test_rapl_permission_denied_via_opener(rapl_root: Path) -> None:
    def deny_energy(path: Path) -> str:
        if path.name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(path))
        return path.read_text()

    m = RaplMeter(rapl_root, opener=deny_energy)
    assert not m.available()
    assert "permission denied" in m.reason and "CVE-2020-8694" in m.reason
    with pytest.raises(MeterError, match="unavailable"):
        with m.measure():
            pass


def test_rapl_permission_denied_via_file_mode(rapl_root: Path) -> None:
    target = rapl_root / "intel-rapl:0" / "energy_uj"
    os.chmod(target, 0)
    try:
        try:
            target.read_text()
            pytest.skip("running as root: file modes do not block reads (covered by the opener test)")
        except PermissionError:
            pass
        m = RaplMeter(rapl_root)
        assert not m.available()
        assert "permission denied" in m.reason
    finally:
        os.chmod(target, 0o644)


def test_rapl_missing_root(tmp_path: Path) -> None:
    m = RaplMeter(tmp_path / "nope")
    assert not m.available()
    assert "does not exist" in m.reason
    empty = tmp_path / "empty"
    empty.mkdir()
    m2 = RaplMeter(empty)
    assert not m2.available()
    assert "no intel-rapl:N package zone" in m2.reason


def test_rapl_measure_context(rapl_root: Path) -> None:
    m = RaplMeter(rapl_root)
    with m.measure() as meas:
        _bump(rapl_root, "intel-rapl:1", 2_000_000 + 250_000)
    assert meas.energy_j == pytest.approx(0.25)
    assert meas.elapsed_s >= 0
    assert meas.energy_source == "rapl"
    assert meas.n_samples == 0


# ----------------------------------------------------------------------------- power_supply
def _battery(root: Path, name: str = "BAT0", **attrs: int | str) -> Path:
    d = root / name
    _write(d / "type", "Battery")
    _write(d / "status", "Discharging")
    for k, v in attrs.items():
        _write(d / k, v)
    return d


def test_power_supply_power_now(tmp_path: Path) -> None:
    root = tmp_path / "ps"
    _write(root / "AC" / "type", "Mains")
    _write(root / "AC" / "online", 0)
    _battery(root, power_now=7_500_000)  # 7.5 W
    m = PowerSupplyMeter(root)
    assert m.available(), m.reason
    assert m.name == "power_supply:BAT0"
    assert m.read_power_w() == pytest.approx(7.5)
    assert not m.has_energy_counter
    assert m.describe()["status"] == "Discharging"


def test_power_supply_public_attributes(tmp_path: Path) -> None:
    root = tmp_path / "ps"
    d = _battery(root, power_now=1_000_000, capacity=42, energy_full=50_000_000)
    m = PowerSupplyMeter(root)
    assert (m.status(), m.capacity_frac(), m.energy_full_wh()) == (None, None, None)  # not probed yet
    assert m.available(), m.reason
    assert (m.status(), m.capacity_frac()) == ("Discharging", 0.42)
    assert m.energy_full_wh() == pytest.approx(50.0)
    _write(d / "capacity", "full")
    _write(d / "energy_full", "n/a")
    assert m.capacity_frac() is None and m.energy_full_wh() is None
    (d / "capacity").unlink()
    assert m.capacity_frac() is None


def test_power_supply_current_times_voltage(tmp_path: Path) -> None:
    root = tmp_path / "ps"
    _battery(root, current_now=-1_500_000, voltage_now=12_000_000)  # |−1.5 A| × 12 V = 18 W
    m = PowerSupplyMeter(root)
    assert m.available(), m.reason
    assert m.read_power_w() == pytest.approx(18.0)


def test_power_supply_energy_now_deltas(tmp_path: Path) -> None:
    root = tmp_path / "ps"
    d = _battery(root, energy_now=50_000_000, power_now=5_000_000)
    m = PowerSupplyMeter(root)
    assert m.available()
    assert m.has_energy_counter
    assert m.read_energy_j() == 0.0
    _write(d / "energy_now", 50_000_000 - 1_000)  # 1000 µWh = 3.6 J drained
    assert m.read_energy_j() == pytest.approx(3.6)
    _write(d / "energy_now", 50_000_000 + 5_000)  # charging: ignored, stays monotonic
    assert m.read_energy_j() == pytest.approx(3.6)
    _write(d / "energy_now", 50_000_000 + 4_000)  # −1000 µWh again
    assert m.read_energy_j() == pytest.approx(7.2)


def test_power_supply_integrates_power_in_measure(tmp_path: Path) -> None:
    root = tmp_path / "ps"
    _battery(root, power_now=10_000_000, energy_now=1)  # 10 W; energy_now ignored below
    m = PowerSupplyMeter(root, use_energy_now=False)
    assert m.available()
    assert not m.has_energy_counter
    with m.measure(sample_interval_s=0.01) as meas:
        time.sleep(0.1)
    # Constant 10 W: the trapezoid integral is exact up to timing between the last read and exit.
    assert meas.energy_j == pytest.approx(10.0 * meas.elapsed_s, rel=0.05)
    assert meas.n_samples >= 3
    assert meas.power_w == pytest.approx(10.0, rel=0.05)


def test_power_supply_picks_named_or_battery(tmp_path: Path) -> None:
    root = tmp_path / "ps"
    _write(root / "AC" / "type", "Mains")
    _battery(root, "BAT1", power_now=1_000_000)
    assert PowerSupplyMeter(root).available()
    assert PowerSupplyMeter(root, name="BAT1").read_power_w() == pytest.approx(1.0)
    missing = PowerSupplyMeter(root, name="BAT9")
    assert not missing.available()
    assert "BAT9" in missing.reason
    only_ac = tmp_path / "ps2"
    _write(only_ac / "AC" / "type", "Mains")
    m = PowerSupplyMeter(only_ac)
    assert not m.available()
    assert "no Battery supply" in m.reason


# ----------------------------------------------------------------------------- psutil battery
def test_psutil_battery_present(monkeypatch: pytest.MonkeyPatch) -> None:
    import psutil

    batt = types.SimpleNamespace(percent=42.5, power_plugged=False, secsleft=3600)
    monkeypatch.setattr(psutil, "sensors_battery", lambda: batt, raising=False)
    r = PsutilBattery()
    assert r.available()
    s = r.read()
    assert (s.percent, s.plugged, s.secsleft_s) == (42.5, False, 3600.0)


def test_psutil_battery_unlimited_and_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    import psutil

    batt = types.SimpleNamespace(percent=100.0, power_plugged=True, secsleft=psutil.POWER_TIME_UNLIMITED)
    monkeypatch.setattr(psutil, "sensors_battery", lambda: batt, raising=False)
    s = PsutilBattery().read()
    assert s.plugged is True and s.secsleft_s is None
    monkeypatch.setattr(psutil, "sensors_battery", lambda: None, raising=False)
    r = PsutilBattery()
    assert not r.available()
    assert "no battery" in r.reason
    s = r.read()
    assert (s.percent, s.plugged, s.secsleft_s) == (None, None, None)


def test_psutil_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psutil", None)  # import psutil -> ImportError
    r = PsutilBattery()
    assert not r.available()
    assert "not installed" in r.reason
    assert r.read().percent is None


# ----------------------------------------------------------------------------- NVML
class _FakeNvmlError(Exception):
    pass


def _fake_nvml(energy_mj: list[int] | None, power_mw: int = 50_000) -> types.ModuleType:
    mod = types.ModuleType("pynvml")
    mod.NVMLError = _FakeNvmlError  # type: ignore[attr-defined]
    mod.nvmlInit = lambda: None  # type: ignore[attr-defined]
    mod.nvmlShutdown = lambda: None  # type: ignore[attr-defined]
    mod.nvmlDeviceGetHandleByIndex = lambda i: ("handle", i)  # type: ignore[attr-defined]
    mod.nvmlDeviceGetName = lambda h: b"Fake GPU"  # type: ignore[attr-defined]

    def total_energy(handle: object) -> int:
        if energy_mj is None:
            raise _FakeNvmlError("Not Supported")
        return energy_mj[0]

    mod.nvmlDeviceGetTotalEnergyConsumption = total_energy  # type: ignore[attr-defined]
    mod.nvmlDeviceGetPowerUsage = lambda h: power_mw  # type: ignore[attr-defined]
    return mod


def test_nvml_total_energy_counter(monkeypatch: pytest.MonkeyPatch) -> None:
    counter = [1_000_000]
    monkeypatch.setitem(sys.modules, "pynvml", _fake_nvml(counter))
    m = NvmlMeter(0)
    assert m.available(), m.reason
    assert m.name == "nvml:0(Fake GPU)"
    assert m.has_energy_counter
    assert m.read_energy_j() == 0.0
    counter[0] += 2_500  # mJ
    assert m.read_energy_j() == pytest.approx(2.5)
    assert m.read_power_w() == pytest.approx(50.0)


def test_nvml_temperature(monkeypatch: pytest.MonkeyPatch) -> None:
    mod = _fake_nvml([0])
    monkeypatch.setitem(sys.modules, "pynvml", mod)
    m = NvmlMeter(0)
    with pytest.raises(MeterError, match="temperature"):  # the fake has no temperature call
        m.read_temperature_c()
    mod.nvmlDeviceGetTemperature = lambda h, kind: 61 if kind == 0 else 0  # type: ignore[attr-defined]
    assert m.read_temperature_c() == 61.0
    monkeypatch.setitem(sys.modules, "pynvml", None)
    with pytest.raises(MeterError, match="NVML unavailable"):
        NvmlMeter(0).read_temperature_c()


def test_nvml_power_integration_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", _fake_nvml(None, power_mw=20_000))
    m = NvmlMeter(0)
    assert m.available(), m.reason
    assert not m.has_energy_counter
    _, meas = measure(lambda: time.sleep(0.08), m, sample_interval_s=0.01)
    assert meas.energy_j == pytest.approx(20.0 * meas.elapsed_s, rel=0.05)
    assert meas.energy_source == "nvml"


def test_nvml_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)
    m = NvmlMeter(0)
    assert not m.available()
    assert "nvidia-ml-py" in m.reason


def test_nvml_init_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    mod = _fake_nvml([0])

    def boom() -> None:
        raise _FakeNvmlError("Driver Not Loaded")

    mod.nvmlInit = boom  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pynvml", mod)
    m = NvmlMeter(0)
    assert not m.available()
    assert "Driver Not Loaded" in m.reason


# ----------------------------------------------------------------------------- modelled / null
def test_modelled_hand_computed() -> None:
    clock = [10.0]
    m = ModelledCpuEnergy(active_power_per_core_w=4.0, dram_pj_per_byte=160.0, cpu_time_fn=lambda: clock[0])
    # 2 core-seconds × 4 W = 8 J; 1e9 bytes × 160 pJ = 0.16 J; 1e9 fp32 MACs × 4.6 pJ = 0.0046 J
    e = m.estimate_energy_j(2.0, 1e9, {"fp32_mac": 1e9})
    assert e == pytest.approx(8.0 + 0.16 + 0.0046)
    assert m.available()
    assert m.read_energy_j() == 0.0
    clock[0] += 0.5
    m.record_work(bytes_moved=1e8)
    assert m.read_energy_j() == pytest.approx(0.5 * 4.0 + 1e8 * 160e-12)
    with pytest.raises(ValueError, match="unknown op kind"):
        m.estimate_energy_j(1.0, 0, {"bogus": 1})
    a = m.assumptions()
    assert a["active_power_per_core_w"] == 4.0 and a["dram_pj_per_byte"] == 160.0
    assert any("Horowitz" in c for c in a["citations"])
    assert m.energy_source == "modelled"


def test_horowitz_constants() -> None:
    t = energy_model.HOROWITZ_45NM_PJ
    assert (t["fp32_mult"], t["fp32_add"], t["int8_add"], t["int8_mult"]) == (3.7, 0.9, 0.03, 0.2)
    assert t["dram_32bit_read"] / 4 == 160.0
    assert t["sram_cache_8kb_64bit_read"] == 10.0


def test_modelled_measure_real_cpu_time() -> None:
    m = ModelledCpuEnergy(active_power_per_core_w=1.0)
    with m.measure() as meas:
        x = 0
        for i in range(200_000):
            x += i
    assert meas.energy_j == pytest.approx(meas.cpu_time_s * 1.0, rel=0.2, abs=0.02)


def test_null_meter() -> None:
    m = NullMeter()
    assert m.available()
    with m.measure() as meas:
        pass
    assert meas.energy_j == 0.0 and meas.energy_source == "none"


def test_best_available_order(rapl_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)
    ps = tmp_path / "ps"
    _battery(ps, power_now=1_000_000)
    m = best_available_meter(powercap_root=rapl_root, power_supply_root=ps)
    assert isinstance(m, RaplMeter)
    m = best_available_meter(powercap_root=tmp_path / "none", power_supply_root=ps)
    assert isinstance(m, PowerSupplyMeter)
    # the runtime's meters are real readings only: no meter here is an error, not a model
    with pytest.raises(MeterError, match="no energy meter available"):
        best_available_meter(powercap_root=tmp_path / "none", power_supply_root=tmp_path / "none")
    with pytest.raises(MeterError, match="no energy meter available"):
        best_available_meter(("rapl",), powercap_root=tmp_path / "none")
    with pytest.raises(ValueError, match="unknown meter kind 'modelled'"):
        best_available_meter(("modelled",))
    report = probe_meters(powercap_root=tmp_path / "none", power_supply_root=ps)
    assert [r["kind"] for r in report] == ["rapl", "nvml", "power_supply"]
    assert [r["available"] for r in report] == [False, False, True]
    assert isinstance(m, EnergyMeter)


def test_extra_kinds_plug_into_selection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)
    none = {"powercap_root": tmp_path / "none", "power_supply_root": tmp_path / "none"}
    m = best_available_meter(("rapl", "null"), extra_kinds={"null": NullMeter}, **none)
    assert isinstance(m, NullMeter)
    report = probe_meters(("rapl", "null"), extra_kinds={"null": NullMeter}, **none)
    assert [(r["kind"], r["available"]) for r in report] == [("rapl", False), ("null", True)]


def test_profiling_selection_falls_back_to_the_model(rapl_root: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)
    ps = tmp_path / "ps"
    _battery(ps, power_now=1_000_000)
    m = energy_model.best_available_meter(powercap_root=rapl_root, power_supply_root=ps)
    assert isinstance(m, RaplMeter)
    m = energy_model.best_available_meter(powercap_root=tmp_path / "none", power_supply_root=tmp_path / "none")
    assert isinstance(m, ModelledCpuEnergy) and m.energy_source == "modelled"
    with pytest.raises(MeterError, match="no energy meter available"):
        energy_model.best_available_meter(("rapl",), powercap_root=tmp_path / "none")
    report = energy_model.probe_meters(powercap_root=tmp_path / "none", power_supply_root=ps)
    assert [r["kind"] for r in report] == ["rapl", "nvml", "power_supply", "modelled"]
    assert [r["available"] for r in report] == [False, False, True, True]
    assert "assumptions" in report[-1]


def test_import_without_optional_packages() -> None:
    """runtime.meters (and the numpy-only model modules) import with torch/psutil/pynvml blocked;
    runtime never imports the model package (model.energy_model imports runtime.meters, not back)."""
    code = (
        "import sys\n"
        "for name in ('torch', 'psutil', 'pynvml', 'matplotlib', 'scipy'):\n"
        "    sys.modules[name] = None\n"
        "import runtime.meters as m, runtime.sensors\n"
        "assert not [k for k in sys.modules if k.split('.')[0] == 'model'], 'runtime imported model'\n"
        "import model.profile_schema, model.roofline, model.scaling, model.energy_model as em\n"
        "assert em.best_available_meter(powercap_root='/nonexistent', "
        "power_supply_root='/nonexistent').energy_source in ('modelled', 'nvml')\n"
        "assert m.PsutilBattery().read().percent is None\n"
        "print('ok')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"


def test_read_without_probe_first(rapl_root: Path, tmp_path: Path) -> None:
    """A first read_energy_j() without available() probes lazily (and must not deadlock)."""
    m = RaplMeter(rapl_root)
    assert m.read_energy_j() == 0.0
    _bump(rapl_root, "intel-rapl:0", 2_000_000)
    assert m.read_energy_j() == pytest.approx(1.0)
    ps = tmp_path / "ps"
    _battery(ps, energy_now=1000)
    assert PowerSupplyMeter(ps).read_energy_j() == 0.0
