"""Sensors (availability probes, wrappers of runtime.meters) and the validating SensorHub."""

from __future__ import annotations

import math
import sys
import types
from pathlib import Path

import pytest

from runtime.meters import PowerSupplyMeter, RaplMeter
from runtime.sensors import (
    PLUGGED,
    POWER,
    SOC,
    TEMP,
    BatteryReading,
    BatterySensor,
    ConstantSensor,
    FieldStatus,
    ModelledPowerSensor,
    ModelledThermalSensor,
    NullSensor,
    NvmlSensor,
    PowerSensor,
    PowerSupplySensor,
    PsutilBatterySensor,
    PsutilTemperatureSensor,
    RaplSensor,
    Reading,
    Sensor,
    SensorHub,
    TemperatureSensor,
    live_sensors,
)


class Clock:
    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Scripted(Sensor):
    """Returns whatever the test queues (a Reading, an exception, or 'freeze')."""

    name = "scripted"
    provides = ("soc_frac", "plugged", "temp_c")

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock)
        self.next: object = None
        self.last: Reading | None = None

    def read(self) -> Reading:
        nxt = self.next
        if isinstance(nxt, Exception):
            raise nxt
        if nxt == "freeze":
            assert self.last is not None
            return self.last
        self.last = nxt if isinstance(nxt, Reading) else Reading(self.clock(), soc_frac=0.5, plugged=0.0, temp_c=30.0)
        return self.last


def _write(p: Path, text: object) -> None:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(f"{text}\n")


def test_hub_accepts_valid_and_holds_then_loses_bad_fields() -> None:
    clk = Clock()
    s = Scripted(clk)
    hub = SensorHub([s], hold_s=2.0, stale_after_s=1.0, clock=clk)
    hub.poll(0.0)
    assert hub.values[TEMP] == 30.0 and hub.status[TEMP] == FieldStatus.OK
    assert not hub.degraded and not hub.lost_required
    # NaN temperature: held (last good 30 °C) for up to hold_s, then the conservative default
    for t, expect in ((0.5, FieldStatus.HELD), (1.9, FieldStatus.HELD), (2.1, FieldStatus.LOST)):
        clk.t = t
        s.next = Reading(t, soc_frac=0.5, plugged=0.0, temp_c=math.nan)
        hub.poll(t)
        assert hub.status[TEMP] == expect, t
        assert hub.status[SOC] == FieldStatus.OK
    assert hub.values[TEMP] == 150.0 and hub.lost_required and hub.degraded
    assert hub.failures["invalid"] == 3
    clk.t = 3.0
    s.next = None
    hub.poll(3.0)
    assert hub.values[TEMP] == 30.0 and hub.status[TEMP] == FieldStatus.OK and not hub.lost_required


@pytest.mark.parametrize("bad", [
    Reading(0.0, soc_frac=1.7, plugged=0.0, temp_c=30.0),  # SoC outside 0..1
    Reading(0.0, soc_frac=0.5, plugged=0.0, temp_c=400.0),  # absurd temperature
    Reading(0.0, soc_frac=0.5, plugged=0.0, temp_c=-80.0),
])
def test_hub_rejects_absurd_values(bad: Reading) -> None:
    clk = Clock()
    s = Scripted(clk)
    hub = SensorHub([s], hold_s=1.0, clock=clk)
    hub.poll(0.0)
    clk.t = 0.5
    s.next = Reading(0.5, bad.soc_frac, bad.plugged, bad.temp_c)
    hub.poll(0.5)
    assert hub.failures["invalid"] == 1
    assert hub.values[SOC] == 0.5 and hub.values[TEMP] == 30.0  # last good kept
    assert FieldStatus.HELD in (hub.status[SOC], hub.status[TEMP])


def test_hub_detects_raising_frozen_stale_and_future_reads() -> None:
    clk = Clock()
    s = Scripted(clk)
    hub = SensorHub([s], hold_s=1.0, stale_after_s=0.5, clock=clk)
    hub.poll(0.0)
    clk.t = 0.2
    s.next = OSError("sysfs went away")
    hub.poll(0.2)
    assert hub.failures["raised"] == 1 and hub.status[TEMP] == FieldStatus.HELD
    clk.t = 0.4
    s.next = "freeze"  # the same sample again (same timestamp)
    hub.poll(0.4)
    assert hub.failures["frozen"] == 1
    clk.t = 10.0
    s.next = Reading(9.0, soc_frac=0.4, plugged=0.0, temp_c=31.0)  # 1 s old > stale_after_s
    hub.poll(10.0)
    assert hub.failures["stale"] == 1 and hub.lost_required
    s.next = Reading(11.0, soc_frac=0.4, plugged=0.0, temp_c=31.0)  # from the future
    hub.poll(10.0)
    assert hub.failures["future"] == 1
    s.next = None
    clk.t = 10.5
    hub.poll(10.5)
    assert not hub.lost_required and hub.values[SOC] == 0.5


def test_value_freeze_detection_is_opt_in() -> None:
    clk = Clock()
    hub = SensorHub([ConstantSensor({"power_w": 2.0}, clk)], freeze_after_s={"power_w": 5.0}, hold_s=1.0,
                    clock=clk)
    for t in range(0, 12):
        clk.t = float(t)
        hub.poll(float(t))
    assert hub.status[POWER] == FieldStatus.LOST  # unchanged for > 5 s, then > hold_s
    assert hub.failures["frozen"] > 0


def test_assumed_and_missing_required_fields() -> None:
    clk = Clock()
    hub = SensorHub([ConstantSensor({"temp_c": 35.0}, clk)], assumptions={"soc_frac": 1.0, "plugged": 1.0},
                    clock=clk)
    hub.poll(0.0)
    assert hub.status[SOC] == FieldStatus.ASSUMED and hub.values[PLUGGED] == 1.0
    assert hub.degraded and not hub.lost_required
    d = hub.describe()
    assert d["fields"]["soc_frac"] == "assumed" and d["fields"]["temp_c"] == "modelled"
    bare = SensorHub([NullSensor(clk)], clock=clk)
    bare.poll(0.0)
    assert bare.lost_required and bare.values[TEMP] == 150.0 and bare.values[SOC] == 0.0


def test_first_available_sensor_owns_a_field() -> None:
    clk = Clock()

    class Broken(Sensor):
        name = "broken"
        provides = ("temp_c",)

        def _probe(self):
            raise RuntimeError("probe exploded")

        def read(self) -> Reading:  # pragma: no cover - never read: unavailable
            raise AssertionError

    a = ConstantSensor({"temp_c": 40.0}, clk, name="a", modelled=False)
    b = ConstantSensor({"temp_c": 20.0, "power_w": 1.0}, clk, name="b")
    hub = SensorHub([Broken(clk), a, b], clock=clk)
    hub.poll(0.0)
    assert "probe exploded" in hub.unavailable["broken"]
    assert hub.values[TEMP] == 40.0 and hub.values[POWER] == 1.0
    assert hub.owner == {"temp_c": "a", "power_w": "b"}


def test_power_supply_sensor_wraps_the_meter(tmp_path: Path) -> None:
    root = tmp_path / "ps"
    d = root / "BAT0"
    for k, v in {"type": "Battery", "status": "Discharging", "power_now": 7_500_000, "capacity": 42,
                 "energy_full": 50_000_000}.items():
        _write(d / k, v)
    s = PowerSupplySensor(PowerSupplyMeter(root))
    assert s.available(), s.reason
    r = s.read()
    assert (r.power_w, r.soc_frac, r.plugged) == (pytest.approx(7.5), 0.42, 0.0)
    assert s.capacity_wh() == pytest.approx(50.0)
    _write(d / "status", "Charging")
    assert s.read().plugged == 1.0
    assert not PowerSupplySensor(root=tmp_path / "none").available()


def test_rapl_sensor_differences_the_counter(tmp_path: Path) -> None:
    z = tmp_path / "powercap" / "intel-rapl:0"
    _write(z / "name", "package-0")
    _write(z / "max_energy_range_uj", 10**12)
    _write(z / "energy_uj", 1_000_000)
    clk = Clock(0.0)
    s = RaplSensor(RaplMeter(tmp_path / "powercap"), clock=clk)
    assert s.available(), s.reason
    assert math.isnan(s.read().power_w)  # first read: no interval yet
    clk.t = 2.0
    _write(z / "energy_uj", 21_000_000)  # +20 J in 2 s
    assert s.read().power_w == pytest.approx(10.0)
    assert not RaplSensor(RaplMeter(tmp_path / "missing")).available()


def test_psutil_sensors(monkeypatch: pytest.MonkeyPatch) -> None:
    import psutil

    monkeypatch.setattr(psutil, "sensors_battery",
                        lambda: types.SimpleNamespace(percent=55.0, power_plugged=True, secsleft=-2), raising=False)
    s = PsutilBatterySensor()
    assert s.available()
    r = s.read()
    assert (r.soc_frac, r.plugged) == (0.55, 1.0) and math.isnan(r.secsleft_s)
    entry = types.SimpleNamespace
    monkeypatch.setattr(psutil, "sensors_temperatures", lambda: {
        "acpitz": [entry(current=40.0)], "coretemp": [entry(current=51.0), entry(current=57.0)]}, raising=False)
    t = PsutilTemperatureSensor()
    assert t.available() and t.read().temp_c == 57.0  # coretemp preferred, hottest core
    monkeypatch.setattr(psutil, "sensors_temperatures", lambda: {}, raising=False)
    assert not PsutilTemperatureSensor().available()
    monkeypatch.setitem(sys.modules, "psutil", None)
    assert not PsutilBatterySensor().available() and not PsutilTemperatureSensor().available()


def test_nvml_sensor_is_lazy_and_optional(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)
    s = NvmlSensor()
    assert not s.available() and "pynvml" in s.reason
    mod = types.ModuleType("pynvml")
    mod.nvmlInit = lambda: None
    mod.nvmlDeviceGetHandleByIndex = lambda i: "h"
    mod.nvmlDeviceGetName = lambda h: b"Fake"
    mod.nvmlDeviceGetTotalEnergyConsumption = lambda h: (_ for _ in ()).throw(RuntimeError("Not Supported"))
    mod.nvmlDeviceGetPowerUsage = lambda h: 42_000
    mod.nvmlDeviceGetTemperature = lambda h, k: 61
    monkeypatch.setitem(sys.modules, "pynvml", mod)
    s = NvmlSensor()
    assert s.available(), s.reason
    r = s.read()
    assert (r.power_w, r.temp_c) == (pytest.approx(42.0), 61.0)


def test_modelled_sensors_and_live_list() -> None:
    clk = Clock()
    p = [2.0]
    th = ModelledThermalSensor(lambda: p[0], r_th_c_per_w=5.0, tau_s=100.0, ambient_c=25.0, clock=clk)
    assert th.read().temp_c == 35.0
    p[0] = 0.0
    clk.t = 1e5
    assert th.read().temp_c == pytest.approx(25.0)
    assert ModelledPowerSensor(lambda: 3.0, clk).read().power_w == 3.0
    sensors = live_sensors(clk, power_fn=lambda: 1.0, thermal={"r_th_c_per_w": 5.0, "tau_s": 240.0},
                           powercap_root="/nonexistent", power_supply_root="/nonexistent")
    hub = SensorHub(sensors, assumptions={"soc_frac": 1.0, "plugged": 1.0}, clock=clk)
    hub.poll(0.0)  # whatever this machine has, the hub never raises and power/temp are known
    assert not math.isnan(hub.values[POWER]) and not math.isnan(hub.values[TEMP])
    for sensor in sensors:
        assert isinstance(sensor.available(), bool)


def test_sensor_classes_are_abstract() -> None:
    class NoRead(Sensor):
        name = "no_read"

    for cls in (Sensor, NoRead, BatterySensor, TemperatureSensor, PowerSensor):
        with pytest.raises(TypeError, match="abstract"):
            cls()
    clk = Clock(3.0)

    class Batt(BatterySensor):
        def read_battery(self) -> BatteryReading:
            return BatteryReading(soc_frac=0.7, plugged=1.0)

    class Temp(TemperatureSensor):
        def read_temp_c(self, t_s: float) -> float:
            return 20.0 + t_s

    class Power(PowerSensor):
        def read_power_w(self, t_s: float) -> float:
            return 2.5

    assert Batt(clk).read() == Reading(3.0, soc_frac=0.7, plugged=1.0)
    assert Temp(clk).read() == Reading(3.0, temp_c=23.0)
    assert Power(clk).read() == Reading(3.0, power_w=2.5)
    assert Batt(clk).available() and Batt.provides == ("soc_frac", "plugged")
    assert NullSensor(clk).available() and NullSensor(clk).read() == Reading(3.0)


def test_replay_sensors_still_instantiate() -> None:
    from runtime.replay import ReplaySensors

    trace = types.SimpleNamespace(
        name="t", time_s=[0.0, 1.0], supply_w=[0.0, 0.0], plugged=[0.0, 0.0], ambient_c=[25.0, 25.0],
        demand_tps=[1.0, 1.0], bandwidth_mbps=[10.0, 10.0],
        meta=types.SimpleNamespace(capacity_wh=1.0, initial_soc=0.5, deadline_s=None))
    device = types.SimpleNamespace(r_th_c_per_w=5.0, tau_s=100.0, t_max_c=80.0, throttle_per_c=0.1,
                                   throttle_min=0.3, charge_efficiency=0.9, idle_power_w=0.2)
    rp = ReplaySensors(trace, device, clock=None)  # subclasses the abstract Sensor: read() is defined
    assert isinstance(rp, Sensor) and rp.available()
    assert rp.read().soc_frac == pytest.approx(0.5)


def test_nvml_sensor_without_temperature(monkeypatch: pytest.MonkeyPatch) -> None:
    mod = types.ModuleType("pynvml")
    mod.nvmlInit = lambda: None
    mod.nvmlDeviceGetHandleByIndex = lambda i: "h"
    mod.nvmlDeviceGetName = lambda h: "Fake"
    mod.nvmlDeviceGetTotalEnergyConsumption = lambda h: 1_000
    mod.nvmlDeviceGetPowerUsage = lambda h: 42_000
    monkeypatch.setitem(sys.modules, "pynvml", mod)  # no nvmlDeviceGetTemperature
    clk = Clock()
    s = NvmlSensor(clock=clk)
    assert s.available(), s.reason
    r = s.read()
    assert math.isnan(r.power_w) and math.isnan(r.temp_c)  # first counter read: no interval yet
    clk.t = 2.0
    mod.nvmlDeviceGetTotalEnergyConsumption = lambda h: 21_000  # +20 J in 2 s
    assert s.read().power_w == pytest.approx(10.0)
