"""deploy.py: export a run folder, run the live (tiny) model under the manager, bench the runtime."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_runtime_policy import _train, model_grid_profile

import deploy
from model.model import ElasticGPT, ModelConfig
from model.profile_schema import save_profile
from runtime.policy import load_policy_file

TRACE = Path(__file__).resolve().parent.parent / "traces" / "data" / "default" / "phone-00.csv"


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("deploy")
    torch.manual_seed(0)
    m = ElasticGPT(ModelConfig(block_size=64, n_layer=6, n_head=4, n_embd=128, depths=(2, 3, 4, 6)))
    ckpt = tmp / "tiny.pt"
    torch.save(m.checkpoint(), ckpt)
    prof = model_grid_profile()  # measured on the tiny checkpoint: `run` checks the policy's checkpoint sha256
    prof["model"]["checkpoint_sha256"] = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    save_profile(prof, tmp / "profile.json")
    run, _, _ = _train(tmp, "ppo")
    out = tmp / "cli_policy.npz"
    res = deploy.main(["export", str(run), "--out", str(out), "--device-kind", "phone"])
    assert res["sha256"] == load_policy_file(out).sha256
    return {"run": run, "policy": out, "ckpt": ckpt, "tmp": tmp}


def test_export_cli_writes_a_loadable_policy(exported) -> None:
    pf = load_policy_file(exported["policy"])
    assert pf.meta["algo"] == "ppo" and pf.n_actions == 12 and pf.obs_dim == 19
    assert pf.meta["run"]["dir"] == str(exported["run"])
    with np.load(exported["policy"], allow_pickle=False) as z:  # nothing needs pickle
        assert all(z[k].dtype != object for k in z.files)


def test_optional_onnx_export_matches_numpy(exported, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from runtime.observation import model_layout
    from runtime.policy import NumpyPolicy

    onnx_path = deploy.export_onnx(exported["policy"], tmp_path / "p.onnx")
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    lay = model_layout(0)
    lo, hi = lay.lo, lay.hi
    obs = np.random.default_rng(0).uniform(lo, hi, (5000, lo.shape[0])).astype(np.float32)
    logits = sess.run(None, {"obs": obs})[0]
    pol = NumpyPolicy(load_policy_file(exported["policy"]))
    np.testing.assert_allclose(logits, pol.logits_batch(obs), atol=1e-4)


def test_export_rejects_inconsistent_runs(exported, tmp_path: Path) -> None:
    import shutil

    bad = tmp_path / "run"
    shutil.copytree(exported["run"], bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["decode_table"] = cfg["decode_table"][:-1]
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(SystemExit, match="decode table"):
        deploy.main(["export", str(bad), "--out", str(tmp_path / "x.npz")])
    cfg = json.loads((exported["run"] / "config.json").read_text())
    cfg["algo"] = "a2c"
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(SystemExit, match="a2c.*choose one of"):
        deploy.main(["export", str(bad), "--out", str(tmp_path / "x.npz")])


def _run(exported, tmp: Path, *extra: str) -> dict:
    tel = tmp / "telemetry.jsonl"
    args = ["run", "--policy", str(exported["policy"]), "--checkpoint", str(exported["ckpt"]),
            "--max-tokens", "48", "--every-tokens", "4", "--telemetry", str(tel), "--no-status", *extra]
    summary = deploy.main(args)
    lines = [json.loads(x) for x in tel.read_text().splitlines()]
    decisions = [d for d in lines if "final_action" in d]
    assert len(decisions) == summary["decisions"]
    return summary


def test_run_with_replay_sensors_switches_the_live_model(exported, tmp_path: Path, capsys) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("In the beginning\nAnd God said\n")
    s = _run(exported, tmp_path, "--sensors", f"replay:{TRACE}", "--speed", "600", "--prompts", str(prompts))
    assert s["tokens"] == 96 and s["decisions"] == 1 + 96 // 4
    assert s["final_state"] == "NORMAL" and s["sensor_failures"]["future"] == 0
    assert 0 < s["final_soc"] <= 1 and s["virtual_s"] > 0
    assert sum(s["tokens_per_config"].values()) == 96
    out = capsys.readouterr()
    assert "prompt 2/2" in out.out and "summary" in out.err


def test_run_live_without_battery_is_degraded_not_dead(exported, tmp_path: Path) -> None:
    s = _run(exported, tmp_path, "--sensors", "live", "--prompt", "Hello")
    assert s["tokens"] == 48
    # this test machine may or may not have a battery / temperature sensor; either way it runs
    assert s["final_state"] in ("NORMAL", "DEGRADED", "EMERGENCY")


def test_run_with_a_tampered_policy_falls_back(exported, tmp_path: Path) -> None:
    # one weight changed after export, the stored content hash kept (flipping a byte at a fixed offset could land
    # in the zip's timestamps, which carry no content, and the file would rightly still load)
    bad = tmp_path / "bad.npz"
    with np.load(exported["policy"], allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    name = max((k for k in arrays if arrays[k].dtype.kind == "f"), key=lambda k: arrays[k].size)
    arrays[name] = arrays[name].copy()
    arrays[name].flat[arrays[name].size // 2] += 0.5
    np.savez(bad, **arrays)
    s = deploy.main(["run", "--policy", str(bad), "--checkpoint", str(exported["ckpt"]), "--max-tokens", "16",
                     "--sensors", f"replay:{TRACE}", "--speed", "100", "--no-status"])
    assert s["final_state"] == "FALLBACK" and s["policy_error"]
    assert list(s["tokens_per_config"]) == ["L2-H025-int4"]  # the smallest configuration


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_run_interrupted_mid_generation_closes_telemetry_and_reports(exported, tmp_path: Path, capsys, monkeypatch,
                                                                     exc: type[BaseException]) -> None:
    from runtime.manager import Telemetry

    stream = ElasticGPT.stream

    def failing_stream(self, *a, **kw):
        for k, tok in enumerate(stream(self, *a, **kw)):
            if k == 10:
                raise exc("stop")
            yield tok

    closed = []
    tel_close = Telemetry.close

    def spy_close(self) -> None:
        fh = self.fh
        tel_close(self)
        closed.append(fh)

    monkeypatch.setattr(ElasticGPT, "stream", failing_stream)
    monkeypatch.setattr(Telemetry, "close", spy_close)
    tel = tmp_path / "telemetry.jsonl"
    with pytest.raises(exc, match="stop"):
        deploy.main(["run", "--policy", str(exported["policy"]), "--checkpoint", str(exported["ckpt"]),
                     "--max-tokens", "48", "--every-tokens", "4", "--telemetry", str(tel), "--no-status",
                     "--sensors", f"replay:{TRACE}", "--speed", "600"])
    assert len(closed) == 1 and closed[0].closed  # the telemetry file was flushed and closed
    decisions = [d for d in map(json.loads, tel.read_text().splitlines()) if "final_action" in d]
    err = capsys.readouterr().err
    summary = json.loads(err.split("[deploy] summary ", 1)[1].splitlines()[0])
    assert summary["tokens"] == 10 and summary["decisions"] == len(decisions) == 1 + 10 // 4
    assert sum(summary["tokens_per_config"].values()) == 10 and summary["virtual_s"] > 0


def test_bench_reports_latency_and_process_figures(exported) -> None:
    d = deploy.bench_decisions(str(exported["policy"]), 3000, poll_every=True, telemetry_path=None)
    assert d["n"] == 3000 and 0 < d["median_us"] <= d["p99_us"]
    p = deploy.bench_process(str(exported["policy"]))
    assert not p["torch_imported"] and p["rss_mb_peak_after_10k_decisions"] > 0
    assert p["import_runtime_ms_after_numpy"] > 0


def test_run_learns_this_hosts_latency_and_saves_a_calibrated_profile(exported, tmp_path: Path) -> None:
    """The token loop feeds measured decode latency to the runtime's online correction;
    --save-calibrated writes the policy's profile corrected by it (a valid profile)."""
    from model.profile_schema import load_profile

    out = tmp_path / "calibrated.json"
    s = _run(exported, tmp_path, "--sensors", f"replay:{TRACE}", "--speed", "600", "--max-tokens", "64",
             "--save-calibrated", str(out))
    assert s["tokens"] == 64
    prof = load_profile(out)
    cal = prof.data["calibration"]
    assert cal["source"] == "runtime online correction"
    measured = [c for c in prof.configs if c.get("source") == "measured"]
    assert measured, "no configuration learned its latency from the run"
    (tmp_path / "again").mkdir()
    # an existing output is refused before the model loads (a message: exit status 1)
    with pytest.raises(SystemExit, match="calibrated profile already exists"):
        _run(exported, tmp_path / "again", "--sensors", f"replay:{TRACE}", "--save-calibrated", str(out))


def test_a_live_run_takes_the_batterys_own_capacity_unless_told(tmp_path, capsys):
    """``--capacity-wh`` overrides; else the battery's ``energy_full`` (or ``charge_full`` × ``voltage_min_design``);
    else the default, and the run says which."""
    import types

    from runtime.meters import PowerSupplyMeter
    from runtime.sensors import PowerSupplySensor

    d = tmp_path / "ps" / "BAT0"
    d.mkdir(parents=True)
    for k, v in {"type": "Battery", "status": "Discharging", "power_now": 9_000_000, "capacity": 50,
                 "charge_full": 3_800_000, "voltage_min_design": 15_000_000}.items():
        (d / k).write_text(f"{v}\n")
    sensors = [PowerSupplySensor(PowerSupplyMeter(tmp_path / "ps"))]
    run = lambda wh: deploy.RunSession.live_capacity_wh(types.SimpleNamespace(args=types.SimpleNamespace(  # noqa: E731
        capacity_wh=wh)), sensors)
    assert run(None) == pytest.approx(57.0) and "57.0 Wh, sensed" in capsys.readouterr().err
    assert run(30.0) == 30.0
    assert deploy.RunSession.live_capacity_wh(types.SimpleNamespace(args=types.SimpleNamespace(capacity_wh=None)),
                                              []) == deploy.DEFAULT_CAPACITY_WH
    assert "assumed (none sensed)" in capsys.readouterr().err
