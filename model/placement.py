"""Live device placement: the elastic model's running blocks on several torch devices, a KV cache per
segment that stays exact when a segment moves, and recovery from a processor that fails mid-generation.

Read top to bottom (docs/placement.md has the figures):

1. :class:`ProcessorMap` — processor role (``runtime.placement.ROLES``) → torch device + CPU threads,
   probed on this host: ``cpu`` → ``"cpu"`` with all threads (``torch.get_num_threads()`` when the map
   is made), ``cpu.t1`` → the same with one thread, ``gpu`` → ``"cuda"`` when torch sees CUDA (probed
   lazily), ``lcpu`` and ``npu`` → absent (torch can neither pin work to a CPU cluster nor reach an NPU
   here). ``available(value, depth)`` says whether a placement value can run, and why not.
   :meth:`ProcessorMap.fake_gpu` is a **test double**: role ``gpu`` runs on the CPU, so multi-processor
   behaviour (moves, faults, quarantine) is testable on a CPU-only host.
2. :class:`PlacedModel` wraps a loaded ``ElasticGPT`` (weights already in memory) and runs its active
   configuration under a placement value. Each segment (``runtime.placement.segments``) runs on its
   device with its own ``KVCache`` (the model's type, the pattern of ``model.split.EdgeSide`` /
   ``ServerSide``: a cache per subset of blocks, whose ``resid`` row ``j`` is the input of the segment's
   ``j``-th block and row ``len(blocks)`` its output). ``step(token)`` embeds on segment 0's device,
   hands the ``(1, t, d)`` activation to each next device with ``.to(device)`` and runs the head on the
   last segment's device. Weights: one copy per device actually used, made lazily from the resident
   masters and cached (never re-read from disk); on the CPU the model's own packs are used as they are.
3. **What moves on a change** (of configuration, placement, or both; applied lazily at the next token, so
   several switches between two tokens cost one move). Plan positions ``< j*`` are still valid, ``j*``
   being the longest common prefix of the old and new plans (``ElasticGPT._repair``'s rule). Their K/V
   and residual rows are **copied** to the device of the new segment that holds them; positions from
   ``j*`` on are re-run over the cached prefix with the model's own ``_repair``, segment by segment
   (a segment's input is the previous segment's output row). Copy rather than recompute: moving a
   segment costs ``n · (2·n_head·head_dim + d)`` floats per block (0.3 MB per block at 100 tokens) instead of a
   prefill of those blocks on a processor that may be slower (measured here at 200 tokens, 6 blocks: 4 MB
   copied in 1–5 ms, against 91 ms to re-run the 6 blocks), and the copied numbers are exactly the ones
   the run produced — a recomputation on another processor gives that processor's rounding.
   A segment whose processor, blocks and input are unchanged keeps its caches (``cpu`` ↔ ``cpu.t1`` only
   changes the thread count). Every other segment gets new caches, built next to the old ones (even on
   the same device: a copy of ≤ 0.8 MB per block at full context, against an in-place repair that a fault
   could interrupt half-way) and committed only when complete, so a fault during a move leaves the last
   committed state intact.
4. **Faults** (:class:`ProcessorFault`: :class:`SegmentError`, :class:`SegmentTimeout`,
   :class:`DeviceLost`). Every segment call is guarded: an exception from it is classified by
   :func:`classify_error` (device-lost-like CUDA/driver messages → ``DeviceLost``, other runtime errors
   → ``SegmentError``), and its elapsed time is checked against a deadline (measured with
   ``time.perf_counter`` after the segment returned; CUDA segments synchronise first; a late call on the only
   processor alive is kept — its result is correct and there is nowhere to move). On a fault the
   processor is quarantined (:class:`ProcessorHealth`), the placement is replaced by
   ``replace_fn(current_value, alive_roles)`` (default :func:`fallback_placement`: everything on the
   first alive role of ``cpu > gpu > lcpu > npu``), the caches are restored for the new placement —
   copied from the failed processor's cache when it is still readable (an exception or a timeout; and
   any CPU role, whose memory is the host's), from the segment's host **mirror** when the device is lost
   (``mirror=True``, the default for segments outside host memory: each committed token's K/V and
   residual rows are copied to the host), else recomputed from the nearest readable upstream data —
   and the same token is computed again. Nothing is committed for a token until every segment
   returned, so no token is lost or repeated. A placement that uses a processor quarantined after it was
   set is replaced by the same rule at the next token; with no processor alive, ``NoProcessorLeft``.
5. :class:`FaultInjector` (seeded) makes a chosen role's segment raise at a chosen call: a runtime error,
   a CUDA-like device-lost error, or a real overrun of the deadline (it sleeps past it).

Thread counts are process-global in torch (``torch.set_num_threads``): a ``cpu.t1`` segment sets one
thread for its own call and restores the previous count afterwards, so another thread of the same
process running torch at that moment would run with one thread too. The runtime generates one sequence
at a time, on one thread.
"""

from __future__ import annotations

import math
import random
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from model import quant
from model.model import ElasticGPT, KVCache, LayerPlan, sample_token
from model.split import _run_plan
from runtime import placement as P

__all__ = ["ProcessorMap", "PlacedModel", "PlacementUnavailable", "NoProcessorLeft", "ProcessorFault",
           "SegmentError", "SegmentTimeout", "DeviceLost", "classify_error", "FaultInjector", "ProcessorHealth",
           "RoleHealth", "QuarantineEvent", "FaultRecord", "SyncStats", "fallback_placement", "FAULT_KINDS",
           "FALLBACK_ORDER", "HOST_MEMORY_ROLES"]

FAULT_KINDS: tuple[str, ...] = ("error", "timeout", "device_lost")
#: Default re-placement order after a fault, fastest first for this model at batch 1 (the CPU ran the
#: micro-model fastest in every profile measured so far; a GPU's launch overhead dominates at d = 256).
FALLBACK_ORDER: tuple[str, ...] = ("cpu", "gpu", "lcpu", "npu")
#: Roles whose memory is the host's DRAM: a cache there stays readable when the processor fails.
HOST_MEMORY_ROLES: tuple[str, ...] = ("cpu", "lcpu")

_ABSENT_WHY = {
    "lcpu": "torch cannot pin a segment to a little CPU cluster (no per-cluster affinity in torch; "
            "this host's cores form one cluster)",
    "npu": "torch has no NPU backend here",
    "gpu": "torch.cuda.is_available() is False: no CUDA device, or a CPU-only torch build",
}


# ---- errors ---------------------------------------------------------------------------------------------
class PlacementUnavailable(ValueError):
    """A placement value cannot run here now (a processor is absent or quarantined); the message says which."""


class NoProcessorLeft(RuntimeError):
    """Every processor is failed or quarantined: nothing to re-place on. Nothing was committed for the token
    being computed; call ``step`` again once a quarantine has expired (``ProcessorHealth.unavailable_roles``)."""


class ProcessorFault(RuntimeError):
    """A processor failed while running its segment (module docstring, 4)."""

    kind = "fault"

    def __init__(self, role: str, detail: str):
        super().__init__(f"{self.kind} on {role}: {detail}")
        self.role, self.detail = role, detail
        self.detected_s = time.perf_counter()  # perf_counter seconds, for the time to recover


class SegmentError(ProcessorFault):
    """The segment raised (a kernel or runtime error); the processor's memory is still readable."""

    kind = "error"


class SegmentTimeout(ProcessorFault):
    """The segment returned after its deadline; its result is discarded, its memory is readable."""

    kind = "timeout"


class DeviceLost(ProcessorFault):
    """The device is gone (a CUDA/driver error that poisons the context): its memory is unreadable."""

    kind = "device_lost"


_OOM = re.compile(r"out of memory", re.I)
_LOST = re.compile(r"CUDA error|device-side assert|device lost|device is lost|DEVICE_LOST|illegal memory access|"
                   r"unspecified launch failure|cudaError|no CUDA-capable device|ECC error|HIP error|"
                   r"NPU error|XPU error|driver shutting down", re.I)


def classify_error(exc: BaseException, role: str) -> ProcessorFault | None:
    """The processor fault an exception from a segment means, or None (not a processor fault: a bug to raise).

    ``RuntimeError`` (torch's kernel and CUDA errors, ``torch.AcceleratorError`` and
    ``torch.cuda.OutOfMemoryError`` among them) and ``MemoryError`` are processor faults: out-of-memory →
    :class:`SegmentError` (the device still answers); a CUDA/driver message of a broken context
    (``CUDA error: …``, ``device-side assert``, ``illegal memory access``, ``device lost`` …) → :class:`DeviceLost`;
    any other → :class:`SegmentError`. ``ValueError``/``TypeError``/``IndexError`` and the like are not.
    """
    if isinstance(exc, ProcessorFault):
        return exc
    if not isinstance(exc, (RuntimeError, MemoryError)):
        return None
    msg = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, MemoryError) or _OOM.search(msg):
        return SegmentError(role, msg[:300])
    if _LOST.search(msg):
        return DeviceLost(role, msg[:300])
    return SegmentError(role, msg[:300])


# ---- processors -------------------------------------------------------------------------------------------
class ProcessorMap:
    """Processor role → torch device and CPU threads (module docstring, 1).

    Args:
        devices: None to probe this host; or an explicit mapping role → torch device string, e.g.
            ``{"cpu": "cpu", "gpu": "cuda:0"}``. Mapping a role other than ``cpu`` to ``"cpu"`` makes a
            **test double** (the role runs on the CPU; see :meth:`fake_gpu`).
        cpu_threads: threads of a segment on the CPU (``cpu`` role, or a test double); default
            ``torch.get_num_threads()`` when the map is made. ``cpu.t1`` segments use one.
        label: what the map is (for reports); defaults say "probed" or "explicit"/"TEST DOUBLE".

    Raises:
        ValueError: an unknown role, an unparsable device, or a CUDA device that torch does not see.
    """

    def __init__(self, devices: Mapping[str, str] | None = None, *, cpu_threads: int | None = None,
                 label: str = ""):
        self.cpu_threads = int(cpu_threads) if cpu_threads else torch.get_num_threads()
        if self.cpu_threads < 1:
            raise ValueError(f"cpu_threads must be >= 1, got {cpu_threads!r}")
        self._explicit: dict[str, str] | None = None
        self._gpu: str | None | bool = False  # False: not probed yet
        if devices is not None:
            ex = {}
            for role, dev in dict(devices).items():
                if role not in P.ROLES:
                    raise ValueError(f"unknown processor role {role!r}: roles are {', '.join(P.ROLES)}")
                try:
                    d = torch.device(dev)
                except (RuntimeError, TypeError) as exc:
                    raise ValueError(f"role {role!r}: {dev!r} is not a torch device ({exc})") from None
                if d.type == "cuda" and not torch.cuda.is_available():
                    raise ValueError(f"role {role!r} mapped to {dev!r}, but torch.cuda.is_available() is False")
                ex[role] = str(d)
            self._explicit = ex
            doubles = [r for r, d in ex.items() if r != "cpu" and torch.device(d).type == "cpu"]
            if not label:
                label = (f"TEST DOUBLE: {', '.join(doubles)} run(s) on the CPU" if doubles else "explicit mapping")
        self.label = label or "probed on this host"

    @classmethod
    def fake_gpu(cls, cpu_threads: int | None = None) -> ProcessorMap:
        """**Test double**: ``cpu`` → the CPU and ``gpu`` → the CPU too, so placements over two processors
        (moves, faults, quarantine) run and are checked on a CPU-only host. Its "GPU" memory is treated as
        device memory (a ``DeviceLost`` makes it unreadable), as a real GPU's would be."""
        return cls({"cpu": "cpu", "gpu": "cpu"}, cpu_threads=cpu_threads,
                   label="TEST DOUBLE: role 'gpu' runs on the CPU")

    def device(self, role: str) -> str | None:
        """The torch device string of ``role``, or None when this host does not have it."""
        if self._explicit is not None:
            return self._explicit.get(role)
        if role == "cpu":
            return "cpu"
        if role == "gpu":
            if self._gpu is False:  # probed on first use: torch.cuda.is_available() does not create a context
                self._gpu = "cuda" if torch.cuda.is_available() else None
            return self._gpu
        return None  # lcpu, npu: no torch backend here

    def why_absent(self, role: str) -> str:
        if self._explicit is not None:
            return f"the explicit processor map ({self.label}) has no {role!r}"
        return _ABSENT_WHY.get(role, "unknown role")

    def roles(self) -> tuple[str, ...]:
        """The roles present, in ``runtime.placement.ROLES`` order."""
        return tuple(r for r in P.ROLES if self.device(r) is not None)

    def threads(self, role: str, one_thread: bool = False) -> int | None:
        """CPU threads a segment on ``role`` runs with (None for a non-CPU device)."""
        dev = self.device(role)
        if dev is None or torch.device(dev).type != "cpu":
            return None
        return 1 if one_thread else self.cpu_threads

    def available(self, value: str, depth: int) -> tuple[bool, str]:
        """Whether placement ``value`` can run a configuration of ``depth`` blocks here, and a reason a person
        can read (on success: which device each role maps to)."""
        try:
            segs = P.segments(value, depth)
        except P.PlacementError as exc:
            return False, str(exc)
        for s in segs:
            if self.device(s.role) is None:
                return False, (f"placement {value!r} needs the {s.role} processor, which this host does not have "
                               f"({self.why_absent(s.role)})")
        parts = []
        for s in segs:
            th = self.threads(s.role, s.threads == 1)
            parts.append(f"{s.role} -> {self.device(s.role)}" + (f" ({th} thread{'s' * (th != 1)})" if th else ""))
        return True, f"placement {value!r}: " + ", ".join(parts)

    def unavailable(self, configs: Sequence) -> dict[int, str]:
        """Index → reason for every configuration (objects with ``depth`` and ``place``, e.g. a place space's
        ``configs``) whose placement cannot run on this host: the live mask's "processor" capability."""
        out = {}
        for i, c in enumerate(configs):
            ok, why = self.available(c.place, c.depth)
            if not ok:
                out[i] = why
        return out

    def describe(self) -> dict:
        """Roles → devices and the absent roles' reasons (for reports and telemetry)."""
        return {"label": self.label, "cpu_threads": self.cpu_threads,
                "present": {r: self.device(r) for r in self.roles()},
                "absent": {r: self.why_absent(r) for r in P.ROLES if self.device(r) is None}}


def fallback_placement(current: str, alive: Sequence[str]) -> str:
    """The default ``replace_fn``: the same configuration with everything on the first alive role of
    :data:`FALLBACK_ORDER` (``cpu > gpu > lcpu > npu``; the CPU with all its threads).

    Raises:
        NoProcessorLeft: ``alive`` is empty.
    """
    for r in FALLBACK_ORDER:
        if r in alive:
            return r
    raise NoProcessorLeft(f"placement {current!r} failed and no processor is alive to re-place it on")


# ---- health: quarantine with back-off -------------------------------------------------------------------------
@dataclass(frozen=True)
class QuarantineEvent:
    t_s: float  # the health clock's time of the fault
    role: str
    streak: int  # faults in a row (none forgiven in between), this one included
    backoff_s: float
    reason: str


@dataclass(frozen=True)
class RoleHealth:
    role: str
    faults_total: int
    streak: int
    quarantined_until_s: float  # health clock; -inf when never quarantined
    last_fault: str


class ProcessorHealth:
    """Quarantine with exponential back-off per processor role.

    A fault quarantines its role for ``min(base_s · 2^(streak − 1), cap_s)``, ``streak`` being the faults in a
    row: it grows by one per fault and restarts at 1 when the previous fault is ``forgive_s`` or more in the
    past. After the back-off the role is offered again (a retry); a role that keeps failing stays out longer
    each time (1 s, 2 s, 4 s … 5 min with the defaults).

    Args:
        base_s: first back-off, s.
        cap_s: longest back-off, s.
        forgive_s: a fault this long after the previous one starts a new streak, s.
        clock: seconds, monotonic (injectable for tests and benchmarks).
    """

    def __init__(self, base_s: float = 1.0, cap_s: float = 300.0, forgive_s: float = 600.0,
                 clock: Callable[[], float] = time.monotonic):
        if not 0 < base_s <= cap_s:
            raise ValueError(f"need 0 < base_s <= cap_s, got base_s={base_s}, cap_s={cap_s}")
        self.base_s, self.cap_s, self.forgive_s, self.clock = float(base_s), float(cap_s), float(forgive_s), clock
        self._until: dict[str, float] = {}
        self._streak: dict[str, int] = {}
        self._last_t: dict[str, float] = {}
        self._last: dict[str, str] = {}
        self._total: dict[str, int] = {}
        self.events: list[QuarantineEvent] = []

    def _now(self, now: float | None) -> float:
        return self.clock() if now is None else float(now)

    def fail(self, role: str, reason: str, now: float | None = None) -> float:
        """Record a fault of ``role``; returns its back-off in seconds."""
        t = self._now(now)
        last = self._last_t.get(role)
        streak = 1 if last is None or t - last >= self.forgive_s else self._streak.get(role, 0) + 1
        backoff = min(self.base_s * 2.0 ** (streak - 1), self.cap_s)
        self._streak[role], self._last_t[role], self._last[role] = streak, t, reason
        self._total[role] = self._total.get(role, 0) + 1
        self._until[role] = t + backoff
        self.events.append(QuarantineEvent(t, role, streak, backoff, reason))
        return backoff

    def quarantined(self, role: str, now: float | None = None) -> bool:
        return self._now(now) < self._until.get(role, -math.inf)

    def reason(self, role: str, now: float | None = None) -> str | None:
        """Why ``role`` is out now, or None when it is not quarantined."""
        t = self._now(now)
        if not self.quarantined(role, t):
            return None
        n = self._streak[role]
        return (f"{role} quarantined for {self._until[role] - t:.1f} s more after {n} fault{'s' * (n != 1)} in a row "
                f"(last: {self._last[role]})")

    def unavailable_roles(self, now: float | None = None) -> dict[str, str]:
        """Quarantined roles now → reason (for the runtime's mask and telemetry)."""
        t = self._now(now)
        return {r: self.reason(r, t) for r in P.ROLES if self.quarantined(r, t)}

    def state(self, now: float | None = None) -> dict[str, RoleHealth]:
        """Every role that ever failed → its health (a snapshot)."""
        return {r: RoleHealth(r, self._total[r], self._streak[r], self._until[r], self._last[r]) for r in self._total}


# ---- fault injection --------------------------------------------------------------------------------------------
@dataclass
class _Armed:
    role: str
    kind: str
    countdown: int  # segment calls on the role to let pass first
    phase: str  # "enter" (before the segment computes) or "exit" (after, before the deadline check)
    live: bool = False


class FaultInjector:
    """Seeded faults for :class:`PlacedModel`'s segment calls (tests and ``benchmarks/placement_faults.py``).

    ``arm(role, kind)`` makes a later call of a segment on ``role`` fail:

    * ``"error"``: raises ``RuntimeError("injected: kernel failure …")`` → classified as :class:`SegmentError`;
    * ``"device_lost"``: raises ``RuntimeError("CUDA error: device-side assert triggered …")`` → :class:`DeviceLost`;
    * ``"timeout"``: sleeps past the call's deadline (a real overrun; the model's deadline check detects it).

    Faults on one role fire in the order armed; each fires once.
    """

    def __init__(self, seed: int = 0, timeout_overrun: float = 1.2):
        self.rng = random.Random(seed)
        self.timeout_overrun = float(timeout_overrun)  # sleep = deadline · this + 2 ms
        self._armed: list[_Armed] = []
        self.fired: list[tuple[str, str, str]] = []  # (role, kind, phase)

    def arm(self, role: str, kind: str, after_calls: int = 0, phase: str | None = None) -> None:
        """Fail the ``after_calls``-th next segment call on ``role`` (0: the next one) with ``kind``, at
        ``phase`` ``"enter"``/``"exit"`` of the call (None: drawn from the seed)."""
        if role not in P.ROLES:
            raise ValueError(f"unknown role {role!r}: roles are {', '.join(P.ROLES)}")
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}: kinds are {', '.join(FAULT_KINDS)}")
        ph = phase or self.rng.choice(("enter", "exit"))
        if ph not in ("enter", "exit"):
            raise ValueError(f"phase must be 'enter' or 'exit', got {ph!r}")
        self._armed.append(_Armed(role, kind, int(after_calls), ph))

    def arm_random(self, roles: Sequence[str], kinds: Sequence[str] = FAULT_KINDS, max_after_calls: int = 2) -> tuple:
        """Arm one fault on a role drawn from ``roles`` (kind, call and phase drawn too); returns (role, kind)."""
        role, kind = self.rng.choice(list(roles)), self.rng.choice(list(kinds))
        self.arm(role, kind, self.rng.randint(0, max_after_calls))
        return role, kind

    @property
    def pending(self) -> int:
        return len(self._armed)

    def disarm(self) -> None:
        self._armed.clear()

    def check(self, role: str, phase: str, deadline_s: float | None) -> None:
        """Called by :class:`PlacedModel` at the ``"enter"`` and ``"exit"`` of every segment call."""
        a = next((a for a in self._armed if a.role == role), None)
        if a is None:
            return
        if phase == "enter":
            if a.countdown > 0:
                a.countdown -= 1
                return
            a.live = True
        if not a.live or a.phase != phase:
            return
        self._armed.remove(a)
        self.fired.append((role, a.kind, phase))
        if a.kind == "error":
            raise RuntimeError(f"injected: kernel failure in the segment on {role}")
        if a.kind == "device_lost":
            raise RuntimeError(f"CUDA error: device-side assert triggered (injected: {role} lost)")
        if deadline_s is None:
            raise ValueError("a timeout fault needs a deadline: PlacedModel(deadline_ms=...)")
        time.sleep(deadline_s * self.timeout_overrun + 0.002)


# ---- the placed model ---------------------------------------------------------------------------------------------
def _runs(ids: Sequence[int]) -> list[tuple[int, int]]:
    """Sorted ids as half-open runs of consecutive values: [0, 1, 2, 5] -> [(0, 3), (5, 6)]."""
    out: list[tuple[int, int]] = []
    for i in sorted(ids):
        if out and out[-1][1] == i:
            out[-1] = (out[-1][0], i + 1)
        else:
            out.append((i, i + 1))
    return out


@dataclass
class _Seg:
    """One running segment (mutable: it owns its caches)."""

    role: str
    threads: int | None  # CPU threads for its calls (None: not on a CPU)
    device: torch.device
    start: int  # plan positions start..stop-1
    stop: int
    keys: tuple  # the (layer, heads, bits) of its plan positions
    plan: list  # LayerPlan on its device
    cache: KVCache  # k/v (n_layer, 1, n_head, T, hd) by layer id; resid (stop-start+1, 1, T, d) by local position
    mirror: KVCache | None = None  # host copy of the committed state (module docstring, 4)
    lost: bool = False  # the device is lost: `cache` must not be read


@dataclass(frozen=True)
class SyncStats:
    """What one move (configuration and/or placement change) did."""

    tokens: int  # cached tokens at the move
    copied_positions: int  # plan positions whose K/V + residual rows were copied from a readable cache
    mirror_positions: int  # ... copied from a host mirror (the device was lost)
    unreadable_positions: int  # still-valid positions re-run because a lost device's cache had no mirror
    recomputed_positions: int  # plan positions re-run over the cached prefix (token-positions: × tokens)
    moved_bytes: int  # bytes copied between caches (K/V + residual rows)
    ms: float


@dataclass(frozen=True)
class FaultRecord:
    """One fault and its recovery."""

    token: int  # position of the token being computed
    role: str
    kind: str
    detail: str
    from_place: str
    to_place: str
    backoff_s: float
    restored: str  # how the still-valid cache was restored: "copy", "mirror", "recompute" or "none" (nothing valid)
    recover_ms: float  # detection of the fault → the token's logits on the new placement


class PlacedModel:
    """An ``ElasticGPT`` run under a placement value (module docstring).

    Args:
        m: the loaded model (prepared; its weights are used in place on the CPU and copied once per other device).
        processors: the role → device map (default: probed on this host).
        health: the quarantine tracker (default: ``ProcessorHealth()`` with its defaults).
        injector: a :class:`FaultInjector` (tests and benchmarks), or None.
        replace_fn: ``(current_value, alive_roles) -> value`` after a fault (default :func:`fallback_placement`).
        deadline_ms: a segment call's deadline for one token, ms (None: no deadline); a call over ``t`` token
            positions (prefill, repair) gets ``deadline_ms + deadline_ms_per_token · t``.
        deadline_ms_per_token: see ``deadline_ms``.
        mirror: keep a host copy of the committed cache of segments outside host memory (gpu, npu) so that a
            lost device's cache is restored by copying, not by recomputation.
        max_len: cache length in tokens (default: the model's context).
        poison_lost: test aid: fill a lost device's cache with NaN, so that any read of it shows in the logits.
    """

    def __init__(self, m: ElasticGPT, processors: ProcessorMap | None = None, *, health: ProcessorHealth | None = None,
                 injector: FaultInjector | None = None,
                 replace_fn: Callable[[str, tuple[str, ...]], str] | None = None,
                 deadline_ms: float | None = None, deadline_ms_per_token: float = 0.0, mirror: bool = True,
                 max_len: int | None = None, poison_lost: bool = False):
        if not m._plans:
            m.prepare()
        self.m = m
        self.processors = processors or ProcessorMap()
        self.health = health or ProcessorHealth()
        self.injector, self.replace_fn = injector, replace_fn or fallback_placement
        self.deadline_ms, self.deadline_ms_per_token = deadline_ms, float(deadline_ms_per_token)
        self.mirror, self.poison_lost = bool(mirror), bool(poison_lost)
        self.max_len = int(max_len or m.config.block_size)
        self._cfg = m.active
        roles = self.processors.roles()
        self._place = P.PLACE_DEFAULT if "cpu" in roles else fallback_placement(P.PLACE_DEFAULT, roles)
        self._ids: list[int] = []  # committed tokens
        self._segs: list[_Seg] | None = None  # committed segments
        self._cur: tuple | None = None  # (cfg, place) of the committed segments
        self._packs: dict[tuple, LayerPlan] = {}  # (device, layer, heads, bits) -> plan on that device
        self._mlp: dict[tuple, tuple] = {}  # (device, layer, bits) -> (fc, fc2), shared by head counts
        self._shared: dict[str, tuple] = {}  # device -> (wte, wpe, ln_f weight, ln_f bias)
        self.faults: list[FaultRecord] = []
        self.syncs: list[SyncStats] = []
        self.late_accepted = 0  # segment calls over their deadline kept because no other processor was alive
        self.quarantine_replacements = 0  # placements replaced at a token because a processor had been quarantined

    # ---- state --------------------------------------------------------------------------------------------
    @property
    def config(self):
        """The model configuration the next token runs under (a ``Config`` (depth, heads, bits))."""
        return self._cfg

    @property
    def placement(self) -> str:
        """The placement value the next token runs under."""
        return self._place

    @property
    def length(self) -> int:
        """Tokens cached (committed)."""
        return len(self._ids)

    @property
    def ids(self) -> list[int]:
        return list(self._ids)

    def alive_roles(self, now: float | None = None) -> tuple[str, ...]:
        """Roles present on this host and not quarantined now."""
        return tuple(r for r in self.processors.roles() if not self.health.quarantined(r, now))

    def available(self, value: str, depth: int | None = None, now: float | None = None) -> tuple[bool, str]:
        """``ProcessorMap.available`` plus quarantine: (can ``value`` run now, reason)."""
        ok, why = self.processors.available(str(value), self._cfg.depth if depth is None else depth)
        if not ok:
            return ok, why
        for r in P.roles_of(value):
            q = self.health.reason(r, now)
            if q is not None:
                return False, f"placement {value!r} needs the {r} processor: {q}"
        return ok, why

    def unavailable(self, configs: Sequence, now: float | None = None) -> dict[int, str]:
        """``ProcessorMap.unavailable`` plus quarantine now: index → reason, for the runtime's mask."""
        out = {}
        for i, c in enumerate(configs):
            ok, why = self.available(c.place, c.depth, now)
            if not ok:
                out[i] = why
        return out

    def set(self, cfg=None, place: str | None = None) -> None:
        """Switch configuration and/or placement; takes effect at the next token (one move for several switches).

        Args:
            cfg: anything ``ElasticGPT.validate`` takes, or a place-space ``Config`` with a ``place`` field
                (used when ``place`` is None); None keeps the current configuration.
            place: a placement value (``runtime.placement``); None keeps the current one.

        Raises:
            ValueError: an invalid configuration (the model's message).
            PlacementUnavailable: the placement is malformed for the depth, needs an absent processor or a
                quarantined one (the reason says which).
        """
        if cfg is None:
            c = self._cfg
        else:
            if place is None and hasattr(cfg, "_fields") and "place" in cfg._fields:
                place = cfg.place
            if hasattr(cfg, "_fields") and set(cfg._fields) - {"depth", "heads", "bits"}:
                cfg = {"depth": cfg.depth, "heads": cfg.heads, "bits": cfg.bits}
            c = self.m.validate(cfg)
        v = self._place if place is None else str(place)
        ok, why = self.available(v, c.depth)
        if not ok:
            raise PlacementUnavailable(why)
        self._cfg, self._place = c, v

    def set_config(self, cfg) -> None:
        """``set(cfg)``: the current placement must stay valid at the new depth (else use ``set(cfg, place)``)."""
        self.set(cfg, None)

    def set_placement(self, value: str) -> None:
        """``set(place=value)`` at the current configuration's depth."""
        self.set(None, value)

    # ---- weights on devices ---------------------------------------------------------------------------------
    def _pack_on(self, device: torch.device, p: LayerPlan) -> LayerPlan:
        """``p`` (a CPU pack of the model) on ``device``. The CPU's integer kernels and their packing have no
        counterpart on other devices in this torch, so an int8/int4 layer runs there with the same quantised
        weights dequantised to fp32 (exactly the values the CPU kernel multiplies by; activations stay fp32)."""
        key = (str(device), *p.key)
        if key in self._packs:
            return self._packs[key]
        c, hd = self.m.config, self.m.config.head_dim
        li, h, bits = p.key
        b = self.m.blocks[li]

        def lin(w: torch.Tensor, bias: torch.Tensor) -> tuple:
            w = w.detach().float()
            if bits == 8:
                w = quant.dequantize_int8(*quant.quantize_int8(w))
            elif bits == 4:
                w = quant.dequantize_int4(*quant.quantize_int4(w, c.int4_group), c.int4_group)
            return (32, w.to(device).contiguous(), None, bias.detach().float().to(device).contiguous())

        mk = (str(device), li, bits)
        if mk not in self._mlp:
            self._mlp[mk] = (lin(b.fc.weight, b.fc.bias), lin(b.fc2.weight, b.fc2.bias))
        fc, fc2 = self._mlp[mk]
        out = LayerPlan(li, h, bits,
                        ln1=(b.ln1.weight.detach().to(device), b.ln1.bias.detach().to(device)),
                        qkv=lin(b.qkv.weight[:3 * h * hd], b.qkv.bias[:3 * h * hd]),
                        proj=lin(b.proj.weight[:, :h * hd], b.proj.bias),
                        ln2=(b.ln2.weight.detach().to(device), b.ln2.bias.detach().to(device)),
                        fc=fc, fc2=fc2)
        self._packs[key] = out
        return out

    def _plan_on(self, device: torch.device, cfg, a: int, b: int) -> list[LayerPlan]:
        plan = self.m._plans[cfg][a:b]
        return list(plan) if device.type == "cpu" else [self._pack_on(device, p) for p in plan]

    def _shared_on(self, device: torch.device) -> tuple:
        k = str(device)
        if k not in self._shared:
            m = self.m
            t = (m.wte.weight.detach(), m.wpe.weight.detach(), m.ln_f.weight.detach(), m.ln_f.bias.detach())
            self._shared[k] = t if device.type == "cpu" else tuple(x.to(device) for x in t)
        return self._shared[k]

    def _embed(self, idx: torch.Tensor, pos: int, device: torch.device) -> torch.Tensor:
        wte, wpe, _, _ = self._shared_on(device)
        idx = idx.to(device)
        return F.embedding(idx[None], wte) + wpe[pos:pos + idx.numel()]  # (1, t, d): as ElasticGPT._embed

    def _head(self, x: torch.Tensor, device: torch.device) -> torch.Tensor:
        wte, _, w, b = self._shared_on(device)
        return F.linear(F.layer_norm(x, (x.shape[-1],), w, b), wte)  # (1, t, vocab): as ElasticGPT._head

    def weight_bytes_on(self, device: str) -> int:
        """Bytes of weight copies held for ``device`` (0 for the CPU, whose copies are the model's own)."""
        seen, total = set(), 0
        tensors = [t for k, lp in self._packs.items() if k[0] == device
                   for x in (lp.ln1, lp.ln2, lp.qkv, lp.proj, lp.fc, lp.fc2) for t in x]
        tensors += list(self._shared.get(device, ())) if torch.device(device).type != "cpu" else []
        for t in tensors:
            if isinstance(t, torch.Tensor) and t.data_ptr() not in seen:
                seen.add(t.data_ptr())
                total += t.numel() * t.element_size()
        return total

    # ---- caches -----------------------------------------------------------------------------------------
    def _new_cache(self, device: torch.device, n_blocks: int) -> KVCache:
        c, T = self.m.config, self.max_len
        return KVCache(k=torch.zeros(c.n_layer, 1, c.n_head, T, c.head_dim, device=device),
                       v=torch.zeros(c.n_layer, 1, c.n_head, T, c.head_dim, device=device),
                       resid=torch.zeros(n_blocks + 1, 1, T, c.n_embd, device=device))

    def _wants_mirror(self, role: str) -> bool:
        return self.mirror and role not in HOST_MEMORY_ROLES

    @staticmethod
    def _copy_rows(dst: KVCache, src: KVCache, layers: Sequence[int], lo: int, hi: int, rows: int) -> int:
        """Copy K/V of ``layers`` and residual rows ``0..rows-1`` for tokens ``lo..hi-1``; returns bytes."""
        nbytes = 0
        for a, b in _runs(layers):  # contiguous layer ids in one copy each (per token this is the hot path)
            dst.k[a:b, :, :, lo:hi] = src.k[a:b, :, :, lo:hi].to(dst.k.device)
            dst.v[a:b, :, :, lo:hi] = src.v[a:b, :, :, lo:hi].to(dst.v.device)
            nbytes += 2 * src.k[a:b, :, :, lo:hi].numel() * 4
        dst.resid[:rows, :, lo:hi] = src.resid[:rows, :, lo:hi].to(dst.resid.device)
        return nbytes + src.resid[:rows, :, lo:hi].numel() * 4

    def _segments_for(self, cfg, place: str) -> list[tuple]:
        out, a = [], 0
        for s in P.segments(place, cfg.depth):
            dev = self.processors.device(s.role)
            if dev is None:
                raise PlacementUnavailable(self.processors.available(place, cfg.depth)[1])
            out.append((s.role, self.processors.threads(s.role, s.threads == 1), torch.device(dev), a, a + s.n_blocks))
            a += s.n_blocks
        return out

    def _sync(self) -> SyncStats | None:
        """Make the segment caches hold the committed tokens under (target configuration, target placement)
        (module docstring, 3). Builds new caches beside the old ones and commits only when complete."""
        cfg, place = self._cfg, self._place
        old = self._segs or []
        if self._segs is not None and self._cur == (cfg, place) and not any(s.lost for s in old):
            return None
        t0 = time.perf_counter()
        n = len(self._ids)
        keys_all = tuple(p.key for p in self.m._plans[cfg])
        jstar = lcp = 0
        if n and old:
            old_keys = tuple(k for s in old for k in s.cache.plan)
            while jstar < min(len(old_keys), len(keys_all)) and old_keys[jstar] == keys_all[jstar]:
                jstar += 1
            lcp = jstar
            for s in old:  # nothing at or after an unreadable segment without a mirror can be copied
                if s.lost and s.mirror is None:
                    jstar = min(jstar, s.start)
                    break

        def holder(p: int) -> _Seg:
            return next(s for s in old if s.start <= p < s.stop)

        new: list[_Seg] = []
        copied = mirrored = recomputed = nbytes = 0
        for role, threads, dev, a, b in self._segments_for(cfg, place):
            keys = keys_all[a:b]
            same = next((s for s in old if (s.role, s.start, s.stop, s.keys) == (role, a, b, keys)
                         and not s.lost and tuple(s.cache.plan) == keys), None)
            if same is not None and jstar >= b:  # unchanged processor, blocks and input: keep the caches
                new.append(same if same.threads == threads else replace(same, threads=threads))  # cpu <-> cpu.t1
                continue
            seg = _Seg(role, threads, dev, a, b, keys, self._plan_on(dev, cfg, a, b), self._new_cache(dev, b - a))
            v = min(b, jstar)  # positions a..v-1 are valid: copy them from the old segments that hold them
            c = seg.cache
            p = a
            while n and p < v:
                o = holder(p)
                q = min(v, o.stop)
                src = o.mirror if o.lost else o.cache
                layers = [keys_all[i][0] for i in range(p, q)]
                # K/V by layer id; residual rows p..q (row q: the output of position q-1 = the input of q)
                for la, lb in _runs(layers):
                    c.k[la:lb, :, :, :n] = src.k[la:lb, :, :, :n].to(dev)
                    c.v[la:lb, :, :, :n] = src.v[la:lb, :, :, :n].to(dev)
                c.resid[p - a:q - a + 1, :, :n] = src.resid[p - o.start:q - o.start + 1, :, :n].to(dev)
                nbytes += (2 * len(layers) * src.k[0, :, :, :n].numel() + (q - p + 1) * n * src.resid.shape[-1]) * 4
                if o.lost:
                    mirrored += q - p
                else:
                    copied += q - p
                p = q
            c.length, c.plan = n, keys[:max(0, v - a)]
            new.append(seg)
        for i, seg in enumerate(new):  # re-run what is not valid, segment by segment
            c = seg.cache
            if not n or tuple(c.plan) == seg.keys:
                continue
            prev = new[i - 1] if i else None

            def recompute(s=seg, prev=prev) -> None:
                if not s.cache.plan:  # the segment's input: the embeddings, or the previous segment's output
                    s.cache.resid[0, :, :n] = (self._embed(torch.tensor(self._ids), 0, s.device)[0] if prev is None
                                               else prev.cache.resid[prev.stop - prev.start, :, :n].to(s.device))
                self.m._repair(s.cache, s.plan, s.keys)  # the model's exact repair, from the first changed position

            recomputed += len(seg.keys) - len(c.plan)
            self._call(seg, recompute, n)
            c.plan = seg.keys
        for seg in new:  # host mirrors of device-memory segments
            if self._wants_mirror(seg.role) and seg.mirror is None:
                mirror = self._new_cache(torch.device("cpu"), seg.stop - seg.start)
                if n:  # reads the device: a guarded call of the segment
                    self._call(seg, lambda s=seg, mi=mirror: self._copy_rows(
                        mi, s.cache, [k[0] for k in s.keys], 0, n, s.stop - s.start + 1), n)
                mirror.length, mirror.plan = n, seg.keys
                seg.mirror = mirror
            elif not self._wants_mirror(seg.role):
                seg.mirror = None
        self._segs, self._cur = new, (cfg, place)
        st = SyncStats(n, copied, mirrored, lcp - jstar, recomputed * n, nbytes, (time.perf_counter() - t0) * 1e3)
        self.syncs.append(st)
        return st

    # ---- guarded segment calls ---------------------------------------------------------------------------------
    def _call(self, seg: _Seg, fn: Callable[[], object], tokens: int):
        """Run ``fn`` as a call of segment ``seg``: its thread count, fault injection, error classification and
        deadline (module docstring, 4)."""
        deadline_s = None
        if self.deadline_ms is not None:
            deadline_s = (self.deadline_ms + self.deadline_ms_per_token * tokens) / 1e3
        prev = torch.get_num_threads()
        want = seg.threads if seg.threads and seg.threads != prev else None
        t0 = time.perf_counter()
        try:
            if want:
                torch.set_num_threads(want)
            if self.injector is not None:
                self.injector.check(seg.role, "enter", deadline_s)
            out = fn()
            if seg.device.type == "cuda":  # kernels are asynchronous: errors and time show at a sync
                torch.cuda.synchronize(seg.device)
            if self.injector is not None:
                self.injector.check(seg.role, "exit", deadline_s)
        except Exception as exc:  # noqa: BLE001 - classified: processor faults are recovered, anything else raised
            fault = classify_error(exc, seg.role)
            if fault is None:
                raise
            if fault is exc:
                raise
            raise fault from exc
        finally:
            if want:
                torch.set_num_threads(prev)
        elapsed_s = time.perf_counter() - t0
        if deadline_s is not None and elapsed_s > deadline_s:
            if not any(r != seg.role for r in self.alive_roles()):
                self.late_accepted += 1  # nowhere to move: the result is correct, only late
                return out
            raise SegmentTimeout(seg.role, f"segment call over {tokens} token(s) took {elapsed_s * 1e3:.1f} ms, "
                                           f"deadline {deadline_s * 1e3:.1f} ms")
        return out

    # ---- running tokens --------------------------------------------------------------------------------------------
    def _advance(self, idx: torch.Tensor) -> torch.Tensor:
        """Append tokens ``idx`` (t,); the last one's logits (1, vocab) on the CPU. Commits only at the end."""
        self._sync()
        pos, t = len(self._ids), int(idx.numel())
        segs = self._segs
        x = None
        for i, seg in enumerate(segs):
            last = i == len(segs) - 1

            def run(seg=seg, x=x, first=i == 0, last=last):
                h = self._embed(idx, pos, seg.device) if first else x.to(seg.device)  # (1, t, d)
                y = _run_plan(self.m, h, seg.plan, seg.cache, pos)
                if seg.mirror is not None:  # beyond the mirror's committed length until the commit below
                    self._copy_rows(seg.mirror, seg.cache, [k[0] for k in seg.keys], pos, pos + t,
                                    seg.stop - seg.start + 1)
                return self._head(y, seg.device)[:, -1].to("cpu") if last else y  # all t rows: ElasticGPT's shapes

            x = self._call(seg, run, t)
        self._ids.extend(int(v) for v in idx.tolist())
        for seg in segs:
            seg.cache.length, seg.cache.plan = pos + t, seg.keys
            if seg.mirror is not None:
                seg.mirror.length, seg.mirror.plan = pos + t, seg.keys
        return x  # (1, vocab)

    def _replace(self, why: str) -> str:
        """The placement ``replace_fn`` picks among the alive roles (validated)."""
        alive = self.alive_roles()
        if not alive:
            raise NoProcessorLeft(f"{why}; every processor is failed or quarantined: "
                                  f"{self.health.unavailable_roles()}")
        new = str(self.replace_fn(self._place, alive))
        try:
            used = P.roles_of(new)
            P.segments(new, self._cfg.depth)
        except P.PlacementError as exc:
            raise ValueError(f"replace_fn returned {new!r} after {why}: {exc}") from None
        bad = [r for r in used if r not in alive]
        if bad:
            raise ValueError(f"replace_fn returned {new!r} after {why}, but {', '.join(bad)} is not alive "
                             f"(alive: {', '.join(alive)})")
        return new

    def _ensure_alive(self) -> None:
        """A placement whose processor was quarantined after it was set is replaced by the rule used after a fault."""
        q = [r for r in P.roles_of(self._place) if self.health.quarantined(r)]
        if q:
            self._place = self._replace(f"placement {self._place!r} needs quarantined {', '.join(q)}")
            self.quarantine_replacements += 1

    def _on_fault(self, f: ProcessorFault) -> tuple[str, float]:
        """Quarantine the role, mark a lost device's caches unreadable, choose the new placement."""
        backoff = self.health.fail(f.role, f"{f.kind}: {f.detail}")
        if isinstance(f, DeviceLost) and f.role not in HOST_MEMORY_ROLES:
            dev = self.processors.device(f.role)
            if dev is not None and torch.device(dev).type != "cpu":  # its weight copies died with it: re-copy on retry
                for d in (self._packs, self._mlp):
                    for k in [k for k in d if k[0] == dev]:
                        del d[k]
                self._shared.pop(dev, None)
            for s in self._segs or []:
                if s.role == f.role:
                    s.lost = True
                    if self.poison_lost:
                        for t in (s.cache.k, s.cache.v, s.cache.resid):
                            t.fill_(float("nan"))
        old = self._place
        try:
            self._place = self._replace(str(f))
        except (NoProcessorLeft, ValueError) as exc:
            raise exc from f
        return old, backoff

    def _recovering(self, fn: Callable[[], torch.Tensor]) -> torch.Tensor:
        self._ensure_alive()
        pending: list[tuple] = []
        n_syncs = len(self.syncs)
        while True:
            try:
                out = fn()
                break
            except ProcessorFault as f:
                old, backoff = self._on_fault(f)
                pending.append((f, old, self._place, backoff))
        if pending:
            done = time.perf_counter()
            st = self.syncs[-1] if len(self.syncs) > n_syncs else None
            restored = "none"  # nothing cached, or a configuration switch at the same token invalidated it all
            if st is not None and st.tokens:
                restored = ("recompute" if st.unreadable_positions else "mirror" if st.mirror_positions
                            else "copy" if st.copied_positions else "none")
            for f, old, new, backoff in pending:
                self.faults.append(FaultRecord(len(self._ids) - 1, f.role, f.kind, f.detail, old, new, backoff,
                                               restored, (done - f.detected_s) * 1e3))
        return out

    @torch.no_grad()
    def prefill(self, ids) -> torch.Tensor:
        """Forget the context and run ``ids`` (t,) from position 0; returns the last position's logits (1, vocab)."""
        idx = self._check_ids(ids, 0)
        self._ids, self._segs, self._cur = [], None, None
        return self._recovering(lambda: self._advance(idx))

    @torch.no_grad()
    def step(self, token: int) -> torch.Tensor:
        """Append one token and return its logits (1, vocab) on the CPU, recovering from processor faults."""
        idx = self._check_ids([token], len(self._ids))
        return self._recovering(lambda: self._advance(idx))

    def _check_ids(self, ids, pos: int) -> torch.Tensor:
        idx = torch.as_tensor(ids).flatten()
        if idx.numel() == 0 or idx.dtype.is_floating_point or idx.dtype == torch.bool:
            raise ValueError("token ids must be a non-empty integer sequence")
        idx = idx.long()
        if int(idx.min()) < 0 or int(idx.max()) >= self.m.config.vocab_size:
            raise ValueError(f"token ids must lie in 0..{self.m.config.vocab_size - 1}")
        if pos + idx.numel() > self.max_len:
            raise ValueError(f"{pos + idx.numel()} tokens exceed the cache of {self.max_len}; crop the context "
                             "and prefill again (stream() does)")
        return idx

    @torch.no_grad()
    def stream(self, prompt, max_new_tokens: int = 200, temperature: float = 0.8, top_k: int | None = 40,
               seed: int | None = None) -> Iterator[int]:
        """Yield generated byte tokens as ``ElasticGPT.stream`` (same sampling and context cropping); ``set`` may be
        called between yields."""
        from model.data import encode

        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        ids = (torch.as_tensor(encode(prompt), dtype=torch.long) if isinstance(prompt, str)
               else torch.as_tensor(prompt).long().flatten())
        if ids.numel() == 0:
            ids = torch.tensor([ord("\n")])
        T = self.max_len
        logits = self.prefill(ids[-(T - 1):])
        for _ in range(max_new_tokens):
            nxt = sample_token(logits, temperature, top_k, gen)
            yield nxt
            if len(self._ids) >= T:
                logits = self.prefill(torch.tensor((self._ids + [nxt])[-(T // 2):]))
            else:
                logits = self.step(nxt)

    def describe(self) -> dict:
        """Placement, segments, cached tokens, faults and quarantine (telemetry)."""
        segs = self._segs or []
        return {"config": self.m.name(self._cfg), "placement": self._place, "tokens": len(self._ids),
                "segments": [{"role": s.role, "device": str(s.device), "threads": s.threads,
                              "blocks": [k[0] for k in s.keys], "mirror": s.mirror is not None} for s in segs],
                "faults": len(self.faults), "unavailable": self.health.unavailable_roles(),
                "processors": self.processors.describe()}

