"""Independent episodes on Ray workers, results in the serial order (``--workers N``).

The oracle demonstrations of ``train.py --bc-expert oracle`` and the controller × episode grid of
``python -m agents.evaluate`` are sums of independent episodes: every episode is reset with its own
seed, so it does not matter which process runs it. :func:`map_episodes` runs ``fn(context, item)``
for every item on N Ray workers and returns the results in item order, so a caller that does
``[fn(context, item) for item in items]`` serially gets the same list back.

* ``workers=1`` never imports Ray (callers keep their serial loop; Ray is an optional extra).
* The context (an env, a controller factory, a student policy, ...) is put into Ray's object store
  once and deserialised once per worker process, which then reuses it for all its items; this is
  also how the trace set reaches workers on other machines (no shared storage needed for it).
* Local by default: a private Ray runtime on this machine with one worker per core
  (``address="local"``, never an unrelated cluster that ``ray start`` left running); a cluster when
  ``RAY_ADDRESS`` (or ``address``) is set, e.g. ``RAY_ADDRESS=auto`` on a node of it.
* A task whose worker dies is retried by Ray (``max_retries``); an exception inside ``fn`` is raised
  here with its traceback.

Install: ``pip install -e '.[cluster]'`` (``ray[tune]``). Measured per-task overhead and speed-up:
``benchmarks/parallel_speed.py``, ``benchmarks/results/parallel_speed.md``.
"""

from __future__ import annotations

import os
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

INSTALL_HINT = "pip install -e '.[cluster]'"
_TASK_RETRIES = 2  # a worker killed mid-task (OOM, preemption) re-runs that task; results do not change
_CONTEXTS: OrderedDict[str, Any] = OrderedDict()  # per worker process: token -> deserialised context
_MAX_CONTEXTS = 4


class RayNotInstalledError(ImportError):
    """``--workers`` > 1 (or a sweep) without the ``cluster`` extra."""


def ray_available() -> bool:
    """Whether Ray can be imported (without importing it)."""
    import importlib.util

    return importlib.util.find_spec("ray") is not None


def require_ray():
    """The ``ray`` module, or a :class:`RayNotInstalledError` that says how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise RayNotInstalledError(f"Ray is not installed (needed for --workers > 1 and agents.sweep); fix: "
                                   f"{INSTALL_HINT}, or run with --workers 1") from exc
    return ray


def init_ray(address: str | None = None, num_cpus: int | None = None):
    """Connects this process to Ray once and returns the ``ray`` module.

    Args:
        address: A cluster (``HOST:PORT`` or ``auto``); default ``$RAY_ADDRESS``, else a new local runtime.
        num_cpus: CPUs of a new local runtime (default: this machine's cores, ``os.cpu_count()``).
    """
    ray = require_ray()
    if ray.is_initialized():
        return ray
    import logging

    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    else:  # "local": a private runtime, not a cluster some earlier `ray start` left behind
        # worker_niceness 0: Ray's default (15) makes its workers yield to every other process, so on a busy
        # machine --workers 2 ran slower than the serial path (nice 0); benchmarks/results/parallel_speed.md
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False,
                 logging_level=logging.WARNING, log_to_driver=False, _system_config={"worker_niceness": 0})
    return ray


def _run_chunk(fn: Callable[[Any, Any], Any], token: str, boxed_context: list, chunk: Sequence) -> list:
    """On a worker: the context of ``token`` (fetched from the object store on first use), then ``fn`` per item."""
    ctx = _CONTEXTS.get(token)
    if ctx is None:
        import ray

        ctx = ray.get(boxed_context[0])  # boxed: Ray would otherwise deserialise it again for every task
        _CONTEXTS[token] = ctx
        while len(_CONTEXTS) > _MAX_CONTEXTS:
            _CONTEXTS.popitem(last=False)
    return [fn(ctx, item) for item in chunk]


def map_episodes(fn: Callable[[Any, Any], Any], items: Sequence, workers: int, *, context: Any = None,
                 chunk_size: int = 1, progress: bool = True, desc: str = "episodes", unit: str = "ep") -> list:
    """``[fn(context, item) for item in items]``, computed by ``workers`` Ray workers, in item order.

    Args:
        fn: A module-level function (pickled by reference) ``fn(context, item) -> result``. It must not
            depend on which items ran before it in the same process, except through caches that do not
            change results (e.g. a controller built once per worker).
        items: The work, e.g. episode indices; picklable.
        workers: Tasks in flight at most (one CPU each). 1: a plain loop in this process, without Ray.
        context: Picklable, shipped once through the object store; each worker deserialises it once.
        chunk_size: Items per task (more amortises the per-task overhead for cheap items).
        progress: tqdm bar over items.
        desc: The bar's label.
        unit: The bar's unit.
    """
    from tqdm import tqdm

    items = list(items)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, not {workers}")
    bar = tqdm(total=len(items), desc=desc, unit=unit, disable=not progress, leave=False)
    if workers == 1 or not items:
        out = []
        for item in items:
            out.append(fn(context, item))
            bar.update(1)
        bar.close()
        return out
    ray = init_ray()
    remote = ray.remote(num_cpus=1, max_retries=_TASK_RETRIES)(_run_chunk)
    token = uuid.uuid4().hex
    boxed = [ray.put(context)]
    chunks = [items[i:i + chunk_size] for i in range(0, len(items), max(1, chunk_size))]
    results: list[list | None] = [None] * len(chunks)
    pending: dict[Any, int] = {}
    nxt = 0
    try:
        while nxt < len(chunks) or pending:
            while nxt < len(chunks) and len(pending) < workers:
                pending[remote.remote(fn, token, boxed, chunks[nxt])] = nxt
                nxt += 1
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                i = pending.pop(ref)
                results[i] = ray.get(ref)
                bar.update(len(chunks[i]))
    finally:
        for ref in pending:  # an error (or Ctrl-C) leaves no orphaned tasks behind
            ray.cancel(ref, force=True)
        bar.close()
    return [r for part in results for r in part]


__all__ = ["INSTALL_HINT", "RayNotInstalledError", "init_ray", "map_episodes", "ray_available", "require_ray"]
