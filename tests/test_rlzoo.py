"""One hyperparameter format: RL Zoo reads agents/hyperparams/*.yml exactly as train.py does, and trains from them;
train.py parses RL Zoo's Python-literal strings without evaluating them and refuses what it cannot honour."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import pytest
import torch

import envs
import train

REPO = Path(__file__).resolve().parent.parent
ZOO_ALGO = {"maskable_ppo": "ppo", "ppo": "ppo", "dqn": "dqn"}  # RL Zoo 2.9 has no MaskablePPO: plain PPO reads it


@pytest.mark.parametrize("name", list(train.ALGOS))
def test_rl_zoo_and_train_py_read_the_same_values(name, tmp_path, capsys):
    pytest.importorskip("rl_zoo3", reason="RL Zoo is not installed (pip install -e '.[test]')")
    from rl_zoo3.exp_manager import ExperimentManager

    em = ExperimentManager(argparse.Namespace(), ZOO_ALGO[name], envs.ENV_ID, str(tmp_path), n_timesteps=2048,
                           config=str(REPO / "agents" / "hyperparams" / f"{name}.yml"), verbose=0)
    zoo, _ = em.read_hyperparameters()
    zoo, *_ = em._preprocess_hyperparams(zoo)  # RL Zoo's own eval of normalize and policy_kwargs
    ours = train.load_hyperparams(name)
    assert em.normalize and em.normalize_kwargs["norm_obs"] == ours.pop("normalize_obs")
    assert em.normalize_kwargs["norm_reward"] == ours.pop("normalize_reward")
    assert em.n_envs == ours.pop("n_envs") and float(ours.pop("n_timesteps")) > 0
    pk_zoo, pk_ours = zoo.pop("policy_kwargs"), ours.pop("policy_kwargs")
    assert pk_zoo["net_arch"] == pk_ours["net_arch"]
    assert pk_zoo["activation_fn"] is getattr(torch.nn, pk_ours["activation_fn"])
    assert zoo.pop("policy") == "MlpPolicy"
    for key in ("learning_rate", "clip_range"):  # RL Zoo: a schedule (numbers wrapped in a constant one)
        if key in zoo:
            theirs, v = zoo.pop(key), ours.pop(key)
            start = train.linear_start(v)
            for progress in (1.0, 0.5, 0.1):  # progress_remaining, 1 at the first update
                assert theirs(progress) == pytest.approx(v if start is None else start * progress)
    assert zoo == ours


def test_rl_zoo_trains_from_our_file(tmp_path):
    pytest.importorskip("rl_zoo3", reason="RL Zoo is not installed (pip install -e '.[test]')")
    log = tmp_path / "zoo"
    cmd = [sys.executable, "-m", "rl_zoo3.train", "--algo", "ppo", "--env", envs.ENV_ID, "--gym-packages", "envs",
           "--conf-file", str(REPO / "agents" / "hyperparams" / "ppo.yml"), "-n", "2048", "-f", str(log),
           "--eval-freq", "-1", "--seed", "1", "--device", "cpu", "--log-interval", "1",
           "--hyperparams", "n_envs:8"]  # the file's 64 envs each read the trace set: 8 keep the test short
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=170)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    assert "Normalization activated: {'norm_obs': True, 'norm_reward': True, 'gamma': 0.995}" in out.stdout
    assert "Using 8 environments" in out.stdout
    assert re.search(r"total_timesteps\s*\|\s*2048", out.stdout) and re.search(r"n_updates\s*\|\s*5", out.stdout)
    saved = list(log.glob("ppo/*/*.zip"))
    assert saved and (saved[0].parent / envs.ENV_ID.replace("/", "-") / "vecnormalize.pkl").exists()


def _write(tmp_path: Path, body: str) -> Path:
    (tmp_path / "ppo.yml").write_text(f"{envs.ENV_ID}:\n" + "".join(f"  {line}\n" for line in body.splitlines()))
    return tmp_path


@pytest.mark.parametrize("body,needle", [
    ("policy_kwargs: \"dict(activation_fn=__import__('os').system('true'))\"", "is not allowed"),
    ("policy_kwargs: \"dict(net_arch=[64, 64], activation_fn=nn.NotAnActivation)\"", "is not allowed"),
    ("policy_kwargs: \"dict(net_arch=[64\"", "is not a Python literal"),
    ("normalize_obs: true", "normalize_obs: not an RL Zoo key"),
    ("normalize: \"{'norm_obs': True, 'clip_obs': 5.0}\"", "normalize:"),
    ("learning_rate: lin_", "neither a number nor RL Zoo's linear schedule"),
    ("learning_rate: lin_-3e-4", "neither a number nor RL Zoo's linear schedule"),
    ("clip_range: exp_0.2", "neither a number nor RL Zoo's linear schedule"),
    ("policy: CnnPolicy", "train.py builds MlpPolicy only"),
    ("frame_stack: 4", "frame_stack: RL Zoo option not supported"),
    ("n_envs: 0", "n_envs: 0 is not a whole number >= 1"),
    ("policy_kwargs: \"dict(optimizer_class=th.nn.Adam)\"", "is not allowed"),
    ("policy_kwargs: \"dict(net_arch=[64], features_extractor_class=nn.Flatten)\"", "resolves activation_fn only"),
])
def test_bad_hyperparameters_name_file_key_and_fix(tmp_path, monkeypatch, body, needle):
    monkeypatch.setenv("WATTWISE_HYPERPARAMS", str(_write(tmp_path, body)))
    with pytest.raises(SystemExit) as err:
        train.load_hyperparams("ppo")
    msg = str(err.value)
    assert msg.startswith(str(tmp_path / "ppo.yml")) and needle in msg and "fix:" in msg, msg


def test_rl_zoo_forms_map_to_train_py_flags(tmp_path, monkeypatch):
    monkeypatch.setenv("WATTWISE_HYPERPARAMS", str(_write(tmp_path, "\n".join([
        "policy: 'MlpPolicy'",
        "n_envs: 8",
        "n_timesteps: !!float 1e5",
        "gamma: 0.9",
        "normalize: true",
        "policy_kwargs: \"dict(net_arch=dict(pi=[32], vf=[16, 16]), activation_fn=th.nn.ReLU, ortho_init=False)\"",
    ]))))
    hp = train.load_hyperparams("ppo")
    assert hp == {"n_envs": 8, "n_timesteps": 1e5, "gamma": 0.9, "normalize_obs": True, "normalize_reward": True,
                  "policy_kwargs": {"net_arch": {"pi": [32], "vf": [16, 16]}, "activation_fn": "ReLU",
                                    "ortho_init": False}}
    (tmp_path / "ppo.yml").write_text(f"{envs.ENV_ID}:\n  n_envs: 8\n")  # RL Zoo: no normalize key = none
    assert train.load_hyperparams("ppo") == {"n_envs": 8, "normalize_obs": False, "normalize_reward": False}


def test_linear_schedule_is_rl_zoos(tmp_path, monkeypatch):
    """``lin_<start>`` (RL Zoo's linear_schedule) is kept as written in the hyperparameters (config.json) and
    becomes a schedule from the start at the first update to 0 at the last, for the step size and the clip range."""
    monkeypatch.setenv("WATTWISE_HYPERPARAMS", str(_write(tmp_path, "n_envs: 2\nn_steps: 16\nbatch_size: 16\n"
                                                          "learning_rate: lin_3e-4\nclip_range: lin_0.2")))
    hp = train.load_hyperparams("ppo")
    assert hp["learning_rate"] == "lin_3e-4" and hp["clip_range"] == "lin_0.2"
    env = gym.make(envs.ENV_ID)
    for k in ("n_envs", "normalize_obs", "normalize_reward"):
        hp.pop(k)
    model = train.make_agent("ppo", env, dict(hp), seed=0, tb_dir=None)
    assert model.lr_schedule(1.0) == pytest.approx(3e-4) and model.lr_schedule(0.5) == pytest.approx(1.5e-4)
    assert model.lr_schedule(0.0) == pytest.approx(0.0)
    assert model.clip_range(1.0) == pytest.approx(0.2) and model.clip_range(0.25) == pytest.approx(0.05)
    try:
        from rl_zoo3.utils import linear_schedule  # RL Zoo's own gives the same values
    except ImportError:
        return
    assert all(linear_schedule(3e-4)(p) == pytest.approx(model.lr_schedule(p)) for p in (1.0, 0.7, 0.1))


def test_an_agent_without_a_log_folder_writes_nothing_to_the_temp_dir(tmp_path, monkeypatch):
    """SB3 logs an agent made without ``tensorboard_log`` to a fresh ``SB3-<date>`` folder in the temp dir on every
    ``learn()``; ``make_agent`` gives it a logger with no folder instead."""
    import tempfile

    import gymnasium as gym

    import envs
    import train

    monkeypatch.delenv("SB3_LOGDIR", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    hp = train.load_hyperparams("ppo")
    for k in ("n_envs", "normalize_obs", "normalize_reward", "n_timesteps"):
        hp.pop(k, None)
    hp.update(n_steps=16, batch_size=16, n_epochs=1)
    model = train.make_agent("ppo", gym.make(envs.ENV_ID), dict(hp), seed=0, tb_dir=None)
    model.learn(16)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("SB3-")] == []
