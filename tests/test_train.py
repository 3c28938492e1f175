"""train.py end to end with a tiny budget: run folder, TensorBoard scalars, evaluation report."""

from __future__ import annotations

import json

import numpy as np
import pytest

from model.profile_schema import example_profile, save_profile
from runtime.dynamics import EnvParams


@pytest.mark.parametrize("algo,lagrangian", [("ppo", False), ("maskable_ppo", False), ("maskable_ppo", True)])
def test_train_smoke_run(tmp_path, capsys, algo, lagrangian):
    import train

    prof = save_profile(example_profile(12), tmp_path / "p.json")
    args = train.Args(bc_expert="none", algo=algo, profile=str(prof), total_timesteps=1024, n_envs=4, eval_freq=512,
                      lagrangian=lagrangian, eval_episodes=2, checkpoint_freq=512, runs_dir=str(tmp_path / "runs"),
                      final_eval=algo == "ppo", env=EnvParams(max_episode_steps=12), progress=False)
    run = train.main(args)
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["algo"] == algo and cfg["total_timesteps"] == 1024 and "warm_start" not in cfg
    assert cfg["hyperparams"]["learning_rate"] == train.load_hyperparams(algo)["learning_rate"]  # from scratch
    assert (cfg["lagrange_lambda"] is not None) == lagrangian
    assert len(cfg["decode_table"]) == 12 and len(cfg["obs_features"]) == 19
    # the machine it trained on: one seed trains other weights on another CPU kernel level or torch
    import torch

    host = cfg["host"]
    assert host["torch_version"] == str(torch.__version__) and host["threads"] == args.threads
    assert host["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability() and host["cpu_model"]
    assert host["packages"]["stable-baselines3"] and host["packages"]["gymnasium"]
    for f in ("policy_state.pt", "vecnormalize.npz", "model.zip"):
        assert (run / f).exists(), f
    assert list((run / "tb").rglob("events.out.tfevents.*"))
    # the best-on-val policy is kept (fixed val episodes), the last one saved beside it
    sel = cfg["selected"]
    assert 0 < sel["step"] <= 1024 + 4 * 128 and sel["val_episodes"] == 2
    assert (run / "last" / "policy_state.pt").exists()
    import numpy as np

    # every checkpoint with the observation statistics it was trained on, as plain arrays
    zips = sorted(p.name for p in (run / "checkpoints").glob("model_*_steps.zip"))
    stats = sorted(p.name for p in (run / "checkpoints").glob("model_vecnormalize_*_steps.npz"))
    assert zips and [z.replace("model_", "model_vecnormalize_").replace(".zip", ".npz") for z in zips] == stats
    with np.load(run / "checkpoints" / stats[-1], allow_pickle=False) as z:
        assert z["mean"].shape == (19,)

    ev = np.load(run / "eval" / "evaluations.npz")
    assert ev["results"].shape[1] == 2 and np.isclose(ev["results"].mean(axis=1).max(), sel["val_return"])
    if algo == "ppo":
        assert "evaluate:" not in capsys.readouterr().err  # --no-progress reaches the final evaluation's bar too
        report = json.loads((run / "report.json").read_text())
        names = json.dumps(report)
        assert "oracle" in names and "static-largest" in names and "rl:ppo" in names


def test_warm_start_bc_then_dagger(tmp_path, capsys):
    import train

    prof = save_profile(example_profile(12), tmp_path / "p.json")
    args = train.Args(algo="maskable_ppo", profile=str(prof), total_timesteps=512, n_envs=4, eval_freq=512,
                      eval_episodes=1, checkpoint_freq=512, runs_dir=str(tmp_path / "runs"), final_eval=False,
                      env=EnvParams(max_episode_steps=24), progress=False, bc_expert="schedutil", bc_episodes=4,
                      dagger_rounds=1,
                      dagger_episodes=2, bc_epochs=2)
    run = train.main(args)
    cfg = json.loads((run / "config.json").read_text())
    ws = cfg["warm_start"]
    assert ws["expert"] == "schedutil" and len(ws["rounds"]) == 2
    assert np.isfinite(ws["val_return"])  # the imitated policy's own val return, the bar the RL step must clear
    assert cfg["hyperparams"]["learning_rate"] == train.WARM_START_LR  # --learning-rate 0 after a warm start
    assert ws["rounds"][1]["transitions"] > ws["rounds"][0]["transitions"] > 0
    assert list((run / "tb" / "pretrain").rglob("events.out.tfevents.*"))
    from agents.run_io import load_controller

    assert load_controller(run / "warm_start").predict(np.zeros(19, np.float32))[0].shape == ()
    # the pooled demonstrations are saved and can seed another run without collecting again
    demos = run / "warm_start" / "demos.npz"
    again = train.main(train.Args(**{**args.__dict__, "bc_demos": str(demos), "dagger_rounds": 0,
                                     "total_timesteps": 0, "gamma": 0.999}))
    cfg2 = json.loads((again / "config.json").read_text())
    ws2 = cfg2["warm_start"]
    assert cfg2["hyperparams"]["gamma"] == 0.999 and cfg["hyperparams"]["gamma"] == train.load_hyperparams(
        "maskable_ppo")["gamma"]  # --gamma, else the YAML's
    assert f"(loaded from {demos})" in capsys.readouterr().out  # not the earlier run's collection time
    assert ws2["rounds"][0]["transitions"] == ws["rounds"][1]["transitions"] and ws2["demos_from"] == str(demos)
    with pytest.raises(SystemExit, match="demonstrations of 'schedutil'"):
        train.main(train.Args(**{**args.__dict__, "bc_demos": str(demos), "bc_expert": "oracle"}))


@pytest.mark.parametrize("ws_val,kept", [(1e9, "warm start"), (-1e9, "best val return")])
def test_select_warm_start_keeps_the_imitated_policy_unless_a_checkpoint_beats_it(tmp_path, monkeypatch, ws_val,
                                                                                  kept):
    """--select-warm-start: the warm start is a candidate with its val return (patched here to one no checkpoint
    can beat, or to one every checkpoint beats); the kept policy is then the warm start's weights, or not."""
    import torch

    import train

    monkeypatch.setattr(train, "val_return", lambda *a, **k: ws_val)
    prof = save_profile(example_profile(12), tmp_path / "p.json")
    run = train.main(train.Args(algo="maskable_ppo", profile=str(prof), total_timesteps=1024, n_envs=4,
                                eval_freq=512, eval_episodes=1, checkpoint_freq=1024, runs_dir=str(tmp_path / "runs"),
                                final_eval=False, env=EnvParams(max_episode_steps=24), progress=False,
                                bc_expert="schedutil", bc_episodes=4, dagger_rounds=0, bc_epochs=2,
                                learning_rate=1e-2, select_warm_start=True))
    sel = json.loads((run / "config.json").read_text())["selected"]
    assert sel["from"] == kept and (sel["step"] == 0) == (kept == "warm start")
    final = torch.load(run / "policy_state.pt", weights_only=True)
    ws = torch.load(run / "warm_start" / "policy_state.pt", weights_only=True)
    same = all(torch.equal(final[k], ws[k]) for k in ws)
    assert same == (kept == "warm start")


@pytest.mark.parametrize("freeze", [True, False])
def test_freeze_obs_norm_keeps_the_warm_start_statistics_through_the_rl_step(tmp_path, freeze):
    """--freeze-obs-norm: the last RL policy's observation statistics are the warm start's, bit for bit; without
    it VecNormalize moves them with every RL step (randomised batteries here, so the inputs do differ)."""
    import train

    prof = save_profile(example_profile(12), tmp_path / "p.json")
    run = train.main(train.Args(algo="maskable_ppo", profile=str(prof), total_timesteps=1024, n_envs=4,
                                eval_freq=512, eval_episodes=1, checkpoint_freq=1024, runs_dir=str(tmp_path / "runs"),
                                final_eval=False, env=EnvParams(max_episode_steps=24), progress=False,
                                bc_expert="schedutil", bc_episodes=4, dagger_rounds=0, bc_epochs=2,
                                low_soc_frac=0.5, capacity_sigma=0.5, freeze_obs_norm=freeze))
    ws = np.load(run / "warm_start" / "vecnormalize.npz", allow_pickle=False)
    last = np.load(run / "last" / "vecnormalize.npz", allow_pickle=False)
    ws_mean, ws_var, last_mean, last_var = ws["mean"], ws["var"], last["mean"], last["var"]
    same = np.array_equal(ws_mean, last_mean) and np.array_equal(ws_var, last_var)
    assert same == freeze


def test_bc_explore_tempers_the_clone_to_the_asked_departure_rate(tmp_path):
    """--bc-explore: the same seed, demonstrations and fit, and the saved warm start's action head is the untempered
    one divided by the recorded temperature, which makes the stochastic policy depart from its deterministic action
    at the asked rate on the demonstration states (config.json)."""
    import torch

    import train

    prof = save_profile(example_profile(12), tmp_path / "p.json")
    runs = {e: train.main(train.Args(profile=str(prof), total_timesteps=0, n_envs=2, runs_dir=str(tmp_path / "runs"),
                                     exp_name=f"e{e:g}", final_eval=False, progress=False,
                                     env=EnvParams(max_episode_steps=24), bc_expert="schedutil", bc_episodes=4,
                                     dagger_rounds=0, bc_epochs=40, bc_lr=1e-2, bc_explore=e))
            for e in (0.0, 0.2)}
    ws = json.loads((runs[0.2] / "config.json").read_text())["warm_start"]["tempered"]
    assert ws["chosen_prob_after"] == pytest.approx(0.8, abs=1e-3) and ws["chosen_prob_before"] > 0.8
    assert ws["temperature"] > 1.0
    assert json.loads((runs[0.0] / "config.json").read_text())["warm_start"]["tempered"] is None
    sd = {e: torch.load(run / "warm_start" / "policy_state.pt", weights_only=True) for e, run in runs.items()}
    for k in ("action_net.weight", "action_net.bias"):
        assert torch.allclose(sd[0.0][k] / ws["temperature"], sd[0.2][k], rtol=1e-4, atol=1e-7)
    assert torch.equal(sd[0.0]["mlp_extractor.policy_net.0.weight"], sd[0.2]["mlp_extractor.policy_net.0.weight"])


def test_temper_policy_keeps_the_argmax_and_spreads_the_probabilities():
    import torch
    from sb3_contrib import MaskablePPO

    from agents.imitation import temper_policy
    from envs.power_env import MicroLLMPowerEnv

    env = MicroLLMPowerEnv(profile=example_profile(12), split="train")
    model = MaskablePPO("MlpPolicy", env, seed=0, device="cpu")
    with torch.no_grad():
        model.policy.action_net.weight.mul_(20.0)  # a peaked policy, as a clone fitted to 100 % accuracy is
    x = torch.randn(256, env.observation_space.shape[0])
    p0 = model.policy.get_distribution(x).distribution.probs.detach()
    temper_policy(model, 5.0)
    p1 = model.policy.get_distribution(x).distribution.probs.detach()
    assert torch.equal(p0.argmax(-1), p1.argmax(-1))
    assert float(p1.max(-1).values.mean()) < float(p0.max(-1).values.mean())
    with pytest.raises(ValueError, match="temperature must be > 0"):
        temper_policy(model, 0.0)


def test_warm_start_rejects_unknown_expert_and_dqn(tmp_path):
    import train

    prof = save_profile(example_profile(12), tmp_path / "p.json")
    base = dict(profile=str(prof), total_timesteps=0, n_envs=2, runs_dir=str(tmp_path / "runs"), final_eval=False,
                progress=False, bc_episodes=1)
    with pytest.raises(SystemExit, match="choose one of"):
        train.main(train.Args(bc_expert="nope", **base))
    with pytest.raises(SystemExit, match="actor-critic"):
        train.main(train.Args(algo="dqn", bc_expert="schedutil", **base))
    with pytest.raises(SystemExit, match="no such file; fix"):
        train.main(train.Args(bc_expert="oracle", bc_demos=str(tmp_path / "none.npz"), **base))
    np.savez(tmp_path / "stats.npz", mean=np.zeros(3))  # an .npz, but not demonstrations
    (tmp_path / "text.npz").write_text("not a zip")
    for bad in ("stats.npz", "text.npz"):
        with pytest.raises(SystemExit, match=rf"{bad}: (not a demonstrations file|cannot read it).*fix: pass"):
            train.main(train.Args(bc_expert="oracle", bc_demos=str(tmp_path / bad), **base))
    assert not (tmp_path / "runs").exists()  # refused before a run folder was made
    with pytest.raises(SystemExit, match="needs --bc-expert"):
        train.main(train.Args(bc_expert="none", clone_kl=0.5, **base))
    with pytest.raises(SystemExit, match="needs --algo maskable_ppo"):
        train.main(train.Args(algo="ppo", bc_expert="schedutil", clone_kl=0.5, **base))
    with pytest.raises(SystemExit, match="--hot-trip places the hot episodes of --hot-frac, which is 0"):
        train.main(train.Args(bc_expert="none", hot_frac=0.0, hot_trip=True, **base))
    with pytest.raises(SystemExit, match="--demo-dr .on by default. with --hot-trip.*fix: add --no-demo-dr"):
        train.main(train.Args(bc_expert="schedutil", hot_frac=0.3, hot_trip=True, **base))
    with pytest.raises(SystemExit, match="--bc-explore tempers .* needs --bc-expert"):
        train.main(train.Args(bc_expert="none", bc_explore=0.1, **base))
    assert not (tmp_path / "runs").exists()  # failed before building anything


def test_demo_dr_collects_the_warm_start_on_nearly_empty_batteries(tmp_path):
    import train

    prof = save_profile(example_profile(12), tmp_path / "p.json")
    run = train.main(train.Args(profile=str(prof), total_timesteps=0, n_envs=2, runs_dir=str(tmp_path / "runs"),
                                final_eval=False, progress=False, env=EnvParams(max_episode_steps=6),
                                bc_expert="schedutil", bc_episodes=3, dagger_rounds=0, bc_epochs=1, demo_dr=True,
                                low_soc_frac=1.0, capacity_sigma=0.0, hot_frac=0.0))
    ws = json.loads((run / "config.json").read_text())["warm_start"]
    assert ws["randomised"] == {"low_soc_frac": 1.0, "capacity_sigma": 0.0, "reserve_soc": 0.05,
                              "hot_frac": 0.0}
    with np.load(run / "warm_start" / "demos.npz", allow_pickle=False) as z:
        starts = np.r_[0, z["episode_ends"][:-1]]
        assert np.all(z["obs"][starts, 0] <= 0.3)  # feature 0: every episode started nearly empty


@pytest.mark.parametrize("rl_dr", [True, False])
def test_no_rl_dr_trains_on_the_traces_as_recorded_and_keeps_the_demonstrations_randomised(tmp_path, monkeypatch,
                                                                                         rl_dr):
    import train

    seen = {}
    real = train.BatchedPowerEnv

    def spy(*a, **kw):
        seen.update(kw)
        return real(*a, **kw)

    monkeypatch.setattr(train, "BatchedPowerEnv", spy)
    prof = save_profile(example_profile(12), tmp_path / "p.json")
    run = train.main(train.Args(profile=str(prof), total_timesteps=0, n_envs=2, runs_dir=str(tmp_path / "runs"),
                                final_eval=False, progress=False, env=EnvParams(max_episode_steps=6),
                                bc_expert="schedutil", bc_episodes=3, dagger_rounds=0, bc_epochs=1, demo_dr=True,
                                low_soc_frac=1.0, capacity_sigma=0.5, hot_frac=0.5, speed_sigma=0.2, rl_dr=rl_dr))
    drawn = {k: seen[k] for k in ("low_soc_frac", "capacity_sigma", "hot_frac", "speed_sigma")}
    assert drawn == ({"low_soc_frac": 1.0, "capacity_sigma": 0.5, "hot_frac": 0.5, "speed_sigma": 0.2} if rl_dr
                     else dict.fromkeys(drawn, 0.0))
    ws = json.loads((run / "config.json").read_text())["warm_start"]
    assert ws["randomised"]["low_soc_frac"] == 1.0 and ws["randomised"]["capacity_sigma"] == 0.5  # demos: as asked


def test_no_rl_dr_says_when_the_randomisation_has_nothing_left_to_randomise(tmp_path, capsys):
    import train

    prof = save_profile(example_profile(12), tmp_path / "p.json")
    base = dict(profile=str(prof), total_timesteps=0, n_envs=2, final_eval=False, progress=False,
                env=EnvParams(max_episode_steps=6), low_soc_frac=0.5, rl_dr=False)
    train.main(train.Args(bc_expert="none", runs_dir=str(tmp_path / "a"), **base))
    assert "randomise nothing in this run" in capsys.readouterr().out
    train.main(train.Args(bc_expert="schedutil", bc_episodes=2, dagger_rounds=0, bc_epochs=1,
                          runs_dir=str(tmp_path / "b"), **base))
    assert "randomise nothing" not in capsys.readouterr().out  # the demonstrations still draw it


def test_demo_dr_with_the_masked_oracle_labels_hot_and_resized_episodes(tmp_path):
    import train

    prof = save_profile(example_profile(12), tmp_path / "p.json")
    run = train.main(train.Args(profile=str(prof), total_timesteps=0, n_envs=2, runs_dir=str(tmp_path / "runs"),
                                final_eval=False, progress=False, env=EnvParams(max_episode_steps=6),
                                bc_expert="oracle-masked", bc_oracle_grid="11,5,3", bc_episodes=3, dagger_rounds=0,
                                bc_epochs=1, demo_dr=True, hot_frac=1.0, capacity_sigma=0.5))
    ws = json.loads((run / "config.json").read_text())["warm_start"]
    assert ws["randomised"]["hot_frac"] == 1.0 and ws["randomised"]["capacity_sigma"] == 0.5
    with np.load(run / "warm_start" / "demos.npz", allow_pickle=False) as z:
        assert z["masks"][np.arange(len(z["labels"])), z["labels"]].all()  # every label one the env allowed


def test_fixed_val_episodes_repeat_after_rewind(tmp_path):
    import gymnasium as gym

    import envs
    import train

    prof = save_profile(example_profile(12), tmp_path / "p.json")
    env = train.FixedEpisodes(gym.make(envs.ENV_ID, profile=str(prof), split="val"),
                              [{"trace": 0, "start": 3}, {"trace": 1, "start": 0}])
    first = [env.reset()[1]["start"] for _ in range(3)]
    env.rewind()
    assert first == [3, 0, 3] and env.reset()[1]["start"] == 3


def test_val_episodes_keep_their_objective_at_every_evaluation(tmp_path):
    """Under ``mix`` the env draws each episode's objective from its generator: the val episodes fix it
    (``train.val_objectives``), so two evaluations of one policy run the same objectives; without it they do not.
    The kinds follow the mix's shares and are spread over the list; other objectives leave the episodes as they are."""
    import gymnasium as gym

    import envs
    import train
    from runtime.dynamics import Objective

    mix = Objective(kind="mix")
    eps = [{"trace": k % 2, "start": k} for k in range(24)]
    fixed = train.val_objectives(eps, mix)
    kinds = [e["objective"] for e in fixed]
    assert {k: kinds.count(k) for k in set(kinds)} == {"min-energy": 8, "last-until": 8, "max-quality": 8}
    assert all(kinds[i:i + 3].count(kinds[i]) < 3 for i in range(22))  # never three of a kind in a row
    assert [{k: v for k, v in e.items() if k != "objective"} for e in fixed] == eps
    assert train.val_objectives(eps, Objective(kind="min-energy")) is eps
    skew = [e["objective"] for e in train.val_objectives(eps, Objective(kind="mix", mix_min_energy=0.5,
                                                                       mix_last_until=0.25))]
    assert abs(skew.count("min-energy") - 12) <= 1 and abs(skew.count("last-until") - 6) <= 1

    prof = save_profile(example_profile(12), tmp_path / "p.json")

    def passes(episodes):
        env = train.FixedEpisodes(gym.make(envs.ENV_ID, profile=str(prof), split="val",
                                           params=EnvParams(objective=mix)), episodes)
        env.reset(seed=0)
        env.rewind()
        out = []
        for _ in range(2):
            out.append([(env.reset(), env.unwrapped.objective)[1] for _ in episodes])
            env.rewind()
        return out

    some = [{"trace": 0, "start": k} for k in range(8)]
    a, b = passes(train.val_objectives(some, mix))
    assert a == b and len(set(a)) == 3
    a, b = passes(some)  # drawn anew at each pass
    assert a != b


def test_val_episodes_spread_over_start_rows_on_a_small_split():
    import train

    # more traces than episodes: traces spread evenly, each from row 0 (the earlier behaviour)
    assert train.spread_val_episodes([900] * 30, 3, 720) == [{"trace": 0, "start": 0}, {"trace": 14, "start": 0},
                                                             {"trace": 30 - 1, "start": 0}]
    rows = [790, 936, 576, 1175, 1379, 890]  # the default set's val split
    eps = train.spread_val_episodes(rows, 24, 720)
    pairs = [(e["trace"], e["start"]) for e in eps]
    assert len(pairs) == len(set(pairs)) == 24
    for k, n_rows in enumerate(rows):  # every trace, from row 0 up to the last start leaving half an episode
        starts = [s for t, s in pairs if t == k]
        assert len(starts) == 4 and starts[0] == 0 and max(starts) == max(0, n_rows - 360)
    # a trace too short for another start gives fewer episodes, never the same one twice
    assert train.spread_val_episodes([300, 2000], 6, 720) == [
        {"trace": 0, "start": 0}, {"trace": 1, "start": 0}, {"trace": 1, "start": 820}, {"trace": 1, "start": 1640}]


def test_hot_val_episodes_put_each_trace_near_its_trip_point():
    """--val-hot-episodes: copies of val episodes spread over the list, the mean ambient 2-10 deg C below the
    device's trip point; the scalar env then runs hot there (and never cools a trace that is already hot)."""
    import train
    from envs.power_env import MicroLLMPowerEnv

    env = MicroLLMPowerEnv(split="val", random_start=False)
    base = train.spread_val_episodes([t.n for t in env.traces], 24, 720)
    hot = train.hot_val_episodes(base, env.traces, 12)
    assert len(hot) == 12 and train.hot_val_episodes(base, env.traces, 0) == []
    assert {h["trace"] for h in hot} == set(range(len(env.traces)))  # every trace gets its share
    margins = []
    for h in hot:
        tr = env.traces[h["trace"]]
        assert {k: h[k] for k in ("trace", "start")} in base and h["ambient_shift_c"] >= 0
        margins.append(tr.device.t_max_c - (np.mean(tr.ambient_c) + h["ambient_shift_c"]))
    np.testing.assert_allclose(margins, np.linspace(2.0, 10.0, 12), atol=1e-3)
    k = next(i for i, t in enumerate(env.traces) if t.device_kind == "phone")
    cool, _ = env.reset(options={"trace": k, "start": 0})
    shifted, _ = env.reset(options=train.hot_val_episodes([{"trace": k, "start": 0}], env.traces, 1)[0])
    head = env.layout.index["temp_headroom_c"]
    assert shifted[head] < 5.0 < cool[head]  # within schedutil's thermal-cap band only when shifted
    already = [{"trace": k, "start": 0, "ambient_shift_c": 0.0}]
    # a trace already hotter than its trip point keeps its ambient: the shift is 0, never negative
    assert train.hot_val_episodes(already, [_Hot(env.traces[k])], 1)[0]["ambient_shift_c"] == 0


def test_low_soc_val_episodes_start_each_copy_nearly_empty():
    """--val-low-soc-episodes: copies of val episodes spread over the list, started at a charge spread evenly over
    (reserve, LOW_SOC_MAX]; the scalar env starts there."""
    import train
    from envs.batched import LOW_SOC_MAX
    from envs.power_env import MicroLLMPowerEnv

    env = MicroLLMPowerEnv(split="val", random_start=False)
    base = train.spread_val_episodes([t.n for t in env.traces], 24, 720)
    low = train.low_soc_val_episodes(base, 6, 0.05)
    assert len(low) == 6 and train.low_soc_val_episodes(base, 0, 0.05) == []
    assert {lo["trace"] for lo in low} == set(range(len(env.traces)))
    assert all({k: lo[k] for k in ("trace", "start")} in base for lo in low)
    socs = [lo["soc"] for lo in low]
    np.testing.assert_allclose(socs, np.linspace(0.05, LOW_SOC_MAX, 7)[1:], atol=1e-4)
    soc_i = env.layout.index["soc"]
    for lo in low[:2]:
        obs, _ = env.reset(options=lo)
        assert obs[soc_i] == pytest.approx(lo["soc"], abs=1e-4)


class _Hot:
    """A trace whose ambient already sits at its device's trip point."""

    def __init__(self, tr):
        self.device, self.ambient_c = tr.device, [tr.device.t_max_c + 1.0] * 10


def test_val_envs_run_every_fixed_episode_once(tmp_path):
    """The val episodes split over several envs as SB3's evaluate_policy counts them: each runs once."""
    import gymnasium as gym
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.vec_env import DummyVecEnv

    import envs
    import train

    prof = save_profile(example_profile(12), tmp_path / "p.json")
    class Recording(train.FixedEpisodes):
        def reset(self, *, seed=None, options=None):
            obs, info = super().reset(seed=seed, options=options)
            self.started = [*getattr(self, "started", []), (self.unwrapped.traces.index(self.unwrapped.trace),
                                                            info["start"])]
            return obs, info

    rows = [t.n for t in gym.make(envs.ENV_ID, profile=str(prof), split="val").unwrapped.traces]
    eps = train.spread_val_episodes(rows, 7, 20)
    shares = train.val_shares(len(eps), 4)
    assert [len(s) for s in shares] == [1, 2, 2, 2] and sorted(sum(shares, [])) == list(range(7))

    def make(share):
        return lambda: Recording(gym.make(envs.ENV_ID, profile=str(prof), split="val", max_episode_steps=20),
                                 [eps[j] for j in share])

    venv = DummyVecEnv([make(s) for s in shares])

    class First:  # always configuration 0
        def predict(self, obs, state=None, episode_start=None, deterministic=True):
            return np.zeros(len(obs), dtype=np.int64), state

    rewards, _ = evaluate_policy(First(), venv, n_eval_episodes=len(eps), return_episode_rewards=True)
    assert len(rewards) == 7
    # the episodes evaluate_policy counts (env i's first (n + i) // n_envs) are exactly the fixed ones, each once
    # (an env's extra resets after its last counted episode are not counted)
    counted = [p for i, e in enumerate(venv.envs) for p in e.started[:(7 + i) // 4]]
    assert sorted(counted) == sorted((e["trace"], e["start"]) for e in eps)


def test_lookahead_trains_exports_and_decides(tmp_path):
    """EnvParams.lookahead end to end: the batched env trains on it, the run folder and the policy
    file store it, and the runtime builds the longer observation from the supply forecast."""
    import deploy
    import train
    from runtime.manager import RuntimeManager
    from runtime.policy import load_policy_file
    from runtime.sensors import ConstantSensor, SensorHub

    prof = save_profile(example_profile(12), tmp_path / "p.json")
    run = train.main(train.Args(profile=str(prof), total_timesteps=256, n_envs=4, eval_freq=256, eval_episodes=1,
                                bc_expert="none",
                                checkpoint_freq=256, runs_dir=str(tmp_path / "runs"), final_eval=False,
                                progress=False, env=EnvParams(lookahead=3, max_episode_steps=16)))
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["env_params"]["lookahead"] == 3 and cfg["obs_features"][-1] == "supply_w_ahead_3"
    deploy.export_run(run, tmp_path / "p.npz")
    pf = load_policy_file(tmp_path / "p.npz")
    assert pf.lookahead == 3 and pf.obs_dim == 22
    hub = SensorHub([ConstantSensor({"soc_frac": 0.8, "plugged": 0.0, "temp_c": 30.0, "ambient_c": 25.0,
                                     "power_w": 1.0, "supply_w": 0.0, "bandwidth_mbps": 10.0})])
    mgr = RuntimeManager(pf, hub)
    mgr.set_workload(demand_tps=20.0, supply_ahead_w=[1.0, 2.0, 600.0])
    mgr.decide(0.0)
    assert mgr.obs.shape == (22,) and list(mgr.obs[-3:]) == [1.0, 2.0, 500.0]  # clipped to the bound


def test_the_main_jobs_defaults():
    """`python train.py` warm-starts the flat head from the masked oracle (demonstrations and DAgger under the
    training randomisation) on MAIN_JOB_ENV; --action-head auto resolves per algorithm and warm start (a Q-network
    needs one value per action) and the run folder records the resolved head."""
    import train
    from runtime.dynamics import EnvParams

    a = train.Args()
    assert a.action_head == "flat" and a.env == train.MAIN_JOB_ENV
    assert a.env.thermal_obs and a.env.thermal_cap > 0 and a.env.demand_avg_s > 0 and a.env.power_cap > 0
    assert a.bc_expert == "oracle-masked" and a.dagger_rounds == 3 and a.demo_dr and a.freeze_obs_norm
    assert a.hot_frac > 0 and a.low_soc_frac > 0 and a.capacity_sigma > 0 and a.obs_drop == "power_w"
    assert train.Args(bc_expert="none").action_head == "factorised"
    assert train.Args(bc_expert="none", algo="ppo").action_head == "factorised"
    assert train.Args(bc_expert="none", algo="dqn").action_head == "flat"
    assert train.Args(bc_expert="none", action_head="flat").action_head == "flat"
    # "none" (from scratch) is the same as empty
    assert train.Args(bc_expert="none").bc_expert == "" and train.Args(bc_expert="oracle").bc_expert == "oracle"
    with pytest.raises(ValueError, match="factorised needs a MultiDiscrete"):
        train.Args(bc_expert="none", algo="dqn", action_head="factorised")
    # the environment's own defaults keep the base observation (policy files written before read as they did)
    assert not EnvParams().thermal_obs and EnvParams().demand_avg_s == 0


def test_the_warm_start_plans_and_cuts_its_demonstrations_at_the_training_episode_length(tmp_path, monkeypatch):
    """``--env.max-episode-steps`` other than the registered 720: the demonstration env is cut there, and an oracle
    expert plans that far (not 720 steps, saving the battery for steps that never come)."""
    import agents.imitation
    import train

    seen = {}

    class Stop(Exception):
        pass

    def fake_collect(env, expert, episodes, **kw):
        seen.update(limit=env.spec.max_episode_steps, max_steps=kw["max_steps"], **kw["expert_kwargs"])
        raise Stop

    monkeypatch.setattr(agents.imitation, "collect", fake_collect)
    prof = save_profile(example_profile(12), tmp_path / "p.json")
    for steps in (100, 1440):
        with pytest.raises(Stop):
            train.main(train.Args(profile=str(prof), total_timesteps=0, n_envs=2, runs_dir=str(tmp_path / "runs"),
                                  final_eval=False, progress=False, env=EnvParams(max_episode_steps=steps),
                                  bc_expert="oracle-masked", bc_oracle_grid="11,5,3", bc_episodes=1,
                                  dagger_rounds=0))
        assert seen["limit"] == seen["max_steps"] == seen["horizon_steps"] == steps


@pytest.mark.parametrize("val_rules", [True, False])
def test_val_holds_the_users_floor_and_budget_as_scoring_does(tmp_path, monkeypatch, val_rules):
    """Args.val_rules: the val envs that choose the kept policy hold the floor and budget rules (as agents.evaluate
    and the device do) while the training envs keep the run's own parameters; --no-val-rules: val as trained."""
    import gymnasium as gym

    import train

    made = []
    real_make = gym.make

    def spy(*a, **kw):
        made.append((kw.get("split"), kw.get("params")))
        return real_make(*a, **kw)

    monkeypatch.setattr(gym, "make", spy)
    prof = save_profile(example_profile(12), tmp_path / "p.json")
    args = train.Args(bc_expert="none", profile=str(prof), total_timesteps=256, n_envs=4, eval_freq=256,
                      eval_episodes=1, checkpoint_freq=256, runs_dir=str(tmp_path / "runs"), final_eval=False,
                      env=EnvParams(max_episode_steps=12), progress=False, val_rules=val_rules)
    train.main(args)
    val = [p for s, p in made if s == "val"]
    assert val and all(p.floor_rule == val_rules and p.budget_rule == val_rules for p in val)
    assert train.val_env_params(args).max_episode_steps == 12  # the rest is the run's own
    assert not args.env.floor_rule and not args.env.budget_rule  # training unchanged


def test_min_energy_labels_cheapest_relabels_what_the_student_fits_not_the_saved_demonstrations(tmp_path, capsys):
    """--bc-min-energy-labels cheapest: the student is fitted to the cheapest allowed configuration on min-energy
    steps; the run's config says how many labels that changed, and the saved demonstrations keep the expert's own
    (they seed later runs as that expert's). Refused with the fix where no step is a min-energy one or there is no
    imitation at all."""
    import gymnasium as gym

    import envs
    import train
    from agents.imitation import Demonstrations
    from runtime.dynamics import Objective

    prof = save_profile(example_profile(12), tmp_path / "p.json")
    base = dict(algo="maskable_ppo", profile=str(prof), total_timesteps=0, n_envs=2, runs_dir=str(tmp_path / "runs"),
                final_eval=False, progress=False, bc_expert="static-largest", bc_episodes=12, dagger_rounds=0,
                bc_epochs=1, eval_episodes=1, seed=4)
    mix = EnvParams(max_episode_steps=20, objective=Objective(kind="mix"), floor_rule=True)
    # with a DAgger round and raised floors: the student is refitted to the pooled data, relabelled again
    run = train.main(train.Args(env=mix, bc_min_energy_labels="cheapest", bc_raised_floors=0.5,
                                **{**base, "dagger_rounds": 1, "dagger_episodes": 2}))
    ws = json.loads((run / "config.json").read_text())["warm_start"]
    assert len(ws["rounds"]) == 2 and ws["raised_floors"] == 0.5 and ws["relabelled"] > 0
    # raised budgets and borrowed states change what the student reads, not its labels: recorded with the run
    run = train.main(train.Args(env=mix, bc_min_energy_labels="cheapest", bc_raised_budgets=0.5,
                                bc_borrowed_states=0.5, **base))
    ws = json.loads((run / "config.json").read_text())["warm_start"]
    assert ws["raised_budgets"] == 0.5 and ws["borrowed_states"] == 0.5
    assert "with raised budgets" in capsys.readouterr().out
    run = train.main(train.Args(env=mix, bc_min_energy_labels="cheapest", **base))
    ws = json.loads((run / "config.json").read_text())["warm_start"]
    assert ws["min_energy_labels"] == "cheapest" and ws["relabelled"] > 0 and ws["drawn_masks"] == 0
    assert ws["raised_budgets"] == 0 and ws["borrowed_states"] == 0
    assert f"{ws['relabelled']} of " in capsys.readouterr().out
    from agents.imitation import cheapest_labels

    saved = Demonstrations.load(run / "warm_start" / "demos.npz", "static-largest")
    u = gym.make(envs.ENV_ID, profile=str(prof), split="train", params=mix).unwrapped
    # the expert's own labels were saved: relabelling them again changes as many as the run did
    assert cheapest_labels(saved, u.costs, u.feature_names, "mix")[1] == ws["relabelled"]
    with pytest.raises(SystemExit, match="no step is a min-energy one; fix: add --env.objective.kind mix"):
        train.main(train.Args(env=EnvParams(max_episode_steps=20), bc_min_energy_labels="cheapest", **base))
    with pytest.raises(SystemExit, match="choose expert"):
        train.main(train.Args(env=mix, bc_min_energy_labels="smallest", **base))
    for extra in (dict(bc_drawn_masks=0.5), dict(bc_raised_budgets=0.5), dict(bc_borrowed_states=0.5)):
        with pytest.raises(SystemExit, match="needs --bc-min-energy-labels cheapest"):
            train.main(train.Args(env=mix, **extra, **base))
    with pytest.raises(ValueError, match="--bc-drawn-masks: 2.0 is out of range"):
        train.Args(env=mix, bc_min_energy_labels="cheapest", bc_drawn_masks=2.0, **base)
    for extra in (dict(bc_min_energy_labels="cheapest"), dict(bc_raised_floors=0.5), dict(bc_raised_budgets=0.5),
                  dict(bc_borrowed_states=0.5)):
        with pytest.raises(SystemExit, match="need --bc-expert"):
            train.main(train.Args(env=mix, **extra, **{**base, "bc_expert": "none"}))
