"""Does the main job beat every heuristic, seed after seed? ``python train.py`` (the defaults) over several seeds.

    python benchmarks/main_job_seeds.py [--seeds 1,2,3] [--jobs 2] [--out runs/main-seeds]
                                        [--oracle-grid 101,25,7] [--traces DIR] [-- extra train.py arguments]

Each seed is ``python train.py --seed S --no-final-eval`` plus the extra arguments (the defaults when there are
none), ``--jobs`` at a time (``agents.crossval.run_jobs``; logs in ``OUT/logs``). Then one
``python -m agents.evaluate`` scores every seed's policy with every baseline and the oracle on the default test
split (the main job's own evaluation, same episodes, same grid). ``--traces DIR`` trains and scores on another trace
set's own train / val / test split instead (e.g. ``data/real``). Writes ``OUT/main_job_seeds.md/.json``: per seed
its score, the best heuristic's, the margin, and whether the seed beats every heuristic. ``--resume`` keeps
finished seeds. ``{seed}`` in an extra argument is replaced by the seed
(e.g. ``--bc-demos runs/A/seed-{seed}/demos.npz``).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def eval_covers(ev: Path, run_args: list[str]) -> bool:
    """Whether ``ev``'s report scored every run in ``run_args`` (``--run R`` pairs): with --resume and more
    seeds than before, an evaluation of the earlier seeds alone is not done."""
    try:
        scored = json.loads((ev / "report.json").read_text())["meta"]["run"]
        scored = {scored} if isinstance(scored, str) else set(scored)  # one run: a string
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return set(run_args[1::2]) <= scored


def main(argv: list[str] | None = None) -> int:
    from agents.crossval import Job, completed_run, run_jobs, split_passthrough
    from agents.evaluate import run_label
    from agents.registry import REFERENCES

    argv, extra = split_passthrough(argv)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", default="runs/main-seeds")
    ap.add_argument("--oracle-grid", default="101,25,7")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--title", default="python train.py (the defaults)")
    ap.add_argument("--traces", default=None, help="a trace set folder to train and score on (default: the embedded "
                    "default set)")
    a = ap.parse_args(argv)
    if a.traces is not None and not Path(a.traces).is_dir():
        ap.error(f"--traces {a.traces}: no such folder (build the real-data set with `python -m traces.build_real "
                 f"--shared ../shared/traces --out data/real`)")
    set_args = ["--traces", a.traces] if a.traces else []
    seeds = [int(s) for s in a.seeds.split(",") if s.strip()]
    out = Path(a.out)
    if out.exists() and any(out.iterdir()) and not a.resume:
        ap.error(f"--out {out} exists; pass --resume or choose another")
    py = sys.executable
    jobs = []
    for s in seeds:
        d = out / f"seed-{s}"
        jobs.append(Job(f"seed {s}", [py, "train.py", "--seed", str(s), "--runs-dir", str(d), "--no-final-eval",
                                      "--no-progress", *set_args, *(x.replace("{seed}", str(s)) for x in extra)],
                        out / "logs" / f"seed-{s}.log", done_if=lambda d=d: completed_run(d) is not None))
    ev = out / "eval"

    def eval_args():
        args = []
        for s in seeds:
            r = completed_run(out / f"seed-{s}")
            if r is not None:
                args += ["--run", str(r)]
                if (r / "warm_start" / "config.json").exists():  # a warm-started recipe: its clone alone too
                    args += ["--run", str(r / "warm_start")]
        return args

    jobs.append(Job("evaluate", [py, "-m", "agents.evaluate", *set_args, "--split", "test", "--out", str(ev),
                                 "--oracle-grid", a.oracle_grid, "--no-progress", "--force"], out / "logs" / "eval.log",
                    after=[f"seed {s}" for s in seeds], done_if=lambda: eval_covers(ev, eval_args()),
                    extra=eval_args))
    t0 = time.time()
    rc = run_jobs(jobs, a.jobs, desc="seeds")
    if not (ev / "report.json").exists():
        print(f"no evaluation (exit codes {rc}); logs in {out / 'logs'}", file=sys.stderr)
        return 1
    rep = json.loads((ev / "report.json").read_text())
    pol = rep["policies"]
    heur = {n: m["score"] for n, m in pol.items() if not n.startswith("rl:") and n not in REFERENCES}
    best = max(heur, key=heur.get)
    rows = []
    for s in seeds:
        r = completed_run(out / f"seed-{s}")
        name = next((n for n in pol if r is not None and n.endswith(f":{r.name}")), None)
        if name is None and r is not None and len(seeds) == 1:
            name = next(n for n in pol if n.startswith("rl:"))
        sc = pol[name]["score"] if name else None
        cfg = json.loads((r / "config.json").read_text()) if r else {}
        ws = next((n for n in pol if n.endswith(f":{run_label(r / 'warm_start')}")), None) if r is not None else None
        rows.append({"seed": s, "run": str(r), "score": sc, "beats_every_heuristic": sc is not None and sc > heur[best],
                     "warm_start_score": pol[ws]["score"] if ws else None,
                     "margin": None if sc is None else sc - heur[best], "train_wall_s": cfg.get("train_wall_s"),
                     "deaths_not_oracle": pol[name]["deaths_not_oracle"] if name else None})
    res = {"title": a.title, "extra_args": extra, "traces": a.traces or "default", "seeds": rows, "heuristics": heur,
           "best_heuristic": best, "oracle_grid": a.oracle_grid, "episodes": len(rep["episodes"]),
           "wall_s": time.time() - t0, "host": platform.node(), "date": time.strftime("%Y-%m-%d")}
    scored = [r for r in rows if r["score"] is not None and r["warm_start_score"] is not None]
    gain = sum(r["score"] - r["warm_start_score"] for r in scored) / len(scored) if scored else None
    res["rl_minus_warm_start"] = gain
    (out / "main_job_seeds.json").write_text(json.dumps(res, indent=1, default=float))
    n_ok = sum(r["beats_every_heuristic"] for r in rows)
    md = [f"# {a.title}: {n_ok} of {len(rows)} seeds beat every heuristic ({res['date']})", "",
          f"{'Default' if not a.traces else f'`{a.traces}`'} test split, {res['episodes']} traces from row 0, "
          f"oracle grid {a.oracle_grid}; extra train.py "
          f"arguments: `{' '.join(extra) or 'none'}`. Best heuristic: {best} ({heur[best]:.3f}).", "",
          "| seed | score | margin over the best heuristic | beats every heuristic | deaths the oracle avoids | "
          "warm start alone | training (min) |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        ok = "yes" if r["beats_every_heuristic"] else "no"
        ws = "—" if r["warm_start_score"] is None else f"{r['warm_start_score']:.3f}"
        md.append(f"| {r['seed']} | {r['score']:.3f} | {r['margin']:+.3f} | {ok} | {r['deaths_not_oracle']} | {ws} | "
                  f"{(r['train_wall_s'] or 0) / 60:.1f} |")
    if gain is not None:
        md += ["", f"The RL step over the warm start alone: {gain:+.3f} on average over {len(scored)} seeds."]
    md += ["", "Heuristics: " + ", ".join(f"{n} {v:.3f}" for n, v in sorted(heur.items(), key=lambda x: -x[1])), ""]
    (out / "main_job_seeds.md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
