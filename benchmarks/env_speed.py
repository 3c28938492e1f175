"""Environment speed, like for like: one MicroLLMPowerEnv against Gymnasium's CartPole-v1 in the same
process — unwrapped against unwrapped, ``gymnasium.make`` against ``gymnasium.make`` — and the batched
numpy form at several batch sizes.

    python benchmarks/env_speed.py [--steps 200000] [--profile PATH] [--repeats 3]

Random actions are drawn up front so the policy costs nothing. Ours and CartPole are timed
alternately, ``--repeats`` pairs of ``--steps`` steps; a rate is the best of its runs (the least
disturbed by the rest of the machine) and a ratio the median over the pairs of ours / CartPole, so
that a slow spell of a shared machine falls on both. ``gymnasium.make`` adds TimeLimit /
OrderEnforcing / PassiveEnvChecker to
both. Batched: env-steps/s = batch × calls/s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import gymnasium as gym
import numpy as np

import envs
from envs.batched import BatchedPowerEnv
from model.profile_schema import _cpu_model


def rate(env, steps: int, actions) -> float:
    env.reset(seed=0)
    step = env.step
    t0 = time.perf_counter()
    for k in range(steps):
        _, _, term, trunc, _ = step(actions[k])
        if term or trunc:
            env.reset()
    return steps / (time.perf_counter() - t0)


def paired(a, b, steps: int, acts_a, acts_b, repeats: int) -> tuple[float, float, float]:
    """Rates of two envs measured alternately (a, b, a, b, …, ``repeats`` pairs of ``steps`` steps),
    so that a slower or faster spell of the machine falls on both: (best rate of a, best rate of b,
    median over pairs of rate a / rate b)."""
    rate(a, min(steps, 20_000), acts_a)  # warm-up: the first pass pays for caches and allocations
    rate(b, min(steps, 20_000), acts_b)
    ra, rb = [], []
    for _ in range(repeats):
        ra.append(rate(a, steps, acts_a))
        rb.append(rate(b, steps, acts_b))
    return max(ra), max(rb), float(np.median(np.array(ra) / np.array(rb)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=20_000, help="steps per timed run")
    p.add_argument("--repeats", type=int, default=25, help="timed runs (pairs)")
    p.add_argument("--profile", default=None)
    p.add_argument("--out", default="benchmarks/results/env_speed.json")
    a = p.parse_args()
    kw = {"profile": a.profile} if a.profile else {}
    ours, cart = gym.make(envs.ENV_ID, **kw), gym.make("CartPole-v1")
    acts = np.random.default_rng(0).integers(0, ours.action_space.n, a.steps).tolist()
    acts_cp = [k % 2 for k in range(a.steps)]
    res = {"steps": a.steps, "repeats": a.repeats, "date": time.strftime("%Y-%m-%d"),
           "machine": f"{_cpu_model()}, {os.cpu_count()} logical cores, Python {platform.python_version()}, "
                      f"numpy {np.__version__}",
           "gymnasium": gym.__version__,
           "batched": {}}
    res["single_unwrapped_steps_per_s"], res["cartpole_v1_unwrapped_steps_per_s"], res["ratio_unwrapped"] = paired(
        ours.unwrapped, cart.unwrapped, a.steps, acts, acts_cp, a.repeats)
    res["single_gym_make_steps_per_s"], res["cartpole_v1_gym_make_steps_per_s"], res["ratio_gym_make"] = paired(
        ours, cart, a.steps, acts, acts_cp, a.repeats)
    for b in (16, 256, 4096):
        env = BatchedPowerEnv(n_envs=b, **kw)
        env.reset()
        calls = max(50, 10 * a.steps // b)
        acts_b = np.random.default_rng(1).integers(0, ours.action_space.n, (calls, b))
        for c in range(min(calls, 20)):
            env.step(acts_b[c])
        runs = []
        for _ in range(7):
            t0 = time.perf_counter()
            for c in range(calls):
                env.step(acts_b[c])
            runs.append(b * calls / (time.perf_counter() - t0))
        res["batched"][str(b)] = max(runs)
    print(json.dumps(res, indent=1))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
