"""Score factorised runs decoded by their joint probability over the allowed configurations.

    python benchmarks/joint_decode.py --run runs/<run> [--run ...] --traces data/real --split test \
        --max-steps 720 --oracle-grid 51,13,5 --policies random,static-largest,oracle --out <folder>

``agents.evaluate`` with one change: a factorised policy's deterministic decision is the allowed configuration
with the largest sum of its knob values' logits (the masked argmax of the joint log-probability), instead of each
family's masked argmax followed by the allowed configuration nearest in value steps (``runtime.factorised``). The
two agree whenever the per-family choice is allowed; they differ near the trip point, where the per-family choice is
often one the mask forbids (``benchmarks/factorised_remaps.py``). Every other argument is ``agents.evaluate``'s.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import agents.factorised as af  # noqa: E402

_nearest = af.FactorisedController.predict


def _joint_predict(self, observation, state=None, episode_start=None, deterministic=True, action_masks=None):
    """The masked argmax of the joint log-probability (module docstring); stochastic calls are unchanged."""
    import torch

    from agents.run_io import normalize_obs

    if not deterministic or action_masks is None:
        return _nearest(self, observation, state, episode_start, deterministic, action_masks)
    obs = normalize_obs(np.asarray(observation, dtype=np.float64), self.stats)
    single = obs.ndim == 1
    o = torch.as_tensor(obs.reshape(1 if single else len(obs), -1), dtype=torch.float32)
    with torch.no_grad():
        dist = self.policy.get_distribution(o)
        logits = torch.cat([d.logits for d in dist.distributions], dim=-1).numpy().astype(np.float64)
    allowed = np.asarray(action_masks, bool).reshape(len(logits), -1)
    score = np.where(allowed, logits @ self.fac._has_t.T.astype(np.float64), -np.inf)  # (n, n_configs)
    idx = score.argmax(1)
    return (idx[0].copy() if single else idx), state


def main(argv: list[str] | None = None) -> int:
    import agents.evaluate as ev

    af.FactorisedController.predict = _joint_predict
    return ev.main(argv)


if __name__ == "__main__":
    sys.exit(main())
