"""The oracle without foresight of chargers (``oracle-charger-blind``): before a plug-in it acts as the oracle
does on the same trace with no charger at all, it re-plans when the charger arrives, it leaves a solar node's
supply alone, and it never changes the traces it plans on."""

from __future__ import annotations

import numpy as np
import pytest
from test_oracle import rollout, trace

from agents.oracle import ChargerBlindOracle, OracleController
from envs.power_env import MicroLLMPowerEnv
from model.profile_schema import example_profile

N, PLUG = 60, 30  # rows, and the row where the charger is plugged in


def charger_trace(kind="phone", charger=True, name="t", capacity_wh=0.5):
    """A small battery, half full, that a charger reaches at row ``PLUG`` (or never)."""
    supply = np.where(np.arange(N) >= PLUG, 10.0, 0.0) if charger else np.zeros(N)
    return trace(N, supply_w=supply, demand_tps=30.0, capacity_wh=capacity_wh, soc=0.5, kind=kind, name=name)


def env_of(*traces):
    return MicroLLMPowerEnv(profile=example_profile(12), traces=list(traces), random_start=False)


def test_before_the_plug_in_it_acts_as_the_oracle_on_the_trace_without_a_charger():
    env = env_of(charger_trace(), charger_trace(charger=False, name="none"))
    blind = ChargerBlindOracle(env, n_soc=101, n_temp=13, n_backlog=5)
    _, acts = rollout(env, blind, k=0)
    _, acts_none = rollout(env, OracleController(env, n_soc=101, n_temp=13, n_backlog=5), k=1)
    _, acts_seen = rollout(env, OracleController(env, n_soc=101, n_temp=13, n_backlog=5), k=0)
    assert acts[:PLUG] == acts_none[:PLUG]
    # the charger matters on this trace: the oracle that sees it coming spends more before it arrives
    assert acts_seen[:PLUG] != acts[:PLUG]
    # one plan at the start, one when the charger is plugged in
    assert [(p["start"], p["horizon"]) for p in blind.plans] == [(0, N), (PLUG, N - PLUG)]


def test_without_foresight_a_doomed_battery_is_spent_on_quality():
    """The oracle survives this battery only because it knows the charger comes: planning without that
    knowledge, death before the end is certain (it costs ``w_death`` whenever it happens), so the best plan
    spends the charge on quality and dies before the charger arrives. This is the case of the real phone traces
    on which the learned policies die and the oracle does not."""
    env = env_of(charger_trace(capacity_wh=0.2))
    ret_seen, acts_seen = rollout(env, OracleController(env, n_soc=101, n_temp=13, n_backlog=5))
    ret_blind, acts_blind = rollout(env, ChargerBlindOracle(env, n_soc=101, n_temp=13, n_backlog=5))
    assert len(acts_seen) == N and ret_seen > 0
    assert len(acts_blind) < PLUG and ret_blind < -env.unwrapped.w.death + 5


def test_the_plans_leave_the_traces_supply_as_it_was():
    env = env_of(charger_trace())
    blind = ChargerBlindOracle(env, n_soc=51, n_temp=5, n_backlog=5)
    before = blind.padded.supply.copy()
    rollout(env, blind)
    np.testing.assert_array_equal(blind.padded.supply, before)
    assert blind.next_plug_in(0, 0) == PLUG and blind.next_plug_in(0, PLUG) >= N


def test_a_solar_node_keeps_its_supply():
    env = env_of(charger_trace(kind="solar-node"))
    blind = ChargerBlindOracle(env, n_soc=51, n_temp=5, n_backlog=5)
    ret_b, acts_b = rollout(env, blind)
    ret_o, acts_o = rollout(env, OracleController(env, n_soc=51, n_temp=5, n_backlog=5))
    assert acts_b == acts_o and ret_b == pytest.approx(ret_o)
    assert len(blind.plans) == 1


def test_the_foresight_benchmark_scores_and_ranks_the_losses(tmp_path):
    """``benchmarks/charger_foresight.py``: scores normalised as the evaluator's, deaths counted only where the
    oracle lives, losses ranked; and it refuses a folder that is not a cross-validation, writing nothing."""
    from bench_helpers import load_benchmark

    cf = load_benchmark("charger_foresight")

    def ep(ret, death=False):
        return {"return": ret, "death": death}

    report = {"episodes": [{"trace_name": n} for n in ("a", "b", "c")],
              "per_episode": {"random": [ep(0.0), ep(0.0), ep(0.0)], "oracle": [ep(10.0), ep(10.0), ep(5.0, True)],
                              "oracle-charger-blind": [ep(10.0), ep(2.0, True), ep(4.0, True)],
                              "schedutil": [ep(9.0), ep(8.0), ep(1.0, True)]}}
    s = cf.summarise(report)
    assert s["score"]["oracle"] == 1.0 and s["score"]["random"] == 0.0
    assert s["score"]["oracle-charger-blind"] == pytest.approx(16 / 25)
    assert s["deaths_the_oracle_avoids"] == {"oracle-charger-blind": 1, "schedutil": 0}
    assert [r["trace"] for r in s["top_losses"]] == ["b", "c"]
    assert s["blind_loss_in_deaths"] == pytest.approx(8 / 25)
    with pytest.raises(SystemExit, match="no folds/"):
        cf.main(["--cv", str(tmp_path), "--out", str(tmp_path / "out" / "x")])
    assert not (tmp_path / "out").exists()


def test_the_foresight_benchmark_counts_plug_ins_per_unplugged_hour_by_split(tmp_path):
    """``plug_in_rates``: a 0 → 1 edge of ``plugged`` is a plug-in, only unplugged time counts, each split apart,
    solar nodes left out (their ``plugged`` is daylight)."""
    from bench_helpers import load_benchmark

    from traces.store import TraceSet

    cf = load_benchmark("charger_foresight")
    n = 361  # 360 steps of 10 s: one hour
    one = np.where((np.arange(n) >= 180) & (np.arange(n) < 240), 5.0, 0.0)  # plugged in once, for 10 minutes
    two = np.where((np.arange(n) % 120) >= 100, 5.0, 0.0)  # plugged in at rows 100, 220, 340
    traces = [trace(n, supply_w=one, name="u1"), trace(n, supply_w=two, name="u2"),
              trace(n, supply_w=0.0, name="u3"), trace(n, supply_w=two, kind="solar-node", name="s1")]
    TraceSet.from_traces(traces, splits={"u1": "train", "u2": "train", "u3": "test", "s1": "train"}).save(tmp_path)
    r = cf.plug_in_rates(tmp_path)
    ph = r["train"]["phone"]
    assert set(r["train"]) == {"phone"} and ph["traces"] == 2 and ph["plug_ins"] == 4
    unplugged_rows = np.sum(one[:-1] == 0) + np.sum(two[:-1] == 0)
    assert ph["unplugged_h"] == pytest.approx(unplugged_rows * 10 / 3600)
    assert ph["per_h"] == pytest.approx(4 / ph["unplugged_h"])
    assert ph["p_within_1h"] == pytest.approx(1 - np.exp(-ph["per_h"]))
    assert r["test"]["phone"] == {"traces": 1, "plug_ins": 0, "unplugged_h": pytest.approx(1.0), "per_h": 0.0,
                                  "p_within_1h": 0.0}
