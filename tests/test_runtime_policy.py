"""Exported policy files: SB3 parity of the numpy forward pass, and rejection of bad files."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import deploy
from agents.run_io import load_controller, save_run
from envs.batched import BatchedPowerEnv
from model.profile_schema import example_profile, save_profile
from runtime.observation import model_layout
from runtime.policy import (
    HASH_KEY,
    NumpyPolicy,
    PolicyFileError,
    content_hash,
    load_policy_file,
)

NET = {"pi": [64, 64], "vf": [64, 64]}


def model_grid_profile() -> dict:
    """``example_profile(12)`` moved onto the committed model's depths (2, 3, 4, 6), so that
    ``deploy.py run`` can switch the live model to every configuration of a policy trained on it."""
    from runtime.configspace import KNOBS

    p = example_profile(12)
    for c in p["configs"]:
        c["depth"] = {1: 2, 2: 3, 3: 4, 4: 6}[c["depth"]]
        c["name"] = "-".join(KNOBS[k].fragment(c[k]) for k in ("depth", "heads", "bits"))
    p["model"]["arch"]["n_layers"] = 6  # the committed model's layer count (depths up to 6)
    return p


def _train(tmp: Path, algo: str) -> tuple[Path, Path, BatchedPowerEnv]:
    from stable_baselines3.common.vec_env import VecNormalize

    torch.manual_seed(0)
    prof = tmp / "profile.json"
    if not prof.exists():
        save_profile(model_grid_profile(), prof)
    venv = BatchedPowerEnv(n_envs=4, profile=str(prof), max_episode_steps=100, seed=0,
                           mask_actions=algo == "maskable_ppo")
    vn = VecNormalize(venv, norm_obs=True, norm_reward=False)
    kw = dict(n_steps=64, batch_size=64, n_epochs=2, seed=0, device="cpu",
              policy_kwargs=dict(net_arch=NET, activation_fn=torch.nn.Tanh))
    if algo == "ppo":
        from stable_baselines3 import PPO

        model = PPO("MlpPolicy", vn, **kw)
    elif algo == "dqn":
        from stable_baselines3 import DQN

        model = DQN("MlpPolicy", vn, learning_starts=50, buffer_size=1000, seed=0, device="cpu",
                    policy_kwargs=dict(net_arch=[64, 64], activation_fn=torch.nn.ReLU))
    else:
        from sb3_contrib import MaskablePPO

        model = MaskablePPO("MlpPolicy", vn, **kw)
    model.learn(512)
    run = tmp / f"run_{algo}"
    pk = {"net_arch": [64, 64], "activation_fn": "ReLU"} if algo == "dqn" else \
        {"net_arch": NET, "activation_fn": "Tanh"}
    config = {"algo": algo, "env_id": "wattwise/MicroLLMPower-v0",
              "env_kwargs": {"profile": str(prof), "split": "train"},
              "policy_kwargs": pk, "obs_features": model_layout(0).names,
              "decode_table": venv.ref.decode_table}
    save_run(run, model, vn, config)
    out = tmp / f"{algo}.npz"
    deploy.export_run(run, out)
    return run, out, venv


@pytest.fixture(scope="module")
def ppo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, BatchedPowerEnv]:
    return _train(tmp_path_factory.mktemp("ppo"), "ppo")


@pytest.fixture(scope="module")
def maskable_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, BatchedPowerEnv]:
    return _train(tmp_path_factory.mktemp("mppo"), "maskable_ppo")


def _observations(venv: BatchedPowerEnv, n_uniform: int, n_rollout: int, seed: int = 0) -> np.ndarray:
    """Observations sampled uniformly in the observation bounds plus rollout observations."""
    rng = np.random.default_rng(seed)
    lo, hi = model_layout(0).lo, model_layout(0).hi
    uni = rng.uniform(lo, hi, size=(n_uniform, lo.shape[0])).astype(np.float32)
    for k in (2, 5, 7):  # 0/1 features
        uni[:, k] = rng.integers(0, 2, n_uniform)
    venv.reset()
    roll = []
    n = venv.num_envs
    while len(roll) * n < n_rollout:
        obs, *_ = venv.step(rng.integers(0, venv.action_space.n, n))
        roll.append(obs.copy())
    return np.concatenate([uni, np.concatenate(roll)[:n_rollout]]).astype(np.float32)


def _assert_parity(sb3: np.ndarray, ours: np.ndarray, logits: np.ndarray) -> None:
    top2 = np.sort(logits, axis=1)[:, -2:]
    gap = top2[:, 1] - top2[:, 0]
    bad = sb3 != ours
    # float32 (torch) vs float64 (numpy) can only disagree on exact near-ties of the top two logits
    assert not (bad & (gap > 1e-5)).any(), f"{int((bad & (gap > 1e-5)).sum())} real mismatches"
    assert bad.sum() <= 2, int(bad.sum())


def test_ppo_parity_on_10k_observations(ppo_run) -> None:
    run, out, venv = ppo_run
    obs = _observations(venv, 8000, 4000)
    ctl = load_controller(run)
    sb3, _ = ctl.predict(obs, deterministic=True)
    pol = NumpyPolicy(load_policy_file(out))
    ours = pol.act_batch(obs)
    _assert_parity(np.asarray(sb3), ours, pol.logits_batch(obs))
    # the allocation-free single-observation path agrees with the batch path
    single = np.array([pol.act(o) for o in obs[:3000]])
    assert (single == ours[:3000]).all()


def test_maskable_ppo_parity_with_masks(maskable_run) -> None:
    run, out, venv = maskable_run
    obs = _observations(venv, 6000, 4000, seed=1)
    rng = np.random.default_rng(2)
    masks = rng.random((obs.shape[0], venv.action_space.n)) < 0.6
    masks[np.arange(obs.shape[0]), rng.integers(0, venv.action_space.n, obs.shape[0])] = True
    ctl = load_controller(run)
    pf = load_policy_file(out)
    assert pf.uses_masks
    pol = NumpyPolicy(pf)
    sb3_free, _ = ctl.predict(obs, deterministic=True)
    _assert_parity(np.asarray(sb3_free), pol.act_batch(obs), pol.logits_batch(obs))
    sb3_masked, _ = ctl.predict(obs, deterministic=True, action_masks=masks)
    ours = pol.act_batch(obs, masks)
    assert masks[np.arange(len(ours)), ours].all()
    lg = np.where(masks, pol.logits_batch(obs), -1e8)
    _assert_parity(np.asarray(sb3_masked), ours, lg)
    single = np.array([pol.act(o, m) for o, m in zip(obs[:2000], masks[:2000])])
    assert (single == ours[:2000]).all()


def test_dqn_parity(tmp_path: Path) -> None:
    run, out, venv = _train(tmp_path, "dqn")
    obs = _observations(venv, 8000, 2000, seed=3)
    pol = NumpyPolicy(load_policy_file(out))
    assert pol.activation == "ReLU" and len(pol.mats) == 3
    sb3, _ = load_controller(run).predict(obs, deterministic=True)
    _assert_parity(np.asarray(sb3), pol.act_batch(obs), pol.logits_batch(obs))


def test_policy_file_contents(ppo_run) -> None:
    run, out, venv = ppo_run
    with np.load(out, allow_pickle=False) as z:
        files = set(z.files)
        meta = json.loads(str(z["meta_json"]))
        assert z[HASH_KEY].shape == () and z["meta_json"].shape == ()
    assert {"layer0_weight", "layer2_bias", "obs_mean", "obs_var", "energy_j_per_token"} <= files
    assert [f["name"] for f in meta["obs_features"]] == model_layout(0).names
    assert meta["obs_features"][3]["unit"] == "degC"
    assert meta["decode_table"] == venv.ref.decode_table
    assert meta["activation"] == "Tanh" and meta["algo"] == "ppo"
    assert meta["mask_rules"]["device"]["t_max_c"] == 45.0 and meta["env_params"]["reserve_soc"] == 0.05
    assert len(meta["profile"]["sha256"]) == 64 and meta["profile"]["name"] == "example"
    pf = load_policy_file(out)
    assert pf.safe_index == int(np.argmin(venv.ref.costs.ept_j))
    np.testing.assert_allclose(pf.config_features, venv.ref.costs.features)


# ---- bad files --------------------------------------------------------------------------------
def _rewrite(src: Path, dst: Path, change) -> None:
    with np.load(src, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    change(arrays)
    with open(dst, "wb") as fh:
        np.savez(fh, **arrays)


def test_truncated_file_is_rejected(ppo_run, tmp_path: Path) -> None:
    data = ppo_run[1].read_bytes()
    for cut in (10, len(data) // 2, len(data) - 30):
        p = tmp_path / f"cut{cut}.npz"
        p.write_bytes(data[:cut])
        with pytest.raises(PolicyFileError, match="truncated or corrupted|hash"):
            load_policy_file(p)


def test_corrupted_bytes_are_rejected(ppo_run, tmp_path: Path) -> None:
    """A flipped byte is rejected, or it sits in zip metadata numpy never reads (a member's timestamp): then the
    file loads with the very arrays that were hashed. The offsets depend on the file's layout (its strings)."""
    data = bytearray(ppo_run[1].read_bytes())
    original = load_policy_file(ppo_run[1])
    rng = np.random.default_rng(0)
    rejected = 0
    for k in range(16):
        d = bytearray(data)
        i = int(rng.integers(100, len(d) - 100))
        d[i] ^= 0xFF
        p = tmp_path / f"flip{k}.npz"
        p.write_bytes(bytes(d))
        try:
            loaded = load_policy_file(p)
        except PolicyFileError:
            rejected += 1
            continue
        assert loaded.sha256 == original.sha256, f"byte {i} changed the policy and was not caught"
    assert rejected >= 12


def test_tampered_weights_fail_the_hash(ppo_run, tmp_path: Path) -> None:
    p = tmp_path / "tampered.npz"

    def bump(a):
        a["layer2_bias"] = a["layer2_bias"] + np.float32(1.0)

    _rewrite(ppo_run[1], p, bump)
    with pytest.raises(PolicyFileError, match="content hash mismatch"):
        load_policy_file(p)


def test_consistent_but_wrong_files_name_the_problem(ppo_run, tmp_path: Path) -> None:
    cases = {
        "missing": (lambda a: a.pop("obs_var"), "missing array 'obs_var'"),
        "shape": (lambda a: a.__setitem__("obs_mean", np.zeros(5)), "obs_mean has shape"),
        "nan": (lambda a: a["layer0_weight"].__setitem__((0, 0), np.nan), "NaN"),
        "features": (lambda a: a.__setitem__("meta_json", np.array(str(a["meta_json"]).replace(
            '"name": "soc"', '"name": "battery"'))), "observation features"),
        "activation": (lambda a: a.__setitem__("meta_json", np.array(str(a["meta_json"]).replace(
            '"activation": "Tanh"', '"activation": "Swish"'))), "activation"),
        "switch costs": (lambda a: a.__setitem__("meta_json", np.array(str(a["meta_json"]).replace(
            '"switch_costs": {', '"switch_costs": {"depth_repair_ms": -1.0, '))),
            r"switch_costs\.depth_repair_ms must be a finite number >= 0"),
        "switch costs type": (lambda a: a.__setitem__("meta_json", np.array(str(a["meta_json"]).replace(
            '"switch_costs": {', '"switch_costs": [], "x": {'))), "switch_costs must be an object"),
    }
    for name, (change, msg) in cases.items():
        p = tmp_path / f"{name}.npz"

        def apply(a, change=change):
            change(a)
            a[HASH_KEY] = np.array(content_hash(a))  # re-signed: only the consistency checks can catch it

        _rewrite(ppo_run[1], p, apply)
        with pytest.raises(PolicyFileError, match=msg):
            load_policy_file(p)


def test_pickle_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(PolicyFileError, match="no such file"):
        load_policy_file(tmp_path / "nope.npz")
    p = tmp_path / "obj.npz"
    with open(p, "wb") as fh:
        np.savez(fh, meta_json=np.array([{"a": 1}], dtype=object))
    with pytest.raises(PolicyFileError):
        load_policy_file(p)
    z = tmp_path / "notnpz.npz"
    with zipfile.ZipFile(z, "w") as f:
        f.writestr("hello.txt", "hi")
    with pytest.raises(PolicyFileError):
        load_policy_file(z)
