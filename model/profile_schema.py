"""The cost-profile file: versioned schema, validation, loading, saving, and numpy views.

A profile (``profiles/<name>.json``) is the single source of measured (or modelled) costs the
environment reads: one record per elastic configuration (depth × heads × bits) with latency,
memory, energy and quality, plus the machine, device and method it was measured with. Every
numeric field carries its unit in its name (``_ms``, ``_s``, ``_j``, ``_w``, ``_bytes``,
``_per_s``, ``_per_token``).

This module uses numpy and the standard library only (no torch), so the environment and the
on-device runtime can read profiles cheaply.

Example:
    >>> prof = load_profile("profiles/cpu.json")
    >>> lat_ms = prof.array("decode_ms_per_token_median")   # one entry per config, in order
    >>> prof.config("L4-H100-int8")["energy_j_per_token"]   # canonical names (runtime.configspace)
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from runtime.configspace import KNOBS

__all__ = [
    "CONFIG_FLOAT_FIELDS",
    "CONFIG_INT_FIELDS",
    "COVERAGE_KS",
    "DEVICE_KINDS",
    "FINGERPRINT_BENCH_TOLERANCE",
    "RECORD_SOURCES",
    "ENERGY_SOURCES",
    "SCHEMA",
    "SCHEMA_VERSION",
    "VALID_BITS",
    "Profile",
    "ProfileError",
    "compare_fingerprints",
    "config_arrays",
    "example_profile",
    "load_profile",
    "machine_info",
    "save_profile",
    "utc_now_iso",
    "validate_profile",
]

SCHEMA = "wattwise.profile"
SCHEMA_VERSION = 1

#: Where an energy figure came from. "modelled" covers both the CPU energy model of
#: ``model.energy_model.ModelledCpuEnergy`` and roofline projections onto other devices.
ENERGY_SOURCES: tuple[str, ...] = ("rapl", "nvml", "power_supply", "modelled")
DEVICE_KINDS: tuple[str, ...] = ("cpu", "cuda", "projected")
#: Weight precisions of the elastic model (16 is accepted for fp16/bf16 builds).
VALID_BITS: tuple[int, ...] = (4, 8, 16, 32)
#: The sample counts k of coverage@k (pass@k) the profiler reports.
COVERAGE_KS: tuple[int, ...] = (1, 2, 4, 8)
#: Unit suffixes accepted for ``switch_costs`` keys (units in names).
SWITCH_COST_UNITS: tuple[str, ...] = ("_ms", "_us", "_s", "_j", "_bytes")

_PROFILE_HINT = "re-run python -m model.profile"
_QUALITY_HINT = "re-run python -m model.profile (it merges model.evaluate's quality figures)"

#: Config fields that must be integers, with their lower bound (inclusive).
CONFIG_INT_FIELDS: dict[str, int] = {
    "depth": 1,
    "active_params": 1,
    "resident_bytes": 1,
    "peak_rss_bytes": 1,
}
#: Config fields that must be finite floats: (lower bound, lower bound is exclusive, upper bound).
CONFIG_FLOAT_FIELDS: dict[str, tuple[float, bool, float]] = {
    "heads": (0.0, True, 1.0),
    "prefill_ms_per_token_median": (0.0, True, math.inf),
    "prefill_ms_per_token_p90": (0.0, True, math.inf),
    "decode_ms_per_token_median": (0.0, True, math.inf),
    "decode_ms_per_token_p90": (0.0, True, math.inf),
    "decode_tokens_per_s": (0.0, True, math.inf),
    "energy_j_per_token": (0.0, True, math.inf),
    "power_w": (0.0, True, math.inf),
    "val_loss": (0.0, False, math.inf),
    "bits_per_byte": (0.0, False, math.inf),
    "mc_accuracy": (0.0, False, 1.0),
}
_QUALITY_FIELDS = frozenset({"val_loss", "bits_per_byte", "mc_accuracy", "coverage_at_k"})
#: All required per-config fields, in the order they are checked (and documented).
CONFIG_REQUIRED: tuple[str, ...] = (
    "name",
    "depth",
    "heads",
    "bits",
    "device",
    "active_params",
    "resident_bytes",
    "prefill_ms_per_token_median",
    "prefill_ms_per_token_p90",
    "decode_ms_per_token_median",
    "decode_ms_per_token_p90",
    "decode_tokens_per_s",
    "peak_rss_bytes",
    "energy_j_per_token",
    "power_w",
    "energy_source",
    "val_loss",
    "bits_per_byte",
    "mc_accuracy",
)
#: Where a record's latency came from (optional per-record ``source``; calibrated profiles set it).
RECORD_SOURCES: tuple[str, ...] = ("measured", "predicted")
#: A host whose ``bench_score_us`` differs from the profile's by more than this fraction is "another
#: host" for the fingerprint check. On one idle 2-core VM, repeated runs of the micro-benchmark ranged
#: over 18.7-31.8 µs on 2026-12-01 (the VM's speed wobbles): ±25 % gave false alarms, ±40 % does not,
#: and still catches a host 2× slower or faster.
FINGERPRINT_BENCH_TOLERANCE = 0.40
_FINGERPRINT_STR = ("cpu_model", "torch_version")
_FINGERPRINT_INT = ("cores_logical", "threads")
_MACHINE_STR = ("cpu_model", "torch_version", "numpy_version", "python_version", "platform")
_MACHINE_INT = ("cores_logical", "threads")
_METHOD_INT = {"repeats": 1, "warmup": 0, "prefill_tokens": 1, "decode_tokens": 1}


class ProfileError(ValueError):
    """A profile file is malformed or does not match what the caller expects.

    The message has one line per problem, each ``<file>: <field path> <problem>; <what to do>``.

    Attributes:
        source: The file (or label) that was validated.
        problems: ``(field_path, message)`` pairs, in the order found.
    """

    def __init__(self, source: str, problems: Sequence[tuple[str, str]]) -> None:
        self.source = source
        self.problems = list(problems)
        lines = [f"{source}: {p} {m}" if p else f"{source}: {m}" for p, m in self.problems]
        super().__init__("\n".join(lines))

    @property
    def field_paths(self) -> list[str]:
        """The offending field paths (e.g. ``configs[12].decode_ms_per_token_median``)."""
        return [p for p, _ in self.problems]


class _Checker:
    """Collects validation problems so one run reports all of them."""

    def __init__(self) -> None:
        self.problems: list[tuple[str, str]] = []

    def add(self, path: str, msg: str) -> None:
        self.problems.append((path, msg))

    def missing(self, path: str, hint: str = _PROFILE_HINT) -> None:
        self.add(path, f"is missing; {hint}")

    def require(self, obj: Mapping[str, Any], key: str, path: str, hint: str = _PROFILE_HINT) -> bool:
        if key not in obj or obj[key] is None:
            self.missing(path, hint)
            return False
        return True

    def string(self, obj: Mapping[str, Any], key: str, path: str, *, nonempty: bool = True) -> None:
        if not self.require(obj, key, path):
            return
        v = obj[key]
        if not isinstance(v, str):
            self.add(path, f"must be a string, got {type(v).__name__} {v!r}")
        elif nonempty and not v.strip():
            self.add(path, "must be a non-empty string")

    def integer(
        self, obj: Mapping[str, Any], key: str, path: str, lo: int, hint: str = _PROFILE_HINT
    ) -> None:
        if not self.require(obj, key, path, hint):
            return
        v = obj[key]
        # bool is an int subclass; True is not a layer count.
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            self.add(path, f"must be an integer, got {type(v).__name__} {v!r}")
        elif v < lo:
            self.add(path, f"must be >= {lo}, got {v}")

    def number(
        self,
        obj: Mapping[str, Any],
        key: str,
        path: str,
        lo: float = -math.inf,
        lo_open: bool = False,
        hi: float = math.inf,
        hint: str = _PROFILE_HINT,
    ) -> bool:
        if not self.require(obj, key, path, hint):
            return False
        v = obj[key]
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            self.add(path, f"must be a number, got {type(v).__name__} {v!r}")
            return False
        if not math.isfinite(float(v)):
            self.add(path, f"must be finite, got {v!r}")
            return False
        if (lo_open and v <= lo) or (not lo_open and v < lo) or v > hi:
            lo_br = "(" if lo_open else "["
            hi_txt = "inf)" if math.isinf(hi) else f"{hi:g}]"
            self.add(path, f"must be in {lo_br}{lo:g}, {hi_txt}, got {v!r}")
            return False
        return True

    def mapping(self, obj: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any] | None:
        if not self.require(obj, key, path):
            return None
        v = obj[key]
        if not isinstance(v, Mapping):
            self.add(path, f"must be an object, got {type(v).__name__}")
            return None
        return v

    def choice(self, obj: Mapping[str, Any], key: str, path: str, options: Iterable[Any]) -> None:
        if not self.require(obj, key, path):
            return
        opts = tuple(options)
        v = obj[key]
        if isinstance(v, bool) or v not in opts:
            self.add(path, f"must be one of {list(opts)}, got {v!r}")


def _check_created(c: _Checker, data: Mapping[str, Any]) -> None:
    c.string(data, "created_utc", "created_utc")
    v = data.get("created_utc")
    if isinstance(v, str) and v.strip():
        try:
            _dt.datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError:
            c.add("created_utc", f"must be an ISO 8601 timestamp, got {v!r}")


def _check_machine(c: _Checker, data: Mapping[str, Any]) -> None:
    m = c.mapping(data, "machine", "machine")
    if m is None:
        return
    for key in _MACHINE_STR:
        c.string(m, key, f"machine.{key}")
    for key in _MACHINE_INT:
        c.integer(m, key, f"machine.{key}", 1)
    # psutil returns None for physical cores on some platforms, so null is allowed.
    if "cores_physical" not in m:
        c.missing("machine.cores_physical")
    elif m["cores_physical"] is not None:
        c.integer(m, "cores_physical", "machine.cores_physical", 1)
    if m.get("fingerprint") is not None:  # optional: profiles written before issue 15 have none
        fp = c.mapping(m, "fingerprint", "machine.fingerprint")
        if fp is not None:
            for key in _FINGERPRINT_STR:
                c.string(fp, key, f"machine.fingerprint.{key}")
            for key in _FINGERPRINT_INT:
                c.integer(fp, key, f"machine.fingerprint.{key}", 1)
            c.number(fp, "bench_score_us", "machine.fingerprint.bench_score_us", lo=0.0, lo_open=True)


def _check_calibration(c: _Checker, data: Mapping[str, Any]) -> None:
    """The optional ``calibration`` block of a calibrated profile and the per-record ``source``."""
    cal = data.get("calibration")
    configs = data.get("configs") or []
    sources = [cfg.get("source") for cfg in configs if isinstance(cfg, Mapping)]
    if cal is None:
        if any(s == "predicted" for s in sources):
            c.add("calibration", "is required when a record's source is 'predicted' (python -m model.profile "
                  "--calibrate writes it)")
        return
    if not isinstance(cal, Mapping):
        c.add("calibration", f"must be an object, got {type(cal).__name__}")
        return
    base = c.mapping(cal, "base_profile", "calibration.base_profile")
    if base is not None:
        c.string(base, "name", "calibration.base_profile.name")
        c.string(base, "sha256", "calibration.base_profile.sha256")
    c.number(cal, "budget_s", "calibration.budget_s", lo=0.0, lo_open=True)
    c.number(cal, "seconds_used", "calibration.seconds_used", lo=0.0)
    names = {cfg.get("name"): cfg.get("source") for cfg in configs if isinstance(cfg, Mapping)}
    for key, want in (("measured", "measured"), ("predicted", "predicted")):
        lst = cal.get(key)
        if not isinstance(lst, list) or not all(isinstance(n, str) for n in lst):
            c.add(f"calibration.{key}", "must be a list of configuration names")
            continue
        for n in lst:
            if names.get(n) != want:
                c.add(f"calibration.{key}", f"names {n!r} but that record's source is {names.get(n)!r}")
    meas, pred = cal.get("measured"), cal.get("predicted")
    if isinstance(meas, list) and isinstance(pred, list) and sorted(meas + pred) != sorted(names):
        c.add("calibration", "measured + predicted must partition the configurations (each name exactly once)")


def _check_device(c: _Checker, data: Mapping[str, Any]) -> str | None:
    d = c.mapping(data, "device", "device")
    if d is None:
        return None
    c.choice(d, "kind", "device.kind", DEVICE_KINDS)
    c.string(d, "name", "device.name")
    if "spec" not in d:
        c.missing("device.spec")
    elif d["spec"] is not None and not isinstance(d["spec"], str):
        c.add("device.spec", f"must be a device spec name or null, got {d['spec']!r}")
    kind = d.get("kind")
    if kind == "projected" and not d.get("spec"):
        c.add("device.spec", "is required when device.kind is 'projected' (name the device spec)")
    return kind if isinstance(kind, str) else None


def _check_model(c: _Checker, data: Mapping[str, Any]) -> None:
    m = c.mapping(data, "model", "model")
    if m is None:
        return
    c.string(m, "checkpoint_sha256", "model.checkpoint_sha256")
    c.integer(m, "n_params", "model.n_params", 1)
    c.mapping(m, "arch", "model.arch")


def _check_method(c: _Checker, data: Mapping[str, Any]) -> None:
    m = c.mapping(data, "method", "method")
    if m is None:
        return
    for key, lo in _METHOD_INT.items():
        c.integer(m, key, f"method.{key}", lo)


def _check_switch_costs(c: _Checker, data: Mapping[str, Any]) -> None:
    sc = c.mapping(data, "switch_costs", "switch_costs")
    if sc is None:
        return
    for key in sc:
        path = f"switch_costs.{key}"
        if not isinstance(key, str) or not key.endswith(SWITCH_COST_UNITS):
            c.add(path, f"must end with a unit suffix {list(SWITCH_COST_UNITS)} (units in names)")
            continue
        c.number(sc, key, path, lo=0.0)


def _check_coverage(c: _Checker, cfg: Mapping[str, Any], path: str) -> None:
    cov = cfg.get("coverage_at_k")
    if cov is None:
        return  # optional
    if not isinstance(cov, Mapping) or not cov:
        c.add(path, 'must be an object like {"1": 0.3, "2": 0.4, ...} or null')
        return
    for k in cov:
        kpath = f"{path}[{k!r}]"
        if not (isinstance(k, str) and k.isdigit() and int(k) >= 1):
            c.add(kpath, "key must be a positive integer sample count written as a string")
            continue
        c.number(cov, k, kpath, lo=0.0, hi=1.0, hint=_QUALITY_HINT)


def _check_config(c: _Checker, cfg: Any, i: int) -> None:
    base = f"configs[{i}]"
    if not isinstance(cfg, Mapping):
        c.add(base, f"must be an object, got {type(cfg).__name__}")
        return
    label = base
    c.string(cfg, "name", f"{label}.name")
    for key, lo in CONFIG_INT_FIELDS.items():
        c.integer(cfg, key, f"{label}.{key}", lo)
    for key, (lo, lo_open, hi) in CONFIG_FLOAT_FIELDS.items():
        hint = _QUALITY_HINT if key in _QUALITY_FIELDS else _PROFILE_HINT
        c.number(cfg, key, f"{label}.{key}", lo, lo_open, hi, hint=hint)
    c.choice(cfg, "bits", f"{label}.bits", VALID_BITS)
    c.string(cfg, "device", f"{label}.device")
    c.choice(cfg, "energy_source", f"{label}.energy_source", ENERGY_SOURCES)
    if cfg.get("source") is not None:  # optional: "measured" | "predicted" (calibrated profiles)
        c.choice(cfg, "source", f"{label}.source", RECORD_SOURCES)
    for stage in ("prefill", "decode"):
        med, p90 = cfg.get(f"{stage}_ms_per_token_median"), cfg.get(f"{stage}_ms_per_token_p90")
        if _is_num(med) and _is_num(p90) and p90 < med:
            c.add(
                f"{label}.{stage}_ms_per_token_p90",
                f"({p90!r}) must be >= {stage}_ms_per_token_median ({med!r}); {_PROFILE_HINT}",
            )
    _check_coverage(c, cfg, f"{label}.coverage_at_k")
    _check_split(c, cfg, label)
    _check_place(c, cfg, label)


#: Optional per-record fields of a split configuration (docs/split.md): the record's latency and energy
#: fields are then the device's share, these the rest.
SPLIT_FIELDS: tuple[str, ...] = ("split", "wire", "up_bytes_per_token", "server_ms_per_token", "device_bytes")
_SPLIT_HINT = "re-run python -m model.split_profile"


def _check_split(c: _Checker, cfg: Mapping[str, Any], label: str) -> None:
    if "split" not in cfg and "wire" not in cfg:
        return
    from runtime.configspace import KNOBS, SPLIT_LOCAL

    c.integer(cfg, "split", f"{label}.split", SPLIT_LOCAL)
    c.choice(cfg, "wire", f"{label}.wire", KNOBS["wire"].values)
    if cfg.get("split") != SPLIT_LOCAL:
        for key in ("up_bytes_per_token", "server_ms_per_token"):
            c.number(cfg, key, f"{label}.{key}", 0.0, False, math.inf, hint=_SPLIT_HINT)
    if "device_bytes" in cfg:
        c.number(cfg, "device_bytes", f"{label}.device_bytes", 0.0, False, math.inf, hint=_SPLIT_HINT)


#: Optional per-record fields of a placement configuration (docs/placement.md): the record's latency and
#: energy are the whole device's; ``segments`` says how they divide among processors.
PLACE_FIELDS: tuple[str, ...] = ("place", "segments", "xfer_ms_per_token", "xfer_j_per_token")
_PLACE_HINT = "re-run python -m model.placement_profile"


def _check_place(c: _Checker, cfg: Mapping[str, Any], label: str) -> None:
    if "place" not in cfg:
        if "segments" in cfg:
            c.add(f"{label}.segments", f"needs a 'place' field; {_PLACE_HINT}")
        return
    from runtime.placement import PlacementError, segments

    try:
        segs = segments(cfg["place"], int(cfg.get("depth", 0)))
    except (PlacementError, TypeError, ValueError) as exc:
        c.add(f"{label}.place", f"{exc}")
        return
    if cfg["place"] == "cpu" and "segments" not in cfg:
        return  # the default placement of a record made before placement existed
    got = cfg.get("segments")
    if not isinstance(got, list) or len(got) != len(segs):
        c.add(f"{label}.segments", f"must be a list of {len(segs)} segment objects for place {cfg['place']!r}; "
              f"{_PLACE_HINT}")
        return
    for j, (seg, want) in enumerate(zip(got, segs)):
        path = f"{label}.segments[{j}]"
        if not isinstance(seg, Mapping):
            c.add(path, "must be an object {role, blocks, decode_ms, energy_j}")
            continue
        if seg.get("role") != want.role or seg.get("blocks") != want.n_blocks:
            c.add(path, f"is {seg.get('role')!r} × {seg.get('blocks')!r} blocks but place {cfg['place']!r} at depth "
                  f"{cfg.get('depth')} means {want.role!r} × {want.n_blocks}; {_PLACE_HINT}")
        for key in ("decode_ms", "energy_j"):
            c.number(seg, key, f"{path}.{key}", 0.0, False, math.inf, hint=_PLACE_HINT)
    for key in ("xfer_ms_per_token", "xfer_j_per_token"):
        if key in cfg:
            c.number(cfg, key, f"{label}.{key}", 0.0, False, math.inf, hint=_PLACE_HINT)


def _is_num(v: Any) -> bool:
    return (
        not isinstance(v, bool)
        and isinstance(v, (int, float, np.integer, np.floating))
        and math.isfinite(float(v))
    )


def validate_profile(data: Any, source: str = "<profile>") -> None:
    """Validates a profile dict against :data:`SCHEMA` version :data:`SCHEMA_VERSION`.

    Args:
        data: The decoded JSON object.
        source: File name (or label) used as the prefix of every error line.

    Raises:
        ProfileError: One line per problem, each naming the field path.
    """
    c = _Checker()
    if not isinstance(data, Mapping):
        got = type(data).__name__
        raise ProfileError(source, [("", f"top level must be a JSON object, got {got}")])
    schema = data.get("schema")
    if schema != SCHEMA:
        c.add("schema", f"must be {SCHEMA!r}, got {schema!r}; this is not a wattwise profile")
        raise ProfileError(source, c.problems)
    version = data.get("schema_version")
    if isinstance(version, bool) or not isinstance(version, int):
        c.add("schema_version", f"must be an integer, got {version!r}")
        raise ProfileError(source, c.problems)
    if version != SCHEMA_VERSION:
        newer = version > SCHEMA_VERSION
        c.add(
            "schema_version",
            f"is {version} but this code reads version {SCHEMA_VERSION}; "
            + ("update wattwise" if newer else "re-run python -m model.profile to regenerate"),
        )
        raise ProfileError(source, c.problems)

    c.string(data, "name", "name")
    _check_created(c, data)
    _check_machine(c, data)
    device_kind = _check_device(c, data)
    _check_model(c, data)
    c.choice(data, "energy_source", "energy_source", ENERGY_SOURCES)
    if data.get("energy_source") == "modelled":
        ea = data.get("energy_assumptions")
        if not isinstance(ea, Mapping) or not ea:
            c.add(
                "energy_assumptions",
                "is required (a non-empty object) when energy_source is 'modelled': record the "
                "model and its constants, e.g. ModelledCpuEnergy().assumptions()",
            )
    elif "energy_assumptions" in data and data["energy_assumptions"] is not None:
        if not isinstance(data["energy_assumptions"], Mapping):
            c.add("energy_assumptions", "must be an object or null")
    if device_kind == "projected" and data.get("energy_source") != "modelled":
        c.add("energy_source", "must be 'modelled' for a projected device profile")
    c.number(data, "idle_power_w", "idle_power_w", lo=0.0)
    _check_method(c, data)
    _check_switch_costs(c, data)

    configs = data.get("configs")
    if configs is None:
        c.missing("configs")
    elif not isinstance(configs, list):
        c.add("configs", f"must be a list, got {type(configs).__name__}")
    elif not configs:
        c.add("configs", f"must contain at least one configuration; {_PROFILE_HINT}")
    else:
        seen: dict[str, int] = {}
        for i, cfg in enumerate(configs):
            _check_config(c, cfg, i)
            name = cfg.get("name") if isinstance(cfg, Mapping) else None
            if isinstance(name, str):
                if name in seen:
                    c.add(f"configs[{i}].name", f"{name!r} duplicates configs[{seen[name]}].name")
                else:
                    seen[name] = i
    if not c.problems:
        _check_calibration(c, data)
    if not c.problems:
        _check_depths(c, data)
        _check_space(c, data)
    if c.problems:
        raise ProfileError(source, c.problems)


def _check_depths(c: _Checker, data: Mapping[str, Any]) -> None:
    """No configuration runs more layers than the model has, when the profile records the model's
    layer count (``model.arch.n_layer``, as ``model.profile`` writes it, or ``model.arch.n_layers``)."""
    model = data.get("model")
    arch = model.get("arch") if isinstance(model, Mapping) else None
    if not isinstance(arch, Mapping):
        return
    for key in ("n_layer", "n_layers"):
        n = arch.get(key)
        if isinstance(n, bool) or not isinstance(n, int):
            continue
        if n < 1:
            c.add(f"model.arch.{key}", f"must be an integer >= 1, got {n!r}")
            return
        for i, cfg in enumerate(data["configs"]):
            d = cfg.get("depth")
            if isinstance(d, int) and not isinstance(d, bool) and d > n:
                c.add(f"configs[{i}].depth", f"configuration {cfg.get('name')!r} runs {d} layers but the model has "
                      f"model.arch.{key} = {n}; the record is not a configuration of this model, {_PROFILE_HINT}")
        return


def _check_space(c: _Checker, data: Mapping[str, Any]) -> None:
    """Every record is a configuration of the space (``runtime.configspace``) under its canonical name."""
    from runtime.configspace import ConfigSpaceError, space_from_records

    cs = data.get("config_space")
    if cs is not None and not isinstance(cs, Mapping):
        c.add("config_space", "must be an object {'knobs': [{'name', 'values'}]} or absent")
        return
    try:
        space_from_records(data["configs"], cs)
    except ConfigSpaceError as exc:
        msg = str(exc)
        path, _, rest = msg.partition(" ")
        if path.startswith("configs["):
            c.add(path.rstrip(":"), rest)
        else:
            c.add("config_space" if cs is not None else "configs", msg)


@dataclass
class Profile:
    """A validated profile.

    Attributes:
        data: The profile as a JSON-ready dict (treat as read-only).
        path: The file it was loaded from, if any.
    """

    data: dict[str, Any]
    path: Path | None = None
    _index: dict[str, int] = field(default_factory=dict, repr=False)
    _space: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._index = {c["name"]: i for i, c in enumerate(self.data["configs"])}
        self._space = None

    @property
    def space(self):
        """The configuration space of the records (``runtime.configspace.space_from_records``):
        the declared ``config_space`` if the file has one, else the knobs the records carry."""
        if self._space is None:
            from runtime.configspace import space_from_records

            self._space = space_from_records(self.configs, self.data.get("config_space"))
        return self._space

    @property
    def configs(self) -> list[dict[str, Any]]:
        """The per-configuration records, in file order."""
        return self.data["configs"]

    @property
    def names(self) -> list[str]:
        """Configuration names, in file order."""
        return [c["name"] for c in self.configs]

    @property
    def energy_source(self) -> str:
        """The profile-level energy source ("rapl", "nvml", "power_supply" or "modelled")."""
        return self.data["energy_source"]

    def __len__(self) -> int:
        return len(self.configs)

    def config(self, name: str) -> dict[str, Any]:
        """Returns the record of configuration ``name``.

        Raises:
            KeyError: No such configuration (the message lists the known names).
        """
        try:
            return self.configs[self._index[name]]
        except KeyError:
            raise KeyError(
                f"no config {name!r} in profile {self.data['name']!r}; known: {self.names}"
            ) from None

    def array(self, field_name: str, dtype: Any = np.float64) -> np.ndarray:
        """Returns one field across configs as a 1-D array (config order).

        ``coverage_at_k`` gives a 2-D ``(n_configs, len(COVERAGE_KS))`` array with NaN where a
        config lacks a k. Missing optional fields become NaN (float dtypes only).
        """
        return config_arrays(self.configs, [field_name], dtype=dtype)[field_name]

    def arrays(self, fields: Iterable[str] | None = None, dtype: Any = np.float64) -> dict[str, np.ndarray]:
        """Returns several fields as arrays (default: every numeric config field)."""
        return config_arrays(self.configs, fields, dtype=dtype)


def config_arrays(
    profile: Profile | Mapping[str, Any] | Sequence[Mapping[str, Any]],
    fields: Iterable[str] | None = None,
    dtype: Any = np.float64,
) -> dict[str, np.ndarray]:
    """Returns per-field numpy arrays in config order (for environments to precompute).

    Args:
        profile: A :class:`Profile`, a profile dict, or its ``configs`` list.
        fields: Config field names; default: ``bits`` plus every integer and float field.
        dtype: Array dtype for scalar fields.

    Returns:
        ``{field: array}``; ``coverage_at_k`` is ``(n_configs, len(COVERAGE_KS))`` with NaN gaps.

    Raises:
        KeyError: A requested field is absent from a config and the dtype cannot hold NaN.
    """
    if isinstance(profile, Profile):
        configs: Sequence[Mapping[str, Any]] = profile.configs
    elif isinstance(profile, Mapping):
        configs = profile["configs"]
    else:
        configs = profile
    if fields is None:
        fields = ["bits", *CONFIG_INT_FIELDS, *CONFIG_FLOAT_FIELDS]
    out: dict[str, np.ndarray] = {}
    is_float = np.issubdtype(np.dtype(dtype), np.floating)
    for f in fields:
        if f == "coverage_at_k":
            arr = np.full((len(configs), len(COVERAGE_KS)), np.nan)
            for i, cfg in enumerate(configs):
                cov = cfg.get("coverage_at_k") or {}
                for j, k in enumerate(COVERAGE_KS):
                    if str(k) in cov:
                        arr[i, j] = float(cov[str(k)])
            out[f] = arr
            continue
        vals = []
        for i, cfg in enumerate(configs):
            v = cfg.get(f)
            if v is None:
                if not is_float:
                    raise KeyError(f"configs[{i}].{f} is missing and dtype {dtype} cannot hold NaN")
                v = np.nan
            vals.append(v)
        out[f] = np.asarray(vals, dtype=dtype)
    return out


def load_profile(
    path: str | os.PathLike[str],
    *,
    expect_checkpoint_sha256: str | None = None,
    expect_config_names: Iterable[str] | None = None,
) -> Profile:
    """Loads and validates a profile file.

    Args:
        path: The JSON file.
        expect_checkpoint_sha256: If given, the profile must have been measured on this checkpoint.
        expect_config_names: If given, the profile must contain exactly these configurations.

    Returns:
        The validated :class:`Profile`.

    Raises:
        ProfileError: The file is unreadable, not JSON, invalid, or does not match expectations.
    """
    p = Path(path)
    src = str(p)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        why = f"cannot be read ({exc.strerror or exc}); {_PROFILE_HINT}"
        raise ProfileError(src, [("", why)]) from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        why = f"is not valid JSON (line {exc.lineno}: {exc.msg})"
        raise ProfileError(src, [("", why)]) from exc
    validate_profile(data, src)
    problems: list[tuple[str, str]] = []
    if expect_checkpoint_sha256 is not None:
        got = data["model"]["checkpoint_sha256"]
        if got != expect_checkpoint_sha256:
            problems.append(
                (
                    "model.checkpoint_sha256",
                    f"is {got[:12]}... but the loaded checkpoint is "
                    f"{expect_checkpoint_sha256[:12]}...; the profile is stale, {_PROFILE_HINT}",
                )
            )
    if expect_config_names is not None:
        want, have = set(expect_config_names), {c["name"] for c in data["configs"]}
        if want != have:
            missing, extra = sorted(want - have), sorted(have - want)
            why = (
                f"do not match the model's configurations (missing {missing}, extra {extra}); {_PROFILE_HINT}"
            )
            problems.append(("configs", why))
    if problems:
        raise ProfileError(src, problems)
    return Profile(data=data, path=p)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def save_profile(profile: Profile | Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Validates and writes a profile as JSON (atomically: temp file + rename).

    Args:
        profile: A :class:`Profile` or profile dict.
        path: Destination; parent directories are created.

    Returns:
        The written path.

    Raises:
        ProfileError: The profile is invalid (nothing is written).
    """
    data = profile.data if isinstance(profile, Profile) else profile
    p = Path(path)
    validate_profile(data, str(p))
    from runtime.safeio import atomic_write_text

    # allow_nan=False: NaN/inf are not JSON, and validation already rejected them.
    text = json.dumps(data, indent=2, default=_json_default, allow_nan=False)
    atomic_write_text(p, text + "\n")  # a unique temp file in the same folder, then os.replace
    return p


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                # x86 says "model name"; many Arm kernels only say "Hardware" or "Processor".
                if key.strip() in ("model name", "Hardware", "Processor") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine_info(threads: int, torch_version: str) -> dict[str, Any]:
    """Returns the ``machine`` block of a profile for this host.

    Args:
        threads: Intra-op threads the measurement used (e.g. ``torch.get_num_threads()``).
        torch_version: ``torch.__version__`` (passed in so this module never imports torch).
    """
    physical: int | None = None
    try:
        import psutil  # lazy: optional at runtime

        physical = psutil.cpu_count(logical=False)
    except ImportError:
        pass
    return {
        "cpu_model": _cpu_model(),
        "cores_logical": os.cpu_count() or 1,
        "cores_physical": physical,
        "threads": int(threads),
        "torch_version": str(torch_version),
        "numpy_version": np.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
    }


def compare_fingerprints(profile_machine: Mapping[str, Any] | None, current: Mapping[str, Any],
                         tolerance: float = FINGERPRINT_BENCH_TOLERANCE) -> list[str] | None:
    """How this host differs from the host a profile was measured on.

    Args:
        profile_machine: The profile's ``machine`` block (its ``fingerprint`` is compared).
        current: This host's fingerprint (``model.profile.host_fingerprint``).
        tolerance: Allowed relative difference of ``bench_score_us`` (default ±40 %).

    Returns:
        ``None`` when the profile has no fingerprint (nothing to compare), else the list of
        differences (empty: same host as far as the fingerprint can tell).
    """
    fp = (profile_machine or {}).get("fingerprint") if isinstance(profile_machine, Mapping) else None
    if not isinstance(fp, Mapping):
        return None
    diffs = []
    for key in ("cpu_model", "cores_logical", "torch_version", "threads"):
        if fp.get(key) != current.get(key):
            diffs.append(f"{key} {fp.get(key)!r} -> {current.get(key)!r}")
    a, b = fp.get("bench_score_us"), current.get("bench_score_us")
    if _is_num(a) and _is_num(b) and a > 0 and abs(b / a - 1.0) > tolerance:
        diffs.append(f"bench_score_us {a:.1f} -> {b:.1f} ({100 * (b / a - 1):+.0f} %, "
                     f"tolerance ±{100 * tolerance:.0f} %)")
    return diffs


def utc_now_iso() -> str:
    """Returns the current UTC time as an ISO 8601 string with a ``Z`` suffix."""
    now = _dt.datetime.now(_dt.UTC).replace(microsecond=0)
    return now.isoformat().replace("+00:00", "Z")


def example_profile(
    n_configs: int = 6,
    *,
    energy_source: str = "modelled",
    seed: int = 0,
    name: str = "example",
) -> dict[str, Any]:
    """Builds a small valid profile for tests and documentation.

    Configurations cycle through bits (32, 8, 4) and increasing depth, with latency and energy
    rising with active parameters, so the scaling fits are well defined.

    Args:
        n_configs: Number of configurations (>= 1).
        energy_source: Profile and config energy source.
        seed: Seed of the small multiplicative noise on latencies.
        name: Profile name.

    Returns:
        A profile dict that passes :func:`validate_profile`.
    """
    if n_configs < 1:
        raise ValueError("n_configs must be >= 1")
    rng = np.random.default_rng(seed)
    configs = []
    bits_cycle = (32, 8, 4)
    per_layer_params = 400_000
    for i in range(n_configs):
        bits = bits_cycle[i % 3]
        depth = 1 + i // 3
        heads = 1.0 if (i // 3) % 2 == 0 else 0.5
        active = int(per_layer_params * depth * (0.75 + 0.25 * heads) + 200_000)
        resident = int(active * bits / 8)
        decode_ms = 1e-4 * active**0.8 * (1.0 + 0.02 * rng.standard_normal())
        prefill_ms = decode_ms * 0.3
        energy = 5.0 * decode_ms / 1000
        configs.append(
            {
                "name": "-".join(KNOBS[k].fragment(v) for k, v in (("depth", depth), ("heads", heads),
                                                                       ("bits", bits))),
                "depth": depth,
                "heads": heads,
                "bits": bits,
                "device": "cpu",
                "active_params": active,
                "resident_bytes": resident,
                "prefill_ms_per_token_median": prefill_ms,
                "prefill_ms_per_token_p90": prefill_ms * 1.1,
                "decode_ms_per_token_median": decode_ms,
                "decode_ms_per_token_p90": decode_ms * 1.1,
                "decode_tokens_per_s": 1000.0 / decode_ms,
                "peak_rss_bytes": 50_000_000 + resident,
                "energy_j_per_token": energy,
                "power_w": 5.0,
                "energy_source": energy_source,
                "val_loss": 4.0 * active**-0.05,
                "bits_per_byte": 1.5 * active**-0.05,
                "mc_accuracy": min(1.0, 0.25 + 0.02 * depth),
                "coverage_at_k": {str(k): min(1.0, 0.2 * k**0.5) for k in COVERAGE_KS},
            }
        )
    data: dict[str, Any] = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "name": name,
        "created_utc": "2025-01-01T00:00:00Z",
        "machine": {
            "cpu_model": "Example CPU",
            "cores_logical": 2,
            "cores_physical": 1,
            "threads": 2,
            "torch_version": "0.0.0",
            "numpy_version": np.__version__,
            "python_version": platform.python_version(),
            "platform": sys.platform,
        },
        "device": {"kind": "cpu", "name": "Example CPU", "spec": None},
        "model": {
            "checkpoint_sha256": "0" * 64,
            "n_params": max(c["active_params"] for c in configs),
            "arch": {"n_layers": max(c["depth"] for c in configs), "d_model": 128, "n_heads": 4},
        },
        "energy_source": energy_source,
        "energy_assumptions": (
            {"formula": "example: 5 W x decode time"} if energy_source == "modelled" else None
        ),
        "idle_power_w": 1.0,
        "method": {"repeats": 5, "warmup": 2, "prefill_tokens": 64, "decode_tokens": 32},
        "switch_costs": {"depth_ms": 0.01, "heads_ms": 0.01, "bits_ms": 5.0, "reload_ms": 50.0},
        "configs": configs,
    }
    validate_profile(data, f"example_profile({n_configs})")
    return data


