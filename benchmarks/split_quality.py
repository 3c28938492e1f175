"""Split-computing quality and wire cost per split point and activation codec.

    python benchmarks/split_quality.py [--windows 32] [--mc-items 100] [--bits 32 8 4]
        [--budgets 69 100 132 141] [--threads 2] [--out-dir benchmarks/results] [--force] [--quick]

For the full-depth configuration L6-H100 with the edge's weights at ``--bits`` (32, 8, 4) and the
server at fp32 (``server_bits`` 32), at every split point k = 0..6 (k = 0: the server runs
everything, the edge sends 1-byte token ids; k = 6: everything local, nothing sent), and every
codec of ``model.split.CODECS`` (TS + TAB-Q at each of ``--budgets`` bytes per token):

* held-out loss (``model.evaluate.heldout_loss``, ``--windows`` windows of 256 bytes of the test
  books) and multiple-choice accuracy (``model.evaluate.mc_accuracy`` on the first ``--mc-items``
  of the fixed item set), through the real encoder and decoder (``model.split.SplitView``); also
  each as a delta against the local run of the same configuration on the same windows and items
  (paired: less noisy than the absolute MC figure of a 100-item set);
* bytes per token on the wire as measured during the evaluation (payload incl. tabq's 4-byte header
  per message), and the bytes of a one-token (decode-step) message;
* encode and decode µs per token, median, for one-token messages (a decode step: ``encode_us`` /
  ``decode_us``) and for 256-token messages (a prefill: ``*_prefill``), on boundary activations of
  held-out text at that split point.

Grid (chosen to fit ~15 minutes of 2 CPU cores): at bits 32 every codec and budget; at bits 8
and 4 fp16, int8, int4 and tabq at the two budgets around int4's bytes (``--budgets`` 132 and 141),
fp32 left out there (fp16 is within 1e-7 relative of it). k = 0 does not depend on the edge's bits
(one evaluation, recorded under every bits); k = depth does not depend on the codec (one evaluation
per bits, recorded under every codec). Edge activations are computed once per (bits, k) and
shared by the codecs (identical inputs, identical edge).

Before the grid, a threshold sweep measures TS's outlier threshold τ (held-out loss, bits 32,
k ∈ {1, 3, 5}, budgets 100 and 141, τ ∈ {3, 4, 5, 6, 8, ∞}) and the 2-/4-bit clipping ranges (k = 3,
budget 100): the defaults in model/split.py were chosen from it.

Writes ``split_quality.json`` (one record per (depth, heads, bits, k, mode, budget); read it with
``model.split.load_split_table``), ``.csv``, ``.md`` and ``.png`` (quality vs bytes per token, TS + TAB-Q
against uniform quantisation) into ``--out-dir``, with the date and the host.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import model as M  # noqa: E402
from model import split as S  # noqa: E402
from model.cli import positive_int  # noqa: E402
from model.data import load_corpus  # noqa: E402
from model.evaluate import build_mc_items, heldout_loss, mc_accuracy  # noqa: E402
from model.profile_schema import _cpu_model  # noqa: E402 - one reader of the CPU model
from runtime.safeio import atomic_write_bytes, atomic_write_text, refuse_existing  # noqa: E402

DATE = "2026-12-01"
NAMES = ("json", "csv", "md", "png")
TAUS = (3.0, 4.0, 5.0, 6.0, 8.0, math.inf)
CLIPS = ((1.0, 3.0), (1.5, 3.0), (2.0, 3.0), (math.inf, 3.0), (1.5, 2.5), (1.5, math.inf))
SMALL_BITS_BUDGETS = (132.0, 141.0)  # tabq budgets measured at edge bits 8 and 4


class SharedEdgeView(S.SplitView):
    """``SplitView`` that reuses the edge activations of identical inputs (``memo`` shared by the
    views of one (cfg, k)) and can encode TAB-Q with other clipping ranges (the sweep)."""

    def __init__(self, *args, memo: dict, clip: dict | None = None, **kw):
        super().__init__(*args, **kw)
        self.memo, self.clip = memo, clip

    def _edge(self, idx: torch.Tensor) -> torch.Tensor:
        key = (tuple(idx.shape), idx.numpy().tobytes())
        if key not in self.memo:
            self.memo[key] = super()._edge(idx)
        return self.memo[key]

    def _encode(self, x: np.ndarray) -> bytes:
        if self.clip is None:
            return super()._encode(x)
        tau = S.TABQ_TAU if self.tau is None else self.tau
        return S._tabq_encode(x, self.budget, tau, self.clip)


def boundary(m, cfg, k: int, data: np.ndarray) -> np.ndarray:
    """Boundary activations (256, d) of one held-out window at split ``k``."""
    idx = torch.from_numpy(data[1000:1000 + m.config.block_size].astype(np.int64))[None]
    return S.SplitView(m, cfg, k)._edge(idx)[0].numpy().copy()


def codec_timing(x: np.ndarray, mode: str, budget: float | None, repeats: int) -> dict:
    """Median µs per token of encode/decode for one-token messages and for one 256-token message."""
    kw = {"budget_bytes_per_token": budget}
    t, d = x.shape
    enc1, dec1, size1 = [], [], []
    for i in range(repeats):
        row = x[i % t:i % t + 1]
        t0 = time.perf_counter()
        p = S.encode(row, mode, **kw)
        t1 = time.perf_counter()
        S.decode(p, mode, 1, d)
        dec1.append(time.perf_counter() - t1)
        enc1.append(t1 - t0)
        size1.append(len(p))
    encp, decp = [], []
    for _ in range(max(3, repeats // 40)):
        t0 = time.perf_counter()
        p = S.encode(x, mode, **kw)
        t1 = time.perf_counter()
        S.decode(p, mode, t, d)
        decp.append(time.perf_counter() - t1)
        encp.append(t1 - t0)
    med = statistics.median
    return {"encode_us": 1e6 * med(enc1), "decode_us": 1e6 * med(dec1),
            "encode_us_prefill": 1e6 * med(encp) / t, "decode_us_prefill": 1e6 * med(decp) / t,
            "bytes_per_step": float(np.mean(size1))}


def evaluate_view(view, test: np.ndarray, windows: int, items) -> dict:
    t0 = time.perf_counter()
    loss = heldout_loss(view, test, windows)
    mc = mc_accuracy(view, items) if items else {"pmi": float("nan"), "norm": float("nan")}
    st = view.stats
    out = {"val_loss": loss, "mc_accuracy": mc["pmi"], "mc_accuracy_norm": mc["norm"],
           "bytes_per_token": st.bytes_per_token, "eval_s": time.perf_counter() - t0}
    if view.mode == "tabq" and 0 < view.k < view.cfg.depth:
        n = sum(st.tabq_bits.values())
        out["tabq_bits_frac"] = {str(b): c / n for b, c in st.tabq_bits.items()}
    return out


def sweep(m, cfg, test, windows: int, progress: bool) -> dict:
    """Threshold (τ) and clipping sweep of TS + TAB-Q: held-out loss, bits 32."""
    rows, memos = [], {}
    jobs = [("tau", k, b, tau, None) for k in (1, 3, 5) for b in (100.0, 141.0) for tau in TAUS]
    jobs += [("clip", 3, 100.0, S.TABQ_TAU, c) for c in CLIPS]
    for kind, k, budget, tau, clip in tqdm(jobs, desc="sweep", unit="run", disable=not progress):
        memo = memos.setdefault(k, {})
        clip_d = None if clip is None else {2: clip[0], 4: clip[1], 8: math.inf}
        v = SharedEdgeView(m, cfg, k, "tabq", budget_bytes_per_token=budget, threshold_sigmas=tau, memo=memo,
                           clip=clip_d)
        rows.append({"kind": kind, "k": k, "budget": budget, "tau": None if math.isinf(tau) else tau,
                     "clip2": None if clip is None or math.isinf(clip[0]) else clip[0],
                     "clip4": None if clip is None or math.isinf(clip[1]) else clip[1],
                     "val_loss": heldout_loss(v, test, windows), "bytes_per_token": v.stats.bytes_per_token})
    return {"windows": windows, "bits": cfg.bits, "default_tau": S.TABQ_TAU,
            "default_clip": {str(b): (None if math.isinf(c) else c) for b, c in S.TABQ_CLIP.items()}, "runs": rows}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--windows", type=positive_int, default=32, help="held-out loss windows of 256 bytes")
    p.add_argument("--mc-items", type=positive_int, default=100, help="multiple-choice items (of the fixed set)")
    p.add_argument("--bits", type=int, nargs="+", default=[32, 8, 4], help="edge weight precisions")
    p.add_argument("--budgets", type=float, nargs="+", default=[69.0, 100.0, 132.0, 141.0],
                   help="TS + TAB-Q budgets in bytes per token (at bits 32; 132 and 141 at the others)")
    p.add_argument("--timing-repeats", type=positive_int, default=200, help="one-token messages timed per codec")
    p.add_argument("--threads", type=positive_int, default=2)
    p.add_argument("--out-dir", default="benchmarks/results")
    p.add_argument("--force", action="store_true", help="replace existing result files")
    p.add_argument("--quick", action="store_true", help="smoke run: 2 windows, 8 items, k in {0, 2, 6}, no sweep")
    p.add_argument("--no-sweep", action="store_true", help="skip the threshold/clipping sweep")
    a = p.parse_args(argv)
    m = M.load_default()
    bad = [b for b in a.bits if b not in m.config.bits]
    if bad:
        p.error(f"argument --bits: {bad} not in {list(m.config.bits)}")
    if any(not math.isfinite(b) or b < S.min_tabq_budget(m.config.n_embd) for b in a.budgets):
        p.error(f"argument --budgets: each must be >= {S.min_tabq_budget(m.config.n_embd):g} bytes per token")
    out_dir = Path(a.out_dir)
    paths = {n: out_dir / f"split_quality.{n}" for n in NAMES}
    try:
        for path in paths.values():
            refuse_existing(path, a.force, "result file")
    except FileExistsError as exc:
        raise SystemExit(f"benchmarks/split_quality.py: {exc}") from None
    torch.set_num_threads(a.threads)
    if a.quick:
        a.windows, a.mc_items, a.timing_repeats, a.no_sweep = 2, 8, 20, True
    corpus = load_corpus()
    test = corpus.test
    items = build_mc_items(corpus.test_verses, 1000)[:a.mc_items]
    d = m.config.n_embd
    full = m.full_config()
    depth = full.depth
    ks = [0, 2, depth] if a.quick else list(range(depth + 1))
    load_start = os.getloadavg()[0]
    t_start = time.perf_counter()

    sweep_res = None if a.no_sweep else sweep(m, full, test, a.windows, True)

    def modes_for(bits: int) -> list[tuple[str, float | None]]:
        if bits == 32:
            return [(c, None) for c in S.CODECS if c != "tabq"] + [("tabq", b) for b in a.budgets]
        return [("fp16", None), ("int8", None), ("int4", None)] + [("tabq", b) for b in SMALL_BITS_BUDGETS]

    jobs = [(bits, k) for bits in a.bits for k in ks]
    n_evals = len(a.bits) + (0 in ks) + sum(len(modes_for(bits)) for bits, k in jobs if 0 < k < depth)
    records, server_only, local = [], None, {}
    bar = tqdm(total=n_evals, desc="split quality", unit="eval")
    for bits in a.bits:
        cfg = m.validate((depth, 1.0, bits))
        local[bits] = evaluate_view(S.SplitView(m, cfg, depth), test, a.windows, items)  # the reference
        bar.update(1)
        for k in ks:
            if k == 0 and server_only is None:
                server_only = evaluate_view(S.SplitView(m, cfg, 0), test, a.windows, items)
                bar.update(1)
            memo: dict = {}
            x = boundary(m, cfg, k, test) if 0 < k < depth else None
            for mode, budget in modes_for(bits):
                if k in (0, depth):
                    res = dict(server_only if k == 0 else local[bits])
                    res.update(encode_us=0.0, decode_us=0.0, encode_us_prefill=0.0, decode_us_prefill=0.0,
                               bytes_per_step=float(res["bytes_per_token"]),
                               wire="token_ids" if k == 0 else "none")
                else:
                    view = SharedEdgeView(m, cfg, k, mode, budget_bytes_per_token=budget, memo=memo)
                    res = evaluate_view(view, test, a.windows, items)
                    res.update(codec_timing(x, mode, budget, a.timing_repeats), wire="activations")
                    bar.update(1)
                    bar.set_postfix_str(f"bits {bits} k {k} {mode}{'' if budget is None else int(budget)} "
                                        f"loss {res['val_loss']:.4f}")
                rec = {"depth": depth, "heads": 1.0, "bits": bits, "name": m.name(cfg), "k": k, "mode": mode,
                       "budget": budget if mode == "tabq" else None, "server_bits": 32, **res,
                       "val_loss_delta": res["val_loss"] - local[bits]["val_loss"],
                       "mc_accuracy_delta": res["mc_accuracy"] - local[bits]["mc_accuracy"]}
                records.append(rec)
    bar.close()
    result = {
        "schema": "wattwise.split_quality", "schema_version": 1, "date": DATE,
        "host": {"platform": platform.platform(), "cpu": _cpu_model(), "cores": os.cpu_count(),
                 "python": platform.python_version(), "torch": torch.__version__, "threads": a.threads,
                 "load_avg_1min": {"start": load_start, "end": os.getloadavg()[0]},
                 "note": "shared 2-core host: other jobs ran during the measurement (load average above); "
                         "the codec timings carry that noise"},
        "checkpoint_sha256": getattr(m, "checkpoint_sha256", None),
        "method": {"configuration": f"L{depth}-H100 at edge bits {a.bits}", "server_bits": 32,
                   "split_points": ks, "loss_windows": a.windows, "window_bytes": m.config.block_size,
                   "mc_items": len(items), "mc_item_set": "model.evaluate.build_mc_items(test_verses, 1000)[:mc_items]",
                   "budgets_bits32": a.budgets, "budgets_other_bits": list(SMALL_BITS_BUDGETS),
                   "default_budget": S.default_budget(d), "min_tabq_budget": S.min_tabq_budget(d),
                   "tabq_tau": S.TABQ_TAU, "tabq_clip": {str(b): (None if math.isinf(c) else c)
                                                          for b, c in S.TABQ_CLIP.items()},
                   "timing_repeats": a.timing_repeats,
                   "bytes_per_token": "measured over the evaluation's messages (whole sequences; tabq incl. its "
                                      "4-byte header per message); bytes_per_step: a one-token message",
                   "encode_us/decode_us": "median µs of a one-token message (decode step); *_prefill: median µs "
                                          "per token of a 256-token message",
                   "deltas": "val_loss_delta / mc_accuracy_delta: against the local run (k = depth) of the same "
                             "edge bits on the same windows and items",
                   "k0": "k = 0 sends token ids (1 byte each) and runs every block at server_bits: one evaluation, "
                         "recorded under every codec and bits",
                   "k_depth": "k = depth is local (nothing sent): one evaluation per bits, recorded under every codec"},
        "wall_s": time.perf_counter() - t_start,
        "sweep": sweep_res,
        "records": records,
    }
    atomic_write_text(paths["json"], json.dumps(result, indent=1))
    atomic_write_text(paths["csv"], _csv(records))
    atomic_write_text(paths["md"], _markdown(result))
    atomic_write_bytes(paths["png"], _plot(result))
    print(f"wrote {', '.join(str(p) for p in paths.values())} ({len(records)} records, {result['wall_s']:.0f} s)")


CSV_FIELDS = ("depth", "heads", "bits", "k", "mode", "budget", "server_bits", "wire", "bytes_per_token",
              "bytes_per_step", "val_loss", "val_loss_delta", "mc_accuracy", "mc_accuracy_delta", "mc_accuracy_norm",
              "encode_us", "decode_us", "encode_us_prefill", "decode_us_prefill", "eval_s")


def _csv(records: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in records:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in CSV_FIELDS})
    return buf.getvalue()


def _label(r: dict) -> str:
    return r["mode"] if r["budget"] is None else f"tabq@{r['budget']:g}"


def _markdown(res: dict) -> str:
    meth, host = res["method"], res["host"]
    recs = res["records"]
    out = [f"# Split computing: quality and wire cost ({res['date']})", "",
           f"Host: {host['cpu']}, {host['cores']} cores, {host['platform']}, torch {host['torch']}, "
           f"{host['threads']} threads (load average {host['load_avg_1min']['start']:.1f} → "
           f"{host['load_avg_1min']['end']:.1f}: a shared host). "
           f"Held-out loss over {meth['loss_windows']} windows of {meth['window_bytes']} bytes; MC accuracy over "
           f"{meth['mc_items']} items; server at fp32; TS τ = {meth['tabq_tau']:g}, TAB-Q budgets in bytes per "
           f"token (int4 = 132, int8 = 260, fp16 = 512 at d = 256). Δ: against local at the same edge bits.", ""]
    for bits in sorted({r["bits"] for r in recs}, reverse=True):
        rows = [r for r in recs if r["bits"] == bits]
        labels = list(dict.fromkeys(_label(r) for r in rows))
        ks = sorted({r["k"] for r in rows})
        tables = ((f"Edge bits {bits}: val loss (Δ) by split point k",
                   lambda r: f"{r['val_loss']:.4f} ({r['val_loss_delta']:+.4f})"),
                  (f"Edge bits {bits}: MC accuracy (Δ) and bytes per token",
                   lambda r: f"{r['mc_accuracy']:.2f} ({r['mc_accuracy_delta']:+.2f}), {r['bytes_per_token']:.0f} B"))
        for title, cell in tables:
            out += [f"## {title}", "", "| k | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
            for k in ks:
                cells = [cell(next(r for r in rows if r["k"] == k and _label(r) == lab)) for lab in labels]
                out.append(f"| {k} | " + " | ".join(cells) + " |")
            out.append("")
    mid = [r for r in recs if r["bits"] == max(r2["bits"] for r2 in recs) and 0 < r["k"] < r["depth"]]
    if mid:
        out += ["## Codec cost (median µs per token; one-token message / 256-token message), all split points", "",
                "| codec | bytes/token | bytes/step | encode µs | decode µs | encode µs (prefill) "
                "| decode µs (prefill) |", "|---|---|---|---|---|---|---|"]
        fields = ("bytes_per_token", "bytes_per_step", "encode_us", "decode_us", "encode_us_prefill",
                  "decode_us_prefill")
        for lab in dict.fromkeys(_label(r) for r in mid):
            rs = [r for r in mid if _label(r) == lab]
            md = {f: statistics.median(r[f] for r in rs) for f in fields}
            out.append(f"| {lab} | {md['bytes_per_token']:.1f} | {md['bytes_per_step']:.1f} | {md['encode_us']:.1f} | "
                       f"{md['decode_us']:.1f} | {md['encode_us_prefill']:.2f} | {md['decode_us_prefill']:.2f} |")
        out.append("")
    if res.get("sweep"):
        sw = res["sweep"]
        out += [f"## TS threshold sweep (val loss, bits {sw['bits']}, {sw['windows']} windows)", "",
                "| k | budget | " + " | ".join("∞" if t is None else f"τ={t:g}" for t in
                                              dict.fromkeys(r["tau"] for r in sw["runs"] if r["kind"] == "tau")) + " |"]
        taus = list(dict.fromkeys(r["tau"] for r in sw["runs"] if r["kind"] == "tau"))
        out.append("|---|---|" + "---|" * len(taus))
        for k, b in dict.fromkeys((r["k"], r["budget"]) for r in sw["runs"] if r["kind"] == "tau"):
            cells = [next(r["val_loss"] for r in sw["runs"] if r["kind"] == "tau" and r["k"] == k and r["budget"] == b
                          and r["tau"] == t) for t in taus]
            out.append(f"| {k} | {b:g} | " + " | ".join(f"{c:.4f}" for c in cells) + " |")
        out += ["", "Clipping ranges (k = 3, budget 100; median ± clip·σ, ∞ = the inlier range):", "",
                "| clip 2-bit | clip 4-bit | val loss |", "|---|---|---|"]
        for r in sw["runs"]:
            if r["kind"] == "clip":
                c2 = "∞" if r["clip2"] is None else f"{r['clip2']:g}"
                c4 = "∞" if r["clip4"] is None else f"{r['clip4']:g}"
                out.append(f"| {c2} | {c4} | {r['val_loss']:.4f} |")
        out.append("")
    return "\n".join(out)


def _plot(res: dict) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = res["records"]
    bits = max(r["bits"] for r in recs)
    rows = [r for r in recs if r["bits"] == bits]
    depth = rows[0]["depth"]
    ks = sorted({r["k"] for r in rows if 0 < r["k"] < depth})
    local = next(r for r in rows if r["k"] == depth)
    fig, axes = plt.subplots(2, len(ks), figsize=(3.2 * len(ks), 6.2), squeeze=False, sharey="row")
    for j, k in enumerate(ks):
        at_k = [r for r in rows if r["k"] == k]
        uni = sorted((r for r in at_k if r["mode"] != "tabq"), key=lambda r: r["bytes_per_token"])
        tq = sorted((r for r in at_k if r["mode"] == "tabq"), key=lambda r: r["bytes_per_token"])
        for i, (field, name) in enumerate((("val_loss", "held-out loss (nats/byte)"), ("mc_accuracy", "MC accuracy"))):
            ax = axes[i][j]
            ax.plot([r["bytes_per_token"] for r in uni], [r[field] for r in uni], "o-", color="tab:gray",
                    label="uniform per token (int2/4/8, fp16, fp32)")
            for r in uni:
                ax.annotate(r["mode"], (r["bytes_per_token"], r[field]), fontsize=7, xytext=(2, 3),
                            textcoords="offset points")
            ax.plot([r["bytes_per_token"] for r in tq], [r[field] for r in tq], "s-", color="tab:red",
                    label="TS + TAB-Q (budgets)")
            ax.axhline(local[field], color="tab:blue", ls="--", lw=1, label="local (nothing sent)")
            ax.set_xscale("log", base=2)
            ax.grid(alpha=0.3)
            if i == 0:
                ax.set_title(f"split k = {k} of {depth}")
            else:
                ax.set_xlabel("bytes per token on the wire")
            if j == 0:
                ax.set_ylabel(name)
    axes[0][0].legend(fontsize=7, loc="upper right")
    host = res["host"]
    fig.suptitle(f"Split computing, L{depth}-H100 edge {'fp32' if bits == 32 else f'int{bits}'}, server fp32: "
                 f"quality vs bytes per token ({res['date']}, {host['cpu']}, {res['method']['loss_windows']} windows, "
                 f"{res['method']['mc_items']} MC items)", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


if __name__ == "__main__":
    main()
