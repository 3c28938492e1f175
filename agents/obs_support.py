"""Observations held to the range training saw (``train.py --clamp-obs``).

Why. ``VecNormalize`` divides each feature by its training standard deviation and clips at ±10. A feature that
barely moves in training — the backlog and the latency over the SLO, which are zero for every phone and station in
the real data, or the affordable power, which a laptop's 60 Wh battery puts 14 σ above any phone's — reaches the
network at the clip, through weights that were never trained on it. Cross-validation by unit shows what follows:
the one laptop in the data, held out in fold 0, is run at the oracle's score by two seeds and near the random
policy's by the third (docs/agents.md, "A device never seen").

What. Each feature is first clipped to ``[min, max]`` of the raw values the normalisation statistics were fitted
on, then normalised as before: each input of an unseen device is the nearest value training saw, not an
extrapolation. That alone does not make the device read like any one device seen (the laptop then reads as a phone
that is both the richest and the most draining, and the seeds still disagree: docs/agents.md); dropping the watts for
the device-relative power block does. On the device this costs nothing: the runtime already clips the raw
observation to per-feature bounds (``runtime.policy.NumpyPolicy``); the file's ``obs_min`` / ``obs_max`` narrow
them.

``train.py --obs-drop NAMES`` pins features to a support of ``[0, 0]``: the policy never reads them (the hand-written
rules, which read the same observation, still do). With ``--env.power-cap`` the device-relative power block carries
what ``power_w`` and ``affordable_power_w`` said in watts.

* :class:`SupportRunningMeanStd` — SB3's ``RunningMeanStd`` that also keeps the per-feature ``lo`` / ``hi``.
* :class:`SupportVecNormalize` — ``VecNormalize`` that clips to ``obs_rms.lo`` / ``obs_rms.hi`` before
  normalising whenever its statistics carry them (otherwise exactly ``VecNormalize``).
"""

from __future__ import annotations

import numpy as np
from stable_baselines3.common.running_mean_std import RunningMeanStd
from stable_baselines3.common.vec_env import VecNormalize


class SupportRunningMeanStd(RunningMeanStd):
    """``RunningMeanStd`` plus the per-feature minimum (``lo``) and maximum (``hi``) of every batch it saw
    (``+inf`` / ``-inf`` before the first)."""

    def __init__(self, epsilon: float = 1e-4, shape: tuple[int, ...] = (), pinned: np.ndarray | None = None) -> None:
        super().__init__(epsilon=epsilon, shape=shape)
        #: features held at 0 whatever they read (``--obs-drop``): their support is [0, 0]
        self.pinned = np.zeros(shape, bool) if pinned is None else np.asarray(pinned, bool).copy()
        self.lo = np.full(shape, np.inf)
        self.hi = np.full(shape, -np.inf)
        self._pin()

    def _pin(self) -> None:
        self.lo[self.pinned] = 0.0
        self.hi[self.pinned] = 0.0

    def update(self, arr: np.ndarray) -> None:
        super().update(arr)
        self.lo = np.minimum(self.lo, np.min(arr, axis=0))
        self.hi = np.maximum(self.hi, np.max(arr, axis=0))
        self._pin()

    def set_support(self, obs: np.ndarray) -> None:
        """The support of ``obs`` (n, obs_dim) alone, e.g. the demonstrations the statistics were fitted to."""
        self.lo = np.min(obs, axis=0).astype(np.float64)
        self.hi = np.max(obs, axis=0).astype(np.float64)
        self._pin()

    def copy(self) -> SupportRunningMeanStd:
        out = SupportRunningMeanStd(shape=self.mean.shape, pinned=self.pinned)
        out.mean, out.var, out.count = self.mean.copy(), self.var.copy(), float(self.count)
        out.lo, out.hi = self.lo.copy(), self.hi.copy()
        return out


def support(rms) -> tuple[np.ndarray, np.ndarray] | None:
    """``(lo, hi)`` of ``rms`` when it keeps a support and has seen data, else None."""
    lo, hi = getattr(rms, "lo", None), getattr(rms, "hi", None)
    if lo is None or hi is None or not (np.isfinite(lo).all() and np.isfinite(hi).all()):
        return None
    return lo, hi


class SupportVecNormalize(VecNormalize):
    """``VecNormalize``; with ``clamp_obs=True`` its statistics keep the support and observations are clipped to
    it before they are normalised (training and evaluation alike; the eval env receives the support with the
    statistics through SB3's ``sync_envs_normalization``). ``pinned`` (obs_dim,) bool: features held at 0
    (``--obs-drop``)."""

    def __init__(self, venv, *args, clamp_obs: bool = False, pinned: np.ndarray | None = None, **kwargs) -> None:
        super().__init__(venv, *args, **kwargs)
        if clamp_obs and self.norm_obs:
            self.obs_rms = SupportRunningMeanStd(shape=self.obs_rms.mean.shape, pinned=pinned)

    def _normalize_obs(self, obs: np.ndarray, obs_rms: RunningMeanStd) -> np.ndarray:
        s = support(obs_rms)
        if s is not None:
            obs = np.clip(obs, s[0], s[1])
        return super()._normalize_obs(obs, obs_rms)


__all__ = ["SupportRunningMeanStd", "SupportVecNormalize", "support"]
