"""Pools the demonstrations of several runs into one file that ``train.py --bc-demos`` reads.

    python benchmarks/pool_demos.py --out runs/pool/demos-f1.npz runs/cvobj/f1/brfr0/*/warm_start/demos.npz

Each input is a ``<run>/warm_start/demos.npz`` (``agents.imitation.Demonstrations``, read with
``allow_pickle=False``); all must be of one expert and one observation / action layout. Their episodes are
concatenated in the order given. Used for the pooled-demonstrations pilot in docs/objectives.md ("Min-energy told the
cheapest configuration"): a fold's three seeds' demonstrations, each seed then fitted to all of them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def pool(paths: list[str]):
    """The demonstrations of ``paths`` concatenated, and their expert; ValueError naming the file that differs."""
    import numpy as np

    from agents.imitation import Demonstrations

    try:
        with np.load(paths[0], allow_pickle=False) as z:
            expert = str(z["expert"])
    except (OSError, ValueError, KeyError):  # not a demonstrations archive: load() below says so, with the fix
        expert = None
    out = None
    for p in paths:
        d = Demonstrations.load(p, expert)  # the same expert as the first, or ValueError with the fix
        if out is not None and (d.obs.shape[1] != out.obs.shape[1] or d.masks.shape[1] != out.masks.shape[1]):
            raise ValueError(f"{p}: observations {d.obs.shape[1]}-d / {d.masks.shape[1]} actions, but {paths[0]} has "
                             f"{out.obs.shape[1]}-d / {out.masks.shape[1]}; pool demonstrations of one env only")
        out = d if out is None else out.extend(d)
    return out, expert


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("demos", nargs="+", help="<run>/warm_start/demos.npz files")
    ap.add_argument("--out", required=True, help="the pooled file (.npz)")
    ap.add_argument("--force", action="store_true", help="replace an existing --out")
    a = ap.parse_args(argv)
    for p in a.demos:
        if not Path(p).is_file():
            ap.error(f"{p}: no such file; pass <run>/warm_start/demos.npz files written by --bc-expert runs")
    if Path(a.out).exists() and not a.force:
        ap.error(f"--out {a.out} exists; pass --force to replace it, or another --out")
    try:
        d, expert = pool(a.demos)
    except ValueError as exc:
        ap.error(str(exc))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    d.save(a.out, expert)
    print(f"wrote {a.out}: {len(d)} transitions, {len(d.episode_ends)} episodes of {expert} from {len(a.demos)} files")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
