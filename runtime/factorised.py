"""The factorised action head's decoding: knob-value vectors ↔ configuration indices (numpy only).

A factorised policy has one categorical per knob family (depth, heads, bits, place, split, ...): its last layer
gives ``sum(len(values))`` logits, concatenated family by family in the space's knob order, instead of one
logit per configuration. This module is its one owner, shared by training (``agents.factorised``: the
``MultiDiscrete`` env wrappers and SB3 controller) and the device (``runtime.policy.NumpyPolicy``):

* :meth:`Factorisation.index`: a value vector runs its configuration; a combination the space does not have (a
  rule or the profile removed it) runs the nearest valid one (fewest value steps over all knobs, ties to the
  lower index); with a mask of allowed configurations, an infeasible joint choice runs its nearest *allowed*
  configuration, so the feasibility rules always hold.
* :meth:`Factorisation.masks`: per-family masks from the flat mask — value ``v`` of family ``f`` is allowed
  when some allowed configuration has it (sb3-contrib's ``MultiDiscrete`` mask layout).
* :meth:`Factorisation.choose`: the device's decision from the logits: per-family masked argmax, then
  :meth:`index`.
"""

from __future__ import annotations

import numpy as np

#: logit given to a masked-out value (sb3-contrib's rule; runtime.policy.MASKED_LOGIT)
_MASKED = -1e8


class Factorisation:
    """Knob-value vectors ↔ configuration indices of a ``runtime.configspace.ConfigSpace``."""

    def __init__(self, space) -> None:
        self.space = space
        self.dims = np.array([len(k.values) for k in space.knobs], dtype=np.int64)
        #: (n_configs, n_knobs): each configuration's value index per knob
        self.values = np.array([[k.values.index(v) for k, v in zip(space.knobs, cfg)] for cfg in space.configs])
        self._stride = np.concatenate([np.cumprod(self.dims[::-1])[::-1][1:], [1]])
        grid = np.stack(np.meshgrid(*[np.arange(d) for d in self.dims], indexing="ij"), -1).reshape(-1, len(self.dims))
        dist = np.abs(grid[:, None, :] - self.values[None, :, :]).sum(-1)  # (n_product, n_configs)
        #: product point (flattened value vector) -> nearest configuration index (itself when valid)
        self.table = np.argmin(dist, axis=1)
        self._offsets = np.concatenate([[0], np.cumsum(self.dims)[:-1]])
        #: (n_logits, n_configs) bool: logit j's value is the configuration's value of its family
        self._has = np.zeros((int(self.dims.sum()), len(self.values)), bool)
        for f, (off, d) in enumerate(zip(self._offsets, self.dims)):
            for v in range(d):
                self._has[off + v] = self.values[:, f] == v
        self._has_t = np.ascontiguousarray(self._has.T.astype(np.uint8))  # (n_configs, n_logits), for masks()
        self._split = self._offsets[1:].tolist()  # np.split points: one slice per family

    @property
    def onehot(self) -> np.ndarray:
        """(n_configs, n_logits) float64: each configuration's knob values, one-hot per knob in logit order (the
        rule hint's encoding, ``runtime.observation.hint_table``)."""
        return self._has_t.astype(np.float64)

    @property
    def n_logits(self) -> int:
        return int(self.dims.sum())

    def index(self, actions: np.ndarray, allowed: np.ndarray | None = None) -> np.ndarray:
        """(n, n_knobs) value vectors -> (n,) configuration indices; with ``allowed`` ((n, n_configs) bool),
        an infeasible joint choice runs its nearest allowed configuration."""
        a = np.asarray(actions, dtype=np.int64).reshape(-1, len(self.dims))
        idx = self.table[a @ self._stride]
        if allowed is None:
            return idx
        allowed = np.asarray(allowed, bool).reshape(len(a), -1)
        bad = ~allowed[np.arange(len(a)), idx]
        for j in np.flatnonzero(bad):  # the per-family masks allowed a forbidden joint choice (near the trip point
            # often: benchmarks/factorised_remaps.py)
            ok = np.flatnonzero(allowed[j])
            if not len(ok):
                continue
            d = np.abs(self.values[ok] - a[j]).sum(-1)
            idx[j] = ok[np.argmin(d)]
        return idx

    def masks(self, allowed: np.ndarray) -> np.ndarray:
        """(n, n_configs) flat masks -> (n, sum(dims)) per-family masks (sb3-contrib's MultiDiscrete layout)."""
        allowed = np.asarray(allowed, bool).reshape(-1, len(self.values))
        return (allowed.view(np.uint8) @ self._has_t) > 0

    def choose(self, logits: np.ndarray, allowed: np.ndarray | None = None) -> int:
        """The configuration a factorised policy runs for one observation's ``logits`` (n_logits,): the
        argmax of each family (over its allowed values when ``allowed``, a flat bool mask, is given)."""
        lg = np.asarray(logits, dtype=np.float64)
        if allowed is not None:
            allowed = np.asarray(allowed, bool)
            if allowed.all():  # nothing masked (most decisions): no per-family masks, no nearest-allowed search
                allowed = None
            else:
                lg = np.where(self.masks(allowed)[0], lg, _MASKED)
        a = [int(part.argmax()) for part in np.split(lg, self._split)]
        return int(self.index(np.array([a]), None if allowed is None else allowed[None])[0])


__all__ = ["Factorisation"]
