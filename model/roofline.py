"""Device specs and a roofline projection of each configuration onto devices we don't have.

A device spec (``model/devices/<name>.json``) gives peak throughput per precision, memory
bandwidth, active and idle power, an achievable-efficiency factor and dispatch overheads, with a
provenance note per figure and a list of sources. :func:`project` turns one profile config record
into modelled latency and energy on that device; :func:`project_profile` does it for a whole
profile and returns a new profile (``device.kind == "projected"``, ``energy_source ==
"modelled"``) that passes :func:`model.profile_schema.validate_profile`.

The model, per decoded token (batch 1, weights streamed from DRAM once per token)::

    flops  = 2 * active_params + 4 * T * h * d_model * depth          # matmuls + attention
    bytes  = resident_bytes + 2 * T * h * d_model * depth * kv_bytes   # weights + KV cache read
    time_s = max(flops / peak(bits), bytes / bandwidth) / efficiency
             + per_token_overhead + depth * per_layer_overhead
    energy = time_s * active_power_w

where T is the context length and h the active head fraction. Prefill of P tokens shares one
weight read and one dispatch across P tokens. numpy + standard library only.
"""

from __future__ import annotations

import copy
import json
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from model.profile_schema import Profile, utc_now_iso, validate_profile

__all__ = [
    "DEVICES_DIR",
    "DeviceSpec",
    "DeviceSpecError",
    "list_device_specs",
    "load_device_spec",
    "peak_ops_per_s",
    "project",
    "project_profile",
]

DEVICES_DIR = Path(__file__).resolve().parent / "devices"
DEVICE_SPEC_KINDS = ("cpu", "gpu", "npu")
_ARCH_D_MODEL_KEYS = ("d_model", "n_embd", "dim", "hidden_size")


class DeviceSpecError(ValueError):
    """A device spec file is missing, malformed, or lacks a figure the projection needs."""


@dataclass(frozen=True)
class DeviceSpec:
    """A device's published (or approximate) performance and power figures.

    Attributes:
        name: Spec name (the file stem).
        kind: "cpu", "gpu" or "npu".
        peak_fp32_gflops: Peak fp32 throughput, GFLOP/s.
        peak_fp16_gflops: Peak fp16 throughput, GFLOP/s (None: use fp32).
        peak_int8_gops: Peak int8 throughput, GOP/s (None: use fp16, then fp32).
        peak_int4_gops: Peak int4 throughput, GOP/s (None: int4 weights compute at int8).
        mem_bandwidth_gbs: Peak DRAM bandwidth, GB/s (1e9 bytes/s).
        active_power_w: Power while running the model, W.
        idle_power_w: Power while resident but idle, W.
        efficiency: Achievable fraction of peak for batch-1 decode, in (0, 1].
        per_token_overhead_ms: Dispatch overhead per forward pass, ms.
        per_layer_overhead_ms: Extra dispatch overhead per active layer, ms.
        sources: Citations for the figures.
        notes: Per-field provenance ("datasheet", "derived", "assumption", ...).
        description: Free text.
    """

    name: str
    kind: str
    peak_fp32_gflops: float
    peak_fp16_gflops: float | None
    peak_int8_gops: float | None
    peak_int4_gops: float | None
    mem_bandwidth_gbs: float
    active_power_w: float
    idle_power_w: float
    efficiency: float
    per_token_overhead_ms: float
    per_layer_overhead_ms: float = 0.0
    sources: tuple[str, ...] = ()
    notes: Mapping[str, str] = field(default_factory=dict)
    description: str = ""

    def as_dict(self) -> dict[str, Any]:
        """Returns the spec as a JSON-ready dict."""
        d = asdict(self)
        d["sources"] = list(self.sources)
        d["notes"] = dict(self.notes)
        return d


def _num(d: Mapping[str, Any], key: str, src: str, *, optional: bool = False, lo_open: bool = True) -> Any:
    if key not in d:
        if optional:
            return None
        raise DeviceSpecError(f"{src}: {key} is missing; add it (with its source) to the spec")
    v = d[key]
    if v is None:
        if optional:
            return None
        raise DeviceSpecError(f"{src}: {key} must be a number, got null")
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise DeviceSpecError(f"{src}: {key} must be a finite number, got {v!r}")
    if (lo_open and v <= 0) or v < 0:
        raise DeviceSpecError(f"{src}: {key} must be {'> 0' if lo_open else '>= 0'}, got {v!r}")
    return float(v)


def spec_from_dict(d: Mapping[str, Any], src: str = "<spec>") -> DeviceSpec:
    """Validates a spec dict and returns a :class:`DeviceSpec`.

    Raises:
        DeviceSpecError: A field is missing or out of range (the message names it).
    """
    if not isinstance(d, Mapping):
        raise DeviceSpecError(f"{src}: must be a JSON object")
    name = d.get("name")
    if not isinstance(name, str) or not name:
        raise DeviceSpecError(f"{src}: name must be a non-empty string")
    kind = d.get("kind")
    if kind not in DEVICE_SPEC_KINDS:
        raise DeviceSpecError(f"{src}: kind must be one of {list(DEVICE_SPEC_KINDS)}, got {kind!r}")
    sources = d.get("sources")
    if not isinstance(sources, list) or not sources or not all(isinstance(s, str) for s in sources):
        raise DeviceSpecError(f"{src}: sources must be a non-empty list of citation strings")
    eff = _num(d, "efficiency", src)
    if eff > 1.0:
        raise DeviceSpecError(f"{src}: efficiency must be in (0, 1], got {eff}")
    notes = d.get("notes", {})
    if not isinstance(notes, Mapping):
        raise DeviceSpecError(f"{src}: notes must be an object of field -> provenance")
    return DeviceSpec(
        name=name,
        kind=kind,
        peak_fp32_gflops=_num(d, "peak_fp32_gflops", src),
        peak_fp16_gflops=_num(d, "peak_fp16_gflops", src, optional=True),
        peak_int8_gops=_num(d, "peak_int8_gops", src, optional=True),
        peak_int4_gops=_num(d, "peak_int4_gops", src, optional=True),
        mem_bandwidth_gbs=_num(d, "mem_bandwidth_gbs", src),
        active_power_w=_num(d, "active_power_w", src),
        idle_power_w=_num(d, "idle_power_w", src, lo_open=False),
        efficiency=eff,
        per_token_overhead_ms=_num(d, "per_token_overhead_ms", src, lo_open=False),
        per_layer_overhead_ms=_num(d, "per_layer_overhead_ms", src, optional=True, lo_open=False) or 0.0,
        sources=tuple(sources),
        notes=dict(notes),
        description=str(d.get("description", "")),
    )


def list_device_specs(directory: str | os.PathLike[str] = DEVICES_DIR) -> list[str]:
    """Returns the names of the shipped device specs."""
    return sorted(p.stem for p in Path(directory).glob("*.json"))


def load_device_spec(path_or_name: str | os.PathLike[str]) -> DeviceSpec:
    """Loads a device spec from a path, or by name from ``model/devices``.

    Raises:
        DeviceSpecError: Not found (the message lists the shipped names) or malformed.
    """
    p = Path(path_or_name)
    if not p.is_file():
        cand = DEVICES_DIR / f"{os.fspath(path_or_name)}.json"
        if not cand.is_file():
            raise DeviceSpecError(
                f"no device spec {os.fspath(path_or_name)!r}; shipped specs: {list_device_specs()} "
                f"(or pass a path to a JSON spec)"
            )
        p = cand
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DeviceSpecError(f"{p}: not valid JSON (line {exc.lineno}: {exc.msg})") from exc
    return spec_from_dict(d, str(p))


def peak_ops_per_s(spec: DeviceSpec, bits: int) -> tuple[float, str]:
    """Returns ``(peak ops/s, compute path)`` used for a configuration with ``bits`` weights.

    4-bit weights compute at the int4 rate where the spec has one, else at int8 (weights are
    unpacked); int8 falls back to fp16 then fp32; 16-bit uses fp16 (else fp32).

    Raises:
        DeviceSpecError: ``bits`` is not 4, 8, 16 or 32.
    """
    chain: dict[int, tuple[tuple[str, float | None], ...]] = {
        4: (("int4", spec.peak_int4_gops), ("int8", spec.peak_int8_gops), ("fp16", spec.peak_fp16_gflops)),
        8: (("int8", spec.peak_int8_gops), ("fp16", spec.peak_fp16_gflops)),
        16: (("fp16", spec.peak_fp16_gflops),),
        32: (),
    }
    if bits not in chain:
        raise DeviceSpecError(f"bits must be 4, 8, 16 or 32, got {bits!r}")
    for path, peak in chain[bits]:
        if peak is not None:
            return peak * 1e9, path
    return spec.peak_fp32_gflops * 1e9, "fp32"


def _d_model_from_arch(arch: Mapping[str, Any] | None) -> int | None:
    for key in _ARCH_D_MODEL_KEYS:
        v = (arch or {}).get(key)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v
    return None


def project(
    config: Mapping[str, Any],
    spec: DeviceSpec,
    *,
    context_tokens: int = 0,
    prefill_tokens: int = 1,
    d_model: int | None = None,
    kv_bytes_per_elem: float = 2.0,
) -> dict[str, Any]:
    """Projects one configuration record onto a device with a roofline model.

    Args:
        config: A profile config record (needs ``active_params``, ``resident_bytes``, ``bits``,
            ``depth``, ``heads``).
        spec: The target device.
        context_tokens: Context length T seen by each decoded token (attention + KV reads).
        prefill_tokens: Prompt length P processed in one prefill pass (>= 1).
        d_model: Model width; without it the attention / KV terms are omitted (noted).
        kv_bytes_per_elem: Bytes per KV-cache element (2 for fp16 caches).

    Returns:
        ``decode_ms_per_token``, ``prefill_ms_per_token``, ``energy_j_per_token`` (decode),
        ``prefill_energy_j_per_token``, ``power_w``, ``bound`` / ``prefill_bound`` ("compute" or
        "memory"), ``flops_per_token``, ``bytes_per_token``, ``compute_path``,
        ``energy_source`` ("modelled") and ``assumptions``.

    Raises:
        DeviceSpecError: Unsupported bits.
        ValueError: Non-positive sizes or negative context.
    """
    active = float(config["active_params"])
    resident = float(config["resident_bytes"])
    depth = int(config["depth"])
    heads = float(config["heads"])
    bits = int(config["bits"])
    if active <= 0 or resident <= 0 or depth < 1:
        raise ValueError("active_params, resident_bytes and depth must be positive")
    if context_tokens < 0 or prefill_tokens < 1:
        raise ValueError("context_tokens must be >= 0 and prefill_tokens >= 1")

    peak_ops, compute_path = peak_ops_per_s(spec, bits)
    bw_bytes_s = spec.mem_bandwidth_gbs * 1e9
    overhead_s = (spec.per_token_overhead_ms + depth * spec.per_layer_overhead_ms) * 1e-3
    attn_width = heads * d_model * depth if d_model else 0.0  # active attention width x layers

    # Decode: one token, weights streamed once, attention over T cached positions.
    flops_dec = 2.0 * active + 4.0 * context_tokens * attn_width
    bytes_dec = resident + 2.0 * context_tokens * attn_width * kv_bytes_per_elem
    tc_dec, tm_dec = flops_dec / peak_ops, bytes_dec / bw_bytes_s
    t_dec = max(tc_dec, tm_dec) / spec.efficiency + overhead_s

    # Prefill: P tokens in one pass share the weight read and the dispatch; causal attention
    # over positions 1..P averages (P + 1) / 2 keys per token; each token writes its K and V.
    p = float(prefill_tokens)
    flops_pre = 2.0 * active + 4.0 * ((p + 1.0) / 2.0) * attn_width
    bytes_pre = resident / p + 2.0 * attn_width * kv_bytes_per_elem
    tc_pre, tm_pre = flops_pre / peak_ops, bytes_pre / bw_bytes_s
    t_pre = max(tc_pre, tm_pre) / spec.efficiency + overhead_s / p

    return {
        "decode_ms_per_token": t_dec * 1e3,
        "prefill_ms_per_token": t_pre * 1e3,
        "energy_j_per_token": t_dec * spec.active_power_w,
        "prefill_energy_j_per_token": t_pre * spec.active_power_w,
        "power_w": spec.active_power_w,
        "bound": "compute" if tc_dec > tm_dec else "memory",
        "prefill_bound": "compute" if tc_pre > tm_pre else "memory",
        "flops_per_token": flops_dec,
        "bytes_per_token": bytes_dec,
        "compute_path": compute_path,
        "energy_source": "modelled",
        "assumptions": {
            "device_spec": spec.name,
            "model": "roofline: max(flops/peak, bytes/bandwidth)/efficiency + dispatch overhead",
            "energy": "time x active_power_w (upper bound: assumes full active power while busy)",
            "context_tokens": context_tokens,
            "prefill_tokens": prefill_tokens,
            "d_model": d_model,
            "kv_bytes_per_elem": kv_bytes_per_elem,
            "attention_term": "included" if d_model else "omitted (d_model unknown)",
            "peak_ops_per_s": peak_ops,
            "compute_path": compute_path,
            "mem_bandwidth_bytes_per_s": bw_bytes_s,
            "efficiency": spec.efficiency,
            "overhead_ms_per_pass": overhead_s * 1e3,
        },
    }


def project_profile(
    profile: Profile | Mapping[str, Any],
    spec: DeviceSpec | str | os.PathLike[str],
    *,
    context_tokens: int | None = None,
    kv_bytes_per_elem: float = 2.0,
) -> dict[str, Any]:
    """Projects every configuration of a measured profile onto ``spec``.

    Latency, energy, power and memory are replaced by modelled figures; quality fields are kept
    (they do not depend on the device). p90 equals the median (the model has no noise).

    Args:
        profile: A validated :class:`Profile` or profile dict.
        spec: A :class:`DeviceSpec`, a spec name or a path.
        context_tokens: Decode context length; default ``prefill_tokens + decode_tokens // 2``
            from the profile's ``method`` (the mean context during the measured decode).
        kv_bytes_per_elem: Bytes per KV-cache element on the target (2 for fp16).

    Returns:
        A new profile dict with ``device.kind == "projected"`` that passes validation.
    """
    spec = spec if isinstance(spec, DeviceSpec) else load_device_spec(spec)
    src = profile.data if isinstance(profile, Profile) else profile
    validate_profile(src, f"<source profile {src.get('name')!r}>")
    out = copy.deepcopy(dict(src))
    method = out["method"]
    prefill = int(method["prefill_tokens"])
    ctx = int(context_tokens) if context_tokens is not None else prefill + int(method["decode_tokens"]) // 2
    d_model = _d_model_from_arch(out["model"].get("arch"))

    for cfg in out["configs"]:
        r = project(
            cfg,
            spec,
            context_tokens=ctx,
            prefill_tokens=prefill,
            d_model=d_model,
            kv_bytes_per_elem=kv_bytes_per_elem,
        )
        kv_bytes = (
            2.0
            * (prefill + int(method["decode_tokens"]))
            * cfg["heads"]
            * (d_model or 0)
            * cfg["depth"]
            * kv_bytes_per_elem
        )
        cfg.update(
            {
                "device": spec.name,
                "prefill_ms_per_token_median": r["prefill_ms_per_token"],
                "prefill_ms_per_token_p90": r["prefill_ms_per_token"],
                "decode_ms_per_token_median": r["decode_ms_per_token"],
                "decode_ms_per_token_p90": r["decode_ms_per_token"],
                "decode_tokens_per_s": 1e3 / r["decode_ms_per_token"],
                "peak_rss_bytes": int(math.ceil(cfg["resident_bytes"] + kv_bytes)),
                "energy_j_per_token": r["energy_j_per_token"],
                "prefill_energy_j_per_token": r["prefill_energy_j_per_token"],
                "power_w": r["power_w"],
                "energy_source": "modelled",
                "bound": r["bound"],
                "prefill_bound": r["prefill_bound"],
                "compute_path": r["compute_path"],
            }
        )

    out["name"] = f"{src['name']}@{spec.name}"
    out["created_utc"] = utc_now_iso()
    out["device"] = {"kind": "projected", "name": spec.description or spec.name, "spec": spec.name}
    out["energy_source"] = "modelled"
    out["idle_power_w"] = spec.idle_power_w
    out["energy_assumptions"] = {
        "method": "roofline projection (model/roofline.py); not measured",
        "formula": (
            "time = max(flops/peak(bits), bytes/bandwidth)/efficiency + per_token_overhead "
            "+ depth*per_layer_overhead; energy = time * active_power_w"
        ),
        "flops_per_token": "2*active_params + 4*context*heads*d_model*depth",
        "bytes_per_token": "resident_bytes + 2*context*heads*d_model*depth*kv_bytes_per_elem",
        "context_tokens": ctx,
        "prefill_tokens": prefill,
        "d_model": d_model,
        "kv_bytes_per_elem": kv_bytes_per_elem,
        "peak_rss_bytes": "modelled: resident_bytes + KV cache at prefill+decode tokens; runtime excluded",
        "latency_p90": "equal to the median: the model has no noise",
        "quality": "copied from the source profile (device-independent)",
        "switch_costs": "copied from the source profile (measured there, not projected)",
        "spec": spec.as_dict(),
        "source_profile": {
            "name": src["name"],
            "device": src["device"],
            "energy_source": src["energy_source"],
            "created_utc": src["created_utc"],
        },
    }
    method["projection"] = {"context_tokens": ctx, "kv_bytes_per_elem": kv_bytes_per_elem}
    validate_profile(out, f"<projection of {src['name']!r} onto {spec.name}>")
    return out


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m model.roofline <profile.json> --spec NAME [--out PATH]`` or ``--list``."""
    import argparse

    from model.profile_schema import load_profile, save_profile

    ap = argparse.ArgumentParser(
        prog="python -m model.roofline",
        description="Project a measured profile onto a device spec (roofline, modelled).",
    )
    ap.add_argument("profile", nargs="?", help="measured profile JSON")
    ap.add_argument("--spec", action="append", default=[], help="device spec name or path (repeatable)")
    ap.add_argument("--out-dir", default="profiles", help="where projected profiles are written")
    ap.add_argument("--list", action="store_true", help="list shipped device specs and exit")
    args = ap.parse_args(argv)
    if args.list or not args.profile:
        for name in list_device_specs():
            s = load_device_spec(name)
            print(f"{name:28s} {s.kind:4s} {s.mem_bandwidth_gbs:6.0f} GB/s  {s.active_power_w:5.1f} W")
        return 0 if args.list else 2
    prof = load_profile(args.profile)
    for spec_name in args.spec or list_device_specs():
        spec = load_device_spec(spec_name)
        projected = project_profile(prof, spec)
        path = save_profile(projected, Path(args.out_dir) / f"{Path(args.profile).stem}@{spec.name}.json")
        bounds = {c["bound"] for c in projected["configs"]}
        print(f"wrote {path} ({len(projected['configs'])} configs, bound: {sorted(bounds)}; modelled)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
