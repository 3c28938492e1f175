"""Online correction (runtime/correction.py) and its use by the RuntimeManager: a host 3× slower
than the profile, replayed on a virtual device that heats up with the real (higher) power."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from test_runtime_manager import make_policy  # the same random-weight policy file helper

from envs.power_env import load_cost_tables
from model.profile_schema import example_profile, validate_profile
from runtime.correction import MIN_SAMPLES, OnlineCorrection, RobustLogRatio
from runtime.dynamics import DEVICES, DeviceConstants
from runtime.manager import ManagerConfig, RuntimeManager, Telemetry
from runtime.policy import load_policy_file
from runtime.replay import ReplaySensors
from runtime.safeio import ExistsError
from runtime.sensors import PLUGGED, SOC, TEMP, SensorHub
from runtime.shield import Reason, is_breach

PROFILE = example_profile(12)
COSTS = load_cost_tables(PROFILE)
EXPENSIVE = int(np.argmax(COSTS.ept_j))
DEC_MS = 1000.0 / COSTS.tps
SLOW, HOT = 3.0, 1.5  # the host: 3x the profile's decode time, 1.5x its model power -> 4.5x energy per token
#: Measured decisions until the running configuration's corrected figures are within 10 % (the warm-up
#: median; the manager applies a ratio at the decision after it becomes trusted).
CONVERGE_DECISIONS = MIN_SAMPLES + 1


def constant_trace(ambient_c: float, demand_tps: float, n: int = 4000) -> SimpleNamespace:
    z = np.zeros(n)
    return SimpleNamespace(name="const", time_s=np.arange(n, dtype=float), supply_w=z, plugged=z,
                           ambient_c=z + ambient_c, demand_tps=z + demand_tps, bandwidth_mbps=z + 10.0,
                           budget_w=z + math.nan, base_load_w=z,
                           meta=SimpleNamespace(capacity_wh=50.0, initial_soc=0.9, deadline_s=None))


def run_slow_host(tmp_path: Path, ambient_c: float, demand_tps: float, n: int, cfg: ManagerConfig | None = None,
                  seed: int = 0):
    """Replays a slow, hot host: every decision the running configuration is measured (3x decode time,
    1.5x power, 5 % noise) and the virtual device draws the real power. Yields (manager, hub, action)."""
    dev = DeviceConstants.from_dict(asdict(DEVICES["phone"]))
    rp = ReplaySensors(constant_trace(ambient_c, demand_tps), dev, clock=None)
    hub = SensorHub([rp], clock=rp.now)
    mgr = RuntimeManager(load_policy_file(make_policy(tmp_path / "p.npz")), hub, cfg or ManagerConfig(),
                         Telemetry(tmp_path / "tel.jsonl"), device=dev, clock=rp.now, device_kind="phone")
    rng = np.random.default_rng(seed)
    true_ept = COSTS.ept_j * SLOW * HOT
    for k in range(n):
        cur = mgr.current
        served = min(demand_tps, COSTS.tps[cur] / SLOW)
        rp.set_model_power_w(served * true_ept[cur])
        rp.advance_to(float(k + 1))
        if k:  # the interval that just ended ran `cur`
            noise = np.exp(rng.normal(0.0, 0.05, 2))
            mgr.observe_measurement(latency_ms=SLOW * DEC_MS[cur] * noise[0],
                                    power_w=HOT * COSTS.power_w[cur] * noise[1], config=cur)
        w = rp.workload()
        mgr.set_workload(demand_tps=w["demand_tps"], base_w=w["base_w"])
        a = mgr.decide(float(k + 1))
        yield mgr, hub, a


# ---- the estimator --------------------------------------------------------------------------------
def test_robust_estimator_ignores_outliers() -> None:
    rng = np.random.default_rng(1)
    est = RobustLogRatio()
    est.add(math.log(100.0))  # a wild first sample (warm-up median)
    for _ in range(MIN_SAMPLES - 1):
        est.add(math.log(3.0) + rng.normal(0, 0.03))
    assert est.trusted and est.ratio == pytest.approx(3.0, rel=0.1)
    for _ in range(30):
        est.add(math.log(3.0) + rng.normal(0, 0.03))
    before = est.ratio
    est.add(math.log(300.0))  # one 100x outlier
    assert abs(est.ratio / before - 1.0) < 0.03
    est.add(math.log(0.01))
    assert abs(est.ratio / before - 1.0) < 0.06
    # a lasting change is followed (scale inflation), within a documented number of samples
    needed = next(k + 1 for k in range(60) if est.add(rng.normal(0, 0.03)) or abs(est.ratio - 1.0) < 0.1)
    assert needed <= 30  # measured: 26 samples for a 3x -> 1x step (docs/runtime.md)
    # and clamped
    for _ in range(200):
        est.add(math.log(1000.0))
    assert est.ratio == pytest.approx(8.0)


def test_unmeasured_configurations_borrow() -> None:
    prec = [COSTS.space.values_of(i)["bits"] for i in range(len(COSTS.names))]
    c = OnlineCorrection(COSTS.names, DEC_MS, COSTS.power_w, COSTS.ept_j, COSTS.features, prec)
    assert np.all(c.latency_ratios() == 1.0) and np.all(c.corrected_ept_j() == COSTS.ept_j)
    names = list(COSTS.names)
    a, b = names.index("L1-H100-int8"), names.index("L4-H050-int8")
    for _ in range(MIN_SAMPLES):
        c.observe(a, latency_ms=2.0 * DEC_MS[a], power_w=COSTS.power_w[a])
        c.observe(b, latency_ms=4.0 * DEC_MS[b], power_w=COSTS.power_w[b])
    st = c.state(measured_only=False)["configs"]
    assert c.latency_ratio(a) == pytest.approx(2.0) and c.latency_ratio(b) == pytest.approx(4.0)
    # same precision: the nearest measured int8 configuration(s)
    assert st["L3-H100-int8"]["latency_basis"] == "borrowed:L1-H100-int8"  # depth 3/4 vs 1/4 (heads equal)
    assert c.latency_ratio(names.index("L3-H100-int8")) == pytest.approx(2.0)
    assert st["L2-H050-int8"]["latency_basis"].startswith("borrowed:")
    # no int4/fp32 measured: the global ratio, between the two measured ones
    g = c.latency_ratio(names.index("L1-H100-fp32"))
    assert st["L1-H100-fp32"]["latency_basis"] == "global" and 2.0 <= g <= 4.0
    assert c.power_ratios() == pytest.approx(np.ones(len(names)))
    i = names.index("L2-H050-int4")
    assert c.corrected_ept_j(i) == pytest.approx(COSTS.ept_j[i] * g)
    assert c.corrected_decode_ms(i) == pytest.approx(DEC_MS[i] * g)
    c.observe(i, latency_ms=float("nan"), power_w=-1.0)  # ignored
    assert c.lat[i].n == 0 and c.pow[i].n == 0


def test_a_precision_is_followed_before_any_configuration_has_samples_of_its_own() -> None:
    """One sample each of several int8 configurations (2x) and int4 ones (4x): no configuration is trusted, but
    each precision's pooled ratio is, and is used for every configuration of it (without the size curve; with it,
    the uniform slowdown fits a flat curve, the same ratios); fp32 has no samples: global."""
    prec = [COSTS.space.values_of(i)["bits"] for i in range(len(COSTS.names))]
    c = OnlineCorrection(COSTS.names, DEC_MS, COSTS.power_w, COSTS.ept_j, COSTS.features, prec, size_curve=False)
    curved = OnlineCorrection(COSTS.names, DEC_MS, COSTS.power_w, COSTS.ept_j, COSTS.features, prec)
    int8 = [i for i, b in enumerate(prec) if b == 8]
    int4 = [i for i, b in enumerate(prec) if b == 4]
    for k in range(MIN_SAMPLES):  # round-robin over the precision's configurations: none gets MIN_SAMPLES
        a, b = int8[k % len(int8)], int4[k % len(int4)]
        for est in (c, curved):
            est.observe(a, latency_ms=2.0 * DEC_MS[a])
            est.observe(b, latency_ms=4.0 * DEC_MS[b])
    assert not any(e.trusted for e in c.lat)
    cst = curved.state(measured_only=False)["configs"]
    for i, b in enumerate(prec):
        if b in (8, 4):
            assert cst[COSTS.names[i]]["latency_basis"] == f"curve:{b}"
            assert curved.latency_ratio(i) == pytest.approx(2.0 if b == 8 else 4.0)
    st = c.state(measured_only=False)
    for i, b in enumerate(prec):
        basis = st["configs"][COSTS.names[i]]["latency_basis"]
        if b == 8:
            assert basis == "precision:8" and c.latency_ratio(i) == pytest.approx(2.0)
        elif b == 4:
            assert basis == "precision:4" and c.latency_ratio(i) == pytest.approx(4.0)
        else:
            assert basis == "global" and 2.0 < c.latency_ratio(i) < 4.0
    assert st["precision"]["8"]["latency_ratio"] == pytest.approx(2.0) and st["precision"]["8"]["latency_samples"] == 5
    assert st["precision"]["32"]["latency_ratio"] is None
    # without the precision level (the estimator before 2026-12-04): the global ratio for all of them
    old = OnlineCorrection(COSTS.names, DEC_MS, COSTS.power_w, COSTS.ept_j, COSTS.features, prec,
                           precision_level=False)
    for k in range(MIN_SAMPLES):
        a, b = int8[k % len(int8)], int4[k % len(int4)]
        old.observe(a, latency_ms=2.0 * DEC_MS[a])
        old.observe(b, latency_ms=4.0 * DEC_MS[b])
    assert {v["latency_basis"] for v in old.state(measured_only=False)["configs"].values()} == {"global"}


def size_dependent_host(prec: list[int], slope: float = -0.3) -> np.ndarray:
    """A host whose slowdown against the profile depends on size within a precision: ratio = k_bits ×
    (predicted ms / median predicted ms)^slope (small configurations relatively slower for a negative slope)."""
    k = {32: 1.2, 8: 1.6, 4: 1.1}
    ref = float(np.median(DEC_MS))
    return np.array([k[b] * (DEC_MS[i] / ref) ** slope for i, b in enumerate(prec)])


def test_the_size_curve_follows_a_slowdown_that_depends_on_size() -> None:
    """Three sizes of each precision measured twice (none trusted): the fourth size of each precision is predicted
    from its precision's size curve to within 5 % of the host's ratio, where the pooled ratio of the precision (the
    estimator without the curve) is off by more than 10 % for some; the curve's basis is reported."""
    prec = [COSTS.space.values_of(i)["bits"] for i in range(len(COSTS.names))]
    truth = size_dependent_host(prec)
    cur = OnlineCorrection(COSTS.names, DEC_MS, COSTS.power_w, COSTS.ept_j, COSTS.features, prec)
    old = OnlineCorrection(COSTS.names, DEC_MS, COSTS.power_w, COSTS.ept_j, COSTS.features, prec, size_curve=False)
    measured = [i for i, n in enumerate(COSTS.names) if not n.startswith("L3-")]
    for _ in range(2):
        for i in measured:
            for est in (cur, old):
                est.observe(i, latency_ms=truth[i] * DEC_MS[i])
    assert not any(e.trusted for e in cur.lat)
    rest = [i for i in range(len(prec)) if i not in measured]
    err_cur = np.abs(cur.latency_ratios()[rest] / truth[rest] - 1.0)
    err_old = np.abs(old.latency_ratios()[rest] / truth[rest] - 1.0)
    assert err_cur.max() < 0.05, err_cur.max()
    assert err_old.max() > 0.10, err_old.max()
    st = cur.state(measured_only=False)["configs"]
    assert all(st[COSTS.names[i]]["latency_basis"] == f"curve:{prec[i]}" for i in rest)


def test_the_size_curve_needs_three_configurations_and_clips_its_slope() -> None:
    """Two int8 configurations sampled (five samples, 1x and 8x: a slope far steeper than CURVE_MAX_SLOPE), none
    trusted: no curve yet, the pooled ratio. One sample of a third: the curve is fitted; the unsampled fourth lies on
    the clipped line through the pooled ratio; the third's own sample is pooled with the curve; once a configuration
    is trusted, the others borrow from it again, as before the curve."""
    from runtime.correction import CURVE_MAX_SLOPE

    prec = [COSTS.space.values_of(i)["bits"] for i in range(len(COSTS.names))]
    c = OnlineCorrection(COSTS.names, DEC_MS, COSTS.power_w, COSTS.ept_j, COSTS.features, prec)
    names = list(COSTS.names)
    lo, two, three, hi = (names.index(n) for n in ("L1-H100-int8", "L2-H050-int8", "L3-H100-int8", "L4-H050-int8"))
    for _ in range(2):
        c.observe(lo, latency_ms=1.0 * DEC_MS[lo])
        c.observe(hi, latency_ms=8.0 * DEC_MS[hi])
    c.observe(lo, latency_ms=1.0 * DEC_MS[lo])
    assert c.state(measured_only=False)["configs"]["L3-H100-int8"]["latency_basis"] == "precision:8"
    c.observe(two, latency_ms=1.0 * DEC_MS[two])
    st = c.state(measured_only=False)["configs"]
    assert st["L3-H100-int8"]["latency_basis"] == "curve:8" and not any(e.trusted for e in c.lat)
    pool = c.lat_prec[c._group[lo]].log_ratio
    w, z = np.array([3.0, 1.0, 2.0]), np.log(DEC_MS[[lo, two, hi]])
    zbar = (w * z).sum() / w.sum()
    expect3 = pool + CURVE_MAX_SLOPE * (np.log(DEC_MS[three]) - zbar)
    assert np.log(c.latency_ratio(three)) == pytest.approx(expect3, abs=1e-9)
    curve2 = pool + CURVE_MAX_SLOPE * (np.log(DEC_MS[two]) - zbar)
    assert np.log(c.latency_ratio(two)) != pytest.approx(curve2, abs=1e-3)  # its own sample counts
    for _ in range(2):  # the smallest is trusted now: the others borrow from the nearest trusted int8
        c.observe(lo, latency_ms=1.0 * DEC_MS[lo])
    assert c.state(measured_only=False)["configs"]["L3-H100-int8"]["latency_basis"].startswith("borrowed:")


# ---- the manager -----------------------------------------------------------------------------------
def test_three_times_slower_host_converges(tmp_path: Path) -> None:
    """Cool device (no mask): the policy keeps EXPENSIVE; its corrected figures are within 10 % of the
    host's after CONVERGE_DECISIONS measured decisions, and the shield has them."""
    out = list(zip(range(CONVERGE_DECISIONS + 1), run_slow_host(tmp_path, ambient_c=15.0, demand_tps=5.0, n=200)))
    mgr = out[-1][1][0]
    assert mgr.current == EXPENSIVE and mgr.decisions == CONVERGE_DECISIONS + 1
    c = mgr.correction
    assert c.latency_ratio(EXPENSIVE) == pytest.approx(SLOW, rel=0.1)
    assert c.power_ratio(EXPENSIVE) == pytest.approx(HOT, rel=0.1)
    assert mgr.shield.ept[EXPENSIVE] == pytest.approx(COSTS.ept_j[EXPENSIVE] * SLOW * HOT, rel=0.1)
    assert mgr.predicted_latency_ms() == pytest.approx(SLOW * DEC_MS[EXPENSIVE], rel=0.1)
    # never measured: the global ratio (only EXPENSIVE ran)
    assert c.latency_ratio(0) == pytest.approx(SLOW, rel=0.1)
    assert mgr.shield.safe == int(np.argmin(COSTS.ept_j))  # the safe configuration never changes
    # latency_over_slo given: the caller's value is used; None: the corrected prediction
    assert mgr.latency_over_slo is None
    assert mgr.obs[mgr.layout.names.index("latency_over_slo")] == pytest.approx(
        mgr.predicted_latency_ms() / mgr.params.slo_ms, rel=1e-5)


def test_shield_never_breaches_when_the_real_power_is_higher(tmp_path: Path) -> None:
    """Ambient 25 °C, 40 tok/s: by the profile every configuration stays far below t_max (≤ 35 °C);
    really, the policy's EXPENSIVE would settle at ~63 °C. The device heats up; the corrected masks
    restrict to what really fits, the hard ceiling holds the rest; no breach."""
    cfg = ManagerConfig(correction_every_decisions=20, correction_event_decisions=200)
    breaches = masked = emergencies = 0
    t_max_seen = 0.0
    for mgr, hub, a in run_slow_host(tmp_path, ambient_c=25.0, demand_tps=40.0, n=2400, cfg=cfg):
        v = hub.values
        temp, soc, plugged = v[TEMP], v[SOC], v[PLUGGED]
        t_max_seen = max(t_max_seen, temp)
        breaches += is_breach(a, mgr.safe, mgr.shield.p, temp, soc, plugged, hub.lost_required)
        masked += mgr.last_reason == Reason.THERMAL_MASK
        emergencies += mgr.last_reason == Reason.THERMAL_CEILING
    assert breaches == 0
    assert t_max_seen > mgr.shield.p.t_max_c - 1.0  # the device did get hot: the rules were active
    assert masked > 0
    # the corrected rules mask EXPENSIVE at the hot point; the profile's would not have
    m = mgr.shield.mask(40.0, 44.5, 25.0, mgr.device.idle_power_w, 0.8, 0.0)
    assert m is not None and not m[EXPENSIVE]
    assert 40.0 * COSTS.ept_j[EXPENSIVE] < (45.0 - 25.0) / 5.0 - mgr.device.idle_power_w
    mgr.close()
    events = [json.loads(line) for line in (tmp_path / "tel.jsonl").read_text().splitlines()]
    corr = [e for e in events if e.get("event") == "correction"]
    assert len(corr) >= 2
    assert corr[-1]["latency_ratio_global"] == pytest.approx(SLOW, rel=0.1)
    assert corr[-1]["power_ratio_global"] == pytest.approx(HOT, rel=0.1)
    assert corr[-1]["configs"]


def test_saved_calibrated_profile_validates(tmp_path: Path) -> None:
    *_, (mgr, _, _) = run_slow_host(tmp_path, ambient_c=15.0, demand_tps=5.0, n=60)
    base = tmp_path / "profile.json"
    base.write_text(json.dumps(PROFILE))
    out = mgr.save_calibrated_profile(base, tmp_path / "calibrated.json")
    prof = json.loads(out.read_text())
    validate_profile(prof, str(out))
    cal = prof["calibration"]
    assert cal["source"] == "runtime online correction" and cal["decisions"] == 60
    assert cal["latency_ratio_global"] == pytest.approx(SLOW, rel=0.1)
    assert cal["measured"] == [COSTS.names[EXPENSIVE]] and len(cal["predicted"]) == len(COSTS.names) - 1
    for rec, orig in zip(prof["configs"], PROFILE["configs"]):
        assert rec["source"] == ("measured" if rec["name"] == COSTS.names[EXPENSIVE] else "predicted")
        basis = rec["correction"]["latency_basis"]
        assert basis == "measured" if rec["source"] == "measured" else basis in ("global", "borrowed:L4-H050-int4")
        assert rec["decode_ms_per_token_median"] == pytest.approx(SLOW * orig["decode_ms_per_token_median"], rel=0.1)
        assert rec["decode_tokens_per_s"] == pytest.approx(orig["decode_tokens_per_s"] / SLOW, rel=0.1)
        assert rec["energy_j_per_token"] == pytest.approx(SLOW * HOT * orig["energy_j_per_token"], rel=0.15)
    with pytest.raises(ExistsError):
        mgr.save_calibrated_profile(base, out)
    mgr.save_calibrated_profile(base, out, force=True)
    mgr.close()


def test_no_measurement_changes_nothing(tmp_path: Path) -> None:
    dev = DeviceConstants.from_dict(asdict(DEVICES["phone"]))
    rp = ReplaySensors(constant_trace(25.0, 40.0), dev, clock=None)
    hub = SensorHub([rp], clock=rp.now)
    mgr = RuntimeManager(load_policy_file(make_policy(tmp_path / "p.npz")), hub, device=dev, clock=rp.now,
                         device_kind="phone")
    ept0 = mgr.shield.ept.copy()
    for k in range(120):
        rp.advance_to(float(k + 1))
        mgr.decide(float(k + 1))
    assert np.array_equal(mgr.shield.ept, ept0) and mgr.summary()["correction"] is None
    assert mgr.predicted_latency_ms() == pytest.approx(DEC_MS[mgr.current])
