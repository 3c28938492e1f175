"""benchmarks/replay_soc.py: the env's battery with the model off against the logs' own SoC."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT / "tests" / "fixtures" / "traces"
sys.path.insert(0, str(ROOT / "benchmarks"))


def test_replay_follows_the_logs_and_reports_each_build(tmp_path):
    import replay_soc

    from traces.build_real import build_real

    shared = tmp_path / "shared"
    shutil.copytree(FIX, shared)
    (shared / "make_fixtures.py").unlink()
    build_real(shared, tmp_path / "real", progress=False, verbose=False)
    out = tmp_path / "replay"
    assert replay_soc.main(["--sets", str(tmp_path / "real"), "--labels", "now", "--out", str(out)]) == 0
    res = json.loads(out.with_suffix(".json").read_text())
    per = res["per_trace"]["now"]
    assert {r["kind"] for r in per.values()} == {"phone", "laptop"}  # the solar nodes have no logged SoC
    assert all(abs(r["end_err_pts"]) < 1.6 for r in per.values())
    assert "| now | laptop |" in out.with_suffix(".md").read_text() and out.with_suffix(".png").is_file()


def test_a_folder_that_is_not_a_trace_set_is_refused_with_the_fix(tmp_path, capsys):
    import replay_soc

    with pytest.raises(SystemExit):
        replay_soc.main(["--sets", str(tmp_path), "--out", str(tmp_path / "x")])
    assert "not a built trace set" in capsys.readouterr().err
