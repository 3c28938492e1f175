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


def test_a_warm_started_seed_is_scored_with_its_warm_start(tmp_path, monkeypatch):
    """The evaluation scores each finished seed's policy and, where the recipe warm-started, its clone alone (the
    RL step must help, not be neutral); a seed that has not finished is left out."""
    import json

    mj = load_benchmark("main_job_seeds")
    import agents.crossval as cv

    seen = []
    monkeypatch.setattr(cv, "run_jobs", lambda jobs, n, desc="": seen.extend(jobs) or {})
    run = tmp_path / "out" / "seed-1" / "run-a"
    (run / "warm_start").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"train_wall_s": 1.0}))
    (run / "warm_start" / "config.json").write_text("{}")
    (tmp_path / "out" / "seed-2" / "run-b").mkdir(parents=True)  # started, not finished
    mj.main(["--seeds", "1,2", "--out", str(tmp_path / "out"), "--resume"])
    evaluate = next(j for j in seen if j.name == "evaluate")
    assert evaluate.extra() == ["--run", str(run), "--run", str(run / "warm_start")]
