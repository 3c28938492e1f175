"""Device sensors for the runtime manager, and the hub that validates their readings.

numpy-free, standard library only (``psutil`` and ``pynvml`` are imported lazily inside methods).

Every sensor is a small class with

* ``name``, ``provides`` (the :data:`FIELDS` it fills), ``period_s`` (how often the hub reads
  it), ``modelled`` (True when the value is a model, not a measurement) and ``slow`` (True when
  a read goes to hardware or a driver and may hang: the hub then reads it in a worker thread);
* ``available()`` — probes the source and **never raises**; ``reason`` says why not;
* ``read()`` — returns a :class:`Reading` (units in the field names, ``t_s`` = when the value
  was sampled, on the hub's clock). Fields it does not provide stay NaN. It may raise.

The classes are laid out like Zeus' device abstraction:

* :class:`Sensor` — the abstract base (``read()`` is abstract; ``available()`` runs the
  ``_probe()`` hook, which by default says "available");
* one small abstract class per kind, each turning one abstract method into a :class:`Reading`:
  :class:`BatterySensor` (``read_battery()`` → :class:`BatteryReading`),
  :class:`TemperatureSensor` (``read_temp_c(t_s)``) and :class:`PowerSensor` (``read_power_w(t_s)``);
* a concrete class per source: :class:`PowerSupplySensor`, :class:`PsutilBatterySensor`;
  :class:`PsutilTemperatureSensor`, :class:`ModelledThermalSensor`; :class:`RaplSensor`,
  :class:`NvmlSensor` (power and GPU temperature), :class:`ModelledPowerSensor`; plus the
  generic :class:`ConstantSensor`;
* :class:`NullSensor` — the null fallback (provides nothing, always available);
* :func:`live_sensors` — every source worth probing here, in order of preference.

Energy readers are not re-implemented here: :class:`PowerSupplySensor`, :class:`RaplSensor`,
:class:`NvmlSensor` and :class:`PsutilBatterySensor` wrap ``runtime.meters`` through the meters'
public methods only.

:class:`SensorHub` polls the sensors at their periods and validates every field: a read that
raises, a NaN, a value outside its physical range (e.g. temperature outside −40..150 °C, SoC
outside 0..1), a timestamp from the future, a frozen timestamp (the same sample again) or a
sample older than ``stale_after_s`` is rejected. A rejected field keeps its last good value for
``hold_s`` (status HELD), then falls back to a conservative default (status LOST: hot, empty,
unplugged). Fields no sensor provides take an assumed value (status ASSUMED) when one is given,
otherwise they are LOST from the start.

Reads have a deadline (``read_deadline_s``): a ``slow`` sensor is read in a daemon worker thread
that the hub waits on for at most the deadline; a read still running then counts as failed
("timeout"), and while it hangs the sensor is not read again (no further waiting, every poll is a
"timeout" until the thread returns). When it has returned, the next due poll takes its late result
instead of starting a read, checked for age like any reading (a sensor that always answers in 0.4 s
still delivers, every other due poll, without holding a decision for 0.4 s). A sensor read inline that takes
longer than the deadline is treated the same way (its values are rejected). After a timeout the
sensor is next read only ``timeout_backoff_s`` later. A hanging sensor therefore costs one decision
at most ``read_deadline_s``, and its fields go HELD, then LOST, as for any failing read.
"""

from __future__ import annotations

import importlib
import math
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:  # runtime.meters is imported when a wrapping sensor is built (lighter import)
    from runtime.meters import NvmlMeter, PowerSupplyMeter, PsutilBattery, RaplMeter

NAN = math.nan

#: Fields a sensor can fill, in the hub's order.
FIELDS: tuple[str, ...] = ("soc_frac", "plugged", "temp_c", "ambient_c", "power_w", "supply_w",
                           "bandwidth_mbps", "secsleft_s")
SOC, PLUGGED, TEMP, AMBIENT, POWER, SUPPLY, BANDWIDTH, SECSLEFT = range(len(FIELDS))
#: Plausible physical ranges (inclusive); a value outside is "absurd" and rejected.
RANGES: dict[str, tuple[float, float]] = {
    "soc_frac": (0.0, 1.0),
    "plugged": (0.0, 1.0),
    "temp_c": (-40.0, 150.0),
    "ambient_c": (-40.0, 80.0),
    "power_w": (0.0, 500.0),
    "supply_w": (0.0, 500.0),
    "bandwidth_mbps": (0.0, 10000.0),
    "secsleft_s": (0.0, 1e7),
}
#: Optional fields for which a sensor's NaN means "not known now" (psutil's time left on AC), not a failed read.
NAN_MEANS_UNKNOWN: frozenset[str] = frozenset({"secsleft_s"})
#: Fields the safety shield depends on: unknown beyond the hold time means "assume the worst".
REQUIRED: tuple[str, ...] = ("soc_frac", "plugged", "temp_c")
#: Conservative defaults used once a field is LOST (worst case for the shield).
CONSERVATIVE: dict[str, float] = {
    "soc_frac": 0.0, "plugged": 0.0, "temp_c": 150.0, "ambient_c": 45.0, "power_w": 0.0,
    "supply_w": 0.0, "bandwidth_mbps": 0.0, "secsleft_s": NAN,
}


@dataclass(frozen=True, slots=True)
class Reading:
    """One sample of a sensor; NaN = not provided by this sensor.

    Attributes:
        t_s: When the values were sampled, in seconds on the hub's clock (monotonic or virtual).
        soc_frac: Battery state of charge, 0..1.
        plugged: 1.0 on external power, 0.0 on battery.
        temp_c: Device temperature, °C.
        ambient_c: Ambient temperature, °C.
        power_w: Device power draw, W.
        supply_w: External power available (charger, harvester), W.
        bandwidth_mbps: Link capacity, Mbit/s.
        secsleft_s: Estimated battery time left, s.
    """

    t_s: float
    soc_frac: float = NAN
    plugged: float = NAN
    temp_c: float = NAN
    ambient_c: float = NAN
    power_w: float = NAN
    supply_w: float = NAN
    bandwidth_mbps: float = NAN
    secsleft_s: float = NAN


class Sensor(ABC):
    """Abstract base: a named source of some :data:`FIELDS`.

    A subclass sets ``name`` and ``provides`` and implements :meth:`read`; one whose source can be
    missing also overrides :meth:`_probe`. The kind classes (:class:`BatterySensor`,
    :class:`TemperatureSensor`, :class:`PowerSensor`) implement :meth:`read` from one narrower
    abstract method each.

    Args:
        clock: Timestamp source in seconds (default ``time.monotonic``).
        period_s: How often the hub reads this sensor.
    """

    name = "sensor"
    provides: tuple[str, ...] = ()
    modelled = False
    slow = False  # True: reads may block (hardware, drivers); the hub reads it in a worker thread

    def __init__(self, clock: Callable[[], float] = time.monotonic, period_s: float = 0.0) -> None:
        self.clock = clock
        self.period_s = float(period_s)
        self.reason = ""

    def available(self) -> bool:
        """Returns whether the source can be read now; never raises (see :attr:`reason`)."""
        try:
            ok, why = self._probe()
        except Exception as exc:  # noqa: BLE001 - the contract is "never raises"
            ok, why = False, f"{type(exc).__name__}: {exc}"
        self.reason = "" if ok else why
        return ok

    def _probe(self) -> tuple[bool, str]:
        """Returns ``(available, reason_if_not)``; may raise. Default: always available."""
        return True, ""

    @abstractmethod
    def read(self) -> Reading:
        """Returns a sample of the fields in :attr:`provides` (others NaN). May raise."""


class NullSensor(Sensor):
    """The null fallback: provides nothing, always available (keeps code paths uniform)."""

    name = "null"

    def read(self) -> Reading:
        return Reading(self.clock())


class ConstantSensor(Sensor):
    """Fixed values (an assumption made explicit, or a test/benchmark source).

    Args:
        values: Field name -> value.
        clock: Timestamp source.
        period_s: Read period.
        modelled: Flag the values as modelled rather than measured.
    """

    def __init__(self, values: Mapping[str, float], clock: Callable[[], float] = time.monotonic,
                 period_s: float = 0.0, modelled: bool = True, name: str = "constant") -> None:
        super().__init__(clock, period_s)
        bad = sorted(set(values) - set(FIELDS))
        if bad:
            raise ValueError(f"unknown fields {bad}; known: {FIELDS}")
        self.values = dict(values)
        self.provides = tuple(values)
        self.modelled = modelled
        self.name = name

    def read(self) -> Reading:
        return Reading(self.clock(), **self.values)


# ---- battery -----------------------------------------------------------------------------------
class BatteryReading(NamedTuple):
    """What a battery source knows; NaN = unknown (``plugged``: 1.0 on external power)."""

    soc_frac: float = NAN
    plugged: float = NAN
    power_w: float = NAN
    secsleft_s: float = NAN


class BatterySensor(Sensor):
    """Kind: a battery — state of charge and external power (plus draw / time left where known)."""

    provides: tuple[str, ...] = ("soc_frac", "plugged")

    @abstractmethod
    def read_battery(self) -> BatteryReading:
        """Returns the battery's current state. May raise."""

    def read(self) -> Reading:
        b = self.read_battery()
        return Reading(self.clock(), soc_frac=b.soc_frac, plugged=b.plugged, power_w=b.power_w,
                       secsleft_s=b.secsleft_s)


class PsutilBatterySensor(BatterySensor):
    """``psutil.sensors_battery()`` via :class:`runtime.meters.PsutilBattery`: SoC, plugged, time left."""

    name = "psutil_battery"
    provides = ("soc_frac", "plugged", "secsleft_s")

    slow = True

    def __init__(self, battery: PsutilBattery | None = None, clock: Callable[[], float] = time.monotonic,
                 period_s: float = 1.0) -> None:
        super().__init__(clock, period_s)
        from runtime.meters import PsutilBattery

        self.battery = battery or PsutilBattery()

    def _probe(self) -> tuple[bool, str]:
        return self.battery.available(), self.battery.reason

    def read_battery(self) -> BatteryReading:
        s = self.battery.read()
        pct = s.percent
        if pct is not None and 100.0 < pct <= 110.0:  # psutil's charge_now / charge_full just after a full charge
            pct = 100.0
        return BatteryReading(soc_frac=pct / 100.0 if pct is not None else NAN,
                              plugged=(1.0 if s.plugged else 0.0) if s.plugged is not None else NAN,
                              secsleft_s=s.secsleft_s if s.secsleft_s is not None else NAN)


#: A battery ``status`` that means external power (when no mains/USB supply says ``online``).
EXTERNAL_POWER_STATUS: frozenset[str] = frozenset({"Charging", "Full", "Not charging"})


class PowerSupplySensor(BatterySensor):
    """Linux ``/sys/class/power_supply`` battery: SoC from ``capacity`` (%); plugged: not while the battery's
    ``status`` is "Discharging", else from the mains/USB supplies' ``online`` (else from the status: "Charging",
    "Full" and "Not charging" mean external power, anything else none, so the battery rules apply); power (via
    :class:`PowerSupplyMeter`) only while discharging, when the battery's power is the machine's draw (on external
    power it is the charge rate: the hub then takes the field from the next sensor that has it). A battery without
    a power file does not provide ``power_w`` at all.

    Args:
        meter: The wrapped meter (default: the first Battery supply under ``root``).
        root: The power_supply class directory.
    """

    name = "power_supply"
    provides = ("soc_frac", "plugged", "power_w")

    slow = True

    def __init__(self, meter: PowerSupplyMeter | None = None, root: str | Path = "/sys/class/power_supply",
                 clock: Callable[[], float] = time.monotonic, period_s: float = 1.0) -> None:
        super().__init__(clock, period_s)
        from runtime.meters import PowerSupplyMeter

        self.meter = meter or PowerSupplyMeter(root)

    def _probe(self) -> tuple[bool, str]:
        ok = self.meter.available()
        self.provides = ("soc_frac", "plugged", "power_w") if ok and self.meter.has_power() else ("soc_frac", "plugged")
        return ok, self.meter.reason

    def capacity_wh(self) -> float | None:
        """Full energy of the battery in Wh (``energy_full``, or ``charge_full`` × ``voltage_min_design``), or None."""
        return self.meter.energy_full_wh()

    def read_battery(self) -> BatteryReading:
        from runtime.meters import MeterError

        soc = self.meter.capacity_frac()
        ext = self.meter.external_online()
        status = self.meter.status()
        if status == "Discharging":  # draining whatever an adapter says (one too weak for the load): on battery
            plugged = 0.0
        elif ext is not None:
            plugged = 1.0 if ext else 0.0
        else:
            plugged = NAN if status is None else (1.0 if status in EXTERNAL_POWER_STATUS else 0.0)
        p = NAN
        if plugged == 0.0 and "power_w" in self.provides:
            try:
                p = self.meter.read_power_w()
            except MeterError:
                pass
        return BatteryReading(soc_frac=NAN if soc is None else soc, power_w=p, plugged=plugged)


# ---- temperature -------------------------------------------------------------------------------
#: psutil temperature chips in order of preference (CPU package sensors first).
TEMP_CHIPS: tuple[str, ...] = ("coretemp", "k10temp", "zenpower", "cpu_thermal", "cpu-thermal", "soc_thermal",
                               "acpitz", "thermal_zone0")


#: psutil labels of a CPU's own die/package temperature, in order of preference.
DIE_LABELS: tuple[str, ...] = ("Tdie", "Package id 0")
#: psutil labels that are not temperatures (k10temp's Tctl: the die plus a fan-control offset).
OFFSET_LABELS: frozenset[str] = frozenset({"Tctl"})


class TemperatureSensor(Sensor):
    """Kind: the device temperature."""

    provides: tuple[str, ...] = ("temp_c",)

    @abstractmethod
    def read_temp_c(self, t_s: float) -> float:
        """Returns the temperature in °C at ``t_s`` (the hub's clock; NaN = unknown). May raise."""

    def read(self) -> Reading:
        t = self.clock()
        return Reading(t, temp_c=self.read_temp_c(t))


class PsutilTemperatureSensor(TemperatureSensor):
    """``psutil.sensors_temperatures()``: the preferred chip's die reading (:data:`DIE_LABELS`), else its hottest
    reading that is a temperature (not k10temp's offset ``Tctl``).

    Args:
        chips: Chip names in order of preference; the first present is used (else every chip).
    """

    name = "psutil_temperature"

    slow = True

    def __init__(self, chips: Sequence[str] = TEMP_CHIPS, clock: Callable[[], float] = time.monotonic,
                 period_s: float = 0.5) -> None:
        super().__init__(clock, period_s)
        self.chips = tuple(chips)

    def _temps(self) -> dict[str, Any]:
        psutil = importlib.import_module("psutil")
        fn = getattr(psutil, "sensors_temperatures", None)
        if fn is None:
            raise OSError("psutil has no sensors_temperatures on this platform")
        return fn() or {}

    def _probe(self) -> tuple[bool, str]:
        try:
            temps = self._temps()
        except ImportError:
            return False, "psutil is not installed"
        if not temps:
            return False, "psutil reports no temperature sensors (container/VM or unsupported platform)"
        return True, ""

    def read_temp_c(self, t_s: float) -> float:
        temps = self._temps()
        chip = next((c for c in self.chips if temps.get(c)), None)
        entries = [e for e in (temps[chip] if chip else [e for v in temps.values() for e in v])
                   if e.current is not None]
        by_label = {getattr(e, "label", "") or "": float(e.current) for e in entries}
        for label in DIE_LABELS:  # the die's own reading where the chip names it
            if label in by_label:
                return by_label[label]
        # AMD's Tctl carries a fan-control offset of up to 27 °C above the die: not a temperature
        vals = [float(e.current) for e in entries if (getattr(e, "label", "") or "") not in OFFSET_LABELS] or \
            [float(e.current) for e in entries]  # a chip that reports only Tctl (its offset is 0 on newer parts)
        return max(vals) if vals else NAN


class ModelledThermalSensor(TemperatureSensor):
    """Temperature from the first-order thermal model of ``runtime.dynamics`` driven by a power callback.

    ``T ← T_∞ + (T − T_∞)·exp(−Δt/τ)``, ``T_∞ = T_amb + R_th·P`` (exact for constant power over
    each interval). For devices without a temperature sensor.

    Args:
        power_fn: Returns the device power in W.
        r_th_c_per_w: Thermal resistance, °C/W.
        tau_s: Thermal time constant, s.
        ambient_c: Ambient temperature, °C.
        temp0_c: Initial temperature (default: steady state at the first power reading).
    """

    name = "modelled_thermal"
    provides = ("temp_c", "ambient_c")
    modelled = True

    def __init__(self, power_fn: Callable[[], float], r_th_c_per_w: float, tau_s: float, ambient_c: float = 25.0,
                 temp0_c: float | None = None, clock: Callable[[], float] = time.monotonic,
                 period_s: float = 0.0) -> None:
        super().__init__(clock, period_s)
        self.power_fn, self.r_th, self.tau, self.ambient_c = power_fn, r_th_c_per_w, tau_s, ambient_c
        self.temp_c = temp0_c
        self._t: float | None = None

    def read_temp_c(self, t_s: float) -> float:
        from runtime.dynamics import thermal_step

        p = float(self.power_fn())
        if self.temp_c is None:
            self.temp_c = self.ambient_c + self.r_th * p
        elif self._t is not None and t_s > self._t:
            self.temp_c = thermal_step(self.temp_c, self.ambient_c, p, t_s - self._t, self.r_th, self.tau)
        self._t = t_s
        return self.temp_c

    def read(self) -> Reading:
        t = self.clock()
        return Reading(t, temp_c=self.read_temp_c(t), ambient_c=self.ambient_c)


# ---- power -------------------------------------------------------------------------------------
class PowerSensor(Sensor):
    """Kind: the device power draw."""

    provides: tuple[str, ...] = ("power_w",)

    @abstractmethod
    def read_power_w(self, t_s: float) -> float:
        """Returns the power in W at ``t_s`` (the hub's clock; NaN = unknown). May raise."""

    def read(self) -> Reading:
        t = self.clock()
        return Reading(t, power_w=self.read_power_w(t))


class _CounterPowerSensor(PowerSensor):
    """Power from a cumulative energy meter: ΔE/Δt between reads (first read NaN)."""

    slow = True

    def __init__(self, meter: Any, clock: Callable[[], float] = time.monotonic, period_s: float = 0.2) -> None:
        super().__init__(clock, period_s)
        self.meter = meter
        self._last: tuple[float, float] | None = None

    def _probe(self) -> tuple[bool, str]:
        return self.meter.available(), self.meter.reason

    def read_power_w(self, t_s: float) -> float:
        e_j = self.meter.read_energy_j()
        last, self._last = self._last, (t_s, e_j)
        if last is None or t_s <= last[0]:
            return NAN
        return (e_j - last[1]) / (t_s - last[0])


class RaplSensor(_CounterPowerSensor):
    """CPU package (+DRAM) power from RAPL powercap counters (:class:`runtime.meters.RaplMeter`)."""

    name = "rapl"

    def __init__(self, meter: RaplMeter | None = None, clock: Callable[[], float] = time.monotonic,
                 period_s: float = 0.2) -> None:
        from runtime.meters import RaplMeter

        super().__init__(meter or RaplMeter(), clock, period_s)


class NvmlSensor(_CounterPowerSensor):
    """NVIDIA GPU power (and GPU temperature) through NVML (:class:`runtime.meters.NvmlMeter`).

    ``pynvml`` is imported lazily by the meter; without it the sensor is simply unavailable.
    """

    name = "nvml"
    provides = ("power_w", "temp_c")

    def __init__(self, meter: NvmlMeter | None = None, clock: Callable[[], float] = time.monotonic,
                 period_s: float = 0.2) -> None:
        from runtime.meters import NvmlMeter

        super().__init__(meter or NvmlMeter(), clock, period_s)

    def read_power_w(self, t_s: float) -> float:
        """The counter's ΔE/Δt where the GPU has one, else NVML's instantaneous power."""
        return super().read_power_w(t_s) if self.meter.has_energy_counter else self.meter.read_power_w()

    def read(self) -> Reading:
        from runtime.meters import MeterError

        t = self.clock()
        p = self.read_power_w(t)
        try:
            temp = self.meter.read_temperature_c()
        except MeterError:
            temp = NAN
        return Reading(t, power_w=p, temp_c=temp)


class ModelledPowerSensor(PowerSensor):
    """Power from a callback (e.g. idle + tokens/s × energy per token of the active config).

    Args:
        power_fn: Returns the current power in W.
    """

    name = "modelled_power"
    modelled = True

    def __init__(self, power_fn: Callable[[], float], clock: Callable[[], float] = time.monotonic,
                 period_s: float = 0.0) -> None:
        super().__init__(clock, period_s)
        self.power_fn = power_fn

    def read_power_w(self, t_s: float) -> float:
        return float(self.power_fn())


class FieldStatus(IntEnum):
    """Per-field state in the hub."""

    OK = 0  # the latest read gave a valid, fresh value
    HELD = 1  # the latest read failed; the last good value is younger than hold_s
    ASSUMED = 2  # no sensor provides it; an assumed value is used
    LOST = 3  # no good value for longer than hold_s (or never): conservative default


class SensorHub:
    """Polls sensors, validates every field, holds last-good values, then falls back.

    Args:
        sensors: The sensors, in order of preference: a field is taken from the first available
            sensor that provides it (sensors whose ``available()`` is False are skipped).
        assumptions: Values for fields no available sensor provides (status ASSUMED).
        conservative: Defaults once a field is LOST (default :data:`CONSERVATIVE`).
        hold_s: How long a last-good value is used after reads start failing.
        stale_after_s: A sample older than this (by its own timestamp) is rejected.
        freeze_after_s: Per field: an unchanged value for longer than this is treated as stuck.
        clock: Time source when ``poll`` is called without ``now``.
        future_tolerance_s: A sample stamped later than ``now`` by more than this is rejected
            (sensors stamp with the same clock a little after the caller read ``now``).
        read_deadline_s: Wall-clock seconds a read may take (0: no deadline); see the module docstring.
        timeout_backoff_s: After a timed-out read, the sensor's next read is at least this much later.

    Attributes:
        values: Current value per field (index by the module constants, e.g. ``hub.values[TEMP]``).
        status: :class:`FieldStatus` per field.
        lost_required: True when a field in :data:`REQUIRED` is LOST.
        degraded: True when a required field is not OK (or only modelled) or a sensed field is
            HELD/LOST.
        flags: Bit ``i`` set when field ``i`` is not OK.
        failures: Count of rejected reads by kind ("raised", "invalid", "frozen", "stale", "future",
            "timeout").
    """

    def __init__(self, sensors: Sequence[Sensor], assumptions: Mapping[str, float] | None = None,
                 conservative: Mapping[str, float] | None = None, hold_s: float = 5.0,
                 stale_after_s: float = 10.0, freeze_after_s: Mapping[str, float] | None = None,
                 clock: Callable[[], float] = time.monotonic, future_tolerance_s: float = 0.5,
                 read_deadline_s: float = 0.25, timeout_backoff_s: float = 1.0) -> None:
        self.all_sensors = list(sensors)
        self.read_deadline_s = max(0.0, float(read_deadline_s))
        self.timeout_backoff_s = max(0.0, float(timeout_backoff_s))
        self.future_tolerance_s = float(future_tolerance_s)
        self.clock = clock
        self.hold_s, self.stale_after_s = float(hold_s), float(stale_after_s)
        self.assumptions = dict(assumptions or {})
        cons = dict(CONSERVATIVE)
        cons.update(conservative or {})
        self.conservative = [cons[f] for f in FIELDS]
        n = len(FIELDS)
        idx = {f: i for i, f in enumerate(FIELDS)}
        # list order is preference: a field belongs to the first available sensor providing it
        self.sensors: list[Sensor] = []
        self.unavailable: dict[str, str] = {}
        self.owner: dict[str, str] = {}
        self._sensor_fields: list[tuple] = []
        #: per field, the later available sensors that provide it too: (sensor name), in order of preference
        self.backups: dict[str, list[str]] = {}
        self._backup_fields: list[tuple] = []
        for s in self.all_sensors:
            if not s.available():
                self.unavailable[s.name] = s.reason
                continue
            mine = [f for f in s.provides if f not in self.owner]
            theirs = [f for f in s.provides if f in self.owner and f in FIELDS]
            if not mine and not theirs:
                continue
            for f in mine:
                self.owner[f] = s.name
            for f in theirs:
                self.backups.setdefault(f, []).append(s.name)
            self.sensors.append(s)
            self._sensor_fields.append(tuple((idx[f], f, *RANGES[f]) for f in mine))
            self._backup_fields.append(tuple((idx[f], f, *RANGES[f]) for f in theirs))
        self._due = [-math.inf] * len(self.sensors)
        self._last_t = [-math.inf] * len(self.sensors)
        #: slow reads past their deadline (thread, result box): a late result is taken at the next due poll
        self._pending: list[tuple[threading.Thread, list] | None] = [None] * len(self.sensors)
        self.late_reads = 0  # readings taken from a read that returned after its deadline
        self.sensed = [False] * n
        self.modelled = [False] * n
        for s, fields in zip(self.sensors, self._sensor_fields):
            for i, *_ in fields:
                self.sensed[i] = True
                self.modelled[i] = s.modelled
        self._owner_modelled = list(self.modelled)
        #: per field, the backups' last good (value, sample time, modelled) by sensor index, for a field whose owner
        #: has no good value now (a battery's power on AC, a sensor that stopped answering)
        self._backup_good: list[dict[int, tuple[float, float, bool]]] = [{} for _ in range(n)]
        #: per field, the sensor whose value the field holds now (its owner, or the backup in use)
        self.source: dict[str, str] = dict(self.owner)
        self.values = [NAN] * n
        self.good_t = [-math.inf] * n
        self.attempt_ok = [False] * n
        self.status = [FieldStatus.LOST] * n
        for i, f in enumerate(FIELDS):
            if not self.sensed[i]:
                if f in self.assumptions:
                    self.values[i], self.status[i] = float(self.assumptions[f]), FieldStatus.ASSUMED
                else:
                    self.values[i] = self.conservative[i]
        self._req = [idx[f] for f in REQUIRED]
        self._freeze = {idx[f]: float(v) for f, v in (freeze_after_s or {}).items()}
        self._changed_t = [-math.inf] * n
        self._raw = [NAN] * n  # last raw value per field (value-freeze detection)
        self.failures = {"raised": 0, "invalid": 0, "frozen": 0, "stale": 0, "future": 0, "timeout": 0}
        self.reads = 0
        self._next_check = -math.inf
        self.flags = 0
        self.lost_required = True
        self.degraded = True
        self._update_status(-math.inf)

    def describe(self) -> dict[str, Any]:
        """Which sensors are used, which are unavailable and why, and each field's source."""
        return {
            "sensors": [{"name": s.name, "provides": list(s.provides), "period_s": s.period_s,
                         "modelled": s.modelled} for s in self.sensors],
            "unavailable": dict(self.unavailable),
            "backups": {f: list(v) for f, v in self.backups.items()},
            "fields": {f: ("modelled" if self.modelled[i] else "sensed") if self.sensed[i]
                       else ("assumed" if f in self.assumptions else "missing")
                       for i, f in enumerate(FIELDS)},
        }

    def poll(self, now: float | None = None) -> None:
        """Reads the sensors that are due and refreshes every field's status (cheap when idle)."""
        if now is None:
            now = self.clock()
        if now < self._next_check:
            return
        for j, s in enumerate(self.sensors):
            if now >= self._due[j]:
                self._due[j] = now + s.period_s
                self._read(j, s, now)
        self._update_status(now)

    def _reject(self, j: int, kind: str) -> None:
        self.failures[kind] += 1
        for i, *_ in self._sensor_fields[j]:
            self.attempt_ok[i] = False

    def _timeout(self, j: int, now: float) -> None:
        self._reject(j, "timeout")
        self._due[j] = max(self._due[j], now + self.timeout_backoff_s)

    def _read_threaded(self, j: int, s: Sensor) -> Reading | None:
        """``s.read()`` in a daemon thread, waited on for the deadline; None when it did not finish."""
        pend = self._pending[j]
        if pend is not None:
            th, box = pend
            if th.is_alive():  # still hanging from an earlier poll: do not wait again
                return None
            self._pending[j] = None
            if box:  # it returned late: its reading, checked for age by the caller like any other
                if isinstance(box[0], BaseException):
                    raise box[0]
                self.late_reads += 1
                return box[0]
        box: list[Any] = []

        def work() -> None:
            try:
                box.append(s.read())
            except BaseException as exc:  # noqa: BLE001 - handed back to the hub
                box.append(exc)

        th = threading.Thread(target=work, name=f"sensor-{s.name}", daemon=True)
        th.start()
        th.join(self.read_deadline_s)
        if th.is_alive():
            self._pending[j] = (th, box)
            return None
        r = box[0]
        if isinstance(r, BaseException):
            raise r
        return r

    def _read(self, j: int, s: Sensor, now: float) -> None:
        self.reads += 1
        deadline = self.read_deadline_s
        try:
            if deadline and s.slow:
                r = self._read_threaded(j, s)
                if r is None:
                    self._timeout(j, now)
                    return
            else:
                t0 = time.perf_counter()
                r = s.read()
                if deadline and time.perf_counter() - t0 > deadline:
                    self._timeout(j, now)
                    return
            t = float(r.t_s)
        except Exception:  # noqa: BLE001 - a failing sensor must never take the manager down
            self._reject(j, "raised")
            return
        if not t == t or t > now + self.future_tolerance_s:  # NaN or a timestamp from the future
            self._reject(j, "future")
            return
        if now - t > self.stale_after_s:
            self._reject(j, "stale")
            return
        if t <= self._last_t[j]:  # the same sample again (or an older one)
            self._reject(j, "frozen")
            return
        self._last_t[j] = t
        for i, name, lo, hi in self._backup_fields[j]:
            v = getattr(r, name)
            if lo <= v <= hi:
                self._backup_good[i][j] = (v, t, s.modelled)
            else:
                self._backup_good[i].pop(j, None)
        for i, name, lo, hi in self._sensor_fields[j]:
            v = getattr(r, name)
            if name in NAN_MEANS_UNKNOWN and v != v:  # "not known now" is an answer, not a failed read
                self.attempt_ok[i] = True
                self.values[i] = NAN
                self.good_t[i] = t
                continue
            if not lo <= v <= hi:  # NaN fails both comparisons
                self.attempt_ok[i] = False
                self.failures["invalid"] += 1
                continue
            if i in self._freeze:
                if v != self._raw[i]:
                    self._raw[i], self._changed_t[i] = v, t
                elif t - self._changed_t[i] > self._freeze[i]:
                    self.attempt_ok[i] = False
                    self.failures["frozen"] += 1
                    continue
            self.values[i] = v
            self.good_t[i] = t
            self.attempt_ok[i] = True

    def _update_status(self, now: float) -> None:
        flags = 0
        nxt = min(self._due) if self._due else math.inf
        degraded = False
        for i in range(len(FIELDS)):
            if not self.sensed[i]:
                if i in self._req:  # optional unsensed fields use their assumption/default silently
                    flags |= 1 << i
                continue
            age = now - self.good_t[i]
            self.modelled[i] = self._owner_modelled[i]
            self.source[FIELDS[i]] = self.owner[FIELDS[i]]
            bk = self._fresh_backup(i, now) if not (self.attempt_ok[i] and age <= self.stale_after_s) else None
            if self.attempt_ok[i] and age <= self.stale_after_s:
                st = FieldStatus.OK
                nxt = min(nxt, self.good_t[i] + self.stale_after_s)
            elif bk is not None:  # the owner has nothing good now: the next sensor that has
                j, (v, t, modelled) = bk
                self.values[i], self.modelled[i] = v, modelled
                self.source[FIELDS[i]] = self.sensors[j].name
                st = FieldStatus.OK
                nxt = min(nxt, t + self.stale_after_s)
            elif age <= self.hold_s:
                st = FieldStatus.HELD
                nxt = min(nxt, self.good_t[i] + self.hold_s)
            else:
                st = FieldStatus.LOST
                self.values[i] = self.conservative[i]
            if st:
                flags |= 1 << i
                degraded = True
            self.status[i] = st
        self.lost_required = any(self.status[i] == FieldStatus.LOST for i in self._req)
        self.degraded = degraded or any(self.status[i] != FieldStatus.OK or self.modelled[i] for i in self._req)
        self.flags = flags
        self._next_check = nxt


    def _fresh_backup(self, i: int, now: float) -> tuple[int, tuple[float, float, bool]] | None:
        """The most preferred backup of field ``i`` with a good value no older than ``stale_after_s``, or None.
        A field the shield needs (:data:`REQUIRED`) whose measuring owner fails is not handed to a model: it goes
        HELD, then LOST (the worst case), as a sensor that stops answering may be the first sign of trouble."""
        strict = i in self._req and not self._owner_modelled[i]
        for j in sorted(self._backup_good[i]):
            v, t, m = self._backup_good[i][j]
            if now - t <= self.stale_after_s and not (strict and m):
                return j, (v, t, m)
        return None


def live_sensors(clock: Callable[[], float] = time.monotonic, power_fn: Callable[[], float] | None = None,
                 thermal: Mapping[str, float] | None = None, powercap_root: str = "/sys/class/powercap",
                 power_supply_root: str = "/sys/class/power_supply", nvml: bool = False) -> list[Sensor]:
    """The sensors worth probing on a real machine, in order of preference.

    Battery: power_supply sysfs, then psutil. Temperature: psutil (NVML's GPU temperature with
    ``nvml``), else the modelled thermal sensor (needs ``thermal`` = ``{"r_th_c_per_w", "tau_s",
    "ambient_c"}`` and ``power_fn``). Power: RAPL, NVML, else the modelled power callback. The hub
    gives each field to the first available sensor in this list that provides it.
    """
    from runtime.meters import RaplMeter

    out: list[Sensor] = [PowerSupplySensor(root=power_supply_root, clock=clock),
                         PsutilBatterySensor(clock=clock),
                         PsutilTemperatureSensor(clock=clock),
                         RaplSensor(RaplMeter(powercap_root), clock=clock)]
    if nvml:
        out.append(NvmlSensor(clock=clock))
    if power_fn is not None:
        out.append(ModelledPowerSensor(power_fn, clock))
        if thermal is not None:
            out.append(ModelledThermalSensor(power_fn, float(thermal["r_th_c_per_w"]), float(thermal["tau_s"]),
                                             float(thermal.get("ambient_c", 25.0)), clock=clock))
    return out
