"""Summarise the committed real-data evaluation reports (``reports/*/report.json``) in one table.

    python benchmarks/rl_summary.py            # prints markdown; --out docs/rl_results.md writes it

Every row is read from a report written by ``python -m agents.evaluate`` (nothing is typed in by
hand). The baselines, the oracle and random are the same in every report of the same trace set and
split (same episodes, same seeds); they are taken from the first listed report that has them all.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REPORTS = ROOT / "reports"

#: (label, report folder, policy key in the report)
RUNS: list[tuple[str, str, str]] = [
    ("oracle DAgger only (no RL), seed 1", "real-oracle-dagger-only-seed1", "rl:maskable_ppo"),
    ("oracle DAgger only (no RL), seed 2", "real-oracle-dagger-only-seed2", "rl:maskable_ppo"),
    ("oracle DAgger only (no RL), seed 3 (seed 2's demonstrations + 1 own DAgger round)",
     "real-oracle-dagger-only-seed3", "rl:maskable_ppo"),
    ("oracle DAgger + MaskablePPO 10 M, seed 1 (last policy)", "real-maskable-10M-oraclebc-seed1", "rl:maskable_ppo"),
    ("oracle DAgger + MaskablePPO 10 M, seed 2 (best on val)", "real-maskable-10M-oraclebc-sel-seed2",
     "rl:maskable_ppo"),
    ("oracle DAgger only (no RL), seed 4 (seed 2's demonstrations + 1 own DAgger round)",
     "real-oracle-dagger-only-seed4", "rl:maskable_ppo"),
    ("oracle DAgger only (no RL), seed 5 (seed 2's demonstrations + 1 own DAgger round)",
     "real-oracle-dagger-only-seed5", "rl:maskable_ppo"),
    ("oracle DAgger + MaskablePPO 3 M at lr 3e-5, seed 3 (best on val)", "real-maskable-3M-lowlr-oraclebc-sel-seed3",
     "rl:maskable_ppo"),
    ("oracle DAgger + MaskablePPO 3 M at lr 3e-5, seed 4 (best on val)", "real-maskable-3M-lowlr-oraclebc-sel-seed4",
     "rl:maskable_ppo"),
    ("oracle DAgger + MaskablePPO 3 M at lr 3e-5, seed 5 (best on val)", "real-maskable-3M-lowlr-oraclebc-sel-seed5",
     "rl:maskable_ppo"),
    ("MaskablePPO 10 M from scratch, seed 1 (last policy)", "real-maskable-10M-seed1", "rl:maskable_ppo"),
    ("MaskablePPO 10 M from scratch, seed 2 (last policy)", "real-maskable-10M-seed2", "rl:maskable_ppo"),
    ("MaskablePPO 10 M from scratch, seed 3 (best on val)", "real-maskable-10M-sel-seed3", "rl:maskable_ppo"),
    ("MaskablePPO 10 M Lagrangian, seed 1 (best on val)", "real-maskable-10M-lagrangian-seed1", "rl:maskable_ppo"),
    ("PPO 2 M (its YAML budget) from scratch, seed 1 (best on val)", "real-ppo-2M-seed1", "rl:ppo"),
]
BASELINE_ROWS = ["oracle", "mpc", "schedutil", "static-smallest", "random", "battery-ladder", "greedy-budget",
                 "static-largest", "static-fit"]


def device_of(trace_name: str) -> str:
    if "thinkpad" in trace_name:
        return "laptop"
    if trace_name.startswith(("nsrdb", "pvdaq")):
        return "solar node"
    return "phone"


def row(label: str, m: dict, per: list[dict], episodes: list[dict]) -> str:
    groups: dict[str, float] = {}
    for ep, e in zip(per, episodes):
        g = device_of(e["trace_name"])
        groups[g] = groups.get(g, 0.0) + ep["return"]
    d = m.get("deaths_not_oracle", math.nan)
    return (f"| {label} | {m['score']:.3f} | {m['quality_per_token']:.3f} | {m['ipj']:.2f} | {m['thermal']} | "
            f"{m['deaths']} | {'—' if isinstance(d, float) and math.isnan(d) else d} | {m['switches']} | "
            + " | ".join(f"{groups.get(g, 0.0):.0f}" for g in ("phone", "laptop", "solar node")) + " |")


def _beyond_oracle(report: dict, name: str) -> int:
    """Episodes ``name`` dies in that the oracle survives (older reports lack the column)."""
    orc = report["per_episode"]["oracle"]
    return sum(bool(e["death"]) and not bool(o["death"]) for e, o in zip(report["per_episode"][name], orc))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", help="write the markdown here too")
    args = ap.parse_args(argv)
    lines = ["| policy | oracle-normalised score | quality / token | quality·tokens / J | thermal-violation steps "
             "| deaths | deaths the oracle avoids | switches | Σ return phone (33) | laptop (9) | solar node (6) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    base = None
    rl_rows = []
    missing = []
    for label, folder, key in RUNS:
        p = REPORTS / folder / "report.json"
        if not p.exists():
            missing.append(folder)
            continue
        r = json.loads(p.read_text())
        if base is None and all(n in r["policies"] for n in BASELINE_ROWS):
            base = r
        m = dict(r["policies"][key])
        m.setdefault("deaths_not_oracle", _beyond_oracle(r, key))
        rl_rows.append((m["score"], row(f"**{label}**", m, r["per_episode"][key], r["episodes"])))
    if base is None:
        raise SystemExit(f"no reports under {REPORTS}; run python -m agents.evaluate first")
    rows = rl_rows
    for name in BASELINE_ROWS:
        m = dict(base["policies"][name])
        m.setdefault("deaths_not_oracle", _beyond_oracle(base, name))
        rows.append((m["score"], row(name, m, base["per_episode"][name], base["episodes"])))
    lines += [r for _, r in sorted(rows, key=lambda x: -x[0])]
    text = "\n".join(lines)
    if missing:
        text += "\n\n(not yet run: " + ", ".join(missing) + ")"
    print(text)
    if args.out:
        Path(args.out).write_text(
            "# Real-data test split: every policy (generated by `python benchmarks/rl_summary.py`)\n\n"
            "48 held-out traces (33 phone sessions, 9 laptop segments, 6 solar-node days), 720 steps of 10 s, "
            "same episodes and seeds for every row. Score = (return − random) / (oracle − random).\n\n"
            + text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
