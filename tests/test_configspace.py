"""The configuration space: one declaration per knob family, one name and one index per
configuration — and a toy knob added through its declaration alone, run end to end
(profile → env → a short training → export → runtime decision)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from model.profile_schema import ProfileError, example_profile, save_profile, validate_profile
from runtime.configspace import (
    KNOBS,
    ConfigSpace,
    ConfigSpaceError,
    Feature,
    Knob,
    Rule,
    model_space,
    register_knob,
    space_from_records,
)


def test_model_space_names_indices_and_features():
    sp = model_space()
    assert len(sp) == 4 * 4 * 3 and sp.n_product == 48
    assert sp.names[0] == "L6-H100-fp32" and sp.names[-1] == "L2-H025-int4"  # largest first, product order
    i = sp.index("L4-H050-int8")
    cfg = sp.configs[i]
    assert (cfg.depth, cfg.heads, cfg.bits) == (4, 0.5, 8)
    assert sp.index(cfg) == sp.index((4, 0.5, 8)) == sp.index({"depth": 4, "heads": 0.5, "bits": 8}) == i
    assert sp.name_of(cfg) == "L4-H050-int8"
    np.testing.assert_allclose(sp.feature_matrix()[i], [4 / 6, 0.5, 8 / 32])
    assert [f.name for f in sp.features] == ["config_depth_frac", "config_heads_frac", "config_bits_frac"]
    with pytest.raises(ConfigSpaceError, match="no configuration named 'L5-H050-int8'"):
        sp.index("L5-H050-int8")
    with pytest.raises(ConfigSpaceError, match="bits 16 is not one of"):
        sp.index((4, 0.5, 16))


def test_rules_remove_configurations_and_say_how_many():
    no_int4_shallow = Rule("no-int4-below-L4", "int4 only with 4+ layers", lambda c: c.bits != 4 or c.depth >= 4)
    sp = ConfigSpace(model_space().knobs, (no_int4_shallow,))
    assert sp.n_product == 48 and len(sp) == 48 - 8 and sp.removed_by_rule == {"no-int4-below-L4": 8}
    assert "L3-H100-int4" not in sp.names
    with pytest.raises(ConfigSpaceError, match="removed by the rules"):
        sp.make(depth=3, heads=1.0, bits=4)


def test_switch_time_is_set_config_plus_the_largest_changed_knob_repair():
    sp = model_space()
    costs = {"depth_set_config_us": 5.0, "bits_int8_set_config_us": 3.0, "depth_repair_ms": 1.0,
             "heads_repair_ms": 4.0, "bits_int8_repair_ms": 2.0, "bits_int4_repair_ms": 3.0}
    sw = sp.switch_time_s(costs)
    a, b = sp.index("L6-H100-fp32"), sp.index("L4-H100-fp32")
    c, d = sp.index("L4-H050-int8"), sp.index("L6-H100-int4")
    assert sw[a, a] == 0.0
    assert sw[a, b] == pytest.approx(5e-6 + 1e-3)  # depth only
    assert sw[a, c] == pytest.approx(5e-6 + 4e-3)  # depth, heads and bits change: the largest repair
    assert sw[a, d] == pytest.approx(5e-6 + 3e-3)  # bits: the largest bits repair


def test_space_serialises_and_profiles_must_use_canonical_names():
    sp = model_space((4, 2), (1.0, 0.5), (8,))
    back = ConfigSpace.from_json(json.loads(json.dumps(sp.to_json())))
    assert back.same_as(sp) and back.names == ("L4-H100-int8", "L4-H050-int8", "L2-H100-int8", "L2-H050-int8")
    with pytest.raises(ConfigSpaceError, match="unknown knob family 'colour'"):
        ConfigSpace.from_json({"knobs": [{"name": "colour", "values": [1]}]})
    p = example_profile(3)
    p["configs"][1]["name"] = "int8-L1"
    with pytest.raises(ProfileError, match=r"configs\[1\].name.*named 'L1-H100-int8'"):
        validate_profile(p, "p.json")
    # a profile's space: the knobs its records carry, values in order of appearance, "measured" filters
    sp = space_from_records(example_profile(12)["configs"])
    assert sp.knob_names == ("depth", "heads", "bits") and sp.n_product == 24 and len(sp) == 12


# ---- a toy knob, end to end -------------------------------------------------------------------

TOY = Knob(name="temperature", values=(0.7, 1.0), value_type=float,
           fragment=lambda v: f"T{round(float(v) * 10):02d}",
           features=(Feature("config_temperature", "frac", 0.0, 1.0),),
           encode=lambda v, k: (float(v),),
           switch_cost_keys=("temperature_ms",),
           doc="sampling temperature (toy knob of the test suite)")


@pytest.fixture
def toy_knob():
    register_knob(TOY)
    yield TOY
    KNOBS.pop(TOY.name, None)


def toy_profile() -> dict:
    """example_profile(6) × temperature (0.7, 1.0), with made-up costs: a cooler sampler is a bit
    slower (more candidate re-ranking) and scores a bit higher."""
    base = example_profile(6)
    recs = []
    for c in base["configs"]:
        for t in TOY.values:
            r = dict(c, temperature=t, name=f"{c['name']}-{TOY.fragment(t)}")
            slow = 1.2 if t == 0.7 else 1.0
            r["decode_ms_per_token_median"] = c["decode_ms_per_token_median"] * slow
            r["decode_ms_per_token_p90"] = c["decode_ms_per_token_p90"] * slow
            r["decode_tokens_per_s"] = c["decode_tokens_per_s"] / slow
            r["energy_j_per_token"] = c["energy_j_per_token"] * slow
            r["mc_accuracy"] = min(1.0, c["mc_accuracy"] + (0.05 if t == 0.7 else 0.0))
            recs.append(r)
    base["configs"] = recs
    base["switch_costs"]["temperature_ms"] = 0.001
    base["config_space"] = {"knobs": [{"name": k, "values": v} for k, v in (
        ("depth", [1, 2]), ("heads", [1.0, 0.5]), ("bits", [32, 8, 4]), ("temperature", [0.7, 1.0]))]}
    return base


@pytest.mark.slow
def test_a_toy_knob_runs_end_to_end_through_its_declaration_alone(toy_knob, tmp_path: Path):
    import deploy
    import train
    from envs.power_env import MicroLLMPowerEnv
    from runtime.dynamics import DeviceConstants, EnvParams
    from runtime.manager import RuntimeManager
    from runtime.policy import load_policy_file
    from runtime.replay import ReplaySensors
    from runtime.sensors import SensorHub
    from traces import load_trace

    # profile: validated against the space, records keyed by canonical names with the new fragment
    prof = save_profile(toy_profile(), tmp_path / "toy.json")
    env = MicroLLMPowerEnv(profile=str(prof), random_start=False)
    assert env.space.knob_names == ("depth", "heads", "bits", "temperature")
    assert env.action_space.n == 12 and env.space.n_product == 24
    assert env.space.names[0] == "L1-H100-fp32-T07"
    # the observation's configuration block grew by the knob's one feature
    assert env.observation_space.shape == (20,) and env.feature_names[17] == "config_temperature"
    obs, _ = env.reset(seed=0, options={"trace": 0, "start": 0})
    a = env.space.index("L2-H050-int8-T10")
    obs, *_ = env.step(a)
    assert obs[17] == pytest.approx(1.0) and obs[14] == pytest.approx(1.0)  # T = 1.0, depth 2/2
    # a short training on the batched env, then export and a runtime decision
    run = train.main(train.Args(profile=str(prof), total_timesteps=256, n_envs=4, eval_freq=256, eval_episodes=1,
                                bc_expert="none",
                                checkpoint_freq=256, runs_dir=str(tmp_path / "runs"), final_eval=False,
                                progress=False, env=EnvParams(max_episode_steps=16)))
    cfg = json.loads((run / "config.json").read_text())
    assert [k["name"] for k in cfg["config_space"]["knobs"]][-1] == "temperature"
    out = tmp_path / "toy.npz"
    deploy.export_run(run, out)
    pf = load_policy_file(out)
    assert pf.space.same_as(env.space) and pf.layout.names == env.feature_names
    trace = load_trace(Path(__file__).resolve().parent.parent / "traces" / "data" / "default" / "phone-00.csv")
    dev = DeviceConstants.from_dict(pf.meta["mask_rules"]["devices"]["phone"])
    rp = ReplaySensors(trace, dev, clock=None)
    mgr = RuntimeManager(pf, SensorHub([rp], clock=rp.now), device=dev, clock=rp.now)
    picks = set()
    for k in range(5):
        rp.advance_to(10.0 * k)
        mgr.set_workload(demand_tps=rp.workload()["demand_tps"])
        picks.add(mgr.decide(10.0 * k))
    for i in picks:
        assert pf.space.values_of(i)["temperature"] in (0.7, 1.0)
    assert mgr.obs.shape == (20,) and mgr.obs[17] in (np.float32(0.7), np.float32(1.0))
    # a runtime that does not declare the knob refuses the file, saying why
    KNOBS.pop(TOY.name)
    with pytest.raises(ValueError, match="unknown knob family 'temperature'"):
        load_policy_file(out)
    register_knob(TOY)
