"""The runtime manager's dwell rule in the environments (``EnvParams.min_dwell_steps``, ``runtime.rules.dwell_mask``):
one rule, pinned to the manager's."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from policy_helpers import random_policy_file

import envs
from agents.deployed import DeployedPolicy
from envs.batched import BatchedPowerEnv
from envs.power_env import MicroLLMPowerEnv
from runtime.dynamics import EnvParams
from runtime.policy import NumpyPolicy, load_policy_file
from runtime.rules import NO_SWITCH_YET, dwell_mask

PROFILE = "profiles/reference-cpu.json"


def test_dwell_mask_holds_the_current_configuration_only_inside_the_window_and_only_where_it_is_allowed():
    m = np.array([True, True, False, True])
    assert dwell_mask(m, 1, 1, 3).tolist() == [False, True, False, False]
    assert dwell_mask(m, 1, 2, 3).tolist() == [False, True, False, False]
    assert dwell_mask(m, 1, 3, 3) is m  # the window is over
    assert dwell_mask(m, 1, NO_SWITCH_YET, 3) is m  # no switch yet
    assert dwell_mask(m, 2, 1, 3) is m  # the current configuration is forbidden: the other rules move it at once
    for off in (0, 1):
        assert dwell_mask(m, 1, 1, off) is m
    batch = np.array([m, m, m])
    out = dwell_mask(batch, np.array([1, 2, 3]), np.array([1, 1, 5]), 3)
    assert out.tolist() == [[False, True, False, False], m.tolist(), m.tolist()]


def test_params_refuse_a_negative_or_fractional_window():
    for bad in (-1, 2.5):
        with pytest.raises(ValueError, match="min_dwell_steps"):
            EnvParams(min_dwell_steps=bad)


def _switches_held(env, rng, steps=200):
    """Random allowed actions; the steps after each switch at which only the current configuration was allowed."""
    env.reset(seed=0, options={"trace": 0, "start": 0})
    prev, since, held = env.unwrapped.sim_state()["config"], NO_SWITCH_YET, []
    for _ in range(steps):
        mask = env.unwrapped.action_masks()
        a = int(rng.choice(np.flatnonzero(mask)))
        held.append((since, int(mask.sum()) == 1 and bool(mask[prev])))
        _, _, term, trunc, info = env.step(a)
        since = 1 if info["config"] != prev else since + 1
        prev = info["config"]
        if term or trunc:
            break
    return held


def test_the_scalar_env_holds_the_two_decisions_after_a_switch():
    env = MicroLLMPowerEnv(profile=PROFILE, split="test", random_start=False, params=EnvParams(min_dwell_steps=3))
    held = _switches_held(env, np.random.default_rng(0))
    inside = [h for s, h in held if s < 3]
    outside = [h for s, h in held if s >= 3]
    assert len(inside) > 20 and all(inside)
    assert outside and not all(outside)  # outside the window the masks are the other rules' (mostly all allowed)


def test_the_batched_env_applies_the_same_rule_as_the_scalar_env():
    p = EnvParams(min_dwell_steps=3)
    scalar = MicroLLMPowerEnv(profile=PROFILE, split="train", random_start=False, params=p, max_episode_steps=10_000)
    batched = BatchedPowerEnv(n_envs=2, profile=PROFILE, split="train", params=p, max_episode_steps=10_000)
    rng = np.random.default_rng(1)
    scalar.reset(seed=0, options={"trace": 0, "start": 0})
    for j in range(2):
        batched.reset_env(j, 0, 0)
    n_held = 0
    for _ in range(200):
        ms, mb = scalar.action_masks(), batched.action_masks()
        assert (mb[0] == ms).all() and (mb[1] == ms).all()
        n_held += int(ms.sum()) == 1
        a = int(rng.choice(np.flatnonzero(ms)))
        _, _, term, trunc, _ = scalar.step(a)
        batched._step(np.full(2, a))
        if term or trunc:
            break
    assert n_held > 20


def test_a_policy_held_by_the_env_rule_acts_as_the_manager_with_its_dwell_rule(tmp_path):
    """The exported policy through the runtime manager (shield and ``min_dwell_decisions`` 3) chooses, step for step,
    what the same policy chooses in the environment with ``min_dwell_steps`` 3 under its action masks. (Not on
    solar-03, which starts below the battery reserve: there the manager's emergency state and the environment's
    cheap set differ, a separate rule.)"""
    params = EnvParams(thermal_obs=True, thermal_cap=2.0, demand_avg_s=60.0, min_dwell_steps=3)
    path = random_policy_file(tmp_path / "p.npz", PROFILE, params=params)
    pf = load_policy_file(path)
    assert pf.params.min_dwell_steps == 3  # the rule travels with the policy file
    env = gym.make(envs.ENV_ID, split="test", params=pf.params, random_start=False)
    ctrl = DeployedPolicy(path, shield=True, min_dwell_decisions=3)
    ctrl.bind(env)
    pol = NumpyPolicy(pf)
    n, n_dwell = 0, 0
    names = [t.name for t in env.unwrapped.traces]
    for k in [i for i, nm in enumerate(names) if nm != "solar-03"]:
        obs, _ = env.reset(seed=0, options={"trace": k, "start": 0})
        for t in range(120):
            a, _ = ctrl.predict(obs, episode_start=np.array([t == 0]))
            mask = env.unwrapped.action_masks()
            assert int(a[0]) == pol.act(obs, mask), (k, t)
            n += 1
            n_dwell += ctrl.mgr.last_reason.name == "DWELL"
            obs, _, term, trunc, _ = env.step(int(a[0]))
            if term or trunc:
                break
    assert n >= 500 and n_dwell >= 20


def test_the_masked_oracle_refuses_the_dwell_rule_it_cannot_plan_for():
    from agents.oracle import OracleController

    env = MicroLLMPowerEnv(profile=PROFILE, split="test", random_start=False, params=EnvParams(min_dwell_steps=3))
    with pytest.raises(ValueError, match="min_dwell_steps"):
        OracleController(env, masked=True)
    OracleController(env)  # the plain oracle ignores every mask


def test_deploy_run_defaults_to_the_window_the_policy_was_trained_under():
    from types import SimpleNamespace

    from deploy import RunSession

    def session(cli, trained, pf=True):
        return SimpleNamespace(args=SimpleNamespace(min_dwell=cli), pf=object() if pf else None,
                               params=EnvParams(min_dwell_steps=trained))

    assert RunSession.min_dwell(session(None, 5)) == 5
    assert RunSession.min_dwell(session(None, 0)) == 3
    assert RunSession.min_dwell(session(0, 5)) == 0  # the command line wins
    assert RunSession.min_dwell(session(None, 5, pf=False)) == 3  # no policy file (the fallback rule)
