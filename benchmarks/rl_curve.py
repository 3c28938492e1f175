"""How does the test score move as the RL step trains? Every checkpoint of the main job's seeds, scored on test.

    python benchmarks/rl_curve.py --results benchmarks/results/main_job_amd_avx2 \
        --out benchmarks/results/rl_curve/rl_curve [--workers 2] [--work DIR] [--force]

``--results`` is a ``benchmarks/main_job_seeds.py`` output folder of a warm-started recipe (its
``main_job_seeds.json`` and run folders, each with ``warm_start/`` and ``checkpoints/``). ``train.py`` keeps the
checkpoint with the best val return and reports only its test score; this scores them all, plus the warm start
(step 0), with the main job's own evaluation (``agents.evaluate``, the same split, episodes and oracle grid), so a
reader sees whether any length of the RL step helps on test, and how val's choice sits on the curve.

Each checkpoint is turned into a run folder of its own (the run's ``config.json``, the checkpoint's policy weights
read with ``weights_only=True`` from SB3's zip, its observation statistics ``model_vecnormalize_<steps>_steps.npz``)
under ``--work`` (a temporary folder unless given). The checkpoint val kept must score what ``main_job_seeds.py``
measured for the run; that is checked, not assumed. Test scores here are for reading, not for choosing: a length
picked on them would be tuned to the test split.

Writes ``OUT.md``, ``OUT.json`` and ``OUT.png`` (per seed the test score and the val return per step).
"""

from __future__ import annotations

import argparse
import io
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

CKPT = re.compile(r"model_(\d+)_steps\.zip")


def checkpoint_views(run: Path, work: Path) -> dict[int, Path]:
    """One run folder per checkpoint of ``run`` (step -> folder), step 0 being ``run/warm_start``."""
    import torch

    cfg = json.loads((run / "config.json").read_text())
    views = {0: run / "warm_start"}
    for z in sorted((run / "checkpoints").glob("model_*_steps.zip")):
        m = CKPT.fullmatch(z.name)
        if m is None:
            continue
        step = int(m.group(1))
        stats = run / "checkpoints" / f"model_vecnormalize_{step}_steps.npz"
        if not stats.exists():
            raise SystemExit(f"{z}: no {stats.name} beside it; this checkpoint's observation statistics are lost, so "
                             f"it cannot be scored as it was trained")
        with zipfile.ZipFile(z) as fh:
            state = torch.load(io.BytesIO(fh.read("policy.pth")), weights_only=True, map_location="cpu")
        v = work / f"{run.name}@{step}"
        v.mkdir(parents=True, exist_ok=True)
        torch.save(state, v / "policy_state.pt")
        shutil.copyfile(stats, v / "vecnormalize.npz")
        (v / "config.json").write_text(json.dumps({**cfg, "selected": {"from": "checkpoint", "step": step}}))
        views[step] = v
    if len(views) == 1:
        raise SystemExit(f"{run}/checkpoints: no model_<steps>_steps.zip; train.py writes them every --eval-freq "
                         f"steps")
    if not (views[0] / "config.json").exists():
        raise SystemExit(f"{run}: no warm_start/ run folder; this compares an RL step with its warm start (train.py "
                         f"--bc-expert)")
    return views


def main(argv: list[str] | None = None) -> int:
    import numpy as np

    from agents.evaluate import run_label

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--results", required=True, help="a benchmarks/main_job_seeds.py output folder")
    ap.add_argument("--out", required=True, help="output path without suffix (writes .md, .json, .png)")
    ap.add_argument("--work", default=None, help="folder for the checkpoints' run folders and the evaluation "
                    "(default: a temporary one, removed at the end)")
    ap.add_argument("--workers", type=int, default=1, help="agents.evaluate --workers")
    ap.add_argument("--force", action="store_true", help="replace OUT.md/.json/.png if they exist")
    a = ap.parse_args(argv)
    folder = Path(a.results)
    try:
        res = json.loads((folder / "main_job_seeds.json").read_text())
    except (OSError, ValueError) as exc:
        ap.error(f"--results {folder}: {exc} (run benchmarks/main_job_seeds.py --out {folder} first)")
    out = Path(a.out)
    written = [out.with_suffix(s) for s in (".md", ".json", ".png")]
    if not a.force and any(p.exists() for p in written):
        ap.error(f"--out {out}: {', '.join(str(p) for p in written if p.exists())} exist; pass --force or choose "
                 f"another")
    tmp = tempfile.TemporaryDirectory(prefix="rl_curve-") if a.work is None else None
    work = Path(a.work or tmp.name)
    seeds = {}
    for row in res["seeds"]:
        run = Path(row["run"])
        run = run if run.is_absolute() else REPO / run
        cfg = json.loads((run / "config.json").read_text())
        ev = np.load(run / "eval" / "evaluations.npz", allow_pickle=False)
        val = {int(t): float(v) for t, v in zip(ev["timesteps"], ev["results"].mean(axis=1))}
        seeds[int(row["seed"])] = {"run": str(row["run"]), "views": checkpoint_views(run, work / "views"),
                                   "kept_step": int((cfg.get("selected") or {}).get("step", -1)),
                                   "recorded_score": row["score"],
                                   "val": val,
                                   "val_warm_start": float((cfg.get("warm_start") or {}).get("val_return", "nan"))}
    traces = [] if res.get("traces") in (None, "default") else ["--traces", res["traces"]]
    cmd = [sys.executable, "-m", "agents.evaluate", *traces, "--split", "test", "--out", str(work / "eval"),
           "--oracle-grid", res["oracle_grid"], "--workers", str(a.workers), "--no-progress", "--force"]
    for s in seeds.values():
        for v in s["views"].values():
            cmd += ["--run", str(v)]
    t0 = time.time()
    print(f"scoring {sum(len(s['views']) for s in seeds.values())} policies on the test split ...", flush=True)
    subprocess.run(cmd, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    rep = json.loads((work / "eval" / "report.json").read_text())
    pol = rep["policies"]
    bar_name, bar = res["best_heuristic"], pol[res["best_heuristic"]]["score"]
    for s, x in seeds.items():
        x["test"] = {}
        for step, v in sorted(x["views"].items()):
            name = next(n for n in pol if n.endswith(f":{run_label(v)}"))
            x["test"][step] = pol[name]["score"]
        kept = x["test"].get(x["kept_step"])
        if kept is None or abs(kept - x["recorded_score"]) > 1e-9:
            raise SystemExit(f"seed {s}: the checkpoint val kept (step {x['kept_step']}) scores {kept} here and "
                             f"{x['recorded_score']} in {folder}/main_job_seeds.json; the evaluation differs (host, "
                             f"library or trace set), so the curve would not be the one val chose from")
        del x["views"]
    steps = sorted(set.intersection(*(set(x["test"]) for x in seeds.values())))
    per_step = {}
    for step in steps:
        sc = [x["test"][step] for x in seeds.values()]
        ws = [x["test"][0] for x in seeds.values()]
        per_step[step] = {"mean": float(np.mean(sc)), "over_warm_start": float(np.mean(sc) - np.mean(ws)),
                          "beats": sum(v > bar for v in sc), "of": len(sc)}
    date = time.strftime("%Y-%m-%d")
    payload = {"date": date, "results": str(folder), "traces": res.get("traces"), "oracle_grid": res["oracle_grid"],
               "best_heuristic": [bar_name, bar], "episodes": len(rep["episodes"]), "wall_s": time.time() - t0,
               "seeds": {str(s): {**x, "test": {str(k): v for k, v in x["test"].items()},
                                  "val": {str(k): v for k, v in x["val"].items()}} for s, x in seeds.items()},
               "per_step": {str(k): v for k, v in per_step.items()}}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(payload, indent=1))
    names = sorted(seeds)
    md = [f"# The test score along the RL step ({date})", "",
          f"Every checkpoint of the seeds in `{folder}` (trace set `{res.get('traces') or 'default'}`), scored on its "
          f"test split by the main job's evaluation ({len(rep['episodes'])} episodes, oracle grid "
          f"{res['oracle_grid']}); step 0 is the warm start. Oracle-normalised score; the best heuristic is "
          f"{bar_name} ({bar:.3f}). In brackets the mean val return train.py recorded; **bold** the checkpoint val "
          f"kept. Energy is modelled. For reading, not for choosing a length: that would tune it to the test "
          f"split. Generated by "
          f"`benchmarks/rl_curve.py`.", "",
          "| step | " + " | ".join(f"seed {s}" for s in names)
          + " | mean | over the warm start | above every heuristic |",
          "|---|" + "---|" * (len(names) + 3)]
    for step in steps:
        cells = []
        for s in names:
            x = seeds[s]
            val = x["val_warm_start"] if step == 0 else x["val"].get(step, float("nan"))
            c = f"{x['test'][step]:.3f} ({val:.2f})"
            cells.append(f"**{c}**" if step == x["kept_step"] else c)
        p = per_step[step]
        md.append(f"| {step:,} | " + " | ".join(cells) + f" | {p['mean']:.3f} | {p['over_warm_start']:+.3f} | "
                  f"{p['beats']} of {p['of']} |")
    md += ["", f"![test score along the RL step]({out.with_suffix('.png').name})", ""]
    out.with_suffix(".md").write_text("\n".join(md))
    plot(seeds, bar_name, bar, out.with_suffix(".png"))
    print("\n".join(md))
    if tmp is not None:
        tmp.cleanup()
    return 0


def plot(seeds: dict, bar_name: str, bar: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(seeds), figsize=(4.2 * len(seeds), 3.4), squeeze=False, sharey=True)
    for ax, (s, x) in zip(axes[0], sorted(seeds.items())):
        steps = sorted(x["test"])
        ax.plot([t / 1e6 for t in steps], [x["test"][t] for t in steps], "o-", ms=3, label="test score")
        ax.axhline(bar, color="grey", ls="--", lw=1, label=f"{bar_name} (best heuristic)")
        if x["kept_step"] in x["test"]:
            ax.plot([x["kept_step"] / 1e6], [x["test"][x["kept_step"]]], "r*", ms=10, label="kept by val")
        ax.set_title(f"seed {s}")
        ax.set_xlabel("RL steps (M); 0 = warm start")
        tw = ax.twinx()
        vs = sorted(x["val"])
        tw.plot([0] + [t / 1e6 for t in vs], [x["val_warm_start"]] + [x["val"][t] for t in vs], "s:", ms=2,
                color="tab:green", alpha=0.7, label="val return")
        tw.tick_params(axis="y", colors="tab:green")
        if s == min(seeds):
            ax.set_ylabel("test score (oracle-normalised)")
            h1, l1 = ax.get_legend_handles_labels()
            h2, l2 = tw.get_legend_handles_labels()
            ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
