"""The user's objective on the device: the tracker, the goal block a goal-conditioned policy reads, and
deploy.py run --objective (status, summary, usage errors)."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest
from policy_helpers import random_policy_file

import deploy
from runtime.dynamics import EnvParams, Objective
from runtime.objective import ObjectiveTracker
from runtime.observation import goal_values
from runtime.policy import load_policy_file

PROFILE = "profiles/reference-cpu.json"
TRACE = "traces/data/default/phone-00.csv"


def test_tracker_budget_floor_and_deadline():
    b = ObjectiveTracker("max-quality", budget_w=0.1, grace_s=0.0)
    b.update(10.0, 10.0, 0.05, 100, 0.5, 0.8, 1e4, 1.0)
    b.update(20.0, 10.0, 0.05, 100, 0.5, 0.8, 1e4, 1.0)
    assert b.summary()["met"] and b.last["budget_left_j"] == pytest.approx(0.1 * 20 - 1.0)
    b.update(30.0, 10.0, 0.5, 100, 0.5, 0.8, 1e4, 1.0)  # 5 J in 10 s against 0.1 W
    assert not b.summary()["met"] and b.violations == 1
    q = ObjectiveTracker("min-energy", quality_floor=0.4, window_s=30.0)
    q.update(0.0, 0.0, 0.1, 100, 0.5, 0.8, 1e4, 1.0)
    q.update(10.0, 10.0, 0.1, 100, 0.3, 0.8, 1e4, 1.0)  # window mean 0.4: not below
    assert q.violations == 0 and q.last["window_quality"] == pytest.approx(0.4)
    q.update(20.0, 10.0, 0.1, 300, 0.3, 0.8, 1e4, 1.0)
    assert q.violations == 1 and not q.summary()["met"]
    q.update(100.0, 80.0, 0.1, 100, 0.5, 0.8, 1e4, 1.0)  # the old tokens left the 30 s window
    assert q.last["window_quality"] == pytest.approx(0.5)
    d = ObjectiveTracker("last-until", deadline_s=100.0, reserve_soc=0.1)
    d.update(50.0, 50.0, 0.1, 10, 0.5, 0.3, 900.0, 10.0)  # 90 s to empty, 50 s left
    assert d.last["on_track"] and d.summary()["met"]
    d.update(60.0, 10.0, 0.1, 10, 0.5, 0.05, 100.0, 10.0)  # below the reserve before the deadline
    assert not d.summary()["met"] and d.summary()["min_soc_before_deadline"] == 0.05
    with pytest.raises(ValueError, match="quality floor"):
        ObjectiveTracker("min-energy")
    with pytest.raises(ValueError, match="deadline"):
        ObjectiveTracker("last-until")


def test_an_energy_budget_is_re_paced_into_a_power_budget_and_met_only_while_energy_is_left():
    e = ObjectiveTracker("max-quality", budget_j=100.0, budget_until_s=100.0)
    assert e.pace_w(0.0) == pytest.approx(1.0)  # 100 J over 100 s
    e.update(50.0, 50.0, 0.5, 100, 0.5, 0.8, 1e4, 1.0)  # 25 J used: 75 J for 50 s
    assert e.pace_w(50.0) == pytest.approx(1.5) and e.summary()["met"]
    assert e.last["energy_left_j"] == pytest.approx(75.0) and "Wh left" in e.status()
    e.update(90.0, 40.0, 2.0, 100, 0.5, 0.8, 1e4, 1.0)  # 80 J more: overspent before the time
    assert not e.summary()["met"] and e.summary()["energy_left_wh"] < 0
    assert e.pace_w(95.0) == pytest.approx(1e-6 / 10.0)  # spent: a tiny budget (the shortest horizon)
    late = ObjectiveTracker("max-quality", budget_j=10.0, budget_until_s=10.0)
    late.update(20.0, 20.0, 1.0, 10, 0.5, 0.8, 1e4, 1.0)  # spent 20 J, but after the time: not a violation
    assert late.summary()["met"]
    with pytest.raises(ValueError, match="not both"):
        ObjectiveTracker("max-quality", budget_w=1.0, budget_j=10.0, budget_until_s=5.0)
    with pytest.raises(ValueError, match="max-quality"):
        ObjectiveTracker("min-energy", quality_floor=0.3, budget_j=10.0, budget_until_s=5.0)


def test_deploy_run_with_an_energy_budget_paces_the_managers_budget(tmp_path, monkeypatch):
    pol = _goal_policy(tmp_path, goal=True)
    seen = []
    from runtime.manager import RuntimeManager

    real = RuntimeManager.decide

    def spy(self, now_s=None):
        out = real(self, now_s)
        seen.append((self.budget_w, self.objective.llm_energy_j))
        return out

    monkeypatch.setattr(RuntimeManager, "decide", spy)
    s = _run(pol, "--budget-wh", "0.01", "--until", "+10m")
    assert s["objective"]["kind"] == "max-quality" and s["objective"]["budget_wh"] == pytest.approx(0.01)
    assert len(seen) >= 5
    for b, used in seen:  # energy left / time left; the time left is at most 10 minutes
        assert b >= (36.0 - used) / 600.0 * 0.999


def test_parse_until():
    now = dt.datetime(2026, 12, 1, 17, 0)
    assert deploy.parse_until("18:30", now) == 5400.0
    assert deploy.parse_until("16:00", now) == 23 * 3600.0  # tomorrow
    assert deploy.parse_until("+90m") == 5400.0 and deploy.parse_until("+2h") == 7200.0
    assert deploy.parse_until("+30") == 30.0
    with pytest.raises(ValueError, match="HH:MM"):
        deploy.parse_until("half past six")


def _goal_policy(tmp_path, goal: bool) -> str:
    params = EnvParams(objective=Objective(kind="mix" if goal else "max-quality"))
    return random_policy_file(tmp_path / ("goal.npz" if goal else "plain.npz"), PROFILE, params, with_quality=True)


def _run(pol: str, *extra: str) -> dict:
    return deploy.main(["run", "--policy", pol, "--sensors", f"replay:{TRACE}", "--max-tokens", "40",
                        "--temperature", "0", "--no-status", "--every-tokens", "4", "--threads", "1", *extra])


def test_a_goal_conditioned_policy_reads_the_objective_and_the_summary_says_if_it_was_met(tmp_path, monkeypatch):
    pol = _goal_policy(tmp_path, goal=True)
    pf = load_policy_file(pol)
    assert pf.layout.goal and pf.quality is not None
    seen = []
    from runtime.manager import RuntimeManager

    real = RuntimeManager.decide

    def spy(self, now_s=None):
        out = real(self, now_s)
        g = self.obs[self.layout.goal_start:self.layout.goal_start + 5]
        seen.append(g.copy())
        return out

    monkeypatch.setattr(RuntimeManager, "decide", spy)
    s = _run(pol, "--objective", "min-energy", "--quality-floor", "0.3")
    assert s["objective"]["kind"] == "min-energy" and isinstance(s["objective"]["met"], bool)
    assert s["objective"]["decisions"] >= 5 and s["objective"]["last_window_quality"] is not None
    want = np.asarray(goal_values("min-energy", 0.3, math.nan), dtype=np.float32)
    assert all(np.allclose(g, want) for g in seen)


def test_objective_on_a_plain_policy_is_tracked_and_said(tmp_path, capsys):
    pol = _goal_policy(tmp_path, goal=False)
    s = _run(pol, "--objective", "max-quality", "--budget-w", "0.001")
    assert s["objective"]["kind"] == "max-quality" and s["objective"]["budget_w"] == 0.001
    assert "not trained goal-conditioned" in capsys.readouterr().err
    s2 = _run(pol, "--objective", "last-until", "--until", "+5m")
    assert s2["objective"]["kind"] == "last-until" and "min_soc_before_deadline" in s2["objective"]


@pytest.mark.parametrize("args, msg", [
    (["--objective", "min-energy"], "needs --quality-floor"),
    (["--quality-floor", "0.4"], "needs --objective min-energy"),
    (["--objective", "max-quality", "--quality-floor", "0.4"], "applies to --objective min-energy"),
    (["--objective", "min-energy", "--quality-floor", "1.5"], "must be in"),
    (["--until", "25:00"], "HH:MM"),
    (["--until", "+5m", "--deadline-s", "60"], "give one"),
    (["--budget-wh", "1"], "needs --until"),
    (["--budget-wh", "1", "--budget-w", "0.5", "--until", "+5m"], "give one"),
    (["--budget-wh", "1", "--objective", "last-until", "--until", "+5m"], "energy budget"),
])
def test_objective_usage_errors(tmp_path, capsys, args, msg):
    pol = _goal_policy(tmp_path, goal=False)
    with pytest.raises(SystemExit) as e:
        _run(pol, *args)
    assert e.value.code == 2 and msg in capsys.readouterr().err


def test_a_goal_conditioned_run_exports_with_its_objective_block_and_decides_as_trained(tmp_path):
    """deploy.py export of a run trained with --env.objective.kind mix: the file's layout has the objective
    block, and the numpy policy picks the torch policy's action on the env's observation."""
    import gymnasium as gym

    import envs
    import train
    from agents.run_io import load_controller
    from model.cli import parse_dataclass_args
    from runtime.policy import NumpyPolicy

    run = train.main(parse_dataclass_args(train.Args, argv=[
        "--env.objective.kind", "mix", "--total-timesteps", "1024", "--n-envs", "8", "--eval-freq", "1024",
        "--eval-episodes", "2", "--no-final-eval", "--runs-dir", str(tmp_path / "runs"), "--no-progress", "--bc-expert",
        "none"]))
    deploy.export_run(run, tmp_path / "goal.npz")
    pf = load_policy_file(tmp_path / "goal.npz")
    assert pf.layout.goal and "obj_min_energy" in pf.layout.names
    pol, ctrl = NumpyPolicy(pf), load_controller(run)
    env = gym.make(envs.ENV_ID, split="test", random_start=False, params=pf.params)
    for kind in ("max-quality", "min-energy", "last-until"):
        obs, _ = env.reset(seed=0, options={"trace": 0, "start": 0, "objective": kind})
        for _ in range(20):
            m = env.unwrapped.action_masks()
            a = pol.act(obs, m)
            assert a == int(np.asarray(ctrl.predict(obs, action_masks=m)[0]).reshape(-1)[0])
            obs, *_ = env.step(a)


def test_parse_until_counts_real_seconds_across_a_clock_change(monkeypatch):
    """On the night the clocks go back, 01:00 -> 05:00 on the wall is 5 hours; when they go forward, 3. And a
    deadline of now is refused, not read as no deadline."""
    import datetime as dt
    import time

    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    try:
        assert deploy.parse_until("05:00", dt.datetime(2026, 10, 25, 1, 0)) == 5 * 3600.0
        assert deploy.parse_until("05:00", dt.datetime(2026, 3, 29, 1, 0)) == 3 * 3600.0
        assert deploy.parse_until("18:30", dt.datetime(2026, 7, 1, 17, 0)) == 5400.0
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    with pytest.raises(ValueError, match="after now"):
        deploy.parse_until("+0")


def test_until_is_counted_from_when_it_was_read_not_from_after_the_model_loaded(monkeypatch, capsys):
    """``--until +10m`` read at t = 1000 s and the model loaded at t = 1030 s: on live sensors 570 s are left (the
    budget's time likewise); on a replay the deadline counts replayed time, so 600; a deadline that passed while the
    model loaded is a usage error, not a deadline in the past."""
    import argparse
    import time

    clock = [1000.0]
    monkeypatch.setattr(time, "time", lambda: clock[0])
    a = argparse.Namespace(until="+10m", deadline_s=0.0, budget_wh=0.0, budget_w=0.0, objective="last-until",
                           quality_floor=None, sensors="live")
    deploy._check_objective_args(a)
    clock[0] = 1030.0
    assert deploy.until_left(a, replaying=False) == (570.0, 0.0)
    assert deploy.until_left(a, replaying=True) == (600.0, 0.0)
    b = argparse.Namespace(until="+10m", deadline_s=0.0, budget_wh=1.0, budget_w=0.0, objective=None,
                           quality_floor=None, sensors="live")
    clock[0] = 1000.0
    deploy._check_objective_args(b)
    clock[0] = 1030.0
    assert deploy.until_left(b, replaying=False) == (0.0, 570.0)
    clock[0] = 1700.0
    with pytest.raises(SystemExit):
        deploy.until_left(a, replaying=False)
    assert "passed while the model loaded" in capsys.readouterr().err
