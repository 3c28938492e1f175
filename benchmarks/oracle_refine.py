"""The oracle where its grid is too coarse: re-plan the episodes a cross-validation's oracle may have got wrong.

The oracle (``agents/oracle.py``) plans on a grid of SoC × temperature × backlog and is the score's 1. Its decisions
converge on the default 51 × 13 × 5 grid on most episodes (docs/agents.md, "Measured discretisation error"), but on
a battery that the best plan runs nearly empty the SoC grid (2 % steps) can mis-plan: the oracle dies, or returns
less than a learned policy. Then the episode's score and its death count are wrong: a death "the oracle avoids" is
not counted where the coarse oracle died too, and the fold's scores are normalised by too low an oracle.

For each fold of a finished ``agents.crossval`` folder this re-plans, on a finer grid, every episode where the
scored oracle died, any learned policy (RL or its warm start) died, or any controller returned more than the
oracle; keeps the better of the two oracles per episode (both plan with full foresight); and recomputes every
controller's fold score and the deaths the oracle avoids. Writes ``OUT.md`` and ``OUT.json``::

    python benchmarks/oracle_refine.py --cv runs/cv_v2 --grid 201,13,5 --out benchmarks/results/crossval_v2_oracle

Modelled energy throughout (the profile's costs), as in the cross-validation itself.
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

from agents.crossval import completed_run  # noqa: E402
from agents.evaluate import _oracle_grid, normalised_score, run_episode  # noqa: E402
from agents.registry import ORACLE, RANDOM, make_controller  # noqa: E402
from agents.run_io import env_from_config, load_config  # noqa: E402

TOL = 1e-6


def suspects(rep: dict) -> list[int]:
    """Episodes whose oracle may be mis-planned: it died, a learned policy died, or a controller beat it."""
    pe = rep["per_episode"]
    orc = pe[ORACLE]
    out = []
    for e, o in enumerate(orc):
        rl_died = any(pe[n][e]["death"] for n in pe if n.startswith("rl:"))
        beaten = any(pe[n][e]["return"] > o["return"] + TOL for n in pe if n != ORACLE)
        if o["death"] or rl_died or beaten:
            out.append(e)
    return out


def refine_fold(cv: Path, i: int, grid: tuple[int, int, int], seeds: list[int]) -> dict:
    rep = json.loads((cv / "eval" / f"fold-{i}" / "report.json").read_text())
    meta = rep["meta"]
    run = next(r for s in seeds if (r := completed_run(cv / "runs" / f"fold-{i}" / f"seed-{s}")) is not None)
    env = env_from_config(load_config(run), traces=str(cv / "folds" / f"fold-{i}"), split="test",
                          random_start=False)
    oracle = make_controller(ORACLE, env, n_soc=grid[0], n_temp=grid[1], n_backlog=grid[2],
                             horizon_steps=int(meta["max_steps"]))
    pe = rep["per_episode"]
    orc = [dict(o) for o in pe[ORACLE]]
    changed = []
    for e in suspects(rep):
        ep = rep["episodes"][e]
        fine = run_episode(env, oracle, {"trace": ep["trace"], "start": ep["start"]}, int(meta["max_steps"]),
                           seed=int(meta.get("seed", 0)) + e)
        old = orc[e]
        row = {"episode": e, "trace": ep["trace_name"], "coarse_return": old["return"], "coarse_death": old["death"],
               "fine_return": fine["return"], "fine_death": fine["death"]}
        if fine["return"] > old["return"] + TOL:
            orc[e] = {"return": fine["return"], "death": fine["death"]}
        row["kept"] = "fine" if orc[e] is not old else "coarse"
        changed.append(row)
    n = len(orc)
    o_mean = float(np.mean([o["return"] for o in orc]))
    r_mean = float(np.mean([x["return"] for x in pe[RANDOM]]))
    pol = {}
    for name, eps in pe.items():
        if name in (ORACLE, RANDOM):
            continue
        mean = float(np.mean([x["return"] for x in eps]))
        pol[name] = {"score_coarse": rep["policies"][name]["score"], "score": normalised_score(mean, r_mean, o_mean),
                     "deaths": int(sum(x["death"] for x in eps)),
                     "deaths_not_oracle_coarse": rep["policies"][name].get("deaths_not_oracle"),
                     "deaths_not_oracle": int(sum(x["death"] and not orc[e]["death"] for e, x in enumerate(eps)))}
    return {"fold": i, "episodes": n, "grid": list(grid), "coarse_grid": meta.get("oracle_grid"),
            "oracle_mean_coarse": rep["policies"][ORACLE]["return"], "oracle_mean": o_mean,
            "oracle_deaths_coarse": int(sum(o["death"] for o in pe[ORACLE])),
            "oracle_deaths": int(sum(o["death"] for o in orc)), "replanned": changed, "policies": pol}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cv", required=True, help="a finished agents.crossval folder")
    ap.add_argument("--grid", type=_oracle_grid, default=(201, 13, 5), help="the finer oracle grid (SoC,T,backlog)")
    ap.add_argument("--out", required=True, help="output path without suffix (OUT.md, OUT.json)")
    a = ap.parse_args(argv)
    cv = Path(a.cv)
    try:
        args = json.loads((cv / "args.json").read_text())
    except (OSError, ValueError):
        ap.error(f"--cv {cv}: no readable args.json; pass a folder written by python -m agents.crossval")
    folds = [i for i in range(int(args["k"])) if (cv / "eval" / f"fold-{i}" / "report.json").exists()]
    if not folds:
        ap.error(f"--cv {cv}: no fold report under eval/; run or finish the cross-validation first")
    t0 = time.time()
    res = [refine_fold(cv, i, a.grid, list(args["seeds"])) for i in folds]
    def rl(f: dict) -> dict:  # the RL seeds' rows (not their warm starts)
        return {n: p for n, p in f["policies"].items() if n.startswith("rl:") and not n.endswith("/warm_start")}

    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    summary = {"folds": folds,
               "rl_mean_coarse": float(np.mean([p["score_coarse"] for f in res for p in rl(f).values()])),
               "rl_mean": float(np.mean([p["score"] for f in res for p in rl(f).values()])),
               "rl_worst_fold_coarse": float(min(np.mean([p["score_coarse"] for p in rl(f).values()]) for f in res)),
               "rl_worst_fold": float(min(np.mean([p["score"] for p in rl(f).values()]) for f in res)),
               "rl_deaths_not_oracle_coarse": int(sum(p["deaths_not_oracle_coarse"] or 0 for f in res
                                                      for p in rl(f).values())),
               "rl_deaths_not_oracle": int(sum(p["deaths_not_oracle"] for f in res for p in rl(f).values()))}
    out.with_suffix(".json").write_text(json.dumps({"cv": str(cv), "grid": list(a.grid), "summary": summary,
                                                    "folds": res}, indent=1))
    g = "×".join(map(str, a.grid))
    lines = [f"# The oracle re-planned on a finer grid: `{cv}` ({time.strftime('%Y-%m-%d')})", "",
             f"Every episode where the scored oracle died, a learned policy died, or a controller beat the oracle, "
             f"re-planned on {g}; the better of the two oracles is kept per episode. Generated by "
             f"`benchmarks/oracle_refine.py --cv {cv} --grid {','.join(map(str, a.grid))}` in "
             f"{time.time() - t0:.0f} s. Modelled energy.", "",
             "| | coarse grid | refined |", "|---|---|---|",
             f"| RL mean score | {summary['rl_mean_coarse']:.3f} | {summary['rl_mean']:.3f} |",
             f"| RL worst fold | {summary['rl_worst_fold_coarse']:.3f} | {summary['rl_worst_fold']:.3f} |",
             f"| RL deaths the oracle avoids | {summary['rl_deaths_not_oracle_coarse']} | "
             f"{summary['rl_deaths_not_oracle']} |", "",
             "| fold | episodes | re-planned | oracle deaths coarse / refined | oracle mean return coarse / refined | "
             "RL seeds coarse | RL seeds refined |", "|---|---|---|---|---|---|---|"]
    for f in res:
        sc = " / ".join(f"{p['score_coarse']:.3f}" for p in rl(f).values())
        sr = " / ".join(f"{p['score']:.3f}" for p in rl(f).values())
        lines.append(f"| {f['fold']} | {f['episodes']} | {len(f['replanned'])} | {f['oracle_deaths_coarse']} / "
                     f"{f['oracle_deaths']} | {f['oracle_mean_coarse']:.2f} / {f['oracle_mean']:.2f} | {sc} | {sr} |")
    moved = [(f, r) for f in res for r in f["replanned"]
             if abs(r["fine_return"] - r["coarse_return"]) > 0.05 or r["fine_death"] != r["coarse_death"]]
    lines += ["", f"Re-planned episodes whose oracle moved by more than 0.05 of return or changed its fate "
              f"({len(moved)} of {sum(len(f['replanned']) for f in res)} re-planned; return, † = battery death):", "",
              "| fold | trace | coarse | fine | kept |", "|---|---|---|---|---|"]
    for f, r in moved:
        lines.append(f"| {f['fold']} | {r['trace']} | {r['coarse_return']:.1f}{' †' if r['coarse_death'] else ''} "
                     f"| {r['fine_return']:.1f}{' †' if r['fine_death'] else ''} | {r['kept']} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out}.md/.json", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
