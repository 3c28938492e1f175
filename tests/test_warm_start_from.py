"""train.py --warm-start-from: the RL step continued from an earlier run's saved warm start, as it was left."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import train


def tiny(tmp_path: Path, name: str, **kw) -> train.Args:
    base = dict(bc_expert="schedutil", bc_episodes=2, dagger_rounds=1, dagger_episodes=2, total_timesteps=512,
                n_envs=4, eval_freq=256, eval_episodes=2, final_eval=False, progress=False,
                runs_dir=str(tmp_path / name))
    return train.Args(**{**base, **kw})


def capture_ret_rms(monkeypatch, name: str, seen: list) -> None:
    """Record the training env's reward-scale statistic right after ``train.<name>`` set it."""
    orig = getattr(train, name)

    def wrapped(*args, **kwargs):
        out = orig(*args, **kwargs)
        env = args[2]
        seen.append((float(env.ret_rms.mean), float(env.ret_rms.var), float(env.ret_rms.count)))
        return out

    monkeypatch.setattr(train, name, wrapped)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ws")
    seen: list = []
    mp = pytest.MonkeyPatch()
    capture_ret_rms(mp, "warm_start", seen)
    try:
        run = train.main(tiny(tmp, "a"))
    finally:
        mp.undo()
    return run, seen[0]


def test_the_restored_warm_start_is_the_saved_one(first_run, tmp_path, monkeypatch):
    a, ret_a = first_run
    seen: list = []
    capture_ret_rms(monkeypatch, "restore_warm_start", seen)
    b = train.main(tiny(tmp_path, "b", warm_start_from=str(a / "warm_start"), seed=7))
    sa = torch.load(a / "warm_start" / "policy_state.pt", weights_only=True)
    sb = torch.load(b / "warm_start" / "policy_state.pt", weights_only=True)
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    with np.load(a / "warm_start" / "vecnormalize.npz") as va, np.load(b / "warm_start" / "vecnormalize.npz") as vb:
        assert all(np.array_equal(va[k], vb[k]) for k in va.files)
    # the reward scale the first round's demonstrations gave, not the whole set's (DAgger's included)
    assert seen[0] == pytest.approx(ret_a, rel=1e-12)
    ca, cb = (json.loads((r / "config.json").read_text())["warm_start"] for r in (a, b))
    assert cb["restored_from"] == str(a / "warm_start") and cb["rounds"] == ca["rounds"]
    assert cb["val_return"] == pytest.approx(ca["val_return"])  # the same policy on the same val episodes
    assert cb["val_return_then"] == ca["val_return"]
    assert (b / "checkpoints").is_dir() and not (b / "warm_start" / "demos.npz").exists()
    link = tmp_path / "link"  # restored in its turn, through a link to the folder
    link.symlink_to(b / "warm_start", target_is_directory=True)
    c = train.main(tiny(tmp_path, "c", warm_start_from=str(link), seed=8))
    sc = torch.load(c / "warm_start" / "policy_state.pt", weights_only=True)
    assert all(torch.equal(sa[k], sc[k]) for k in sa)
    assert json.loads((c / "config.json").read_text())["warm_start"]["val_return_then"] == cb["val_return"]


def test_a_warm_start_of_another_recipe_is_refused(first_run, tmp_path):
    a, _ = first_run
    with pytest.raises(SystemExit, match="env_params.* differ"):
        train.main(tiny(tmp_path, "c", warm_start_from=str(a / "warm_start"),
                        env=dataclasses.replace(train.MAIN_JOB_ENV, max_episode_steps=360)))
    assert not any((tmp_path / "c").glob("*/config.json"))
    with pytest.raises(SystemExit, match="not a warm start"):
        train.main(tiny(tmp_path, "d", warm_start_from=str(a)))  # the run itself, RL steps and all


def test_bad_warm_start_arguments_are_refused_before_anything_is_built(tmp_path, first_run):
    a, _ = first_run
    with pytest.raises(SystemExit, match="no config.json, policy_state.pt"):
        train.main(tiny(tmp_path, "e", warm_start_from=str(tmp_path / "nowhere")))
    with pytest.raises(SystemExit, match="drop --bc-expert none"):
        train.main(tiny(tmp_path, "f", bc_expert="none", warm_start_from=str(a / "warm_start")))
    with pytest.raises(SystemExit, match="pass one of them"):
        train.main(tiny(tmp_path, "g", warm_start_from=str(a / "warm_start"),
                        bc_demos=str(a / "warm_start" / "demos.npz")))
    assert not (tmp_path / "e").exists() and not (tmp_path / "f").exists() and not (tmp_path / "g").exists()
