"""How much does the RL step's normalisation drift alone move an imitated policy?

    python benchmarks/norm_drift.py --run runs/<run> [--run ...] [--split test] [--max-steps 720]
                                    [--out benchmarks/results/norm_drift.md]

Each ``--run`` is a train.py run folder with a warm start (``<run>/warm_start``) and a last RL policy
(``<run>/last``). The imitated policy is scored twice on the same episodes, through ``agents.evaluate``: with the
observation statistics it was fitted under (``warm_start/vecnormalize.npz``), and with the statistics
VecNormalize had reached at the end of the RL step (``last/vecnormalize.npz``), the weights unchanged. The
difference is what the statistics alone do to the policy, before any gradient step counts; ``train.py
--freeze-obs-norm`` keeps them fixed. Also reported: how far the statistics moved (median relative change of the
per-feature mean and standard deviation) and the samples they were counted over.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def _returns(run: Path, split: str, max_steps: int, work: Path) -> tuple[float, list[float], list[str]]:
    out = work / "eval"
    cmd = [sys.executable, "-m", "agents.evaluate", "--run", str(run), "--split", split, "--max-steps", str(max_steps),
           "--policies", "schedutil", "--no-progress", "--out", str(out), "--force"]
    subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    rep = json.loads((out / "report.json").read_text())
    name = next(n for n in rep["per_episode"] if n.startswith("rl:"))
    eps = [float(e["return"]) for e in rep["per_episode"][name]]
    return float(np.mean(eps)), eps, [e["trace_name"] for e in rep["episodes"]]


def _moved(a: Path, b: Path) -> tuple[float, float, float, float]:
    x, y = np.load(a, allow_pickle=False), np.load(b, allow_pickle=False)
    xm, ym, xv, yv = (np.asarray(x["mean"]), np.asarray(y["mean"]), np.asarray(x["var"]), np.asarray(y["var"]))
    scale = np.sqrt(xv) + 1e-6
    d_mean = float(np.median(np.abs(ym - xm) / scale))  # in the warm start's standard deviations
    d_std = float(np.median(np.abs(np.sqrt(yv) - np.sqrt(xv)) / scale))
    return d_mean, d_std, float(x["count"]), float(y["count"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", action="append", required=True, help="train.py run folder (with warm_start/ and last/)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--max-steps", type=int, default=720)
    ap.add_argument("--out", default=None, help="write the table here (markdown) and beside it as .json")
    a = ap.parse_args(argv)
    rows, table = [], []
    for r in a.run:
        run = Path(r)
        for need in (run / "warm_start" / "vecnormalize.npz", run / "last" / "vecnormalize.npz"):
            if not need.is_file():
                raise SystemExit(f"--run {run}: {need} is missing; fix: give a train.py run with a warm start and an "
                                 "RL step (--bc-expert …, --total-timesteps > 0)")
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            own, own_eps, names = _returns(run / "warm_start", a.split, a.max_steps, work)
            drifted = work / "drifted"
            shutil.copytree(run / "warm_start", drifted)
            shutil.copy(run / "last" / "vecnormalize.npz", drifted / "vecnormalize.npz")
            moved, moved_eps, _ = _returns(drifted, a.split, a.max_steps, work)
        d_mean, d_std, n0, n1 = _moved(run / "warm_start" / "vecnormalize.npz", run / "last" / "vecnormalize.npz")
        rows.append({"run": str(run), "own": own, "drifted": moved, "own_eps": own_eps, "drifted_eps": moved_eps,
                     "episodes": names, "d_mean_sd": d_mean, "d_std_sd": d_std, "count_ws": n0, "count_last": n1})
        worst = int(np.argmin(np.subtract(moved_eps, own_eps)))
        table.append(f"| `{run}` | {own:.3f} | {moved:.3f} | {moved - own:+.3f} | {names[worst]} "
                     f"{moved_eps[worst] - own_eps[worst]:+.2f} | {d_mean:.2f} / {d_std:.2f} | {n0:,.0f} → {n1:,.0f} |")
        print(table[-1], flush=True)
    md = [f"# The imitated policy under its own and under the RL step's observation statistics ({date.today()})", "",
          f"Split `{a.split}`, {a.max_steps} steps per episode from row 0; mean episode return of the warm start's "
          "weights with `warm_start/vecnormalize.npz` (own) and with `last/vecnormalize.npz` (drifted). Moved: the "
          "median over features of |Δ mean| and |Δ std|, in the warm start's standard deviations.", "",
          "| run | own | drifted | difference | largest episode change | moved: mean / std | samples counted |",
          "|---|---|---|---|---|---|---|", *table, ""]
    if a.out:
        out = Path(a.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("\n".join(md))
        out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
