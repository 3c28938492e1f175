"""Critic warm-up: the first RL steps after a warm start train the value function only, the actor frozen.

After ``train.py --bc-expert ...`` the actor imitates the expert, and the value head was fitted to the *expert's*
discounted returns-to-go (``agents.imitation.pretrain``). With an expert that plans with foresight (the oracle) those
returns are higher than the imitated policy earns, and they differ per state in ways the policy cannot see; PPO's
first updates then follow advantages computed against the wrong baseline and move a strong clone in directions
that only the critic's error points to. Fine-tuning an imitated policy with an actor-critic is known to degrade it
this way unless the critic first learns the student's own returns with the actor held fixed (PIRLNav, Ramrakhya et
al., CVPR 2023, "critic-only learning phase"; the same warm-up appears in Jump-Start RL, Uchendu et al., ICML 2023).

:class:`CriticWarmup` is a callback: at the start of learning it sets ``requires_grad = False`` on every policy
parameter outside the value path (``mlp_extractor.value_net`` and ``value_net``), so PPO's loss moves the value
function only (Adam skips parameters without a gradient; the clipped surrogate and the entropy term contribute
nothing). Every update whose rollout ends at or before environment step ``steps`` is a critic-only one; before the
first update on a rollout that ends past it, the actor's parameters are set back to trainable. The rollouts of the
warm-up are the imitated policy's own, so the value function it leaves is that policy's. With separate actor and critic
networks (the hyperparameters' ``net_arch=dict(pi=..., vf=...)``) nothing the actor reads is changed by the warm-up;
a network that shares layers between actor and critic is refused, since freezing them would freeze the critic too.
"""

from __future__ import annotations

from stable_baselines3.common.callbacks import BaseCallback

#: the parameter-name prefixes of the value path in SB3's ActorCriticPolicy
VALUE_PREFIXES = ("mlp_extractor.value_net.", "value_net.")


def actor_parameters(policy) -> list:
    """The policy's parameters outside the value path (what the warm-up freezes); refuses shared layers."""
    names = [n for n, _ in policy.named_parameters()]
    shared = [n for n in names if n.startswith("mlp_extractor.shared_net.")]
    if shared:  # older SB3 (shared layers in the MLP extractor): freezing them would freeze the critic too
        raise ValueError(f"critic warm-up needs separate actor and critic networks; {shared[0]} is shared")
    if not any(n.startswith(VALUE_PREFIXES) for n in names):
        raise ValueError("critic warm-up: the policy has no value network (an actor-critic is needed)")
    return [p for n, p in policy.named_parameters() if not n.startswith(VALUE_PREFIXES)]


class CriticWarmup(BaseCallback):
    """Freezes the actor for the first ``steps`` environment steps of ``learn()`` (module docstring)."""

    def __init__(self, steps: int, verbose: int = 0):
        super().__init__(verbose)
        if steps < 0:
            raise ValueError(f"critic warm-up steps must be >= 0, got {steps}")
        self.steps = int(steps)
        self.frozen = False
        self.released_at: int | None = None

    def _set(self, trainable: bool) -> None:
        for p in actor_parameters(self.model.policy):
            p.requires_grad_(trainable)
        self.frozen = not trainable

    def _on_training_start(self) -> None:
        if self.steps > 0 and self.model.num_timesteps < self.steps:
            self._set(False)

    def _on_rollout_end(self) -> None:
        # called after a rollout is collected, before the update it feeds: the updates on rollouts that end at or
        # before step `steps` train the critic only; the first rollout that ends past it trains the actor too
        if self.frozen and self.model.num_timesteps > self.steps:
            self._set(True)
            self.released_at = int(self.model.num_timesteps)
            if self.verbose:
                print(f"critic warm-up over at step {self.released_at}: the actor learns from now on")
        self.logger.record("train/actor_frozen", float(self.frozen))

    def _on_step(self) -> bool:
        return True

    def _on_training_end(self) -> None:
        if self.frozen:  # a run shorter than the warm-up: leave the policy trainable for anything after
            self._set(True)
