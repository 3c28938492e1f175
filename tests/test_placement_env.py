"""Device placement in the simulator: the knob, the profile builder, the physics, masks, outages, oracle."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from model.placement_profile import build, placement_values
from model.profile_schema import Profile, load_profile, validate_profile
from runtime.configspace import model_space, place_space
from runtime.dynamics import (
    SCALAR,
    VECTOR,
    Availability,
    EnvParams,
    scalar_step_core,
    step_core,
)
from runtime.hardware import load_hardware
from runtime.placement import PlacementError, outages, parse, role_mask, roles_of, segments

REF = "profiles/reference-cpu.json"


@pytest.fixture(scope="module")
def phone_profile(tmp_path_factory) -> str:
    """A small placement profile: the phone's CPU clusters and NPU, single placements and the half-depth cuts."""
    prof = build(load_hardware("phone-sd8gen2"), load_profile(REF), roles=["cpu", "lcpu", "npu"], cuts="half")
    path = tmp_path_factory.mktemp("place") / "phone+place.json"
    path.write_text(json.dumps(prof))
    return str(path)


# ---- the knob and its grammar ----------------------------------------------------------------------

def test_place_space_counts_rules_and_keeps_old_names():
    sp = place_space()
    # 4 depths x 4 heads x 3 bits = 48 base; 5 singles + 12 ordered pairs x 5 cut points = 65 values;
    # place_within_depth removes the cuts at or beyond a shallower depth
    assert sp.n_product == 48 * 65
    assert len(sp) == 48 * 5 + 12 * 4 * 3 * (5 + 3 + 2 + 1)
    assert sp.removed_by_rule == {"place_within_depth": sp.n_product - len(sp)}
    # the default placement adds no name fragment: every configuration measured before keeps its name
    assert set(model_space().names) <= set(sp.names)
    assert "L6-H100-int8-npu" in sp.names and "L4-H050-int4-cpu:2:npu" in sp.names
    assert "L2-H100-int8-cpu:2:npu" not in sp.names  # k must be < depth


@pytest.mark.parametrize("bad", ["tpu", "cpu:0:npu", "cpu:x:npu", "npu:2:npu", "cpu.t1:2:npu", "cpu:2", "cpu:02:npu"])
def test_placement_grammar_refuses_bad_values_with_the_fix(bad):
    with pytest.raises(PlacementError, match="placement"):
        parse(bad)


def test_segments_and_role_masks():
    assert segments("cpu:2:npu", 6) == [("cpu", None, 2), ("npu", None, 4)]
    assert segments("cpu.t1", 4) == [("cpu", 1, 4)]
    assert roles_of("gpu:1:lcpu") == ("gpu", "lcpu")
    assert role_mask("cpu") == 1 and role_mask("npu:3:cpu") == 0b1001
    with pytest.raises(PlacementError, match="1 <= k < depth"):
        segments("cpu:4:npu", 4)


# ---- the profile builder -----------------------------------------------------------------------

def test_placement_profile_records_follow_the_hardware(phone_profile):
    p = load_profile(phone_profile)  # validates
    recs = {r["name"]: r for r in p.configs}
    # the NPU runs no fp32 weights: no fp32 record touches it
    assert not any(r["bits"] == 32 and "npu" in r["place"] for r in recs.values())
    assert p.data["placement"]["skipped"]["npu runs no 32-bit weights"] > 0
    # every record's latency and energy are its segments plus the interconnect
    for r in recs.values():
        segs = r["segments"]
        assert r["decode_ms_per_token_median"] == pytest.approx(sum(s["decode_ms"] for s in segs)
                                                                + r["xfer_ms_per_token"])
        assert r["energy_j_per_token"] == pytest.approx(sum(s["energy_j"] for s in segs) + r["xfer_j_per_token"])
        assert sum(s["blocks"] for s in segs) == r["depth"]
        assert (r["xfer_ms_per_token"] > 0) == (len(segs) == 2)
    # one thread of a five-core cluster is slower than the cluster, and the quality is the base's
    a, b = recs["L6-H100-int8"], recs["L6-H100-int8-cpu.t1"]
    assert b["decode_ms_per_token_median"] > a["decode_ms_per_token_median"]
    assert a["mc_accuracy"] == b["mc_accuracy"] == recs["L6-H100-int8-npu"]["mc_accuracy"]
    assert p.data["device"]["kind"] == "projected" and p.data["energy_source"] == "modelled"


def test_calibration_against_measured_cpu_records_reduces_the_error(tmp_path):
    base = load_profile(REF)
    # a "measured" one-thread profile 3x slower than the base: kappa must absorb it
    meas = json.loads(json.dumps(base.data))
    for r in meas["configs"]:
        for k in ("decode_ms_per_token_median", "decode_ms_per_token_p90"):
            r[k] *= 3.0
    prof = build(load_hardware("phone-sd8gen2"), base, {"cpu.t1": Profile(meas)}, roles=["cpu"], cuts="none")
    cal = prof["placement"]["calibration"]["cpu.t1"]
    assert cal["n"] == 48 and cal["calibrated_median_error"] < cal["roofline_median_error"]
    assert set(prof["placement"]["calibration"]["kappa_by_bits"]) == {"4", "8", "32"}
    # on hardware other than this host the measurement only calibrates: nothing is taken as measured
    assert prof["placement"]["records_measured"] == 0


def test_placement_values_counts():
    hw = load_hardware("phone-sd8gen2")
    assert placement_values(hw, 6, cuts="none") == ["cpu", "cpu.t1", "lcpu", "gpu", "npu"]
    assert len(placement_values(hw, 6, cuts="all")) == 5 + 12 * 5
    assert len(placement_values(hw, 6, roles=["cpu", "gpu"], cuts="half")) == 3 + 2


def test_a_segment_record_that_disagrees_with_its_place_is_refused(phone_profile):
    data = json.loads(open(phone_profile).read())
    r = next(r for r in data["configs"] if ":" in r["place"])
    r["segments"][0]["blocks"] += 1
    with pytest.raises(ValueError, match="segments\\[0\\]"):
        validate_profile(data, "x.json")


# ---- the physics -------------------------------------------------------------------------------

def _step(o, **kw):
    p = EnvParams()
    x = dict(tps=100.0, ept_j=0.01, dec_ms=10.0, quality=0.8, off=0.0, up_bits=0.0, server_ms=0.0, seg2_ms=0.0,
             xfer_ms=0.0, trip1_c=0.0, trip2_c=0.0, heat_frac=1.0, sw_s=0.0, sw_j=0.0, soc=0.8, temp_c=30.0,
             backlog=0.0, budget_left_j=0.0, demand_tps=50.0, supply_w=0.0, ambient_c=25.0, base_w=0.5,
             budget_w=math.nan, bw_mbps=0.0, w_q=1.0, w_e=0.0, q_min=math.nan, until=0.0, capacity_j=4e4,
             r_th=5.0, tau_s=240.0, t_max=45.0, thr_k=0.1, thr_min=0.3, eta=0.9, idle_w=0.2)
    x.update(kw)
    return step_core(o, p.step_s, p, *x.values()), x


def test_each_segment_throttles_by_its_own_trip_point():
    # 47 °C: 2 °C over the device's trip point. Segment 1 (offset 0) throttles to 0.8, segment 2 (offset +5) not
    r, _ = _step(SCALAR, dec_ms=10.0, seg2_ms=4.0, xfer_ms=1.0, trip1_c=0.0, trip2_c=5.0, temp_c=47.0,
                 demand_tps=1.0)
    assert r.latency_ms == pytest.approx(5.0 / 0.8 + 4.0 + 1.0)
    # both over their trip points: both slowed
    r2, _ = _step(SCALAR, dec_ms=10.0, seg2_ms=4.0, xfer_ms=1.0, trip1_c=0.0, trip2_c=1.0, temp_c=47.0,
                  demand_tps=1.0)
    assert r2.latency_ms == pytest.approx(5.0 / 0.8 + 4.0 / 0.9 + 1.0)
    # a single-processor placement with its own trip point: tps x its throttle
    r3, _ = _step(SCALAR, trip1_c=-4.0, temp_c=47.0, demand_tps=1000.0)
    assert r3.served == pytest.approx(100.0 * 0.4 * 10.0)


def test_heat_fraction_warms_the_device_less_but_bills_the_battery_the_same():
    full, _ = _step(SCALAR, heat_frac=1.0, demand_tps=90.0)
    part, _ = _step(SCALAR, heat_frac=0.1, demand_tps=90.0)
    assert part.energy_j == full.energy_j and part.soc == full.soc
    assert part.temp_c < full.temp_c


def test_placement_inputs_keep_float_and_array_twins_identical():
    rng = np.random.default_rng(1)
    for _ in range(50):
        kw = dict(seg2_ms=float(rng.uniform(0, 3)), xfer_ms=float(rng.uniform(0, 1)), dec_ms=float(rng.uniform(5, 9)),
                  trip1_c=float(rng.choice([0, -2, 2])), trip2_c=float(rng.choice([0, 5])),
                  heat_frac=float(rng.uniform(0.2, 1)), temp_c=float(rng.uniform(30, 55)))
        a, x = _step(SCALAR, **kw)
        b = scalar_step_core(SCALAR, EnvParams().step_s, EnvParams(), *x.values())
        v, _ = _step(VECTOR, **{k: np.array([val]) for k, val in kw.items()})
        assert a == b
        for name, s, arr in zip(a._fields, a, v):
            assert np.asarray(arr).ravel()[0] == pytest.approx(s, rel=1e-12, abs=1e-12), name


# ---- outages, masks, observation ----------------------------------------------------------------

def test_outage_scenario_is_seeded_and_spares_the_cpu():
    a = outages("trace-1", 720, 10.0, busy_per_h=3.0, busy_mean_s=300.0, lost_per_h=0.0, seed=4)
    assert a == outages("trace-1", 720, 10.0, 3.0, 300.0, 0.0, 4)
    assert a != outages("trace-2", 720, 10.0, 3.0, 300.0, 0.0, 4)
    assert all(x & 1 == 0 for x in a)  # the CPU is never down
    frac = np.mean([x != 0 for x in a])
    assert 0.3 < frac < 0.95  # three accelerators, ~6 h^-1 x 5 min each over 2 h: often someone is busy
    lost = outages("t", 720, 10.0, 0.0, 300.0, lost_per_h=50.0, seed=0)
    assert lost[-1] == 0b1110  # lost for good: everything but the CPU by the end


def test_env_masks_and_observes_unavailable_processors_and_the_oracle_avoids_them(phone_profile):
    import gymnasium as gym

    import envs
    from agents.oracle import OracleController

    p = EnvParams(max_episode_steps=60, avail=Availability(busy_per_h=20.0, busy_mean_s=120.0))
    env = gym.make(envs.ENV_ID, profile=phone_profile, params=p, split="test").unwrapped
    names = env.layout.names
    assert names[-4:] == ["proc_up_cpu", "proc_up_lcpu", "proc_up_gpu", "proc_up_npu"]
    roles = env.costs.roles
    env.reset(seed=0, options={"trace": 0, "start": 0})
    oracle = OracleController(env, n_soc=21, n_temp=5, n_backlog=3, horizon_steps=60).bind(env)
    seen_down = 0
    for _ in range(60):
        i = env.sim_state()["row"]
        down = env.trace.procs_down[i]
        mask = env.action_masks()
        obs = env._obs()
        assert obs[names.index("proc_up_npu")] == (0.0 if down & 0b1000 else 1.0)
        if down:
            seen_down += 1
            assert not mask[(roles & down) != 0].any()  # nothing on a processor that is down
            assert mask[roles == 1].any()  # the CPU is always there
        a = oracle.predict(obs)[0]
        assert (int(roles[a]) & down) == 0
        _, _, term, trunc, _ = env.step(a)
        if term or trunc:
            break
    assert seen_down > 0


def test_batched_env_matches_the_scalar_env_on_a_placement_profile_with_outages(phone_profile):
    import gymnasium as gym

    import envs
    from envs.batched import BatchedPowerEnv

    p = EnvParams(max_episode_steps=60, avail=Availability(busy_per_h=20.0, busy_mean_s=120.0))
    env = gym.make(envs.ENV_ID, profile=phone_profile, params=p, split="test").unwrapped
    b = BatchedPowerEnv(n_envs=1, profile=phone_profile, params=p, split="test")
    b.reset()
    b.reset_env(0, 0, 0)
    obs, _ = env.reset(options={"trace": 0, "start": 0})
    rng = np.random.default_rng(3)
    for _ in range(40):
        ms, mb = env.action_masks(), b.action_masks()[0]
        assert np.array_equal(ms, mb)
        a = int(rng.choice(np.flatnonzero(ms)))
        o1, r1, term, trunc, _ = env.step(a)
        b.step_async(np.array([a]))
        o2, r2, _, _ = b.step_wait()
        assert r2[0] == pytest.approx(r1, rel=1e-5, abs=1e-6)
        if term or trunc:
            break
        assert np.allclose(o1, o2[0], rtol=1e-5, atol=1e-5)


# ---- the GPU path ---------------------------------------------------------------------------------

def test_generic_quantised_path_matches_the_cpu_kernels():
    import torch

    from model import quant

    torch.manual_seed(0)
    w, bias, x = torch.randn(96, 64), torch.randn(96), torch.randn(3, 64)
    for bits in (8, 4):
        cpu = quant.linear(x, quant.pack(w, bias, bits, 32))
        gen = quant.linear(x, quant.pack(w, bias, bits, 32, generic=True))
        assert gen.dtype == torch.float32
        # the same codes; the CPU kernels round activations to bf16, the generic path does not
        assert torch.allclose(cpu, gen, atol=0.15), bits


def test_profile_on_cuda_without_a_gpu_says_why(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present: the refusal path does not apply")
    r = subprocess.run([sys.executable, "-m", "model.profile", "--device", "cuda", "--out", str(tmp_path / "g.json")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "torch sees no CUDA GPU" in r.stderr
    assert not (tmp_path / "g.json").exists()


# ---- the runtime's shield ------------------------------------------------------------------------

def test_runtime_manager_moves_off_a_processor_that_goes_down(tmp_path, phone_profile):

    from policy_helpers import random_policy_file

    from envs.tables import load_cost_tables
    from runtime.dynamics import DEVICES
    from runtime.manager import RuntimeManager
    from runtime.policy import load_policy_file
    from runtime.replay import ReplaySensors
    from runtime.sensors import SensorHub
    from runtime.shield import Reason
    from traces import load_trace

    c = load_cost_tables(phone_profile)
    favour = c.space.index("L6-H100-int8-npu")
    # a policy that insists on the NPU
    pf = load_policy_file(random_policy_file(tmp_path / "place-policy.npz", phone_profile, favour="L6-H100-int8-npu"))
    assert pf.layout.names[-4:] == ["proc_up_cpu", "proc_up_lcpu", "proc_up_gpu", "proc_up_npu"]
    trace = load_trace("traces/data/default/phone-00.csv")
    rp = ReplaySensors(trace, DEVICES["phone"], clock=None)
    mgr = RuntimeManager(pf, SensorHub([rp], clock=rp.now), device=DEVICES["phone"], clock=rp.now)
    mgr.cfg = type(mgr.cfg)(**{**mgr.cfg.__dict__, "min_dwell_decisions": 0, "min_dwell_s": 0.0})
    rp.advance_to(0.0)
    assert mgr.decide(0.0) == favour
    mgr.procs_down = 0b1000  # the NPU is taken
    rp.advance_to(10.0)
    a = mgr.decide(10.0)
    assert a != favour and int(c.roles[a]) & 0b1000 == 0
    assert mgr.obs[pf.layout.index["proc_up_npu"]] == 0.0
    assert mgr.shield.mask_reason(30.0, 0.9, favour, mgr.procs_down) == Reason.PROCESSOR_MASK


def test_a_placement_on_a_processor_that_is_down_runs_on_the_cpu(phone_profile):
    import gymnasium as gym

    import envs
    from envs.batched import BatchedPowerEnv

    p = EnvParams(max_episode_steps=60, avail=Availability(busy_per_h=20.0, busy_mean_s=120.0))
    env = gym.make(envs.ENV_ID, profile=phone_profile, params=p, split="test").unwrapped
    c = env.costs
    npu = c.space.index("L6-H100-int8-npu")
    twin = c.space.index("L6-H100-int8")
    assert c.cpu_twin[npu] == twin and c.cpu_twin[twin] == twin
    row = next(i for i, d in enumerate(env.traces[0].procs_down) if d & 0b1000)
    results = []
    for a in (npu, twin):
        env.reset(options={"trace": 0, "start": row, "config": twin})
        _, r, *_, info = env.step(a)
        results.append((r, info["config"]))
    assert results[0] == results[1] and results[0][1] == twin
    b = BatchedPowerEnv(n_envs=2, ref=env)
    b.reset()
    for j in range(2):
        b.reset_env(j, 0, row, config=twin)
    b.step_async(np.array([npu, twin]))
    _, rew, _, _ = b.step_wait()
    assert rew[0] == rew[1] == pytest.approx(results[0][0], rel=1e-6)
    assert list(b.a) == [twin, twin]


def test_qeil_greedy_reassigns_when_a_processor_is_down_and_is_schedutil_without_placement(phone_profile):
    import gymnasium as gym

    import envs
    from agents.registry import default_controllers, make_controller

    p = EnvParams(max_episode_steps=80, avail=Availability(busy_per_h=20.0, busy_mean_s=120.0))
    env = gym.make(envs.ENV_ID, profile=phone_profile, params=p, split="test").unwrapped
    assert "qeil-greedy" in default_controllers(env.costs)
    q = make_controller("qeil-greedy", env)
    obs, _ = env.reset(options={"trace": 0, "start": 0})
    roles, used = env.costs.roles, set()
    for _ in range(80):
        a = int(q.predict(obs)[0])
        down = env.trace.procs_down[env.sim_state()["row"]]
        assert int(roles[a]) & down == 0  # never a processor that is down
        used.add(env.costs.space.config(a).place)
        obs, _, term, trunc, _ = env.step(a)
        if term or trunc:
            break
    assert len(used) > 1  # it does move the model between placements
    plain = gym.make(envs.ENV_ID, split="test").unwrapped
    assert "qeil-greedy" not in default_controllers(plain.costs)
    g, s = make_controller("qeil-greedy", plain), make_controller("schedutil", plain)
    obs, _ = plain.reset(options={"trace": 0, "start": 0})
    for _ in range(30):
        assert g.predict(obs)[0] == s.predict(obs)[0]
        obs, *_ = plain.step(int(s.predict(obs)[0]))
