"""Quality of every configuration on held-out text: ``python -m model.evaluate --out quality.json``.

Three measures, all on the test books (``model.data.TEST_BOOKS``) that training never sees,
all computed with the *inference* path (the packed int8/int4 kernels, not fake-quant):

* **val_loss / bits_per_byte** — mean next-byte cross-entropy (nats) over fixed windows of
  the test text; bits per byte = nats / ln 2.
* **mc_accuracy** — a HellaSwag-style multiple-choice continuation benchmark built from the
  test verses: the context is the previous verse plus the first part of a verse (cut at a
  word boundary); the four candidates are the true rest of that verse and three rests of
  other test verses of similar length. The model picks the candidate with the highest
  length-normalised log-likelihood (mean log-prob per byte). Chance = 25 %.
* **coverage_at_k** — inference-time scaling: for held-out contexts cut before a word, the
  probability that at least one of k sampled continuations (temperature 1) reproduces the
  true next word, estimated without bias from n = 8 samples per item
  (pass@k = 1 − C(n−c, k) / C(n, k)), for k ∈ {1, 2, 4, 8}.

The item sets are deterministic (seeded) so every configuration sees the same items.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from model.data import load_corpus

DEFAULT_OUT = Path(__file__).parent / "results" / "quality.json"


@dataclass(frozen=True)
class MCItem:
    context: bytes
    candidates: tuple[bytes, bytes, bytes, bytes]
    answer: int


def build_mc_items(verses: tuple[str, ...], n: int = 1000, seed: int = 0,
                   context_bytes: int = 96, max_candidate_bytes: int = 150) -> list[MCItem]:
    """Deterministic multiple-choice items from held-out verses (see module docstring).

    Every context is exactly ``context_bytes`` long (earlier verses fill it), so contexts
    batch without padding and are encoded once for all four candidates.
    """
    rng = np.random.default_rng(seed)
    cands = []  # (verse index, split point) for verses long enough to split
    for i, v in enumerate(verses):
        if i < 3 or len(v) < 48:
            continue
        spaces = [j for j, ch in enumerate(v) if ch == " " and 0.35 * len(v) <= j <= 0.6 * len(v)]
        if spaces and len(v) - spaces[len(spaces) // 2] <= max_candidate_bytes:
            cands.append((i, spaces[len(spaces) // 2]))
    if len(cands) < n:
        raise ValueError(f"only {len(cands)} usable verses for {n} items")
    order = rng.permutation(len(cands))[:n]
    endings = [(i, verses[i][s:]) for i, s in cands]
    lengths = np.array([len(e) for _, e in endings])
    items = []
    for k in order:
        i, s = cands[k]
        ctx = ("\n".join(verses[i - 3:i]) + "\n" + verses[i][:s])[-context_bytes:]
        true = verses[i][s:]
        # distractors: 3 other endings whose length is closest to the true one's
        near = np.argsort(np.abs(lengths - len(true)) + rng.random(len(lengths)) * 0.5)
        picks = [endings[j][1] for j in near if endings[j][0] != i and endings[j][1] != true][:3]
        answer = int(rng.integers(4))
        options = picks[:answer] + [true] + picks[answer:]
        items.append(MCItem(ctx.encode(), tuple(o.encode() for o in options), answer))
    return items


@torch.no_grad()
def mc_accuracy(m, items: list[MCItem], batch_items: int = 32) -> float:
    """Fraction of items where the true continuation has the best mean log-prob per byte.

    The context is encoded once per item (KV cache), then the four candidates continue from
    copies of that cache — exactly the same numbers as scoring context+candidate from scratch.
    """
    correct = 0
    for b0 in range(0, len(items), batch_items):
        chunk = items[b0:b0 + batch_items]
        B, C = len(chunk), len(chunk[0].context)
        if any(len(it.context) != C for it in chunk):
            raise ValueError("contexts of one batch must have equal length")
        ctx = torch.tensor([list(it.context) for it in chunk])  # (B, C)
        Lmax = max(len(c) for it in chunk for c in it.candidates)
        cache = m.new_cache(B, C + Lmax)
        last = m.forward(ctx, cache)[:, -1]  # (B, V): predicts each candidate's first byte
        big = m.new_cache(4 * B, C + Lmax)  # each item's cache copied for its 4 candidates
        big.k[:, :, :, :C] = cache.k[:, :, :, :C].repeat_interleave(4, dim=1)
        big.v[:, :, :, :C] = cache.v[:, :, :, :C].repeat_interleave(4, dim=1)
        big.resid[:, :, :C] = cache.resid[:, :, :C].repeat_interleave(4, dim=1)
        big.length, big.plan = C, cache.plan
        cand = torch.zeros(4 * B, Lmax, dtype=torch.long)  # right-padded: causal, so harmless
        lens = torch.zeros(4 * B, dtype=torch.long)
        for r, it in enumerate(chunk):
            for j, c in enumerate(it.candidates):
                cand[4 * r + j, :len(c)] = torch.tensor(list(c))
                lens[4 * r + j] = len(c)
        logits = torch.cat([last.repeat_interleave(4, dim=0)[:, None],
                            m.forward(cand[:, :-1], big)], dim=1)  # (4B, Lmax, V)
        tok_lp = F.log_softmax(logits, -1).gather(-1, cand[..., None])[..., 0]  # (4B, Lmax)
        valid = torch.arange(Lmax)[None] < lens[:, None]
        scores = (tok_lp * valid).sum(1) / lens  # mean log-prob per byte
        pred = scores.view(B, 4).argmax(-1)
        correct += sum(int(p) == it.answer for p, it in zip(pred.tolist(), chunk))
    return correct / len(items)


@torch.no_grad()
def heldout_loss(m, data: np.ndarray, windows: int = 256, batch: int = 16) -> float:
    """Mean next-byte loss (nats) over ``windows`` evenly spaced windows of ``data``."""
    T = m.config.block_size
    starts = np.linspace(0, len(data) - T - 1, windows).astype(int)
    total, count = 0.0, 0
    for b0 in range(0, windows, batch):
        x = torch.from_numpy(np.stack([data[s:s + T + 1] for s in starts[b0:b0 + batch]]).astype(np.int64))
        lg = m.forward(x[:, :-1])
        total += F.cross_entropy(lg.flatten(0, 1), x[:, 1:].flatten(), reduction="sum").item()
        count += x[:, 1:].numel()
    return total / count


def build_word_items(verses: tuple[str, ...], n: int = 300, seed: int = 1,
                     context_bytes: int = 96) -> list[tuple[bytes, bytes]]:
    """(context ending in a space, the next word) pairs from held-out verses."""
    rng = np.random.default_rng(seed)
    text = "\n".join(verses)
    items = []
    while len(items) < n:
        p = int(rng.integers(context_bytes, len(text) - 20))
        p = text.find(" ", p)
        if p < 0:
            continue
        word_end = p + 1
        while word_end < len(text) and text[word_end].isalpha():
            word_end += 1
        word = text[p + 1:word_end]
        if len(word) >= 3:
            items.append((text[p + 1 - context_bytes:p + 1].encode(), word.encode()))
    return items


@torch.no_grad()
def coverage_at_k(m, items: list[tuple[bytes, bytes]], n: int = 8, ks=(1, 2, 4, 8),
                  seed: int = 0) -> dict[str, float]:
    """Unbiased pass@k of sampling the exact next word (see module docstring)."""
    gen = torch.Generator().manual_seed(seed)
    sums = dict.fromkeys(ks, 0.0)
    for ctx, word in items:
        L = len(word) + 1  # the word and the byte after it (must end the word)
        cache = m.new_cache(n, len(ctx) + L + 1)
        x = torch.tensor(list(ctx))[None].repeat(n, 1)
        logits = m.forward(x, cache)[:, -1]
        out = []
        for _ in range(L):
            nxt = torch.multinomial(F.softmax(logits, -1), 1, generator=gen)  # (n, 1)
            out.append(nxt)
            logits = m.forward(nxt, cache)[:, -1]
        samples = torch.cat(out, 1)  # (n, L)
        target = torch.tensor(list(word))
        hit = (samples[:, :-1] == target).all(1) & ~_is_letter(samples[:, -1])
        c = int(hit.sum())
        for k in ks:
            sums[k] += 1.0 - (math.comb(n - c, k) / math.comb(n, k) if n - c >= k else 0.0)
    return {str(k): sums[k] / len(items) for k in ks}


def _is_letter(t: torch.Tensor) -> torch.Tensor:
    return ((t >= 65) & (t <= 90)) | ((t >= 97) & (t <= 122))


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def evaluate(m, mc_items: int = 1000, windows: int = 128, coverage_items: int = 200,
             configs=None, progress: bool = True) -> dict:
    corpus = load_corpus()
    items = build_mc_items(corpus.test_verses, mc_items)
    words = build_word_items(corpus.test_verses, coverage_items) if coverage_items else []
    records = []
    cfgs = configs or m.configs()
    for cfg in tqdm(cfgs, desc="evaluate", unit="config", disable=not progress):
        m.set_config(cfg)
        t0 = time.perf_counter()
        loss = heldout_loss(m, corpus.test, windows)
        rec = {"name": cfg.name, "depth": cfg.depth, "heads": cfg.heads, "bits": cfg.bits,
               "device": cfg.device, "layers": list(m.layers_for(cfg.depth)),
               "active_params": m.active_params(cfg), "resident_bytes": m.resident_bytes(cfg),
               "val_loss": loss, "bits_per_byte": loss / math.log(2),
               "mc_accuracy": mc_accuracy(m, items)}
        if words:
            rec["coverage_at_k"] = coverage_at_k(m, words)
        rec["eval_s"] = time.perf_counter() - t0
        records.append(rec)
        tqdm.write(f"{cfg.name:16s} loss {loss:.3f} nats/byte  bpb {rec['bits_per_byte']:.3f}  "
                   f"MC {rec['mc_accuracy']:.3f}" + (f"  cov@1 {rec['coverage_at_k']['1']:.3f} "
                                                      f"cov@8 {rec['coverage_at_k']['8']:.3f}" if words else ""))
    return {
        "schema": "wattwise.quality", "schema_version": 1,
        "checkpoint": getattr(m, "checkpoint_path", None),
        "checkpoint_sha256": file_sha256(m.checkpoint_path) if getattr(m, "checkpoint_path", None) else None,
        "corpus": corpus.source, "test_bytes": int(len(corpus.test)),
        "method": {"loss_windows": windows, "window_bytes": m.config.block_size, "mc_items": len(items),
                   "mc_chance": 0.25, "coverage_items": len(words), "coverage_samples": 8,
                   "note": "all figures on held-out test books with the inference kernels"},
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "configs": records,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Quality of every configuration on held-out text.")
    p.add_argument("--checkpoint", default=None, help="checkpoint (default: the committed one)")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="quality JSON to write")
    p.add_argument("--mc-items", type=int, default=1000, help="multiple-choice items (>= 1000 for the record)")
    p.add_argument("--windows", type=int, default=128, help="loss windows of block_size bytes")
    p.add_argument("--coverage-items", type=int, default=200, help="next-word items for coverage@k (0: skip)")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--configs", default=None, help="comma-separated config names (default: all)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    import model as M

    m = M.load(a.checkpoint) if a.checkpoint else M.load_default()
    cfgs = [m.validate(c) for c in a.configs.split(",")] if a.configs else None
    res = evaluate(m, a.mc_items, a.windows, a.coverage_items, cfgs)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    print(f"wrote {out} ({len(res['configs'])} configurations)")


if __name__ == "__main__":
    main()
