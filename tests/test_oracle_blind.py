"""The oracle without foresight of chargers or of the session's end (``oracle-blind``): it plans a phone's or laptop's
session as if it went on to the episode's cap (no charger, the session's mean demand and own load), so a battery that
cannot last that long is spent on quality and one that can is saved for rows that never come; a solar node's trace is
planned as the charger-blind oracle plans it; both blind oracles are references, not run by default; and
``benchmarks/foresight_free.py`` counts the deaths it avoids."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
from test_oracle import rollout
from test_oracle_charger_blind import N, charger_trace, env_of

from agents.oracle import ChargerBlindOracle, ForesightFreeOracle, OracleController, extend_session
from agents.registry import ORACLE_BLIND, ORACLE_CHARGER_BLIND, REFERENCES, default_controllers, make_controller

GRID = dict(n_soc=101, n_temp=13, n_backlog=5, horizon_steps=3 * N)  # the "cap": three times the session


def test_extend_session_adds_rows_without_a_charger_at_the_sessions_means():
    tr = env_of(charger_trace()).traces[0]
    ext = extend_session(tr, 10)
    assert ext.n == tr.n + 10 and len(ext.base_w) == ext.n and len(ext.demand_tps) == ext.n
    assert ext.supply_w[:tr.n] == list(tr.supply_w) and ext.supply_w[tr.n:] == [0.0] * 10
    assert ext.plugged[tr.n:] == [0.0] * 10
    assert ext.demand_tps[-1] == pytest.approx(np.mean(tr.demand_tps))
    assert ext.base_w[-1] == pytest.approx(np.mean(tr.base_w))
    assert extend_session(tr, 0) is tr


def test_a_battery_that_cannot_last_to_the_cap_is_spent_on_quality():
    """The oracle lasts this session only because it knows it ends at row N; planning for a session of unknown
    end, which this battery cannot outlive, the best plan spends the charge on quality and dies before row N.
    This is fold 1's ``ad896f37…-08-19`` on the real data."""
    env = env_of(charger_trace(charger=False, capacity_wh=0.3))
    ret_o, acts_o = rollout(env, OracleController(env, **GRID))
    ret_b, acts_b = rollout(env, ForesightFreeOracle(env, **GRID))
    assert len(acts_o) == N and ret_o > 0
    assert len(acts_b) < N and ret_b < -env.unwrapped.w.death + 5


def test_a_battery_that_can_last_to_the_cap_is_saved_for_rows_that_never_come():
    env = env_of(charger_trace(charger=False, capacity_wh=0.9))
    ret_o, _ = rollout(env, OracleController(env, **GRID))
    soc_o = env.unwrapped.soc
    blind = ForesightFreeOracle(env, **GRID)
    ret_b, acts_b = rollout(env, blind)
    assert len(acts_b) == N  # it survives the session
    assert ret_b < ret_o - 0.5 and env.unwrapped.soc > soc_o + 0.05  # and keeps charge the oracle spends
    assert blind.plans[0]["horizon"] == 3 * N  # one plan past the session's end


def test_a_solar_node_is_planned_as_the_charger_blind_oracle_plans_it():
    env = env_of(charger_trace(kind="solar-node"))
    ret_b, acts_b = rollout(env, ForesightFreeOracle(env, **GRID))
    ret_c, acts_c = rollout(env, ChargerBlindOracle(env, **GRID))
    assert acts_b == acts_c and ret_b == pytest.approx(ret_c)


@pytest.mark.parametrize("name,cls", [(ORACLE_CHARGER_BLIND, ChargerBlindOracle), (ORACLE_BLIND, ForesightFreeOracle)])
def test_registered_as_a_reference_not_run_by_default(name, cls):
    env = env_of(charger_trace())
    assert isinstance(make_controller(name, env), cls)
    assert name in REFERENCES
    assert name not in default_controllers(env.costs)
    with pytest.raises(ValueError, match="no masked variant"):
        cls(env, masked=True)


def test_the_benchmark_counts_deaths_against_both_oracles(tmp_path):
    """``benchmarks/foresight_free.py``: a death counts against the oracle where it survives, and against the
    foresight-free oracle only where that one survives; seeds and clones are grouped; a folder that is not a
    cross-validation is refused and nothing is written."""
    from bench_helpers import load_benchmark

    ff = load_benchmark("foresight_free")
    dead, alive = {"deaths_oracle_avoids": ["a"], "deaths_blind_avoids": []}, {"deaths_oracle_avoids": [],
                                                                              "deaths_blind_avoids": []}
    per_fold = {0: {"rl:x/seed1": {"score": 0.9, **dead}, "rl:x/seed1/warm_start": {"score": 0.8, **alive},
                    "schedutil": {"score": 0.7, "deaths_oracle_avoids": ["a", "b"], "deaths_blind_avoids": ["b"]}},
                1: {"rl:x/seed1": {"score": 0.96, **alive}, "rl:x/seed1/warm_start": {"score": 0.9, **alive},
                    "schedutil": {"score": 0.8, **alive}}}
    rows = {r["controller"]: r for r in ff.summary(per_fold)}
    assert rows["RL"]["mean"] == pytest.approx(0.93) and rows["RL"]["worst_fold"] == pytest.approx(0.9)
    assert (rows["RL"]["deaths_oracle_avoids"], rows["RL"]["deaths_blind_avoids"]) == (1, 0)
    assert (rows["schedutil"]["deaths_oracle_avoids"], rows["schedutil"]["deaths_blind_avoids"]) == (2, 1)
    assert rows["RL warm start"]["mean"] == pytest.approx(0.85)
    with pytest.raises(SystemExit):
        ff.main(["--cv", str(tmp_path), "--out", str(tmp_path / "out" / "x")])
    assert not (tmp_path / "out").exists()


def test_the_benchmark_reads_the_foresight_free_oracle_from_a_fold_report_that_scored_it(tmp_path):
    """A fold report written with ``agents.crossval --foresight-free`` already holds oracle-blind's episodes: the
    benchmark reads them (same grid and step limit) instead of planning again; otherwise it must run it."""
    import json

    from bench_helpers import load_benchmark

    ff = load_benchmark("foresight_free")
    ev = tmp_path / "eval" / "fold-0"
    ev.mkdir(parents=True)
    rep = {"meta": {"oracle_grid": [51, 13, 5], "max_steps": 720, "battery_saver_min": 0.0},
           "episodes": [{"trace_name": "a"}, {"trace_name": "b"}],
           "per_episode": {"oracle-blind": [{"return": 3.0, "death": False}, {"return": 1.0, "death": True}]}}
    (ev / "report.json").write_text(json.dumps(rep))
    got = ff.blind_from_report(tmp_path, 0, (51, 13, 5), 720)
    assert got["episodes"] == ["a", "b"] and got["return"] == [3.0, 1.0] and got["death"] == [False, True]
    assert ff.blind_from_report(tmp_path, 0, (101, 25, 7), 720) is None  # another grid: run it
    assert ff.blind_from_report(tmp_path, 0, (51, 13, 5), 100) is None
    assert ff.blind_from_report(tmp_path, 1, (51, 13, 5), 720) is None  # no report
    del rep["per_episode"]["oracle-blind"]
    (ev / "report.json").write_text(json.dumps(rep))
    assert ff.blind_from_report(tmp_path, 0, (51, 13, 5), 720) is None


def test_evaluate_reports_the_deaths_the_foresight_free_oracle_avoids():
    """With ``oracle-blind`` among the policies, ``agents.evaluate`` counts each policy's deaths against it beside the
    oracle's count, and shows the column; without it, neither."""
    from agents.evaluate import evaluate_controllers, format_table

    def factory():
        return env_of(charger_trace(charger=False, capacity_wh=0.3))

    names = ("oracle", "oracle-blind", "static-largest", "random")
    res = evaluate_controllers(factory, {n: partial(make_controller, n) for n in names}, max_steps=N, progress=False)
    pol = res["policies"]
    assert pol["static-largest"]["deaths_not_oracle"] == 1 and pol["static-largest"]["deaths_not_blind"] == 0
    assert pol["oracle-blind"]["deaths_not_oracle"] == 1
    assert "deaths oracle-blind avoids" in format_table(res)
    res = evaluate_controllers(factory, {n: partial(make_controller, n) for n in ("oracle", "random")}, max_steps=N,
                               progress=False)
    assert "deaths_not_blind" not in res["policies"]["oracle"]
    assert "deaths oracle-blind avoids" not in format_table(res)


def test_the_benchmarks_refuse_a_fold_the_folder_does_not_have(tmp_path, capsys):
    """``battery_saver.cv_folds`` (shared by the fold-by-fold benchmarks): a fold missing from the folder is a usage
    error naming the folds it has, before anything runs."""
    from bench_helpers import load_benchmark

    ff = load_benchmark("foresight_free")
    for i in (0, 1):
        (tmp_path / "folds" / f"fold-{i}").mkdir(parents=True)
    with pytest.raises(SystemExit):
        ff.main(["--cv", str(tmp_path), "--folds", "9", "--out", str(tmp_path / "out" / "x")])
    assert "has folds 0,1" in capsys.readouterr().err and not (tmp_path / "out").exists()
