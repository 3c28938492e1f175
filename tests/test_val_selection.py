"""benchmarks/val_selection.py: which policy each selection rule keeps, from what the runs recorded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks import val_selection as vs


def fake_result(root: Path, label: str, rows: list[dict], weights: dict[int, float]) -> Path:
    """A main_job_seeds.py output folder: per seed a run with config.json, eval/evaluations.npz and last/."""
    out = root / label
    seeds = []
    for r in rows:
        run = out / f"seed-{r['seed']}" / "run"
        (run / "eval").mkdir(parents=True)
        (run / "last").mkdir()
        (run / "config.json").write_text(json.dumps({
            "args": {"traces": None}, "warm_start": {"val_return": r["val_ws"]},
            "selected": {"from": "best val return", "step": r["step"], "val_return": r["val_kept"],
                         "val_episodes": 24}}))
        np.savez(run / "eval" / "evaluations.npz", timesteps=np.array([250, 500]),
                 results=np.array([[r["val_kept"]] * 2, [r["val_kept"] - 1] * 2]))
        torch.save({"w": torch.full((2,), weights[r["seed"]])}, run / "last" / "policy_state.pt")
        seeds.append({"seed": r["seed"], "run": str(run), "score": r["test"], "warm_start_score": r["test_ws"]})
    (out / "main_job_seeds.json").write_text(json.dumps({"seeds": seeds, "best_heuristic": "schedutil",
                                                         "heuristics": {"schedutil": 0.937}, "traces": label}))
    return out


def test_rules_follow_the_recorded_val_returns(tmp_path: Path) -> None:
    a = fake_result(tmp_path, "small", [
        {"seed": 1, "val_ws": 26.9, "val_kept": 27.1, "step": 750, "test": 0.934, "test_ws": 0.948},
        {"seed": 2, "val_ws": 27.1, "val_kept": 27.1, "step": 250, "test": 0.961, "test_ws": 0.959}], {1: 0.0, 2: 1.0})
    b = fake_result(tmp_path, "large", [
        {"seed": 1, "val_ws": 4.93, "val_kept": 4.87, "step": 750, "test": 0.934, "test_ws": 0.948},
        {"seed": 2, "val_ws": 4.70, "val_kept": 5.06, "step": 250, "test": 0.959, "test_ws": 0.963}], {1: 0.0, 2: 1.0})
    out = tmp_path / "sel"
    assert vs.main(["--results", f"6 val={a}", f"18 val={b}", "--out", str(out)]) == 0
    res = json.loads(out.with_suffix(".json").read_text())
    kept = {(t["val"], t["seed"], t["rule"]): (t["kept"], t["test"]) for t in res["table"]}
    assert kept[("6 val", 1, vs.RULES[0])] == ("step 750", 0.934)
    assert kept[("6 val", 1, vs.RULES[1])] == ("step 750", 0.934)  # the checkpoint beat the warm start on val
    assert kept[("6 val", 2, vs.RULES[1])] == ("warm start", 0.959)  # a tie keeps the warm start
    assert kept[("18 val", 1, vs.RULES[1])] == ("warm start", 0.948)
    assert kept[("18 val", 2, vs.RULES[1])] == ("step 250", 0.959)
    assert res["summary"]["18 val / " + vs.RULES[1]]["beats"] == 2
    assert res["summary"]["6 val / " + vs.RULES[0]]["beats"] == 1
    assert out.with_suffix(".png").stat().st_size > 0 and "✓" in out.with_suffix(".md").read_text()
    with pytest.raises(SystemExit):  # nothing is overwritten without --force
        vs.main(["--results", f"6 val={a}", f"18 val={b}", "--out", str(out)])


def test_runs_of_different_trajectories_are_refused(tmp_path: Path) -> None:
    row = {"seed": 1, "val_ws": 1.0, "val_kept": 2.0, "step": 250, "test": 0.9, "test_ws": 0.8}
    a = fake_result(tmp_path, "a", [row], {1: 0.0})
    b = fake_result(tmp_path, "b", [row], {1: 1e-6})
    with pytest.raises(SystemExit, match="did not follow one trajectory"):
        vs.main(["--results", f"a={a}", f"b={b}", "--out", str(tmp_path / "o")])


def test_bad_arguments_name_the_fix(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        vs.main(["--results", str(tmp_path), "--out", str(tmp_path / "o")])
    assert "LABEL=DIR" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="main_job_seeds.py --out"):
        vs.main(["--results", f"x={tmp_path}", "--out", str(tmp_path / "o")])
