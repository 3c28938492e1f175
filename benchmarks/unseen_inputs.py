"""How far outside its training inputs a run is on one held-out episode, and what holding the inputs to that range
does to the episode.

A cross-validation fold can hold out the only unit of a device kind (fold 0 holds out the data's only laptop), so
its policies meet inputs their training never produced. For each run this reports, on the episode's first step,
the observation features furthest from the run's observation statistics (in training standard deviations), the
configurations the run chooses over the episode, and the episode's return as trained and with every observation
clipped to the range of the run's own demonstrations (``<run>/warm_start/demos.npz``: what ``train.py --clamp-obs``
does from training onwards). It is a diagnosis of one episode, not a score: choose the episode because a report
showed a loss there, and judge a fix by training with it and scoring the fold::

    python benchmarks/unseen_inputs.py --traces data/real-objectives-cv/fold-0 \\
        --trace thinkpad-laptop-bat0-seg2 --runs runs/.../ctl-f0__1__... runs/.../ctl-f0__2__... \\
        --out benchmarks/results/unseen_inputs/fold-0-laptop

Writes OUT.md and OUT.json. Energy and returns are modelled (the run's profile).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agents.evaluate import run_episode  # noqa: E402
from agents.run_io import env_from_config, load_config, load_controller  # noqa: E402

OBJECTIVES = ("max-quality", "min-energy", "last-until")


def diagnose(run: Path, traces: str, split: str, trace: str, objective: str, start: int, max_steps: int,
             top: int) -> dict:
    demos = run / "warm_start" / "demos.npz" if (run / "warm_start").is_dir() else run / "demos.npz"
    if not demos.exists():
        raise SystemExit(f"{run}: no demonstrations at {demos}; the clip range comes from a warm-started run's "
                         "warm_start/demos.npz")
    with np.load(demos, allow_pickle=False) as z:
        lo, hi = z["obs"].min(0), z["obs"].max(0)
    ctrl = load_controller(run)
    env = env_from_config(load_config(run), traces=traces, split=split)
    names = [t.name for t in env.unwrapped.traces]
    if trace not in names:
        raise SystemExit(f"--trace {trace}: not in {traces} split {split}; its traces: {', '.join(names[:8])}...")
    opts = {"trace": names.index(trace), "start": start, "objective": objective}
    obs, _ = env.reset(seed=0, options=opts)
    fn = list(env.unwrapped.feature_names)
    z = (obs - ctrl.stats["mean"]) / np.sqrt(ctrl.stats["var"] + float(ctrl.stats["epsilon"]))
    far = [{"feature": fn[i], "value": float(obs[i]), "z": float(z[i]), "train_min": float(lo[i]),
            "train_max": float(hi[i])} for i in np.argsort(-np.abs(z))[:top]]
    plain = run_episode(env, ctrl, opts, max_steps, seed=0, record=True)
    stats = ctrl.stats
    ctrl.stats = dict(stats, obs_min=lo, obs_max=hi)
    clipped = run_episode(env, ctrl, opts, max_steps, seed=0, record=True)
    ctrl.stats = stats
    space = env.unwrapped.costs.names

    def used(ep):
        c, n = np.unique(ep["series"]["config"].astype(int), return_counts=True)
        return {space[int(a)]: int(b) for a, b in sorted(zip(c, n, strict=True), key=lambda x: -x[1])}

    return {"run": str(run), "far": far, "return": plain["return"], "return_clipped": clipped["return"],
            "configs": used(plain), "configs_clipped": used(clipped), "steps": plain["steps"]}


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", nargs="+", required=True, help="run folders (a run or its warm_start)")
    ap.add_argument("--traces", required=True, help="the trace set folder the episode is in")
    ap.add_argument("--split", default="test", help="its split (default test)")
    ap.add_argument("--trace", required=True, help="the episode's trace name (as the reports name it)")
    ap.add_argument("--objective", default="max-quality", choices=OBJECTIVES)
    ap.add_argument("--start", type=int, default=0, help="the episode's first row (default 0)")
    ap.add_argument("--max-steps", type=int, default=720, help="episode length in steps (default 720)")
    ap.add_argument("--top", type=int, default=4, help="features listed per run (default 4)")
    ap.add_argument("--out", required=True, help="output path without suffix (OUT.md, OUT.json)")
    a = ap.parse_args(argv)
    if not Path(a.traces).is_dir():
        ap.error(f"--traces {a.traces}: no such trace set folder")
    for r in a.runs:
        if not (Path(r) / "config.json").exists():
            ap.error(f"--runs {r}: not a run folder (no config.json)")
    if a.max_steps < 1 or a.start < 0 or a.top < 1:
        ap.error("--max-steps and --top must be >= 1 and --start >= 0")
    res = [diagnose(Path(r), a.traces, a.split, a.trace, a.objective, a.start, a.max_steps, a.top)
           for r in a.runs]
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"date": time.strftime("%Y-%m-%d"), "traces": a.traces, "split": a.split, "trace": a.trace,
            "objective": a.objective, "start": a.start, "max_steps": a.max_steps}
    out.with_suffix(".json").write_text(json.dumps({**meta, "runs": res}, indent=1) + "\n")
    md = [f"# Inputs outside training on `{a.trace}` ({meta['date']})", "",
          f"{a.traces}, split {a.split}, objective {a.objective}, from row {a.start}, {a.max_steps} steps. Return "
          "as trained, and with every observation clipped to the run's demonstrations' range (a diagnosis of this "
          "episode, not a score). z: the first step's feature in the run's training standard deviations. Modelled "
          "energy. Generated by `benchmarks/unseen_inputs.py`.", "",
          "| run | furthest inputs at the first step (z) | return | clipped | configurations chosen (steps) |",
          "|---|---|---|---|---|"]
    for r in res:
        far = ", ".join(f"`{f['feature']}` {f['value']:.2f} ({f['z']:+.1f}; trained {f['train_min']:.2f}–"
                        f"{f['train_max']:.2f})" for f in r["far"])
        top = ", ".join(f"`{k}` {v}" for k, v in list(r["configs"].items())[:3])
        md.append(f"| `{r['run']}` | {far} | {r['return']:.1f} | {r['return_clipped']:.1f} | {top} |")
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return res


if __name__ == "__main__":
    main()
