"""Learned policies with split actions against every baseline, on one trace split: one table and a plot.

    python benchmarks/split_rl.py --baselines reports/real-split-baselines \
        --runs reports/real-split-maskable-2M-seed1 reports/real-split-maskable-8M-seed2 \
        --out benchmarks/results/split_rl

``agents.evaluate`` is run once for the baselines and the oracle (the expensive part, with a split
profile's larger action table) and once per learned policy (with ``random`` and a few baselines
again). This script merges them after checking that they are the same evaluation: the same episodes,
and the same return for every controller both reports ran (deterministic controllers, same seeds).
Per policy: the oracle-normalised score, quality per token, intelligence per joule (Σ quality·tokens /
Σ device energy), the share of tokens computed with a server, radio and server energy, violations,
and the device energy saved per unit of quality·token against the best local rule
(``1 − ipj_local / ipj``; negative: it spends more).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from agents.evaluate import normalised_score  # noqa: E402
from agents.registry import BASELINES, ORACLE, RANDOM, SPLIT_BASELINES  # noqa: E402
from runtime.safeio import atomic_write_bytes, atomic_write_text  # noqa: E402


def _load(d: Path) -> dict:
    return json.loads((Path(d) / "report.json").read_text())


def merge(base: dict, runs: list[dict], tol: float = 1e-6) -> dict:
    """One ``policies`` table from the baseline report and the runs' reports (checked to match)."""
    eps = [e["trace"] for e in base["episodes"]]
    pol = dict(base["policies"])
    for r in runs:
        if [e["trace"] for e in r["episodes"]] != eps:
            raise SystemExit("the reports did not run the same episodes; evaluate with the same --traces/--split")
        for name, m in r["policies"].items():
            if name in pol:
                if abs(pol[name]["return"] - m["return"]) > tol * max(1.0, abs(m["return"])):
                    raise SystemExit(f"{name}: return {m['return']} differs from the baseline report's "
                                     f"{pol[name]['return']}: not the same evaluation")
                continue
            pol[name] = m
    rnd, orc = pol[RANDOM]["return"], pol[ORACLE]["return"]
    for m in pol.values():
        m["score"] = normalised_score(m["return"], rnd, orc)
    return pol


def summarise(pol: dict) -> tuple[list[dict], str]:
    local = [n for n in BASELINES if n in pol and n != RANDOM]
    best_local = max(local, key=lambda n: pol[n]["score"])
    ipj_local = pol[best_local]["ipj"]
    rows = []
    for name, m in sorted(pol.items(), key=lambda kv: -kv[1]["score"]):
        kind = ("oracle" if name == ORACLE else "random" if name == RANDOM
                else "learned" if name.startswith("rl:") or "seed" in name
                else "split rule" if name in SPLIT_BASELINES else "local rule")
        rows.append({"policy": name, "kind": kind, "score": m["score"], "return": m["return"],
                     "quality_per_token": m["quality_per_token"], "ipj": m["ipj"],
                     "ipj_vs_best_local": m["ipj"] / ipj_local if ipj_local else float("nan"),
                     "energy_saved_vs_best_local": 1.0 - ipj_local / m["ipj"] if m["ipj"] else float("nan"),
                     "offload_frac": m.get("offload_frac", 0.0), "radio_j": m.get("radio_j", 0.0),
                     "server_j": m.get("server_j", 0.0), "thermal": m["thermal"], "slo": m["slo"],
                     "deaths": m["deaths"], "energy_j": m["energy_j"]})
    return rows, best_local


def _markdown(rows: list[dict], best_local: str, meta: dict) -> str:
    out = [f"# Split actions on {meta['traces']}:{meta['split']} ({meta['date']})", "",
           f"Profile `{meta['profile']}`; {meta['episodes']} episodes of ≤ {meta['max_steps']} steps; oracle grid "
           f"{meta['oracle_grid']}; best local rule: `{best_local}`. Energy is the device's (modelled, as the "
           "profile's); server energy is modelled and not part of it.", "",
           "| policy | kind | score | quality/token | quality·tok/J | vs best local | device energy saved | offloaded "
           "| radio (J) | server (J) | thermal | SLO | deaths |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['policy']} | {r['kind']} | {r['score']:.3f} | {r['quality_per_token']:.4f} | "
                   f"{r['ipj']:.3f} | {r['ipj_vs_best_local']:.3f}× | {r['energy_saved_vs_best_local']:+.1%} | "
                   f"{r['offload_frac']:.1%} | {r['radio_j']:.0f} | {r['server_j']:.0f} | {r['thermal']} | "
                   f"{r['slo']} | {r['deaths']} |")
    return "\n".join(out) + "\n"


def _plot(rows: list[dict]) -> bytes:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r["score"] > -1.5]
    fig, ax = plt.subplots(1, 2, figsize=(12, 0.45 * len(rows) + 1.5))
    names = [r["policy"] for r in rows][::-1]
    colors = {"oracle": "k", "learned": "tab:red", "split rule": "tab:blue", "local rule": "tab:gray",
              "random": "tab:olive"}
    col = [colors[r["kind"]] for r in rows][::-1]
    ax[0].barh(names, [r["score"] for r in rows][::-1], color=col)
    ax[0].set_xlabel("oracle-normalised score")
    ax[1].barh(names, [r["offload_frac"] * 100 for r in rows][::-1], color=col)
    ax[1].set_xlabel("tokens computed with the server (%)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--baselines", required=True, help="agents.evaluate output folder with the baselines and oracle")
    p.add_argument("--runs", nargs="+", default=[], help="agents.evaluate output folders of learned policies")
    p.add_argument("--out", required=True, help="output prefix (writes .json, .md, .png)")
    p.add_argument("--date", default="2026-12-01")
    a = p.parse_args(argv)
    base = _load(Path(a.baselines))
    runs = [_load(Path(d)) for d in a.runs]
    for d, r in zip(a.runs, runs):  # name each learned policy by its report folder
        r["policies"] = {(Path(d).name if k.startswith("rl:") else k): v for k, v in r["policies"].items()}
    pol = merge(base, runs)
    rows, best_local = summarise(pol)
    bm = base["meta"]
    meta = {"date": a.date, "traces": bm["traces"], "split": bm["split"], "profile": bm["profile"],
            "episodes": len(base["episodes"]), "max_steps": bm["max_steps"], "oracle_grid": bm["oracle_grid"],
            "baselines_report": a.baselines, "run_reports": a.runs}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out.with_suffix(".json"), json.dumps({"meta": meta, "best_local": best_local, "rows": rows},
                                                           indent=1) + "\n")
    atomic_write_text(out.with_suffix(".md"), _markdown(rows, best_local, meta))
    atomic_write_bytes(out.with_suffix(".png"), _plot(rows))
    print(_markdown(rows, best_local, meta))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
