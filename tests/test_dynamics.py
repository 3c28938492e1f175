"""The dynamics core: hand-computed physics, one function for floats and arrays, the public batch
API the oracle and the MPC use, and the environment parameters."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest

from runtime.dynamics import (
    DEVICES,
    SCALAR,
    VECTOR,
    Dynamics,
    EnvParams,
    Inputs,
    RewardWeights,
    battery_step,
    plant_of,
    scalar_step_core,
    step_core,
    thermal_step,
)

REPO = Path(__file__).resolve().parent.parent


def test_constant_draw_drains_the_battery_exactly():
    # 2 W for 1 h from a 10 Wh battery at full charge: 2 Wh used -> SoC 0.8
    soc, dead = battery_step(1.0, 0.0, 2.0, 3600.0, 10 * 3600.0, 0.9)
    assert soc == pytest.approx(0.8, abs=1e-12) and not dead
    # a 3 W surplus for 1 h charges 0.9 x 3 Wh of 10 Wh
    soc, _ = battery_step(0.5, 5.0, 2.0, 3600.0, 10 * 3600.0, 0.9)
    assert soc == pytest.approx(0.5 + 0.27, abs=1e-12)
    soc, dead = battery_step(0.01, 0.0, 10.0, 3600.0, 10 * 3600.0, 0.9)
    assert (soc, dead) == (0.0, True)


def test_thermal_step_is_the_exact_first_order_solution():
    # from 20 °C at 3 W, R_th 5 °C/W: T_inf = 35; after one time constant 35 − 15/e
    assert thermal_step(20.0, 20.0, 3.0, 240.0, 5.0, 240.0) == pytest.approx(35.0 - 15.0 / math.e, abs=1e-12)
    # two half steps equal one whole step (exact for constant power)
    half = thermal_step(thermal_step(20.0, 20.0, 3.0, 60.0, 5.0, 240.0), 20.0, 3.0, 60.0, 5.0, 240.0)
    assert half == pytest.approx(thermal_step(20.0, 20.0, 3.0, 120.0, 5.0, 240.0), abs=1e-12)


def _random_inputs(rng, n):
    d = DEVICES["phone"]
    return dict(
        tps=rng.uniform(50, 500, n), ept_j=rng.uniform(1e-3, 3e-2, n), dec_ms=rng.uniform(1, 20, n),
        quality=rng.uniform(0, 1, n), off=rng.choice([0.0, 1.0], n), up_bits=rng.uniform(8, 8000, n),
        server_ms=rng.uniform(0.5, 5, n),
        # placement: half the rows two segments (seg2 and transfer inside dec_ms), own trip points and heat
        seg2_ms=np.where(rng.uniform(size=n) < 0.5, 0.0, rng.uniform(0, 0.5, n)),
        xfer_ms=np.where(rng.uniform(size=n) < 0.5, 0.0, rng.uniform(0, 0.3, n)),
        trip1_c=rng.choice([0.0, -2.0, 2.0], n), trip2_c=rng.choice([0.0, -2.0, 2.0], n),
        heat_frac=rng.choice([1.0, 0.6], n), sw_s=rng.choice([0.0, 0.01], n), sw_j=rng.uniform(0, 0.05, n),
        soc=rng.uniform(0, 1, n), temp_c=rng.uniform(20, 55, n), backlog=rng.uniform(0, 6000, n),
        budget_left_j=rng.uniform(-3000, 500, n), demand_tps=rng.uniform(0, 300, n), supply_w=rng.uniform(0, 8, n),
        ambient_c=rng.uniform(10, 40, n), base_w=rng.uniform(0, 2, n),
        budget_w=np.where(rng.uniform(size=n) < 0.5, np.nan, rng.uniform(0.1, 3, n)),
        bw_mbps=np.where(rng.uniform(size=n) < 0.2, 0.0, rng.uniform(0.1, 100, n)),
        # the objective: a third each max-quality, min-energy (floor 0.3-0.6), last-until (deadline ahead or past)
        w_q=np.repeat([1.0, 0.0, 1.0], -(-n // 3))[:n], w_e=np.repeat([0.0, 1.0, 0.0], -(-n // 3))[:n],
        q_min=np.repeat([np.nan, 0.45, np.nan], -(-n // 3))[:n] + rng.uniform(-0.15, 0.15, n),
        until=np.repeat([0.0, 0.0, 1.0], -(-n // 3))[:n] * (rng.uniform(size=n) < 0.7),
        capacity_j=rng.uniform(1e3, 6e4, n), r_th=np.full(n, d.r_th_c_per_w), tau_s=np.full(n, d.tau_s),
        t_max=np.full(n, d.t_max_c), thr_k=np.full(n, d.throttle_per_c), thr_min=np.full(n, d.throttle_min),
        eta=np.full(n, d.charge_efficiency), idle_w=np.full(n, d.idle_power_w))


def test_one_function_for_floats_and_arrays_bit_for_bit():
    rng = np.random.default_rng(0)
    p = EnvParams()
    x = _random_inputs(rng, 500)
    vec = step_core(VECTOR, p.step_s, p, *x.values())
    for j in range(500):
        args = [float(v[j]) for v in x.values()]
        sc = step_core(SCALAR, p.step_s, p, *args)
        assert scalar_step_core(SCALAR, p.step_s, p, *args) == sc  # the compiled float twin: identical
        for name, a, b in zip(vec._fields, vec, sc):
            # same lines, same operations; only numpy's vectorised exp may differ from libm's in the last bit
            assert a[j] == pytest.approx(b, rel=1e-13, abs=1e-13), (name, j)
    assert vec.cost.max() >= 2  # several violations in one step add up (floats, not a logical or)


def test_public_batch_api_advances_state():
    class Tables:  # two configurations: a fast expensive one and a slow cheap one
        tps, ept_j, decode_ms, quality = (np.array([200.0, 50.0]), np.array([0.02, 0.005]), np.array([5.0, 20.0]),
                                          np.array([0.6, 0.3]))
        switch_s = np.array([[0.0, 0.01], [0.01, 0.0]])
        switch_j = switch_s * 4.0
        offload = up_bits = server_ms = np.zeros(2)

    dyn = Dynamics(Tables, EnvParams(step_s=10.0))
    s = dyn.state(2, soc=0.5, temp_c=25.0, config=0)
    plant = plant_of(10 * 3600.0, DEVICES["phone"])
    x = Inputs(demand_tps=100.0, supply_w=0.0, ambient_c=25.0, base_w=0.0, budget_w=np.nan)
    s2, r = dyn.step(s, np.array([0, 1]), x, plant)
    # fast: serves all 1000 requested tokens at 0.02 J; slow: 50 tok/s x (10 − 0.01 s) and queues the rest
    assert r.served[0] == pytest.approx(1000.0) and r.served[1] == pytest.approx(50 * 9.99)
    assert s2.backlog[1] == pytest.approx(1000 - 50 * 9.99)
    e0 = 1000 * 0.02 + 0.2 * 10  # tokens + idle
    assert r.energy_j[0] == pytest.approx(e0) and s2.soc[0] == pytest.approx(0.5 - e0 / (10 * 3600.0))
    assert list(s2.config) == [0, 1] and s.soc[0] == 0.5  # state in, state out: the input is untouched


def test_env_params_validate_and_round_trip():
    p = EnvParams(step_s=5.0, lookahead=2, weights=RewardWeights(death=10.0))
    assert EnvParams.from_dict(p.to_dict()) == p
    with pytest.raises(ValueError, match="reserve_soc must be in"):
        EnvParams(reserve_soc=1.5)
    with pytest.raises(ValueError, match="unknown environment parameters \\['stepsize'\\]"):
        EnvParams.from_dict({"stepsize": 3})
    with pytest.raises(ValueError, match="weights.death must be"):
        EnvParams(weights=RewardWeights(death=float("nan")))


def test_controllers_use_only_public_env_state():
    """The oracle and the MPC plan through runtime.dynamics and env.sim_state(), never through another
    object's private fields (the old code wrote the batched env's private arrays)."""
    for path in ("agents/oracle.py", "agents/mpc.py", "agents/baselines.py"):
        tree = ast.parse((REPO / path).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                owner = node.value
                assert isinstance(owner, ast.Name) and owner.id == "self", \
                    f"{path}:{node.lineno} reads private {ast.unparse(node)}"


def test_the_float_twin_calls_no_operations_object():
    """The float twin is the same source with every ``o.where / o.minimum / o.maximum`` turned into
    ``if``/``min``/``max`` and the battery and thermal helpers inlined (their operations too)."""
    names = set(scalar_step_core.__code__.co_names)
    assert not names & {"where", "minimum", "maximum", "battery_update", "thermal_update"}, names
    assert {"min", "max", "exp"} <= names


def test_split_configuration_pays_link_server_and_radio():
    """A split configuration: per-token time = device share + uplink bits / bandwidth + server + RTT; the
    radio costs bits x energy per bit both ways plus the connected-state power; a link down serves nothing."""
    class Tables:  # 0: local; 1: split, device share 1 ms and 1 mJ/token, 4096 bits up, server 2 ms
        tps, ept_j, decode_ms, quality = (np.array([100.0, 1000.0]), np.array([0.02, 0.001]), np.array([10.0, 1.0]),
                                          np.array([0.5, 0.6]))
        offload, up_bits, server_ms = np.array([0.0, 1.0]), np.array([0.0, 4096.0]), np.array([0.0, 2.0])
        switch_s = switch_j = np.zeros((2, 2))

    p = EnvParams(step_s=10.0)
    lk = p.link
    dyn = Dynamics(Tables, p)
    plant = plant_of(10 * 3600.0, DEVICES["phone"])
    s = dyn.state(2, soc=0.5, temp_c=25.0, config=0)
    x = Inputs(demand_tps=5.0, supply_w=0.0, ambient_c=25.0, base_w=0.0, budget_w=np.nan, bandwidth_mbps=8.0)
    _, r = dyn.step(s, np.array([0, 1]), x, plant)
    tok_ms = 1.0 + 4096 / 8e3 + 2.0 + lk.rtt_ms  # 8 Mbit/s = 8000 bits per ms
    assert r.latency_ms[1] == pytest.approx(tok_ms)  # no backlog: 1000/tok_ms tok/s > 5 tok/s
    assert r.served[1] == pytest.approx(50.0)
    radio = 50 * (4096 * lk.uplink_nj_per_bit + lk.reply_bits * lk.downlink_nj_per_bit) * 1e-9 + lk.connected_w * 10
    assert r.radio_j[1] == pytest.approx(radio) and r.radio_j[0] == 0.0
    assert r.energy_j[1] == pytest.approx(50 * 0.001 + radio + 0.2 * 10)
    # the link goes down: the split configuration serves (almost) nothing, its latency breaks the SLO
    _, r = dyn.step(s, np.array([0, 1]), x._replace(bandwidth_mbps=0.0), plant)
    assert r.served[1] < 1e-4 and r.slo_bad[1] and r.served[0] == pytest.approx(50.0)
    # a fast link and a demand beyond one round trip per token: the split rate is 1000 / tok_ms
    x = x._replace(demand_tps=100.0, bandwidth_mbps=100.0)
    _, r = dyn.step(s, np.array([0, 1]), x, plant)
    assert r.served[1] == pytest.approx(10 * 1000.0 / (1.0 + 4096 / 1e5 + 2.0 + lk.rtt_ms))
