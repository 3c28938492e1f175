"""Tests of model.profile_schema: round-trip, numpy views, and field-naming rejections."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model.profile_schema import (
    COVERAGE_KS,
    SCHEMA_VERSION,
    Profile,
    ProfileError,
    config_arrays,
    example_profile,
    load_profile,
    machine_info,
    save_profile,
    validate_profile,
)


def test_example_round_trip(tmp_path: Path) -> None:
    data = example_profile(7)
    path = save_profile(data, tmp_path / "sub" / "p.json")
    prof = load_profile(path)
    assert isinstance(prof, Profile)
    assert prof.data == json.loads(json.dumps(data))
    assert len(prof) == 7
    assert prof.names == [c["name"] for c in data["configs"]]
    assert prof.config(prof.names[3])["depth"] == data["configs"][3]["depth"]
    with pytest.raises(KeyError, match="known"):
        prof.config("nope")
    # save -> load -> save is byte-stable
    again = save_profile(prof, tmp_path / "q.json")
    assert again.read_text() == path.read_text()


def test_arrays_in_config_order() -> None:
    data = example_profile(5)
    data["configs"][2]["coverage_at_k"] = {"1": 0.5, "4": 0.7}
    prof = Profile(data)
    lat = prof.array("decode_ms_per_token_median")
    assert lat.dtype == np.float64 and lat.shape == (5,)
    assert lat.tolist() == [c["decode_ms_per_token_median"] for c in data["configs"]]
    arrs = prof.arrays()
    assert {"bits", "depth", "active_params", "energy_j_per_token", "val_loss"} <= set(arrs)
    cov = prof.array("coverage_at_k")
    assert cov.shape == (5, len(COVERAGE_KS))
    assert cov[2, 0] == 0.5 and np.isnan(cov[2, 1]) and cov[2, 2] == 0.7
    ints = config_arrays(data, ["active_params"], dtype=np.int64)["active_params"]
    assert ints.dtype == np.int64
    with pytest.raises(KeyError):
        config_arrays(data, ["not_a_field"], dtype=np.int64)
    assert np.isnan(config_arrays(data, ["not_a_field"])["not_a_field"]).all()


def test_measured_source_needs_no_assumptions() -> None:
    data = example_profile(2, energy_source="rapl")
    validate_profile(data)


Mutator = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Mutator:
    def f(d: dict[str, Any]) -> None:
        obj: Any = d
        parts = path.replace("]", "").replace("[", ".").split(".")
        for p in parts[:-1]:
            obj = obj[int(p)] if p.isdigit() else obj[p]
        last = parts[-1]
        if value is _DELETE:
            del obj[int(last) if last.isdigit() else last]
        else:
            obj[int(last) if last.isdigit() else last] = value

    return f


_DELETE = object()

# (mutation, field path that must appear in the message, extra substring)
CASES: list[tuple[str, Mutator, str, str]] = [
    (
        "missing decode median",
        _set("configs[1].decode_ms_per_token_median", _DELETE),
        "configs[1].decode_ms_per_token_median",
        "is missing; re-run python -m model.profile",
    ),
    ("null field", _set("configs[0].energy_j_per_token", None), "configs[0].energy_j_per_token", "missing"),
    (
        "string latency",
        _set("configs[0].prefill_ms_per_token_median", "fast"),
        "configs[0].prefill_ms_per_token_median",
        "must be a number",
    ),
    (
        "nan energy",
        _set("configs[2].energy_j_per_token", float("nan")),
        "configs[2].energy_j_per_token",
        "finite",
    ),
    (
        "zero latency",
        _set("configs[0].decode_ms_per_token_median", 0.0),
        "configs[0].decode_ms_per_token_median",
        "(0, inf)",
    ),
    (
        "p90 below median",
        _set("configs[1].decode_ms_per_token_p90", 1e-6),
        "configs[1].decode_ms_per_token_p90",
        ">= decode_ms_per_token_median",
    ),
    ("heads > 1", _set("configs[0].heads", 1.5), "configs[0].heads", "(0, 1]"),
    ("heads 0", _set("configs[0].heads", 0.0), "configs[0].heads", "(0, 1]"),
    ("bad bits", _set("configs[0].bits", 3), "configs[0].bits", "one of"),
    ("bool depth", _set("configs[0].depth", True), "configs[0].depth", "integer"),
    ("float params", _set("configs[0].active_params", 1.5e6), "configs[0].active_params", "integer"),
    ("negative bytes", _set("configs[0].resident_bytes", -1), "configs[0].resident_bytes", ">= 1"),
    ("mc accuracy > 1", _set("configs[0].mc_accuracy", 1.2), "configs[0].mc_accuracy", "[0, 1]"),
    ("missing quality", _set("configs[0].val_loss", _DELETE), "configs[0].val_loss", "model.evaluate"),
    ("coverage > 1", _set("configs[0].coverage_at_k", {"1": 1.5}), "configs[0].coverage_at_k['1']", "[0, 1]"),
    (
        "coverage key",
        _set("configs[0].coverage_at_k", {"one": 0.5}),
        "configs[0].coverage_at_k['one']",
        "positive integer",
    ),
    ("bad energy source", _set("configs[0].energy_source", "guess"), "configs[0].energy_source", "one of"),
    ("duplicate name", _set("configs[1].name", "L1-H100-fp32"), "configs[1].name", "duplicates configs[0].name"),
    ("empty configs", _set("configs", []), "configs", "at least one"),
    ("missing configs", _set("configs", _DELETE), "configs", "missing"),
    ("config not object", _set("configs[0]", 5), "configs[0]", "must be an object"),
    ("machine cores", _set("machine.cores_logical", 0), "machine.cores_logical", ">= 1"),
    ("machine missing", _set("machine", _DELETE), "machine", "missing"),
    ("device kind", _set("device.kind", "tpu"), "device.kind", "one of"),
    ("projected without spec", _set("device.kind", "projected"), "device.spec", "required"),
    ("model sha", _set("model.checkpoint_sha256", 7), "model.checkpoint_sha256", "string"),
    ("arch not dict", _set("model.arch", []), "model.arch", "object"),
    ("method repeats", _set("method.repeats", 0), "method.repeats", ">= 1"),
    ("switch cost unit", _set("switch_costs.depth", 1.0), "switch_costs.depth", "unit suffix"),
    ("switch cost negative", _set("switch_costs.bits_ms", -1.0), "switch_costs.bits_ms", "[0, inf)"),
    ("modelled without assumptions", _set("energy_assumptions", None), "energy_assumptions", "required"),
    ("idle power", _set("idle_power_w", -0.1), "idle_power_w", "[0, inf)"),
    ("created", _set("created_utc", "yesterday"), "created_utc", "ISO 8601"),
    ("energy source", _set("energy_source", "battery"), "energy_source", "one of"),
]


@pytest.mark.parametrize(("label", "mutate", "field_path", "needle"), CASES, ids=[c[0] for c in CASES])
def test_malformed_field_rejected(label: str, mutate: Mutator, field_path: str, needle: str) -> None:
    data = copy.deepcopy(example_profile(3))
    mutate(data)
    with pytest.raises(ProfileError) as ei:
        validate_profile(data, "profiles/x.json")
    msg = str(ei.value)
    assert f"profiles/x.json: {field_path} " in msg, msg
    assert needle in msg, msg
    assert field_path in ei.value.field_paths


def test_all_problems_reported_at_once() -> None:
    data = example_profile(3)
    del data["configs"][0]["power_w"]
    data["configs"][2]["heads"] = 2.0
    with pytest.raises(ProfileError) as ei:
        validate_profile(data, "p.json")
    assert ei.value.field_paths == ["configs[0].power_w", "configs[2].heads"]


def test_schema_and_version_mismatch() -> None:
    data = example_profile(1)
    data["schema"] = "something.else"
    with pytest.raises(ProfileError, match="schema must be 'wattwise.profile'"):
        validate_profile(data, "p.json")
    data = example_profile(1)
    data["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(ProfileError, match="schema_version is 2 .* update wattwise"):
        validate_profile(data, "p.json")
    with pytest.raises(ProfileError, match="top level must be a JSON object"):
        validate_profile([], "p.json")


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="cannot be read"):
        load_profile(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ProfileError, match=r"bad\.json: is not valid JSON \(line 1"):
        load_profile(bad)
    data = example_profile(2)
    data["configs"][0]["decode_ms_per_token_median"] = -1
    p = tmp_path / "neg.json"
    p.write_text(json.dumps(data))
    with pytest.raises(ProfileError, match=r"neg\.json: configs\[0\]\.decode_ms_per_token_median"):
        load_profile(p)


def test_load_expectations(tmp_path: Path) -> None:
    data = example_profile(3)
    p = save_profile(data, tmp_path / "p.json")
    names = [c["name"] for c in data["configs"]]
    load_profile(p, expect_checkpoint_sha256="0" * 64, expect_config_names=names)
    with pytest.raises(ProfileError, match=r"model\.checkpoint_sha256 .* stale"):
        load_profile(p, expect_checkpoint_sha256="f" * 64)
    with pytest.raises(ProfileError, match=r"configs do not match .*missing \['extra-config'\]"):
        load_profile(p, expect_config_names=[*names, "extra-config"])


def test_save_refuses_invalid(tmp_path: Path) -> None:
    data = example_profile(2)
    data["configs"][0]["bits"] = 7
    with pytest.raises(ProfileError, match=r"configs\[0\]\.bits"):
        save_profile(data, tmp_path / "p.json")
    assert not (tmp_path / "p.json").exists()


def test_numpy_scalars_serialise(tmp_path: Path) -> None:
    data = example_profile(2)
    data["configs"][0]["active_params"] = np.int64(data["configs"][0]["active_params"])
    data["configs"][0]["power_w"] = np.float32(4.5)
    p = save_profile(data, tmp_path / "p.json")
    loaded = load_profile(p)
    assert loaded.configs[0]["power_w"] == 4.5


def test_machine_info_fits_schema() -> None:
    data = example_profile(1)
    data["machine"] = machine_info(threads=2, torch_version="2.x")
    validate_profile(data, "p.json")
    assert data["machine"]["cores_logical"] >= 1 and data["machine"]["cpu_model"]
