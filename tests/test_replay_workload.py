"""deploy.py run in replay mode feeds the manager the env's workload inputs (``--replay-workload env``, the
default) or the job's (``job``); ``deploy.py export --profile``; the per-decision telemetry fields."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from test_runtime_policy import model_grid_profile

import deploy
import traces as T
from envs.power_env import MicroLLMPowerEnv
from envs.tables import load_cost_tables
from model.model import ElasticGPT, ModelConfig
from model.profile_schema import save_profile
from runtime.dynamics import DEVICES, DeviceConstants, Dynamics, EnvParams, Inputs, plant_of
from runtime.observation import ObsLayout
from runtime.policy import load_policy_file, save_policy_file

REPO = Path(__file__).resolve().parent.parent
TRACE = "deadline-00"  # a phone trace of the default test split, one row per 10 s env step
TRACE_CSV = T.default_trace_set_dir() / f"{TRACE}.csv"
START = 40  # a window with demand
SLOW, SLOW2, FAST = "L6-H050-fp32", "L3-H050-int8", "L2-H100-int8"
# 30 decisions: slow configurations build a queue of the trace's demand, the fast one drains it
SCRIPT = [SLOW] * 8 + [FAST] * 6 + [SLOW2] * 6 + [FAST] * 4 + [SLOW] * 6
TOKENS_PER_INTERVAL = 5  # the first after a switch is not measured (KV repair)


def slow_profile() -> dict:
    """The tiny model's grid profile made slow (every depth but 2 decodes 20x slower: 5-9 tok/s against a
    demand of tens of tok/s, so a queue builds), cool (0.3 W while decoding: the device stays below its trip
    point, so the env's and the replay's temperatures need not agree) and with free switches (the emulation
    does not model a switch's compute time)."""
    p = model_grid_profile()
    for c in p["configs"]:
        f = 1.0 if c["depth"] == 2 else 20.0
        for k in ("decode_ms_per_token_median", "decode_ms_per_token_p90"):
            c[k] *= f
        c["decode_tokens_per_s"] = 1000.0 / c["decode_ms_per_token_median"]
        c["power_w"] = 0.3
        c["energy_j_per_token"] = 0.3 * c["decode_ms_per_token_median"] / 1000.0
    p["switch_costs"] = {k: 0.0 for k in p["switch_costs"]}
    p["name"] = "slow-grid"
    return p


def write_policy(path: Path, profile: Path, ckpt_sha: str) -> Path:
    """A random actor on ``profile``'s space (the test scripts the configurations; the actor is not used)."""
    costs = load_cost_tables(profile)
    layout = ObsLayout(costs.space.features)
    rng = np.random.default_rng(0)
    n, d = len(costs.names), layout.dim
    meta = {"algo": "ppo", "activation": "Tanh", "obs_features": layout.table(),
            "config_space": costs.space.to_json(), "decode_table": costs.decode_table(),
            "env_params": EnvParams().to_dict(),
            "normalization": {"norm_obs": False, "clip_obs": 10.0, "epsilon": 1e-8},
            "mask_rules": {"device_kind": "phone", "device": asdict(DEVICES["phone"]),
                           "devices": {k: asdict(v) for k, v in DEVICES.items()}},
            "profile": {"path": str(profile), "sha256": hashlib.sha256(profile.read_bytes()).hexdigest(),
                        "name": "slow-grid"},
            "model": {"checkpoint_sha256": ckpt_sha}}
    save_policy_file(path, [(rng.normal(0, 0.5, (16, d)), np.zeros(16)), (rng.normal(0, 1.0, (n, 16)), np.zeros(n))],
                     meta, np.zeros(d), np.ones(d),
                     {"energy_j_per_token": costs.ept_j, "power_w": costs.power_w, "decode_tokens_per_s": costs.tps},
                     costs.features)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("replay_workload")
    torch.manual_seed(0)
    m = ElasticGPT(ModelConfig(block_size=64, n_layer=6, n_head=4, n_embd=128, depths=(2, 3, 4, 6)))
    ckpt = tmp / "tiny.pt"
    torch.save(m.checkpoint(), ckpt)
    sha = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    prof = slow_profile()
    prof["model"]["checkpoint_sha256"] = sha
    save_profile(prof, tmp / "slow.json")
    return {"ckpt": ckpt, "profile": tmp / "slow.json", "policy": write_policy(tmp / "policy.npz", tmp / "slow.json",
                                                                                sha), "tmp": tmp}


def drive(files: dict[str, Path], workload: str, telemetry: Path | None = None) -> tuple[list[tuple], Any, dict]:
    """``deploy.py run --sensors replay:<TRACE>`` driven by hand in exact virtual time: a decision every
    env step from row ``START``, the configurations of ``SCRIPT`` (the manager still decides, its choice is
    replaced), ``TOKENS_PER_INTERVAL`` tokens per step each measured at the profile's decode time of the
    configuration running. Returns what the manager was fed at each decision (demand_tps, backlog_frac,
    latency_over_slo, the job's remaining tokens, the last token's latency), the ``deploy.RunSession`` and
    its summary."""
    argv = ["run", "--policy", str(files["policy"]), "--checkpoint", str(files["ckpt"]),
            "--sensors", f"replay:{TRACE_CSV}", "--start-s", repr(START * 10.0), "--max-tokens", "100000",
            "--replay-workload", workload, "--no-status"]
    if telemetry is not None:
        argv += ["--telemetry", str(telemetry)]
    sess = deploy.RunSession(deploy.build_parser().parse_args(argv))
    sess.replay._wall = None  # manual virtual time: the test moves the replay's clock (advance_to)
    dec = load_cost_tables(files["profile"]).decode_ms
    seen: list[tuple] = []
    decide = sess.mgr.decide

    def scripted(now_s: float | None = None) -> int:
        mgr = sess.mgr
        seen.append((mgr.demand_tps, mgr.backlog_frac, mgr.latency_over_slo, sess.total_tokens - sess.tokens,
                     sess.last_lat_ms))
        decide(now_s)
        return sess.names.index(SCRIPT[len(seen) - 1])

    sess.mgr.decide = scripted
    dt = sess.params.step_s
    sess._start(100_000)
    t = sess.last_tok_wall
    for k in range(1, len(SCRIPT)):
        for _ in range(TOKENS_PER_INTERVAL):
            t += float(dec[sess.idx]) / 1000.0
            sess.on_token(0, t)
        sess.replay.advance_to((START + k) * dt)
        sess.decide(t)
    summary = sess.close()
    return seen, sess, summary


def env_inputs(files: dict[str, Path]) -> list[tuple[float, float, float, float]]:
    """The env's own demand / backlog / latency inputs at each decision of ``SCRIPT`` (the observation's values,
    unclipped: the last step's demand, ``StepResult.backlog`` / cap, ``StepResult.latency_ms`` / SLO), and the
    temperature the step started at."""
    pf = load_policy_file(files["policy"])
    env = MicroLLMPowerEnv(profile=str(files["profile"]), traces=T.default_trace_set_dir(), split="test",
                           random_start=False, params=pf.params)
    names, p = list(env.costs.names), env.params
    demand = env.traces[[t.name for t in env.traces].index(TRACE)].demand_tps
    obs, _ = env.reset(seed=0, options={"trace": TRACE, "start": START})
    i = {n: env.layout.names.index(n) for n in ("demand_tps", "backlog_frac", "latency_over_slo")}
    out = [(float(obs[i["demand_tps"]]), float(obs[i["backlog_frac"]]), float(obs[i["latency_over_slo"]]),
            float(env.sim_state()["temp_c"]))]
    for k, name in enumerate(SCRIPT[:-1]):
        temp = env.sim_state()["temp_c"]
        obs, _, term, trunc, info = env.step(names.index(name))
        assert not (term or trunc)
        st = info["step"]
        out.append((float(demand[START + k]), st.backlog / p.backlog_cap_tokens, st.latency_ms / p.slo_ms, temp))
        # the observation carries the same values (clipped to its bounds)
        assert obs[i["demand_tps"]] == pytest.approx(out[-1][0], rel=1e-6)
        assert obs[i["backlog_frac"]] == pytest.approx(out[-1][1], rel=1e-6, abs=1e-7)
        assert obs[i["latency_over_slo"]] == pytest.approx(min(out[-1][2], 100.0), rel=1e-6)
    return out


def test_env_workload_feeds_the_manager_the_envs_own_inputs(files) -> None:
    seen, sess, _ = drive(files, "env")
    want = env_inputs(files)
    dev = sess.device
    assert max(w[3] for w in want) < dev.t_max_c  # no throttling: the env's and the replay's θ are both 1
    assert len(seen) == len(want) == len(SCRIPT)
    # within 1e-6, relative where the values are large: the env keeps the trace's columns as float32
    for k, (got, w) in enumerate(zip(seen, want)):
        assert got[0] == pytest.approx(w[0], rel=1e-6, abs=1e-6), f"decision {k}: demand_tps"
        assert got[1] == pytest.approx(w[1], rel=1e-6, abs=1e-6), f"decision {k}: backlog_frac"
        assert got[2] == pytest.approx(w[2], rel=1e-6, abs=1e-6), f"decision {k}: latency_over_slo"
    backlog = [w[1] for w in want]
    assert max(backlog) > 0.05 and any(b == 0.0 for b in backlog[9:])  # a queue built up, and was drained
    assert seen[0][1:3] == (0.0, 0.0)  # as the env at reset
    # the replay's model power follows the current row, not the last step's demand
    assert sess.demand_tps == pytest.approx(
        float(T.load_trace(TRACE_CSV).demand_tps[START + len(SCRIPT) - 1]))


def test_job_workload_reproduces_the_old_inputs(files) -> None:
    seen, sess, _ = drive(files, "job")
    p = sess.params
    demand = [float(x) for x in T.load_trace(TRACE_CSV).demand_tps]
    assert seen[0][1] == 0.0 and seen[0][2] is None  # the first decision: no backlog, the predicted latency
    assert seen[0][0] == demand[START]
    for k, (d, backlog, lat, remaining, last_lat) in enumerate(seen[1:], start=1):
        assert d == demand[START + k]  # the current row's demand
        assert backlog == min(1.0, remaining / p.backlog_cap_tokens) == 1.0  # the job: 100 000 tokens left
        assert lat == last_lat / p.slo_ms  # the last token's latency
    assert sess.env_workload is None


def test_env_workload_throttles_and_caps_like_the_env() -> None:
    """One interval at 50 °C (5 °C over the trip point: θ = 0.5), 10 ms/token (50 tok/s throttled), 80 tok/s
    demand for 10 s on 100 queued tokens: 900 requested, 500 served, 400 queued; latency 10 / 0.5 + 1000 ·
    400 / 50 = 8020 ms. The same numbers as ``runtime.dynamics`` (``Dynamics.step``), also at the cap."""
    dev = DeviceConstants(r_th_c_per_w=5.0, tau_s=240.0, t_max_c=45.0, throttle_per_c=0.1, throttle_min=0.3)
    p = EnvParams()
    ew = deploy.EnvWorkload(p, dev)
    ew.queue_tokens = 100.0
    ew.serve(80.0, 10.0, 10.0, 50.0)
    assert ew.queue_tokens == pytest.approx(400.0) and ew.latency_ms == pytest.approx(8020.0)
    assert ew.inputs(7.0) == pytest.approx({"demand_tps": 80.0, "backlog_frac": 400.0 / p.backlog_cap_tokens,
                                            "latency_over_slo": 8020.0 / p.slo_ms})

    class Tables:  # one local configuration at 10 ms/token
        tps, ept_j, decode_ms, quality = np.array([100.0]), np.array([0.01]), np.array([10.0]), np.array([0.5])
        offload, up_bits, server_ms = np.zeros(1), np.zeros(1), np.zeros(1)
        switch_s = switch_j = np.zeros((1, 1))

    dyn = Dynamics(Tables, p)
    for q0, demand, temp in ((100.0, 80.0, 50.0), (4800.0, 200.0, 60.0), (0.0, 5.0, 30.0)):
        ew = deploy.EnvWorkload(p, dev)
        ew.queue_tokens = q0
        ew.serve(demand, p.step_s, 10.0, temp)
        _, r = dyn.step(dyn.state(1, soc=0.5, temp_c=temp, backlog=q0), np.array([0]),
                        Inputs(demand_tps=demand, supply_w=0.0, ambient_c=25.0, base_w=0.0, budget_w=np.nan),
                        plant_of(36000.0, dev))
        assert ew.queue_tokens == pytest.approx(float(r.backlog[0]), abs=1e-9)
        assert ew.latency_ms == pytest.approx(float(r.latency_ms[0]), rel=1e-12)
    assert ew.queue_tokens == 0.0 and ew.latency_ms == pytest.approx(10.0)


def test_telemetry_records_tokens_and_median_decode_latency(files) -> None:
    tel = files["tmp"] / "run.jsonl"
    _, _, summary = drive(files, "env", telemetry=tel)
    lines = [json.loads(x) for x in tel.read_text().splitlines()]
    decisions = [x for x in lines if "final_action" in x]
    assert len(decisions) == len(SCRIPT) == summary["decisions"]
    dec = load_cost_tables(files["profile"]).decode_ms
    names = list(load_cost_tables(files["profile"]).names)
    assert decisions[0]["tokens"] is None and decisions[0]["decode_ms"] is None  # nothing ran before the first
    for ran, rec in zip(SCRIPT, decisions[1:]):
        assert rec["tokens"] == TOKENS_PER_INTERVAL
        # measured at the profile's decode time of what ran since the previous decision (the script's), up to the
        # rounding of the replayed timing arithmetic (1.5e-9 relative seen on a long-running host): rel 1e-6
        assert rec["decode_ms"] == pytest.approx(float(dec[names.index(ran)]), rel=1e-6)
    assert sum(x["tokens"] or 0 for x in decisions) == summary["tokens"]
    end = [x for x in lines if x.get("event") == "generation_end"]
    assert len(end) == 1 and end[0]["tokens"] == 0 and end[0]["decode_ms"] is None
    assert end[0]["t_s"] == decisions[-1]["t_s"]  # the clock did not move after the last decision


def _run_folder(path: Path, profile: Path) -> Path:
    """A minimal run folder (config.json + an SB3-shaped PPO actor) trained on ``profile``."""
    costs = load_cost_tables(profile)
    d, n = ObsLayout(costs.space.features).dim, len(costs.names)
    path.mkdir()
    g = torch.Generator().manual_seed(0)
    torch.save({"mlp_extractor.policy_net.0.weight": torch.randn(8, d, generator=g),
                "mlp_extractor.policy_net.0.bias": torch.zeros(8),
                "action_net.weight": torch.randn(n, 8, generator=g), "action_net.bias": torch.zeros(n)},
               path / "policy_state.pt")
    (path / "config.json").write_text(json.dumps({
        "algo": "ppo", "env_kwargs": {"profile": str(profile)}, "env_params": EnvParams().to_dict(),
        "profile": {"path": str(profile), "sha256": hashlib.sha256(profile.read_bytes()).hexdigest()},
        "decode_table": costs.decode_table()}))
    return path


def test_export_profile_retables_a_run_and_refuses_another_space(files, tmp_path: Path) -> None:
    run = _run_folder(tmp_path / "run", files["profile"])
    calibrated = tmp_path / "calibrated.json"  # the same space, 3x slower and costlier
    prof = json.loads(files["profile"].read_text())
    for c in prof["configs"]:
        c["decode_ms_per_token_median"] *= 3.0
        c["decode_ms_per_token_p90"] *= 3.0
        c["decode_tokens_per_s"] /= 3.0
        c["energy_j_per_token"] *= 3.0
    prof["switch_costs"] = {**{k: 2.0 * v for k, v in (prof.get("switch_costs") or {}).items()},
                            "depth_set_config_us": 50.0}
    save_profile(prof, calibrated)
    plain = deploy.main(["export", str(run), "--out", str(tmp_path / "plain.npz")])
    res = deploy.main(["export", str(run), "--out", str(tmp_path / "cal.npz"), "--profile", str(calibrated)])
    a, b = load_policy_file(plain["out"]), load_policy_file(res["out"])
    costs = load_cost_tables(calibrated)
    np.testing.assert_array_equal(b.decode_tokens_per_s, costs.tps)
    np.testing.assert_array_equal(b.energy_j_per_token, costs.ept_j)
    np.testing.assert_array_equal(b.config_features, costs.features)
    # the switch costs the shield prices into a budget: the env's, from each file's profile
    np.testing.assert_allclose(a.switch_j, load_cost_tables(files["profile"]).switch_j)
    np.testing.assert_allclose(b.switch_j, costs.switch_j)
    assert b.switch_j.max() > 0 and not np.allclose(a.switch_j, b.switch_j)
    np.testing.assert_allclose(b.decode_tokens_per_s, a.decode_tokens_per_s / 3.0)
    for (w0, b0), (w1, b1) in zip(a.layers, b.layers):  # the same actor
        np.testing.assert_array_equal(w0, w1)
        np.testing.assert_array_equal(b0, b1)
    assert b.meta["profile"]["path"] == str(calibrated) and b.meta["retabled"]["trained_profile"]["path"] == str(
        files["profile"])
    # a policy file re-tabled the same way (its run folder gone): the same tables
    again = deploy.main(["export", str(tmp_path / "plain.npz"), "--out", str(tmp_path / "again.npz"),
                         "--profile", str(calibrated)])
    c = load_policy_file(again["out"])
    np.testing.assert_array_equal(c.decode_tokens_per_s, b.decode_tokens_per_s)
    assert c.meta["retabled"]["from_policy_sha256"] == a.sha256
    # another configuration space (48 configurations of the reference profile): refused, with what to do
    other = REPO / "profiles" / "reference-cpu.json"
    for src in (run, tmp_path / "plain.npz"):
        with pytest.raises(SystemExit, match=r"--profile .*reference-cpu\.json: its configuration space \(48 "
                                             r"configurations\) differs from the (run|policy)'s.*same names in the "
                                             r"same order"):
            deploy.main(["export", str(src), "--out", str(tmp_path / "x.npz"), "--profile", str(other)])
    assert not (tmp_path / "x.npz").exists()
    with pytest.raises(SystemExit) as e:  # a policy file without --profile: a usage error
        deploy.main(["export", str(tmp_path / "plain.npz"), "--out", str(tmp_path / "y.npz")])
    assert e.value.code == 2
