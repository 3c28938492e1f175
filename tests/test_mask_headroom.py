"""benchmarks/mask_headroom.py: the masked oracle on a fold report's own episodes, the re-run checked against the
report's oracle returns, and what the masks cost against what a policy leaves within them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import mask_headroom as MH  # noqa: E402
import objectives as O  # noqa: E402


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """A report of benchmarks/objectives.py on a small set (every objective, no runs)."""
    from test_agents import small_set

    from traces.objectives import overlay
    from traces.store import TraceSet

    tmp = tmp_path_factory.mktemp("mh")
    ts = [overlay(t) for t in small_set()]
    path = tmp / "small"
    TraceSet.from_traces(ts, name="small", splits={t.meta.unit: "val" for t in ts}).save(path)
    out = tmp / "fold"
    assert O.main(["--traces", str(path), "--split", "val", "--max-steps", "8", "--oracle-grid", "5,3,2",
                   "--out", str(out)]) == 0
    return out.with_suffix(".json")


def test_the_masked_oracle_scores_at_most_the_oracle_on_the_reports_episodes(report, tmp_path):
    out = tmp_path / "mh"
    assert MH.main(["--reports", str(report), "--group", "recipe=/none/", "--check", "1", "--out", str(out)]) == 0
    data = json.loads(out.with_suffix(".json").read_text())
    rep = json.loads(report.read_text())
    for kind, row in data["folds"][0].items():
        n = rep["sets"][0]["objectives"][kind]["episodes"]
        assert row["episodes"] == n == len(data["masked_returns"][0][kind])
        # the masks only take choices away from the same planner
        assert row["masked_oracle"] <= 1.0 + 1e-6
    assert data["reports"][0]["checked"] == 1
    assert "## min-energy" in out.with_suffix(".md").read_text()


def test_a_report_this_env_does_not_reproduce_is_refused(report, tmp_path, capsys):
    rep = json.loads(report.read_text())
    rep["sets"][0]["objectives"]["max-quality"]["controllers"]["oracle"]["per_episode"][0]["return"] += 1.0
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(rep))
    assert MH.main(["--reports", str(bad), "--group", "recipe=/none/", "--out", str(tmp_path / "o")]) == 2
    assert "is not the report's" in capsys.readouterr().err
    assert not (tmp_path / "o.json").exists()
    old = dict(rep)
    del old["budget_reserve_s"]  # a report from before the settings were recorded
    bad.write_text(json.dumps(old))
    with pytest.raises(SystemExit):
        MH.main(["--reports", str(bad), "--group", "recipe=/none/", "--out", str(tmp_path / "o")])
    assert "score the fold again" in capsys.readouterr().err


def test_what_is_not_a_report_is_refused_with_the_fix(tmp_path, capsys):
    for text in ("{not json", '{"sets": 1}'):
        bad = tmp_path / "bad.json"
        bad.write_text(text)
        with pytest.raises(SystemExit):
            MH.main(["--reports", str(bad), "--group", "recipe=/none/", "--out", str(tmp_path / "o")])
        assert "fix: pass a JSON report written by benchmarks/objectives.py" in capsys.readouterr().err
