"""Does a learned policy copy its own last choice? Each seed's policy scored as it is and with the features that
echo its previous action pinned.

A policy that reads the configuration it ran last (``config_depth_frac``, ``config_heads_frac``,
``config_bits_frac``, and through them the last step's draw and latency) can learn "keep doing what you did": in an
expert's demonstrations the previous choice predicts the next one better than any state feature does, because the
expert changes configuration rarely. This is the copycat problem of behavioural cloning from observation histories
(Wen et al., "Fighting Copycat Agents in Behavioral Cloning from Observation Histories", NeurIPS 2020; de Haan et al.,
"Causal Confusion in Imitation Learning", NeurIPS 2019). Its symptom: once the policy lands on a small configuration
(say while there is no demand, where every choice earns the same), it stays there with a full battery.

For each fold of one or more cross-validation folders (``agents.crossval --out``), this runs every seed's policy on
the fold's held-out units twice: as it is, and with ``--pin``'s features held at the values they had in the
episode's first observation (the configuration every episode starts in, the largest), whatever the policy ran
since. Everything else, the env and the action masks included, is unchanged. A policy that does not read those
features (trained with them in ``--obs-drop``) scores the same both ways. Scores are normalised by the fold's own
random and oracle returns from its ``agents.evaluate`` report (``eval/fold-i/report.json``). Writes ``OUT.md``,
``OUT.json`` and ``OUT.png``::

    python benchmarks/copycat.py --cv runs/cv_v3_f12 --cv runs/cv_nc_f12 --out benchmarks/results/copycat
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from battery_saver import cv_folds, fold_reference, fold_runs, save_figure  # noqa: E402 - the same folds, runs, figures

#: the features that echo the previous action in the main recipe's observation (power_w is dropped there already)
PIN = "config_depth_frac,config_heads_frac,config_bits_frac,power_frac,latency_over_slo"


class Pinned:
    """``ctrl`` with the observation's ``idx`` features held at their values in the episode's first observation."""

    def __init__(self, ctrl, idx: np.ndarray):
        self.ctrl, self.idx, self.first = ctrl, idx, None
        self.uses_masks = bool(getattr(ctrl, "uses_masks", False))
        self.name = getattr(ctrl, "name", "policy") + "+pinned"

    def predict(self, observation, state=None, episode_start=None, deterministic=True, action_masks=None):
        obs = np.array(observation, dtype=np.float64)
        if self.first is None or (episode_start is not None and bool(np.asarray(episode_start).reshape(-1)[0])):
            self.first = obs[..., self.idx].copy()
        obs[..., self.idx] = self.first
        kw = {"action_masks": action_masks} if self.uses_masks else {}
        return self.ctrl.predict(obs, state=state, episode_start=episode_start, deterministic=deterministic, **kw)


def score_fold(cv: Path, fold: int, pin: list[str], max_steps: int) -> dict:
    """Every seed's policy on the fold's held-out units, as it is and pinned: scores, switches, per-episode returns."""
    from agents.evaluate import evaluate_controllers, normalised_score
    from agents.run_io import env_from_config, load_config, load_controller

    ref, rand, orc, _ = fold_reference(cv, fold)
    runs = fold_runs(cv, fold)
    cfg = load_config(runs[0])
    traces = str(cv / "folds" / f"fold-{fold}")

    def factory():
        return env_from_config(cfg, split="test", traces=traces, random_start=False)

    names = list(factory().layout.names)
    missing = [p for p in pin if p not in names]
    if missing:
        raise SystemExit(f"--pin: {cv} fold {fold}'s observation has no feature {', '.join(missing)}; it has "
                         f"{', '.join(names)}")
    idx = np.array([names.index(p) for p in pin])
    controllers = {}
    for r in runs:
        seed = r.parent.name.split("-")[-1]
        ctrl = load_controller(r)  # stateless between calls: the pinned twin can share it
        controllers[f"seed-{seed}"] = ctrl
        controllers[f"seed-{seed}+pinned"] = Pinned(ctrl, idx)
    res = evaluate_controllers(factory, controllers, max_steps=max_steps, progress=False)
    if [e["trace_name"] for e in res["episodes"]] != [e["trace_name"] for e in ref["episodes"]]:
        raise SystemExit(f"{cv}/eval/fold-{fold}/report.json: its episodes are not the fold's held-out traces")
    oracle = [e["return"] for e in ref["per_episode"]["oracle"]]
    out = {}
    for name, eps in res["per_episode"].items():
        rets = [float(e["return"]) for e in eps]
        out[name] = {"score": normalised_score(float(np.mean(rets)), rand, orc), "returns": rets,
                     "switches": int(sum(e["switches"] for e in eps)), "deaths": int(sum(e["death"] for e in eps))}
    for name in [n for n in out if not n.endswith("+pinned")]:
        a, b = np.array(out[name]["returns"]), np.array(out[name + "+pinned"]["returns"])
        # episodes where pinning moves the return by more than 5 % of the oracle's: where the echo decided
        out[name]["episodes_pinned_better"] = int(np.sum(b - a > 0.05 * np.abs(oracle)))
        out[name]["episodes_pinned_worse"] = int(np.sum(a - b > 0.05 * np.abs(oracle)))
    return {"episodes": [e["trace_name"] for e in res["episodes"]], "oracle": oracle, "policies": out}


def plot(results: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = [(cv, f) for cv, folds in results.items() for f in folds]
    fig, axes = plt.subplots(1, len(cols), figsize=(4.2 * len(cols), 3.8), squeeze=False)
    for ax, (cv, f) in zip(axes[0], cols):
        pol = results[cv][f]["policies"]
        seeds = [n for n in pol if not n.endswith("+pinned")]
        x = np.arange(len(seeds))
        ax.bar(x - 0.2, [pol[s]["score"] for s in seeds], 0.4, label="as trained")
        ax.bar(x + 0.2, [pol[s + "+pinned"]["score"] for s in seeds], 0.4, label="previous choice pinned")
        ax.set_xticks(x, seeds)
        ax.set_ylim(0.7, 1.02)
        ax.set_title(f"{cv}, fold {f}", fontsize=9)
        ax.set_ylabel("oracle-normalised score")
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=8, loc="lower left")
    save_figure(fig, title, path)


def main(argv=None) -> int:
    from model.cli import positive_int
    from runtime.safeio import atomic_write_text

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cv", action="append", required=True, help="agents.crossval --out folder (repeatable)")
    ap.add_argument("--folds", default=None,
                    help="comma-separated folds (default: every fold the first folder trained)")
    ap.add_argument("--pin", default=PIN, help=f"comma-separated features to pin (default {PIN})")
    ap.add_argument("--max-steps", type=positive_int, default=720)
    ap.add_argument("--out", required=True, help="output path without suffix (OUT.md, .json, .png)")
    ap.add_argument("--force", action="store_true", help="replace an existing OUT.md / .json / .png")
    args = ap.parse_args(argv)
    cvs = [Path(c) for c in args.cv]
    pin = [p.strip() for p in args.pin.split(",") if p.strip()]
    if not pin:
        ap.error("--pin: name at least one observation feature")
    trained = sorted(int(p.name.split("-")[1]) for p in (cvs[0] / "runs").glob("fold-*"))
    folds = cv_folds(ap, cvs, args.folds or ",".join(map(str, trained)) or None)
    out = Path(args.out)
    existing = [str(out.with_suffix(x)) for x in (".md", ".json", ".png") if out.with_suffix(x).exists()]
    if existing and not args.force:
        raise SystemExit(f"{existing[0]}: already exists; choose another --out or pass --force to replace it")
    from tqdm import tqdm

    t0 = time.time()
    results: dict = {}
    with tqdm(total=len(cvs) * len(folds), desc="folder x fold", unit="fold", file=sys.stderr) as bar:
        for cv in cvs:
            results[cv.name] = {}
            for f in folds:
                bar.set_postfix_str(f"{cv.name} fold {f}")
                results[cv.name][f] = score_fold(cv, f, pin, args.max_steps)
                bar.update(1)
    cmd = "python benchmarks/copycat.py " + " ".join(argv if argv is not None else sys.argv[1:])
    title = "Scores as trained and with the previous choice pinned"
    lines = [f"# {title} ({time.strftime('%Y-%m-%d')})", "",
             f"Pinned features: `{', '.join(pin)}`, held at their values in each episode's first observation. "
             "Scores normalised by each fold's random and oracle returns (its `eval/fold-i/report.json`); "
             "\"episodes moved\" counts held-out episodes where pinning raises (lowers) the return by more than 5 % "
             "of the oracle's.", "",
             "| folder | fold | seed | as trained | pinned | switches as trained / pinned | episodes moved up / down |",
             "|---|---|---|---|---|---|---|"]
    for cv, fr in results.items():
        for f, r in fr.items():
            pol = r["policies"]
            for s in [n for n in pol if not n.endswith("+pinned")]:
                p, q = pol[s], pol[s + "+pinned"]
                lines.append(f"| {cv} | {f} | {s} | {p['score']:.3f} | {q['score']:.3f} | {p['switches']} / "
                             f"{q['switches']} | {p['episodes_pinned_better']} / {p['episodes_pinned_worse']} |")
    for cv, fr in results.items():
        a = [v["score"] for r in fr.values() for k, v in r["policies"].items() if not k.endswith("+pinned")]
        b = [v["score"] for r in fr.values() for k, v in r["policies"].items() if k.endswith("+pinned")]
        lines.append("")
        lines.append(f"* {cv}: mean {np.mean(a):.3f} as trained, {np.mean(b):.3f} pinned; lowest seed "
                     f"{min(a):.3f} as trained, {min(b):.3f} pinned")
    lines += ["", f"![scores as trained and pinned]({out.name}.png)", "", f"`{cmd}` ({time.time() - t0:.0f} s)", ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out.with_suffix(".md"), "\n".join(lines))
    atomic_write_text(out.with_suffix(".json"), json.dumps({"command": cmd, "pin": pin, "results": {
        cv: {str(f): r for f, r in fr.items()} for cv, fr in results.items()}}, indent=1))
    plot(results, out.with_suffix(".png"), title)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
