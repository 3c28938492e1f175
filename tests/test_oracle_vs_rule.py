"""benchmarks/oracle_vs_rule.py: the stretches where two configuration sequences differ; a short run end to end."""

from __future__ import annotations

import json

import pytest
from bench_helpers import load_benchmark


def _script():
    return load_benchmark("oracle_vs_rule")


def test_stretches_are_the_maximal_runs_where_the_two_differ():
    st = _script().stretches
    assert st([1, 1, 1, 2, 2, 3], [1, 4, 4, 4, 2, 3]) == [(1, 2, 1, 4), (3, 1, 2, 4)]
    assert st([5, 5], [5, 5]) == []
    assert st([1, 2, 3], [0, 0, 0]) == [(0, 1, 1, 0), (1, 1, 2, 0), (2, 1, 3, 0)]
    assert st([1, 1, 1], [2, 2]) == [(0, 2, 1, 2)]  # up to the shorter episode


def test_a_short_episode_end_to_end_and_a_bad_trace_refused(tmp_path, capsys):
    mod = _script()
    out = tmp_path / "t.md"
    assert mod.main(["--split", "test", "--trace", "link-04", "--max-steps", "12", "--oracle-grid", "11,5,3",
                     "--out", str(out)]) == 0
    rows = json.loads(out.with_suffix(".json").read_text())
    assert len(rows) == 1 and rows[0]["episode"].startswith("link-04")
    assert rows[0]["oracle_masked_return"] >= rows[0]["schedutil_return"] - 1.0  # coarse grid: near, not exact
    assert "masked oracle" in out.read_text()
    with pytest.raises(SystemExit):
        mod.main(["--split", "test", "--trace", "nope"])
    assert "not in the test split; choose one of" in capsys.readouterr().err
