"""How far outside its training inputs a run is on one held-out episode, and which inputs its choices there hang on.

A cross-validation fold can hold out the only unit of a device kind (fold 0 holds out the data's only laptop), so
its policies meet inputs their training never produced. For each run this reports, on the episode's first step,
the observation features furthest from the run's observation statistics in training standard deviations, both as
recorded and as the policy reads them (after the run's own clip to its training range, ``vecnormalize.npz``
``obs_min`` / ``obs_max``: ``train.py --clamp-obs``, implied by ``--obs-drop``), the configurations the run chooses
over the episode, and an attribution: the episode's return with one feature at a time held at its training mean for
the whole episode (features the run pins, ``--obs-drop``, stay pinned; the objective's own features, which held at
their mean ask for another objective, are not attributed). A choice that many single features flip is
a choice at a boundary, not one an outlying input forces. It is a diagnosis of one episode, not a score: choose the
episode because a report showed a loss there, and judge a fix by training with it and scoring the folds::

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
from runtime.observation import GOAL  # noqa: E402

OBJECTIVES = ("max-quality", "min-energy", "last-until")
#: the objective block (goal-conditioned policies): held at its mean it asks for another objective, so it is not
#: attributed
GOAL_FEATURES = frozenset(n for n, *_ in GOAL) | {"has_budget", "budget_left_frac", "has_deadline"}
#: a feature whose hold moves the return by more than this share of the return as trained is counted as one the
#: episode's choices hang on
MOVES = 0.05


def held_at_mean(stats: dict, i: int) -> dict:
    """``stats`` with feature ``i`` clipped to ``[mean, mean]`` (every other feature to the run's own range, or not at
    all where the run keeps none): the policy reads feature ``i`` as its training mean at every step."""
    n = len(stats["mean"])
    lo = np.array(stats["obs_min"], dtype=np.float64) if "obs_min" in stats else np.full(n, -np.inf)
    hi = np.array(stats["obs_max"], dtype=np.float64) if "obs_max" in stats else np.full(n, np.inf)
    lo[i] = hi[i] = float(stats["mean"][i])
    return dict(stats, obs_min=lo, obs_max=hi)


def diagnose(run: Path, traces: str, split: str, trace: str, objective: str, start: int, max_steps: int,
             top: int) -> dict:
    ctrl = load_controller(run)
    stats = ctrl.stats
    if stats is None or not bool(stats["norm_obs"]):
        raise SystemExit(f"{run}: no observation statistics (vecnormalize.npz); the diagnosis reads features in "
                         "training standard deviations")
    env = env_from_config(load_config(run), traces=traces, split=split)
    names = [t.name for t in env.unwrapped.traces]
    if trace not in names:
        raise SystemExit(f"--trace {trace}: not in {traces} split {split}; its traces: {', '.join(names[:8])}...")
    opts = {"trace": names.index(trace), "start": start, "objective": objective}
    obs, _ = env.reset(seed=0, options=opts)
    fn = list(env.unwrapped.feature_names)
    lo, hi = stats.get("obs_min"), stats.get("obs_max")
    pinned = np.zeros(len(fn), bool) if lo is None else (np.asarray(lo) == np.asarray(hi))
    read = obs if lo is None else np.clip(obs, lo, hi)
    sd = np.sqrt(stats["var"] + float(stats["epsilon"]))
    z, z_read = (obs - stats["mean"]) / sd, (read - stats["mean"]) / sd
    order = [i for i in np.argsort(-np.abs(z)) if not pinned[i]][:top]
    far = [{"feature": fn[i], "value": float(obs[i]), "z": float(z[i]), "read": float(read[i]),
            "z_read": float(z_read[i]),
            "train_min": None if lo is None else float(lo[i]), "train_max": None if hi is None else float(hi[i])}
           for i in order]
    space = env.unwrapped.costs.names

    def used(ep):
        c, n = np.unique(ep["series"]["config"].astype(int), return_counts=True)
        return {space[int(a)]: int(b) for a, b in sorted(zip(c, n, strict=True), key=lambda x: -x[1])}

    plain = run_episode(env, ctrl, opts, max_steps, seed=0, record=True)
    held = []
    for i in np.flatnonzero(~pinned):
        if fn[i] in GOAL_FEATURES:
            continue
        ctrl.stats = held_at_mean(stats, int(i))
        ep = run_episode(env, ctrl, opts, max_steps, seed=0, record=True)
        held.append({"feature": fn[i], "return": ep["return"], "delta": ep["return"] - plain["return"],
                     "top_config": next(iter(used(ep)))})
    ctrl.stats = stats
    held.sort(key=lambda h: -h["delta"])
    scale = max(abs(plain["return"]), 1e-9)
    return {"run": str(run), "far": far, "return": plain["return"], "configs": used(plain), "steps": plain["steps"],
            "held": held, "moves": sum(abs(h["delta"]) > MOVES * scale for h in held),
            "raise": sum(h["delta"] > MOVES * scale for h in held), "features": len(held)}


def _fmt_far(f: dict) -> str:
    s = f"`{f['feature']}` {f['value']:.2f} ({f['z']:+.1f}"
    if f["train_min"] is not None and f["read"] != f["value"]:
        s += f"; read as {f['read']:.2f}, {f['z_read']:+.1f}"
    return s + ")"


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
            "objective": a.objective, "start": a.start, "max_steps": a.max_steps, "moves": MOVES}
    out.with_suffix(".json").write_text(json.dumps({**meta, "runs": res}, indent=1) + "\n")
    md = [f"# Inputs outside training on `{a.trace}` ({meta['date']})", "",
          f"{a.traces}, split {a.split}, objective {a.objective}, from row {a.start}, {a.max_steps} steps. "
          "Furthest inputs: the first step's features in the run's training standard deviations (z), as recorded "
          "and, where the run clips them to its training range, as the policy reads them. Held at the mean: the "
          "episode's return with one feature at a time held at its training mean for the whole episode (pinned "
          "features stay pinned, the objective's features are not held); \"hang on\": the features whose hold "
          "alone moves the return by more than "
          f"{MOVES:.0%} (raising it: +). A diagnosis of one episode, not a score. Modelled energy. Generated by "
          "`benchmarks/unseen_inputs.py`.", "",
          "| run | furthest inputs at the first step (z) | return | configurations chosen (steps) | hang on (+) "
          "| held at the mean: largest rises | largest falls |",
          "|---|---|---|---|---|---|---|"]
    for r in res:
        far = ", ".join(_fmt_far(f) for f in r["far"])
        top = ", ".join(f"`{k}` {v}" for k, v in list(r["configs"].items())[:3])
        up = ", ".join(f"`{h['feature']}` {h['delta']:+.1f}" for h in r["held"][:3])
        down = ", ".join(f"`{h['feature']}` {h['delta']:+.1f}" for h in r["held"][::-1][:2])
        md.append(f"| `{r['run']}` | {far} | {r['return']:.1f} | {top} | {r['moves']} of {r['features']} "
                  f"({r['raise']}) | {up} | {down} |")
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return res


if __name__ == "__main__":
    main()
