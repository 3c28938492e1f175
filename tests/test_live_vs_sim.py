"""benchmarks/live_vs_sim.py: one score for the simulated and the live run of a policy (the env's return of
per-step records), the re-export of a policy onto another profile, a live run recorded per step, and the
same live score from the run's telemetry file alone."""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from bench_helpers import load_benchmark

import traces as T
from envs.tables import load_cost_tables
from model.model import ElasticGPT, ModelConfig
from model.profile_schema import save_profile
from runtime.dynamics import DEVICES
from runtime.observation import ObsLayout
from runtime.policy import NumpyPolicy, load_policy_file, save_policy_file

REPO = Path(__file__).resolve().parent.parent
POLICY = REPO / "reports" / "real-oracle-dagger-only-seed3" / "policy.npz"
CALIBRATED = REPO / "profiles" / "calibrated-amd-epyc-2c.json"


L = load_benchmark("live_vs_sim")


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory: pytest.TempPathFactory):
    """The committed policy re-exported onto the calibrated profile, and the env it is scored in."""
    out = L.reexport_policy(POLICY, CALIBRATED, tmp_path_factory.mktemp("pol") / "p.npz")
    pf = load_policy_file(out)
    return pf, L.make_env(CALIBRATED, pf, T.default_trace_set_dir(), "test")


def test_reexport_keeps_the_actor_and_takes_the_profiles_tables(calibrated) -> None:
    pf, env = calibrated
    src = load_policy_file(POLICY)
    costs = load_cost_tables(CALIBRATED)
    np.testing.assert_array_equal(pf.energy_j_per_token, costs.ept_j)
    np.testing.assert_array_equal(pf.decode_tokens_per_s, costs.tps)
    assert not np.allclose(pf.energy_j_per_token, src.energy_j_per_token)  # the calibrated costs differ
    for (w0, b0), (w1, b1) in zip(src.layers, pf.layers):
        np.testing.assert_array_equal(w0, w1)
        np.testing.assert_array_equal(b0, b1)
    assert pf.params == src.params and pf.names == src.names
    assert pf.meta["profile"]["sha256"] == hashlib.sha256(CALIBRATED.read_bytes()).hexdigest()
    obs = np.random.default_rng(0).uniform(pf.layout.lo, pf.layout.hi, (500, pf.obs_dim)).astype(np.float32)
    np.testing.assert_array_equal(NumpyPolicy(pf).act_batch(obs), NumpyPolicy(src).act_batch(obs))


def test_score_of_the_simulated_records_is_the_envs_return_to_the_bit(calibrated) -> None:
    pf, env = calibrated
    sim = L.simulate(pf, env, "heat-00", 9, 40)
    assert len(sim["records"]) == 40 and len({r["config"] for r in sim["records"]}) > 1
    score = L.score_records(env, "heat-00", 9, sim["records"])
    assert score["return"] == sim["env_return"]
    assert score["steps"] == 40 and score["served"] > 0
    # the same records through a plain env roll-out, step by step
    env.reset(seed=0, options={"trace": "heat-00", "start": 9})
    rewards = [env.step(r["config"])[1] for r in sim["records"]]
    assert score["rewards"] == rewards


def test_a_slow_measured_step_is_charged_and_the_env_is_left_as_it_was(calibrated) -> None:
    pf, env = calibrated
    sim = L.simulate(pf, env, "laptop-00", 2, 20)
    tps0, dec0 = list(env._tps), list(env._dec)
    fast = L.score_records(env, "laptop-00", 2, sim["records"])
    slow_recs = [dict(r, decode_ms=r["decode_ms"] * 40.0, tps=r["tps"] / 40.0) for r in sim["records"]]
    slow = L.score_records(env, "laptop-00", 2, slow_recs)
    assert env._tps == tps0 and env._dec == dec0  # the measured figures were put back
    assert fast["slo_steps"] == 0 and slow["slo_steps"] > 0  # laptop-00's demand outruns a 40x slower model
    assert slow["served"] < fast["served"] and slow["return"] < fast["return"]
    assert L.score_records(env, "laptop-00", 2, sim["records"])["return"] == fast["return"]
    with pytest.raises(ValueError, match="positive"):
        L.score_records(env, "laptop-00", 2, [dict(sim["records"][0], decode_ms=0.0)])
    assert env._tps == tps0 and env._dec == dec0


def test_the_dwell_counterfactual_holds_a_switch(calibrated) -> None:
    pf, env = calibrated
    free = L.simulate(pf, env, "deadline-00", 27, 60)
    held = L.simulate(pf, env, "deadline-00", 27, 60, min_dwell=3)
    cf = [r["config"] for r in held["records"]]
    assert cf != [r["config"] for r in free["records"]]
    runs = [len(list(g)) for _, g in __import__("itertools").groupby(cf)]
    assert min(runs[1:-1] or [3]) >= 3  # every configuration after the first holds >= 3 decisions


# ---- a live run of a tiny model, recorded per step -------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    from test_runtime_policy import model_grid_profile

    tmp = tmp_path_factory.mktemp("live")
    torch.manual_seed(0)
    m = ElasticGPT(ModelConfig(block_size=64, n_layer=6, n_head=4, n_embd=128, depths=(2, 3, 4, 6)))
    ckpt = tmp / "tiny.pt"
    torch.save(m.checkpoint(), ckpt)
    prof = model_grid_profile()
    prof["model"]["checkpoint_sha256"] = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    save_profile(prof, tmp / "profile.json")
    costs = load_cost_tables(tmp / "profile.json")
    rng = np.random.default_rng(1)
    layout = ObsLayout(costs.space.features)
    n, d = len(costs.names), layout.dim
    layers = [(rng.normal(0, 0.5, (16, d)), rng.normal(0, 0.1, 16)), (rng.normal(0, 2.0, (n, 16)), np.zeros(n))]
    meta = {"algo": "ppo", "activation": "Tanh", "obs_features": layout.table(),
            "config_space": costs.space.to_json(), "decode_table": costs.decode_table(),
            "env_params": {}, "normalization": {"norm_obs": False, "clip_obs": 10.0, "epsilon": 1e-8},
            "mask_rules": {"device_kind": "phone", "device": asdict(DEVICES["phone"]),
                           "devices": {k: asdict(v) for k, v in DEVICES.items()}},
            "profile": {"path": str(tmp / "profile.json"), "sha256": "0" * 64, "name": "grid"},
            "model": {"checkpoint_sha256": prof["model"]["checkpoint_sha256"]}}
    meta["env_params"] = load_policy_file(POLICY).params.to_dict()
    save_policy_file(tmp / "policy.npz", layers, meta, np.zeros(d), np.ones(d),
                     {"energy_j_per_token": costs.ept_j, "power_w": costs.power_w,
                      "decode_tokens_per_s": costs.tps}, costs.features)
    return {"ckpt": ckpt, "profile": tmp / "profile.json", "policy": tmp / "policy.npz"}


def test_a_live_run_is_recorded_per_step_and_scored_by_the_same_function(tiny, tmp_path: Path) -> None:
    pf = load_policy_file(tiny["policy"])
    env = L.make_env(tiny["profile"], pf, T.default_trace_set_dir(), "test")
    start, steps, speed = 2, 5, 50.0
    tel = tmp_path / "run.jsonl"
    argv = L.run_argv(tiny["policy"], T.default_trace_set_dir() / "laptop-00.csv", start * 10.0, 10.0, speed,
                      threads=1, max_tokens=100_000, checkpoint=tiny["ckpt"], telemetry=tel)
    assert argv[argv.index("--every-ms") + 1] == repr(200.0)  # one decision per 10 virtual seconds
    live = L.run_live(argv, steps, 10.0)
    iv = live["intervals"]
    assert live["stop_reason"] == "window_end" and live["vt_end"] >= (start + steps) * 10.0
    assert live["summary"]["decisions"] == len(iv)  # every decision opened an interval
    vt = [x["vt"] for x in iv]
    assert start * 10.0 <= vt[0] < (start + 1) * 10.0
    assert all(b - a >= 0.99 * 10.0 for a, b in zip(vt, vt[1:]))  # never more than one decision per step
    assert vt[-1] >= (start + steps) * 10.0 > vt[-2]  # the run stopped at the first decision past the window
    assert sum(x["tokens"] for x in iv) == live["summary"]["tokens"]
    recs = L.live_records(live, env)
    assert len(recs) == steps and all(r["decode_ms"] > 0 and r["tps"] == pytest.approx(1000 / r["decode_ms"])
                                      for r in recs)
    assert [r["config"] for r in recs] == [iv[r["interval"]]["config"] for r in recs]
    assert sum(r["decisions"] for r in recs) == len(iv) - 1  # all but the one that ended the window
    assert any(r["source"] == "measured" and r["intervals"] > 0 for r in recs)
    score = L.score_records(env, "laptop-00", start, recs)
    assert score["steps"] == steps and math.isfinite(score["return"])
    # the telemetry file alone gives the same records and the same score, to the bit
    from_file = L.score_telemetry(tel, env, "laptop-00", start, steps)
    assert from_file["records"] == recs and from_file["return"] == score["return"]
    assert L.score_telemetry(tel, env, "laptop-00")["records"][:steps] == recs  # start row and steps from the file
    # the live configurations at the profile's speeds: the env's own roll-out of them
    prof = L.score_records(env, "laptop-00", start, L.profile_records(env, [r["config"] for r in recs]))
    env.reset(seed=0, options={"trace": "laptop-00", "start": start})
    assert prof["return"] == sum(env.step(r["config"])[1] for r in recs)
    # and the comparison runs end to end on it
    sim = L.simulate(pf, env, "laptop-00", start, steps)
    row = L.compare_trace(pf, env, "laptop-00", start, sim, live, min_dwell=3)
    assert row["steps"] == steps and 0.0 <= row["agreement"] <= 1.0
    assert row["sim"]["return"] == sim["env_return"] == row["sim_env_return_check"]["score_records"]
    assert row["live"]["return"] == score["return"]


def test_live_records_follow_the_virtual_clock_when_decisions_come_late() -> None:
    """A decision that came late (a slow token): the step it missed takes the configuration that ran longest in
    it and that configuration's interval medians, weighted by their time in the step."""
    env = L.make_env(CALIBRATED, load_policy_file(POLICY), T.default_trace_set_dir(), "test")
    wall0 = 1000.0
    # speed 10: decisions at virtual 0 (config 1), 16 (config 2: 6 s late), 21 (config 3), and 30 (window end)
    iv = [{"vt": 0.0, "wall": wall0, "config": 1, "lat": [(wall0 + 0.5, 4.0), (wall0 + 1.2, 6.0)], "tokens": 3},
          {"vt": 16.0, "wall": wall0 + 1.6, "config": 2, "lat": [(wall0 + 1.7, 2.0)], "tokens": 2},
          {"vt": 21.0, "wall": wall0 + 2.1, "config": 3, "lat": [], "tokens": 1},
          {"vt": 30.0, "wall": wall0 + 3.0, "config": 3, "lat": [], "tokens": 0}]
    live = {"intervals": iv, "speed": 10.0, "step_s": 10.0, "start_s": 0.0, "steps": 3, "vt_end": 30.0}
    recs = L.live_records(live, env)
    assert [r["config"] for r in recs] == [1, 1, 3]  # step 1: config 1 ran 6 s of it, config 2 4 s
    assert recs[0]["decode_ms"] == 5.0 and recs[0]["source"] == "measured"  # the median of interval 0's 4 and 6
    assert recs[1]["decode_ms"] == 5.0 and recs[1]["intervals"] == 1  # interval 0 again: still config 1
    assert recs[2]["source"] == "profile" and recs[2]["decode_ms"] == float(env.costs.decode_ms[3])
    assert [r["decisions"] for r in recs] == [1, 1, 1]


def test_a_step_weighs_its_intervals_by_their_time_in_it() -> None:
    """Two intervals of one configuration in a step: the median of their medians weighted by virtual seconds;
    a step without a measured interval takes the configuration's median over the run (weighted by tokens)."""
    env = L.make_env(CALIBRATED, load_policy_file(POLICY), T.default_trace_set_dir(), "test")
    iv = [{"vt": 0.0, "config": 2, "tokens": 10, "decode_ms": 3.0},
          {"vt": 4.0, "config": 2, "tokens": 30, "decode_ms": 5.0},  # 6 s of step 0: its median wins
          {"vt": 10.0, "config": 2, "tokens": 0, "decode_ms": None},  # step 1: nothing measured
          {"vt": 20.0, "config": 2, "tokens": 0, "decode_ms": None}]
    recs = L.interval_records(iv, env, 0.0, 10.0, 2, 20.0)
    assert recs[0]["decode_ms"] == 5.0 and recs[0]["intervals"] == 2 and recs[0]["interval"] == 0
    assert recs[1]["decode_ms"] == 5.0 and recs[1]["source"] == "measured_config_median"  # 30 tokens of 40


def test_the_env_workload_default_feeds_the_manager_the_envs_inputs(tiny) -> None:
    argv = L.run_argv(tiny["policy"], T.default_trace_set_dir() / "laptop-00.csv", 20.0, 10.0, 50.0, threads=1,
                      max_tokens=100_000, checkpoint=tiny["ckpt"])
    assert argv[argv.index("--replay-workload") + 1] == "env"
    iv = L.run_live(argv, 4, 10.0)["intervals"]
    assert len(iv) >= 3  # 5 on a quiet host; fewer when a slow token (a busy host) delays a decision
    assert iv[0]["backlog_frac"] == 0.0 and iv[0]["latency_over_slo"] == 0.0  # as the env at reset
    assert iv[0]["demand_tps"] == iv[0]["row_demand_tps"]
    for prev, cur in zip(iv, iv[1:]):
        assert cur["demand_tps"] == prev["row_demand_tps"]  # the demand of the step just served
        assert 0.0 <= cur["backlog_frac"] <= 1.0 and cur["latency_over_slo"] > 0.0
    # the job's remaining tokens (100 000, far above the backlog cap) never reach the manager
    assert max(x["backlog_frac"] for x in iv) < 1.0 or min(x["latency_over_slo"] for x in iv[1:]) > 1.0
