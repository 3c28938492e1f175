"""The budget rule (``EnvParams.budget_rule``; ``runtime.rules.Feasibility.budget_mask``): while a configuration's LLM
power at the current rate would take the budget's allowance below zero this step, it is masked, of those the safety
rules allow; the scalar env, the batched env and the runtime shield hold the same masks."""

from __future__ import annotations

import math
import tempfile

import numpy as np
import pytest
from test_oracle import trace

from envs.batched import BatchedPowerEnv
from envs.power_env import MicroLLMPowerEnv
from model.profile_schema import example_profile
from runtime.dynamics import EnvParams
from runtime.rules import Feasibility
from runtime.shield import Reason, Shield, ShieldParams

PROFILE = example_profile(12)
EPT = np.linspace(0.01, 0.08, 8)  # J/token; at 10 tok/s 0.1 .. 0.8 W
DT = 10.0


def test_the_rule_keeps_seconds_of_budget_in_hand():
    """``keep_s``: a configuration above the budget runs only while the allowance after the step stays above
    ``budget_w · keep_s``; one at or under the budget is never masked."""
    f = Feasibility(EPT)
    allowed = np.ones(8, bool)
    b = 0.45
    assert f.budget_mask(10.0, b, 1000.0, DT, allowed, keep_s=0.0) is allowed
    m = f.budget_mask(10.0, b, 1000.0, DT, allowed, keep_s=2220.0)  # 999 J to keep: 0.55 W still fits, 0.6 W not
    np.testing.assert_array_equal(np.flatnonzero(m), np.arange(5))
    np.testing.assert_array_equal(f.budget_mask(10.0, b, 0.0, DT, allowed, keep_s=1e6), EPT * 10.0 <= b)


def test_the_reserve_also_pays_for_a_burst_of_the_safe_configuration():
    """``keep_tps``: the reserve is ``keep_s`` of the budget or of the safe configuration serving ``keep_tps``,
    whichever is more: a budget far below a burst's cost keeps savings in proportion to the burst."""
    f = Feasibility(EPT)
    allowed = np.ones(8, bool)
    b = 0.45  # the safe configuration (0.01 J/token) at 100 tok/s draws 1 W, more than the budget
    # 900 s of the budget = 405 J to keep: with 406 J left, 0.5 W (0.5 J over a step) still fits, 0.6 W not
    np.testing.assert_array_equal(np.flatnonzero(f.budget_mask(10.0, b, 406.0, DT, allowed, keep_s=900.0)),
                                  np.arange(5))
    # 900 s of 1 W = 900 J to keep: with 406 J left nothing above the budget stays
    np.testing.assert_array_equal(f.budget_mask(10.0, b, 406.0, DT, allowed, keep_s=900.0, keep_tps=100.0),
                                  EPT * 10.0 <= b)
    # a burst rate whose cost is below the budget changes nothing
    np.testing.assert_array_equal(f.budget_mask(10.0, b, 406.0, DT, allowed, keep_s=900.0, keep_tps=10.0),
                                  f.budget_mask(10.0, b, 406.0, DT, allowed, keep_s=900.0))
    rows = f.budget_mask(np.full(2, 10.0), np.full(2, b), np.full(2, 406.0), DT, np.ones((2, 8), bool),
                         keep_s=900.0, keep_tps=100.0)
    np.testing.assert_array_equal(rows[0], EPT * 10.0 <= b)


def test_the_budget_masks_what_would_overdraw_and_nothing_while_the_allowance_lasts():
    f = Feasibility(EPT)
    allowed = np.ones(8, bool)
    assert f.budget_mask(10.0, math.nan, -100.0, DT, allowed) is allowed  # no budget: nothing to hold
    # 0.45 W budget, 100 J left: one step of the largest (0.8 W) takes 3.5 J of it, nothing overdraws yet
    assert f.budget_mask(10.0, 0.45, 100.0, DT, allowed) is allowed
    # nothing left: every configuration above the budget would take it below zero; those at or under it stay
    m = f.budget_mask(10.0, 0.45, 0.0, DT, allowed)
    np.testing.assert_array_equal(m, EPT * 10.0 <= 0.45)
    # 0.55 J left: 0.5 W overdraws 0.5 J in a step of 10 s and is still allowed, 0.6 W (1.5 J) is not
    m = f.budget_mask(10.0, 0.45, 0.55, DT, allowed)
    np.testing.assert_array_equal(np.flatnonzero(m), np.arange(5))
    # nothing allowed meets the budget: the least power of the allowed ones (the smallest overdraw)
    some = np.zeros(8, bool)
    some[[3, 5, 6]] = True
    m = f.budget_mask(10.0, 0.05, -10.0, DT, some)
    np.testing.assert_array_equal(np.flatnonzero(m), [3])
    # the other rules' mask is never widened
    m = f.budget_mask(10.0, 0.45, -10.0, DT, some)
    assert not (m & ~some).any() and m.any()


def test_with_the_budget_spent_the_rule_steps_down_to_the_cheapest_once_running_whatever_the_switch_costs():
    """Nothing fits the budget: the least power at the rate, the switch's energy left out. Priced in, staying on the
    current configuration (no switch) looked cheapest on every step, so a run on a dearer one never left it."""
    f = Feasibility(EPT)
    switch = np.full(8, 5.0)  # from configuration 2: every switch costs 5 J (0.5 W over a step), staying nothing
    switch[2] = 0.0
    m = f.budget_mask(10.0, 0.05, -10.0, DT, np.ones(8, bool), switch_j=switch)
    assert np.flatnonzero(m).tolist() == [0]
    rows = f.budget_mask(np.full(2, 10.0), np.full(2, 0.05), np.full(2, -10.0), DT, np.ones((2, 8), bool),
                         switch_j=np.stack([switch, switch]))
    assert np.flatnonzero(rows[1]).tolist() == [0]
    # with the allowance in hand the switch still counts: 0.2 W + 0.5 W of switch over a 0.6 W budget overdraws
    m = f.budget_mask(10.0, 0.6, 0.0, DT, np.ones(8, bool), switch_j=switch)
    assert m[2] and not m[1] and m.sum() < 8


def test_a_configuration_is_priced_at_the_rate_and_flat_out_at_its_throughput():
    """At a given rate every configuration is priced at it, even one too slow to serve it (its tokens queue and are
    served later at its energy per token); flat out (no demand given, ``inf``) each at its own throughput."""
    tps = np.linspace(80.0, 10.0, 8)  # the larger, the slower
    f = Feasibility(EPT, tokens_per_s=tps)
    np.testing.assert_allclose(f.budget_power_w(math.inf), tps * EPT)
    np.testing.assert_allclose(f.budget_power_w(30.0), 30.0 * EPT)
    np.testing.assert_allclose(f.budget_power_w(np.array([30.0, math.inf])), [30.0 * EPT, tps * EPT])
    split = Feasibility(EPT, offload=np.eye(8, dtype=int)[2], connected_w=0.3, tokens_per_s=tps)
    assert split.budget_power_w(100.0)[2] == pytest.approx(100.0 * EPT[2] + 0.3)
    flat = tps * EPT  # 0.8, 1.4, 1.8, 2.0, 2.0, 1.8, 1.4, 0.8 W
    m = f.budget_mask(math.inf, 1.5, 0.0, DT, np.ones(8, bool))
    np.testing.assert_array_equal(m, flat <= 1.5)
    assert 0 < m.sum() < 8


def test_the_batched_budget_mask_is_the_scalar_one_row_by_row():
    f = Feasibility(EPT, offload=np.array([0, 0, 0, 1, 0, 1, 0, 0]), connected_w=0.3)
    rng = np.random.default_rng(0)
    n = 200
    rate, budget = rng.uniform(0, 30, n), rng.uniform(0.05, 1.0, n)
    budget[::7] = np.nan
    allowance = rng.uniform(-20, 20, n)
    allowed = rng.random((n, 8)) < 0.7
    allowed[np.arange(n), rng.integers(0, 8, n)] = True
    got = f.budget_mask(rate, budget, allowance, DT, allowed)
    masked = 0
    for r in range(n):
        want = f.budget_mask(rate[r], budget[r], allowance[r], DT, allowed[r])
        np.testing.assert_array_equal(got[r], want, err_msg=f"row {r}")
        assert got[r].any()
        masked += int((want != allowed[r]).any())
    assert masked > 20


def _budget_env(budget_rule: bool, budget_w: float, demand_tps: float = 20.0, **kw):
    tr = trace(400, demand_tps=demand_tps, budget_w=budget_w, capacity_wh=50.0, name="budget")
    return MicroLLMPowerEnv(profile=PROFILE, traces=[tr], random_start=False, max_episode_steps=10_000,
                            budget_rule=budget_rule, **kw)


def _largest_allowed(env) -> int:
    """The best quality the masks allow: a greedy policy that always wants more."""
    m = env.action_masks()
    q = np.where(m, env.costs.quality, -np.inf)
    return int(np.argmax(q))


def test_the_env_holds_the_budget_when_the_demand_holds():
    """At a constant demand the rule's forecast is exact: a policy that always takes the best the masks allow
    never overdraws with the rule, and overdraws on most steps without it."""
    ept = _budget_env(False, 1.0).costs.ept_j
    b = 20.0 * float(ept.min() + ept.max()) / 2  # between the smallest and the largest model's power
    counts = {}
    for rule in (True, False):
        env = _budget_env(rule, b)
        env.reset(options={"trace": 0, "start": 0})
        over = masked = 0
        for _ in range(399):
            masked += int(not env.action_masks().all())
            _, _, term, trunc, info = env.step(_largest_allowed(env))
            over += int(info["step"].over_budget > 0)
            if term or trunc:
                break
        counts[rule] = (over, masked)
    assert counts[True][0] == 0 and counts[True][1] > 200  # held on every step once the grace was spent
    assert counts[False][0] > 200 and counts[False][1] == 0


def test_the_env_masks_are_the_rules_own():
    """The env prices the demand just seen plus the backlog drained in one step, against the budget left with its
    grace (what the observation shows)."""
    env = _budget_env(True, 0.15, demand_tps=np.r_[np.full(100, 5.0), np.full(100, 60.0), np.full(200, 15.0)])
    env.reset(options={"trace": 0, "start": 0})
    rng = np.random.default_rng(3)
    binds = 0
    for _ in range(399):
        st = env.device_view()
        want = env.rules.budget_mask(st["demand_tps"] + st["backlog_frac"] * env.backlog_cap / env.step_s, 0.15,
                                     st["budget_left_j"], env.step_s, np.ones(len(env.costs.quality), bool),
                                     env.costs.switch_j[env._a], keep_s=env.params.budget_reserve_s)
        assert env.temp_c <= env.traces[0].device.t_max_c - 1.0 and env.soc >= env.reserve_soc  # no safety rule
        np.testing.assert_array_equal(env.action_masks(), want)
        binds += int(not env.action_masks().all())
        _, _, term, trunc, _ = env.step(int(rng.choice(np.flatnonzero(env.action_masks()))))
        if term or trunc:
            break
    assert binds > 50


@pytest.mark.parametrize("k", [0, 14])
def test_the_batched_env_holds_the_same_budget_masks_as_the_scalar_env(k):
    """Default set, train split, with every trace's budget scaled down so that it binds (trace 14 is the one with a
    budget of its own; trace 0 gets one here)."""
    import traces as T
    from envs.power_env import MicroLLMPowerEnv as E

    base = T.TraceSet.load("traces/data/default").split("train")
    trs = [t.replace(budget_w=np.full(len(t.time_s), 0.05)) for t in base]
    scalar = E(profile=PROFILE, traces=trs, random_start=False, max_episode_steps=10_000, budget_rule=True)
    batched = BatchedPowerEnv(n_envs=2, profile=PROFILE, traces=trs, max_episode_steps=10_000, budget_rule=True)
    scalar.reset(seed=0, options={"trace": k, "start": 0})
    batched.reset_env(0, k, 0)
    batched.reset_env(1, k, 0)
    rng = np.random.default_rng(k)
    binds = 0
    for _ in range(200):
        want, got = scalar.action_masks(), batched.action_masks()
        np.testing.assert_array_equal(got[0], want)
        binds += int(not want.all())
        a = int(rng.choice(np.flatnonzero(want)))
        _, _, term, trunc, _ = scalar.step(a)
        batched._step(np.full(2, a))
        if term or trunc:
            break
    assert binds > 10
    off = BatchedPowerEnv(n_envs=1, profile=PROFILE, traces=trs, max_episode_steps=10_000, budget_rule=False)
    off.reset_env(0, k, 0)
    assert off.action_masks()[0].all()


def test_the_shield_holds_the_budget_and_says_so():
    sh = Shield(ShieldParams(45.0, 5.0, 0.05, budget_reserve_s=0.0), EPT)
    assert sh.mask(10.0, 30.0, 25.0, 0.5, 0.9, 0.0) is None  # nothing to hold
    assert sh.mask(10.0, 30.0, 25.0, 0.5, 0.9, 0.0, budget_w=0.45, allowance_j=100.0).all()  # allowance left
    m = sh.mask(10.0, 30.0, 25.0, 0.5, 0.9, 0.0, budget_w=0.45, allowance_j=0.0)
    np.testing.assert_array_equal(m, EPT * 10.0 <= 0.45)
    assert sh.mask_reason(30.0, 0.9, action=7) == Reason.BUDGET_MASK
    # the rate it prices: the backlog's drain counts (20 tok/s: only the cheapest two fit 0.45 W)
    m = sh.mask(10.0, 30.0, 25.0, 0.5, 0.9, 0.0, budget_w=0.45, allowance_j=0.0, rate_tps=20.0)
    np.testing.assert_array_equal(m, EPT * 20.0 <= 0.45)
    # below the reserve the battery rule comes first, and the reason is the battery's
    m = sh.mask(10.0, 30.0, 25.0, 0.5, 0.01, 0.0, budget_w=0.45, allowance_j=0.0)
    assert m.sum() == 2 and sh.mask_reason(30.0, 0.01, action=7) == Reason.BATTERY_MASK
    # the seconds of budget kept in hand (ShieldParams.budget_reserve_s): 100 J is less than 0.45 W x 1800 s
    keep = Shield(ShieldParams(45.0, 5.0, 0.05), EPT)
    assert keep.p.budget_reserve_s == EnvParams().budget_reserve_s
    np.testing.assert_array_equal(keep.mask(10.0, 30.0, 25.0, 0.5, 0.9, 0.0, budget_w=0.45, allowance_j=100.0),
                                  EPT * 10.0 <= 0.45)
    off = Shield(ShieldParams(45.0, 5.0, 0.05, budget_rule=False), EPT)
    assert off.mask(10.0, 30.0, 25.0, 0.5, 0.9, 0.0, budget_w=0.45, allowance_j=1.0) is None


def test_env_params_refuse_a_budget_rule_that_is_not_a_switch():
    assert not EnvParams().budget_rule  # off in training by default (docs/objectives.md); scoring turns it on
    with pytest.raises(ValueError, match="budget_rule must be true or false"):
        EnvParams(budget_rule=2)
    for bad in (-1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="budget_reserve_s must be"):
            EnvParams(budget_reserve_s=bad)


def test_a_deployed_policy_that_insists_on_the_largest_model_is_held_to_the_budget(tmp_path):
    """The runtime manager's shield (agents.deployed: the exported file through the manager) holds the env's budget:
    a policy that always asks for the largest model overdraws far less, and the manager counts each override as
    ``budget_mask``."""
    from policy_helpers import random_policy_file

    from agents.deployed import DeployedPolicy

    profile = "profiles/reference-cpu.json"
    probe = MicroLLMPowerEnv(profile=profile, split="test")
    names, ept = probe.space.names, probe.costs.ept_j
    path = random_policy_file(tmp_path / "large.npz", profile, favour=names[int(np.argmax(ept))])
    tr = trace(200, demand_tps=20.0, budget_w=0.3 * 20.0 * float(ept.max()), capacity_wh=50.0, name="budget")
    over = {}
    for rule in (True, False):
        env = MicroLLMPowerEnv(profile=profile, traces=[tr], random_start=False, budget_rule=rule)
        ctrl = DeployedPolicy(path, shield=True)
        ctrl.bind(env)
        obs, _ = env.reset(seed=0, options={"trace": 0, "start": 0})
        steps = 0
        for t in range(199):
            a = int(ctrl.predict(obs, episode_start=np.array([t == 0]))[0][0])
            obs, _, term, trunc, info = env.step(a)
            steps += int(info["step"].over_budget > 0)
            if term or trunc:
                break
        over[rule] = (steps, ctrl.summary()["overrides"])
    assert over[True][1].get("budget_mask", 0) > 100 and over[True][0] <= 5
    assert "budget_mask" not in over[False][1] and over[False][0] > 100


def test_deploy_run_holds_the_budget_unless_told_not_to(tmp_path, capsys):
    """``deploy.py run --budget-w B``: the shield overrides a policy that insists on the largest model (reason
    ``budget_mask``) and the start-up line says the budget is held; ``--no-budget-rule`` leaves it to the policy."""
    from policy_helpers import random_policy_file

    import deploy

    profile = "profiles/reference-cpu.json"
    probe = MicroLLMPowerEnv(profile=profile, split="test")
    names, ept = probe.space.names, probe.costs.ept_j
    pol = random_policy_file(tmp_path / "large.npz", profile, favour=names[int(np.argmax(ept))])
    # solar-03 serves a demand from its first row (the replay's model power is the demand at the profiled cost)
    run = ["run", "--policy", pol, "--sensors", "replay:traces/data/default/solar-03.csv", "--max-tokens", "80",
           "--temperature", "0", "--no-status", "--every-tokens", "4", "--threads", "1", "--min-dwell", "1",
           "--objective", "max-quality", "--budget-w", "0.001"]
    held = deploy.main(run)
    assert "power budget held by the shield" in capsys.readouterr().err
    assert held["overrides"].get("budget_mask", 0) > 0
    free = deploy.main([*run, "--no-budget-rule"])
    assert "held by the shield" not in capsys.readouterr().err
    assert "budget_mask" not in free["overrides"]


def test_deploy_run_sets_what_the_budget_rule_keeps_in_hand(tmp_path, capsys):
    """``deploy.py run --budget-reserve-s / --budget-reserve-tps`` replace the policy file's reserve in the shield
    (ManagerConfig.budget_reserve_s / _tps); without them the shield keeps the policy's; a negative value is refused."""
    from policy_helpers import random_policy_file

    import deploy
    profile = "profiles/reference-cpu.json"
    pol = random_policy_file(tmp_path / "p.npz", profile)
    run = ["run", "--policy", pol, "--sensors", "replay:traces/data/default/solar-03.csv", "--max-tokens", "8",
           "--temperature", "0", "--no-status", "--threads", "1", "--objective", "max-quality", "--budget-w", "0.5"]
    deploy.main(run)
    d = EnvParams()
    assert f"{d.budget_reserve_s:g} s of it kept in hand" in capsys.readouterr().err
    deploy.main([*run, "--budget-reserve-s", "120", "--budget-reserve-tps", "0"])
    err = capsys.readouterr().err
    assert "120 s of it kept in hand" in err and "at 0 tok/s" in err
    with pytest.raises(SystemExit):
        deploy.main([*run, "--budget-reserve-s", "-5"])
    assert "--budget-reserve-s" in capsys.readouterr().err


def test_the_manager_takes_the_users_reserve_over_the_policy_files():
    """ManagerConfig.budget_reserve_s / _tps: None keeps the policy file's (the training env's), a value replaces it."""
    from policy_helpers import random_policy_file

    from runtime.manager import ManagerConfig, RuntimeManager
    from runtime.policy import load_policy_file
    from runtime.sensors import SensorHub

    with tempfile.TemporaryDirectory() as d:
        pf = load_policy_file(random_policy_file(f"{d}/p.npz", "profiles/reference-cpu.json"))
    own = RuntimeManager(pf, SensorHub([]), ManagerConfig()).shield.p
    assert (own.budget_reserve_s, own.budget_reserve_tps) == (pf.params.budget_reserve_s,
                                                              pf.params.budget_reserve_tps)
    told = RuntimeManager(pf, SensorHub([]), ManagerConfig(budget_reserve_s=60.0, budget_reserve_tps=5.0)).shield.p
    assert (told.budget_reserve_s, told.budget_reserve_tps) == (60.0, 5.0)


def test_the_manager_prices_the_budget_at_the_demand_or_flat_out():
    """The runtime manager's budget rule prices the demand + the backlog drain when it is given the demand
    (``set_workload``), each configuration at its own throughput when not (or when told ``budget_rate_tps = inf``, as
    ``deploy.py run`` does live)."""
    from policy_helpers import random_policy_file

    from runtime.manager import ManagerConfig, RuntimeManager
    from runtime.policy import load_policy_file
    from runtime.sensors import SensorHub

    with tempfile.TemporaryDirectory() as d:
        pf = load_policy_file(random_policy_file(f"{d}/p.npz", "profiles/reference-cpu.json"))
    mgr = RuntimeManager(pf, SensorHub([]), ManagerConfig())
    rules, calls = mgr.shield.rules, []
    orig = rules.budget_mask
    rules.budget_mask = lambda rate, *a, **k: calls.append(rate) or orig(rate, *a, **k)
    mgr.budget_w = 0.05
    for n, (setup, want) in enumerate(((lambda: None, math.inf),
                        (lambda: mgr.set_workload(demand_tps=12.0, backlog_frac=0.0), 12.0),
                        (lambda: mgr.set_workload(demand_tps=12.0, backlog_frac=0.01), 12.0 + 0.01 * 5000.0 / 10.0),
                        (lambda: setattr(mgr, "budget_rate_tps", math.inf), math.inf))):
        setup()
        calls.clear()
        mgr.decide(10.0 * (n + 1))
        assert calls and calls[-1] == pytest.approx(want)
