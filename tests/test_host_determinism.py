"""benchmarks/host_determinism.py: its comparisons and its refusals (the trainings themselves are run by hand)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks import host_determinism as hd


def test_state_diff_is_zero_only_for_equal_weights():
    a = {"w": torch.tensor([[1.0, 2.0]]), "b": torch.tensor([0.5])}
    assert hd.state_diff(a, {k: v.clone() for k, v in a.items()}) == 0.0
    b = {"w": torch.tensor([[1.0, 2.0 + 2.0**-18]]), "b": torch.tensor([0.5])}  # exact in float32
    assert hd.state_diff(a, b) == 2.0**-18
    with pytest.raises(ValueError, match="other tensors"):
        hd.state_diff(a, {"w": a["w"]})
    with pytest.raises(ValueError, match="shape"):
        hd.state_diff(a, {"w": torch.zeros(2, 1), "b": a["b"]})


def test_demos_equal_array_by_array_without_the_wall_time(tmp_path):
    obs = np.arange(6, dtype=np.float32).reshape(3, 2)
    np.savez(tmp_path / "a.npz", obs=obs, labels=np.array([1, 2, 3]), seconds=np.array(1.0))
    np.savez(tmp_path / "b.npz", obs=obs, labels=np.array([1, 2, 4]), seconds=np.array(9.0))
    assert hd.demos_equal(tmp_path / "a.npz", tmp_path / "b.npz") == {"labels": False, "obs": True}
    np.savez(tmp_path / "c.npz", obs=obs)
    assert hd.demos_equal(tmp_path / "a.npz", tmp_path / "c.npz") == {"labels": False, "obs": True}


def test_markdown_reports_each_run_against_the_first():
    same = {"demos_equal": {"obs": True}, "warm_start_max_abs_diff": 0.0, "kept_max_abs_diff": 0.0, "same": True}
    other = {"demos_equal": {"obs": True, "labels": False}, "warm_start_max_abs_diff": 1.9e-6,
             "kept_max_abs_diff": 3e-5, "same": False}
    data = {"date": "2026-12-07", "seed": 1, "verdict": "V.", "tiny_args": hd.TINY,
            "host": {"cpu_model": "cpu", "torch_version": "2.13.0", "torch_cpu_capability": "AVX2",
                     "numpy_version": "2", "threads": 1},
            "runs": [{"level": None, "wall_s": 60.0}, {"level": None, "wall_s": 61.0, "vs_first": same},
                     {"level": "default", "wall_s": 70.0, "vs_first": other}]}
    md = hd.markdown(data)
    assert "| 2 | (unset: AVX2) | all equal | 0 | 0 | 61 |" in md
    assert "| 3 | default | differ: labels | 1.9e-06 | 3e-05 | 70 |" in md


def test_refuses_an_unknown_level_and_an_existing_report(tmp_path, capsys):
    with pytest.raises(SystemExit):
        hd.main(["--levels", "avx3", "--out", str(tmp_path / "r")])
    assert "unknown level 'avx3'" in capsys.readouterr().err
    (tmp_path / "r.md").write_text("keep me")
    with pytest.raises(SystemExit):
        hd.main(["--out", str(tmp_path / "r")])
    assert "exists; pass --force" in capsys.readouterr().err and (tmp_path / "r.md").read_text() == "keep me"
