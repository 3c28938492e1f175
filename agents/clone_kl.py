"""RL fine-tuning that stays near the imitated policy: MaskablePPO plus a KL penalty to a frozen anchor.

After a warm start (``train.py --bc-expert ...``) the policy imitates a rule; plain PPO then moves it wherever the
sampled advantages point, and on the default set that undoes as much as it adds (docs/agents.md: over six seeds
the clone alone beats schedutil in four, the policy after RL in one). The fix used when fine-tuning imitation
policies with RL — Kickstarting (Schmitt et al. 2018), VPT's RL fine-tuning (Baker et al. 2022) — is a loss term
that keeps the student's action distribution near the frozen imitated one::

    loss = PPO's clipped surrogate + ent_coef * entropy loss + vf_coef * value loss
           + clone_kl * mean over the minibatch's states of KL(anchor(.|s) || policy(.|s))

The forward KL (anchor first) is mass-covering: the policy may not drop an action the anchor takes with a real
probability unless the advantage pays for it, and it costs nothing where the anchor has no mass (masked or
never-chosen configurations). With a factorised head the action is one categorical per knob family, independent
given the state, so the KL is the sum over families. Masked choices count as zero probability for both.

The anchor reads observations normalised with the statistics it was fitted under; the rollout buffer holds them
normalised with the running statistics of the moment (``VecNormalize`` keeps updating during RL), so they are
mapped back through the current statistics and forward through the anchor's.

``CloneKLMaskablePPO.train`` is sb3-contrib 2.9's ``MaskablePPO.train`` with that one term added (and its value
logged as ``train/clone_kl``); ``tests/test_clone_kl.py`` pins it to the library's update at ``clone_kl = 0``.
"""

from __future__ import annotations

import copy

import numpy as np
import torch as th
from gymnasium import spaces
from sb3_contrib import MaskablePPO
from stable_baselines3.common.utils import explained_variance
from torch.nn import functional as F


def categoricals(dist) -> list:
    """The categorical(s) of an sb3-contrib masked distribution: one (Discrete) or one per component
    (MultiDiscrete)."""
    return list(dist.distributions) if hasattr(dist, "distributions") else [dist.distribution]


def masked_kl(p_logits: th.Tensor, q_logits: th.Tensor, mask: th.Tensor | None) -> th.Tensor:
    """KL(p || q) per row, over the choices ``mask`` allows (both distributions renormalised over them).

    ``p_logits``, ``q_logits``: (batch, n) unnormalised log-probabilities; ``mask``: (batch, n) bool or None.
    Computed by hand rather than with ``torch.distributions.kl_divergence``, which returns inf where ``q``
    underflows to 0 in float32 on an allowed choice (a peaked clone does that).
    """
    if mask is not None:
        neg = th.tensor(-1e8, dtype=p_logits.dtype, device=p_logits.device)
        p_logits, q_logits = th.where(mask, p_logits, neg), th.where(mask, q_logits, neg)
    logp, logq = th.log_softmax(p_logits, -1), th.log_softmax(q_logits, -1)
    terms = logp.exp() * (logp - logq)
    if mask is not None:
        terms = th.where(mask, terms, th.zeros_like(terms))
    return terms.sum(-1)


class CloneKLMaskablePPO(MaskablePPO):
    """MaskablePPO with ``clone_kl * KL(anchor || policy)`` in its loss (module docstring).

    Args:
        clone_kl: The penalty's weight (nats of KL per unit of normalised advantage); 0 is MaskablePPO.
        *args, **kwargs: MaskablePPO's.

    Call :meth:`set_anchor` after the warm start (before ``learn``); without an anchor the penalty is 0.
    """

    def __init__(self, *args, clone_kl: float = 0.0, **kwargs) -> None:
        if not (np.isfinite(clone_kl) and clone_kl >= 0):
            raise ValueError(f"clone_kl: {clone_kl} must be a finite number >= 0")
        self.clone_kl = float(clone_kl)
        self._anchor = None
        self._anchor_stats: dict | None = None
        super().__init__(*args, **kwargs)

    def _excluded_save_params(self) -> list[str]:
        # the anchor is a second policy network: never pickled into model.zip (the warm start's own run folder
        # holds it, <run>/warm_start/policy_state.pt)
        return [*super()._excluded_save_params(), "_anchor", "_anchor_stats"]

    def set_anchor(self, obs_stats: dict | None = None) -> None:
        """Freeze a copy of the current policy as the anchor.

        Args:
            obs_stats: The observation statistics the anchor was fitted under
                (``agents.run_io.vecnormalize_stats`` of the training ``VecNormalize`` at the end of the warm
                start: ``mean``, ``var``, ``epsilon``, ``clip_obs``), or None when observations are not normalised.
        """
        self._anchor = copy.deepcopy(self.policy).requires_grad_(False)
        self._anchor.set_training_mode(False)
        self._anchor_stats = None if obs_stats is None else {
            "norm_obs": True, **{k: np.array(v, np.float64) for k, v in obs_stats.items()}}

    def _anchor_obs(self, obs: th.Tensor) -> th.Tensor:
        """The rollout's observations (normalised with the current running statistics) as the anchor saw them:
        back through ``VecNormalize``'s current statistics, forward through the anchor's (``run_io.normalize_obs``,
        the evaluator's transform)."""
        from agents.run_io import normalize_obs

        venv = self.get_vec_normalize_env()
        if self._anchor_stats is None or venv is None or not venv.norm_obs:
            return obs
        raw = venv.unnormalize_obs(obs.cpu().numpy().astype(np.float64))
        return th.as_tensor(normalize_obs(raw, self._anchor_stats), device=obs.device)

    def anchor_kl(self, obs: th.Tensor, action_masks) -> th.Tensor:
        """Per-state KL(anchor || policy), summed over the action components: shape (batch,)."""
        masks = None if action_masks is None else th.as_tensor(action_masks, dtype=th.bool, device=obs.device)
        dims = ([self.action_space.n] if isinstance(self.action_space, spaces.Discrete)
                else list(self.action_space.nvec))
        split = [None] * len(dims) if masks is None else th.split(masks.view(len(obs), -1), dims, dim=1)
        with th.no_grad():
            anchor = categoricals(self._anchor.get_distribution(self._anchor_obs(obs)))
        mine = categoricals(self.policy.get_distribution(obs))
        return sum(masked_kl(a.logits, m.logits, k) for a, m, k in zip(anchor, mine, split, strict=True))

    def train(self) -> None:  # sb3-contrib 2.9 MaskablePPO.train + the clone_kl term (marked "clone_kl")
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        clip_range = self.clip_range(self._current_progress_remaining)
        if self.clip_range_vf is not None:
            clip_range_vf = self.clip_range_vf(self._current_progress_remaining)

        entropy_losses = []
        pg_losses, value_losses = [], []
        clip_fractions = []
        clone_kls = []  # clone_kl
        penalise = self.clone_kl > 0 and self._anchor is not None  # clone_kl

        continue_training = True
        for epoch in range(self.n_epochs):
            approx_kl_divs = []
            for rollout_data in self.rollout_buffer.get(self.batch_size):
                actions = rollout_data.actions
                if isinstance(self.action_space, spaces.Discrete):
                    actions = rollout_data.actions.long().flatten()

                values, log_prob, entropy = self.policy.evaluate_actions(
                    rollout_data.observations, actions, action_masks=rollout_data.action_masks)
                values = values.flatten()
                advantages = rollout_data.advantages
                if self.normalize_advantage:
                    advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)

                ratio = th.exp(log_prob - rollout_data.old_log_prob)
                policy_loss_1 = advantages * ratio
                policy_loss_2 = advantages * th.clamp(ratio, 1 - clip_range, 1 + clip_range)
                policy_loss = -th.min(policy_loss_1, policy_loss_2).mean()

                pg_losses.append(policy_loss.item())
                clip_fraction = th.mean((th.abs(ratio - 1) > clip_range).float()).item()
                clip_fractions.append(clip_fraction)

                if self.clip_range_vf is None:
                    values_pred = values
                else:
                    values_pred = rollout_data.old_values + th.clamp(
                        values - rollout_data.old_values, -clip_range_vf, clip_range_vf)
                value_loss = F.mse_loss(rollout_data.returns, values_pred)
                value_losses.append(value_loss.item())

                if entropy is None:
                    entropy_loss = -th.mean(-log_prob)
                else:
                    entropy_loss = -th.mean(entropy)
                entropy_losses.append(entropy_loss.item())

                loss = policy_loss + self.ent_coef * entropy_loss + self.vf_coef * value_loss
                if penalise:  # clone_kl
                    kl_anchor = self.anchor_kl(rollout_data.observations, rollout_data.action_masks).mean()
                    clone_kls.append(kl_anchor.item())
                    loss = loss + self.clone_kl * kl_anchor

                with th.no_grad():
                    log_ratio = log_prob - rollout_data.old_log_prob
                    approx_kl_div = th.mean((th.exp(log_ratio) - 1) - log_ratio).cpu().numpy()
                    approx_kl_divs.append(approx_kl_div)

                if self.target_kl is not None and approx_kl_div > 1.5 * self.target_kl:
                    continue_training = False
                    if self.verbose >= 1:
                        print(f"Early stopping at step {epoch} due to reaching max kl: {approx_kl_div:.2f}")
                    break

                self.policy.optimizer.zero_grad()
                loss.backward()
                th.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
                self.policy.optimizer.step()

            self._n_updates += 1
            if not continue_training:
                break
        explained_var = explained_variance(self.rollout_buffer.values.flatten(), self.rollout_buffer.returns.flatten())

        self.logger.record("train/entropy_loss", np.mean(entropy_losses))
        self.logger.record("train/policy_gradient_loss", np.mean(pg_losses))
        self.logger.record("train/value_loss", np.mean(value_losses))
        self.logger.record("train/approx_kl", np.mean(approx_kl_divs))
        self.logger.record("train/clip_fraction", np.mean(clip_fractions))
        self.logger.record("train/loss", loss.item())
        self.logger.record("train/explained_variance", explained_var)
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/clip_range", clip_range)
        if self.clip_range_vf is not None:
            self.logger.record("train/clip_range_vf", clip_range_vf)
        if clone_kls:  # clone_kl
            self.logger.record("train/clone_kl", np.mean(clone_kls))


__all__ = ["CloneKLMaskablePPO", "categoricals", "masked_kl"]
