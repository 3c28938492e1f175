"""Which battery deaths would control have avoided, and which only foresight? Deaths against a foresight-free oracle.

The cross-validation target "no battery death the oracle avoids" counts a learned policy's death wherever the oracle
survives; the oracle plans with the whole trace, so it knows when the session ends and when a charger comes. A device
knows neither. ``oracle-blind`` (``agents.oracle.ForesightFreeOracle``) is the same DP planning as if no charger were
plugged in later than now (re-planning when one is, as ``oracle-charger-blind``) and as if each phone's and laptop's
session went on to the episode's cap; it still knows the demand, weather and own load within the session. A death
that this planner avoids is one that control would have avoided; one that it has too needed foresight.

For each fold of one or more cross-validation folders (``agents.crossval --out``), this scores ``oracle-blind`` on the
fold's held-out units (the first folder's folds; every folder must hold out the same units) and sets it beside the
folder's own fold report (``eval/fold-i/report.json``: every seed's policy, its warm start, the heuristics, random and
the oracle on the same episodes). Per folder it writes the scores (unchanged: normalised by the oracle) and both death
counts; per fold, the foresight-free oracle's score and deaths. A fold report that scored ``oracle-blind`` already
(``agents.crossval --foresight-free``, same grid and step limit) is read instead of planning it again. Writes
``OUT.md``, ``OUT.json`` and ``OUT.png``::

    python benchmarks/foresight_free.py --cv runs/cv_om_hotdr_f31 --cv runs/cv_se50_2h --jobs 2 \\
        --out benchmarks/results/foresight_free
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from battery_saver import cv_folds, fold_reference, fold_runs, save_figure  # noqa: E402 - the same folds, runs, figures

BLIND = "oracle-blind"


def blind_fold(cv: Path, fold: int, grid: tuple[int, int, int], max_steps: int) -> dict:
    """``oracle-blind`` on the fold's held-out units, from row 0: per episode its return and whether it died."""
    from agents.evaluate import evaluate_controllers
    from agents.registry import make_controller
    from agents.run_io import env_from_config, load_config

    cfg = load_config(fold_runs(cv, fold)[0])  # the fold's env (the oracle reads only its physics)
    traces = str(cv / "folds" / f"fold-{fold}")

    def factory():
        return env_from_config(cfg, split="test", traces=traces, random_start=False)

    t0 = time.perf_counter()
    ctl = {BLIND: lambda env: make_controller(BLIND, env, n_soc=grid[0], n_temp=grid[1], n_backlog=grid[2])}
    res = evaluate_controllers(factory, ctl, max_steps=max_steps, progress=False)
    return {"episodes": [e["trace_name"] for e in res["episodes"]],
            "return": [float(e["return"]) for e in res["per_episode"][BLIND]],
            "death": [bool(e["death"]) for e in res["per_episode"][BLIND]], "seconds": time.perf_counter() - t0}


def blind_from_report(cv: Path, fold: int, grid: tuple[int, int, int], max_steps: int) -> dict | None:
    """``blind_fold``'s result read from the fold's report when it scored ``oracle-blind`` already
    (``agents.crossval --foresight-free``) on the same grid and step limit; None otherwise (it must be run)."""
    try:
        rep = json.loads((cv / "eval" / f"fold-{fold}" / "report.json").read_text())
        eps = rep["per_episode"][BLIND]
        same = (tuple(rep["meta"]["oracle_grid"]) == tuple(grid) and rep["meta"]["max_steps"] == max_steps
                and rep["meta"].get("battery_saver_min", 0) in (0, 0.0, None))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not same:
        return None
    return {"episodes": [e["trace_name"] for e in rep["episodes"]], "return": [float(e["return"]) for e in eps],
            "death": [bool(e["death"]) for e in eps], "seconds": 0.0, "from_report": True}


def fold_rows(cv: Path, fold: int, blind: dict) -> dict:
    """Per controller of the folder's fold report: score, deaths the oracle avoids, deaths the foresight-free
    oracle avoids (and on which traces)."""
    import numpy as np

    from agents.evaluate import normalised_score

    ref, rand, orc, oracle_dead = fold_reference(cv, fold)
    names = [e["trace_name"] for e in ref["episodes"]]
    if names != blind["episodes"]:
        raise SystemExit(f"{cv}/eval/fold-{fold}/report.json: its episodes are not the held-out traces the "
                         "foresight-free oracle ran; fix: compare folders built with the same --k from the same units")
    out = {}
    for name, eps in ref["per_episode"].items():
        if name in ("random", "oracle", BLIND):  # the foresight-free oracle's row is built below
            continue
        ret = float(np.mean([e["return"] for e in eps]))
        died = [bool(e["death"]) for e in eps]
        out[name] = {"score": normalised_score(ret, rand, orc),
                     "deaths_oracle_avoids": [n for n, d, o in zip(names, died, oracle_dead) if d and not o],
                     "deaths_blind_avoids": [n for n, d, b in zip(names, died, blind["death"]) if d and not b]}
    b_ret = float(np.mean(blind["return"]))
    out[BLIND] = {"score": normalised_score(b_ret, rand, orc),
                  "deaths_oracle_avoids": [n for n, d, o in zip(names, blind["death"], oracle_dead) if d and not o],
                  "deaths_blind_avoids": []}
    return out


def kind_of(name: str) -> str:
    """The row's group: a learned policy (its clone too), the foresight-free oracle, or a heuristic."""
    if name.startswith("rl:"):
        return "RL warm start" if name.endswith("/warm_start") else "RL"
    return name


def summary(per_fold: dict[int, dict]) -> list[dict]:
    """One row per group over folds: mean and worst fold of the per-fold mean score, and both death counts."""
    import numpy as np

    groups: dict[str, dict] = {}
    for f, rows in per_fold.items():
        for name, r in rows.items():
            g = groups.setdefault(kind_of(name), {"per_fold": {}, "oracle": 0, "blind": 0, "on": set()})
            g["per_fold"].setdefault(f, []).append(r["score"])
            g["oracle"] += len(r["deaths_oracle_avoids"])
            g["blind"] += len(r["deaths_blind_avoids"])
            g["on"] |= set(r["deaths_oracle_avoids"])
    out = []
    for g, v in groups.items():
        pf = {f: float(np.mean(s)) for f, s in v["per_fold"].items()}
        out.append({"controller": g, "mean": float(np.mean(list(pf.values()))), "worst_fold": float(min(pf.values())),
                    "per_fold": pf, "deaths_oracle_avoids": v["oracle"], "deaths_blind_avoids": v["blind"],
                    "died_on": sorted(v["on"])})
    order = {"RL": 0, "RL warm start": 1, BLIND: 2}
    return sorted(out, key=lambda r: (order.get(r["controller"], 3), -r["mean"]))


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cvs = list(results)
    fig, ax = plt.subplots(figsize=(8.5, 3.8))
    names = ["RL", "RL warm start", BLIND, "schedutil", "static-largest", "mpc"]
    w = 0.8 / len(names)
    for j, n in enumerate(names):
        o = [next((r["deaths_oracle_avoids"] for r in results[c]["summary"] if r["controller"] == n), np.nan)
             for c in cvs]
        b = [next((r["deaths_blind_avoids"] for r in results[c]["summary"] if r["controller"] == n), np.nan)
             for c in cvs]
        x = np.arange(len(cvs)) + (j - (len(names) - 1) / 2) * w
        ax.bar(x, o, w, color=f"C{j}", alpha=0.35)
        ax.bar(x, b, w, color=f"C{j}", label=n)
    ax.set_xticks(np.arange(len(cvs)), cvs)
    ax.set_ylabel("battery deaths, all folds and seeds")
    ax.legend(fontsize=7, ncol=3)
    ax.grid(alpha=0.3, axis="y")
    save_figure(fig, "deaths the oracle avoids (pale) and the foresight-free oracle avoids (solid)", path)


def main(argv=None) -> int:
    from agents.evaluate import _oracle_grid
    from model.cli import positive_int
    from runtime.safeio import atomic_write_text

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cv", action="append", required=True, type=Path,
                    help="agents.crossval --out folder with its fold reports; repeat for folders with the same folds")
    ap.add_argument("--folds", default=None, help="comma-separated folds (default: every fold the first folder has)")
    ap.add_argument("--oracle-grid", default="51,13,5", help="the DP grid (the cross-validation's)")
    ap.add_argument("--max-steps", type=positive_int, default=720)
    ap.add_argument("--jobs", type=positive_int, default=1, help="folds at once, one process each")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/foresight_free"),
                    help="output path without extension")
    ap.add_argument("--force", action="store_true", help="replace an existing report")
    a = ap.parse_args(argv)
    try:
        grid = _oracle_grid(a.oracle_grid)
    except argparse.ArgumentTypeError as exc:
        ap.error(f"argument --oracle-grid: {exc}")
    folds = cv_folds(ap, a.cv, a.folds)
    if a.out.with_suffix(".md").exists() and not a.force:
        ap.error(f"{a.out.with_suffix('.md')} exists; pass --force to replace it")
    t0 = time.perf_counter()
    # a fold report that scored oracle-blind already (agents.crossval --foresight-free) is read, not run again
    blind = {f: b for f in folds if (b := blind_from_report(a.cv[0], f, grid, a.max_steps)) is not None}
    for f in blind:
        print(f"[foresight_free] fold {f}: oracle-blind read from {a.cv[0]}/eval/fold-{f}/report.json", file=sys.stderr)
    with concurrent.futures.ProcessPoolExecutor(a.jobs) as pool:
        futs = {f: pool.submit(blind_fold, a.cv[0], f, grid, a.max_steps) for f in folds if f not in blind}
        for f, fut in futs.items():
            blind[f] = fut.result()
            print(f"[foresight_free] fold {f}: {blind[f]['seconds']:.0f} s", file=sys.stderr)
    results = {}
    for cv in a.cv:
        per_fold = {f: fold_rows(cv, f, blind[f]) for f in folds}
        results[cv.name] = {"summary": summary(per_fold),
                            "per_fold": {str(f): r for f, r in per_fold.items()}}
    date = time.strftime("%Y-%m-%d")
    cmd = ("python benchmarks/foresight_free.py " + " ".join(f"--cv {c}" for c in a.cv)
           + (f" --folds {a.folds}" if a.folds else "") + (f" --jobs {a.jobs}" if a.jobs > 1 else "")
           + f" --out {a.out}")
    md = [f"# Deaths that control would avoid: {', '.join(results)}, folds {', '.join(map(str, folds))} ({date})", "",
          f"Each fold's held-out units from row 0, up to {a.max_steps} steps, max-quality. Scores: (return − random) / "
          "(oracle − random) from each folder's `eval/fold-i/report.json`, unchanged. *Deaths the oracle avoids*: "
          "the issue's count (the oracle knows when the session ends and when a charger comes). *Deaths the "
          f"foresight-free oracle avoids*: where `{BLIND}` (`agents.oracle.ForesightFreeOracle`, DP grid "
          f"{a.oracle_grid}: no charger later than now, each phone's and laptop's session going on to the episode's "
          "cap) survives. RL: the mean over seeds of each fold's mean.", ""]
    for name, r in results.items():
        md += [f"## `{name}`", "", "| controller | mean | worst fold | per fold | deaths the oracle avoids | deaths "
               "the foresight-free oracle avoids | died on (where the oracle survives) |",
               "|---|---|---|---|---|---|---|"]
        for s in r["summary"]:
            md.append(f"| {s['controller']} | {s['mean']:.3f} | {s['worst_fold']:.3f} | "
                      + " / ".join(f"{s['per_fold'][f]:.3f}" for f in sorted(s["per_fold"]))
                      + f" | {s['deaths_oracle_avoids']} | **{s['deaths_blind_avoids']}** | "
                      + (", ".join(f"{d[:8]}…{d[-19:]}" for d in s["died_on"]) or "–") + " |")
        md.append("")
    md += [f"![deaths per controller]({a.out.name}.png)", "",
           f"`{cmd}` ({sum(b['seconds'] for b in blind.values()):.0f} s of the foresight-free oracle over "
           f"{len(folds)} folds" + (f"; {n_read} read from the folds' reports" if (n_read := sum(
               bool(b.get("from_report")) for b in blind.values())) else "") + ")"]
    a.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(a.out.with_suffix(".md"), "\n".join(md) + "\n")
    atomic_write_text(a.out.with_suffix(".json"), json.dumps(
        {"date": date, "cv": [str(c) for c in a.cv], "folds": folds, "max_steps": a.max_steps,
         "oracle_grid": a.oracle_grid, "blind": {str(f): b for f, b in blind.items()}, "results": results,
         "wall_s": time.perf_counter() - t0}, indent=1, default=list) + "\n")
    plot(results, a.out.with_suffix(".png"))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
