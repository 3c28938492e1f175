"""Device placement values: which processor runs which contiguous segment of the running blocks.

numpy-free, standard library only (the runtime imports it). The knob family ``place`` is declared in
:mod:`runtime.configspace`; this module owns the grammar of its values and their meaning.

Processor **roles** (a device's hardware description, ``runtime/hardware.py``, says which exist):

* ``cpu``  — the big CPU cluster (on this host: its CPU), all of its cores;
* ``lcpu`` — the little (efficiency) CPU cluster of a big.LITTLE SoC;
* ``gpu``  — the GPU (integrated, or CUDA on a workstation);
* ``npu``  — the neural accelerator (typically int8/int4 only).

A placement **value** is one of

* ``"cpu"`` — everything on the big CPU cluster with all its threads (the default; its name
  fragment is empty, so every configuration measured before placement existed keeps its name);
* ``"cpu.t1"`` — everything on the CPU with one thread (the CPU's thread count is part of its
  placement: 1 or all cores; on this 2-core host both are measured);
* ``"lcpu"``, ``"gpu"``, ``"npu"`` — everything on that processor;
* ``"A:k:B"`` — two segments: the embedding and the first ``k`` running blocks on ``A``, the other
  ``depth − k`` blocks and the head on ``B`` (``A ≠ B``, ``1 ≤ k < depth``; segments on the CPU use
  all its threads). The boundary activations (one ``d_model`` vector per token) and, on a change of
  placement, the moved segment's KV cache cross the device's interconnect.

:func:`segments` turns a value and a depth into ``[Segment(role, threads, n_blocks), ...]``.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["ROLES", "PLACE_DEFAULT", "Segment", "PlacementError", "segments", "parse", "two_segment",
           "single_values", "all_values", "roles_of", "ONE_THREAD", "role_mask",
           "roles_in_mask", "outages"]

ROLES: tuple[str, ...] = ("cpu", "lcpu", "gpu", "npu")
PLACE_DEFAULT = "cpu"  # all on the big CPU cluster, all threads; empty name fragment
ONE_THREAD = "cpu.t1"


class PlacementError(ValueError):
    """A placement value does not follow the grammar (module docstring); the message says how to fix it."""


class Segment(NamedTuple):
    """One contiguous run of blocks on one processor."""

    role: str  # one of ROLES
    threads: int | None  # CPU threads (None: all the processor's cores / not a CPU)
    n_blocks: int  # running blocks in this segment (the first also holds the embedding, the last the head)


def parse(value: str) -> tuple:
    """``value`` → ``((role, threads),)`` for a single processor or ``((role, None), k, (role, None))``.

    Raises:
        PlacementError: naming the value and the grammar.
    """
    v = str(value)
    parts = v.split(":")
    if len(parts) == 1:
        return (_proc(v, v),)
    if len(parts) == 3:
        a, k, b = parts
        pa, pb = _proc(a, v), _proc(b, v)
        if pa[1] is not None or pb[1] is not None:
            raise PlacementError(f"placement {v!r}: thread counts apply to the single-processor 'cpu.t1' only")
        if pa[0] == pb[0]:
            raise PlacementError(f"placement {v!r}: the two segments must be on different processors")
        try:
            kk = int(k)
        except ValueError:
            raise PlacementError(f"placement {v!r}: the middle field must be the block count k >= 1") from None
        if kk < 1 or str(kk) != k:
            raise PlacementError(f"placement {v!r}: the block count must be an integer >= 1 without padding")
        return (pa, kk, pb)
    raise PlacementError(f"placement {v!r}: write a role ({', '.join(ROLES)}), 'cpu.t1', or 'A:k:B' "
                         "(first k running blocks on A, the rest on B)")


def _proc(text: str, whole: str) -> tuple[str, int | None]:
    if text == ONE_THREAD:
        return ("cpu", 1)
    if text in ROLES:
        return (text, None)
    raise PlacementError(f"placement {whole!r}: unknown processor {text!r}; roles are {', '.join(ROLES)} "
                         f"(and {ONE_THREAD!r} for the CPU on one thread)")


def segments(value: str, depth: int) -> list[Segment]:
    """The segments of placement ``value`` for a configuration with ``depth`` running blocks.

    Raises:
        PlacementError: for a malformed value or a split point outside ``1 … depth − 1``.
    """
    p = parse(value)
    if len(p) == 1:
        (role, threads), = p
        return [Segment(role, threads, int(depth))]
    (ra, _), k, (rb, _) = p
    if not 1 <= k < int(depth):
        raise PlacementError(f"placement {value!r} needs 1 <= k < depth = {depth}")
    return [Segment(ra, None, k), Segment(rb, None, int(depth) - k)]


def two_segment(value: str) -> bool:
    """True for an ``A:k:B`` value."""
    return len(parse(value)) == 3


def roles_of(value: str) -> tuple[str, ...]:
    """The processor roles a placement uses, in segment order."""
    p = parse(value)
    return (p[0][0],) if len(p) == 1 else (p[0][0], p[2][0])


def role_mask(value: str) -> int:
    """Bit ``i`` set for each role ``ROLES[i]`` the placement uses (for availability masks)."""
    return sum(1 << ROLES.index(r) for r in set(roles_of(value)))


def roles_in_mask(mask: int) -> tuple[str, ...]:
    """The roles whose bits are set in ``mask``."""
    return tuple(r for i, r in enumerate(ROLES) if int(mask) >> i & 1)


def single_values(roles: tuple[str, ...] = ROLES, cpu_threads: bool = True) -> tuple[str, ...]:
    """Every "all on X" value for ``roles`` (plus ``cpu.t1`` when the CPU is among them)."""
    out: list[str] = []
    for r in roles:
        out.append(r)
        if r == "cpu" and cpu_threads:
            out.append(ONE_THREAD)
    return tuple(out)


def all_values(roles: tuple[str, ...] = ROLES, max_depth: int = 6, cpu_threads: bool = True) -> tuple[str, ...]:
    """Every placement value over ``roles``: the singles, then every ``A:k:B`` with ``1 ≤ k < max_depth``."""
    two = tuple(f"{a}:{k}:{b}" for a in roles for b in roles if a != b for k in range(1, int(max_depth)))
    return single_values(roles, cpu_threads) + two


def outages(key: str, n_steps: int, step_s: float, busy_per_h: float, busy_mean_s: float, lost_per_h: float,
            seed: int = 0, roles: tuple[str, ...] = ("lcpu", "gpu", "npu")) -> list[int]:
    """A seeded outage scenario (``runtime.dynamics.Availability``): per step, the bit mask of the roles
    that are unavailable (``ROLES`` bit order). Each role in ``roles`` is independently taken for an
    exponentially distributed time (mean ``busy_mean_s``) at ``busy_per_h`` outages per hour (a Poisson
    process), and lost for good at ``lost_per_h``. The sequence depends only on (``seed``, ``key``) — a
    trace's outages are part of the trace, the same in every episode and every simulator.
    """
    import random
    import zlib

    rng = random.Random(zlib.crc32(f"{int(seed)}/{key}".encode()))
    down = [0] * int(n_steps)
    horizon_s = n_steps * step_s
    for r in roles:
        bit = 1 << ROLES.index(r)
        t = 0.0
        if busy_per_h > 0:
            while True:
                t += rng.expovariate(busy_per_h / 3600.0)
                if t >= horizon_s:
                    break
                dur = rng.expovariate(1.0 / busy_mean_s)
                for i in range(int(t // step_s), min(int((t + dur) // step_s) + 1, n_steps)):
                    down[i] |= bit
        if lost_per_h > 0:
            t_lost = rng.expovariate(lost_per_h / 3600.0)
            for i in range(int(t_lost // step_s), n_steps):
                down[i] |= bit
    return down
