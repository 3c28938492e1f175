"""What the masks leave: the masked oracle scored on a fold report's own episodes.

    python benchmarks/mask_headroom.py --reports benchmarks/results/objectives_real_cv_v8/fold-*.json \\
        --group "recipe=/rb/bs/" [--jobs 2] [--check 2] [--out benchmarks/results/mask_headroom] [--force]

A report of ``benchmarks/objectives.py`` holds every policy and rule to the action masks (the thermal and battery
rules, the budget rule with the reserve it keeps in hand, the floor rule) and normalises by the oracle, which is not
held to them: it may spend the budget's reserve or run hot where it foresees that nothing goes wrong. The masked
oracle (``oracle-masked``: the same planner, foresight included, choosing only what the masks allow) is the best a
controller held to the masks can do. Its score on the report's episodes, against the report's own random policy and
oracle, splits a recipe's gap to 1 in two: what the masks cost (1 − masked oracle) and what the policy leaves within
them (masked oracle − recipe). A policy can close the second; only other mask rules can close the first.

The episodes are re-run in ``runtime.dynamics``' env with the report's settings (rules, reserves, episode length,
split, oracle grid) and the main job's environment parameters (``train.MAIN_JOB_ENV``, with which every objectives
recipe trains; only its observation differs from the defaults). ``--check N`` first re-runs the plain oracle on N
episodes of each objective and stops when a return differs from the report's: the parity of this re-run with the
report. Writes OUT.md and OUT.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.objectives import write_report  # noqa: E402
from benchmarks.objectives_cv import OBJECTIVES, fold_labels, fold_scores, parse_cli  # noqa: E402

MASKED = "oracle-masked"
TOLERANCE = 1e-6  # a re-run return that differs from the report's by more is not the report's episode


def env_for(report: dict, kind: str):
    """The env a report scored ``kind`` in (its first set, split, rules and reserves)."""
    import dataclasses

    import gymnasium as gym

    import envs
    from benchmarks.objectives import with_settings
    from runtime.dynamics import Objective
    from train import MAIN_JOB_ENV

    p = dataclasses.replace(with_settings(MAIN_JOB_ENV, report), objective=Objective(kind=kind))
    s = report["sets"][0]
    return gym.make(envs.ENV_ID, traces=str(s["traces"]), split=s.get("split", report.get("split", "test")),
                    params=p, random_start=False)


def score_objective(report: dict, kind: str, check: int) -> dict:
    """The masked oracle's return on each of the report's ``kind`` episodes (and the plain oracle's on the first
    ``check``, for parity). ValueError naming the episode when the re-run is not the report's."""
    from agents.registry import make_controller
    from benchmarks.objectives import episode

    env = env_for(report, kind)
    u = env.unwrapped
    index = {t.name: k for k, t in enumerate(u.traces)}
    ctrl = report["sets"][0]["objectives"][kind]["controllers"]
    eps = ctrl["oracle"]["per_episode"]
    grid = dict(zip(("n_soc", "n_temp", "n_backlog"), report["oracle_grid"]))
    missing = [e["trace"] for e in eps if e["trace"] not in index]
    if missing:
        raise ValueError(f"{len(missing)} of the {kind} episodes (e.g. {missing[0]}) are not in "
                         f"{report['sets'][0]['traces']}; fix: rebuild the trace set the report scored")
    t0 = time.time()
    plain = make_controller("oracle", env, **grid).bind(u)
    for e in eps[:check]:
        got = episode(env, plain, {"trace": index[e["trace"]], "start": 0, "objective": kind},
                      int(report["max_steps"]))["return"]
        if abs(got - e["return"]) > TOLERANCE * max(1.0, abs(e["return"])):
            raise ValueError(f"{kind} {e['trace']}: the oracle returns {got:.6f} here and {e['return']:.6f} in the "
                             "report, so this env is not the report's; fix: score with the environment parameters "
                             "the report was made with")
    masked = make_controller(MASKED, env, **grid).bind(u)
    rets = [episode(env, masked, {"trace": index[e["trace"]], "start": 0, "objective": kind},
                    int(report["max_steps"]))["return"] for e in eps]
    return {"returns": rets, "checked": min(check, len(eps)), "wall_s": time.time() - t0}


def headroom(report: dict, masked_returns: dict[str, list[float]], groups) -> dict:
    """Per objective: the masked oracle's score on the report's random and oracle (their mean returns), with the
    recipes' scores and the best rule's from :func:`objectives_cv.fold_scores`."""
    scores = fold_scores(report, groups)
    out = {}
    for kind, rets in masked_returns.items():
        ctrl = report["sets"][0]["objectives"][kind]["controllers"]
        lo, hi = ctrl["random"]["return"], ctrl["oracle"]["return"]
        m = sum(rets) / len(rets)
        out[kind] = {"masked_oracle": (m - lo) / (hi - lo), "recipes": scores[kind]["recipes"],
                     "best_rule": scores[kind]["best_rule"], "episodes": len(rets)}
    return out


def to_markdown(data: dict) -> str:
    lines = [f"# What the masks leave ({data['date']})", "",
             "Oracle-normalised scores (the report's random policy 0, its oracle 1) on each fold report's own "
             "episodes. The masked oracle plans with foresight, as the oracle does, but chooses only what the action "
             "masks allow, as every policy and rule in the reports must: 1 − masked oracle is what the masks cost, "
             "masked oracle − recipe what the policy leaves within them. Energy is modelled. Generated by "
             "`benchmarks/mask_headroom.py`.", ""]
    labels = fold_labels(data["reports"])
    for i, r in enumerate(data["reports"]):
        lines.append(f"* fold {labels[i]}: `{r['path']}` ({r['traces']}; the plain oracle re-run on {r['checked']} "
                     "episodes per objective returns what the report has)")
    for kind in OBJECTIVES:
        named = [(labels[j], f[kind]) for j, f in enumerate(data["folds"]) if kind in f]
        rows = [row for _, row in named]
        if not rows:
            continue
        recipes = list(dict.fromkeys(r for row in rows for r in row["recipes"] if not r.endswith("(warm start)")))
        lines += ["", f"## {kind}", "", "| fold | masked oracle | " + " | ".join(
            f"{r} | left within the masks" for r in recipes) + " | best rule |",
            "|---|---|" + "---|---|" * len(recipes) + "---|"]
        for label, row in named:
            cells = []
            for r in recipes:
                v = row["recipes"].get(r)
                cells.append("– | –" if v is None else f"{v:.3f} | {row['masked_oracle'] - v:+.3f}")
            lines.append(f"| {label} | {row['masked_oracle']:.3f} | " + " | ".join(cells)
                         + f" | {row['best_rule'][0]} {row['best_rule'][1]:.3f} |")
        mean = sum(r["masked_oracle"] for r in rows) / len(rows)
        cells = []
        for r in recipes:
            v = [row["recipes"][r] for row in rows if r in row["recipes"]]
            both = [row["masked_oracle"] - row["recipes"][r] for row in rows if r in row["recipes"]]
            cells.append(f"{sum(v) / len(v):.3f} | {sum(both) / len(both):+.3f}")
        lines.append(f"| mean | {mean:.3f} | " + " | ".join(cells)
                     + f" | {sum(r['best_rule'][1] for r in rows) / len(rows):.3f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=1, help="(fold, objective) pairs scored in parallel processes")
    ap.add_argument("--check", type=int, default=2,
                    help="re-run the plain oracle on this many episodes per objective first; stop when one differs "
                         "from the report (0: no check)")
    a, groups, out = parse_cli(ap, argv, "benchmarks/objectives.py JSON reports, one per fold",
                               "NAME=TEXT: the runs whose path contains TEXT are the recipe NAME (repeat per recipe)",
                               str(REPO / "benchmarks" / "results" / "mask_headroom"))
    if a.jobs < 1 or a.check < 0:
        ap.error(f"--jobs must be >= 1 and --check >= 0, got {a.jobs} and {a.check}")
    reports = []
    for p in a.reports:
        try:
            rep = json.loads(Path(p).read_text())
            fold_scores(rep, groups)  # the groups and the report's scores, before anything heavy
            for key in ("max_steps", "floor_rule", "budget_rule", "budget_floor_reserve_s", "budget_reserve_s",
                        "budget_reserve_tps", "oracle_grid"):
                if key not in rep:
                    raise ValueError(f"no {key!r}: a report from before the settings were recorded; fix: score "
                                     "the fold again with benchmarks/objectives.py")
        except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            ap.error(f"--reports {p}: {exc!s}" + ("" if isinstance(exc, ValueError) and not isinstance(
                exc, json.JSONDecodeError) else "; fix: pass a JSON report written by benchmarks/objectives.py"))
        reports.append(rep)
    jobs = [(i, kind) for i, rep in enumerate(reports) for kind in rep["sets"][0]["objectives"]]
    try:
        if a.jobs > 1:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(a.jobs, mp_context=mp.get_context("spawn")) as ex:
                done = list(ex.map(score_objective, [reports[i] for i, _ in jobs], [k for _, k in jobs],
                                   [a.check] * len(jobs)))
        else:
            from tqdm import tqdm

            done = [score_objective(reports[i], k, a.check) for i, k in tqdm(jobs, desc="folds x objectives")]
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    masked: list[dict] = [{} for _ in reports]
    checked = [0] * len(reports)
    for (i, kind), d in zip(jobs, done):
        masked[i][kind] = d["returns"]
        checked[i] = d["checked"]
    data = {"date": time.strftime("%Y-%m-%d"), "groups": dict(groups),
            "reports": [{"path": p, "traces": r["sets"][0]["traces"], "checked": c}
                        for p, r, c in zip(a.reports, reports, checked)],
            "masked_returns": masked, "folds": [headroom(r, m, groups) for r, m in zip(reports, masked)]}
    out.parent.mkdir(parents=True, exist_ok=True)
    write_report(out, data, to_markdown(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
