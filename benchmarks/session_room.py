"""How much charge a session leaves above the smallest configuration, and when each controller has spent it.

A battery death that the oracle avoids can be one that control would have avoided, or one that needed knowing when
the session ends (``benchmarks/foresight_free.py``). This measures the second kind directly on one held-out session
of a cross-validation fold: the battery's charge at the start (the env's ``device_view()``: SoC x capacity), what
the device's own load with the smallest
configuration draws until the session ends (the static-smallest controller's recorded power), and so the session's
*room*: the energy a controller may spend above the smallest configuration and still last. For the oracle, the
fold's trained policies (every seed, as they are) and the schedutil-like rule, it writes the energy each spends above
what the smallest configuration would have drawn over the same steps, cumulative, against that room: where a curve
crosses the room line, no configuration can save the device any more. Writes ``OUT.md``, ``OUT.json``, ``OUT.png``::

    python benchmarks/session_room.py --cv runs/cv_om_hotdr_f31 --fold 1 \\
        --trace ad896f37958c4b3b84ef8a0c1d792eb0-2020-08-19-00-50-18 --out benchmarks/results/session_room_ad896f37

The power is the whole device's (own load, idle, the model), as recorded per step by ``agents.evaluate``; modelled
energy throughout (the profile's costs on the trace's own load).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from battery_saver import RULE, cv_folds, fold_runs, save_figure  # noqa: E402 - the same folds, runs, figures

SMALLEST = "static-smallest"


def run_session(cv: Path, fold: int, trace: str, grid: tuple[int, int, int], max_steps: int) -> dict:
    """The session's episode under the oracle, the smallest configuration, the rule and every seed's policy, with
    per-step power recorded."""
    import numpy as np

    from agents.evaluate import evaluate_controllers
    from agents.registry import ORACLE, make_controller
    from agents.run_io import env_from_config, load_config, load_controller

    runs = fold_runs(cv, fold)
    cfg = load_config(runs[0])
    traces = str(cv / "folds" / f"fold-{fold}")

    def factory():
        return env_from_config(cfg, split="test", traces=traces, random_start=False)

    env = factory()
    names = [t.name for t in env.unwrapped.traces]
    hits = [k for k, n in enumerate(names) if trace in n]
    if len(hits) != 1:
        shown = ", ".join(names[k] for k in hits[:3]) + (f" and {len(hits) - 3} more" if len(hits) > 3 else "")
        raise SystemExit(f"--trace {trace!r}: {'no' if not hits else len(hits)} traces of fold {fold}'s test split "
                         f"match{': ' + shown if hits else ''}; fix: give a longer part of one name, e.g. "
                         f"{names[hits[0] if hits else 0]}")
    k = hits[0]
    ctl = {ORACLE: partial(make_controller, ORACLE, n_soc=grid[0], n_temp=grid[1], n_backlog=grid[2]),
           SMALLEST: partial(make_controller, SMALLEST), RULE: partial(make_controller, RULE)}
    for run in runs:
        ctl[f"seed {run.parent.name.split('-')[-1]}"] = load_controller(run)
    # seed=k: the episode is reset with the seed agents.evaluate gives it in the fold's report (seed + index)
    res = evaluate_controllers(factory, ctl, episodes=[{"trace": k, "start": 0}], max_steps=max_steps, seed=k,
                               record=True, progress=False)
    dt = float(env.unwrapped.step_s)
    sm = res["series"][SMALLEST][0]
    if np.any(np.asarray(sm["supply_w"], float) > 0):
        raise SystemExit(f"{names[k]}: a charger or panel supplies power during the trace; the room is defined for a "
                         "session on battery alone")
    small_j = np.asarray(sm["power_w"], float) * dt
    view = env.unwrapped
    view.reset(seed=k, options={"trace": k, "start": 0})  # the episode's start, as evaluate_controllers resets it
    start = view.device_view()
    capacity_j, charge_j = start["capacity_j"], start["soc_frac"] * start["capacity_j"]
    out = {"trace": names[k], "fold": fold, "dt_s": dt, "controllers": {}}
    for name in ctl:
        ep, ser = res["per_episode"][name][0], res["series"][name][0]
        e_j = np.asarray(ser["power_w"], float) * dt
        n = min(len(e_j), len(small_j))
        out["controllers"][name] = {
            "steps": int(ep["steps"]), "death": bool(ep["death"]), "return": float(ep["return"]),
            "energy_j": float(e_j.sum()), "extra_j": np.cumsum(e_j[:n] - small_j[:n]).tolist()}
    out["steps"] = int(res["per_episode"][SMALLEST][0]["steps"])
    out["smallest_j"] = float(small_j.sum())
    out["charge_j"], out["capacity_j"] = float(charge_j), float(capacity_j)
    out["soc0"] = float(start["soc_frac"])
    return out


def summarise(s: dict) -> dict:
    """The room (the charge at the start less what the smallest configuration draws until the session ends) and, per
    controller, its spending above the smallest configuration over the same steps."""
    room = s["charge_j"] - s["smallest_j"]
    half = s["steps"] // 2
    rows = {}
    for name, c in s["controllers"].items():
        x = c["extra_j"]
        over = next((i for i, v in enumerate(x) if v > room + 1e-6), None)
        rows[name] = {"steps": c["steps"], "death": c["death"], "return": c["return"], "energy_j": c["energy_j"],
                      "extra_total_j": x[-1] if x else 0.0,
                      "extra_first_half_j": x[min(half, len(x)) - 1] if x else 0.0,
                      "over_room_min": None if over is None else (over + 1) * s["dt_s"] / 60.0}
    return {"room_j": room, "half_min": half * s["dt_s"] / 60.0, "rows": rows}


def write(s: dict, summ: dict, out: Path, cmd: str, seconds: float) -> list[Path]:
    from runtime.safeio import atomic_write_text

    out.parent.mkdir(parents=True, exist_ok=True)
    minutes = s["steps"] * s["dt_s"] / 60.0
    md = [f"# The room a session leaves above the smallest configuration: {s['trace']} (fold {s['fold']}, "
          f"{time.strftime('%Y-%m-%d')})", "",
          f"Modelled energy (the profile's costs on the trace's own load). The session starts at {s['soc0']:.1%} and "
          f"lasts {s['steps']} steps ({minutes:.0f} min). The smallest configuration with the device's own load "
          f"draws {s['smallest_j'] / 1e3:.2f} kJ of the {s['charge_j'] / 1e3:.2f} kJ until it ends. "
          "**The room above the smallest configuration: "
          f"{summ['room_j'] / 1e3:.2f} kJ** ({summ['room_j'] / (s['steps'] * s['dt_s']):.2f} W on average over the "
          "session)." + (" Even the smallest configuration does not last to the end: there is no room, and "
                         "every controller dies." if summ["room_j"] <= 0 else ""), "",
          "| controller | steps | death | return | energy, kJ | above the smallest: first "
          f"{summ['half_min']:.0f} min, kJ | above the smallest: all, kJ | the room spent at, min |",
          "|---|---|---|---|---|---|---|---|"]
    for name, r in summ["rows"].items():
        at = "–" if r["over_room_min"] is None else f"{r['over_room_min']:.0f}"
        md.append(f"| {name} | {r['steps']} | {'yes' if r['death'] else 'no'} | {r['return']:.1f} | "
                  f"{r['energy_j'] / 1e3:.2f} | {r['extra_first_half_j'] / 1e3:.2f} | {r['extra_total_j'] / 1e3:.2f} | "
                  f"{at} |")
    md += ["", f"![energy above the smallest configuration]({out.name}.png)", "",
           f"`{cmd}` ({seconds:.0f} s)"]
    plot(s, summ, out.with_suffix(".png"))
    atomic_write_text(out.with_suffix(".json"), json.dumps({**s, "summary": summ}, indent=1))
    atomic_write_text(out.with_suffix(".md"), "\n".join(md) + "\n")
    return [out.with_suffix(x) for x in (".md", ".json", ".png")]


def plot(s: dict, summ: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    for name, c in s["controllers"].items():
        if name == SMALLEST:
            continue
        t = [(i + 1) * s["dt_s"] / 60.0 for i in range(len(c["extra_j"]))]
        ax.plot(t, [v / 1e3 for v in c["extra_j"]], "-" if name.startswith("seed") else "--",
                label=name + (" (dies)" if c["death"] else ""))
    ax.axhline(summ["room_j"] / 1e3, color="k", lw=1, ls=":", label="the session's room")
    ax.set_xlabel("minutes into the session")
    ax.set_ylabel("energy above the smallest configuration, kJ")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, f"{s['trace'][:40]}…: where each controller spends the room", path)


def main(argv: list[str] | None = None) -> int:
    from agents.evaluate import _oracle_grid

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cv", required=True, type=Path, help="an agents.crossval --out folder")
    ap.add_argument("--fold", required=True, type=int, help="the fold whose held-out session to measure")
    ap.add_argument("--trace", required=True, help="the session: its trace name or a unique part of it")
    ap.add_argument("--oracle-grid", type=_oracle_grid, default="51,13,5", help="n_soc,n_temp,n_backlog (each >= 2)")
    ap.add_argument("--max-steps", type=int, default=720)
    ap.add_argument("--out", required=True, type=Path, help="output path without suffix (OUT.md, .json, .png)")
    a = ap.parse_args(argv)
    if a.fold not in cv_folds(ap, [a.cv], None):
        ap.error(f"--fold {a.fold}: {a.cv} has no such fold")
    t0 = time.perf_counter()
    s = run_session(a.cv, a.fold, a.trace, a.oracle_grid, a.max_steps)
    summ = summarise(s)
    cmd = "python benchmarks/session_room.py " + " ".join(sys.argv[1:] if argv is None else argv)
    paths = write(s, summ, a.out, cmd, time.perf_counter() - t0)
    print(a.out.with_suffix(".md").read_text())
    print("wrote", ", ".join(map(str, paths)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
