"""Would a device that weighs when its session may end avoid the deaths? The foresight-free oracle with a hazard.

The deaths the cross-validation target counts ("no battery death the oracle avoids") are on sessions that the oracle
survives only because it knows where they end. ``oracle-hazard`` (``agents.oracle.HazardOracle``) is the plan that
maximises the *expected* return of a device that knows of its session's end only what its owners' past sessions say:
the foresight-free oracle's DP (no charger later than now, the session possibly going on to the episode's cap), with
each row's continuation weighted by the chance that the session goes on past it, learned from the fold's *training*
units (a constant rate, or by the time the session has lasted). A death it has is one that maximising the expected
return, at that price of death, does not avoid; ``death_weight`` asks what price would make it hedge.

For each fold of a ``traces.folds`` folder (or an ``agents.crossval --out`` folder's ``folds/``), every held-out phone
and laptop session from row 0 (solar nodes: the hazard does not apply), this runs random, the oracle (the reference
of the death count, on ``--oracle-grid``), ``oracle-blind`` and one ``oracle-hazard`` per ``--settings`` entry
(``survival:death_weight``). Score: (return − random) / (oracle − random) over those sessions. Writes ``OUT.md``,
``OUT.json`` and ``OUT.png``::

    python benchmarks/session_hazard.py --folds-dir data/real-cv --jobs 2 --out benchmarks/results/session_hazard
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from battery_saver import save_figure  # noqa: E402 - the benchmarks' figure ending

DEFAULT_SETTINGS = "exponential:50,empirical:50,empirical:200,empirical:1000"


def parse_settings(text: str) -> list[tuple[str, float]]:
    """``"survival:weight,..."`` → [(survival, weight)]; ValueError naming the bad entry and the fix."""
    out = []
    for item in (x.strip() for x in text.split(",") if x.strip()):
        surv, _, w = item.partition(":")
        try:
            weight = float(w)
        except ValueError:
            weight = float("nan")
        if surv not in ("exponential", "empirical") or not weight > 0:
            raise ValueError(f"{item!r}: expected survival:death_weight with survival exponential or empirical and a "
                             "weight > 0, e.g. empirical:200")
        out.append((surv, weight))
    if not out:
        raise ValueError("no setting given; e.g. empirical:50,empirical:200")
    return out


def label(surv: str, weight: float) -> str:
    return f"hazard {surv} w{weight:g}"


def session_episodes(env) -> list[dict]:
    """Every phone and laptop trace of the env from row 0 (the sessions a hazard applies to)."""
    from agents.oracle import SESSION_KINDS

    return [{"trace": k, "start": 0} for k, t in enumerate(env.unwrapped.traces) if t.device_kind in SESSION_KINDS]


def run_task(fold_dir: str, name: str, setting: tuple[str, float] | None, grid: tuple[int, int, int],
             oracle_grid: tuple[int, int, int], max_steps: int) -> dict:
    """One controller on the fold's held-out sessions: per episode its return and whether it died."""
    from agents.evaluate import evaluate_controllers
    from agents.registry import make_controller
    from envs.power_env import MicroLLMPowerEnv
    from envs.tables import prepare_traces

    def factory():
        return MicroLLMPowerEnv(traces=fold_dir, split="test", random_start=False)

    env0 = factory()
    g = dict(zip(("n_soc", "n_temp", "n_backlog"), grid))
    extra = {}
    if name == "oracle":
        g = dict(zip(("n_soc", "n_temp", "n_backlog"), oracle_grid))
    elif name == "random":
        g = {"seed": 0}
    elif setting is not None:
        train = prepare_traces(fold_dir, "train", float(env0.params.step_s))
        extra = {"survival": setting[0], "death_weight": setting[1], "stretches": train}
    key = "oracle-hazard" if setting is not None else name
    t0 = time.perf_counter()
    res = evaluate_controllers(factory, {name: lambda env: make_controller(key, env, **g, **extra)},
                               episodes=session_episodes(env0), max_steps=max_steps, progress=False)
    return {"episodes": [e["trace_name"] for e in res["episodes"]],
            "return": [float(e["return"]) for e in res["per_episode"][name]],
            "death": [bool(e["death"]) for e in res["per_episode"][name]],
            "steps": [int(e.get("steps", 0)) for e in res["per_episode"][name]],
            "seconds": time.perf_counter() - t0}


def fold_summary(runs: dict[str, dict]) -> dict[str, dict]:
    """Per controller: score over the fold's sessions, deaths, and the deaths the oracle avoids (with traces)."""
    import numpy as np

    from agents.evaluate import normalised_score

    rand, orc = (float(np.mean(runs[k]["return"])) for k in ("random", "oracle"))
    names, o_dead = runs["oracle"]["episodes"], runs["oracle"]["death"]
    out = {}
    for n, r in runs.items():
        if r["episodes"] != names:
            raise RuntimeError(f"{n}: ran other episodes than the oracle")
        out[n] = {"score": normalised_score(float(np.mean(r["return"])), rand, orc),
                  "deaths": int(sum(r["death"])),
                  "deaths_oracle_avoids": [e for e, d, o in zip(names, r["death"], o_dead) if d and not o]}
    return out


def plot(per_fold: dict[str, dict], order: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    folds = sorted(per_fold)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    w = 0.8 / len(order)
    for j, n in enumerate(order):
        x = np.arange(len(folds)) + (j - (len(order) - 1) / 2) * w
        ax1.bar(x, [per_fold[f][n]["score"] for f in folds], w, color=f"C{j}", label=n)
        ax2.bar(x, [len(per_fold[f][n]["deaths_oracle_avoids"]) for f in folds], w, color=f"C{j}", label=n)
    for ax, yl in ((ax1, "score on the held-out sessions"), (ax2, "deaths the oracle avoids")):
        ax.set_xticks(np.arange(len(folds)), [f"fold {f}" for f in folds])
        ax.set_ylabel(yl)
        ax.grid(alpha=0.3, axis="y")
    scores = [per_fold[f][n]["score"] for f in folds for n in order]
    ax1.set_ylim(max(0.0, min(scores) - 0.05), max(1.0, max(scores)) + 0.01)  # above 1: beats the oracle's grid
    ax2.legend(fontsize=7)
    save_figure(fig, "planning for an unknown session end: score and deaths per fold (phone and laptop sessions)",
                path)


def main(argv=None) -> int:
    from agents.evaluate import _oracle_grid
    from model.cli import positive_int
    from runtime.safeio import atomic_write_text

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--folds-dir", type=Path, required=True,
                    help="a traces.folds --out folder (fold-0 …), or an agents.crossval --out folder's folds/")
    ap.add_argument("--folds", default=None, help="comma-separated folds (default: every fold-i in --folds-dir)")
    ap.add_argument("--settings", default=DEFAULT_SETTINGS,
                    help=f"oracle-hazard settings, survival:death_weight, comma-separated (default {DEFAULT_SETTINGS})")
    ap.add_argument("--grid", default="51,13,5", help="the DP grid of oracle-blind and oracle-hazard")
    ap.add_argument("--oracle-grid", default="201,13,5",
                    help="the oracle's grid (fine near an empty battery: docs/agents.md, 'The grid near an empty "
                         "battery')")
    ap.add_argument("--max-steps", type=positive_int, default=720)
    ap.add_argument("--jobs", type=positive_int, default=1, help="(fold, controller) tasks at once, one process each")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/session_hazard"),
                    help="output path without extension")
    ap.add_argument("--force", action="store_true", help="replace an existing report")
    a = ap.parse_args(argv)
    try:
        grid, ogrid = _oracle_grid(a.grid), _oracle_grid(a.oracle_grid)
    except argparse.ArgumentTypeError as exc:
        ap.error(f"argument --grid/--oracle-grid: {exc}")
    try:
        settings = parse_settings(a.settings)
    except ValueError as exc:
        ap.error(f"argument --settings: {exc}")
    have = sorted(int(p.name.split("-")[1]) for p in a.folds_dir.glob("fold-*") if (p / "manifest.json").is_file())
    if not have:
        ap.error(f"--folds-dir {a.folds_dir}: no fold-i/manifest.json; fix: python -m traces.folds data/real --k 4 "
                 f"--out {a.folds_dir}")
    try:
        folds = [int(x) for x in a.folds.split(",") if x.strip()] if a.folds else have
    except ValueError:
        ap.error(f"--folds {a.folds!r}: comma-separated fold numbers, e.g. 0,1,2,3")
    if missing := sorted(set(folds) - set(have)):
        ap.error(f"--folds: {missing} not in {a.folds_dir} (it has {have})")
    if a.out.with_suffix(".md").exists() and not a.force:
        ap.error(f"{a.out.with_suffix('.md')} exists; pass --force to replace it")
    t0 = time.perf_counter()
    order = ["oracle-blind", *(label(*s) for s in settings)]
    tasks = [t for f in folds for t in [(f, "random", None), (f, "oracle", None), (f, "oracle-blind", None),
                                         *((f, label(*s), s) for s in settings)]]
    runs: dict[int, dict[str, dict]] = {f: {} for f in folds}
    with concurrent.futures.ProcessPoolExecutor(a.jobs) as pool:
        futs = {pool.submit(run_task, str(a.folds_dir / f"fold-{f}"), n, s, grid, ogrid, a.max_steps): (f, n)
                for f, n, s in tasks}
        for fut in concurrent.futures.as_completed(futs):
            f, n = futs[fut]
            runs[f][n] = fut.result()
            print(f"[session_hazard] fold {f} {n}: {runs[f][n]['seconds']:.0f} s, "
                  f"{sum(runs[f][n]['death'])} deaths", file=sys.stderr, flush=True)
    per_fold = {f: fold_summary(runs[f]) for f in folds}
    import numpy as np

    from agents.oracle import keep_after_elapsed, on_battery_stretches, session_end_rate_per_h
    from envs.tables import prepare_traces

    rates = {}
    for f in folds:
        train = prepare_traces(str(a.folds_dir / f"fold-{f}"), "train", 10.0)
        keep = keep_after_elapsed(on_battery_stretches(train), 1.0)
        rates[f] = {"per_h": session_end_rate_per_h(train, 10.0),
                    "p_on_1h_after_30min": float(np.prod(keep[180:540])),
                    "p_on_1h_after_1h": float(np.prod(keep[360:720]))}
    date = time.strftime("%Y-%m-%d")
    cmd = (f"python benchmarks/session_hazard.py --folds-dir {a.folds_dir}" + (f" --folds {a.folds}" if a.folds else "")
           + (f" --settings {a.settings}" if a.settings != DEFAULT_SETTINGS else "")
           + (f" --jobs {a.jobs}" if a.jobs > 1 else "") + f" --out {a.out}")
    md = [f"# Planning for an unknown session end: `oracle-hazard`, folds {', '.join(map(str, folds))} ({date})", "",
          f"Each fold's held-out phone and laptop sessions from row 0, up to {a.max_steps} steps, max-quality, the "
          f"env's price of a death 50. Score: (return − random) / (oracle − random) over those sessions; the oracle on "
          f"{a.oracle_grid}, the blind and hazard oracles on {a.grid}. *hazard S wW*: the foresight-free oracle "
          "weighing the chance that the session ends (S: a constant rate, or by how long the session has lasted, both "
          "learned from the fold's training units) and pricing a death at W in its plan.", "",
          "| fold | sessions | training units: sessions ended per hour on battery | P(on 1 h more, after 30 min) | "
          "P(on 1 h more, after 1 h) |", "|---|---|---|---|---|"]
    for f in folds:
        md.append(f"| {f} | {len(runs[f]['oracle']['episodes'])} | {rates[f]['per_h']:.2f} | "
                  f"{rates[f]['p_on_1h_after_30min']:.2f} | {rates[f]['p_on_1h_after_1h']:.2f} |")
    md += ["", "| controller | mean score | worst fold | per fold | deaths | deaths the oracle avoids | on |",
           "|---|---|---|---|---|---|---|"]
    for n in order:
        sc = [per_fold[f][n]["score"] for f in folds]
        on = sorted({e for f in folds for e in per_fold[f][n]["deaths_oracle_avoids"]})
        md.append(f"| {n} | {np.mean(sc):.3f} | {min(sc):.3f} | " + " / ".join(f"{x:.3f}" for x in sc)
                  + f" | {sum(per_fold[f][n]['deaths'] for f in folds)} | "
                  f"**{sum(len(per_fold[f][n]['deaths_oracle_avoids']) for f in folds)}** | "
                  + (", ".join(f"{e[:8]}…{e[-19:]}" for e in on) or "–") + " |")
    md += ["", f"The oracle itself dies {sum(per_fold[f]['oracle']['deaths'] for f in folds)} times (sessions no plan "
           "survives).", "", f"![score and deaths per fold]({a.out.name}.png)", "",
           f"`{cmd}` ({time.perf_counter() - t0:.0f} s)"]
    a.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(a.out.with_suffix(".md"), "\n".join(md) + "\n")
    atomic_write_text(a.out.with_suffix(".json"), json.dumps(
        {"date": date, "folds_dir": str(a.folds_dir), "folds": folds, "settings": a.settings, "grid": a.grid,
         "oracle_grid": a.oracle_grid, "max_steps": a.max_steps, "session_end": {str(f): r for f, r in rates.items()},
         "per_fold": {str(f): r for f, r in per_fold.items()}, "runs": {str(f): r for f, r in runs.items()},
         "wall_s": time.perf_counter() - t0}, indent=1) + "\n")
    plot(per_fold, order, a.out.with_suffix(".png"))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
