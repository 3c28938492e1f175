"""The factorised action head: knob-value vectors to configurations, per-family masks, training and acting."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agents.factorised import Factorisation, FactorisedController, FactorisedVecEnv
from runtime.configspace import place_space, split_space

REPO = Path(__file__).resolve().parent.parent


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
        assert a.shape == () and m[a]  # SB3's form: one observation, one index as a 0-d array
        obs, *_ = env.step(int(a))


def test_choose_is_the_per_family_masked_argmax_then_the_nearest_allowed_configuration():
    space = place_space()
    fac = Factorisation(space)
    rng = np.random.default_rng(1)
    for _ in range(50):
        logits = rng.normal(size=fac.n_logits)
        allowed = rng.uniform(size=len(space)) < 0.3
        allowed[0] = True
        i = fac.choose(logits, allowed)
        assert allowed[i]
        fm = fac.masks(allowed[None])[0]
        lg = np.where(fm, logits, -1e8)
        off = np.concatenate([[0], np.cumsum(fac.dims)[:-1]])
        a = np.array([[int(np.argmax(lg[o:o + d])) for o, d in zip(off, fac.dims)]])
        assert i == int(fac.index(a, allowed[None])[0])


def test_train_py_factorised_head_exports_to_a_numpy_policy_that_decides_as_the_torch_one(tmp_path):
    """train.py --action-head factorised (with an imitation warm start) -> run folder -> deploy.py export ->
    the device's NumpyPolicy chooses the torch controller's configuration at every step."""
    from policy_helpers import steps_where_numpy_decides_as_torch, train_tiny_warm_run

    import deploy
    import train
    from agents.run_io import env_from_config, load_config, load_controller
    from runtime.policy import NumpyPolicy, load_policy_file

    run = train_tiny_warm_run(tmp_path, "factorised")
    assert load_config(run)["action_head"] == "factorised"
    ctrl = load_controller(run)
    assert isinstance(ctrl, FactorisedController)
    deploy.export_run(run, tmp_path / "p.npz")
    pf = load_policy_file(tmp_path / "p.npz")
    assert pf.meta["action_head"] == "factorised" and pf.layers[-1][0].shape[0] == 4 + 4 + 3
    pol = NumpyPolicy(pf)
    env = env_from_config(load_config(run), split="test", random_start=False)  # the run's parameters (MAIN_JOB_ENV)
    assert env.unwrapped.params.demand_avg_s == train.MAIN_JOB_ENV.demand_avg_s > 0  # train.py's default env
    assert steps_where_numpy_decides_as_torch(pol, ctrl, env, traces=3, steps=60) > 100
    # benchmarks/factorised_remaps.py on the same run: its counts are consistent with the controller's decisions
    import importlib.util

    spec = importlib.util.spec_from_file_location("factorised_remaps", REPO / "benchmarks" / "factorised_remaps.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    r = bench.remaps(str(run), None, "test", 40)
    assert r["steps"] == sum(e["steps"] for e in r["episodes"]) > 0
    assert 0 <= r["forbidden"] <= r["masked_steps"] <= r["steps"]
    assert sum(c for _, _, c in r["pairs"]) <= r["forbidden"]


def test_a_factorised_file_with_the_wrong_number_of_outputs_is_refused(tmp_path):
    from policy_helpers import random_policy_file

    from runtime.policy import PolicyFileError, load_policy_file, save_policy_file

    src = load_policy_file(random_policy_file(tmp_path / "flat.npz", "profiles/reference-cpu.json"))
    meta = dict(src.meta, action_head="factorised")  # 48 outputs, but a factorised head has 11
    save_policy_file(tmp_path / "bad.npz", src.layers, meta, src.obs_mean, src.obs_var,
                     {"energy_j_per_token": src.energy_j_per_token, "power_w": src.power_w,
                      "decode_tokens_per_s": src.decode_tokens_per_s}, src.config_features)
    with pytest.raises(PolicyFileError, match="11 knob values"):
        load_policy_file(tmp_path / "bad.npz")
