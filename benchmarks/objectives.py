"""The user's objectives: how often each constraint binds, and how every controller does under each.

    python benchmarks/objectives.py [--traces DIR ...] [--runs RUN ...] [--oracle-grid 51,13,5] [--jobs N]
                                    [--split test|val|train] [--n-traces N] [--runs-only | --add-to REPORT]
                                    [--out benchmarks/results/objectives] [--force]

Trace sets with user objectives overlaid (``python -m traces.objectives``; default: the default set
overlaid into a temporary folder, plus ``data/real-objectives`` when it exists), test split (``--split``), every trace
from row 0 for ``--max-steps`` steps. For each objective (``runtime.dynamics.Objective``: max-quality
under the trace's budget, min-energy above the trace's quality floor, last-until the trace's deadline
above the reserve):

* **binding share**: the share of episodes in which the oracle that ignores the constraint (its weight
  set to 0) violates it at least once; these are the episodes in which the constraint changes the optimum;
* per controller: the return, the score normalised between random (0) and the oracle (1), the steps
  that violate the objective's constraint, battery deaths, the device's energy and the quality per token.

The baselines do not know the objective (they read the same observation as always); ``--runs`` adds
goal-conditioned RL policies (trained with ``--env.objective.kind mix``). Writes OUT.json and OUT.md.

``--add-to REPORT`` (an earlier OUT.json) scores only the ``--runs``, on the same episodes as REPORT, and writes
REPORT with them added as further ``rl:k`` columns, scored against REPORT's random policy and oracle: a new recipe
joins a report without the baselines and the oracle being run again. The episodes, the steps and the rules must be
REPORT's (refused otherwise, with what differs).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from agents.base import held_to_masks  # noqa: E402
from agents.evaluate import held_action, predict_action  # noqa: E402

BASELINES = ["random", "static-largest", "static-smallest", "battery-ladder", "greedy-budget", "schedutil", "mpc"]
PER_TRACE_COLUMNS = 8  # up to this many traces, the per-trace table has a column per trace; beyond, a row per trace
CONSTRAINT = {"max-quality": ("budget", "over_budget"), "min-energy": ("floor", "r_floor"),
              "last-until": ("reserve", "r_reserve")}


def episode(env, ctrl, options: dict, max_steps: int) -> dict:
    obs, _ = env.reset(options=options)
    if hasattr(ctrl, "reset"):
        try:
            ctrl.reset(0)
        except TypeError:
            pass
    ret = energy = tokens = q_tok = 0.0
    viol = {"budget": 0, "floor": 0, "reserve": 0}
    dead = False
    u = env.unwrapped
    q = u.costs.quality
    st0 = u.sim_state()
    q_min, until_row, reserve = st0["objective_inputs"][2], st0["until_row"], u.params.reserve_soc
    held = held_to_masks(ctrl)
    for t in range(max_steps):
        row = u.sim_state()["row"]
        a = predict_action(env, ctrl, obs, t)  # a masked policy is given the env's masks
        if held:  # a rule is held to them as the shield would hold it (agents.evaluate: the same for every report)
            a, _ = held_action(env, a)
        obs, r, term, trunc, info = env.step(a)
        st = info["step"]
        ret += r
        energy += st.energy_j
        tokens += st.served
        q_tok += q[info["config"]] * st.served
        # the constraints themselves, whatever their weights (the "free" oracle has weight 0)
        viol["budget"] += bool(st.over_budget > 0)
        viol["floor"] += bool(st.served > 0 and q[info["config"]] < q_min)
        viol["reserve"] += bool(row < until_row and st.soc < reserve)
        if term:
            dead = True
        if term or trunc:
            break
    return {"return": ret, "energy_j": energy, "quality_per_token": q_tok / tokens if tokens else 0.0,
            "violations": viol, "death": dead}


def trained_params(run: str):
    """The ``EnvParams`` ``run`` was trained in (its config's; the defaults for a run from before they were saved)."""
    from agents.run_io import load_config
    from runtime.dynamics import EnvParams

    d = load_config(run).get("env_params")
    return EnvParams.from_dict(d) if d is not None else EnvParams()


def runs_params(runs: list[str], max_steps: int):
    """The ``EnvParams`` to score ``runs`` in: theirs (the observation their policies read: thermal block, smoothed
    demand, …), which must be the same for every run; the defaults without runs. ValueError naming the run."""
    from runtime.dynamics import EnvParams

    base = None
    for r in runs:
        p = trained_params(r)
        if not p.objective.observed:
            raise ValueError(f"--runs: {r} was trained without the objective in its observation, so it cannot "
                             "pursue one; train it with --env.objective.kind mix")
        # the rules and what they keep in hand are the report's to set (--no-floor-rule, --no-budget-rule,
        # --budget-reserve-s, ...), whatever a run was trained with
        p = dataclasses.replace(p, max_episode_steps=max_steps, objective=EnvParams().objective, floor_rule=False,
                                budget_rule=False, budget_floor_reserve_s=EnvParams().budget_floor_reserve_s,
                                budget_reserve_s=EnvParams().budget_reserve_s,
                                budget_reserve_tps=EnvParams().budget_reserve_tps)
        if base is None:
            base, first = p, r
        elif p != base:
            raise ValueError(f"--runs: {r} was trained on other env parameters than {first}; score them in "
                             "separate calls")
    return base if base is not None else EnvParams(max_episode_steps=max_steps)


def runs_reserve(runs: list[str], told_s: float | None = None, told_tps: float | None = None) -> tuple[float, float]:
    """What the budget rule keeps in hand in a report of ``runs`` (``EnvParams.budget_reserve_s``,
    ``budget_reserve_tps``): each as told, else what the runs kept in training, as ``agents.evaluate`` and the device's
    shield keep a run's own; without runs, EnvParams' defaults. ValueError, with the fix, when the runs trained
    keeping different values of one not told."""
    from runtime.dynamics import EnvParams

    trained = {r: trained_params(r) for r in runs}
    out = []
    for told, flag, name in ((told_s, "--budget-reserve-s", "budget_reserve_s"),
                             (told_tps, "--budget-reserve-tps", "budget_reserve_tps")):
        if told is not None:
            out.append(float(told))
            continue
        seen = {float(getattr(p, name)): r for r, p in trained.items()}  # each value kept, and a run that kept it
        if len(seen) > 1:
            raise ValueError("--runs trained keeping different budget reserves ("
                             + "; ".join(f"{r}: {v:g}" for v, r in seen.items())
                             + f"); pass {flag} to score them all keeping one")
        out.append(next(iter(seen)) if seen else float(getattr(EnvParams(), name)))
    return out[0], out[1]


def run_set(traces: Path, runs: list[str], grid: tuple, max_steps: int, base, jobs: int = 1,
            split: str = "test", n_traces: int = 0, baselines: bool = True, kinds: list[str] | None = None) -> dict:
    """Every controller under each objective on a split of ``traces`` (``n_traces`` > 0: that many traces spread evenly
    over it, as train.py's val episodes; 0: all); ``base``: :func:`runs_params` of ``runs``; without ``baselines`` only
    the runs (returns, no score). ``jobs`` > 1 scores the objectives in that many processes (each objective's figures
    are the same either way). ``kinds``: the objectives scored (None: all three)."""
    kinds = list(CONSTRAINT) if kinds is None else list(kinds)
    if jobs > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        # spawn: each worker imports torch afresh instead of inheriting a forked copy of the parent's threads
        with ProcessPoolExecutor(min(jobs, len(kinds)), mp_context=mp.get_context("spawn")) as ex:
            done = list(ex.map(run_objective, *zip(*[(traces, runs, grid, max_steps, base, k, split, n_traces,
                                                      baselines) for k in kinds])))
    else:
        done = [run_objective(traces, runs, grid, max_steps, base, k, split, n_traces, baselines) for k in kinds]
    return {"traces": str(traces), "split": split, "objectives": dict(zip(kinds, done))}


def run_objective(traces: Path, runs: list[str], grid: tuple, max_steps: int, base, kind: str, split: str = "test",
                  n_traces: int = 0, baselines: bool = True) -> dict:
    """Every controller under the objective ``kind`` on a split of ``traces`` (:func:`run_set`'s entry)."""
    import gymnasium as gym

    import envs
    from agents.registry import make_controller
    from agents.run_io import load_controller
    from runtime.dynamics import Objective
    from train import spread_val_episodes

    # goal-conditioned policies read the objective block; the baselines ignore it
    params = dataclasses.replace(base, objective=Objective(kind=kind, goal_obs=bool(runs)))
    name_w, _ = CONSTRAINT[kind]
    free = dataclasses.replace(params, weights=dataclasses.replace(params.weights, **{name_w: 0.0}))
    env = gym.make(envs.ENV_ID, traces=str(traces), split=split, params=params, random_start=False)
    env_free = gym.make(envs.ENV_ID, traces=str(traces), split=split, params=free, random_start=False)
    n_tr = len(env.unwrapped.traces)
    # n_traces spread evenly over the split by train.py's own rule for its val episodes (each from row 0); else all
    picked = ([e["trace"] for e in spread_val_episodes([1] * n_tr, n_traces, max_steps)] if 0 < n_traces < n_tr
              else list(range(n_tr)))
    eps = [{"trace": int(k), "start": 0, "objective": kind} for k in picked]
    oracle_kw = dict(zip(("n_soc", "n_temp", "n_backlog"), grid))
    ctrls = {}
    if baselines:
        ctrls = {n: make_controller(n, env, **({"seed": 0} if n == "random" else {})) for n in BASELINES}
        ctrls["oracle"] = make_controller("oracle", env, **oracle_kw)
    for k, r in enumerate(runs):
        ctrls[f"rl:{k}"] = load_controller(r)
    res = {}
    t0 = time.time()
    for name, c in ctrls.items():
        if hasattr(c, "bind"):
            c.bind(env.unwrapped)
        res[name] = [episode(env, c, o, max_steps) for o in eps]
    binds = []
    if baselines:
        of = make_controller("oracle", env_free, **oracle_kw).bind(env_free.unwrapped)
        free_eps = [episode(env_free, of, o, max_steps) for o in eps]
        binds = [e["violations"][name_w] > 0 for e in free_eps]
    rr, ro = ((np.mean([e["return"] for e in res["random"]]), np.mean([e["return"] for e in res["oracle"]]))
              if baselines else (math.nan, math.nan))
    table = {}
    for name, es in res.items():
        ret = float(np.mean([e["return"] for e in es]))
        table[name] = {"return": ret, "score": (ret - rr) / (ro - rr) if abs(ro - rr) > 1e-9 else math.nan,
                       "violation_steps": int(sum(e["violations"][name_w] for e in es)),
                       "deaths": int(sum(e["death"] for e in es)),
                       "energy_j": float(sum(e["energy_j"] for e in es)),
                       "quality_per_token": float(np.mean([e["quality_per_token"] for e in es])),
                       # per trace: the return and the steps that violate the objective's constraint
                       "per_episode": [{"trace": tr.name, "device_kind": tr.device_kind,
                                        "return": float(e["return"]),
                                        "violation_steps": int(e["violations"][name_w])}
                                       for tr, e in zip([env.unwrapped.traces[k] for k in picked], es)]}
    return {"episodes": len(eps), "binding_share": float(np.mean(binds)) if binds else math.nan,
            "binding_episodes": int(sum(binds)),
            "wall_s": time.time() - t0, "controllers": table}


#: what a report's episodes and masks depend on besides its sets: runs added to a report must share them
SETTINGS = ("max_steps", "split", "floor_rule", "budget_rule", "floor_within_budget", "budget_floor_reserve_s",
            "budget_reserve_s", "budget_reserve_tps")
#: a setting a report from before it existed has implicitly: the floor kept the budget rule's own reserve (900 s),
#: which kept 900 s of budget or of the safe configuration at 50 tok/s (every run scored had been trained with them)
LEGACY = {"budget_floor_reserve_s": 900.0, "budget_reserve_s": 900.0, "budget_reserve_tps": 50.0}


def with_settings(base, settings: dict):
    """``base`` (``EnvParams``) with a report's :data:`SETTINGS`: its episode length, rules and what they keep in hand
    (``settings``: the dict a report records, or the one ``main`` builds from its options)."""
    return dataclasses.replace(base, max_episode_steps=int(settings["max_steps"]),
                               floor_rule=bool(settings["floor_rule"]), budget_rule=bool(settings["budget_rule"]),
                               budget_floor_reserve_s=float(settings["budget_floor_reserve_s"]),
                               budget_reserve_s=float(settings["budget_reserve_s"]),
                               budget_reserve_tps=float(settings["budget_reserve_tps"]))


def settings_differ(report: dict, settings: dict, kinds=None) -> str | None:
    """What in ``settings`` (a report's, or a call's) differs from ``report``'s :data:`SETTINGS`, with the fix; None
    when nothing does. ``kinds``: the objectives to be scored (None: any); what the floor keeps of the budget's reserve
    matters only under min-energy (no other objective has a floor)."""
    for key in SETTINGS:
        if key == "budget_floor_reserve_s" and kinds is not None and "min-energy" not in kinds:
            continue
        have, want = report.get(key, LEGACY.get(key)), settings.get(key, LEGACY.get(key))
        if have != want:
            return (f"the report has {key}={have!r}, these runs {want!r}; score them as the report was (the same "
                    "--traces, --split, --n-traces, --max-steps, rules, --budget-reserve-s, --budget-reserve-tps and "
                    "--floor-reserve-s)")
    return None


def add_runs(report: dict, new: dict) -> dict:
    """``report`` (a full report) with the runs of ``new`` (a ``--runs-only`` report of the same episodes) added as
    ``rl:k`` columns after its own, each scored against ``report``'s random policy and oracle returns. ValueError
    saying what differs when ``new`` was scored on other episodes, steps or rules."""
    differs = settings_differ(report, new, [k for s in new["sets"] for k in s["objectives"]])
    if differs:
        raise ValueError(f"--add-to: {differs}")
    out = json.loads(json.dumps(report))  # a deep copy
    k0 = len(report.get("runs") or [])
    sets = {s["traces"]: s for s in out["sets"]}
    for ns in new["sets"]:
        if ns["traces"] not in sets:
            raise ValueError(f"--add-to: the report has no set {ns['traces']!r} (it has {sorted(sets)}); pass the "
                             "report's --traces")
        for kind, o in ns["objectives"].items():
            if kind not in sets[ns["traces"]]["objectives"]:
                raise ValueError(f"--add-to: the report did not score {kind}; pass --kinds with the report's "
                                 f"objectives ({', '.join(sets[ns['traces']]['objectives'])})")
            ro = sets[ns["traces"]]["objectives"][kind]
            want = [e["trace"] for e in ro["controllers"]["oracle"]["per_episode"]]
            rr, orc = ro["controllers"]["random"]["return"], ro["controllers"]["oracle"]["return"]
            for j, m in enumerate(o["controllers"].values()):
                got = [e["trace"] for e in m["per_episode"]]
                if got != want:
                    raise ValueError(f"--add-to: {ns['traces']} {kind}: the report scored {len(want)} episodes "
                                     f"({want[:3]}…), these runs {len(got)} ({got[:3]}…); pass the report's "
                                     "--n-traces and --split")
                m = dict(m, score=(m["return"] - rr) / (orc - rr) if abs(orc - rr) > 1e-9 else math.nan)
                ro["controllers"][f"rl:{k0 + j}"] = m
    out["runs"] = list(report.get("runs") or []) + list(new["runs"])
    out.setdefault("added", []).append({"date": new["date"], "runs": new["runs"]})
    return out


def floor_text(data: dict) -> str:
    """How a report held min-energy's floor: by the masks, under a budget within what the budget rule allows (reports
    from ``floor_within_budget`` on), or out of force under a budget (earlier reports), or only as a cost."""
    if not data.get("floor_rule", False):
        return "only a cost"
    if data.get("floor_within_budget", False) and data.get("budget_rule", False):
        keep = data.get("budget_floor_reserve_s", LEGACY["budget_floor_reserve_s"])
        keep = min(keep, data.get("budget_reserve_s", LEGACY["budget_reserve_s"]))  # never more than the rule keeps
        return ("held by the masks (EnvParams.floor_rule), under a budget within what the budget rule allows, "
                f"spending its reserve down to {keep:g} s of budget (EnvParams.budget_floor_reserve_s)")
    return "held by the masks (EnvParams.floor_rule)"


def budget_text(data: dict) -> str:
    """How a report's masks held the budget: what the budget rule kept in hand."""
    keep_s = data.get("budget_reserve_s", LEGACY["budget_reserve_s"])
    tps = data.get("budget_reserve_tps", LEGACY["budget_reserve_tps"])
    burst = f", or of the safe configuration at {tps:g} tok/s when that is more" if tps and keep_s else ""
    return (f"held by the masks (EnvParams.budget_rule), keeping {keep_s:g} s of budget in hand{burst} "
            "(EnvParams.budget_reserve_s, budget_reserve_tps)")


def to_markdown(data: dict) -> str:
    lines = [f"# Objectives: binding constraints and controllers ({data['date']})", "",
             f"Host `{data['host']}`; {data.get('split', 'test')} split, every trace from row 0, {data['max_steps']} "
             "steps; oracle grid "
             f"{data['oracle_grid']}; min-energy's floor "
             f"{floor_text(data)}; the "
             "budget "
             f"{budget_text(data) if data.get('budget_rule', False) else 'only a cost'}. "
             "Energy is modelled (profile `profiles/reference-cpu.json`). "
             "Generated by `benchmarks/objectives.py`.", ""]
    if data.get("runs"):  # which run each rl:k column is
        lines += [f"* `rl:{k}`: `{r}`" for k, r in enumerate(data["runs"])] + [""]
    for a in data.get("added", []):  # runs scored later on the same episodes (--add-to)
        lines += [f"Added on {a['date']} with `--add-to` (the same episodes, scored against this report's random "
                  f"policy and oracle): {', '.join(f'`{r}`' for r in a['runs'])}.", ""]
    for s in data["sets"]:
        lines += [f"## {s['traces']}", ""]
        for kind, o in s["objectives"].items():
            lines += [(f"### {kind}: the constraint binds in {o['binding_episodes']} of {o['episodes']} episodes "
                       f"({o['binding_share']:.0%})") if o["binding_share"] == o["binding_share"]
                      else f"### {kind}: {o['episodes']} episodes (runs only)", "",
                      "| controller | score | return | constraint violations (steps) | deaths | energy (kJ) "
                      "| quality/token |", "|---|---|---|---|---|---|---|"]
            for name, m in o["controllers"].items():
                lines.append(f"| {name} | {m['score']:.3f} | {m['return']:.2f} | {m['violation_steps']} | "
                             f"{m['deaths']} | {m['energy_j'] / 1e3:.1f} | {m['quality_per_token']:.3f} |")
            lines.append("")
            per = {n: m["per_episode"] for n, m in o["controllers"].items() if "per_episode" in m}
            if per:  # the return per trace (constraint violations in brackets)
                traces = [e["trace"] for e in next(iter(per.values()))]
                cell = {n: [f"{e['return']:.1f} ({e['violation_steps']})" for e in es] for n, es in per.items()}
                lines += ["Per trace: return (steps violating the constraint).", ""]
                if len(traces) <= PER_TRACE_COLUMNS:  # a few traces: one row per controller
                    lines += ["| controller | " + " | ".join(traces) + " |", "|---|" + "---|" * len(traces)]
                    lines += [f"| {n} | " + " | ".join(c) + " |" for n, c in cell.items()]
                else:  # many (a real-data split): one row per trace, so the table stays readable
                    lines += ["| trace | " + " | ".join(cell) + " |", "|---|" + "---|" * len(cell)]
                    lines += [f"| {t} | " + " | ".join(c[i] for c in cell.values()) + " |"
                              for i, t in enumerate(traces)]
                lines.append("")
    return "\n".join(lines) + "\n"


def default_objectives_set() -> Path:
    """The default trace set with the user objectives overlaid (``traces.objectives``, seed 0), in a temporary
    folder."""
    from traces.objectives import overlay_set
    from traces.store import TraceSet

    tmp = Path(tempfile.mkdtemp()) / "default+objectives"
    overlay_set(TraceSet.load(REPO / "traces" / "data" / "default"), 0).save(tmp)
    return tmp


def add_report_args(ap: argparse.ArgumentParser, name: str, oracle_grid: bool = True) -> None:
    """The options every objectives report shares: ``--oracle-grid`` (unless not ``oracle_grid``), ``--max-steps``,
    ``--out`` (default ``benchmarks/results/NAME``) and ``--force``."""
    if oracle_grid:
        ap.add_argument("--oracle-grid", default="51,13,5")
    ap.add_argument("--max-steps", type=int, default=720)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / name))
    ap.add_argument("--force", action="store_true", help="replace an existing report")


def parse_oracle_grid(ap: argparse.ArgumentParser, text: str) -> tuple:
    """``--oracle-grid`` as (n_soc, n_temp, n_backlog), or a usage error."""
    from agents.evaluate import _oracle_grid

    try:
        return _oracle_grid(text)
    except argparse.ArgumentTypeError as exc:
        ap.error(f"argument --oracle-grid: {exc}")


def write_report(out: Path, data: dict, markdown: str) -> None:
    """OUT.json (``data``) and OUT.md (``markdown``), each written atomically; says where."""
    from runtime.safeio import atomic_write_text

    atomic_write_text(out.with_suffix(".json"), json.dumps(data, indent=1) + "\n")
    atomic_write_text(out.with_suffix(".md"), markdown)
    print(f"wrote {out.with_suffix('.md')}")


def refuse_to_overwrite(ap: argparse.ArgumentParser, out: Path, force: bool) -> None:
    """A usage error when OUT.json or OUT.md exists and ``force`` is not given."""
    if not force and (existing := [p for p in (out.with_suffix(".json"), out.with_suffix(".md")) if p.exists()]):
        ap.error(f"--out {out}: {existing[0]} exists; pass --force to replace it, or another --out")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--traces", nargs="*", default=None, help="trace sets with objectives (default: see docstring)")
    ap.add_argument("--runs", nargs="*", default=[])
    ap.add_argument("--no-floor-rule", action="store_true",
                    help="min-energy's floor only a cost, not held by the masks (EnvParams.floor_rule off, as every "
                         "report before 2026-12-06)")
    ap.add_argument("--no-budget-rule", action="store_true",
                    help="an overdraw of the budget only a cost, not held by the masks (EnvParams.budget_rule off, as "
                         "every report before 2026-12-06)")
    ap.add_argument("--floor-reserve-s", type=float, default=None, metavar="S",
                    help="min-energy under a budget: what is kept in hand where holding the floor needs the budget "
                         "rule's reserve (EnvParams.budget_floor_reserve_s; default: its default)")
    ap.add_argument("--budget-reserve-s", type=float, default=None, metavar="S",
                    help="the seconds of budget the budget rule keeps in hand (EnvParams.budget_reserve_s; default: "
                         "what the --runs kept in training, which must agree; without runs, EnvParams')")
    ap.add_argument("--budget-reserve-tps", type=float, default=None, metavar="TPS",
                    help="the burst the budget rule's reserve also pays for, tok/s (EnvParams.budget_reserve_tps; "
                         "default: as --budget-reserve-s)")
    ap.add_argument("--kinds", default=",".join(CONSTRAINT),
                    help=f"the objectives to score, separated by commas (default: {','.join(CONSTRAINT)})")
    ap.add_argument("--jobs", type=int, default=1,
                    help="score the three objectives in up to this many processes (default 1; the figures are the "
                         "same)")
    ap.add_argument("--split", choices=("test", "val", "train"), default="test",
                    help="the split scored (default test; val to choose between recipes without looking at test)")
    ap.add_argument("--n-traces", type=int, default=0,
                    help="score this many traces of the split, spread evenly over it as train.py's val episodes "
                         "(default 0: all)")
    ap.add_argument("--runs-only", action="store_true",
                    help="score only the --runs: their returns on the same episodes, no baselines, oracle or score "
                         "(a quick comparison between recipes)")
    ap.add_argument("--add-to", default=None, metavar="REPORT",
                    help="an earlier report (OUT.json): score only the --runs on its episodes and write it with them "
                         "added, scored against its random policy and oracle")
    add_report_args(ap, "objectives")
    a = ap.parse_args(argv)
    if a.jobs < 1:
        ap.error(f"argument --jobs: must be >= 1, got {a.jobs}")
    if a.n_traces < 0:
        ap.error(f"argument --n-traces: must be >= 0, got {a.n_traces}")
    kinds = [k.strip() for k in a.kinds.split(",") if k.strip()]
    if not kinds or any(k not in CONSTRAINT for k in kinds):
        ap.error(f"argument --kinds: {a.kinds!r}: give some of {', '.join(CONSTRAINT)}, separated by commas")
    from runtime.dynamics import EnvParams

    floor_keep = EnvParams().budget_floor_reserve_s if a.floor_reserve_s is None else a.floor_reserve_s
    try:  # as told, else the runs' own (as agents.evaluate keeps a run's), else EnvParams'
        keep_s, keep_tps = runs_reserve(a.runs, a.budget_reserve_s, a.budget_reserve_tps)
    except (OSError, ValueError) as exc:
        ap.error(str(exc))
    for flag, v, unit in (("--floor-reserve-s", floor_keep, "number of seconds"),
                          ("--budget-reserve-s", keep_s, "number of seconds"),
                          ("--budget-reserve-tps", keep_tps, "token rate")):
        if not (math.isfinite(v) and v >= 0):
            ap.error(f"argument {flag}: must be a finite {unit} >= 0, got {v}")
    if (a.runs_only or a.add_to) and not a.runs:
        ap.error(f"{'--runs-only' if a.runs_only else '--add-to'} needs --runs")
    if a.runs_only and a.add_to:
        ap.error("--add-to scores only the --runs already; leave out --runs-only")
    report = None
    if a.add_to:
        try:
            report = json.loads(Path(a.add_to).read_text())
            if not isinstance(report, dict) or not isinstance(report.get("sets"), list):
                raise ValueError("no 'sets' list: not a report of benchmarks/objectives.py")
        except (OSError, ValueError) as exc:
            ap.error(f"argument --add-to: {a.add_to}: {exc}")
    # the report's settings (SETTINGS); the floor under a budget is held after the budget rule's mask
    # (runtime.rules.floor_within_budget, from 2026-12-06); earlier reports have no such key, their floor was out of
    # force under a budget
    settings = {"max_steps": a.max_steps, "split": a.split, "floor_rule": not a.no_floor_rule,
                "budget_rule": not a.no_budget_rule, "floor_within_budget": True,
                "budget_floor_reserve_s": float(floor_keep), "budget_reserve_s": float(keep_s),
                "budget_reserve_tps": float(keep_tps)}
    if report is not None:  # what can be told before scoring: the settings and the sets must be the report's
        scored = list(report["sets"][0].get("objectives", {})) if report["sets"] else []
        kinds = [k for k in kinds if k in scored]  # the report's objectives only
        if not kinds:
            ap.error(f"argument --add-to: {a.add_to} scored {scored}, not --kinds {a.kinds}")
        differs = settings_differ(report, settings, kinds)
        if differs:
            ap.error(f"argument --add-to: {a.add_to}: {differs}")
        have = [s.get("traces") for s in report["sets"]]
        for t in a.traces or []:
            if t not in have:
                ap.error(f"argument --add-to: {a.add_to} has no set {t!r} (it has {have}); pass the report's --traces")
    from runtime.safeio import atomic_write_text

    grid = parse_oracle_grid(ap, a.oracle_grid)
    try:  # before anything heavy: every run's folder, and one set of env parameters for all of them
        base = runs_params(a.runs, a.max_steps)
    except (OSError, ValueError) as exc:
        ap.error(str(exc))
    base = with_settings(base, settings)
    out = Path(a.out)
    refuse_to_overwrite(ap, out, a.force)
    sets = [Path(t) for t in a.traces] if a.traces else None
    if sets is None:
        real = REPO / "data" / "real-objectives"
        sets = [default_objectives_set()] + ([real] if real.exists() else [])
    data = {"date": time.strftime("%Y-%m-%d"), "host": f"{platform.processor() or platform.machine()}",
            "oracle_grid": grid, "runs": a.runs, **settings,
            "sets": [run_set(s, a.runs, grid, a.max_steps, base, a.jobs, a.split, a.n_traces,
                             not (a.runs_only or report), kinds) for s in sets]}
    for s in data["sets"]:
        if "default+objectives" in s["traces"]:
            s["traces"] = "traces/data/default + traces.objectives (seed 0)"
    if report is not None:
        try:
            data = add_runs(report, data)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out.with_suffix(".json"), json.dumps(data, indent=1))
    atomic_write_text(out.with_suffix(".md"), to_markdown(data))
    print(to_markdown(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
