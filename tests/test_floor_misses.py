"""benchmarks/floor_misses.py: each step below the floor is counted once, as allowed-or-not; controllers held to the
masks never overdraw the budget; bad input is refused with the fix."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import floor_misses as F  # noqa: E402


def _set(tmp_path: Path) -> Path:
    """The small hand-made traces with the user's floors overlaid (traces.objectives) and a budget of 0.5 W, which the
    cheapest configuration fits and the floor's do not always: the budget rule forbids the floor on some steps."""
    import numpy as np
    from test_agents import small_set

    from traces.objectives import overlay
    from traces.store import TraceSet

    ts = [overlay(t) for t in small_set()]
    ts = [t.replace(budget_w=np.full(len(t.time_s), 0.5)) for t in ts]  # the cheapest fits at ~120 tok/s
    path = tmp_path / "small"
    TraceSet.from_traces(ts, name="small", splits={t.meta.unit: "test" for t in ts}).save(path)
    return path


def test_each_step_below_the_floor_is_allowed_or_not_and_held_controllers_never_overdraw(tmp_path):
    small = str(_set(tmp_path))
    got = F.count(small, None, 0, grid=(5, 3, 2), max_steps=40)
    res = got["controllers"]
    assert set(res) == {"static-smallest", "oracle-masked", "oracle"} and got["episodes"] == 3
    for name, v in res.items():
        assert v["below_floor"] == v["below_none_allowed"] + v["below_one_allowed"], name
        assert v["steps"] == res["oracle"]["steps"] > 0
    for name in ("static-smallest", "oracle-masked"):  # held to the budget's masks
        assert res[name]["over_budget"] == 0, name
    assert res["static-smallest"]["above_cheapest"] == 0  # held to the cheapest configuration that meets the floor
    assert sum(v["below_floor"] for v in res.values()) > 0  # the floor binds here: not a vacuous count
    for name, v in res.items():  # a step below the floor with none allowed is one of the steps with none allowed
        assert v["below_none_allowed"] <= v["none_allowed_steps"] <= v["steps"], name
        assert v["none_allowed_return"] <= 0.0 or v["none_allowed_steps"] == 0, name  # min-energy earns no reward
    only = F.count(small, None, 0, grid=(5, 3, 2), max_steps=40, controllers=("static-smallest",))
    assert list(only["controllers"]) == ["static-smallest"] and only["controllers"]["static-smallest"] == \
        res["static-smallest"]
    md = F.to_markdown({"date": "2026-12-06", "n_traces": 3, "budget_floor_reserve_s": 300.0, "folds": {"0": got}})
    assert "| 0 | oracle |" in md and "| all | static-smallest |" in md


@pytest.mark.parametrize("argv, message", [
    (["--n-traces", "-1"], "must be >= 0"),
    (["--controllers", "oracle,bogus"], "give some of"),
    (["--folds", "a"], "comma-separated fold numbers"),
    (["--cv", "nowhere"], "make the folds with python -m traces.folds"),
])
def test_bad_input_is_refused_with_the_fix(argv, message, capsys, tmp_path):
    base = {"--cv": str(tmp_path), "--runs": "r{fold}", "--out": str(tmp_path / "o")}
    for k in argv[::2]:
        base.pop(k, None)
    with pytest.raises(SystemExit):
        F.main(argv + [x for kv in base.items() for x in kv])
    assert message in capsys.readouterr().err


def test_a_fold_without_exactly_one_run_is_named(tmp_path, capsys):
    (tmp_path / "fold-0").mkdir()
    (tmp_path / "fold-0" / "manifest.json").write_text("{}")
    with pytest.raises(SystemExit):
        F.main(["--cv", str(tmp_path), "--runs", str(tmp_path / "runs/f{fold}/*"), "--folds", "0",
                "--out", str(tmp_path / "o")])
    assert "0 matches for fold 0, need exactly one" in capsys.readouterr().err


@pytest.mark.parametrize("module", ["floor_misses", "floor_reserve_overdraw"])
def test_a_run_is_scored_keeping_the_budget_reserve_it_trained_with(module, monkeypatch, tmp_path):
    """Both floor reports hold the budget rule to the run's own reserve (benchmarks.objectives.runs_reserve), as
    agents.evaluate and the device do: a run trained keeping 150 s is not scored keeping the defaults' 900 s."""
    import importlib

    import gymnasium

    from runtime.dynamics import EnvParams

    mod = importlib.import_module(module)
    seen = {}

    class Built(Exception):
        pass

    def make(*a, params=None, **k):
        seen["params"] = params
        raise Built

    monkeypatch.setattr(mod, "runs_params", lambda runs, max_steps: EnvParams(max_episode_steps=max_steps))
    monkeypatch.setattr(mod, "runs_reserve", lambda runs: (150.0, 20.0) if runs else (900.0, 50.0))
    monkeypatch.setattr(gymnasium, "make", make)
    with pytest.raises(Built):
        if module == "floor_misses":
            mod.count(str(tmp_path), "some-run", 4)
        else:
            mod.count(str(tmp_path), "some-run", 300.0, 4)
    p = seen["params"]
    assert (p.budget_reserve_s, p.budget_reserve_tps) == (150.0, 20.0) and p.budget_rule and p.floor_rule
