"""Split configurations in the environment: names, masks when the link drops, the batched twin, the
split-aware baselines, and the profile builder's fits (docs/split.md)."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from agents.registry import SPLIT_BASELINES, default_controllers, make_controller
from envs import MicroLLMPowerEnv
from envs.batched import BatchedPowerEnv
from envs.tables import DEFAULT_PROFILE, load_cost_tables
from model.split_profile import depth_fits
from runtime.configspace import SPLIT_LOCAL, model_space, split_space
from traces import make_trace
from traces.schema import TraceMeta


def split_profile_dict() -> dict:
    """The reference profile plus split records with made-up but plausible costs (a test fixture)."""
    base = json.loads(DEFAULT_PROFILE.read_text())
    space = split_space(model_space(), (SPLIT_LOCAL, 1, 0), ("none", "fp16", "tabq"))
    by_name = {r["name"]: r for r in base["configs"]}
    recs = []
    for cfg in space.configs:
        local = by_name["-".join(space.name_of(cfg).split("-")[:3])]
        r = copy.deepcopy(local)
        r.update(name=space.name_of(cfg), split=int(cfg.split), wire=cfg.wire)
        if cfg.split != SPLIT_LOCAL:
            dev_ms = 0.05 if cfg.split == 0 else 0.3
            r.update(decode_ms_per_token_median=dev_ms, decode_ms_per_token_p90=dev_ms * 1.2,
                     decode_tokens_per_s=1000 / dev_ms, energy_j_per_token=r["power_w"] * dev_ms / 1000,
                     up_bytes_per_token={"none": 161.0, "fp16": 672.0, "tabq": 300.0}[cfg.wire],
                     server_ms_per_token=1.5, mc_accuracy=min(r["mc_accuracy"] + 0.01, 1.0))
        recs.append(r)
    base["configs"] = recs
    return base


def link_trace(bandwidth):
    n = len(bandwidth)
    t = np.arange(n) * 10.0
    meta = TraceMeta(capacity_wh=15.0, initial_soc=0.8, device_kind="phone", source="test", license="CC0-1.0",
                     unit="u0")
    return make_trace("link", meta,
                      t, supply_w=np.zeros(n), plugged=np.zeros(n), ambient_c=np.full(n, 25.0),
                      demand_tps=np.full(n, 8.0), bandwidth_mbps=np.asarray(bandwidth, float))


@pytest.fixture(scope="module")
def prof(tmp_path_factory):
    p = tmp_path_factory.mktemp("split") / "split.json"
    p.write_text(json.dumps(split_profile_dict()))
    return str(p)


def test_local_configurations_keep_their_names_and_split_ones_are_named_canonically(prof):
    c = load_cost_tables(prof)
    names = set(c.names)
    assert "L6-H100-fp32" in names and "L6-H100-int8-E1-tabq" in names and "L6-H100-fp32-E0" in names
    assert "L6-H100-int8-E0" not in names  # split 0 holds no block on the device: only the largest bits
    assert "L6-H100-fp32-E1" not in names  # activations travel: a wire is required
    assert set(np.flatnonzero(c.offload)) == {i for i, n in enumerate(c.names) if "-E" in n}
    assert (c.up_bits[c.offload > 0] > 0).all() and (c.up_bits[c.offload == 0] == 0).all()


def test_link_down_masks_every_split_configuration_and_the_batched_env_agrees(prof):
    tr = link_trace([20.0, 0.0, 0.0, 20.0, 20.0])
    env = MicroLLMPowerEnv(profile=prof, traces=[tr], random_start=False)
    obs, info = env.reset(seed=0, options={"trace": 0, "start": 0})
    assert info["action_mask"].all()
    off = np.flatnonzero(env.costs.offload)
    obs, r, term, trunc, info = env.step(int(off[0]))
    assert not info["action_mask"][off].any() and info["action_mask"][env.costs.offload == 0].all()
    # stepping a split configuration on a dead link serves nothing and breaks the SLO
    obs, r, term, trunc, info = env.step(int(off[0]))
    assert info["step"].served < 1e-3 and info["step"].slo_bad
    # the batched env: the same physics and the same masks
    b = BatchedPowerEnv(1, profile=prof, traces=[tr], random_start=False)
    b.reset()
    b.reset_env(0, 0, 0)
    _, rb, _, _ = b.step(np.array([off[0]]))
    assert not b.action_masks()[0][off].any()


@pytest.mark.parametrize("name", SPLIT_BASELINES)
def test_split_baselines_offload_on_a_good_link_and_stay_local_when_it_drops(prof, name):
    tr = link_trace([50.0] * 4 + [0.0] * 4)
    env = MicroLLMPowerEnv(profile=prof, traces=[tr], random_start=False)
    ctrl = make_controller(name, env)
    obs, info = env.reset(seed=0, options={"trace": 0, "start": 0})
    chosen = []
    for _ in range(7):
        a = int(ctrl.predict(obs[None])[0][0])
        chosen.append(a)
        obs, *_ = env.step(a)
    off = env.costs.offload
    assert all(off[a] == 0 for a in chosen[4:])  # the link is down from row 4 on
    if name in ("all-server", "joint-split"):
        assert off[chosen[0]] == 1  # a split configuration has the best quality on this fixture


def test_split_rules_join_the_default_evaluation_only_with_split_configurations(prof):
    assert set(SPLIT_BASELINES) <= set(default_controllers(load_cost_tables(prof)))
    assert not set(SPLIT_BASELINES) & set(default_controllers(load_cost_tables(DEFAULT_PROFILE)))


def test_depth_fit_recovers_a_linear_cost():
    recs = [{"heads": 1.0, "bits": 8, "depth": d, "decode_ms_per_token_median": 0.1 + 0.25 * d} for d in (2, 3, 4, 6)]
    a, b = depth_fits(recs)[(1.0, 8)]
    assert a == pytest.approx(0.1) and b == pytest.approx(0.25)


def test_reply_bits_are_the_protocols_real_reply():
    from model.split_profile import framing_bytes
    from runtime.dynamics import LinkConstants

    assert LinkConstants().reply_bits == 8 * framing_bytes()[1]


def test_split_profile_build_writes_a_valid_profile_for_server_only_splits(tmp_path):
    """split 0 needs no measurement: quality is the server-precision local record, bytes 1 + framing."""
    from model import load_default
    from model.profile_schema import save_profile
    from model.split_profile import build, framing_bytes

    base = json.loads(DEFAULT_PROFILE.read_text())
    prof = build(base, load_default(), splits=(SPLIT_LOCAL, 0), wires=("none",), progress=False)
    out = save_profile(prof, tmp_path / "p.json")  # validates
    c = load_cost_tables(out)
    by = {r["name"]: r for r in prof["configs"]}
    r = by["L4-H050-fp32-E0"]
    assert r["mc_accuracy"] == by["L4-H050-fp32"]["mc_accuracy"]  # the server runs fp32: its quality
    assert r["up_bytes_per_token"] == 1 + framing_bytes(k=0)[0]
    assert r["server_ms_per_token"] > 0 and r["decode_ms_per_token_median"] < by["L4-H050-fp32"][
        "decode_ms_per_token_median"]
    assert len(c) == 48 + 16 and c.offload.sum() == 16


def test_configurations_that_do_not_fit_the_device_memory_are_masked(prof, monkeypatch):
    from dataclasses import replace

    from runtime.dynamics import DEVICES
    from runtime.shield import Shield, ShieldParams

    c = load_cost_tables(prof)
    limit_mb = float(np.median(c.device_bytes)) / 1e6
    monkeypatch.setitem(DEVICES, "phone", replace(DEVICES["phone"], memory_mb=limit_mb))
    env = MicroLLMPowerEnv(profile=prof, traces=[link_trace([20.0] * 5)], random_start=False)
    _, info = env.reset(seed=0, options={"trace": 0, "start": 0})
    too_big = c.device_bytes > limit_mb * 1e6
    too_big[env.rules.safe] = False
    assert too_big.any() and not info["action_mask"][too_big].any() and info["action_mask"][~too_big].all()
    _, _, _, _, info = env.step(int(np.flatnonzero(~too_big)[0]))
    assert not info["action_mask"][too_big].any()  # every step, not only the first
    b = BatchedPowerEnv(2, profile=prof, traces=[link_trace([20.0] * 5)], random_start=False)
    b.reset()
    assert not b.action_masks()[:, too_big].any()
    # the device's shield: the same rule from the policy's device_bytes and the device's memory
    sh = Shield(ShieldParams(45.0, 5.0, 0.05), c.ept_j, c.offload, 1.06, c.device_bytes, limit_mb * 1e6)
    m = sh.mask(5.0, 25.0, 25.0, 0.4, 0.8, 0.0, 20.0)
    assert m is not None and not m[too_big].any()
