"""How often a factorised policy's choice is one the action mask forbids, and what runs instead.

    python benchmarks/factorised_remaps.py --run runs/<run> [--run ...] [--traces data/real] [--split test]
                                           [--max-steps 720] [--out benchmarks/results/factorised_remaps.md]

A factorised action head (``--action-head factorised``) picks one value per knob family under per-family masks:
value ``v`` of a family is allowed when *some* allowed configuration has it (``runtime.factorised``). When the mask
forbids a configuration whose values are each allowed on their own (near the trip point: ``L6-H100-int8`` is
forbidden, ``L6-H100-int4`` and ``L3-H100-int8`` are not), the joint choice is forbidden, and
``Factorisation.index`` runs the allowed configuration nearest to it in value steps (ties to the lower index),
whatever the quality of that configuration. A flat head chooses among the allowed configurations directly.

For each run (a train.py run folder with the factorised head): every episode of the split from row 0, the policy
acting deterministically as ``agents.evaluate`` runs it. Reported per run: steps, steps with a mask that forbids
something, the policy's forbidden joint choices, the quality per token lost on them (the policy's own choice's
quality less what ran, the profile's), and the most frequent (chosen → run) pairs; per episode the same counts.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def remaps(run: str, traces: str | None, split: str, max_steps: int) -> dict:
    """The counts of the module docstring for one run folder."""
    from agents.run_io import env_from_config, load_config, load_controller, normalize_obs

    cfg = load_config(run)
    if cfg.get("action_head", "flat") != "factorised":
        raise SystemExit(f"--run {run}: trained with the {cfg.get('action_head', 'flat')} head; this counts the "
                         "factorised head's forbidden joint choices (fix: pass a run trained with "
                         "--action-head factorised)")
    over = {"split": split, "random_start": False}
    if traces:
        over["traces"] = traces
    env = env_from_config(cfg, **over)
    ctrl = load_controller(run)
    fac, names, quality = ctrl.fac, list(env.costs.names), np.asarray(env.costs.quality)
    pairs: Counter = Counter()
    episodes = []
    tot = {"steps": 0, "masked_steps": 0, "forbidden": 0, "quality_lost": 0.0}
    for k, tr in enumerate(env.traces):
        obs, _ = env.reset(options={"trace": k, "start": 0})
        ep = {"trace": tr.name, "steps": 0, "masked_steps": 0, "forbidden": 0}
        for _ in range(max_steps):
            m = env.action_masks()
            o = normalize_obs(np.asarray(obs, dtype=np.float64), ctrl.stats)
            act, _ = ctrl.policy.predict(o, deterministic=True, action_masks=fac.masks(m[None])[0])
            act = np.asarray(act).reshape(1, -1)
            chosen = int(fac.index(act)[0])  # the configuration of its knob values, mask aside
            ran = int(fac.index(act, m[None])[0])
            ep["steps"] += 1
            ep["masked_steps"] += int(not m.all())
            if chosen != ran:
                ep["forbidden"] += 1
                tot["quality_lost"] += float(quality[chosen] - quality[ran])
                pairs[(names[chosen], names[ran])] += 1
            obs, _, term, trunc, _ = env.step(ran)
            if term or trunc:
                break
        for key in ("steps", "masked_steps", "forbidden"):
            tot[key] += ep[key]
        episodes.append(ep)
    return {"run": str(run), **tot, "pairs": [[a, b, n] for (a, b), n in pairs.most_common(10)],
            "episodes": episodes}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", action="append", required=True, help="train.py run folder (factorised head); repeatable")
    p.add_argument("--traces", default=None, help="trace-set folder (default: the run's)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--max-steps", type=int, default=720)
    p.add_argument("--out", default=None, help="Markdown report (a .json beside it); default: print only")
    a = p.parse_args(argv)
    if a.max_steps < 1:
        p.error(f"argument --max-steps: must be >= 1, got {a.max_steps}")
    for r in a.run:
        if not (Path(r) / "config.json").is_file():
            p.error(f"argument --run: {r}: no config.json there; fix: pass a run folder written by train.py")
    res = [remaps(r, a.traces, a.split, a.max_steps) for r in a.run]
    lines = ["| run | steps | steps with a mask | forbidden joint choices | quality/token lost on them (sum) "
             "| most frequent: chosen → run |", "|---|---|---|---|---|---|"]
    for r in res:
        top = "; ".join(f"{x} → {y} ({n})" for x, y, n in r["pairs"][:3])
        lines.append(f"| `{Path(r['run']).name}` | {r['steps']} | {r['masked_steps']} | {r['forbidden']} "
                     f"| {r['quality_lost']:.2f} | {top} |")
    from runtime.safeio import write_table_and_json

    write_table_and_json(a.out, "\n".join(lines) + "\n", res)


if __name__ == "__main__":
    main()
