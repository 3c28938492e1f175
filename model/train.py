"""Train the elastic micro-LLM: ``python -m model.train`` reproduces the committed checkpoint.

Two phases, because making the model elastic from scratch learns nothing useful in the time
we have (measured: equal-weight sandwich training from scratch reached 1.54 nats/byte at full
depth after 11 min, plain training 1.34):

1. **Pre-train** the full model (all layers, all heads, fp32) with plain next-byte loss.
2. **Measure the depth rule**: the validation loss of every depth under each layer-selection
   rule (``model.model.active_layers``); the rule with the lowest mean loss over the
   sub-depths becomes the checkpoint's ``layer_rule``.
3. **Elastic phase** (sandwich rule with in-place distillation): every step trains the full
   fp32 model on the data, the smallest configuration (min depth, 25 % heads, int4) and
   ``n_random`` random configurations (random bits too: quantisation-aware via fake-quant with
   a straight-through gradient) on a mix of the data loss and a KL term toward the full
   model's (detached) predictions. The full model's loss carries weight 1, the
   sub-configurations share weight ``sub_weight``.

Checkpoints for resuming go to ``--run-dir``; the final weights-only checkpoint to ``--out``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from model.cli import parse_dataclass_args
from model.data import load_corpus
from model.model import LAYER_RULES, ElasticGPT, ModelConfig

DEFAULT_CHECKPOINT = Path(__file__).parent / "checkpoints" / "microlm.pt"


@dataclass
class Args:
    out: str = str(DEFAULT_CHECKPOINT)
    """where the final weights-only checkpoint is written"""
    run_dir: str = "runs/lm"
    """resumable checkpoints and the training log (JSONL) go here"""
    seed: int = 1337
    """seed for initialisation, batch sampling and sub-configuration sampling"""
    threads: int = 2
    """torch intra-op threads (this machine has 2 cores)"""
    batch_size: int = 16
    """sequences per step (each block_size bytes)"""
    pretrain_steps: int = 1300
    """phase 1: full-model steps"""
    elastic_steps: int = 450
    """phase 3: sandwich-rule steps"""
    lr: float = 1.5e-3
    """peak learning rate of phase 1 (cosine decay to lr/10)"""
    elastic_lr: float = 4e-4
    """peak learning rate of the elastic phase (cosine decay to 1/10)"""
    warmup_steps: int = 100
    """linear warm-up steps at the start of phase 1"""
    weight_decay: float = 0.1
    """AdamW weight decay on matrices (not on norms, biases, embeddings)"""
    n_random: int = 2
    """random sub-configurations per elastic step (besides full and smallest)"""
    sub_weight: float = 1.0
    """total loss weight shared by the sub-configurations (the full model has weight 1)"""
    distill: float = 0.5
    """fraction of a sub-configuration's loss that is KL to the full model (rest: data loss)"""
    eval_every: int = 250
    """steps between validation-loss checks (and resumable checkpoints)"""
    eval_batches: int = 8
    """batches of the validation books per check"""
    tiny: bool = False
    """a seconds-long smoke run with a baby model (tests)"""


def parse_args(argv: list[str] | None = None) -> Args:
    return parse_dataclass_args(Args, argv, description=__doc__.split("\n\n")[0])


def get_batch(data: np.ndarray, batch: int, T: int, rng: np.random.Generator) -> tuple:
    ix = rng.integers(0, len(data) - T - 1, size=batch)
    x = np.stack([data[i:i + T + 1] for i in ix]).astype(np.int64)
    t = torch.from_numpy(x)
    return t[:, :-1], t[:, 1:]  # (B, T), (B, T)


@torch.no_grad()
def val_loss(m: ElasticGPT, cfg: tuple, data: np.ndarray, batches: int, batch: int,
             seed: int = 0) -> float:
    """Mean next-byte loss (nats) on fixed windows of ``data`` under ``cfg``."""
    rng, T = np.random.default_rng(seed), m.config.block_size
    losses = []
    for _ in range(batches):
        x, y = get_batch(data, batch, T, rng)
        losses.append(F.cross_entropy(m.forward_train(x, cfg).flatten(0, 1), y.flatten()).item())
    return float(np.mean(losses))


def make_optimizer(m: ElasticGPT, lr: float, wd: float) -> torch.optim.Optimizer:
    decay = [p for n, p in m.named_parameters() if p.dim() == 2 and "wpe" not in n and "wte" not in n]
    rest = [p for n, p in m.named_parameters() if not (p.dim() == 2 and "wpe" not in n and "wte" not in n)]
    return torch.optim.AdamW([{"params": decay, "weight_decay": wd},
                              {"params": rest, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.95))


def cosine(step: int, total: int, peak: float, warmup: int = 0) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, p))))


def measure_layer_rules(m: ElasticGPT, data: np.ndarray, a: Args) -> dict:
    """Validation loss per (rule, depth) at full heads, fp32; the chosen rule."""
    results = {}
    for rule in LAYER_RULES:
        m.config = dataclasses.replace(m.config, layer_rule=rule)
        results[rule] = {d: val_loss(m, (d, 1.0, 32), data, a.eval_batches, a.batch_size)
                         for d in m.config.depths}
    sub = [d for d in m.config.depths if d != m.config.n_layer]
    best = min(LAYER_RULES, key=lambda r: np.mean([results[r][d] for d in sub]))
    m.config = dataclasses.replace(m.config, layer_rule=best)
    return {"val_loss_by_rule": results, "chosen": best}


def main(a: Args) -> Path:
    t_start = time.time()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    pyrng = random.Random(a.seed)
    corpus = load_corpus()
    mc = ModelConfig()
    if a.tiny:
        mc = ModelConfig(n_layer=4, n_head=4, n_embd=128, depths=(2, 3, 4))
    m = ElasticGPT(mc)
    run = Path(a.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    log = open(run / "log.jsonl", "a")
    state_path = run / "last.pt"
    total = a.pretrain_steps + a.elastic_steps
    opt = make_optimizer(m, a.lr, a.weight_decay)
    step, rules, elapsed_before = 0, None, 0.0
    if state_path.exists():  # resume
        s = torch.load(state_path, weights_only=True)
        m.load_state_dict(s["model"])
        opt.load_state_dict(s["opt"])
        step, elapsed_before = int(s["step"]), float(s["elapsed_s"])
        rules = json.loads(s["rules"]) if s["rules"] else None
        if rules:
            m.config = dataclasses.replace(m.config, layer_rule=rules["chosen"])
        rng = np.random.default_rng(a.seed + step)
        pyrng = random.Random(a.seed + step)
        print(f"resumed from {state_path} at step {step}")
    T = mc.block_size
    full, small = m.full_config(), m.smallest_config()
    all_cfgs = [c for c in m.configs() if c not in (full, small)]
    m.train()
    bar = tqdm(total=total, initial=step, desc="train", unit="step")
    t_seg = time.time()
    while step < total:
        elastic = step >= a.pretrain_steps
        if elastic and rules is None:
            m.eval()
            rules = measure_layer_rules(m, corpus.val, a)
            m.train()
            print("layer rules (val loss nats/byte):", json.dumps(rules))
            log.write(json.dumps({"step": step, "layer_rules": rules}) + "\n")
            opt = make_optimizer(m, a.elastic_lr, a.weight_decay)
        lr = (cosine(step - a.pretrain_steps, a.elastic_steps, a.elastic_lr) if elastic
              else cosine(step, a.pretrain_steps, a.lr, a.warmup_steps))
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = get_batch(corpus.train, a.batch_size, T, rng)
        logits = m.forward_train(x, full)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
        rec = {"step": step, "lr": lr, "loss_full": loss.item()}
        total_loss = loss
        if elastic:
            teacher = F.log_softmax(logits.detach(), -1)
            subs = [small] + pyrng.sample(all_cfgs, a.n_random)
            for i, c in enumerate(subs):
                lg = m.forward_train(x, c)
                ce = F.cross_entropy(lg.flatten(0, 1), y.flatten())
                kl = F.kl_div(F.log_softmax(lg, -1), teacher, log_target=True, reduction="batchmean") / T
                total_loss = total_loss + a.sub_weight / len(subs) * ((1 - a.distill) * ce + a.distill * kl)
                if i == 0:
                    rec["loss_smallest"] = ce.item()
        opt.zero_grad(set_to_none=True)
        total_loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{rec['loss_full']:.3f}", phase="elastic" if elastic else "pretrain")
        if step % a.eval_every == 0 or step == total:
            m.eval()
            rec["val_full"] = val_loss(m, full, corpus.val, a.eval_batches, a.batch_size)
            rec["val_smallest"] = val_loss(m, small, corpus.val, a.eval_batches, a.batch_size)
            m.train()
            elapsed = elapsed_before + time.time() - t_seg
            rec["elapsed_s"] = elapsed
            tqdm.write(json.dumps(rec))
            torch.save({"model": m.state_dict(), "opt": opt.state_dict(), "step": step,
                        "elapsed_s": elapsed, "rules": json.dumps(rules) if rules else ""},
                       state_path)
        log.write(json.dumps(rec) + "\n")
        log.flush()
    bar.close()
    m.eval()
    wall_s = elapsed_before + time.time() - t_seg
    meta = {"args": dataclasses.asdict(a), "layer_rules": rules, "train_wall_s": wall_s,
            "torch": str(torch.__version__), "corpus": corpus.source,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(m.checkpoint(meta), out)
    print(f"saved {out} ({out.stat().st_size / 1e6:.1f} MB) after {wall_s / 60:.1f} min "
          f"(process {(time.time() - t_start) / 60:.1f} min)")
    return out


if __name__ == "__main__":
    main(parse_args())
