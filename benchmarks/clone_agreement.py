"""Where does an imitated policy stop imitating? Agreement with its expert, by thermal headroom.

    python benchmarks/clone_agreement.py --run runs/<run>/warm_start [--run ...] [--expert schedutil]
                                         [--trace heat-00] [--split test] [--ambient-shift-c 0] [--pool-sample 1000]
                                         [--out benchmarks/results/clone_agreement.md]

For each run: the policy drives one episode of ``--trace`` (row 0, ``--max-steps`` steps, the run's own profile and
environment parameters, the default trace set unless ``--traces``); at every step the expert labels the state it is
in, held to the action mask as ``agents.evaluate`` and the DAgger collector hold it (``runtime.rules.step_down``).
Reported: the episode's return, the share of steps where the policy chose the expert's configuration, overall and
by the thermal headroom the policy observes (``temp_headroom_c``: below 0, 0-1 °C where the masks' trip-point rule
acts, 1 to ``THERMAL_CAP_C`` where schedutil's proportional thermal cap acts, above). With ``--pool-sample N`` and a
``demos.npz`` in the run folder (a warm start's pooled demonstrations), also the policy's accuracy on N of the
pool's states in each band: how well it fits the expert where it was trained, against the episode it never saw.
Also the expert's own return on the episode, and where the policy departs from the expert: how often toward a
configuration with more energy per token ("costlier") or less, and the most frequent (expert's → policy's) pairs.
``--ambient-shift-c`` raises the episode's ambient (the env's reset option, as ``train.py --val-hot-episodes``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from agents.baselines import THERMAL_CAP_C  # noqa: E402

BANDS = [(-np.inf, 0.0, "< 0 °C"), (0.0, 1.0, "0–1 °C"), (1.0, THERMAL_CAP_C, f"1–{THERMAL_CAP_C:g} °C"),
         (THERMAL_CAP_C, np.inf, f"≥ {THERMAL_CAP_C:g} °C")]


def _act(policy, obs, mask) -> int:
    return int(np.asarray(policy.predict(obs, action_masks=mask)[0]).reshape(-1)[0])


def episode_agreement(run: Path, expert_name: str, trace: str, split: str, traces: str | None,
                      max_steps: int, ambient_shift_c: float = 0.0) -> dict:
    """Drives ``trace`` with the run's policy; the expert labels every state (held to the masks)."""
    from agents.base import held_to_masks
    from agents.imitation import expert_label
    from agents.registry import make_controller
    from agents.run_io import env_from_config, load_config, load_controller

    env = env_from_config(load_config(run), split=split, random_start=False,
                          **({"traces": traces} if traces else {}))
    names = [t.name for t in env.traces]
    if trace not in names:
        raise SystemExit(f"--trace {trace}: not in the {split} split ({', '.join(names)})")
    policy, expert = load_controller(run), make_controller(expert_name, env)
    if hasattr(expert, "bind"):  # as the demonstrations' collector does (the oracle plans from the env)
        expert.bind(env)
    held = held_to_masks(expert)
    col = env.layout.index["temp_headroom_c"]
    options = {"trace": names.index(trace), "start": 0, "ambient_shift_c": float(ambient_shift_c)}
    obs, _ = env.reset(seed=0, options=options)
    head, agree, ret, pairs = [], [], 0.0, {}
    ept, cfg = env.costs.ept_j, env.space.names
    costlier = cheaper = 0
    for t in range(max_steps):
        mask = env.action_masks()
        label = expert_label(expert, obs, mask, env.costs, t == 0, held)
        a = _act(policy, obs, mask)
        head.append(float(obs[col]))
        agree.append(a == label)
        if a != label:
            costlier, cheaper = costlier + (ept[a] > ept[label]), cheaper + (ept[a] <= ept[label])
            key = f"{cfg[label]} → {cfg[a]}"
            pairs[key] = pairs.get(key, 0) + 1
        obs, r, term, trunc, _ = env.step(a)
        ret += float(r)
        if term or trunc:
            break
    obs, _ = env.reset(seed=0, options=options)  # the expert alone, held to the masks, on the same episode
    expert_ret = 0.0
    for t in range(max_steps):
        obs, r, term, trunc, _ = env.step(expert_label(expert, obs, env.action_masks(), env.costs, t == 0, held))
        expert_ret += float(r)
        if term or trunc:
            break
    head, agree = np.asarray(head), np.asarray(agree)
    bands = {}
    for lo, hi, name in BANDS:
        s = (head >= lo) & (head < hi)
        bands[name] = {"steps": int(s.sum()), "agreement": float(agree[s].mean()) if s.any() else None}
    top = dict(sorted(pairs.items(), key=lambda kv: -kv[1])[:3])
    return {"return": ret, "expert_return": expert_ret, "steps": int(agree.size), "agreement": float(agree.mean()),
            "bands": bands, "departures": {"costlier": int(costlier), "cheaper": int(cheaper), "top": top}}


def pool_accuracy(run: Path, n: int, seed: int = 0) -> dict | None:
    """The policy's accuracy on ``n`` sampled states per headroom band of the run's ``demos.npz``."""
    from agents.run_io import load_config, load_controller

    path = run / "demos.npz"
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as z:  # read each array once: NpzFile decompresses on every access
        obs, masks, labels = z["obs"], z["masks"], z["labels"]
    col = load_config(run)["obs_features"].index("temp_headroom_c")
    policy, rng, out = load_controller(run), np.random.default_rng(seed), {}
    for lo, hi, name in BANDS:
        in_band = (obs[:, col] >= lo) & (obs[:, col] < hi)
        idx = np.flatnonzero(in_band)
        if idx.size:
            idx = rng.choice(idx, min(n, idx.size), replace=False)
        ok = np.mean([_act(policy, obs[i], masks[i]) == labels[i] for i in idx]) if idx.size else None
        out[name] = {"share": float(in_band.mean()), "accuracy": None if ok is None else float(ok)}
    return out


def _pct(x) -> str:
    return "—" if x is None else f"{100 * x:.1f} %"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", action="append", required=True, help="a run folder (or its warm_start); repeatable")
    ap.add_argument("--expert", default="schedutil", help="agents.registry controller name (default schedutil)")
    ap.add_argument("--trace", default="heat-00", help="trace name in the split (default heat-00)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--traces", default=None, help="trace set folder (default: the run's)")
    ap.add_argument("--max-steps", type=int, default=720)
    ap.add_argument("--ambient-shift-c", type=float, default=0.0, help="raise the episode's ambient by this (deg C)")
    ap.add_argument("--pool-sample", type=int, default=0, help="states per band from the run's demos.npz (0: skip)")
    ap.add_argument("--out", default=None, help="write the table (.md) and the numbers (.json beside it)")
    a = ap.parse_args(argv)
    if a.max_steps < 1 or a.pool_sample < 0:
        ap.error("--max-steps must be >= 1 and --pool-sample >= 0")
    rows = {}
    for r in a.run:
        run = Path(r)
        if not (run / "config.json").is_file():
            ap.error(f"--run {r}: no config.json there; pass a run folder written by train.py (or its warm_start)")
        rows[r] = episode_agreement(run, a.expert, a.trace, a.split, a.traces, a.max_steps, a.ambient_shift_c)
        if a.pool_sample:
            rows[r]["pool"] = pool_accuracy(run, a.pool_sample)
    names = [b[2] for b in BANDS]
    shift = f", ambient +{a.ambient_shift_c:g} °C" if a.ambient_shift_c else ""
    lines = [f"# Agreement with {a.expert} on {a.trace} ({a.split} split, row 0, {a.max_steps} steps{shift})", "",
             "Share of steps where the policy chose the configuration the expert chose in the same state (held to "
             "the masks), by the thermal headroom observed; steps in brackets. The expert's own return on the "
             "episode; the policy's departures toward a costlier / cheaper configuration (energy per token), and "
             "the most frequent ones (expert's → policy's).", "",
             "| run | return | expert's | all | " + " | ".join(names) + " | costlier / cheaper | most frequent |",
             "|---" * (6 + len(names)) + "|"]
    for r, v in rows.items():
        cells = [f"{_pct(v['bands'][n]['agreement'])} ({v['bands'][n]['steps']})" for n in names]
        d = v["departures"]
        top = ", ".join(f"{k}: {c}" for k, c in d["top"].items()) or "—"
        lines.append(f"| `{r}` | {v['return']:.2f} | {v['expert_return']:.2f} | {_pct(v['agreement'])} | "
                     + " | ".join(cells) + f" | {d['costlier']} / {d['cheaper']} | {top} |")
    if any(v.get("pool") for v in rows.values()):
        lines += ["", f"Accuracy on up to {a.pool_sample} sampled states per band of the run's pooled "
                  "demonstrations (share of the pool in brackets):", "",
                  "| run | " + " | ".join(names) + " |", "|---" * (1 + len(names)) + "|"]
        for r, v in rows.items():
            if v.get("pool"):
                p = v["pool"]
                lines.append(f"| `{r}` | " + " | ".join(
                    f"{_pct(p[n]['accuracy'])} ({_pct(p[n]['share'])})" if n in p else "—" for n in names) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        from runtime.safeio import atomic_writer

        out = Path(a.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_writer(out, "w") as fh:
            fh.write(text)
        with atomic_writer(out.with_suffix(".json"), "w") as fh:
            json.dump({"expert": a.expert, "trace": a.trace, "split": a.split, "max_steps": a.max_steps,
                       "ambient_shift_c": a.ambient_shift_c, "runs": rows}, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
