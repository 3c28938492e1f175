"""Fault recovery of live placement: ≥ 1000 injected processor faults, no token lost, time to recover.

    python benchmarks/placement_faults.py [--faults 1000] [--mirror-off-faults 150] [--seed 0]
        [--processors fake-gpu|host]

The committed model runs under ``model.placement.PlacedModel`` on the **fake-GPU test double**
(``ProcessorMap.fake_gpu``: role ``gpu`` runs on the CPU; its memory is treated as device memory), one torch
thread. Generations of ``--tokens`` greedy tokens after a Genesis prompt; before each token the configuration
changes with probability 0.1 and the placement with 0.3 (a random value over cpu / cpu.t1 / gpu / A:k:B that is
available now), and with probability ``--p-fault`` one fault is armed on a processor of the current placement
(kind error / timeout / device_lost, at the enter or exit of its next or second-next segment call) — never when
only one processor is alive (nothing would be left to recover on). Faults arise in token steps and in moves.

Checked per generation: every requested token is produced (tokens lost = requested − produced), and the text
equals an **uninterrupted** run (no injector) that follows the placement and configuration sequence the faulty
run ended up with; the last logits are compared bit for bit. Time to recover = fault detection → the token's
logits on the new placement (``FaultRecord.recover_ms``, ``time.perf_counter``); a timeout is detected at its
deadline check, after the overrun. Phase 1 keeps host mirrors of device-memory segments (the default); phase 2
(``--mirror-off-faults``) turns them off and loses the fake GPU only, so its blocks are recomputed.

Quarantine uses a virtual clock (0.5 s per token) with back-off 0.5 s doubling to 4 s, forgiven after 3 s
(1–8 tokens), so that both processors keep failing and returning within a generation.
The host is a shared 2-core VM (other jobs run beside it); its load average is recorded.

``--processors host`` runs the role ``gpu`` on this machine's CUDA GPU (``ProcessorMap()``: weights copied
there, KV caches moved across, ``torch.cuda.synchronize`` in the deadline check) instead of the test double;
it refuses when torch sees no GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from model import load_default  # noqa: E402
from model.data import decode  # noqa: E402
from model.placement import (  # noqa: E402
    FAULT_KINDS,
    FaultInjector,
    PlacedModel,
    ProcessorHealth,
    ProcessorMap,
)
from model.profile_schema import _cpu_model  # noqa: E402
from runtime import placement as P  # noqa: E402
from runtime.safeio import atomic_write_text  # noqa: E402

PROMPTS = ["In the beginning God created the heaven and the earth. ", "And God said, Let there be light: ",
           "And the earth was without form, and void; ", "And God called the light Day, and the darkness "]
TOKEN_S = 0.5  # virtual seconds per token for the quarantine clock


class VClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def processors(kind: str) -> ProcessorMap:
    """``fake-gpu``: the test double (role ``gpu`` on the CPU); ``host``: this machine's CUDA GPU."""
    if kind == "fake-gpu":
        return ProcessorMap.fake_gpu(cpu_threads=1)
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks/placement_faults.py --processors host: torch sees no CUDA GPU here; use "
                         "--processors fake-gpu")
    return ProcessorMap({"cpu": "cpu", "gpu": "cuda"}, cpu_threads=1)


def generation(m, rnd: random.Random, seed: int, n_tokens: int, p_fault: float, mirror: bool, kinds, roles,
               deadline_ms, per_token_ms, clock: VClock, health: ProcessorHealth, procs_kind: str = "fake-gpu") -> dict:
    """One faulty generation and its uninterrupted replay."""
    procs = processors(procs_kind)
    inj = FaultInjector(seed=seed)
    pm = PlacedModel(m, procs, injector=inj, health=health, deadline_ms=deadline_ms,
                     deadline_ms_per_token=per_token_ms, mirror=mirror, poison_lost=True)
    T = m.config.block_size
    cfg = rnd.choice(m.configs())
    pm.set(cfg, rnd.choice([v for v in P.all_values(("cpu", "gpu"), cfg.depth) if pm.available(v, cfg.depth)[0]]))
    prompt = torch.tensor(list(rnd.choice(PROMPTS).encode()))
    logits = pm.prefill(prompt)
    schedule, tokens, armed = [("prefill", prompt.tolist(), pm._cur)], [], 0
    for _ in range(n_tokens):
        clock.t += TOKEN_S
        nxt = int(logits.argmax())
        tokens.append(nxt)
        if rnd.random() < 0.1:
            cfg = rnd.choice(m.configs())
        if rnd.random() < 0.3 or not pm.available(pm.placement, cfg.depth)[0]:
            vals = [v for v in P.all_values(("cpu", "gpu"), cfg.depth) if pm.available(v, cfg.depth)[0]]
            pm.set(cfg, rnd.choice(vals))
        else:
            pm.set(cfg)
        targets = [r for r in P.roles_of(pm.placement) if r in roles]
        if targets and len(pm.alive_roles()) > 1 and rnd.random() < p_fault:
            inj.arm(rnd.choice(targets), rnd.choice(kinds), after_calls=rnd.randint(0, 1))
            armed += 1
        if len(pm.ids) >= T:  # crop as ElasticGPT.stream: the last half, re-prefilled
            keep = (pm.ids + [nxt])[-(T // 2):]
            logits = pm.prefill(torch.tensor(keep))
            schedule.append(("prefill", keep, pm._cur))
        else:
            logits = pm.step(nxt)
            schedule.append(("step", nxt, pm._cur))
        inj.disarm()  # a fault armed on a call that did not come is dropped
    # the uninterrupted run on the resulting placement sequence
    ref = PlacedModel(m, procs, mirror=mirror)  # its own tokens and crops; only the (cfg, place) sequence is taken
    ref.set(*schedule[0][2])
    ref_logits = ref.prefill(prompt)
    ref_tokens = []
    for what, _, (c, place) in schedule[1:]:
        ref.set(c, place)
        tok = int(ref_logits.argmax())
        ref_tokens.append(tok)
        ref_logits = ref.prefill(torch.tensor((ref.ids + [tok])[-(T // 2):])) if what == "prefill" else ref.step(tok)
    return {"requested": n_tokens, "tokens": tokens, "ref_tokens": ref_tokens,
            "logits_equal": bool(torch.equal(ref_logits, logits)),
            "max_logit_diff": float((ref_logits - logits).abs().max()), "faults": pm.faults, "armed": armed,
            "fired": len(inj.fired), "late_accepted": pm.late_accepted,
            "places": Counter(p for _, _, (_, p) in schedule), "text": decode(tokens)}


def pct(xs, q) -> float:
    return float(np.percentile(np.asarray(xs, float), q)) if xs else float("nan")


def phase(m, name, target_faults, seed, args, mirror, kinds, roles) -> dict:
    rnd = random.Random(seed)
    clock = VClock()
    health = ProcessorHealth(base_s=0.5, cap_s=4.0, forgive_s=3.0, clock=clock)
    gens, faults, t0 = [], [], time.perf_counter()
    while len(faults) < target_faults:
        g = generation(m, rnd, seed * 1000 + len(gens), args.tokens, args.p_fault, mirror, kinds, roles,
                       args.deadline_ms, args.deadline_ms_per_token, clock, health, args.processors)
        gens.append(g)
        faults += g["faults"]
        print(f"{name}: generation {len(gens)}: {len(g['faults'])} faults ({len(faults)} total), text equal "
              f"{g['tokens'] == g['ref_tokens']}, {time.perf_counter() - t0:.0f} s", flush=True)
    rec = [f.recover_ms for f in faults]
    by = {}
    for key, sel in [*((f"kind {k}", lambda f, k=k: f.kind == k) for k in FAULT_KINDS),
                     *((f"restored by {r}", lambda f, r=r: f.restored == r) for r in ("copy", "mirror", "recompute"))]:
        xs = [f.recover_ms for f in faults if sel(f)]
        if xs:
            by[key] = {"n": len(xs), "p50_ms": pct(xs, 50), "p99_ms": pct(xs, 99)}
    fired = sum(g["fired"] for g in gens)
    streaks = Counter(e.streak for e in health.events)
    return {
        "name": name, "mirror": mirror, "generations": len(gens), "tokens_requested": sum(g["requested"] for g in gens),
        "tokens_produced": sum(len(g["tokens"]) for g in gens),
        "tokens_lost": sum(g["requested"] - len(g["tokens"]) for g in gens),
        "text_equal": sum(g["tokens"] == g["ref_tokens"] for g in gens),
        "logits_bit_equal": sum(g["logits_equal"] for g in gens),
        "max_last_logit_diff": max(g["max_logit_diff"] for g in gens),
        "faults": len(faults), "injected_fired": fired, "detected_not_injected": len(faults) - fired,
        "armed": sum(g["armed"] for g in gens), "recovered": len(faults),  # every step returned: each fault recovered
        "late_accepted": sum(g["late_accepted"] for g in gens),
        "by_kind": dict(Counter(f.kind for f in faults)), "by_role": dict(Counter(f.role for f in faults)),
        "by_restore": dict(Counter(f.restored for f in faults)),
        "recover_ms": {"p50": pct(rec, 50), "p99": pct(rec, 99), "max": max(rec) if rec else float("nan")},
        "recover_ms_by": by,
        "quarantine_events": len(health.events), "quarantine_streaks": dict(sorted(streaks.items())),
        "longest_backoff_s": max((e.backoff_s for e in health.events), default=0.0),
        "placements_run": dict(sum((g["places"] for g in gens), Counter()).most_common()),
        "wall_s": time.perf_counter() - t0, "sample_text": gens[0]["text"][:160],
    }


def fmt(d: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in d.items())


def markdown(res: dict) -> str:
    h = res["host"]
    lines = [f"# Placement faults: recovery on the surviving processor ({res['date']}, {h['cpu']}, "
             f"{h['cores']} logical cores, Python {h['python']}, torch {h['torch']})", "",
             f"`python benchmarks/placement_faults.py {res['argv']}` — the committed model, greedy, "
             f"{res['args']['tokens']} tokens per generation, one torch thread, "
             + ("**fake-GPU test double** (role `gpu` runs on the CPU; its memory is treated as device memory)"
                if res["args"].get("processors", "fake-gpu") == "fake-gpu" else
                f"role `gpu` on this machine's CUDA GPU ({res.get('gpu') or 'cuda'})") + ". Load average "
             f"{h['load_start']} at start, {h['load_end']} at the end (shared host: other jobs ran beside it, so "
             "times are upper bounds of this machine's quiet figures).", "",
             f"Deadline per segment call: {res['args']['deadline_ms']:g} ms + "
             f"{res['args']['deadline_ms_per_token']:g} ms per token position in the call. Quarantine: back-off 0.5 s "
             "doubling to 4 s, forgiven after 3 s, on a virtual clock of 0.5 s per token (1–8 tokens).", "",
             "| phase | faults | recovered | tokens lost | text = uninterrupted run | last logits bit-equal | "
             "time to recover p50 / p99 / max (ms) | quarantine events | detected, not injected |",
             "|---|---|---|---|---|---|---|---|---|"]
    for p in res["phases"]:
        r = p["recover_ms"]
        lines.append(f"| {p['name']} | {p['faults']} | {p['recovered']} ({100 * p['recovered'] / p['faults']:.0f} %) | "
                     f"{p['tokens_lost']} of {p['tokens_requested']} | {p['text_equal']} of {p['generations']} "
                     f"generations | {p['logits_bit_equal']} of {p['generations']} | {r['p50']:.2f} / {r['p99']:.2f} / "
                     f"{r['max']:.2f} | {p['quarantine_events']} | {p['detected_not_injected']} |")
    for p in res["phases"]:
        lines += ["", f"## {p['name']}", "",
                  f"Faults by kind: {fmt(p['by_kind'])}; by processor: {fmt(p['by_role'])}; caches restored by: "
                  f"{fmt(p['by_restore'])}; quarantines by faults in a row: {fmt(p['quarantine_streaks'])} "
                  f"(longest back-off {p['longest_backoff_s']:g} s); "
                  f"late calls kept on the only processor alive: {p['late_accepted']}; largest |Δ| of the last logits "
                  f"vs the uninterrupted run {p['max_last_logit_diff']:.2g}; {p['generations']} generations, "
                  f"{p['wall_s']:.0f} s.", "",
                  "| faults | n | time to recover p50 (ms) | p99 (ms) |", "|---|---|---|---|"]
        for k, v in p["recover_ms_by"].items():
            lines.append(f"| {k} | {v['n']} | {v['p50_ms']:.2f} | {v['p99_ms']:.2f} |")
        lines += ["", "Placements the tokens ran under: " + ", ".join(f"`{k}` {v}" for k, v in
                                                                      p["placements_run"].items()) + "."]
    lines += ["", f"First generation's text (phase 1): `{res['phases'][0]['sample_text']!r}`", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--faults", type=int, default=1000, help="faults to reach in phase 1 (host mirrors on)")
    p.add_argument("--mirror-off-faults", type=int, default=150, help="device-lost faults in phase 2 (no mirrors)")
    p.add_argument("--tokens", type=int, default=240, help="tokens per generation")
    p.add_argument("--p-fault", type=float, default=0.8, help="probability of arming a fault before a token")
    p.add_argument("--deadline-ms", type=float, default=60.0)
    p.add_argument("--deadline-ms-per-token", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/results/placement_faults", help="path without suffix (.md, .json)")
    p.add_argument("--processors", choices=("fake-gpu", "host"), default="fake-gpu",
                   help="the gpu role on the CPU test double (default) or on this machine's CUDA GPU")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    load_start = [round(x, 2) for x in os.getloadavg()]
    m = load_default()
    phases = [phase(m, "phase 1: host mirrors on (default), every kind on both processors", a.faults, a.seed, a,
                    True, FAULT_KINDS, ("cpu", "gpu"))]
    if a.mirror_off_faults > 0:
        phases.append(phase(m, "phase 2: mirrors off, the fake GPU lost (its blocks recomputed)", a.mirror_off_faults,
                            a.seed + 1, a, False, ("device_lost",), ("gpu",)))
    res = {"date": time.strftime("%Y-%m-%d"), "argv": " ".join(argv if argv is not None else sys.argv[1:]),
           "args": vars(a),
           "host": {"cpu": _cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
                    "torch": torch.__version__, "threads": 1, "load_start": load_start,
                    "load_end": [round(x, 2) for x in os.getloadavg()]},
           "processors": processors(a.processors).describe(), "phases": phases,
           "gpu": torch.cuda.get_device_name(0) if a.processors == "host" else None}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out.with_suffix(".md"), markdown(res))
    atomic_write_text(out.with_suffix(".json"), json.dumps(res, indent=1, default=str) + "\n")
    ok = all(ph["tokens_lost"] == 0 and ph["text_equal"] == ph["generations"] for ph in phases)
    print(markdown(res))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
