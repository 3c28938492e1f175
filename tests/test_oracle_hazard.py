"""The foresight-free oracle that weighs the chance that the session ends (``oracle-hazard``): the chance is learned
from past sessions (a constant rate, or by how long the session has lasted); with no chance of an end it is the
foresight-free oracle; a session that may well end soon is worth surviving where one sure to outlast the battery is
not; a higher price of death makes it save more; told by history exactly where sessions end, it is the oracle; and
``benchmarks/session_hazard.py`` refuses bad settings and counts deaths against the oracle."""

from __future__ import annotations

import numpy as np
import pytest
from test_oracle import rollout
from test_oracle_charger_blind import PLUG, N, charger_trace, env_of

from agents.oracle import (
    ForesightFreeOracle,
    HazardOracle,
    OracleController,
    keep_after_elapsed,
    on_battery_stretches,
    session_end_rate_per_h,
)
from agents.registry import ORACLE_HAZARD, REFERENCES, default_controllers, make_controller
from envs.power_env import MicroLLMPowerEnv

GRID = dict(n_soc=101, n_temp=13, n_backlog=5, horizon_steps=3 * N)  # the "cap": three times the session


def test_stretches_on_battery_end_at_a_plug_in_or_the_logs_end():
    env = env_of(charger_trace(), charger_trace(charger=False, name="b"), charger_trace(kind="solar-node", name="s"))
    # the first trace: on battery until the plug-in; the second: the whole log; the solar node: not a session
    assert on_battery_stretches(env.traces) == [PLUG, N]
    step_s = float(env.params.step_s)
    assert session_end_rate_per_h(env.traces, step_s) == pytest.approx(2 / ((PLUG + N) * step_s / 3600))
    assert np.isnan(session_end_rate_per_h(env.traces[2:], step_s))


def test_the_plan_does_not_learn_of_a_plug_in_from_the_time_elapsed():
    """Before the plug-in the plan expects none (charger-blind), so past it the session's time on battery goes on
    counting; re-planned at the plug-in, the time counts from the unplug as it happens."""
    from types import SimpleNamespace

    env = env_of(charger_trace())
    hz = HazardOracle(env, survival="empirical", stretches=env_of(charger_trace(charger=False)).traces, **GRID)
    assert list(hz.elapsed[0][PLUG - 2:PLUG + 2]) == [PLUG - 2, PLUG - 1, -1, -1]
    before = SimpleNamespace(k=0, start=0)
    for i in (PLUG - 1, PLUG, PLUG + 5):
        assert hz._keep(before, i) == hz.keep_after[i]
    at = SimpleNamespace(k=0, start=PLUG)
    assert hz.next_plug_in(0, PLUG) > hz.traces[0].n - 1
    assert hz._keep(at, PLUG + 5) == hz.keep_after[0]  # plugged in: the stretch has not begun


def test_the_chance_of_going_on_by_rows_elapsed():
    # stretches of 1, 2, 2 and 4 rows: after row 0, 1 of 4 ends; after row 1, 2 of the 3 left; then 0 of 1; then 1
    np.testing.assert_allclose(keep_after_elapsed([1, 2, 2, 4], 0.5), [0.75, 1 / 3, 1.0, 0.0, 0.5])
    with pytest.raises(ValueError, match="at least one stretch"):
        keep_after_elapsed([], 0.5)


def test_with_no_chance_of_an_end_it_is_the_foresight_free_oracle():
    env = env_of(charger_trace(capacity_wh=0.35))
    ret_b, acts_b = rollout(env, ForesightFreeOracle(env, n_doomed=100, **GRID))
    ret_h, acts_h = rollout(env, HazardOracle(env, session_end_per_h=0.0, **GRID))  # n_doomed: n_soc − 1
    assert acts_h == acts_b and ret_h == pytest.approx(ret_b)


def test_a_session_that_may_end_soon_is_worth_surviving():
    """The foresight-free oracle, sure that this battery cannot last to the cap, spends it and dies before the
    session ends (the real-data deaths); weighing a session that ends at 10 an hour on average, delaying the death
    is worth the chance that the session ends meanwhile, and this one does. At 200 an hour the session probably ends
    within minutes, so quality now is worth more than a death that probably never comes: it spends and dies."""
    env = env_of(charger_trace(charger=False, capacity_wh=0.3))
    ret_b, acts_b = rollout(env, ForesightFreeOracle(env, **GRID))
    assert len(acts_b) < N and ret_b < -env.unwrapped.w.death + 5
    ret_h, acts_h = rollout(env, HazardOracle(env, session_end_per_h=10.0, **GRID))
    assert len(acts_h) == N and ret_h > 0
    ret_x, _ = rollout(env, HazardOracle(env, session_end_per_h=200.0, **GRID))
    assert ret_x < -env.unwrapped.w.death + 5


def test_a_higher_price_of_death_saves_more():
    env = env_of(charger_trace(charger=False, capacity_wh=0.4))
    out = []
    for w in (50.0, 500.0, 5000.0):
        ret, acts = rollout(env, HazardOracle(env, session_end_per_h=60.0, death_weight=w, **GRID))
        assert len(acts) == N  # it survives at every price
        out.append((ret, env.unwrapped.soc))
    rets, socs = zip(*out)
    assert rets[0] > rets[1] > rets[2] and socs[0] < socs[1] < socs[2]


def test_told_by_history_where_sessions_end_it_is_the_oracle():
    """Past sessions all lasted exactly N rows: going on after row N − 1 has chance 0, so nothing after the
    session's end counts, which is what the oracle knows."""
    env = env_of(charger_trace(charger=False, capacity_wh=0.3))
    ret_o, acts_o = rollout(env, OracleController(env, **GRID))
    hz = HazardOracle(env, survival="empirical", stretches=env.traces, **GRID)
    np.testing.assert_array_equal(hz.keep_after[:N], [1.0] * (N - 1) + [0.0])
    ret_h, acts_h = rollout(env, hz)
    assert len(acts_h) == N and ret_h == pytest.approx(ret_o, abs=0.02)


def test_scoring_a_held_out_split_learns_from_the_train_split():
    """``oracle-hazard`` on a test split, as ``agents.evaluate --policies …,oracle-hazard`` builds it, learns when
    sessions end from the same set's train split, never from the sessions it is scored on."""
    from envs.tables import prepare_traces

    env = MicroLLMPowerEnv(split="test", random_start=False)  # the default set
    step_s = float(env.params.step_s)
    train_rate = session_end_rate_per_h(prepare_traces(None, "train", step_s), step_s)
    assert train_rate != pytest.approx(session_end_rate_per_h(env.traces, step_s))
    assert HazardOracle(env).session_end_per_h == pytest.approx(train_rate)
    on_train = MicroLLMPowerEnv(split="train", random_start=False)
    assert HazardOracle(on_train).session_end_per_h == pytest.approx(train_rate)


def test_bad_arguments_are_refused():
    env = env_of(charger_trace(kind="solar-node"))
    with pytest.raises(ValueError, match="session-end rate"):
        HazardOracle(env)  # a solar node has no session to learn a rate from
    with pytest.raises(ValueError, match="survival"):
        HazardOracle(env, session_end_per_h=1.0, survival="weibull")
    with pytest.raises(ValueError, match="no masked variant"):
        HazardOracle(env, session_end_per_h=1.0, masked=True)


def test_registered_as_a_reference_not_run_by_default():
    env = env_of(charger_trace())
    assert isinstance(make_controller(ORACLE_HAZARD, env), HazardOracle)
    assert ORACLE_HAZARD in REFERENCES and ORACLE_HAZARD not in default_controllers(env.costs)


def test_the_benchmark_parses_settings_and_counts_deaths_against_the_oracle():
    from bench_helpers import load_benchmark

    sh = load_benchmark("session_hazard")
    assert sh.parse_settings("empirical:200, exponential:50") == [("empirical", 200.0), ("exponential", 50.0)]
    for bad in ("weibull:50", "empirical", "empirical:-1", ""):
        with pytest.raises(ValueError):
            sh.parse_settings(bad)
    runs = {"random": {"episodes": ["a", "b"], "return": [0.0, 0.0], "death": [True, True]},
            "oracle": {"episodes": ["a", "b"], "return": [10.0, 10.0], "death": [False, True]},
            "x": {"episodes": ["a", "b"], "return": [5.0, 5.0], "death": [True, True]}}
    s = sh.fold_summary(runs)
    assert s["x"]["score"] == pytest.approx(0.5) and s["x"]["deaths"] == 2
    assert s["x"]["deaths_oracle_avoids"] == ["a"]  # b: the oracle dies there too
