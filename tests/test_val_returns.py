"""benchmarks/val_returns.py: recipes compared on val by their mean return per episode, seeds averaged, each against
the first group, from reports of benchmarks/objectives.py (runs-only ones included)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import val_returns as VR  # noqa: E402


def _report(traces: str, runs: list[str], returns: dict[str, list[float]]) -> dict:
    """A runs-only val report: ``returns[objective]`` the runs' mean returns, in the order of ``runs``."""
    objs = {o: {"episodes": 8, "controllers": {f"rl:{i}": {"return": r, "score": float("nan")}
                                                for i, r in enumerate(rs)}}
            for o, rs in returns.items()}
    return {"runs": runs, "split": "val", "sets": [{"traces": traces, "split": "val", "objectives": objs}]}


def test_seeds_averaged_and_each_recipe_compared_with_the_first(tmp_path, capsys):
    a = _report("cv/fold-0", ["r/ctl/s1", "r/ctl/s2", "r/new/s1"],
                {"max-quality": [10.0, 12.0, 12.5], "min-energy": [-5.0, -7.0, -5.5]})
    b = _report("cv/fold-1", ["r/new/s1"], {"max-quality": [20.0]})  # a second report for fold 1: new only
    c = _report("cv/fold-1", ["r/ctl/s1"], {"max-quality": [21.0]})
    paths = []
    for name, rep in (("a", a), ("b", b), ("c", c)):
        p = tmp_path / f"{name}.json"
        p.write_text(json.dumps(rep))
        paths.append(str(p))
    out = tmp_path / "val" / "summary"
    args = ["--reports", *paths, "--group", "control=/ctl/", "--group", "change=/new/", "--out", str(out)]
    assert VR.main(args) == 0
    data = json.loads(out.with_suffix(".json").read_text())
    rows = {(r["traces"], r["objective"]): r["returns"] for r in data["rows"]}
    assert rows[("cv/fold-0", "max-quality")] == {"control": 11.0, "change": 12.5}  # two seeds averaged
    assert rows[("cv/fold-1", "max-quality")] == {"change": 20.0, "control": 21.0}  # two reports of one fold joined
    v = data["against_baseline"]["change"]
    assert v["sum"] == pytest.approx(1.5 + 0.5 - 1.0) and v["ahead"] == 2 and v["cells"] == 3
    assert "change: +1.00 return per episode, ahead in 2 of 3" in out.with_suffix(".md").read_text()
    before = out.with_suffix(".md").read_text()
    with pytest.raises(SystemExit):
        VR.main(args)  # an existing report is not replaced without --force
    assert out.with_suffix(".md").read_text() == before
    with pytest.raises(SystemExit):
        VR.main(["--reports", paths[0], "--group", "control=/nope/", "--out", str(tmp_path / "x")])
    assert "contains none of the --group texts" in capsys.readouterr().err
