"""deploy.py run with a placement policy: segments on this host's processors, a processor that fails
mid-generation, the shield moving the policy off it, and no token lost."""

from __future__ import annotations

import json

import pytest
from policy_helpers import random_policy_file

import deploy
from model.placement_profile import build
from model.profile_schema import load_profile
from runtime.hardware import load_hardware


def _policy(tmp_path, favour_name: str) -> str:
    prof = build(load_hardware("phone-sd8gen2"), load_profile("profiles/reference-cpu.json"), roles=["cpu", "gpu"],
                 cuts="none")
    path = tmp_path / "place.json"
    path.write_text(json.dumps(prof))
    return random_policy_file(tmp_path / "place-policy.npz", path, favour=favour_name)


def _args(pol: str) -> list[str]:
    return ["run", "--policy", pol, "--sensors", "replay:traces/data/default/phone-00.csv", "--max-tokens", "80",
            "--temperature", "0", "--no-status", "--min-dwell", "0", "--every-tokens", "4", "--threads", "1"]


def test_a_lost_gpu_mid_generation_loses_no_token_and_the_shield_moves_off_it(tmp_path):
    pol = _policy(tmp_path, "L6-H100-fp32-gpu")
    summary = deploy.main(_args(pol) + ["--processors", "fake-gpu", "--inject-fault", "gpu:device_lost:30"])
    pl = summary["placement"]
    assert summary["tokens"] == 80  # none lost
    assert pl["faults"] >= 1 and pl["quarantine_events"] >= 1
    assert summary["tokens_per_config"].get("L6-H100-fp32-gpu", 0) >= 4  # it ran on the (fake) GPU first
    assert summary["overrides"].get("processor_mask", 0) > 0  # then the shield kept the policy off it
    assert any(not n.endswith("-gpu") for n in summary["tokens_per_config"])


def test_placements_on_a_processor_this_host_lacks_are_masked_with_the_reason(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this host has a GPU: nothing to mask")
    pol = _policy(tmp_path, "L6-H100-fp32-gpu")
    summary = deploy.main(_args(pol))
    err = capsys.readouterr().err
    assert "placements on gpu masked" in err and "cuda" in err.lower()
    assert summary["tokens"] == 80
    assert "L6-H100-fp32-gpu" not in summary["tokens_per_config"]
    assert summary["overrides"].get("processor_mask", 0) > 0


def test_inject_fault_flag_is_validated():
    with pytest.raises(SystemExit):
        deploy.main(["run", "--policy", "x.npz", "--inject-fault", "tpu:error:1"])
