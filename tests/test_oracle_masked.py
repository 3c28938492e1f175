"""The masked oracle (``oracle-masked``): the DP held to the env's action masks equals brute force over the
sequences the masks allow, its masks are the env's own, and it never runs a forbidden configuration."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from test_oracle import hand_made_traces, rollout, three_config_profile, trace

from agents.oracle import OracleController
from agents.registry import ALL_CONTROLLERS, BASELINES, REFERENCES, default_controllers, make_controller
from envs.power_env import MicroLLMPowerEnv
from model.profile_schema import example_profile
from runtime.rules import step_down

# the masks bind: hot (ambient near the phone's trip point, so the thermal rule drops the costly
# configurations) and low (below the reserve with no charger, so only the cheap set stays)
TINY_MASKED = {
    "hot": dict(supply_w=0.0, ambient_c=41.5, demand_tps=60.0, capacity_wh=1.0, soc=0.9),
    "low": dict(supply_w=0.0, ambient_c=25.0, demand_tps=40.0, capacity_wh=0.05, soc=0.06),
}


def masked_brute_force(env, n_steps):
    """Best return over every action sequence the env's masks allow at each step, and how many
    sequences the masks cut."""
    best, cut = -np.inf, 0
    for seq in itertools.product(range(env.action_space.n), repeat=n_steps):
        env.reset(options={"trace": 0, "start": 0})
        ret, ok = 0.0, True
        for a in seq:
            if not env.action_masks()[a]:
                ok = False
                break
            _, r, term, trunc, _ = env.step(a)
            ret += r
            if term or trunc:
                break
        if not ok:
            cut += 1
            continue
        best = max(best, ret)
    return best, cut


@pytest.mark.parametrize("case", sorted(TINY_MASKED))
def test_masked_dp_equals_brute_force_over_the_allowed_sequences(case):
    env = MicroLLMPowerEnv(profile=three_config_profile(), traces=[trace(6, **TINY_MASKED[case])],
                           random_start=False)
    best, cut = masked_brute_force(env, 6)
    assert cut > 0, "the masks must bind on this trace for the test to mean anything"
    # a fine temperature grid: the thermal mask is a step in T (at the trip point less HOT_MARGIN_C), which
    # linear interpolation of V between grid points blurs; with 49 points "hot" picks a sequence 0.016 worse
    masked = OracleController(env, n_soc=401, n_temp=199, n_backlog=7, masked=True)
    ret, acts = rollout(env, masked)
    assert ret == pytest.approx(best, abs=1e-9)
    # the plan's own estimate: the reserve mask, from the first decision on, is a step in SoC that the interpolated
    # value blurs too ("low": 0.025 from the realised optimum, which the rollout reaches exactly)
    assert masked.plans[-1]["value0"] == pytest.approx(best, abs=3e-2)
    # the plain oracle may run what the masks forbid, so it can only do as well or better
    plain, _ = rollout(env, OracleController(env, n_soc=401, n_temp=49, n_backlog=7))
    assert plain >= ret - 1e-9


def test_dp_masks_are_the_envs_masks_along_an_episode():
    """``_mask_cases`` (what the DP holds each grid point to) against ``env.action_masks()`` at every step of
    episodes where the thermal and the reserve rules both bind, under a random policy that visits many states."""
    traces = hand_made_traces() + [trace(90, ambient_c=41.0, demand_tps=80.0, capacity_wh=0.05, soc=0.2,
                                         name="hot-low")]
    env = MicroLLMPowerEnv(profile=example_profile(12), traces=traces, random_start=False)
    oracle = OracleController(env, masked=True)
    rng = np.random.default_rng(0)
    masked_steps = 0
    for k, tr in enumerate(env.traces):
        env.reset(options={"trace": k, "start": 0})
        for _ in range(89):
            st = env.sim_state()
            want = env.action_masks()
            cases = oracle._mask_cases(k, st["row"], st["episode_start"])
            if cases is None:
                got = env.rules.fits(tr.device.memory_mb * 1e6)  # nothing masked but the device's memory
            else:
                hot = int(st["temp_c"] > tr.device.t_max_c - 1.0)
                got = cases[0][hot, int(bool(st["soc"] < env.reserve_soc) and cases[1])]
            np.testing.assert_array_equal(got, want, err_msg=f"{tr.name} row {st['row']}")
            masked_steps += int(not want.all())
            _, _, term, trunc, _ = env.step(int(rng.integers(env.action_space.n)))
            if term or trunc:
                break
    assert masked_steps > 20  # both rules bound somewhere


def test_masked_oracle_obeys_the_masks_and_beats_the_rules_held_to_them():
    traces = hand_made_traces()
    env = MicroLLMPowerEnv(profile=example_profile(12), traces=traces, random_start=False)
    masked = OracleController(env, horizon_steps=90, masked=True)
    for k, tr in enumerate(traces):
        obs, _ = env.reset(options={"trace": k, "start": 0})
        masked.bind(env)
        ret = 0.0
        for t in range(90):
            a = int(masked.predict(obs, episode_start=np.array([t == 0]))[0])
            assert env.action_masks()[a], f"{tr.name} step {t}: the masked oracle ran a forbidden configuration"
            obs, r, term, trunc, _ = env.step(a)
            ret += r
            if term or trunc:
                break
        for name in ("schedutil", "static-largest", "battery-ladder"):
            ctrl = make_controller(name, env)
            obs, _ = env.reset(options={"trace": k, "start": 0})
            r_rule = 0.0
            for t in range(90):  # the rule stepped down to the mask, as the evaluation holds it
                a = int(ctrl.predict(obs, episode_start=np.array([t == 0]))[0])
                allowed = env.action_masks()
                if not allowed[a]:
                    a = step_down(a, allowed, env.costs.ept_j, env.costs.quality)
                obs, r, term, trunc, _ = env.step(a)
                r_rule += r
                if term or trunc:
                    break
            assert ret >= r_rule - 1e-3 * abs(r_rule), f"{tr.name}: masked oracle {ret:.4f} < {name} {r_rule:.4f}"


def test_masked_oracle_is_a_reference_not_a_heuristic():
    env = MicroLLMPowerEnv(profile=example_profile(12), traces=hand_made_traces(), random_start=False)
    assert "oracle-masked" in ALL_CONTROLLERS and "oracle-masked" in REFERENCES
    assert "oracle-masked" not in BASELINES
    assert "oracle-masked" not in default_controllers(env.costs)  # asked for by name only
    assert make_controller("oracle-masked", env).masked
