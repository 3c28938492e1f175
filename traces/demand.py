"""Token-demand models: what the user asks the micro-LLM for, in tokens per second.

The micro-LLM serves roughly 100-2000 tokens/s on a CPU depending on its configuration, so a
demand of tens to a few hundred tokens/s leaves room for the policy to trade quality for power.

Two models:

* :func:`chat_sessions` (seeded, used by generators and by importers whose source has no usage
  signal): the user opens chat sessions at random (Poisson, ``sessions_per_h``); a session lasts
  ``Exp(session_mean_s)``; inside it, replies of ``Exp(reply_mean_s) + 1`` s are generated at a rate
  drawn log-uniformly from ``reply_tps_range`` (default 20-200 tok/s: reading speed to fast
  streaming), separated by think/typing pauses of ``Exp(think_mean_s)`` at 0 tok/s. Optionally a
  background summarisation load: jobs arrive at ``background_jobs_per_h`` (Poisson), last
  ``Exp(background_job_mean_s)``, each at ``background_tps`` x U(0.5, 1.5) tok/s. Demand is
  integrated exactly into each step (tokens conserved).
* :func:`from_usage` (deterministic, for real logs with usage signals): screen on / interactive
  means an active user; demand = ``active_min_tps + (active_max_tps - active_min_tps) * cpu_util``
  while interactive, ``idle_tps`` otherwise. It is a proxy: the logs record phone usage, not LLM
  requests, and busier phones are taken to ask for more tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DemandSeries:
    """Demand on a uniform grid.

    Attributes:
        demand_tps: Mean requested tokens/s per step.
        active_frac: Fraction of each step inside a chat session (the user is on the device).
    """

    demand_tps: np.ndarray
    active_frac: np.ndarray


def _add_interval(acc: np.ndarray, start_s: float, end_s: float, value: float, step_s: float) -> None:
    """Adds ``value`` x overlap-seconds of [start_s, end_s) into per-step bins of ``acc``."""
    n = acc.shape[0]
    start_s = max(start_s, 0.0)
    end_s = min(end_s, n * step_s)
    if end_s <= start_s:
        return
    i0 = int(start_s // step_s)
    i1 = min(int(end_s // step_s), n - 1)
    if i0 == i1:
        acc[i0] += value * (end_s - start_s)
        return
    acc[i0] += value * ((i0 + 1) * step_s - start_s)
    if i1 > i0 + 1:
        acc[i0 + 1:i1] += value * step_s
    acc[i1] += value * (end_s - i1 * step_s)


def chat_sessions(
    rng: np.random.Generator,
    n_steps: int,
    step_s: float,
    *,
    sessions_per_h: float = 2.0,
    session_mean_s: float = 600.0,
    reply_tps_range: tuple[float, float] = (20.0, 200.0),
    reply_mean_s: float = 8.0,
    think_mean_s: float = 12.0,
    background_tps: float = 0.0,
    background_jobs_per_h: float = 0.0,
    background_job_mean_s: float = 600.0,
) -> DemandSeries:
    """Seeded bursty chat demand plus optional background load (see module docstring).

    Args:
        rng: ``numpy.random.default_rng(seed)``; the only source of randomness.
        n_steps: Number of output steps.
        step_s: Step, s.
        sessions_per_h: Mean chat sessions started per hour.
        session_mean_s: Mean session length, s.
        reply_tps_range: (min, max) tokens/s of a reply, drawn log-uniformly.
        reply_mean_s: Mean reply generation time, s (+1 s minimum).
        think_mean_s: Mean pause between replies, s.
        background_tps: Mean tokens/s of one background job (0 = none).
        background_jobs_per_h: Background job arrival rate.
        background_job_mean_s: Mean background job length, s.

    Returns:
        :class:`DemandSeries` with ``n_steps`` values.
    """
    horizon = n_steps * step_s
    tokens = np.zeros(n_steps)
    active = np.zeros(n_steps)
    lo, hi = np.log(reply_tps_range[0]), np.log(reply_tps_range[1])
    if sessions_per_h > 0:
        gap_mean = 3600.0 / sessions_per_h
        t = rng.exponential(gap_mean) * 0.5  # first session sooner: a trace starts mid-day
        while t < horizon:
            end = t + rng.exponential(session_mean_s)
            _add_interval(active, t, end, 1.0, step_s)
            s = t
            while s < end:
                reply = rng.exponential(reply_mean_s) + 1.0
                rate = float(np.exp(rng.uniform(lo, hi)))
                _add_interval(tokens, s, min(s + reply, end), rate, step_s)
                s += reply + rng.exponential(think_mean_s)
            t = end + rng.exponential(gap_mean)
    if background_tps > 0 and background_jobs_per_h > 0:
        t = rng.exponential(3600.0 / background_jobs_per_h)
        while t < horizon:
            dur = rng.exponential(background_job_mean_s)
            _add_interval(tokens, t, t + dur, background_tps * rng.uniform(0.5, 1.5), step_s)
            t += dur + rng.exponential(3600.0 / background_jobs_per_h)
    return DemandSeries(demand_tps=tokens / step_s, active_frac=np.clip(active / step_s, 0.0, 1.0))


def from_usage(
    cpu_util_frac: np.ndarray,
    interactive: np.ndarray,
    *,
    active_min_tps: float = 20.0,
    active_max_tps: float = 200.0,
    idle_tps: float = 0.0,
) -> np.ndarray:
    """Deterministic demand proxy from usage signals (see module docstring).

    Args:
        cpu_util_frac: CPU utilisation 0..1 (clipped).
        interactive: Screen on / user present, 0..1.
        active_min_tps: Demand of an interactive user with an idle CPU.
        active_max_tps: Demand of an interactive user with a saturated CPU.
        idle_tps: Demand while not interactive (background work).

    Returns:
        demand_tps per sample.
    """
    u = np.clip(np.nan_to_num(np.asarray(cpu_util_frac, dtype=np.float64), nan=0.0), 0.0, 1.0)
    a = np.clip(np.nan_to_num(np.asarray(interactive, dtype=np.float64), nan=0.0), 0.0, 1.0)
    return a * (active_min_tps + (active_max_tps - active_min_tps) * u) + (1.0 - a) * idle_tps
