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
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import time
from pathlib import Path

import numpy as np
import psutil
import torch
from tqdm import tqdm

import model as M
from model.cli import nonneg_float, positive_int
from model.energy_model import ModelledCpuEnergy, best_available_meter, probe_meters
from model.evaluate import DEFAULT_OUT as DEFAULT_QUALITY
from model.evaluate import file_sha256
from model.profile_schema import SCHEMA, SCHEMA_VERSION, machine_info, save_profile, utc_now_iso
from runtime.safeio import refuse_existing

PROMPT_TOKENS = 64  # context before decode timing starts


def decode_step_ms(m, tokens: int, repeats: int, meter=None) -> tuple[list[float], float]:
    """Per-step decode latencies (ms) and the energy (J) of all timed steps."""
    lat, energy_j = [], 0.0
    prompt = torch.randint(0, 256, (1, PROMPT_TOKENS))
    tok = torch.tensor([[32]])
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
        t0 = time.perf_counter()
        m.forward(tok, cache)
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def prefill_ms_per_token(m, n: int, repeats: int) -> list[float]:
    x = torch.randint(0, 256, (1, n))
    out = []
    for _ in range(repeats):
        cache = m.new_cache(1, n)
        t0 = time.perf_counter()
        m.forward(x, cache)
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
    tok = torch.tensor([[32]])
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
            m.forward(torch.randint(0, 256, (1, context)), cache)
            m.set_config(b)
            t0 = time.perf_counter()
            m.forward(tok, cache)  # repairs the cache, then decodes
            switched = time.perf_counter() - t0
            t0 = time.perf_counter()
            m.forward(tok, cache)  # a plain step under b
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


def profile(m, *, threads: int, repeats: int, decode_tokens: int, prefill_tokens: int,
            quality: dict[str, dict], name: str, idle_power_w: float, progress: bool = True) -> dict:
    torch.set_num_threads(threads)
    meter = best_available_meter()
    proc = psutil.Process()
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
        rec = {
            "name": m.name(cfg), "depth": cfg.depth, "heads": cfg.heads, "bits": cfg.bits,
            "device": "cpu", "layers": list(m.layers_for(cfg.depth)),
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
    if meter.energy_source == "modelled":
        assumptions = dict(assumptions or {})
        assumptions["idle_power_w_basis"] = (
            "assumption (not measured): idle power of the device's compute package; "
            f"{idle_power_w} W, set with --idle-power-w")
    ckpt = getattr(m, "checkpoint_path", None)
    c = m.config
    return {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION, "name": name,
        "created_utc": utc_now_iso(),
        "machine": machine_info(threads, str(torch.__version__)),
        "device": {"kind": "cpu", "name": machine_info(threads, "")["cpu_model"], "spec": None},
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
    a = p.parse_args(argv)
    if a.device == "cuda":
        raise SystemExit("--device cuda: the elastic model's int8/int4 kernels are CPU kernels and "
                         "device placement arrives with the placement issue; profile on cpu, or "
                         "project onto a GPU spec with python -m model.roofline")
    try:  # before anything is measured
        refuse_existing(a.out, a.force, "profile")
    except FileExistsError as exc:
        raise SystemExit(f"python -m model.profile: {exc}") from None
    m = M.load(a.checkpoint) if a.checkpoint else M.load_default()
    if a.prefill_tokens > m.config.block_size or a.decode_tokens + PROMPT_TOKENS > m.config.block_size:
        p.error(f"argument --prefill-tokens/--decode-tokens: at most {m.config.block_size} prompt tokens and "
                f"{m.config.block_size - PROMPT_TOKENS} decode tokens fit the model's context")
    sha = _checkpoint_sha(m)
    quality = load_quality(Path(a.quality), sha, list(m.space.names))
    t0 = time.time()
    prof = profile(m, threads=a.threads, repeats=a.repeats, decode_tokens=a.decode_tokens,
                   prefill_tokens=a.prefill_tokens, quality=quality,
                   name=a.name or Path(a.out).stem, idle_power_w=a.idle_power_w)
    prof["method"]["wall_s"] = time.time() - t0
    out = save_profile(prof, a.out)
    print(f"wrote {out}: {len(prof['configs'])} configurations, energy source "
          f"{prof['energy_source']}, {prof['method']['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
