"""``benchmarks/main_job_seeds.py``: the command lines it runs, and the inputs it refuses."""

from __future__ import annotations

import pytest
from bench_helpers import load_benchmark


def test_a_missing_trace_set_is_refused_before_anything_runs(tmp_path, capsys):
    mj = load_benchmark("main_job_seeds")
    with pytest.raises(SystemExit):
        mj.main(["--traces", str(tmp_path / "nope"), "--out", str(tmp_path / "out")])
    assert "no such folder" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_the_trace_set_reaches_training_and_the_evaluation(tmp_path, monkeypatch):
    """``--traces DIR`` is passed to every ``train.py`` and to ``agents.evaluate``; the extra arguments follow."""
    mj = load_benchmark("main_job_seeds")
    import agents.crossval as cv

    seen = []

    def fake_run_jobs(jobs, n, desc=""):
        seen.extend(jobs)
        return {}

    monkeypatch.setattr(cv, "run_jobs", fake_run_jobs)
    (tmp_path / "set").mkdir()
    assert mj.main(["--traces", str(tmp_path / "set"), "--seeds", "1,2", "--out", str(tmp_path / "out"),
                    "--", "--seed-extra", "{seed}"]) == 1  # nothing ran: no evaluation
    train = [j for j in seen if j.name.startswith("seed")]
    evaluate = next(j for j in seen if j.name == "evaluate")
    assert len(train) == 2
    for j, s in zip(train, ("1", "2"), strict=True):
        i = j.argv.index("--traces")
        assert j.argv[i + 1] == str(tmp_path / "set") and j.argv[-2:] == ["--seed-extra", s]
    i = evaluate.argv.index("--traces")
    assert evaluate.argv[i + 1] == str(tmp_path / "set") and evaluate.argv[i + 2:i + 4] == ["--split", "test"]
