"""benchmarks/pool_demos.py: episodes concatenated in order, one expert and one layout only, bad input refused with
the fix, nothing overwritten unasked."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import pool_demos as P  # noqa: E402

from agents.imitation import Demonstrations  # noqa: E402


def _save(path, n, dim=3, actions=4, label=0, expert="oracle-masked"):
    d = Demonstrations(np.full((n, dim), float(label), np.float32), np.ones((n, actions), bool),
                       np.full(n, label, np.int64), np.arange(n, dtype=float), [n // 2, n])
    d.save(path, expert)
    return str(path)


def test_pooled_episodes_follow_each_other_in_order(tmp_path):
    a, b = _save(tmp_path / "a.npz", 4, label=1), _save(tmp_path / "b.npz", 6, label=2)
    assert P.main([a, b, "--out", str(tmp_path / "p.npz")]) == 0
    d = Demonstrations.load(tmp_path / "p.npz", "oracle-masked")
    assert len(d) == 10 and d.episode_ends == [2, 4, 7, 10]
    assert d.labels.tolist() == [1] * 4 + [2] * 6 and d.rewards[4:].tolist() == list(range(6))


@pytest.mark.parametrize("bad, message", [
    (dict(expert="schedutil"), "demonstrations of 'schedutil', not 'oracle-masked'"),
    (dict(dim=5), "pool demonstrations of one env only"),
])
def test_demonstrations_of_another_expert_or_layout_are_refused(tmp_path, capsys, bad, message):
    a, b = _save(tmp_path / "a.npz", 4), _save(tmp_path / "b.npz", 4, **bad)
    with pytest.raises(SystemExit):
        P.main([a, b, "--out", str(tmp_path / "p.npz")])
    assert message in capsys.readouterr().err and not (tmp_path / "p.npz").exists()


def test_a_missing_file_and_an_existing_out_are_refused(tmp_path, capsys):
    a = _save(tmp_path / "a.npz", 4)
    with pytest.raises(SystemExit):
        P.main([a, str(tmp_path / "none.npz"), "--out", str(tmp_path / "p.npz")])
    assert "none.npz: no such file" in capsys.readouterr().err
    (tmp_path / "p.npz").write_text("keep me")
    with pytest.raises(SystemExit):
        P.main([a, "--out", str(tmp_path / "p.npz")])
    assert "pass --force" in capsys.readouterr().err and (tmp_path / "p.npz").read_text() == "keep me"


def test_a_file_that_is_not_demonstrations_is_named(tmp_path, capsys):
    np.savez(tmp_path / "stats.npz", mean=np.zeros(3))
    with pytest.raises(SystemExit):
        P.main([str(tmp_path / "stats.npz"), "--out", str(tmp_path / "p.npz")])
    assert "stats.npz: not a demonstrations file" in capsys.readouterr().err
