"""Live mode runs the real (tiny) model in each step and reports predicted vs measured latency."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from envs.live import LiveMicroLLMPowerEnv, sim_to_real, write_report
from model.model import ElasticGPT, ModelConfig
from model.profile import profile
from model.profile_schema import save_profile


@pytest.fixture(scope="module")
def tiny_live(tmp_path_factory):
    torch.manual_seed(0)
    m = ElasticGPT(ModelConfig(block_size=96, n_layer=3, n_head=4, n_embd=128, depths=(1, 2, 3))).eval()
    m.prepare()
    q = {m.name(c): {"val_loss": 5.0, "bits_per_byte": 7.0, "mc_accuracy": 0.25 + 0.05 * c.depth}
         for c in m.configs()}
    prof = profile(m, threads=1, repeats=1, decode_tokens=2, prefill_tokens=8, quality=q, name="tiny",
                   idle_power_w=1.0, progress=False)
    path = save_profile(prof, tmp_path_factory.mktemp("p") / "tiny.json")
    return m, path


def test_live_step_generates_and_measures(tiny_live):
    m, path = tiny_live
    env = LiveMicroLLMPowerEnv(model=m, profile=str(path), max_tokens_per_step=4)
    env.reset(seed=0)
    for a in (0, 5, 17):
        obs, r, term, trunc, info = env.step(a)
        assert env.observation_space.contains(obs)
        assert info["latency_ms_measured"] > 0 and info["latency_ms_predicted"] > 0
        assert 1 <= info["tokens_generated"] <= 4
        assert m.name() == env.costs.names[a]  # the live model really switched


def test_sim_to_real_report(tiny_live, tmp_path):
    m, path = tiny_live
    env = LiveMicroLLMPowerEnv(model=m, profile=str(path))
    rows = sim_to_real(env, tokens_per_config=2, repeats=1)
    assert [r["name"] for r in rows] == list(env.costs.names)
    write_report(rows, tmp_path / "s2r.md", {"profile": "tiny", "threads": 1, "tokens": 2, "repeats": 1,
                                             "date": "today"})
    assert "| L3-H100-fp32 |" in (tmp_path / "s2r.md").read_text()


def test_profile_and_model_mismatch_is_refused(tiny_live):
    from model.profile_schema import example_profile

    m, _ = tiny_live
    with pytest.raises(ValueError, match="do not match"):
        LiveMicroLLMPowerEnv(model=m, profile=example_profile(12))  # depth 4: not a configuration of the model


def test_sim_to_real_scores_a_calibrated_profile_and_keeps_earlier_sections(tiny_live, tmp_path):
    import json

    from model.profile import calibrate

    m, path = tiny_live
    base = json.loads(path.read_text())
    cal = calibrate(m, base, threads=1, budget_s=2.0, decode_tokens=3, prefill_tokens=8, progress=False)
    env = LiveMicroLLMPowerEnv(model=m, profile=str(path))
    rows = sim_to_real(env, tokens_per_config=2, repeats=1, calibrated=cal)
    assert all("calibrated_error_pct" in r and r["calibrated_source"] in ("measured", "predicted") for r in rows)
    out = tmp_path / "s2r.md"
    out.write_text("# Sim-to-real: predicted vs measured decode latency\n\nProfile: `old`; measured by "
                   "`python -m envs.live` on 2026-11-21 (old run).\n\n| L1 | 1 | 1 | 0 |\n")
    meta = {"profile": "tiny", "threads": 1, "tokens": 2, "repeats": 1, "date": "2026-12-01", "calibrated": "cal",
            "host_fingerprint": cal["machine"]["fingerprint"]}
    write_report(rows, out, meta)
    text = out.read_text()
    assert text.count("# Sim-to-real") == 1 and "## 2026-12-01" in text and "## 2026-11-21: earlier figures" in text
    assert text.index("## 2026-12-01") < text.index("## 2026-11-21") and "| L1 | 1 | 1 | 0 |" in text
    assert "calibrated error %" in text and "bench_score_us" in text


def test_sim_to_real_times_every_sample_at_the_same_context_round_robin(tiny_live):
    """Each timed sample starts on a fresh cache at the same context length (as model.profile measures), and the
    repeats go round-robin over the configurations (so a slow spell of the host spreads over all of them)."""
    m, path = tiny_live
    env = LiveMicroLLMPowerEnv(model=m, profile=str(path), context_tokens=8)
    seen, gen, set_config, current = [], env._generate, m.set_config, [None]

    def spy(n):
        if n == 3:  # the timed samples (tokens_per_config)
            seen.append((current[0], env._cache.length))
        return gen(n)

    def set_spy(cfg):
        current[0] = cfg
        return set_config(cfg)

    env._generate, m.set_config = spy, set_spy
    sim_to_real(env, tokens_per_config=3, repeats=2)
    names = list(env.costs.names)
    assert [c for c, _ in seen] == names + names  # round-robin
    assert {length for _, length in seen} == {8 + 1}  # the context and the one warm-up step, every time


def test_online_correction_predicts_a_slower_host_from_earlier_samples():
    """The prequential online figure: a host 3x slower than the profile is predicted to within 1 % from the second
    round on (the global ratio is trusted after MIN_SAMPLES samples), where the profile alone is 67 % off; a
    configuration measured once has no corrected figure (its only sample is the uncorrected first round); a host
    that changes speed mid-run is followed."""
    from envs.live import online_corrected
    from envs.power_env import load_cost_tables
    from model.profile_schema import example_profile

    costs = load_cost_tables(example_profile(12))
    pred = np.asarray(costs.decode_ms, dtype=float)
    n = len(pred)
    order = [(a, 3.0 * pred[a]) for _ in range(3) for a in range(n)]
    errs = online_corrected(costs, pred, order)
    assert all(e is not None and abs(e) < 1.0 for e in errs)
    assert online_corrected(costs, pred, order[:n]) == [None] * n
    # twice as slow again from the third round on: a ratio frozen at 3x would be 50 % off on rounds 3-5 (the
    # median of each configuration's rounds 2-5); followed (each precision's ratio, 4 samples a round here), less
    late = np.abs(online_corrected(costs, pred, order=[(a, f * pred[a]) for f in (3.0, 3.0, 6.0, 6.0, 6.0)
                                                       for a in range(n)]))
    assert late.max() < 45.0 and np.median(late) < 25.0
    # a host whose precisions are slowed differently (2x, 3x, 4x): each precision's own ratio, not their mix
    bits = [costs.space.values_of(i)["bits"] for i in range(n)]
    factor = {32: 2.0, 8: 3.0, 4: 4.0}
    errs = online_corrected(costs, pred, [(a, factor[bits[a]] * pred[a]) for _ in range(3) for a in range(n)])
    assert all(abs(e) < 1e-6 for e in errs[3:])  # from the second round's fourth sample on, every precision trusted


def test_sim_to_real_reports_the_online_corrected_error(tiny_live, tmp_path):
    m, path = tiny_live
    env = LiveMicroLLMPowerEnv(model=m, profile=str(path))
    one = sim_to_real(env, tokens_per_config=2, repeats=1)
    assert not any("online_error_pct" in r for r in one)  # nothing to predict from with a single round
    rows = sim_to_real(env, tokens_per_config=2, repeats=2)
    assert all(np.isfinite(r["online_error_pct"]) for r in rows)
    out = tmp_path / "s2r.md"
    write_report(rows, out, {"profile": "tiny", "threads": 1, "tokens": 2, "repeats": 2, "date": "2026-12-04"})
    text = out.read_text()
    assert "base + online error %" in text and "corrected online by the runtime's estimator" in text


def test_online_correction_benchmark_replays_a_live_report(tiny_live):
    import importlib.util

    spec = importlib.util.spec_from_file_location("online_correction", "benchmarks/online_correction.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    m, path = tiny_live
    env = LiveMicroLLMPowerEnv(model=m, profile=str(path))
    rows = sim_to_real(env, tokens_per_config=2, repeats=2)
    assert all(len(r["samples_ms"]) == 2 for r in rows)
    res = bench.replay({"meta": {"profile": str(path)}, "rows": rows})
    assert set(res) == {"profile", "profile + online (global level only)", "profile + online (precision level)",
                        "profile + online (precision level and size curve)"}
    # the replay of the live run's own order reproduces envs.live's online figure
    want = np.median(np.abs([r["online_error_pct"] for r in rows]))
    assert res["profile + online (precision level and size curve)"]["median_pct"] == pytest.approx(want)
    for r in rows:
        del r["samples_ms"]
    with pytest.raises(SystemExit, match="no per-repeat samples"):
        bench.replay({"meta": {"profile": str(path)}, "rows": rows})
    with pytest.raises(SystemExit, match="cannot read it"):
        bench.main([str(path.parent / "missing.json")])
    with pytest.raises(SystemExit, match="not an envs.live report"):
        bench.main([str(path)])  # a profile, not a report
