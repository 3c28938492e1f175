"""benchmarks/clone_agreement.py: a clone of a constant rule agrees with it everywhere; bad runs are refused."""

from __future__ import annotations

import json

import pytest
from bench_helpers import load_benchmark

from model.profile_schema import example_profile, save_profile
from runtime.dynamics import EnvParams


def _script():
    return load_benchmark("clone_agreement")


def test_a_clone_of_a_constant_rule_agrees_everywhere(tmp_path, capsys):
    import train

    prof = save_profile(example_profile(12), tmp_path / "p.json")
    run = train.main(train.Args(profile=str(prof), total_timesteps=0, n_envs=2, runs_dir=str(tmp_path / "runs"),
                                final_eval=False, progress=False, env=EnvParams(max_episode_steps=24),
                                bc_expert="static-smallest", bc_episodes=8, dagger_rounds=0, bc_epochs=150,
                                bc_lr=3e-3))
    mod = _script()
    out = tmp_path / "agree.md"
    assert mod.main(["--run", str(run / "warm_start"), "--expert", "static-smallest", "--max-steps", "40",
                     "--pool-sample", "30", "--out", str(out)]) == 0
    res = json.loads(out.with_suffix(".json").read_text())["runs"][str(run / "warm_start")]
    assert res["steps"] == 40 and res["agreement"] == 1.0
    assert sum(b["steps"] for b in res["bands"].values()) == 40
    assert all(b["accuracy"] == 1.0 for b in res["pool"].values() if b["accuracy"] is not None)
    assert res["departures"] == {"costlier": 0, "cheaper": 0, "top": {}}
    assert res["expert_return"] == pytest.approx(res["return"])  # it plays the expert: the same episode
    # against another expert the same clone disagrees somewhere, always toward a cheaper configuration
    mod.main(["--run", str(run / "warm_start"), "--expert", "static-largest", "--max-steps", "40", "--out", str(out),
              "--ambient-shift-c", "-10"])
    other = json.loads(out.with_suffix(".json").read_text())
    res = other["runs"][str(run / "warm_start")]
    assert res["agreement"] < 1.0 and other["ambient_shift_c"] == -10.0  # cooler: the largest is allowed
    d = res["departures"]
    assert d["costlier"] == 0 and d["cheaper"] == round(40 * (1 - res["agreement"])) and d["top"]
    with pytest.raises(SystemExit):
        mod.main(["--run", str(tmp_path)])  # no config.json there
    assert "no config.json there" in capsys.readouterr().err
