"""Decode/prefill speed per configuration, switch costs, and an HF GPT-2 speed reference.

    python benchmarks/model_speed.py [--threads 1 2] [--out benchmarks/results/model_speed.json]

Every configuration is warmed up first (the first forward on a new shape costs milliseconds).
Decode: tokens/s of single-token steps with the KV cache after a 64-byte prompt (median of
``--repeats`` runs of ``--tokens`` steps). Prefill: ms for a 128-byte prompt (median).
Switch: the time of ``set_config`` for each knob, the first decode step after the switch
(which repairs the KV cache at a 128-token context), and reloading the checkpoint.
Reference: ``transformers`` GPT-2 with the same width, depth, heads, vocabulary and context,
random weights, its own KV cache (``past_key_values``), same decode loop — needs
``pip install -e .[bench]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

import model as M
from model.profile import decode_step_ms, prefill_ms_per_token, switch_costs


def _decode_tps(m, tokens: int, repeats: int) -> float:
    """Tokens/s of cached single-token decode steps (median per-step latency, model.profile's timer)."""
    return 1000.0 / statistics.median(decode_step_ms(m, tokens, repeats)[0])


def _prefill_ms(m, n: int, repeats: int) -> float:
    """Milliseconds to prefill an ``n``-token prompt (median)."""
    return statistics.median(prefill_ms_per_token(m, n, repeats)) * n


def hf_reference(m, tokens: int, repeats: int) -> dict | None:
    try:
        from transformers import GPT2Config, GPT2LMHeadModel
    except ImportError:
        return None
    c = m.config
    hf = GPT2LMHeadModel(GPT2Config(vocab_size=c.vocab_size, n_positions=c.block_size, n_embd=c.n_embd,
                                    n_layer=c.n_layer, n_head=c.n_head, n_inner=c.mlp_ratio * c.n_embd)).eval()
    prompt = torch.randint(0, 256, (1, min(64, c.block_size - tokens - 1)))
    rates = []
    with torch.no_grad():
        for r in range(repeats + 1):
            out = hf(prompt, use_cache=True)
            past = out.past_key_values
            tok = torch.tensor([[32]])
            t0 = time.perf_counter()
            for _ in range(tokens):
                out = hf(tok, past_key_values=past, use_cache=True)
                past = out.past_key_values
            if r:  # first run is the warm-up
                rates.append(tokens / (time.perf_counter() - t0))
    import transformers
    return {"decode_tokens_per_s": statistics.median(rates), "transformers": transformers.__version__,
            "params": sum(p.numel() for p in hf.parameters())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--tokens", type=int, default=128, help="decode steps per run")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default="benchmarks/results/model_speed.json")
    p.add_argument("--checkpoint", default=None, help="default: the committed checkpoint")
    a = p.parse_args()
    m = M.load(a.checkpoint) if a.checkpoint else M.load_default()
    res = {"machine": {"cpu": platform.processor() or platform.machine(), "torch": torch.__version__},
           "method": vars(a), "by_threads": {}}
    for th in a.threads:
        torch.set_num_threads(th)
        rows = []
        for cfg in m.configs():  # warm every configuration once
            m.set_config(cfg)
            _decode_tps(m, 8, 1)
            _prefill_ms(m, min(128, m.config.block_size), 1)
        for cfg in m.configs():
            m.set_config(cfg)
            rows.append({"name": cfg.name, "decode_tokens_per_s": _decode_tps(m, a.tokens, a.repeats),
                         "prefill_ms_128": _prefill_ms(m, min(128, m.config.block_size), a.repeats),
                         "active_params": m.active_params(cfg), "resident_bytes": m.resident_bytes(cfg)})
            print(f"threads={th} {cfg.name:14s} decode {rows[-1]['decode_tokens_per_s']:7.0f} tok/s  "
                  f"prefill(128) {rows[-1]['prefill_ms_128']:6.2f} ms", flush=True)
        m.set_config(m.full_config())
        entry = {"configs": rows, "hf_gpt2": hf_reference(m, a.tokens, a.repeats)}
        if entry["hf_gpt2"]:
            ours = rows[0]["decode_tokens_per_s"]
            entry["speedup_vs_hf_full_fp32"] = ours / entry["hf_gpt2"]["decode_tokens_per_s"]
            print(f"threads={th} HF GPT-2 decode {entry['hf_gpt2']['decode_tokens_per_s']:.0f} tok/s; "
                  f"ours {ours:.0f} tok/s = {entry['speedup_vs_hf_full_fp32']:.2f}x")
        res["by_threads"][str(th)] = entry
    torch.set_num_threads(1)
    res["switch"] = switch_costs(m)
    res["total_resident_bytes"] = m.total_resident_bytes()
    print(json.dumps(res["switch"], indent=1))
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
