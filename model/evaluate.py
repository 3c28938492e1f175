"""Quality of every configuration on held-out text: ``python -m model.evaluate --out quality.json``.

Three measures, all on the test books (``model.data.TEST_BOOKS``) that training never sees,
all computed with the *inference* path (the packed int8/int4 kernels, not fake-quant):

* **val_loss / bits_per_byte** — mean next-byte cross-entropy (nats) over fixed windows of
  the test text; bits per byte = nats / ln 2.
* **mc_accuracy** — a HellaSwag-style multiple-choice continuation benchmark built from the
  test verses: the context is the last 64 bytes before a cut inside a verse (earlier verses fill
  it; the cut is at a word boundary); the four candidates are the next ≤ 40 bytes of that verse
  (cut at a word boundary) and the same-position pieces of three other test verses of the
  closest lengths. Each candidate is scored per byte by its log-likelihood given the context
  minus its log-likelihood given a bare line start (the completion's unconditional probability,
  as GPT-3 normalised several of its multiple-choice tasks; lm-eval-harness ``acc_mutual_info``);
  the plain per-byte log-likelihood score is reported as ``mc_accuracy_norm``. Chance = 25 %.
* **coverage_at_k** — inference-time scaling: for held-out contexts cut before a word, the
  probability that at least one of k sampled continuations (temperature 1) reproduces the
  true next word, estimated without bias from n = 8 samples per item
  (pass@k = 1 − C(n−c, k) / C(n, k)), for k ∈ {1, 2, 4, 8}.

The item sets are deterministic (seeded) so every configuration sees the same items.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from model.cli import nonneg_int, positive_int
from model.data import load_corpus
from runtime.safeio import file_sha256  # noqa: F401 - re-exported: train.py imports it from here

DEFAULT_OUT = Path(__file__).parent / "results" / "quality.json"


@dataclass(frozen=True)
class MCItem:
    context: bytes
    candidates: tuple[bytes, bytes, bytes, bytes]
    answer: int


def build_mc_items(verses: tuple[str, ...], n: int = 1000, seed: int = 0,
                   context_bytes: int = 64, candidate_bytes: int = 40,
                   max_candidate_bytes: int = 150) -> list[MCItem]:
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
    endings = [(i, _cut_words(verses[i][s:], candidate_bytes)) for i, s in cands]
    lengths = np.array([len(e) for _, e in endings])
    items = []
    for k in order:
        i, s = cands[k]
        ctx = ("\n".join(verses[i - 3:i]) + "\n" + verses[i][:s])[-context_bytes:]
        true = _cut_words(verses[i][s:], candidate_bytes)
        # distractors: 3 other endings whose length is closest to the true one's
        near = np.argsort(np.abs(lengths - len(true)) + rng.random(len(lengths)) * 0.5)
        picks = [endings[j][1] for j in near if endings[j][0] != i and endings[j][1] != true][:3]
        answer = int(rng.integers(4))
        options = picks[:answer] + [true] + picks[answer:]
        items.append(MCItem(ctx.encode(), tuple(o.encode() for o in options), answer))
    return items


def _cut_words(text: str, n: int) -> str:
    """The first ``n`` characters of ``text`` or fewer, ending at a word boundary."""
    if len(text) <= n:
        return text
    j = text.rfind(" ", 0, n + 1)
    return text[:j] if j > 8 else text[:n]


@torch.no_grad()
def _candidate_logprob(m, prefixes: list[bytes], cands: list[bytes]) -> torch.Tensor:
    """Sum of log p(candidate bytes | prefix) per row, one batched forward (right-padded)."""
    seqs = [p + c for p, c in zip(prefixes, cands)]
    T = max(len(s) for s in seqs)
    x = torch.zeros(len(seqs), T, dtype=torch.long)
    for r, s in enumerate(seqs):
        x[r, :len(s)] = torch.frombuffer(bytearray(s), dtype=torch.uint8).long()
    lp = F.log_softmax(m.forward(x[:, :-1]), -1).gather(-1, x[:, 1:, None])[..., 0]  # (N, T-1)
    return torch.stack([lp[r, len(p) - 1:len(p) - 1 + len(c)].sum() for r, (p, c) in enumerate(zip(prefixes, cands))])


@torch.no_grad()
def mc_accuracy(m, items: list[MCItem], batch_items: int = 32) -> dict[str, float]:
    """Multiple-choice accuracy under two length-normalised scores (per byte):

    * ``pmi``: (log p(cand | context) − log p(cand | "\\n")) / bytes — the conditional
      log-likelihood normalised by the candidate's unconditional one (GPT-3's "normalised by the
      unconditional probability of each completion"; lm-eval-harness ``acc_mutual_info``). This
      is the reported ``mc_accuracy``: without it, generic KJV phrases ("and the LORD said unto
      Moses") win on prior likelihood whatever the context.
    * ``norm``: log p(cand | context) / bytes (lm-eval-harness ``acc_norm``-style), reported as
      ``mc_accuracy_norm``.
    """
    hits = {"pmi": 0, "norm": 0}
    for b0 in range(0, len(items), batch_items):
        chunk = items[b0:b0 + batch_items]
        cands = [c for it in chunk for c in it.candidates]
        cond = _candidate_logprob(m, [it.context for it in chunk for _ in range(4)], cands)
        unc = _candidate_logprob(m, [b"\n"] * len(cands), cands)
        nbytes = torch.tensor([len(c) for c in cands], dtype=torch.float)
        for key, score in (("pmi", (cond - unc) / nbytes), ("norm", cond / nbytes)):
            pred = score.view(len(chunk), 4).argmax(-1).tolist()
            hits[key] += sum(int(p) == it.answer for p, it in zip(pred, chunk))
    return {k: v / len(items) for k, v in hits.items()}


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




def evaluate(m, mc_items: int = 1000, windows: int = 128, coverage_items: int = 100,
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
        rec = {"name": m.name(cfg), "depth": cfg.depth, "heads": cfg.heads, "bits": cfg.bits,
               "device": "cpu", "layers": list(m.layers_for(cfg.depth)),
               "active_params": m.active_params(cfg), "resident_bytes": m.resident_bytes(cfg),
               "val_loss": loss, "bits_per_byte": loss / math.log(2)}
        mc = mc_accuracy(m, items)
        rec["mc_accuracy"], rec["mc_accuracy_norm"] = mc["pmi"], mc["norm"]
        if words:
            rec["coverage_at_k"] = coverage_at_k(m, words)
        rec["eval_s"] = time.perf_counter() - t0
        records.append(rec)
        cov = (f"  cov@1 {rec['coverage_at_k']['1']:.3f} cov@8 {rec['coverage_at_k']['8']:.3f}"
               if words else "")
        tqdm.write(f"{m.name(cfg):16s} loss {loss:.3f} nats/byte  bpb {rec['bits_per_byte']:.3f}  "
                   f"MC {rec['mc_accuracy']:.3f} (norm {rec['mc_accuracy_norm']:.3f})" + cov)
    return {
        "schema": "wattwise.quality", "schema_version": 1,
        "checkpoint": getattr(m, "checkpoint_path", None),
        "checkpoint_sha256": (getattr(m, "checkpoint_sha256", None) or file_sha256(m.checkpoint_path))
        if getattr(m, "checkpoint_path", None) else None,  # the bytes the model was loaded from (model.load)
        "corpus": corpus.source, "test_bytes": int(len(corpus.test)),
        "method": {"loss_windows": windows, "window_bytes": m.config.block_size, "mc_items": len(items),
                   "mc_chance": 0.25, "mc_context_bytes": len(items[0].context), "mc_candidate_bytes_max": 40,
                   "mc_score": "mc_accuracy: per-byte log p(cand|ctx) - log p(cand|newline) (mutual-info "
                               "normalised); mc_accuracy_norm: per-byte log p(cand|ctx)",
                   "coverage_items": len(words), "coverage_samples": 8,
                   "note": "all figures on held-out test books with the inference kernels"},
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "configs": records,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Quality of every configuration on held-out text.")
    p.add_argument("--checkpoint", default=None, help="checkpoint (default: the committed one)")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="quality JSON to write")
    p.add_argument("--mc-items", type=positive_int, default=1000,
                   help="multiple-choice items (>= 1; >= 1000 for the record)")
    p.add_argument("--windows", type=positive_int, default=128, help="loss windows of block_size bytes (>= 1)")
    p.add_argument("--coverage-items", type=nonneg_int, default=100,
                   help="next-word items for coverage@k (0: skip)")
    p.add_argument("--threads", type=positive_int, default=2, help="torch threads (>= 1)")
    p.add_argument("--configs", default=None, help="comma-separated config names (default: all)")
    p.add_argument("--force", action="store_true", help="replace an existing --out file")
    a = p.parse_args(argv)
    from runtime.safeio import atomic_write_text, refuse_existing

    try:  # before the model is loaded
        out = refuse_existing(a.out, a.force, "quality file")
    except FileExistsError as exc:
        raise SystemExit(f"python -m model.evaluate: {exc}") from None
    torch.set_num_threads(a.threads)
    import model as M

    m = M.load(a.checkpoint) if a.checkpoint else M.load_default()
    try:
        cfgs = [m.validate(c) for c in a.configs.split(",")] if a.configs else None
    except ValueError as exc:
        p.error(f"argument --configs: {exc}")
    res = evaluate(m, a.mc_items, a.windows, a.coverage_items, cfgs)
    atomic_write_text(out, json.dumps(res, indent=1))
    print(f"wrote {out} ({len(res['configs'])} configurations)")


if __name__ == "__main__":
    main()
