"""What the allowance axis is worth: the oracle under a power budget, with the allowance linearised or as a state.

    python benchmarks/oracle_budget_axis.py [--traces DIR] [--splits val test] [--points 0 9 17]
                                            [--oracle-grid 51,13,5] [--max-steps 720]
                                            [--out benchmarks/results/oracle_budget_axis] [--force]

The budget allowance is path-dependent. Without a supply it is exactly linear in the SoC, and the oracle plans it
that way; with a charger or the sun it is not (only η of a surplus is stored, and nothing once the battery is full),
and ``agents.oracle`` plans such blocks twice, once with the allowance linearised and once with it as a state
(``n_allowance`` grid points), keeping the plan whose simulated return is higher. This runs the oracle with
``n_allowance`` = each of ``--points`` (0: the linearisation alone) on every trace of the splits that has a budget
and a supply (default: the default trace set with objectives overlaid into a temporary folder, or ``--traces``),
under the max-quality objective, from row 0 for ``--max-steps`` steps, beside the rules that pace the budget
(greedy-budget, static-smallest). Per trace: the return, the steps over budget, deaths, which plan was kept and the
planning time. Writes OUT.json and OUT.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

RULES = ("static-smallest", "greedy-budget")


def budget_supply_traces(env) -> list[int]:
    """Indices of the env's traces with a budget and any supply."""
    out = []
    for k, t in enumerate(env.unwrapped.traces):
        b, s = np.asarray(t.budget_w), np.asarray(t.supply_w)
        if np.any(b == b) and np.any(s > 0):
            out.append(k)
    return out


def episodes(env, max_steps: int) -> list[tuple[int, int]]:
    """(trace, start row) to run: row 0 of every trace with a budget and a supply, and where its first
    ``max_steps`` rows have no supply (a solar node's night), also the first row with one."""
    out = []
    for k in budget_supply_traces(env):
        s = np.asarray(env.unwrapped.traces[k].supply_w)
        out.append((k, 0))
        if not np.any(s[:max_steps] > 0):
            out.append((k, int(np.argmax(s > 0))))
    return out


def run(traces: Path, split: str, points: list[int], grid: tuple, max_steps: int) -> list[dict]:
    import gymnasium as gym
    from objectives import episode

    import envs
    from agents.oracle import OracleController
    from agents.registry import make_controller
    from runtime.dynamics import EnvParams, Objective

    params = dataclasses.replace(EnvParams(max_episode_steps=max_steps), objective=Objective(kind="max-quality"))
    env = gym.make(envs.ENV_ID, traces=str(traces), split=split, params=params, random_start=False)
    rows = []
    for k, start in episodes(env, max_steps):
        tr = env.unwrapped.traces[k]
        opts = {"trace": k, "start": start, "objective": "max-quality"}
        row = {"split": split, "trace": tr.name, "start": start, "device": tr.device_kind,
               "capacity_wh": tr.capacity_j / 3600.0, "budget_w": float(np.nanmax(np.asarray(tr.budget_w))),
               "rules": {}, "oracle": {}}
        for name in RULES:
            e = episode(env, make_controller(name, env), opts, max_steps)
            row["rules"][name] = {"return": e["return"], "over_budget_steps": e["violations"]["budget"],
                                  "death": e["death"]}
        for n in points:
            o = OracleController(env, n_soc=grid[0], n_temp=grid[1], n_backlog=grid[2], n_allowance=n)
            o.bind(env.unwrapped)
            t0 = time.perf_counter()
            e = episode(env, o, opts, max_steps)
            wall = time.perf_counter() - t0
            kept = [p["budget_method"] for p in o.plans]
            row["oracle"][str(n)] = {"return": e["return"], "over_budget_steps": e["violations"]["budget"],
                                     "death": e["death"], "wall_s": wall, "plans": len(o.plans),
                                     "plan_s": float(sum(p["plan_s"] for p in o.plans)),
                                     "axis_kept": int(sum(m == "allowance-axis" for m in kept)),
                                     "both_planned": int(sum(bool(p["budget_rollouts"]) for p in o.plans))}
            print(f"{split} {tr.name} @ {start}: n_allowance={n} return {e['return']:.2f}, "
                  f"{e['violations']['budget']} steps over budget, {wall:.0f} s", flush=True)
        rows.append(row)
    return rows


def to_markdown(data: dict) -> str:
    pts = data["points"]
    head = "| trace @ start row | device | budget (W) | " + " | ".join(f"oracle n={n}: return / over / kept axis / s"
                                                           for n in pts)
    head += " | " + " | ".join(f"{r}: return / over" for r in RULES) + " |"
    lines = [f"# The oracle under a budget: the allowance linearised or as a state ({data['date']})", "",
             f"Host `{data['host']}`; traces `{data['traces']}` (splits {', '.join(data['splits'])}), every trace "
             "with a budget and a supply, max-quality objective, from row 0 (and a solar node's first row with sun) "
             f"for {data['max_steps']} steps; oracle grid {data['oracle_grid']}. n = `n_allowance` (0: the allowance "
             "linearised in the SoC, the former method); *kept axis*: of the blocks planned both ways (a budget and "
             "a supply on the block), those on which the plan with the allowance as a state was kept; *s*: wall "
             "time of the episode, planning included. Energy is modelled (profile `profiles/reference-cpu.json`). "
             "Generated by `benchmarks/oracle_budget_axis.py`.", "", head,
             "|" + "---|" * (3 + len(pts) + len(RULES))]
    for r in data["rows"]:
        cells = [f"{r['trace']} @ {r['start']}", r["device"], f"{r['budget_w']:.3f}"]
        for n in pts:
            o = r["oracle"][str(n)]
            cells.append(f"{o['return']:.2f} / {o['over_budget_steps']}{' †' if o['death'] else ''} / "
                         f"{o['axis_kept']} of {o['both_planned']} / {o['wall_s']:.0f}")
        for name in RULES:
            m = r["rules"][name]
            cells.append(f"{m['return']:.2f} / {m['over_budget_steps']}{' †' if m['death'] else ''}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "† the battery died.", ""]
    tot = {n: sum(r["oracle"][str(n)]["return"] for r in data["rows"]) for n in pts}
    lines.append("Sum of returns: " + ", ".join(f"n={n}: {v:.2f}" for n, v in tot.items()) + "; "
                 + ", ".join(f"{name}: {sum(r['rules'][name]['return'] for r in data['rows']):.2f}"
                             for name in RULES) + ".")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    from objectives import add_report_args, default_objectives_set, parse_oracle_grid, refuse_to_overwrite, write_report

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--traces", default=None, help="a trace set with objectives (default: see docstring)")
    ap.add_argument("--splits", nargs="+", default=["val", "test"], choices=["train", "val", "test"])
    ap.add_argument("--points", nargs="+", type=int, default=[0, 9, 17], help="n_allowance values (0: linearised)")
    add_report_args(ap, "oracle_budget_axis")
    a = ap.parse_args(argv)

    grid = parse_oracle_grid(ap, a.oracle_grid)
    if any(n < 0 for n in a.points):
        ap.error("argument --points: n_allowance must be >= 0 (0: the linearisation alone)")
    out = Path(a.out)
    refuse_to_overwrite(ap, out, a.force)
    if a.traces is None:
        traces = default_objectives_set()
    else:
        traces = Path(a.traces)
        if not traces.is_dir():
            ap.error(f"--traces {traces}: no such folder (make one with python -m traces.objectives)")
    rows = []
    for split in a.splits:
        rows += run(traces, split, a.points, grid, a.max_steps)
    data = {"date": time.strftime("%Y-%m-%d"), "host": platform.node() or platform.machine(),
            "traces": str(a.traces or "traces/data/default + python -m traces.objectives"), "splits": a.splits,
            "points": a.points, "oracle_grid": list(grid), "max_steps": a.max_steps, "rows": rows}
    write_report(out, data, to_markdown(data))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
