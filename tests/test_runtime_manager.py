"""RuntimeManager: state machine, safety shield, dwell, telemetry, fallback, and fault injection."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from envs.power_env import load_cost_tables
from model.profile_schema import example_profile
from runtime.dynamics import DEVICES, EnvParams
from runtime.manager import (
    TRANSITIONS,
    FallbackSpec,
    ManagerConfig,
    RuntimeManager,
    State,
    Telemetry,
)
from runtime.observation import ObsLayout
from runtime.policy import load_policy_file, save_policy_file
from runtime.sensors import ConstantSensor, Reading, Sensor, SensorHub
from runtime.shield import Reason, is_breach

COSTS = load_cost_tables(example_profile(12))
EXPENSIVE = int(np.argmax(COSTS.ept_j))
SAFE = int(np.argmin(COSTS.ept_j))


def make_policy(path: Path, favour: int | None = EXPENSIVE, seed: int = 0, algo: str = "ppo") -> Path:
    """A random-weight policy file; ``favour`` gets a large output bias (the policy insists on it)."""
    rng = np.random.default_rng(seed)
    layout = ObsLayout(COSTS.space.features)
    n, d, h = len(COSTS.names), layout.dim, 16
    layers = [(rng.normal(0, 0.3, (h, d)), rng.normal(0, 0.1, h)), (rng.normal(0, 0.3, (n, h)), np.zeros(n))]
    if favour is not None:
        layers[-1][1][favour] = 50.0
    meta = {"algo": algo, "activation": "Tanh", "obs_features": layout.table(),
            "config_space": COSTS.space.to_json(), "decode_table": COSTS.decode_table(),
            "env_params": EnvParams().to_dict(), "normalization": {"norm_obs": True, "clip_obs": 10.0, "epsilon": 1e-8},
            "mask_rules": {"device_kind": "phone", "device": asdict(DEVICES["phone"]),
                           "devices": {k: asdict(v) for k, v in DEVICES.items()}},
            "profile": {"path": "example", "sha256": "0" * 64, "name": "example"}}
    save_policy_file(path, layers, meta, np.zeros(d), np.ones(d),
                     {"energy_j_per_token": COSTS.ept_j, "power_w": COSTS.power_w,
                      "decode_tokens_per_s": COSTS.tps}, COSTS.features)
    return path


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class Device(Sensor):
    """A scripted device whose readings the test sets directly."""

    name = "device"
    provides = ("soc_frac", "plugged", "temp_c", "ambient_c", "power_w")

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock)
        self.soc, self.plugged, self.temp, self.fail = 0.6, 0.0, 30.0, False

    def read(self) -> Reading:
        if self.fail:
            raise OSError("sensor bus error")
        return Reading(self.clock(), soc_frac=self.soc, plugged=self.plugged, temp_c=self.temp, ambient_c=25.0,
                       power_w=2.0)


@pytest.fixture()
def setup(tmp_path: Path):
    clk = Clock()
    dev = Device(clk)
    hub = SensorHub([dev], hold_s=1.0, stale_after_s=1.0, clock=clk)
    tel_path = tmp_path / "telemetry.jsonl"
    mgr = RuntimeManager(load_policy_file(make_policy(tmp_path / "p.npz")), hub,
                         ManagerConfig(min_dwell_decisions=3, emergency_min_s=1.0, recover_decisions=3),
                         Telemetry(tel_path), clock=clk)
    mgr.set_workload(demand_tps=5.0)
    return clk, dev, mgr, tel_path


def step(clk: Clock, mgr: RuntimeManager, dt: float = 0.1) -> int:
    clk.t += dt
    return mgr.decide(clk.t)


def test_normal_follows_the_policy(setup) -> None:
    clk, dev, mgr, _ = setup
    assert step(clk, mgr) == EXPENSIVE
    assert mgr.state == State.NORMAL and mgr.last_reason == Reason.NONE


def test_thermal_ceiling_forces_safe_config_with_hysteresis(setup) -> None:
    clk, dev, mgr, _ = setup
    step(clk, mgr)
    ceiling = mgr.shield.ceiling_c
    assert ceiling == 47.0  # phone t_max 45 + 2
    dev.temp = ceiling + 0.1
    assert step(clk, mgr) == SAFE
    assert mgr.state == State.EMERGENCY and mgr.last_reason == Reason.THERMAL_CEILING
    dev.temp = ceiling - 1.0  # below the ceiling but inside the hysteresis band
    for _ in range(20):
        assert step(clk, mgr) == SAFE
    assert mgr.state == State.EMERGENCY and mgr.last_reason == Reason.EMERGENCY_HOLD
    dev.temp = 30.0
    out = [step(clk, mgr) for _ in range(15)]
    assert mgr.state == State.NORMAL and out[-1] == EXPENSIVE
    assert [t[1:3] for t in mgr.transitions] == [("NORMAL", "EMERGENCY"), ("EMERGENCY", "NORMAL")]


def test_thermal_mask_near_trip_point(setup) -> None:
    clk, dev, mgr, _ = setup
    mgr.set_workload(demand_tps=2000.0)
    dev.temp = 44.5  # above t_max - 1, below the hard ceiling
    a = step(clk, mgr)
    assert mgr.state == State.NORMAL and mgr.last_reason == Reason.THERMAL_MASK
    mask = mgr.shield.mask(2000.0, 44.5, 25.0, mgr.device.idle_power_w, 0.6, 0.0)
    assert mask is not None and mask[a] and not mask[EXPENSIVE]


def test_battery_reserve_unless_plugged(setup) -> None:
    clk, dev, mgr, _ = setup
    dev.soc = 0.04
    assert step(clk, mgr) == SAFE and mgr.last_reason == Reason.BATTERY_RESERVE
    dev.plugged = 1.0
    for _ in range(15):
        step(clk, mgr)
    assert mgr.state == State.NORMAL  # plugged in: the reserve no longer forces anything


def test_sensor_failure_degrades_then_worst_case(setup) -> None:
    clk, dev, mgr, _ = setup
    step(clk, mgr)
    dev.fail = True
    assert step(clk, mgr) == EXPENSIVE  # last-good values within hold_s
    assert mgr.state == State.DEGRADED
    for _ in range(12):  # > hold_s without a valid reading: unknown = worst case
        a = step(clk, mgr)
    assert a == SAFE and mgr.state == State.EMERGENCY and mgr.last_reason == Reason.SENSOR_UNKNOWN
    dev.fail = False
    for _ in range(30):
        step(clk, mgr)
    assert mgr.state == State.NORMAL
    states = [t[2] for t in mgr.transitions]
    assert states == ["DEGRADED", "EMERGENCY", "NORMAL"]


def test_dwell_limits_policy_switches(setup) -> None:
    clk, dev, mgr, _ = setup
    seq = iter([0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1] * 3)
    mgr.policy.act = lambda obs, mask=None: next(seq)
    out = [step(clk, mgr) for _ in range(30)]
    changes = sum(a != b for a, b in zip(out, out[1:]))
    assert changes <= 30 // 3
    assert mgr.overrides[Reason.DWELL] > 0


def test_fallback_on_bad_policy_and_recovery(tmp_path: Path) -> None:
    clk = Clock()
    dev = Device(clk)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(make_policy(tmp_path / "good.npz").read_bytes()[:500])
    fb = FallbackSpec(COSTS.names, COSTS.ept_j, reserve_soc=0.05)
    mgr = RuntimeManager.from_policy_path(bad, SensorHub([dev], clock=clk), fallback=fb, clock=clk)
    assert mgr.state == State.FALLBACK and "truncated" in mgr.policy_error
    assert step(clk, mgr) == SAFE and mgr.last_reason == Reason.FALLBACK
    assert not mgr.load_policy(bad) and mgr.state == State.FALLBACK
    assert mgr.load_policy(tmp_path / "good.npz")
    assert mgr.state == State.NORMAL and step(clk, mgr) == EXPENSIVE


def test_illegal_transitions_raise(setup) -> None:
    _, _, mgr, _ = setup
    assert (State.FALLBACK, "sensors_ok") not in TRANSITIONS
    with pytest.raises(RuntimeError, match="illegal transition"):
        mgr._go(State.DEGRADED, "cleared", 0.0, "test")


def test_telemetry_is_jsonl_of_every_decision(setup) -> None:
    clk, dev, mgr, path = setup
    for k in range(40):
        dev.temp = 50.0 if 10 <= k < 20 else 30.0
        step(clk, mgr)
    mgr.close()
    lines = [json.loads(ln) for ln in path.read_text().splitlines()]
    decisions = [d for d in lines if "final_action" in d]
    assert len(decisions) == 40
    assert {"t_s", "state", "soc", "temp_c", "policy_action", "final_action", "reason", "sensor_flags",
            "final_config"} <= set(decisions[0])
    over = [d for d in decisions if d["reason"] == "thermal_ceiling"]
    assert over and all(d["final_config"] == COSTS.names[SAFE] for d in over)
    assert any(d.get("event") == "transition" for d in lines)


# ---- fault injection ----------------------------------------------------------------------------
class Faulty(Sensor):
    """A device whose reads raise / return NaN / freeze / go stale on ``p_fault`` of reads, plus rare
    outages (every read raises for 0.5-1.5 s) so that "unknown beyond the hold time" happens too.

    ``truth`` is a swinging temperature/SoC/plugged signal that crosses the ceiling and the
    reserve; ``valid`` records, per field, the last valid value and when it was sampled
    (the oracle the breach check uses, independent of the hub).
    """

    name = "faulty"
    provides = ("soc_frac", "plugged", "temp_c", "ambient_c", "power_w")
    REQ = ("temp_c", "soc_frac", "plugged")

    def __init__(self, clock: Clock, p_fault: float, seed: int) -> None:
        super().__init__(clock)
        self.rng = np.random.default_rng(seed)
        self.p = p_fault
        self.last: Reading | None = None
        self.valid = {f: (math.nan, -math.inf) for f in self.REQ}
        self.kinds = {"raise": 0, "nan": 0, "freeze": 0, "stale": 0, "outage": 0}
        self.outage_left = 0

    def truth(self, t: float) -> Reading:
        return Reading(t, temp_c=40.0 + 12.0 * math.sin(t / 9.5), soc_frac=0.1 + 0.08 * math.sin(t / 15.4),
                       plugged=1.0 if math.sin(t / 6.5) > 0.5 else 0.0, ambient_c=25.0, power_w=3.0)

    def read(self) -> Reading:
        t = self.clock()
        if self.outage_left > 0:  # rare bursts: the sensor is gone for 0.5-1.5 s
            self.outage_left -= 1
            self.kinds["outage"] += 1
            raise OSError("sensor bus down")
        if self.rng.random() < 2e-4:
            self.outage_left = int(self.rng.integers(50, 150))
        u = self.rng.random()
        if u < self.p:
            kind = ("raise", "nan", "freeze", "stale")[int(self.rng.integers(4))]
            self.kinds[kind] += 1
            if kind == "raise":
                raise RuntimeError("injected")
            if kind == "freeze" and self.last is not None:
                return self.last
            if kind == "stale":
                return Reading(t - 30.0, temp_c=20.0, soc_frac=0.9, plugged=1.0, ambient_c=25.0, power_w=3.0)
            r = self.truth(t)
            pick = self.rng.random(3) < 0.5
            r = Reading(t, temp_c=math.nan if pick[0] else r.temp_c, soc_frac=math.nan if pick[1] else r.soc_frac,
                        plugged=math.nan if pick[2] else r.plugged, ambient_c=25.0, power_w=3.0)
        else:
            r = self.truth(t)
        self.last = r
        for f in self.REQ:
            v = getattr(r, f)
            if v == v:
                self.valid[f] = (v, t)
        return r


def test_100k_decisions_with_10pct_faults_never_breach(tmp_path: Path) -> None:
    clk = Clock()
    dev = Faulty(clk, p_fault=0.10, seed=0)
    hold_s = 0.3
    hub = SensorHub([dev], hold_s=hold_s, stale_after_s=5.0, clock=clk)
    mgr = RuntimeManager(load_policy_file(make_policy(tmp_path / "p.npz")), hub,
                         ManagerConfig(min_dwell_decisions=2), clock=clk)
    mgr.set_workload(demand_tps=30.0)
    sp = mgr.shield.p
    breaches = 0
    unknown_seen = 0
    for _ in range(100_000):
        clk.t += 0.01
        a = mgr.decide(clk.t)
        (temp, t_t), (soc, t_s), (plug, t_p) = (dev.valid[f] for f in Faulty.REQ)
        unknown = min(t_t, t_s, t_p) < clk.t - hold_s
        unknown_seen += unknown
        breaches += is_breach(a, SAFE, sp, temp, soc, plug, unknown)
    assert breaches == 0
    assert all(n > 1500 for n in dev.kinds.values()), dev.kinds
    assert unknown_seen > 100  # outages longer than hold_s did happen (and were handled)
    s = mgr.summary()
    assert s["decisions"] == 100_000
    assert {"NORMAL", "DEGRADED", "EMERGENCY"} <= set(s["decisions_per_state"])
    assert s["overrides"]["thermal_ceiling"] > 1000 and s["overrides"]["battery_reserve"] > 100
    assert s["overrides"]["sensor_unknown"] > 100
    assert min(hub.failures[k] for k in ("raised", "invalid", "frozen", "stale")) > 1500
    assert sum(hub.failures.values()) > 8000


def test_constant_sensor_bench_path_allocates_nothing(tmp_path: Path) -> None:
    """The decision path reuses its buffers (no per-decision numpy allocation)."""
    import tracemalloc

    clk = Clock()
    hub = SensorHub([ConstantSensor({"soc_frac": 0.6, "plugged": 0.0, "temp_c": 30.0, "ambient_c": 25.0,
                                     "power_w": 2.0}, clk, period_s=1.0)], clock=clk)
    mgr = RuntimeManager(load_policy_file(make_policy(tmp_path / "p.npz", favour=None)), hub, clock=clk)
    for _ in range(200):
        step(clk, mgr, 0.01)
    tracemalloc.start()
    snap0 = tracemalloc.take_snapshot()
    for _ in range(2000):
        step(clk, mgr, 0.01)
    snap1 = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(s.size_diff for s in snap1.compare_to(snap0, "filename") if s.size_diff > 0)
    assert grown < 20_000, grown  # a per-decision allocation would leak ~100+ bytes x 2000


# ---- observation parity with the environment -------------------------------------------------------
def test_device_observation_matches_env_observation(tmp_path: Path) -> None:
    """The manager, fed by a replay of the env's own trace, builds the env's observation."""
    from types import SimpleNamespace

    from envs.power_env import MicroLLMPowerEnv
    from runtime.replay import ReplaySensors

    env = MicroLLMPowerEnv(profile=example_profile(12), split="train", random_start=False)
    pf = load_policy_file(make_policy(tmp_path / "p.npz"))
    checked = 0
    kinds = {}
    for k, ta in enumerate(env.traces):  # one trace per device kind, plus deadline/budget traces
        if ta.device_kind not in kinds or not math.isnan(ta.deadline_s):
            kinds.setdefault(ta.device_kind, k)
            if not math.isnan(ta.deadline_s):
                kinds[ta.name] = k
    seen_deadline = seen_budget = False
    for k in sorted(set(kinds.values())):
        ta = env.traces[k]
        obs, info = env.reset(seed=0, options={"trace": k, "start": 3})
        tr = SimpleNamespace(name=ta.name, time_s=np.arange(ta.n) * env.step_s, supply_w=ta.supply_w,
                             plugged=ta.plugged, ambient_c=ta.ambient_c, demand_tps=ta.demand_tps,
                             bandwidth_mbps=ta.bandwidth_mbps, budget_w=ta.budget_w, base_load_w=ta.base_w,
                             meta=SimpleNamespace(capacity_wh=ta.capacity_j / 3600.0, initial_soc=ta.initial_soc,
                                                  deadline_s=None if math.isnan(ta.deadline_s) else ta.deadline_s))
        dev = ta.device
        rp = ReplaySensors(tr, dev, clock=None, start_s=3 * env.step_s, soc0=info["soc"],
                        temp0_c=info["temp_c"])
        mgr = RuntimeManager(pf, SensorHub([rp], clock=rp.now), device=dev, clock=rp.now)
        rng = np.random.default_rng(k)
        for t in range(6):
            w = rp.workload()
            mgr.set_workload(demand_tps=env._last_demand, backlog_frac=env.backlog / env.backlog_cap,
                             latency_over_slo=env._last_lat_ms / env.slo_ms, budget_w=w["budget_w"],
                             deadline_left_s=w["deadline_left_s"],  # no horizon: the device's own (2 h)
                             base_w=w["base_w"], capacity_j=w["capacity_j"])
            mgr.current = env._a
            mgr.decide(rp.vt)
            cols = slice(None) if t == 0 else [j for j in range(len(obs)) if j != 6]  # 6: budget (see below)
            np.testing.assert_allclose(mgr.obs[cols], obs[cols], rtol=1e-5, atol=1e-4, err_msg=f"{ta.name} t={t}")
            checked += 1
            seen_deadline |= bool(obs[7] == 1.0)
            seen_budget |= bool(obs[5] == 1.0)
            i = env._i
            obs, _, term, trunc, info = env.step(int(rng.integers(env.action_space.n)))
            rp.set_model_power_w(info["step"].power_w - dev.idle_power_w - ta.base_w[i])
            rp.advance_to((i + 1) * env.step_s)
            if term or trunc:
                break
    # budget_left after steps differs by construction: the env books each step's LLM energy with that
    # step's base load, the device with the base load it sees at decision time
    assert checked >= 40 and seen_deadline and seen_budget


def test_start_at_sets_the_configuration_the_first_observation_reads(tmp_path) -> None:
    """The observation's configuration block at the first decision is the model's loaded configuration (as an
    env episode starts from its first configuration), not the safe one the manager assumes without it."""
    clk = Clock()

    def manager():
        hub = SensorHub([ConstantSensor({"soc_frac": 0.6, "plugged": 0.0, "temp_c": 30.0, "ambient_c": 25.0,
                                         "power_w": 2.0}, clk)], clock=clk)
        return RuntimeManager(load_policy_file(make_policy(tmp_path / "p.npz", favour=None)), hub, clock=clk)

    plain, started = manager(), manager()
    full = int(np.argmax(COSTS.quality))
    started.start_at(full)
    plain.decide(0.0)
    started.decide(0.0)
    blk = slice(started.layout.cfg_start, started.layout.cfg_start + started.layout.n_config)
    np.testing.assert_allclose(started.obs[blk], COSTS.features[full], rtol=1e-6)
    np.testing.assert_allclose(plain.obs[blk], COSTS.features[plain.safe], rtol=1e-6)
    with pytest.raises(RuntimeError, match="before the first decision"):
        started.start_at(0)
    with pytest.raises(ValueError, match="outside"):
        manager().start_at(len(COSTS.names))
