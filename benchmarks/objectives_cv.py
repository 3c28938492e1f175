"""The user's objectives across cross-validation folds: one table per objective, a row per fold.

    python benchmarks/objectives_cv.py --reports runs/cvobj/eval-f0.json runs/cvobj/eval-f1.json ... \\
        --group "no rule=/nobr/" --group "budget rule=/br/" [--out benchmarks/results/objectives_cv] [--force]

Reads the reports ``benchmarks/objectives.py`` wrote for each fold (``--traces <folds>/fold-i --runs ...``; one
fold per report) and groups their ``--runs`` into recipes: a run belongs to the ``--group NAME=TEXT`` whose TEXT
is in its path (the first that matches; a run that matches none is an error), and its ``warm_start`` folder to
``NAME (warm start)``. A recipe with several runs in one fold (seeds) is scored by their mean there.

For each objective and fold: every recipe's oracle-normalised score, the best rule's (the baselines less the random
policy and the oracle), and how many episodes the constraint binds in; then per recipe the mean and the worst fold,
the folds in which it is above every rule, and the RL step (the recipe less its warm start). Then per device kind
(phone, solar node, laptop; every fold's held-out episodes of that kind pooled, each kind's units held out once): each
recipe's score on the kind's own random and oracle, the range over its runs (the i-th run of the recipe in each fold
taken together), and the best rule's on the same episodes. Writes OUT.md, OUT.json, OUT.png (a panel per objective, a
point per recipe and fold, the best rule as a bar) and OUT-kinds.png (the same per device kind).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.objectives import refuse_to_overwrite, write_report  # noqa: E402

OBJECTIVES = ("max-quality", "min-energy", "last-until")
NOT_RULES = ("random", "oracle")  # the baselines that are not hand-written rules
WARM = " (warm start)"


def parse_group(text: str) -> tuple[str, str]:
    """``NAME=TEXT`` -> (NAME, TEXT), or ValueError with the fix."""
    name, sep, sub = text.partition("=")
    if not sep or not name.strip() or not sub:
        raise ValueError(f"--group {text!r}: expected NAME=TEXT (e.g. \"budget rule=/br/\"), a recipe's name and a "
                         "text its runs' paths contain")
    return name.strip(), sub


def fold_labels(reports: list[dict]) -> list[str]:
    """Each fold report's label: N when its trace set is a ``fold-N`` folder of ``traces.folds`` (the fold it holds
    out, whichever reports are summarised), else its place in the list."""
    out = []
    for i, rep in enumerate(reports):
        m = re.fullmatch(r"fold-(\d+)", Path(str(rep.get("traces", ""))).name)
        out.append(m.group(1) if m else str(i))
    return out if len(set(out)) == len(out) else [str(i) for i in range(len(reports))]


def recipe_of(run: str, groups: list[tuple[str, str]]) -> str:
    """The recipe a run's path belongs to (its warm start gets the suffix ``WARM``)."""
    path = run.rstrip("/")
    warm = Path(path).name == "warm_start"
    for name, sub in groups:
        if sub in path:
            return name + (WARM if warm else "")
    raise ValueError(f"run {run}: its path contains none of the --group texts ({', '.join(s for _, s in groups)}); "
                     "fix: add a --group NAME=TEXT that it contains")


def fold_scores(report: dict, groups: list[tuple[str, str]]) -> dict:
    """One report -> {objective: {"recipes": {name: score}, "best_rule": (name, score), "binding": (k, n)}}."""
    if len(report.get("sets", [])) != 1:
        raise ValueError(f"{len(report.get('sets', []))} trace sets in one report: a fold report scores one "
                         "(benchmarks/objectives.py --traces <folds>/fold-i)")
    names = {f"rl:{i}": recipe_of(r, groups) for i, r in enumerate(report["runs"])}
    out = {}
    for obj, o in report["sets"][0]["objectives"].items():
        ctrl = o["controllers"]
        if "oracle" not in ctrl:
            raise ValueError(f"{report['sets'][0]['traces']}: no scores (a --runs-only report); fix: score the fold "
                             "without --runs-only")
        per: dict[str, list[float]] = {}
        for key, recipe in names.items():
            if key in ctrl:  # a run added for some objectives only (objectives.py --add-to --kinds) is not here
                per.setdefault(recipe, []).append(float(ctrl[key]["score"]))
        rules = {k: float(v["score"]) for k, v in ctrl.items() if not k.startswith("rl:") and k not in NOT_RULES}
        best = max(rules, key=rules.get)
        out[obj] = {"recipes": {r: sum(v) / len(v) for r, v in per.items()}, "best_rule": (best, rules[best]),
                    "binding": (int(o["binding_episodes"]), int(o["episodes"]))}
    return out


def trace_kinds(report: dict) -> dict[str, str]:
    """Trace name -> device kind for a fold report's episodes: from the episodes themselves (reports written since
    2026-12-07 carry ``device_kind``), else from the manifest of the trace set the report names. ValueError, with the
    fix, when neither has them."""
    s = report["sets"][0]
    eps = next(iter(next(iter(s["objectives"].values()))["controllers"].values()))["per_episode"]
    if all("device_kind" in e for e in eps):
        return {e["trace"]: e["device_kind"] for e in eps}
    from traces import TraceSet

    try:
        ts = TraceSet.load(Path(s["traces"]))
    except (OSError, ValueError) as exc:
        raise ValueError(f"its episodes carry no device kind and its trace set {s['traces']} cannot be read ({exc}); "
                         "fix: run from the folder the report was made in, or score the fold again") from None
    kinds = {e.name: e.meta.device_kind for e in ts.entries}
    missing = [e["trace"] for e in eps if e["trace"] not in kinds]
    if missing:
        raise ValueError(f"{len(missing)} of its traces (e.g. {missing[0]}) are not in {s['traces']}; fix: point the "
                         "report at the trace set it scored, or score the fold again")
    return kinds


def kind_scores(reports: list[dict], groups: list[tuple[str, str]]) -> dict:
    """Per objective and device kind, pooled over the folds (each fold's held-out episodes of the kind): the
    episodes, the folds they come from, each recipe's score on the kind's own random and oracle (its runs' mean per
    episode) with the range over its runs (the i-th run of a recipe in every fold taken as one), every rule's score
    and the best rule."""
    sums: dict = {}
    for rep in reports:
        kinds = trace_kinds(rep)
        names = {f"rl:{i}": recipe_of(r, groups) for i, r in enumerate(rep["runs"])}
        for obj, o in rep["sets"][0]["objectives"].items():
            ctrl = o["controllers"]
            eps = [e["trace"] for e in ctrl["oracle"]["per_episode"]]
            cols: dict[str, list[float]] = {}
            runs_of: dict[str, list[list[float]]] = {}  # a recipe's runs in this fold, in order
            for key, c in ctrl.items():
                ret = [float(e["return"]) for e in c["per_episode"]]
                if key.startswith("rl:"):
                    if key not in names:
                        continue
                    rs = runs_of.setdefault(names[key], [])
                    cols[f"{names[key]}\x00{len(rs)}"] = ret  # the recipe's i-th run
                    rs.append(ret)
                else:
                    cols[key] = ret
            for rec, rs in runs_of.items():  # the recipe: its runs' mean per episode
                cols[f"{rec}\x00mean"] = [sum(x) / len(x) for x in zip(*rs)]
            for j, tr in enumerate(eps):
                k = sums.setdefault(obj, {}).setdefault(kinds[tr], {"episodes": 0, "folds": set(), "sum": {},
                                                                    "count": {}})
                k["episodes"] += 1
                k["folds"].add(rep["sets"][0]["traces"])
                for col, ret in cols.items():
                    k["sum"][col] = k["sum"].get(col, 0.0) + ret[j]
                    k["count"][col] = k["count"].get(col, 0) + 1
    out: dict = {}
    for obj in OBJECTIVES:
        for kind, k in sorted(sums.get(obj, {}).items()):
            tot = k["sum"]
            lo, hi = tot["random"], tot["oracle"]
            score = {c: (v - lo) / (hi - lo) if abs(hi - lo) > 1e-9 else float("nan") for c, v in tot.items()}
            recipes: dict[str, dict] = {}
            for c, v in score.items():
                rec, sep, which = c.partition("\x00")
                if not sep:
                    continue
                r = recipes.setdefault(rec, {"mean": float("nan"), "runs": []})
                if which == "mean":
                    r["mean"] = v if k["count"][c] == k["episodes"] else float("nan")
                elif k["count"][c] == k["episodes"]:  # a range only over runs that cover every episode of the kind
                    r["runs"].append(v)
            for r in recipes.values():
                r["min"], r["max"] = (min(r["runs"]), max(r["runs"])) if r["runs"] else (float("nan"),) * 2
            rules = {c: v for c, v in score.items() if "\x00" not in c and c not in NOT_RULES}
            best = max(rules, key=rules.get)
            out.setdefault(obj, {})[kind] = {"episodes": k["episodes"], "folds": len(k["folds"]),
                                             "recipes": recipes, "rules": rules, "best_rule": (best, rules[best])}
    return out


def summarise(folds: list[dict]) -> dict:
    """Per objective and recipe: mean and worst fold, folds above every rule, the RL step over its warm start."""
    summary = {}
    for obj in OBJECTIVES:
        rows = [f[obj] for f in folds if obj in f]
        if not rows:
            continue
        recipes = list(dict.fromkeys(r for row in rows for r in row["recipes"]))
        per = {}
        for r in recipes:
            s = [row["recipes"][r] for row in rows if r in row["recipes"]]
            above = sum(row["recipes"][r] > row["best_rule"][1] for row in rows if r in row["recipes"])
            entry = {"mean": sum(s) / len(s), "worst": min(s), "above_rules": above, "folds": len(s)}
            if not r.endswith(WARM) and r + WARM in recipes:
                d = [row["recipes"][r] - row["recipes"][r + WARM] for row in rows
                     if r in row["recipes"] and r + WARM in row["recipes"]]
                entry["rl_step"] = sum(d) / len(d)
                entry["rl_step_better"] = sum(x > 0 for x in d)
            per[r] = entry
        best = [row["best_rule"][1] for row in rows]
        summary[obj] = {"recipes": per, "best_rule_mean": sum(best) / len(best)}
    return summary


def over_objectives(folds: list[dict]) -> dict:
    """Per fold, each recipe's score averaged over the objectives the fold scored it under (all of them, else it is
    left out), and the best rules' likewise (each objective's own best rule)."""
    rows = []
    for f in folds:
        objs = [o for o in OBJECTIVES if o in f]
        recipes = list(dict.fromkeys(r for o in objs for r in f[o]["recipes"]))
        rows.append({"recipes": {r: sum(f[o]["recipes"][r] for o in objs) / len(objs) for r in recipes
                                 if all(r in f[o]["recipes"] for o in objs)},
                     "best_rules": sum(f[o]["best_rule"][1] for o in objs) / len(objs)})
    recipes = list(dict.fromkeys(r for row in rows for r in row["recipes"]))
    mean = {r: sum(row["recipes"][r] for row in rows if r in row["recipes"])
            / sum(r in row["recipes"] for row in rows) for r in recipes}
    return {"folds": rows, "mean": mean, "best_rules_mean": sum(row["best_rules"] for row in rows) / max(1, len(rows))}


def to_markdown(data: dict) -> str:
    lines = [f"# Objectives across folds ({data['date']})", "",
             "Oracle-normalised scores (random 0, the oracle 1) per fold's test traces, from the fold reports of "
             "`benchmarks/objectives.py`; a recipe with several runs in a fold is their mean. Energy is modelled "
             "(the reports' profile). Generated by `benchmarks/objectives_cv.py`.", ""]
    labels = fold_labels(data["reports"])
    for i, rep in enumerate(data["reports"]):
        lines.append(f"* fold {labels[i]}: `{rep['path']}` ({rep['traces']}, {rep['episodes']} episodes, split "
                     f"{rep['split']})")
    for obj in OBJECTIVES:
        if obj not in data["summary"]:
            continue
        recipes = list(data["summary"][obj]["recipes"])
        lines += ["", f"## {obj}", "", "| fold | binds | " + " | ".join(recipes) + " | best rule |",
                  "|---|---|" + "---|" * len(recipes) + "---|"]
        for i, f in enumerate(data["folds"]):
            row = f[obj]
            best_name, best = row["best_rule"]
            cells = [f"{row['recipes'][r]:.3f}" if r in row["recipes"] else "–" for r in recipes]
            lines.append(f"| {labels[i]} | {row['binding'][0]}/{row['binding'][1]} | " + " | ".join(cells)
                         + f" | {best_name} {best:.3f} |")
        s = data["summary"][obj]
        lines.append("| mean | | " + " | ".join(f"{s['recipes'][r]['mean']:.3f}" for r in recipes)
                     + f" | {s['best_rule_mean']:.3f} |")
        lines.append("| worst fold | | " + " | ".join(f"{s['recipes'][r]['worst']:.3f}" for r in recipes) + " | |")
        lines.append("| folds above every rule | | " + " | ".join(
            f"{s['recipes'][r]['above_rules']} of {s['recipes'][r]['folds']}" for r in recipes) + " | |")
        steps = [r for r in recipes if "rl_step" in s["recipes"][r]]
        if steps:
            lines += ["", "The RL step (the recipe less its warm start, mean over folds): " + "; ".join(
                f"{r} {s['recipes'][r]['rl_step']:+.3f} (better in {s['recipes'][r]['rl_step_better']} of "
                f"{s['recipes'][r]['folds']})" for r in steps) + "."]
    over = data["over_objectives"]
    rows, recipes = over["folds"], list(over["mean"])
    n_obj = len(data["summary"])
    if n_obj > 1:  # reports that score one objective (objectives.py --kinds) have no mean over objectives
        lines += ["", f"## Mean over the {'three' if n_obj == 3 else n_obj} objectives", "",
                  "| fold | " + " | ".join(recipes) + " | each objective's best rule |",
                  "|---|" + "---|" * len(recipes) + "---|"]
        for i, row in enumerate(rows):
            lines.append(f"| {labels[i]} | " + " | ".join(f"{row['recipes'][r]:.3f}" if r in row["recipes"] else "–"
                                                  for r in recipes) + f" | {row['best_rules']:.3f} |")
        lines.append("| mean | " + " | ".join(f"{over['mean'][r]:.3f}" for r in recipes)
                     + f" | {over['best_rules_mean']:.3f} |")
    lines += ["", f"![objectives across folds]({Path(data['out']).name}.png)", ""]
    if data.get("kinds"):
        lines += kinds_markdown(data["kinds"], Path(data["out"]).name)
    return "\n".join(lines)


def kinds_markdown(kinds: dict, stem: str) -> list[str]:
    """The per-device-kind section of :func:`to_markdown`."""
    lines = ["## Per device kind", "",
             "Every fold's held-out episodes of one device kind pooled (each kind's units are held out once), scored "
             "on the kind's own random policy and oracle; in brackets the range over a recipe's runs (its i-th run "
             "in every fold taken as one). The best rule is the best on the kind's pooled episodes.", ""]
    for obj in OBJECTIVES:
        if obj not in kinds:
            continue
        rows = kinds[obj]
        recipes = list(dict.fromkeys(r for row in rows.values() for r in row["recipes"]))
        lines += [f"### {obj}", "", "| device kind | episodes (folds) | " + " | ".join(recipes) + " | best rule |",
                  "|---|---|" + "---|" * len(recipes) + "---|"]
        for kind, row in rows.items():
            cells = []
            for r in recipes:
                e = row["recipes"].get(r)
                cells.append("–" if e is None else f"{e['mean']:.3f}" + (
                    f" ({e['min']:.3f}–{e['max']:.3f})" if len(e["runs"]) > 1 else ""))
            name, best = row["best_rule"]
            lines.append(f"| {kind} | {row['episodes']} ({row['folds']}) | " + " | ".join(cells)
                         + f" | {name} {best:.3f} |")
        lines.append("")
    lines += [f"![per device kind]({stem}-kinds.png)", ""]
    return lines


def plot(data: dict, path: Path) -> None:
    """A panel per objective: the best rule per fold as a bar, each recipe as a marker."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    objs = [o for o in OBJECTIVES if o in data["summary"]]
    fig, axes = plt.subplots(1, len(objs), figsize=(4.2 * len(objs), 3.6), sharey=True, squeeze=False)
    markers = "osD^vP*X"
    for ax, obj in zip(axes[0], objs):
        recipes = list(data["summary"][obj]["recipes"])
        xs = range(len(data["folds"]))
        ax.bar(list(xs), [f[obj]["best_rule"][1] for f in data["folds"]], color="0.85", label="best rule")
        for j, r in enumerate(recipes):
            ys = [f[obj]["recipes"].get(r, float("nan")) for f in data["folds"]]
            ax.plot([x + (j - (len(recipes) - 1) / 2) * 0.12 for x in xs], ys, markers[j % len(markers)],
                    label=r, mfc="none" if r.endswith(WARM) else None)
        ax.set_title(obj)
        ax.set_xticks(list(xs), [f"fold {n}" for n in fold_labels(data["reports"])])
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("score (random 0, oracle 1)")
    lo = min(min(f[o]["best_rule"][1] for f in data["folds"]) for o in objs)
    lo = min([lo] + [v["worst"] for o in objs for v in data["summary"][o]["recipes"].values()])
    axes[0][0].set_ylim(max(lo - 0.1, -1.0), 1.0)
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_kinds(kinds: dict, path: Path) -> None:
    """A panel per objective: the best rule per device kind as a bar, each recipe's mean as a marker with its runs'
    range as an error bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    objs = [o for o in OBJECTIVES if o in kinds]
    fig, axes = plt.subplots(1, len(objs), figsize=(4.2 * len(objs), 3.6), sharey=True, squeeze=False)
    markers = "osD^vP*X"
    lo = 1.0
    for ax, obj in zip(axes[0], objs):
        rows = kinds[obj]
        names = list(rows)
        recipes = list(dict.fromkeys(r for row in rows.values() for r in row["recipes"]))
        xs = range(len(names))
        ax.bar(list(xs), [rows[k]["best_rule"][1] for k in names], color="0.85", label="best rule")
        for j, r in enumerate(recipes):
            e = [rows[k]["recipes"].get(r) for k in names]
            ys = [x["mean"] if x else float("nan") for x in e]
            err = [[y - x["min"] if x and x["runs"] else 0.0 for x, y in zip(e, ys)],
                   [x["max"] - y if x and x["runs"] else 0.0 for x, y in zip(e, ys)]]
            ax.errorbar([x + (j - (len(recipes) - 1) / 2) * 0.12 for x in xs], ys, yerr=err,
                        fmt=markers[j % len(markers)], capsize=2, label=r, mfc="none" if r.endswith(WARM) else None)
            lo = min([lo] + [x["min"] for x in e if x and x["runs"]] + [y for y in ys if y == y])
        lo = min([lo] + [rows[k]["best_rule"][1] for k in names])
        ax.set_title(obj)
        ax.set_xticks(list(xs), [f"{k} ({rows[k]['episodes']})" for k in names])
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("score on the kind's episodes")
    axes[0][0].set_ylim(max(lo - 0.1, -1.0), 1.0)
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_cli(ap: argparse.ArgumentParser, argv, reports_help: str, group_help: str, out_default: str | None):
    """The options of a report over grouped runs (``--reports``, ``--group``, ``--out``, ``--force``), parsed:
    ``(args, groups, out)``; a bad group, or an existing OUT without ``--force``, is a usage error."""
    ap.add_argument("--reports", nargs="+", required=True, help=reports_help)
    ap.add_argument("--group", action="append", default=[], required=True, help=group_help)
    ap.add_argument("--out", default=out_default, required=out_default is None,
                    help="output path without extension (OUT.md, OUT.json)")
    ap.add_argument("--force", action="store_true", help="replace an existing report")
    a = ap.parse_args(argv)
    try:
        groups = [parse_group(g) for g in a.group]
    except ValueError as exc:
        ap.error(str(exc))
    out = Path(a.out)
    refuse_to_overwrite(ap, out, a.force)
    return a, groups, out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    a, groups, out = parse_cli(ap, argv, "benchmarks/objectives.py JSON reports, one per fold",
                               "NAME=TEXT: the runs whose path contains TEXT are the recipe NAME (repeat per recipe)",
                               str(REPO / "benchmarks" / "results" / "objectives_cv"))
    folds, reports, raw = [], [], []
    for p in a.reports:
        try:
            rep = json.loads(Path(p).read_text())
            folds.append(fold_scores(rep, groups))
            trace_kinds(rep)
            raw.append(rep)
        except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            ap.error(f"--reports {p}: {exc!s}" + ("" if isinstance(exc, ValueError) else
                                                  "; fix: pass a JSON report written by benchmarks/objectives.py"))
        s = rep["sets"][0]
        reports.append({"path": p, "traces": s["traces"], "split": s.get("split", rep.get("split", "test")),
                        "episodes": next(iter(s["objectives"].values()))["episodes"]})
    data = {"date": time.strftime("%Y-%m-%d"), "out": str(out), "groups": dict(groups), "reports": reports,
            "folds": folds, "summary": summarise(folds), "over_objectives": over_objectives(folds),
            "kinds": kind_scores(raw, groups)}
    out.parent.mkdir(parents=True, exist_ok=True)
    write_report(out, data, to_markdown(data))
    plot(data, out.with_suffix(".png"))
    plot_kinds(data["kinds"], out.parent / f"{out.name}-kinds.png")
    print(f"wrote {out.with_suffix('.png')}, {out.parent / (out.name + '-kinds.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
