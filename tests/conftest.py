"""Test-wide settings: one torch thread (CI has 2 cores and runs tests serially)."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # the runtime-only tests don't need torch
    pass
