"""The battery saver counted from below the reserve (``EnvParams.saver_floor_frac``): 1 holds the reserve for the
saver's horizon, 0 only keeps the device alive that long (``runtime.rules.saver_soc``), read by the scalar env, the
batched env, the masked oracle and the runtime shield; and deadlines at the first plug-in
(``traces.objectives --to-charger``)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from test_battery_saver import (
    PROFILE,
    batched_masks_match,
    cheap_set_binds,
    low_trace,
    oracle_mask_cases_match,
    shield_decides,
)
from test_oracle import rollout, three_config_profile, trace
from test_oracle_masked import masked_brute_force
from test_saver_deadline import session_end_envs

from agents.oracle import OracleController
from envs.batched import BatchedPowerEnv
from envs.power_env import MicroLLMPowerEnv
from runtime.dynamics import EnvParams
from runtime.manager import ManagerConfig
from runtime.rules import saver_soc


def test_saver_soc_counts_from_the_floor_and_never_below_the_reserve():
    # 1.5 W for 600 s is 900 J of 9000 J: 0.1 of the charge
    assert saver_soc(0.05, 600.0, 9000.0, 1.5, 10.0, 0.05, 0.5, 1.0) == pytest.approx(0.15)
    assert saver_soc(0.05, 600.0, 9000.0, 1.5, 10.0, 0.05, 0.5, 0.0) == pytest.approx(0.10)
    assert saver_soc(0.05, 600.0, 9000.0, 1.5, 10.0, 0.05, 0.5, 0.5) == pytest.approx(0.125)
    assert saver_soc(0.05, 60.0, 9000.0, 1.5, 10.0, 0.05, 0.5, 0.0) == 0.05  # 0.01 from empty: the reserve holds
    assert saver_soc(0.05, 0.0, 9000.0, 1.5, 10.0, 0.05, 0.5, 0.0) == 0.05  # off
    # the default is the reserve, bit for bit
    assert saver_soc(0.05, 600.0, 9000.0, 1.5, 10.0, 0.05, 0.5) == saver_soc(0.05, 600.0, 9000.0, 1.5, 10.0, 0.05,
                                                                             0.5, 1.0)
    horizons = np.array([600.0, 60.0, 600.0, 0.0])
    got = saver_soc(0.05, horizons, np.full(4, 9000.0), np.full(4, 1.5), np.full(4, 10.0), 0.05,
                    np.array([0.5, 0.5, 5.0, 0.5]), 0.0)
    want = [saver_soc(0.05, h, 9000.0, 1.5, 10.0, 0.05, s, 0.0) for h, s in zip(horizons, (0.5, 0.5, 5.0, 0.5))]
    np.testing.assert_allclose(got, want)


def test_env_params_refuse_a_floor_outside_zero_to_one():
    for bad in (-0.1, 1.5, math.nan):
        with pytest.raises(ValueError, match="saver_floor_frac"):
            EnvParams(saver_floor_frac=bad)


@pytest.mark.parametrize("floor_frac,binds", [(1.0, True), (0.0, False)])
def test_env_saver_from_empty_lets_the_model_run_where_only_the_reserve_was_at_stake(floor_frac, binds):
    # after one step ~0.39 of 0.5 Wh: at the safe configuration's ~1.6 W, 400 s take 0.36 of the charge, so the
    # battery would reach its reserve within them (0.05 + 0.36 > 0.39) but not empty (0.36 < 0.39)
    env = MicroLLMPowerEnv(profile=PROFILE, traces=[low_trace()], random_start=False, saver_s=400.0,
                           saver_floor_frac=floor_frac)
    assert cheap_set_binds(env) == binds


def test_batched_masks_are_the_scalar_envs_with_the_saver_from_empty():
    kw = dict(profile=PROFILE, split="train", max_episode_steps=10_000, saver_s=1800.0, saver_floor_frac=0.0)
    scalar = MicroLLMPowerEnv(random_start=False, **kw)
    batched = BatchedPowerEnv(n_envs=2, **kw)
    assert batched_masks_match(scalar, batched, np.random.default_rng(5), range(0, len(scalar.traces), 2),
                               (0.1, 0.2), 150) > 20  # the rules bound somewhere
    # and with the horizon to a session-end deadline
    scalar, batched = session_end_envs(saver_floor_frac=0.0)
    assert scalar.params.saver_floor_frac == batched.params.saver_floor_frac == 0.0
    assert batched_masks_match(scalar, batched, np.random.default_rng(8), range(0, len(scalar.traces), 3),
                               (0.15, 0.3), 120) > 20


def test_masked_oracle_is_optimal_under_the_saver_from_empty_and_its_masks_are_the_envs():
    tr = trace(6, supply_w=0.0, ambient_c=25.0, demand_tps=40.0, capacity_wh=0.05, soc=0.3, deadline_s=60.0)
    env = MicroLLMPowerEnv(profile=three_config_profile(), traces=[tr], random_start=False, saver_to_deadline=True,
                           saver_floor_frac=0.0)
    best, cut = masked_brute_force(env, 6)
    assert cut > 0, "the saver must bind on this trace for the test to mean anything"
    masked = OracleController(env, n_soc=401, n_temp=49, n_backlog=7, masked=True)
    assert rollout(env, masked, masked=True)[0] == pytest.approx(best, abs=1e-9)
    # from empty the saver binds later than from the reserve, so the oracle earns at least as much
    held = MicroLLMPowerEnv(profile=three_config_profile(), traces=[tr], random_start=False, saver_to_deadline=True)
    assert best >= masked_brute_force(held, 6)[0] - 1e-9
    env = MicroLLMPowerEnv(profile=PROFILE, split="train", random_start=False, max_episode_steps=10_000,
                           saver_s=1800.0, saver_floor_frac=0.0)
    assert oracle_mask_cases_match(env, OracleController(env, masked=True), range(0, len(env.traces), 2), 0.15) > 20


@pytest.mark.parametrize("own,policy,binds", [(None, 1.0, True), (None, 0.0, False), (0.0, 1.0, False),
                                              (1.0, 0.0, True)])
def test_shield_counts_from_the_users_floor_else_the_policys(tmp_path: Path, own, policy, binds):
    # 0.55 x 15 Wh above the reserve, 0.6 x 15 Wh above empty; the safe configuration's ~1.1 W for 8 h take 0.59 of
    # the charge: a deadline 8 h away binds from the reserve only
    mgr = shield_decides(tmp_path, EnvParams(saver_to_deadline=True, saver_floor_frac=policy),
                         ManagerConfig(saver_floor_frac=own, capacity_wh=15.0), binds, deadline_left_s=8.0 * 3600.0)
    assert mgr.shield.p.saver_floor_frac == (policy if own is None else own)


def plug_trace(n=40, plug_row=None):
    tr = trace(n, supply_w=0.0, ambient_c=25.0, demand_tps=5.0, capacity_wh=5.0, soc=0.5)
    if plug_row is None:
        return tr
    plugged = np.zeros(n)
    plugged[plug_row:] = 1.0
    return tr.replace(plugged=plugged, supply_w=5.0 * plugged)


def test_session_end_to_charger_puts_the_deadline_at_the_first_plug_in():
    from traces.objectives import first_plug_in_s, session_end

    with_charger, without = plug_trace(plug_row=12), plug_trace()
    assert first_plug_in_s(with_charger) == pytest.approx(12 * 10.0)
    assert first_plug_in_s(without) is None
    told = session_end(with_charger, 1.0, to_charger=True)
    assert told.meta.deadline_s == pytest.approx(120.0) and told.meta.extra["deadline_at"] == "charger"
    assert session_end(with_charger, 1.0).meta.deadline_s == pytest.approx(390.0)  # the session's end
    assert session_end(without, 1.0, to_charger=True).meta.extra["deadline_at"] == "end"
    # the cap reads the deadline: a charger within it is told where the session's end is not
    assert session_end(with_charger, 1.0, max_s=200.0).meta.deadline_s is None
    assert session_end(with_charger, 1.0, max_s=200.0, to_charger=True).meta.deadline_s == pytest.approx(120.0)
    # a trace that starts plugged: its first row is not a plug-in
    plugged_first = with_charger.replace(plugged=np.ones(40))
    assert first_plug_in_s(plugged_first) is None


def test_objectives_cli_refuses_to_charger_without_session_end(tmp_path: Path, capsys):
    from traces.objectives import main

    with pytest.raises(SystemExit) as exc:
        main(["traces/data/default", str(tmp_path / "x"), "--to-charger"])
    assert exc.value.code == 2
    assert "--to-charger applies to --session-end" in capsys.readouterr().err
    assert main(["traces/data/default", str(tmp_path / "y"), "--session-end", "1", "--to-charger"]) == 0
    assert "at the first plug-in" in capsys.readouterr().out


def test_deploy_and_evaluate_refuse_a_floor_outside_zero_to_one():
    import deploy
    from agents.evaluate import main as evaluate

    for run in (lambda: deploy.main(["run", "--saver-floor", "2"]),
                lambda: evaluate(["--saver-floor", "-0.5", "--out", "/nonexistent"])):
        with pytest.raises(SystemExit) as exc:
            run()
        assert exc.value.code == 2
