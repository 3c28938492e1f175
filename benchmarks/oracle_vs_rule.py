"""Where does the masked oracle beat a rule? One or more episodes, the two controllers side by side.

For each episode: both returns, the rule's mask steps, and every stretch of steps where the two run different
configurations (first step, length, the charge and temperature at its start, both configurations). The masked
oracle (``agents.oracle.OracleController(masked=True)``) is the best any controller held to the env's masks can do
with the trace's future known; a stretch where it departs from the rule and gains is a behaviour a causal policy
could learn only if the observation tells the two situations apart.

    python benchmarks/oracle_vs_rule.py --split test --trace deadline-00 \
        --out benchmarks/results/oracle_vs_schedutil_deadline00.md
    python benchmarks/oracle_vs_rule.py --split val --low-soc 12 \
        --out benchmarks/results/oracle_vs_schedutil_val_low_soc.md

``--low-soc N``: the N episodes of ``train.py --val-low-soc-episodes N`` (copies of train.py's default val
episodes, started nearly empty) instead of ``--trace``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gymnasium as gym  # noqa: E402
from tqdm import tqdm  # noqa: E402

import envs  # noqa: E402
from agents.evaluate import _oracle_grid, run_episode  # noqa: E402
from agents.registry import ALL_CONTROLLERS, make_controller  # noqa: E402


def stretches(a, b) -> list[tuple[int, int, int, int]]:
    """``(start, length, config_a, config_b)`` for every maximal run of steps where ``a`` and ``b`` both hold one
    configuration each and the two differ."""
    out, t, n = [], 0, min(len(a), len(b))
    while t < n:
        s = t
        while t + 1 < n and a[t + 1] == a[s] and b[t + 1] == b[s]:
            t += 1
        if a[s] != b[s]:
            out.append((s, t - s + 1, int(a[s]), int(b[s])))
        t += 1
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rule", default="schedutil", help=f"one of {', '.join(ALL_CONTROLLERS)} (default schedutil)")
    p.add_argument("--split", default="test")
    p.add_argument("--traces", default=None, help="trace set folder (default: the env's default set)")
    p.add_argument("--trace", default="deadline-00", help="trace name in the split (ignored with --low-soc)")
    p.add_argument("--low-soc", type=int, default=0, help="the N low-charge val episodes of train.py instead")
    p.add_argument("--max-steps", type=int, default=720)
    p.add_argument("--oracle-grid", default="101,25,7")
    p.add_argument("--min-steps", type=int, default=3, help="table rows for stretches this long or longer")
    p.add_argument("--out", default=None, help="write the table (.md) and the numbers (.json beside it)")
    a = p.parse_args(argv)
    if a.rule not in ALL_CONTROLLERS:
        p.error(f"--rule {a.rule!r}: choose one of {', '.join(ALL_CONTROLLERS)}")
    kw = {"traces": a.traces} if a.traces else {}
    env = gym.make(envs.ENV_ID, split=a.split, random_start=False, **kw)
    u = env.unwrapped
    names = [t.name for t in u.traces]
    if a.low_soc > 0:
        import train

        base = train.spread_val_episodes([t.n for t in u.traces], train.Args().eval_episodes, a.max_steps)
        episodes = train.low_soc_val_episodes(base, a.low_soc, u.params.reserve_soc)
    else:
        short = [n.removeprefix("gen-") for n in names]
        if a.trace.removeprefix("gen-") not in short:
            p.error(f"--trace {a.trace!r} is not in the {a.split} split; choose one of {', '.join(short)}")
        episodes = [{"trace": short.index(a.trace.removeprefix("gen-")), "start": 0}]
    grid = dict(zip(("n_soc", "n_temp", "n_backlog"), _oracle_grid(a.oracle_grid)))
    cfg = u.space.names
    rows, lines = [], []
    for ep in tqdm(episodes, desc="episodes", unit="ep"):
        t0 = time.time()
        rule = run_episode(env, make_controller(a.rule, env), ep, a.max_steps, record=True)
        orc = run_episode(env, make_controller("oracle-masked", env, **grid), ep, a.max_steps, record=True)
        rs, os_ = rule["series"], orc["series"]
        st = stretches(rs["config"], os_["config"])
        label = f"{names[ep['trace']]} from row {ep['start']}" + (f", start charge {ep['soc']}" if "soc" in ep else "")
        rows.append({"episode": label, **{k: ep[k] for k in ep}, f"{a.rule}_return": rule["return"],
                     "oracle_masked_return": orc["return"], "rule_mask_steps": rule["mask_steps"],
                     "rule_death": rule["death"], "oracle_death": orc["death"],
                     "stretches": [dict(start=s, steps=n, rule=cfg[x], oracle=cfg[y],
                                        soc_rule=float(rs["soc"][s]), soc_oracle=float(os_["soc"][s]),
                                        temp_rule_c=float(rs["temp_c"][s]), temp_oracle_c=float(os_["temp_c"][s]))
                                   for s, n, x, y in st], "seconds": time.time() - t0})
        lines += [f"### {label}", "",
                  f"{a.rule} {rule['return']:.2f} ({rule['mask_steps']} mask steps{', dies' if rule['death'] else ''}),"
                  f" masked oracle {orc['return']:.2f}{' (dies)' if orc['death'] else ''}; they differ on "
                  f"{sum(n for _, n, _, _ in st)} of {len(rs['config'])} steps", ""]
        if st:
            lines += ["| from step | steps | charge (rule / oracle) | temperature °C (rule / oracle) | "
                      f"{a.rule} | masked oracle |", "|---|---|---|---|---|---|"]
            short = [r for r in rows[-1]["stretches"] if r["steps"] < a.min_steps]
            for r in rows[-1]["stretches"]:
                if r["steps"] < a.min_steps:
                    continue
                lines.append(f"| {r['start']} | {r['steps']} | {r['soc_rule']:.3f} / {r['soc_oracle']:.3f} | "
                             f"{r['temp_rule_c']:.1f} / {r['temp_oracle_c']:.1f} | {r['rule']} | {r['oracle']} |")
            if short:
                lines.append(f"| … | {len(short)} stretches shorter than {a.min_steps} steps not shown "
                             f"({sum(r['steps'] for r in short)} steps; the .json has them) | | | | |")
            lines.append("")
    head = [f"# The masked oracle against {a.rule}, {a.split} split ({time.strftime('%Y-%m-%d')})", "",
            f"`python benchmarks/oracle_vs_rule.py {' '.join(argv if argv is not None else sys.argv[1:])}`; oracle "
            f"grid {a.oracle_grid}, {a.max_steps} steps at most.", ""]
    text = "\n".join(head + lines)
    print(text)
    if a.out:
        out = Path(a.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
        out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
        print(f"wrote {out} and {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
