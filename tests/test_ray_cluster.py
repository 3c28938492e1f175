"""A real two-node Ray cluster on this host (docs/scale-out.md, "Two nodes on one host"): a head node and a second
node started with ``ray start``, a sweep submitted with ``--address HOST:PORT`` whose two trials run on both
nodes, and a clean shutdown.

Each ``ray start`` runs with ``--block`` and is stopped by its own process id (SIGTERM: it drains and stops the
processes it started), not with ``ray stop``, which stops every Ray process on the machine, including other
users' and this test session's own local runtime. The cluster uses a private auth token and temp dir.
"""

from __future__ import annotations

import csv
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from agents.parallel import ray_available
from model.profile_schema import example_profile, save_profile

REPO = Path(__file__).resolve().parent.parent
RAY = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
pytestmark = pytest.mark.skipif(not ray_available() or RAY is None,
                                reason="Ray is not installed (pip install -e '.[cluster]'): no cluster to start")


_TAKEN: set[int] = set()  # every port this module has handed out: the two nodes' ports must all differ


def _free_port() -> int:
    """A port free now and not handed out before in this module. Each socket is closed before the next is bound, so
    the OS may give the same port twice (two of one node's components once got the same one and Ray refused it)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _TAKEN:
            _TAKEN.add(port)
            return port


def _node_ports() -> list[str]:
    """Two nodes on one host: each needs its own agent / manager / metrics ports (the defaults are fixed)."""
    return [arg for flag in ("--dashboard-agent-listen-port", "--dashboard-agent-grpc-port", "--runtime-env-agent-port",
                             "--metrics-export-port", "--node-manager-port", "--object-manager-port")
            for arg in (flag, str(_free_port()))]


def test_the_ports_handed_to_the_nodes_all_differ():
    ports = [int(p) for p in _node_ports()[1::2] + _node_ports()[1::2]] + [_free_port()]
    assert len(set(ports)) == len(ports) == 13


def _wait_started(proc: subprocess.Popen, log: Path, timeout_s: float = 90) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout_s:
        if "Ray runtime started" in log.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    raise AssertionError(f"ray start did not come up: {log.read_text(errors='replace')[-2000:]}")


@pytest.fixture(scope="module")
def two_nodes():
    """(address, env, processes): a head (1 CPU) and a second node (1 CPU, resource node2) on 127.0.0.1."""
    import psutil

    tmp = Path(tempfile.mkdtemp(prefix="wwray-", dir="/tmp"))  # short: Ray's socket paths must stay < 108 bytes
    port = _free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": secrets.token_hex(32), "OMP_NUM_THREADS": "1",
           "RAY_worker_niceness": "0"}  # Ray's default 15 makes the trials yield to every other job on a shared host
    env.pop("RAY_ADDRESS", None)
    common = ["--block", "--num-cpus=1", "--object-store-memory=300000000", "--disable-usage-stats"]
    procs = []
    try:
        head_log = tmp / "head.log"
        procs.append(subprocess.Popen([RAY, "start", "--head", f"--port={port}", f"--temp-dir={tmp}",
                                       "--include-dashboard=false", "--resources", json.dumps({"node1": 1}), *common,
                                       *_node_ports()], env=env, stdout=open(head_log, "w"), stderr=subprocess.STDOUT))
        _wait_started(procs[0], head_log)
        node2_log = tmp / "node2.log"
        procs.append(subprocess.Popen([RAY, "start", f"--address=127.0.0.1:{port}", "--resources",
                                       json.dumps({"node2": 1}), *common, *_node_ports()], env=env,
                                      stdout=open(node2_log, "w"), stderr=subprocess.STDOUT))
        _wait_started(procs[1], node2_log)
        children = {c.pid for p in procs for c in psutil.Process(p.pid).children(recursive=True)}
        yield f"127.0.0.1:{port}", env, procs, children
    finally:
        for p in reversed(procs):  # clean shutdown: each `ray start --block` stops what it started
            p.terminate()
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def test_sweep_runs_on_both_nodes_of_a_two_node_cluster(tmp_path, two_nodes):
    import psutil

    address, env, procs, children = two_nodes
    code = (f"import json, ray; ray.init(address={address!r}, log_to_driver=False); "
            "print(json.dumps([n['NodeID'] for n in ray.nodes() if n['Alive']]))")
    alive = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert alive.returncode == 0, alive.stderr[-2000:]
    nodes = set(json.loads(alive.stdout.strip().splitlines()[-1]))
    assert len(nodes) == 2
    prof = save_profile(example_profile(12), tmp_path / "p.json")
    cfg = {"name": "two-nodes", "out": str(tmp_path / "sweeps"), "scheduler": "fifo", "max_failures": 0,
           "grid": {"seed": [1, 2]},
           "train": {"algo": "ppo", "bc_expert": "none", "profile": str(prof), "total_timesteps": 1024, "n_envs": 4,
                     "eval_freq": 512,
                     "eval_episodes": 2, "checkpoint_freq": 1024, "final_eval": False, "env.max_episode_steps": 24}}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(cfg))
    out = subprocess.run([sys.executable, "-m", "agents.sweep", str(tmp_path / "sweep.yaml"), "--address", address,
                          "--no-progress"], cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    with open(tmp_path / "sweeps" / "two-nodes" / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["status"] for r in rows] == ["done", "done"]
    assert {r["node"] for r in rows} == nodes  # one trial on each node (1 CPU each)
    for r in rows:
        assert (Path(r["run"]) / "config.json").exists() and list((Path(r["run"]) / "tb").rglob("events.out.*"))
    # shutdown: both `ray start` processes exit and take every process they started with them
    for p in reversed(procs):
        p.terminate()
        p.wait(60)
    time.sleep(1)
    left = [c for c in children if psutil.pid_exists(c) and psutil.Process(c).status() != psutil.STATUS_ZOMBIE]
    assert not left, [psutil.Process(c).cmdline()[:2] for c in left]
