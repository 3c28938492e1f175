"""The quality-floor rule (``EnvParams.floor_rule``; ``runtime.rules.Feasibility.floor_mask``): under min-energy the
masks keep only the configurations that meet the user's floor, where the safety rules allow one; the scalar env, the
batched env, the masked oracle and the runtime shield hold the same masks."""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_oracle import three_config_profile, trace
from test_oracle_masked import TINY_MASKED, masked_brute_force

from agents.oracle import OracleController
from envs.batched import BatchedPowerEnv
from envs.power_env import MicroLLMPowerEnv
from model.profile_schema import example_profile
from runtime.dynamics import EnvParams, Objective
from runtime.rules import Feasibility, floor_in_force, floor_within_budget
from runtime.shield import Reason, Shield, ShieldParams

PROFILE = example_profile(12)
EPT = np.linspace(0.01, 0.08, 8)  # energy per token rises with quality, as on a real frontier
QUALITY = np.linspace(0.2, 0.9, 8)


def _mask(f: Feasibility, q_min: float = math.nan, *, temp_c: float = 30.0, soc: float = 0.9, demand: float = 20.0):
    # ambient 25 °C, trip 45 °C, 5 °C/W, base 0.5 W, reserve 0.05, no supply
    return f.mask(demand, temp_c, 25.0, 45.0, 5.0, 0.5, soc, 0.05, 0.0, q_min=q_min)


def test_the_floor_keeps_the_allowed_configurations_that_meet_it_and_gives_way_to_the_safety_rules():
    f = Feasibility(EPT, quality=QUALITY)
    assert _mask(f).all() and (_mask(f, math.nan) == _mask(f)).all()  # NaN: no floor
    np.testing.assert_array_equal(_mask(f, 0.5), QUALITY >= 0.5)
    assert not _mask(f, 0.5)[f.safe]  # the safe configuration is below the floor: not allowed while others are
    # below the reserve the cheap quarter (configurations 0 and 1): the floor keeps the one that meets it ...
    cheap = _mask(f, soc=0.01)
    assert cheap.sum() == 2
    np.testing.assert_array_equal(_mask(f, 0.25, soc=0.01), cheap & (QUALITY >= 0.25))
    # ... and gives way where none does: the battery rule wins, the floor is then only a cost
    np.testing.assert_array_equal(_mask(f, 0.5, soc=0.01), cheap)
    # hot with nothing that fits but the safe one: the safe one alone, floor or not
    hot = _mask(f, 0.5, temp_c=50.0, demand=400.0)
    assert hot.sum() == 1 and hot[f.safe]
    # a floor above every configuration: nothing meets it, nothing changes
    np.testing.assert_array_equal(_mask(f, 0.95), _mask(f))
    # without a quality table no floor can be held
    np.testing.assert_array_equal(_mask(Feasibility(EPT), 0.5), _mask(Feasibility(EPT)))


def test_a_missed_floor_keeps_only_the_undominated_configurations():
    """Where no allowed configuration meets the floor the step misses it whatever runs, so the floor rule keeps the
    allowed configurations no other allowed one beats on both energy per token and tokens/s
    (``Feasibility.undominated``): never none, split configurations untouched, nothing pruned without a throughput
    table or without a floor; the batched rows alike."""
    # energy per token rises with quality; configuration 3 is slower than 4 for more energy, 6 is a split one
    tps = np.array([40.0, 30.0, 35.0, 10.0, 25.0, 20.0, 5.0, 15.0])
    offload = np.zeros(8, bool)
    offload[6] = True
    f = Feasibility(EPT, offload=offload, quality=QUALITY, tokens_per_s=tps)
    everything = np.ones(8, bool)
    # configuration 0 is the cheapest and the fastest: it beats every local one; the split one stays
    assert np.flatnonzero(f.floor_mask(0.95, everything)).tolist() == [0, 6]
    # without 0: 1 (cheaper than 2) and 2 (faster than 1) both stay, 3 (beaten by 1 and 2) and every slower and
    # pricier one go
    some = everything.copy()
    some[0] = False
    assert np.flatnonzero(f.floor_mask(0.95, some)).tolist() == [1, 2, 6]
    # a floor one allowed configuration meets: the floor rule as before, nothing else pruned
    np.testing.assert_array_equal(f.floor_mask(0.85, some), some & (QUALITY >= 0.85))
    # no floor: allowed itself, pruned or not
    assert f.floor_mask(math.nan, some) is some
    # one allowed configuration, dominated by ones the other rules forbid: it stays
    one = np.zeros(8, bool)
    one[3] = True
    assert np.flatnonzero(f.floor_mask(0.95, one)).tolist() == [3]
    # no throughput table: nothing dominates, the floor missed leaves the mask as it was
    np.testing.assert_array_equal(Feasibility(EPT, quality=QUALITY).floor_mask(0.95, some), some)
    # batched: row by row as the scalar rule, a NaN row (no floor) keeps its mask
    rows = np.stack([everything, some, some, one])
    qs = np.array([0.95, 0.95, np.nan, 0.85])
    got = f.floor_mask(qs, rows)
    for r in range(4):
        np.testing.assert_array_equal(got[r], f.floor_mask(float(qs[r]), rows[r]))
    np.testing.assert_array_equal(got[2], some)


def test_the_shield_takes_a_dominated_choice_to_an_undominated_one_where_the_floor_is_missed():
    tps = np.array([40.0, 30.0, 35.0, 10.0, 25.0, 20.0, 15.0, 12.0])
    sh = Shield(ShieldParams(45.0, 5.0, 0.05), EPT, quality=QUALITY, tokens_per_s=tps)
    m = sh.mask(10.0, 30.0, 25.0, 0.5, 0.9, 0.0, q_min=0.95)
    assert np.flatnonzero(m).tolist() == [0]
    assert sh.mask_reason(30.0, 0.9, action=3) == Reason.FLOOR_MASK


def test_a_power_budget_puts_the_floor_out_of_force():
    assert floor_in_force(0.4, math.nan) == 0.4 and math.isnan(floor_in_force(0.4, 0.5))
    got = floor_in_force(np.array([0.4, 0.4, np.nan]), np.array([np.nan, 0.5, np.nan]))
    assert got[0] == 0.4 and np.isnan(got[1:]).all()


def test_under_a_budget_the_floor_is_held_after_the_budget_rule_and_only_there():
    assert math.isnan(floor_within_budget(0.4, math.nan)) and floor_within_budget(0.4, 0.5) == 0.4
    got = floor_within_budget(np.array([0.4, 0.4, np.nan]), np.array([np.nan, 0.5, 0.5]))
    assert np.isnan(got[[0, 2]]).all() and got[1] == 0.4
    # together the two hold a floor exactly once, budget or not
    for b in (math.nan, 0.5):
        q = (floor_in_force(0.4, b), floor_within_budget(0.4, b))
        assert sum(x == x for x in q) == 1


def _min_energy_env(floor_rule: bool, q_min: float, **kw):
    return MicroLLMPowerEnv(profile=PROFILE, split="train", random_start=False, max_episode_steps=10_000,
                            objective=Objective(kind="min-energy", quality_floor=q_min), floor_rule=floor_rule, **kw)


def test_the_env_holds_the_floor_under_min_energy_and_only_there():
    q = np.asarray(PROFILE_QUALITY)
    q_min = float(np.median(q))
    on, off = _min_energy_env(True, q_min), _min_energy_env(False, q_min)
    rng = np.random.default_rng(0)
    below_on = floor_masked = 0
    for k in (0, 2, 4):
        on.reset(seed=0, options={"trace": k, "start": 0, "quality_floor": q_min})
        off.reset(seed=0, options={"trace": k, "start": 0, "quality_floor": q_min})
        for _ in range(300):
            m_on, m_off = on.action_masks(), off.action_masks()
            meets = m_off & (q >= q_min)
            np.testing.assert_array_equal(m_on, meets if meets.any() else on.rules.undominated(m_off))
            floor_masked += int((m_on != m_off).any())
            a = int(rng.choice(np.flatnonzero(m_on)))  # a random policy that obeys the masks, in both envs
            _, _, term, trunc, info = on.step(a)
            off.step(a)
            below_on += int(info["step"].served > 0 and q[info["config"]] < q_min and meets.any())
            if term or trunc:
                break
    assert floor_masked > 100 and below_on == 0
    # max-quality: the floor rule masks nothing
    on.reset(seed=0, options={"trace": 0, "start": 0, "objective": "max-quality"})
    assert on.action_masks().all()


PROFILE_QUALITY = MicroLLMPowerEnv(profile=PROFILE, split="train").costs.quality


@pytest.mark.parametrize("k", [0, 9, 14])
def test_the_batched_env_holds_the_same_floor_masks_as_the_scalar_env(k):
    """Trace 14 (deadline-01) has a power budget: there the floor is not in force, in either env."""
    q_min = float(np.quantile(PROFILE_QUALITY, 0.6))
    scalar = _min_energy_env(True, q_min)
    batched = BatchedPowerEnv(n_envs=3, profile=PROFILE, split="train", max_episode_steps=10_000, floor_rule=True,
                              objective=Objective(kind="min-energy", quality_floor=q_min))
    has_budget = bool(np.isfinite(np.asarray(scalar.traces[k].budget_w, dtype=float)).any())
    assert has_budget == (k == 14)
    scalar.reset(seed=0, options={"trace": k, "start": 0})
    for j in range(3):  # one min-energy row, one max-quality row, one min-energy row
        batched.reset_env(j, k, 0, objective="max-quality" if j == 1 else "min-energy")
    rng = np.random.default_rng(k)
    binds = 0
    for _ in range(200):
        want, got = scalar.action_masks(), batched.action_masks()
        np.testing.assert_array_equal(got[0], want)
        np.testing.assert_array_equal(got[2], want)
        binds += int(not got[0].all())
        a = int(rng.choice(np.flatnonzero(want)))
        _, _, term, trunc, _ = scalar.step(a)
        batched._step(np.full(3, a))
        if term or trunc:
            break
    assert (binds == 0) if has_budget else (binds > 50)  # the floor binds on this profile, unless a budget is set
    off = BatchedPowerEnv(n_envs=1, profile=PROFILE, split="train", max_episode_steps=10_000, floor_rule=False,
                          objective=Objective(kind="min-energy", quality_floor=q_min))
    off.reset_env(0, k, 0)
    assert off.action_masks()[0].all()


@pytest.mark.parametrize("case", ["cool", *sorted(TINY_MASKED)])
def test_the_masked_oracle_under_a_floor_equals_brute_force_over_the_sequences_the_masks_allow(case):
    q = MicroLLMPowerEnv(profile=three_config_profile(), traces=[trace(6)]).costs.quality
    q_min = float((q[0] + q[1]) / 2)  # the smallest configuration is below the floor, the other two above it
    kw = TINY_MASKED.get(case, dict(supply_w=0.0, ambient_c=25.0, demand_tps=30.0, capacity_wh=1.0, soc=0.9))
    env = MicroLLMPowerEnv(profile=three_config_profile(), traces=[trace(6, **kw)], random_start=False,
                           objective=Objective(kind="min-energy", quality_floor=q_min), floor_rule=True)
    best, cut = masked_brute_force(env, 6)
    assert cut > 0
    masked = OracleController(env, n_soc=401, n_temp=199, n_backlog=7, masked=True)
    obs, _ = env.reset(options={"trace": 0, "start": 0})
    masked.bind(env)
    ret = 0.0
    for t in range(6):
        a = int(masked.predict(obs, episode_start=np.array([t == 0]))[0])
        assert env.action_masks()[a]
        obs, r, term, trunc, _ = env.step(a)
        ret += r
        if term or trunc:
            break
    assert ret == pytest.approx(best, abs=1e-9)


@pytest.mark.parametrize("budget_w", [None, 0.3])
def test_the_oracles_masks_under_a_floor_are_the_envs(budget_w):
    q_min = float(np.median(PROFILE_QUALITY))
    env = MicroLLMPowerEnv(profile=PROFILE, traces=[trace(60, ambient_c=41.0, demand_tps=80.0, capacity_wh=0.05,
                                                          soc=0.2, name="hot-low", budget_w=budget_w)],
                           random_start=False, objective=Objective(kind="min-energy", quality_floor=q_min),
                           floor_rule=True)
    oracle = OracleController(env, masked=True)
    env.reset(options={"trace": 0, "start": 0})
    tr, rng = env.traces[0], np.random.default_rng(1)
    kinds = set()
    for _ in range(59):
        st = env.sim_state()
        M, low_ok, lo = oracle._mask_cases(0, st["row"], st["episode_start"], q_min=q_min)
        got = M[int(st["temp_c"] > tr.device.t_max_c - 1.0), int(bool(st["soc"] < lo) and low_ok)]
        want = env.action_masks()
        np.testing.assert_array_equal(got, want, err_msg=f"row {st['row']}")
        kinds.add((bool((want & (PROFILE_QUALITY < q_min)).any()), int(want.sum())))
        _, _, term, trunc, _ = env.step(int(rng.choice(np.flatnonzero(want))))
        if term or trunc:
            break
    assert len(kinds) > 1 or budget_w is not None  # without a budget the masks changed along the episode
    # the floor held where no safety rule left only configurations below it, unless a budget puts it out of force
    assert any(not below for below, _ in kinds) == (budget_w is None)


def test_the_shield_holds_the_floor_and_says_so():
    sh = Shield(ShieldParams(45.0, 5.0, 0.05), EPT, quality=QUALITY)
    assert sh.mask(20.0, 30.0, 25.0, 0.5, 0.9, 0.0) is None  # nothing to hold
    m = sh.mask(20.0, 30.0, 25.0, 0.5, 0.9, 0.0, q_min=0.5)
    np.testing.assert_array_equal(m, QUALITY >= 0.5)
    assert sh.mask_reason(30.0, 0.9, action=0) == Reason.FLOOR_MASK
    # below the reserve the battery rule comes first: the floor gives way, and the reason is the battery's
    m = sh.mask(20.0, 30.0, 25.0, 0.5, 0.01, 0.0, q_min=0.5)
    assert m.sum() == 2 and sh.mask_reason(30.0, 0.01, action=7) == Reason.BATTERY_MASK
    off = Shield(ShieldParams(45.0, 5.0, 0.05, floor_rule=False), EPT, quality=QUALITY)
    assert off.mask(20.0, 30.0, 25.0, 0.5, 0.9, 0.0, q_min=0.5) is None


def test_the_shield_holds_the_floor_within_what_the_budget_allows():
    """Under a budget the shield's floor comes after its budget rule: of the configurations the budget allows, those
    that meet the floor; none of them meets it: the budget's mask alone; no budget rule: no floor either."""
    sh = Shield(ShieldParams(45.0, 5.0, 0.05, budget_reserve_s=0.0), EPT, quality=QUALITY)
    at = dict(budget_w=0.45, allowance_j=0.0)  # at 10 tok/s the budget allows configurations 0..3 (<= 0.4 W)
    budget_only = EPT * 10.0 <= 0.45
    m = sh.mask(10.0, 30.0, 25.0, 0.5, 0.9, 0.0, q_min=0.5, **at)
    np.testing.assert_array_equal(m, budget_only & (QUALITY >= 0.5))
    assert np.flatnonzero(m).tolist() == [3]  # the one that meets the floor within the budget, never above it
    assert sh.mask_reason(30.0, 0.9, action=0) == Reason.FLOOR_MASK  # the budget allows it, the floor does not
    assert sh.mask_reason(30.0, 0.9, action=7) == Reason.BUDGET_MASK  # above the budget: the budget's reason
    # a floor that nothing the budget allows meets: the budget's mask alone, no overdraw for the floor's sake
    np.testing.assert_array_equal(sh.mask(10.0, 30.0, 25.0, 0.5, 0.9, 0.0, q_min=0.85, **at), budget_only)
    # with the allowance in hand the budget masks nothing, and the floor is held as without a budget
    np.testing.assert_array_equal(sh.mask(10.0, 30.0, 25.0, 0.5, 0.9, 0.0, q_min=0.5, budget_w=0.45,
                                          allowance_j=1e6), QUALITY >= 0.5)
    # a budget the shield does not hold: the floor is only a cost there too
    no_budget_rule = Shield(ShieldParams(45.0, 5.0, 0.05, budget_rule=False), EPT, quality=QUALITY)
    assert no_budget_rule.mask(10.0, 30.0, 25.0, 0.5, 0.9, 0.0, q_min=0.5, **at) is None


@pytest.mark.parametrize("k", [0, 14])
def test_the_envs_hold_the_floor_within_the_budget_masks(k):
    """Both rules on, every trace's budget scaled down so that it binds: the scalar env's mask is its budget mask
    (the same env with the floor rule off, stepped alike) held to the floor where that leaves one, and the batched
    env holds the same masks row by row."""
    import traces as T

    base = T.TraceSet.load("traces/data/default").split("train")
    trs = [t.replace(budget_w=np.full(len(t.time_s), 0.05)) for t in base]
    q_min = float(np.quantile(PROFILE_QUALITY, 0.6))
    # the floor keeps the budget rule's own reserve here (spending it: test_the_envs_let_the_floor_spend_the_reserve)
    kw = dict(profile=PROFILE, traces=trs, max_episode_steps=10_000, budget_rule=True,
              budget_floor_reserve_s=EnvParams().budget_reserve_s,
              objective=Objective(kind="min-energy", quality_floor=q_min))
    both = MicroLLMPowerEnv(random_start=False, floor_rule=True, **kw)
    budget = MicroLLMPowerEnv(random_start=False, floor_rule=False, **kw)
    batched = BatchedPowerEnv(n_envs=2, floor_rule=True, **kw)
    for e in (both, budget):
        e.reset(seed=0, options={"trace": k, "start": 0})
    batched.reset_env(0, k, 0, objective="min-energy")
    batched.reset_env(1, k, 0, objective="max-quality")
    q = np.asarray(PROFILE_QUALITY)
    rng = np.random.default_rng(k)
    budget_binds = floor_binds = 0
    for _ in range(300):
        m, mb = both.action_masks(), budget.action_masks()
        meets = mb & (q >= q_min)
        # none meets it: the floor is missed whatever runs, and the budget's mask less its dominated configurations
        np.testing.assert_array_equal(m, meets if meets.any() else both.rules.undominated(mb))
        np.testing.assert_array_equal(batched.action_masks()[0], m)
        budget_binds += int(not mb.all())
        floor_binds += int((m != mb).any())
        a = int(rng.choice(np.flatnonzero(m)))
        _, _, term, trunc, _ = both.step(a)
        budget.step(a)
        batched._step(np.full(2, a))
        if term or trunc:
            break
    assert budget_binds > 10 and floor_binds > 10  # both rules at work, the floor within the budget


def test_env_params_refuse_a_floor_rule_that_is_not_a_switch():
    assert not EnvParams().floor_rule  # off in training by default (docs/objectives.md); scoring turns it on
    with pytest.raises(ValueError, match="floor_rule must be true or false"):
        EnvParams(floor_rule=2)


def test_a_deployed_policy_that_insists_on_the_smallest_model_is_held_to_the_floor(tmp_path):
    """The runtime manager's shield (agents.deployed: the exported file through the manager) holds the env's floor:
    a policy that always asks for the smallest model runs configurations that meet the floor, and the manager counts
    each override as ``floor_mask``."""
    import gymnasium as gym
    from policy_helpers import random_policy_file

    import envs
    from agents.deployed import DeployedPolicy

    profile = "profiles/reference-cpu.json"
    probe = gym.make(envs.ENV_ID, split="test", random_start=False, profile=profile).unwrapped
    q, names = probe.costs.quality, probe.space.names
    q_min = float(np.quantile(q, 0.5))
    path = random_policy_file(tmp_path / "small.npz", profile, favour=names[int(np.argmin(q))], with_quality=True)
    env = gym.make(envs.ENV_ID, split="test", random_start=False, profile=profile,
                   objective=Objective(kind="min-energy", quality_floor=q_min))
    for floor_rule in (True, False):
        ctrl = DeployedPolicy(path, shield=True)
        ctrl.bind(env)
        env.unwrapped.params = env.unwrapped.params.replace(floor_rule=floor_rule)  # the manager reads the env's
        obs, _ = env.reset(seed=0, options={"trace": 0, "start": 0})
        below = 0
        for t in range(60):
            a = int(ctrl.predict(obs, episode_start=np.array([t == 0]))[0][0])
            below += int(q[a] < q_min)
            obs, _, term, trunc, _ = env.step(a)
            if term or trunc:
                break
        over = ctrl.summary()["overrides"]
        if floor_rule:
            assert below == 0 and over.get("floor_mask", 0) > 0
        else:
            assert below > 30 and "floor_mask" not in over


def test_deploy_run_holds_the_floor_unless_told_not_to(tmp_path, capsys):
    """``deploy.py run --objective min-energy --quality-floor Q``: the shield overrides a policy that insists on the
    smallest model (reason ``floor_mask``) and the start-up line says the floor is held; ``--no-floor-rule`` leaves
    it to the policy."""
    from policy_helpers import random_policy_file

    import deploy

    profile = "profiles/reference-cpu.json"
    probe = MicroLLMPowerEnv(profile=profile, split="test")
    q, names = probe.costs.quality, probe.space.names
    pol = random_policy_file(tmp_path / "small.npz", profile, favour=names[int(np.argmin(q))], with_quality=True)
    run = ["run", "--policy", pol, "--sensors", "replay:traces/data/default/phone-00.csv", "--max-tokens", "80",
           "--temperature", "0", "--no-status", "--every-tokens", "4", "--threads", "1", "--min-dwell", "1",
           "--objective", "min-energy", "--quality-floor", "0.45"]
    held = deploy.main(run)
    assert "quality floor 0.45 held by the shield" in capsys.readouterr().err
    assert held["overrides"].get("floor_mask", 0) > 0 and held["objective"]["met"]
    free = deploy.main([*run, "--no-floor-rule"])
    assert "held by the shield" not in capsys.readouterr().err
    assert "floor_mask" not in free["overrides"] and not free["objective"]["met"]
    # under a power budget the start-up line says how far the floor may spend the budget's reserve (the policy's,
    # or --budget-floor-reserve-s); a negative value is refused with the flag's name
    deploy.main([*run, "--budget-w", "5"])
    assert f"spending its reserve down to {EnvParams().budget_floor_reserve_s:g} s" in capsys.readouterr().err
    deploy.main([*run, "--budget-w", "5", "--budget-floor-reserve-s", "60"])
    assert "spending its reserve down to 60 s" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        deploy.main([*run, "--budget-w", "5", "--budget-floor-reserve-s", "-1"])
    assert "--budget-floor-reserve-s" in capsys.readouterr().err


def test_a_deployed_policy_under_a_budget_is_held_to_the_floor_within_it(tmp_path):
    """Min-energy with a budget that the cheapest configuration meeting the floor just fits: the runtime manager's
    shield holds the floor after the budget rule, as the env's masks do (every action it takes is one the env
    allows), so a policy that insists on the smallest model meets the floor without overdrawing, also when the
    floor may spend the reserve down to zero; without the budget rule the floor is only a cost under a budget, and
    the policy runs below it. The episode starts on the full model: the shield prices each switch's energy into the
    budget as the env does (the policy file's switch costs); a file without them (older exports) does not, and with
    the allowance spent down to zero the switch tips the env's books over the budget."""
    from policy_helpers import random_policy_file
    from test_oracle import trace

    from agents.deployed import DeployedPolicy

    profile = "profiles/reference-cpu.json"
    probe = MicroLLMPowerEnv(profile=profile, split="test")
    q, ept, names = probe.costs.quality, probe.costs.ept_j, probe.space.names
    q_min = float(np.quantile(q, 0.5))
    meets = np.flatnonzero(q >= q_min)
    b = 1.05 * 20.0 * float(ept[meets].min())  # the cheapest configuration that meets the floor fits, at 20 tok/s
    # the smallest model no other outruns for less energy: where the floor is missed the masks keep it
    # (test_a_missed_floor_keeps_only_the_undominated_configurations)
    fast = np.flatnonzero(probe.rules.undominated(np.ones(len(q), bool)))
    smallest = int(fast[np.argmin(q[fast])])
    tr = trace(200, demand_tps=20.0, budget_w=b, capacity_wh=50.0, name="floor-and-budget")
    got = {}
    for rule, keep, priced in ((True, EnvParams().budget_reserve_s, True), (True, EnvParams().budget_floor_reserve_s,
                               True), (True, 0.0, True), (True, 0.0, False), (False, 0.0, True)):
        params = EnvParams(budget_floor_reserve_s=keep)
        path = random_policy_file(tmp_path / f"small-{keep:g}-{priced}.npz", profile, params=params,
                                  favour=names[smallest], with_quality=True, with_switch_costs=priced)
        env = MicroLLMPowerEnv(profile=profile, traces=[tr], random_start=False, floor_rule=True, budget_rule=rule,
                               budget_floor_reserve_s=keep, objective=Objective(kind="min-energy", quality_floor=q_min))
        ctrl = DeployedPolicy(path, shield=True)
        ctrl.bind(env)
        obs, _ = env.reset(seed=0, options={"trace": 0, "start": 0, "config": int(np.argmax(q))})
        below = over = outside = 0
        for t in range(199):
            a = int(ctrl.predict(obs, episode_start=np.array([t == 0]))[0][0])
            outside += int(not env.action_masks()[a])
            obs, _, term, trunc, info = env.step(a)
            below += int(q[info["config"]] < q_min)
            over += int(info["step"].over_budget > 0)
            if term or trunc:
                break
        got[rule, keep, priced] = (below, over, outside, ctrl.summary()["overrides"])
    keeps = (EnvParams().budget_reserve_s, EnvParams().budget_floor_reserve_s, 0.0)
    for keep in keeps:  # the switch priced: every action is one the env allows, none overdraws
        below, over, outside, overrides = got[True, keep, True]
        assert outside == 0 and over == 0 and overrides.get("floor_mask", 0) + below == 199, (keep, got)
    # the less the floor keeps in hand, the sooner it may pay for the switch up to the floor (the reserve kept in full:
    # never, at this tight budget; kept to nothing: at once)
    below = [got[True, keep, True][0] for keep in keeps]
    assert below[0] == 199 and 0 < below[1] < 100 and below[2] == 0, got
    below, over, outside, _ = got[True, 0.0, False]  # the switch not priced: one action the env forbids, overdrawn
    assert outside >= 1 and over >= 1, got
    below, _, _, overrides = got[False, 0.0, True]
    assert below > 100 and "floor_mask" not in overrides


def test_holding_the_floor_may_spend_the_budgets_reserve_but_never_the_budget():
    """``Feasibility.budget_floor_mask``: with ``floor_keep_s`` below the budget rule's reserve, a configuration that
    meets the floor is allowed while the allowance after the step stays above that smaller reserve (0: above zero),
    where the reserve alone forbade it; nothing that meets the floor fits even then: the budget rule's mask as
    before; ``floor_keep_s`` None or ≥ the reserve: exactly the floor within the budget's mask."""
    f = Feasibility(EPT, quality=QUALITY)
    # 10 tok/s: configurations 0..7 draw 0.1..0.8 W; the budget 0.45 W; the floor 0.6 (configurations 4..7)
    at = dict(rate_tps=10.0, budget_w=0.45, dt_s=10.0, allowed=np.ones(8, bool), keep_s=900.0)
    budget_only = EPT * 10.0 <= 0.45
    for allowance, floor_keep, want in [
            (100.0, None, budget_only),  # the reserve (405 J) forbids every configuration that meets the floor
            (100.0, 900.0, budget_only),
            (100.0, 0.0, QUALITY >= 0.6),  # 100 J pays for any of them over one step
            (1.0, 0.0, np.arange(8) == 4),  # 1 J pays only for the cheapest: 0.05 W over for 10 s
            (0.2, 0.0, budget_only),  # not even that: the budget is never overdrawn for the floor
            (1.0, 900.0, budget_only)]:
        got = f.budget_floor_mask(**at, allowance_j=allowance, q_min=0.6, floor_keep_s=floor_keep)
        np.testing.assert_array_equal(got, want, err_msg=f"allowance {allowance} J, floor keeps {floor_keep} s")
    # no floor (NaN): the budget rule alone, whatever floor_keep_s says
    np.testing.assert_array_equal(f.budget_floor_mask(**at, allowance_j=100.0, floor_keep_s=0.0), budget_only)
    # the batched rows are the scalar answers row by row
    allow = np.array([100.0, 1.0, 0.2, 1e6])
    qs = np.array([0.6, 0.6, 0.6, np.nan])
    rows = f.budget_floor_mask(np.full(4, 10.0), np.full(4, 0.45), allow, 10.0, np.ones((4, 8), bool), None, 900.0,
                               0.0, qs, 0.0)
    for r in range(4):
        one = f.budget_floor_mask(10.0, 0.45, allow[r], 10.0, np.ones(8, bool), None, 900.0, 0.0, qs[r], 0.0)
        np.testing.assert_array_equal(rows[r], one)


def test_the_shield_lets_the_floor_spend_the_reserve_and_says_why_it_masks():
    sh = Shield(ShieldParams(45.0, 5.0, 0.05, budget_reserve_s=900.0, budget_reserve_tps=0.0,
                             budget_floor_reserve_s=0.0), EPT, quality=QUALITY)
    m = sh.mask(10.0, 30.0, 25.0, 0.5, 0.9, 0.0, q_min=0.6, budget_w=0.45, allowance_j=1.0)
    assert np.flatnonzero(m).tolist() == [4]  # the cheapest configuration that meets the floor, paid from the reserve
    assert sh.mask_reason(30.0, 0.9, action=0) == Reason.FLOOR_MASK  # within the budget, below the floor
    assert sh.mask_reason(30.0, 0.9, action=6) == Reason.BUDGET_MASK  # the allowance cannot pay for it
    same = Shield(ShieldParams(45.0, 5.0, 0.05, budget_reserve_s=900.0, budget_reserve_tps=0.0,
                               budget_floor_reserve_s=900.0), EPT, quality=QUALITY)
    np.testing.assert_array_equal(same.mask(10.0, 30.0, 25.0, 0.5, 0.9, 0.0, q_min=0.6, budget_w=0.45,
                                            allowance_j=1.0), EPT * 10.0 <= 0.45)


def test_the_envs_let_the_floor_spend_the_reserve_alike():
    """``EnvParams.budget_floor_reserve_s`` below the budget rule's reserve: the scalar env's masks are the rules'
    ``budget_floor_mask`` over its state, the batched env's the same row by row, and the floor is held on steps where
    the reserve alone would have forbidden every configuration that meets it."""
    import traces as T

    base = T.TraceSet.load("traces/data/default").split("train")
    trs = [t.replace(budget_w=np.full(len(t.time_s), 0.05)) for t in base]
    q_min = float(np.quantile(PROFILE_QUALITY, 0.6))
    kw = dict(profile=PROFILE, traces=trs, max_episode_steps=10_000, budget_rule=True, floor_rule=True,
              budget_floor_reserve_s=0.0, objective=Objective(kind="min-energy", quality_floor=q_min))
    env = MicroLLMPowerEnv(random_start=False, **kw)
    batched = BatchedPowerEnv(n_envs=2, **kw)
    env.reset(seed=0, options={"trace": 0, "start": 0})
    batched.reset_env(0, 0, 0, objective="min-energy")
    batched.reset_env(1, 0, 0, objective="max-quality")
    q = np.asarray(PROFILE_QUALITY)
    rng = np.random.default_rng(3)
    spent = 0
    for _ in range(300):
        m = env.action_masks()
        np.testing.assert_array_equal(batched.action_masks()[0], m)
        b, dt = env._budget[env._i], env.step_s
        args = (env._last_demand + env.backlog / dt, b, env._budget_left_j + b * env._grace_s, dt, env._fits,
                env.costs.switch_j[env._a], env.params.budget_reserve_s, env.params.budget_reserve_tps)
        strict = env.rules.budget_floor_mask(*args, q_min)
        spent += int((m & (q >= q_min)).any() and not (strict & (q >= q_min)).any())
        a = int(rng.choice(np.flatnonzero(m)))
        _, _, term, trunc, _ = env.step(a)
        batched._step(np.full(2, a))
        if term or trunc:
            break
    assert spent >= 3  # steps on which only the reserve stood between the floor and the budget's mask


def test_env_params_refuse_a_bad_floor_reserve_and_the_manager_takes_the_users_over_the_policys():
    import tempfile

    from policy_helpers import random_policy_file

    from runtime.manager import ManagerConfig, RuntimeManager
    from runtime.policy import load_policy_file
    from runtime.sensors import SensorHub

    for bad in (-1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="budget_floor_reserve_s must be"):
            EnvParams(budget_floor_reserve_s=bad)
    with tempfile.TemporaryDirectory() as d:
        pf = load_policy_file(random_policy_file(f"{d}/p.npz", "profiles/reference-cpu.json"))
    own = RuntimeManager(pf, SensorHub([]), ManagerConfig()).shield.p
    assert own.budget_floor_reserve_s == pf.params.budget_floor_reserve_s
    told = RuntimeManager(pf, SensorHub([]), ManagerConfig(budget_floor_reserve_s=30.0)).shield.p
    assert told.budget_floor_reserve_s == 30.0
