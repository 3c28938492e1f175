"""The battery saver up to the user's deadline (``EnvParams.saver_to_deadline``): the saver's horizon reaches a
deadline ahead (``runtime.rules.saver_horizon_s``), read by the scalar env, the batched env, the masked oracle and the
runtime shield; and the session-end deadlines that ``traces.objectives --session-end`` overlays."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from test_battery_saver import (
    PROFILE,
    batched_masks_match,
    cheap_set_binds,
    oracle_mask_cases_match,
    shield_decides,
)
from test_oracle import rollout, three_config_profile, trace
from test_oracle_masked import masked_brute_force

from agents.oracle import OracleController
from envs.batched import BatchedPowerEnv
from envs.power_env import MicroLLMPowerEnv
from runtime.dynamics import EnvParams
from runtime.manager import ManagerConfig
from runtime.rules import saver_horizon_s


def test_saver_horizon_is_the_longer_of_saver_s_and_a_deadline_ahead():
    assert saver_horizon_s(600.0, 3600.0, True) == 3600.0
    assert saver_horizon_s(600.0, 300.0, True) == 600.0  # the saver's own horizon is longer
    assert saver_horizon_s(600.0, math.nan, True) == 600.0  # no deadline
    assert saver_horizon_s(0.0, -20.0, True) == 0.0  # the deadline has passed
    assert saver_horizon_s(600.0, 3600.0, False) == 600.0  # off
    got = saver_horizon_s(600.0, np.array([3600.0, 300.0, np.nan, -5.0]), True)
    np.testing.assert_array_equal(got, [3600.0, 600.0, 600.0, 600.0])


def deadline_trace(deadline_s, n=90, soc=0.4):
    # 0.35 × 0.5 Wh above the reserve at ~1.2 W of own load + idle: about 525 s
    return trace(n, supply_w=0.0, ambient_c=25.0, demand_tps=20.0, capacity_wh=0.5, soc=soc, base_w=1.0,
                 deadline_s=deadline_s)


@pytest.mark.parametrize("deadline_s,to_deadline,binds", [(590.0, True, True), (590.0, False, False),
                                                          (None, True, False), (100.0, True, False)])
def test_env_masks_the_cheap_set_while_the_battery_would_reach_its_reserve_before_the_deadline(deadline_s,
                                                                                                to_deadline, binds):
    env = MicroLLMPowerEnv(profile=PROFILE, traces=[deadline_trace(deadline_s)], random_start=False,
                           saver_to_deadline=to_deadline)
    assert cheap_set_binds(env) == binds
    if binds:
        # the raised reserve falls as the deadline nears, and past it is the reserve itself
        lows = []
        for _ in range(int(deadline_s // env.step_s) + 1):
            lows.append(env._low_soc())
            env.step(int(np.argmin(env.costs.ept_j)))
        assert lows[0] > lows[len(lows) // 2] > env.reserve_soc == env._low_soc()


def session_end_envs(n_envs=2, **params):
    """The default set with a deadline at every battery device's session end (traces.objectives); ``params``:
    further environment parameters."""
    from traces.objectives import overlay_set
    from traces.store import TraceSet

    ts = overlay_set(TraceSet.load("traces/data/default"), seed=0, session_end_p=1.0)
    kw = dict(profile=PROFILE, traces=list(ts), max_episode_steps=10_000, saver_to_deadline=True, **params)
    return MicroLLMPowerEnv(random_start=False, **kw), BatchedPowerEnv(n_envs=n_envs, **kw)


def test_batched_masks_are_the_scalar_envs_with_the_saver_to_the_deadline():
    scalar, batched = session_end_envs()
    assert any(t.deadline_s == t.deadline_s for t in scalar.traces)
    assert batched_masks_match(scalar, batched, np.random.default_rng(7), range(0, len(scalar.traces), 3),
                               (0.15, 0.3), 120) > 20  # the saver bound somewhere


def test_masked_oracle_is_optimal_under_the_saver_to_the_deadline_and_its_masks_are_the_envs():
    tr = trace(6, supply_w=0.0, ambient_c=25.0, demand_tps=40.0, capacity_wh=0.05, soc=0.3, deadline_s=60.0)
    env = MicroLLMPowerEnv(profile=three_config_profile(), traces=[tr], random_start=False, saver_to_deadline=True)
    best, cut = masked_brute_force(env, 6)
    assert cut > 0, "the saver must bind on this trace for the test to mean anything"
    masked = OracleController(env, n_soc=401, n_temp=49, n_backlog=7, masked=True)
    assert rollout(env, masked, masked=True)[0] == pytest.approx(best, abs=1e-9)
    # the DP's mask cases along random episodes of nearly empty batteries with session-end deadlines
    env, _ = session_end_envs()
    assert oracle_mask_cases_match(env, OracleController(env, masked=True), range(0, len(env.traces), 2), 0.2,
                                   deadline=True) > 20


@pytest.mark.parametrize("own,policy,deadline_left_s,binds", [(None, False, 36000.0, False),
                                                              (True, False, 36000.0, True),
                                                              (None, True, 36000.0, True),
                                                              (True, False, math.nan, False),
                                                              (True, False, 600.0, False)])
def test_shield_holds_the_battery_for_the_deadline_it_is_given(tmp_path: Path, own, policy, deadline_left_s, binds):
    # about 8 h above the reserve: a 10 h deadline binds, a 10 min one or none does not
    mgr = shield_decides(tmp_path, EnvParams(saver_to_deadline=policy),
                         ManagerConfig(saver_to_deadline=own, capacity_wh=15.0), binds, deadline_left_s=deadline_left_s)
    assert mgr.shield.p.saver_to_deadline == bool(own or policy)


def test_session_end_overlay_sets_a_deadline_at_the_end_of_battery_sessions_only(tmp_path: Path):
    from traces.objectives import main, overlay_set
    from traces.store import TraceSet

    ts = TraceSet.load("traces/data/default")
    every = overlay_set(ts, seed=0, session_end_p=1.0)
    for old, new in zip(ts, every):
        if old.meta.device_kind in ("phone", "laptop") and old.meta.deadline_s is None:
            assert new.meta.deadline_s == pytest.approx(float(old.time_s[-1] - old.time_s[0]), abs=0.05)
        else:
            assert new.meta.deadline_s == old.meta.deadline_s
        np.testing.assert_array_equal(new.demand_tps, old.demand_tps)  # nothing else changes
    assert every.info["session_end"]["p"] == 1.0
    half = [t.meta.deadline_s is not None for t in overlay_set(ts, seed=0, session_end_p=0.5)]
    assert half == [t.meta.deadline_s is not None for t in overlay_set(ts, seed=0, session_end_p=0.5)]  # seeded
    assert 0 < sum(half) < sum(t.meta.deadline_s is not None for t in every)
    assert [t.meta.deadline_s for t in overlay_set(ts, seed=0, session_end_p=0.0)] == [t.meta.deadline_s for t in ts]
    # only sessions no longer than max_s are told
    lengths = sorted(float(t.time_s[-1] - t.time_s[0]) for t, n in zip(ts, every)
                     if n.meta.deadline_s is not None and t.meta.deadline_s is None)
    cut = lengths[len(lengths) // 2]
    capped = overlay_set(ts, seed=0, session_end_p=1.0, session_max_s=cut)
    for old, new in zip(ts, capped):
        told = new.meta.deadline_s is not None and old.meta.deadline_s is None
        assert told == (old.meta.device_kind in ("phone", "laptop") and old.meta.deadline_s is None
                        and float(old.time_s[-1] - old.time_s[0]) <= cut)
    assert capped.info["session_end"]["max_s"] == cut
    with pytest.raises(SystemExit) as exc:
        main(["traces/data/default", str(tmp_path / "x"), "--session-end", "1.5"])
    assert exc.value.code == 2
