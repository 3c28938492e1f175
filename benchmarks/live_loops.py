"""Two ways to time the live model, like for like in one run: which one matches the profile?

    python benchmarks/live_loops.py [--calibrated profiles/calibrated-amd-epyc-2c-3.json] [--repeats 5]
                                    [--out benchmarks/results/live_loops.json] [--force]

* **growing** (``envs.live`` before 2026-12-02): one KV cache filled until it is full, each configuration's
  repeats back to back, so samples start at different context lengths and on warm caches.
* **fresh** (``envs.live.sim_to_real`` now): every sample on a fresh cache after the same 64-token context,
  round-robin over the configurations, as ``model.profile`` and the calibration measure.

Reports the calibrated profile's median and worst |error| against each, and how far the two measurements of
the same configuration differ. Run it on a quiet host (nothing else on the CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def growing_loop(env, tokens: int, repeats: int) -> dict[str, float]:
    """The loop ``envs.live`` used before 2026-12-02: median ms/token per configuration."""
    out = {}
    env.reset(seed=0)
    env._cache = None
    for name in env.costs.names:
        env.model.set_config(name)
        env._generate(4)
        lat = []
        for _ in range(repeats):
            lat.extend(env._generate(tokens))
        out[name] = float(statistics.median(lat))
    return out


def main(argv: list[str] | None = None) -> int:
    from model.cli import positive_int
    from runtime.safeio import refuse_existing

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calibrated", default="profiles/calibrated-amd-epyc-2c-3.json")
    ap.add_argument("--repeats", type=positive_int, default=5)
    ap.add_argument("--tokens", type=positive_int, default=64)
    ap.add_argument("--threads", type=positive_int, default=2)
    ap.add_argument("--out", default="benchmarks/results/live_loops.json")
    ap.add_argument("--force", action="store_true", help="replace an existing --out")
    a = ap.parse_args(argv)
    try:
        refuse_existing(Path(a.out), a.force, "live-loops result")
    except FileExistsError as exc:
        ap.error(str(exc))
    import numpy as np
    import torch

    import model as M
    from envs.live import LiveMicroLLMPowerEnv, profile_data, sim_to_real
    from model.profile import host_fingerprint

    torch.set_num_threads(a.threads)
    cal = profile_data(a.calibrated)
    calp = {r["name"]: float(r["decode_ms_per_token_median"]) for r in cal["configs"]}
    m = M.load(M.DEFAULT_CHECKPOINT)
    env = LiveMicroLLMPowerEnv(model=m, profile=profile_data("profiles/reference-cpu.json"))
    t0 = time.time()
    grow = growing_loop(env, a.tokens, a.repeats)
    t_grow = time.time() - t0
    t0 = time.time()
    fresh = {r["name"]: r["measured_ms_per_token"] for r in sim_to_real(env, a.tokens, a.repeats)}
    t_fresh = time.time() - t0

    def errs(meas):
        e = np.array([abs(100.0 * (calp[n] - meas[n]) / meas[n]) for n in meas])
        return {"median_pct": float(np.median(e)), "worst_pct": float(e.max())}

    ratio = np.array([grow[n] / fresh[n] for n in fresh])
    res = {"date": time.strftime("%Y-%m-%d"), "host_fingerprint": host_fingerprint(a.threads),
           "calibrated": a.calibrated, "tokens": a.tokens, "repeats": a.repeats,
           "load_avg_1min_end": os.getloadavg()[0],
           "growing": {"calibrated_error": errs(grow), "wall_s": t_grow, "ms_per_token": grow},
           "fresh": {"calibrated_error": errs(fresh), "wall_s": t_fresh, "ms_per_token": fresh},
           "growing_over_fresh": {"median": float(np.median(ratio)), "min": float(ratio.min()),
                                  "max": float(ratio.max())}}
    Path(a.out).write_text(json.dumps(res, indent=1))
    for k in ("growing", "fresh"):
        e = res[k]["calibrated_error"]
        wall = res[k]["wall_s"]
        print(f"{k:8s} calibrated median {e['median_pct']:.1f} %, worst {e['worst_pct']:.1f} % ({wall:.0f} s)")
    print(f"growing / fresh per configuration: median {np.median(ratio):.2f} ({ratio.min():.2f}..{ratio.max():.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
