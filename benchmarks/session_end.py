"""What the user's word on when a session ends is worth: scores and battery deaths with and without it.

A replayed session ends where its log ends (a charger, or the logging stopped). The oracle that scores every controller
knows that time and a device does not, and the deaths the learned policies still have on the real data are on a
nearly empty phone whose session went on longer than they bet (docs/agents.md, "The battery saver"). A user can say
when it ends ("until 01:50", ``deploy.py run --until``): ``traces.objectives --session-end P`` writes that deadline
into a trace set, the observation shows it (``has_deadline``, ``time_to_deadline_h``, ``affordable_power_w``), and
``EnvParams.saver_to_deadline`` (``--saver-to-deadline``) holds the battery for it in the masks and the shield.

For each fold of one or more cross-validation folders (``agents.crossval --out``, the same folds), this scores every
seed's policy and every heuristic on the fold's held-out units in these settings, all under ``max-quality`` (the
cross-validation's reward):

* ``not told``: no deadline (the held-out traces as the plain real-data set has them);
* ``told``: a deadline at every phone's and laptop's session end, in the observation only;
* ``told + saver``: the same, with the battery saver's horizon reaching the deadline (masks and shield);
* ``15 min early + saver``, ``15 min late + saver``: a user who misjudges the end by a quarter of an hour (the
  deadline at the session's end − or + 900 s; at least one step into the session).
* ``told + saver from empty``: the saver counts from empty, not the reserve (``EnvParams.saver_floor_frac`` 0): it
  keeps the device alive until the deadline and may spend the reserve before it, as the oracle does;
* ``told the charger + saver`` (``… from empty``): the deadline at the first plug-in where a charger comes before
  the session ends (``traces.objectives --to-charger``: the user says when the charger comes).

Scores are normalised by the first folder's fold report (``eval/fold-i/report.json``: random and oracle on the same
episodes, the oracle with the whole trace known, as always); a death counts where that oracle survives. Writes
``OUT.md``, ``OUT.csv``, ``OUT.json`` and ``OUT.png``::

    python benchmarks/session_end.py --cv runs/cv_se50 --cv runs/cv_om_hotdr_f31 \\
        --out benchmarks/results/session_end
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import json
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from battery_saver import cv_folds, fold_reference, fold_runs, save_figure  # noqa: E402 - the same folds, runs, figures


class Setting(NamedTuple):
    name: str
    told: float | None  # the deadline's offset from the session's end, s (None: no deadline)
    to_deadline: bool  # the saver's horizon reaches it (EnvParams.saver_to_deadline)
    floor_frac: float = 1.0  # where the saver counts from, x the reserve (EnvParams.saver_floor_frac)
    to_charger: bool = False  # the deadline at the first plug-in where a charger comes first (--to-charger)


SETTINGS = (Setting("not told", None, False), Setting("told", 0.0, False), Setting("told + saver", 0.0, True),
            Setting("15 min early + saver", -900.0, True), Setting("15 min late + saver", 900.0, True),
            Setting("told + saver from empty", 0.0, True, 0.0),
            Setting("15 min early + saver from empty", -900.0, True, 0.0),
            Setting("told the charger + saver", 0.0, True, 1.0, True),
            Setting("told the charger + saver from empty", 0.0, True, 0.0, True))
HEURISTICS = ("static-largest", "static-smallest", "static-fit", "battery-ladder", "greedy-budget", "schedutil",
              "mpc")


def held_out_set(cv: Path, fold: int, told: float | None, dest: Path, max_s: float | None = None,
                 to_charger: bool = False) -> Path:
    """The fold's trace set with every session-end deadline removed (``told`` None) or one on every phone's and
    laptop's session, ``told`` seconds after its end (at least one step in); a deadline of the trace's own, not a
    session end, is kept. With ``max_s`` only deadlines no later than that are told; with ``to_charger`` the
    deadline is the first plug-in where a charger comes before the session ends."""
    import dataclasses

    from traces.objectives import session_end
    from traces.store import TraceSet

    ts = TraceSet.load(cv / "folds" / f"fold-{fold}")
    traces = []
    for t in ts:
        if (t.meta.extra or {}).get("session_end_deadline"):
            extra = {k: v for k, v in t.meta.extra.items() if k != "session_end_deadline"}
            t = t.replace(meta=dataclasses.replace(t.meta, deadline_s=None, extra=extra))
        if told is not None:
            t = session_end(t, 1.0, max_s=max_s, to_charger=to_charger)
            if told and (t.meta.extra or {}).get("session_end_deadline"):
                t = t.replace(meta=dataclasses.replace(t.meta, deadline_s=max(t.meta.deadline_s + told, 10.0)))
        traces.append(t)
    splits = {e.meta.unit: e.split for e in ts.entries}
    out = dest / f"fold-{fold}"
    out.parent.mkdir(parents=True, exist_ok=True)
    TraceSet.from_traces(traces, name=out.name, splits=splits, info=ts.info).save(out, force=True)
    return out


def score_fold(cvs: list[Path], fold: int, setting: Setting, max_steps: int, tmp: Path,
               max_s: float | None = None) -> dict:
    """Every folder's seeds and every heuristic on the fold's held-out units in one setting."""
    import numpy as np

    from agents.evaluate import evaluate_controllers, normalised_score
    from agents.registry import make_controller
    from agents.run_io import env_from_config, load_config, load_controller

    ref, rand, orc, oracle_dead = fold_reference(cvs[0], fold)
    rep_path = cvs[0] / "eval" / f"fold-{fold}" / "report.json"
    traces = str(held_out_set(cvs[0], fold, setting.told, tmp, max_s, setting.to_charger))
    controllers, group = {}, {}
    for cv in cvs:
        for r in fold_runs(cv, fold):
            name = f"{cv.name}/seed-{r.parent.name.split('-')[-1]}"
            controllers[name], group[name] = load_controller(r), cv.name
    cfg = load_config(fold_runs(cvs[0], fold)[0])

    def factory():
        return env_from_config(cfg, split="test", traces=traces, random_start=False,
                               saver_to_deadline=setting.to_deadline, saver_floor_frac=setting.floor_frac)

    for h in HEURISTICS:
        controllers[h] = (lambda name: lambda env: make_controller(name, env))(h)
        group[h] = "heuristic"
    res = evaluate_controllers(factory, controllers, max_steps=max_steps, progress=False)
    names = [e["trace_name"] for e in ref["episodes"]]
    if [e["trace_name"] for e in res["episodes"]] != names:
        raise SystemExit(f"{rep_path}: its episodes are not the fold's held-out traces; fix: use folders with the "
                         "same folds (agents.crossval --k and the same trace set)")
    out = {}
    for name, eps in res["per_episode"].items():
        ret = float(np.mean([e["return"] for e in eps]))
        dead = [n for n, e, o in zip(names, eps, oracle_dead) if e["death"] and not o]
        out[name] = {"group": group[name], "score": normalised_score(ret, rand, orc), "return": ret,
                     "deaths_not_oracle": len(dead), "died_on": dead}
    return out


def timed_score(*args) -> tuple[dict, float]:
    """``score_fold(*args)`` and the seconds it took (kept with its part, so a resumed report still says)."""
    t0 = time.perf_counter()
    return score_fold(*args), time.perf_counter() - t0


def summary_rows(results: dict, groups: list[str]) -> list[dict]:
    """One row per (setting, policy folder): mean and worst fold over seeds, deaths the oracle avoids, and whether
    every seed beats every heuristic in every fold."""
    import numpy as np

    rows = []
    for setting, folds in results.items():
        for g in groups:
            per_fold, beats, deaths, died = {}, True, 0, set()
            for f, r in folds.items():
                seeds = {k: v for k, v in r.items() if v["group"] == g}
                best_h = max(v["score"] for v in r.values() if v["group"] == "heuristic")
                per_fold[int(f)] = float(np.mean([v["score"] for v in seeds.values()]))
                beats &= all(v["score"] > best_h for v in seeds.values())
                deaths += sum(v["deaths_not_oracle"] for v in seeds.values())
                died |= {d for v in seeds.values() for d in v["died_on"]}
            rows.append({"setting": setting, "policies": g, "mean": float(np.mean(list(per_fold.values()))),
                         "worst_fold": float(min(per_fold.values())), "per_fold": per_fold,
                         "beats_every_heuristic": bool(beats), "deaths_not_oracle": int(deaths),
                         "died_on": sorted(died),
                         "best_heuristic": {int(f): max(((k, v["score"]) for k, v in r.items()
                                                         if v["group"] == "heuristic"), key=lambda x: x[1])
                                            for f, r in folds.items()}})
    return rows


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = list(dict.fromkeys(r["setting"] for r in rows))
    groups = list(dict.fromkeys(r["policies"] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(max(11.0, 1.9 * len(settings)), 4.4))
    width = 0.8 / max(1, len(groups))
    for gi, g in enumerate(groups):
        rs = [next(r for r in rows if r["setting"] == s and r["policies"] == g) for s in settings]
        x = [i + (gi - (len(groups) - 1) / 2) * width for i in range(len(settings))]
        axes[0].bar(x, [r["mean"] for r in rs], width, label=f"{g}: mean", alpha=0.8)
        axes[0].plot(x, [r["worst_fold"] for r in rs], "kv", ms=6)
        axes[1].bar(x, [r["deaths_not_oracle"] for r in rs], width, label=g, alpha=0.8)
    best = [sum(r["best_heuristic"][f][1] for f in r["best_heuristic"]) / len(r["best_heuristic"])
            for r in (next(r for r in rows if r["setting"] == s) for s in settings)]
    axes[0].plot(range(len(settings)), best, "r_", ms=30, mew=2, label="best heuristic per fold, mean")
    lo = min(min(r["worst_fold"] for r in rows), min(best)) - 0.02
    axes[0].set_ylim(lo, 1.0)
    axes[0].set_ylabel("oracle-normalised score (▼ worst fold)")
    axes[1].set_ylabel("battery deaths the oracle avoids (all seeds)")
    for ax in axes:
        ax.set_xticks(range(len(settings)), [textwrap.fill(s, 13) for s in settings], fontsize=8)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3, axis="y")
    save_figure(fig, title, path)


def main(argv=None) -> int:
    from model.cli import positive_float, positive_int
    from runtime.safeio import atomic_write_text

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cv", action="append", required=True, type=Path,
                    help="agents.crossval --out folder with trained folds; repeat to compare folders trained on the "
                         "same folds (the first one's fold reports normalise every score)")
    ap.add_argument("--folds", default=None, help="comma-separated folds (default: every fold the first folder has)")
    ap.add_argument("--max-steps", type=positive_int, default=720)
    ap.add_argument("--settings", default=None, type=lambda t: [x.strip() for x in t.split(",") if x.strip()],
                    help=f"comma-separated subset of {[x.name for x in SETTINGS]} (default: all)")
    ap.add_argument("--session-max-h", type=positive_float, default=None, metavar="H",
                    help="tell only the sessions of at most H hours (traces.objectives --session-max-h; 2: those the "
                         "720-step episode scores whole); default: every session")
    ap.add_argument("--jobs", type=positive_int, default=1, help="(setting, fold) tasks at once, one process each")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/session_end"),
                    help="output path without extension")
    ap.add_argument("--force", action="store_true",
                    help="replace an existing report (the (setting, fold) results kept in OUT.parts/ from an earlier "
                         "run with the same --cv and --max-steps are reused; delete the folder to score afresh)")
    a = ap.parse_args(argv)
    bad = sorted(set(a.settings or ()) - {x.name for x in SETTINGS})
    if bad:
        ap.error(f"--settings {bad}: not a setting; choose from {[x.name for x in SETTINGS]}")
    folds = cv_folds(ap, a.cv, a.folds)
    if a.out.with_suffix(".md").exists() and not a.force:
        ap.error(f"{a.out.with_suffix('.md')} exists; pass --force to replace it")
    t0 = time.perf_counter()
    settings = [x for x in SETTINGS if a.settings is None or x.name in a.settings]
    results: dict[str, dict[int, dict]] = {x.name: {} for x in settings}
    # each (setting, fold) is kept as it finishes, so an interrupted run (or one over more folds) resumes
    parts = a.out.parent / f"{a.out.name}.parts"
    parts.mkdir(parents=True, exist_ok=True)
    max_s = None if a.session_max_h is None else 3600.0 * a.session_max_h
    key = {"cv": [str(c) for c in a.cv], "max_steps": a.max_steps, **({"max_s": max_s} if max_s else {})}

    def part(s: str, f: int) -> Path:
        return parts / f"{s.replace(' ', '_').replace('+', 'plus')}-fold-{f}.json"

    tasks, seconds = [], 0.0
    for x in settings:
        for f in folds:
            kept = json.loads(part(x.name, f).read_text()) if part(x.name, f).is_file() else None
            if kept is not None and kept.get("key") == key:
                results[x.name][f] = kept["result"]
                seconds += kept.get("seconds", 0.0)
            else:
                tasks.append((x, f))
    if len(tasks) < len(settings) * len(folds):
        print(f"[session_end] {len(settings) * len(folds) - len(tasks)} (setting, fold) results kept in {parts}",
              file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="session_end_") as tmp, \
            concurrent.futures.ProcessPoolExecutor(a.jobs) as pool:
        # one folder per task: two settings of a fold write their held-out sets side by side
        futs = {pool.submit(timed_score, a.cv, f, x, a.max_steps, Path(tmp) / f"task-{n}", max_s): (x.name, f)
                for n, (x, f) in enumerate(tasks)}
        for fut in concurrent.futures.as_completed(futs):
            s, f = futs[fut]
            results[s][f], took = fut.result()
            seconds += took
            atomic_write_text(part(s, f), json.dumps({"key": key, "result": results[s][f], "seconds": took}) + "\n")
            print(f"[session_end] {s}, fold {f}: done at {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    results = {s: dict(sorted(r.items())) for s, r in results.items()}
    groups = [cv.name for cv in a.cv]
    rows = summary_rows(results, groups)
    wall = time.perf_counter() - t0
    a.out.parent.mkdir(parents=True, exist_ok=True)
    date = time.strftime("%Y-%m-%d")
    cmd = ("python benchmarks/session_end.py " + " ".join(f"--cv {c}" for c in a.cv)
           + (f" --folds {a.folds}" if a.folds else "") + (f" --max-steps {a.max_steps}" if a.max_steps != 720 else "")
           + (f" --settings '{','.join(a.settings)}'" if a.settings else "")
           + (f" --session-max-h {a.session_max_h:g}" if a.session_max_h else "")
           + (f" --jobs {a.jobs}" if a.jobs > 1 else "") + f" --out {a.out}")
    md = [f"# The user's word on when a session ends: {', '.join(groups)}, folds {', '.join(map(str, folds))} "
          f"({date})", "",
          "max-quality on each fold's held-out units from row 0, up to "
          f"{a.max_steps} steps; score = (return − random) / (oracle − random), both from "
          f"`{a.cv[0]}/eval/fold-i/report.json`; a death counts where that oracle survives. *told*: a deadline at "
          "every phone's and laptop's session end"
          + (f" (sessions of at most {a.session_max_h:g} h; longer ones are not told)" if a.session_max_h else "")
          + ", in the observation; *15 min early / late*: 900 s before / after "
          "it; *told the charger*: the deadline at the first plug-in where a charger comes before the session "
          "ends (`traces.objectives --to-charger`); *+ saver*: the battery saver's horizon reaches it "
          "(`EnvParams.saver_to_deadline`), holding the reserve until then; *from empty*: the saver counts from "
          "empty instead (`EnvParams.saver_floor_frac` 0: it keeps the device alive until the deadline and may "
          "spend the reserve before it). Every heuristic "
          "runs under the same masks and sees the same deadline (the MPC plans to it).", "",
          "| setting | policies | mean | worst fold | per fold | every seed above every heuristic, every fold "
          "| deaths the oracle avoids | died on |",
          "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['setting']} | `{r['policies']}` | {r['mean']:.3f} | {r['worst_fold']:.3f} | "
                  + " / ".join(f"{r['per_fold'][f]:.3f}" for f in sorted(r["per_fold"]))
                  + f" | {'yes' if r['beats_every_heuristic'] else 'no'} | {r['deaths_not_oracle']} | "
                  + (", ".join(f"{d[:8]}…{d[-19:]}" for d in r["died_on"]) or "–") + " |")
    md += ["", "Best heuristic per fold (same setting):", "",
           "| setting | " + " | ".join(f"fold {f}" for f in folds) + " |", "|---|" + "---|" * len(folds)]
    for setting in results:
        r = next(x for x in rows if x["setting"] == setting)
        md.append(f"| {setting} | " + " | ".join(f"{r['best_heuristic'][f][0]} {r['best_heuristic'][f][1]:.3f}"
                                                for f in folds) + " |")
    md += ["", f"![score and deaths per setting]({a.out.name}.png)", "",
           f"`{cmd}` ({seconds:.0f} s of scoring in {len(settings) * len(folds)} (setting, fold) tasks)"]
    atomic_write_text(a.out.with_suffix(".md"), "\n".join(md) + "\n")
    atomic_write_text(a.out.with_suffix(".json"), json.dumps(
        {"date": date, "cv": [str(c) for c in a.cv], "folds": folds, "max_steps": a.max_steps, "rows": rows,
         "per_fold": {s: {str(f): v for f, v in r.items()} for s, r in results.items()}, "wall_s": wall,
         "scoring_s": seconds},
        indent=1) + "\n")
    with open(a.out.with_suffix(".csv"), "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["setting", "fold", "controller", "group", "score", "deaths_not_oracle"])
        for s, r in results.items():
            for f, ctl in r.items():
                for name, v in ctl.items():
                    w.writerow([s, f, name, v["group"], f"{v['score']:.4f}", v["deaths_not_oracle"]])
    plot(rows, a.out.with_suffix(".png"), f"the user's word on the session's end: {', '.join(groups)}")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
