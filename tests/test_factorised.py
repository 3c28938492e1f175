"""The factorised action head: knob-value vectors to configurations, per-family masks, training and acting."""

from __future__ import annotations

import numpy as np
import pytest

from agents.factorised import Factorisation, FactorisedController, FactorisedVecEnv
from runtime.configspace import place_space, split_space


@pytest.mark.parametrize("space", [place_space(), split_space()], ids=["place", "split"])
def test_valid_vectors_map_to_their_configuration_and_invalid_ones_to_the_nearest(space):
    fac = Factorisation(space)
    assert fac.dims.sum() < len(space) < np.prod(fac.dims) + 1  # a smaller head than the flat table
    idx = fac.index(fac.values)
    assert np.array_equal(idx, np.arange(len(space)))  # every configuration is reachable, exactly
    grid = np.stack(np.meshgrid(*[np.arange(d) for d in fac.dims], indexing="ij"), -1).reshape(-1, len(fac.dims))
    got = fac.index(grid)
    d = np.abs(fac.values[got] - grid).sum(-1)
    best = np.abs(grid[:, None, :] - fac.values[None]).sum(-1).min(1)
    assert np.array_equal(d, best)  # the nearest valid configuration, never a farther one


def test_family_masks_and_the_allowed_fallback():
    space = place_space()
    fac = Factorisation(space)
    rng = np.random.default_rng(0)
    allowed = rng.uniform(size=(5, len(space))) < 0.1
    allowed[:, 0] = True
    fm = fac.masks(allowed)
    off = np.concatenate([[0], np.cumsum(fac.dims)[:-1]])
    for j in range(5):
        for f, (o, dim) in enumerate(zip(off, fac.dims)):
            for v in range(dim):
                assert fm[j, o + v] == allowed[j][fac.values[:, f] == v].any()
    acts = np.stack([rng.integers(0, d, size=5) for d in fac.dims], 1)
    idx = fac.index(acts, allowed)
    assert allowed[np.arange(5), idx].all()  # a forbidden joint choice runs an allowed configuration


def test_maskable_ppo_trains_on_the_factorised_env_and_acts_with_indices(tmp_path):
    import gymnasium as gym
    from sb3_contrib import MaskablePPO

    import envs
    from envs.batched import BatchedPowerEnv
    from model.placement_profile import build
    from model.profile_schema import load_profile
    from runtime.hardware import load_hardware

    prof = build(load_hardware("phone-sd8gen2"), load_profile("profiles/reference-cpu.json"), roles=["cpu", "lcpu"],
                 cuts="none")
    import json

    path = tmp_path / "p.json"
    path.write_text(json.dumps(prof))
    venv = FactorisedVecEnv(BatchedPowerEnv(n_envs=4, profile=str(path), split="train"))
    assert venv.action_space.nvec.tolist() == [4, 4, 3, 3]
    model = MaskablePPO("MlpPolicy", venv, n_steps=64, batch_size=64, n_epochs=1, seed=0, device="cpu")
    model.learn(256)
    env = gym.make(envs.ENV_ID, profile=str(path), split="test").unwrapped
    ctrl = FactorisedController(model.policy, None, env.space)
    obs, _ = env.reset(options={"trace": 0, "start": 0})
    for _ in range(20):
        m = env.action_masks()
        a = ctrl.predict(obs, action_masks=m)[0]
        assert isinstance(a, int) and m[a]
        obs, *_ = env.step(a)
