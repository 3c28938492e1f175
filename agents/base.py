"""The one controller protocol (SB3's ``predict`` signature) and its base class."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np


class Controller(Protocol):
    """Anything that picks configurations: ``predict`` takes a batch of observations
    (n_envs, obs_dim) or one observation (obs_dim,) and returns the actions (n_envs,) or a scalar
    array, plus a recurrent state (``None`` for stateless controllers)."""

    name: str

    def predict(self, observation: np.ndarray, state: Any = None, episode_start: np.ndarray | None = None,
                deterministic: bool = True) -> tuple[np.ndarray, Any]: ...


def held_to_masks(controller: Any) -> bool:
    """Whether the evaluator and the demonstrations step this controller's forbidden choices down
    (``BaseController.under_masks``): a rule that does not read the masks; not a masked policy, not the oracle."""
    return bool(getattr(controller, "under_masks", False)) and not getattr(controller, "uses_masks", False)


class BaseController:
    """Batches single observations, resets per-episode memory on ``episode_start``.

    Subclasses implement ``act(obs_row, env_index) -> int``.
    """

    name = "base"
    #: a hand-written rule does not read the env's action masks; ``agents.evaluate`` steps its choice down to an
    #: allowed configuration when the mask forbids it (``runtime.rules.step_down``), as a device's shield would,
    #: so a rule and a masked policy are held to the same rules. False: the choice runs as it is (the random
    #: anchor of the oracle-normalised score)
    under_masks = True

    def reset(self, env_index: int) -> None:  # per-episode memory, if any
        pass

    def act(self, obs: np.ndarray, env_index: int) -> int:
        raise NotImplementedError

    def predict(self, observation, state=None, episode_start=None, deterministic=True):
        obs = np.asarray(observation)
        single = obs.ndim == 1
        batch = obs[None] if single else obs
        if episode_start is not None:
            for j, s in enumerate(np.atleast_1d(episode_start)):
                if s:
                    self.reset(j)
        acts = np.array([self.act(batch[j], j) for j in range(batch.shape[0])], dtype=np.int64)
        return (acts[0] if single else acts), state
