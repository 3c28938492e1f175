"""Split-aware baselines (docs/split.md): rules that choose where the model runs, behind ``predict()``.

They read the env's cost tables and link constants (``runtime.dynamics.LinkConstants``) and decide
from the observation only; the per-token time they predict is the dynamics' own
(``runtime.dynamics.token_ms``) at the bandwidth just observed. With the link down (0 Mbit/s) every
rule falls back to the schedutil-like local rule. On a profile without split configurations each
of them is that local rule.

* ``all-server``: everything on the server (``split = 0``, token ids sent) at the best quality the
  server offers; local when the link is down.
* ``neurosurgeon-latency``: Neurosurgeon's rule (Kang et al., ASPLOS 2017): for the model as
  deployed (the best-quality local configuration's depth, heads and bits), the split point —
  local included — with the lowest predicted per-token time at the current bandwidth; activations
  travel uncompressed (fp16, the narrowest lossless-enough format).
* ``neurosurgeon-energy``: the same candidates, the lowest device energy per token (compute +
  radio bits + the connected-state power spread over the tokens to serve).
* ``joint-split``: the source's unified optimiser, per step: over every configuration (depth,
  heads, bits, split point, compression), the highest quality whose predicted per-token time
  meets the SLO with the needed throughput (1.25 × headroom, as schedutil), and whose device power
  fits the supply plus the affordable power (as greedy-budget); ties to lower device energy. The
  source also caps the sequence length; the environment has no context-length knob, so that part
  is not modelled. Its memory constraint never binds here: the whole micro-model (< 3 MB at int4,
  ``model.model.ElasticGPT.resident_bytes``) fits every device kind.
"""

from __future__ import annotations

import numpy as np

from agents.base import BaseController
from agents.baselines import SCHEDUTIL_HEADROOM, F, ObsModel, SchedutilController, largest_config
from runtime.configspace import SPLIT_LOCAL
from runtime.dynamics import VECTOR, radio_j_per_token, token_ms


class _SplitRule(BaseController):
    """Shared parts: the knob values per configuration, the link and the local fallback."""

    def __init__(self, env):
        u = env.unwrapped
        self.m = ObsModel(env)
        c = self.c = self.m.costs
        self.link = u.params.link
        self.slo_ms = float(u.params.slo_ms)
        self.fallback = SchedutilController(env)
        names = c.space.knob_names
        n = len(c.space)
        cfgs = c.space.configs
        self.split = np.array([cfg.split for cfg in cfgs]) if "split" in names else np.full(n, SPLIT_LOCAL)
        self.wire = np.array([cfg.wire for cfg in cfgs]) if "wire" in names else np.full(n, "none")
        self.off = np.asarray(c.offload) > 0

    def token_ms(self, bw_mbps: float) -> np.ndarray:
        """Predicted per-token time of every configuration at this bandwidth (no throttling), ms."""
        c = self.c
        return token_ms(VECTOR, c.decode_ms, 1.0, c.offload, c.up_bits, c.server_ms, bw_mbps, self.link.rtt_ms)

    def device_j_per_token(self, need_tps: float) -> np.ndarray:
        """Device energy per token, J: compute + radio bits + connected-state power over the tokens."""
        c, lk = self.c, self.link
        return c.ept_j + self.off * (radio_j_per_token(c.up_bits, lk) + lk.connected_w / max(need_tps, 1.0))

    def reset(self, env_index: int) -> None:
        self.fallback.reset(env_index)

    def act(self, obs: np.ndarray, env_index: int) -> int:
        bw = float(obs[F["bandwidth_mbps"]])
        if bw <= 0.0 or not self.off.any():
            return self.fallback.act(obs, env_index)
        j = self.choose(obs, bw)
        return self.fallback.act(obs, env_index) if j is None else int(j)

    def choose(self, obs: np.ndarray, bw: float) -> int | None:
        raise NotImplementedError


class AllServerController(_SplitRule):
    """Everything on the server at its best quality; local when the link is down (module docstring)."""

    name = "all-server"

    def choose(self, obs: np.ndarray, bw: float) -> int | None:
        cand = np.flatnonzero(self.split == 0)
        if cand.size == 0:
            return None
        return int(cand[np.lexsort((self.c.ept_j[cand], -self.c.quality[cand]))[0]])


class NeurosurgeonController(_SplitRule):
    """Best split point of the deployed model for latency or for device energy (module docstring)."""

    def __init__(self, env, objective: str = "latency"):
        super().__init__(env)
        if objective not in ("latency", "energy"):
            raise ValueError(f"objective {objective!r}: choose 'latency' or 'energy'")
        self.objective = objective
        self.name = f"neurosurgeon-{objective}"
        sp = self.c.space
        ref = sp.configs[largest_config(self.c)]
        same = np.array([cfg.depth == ref.depth and cfg.heads == ref.heads for cfg in sp.configs])
        # the local model, its split points with uncompressed activations, and the ids-only split 0
        wire_ok = (self.wire == "fp16") | (self.split == SPLIT_LOCAL) | (self.split == 0)
        bits_ok = np.array([cfg.bits == ref.bits for cfg in sp.configs]) | (self.split == 0)
        self.cand = np.flatnonzero(same & wire_ok & bits_ok)

    def choose(self, obs: np.ndarray, bw: float) -> int | None:
        if self.objective == "latency":
            score = self.token_ms(bw)[self.cand]
        else:
            score = self.device_j_per_token(self.m.need_tps(obs))[self.cand]
        return int(self.cand[np.argmin(score)])


def neurosurgeon_latency(env) -> NeurosurgeonController:
    return NeurosurgeonController(env, "latency")


def neurosurgeon_energy(env) -> NeurosurgeonController:
    return NeurosurgeonController(env, "energy")


class JointSplitController(_SplitRule):
    """The source's joint optimiser over every knob, per step (module docstring)."""

    name = "joint-split"

    def choose(self, obs: np.ndarray, bw: float) -> int | None:
        c = self.c
        need = self.m.need_tps(obs)
        tok = self.token_ms(bw)
        rate = np.where(self.off, 1000.0 / tok, c.tps)
        ok = (tok <= self.slo_ms) & (rate >= SCHEDUTIL_HEADROOM * need)
        ept = self.device_j_per_token(need)
        power = self.m.base_w(obs) + np.minimum(need, rate) * ept
        ok &= power <= float(obs[F["supply_w"]]) + float(obs[F["affordable_power_w"]])
        cand = np.flatnonzero(ok)
        if cand.size == 0:
            return None
        return int(cand[np.lexsort((ept[cand], -c.quality[cand]))[0]])


__all__ = ["AllServerController", "JointSplitController", "NeurosurgeonController", "neurosurgeon_energy",
           "neurosurgeon_latency"]
