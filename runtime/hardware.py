"""The processors of a device: what each can run, how fast, at what power, and what moving data costs.

numpy + the standard library only (the on-device runtime imports it); torch is imported lazily inside
:func:`host_hardware`, and only to look for a CUDA GPU.

A :class:`Hardware` description belongs to a device kind (``phone``, ``laptop``, ``solar-node``,
``host``) and lists its processors by role (:data:`runtime.placement.ROLES`: ``cpu`` = big CPU
cluster, ``lcpu`` = little cluster, ``gpu``, ``npu``). Per :class:`Processor`: supported weight and
activation precisions, peak throughput per precision, the memory bandwidth it can draw, the memory
available to the model, active and idle power, the roofline's efficiency and dispatch overheads, the
hand-off cost of one segment call (``dispatch_ms``) and its part in the device's thermal model
(``thermal_share``, ``trip_offset_c``). Per device: the :class:`Interconnect` that activations and
KV cross between processors.

Every figure carries a provenance note whose prefix says where it comes from (:data:`NOTE_KINDS`):
``datasheet:``, ``derived:`` (arithmetic on cited figures), ``third-party:``, ``measured:``,
``n/a:`` (a null peak: why there is none) or ``assumption (modelled):``. A figure resting on an
assumption must say ``assumption (modelled)``; :func:`modelled_fields` lists them and
``Hardware.modelled`` is true exactly when there is one.

The shipped descriptions are JSON files in ``runtime/hardware/`` (docs/hardware.md has the tables);
:func:`host_hardware` describes the machine it runs on. ``python -m runtime.hardware [NAME|--host]
[--json]`` prints one.

Time and energy on one processor follow :mod:`model.roofline` (``Processor.roofline_dict`` feeds
``model.roofline.spec_from_dict``); ``dispatch_ms`` and the interconnect are what a two-segment
placement adds on top: per token, each segment's ``dispatch_ms`` plus one boundary transfer of
``bytes / bytes_per_s + latency_us`` at ``energy_pj_per_byte``.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any

from runtime.dynamics import DEVICES
from runtime.placement import ROLES

__all__ = [
    "ROLES", "PROCESSOR_KINDS", "ROLE_KIND", "WEIGHT_BITS", "ACTIVATION_BITS", "NOTE_KINDS", "HARDWARE_DIR",
    "DEVICE_KINDS", "HARDWARE_FOR_KIND", "HardwareError", "Processor", "Interconnect", "Hardware",
    "load_hardware", "list_hardware", "hardware_for_kind", "host_hardware", "modelled_fields", "format_table", "main",
]

HARDWARE_DIR = Path(__file__).resolve().parent / "hardware"
PROCESSOR_KINDS: tuple[str, ...] = ("cpu", "gpu", "npu")  # the roofline spec kinds (model.roofline)
ROLE_KIND: dict[str, str] = {"cpu": "cpu", "lcpu": "cpu", "gpu": "gpu", "npu": "npu"}
WEIGHT_BITS: tuple[int, ...] = (32, 8, 4)  # the model's weight precisions (runtime.configspace "bits")
ACTIVATION_BITS: tuple[int, ...] = (32, 16, 8, 4)
NOTE_KINDS: tuple[str, ...] = ("datasheet", "derived", "third-party", "measured", "n/a", "assumption (modelled)")
MODELLED = "assumption (modelled)"
DEVICE_KINDS: tuple[str, ...] = (*DEVICES, "host")

#: Trace device kind -> shipped hardware file. ``solar-node`` maps to the Jetson-class board: the
#: edge AI boxes at solar-powered stations (camera analytics, sensor gateways) are Jetson-class
#: modules in sealed enclosures; ``default`` is phone-like, as ``runtime.dynamics.DEVICES``.
HARDWARE_FOR_KIND: dict[str, str] = {
    "phone": "phone-sd8gen2",
    "laptop": "laptop-i7-1260p",
    "solar-node": "jetson-orin-nano-8gb",
    "default": "phone-sd8gen2",
}

# Figures every processor must carry a provenance note for (a null peak too: say why it is null).
_PEAKS = ("peak_fp32_gflops", "peak_fp16_gflops", "peak_int8_gops", "peak_int4_gops")
_FIGURES = (*_PEAKS, "mem_bandwidth_gbs", "memory_mb", "active_power_w", "idle_power_w", "efficiency",
            "per_token_overhead_ms", "per_layer_overhead_ms", "dispatch_ms", "thermal_share", "trip_offset_c")
_OPTIONAL_NOTES = ("name", "kind", "cores", "weight_bits", "activation_bits")
_IC_FIGURES = ("bytes_per_s", "latency_us", "energy_pj_per_byte")
_TRIP_OFFSET_MAX_C = 30.0  # a processor's trip point further than this from the device's is a typo (K vs °C?)


class HardwareError(ValueError):
    """A hardware description is missing, malformed or out of range; the message names file, processor,
    field and the fix."""


def _frozen(d: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(d))


@dataclass(frozen=True)
class Processor:
    """One processor of a device (role ``cpu``/``lcpu``/``gpu``/``npu``) and its figures.

    Peaks are dense (no structured sparsity), GFLOP/s or GOP/s (1e9/s); ``None`` means the precision
    has no native path and the roofline falls back (int4 → int8 → fp16 → fp32, ``model.roofline``).
    """

    role: str
    """one of :data:`ROLES`"""
    name: str
    """the part, e.g. ``"Adreno 740"``"""
    kind: str
    """roofline spec kind: ``cpu``, ``gpu`` or ``npu`` (``cpu``/``lcpu`` roles are ``cpu``)"""
    weight_bits: tuple[int, ...]
    """weight precisions it runs natively, a subset of :data:`WEIGHT_BITS`, descending"""
    activation_bits: tuple[int, ...]
    """activation precisions, a subset of :data:`ACTIVATION_BITS`, descending"""
    cores: int | None
    """threads of a CPU cluster (what ``all cores`` in a placement means); ``None`` for a GPU/NPU"""
    peak_fp32_gflops: float
    peak_fp16_gflops: float | None
    peak_int8_gops: float | None
    peak_int4_gops: float | None
    mem_bandwidth_gbs: float
    """DRAM bandwidth this processor can draw, GB/s (1e9 B/s)"""
    memory_mb: float
    """memory available to the model on/for this processor, MB (1e6 B); on shared-memory SoCs one pool"""
    active_power_w: float
    """power while running the model, W"""
    idle_power_w: float
    """power while resident but idle, W (above the platform's idle)"""
    efficiency: float
    """achievable fraction of peak for batch-1 decode, (0, 1]"""
    per_token_overhead_ms: float
    """dispatch overhead per forward pass, ms"""
    per_layer_overhead_ms: float
    """extra dispatch overhead per active layer, ms"""
    dispatch_ms: float
    """hand-off/synchronisation overhead per segment call per token in a multi-processor placement, ms"""
    thermal_share: float
    """fraction of its dissipated power that heats the device's thermal node, (0, 1]"""
    trip_offset_c: float
    """its throttling trip point relative to the device's ``t_max_c``, °C"""
    notes: Mapping[str, str]
    """per-field provenance (:data:`NOTE_KINDS` prefixes)"""

    def peak_gops(self, bits: int) -> float | None:
        """The native peak for ``bits`` (32 → fp32, 16 → fp16, 8 → int8, 4 → int4), G(FL)OP/s, or None."""
        return {32: self.peak_fp32_gflops, 16: self.peak_fp16_gflops, 8: self.peak_int8_gops,
                4: self.peak_int4_gops}.get(int(bits))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the file format; ``role`` is the key it sits under and is included too)."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["weight_bits"], d["activation_bits"] = list(self.weight_bits), list(self.activation_bits)
        d["notes"] = dict(self.notes)
        return d

    def roofline_dict(self, sources: Sequence[str] | None = None, name: str | None = None) -> dict[str, Any]:
        """The dict ``model.roofline.spec_from_dict`` accepts, to project a configuration onto this processor.

        Args:
            sources: Citations (``Hardware.roofline_dict`` passes the device's); default: a pointer to the notes.
            name: Spec name; default the processor's name.
        """
        keep = ("kind", *_PEAKS, "mem_bandwidth_gbs", "active_power_w", "idle_power_w", "efficiency",
                "per_token_overhead_ms", "per_layer_overhead_ms")
        d: dict[str, Any] = {k: getattr(self, k) for k in keep}
        d["name"] = name or self.name
        d["description"] = f"{self.name} ({self.role}); weights {list(self.weight_bits)} bit"
        d["notes"] = {k: v for k, v in self.notes.items() if k in keep}
        d["sources"] = list(sources) if sources else [f"runtime.hardware Processor {self.name!r}: per-field notes"]
        return d


@dataclass(frozen=True)
class Interconnect:
    """How activations and KV move between a device's processors."""

    bytes_per_s: float
    """copy bandwidth for activations/KV between processors, B/s (shared DRAM copy, or PCIe)"""
    latency_us: float
    """fixed cost per transfer (sync, cache maintenance, driver call), µs"""
    energy_pj_per_byte: float
    """DRAM (and link) energy per byte moved, read + write, pJ/B"""
    notes: Mapping[str, str]
    """per-field provenance"""

    def transfer_ms(self, n_bytes: float) -> float:
        """Time to move ``n_bytes`` once, ms."""
        return float(n_bytes) / self.bytes_per_s * 1e3 + self.latency_us * 1e-3

    def transfer_j(self, n_bytes: float) -> float:
        """Energy to move ``n_bytes`` once, J."""
        return float(n_bytes) * self.energy_pj_per_byte * 1e-12

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"bytes_per_s": self.bytes_per_s, "latency_us": self.latency_us,
                "energy_pj_per_byte": self.energy_pj_per_byte, "notes": dict(self.notes)}


@dataclass(frozen=True)
class Hardware:
    """A device kind's processors, their interconnect and the sources of every figure."""

    name: str
    device_kind: str
    """the trace device kind it describes (``phone``, ``laptop``, ``solar-node``, ``host``, ...)"""
    description: str
    processors: Mapping[str, Processor]
    """role -> processor, in :data:`ROLES` order, only the roles the device has"""
    interconnect: Interconnect
    sources: tuple[str, ...]
    modelled: bool
    """True when any figure is an assumption (its note then starts ``assumption (modelled)``)"""

    def has(self, role: str) -> bool:
        """Whether the device has a processor in ``role``."""
        return role in self.processors

    @property
    def roles(self) -> tuple[str, ...]:
        """The roles present, in :data:`ROLES` order."""
        return tuple(r for r in ROLES if r in self.processors)

    def roofline_dict(self, role: str) -> dict[str, Any]:
        """``model.roofline.spec_from_dict`` input for the processor in ``role`` (named ``<hardware>:<role>``)."""
        if role not in self.processors:
            raise HardwareError(f"{self.name}: no processor in role {role!r}; it has {list(self.roles)}")
        return self.processors[role].roofline_dict(self.sources, f"{self.name}:{role}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict in the file format (:meth:`from_dict` reads it back)."""
        return {"name": self.name, "device_kind": self.device_kind, "description": self.description,
                "processors": {r: p.to_dict() for r, p in self.processors.items()},
                "interconnect": self.interconnect.to_dict(), "sources": list(self.sources),
                "modelled": self.modelled}

    @classmethod
    def from_dict(cls, d: Any, src: str = "<hardware>") -> Hardware:
        """Validates a description dict (the JSON file format) and returns a :class:`Hardware`.

        Raises:
            HardwareError: a missing or unknown field, a value out of range, an unknown role, a note
                missing or without a provenance prefix, ``modelled`` disagreeing with the notes — naming
                the file, the processor and the field, and the fix.
        """
        return _hardware_from_dict(d, src)


# ---- validation ----------------------------------------------------------------------------------

def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _number(d: Mapping[str, Any], key: str, where: str, *, lo: float | None = 0.0, lo_open: bool = True,
            hi: float | None = None, optional: bool = False, hint: str = "") -> float | None:
    v = d[key]
    if v is None:
        if optional:
            return None
        raise HardwareError(f"{where} field {key!r}: must be a number, got null{hint}")
    if not _is_num(v):
        raise HardwareError(f"{where} field {key!r}: must be a finite number, got {v!r}{hint}")
    if lo is not None and (v <= lo if lo_open else v < lo):
        raise HardwareError(f"{where} field {key!r}: must be {'>' if lo_open else '>='} {lo:g}, got {v!r}{hint}")
    if hi is not None and v > hi:
        raise HardwareError(f"{where} field {key!r}: must be <= {hi:g}, got {v!r}{hint}")
    return float(v)


def _check_keys(d: Any, required: Sequence[str], optional: Sequence[str], where: str, what: str) -> None:
    if not isinstance(d, Mapping):
        raise HardwareError(f"{where}: {what} must be a JSON object, got {type(d).__name__}")
    missing = [k for k in required if k not in d]
    if missing:
        raise HardwareError(f"{where}: missing field(s) {missing}; add them (each figure with a note in 'notes')")
    unknown = sorted(set(d) - set(required) - set(optional))
    if unknown:
        raise HardwareError(f"{where}: unknown field(s) {unknown}; known: {sorted([*required, *optional])} "
                            "(a typo? extra prose belongs in 'notes' or 'description')")


def _note_kind(note: str) -> str | None:
    head = note.split(":", 1)[0].strip().lower() if ":" in note else ""
    return head if head in NOTE_KINDS else None


def _check_notes(notes: Any, figures: Sequence[str], optional: Sequence[str], where: str) -> dict[str, str]:
    if not isinstance(notes, Mapping):
        raise HardwareError(f"{where} field 'notes': must be an object of field -> provenance")
    out: dict[str, str] = {}
    for k in figures:
        if k not in notes:
            raise HardwareError(f"{where} field {k!r}: no provenance note; add notes[{k!r}] starting with one of "
                                f"{[f'{n}:' for n in NOTE_KINDS]}")
    for k, v in notes.items():
        if k not in figures and k not in optional:
            raise HardwareError(f"{where} notes: {k!r} is not a field; notes may name {sorted([*figures, *optional])}")
        if not isinstance(v, str) or not v.strip():
            raise HardwareError(f"{where} field {k!r}: note must be a non-empty string")
        kind = _note_kind(v)
        if kind is None:
            raise HardwareError(f"{where} field {k!r}: note {v[:40]!r}... must start with one of "
                                f"{[f'{n}:' for n in NOTE_KINDS]}")
        if kind != MODELLED and re.search(r"assum", v, re.IGNORECASE):
            raise HardwareError(f"{where} field {k!r}: the note speaks of an assumption but starts {kind + ':'!r}; "
                                f"a figure resting on an assumption is modelled: start it '{MODELLED}:'")
        out[str(k)] = v
    return out


def _bits(v: Any, allowed: tuple[int, ...], key: str, where: str) -> tuple[int, ...]:
    if not isinstance(v, (list, tuple)) or not v:
        raise HardwareError(f"{where} field {key!r}: must be a non-empty list drawn from {list(allowed)}")
    bad = [b for b in v if isinstance(b, bool) or b not in allowed]
    if bad:
        raise HardwareError(f"{where} field {key!r}: {bad} not in {list(allowed)}; list only precisions the "
                            f"processor runs natively (e.g. an int8-only NPU: weight_bits [8, 4])")
    if len(set(v)) != len(v):
        raise HardwareError(f"{where} field {key!r}: duplicate values in {list(v)}")
    return tuple(sorted((int(b) for b in v), reverse=True))


_PROC_REQUIRED = tuple(f.name for f in fields(Processor) if f.name != "role")


def _processor_from_dict(role: Any, d: Any, src: str) -> Processor:
    where = f"{src}: processor {role!r}"
    if role not in ROLES:
        raise HardwareError(f"{src}: processors: unknown role {role!r}; roles are {list(ROLES)} "
                            "(cpu = big CPU cluster, lcpu = little cluster)")
    _check_keys(d, _PROC_REQUIRED, ("role",), where, "a processor")
    if "role" in d and d["role"] != role:
        raise HardwareError(f"{where} field 'role': {d['role']!r} differs from its key {role!r}; drop it or make "
                            "them agree")
    name = d["name"]
    if not isinstance(name, str) or not name.strip():
        raise HardwareError(f"{where} field 'name': must be a non-empty string (the part, e.g. 'Adreno 740')")
    kind = d["kind"]
    if kind != ROLE_KIND[role]:
        raise HardwareError(f"{where} field 'kind': role {role!r} is roofline kind {ROLE_KIND[role]!r}, got {kind!r}")
    cores = d["cores"]
    if kind == "cpu":
        if isinstance(cores, bool) or not isinstance(cores, int) or cores < 1:
            raise HardwareError(f"{where} field 'cores': a CPU cluster needs its thread count (integer >= 1), "
                                f"got {cores!r}")
    elif cores is not None:
        raise HardwareError(f"{where} field 'cores': only CPU clusters have cores; set it to null")
    notes = _check_notes(d["notes"], _FIGURES, _OPTIONAL_NOTES, where)
    if kind == "cpu" and "cores" not in notes:
        raise HardwareError(f"{where} field 'cores': no provenance note; add notes['cores']")
    num = {k: _number(d, k, where, optional=k in _PEAKS[1:]) for k in _PEAKS}
    p = Processor(
        role=role,
        name=name,
        kind=kind,
        weight_bits=_bits(d["weight_bits"], WEIGHT_BITS, "weight_bits", where),
        activation_bits=_bits(d["activation_bits"], ACTIVATION_BITS, "activation_bits", where),
        cores=cores,
        peak_fp32_gflops=num["peak_fp32_gflops"],
        peak_fp16_gflops=num["peak_fp16_gflops"],
        peak_int8_gops=num["peak_int8_gops"],
        peak_int4_gops=num["peak_int4_gops"],
        mem_bandwidth_gbs=_number(d, "mem_bandwidth_gbs", where),
        memory_mb=_number(d, "memory_mb", where, hint=" (MB = 1e6 bytes)"),
        active_power_w=_number(d, "active_power_w", where, hint=" (watts; mW? divide by 1000)"),
        idle_power_w=_number(d, "idle_power_w", where, lo_open=False,
                             hint=" (watts above the platform idle; power is never negative)"),
        efficiency=_number(d, "efficiency", where, hi=1.0, hint=" (a fraction of peak, (0, 1])"),
        per_token_overhead_ms=_number(d, "per_token_overhead_ms", where, lo_open=False),
        per_layer_overhead_ms=_number(d, "per_layer_overhead_ms", where, lo_open=False),
        dispatch_ms=_number(d, "dispatch_ms", where, lo_open=False),
        thermal_share=_number(d, "thermal_share", where, hi=1.0, hint=" (a fraction, (0, 1])"),
        trip_offset_c=_number(d, "trip_offset_c", where, lo=-_TRIP_OFFSET_MAX_C, lo_open=False,
                              hi=_TRIP_OFFSET_MAX_C, hint=" (°C relative to the device's t_max_c)"),
        notes=_frozen(notes),
    )
    if p.idle_power_w > p.active_power_w:
        raise HardwareError(f"{where} field 'idle_power_w': {p.idle_power_w} W exceeds active_power_w "
                            f"{p.active_power_w} W; swapped?")
    return p


def _hardware_from_dict(d: Any, src: str) -> Hardware:
    top = ("name", "device_kind", "description", "processors", "interconnect", "sources", "modelled")
    _check_keys(d, top, (), src, "a hardware description")
    name = d["name"]
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise HardwareError(f"{src} field 'name': must be a file-name-safe string (letters, digits, . _ -), "
                            f"got {name!r}")
    if d["device_kind"] not in DEVICE_KINDS:
        raise HardwareError(f"{src} field 'device_kind': {d['device_kind']!r} is not a device kind; "
                            f"known: {list(DEVICE_KINDS)} (runtime.dynamics.DEVICES + 'host')")
    if not isinstance(d["description"], str):
        raise HardwareError(f"{src} field 'description': must be a string")
    procs = d["processors"]
    if not isinstance(procs, Mapping) or not procs:
        raise HardwareError(f"{src} field 'processors': must be a non-empty object role -> processor")
    for role in procs:
        if role not in ROLES:
            raise HardwareError(f"{src}: processors: unknown role {role!r}; roles are {list(ROLES)} "
                                "(cpu = big CPU cluster, lcpu = little cluster)")
    if "cpu" not in procs:
        raise HardwareError(f"{src} field 'processors': no 'cpu' processor; every device needs one (the default "
                            "placement runs everything on the big CPU cluster)")
    processors = {r: _processor_from_dict(r, procs[r], src) for r in ROLES if r in procs}
    ic = d["interconnect"]
    where = f"{src}: interconnect"
    _check_keys(ic, (*_IC_FIGURES, "notes"), (), where, "the interconnect")
    interconnect = Interconnect(
        bytes_per_s=_number(ic, "bytes_per_s", where, hint=" (bytes per second, e.g. 20e9)"),
        latency_us=_number(ic, "latency_us", where, lo_open=False),
        energy_pj_per_byte=_number(ic, "energy_pj_per_byte", where, lo_open=False),
        notes=_frozen(_check_notes(ic["notes"], _IC_FIGURES, (), where)),
    )
    sources = d["sources"]
    if not isinstance(sources, list) or not sources or not all(isinstance(s, str) and s.strip() for s in sources):
        raise HardwareError(f"{src} field 'sources': must be a non-empty list of citation strings")
    if not isinstance(d["modelled"], bool):
        raise HardwareError(f"{src} field 'modelled': must be true or false")
    hw = Hardware(name=name, device_kind=d["device_kind"], description=d["description"],
                  processors=_frozen(processors), interconnect=interconnect, sources=tuple(sources),
                  modelled=d["modelled"])
    mf = modelled_fields(hw)
    if hw.modelled != bool(mf):
        fix = (f"set it to true: {len(mf)} figure(s) are modelled, e.g. {mf[:3]}" if mf
               else "set it to false: no note starts 'assumption (modelled)'")
        raise HardwareError(f"{src} field 'modelled': is {hw.modelled} but {fix}")
    return hw


def modelled_fields(hw: Hardware) -> list[str]:
    """Every figure whose note says ``assumption (modelled)``, as ``role.field`` / ``interconnect.field``."""
    out = [f"{r}.{k}" for r, p in hw.processors.items() for k, v in p.notes.items() if _note_kind(v) == MODELLED]
    out += [f"interconnect.{k}" for k, v in hw.interconnect.notes.items() if _note_kind(v) == MODELLED]
    return out


# ---- files ---------------------------------------------------------------------------------------

def list_hardware(directory: str | os.PathLike[str] = HARDWARE_DIR) -> list[str]:
    """Names of the shipped hardware descriptions (file stems in ``runtime/hardware/``)."""
    return sorted(p.stem for p in Path(directory).glob("*.json"))


def load_hardware(name_or_path: str | os.PathLike[str]) -> Hardware:
    """Loads and validates a description: a path to a JSON file, or a shipped name.

    Raises:
        HardwareError: not found (the message lists the shipped names), not JSON, or invalid.
    """
    p = Path(name_or_path)
    if not p.is_file():
        cand = HARDWARE_DIR / f"{os.fspath(name_or_path)}.json"
        if not cand.is_file():
            raise HardwareError(f"no hardware description {os.fspath(name_or_path)!r}; shipped: {list_hardware()} "
                                "(or pass a path to a JSON file; --hardware host describes this machine)")
        p = cand
    if p.suffix.lower() != ".json":
        raise HardwareError(f"{p}: hardware descriptions are JSON files (*.json)")
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise HardwareError(f"{p}: not valid JSON (line {exc.lineno}: {exc.msg})") from exc
    return Hardware.from_dict(d, str(p))


def hardware_for_kind(kind: str) -> Hardware:
    """The hardware of a trace device kind (:data:`HARDWARE_FOR_KIND`; ``host`` → :func:`host_hardware`;
    unknown kinds → ``default``, as ``runtime.dynamics.device_constants``)."""
    if kind == "host":
        return host_hardware()
    return load_hardware(HARDWARE_FOR_KIND.get(kind, HARDWARE_FOR_KIND["default"]))


# ---- this host -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Gpu:
    """Datasheet figures of a known NVIDIA GPU (dense Tensor Core rates; sparsity halved away)."""

    fp32: float  # GFLOPS
    fp16: float  # GFLOPS, dense fp16 Tensor Core (fp32 accumulate where the datasheet distinguishes)
    int8: float  # GOPS, dense
    bw: float  # GB/s
    tdp: float  # W
    idle: float  # W, modelled
    pcie_gen: int
    source: str


#: Known NVIDIA GPUs, matched in order against ``get_device_properties(0).name`` (case-insensitive).
_GPUS: tuple[tuple[str, _Gpu], ...] = (
    (r"H200.*NVL", _Gpu(60_000, 835_500, 1_670_500, 4800, 600, 70, 5,
                        "NVIDIA H200 Tensor Core GPU datasheet (2024), H200 NVL: FP32 60 TFLOPS, FP16 Tensor 1,671 "
                        "TFLOPS and INT8 3,341 TOPS with sparsity, 4.8 TB/s HBM3e, up to 600 W, PCIe Gen5")),
    (r"H200", _Gpu(67_000, 989_500, 1_979_000, 4800, 700, 75, 5,
                   "NVIDIA H200 Tensor Core GPU datasheet (2024), H200 SXM: FP32 67 TFLOPS, FP16 Tensor 1,979 TFLOPS "
                   "and INT8 3,958 TOPS with sparsity, 141 GB HBM3e at 4.8 TB/s, up to 700 W, PCIe Gen5")),
    (r"H100.*PCIE", _Gpu(51_000, 756_500, 1_513_000, 2000, 350, 50, 5,
                         "NVIDIA H100 Tensor Core GPU datasheet, H100 PCIe: FP32 51 TFLOPS, FP16 Tensor 1,513 TFLOPS "
                         "and INT8 3,026 TOPS with sparsity, 2 TB/s, 300-350 W, PCIe Gen5")),
    (r"H100", _Gpu(67_000, 989_500, 1_979_000, 3350, 700, 75, 5,
                   "NVIDIA H100 Tensor Core GPU datasheet, H100 SXM: FP32 67 TFLOPS, FP16 Tensor 1,979 TFLOPS and "
                   "INT8 3,958 TOPS with sparsity, 3.35 TB/s HBM3, up to 700 W, PCIe Gen5")),
    (r"A100.*PCIE", _Gpu(19_500, 312_000, 624_000, 1935, 300, 40, 4,
                         "NVIDIA A100 Tensor Core GPU datasheet, A100 80GB PCIe: FP32 19.5 TFLOPS, FP16 Tensor 312 "
                         "TFLOPS and INT8 624 TOPS dense, 1,935 GB/s (1,555 GB/s for 40GB), 300 W, PCIe Gen4")),
    (r"A100", _Gpu(19_500, 312_000, 624_000, 2039, 400, 50, 4,
                   "NVIDIA A100 Tensor Core GPU datasheet, A100 80GB SXM: FP32 19.5 TFLOPS, FP16 Tensor 312 TFLOPS "
                   "and INT8 624 TOPS dense, 2,039 GB/s (1,555 GB/s for 40GB), 400 W, PCIe Gen4 host link")),
    (r"\bL4\b", _Gpu(30_300, 121_000, 242_500, 300, 72, 16, 4,
                     "NVIDIA L4 Tensor Core GPU datasheet: FP32 30.3 TFLOPS, FP16 Tensor 242 TFLOPS and INT8 485 "
                     "TOPS with sparsity, 24 GB GDDR6 at 300 GB/s, 72 W, PCIe Gen4 x16")),
    (r"RTX 4090", _Gpu(82_600, 165_200, 660_600, 1008, 450, 20, 4,
                       "NVIDIA Ada Lovelace GPU architecture whitepaper, GeForce RTX 4090: FP32 82.6 TFLOPS, FP16 "
                       "Tensor (FP32 accumulate) 165.2 TFLOPS and INT8 660.6 TOPS dense, 24 GB GDDR6X at 1,008 "
                       "GB/s, 450 W total graphics power, PCIe Gen4 x16")),
)
_PCIE_X16_GBS = {3: 15.75, 4: 31.5, 5: 63.0}  # per direction: GT/s x 16 lanes x 128b/130b / 8
_PCIE_EFFICIENCY = 0.8  # modelled: DMA efficiency of large pinned copies


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return ""


def _cpuinfo(text: str | None = None) -> dict[str, str]:
    """First processor's fields from /proc/cpuinfo (plus ``Hardware``/``Processor`` lines Arm kernels print)."""
    out: dict[str, str] = {}
    for line in (_read_text("/proc/cpuinfo") if text is None else text).splitlines():
        key, sep, value = line.partition(":")
        key = key.strip()
        if sep and key and key not in out and value.strip():
            out[key] = value.strip()
    return out


def _cpu_flop_model(flags: set[str], machine: str) -> tuple[int, str]:
    """fp32 FLOP/cycle/core of the widest FMA path the CPU reports, and why (modelled: 2 FMA pipes)."""
    if "avx512f" in flags:
        return 64, "AVX-512: 2 FMA pipes x 16 fp32 lanes x 2"
    if "avx2" in flags and "fma" in flags:
        return 32, "AVX2+FMA: 2 FMA pipes x 8 fp32 lanes x 2"
    if "asimd" in flags or machine in ("aarch64", "arm64"):
        return 16, "NEON: 2 FMA pipes x 4 fp32 lanes x 2"
    return 8, "SSE-class: 2 pipes x 4 fp32 lanes (no FMA)"


def host_hardware(*, measured: Mapping[str, float] | None = None, measured_note: str = "host_hardware(measured=...)",
                  assumed_ghz: float = 3.0, cuda: bool = True) -> Hardware:
    """This machine: its CPU (role ``cpu``, ``cores = os.cpu_count()``) and, when torch sees one, its CUDA GPU.

    CPU peaks are ``physical cores × assumed_ghz × FLOP/cycle`` of the widest FMA path in
    ``/proc/cpuinfo`` flags, bandwidth and power are per-core rules of thumb — all ``modelled`` —
    unless ``measured`` passes figures in (their notes then say ``measured``). A GPU's peaks,
    bandwidth and TDP come from a table of NVIDIA datasheets (H200, H100, A100, L4, RTX 4090), its
    memory from ``torch.cuda.get_device_properties(0)``; unknown GPUs get modelled defaults.

    Args:
        measured: CPU figures measured on this host (any numeric :class:`Processor` field, e.g.
            ``{"mem_bandwidth_gbs": 11.8, "active_power_w": 14.0}``); they replace the modelled ones.
        measured_note: How they were measured (goes into each such note).
        assumed_ghz: Sustained all-core clock for the modelled CPU peaks, GHz.
        cuda: Look for a CUDA GPU (imports torch lazily; False keeps torch out entirely).

    Raises:
        HardwareError: a ``measured`` key that is not a numeric processor field, or a value out of range.
    """
    info = _cpuinfo()
    model = next((info[k] for k in ("model name", "Hardware", "Processor") if k in info), "") \
        or platform.processor() or platform.machine() or "unknown CPU"
    threads = os.cpu_count() or 1
    smt = 1
    try:
        siblings, per_pkg = int(info.get("siblings", "0")), int(info.get("cpu cores", "0"))
        if siblings > per_pkg > 0 and siblings % per_pkg == 0:
            smt = siblings // per_pkg
    except ValueError:
        pass
    physical = max(1, threads // smt)
    flags = set((info.get("flags") or info.get("Features") or "").split())
    flop_cycle, flop_why = _cpu_flop_model(flags, platform.machine().lower())
    fp32 = physical * assumed_ghz * flop_cycle
    int8_x = 4 if flags & {"avx512_vnni", "avx_vnni", "asimddp"} else 2 if "avx2" in flags else None
    fp16_x = 2 if flags & {"avx512_fp16", "asimdhp"} else None
    mem_avail_kb = next((int(m.group(1)) for m in [re.search(r"MemAvailable:\s+(\d+)\s*kB",
                                                             _read_text("/proc/meminfo"))] if m), None)
    basis = f"{physical} physical cores ({threads} threads / SMT {smt}) x {assumed_ghz:g} GHz assumed"
    cpu: dict[str, Any] = {
        "name": model, "kind": "cpu", "weight_bits": [32, 8, 4],
        "activation_bits": [32, 16, 8] if fp16_x else [32, 8], "cores": threads,
        "peak_fp32_gflops": fp32,
        "peak_fp16_gflops": fp32 * fp16_x if fp16_x else None,
        "peak_int8_gops": fp32 * int8_x if int8_x else None,
        "peak_int4_gops": None,
        "mem_bandwidth_gbs": min(5.0 * physical, 200.0),
        "memory_mb": mem_avail_kb * 1024 / 1e6 if mem_avail_kb else 4096.0,
        "active_power_w": 5.0 * physical, "idle_power_w": 0.5 * physical, "efficiency": 0.5,
        "per_token_overhead_ms": 0.1, "per_layer_overhead_ms": 0.02, "dispatch_ms": 0.01,
        "thermal_share": 1.0, "trip_offset_c": 0.0,
    }
    m = MODELLED
    notes = {
        "name": "measured: /proc/cpuinfo 'model name' (or Arm's 'Hardware'/'Processor')",
        "cores": "measured: os.cpu_count() (logical CPUs: the threads a placement's 'all cores' uses)",
        "weight_bits": "derived: fp32 natively, int8 through integer dot products, 4-bit weights unpacked to int8",
        "activation_bits": "derived: from the /proc/cpuinfo flags (fp16 arithmetic only with avx512_fp16/asimdhp)",
        "peak_fp32_gflops": f"{m}: {basis} x {flop_cycle} FLOP/cycle ({flop_why}); clock and pipe count not read "
                            "from the hardware",
        "peak_fp16_gflops": (f"{m}: {fp16_x}x the modelled fp32 rate (native fp16 lanes)" if fp16_x
                             else "n/a: no fp16 arithmetic in the /proc/cpuinfo flags; fp16 runs at the fp32 rate"),
        "peak_int8_gops": (f"{m}: {int8_x}x the modelled fp32 rate "
                           f"({'VNNI/dot-product' if int8_x == 4 else 'AVX2 pmaddubsw'})" if int8_x
                           else "n/a: no int8 dot-product flags; int8 runs at the fp32 rate"),
        "peak_int4_gops": "n/a: CPUs have no int4 arithmetic; 4-bit configs compute at the int8 rate",
        "mem_bandwidth_gbs": f"{m}: ~5 GB/s per physical core, at most 200 GB/s (not measured)",
        "memory_mb": ("measured: /proc/meminfo MemAvailable when host_hardware() ran" if mem_avail_kb
                      else f"{m}: /proc/meminfo unreadable; 4 GB as runtime.dynamics DEVICES['laptop']"),
        "active_power_w": f"{m}: ~5 W per busy physical core incl. its share of uncore and DRAM (no RAPL reading)",
        "idle_power_w": f"{m}: ~0.5 W per physical core resident but idle",
        "efficiency": f"{m}: CPU batch-1 decode sustains roughly 50 % of the bandwidth it can draw",
        "per_token_overhead_ms": f"{m}: framework dispatch per forward pass on a CPU",
        "per_layer_overhead_ms": f"{m}: ~20 operator dispatches per block at ~1 us",
        "dispatch_ms": f"{m}: worker-thread wake-up per segment call",
        "thermal_share": "derived: the CPU package is the host's thermal node; all its heat reaches it",
        "trip_offset_c": f"{m}: the CPU defines the host's trip point (reference, 0 °C)",
    }
    known = {f.name for f in fields(Processor)} - {"role", "name", "kind", "weight_bits", "activation_bits", "notes"}
    for k, v in (measured or {}).items():
        if k not in known:
            raise HardwareError(f"host_hardware(measured=...): {k!r} is not a numeric processor field; "
                                f"known: {sorted(known)}")
        cpu[k] = int(v) if k == "cores" else float(v)
        notes[k] = f"measured: {measured_note}"
    cpu["notes"] = notes
    processors: dict[str, Any] = {"cpu": cpu}
    sources = ["/proc/cpuinfo and /proc/meminfo of this host; os.cpu_count()",
               "Intel 64 and IA-32 Architectures Optimization Reference Manual and Arm Software Optimization "
               "Guides: FMA pipe counts and vector widths behind the modelled FLOP/cycle"]
    ic = {"bytes_per_s": 10e9, "latency_us": 1.0, "energy_pj_per_byte": 100.0, "notes": {
        "bytes_per_s": f"{m}: one processor; a DRAM copy between threads, ~10 GB/s",
        "latency_us": f"{m}: a cache-line hand-off between cores, ~1 us",
        "energy_pj_per_byte": f"{m}: ~6 pJ/bit per DDR access, read + write per byte"}}
    desc = f"This host: {model}, {threads} logical CPUs"
    gpu = _cuda_gpu() if cuda else None
    if gpu is not None:
        gname, total_bytes, sms = gpu
        entry = next((g for pat, g in _GPUS if re.search(pat, gname, re.IGNORECASE)), None)
        processors["gpu"], gic = _gpu_processor(gname, total_bytes, sms, entry)
        ic = gic
        if entry is not None:
            sources.append(entry.source)
        sources.append("PCI Express Base Specification (Gen4 16 GT/s, Gen5 32 GT/s per lane, 128b/130b encoding)")
        desc += f" + CUDA GPU {gname} ({total_bytes / 1e9:.0f} GB)"
    d = {"name": "host", "device_kind": "host", "description": desc, "processors": processors,
         "interconnect": ic, "sources": sources, "modelled": True}
    d["modelled"] = any(_note_kind(v) == MODELLED for p in processors.values() for v in p["notes"].values()) or \
        any(_note_kind(v) == MODELLED for v in ic["notes"].values())
    return Hardware.from_dict(d, "<host_hardware()>")


def _cuda_gpu() -> tuple[str, int, int | None] | None:
    """``(name, total_memory bytes, SM count)`` of CUDA device 0, or None (no torch, no CUDA)."""
    try:
        import torch  # lazy: only here, to detect a CUDA GPU
    except ImportError:
        return None
    try:
        if not torch.cuda.is_available():
            return None
        props = torch.cuda.get_device_properties(0)
    except Exception:  # a broken driver is "no GPU" for a description
        return None
    sms = getattr(props, "multi_processor_count", None)
    return str(props.name), int(props.total_memory), int(sms) if isinstance(sms, int) else None


def _gpu_processor(gname: str, total_bytes: int, sms: int | None, g: _Gpu | None) -> tuple[dict, dict]:
    m = MODELLED
    if g is not None:
        ds = f"datasheet: {g.source.split(':')[0]}"
        bw, bw_note = g.bw, ds
        if "A100" in gname.upper() and total_bytes < 60e9:  # the 40GB A100s have HBM2 at 1,555 GB/s
            bw, bw_note = 1555.0, f"{ds} (40GB variant: 1,555 GB/s)"
        dense = f"{ds} (dense Tensor Core rate, sparsity excluded)"
        fig = {"peak_fp32_gflops": (g.fp32, ds), "peak_fp16_gflops": (g.fp16, dense),
               "peak_int8_gops": (g.int8, dense),
               "mem_bandwidth_gbs": (bw, bw_note), "active_power_w": (g.tdp, f"{ds} (TDP/TGP: an upper bound for "
                                                                         "batch-1 decode)"),
               "idle_power_w": (g.idle, f"{m}: typical nvidia-smi idle draw of this class of board")}
        gen = g.pcie_gen
    else:
        n = sms or 80
        fp32 = n * 128 * 2 * 1.5  # 128 fp32 lanes per SM (Ampere/Ada/Hopper) x FMA x 1.5 GHz
        fig = {"peak_fp32_gflops": (fp32, f"{m}: {n} SMs x 128 fp32 lanes x 2 x 1.5 GHz (GPU not in the table)"),
               "peak_fp16_gflops": (2 * fp32, f"{m}: 2x fp32 (double-rate fp16 without Tensor Cores, conservative)"),
               "peak_int8_gops": (None, "n/a: GPU not in the table; int8 computes at the fp16 rate"),
               "mem_bandwidth_gbs": (500.0, f"{m}: a mid-range discrete GPU (GPU not in the table)"),
               "active_power_w": (250.0, f"{m}: a mid-range discrete GPU board power"),
               "idle_power_w": (25.0, f"{m}: a mid-range discrete GPU idle")}
        gen = 4
    gpu: dict[str, Any] = {
        "name": gname, "kind": "gpu", "weight_bits": [32, 8, 4], "activation_bits": [32, 16, 8], "cores": None,
        "peak_int4_gops": None, "memory_mb": total_bytes / 1e6, "efficiency": 0.6,
        "per_token_overhead_ms": 0.3, "per_layer_overhead_ms": 0.1, "dispatch_ms": 0.02,
        "thermal_share": 0.1, "trip_offset_c": 0.0,
    }
    notes = {k: n for k, (_, n) in fig.items()}
    gpu.update({k: v for k, (v, _) in fig.items()})
    notes.update({
        "name": "measured: torch.cuda.get_device_properties(0).name",
        "weight_bits": "derived: fp32 CUDA cores, int8 Tensor Cores; int4 weights stored packed, computed at int8/fp16",
        "activation_bits": "derived: fp32, fp16 and int8 paths",
        "peak_int4_gops": "n/a: LLM runtimes use int4 for weight storage only; 4-bit configs use the int8 rate",
        "memory_mb": "measured: torch.cuda.get_device_properties(0).total_memory (CUDA context not subtracted)",
        "efficiency": f"{m}: batch-1 decode of a micro-LLM is launch-bound; ~60 % of peak bandwidth when not",
        "per_token_overhead_ms": f"{m}: eager PyTorch dispatch per forward pass",
        "per_layer_overhead_ms": f"{m}: ~10 kernel launches per block at ~10 us incl. Python",
        "dispatch_ms": f"{m}: one cudaStreamSynchronize per segment hand-off, ~10-20 us",
        "thermal_share": f"{m}: a discrete GPU exhausts through its own cooler; little of its heat reaches the "
                         "CPU package the host's thermal node stands for",
        "trip_offset_c": f"{m}: the GPU's own slowdown point is not the host's; no offset without a measurement",
    })
    gpu["notes"] = notes
    link = _PCIE_X16_GBS[gen]
    ic = {"bytes_per_s": link * _PCIE_EFFICIENCY * 1e9, "latency_us": 10.0, "energy_pj_per_byte": 150.0, "notes": {
        "bytes_per_s": f"{m}: PCIe Gen{gen} x16, {link:g} GB/s per direction (GT/s x 16 x 128b/130b / 8), "
                       f"{_PCIE_EFFICIENCY:.0%} of it for DMA copies",
        "latency_us": f"{m}: cudaMemcpy of a small buffer over PCIe, ~10 us",
        "energy_pj_per_byte": f"{m}: host DRAM read + PCIe link (~5-10 pJ/bit) + device memory write, ~150 pJ/B"}}
    return gpu, ic


# ---- CLI -----------------------------------------------------------------------------------------

def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:g}"
    if isinstance(v, tuple):
        return "/".join(str(b) for b in v)
    return str(v)


def format_table(hw: Hardware) -> str:
    """The description as a Markdown table (one row per processor), its interconnect and what is modelled."""
    cols = [("role", "role"), ("processor", "name"), ("W bits", "weight_bits"), ("A bits", "activation_bits"),
            ("cores", "cores"), ("fp32 GFLOPS", "peak_fp32_gflops"), ("fp16 GFLOPS", "peak_fp16_gflops"),
            ("int8 GOPS", "peak_int8_gops"), ("int4 GOPS", "peak_int4_gops"), ("GB/s", "mem_bandwidth_gbs"),
            ("mem MB", "memory_mb"), ("active W", "active_power_w"), ("idle W", "idle_power_w"),
            ("eff", "efficiency"), ("dispatch ms", "dispatch_ms"), ("thermal share", "thermal_share"),
            ("trip offset °C", "trip_offset_c")]
    lines = [f"{hw.name} (device kind {hw.device_kind}): {hw.description}", "",
             "| " + " | ".join(h for h, _ in cols) + " |", "|" + "---|" * len(cols)]
    for p in hw.processors.values():
        lines.append("| " + " | ".join(_fmt(getattr(p, k)) for _, k in cols) + " |")
    ic = hw.interconnect
    mf = modelled_fields(hw)
    lines += ["", f"interconnect: {ic.bytes_per_s / 1e9:g} GB/s, {ic.latency_us:g} us per transfer, "
                  f"{ic.energy_pj_per_byte:g} pJ/B",
              f"modelled: {hw.modelled} ({len(mf)} figures: {', '.join(mf) if mf else 'none'})", "", "sources:"]
    lines += [f"- {s}" for s in hw.sources]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m runtime.hardware [NAME|PATH|--host] [--json]``; no argument lists the shipped files."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m runtime.hardware",
                                 description="Print a device's processors (runtime/hardware/*.json or this host).")
    ap.add_argument("name", nargs="?", help=f"a shipped name ({', '.join(list_hardware())}) or a JSON path")
    ap.add_argument("--host", action="store_true", help="describe this machine (host_hardware())")
    ap.add_argument("--json", action="store_true", help="print the description as JSON")
    args = ap.parse_args(argv)
    if args.host and args.name:
        ap.error("give a NAME or --host, not both")
    if not args.host and not args.name:
        for n in list_hardware():
            hw = load_hardware(n)
            print(f"{n:24s} {hw.device_kind:11s} {'/'.join(hw.roles):16s} modelled={hw.modelled}")
        kinds = ", ".join(f"{k} -> {v}" for k, v in HARDWARE_FOR_KIND.items())
        print(f"device kinds: {kinds}; host -> --host")
        return 0
    try:
        hw = host_hardware() if args.host else load_hardware(args.name)
    except HardwareError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(hw.to_dict(), indent=2, ensure_ascii=False) if args.json else format_table(hw))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
