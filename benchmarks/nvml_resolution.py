"""How finely does NVML's energy counter resolve a short block? The counter's update interval and step.

    python benchmarks/nvml_resolution.py [--index 0] [--seconds 2] [--out nvml_resolution.json]

Reads ``nvmlDeviceGetTotalEnergyConsumption`` (mJ) and ``nvmlDeviceGetPowerUsage`` (mW) of GPU ``--index`` in
a tight loop for ``--seconds`` twice: idle, then while a small matrix product runs back to back on the GPU.
Per phase: how often the counter changes (median and p90 seconds between changes), its median step (J),
the mean power from the counter (ΔE / Δt) and from the power readings. ``model.profile`` meters each
configuration over whole decode repeats; a block much shorter than the update interval reads 0 or one
whole step, so this sets the shortest block worth metering (docs/profiles.md, "A GPU profile").

Needs a CUDA GPU, torch and pynvml (``pip install nvidia-ml-py``); refuses with the reason otherwise.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def _phase(nvml, handle, seconds: float, work=None) -> dict:
    t_end = time.perf_counter() + seconds
    counter: list[tuple[float, float]] = []
    power_w: list[float] = []
    while time.perf_counter() < t_end:
        if work is not None:
            work()
        t = time.perf_counter()
        counter.append((t, float(nvml.nvmlDeviceGetTotalEnergyConsumption(handle)) * 1e-3))
        power_w.append(float(nvml.nvmlDeviceGetPowerUsage(handle)) * 1e-3)
    t = np.array([c[0] for c in counter])
    e = np.array([c[1] for c in counter])
    changed = np.flatnonzero(np.diff(e) != 0) + 1
    gaps = np.diff(t[changed]) if changed.size > 1 else np.array([])
    steps = np.diff(e[changed]) if changed.size > 1 else np.array([])
    span = t[changed[-1]] - t[changed[0]] if changed.size > 1 else 0.0
    return {"reads": int(t.size), "changes": int(changed.size),
            "update_interval_s_median": float(np.median(gaps)) if gaps.size else None,
            "update_interval_s_p90": float(np.percentile(gaps, 90)) if gaps.size else None,
            "step_j_median": float(np.median(steps)) if steps.size else None,
            "counter_power_w": float((e[changed[-1]] - e[changed[0]]) / span) if span > 0 else None,
            "power_usage_w_mean": float(np.mean(power_w))}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--index", type=int, default=0)
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--out", default=None, help="also write the result as JSON here")
    a = p.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("benchmarks/nvml_resolution.py: torch sees no CUDA GPU here")
    try:
        import pynvml as nvml
    except ImportError:
        raise SystemExit("benchmarks/nvml_resolution.py: pynvml is not installed (pip install nvidia-ml-py)") from None
    nvml.nvmlInit()
    handle = nvml.nvmlDeviceGetHandleByIndex(a.index)
    x = torch.randn(2048, 2048, device="cuda")

    def work() -> None:
        (x @ x).sum().item()  # one product and a sync: the GPU busy, the loop still reading often

    work()
    out = {"date": time.strftime("%Y-%m-%d"), "gpu": torch.cuda.get_device_name(a.index),
           "driver": nvml.nvmlSystemGetDriverVersion(), "seconds_per_phase": a.seconds,
           "idle": _phase(nvml, handle, a.seconds), "busy_2048_matmul": _phase(nvml, handle, a.seconds, work)}
    text = json.dumps(out, indent=1, default=str)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
