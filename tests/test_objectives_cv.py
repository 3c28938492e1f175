"""benchmarks/objectives_cv.py: the fold reports of benchmarks/objectives.py grouped into recipes, with each
recipe's mean, worst fold, folds above every rule and RL step computed from the reports' scores."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import objectives_cv as CV  # noqa: E402


def _report(scores: dict[str, dict[str, float]], runs: list[str], traces: str = "folds/fold-0") -> dict:
    """A fold report as benchmarks/objectives.py writes it: ``scores[objective][controller]``."""
    objs = {}
    eps = [(f"t{j}", ("phone", "solar-node")[j % 2]) for j in range(10)]
    for obj, s in scores.items():  # every episode returns the score: random 0, the oracle 1 on each
        objs[obj] = {"episodes": 10, "binding_episodes": 3, "binding_share": 0.3,
                     "controllers": {k: {"score": v, "return": v, "per_episode": [
                         {"trace": t, "device_kind": kind, "return": v, "violation_steps": 0} for t, kind in eps]}
                         for k, v in s.items()}}
    return {"date": "2026-12-06", "runs": runs, "split": "test",
            "sets": [{"traces": traces, "split": "test", "objectives": objs}]}


RUNS = ["r/f/nobr/run1", "r/f/br/run1", "r/f/nobr/run1/warm_start", "r/f/br/run1/warm_start"]
GROUPS = [("no rule", "/nobr/"), ("budget rule", "/br/")]


def _fold(rl: tuple[float, float, float, float], rule: float) -> dict:
    ctrl = {"random": 0.0, "oracle": 1.0, "static-largest": rule, "schedutil": rule - 0.1}
    ctrl.update({f"rl:{i}": v for i, v in enumerate(rl)})
    return _report({"max-quality": ctrl}, RUNS)


def test_recipes_scored_per_fold_and_summarised():
    folds = [CV.fold_scores(_fold((0.80, 0.90, 0.70, 0.85), rule=0.84), GROUPS),
             CV.fold_scores(_fold((0.95, 0.93, 0.90, 0.94), rule=0.92), GROUPS)]
    row = folds[0]["max-quality"]
    assert row["recipes"] == {"no rule": 0.80, "budget rule": 0.90, "no rule (warm start)": 0.70,
                              "budget rule (warm start)": 0.85}
    assert row["best_rule"] == ("static-largest", 0.84)  # random and the oracle are not rules
    s = CV.summarise(folds)["max-quality"]["recipes"]
    assert s["no rule"]["mean"] == pytest.approx(0.875) and s["no rule"]["worst"] == pytest.approx(0.80)
    assert s["no rule"]["above_rules"] == 1 and s["budget rule"]["above_rules"] == 2
    assert s["no rule"]["rl_step"] == pytest.approx(((0.80 - 0.70) + (0.95 - 0.90)) / 2)
    assert s["budget rule"]["rl_step_better"] == 1  # +0.05 in fold 0, -0.01 in fold 1
    assert "rl_step" not in s["budget rule (warm start)"]
    over = CV.over_objectives(folds)["folds"]
    assert over[1]["recipes"]["budget rule"] == pytest.approx(0.93) and over[1]["best_rules"] == pytest.approx(0.92)


def test_mean_over_objectives_averages_each_objective_once():
    ctrl = {"random": 0.0, "oracle": 1.0, "schedutil": 0.5}
    rep = _report({"max-quality": dict(ctrl, **{"rl:0": 0.9}), "min-energy": dict(ctrl, **{"rl:0": 0.6}),
                   "last-until": dict(ctrl, schedutil=0.8, **{"rl:0": 0.6})}, ["x/br/seed1"])
    row = CV.over_objectives([CV.fold_scores(rep, GROUPS)])["folds"][0]
    assert row["recipes"]["budget rule"] == pytest.approx(0.7) and row["best_rules"] == pytest.approx(0.6)


def test_a_run_scored_under_some_objectives_only_counts_there():
    ctrl = {"random": 0.0, "oracle": 1.0, "schedutil": 0.5}
    rep = _report({"max-quality": dict(ctrl, **{"rl:0": 0.9, "rl:1": 0.7}), "min-energy": dict(ctrl, **{"rl:0": 0.6})},
                  ["x/br/seed1", "x/nobr/seed1"])
    got = CV.fold_scores(rep, GROUPS)
    assert got["max-quality"]["recipes"] == {"budget rule": 0.9, "no rule": 0.7}
    assert got["min-energy"]["recipes"] == {"budget rule": 0.6}


def test_seeds_of_one_recipe_are_averaged():
    rep = _report({"max-quality": {"random": 0.0, "oracle": 1.0, "schedutil": 0.5, "rl:0": 0.6, "rl:1": 0.8}},
                  ["x/br/seed1", "x/br/seed2"])
    assert CV.fold_scores(rep, GROUPS)["max-quality"]["recipes"] == {"budget rule": pytest.approx(0.7)}


def test_bad_input_is_refused_with_the_fix(tmp_path, capsys):
    with pytest.raises(ValueError, match="contains none of the --group texts"):
        CV.recipe_of("runs/other/run", GROUPS)
    with pytest.raises(ValueError, match="NAME=TEXT"):
        CV.parse_group("no-equals-sign")
    runs_only = _report({"max-quality": {"rl:0": 0.6}}, ["x/br/seed1"])
    with pytest.raises(ValueError, match="--runs-only"):
        CV.fold_scores(runs_only, GROUPS)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SystemExit):
        CV.main(["--reports", str(bad), "--group", "a=/br/", "--out", str(tmp_path / "o")])
    assert "bad.json" in capsys.readouterr().err


def test_writes_the_report_and_keeps_an_existing_one(tmp_path, capsys):
    paths = []
    for i, (rl, rule) in enumerate((((0.80, 0.90, 0.70, 0.85), 0.84), ((0.95, 0.93, 0.90, 0.94), 0.92))):
        p = tmp_path / f"eval-f{i}.json"
        p.write_text(json.dumps(_fold(rl, rule)))
        paths.append(str(p))
    out = tmp_path / "cv"
    args = ["--reports", *paths, "--group", "no rule=/nobr/", "--group", "budget rule=/br/", "--out", str(out)]
    assert CV.main(args) == 0
    md = out.with_suffix(".md").read_text()
    assert "| mean | | 0.875 | 0.915 |" in md and "| folds above every rule | | 1 of 2 | 2 of 2 |" in md
    assert "Mean over" not in md  # one objective scored (objectives.py --kinds): no mean over objectives
    assert out.with_suffix(".png").stat().st_size > 0
    assert "## Per device kind" in md and "| phone | 10 (1) | 0.875 | 0.915 |" in md
    assert (tmp_path / "cv-kinds.png").stat().st_size > 0
    before = out.with_suffix(".md").read_text()
    with pytest.raises(SystemExit):
        CV.main(args)  # an existing report is not replaced without --force
    assert out.with_suffix(".md").read_text() == before


def _episodes_report(returns: dict[str, list[float]], kinds: list[str], runs: list[str], traces: str) -> dict:
    """A one-objective fold report with these per-episode returns (``returns[controller]``) and device kinds."""
    ctrl = {k: {"score": 0.0, "return": sum(v) / len(v), "per_episode": [
        {"trace": f"{traces}-{j}", "device_kind": kinds[j], "return": r, "violation_steps": 0}
        for j, r in enumerate(v)]} for k, v in returns.items()}
    return {"date": "2026-12-07", "runs": runs, "split": "test", "sets": [{"traces": traces, "split": "test",
            "objectives": {"last-until": {"episodes": len(kinds), "binding_episodes": 0, "controllers": ctrl}}}]}


def test_per_device_kind_pools_the_folds_on_each_kinds_own_random_and_oracle():
    runs = ["x/br/s1", "x/br/s2"]
    f0 = _episodes_report({"random": [0, 0, 0], "oracle": [10, 20, 4], "static-largest": [10, 10, 4],
                           "rl:0": [8, 20, 2], "rl:1": [6, 20, 4]}, ["phone", "phone", "solar-node"], runs, "f0")
    f1 = _episodes_report({"random": [2, 0], "oracle": [6, 10], "static-largest": [2, 4],
                           "rl:0": [6, 10], "rl:1": [4, 5]}, ["solar-node", "phone"], runs, "f1")
    got = CV.kind_scores([f0, f1], GROUPS)["last-until"]
    phone, solar = got["phone"], got["solar-node"]
    assert (phone["episodes"], phone["folds"], solar["episodes"], solar["folds"]) == (3, 2, 2, 2)
    # phone: random 0, oracle 10 + 20 + 10 = 40; run 1 (the first of each fold) 8 + 20 + 10, run 2 6 + 20 + 5
    r = phone["recipes"]["budget rule"]
    assert r["min"] == pytest.approx(31 / 40) and r["max"] == pytest.approx(38 / 40)
    assert r["mean"] == pytest.approx((38 + 31) / 2 / 40)
    assert phone["best_rule"] == ("static-largest", pytest.approx(24 / 40))
    # solar nodes: random 0 + 2, oracle 4 + 6; the recipe's mean returns 3 + 5
    assert solar["recipes"]["budget rule"]["mean"] == pytest.approx((8 - 2) / (10 - 2))
    assert solar["best_rule"][1] == pytest.approx((6 - 2) / (10 - 2))
    md = "\n".join(CV.kinds_markdown(CV.kind_scores([f0, f1], GROUPS), "cv"))
    assert "| phone | 3 (2) | 0.863 (0.775–0.950) | static-largest 0.600 |" in md


def test_per_device_kind_needs_the_kinds(tmp_path):
    rep = _episodes_report({"random": [0], "oracle": [1]}, ["phone"], [], str(tmp_path / "gone"))
    for c in rep["sets"][0]["objectives"]["last-until"]["controllers"].values():
        for e in c["per_episode"]:
            del e["device_kind"]  # a report from before 2026-12-07, whose trace set is not here
    with pytest.raises(ValueError, match="score the fold again"):
        CV.trace_kinds(rep)


def test_folds_are_labelled_by_the_fold_their_trace_set_holds_out():
    reps = [{"traces": "data/real-objectives-cv/fold-3"}, {"traces": "data/real-objectives-cv/fold-1/"}]
    assert CV.fold_labels(reps) == ["3", "1"]
    # a trace set that is not a fold folder, or two reports of one fold: their places in the list
    assert CV.fold_labels([{"traces": "data/real"}, {"traces": "x/fold-2"}]) == ["0", "2"]
    assert CV.fold_labels([{"traces": "a/fold-2"}, {"traces": "b/fold-2"}]) == ["0", "1"]
