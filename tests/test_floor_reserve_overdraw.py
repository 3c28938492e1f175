"""benchmarks/floor_reserve_overdraw.py: bad input is refused with the fix; the report sums each controller's steps
over the budget and below the floor per setting."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import floor_reserve_overdraw as F  # noqa: E402


def test_the_report_sums_overdraws_and_floor_steps_per_setting():
    row = {"900.0": {"policy": {"budget": 0, "floor": 10, "episodes": 2}},
           "300.0": {"policy": {"budget": 3, "floor": 4, "episodes": 2}}}
    md = F.to_markdown({"date": "d", "host": "h", "cv": "cv", "n_traces": 2, "keeps": [900.0, 300.0],
                        "runs": ["r0", "r1"], "folds": {"fold-0": row, "fold-1": row}})
    assert "| fold-0 | policy | 0 / 10 | 3 / 4 |" in md and "| all | policy | 0 / 20 | 6 / 8 |" in md


@pytest.mark.parametrize("argv, message", [
    (["--runs", "r", "--keeps", "x"], "give seconds separated by commas"),
    (["--runs", "r", "--keeps", "-1"], "each >= 0"),
    (["--runs", "r", "--cv", "nowhere"], "no fold-* folders"),
])
def test_bad_input_is_refused_with_the_fix(argv, message, capsys, tmp_path):
    with pytest.raises(SystemExit):
        F.main(argv + ["--out", str(tmp_path / "o")])
    assert message in capsys.readouterr().err


def test_a_fold_without_a_run_is_named(tmp_path, capsys):
    (tmp_path / "fold-0").mkdir()
    with pytest.raises(SystemExit):
        F.main(["--cv", str(tmp_path), "--runs", str(tmp_path / "runs/f{fold}/*"), "--out", str(tmp_path / "o")])
    assert "no run folder for fold-0" in capsys.readouterr().err
