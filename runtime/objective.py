"""The user's objective on the device: what it asks, how the run is doing against it, whether it was met.

numpy-free (standard library only); the runtime manager feeds it once per decision. The objectives
are the simulator's (``runtime.dynamics.Objective``, docs/objectives.md):

* ``max-quality`` under a power budget ``budget_w`` (the LLM's own power, W): the allowance
  ``budget_w · (elapsed + grace) − E_llm``; met when it never went below zero; or under an energy budget
  ``budget_j`` until ``budget_until_s`` (Wh until a time): the energy left ``budget_j − E_llm``, met when it
  never went below zero before that time. The manager re-paces it every decision into the power budget
  :meth:`ObjectiveTracker.pace_w` = energy left / time left, which the policy and the shield read as a
  power budget (the simulator trains on power budgets; spending less early leaves more for later);
* ``min-energy`` above ``quality_floor``: the served quality per token over the last ``window_s``
  seconds (token-weighted, from the profile's quality of each configuration that ran); met when no
  decision saw it below the floor;
* ``last-until`` a deadline (``deadline_s`` on the manager's clock) with the battery above
  ``reserve_soc``: the predicted time to empty (stored energy / device power) against the time left;
  met when the battery stayed above the reserve until the deadline (or until the run ended, then
  "on track" if the prediction reaches the deadline).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

KINDS = ("max-quality", "min-energy", "last-until")


@dataclass
class ObjectiveTracker:
    """Progress against one objective (module docstring)."""

    kind: str
    budget_w: float = math.nan
    budget_j: float = math.nan  # an energy budget for the LLM, J (max-quality) ...
    budget_until_s: float = math.nan  # ... to last until this time on the manager's clock
    quality_floor: float = math.nan
    deadline_s: float = math.nan  # on the manager's clock
    reserve_soc: float = 0.05
    grace_s: float = 300.0
    window_s: float = 60.0
    t0_s: float | None = None
    llm_energy_j: float = 0.0
    violations: int = 0
    decisions: int = 0
    min_soc_before_deadline: float = 1.0
    last: dict = field(default_factory=dict)
    _window: deque = field(default_factory=deque)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"objective {self.kind!r}: choose one of {list(KINDS)}")
        if self.kind == "min-energy" and not (0.0 <= self.quality_floor <= 1.0):
            raise ValueError("min-energy needs a quality floor in [0, 1] (--quality-floor)")
        if self.kind == "last-until" and not math.isfinite(self.deadline_s):
            raise ValueError("last-until needs a deadline (--until)")
        if self.kind == "max-quality" and not (self.budget_w != self.budget_w or self.budget_w > 0):
            raise ValueError("max-quality: the power budget must be > 0 W (--budget-w), or none")
        if self.budget_j == self.budget_j:
            if self.kind != "max-quality":
                raise ValueError(f"an energy budget (--budget-wh) belongs to max-quality, not {self.kind}")
            if not (self.budget_j > 0 and math.isfinite(self.budget_until_s)):
                raise ValueError("an energy budget needs an amount > 0 (--budget-wh) and a time (--until)")
            if self.budget_w == self.budget_w:
                raise ValueError("give a power budget (--budget-w) or an energy budget (--budget-wh), not both")

    def update(self, now_s: float, dt_s: float, llm_w: float, tokens: float, quality: float, soc: float,
               stored_j: float, power_w: float) -> None:
        """One decision's worth: ``dt_s`` seconds since the previous one in which the LLM drew ``llm_w``
        and served ``tokens`` at ``quality`` per token; the battery now at ``soc`` holding ``stored_j``
        while the device draws ``power_w``."""
        if self.t0_s is None:  # the first interval began dt_s before this update
            self.t0_s = now_s - max(dt_s, 0.0)
        self.decisions += 1
        self.llm_energy_j += max(llm_w, 0.0) * max(dt_s, 0.0)
        elapsed = now_s - self.t0_s
        bad = False
        info: dict[str, Any] = {}
        if self.kind == "max-quality" and self.budget_j == self.budget_j:
            left = self.budget_j - self.llm_energy_j
            bad = left < 0 and now_s <= self.budget_until_s
            info = {"energy_left_j": left, "pace_w": self.pace_w(now_s), "time_left_s": self.budget_until_s - now_s}
        elif self.kind == "max-quality" and self.budget_w == self.budget_w:
            left = self.budget_w * (elapsed + self.grace_s) - self.llm_energy_j
            bad = left < 0
            info = {"budget_left_j": left}
        elif self.kind == "min-energy":
            if tokens > 0 and quality == quality:
                self._window.append((now_s, tokens, quality * tokens))
            while self._window and self._window[0][0] < now_s - self.window_s:
                self._window.popleft()
            n = sum(w[1] for w in self._window)
            q = sum(w[2] for w in self._window) / n if n else math.nan
            bad = q == q and q < self.quality_floor
            info = {"window_quality": q}
        elif self.kind == "last-until":
            ahead = now_s < self.deadline_s
            tte = stored_j / power_w if power_w > 0 else math.inf
            if ahead:
                self.min_soc_before_deadline = min(self.min_soc_before_deadline, soc)
                bad = soc < self.reserve_soc
            info = {"time_left_s": max(self.deadline_s - now_s, 0.0), "time_to_empty_s": tte,
                    "on_track": (not ahead) or now_s + tte >= self.deadline_s}
        self.violations += bool(bad)
        self.last = info

    def pace_w(self, now_s: float, min_time_s: float = 10.0) -> float:
        """The energy budget as a power budget now: energy left / time left until ``budget_until_s`` (at least
        ``min_time_s``); a tiny positive budget once it is spent (NaN without an energy budget)."""
        if self.budget_j != self.budget_j:
            return math.nan
        left = self.budget_j - self.llm_energy_j
        return max(left, 1e-6) / max(self.budget_until_s - now_s, min_time_s)

    def status(self) -> str:
        """A few characters for the status line."""
        i = self.last
        if self.kind == "max-quality" and "energy_left_j" in i:
            return f"energy {i['energy_left_j'] / 3600:.3f} Wh left, pace {i['pace_w']:.2f} W"
        if self.kind == "max-quality":
            return f"budget {i['budget_left_j']:+.0f} J" if "budget_left_j" in i else "no budget"
        if self.kind == "min-energy":
            q = i.get("window_quality", math.nan)
            return f"q{int(self.window_s)}s={q:.2f}/{self.quality_floor:.2f}" if q == q else "q=–"
        if "time_left_s" in i:
            tte = i["time_to_empty_s"]
            return (f"until {i['time_left_s'] / 60:.0f} min, empty in "
                    f"{'∞' if math.isinf(tte) else f'{tte / 60:.0f} min'}")
        return ""

    def summary(self) -> dict[str, Any]:
        """Whether the objective was met, and the figures behind it."""
        out: dict[str, Any] = {"kind": self.kind, "decisions": self.decisions, "violating_decisions": self.violations,
                               "llm_energy_j": round(self.llm_energy_j, 3)}
        if self.kind == "max-quality" and self.budget_j == self.budget_j:
            out.update(budget_wh=round(self.budget_j / 3600.0, 6), energy_left_wh=round(
                (self.budget_j - self.llm_energy_j) / 3600.0, 6), met=self.violations == 0)
        elif self.kind == "max-quality":
            out.update(budget_w=None if self.budget_w != self.budget_w else self.budget_w, met=self.violations == 0)
        elif self.kind == "min-energy":
            q = self.last.get("window_quality", math.nan)
            out.update(quality_floor=self.quality_floor, last_window_quality=None if q != q else round(q, 4),
                       met=self.violations == 0)
        else:
            on_track = bool(self.last.get("on_track", True))
            out.update(min_soc_before_deadline=round(self.min_soc_before_deadline, 4), reserve_soc=self.reserve_soc,
                       met=self.violations == 0 and on_track,
                       deadline_reached=bool(self.last) and self.last.get("time_left_s", 1.0) <= 0.0)
        return out


__all__ = ["KINDS", "ObjectiveTracker"]
