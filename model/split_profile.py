"""A profile with split configurations: ``python -m model.split_profile --base BASE.json --out OUT.json``.

Adds to a measured profile of local configurations one record per split configuration of
``runtime.configspace.split_space`` (split point × activation compression; docs/split.md). Per record:

* **quality, measured.** Held-out loss and multiple-choice accuracy of the split model — the device's
  blocks at the configuration's ``bits``, the real encoder and decoder at the boundary, the server's
  blocks at ``--server-bits`` (``model.split.SplitView``) — on a reduced set (``--mc-items``,
  ``--windows``). To keep the reduced set's sampling noise out of the comparison with the base
  profile, the figure is *paired*: base record + (split − local) on the same items, the local being
  the same configuration with the same kernels. ``split = 0`` sends token ids (lossless): its quality
  is that of the local configuration at the server's precision, taken from the base profile.
* **device share, derived from measured records.** Per (heads, bits) the base profile's decode time
  per token is fitted linear in depth, ``ms(d) = a + b·d`` (embedding, head and per-call overhead in
  ``a``, one block in ``b``); the device runs ``a + b·k`` plus the codec's measured encode time
  (``model.split.load_split_table``, the median for a one-token message); energy per token = the
  local record's power × that time (``energy_source`` as the base). ``split = 0``: the device only
  sends ids (``--ids-ms``).
* **server, derived the same way** at ``--server-bits``: ``a + b·(depth − k)`` plus the measured decode
  time; a server as fast as the machine that measured the base profile (the split server of this
  repository runs there). ``modelled`` where the base is.
* **device memory** (``device_bytes``, :func:`device_bytes`): the device's blocks' weights and their
  KV cache at full context, against the device kind's ``memory_mb`` (``runtime.rules``).
* **bytes per token** on the wire: the codec's measured payload bytes per token (one-token message,
  header included) plus the protocol's framing per step message (:func:`framing_bytes`: the real
  header of ``model.split_client``'s step message and the WebSocket frame; ``--framing-bytes``
  overrides). The reply (downlink) is ``runtime.dynamics.LinkConstants.reply_bits``.

The written file is a normal profile (``model.profile_schema``); the environment reads its split
records' ``split``, ``wire``, ``up_bytes_per_token`` and ``server_ms_per_token``.
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from model.cli import positive_int
from model.profile_schema import load_profile, save_profile, utc_now_iso
from runtime.configspace import KNOBS, SPLIT_LOCAL, split_space
from runtime.safeio import refuse_existing

DEFAULT_SPLITS = (SPLIT_LOCAL, 2, 1, 0)
DEFAULT_WIRES = ("none", "fp16", "int8", "tabq")
#: WebSocket frame header of a client (masked) message of 126..65535 bytes: 2 + 2 (length) + 4 (mask)
WS_CLIENT_FRAME_BYTES = 8
#: ... and of a server message under 126 bytes: 2
WS_SERVER_FRAME_BYTES = 2


def framing_bytes(wire: str = "int8", k: int = 2) -> tuple[int, int]:
    """(uplink, downlink) protocol bytes of one decode step beside the payload: the length prefix and
    JSON header of ``model.split_client``'s real step message and of the server's reply (mid-context
    position, a 32-hex session id) plus the WebSocket framing. TCP/IP headers are not counted: the
    radio energy per bit was fitted to application throughput."""
    from model.split_client import PROTOCOL_VERSION, pack_message

    sid = "0" * 32
    req = {"v": PROTOCOL_VERSION, "op": "step", "session": sid, "cfg": "L6-H100-int8", "k": k, "pos": 128, "t": 1}
    req.update(dtype="uint8") if k == 0 else req.update(dtype="float32", mode=wire, d=256)
    rep = {"v": PROTOCOL_VERSION, "ok": True, "op": "step", "session": sid, "token": 101, "pos": 129,
           "logits": None, "decode_ms": 0.0123, "compute_ms": 1.2345, "server_ms": 1.3456}
    return (len(pack_message(req)) + WS_CLIENT_FRAME_BYTES, len(pack_message(rep)) + WS_SERVER_FRAME_BYTES)


def device_bytes(m, r: dict, blocks: int) -> float:
    """Memory a configuration needs on the device, the source's memory model: the weights of its
    ``blocks`` device blocks at their precision (per block: the local record's ``resident_bytes``
    less the embeddings, over its depth) plus the embeddings, and their KV cache at full context
    (fp32, active heads). 0 when the device holds no block (``split = 0``)."""
    if blocks == 0:
        return 0.0
    mc = m.config
    shared_b = m._shared_params() * 4  # embeddings + final LayerNorm, fp32
    per_block = (float(r["resident_bytes"]) - shared_b) / int(r["depth"])
    kv = 2 * blocks * round(float(r["heads"]) * mc.n_head) * mc.head_dim * mc.block_size * 4
    return shared_b + blocks * per_block + kv


def depth_fits(records: list[dict], key: str = "decode_ms_per_token_median") -> dict[tuple[float, int], tuple]:
    """Per (heads, bits): least-squares ``(a, b)`` of ``key`` linear in depth over the base records."""
    groups: dict[tuple[float, int], list[tuple[int, float]]] = {}
    for r in records:
        groups.setdefault((float(r["heads"]), int(r["bits"])), []).append((int(r["depth"]), float(r[key])))
    fits = {}
    for hb, pts in groups.items():
        d = np.array([p[0] for p in pts], float)
        y = np.array([p[1] for p in pts], float)
        if len(set(d.tolist())) < 2:
            fits[hb] = (float(y.mean()) * 0.2, float(y.mean()) * 0.8 / max(d.mean(), 1.0))
            continue
        b, a = np.polyfit(d, y, 1)
        fits[hb] = (max(float(a), 0.0), max(float(b), 1e-6))
    return fits


def _paired_quality(m, view_cls, cfg, k: int, wire: str, server_bits: int, budget, items, data, windows: int,
                    ref_cache: dict) -> tuple[float, float]:
    """(Δ MC accuracy, Δ loss) of the split model against the local one on the same items."""
    from model.evaluate import heldout_loss, mc_accuracy

    if cfg not in ref_cache:
        m.set_config(cfg)
        ref_cache[cfg] = (mc_accuracy(m, items)["pmi"], heldout_loss(m, data, windows))
    view = view_cls(m, cfg, k, wire, server_bits, budget_bytes_per_token=budget)
    acc, loss = mc_accuracy(view, items)["pmi"], heldout_loss(view, data, windows)
    return acc - ref_cache[cfg][0], loss - ref_cache[cfg][1]


def build(base: dict, m, *, splits=DEFAULT_SPLITS, wires=DEFAULT_WIRES, server_bits: int = 32,
          mc_items: int = 300, windows: int = 32, ids_ms: float = 0.02, framing: int | None = None,
          table_path: str | None = None, progress: bool = True, resume: str | Path | None = None) -> dict:
    """The split profile (module docstring) from the base profile dict and the loaded model.

    ``resume``: a JSON file of measured quality deltas by configuration name, read if present and
    written after every configuration (an interrupted run continues where it stopped)."""
    import json

    from runtime.safeio import atomic_write_text

    done: dict = {}
    if resume is not None and Path(resume).exists():
        done = json.loads(Path(resume).read_text())
        if done.get("method") != [mc_items, windows, server_bits]:
            done = {}
    done["method"] = [mc_items, windows, server_bits]
    from model.evaluate import build_mc_items, load_corpus
    from model.split import SplitView, load_split_table

    table = load_split_table(table_path) if table_path else load_split_table()
    recs = base["configs"]
    by_name = {r["name"]: r for r in recs}
    local_space = m.space
    space = split_space(local_space, splits, wires)
    fits = depth_fits(recs)
    corpus = load_corpus()
    items = build_mc_items(corpus.test_verses, mc_items)
    out_recs = [dict(r, split=SPLIT_LOCAL, wire="none", device_bytes=device_bytes(m, r, int(r["depth"])))
                for r in recs]
    ref: dict = {}
    todo = [c for c in space.configs if c.split != SPLIT_LOCAL]
    for cfg in tqdm(todo, desc="split configurations", unit="cfg", disable=not progress, file=sys.stderr):
        local = local_space.make(depth=cfg.depth, heads=cfg.heads, bits=cfg.bits)
        lrec = by_name[local_space.name_of(local)]
        a, b = fits[(float(cfg.heads), int(cfg.bits))]
        sa, sb = fits[(float(cfg.heads), int(server_bits))]
        k = int(cfg.split)
        if k == 0:
            srv_local = local_space.make(depth=cfg.depth, heads=cfg.heads, bits=server_bits)
            qrec = by_name[local_space.name_of(srv_local)]
            acc, loss = float(qrec["mc_accuracy"]), float(qrec["val_loss"])
            up_frame = framing_bytes(k=0)[0] if framing is None else framing
            dev_ms, up_bytes, dec_us, q_method = ids_ms, 1.0 + up_frame, 0.0, "server-precision local record"
        else:
            rec = _codec_record(table, cfg, k, max(local_space.knobs[0].values))
            name = space.name_of(cfg)
            if name not in done:
                done[name] = _paired_quality(m, SplitView, local, k, cfg.wire, server_bits, None, items,
                                             corpus.test, windows, ref)
                if resume is not None:
                    atomic_write_text(resume, json.dumps(done))
            d_acc, d_loss = done[name]
            acc = min(max(float(lrec["mc_accuracy"]) + d_acc, 0.0), 1.0)
            loss = max(float(lrec["val_loss"]) + d_loss, 0.0)
            dev_ms = a + b * k + rec.encode_us / 1000.0
            up_frame = framing_bytes(cfg.wire, k)[0] if framing is None else framing
            up_bytes, dec_us, q_method = rec.bytes_per_token + up_frame, rec.decode_us, "paired delta"
        server_ms = sa + sb * (cfg.depth - k) + dec_us / 1000.0
        power = float(lrec["power_w"])
        r = copy.deepcopy(lrec)
        r.pop("coverage_at_k", None)  # not measured through the split
        r.update({
            "name": space.name_of(cfg), "split": k, "wire": cfg.wire,
            "decode_ms_per_token_median": dev_ms, "decode_ms_per_token_p90": dev_ms * (
                float(lrec["decode_ms_per_token_p90"]) / float(lrec["decode_ms_per_token_median"])),
            "decode_tokens_per_s": 1000.0 / dev_ms,
            "energy_j_per_token": power * dev_ms / 1000.0,
            "mc_accuracy": acc, "val_loss": loss, "bits_per_byte": loss / math.log(2),
            "up_bytes_per_token": float(up_bytes), "server_ms_per_token": float(server_ms),
            "device_bytes": device_bytes(m, lrec, k),
            "quality_method": q_method,
        })
        out_recs.append(r)
    prof = copy.deepcopy(base)
    prof["configs"] = out_recs
    prof["name"] = f"{base.get('name', 'profile')}+split"
    prof["created_utc"] = utc_now_iso()
    prof["split"] = {
        "base_profile": base.get("name"), "server_bits": server_bits, "splits": list(splits), "wires": list(wires),
        "framing_bytes": {"uplink_int8": framing_bytes()[0], "downlink": framing_bytes()[1]} if framing is None
        else framing, "ids_ms": ids_ms, "quality": {"mc_items": mc_items, "loss_windows": windows,
                                                                "method": "base record + paired delta"},
        "codec_table": {"created": table.created, "host": table.host},
        "device_ms": "a + b*k per (heads, bits), linear fit in depth of the base records + measured encode",
        "server_ms": "a + b*(depth-k) at server_bits + measured decode",
        "note": "docs/split.md; costs derived from measured records, modelled where the base is modelled",
    }
    return prof


def _codec_record(table, cfg, k: int, depth_max: int):
    """The codec's measured bytes and µs for ``cfg`` at ``k``; where the table lacks it, the full fp32
    model's at ``k = 1`` (bytes and codec time depend on the width and the wire, not on the blocks)."""
    try:
        return table.get((cfg.depth, cfg.heads, cfg.bits), k, cfg.wire)
    except KeyError:
        return table.get((depth_max, 1.0, 32), 1, cfg.wire)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m model.split_profile", description=__doc__.split("\n")[0])
    p.add_argument("--base", default="profiles/reference-cpu.json", help="measured profile of local configurations")
    p.add_argument("--out", required=True, help="profile JSON to write")
    p.add_argument("--checkpoint", default=None, help="default: the base profile's checkpoint")
    p.add_argument("--server-bits", type=int, choices=(32, 8, 4), default=32)
    p.add_argument("--mc-items", type=positive_int, default=300, help="MC items of the paired quality (>= 1)")
    p.add_argument("--windows", type=positive_int, default=32, help="held-out windows of the paired loss (>= 1)")
    p.add_argument("--framing-bytes", type=int, default=None,
                   help="protocol bytes per step message (default: measured from model.split_client)")
    p.add_argument("--codec-table", default=None, help="benchmarks/results/split_quality.json (default)")
    p.add_argument("--splits", default=",".join(str(x) for x in DEFAULT_SPLITS),
                   help="split points, comma-separated (-1: local; k: blocks on the device)")
    p.add_argument("--wires", default=",".join(DEFAULT_WIRES), help="activation compressions, comma-separated")
    p.add_argument("--force", action="store_true", help="replace an existing --out file")
    a = p.parse_args(argv)
    try:
        splits = tuple(int(x) for x in a.splits.split(","))
    except ValueError:
        p.error(f"argument --splits: {a.splits!r}: comma-separated integers, e.g. -1,1,0")
    wires = tuple(w.strip() for w in a.wires.split(","))
    bad = [w for w in wires if w not in KNOBS["wire"].values]
    if bad or SPLIT_LOCAL not in splits or "none" not in wires:
        p.error(f"argument --splits/--wires: need -1 among the splits and 'none' among the wires; wires from "
                f"{list(KNOBS['wire'].values)} (unknown: {bad})")
    refuse_existing(Path(a.out), a.force, "python -m model.split_profile")
    import model as M

    base = load_profile(a.base)
    ckpt = a.checkpoint or base.data["model"].get("checkpoint") or "model/checkpoints/microlm.pt"
    m = M.load(ckpt, expect_sha256=base.data["model"]["checkpoint_sha256"])
    prof = build(base.data, m, splits=splits, wires=wires, server_bits=a.server_bits, mc_items=a.mc_items,
                 windows=a.windows, framing=a.framing_bytes, table_path=a.codec_table,
                 resume=str(a.out) + ".partial.json")
    save_profile(prof, a.out)
    Path(str(a.out) + ".partial.json").unlink(missing_ok=True)
    n = sum(1 for r in prof["configs"] if r["split"] != SPLIT_LOCAL)
    print(f"wrote {a.out}: {len(prof['configs'])} configurations ({n} split)")


if __name__ == "__main__":
    main()
