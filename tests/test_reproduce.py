"""Committed results reproduce: the baselines' and the oracle's returns on the default test split
equal those in the committed report (reports/default-baselines), episode by episode."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agents.evaluate import evaluate_controllers
from agents.registry import BASELINES, ORACLE, make_controller
from envs.power_env import MicroLLMPowerEnv

REPORT = Path(__file__).resolve().parent.parent / "reports" / "default-baselines" / "report.json"


def _returns(names, episodes=None):
    ctrls = {n: (lambda env, n=n: make_controller(n, env, **({"horizon_steps": 720} if n == ORACLE else {})))
             for n in names}
    res = evaluate_controllers(lambda: MicroLLMPowerEnv(split="test", random_start=False), ctrls, episodes=episodes,
                               max_steps=720, seed=0, progress=False)
    return {n: [e["return"] for e in res["per_episode"][n]] for n in names}


def _committed(name):
    return [e["return"] for e in json.loads(REPORT.read_text())["per_episode"][name]]


def test_every_baseline_reproduces_the_committed_report():
    got = _returns(BASELINES)
    for name in BASELINES:
        assert got[name] == pytest.approx(_committed(name), rel=0, abs=1e-9), name


@pytest.mark.slow
def test_the_oracle_reproduces_the_committed_report():
    # two of the six episodes: planning all six takes ~2 minutes on 2 cores
    episodes = [{"trace": k, "start": 0} for k in (0, 3)]
    got = _returns([ORACLE], episodes)[ORACLE]
    want = _committed(ORACLE)
    assert got == pytest.approx([want[0], want[3]], rel=0, abs=1e-9)
