"""Placement-aware baselines (docs/placement.md): rules that choose which processors run the model.

``qeil-greedy`` follows the orchestration of the QEIL work the project builds on (``../shared/SOURCES.md``):
per-processor cost models, a greedy assignment of the model to processors, and re-assignment when a
processor is loaded (busy, lost) or hot. Per step:

1. the model size comes from the schedutil-like rule over the CPU configurations (depth, heads, bits:
   the slowest that covers 1.25 × the needed rate, stepped down when hot);
2. among that model's placements — all on one processor, or two contiguous segments — the greedy
   choice is the lowest energy per token whose predicted rate (the profile's per-processor cost model)
   covers 1.25 × the need within the SLO, on processors that are up (``proc_up_*`` in the observation)
   and not within 1 °C of their own trip point (the device's ``t_max`` plus the processor's offset,
   ``runtime/hardware.py``);
3. none qualifies: the model on the CPU (the rule's own choice).

On a profile without placement it is the schedutil rule.
"""

from __future__ import annotations

import numpy as np

from agents.base import BaseController
from agents.baselines import SCHEDUTIL_HEADROOM, F, ObsModel, SchedutilController
from runtime.placement import ROLES

HOT_MARGIN_C = 1.0


class QeilGreedyController(BaseController):
    """Greedy processor assignment with re-assignment when a processor is down or hot (module docstring)."""

    name = "qeil-greedy"

    def __init__(self, env, headroom: float = SCHEDUTIL_HEADROOM):
        u = env.unwrapped
        self.m = ObsModel(env)
        c = self.c = self.m.costs
        self.headroom, self.slo_ms = headroom, float(u.params.slo_ms)
        cpu = np.flatnonzero((c.roles == 1) & (np.asarray(c.offload) == 0))
        self.size_rule = _CpuSchedutil(env, cpu)
        # the placements of each configuration's model (same depth, heads, bits), by its CPU twin
        self.family: dict[int, np.ndarray] = {}
        for i, t in enumerate(c.cpu_twin):
            self.family.setdefault(int(t), []).append(i)
        self.family = {k: np.asarray(v) for k, v in self.family.items()}
        names = u.layout.names
        self.up_idx = [names.index(f"proc_up_{r}") if f"proc_up_{r}" in names else None for r in ROLES]
        self.trip = np.minimum(c.trip1_c, c.trip2_c)  # the stricter of its processors' trip points

    def act(self, obs: np.ndarray, env_index: int) -> int:
        base = self.size_rule.act(obs, env_index)
        fam = self.family.get(int(self.c.cpu_twin[base]), np.array([base]))
        if fam.size == 1:
            return base
        c = self.c
        down = 0
        for bit, j in enumerate(self.up_idx):
            if j is not None and obs[j] < 0.5:
                down |= 1 << bit
        need = self.m.need_tps(obs)
        headroom_c = float(obs[F["temp_headroom_c"]])
        ok = ((c.roles[fam] & down) == 0) & (headroom_c + self.trip[fam] > HOT_MARGIN_C)
        ok &= (c.tps[fam] >= self.headroom * need) & (c.decode_ms[fam] <= self.slo_ms)
        cand = fam[ok]
        if cand.size == 0:
            return base
        return int(cand[np.argmin(c.ept_j[cand])])


class _CpuSchedutil(SchedutilController):
    """The schedutil-like rule restricted to the CPU configurations (the model size of step 1)."""

    def __init__(self, env, cpu: np.ndarray):
        super().__init__(env)
        keep = np.isin(self.front, cpu)
        if keep.any():
            self.front = self.front[keep]
        else:  # no CPU configuration on the frontier: the CPU ones by energy
            self.front = cpu[np.argsort(self.m.costs.ept_j[cpu])]


__all__ = ["QeilGreedyController"]
