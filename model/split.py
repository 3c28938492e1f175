"""Edge/cloud split computing for the elastic model: activation codecs and the two model halves.

Read top to bottom:

1. **The split point.** For a configuration ``cfg`` (depth, heads, bits) with running blocks
   ``m._plans[cfg]`` (plan positions 0..depth-1), the split point ``k`` is the number of plan
   positions that run on the edge (the device):

   * ``k == depth``: everything local (nothing is sent);
   * ``0 < k < depth``: the edge runs the embedding and ``plan[:k]`` at ``cfg.bits`` and sends the
     boundary activations (the residual stream entering plan position ``k``, ``(t, n_embd)``);
     the server runs ``plan[k:]``, the final LayerNorm and the head at its own weight precision
     ``server_bits`` (default 32: e.g. int4 on the device, fp32 on the server), built from
     ``m._packs[(layer, n_head, server_bits)]`` for the same layers and heads;
   * ``k == 0``: everything on the server; the edge sends the token ids (1 byte each here).

2. **Codecs** (``CODECS``) turn boundary activations ``x`` float32 ``(t, d)`` into the wire payload
   and back, per token: ``fp32`` (lossless), ``fp16``, uniform ``int8`` / ``int4`` / ``int2``
   (asymmetric per token: fp16 scale and zero), and ``tabq`` — threshold splitting (TS) plus
   token-wise adaptive bit quantisation (TAB-Q):

   a. *TS* (threshold splitting): per token, values farther than ``TABQ_TAU`` = 4 robust standard
      deviations from the token's median are outlier candidates (robust std σ = 1.4826 · median
      absolute deviation; at most min(63, d/16) per token, the largest). A candidate that is sent
      travels sparse and unquantised: uint16 column + fp16 value, 4 bytes. τ = 4 was chosen by
      measurement: held-out loss of τ ∈ {3, 4, 5, 6, 8, ∞} at k ∈ {1, 3, 5} × budgets {100, 141}
      (``benchmarks/split_quality.py``, threshold sweep; docs/split.md): τ = 4 was the best in 4 of
      the 6 cells and within 0.0022 nats of the best (τ = 3) in the other two; without TS (τ = ∞)
      the loss was the worst in every cell, 0.005–0.016 nats above τ = 4.
   b. *TAB-Q*: the other values of a token are quantised uniformly with 2, 4 or 8 bits over its
      inlier range clipped to ``median ± TABQ_CLIP[b]·σ`` (1.5σ at 2 bits, 3σ at 4 bits, unclipped
      at 8: the lowest reconstruction error on held-out activations, close to the MSE-optimal
      clipping of a uniform quantiser for Gaussian data; by held-out loss 2σ at 2 bits was 0.0025
      nats better at the one point swept, the 4-bit clip mattered < 0.0013); fp16 scale and zero per
      token. The encoder quantises every token at all three widths and measures each one's squared
      error relative to σ² (every consumer of the residual stream reads it through a per-token
      LayerNorm, so the error relative to the token's own scale is what matters; weighting by σ²
      or not moved the loss by < 0.004 nats, with no consistent sign).
   c. *Allocation*: every token starts at 2 bits; one greedy then spends the rest of the budget on
      three kinds of step, best error reduction per byte first, while they fit: send a candidate
      outlier (4 bytes; gain: its clipping error at 4 bits), upgrade a token 2→4 bits (d/4 bytes),
      upgrade 4→8 bits (d/2 bytes, never before the token's 2→4). The budget is
      ``budget_bytes_per_token · t`` bytes per message plus a 4-byte header; its minimum is
      ``min_tabq_budget(d)`` (all tokens at 2 bits: 69 bytes at d = 256, uniform int2 is 68), its
      default ``default_budget(d)`` (4-bit codes + 2 outliers: 141; uniform int4 is 132). A message
      shares its budget between its tokens (prefill); a one-token message cannot (see
      ``split_generate`` for the credit that carries unused bytes to later messages).

   ``decode`` validates every payload completely before it allocates the output (the server feeds
   it bytes from the network): any malformed input raises ``CodecError``, nothing else.

3. **The halves.** ``EdgeSide`` runs the embedding + ``plan[:k]`` with its own KV cache (the
   model's ``KVCache``: it keeps the residual input of every plan position, so a change of
   (cfg, k) repairs the edge's cache exactly and yields the boundary activations of the whole
   cached prefix at the new split point). ``ServerSide`` runs ``plan[k:]`` + head with its own cache.
   **KV rule on a split or configuration change:** the server's cache is only valid for the
   (cfg, k) that filled it; on any change the edge re-sends the boundary activations (or ids) of
   the whole context at ``pos = 0`` and the server re-prefills. Generation is therefore exact:
   with the ``fp32`` codec and equal precisions it equals unsplit generation token for token.

4. ``SplitView`` — a model-like object (``.config``, ``.forward``) that runs edge → codec →
   server per sequence, so ``model.evaluate.heldout_loss`` / ``mc_accuracy`` measure split quality;
   ``split_generate`` — greedy generation with a per-token split schedule; ``load_split_table`` —
   the measured bytes and quality of ``benchmarks/results/split_quality.json``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from model.model import ElasticGPT, KVCache, LayerPlan, _block_forward

__all__ = ["CODECS", "CodecError", "TABQ_TAU", "TABQ_BITS", "encode", "decode", "payload_bytes",
           "bytes_per_token", "default_budget", "min_tabq_budget", "tabq_bit_widths", "server_plan",
           "EdgeSide", "EdgeMessage", "ServerSide", "SplitView", "SplitGeneration", "split_generate",
           "SplitRecord", "SplitTable", "load_split_table", "DEFAULT_RESULTS", "WireStats"]

CODECS: tuple[str, ...] = ("fp32", "fp16", "int8", "int4", "int2", "tabq")
UNIFORM_BITS = {"int8": 8, "int4": 4, "int2": 2}
TABQ_BITS: tuple[int, ...] = (2, 4, 8)
TABQ_TAU = 4.0  # outlier threshold in robust stds; measured: benchmarks/split_quality.py threshold sweep
TABQ_MAX_OUTLIER_DIV = 16  # at most min(63, d // 16) outliers per token
TABQ_HEADER = b"TQ\x01\x00"  # magic "TQ", format version 1, reserved
TABQ_TOKEN_OVERHEAD_BYTES = 5  # u8 (bit-width code << 6 | outlier count) + fp16 scale + fp16 zero
TABQ_CLIP = {2: 1.5, 4: 3.0, 8: math.inf}  # quantisation range per bit-width: median ± clip·σ (measured)
OUTLIER_BYTES = 4  # u16 column + fp16 value
FP16_MAX = 65504.0
_FP16_TINY = float(np.finfo(np.float16).smallest_subnormal)
DEFAULT_RESULTS = Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "split_quality.json"


class CodecError(ValueError):
    """An activation payload (or an array to encode) is malformed; the message says what is wrong."""


# ---- sizes -----------------------------------------------------------------------------------
def _row_bytes(d: int, bits: int) -> int:
    return (d * bits + 7) // 8


def default_budget(d: int) -> float:
    """Default TAB-Q budget in bytes per token: 4-bit codes, the token's table entry and two outliers
    (141 at d = 256), so that a one-token (decode-step) message can be all 4-bit; uniform int4 is
    ``d/2 + 4`` (132)."""
    return float(TABQ_TOKEN_OVERHEAD_BYTES + _row_bytes(d, 4) + 2 * OUTLIER_BYTES)


def min_tabq_budget(d: int) -> float:
    """The smallest TAB-Q budget (bytes per token): every token at 2 bits, no outliers."""
    return float(TABQ_TOKEN_OVERHEAD_BYTES + _row_bytes(d, 2))


def payload_bytes(mode: str, t: int, d: int, *, budget_bytes_per_token: float | None = None) -> int:
    """Bytes of a payload of ``t`` tokens of width ``d``: exact for the fixed modes, the upper bound
    (header + budget) for ``tabq`` (``len(encode(...))`` is the actual size)."""
    _check_mode(mode)
    if mode == "fp32":
        return 4 * t * d
    if mode == "fp16":
        return 2 * t * d
    if mode in UNIFORM_BITS:
        return t * (4 + _row_bytes(d, UNIFORM_BITS[mode]))
    budget = default_budget(d) if budget_bytes_per_token is None else float(budget_bytes_per_token)
    return len(TABQ_HEADER) + math.floor(budget * t)


def bytes_per_token(mode: str, d: int, *, budget_bytes_per_token: float | None = None) -> float:
    """Bytes per token on the wire (``tabq``: its budget, the upper bound; the header not counted)."""
    if mode == "tabq":
        return default_budget(d) if budget_bytes_per_token is None else float(budget_bytes_per_token)
    return payload_bytes(mode, 1, d)


def _check_mode(mode: str) -> None:
    if mode not in CODECS:
        raise CodecError(f"unknown codec {mode!r}: allowed {CODECS}")


# ---- fp16 helpers and the uniform quantiser -----------------------------------------------------
def _f16_floor(v: np.ndarray) -> np.ndarray:
    """Largest fp16 <= v (v finite, |v| <= FP16_MAX)."""
    h = v.astype(np.float16)
    up = h.astype(np.float32) > v
    h[up] = np.nextafter(h[up], np.float16(-np.inf))
    return h


def _f16_ceil(v: np.ndarray) -> np.ndarray:
    """Smallest fp16 >= v (v finite, 0 < v <= FP16_MAX)."""
    h = v.astype(np.float16)
    down = h.astype(np.float32) < v
    h[down] = np.nextafter(h[down], np.float16(np.inf))
    return h


def _affine(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Quantise rows of ``x`` (n, d) between per-row ``lo``/``hi`` (n,) with ``bits`` bits.

    The zero is rounded *down* and the scale *up* to fp16 before the codes are chosen, so every
    value in [lo, hi] is represented with error <= scale / 2. Returns (codes uint8 (n, d),
    scale fp16 (n,), zero fp16 (n,)).
    """
    levels = (1 << bits) - 1
    zero = _f16_floor(lo.astype(np.float32))
    span = hi.astype(np.float32) - zero.astype(np.float32)
    scale = _f16_ceil(np.maximum(span / levels, _FP16_TINY).astype(np.float32))
    s, z = scale.astype(np.float32)[:, None], zero.astype(np.float32)[:, None]
    codes = np.clip(np.rint((np.clip(x, lo[:, None], hi[:, None]) - z) / s), 0, levels).astype(np.uint8)
    return codes, scale, zero


def _dequant(codes: np.ndarray, scale: np.ndarray, zero: np.ndarray) -> np.ndarray:
    return zero.astype(np.float32)[:, None] + codes.astype(np.float32) * scale.astype(np.float32)[:, None]


def _pack(codes: np.ndarray, bits: int) -> bytes:
    """(n, d) codes < 2^bits -> n rows of ceil(d·bits/8) bytes; the first value in the high bits."""
    if bits == 8:
        return codes.tobytes()
    per = 8 // bits
    n, d = codes.shape
    if d % per:
        codes = np.pad(codes, ((0, 0), (0, per - d % per)))
    c = codes.reshape(n, -1, per)
    out = np.zeros(c.shape[:2], np.uint8)
    for i in range(per):
        out |= c[..., i] << (bits * (per - 1 - i))
    return out.tobytes()


def _unpack(buf: bytes, offset: int, n: int, d: int, bits: int) -> np.ndarray:
    """Inverse of ``_pack`` (the caller checked the length); padding bits must be zero."""
    rb = _row_bytes(d, bits)
    raw = np.frombuffer(buf, np.uint8, n * rb, offset).reshape(n, rb)
    if bits == 8:
        return raw
    per = 8 // bits
    shifts = (bits * (per - 1 - np.arange(per))).astype(np.uint8)
    c = ((raw[..., None] >> shifts) & ((1 << bits) - 1)).reshape(n, rb * per)
    if rb * per > d and c[:, d:].any():
        raise CodecError(f"non-zero padding bits after the {d} {bits}-bit codes of a token")
    return c[:, :d]


# ---- encode ----------------------------------------------------------------------------------------
def encode(x: np.ndarray, mode: str, *, budget_bytes_per_token: float | None = None,
           threshold_sigmas: float | None = None) -> bytes:
    """Encode boundary activations ``x`` float32 (t, d) with codec ``mode`` (one of ``CODECS``).

    Args:
        x: the activations, finite; for every mode but fp32 within ±65504 (the fp16 range).
        mode: the codec.
        budget_bytes_per_token: ``tabq`` only: bytes per token for this message (default
            ``default_budget(d)``; at least ``min_tabq_budget(d)``); the payload is at most
            ``4 + floor(budget · t)`` bytes.
        threshold_sigmas: ``tabq`` only: the outlier threshold in robust stds (default ``TABQ_TAU``;
            ``inf`` disables threshold splitting).

    Raises:
        CodecError: unknown mode, not a finite 2-D array, out of range, or a budget below the minimum.
    """
    _check_mode(mode)
    x = np.asarray(x)
    if x.ndim != 2 or x.dtype.kind != "f":
        raise CodecError(f"activations must be a 2-D float array (t, d), got {x.dtype} {x.shape}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    t, d = x.shape
    if d < 1 or d > 65536:
        raise CodecError(f"width d={d} outside 1..65536")
    if not np.isfinite(x).all():
        raise CodecError("activations contain NaN or inf")
    if mode == "fp32":
        return x.astype("<f4").tobytes()
    if t and float(np.abs(x).max()) > FP16_MAX:
        raise CodecError(f"activation magnitude {float(np.abs(x).max()):.4g} exceeds the fp16 range {FP16_MAX}")
    if mode == "fp16":
        return x.astype("<f2").tobytes()
    if mode in UNIFORM_BITS:
        bits = UNIFORM_BITS[mode]
        if t == 0:
            return b""
        codes, scale, zero = _affine(x, x.min(1), x.max(1), bits)
        return b"".join((scale.astype("<f2").tobytes(), zero.astype("<f2").tobytes(), _pack(codes, bits)))
    return _tabq_encode(x, default_budget(d) if budget_bytes_per_token is None else budget_bytes_per_token,
                        TABQ_TAU if threshold_sigmas is None else threshold_sigmas)


def _tabq_encode(x: np.ndarray, budget: float, tau: float, clip: dict[int, float] | None = None) -> bytes:
    """TS + TAB-Q (module docstring, 2). x float32 (t, d), finite, within the fp16 range."""
    t, d = x.shape
    if not (isinstance(budget, (int, float)) and math.isfinite(budget)) or budget < min_tabq_budget(d):
        raise CodecError(f"tabq budget {budget!r} bytes/token is below the minimum {min_tabq_budget(d):g} "
                         f"(every token at 2 bits) for d={d}")
    if not tau > 0:
        raise CodecError(f"threshold_sigmas must be > 0, got {tau!r}")
    if t == 0:
        return TABQ_HEADER
    clip = TABQ_CLIP if clip is None else clip
    # (a) threshold splitting: outliers = far from the token's median in robust stds
    med = _row_median(x)  # (t,)
    dev = np.abs(x - med[:, None])  # (t, d)
    sigma = (1.4826 * _row_median(dev) + 1e-12).astype(np.float32)  # (t,)
    z = dev / sigma[:, None]  # normalised deviation (t, d)
    out = z > tau
    cap = _max_outliers(d)
    if out.any() and int(out.sum(1).max()) > cap:  # keep the largest `cap` per token
        order = np.argsort(np.where(out, -z, np.inf), axis=1, kind="stable")[:, :cap]
        keep = np.zeros_like(out)
        np.put_along_axis(keep, order, True, axis=1)
        out &= keep
    # (b) every token quantised at 2, 4 and 8 bits over its inliers, each width with its own clipped
    # range (med ± clip[b]·σ); the squared error of each, relative to the token's σ², drives the choices
    xin = np.where(out, med[:, None], x)  # candidate outliers do not widen the range
    lo, hi = xin.min(1), xin.max(1)
    forms, err = {}, {}
    for b in TABQ_BITS:
        lo_b = np.maximum(lo, med - clip[b] * sigma).astype(np.float32)
        hi_b = np.maximum(np.minimum(hi, med + clip[b] * sigma).astype(np.float32), lo_b)
        forms[b] = _affine(x, lo_b, hi_b, b)  # a candidate that is not sent is clipped into the range
        e = _dequant(*forms[b]) - x
        err[b] = np.where(out, 0.0, e * e).sum(1) / sigma.astype(np.float64) ** 2  # (t,)
    # (c) allocation. Many tokens: one greedy over three kinds of step, best error reduction per
    # byte first, while they fit: send a candidate outlier exactly (4 bytes; gain: its clipping error
    # at 4 bits), upgrade a token 2->4 bits, 4->8 bits (never before its 2->4: its ratio is capped by
    # that one). One token (a decode step), where a greedy can block a large step with small ones:
    # the best of the three widths, each with the outliers that fill the rest of its budget.
    ti, ci = np.nonzero(out)  # row-major: grouped by token, columns increasing
    free = math.floor(budget * t) - t * (TABQ_TOKEN_OVERHEAD_BYTES + _row_bytes(d, 2))  # bytes left
    e_out = {b: (x[ti, ci] - forms[b][2][ti].astype(np.float32)
                 - forms[b][0][ti, ci] * forms[b][1][ti].astype(np.float32)) ** 2 / sigma[ti].astype(np.float64) ** 2
             for b in TABQ_BITS}  # each candidate's clipping error at each width
    if t == 1:
        best = (math.inf, 2, np.zeros(len(ti), bool))
        for b in TABQ_BITS:
            room = free - (_row_bytes(d, b) - _row_bytes(d, 2))
            if room < 0:
                continue
            top = np.argsort(-e_out[b], kind="stable")[:room // OUTLIER_BYTES]
            sent_b = np.zeros(len(ti), bool)
            sent_b[top] = True
            resid = float(err[b][0] + e_out[b][~sent_b].sum())
            if resid < best[0]:
                best = (resid, b, sent_b)
        bits, sent = np.array([best[1]]), best[2]
    else:
        bits, sent = _tabq_greedy(err, e_out[4], t, d, free)
    ti, ci = ti[sent], ci[sent]
    out = np.zeros_like(out)
    out[ti, ci] = True
    # payload: header | table u8 (bit-width code << 6 | outlier count) | scale f16 | zero f16 |
    # codes (8-, 4-, then 2-bit tokens, each group in token order) | outlier columns u16 | values f16
    scale, zero = np.empty(t, np.float16), np.empty(t, np.float16)
    sections = []
    for b in (8, 4, 2):
        rows = np.nonzero(bits == b)[0]
        if len(rows):
            codes, sc, zr = forms[b]
            scale[rows], zero[rows] = sc[rows], zr[rows]
            sections.append(_pack(codes[rows], b))
    table = (np.searchsorted(TABQ_BITS, bits) << 6 | out.sum(1)).astype(np.uint8)
    return b"".join([TABQ_HEADER, table.tobytes(), scale.astype("<f2").tobytes(), zero.astype("<f2").tobytes(),
                     *sections, ci.astype("<u2").tobytes(), x[ti, ci].astype("<f2").tobytes()])


def _tabq_greedy(err: dict[int, np.ndarray], e_out: np.ndarray, t: int, d: int,
                 free: int) -> tuple[np.ndarray, np.ndarray]:
    """Greedy allocation of ``free`` bytes (module docstring, 2c): (bits (t,), sent (n_candidates,))."""
    cost_a, cost_b = _row_bytes(d, 4) - _row_bytes(d, 2), _row_bytes(d, 8) - _row_bytes(d, 4)
    ratio_a = (err[2] - err[4]) / cost_a
    ratio_b = np.minimum((err[4] - err[8]) / cost_b, ratio_a)
    ratio = np.concatenate([ratio_a, ratio_b, e_out / OUTLIER_BYTES])  # steps: a (t), b (t), outliers
    kind = np.repeat(np.arange(3), (t, t, len(e_out)))
    cost_of = np.array([cost_a, cost_b, OUTLIER_BYTES])
    order = np.argsort(-ratio, kind="stable")  # ties keep a before b
    order = order[ratio[order] > 0]
    n_take = int((np.cumsum(cost_of[kind[order]]) <= free).sum())
    taken = np.zeros(len(ratio), bool)
    taken[order[:n_take]] = True
    free -= int(cost_of[kind[order[:n_take]]].sum())
    for k in (0, 2):  # after the first step that did not fit: cheaper steps that still do, in order
        rest = order[n_take:][kind[order[n_take:]] == k]
        n_fit = min(len(rest), max(free, 0) // int(cost_of[k]))
        taken[rest[:n_fit]] = True
        free -= n_fit * int(cost_of[k])
    return 2 + 2 * taken[:t] + 4 * taken[t:2 * t], taken[2 * t:]


def _row_median(a: np.ndarray) -> np.ndarray:
    """Median of each row (one partition; np.median's overhead matters for one-token messages)."""
    h = a.shape[1] // 2
    if a.shape[1] % 2:
        return np.partition(a, h, axis=1)[:, h]
    p = np.partition(a, (h - 1, h), axis=1)
    return (p[:, h - 1] + p[:, h]) * np.float32(0.5)


def _max_outliers(d: int) -> int:
    return min(63, max(1, d // TABQ_MAX_OUTLIER_DIV))


def tabq_bit_widths(payload: bytes, t: int) -> np.ndarray:
    """The per-token bit-widths of a ``tabq`` payload of ``t`` tokens (for statistics; not validated
    beyond the header: call ``decode`` first on untrusted bytes)."""
    table = np.frombuffer(payload, np.uint8, t, len(TABQ_HEADER))
    return np.asarray(TABQ_BITS + (0,))[table >> 6]


# ---- decode ----------------------------------------------------------------------------------------
def decode(payload: bytes | bytearray | memoryview, mode: str, t: int, d: int) -> np.ndarray:
    """Decode a payload of ``t`` tokens of width ``d`` into float32 (t, d).

    The payload is validated completely before the output is allocated: its exact length (for
    ``tabq`` from the header's bit-widths and outlier counts), fp16 scales/zeros/values finite,
    scales >= 0, bit-widths in {2, 4, 8}, outlier counts <= d, columns < d and increasing within a
    token, zero padding bits. Everything it allocates is O(len(payload) + t) (the output O(t·d),
    which the exact-length check bounds by the payload's own size).

    Raises:
        CodecError: for any malformed input (and only CodecError).
    """
    _check_mode(mode)
    for name, v in (("t", t), ("d", d)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
            raise CodecError(f"{name} must be an int, got {type(v).__name__}")
    t, d = int(t), int(d)
    if t < 0 or not 1 <= d <= 65536:
        raise CodecError(f"sizes t={t}, d={d}: need t >= 0 and 1 <= d <= 65536")
    try:
        view = memoryview(payload)
    except TypeError:
        raise CodecError(f"payload must be bytes-like, not {type(payload).__name__}") from None
    n = view.nbytes
    if mode == "tabq":
        return _tabq_decode(view, n, t, d)
    if mode in UNIFORM_BITS:
        expect = t * (4 + _row_bytes(d, UNIFORM_BITS[mode]))
    else:
        expect = t * d * (4 if mode == "fp32" else 2)
    if n != expect:
        raise CodecError(f"{mode} payload of {n} bytes; {t} tokens of width {d} need exactly {expect}")
    buf = view.tobytes()
    if mode in ("fp32", "fp16"):
        y = np.frombuffer(buf, "<f4" if mode == "fp32" else "<f2").reshape(t, d)
        if not np.isfinite(y).all():
            raise CodecError(f"{mode} payload holds NaN or inf")
        return y.astype(np.float32)
    scale, zero = np.frombuffer(buf, "<f2", t, 0), np.frombuffer(buf, "<f2", t, 2 * t)
    _check_scale_zero(scale, zero)
    codes = _unpack(buf, 4 * t, t, d, UNIFORM_BITS[mode])
    return _dequant(codes, scale, zero)


def _check_scale_zero(scale: np.ndarray, zero: np.ndarray) -> None:
    if not (np.isfinite(scale).all() and np.isfinite(zero).all()):
        raise CodecError("a per-token scale or zero is NaN or inf")
    if (scale < 0).any():
        raise CodecError("a per-token scale is negative")


def _tabq_decode(view: memoryview, n: int, t: int, d: int) -> np.ndarray:
    fixed = len(TABQ_HEADER) + t * TABQ_TOKEN_OVERHEAD_BYTES
    if n < fixed:
        raise CodecError(f"tabq payload of {n} bytes is shorter than the {fixed} bytes of its header and "
                         f"per-token table for {t} tokens")
    if view[:len(TABQ_HEADER)].tobytes() != TABQ_HEADER:
        raise CodecError(f"tabq payload does not start with {TABQ_HEADER!r} (magic + version)")
    buf = view.tobytes()  # O(n)
    off = len(TABQ_HEADER)
    table = np.frombuffer(buf, np.uint8, t, off)
    off += t
    if (table >> 6 == 3).any():
        raise CodecError("tabq bit-width code 3 is not one of 0/1/2 (2/4/8 bits)")
    bits = np.asarray(TABQ_BITS)[table >> 6]
    counts = (table & 63).astype(np.int64)
    if (counts > _max_outliers(d)).any():
        raise CodecError(f"tabq outlier count {int(counts.max())} exceeds the limit {_max_outliers(d)} for d={d}")
    scale, zero = np.frombuffer(buf, "<f2", t, off), np.frombuffer(buf, "<f2", t, off + 2 * t)
    off += 4 * t
    n_rows = {b: int((bits == b).sum()) for b in (8, 4, 2)}
    n_out = int(counts.sum())
    expect = fixed + sum(n_rows[b] * _row_bytes(d, b) for b in n_rows) + OUTLIER_BYTES * n_out
    if n != expect:
        raise CodecError(f"tabq payload of {n} bytes; its header describes {expect} "
                         f"({n_rows[8]}/{n_rows[4]}/{n_rows[2]} tokens at 8/4/2 bits, {n_out} outliers)")
    _check_scale_zero(scale, zero)
    codes = {}
    for b in (8, 4, 2):
        codes[b] = _unpack(buf, off, n_rows[b], d, b)
        off += n_rows[b] * _row_bytes(d, b)
    cols = np.frombuffer(buf, "<u2", n_out, off).astype(np.int64)
    vals = np.frombuffer(buf, "<f2", n_out, off + 2 * n_out)
    if (cols >= d).any():
        raise CodecError(f"tabq outlier column {int(cols.max())} is outside the width {d}")
    if not np.isfinite(vals).all():
        raise CodecError("tabq outlier value is NaN or inf")
    rows = np.repeat(np.arange(t), counts)  # O(n_out)
    if (np.diff(cols)[rows[1:] == rows[:-1]] <= 0).any():
        raise CodecError("tabq outlier columns must increase strictly within a token")
    y = np.empty((t, d), np.float32)
    for b in (8, 4, 2):
        r = np.nonzero(bits == b)[0]
        if len(r):
            y[r] = _dequant(codes[b], scale[r], zero[r])
    y[rows, cols] = vals.astype(np.float32)
    return y


# ---- the halves ---------------------------------------------------------------------------------------
def _check_k(k, depth: int) -> int:
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or not 0 <= int(k) <= depth:
        raise ValueError(f"split point k={k!r} outside 0..{depth} (the configuration's running blocks)")
    return int(k)


def server_plan(m: ElasticGPT, cfg, k: int, server_bits: int = 32) -> list[LayerPlan]:
    """The server's plan positions ``k..depth-1`` of ``cfg``: same layers and heads, ``server_bits`` weights."""
    cfg = m.validate(cfg)
    k = _check_k(k, cfg.depth)
    if server_bits not in m.config.bits:
        raise ValueError(f"server_bits {server_bits!r}: the model packs {list(m.config.bits)}")
    if not m._plans:
        m.prepare()
    return [m._packs[(p.layer, p.n_head, server_bits)] for p in m._plans[cfg][k:]]


def _run_plan(m: ElasticGPT, x: torch.Tensor, plan: list[LayerPlan], cache: KVCache | None,
              pos: int) -> torch.Tensor:
    """x (B, t, d) through ``plan``; with a cache, store each position's residual input (as
    ``ElasticGPT.forward`` does) and the output at ``resid[len(plan)]``."""
    hd, t = m.config.head_dim, x.shape[1]
    for j, p in enumerate(plan):
        if cache is not None:
            cache.resid[j, :, pos:pos + t] = x
        x = _block_forward(x, p, hd, cache, pos)
    if cache is not None:
        cache.resid[len(plan), :, pos:pos + t] = x
    return x


@dataclass(frozen=True)
class EdgeMessage:
    """What the edge sends for one step: ``ids`` (k == 0) or boundary activations ``x`` (t, d)
    (0 < k < depth) for positions ``pos..pos+t-1``; ``pos == 0`` with the whole context after a
    split/configuration change. ``local`` (k == depth): nothing is sent; ``x`` is the final residual."""

    pos: int
    cfg: tuple
    k: int
    ids: torch.Tensor | None = None  # (t,) int64
    x: torch.Tensor | None = None  # (t, d) float32
    local: bool = False

    @property
    def t(self) -> int:
        return int((self.ids if self.ids is not None else self.x).shape[0])


class EdgeSide:
    """The device half: embedding + ``plan[:k]`` at the configuration's bits, with a KV cache.

    The cache is the model's ``KVCache`` (one sequence): it stores the residual input of every edge
    plan position for every cached token, so after a change of (cfg, k) the next ``run`` repairs it
    exactly (re-runs only the changed suffix of edge layers over the cached prefix) and
    ``boundary()`` gives the boundary activations of the whole cached context at the new split.
    """

    def __init__(self, m: ElasticGPT, max_len: int | None = None):
        self.m = m
        self.max_len = max_len or m.config.block_size
        self.cache = m.new_cache(1, self.max_len)
        self.ids = torch.zeros(self.max_len, dtype=torch.long)  # token history of the cache
        self._sent: tuple | None = None  # (cfg, k) of the last message (what the server holds)
        self._cur: tuple | None = None  # (cfg, k) of the last run

    @property
    def length(self) -> int:
        return self.cache.length

    def reset(self) -> None:
        """Forget the context (e.g. when it is cropped); the next message starts at pos 0."""
        self.cache.reset()
        self._sent = self._cur = None

    @torch.no_grad()
    def run(self, idx: torch.Tensor, cfg, k: int) -> torch.Tensor | None:
        """Append tokens ``idx`` (t,) and return their boundary activations (t, d) after
        ``plan[:k]``; None when ``k == 0`` (send the ids). Repairs the cache first on a (cfg, k) change."""
        m = self.m
        cfg = m.validate(cfg)
        k = _check_k(k, cfg.depth)
        idx = torch.as_tensor(idx, dtype=torch.long).flatten()
        c, t = self.cache, int(idx.numel())
        pos = c.length
        if t < 1 or pos + t > self.max_len:
            raise ValueError(f"{t} new tokens after {pos} cached: need 1..{self.max_len - pos}")
        plan = m._plans[cfg][:k]
        keys = tuple(p.key for p in plan)
        if c.plan != keys and pos > 0:
            m._repair(c, plan, keys)  # the model's exact repair (model.model docstring)
        x = _run_plan(m, m._embed(idx[None], pos), plan, c, pos)
        c.length, c.plan = pos + t, keys
        self.ids[pos:pos + t] = idx
        self._cur = (cfg, k)
        return None if k == 0 else x[0]

    def boundary(self) -> torch.Tensor:
        """Boundary activations (n, d) of every cached token at the last run's split point
        (token embeddings when k == 0)."""
        if self._cur is None:
            raise RuntimeError("nothing cached: call run() first")
        return self.cache.resid[self._cur[1], 0, :self.cache.length].clone()

    def send(self, idx: torch.Tensor, cfg, k: int) -> EdgeMessage:
        """``run`` and build the message for the server under the KV rule: only the new tokens
        while (cfg, k) is what the server last received, else the whole context from pos 0."""
        x = self.run(idx, cfg, k)
        cfg, k = self._cur
        n, t = self.cache.length, int(torch.as_tensor(idx).numel())
        if k == cfg.depth:
            self._sent = None  # the server misses these tokens: resend on the next offload
            return EdgeMessage(n - t, cfg, k, x=x, local=True)
        whole = self._sent != (cfg, k)
        self._sent = (cfg, k)
        pos = 0 if whole else n - t
        if k == 0:
            return EdgeMessage(pos, cfg, k, ids=self.ids[pos:n].clone())
        return EdgeMessage(pos, cfg, k, x=self.boundary() if whole else x)


class ServerSide:
    """The server half of one session: ``plan[k:]`` at ``server_bits`` + final LayerNorm + head,
    with its own KV cache. Its cache is valid only for the (cfg, k) that filled it (module docstring)."""

    def __init__(self, m: ElasticGPT, server_bits: int = 32, max_len: int | None = None):
        if server_bits not in m.config.bits:
            raise ValueError(f"server_bits {server_bits!r}: the model packs {list(m.config.bits)}")
        self.m, self.server_bits = m, server_bits
        self.max_len = max_len or m.config.block_size
        self.cache = m.new_cache(1, self.max_len)
        self.key: tuple | None = None  # (cfg, k) that filled the cache
        self.prefills = 0  # restarts at pos 0 (for statistics)

    @property
    def length(self) -> int:
        return self.cache.length

    @torch.no_grad()
    def run(self, x, pos: int, cfg, k: int) -> torch.Tensor:
        """Logits (t, vocab) for ``t`` tokens at positions ``pos..pos+t-1``.

        Args:
            x: boundary activations (t, d) float (torch or numpy) for ``k >= 1``; token ids (t,)
                for ``k == 0`` (integers, or bytes: one uint8 per token).
            pos: where these tokens start: 0 (re-prefill: the whole context) or the cache length.
            cfg, k: the split; a (cfg, k) different from the cache's requires ``pos == 0``.

        Raises:
            ValueError: bad shapes, non-finite activations, ids out of range, a ``pos`` that does not
                continue the cache, or a split change without a re-prefill.
        """
        m = self.m
        cfg = m.validate(cfg)
        k = _check_k(k, cfg.depth)
        if not isinstance(pos, (int, np.integer)) or isinstance(pos, bool) or pos < 0:
            raise ValueError(f"pos {pos!r} must be an int >= 0")
        pos = int(pos)
        if (cfg, k) != self.key and pos != 0:
            raise ValueError(f"split changed to k={k} under {m.name(cfg)}: the edge must re-send the whole "
                             "context from pos 0 (the server re-prefills)")
        if pos != 0 and pos != self.cache.length:
            raise ValueError(f"pos {pos} does not continue the server cache of {self.cache.length} tokens "
                             "(send pos = cache length, or the whole context from pos 0)")
        if k == 0:
            if isinstance(x, (bytes, bytearray, memoryview)):  # the wire form: one uint8 per token
                x = np.frombuffer(x, np.uint8).astype(np.int64)
            ids = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).flatten()
            if ids.dtype.is_floating_point or ids.dtype == torch.bool or ids.numel() == 0:
                raise ValueError("k == 0 needs integer token ids (t,), t >= 1")
            ids = ids.long()
            if int(ids.min()) < 0 or int(ids.max()) >= m.config.vocab_size:
                raise ValueError(f"token ids must lie in 0..{m.config.vocab_size - 1}")
            t = int(ids.numel())
        else:
            h = torch.as_tensor(x).float() if not isinstance(x, torch.Tensor) else x.float()
            if h.dim() != 2 or h.shape[1] != m.config.n_embd or h.shape[0] == 0:
                raise ValueError(f"activations must be (t >= 1, {m.config.n_embd}), got {tuple(h.shape)}")
            if not bool(torch.isfinite(h).all()):
                raise ValueError("activations contain NaN or inf")
            t = int(h.shape[0])
        if pos + t > self.max_len:
            raise ValueError(f"{pos + t} tokens exceed the server cache of {self.max_len}")
        if pos == 0:
            self.cache.reset()
            self.key = (cfg, k)
            self.prefills += 1
        h = m._embed(ids[None], pos) if k == 0 else h[None]
        plan = server_plan(m, cfg, k, self.server_bits)
        y = _run_plan(m, h, plan, self.cache, pos)
        self.cache.length, self.cache.plan = pos + t, tuple(p.key for p in plan)
        return m._head(y)[0]


# ---- evaluation view ------------------------------------------------------------------------------------
@dataclass
class WireStats:
    """What a ``SplitView`` sent: bytes and tokens on the wire, codec seconds, TAB-Q bit-width counts."""

    bytes: int = 0
    tokens: int = 0
    messages: int = 0
    encode_s: float = 0.0
    decode_s: float = 0.0
    tabq_bits: dict = field(default_factory=lambda: {2: 0, 4: 0, 8: 0})

    @property
    def bytes_per_token(self) -> float:
        return self.bytes / self.tokens if self.tokens else 0.0


class SplitView:
    """A model-like view of (cfg, k, codec): ``forward(idx (B, T)) -> logits (B, T, vocab)`` runs the
    edge layers, encodes and decodes each sequence's boundary activations with the real codec,
    then the server layers at ``server_bits``; ``model.evaluate`` functions take it unchanged.
    ``k == depth`` runs everything locally (the head at the edge); ``k == 0`` sends ids (1 byte each)."""

    def __init__(self, m: ElasticGPT, cfg, k: int, mode: str = "fp32", server_bits: int = 32,
                 budget_bytes_per_token: float | None = None, threshold_sigmas: float | None = None):
        _check_mode(mode)
        self.m, self.cfg = m, m.validate(cfg)
        self.k = _check_k(k, self.cfg.depth)
        self.mode, self.server_bits = mode, server_bits
        self.budget, self.tau = budget_bytes_per_token, threshold_sigmas
        if not m._plans:
            m.prepare()
        self.edge_plan = m._plans[self.cfg][:self.k]
        self.server_plan = server_plan(m, self.cfg, self.k, server_bits)
        self.stats = WireStats()

    @property
    def config(self):
        return self.m.config

    @torch.no_grad()
    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        m, B, T = self.m, idx.shape[0], idx.shape[1]
        if self.k == 0:
            self.stats.bytes += B * T * (1 if m.config.vocab_size <= 256 else 2)
            self.stats.tokens += B * T
            return m._head(_run_plan(m, m._embed(idx, 0), self.server_plan, None, 0))
        x = self._edge(idx)  # (B, T, d)
        if self.k == self.cfg.depth:
            return m._head(x)
        d = x.shape[-1]
        rows = []
        for b in range(B):
            t0 = time.perf_counter()
            payload = self._encode(x[b].numpy())
            t1 = time.perf_counter()
            rows.append(torch.from_numpy(decode(payload, self.mode, T, d)))
            self.stats.encode_s += t1 - t0
            self.stats.decode_s += time.perf_counter() - t1
            self.stats.bytes += len(payload)
            self.stats.messages += 1
            if self.mode == "tabq":
                w, c = np.unique(tabq_bit_widths(payload, T), return_counts=True)
                for wi, ci in zip(w.tolist(), c.tolist()):
                    self.stats.tabq_bits[wi] += ci
        self.stats.tokens += B * T
        return m._head(_run_plan(m, torch.stack(rows), self.server_plan, None, 0))

    @torch.no_grad()
    def _edge(self, idx: torch.Tensor) -> torch.Tensor:
        """Edge half without a cache: embedding + ``plan[:k]`` -> (B, T, d)."""
        return _run_plan(self.m, self.m._embed(idx, 0), self.edge_plan, None, 0)

    def _encode(self, x: np.ndarray) -> bytes:
        """One sequence's boundary activations (T, d) -> payload."""
        return encode(x, self.mode, budget_bytes_per_token=self.budget, threshold_sigmas=self.tau)

    __call__ = forward


# ---- generation ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SplitGeneration:
    """Result of ``split_generate``: the tokens, the bytes sent to the server per step (0 when local;
    header included for tabq) and how many steps re-sent the whole context."""

    tokens: list[int]
    wire_bytes: list[int]
    resends: int


@torch.no_grad()
def split_generate(m: ElasticGPT, prompt: str | torch.Tensor, n_tokens: int,
                   schedule: Callable[[int], tuple], *, server_bits: int = 32,
                   budget_bytes_per_token: float | None = None) -> SplitGeneration:
    """Greedy generation (temperature 0) with an ``EdgeSide`` and a ``ServerSide`` in-process.

    ``schedule(i)`` gives ``(cfg, k, mode)`` for generated token ``i`` (token 0 comes from the
    prompt's prefill); it may change the split every token: the edge repairs its cache and re-sends
    the whole context, the server re-prefills (module docstring). Activations travel through the
    real codec (``encode`` → bytes → ``decode``). The context is handled as ``ElasticGPT.stream``
    does (prompt cropped to ``block_size - 1``; when full, it restarts from its last half), so with
    the fp32 codec and ``server_bits`` equal to the configuration's bits the tokens equal
    ``m.stream(prompt, n_tokens, temperature=0)`` under the same configurations.

    TAB-Q at one token per message cannot share its budget between tokens: unused budget is kept
    as a credit of at most ``16 ·`` budget bytes for later messages (the long-run average stays
    within the budget).
    """
    from model.data import encode as encode_text

    ids = (torch.as_tensor(encode_text(prompt), dtype=torch.long) if isinstance(prompt, str)
           else torch.as_tensor(prompt).long().flatten())
    if ids.numel() == 0:
        ids = torch.tensor([ord("\n")])
    T = m.config.block_size
    ids = ids[-(T - 1):]
    edge, server = EdgeSide(m, T), ServerSide(m, server_bits, T)
    tokens, wire, history = [], [], ids.tolist()
    resends, credit = 0, 0.0
    step_ids = ids
    for i in range(n_tokens):
        cfg, k, mode = schedule(i)
        msg = edge.send(step_ids, cfg, k)
        if msg.local:
            logits = m._head(msg.x[None])[0]
            wire.append(0)
        elif msg.k == 0:
            logits = server.run(msg.ids, msg.pos, msg.cfg, 0)
            wire.append(msg.t)
        else:
            budget = None
            if mode == "tabq":
                base = default_budget(m.config.n_embd) if budget_bytes_per_token is None else budget_bytes_per_token
                budget = base + credit / msg.t
            payload = encode(msg.x.numpy(), mode, budget_bytes_per_token=budget)
            if mode == "tabq":
                used = len(payload) - len(TABQ_HEADER)
                credit = min(credit + base * msg.t - used, 16 * base)  # >= 0: used <= base·t + credit
            x = torch.from_numpy(decode(payload, mode, msg.t, m.config.n_embd))
            logits = server.run(x, msg.pos, msg.cfg, msg.k)
            wire.append(len(payload))
        resends += int(msg.pos == 0 and i > 0 and not msg.local)
        nxt = int(logits[-1].argmax())
        tokens.append(nxt)
        history.append(nxt)
        if edge.length >= T:  # as ElasticGPT.stream: restart from the last half of the context
            edge.reset()
            step_ids = torch.tensor(history[-(T // 2):])
        else:
            step_ids = torch.tensor([nxt])
    return SplitGeneration(tokens, wire, resends)


# ---- measured table ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SplitRecord:
    """One measured (configuration, split point, codec, budget): see benchmarks/split_quality.py."""

    depth: int
    heads: float
    bits: int
    k: int
    mode: str
    budget: float | None  # tabq budget in bytes per token; None for the fixed codecs
    server_bits: int
    bytes_per_token: float  # measured on the wire (tabq: actual payload bytes, header included)
    val_loss: float  # nats per byte, held-out test windows
    mc_accuracy: float
    encode_us: float  # median µs per token, one-token (decode-step) message
    decode_us: float


@dataclass(frozen=True)
class SplitTable:
    """The measured records of one benchmark run, keyed by ``(depth, heads, bits, k, mode, budget)``."""

    records: dict
    default_budget: float  # the tabq budget that ``get(..., budget=None)`` means
    created: str = ""
    host: str = ""

    def get(self, cfg, k: int, mode: str, budget: float | None = None) -> SplitRecord:
        """The record of ``cfg`` (a ``Config`` or (depth, heads, bits)) at split ``k`` with ``mode`` (and
        ``budget`` bytes/token for tabq; None: the run's default budget).

        Raises:
            KeyError: not measured (the message names the key).
        """
        depth, heads, bits = cfg[0], cfg[1], cfg[2]
        if mode != "tabq":
            budget = None
        elif budget is None:
            budget = self.default_budget
        key = (int(depth), float(heads), int(bits), int(k), mode, None if budget is None else float(budget))
        if key not in self.records:
            raise KeyError(f"no measured split record for (depth, heads, bits, k, mode, budget) = {key}")
        return self.records[key]


def load_split_table(path: str | Path = DEFAULT_RESULTS) -> SplitTable:
    """The measured records of ``benchmarks/results/split_quality.json`` (plain JSON, nothing unpickled)."""
    data = json.loads(Path(path).read_text())
    names = SplitRecord.__dataclass_fields__
    records = {}
    for r in data["records"]:
        rec = SplitRecord(**{f: r[f] for f in names})
        records[(rec.depth, float(rec.heads), rec.bits, rec.k, rec.mode,
                 None if rec.budget is None else float(rec.budget))] = rec
    return SplitTable(records, float(data["method"]["default_budget"]), data.get("date", ""),
                      data.get("host", {}).get("cpu", ""))
