"""Modelled CPU energy: an estimate for profiling on machines without an energy meter.

The runtime's meters (``runtime.meters``) report real readings only. When none of them works,
profiling (``model/profile.py``) still needs an energy figure, so it falls back to
:class:`ModelledCpuEnergy`: CPU time × an assumed per-core power + DRAM bytes × Horowitz's energy
per byte. The figure is labelled ``energy_source = "modelled"`` everywhere it is written.

:func:`best_available_meter` and :func:`probe_meters` are the runtime's functions with the model
added as the last resort, so a profile run always gets a meter and its ``meters_probed`` report
lists the model too.

numpy-free, standard library + ``runtime.meters`` only (model → runtime is the allowed direction;
``runtime`` never imports this module).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from runtime import meters
from runtime.meters import EnergyMeter

__all__ = ["DEFAULT_ORDER", "HOROWITZ_45NM_PJ", "ModelledCpuEnergy", "best_available_meter", "probe_meters"]

#: Energy per operation / access at 45 nm, 0.9 V, in picojoules, from M. Horowitz,
#: "Computing's energy problem (and what we can do about it)", ISSCC 2014, pp. 10-14
#: (the energy table on the "Energy per operation" figure). The DRAM figure per 32-bit word is the
#: 640 pJ quoted from the same table by Han et al., "Learning both Weights and Connections for
#: Efficient Neural Networks", NeurIPS 2015 (Fig./Table 1); Horowitz gives 1.3-2.6 nJ per 64-bit
#: DRAM access, i.e. 160-325 pJ/byte, so 160 pJ/byte is the low end of his range.
HOROWITZ_45NM_PJ: dict[str, float] = {
    "int8_add": 0.03,
    "int16_add": 0.05,
    "int32_add": 0.1,
    "fp16_add": 0.4,
    "fp32_add": 0.9,
    "int8_mult": 0.2,
    "int32_mult": 3.1,
    "fp16_mult": 1.1,
    "fp32_mult": 3.7,
    "sram_cache_8kb_64bit_read": 10.0,
    "sram_cache_32kb_64bit_read": 20.0,
    "sram_cache_1mb_64bit_read": 100.0,
    "dram_32bit_read": 640.0,
    "dram_64bit_read_low": 1300.0,
    "dram_64bit_read_high": 2600.0,
}

#: A multiply-accumulate is a multiply plus an add; these are the per-MAC energies derived from
#: the table above (used for the optional ops term of :class:`ModelledCpuEnergy`).
_MAC_PJ: dict[str, float] = {
    "fp32_mac": HOROWITZ_45NM_PJ["fp32_mult"] + HOROWITZ_45NM_PJ["fp32_add"],  # 4.6 pJ
    "fp16_mac": HOROWITZ_45NM_PJ["fp16_mult"] + HOROWITZ_45NM_PJ["fp16_add"],  # 1.5 pJ
    "int8_mac": HOROWITZ_45NM_PJ["int8_mult"] + HOROWITZ_45NM_PJ["int32_add"],  # 0.3 pJ (int32 acc)
}

_HOROWITZ_CITATION = (
    "M. Horowitz, 'Computing's energy problem (and what we can do about it)', "
    "IEEE ISSCC 2014, Digest of Technical Papers, pp. 10-14 (45 nm, 0.9 V energy table)"
)
_HAN_CITATION = (
    "S. Han, J. Pool, J. Tran, W. Dally, 'Learning both Weights and Connections for Efficient "
    "Neural Networks', NeurIPS 2015 (table quoting Horowitz: 32-bit DRAM read 640 pJ)"
)


class ModelledCpuEnergy(EnergyMeter):
    """A model-based CPU energy estimate for machines without any meter.

    ``energy_j = cpu_time_s × active_power_per_core_w + bytes_moved × dram_pj_per_byte × 1e-12
    (+ Σ ops_k × op_pj_k × 1e-12 if ops are recorded)``

    * ``cpu_time_s`` is this process's CPU time (all threads, user + system), so a block that
      keeps 4 cores busy for 1 s counts 4 core-seconds.
    * The per-core active power is an assumption, not a measurement. The default 5 W is roughly
      TDP / cores of contemporary server parts (AMD EPYC 7763: 280 W / 64 cores ≈ 4.4 W; Intel
      Xeon Platinum 8380: 270 W / 40 cores ≈ 6.8 W); pass a figure for your CPU when you know it.
    * DRAM traffic is not observable from user space, so callers pass it (e.g. resident weight
      bytes per decoded token, since decode streams the weights once per token). 160 pJ/byte is
      Horowitz's 640 pJ per 32-bit DRAM read (45 nm); it overstates energy when the model fits in
      cache and understates it on newer DRAM-heavy systems less than the spread of his 1.3-2.6 nJ
      per 64-bit access.
    * The ops term uses Horowitz's 45 nm arithmetic energies. Core active power already contains
      the arithmetic, so combining a CPU-time term with an ops term double-counts; the ops term is
      meant for ``active_power_per_core_w=0`` estimates of accelerators or for comparisons.
    * Idle / static power of the rest of the machine is not included.

    It is an :class:`runtime.meters.EnergyMeter` (same ``measure()`` / ``read_energy_j()``
    contract), so profiling code treats it like a real meter; ``energy_source`` says "modelled".

    Args:
        active_power_per_core_w: Power of one busy core in W.
        dram_pj_per_byte: DRAM energy per byte moved, in pJ.
        op_pj: Energy per operation kind in pJ (default: fp32/fp16/int8 MACs from Horowitz).
        cpu_time_fn: Cumulative CPU-time source in seconds (default ``time.process_time``).
    """

    energy_source = "modelled"

    def __init__(
        self,
        active_power_per_core_w: float = 5.0,
        dram_pj_per_byte: float = HOROWITZ_45NM_PJ["dram_32bit_read"] / 4.0,
        op_pj: Mapping[str, float] | None = None,
        cpu_time_fn: Callable[[], float] = time.process_time,
    ) -> None:
        super().__init__()
        if active_power_per_core_w < 0 or dram_pj_per_byte < 0:
            raise ValueError("active_power_per_core_w and dram_pj_per_byte must be >= 0")
        self.active_power_per_core_w = float(active_power_per_core_w)
        self.dram_pj_per_byte = float(dram_pj_per_byte)
        self.op_pj: dict[str, float] = dict(op_pj if op_pj is not None else _MAC_PJ)
        self.cpu_time_fn = cpu_time_fn
        self.name = "modelled_cpu"
        self._bytes_moved = 0.0
        self._ops: dict[str, float] = {}

    def _probe(self) -> tuple[bool, str]:
        self.cpu_time_fn()
        return True, ""

    def estimate_energy_j(
        self,
        cpu_time_s: float,
        bytes_moved: float = 0.0,
        ops: Mapping[str, float] | None = None,
    ) -> float:
        """Returns the modelled energy in joules for the given work.

        Args:
            cpu_time_s: CPU time in seconds (core-seconds).
            bytes_moved: DRAM bytes moved.
            ops: Operation counts by kind (keys of :attr:`op_pj`, e.g. ``"fp32_mac"``).

        Raises:
            ValueError: A negative input or an unknown op kind.
        """
        if cpu_time_s < 0 or bytes_moved < 0:
            raise ValueError("cpu_time_s and bytes_moved must be >= 0")
        energy_j = cpu_time_s * self.active_power_per_core_w + bytes_moved * self.dram_pj_per_byte * 1e-12
        for kind, count in (ops or {}).items():
            if kind not in self.op_pj:
                raise ValueError(f"unknown op kind {kind!r}; known: {sorted(self.op_pj)}")
            if count < 0:
                raise ValueError(f"op count for {kind!r} must be >= 0")
            energy_j += count * self.op_pj[kind] * 1e-12
        return energy_j

    def record_work(self, bytes_moved: float = 0.0, ops: Mapping[str, float] | None = None) -> None:
        """Adds DRAM bytes and op counts to the cumulative reading (CPU time is read itself)."""
        if bytes_moved < 0:
            raise ValueError("bytes_moved must be >= 0")
        self.estimate_energy_j(0.0, 0.0, ops)  # validates kinds and counts
        with self._lock:
            self._bytes_moved += bytes_moved
            for kind, count in (ops or {}).items():
                self._ops[kind] = self._ops.get(kind, 0.0) + count

    def _read_counter_j(self) -> float:
        return self.estimate_energy_j(self.cpu_time_fn(), self._bytes_moved, self._ops)

    def assumptions(self) -> dict[str, Any]:
        """Returns the model, constants and citations for a profile's ``energy_assumptions``."""
        return {
            "formula": (
                "energy_j = cpu_time_s * active_power_per_core_w "
                "+ dram_bytes * dram_pj_per_byte * 1e-12 (+ sum(ops_k * op_pj_k) * 1e-12)"
            ),
            "cpu_time_source": getattr(self.cpu_time_fn, "__qualname__", repr(self.cpu_time_fn)),
            "active_power_per_core_w": self.active_power_per_core_w,
            "active_power_per_core_basis": (
                "assumption: approx TDP / cores of contemporary server CPUs (AMD EPYC 7763 "
                "280 W / 64 cores = 4.4 W; Intel Xeon Platinum 8380 270 W / 40 cores = 6.8 W)"
            ),
            "dram_pj_per_byte": self.dram_pj_per_byte,
            "dram_basis": (
                "640 pJ per 32-bit DRAM read at 45 nm (Horowitz 2014, as tabulated by Han et al. 2015)"
            ),
            "op_pj": dict(self.op_pj),
            "horowitz_45nm_pj": dict(HOROWITZ_45NM_PJ),
            "citations": [_HOROWITZ_CITATION, _HAN_CITATION],
            "caveats": [
                "modelled, not measured: no energy meter was available",
                "per-core active power is assumed, not measured; real cores vary 2-20 W",
                (
                    "DRAM bytes are the caller's estimate (weights streamed once per decoded "
                    "token); a model that fits in cache moves fewer DRAM bytes"
                ),
                "45 nm energies overstate arithmetic/DRAM energy on current nodes",
                "idle/static power of the rest of the machine is excluded",
                "the op term double-counts arithmetic if combined with the CPU-time term",
            ],
        }

    def describe(self) -> dict[str, Any]:
        """Adds the modelling assumptions to the base description."""
        out = super().describe()
        out["assumptions"] = self.assumptions()
        return out


# ---------------------------------------------------------------------------------------------
# Selection for profiling: the runtime's meters, then the model
# ---------------------------------------------------------------------------------------------

#: The runtime's meter order with the model last: RAPL > NVML > power_supply > modelled.
DEFAULT_ORDER: tuple[str, ...] = (*meters.DEFAULT_ORDER, "modelled")
#: Meter kinds this module adds to ``runtime.meters``' own.
_MODELLED_KINDS: dict[str, Callable[[], EnergyMeter]] = {"modelled": ModelledCpuEnergy}


def probe_meters(
    order: Sequence[str] = DEFAULT_ORDER,
    *,
    powercap_root: str | os.PathLike[str] = "/sys/class/powercap",
    power_supply_root: str | os.PathLike[str] = "/sys/class/power_supply",
    nvml_index: int = 0,
) -> list[dict[str, Any]]:
    """:func:`runtime.meters.probe_meters` with the ``"modelled"`` kind known (for profile files)."""
    return meters.probe_meters(order, powercap_root=powercap_root, power_supply_root=power_supply_root,
                               nvml_index=nvml_index, extra_kinds=_MODELLED_KINDS)


def best_available_meter(
    order: Sequence[str] = DEFAULT_ORDER,
    *,
    powercap_root: str | os.PathLike[str] = "/sys/class/powercap",
    power_supply_root: str | os.PathLike[str] = "/sys/class/power_supply",
    nvml_index: int = 0,
) -> EnergyMeter:
    """The first available meter in ``order``; with the default order the model is the last resort.

    For a CUDA run, pass ``order=("nvml", "rapl", "power_supply", "modelled")`` to meter the GPU
    first. The modelled meter is always available, so with "modelled" in ``order`` this never fails.

    Raises:
        runtime.meters.MeterError: No meter in ``order`` is available (only without "modelled").
    """
    return meters.best_available_meter(order, powercap_root=powercap_root, power_supply_root=power_supply_root,
                                       nvml_index=nvml_index, extra_kinds=_MODELLED_KINDS)
