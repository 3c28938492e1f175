"""model.profile end to end on a tiny model: every configuration present, schema-valid, honest labels."""

from __future__ import annotations

import pytest
import torch

import model as M
from model.model import ElasticGPT, ModelConfig
from model.profile import load_quality, profile
from model.profile_schema import ProfileError, load_profile, save_profile


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    m = ElasticGPT(ModelConfig(block_size=96, n_layer=3, n_head=4, n_embd=128, depths=(1, 2, 3)))
    path = tmp_path_factory.mktemp("ck") / "tiny.pt"
    torch.save(m.checkpoint(), path)
    return path


def _quality(m):
    return {m.name(c): {"val_loss": 5.0 - c.depth * 0.1, "bits_per_byte": 7.0, "mc_accuracy": 0.25,
                     "coverage_at_k": {"1": 0.1, "2": 0.15, "4": 0.2, "8": 0.3}} for c in m.configs()}


def test_profile_has_every_config_and_validates(tiny_ckpt, tmp_path):
    m = M.load(tiny_ckpt)
    prof = profile(m, threads=1, repeats=2, decode_tokens=3, prefill_tokens=8, quality=_quality(m),
                   name="tiny", idle_power_w=1.0, progress=False)
    out = save_profile(prof, tmp_path / "p.json")
    p = load_profile(out)
    assert p.names == list(m.space.names) and p.space.same_as(m.space)  # the profile is keyed by the space
    # no meter on a CI box -> the energy is labelled modelled, with its assumptions, everywhere
    if p.data["energy_source"] == "modelled":
        assert p.data["energy_assumptions"]["dram_pj_per_byte"] > 0
    assert all(c["energy_source"] == p.data["energy_source"] for c in p.configs)
    assert all(c["decode_ms_per_token_p90"] >= c["decode_ms_per_token_median"] for c in p.configs)
    for k in ("depth", "heads", "bits_int8", "bits_int4"):
        assert p.data["switch_costs"][f"{k}_set_config_us"] > 0
    # energy per token is consistent with the reported power and latency (same figures)
    c0 = p.configs[0]
    assert c0["energy_j_per_token"] > 0 and c0["power_w"] > 0


def test_profile_rejects_quality_of_another_checkpoint(tiny_ckpt, tmp_path):
    import json

    q = tmp_path / "q.json"
    q.write_text(json.dumps({"checkpoint_sha256": "f" * 64, "configs": []}))
    with pytest.raises(SystemExit, match="another checkpoint"):
        load_quality(q, "0" * 64, ["L1-H100-fp32"])
    with pytest.raises(SystemExit, match="python -m model.evaluate"):
        load_quality(tmp_path / "missing.json", "0" * 64, [])


def test_malformed_profile_names_the_field(tmp_path):
    from model.profile_schema import example_profile

    bad = example_profile(3)
    del bad["configs"][1]["decode_ms_per_token_median"]
    with pytest.raises(ProfileError, match=r"configs\[1\]\.decode_ms_per_token_median is missing"):
        save_profile(bad, tmp_path / "bad.json")
