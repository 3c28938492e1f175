"""Which policy does val keep, and what does it score on test? Main-job seeds trained on sets that differ only in val.

    python benchmarks/val_selection.py --results "6 val traces=runs/mjs" "18 val traces=runs/val+2" \
        --out benchmarks/results/val_selection

Each ``--results`` is a ``benchmarks/main_job_seeds.py`` output folder (its ``main_job_seeds.json``, run folders and
evaluation), all of the same seeds and recipe, trained on trace sets whose train and test splits are the same and
whose val splits differ (e.g. the default set and ``python -m traces.generate --extra-val 2``). Val does not steer
training, only which policy is kept, so one seed's runs follow one trajectory; this is checked (the runs' final
weights, ``last/``, must be bit-equal) rather than assumed.

For every seed and val split, two selection rules:

* **RL checkpoints** (``train.py``'s default): the checkpoint with the best val return, as the run recorded it;
* **RL checkpoints or the warm start** (``--select-warm-start``): the warm start unless a checkpoint's val return
  beats its own. The rule's choice follows from the returns the run recorded (the warm start's, and the best
  checkpoint's); either choice is a policy whose test score the main job's evaluation measured.

Writes ``OUT.md``, ``OUT.json`` and ``OUT.png`` (each seed's val return per checkpoint, the warm start's as a line).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

RULES = ("RL checkpoints", "RL checkpoints or the warm start")


def same_weights(a: Path, b: Path) -> bool:
    """Whether two saved policies (``policy_state.pt``) hold bit-equal tensors."""
    import torch

    sa = torch.load(a / "policy_state.pt", weights_only=True, map_location="cpu")
    sb = torch.load(b / "policy_state.pt", weights_only=True, map_location="cpu")
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def load_result(label: str, folder: Path) -> dict:
    """One main_job_seeds.py output: per seed its run, recorded val returns and test scores."""
    import numpy as np

    from traces.store import TraceSet, default_trace_set_dir

    path = folder / "main_job_seeds.json"
    try:
        res = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(f"{path}: {exc} (run benchmarks/main_job_seeds.py --out {folder} first)") from None
    seeds = {}
    for row in res["seeds"]:
        run = Path(row["run"])
        if not run.is_absolute():
            run = REPO / run
        cfg = json.loads((run / "config.json").read_text())
        sel, ws = cfg.get("selected"), cfg.get("warm_start") or {}
        if not isinstance(sel, dict) or "val_return" not in ws:
            raise SystemExit(f"{run}/config.json: needs a warm-started run kept on val (\"selected\" and "
                             f"\"warm_start\".\"val_return\"); this one has neither")
        if sel.get("from") == "warm start":
            raise SystemExit(f"{run}: trained with --select-warm-start; this comparison derives that rule from runs "
                             f"trained without it")
        ev = np.load(run / "eval" / "evaluations.npz", allow_pickle=False)
        seeds[int(row["seed"])] = {
            "run": str(row["run"]), "test_rl": row["score"], "test_warm_start": row["warm_start_score"],
            "val_warm_start": float(ws["val_return"]), "kept_step": int(sel["step"]),
            "val_kept": float(sel["val_return"]), "val_episodes": int(sel["val_episodes"]),
            "val_traces": len(TraceSet.load(cfg["args"].get("traces") or default_trace_set_dir()).split("val")),
            "checkpoints": [int(t) for t in ev["timesteps"]],
            "val_checkpoints": [float(v) for v in ev["results"].mean(axis=1)],
        }
    return {"label": label, "folder": str(folder), "best_heuristic": res["best_heuristic"],
            "best_heuristic_score": res["heuristics"][res["best_heuristic"]], "traces": res.get("traces"),
            "seeds": seeds}


def choose(s: dict) -> dict:
    """The policy each rule keeps, and its test score."""
    rl = {"kept": f"step {s['kept_step']}", "test": s["test_rl"]}
    # --select-warm-start: the warm start's val return is the bar; a checkpoint replaces it only by beating it
    # (stable-baselines3's EvalCallback keeps a new best on a strictly higher mean), and then the best one is kept
    warm = s["val_kept"] <= s["val_warm_start"]
    both = {"kept": "warm start", "test": s["test_warm_start"]} if warm else dict(rl)
    return dict(zip(RULES, (rl, both)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--results", nargs="+", required=True, metavar="LABEL=DIR",
                    help="main_job_seeds.py output folders, each labelled (e.g. \"18 val traces=runs/val+2\")")
    ap.add_argument("--out", required=True, help="output path without suffix (writes .md, .json, .png)")
    ap.add_argument("--force", action="store_true", help="replace OUT.md/.json/.png if they exist")
    a = ap.parse_args(argv)
    pairs = []
    for item in a.results:
        label, sep, folder = item.partition("=")
        if not sep or not label or not folder:
            ap.error(f"--results {item!r}: write LABEL=DIR, e.g. \"18 val traces=runs/val+2\"")
        if not Path(folder).is_dir():
            ap.error(f"--results {item!r}: {folder} is not a folder")
        pairs.append((label, Path(folder)))
    out = Path(a.out)
    written = [out.with_suffix(s) for s in (".md", ".json", ".png")]
    if not a.force and any(p.exists() for p in written):
        ap.error(f"--out {out}: {', '.join(str(p) for p in written if p.exists())} exist; pass --force or choose "
                 f"another")
    results = [load_result(lbl, d) for lbl, d in pairs]
    seeds = sorted(set.intersection(*(set(r["seeds"]) for r in results)))
    if not seeds:
        raise SystemExit("the results share no seed")
    # one trajectory per seed: val chooses, it does not steer
    for s in seeds:
        runs = [Path(r["seeds"][s]["run"]) for r in results]
        for other in runs[1:]:
            if not same_weights(runs[0] / "last", other / "last"):
                raise SystemExit(f"seed {s}: {runs[0]}/last and {other}/last differ; the runs did not follow one "
                                 f"trajectory (another recipe, host or library version), so their choices are not "
                                 f"comparable")
    bar = {r["label"]: r["best_heuristic_score"] for r in results}
    table = []
    for r in results:
        for s in seeds:
            for rule, ch in choose(r["seeds"][s]).items():
                table.append({"val": r["label"], "seed": s, "rule": rule, **ch,
                              "beats_every_heuristic": ch["test"] > r["best_heuristic_score"]})
    summary = {}
    for r in results:
        for rule in RULES:
            rows = [t for t in table if t["val"] == r["label"] and t["rule"] == rule]
            gain = [t["test"] - r["seeds"][t["seed"]]["test_warm_start"] for t in rows]
            summary[f"{r['label']} / {rule}"] = {"beats": sum(t["beats_every_heuristic"] for t in rows),
                                                 "of": len(rows), "mean": sum(t["test"] for t in rows) / len(rows),
                                                 "over_warm_start": sum(gain) / len(gain)}
    date = time.strftime("%Y-%m-%d")
    res = {"date": date, "results": results, "table": table, "summary": summary, "seeds": seeds,
           "best_heuristic": {r["label"]: [r["best_heuristic"], r["best_heuristic_score"]] for r in results}}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=1))
    r0 = results[0]
    md = [f"# Which policy val keeps, and its test score ({date})", "",
          f"Main-job seeds {', '.join(map(str, seeds))} trained once per val split; train and test splits the same, "
          f"each seed's runs bit-equal at the end (val chooses, it does not steer). Test: the main job's evaluation "
          f"({r0['best_heuristic']} {r0['best_heuristic_score']:.3f} is the best heuristic). Energy is modelled. "
          f"Generated by `benchmarks/val_selection.py`.", ""]
    for r in results:
        n_val = {x["val_traces"] for x in r["seeds"].values()}
        md.append(f"* {r['label']}: `{r['folder']}` (trace set `{r['traces']}`, {'/'.join(map(str, n_val))} val "
                  f"traces, {next(iter(r['seeds'].values()))['val_episodes']} val episodes)")
    md += ["", "| val split | seed | val: warm start | val: best checkpoint (step) | kept by RL checkpoints | "
           "kept by RL checkpoints or the warm start |", "|---|---|---|---|---|---|"]
    for r in results:
        for s in seeds:
            x, ch = r["seeds"][s], choose(r["seeds"][s])
            cells = [f"{c['kept']}: {c['test']:.3f}{' ✓' if c['test'] > bar[r['label']] else ''}"
                     for c in ch.values()]
            md.append(f"| {r['label']} | {s} | {x['val_warm_start']:.2f} | {x['val_kept']:.2f} ({x['kept_step']}) | "
                      f"{cells[0]} | {cells[1]} |")
    md += ["", "✓: above every heuristic.", "", "| val split / rule | seeds above every heuristic | mean test score | "
           "over the warm start |", "|---|---|---|---|"]
    for k, v in summary.items():
        md.append(f"| {k} | {v['beats']} of {v['of']} | {v['mean']:.3f} | {v['over_warm_start']:+.3f} |")
    md.append("")
    out.with_suffix(".md").write_text("\n".join(md))
    plot(results, seeds, out.with_suffix(".png"))
    print("\n".join(md))
    return 0


def plot(results: list[dict], seeds: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), len(seeds), figsize=(3.2 * len(seeds), 2.6 * len(results)), squeeze=False)
    for i, r in enumerate(results):
        for j, s in enumerate(seeds):
            x, ax = r["seeds"][s], axes[i][j]
            steps = [t / 1e6 for t in x["checkpoints"]]
            ax.plot(steps, x["val_checkpoints"], "o-", ms=3, label="RL checkpoints")
            ax.axhline(x["val_warm_start"], color="k", ls="--", lw=1, label="warm start")
            ax.plot([x["kept_step"] / 1e6], [x["val_kept"]], "r*", ms=10, label="kept (RL checkpoints)")
            ax.set_title(f"{r['label']}, seed {s}", fontsize=9)
            ax.set_xlabel("RL steps (M)", fontsize=8)
            if j == 0:
                ax.set_ylabel("mean val return", fontsize=8)
            ax.tick_params(labelsize=7)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
