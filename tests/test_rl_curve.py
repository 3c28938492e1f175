"""benchmarks/rl_curve.py: every checkpoint of a run as a run folder of its own, scored and laid along the RL step."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from agents.evaluate import run_label
from benchmarks import rl_curve as rc


def fake_run(root: Path, seed: int, steps: list[int], kept: int) -> Path:
    """A warm-started run folder: config.json, warm_start/, eval/evaluations.npz and SB3-like checkpoint zips."""
    run = root / f"seed-{seed}" / f"wattwise__{seed}"
    (run / "checkpoints").mkdir(parents=True)
    (run / "eval").mkdir()
    (run / "warm_start").mkdir()
    (run / "warm_start" / "config.json").write_text("{}")
    (run / "config.json").write_text(json.dumps({"args": {"traces": None}, "warm_start": {"val_return": 1.0},
                                                 "selected": {"from": "best val return", "step": kept}}))
    for st in steps:
        buf = io.BytesIO()
        torch.save({"w": torch.full((3,), float(st))}, buf)
        with zipfile.ZipFile(run / "checkpoints" / f"model_{st}_steps.zip", "w") as z:
            z.writestr("policy.pth", buf.getvalue())
            z.writestr("data", "{}")
        np.savez(run / "checkpoints" / f"model_vecnormalize_{st}_steps.npz", mean=np.full(2, float(st)))
    np.savez(run / "eval" / "evaluations.npz", timesteps=np.array(steps),
             results=np.array([[1.0 + st / 1000] * 2 for st in steps]))
    return run


def test_checkpoint_views_are_run_folders_of_the_checkpoints(tmp_path: Path) -> None:
    run = fake_run(tmp_path, 1, [250, 500], kept=250)
    views = rc.checkpoint_views(run, tmp_path / "views")
    assert sorted(views) == [0, 250, 500] and views[0] == run / "warm_start"
    v = views[500]
    assert torch.equal(torch.load(v / "policy_state.pt", weights_only=True)["w"], torch.full((3,), 500.0))
    assert np.load(v / "vecnormalize.npz")["mean"][0] == 500.0
    assert json.loads((v / "config.json").read_text())["selected"] == {"from": "checkpoint", "step": 500}


def test_checkpoint_views_refuse_what_cannot_be_scored(tmp_path: Path) -> None:
    run = fake_run(tmp_path, 1, [250], kept=250)
    (run / "checkpoints" / "model_vecnormalize_250_steps.npz").unlink()
    with pytest.raises(SystemExit, match="observation statistics"):
        rc.checkpoint_views(run, tmp_path / "v1")
    run2 = fake_run(tmp_path / "b", 2, [], kept=0)
    with pytest.raises(SystemExit, match="no model_"):
        rc.checkpoint_views(run2, tmp_path / "v2")
    run3 = fake_run(tmp_path / "c", 3, [250], kept=250)
    (run3 / "warm_start" / "config.json").unlink()
    with pytest.raises(SystemExit, match="warm_start"):
        rc.checkpoint_views(run3, tmp_path / "v3")


def results_folder(tmp_path: Path, recorded: dict[int, float]) -> Path:
    out = tmp_path / "mjs"
    rows = [{"seed": s, "run": str(fake_run(out, s, [250, 500], kept=250)), "score": sc} for s, sc in recorded.items()]
    (out / "main_job_seeds.json").write_text(json.dumps({"seeds": rows, "best_heuristic": "schedutil",
                                                         "traces": "default", "oracle_grid": "11,5,3"}))
    return out


def fake_evaluate(scores):
    """Stands in for agents.evaluate: a report whose policy names end with each run's label, scored by ``scores``."""
    def run(cmd, check, cwd, stdout):
        runs = [Path(cmd[i + 1]) for i, c in enumerate(cmd) if c == "--run"]
        out = Path(cmd[cmd.index("--out") + 1])
        out.mkdir(parents=True, exist_ok=True)
        pol = {"schedutil": {"score": 0.9}, "oracle": {"score": 1.0}}
        for r in runs:
            pol[f"rl:{run_label(r)}"] = {"score": scores(r)}
        (out / "report.json").write_text(json.dumps({"policies": pol, "episodes": [1, 2]}))
    return run


def step_of(r: Path) -> int:
    return 0 if r.name == "warm_start" else int(r.name.rsplit("@", 1)[1])


def test_the_curve_per_step_and_the_kept_checkpoint_checked(tmp_path: Path, monkeypatch) -> None:
    folder = results_folder(tmp_path, {1: 0.95, 2: 0.85})

    def score(r: Path) -> float:
        seed = 1 if "__1" in str(r) else 2
        return {0: 0.92, 250: 0.95 if seed == 1 else 0.85, 500: 0.91}[step_of(r)]

    monkeypatch.setattr(rc.subprocess, "run", fake_evaluate(score))
    out = tmp_path / "curve" / "rl_curve"
    assert rc.main(["--results", str(folder), "--out", str(out), "--work", str(tmp_path / "w")]) == 0
    res = json.loads(out.with_suffix(".json").read_text())
    assert res["per_step"]["250"]["beats"] == 1 and res["per_step"]["250"]["of"] == 2
    assert res["per_step"]["250"]["over_warm_start"] == pytest.approx(0.9 - 0.92)
    assert res["per_step"]["0"]["beats"] == 2
    assert res["seeds"]["1"]["test"]["500"] == 0.91
    md = out.with_suffix(".md").read_text()
    assert "**0.950 (1.25)**" in md  # the kept checkpoint, bold, with its recorded val return
    assert out.with_suffix(".png").stat().st_size > 0
    with pytest.raises(SystemExit):  # nothing is overwritten without --force
        rc.main(["--results", str(folder), "--out", str(out), "--work", str(tmp_path / "w")])


def test_a_kept_checkpoint_that_scores_otherwise_is_refused(tmp_path: Path, monkeypatch) -> None:
    folder = results_folder(tmp_path, {1: 0.95})
    monkeypatch.setattr(rc.subprocess, "run", fake_evaluate(lambda r: 0.94))
    with pytest.raises(SystemExit, match="evaluation differs"):
        rc.main(["--results", str(folder), "--out", str(tmp_path / "o"), "--work", str(tmp_path / "w")])


def test_a_missing_results_folder_is_refused_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as e:
        rc.main(["--results", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert e.value.code == 2
