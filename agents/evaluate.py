"""Score a trained run and every baseline on the same traces: ``report.md/.csv/.json`` + plots.

::

    python -m agents.evaluate --run runs/ppo-1 --traces traces/data/default --split test --out runs/ppo-1/eval
    python -m agents.evaluate --traces traces/data/default --split test --out /tmp/eval --profile p.json

Episodes: every trace of the split, from row 0 with the trace's initial SoC
(``options={"trace": k, "start": 0}``), deterministic, at most ``--max-steps`` steps — the same
episodes (and reset seeds) for every controller. Metrics per policy (``docs/agents.md``):

* ``return``: mean episode return; ``score``: oracle-normalised, (R − R_random)/(R_oracle − R_random);
* ``quality_per_token``: Σ quality·tokens / Σ tokens (token-weighted skill above chance);
* ``tokens``, ``energy_j``: totals over all episodes; ``ipj`` (intelligence per joule):
  Σ quality·tokens / Σ energy;
* ``thermal``, ``slo``, ``budget``: steps with that violation; ``deaths``: episodes that ended
  in battery death; ``switches``: configuration changes;
* split profiles: ``offload_frac`` (tokens computed with a server), ``radio_j`` (the device's radio, part
  of ``energy_j``), ``server_j`` (the server's compute time × ``LinkConstants.server_w``, modelled;
  not part of ``energy_j``);
* ``decision_us``: median wall time of one ``predict`` call (the oracle's first call of an
  episode also plans: see ``decision_us_max`` and ``plan_s`` in the JSON).

``--policy policy.npz`` scores an exported policy file the way ``deploy.py run`` runs it: every decision
through ``runtime.manager.RuntimeManager`` (observation builder, numpy policy, shield, dwell rule;
``agents.deployed``), twice: ``policy:<file>`` with the shield and ``policy:<file> unshielded`` without.

``evaluate_controllers(env_factory, controllers, episodes, max_steps)`` is the library entry
point (``train.py`` prints ``format_table`` of its result after training). ``--workers N`` (``workers=N``)
runs the (controller, episode) grid as Ray tasks (``agents.parallel``; docs/scale-out.md) with the same
results; 1, the default, does not import Ray.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agents.base import held_to_masks
from agents.baselines import F
from agents.registry import (
    ALL_CONTROLLERS,
    BASELINES,
    ORACLE,
    ORACLE_BLIND,
    ORACLES,
    RANDOM,
    SPLIT_BASELINES,
    default_controllers,
    make_controller,
)
from model.cli import float_in, nonneg_float, nonneg_int, positive_int
from runtime.rules import step_down
from runtime.safeio import atomic_write_text, atomic_writer

METRICS: tuple[tuple[str, str, str], ...] = (  # key, table header, format
    ("score", "score", "{:.3f}"),
    ("return", "return", "{:.2f}"),
    ("quality_per_token", "quality/token", "{:.4f}"),
    ("tokens", "tokens", "{:.0f}"),
    ("energy_j", "energy (J)", "{:.0f}"),
    ("ipj", "quality·tok/J", "{:.3f}"),
    ("thermal", "thermal", "{:d}"),
    ("slo", "SLO", "{:d}"),
    ("budget", "budget", "{:d}"),
    ("deaths", "deaths", "{:d}"),
    ("deaths_not_oracle", "deaths the oracle avoids", "{:.0f}"),
    ("switches", "switches", "{:d}"),
    ("decision_us", "decision (µs)", "{:.0f}"),
)
#: shown when a policy offloaded (split profiles); always in the JSON
SPLIT_METRICS: tuple[tuple[str, str, str], ...] = (
    ("offload_frac", "offloaded", "{:.1%}"),
    ("radio_j", "radio (J)", "{:.0f}"),
    ("server_j", "server (J, modelled)", "{:.0f}"),
)
#: shown when the foresight-free oracle ran (``--policies …,oracle-blind``): the deaths that control, not foresight of
#: the session's end or of a charger, would have avoided (docs/agents.md, "Deaths that control would avoid")
BLIND_METRICS: tuple[tuple[str, str, str], ...] = (
    ("deaths_not_blind", "deaths oracle-blind avoids", "{:.0f}"),
)
N_PLOT_TRACES = 3


def _as_controller(c, env):
    """A controller, or a factory ``f(env) -> controller``; bound to ``env`` when it can be."""
    ctrl = c if hasattr(c, "predict") else c(env)
    if hasattr(ctrl, "bind"):
        ctrl.bind(env)
    return ctrl


def predict_action(env, controller, obs, t: int) -> int:
    """The controller's deterministic action at step ``t`` of an episode; a controller that reads the env's action
    masks (``uses_masks``, e.g. a MaskablePPO policy) is given them."""
    if getattr(controller, "uses_masks", False):
        action, _ = controller.predict(obs, episode_start=np.array([t == 0]), deterministic=True,
                                       action_masks=env.unwrapped.action_masks())
    else:
        action, _ = controller.predict(obs, episode_start=np.array([t == 0]), deterministic=True)
    return int(np.asarray(action).reshape(-1)[0])


def held_action(env, action: int) -> tuple[int, bool]:
    """``action`` held to the env's action masks as a device's shield holds a rule: a forbidden choice stepped down
    to an allowed one (``runtime.rules.step_down``); returns the action and whether it was stepped down."""
    u = env.unwrapped
    allowed = u.action_masks()
    if allowed[action]:
        return action, False
    return step_down(action, allowed, u.costs.ept_j, u.costs.quality), True


def run_episode(env, controller, options: dict, max_steps: int, seed: int | None = None,
                record: bool = False, rules_under_masks: bool = True) -> dict[str, Any]:
    """One deterministic episode; per-episode sums, and per-step series when ``record``.

    A controller that does not read the env's action masks but is ``under_masks`` (the hand-written rules,
    ``agents.base.BaseController``) has a choice the mask forbids stepped down to an allowed one
    (``runtime.rules.step_down``; counted in ``mask_steps``), unless ``rules_under_masks`` is False."""
    obs, _ = env.reset(seed=seed, options=options)
    costs = env.unwrapped.costs
    quality, offload = costs.quality.tolist(), costs.offload.tolist()
    server_j_tok = (costs.server_ms * 1e-3 * env.unwrapped.params.link.server_w).tolist()
    held = rules_under_masks and held_to_masks(controller)
    ret = tokens = q_tokens = energy = off_tokens = radio_j = server_j = 0.0
    counts = {"thermal": 0, "slo": 0, "budget": 0, "switches": 0, "mask_steps": 0}
    dead, times = False, []
    series: dict[str, list] = {k: [] for k in ("soc", "temp_c", "supply_w", "config", "power_w")}
    for t in range(max_steps):
        t0 = time.perf_counter()
        action = predict_action(env, controller, obs, t)
        times.append(time.perf_counter() - t0)
        if held:
            action, stepped = held_action(env, action)
            counts["mask_steps"] += stepped
        supply_w = float(obs[F["supply_w"]])
        obs, r, term, trunc, info = env.step(action)
        st = info["step"]  # runtime.dynamics.StepResult
        ret += float(r)
        tokens += st.served
        q_tokens += quality[info["config"]] * st.served
        energy += st.energy_j
        a = info["config"]
        off_tokens += offload[a] * st.served
        radio_j += st.radio_j
        server_j += server_j_tok[a] * st.served
        counts["thermal"] += bool(st.over_c > 0)
        counts["slo"] += bool(st.slo_bad)
        counts["budget"] += bool(st.over_budget > 0)
        counts["switches"] += bool(info["switched"])
        if record:
            for k, val in (("soc", st.soc), ("temp_c", st.temp_c), ("supply_w", supply_w),
                           ("config", info["config"]), ("power_w", st.power_w)):
                series[k].append(val)
        if term or trunc:
            dead = bool(term)
            break
    u = env.unwrapped
    out = {"return": ret, "tokens": tokens, "q_tokens": q_tokens, "energy_j": energy, "steps": t + 1,
           "device_kind": u.trace.device_kind, "objective": getattr(u, "objective", "max-quality"),
           "offload_tokens": off_tokens, "radio_j": radio_j, "server_j": server_j,
           "death": dead, **counts, "decision_s": times}
    if record:
        out["series"] = {k: np.asarray(v) for k, v in series.items()}
    return out


def _aggregate(eps: list[dict]) -> dict[str, Any]:
    times = np.concatenate([e["decision_s"] for e in eps]) * 1e6
    tokens = sum(e["tokens"] for e in eps)
    energy = sum(e["energy_j"] for e in eps)
    qt = sum(e["q_tokens"] for e in eps)
    rets = np.array([e["return"] for e in eps])
    return {
        "return": float(rets.mean()), "return_std": float(rets.std()),
        "quality_per_token": qt / tokens if tokens > 0 else 0.0,
        "tokens": tokens, "energy_j": energy, "ipj": qt / energy if energy > 0 else 0.0,
        "thermal": int(sum(e["thermal"] for e in eps)), "slo": int(sum(e["slo"] for e in eps)),
        "budget": int(sum(e["budget"] for e in eps)), "deaths": int(sum(e["death"] for e in eps)),
        "switches": int(sum(e["switches"] for e in eps)), "steps": int(sum(e["steps"] for e in eps)),
        "mask_steps": int(sum(e.get("mask_steps", 0) for e in eps)),
        "decision_us": float(np.median(times)), "decision_us_mean": float(times.mean()),
        "decision_us_max": float(times.max()),
        "episode_returns": rets.tolist(),
        # split computing: share of tokens computed with a server, the device's radio energy, and the
        # server's (modelled: its compute time x LinkConstants.server_w; not in the device's energy)
        "offload_frac": sum(e["offload_tokens"] for e in eps) / tokens if tokens > 0 else 0.0,
        "radio_j": float(sum(e["radio_j"] for e in eps)), "server_j": float(sum(e["server_j"] for e in eps)),
    }


def normalised_score(ret: float, random_ret: float, oracle_ret: float) -> float:
    """(p − random) / (oracle − random): 0 = random, 1 = the oracle; NaN when undefined."""
    span = oracle_ret - random_ret
    if not math.isfinite(span) or abs(span) < 1e-9:
        return math.nan
    return (ret - random_ret) / span


def evaluate_controllers(env_factory: Callable[[], Any], controllers: Mapping[str, Any],
                         episodes: Sequence[dict] | None = None, max_steps: int = 720, seed: int = 0,
                         record: bool = False, progress: bool = True, workers: int = 1,
                         rules_under_masks: bool = True) -> dict[str, Any]:
    """Run every controller on the same episodes and aggregate the metrics.

    Args:
        env_factory: Builds the ``MicroLLMPowerEnv`` to evaluate on (``random_start=False``).
        controllers: name → controller (anything with SB3's ``predict``) or factory
            ``f(env) -> controller``; controllers with ``bind`` are bound to the env.
        episodes: Reset options per episode; default every trace of the env from row 0.
        max_steps: Steps per episode at most.
        seed: Episode e is reset with seed ``seed + e`` (the same for every controller).
        record: Keep per-step series (SoC, temperature, supply, configuration, power).
        progress: tqdm bar over (controller, episode).
        workers: Ray workers for the (controller, episode) grid (``agents.parallel``; 1: this process, Ray
            is not imported). ``env_factory`` and ``controllers`` must then pickle (lambdas do). The
            results are the serial ones: every episode is reset with its own seed, and a controller with
            its own generator across episodes (``random``) runs all its episodes in one task, in order.
        rules_under_masks: Step a rule's choice that the env's mask forbids down to an allowed one
            (``run_episode``); False: the rules run as written, ignoring the masks (reports before 2026-12-02).

    Returns:
        ``{"policies": {name: metrics}, "episodes": [...], "per_episode": {name: [...]},
        "series": {name: [...]}}`` (series only when ``record``); metrics include ``score``
        when both ``random`` and ``oracle`` were evaluated.
    """
    env = env_factory()
    if episodes is None:
        episodes = [{"trace": k, "start": 0} for k in range(len(env.unwrapped.traces))]
    episodes = list(episodes)
    names = list(controllers)
    ran = (_evaluate_parallel(env, env_factory, controllers, episodes, max_steps, seed, record, progress, workers,
                              rules_under_masks)
           if workers > 1 else {})
    bar = None
    if progress and not ran:
        from tqdm import tqdm

        bar = tqdm(total=len(names) * len(episodes), desc="evaluate", unit="ep", file=sys.stderr)
    result: dict[str, Any] = {"policies": {}, "per_episode": {}, "series": {}, "max_steps": max_steps,
                              "episodes": []}
    traces = env.unwrapped.traces
    for opt in episodes:
        k = opt.get("trace", 0)
        result["episodes"].append({**opt, "trace_name": traces[k].name if isinstance(k, int) else k})
    for name in names:
        if ran:  # computed by Ray workers (same episodes, same seeds)
            eps, plans = ran[name]
        else:
            ctrl = _as_controller(controllers[name], env)
            eps = []
            for e, opt in enumerate(episodes):
                if bar is not None:
                    bar.set_postfix_str(f"{name} {result['episodes'][e]['trace_name']}")
                eps.append(run_episode(env, ctrl, opt, max_steps, seed=seed + e, record=record,
                                       rules_under_masks=rules_under_masks))
                if bar is not None:
                    bar.update(1)
            plans = list(getattr(ctrl, "plans", None) or [])
        agg = _aggregate(eps)
        if plans:
            agg["plan_s"] = float(sum(p["plan_s"] for p in plans))
            agg["value0"] = [p["value0"] for p in plans]
        result["policies"][name] = agg
        result["per_episode"][name] = [{k: v for k, v in ep.items() if k not in ("decision_s", "series")}
                                       for ep in eps]
        if record:
            result["series"][name] = [ep["series"] for ep in eps]
    if bar is not None:
        bar.close()
    pol = result["policies"]
    for m in pol.values():
        m["score"] = (normalised_score(m["return"], pol[RANDOM]["return"], pol[ORACLE]["return"])
                      if RANDOM in pol and ORACLE in pol else math.nan)
    per = result["per_episode"]
    for name, m in pol.items():
        m["deaths_not_oracle"] = deaths_not_oracle(per[name], per[ORACLE]) if ORACLE in per else math.nan
        if ORACLE_BLIND in per:
            m["deaths_not_blind"] = deaths_not_oracle(per[name], per[ORACLE_BLIND])
    return result


def deaths_not_oracle(episodes: Sequence[dict], oracle_episodes: Sequence[dict]) -> int:
    """Episodes a policy dies in although the oracle survives them (per-episode records, same order)."""
    return sum(bool(e["death"]) and not bool(o["death"]) for e, o in zip(episodes, oracle_episodes))


class _EvalJob:
    """What the Ray workers of one ``evaluate_controllers`` call need; each builds its env and controllers
    once and reuses them (every episode is reset with its own seed)."""

    def __init__(self, env_factory, controllers, episodes, max_steps, seed, record, rules_under_masks=True):
        self.env_factory, self.controllers, self.episodes = env_factory, dict(controllers), list(episodes)
        self.max_steps, self.seed, self.record = max_steps, seed, record
        self.rules_under_masks = rules_under_masks
        self.env, self.built = None, {}

    def __getstate__(self):
        return {**self.__dict__, "env": None, "built": {}}  # built where it runs

    def controller(self, name: str):
        if self.env is None:
            self.env = self.env_factory()
        if name not in self.built:
            self.built[name] = _as_controller(self.controllers[name], self.env)
        return self.built[name]


def _eval_unit(job: _EvalJob, unit: tuple[str, list[int]]) -> list[tuple[dict, list]]:
    """Episodes ``unit[1]`` of controller ``unit[0]``, in order: (run_episode's dict, the plans it made)."""
    name, idx = unit
    ctrl = job.controller(name)
    out = []
    for e in idx:
        n0 = len(getattr(ctrl, "plans", None) or [])
        ep = run_episode(job.env, ctrl, job.episodes[e], job.max_steps, seed=job.seed + e, record=job.record,
                         rules_under_masks=job.rules_under_masks)
        out.append((ep, list((getattr(ctrl, "plans", None) or [])[n0:])))
    return out


def _evaluate_parallel(env, env_factory, controllers: Mapping[str, Any], episodes: list[dict], max_steps: int,
                       seed: int, record: bool, progress: bool, workers: int,
                       rules_under_masks: bool = True) -> dict[str, tuple[list, list]]:
    """{name: (episode dicts, plan records)} of every controller, from Ray tasks (``agents.parallel``)."""
    from agents.parallel import map_episodes

    chunk = max(1, len(episodes) // (4 * workers))  # ~4 tasks per worker and controller: balance vs overhead
    units, first = [], []
    for name in controllers:
        probe = _as_controller(controllers[name], env)
        if name == RANDOM or hasattr(probe, "rng"):  # draws from one generator across episodes: keep them in order
            first.append((name, list(range(len(episodes)))))
        else:
            parts = [(name, list(range(i, min(i + chunk, len(episodes))))) for i in range(0, len(episodes), chunk)]
            (first if hasattr(probe, "plans") else units).extend(parts)  # slow planners first: a shorter tail
    todo = first + units
    job = _EvalJob(env_factory, controllers, episodes, max_steps, seed, record, rules_under_masks)
    done = map_episodes(_eval_unit, todo, workers, context=job, progress=progress, desc="evaluate", unit="task")
    ran: dict[str, tuple[list, list]] = {n: ([None] * len(episodes), []) for n in controllers}
    plans: dict[str, dict[int, list]] = {n: {} for n in controllers}
    for (name, idx), res in zip(todo, done):
        for e, (ep, new_plans) in zip(idx, res):
            ran[name][0][e] = ep
            plans[name][e] = new_plans
    for name in controllers:  # plan records in episode order, as the serial loop appends them
        ran[name][1].extend(p for e in sorted(plans[name]) for p in plans[name][e])
    return ran


def _sort_key(item):
    name, m = item
    s = m["score"]
    return (0 if math.isfinite(s) else 1, -(s if math.isfinite(s) else m["return"]))


def format_table(result: dict[str, Any]) -> str:
    """Markdown table of the policies, best oracle-normalised score first (with the split columns when a
    policy offloaded, and the deaths the foresight-free oracle avoids when it ran)."""
    metrics = METRICS + (SPLIT_METRICS if any(m.get("offload_frac", 0) > 0 for m in result["policies"].values())
                         else ()) + (BLIND_METRICS if ORACLE_BLIND in result["policies"] else ())
    head = "| policy | " + " | ".join(h for _, h, _ in metrics) + " |"
    lines = [head, "|---" * (len(metrics) + 1) + "|"]
    for name, m in sorted(result["policies"].items(), key=_sort_key):
        cells = []
        for key, _, fmt in metrics:
            v = m[key]
            cells.append("—" if isinstance(v, float) and not math.isfinite(v) else fmt.format(v))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


GROUPS = {"device_kind": "device kind", "objective": "objective"}


def group_scores(result: dict[str, Any], by: str) -> dict[str, dict[str, dict[str, float]]]:
    """Per group of episodes (``by``: ``device_kind`` or ``objective``), per policy: the episodes, mean return,
    the oracle-normalised score on the group's own random and oracle means, quality per token, energy,
    deaths and deaths the oracle avoids."""
    per = result["per_episode"]
    names = list(per)
    if not names:
        return {}
    keys = [ep.get(by, "?") for ep in per[names[0]]]
    out: dict[str, dict[str, dict[str, float]]] = {}
    for g in sorted(set(keys)):
        idx = [i for i, k in enumerate(keys) if k == g]
        rows = {}
        for n in names:
            eps = [per[n][i] for i in idx]
            tok = sum(e["tokens"] for e in eps)
            en = sum(e["energy_j"] for e in eps)
            rows[n] = {"episodes": len(eps), "return": float(np.mean([e["return"] for e in eps])),
                       "quality_per_token": sum(e["q_tokens"] for e in eps) / tok if tok > 0 else 0.0,
                       "energy_j": float(en), "deaths": int(sum(bool(e["death"]) for e in eps)),
                       "deaths_not_oracle": (int(sum(bool(e["death"]) and not bool(per[ORACLE][i]["death"])
                                                     for e, i in zip(eps, idx))) if ORACLE in per else math.nan)}
        for n in names:
            rows[n]["score"] = (normalised_score(rows[n]["return"], rows[RANDOM]["return"], rows[ORACLE]["return"])
                                if RANDOM in rows and ORACLE in rows else math.nan)
        out[str(g)] = rows
    return out


def format_groups(groups: dict[str, dict[str, dict[str, float]]], title: str) -> str:
    """Markdown: one row per policy, one score column per group (episodes in the header)."""
    gs = list(groups)
    pols = sorted(groups[gs[0]], key=lambda n: -np.nanmean([groups[g][n]["score"] for g in gs])
                  if any(math.isfinite(groups[g][n]["score"]) for g in gs) else math.inf)
    head = "| policy | " + " | ".join(f"{title} {g} ({groups[g][pols[0]]['episodes']} ep)" for g in gs) + " |"
    lines = [head, "|---" * (len(gs) + 1) + "|"]
    for n in pols:
        cells = []
        for g in gs:
            m = groups[g][n]
            sc = "—" if not math.isfinite(m["score"]) else f"{m['score']:.3f}"
            cells.append(sc + (f" ({m['deaths']} deaths)" if m["deaths"] else ""))
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_groups(all_groups: dict[str, dict], path: Path, policies: Sequence[str]) -> Path | None:
    """Bars: each policy's score per device kind and per objective (the groups with more than one member)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(by, g) for by, g in all_groups.items() if g]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels) + 1, 3.8), squeeze=False)
    for ax, (by, groups) in zip(axes[0], panels):
        gs = list(groups)
        w = 0.8 / max(1, len(policies))
        for j, p in enumerate(policies):
            vals = [groups[g][p]["score"] if p in groups[g] else np.nan for g in gs]
            ax.bar(np.arange(len(gs)) + j * w - 0.4 + w / 2, np.clip(vals, -0.5, None), width=w, label=p)
        ax.set_xticks(range(len(gs)), gs, fontsize=8)
        ax.set_ylabel("oracle-normalised score")
        ax.set_title(f"by {GROUPS.get(by, by)}")
        ax.axhline(1.0, color="k", lw=0.6, ls=":")
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def best_baseline(result: dict[str, Any]) -> str | None:
    """The baseline (not random, not the oracle, not RL) with the best score (or return)."""
    cands = [(n, m) for n, m in result["policies"].items() if n in BASELINES + SPLIT_BASELINES and n != RANDOM]
    return sorted(cands, key=_sort_key)[0][0] if cands else None


def plot_episodes(result: dict[str, Any], out_dir: Path, policies: Sequence[str], step_s: float,
                  t_max_c: Sequence[float], n: int = N_PLOT_TRACES, space=None) -> list[Path]:
    """PNG per episode (the ``n`` with the largest return spread among ``policies``): SoC,
    temperature, supply and the chosen configuration against time in hours, drawn as its knob values (one
    panel per knob of ``space``: depth, heads, bits, placement, split ...; the action index without one)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    policies = [p for p in policies if p in result.get("series", {})]
    if not policies:
        return []
    rets = np.array([[ep["return"] for ep in result["per_episode"][p]] for p in policies])
    order = np.argsort(-(rets.max(0) - rets.min(0)), kind="stable")[:n]
    paths = []
    for e in order:
        name = result["episodes"][e]["trace_name"]
        knobs = [k for k in space.knobs if len(k.values) > 1] if space is not None else []
        n_rows = 3 + max(1, len(knobs))
        fig, axes = plt.subplots(n_rows, 1, figsize=(9, 2.0 * n_rows + 0.5), sharex=True)
        for j, p in enumerate(policies):
            s = result["series"][p][e]
            hours = np.arange(1, len(s["soc"]) + 1) * step_s / 3600.0
            lab = f"{p} (R={result['per_episode'][p][e]['return']:.1f})"
            axes[0].plot(hours, s["soc"], label=lab)
            axes[1].plot(hours, s["temp_c"], label=p)
            axes[2].plot(hours, s["supply_w"], label=p)
            cfg = np.asarray(s["config"], dtype=int)
            if not knobs:
                axes[3].step(hours, cfg, where="pre", label=p)
            for ax, knob in zip(axes[3:], knobs):  # the knob's value index, nudged per policy to stay visible
                ki = space.knob_names.index(knob.name)
                pos = {v: i for i, v in enumerate(knob.values)}
                y = np.array([pos[space.configs[c][ki]] for c in cfg], dtype=float)
                ax.step(hours, y + 0.06 * (j - (len(policies) - 1) / 2), where="pre", label=p)
        axes[1].axhline(t_max_c[e], color="k", ls=":", lw=1, label="T_max")
        labels = ["SoC", "temperature (°C)", "supply (W)"] + ([k.name for k in knobs] or ["configuration"])
        for ax, lab in zip(axes, labels):
            ax.set_ylabel(lab)
            ax.grid(alpha=0.3)
        for ax, knob in zip(axes[3:], knobs):
            ax.set_yticks(range(len(knob.values)), [str(knob.fragment(v)) or str(v) for v in knob.values],
                          fontsize=7)
        axes[0].legend(fontsize=8, loc="best")
        axes[-1].set_xlabel("time (h)")
        fig.suptitle(f"{name}: " + " vs ".join(policies))
        fig.tight_layout()
        path = out_dir / f"episode_{e:02d}_{name}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def _names(episodes: Sequence[dict], n: int = 10) -> str:
    """The episodes' trace names for a report line: the first ``n``, then how many more (all in the JSON)."""
    names = [e["trace_name"] + (f" [{e['objective']}]" if "objective" in e else "") for e in episodes]
    return ", ".join(names[:n]) + (f", … and {len(names) - n} more (all in report.json)" if len(names) > n else "")


def write_report(result: dict[str, Any], out_dir: str | Path, meta: dict[str, Any],
                 plot_policies: Sequence[str] = (), step_s: float = 10.0,
                 t_max_c: Sequence[float] = (), space=None) -> dict[str, Path]:
    """report.md, report.csv, report.json (+ PNG plots when series were recorded), with the scores per device
    kind and per objective (``groups``: md tables, ``report_groups.csv``, ``groups.png``) when the episodes have
    more than one of either."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pol = result["policies"]
    keys = (["policy"] + [k for k, _, _ in METRICS + SPLIT_METRICS + BLIND_METRICS]
            + ["return_std", "steps", "decision_us_mean", "decision_us_max", "mask_steps"])
    with atomic_writer(out / "report.csv", "w") as fh:  # atomic: a crash never leaves half a report
        w = csv.writer(fh)
        w.writerow(keys)
        for name, m in sorted(pol.items(), key=_sort_key):
            w.writerow([name] + [m.get(k, "") for k in keys[1:]])
    groups = {by: group_scores(result, by) for by in GROUPS}
    groups = {by: g for by, g in groups.items() if len(g) > 1}
    if groups:
        with atomic_writer(out / "report_groups.csv", "w") as fh:
            w = csv.writer(fh)
            w.writerow(["by", "group", "policy", "episodes", "score", "return", "quality_per_token", "energy_j",
                        "deaths", "deaths_not_oracle"])
            for by, gs in groups.items():
                for g, rows in gs.items():
                    for name, m in rows.items():
                        w.writerow([by, g, name, m["episodes"], m["score"], m["return"], m["quality_per_token"],
                                    m["energy_j"], m["deaths"], m["deaths_not_oracle"]])
    clean = {"meta": meta, "episodes": result["episodes"], "max_steps": result["max_steps"],
             "groups": {by: {g: {n: {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                                     for k, v in m.items()} for n, m in rows.items()} for g, rows in gs.items()}
                        for by, gs in groups.items()},
             "policies": {n: {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                              for k, v in m.items()} for n, m in pol.items()},
             "per_episode": result["per_episode"]}
    atomic_write_text(out / "report.json", json.dumps(clean, indent=1, default=float))
    plots = plot_episodes(result, out, plot_policies, step_s, t_max_c, space=space) if plot_policies else []
    gpng = plot_groups(groups, out / "groups.png", [p for p in plot_policies if p in pol]) if groups else None
    md = [f"# Evaluation: {meta.get('title', 'policies vs baselines')}", ""]
    md += [f"* {k}: `{v}`" for k, v in meta.items() if k != "title" and v is not None]
    md += [f"* episodes: {len(result['episodes'])} "
           f"({_names(result['episodes'])}), ≤ {result['max_steps']} steps each",
           "", format_table(result), "",
           "score = (return − random) / (oracle − random) on the mean episode return; quality·tok/J = "
           "Σ quality × tokens / Σ energy; thermal / SLO / budget = steps in violation; deaths = "
           "episodes ended by battery death; decision = median µs per `predict` "
           "(definitions: docs/agents.md).", ""]
    held = {n: m["mask_steps"] for n, m in pol.items() if m.get("mask_steps")}
    if held:
        md += ["Steps where a hand-written rule chose a configuration the env's action mask forbids, stepped down to "
               "an allowed one (`runtime.rules.step_down`, as a device's shield would; `--rules-ignore-masks` runs "
               "them as written): " + ", ".join(f"{n} {k}" for n, k in sorted(held.items())) + ".", ""]
    for by, gs in groups.items():
        md += [f"## Score by {GROUPS[by]}", "", "Each group normalised by its own random and oracle means.", "",
               format_groups(gs, GROUPS[by]), ""]
    if gpng is not None:
        md += [f"![scores by group]({gpng.name})", ""]
    if plots:
        md += ["## Trajectories", ""] + [f"![{p.stem}]({p.name})" for p in plots] + [""]
    atomic_write_text(out / "report.md", "\n".join(md))
    extra = ({"groups_csv": out / "report_groups.csv"} if groups else {}) | ({"groups_png": gpng} if gpng else {})
    return {"md": out / "report.md", "csv": out / "report.csv", "json": out / "report.json", **extra,
            **{p.stem: p for p in plots}}


def _env_factory(args, cfg: dict | None):
    """The evaluation env: the run's profile, traces and ``env_params`` (restored), with --traces,
    --profile and --split applied, from row 0 of each trace."""
    from agents.run_io import env_from_config

    over: dict[str, Any] = {"split": args.split, "random_start": False}
    if args.battery_saver_min:  # EnvParams.saver_s for every controller (and the deployed policies' shield)
        over["saver_s"] = 60.0 * args.battery_saver_min
    if args.saver_to_deadline:  # EnvParams.saver_to_deadline: the saver's horizon reaches a deadline ahead
        over["saver_to_deadline"] = True
    if args.saver_floor is not None:  # EnvParams.saver_floor_frac: where the saver counts its charge from
        over["saver_floor_frac"] = args.saver_floor
    # EnvParams.floor_rule: the user's floor is held when scoring, whatever the run was trained with (off: only a cost)
    over["floor_rule"] = not getattr(args, "no_floor_rule", False)
    # EnvParams.budget_rule: so too the user's power budget (off: an overdraw is only a cost)
    over["budget_rule"] = not getattr(args, "no_budget_rule", False)
    if args.profile is not None:
        over["profile"] = args.profile
    if args.traces is not None:  # else the run's own set (None: the env's default set)
        over["traces"] = args.traces
    base = cfg if cfg is not None else {"env_kwargs": {}, "env_params": {}}
    kw = {**(base.get("env_kwargs") or {}), **over}
    return (lambda: env_from_config(base, **over)), kw  # noqa: E731 - evaluate_controllers builds it once


REPORT_FILES = ("report.md", "report.csv", "report.json")


def run_label(run: str | Path) -> str:
    """A run's short name in a table of several runs: its folder name, with the parent's for the
    sub-policies train.py keeps inside a run (``warm_start``, ``last``, ``interrupted``)."""
    p = Path(run).resolve()
    return f"{p.parent.name}/{p.name}" if p.name in ("warm_start", "last", "interrupted") else p.name


def _oracle_grid(text: str) -> tuple[int, int, int]:
    """argparse type of --oracle-grid: three integers >= 2, comma-separated."""
    parts = text.split(",")
    try:
        vals = tuple(int(x) for x in parts)
    except ValueError:
        vals = ()
    if len(vals) != 3 or min(vals) < 2:
        raise argparse.ArgumentTypeError(f"{text!r}: allowed: three integers >= 2, n_soc,n_temp,n_backlog "
                                         "(e.g. 101,25,7)")
    return vals  # type: ignore[return-value]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m agents.evaluate", description=__doc__.split("\n")[0])
    ap.add_argument("--run", action="append", default=None,
                    help="run folder from train.py (omit: baselines only); repeat to score several runs on the "
                         "same episodes (the first run's env parameters are used)")
    ap.add_argument("--policy", action="append", default=None,
                    help="exported policy file (deploy.py export) to score through the runtime manager, shielded and "
                         "unshielded (agents.deployed); repeatable; its profile and env parameters are used unless "
                         "a --run or --profile says otherwise")
    ap.add_argument("--policy-dwell", type=nonneg_int, action="append", default=None, metavar="N",
                    help="with --policy: the shielded manager's dwell rule, decisions between two policy-driven "
                         "switches (deploy.py run --min-dwell; default 3); repeat to score each value side by side "
                         "(0: the shield's masks and hard limits without the dwell rule)")
    ap.add_argument("--traces", default=None,
                    help="trace-set folder (default: the run's, else traces/data/default)")
    ap.add_argument("--split", default="test", choices=("train", "val", "test"))
    ap.add_argument("--out", default=None, help="output folder (default <run>/eval or ./eval)")
    ap.add_argument("--profile", default=None, help="profile JSON (default: the run's, else the reference)")
    ap.add_argument("--max-steps", type=positive_int, default=720, help="steps per episode at most (>= 1)")
    ap.add_argument("--policies", default=None,
                    help=f"comma-separated subset of {ALL_CONTROLLERS} (default: all; the split rules only "
                         "for a profile with split configurations)")
    ap.add_argument("--also", default="", metavar="NAMES",
                    help="comma-separated controllers scored besides --policies (or the default set), e.g. "
                         "oracle-blind: each policy's deaths that the foresight-free oracle avoids")
    ap.add_argument("--oracle-grid", type=_oracle_grid, default="101,25,7",
                    help="oracle grid: n_soc,n_temp,n_backlog (each >= 2)")
    ap.add_argument("--objectives", default=None,
                    help="comma-separated objectives (max-quality, min-energy, last-until): every trace is run once "
                         "under each, with the trace's budget, floor and deadline (traces.objectives), and the report "
                         "has a score per objective (default: the environment's own objective)")
    ap.add_argument("--seed", type=nonneg_int, default=0)
    ap.add_argument("--workers", type=positive_int, default=1,
                    help="Ray workers for the controller x episode grid (1: this process, no Ray; > 1 needs "
                         "pip install -e '.[cluster]'; a cluster via RAY_ADDRESS); the same results either way")
    ap.add_argument("--rules-ignore-masks", action="store_true",
                    help="run the hand-written rules as written, ignoring the env's action masks (reports before "
                         "2026-12-02); default: a rule's choice that the mask forbids is stepped down to an allowed "
                         "one, as a device's shield would, and counted (mask steps)")
    ap.add_argument("--battery-saver-min", type=nonneg_float, default=0.0, metavar="MIN",
                    help="score every controller under the battery saver (EnvParams.saver_s = 60 x MIN: only the "
                         "cheapest quarter of configurations while the device's own load and the smallest one would "
                         "bring the battery to its reserve within MIN minutes; deployed policies' shields too); "
                         "default 0: the run's or policy's own")
    ap.add_argument("--saver-to-deadline", action="store_true",
                    help="score every controller with the battery saver's horizon reaching the trace's deadline, "
                         "where it has one (EnvParams.saver_to_deadline: the user said when the session ends; "
                         "deployed policies' shields too); default: the run's or policy's own")
    ap.add_argument("--saver-floor", type=float_in(0.0, 1.0), default=None, metavar="FRAC",
                    help="score every controller with the battery saver counting from FRAC x the reserve "
                         "(EnvParams.saver_floor_frac: 1 holds the reserve for the saver's time, 0 only keeps the "
                         "device alive that long; deployed policies' shields too); default: the run's or policy's own")
    ap.add_argument("--no-floor-rule", action="store_true",
                    help="score min-energy episodes with the quality floor only a cost, not held by the masks "
                         "(EnvParams.floor_rule off, as every min-energy score before 2026-12-06; deployed policies' "
                         "shields too); default: the floor rule on, whatever the run was trained with")
    ap.add_argument("--no-budget-rule", action="store_true",
                    help="score episodes with a power budget with an overdraw only a cost, not held by the masks "
                         "(EnvParams.budget_rule off, as every score before 2026-12-06; deployed policies' shields "
                         "too); default: the budget rule on, whatever the run was trained with")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--force", action="store_true", help="replace an existing report in the output folder")
    args = ap.parse_args(argv)
    if args.traces is not None and not (Path(args.traces) / "manifest.json").is_file():
        ap.error(f"argument --traces: {args.traces} has no manifest.json; fix: point at a trace-set folder (e.g. "
                 "data/real from python -m traces.build_real)")
    names = [n.strip() for n in (args.policies or ",".join(ALL_CONTROLLERS)).split(",") if n.strip()]
    bad = [n for n in names if n not in ALL_CONTROLLERS]
    if bad or not names:
        ap.error(f"argument --policies: unknown policies {bad}; choose from {ALL_CONTROLLERS}" if bad else
                 f"argument --policies: empty; choose from {ALL_CONTROLLERS}")
    also = [n.strip() for n in args.also.split(",") if n.strip()]
    if [n for n in also if n not in ALL_CONTROLLERS]:
        ap.error(f"argument --also: unknown policies {[n for n in also if n not in ALL_CONTROLLERS]}; choose from "
                 f"{ALL_CONTROLLERS}")
    if args.workers > 1:
        from agents.parallel import INSTALL_HINT, ray_available

        if not ray_available():
            ap.error(f"argument --workers: {args.workers} needs Ray, which is not installed; fix: {INSTALL_HINT} "
                     "or --workers 1")
    objectives = None
    if args.objectives is not None:
        from runtime.dynamics import OBJECTIVES

        objectives = [o.strip() for o in args.objectives.split(",") if o.strip()]
        bad = [o for o in objectives if o not in OBJECTIVES or o == "mix"]
        if bad or not objectives:
            ap.error(f"argument --objectives: {bad or 'empty'}; choose from "
                     f"{[o for o in OBJECTIVES if o != 'mix']}")
    runs = list(args.run or [])
    out = Path(args.out) if args.out else (Path(runs[0]) / "eval" if runs else Path("eval"))
    if not args.force:  # checked before any episode runs
        existing = [str(out / f) for f in REPORT_FILES if (out / f).exists()]
        if existing:
            raise SystemExit(f"python -m agents.evaluate: {existing[0]}: the report already exists; choose "
                             "another --out or pass --force to replace it")

    cfg = None
    policies = list(args.policy or [])
    pfs = {}
    for p in policies:
        from runtime.policy import PolicyFileError, load_policy_file

        try:
            pfs[p] = load_policy_file(p)
        except PolicyFileError as exc:
            raise SystemExit(f"python -m agents.evaluate: --policy {p}: {exc}") from None
    if runs:
        from agents.run_io import load_config

        try:  # every run folder readable, before anything is built
            cfg = [load_config(r) for r in runs][0]
        except (OSError, ValueError) as exc:
            raise SystemExit(f"python -m agents.evaluate: --run {exc}") from None
    elif pfs:  # the first policy's own profile and environment parameters
        pf = next(iter(pfs.values()))
        prof = (pf.meta.get("profile") or {}).get("path")
        cfg = {"env_kwargs": {"profile": prof} if prof and Path(prof).exists() else {},
               "env_params": pf.params.to_dict()}
    env_factory, kw = _env_factory(args, cfg)
    if args.policies is None:
        names = default_controllers(env_factory().costs)
    names += [n for n in also if n not in names]
    n_soc, n_temp, n_backlog = args.oracle_grid
    controllers: dict[str, Any] = {}
    trained: dict[str, dict] = {}  # run -> the configurations and features its policy was trained on
    rl_name = None
    if runs:
        from agents.run_io import load_controller

        for run in runs:
            try:
                rl = load_controller(run)
            except (OSError, ValueError) as exc:  # no run folder, or one this code cannot rebuild: the message names it
                raise SystemExit(f"python -m agents.evaluate: --run {exc}") from None
            trained[run] = rl.trained_on
            name = rl.name if len(runs) == 1 else f"{rl.name}:{run_label(run)}"
            if name in controllers:
                raise SystemExit(f"python -m agents.evaluate: --run {run}: given twice")
            controllers[name] = rl
            rl_name = rl_name or name
    for p in policies:
        from agents.deployed import DeployedPolicy

        label = Path(p).name if len(policies) == 1 else str(p)
        dwells = args.policy_dwell or [3]
        for dwell in dwells:  # shielded, once per dwell rule asked for
            name = f"policy:{label}" + (f" dwell {dwell}" if dwells != [3] else "")
            controllers[name] = lambda env, p=p, name=name, d=dwell: DeployedPolicy(p, shield=True, name=name,
                                                                                   min_dwell_decisions=d)
            rl_name = rl_name or name
        name = f"policy:{label} unshielded"
        controllers[name] = lambda env, p=p, name=name: DeployedPolicy(p, shield=False, name=name)
    for n in names:
        extra = ({"n_soc": n_soc, "n_temp": n_temp, "n_backlog": n_backlog, "horizon_steps": args.max_steps}
                 if n in ORACLES else {"seed": args.seed} if n == RANDOM else {})  # the score's zero follows --seed
        controllers[n] = lambda env, n=n, extra=extra: make_controller(n, env, **extra)
    # a run or policy over other configurations or features than this evaluation's env: one line with the fix,
    # before any episode
    probe = env_factory() if trained or policies else None
    pu = getattr(probe, "unwrapped", probe)
    for run, t in trained.items():
        if t["configs"] != tuple(pu.space.names) or t["features"] != tuple(pu.layout.names):
            raise SystemExit(
                f"python -m agents.evaluate: --run {run}: trained on {len(t['configs'])} configurations and "
                f"{len(t['features'])} observation features, this evaluation's env has {len(pu.space.names)} and "
                f"{len(pu.layout.names)}; evaluate it with the profile and environment options it was trained with "
                f"(its profile: {t['profile']})")
    if policies:
        from agents.deployed import DeployedPolicy

        for p in policies:
            try:
                DeployedPolicy(p).bind(probe)
            except ValueError as exc:
                raise SystemExit(f"python -m agents.evaluate: --policy {exc}") from None
    episodes = None
    if objectives:
        n_tr = len(env_factory().traces)
        episodes = [{"trace": k, "start": 0, "objective": o} for o in objectives for k in range(n_tr)]
    result = evaluate_controllers(env_factory, controllers, episodes, max_steps=args.max_steps, seed=args.seed,
                                  record=True, progress=not args.no_progress, workers=args.workers,
                                  rules_under_masks=not args.rules_ignore_masks)
    env = env_factory()
    best = best_baseline(result)
    plot_policies = [p for p in (rl_name, best, ORACLE if ORACLE in names else None) if p]
    profile = kw.get("profile")
    traces = kw.get("traces") or "traces/data/default"
    meta = {"title": f"{', '.join(runs + policies) or 'baselines'} on {traces}:{args.split}",
            "run": runs[0] if len(runs) == 1 else (runs or None),
            "policy": policies or None, "traces": str(traces), "split": args.split,
            "profile": profile if isinstance(profile, (str, type(None))) else str(profile),
            "max_steps": args.max_steps, "seed": args.seed, "oracle_grid": [n_soc, n_temp, n_backlog],
            "rules_under_masks": not args.rules_ignore_masks, "best_baseline": best,
            "battery_saver_min": args.battery_saver_min, "saver_to_deadline": args.saver_to_deadline,
            "saver_floor": args.saver_floor}
    paths = write_report(result, out, meta, plot_policies, step_s=env.step_s,
                         t_max_c=[env.traces[e["trace"]].device.t_max_c for e in result["episodes"]], space=env.space)
    print(format_table(result))
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
