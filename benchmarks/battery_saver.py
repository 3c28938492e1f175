"""What the battery saver costs and what it buys: deaths the oracle avoids against the score, per saver setting.

A device does not know when its session ends or when a charger comes, and the oracle that scores every controller
does. On a nearly empty battery a policy without that foresight must either spend (and die where the session goes
on) or hedge (and lose quality where it ends). The battery saver (``EnvParams.saver_s``, ``deploy.py run
--battery-saver-min``, ``agents.evaluate --battery-saver-min``) is that hedge, in the masks and the shield: only the
cheapest quarter of configurations while the device's own load and the smallest configuration would bring the
battery to its reserve within the set time.

For each fold of a cross-validation folder (``agents.crossval --out``) and each saver setting, this scores the
fold's trained policies (every seed, as they are: the saver acts through the action masks, as a device's shield
would) and the schedutil-like rule (held to the same masks) on the fold's held-out units. Scores are normalised by
the fold's own random and oracle returns from its ``agents.evaluate`` report (``eval/fold-i/report.json``, without
the saver), so that one setting compares with another; a death counts where that report's oracle survives.
Writes ``OUT.md``, ``OUT.csv``, ``OUT.json`` and ``OUT.png``::

    python benchmarks/battery_saver.py --cv runs/cv_om_flat --minutes 0,10,20,30,60 \\
        --out benchmarks/results/battery_saver
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RULE = "schedutil"


def fold_runs(cv: Path, fold: int) -> list[Path]:
    """The fold's trained run folders, one per seed (``runs/fold-i/seed-s/<run>``)."""
    runs = sorted(p for p in (cv / "runs" / f"fold-{fold}").glob("seed-*/*") if (p / "config.json").is_file())
    if not runs:
        raise SystemExit(f"{cv}/runs/fold-{fold}: no trained runs (seed-*/<run>/config.json); fix: point --cv at an "
                         "agents.crossval --out folder whose folds were trained")
    return runs


def fold_reference(cv: Path, fold: int) -> tuple[dict, float, float, list[bool]]:
    """The fold's report without the saver (``eval/fold-i/report.json``): the report, the random and oracle mean
    returns that normalise every score, and per episode whether the oracle died."""
    import numpy as np

    rep_path = cv / "eval" / f"fold-{fold}" / "report.json"
    if not rep_path.is_file():
        raise SystemExit(f"{rep_path}: missing; fix: run agents.crossval --report-only --out {cv} first")
    ref = json.loads(rep_path.read_text())
    pe = ref["per_episode"]
    rand, orc = (float(np.mean([e["return"] for e in pe[k]])) for k in ("random", "oracle"))
    return ref, rand, orc, [bool(e["death"]) for e in pe["oracle"]]


def score_fold(cv: Path, fold: int, minutes: float, max_steps: int) -> dict:
    """Every seed's policy and the rule on the fold's held-out units under a ``minutes`` saver."""
    import numpy as np

    from agents.evaluate import evaluate_controllers, normalised_score
    from agents.registry import make_controller
    from agents.run_io import env_from_config, load_config, load_controller

    ref, rand, orc, oracle_dead = fold_reference(cv, fold)
    rep_path = cv / "eval" / f"fold-{fold}" / "report.json"
    runs = fold_runs(cv, fold)
    cfg = load_config(runs[0])  # the fold's env (every seed trains under the same parameters)
    traces = str(cv / "folds" / f"fold-{fold}")

    def factory():
        return env_from_config(cfg, split="test", traces=traces, random_start=False, saver_s=60.0 * minutes)

    controllers = {f"seed-{r.parent.name.split('-')[-1]}": load_controller(r) for r in runs}
    controllers[RULE] = lambda env: make_controller(RULE, env)
    res = evaluate_controllers(factory, controllers, max_steps=max_steps, progress=False)
    names = [e["trace_name"] for e in ref["episodes"]]
    if [e["trace_name"] for e in res["episodes"]] != names:
        raise SystemExit(f"{rep_path}: its episodes are not the fold's held-out traces; fix: re-run its evaluation")
    out = {}
    for name, eps in res["per_episode"].items():
        ret = float(np.mean([e["return"] for e in eps]))
        dead = [n for n, e, o in zip(names, eps, oracle_dead) if e["death"] and not o]
        out[name] = {"score": normalised_score(ret, rand, orc), "return": ret, "deaths_not_oracle": len(dead),
                     "died_on": dead, "deaths": int(sum(e["death"] for e in eps)),
                     "q_tokens": float(np.mean([e["q_tokens"] for e in eps])),
                     "energy_j": float(np.mean([e["energy_j"] for e in eps]))}
    return out


def summary_rows(results: dict) -> list[dict]:
    """One row per saver setting: the policies' mean and worst-fold score, their deaths the oracle avoids, and
    the rule's."""
    import numpy as np

    rows = []
    for m, folds in results.items():
        per_fold = {f: np.mean([v["score"] for k, v in r.items() if k != RULE]) for f, r in folds.items()}
        rows.append({"minutes": float(m),
                     "policy_mean": float(np.mean([v["score"] for r in folds.values() for k, v in r.items()
                                                   if k != RULE])),
                     "policy_worst_fold": float(min(per_fold.values())),
                     "policy_deaths_not_oracle": int(sum(v["deaths_not_oracle"] for r in folds.values()
                                                         for k, v in r.items() if k != RULE)),
                     "rule_mean": float(np.mean([r[RULE]["score"] for r in folds.values()])),
                     "rule_deaths_not_oracle": int(sum(r[RULE]["deaths_not_oracle"] for r in folds.values())),
                     "per_fold": {int(f): float(s) for f, s in per_fold.items()},
                     "died_on": sorted({d for r in folds.values() for k, v in r.items() if k != RULE
                                        for d in v["died_on"]})})
    return rows


def cv_folds(ap: argparse.ArgumentParser, cvs: list[Path], folds: str | None) -> list[int]:
    """The folds of ``--folds`` (default: every fold the first folder has), after checking that every ``--cv`` is an
    ``agents.crossval --out`` folder and that all hold out the same units in those folds (``ap.error`` otherwise).
    Shared by the benchmarks that compare cross-validation folders fold by fold."""
    for cv in cvs:
        if not (cv / "folds").is_dir():
            ap.error(f"--cv {cv}: no folds/ folder; fix: pass an agents.crossval --out folder")
    try:
        out = ([int(x) for x in folds.split(",") if x.strip()] if folds else
               sorted(int(p.name.split("-")[1]) for p in (cvs[0] / "folds").glob("fold-*")))
    except ValueError:
        ap.error(f"--folds {folds!r}: comma-separated fold numbers, e.g. 0,1,2,3")
    have = sorted(int(p.name.split("-")[1]) for p in (cvs[0] / "folds").glob("fold-*"))
    if not out or any(f not in have for f in out):
        ap.error(f"--folds {folds!r}: {cvs[0]} has folds {','.join(map(str, have)) or 'none'}; fix: choose among them")
    for cv in cvs[1:]:
        for f in out:
            units = [json.loads((c / "folds" / f"fold-{f}" / "manifest.json").read_text())["splits"]["test"]
                     for c in (cvs[0], cv)]
            if units[0] != units[1]:
                ap.error(f"--cv {cv}: fold {f} holds out other units than {cvs[0]}'s; fix: compare folders built "
                         "with the same --k from the same units")
    return out


def save_figure(fig, title: str, path: Path) -> None:
    """The benchmarks' figure ending: the title, a tight layout, 120 dpi, the figure closed."""
    import matplotlib.pyplot as plt

    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    m = [r["minutes"] for r in rows]
    panels = (("oracle-normalised score", [("policy_mean", "o-", "learned policies (mean over folds and seeds)"),
                                           ("policy_worst_fold", "s--", "learned policies, worst fold"),
                                           ("rule_mean", "^:", RULE)]),
              ("battery deaths the oracle avoids", [("policy_deaths_not_oracle", "o-", "learned policies (all seeds)"),
                                                    ("rule_deaths_not_oracle", "^:", RULE)]))
    for ax, (ylabel, lines) in zip(axes, panels):
        for key, style, label in lines:
            ax.plot(m, [r[key] for r in rows], style, label=label)
        ax.set_xlabel("battery saver, minutes")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    save_figure(fig, title, path)


def main(argv=None) -> int:
    from model.cli import positive_int
    from runtime.safeio import atomic_write_text

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cv", required=True, help="agents.crossval --out folder with trained folds")
    ap.add_argument("--minutes", default="0,10,20,30,60", help="saver settings, minutes, comma-separated (>= 0)")
    ap.add_argument("--folds", default=None, help="comma-separated folds (default: every fold the folder has)")
    ap.add_argument("--max-steps", type=positive_int, default=720)
    ap.add_argument("--out", required=True, help="output path without suffix (OUT.md, .csv, .json, .png)")
    ap.add_argument("--force", action="store_true", help="replace an existing OUT.md / .csv / .json / .png")
    args = ap.parse_args(argv)
    cv = Path(args.cv)
    try:
        minutes = [float(x) for x in args.minutes.split(",") if x.strip()]
    except ValueError:
        ap.error(f"argument --minutes: {args.minutes!r}: comma-separated numbers of minutes, e.g. 0,10,30")
    if not minutes or any(not (m >= 0 and m < float("inf")) for m in minutes):
        ap.error(f"argument --minutes: {args.minutes!r}: finite numbers >= 0")
    try:
        folds = ([int(f) for f in args.folds.split(",")] if args.folds
                 else sorted(int(p.name.split("-")[1]) for p in (cv / "runs").glob("fold-*")))
    except ValueError:
        ap.error(f"argument --folds: {args.folds!r}: comma-separated fold numbers, e.g. 1,2")
    if not folds:
        ap.error(f"--cv {cv}: no runs/fold-* folders; fix: point it at an agents.crossval --out folder")
    out = Path(args.out)
    existing = [str(out.with_suffix(x)) for x in (".md", ".csv", ".json", ".png") if out.with_suffix(x).exists()]
    if existing and not args.force:
        raise SystemExit(f"{existing[0]}: already exists; choose another --out or pass --force to replace it")
    from tqdm import tqdm

    results: dict = {}
    t0 = time.time()
    with tqdm(total=len(minutes) * len(folds), desc="saver x fold", unit="fold", file=sys.stderr) as bar:
        for m in minutes:
            results[m] = {}
            for f in folds:
                bar.set_postfix_str(f"{m:g} min, fold {f}")
                results[m][f] = score_fold(cv, f, m, args.max_steps)
                bar.update(1)
    rows = summary_rows(results)
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = "python benchmarks/battery_saver.py " + " ".join(argv if argv is not None else sys.argv[1:])
    title = f"Battery saver on {cv.name}: folds {','.join(map(str, folds))}"
    lines = [f"# {title} ({time.strftime('%Y-%m-%d')})", "",
             "Scores normalised by each fold's random and oracle returns without the saver; deaths counted where "
             "that oracle survives. The policies are the folder's trained seeds, unchanged; the saver acts through "
             f"the action masks, as the shield does on a device. `{RULE}` is held to the same masks.", "",
             "| saver, min | policies: mean | worst fold | per fold | deaths the oracle avoids | "
             f"{RULE} | its deaths | policies died on |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        pf = " / ".join(f"{r['per_fold'][f]:.3f}" for f in folds)
        died = ", ".join(d[:8] + "…" + d[-19:] for d in r["died_on"]) or "–"
        lines.append(f"| {r['minutes']:g} | {r['policy_mean']:.3f} | {r['policy_worst_fold']:.3f} | {pf} | "
                     f"{r['policy_deaths_not_oracle']} | {r['rule_mean']:.3f} | {r['rule_deaths_not_oracle']} | "
                     f"{died} |")
    lines += ["", f"![score and deaths per saver setting]({out.name}.png)", "", f"`{cmd}` ({time.time() - t0:.0f} s)",
              ""]
    atomic_write_text(out.with_suffix(".md"), "\n".join(lines))
    with open(out.with_suffix(".csv.tmp"), "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["minutes", "fold", "controller", "score", "return", "deaths", "deaths_not_oracle", "q_tokens",
                    "energy_j"])
        for m, fr in results.items():
            for f, r in fr.items():
                for name, v in r.items():
                    w.writerow([m, f, name, f"{v['score']:.5f}", f"{v['return']:.3f}", v["deaths"],
                                v["deaths_not_oracle"], f"{v['q_tokens']:.1f}", f"{v['energy_j']:.1f}"])
    out.with_suffix(".csv.tmp").replace(out.with_suffix(".csv"))
    atomic_write_text(out.with_suffix(".json"), json.dumps({"command": cmd, "summary": rows, "results": {
        str(m): {str(f): r for f, r in fr.items()} for m, fr in results.items()}}, indent=1))
    plot(rows, out.with_suffix(".png"), title)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
