"""Critic warm-up (agents.critic_warmup): the actor frozen while the value function learns, released after."""

from __future__ import annotations

import json

import pytest
import torch as th

from agents.critic_warmup import VALUE_PREFIXES, CriticWarmup, actor_parameters


def _model():
    from sb3_contrib import MaskablePPO

    from envs.batched import BatchedPowerEnv
    from envs.power_env import DEFAULT_PROFILE
    from runtime.dynamics import EnvParams

    venv = BatchedPowerEnv(n_envs=4, profile=str(DEFAULT_PROFILE), split="train", seed=0,
                           params=EnvParams(max_episode_steps=64))
    return MaskablePPO("MlpPolicy", venv, n_steps=32, batch_size=64, n_epochs=2, seed=3, device="cpu",
                       learning_rate=1e-3, policy_kwargs=dict(net_arch=dict(pi=[16], vf=[16])))


def _split(model):
    actor = {n: p.detach().clone() for n, p in model.policy.named_parameters() if not n.startswith(VALUE_PREFIXES)}
    critic = {n: p.detach().clone() for n, p in model.policy.named_parameters() if n.startswith(VALUE_PREFIXES)}
    return actor, critic


def test_the_actor_parameters_are_everything_outside_the_value_path():
    model = _model()
    names = {id(p): n for n, p in model.policy.named_parameters()}
    actor = {names[id(p)] for p in actor_parameters(model.policy)}
    assert actor and all(n.startswith(("mlp_extractor.policy_net.", "action_net.")) for n in actor)
    assert len(actor) + sum(n.startswith(VALUE_PREFIXES) for n in names.values()) == len(names)


def test_during_the_warm_up_only_the_critic_learns():
    model = _model()
    actor0, critic0 = _split(model)
    cb = CriticWarmup(10_000)  # longer than the run: frozen throughout
    model.learn(256, callback=cb)
    actor1, critic1 = _split(model)
    assert all(th.equal(actor0[n], actor1[n]) for n in actor0)
    assert any(not th.equal(critic0[n], critic1[n]) for n in critic0)
    assert all(p.requires_grad for p in model.policy.parameters())  # released at the end of learn()
    assert cb.released_at is None


def test_after_the_warm_up_the_actor_learns_too():
    model = _model()
    actor0, _ = _split(model)
    cb = CriticWarmup(128)  # one rollout of 4 envs x 32 steps trains the critic only, the second the actor too
    model.learn(512, callback=cb)
    actor1, _ = _split(model)
    assert cb.released_at == 256
    assert any(not th.equal(actor0[n], actor1[n]) for n in actor0)


def test_warm_up_changes_nothing_the_actor_computes_until_released():
    model = _model()
    obs = th.as_tensor(model.env.reset(), dtype=th.float32)
    with th.no_grad():
        before = model.policy.get_distribution(obs).distribution.logits.clone()
    model.learn(256, callback=CriticWarmup(256))  # both rollouts end at or before step 256: no actor update
    with th.no_grad():
        after = model.policy.get_distribution(obs).distribution.logits
    assert th.equal(before, after)


def test_bad_steps_are_refused():
    with pytest.raises(ValueError, match=">= 0"):
        CriticWarmup(-1)


def test_train_refuses_a_warm_up_without_a_warm_start(tmp_path):
    import train

    with pytest.raises(SystemExit, match="--critic-warmup .* needs --bc-expert"):
        train.main(train.Args(bc_expert="none", critic_warmup=1e5, runs_dir=str(tmp_path / "runs"),
                              total_timesteps=64))
    assert not (tmp_path / "runs").exists()


def test_train_evaluates_on_val_only_after_the_warm_up(tmp_path):
    import numpy as np

    import train

    run = train.main(train.Args(bc_expert="schedutil", bc_episodes=2, dagger_rounds=0, critic_warmup=2048,
                                total_timesteps=4096, n_envs=4, eval_freq=512, eval_episodes=2, final_eval=False,
                                progress=False, runs_dir=str(tmp_path / "runs")))
    steps = np.load(run / "eval" / "evaluations.npz")["timesteps"]
    assert len(steps) and steps.min() > 2048  # the warm-up's policy is the warm start: never a checkpoint
    assert json.loads((run / "config.json").read_text())["args"]["critic_warmup"] == 2048
