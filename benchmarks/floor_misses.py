"""Where min-energy's quality floor is missed, with both user rules held (the floor within the budget's masks).

    python benchmarks/floor_misses.py --cv data/real-objectives-cv --runs 'runs/cvobj/f{fold}/brfr0/*__1__*' \\
        [--folds 0,1,2,3] [--n-traces 16] [--out benchmarks/results/floor_misses]

On each fold's test traces (``--n-traces`` spread over the split as in ``benchmarks/objectives.py``), under min-energy,
for static-smallest (held to the masks), the masked oracle (its best action within the masks), the oracle (plans the
budget as a cost, may overdraw it) and the fold's policy, per step:

* ``below floor``: the served quality is below the floor; split into steps where the masks allowed **no**
  configuration that meets it (the budget rule forbade them all) and steps where one was allowed;
* ``above cheapest``: on a step that served tokens, the configuration costs more energy per token than the cheapest
  allowed one that meets the floor (spending the allowance that a later step may need);
* ``over budget``: the LLM's power took the allowance below zero (only a controller not held to the masks);
* ``none allowed``: the steps on which the masks allowed no configuration that meets the floor (the floor is missed
  whatever runs), and the return earned on them.

A diagnosis, not a choice: it reads the test split, and nothing is tuned on it.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.objectives import (  # noqa: E402
    add_report_args,
    parse_oracle_grid,
    refuse_to_overwrite,
    runs_params,
    runs_reserve,
    write_report,
)

CONTROLLERS = ("static-smallest", "oracle-masked", "oracle", "policy")
FIELDS = ("return", "below_floor", "below_none_allowed", "below_one_allowed", "above_cheapest", "over_budget", "steps",
          "none_allowed_steps", "none_allowed_return")


def count(traces: str, run: str | None, n_traces: int, grid: tuple = (51, 13, 5), max_steps: int = 720,
          split: str = "test", controllers: tuple = CONTROLLERS) -> dict:
    """{controller: {field: sum over the episodes (``return``: mean per episode)}} on one fold's ``split``; ``run``
    None: the rules and the oracles only, in the default env parameters."""
    import gymnasium as gym

    import envs
    from agents.base import held_to_masks
    from agents.evaluate import held_action, predict_action
    from agents.registry import make_controller
    from agents.run_io import load_controller
    from runtime.dynamics import Objective
    from train import spread_val_episodes

    # the budget rule keeps what the run kept in training, as agents.evaluate and the device do (the defaults' without)
    keep_s, keep_tps = runs_reserve([run] if run else [])
    p = dataclasses.replace(runs_params([run] if run else [], max_steps), floor_rule=True, budget_rule=True,
                            budget_reserve_s=keep_s, budget_reserve_tps=keep_tps,
                            objective=Objective(kind="min-energy", goal_obs=run is not None))
    env = gym.make(envs.ENV_ID, traces=traces, split=split, params=p, random_start=False)
    u = env.unwrapped
    n = len(u.traces)
    picked = ([e["trace"] for e in spread_val_episodes([1] * n, n_traces, max_steps)] if 0 < n_traces < n
              else list(range(n)))
    q, ept = u.costs.quality, u.costs.ept_j
    grid_kw = dict(zip(("n_soc", "n_temp", "n_backlog"), grid))
    out = {}
    for name in [c for c in controllers if run or c != "policy"]:
        c = (load_controller(run) if name == "policy"
             else make_controller(name, env, **(grid_kw if name.startswith("oracle") else {})))
        if hasattr(c, "bind"):
            c.bind(u)
        held = held_to_masks(c)
        t_ = dict.fromkeys(FIELDS, 0)
        ret = 0.0
        for k in picked:
            obs, _ = env.reset(options={"trace": int(k), "start": 0, "objective": "min-energy"})
            q_min = u.sim_state()["objective_inputs"][2]
            for t in range(max_steps):
                m = u.action_masks()
                a = predict_action(env, c, obs, t)
                if held:  # a rule is held to the masks as the shield holds it
                    a, _ = held_action(env, a)
                meets = m & (q >= q_min)
                pricier = bool(meets.any()) and ept[a] > ept[meets].min() + 1e-12
                obs, r, term, trunc, info = env.step(a)
                st = info["step"]
                ret += r
                t_["none_allowed_steps"] += not meets.any()
                t_["none_allowed_return"] += r if not meets.any() else 0.0
                t_["above_cheapest"] += pricier and st.served > 0  # a step with nothing to serve costs the same
                below = bool(st.served > 0 and q[info["config"]] < q_min)
                t_["below_floor"] += below
                t_["below_none_allowed"] += below and not meets.any()
                t_["below_one_allowed"] += below and bool(meets.any())
                t_["over_budget"] += bool(st.over_budget > 0)
                t_["steps"] += 1
                if term or trunc:
                    break
        t_["return"] = ret / len(picked)
        out[name] = {k: (float(v) if k.endswith("return") else int(v)) for k, v in t_.items()}
    return {"episodes": len(picked), "run": run, "budget_reserve_s": keep_s, "controllers": out}


def to_markdown(data: dict) -> str:
    lines = [f"# Where min-energy's floor is missed ({data['date'][:10]})", "",
             f"Test split of each fold, {data['n_traces']} traces per fold, min-energy with the floor held within "
             "the budget's masks (floor keeps "
             f"{data['budget_floor_reserve_s']:g} s; the budget rule keeps what each fold's run kept in training: "
             + ", ".join(f"fold {f} {r['budget_reserve_s']:g} s" for f, r in data["folds"].items()
                         if "budget_reserve_s" in r)
             + "). Energy is modelled (the runs' profile). "
             "Generated by `benchmarks/floor_misses.py`.", "",
             "| fold | controller | return / episode | below floor | of which none allowed | of which one allowed "
             "| above the cheapest | over budget | steps | none allowed: steps | none allowed: return |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]

    def tail(v):  # reports from before the none-allowed fields have none
        return (f" {v['none_allowed_steps']} | {v['none_allowed_return']:.1f} |" if "none_allowed_steps" in v
                else " | |")
    for f, res in data["folds"].items():
        for name, v in res["controllers"].items():
            lines.append(f"| {f} | {name} | {v['return']:.2f} | {v['below_floor']} | {v['below_none_allowed']} | "
                         f"{v['below_one_allowed']} | {v['above_cheapest']} | {v['over_budget']} | {v['steps']} |"
                         + tail(v))
    tot = {n: {k: sum(r["controllers"][n].get(k, 0) for r in data["folds"].values()) for k in FIELDS if k != "return"}
           for n in CONTROLLERS if all(n in r["controllers"] for r in data["folds"].values())}
    for name, v in tot.items():
        lines.append(f"| all | {name} | | {v['below_floor']} | {v['below_none_allowed']} | {v['below_one_allowed']} "
                     f"| {v['above_cheapest']} | {v['over_budget']} | {v['steps']} |" + tail(v))
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cv", required=True, help="folder of fold-<i> trace sets (traces.folds)")
    ap.add_argument("--runs", required=True,
                    help="glob of each fold's policy run, with {fold} for the fold number (one match per fold)")
    ap.add_argument("--folds", default="0,1,2,3", help="comma-separated fold numbers")
    ap.add_argument("--n-traces", type=int, default=16, help="test traces per fold, spread over the split (0: all)")
    ap.add_argument("--controllers", default=",".join(CONTROLLERS),
                    help=f"comma-separated, some of {','.join(CONTROLLERS)} (default: all; the oracles take longest)")
    add_report_args(ap, "floor_misses")  # --oracle-grid, --max-steps, --out, --force, as every objectives report
    a = ap.parse_args(argv)
    grid = parse_oracle_grid(ap, a.oracle_grid)
    ctrls = tuple(c.strip() for c in a.controllers.split(",") if c.strip())
    if not ctrls or any(c not in CONTROLLERS for c in ctrls):
        ap.error(f"--controllers {a.controllers!r}: give some of {','.join(CONTROLLERS)}, separated by commas")
    if a.n_traces < 0:
        ap.error(f"--n-traces {a.n_traces}: must be >= 0 (0: every test trace)")
    try:
        folds = [int(x) for x in a.folds.split(",") if x.strip()]
    except ValueError:
        ap.error(f"--folds {a.folds!r}: comma-separated fold numbers, e.g. 0,1,2,3")
    jobs = []
    for f in folds:
        tr = Path(a.cv) / f"fold-{f}"
        if not (tr / "manifest.json").is_file():
            ap.error(f"--cv {a.cv}: no trace set {tr} (make the folds with python -m traces.folds)")
        runs = sorted(glob.glob(a.runs.format(fold=f)))
        if len(runs) != 1:
            ap.error(f"--runs {a.runs!r}: {len(runs)} matches for fold {f}, need exactly one")
        jobs.append((f, str(tr), runs[0]))
    out = Path(a.out)
    refuse_to_overwrite(ap, out, a.force)
    from runtime.dynamics import EnvParams

    data = {"date": time.strftime("%Y-%m-%dT%H:%M:%S"), "host": platform.node(), "n_traces": a.n_traces,
            "budget_floor_reserve_s": EnvParams().budget_floor_reserve_s, "folds": {}}
    for f, tr, run in jobs:
        t0 = time.time()
        data["folds"][str(f)] = count(tr, run, a.n_traces, grid, a.max_steps, controllers=ctrls)
        print(f"fold {f}: {time.time() - t0:.0f} s", flush=True)
    write_report(out, data, to_markdown(data))
    print(f"wrote {out}.md / .json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
