"""benchmarks/objectives.py scores every controller as agents.evaluate does: a masked policy is given the env's
masks, a rule is held to them, and runs are scored in the env parameters their policies were trained on."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import objectives as O  # noqa: E402
from test_agents import env_for, trace  # noqa: E402

from agents.baselines import largest_config  # noqa: E402
from agents.registry import make_controller  # noqa: E402
from runtime.dynamics import EnvParams  # noqa: E402


def _low_battery_env():
    """Below the reserve, unplugged: the env masks the largest configuration from the first decision on."""
    env = env_for([trace(12, soc=0.03, demand_tps=30.0, capacity_wh=50.0, name="low")])
    env.reset(seed=0, options={"trace": 0, "start": 0})
    big = largest_config(env.unwrapped.costs)
    assert not env.unwrapped.action_masks()[big]
    return env, big


class _MaskedPolicy:
    """A policy that reads the masks (as a MaskablePPO run does): the largest configuration when the masks it is
    given allow it, else the first allowed one; without masks it would run the largest."""

    uses_masks = True
    name = "masked"

    def __init__(self, big: int) -> None:
        self.big, self.given = big, []

    def predict(self, obs, state=None, episode_start=None, deterministic=True, action_masks=None):
        self.given.append(action_masks is not None)
        if action_masks is None or action_masks[self.big]:
            return np.array([self.big]), state
        return np.array([int(np.flatnonzero(action_masks)[0])]), state


def test_a_masked_policy_is_given_the_masks_and_a_rule_is_held_to_them():
    env, big = _low_battery_env()
    pol = _MaskedPolicy(big)
    O.episode(env, pol, {"trace": 0, "start": 0}, 10)
    assert pol.given and all(pol.given)  # it used to run without them: the largest configuration, masked or not
    rule = make_controller("static-largest", env)
    held = O.episode(env, rule, {"trace": 0, "start": 0}, 10)
    free_energy = 0.0  # the largest configuration as the rule writes it, stepped by hand
    env.reset(seed=0, options={"trace": 0, "start": 0})
    for _ in range(10):
        _, _, term, trunc, info = env.step(big)
        free_energy += info["step"].energy_j
        if term or trunc:
            break
    assert held["energy_j"] < free_energy  # held to the masks: stepped down from the largest


def _run_dir(tmp_path: Path, name: str, params: EnvParams) -> Path:
    d = tmp_path / name
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"env_params": dataclasses.asdict(params)}, default=str))
    return d


def test_runs_are_scored_in_their_own_env_parameters(tmp_path):
    base = EnvParams.from_dict({**dataclasses.asdict(EnvParams()), "objective": {"kind": "mix"}})
    thermal = EnvParams.from_dict({**dataclasses.asdict(base), "thermal_obs": True})
    a, b, c = (_run_dir(tmp_path, n, p) for n, p in (("a", thermal), ("b", thermal), ("c", base)))
    blind = _run_dir(tmp_path, "blind", EnvParams())  # no objective block: it cannot be scored per objective
    ruled = _run_dir(tmp_path, "ruled", dataclasses.replace(thermal, budget_rule=True, floor_rule=True))
    assert O.runs_params([str(a), str(ruled)], 360) == O.runs_params([str(a)], 360)  # trained with the rules or not
    # trained keeping another reserve: scored in the report's (EnvParams' defaults unless told), beside the others
    kept = _run_dir(tmp_path, "kept", dataclasses.replace(thermal, budget_reserve_s=120.0, budget_reserve_tps=0.0))
    assert O.runs_params([str(a), str(kept)], 360) == O.runs_params([str(a)], 360)
    assert O.runs_params([str(kept)], 360).budget_reserve_s == EnvParams().budget_reserve_s
    # ... and by default a report keeps what its runs kept in training, as agents.evaluate and the device do
    assert O.runs_reserve([str(kept)]) == (120.0, 0.0)
    assert O.runs_reserve([]) == (EnvParams().budget_reserve_s, EnvParams().budget_reserve_tps)
    with pytest.raises(ValueError, match=r"different budget reserves .*pass --budget-reserve-s"):
        O.runs_reserve([str(a), str(kept)])
    assert O.runs_reserve([str(a), str(kept)], 300.0, 50.0) == (300.0, 50.0)  # told: the runs may differ
    with pytest.raises(ValueError, match="--budget-reserve-tps"):  # told one, the other still differs
        O.runs_reserve([str(a), str(kept)], 300.0)
    p = O.runs_params([str(a), str(b)], 360)
    assert p.thermal_obs and p.max_episode_steps == 360  # the observation the policies read, not the defaults'
    assert O.runs_params([], 360) == dataclasses.replace(EnvParams(), max_episode_steps=360)
    with pytest.raises(ValueError, match=r"--runs: .*c was trained on other env parameters than .*a"):
        O.runs_params([str(a), str(c)], 360)
    with pytest.raises(ValueError, match=r"--runs: .*blind was trained without the objective in its observation"):
        O.runs_params([str(blind)], 360)


def test_the_report_gives_the_return_per_trace():
    """The per-trace returns (and constraint violations) go into the JSON and a table of the Markdown, so a figure
    quoted for one trace comes from the report."""
    m = {"score": 1.0, "return": 2.0, "violation_steps": 3, "deaths": 0, "energy_j": 1e3, "quality_per_token": 0.4,
         "per_episode": [{"trace": "phone-01", "return": -65.5, "violation_steps": 17},
                         {"trace": "laptop-00", "return": 104.5, "violation_steps": 0}]}
    data = {"date": "d", "host": "h", "max_steps": 720, "oracle_grid": (51, 13, 5), "floor_rule": True,
            "budget_rule": True, "sets": [{"traces": "t", "objectives": {"max-quality": {
                "episodes": 2, "binding_share": 1.0, "binding_episodes": 2, "controllers": {"rl:0": m}}}}]}
    md = O.to_markdown({**data, "runs": ["runs/a", "runs/b"]})
    assert "* `rl:1`: `runs/b`" in md
    assert "| controller | phone-01 | laptop-00 |" in md
    assert "| rl:0 | -65.5 (17) | 104.5 (0) |" in md
    assert "the budget held by the masks (EnvParams.budget_rule)" in md


def test_many_traces_get_a_row_each():
    """Beyond PER_TRACE_COLUMNS traces (a real-data split has 48) the per-trace table turns: a row per trace."""
    n = O.PER_TRACE_COLUMNS + 1
    per = [{"trace": f"t{i}", "return": float(i), "violation_steps": i % 2} for i in range(n)]
    m = {"score": 1.0, "return": 2.0, "violation_steps": 3, "deaths": 0, "energy_j": 1e3, "quality_per_token": 0.4}
    data = {"date": "d", "host": "h", "max_steps": 720, "oracle_grid": (51, 13, 5), "sets": [
        {"traces": "t", "objectives": {"min-energy": {"episodes": n, "binding_share": 1.0, "binding_episodes": n,
                                                       "controllers": {"a": {**m, "per_episode": per},
                                                                       "b": {**m, "per_episode": per[::-1]}}}}}]}
    md = O.to_markdown(data)
    assert "| trace | a | b |" in md
    assert f"| t0 | 0.0 (0) | {n - 1:.1f} ({(n - 1) % 2}) |" in md


def test_objectives_in_processes_give_the_same_figures(tmp_path):
    """``--jobs 2``: the objectives scored in spawned processes give the figures of one process (wall time aside)."""
    from test_agents import small_set

    from traces.objectives import overlay
    from traces.store import TraceSet

    ts = [overlay(t) for t in small_set()]
    sets = tmp_path / "small"
    TraceSet.from_traces(ts, name="small", splits={t.meta.unit: "test" for t in ts}).save(sets)
    base = O.runs_params([], 12)
    one = O.run_set(sets, [], (5, 3, 2), 12, base, jobs=1)
    two = O.run_set(sets, [], (5, 3, 2), 12, base, jobs=2)
    for o in (one, two):
        for v in o["objectives"].values():
            v.pop("wall_s")
    assert list(two["objectives"]) == list(O.CONSTRAINT)
    assert one == two


def test_a_spread_of_traces_of_any_split_and_runs_only(tmp_path):
    """``--n-traces`` picks traces spread evenly over the split (as train.py's val episodes), ``--split`` scores another
    split than test, and ``--runs-only`` skips the baselines and the oracle (no score, no binding share)."""
    from test_agents import small_set

    from traces.objectives import overlay
    from traces.store import TraceSet

    ts = [overlay(t) for t in small_set()]
    path = tmp_path / "small"
    TraceSet.from_traces(ts, name="small", splits={t.meta.unit: "val" for t in ts}).save(path)
    base = O.runs_params([], 6)
    two = O.run_objective(path, [], (5, 3, 2), 6, base, "max-quality", split="val", n_traces=2)
    names = [e["trace"] for e in two["controllers"]["oracle"]["per_episode"]]
    assert two["episodes"] == 2 and names == [ts[0].name, ts[2].name]
    kinds = [e["device_kind"] for e in two["controllers"]["oracle"]["per_episode"]]
    assert kinds == [ts[0].meta.device_kind, ts[2].meta.device_kind]
    # objectives_cv's per-device-kind table reads them, or a report without them from the set's manifest
    import objectives_cv as CV

    report = {"runs": [], "sets": [{"traces": str(path), "split": "val", "objectives": {"max-quality": two}}]}
    assert CV.trace_kinds(report) == dict(zip(names, kinds))
    for c in two["controllers"].values():
        for e in c["per_episode"]:
            del e["device_kind"]
    from_manifest = CV.trace_kinds(report)
    assert {n: from_manifest[n] for n in names} == dict(zip(names, kinds))
    assert two["controllers"]["oracle"]["score"] == pytest.approx(1.0)
    bare = O.run_objective(path, [], (5, 3, 2), 6, base, "max-quality", split="val", baselines=False)
    assert bare["controllers"] == {} and bare["episodes"] == 3 and bare["binding_share"] != bare["binding_share"]
    with pytest.raises(SystemExit):
        O.main(["--runs-only", "--out", str(tmp_path / "x")])


def test_runs_added_to_a_report_are_scored_as_if_scored_with_it(tmp_path):
    """``--add-to REPORT``: a run scored alone on REPORT's episodes and added to it gets the score it would have had
    in REPORT (against its random policy and oracle), after REPORT's own runs; other episodes or rules are refused."""
    report = {"date": "2026-12-01", "max_steps": 6, "split": "test", "floor_rule": True, "budget_rule": True,
              "floor_within_budget": True, "runs": ["runs/a"],
              "sets": [{"traces": "set", "split": "test", "objectives": {"min-energy": {"episodes": 2, "controllers": {
                  "random": {"return": -10.0, "score": 0.0, "per_episode": [{"trace": "t0"}, {"trace": "t1"}]},
                  "oracle": {"return": 10.0, "score": 1.0, "per_episode": [{"trace": "t0"}, {"trace": "t1"}]},
                  "rl:0": {"return": 0.0, "score": 0.5, "per_episode": [{"trace": "t0"}, {"trace": "t1"}]}}}}}]}
    new = dict(report, date="2026-12-06", runs=["runs/b"],
               sets=[{"traces": "set", "split": "test", "objectives": {"min-energy": {"episodes": 2, "controllers": {
                   "rl:0": {"return": 5.0, "score": math.nan,
                            "per_episode": [{"trace": "t0"}, {"trace": "t1"}]}}}}}])
    got = O.add_runs(report, new)
    c = got["sets"][0]["objectives"]["min-energy"]["controllers"]
    assert c["rl:0"]["score"] == 0.5 and c["rl:1"]["score"] == pytest.approx(0.75)
    assert got["runs"] == ["runs/a", "runs/b"] and got["added"] == [{"date": "2026-12-06", "runs": ["runs/b"]}]
    assert "rl:1" not in report["sets"][0]["objectives"]["min-energy"]["controllers"]  # the report itself untouched
    assert "Added on 2026-12-06" in O.to_markdown(dict(got, sets=[], oracle_grid=(5, 3, 2), host="x"))
    other = json.loads(json.dumps(new))
    other["sets"][0]["objectives"]["min-energy"]["controllers"]["rl:0"]["per_episode"][1]["trace"] = "t2"
    with pytest.raises(ValueError, match="--n-traces"):
        O.add_runs(report, other)
    with pytest.raises(ValueError, match="floor_rule"):
        O.add_runs(report, dict(new, floor_rule=False))
    with pytest.raises(ValueError, match="no set"):
        O.add_runs(report, dict(new, sets=[dict(new["sets"][0], traces="elsewhere")]))
    # the command line: a report that is not one, and --add-to without --runs, are refused with the reason
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    good = tmp_path / "report.json"
    good.write_text(json.dumps(report))
    for argv in (["--add-to", str(bad), "--runs", "r"], ["--add-to", str(bad)],
                 ["--add-to", str(good), "--runs", "r", "--traces", "elsewhere", "--max-steps", "6"],
                 ["--add-to", str(good), "--runs", "r", "--traces", "set", "--max-steps", "6", "--split", "val"]):
        with pytest.raises(SystemExit):
            O.main(argv + ["--out", str(tmp_path / "x")])
    assert not (tmp_path / "x.json").exists()  # refused before anything was scored or written


def test_the_floors_reserve_is_a_setting_and_a_report_may_score_some_objectives(tmp_path, capsys):
    """A report records ``budget_floor_reserve_s`` (one from before it existed kept the budget rule's 900 s), so
    runs are added only to a report scored with the same; ``--kinds`` scores some objectives only, and bad values of
    either are refused with the fix."""
    old = {"max_steps": 6, "split": "test", "floor_rule": True, "budget_rule": True, "floor_within_budget": True}
    assert O.settings_differ(old, dict(old, budget_floor_reserve_s=900.0)) is None
    zero = dict(old, budget_floor_reserve_s=0.0)
    assert "budget_floor_reserve_s=900.0, these runs 0.0" in O.settings_differ(old, zero)
    # no floor outside min-energy: runs scored on the other objectives join a report whatever the floor kept
    assert O.settings_differ(old, dict(old, budget_floor_reserve_s=0.0), ["max-quality", "last-until"]) is None
    assert O.settings_differ(old, dict(old, budget_floor_reserve_s=0.0), ["min-energy"]) is not None
    assert "floor_reserve" not in O.floor_text(dict(old, floor_rule=False))
    assert "down to 0 s of budget" in O.floor_text(dict(old, budget_floor_reserve_s=0.0))
    assert "down to 900 s of budget" in O.floor_text(old)
    # what the budget rule keeps is a setting under every objective; a report from before it kept 900 s + 50 tok/s
    assert O.settings_differ(old, dict(old, budget_reserve_s=900.0, budget_reserve_tps=50.0)) is None
    for key, v in (("budget_reserve_s", 300.0), ("budget_reserve_tps", 0.0)):
        assert f"{key}=" in O.settings_differ(old, dict(old, **{key: v}), ["max-quality"])
    assert "keeping 900 s of budget in hand, or of the safe configuration at 50 tok/s" in O.budget_text(old)
    assert "keeping 300 s of budget in hand (" in O.budget_text(dict(old, budget_reserve_s=300.0,
                                                                     budget_reserve_tps=0.0))
    # the floor never keeps more than the rule itself keeps
    assert "down to 120 s of budget" in O.floor_text(dict(old, budget_reserve_s=120.0, budget_floor_reserve_s=300.0))
    report = dict(old, runs=[], sets=[{"traces": "set", "split": "test", "objectives": {"min-energy": {
        "episodes": 1, "controllers": {"oracle": {"return": 1.0, "per_episode": [{"trace": "t0"}]},
                                       "random": {"return": 0.0, "per_episode": [{"trace": "t0"}]}}}}}])
    new = dict(report, sets=[{"traces": "set", "split": "test", "objectives": {"max-quality": {
        "episodes": 1, "controllers": {"rl:0": {"return": 1.0, "per_episode": [{"trace": "t0"}]}}}}}])
    with pytest.raises(ValueError, match="did not score max-quality"):
        O.add_runs(report, new)
    with pytest.raises(ValueError, match="budget_floor_reserve_s"):  # min-energy's runs: the floor's reserve counts
        O.add_runs(report, dict(report, budget_floor_reserve_s=0.0))
    for argv, msg in ((["--kinds", "max-quality,nope"], "--kinds"), (["--floor-reserve-s", "-3"], "--floor-reserve-s"),
                      (["--floor-reserve-s", "nan"], "--floor-reserve-s"),
                      (["--budget-reserve-s", "-1"], "--budget-reserve-s"),
                      (["--budget-reserve-tps", "inf"], "--budget-reserve-tps")):
        with pytest.raises(SystemExit):
            O.main(argv + ["--out", str(tmp_path / "x")])
        assert msg in capsys.readouterr().err
    from test_agents import small_set

    from traces.objectives import overlay
    from traces.store import TraceSet
    ts = [overlay(t) for t in small_set()]
    TraceSet.from_traces(ts, name="small", splits={t.meta.unit: "test" for t in ts}).save(tmp_path / "small")
    O.main(["--traces", str(tmp_path / "small"), "--kinds", "min-energy", "--max-steps", "4", "--oracle-grid", "5,3,2",
            "--floor-reserve-s", "0", "--budget-reserve-s", "300", "--out", str(tmp_path / "one")])
    one = json.loads((tmp_path / "one.json").read_text())
    assert list(one["sets"][0]["objectives"]) == ["min-energy"] and one["budget_floor_reserve_s"] == 0.0
    assert (one["budget_reserve_s"], one["budget_reserve_tps"]) == (300.0, EnvParams().budget_reserve_tps)
    assert "keeping 300 s of budget in hand" in (tmp_path / "one.md").read_text()
