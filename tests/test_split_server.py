"""model.split_server / model.split_client: the split-computing transport, end to end over loopback.

Servers run as subprocesses (``python -m model.split_server --port 0``) with a temporary token
file; the in-process ``model.split`` halves are the reference for every token.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch

from model import load_default, split
from model.split_client import (
    LinkDown,
    LinkShaper,
    SplitClient,
    SplitServerError,
    pack_message,
    unpack_message,
)

REPO = Path(__file__).resolve().parent.parent
TOKEN = "t0ken-" + "3f9a" * 8
PROMPT = torch.tensor(list(b"In the beginning God created the heaven"))


# ---- helpers -----------------------------------------------------------------------------------
class Server:
    def __init__(self, proc: subprocess.Popen, url: str, log: Path):
        self.proc, self.url, self.log = proc, url, log

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def start_server(tmp: Path, token_file: Path, *extra: str) -> Server:
    log = tmp / f"server-{time.monotonic_ns()}.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "model.split_server", "--port", "0", "--token-file", str(token_file),
             "--threads", "1", *extra],
            cwd=REPO, stdout=subprocess.PIPE, stderr=err, env={**os.environ, "OMP_NUM_THREADS": "1"})
    watchdog = threading.Timer(90, proc.kill)
    watchdog.start()
    line = proc.stdout.readline().decode()
    watchdog.cancel()
    if not line.startswith("listening on "):
        proc.kill()
        raise AssertionError(f"server did not start: {line!r}\n{log.read_text()}")
    return Server(proc, line.split()[-1], log)


def raw_connect(url: str, token: str | None = TOKEN, **kw):
    from websockets.sync.client import connect

    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return connect(url, additional_headers=headers, compression=None, proxy=None, max_size=None,
                   open_timeout=10, **kw).__enter__()


def ask(ws, message) -> dict:
    ws.send(message)
    header, _ = unpack_message(ws.recv(timeout=10))
    return header


def payload_of(x: torch.Tensor | None, ids: torch.Tensor | None, mode: str | None) -> bytes:
    if x is None:
        return ids.numpy().astype(np.uint8).tobytes()
    return split.encode(x.numpy(), mode)


def reference_logits(server_side, payload: bytes, pos: int, cfg: str, k: int, mode: str | None, t: int):
    x = np.frombuffer(payload, np.uint8).astype(np.int64) if k == 0 else split.decode(payload, mode, t, 256)
    return server_side.run(x, pos, cfg, k)[-1].numpy()


@pytest.fixture(scope="module")
def tmp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("split")


@pytest.fixture(scope="module")
def token_file(tmp) -> Path:
    p = tmp / "token"
    p.write_text(TOKEN + "\n")
    p.chmod(0o600)
    return p


@pytest.fixture(scope="module")
def m():
    return load_default()


@pytest.fixture(scope="module")
def server(tmp, token_file):
    s = start_server(tmp, token_file, "--max-sessions", "8")
    yield s
    s.stop()


@pytest.fixture
def bystander(server, m):
    """A second session that keeps decoding while another connection misbehaves; ``check()``
    steps it once more and compares the token with the in-process halves."""

    class Bystander:
        def __init__(self):
            self.client = SplitClient(server.url, TOKEN, timeout_s=10)
            self.client.open("L4-H100-fp32")
            self.edge, self.ref = split.EdgeSide(m), split.ServerSide(m)
            self.next_ids = PROMPT
            self.check()

        def check(self) -> None:
            msg = self.edge.send(self.next_ids, "L4-H100-fp32", 1)
            payload = payload_of(msg.x, msg.ids, "int8")
            tok, _, _ = self.client.step(payload, "L4-H100-fp32", 1, "int8", msg.pos, msg.t)
            ref = int(np.argmax(reference_logits(self.ref, payload, msg.pos, "L4-H100-fp32", 1, "int8", msg.t)))
            assert tok == ref
            self.next_ids = torch.tensor([tok])

    b = Bystander()
    yield b
    b.client.close()


# ---- round trip ---------------------------------------------------------------------------------
def test_help_exits_zero() -> None:
    r = subprocess.run([sys.executable, "-m", "model.split_server", "--help"], cwd=REPO, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and "--token-file" in r.stdout and "--tls-cert" in r.stdout


@pytest.mark.parametrize("cfg,k,mode", [("L6-H100-fp32", 2, "fp32"), ("L4-H050-int8", 1, "tabq"),
                                        ("L6-H100-int4", 3, "int4"), ("L3-H100-fp32", 0, None)])
def test_round_trip_matches_in_process(server, m, cfg, k, mode) -> None:
    edge, ref = split.EdgeSide(m), split.ServerSide(m)
    with SplitClient(server.url, TOKEN, timeout_s=10) as c:
        info = c.open(cfg)
        assert info["n_embd"] == 256 and info["server_bits"] == 32 and mode in (*info["codecs"], None)
        ids = PROMPT
        for i in range(5):
            msg = edge.send(ids, cfg, k)
            assert msg.pos == (0 if i == 0 else len(PROMPT) + i - 1)
            payload = payload_of(msg.x, msg.ids, mode)
            tok, logits, timing = c.step(payload, cfg, k, mode, msg.pos, msg.t, want_logits=True)
            want = reference_logits(ref, payload, msg.pos, cfg, k, mode, msg.t)
            assert tok == int(np.argmax(want))
            np.testing.assert_allclose(logits, want, atol=0.05, rtol=1e-2)  # fp16 on the wire
            for key in ("wire_ms", "server_ms", "compute_ms", "overhead_ms", "total_ms", "bytes_up", "bytes_down"):
                assert timing[key] >= 0
            ids = torch.tensor([tok])
        # a split change: the edge re-sends the whole context from pos 0, the server re-prefills
        k2 = 1 if k != 1 else 0
        msg = edge.send(ids, cfg, k2)
        assert msg.pos == 0 and msg.t == len(PROMPT) + 5
        payload = payload_of(msg.x, msg.ids, "fp16")
        tok, _, _ = c.step(payload, cfg, k2, "fp16" if k2 else None, 0, msg.t)
        assert tok == int(np.argmax(reference_logits(ref, payload, 0, cfg, k2, "fp16" if k2 else None, msg.t)))
        # continuing at the old split without re-sending the context is refused, with where to restart
        with pytest.raises(SplitServerError) as e:
            if k2:
                c.step(bytes([tok]), cfg, 0, None, msg.t, 1)
            else:
                c.step(np.zeros((1, 256), np.float32), cfg, 1, "fp32", msg.t, 1)
        assert e.value.code == "pos_mismatch" and e.value.reply["expect_pos"] == 0


def test_client_encodes_float_activations(server, m) -> None:
    edge = split.EdgeSide(m)
    x = edge.run(PROMPT, "L6-H100-fp32", 2)
    with SplitClient(server.url, TOKEN) as c:
        c.open()
        tok_t, _, t1 = c.step(x, "L6-H100-fp32", 2, "tabq", 0, len(PROMPT), budget_bytes_per_token=200)
        tok_b, _, t2 = c.step(split.encode(x.numpy(), "tabq", budget_bytes_per_token=200), "L6-H100-fp32", 2,
                              "tabq", 0, len(PROMPT), budget_bytes_per_token=200)
    assert tok_t == tok_b and t1["bytes_up"] == t2["bytes_up"]


# ---- authentication ---------------------------------------------------------------------------
def test_missing_or_wrong_token_is_rejected_at_the_handshake(server) -> None:
    from websockets.exceptions import InvalidStatus

    with pytest.raises(SplitServerError) as e:
        SplitClient(server.url, "x" * 40).open()
    assert e.value.code == "unauthorized"
    with pytest.raises(SplitServerError):
        SplitClient(server.url, TOKEN[:-1] + "0").open()  # same length, last byte differs
    with pytest.raises(InvalidStatus) as e2:
        raw_connect(server.url, token=None)
    assert e2.value.response.status_code == 401
    with pytest.raises(ValueError):
        SplitClient(server.url, "short")
    with SplitClient(server.url, TOKEN) as c:  # still serving
        assert c.open()["session"]


# ---- malformed messages ----------------------------------------------------------------------------
def _cases(sid: str):
    base = {"v": 1, "op": "step", "session": sid, "cfg": "L6-H100-fp32", "k": 2, "pos": 0, "t": 4,
            "dtype": "float32", "mode": "fp16", "d": 256}
    good = np.zeros((4, 256), np.float32)
    fp16 = split.encode(good, "fp16")

    def step(payload=fp16, drop=(), **change):
        h = {key: v for key, v in {**base, **change}.items() if key not in drop}
        return pack_message(h, payload)

    nan16 = bytearray(fp16)
    nan16[0:2] = np.array([np.nan], "<f2").tobytes()
    int8 = bytearray(split.encode(good + 1, "int8"))
    int8[0:2] = np.array([np.inf], "<f2").tobytes()  # a scale of inf
    tabq = bytearray(split.encode(good + np.arange(256, dtype=np.float32), "tabq"))
    tabq[0:2] = b"XX"  # bad magic
    ids_step = {"k": 0, "dtype": "uint8"}
    return [
        ("empty message", b"", "bad_frame"),
        ("truncated length prefix", b"\x00\x00", "bad_frame"),
        ("header length 0", b"\x00\x00\x00\x00{}", "bad_frame"),
        ("header over 4 KiB", (5000).to_bytes(4, "big") + b" " * 5000, "bad_frame"),
        ("truncated header", step()[:20], "bad_frame"),
        ("header not JSON", (3).to_bytes(4, "big") + b"{x}", "bad_frame"),
        ("header not UTF-8", (2).to_bytes(4, "big") + b"\xff\xfe", "bad_frame"),
        ("header a JSON array", (2).to_bytes(4, "big") + b"[]", "bad_frame"),
        ("NaN in header", (10).to_bytes(4, "big") + b'{"v": NaN}', "bad_frame"),
        ("text frame", "hello", "bad_frame"),
        ("no version", step(drop=("v",)), "bad_version"),
        ("version 2", step(v=2), "bad_version"),
        ("version as string", step(v="1"), "bad_version"),
        ("version as bool", step(v=True), "bad_version"),
        ("unknown op", step(op="explode"), "bad_op"),
        ("no op", step(drop=("op",)), "bad_op"),
        ("unknown field", step(extra=1), "bad_field"),
        ("missing t", step(drop=("t",)), "bad_field"),
        ("unknown cfg", step(cfg="L5-H100-fp32"), "bad_field"),
        ("cfg not canonical", step(cfg="l6-h100-fp32"), "bad_field"),
        ("cfg an int", step(cfg=0), "bad_field"),
        ("k == depth", step(k=6), "bad_field"),
        ("k == depth of L4", step(cfg="L4-H100-fp32", k=4), "bad_field"),
        ("k negative", step(k=-1), "bad_field"),
        ("k a float", step(k=2.0), "bad_field"),
        ("k a bool", step(k=True), "bad_field"),
        ("pos + t past the context", step(pos=253), "bad_field"),
        ("pos negative", step(pos=-1), "bad_field"),
        ("pos a string", step(pos="0"), "bad_field"),
        ("t 0", step(t=0, payload=b""), "bad_field"),
        ("t past the context", step(t=257), "bad_field"),
        ("unknown codec", step(mode="bogus"), "bad_field"),
        ("no codec", step(drop=("mode",)), "bad_field"),
        ("wrong dtype for activations", step(dtype="float16"), "bad_field"),
        ("wrong dtype for ids", step(payload=b"abcd", k=0, dtype="float32", drop=("mode", "d")), "bad_field"),
        ("codec with ids", step(payload=b"abcd", **ids_step, drop=("d",)), "bad_field"),
        ("wrong width d", step(d=128), "bad_field"),
        ("budget with fp16", step(budget=200), "bad_field"),
        ("tabq budget below the minimum", step(mode="tabq", budget=1, payload=bytes(tabq)), "bad_field"),
        ("logits not a bool", step(logits="yes"), "bad_field"),
        ("negative seq", step(seq=-3), "bad_field"),
        ("payload for t=3", step(payload=fp16[:3 * 512]), "bad_payload"),
        ("payload truncated by 10 bytes", step()[:-10], "bad_payload"),
        ("fp32-sized payload for fp16", step(payload=split.encode(good, "fp32")), "bad_payload"),
        ("NaN activation", step(payload=bytes(nan16)), "bad_payload"),
        ("int8 scale inf", step(mode="int8", payload=bytes(int8)), "bad_payload"),
        ("tabq bad magic", step(mode="tabq", payload=bytes(tabq)), "bad_payload"),
        ("tabq over the largest size", step(mode="tabq", payload=b"TQ\x01\x00" + b"\x08" * 4000), "bad_payload"),
        ("ids count differs from t", step(payload=b"abc", **ids_step, drop=("mode", "d")), "bad_payload"),
        ("unknown session", step(session="0" * 32), "unknown_session"),
        ("session not a string", step(session=5), "bad_field"),
        ("pos does not continue the cache", step(pos=5), "pos_mismatch"),
        ("open at other server bits", pack_message({"v": 1, "op": "open", "server_bits": 8}), "bad_field"),
        ("open with an unknown cfg", pack_message({"v": 1, "op": "open", "cfg": "big"}), "bad_field"),
        ("close an unknown session", pack_message({"v": 1, "op": "close", "session": "nope"}), "unknown_session"),
    ], step


def test_every_malformed_message_gets_an_error_reply_and_the_server_keeps_serving(server, bystander) -> None:
    ws = raw_connect(server.url)
    try:
        opened = ask(ws, pack_message({"v": 1, "op": "open", "seq": 1}))
        assert opened["ok"] is True and opened["seq"] == 1
        cases, step = _cases(opened["session"])
        for name, message, code in cases:
            reply = ask(ws, message)
            assert reply["ok"] is False and reply["code"] == code, (name, reply)
            assert isinstance(reply["error"], str) and reply["error"]
        bystander.check()
        ok = ask(ws, step(seq=7))  # the same connection and session still work
        assert ok["ok"] is True and ok["seq"] == 7 and ok["pos"] == 4 and 0 <= ok["token"] < 256
        assert ask(ws, step(pos=4, t=1, payload=split.encode(np.zeros((1, 256), np.float32), "fp16")))["pos"] == 5
    finally:
        ws.close()


def test_oversized_message_closes_only_its_connection(server, bystander) -> None:
    from websockets.exceptions import ConnectionClosed

    ws = raw_connect(server.url)
    limit = ask(ws, pack_message({"v": 1, "op": "open"}))["max_message_bytes"]
    ws.send(b"\x00" * (limit + 1))
    with pytest.raises(ConnectionClosed) as e:
        ws.recv(timeout=10)
    assert e.value.rcvd is not None and e.value.rcvd.code == 1009  # "message too big", before buffering
    bystander.check()
    with SplitClient(server.url, TOKEN) as c:  # the client refuses to send it at all
        c.open()
        with pytest.raises(ValueError, match="exceeds the server's limit"):
            c.step(b"\x00" * limit, "L6-H100-fp32", 2, "fp32", 0, 256)


def test_1000_random_byte_strings_are_rejected_with_bounded_memory(server, bystander) -> None:
    proc = psutil.Process(server.proc.pid)
    rss0 = proc.memory_info().rss
    rng = np.random.default_rng(0)
    ws = raw_connect(server.url)
    try:
        for i in range(1000):
            n = int(rng.choice([rng.integers(0, 64), rng.integers(64, 4096), rng.integers(4096, 200_000)],
                               p=[0.4, 0.4, 0.2]))
            data = rng.bytes(n)
            if i % 2 and n > 8:  # a plausible length prefix, so the bytes reach the JSON parser
                data = int(rng.integers(1, min(n - 4, 4096) + 1)).to_bytes(4, "big") + data[4:]
            reply = ask(ws, data)
            assert reply["ok"] is False and reply["code"] in ("bad_frame", "bad_version", "bad_op"), reply
    finally:
        ws.close()
    assert server.proc.poll() is None
    bystander.check()
    grown_mb = (proc.memory_info().rss - rss0) / 2 ** 20
    assert grown_mb < 200, f"server RSS grew {grown_mb:.0f} MB over 1000 malformed messages"


# ---- limits -------------------------------------------------------------------------------------------
def test_session_limit_and_idle_eviction(tmp, token_file) -> None:
    s = start_server(tmp, token_file, "--max-sessions", "2", "--idle-timeout-s", "1")
    clients = []
    try:
        for _ in range(2):
            clients.append(SplitClient(s.url, TOKEN))
            clients[-1].open()
        extra = SplitClient(s.url, TOKEN)
        with pytest.raises(SplitServerError) as e:
            extra.open()
        assert e.value.code == "session_limit"
        clients[0].step(b"abc", "L2-H100-fp32", 0, None, 0, 3)
        time.sleep(1.8)  # both sessions idle past the timeout
        with pytest.raises(SplitServerError) as e:
            clients[0].step(b"d", "L2-H100-fp32", 0, None, 3, 1)
        assert e.value.code == "unknown_session"
        extra.open()  # room again
        assert "evicted after 1 s idle" in s.log.read_text()
    finally:
        for c in (*clients, extra):
            c.close()
        s.stop()


def test_kv_cap_refuses_new_sessions(m) -> None:
    import asyncio

    from model.split_server import Limits, SplitServer, _Conn

    srv = SplitServer(m, TOKEN.encode(), limits=Limits(max_sessions=10, max_kv_bytes=1))
    per = srv.kv_per_session
    assert per == srv._kv_nbytes(split.ServerSide(m), 0)  # the estimate is what a session holds
    srv.limits.max_kv_bytes = int(2.5 * per)
    conn = _Conn("test")

    async def run():
        replies = [unpack_message(await srv.handle_message(pack_message({"v": 1, "op": "open"}), conn, 1))[0]
                   for _ in range(3)]
        assert [r["ok"] for r in replies] == [True, True, False] and replies[2]["code"] == "kv_limit"
        assert srv.kv_bytes == 2 * per
        closed = await srv.handle_message(pack_message({"v": 1, "op": "close", "session": replies[0]["session"]}),
                                          conn, 1)
        assert unpack_message(closed)[0]["ok"] is True and srv.kv_bytes == per
        again = await srv.handle_message(pack_message({"v": 1, "op": "open"}), conn, 1)
        assert unpack_message(again)[0]["ok"] is True
        assert srv.evict_idle(now=time.monotonic() + 1e6) and srv.kv_bytes == 0 and not srv.sessions

    asyncio.run(run())
    srv.pool.shutdown()


# ---- command line, TLS, shutdown --------------------------------------------------------------------------
def test_bad_arguments_exit_before_loading(tmp, token_file) -> None:
    def run(*args):
        return subprocess.run([sys.executable, "-m", "model.split_server", "--token-file", str(token_file), *args],
                              cwd=REPO, capture_output=True, text=True, timeout=60)

    r = run("--host", "0.0.0.0", "--port", "0")
    assert r.returncode == 2 and "requires TLS" in r.stderr
    r = run("--tls-cert", "c.pem")
    assert r.returncode == 2 and "go together" in r.stderr
    r = run("--max-sessions", "0")
    assert r.returncode == 2 and "--max-sessions" in r.stderr
    world = tmp / "world-token"
    world.write_text(TOKEN)
    world.chmod(0o644)
    r = subprocess.run([sys.executable, "-m", "model.split_server", "--token-file", str(world)], cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "world-readable" in r.stderr
    short = tmp / "short-token"
    short.write_text("abc")
    short.chmod(0o600)
    r = subprocess.run([sys.executable, "-m", "model.split_server", "--token-file", str(short)], cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "16" in r.stderr


def test_tls_on_loopback_with_a_self_signed_certificate(tmp, token_file) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: cannot make a self-signed certificate")
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                        str(cert), "-days", "1", "-subj", "/CN=localhost", "-addext",
                        "subjectAltName=IP:127.0.0.1,DNS:localhost"], capture_output=True, timeout=60)
    if r.returncode != 0:
        pytest.skip(f"openssl could not make a certificate: {r.stderr.decode()[-200:]}")
    s = start_server(tmp, token_file, "--tls-cert", str(cert), "--tls-key", str(key))
    try:
        assert s.url.startswith("wss://127.0.0.1:")
        ctx = ssl.create_default_context(cafile=str(cert))
        # a generous deadline: on busy cores the first handshake (RSA 2048) has taken more than the default 10 s
        with SplitClient(s.url, TOKEN, ssl_context=ctx, timeout_s=60) as c:
            c.open()
            tok, _, _ = c.step(b"In the", "L2-H100-fp32", 0, None, 0, 6)
            assert 0 <= tok < 256
        with pytest.raises(LinkDown):  # an unknown certificate is not trusted
            SplitClient(s.url, TOKEN, ssl_context=ssl.create_default_context(), timeout_s=5).open()
        with pytest.raises(LinkDown):  # plain websocket to a TLS port
            SplitClient(s.url.replace("wss://", "ws://"), TOKEN, timeout_s=5).open()
    finally:
        s.stop()


def test_sigterm_closes_sessions_and_exits_zero(tmp, token_file) -> None:
    s = start_server(tmp, token_file)
    c = SplitClient(s.url, TOKEN, timeout_s=5)
    c.open()
    c.step(b"abc", "L2-H100-fp32", 0, None, 0, 3)
    t0 = time.monotonic()
    s.proc.send_signal(signal.SIGTERM)
    try:
        assert s.proc.wait(timeout=10) == 0
    finally:
        s.stop()
    assert time.monotonic() - t0 < 5
    with pytest.raises(LinkDown):
        c.step(b"d", "L2-H100-fp32", 0, None, 3, 1)
    log = s.log.read_text()
    assert "closing 1 connections and 1 sessions" in log and log.rstrip().endswith("stopped")


# ---- the link ---------------------------------------------------------------------------------------
def test_shaper_delays_like_the_link() -> None:
    now = [0.0]
    slept = []

    def sleep(dt):
        slept.append(dt)
        now[0] += dt

    sh = LinkShaper(8.0, 20.0, burst_bytes=1000, clock=lambda: now[0], sleep=sleep)  # 1e6 bytes/s
    assert sh.uplink(1000) == pytest.approx(0.010)  # within the burst: RTT/2 only
    # the 10 ms slept refilled the bucket to its burst (no more): 1000 bytes free, 2000 at 1e6 bytes/s
    assert sh.uplink(3000) == pytest.approx(0.010 + 0.002)
    sh._sleep = lambda dt: slept.append(dt)  # back-to-back: the next message queues behind the last
    assert sh.downlink(1500) == pytest.approx(0.010 + 0.0005)
    assert sh.predict_s(1000, 1000) == pytest.approx(0.020 + 0.002)
    assert sh.messages == 3 and sh.shaped_s == pytest.approx(sum(slept))
    sh.set(0.0, 20.0)
    with pytest.raises(LinkDown):
        sh.uplink(10)


def test_link_at_zero_bandwidth_raises_linkdown_without_sending(server) -> None:
    sh = LinkShaper(100.0, 2.0)
    with SplitClient(server.url, TOKEN, shaper=sh) as c:
        c.open()
        _, _, timing = c.step(b"abc", "L2-H100-fp32", 0, None, 0, 3)
        assert timing["shaped_up_ms"] >= 1.0 and timing["shaped_down_ms"] >= 1.0
        assert timing["total_ms"] >= timing["wire_ms"] + 2.0
        assert timing["held_up_ms"] >= timing["shaped_up_ms"] - 0.1  # the measured sleep, never shorter
        sh.set(0.0, 2.0)
        with pytest.raises(LinkDown, match="link down"):
            c.step(b"d", "L2-H100-fp32", 0, None, 3, 1)
        sh.set(100.0, 2.0)
        tok, _, _ = c.step(b"d", "L2-H100-fp32", 0, None, 3, 1)  # pos 3: the lost step never reached the server
        assert 0 <= tok < 256


def test_killing_the_server_mid_stream_raises_linkdown_promptly(tmp, token_file) -> None:
    s = start_server(tmp, token_file)
    c = SplitClient(s.url, TOKEN, timeout_s=30)
    c.open()
    tok, _, _ = c.step(b"abc", "L2-H100-fp32", 0, None, 0, 3)
    killed = []
    timer = threading.Timer(0.3, lambda: (killed.append(time.monotonic()), s.proc.kill()))
    timer.start()
    pos = 3
    try:
        with pytest.raises(LinkDown):
            for _ in range(100_000):
                tok, _, _ = c.step(bytes([tok]), "L2-H100-fp32", 0, None, pos, 1)
                pos = pos + 1 if pos < 255 else 0
        assert killed and time.monotonic() - killed[0] < 2.0
        with pytest.raises(LinkDown):  # nothing listens any more
            SplitClient(s.url, TOKEN, timeout_s=2).open()
    finally:
        timer.cancel()
        s.stop()


def test_a_server_that_never_answers_times_out_as_linkdown() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)  # accepts the TCP connection in the backlog, never speaks
        t0 = time.monotonic()
        with pytest.raises(LinkDown):
            SplitClient(f"ws://127.0.0.1:{sock.getsockname()[1]}", TOKEN, timeout_s=0.5).open()
        assert time.monotonic() - t0 < 3


@pytest.mark.parametrize("url", ["ws://192.168.1.20:8765", "ws://10.0.0.7:8765", "http://127.0.0.1:8765"])
def test_the_client_refuses_a_clear_text_url_to_another_host(url):
    """Over ws:// the bearer token crosses the network in clear text: only a loopback server may be reached so."""
    from model.split_client import SplitClient

    with pytest.raises(ValueError, match="clear text|must start with"):
        SplitClient(url, TOKEN)
    SplitClient("ws://127.0.0.1:8765", TOKEN)  # loopback: allowed (nothing is opened until open())
    SplitClient("wss://192.168.1.20:8765", TOKEN)
