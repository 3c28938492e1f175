"""train.py --clamp-obs (agents.obs_support): observations clipped to the range the statistics were fitted on,
the same in training, in agents.run_io (evaluation) and in the exported numpy policy."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from agents.obs_support import SupportRunningMeanStd, SupportVecNormalize, support
from agents.run_io import normalize_obs, vecnormalize_stats
from model.profile_schema import example_profile, save_profile
from runtime.dynamics import EnvParams


def _venv():
    return DummyVecEnv([lambda: gym.make("CartPole-v1") for _ in range(2)])


def _fit(vn, rng, n=50):
    for _ in range(n):  # what VecNormalize does on each step in training mode
        vn.obs_rms.update(rng.uniform(-1.0, 1.0, (2, 4)).astype(np.float32))


def test_support_is_the_range_seen_and_out_of_range_inputs_read_as_its_edge():
    rng = np.random.default_rng(0)
    vn = SupportVecNormalize(_venv(), clamp_obs=True)
    assert support(vn.obs_rms) is None  # nothing seen yet: no clip
    _fit(vn, rng)
    lo, hi = support(vn.obs_rms)
    assert (lo >= -1).all() and (hi <= 1).all() and (lo < -0.9).all() and (hi > 0.9).all()
    far = np.array([[50.0, -50.0, 0.5, 3.0]], np.float32)
    edge = np.clip(far, lo, hi).astype(np.float32)
    np.testing.assert_array_equal(vn.normalize_obs(far), vn.normalize_obs(edge))
    # without the flag: VecNormalize exactly, the far input reaches the ±10 clip
    plain, ref = SupportVecNormalize(_venv()), VecNormalize(_venv())
    plain.obs_rms, ref.obs_rms = vn.obs_rms.copy(), vn.obs_rms.copy()
    plain.obs_rms = SupportVecNormalize(_venv()).obs_rms  # a plain RunningMeanStd: no support kept
    plain.obs_rms.mean, plain.obs_rms.var = vn.obs_rms.mean.copy(), vn.obs_rms.var.copy()
    ref.obs_rms = plain.obs_rms
    np.testing.assert_array_equal(plain.normalize_obs(far), ref.normalize_obs(far))
    assert np.abs(plain.normalize_obs(far)).max() == pytest.approx(10.0)
    assert np.abs(vn.normalize_obs(far)).max() < 2.5


def test_saved_statistics_normalise_exactly_as_the_training_env_and_freezing_keeps_the_support():
    from agents.imitation import freeze_obs_normalisation

    rng = np.random.default_rng(1)
    vn = SupportVecNormalize(_venv(), clamp_obs=True)
    _fit(vn, rng)
    stats = vecnormalize_stats(vn)
    assert set(stats) >= {"obs_min", "obs_max"}
    x = rng.normal(0.0, 20.0, (64, 4)).astype(np.float32)
    np.testing.assert_allclose(normalize_obs(x, stats), vn.normalize_obs(x), atol=1e-6)
    lo, hi = stats["obs_min"].copy(), stats["obs_max"].copy()
    freeze_obs_normalisation(vn)
    vn.obs_rms.update(x)  # frozen: neither the statistics nor the support move
    np.testing.assert_array_equal(support(vn.obs_rms)[0], lo)
    np.testing.assert_array_equal(support(vn.obs_rms)[1], hi)
    assert "obs_min" not in vecnormalize_stats(VecNormalize(_venv()))  # runs without the flag save no support


def test_support_running_mean_std_copies_are_independent():
    r = SupportRunningMeanStd(shape=(3,))
    r.update(np.array([[0.0, 1.0, 2.0], [1.0, 2.0, 3.0]]))
    c = r.copy()
    r.update(np.array([[9.0, 9.0, 9.0]]))
    np.testing.assert_array_equal(c.hi, [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(r.hi, [9.0, 9.0, 9.0])
    np.testing.assert_allclose(c.mean, [0.5, 1.5, 2.5], atol=1e-3)


def test_clamp_obs_trains_exports_and_the_device_policy_reads_the_same_inputs(tmp_path):
    """End to end: a warm-started run with --clamp-obs --freeze-obs-norm keeps the demonstrations' support through
    RL; the exported file carries it; on inputs far outside it the numpy policy's logits are the torch actor's on
    the clipped, normalised inputs."""
    import torch

    import deploy
    import train
    from agents.run_io import load_controller
    from runtime.policy import NumpyPolicy, PolicyFileError, load_policy_file, save_policy_file

    prof = save_profile(example_profile(12), tmp_path / "p.json")
    run = train.main(train.Args(algo="maskable_ppo", profile=str(prof), total_timesteps=512, n_envs=4, obs_drop="",
                                eval_freq=512, eval_episodes=1, checkpoint_freq=512, runs_dir=str(tmp_path / "runs"),
                                final_eval=False, env=EnvParams(max_episode_steps=24), progress=False,
                                bc_expert="schedutil", bc_episodes=4, dagger_rounds=1, dagger_episodes=2,
                                bc_epochs=2, freeze_obs_norm=True, clamp_obs=True))
    assert json.loads((run / "config.json").read_text())["args"]["clamp_obs"] is True
    ws = np.load(run / "warm_start" / "vecnormalize.npz", allow_pickle=False)
    final = np.load(run / "vecnormalize.npz", allow_pickle=False)
    demos = np.load(run / "warm_start" / "demos.npz", allow_pickle=False)["obs"]
    np.testing.assert_array_equal(ws["obs_min"], demos.min(0))  # BC + DAgger: the range the clone was fitted on
    np.testing.assert_array_equal(ws["obs_max"], demos.max(0))
    np.testing.assert_array_equal(final["obs_min"], ws["obs_min"])  # frozen through RL
    deploy.export_run(run, tmp_path / "policy.npz")
    pf = load_policy_file(tmp_path / "policy.npz")
    np.testing.assert_array_equal(pf.obs_min, ws["obs_min"])
    rng = np.random.default_rng(2)
    x = (demos[rng.integers(len(demos), size=256)] * rng.uniform(0.0, 30.0, (256, demos.shape[1]))).astype(np.float32)
    ctrl = load_controller(run)
    with torch.no_grad():
        z = torch.as_tensor(normalize_obs(x, dict(final)))
        ref = ctrl.policy.action_net(ctrl.policy.mlp_extractor.forward_actor(z)).numpy()
    np.testing.assert_allclose(NumpyPolicy(pf).logits_batch(x), ref, atol=1e-4)
    # a file with one bound only, or an inverted range, is refused
    arrays = dict(np.load(tmp_path / "policy.npz", allow_pickle=False))
    meta = json.loads(str(arrays["meta_json"]))
    per = {k: arrays[k] for k in ("energy_j_per_token", "power_w", "decode_tokens_per_s")}
    layers = [(arrays[f"layer{k}_weight"], arrays[f"layer{k}_bias"]) for k in range(meta["n_layers"])]
    save_policy_file(tmp_path / "bad.npz", layers, meta, arrays["obs_mean"], arrays["obs_var"], per,
                     arrays["config_features"], obs_support=(arrays["obs_max"] + 1.0, arrays["obs_max"]))
    with pytest.raises(PolicyFileError, match="obs_min > obs_max"):
        load_policy_file(tmp_path / "bad.npz")


def test_dropped_features_read_zero_in_training_and_on_the_device(tmp_path):
    """--obs-drop: the named features' support is [0, 0] from the start and through every update, so the policy
    sees a constant there; the exported file holds them at 0 too; an unknown name is refused with the layout."""
    import train
    from runtime.policy import NumpyPolicy, load_policy_file

    rng = np.random.default_rng(3)
    pin = np.array([False, True, False, True])
    vn = SupportVecNormalize(_venv(), clamp_obs=True, pinned=pin)
    _fit(vn, rng)
    lo, hi = support(vn.obs_rms)
    assert (lo[pin] == 0).all() and (hi[pin] == 0).all() and (hi[~pin] > 0.9).all()
    x = rng.normal(0.0, 5.0, (8, 4)).astype(np.float32)
    y = x.copy()
    y[:, pin] = rng.normal(0.0, 5.0, (8, 2))  # whatever the dropped features read
    np.testing.assert_array_equal(vn.normalize_obs(x), vn.normalize_obs(y))
    assert support(vn.obs_rms.copy())[0][1] == 0.0

    prof = save_profile(example_profile(12), tmp_path / "p.json")
    base = dict(algo="maskable_ppo", profile=str(prof), total_timesteps=256, n_envs=4, eval_freq=256, eval_episodes=1,
                checkpoint_freq=256, runs_dir=str(tmp_path / "runs"), final_eval=False, progress=False,
                env=EnvParams(max_episode_steps=16, power_cap=4.0))
    with pytest.raises(SystemExit, match="no feature 'power_kw'.*it has soc"):
        train.main(train.Args(bc_expert="none", obs_drop="power_w,power_kw", **base))
    run = train.main(train.Args(bc_expert="none", obs_drop="power_w,affordable_power_w", **base))
    names = json.loads((run / "config.json").read_text())["obs_features"]
    assert "power_frac" in names and "affordable_power_frac" in names
    import deploy

    deploy.export_run(run, tmp_path / "policy.npz")
    pf = load_policy_file(tmp_path / "policy.npz")
    for n in ("power_w", "affordable_power_w"):
        k = names.index(n)
        assert pf.obs_min[k] == pf.obs_max[k] == 0.0
    pol = NumpyPolicy(pf)
    o = np.tile(np.asarray(pf.obs_mean, np.float32), (2, 1))
    o[1, names.index("power_w")], o[1, names.index("affordable_power_w")] = 400.0, 0.0
    np.testing.assert_array_equal(pol.logits_batch(o[:1]), pol.logits_batch(o[1:]))


def test_echo_is_every_feature_that_reports_the_previous_action_and_no_state():
    """ObsLayout.echo: the configuration block of any space (placement and split knobs included) and the last
    step's latency and draw; never the state a policy needs (charge, heat, demand, queue)."""
    from envs.power_env import MicroLLMPowerEnv
    from runtime.configspace import place_space, split_space
    from runtime.observation import ObsLayout

    env = MicroLLMPowerEnv(params=EnvParams(power_cap=4.0))
    assert env.layout.echo == ("latency_over_slo", "config_depth_frac", "config_heads_frac", "config_bits_frac",
                               "power_w", "power_frac")
    for space in (place_space(), split_space()):
        lay = ObsLayout(space.features, power_cap=0.0)
        cfg = [f.name for f in space.features]
        assert len(cfg) > 3 and set(cfg) <= set(lay.echo) and "power_frac" not in lay.echo
        assert not {"soc", "temp_c", "demand_tps", "backlog_frac", "supply_w"} & set(lay.echo)


def test_obs_drop_echo_trains_a_policy_blind_to_its_last_choice(tmp_path):
    """--obs-drop echo: the run records the echo features as dropped, and the exported policy's logits do not
    move whatever the configuration block, the last draw and latency read; an empty echo list leaves the word
    unknown (refused with the layout)."""
    import train
    from runtime.policy import NumpyPolicy, load_policy_file

    names = ["soc", "latency_over_slo", "config_depth_frac"]
    np.testing.assert_array_equal(train.obs_drop_mask("echo", names, True, names[1:]), [False, True, True])
    with pytest.raises(SystemExit, match="no feature 'echo'"):
        train.obs_drop_mask("echo", names, True, ())
    prof = save_profile(example_profile(12), tmp_path / "p.json")
    run = train.main(train.Args(algo="maskable_ppo", profile=str(prof), total_timesteps=256, n_envs=4, eval_freq=256,
                                eval_episodes=1, checkpoint_freq=256, runs_dir=str(tmp_path / "runs"),
                                final_eval=False, progress=False, bc_expert="none", obs_drop="echo",
                                env=EnvParams(max_episode_steps=16, power_cap=4.0)))
    feats = json.loads((run / "config.json").read_text())["obs_features"]
    import deploy

    deploy.export_run(run, tmp_path / "policy.npz")
    pf = load_policy_file(tmp_path / "policy.npz")
    echo = [feats.index(n) for n in ("latency_over_slo", "config_depth_frac", "config_heads_frac",
                                     "config_bits_frac", "power_w", "power_frac")]
    assert (pf.obs_min[echo] == 0).all() and (pf.obs_max[echo] == 0).all()
    assert (pf.obs_max[feats.index("soc")] > 0)
    o = np.tile(np.asarray(pf.obs_mean, np.float32), (2, 1))
    o[1, echo] = [3.0, 0.2, 0.5, 0.125, 9.0, 2.5]  # a small configuration, slow and drawing
    pol = NumpyPolicy(pf)
    np.testing.assert_array_equal(pol.logits_batch(o[:1]), pol.logits_batch(o[1:]))
