"""Which observation features drive a policy on traces unlike its training data?

    python benchmarks/feature_ablation.py --run RUN [--run ...] --traces FOLD [--split test] --match thinkpad
                                          [--report EVAL/report.json] [--max-steps 720]
                                          [--out benchmarks/results/feature_ablation.md]

Each ``--run`` (a train.py run folder, or its ``warm_start``) is scored on the episodes of ``--split`` whose trace
name contains ``--match`` (every trace from row 0, as ``agents.evaluate`` scores them): as trained, then with one
raw feature at a time — and a few groups — replaced by its training mean (the run's ``vecnormalize.npz`` mean)
before the policy reads it. A feature whose replacement moves the return a lot is one the policy acts on there; on a
device kind it never saw, that is where its inputs lie outside training. ``--report`` (an ``agents.evaluate`` report
on the same split) adds the oracle's and the random policy's returns on the same episodes. Also written: each
feature's largest |z| on those episodes under the run's statistics (how far outside training it reads), and for a
warm start (``demos.npz`` beside it) the return with every input clipped to the demonstrations' range
(``train.py --clamp-obs`` applied after the fact).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

#: groups replaced together (each also alone)
GROUPS = (("temp_c", "ambient_c"), ("power_w", "affordable_power_w"))


class _Seen:
    """A controller that reads ``fn(observation)`` instead of the observation (``fn`` may also record it)."""

    def __init__(self, ctrl, fn) -> None:
        self.ctrl, self.fn, self.uses_masks = ctrl, fn, getattr(ctrl, "uses_masks", False)

    def predict(self, obs, **kw):
        return self.ctrl.predict(self.fn(np.array(obs, dtype=np.float32, copy=True)), **kw)


def _held_at(idx: list[int], mean: np.ndarray):
    """``fn`` for :class:`_Seen`: features ``idx`` replaced by their training ``mean``."""
    def fn(o: np.ndarray) -> np.ndarray:
        o[..., idx] = mean[idx]
        return o
    return fn


def ablate(run: Path, traces: str, split: str, match: str, max_steps: int) -> dict:
    from agents.evaluate import run_episode
    from agents.run_io import env_from_config, load_config, load_controller

    cfg = load_config(run)
    env = env_from_config(cfg, split=split, random_start=False, traces=traces)
    ctrl = load_controller(run)
    if ctrl.stats is None:
        raise SystemExit(f"{run}: no vecnormalize.npz, so no training mean to hold features at")
    names, mean = list(cfg["obs_features"]), np.asarray(ctrl.stats["mean"], np.float32)
    idx = [k for k, t in enumerate(env.unwrapped.traces) if match in t.name]
    if not idx:
        raise SystemExit(f"no {split} trace of {traces} has {match!r} in its name")

    def total(c) -> float:
        return float(sum(run_episode(env, c, {"trace": k, "start": 0}, max_steps)["return"] for k in idx))

    seen: list[np.ndarray] = []  # the raw observations the policy reads as trained, for the |z| table
    rows = {"as trained": total(_Seen(ctrl, lambda o: seen.append(o.copy()) or o))}
    st = ctrl.stats
    z = (np.stack(seen).reshape(-1, len(names)) - st["mean"]) / np.sqrt(st["var"] + float(st["epsilon"]))
    for k, n in enumerate(names):
        rows[n] = total(_Seen(ctrl, _held_at([k], mean)))
    for g in GROUPS:
        if all(n in names for n in g):
            rows[" + ".join(g)] = total(_Seen(ctrl, _held_at([names.index(n) for n in g], mean)))
    demos = run / "demos.npz"
    if demos.exists():  # a warm start: every input clipped to the range of the demonstrations it was fitted on
        with np.load(demos, allow_pickle=False) as d:
            lo, hi = d["obs"].min(axis=0), d["obs"].max(axis=0)
        rows["(all clipped to the demonstrations' range)"] = total(_Seen(ctrl, lambda o: np.clip(o, lo, hi)))
    return {"run": str(run), "episodes": [env.unwrapped.traces[k].name for k in idx], "returns": rows,
            "max_abs_z": {n: float(np.abs(z[:, k]).max()) for k, n in enumerate(names)}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", action="append", required=True, help="run folder (repeatable)")
    ap.add_argument("--traces", required=True, help="trace-set folder (e.g. a cross-validation fold)")
    ap.add_argument("--split", default="test", choices=("train", "val", "test"))
    ap.add_argument("--match", required=True, help="substring of the trace names to score (e.g. thinkpad)")
    ap.add_argument("--report", default=None, help="agents.evaluate report.json on the same split: oracle/random")
    ap.add_argument("--max-steps", type=int, default=720)
    ap.add_argument("--out", default="benchmarks/results/feature_ablation.md")
    a = ap.parse_args(argv)
    res = [ablate(Path(r), a.traces, a.split, a.match, a.max_steps) for r in a.run]
    ref = {}
    if a.report:
        rep = json.loads(Path(a.report).read_text())
        sel = [i for i, e in enumerate(rep["episodes"]) if a.match in e["trace_name"]]
        for name in ("oracle", "random"):
            if name in rep["per_episode"]:
                ref[name] = float(sum(rep["per_episode"][name][i]["return"] for i in sel))
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"# Feature ablation on the `{a.match}` traces ({date.today().isoformat()})", "",
             f"`python benchmarks/feature_ablation.py {' '.join('--run ' + r for r in a.run)} --traces {a.traces} "
             f"--split {a.split} --match {a.match}" + (f" --report {a.report}" if a.report else "") + "`", "",
             f"{len(res[0]['episodes'])} episodes (every `{a.match}` trace of the {a.split} split from row 0, "
             f"{a.max_steps} steps at most). Total return with each feature held at the run's training mean."
             + (" Oracle: " + ", ".join(f"{k} {v:.1f}" for k, v in ref.items()) + "." if ref else ""), ""]
    lines += ["| feature held at its mean | " + " | ".join(f"run {i + 1} return" for i in range(len(res)))
              + " | " + " | ".join(f"run {i + 1} max abs z" for i in range(len(res))) + " |",
              "|---|" + "---|" * (2 * len(res))]
    for key in res[0]["returns"]:
        z = [f"{r['max_abs_z'][key]:.1f}" if key in r["max_abs_z"] else "" for r in res]
        lines.append(f"| {key} | " + " | ".join(f"{r['returns'][key]:.1f}" for r in res) + " | " + " | ".join(z) + " |")
    lines += ["", "Runs: " + "; ".join(f"{i + 1}: `{r['run']}`" for i, r in enumerate(res)), ""]
    out.write_text("\n".join(lines))
    out.with_suffix(".json").write_text(json.dumps({"runs": res, "reference": ref}, indent=1))
    print(f"wrote {out} and {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
