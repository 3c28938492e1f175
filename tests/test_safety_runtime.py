"""Safety of the runtime and of ``deploy.py``: no silent overwrites, re-hashed policy metadata that is
rejected (never a crash), shield limits from the device, the checkpoint a policy was trained for,
argument checks before the model loads, the end of a replay trace, and sensors that hang."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from test_deploy import TRACE, exported  # noqa: F401 - the module fixture
from test_runtime_manager import make_policy

import deploy
from model.model import ElasticGPT, ModelConfig
from runtime.dynamics import DEVICES
from runtime.manager import ManagerConfig, RuntimeManager, State
from runtime.policy import HASH_KEY, META_KEY, PolicyFileError, content_hash, load_policy_file
from runtime.replay import ReplaySensors
from runtime.sensors import TEMP, ConstantSensor, FieldStatus, Reading, Sensor, SensorHub

TRACE_END_S = 11170.0  # phone-00.csv: last row at 11160 s, held for one 10 s step


def rehash(src: Path, dst: Path, edit) -> Path:
    """Copy of a policy file with ``edit(meta)`` applied to its meta_json and the content hash recomputed
    (what someone editing a file on purpose would do: the hash check alone cannot catch it)."""
    with np.load(src, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays[META_KEY]))
    edit(meta)
    arrays[META_KEY] = np.array(json.dumps(meta))
    arrays[HASH_KEY] = np.array(content_hash(arrays))
    with open(dst, "wb") as fh:
        np.savez(fh, **arrays)
    return dst


def _hub() -> SensorHub:
    return SensorHub([ConstantSensor({"soc_frac": 0.8, "plugged": 0.0, "temp_c": 30.0, "ambient_c": 25.0,
                                      "power_w": 2.0}, clock=time.monotonic, modelled=False)])


# ---- 1. no silent overwrites; a telemetry path in a missing folder fails before the model loads ------
@pytest.fixture
def no_model_load(monkeypatch):
    """Any attempt to load the model fails the test (checks must come first)."""
    import model as M

    def boom(*a, **kw):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(M, "load", boom)
    monkeypatch.setattr(M, "load_default", boom)


def test_export_refuses_an_existing_out_unless_force(exported, tmp_path: Path, capsys) -> None:  # noqa: F811
    out = tmp_path / "mine.npz"
    out.write_bytes(b"the user's file")
    with pytest.raises(SystemExit) as ei:
        deploy.main(["export", str(exported["run"]), "--out", str(out)])
    assert ei.value.code not in (0, None) and "--force" in str(ei.value.code) and "already exists" in str(ei.value.code)
    assert out.read_bytes() == b"the user's file"
    res = deploy.main(["export", str(exported["run"]), "--out", str(out), "--force"])
    assert load_policy_file(out).sha256 == res["sha256"]


def _run_args(exported, *extra: str) -> list[str]:  # noqa: F811
    return ["run", "--policy", str(exported["policy"]), "--checkpoint", str(exported["ckpt"]), "--max-tokens", "8",
            "--every-tokens", "4", "--no-status", "--sensors", f"replay:{TRACE}", "--speed", "100", *extra]


def test_run_refuses_an_existing_telemetry_file_unless_force(exported, tmp_path: Path, monkeypatch) -> None:  # noqa: F811
    tel = tmp_path / "t.jsonl"
    tel.write_text("keep me\n")
    import model as M

    real_load = M.load
    calls = []
    monkeypatch.setattr(M, "load", lambda *a, **kw: calls.append(1) or real_load(*a, **kw))
    with pytest.raises(SystemExit) as ei:
        deploy.main(_run_args(exported, "--telemetry", str(tel)))
    assert "already exists" in str(ei.value.code) and "--force" in str(ei.value.code)
    assert tel.read_text() == "keep me\n" and not calls  # refused before the model loaded
    s = deploy.main(_run_args(exported, "--telemetry", str(tel), "--force"))
    lines = [json.loads(x) for x in tel.read_text().splitlines()]
    assert len([d for d in lines if "final_action" in d]) == s["decisions"]


def test_run_telemetry_in_a_missing_folder_fails_before_the_model_loads(exported, tmp_path: Path,  # noqa: F811
                                                                         no_model_load) -> None:
    with pytest.raises(SystemExit) as ei:
        deploy.main(_run_args(exported, "--telemetry", str(tmp_path / "nope" / "t.jsonl")))
    msg = str(ei.value.code)
    assert "--telemetry" in msg and "does not exist" in msg and "nope" in msg


def test_bench_refuses_an_existing_json_unless_force(exported, tmp_path: Path) -> None:  # noqa: F811
    out = tmp_path / "bench.json"
    out.write_text("{}")
    with pytest.raises(SystemExit) as ei:
        deploy.main(["bench", "--policy", str(exported["policy"]), "--decisions", "10", "--json", str(out)])
    assert "already exists" in str(ei.value.code) and out.read_text() == "{}"


# ---- 2. re-hashed metadata edits: PolicyFileError and the safe fallback, never a crash -------------------
def _drop(path: str):
    def edit(meta: dict) -> None:
        *head, last = path.split(".")
        d = meta
        for k in head:
            d = d[k]
        del d[last]
    return edit


def _set(path: str, value: Any):
    def edit(meta: dict) -> None:
        *head, last = path.split(".")
        d = meta
        for k in head:
            d = d[k]
        d[last] = value
    return edit


def _v1_lookahead(meta: dict) -> None:
    meta["format_version"] = 1
    meta["lookahead"] = "abc"


def _unnamed_row(meta: dict) -> None:
    del meta["decode_table"][0]["name"]


def _many(*edits):
    def edit(meta: dict) -> None:
        for e in edits:
            e(meta)
    return edit


META_EDITS = {
    "no mask_rules.devices": _drop("mask_rules.devices"),
    "mask_rules.devices not an object": _set("mask_rules.devices", [1, 2]),
    "mask_rules a list": _set("mask_rules", []),
    "device t_max_c a string": _set("mask_rules.device.t_max_c", "hot"),
    "decode row without name": _unnamed_row,
    "decode row not an object": _set("decode_table", [1, 2, 3]),
    "no normalization.clip_obs": _drop("normalization.clip_obs"),
    "normalization.epsilon a string": _set("normalization.epsilon", "x"),
    "normalization a string": _set("normalization", "none"),
    "v1 lookahead abc": _v1_lookahead,
    "v1 decode row without name": _many(_set("format_version", 1), _drop("config_space"), _drop("env_params"),
                                        _unnamed_row),
    "env_params a string": _set("env_params", "abc"),
    "env_params infinite lookahead": _set("env_params.lookahead", math.inf),
    "env_params step_s a string": _set("env_params.step_s", "fast"),
    "env_params bad weight": _set("env_params.weights", {"death": None}),
    "no env_params (v2)": _drop("env_params"),
    "n_layers a string": _set("n_layers", "two"),
    "obs feature without name": _set("obs_features", [{"index": 0}]),
    "format_version true": _set("format_version", True),
    "model.checkpoint_sha256 a number": _set("model", {"checkpoint_sha256": 7}),
    "profile a list": _many(_set("profile", [1])),
}


@pytest.mark.parametrize("case", list(META_EDITS))
def test_rehashed_meta_edits_are_policy_file_errors_and_fall_back(tmp_path: Path, case: str) -> None:
    src = make_policy(tmp_path / "p.npz")
    bad = rehash(src, tmp_path / "bad.npz", META_EDITS[case])
    with pytest.raises(PolicyFileError):
        load_policy_file(bad)
    mgr = RuntimeManager.from_policy_path(bad, _hub())
    assert mgr.state == State.FALLBACK and mgr.policy_error
    assert mgr.decide(0.0) == mgr.safe


def test_the_rehash_helper_keeps_a_valid_file_valid(tmp_path: Path) -> None:
    src = make_policy(tmp_path / "p.npz")
    same = rehash(src, tmp_path / "same.npz", lambda meta: None)
    assert load_policy_file(same).meta["mask_rules"]["device_kind"] == "phone"


# ---- 3. the shield's limits come from the device, never from the policy alone ------------------------------
def _loosen(meta: dict) -> None:
    meta["mask_rules"]["device"]["t_max_c"] = 1000.0
    for d in meta["mask_rules"]["devices"].values():
        d["t_max_c"] = 1000.0
        d["r_th_c_per_w"] = 0.001
    meta["env_params"]["reserve_soc"] = 0.0


def test_a_rehashed_policy_cannot_loosen_the_shield(tmp_path: Path) -> None:
    bad = rehash(make_policy(tmp_path / "p.npz"), tmp_path / "loose.npz", _loosen)
    pf = load_policy_file(bad)  # a valid file: nothing wrong with it but its limits
    phone = DEVICES["phone"]
    for kw in ({}, {"device_kind": "phone"}):
        mgr = RuntimeManager(pf, _hub(), **kw)
        assert mgr.shield.ceiling_c == phone.t_max_c + ManagerConfig().temp_margin_c == 47.0
        assert mgr.shield.p.r_th_c_per_w == phone.r_th_c_per_w and mgr.shield.reserve == 0.05
    # the device at 50 °C: EMERGENCY, whatever the file says
    hot = SensorHub([ConstantSensor({"soc_frac": 0.8, "plugged": 0.0, "temp_c": 50.0}, modelled=False)])
    mgr = RuntimeManager(pf, hot, device_kind="phone")
    assert mgr.decide(time.monotonic()) == mgr.safe and mgr.state == State.EMERGENCY


def test_a_stricter_policy_tightens_the_shield(tmp_path: Path) -> None:
    def tighten(meta: dict) -> None:
        meta["mask_rules"]["device"]["t_max_c"] = 40.0
        meta["mask_rules"]["devices"]["phone"]["t_max_c"] = 40.0
        meta["env_params"]["reserve_soc"] = 0.2

    pf = load_policy_file(rehash(make_policy(tmp_path / "p.npz"), tmp_path / "tight.npz", tighten))
    mgr = RuntimeManager(pf, _hub(), device_kind="phone")
    assert mgr.shield.ceiling_c == 42.0 and mgr.shield.reserve == 0.2
    # a user-supplied device configuration is the device's own; the policy can still only tighten it
    from dataclasses import replace

    from runtime.shield import device_limits

    user = replace(DEVICES["phone"], t_max_c=50.0)
    assert device_limits("phone", pf.meta, user).t_max_c == 40.0
    assert device_limits("laptop", pf.meta).t_max_c == DEVICES["laptop"].t_max_c


def test_deploy_run_shields_with_the_device_limits(exported, tmp_path: Path, capsys) -> None:  # noqa: F811
    bad = rehash(exported["policy"], tmp_path / "loose.npz", _loosen)
    s = deploy.main(["run", "--policy", str(bad), "--checkpoint", str(exported["ckpt"]), "--max-tokens", "8",
                     "--no-status", "--sensors", f"replay:{TRACE}", "--speed", "100"])
    err = capsys.readouterr().err
    assert "ceiling 47.0 °C, reserve SoC 0.05" in err and "T_max 45.0" in err
    assert s["final_state"] != "FALLBACK"


# ---- 4. the checkpoint a policy was trained for ------------------------------------------------------------
@pytest.fixture(scope="module")
def other_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(1)
    m = ElasticGPT(ModelConfig(block_size=64, n_layer=6, n_head=4, n_embd=128, depths=(2, 3, 4, 6)))
    p = tmp_path_factory.mktemp("ckpt") / "other.pt"
    torch.save(m.checkpoint(), p)
    return p


def test_export_records_the_profiles_checkpoint_sha(exported) -> None:  # noqa: F811
    import hashlib

    meta = load_policy_file(exported["policy"]).meta
    assert meta["model"]["checkpoint_sha256"] == hashlib.sha256(exported["ckpt"].read_bytes()).hexdigest()


def test_run_refuses_another_checkpoint_unless_allowed(exported, other_ckpt: Path, capsys) -> None:  # noqa: F811
    args = ["run", "--policy", str(exported["policy"]), "--checkpoint", str(other_ckpt), "--max-tokens", "4",
            "--no-status", "--sensors", f"replay:{TRACE}", "--speed", "100"]
    with pytest.raises(SystemExit) as ei:
        deploy.main(args)
    msg = str(ei.value.code)
    assert "sha256" in msg and "--allow-checkpoint-change" in msg and str(other_ckpt) in msg
    s = deploy.main([*args, "--allow-checkpoint-change"])
    assert s["tokens"] == 4 and "running anyway" in capsys.readouterr().err


def test_run_warns_when_the_policy_records_no_checkpoint(exported, tmp_path: Path, capsys) -> None:  # noqa: F811
    old = rehash(exported["policy"], tmp_path / "old.npz", _drop("model"))
    s = deploy.main(["run", "--policy", str(old), "--checkpoint", str(exported["ckpt"]), "--max-tokens", "4",
                     "--no-status", "--sensors", f"replay:{TRACE}", "--speed", "100"])
    assert s["tokens"] == 4 and "records no checkpoint sha256" in capsys.readouterr().err


# ---- 5. argument checks before the model loads (in process; tests/test_cli_contract_deploy.py runs the CLI) --
@pytest.mark.parametrize("extra,code,needle", [
    (["--start-s", "1e9"], 2, "11170"),
    (["--device-kind", "toaster"], 2, "--device-kind"),
    (["--max-tokens", "0"], 2, "--max-tokens"),
    (["--prompts", "/nonexistent/prompts.txt"], 1, "--prompts"),
    (["--sensors", "replay:/nonexistent.csv"], 1, "--sensors"),
    (["--sensors", "bogus"], 2, "--sensors"),
])
def test_bad_run_arguments_exit_before_the_model_loads(exported, no_model_load, capsys, extra,  # noqa: F811
                                                       code: int, needle: str) -> None:
    with pytest.raises(SystemExit) as ei:
        deploy.main(_run_args(exported, *extra))
    got = ei.value.code
    if code == 2:
        assert got == 2
        msg = capsys.readouterr().err
        assert len(msg.strip().splitlines()) == 1
    else:
        assert isinstance(got, str)  # SystemExit("...") exits 1 with the message
        msg = got
    assert needle in msg


# ---- 6. the end of a replay trace; sensors that hang ----------------------------------------------------------
def test_replay_finishes_or_loops_at_the_end_of_the_trace() -> None:
    import traces

    tr = traces.load_trace(TRACE)
    dev = DEVICES["phone"]
    rp = ReplaySensors(tr, dev, clock=None, start_s=TRACE_END_S - 20)
    rp.advance_to(TRACE_END_S + 5)
    assert rp.finished
    lp = ReplaySensors(tr, dev, clock=None, start_s=TRACE_END_S - 20, loop=True)
    lp.advance_to(TRACE_END_S + 5)
    assert not lp.finished and lp.laps == 1
    assert lp.read().supply_w == float(tr.supply_w[0]) and lp.workload()["demand_tps"] == float(tr.demand_tps[0])
    assert lp.workload()["horizon_left_s"] == pytest.approx(TRACE_END_S - 5)
    with pytest.raises(ValueError, match="beyond the end"):
        ReplaySensors(tr, dev, clock=None, start_s=TRACE_END_S + 1)


def test_run_stops_when_the_trace_ends(exported, tmp_path: Path, capsys) -> None:  # noqa: F811
    args = ["run", "--policy", str(exported["policy"]), "--checkpoint", str(exported["ckpt"]), "--max-tokens", "200",
            "--every-tokens", "2", "--sensors", f"replay:{TRACE}", "--speed", "5000",
            "--start-s", str(TRACE_END_S - 30), "--status-s", "0", "--telemetry", str(tmp_path / "t.jsonl")]
    s = deploy.main(args)
    err = capsys.readouterr().err
    assert s["trace_finished"] and s["stop_reason"] == "trace_finished" and s["tokens"] < 200
    assert "trace finished" in err and "trace_finished" in err  # the message and the status line
    events = [json.loads(x) for x in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert any(e.get("event") == "trace_finished" for e in events)
    s = deploy.main([*args[:-2], "--replay-end", "loop", "--no-status"])
    assert s["tokens"] == 200 and not s["trace_finished"] and s["stop_reason"] is None and s["trace_laps"] >= 1


class SleepySensor(Sensor):
    """Temperature from a sensor whose read hangs for ``sleep_s`` once ``hang`` is set."""

    name = "sleepy"
    provides = ("temp_c",)

    def __init__(self, sleep_s: float, slow: bool) -> None:
        super().__init__(time.monotonic)
        self.sleep_s, self.slow, self.hang, self.reads = sleep_s, slow, False, 0

    def read(self) -> Reading:
        self.reads += 1
        if self.hang:
            time.sleep(self.sleep_s)
        return Reading(time.monotonic(), temp_c=30.0)


def test_a_hanging_slow_sensor_costs_one_deadline_then_nothing() -> None:
    s = SleepySensor(2.0, slow=True)
    hub = SensorHub([s, ConstantSensor({"soc_frac": 0.8, "plugged": 0.0}, modelled=False)], hold_s=0.5,
                    read_deadline_s=0.1, timeout_backoff_s=0.0)
    hub.poll()
    assert hub.status[TEMP] == FieldStatus.OK
    s.hang = True
    t0 = time.perf_counter()
    hub.poll()
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(5):
        hub.poll()
    rest = time.perf_counter() - t0
    assert first < 0.5 and rest < 0.1, (first, rest)  # not 2 s, and no waiting while it hangs
    assert hub.failures["timeout"] == 6 and s.reads == 2 and hub.status[TEMP] == FieldStatus.HELD
    time.sleep(0.6)
    hub.poll()
    assert hub.status[TEMP] == FieldStatus.LOST and hub.lost_required


def test_a_slow_sensors_late_reading_is_taken_at_the_next_poll() -> None:
    """A temperature read that always takes 0.3 s, past a 0.1-s deadline: the poll that started it does not wait
    for it, and the next due poll takes its reading (it used to be discarded, so such a sensor never delivered and
    the field went LOST: read as hot)."""
    s = SleepySensor(0.3, slow=True)
    s.hang = True
    hub = SensorHub([s, ConstantSensor({"soc_frac": 0.8, "plugged": 0.0}, modelled=False)], hold_s=5.0,
                    read_deadline_s=0.1, timeout_backoff_s=0.0)
    hub.poll()
    assert hub.failures["timeout"] == 1 and hub.status[TEMP] != FieldStatus.OK
    time.sleep(0.4)
    t0 = time.perf_counter()
    hub.poll()
    assert time.perf_counter() - t0 < 0.1  # taken, not read again
    assert hub.status[TEMP] == FieldStatus.OK and hub.values[TEMP] == 30.0 and hub.late_reads == 1 and s.reads == 1


def test_a_slow_inline_read_is_a_failure_and_backs_off() -> None:
    s = SleepySensor(0.3, slow=False)
    hub = SensorHub([s, ConstantSensor({"soc_frac": 0.8, "plugged": 0.0}, modelled=False)],
                    read_deadline_s=0.1, timeout_backoff_s=30.0)
    s.hang = True
    hub.poll()
    assert hub.failures["timeout"] == 1 and hub.status[TEMP] != FieldStatus.OK
    t0 = time.perf_counter()
    hub.poll()
    assert time.perf_counter() - t0 < 0.1 and s.reads == 1  # backed off: not read again yet


def test_a_hanging_sensor_does_not_block_decisions(tmp_path: Path) -> None:
    s = SleepySensor(2.0, slow=True)
    hub = SensorHub([s, ConstantSensor({"soc_frac": 0.8, "plugged": 0.0, "power_w": 2.0, "ambient_c": 25.0},
                                       modelled=False)], read_deadline_s=0.05)
    mgr = RuntimeManager(load_policy_file(make_policy(tmp_path / "p.npz")), hub, device_kind="phone")
    mgr.decide()
    s.hang = True
    t0 = time.perf_counter()
    for _ in range(20):
        mgr.decide()
    assert time.perf_counter() - t0 < 0.5
    assert hub.failures["timeout"] >= 1
