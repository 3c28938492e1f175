"""Split computing, model side (model/split.py): codecs, strict decoding, the halves, exact generation."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

import model as M
from model import split as S
from model.model import _block_forward

D = 256


@pytest.fixture(scope="module")
def m():
    return M.load_default()


@pytest.fixture(scope="module")
def acts(m) -> np.ndarray:
    """Real boundary activations (256, 256): held-out text through the first 3 blocks of the full model."""
    from model.data import load_corpus

    idx = torch.from_numpy(load_corpus().test[:256].astype(np.int64))[None]
    with torch.no_grad():
        x = m._embed(idx, 0)
        for p in m._plans[m.full_config()][:3]:
            x = _block_forward(x, p, m.config.head_dim, None, 0)
    return x[0].numpy().copy()


def _random_acts(t: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((t, d)) * rng.uniform(0.1, 5.0, (t, 1)) + rng.normal(0, 1, (t, 1))).astype(np.float32)


# ---- codecs -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", S.CODECS)
def test_roundtrip_shapes_and_sizes(mode, acts):
    for t in (0, 1, 7, 256):
        x = acts[:t]
        p = S.encode(x, mode)
        y = S.decode(p, mode, t, D)
        assert y.shape == (t, D) and y.dtype == np.float32
        if mode == "tabq":
            assert len(p) <= S.payload_bytes(mode, t, D)
        else:
            assert len(p) == S.payload_bytes(mode, t, D) == t * S.bytes_per_token(mode, D)


def test_fp32_exact_fp16_within_eps(acts):
    x = np.concatenate([acts, _random_acts(16, D) * 1e-6])  # subnormal-range values too
    assert np.array_equal(S.decode(S.encode(x, "fp32"), "fp32", *x.shape), x)
    y = S.decode(S.encode(x, "fp16"), "fp16", *x.shape)
    eps16 = float(np.finfo(np.float16).eps)  # 2^-10: round-to-nearest errs by at most half of it
    assert np.all(np.abs(y - x) <= np.abs(x) * eps16 / 2 + 2.0 ** -25)


@pytest.mark.parametrize("mode,bits", [("int8", 8), ("int4", 4), ("int2", 2)])
def test_uniform_error_at_most_half_a_step(mode, bits, acts):
    x = np.concatenate([acts, _random_acts(32, D, 1), np.full((1, D), 3.25, np.float32)])  # + a constant token
    t = len(x)
    p = S.encode(x, mode)
    scale = np.frombuffer(p, "<f2", t, 0).astype(np.float32)
    y = S.decode(p, mode, t, D)
    err = np.abs(y - x).max(1)
    assert np.all(err <= scale / 2 * (1 + 1e-3) + 1e-6), float((err / scale).max())
    # a step is the token's range over 2^bits - 1 levels, rounded up to fp16 (not a coarser one)
    rng = (x.max(1) - x.min(1)) / (2 ** bits - 1)
    assert np.all(scale <= rng * 1.002 + 1e-7)


def test_tabq_keeps_outliers_exact_and_respects_budget():
    x = _random_acts(64, D, 2)
    rng = np.random.default_rng(3)
    rows, cols = np.arange(64), rng.integers(0, D, 64)
    x[rows, cols] = 40.0 * np.sign(rng.standard_normal(64)) * (1 + rng.random(64))  # one planted outlier each
    for budget in (S.min_tabq_budget(D) + 8, 100, 141, 196, 300):
        p = S.encode(x, "tabq", budget_bytes_per_token=budget)
        assert len(p) <= len(S.TABQ_HEADER) + math.floor(budget * 64)
        y = S.decode(p, "tabq", 64, D)
        assert np.array_equal(y[rows, cols], x[rows, cols].astype(np.float16).astype(np.float32))
    with pytest.raises(S.CodecError, match="below the minimum"):
        S.encode(x, "tabq", budget_bytes_per_token=S.min_tabq_budget(D) - 1)
    # at the minimum: every token 2-bit, no outliers
    p = S.encode(x, "tabq", budget_bytes_per_token=S.min_tabq_budget(D))
    assert set(S.tabq_bit_widths(p, 64).tolist()) == {2} and len(p) == 4 + 64 * S.min_tabq_budget(D)


def test_tabq_adapts_bits_and_beats_uniform_at_equal_bytes(acts):
    t = len(acts)
    sig2 = (1.4826 * np.median(np.abs(acts - np.median(acts, 1, keepdims=True)), 1)) ** 2

    def rel_err(mode, **kw):
        p = S.encode(acts, mode, **kw)
        return (((S.decode(p, mode, t, D) - acts) ** 2).mean(1) / sig2).mean(), p

    e4, _ = rel_err("int4")
    e2, p2 = rel_err("int2")
    eq4, p = rel_err("tabq", budget_bytes_per_token=len(S.encode(acts, "int4")) / t)
    widths = set(S.tabq_bit_widths(p, t).tolist())
    assert len(widths) > 1, widths  # more than one bit-width on real activations
    assert eq4 < e4  # at int4's bytes
    e_min, pm = rel_err("tabq", budget_bytes_per_token=S.min_tabq_budget(D))
    assert len(pm) <= len(p2) + t + 4 and e_min < 0.5 * e2  # int2's bytes + 1/token: TS + clipping win
    e_def, _ = rel_err("tabq")  # default budget (141 B) vs int4 (132 B): a clearly smaller error
    assert e_def < 0.7 * e4
    # one token per message (decode step) at the default budget: all 4-bit tokens, no worse than int4
    one = np.concatenate([S.decode(S.encode(acts[i:i + 1], "tabq"), "tabq", 1, D) for i in range(0, t, 4)])
    e_one = (((one - acts[::4]) ** 2).mean(1) / sig2[::4]).mean()
    assert e_one < 1.2 * e4


def test_encode_rejects_bad_input():
    x = _random_acts(4, D)
    for bad in (x[0], x.astype(np.int32), np.where(x > 1, np.nan, x), x * 1e6):
        with pytest.raises(S.CodecError):
            S.encode(bad, "int8")
    assert len(S.encode(x * 1e6, "fp32")) == x.nbytes  # fp32 takes any finite value
    with pytest.raises(S.CodecError, match="unknown codec"):
        S.encode(x, "int3")


# ---- strict decoding ----------------------------------------------------------------------------------
def _valid_payloads(acts) -> dict[str, bytes]:
    return {mode: S.encode(acts[:16], mode, budget_bytes_per_token=100 if mode == "tabq" else None)
            for mode in S.CODECS}


def test_decode_rejects_truncated_oversized_and_garbled(acts):
    t = 16
    for mode, p in _valid_payloads(acts).items():
        for bad in (p[:-1], p + b"\0", b"", p[:len(p) // 2]):
            with pytest.raises(S.CodecError):
                S.decode(bad, mode, t, D)
        with pytest.raises(S.CodecError):
            S.decode(p, mode, t + 1, D)
    p = bytearray(_valid_payloads(acts)["tabq"])
    table_at, scale_at = 4, 4 + t
    n_out = int((np.frombuffer(bytes(p), np.uint8, t, 4) & 63).sum())
    assert n_out > 0
    cols_at = len(p) - 4 * n_out
    garbles = {
        "magic": lambda q: q.__setitem__(0, ord("X")),
        "bit-width code": lambda q: q.__setitem__(table_at, 0xC0 | (q[table_at] & 63)),
        "outlier count": lambda q: q.__setitem__(table_at, (q[table_at] & 0xC0) | 63),
        "scale": lambda q: q.__setitem__(slice(scale_at, scale_at + 2), np.float16(np.nan).tobytes()),
        "negative scale": lambda q: q.__setitem__(slice(scale_at, scale_at + 2), np.float16(-1).tobytes()),
        "column": lambda q: q.__setitem__(slice(cols_at, cols_at + 2), np.uint16(D).tobytes()),
        "value": lambda q: q.__setitem__(slice(len(q) - 2, len(q)), np.float16(np.inf).tobytes()),
    }
    for what, garble in garbles.items():
        q = bytearray(p)
        garble(q)
        with pytest.raises(S.CodecError):
            S.decode(bytes(q), "tabq", t, D)
        assert what
    # columns must increase within a token: duplicate the first outlier's column into its second
    counts = np.frombuffer(bytes(p), np.uint8, t, 4) & 63
    if counts.max() >= 2:
        first = int(np.argmax(counts >= 2))
        at = cols_at + 2 * int(counts[:first].sum())
        q = bytearray(p)
        q[at + 2:at + 4] = q[at:at + 2]
        with pytest.raises(S.CodecError, match="increase"):
            S.decode(bytes(q), "tabq", t, D)
    # non-finite fp16/fp32 values, non-zero padding bits (width not a multiple of the codes per byte)
    with pytest.raises(S.CodecError):
        S.decode(np.full((2, 8), np.nan, "<f2").tobytes(), "fp16", 2, 8)
    q = bytearray(S.encode(_random_acts(2, 6), "int2"))
    q[-1] |= 0x01
    with pytest.raises(S.CodecError, match="padding"):
        S.decode(bytes(q), "int2", 2, 6)
    for t_, d_, payload in ((-1, D, b""), (1, 0, b""), (True, D, b""), (1.0, D, b"")):
        with pytest.raises(S.CodecError):
            S.decode(payload, "fp16", t_, d_)
    with pytest.raises(S.CodecError):
        S.decode("text", "fp16", 1, D)


def test_decode_huge_sizes_fail_fast_without_allocating():
    for mode in S.CODECS:  # a caller bug or a forged size: rejected by the length check, nothing allocated
        with pytest.raises(S.CodecError):
            S.decode(b"TQ\x01\x00" + bytes(64), mode, 10 ** 12, 65536)


def test_decode_1000_random_byte_strings_only_codec_error(acts):
    rng = np.random.default_rng(0)
    valid = _valid_payloads(acts)
    for i in range(1000):
        mode = S.CODECS[i % len(S.CODECS)]
        t, d = int(rng.integers(0, 20)), int(rng.choice([1, 3, 8, 256]))
        if i % 3 == 0:  # fully random
            payload = rng.integers(0, 256, int(rng.integers(0, 600)), dtype=np.uint8).tobytes()
        elif i % 3 == 1:  # right length, random content
            payload = rng.integers(0, 256, S.payload_bytes(mode, t, d) if mode != "tabq"
                                   else 4 + int(rng.integers(0, 200)), dtype=np.uint8).tobytes()
            if mode == "tabq":
                payload = S.TABQ_HEADER + payload[4:]
        else:  # a valid payload with a few flipped bytes
            q = bytearray(valid[mode])
            for j in rng.integers(0, len(q), int(rng.integers(1, 4))):
                q[j] = int(rng.integers(0, 256))
            payload, t, d = bytes(q), 16, D
        try:
            y = S.decode(payload, mode, t, d)
        except S.CodecError:
            continue
        assert y.shape == (t, d) and np.isfinite(y).all()


# ---- the halves ------------------------------------------------------------------------------------------
def test_splitview_fp32_equals_forward_for_every_k(m):
    idx = torch.randint(0, 256, (2, 48), generator=torch.Generator().manual_seed(0))
    for cfg in (m.full_config(), m.validate((6, 1.0, 8)), m.validate((4, 0.5, 4))):
        m.set_config(cfg)
        ref = m.forward(idx)
        for k in range(cfg.depth + 1):
            view = S.SplitView(m, cfg, k, "fp32", server_bits=cfg.bits)
            assert view.config is m.config
            assert torch.allclose(view.forward(idx), ref, atol=1e-5, rtol=1e-5), (m.name(cfg), k)
            expect = 0 if k == cfg.depth else (1 if k == 0 else 4 * D)
            assert view.stats.bytes_per_token == expect


def test_splitview_works_with_evaluate_functions(m):
    from model.evaluate import MCItem, heldout_loss, mc_accuracy

    data = np.frombuffer(b"In the beginning God created the heaven and the earth. " * 12, np.uint8)
    m.set_config(m.full_config())
    ref = heldout_loss(m, data, windows=2)
    assert heldout_loss(S.SplitView(m, m.full_config(), 3, "fp32"), data, windows=2) == pytest.approx(ref, abs=1e-5)
    lossy = heldout_loss(S.SplitView(m, m.full_config(), 3, "int2"), data, windows=2)
    assert lossy > ref + 0.01  # the codec really is in the path
    items = [MCItem(b"And God said, Let there be ", (b"light", b"sheep", b"bread", b"waters"), 0)]
    assert mc_accuracy(S.SplitView(m, m.full_config(), 2, "tabq"), items)["pmi"] in (0.0, 1.0)


def test_edge_repairs_its_cache_and_gives_the_whole_boundary(m):
    cfg = m.full_config()
    idx = torch.randint(0, 256, (30,), generator=torch.Generator().manual_seed(1))
    edge = S.EdgeSide(m)
    assert edge.run(idx[:20], cfg, 2).shape == (20, D)
    edge.run(idx[20:25], m.validate((4, 0.5, 32)), 4)  # config and split change: repaired
    edge.run(idx[25:], cfg, 5)
    with torch.no_grad():
        x = m._embed(idx[None], 0)
        for p in m._plans[cfg][:5]:
            x = _block_forward(x, p, m.config.head_dim, None, 0)
    assert torch.allclose(edge.boundary(), x[0], atol=1e-5)
    assert edge.run(idx[:1], cfg, 0) is None  # k == 0: the caller sends ids


def test_server_validates_pos_and_split_changes(m):
    cfg = m.full_config()
    edge, server = S.EdgeSide(m), S.ServerSide(m)
    ids = torch.arange(65, 75)
    x = edge.run(ids, cfg, 2)
    assert server.run(x, 0, cfg, 2).shape == (10, 256)
    x1 = edge.run(torch.tensor([80]), cfg, 2)
    with pytest.raises(ValueError, match="does not continue"):
        server.run(x1, 5, cfg, 2)
    with pytest.raises(ValueError, match="re-send the whole context"):
        server.run(x1, 10, cfg, 3)
    with pytest.raises(ValueError, match="NaN"):
        server.run(torch.full((1, D), float("nan")), 10, cfg, 2)
    with pytest.raises(ValueError, match="token ids"):
        server.run(torch.tensor([300]), 0, cfg, 0)
    with pytest.raises(ValueError, match="split point"):
        server.run(x1, 0, cfg, 7)
    server.run(x1, 10, cfg, 2)
    assert server.length == 11
    # k == 0: ids; after a change the edge's message carries the whole context from pos 0
    msg = edge.send(torch.tensor([81]), cfg, 0)
    assert msg.pos == 0 and msg.ids.tolist() == edge.ids[:12].tolist()
    assert server.run(msg.ids, msg.pos, cfg, 0).shape == (12, 256)


def _reference_stream(m, prompt: str, n: int, cfg_of) -> list[int]:
    gen = m.stream(prompt, n, temperature=0)
    out = []
    for i in range(n):
        m.set_config(cfg_of(i))
        out.append(next(gen))
    return out


def test_split_generation_with_random_switches_equals_unsplit(m):
    """fp32 codec, server_bits 32, bits 32: token for token the unsplit model, whatever the schedule."""
    prompt, n = "And the LORD spake unto Moses, saying,", 48
    cfgs = [c for c in m.configs() if c.bits == 32]
    for seed in range(2):
        rng = random.Random(seed)
        plan, cfg, k = [], m.full_config(), 3
        for i in range(n):
            if i == 0 or rng.random() < 0.25:
                cfg = rng.choice(cfgs)
            if i == 0 or rng.random() < 0.35 or k > cfg.depth:
                k = rng.randint(0, cfg.depth)
            plan.append((cfg, k, "fp32"))
        g = S.split_generate(m, prompt, n, plan.__getitem__)
        assert g.resends >= 5  # the schedule really moved the split
        assert g.tokens == _reference_stream(m, prompt, n, lambda i, plan=plan: plan[i][0])


def test_split_generation_all_local_and_long_context(m):
    cfg = m.validate((4, 0.5, 8))
    g = S.split_generate(m, "In the beginning", 30, lambda i: (cfg, cfg.depth, "int8"), server_bits=8)
    assert g.tokens == _reference_stream(m, "In the beginning", 30, lambda i: cfg) and sum(g.wire_bytes) == 0
    # past the context (block_size 256): both sides restart from the last half, as ElasticGPT.stream
    full = m.full_config()
    prompt = "a" * 230
    g = S.split_generate(m, prompt, 40, lambda i: (full, 2 if i < 20 else 4, "fp32"))
    assert g.tokens == _reference_stream(m, prompt, 40, lambda i: full)


def test_split_generation_tabq_stays_within_budget(m):
    full = m.full_config()
    prompt, n = "And God said", 40
    g = S.split_generate(m, prompt, n, lambda i: (full, 2, "tabq"), budget_bytes_per_token=100)
    tokens_sent = len(prompt) + n - 1  # the prompt, then each generated token but the last
    assert sum(g.wire_bytes) - len(S.TABQ_HEADER) * n <= 100 * tokens_sent  # unused bytes carry over, no more
    assert len(set(g.wire_bytes[1:])) > 1  # the carried credit buys 4-bit steps now and then


def test_split_table_from_the_benchmark_results(m):
    table = S.load_split_table()
    assert table.created == "2026-12-01"
    full = m.full_config()
    local = table.get(full, full.depth, "fp16")
    for k in range(full.depth + 1):
        for mode in ("fp32", "fp16", "int8", "tabq"):
            r = table.get(full, k, mode)
            assert r.val_loss > 0 and 0 <= r.mc_accuracy <= 1
            if 0 < k < full.depth:
                assert r.bytes_per_token == pytest.approx(S.bytes_per_token(mode, D), rel=0.05)
    assert table.get(full, 3, "fp32").val_loss == pytest.approx(local.val_loss, abs=1e-4)  # exact split
    assert table.get(full, 3, "int2").val_loss > table.get(full, 3, "int8").val_loss
    with pytest.raises(KeyError):
        table.get(full, 3, "tabq", budget=123.0)
