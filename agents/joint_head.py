"""The joint head: per-knob logits summed into one logit per configuration, masked jointly.

``train.py --action-head joint``. The factorised head (``agents.factorised``) samples each knob family from
its own masked categorical; near the trip point its joint choice is one the flat mask forbids on 31-45 % of
the masked steps of the real-data test split (``benchmarks/factorised_remaps.py``), and
``Factorisation.index`` then runs the nearest allowed configuration, whatever its quality. The flat head has
one free logit per configuration and never meets that, but it learns each configuration on its own.

The joint head keeps the factorised head's parameters (one weight row per knob value, ``sum(dims)`` rows)
and the flat head's distribution::

    knob_logits = W · latent + b                 # (..., sum(dims))   one logit per knob value
    logits[c]   = Σ_families knob_logits[value of c's family]  = (S · knob_logits)[c]
                                                 # (..., n_configs)   S: (n_configs, sum(dims)) one-hot rows

and MaskablePPO masks ``logits`` with the env's flat mask: an exact masked distribution over the allowed
configurations, so no remapping. ``S`` is ``runtime.factorised.Factorisation.onehot``. Because the head is
linear, ``S·W`` and ``S·b`` are an ordinary flat layer: :meth:`JointKnobHead.state_dict` writes them as
``weight`` / ``bias`` of shape ``(n_configs, latent)`` / ``(n_configs,)``, so a saved joint policy *is* a
flat-head policy to ``agents.run_io``, ``deploy.py export``, the evaluators and the device runtime, none of
which changes. Loading such a state back (a warm start, a checkpoint) recovers an equivalent ``W`` with
``pinv(S)`` (exact on the logits: ``S · pinv(S) · S = S``).

``residual=True`` (``--action-head hybrid``) adds a free flat layer, initialised at zero::

    logits = S · (W · latent + b) + (R · latent + r)

as expressive as the flat head (the additive part alone cannot rank every allowed set the way the flat head can:
on the real-data split the joint head loses the same ~10 return as the factorised one on the thermally masked
trace), with the shared knob rows still carrying what configurations have in common. It saves as the flat layer
``S·W + R``, ``S·b + r``; loading splits a flat layer into its projection on the knob rows and the residual.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class JointKnobHead(nn.Module):
    """``logits = S (W x + b)``: ``weight`` (sum(dims), latent) and ``bias`` (sum(dims),) are the trained
    parameters (so ``agents.imitation.temper_policy`` divides them as it does a flat head's); ``S`` is fixed."""

    def __init__(self, latent_dim: int, selection: np.ndarray, init_gain: float = 0.01, residual: bool = False) -> None:
        super().__init__()
        sel = torch.as_tensor(np.asarray(selection, dtype=np.float32))
        if sel.ndim != 2 or not torch.all((sel == 0) | (sel == 1)):
            raise ValueError(f"selection must be a 0/1 matrix (n_configs, n_logits), got shape {tuple(sel.shape)}")
        self.in_features, self.out_features, self.n_logits = int(latent_dim), int(sel.shape[0]), int(sel.shape[1])
        self.weight = nn.Parameter(torch.empty(self.n_logits, self.in_features))
        self.bias = nn.Parameter(torch.zeros(self.n_logits))
        nn.init.orthogonal_(self.weight, gain=init_gain)  # SB3's gain for the action net
        self.register_buffer("selection", sel, persistent=False)  # (n_configs, n_logits)
        self.register_buffer("selection_pinv", torch.linalg.pinv(sel), persistent=False)  # (n_logits, n_configs)
        self.residual = bool(residual)
        if self.residual:  # a free per-configuration layer on top, from zero: the knob rows lead at first
            self.res_weight = nn.Parameter(torch.zeros(self.out_features, self.in_features))
            self.res_bias = nn.Parameter(torch.zeros(self.out_features))

    def forward(self, latent: torch.Tensor) -> torch.Tensor:  # (..., latent) -> (..., n_configs)
        return nn.functional.linear(latent, *self.flat())

    def flat(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The equivalent flat layer: ``(S·W [+ R], S·b [+ r])``."""
        w, b = self.selection @ self.weight, self.selection @ self.bias
        if self.residual:
            w, b = w + self.res_weight, b + self.res_bias
        return w, b

    def _save_to_state_dict(self, destination, prefix, keep_vars):  # the flat layer, under the flat names
        w, b = self.flat()
        destination[prefix + "weight"] = w if keep_vars else w.detach()
        destination[prefix + "bias"] = b if keep_vars else b.detach()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        kw, kb = prefix + "weight", prefix + "bias"
        if kw not in state_dict or kb not in state_dict:
            missing_keys += [k for k in (kw, kb) if k not in state_dict]
            return
        w, b = state_dict[kw], state_dict[kb]
        with torch.no_grad():
            if tuple(w.shape) == (self.out_features, self.in_features) and tuple(b.shape) == (self.out_features,):
                self.weight.copy_(self.selection_pinv @ w.to(self.weight))  # a flat layer (this head's own save)
                self.bias.copy_(self.selection_pinv @ b.to(self.bias))
                if self.residual:  # what the knob rows cannot carry
                    self.res_weight.copy_(w.to(self.weight) - self.selection @ self.weight)
                    self.res_bias.copy_(b.to(self.bias) - self.selection @ self.bias)
            elif tuple(w.shape) == tuple(self.weight.shape) and tuple(b.shape) == tuple(self.bias.shape):
                self.weight.copy_(w)
                self.bias.copy_(b)
                if self.residual:
                    self.res_weight.zero_()
                    self.res_bias.zero_()
            else:
                error_msgs.append(f"{kw}: shape {tuple(w.shape)} is neither the flat layer "
                                  f"({self.out_features}, {self.in_features}) nor the knob layer "
                                  f"({self.n_logits}, {self.in_features})")

    def extra_repr(self) -> str:
        return (f"latent={self.in_features}, knob_logits={self.n_logits}, configurations={self.out_features}, "
                f"residual={self.residual}")


def install_joint_head(model, space, residual: bool = False) -> JointKnobHead:
    """Replaces ``model.policy.action_net`` (an SB3 actor-critic with a flat ``Discrete`` action over ``space``'s
    configurations) by a :class:`JointKnobHead` and rebuilds the policy's optimiser over the new parameters."""
    from runtime.factorised import Factorisation

    pol = model.policy
    old = pol.action_net
    if not isinstance(old, nn.Linear):
        raise ValueError(f"the joint head replaces a Linear action net, found {type(old).__name__}")
    sel = Factorisation(space).onehot
    if sel.shape[0] != old.out_features:
        raise ValueError(f"the policy has {old.out_features} actions, the space {sel.shape[0]} configurations")
    head = JointKnobHead(old.in_features, sel, residual=residual).to(old.weight.device)
    pol.action_net = head
    lr = pol.optimizer.param_groups[0]["lr"]
    pol.optimizer = pol.optimizer_class(pol.parameters(), lr=lr, **pol.optimizer_kwargs)
    return head
