"""How much budget the budget rule should keep in hand: ``EnvParams.budget_reserve_s``, swept on the splits a choice may
see (train and val, never test).

    python benchmarks/budget_reserve.py --summarise benchmarks/results/budget_reserve_real_cv/fold-*.json \\
                                        [--reference 900+50tps] --out OUT
    python benchmarks/budget_reserve.py --runs RUN ... [--traces data/default-objectives] [--splits train,val]
                                        [--reserves 0,300,900,1800,3600] [--reserve-tps 0]
                                        [--objective min-energy --floor-reserves 0,300,900] [--n-traces N]
                                        [--out benchmarks/results/budget_reserve]

Every trace of each split from row 0 under ``max-quality`` with its budget, the budget rule on
(``EnvParams.budget_rule``) and each reserve in turn: every pair of ``--reserves`` (``EnvParams.budget_reserve_s``)
and ``--reserve-tps`` (``EnvParams.budget_reserve_tps``, the burst the reserve also pays for). Controllers: the
goal-conditioned policies of ``--runs``, the MPC, and two rules held to the masks as the runtime's shield would hold
them: static-largest (held to the budget's masks: the largest configuration the rule allows now) and static-smallest
(which the rule never masks: the reference). Per (split, setting, controller): the mean return per episode and the
steps over the budget. The best setting is the one with the highest return summed over the controllers the rule can
change (all but static-smallest), over the episodes of every split given. Writes OUT.json and OUT.md.

``--summarise REPORT.json ...`` gathers sweeps already run (e.g. one per cross-validation fold, each on that fold's
train and val) into OUT.md, OUT.json and OUT.png: each report's best setting, every setting's return summed over
the controllers it changes relative to the reference setting (``--reference``, default: EnvParams' own), and the
setting best over all of them together.

``--objective min-energy`` sweeps instead what is kept in hand where holding the quality floor needs the reserve
(``--floor-reserves``, ``EnvParams.budget_floor_reserve_s``) with the floor rule on as well (``EnvParams.floor_rule``,
the floor within the budget), ``--reserves`` and ``--reserve-tps`` fixed at one value each. Every controller is
changed by it there (static-smallest held to the masks is the cheapest configuration that meets the floor within the
budget), so every one counts. ``--n-traces N``: N traces of each split spread evenly over it (0: all).
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

from benchmarks.objectives import episode, refuse_to_overwrite, runs_params, write_report  # noqa: E402

RULES = ("static-largest", "static-smallest", "mpc")
FLOOR_RULES = ("static-smallest", "mpc")  # min-energy: static-largest pursues the opposite objective
REFERENCE = "static-smallest"


def run_split(traces, base, runs: list[str], reserve_s: float, max_steps: int, reserve_tps: float = 0.0,
              objective: str = "max-quality", floor_reserve_s: float | None = None) -> dict:
    """Every controller on every trace of ``traces`` under ``objective`` with the budget rule keeping ``reserve_s``
    (and ``reserve_tps``); min-energy: with the floor rule, holding the floor down to ``floor_reserve_s``."""
    from agents.registry import make_controller
    from agents.run_io import load_controller
    from envs.power_env import MicroLLMPowerEnv
    from runtime.dynamics import Objective

    # the goal-conditioned policies read the objective block (as benchmarks/objectives.py scores them)
    params = dataclasses.replace(base, budget_rule=True, budget_reserve_s=float(reserve_s), max_episode_steps=max_steps,
                                 budget_reserve_tps=float(reserve_tps),
                                 objective=Objective(kind=objective, goal_obs=True))
    if objective == "min-energy":
        params = dataclasses.replace(params, floor_rule=True, budget_floor_reserve_s=float(
            reserve_s if floor_reserve_s is None else floor_reserve_s))
    env = MicroLLMPowerEnv(traces=traces, params=params, random_start=False)
    ctrls = {name: make_controller(name, env) for name in (FLOOR_RULES if objective == "min-energy" else RULES)}
    ctrls.update({f"rl:{i}": load_controller(r) for i, r in enumerate(runs)})
    out = {}
    for name, c in ctrls.items():
        if hasattr(c, "bind"):
            c.bind(env)
        # the objectives report's episode: a masked policy given the masks, a rule held to them
        es = [episode(env, c, {"trace": k, "start": 0, "objective": objective}, max_steps)
              for k in range(len(traces))]
        out[name] = {"return": float(np.mean([e["return"] for e in es])),
                     "over_budget_steps": int(sum(e["violations"]["budget"] for e in es)),
                     "floor_steps": int(sum(e["violations"]["floor"] for e in es))}
    return out


def _key(row: dict) -> str:
    """A setting's name: ``900`` (seconds of budget), ``900+100tps`` with a burst rate, ``floor 300`` for what the
    floor may spend the reserve down to (min-energy)."""
    if "floor_reserve_s" in row:
        return f"floor {row['floor_reserve_s']:g}"
    tps = row.get("reserve_tps", 0.0)
    return f"{row['reserve_s']:g}" + (f"+{tps:g}tps" if tps else "")


def choose(rows: list[dict]) -> tuple[str, dict]:
    """The setting with the highest return summed over the controllers the rule changes and every episode (under
    min-energy every controller: the floor within the budget changes static-smallest too)."""
    total: dict[str, float] = {}
    for r in rows:
        s = sum(m["return"] * r["episodes"] for n, m in r["controllers"].items()
                if n != REFERENCE or "floor_reserve_s" in r)
        total[_key(r)] = total.get(_key(r), 0.0) + s
    best = max(total, key=total.get)
    return best, total


def to_markdown(d: dict) -> str:
    names = list(d["rows"][0]["controllers"])
    floor = d.get("objective", "max-quality") == "min-energy"
    r0 = d["rows"][0]
    what = (f"min-energy under each trace's floor and budget, the budget rule keeping {r0['reserve_s']:g} s of budget "
            f"(at least the safe configuration at {r0['reserve_tps']:g} tok/s) and the floor rule on "
            "(`EnvParams.floor_rule`: the floor within the budget), the floor allowed to spend the reserve down to "
            "each setting (`EnvParams.budget_floor_reserve_s`); the rules held to the masks. Mean return per episode "
            "(steps over the budget / steps below the floor)" if floor else
            "max-quality under each trace's budget with the budget rule on (`EnvParams.budget_rule`); the rules held "
            "to the masks. Mean return per episode (steps over the budget)")
    picked = f"{d['n_traces']} traces of each split spread evenly over it" if d.get("n_traces") else "every trace"
    lines = [f"# The budget rule's reserve{' where the floor needs it' if floor else ''}, swept on "
             f"{', '.join(d['splits'])} ({d['date']})", "",
             f"Host `{d['host']}`; `{d['traces']}`, {picked}, each from row 0, ≤ {d['max_steps']} steps, {what}. "
             f"Generated by `benchmarks/budget_reserve.py`; runs: {', '.join(f'`{r}`' for r in d['runs'])}.", "",
             f"| split | {'floor keeps (s of budget)' if floor else 'reserve (s of budget [+ burst rate])'} | "
             + " | ".join(names) + " |",
             "|---|---|" + "---|" * len(names)]
    for r in d["rows"]:
        c = r["controllers"]
        cells = [f"{c[n]['return']:.2f} ({c[n]['over_budget_steps']}" + (f" / {c[n]['floor_steps']})" if floor
                                                                           else ")") for n in names]
        lines.append(f"| {r['split']} ({r['episodes']}) | {_key(r)} | " + " | ".join(cells) + " |")
    lines += ["", "Return summed over the controllers the rule changes "
              f"({'all of them' if floor else 'all but static-smallest'}) and every episode:",
              "", "| setting | sum |", "|---|---|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in d["totals"].items()]
    lines += ["", f"**Best: {d['chosen']}** (`EnvParams."
              f"{'budget_floor_reserve_s' if floor else 'budget_reserve_s` [+ `budget_reserve_tps'}`).", ""]
    return "\n".join(lines)


def summarise(reports: list[dict], names: list[str], reference: str) -> dict:
    """Sweeps (:func:`main`'s reports, ``names`` for each) side by side: per report its best setting and every
    setting's total less the ``reference`` setting's; over all reports together, the best setting (the totals
    summed). ValueError naming the report that lacks a setting the others have, or the reference."""
    keys = list(reports[0]["totals"])
    for n, r in zip(names, reports):
        if set(r["totals"]) != set(keys):
            raise ValueError(f"{n} swept {sorted(r['totals'])}, {names[0]} {sorted(keys)}: summarise sweeps of the "
                             "same settings")
    if reference not in keys:
        raise ValueError(f"--reference {reference!r} is not a setting of these sweeps ({', '.join(keys)})")
    rows = [{"report": n, "traces": r.get("traces"), "chosen": r["chosen"],
             "gain": {k: r["totals"][k] - r["totals"][reference] for k in keys}} for n, r in zip(names, reports)]
    total = {k: sum(r["totals"][k] for r in reports) for k in keys}
    return {"date": time.strftime("%Y-%m-%d"), "reference": reference, "settings": keys, "rows": rows,
            "gain": {k: total[k] - total[reference] for k in keys}, "chosen": max(total, key=total.get)}


def summary_markdown(d: dict) -> str:
    keys = d["settings"]
    lines = [f"# The budget rule's reserve across sweeps ({d['date']})", "",
             "Each sweep's return summed over the controllers the rule changes and its episodes (train and val "
             f"only), less that of the reference setting `{d['reference']}`; the best setting of each sweep, and of "
             "all of them together. Generated by `benchmarks/budget_reserve.py --summarise`.", "",
             "| sweep | " + " | ".join(keys) + " | best |", "|---|" + "---|" * (len(keys) + 1)]
    for r in d["rows"]:
        lines.append(f"| {r['traces'] or r['report']} | " + " | ".join(f"{r['gain'][k]:+.1f}" for k in keys)
                     + f" | {r['chosen']} |")
    lines.append("| **all together** | " + " | ".join(f"{d['gain'][k]:+.1f}" for k in keys) + f" | **{d['chosen']}** |")
    return "\n".join(lines + ["", "![the reserve across sweeps](" + d.get("png", "summary.png") + ")", ""])


def summary_plot(d: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = d["settings"]
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    x = np.arange(len(keys))
    for r in d["rows"]:
        y = [r["gain"][k] for k in keys]
        (line,) = ax.plot(x, y, marker="o", label=r["traces"] or r["report"])
        j = keys.index(r["chosen"])
        ax.plot([j], [y[j]], marker="*", markersize=14, color=line.get_color())
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set_xticks(x, keys)
    ax.set_xlabel("kept in hand: seconds of budget [+ burst rate]  (★ best of each sweep)")
    ax.set_ylabel(f"return summed, less {d['reference']}'s")
    ax.set_title("The budget rule's reserve, train + val of each sweep")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _summarise_main(ap: argparse.ArgumentParser, a) -> int:
    import json

    out = Path(a.out)
    refuse_to_overwrite(ap, out, a.force)
    reports = []
    for f in a.summarise:
        try:
            r = json.loads(Path(f).read_text())
            if not isinstance(r, dict) or "totals" not in r or "chosen" not in r:
                raise ValueError("no 'totals' or 'chosen': not a sweep of benchmarks/budget_reserve.py")
        except (OSError, ValueError) as exc:
            ap.error(f"--summarise {f}: {exc}")
        reports.append(r)
    from runtime.dynamics import EnvParams

    ref = a.reference or _key({"reserve_s": EnvParams().budget_reserve_s,
                               "reserve_tps": EnvParams().budget_reserve_tps})
    try:
        d = summarise(reports, list(a.summarise), ref)
    except ValueError as exc:
        ap.error(str(exc))
    d["png"] = out.name + ".png"
    summary_plot(d, out.with_name(out.name + ".png"))
    write_report(out, d, summary_markdown(d))
    print(summary_markdown(d))
    return 0


def _values(ap: argparse.ArgumentParser, flag: str, text: str, what: str, example: str) -> list[float]:
    """A comma-separated list of numbers >= 0, or a usage error that names the flag and the fix."""
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        ap.error(f"{flag} {text!r}: give {what} separated by commas, e.g. {example}")
    if not values or any(not v >= 0 for v in values):
        ap.error(f"{flag}: give at least one of the {what}, each >= 0")
    return values


def main(argv=None) -> int:
    import traces as T

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", nargs="+", help="goal-conditioned run folders (scored like the rules)")
    ap.add_argument("--summarise", nargs="+", metavar="REPORT", help="gather sweeps already run (their OUT.json)")
    ap.add_argument("--reference", default=None,
                    help="--summarise: the setting the others are compared with, e.g. 900+50tps (default: EnvParams')")
    ap.add_argument("--traces", default="data/default-objectives")
    ap.add_argument("--splits", default="train,val", help="never test: the choice must not see it")
    ap.add_argument("--reserves", default="0,300,900,1800,3600", help="seconds of budget to keep in hand")
    ap.add_argument("--reserve-tps", default="0", help="burst rates (tok/s) the reserve also pays for")
    ap.add_argument("--objective", choices=("max-quality", "min-energy"), default="max-quality",
                    help="min-energy: sweep --floor-reserves with the floor rule on, one reserve and burst rate")
    ap.add_argument("--floor-reserves", default="0,300,900",
                    help="min-energy: seconds of budget kept in hand where holding the floor needs the reserve")
    ap.add_argument("--n-traces", type=int, default=0, help="traces of each split, spread evenly over it (0: all)")
    ap.add_argument("--max-steps", type=int, default=720)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "budget_reserve"))
    ap.add_argument("--force", action="store_true", help="replace an existing report")
    a = ap.parse_args(argv)
    if a.summarise:
        if a.runs:
            ap.error("--summarise gathers sweeps already run; leave out --runs")
        return _summarise_main(ap, a)
    if not a.runs:
        ap.error("--runs is required (or --summarise REPORT ...)")
    splits = [s.strip() for s in a.splits.split(",") if s.strip()]
    if "test" in splits:
        ap.error("--splits: the reserve is chosen without the test split; give train and/or val")
    reserves = _values(ap, "--reserves", a.reserves, "seconds", "0,300,900")
    rates = _values(ap, "--reserve-tps", a.reserve_tps, "token rates", "0,50,100")
    floors = [None]
    if a.objective == "min-energy":
        floors = _values(ap, "--floor-reserves", a.floor_reserves, "seconds", "0,300,900")
        if len(reserves) != 1 or len(rates) != 1:
            ap.error("--objective min-energy sweeps --floor-reserves: give one --reserves and one --reserve-tps, "
                     "e.g. --reserves 900 --reserve-tps 50")
    if a.n_traces < 0:
        ap.error("--n-traces must be >= 0 (0: every trace)")
    try:
        base = runs_params(a.runs, a.max_steps)
        ts = T.TraceSet.load(a.traces)
    except (OSError, ValueError) as exc:
        ap.error(str(exc))
    out = Path(a.out)
    refuse_to_overwrite(ap, out, a.force)
    from tqdm import tqdm

    from train import spread_val_episodes

    rows, t0 = [], time.time()
    jobs = [(s, r, tps, f) for s in splits for r in reserves for tps in rates for f in floors]
    for split, reserve, tps, fl in tqdm(jobs, desc="split x reserve", unit="sweep"):
        trs = ts.split(split)
        if 0 < a.n_traces < len(trs):  # spread as train.py's val episodes and the objectives reports' traces
            trs = [trs[e["trace"]] for e in spread_val_episodes([1] * len(trs), a.n_traces, a.max_steps)]
        row = {"split": split, "reserve_s": reserve, "reserve_tps": tps, "episodes": len(trs)}
        if fl is not None:
            row["floor_reserve_s"] = fl
        rows.append({**row, "controllers": run_split(trs, base, a.runs, reserve, a.max_steps, tps, a.objective, fl)})
    chosen, totals = choose(rows)
    data = {"date": time.strftime("%Y-%m-%d"), "host": platform.processor() or platform.machine(),
            "traces": a.traces, "splits": splits, "runs": a.runs, "max_steps": a.max_steps, "rows": rows,
            "objective": a.objective, "n_traces": a.n_traces,
            "totals": totals, "chosen": chosen, "wall_s": time.time() - t0}
    write_report(out, data, to_markdown(data))
    print(to_markdown(data))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
