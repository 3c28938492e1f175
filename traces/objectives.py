"""User objectives overlaid on a trace set: budgets, quality floors and deadlines that bind.

    python -m traces.objectives IN_SET OUT_SET [--seed 0] [--force]
    python -m traces.build_real --objectives ...        # the same rules on the real-data set
    python -m traces.objectives IN_SET OUT_SET --session-end 0.5   # the user's word on when the charger comes

The generated traces' budgets (0.8-2.5 W) never bind: the micro-LLM draws a few tenths of a watt. A
user who sets a budget, a floor or a deadline sets one that matters to them. These seeded rules
(one ``random.Random(crc32(seed/trace name))`` per trace, so a trace's overlay does not depend on the
other traces) write, per trace:

* ``budget_w`` (max-quality): with probability ``P_BUDGET`` a constant power budget for the LLM of
  U(0.3, 0.8) × the full model's power at the trace's mean demand (``NOMINAL_J_PER_TOKEN``, the
  reference profile's full fp32 model, J/token). Below 1 × it binds whenever the demand is near its mean.
* ``meta.extra["quality_floor"]`` (min-energy): U(0.35, 0.55), skill above chance; the reference
  configurations span 0.10-0.55, so the cheapest ones fall below it and the floor binds.
* ``meta.deadline_s`` (last-until), where the trace has none: with probability ``P_DEADLINE`` the time
  the battery would last at the full model's power (idle + base load + the LLM at the mean demand, from
  the initial charge, without supply) times U(1.1, 2.0), capped at the trace's end. Past the time the
  full model would last, only a smaller model keeps the battery above the reserve.

``--session-end P`` is a different overlay, the user's word on when the session ends: instead of the rules
above, each battery device's trace (phone, laptop) gets, with probability P, a deadline at its session's end (its
last row; ``meta.deadline_s``), and nothing else changes. A replayed session ends where its log ends (a charger, or
the logging stopped); only the oracle knows that time, unless the user says it (``deploy.py run --until``).
Under ``max-quality`` the deadline is information (the observation's ``has_deadline``, ``time_to_deadline_h``,
``affordable_power_w``; the reward and the oracle are unchanged) and, with ``EnvParams.saver_to_deadline``, the
battery saver's horizon. With ``--to-charger`` the deadline is the first plug-in where a charger comes before the
session ends: the user says when the charger comes. ``benchmarks/session_end.py`` measures what it is worth.

The constants are the rules; a trace set's manifest records the seed and the constants
(``info["objectives"]``). How often each constraint binds for the oracle is measured by
``benchmarks/objectives.py``.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import sys
import zlib
from pathlib import Path

import numpy as np

NOMINAL_J_PER_TOKEN = 0.0204  # profiles/reference-cpu.json, L6-H100-fp32 (modelled CPU energy), J/token
P_BUDGET = 0.7
BUDGET_FRAC = (0.3, 0.8)
FLOOR = (0.35, 0.55)
P_DEADLINE = 0.7
DEADLINE_FRAC = (1.1, 2.0)


def rules() -> dict:
    """The overlay's constants, for a manifest."""
    return {"nominal_j_per_token": NOMINAL_J_PER_TOKEN, "p_budget": P_BUDGET, "budget_frac": list(BUDGET_FRAC),
            "quality_floor": list(FLOOR), "p_deadline": P_DEADLINE, "deadline_frac": list(DEADLINE_FRAC)}


def overlay(trace, seed: int = 0):
    """``trace`` with a budget, a quality floor and a deadline by the module's seeded rules."""
    from runtime.dynamics import device_constants

    rng = random.Random(zlib.crc32(f"{int(seed)}/{trace.name}".encode()))
    demand = float(np.nanmean(trace.demand_tps)) if len(trace.demand_tps) else 0.0
    llm_w = demand * NOMINAL_J_PER_TOKEN
    extra = dict(trace.meta.extra or {})
    u_budget, u_frac, u_floor, u_dl, u_dl_frac = (rng.random() for _ in range(5))
    extra["quality_floor"] = round(FLOOR[0] + (FLOOR[1] - FLOOR[0]) * u_floor, 3)
    changes = {}
    budget = None
    if u_budget < P_BUDGET and llm_w > 0:
        budget = round((BUDGET_FRAC[0] + (BUDGET_FRAC[1] - BUDGET_FRAC[0]) * u_frac) * llm_w, 4)
        changes["budget_w"] = np.full(len(trace.time_s), budget)
    deadline = trace.meta.deadline_s
    if deadline is None and u_dl < P_DEADLINE:
        dev = device_constants(trace.meta.device_kind)
        bl = trace.base_load_w
        base = float(np.nanmean(bl)) if bl is not None and np.isfinite(bl).any() else 0.0  # absent: all NaN
        p_w = dev.idle_power_w + base + llm_w
        t_empty = trace.meta.initial_soc * trace.meta.capacity_wh * 3600.0 / max(p_w, 1e-6)
        end = float(trace.time_s[-1] - trace.time_s[0])
        deadline = round(min((DEADLINE_FRAC[0] + (DEADLINE_FRAC[1] - DEADLINE_FRAC[0]) * u_dl_frac) * t_empty, end), 1)
    extra["objectives"] = {"seed": int(seed), "budget_w": budget, "quality_floor": extra["quality_floor"],
                           "deadline_s": deadline}
    meta = dataclasses.replace(trace.meta, extra=extra, deadline_s=deadline)
    return trace.replace(meta=meta, **changes)


SESSION_END_KINDS = ("phone", "laptop")  # battery devices whose sessions end (a solar node's run does not)


def first_plug_in_s(trace) -> float | None:
    """Seconds from the trace's start to its first plug-in (``plugged`` going 0 → 1 after the first row), else
    None: the time a user who knows when the charger comes would say."""
    pl = np.asarray(trace.plugged) > 0
    rows = np.flatnonzero(pl[1:] & ~pl[:-1])
    return None if rows.size == 0 else round(float(trace.time_s[rows[0] + 1] - trace.time_s[0]), 1)


def session_end(trace, p: float, seed: int = 0, max_s: float | None = None, to_charger: bool = False):
    """``trace`` with a deadline at its session's end (its last row), with probability ``p`` (one
    ``random.Random(crc32("session-end/seed/name"))`` draw per trace) on a battery device without a deadline of
    its own and, with ``max_s``, a deadline no later than that; else ``trace`` unchanged (module docstring). With
    ``to_charger`` the deadline is the first plug-in when a charger comes before the session ends (the same draw:
    the same traces are told)."""
    if trace.meta.device_kind not in SESSION_END_KINDS or trace.meta.deadline_s is not None:
        return trace
    end = round(float(trace.time_s[-1] - trace.time_s[0]), 1)
    at = "end"
    if to_charger and (plug := first_plug_in_s(trace)) is not None:
        end, at = plug, "charger"
    if max_s is not None and end > max_s:
        return trace
    if random.Random(zlib.crc32(f"session-end/{int(seed)}/{trace.name}".encode())).random() >= p:
        return trace
    extra = {**(trace.meta.extra or {}), "session_end_deadline": True, "deadline_at": at}
    return trace.replace(meta=dataclasses.replace(trace.meta, deadline_s=end, extra=extra))


def overlay_set(ts, seed: int = 0, session_end_p: float | None = None, session_max_s: float | None = None,
                to_charger: bool = False):
    """A new ``TraceSet`` with every trace overlaid (the budget, floor and deadline rules; or, with
    ``session_end_p``, only the session-end deadlines), the same splits, and the rules in its manifest."""
    from traces.store import TraceSet

    splits = {e.meta.unit: e.split for e in ts.entries}
    if session_end_p is not None:
        if not 0.0 <= session_end_p <= 1.0:
            raise ValueError(f"--session-end must be a probability in [0, 1], got {session_end_p!r}")
        traces = [session_end(t, session_end_p, seed, session_max_s, to_charger) for t in ts]
        info = {**ts.info, "session_end": {"seed": int(seed), "p": float(session_end_p), "max_s": session_max_s,
                                           "to_charger": bool(to_charger),
                                           "kinds": list(SESSION_END_KINDS), "by": "python -m traces.objectives"}}
        return TraceSet.from_traces(traces, name=f"{ts.name}+session-end", splits=splits, info=info,
                                    description=(ts.description + " " if ts.description else "")
                                    + "Deadlines at the sessions' ends overlaid by traces.objectives --session-end.")
    traces = [overlay(t, seed) for t in ts]
    info = {**ts.info, "objectives": {"seed": int(seed), **rules(), "by": "python -m traces.objectives"}}
    return TraceSet.from_traces(traces, name=f"{ts.name}+objectives", splits=splits, info=info,
                                description=(ts.description + " " if ts.description else "")
                                + "Budgets, quality floors and deadlines overlaid by traces.objectives.")


def main(argv: list[str] | None = None) -> int:
    from model.cli import float_in, nonneg_int, positive_float
    from traces.store import TraceSet

    ap = argparse.ArgumentParser(prog="python -m traces.objectives", description=__doc__.split("\n")[0])
    ap.add_argument("src", type=Path, help="trace-set folder to read (e.g. traces/data/default or data/real)")
    ap.add_argument("out", type=Path, help="trace-set folder to write")
    ap.add_argument("--seed", type=nonneg_int, default=0)
    ap.add_argument("--force", action="store_true", help="replace an existing output set")
    ap.add_argument("--session-end", type=float_in(0.0, 1.0), default=None, metavar="P",
                    help="instead of budgets, floors and deadlines: a deadline at the session's end on each phone or "
                         "laptop trace, with probability P (the user's word on when the charger comes)")
    ap.add_argument("--session-max-h", type=positive_float, default=None, metavar="H",
                    help="with --session-end: only deadlines at most H hours in (e.g. 2, the scored episode: a "
                         "deadline past the episode's end tells a policy to save for a time the score never sees)")
    ap.add_argument("--to-charger", action="store_true",
                    help="with --session-end: the deadline at the first plug-in when a charger comes before the "
                         "session ends (the user says when the charger comes), else at the session's end")
    a = ap.parse_args(argv)
    if a.session_max_h is not None and a.session_end is None:
        ap.error("--session-max-h applies to --session-end")
    if a.to_charger and a.session_end is None:
        ap.error("--to-charger applies to --session-end")
    try:
        ts = TraceSet.load(a.src)
        new = overlay_set(ts, a.seed, a.session_end, None if a.session_max_h is None else 3600.0 * a.session_max_h,
                          a.to_charger)
        new.save(a.out, force=a.force)
    except (OSError, ValueError) as exc:  # a missing or broken set, an existing output (the other CLIs' contract)
        print(f"error: {exc}", file=sys.stderr)
        return 1
    n_b = sum(t.budget_w is not None and np.isfinite(t.budget_w).any() for t in new)
    n_d = sum(t.meta.deadline_s is not None for t in new)
    if a.session_end is not None:
        n_c = sum((t.meta.extra or {}).get("deadline_at") == "charger" for t in new)
        print(f"wrote {a.out}: {len(new)} traces; {n_d} with a deadline at the session's end"
              + (f" ({n_c} of them at the first plug-in)" if a.to_charger else ""))
    else:
        print(f"wrote {a.out}: {len(new)} traces; {n_b} with a budget, {n_d} with a deadline, every one with a floor")
    return 0


if __name__ == "__main__":
    sys.exit(main())
