"""Test-wide settings: one torch thread (CI has 2 cores and runs tests serially)."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # the runtime-only tests don't need torch
    pass


import pytest


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
