"""agents.sweep: config checks and the trial grid (no Ray), and a real Ray Tune sweep with faults: a trial whose
train.py is killed is retried, a trial that crashes is listed as failed with its log while the others' results
are kept, and --resume re-runs only the failed trial."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
import yaml

from agents.sweep import SweepConfigError, dry_run_text, load_sweep, main
from model.profile_schema import example_profile, save_profile

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray runtime with 2 CPUs for this file's sweeps (``address="local"``: never another cluster)."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[cluster]'); the sweep needs it")
    from agents.parallel import init_ray

    init_ray(num_cpus=2)  # ray.init(address="local", num_cpus=2, include_dashboard=False, ...), unless already up
    yield ray
    ray.shutdown()


def _config(tmp_path: Path, **over) -> Path:
    prof = save_profile(example_profile(12), tmp_path / "p.json")
    cfg = {"name": "s", "out": str(tmp_path / "sweeps"), "scheduler": "fifo", "max_failures": 1,
           "grid": {"hyperparams.batch_size": [64, 1]},
           "train": {"algo": "ppo", "bc_expert": "none", "profile": str(prof), "total_timesteps": 1024, "n_envs": 4,
                     "eval_freq": 512,
                     "eval_episodes": 2, "checkpoint_freq": 1024, "final_eval": False, "env.max_episode_steps": 24}}
    for k, v in over.items():  # "train" is merged into the base train arguments, other keys replace
        cfg[k] = {**cfg["train"], **v} if k == "train" else v
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_example_config_grid_and_dry_run(capsys):
    sweep = load_sweep(REPO / "agents" / "sweeps" / "example.yaml")
    assert [t.key for t in sweep.trials] == ["t000", "t001", "t002", "t003"]
    assert [(t.axes["seed"], t.axes["learning_rate"]) for t in sweep.trials] == [(1, 3e-4), (1, 1e-3), (2, 3e-4),
                                                                                  (2, 1e-3)]
    assert "--seed 2 --learning-rate 0.001" in " ".join(sweep.trials[3].argv)
    assert main([str(REPO / "agents" / "sweeps" / "example.yaml"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("4 trials (2 seed x 2 learning_rate)") and out.count("python train.py") == 4


@pytest.mark.parametrize("change,needle", [
    ({"grid": {"learning_rate": [3e-4, -1.0]}}, "trial t001 (learning_rate=-1.0): argument --learning-rate"),
    ({"grid": {"seed": 3}}, "grid.seed: 3 is not a non-empty list"),
    ({"grid": {"runs_dir": ["a"]}}, "grid.runs_dir: set by the sweep"),
    ({"scheduler": "hyperband"}, "scheduler: 'hyperband'; fix: one of asha, median, fifo"),
    ({"bogus": 1}, "bogus: unknown key"),
    ({"grid": {"traces": ["/no/such/set"]}}, "grid.traces: /no/such/set does not exist"),
    ({"grid": {"hyperparams.policy_kwargs": ["dict(activation_fn=__import__('os'))"]}}, "is not allowed"),
    ({"train": {"eval_freq": 4096}}, "eval_freq 4096 > total_timesteps 1024"),
    ({"grid": {"eval_freq": [512]}}, "train.eval_freq: also a grid axis"),
])
def test_bad_config_names_file_field_and_fix(tmp_path, change, needle):
    path = _config(tmp_path, **change)
    with pytest.raises(SweepConfigError) as err:
        load_sweep(path)
    msg = str(err.value)
    assert msg.startswith(str(path)) and needle in msg and "fix:" in msg, msg


def test_dry_run_lists_hyperparameter_overrides(tmp_path):
    text = dry_run_text(load_sweep(_config(tmp_path)))
    assert "t001  hyperparams.batch_size=1" in text and "[hyperparams: batch_size=1]" in text


def test_sweep_retries_a_killed_trial_keeps_results_of_a_crash_and_resumes(tmp_path, ray_local):
    path = _config(tmp_path)
    exp = tmp_path / "sweeps" / "s"
    killed: list[int] = []

    def kill_first_attempt_of_t000():  # "a worker killed mid-sweep": SIGKILL to t000's first train.py
        pid_file = exp / "t000" / "train.pid"
        deadline = time.time() + 120
        while time.time() < deadline and not killed:
            if pid_file.exists() and pid_file.read_text().strip():
                pid = int(pid_file.read_text())
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            time.sleep(0.05)

    killer = threading.Thread(target=kill_first_attempt_of_t000, daemon=True)
    killer.start()
    assert main([str(path), "--no-progress"]) == 0
    killer.join(1)
    assert killed, "t000's train.py was never seen"
    rows = {r["trial"]: r for r in _csv(exp / "results.csv")}
    ok, bad = rows["t000"], rows["t001"]
    # the killed trial was retried (one more attempt) and finished with val evaluations
    assert ok["status"] == "done" and ok["attempts"] == "2" and int(ok["evals"]) >= 2
    assert float(ok["best_val_return"]) == pytest.approx(_kept_val_return(Path(ok["run"])))
    # the crashing trial (PPO refuses batch_size 1) ran 1 + max_failures times, is listed as failed with its log
    assert bad["status"] == "failed" and bad["attempts"] == "2" and bad["log"].endswith("t001/train.log")
    assert "batch_size" in Path(bad["log"]).read_text()
    md = (exp / "results.md").read_text()
    assert "## Failed trials" in md and "t001/train.log" in md
    best = yaml.safe_load((exp / "best.yaml").read_text())
    assert best["config"] == {"hyperparams.batch_size": 64} and best["best_trial"]["trial"] == "t000"
    assert "WATTWISE_HYPERPARAMS=" in best["command"]
    # nothing is overwritten: the same sweep again without --resume is refused
    with pytest.raises(SystemExit, match="already exists; fix: --resume"):
        main([str(path), "--no-progress"])
    # --resume: the failed trial runs again (2 more attempts), the finished one is kept as it was
    runs_before = sorted(p.name for p in (exp / "t000" / "runs").iterdir())
    assert main([str(path), "--resume", "--no-progress"]) == 0
    rows = {r["trial"]: r for r in _csv(exp / "results.csv")}
    assert rows["t000"]["status"] == "done" and rows["t000"]["attempts"] == "2"
    assert rows["t001"]["status"] == "failed" and rows["t001"]["attempts"] == "4"
    assert sorted(p.name for p in (exp / "t000" / "runs").iterdir()) == runs_before


def _kept_val_return(run: Path) -> float:
    import json

    return json.loads((run / "config.json").read_text())["selected"]["val_return"]


def _csv(path: Path) -> list[dict]:
    import csv

    with open(path) as fh:
        return list(csv.DictReader(fh))
