"""Energy meters: RAPL, NVML, Linux power_supply and psutil battery (real readings only).

This module is shared by the profiler (``model/profile.py``) and the on-device runtime, so it
depends on numpy and the standard library only. Optional back ends (``psutil``, ``pynvml`` from
the ``nvidia-ml-py`` package) are imported lazily inside methods, and a missing package simply
makes that meter unavailable. The modelled CPU energy estimate that profiling falls back to when
no meter works lives in ``model/energy_model.py`` (it plugs into :func:`best_available_meter`
through ``extra_kinds``); this module never imports the ``model`` package.

Every meter follows the same small contract (in the spirit of Zeus' ``ZeusMonitor``):

* ``name`` and ``energy_source`` (the string written into profile files: ``"rapl"``, ``"nvml"``,
  ``"power_supply"``; ``"none"`` for :class:`NullMeter`);
* ``available()`` probes the source and never raises; when it returns ``False``, ``reason`` says
  why in words a user can act on;
* ``read_energy_j()`` returns cumulative energy in joules since the meter's first read. It is
  monotonic: counter wrap-around is folded in, and meters that only expose power integrate it
  between reads (trapezoid rule);
* ``read_power_w()`` returns instantaneous power where the source has it;
* ``measure()`` is a context manager that yields a :class:`Measurement` filled in on exit with
  ``energy_j``, ``elapsed_s`` and ``cpu_time_s``; power-only meters are sampled on a background
  thread while the block runs.

Example:
    >>> meter = best_available_meter()  # MeterError when this machine has no meter
    >>> with meter.measure() as m:
    ...     run_some_tokens()
    >>> m.energy_j, m.elapsed_s, m.energy_source
"""

from __future__ import annotations

import importlib
import math
import os
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "BatteryStatus",
    "EnergyMeter",
    "Measurement",
    "MeterError",
    "NullMeter",
    "NvmlMeter",
    "PowerSupplyMeter",
    "PsutilBattery",
    "RaplMeter",
    "best_available_meter",
    "measure",
    "probe_meters",
]

T = TypeVar("T")

#: Reads a sysfs attribute and returns its text. Injectable so tests can simulate
#: ``PermissionError`` even when running as root (root ignores file modes).
Opener = Callable[[Path], str]

class MeterError(RuntimeError):
    """A meter was asked for something its source cannot provide right now."""


def _default_opener(path: Path) -> str:
    """Reads a sysfs attribute as text."""
    with open(path, encoding="ascii", errors="replace") as fh:
        return fh.read()


@dataclass
class Measurement:
    """Energy and time of one measured block; filled in when the block exits.

    Attributes:
        energy_j: Energy over the block in joules (NaN until the block exits).
        elapsed_s: Wall-clock duration in seconds (``time.perf_counter``).
        cpu_time_s: CPU time of this process over the block (``time.process_time``; all threads).
        energy_source: The meter's ``energy_source`` string.
        meter: The meter's ``name``.
        n_samples: Power samples taken (power-integrating meters; 0 for counters).
    """

    energy_j: float = math.nan
    elapsed_s: float = math.nan
    cpu_time_s: float = math.nan
    energy_source: str = ""
    meter: str = ""
    n_samples: int = 0

    @property
    def power_w(self) -> float:
        """Average power over the block in watts (NaN if the block took no time)."""
        if not self.elapsed_s or not math.isfinite(self.elapsed_s) or self.elapsed_s <= 0:
            return math.nan
        return self.energy_j / self.elapsed_s


class EnergyMeter(ABC):
    """Base class of all meters.

    Subclasses implement :meth:`_probe` and either :meth:`_read_counter_j` (sources with a
    cumulative counter) or :meth:`read_power_w` (power-only sources, which this class integrates).

    Attributes:
        name: Human-readable meter name (e.g. ``"rapl(package-0+package-1)"``).
        energy_source: The string recorded in profile files.
        reason: Why the meter is unavailable ("" when available or not yet probed).
    """

    name: str = "meter"
    energy_source: str = "none"
    #: Sampling period used by :meth:`measure` for power-only meters.
    default_sample_interval_s: float = 0.05

    def __init__(self) -> None:
        self.reason: str = ""
        # Re-entrant: a first read may probe the source, and probing may take the lock.
        self._lock = threading.RLock()
        self._base_counter_j: float | None = None
        # Power integration state (power-only meters).
        self._integrated_j = 0.0
        self._last_sample: tuple[float, float] | None = None  # (perf_counter_s, power_w)

    # -- probing -------------------------------------------------------------------------------
    def available(self) -> bool:
        """Returns whether the source can be read now; never raises.

        On ``False``, :attr:`reason` explains why (missing file, permission, missing package...).
        """
        try:
            ok, why = self._probe()
        except Exception as exc:  # noqa: BLE001 - the contract is "never raises"
            ok, why = False, f"{type(exc).__name__}: {exc}"
        self.reason = "" if ok else why
        return ok

    @abstractmethod
    def _probe(self) -> tuple[bool, str]:
        """Returns ``(available, reason_if_not)``. May raise; :meth:`available` catches."""

    # -- reading -------------------------------------------------------------------------------
    @property
    def has_energy_counter(self) -> bool:
        """True when the source exposes cumulative energy (no sampling needed)."""
        return True

    def _read_counter_j(self) -> float:
        """Returns the source's cumulative energy in J (any origin; wrap already folded in)."""
        raise MeterError(f"{self.name} has no energy counter")

    def read_power_w(self) -> float:
        """Returns instantaneous power in watts.

        Raises:
            MeterError: The source exposes only energy, or cannot be read.
        """
        raise MeterError(f"{self.name} exposes energy only, not instantaneous power; use measure()")

    def read_energy_j(self) -> float:
        """Returns cumulative energy in joules since this meter's first read (monotonic).

        Counter sources are differenced against the first read. Power-only sources are integrated
        with the trapezoid rule between successive calls, so call it often (``measure`` samples on
        a thread) or the integral only sees the end points.

        Raises:
            MeterError: The source cannot be read (check :meth:`available` and :attr:`reason`).
        """
        with self._lock:
            if self.has_energy_counter:
                now_j = self._read_counter_j()
                if self._base_counter_j is None:
                    self._base_counter_j = now_j
                return max(0.0, now_j - self._base_counter_j)
            return self._integrate_locked()

    def _integrate_locked(self) -> float:
        p_w = float(self.read_power_w())
        t_s = time.perf_counter()
        if self._last_sample is not None:
            t0_s, p0_w = self._last_sample
            self._integrated_j += 0.5 * (p0_w + p_w) * max(0.0, t_s - t0_s)
        self._last_sample = (t_s, p_w)
        return self._integrated_j

    def describe(self) -> dict[str, Any]:
        """Returns a JSON-ready description for profile files (name, source, availability)."""
        ok = self.available()
        return {
            "meter": self.name,
            "energy_source": self.energy_source,
            "available": ok,
            "reason": self.reason,
            "has_energy_counter": self.has_energy_counter,
        }

    # -- measuring -----------------------------------------------------------------------------
    @contextmanager
    def measure(self, sample_interval_s: float | None = None) -> Iterator[Measurement]:
        """Measures the energy of the enclosed block.

        Args:
            sample_interval_s: Power sampling period for power-only meters (default
                :attr:`default_sample_interval_s`). Ignored for counter meters.

        Yields:
            A :class:`Measurement` whose fields are filled in when the block exits.

        Raises:
            MeterError: The meter is unavailable (the message carries :attr:`reason`).
        """
        if not self.available():
            raise MeterError(f"{self.name} is unavailable: {self.reason}")
        m = Measurement(energy_source=self.energy_source, meter=self.name)
        interval_s = sample_interval_s or self.default_sample_interval_s
        stop = threading.Event()
        sampler: threading.Thread | None = None
        samples = [0]

        def _sample_loop() -> None:
            while not stop.wait(interval_s):
                try:
                    self.read_energy_j()
                    samples[0] += 1
                except MeterError:
                    # A transient read failure loses one sample; the trapezoid spans the gap.
                    pass

        e0_j = self.read_energy_j()
        t0_s = time.perf_counter()
        c0_s = time.process_time()
        if not self.has_energy_counter:
            sampler = threading.Thread(target=_sample_loop, name=f"{self.name}-sampler", daemon=True)
            sampler.start()
        try:
            yield m
        finally:
            stop.set()
            if sampler is not None:
                sampler.join()
            e1_j = self.read_energy_j()
            m.elapsed_s = time.perf_counter() - t0_s
            m.cpu_time_s = time.process_time() - c0_s
            m.energy_j = max(0.0, e1_j - e0_j)
            m.n_samples = samples[0] + (2 if sampler is not None else 0)


def measure(
    fn: Callable[[], T],
    meter: EnergyMeter | None = None,
    *,
    sample_interval_s: float | None = None,
) -> tuple[T, Measurement]:
    """Calls ``fn()`` under ``meter`` (default :func:`best_available_meter`).

    Args:
        fn: Zero-argument callable to measure (wrap arguments with a lambda or functools.partial).
        meter: Meter to use; ``None`` picks the best available one.
        sample_interval_s: Power sampling period for power-only meters.

    Returns:
        ``(fn's return value, Measurement)``.

    Raises:
        MeterError: ``meter`` is None and this machine has no available meter.
    """
    meter = meter if meter is not None else best_available_meter()
    with meter.measure(sample_interval_s) as m:
        result = fn()
    return result, m


# ---------------------------------------------------------------------------------------------
# RAPL (Linux powercap)
# ---------------------------------------------------------------------------------------------

_RAPL_PACKAGE_RE = re.compile(r"^intel-rapl:(\d+)$")
_RAPL_SUBZONE_RE = re.compile(r"^intel-rapl:(\d+):(\d+)$")


@dataclass
class _RaplZone:
    path: Path
    label: str
    max_range_uj: int
    last_raw_uj: int | None = None
    total_uj: int = 0


class RaplMeter(EnergyMeter):
    """Intel/AMD RAPL energy counters through the Linux powercap sysfs interface.

    Sums the top-level package zones ``intel-rapl:N`` (each zone's ``energy_uj`` already contains
    its ``core``/``uncore`` sub-zones, so those are never added again). DRAM sub-zones are a
    separate RAPL domain that the package counter does not include, so they are added when
    ``include_dram`` is set. ``psys`` (whole-platform) zones overlap the packages and are skipped.
    ``intel-rapl-mmio:*`` zones mirror package 0 on some laptops and are ignored for the same
    reason.

    Counter wrap is handled per zone with ``max_energy_range_uj``: when a raw reading is below
    the previous one, the delta is ``max_range - previous + raw``. A counter that wraps more than
    once between two reads cannot be detected (at 100 W a 262 kJ range wraps every ~44 min), so
    read at least that often during long runs.

    Since Linux 5.10, ``energy_uj`` is readable by root only (CVE-2020-8694, "Platypus"), so
    non-root users usually see this meter as unavailable with a permission reason.

    Args:
        root: The powercap class directory.
        include_dram: Add DRAM sub-zones (separate domain, not double counting).
        opener: Reads a sysfs file's text; injectable for tests.
    """

    energy_source = "rapl"

    def __init__(
        self,
        root: str | os.PathLike[str] = "/sys/class/powercap",
        *,
        include_dram: bool = True,
        opener: Opener | None = None,
    ) -> None:
        super().__init__()
        self.root = Path(root)
        self.include_dram = include_dram
        self._open = opener or _default_opener
        self._zones: list[_RaplZone] | None = None
        self.name = "rapl"

    def _read_int(self, path: Path) -> int:
        return int(self._open(path).strip())

    def _zone_name(self, zone_dir: Path) -> str:
        try:
            return self._open(zone_dir / "name").strip()
        except OSError:
            return zone_dir.name

    def _discover(self) -> list[_RaplZone]:
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root} does not exist (no powercap/RAPL on this machine)")
        zones: list[_RaplZone] = []
        for entry in sorted(self.root.iterdir(), key=lambda p: p.name):
            pkg = _RAPL_PACKAGE_RE.match(entry.name)
            sub = _RAPL_SUBZONE_RE.match(entry.name)
            if pkg:
                label = self._zone_name(entry)
                if label.startswith("psys"):
                    continue  # platform zone: overlaps the packages
            elif sub and self.include_dram:
                label = self._zone_name(entry)
                if label != "dram":
                    continue  # core/uncore are inside the package counter
            else:
                continue
            max_path = entry / "max_energy_range_uj"
            zones.append(_RaplZone(entry, label, self._read_int(max_path)))
        if not any(_RAPL_PACKAGE_RE.match(z.path.name) for z in zones):
            raise FileNotFoundError(f"no intel-rapl:N package zone under {self.root}")
        return zones

    def _probe(self) -> tuple[bool, str]:
        try:
            zones = self._discover()
            for z in zones:
                self._read_int(z.path / "energy_uj")
        except PermissionError as exc:
            return False, (
                f"permission denied reading {exc.filename or 'energy_uj'}: since Linux 5.10 RAPL "
                "energy_uj is root-only (CVE-2020-8694); run as root or grant read access, e.g. "
                "`sudo chmod o+r /sys/class/powercap/intel-rapl:*/energy_uj`"
            )
        except FileNotFoundError as exc:
            return False, str(exc)
        except ValueError as exc:
            return False, f"unparsable RAPL counter under {self.root}: {exc}"
        with self._lock:
            if self._zones is None:
                self._zones = zones
                self.name = "rapl(" + "+".join(z.label for z in zones) + ")"
        return True, ""

    @property
    def zones(self) -> list[str]:
        """Labels of the zones being summed (after :meth:`available`)."""
        return [z.label for z in self._zones or []]

    def _read_counter_j(self) -> float:
        if self._zones is None:
            ok, why = self._probe()
            if not ok:
                raise MeterError(f"RAPL unavailable: {why}")
        assert self._zones is not None
        total_uj = 0
        for z in self._zones:
            try:
                raw = self._read_int(z.path / "energy_uj")
            except (OSError, ValueError) as exc:
                raise MeterError(f"cannot read {z.path / 'energy_uj'}: {exc}") from exc
            if z.last_raw_uj is not None:
                delta = raw - z.last_raw_uj
                if delta < 0:  # the counter wrapped past max_energy_range_uj
                    delta = z.max_range_uj - z.last_raw_uj + raw
                z.total_uj += delta
            z.last_raw_uj = raw
            total_uj += z.total_uj
        return total_uj * 1e-6


# ---------------------------------------------------------------------------------------------
# NVML (NVIDIA GPUs)
# ---------------------------------------------------------------------------------------------


class NvmlMeter(EnergyMeter):
    """NVIDIA GPU energy through NVML (``pip install nvidia-ml-py``; imported lazily as pynvml).

    Uses ``nvmlDeviceGetTotalEnergyConsumption`` (millijoules since driver load; Volta and newer)
    when supported, otherwise integrates ``nvmlDeviceGetPowerUsage`` (milliwatts) samples.

    Args:
        index: GPU index as NVML numbers them.
    """

    energy_source = "nvml"
    # NVML's power reading is itself averaged by the driver over ~tens of ms; sampling much faster
    # adds cost without information.
    default_sample_interval_s = 0.02

    def __init__(self, index: int = 0) -> None:
        super().__init__()
        self.index = index
        self.name = f"nvml:{index}"
        self._nvml: Any = None
        self._handle: Any = None
        self._has_counter: bool | None = None

    def _probe(self) -> tuple[bool, str]:
        if self._handle is not None:
            return True, ""
        try:
            nvml = importlib.import_module("pynvml")
        except ImportError:
            return False, "pynvml is not installed (pip install nvidia-ml-py)"
        try:
            nvml.nvmlInit()
            handle = nvml.nvmlDeviceGetHandleByIndex(self.index)
        except Exception as exc:  # noqa: BLE001 - NVMLError subclasses vary by driver
            return False, f"NVML init / device {self.index} failed: {exc}"
        try:
            nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
            has_counter = True
        except Exception:  # noqa: BLE001 - NVMLError_NotSupported on pre-Volta GPUs
            has_counter = False
            try:
                nvml.nvmlDeviceGetPowerUsage(handle)
            except Exception as exc:  # noqa: BLE001
                return False, f"GPU {self.index} supports neither total energy nor power: {exc}"
        try:
            raw_name = nvml.nvmlDeviceGetName(handle)
            gpu = raw_name.decode() if isinstance(raw_name, bytes) else str(raw_name)
        except Exception:  # noqa: BLE001 - the name is cosmetic
            gpu = "gpu"
        self._nvml, self._handle, self._has_counter = nvml, handle, has_counter
        self.name = f"nvml:{self.index}({gpu})"
        return True, ""

    def _require(self) -> None:
        if self._handle is None and not self.available():
            raise MeterError(f"NVML unavailable: {self.reason}")

    @property
    def has_energy_counter(self) -> bool:
        """True when the GPU exposes the total-energy counter."""
        if self._has_counter is None:
            self.available()
        return bool(self._has_counter)

    def _read_counter_j(self) -> float:
        self._require()
        return float(self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)) * 1e-3

    def read_power_w(self) -> float:
        """Returns the GPU's power draw in watts (NVML reports milliwatts)."""
        self._require()
        return float(self._nvml.nvmlDeviceGetPowerUsage(self._handle)) * 1e-3

    def read_temperature_c(self) -> float:
        """Returns the GPU die temperature in °C (``NVML_TEMPERATURE_GPU``).

        Raises:
            MeterError: NVML is unavailable or the GPU does not report its temperature.
        """
        self._require()
        try:  # NVML_TEMPERATURE_GPU == 0
            return float(self._nvml.nvmlDeviceGetTemperature(self._handle, 0))
        except Exception as exc:  # noqa: BLE001 - driver-specific NVMLError subclasses
            raise MeterError(f"GPU {self.index} temperature unavailable: {exc}") from exc


# ---------------------------------------------------------------------------------------------
# Linux power_supply (batteries)
# ---------------------------------------------------------------------------------------------


class PowerSupplyMeter(EnergyMeter):
    """Battery power/energy from ``/sys/class/power_supply/<BAT>``.

    Power comes from ``power_now`` (µW) or, when absent, ``current_now`` (µA) × ``voltage_now``
    (µV). Cumulative energy comes from decreases of ``energy_now`` (µWh) when present (drain
    only: increases while charging are ignored so the reading stays monotonic), otherwise from
    integrating power. Absolute values are used because some drivers report discharge as negative.

    ``energy_now`` is coarse (the fuel gauge updates every few seconds, often in mWh steps), so for
    short blocks pass ``use_energy_now=False`` to integrate power instead. Readings only reflect
    the system's consumption while discharging; on AC power the battery sees the charger.

    Args:
        root: The power_supply class directory.
        name: Supply to use (e.g. ``"BAT0"``); default: the first with ``type`` == ``Battery``.
        use_energy_now: Prefer the ``energy_now`` counter for cumulative energy when it exists.
        opener: Reads a sysfs file's text; injectable for tests.
    """

    energy_source = "power_supply"
    # Fuel gauges refresh slowly; 0.25 s keeps overhead negligible without losing information.
    default_sample_interval_s = 0.25

    def __init__(
        self,
        root: str | os.PathLike[str] = "/sys/class/power_supply",
        name: str | None = None,
        *,
        use_energy_now: bool = True,
        opener: Opener | None = None,
    ) -> None:
        super().__init__()
        self.root = Path(root)
        self.supply = name
        self.use_energy_now = use_energy_now
        self._open = opener or _default_opener
        self._dir: Path | None = None
        self._last_energy_uwh: int | None = None
        self._drained_uwh = 0
        self.name = f"power_supply:{name or '?'}"

    def _read_int(self, path: Path) -> int:
        return int(self._open(path).strip())

    def _has(self, d: Path, attr: str) -> bool:
        return (d / attr).is_file()

    def _usable(self, d: Path) -> bool:
        return (
            self._has(d, "power_now")
            or (self._has(d, "current_now") and self._has(d, "voltage_now"))
            or self._has(d, "energy_now")
        )

    def _find(self) -> Path:
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root} does not exist")
        if self.supply is not None:
            d = self.root / self.supply
            if not d.is_dir():
                raise FileNotFoundError(f"no power supply named {self.supply!r} under {self.root}")
            return d
        for d in sorted(self.root.iterdir(), key=lambda p: p.name):
            try:
                kind = self._open(d / "type").strip()
            except OSError:
                continue
            if kind == "Battery" and self._usable(d) and not self._peripheral(d):
                return d
        raise FileNotFoundError(
            f"no Battery supply with power_now, current_now+voltage_now or energy_now under {self.root}"
        )

    def _peripheral(self, d: Path) -> bool:
        """A wireless mouse's or keyboard's battery (``scope`` Device), not the machine's."""
        try:
            return self._open(d / "scope").strip() == "Device"
        except OSError:
            return False

    def has_power(self) -> bool:
        """True when the battery found reports power (``power_now``, or ``current_now`` and ``voltage_now``)."""
        d = self._dir
        return d is not None and (self._has(d, "power_now") or (self._has(d, "current_now") and
                                                                 self._has(d, "voltage_now")))

    def external_online(self) -> bool | None:
        """Whether a mains or USB supply under ``root`` is ``online`` (True if any is), or None without one.

        This is what "plugged in" means; the battery's ``status`` is not: a laptop at its charge threshold says
        "Not charging", a second battery or a confused gauge "Unknown", with the adapter in or out."""
        seen = False
        try:
            dirs = sorted(self.root.iterdir(), key=lambda p: p.name)
        except OSError:
            return None
        for d in dirs:
            try:
                kind = self._open(d / "type").strip()
                if not (kind == "Mains" or kind.startswith("USB") or kind == "Wireless") or self._peripheral(d):
                    continue
                online = self._open(d / "online").strip()
            except OSError:
                continue
            seen = True
            if online not in ("", "0"):
                return True
        return False if seen else None

    def _probe(self) -> tuple[bool, str]:
        try:
            d = self._find()
            if not self._usable(d):
                return False, f"{d} has none of power_now, current_now+voltage_now, energy_now"
            self._dir = d
            self.name = f"power_supply:{d.name}"
            if self._has(d, "power_now") or self._has(d, "current_now"):
                self.read_power_w()
            if self._counter_mode():
                self._read_int(d / "energy_now")
        except PermissionError as exc:
            return False, f"permission denied reading {exc.filename}"
        except (FileNotFoundError, MeterError) as exc:
            return False, str(exc)
        except ValueError as exc:
            return False, f"unparsable power_supply attribute under {self.root}: {exc}"
        return True, ""

    def _counter_mode(self) -> bool:
        return self._dir is not None and self.use_energy_now and self._has(self._dir, "energy_now")

    @property
    def has_energy_counter(self) -> bool:
        """True when cumulative energy comes from ``energy_now``."""
        if self._dir is None:
            self.available()
        return self._counter_mode()

    def _require_dir(self) -> Path:
        if self._dir is None and not self.available():
            raise MeterError(f"power_supply unavailable: {self.reason}")
        assert self._dir is not None
        return self._dir

    def read_power_w(self) -> float:
        """Returns battery power in watts from power_now, or current_now × voltage_now."""
        d = self._dir if self._dir is not None else self._find()
        try:
            if self._has(d, "power_now"):
                return abs(self._read_int(d / "power_now")) * 1e-6
            if self._has(d, "current_now") and self._has(d, "voltage_now"):
                current_ua = abs(self._read_int(d / "current_now"))
                voltage_uv = abs(self._read_int(d / "voltage_now"))
                return current_ua * voltage_uv * 1e-12
        except (OSError, ValueError) as exc:
            raise MeterError(f"cannot read power from {d}: {exc}") from exc
        raise MeterError(f"{d} has neither power_now nor current_now+voltage_now")

    def _read_counter_j(self) -> float:
        d = self._require_dir()
        try:
            now_uwh = self._read_int(d / "energy_now")
        except (OSError, ValueError) as exc:
            raise MeterError(f"cannot read {d / 'energy_now'}: {exc}") from exc
        if self._last_energy_uwh is not None and now_uwh < self._last_energy_uwh:
            self._drained_uwh += self._last_energy_uwh - now_uwh
        self._last_energy_uwh = now_uwh
        return self._drained_uwh * 3.6e-3  # 1 µWh = 3.6 mJ

    def _attr(self, name: str) -> str | None:
        """Text of an attribute of the supply found by :meth:`available`; None if none or unreadable."""
        if self._dir is None:
            return None
        try:
            return self._open(self._dir / name).strip()
        except OSError:
            return None

    def status(self) -> str | None:
        """Returns the supply's ``status`` ("Discharging", "Charging", ...) or None."""
        return self._attr("status")

    def capacity_frac(self) -> float | None:
        """Returns the state of charge from ``capacity`` (percent) as a fraction, or None.

        None when the supply has not been found (call :meth:`available` first), has no
        ``capacity`` or it does not parse. Out-of-range values are returned as they are.
        """
        raw = self._attr("capacity")
        return int(raw) / 100.0 if raw is not None and raw.lstrip("-").isdigit() else None

    def energy_full_wh(self) -> float | None:
        """Returns the battery's full energy in Wh: ``energy_full`` (µWh), else ``charge_full`` (µAh) ×
        ``voltage_min_design`` (µV), as gauges that count charge report it; None without either, or unparsable.
        """
        try:
            raw = self._attr("energy_full")
            if raw is not None:
                return int(raw) * 1e-6
            q, v = self._attr("charge_full"), self._attr("voltage_min_design")
            return int(q) * int(v) * 1e-12 if q is not None and v is not None else None
        except ValueError:
            return None

    def describe(self) -> dict[str, Any]:
        """Adds the battery status, because readings are only meaningful while discharging."""
        out = super().describe()
        out["status"] = self.status()
        return out


@dataclass(frozen=True)
class BatteryStatus:
    """psutil's battery view; every field is None when unknown.

    Attributes:
        percent: State of charge in percent (0-100).
        plugged: True when on AC power.
        secsleft_s: Estimated seconds left; None when unknown or unlimited (plugged in).
    """

    percent: float | None = None
    plugged: bool | None = None
    secsleft_s: float | None = None


def _psutil_battery_is_a_peripheral(psutil: Any) -> str | None:
    """On Linux, the supply ``psutil.sensors_battery()`` reads (the first by name that starts with ``BAT`` or holds
    ``battery``, as psutil picks it) when its ``scope`` is Device; else None."""
    lin = getattr(psutil, "_pslinux", None)
    root = getattr(lin, "POWER_SUPPLY_PATH", None) if lin is not None else None
    if not root:
        return None
    try:
        names = sorted(x for x in os.listdir(root) if x.startswith("BAT") or "battery" in x.lower())
        if not names:
            return None
        with open(os.path.join(root, names[0], "scope")) as fh:
            return names[0] if fh.read().strip() == "Device" else None
    except OSError:
        return None


class PsutilBattery:
    """Reads ``psutil.sensors_battery()`` (psutil imported lazily).

    Not an :class:`EnergyMeter`: it gives state of charge, not energy. Returns a
    :class:`BatteryStatus` of None fields when psutil or the battery is absent.
    """

    name = "psutil_battery"

    def __init__(self) -> None:
        self.reason = ""

    def _sensors(self) -> Any:
        try:
            psutil = importlib.import_module("psutil")
        except ImportError:
            self.reason = "psutil is not installed"
            return None
        fn = getattr(psutil, "sensors_battery", None)
        if fn is None:
            self.reason = "psutil has no sensors_battery on this platform"
            return None
        try:
            batt = fn()
        except Exception as exc:  # noqa: BLE001 - platform-specific failures
            self.reason = f"sensors_battery failed: {exc}"
            return None
        if batt is None:
            self.reason = "no battery reported by psutil"
            return None
        peripheral = _psutil_battery_is_a_peripheral(psutil)
        if peripheral:
            self.reason = (f"psutil's battery {peripheral} is a peripheral's (scope Device: a wireless mouse or "
                           "keyboard), not this machine's")
            return None
        return batt

    def available(self) -> bool:
        """Returns whether psutil reports a battery; never raises."""
        return self._sensors() is not None

    def read(self) -> BatteryStatus:
        """Returns the current battery status (None fields when absent or unknown)."""
        batt = self._sensors()
        if batt is None:
            return BatteryStatus()
        percent = getattr(batt, "percent", None)
        plugged = getattr(batt, "power_plugged", None)
        secs = getattr(batt, "secsleft", None)
        # psutil encodes "unknown" as POWER_TIME_UNKNOWN (-1) and "on AC" as
        # POWER_TIME_UNLIMITED (-2); neither is a duration.
        secsleft_s = float(secs) if isinstance(secs, (int, float)) and secs >= 0 else None
        return BatteryStatus(
            percent=float(percent) if percent is not None else None,
            plugged=bool(plugged) if plugged is not None else None,
            secsleft_s=secsleft_s,
        )


class NullMeter(EnergyMeter):
    """A meter that measures nothing: always available, always 0 J (``energy_source`` "none")."""

    energy_source = "none"

    def __init__(self) -> None:
        super().__init__()
        self.name = "null"

    def _probe(self) -> tuple[bool, str]:
        return True, ""

    def _read_counter_j(self) -> float:
        return 0.0

    def read_power_w(self) -> float:
        """Returns 0 W."""
        return 0.0


# ---------------------------------------------------------------------------------------------
# Selection
# ---------------------------------------------------------------------------------------------

DEFAULT_ORDER: tuple[str, ...] = ("rapl", "nvml", "power_supply")

#: Builds a meter of some kind, e.g. ``model.energy_model.ModelledCpuEnergy`` (see ``extra_kinds``).
MeterFactory = Callable[[], EnergyMeter]


def _build(
    kind: str,
    powercap_root: str | os.PathLike[str],
    power_supply_root: str | os.PathLike[str],
    nvml_index: int,
    extra_kinds: Mapping[str, MeterFactory] | None,
) -> EnergyMeter:
    if extra_kinds and kind in extra_kinds:
        return extra_kinds[kind]()
    if kind == "rapl":
        return RaplMeter(powercap_root)
    if kind == "nvml":
        return NvmlMeter(nvml_index)
    if kind == "power_supply":
        return PowerSupplyMeter(power_supply_root)
    known = (*DEFAULT_ORDER, *(extra_kinds or {}))
    raise ValueError(f"unknown meter kind {kind!r}; choose from {known}")


def probe_meters(
    order: Sequence[str] = DEFAULT_ORDER,
    *,
    powercap_root: str | os.PathLike[str] = "/sys/class/powercap",
    power_supply_root: str | os.PathLike[str] = "/sys/class/power_supply",
    nvml_index: int = 0,
    extra_kinds: Mapping[str, MeterFactory] | None = None,
) -> list[dict[str, Any]]:
    """Probes each meter kind and reports availability and reasons (for profile files).

    Args:
        order: Meter kinds to probe.
        extra_kinds: Kinds beyond the built-in ones, name -> zero-argument factory (profiling adds
            ``{"modelled": ModelledCpuEnergy}`` from ``model.energy_model``).

    Returns:
        One ``describe()`` dict per kind, in ``order``, each with a ``kind`` key.
    """
    out = []
    for kind in order:
        d = _build(kind, powercap_root, power_supply_root, nvml_index, extra_kinds).describe()
        d["kind"] = kind
        out.append(d)
    return out


def best_available_meter(
    order: Sequence[str] = DEFAULT_ORDER,
    *,
    powercap_root: str | os.PathLike[str] = "/sys/class/powercap",
    power_supply_root: str | os.PathLike[str] = "/sys/class/power_supply",
    nvml_index: int = 0,
    extra_kinds: Mapping[str, MeterFactory] | None = None,
) -> EnergyMeter:
    """Returns the first available meter in ``order`` (RAPL > NVML > power_supply).

    For a CUDA run, pass ``order=("nvml", "rapl", "power_supply")`` to meter the GPU first. For a
    figure even without a meter, use ``model.energy_model.best_available_meter``, which adds the
    modelled CPU energy as the last kind.

    Args:
        order: Meter kinds in order of preference.
        extra_kinds: Kinds beyond the built-in ones, name -> zero-argument factory.

    Raises:
        MeterError: No meter in ``order`` is available (the message lists each kind's reason).
    """
    reasons = []
    for kind in order:
        meter = _build(kind, powercap_root, power_supply_root, nvml_index, extra_kinds)
        if meter.available():
            return meter
        reasons.append(f"{kind}: {meter.reason}")
    raise MeterError("no energy meter available: " + "; ".join(reasons))
