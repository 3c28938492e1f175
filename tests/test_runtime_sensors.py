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


def _battery(root: Path, name: str = "BAT0", **attrs: object) -> Path:
    d = root / name
    for k, v in {"type": "Battery", "capacity": 42, **attrs}.items():
        _write(d / k, v)
    return d


@pytest.mark.parametrize(("status", "ac_online", "plugged"), [
    ("Unknown", 0, 0.0), ("Not charging", 0, 0.0),  # the adapter says out, whatever the gauge says
    ("Not charging", 1, 1.0), ("Full", 1, 1.0), ("Charging", None, 1.0), ("Not charging", None, 1.0),
    ("Unknown", None, 0.0),  # nothing says external power: the battery rules apply
    ("Discharging", 1, 0.0),  # an adapter too weak for the load: the battery drains
])
def test_plugged_is_the_adapters_word_and_a_draining_battery_is_on_battery(tmp_path, status, ac_online, plugged):
    root = tmp_path / "ps"
    _battery(root, status=status, power_now=8_000_000)
    if ac_online is not None:
        _write(root / "AC" / "type", "Mains")
        _write(root / "AC" / "online", ac_online)
    s = PowerSupplySensor(PowerSupplyMeter(root))
    assert s.available(), s.reason
    r = s.read()
    assert r.plugged == plugged
    # the battery's power is the machine's draw only while it discharges (on AC it is the charge rate)
    assert (r.power_w == pytest.approx(8.0)) if plugged == 0.0 else math.isnan(r.power_w)


def test_a_field_its_owner_cannot_give_now_comes_from_the_next_sensor(tmp_path):
    """On AC the battery's power is not the draw: the hub takes ``power_w`` from the next sensor that has it, says
    so, and goes back to the battery once it discharges again."""
    root = tmp_path / "ps"
    d = _battery(root, status="Charging", power_now=30_000_000)
    clk = Clock(0.0)
    other = ConstantSensor({"power_w": 6.0}, clk, name="modelled_power", modelled=True)
    hub = SensorHub([PowerSupplySensor(PowerSupplyMeter(root), clock=clk, period_s=0.0), other], clock=clk,
                    read_deadline_s=0)
    assert hub.owner["power_w"] == "power_supply" and hub.backups == {"power_w": ["modelled_power"]}
    hub.poll(0.0)
    assert hub.values[POWER] == 6.0 and hub.status[POWER] == FieldStatus.OK
    assert hub.source["power_w"] == "modelled_power" and hub.describe()["fields"]["power_w"] == "modelled"
    _write(d / "status", "Discharging")
    _write(d / "power_now", 9_000_000)
    clk.t = 1.0
    hub.poll(1.0)
    assert hub.values[POWER] == pytest.approx(9.0) and hub.source["power_w"] == "power_supply"
    assert hub.describe()["fields"]["power_w"] == "sensed"


def test_a_battery_without_a_power_file_does_not_take_the_power_field(tmp_path):
    root = tmp_path / "ps"
    _battery(root, status="Discharging", energy_now=20_000_000)  # a gauge with energy only
    clk = Clock(0.0)
    hub = SensorHub([PowerSupplySensor(PowerSupplyMeter(root), clock=clk),
                     ConstantSensor({"power_w": 4.0}, clk, name="rapl", modelled=False)], clock=clk)
    assert hub.owner["power_w"] == "rapl" and hub.owner["soc_frac"] == "power_supply"


def test_a_peripherals_battery_is_not_the_machines(tmp_path, monkeypatch):
    """A wireless mouse's battery (``scope`` Device) on a mains desktop is neither sensor's battery."""
    import psutil
    import psutil._pslinux as pl

    root = tmp_path / "ps"
    _battery(root, name="hidpp_battery_0", scope="Device", status="Discharging", capacity=4, energy_now=1_000_000,
             voltage_now=3_700_000)
    assert not PowerSupplySensor(PowerSupplyMeter(root)).available()
    monkeypatch.setattr(pl, "POWER_SUPPLY_PATH", str(root))
    monkeypatch.setattr(psutil, "sensors_battery", lambda: types.SimpleNamespace(percent=4.0, power_plugged=False,
                                                                                 secsleft=600), raising=False)
    s = PsutilBatterySensor()
    assert not s.available() and "peripheral" in s.reason


def test_psutil_battery_just_over_full_and_unlimited_time_left_on_ac(monkeypatch):
    """psutil reports a little over 100 % right after a full charge, and no time left on AC: neither is a failed
    read (no SENSOR_UNKNOWN, no DEGRADED)."""
    import psutil

    monkeypatch.setattr(psutil, "sensors_battery", lambda: types.SimpleNamespace(
        percent=100.4, power_plugged=True, secsleft=psutil.POWER_TIME_UNLIMITED), raising=False)
    clk = Clock(0.0)
    hub = SensorHub([PsutilBatterySensor(clock=clk), ConstantSensor({"temp_c": 40.0}, clk, modelled=False)],
                    clock=clk, read_deadline_s=0)
    for t in range(20):
        clk.t = float(t)
        hub.poll(float(t))
    assert hub.values[SOC] == 1.0 and hub.status[SOC] == FieldStatus.OK and not hub.lost_required
    assert not hub.degraded and hub.failures["invalid"] == 0


def test_the_die_temperature_is_read_not_amds_offset_control_value(monkeypatch):
    import psutil

    e = types.SimpleNamespace
    cases = [({"k10temp": [e(label="Tctl", current=93.0), e(label="Tdie", current=66.0)]}, 66.0),
             ({"k10temp": [e(label="Tctl", current=70.0), e(label="Tccd1", current=61.0)]}, 61.0),
             ({"k10temp": [e(label="Tctl", current=58.0)]}, 58.0),  # nothing else: Tctl (offset 0 on newer parts)
             ({"coretemp": [e(label="Core 0", current=71.0), e(label="Package id 0", current=68.0)]}, 68.0)]
    for temps, want in cases:
        monkeypatch.setattr(psutil, "sensors_temperatures", lambda temps=temps: temps, raising=False)
        assert PsutilTemperatureSensor().read().temp_c == want, temps


def test_a_failing_temperature_sensor_is_not_replaced_by_a_model():
    """The shield's fields fall back to another measurement, never to a model: a die sensor that stops answering
    goes HELD, then LOST (hot), even with the modelled thermal sensor at hand."""
    clk = Clock(0.0)

    class Dies(Sensor):
        name, provides, modelled = "die", ("temp_c",), False

        def read(self) -> Reading:
            if clk.t > 1.0:
                raise OSError("sensor gone")
            return Reading(clk.t, temp_c=50.0)

    model = ConstantSensor({"temp_c": 30.0}, clk, name="modelled_thermal", modelled=True)
    hub = SensorHub([Dies(clk), model], clock=clk, read_deadline_s=0)
    for t in range(12):
        clk.t = float(t)
        hub.poll(float(t))
    assert hub.status[TEMP] == FieldStatus.LOST and hub.values[TEMP] == 150.0 and hub.lost_required
