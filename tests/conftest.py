"""Test-wide settings: one torch thread per process, and one pytest-xdist worker per usable core.

CI has 2 cores: the suite runs in two workers (``-n auto --dist loadfile`` in pyproject.toml), each test
with one torch/OpenMP thread, so the two never oversubscribe the cores. ``python -m pytest -n 0`` runs it
in one process.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # the runtime-only tests don't need torch
    pass


import pytest

MAX_WORKERS = 8  # beyond this the slowest test files, not the cores, set the wall time


def pytest_xdist_auto_num_workers(config):
    """``-n auto``: the cores this process may run on (its affinity mask, which a container or ``taskset``
    narrows), not xdist's default of physical cores (1 on a 2-vCPU VM with SMT, which would run serially)."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        n = os.cpu_count() or 1
    return max(1, min(n, MAX_WORKERS))


@pytest.fixture(autouse=True, scope="session")
def _sb3_logs_in_pytest_tmp(tmp_path_factory):
    """SB3's ``learn()`` without a log folder makes an empty ``SB3-<date>`` folder in the system's temp dir on
    every call; keep them in pytest's own temp tree, which pytest prunes."""
    old = os.environ.get("SB3_LOGDIR")
    os.environ["SB3_LOGDIR"] = str(tmp_path_factory.mktemp("sb3"))
    yield
    if old is None:
        os.environ.pop("SB3_LOGDIR", None)
    else:
        os.environ["SB3_LOGDIR"] = old
