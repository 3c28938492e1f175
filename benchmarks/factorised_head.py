"""Flat, factorised and joint action heads: MaskablePPO on the phone's placement profile (issue 16 item 3).

    python benchmarks/factorised_head.py [--steps 1e6] [--seeds 1 2] [--heads flat factorised joint]
        [--out benchmarks/results/factorised_head]

Both heads use the same hyperparameters (``agents/hyperparams/maskable_ppo.yml``, through
``train.load_hyperparams`` and ``train.make_agent``), the same batched env, the same VecNormalize and the
same steps. The profile is ``profiles/phone-sd8gen2+place.json``: 464 configurations, i.e. 464 logits
flat against 4 + 4 + 3 + 17 = 28 factorised; the joint head (``agents.joint_head``) has the factorised head's 28
rows of weights and the flat head's 464 masked logits (their sums). Processor outages are on
(``EnvParams.avail``: busy 2x/h, lost 0.1x/h), as in ``benchmarks/placement_rl.py``. Each policy is trained,
then evaluated on the default test split (every trace from row 0, 720 steps) next to schedutil, qeil-greedy
and the oracle (grid 51x13x5). Reported: the oracle-normalised score, training wall time and steps/s. Writes OUT.json
and OUT.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PROFILE = REPO / "profiles" / "phone-sd8gen2+place.json"


def train_one(head: str, seed: int, steps: int, params):
    import torch
    from stable_baselines3.common.vec_env import VecMonitor, VecNormalize

    import train
    from agents.factorised import FactorisedController, FactorisedVecEnv
    from agents.run_io import PolicyController
    from envs.batched import BatchedPowerEnv

    torch.set_num_threads(1)
    hp = train.load_hyperparams("maskable_ppo")
    n_envs = int(hp.pop("n_envs", 64))
    hp.pop("n_timesteps", None)
    norm_obs, norm_rew = bool(hp.pop("normalize_obs", True)), bool(hp.pop("normalize_reward", False))
    venv = BatchedPowerEnv(n_envs=n_envs, profile=str(PROFILE), split="train", seed=seed, params=params)
    space = venv.ref.space
    inner = FactorisedVecEnv(venv) if head == "factorised" else venv
    env = VecNormalize(VecMonitor(inner), norm_obs=norm_obs, norm_reward=norm_rew, gamma=hp.get("gamma", 0.99))
    model = train.make_agent("maskable_ppo", env, dict(hp), seed, None)
    if head in ("joint", "hybrid"):
        from agents.joint_head import install_joint_head

        install_joint_head(model, space, residual=head == "hybrid")
    t0 = time.time()
    model.learn(total_timesteps=steps)
    wall = time.time() - t0
    stats = {"mean": env.obs_rms.mean, "var": env.obs_rms.var, "epsilon": env.epsilon, "clip_obs": env.clip_obs,
             "norm_obs": env.norm_obs}  # agents.run_io.normalize_obs's keys
    model.policy.set_training_mode(False)
    if head == "factorised":
        ctrl = FactorisedController(model.policy, stats, space, name=f"rl:factorised-s{seed}")
    else:
        ctrl = PolicyController(model.policy, stats, name=f"rl:{head}-s{seed}", uses_masks=True)
    return ctrl, wall


def main(argv=None) -> int:
    import gymnasium as gym

    import envs
    from agents.evaluate import evaluate_controllers
    from agents.registry import make_controller
    from runtime.dynamics import Availability, EnvParams

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=float, default=1e6)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1])
    ap.add_argument("--heads", nargs="+", default=["flat", "factorised", "joint"],
                    choices=["flat", "factorised", "joint", "hybrid"])
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "factorised_head"))
    a = ap.parse_args(argv)
    params = EnvParams(avail=Availability(busy_per_h=2.0, busy_mean_s=300.0, lost_per_h=0.1))
    runs, ctrls = [], {}
    for seed in a.seeds:
        for head in a.heads:
            ctrl, wall = train_one(head, seed, int(a.steps), params)
            ctrls[ctrl.name] = ctrl
            runs.append({"head": head, "seed": seed, "steps": int(a.steps), "train_s": wall,
                         "steps_per_s": a.steps / wall})
            print(f"{ctrl.name}: {wall:.0f} s", file=sys.stderr)

    def factory():
        return gym.make(envs.ENV_ID, profile=str(PROFILE), params=params, split="test", random_start=False).unwrapped

    for n in ("random", "schedutil", "qeil-greedy"):
        ctrls[n] = (lambda env, n=n: make_controller(n, env))
    ctrls["oracle"] = lambda env: make_controller("oracle", env, n_soc=51, n_temp=13, n_backlog=5)
    res = evaluate_controllers(factory, ctrls, max_steps=720, progress=True)
    pol = res["policies"]
    data = {"date": time.strftime("%Y-%m-%d"), "host": platform.processor() or platform.machine(),
            "profile": str(PROFILE.relative_to(REPO)), "runs": runs,
            "scores": {k: {"score": v["score"], "return": v["return"], "deaths": v["deaths"], "ipj": v["ipj"]}
                       for k, v in pol.items()}}
    out = Path(a.out)
    out.with_suffix(".json").write_text(json.dumps(data, indent=1))
    lines = [f"# Action heads: {', '.join(a.heads)} ({data['date']})", "",
             f"MaskablePPO, `agents/hyperparams/maskable_ppo.yml`, {int(a.steps):,} steps per run, profile "
             f"`{data['profile']}` (464 configurations: 464 flat logits, 28 factorised, joint 28 summed into 464), "
             "outages on; default test "
             "split, 720 steps, oracle grid 51x13x5. Host: 2 cores, one torch thread per run. "
             "Generated by `benchmarks/factorised_head.py`.", "",
             "| policy | score | return | deaths | IPJ | train wall (s) | steps/s |", "|---|---|---|---|---|---|---|"]
    walls = {f"rl:{r['head']}-s{r['seed']}": r for r in runs}
    for k, v in data["scores"].items():
        r = walls.get(k)
        lines.append(f"| {k} | {v['score']:.3f} | {v['return']:.2f} | {v['deaths']} | {v['ipj']:.2f} | "
                     + (f"{r['train_s']:.0f} | {r['steps_per_s']:.0f} |" if r else "| |"))
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    _ = np
    return 0


if __name__ == "__main__":
    sys.exit(main())
