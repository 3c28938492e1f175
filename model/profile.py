"""Measure the cost of every configuration: ``python -m model.profile --out profiles/<name>.json``.

Per configuration (after warming every configuration once):

* **prefill**: ms per token of a ``--prefill-tokens`` prompt, median and p90 over ``--repeats``.
* **decode**: ms per token of single-token steps with the KV cache after a 64-byte prompt;
  every step of ``--repeats`` runs × ``--decode-tokens`` steps is one sample (median, p90).
* **tokens/s** = 1000 / decode median; **peak memory** = the process RSS peak while measuring
  (every configuration's packed weights stay resident, so this is nearly constant).
* **energy per token** from the best available meter (``model.energy_model.best_available_meter``:
  RAPL > NVML > power_supply > modelled). On a machine without meters the figure is
  *modelled*: measured CPU time × assumed per-core active power + weight bytes streamed per
  token × Horowitz's DRAM energy; the file says so in ``energy_source`` (top level and every
  record) and lists the assumptions.
* **quality** (val loss, bits/byte, MC accuracy, coverage@k) merged from ``model.evaluate``'s
  JSON for the same checkpoint (the sha256 must match).
* **switch costs**: ``set_config`` time per knob, the KV-cache repair on the next token, and
  reloading the checkpoint — the figures the environment charges for a switch.

A run over the 48 configurations of the committed model takes about 2 minutes here.

**Calibration** (``python -m model.profile --calibrate BASE.json --out my-device.json [--budget-s 60]``):
instead of measuring all configurations, measure a few per precision (the smallest, the largest and the
middle one in log active parameters: the points that pin a power law's level and slope), fit per precision
how this host differs from the base profile, and predict the rest (:func:`calibrate`; docs/profiles.md,
"Calibrating a profile to this host"). Every new profile carries a host fingerprint
(:func:`host_fingerprint`) that ``envs.live`` and ``deploy.py run`` compare with the host they run on.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import torch
from tqdm import tqdm

import model as M
from model.cli import nonneg_float, positive_float, positive_int
from model.energy_model import ModelledCpuEnergy, best_available_meter, probe_meters
from model.evaluate import DEFAULT_OUT as DEFAULT_QUALITY
from model.evaluate import file_sha256
from model.profile_schema import (
    FINGERPRINT_BENCH_TOLERANCE,
    SCHEMA,
    SCHEMA_VERSION,
    compare_fingerprints,
    load_profile,
    machine_info,
    save_profile,
    utc_now_iso,
)
from runtime.safeio import refuse_existing

PROMPT_TOKENS = 64  # context before decode timing starts


def _dev(m) -> torch.device:
    """Where the model runs (its embedding's device)."""
    return m.wte.weight.device


def _sync(m) -> None:
    """Wait for the device (CUDA runs asynchronously: a timer must not stop before the kernels do)."""
    if _dev(m).type == "cuda":
        torch.cuda.synchronize()


def decode_step_ms(m, tokens: int, repeats: int, meter=None) -> tuple[list[float], float]:
    """Per-step decode latencies (ms) and the energy (J) of all timed steps."""
    lat, energy_j = [], 0.0
    prompt = torch.randint(0, 256, (1, PROMPT_TOKENS), device=_dev(m))
    tok = torch.tensor([[32]], device=_dev(m))
    for _ in range(repeats):
        cache = m.new_cache(1, PROMPT_TOKENS + tokens)
        m.forward(prompt, cache)
        if meter is not None:
            with meter.measure() as ms:
                if isinstance(meter, ModelledCpuEnergy):  # weights stream once per token
                    meter.record_work(bytes_moved=float(m.resident_bytes()) * tokens)
                lat.extend(_timed_steps(m, tok, cache, tokens))
            energy_j += ms.energy_j
        else:
            lat.extend(_timed_steps(m, tok, cache, tokens))
    return lat, energy_j


def _timed_steps(m, tok, cache, n: int) -> list[float]:
    out = []
    for _ in range(n):
        _sync(m)
        t0 = time.perf_counter()
        m.forward(tok, cache)
        _sync(m)
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def prefill_ms_per_token(m, n: int, repeats: int) -> list[float]:
    x = torch.randint(0, 256, (1, n), device=_dev(m))
    out = []
    for _ in range(repeats):
        cache = m.new_cache(1, n)
        _sync(m)
        t0 = time.perf_counter()
        m.forward(x, cache)
        _sync(m)
        out.append((time.perf_counter() - t0) * 1e3 / n)
    return out


def _timeit_us(fn, n: int = 2000) -> float:
    for _ in range(50):
        fn()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1e6


def switch_costs(m, context: int = 128) -> dict[str, float]:
    """Cost of switching each knob (full config -> smallest value of that knob).

    ``*_set_config_us``: the ``set_config`` call; ``*_repair_ms``: extra time of the first
    decode step after the switch at a ``context``-token KV cache, over a plain step under the
    new configuration; ``reload_*_ms``: what a switch would cost if it reloaded weights.
    """
    full = m.full_config()
    knobs = {
        "depth": full._replace(depth=min(m.config.depths)),
        "heads": full._replace(heads=min(m.config.head_fractions)),
        "bits_int8": full._replace(bits=8),
        "bits_int4": full._replace(bits=4),
    }
    context = min(context, m.config.block_size - 4)
    out: dict[str, float] = {}
    tok = torch.tensor([[32]], device=_dev(m))
    for knob, b in knobs.items():
        flip, i = [full, b], [0]

        def sw(flip=flip, i=i):
            i[0] ^= 1
            m.set_config(flip[i[0]])

        out[f"{knob}_set_config_us"] = _timeit_us(sw)
        extra = []
        for _ in range(15):
            m.set_config(full)
            cache = m.new_cache(1, m.config.block_size)
            m.forward(torch.randint(0, 256, (1, context), device=_dev(m)), cache)
            m.set_config(b)
            _sync(m)
            t0 = time.perf_counter()
            m.forward(tok, cache)  # repairs the cache, then decodes
            _sync(m)
            switched = time.perf_counter() - t0
            t0 = time.perf_counter()
            m.forward(tok, cache)  # a plain step under b
            _sync(m)
            extra.append((switched - (time.perf_counter() - t0)) * 1e3)
        out[f"{knob}_repair_ms"] = max(0.0, statistics.median(extra))
    m.set_config(full)
    sd = {k: v.clone() for k, v in m.state_dict().items()}
    out["reload_state_dict_from_memory_ms"] = _timeit_us(lambda: m.load_state_dict(sd), 30) / 1e3
    path = getattr(m, "checkpoint_path", None)
    if path:
        out["reload_from_disk_ms"] = _timeit_us(
            lambda: torch.load(path, weights_only=True, map_location="cpu"), 10) / 1e3
    else:  # an unsaved model: time deserialising its checkpoint from bytes instead
        buf = io.BytesIO()
        torch.save(m.checkpoint(), buf)

        def from_bytes():
            buf.seek(0)
            torch.load(buf, weights_only=True)

        out["reload_from_bytes_ms"] = _timeit_us(from_bytes, 10) / 1e3
    out["repack_all_precisions_ms"] = _timeit_us(m.prepare, 3) / 1e3
    return out


def _checkpoint_sha(m) -> str:
    """The sha256 of the bytes the model was loaded from (``model.load`` records it), else of the file."""
    return getattr(m, "checkpoint_sha256", None) or file_sha256(m.checkpoint_path)


def load_quality(path: Path, checkpoint_sha: str, names: list[str]) -> dict[str, dict]:
    if not path.exists():
        raise SystemExit(f"{path}: no quality file; run python -m model.evaluate --out {path}")
    q = json.loads(path.read_text())
    if q.get("checkpoint_sha256") not in (None, checkpoint_sha):
        raise SystemExit(f"{path}: quality was measured on another checkpoint "
                         f"({q.get('checkpoint_sha256', '')[:12]} vs {checkpoint_sha[:12]}); "
                         f"re-run python -m model.evaluate --out {path}")
    by_name = {r["name"]: r for r in q["configs"]}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise SystemExit(f"{path}: no quality record for {missing[:5]}...; re-run python -m model.evaluate")
    return by_name


def device_block(m, threads: int) -> dict:
    """A profile's ``device`` block for where ``m`` runs: the CPU's model name, or the CUDA GPU's name with a
    note on how the int8/int4 weights run there."""
    dev = _dev(m)
    if dev.type == "cpu":
        return {"kind": "cpu", "name": machine_info(threads, "")["cpu_model"], "spec": None}
    return {"kind": "cuda", "name": torch.cuda.get_device_name(dev), "spec": None,
            "int_kernels": "int8/int4 weights stored quantised and dequantised per matmul "
                           "(model.quant.pack generic path); no GPU integer kernel"}


#: Seconds of ``measure_idle_power_w``: NVML's power reading is a ~1 s running average on recent GPUs, so a
#: few seconds settle it; a counter meter integrates the whole window.
IDLE_SECONDS = 3.0


def measure_idle_power_w(meter, seconds: float | None = None, sleep=time.sleep) -> float | None:
    """The mean power (W) the meter reads over ``seconds`` (default :data:`IDLE_SECONDS`) with the model
    resident and nothing running, or ``None`` for the modelled meter (its idle power is an assumption)."""
    if meter is None or meter.energy_source == "modelled":
        return None
    with meter.measure() as ms:
        sleep(IDLE_SECONDS if seconds is None else seconds)
    return float(ms.energy_j / ms.elapsed_s) if ms.elapsed_s > 0 else None


def _idle_fields(meter, fallback_w: float, fallback_basis: str, measured_w: float | None) -> tuple[float, str]:
    """(idle_power_w, its basis) for a profile: the meter's reading when there is one, else the fallback."""
    if measured_w is None:
        return fallback_w, fallback_basis
    return measured_w, (f"measured: mean {meter.energy_source} power over {IDLE_SECONDS:.0f} s with the model "
                        "resident and no work (the device's static power; every energy_j_per_token includes it)")


def profile(m, *, threads: int, repeats: int, decode_tokens: int, prefill_tokens: int,
            quality: dict[str, dict], name: str, idle_power_w: float, progress: bool = True,
            meter=None) -> dict:
    """Measure every configuration of ``m`` where it is (``m.to("cuda")`` first for a GPU profile: the
    int8/int4 weights then take ``model.quant``'s dequantise-per-matmul path, and the meter is NVML
    when it can read the GPU)."""
    torch.set_num_threads(threads)
    dev = _dev(m)
    meter = meter or best_available_meter()
    proc = psutil.Process()
    _sync(m)
    idle_measured_w = measure_idle_power_w(meter)
    cfgs = m.configs()
    for cfg in tqdm(cfgs, desc="warm-up", unit="config", disable=not progress):
        m.set_config(cfg)
        decode_step_ms(m, 4, 1)
        prefill_ms_per_token(m, prefill_tokens, 1)
    records = []
    for cfg in tqdm(cfgs, desc="profile", unit="config", disable=not progress):
        m.set_config(cfg)
        pre = prefill_ms_per_token(m, prefill_tokens, repeats)
        lat, energy_j = decode_step_ms(m, decode_tokens, repeats, meter)
        rss = proc.memory_info().rss
        n_tok = decode_tokens * repeats
        dec_med = float(np.median(lat))
        e_tok = energy_j / n_tok
        if e_tok <= 0:  # a counter that did not tick: NVML's updates every ~0.1 s (benchmarks/nvml_resolution.py)
            raise ValueError(f"{m.name(cfg)}: the meter ({meter.energy_source}) read no energy over {n_tok} decode "
                             f"steps ({sum(lat) / 1e3:.3f} s): shorter than its update interval; raise "
                             "--decode-tokens or --repeats")
        rec = {
            "name": m.name(cfg), "depth": cfg.depth, "heads": cfg.heads, "bits": cfg.bits,
            "device": dev.type, "layers": list(m.layers_for(cfg.depth)),
            "active_params": m.active_params(cfg), "resident_bytes": m.resident_bytes(cfg),
            "prefill_ms_per_token_median": float(np.median(pre)),
            "prefill_ms_per_token_p90": float(np.percentile(pre, 90)),
            "decode_ms_per_token_median": dec_med,
            "decode_ms_per_token_p90": float(np.percentile(lat, 90)),
            "decode_tokens_per_s": 1000.0 / dec_med,
            "peak_rss_bytes": int(rss),
            "energy_j_per_token": e_tok,
            "power_w": e_tok * 1000.0 / float(np.mean(lat)),
            "energy_source": meter.energy_source,
        }
        q = quality[m.name(cfg)]
        for k in ("val_loss", "bits_per_byte", "mc_accuracy", "coverage_at_k"):
            if k in q:
                rec[k] = q[k]
        records.append(rec)
    peak = max(r["peak_rss_bytes"] for r in records)
    for r in records:  # resident set is shared by all configs: report the process peak
        r["peak_rss_bytes"] = peak
    assumptions = meter.assumptions() if hasattr(meter, "assumptions") else None
    idle_power_w, idle_basis = _idle_fields(
        meter, idle_power_w, "assumption (not measured): idle power of the device's compute package; "
        f"{idle_power_w} W, set with --idle-power-w", idle_measured_w)
    assumptions = dict(assumptions or {})
    assumptions["idle_power_w_basis"] = idle_basis
    ckpt = getattr(m, "checkpoint_path", None)
    c = m.config
    return {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION, "name": name,
        "created_utc": utc_now_iso(),
        "machine": {**machine_info(threads, str(torch.__version__)), "fingerprint": host_fingerprint(threads)},
        "device": device_block(m, threads),
        "model": {"checkpoint_sha256": _checkpoint_sha(m) if ckpt else "unsaved",
                  "n_params": sum(p.numel() for p in m.parameters()),
                  "arch": {"n_layer": c.n_layer, "n_head": c.n_head, "n_embd": c.n_embd,
                           "block_size": c.block_size, "vocab_size": c.vocab_size,
                           "layer_rule": c.layer_rule, "int4_group": c.int4_group},
                  "total_resident_bytes": m.total_resident_bytes()},
        "energy_source": meter.energy_source,
        "energy_meter": meter.describe() if hasattr(meter, "describe") else {"name": meter.name},
        "meters_probed": probe_meters(),
        "energy_assumptions": assumptions,
        "idle_power_w": idle_power_w,
        "method": {"repeats": repeats, "warmup": 1, "prefill_tokens": prefill_tokens,
                   "decode_tokens": decode_tokens, "decode_prompt_tokens": PROMPT_TOKENS,
                   "threads": threads, "samples": "decode: every step of every repeat; "
                   "prefill: one per repeat (ms / token)"},
        "switch_costs": switch_costs(m),
        "configs": records,
    }


# ---- host fingerprint ------------------------------------------------------------------------

#: The micro-benchmark of the fingerprint: one token through a 256 -> 768 float32 matmul (the
#: shape of the committed model's qkv projection), median of BENCH_BATCHES batches of BENCH_INNER.
BENCH_BATCHES, BENCH_INNER = 41, 25


def bench_score_us(threads: int | None = None) -> float:
    """Median time (µs) of a 1×256 @ 256×768 float32 matmul: a short (< 0.1 s), deterministic-input
    micro-benchmark of this host's CPU speed at ``threads`` torch threads (restored afterwards)."""
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        x = torch.linspace(-1.0, 1.0, 256).reshape(1, 256)
        w = torch.linspace(-1.0, 1.0, 256 * 768).reshape(256, 768)
        with torch.inference_mode():
            for _ in range(50):
                x @ w
            batches = []
            for _ in range(BENCH_BATCHES):
                t0 = time.perf_counter()
                for _ in range(BENCH_INNER):
                    x @ w
                batches.append((time.perf_counter() - t0) / BENCH_INNER * 1e6)
        return float(statistics.median(batches))
    finally:
        torch.set_num_threads(old)


def host_fingerprint(threads: int) -> dict:
    """This host as a profile's ``machine.fingerprint``: cpu_model, cores_logical, torch_version, threads and
    ``bench_score_us`` (:func:`bench_score_us`)."""
    info = machine_info(threads, str(torch.__version__))
    return {"cpu_model": info["cpu_model"], "cores_logical": info["cores_logical"],
            "torch_version": info["torch_version"], "threads": int(threads),
            "bench_score_us": round(bench_score_us(threads), 3)}


_WARNED: set[str] = set()


def host_check_warning(data: dict, threads: int, label: str, current: dict | None = None,
                       tolerance: float = FINGERPRINT_BENCH_TOLERANCE) -> str | None:
    """One warning line when profile ``data`` was measured on another host than this one (CPU model,
    logical cores, torch version or threads differ, or ``bench_score_us`` by more than ``tolerance``), or
    when it has no fingerprint (once per ``label``); ``None`` when the fingerprints agree."""
    cur = current if current is not None else host_fingerprint(threads)
    diffs = compare_fingerprints(data.get("machine"), cur, tolerance)
    # a calibrated profile is re-calibrated from its (fully measured) base
    base = ((data.get("calibration") or {}).get("base_profile") or {}).get("path") or label
    fix = (f"python -m model.profile --calibrate {base} --out profiles/my-device.json --threads {threads} "
           "(about a minute)")
    if diffs is None:
        if label in _WARNED:
            return None
        _WARNED.add(label)
        return (f"warning: profile {label} has no host fingerprint (measured before fingerprints were recorded): "
                f"cannot check that its latencies describe this host; to get a profile for this host run {fix}")
    if not diffs:
        return None
    return (f"warning: profile {label} was measured on another host ({'; '.join(diffs)}): its latencies may be "
            f"off on this one; run {fix}")


# ---- calibration -----------------------------------------------------------------------------

#: Prediction methods of :func:`calibrate` (docs/profiles.md compares them on this host and on a GPU).
#: ``blend`` and the laws it mixes are power laws in active parameters: compute- and memory-bound processors, such as
#: the CPUs the project calibrates on. ``depth`` is a power law in depth: launch-bound processors, such as a GPU at
#: batch 1, whose time follows the kernels launched per layer, not the parameters they touch
#: (benchmarks/calibration_replay.py; docs/profiles.md).
CALIBRATION_METHODS = ("scale", "ratio", "refit", "blend", "depth")
#: The default: chosen by benchmarks/calibration.py (benchmarks/results/calibration.json, docs/profiles.md):
#: the smallest worst-case error on this host over repeated runs, with a median error as good as the others'.
DEFAULT_CALIBRATION_METHOD = "blend"
_TIMING = ("decode_ms_per_token_median", "prefill_ms_per_token_median")


def calibration_subset(records: list[dict], per_bits: int = 3) -> list[str]:
    """Names of the configurations to measure: per ``bits`` value, ``per_bits`` configurations spread
    evenly in log active parameters (smallest, largest, and the nearest to the middle for 3): the two
    ends fix a power law's slope with the longest lever arm, the middle one checks its curvature. In this
    project's profiles the ends are also the shallowest and the deepest configurations, so a power law in
    depth (``depth``) gets the same lever arm."""
    by_bits: dict[int, list[dict]] = {}
    for r in records:
        by_bits.setdefault(int(r["bits"]), []).append(r)
    out: list[str] = []
    for bits in sorted(by_bits):
        grp = sorted(by_bits[bits], key=lambda r: (r["active_params"], r["name"]))
        lx = np.log([float(r["active_params"]) for r in grp])
        k = min(per_bits, len(grp))
        chosen: list[int] = [0, len(grp) - 1][:k]  # the two ends, then the nearest to evenly spaced targets
        for t in np.linspace(lx[0], lx[-1], k)[1:-1]:
            free = [i for i in range(len(grp)) if i not in chosen]
            chosen.append(min(free, key=lambda i: (abs(lx[i] - t), i)))
        out += [grp[i]["name"] for i in sorted(chosen)]
    return out


def measure_config(m, name: str, *, repeats: int, decode_tokens: int, prefill_tokens: int, meter=None) -> dict:
    """One configuration's samples: ``prefill`` (ms/token, one per repeat), ``decode`` (ms per step) and
    ``energy_j`` of the timed decode steps (the function :func:`calibrate` and the benchmark time with)."""
    m.set_config(name)
    pre = prefill_ms_per_token(m, prefill_tokens, repeats)
    lat, energy_j = decode_step_ms(m, decode_tokens, repeats, meter)
    return {"prefill": pre, "decode": lat, "energy_j": energy_j}


def _fit_curve(method: str, x: np.ndarray, base_y: np.ndarray, meas_y: np.ndarray, depth: np.ndarray) -> dict:
    """The fitted curve of one precision and one quantity: ``scale`` (one measured/base factor, the geometric
    mean), ``ratio`` (measured/base = c·x^d, least squares in log-log), ``refit`` (measured = a·x^b), ``blend``
    (the geometric mean of the ``ratio`` and ``refit`` predictions: the base profile's per-configuration shape,
    shrunk halfway towards this host's own power law) or ``depth`` (measured = a·depth^b); ``x`` are the
    records' active parameters, ``depth`` their depths."""
    from model.scaling import fit_power_law

    ratio = meas_y / base_y
    if method == "depth":
        if np.ptp(np.log(depth)) == 0:
            return {"method": "scale", "factor": float(np.exp(np.mean(np.log(ratio))))}
        f = fit_power_law(depth, meas_y)
        return {"method": "depth", "a": f.a, "b": f.b, "r2": f.r2}
    if method == "scale" or (method == "ratio" and np.ptp(np.log(x)) == 0):
        return {"method": "scale", "factor": float(np.exp(np.mean(np.log(ratio))))}
    if method == "ratio":
        f = fit_power_law(x, ratio)
        return {"method": "ratio", "c": f.a, "d": f.b, "r2": f.r2}
    if np.ptp(np.log(x)) == 0:
        return {"method": "scale", "factor": float(np.exp(np.mean(np.log(ratio))))}
    if method == "blend":
        return {"method": "blend", "ratio": _fit_curve("ratio", x, base_y, meas_y, depth),
                "refit": _fit_curve("refit", x, base_y, meas_y, depth)}
    f = fit_power_law(x, meas_y)
    return {"method": "refit", "a": f.a, "b": f.b, "r2": f.r2}


def _predict(fit: dict, x: np.ndarray, base_y: np.ndarray, depth: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if fit["method"] == "blend":  # the geometric mean of the two
        return np.sqrt(_predict(fit["ratio"], x, base_y, depth) * _predict(fit["refit"], x, base_y, depth))
    if fit["method"] == "scale":
        return base_y * fit["factor"]
    if fit["method"] == "ratio":
        return base_y * fit["c"] * np.power(x, fit["d"])
    if fit["method"] == "depth":
        return fit["a"] * np.power(np.asarray(depth, dtype=np.float64), fit["b"])
    return fit["a"] * np.power(x, fit["b"])


def _loo_residuals(method: str, x, by, my, depth) -> list[float]:
    """Each measured point predicted from the others (``ln measured − ln predicted``); empty under 3 points."""
    if len(x) < 3:
        return []
    out = []
    for i in range(len(x)):
        keep = np.arange(len(x)) != i
        f_i = _fit_curve(method, x[keep], by[keep], my[keep], depth[keep])
        out.append(float(np.log(my[i]) - np.log(_predict(f_i, x[i:i + 1], by[i:i + 1], depth[i:i + 1])[0])))
    return out


def predict_from_measured(base_records: list[dict], measured: dict[str, dict[str, float]],
                          method: str = DEFAULT_CALIBRATION_METHOD) -> tuple[dict[str, dict[str, float]], dict]:
    """Predicts the timing fields (``_TIMING``) of every base record from the measured ones, per precision.

    Args:
        base_records: The base profile's records.
        measured: ``{name: {field: value}}`` for the measured configurations (each precision needs one).
        method: One of :data:`CALIBRATION_METHODS`.

    Returns:
        ``({name: {field: predicted}}`` for every record, ``fits``): ``fits[bits][field]`` holds the curve's
        parameters, the measured points' residuals (``ln measured - ln fitted``) and the leave-one-out
        residuals (each measured point predicted from the others; needs 3+ points).
    """
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"method {method!r}: allowed {list(CALIBRATION_METHODS)}")
    by_bits: dict[int, list[dict]] = {}
    for r in base_records:
        by_bits.setdefault(int(r["bits"]), []).append(r)
    if method == "depth" and any("depth" not in r for r in base_records):
        raise ValueError(f"method {method!r} needs every base record's 'depth'; use method 'blend'")
    pred: dict[str, dict[str, float]] = {r["name"]: {} for r in base_records}
    fits: dict = {}
    for bits, grp in sorted(by_bits.items()):
        mrec = [r for r in grp if r["name"] in measured]
        if not mrec:
            raise ValueError(f"no measured configuration of {bits}-bit precision: cannot calibrate it")
        x = np.array([float(r["active_params"]) for r in mrec])
        d = np.array([float(r.get("depth", 1)) for r in mrec])
        ga = np.array([float(r["active_params"]) for r in grp])
        gd = np.array([float(r.get("depth", 1)) for r in grp])
        fits[str(bits)] = {}
        for fld in _TIMING:
            by = np.array([float(r[fld]) for r in mrec])
            my = np.array([float(measured[r["name"]][fld]) for r in mrec])
            fit = _fit_curve(method, x, by, my, d)
            resid = np.log(my) - np.log(_predict(fit, x, by, d))
            fits[str(bits)][fld] = {**fit, "n": len(mrec), "residuals_ln": [float(v) for v in resid],
                                    "loo_residuals_ln": _loo_residuals(method, x, by, my, d)}
            gy = np.array([float(r[fld]) for r in grp])
            for r, v in zip(grp, _predict(fit, ga, gy, gd)):
                pred[r["name"]][fld] = float(v)
    return pred, fits


def _sha256_of_json(data: dict) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def calibrate(m, base: dict, *, threads: int, budget_s: float, decode_tokens: int = 64, prefill_tokens: int = 128,
              method: str = DEFAULT_CALIBRATION_METHOD, per_bits: int = 3, max_repeats: int = 200,
              name: str = "calibrated", base_label: str | None = None, base_sha256: str | None = None,
              measure=measure_config, clock=time.perf_counter, progress: bool = True, meter=None) -> dict:
    """A profile of every configuration for this host from a few measured ones (see the module docstring).

    Measures :func:`calibration_subset` of ``base``'s configurations (a short warm-up, one timed repeat to
    learn their cost, then as many repeats as ``budget_s`` allows, at most ``max_repeats``), fits per
    precision how this host differs (``method``: :data:`CALIBRATION_METHODS`), and predicts the others.
    Quality fields are the base's (the host does not change them); energy follows the time with the same
    energy model (:func:`_energy_for`). ``measure`` and ``clock`` are injectable for tests.

    ``meter`` (default :func:`model.energy_model.best_available_meter`) measures the energy of the measured
    records; with a real meter (RAPL, NVML, a battery) their energy per token is measured, the predicted
    records' energy is the predicted time × the measured records' effective power of the precision, and the
    idle power is read from the meter (:func:`measure_idle_power_w`). ``m`` may be on a CUDA GPU
    (:func:`gpu_model`): the records and the ``device`` block then say ``cuda``.
    """
    t_start = clock()
    load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    torch.set_num_threads(threads)
    meter = meter or best_available_meter()
    # m is None only in tests that inject ``measure``: no model, no device to read idle power from
    idle_measured_w = measure_idle_power_w(meter) if m is not None else None
    dev_type = _dev(m).type if m is not None else "cpu"
    base_recs = [dict(r, device=dev_type) for r in base["configs"]]
    subset = calibration_subset(base_recs, per_bits)
    bar = tqdm(total=len(subset) * 2, desc="calibrate", unit="config", disable=not progress)
    samples: dict[str, dict] = {}
    round_s = 0.0
    for n in subset:  # warm-up (discarded), then one timed repeat that also prices a repeat
        measure(m, n, repeats=1, decode_tokens=min(4, decode_tokens), prefill_tokens=min(8, prefill_tokens))
        t0 = clock()
        samples[n] = measure(m, n, repeats=1, decode_tokens=decode_tokens, prefill_tokens=prefill_tokens,
                             meter=meter)
        round_s += clock() - t0
        bar.update(1)
    reserve_s = 1.0 + 0.02 * budget_s  # fingerprint, fits and writing
    left = budget_s - (clock() - t_start) - reserve_s
    extra = int(max(0, min(max_repeats - 1, left // max(round_s, 1e-9))))
    # round-robin, one repeat per configuration per round: a slow spell of the host (another process on the
    # cores) then slows every configuration alike instead of one of them, so the fitted ratios stay honest
    rounds, last_round_s = 0, round_s
    for i in range(extra):
        if clock() - t_start + last_round_s > budget_s - reserve_s:
            break  # the repeats ran slower than the probe: stop at the budget
        t_round = clock()
        rounds += 1
        for n in subset:
            s = measure(m, n, repeats=1, decode_tokens=decode_tokens, prefill_tokens=prefill_tokens, meter=meter)
            samples[n] = {"prefill": samples[n]["prefill"] + s["prefill"],
                          "decode": samples[n]["decode"] + s["decode"],
                          "energy_j": samples[n]["energy_j"] + s["energy_j"]}
        last_round_s = clock() - t_round
        bar.update(len(subset) * (i + 1) // extra - len(subset) * i // extra)
    bar.update(len(subset) - bar.n + len(subset))
    bar.close()
    repeats = 1 + rounds
    peak_rss = int(psutil.Process().memory_info().rss)
    measured = {n: {"decode_ms_per_token_median": float(np.median(s["decode"])),
                    "prefill_ms_per_token_median": float(np.median(s["prefill"]))} for n, s in samples.items()}
    pred, fits = predict_from_measured(base_recs, measured, method)
    dram_pj = None
    if meter.energy_source == "modelled" and hasattr(meter, "assumptions"):
        dram_pj = float(meter.assumptions().get("dram_pj_per_byte", 0.0))
    cpu_w: dict[int, list[float]] = {}
    for r in base_recs:  # measured first: their effective power prices the predicted ones
        if r["name"] in samples:
            s = samples[r["name"]]
            lat, pre = np.asarray(s["decode"]), np.asarray(s["prefill"])
            e_tok = s["energy_j"] / len(lat) if len(lat) else 0.0
            r.update({"prefill_ms_per_token_median": float(np.median(pre)),
                      "prefill_ms_per_token_p90": float(np.percentile(pre, 90)),
                      "decode_ms_per_token_median": float(np.median(lat)),
                      "decode_ms_per_token_p90": float(np.percentile(lat, 90)),
                      "decode_tokens_per_s": 1000.0 / float(np.median(lat)),
                      "energy_source": meter.energy_source, "source": "measured"})
            if e_tok <= 0:  # an injected measure without energy: the energy model on the median time
                e_tok = float(np.median(lat)) / 1e3 * 5.0 * threads
            r["energy_j_per_token"] = e_tok
            r["power_w"] = e_tok * 1000.0 / float(np.mean(lat))
            dram_j = (float(r["resident_bytes"]) * dram_pj * 1e-12) if dram_pj is not None else 0.0
            cpu_w.setdefault(int(r["bits"]), []).append(max(0.0, e_tok - dram_j) / (float(np.mean(lat)) / 1e3))
    cpu_w_med = {b: float(np.median(v)) for b, v in cpu_w.items()}
    for r in base_recs:
        if r["name"] in samples:
            continue
        p = pred[r["name"]]
        for stage in ("prefill", "decode"):
            med_f, p90_f = f"{stage}_ms_per_token_median", f"{stage}_ms_per_token_p90"
            k = p[med_f] / float(r[med_f])
            r[med_f], r[p90_f] = p[med_f], max(p[med_f], float(r[p90_f]) * k)  # the base's p90/median spread
        t_s = r["decode_ms_per_token_median"] / 1e3
        dram_j = (float(r["resident_bytes"]) * dram_pj * 1e-12) if dram_pj is not None else 0.0
        e_tok = t_s * cpu_w_med[int(r["bits"])] + dram_j
        r.update({"decode_tokens_per_s": 1000.0 / r["decode_ms_per_token_median"], "energy_j_per_token": e_tok,
                  "power_w": e_tok / t_s, "energy_source": "modelled", "source": "predicted"})
    for r in base_recs:  # the resident set is shared by all configurations: this process's peak
        r["peak_rss_bytes"] = peak_rss
    dec_ratio = float(np.exp(np.mean([np.log(measured[n]["decode_ms_per_token_median"]
                                             / float(next(b for b in base["configs"] if b["name"] == n)
                                                     ["decode_ms_per_token_median"])) for n in subset])))
    switch = {k: float(v) * dec_ratio for k, v in (base.get("switch_costs") or {}).items()}
    all_measured = all(r["source"] == "measured" for r in base_recs)
    energy_source = meter.energy_source if all_measured else "modelled"
    assumptions = dict(meter.assumptions()) if hasattr(meter, "assumptions") else {}
    assumptions["predicted_records"] = (
        "energy_j_per_token = predicted decode ms / 1000 x this device's effective power of the precision "
        "(median over its measured records of (energy - DRAM term) / mean decode time) + resident_bytes x "
        "dram_pj_per_byte x 1e-12 (the DRAM term only when the meter is the model)")
    if meter.energy_source == "modelled":
        assumptions["meter"] = ("no energy meter on this host (model.energy_model.best_available_meter found none): "
                                "measured records' energy is modelled too")
    else:
        assumptions["meter"] = f"measured records: {meter.energy_source}; predicted records: modelled as above"
    idle_w, assumptions["idle_power_w_basis"] = _idle_fields(meter, base.get("idle_power_w", 1.5),
                                                             "copied from the base profile", idle_measured_w)
    fp = host_fingerprint(threads)
    used = clock() - t_start
    order = [r["name"] for r in base_recs]
    cal = {
        "base_profile": {"name": base.get("name"), "sha256": base_sha256 or _sha256_of_json(base),
                         "path": base_label, "created_utc": base.get("created_utc"),
                         "machine": base.get("machine")},
        "method": method, "per_bits": per_bits,
        "measured": [n for n in order if n in samples], "predicted": [n for n in order if n not in samples],
        "fits": fits, "budget_s": float(budget_s), "seconds_used": float(used), "repeats": repeats,
        "measured_over_base_decode_geomean": dec_ratio,
        "switch_costs": "the base profile's, scaled by measured_over_base_decode_geomean (not measured)",
        "energy": "modelled (no meter)" if meter.energy_source == "modelled" else meter.energy_source,
        # other processes on the cores slow every measurement: the 1-minute load average before and after
        "load_avg_1min": {"before": load0, "after": os.getloadavg()[0] if hasattr(os, "getloadavg") else None},
    }
    return {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION, "name": name, "created_utc": utc_now_iso(),
        "machine": {**machine_info(threads, str(torch.__version__)), "fingerprint": fp},
        "device": device_block(m, threads) if m is not None else
        {"kind": "cpu", "name": machine_info(threads, "")["cpu_model"], "spec": None},
        "model": base["model"],
        "energy_source": energy_source,
        "energy_meter": meter.describe() if hasattr(meter, "describe") else {"name": meter.name},
        "meters_probed": probe_meters(),
        "energy_assumptions": assumptions,
        "idle_power_w": idle_w,
        "method": {"repeats": repeats, "warmup": 1, "prefill_tokens": prefill_tokens, "decode_tokens": decode_tokens,
                   "decode_prompt_tokens": PROMPT_TOKENS, "threads": threads, "wall_s": float(used),
                   "samples": "calibrated: the measured records as model.profile times them; the others predicted "
                   "(calibration block)"},
        "switch_costs": switch,
        **({"config_space": base["config_space"]} if "config_space" in base else {}),
        "calibration": cal,
        "configs": base_recs,
    }


def _main_calibrate(a, p: argparse.ArgumentParser) -> None:
    """``--calibrate BASE``: load the base profile and the model it describes, calibrate, write ``--out``."""
    from model.profile_schema import ProfileError
    from runtime.safeio import file_sha256 as _fsha

    try:
        base = load_profile(a.calibrate)
    except ProfileError as exc:
        raise SystemExit(f"python -m model.profile --calibrate: {exc}") from None
    if any(r.get("source") == "predicted" for r in base.configs):
        raise SystemExit(f"python -m model.profile --calibrate: {a.calibrate} is itself calibrated; calibrate from "
                         "a fully measured profile (e.g. profiles/reference-cpu.json)")
    want = (base.data.get("model") or {}).get("checkpoint_sha256")
    try:
        m = M.load(a.checkpoint or M.DEFAULT_CHECKPOINT, expect_sha256=want if want != "unsaved" else None)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"python -m model.profile --calibrate: {exc}") from None
    if sorted(base.names) != sorted(m.space.names):
        raise SystemExit(f"python -m model.profile --calibrate: {a.calibrate} does not describe the model's "
                         "configurations; re-profile with python -m model.profile")
    if a.prefill_tokens > m.config.block_size or a.decode_tokens + PROMPT_TOKENS > m.config.block_size:
        p.error(f"argument --prefill-tokens/--decode-tokens: at most {m.config.block_size} prompt tokens and "
                f"{m.config.block_size - PROMPT_TOKENS} decode tokens fit the model's context")
    meter = None
    if a.device == "cuda":
        m, meter = gpu_model(m), gpu_meter()
    prof = calibrate(m, base.data, threads=a.threads, budget_s=a.budget_s, decode_tokens=a.decode_tokens,
                     prefill_tokens=a.prefill_tokens, method=a.method, name=a.name or Path(a.out).stem,
                     base_label=str(a.calibrate), base_sha256=_fsha(a.calibrate), meter=meter)
    out = save_profile(prof, a.out)
    c = prof["calibration"]
    load = c["load_avg_1min"]["before"]
    if load is not None and load > 0.5 * (os.cpu_count() or 1):
        print(f"warning: the 1-minute load average was {load:.1f} on {os.cpu_count()} cores while calibrating: "
              "other processes slowed the measurements; re-run on an idle machine", file=sys.stderr)
    print(f"wrote {out}: {len(c['measured'])} configurations measured ({c['repeats']} repeats), "
          f"{len(c['predicted'])} predicted ({c['method']}), {c['seconds_used']:.0f} s of a {c['budget_s']:.0f} s "
          f"budget; this host decodes {c['measured_over_base_decode_geomean']:.2f}x the base's time; energy "
          f"{prof['energy_source']}")


def gpu_model(m, device: str = "cuda"):
    """The model on ``device`` with its packs rebuilt there (int8/int4: quantised storage, dequantised per
    matmul — ``model.quant.pack``'s generic path)."""
    m = m.to(device)
    m.prepare()
    return m


def gpu_meter(index: int = 0):
    """NVML's total-energy counter of GPU ``index`` when it reads (the GPU's own energy: the project's first
    measured energy figures), else the best meter of this host (the CPU's modelled energy), with a note."""
    from runtime.meters import NvmlMeter

    nv = NvmlMeter(index)
    if nv.available():
        return nv
    print(f"warning: NVML cannot read GPU {index} ({nv.reason}); energy falls back to {best_available_meter().name}",
          file=sys.stderr)
    return best_available_meter()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Measure latency, memory and energy of every configuration.")
    p.add_argument("--out", required=True, help="profile JSON to write, e.g. profiles/cpu.json")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the model runs")
    p.add_argument("--threads", type=positive_int, default=2, help="torch intra-op threads (>= 1)")
    p.add_argument("--checkpoint", default=None, help="default: the committed checkpoint")
    p.add_argument("--quality", default=str(DEFAULT_QUALITY), help="model.evaluate output to merge")
    p.add_argument("--repeats", type=positive_int, default=10, help="repeats per configuration (>= 1)")
    p.add_argument("--decode-tokens", type=positive_int, default=64, help="decode steps per repeat (>= 1)")
    p.add_argument("--prefill-tokens", type=positive_int, default=128,
                   help="prompt length for prefill timing (>= 1, at most the model's context)")
    p.add_argument("--idle-power-w", type=nonneg_float, default=1.5,
                   help="idle power when no meter can measure it (modelled assumption, >= 0)")
    p.add_argument("--name", default=None, help="profile name (default: the file stem)")
    p.add_argument("--force", action="store_true", help="replace an existing --out file")
    p.add_argument("--calibrate", default=None, metavar="BASE_PROFILE",
                   help="calibrate BASE_PROFILE to this host: measure a few configurations per precision within "
                        "--budget-s, predict the others (docs/profiles.md)")
    p.add_argument("--budget-s", type=positive_float, default=60.0,
                   help="--calibrate: seconds to spend measuring (> 0; repeats adapt to it)")
    p.add_argument("--method", choices=CALIBRATION_METHODS, default=DEFAULT_CALIBRATION_METHOD,
                   help="--calibrate: how the measured configurations predict the others")
    a = p.parse_args(argv)
    if a.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA GPU on this machine (torch.cuda.is_available() is False; "
                         "a CPU-only torch build, or no driver); profile on cpu, or project onto a GPU with "
                         "python -m model.placement_profile --hardware host")
    try:  # before anything is measured
        refuse_existing(a.out, a.force, "profile")
    except FileExistsError as exc:
        raise SystemExit(f"python -m model.profile: {exc}") from None
    if a.calibrate:
        _main_calibrate(a, p)
        return
    m = M.load(a.checkpoint) if a.checkpoint else M.load_default()
    if a.prefill_tokens > m.config.block_size or a.decode_tokens + PROMPT_TOKENS > m.config.block_size:
        p.error(f"argument --prefill-tokens/--decode-tokens: at most {m.config.block_size} prompt tokens and "
                f"{m.config.block_size - PROMPT_TOKENS} decode tokens fit the model's context")
    sha = _checkpoint_sha(m)
    quality = load_quality(Path(a.quality), sha, list(m.space.names))
    meter = None
    if a.device == "cuda":
        m = gpu_model(m)
        meter = gpu_meter()
    t0 = time.time()
    prof = profile(m, threads=a.threads, repeats=a.repeats, decode_tokens=a.decode_tokens,
                   prefill_tokens=a.prefill_tokens, quality=quality,
                   name=a.name or Path(a.out).stem, idle_power_w=a.idle_power_w, meter=meter)
    prof["method"]["wall_s"] = time.time() - t0
    out = save_profile(prof, a.out)
    print(f"wrote {out}: {len(prof['configs'])} configurations, energy source "
          f"{prof['energy_source']}, {prof['method']['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
