"""Calibrating a profile to this host (model.profile --calibrate) and the host fingerprint check."""

from __future__ import annotations

import copy
import json
import time

import numpy as np
import pytest
import torch

import model as M
from model import profile as P
from model.model import ElasticGPT, ModelConfig
from model.profile_schema import (
    ProfileError,
    compare_fingerprints,
    example_profile,
    load_profile,
    save_profile,
    validate_profile,
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.manual_seed(0)
    m = ElasticGPT(ModelConfig(block_size=96, n_layer=3, n_head=4, n_embd=128, depths=(1, 2, 3)))
    d = tmp_path_factory.mktemp("cal")
    ck = d / "tiny.pt"
    torch.save(m.checkpoint(), ck)
    m = M.load(ck)
    q = {m.name(c): {"val_loss": 5.0 - c.depth * 0.1, "bits_per_byte": 7.0, "mc_accuracy": 0.25,
                     "coverage_at_k": {"1": 0.1, "2": 0.15, "4": 0.2, "8": 0.3}} for c in m.configs()}
    base = P.profile(m, threads=1, repeats=1, decode_tokens=3, prefill_tokens=8, quality=q, name="tiny",
                     idle_power_w=1.0, progress=False)
    path = save_profile(base, d / "base.json")
    return m, ck, path


def test_calibrate_writes_a_complete_valid_profile(tiny, tmp_path):
    m, _, base_path = tiny
    base = load_profile(base_path)
    prof = P.calibrate(m, base.data, threads=1, budget_s=3.0, decode_tokens=3, prefill_tokens=8, name="cal",
                       base_label=str(base_path), progress=False)
    out = load_profile(save_profile(prof, tmp_path / "cal.json"))
    assert sorted(out.names) == sorted(base.names)  # every configuration
    cal = out.data["calibration"]
    meas, pred = set(cal["measured"]), set(cal["predicted"])
    assert meas and pred and not meas & pred and meas | pred == set(base.names)
    assert all(r["source"] == ("measured" if r["name"] in meas else "predicted") for r in out.configs)
    assert len(meas) == 9  # 3 per precision: smallest, middle, largest
    assert cal["base_profile"]["name"] == "tiny" and len(cal["base_profile"]["sha256"]) == 64
    assert cal["seconds_used"] > 0  # the budget's limit: test_budget_limits_the_repeats, on a clock of its own
    fp = out.data["machine"]["fingerprint"]
    assert fp["bench_score_us"] > 0 and fp["threads"] == 1
    b = {r["name"]: r for r in base.configs}
    for r in out.configs:  # quality is the base's; energy is modelled and follows the time
        assert r["val_loss"] == b[r["name"]]["val_loss"] and r["coverage_at_k"] == b[r["name"]]["coverage_at_k"]
        assert r["energy_j_per_token"] > 0 and r["decode_ms_per_token_p90"] >= r["decode_ms_per_token_median"]
    if out.energy_source == "modelled":
        assert "predicted_records" in out.data["energy_assumptions"]


def test_calibrate_cli_refuses_existing_out(tiny, tmp_path):
    _, ck, base_path = tiny
    out = tmp_path / "exists.json"
    out.write_text("keep me")
    with pytest.raises(SystemExit, match="--force"):
        P.main(["--calibrate", str(base_path), "--out", str(out), "--checkpoint", str(ck), "--budget-s", "2"])
    assert out.read_text() == "keep me"


def test_calibrate_cli_force_writes(tiny, tmp_path):
    _, ck, base_path = tiny
    out = tmp_path / "exists.json"
    out.write_text("old")
    P.main(["--calibrate", str(base_path), "--out", str(out), "--checkpoint", str(ck), "--budget-s", "2",
            "--decode-tokens", "3", "--prefill-tokens", "8", "--threads", "1", "--force"])
    assert len(load_profile(out).data["calibration"]["measured"]) == 9


def _fake_measure(base: dict, k: float, calls: list):
    by = {r["name"]: r for r in base["configs"]}

    def measure(m, name, *, repeats, decode_tokens, prefill_tokens, meter=None):
        calls.append(name)
        r = by[name]
        return {"decode": [k * r["decode_ms_per_token_median"]] * (repeats * decode_tokens),
                "prefill": [k * r["prefill_ms_per_token_median"]] * repeats, "energy_j": 0.0}
    return measure


@pytest.mark.parametrize("method,tol", [("scale", 1e-9), ("ratio", 1e-6), ("refit", 0.10), ("blend", 0.05)])
def test_host_k_times_slower_is_recovered(method, tol):
    base = example_profile(24)
    k, calls = 2.5, []
    prof = P.calibrate(None, base, threads=1, budget_s=10.0, method=method, max_repeats=3,
                       measure=_fake_measure(base, k, calls), progress=False)
    validate_profile(prof)
    b = {r["name"]: r for r in base["configs"]}
    for r in prof["configs"]:
        for f in ("decode_ms_per_token_median", "prefill_ms_per_token_median"):
            assert r[f] / b[r["name"]][f] == pytest.approx(k, rel=tol), (r["name"], f)
    assert prof["calibration"]["measured_over_base_decode_geomean"] == pytest.approx(k)
    if method == "scale":
        for per_bits in prof["calibration"]["fits"].values():
            assert per_bits["decode_ms_per_token_median"]["factor"] == pytest.approx(k)
    assert set(calls) == set(prof["calibration"]["measured"])  # only the subset was measured
    assert prof["calibration"]["repeats"] == 3  # max_repeats caps the repeats a generous budget allows


def test_depth_law_follows_a_launch_bound_host_that_a_power_law_in_parameters_misses():
    """A host whose time per token follows depth only (a GPU at batch 1: kernels per layer, not the parameters
    they touch): ``depth`` predicts every configuration from the subset; ``blend`` (the law in active
    parameters) cannot."""
    base = example_profile(24)
    by = {r["name"]: r for r in base["configs"]}
    per_bits = {32: 0.4, 8: 0.6, 4: 1.0}

    def launch_bound(m, name, *, repeats, decode_tokens, prefill_tokens, meter=None):
        r = by[name]
        ms = per_bits[r["bits"]] * r["depth"] ** 0.8
        return {"decode": [ms] * (repeats * decode_tokens), "prefill": [0.1 * ms] * repeats, "energy_j": 0.0}

    def worst_error(method):
        prof = P.calibrate(None, base, threads=1, budget_s=10.0, method=method, max_repeats=3,
                           measure=launch_bound, progress=False)
        truth = {n: per_bits[r["bits"]] * r["depth"] ** 0.8 for n, r in by.items()}
        return prof, max(abs(r["decode_ms_per_token_median"] / truth[r["name"]] - 1) for r in prof["configs"])

    prof, err = worst_error("depth")
    assert err < 1e-6
    for fits in prof["calibration"]["fits"].values():
        assert fits["decode_ms_per_token_median"]["method"] == "depth"
        assert max(abs(v) for v in fits["decode_ms_per_token_median"]["loo_residuals_ln"]) < 1e-9
    assert worst_error("blend")[1] > 0.10


def test_depth_methods_need_the_depth_of_every_record():
    base = example_profile(12)
    recs = [{k: v for k, v in r.items() if k != "depth"} for r in base["configs"]]
    measured = {r["name"]: {f: r[f] for f in ("decode_ms_per_token_median", "prefill_ms_per_token_median")}
                for r in recs}
    with pytest.raises(ValueError, match="needs every base record's 'depth'"):
        P.predict_from_measured(recs, measured, "depth")
    assert P.predict_from_measured(recs, measured, "blend")[0]  # the parameter laws do not


def test_budget_limits_the_repeats():
    base = example_profile(12)
    clock_t = [0.0]

    def clock():
        return clock_t[0]

    inner = _fake_measure(base, 1.0, [])

    def slow_measure(m, name, *, repeats, decode_tokens, prefill_tokens, meter=None):
        clock_t[0] += 0.5 * repeats  # every repeat "takes" 0.5 s
        return inner(m, name, repeats=repeats, decode_tokens=decode_tokens, prefill_tokens=prefill_tokens)

    prof = P.calibrate(None, base, threads=1, budget_s=20.0, measure=slow_measure, clock=clock, progress=False)
    cal = prof["calibration"]
    assert cal["seconds_used"] <= 20.0 and cal["repeats"] >= 2
    assert cal["seconds_used"] >= 10.0  # and the budget is used, not wasted


def test_calibration_subset_spans_each_precision():
    base = example_profile(24)
    names = P.calibration_subset(base["configs"])
    for bits in (32, 8, 4):
        grp = sorted((r for r in base["configs"] if r["bits"] == bits), key=lambda r: (r["active_params"], r["name"]))
        chosen = [r["name"] for r in grp if r["name"] in names]
        assert len(chosen) == 3 and chosen[0] == grp[0]["name"] and chosen[-1] == grp[-1]["name"]


def test_schema_checks_sources_and_partition():
    base = example_profile(6)
    bad = copy.deepcopy(base)
    bad["configs"][0]["source"] = "guessed"
    with pytest.raises(ProfileError, match="source"):
        validate_profile(bad)
    bad = copy.deepcopy(base)
    bad["configs"][0]["source"] = "predicted"
    with pytest.raises(ProfileError, match="calibration"):
        validate_profile(bad)


FP = {"cpu_model": "AMD EPYC", "cores_logical": 2, "torch_version": "2.13.0+cpu", "threads": 2, "bench_score_us": 25.0}


def test_fingerprint_comparison():
    assert compare_fingerprints({"fingerprint": FP}, dict(FP)) == []
    assert compare_fingerprints({"fingerprint": FP}, {**FP, "bench_score_us": 33.0}) == []  # within ±40 %
    assert compare_fingerprints({"fingerprint": FP}, {**FP, "bench_score_us": 12.0})  # 2x faster: another host
    assert compare_fingerprints({"cpu_model": "x"}, FP) is None  # no fingerprint: nothing to compare
    d = compare_fingerprints({"fingerprint": FP}, {**FP, "cpu_model": "Apple M2", "bench_score_us": 50.0})
    assert any("cpu_model" in x for x in d) and any("bench_score_us" in x for x in d)
    assert compare_fingerprints({"fingerprint": FP}, {**FP, "torch_version": "2.14.0"})


def test_host_check_warning_same_and_other_host():
    data = {"machine": {"fingerprint": FP}}
    assert P.host_check_warning(data, 2, "p.json", current=dict(FP)) is None
    w = P.host_check_warning(data, 2, "p.json", current={**FP, "cores_logical": 8})
    assert w and "another host" in w and "--calibrate p.json" in w
    cal = {"machine": {"fingerprint": FP}, "calibration": {"base_profile": {"path": "profiles/base.json"}}}
    w = P.host_check_warning(cal, 2, "mine.json", current={**FP, "cpu_model": "Apple M2"})
    assert "--calibrate profiles/base.json" in w  # re-calibrate from the base, not from a calibrated profile
    label = f"nofp-{time.time()}.json"
    w = P.host_check_warning({"machine": {}}, 2, label, current=dict(FP))
    assert w and "no host fingerprint" in w and "--calibrate" in w
    assert P.host_check_warning({"machine": {}}, 2, label, current=dict(FP)) is None  # once


def test_reference_profile_still_loads_and_has_no_fingerprint():
    p = load_profile("profiles/reference-cpu.json")
    assert len(p) == 48 and "fingerprint" not in p.data["machine"]
    assert compare_fingerprints(p.data["machine"], FP) is None


def test_host_fingerprint_fields():  # its speed is not asserted here: a timed test fails on a loaded host
    fp = P.host_fingerprint(1)
    assert set(fp) == set(FP) and fp["bench_score_us"] > 0
    json.dumps(fp)
    assert np.isfinite(fp["bench_score_us"])


class _WattMeter:
    """A meter that reads a constant ``power_w`` (a real meter's interface: ``measure()`` and its source)."""

    energy_source = "nvml"  # a source the schema knows; the readings are this fake's
    name = "fake-nvml"

    def __init__(self, power_w: float) -> None:
        self.power_w = power_w

    def measure(self):
        import contextlib

        from runtime.meters import Measurement

        @contextlib.contextmanager
        def block():
            m = Measurement(energy_source=self.energy_source, meter=self.name)
            t0 = time.perf_counter()
            yield m
            m.elapsed_s = time.perf_counter() - t0
            m.energy_j = self.power_w * m.elapsed_s
        return block()


def test_idle_power_is_read_from_a_real_meter_and_never_from_the_model():
    assert P.measure_idle_power_w(_WattMeter(120.0), seconds=0.02) == pytest.approx(120.0)
    from model.energy_model import ModelledCpuEnergy

    assert P.measure_idle_power_w(ModelledCpuEnergy(), seconds=0.02) is None
    assert P.measure_idle_power_w(None) is None


class _RecordingWattMeter(_WattMeter):
    """:class:`_WattMeter` that also sums, per configuration the model runs, the seconds of its blocks that held
    decode steps (``block_s``) and of the steps timed inside them (``steps_s``, added by :meth:`timed_steps`)."""

    def __init__(self, power_w: float, m) -> None:
        super().__init__(power_w)
        self.m, self.block_s, self.steps_s, self.inside = m, {}, {}, False

    def measure(self):
        import contextlib

        @contextlib.contextmanager
        def block():
            self.inside, before = True, sum(self.steps_s.values())
            try:
                with super(_RecordingWattMeter, self).measure() as ms:
                    yield ms
            finally:
                self.inside = False
            if sum(self.steps_s.values()) > before:  # not the idle reading
                self.block_s[self.m.name()] = self.block_s.get(self.m.name(), 0.0) + ms.elapsed_s
        return block()

    def timed_steps(self, timed):
        """``model.profile._timed_steps`` that adds the steps' own seconds while a block is open."""
        def steps(m_, tok, cache, n):
            out = timed(m_, tok, cache, n)
            if self.inside:
                self.steps_s[m_.name()] = self.steps_s.get(m_.name(), 0.0) + sum(out) / 1e3
            return out
        return steps


def test_calibrate_with_a_meter_measures_energy_and_idle_power(tiny, monkeypatch):
    m, _, base_path = tiny
    base = load_profile(base_path)
    monkeypatch.setattr(P, "IDLE_SECONDS", 0.02)
    meter = _RecordingWattMeter(50.0, m)
    monkeypatch.setattr(P, "_timed_steps", meter.timed_steps(P._timed_steps))
    prof = P.calibrate(m, base.data, threads=1, budget_s=2.0, decode_tokens=3, prefill_tokens=8, name="cal",
                       progress=False, meter=meter)
    validate_profile(prof)
    assert prof["idle_power_w"] == pytest.approx(50.0)
    assert prof["energy_assumptions"]["idle_power_w_basis"].startswith("measured: mean nvml power")
    assert prof["energy_source"] == "modelled"  # the predicted records are modelled, so the profile is
    assert prof["device"]["kind"] == "cpu" and all(r["device"] == "cpu" for r in prof["configs"])
    meas = [r for r in prof["configs"] if r["source"] == "measured"]
    pred = [r for r in prof["configs"] if r["source"] == "predicted"]
    assert meas and pred
    for r in meas:  # the meter's energy over its blocks (50 W x their seconds) per second of timed decode steps;
        # exact, whatever the host's load: a band around 50 W failed when the gaps between steps grew under load
        assert r["energy_source"] == "nvml"
        assert r["power_w"] == pytest.approx(50.0 * meter.block_s[r["name"]] / meter.steps_s[r["name"]], rel=1e-9), r
        assert r["power_w"] >= 50.0 * (1 - 1e-9)  # a block holds its timed steps
    for r in pred:  # the predicted time x the measured records' effective power of the precision
        assert r["energy_source"] == "modelled"
        w = [q["power_w"] for q in meas if q["bits"] == r["bits"]]
        assert min(w) * 0.5 < r["power_w"] < max(w) * 1.5
