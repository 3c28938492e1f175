"""RL fine-tuning with a KL penalty to the imitated policy (agents.clone_kl): the KL itself, parity with
sb3-contrib's MaskablePPO update at weight 0, the penalty holding the policy near its anchor, the anchor's
observation statistics, and the run folder."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch as th

from agents.clone_kl import CloneKLMaskablePPO, masked_kl


def test_masked_kl_matches_the_definition_and_ignores_masked_choices():
    p = th.tensor([[1.0, 0.0, -1.0, 5.0]])
    q = th.tensor([[0.0, 0.5, -2.0, -9.0]])
    mask = th.tensor([[True, True, True, False]])
    pp, qq = th.softmax(p[:, :3], -1), th.softmax(q[:, :3], -1)
    want = (pp * (pp.log() - qq.log())).sum()
    assert masked_kl(p, q, mask).item() == pytest.approx(want.item(), rel=1e-5)
    q2 = q.clone()
    q2[0, 3] = 40.0  # a masked choice's logit does not count
    assert masked_kl(p, q2, mask).item() == pytest.approx(want.item(), rel=1e-5)
    assert masked_kl(p, p, mask).item() == pytest.approx(0.0, abs=1e-7)
    # a peaked q that underflows to 0 in float32 on an allowed choice: large but finite (torch's KL gives inf)
    assert np.isfinite(masked_kl(th.zeros(1, 3), th.tensor([[0.0, -200.0, 0.0]]), None).item())


def _venv(n_envs=4):
    from envs.batched import BatchedPowerEnv
    from envs.power_env import DEFAULT_PROFILE
    from runtime.dynamics import EnvParams

    return BatchedPowerEnv(n_envs=n_envs, profile=str(DEFAULT_PROFILE), split="train", seed=0,
                           params=EnvParams(max_episode_steps=64))


def _agent(cls, venv, **kw):
    return cls("MlpPolicy", venv, n_steps=32, batch_size=64, n_epochs=2, seed=3, device="cpu", **kw)


def test_at_weight_zero_the_update_is_maskable_ppos():
    from sb3_contrib import MaskablePPO

    params = []
    for cls, kw in ((MaskablePPO, {}), (CloneKLMaskablePPO, {"clone_kl": 0.0})):
        model = _agent(cls, _venv(), **kw)
        if kw:
            model.set_anchor()  # an anchor with weight 0 changes nothing either
        model.learn(256)
        params.append([p.detach().clone() for p in model.policy.parameters()])
    for a, b in zip(*params, strict=True):
        assert th.equal(a, b)


def _mean_kl(model, venv) -> float:
    obs = th.as_tensor(venv.reset(), dtype=th.float32)
    return model.anchor_kl(obs, np.asarray(venv.action_masks(), bool)).mean().item()


def test_the_penalty_keeps_the_policy_near_its_anchor():
    kls = {}
    for w in (0.0, 20.0):
        venv = _venv(8)
        model = _agent(CloneKLMaskablePPO, venv, clone_kl=w, learning_rate=3e-3)
        model.set_anchor()
        assert _mean_kl(model, venv) == pytest.approx(0.0, abs=1e-6)
        model.learn(2048)
        kls[w] = _mean_kl(model, venv)
    assert kls[0.0] > 0.01  # plain PPO at this step size moves the policy off the anchor ...
    assert kls[20.0] < 0.5 * kls[0.0]  # ... the penalty holds it much nearer


def test_the_anchor_reads_observations_under_its_own_statistics():
    from stable_baselines3.common.vec_env import VecNormalize

    env = VecNormalize(_venv(), norm_reward=False)
    model = _agent(CloneKLMaskablePPO, env, clone_kl=1.0)
    rms = env.obs_rms
    rms.mean, rms.var = np.full_like(rms.mean, 2.0), np.full_like(rms.var, 4.0)
    model.set_anchor({"mean": rms.mean, "var": rms.var, "epsilon": env.epsilon, "clip_obs": env.clip_obs})
    rms.mean, rms.var = np.full_like(rms.mean, 1.0), np.full_like(rms.var, 9.0)  # RL moved the statistics on
    raw = np.linspace(-3, 5, rms.mean.size)
    now = th.as_tensor(((raw - 1.0) / np.sqrt(9.0 + env.epsilon))[None], dtype=th.float32)
    got = model._anchor_obs(now).numpy()[0]
    assert np.allclose(got, (raw - 2.0) / np.sqrt(4.0 + env.epsilon), atol=1e-5)


def test_the_anchor_is_not_pickled_into_model_zip_and_the_weight_is():
    import zipfile

    model = _agent(CloneKLMaskablePPO, _venv(), clone_kl=0.7)
    model.set_anchor()
    buf = io.BytesIO()
    model.save(buf)
    data = json.loads(zipfile.ZipFile(buf).read("data"))
    assert "_anchor" not in data and data["clone_kl"] == 0.7
    with pytest.raises(ValueError, match="clone_kl"):
        _agent(CloneKLMaskablePPO, _venv(), clone_kl=-1.0)
