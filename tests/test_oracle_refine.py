"""benchmarks/oracle_refine.py: episodes a coarse oracle may have mis-planned, re-planned; scores and the deaths
the oracle avoids recounted with the better oracle."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def _ep(ret, death=False):
    return {"return": ret, "death": death}


def _cv(tmp_path):
    """One fold, three episodes: the coarse oracle dies on episode 1, where the policy dies too; on episode 2 a rule
    beats it; episode 0 is plain."""
    pe = {"oracle": [_ep(10.0), _ep(5.0, True), _ep(8.0)], "random": [_ep(0.0), _ep(0.0, True), _ep(0.0)],
          "rl:maskable_ppo:run": [_ep(9.0), _ep(4.0, True), _ep(8.0)], "schedutil": [_ep(8.0), _ep(3.0), _ep(8.5)]}
    pol = {n: {"return": sum(e["return"] for e in eps) / 3, "score": 0.0, "deaths_not_oracle": 0}
           for n, eps in pe.items()}
    rep = {"meta": {"max_steps": 10, "seed": 0, "oracle_grid": [51, 13, 5]}, "per_episode": pe, "policies": pol,
           "episodes": [{"trace": k, "start": 0, "trace_name": f"t{k}"} for k in range(3)]}
    (tmp_path / "eval" / "fold-0").mkdir(parents=True)
    (tmp_path / "eval" / "fold-0" / "report.json").write_text(json.dumps(rep))
    (tmp_path / "args.json").write_text(json.dumps({"k": 1, "seeds": [1]}))
    return rep


def test_suspects_are_the_oracles_deaths_the_policies_deaths_and_where_it_is_beaten(tmp_path):
    import oracle_refine

    assert oracle_refine.suspects(_cv(tmp_path)) == [1, 2]


def test_the_better_oracle_rescores_and_recounts_the_deaths_it_avoids(tmp_path, monkeypatch):
    import oracle_refine

    _cv(tmp_path)
    fine = {0: _ep(10.0), 1: _ep(7.0), 2: _ep(8.7)}  # the fine grid survives episode 1 and beats the rule on 2
    monkeypatch.setattr(oracle_refine, "completed_run", lambda d: Path("run"))
    monkeypatch.setattr(oracle_refine, "load_config", lambda run: {})
    monkeypatch.setattr(oracle_refine, "env_from_config", lambda cfg, **kw: None)
    monkeypatch.setattr(oracle_refine, "make_controller", lambda *a, **kw: None)
    monkeypatch.setattr(oracle_refine, "run_episode", lambda env, c, opt, n, seed: fine[opt["trace"]])
    out = tmp_path / "refined"
    assert oracle_refine.main(["--cv", str(tmp_path), "--grid", "101,13,5", "--out", str(out)]) == 0
    res = json.loads(out.with_suffix(".json").read_text())
    f = res["folds"][0]
    assert [r["episode"] for r in f["replanned"]] == [1, 2] and f["oracle_deaths_coarse"] == 1
    assert f["oracle_deaths"] == 0 and f["oracle_mean"] == pytest.approx((10 + 7 + 8.7) / 3)
    rl = f["policies"]["rl:maskable_ppo:run"]
    assert rl["deaths_not_oracle"] == 1  # its death on episode 1 is now one the oracle avoids
    assert rl["score"] == pytest.approx(21.0 / 25.7)
    assert "| 0 | t1 | 5.0 † | 7.0 | fine |" in out.with_suffix(".md").read_text()


def test_a_folder_without_fold_reports_is_refused(tmp_path, capsys):
    import oracle_refine

    (tmp_path / "args.json").write_text(json.dumps({"k": 2, "seeds": [1]}))
    with pytest.raises(SystemExit):
        oracle_refine.main(["--cv", str(tmp_path), "--out", str(tmp_path / "x")])
    assert "no fold report" in capsys.readouterr().err
