"""traces.folds (k folds by unit) and agents.crossval (its job runner and its report)."""

from __future__ import annotations

import sys
from collections import Counter

import pytest

import traces as T
from agents.crossval import Job, run_jobs, summarise
from traces.folds import fold_splits, make_folds, unit_groups
from traces.folds import main as folds_main


def test_every_unit_is_held_out_exactly_once_and_never_trained_on_in_its_fold():
    ts = T.TraceSet.load(T.default_trace_set_dir())
    k = 3
    groups = unit_groups(ts.entries, k)
    units = sorted({e.meta.unit for e in ts.entries})
    assert sorted(u for g in groups for u in g) == units  # a partition
    for i in range(k):
        sp = fold_splits(groups, i)
        assert {u for u, s in sp.items() if s == "test"} == set(groups[i])
        assert {u for u, s in sp.items() if s == "val"} == set(groups[(i + 1) % k])
        assert {u for u, s in sp.items() if s == "train"} == set(units) - set(groups[i]) - set(groups[(i + 1) % k])
    # balanced within each kind: group sizes in traces differ by at most the largest unit of that kind
    n = Counter(e.meta.unit for e in ts.entries)
    kind = {e.meta.unit: e.meta.device_kind for e in ts.entries}
    for kd in set(kind.values()):
        sizes = [sum(n[u] for u in g if kind[u] == kd) for g in groups]
        assert max(sizes) - min(sizes) <= max(n[u] for u in n if kind[u] == kd)


def test_fold_sets_are_complete_trace_sets_and_are_not_overwritten(tmp_path):
    folders = make_folds(T.default_trace_set_dir(), 3, tmp_path / "cv", progress=False)
    src = T.TraceSet.load(T.default_trace_set_dir())
    for i, f in enumerate(folders):
        ts = T.TraceSet.load(f)
        assert sorted(ts.names) == sorted(src.names)
        assert ts.info["cv"]["fold"] == i and ts.info["cv"]["k"] == 3
        assert len(ts.split("train")) and len(ts.split("val")) and len(ts.split("test"))
    assert folds_main([str(T.default_trace_set_dir()), "--k", "3", "--out", str(tmp_path / "cv"),
                       "--no-progress"]) == 1  # exists: refused


def test_fewer_than_three_folds_are_refused():
    ts = T.TraceSet.load(T.default_trace_set_dir())
    with pytest.raises(ValueError, match="k >= 3"):
        unit_groups(ts.entries, 2)


def test_a_failed_job_stops_the_jobs_that_wait_for_it(tmp_path):
    py = sys.executable
    jobs = [Job("ok", [py, "-c", "print(1)"], tmp_path / "ok.log"),
            Job("bad", [py, "-c", "raise SystemExit(3)"], tmp_path / "bad.log"),
            Job("after-ok", [py, "-c", "print(2)"], tmp_path / "a.log", after=["ok"]),
            Job("after-bad", [py, "-c", "print(3)"], tmp_path / "b.log", after=["bad"]),
            Job("done", [py, "-c", "raise SystemExit(9)"], tmp_path / "d.log", done_if=lambda: True)]
    rc = run_jobs(jobs, 2, progress=False)
    assert rc == {"ok": 0, "bad": 3, "after-ok": 0, "after-bad": -1, "done": 0}
    assert not (tmp_path / "b.log").exists() and not (tmp_path / "d.log").exists()


def test_the_summary_takes_the_worst_fold_and_checks_every_heuristic_in_every_fold():
    folds = [{"rl": {1: 0.96, 2: 0.94}, "warm_start": {1: 0.95, 2: 0.95}, "heuristics": {"a": 0.9, "b": 0.93},
              "best_heuristic": "b", "deaths_not_oracle": {1: 0, 2: 0}},
             {"rl": {1: 0.92, 2: 0.90}, "warm_start": {1: 0.90, 2: 0.92}, "heuristics": {"a": 0.91},
              "best_heuristic": "a", "deaths_not_oracle": {1: 1, 2: 0}}]
    s = summarise(folds, [1, 2])
    assert s["mean"] == pytest.approx(0.93)
    assert s["worst_fold"] == pytest.approx(0.91)
    assert s["beats_per_fold"] == [True, False]  # seed 2 is below heuristic a in fold 1
    assert s["deaths_the_oracle_avoids"] == 1
    assert s["rl_minus_warm_start"] == pytest.approx(0.0)
    assert s["targets"] == {"mean>=0.95": False, "worst_fold>=0.93": False,
                            "above every heuristic in every fold": False, "no death the oracle avoids": False}
    assert not s["partial"] and summarise(folds, [1, 2], k=2)["targets"]
    part = summarise(folds, [1, 2], k=4)  # two of four folds (--folds, or an unfinished run): nothing is judged
    assert part["partial"] and part["targets"] == {} and part["mean"] == pytest.approx(0.93)
    assert "val_pick" not in s  # no record of val's choice: not reported


def test_vals_choice_between_warm_start_and_rl_is_read_from_each_run_and_scored(tmp_path):
    """val_keeps_warm_start reads a run's config.json as train.py --select-warm-start would decide (a tie keeps the
    warm start); the summary scores each run's kept policy: its warm start's score and deaths where val keeps it."""
    import json

    from agents.crossval import val_keeps_warm_start

    def run(name, ws, sel, frm="best val return"):
        d = tmp_path / name
        d.mkdir()
        (d / "config.json").write_text(json.dumps({"warm_start": {"val_return": ws},
                                                   "selected": {"from": frm, "val_return": sel}}))
        return d

    assert val_keeps_warm_start(run("a", 75.6, 75.3)) is True
    assert val_keeps_warm_start(run("b", 75.6, 75.6)) is True  # SB3 keeps a new best only when strictly better
    assert val_keeps_warm_start(run("c", 75.6, 75.7)) is False
    assert val_keeps_warm_start(run("d", 75.6, 75.6, "warm start")) is True
    (tmp_path / "e").mkdir()
    assert val_keeps_warm_start(tmp_path / "e") is None  # no config.json
    folds = [{"rl": {1: 0.96, 2: 0.94}, "warm_start": {1: 0.95, 2: 0.97}, "heuristics": {"a": 0.93},
              "best_heuristic": "a", "deaths_not_oracle": {1: 0, 2: 1}, "warm_start_deaths_not_oracle": {1: 2, 2: 0},
              "val_keeps_warm_start": {1: False, 2: True}},
             {"rl": {1: 0.90, 2: 0.92}, "warm_start": {1: 0.94, 2: 0.91}, "heuristics": {"a": 0.92},
              "best_heuristic": "a", "deaths_not_oracle": {1: 0, 2: 0}, "warm_start_deaths_not_oracle": {1: 0, 2: 0},
              "val_keeps_warm_start": {1: True, 2: False}}]
    vp = summarise(folds, [1, 2])["val_pick"]
    assert vp["per_fold"] == pytest.approx([(0.96 + 0.97) / 2, (0.94 + 0.92) / 2])
    assert vp["mean"] == pytest.approx((0.96 + 0.97 + 0.94 + 0.92) / 4) and vp["worst_fold"] == pytest.approx(0.93)
    assert vp["beats_per_fold"] == [True, False]  # fold 1's seed 2 keeps its RL policy, 0.92, not above 0.92
    assert vp["warm_start_kept"] == 2 and vp["runs"] == 4
    assert vp["deaths_the_oracle_avoids"] == 0  # seed 2's RL death in fold 0 is not kept; seed 1's RL kept has none


def test_folds_option_plans_only_those_folds_and_refuses_bad_ones(tmp_path, capsys):
    import argparse

    from agents.crossval import main, plan

    a = argparse.Namespace(out=str(tmp_path), k=4, folds=[1], seeds=[1, 2], total_timesteps=1e3, learning_rate=3e-5,
                           recipe="dagger+ppo", expert="oracle", oracle_grid="51,13,5", dagger_episodes=2,
                           bc_episodes=2, max_steps=10, foresight_free=False)
    names = [j.name for j in plan(a, [])]
    assert names == ["train fold 1 seed 1", "train fold 1 seed 2", "evaluate fold 1"]
    for bad in ("4", "1,1", "x", "-1"):
        with pytest.raises(SystemExit):
            main(["--traces", str(tmp_path), "--out", str(tmp_path / "o"), "--folds", bad, "--report-only"])
        assert "--folds" in capsys.readouterr().err


def test_the_expert_option_reaches_every_training_job(tmp_path):
    import argparse

    from agents.crossval import plan

    a = argparse.Namespace(out=str(tmp_path), k=3, folds=[0, 1, 2], seeds=[1, 2], total_timesteps=1e3,
                           learning_rate=3e-5, recipe="dagger+ppo", expert="oracle-masked", oracle_grid="51,13,5",
                           dagger_episodes=2, bc_episodes=2, max_steps=10, foresight_free=False)
    trains = [j for j in plan(a, []) if j.name.startswith("train")]
    assert len(trains) == 6
    for j in trains:
        assert j.argv[j.argv.index("--bc-expert") + 1] == "oracle-masked"


def test_a_rebuilt_report_describes_the_training_that_was_recorded_not_its_own_options(tmp_path, capsys):
    import json

    from agents.crossval import main

    out = tmp_path / "cv"
    with pytest.raises(SystemExit):  # no such cross-validation: refused, nothing written
        main(["--traces", str(tmp_path), "--out", str(out), "--report-only", "--no-progress"])
    assert "holds no cross-validation" in capsys.readouterr().err and not out.exists()
    (out / "runs").mkdir(parents=True)
    (out / "args.json").write_text(json.dumps({"recipe": "ppo", "expert": "oracle", "total_timesteps": 2e6,
                                               "learning_rate": 1e-4, "train_extra": ["--freeze-obs-norm"]}))
    assert main(["--traces", str(tmp_path), "--out", str(out), "--report-only", "--no-progress"]) == 0
    md = (out / "crossval.md").read_text()
    assert "2e+06 RL steps at step size 0.0001" in md and "`--freeze-obs-norm`" in md
    assert "1e+06 RL steps" not in md and "recipe ppo" in md.splitlines()[0]
    (out / "args.json").write_text("not json")
    assert main(["--traces", str(tmp_path), "--out", str(out), "--report-only", "--no-progress"]) == 0
    assert "args.json is missing or unreadable" in capsys.readouterr().err
    assert "1e+06 RL steps" in (out / "crossval.md").read_text()


def _fake_cv(out, blind: bool, deaths_blind=(0, 1)):
    """A finished two-fold cross-validation folder: runs, folds and fold reports (with oracle-blind or not)."""
    import json

    for i in range(2):
        (out / "folds" / f"fold-{i}").mkdir(parents=True)
        (out / "folds" / f"fold-{i}" / "manifest.json").write_text(
            json.dumps({"info": {"cv": {"test_units": [f"unit-{i}"]}}}))
        run = out / "runs" / f"fold-{i}" / "seed-1" / f"run{i}"
        run.mkdir(parents=True)
        (run / "config.json").write_text(json.dumps({"train_wall_s": 1.0}))
        pol = {f"rl:maskable_ppo:run{i}": {"score": 0.96, "deaths_not_oracle": 1, "deaths_not_blind": deaths_blind[i]},
               "schedutil": {"score": 0.9, "deaths_not_oracle": 0, "deaths_not_blind": 0},
               "oracle": {"score": 1.0, "deaths_not_oracle": 0}}
        if blind:
            pol["oracle-blind"] = {"score": 0.97 - 0.02 * i, "deaths_not_oracle": 1, "deaths_not_blind": 0}
        else:
            for m in pol.values():
                m.pop("deaths_not_blind", None)
        (out / "eval" / f"fold-{i}").mkdir(parents=True)
        (out / "eval" / f"fold-{i}" / "report.json").write_text(json.dumps(
            {"policies": pol, "episodes": [{}] * 3, "meta": {"run": [str(run)], "oracle_grid": [51, 13, 5]}}))


def test_foresight_free_counts_the_deaths_the_blind_oracle_avoids_beside_the_oracles(tmp_path):
    from agents.crossval import collect, write_report

    _fake_cv(tmp_path, blind=True)
    res = collect(tmp_path, 2, [1])
    assert [f["deaths_not_blind"] for f in res["folds"]] == [{1: 0}, {1: 1}]
    assert "oracle-blind" not in res["folds"][0]["heuristics"]  # a reference, not a heuristic to beat
    assert res["deaths_the_oracle_avoids"] == 2 and res["deaths_the_blind_oracle_avoids"] == 1
    assert res["oracle_blind_mean"] == pytest.approx(0.96)
    assert res["targets"]["no death the oracle avoids"] is False  # the target is unchanged
    assert res["no_death_the_blind_oracle_avoids"] is False
    write_report(res, tmp_path, "t")
    assert "the foresight-free oracle (`oracle-blind`" in (tmp_path / "crossval.md").read_text()


def test_without_foresight_free_there_is_no_blind_count(tmp_path):
    from agents.crossval import collect, write_report

    _fake_cv(tmp_path, blind=False)
    res = collect(tmp_path, 2, [1])
    assert res["deaths_the_blind_oracle_avoids"] is None and res["no_death_the_blind_oracle_avoids"] is None
    write_report(res, tmp_path, "t")
    assert "oracle-blind" not in (tmp_path / "crossval.md").read_text()


def test_foresight_free_rescores_a_finished_fold_and_keeps_its_old_report(tmp_path):
    import argparse

    from agents.crossval import keep_stale_reports, plan

    _fake_cv(tmp_path, blind=False)
    a = argparse.Namespace(out=str(tmp_path), k=2, folds=[0, 1], seeds=[1], total_timesteps=1e3, learning_rate=3e-5,
                           recipe="dagger+ppo", expert="oracle", oracle_grid="51,13,5", dagger_episodes=2,
                           bc_episodes=2, max_steps=10, foresight_free=True)
    evals = [j for j in plan(a, []) if j.name.startswith("evaluate")]
    assert all(j.argv[j.argv.index("--also") + 1] == "oracle-blind" for j in evals)
    assert not any(j.done_if() for j in evals)  # the reports without oracle-blind do not count as done
    old = (tmp_path / "eval" / "fold-0" / "report.json").read_text()
    (tmp_path / "eval" / "fold-1.without-blind").mkdir()  # taken: the next free name is used
    kept = [k for k, _ in keep_stale_reports(tmp_path, a)]
    assert [k.name for k in kept] == ["fold-0.without-blind", "fold-1.without-blind-2"]
    assert (kept[0] / "report.json").read_text() == old and not (tmp_path / "eval" / "fold-0").exists()
    _fake_cv(tmp_path / "b", blind=True)
    assert all(j.done_if() for j in plan(argparse.Namespace(**{**vars(a), "out": str(tmp_path / "b")}), [])
               if j.name.startswith("evaluate"))
    assert keep_stale_reports(tmp_path / "b", a) == []
    a.foresight_free = False
    assert all("--also" not in j.argv for j in plan(a, []))


def test_resume_finishes_with_the_recorded_training_options(tmp_path, monkeypatch, capsys):
    import json

    import agents.crossval as cv

    out = tmp_path / "cv"
    for i in range(3):
        (out / "folds" / f"fold-{i}").mkdir(parents=True)
        (out / "folds" / f"fold-{i}" / "manifest.json").write_text("{}")
    (out / "args.json").write_text(json.dumps({"recipe": "dagger+ppo", "expert": "oracle-masked",
                                               "total_timesteps": 2e6, "train_extra": ["--hot-frac", "0.3"]}))
    base = ["--traces", str(tmp_path), "--k", "3", "--out", str(out), "--resume", "--no-progress",
            "--expert", "oracle-masked"]
    with pytest.raises(SystemExit):  # 1e6 steps by default: not how the folder was started
        cv.main(base)
    err = capsys.readouterr().err
    assert "--total-timesteps 2e+06" in err and "fix: pass the same options" in err
    with pytest.raises(SystemExit):  # other train.py arguments after --
        cv.main(base + ["--total-timesteps", "2e6", "--", "--hot-frac", "0.5"])
    assert "`--hot-frac 0.3`" in capsys.readouterr().err

    class Planned(Exception):
        pass

    def fake_run_jobs(jobs, *args, **kw):
        raise Planned(jobs)

    monkeypatch.setattr(cv, "run_jobs", fake_run_jobs)
    with pytest.raises(Planned) as planned:  # nothing after --: the recorded arguments reach every train.py
        cv.main(base + ["--total-timesteps", "2e6"])
    trains = [j for j in planned.value.args[0] if j.name.startswith("train")]
    assert trains and all(j.argv[-2:] == ["--hot-frac", "0.3"] for j in trains)
    assert "the further train.py arguments recorded" in capsys.readouterr().err


def test_a_fold_scored_with_one_run_keeps_its_rl_score(tmp_path):
    """One seed and no warm start: the fold's evaluation has one --run, which agents.evaluate names ``rl:<algo>``
    without the run's suffix; the score is the run's, not lost."""
    import json

    from agents.crossval import collect

    _fake_cv(tmp_path, blind=False)
    for i in range(2):
        p = tmp_path / "eval" / f"fold-{i}" / "report.json"
        rep = json.loads(p.read_text())
        rep["policies"]["rl:maskable_ppo"] = rep["policies"].pop(f"rl:maskable_ppo:run{i}")
        rep["meta"] = {"run": str(tmp_path / "runs" / f"fold-{i}" / "seed-1" / f"run{i}")}
        p.write_text(json.dumps(rep))
    res = collect(tmp_path, 2, [1])
    assert [f["rl"] for f in res["folds"]] == [{1: 0.96}, {1: 0.96}] and res["mean"] == pytest.approx(0.96)
    assert "rl:maskable_ppo" not in res["folds"][0]["heuristics"]


def test_resume_with_more_seeds_scores_the_folds_again_and_keeps_the_old_reports(tmp_path):
    """``--resume --seeds 1,2`` on folds scored with seed 1: the evaluations are not done (seed 2 is neither trained
    nor scored), and the old reports are kept under a name that says their seeds."""
    import argparse

    from agents.crossval import keep_stale_reports, plan, stale_report

    _fake_cv(tmp_path, blind=False)
    a = argparse.Namespace(out=str(tmp_path), k=2, folds=[0, 1], seeds=[1], total_timesteps=1e3, learning_rate=3e-5,
                           recipe="dagger+ppo", expert="oracle", oracle_grid="51,13,5", dagger_episodes=2,
                           bc_episodes=2, max_steps=10, foresight_free=False)
    assert all(j.done_if() for j in plan(a, []) if j.name.startswith("evaluate"))
    a.seeds = [1, 2]
    assert stale_report(tmp_path, 0, a) == ("fold-0.seeds-1", "without every seed of --seeds")
    assert not any(j.done_if() for j in plan(a, []) if j.name.startswith("evaluate"))
    old = (tmp_path / "eval" / "fold-0" / "report.json").read_text()
    kept = [k for k, _ in keep_stale_reports(tmp_path, a)]
    assert [k.name for k in kept] == ["fold-0.seeds-1", "fold-1.seeds-1"]
    assert (kept[0] / "report.json").read_text() == old
    assert keep_stale_reports(tmp_path, a) == []  # nothing left to keep


def test_another_score_grid_scores_the_folds_again_and_keeps_the_old_reports(tmp_path):
    """``--score-oracle-grid 201,13,5`` on folds scored on 51,13,5: the evaluations run again on the new grid (the
    demonstrations keep --oracle-grid), and the old reports are kept under a name that says their grid."""
    import argparse

    from agents.crossval import keep_stale_reports, plan, score_grid

    _fake_cv(tmp_path, blind=False)
    a = argparse.Namespace(out=str(tmp_path), k=2, folds=[0, 1], seeds=[1], total_timesteps=1e3, learning_rate=3e-5,
                           recipe="dagger+ppo", expert="oracle", oracle_grid="51,13,5", dagger_episodes=2,
                           bc_episodes=2, max_steps=10, foresight_free=False, score_oracle_grid="201,13,5")
    jobs = plan(a, [])
    evals = [j for j in jobs if j.name.startswith("evaluate")]
    assert not any(j.done_if() for j in evals)
    assert all(j.argv[j.argv.index("--oracle-grid") + 1] == "201,13,5" for j in evals)
    trains = [j for j in jobs if j.name.startswith("train")]
    assert all(j.argv[j.argv.index("--bc-oracle-grid") + 1] == "51,13,5" for j in trains)
    kept = [k for k, _ in keep_stale_reports(tmp_path, a)]
    assert [k.name for k in kept] == ["fold-0.grid-51x13x5", "fold-1.grid-51x13x5"]
    a.score_oracle_grid = None
    assert score_grid(a) == "51,13,5"
