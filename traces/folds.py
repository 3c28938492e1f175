"""k-fold cross-validation sets by unit: every user, station and laptop is held out exactly once.

    python -m traces.folds data/real --k 4 --out data/real-cv [--force]

Writes ``OUT/fold-0 … OUT/fold-{k-1}``, each a complete trace set (CSVs + ``manifest.json``) with the
same traces as the source and its own splits:

* ``test``: the units of group ``i``;
* ``val``: the units of group ``(i + 1) mod k`` (best-policy selection during training);
* ``train``: every other unit.

Groups are balanced, deterministically (no seed: the rule is the grouping): within each stratum
(``meta.device_kind``: phone users, laptops, solar stations) units are taken largest first (most
traces; ties by name) and each goes to the group with the fewest traces of that stratum so far (ties:
fewest traces overall, then the lowest index). A stratum with fewer units than ``k`` leaves some
groups without it; those folds test no unit of that kind (the manifest says which).

k >= 3 (a group to test, one to select on, one or more to train on); the source is never modified, and an existing
fold folder is never overwritten without ``--force``. ``agents.crossval`` builds the folds itself.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import Any

SPLIT_OF_GROUP = ("test", "val")  # group i -> test, group i+1 -> val, the rest train


def unit_groups(entries, k: int) -> list[list[str]]:
    """``k`` lists of units, balanced by trace count within each stratum (module docstring)."""
    if k < 3:
        raise ValueError(f"k = {k}: needs k >= 3 groups (one to test, one to select on, at least one to train on)")
    n_traces = Counter(e.meta.unit for e in entries)
    stratum = {e.meta.unit: e.meta.device_kind for e in entries}
    units = sorted(n_traces)
    if len(units) < k:
        raise ValueError(f"{len(units)} units cannot make {k} folds; fix: --k {len(units)} or fewer")
    groups: list[list[str]] = [[] for _ in range(k)]
    total = [0] * k
    for s in sorted(set(stratum.values())):
        mine = sorted((u for u in units if stratum[u] == s), key=lambda u: (-n_traces[u], u))
        per = [0] * k
        for u in mine:
            g = min(range(k), key=lambda i: (per[i], total[i], i))
            groups[g].append(u)
            per[g] += n_traces[u]
            total[g] += n_traces[u]
    return groups


def fold_splits(groups: list[list[str]], i: int) -> dict[str, str]:
    """unit -> split of fold ``i``."""
    k = len(groups)
    out = {}
    for g, units in enumerate(groups):
        split = "test" if g == i else "val" if g == (i + 1) % k else "train"
        out.update(dict.fromkeys(units, split))
    return out


def make_folds(src: str | Path, k: int, out: str | Path, *, force: bool = False,
               progress: bool = True) -> list[Path]:
    """Writes the ``k`` fold sets of ``src`` under ``out``; returns their folders."""
    import dataclasses

    from tqdm import tqdm

    from traces.store import TraceSet

    ts = TraceSet.load(src)
    groups = unit_groups(ts.entries, k)
    kinds = {e.meta.unit: e.meta.device_kind for e in ts.entries}
    traces = {e.name: ts.get(e.name) for e in tqdm(ts.entries, desc="read", unit="trace", disable=not progress,
                                                       leave=False)}
    folders = []
    for i in range(k):
        split = fold_splits(groups, i)
        entries = [dataclasses.replace(e, split=split[e.meta.unit]) for e in ts.entries]
        held: dict[str, list[str]] = {}
        for u in groups[i]:
            held.setdefault(kinds[u], []).append(u)
        info: dict[str, Any] = {**ts.info, "cv": {
            "k": k, "fold": i, "source": str(src), "by": "python -m traces.folds",
            "test_units": groups[i], "val_units": groups[(i + 1) % k],
            "test_units_by_kind": held,
            "kinds_not_tested": sorted(set(kinds.values()) - set(held)),
        }}
        fold = TraceSet(entries, name=f"{ts.name}-cv{k}-fold{i}", description=ts.description, info=info,
                        traces=traces)
        folders.append(fold.save(Path(out) / f"fold-{i}", force=force))
        radio = Path(src) / "radio_energy_per_bit.json"  # the radio table travels with the set
        if radio.is_file():
            from runtime.safeio import atomic_write_text

            atomic_write_text(folders[-1] / radio.name, radio.read_text())
    return folders


def main(argv: list[str] | None = None) -> int:
    from model.cli import int_in

    ap = argparse.ArgumentParser(prog="python -m traces.folds", description=__doc__.split("\n")[0])
    ap.add_argument("src", type=Path, help="trace-set folder to read (e.g. data/real)")
    ap.add_argument("--k", type=int_in(3, 100), default=4, help="number of folds (>= 3)")
    ap.add_argument("--out", type=Path, required=True, help="folder for fold-0 ... fold-{k-1}")
    ap.add_argument("--force", action="store_true", help="replace existing fold sets")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    try:
        folders = make_folds(a.src, a.k, a.out, force=a.force, progress=not a.no_progress)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    from traces.store import TraceSet

    for f in folders:
        cv = TraceSet.load(f).info["cv"]
        print(f"{f}: test {', '.join(cv['test_units'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
