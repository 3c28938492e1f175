"""When does offloading pay? The device energy of the best split configuration against the best local
one at the same quality, over demand × bandwidth, from the environment's own dynamics (modelled).

    python benchmarks/split_breakeven.py --profile profiles/reference-cpu+split.json

For every (demand, bandwidth) cell, one 10-s step of ``runtime.dynamics.Dynamics`` (the environment's
``step_core``) from a cool, charged phone, for every configuration; among the configurations that serve
the whole demand within the SLO with at least the quality of the best local configuration minus 0.01,
the lowest device energy is taken, local and split separately. The ratio split / local < 1 means
offloading saves the device energy. The same grid is repeated with the device's compute energy per
token scaled by ``--scale`` factors (a bigger model, or a less efficient processor) to show where the
break-even moves. Everything here is modelled from the profile and ``EnvParams.link``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from envs.tables import load_cost_tables  # noqa: E402
from runtime.dynamics import DEVICES, Dynamics, EnvParams, Inputs, plant_of  # noqa: E402
from runtime.safeio import atomic_write_bytes, atomic_write_text  # noqa: E402

DEMANDS = (1, 2, 5, 10, 20, 40)
BANDWIDTHS = (0.5, 2, 10, 50, 200)


def grid(costs, params: EnvParams, scale: float, q_slack: float = 0.01) -> np.ndarray:
    """(len(DEMANDS), len(BANDWIDTHS)) split/local device energy ratio (NaN: no split config qualifies)."""
    c = replace(costs, ept_j=costs.ept_j * scale)
    dyn = Dynamics(c, params)
    n = len(c)
    plant = plant_of(15 * 3600.0, DEVICES["phone"])
    off = c.offload > 0
    q_need = c.quality[~off].max() - q_slack
    out = np.full((len(DEMANDS), len(BANDWIDTHS)), np.nan)
    for i, d in enumerate(DEMANDS):
        for j, bw in enumerate(BANDWIDTHS):
            s = dyn.state(n, soc=0.8, temp_c=25.0, config=np.arange(n))
            x = Inputs(float(d), 0.0, 25.0, 0.0, np.nan, float(bw))
            _, r = dyn.step(s, np.arange(n), x, plant)
            ok = (r.served >= d * params.step_s * (1 - 1e-9)) & ~r.slo_bad.astype(bool) & (c.quality >= q_need)
            loc, spl = ok & ~off, ok & off
            if loc.any() and spl.any():
                out[i, j] = r.energy_j[spl].min() / r.energy_j[loc].min()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--profile", default="profiles/reference-cpu+split.json")
    p.add_argument("--out", default="benchmarks/results/split_breakeven")
    p.add_argument("--scale", default="1,3,10,30", help="compute energy per token multipliers")
    a = p.parse_args(argv)
    costs = load_cost_tables(a.profile)
    params = EnvParams()
    scales = [float(x) for x in a.scale.split(",")]
    res = {s: grid(costs, params, s) for s in scales}
    lines = [f"# Split versus local device energy at equal quality (modelled; {a.profile})", "",
             "Ratio of the lowest device energy of a split configuration to that of a local one that both serve "
             "the demand within the SLO at the best local quality − 0.01, one 10-s step, a phone at 25 °C "
             "(idle power included). < 1: offloading saves energy. Link: "
             f"RTT {params.link.rtt_ms:g} ms, {params.link.uplink_nj_per_bit:g} / "
             f"{params.link.downlink_nj_per_bit:g} nJ/bit up/down, connected {params.link.connected_w:g} W.", ""]
    for s, g in res.items():
        lines += [f"## Compute energy per token × {s:g}", "",
                  "| demand (tok/s) \\ bandwidth (Mbit/s) | " + " | ".join(f"{b:g}" for b in BANDWIDTHS) + " |",
                  "|---|" + "---|" * len(BANDWIDTHS)]
        for i, d in enumerate(DEMANDS):
            lines.append(f"| {d} | " + " | ".join("—" if np.isnan(v) else f"{v:.2f}" for v in g[i]) + " |")
        lines.append("")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out.with_suffix(".md"), "\n".join(lines))
    atomic_write_text(out.with_suffix(".json"), json.dumps(
        {"profile": a.profile, "demands_tps": DEMANDS, "bandwidths_mbps": BANDWIDTHS, "link": vars(params.link),
         "ratio_split_over_local": {str(s): [[None if np.isnan(v) else float(v) for v in row] for row in g]
                                    for s, g in res.items()}}, indent=1) + "\n")
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(scales), figsize=(3.6 * len(scales), 3.4), sharey=True)
    for ax, (s, g) in zip(np.atleast_1d(axes), res.items()):
        im = ax.imshow(np.log2(g), cmap="RdBu_r", vmin=-3, vmax=3, origin="lower", aspect="auto")
        ax.set_xticks(range(len(BANDWIDTHS)), [f"{b:g}" for b in BANDWIDTHS])
        ax.set_yticks(range(len(DEMANDS)), [str(d) for d in DEMANDS])
        ax.set_title(f"compute J/token × {s:g}")
        ax.set_xlabel("bandwidth (Mbit/s)")
        for i in range(len(DEMANDS)):
            for j in range(len(BANDWIDTHS)):
                if not np.isnan(g[i, j]):
                    ax.text(j, i, f"{g[i, j]:.2f}", ha="center", va="center", fontsize=7)
    np.atleast_1d(axes)[0].set_ylabel("demand (tok/s)")
    fig.colorbar(im, ax=axes, label="log2(split / local device energy)")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(out.with_suffix(".png"), buf.getvalue())
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
