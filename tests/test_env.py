"""MicroLLMPowerEnv: Gymnasium/SB3 conformance, determinism and hand-computed dynamics."""

from __future__ import annotations

import math
import warnings

import gymnasium as gym
import numpy as np
import pytest

import envs
from envs.power_env import MicroLLMPowerEnv
from model.profile_schema import example_profile
from runtime.dynamics import device_constants
from traces.schema import TraceMeta, make_trace

PROFILE = example_profile(12)
PHONE = device_constants("phone")


def flat_trace(n=400, step_s=10.0, supply_w=0.0, ambient_c=20.0, demand_tps=0.0, base_w=0.0,
               capacity_wh=10.0, soc=1.0, budget_w=None, kind="phone", deadline_s=None):
    meta = TraceMeta(capacity_wh=capacity_wh, initial_soc=soc, device_kind=kind, source="test",
                     license="CC0-1.0", unit="u", deadline_s=deadline_s)
    return make_trace("flat", meta, np.arange(n) * step_s, supply_w=supply_w, plugged=float(supply_w > 0),
                      ambient_c=ambient_c, demand_tps=demand_tps, bandwidth_mbps=10.0, budget_w=budget_w,
                      base_load_w=base_w)


def make_env(trace, **kw):
    return MicroLLMPowerEnv(profile=PROFILE, traces=[trace], random_start=False, **kw)


def test_gym_make_and_checkers_give_zero_warnings():
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = gym.make(envs.ENV_ID, profile=PROFILE)
    assert env.spec.max_episode_steps == envs.MAX_EPISODE_STEPS
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped)
        sb3_check_env(MicroLLMPowerEnv(profile=PROFILE))
    assert [str(w.message) for w in caught] == []


def test_same_seed_same_rollout():
    def rollout(seed):
        env = MicroLLMPowerEnv(profile=PROFILE)
        obs, _ = env.reset(seed=seed)
        env.action_space.seed(seed)
        out = [obs]
        for _ in range(200):
            obs, r, te, tr, info = env.step(env.action_space.sample())
            out.append(np.append(obs, r))
            if te or tr:
                obs, _ = env.reset()
        return np.concatenate(out)

    assert np.array_equal(rollout(3), rollout(3))
    assert not np.array_equal(rollout(3), rollout(4))


def test_constant_2w_for_1h_on_10wh_leaves_soc_0_8():
    # no tokens requested: the draw is the phone's idle power plus the trace's base load = 2 W
    env = make_env(flat_trace(base_w=2.0 - PHONE.idle_power_w, capacity_wh=10.0, soc=1.0))
    env.reset(seed=0, options={"config": 0})  # no switch: a switch costs energy
    for _ in range(360):  # 360 × 10 s = 1 h
        _, _, term, trunc, info = env.step(0)
        assert info["step"].power_w == pytest.approx(2.0)
    assert env.soc == pytest.approx(0.8, abs=1e-9)


def test_surplus_supply_charges_with_efficiency():
    env = make_env(flat_trace(supply_w=10.0, base_w=2.0 - PHONE.idle_power_w, soc=0.5))
    env.reset(seed=0, options={"config": 0})
    for _ in range(36):  # 6 minutes of an 8 W surplus × 0.9 efficiency into 10 Wh
        env.step(0)
    assert env.soc == pytest.approx(0.5 + 8.0 * 0.9 * 360 / 36000)


def test_known_heat_input_gives_analytic_temperature():
    P = 3.0
    env = make_env(flat_trace(base_w=P - PHONE.idle_power_w, ambient_c=20.0))
    env.reset(seed=0, options={"temp_c": 20.0, "config": 0})
    for _ in range(30):
        _, _, _, _, info = env.step(0)
    t = 300.0
    expected = 20.0 + PHONE.r_th_c_per_w * P * (1 - math.exp(-t / PHONE.tau_s))
    assert info["step"].temp_c == pytest.approx(expected, rel=1e-9)


def test_battery_death_terminates_with_penalty():
    env = make_env(flat_trace(base_w=5.0, capacity_wh=0.01, soc=0.5))
    env.reset(seed=0)
    for _ in range(10):
        _, r, term, trunc, info = env.step(0)
        if term:
            break
    assert term and not trunc and info["step"].dead
    assert info["step"].r_death == -env.w.death and info["step"].soc == 0.0


def test_tokens_served_and_throttling():
    env = make_env(flat_trace(demand_tps=50.0, ambient_c=20.0))
    env.reset(seed=0)
    a = int(np.argmin(env.costs.tps))
    _, _, _, _, info = env.step(a)
    cap = env.costs.tps[a] * (10.0 - env.costs.switch_s[env.full_config, a])
    assert info["step"].served == pytest.approx(min(500.0, cap))
    # hot device: throughput scaled by the governor
    env.reset(seed=0, options={"temp_c": PHONE.t_max_c + 5.0, "config": a})
    _, _, _, _, info = env.step(a)
    assert info["step"].throttle == pytest.approx(1 - PHONE.throttle_per_c * 5.0)
    assert info["step"].over_c > 0


def test_hot_device_masks_high_power_configs():
    env = make_env(flat_trace(demand_tps=200.0, ambient_c=42.0))
    env.reset(seed=0, options={"temp_c": 44.5})
    _, _, _, _, info = env.step(0)
    mask = info["action_mask"]
    assert mask.dtype == bool and mask.shape == (env.action_space.n,)
    assert mask.any() and not mask.all()
    assert np.array_equal(mask, env.action_masks())
    # every allowed config draws less at this demand than every masked one
    e = env.costs.ept_j
    assert e[mask].max() <= e[~mask].min()


def test_budget_overdraw_is_penalised_only_after_the_allowance():
    env = make_env(flat_trace(demand_tps=100.0, budget_w=0.3), budget_grace_s=300.0)
    a = int(np.argmax(env.costs.ept_j))
    env.reset(seed=0, options={"config": a})
    infos = [env.step(a)[4] for _ in range(100)]
    over = [bool(i["step"].over_budget > 0) for i in infos]
    idle_j = (PHONE.idle_power_w + 0.0) * 10.0  # the budget covers the LLM only, not idle/base load
    llm = [i["step"].energy_j - idle_j for i in infos]
    assert llm[0] > 0.3 * 10 and not over[0] and over[-1]
    k = over.index(True)  # the first violation comes once the 300 s allowance is spent
    assert sum(llm[:k + 1]) > 0.3 * (300 + 10 * (k + 1)) >= sum(llm[:k]) - 1e-9


def test_decode_table_matches_profile():
    env = make_env(flat_trace())
    assert [d["name"] for d in env.decode_table] == [c["name"] for c in PROFILE["configs"]]
    assert env.decode_table[0]["bits"] == PROFILE["configs"][0]["bits"]
    assert env.observation_space.shape == (len(env.feature_names),)


def test_observation_builder_imports_without_torch_or_gym():
    import subprocess
    import sys

    code = ("import sys\nfor m in ('torch','gymnasium','stable_baselines3'): sys.modules[m] = None\n"
            "import runtime.observation, runtime.rules\nprint('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"


def test_affordable_power_never_reads_when_the_trace_ends():
    """Without a deadline, feature 9 is stored energy / EnvParams.horizon_s (a rolling horizon), the same for a
    trace that ends in 10 minutes and one that runs for hours: a device never knows when its session ends. With
    a deadline it is stored energy / time to the deadline."""
    i9 = MicroLLMPowerEnv(profile=PROFILE, traces=[flat_trace()]).feature_names.index("affordable_power_w")
    feats = []
    for n in (60, 4000):
        env = make_env(flat_trace(n=n, capacity_wh=10.0, soc=0.5))
        obs, _ = env.reset(seed=0)
        feats.append(float(obs[i9]))
        assert env.params.horizon_s == 7200.0 and env.device_view()["horizon_left_s"] == 7200.0
    assert feats[0] == feats[1] == pytest.approx(0.5 * 10.0 * 3600.0 / 7200.0, rel=1e-6)
    env = make_env(flat_trace(n=400, capacity_wh=10.0, soc=0.5, deadline_s=1800.0))
    obs, _ = env.reset(seed=0)
    assert float(obs[i9]) == pytest.approx(0.5 * 10.0 * 3600.0 / 1800.0, rel=1e-6)
    short = make_env(flat_trace(n=400, capacity_wh=10.0, soc=0.5), max_episode_steps=90)
    obs, _ = short.reset(seed=0)
    assert float(obs[i9]) == pytest.approx(0.5 * 10.0 * 3600.0 / 900.0, rel=1e-6)


@pytest.mark.parametrize("kind", ["phone", "laptop", "solar-node"])
def test_thermal_block_is_the_model_power_that_reaches_the_trip_point(kind):
    """thermal_sustain_w held forever settles exactly at t_max; thermal_step_w held for one step ends there. Each
    kind has its own R_th and time constant, so the same degrees of headroom are different watts."""
    from runtime.dynamics import DEVICES, steady_temp_c, thermal_step

    dev = DEVICES[kind]
    env = make_env(flat_trace(ambient_c=25.0, base_w=0.3, kind=kind), thermal_obs=True)
    assert make_env(flat_trace(kind=kind)).observation_space.shape[0] + 2 == env.observation_space.shape[0]
    obs, _ = env.reset(seed=0, options={"temp_c": dev.t_max_c - 4.0})
    names = env.feature_names
    sustain, step = float(obs[names.index("thermal_sustain_w")]), float(obs[names.index("thermal_step_w")])
    base = 0.3 + dev.idle_power_w
    assert steady_temp_c(25.0, base + sustain, dev.r_th_c_per_w) == pytest.approx(dev.t_max_c, abs=1e-4)
    t1 = thermal_step(dev.t_max_c - 4.0, 25.0, base + step, env.step_s, dev.r_th_c_per_w, dev.tau_s)
    assert t1 == pytest.approx(dev.t_max_c, abs=1e-3)
    assert step > sustain  # 4 degC below the trip point, a burst may use more than the steady state allows
    obs, _ = env.reset(seed=0, options={"temp_c": dev.t_max_c + 1.0})
    assert float(obs[names.index("thermal_step_w")]) < float(obs[names.index("thermal_sustain_w")])


def test_thermal_block_as_a_fraction_is_the_watts_over_the_largest_configurations_power_clipped_to_the_cap():
    """thermal_cap > 0: the same powers divided by what the largest configuration would draw at the observed
    demand, clipped to ±cap; a cool laptop's headroom (tens of W) saturates at the cap, like any device whose
    largest configuration fits several times over."""
    watts = make_env(flat_trace(ambient_c=25.0, base_w=0.3, kind="phone", demand_tps=60.0), thermal_obs=True)
    frac = make_env(flat_trace(ambient_c=25.0, base_w=0.3, kind="phone", demand_tps=60.0), thermal_obs=True,
                    thermal_cap=3.0)
    c = frac.costs
    big = int(np.argmax(c.ept_j))
    i, d = frac.feature_names.index("thermal_sustain_frac"), frac.feature_names.index("demand_tps")
    of, _ = frac.reset(seed=0, options={"temp_c": 43.0})
    ow, _ = watts.reset(seed=0, options={"temp_c": 43.0})
    assert of[d] == 60.0
    p_big = min(float(of[d]), float(c.tps[big])) * float(c.ept_j[big])
    sustain_w = float(ow[watts.feature_names.index("thermal_sustain_w")])
    assert abs(sustain_w / p_big) < 3.0  # the case below tests the value, not the clip
    assert float(of[i]) == pytest.approx(sustain_w / p_big, rel=1e-4)
    assert frac.observation_space.low[i] == -3.0 and frac.observation_space.high[i] == 3.0
    lap = make_env(flat_trace(ambient_c=25.0, base_w=0.3, kind="laptop"), thermal_obs=True, thermal_cap=3.0)
    ol, _ = lap.reset(seed=0, options={"temp_c": 30.0})
    assert float(ol[i]) == 3.0 and float(ol[i + 1]) == 3.0
    idle = make_env(flat_trace(ambient_c=25.0, kind="phone"), thermal_obs=True, thermal_cap=3.0)
    assert float(idle.reset(seed=0, options={"temp_c": 43.0})[0][i]) == 3.0  # no demand: nothing to draw
    with pytest.raises(ValueError, match="thermal_cap"):
        make_env(flat_trace(), thermal_obs=True, thermal_cap=-1.0)
    with pytest.raises(ValueError, match="set thermal_obs too"):
        make_env(flat_trace(), thermal_cap=2.0)


def test_power_block_is_the_draw_and_the_affordable_power_over_the_costliest_configurations_draw():
    """power_cap > 0: two more features, the last step's draw and the affordable power divided by the device's own
    load plus what the costliest configuration would draw at the observed demand, clipped to [0, cap]; a laptop
    (several W of its own load) and a phone running the same model read alike where watts would not."""
    env = make_env(flat_trace(ambient_c=25.0, base_w=0.3, kind="phone", demand_tps=60.0), power_cap=4.0)
    c, names = env.costs, env.feature_names
    big = int(np.argmax(c.ept_j))
    o, _ = env.reset(seed=0)
    for _ in range(3):
        o, *_ = env.step(big)
    p_big = min(float(o[names.index("demand_tps")]), float(c.tps[big])) * float(c.ept_j[big])
    scale = env.device_view()["base_w"] + p_big
    pf, af = names.index("power_frac"), names.index("affordable_power_frac")
    assert float(o[pf]) == pytest.approx(float(o[names.index("power_w")]) / scale, rel=1e-4)
    afford_w = float(o[names.index("affordable_power_w")])
    assert float(o[af]) == pytest.approx(min(4.0, afford_w / scale), rel=1e-4)
    assert 0.5 < float(o[pf]) <= 1.0 + 1e-6  # running the costliest configuration: about its own draw
    assert env.observation_space.low[pf] == 0.0 and env.observation_space.high[af] == 4.0
    assert make_env(flat_trace(), power_cap=0.0).observation_space.shape[0] == len(names) - 2
    with pytest.raises(ValueError, match="power_cap"):
        make_env(flat_trace(), power_cap=-1.0)


def test_power_blocks_supply_row_is_the_supply_over_the_same_power():
    """power_supply: a third row, the supply divided by the same power as the block's other rows, clipped to
    [0, cap]: a charger that covers the costliest configuration reads above 1 whatever the device's watts."""
    kw = dict(ambient_c=25.0, base_w=0.3, kind="phone", demand_tps=60.0)
    with_s = make_env(flat_trace(supply_w=2.0, **kw), power_cap=4.0, power_supply=True)
    names = with_s.feature_names
    assert names[names.index("affordable_power_frac") + 1] == "supply_frac"
    assert make_env(flat_trace(**kw), power_cap=4.0).observation_space.shape[0] == len(names) - 1
    o, _ = with_s.reset(seed=0)
    pf, sf = names.index("power_frac"), names.index("supply_frac")
    scale = float(o[names.index("power_w")]) / float(o[pf])  # the block's own divisor
    assert float(o[sf]) == pytest.approx(2.0 / scale, rel=1e-4)
    big = make_env(flat_trace(supply_w=90.0, **kw), power_cap=4.0, power_supply=True)
    assert float(big.reset(seed=0)[0][sf]) == 4.0  # clipped to the cap
    assert big.observation_space.high[sf] == 4.0 and big.observation_space.low[sf] == 0.0
    with pytest.raises(ValueError, match="power_supply.*power_cap"):
        make_env(flat_trace(), power_supply=True)


def test_smoothed_demand_is_an_exponential_average_of_the_demand_seen():
    """demand_avg_s > 0: one more feature, the demand averaged with that time constant, starting from the first
    row's demand; a step of constant demand moves it by the factor 1 − exp(−dt/τ) towards it."""
    import math

    rows = np.r_[np.full(5, 100.0), np.zeros(395)]
    env = make_env(flat_trace(demand_tps=rows), demand_avg_s=60.0)
    assert env.observation_space.shape[0] == make_env(flat_trace()).observation_space.shape[0] + 1
    j = env.feature_names.index("demand_avg_tps")
    obs, _ = env.reset(seed=0)
    assert obs[j] == pytest.approx(100.0)
    for _ in range(5):
        obs = env.step(0)[0]
    assert obs[j] == pytest.approx(100.0)  # five steps of 100 tok/s: still 100
    a = math.exp(-env.step_s / 60.0)
    for k in range(1, 4):
        obs = env.step(0)[0]
        assert obs[j] == pytest.approx(100.0 * a ** k, rel=1e-5)  # the lull: it decays, the last demand is 0
        assert obs[env.feature_names.index("demand_tps")] == 0.0
    with pytest.raises(ValueError, match="demand_avg_s"):
        make_env(flat_trace(), demand_avg_s=-1.0)


def test_describe_lists_the_thermal_block_only_when_asked():
    from envs.describe import describe

    names = [r["name"] for r in describe(thermal_obs=True)["observation"]]
    assert names[19:21] == ["thermal_sustain_w", "thermal_step_w"]
    assert "thermal_step_w" not in [r["name"] for r in describe()["observation"]]
    rows = describe(thermal_obs=True, thermal_cap=2.0)["observation"][19:21]
    assert [(r["name"], r["min"], r["max"]) for r in rows] == [("thermal_sustain_frac", -2.0, 2.0),
                                                                ("thermal_step_frac", -2.0, 2.0)]


def test_the_first_decisions_mask_has_the_battery_rule_as_the_batched_envs_has():
    """A reset on a nearly empty battery masks as step() and the batched env do, from the first decision."""
    from envs.batched import BatchedPowerEnv
    from envs.power_env import MicroLLMPowerEnv
    from model.profile_schema import example_profile

    s = MicroLLMPowerEnv(profile=example_profile(12), split="train", random_start=False)
    b = BatchedPowerEnv(n_envs=1, ref=s)
    _, info = s.reset(seed=0, options={"trace": 0, "start": 5, "soc": 0.01})
    b.reset_env(0, 0, 5, soc=0.01)
    assert info["action_mask"].sum() < len(info["action_mask"])
    assert np.array_equal(info["action_mask"], b.action_masks()[0])


@pytest.mark.parametrize(("opts", "match"), [({"start": -3}, "start"), ({"start": 10**7}, "start"),
                                             ({"soc": 80}, r"0\.8, not 80"), ({"soc": -0.5}, "soc")])
def test_reset_refuses_a_start_row_or_a_charge_out_of_range(opts, match):
    from envs.power_env import MicroLLMPowerEnv
    from model.profile_schema import example_profile

    env = MicroLLMPowerEnv(profile=example_profile(12), split="train", random_start=False)
    with pytest.raises(ValueError, match=match):
        env.reset(seed=0, options={"trace": 0, **opts})
