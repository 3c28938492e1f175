"""agents.deployed / agents.evaluate --policy: an exported policy scored through the runtime manager."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
from policy_helpers import random_policy_file

import envs
from agents.deployed import DeployedPolicy
from agents.evaluate import evaluate_controllers
from agents.evaluate import main as evaluate_main
from agents.registry import make_controller
from runtime.dynamics import EnvParams
from runtime.policy import NumpyPolicy, load_policy_file

PROFILE = "profiles/reference-cpu.json"


def _episodes(env, ctrl, traces, steps):
    """(manager observation, env observation, action) per step."""
    out = []
    for k in traces:
        obs, _ = env.reset(seed=0, options={"trace": k, "start": 0})
        for t in range(steps):
            a, _ = ctrl.predict(obs, episode_start=np.array([t == 0]))
            out.append((ctrl.mgr.obs.copy(), obs.copy(), int(a[0])))
            obs, _, term, trunc, _ = env.step(int(a[0]))
            if term or trunc:
                break
    return out


@pytest.mark.parametrize("thermal,cap,avg_s,hint,pcap,psup",
                         [(False, 0.0, 0.0, False, 0.0, False), (True, 0.0, 0.0, False, 0.0, False),
                          (True, 1.5, 120.0, False, 0.0, False), (True, 2.0, 60.0, True, 0.0, False),
                          (True, 2.0, 60.0, True, 4.0, False), (True, 2.0, 60.0, True, 4.0, True)])
def test_the_managers_observation_is_the_environments_and_unshielded_it_acts_as_the_policy(tmp_path, thermal, cap,
                                                                                             avg_s, hint, pcap, psup):
    path = random_policy_file(tmp_path / "p.npz", PROFILE,
                              params=EnvParams(thermal_obs=thermal, thermal_cap=cap, demand_avg_s=avg_s,
                                               rule_hint=hint, power_cap=pcap, power_supply=psup), with_quality=hint)
    pf = load_policy_file(path)
    env = gym.make(envs.ENV_ID, split="test", params=pf.params, random_start=False)
    ctrl = DeployedPolicy(path, shield=False)
    ctrl.bind(env)
    pol = NumpyPolicy(pf)
    assert ("thermal_step_w" in pf.layout.names) == (thermal and not cap)
    assert ("thermal_step_frac" in pf.layout.names) == (thermal and cap > 0)
    assert ("demand_avg_tps" in pf.layout.names) == (avg_s > 0)
    assert ("hint_bits_int4" in pf.layout.names) == hint
    assert ("affordable_power_frac" in pf.layout.names) == (pcap > 0)
    assert ("supply_frac" in pf.layout.names) == psup
    steps = _episodes(env, ctrl, range(3), 120)
    assert len(steps) >= 200
    for m_obs, e_obs, a in steps:
        np.testing.assert_allclose(m_obs, e_obs, rtol=1e-5, atol=1e-4)
        assert a == pol.act(e_obs)


def test_a_policy_reading_the_rule_hint_needs_the_quality_table(tmp_path):
    from runtime.policy import PolicyFileError

    path = random_policy_file(tmp_path / "p.npz", PROFILE, params=EnvParams(rule_hint=True))
    with pytest.raises(PolicyFileError, match="rule hint.*quality table.*deploy.py export"):
        load_policy_file(path)


def test_the_shield_keeps_a_policy_that_insists_on_the_largest_model_off_the_thermal_limit(tmp_path):
    path = random_policy_file(tmp_path / "big.npz", PROFILE, favour="L6-H100-fp32")
    env_factory = lambda: gym.make(envs.ENV_ID, split="test", random_start=False)  # noqa: E731
    ctrls = {"shielded": DeployedPolicy(path, shield=True, name="shielded"),
             "unshielded": DeployedPolicy(path, shield=False, name="unshielded"),
             "static-smallest": lambda env: make_controller("static-smallest", env)}
    res = evaluate_controllers(env_factory, ctrls, max_steps=360, progress=False)
    sh, un = res["policies"]["shielded"], res["policies"]["unshielded"]
    assert un["thermal"] > 2 * sh["thermal"]  # without the shield it overheats
    assert sh["return"] > un["return"]
    per = res["per_episode"]
    for s, small in zip(per["shielded"], per["static-smallest"]):  # shielded, it overheats only where even the
        assert s["thermal"] == 0 or small["thermal"] > 0             # smallest model cannot keep cool (heat wave)


def test_evaluate_policy_reports_the_shielded_and_unshielded_policy(tmp_path):
    path = random_policy_file(tmp_path / "p.npz", PROFILE)
    out = tmp_path / "ev"
    assert evaluate_main(["--policy", path, "--policies", "random,schedutil", "--max-steps", "30", "--out", str(out),
                          "--no-progress"]) == 0
    pol = json.loads((out / "report.json").read_text())["policies"]
    assert {"policy:p.npz", "policy:p.npz unshielded", "random", "schedutil"} <= set(pol)
    assert "policy:p.npz" in (out / "report.md").read_text()


def test_evaluate_policy_refuses_a_policy_over_other_configurations(tmp_path):
    path = random_policy_file(tmp_path / "p.npz", PROFILE)
    with pytest.raises(SystemExit, match="configurations.*fix"):
        evaluate_main(["--policy", path, "--profile", "profiles/reference-cpu+split.json", "--policies", "random",
                       "--max-steps", "5", "--out", str(tmp_path / "ev"), "--no-progress"])


def test_evaluate_policy_dwell_scores_each_dwell_rule_side_by_side(tmp_path):
    """--policy-dwell N (repeatable): the shielded manager once per dwell rule, each its own decisions."""
    path = random_policy_file(tmp_path / "p.npz", PROFILE)
    out = tmp_path / "ev"
    assert evaluate_main(["--policy", path, "--policy-dwell", "0", "--policy-dwell", "6", "--policies", "random",
                          "--max-steps", "60", "--out", str(out), "--no-progress"]) == 0
    pol = json.loads((out / "report.json").read_text())["policies"]
    assert {"policy:p.npz dwell 0", "policy:p.npz dwell 6", "policy:p.npz unshielded"} <= set(pol)
    assert "policy:p.npz" not in pol
    assert pol["policy:p.npz dwell 6"]["return"] != pol["policy:p.npz dwell 0"]["return"]
