"""benchmarks/budget_reserve.py: the budget rule's reserve is swept on train/val only and chosen by the return of the
controllers it changes."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from test_oracle import trace

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import budget_reserve as B  # noqa: E402

from runtime.dynamics import EnvParams  # noqa: E402


def test_the_choice_sums_the_controllers_the_rule_changes_over_every_episode():
    rows = [{"split": "train", "reserve_s": 0.0, "episodes": 10,
             "controllers": {"static-smallest": {"return": 99.0}, "mpc": {"return": 1.0}, "rl:0": {"return": 2.0}}},
            {"split": "train", "reserve_s": 900.0, "episodes": 10,
             "controllers": {"static-smallest": {"return": -99.0}, "mpc": {"return": 2.0}, "rl:0": {"return": 2.0}}},
            {"split": "val", "reserve_s": 0.0, "episodes": 2,
             "controllers": {"static-smallest": {"return": 0.0}, "mpc": {"return": 10.0}, "rl:0": {"return": 0.0}}},
            {"split": "val", "reserve_s": 900.0, "episodes": 2,
             "controllers": {"static-smallest": {"return": 0.0}, "mpc": {"return": 0.0}, "rl:0": {"return": 0.0}}}]
    best, totals = B.choose(rows)
    assert totals == {"0": 30.0 + 20.0, "900": 40.0}  # the reference (static-smallest) never counts
    assert best == "0"
    rows[1]["reserve_tps"] = rows[3]["reserve_tps"] = 100.0  # a burst rate names its own setting
    assert set(B.choose(rows)[1]) == {"0", "900+100tps"}


def test_under_min_energy_every_controller_counts_and_the_floor_spends_the_reserve():
    """The min-energy sweep names each setting by what the floor keeps and counts static-smallest (the floor within
    the budget changes it); on a trace whose budget the cheapest configuration meeting the floor overdraws a little,
    letting the floor spend the reserve holds it on more steps without a step over the budget."""
    rows = [{"split": "val", "reserve_s": 900.0, "reserve_tps": 50.0, "floor_reserve_s": f, "episodes": 2,
             "controllers": {"static-smallest": {"return": r}, "mpc": {"return": -1.0}}}
            for f, r in ((0.0, -2.0), (900.0, -5.0))]
    best, totals = B.choose(rows)
    assert totals == {"floor 0": -6.0, "floor 900": -12.0} and best == "floor 0"
    p = EnvParams()
    probe = B.run_split([trace(60, demand_tps=20.0, budget_w=1.0, capacity_wh=60.0)], p, [], 900.0, 60, 50.0,
                        "min-energy", 900.0)
    assert set(probe) == set(B.FLOOR_RULES)
    from envs.power_env import MicroLLMPowerEnv

    env = MicroLLMPowerEnv(traces=[trace(60)], params=p)
    q, ept = env.costs.quality, env.costs.ept_j
    q_min = p.objective.quality_floor  # the trace carries none: the objective's default floor
    cheapest = float(ept[q >= q_min].min())
    tr = trace(720, demand_tps=20.0, budget_w=0.97 * 20.0 * cheapest, capacity_wh=60.0)
    got = {f: B.run_split([tr], p, [], 900.0, 720, 50.0, "min-energy", f)["static-smallest"] for f in (0.0, 900.0)}
    assert got[0.0]["floor_steps"] < got[900.0]["floor_steps"]
    assert got[0.0]["over_budget_steps"] == 0


def test_the_reserve_keeps_a_greedy_rule_from_spending_the_budget_a_burst_needs():
    """A budget between the smallest and the largest model's power, the demand bursting after a quiet hour: with
    savings kept in hand the largest model the rule allows overdraws less in the burst; the smallest never
    overdraws and the rule never changes it."""
    demand = np.r_[np.full(360, 10.0), np.full(100, 60.0), np.full(260, 10.0)]
    trs = [trace(720, demand_tps=demand, budget_w=0.12, capacity_wh=60.0, name="burst")]
    res = {r: B.run_split(trs, EnvParams(), [], r, 720) for r in (0.0, 3600.0)}
    assert res[0.0]["static-smallest"] == res[3600.0]["static-smallest"]
    assert res[0.0]["static-smallest"]["over_budget_steps"] == 0
    assert res[3600.0]["static-largest"]["over_budget_steps"] < res[0.0]["static-largest"]["over_budget_steps"]


@pytest.mark.parametrize("argv, message", [
    (["--splits", "train,test"], "without the test split"),
    (["--reserves", "a,b"], "give seconds separated by commas"),
    (["--reserve-tps", "-1"], "--reserve-tps: give at least one of the token rates"),
    (["--reserves", "-5"], "at least one of the seconds, each >= 0"),
    (["--reserve-tps", "x"], "give token rates separated by commas"),
    (["--objective", "min-energy", "--reserves", "300,900"], "give one --reserves and one --reserve-tps"),
    (["--objective", "min-energy", "--reserves", "900", "--floor-reserves", "-1"], "--floor-reserves: give at least"),
    (["--n-traces", "-2"], "--n-traces must be >= 0"),
])
def test_bad_arguments_are_refused_with_the_fix(argv, message, capsys):
    with pytest.raises(SystemExit):
        B.main(["--runs", "runs/none", *argv])
    assert message in capsys.readouterr().err


def test_sweeps_are_summarised_against_the_reference_and_bad_input_is_refused(tmp_path, capsys):
    """``--summarise``: each sweep's best setting, every setting's total less the reference's, the best over all
    sweeps together (which need not be any one sweep's best); sweeps of other settings and a reference that is not
    swept are refused."""
    import json

    a = {"traces": "fold-0", "chosen": "600", "totals": {"150": 10.0, "600": 12.0, "900": 11.0}}
    b = {"traces": "fold-1", "chosen": "150", "totals": {"150": 20.0, "600": 15.0, "900": 14.0}}
    d = B.summarise([a, b], ["a.json", "b.json"], "900")
    assert [r["chosen"] for r in d["rows"]] == ["600", "150"]
    assert d["rows"][0]["gain"] == {"150": -1.0, "600": 1.0, "900": 0.0}
    assert d["gain"] == {"150": 5.0, "600": 2.0, "900": 0.0} and d["chosen"] == "150"
    with pytest.raises(ValueError, match="the same settings"):
        B.summarise([a, dict(b, totals={"150": 1.0})], ["a.json", "b.json"], "900")
    with pytest.raises(ValueError, match="--reference '300'"):
        B.summarise([a, b], ["a.json", "b.json"], "300")
    for k, r in (("a", a), ("b", b)):
        (tmp_path / f"{k}.json").write_text(json.dumps(r))
    out = tmp_path / "sum"
    assert B.main(["--summarise", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--reference", "900",
                   "--out", str(out)]) == 0
    md = (tmp_path / "sum.md").read_text()
    assert "| **all together** | +5.0 | +2.0 | +0.0 | **150** |" in md and (tmp_path / "sum.png").stat().st_size > 0
    for argv, msg in ((["--summarise", str(tmp_path / "nope.json")], "nope.json"),
                      (["--summarise", str(tmp_path / "a.json"), "--runs", "r"], "leave out --runs"),
                      ([], "--runs is required")):
        with pytest.raises(SystemExit):
            B.main(argv + ["--out", str(tmp_path / "x")])
        assert msg in capsys.readouterr().err
