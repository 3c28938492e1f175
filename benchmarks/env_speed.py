"""Environment speed: steps/s of one MicroLLMPowerEnv in-process and of the batched numpy form.

    python benchmarks/env_speed.py [--steps 200000] [--profile PATH]

Reported: the raw env (``env.unwrapped.step``), the env through ``gymnasium.make`` (with its
TimeLimit / OrderEnforcing / PassiveEnvChecker wrappers), Gymnasium's CartPole-v1 on the same
machine for scale, and ``BatchedPowerEnv`` at several batch sizes (env-steps/s = batch × calls/s).
Random actions are drawn up front so the policy costs nothing.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import gymnasium as gym
import numpy as np

import envs
from envs.batched import BatchedPowerEnv


def rate(env, steps: int, actions) -> float:
    env.reset(seed=0)
    t0 = time.perf_counter()
    for k in range(steps):
        _, _, term, trunc, _ = env.step(actions[k])
        if term or trunc:
            env.reset()
    return steps / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=200_000)
    p.add_argument("--profile", default=None)
    p.add_argument("--out", default="benchmarks/results/env_speed.json")
    a = p.parse_args()
    kw = {"profile": a.profile} if a.profile else {}
    made = gym.make(envs.ENV_ID, **kw)
    n = made.action_space.n
    acts = np.random.default_rng(0).integers(0, n, a.steps).tolist()
    rate(made.unwrapped, min(a.steps, 20_000), acts)  # warm-up: the first pass pays for caches and allocations
    res = {"steps": a.steps,
           "single_unwrapped_steps_per_s": rate(made.unwrapped, a.steps, acts),
           "single_gym_make_steps_per_s": rate(made, a.steps, acts),
           "cartpole_v1_gym_make_steps_per_s": rate(gym.make("CartPole-v1"), a.steps, [k % 2 for k in range(a.steps)]),
           "batched": {}}
    for b in (16, 256, 4096):
        env = BatchedPowerEnv(n_envs=b, **kw)
        env.reset()
        calls = max(20, a.steps // b)
        acts_b = np.random.default_rng(1).integers(0, n, (calls, b))
        t0 = time.perf_counter()
        for c in range(calls):
            env.step(acts_b[c])
        res["batched"][str(b)] = b * calls / (time.perf_counter() - t0)
    print(json.dumps(res, indent=1))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
