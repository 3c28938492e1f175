"""The user's objectives (issue 16): max-quality, min-energy with a quality floor, last-until a deadline,
and the goal-conditioned mix — in the dynamics, both envs, the observation and the oracle."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest

import envs
from runtime.dynamics import SCALAR, EnvParams, Objective, objective_inputs, step_core


def _step(**kw):
    p = EnvParams()
    x = dict(tps=100.0, ept_j=0.02, dec_ms=10.0, quality=0.5, off=0.0, up_bits=0.0, server_ms=0.0, seg2_ms=0.0,
             xfer_ms=0.0, trip1_c=0.0, trip2_c=0.0, heat_frac=1.0, sw_s=0.0, sw_j=0.0, soc=0.5, temp_c=30.0,
             backlog=0.0, budget_left_j=0.0, demand_tps=20.0, supply_w=0.0, ambient_c=25.0, base_w=0.5,
             budget_w=math.nan, bw_mbps=0.0, w_q=1.0, w_e=0.0, q_min=math.nan, until=0.0, capacity_j=4e4, r_th=5.0,
             tau_s=240.0, t_max=45.0, thr_k=0.1, thr_min=0.3, eta=0.9, idle_w=0.2)
    x.update(kw)
    return step_core(SCALAR, p.step_s, p, *x.values()), p


def test_min_energy_pays_for_power_and_for_a_quality_below_the_floor():
    wq, we, qmin = objective_inputs("min-energy", 0.45)
    r, p = _step(w_q=wq, w_e=we, q_min=qmin, quality=0.5)
    llm_w = 20.0 * 0.02  # served tokens/s x J/token
    assert r.r_quality == 0.0 and r.r_energy == pytest.approx(-p.weights.energy * llm_w)
    assert r.r_floor == 0.0 and r.cost == 0
    low, _ = _step(w_q=wq, w_e=we, q_min=qmin, quality=0.3)
    assert low.r_floor == -p.weights.floor and low.cost == 1
    idle, _ = _step(w_q=wq, w_e=we, q_min=qmin, quality=0.3, demand_tps=0.0)
    assert idle.r_floor == 0.0  # nothing served: no quality to judge


def test_last_until_pays_for_each_step_below_the_reserve_before_the_deadline():
    p = EnvParams()
    below = p.reserve_soc * 0.5
    r, _ = _step(soc=below, until=1.0)
    assert r.r_reserve == -p.weights.reserve and r.cost >= 1
    after, _ = _step(soc=below, until=0.0)
    assert after.r_reserve == 0.0
    above, _ = _step(soc=0.5, until=1.0)
    assert above.r_reserve == 0.0


def test_max_quality_is_the_reward_it_always_was():
    r, _ = _step()
    assert r.r_energy == 0.0 and r.r_floor == 0.0 and r.r_reserve == 0.0
    assert r.reward == pytest.approx(r.r_quality + r.r_thermal + r.r_slo + r.r_budget + r.r_drop + r.r_death)


def test_env_params_round_trip_and_validation():
    p = EnvParams(objective=Objective(kind="mix", quality_floor=0.4, goal_obs=True))
    assert EnvParams.from_dict(p.to_dict()) == p
    with pytest.raises(ValueError, match="objective.kind"):
        EnvParams(objective=Objective(kind="cheapest"))
    with pytest.raises(ValueError, match="quality_floor"):
        EnvParams(objective=Objective(quality_floor=1.5))


def test_mix_draws_objectives_and_the_observation_says_which():
    p = EnvParams(objective=Objective(kind="mix"), max_episode_steps=20)
    env = gym.make(envs.ENV_ID, params=p, split="train").unwrapped
    names = env.layout.names
    assert names[-5:] == ["obj_max_quality", "obj_min_energy", "obj_last_until", "quality_floor", "budget_w"]
    seen = []
    for s in range(60):
        obs, _ = env.reset(seed=s)
        seen.append(env.objective)
        onehot = obs[names.index("obj_max_quality"):names.index("obj_last_until") + 1]
        assert onehot.tolist() == [env.objective == k for k in ("max-quality", "min-energy", "last-until")]
        floor = obs[names.index("quality_floor")]
        assert floor == (pytest.approx(0.45) if env.objective == "min-energy" else 0.0)
    counts = {k: seen.count(k) for k in set(seen)}
    assert set(counts) == {"max-quality", "min-energy", "last-until"} and min(counts.values()) >= 10
    # without goal_obs the layout is the one every existing policy reads
    plain = gym.make(envs.ENV_ID, split="train").unwrapped
    assert "obj_min_energy" not in plain.layout.names


def test_batched_env_matches_the_scalar_env_under_each_objective():
    from envs.batched import BatchedPowerEnv

    p = EnvParams(objective=Objective(kind="mix"), max_episode_steps=60)
    env = gym.make(envs.ENV_ID, params=p, split="test").unwrapped
    b = BatchedPowerEnv(n_envs=3, ref=env)
    b.reset()
    kinds = ("max-quality", "min-energy", "last-until")
    for j, kind in enumerate(kinds):
        b.reset_env(j, 0, 0, soc=0.08, objective=kind)
    rng = np.random.default_rng(0)
    acts = rng.integers(0, len(env.costs), size=(40, 3))
    for j, kind in enumerate(kinds):
        obs, _ = env.reset(options={"trace": 0, "start": 0, "soc": 0.08, "objective": kind})
        assert np.allclose(obs, b._obs()[j], atol=1e-5)
    rewards_b = []
    for t in range(40):
        b.step_async(acts[t])
        _, rew, _, _ = b.step_wait()
        rewards_b.append(rew)
    for j, kind in enumerate(kinds):
        env.reset(options={"trace": 0, "start": 0, "soc": 0.08, "objective": kind})
        for t in range(40):
            _, r, term, trunc, _ = env.step(int(acts[t, j]))
            assert rewards_b[t][j] == pytest.approx(r, rel=1e-5, abs=1e-6), (kind, t)
            if term or trunc:
                break


def test_the_oracle_follows_the_objective():
    from agents.oracle import OracleController

    env = gym.make(envs.ENV_ID, params=EnvParams(max_episode_steps=40), split="test").unwrapped
    oracle = OracleController(env, n_soc=21, n_temp=5, n_backlog=3, horizon_steps=40).bind(env)
    out = {}
    for kind in ("max-quality", "min-energy"):
        obs, _ = env.reset(options={"trace": 4, "start": 0, "objective": kind, "quality_floor": 0.3})
        q, e, floor_bad = [], 0.0, 0
        for _ in range(40):
            a = int(oracle.predict(obs)[0])
            obs, _, term, trunc, info = env.step(a)
            st = info["step"]
            q.append(env.costs.quality[info["config"]])
            e += st.energy_j
            floor_bad += st.r_floor < 0
            if term or trunc:
                break
        out[kind] = (float(np.mean(q)), e, floor_bad)
    assert out["min-energy"][1] < out["max-quality"][1]  # it saves energy when told to
    assert out["min-energy"][0] < out["max-quality"][0]  # by running smaller configurations
    assert out["min-energy"][2] == 0  # never below the floor


def test_the_oracle_keeps_the_reserve_until_the_deadline():
    from agents.oracle import OracleController

    p = EnvParams(max_episode_steps=60, reserve_soc=0.3)
    env = gym.make(envs.ENV_ID, params=p, split="test").unwrapped
    oracle = OracleController(env, n_soc=41, n_temp=5, n_backlog=3, horizon_steps=60).bind(env)
    low = {}
    for kind in ("max-quality", "last-until"):
        obs, _ = env.reset(options={"trace": 3, "start": 0, "objective": kind, "soc": 0.34})
        n_low = 0
        for _ in range(60):
            obs, _, term, trunc, info = env.step(int(oracle.predict(obs)[0]))
            n_low += info["step"].soc < p.reserve_soc
            if term or trunc:
                break
        low[kind] = n_low
    assert low["last-until"] < low["max-quality"] or low["max-quality"] == 0
    assert low["last-until"] <= 2


def test_overlay_is_seeded_per_trace_and_sets_constraints_that_bind(tmp_path):
    from traces.objectives import BUDGET_FRAC, FLOOR, NOMINAL_J_PER_TOKEN, overlay, overlay_set
    from traces.store import TraceSet

    ts = TraceSet.load("traces/data/default")
    a, b = overlay_set(ts, 0), overlay_set(ts, 0)
    assert [t.meta.extra["objectives"] for t in a] == [t.meta.extra["objectives"] for t in b]
    assert [t.meta.extra["objectives"] for t in a] != [t.meta.extra["objectives"] for t in overlay_set(ts, 1)]
    one = next(iter(ts))
    assert overlay(one, 0).meta.extra["objectives"] == a.get(one.name).meta.extra["objectives"]  # per trace
    for t in a:
        o = t.meta.extra["objectives"]
        assert FLOOR[0] <= o["quality_floor"] <= FLOOR[1]
        if o["budget_w"] is not None:
            full_w = float(np.nanmean(t.demand_tps)) * NOMINAL_J_PER_TOKEN
            assert BUDGET_FRAC[0] * full_w - 1e-4 <= o["budget_w"] <= BUDGET_FRAC[1] * full_w + 1e-4  # below full
            assert np.allclose(t.budget_w, o["budget_w"])
        if o["deadline_s"] is not None and ts.get(t.name).meta.deadline_s is None:  # one the overlay set
            assert 0 < t.meta.deadline_s <= t.time_s[-1] - t.time_s[0] + 1e-6
    assert sum(t.meta.extra["objectives"]["budget_w"] is not None for t in a) >= len(a) // 2
    a.save(tmp_path / "set")  # a valid set: it loads back, floors and all
    back = TraceSet.load(tmp_path / "set")
    assert back.info["objectives"]["seed"] == 0
    assert next(iter(back)).meta.extra["quality_floor"] == next(iter(a)).meta.extra["quality_floor"]


def test_overlay_gives_a_finite_deadline_to_a_trace_without_a_base_load():
    """``base_load_w`` is optional (absent = all NaN): the deadline is then set from the idle and the model alone."""
    from traces.objectives import overlay
    from traces.schema import TraceMeta, make_trace

    meta = TraceMeta(capacity_wh=15.0, initial_soc=0.8, device_kind="phone", source="x", license="CC0", unit="u")
    tr = make_trace("nobase", meta, np.arange(0, 3600, 10.0), supply_w=0.0, plugged=0.0, ambient_c=22.0,
                    demand_tps=20.0, bandwidth_mbps=10.0)
    deadlines = [overlay(tr.replace(name=f"nobase{s}"), seed=s).meta.deadline_s for s in range(8)]
    assert any(d is not None for d in deadlines)
    assert all(d is None or (math.isfinite(d) and d > 0) for d in deadlines)
