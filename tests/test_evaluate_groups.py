"""agents.evaluate's report per device kind and per objective, and the knob-value trajectory plots."""

from __future__ import annotations

import csv
import json

import pytest

from agents.evaluate import group_scores
from agents.evaluate import main as evaluate_main


def _ep(ret, kind, obj, death=False):
    return {"return": ret, "tokens": 10.0, "q_tokens": 5.0, "energy_j": 2.0, "death": death, "device_kind": kind,
            "objective": obj}


def test_each_group_is_normalised_by_its_own_random_and_oracle():
    per = {"random": [_ep(0, "phone", "a"), _ep(10, "laptop", "a")],
           "oracle": [_ep(10, "phone", "a"), _ep(30, "laptop", "a")],
           "p": [_ep(5, "phone", "a", death=True), _ep(30, "laptop", "a")]}
    g = group_scores({"per_episode": per}, "device_kind")
    assert g["phone"]["p"]["score"] == pytest.approx(0.5)
    assert g["laptop"]["p"]["score"] == pytest.approx(1.0)
    assert g["phone"]["p"]["deaths_not_oracle"] == 1 and g["laptop"]["p"]["deaths"] == 0
    assert list(group_scores({"per_episode": per}, "objective")) == ["a"]


def test_evaluate_runs_every_trace_under_each_objective_and_reports_them(tmp_path):
    out = tmp_path / "ev"
    assert evaluate_main(["--policies", "random,oracle,static-smallest", "--oracle-grid", "11,5,3", "--max-steps", "20",
                          "--objectives", "max-quality,min-energy", "--out", str(out), "--no-progress"]) == 0
    rep = json.loads((out / "report.json").read_text())
    n = len(rep["episodes"])
    assert [e["objective"] for e in rep["episodes"]] == ["max-quality"] * (n // 2) + ["min-energy"] * (n // 2)
    assert set(rep["groups"]["objective"]) == {"max-quality", "min-energy"}
    assert len(rep["groups"]["device_kind"]) >= 2
    md = (out / "report.md").read_text()
    assert "## Score by objective" in md and "## Score by device kind" in md and "groups.png" in md
    rows = list(csv.DictReader((out / "report_groups.csv").open()))
    assert {r["by"] for r in rows} == {"objective", "device_kind"}
    assert (out / "groups.png").stat().st_size > 0


def test_bad_objectives_are_a_usage_error(tmp_path):
    with pytest.raises(SystemExit) as e:
        evaluate_main(["--objectives", "max-quality,fastest", "--out", str(tmp_path / "x")])
    assert e.value.code == 2
