"""Does one seed train the same policy twice? On this host, and under another CPU kernel level.

    python benchmarks/host_determinism.py [--levels default,<this host's>] [--out benchmarks/results/host_determinism]

``train.py`` fixes every random draw by its seed, but not the rounding of its floating-point sums: torch picks its
CPU kernels by the instruction set the processor offers (``torch.backends.cpu.get_cpu_capability()``: ``DEFAULT``,
``AVX2``, ``AVX512``…), and kernels of another width add in another order. A difference in the last bit of one
weight grows, over a warm start and two million RL steps, into another policy. PyTorch promises reproducible results
only on one platform with one release.

This runs a short training (a warm start on 3 oracle episodes and one DAgger round of 2, then 8 192 RL steps, on the
default traces) three times in fresh processes: twice at this host's own kernel level and once at each other level
of ``--levels`` (the environment variable ``ATEN_CPU_CAPABILITY``, which caps the level torch dispatches to: a
stand-in for a processor without the wider instructions). It compares the demonstrations (``warm_start/demos.npz``,
array by array) and the policy weights (``warm_start/`` and the kept policy) of each run with the first, and writes
OUT.md and OUT.json: equal or not, and the largest weight difference. Runs take about a minute each on one core.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.objectives import refuse_to_overwrite, write_report  # noqa: E402

# a short run of the main job's recipe: enough to pass through imitation, DAgger, RL and the val selection
TINY = ["--bc-episodes", "3", "--dagger-rounds", "1", "--dagger-episodes", "2", "--total-timesteps", "8192",
        "--eval-freq", "4096", "--eval-episodes", "2", "--checkpoint-freq", "4096", "--no-final-eval", "--no-progress"]
LEVELS = ("default", "avx2", "avx512", "avx512_vnni", "avx512_bf16", "amx", "sve256", "zvector")


def host_level() -> str:
    """torch's kernel level on this host, as ``ATEN_CPU_CAPABILITY`` spells it (``avx2``)."""
    import torch

    return str(torch.backends.cpu.get_cpu_capability()).lower()


def state_diff(a: dict, b: dict) -> float:
    """Largest absolute difference between two state dicts of one architecture (0.0: bit-equal); ValueError when
    their keys or shapes differ."""
    if a.keys() != b.keys():
        raise ValueError(f"the state dicts hold other tensors: {sorted(set(a) ^ set(b))}")
    worst = 0.0
    for k in a:
        if a[k].shape != b[k].shape:
            raise ValueError(f"{k}: shape {tuple(a[k].shape)} against {tuple(b[k].shape)}")
        if a[k].numel():
            worst = max(worst, float((a[k].double() - b[k].double()).abs().max()))
    return worst


def demos_equal(a: Path, b: Path) -> dict[str, bool]:
    """Array by array, whether two ``demos.npz`` hold the same demonstrations (``seconds``, a wall time, left out)."""
    import numpy as np

    with np.load(a, allow_pickle=False) as x, np.load(b, allow_pickle=False) as y:
        keys = sorted((set(x.files) | set(y.files)) - {"seconds"})
        return {k: bool(k in x.files and k in y.files and np.array_equal(x[k], y[k])) for k in keys}


def train_once(level: str | None, runs_dir: Path, seed: int) -> tuple[Path, float]:
    """One short training in a fresh process (``ATEN_CPU_CAPABILITY=level``, unset for None); its run folder."""
    env = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}
    if level is not None:
        env["ATEN_CPU_CAPABILITY"] = level
    t0 = time.time()
    proc = subprocess.run([sys.executable, str(REPO / "train.py"), "--seed", str(seed), "--runs-dir", str(runs_dir),
                           *TINY], cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"train.py (ATEN_CPU_CAPABILITY={level}) failed with exit code {proc.returncode}:\n"
                         f"{proc.stderr[-2000:]}")
    (run,) = [p for p in runs_dir.iterdir() if p.is_dir()]
    return run, time.time() - t0


def compare(ref: Path, other: Path) -> dict:
    """The demonstrations and the weights (warm start, kept policy) of run ``other`` against run ``ref``."""
    import torch

    out = {"demos_equal": demos_equal(ref / "warm_start" / "demos.npz", other / "warm_start" / "demos.npz")}
    for name, rel in (("warm_start", "warm_start/policy_state.pt"), ("kept", "policy_state.pt")):
        d = state_diff(torch.load(ref / rel, weights_only=True), torch.load(other / rel, weights_only=True))
        out[f"{name}_max_abs_diff"] = d
    out["same"] = all(out["demos_equal"].values()) and out["warm_start_max_abs_diff"] == out["kept_max_abs_diff"] == 0
    return out


def markdown(data: dict) -> str:
    h = data["host"]
    lines = [f"# One seed, trained again ({data['date']})", "",
             f"Host: {h['cpu_model']}, torch {h['torch_version']} at kernel level `{h['torch_cpu_capability']}`, "
             f"numpy {h['numpy_version']}, {h['threads']} thread(s). Each run: `python train.py --seed {data['seed']} "
             f"{' '.join(data['tiny_args'])}` in a fresh process. Generated by `benchmarks/host_determinism.py`.", "",
             "| run | ATEN_CPU_CAPABILITY | demonstrations equal to run 1 | warm start: largest weight difference "
             "| kept policy: largest weight difference | wall (s) |", "|---|---|---|---|---|---|"]
    for i, r in enumerate(data["runs"]):
        c = r.get("vs_first")
        demos = "—" if c is None else ("all equal" if all(c["demos_equal"].values()) else
                                       "differ: " + ", ".join(k for k, v in c["demos_equal"].items() if not v))
        ws = "—" if c is None else f"{c['warm_start_max_abs_diff']:.3g}"
        kept = "—" if c is None else f"{c['kept_max_abs_diff']:.3g}"
        lines.append(f"| {i + 1} | {r['level'] or '(unset: ' + data['host']['torch_cpu_capability'] + ')'} | "
                     f"{demos} | {ws} | {kept} | {r['wall_s']:.0f} |")
    lines += ["", "0 is bit-equal. " + data["verdict"], ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--levels", default="default",
                    help="comma-separated kernel levels to train at besides this host's own (ATEN_CPU_CAPABILITY; "
                         f"one of {', '.join(LEVELS)}; a level above the host's runs at the host's)")
    ap.add_argument("--seed", type=int, default=1, help="train.py's --seed for every run (default 1)")
    ap.add_argument("--out", default="benchmarks/results/host_determinism",
                    help="output path without extension (OUT.md, OUT.json)")
    ap.add_argument("--force", action="store_true", help="replace an existing report")
    a = ap.parse_args(argv)
    levels = [s.strip().lower() for s in a.levels.split(",") if s.strip()]
    if bad := [s for s in levels if s not in LEVELS]:
        ap.error(f"--levels: unknown level {', '.join(map(repr, bad))}; torch knows {', '.join(LEVELS)}")
    out = Path(a.out)
    refuse_to_overwrite(ap, out, a.force)
    from agents.run_io import run_host

    plan = [None, None] + levels  # the host's own level twice, then each other level
    runs = []
    with tempfile.TemporaryDirectory(prefix="wattwise-determinism-") as tmp:
        for i, level in enumerate(plan):
            print(f"run {i + 1}/{len(plan)}: ATEN_CPU_CAPABILITY={level or '(unset)'}", flush=True)
            run, wall = train_once(level, Path(tmp) / f"run{i}", a.seed)
            runs.append({"level": level, "wall_s": wall, "run": run})
        for r in runs[1:]:
            r["vs_first"] = compare(runs[0]["run"], r["run"])
        for r in runs:
            del r["run"]
    again, others = runs[1]["vs_first"]["same"], [r for r in runs[2:] if not r["vs_first"]["same"]]
    verdict = (("Trained again at this host's level, the seed gives the same demonstrations and bit-equal weights"
                if again else "Trained again at this host's level, the seed does NOT give the same weights: "
                "something besides the seed and the kernels varies between runs")
               + ("; at " + ", ".join(f"`{r['level']}`" for r in others) + " it trains other weights." if others
                  else "; every other level trains the same weights." if levels else "."))
    data = {"date": time.strftime("%Y-%m-%d"), "seed": a.seed, "tiny_args": TINY,
            "host": run_host(1),  # train.py trains on one thread (--threads 1)
            "runs": runs, "verdict": verdict}
    write_report(out, data, markdown(data))
    print(verdict)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
