"""Command-line contract of train.py, agents.evaluate, envs.*, model.*: ``--help`` exits 0, and a
bad argument is a usage error — exit code 2, one line naming the argument (and its allowed range),
no traceback — raised before any trace, profile or model is read (the paths given do not exist, so
reading them first would fail differently) and before any run folder or output is created.

Every command runs as a subprocess (with a timeout); they run two at a time so the file stays
under about 40 s on two cores.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TIMEOUT_S = 60

HELP = {
    "train.py": ["train.py"],
    "agents.evaluate": ["-m", "agents.evaluate"],
    "envs.describe": ["-m", "envs.describe"],
    "envs.live": ["-m", "envs.live"],
    "model.profile": ["-m", "model.profile"],
    "model.scaling": ["-m", "model.scaling"],
    "model.train": ["-m", "model.train"],
    "model.evaluate": ["-m", "model.evaluate"],
}

# (command, bad arguments, what the one-line message must name). Paths under {tmp} do not exist.
# train.py and model.profile import torch (seconds per process): a few cases here, the full tables
# run in process in tests/test_safety_train_model.py.
BAD = [
    ("train.py", ["--total-timesteps", "-5"], "--total-timesteps"),
    ("train.py", ["--total-timesteps", "0.5"], "--total-timesteps"),
    ("train.py", ["--learning-rate", "-1"], "--learning-rate"),
    ("train.py", ["--eval-episodes", "0"], "--eval-episodes"),
    ("train.py", ["--n-envs", "-1"], "--n-envs"),
    ("train.py", ["--action-head", "tree"], "--action-head"),
    ("train.py", ["--algo", "dqn", "--action-head", "factorised"], "--action-head"),
    ("train.py", ["--bc-oracle-grid", "5,5"], "--bc-oracle-grid"),
    ("agents.evaluate", ["--max-steps", "0"], "--max-steps"),
    ("agents.evaluate", ["--oracle-grid", "1,2"], "--oracle-grid"),
    ("agents.evaluate", ["--seed", "-1"], "--seed"),
    ("agents.evaluate", ["--split", "holdout"], "--split"),
    ("agents.evaluate", ["--policies", "nope"], "--policies"),
    ("agents.evaluate", ["--objectives", "fastest"], "--objectives"),
    ("agents.evaluate", ["--also", "nope"], "--also"),
    ("train.py", ["--train-death-weight", "10"], "--train-death-weight"),
    ("envs.live", ["--tokens", "0"], "--tokens"),
    ("envs.live", ["--repeats", "0"], "--repeats"),
    ("envs.live", ["--threads", "0"], "--threads"),
    ("model.profile", ["--repeats", "0"], "--repeats"),
]

# arguments that would make each command read something missing (or write into tmp) if it got that far
CONTEXT = {
    "train.py": ["--profile", "{tmp}/none.json", "--traces", "{tmp}/no-traces", "--runs-dir", "{tmp}/runs"],
    "agents.evaluate": ["--run", "{tmp}/no-run", "--out", "{tmp}/eval"],
    "envs.live": ["--checkpoint", "{tmp}/none.pt", "--profile", "{tmp}/none.json", "--out", "{tmp}/s2r.md"],
    "model.profile": ["--checkpoint", "{tmp}/none.pt", "--quality", "{tmp}/none.json", "--out", "{tmp}/p.json"],
}


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    argv = [sys.executable, *(str(REPO / c) if c == "train.py" else c for c in cmd)]
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Every help and bad-argument run, two at a time: {key: (CompletedProcess, tmp dir)}."""
    jobs = {}
    for name, cmd in HELP.items():
        jobs[("help", name)] = (cmd + ["--help"], tmp_path_factory.mktemp("help"))
    for i, (name, bad, _) in enumerate(BAD):
        tmp = tmp_path_factory.mktemp(f"bad{i}")
        ctx = [a.format(tmp=tmp) for a in CONTEXT[name]]
        jobs[("bad", i)] = (HELP[name] + ctx + bad, tmp)
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {k: pool.submit(_run, cmd, tmp) for k, (cmd, tmp) in jobs.items()}
        return {k: (f.result(), jobs[k][1]) for k, f in futures.items()}


@pytest.mark.parametrize("name", list(HELP))
def test_help_exits_zero(results, name):
    r, _ = results[("help", name)]
    assert r.returncode == 0, r.stderr[-2000:]
    assert "usage:" in r.stdout and "Traceback" not in r.stderr


@pytest.mark.parametrize("i", range(len(BAD)), ids=[f"{n}:{' '.join(a)}" for n, a, _ in BAD])
def test_bad_argument_is_a_one_line_usage_error(results, i):
    name, bad, names = BAD[i]
    r, tmp = results[("bad", i)]
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    last = r.stderr.strip().splitlines()[-1]
    assert "error:" in last and names in last, last
    assert any(w in last for w in ("allowed", "choose", "invalid choice", "must be", "unknown")), last
    assert r.stdout == ""
    assert sorted(p.name for p in tmp.iterdir()) == [], "the command created files before failing"
