"""What the rule hint (``--env.rule-hint``) costs the batched env, like for like: the main job's environment
(``train.MAIN_JOB_ENV``) with and without the hint, the same seed, batch and random actions, timed alternately.

    python benchmarks/rule_hint_speed.py [--n-envs 64] [--calls 300] [--repeats 7] [--hot-frac 0.3]

The hint needs every observation's action mask (``BatchedPowerEnv._masks``) and the rule's vectorised choice,
so its cost grows with the share of envs near a limit: ``--hot-frac`` (training's weather randomisation) sets it.
Each step is followed by ``action_masks()``, as MaskablePPO does (with the hint they reuse the observation's).
A rate is the best of ``--repeats`` runs; the ratio is the median over the pairs, so that a slow spell of the
machine falls on both. Writes ``--out`` (JSON) and prints a line.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import platform
import time
from pathlib import Path

import numpy as np

from envs.batched import BatchedPowerEnv
from model.profile_schema import _cpu_model


def rate(env: BatchedPowerEnv, actions: np.ndarray) -> float:
    env.reset()
    t0 = time.perf_counter()
    for a in actions:
        env.step(a)
        env.action_masks()  # as MaskablePPO asks for them after every step
    return actions.size / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n-envs", type=int, default=64, help="batch size (the main job's YAML: 64)")
    p.add_argument("--calls", type=int, default=300, help="step calls per timed run")
    p.add_argument("--repeats", type=int, default=7, help="timed runs (pairs)")
    p.add_argument("--hot-frac", type=float, default=0.3, help="share of hot episodes (train.py --hot-frac)")
    p.add_argument("--out", default="benchmarks/results/rule_hint_speed.json")
    a = p.parse_args(argv)
    from train import MAIN_JOB_ENV

    envs = {hint: BatchedPowerEnv(n_envs=a.n_envs, split="train", seed=0, hot_frac=a.hot_frac,
                                  params=dataclasses.replace(MAIN_JOB_ENV, rule_hint=hint)) for hint in (False, True)}
    n_act = envs[False].action_space.n
    actions = np.random.default_rng(0).integers(0, n_act, (a.calls, a.n_envs))
    for env in envs.values():  # warm-up
        rate(env, actions[: max(1, a.calls // 10)])
    r = {False: [], True: []}
    for _ in range(a.repeats):
        for hint in (False, True):
            r[hint].append(rate(envs[hint], actions))
    ratio = float(np.median(np.array(r[True]) / np.array(r[False])))
    res = {"date": datetime.date.today().isoformat(), "host": f"{_cpu_model()} ({platform.machine()})",
           "n_envs": a.n_envs, "calls": a.calls, "repeats": a.repeats, "hot_frac": a.hot_frac,
           "env_steps_per_s_without_hint": max(r[False]), "env_steps_per_s_with_hint": max(r[True]),
           "ratio_with_over_without": ratio}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1) + "\n")
    print(f"batched env, {a.n_envs} envs, hot-frac {a.hot_frac}: {max(r[False]) / 1e3:.0f} k env-steps/s without the "
          f"hint, {max(r[True]) / 1e3:.0f} k with it (ratio {ratio:.2f}, median of {a.repeats} pairs); wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
