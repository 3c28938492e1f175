"""Trace replay: the restated battery/thermal equations match MicroLLMPowerEnv step by step."""

from __future__ import annotations

import math
from dataclasses import asdict
from types import SimpleNamespace

import numpy as np
import pytest

import traces
from envs.power_env import MicroLLMPowerEnv
from model.profile_schema import example_profile
from runtime.dynamics import DEVICES, DeviceConstants, battery_step, thermal_step
from runtime.replay import ReplaySensors

PROFILE = example_profile(12)


@pytest.mark.parametrize("trace_index", [0, 3, 7])
def test_replay_matches_env_dynamics(trace_index: int) -> None:
    env = MicroLLMPowerEnv(profile=PROFILE, split="train", random_start=False)
    k = trace_index % len(env.traces)
    ta = env.traces[k]
    obs, info = env.reset(seed=0, options={"trace": k, "start": 5})
    # the env's resampled trace, as a replay source
    tr = SimpleNamespace(name=ta.name, time_s=np.arange(ta.n) * env.step_s, supply_w=ta.supply_w,
                         plugged=ta.plugged, ambient_c=ta.ambient_c, demand_tps=ta.demand_tps,
                         bandwidth_mbps=ta.bandwidth_mbps, budget_w=ta.budget_w, base_load_w=ta.base_w,
                         meta=SimpleNamespace(capacity_wh=ta.capacity_j / 3600.0, initial_soc=ta.initial_soc,
                                              deadline_s=None))
    dev = DeviceConstants.from_dict(asdict(ta.device))
    rp = ReplaySensors(tr, dev, clock=None, start_s=5 * env.step_s, soc0=info["soc"],
                        temp0_c=info["temp_c"])
    r = rp.read()
    assert r.soc_frac == info["soc"] and r.temp_c == pytest.approx(info["temp_c"], abs=1e-12)
    rng = np.random.default_rng(trace_index)
    for step in range(300):
        a = int(rng.integers(env.action_space.n))
        i = env._i
        _, _, term, trunc, info = env.step(a)
        # the model's share of the env's power this step
        rp.set_model_power_w(info["step"].power_w - dev.idle_power_w - ta.base_w[i])
        rp.advance_to((i + 1) * env.step_s)
        r = rp.read()
        assert r.soc_frac == pytest.approx(info["step"].soc, abs=1e-9), step
        assert r.temp_c == pytest.approx(info["step"].temp_c, abs=1e-9), step
        assert r.power_w == pytest.approx(info["step"].power_w, rel=1e-9)
        if term or trunc:
            break


def test_step_functions_match_closed_forms() -> None:
    # constant power for a long time reaches the steady state T_amb + R_th P
    assert thermal_step(20.0, 25.0, 2.0, 1e6, 5.0, 240.0) == pytest.approx(35.0)
    assert thermal_step(40.0, 25.0, 0.0, 240.0, 5.0, 240.0) == pytest.approx(25.0 + 15.0 * math.exp(-1))
    soc, dead = battery_step(0.5, 0.0, 3.6, 1000.0, 36000.0, 0.9)
    assert soc == pytest.approx(0.4) and not dead
    soc, dead = battery_step(0.5, 13.6, 3.6, 1000.0, 36000.0, 0.9)  # +10 W surplus × 0.9
    assert soc == pytest.approx(0.75)
    assert battery_step(0.01, 0.0, 10.0, 1000.0, 3600.0, 0.9) == (0.0, True)


def test_replay_of_a_trace_file_in_virtual_time() -> None:
    path = traces.default_trace_set_dir() / "phone-00.csv"
    trace = traces.load_trace(path)
    dev = DeviceConstants.from_dict(asdict(DEVICES[trace.meta.device_kind]))
    wall = [100.0]
    rp = ReplaySensors(trace, dev, speed=60.0, clock=lambda: wall[0])
    assert rp.now() == 0.0
    soc0 = rp.soc
    rp.set_model_power_w(3.0)
    wall[0] += 10.0  # 10 wall seconds = 600 virtual seconds at 60x
    assert rp.read().t_s == 0.0  # reading never moves the clock ...
    assert rp.now() == pytest.approx(600.0)  # ... now() does
    r = rp.read()
    assert r.t_s == pytest.approx(600.0)
    assert r.soc_frac < soc0  # unplugged phone draining ~3.5 W
    assert 0 < r.temp_c < 150 and r.power_w > 3.0
    w = rp.workload()
    assert set(w) == {"demand_tps", "budget_w", "deadline_left_s", "horizon_left_s", "base_w", "capacity_j"}
    assert w["horizon_left_s"] == pytest.approx(rp.end_s - 600.0)
    wall[0] += 1e6
    rp.now()
    assert rp.finished
    with pytest.raises(ValueError):
        ReplaySensors(trace, dev, speed=0.0)
