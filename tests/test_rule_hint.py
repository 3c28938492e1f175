"""The rule hint (``EnvParams.rule_hint``): one schedutil-like rule (``runtime.rules.SchedutilRule``) behind the
baseline controller and the observation's ``hint_`` block, in the scalar env, the batched env and the manager."""

from __future__ import annotations

import numpy as np
import pytest

from agents.baselines import SchedutilController
from envs.power_env import MicroLLMPowerEnv
from runtime.observation import hint_rows, hint_table
from runtime.rules import step_down

PROFILE = "profiles/reference-cpu.json"
HINT_ENV = dict(thermal_obs=True, thermal_cap=2.0, demand_avg_s=60.0, rule_hint=True)


def test_the_vectorised_rule_is_the_scalar_rule():
    env = MicroLLMPowerEnv(profile=PROFILE, split="test", random_start=False)
    rule = SchedutilController(env).rule
    rng = np.random.default_rng(0)
    n = 4000
    demand = np.where(rng.random(n) < 0.2, 0.0, rng.lognormal(3.0, 1.5, n))
    backlog = np.where(rng.random(n) < 0.7, 0.0, rng.random(n))
    headroom = rng.uniform(-3.0, 12.0, n)  # most of them under the 5 degC thermal cap
    batch = rule.choose_batch(demand, backlog, headroom)
    scalar = [rule.choose(float(d), float(b), float(h)) for d, b, h in zip(demand, backlog, headroom)]
    np.testing.assert_array_equal(batch, scalar)
    assert len(set(scalar)) >= 5  # the draws walk the frontier, not one corner of it
    hot = (headroom < 0) & (demand + backlog > 0)
    assert set(np.asarray(scalar)[hot]) == {int(rule.front[0])}  # no headroom, tokens to serve: the cheapest
    masks = rng.random((n, len(rule.ept))) < 0.5
    masks[:, 0] = True
    np.testing.assert_array_equal(rule.masked_batch(batch, masks),
                                  [rule.masked(int(a), m) for a, m in zip(batch, masks)])


def test_the_rule_walks_a_narrowed_frontier():
    """A subclass (agents.placement_baselines' CPU-only rule) narrows the frontier; the rule follows it."""
    env = MicroLLMPowerEnv(profile=PROFILE, split="test", random_start=False)
    ctl = SchedutilController(env)
    full = ctl.act(np.zeros(env.observation_space.shape, np.float32) + _obs_at(env, 500.0, 0.0, 20.0), 0)
    ctl.front = ctl.front[:3]
    narrowed = ctl.act(_obs_at(env, 500.0, 0.0, 20.0), 0)
    assert narrowed in ctl.front[:3] and full not in ctl.front[:3]


def _obs_at(env, demand_tps, backlog_frac, headroom_c):
    obs = np.zeros(env.observation_space.shape, np.float32)
    names = env.unwrapped.layout.names
    obs[names.index("demand_tps")], obs[names.index("backlog_frac")] = demand_tps, backlog_frac
    obs[names.index("temp_headroom_c")] = headroom_c
    return obs


def test_the_hint_is_what_schedutil_runs_under_the_masks_on_a_heat_wave():
    env = MicroLLMPowerEnv(profile=PROFILE, split="test", random_start=False, **HINT_ENV)
    names = env.layout.names
    cols = [names.index(n) for n in names if n.startswith("hint_")]
    assert [names[c] for c in cols] == [r[0] for r in hint_rows(env.space)]
    assert "hint_bits_int4" in names and "hint_depth_L6" in names
    table = hint_table(env.space)
    assert (table.sum(1) == len(env.space.knobs)).all() and len(np.unique(table, axis=0)) == len(env.space)
    for i, cfg in enumerate(env.space.configs):  # row i: configuration i's value of each knob
        on = [names[cols[j]] for j in np.flatnonzero(table[i])]
        assert on == [f"hint_{k.name}_{k.fragment(v)}" for k, v in zip(env.space.knobs, cfg)]
    ctl = SchedutilController(env)
    obs, _ = env.reset(seed=0, options={"trace": "heat-00"})
    masked = stepped = 0
    for _ in range(720):
        mask = env.action_masks()
        a = step_down(ctl.act(obs, 0), mask, env.costs.ept_j, env.costs.quality)
        assert env.hint_config == a
        np.testing.assert_array_equal(obs[cols], table[a])
        masked += not mask.all()
        stepped += a != ctl.act(obs, 0)
        obs, _, term, trunc, _ = env.step(a)
        if term or trunc:
            break
    assert masked > 50 and stepped > 10  # the masks bind and the hint follows them


def test_the_hint_is_off_by_default_and_rule_hint_adds_one_block():
    plain = MicroLLMPowerEnv(profile=PROFILE, split="test", random_start=False)
    hinted = MicroLLMPowerEnv(profile=PROFILE, split="test", random_start=False, rule_hint=True)
    assert not any(n.startswith("hint_") for n in plain.layout.names)
    assert hinted.observation_space.shape[0] == plain.observation_space.shape[0] + sum(
        len(k.values) for k in plain.space.knobs)
    assert plain.hint_config == -1


@pytest.mark.parametrize("shield", [False, True])
def test_the_managers_hint_is_the_environments_on_a_heat_wave(tmp_path, shield):
    import gymnasium as gym
    from policy_helpers import random_policy_file

    import envs
    from agents.deployed import DeployedPolicy
    from runtime.dynamics import EnvParams
    from runtime.policy import load_policy_file

    path = random_policy_file(tmp_path / "p.npz", PROFILE, params=EnvParams(**HINT_ENV), with_quality=True)
    env = gym.make(envs.ENV_ID, split="test", params=load_policy_file(path).params, random_start=False)
    ctrl = DeployedPolicy(path, shield=shield)
    ctrl.bind(env)
    obs, _ = env.reset(seed=0, options={"trace": "heat-00", "start": 0})
    masked = 0
    for t in range(720):
        a, _ = ctrl.predict(obs, episode_start=np.array([t == 0]))
        assert ctrl.mgr.hint_config == env.unwrapped.hint_config
        masked += not env.unwrapped.action_masks().all()
        obs, _, term, trunc, _ = env.step(int(a[0]))
        if term or trunc:
            break
    assert masked > 50


def test_describe_lists_the_hint_rows():
    from envs.describe import describe

    names = [r["name"] for r in describe(rule_hint=True)["observation"]]
    assert names[19:30] == ["hint_depth_L6", "hint_depth_L4", "hint_depth_L3", "hint_depth_L2", "hint_heads_H100",
                            "hint_heads_H075", "hint_heads_H050", "hint_heads_H025", "hint_bits_fp32",
                            "hint_bits_int8", "hint_bits_int4"]


def test_a_run_written_for_another_observation_is_refused_with_the_reason(tmp_path):
    import json

    import train
    from agents.run_io import load_controller

    run = train.main(train.Args(total_timesteps=0, n_envs=2, runs_dir=str(tmp_path / "runs"), final_eval=False,
                                progress=False, bc_expert="static-smallest", bc_episodes=2, dagger_rounds=0,
                                bc_epochs=1, eval_episodes=1))
    cfg_path = run / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["obs_features"] = cfg["obs_features"][:-1] + ["hint_config_bits_frac"]  # an older encoding of the hint
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="observation changed since the run was written"):
        load_controller(run)
