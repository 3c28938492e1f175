"""The joint head (agents.joint_head): per-knob logits summed per configuration, masked jointly, saved flat."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents.joint_head import JointKnobHead
from runtime.configspace import place_space
from runtime.factorised import Factorisation


def _head(space=None, latent=8, seed=0):
    torch.manual_seed(seed)
    sel = Factorisation(space or place_space()).onehot
    h = JointKnobHead(latent, sel)
    with torch.no_grad():  # away from the tiny init, so differences show
        h.weight.normal_()
        h.bias.normal_()
    return h, sel


def test_logits_are_the_sum_of_each_configurations_knob_logits():
    space = place_space()
    h, _ = _head(space)
    fac = Factorisation(space)
    x = torch.randn(5, 8)
    knob = (x @ h.weight.T + h.bias).detach().numpy()  # (5, n_logits)
    got = h(x).detach().numpy()  # (5, n_configs)
    off = np.concatenate([[0], np.cumsum(fac.dims)[:-1]])
    want = sum(knob[:, off[f] + fac.values[:, f]] for f in range(len(fac.dims)))
    assert got.shape == (5, len(space)) and np.allclose(got, want, atol=1e-5)


def test_the_state_is_a_flat_layer_that_a_plain_linear_and_a_fresh_joint_head_both_load():
    h, sel = _head()
    st = h.state_dict()
    assert set(st) == {"weight", "bias"}
    assert st["weight"].shape == (sel.shape[0], 8) and st["bias"].shape == (sel.shape[0],)
    x = torch.randn(7, 8)
    flat = torch.nn.Linear(8, sel.shape[0])
    flat.load_state_dict(st)
    assert torch.allclose(flat(x), h(x), atol=1e-5)
    h2, _ = _head(seed=1)
    assert not torch.allclose(h2(x), h(x), atol=1e-3)
    h2.load_state_dict(st)  # the pinv round trip: the same logits (parameters equal up to per-family shifts)
    assert torch.allclose(h2(x), h(x), atol=1e-4)
    with pytest.raises(RuntimeError, match="neither the flat layer"):
        h2.load_state_dict({"weight": torch.zeros(3, 8), "bias": torch.zeros(3)})


def test_a_masked_joint_distribution_never_picks_a_forbidden_configuration():
    from sb3_contrib.common.maskable.distributions import MaskableCategoricalDistribution

    h, sel = _head()
    x = torch.randn(64, 8)
    rng = np.random.default_rng(0)
    masks = rng.random((64, sel.shape[0])) < 0.2
    masks[:, 0] = True
    dist = MaskableCategoricalDistribution(sel.shape[0]).proba_distribution(h(x))
    dist.apply_masking(masks)
    for a in (dist.mode().numpy(), dist.sample().numpy()):
        assert masks[np.arange(64), a].all()


def test_temper_divides_the_joint_logits():
    from agents.imitation import temper_policy

    h, _ = _head()
    x = torch.randn(3, 8)
    before = h(x).detach()

    class _M:
        class policy:  # noqa: N801 - the attribute path temper_policy reads
            action_net = h

    temper_policy(_M, 4.0)
    assert torch.allclose(h(x), before / 4.0, atol=1e-5)


def test_train_py_joint_head_trains_exports_flat_and_the_device_decides_as_torch(tmp_path):
    """train.py --action-head joint (warm start + RL) -> run folder -> deploy.py export: a flat policy file, whose
    numpy decisions are the torch controller's."""
    from policy_helpers import steps_where_numpy_decides_as_torch, train_tiny_warm_run

    import deploy
    from agents.run_io import env_from_config, load_config, load_controller
    from runtime.policy import NumpyPolicy, load_policy_file

    run = train_tiny_warm_run(tmp_path, "joint")
    assert load_config(run)["action_head"] == "joint"
    state = torch.load(run / "policy_state.pt", weights_only=True)
    assert state["action_net.weight"].shape[0] == 48  # saved as the flat layer
    ctrl = load_controller(run)
    deploy.export_run(run, tmp_path / "p.npz")
    pf = load_policy_file(tmp_path / "p.npz")
    assert pf.meta["action_head"] == "flat" and pf.meta["trained_head"] == "joint"
    pol = NumpyPolicy(pf)
    env = env_from_config(load_config(run), split="test", random_start=False)
    assert steps_where_numpy_decides_as_torch(pol, ctrl, env, traces=2, steps=50) > 50


def test_install_joint_head_rebuilds_the_optimiser_over_the_knob_parameters():
    from sb3_contrib import MaskablePPO

    import envs  # noqa: F401 - registers the env id
    import traces as T
    from agents.joint_head import install_joint_head
    from envs.power_env import MicroLLMPowerEnv

    # phone traces: a hot one (heat-03 starts above the trip point) masks all but one configuration, with no gradient
    phones = [t for t in T.TraceSet.load(T.default_trace_set_dir()) if t.name.startswith("phone-")]
    env = MicroLLMPowerEnv(traces=phones)
    model = MaskablePPO("MlpPolicy", env, n_steps=32, batch_size=32, n_epochs=1, seed=0, device="cpu")
    head = install_joint_head(model, env.space)
    ids = {id(p) for g in model.policy.optimizer.param_groups for p in g["params"]}
    assert id(head.weight) in ids and id(head.bias) in ids
    w0 = head.weight.detach().clone()
    model.learn(64)
    assert not torch.allclose(head.weight, w0)  # trained through the summed logits
    with pytest.raises(ValueError, match="replaces a Linear"):
        install_joint_head(model, env.space)


def test_the_hybrid_head_is_as_expressive_as_flat_and_round_trips_exactly():
    torch.manual_seed(0)
    sel = Factorisation(place_space()).onehot
    h = JointKnobHead(8, sel, residual=True)
    x = torch.randn(6, 8)
    target = torch.nn.Linear(8, sel.shape[0])  # any flat layer: beyond the additive family
    h.load_state_dict(target.state_dict())
    assert torch.allclose(h(x), target(x), atol=1e-5)  # split into knob rows + residual, exactly
    r_norm = float(h.res_weight.norm())
    assert r_norm > 0  # a random flat layer is not additive: the residual carries the rest
    h_joint = JointKnobHead(8, sel)
    h_joint.load_state_dict(target.state_dict())
    assert not torch.allclose(h_joint(x), target(x), atol=1e-3)  # the joint head alone cannot represent it

    from agents.imitation import temper_policy

    class _M:
        class policy:  # noqa: N801
            action_net = h

    before = h(x).detach()
    temper_policy(_M, 2.0)
    assert torch.allclose(h(x), before / 2.0, atol=1e-5)
