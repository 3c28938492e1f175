"""The battery saver (``EnvParams.saver_s``): the reserve of the action masks and the shield raised by the charge the
device's own load and the safe configuration would take in ``saver_s`` seconds. One rule
(``runtime.rules.saver_soc``) read by the scalar env, the batched env, the masked oracle and the runtime shield."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from policy_helpers import random_policy_file
from test_oracle import rollout, three_config_profile, trace
from test_oracle_masked import masked_brute_force

from agents.oracle import OracleController
from envs.batched import BatchedPowerEnv
from envs.power_env import MicroLLMPowerEnv
from model.profile_schema import example_profile
from runtime.dynamics import EnvParams
from runtime.manager import ManagerConfig, RuntimeManager
from runtime.policy import load_policy_file
from runtime.rules import saver_soc
from runtime.sensors import Reading, Sensor, SensorHub
from runtime.shield import Reason

PROFILE = example_profile(12)


def test_saver_soc_is_the_reserve_plus_the_charge_of_saver_s_seconds():
    # 1.5 W of own load + 10 tok/s × 0.05 J, less 0.5 W of supply, is 1.5 W; 600 s of it is 900 J of 9000 J
    assert saver_soc(0.05, 600.0, 9000.0, 1.5, 10.0, 0.05, 0.5) == pytest.approx(0.05 + 0.1)
    assert saver_soc(0.05, 0.0, 9000.0, 1.5, 10.0, 0.05, 0.5) == 0.05  # off
    assert saver_soc(0.05, 600.0, 9000.0, 1.5, 10.0, 0.05, 5.0) == 0.05  # the supply covers the draw
    assert saver_soc(0.05, 600.0, 0.0, 1.5, 10.0, 0.05, 0.5) == 0.05  # no battery known
    base = np.array([1.5, 1.5, 0.2, 1.5])
    got = saver_soc(0.05, 600.0, np.array([9000.0, 9000.0, 9000.0, 0.0]), base, np.full(4, 10.0), 0.05,
                    np.array([0.5, 5.0, 0.0, 0.5]))
    want = [saver_soc(0.05, 600.0, c, b, 10.0, 0.05, s) for c, b, s in ((9000.0, 1.5, 0.5), (9000.0, 1.5, 5.0),
                                                                        (9000.0, 0.2, 0.0), (0.0, 1.5, 0.5))]
    np.testing.assert_allclose(got, want)


def low_trace(n=60, soc=0.4, capacity_wh=0.5, supply_w=0.0):
    return trace(n, supply_w=supply_w, ambient_c=25.0, demand_tps=20.0, capacity_wh=capacity_wh, soc=soc,
                 base_w=1.0)


def cheap_set_binds(env) -> bool:
    """One step of the costliest configuration from the first trace's start (no mask on an episode's first row):
    whether the masks then hold the model to the cheap set (asserted to be exactly it when they hold)."""
    env.reset(options={"trace": 0, "start": 0})
    env.step(int(np.argmax(env.costs.ept_j)))
    m = env.action_masks()
    if not m.all():
        np.testing.assert_array_equal(m, env.rules.cheap)
    return not m.all()


def test_env_masks_the_cheap_set_only_while_the_battery_would_reach_its_reserve_within_saver_s():
    tr = low_trace()
    hours_left = (0.4 - 0.05) * 0.5 / (1.0 + 0.2)  # Wh above the reserve / (own load + idle), ~0.15 h: < 540 s
    for saver_s, binds in ((0.0, False), (60.0, False), (3600.0, True)):
        env = MicroLLMPowerEnv(profile=PROFILE, traces=[tr], random_start=False, saver_s=saver_s)
        assert cheap_set_binds(env) == binds, (saver_s, hours_left)
    # a charger that covers the draw lifts it
    env = MicroLLMPowerEnv(profile=PROFILE, traces=[low_trace(supply_w=20.0)], random_start=False, saver_s=3600.0)
    env.reset(options={"trace": 0, "start": 0})
    env.step(0)
    assert env.action_masks().all()


@pytest.mark.parametrize("saver_s", [0.0, 1800.0])
def test_batched_masks_are_the_scalar_envs(saver_s):
    """Nearly empty batteries (every episode starts at 10-20 %) and random actions: the batched env's masks,
    including the saver's raise of the reserve, equal the scalar env's at every step."""
    scalar = MicroLLMPowerEnv(profile=PROFILE, split="train", random_start=False, max_episode_steps=10_000,
                              saver_s=saver_s)
    batched = BatchedPowerEnv(n_envs=2, profile=PROFILE, split="train", max_episode_steps=10_000, saver_s=saver_s)
    assert batched_masks_match(scalar, batched, np.random.default_rng(4), range(0, len(scalar.traces), 2),
                               (0.1, 0.2), 150) > 20  # the rules bound somewhere


def batched_masks_match(scalar, batched, rng, traces, soc_range, steps) -> int:
    """Random actions on two batched envs and the scalar env from the same start (SoC drawn in ``soc_range``): the
    batched env's masks equal the scalar env's at every step. Returns the steps on which a rule bound."""
    bound = 0
    for k in traces:
        soc = float(rng.uniform(*soc_range))
        scalar.reset(seed=0, options={"trace": k, "start": 0, "soc": soc})
        for j in range(2):
            batched.reset_env(j, k, 0)
            batched.soc[j] = soc
        for _ in range(steps):
            a = int(rng.integers(scalar.action_space.n))
            _, _, term, trunc, _ = scalar.step(a)
            batched._step(np.full(2, a))
            want = scalar.action_masks()
            np.testing.assert_array_equal(batched.action_masks()[0], want, err_msg=f"trace {k}")
            bound += int(not want.all())
            if term or trunc:
                break
    return bound


def test_masked_oracle_is_optimal_under_the_saver_and_its_masks_are_the_envs():
    tr = trace(6, supply_w=0.0, ambient_c=25.0, demand_tps=40.0, capacity_wh=0.05, soc=0.3)
    env = MicroLLMPowerEnv(profile=three_config_profile(), traces=[tr], random_start=False, saver_s=60.0)
    best, cut = masked_brute_force(env, 6)
    assert cut > 0, "the saver must bind on this trace for the test to mean anything"
    masked = OracleController(env, n_soc=401, n_temp=49, n_backlog=7, masked=True)
    ret, _ = rollout(env, masked, masked=True)
    assert ret == pytest.approx(best, abs=1e-9)
    # without the saver the same oracle spends more and earns more: the saver is what bound
    free = MicroLLMPowerEnv(profile=three_config_profile(), traces=[tr], random_start=False)
    assert rollout(free, OracleController(free, n_soc=401, n_temp=49, n_backlog=7, masked=True))[0] > ret + 1e-6
    # the DP's mask cases along a random episode on the default set with nearly empty batteries
    env = MicroLLMPowerEnv(profile=PROFILE, split="train", random_start=False, saver_s=1800.0)
    assert oracle_mask_cases_match(env, OracleController(env, masked=True), range(len(env.traces)), 0.15) > 20


def oracle_mask_cases_match(env, oracle, traces, soc, deadline=False) -> int:
    """Random episodes from ``soc``: the masked oracle's DP mask cases (``_mask_cases``, with each trace's deadline
    when ``deadline``) give the env's own mask at every step. Returns the steps on which a rule bound."""
    rng = np.random.default_rng(0)
    bound = 0
    for k in traces:
        env.reset(options={"trace": k, "start": 0, "soc": soc})
        deadline_s = oracle._deadline_s(k, -1) if deadline else float("nan")
        for _ in range(60):
            st = env.sim_state()
            want = env.action_masks()
            cases = oracle._mask_cases(k, st["row"], st["episode_start"], deadline_s)
            if cases is None:
                got = env.rules.fits(env.traces[k].device.memory_mb * 1e6)
            else:
                hot = int(st["temp_c"] > env.traces[k].device.t_max_c - 1.0)
                got = cases[0][hot, int(bool(st["soc"] < cases[2]) and cases[1])]
            np.testing.assert_array_equal(got, want, err_msg=f"trace {k} row {st['row']}")
            bound += int(not want.all())
            _, _, term, trunc, _ = env.step(int(rng.integers(env.action_space.n)))
            if term or trunc:
                break
    return bound


class Battery(Sensor):
    name = "battery"
    provides = ("soc_frac", "plugged", "temp_c", "ambient_c", "power_w")

    def read(self) -> Reading:
        return Reading(self.clock(), soc_frac=0.6, plugged=0.0, temp_c=30.0, ambient_c=25.0, power_w=2.0)


@pytest.mark.parametrize("own_s,policy_s,binds", [(None, 0.0, False), (36000.0, 0.0, True), (None, 36000.0, True),
                                                  (600.0, 0.0, False)])
def test_shield_takes_the_longer_of_the_devices_and_the_policys_saver(tmp_path: Path, own_s, policy_s, binds):
    mgr = shield_decides(tmp_path, EnvParams(saver_s=policy_s), ManagerConfig(saver_s=own_s, capacity_wh=15.0), binds)
    assert mgr.shield.p.saver_s == max(own_s or 0.0, policy_s)


def shield_decides(tmp_path: Path, params: EnvParams, cfg: ManagerConfig, binds: bool, **workload) -> RuntimeManager:
    """One decision of a runtime manager whose policy favours the costliest configuration, on a battery 0.55 × 15 Wh
    above its reserve at about 1 W (about 8 h): the shield holds it to the cheap set (``binds``) or lets it run."""
    prof = tmp_path / "p.json"
    prof.write_text(json.dumps(PROFILE))
    costs = MicroLLMPowerEnv(profile=PROFILE).costs
    big = costs.names[int(np.argmax(costs.ept_j))]
    pf = load_policy_file(random_policy_file(tmp_path / "p.npz", prof, params, favour=big))
    t = [0.0]
    hub = SensorHub([Battery(lambda: t[0])], hold_s=1.0, stale_after_s=1.0, clock=lambda: t[0])
    mgr = RuntimeManager(pf, hub, cfg, clock=lambda: t[0])
    mgr.set_workload(demand_tps=5.0, **workload)
    mgr.base_w = 1.0
    t[0] += 0.1
    a = mgr.decide(t[0])
    if binds:
        assert mgr.shield.rules.cheap[a] and mgr.last_reason == Reason.BATTERY_MASK
    else:
        assert costs.names[a] == big and mgr.last_reason == Reason.NONE
    return mgr


def test_evaluate_scores_under_the_saver_it_is_given():
    import argparse

    from agents.evaluate import _env_factory, main

    args = argparse.Namespace(split="test", profile=None, traces=None, battery_saver_min=30.0,
                              saver_to_deadline=False, saver_floor=None)
    factory, _ = _env_factory(args, None)
    assert factory().params.saver_s == 1800.0
    assert factory().params.saver_floor_frac == 1.0
    args.battery_saver_min, args.saver_floor = 0.0, 0.0
    assert _env_factory(args, None)[0]().params.saver_s == 0.0
    assert _env_factory(args, None)[0]().params.saver_floor_frac == 0.0
    for bad in (["--battery-saver-min", "-1"], ["--saver-floor", "1.5"]):
        with pytest.raises(SystemExit) as exc:
            main([*bad, "--out", "/nonexistent"])
        assert exc.value.code == 2
