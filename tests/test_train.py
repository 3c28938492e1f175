"""train.py end to end with a tiny budget: run folder, TensorBoard scalars, evaluation report."""

from __future__ import annotations

import json

import pytest

from model.profile_schema import example_profile, save_profile


@pytest.mark.parametrize("algo,lagrangian", [("ppo", False), ("maskable_ppo", False), ("maskable_ppo", True)])
def test_train_smoke_run(tmp_path, algo, lagrangian):
    import train

    prof = save_profile(example_profile(12), tmp_path / "p.json")
    args = train.Args(algo=algo, profile=str(prof), total_timesteps=1024, n_envs=4, eval_freq=512,
                      lagrangian=lagrangian, eval_episodes=2, checkpoint_freq=512, runs_dir=str(tmp_path / "runs"),
                      final_eval=algo == "ppo", eval_max_steps=12, progress=False)
    run = train.main(args)
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["algo"] == algo and cfg["total_timesteps"] == 1024
    assert (cfg["lagrange_lambda"] is not None) == lagrangian
    assert len(cfg["decode_table"]) == 12 and len(cfg["obs_features"]) == 19
    for f in ("policy_state.pt", "vecnormalize.npz", "model.zip"):
        assert (run / f).exists(), f
    assert list((run / "tb").rglob("events.out.tfevents.*"))
    if algo == "ppo":
        report = json.loads((run / "report.json").read_text())
        names = json.dumps(report)
        assert "oracle" in names and "static-largest" in names and "rl:ppo" in names
