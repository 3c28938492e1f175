"""The offline oracle: equals brute force on tiny traces, beats every baseline on small ones."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from agents.oracle import OracleController
from agents.registry import BASELINES, make_controller
from envs.power_env import MicroLLMPowerEnv
from model.profile_schema import example_profile
from runtime.dynamics import EnvParams
from traces.schema import TraceMeta, make_trace


def three_config_profile() -> dict:
    """Depth 1, 2 and 4 of ``example_profile(12)``: distinct quality, speed and energy/token.

    No switch costs: the DP ignores them (its previous configuration is the action itself), so
    brute force over the env must not pay them either for the two to be comparable.
    """
    p = example_profile(12)
    p["configs"] = [p["configs"][i] for i in (0, 4, 11)]
    p["switch_costs"] = {}
    return p


def trace(n, *, supply_w=0.0, ambient_c=25.0, demand_tps=20.0, capacity_wh=10.0, soc=1.0, budget_w=None,
          kind="phone", deadline_s=None, base_w=None, name="t"):
    meta = TraceMeta(capacity_wh=capacity_wh, initial_soc=soc, device_kind=kind, source="test",
                     license="CC0-1.0", unit=name, deadline_s=deadline_s)
    plugged = (np.asarray(supply_w) > 0).astype(float) if np.ndim(supply_w) else float(supply_w > 0)
    return make_trace(name, meta, np.arange(n) * 10.0, supply_w=supply_w, plugged=plugged,
                      ambient_c=ambient_c, demand_tps=demand_tps, bandwidth_mbps=10.0, budget_w=budget_w,
                      base_load_w=base_w)


def brute_force(env, n_steps):
    """Best return over every action sequence, on the scalar env."""
    best, best_seq = -np.inf, None
    for seq in itertools.product(range(env.action_space.n), repeat=n_steps):
        env.reset(options={"trace": 0, "start": 0})
        ret = 0.0
        for a in seq:
            _, r, term, trunc, _ = env.step(a)
            ret += r
            if term or trunc:
                break
        if ret > best:
            best, best_seq = ret, seq
    return best, best_seq


def rollout(env, ctrl, k=0, max_steps=10_000, options=None, masked=False):
    """(return, actions) of ``ctrl`` on trace ``k`` from row 0 (``options``: further reset options); ``masked``:
    every action must be one the env's mask allows."""
    obs, _ = env.reset(options={"trace": k, "start": 0, **(options or {})})
    if hasattr(ctrl, "bind"):
        ctrl.bind(env)
    ret, acts = 0.0, []
    for t in range(max_steps):
        a, _ = ctrl.predict(obs, episode_start=np.array([t == 0]))
        assert not masked or env.action_masks()[int(a)], f"step {t}: action {int(a)} is masked"
        acts.append(int(a))
        obs, r, term, trunc, _ = env.step(a)
        ret += r
        if term or trunc:
            break
    return ret, acts


# a mixed optimum: charge on the cheap configuration, then spend on the best one (brute force:
# (1, 1, 2, 2, 2, 2)); and a doomed start where only the order of the dying steps matters
TINY = {
    "charge-then-spend": dict(supply_w=0.9, ambient_c=30.0, demand_tps=20.0, capacity_wh=0.02, soc=0.1),
    "doomed": dict(supply_w=0.0, ambient_c=43.0, demand_tps=30.0, capacity_wh=0.01, soc=0.9),
}


@pytest.mark.parametrize("case", sorted(TINY))
def test_dp_value_equals_brute_force_on_tiny_trace(case):
    env = MicroLLMPowerEnv(profile=three_config_profile(), traces=[trace(6, **TINY[case])], random_start=False)
    best, _ = brute_force(env, 6)  # 3^6 = 729 sequences
    # fine grid: the DP value is the brute-force optimum up to the interpolation of V between
    # grid points (SoC steps here are ~0.3 % of the battery; 401 points put 0.25 % apart)
    fine = OracleController(env, n_soc=401, n_temp=49, n_backlog=7)
    ret, _ = rollout(env, fine)
    assert ret == pytest.approx(best, abs=1e-9)  # acts optimally
    assert fine.plans[-1]["value0"] == pytest.approx(best, abs=1e-2)
    # default grid: still the optimal actions; the value is off by the coarser interpolation
    coarse = OracleController(env)
    ret, _ = rollout(env, coarse)
    assert ret == pytest.approx(best, abs=1e-9)
    assert coarse.plans[-1]["value0"] == pytest.approx(best, abs=3e-2)


def test_allowance_axis_plans_the_budget_where_the_battery_is_full_on_a_charger():
    # a full battery on a 20 W charger: the SoC stays at 1 whatever runs, so only the allowance tells how much of the
    # 0.4 W budget is left. The cheapest configuration draws 0.42 W: 6 J of grace (15 s at 0.4 W) last the episode
    # on it, but not after one step of the largest (5.2 J over budget). Linearised in the SoC (n_allowance=0) the plan
    # cannot see the allowance fall and spends it on step 1; with the allowance as a state it is brute force's optimum
    env = MicroLLMPowerEnv(profile=three_config_profile(), params=EnvParams(budget_grace_s=15.0),
                           traces=[trace(6, supply_w=20.0, soc=1.0, budget_w=0.4, demand_tps=20.0)], random_start=False)
    best, _ = brute_force(env, 6)
    o = OracleController(env)
    ret, acts = rollout(env, o)
    assert o.plans[-1]["budget_method"] == "allowance-axis"
    assert ret == pytest.approx(best, abs=1e-9)
    ret_lin, acts_lin = rollout(env, OracleController(env, n_allowance=0))
    assert acts_lin[0] == 2 and ret_lin < best - 0.05  # the former method: the largest first, overdrawn later


def test_a_block_with_a_budget_and_a_supply_keeps_the_plan_that_does_better():
    # "budget-charger": a 0.2 Wh battery on a charger that comes and goes. Both plans are made; the episode is one
    # block from the planned state, so the realised return is the kept plan's simulated one, the higher of the two
    traces = hand_made_traces()
    env = MicroLLMPowerEnv(profile=example_profile(12), traces=traces, random_start=False)
    o = OracleController(env, horizon_steps=90)
    ret, _ = rollout(env, o, 3)
    got = o.plans[-1]["budget_rollouts"]
    assert set(got) == {"linearised", "allowance-axis"}
    assert ret == pytest.approx(max(got.values()), abs=1e-9)
    assert ret == pytest.approx(got[o.plans[-1]["budget_method"]], abs=1e-9)
    ret_lin, _ = rollout(env, OracleController(env, horizon_steps=90, n_allowance=0), 3)
    assert ret >= ret_lin - 1e-9 and got["linearised"] == pytest.approx(ret_lin, abs=1e-9)
    # without a supply the linearisation is exact and is the only plan made
    ret, _ = rollout(env, o, 2)
    assert o.plans[-1]["budget_method"] == "linearised" and o.plans[-1]["budget_rollouts"] == {}


def hand_made_traces():
    rng = np.random.default_rng(0)
    n = 90
    bursts = np.where(rng.uniform(size=n) < 0.3, rng.uniform(60, 250, n), rng.uniform(0, 20, n))
    return [
        # hot: ambient at the phone's trip point, bursty demand
        trace(n, ambient_c=42.0, demand_tps=bursts, name="hot"),
        # low battery that must last to the deadline (the end of the trace)
        # (the cheapest configuration needs ~650 J to get there: 70 J to spend on quality)
        trace(n, demand_tps=25.0, capacity_wh=0.25, soc=0.8, deadline_s=n * 10.0, name="deadline"),
        # a 0.8 W budget on a full battery, no charger
        trace(n, demand_tps=30.0, budget_w=0.8, name="budget"),
        # a budget with a charger on and off, moderate heat
        trace(n, supply_w=np.where(np.arange(n) % 30 < 15, 3.0, 0.0), ambient_c=35.0, demand_tps=bursts,
              capacity_wh=0.2, soc=0.5, budget_w=1.2, name="budget-charger"),
    ]


def test_oracle_beats_every_baseline_on_small_hand_made_traces():
    traces = hand_made_traces()
    env = MicroLLMPowerEnv(profile=example_profile(12), traces=traces, random_start=False)
    oracle = OracleController(env, horizon_steps=90)
    for k, tr in enumerate(traces):
        r_oracle, _ = rollout(env, oracle, k)
        for name in BASELINES:
            r_base, _ = rollout(env, make_controller(name, env), k)
            # 0.1 %: the DP's discretisation error. example_profile's three bit widths per depth
            # are near-duplicates (same quality, energy within 1 %): on "hot" the oracle ties
            # static-smallest to 0.005 % by picking the twin of its configuration on step 1
            assert r_oracle >= r_base - 1e-3 * abs(r_base), \
                f"{tr.name}: oracle {r_oracle:.4f} < {name} {r_base:.4f}"


def test_fast_shift_path_matches_elementwise_lookup():
    traces = hand_made_traces()
    env = MicroLLMPowerEnv(profile=example_profile(12), traces=traces, random_start=False)
    for k in range(len(traces)):
        env.reset(options={"trace": k, "start": 0})
        o = OracleController(env, horizon_steps=40)
        fast = o.plan(k, 0, 40, env.soc, env.temp_c)
        o.fast_shift = False
        slow = o.plan(k, 0, 40, env.soc, env.temp_c)
        # equal up to the element-wise path's 1e-6 SoC seam tolerance (in float32)
        np.testing.assert_allclose(fast.values, slow.values, atol=2e-3 * max(1.0, np.abs(slow.values).max()))


def test_survival_need_is_exact_when_only_the_battery_matters():
    # 20 tok/s on the cheapest configuration, no charger: the least SoC that lasts n steps is
    # n × (idle + token power) × dt / capacity
    n, cap_wh = 30, 0.5
    env = MicroLLMPowerEnv(profile=three_config_profile(), traces=[trace(n, capacity_wh=cap_wh)],
                           random_start=False)
    env.reset(options={"trace": 0, "start": 0})
    o = OracleController(env)
    plan = o.plan(0, 0, n, 1.0, env.temp_c)
    c = env.costs
    p_w = env.trace.device.idle_power_w + 20.0 * c.ept_j.min()
    expected = n * p_w * 10.0 / (cap_wh * 3600.0)
    assert plan.soc_need[0, 0, 0] == pytest.approx(expected, rel=1e-6, abs=2e-5)


def test_oracle_value_tracks_realised_return_and_refines_with_the_grid():
    traces = hand_made_traces()
    env = MicroLLMPowerEnv(profile=example_profile(12), traces=traces, random_start=False)
    errs = {}
    for k in range(len(traces)):
        for grid in ((51, 13, 5), (101, 25, 7)):
            o = OracleController(env, n_soc=grid[0], n_temp=grid[1], n_backlog=grid[2], horizon_steps=90)
            ret, _ = rollout(env, o, k)
            errs[k, grid[0]] = abs(o.plans[-1]["value0"] - ret) / max(1.0, abs(ret))
    assert max(errs[k, 101] for k in range(len(traces))) < 0.05  # the predicted value is the return
    # "hot" is dominated by the temperature axis' interpolation: the finer grid halves its error
    assert errs[0, 101] < 0.7 * errs[0, 51]


def test_oracle_replans_per_episode_and_block():
    env = MicroLLMPowerEnv(profile=three_config_profile(), traces=[trace(50, capacity_wh=1.0)], random_start=False)
    o = OracleController(env, horizon_steps=20)
    _, acts = rollout(env, o)
    assert len(acts) == 50
    assert [p["start"] for p in o.plans] == [0, 20, 40]
    assert [p["horizon"] for p in o.plans] == [20, 20, 10]
