"""Speed of this tree against an earlier revision, measured alternately in one run.

    python benchmarks/compare_revisions.py --rev 5f16202 [--rounds 10] [--out results/revisions.json]

Checks the revision out into a temporary git worktree and runs the same measurements in fresh
processes of both trees, alternating (old, new, old, new, …), so a slow spell of a shared machine
falls on both; reports the medians and the median of the per-round ratios new / old:

* ``env_step_us``: one ``MicroLLMPowerEnv.step`` (unwrapped, random actions, resets included);
* ``batched_4096_us``: one ``BatchedPowerEnv.step`` at 4096 envs;
* ``policy_act_us`` / ``decide_us``: ``NumpyPolicy.act`` and ``RuntimeManager.decide`` medians
  (``deploy.bench_policy_only`` / ``deploy.bench_decisions``) on the committed policy file.

The worktree is removed afterwards. Nothing of the old revision is kept.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
POLICY = "reports/real-oracle-dagger-only-seed3/policy.npz"
SNIPPET = r"""
import json, time, numpy as np, gymnasium as gym, envs, deploy
from envs.batched import BatchedPowerEnv
def loop(env, acts):
    env.reset(seed=0); step = env.step; t0 = time.perf_counter()
    for a in acts:
        _, _, te, tr, _ = step(a)
        if te or tr: env.reset()
    return (time.perf_counter() - t0) / len(acts) * 1e6
e = gym.make(envs.ENV_ID).unwrapped
acts = np.random.default_rng(0).integers(0, e.action_space.n, 20000).tolist()
loop(e, acts)
env_us = min(loop(e, acts) for _ in range(3))
b = BatchedPowerEnv(n_envs=4096); b.reset()
A = np.random.default_rng(1).integers(0, e.action_space.n, (60, 4096))
for c in range(10): b.step(A[c])
runs = []
for _ in range(3):
    t0 = time.perf_counter()
    for c in range(60): b.step(A[c])
    runs.append((time.perf_counter() - t0) / 60 * 1e6)
act = deploy.bench_policy_only("%(policy)s", 30000)["median_us"]
dec = deploy.bench_decisions("%(policy)s", 30000, False, None)["median_us"]
print(json.dumps({"env_step_us": env_us, "batched_4096_us": min(runs), "policy_act_us": act, "decide_us": dec}))
"""


def measure(tree: Path, python: str) -> dict[str, float]:
    out = subprocess.run([python, "-c", SNIPPET % {"policy": POLICY}], cwd=tree, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rev", required=True, help="the earlier revision (commit, tag or branch)")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--out", default=None, help="also write the JSON here")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="wattwise-rev-") as tmp:
        old = Path(tmp) / "old"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "-q", "--detach", str(old), a.rev], check=True)
        try:
            rows: dict[str, list[dict[str, float]]] = {"old": [], "new": []}
            for r in range(a.rounds):
                rows["old"].append(measure(old, sys.executable))
                rows["new"].append(measure(REPO, sys.executable))
                print(f"round {r + 1}/{a.rounds}: old {rows['old'][-1]} new {rows['new'][-1]}", file=sys.stderr)
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(old)], check=False)
    keys = list(rows["new"][0])
    res = {"rev": a.rev, "date": time.strftime("%Y-%m-%d"), "rounds": a.rounds, "policy": POLICY,
           "median_old": {k: statistics.median(x[k] for x in rows["old"]) for k in keys},
           "median_new": {k: statistics.median(x[k] for x in rows["new"]) for k in keys},
           "median_ratio_new_over_old": {k: statistics.median(n[k] / o[k] for n, o in zip(rows["new"], rows["old"]))
                                         for k in keys}}
    print(json.dumps(res, indent=1))
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
