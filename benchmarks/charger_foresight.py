"""How much of the oracle's lead is foresight of chargers? The oracle against the same DP without it, per fold.

The score every controller is judged by is normalised by the oracle, which plans with the whole trace: it knows
when a charger will be plugged in. ``oracle-charger-blind`` (``agents.oracle.ChargerBlindOracle``) is the same
DP, planning as if no charger were plugged in later than now and re-planning when one is. Its score is the
best a planner reaches that knows everything about the trace (demand, weather, the session's end) except the
next plug-in; where it dies and the oracle does not, the oracle survived by foresight alone.

For each fold of a cross-validation folder (``agents.crossval --out``), this scores random, the oracle, the
charger-blind oracle and schedutil on the fold's held-out units (``agents.evaluate``; a report already in
``--eval-dir`` with those controllers is reused), and sets beside them the fold's learned policies from
``crossval.json``, and how often chargers are plugged in on the fold's training units and on its held-out ones: the
rate a planner without foresight could learn, against the rate it is judged on. Writes ``OUT.md``, ``OUT.json``
and ``OUT.png``::

    python benchmarks/charger_foresight.py --cv runs/cv_keeptemp_f2 --eval-dir runs/blind \\
        --out benchmarks/results/charger_foresight
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

POLICIES = ("random", "oracle", "oracle-charger-blind", "schedutil")
BLIND = "oracle-charger-blind"


def fold_report(cv: Path, fold: int, eval_dir: Path, grid: str, max_steps: int) -> dict:
    """The fold's ``agents.evaluate`` report with ``POLICIES`` (run now unless one is already there)."""
    out = eval_dir / f"fold-{fold}"
    rep = out / "report.json"
    if rep.is_file():
        report = json.loads(rep.read_text())
        if set(POLICIES) <= set(report["per_episode"]):
            return report
    cmd = [sys.executable, "-m", "agents.evaluate", "--traces", str(cv / "folds" / f"fold-{fold}"), "--split", "test",
           "--out", str(out), "--oracle-grid", grid, "--max-steps", str(max_steps), "--policies", ",".join(POLICIES),
           "--no-progress", "--force"]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)
    return json.loads(rep.read_text())


def summarise(report: dict, top: int = 3) -> dict:
    """Scores (normalised by the oracle, as ``agents.evaluate``), deaths, and the episodes where the blind
    oracle loses most against the oracle."""
    from agents.evaluate import deaths_not_oracle, normalised_score

    pe, eps = report["per_episode"], report["episodes"]
    total = {n: sum(e["return"] for e in pe[n]) for n in POLICIES}
    den = total["oracle"] - total["random"]  # an episode's share of the score: its return over this
    score = {n: normalised_score(total[n], total["random"], total["oracle"]) for n in POLICIES}
    o, b, s = pe["oracle"], pe[BLIND], pe["schedutil"]
    rows = []
    for i, (eo, eb, es) in enumerate(zip(o, b, s, strict=True)):
        name = eps[i]["trace_name"]
        rows.append({"episode": i, "trace": name, "loss": (eo["return"] - eb["return"]) / den,
                     "oracle": eo["return"], "blind": eb["return"], "schedutil": es["return"],
                     "blind_dies": bool(eb["death"]), "oracle_dies": bool(eo["death"]),
                     "schedutil_dies": bool(es["death"])})
    rows.sort(key=lambda r: -r["loss"])
    deaths = {n: deaths_not_oracle(pe[n], o) for n in (BLIND, "schedutil")}
    return {"episodes": len(o), "score": score, "deaths_the_oracle_avoids": deaths,
            "blind_loss_total": sum(r["loss"] for r in rows),
            "blind_loss_in_deaths": sum(r["loss"] for r in rows if r["blind_dies"] and not r["oracle_dies"]),
            "top_losses": [r for r in rows[:top] if r["loss"] > 1e-4]}


def plug_in_rates(fold_dir: Path, splits: tuple[str, ...] = ("train", "test")) -> dict:
    """Per split and device kind with a charger (solar nodes left out: their ``plugged`` is daylight): traces,
    plug-ins (``plugged`` 0 → 1), hours unplugged, plug-ins per unplugged hour, and the chance of one within an hour
    at that rate (a Poisson arrival: 1 − exp(−rate · 1 h))."""
    import math

    import numpy as np

    from traces.store import TraceSet

    ts = TraceSet.load(fold_dir)
    out: dict = {}
    for split in splits:
        kinds: dict = {}
        for t in ts.split(split):
            if t.meta.device_kind == "solar-node":
                continue
            pl = np.asarray(t.plugged) > 0
            dt = np.diff(np.asarray(t.time_s, dtype=float))
            k = kinds.setdefault(t.meta.device_kind, {"traces": 0, "plug_ins": 0, "unplugged_h": 0.0})
            k["traces"] += 1
            k["plug_ins"] += int(np.sum(pl[1:] & ~pl[:-1]))
            k["unplugged_h"] += float(np.sum(dt[~pl[:-1]])) / 3600.0
        for k in kinds.values():
            k["per_h"] = k["plug_ins"] / k["unplugged_h"] if k["unplugged_h"] > 0 else float("nan")
            k["p_within_1h"] = 1.0 - math.exp(-k["per_h"]) if k["per_h"] == k["per_h"] else float("nan")
        out[split] = kinds
    return out


def plot(folds: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    x = np.arange(len(folds))
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    series = [("charger-blind oracle", [f["score"][BLIND] for f in folds], "tab:red"),
              ("schedutil", [f["score"]["schedutil"] for f in folds], "tab:orange"),
              ("RL, mean of seeds", [f.get("rl_mean", np.nan) for f in folds], "tab:blue")]
    w = 0.26
    for j, (label, ys, c) in enumerate(series):
        ax.bar(x + (j - 1) * w, ys, w, label=label, color=c)
    ax.axhline(1.0, color="k", lw=0.8, ls="--", label="oracle (knows the chargers)")
    ax.set_xticks(x, [f"fold {f['fold']}" for f in folds])
    lo = min(min(s[1]) for s in series if not all(np.isnan(s[1])))
    ax.set_ylim(max(0.0, lo - 0.05), 1.02)
    ax.set_ylabel("score (oracle = 1)")
    ax.set_title("Foresight of chargers in the oracle's score")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cv", required=True, type=Path, help="an agents.crossval --out folder (folds/, crossval.json)")
    ap.add_argument("--eval-dir", type=Path, default=None, help="where the per-fold reports are (default OUT_eval)")
    ap.add_argument("--out", required=True, type=Path, help="results stem: writes OUT.md, OUT.json, OUT.png")
    ap.add_argument("--folds", default="", help="comma-separated folds (default: every fold in CV/folds)")
    ap.add_argument("--oracle-grid", default="51,13,5", help="the DP grid (the cross-validation's)")
    ap.add_argument("--max-steps", type=int, default=720)
    ap.add_argument("--force", action="store_true", help="replace existing OUT.* files")
    a = ap.parse_args(argv)
    if not (a.cv / "folds").is_dir():
        raise SystemExit(f"--cv {a.cv}: no folds/ folder; fix: pass the --out folder of a "
                         "python -m agents.crossval run")
    outs = [a.out.with_suffix(s) for s in (".md", ".json", ".png")]
    if not a.force and any(p.exists() for p in outs):
        raise SystemExit(f"{a.out}.*: exists; pass --force to replace it")
    eval_dir = a.eval_dir or a.out.parent / f"{a.out.name}_eval"
    folds = ([int(f) for f in a.folds.split(",")] if a.folds else
             sorted(int(p.name.split("-")[1]) for p in (a.cv / "folds").glob("fold-*")))
    cvj = json.loads((a.cv / "crossval.json").read_text()) if (a.cv / "crossval.json").is_file() else {}
    rl = {f["fold"]: f for f in cvj.get("folds", [])}
    t0 = time.perf_counter()
    rows = []
    for f in folds:
        s = summarise(fold_report(a.cv, f, eval_dir, a.oracle_grid, a.max_steps))
        s["fold"] = f
        s["plug_ins"] = plug_in_rates(a.cv / "folds" / f"fold-{f}")
        if f in rl:
            seeds = rl[f]["rl"]
            s["rl"] = seeds
            s["rl_mean"] = sum(seeds.values()) / len(seeds)
            s["rl_deaths_the_oracle_avoids"] = rl[f].get("deaths_not_oracle", {})
        rows.append(s)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"cv": str(a.cv), "train_extra": cvj.get("train_extra"), "oracle_grid": a.oracle_grid,
            "max_steps": a.max_steps, "date": time.strftime("%Y-%m-%d"), "seconds": round(time.perf_counter() - t0)}
    outs[1].write_text(json.dumps({"meta": meta, "folds": rows}, indent=1) + "\n")
    md = [f"# Foresight of chargers in the oracle's score ({meta['date']})", "",
          f"Cross-validation `{a.cv.name}`, each fold's held-out units from row 0, up to {a.max_steps} steps, DP grid "
          f"{a.oracle_grid}; score = (return − random) / (oracle − random). The charger-blind oracle is the oracle's "
          "DP planning as if no charger were plugged in later than now (`agents.oracle.ChargerBlindOracle`).", "",
          "| fold | episodes | charger-blind oracle | its deaths the oracle avoids | its loss in them | schedutil | "
          "its deaths | RL seeds | RL deaths |", "|---|---|---|---|---|---|---|---|---|"]
    for s in rows:
        seeds = " / ".join(f"{v:.3f}" for v in s.get("rl", {}).values()) or "—"
        rd = " / ".join(str(v) for v in s.get("rl_deaths_the_oracle_avoids", {}).values()) or "—"
        md.append(f"| {s['fold']} | {s['episodes']} | {s['score'][BLIND]:.3f} | {s['deaths_the_oracle_avoids'][BLIND]} "
                  f"| {s['blind_loss_in_deaths']:.3f} of {s['blind_loss_total']:.3f} | {s['score']['schedutil']:.3f} | "
                  f"{s['deaths_the_oracle_avoids']['schedutil']} | {seeds} | {rd} |")
    md += ["", "Where the charger-blind oracle loses most (returns; † = battery death):", "",
           "| fold | trace | oracle | charger-blind | schedutil | share of the fold's score |",
           "|---|---|---|---|---|---|"]
    for s in rows:
        for r in s["top_losses"]:
            d = {True: " †", False: ""}
            md.append(f"| {s['fold']} | `{r['trace']}` | {r['oracle']:.1f}{d[r['oracle_dies']]} | "
                      f"{r['blind']:.1f}{d[r['blind_dies']]} | {r['schedutil']:.1f}{d[r['schedutil_dies']]} | "
                      f"{r['loss']:.3f} |")
    md += ["", "How often a charger is plugged in (devices with a charger; `plugged` 0 → 1 per hour unplugged), on the "
           "fold's training units and on its held-out ones:", "",
           "| fold | kind | training: plug-ins / unplugged h | per h | P(one within 1 h) | held out: plug-ins / "
           "unplugged h | per h | P(one within 1 h) |", "|---|---|---|---|---|---|---|---|"]
    for s in rows:
        tr, te = s["plug_ins"]["train"], s["plug_ins"]["test"]
        for kind in sorted(set(tr) | set(te)):
            cells = []
            for part in (tr, te):
                k = part.get(kind)
                cells += (["—", "—", "—"] if k is None else
                          [f"{k['plug_ins']} / {k['unplugged_h']:.0f}", f"{k['per_h']:.3f}", f"{k['p_within_1h']:.3f}"])
            md.append(f"| {s['fold']} | {kind} | " + " | ".join(cells) + " |")
    md += ["", f"![scores per fold]({outs[2].name})", "",
           f"`python benchmarks/charger_foresight.py --cv {a.cv} --eval-dir {eval_dir} --out {a.out}` (the per-fold "
           f"reports are in `{eval_dir}`, not committed)."]
    outs[0].write_text("\n".join(md) + "\n")
    plot(rows, outs[2])
    print("\n".join(md))
    print("wrote", ", ".join(str(p) for p in outs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
