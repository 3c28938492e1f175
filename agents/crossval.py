"""Cross-validation by unit: train on k−1 groups of users and stations, score on the held-out group.

::

    python -m agents.crossval --traces data/real --k 4 --seeds 1,2,3 --out runs/cv-real --jobs 2
    python -m agents.crossval ... --resume          # finish an interrupted cross-validation
    python -m agents.crossval ... -- --env.lookahead 12   # anything after -- goes to every train.py
    python -m agents.crossval ... --folds 1       # only fold 1 (an ablation on the fold that fails)
    python -m agents.crossval ... --resume --foresight-free   # count the deaths oracle-blind avoids too

Steps (each a subprocess, ``--jobs`` at a time; logs in ``OUT/logs/``):

1. **Folds** (``traces.folds``): ``OUT/folds/fold-i``; fold i tests unit group i, selects on group i+1.
2. **Train**, per fold and seed, the recipe of ``--recipe`` (default ``dagger+ppo``):
   ``train.py --bc-expert oracle --bc-oracle-grid G --bc-episodes E --dagger-rounds 1 --dagger-episodes D
   --total-timesteps T --learning-rate LR --no-final-eval`` — an oracle-distilled warm start, then
   MaskablePPO fine-tuning with best-on-val selection. The first seed of a fold collects the oracle's
   demonstrations; the other seeds reuse them (``--bc-demos``) and add a DAgger round of their own.
   ``--expert oracle-masked`` distils the oracle held to the action masks instead, ``--expert
   oracle-charger-blind`` the oracle without foresight of chargers, ``--expert oracle-hazard`` the foresight-free
   oracle weighing the chance that a session ends, at the training units' rate. ``--recipe ppo`` trains from
   scratch (``--bc-expert none``). Every other ``train.py`` option is its default (since 2026-12-04 the main
   job's randomisation, randomised demonstrations and observation; docs/CHANGELOG.md) unless given after ``--``.
3. **Evaluate**, per fold, every seed's final policy *and* its warm start alone (so the RL step is measured,
   not assumed) with every heuristic and the oracle on the same held-out episodes
   (``agents.evaluate --run ... --oracle-grid G``, or ``--score-oracle-grid``'s): ``OUT/eval/fold-i/report.*``.
4. **Report**: ``OUT/crossval.md/.json/.csv/.png``: per fold, the oracle-normalised score of each seed, the
   warm start, every heuristic; mean and worst fold; whether the policy beats every heuristic in every
   fold; battery deaths the oracle avoids. Targets (issue 16): mean ≥ 0.95, worst fold ≥ 0.93.
   With ``--foresight-free`` every fold also scores ``oracle-blind`` (``agents.oracle.ForesightFreeOracle``: no
   foresight of chargers or of the session's end) and the report counts the deaths *it* avoids, the ones control
   would have avoided, beside those the oracle avoids (docs/agents.md, "Deaths that control would avoid").
   ``--resume --foresight-free`` on a finished folder re-scores its folds without training; each earlier fold
   report is kept, renamed ``eval/fold-i.without-blind``.

``--resume`` finishes a folder with the training options it was started with (``OUT/args.json``): with nothing
after ``--`` it reuses the recorded ``train.py`` arguments, and a training option that differs from the record is
refused, naming the recorded value.

Nothing is overwritten: a finished step (a run folder with ``config.json``, a fold's ``report.json``) is kept and
skipped with ``--resume``; without it an existing ``OUT`` is refused.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

TARGET_MEAN, TARGET_WORST = 0.95, 0.93


@dataclass
class Job:
    """One subprocess: its command, log file, the jobs it waits for and how to tell it already finished."""

    name: str
    argv: list[str]
    log: Path
    after: list[str] = field(default_factory=list)
    done_if: Any = None  # () -> bool
    extra: Any = None  # () -> list[str], arguments known only once ``after`` finished


def completed_run(runs_dir: Path) -> Path | None:
    """The newest finished train.py run folder under ``runs_dir`` (config.json with train_wall_s)."""
    best = None
    for cfg in sorted(runs_dir.glob("*/config.json")):
        try:
            if "train_wall_s" in json.loads(cfg.read_text()):
                best = cfg.parent
        except (OSError, ValueError):
            continue
    return best


def plan(a: argparse.Namespace, train_extra: list[str]) -> list[Job]:
    """The jobs of one cross-validation (folds are built before, in-process)."""
    from agents.registry import ORACLE_BLIND

    out = Path(a.out)
    py = sys.executable
    jobs: list[Job] = []
    for i in a.folds:
        fold = out / "folds" / f"fold-{i}"
        seed_jobs = []
        for j, seed in enumerate(a.seeds):
            runs_dir = out / "runs" / f"fold-{i}" / f"seed-{seed}"
            argv = [py, "train.py", "--traces", str(fold), "--seed", str(seed), "--runs-dir", str(runs_dir),
                    "--exp-name", f"cv{a.k}-fold{i}", "--total-timesteps", f"{a.total_timesteps:g}",
                    "--no-final-eval", "--no-progress", "--threads", "1"]
            if a.learning_rate > 0:
                argv += ["--learning-rate", f"{a.learning_rate:g}"]
            first = f"train fold {i} seed {a.seeds[0]}"
            extra = None
            if a.recipe == "dagger+ppo":
                argv += ["--bc-expert", a.expert, "--bc-oracle-grid", a.oracle_grid, "--dagger-rounds", "1",
                         "--dagger-episodes", str(a.dagger_episodes), "--bc-episodes", str(a.bc_episodes)]
                if j > 0:
                    first_dir = out / "runs" / f"fold-{i}" / f"seed-{a.seeds[0]}"

                    def extra(first_dir=first_dir):
                        run = completed_run(first_dir)
                        return ["--bc-demos", str(run / "warm_start" / "demos.npz")] if run else []
            else:  # from scratch (train.py's default is a warm start)
                argv += ["--bc-expert", "none"]
            name = f"train fold {i} seed {seed}"
            jobs.append(Job(name, argv + train_extra, out / "logs" / f"train-fold{i}-seed{seed}.log",
                            after=[first] if (j > 0 and a.recipe == "dagger+ppo") else [],
                            done_if=lambda d=runs_dir: completed_run(d) is not None, extra=extra))
            seed_jobs.append(name)
        ev = out / "eval" / f"fold-{i}"

        def eval_extra(i=i):
            argv = []
            for seed in a.seeds:
                run = completed_run(out / "runs" / f"fold-{i}" / f"seed-{seed}")
                if run is None:
                    continue
                argv += ["--run", str(run)]
                if (run / "warm_start" / "config.json").exists():
                    argv += ["--run", str(run / "warm_start")]
            return argv

        jobs.append(Job(f"evaluate fold {i}",
                        [py, "-m", "agents.evaluate", "--traces", str(fold), "--split", "test", "--out", str(ev),
                         "--oracle-grid", score_grid(a), "--max-steps", str(a.max_steps), "--no-progress",
                         "--force"] + (["--also", ORACLE_BLIND] if a.foresight_free else []),
                        out / "logs" / f"eval-fold{i}.log", after=seed_jobs,
                        done_if=lambda i=i: (out / "eval" / f"fold-{i}" / "report.json").exists()
                        and stale_report(out, i, a) is None, extra=eval_extra))
    return jobs


def score_grid(a: argparse.Namespace) -> str:
    """The oracle grid the folds are scored with: ``--score-oracle-grid``, else ``--oracle-grid``."""
    g = getattr(a, "score_oracle_grid", None) or a.oracle_grid
    return ",".join(str(int(x)) for x in g.split(","))


def stale_report(out: Path, i: int, a: argparse.Namespace) -> tuple[str, str] | None:
    """Why fold ``i``'s report does not score what this command asks, as (the name to keep it under, why), or None
    when it does or there is none: it lacks ``oracle-blind`` (``--foresight-free``), was scored on another oracle
    grid (``--score-oracle-grid``), or lacks a seed of ``--seeds`` (trained or not yet): the fold is scored again."""
    from agents.registry import ORACLE_BLIND

    try:
        rep = json.loads((out / "eval" / f"fold-{i}" / "report.json").read_text())
    except (OSError, ValueError):
        return None
    meta = rep.get("meta") or {}
    if a.foresight_free and ORACLE_BLIND not in (rep.get("policies") or {}):
        return f"fold-{i}.without-blind", "without oracle-blind"
    try:
        had = ",".join(str(int(x)) for x in meta["oracle_grid"])
    except (KeyError, TypeError, ValueError):
        had = "unknown"
    if had != score_grid(a):
        return f"fold-{i}.grid-{had.replace(',', 'x')}", f"on the oracle grid {had}, not {score_grid(a)}"
    scored = meta.get("run") or []
    scored = {Path(r).name for r in ([scored] if isinstance(scored, str) else scored)}
    missing = [seed for seed in a.seeds if (run := completed_run(out / "runs" / f"fold-{i}" / f"seed-{seed}")) is None
               or run.name not in scored]
    if missing:
        had = "-".join(str(s) for s in a.seeds if s not in missing) or "none"
        return f"fold-{i}.seeds-{had}", "without every seed of --seeds"
    return None


def keep_stale_reports(out: Path, a: argparse.Namespace) -> list[tuple[Path, str]]:
    """Before the folds of ``a.folds`` are scored again (``stale_report``): each stale report is renamed
    ``eval/fold-i.<why>`` (``-2``, ``-3`` … if taken), so that nothing is overwritten. The renamed folders and why."""
    kept = []
    for i in a.folds:
        stale = stale_report(out, i, a)
        if stale is not None:
            kept.append((_keep_as(out / "eval" / f"fold-{i}", stale[0]), stale[1]))
    return kept


def _keep_as(ev: Path, name: str) -> Path:
    """Renames the fold's evaluation folder ``ev`` to ``name`` (``name-2``, ``-3`` … if taken); the new path."""
    dest, n = ev.with_name(name), 1
    while dest.exists():
        n += 1
        dest = ev.with_name(f"{name}-{n}")
    ev.rename(dest)
    return dest


def run_jobs(jobs: list[Job], n_parallel: int, progress: bool = True, desc: str = "cross-validation") -> dict[str, int]:
    """Runs the jobs, ``n_parallel`` at a time, each after the ones it waits for; returns name → exit code
    (0 for one already finished). A failed job's dependants are not started."""
    from tqdm import tqdm

    rc: dict[str, int] = {}
    for j in jobs:
        if j.done_if is not None and j.done_if():
            rc[j.name] = 0
    todo = [j for j in jobs if j.name not in rc]
    running: dict[str, tuple[subprocess.Popen, Any]] = {}
    bar = tqdm(total=len(jobs), initial=len(rc), desc=desc, unit="job", disable=not progress)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    while todo or running:
        for j in list(todo):
            if len(running) >= n_parallel:
                break
            if any(rc.get(d, None) not in (0,) for d in j.after):
                if any(rc.get(d, 0) != 0 for d in j.after if d in rc):
                    rc[j.name] = -1  # a job it waits for failed
                    todo.remove(j)
                    bar.update(1)
                continue
            argv = j.argv + (j.extra() if j.extra else [])
            j.log.parent.mkdir(parents=True, exist_ok=True)
            fh = open(j.log, "a")
            fh.write(f"\n$ {' '.join(argv)}\n")
            fh.flush()
            running[j.name] = (subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, env=env), fh)
            todo.remove(j)
            bar.set_postfix_str(", ".join(running))
        time.sleep(1.0)
        for name, (p, fh) in list(running.items()):
            if p.poll() is not None:
                fh.close()
                rc[name] = p.returncode
                del running[name]
                bar.update(1)
                if p.returncode:
                    bar.write(f"{name}: failed (exit {p.returncode}); see its log")
    bar.close()
    return rc


# --- report -------------------------------------------------------------------------------------------
def collect(out: Path, k: int, seeds: list[int]) -> dict[str, Any]:
    """Per-fold scores from ``OUT/eval/fold-i/report.json``: the policy per seed, its warm start, each heuristic."""
    from agents.registry import ORACLE_BLIND, REFERENCES

    folds = []
    for i in range(k):
        rep_path = out / "eval" / f"fold-{i}" / "report.json"
        if not rep_path.exists():
            continue
        rep = json.loads(rep_path.read_text())
        pol = rep["policies"]
        cv = json.loads((out / "folds" / f"fold-{i}" / "manifest.json").read_text())["info"]["cv"]
        row: dict[str, Any] = {"fold": i, "test_units": cv["test_units"], "episodes": len(rep["episodes"]),
                               "rl": {}, "warm_start": {}, "heuristics": {}, "deaths_not_oracle": {},
                               "warm_start_deaths_not_oracle": {}, "val_keeps_warm_start": {}}
        if ORACLE_BLIND in pol:  # --foresight-free: the deaths control would have avoided
            row["deaths_not_blind"] = {}
            row["oracle_blind"] = pol[ORACLE_BLIND]["score"]
        for seed in seeds:
            run = completed_run(out / "runs" / f"fold-{i}" / f"seed-{seed}")
            if run is None:
                continue
            lone = Path(str(rep.get("meta", {}).get("run") or "")).name == run.name  # one --run: named "rl:<algo>"
            for name, m in pol.items():
                if name.endswith(f":{run.name}") or (lone and name.startswith("rl:") and name.count(":") == 1):
                    row["rl"][seed] = m["score"]
                    row["deaths_not_oracle"][seed] = m["deaths_not_oracle"]
                    if "deaths_not_blind" in row:
                        row["deaths_not_blind"][seed] = m["deaths_not_blind"]
                elif name.endswith(f":{run.name}/warm_start"):
                    row["warm_start"][seed] = m["score"]
                    row["warm_start_deaths_not_oracle"][seed] = m["deaths_not_oracle"]
            keeps = val_keeps_warm_start(run)
            if keeps is not None:
                row["val_keeps_warm_start"][seed] = keeps
        for name, m in pol.items():
            if not name.startswith("rl:") and name not in REFERENCES:
                row["heuristics"][name] = m["score"]
        h = row["heuristics"]
        row["best_heuristic"] = max(h, key=lambda n: h[n]) if h else None
        folds.append(row)
    return {"k": k, "seeds": seeds, "folds": folds, **summarise(folds, seeds, k)}


def val_keeps_warm_start(run: Path) -> bool | None:
    """Whether model selection on val keeps the run's warm start over every RL checkpoint, as ``train.py
    --select-warm-start`` does: no checkpoint's val return above the warm start's (SB3's evaluation keeps a new
    best only when it is strictly better). Read from the run's ``config.json``; None when it has no warm start or
    no selection record. The RL step trains the same with or without the option, so this says exactly which
    policy the option would have kept."""
    try:
        cfg = json.loads((run / "config.json").read_text())
        ws, sel = cfg["warm_start"]["val_return"], cfg["selected"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return sel.get("from") == "warm start" or float(sel["val_return"]) <= float(ws)


def summarise(folds: list[dict], seeds: list[int], k: int | None = None) -> dict[str, Any]:
    """Mean and worst fold per seed and over seeds; the targets; beats-every-heuristic per fold. With fewer folds
    than ``k`` (``--folds``, or an unfinished run) the targets are not judged: ``targets`` is empty and
    ``partial`` says so."""
    if not folds:
        return {}
    rl = np.array([[f["rl"].get(s, math.nan) for s in seeds] for f in folds])  # fold x seed
    ws = np.array([[f["warm_start"].get(s, math.nan) for s in seeds] for f in folds])
    best_h = np.array([f["heuristics"][f["best_heuristic"]] if f["best_heuristic"] else math.nan for f in folds])
    per_fold = np.nanmean(rl, axis=1)
    beats = [bool(np.all(rl[i] > best_h[i])) for i in range(len(folds))]
    deaths = sum(int(v or 0) for f in folds for v in f["deaths_not_oracle"].values())
    blind = (sum(int(v or 0) for f in folds for v in f["deaths_not_blind"].values())
             if all("deaths_not_blind" in f for f in folds) else None)  # --foresight-free in every fold
    s = {
        "mean": float(np.nanmean(rl)), "worst_fold": float(np.nanmin(per_fold)),
        "per_seed_mean": [float(np.nanmean(rl[:, j])) for j in range(len(seeds))],
        "per_seed_worst_fold": [float(np.nanmin(rl[:, j])) for j in range(len(seeds))],
        "warm_start_mean": float(np.nanmean(ws)) if np.isfinite(ws).any() else None,
        "rl_minus_warm_start": float(np.nanmean(rl - ws)) if np.isfinite(ws).any() else None,
        "best_heuristic_mean": float(np.nanmean(best_h)),
        "beats_every_heuristic_every_fold_every_seed": all(beats), "beats_per_fold": beats,
        "deaths_the_oracle_avoids": deaths, "deaths_the_blind_oracle_avoids": blind,
        "oracle_blind_mean": float(np.mean([f["oracle_blind"] for f in folds])) if blind is not None else None,
    }
    # val's choice between each run's warm start and its RL step (train.py --select-warm-start), from the same runs
    keeps = [[f.get("val_keeps_warm_start", {}).get(s) for s in seeds] for f in folds]
    if all(v is not None for row in keeps for v in row) and np.isfinite(ws).all():
        pick = np.where(np.array(keeps, dtype=bool), ws, rl)
        pick_fold = np.nanmean(pick, axis=1)
        pick_deaths = sum(int((f["warm_start_deaths_not_oracle"] if keeps[i][j] else f["deaths_not_oracle"])
                              .get(seed) or 0) for i, f in enumerate(folds) for j, seed in enumerate(seeds))
        s["val_pick"] = {"mean": float(np.nanmean(pick)), "worst_fold": float(np.nanmin(pick_fold)),
                         "per_fold": [float(v) for v in pick_fold],
                         "beats_per_fold": [bool(np.all(pick[i] > best_h[i])) for i in range(len(folds))],
                         "warm_start_kept": int(np.sum(keeps)), "runs": int(np.size(pick)),
                         "deaths_the_oracle_avoids": pick_deaths}
    s["partial"] = k is not None and len(folds) < k
    s["targets"] = {} if s["partial"] else {
        "mean>=0.95": s["mean"] >= TARGET_MEAN, "worst_fold>=0.93": s["worst_fold"] >= TARGET_WORST,
        "above every heuristic in every fold": all(beats), "no death the oracle avoids": deaths == 0}
    # not one of the targets (the issue counts against the oracle): the same count against the foresight-free one
    s["no_death_the_blind_oracle_avoids"] = None if s["partial"] or blind is None else blind == 0
    return s


def write_report(res: dict[str, Any], out: Path, title: str) -> list[Path]:
    from runtime.safeio import atomic_write_text

    seeds = res["seeds"]
    folds = res["folds"]
    atomic_write_text(out / "crossval.json", json.dumps(res, indent=1, default=float))
    heur = sorted({h for f in folds for h in f["heuristics"]})
    cols = [f"seed {s}" for s in seeds] + [f"warm start {s}" for s in seeds] + heur
    lines = ["fold,test units,episodes," + ",".join(cols)]
    for f in folds:
        vals = ([f["rl"].get(s) for s in seeds] + [f["warm_start"].get(s) for s in seeds]
                + [f["heuristics"].get(h) for h in heur])
        lines.append(f"{f['fold']},{' '.join(f['test_units'])},{f['episodes']},"
                     + ",".join("" if v is None else f"{v:.4f}" for v in vals))
    atomic_write_text(out / "crossval.csv", "\n".join(lines) + "\n")

    def fmt(v):
        return "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.3f}"

    md = [f"# {title}", "",
          f"{res['k']} folds by unit (`traces.folds`), seeds {', '.join(map(str, seeds))}; score = "
          "(return − random) / (oracle − random) on each fold's held-out units (every trace from row 0).", ""]
    ra = res.get("args") or {}
    if ra:
        expert = f" (expert `{ra['expert']}`)" if ra.get("recipe") == "dagger+ppo" and ra.get("expert") else ""
        md += [f"Training: recipe `{ra.get('recipe')}`{expert}, {float(ra.get('total_timesteps', 0)):.3g} RL steps "
               f"at step size {float(ra.get('learning_rate', 0)):.3g}; further train.py arguments: "
               f"`{' '.join(res.get('train_extra') or []) or 'none'}`.", ""]
    md += ["| fold | held-out units | episodes | " + " | ".join(f"RL seed {s}" for s in seeds)
          + " | warm start (mean) | best heuristic | its score |",
          "|---|---|---|" + "---|" * len(seeds) + "---|---|---|"]
    for f in folds:
        wsv = [v for v in f["warm_start"].values() if v is not None]
        md.append(f"| {f['fold']} | {', '.join(u[:16] for u in f['test_units'])} | "
                  f"{f['episodes']} | " + " | ".join(fmt(f["rl"].get(s)) for s in seeds)
                  + f" | {fmt(float(np.mean(wsv)) if wsv else None)} | {f['best_heuristic']} | "
                  f"{fmt(f['heuristics'].get(f['best_heuristic']))} |")
    if res.get("partial"):
        verb = "was" if len(folds) == 1 else "were"
        md += ["", f"Only {len(folds)} of the {res['k']} folds {verb} run: the targets (over every fold) are not "
               "judged here."]
    if res.get("mean") is not None:
        md += ["", f"* **mean over folds and seeds: {res['mean']:.3f}** (target ≥ {TARGET_MEAN}); "
               f"**worst fold (mean over seeds): {res['worst_fold']:.3f}** (target ≥ {TARGET_WORST})",
               f"* per seed: mean {', '.join(fmt(v) for v in res['per_seed_mean'])}; worst fold "
               f"{', '.join(fmt(v) for v in res['per_seed_worst_fold'])}",
               f"* warm start alone (no RL): mean {fmt(res['warm_start_mean'])}; the RL step changes the score by "
               f"{fmt(res['rl_minus_warm_start'])} on average",
               *([f"* val's choice between each run's warm start and its RL step (what `train.py --select-warm-start` "
                  f"keeps; the same runs): the warm start in {vp['warm_start_kept']} of {vp['runs']} runs; mean "
                  f"{fmt(vp['mean'])}, worst fold {fmt(vp['worst_fold'])} (per fold "
                  f"{', '.join(fmt(v) for v in vp['per_fold'])}); every seed above every heuristic in each fold: "
                  f"{vp['beats_per_fold']}; battery deaths the oracle avoids: {vp['deaths_the_oracle_avoids']}"]
                 if (vp := res.get("val_pick")) else []),
               f"* best heuristic per fold, mean: {fmt(res['best_heuristic_mean'])}; every seed above every heuristic "
               f"in each fold: {res['beats_per_fold']}",
               f"* battery deaths the oracle avoids (all folds and seeds): {res['deaths_the_oracle_avoids']}",
               *([f"* battery deaths the foresight-free oracle (`oracle-blind`, no foresight of chargers or of the "
                  f"session's end) avoids: {res['deaths_the_blind_oracle_avoids']}; its own score, mean over folds: "
                  f"{fmt(res['oracle_blind_mean'])}"] if res.get("deaths_the_blind_oracle_avoids") is not None
                 else []),
               "* targets met: " + (", ".join(f"{k} {'yes' if v else 'no'}" for k, v in res["targets"].items())
                                    or "not judged (a subset of the folds)"), "",
               "Every heuristic's score per fold is in `crossval.csv`; the per-fold reports in `eval/fold-i/`."]
    paths = [out / "crossval.json", out / "crossval.csv"]
    png = plot(res, out / "crossval.png")
    if png:
        md += ["", f"![per-fold scores]({png.name})"]
        paths.append(png)
    atomic_write_text(out / "crossval.md", "\n".join(md) + "\n")
    return [out / "crossval.md"] + paths


def plot(res: dict[str, Any], path: Path) -> Path | None:
    """Per fold: each seed's score (dots), its warm start (crosses), every heuristic (grey ticks), best one (bar)."""
    folds = res["folds"]
    if not folds:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(folds), 4.2))
    for x, f in enumerate(folds):
        hs = [v for v in f["heuristics"].values() if v is not None and math.isfinite(v) and v > -0.5]
        ax.scatter([x - 0.25] * len(hs), hs, marker="_", s=200, color="0.6",
                   label="heuristics (each)" if x == 0 else None)
        if f["best_heuristic"]:
            ax.bar(x - 0.25, f["heuristics"][f["best_heuristic"]], width=0.2, color="0.85",
                   label="best heuristic" if x == 0 else None)
        ws = [v for v in f["warm_start"].values() if v is not None]
        ax.scatter([x] * len(ws), ws, marker="x", color="tab:orange", label="warm start only" if x == 0 else None)
        rl = [v for v in f["rl"].values() if v is not None]
        ax.scatter([x + 0.2] * len(rl), rl, color="tab:blue", label="RL (each seed)" if x == 0 else None)
    ax.axhline(TARGET_MEAN, ls="--", color="tab:green", lw=0.8, label=f"target mean {TARGET_MEAN}")
    ax.axhline(TARGET_WORST, ls=":", color="tab:red", lw=0.8, label=f"target worst fold {TARGET_WORST}")
    ax.set_xticks(range(len(folds)), [f"fold {f['fold']}\n({f['episodes']} ep)" for f in folds])
    ax.set_ylabel("oracle-normalised score")
    lo = min([0.6] + [v for f in folds for v in list(f["rl"].values()) + list(f["warm_start"].values())
                      if v is not None])
    ax.set_ylim(lo - 0.02, 1.02)
    ax.legend(fontsize=7, loc="lower left")
    ax.set_title("cross-validation by unit")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def split_passthrough(argv: list[str] | None) -> tuple[list[str], list[str]]:
    """(this command's arguments, the ones after ``--`` that go to every ``train.py``); ``None``: ``sys.argv``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        return argv, []
    cut = argv.index("--")
    return argv[:cut], argv[cut + 1:]


#: the options that say how the runs were trained: a report rebuilt with --report-only takes them from args.json
TRAINING_KEYS = ("recipe", "expert", "total_timesteps", "learning_rate", "bc_episodes", "dagger_episodes",
                 "oracle_grid", "max_steps")


def recorded_training(out: Path) -> tuple[dict, list[str]] | None:
    """(training options, further train.py arguments) as ``OUT/args.json`` recorded them when the runs were
    started, or None when there is no readable record. ``--report-only`` describes the runs with these, not with
    its own command line (which need not repeat the training options)."""
    try:
        rec = json.loads((out / "args.json").read_text())
    except (OSError, ValueError):
        return None
    extra = rec.get("train_extra") or [] if isinstance(rec, dict) else None
    if not isinstance(extra, list) or not all(isinstance(x, str) for x in extra):
        return None
    return {k: rec[k] for k in TRAINING_KEYS if k in rec}, extra


def main(argv: list[str] | None = None) -> int:
    from agents.evaluate import _oracle_grid
    from model.cli import int_in, nonneg_float, positive_int

    argv, train_extra = split_passthrough(argv)
    ap = argparse.ArgumentParser(prog="python -m agents.crossval", description=__doc__.split("\n")[0])
    ap.add_argument("--traces", required=True, help="trace-set folder to cross-validate (e.g. data/real)")
    ap.add_argument("--k", type=int_in(3, 50), default=4, help="folds (units are grouped by traces.folds)")
    ap.add_argument("--seeds", default="1,2,3", help="comma-separated training seeds (>= 1 of them)")
    ap.add_argument("--folds", default="", help="comma-separated folds to train and score (default: all k); a subset "
                                                "is reported without judging the targets")
    ap.add_argument("--out", required=True, help="output folder (folds, runs, logs, eval, crossval.*)")
    ap.add_argument("--recipe", choices=("dagger+ppo", "ppo"), default="dagger+ppo")
    ap.add_argument("--expert", choices=("oracle", "oracle-masked", "oracle-charger-blind", "oracle-hazard"),
                    default="oracle",
                    help="the dagger+ppo recipe's expert: the oracle, the oracle held to the action masks (its labels "
                         "are ones a masked policy can follow), the oracle without foresight of chargers (its "
                         "labels do not depend on a plug-in the device cannot see coming), or oracle-hazard, without "
                         "foresight of chargers or of the session's end, weighing the chance that it ends "
                         "(agents.oracle)")
    ap.add_argument("--total-timesteps", type=nonneg_float, default=1e6, help="RL steps per run (after the warm start)")
    ap.add_argument("--learning-rate", type=nonneg_float, default=3e-5, help="RL step size (0: the YAML's)")
    ap.add_argument("--bc-episodes", type=positive_int, default=64, help="oracle episodes per fold (first seed)")
    ap.add_argument("--dagger-episodes", type=positive_int, default=32, help="DAgger episodes per seed")
    ap.add_argument("--oracle-grid", default="51,13,5", help="oracle grid of the demonstrations and the scores")
    ap.add_argument("--score-oracle-grid", default=None, metavar="G",
                    help="oracle grid of the scores only (default: --oracle-grid); 201,13,5 costs about as much per "
                         "phone session and does not mis-plan a battery run to its last percent (docs/agents.md, "
                         "'The grid near an empty battery'); --resume with another grid re-scores the folds, keeping "
                         "the old reports as eval/fold-i.grid-<grid>")
    ap.add_argument("--max-steps", type=positive_int, default=720)
    ap.add_argument("--jobs", type=positive_int, default=max(1, (os.cpu_count() or 1)),
                    help="subprocesses at a time (each uses one thread)")
    ap.add_argument("--resume", action="store_true",
                    help="keep finished steps in an existing --out and do the rest, with the training options it "
                         "was started with (OUT/args.json; nothing after -- reuses its train.py arguments)")
    ap.add_argument("--report-only", action="store_true",
                    help="only rebuild crossval.* from what has finished; the training line is taken from "
                         "OUT/args.json, as the runs were started")
    ap.add_argument("--foresight-free", action="store_true",
                    help="also score oracle-blind (no foresight of chargers or of the session's end) in every fold "
                         "and count the deaths it avoids; with --resume on a finished folder, re-score its folds "
                         "(earlier reports kept as eval/fold-i.without-blind)")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    try:
        a.seeds = [int(s) for s in a.seeds.split(",") if s.strip()]
        if not a.seeds or min(a.seeds) < 0:
            raise ValueError
    except ValueError:
        ap.error(f"argument --seeds: {a.seeds!r}; allowed: comma-separated whole numbers >= 0, e.g. 1,2,3")
    folds_text = a.folds
    try:
        a.folds = [int(s) for s in a.folds.split(",") if s.strip()] if a.folds.strip() else list(range(a.k))
        if not a.folds or min(a.folds) < 0 or max(a.folds) >= a.k or len(set(a.folds)) < len(a.folds):
            raise ValueError
    except ValueError:
        ap.error(f"argument --folds: {folds_text!r}; allowed: distinct whole numbers 0..{a.k - 1} (k = {a.k}), "
                 "comma-separated, e.g. 1 or 0,2")
    for flag, g in (("--oracle-grid", a.oracle_grid), ("--score-oracle-grid", a.score_oracle_grid)):
        try:
            if g is not None:
                _oracle_grid(g)
        except argparse.ArgumentTypeError as exc:
            ap.error(f"argument {flag}: {exc}")
    out = Path(a.out)
    if a.report_only and not ((out / "folds").is_dir() or (out / "runs").is_dir()):
        ap.error(f"argument --out: {out} holds no cross-validation (no folds/ or runs/ folder); --report-only rebuilds "
                 "the report of an existing --out, e.g. the folder a run was started with")
    if not a.report_only:
        if out.exists() and any(out.iterdir()) and not a.resume:
            ap.error(f"argument --out: {out} exists and is not empty; pass --resume to finish it or choose another")
        recorded = recorded_training(out) if a.resume else None
        if recorded is not None:  # finish the runs as they were started, not with this command line's defaults
            rec, rec_extra = recorded
            if not train_extra and rec_extra:
                train_extra = list(rec_extra)
                print(f"--resume: the further train.py arguments recorded in {out / 'args.json'}: "
                      f"{' '.join(rec_extra)}", file=sys.stderr)
            diff = [f"--{k.replace('_', '-')} {rec[k]:g}" if isinstance(rec[k], float) else
                    f"--{k.replace('_', '-')} {rec[k]}" for k in rec if rec[k] != getattr(a, k)]
            if train_extra != rec_extra:
                diff.append(f"the train.py arguments after -- `{' '.join(rec_extra) or 'none'}`")
            if diff:
                ap.error(f"argument --resume: {out} was started with {'; '.join(diff)}; fix: pass the same options "
                         "(or none after --, to reuse the recorded ones) to finish it")
        from traces.folds import make_folds

        if not all((out / "folds" / f"fold-{i}" / "manifest.json").exists() for i in range(a.k)):
            try:
                make_folds(a.traces, a.k, out / "folds", force=a.resume, progress=not a.no_progress)
            except (OSError, ValueError) as exc:
                print(f"python -m agents.crossval: {exc}", file=sys.stderr)
                return 1
        (out / "logs").mkdir(parents=True, exist_ok=True)
        (out / "args.json").write_text(json.dumps({**vars(a), "train_extra": train_extra}, indent=1))
        for kept, why in keep_stale_reports(out, a):
            print(f"kept {kept} (the fold's report {why}); the fold is scored again", file=sys.stderr)
        rc = run_jobs(plan(a, train_extra), a.jobs, progress=not a.no_progress)
        failed = [n for n, c in rc.items() if c]
        if failed:
            print(f"failed or skipped: {', '.join(failed)} (logs in {out / 'logs'})", file=sys.stderr)
    res = collect(out, a.k, a.seeds)
    res["args"] = {k: v for k, v in vars(a).items() if k != "report_only"}
    res["train_extra"] = train_extra
    if a.report_only:
        recorded = recorded_training(out)
        if recorded is None:
            print(f"python -m agents.crossval: {out / 'args.json'} is missing or unreadable; the report's training "
                  "line shows this command's options, which may not be what the runs were trained with",
                  file=sys.stderr)
        else:
            res["args"].update(recorded[0])
            res["train_extra"] = recorded[1]
    recipe = res["args"].get("recipe")
    paths = write_report(res, out, f"Cross-validation by unit: {a.traces}, k = {a.k}, recipe {recipe}")
    print((out / "crossval.md").read_text())
    print(f"wrote {', '.join(map(str, paths))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
