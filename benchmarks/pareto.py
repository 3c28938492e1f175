"""The quality-versus-energy front a goal-conditioned policy reaches across budgets and floors (issue 16 item 7).

    python benchmarks/pareto.py --run RUN [--policy policy.npz] [--traces data/default-objectives]
                                [--budgets 0.3,0.45,0.6,0.8,1.0] [--floors 0.30,0.38,0.45,0.52]
                                [--oracle-grid 51,13,5] [--max-steps 720] [--out benchmarks/results/pareto]

One goal-conditioned policy (trained with ``--env.objective.kind mix``) is run on the test split under a sweep of
user settings, every trace from row 0:

* **budgets** (max-quality): a constant power budget for the LLM of ``f`` × the full model's power at the trace's
  mean demand (``traces.objectives.NOMINAL_J_PER_TOKEN``), for each ``f`` of ``--budgets``;
* **floors** (min-energy): the quality floor ``q`` of ``--floors`` (no budget).

Each setting gives one point per controller: the model's energy per served token (J/token: Σ served × the
configuration's energy per token / Σ served) and the quality per served token, plus the steps in violation
(budget overdraw, quality below the floor), the share of demand served and battery deaths. The oracle (the
exact optimum of each setting) traces its own front; the baselines read no objective, so they are one point
each (their unconstrained run); the profile's configurations are drawn as the static front. At each floor, with
the floor rule on, the smallest model held to the masks is scored too (*smallest, floor-held*: the cheapest
configuration that meets the floor where the safety rules allow one, the floor's own rule). Writes OUT.json, OUT.md
and OUT.png.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

BASELINES = ["schedutil", "greedy-budget", "static-smallest", "static-largest", "mpc"]
FLOOR_GREEDY = "smallest, floor-held"  # static-smallest under the floor rule's masks (a rule is stepped down to them)
BUDGET_GREEDY = "largest, budget-held"  # static-largest under the budget rule's masks: the best the budget allows
SMALLEST = "static-smallest"  # under a budget the best rule of the objectives reports


def run_point(env_factory, ctrls: dict, episodes: list[dict], max_steps: int, q_min: float) -> dict:
    """Every controller on the episodes; per controller the point's figures."""
    from agents.base import held_to_masks
    from agents.evaluate import held_action, predict_action

    env = env_factory()
    u = env.unwrapped
    ept, qual = u.costs.ept_j, u.costs.quality
    out = {}
    for name, make in ctrls.items():
        c = make(env)
        if hasattr(c, "bind"):
            c.bind(env)
        served = q_tok = llm_j = demand = 0.0
        over_b = below = deaths = steps = 0
        ret = 0.0
        held = held_to_masks(c)  # a rule held to the masks as the shield would hold it (as agents.evaluate does)
        for opt in episodes:
            obs, _ = env.reset(seed=0, options=opt)
            for t in range(max_steps):
                a = predict_action(env, c, obs, t)
                if held:
                    a, _ = held_action(env, a)
                demand += u.device_view()["demand_tps"] * u.step_s if t else 0.0
                obs, r, term, trunc, info = env.step(a)
                st, j = info["step"], info["config"]
                ret += float(r)
                served += st.served
                q_tok += qual[j] * st.served
                llm_j += ept[j] * st.served
                over_b += bool(st.over_budget > 0)
                below += bool(q_min == q_min and st.served > 0 and qual[j] < q_min)
                steps += 1
                if term or trunc:
                    deaths += bool(term)
                    break
        out[name] = {"j_per_token": llm_j / served if served else math.nan,
                     "quality_per_token": q_tok / served if served else math.nan,
                     "return": ret / len(episodes), "budget_steps": over_b, "floor_steps": below,
                     "deaths": deaths, "steps": steps, "tokens": served}
    return out


def main(argv=None) -> int:
    import traces as T
    from agents.evaluate import _oracle_grid
    from agents.registry import make_controller
    from agents.run_io import env_from_config, load_config, load_controller
    from traces.objectives import NOMINAL_J_PER_TOKEN

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", required=True, help="a goal-conditioned run folder (train.py --env.objective.kind mix)")
    ap.add_argument("--policy", default=None, help="also its exported policy file through the runtime manager")
    ap.add_argument("--traces", default="data/default-objectives")
    ap.add_argument("--split", default="test")
    ap.add_argument("--budgets", default="0.3,0.45,0.6,0.8,1.0")
    ap.add_argument("--floors", default="0.30,0.38,0.45,0.52")
    ap.add_argument("--oracle-grid", type=_oracle_grid, default="51,13,5")
    ap.add_argument("--max-steps", type=int, default=720)
    ap.add_argument("--out", default="benchmarks/results/pareto")
    ap.add_argument("--no-floor-rule", action="store_true",
                    help="min-energy's floor only a cost, not held by the masks (EnvParams.floor_rule off, as every "
                         "report before 2026-12-06)")
    ap.add_argument("--no-budget-rule", action="store_true",
                    help="an overdraw of the budget only a cost, not held by the masks (EnvParams.budget_rule off, as "
                         "every report before 2026-12-06)")
    a = ap.parse_args(argv)
    budgets = [float(x) for x in a.budgets.split(",") if x.strip()]
    floors = [float(x) for x in a.floors.split(",") if x.strip()]
    cfg = load_config(a.run)
    if not cfg["env_params"].get("objective", {}).get("kind") == "mix" and \
            not cfg["env_params"].get("objective", {}).get("goal_obs"):
        raise SystemExit(f"--run {a.run}: not goal-conditioned (train it with --env.objective.kind mix)")
    base = T.TraceSet.load(a.traces).split(a.split)
    oracle_kw = {**dict(zip(("n_soc", "n_temp", "n_backlog"), a.oracle_grid)), "horizon_steps": a.max_steps}
    rl = load_controller(a.run)
    ctrls = {"rl": lambda env: rl, "oracle": lambda env: make_controller("oracle", env, **oracle_kw)}
    if a.policy:
        from agents.deployed import DeployedPolicy

        ctrls["deployed"] = lambda env: DeployedPolicy(a.policy, name="deployed")
    settings = []
    for f in budgets:
        trs = [t.replace(budget_w=np.full(len(t.time_s), f * float(np.nanmean(t.demand_tps)) * NOMINAL_J_PER_TOKEN))
               for t in base]
        settings.append({"kind": "max-quality", "value": f, "traces": trs,
                         "episodes": [{"trace": k, "start": 0, "objective": "max-quality"} for k in range(len(trs))],
                         "q_min": math.nan})
    no_budget = [t.replace(budget_w=None) for t in base]
    for q in floors:
        settings.append({"kind": "min-energy", "value": q, "traces": no_budget,
                         "episodes": [{"trace": k, "start": 0, "objective": "min-energy", "quality_floor": q}
                                      for k in range(len(no_budget))], "q_min": q})
    t0 = time.time()
    points = []
    from tqdm import tqdm

    for s in tqdm(settings, desc="settings", unit="setting"):
        def factory(s=s):
            return env_from_config(cfg, traces=s["traces"], split=a.split, random_start=False,
                                   floor_rule=not a.no_floor_rule, budget_rule=not a.no_budget_rule)
        extra = {}
        if s["kind"] == "max-quality":  # the budget's rules: the smallest model, and the largest one the budget
            # rule's masks allow (the best quality the budget allows now)
            extra[SMALLEST] = lambda env: make_controller("static-smallest", env)
            if not a.no_budget_rule:
                extra[BUDGET_GREEDY] = lambda env: make_controller("static-largest", env)
        if s["kind"] == "min-energy" and not a.no_floor_rule:  # the floor's own rule: the smallest model held to the
            # floor masks, i.e. the cheapest configuration that meets the floor where the safety rules allow one
            extra[FLOOR_GREEDY] = lambda env: make_controller("static-smallest", env)
        res = run_point(factory, {**ctrls, **extra}, s["episodes"], a.max_steps, s["q_min"])
        points.append({"kind": s["kind"], "value": s["value"], "controllers": res})
    # the baselines read no objective: one unconstrained run each (no budget, max-quality)
    def free_factory():
        return env_from_config(cfg, traces=no_budget, split=a.split, random_start=False)
    free_eps = [{"trace": k, "start": 0, "objective": "max-quality"} for k in range(len(no_budget))]
    base_pts = run_point(free_factory, {n: (lambda env, n=n: make_controller(n, env)) for n in BASELINES},
                         free_eps, a.max_steps, math.nan)
    env = free_factory()
    configs = [{"name": n, "j_per_token": float(e), "quality": float(q)}
               for n, e, q in zip(env.space.names, env.costs.ept_j, env.costs.quality)]
    data = {"run": a.run, "policy": a.policy, "traces": a.traces, "split": a.split, "episodes": len(base),
            "max_steps": a.max_steps, "oracle_grid": list(a.oracle_grid), "budgets": budgets, "floors": floors,
            "points": points, "baselines": base_pts, "configurations": configs, "wall_s": time.time() - t0,
            "host": platform.node(), "date": time.strftime("%Y-%m-%d"), "floor_rule": not a.no_floor_rule,
            "budget_rule": not a.no_budget_rule,
            "profile": cfg.get("env_kwargs", {}).get("profile")}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(data, indent=1, default=float))
    out.with_suffix(".md").write_text(to_markdown(data, out.with_suffix(".png").name))
    plot(data, out.with_suffix(".png"))
    print(out.with_suffix(".md").read_text())
    return 0


def to_markdown(d: dict, png: str) -> str:
    lines = [f"# Quality versus energy across budgets and floors ({d['date']}, {d['host']})", "",
             f"Run `{d['run']}` on `{d['traces']}` ({d['split']}, {d['episodes']} traces from row 0, "
             f"≤ {d['max_steps']} steps), oracle grid {'×'.join(map(str, d['oracle_grid']))}; "
             "generated by `benchmarks/pareto.py`. Min-energy's floor "
             f"{'held by the masks (EnvParams.floor_rule)' if d.get('floor_rule', False) else 'only a cost'}; the "
             f"budget {'held by the masks (EnvParams.budget_rule)' if d.get('budget_rule', False) else 'only a cost'}."
             " Return: per episode. Energy = the model's own energy per served token (modelled, the profile's "
             "table); quality = skill above chance per served token.", "",
             "| setting | controller | return | J/token | quality/token | budget-overdraw steps | steps below floor "
             "| deaths |", "|---|---|---|---|---|---|---|---|"]
    for p in d["points"]:
        label = (f"budget {p['value']:.2f}× full model" if p["kind"] == "max-quality" else f"floor {p['value']:.2f}")
        for name, m in p["controllers"].items():
            lines.append(f"| {label} | {name} | {m['return']:.1f} | {m['j_per_token']:.4f} | "
                         f"{m['quality_per_token']:.3f} | "
                         f"{m['budget_steps']} | {m['floor_steps']} | {m['deaths']} |")
    lines += ["", "Baselines (no objective: one unconstrained run each):", "",
              "| controller | J/token | quality/token | deaths |", "|---|---|---|---|"]
    for name, m in d["baselines"].items():
        lines.append(f"| {name} | {m['j_per_token']:.4f} | {m['quality_per_token']:.3f} | {m['deaths']} |")
    lines += ["", f"![front]({png})", ""]
    return "\n".join(lines)


def _front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The non-dominated points (less energy, more quality), by energy."""
    out, best = [], -math.inf
    for e, q in sorted(points):
        if q > best:
            out.append((e, q))
            best = q
    return out


def plot(d: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5))
    cf = [(c["j_per_token"], c["quality"]) for c in d["configurations"]]
    ax.scatter(*zip(*cf), s=8, color="0.8", label="configurations (static)")
    fr = _front(cf)
    ax.plot(*zip(*fr), color="0.6", lw=0.8, ls="--", label="static front")
    styles = {"oracle": ("k", "s"), "rl": ("tab:blue", "o"), "deployed": ("tab:cyan", "^"),
              FLOOR_GREEDY: ("tab:red", "v"), BUDGET_GREEDY: ("tab:orange", "D"), SMALLEST: ("tab:green", "P")}
    for name, (col, mk) in styles.items():
        for kind, ls in (("max-quality", "-"), ("min-energy", ":")):
            pts = [(p["controllers"][name]["j_per_token"], p["controllers"][name]["quality_per_token"])
                   for p in d["points"] if p["kind"] == kind and name in p["controllers"]]
            if pts:
                ax.plot(*zip(*sorted(pts)), ls=ls, marker=mk, color=col, ms=5,
                        label=f"{name} ({'budgets' if kind == 'max-quality' else 'floors'})")
    for i, (name, m) in enumerate(d["baselines"].items()):
        ax.scatter([m["j_per_token"]], [m["quality_per_token"]], marker="x", s=50, color=f"C{i + 3}", label=name)
    ax.set_xlabel("model energy per served token (J, modelled)")
    ax.set_ylabel("quality per served token (skill above chance)")
    ax.set_title("quality vs energy across budgets (solid) and floors (dotted)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
