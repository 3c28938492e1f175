"""The learning algorithms, in one table: what trains, what rebuilds the policy for evaluation,
where the actor's layers are in the state dict, whether the env's action masks are used.

``train.py`` (``make_agent``), ``agents.run_io`` (``load_controller``) and ``deploy.py export``
(``actor_layers``) all dispatch through :data:`ALGOS`; adding an algorithm is one row.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Algo:
    """One algorithm.

    Attributes:
        name: The ``--algo`` name.
        agent: ``module:Class`` of the SB3 algorithm (training).
        policy: ``module:Class`` of its policy (evaluation rebuilds it from ``config.json``).
        actor_prefixes: State-dict prefixes of the actor's Linear layers, in order; the last one
            gives the logits / Q-values (a prefix ending in ``.`` is a numbered ``Sequential``).
        uses_masks: Whether it reads the env's action masks (sb3-contrib's MaskablePPO).
        activation: SB3's default activation when the hyperparameters name none.
        eval_callback: ``module:Class`` of the evaluation callback that handles its masks.
    """

    name: str
    agent: str
    policy: str
    actor_prefixes: tuple[str, ...]
    uses_masks: bool = False
    activation: str = "Tanh"
    eval_callback: str = "stable_baselines3.common.callbacks:EvalCallback"

    def agent_class(self) -> Any:
        return _load(self.agent)

    def policy_class(self) -> Any:
        return _load(self.policy)

    def eval_callback_class(self) -> Any:
        return _load(self.eval_callback)

    @property
    def actor_critic(self) -> bool:
        return self.actor_prefixes[-1] == "action_net"


def _load(path: str) -> Any:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


ALGOS: dict[str, Algo] = {a.name: a for a in (
    Algo("maskable_ppo", "sb3_contrib:MaskablePPO", "sb3_contrib.common.maskable.policies:MaskableActorCriticPolicy",
         ("mlp_extractor.policy_net.", "action_net"), uses_masks=True,
         eval_callback="sb3_contrib.common.maskable.callbacks:MaskableEvalCallback"),
    Algo("ppo", "stable_baselines3:PPO", "stable_baselines3.common.policies:ActorCriticPolicy",
         ("mlp_extractor.policy_net.", "action_net")),
    Algo("dqn", "stable_baselines3:DQN", "stable_baselines3.dqn.policies:DQNPolicy", ("q_net.q_net.",),
         activation="ReLU"),
)}


def algo(name: str) -> Algo:
    """The row of ``name``; a clear error listing the choices otherwise."""
    try:
        return ALGOS[name]
    except KeyError:
        raise ValueError(f"algo {name!r}: choose one of {', '.join(ALGOS)}") from None


def actor_layers(state: dict, name: str) -> list[tuple[Any, Any]]:
    """The actor's Linear layers (weight, bias) in order, from an SB3 policy state_dict.

    Raises:
        ValueError: unknown algorithm, a features extractor with parameters, or missing layers.
    """
    a = algo(name)
    extra = [k for k in state if k.startswith(("pi_features_extractor.", "features_extractor."))]
    if extra:
        raise ValueError(f"features extractor with parameters ({extra[:3]}...) is not supported")
    layers: list[tuple[Any, Any]] = []
    for prefix in a.actor_prefixes:
        if prefix.endswith("."):
            idx = sorted({int(k[len(prefix):].split(".")[0]) for k in state
                          if k.startswith(prefix) and k.endswith(".weight")})
            layers += [(state[f"{prefix}{i}.weight"], state[f"{prefix}{i}.bias"]) for i in idx]
        elif f"{prefix}.weight" in state:
            layers.append((state[f"{prefix}.weight"], state[f"{prefix}.bias"]))
        else:
            raise ValueError(f"state_dict has no {prefix} layer (not a {name} policy)")
    if not layers:
        raise ValueError(f"state_dict has no {'/'.join(a.actor_prefixes)} layers (not a {name} policy)")
    return layers


__all__ = ["ALGOS", "Algo", "actor_layers", "algo"]
