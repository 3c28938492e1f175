"""Split server: runs the blocks after the edge's ``k`` and the head for many concurrent sessions.

    python -m model.split_server --port 0 --token-file token.txt [--server-bits 32] [--max-sessions 16]
    python deploy.py serve-split ...        # the same main(argv)

The device (``model.split.EdgeSide``) runs the embedding and the first ``k`` running blocks of a
configuration and sends the boundary activations, encoded with one of ``model.split.CODECS``,
through ``model.split_client.SplitClient``; this server keeps one ``model.split.ServerSide`` (its
own KV cache) per session, runs the rest and replies with the next token.

Transport: the ``websockets`` library (asyncio server). It is pure Python, maintained, speaks
binary frames, enforces a per-message size limit (``max_size``) *before* buffering a message,
handles the handshake, ping/pong keepalive and TLS (stdlib ``ssl``), and has a synchronous client
that keeps the edge simple. grpcio would need protobuf code generation, a large native wheel on
the device and its own TLS stack for the same request/reply pattern. permessage-deflate is off
(activations do not compress, and it would let a small frame inflate). Nothing is hand-parsed
except our own message header below.

Security: loopback by default; any other address requires ``--tls-cert`` / ``--tls-key``.
Clients authenticate at the handshake with ``Authorization: Bearer <token>``, compared with
``hmac.compare_digest`` against the token file (≥ 16 printable bytes; a world-readable file is
refused, a group-readable one warned about); otherwise HTTP 401 with a JSON error body and the
connection is closed. Nothing is ever unpickled; activations are never logged.

Message (both directions): one binary websocket message =
``[4-byte big-endian header length n, 1 ≤ n ≤ 4096][n bytes UTF-8 JSON object][payload]``.

Requests (unknown fields are refused; integers must be JSON integers, not floats or booleans):

* ``{"v": 1, "op": "open", "cfg"?: name, "server_bits"?: 32|8|4, "seq"?: int}`` (no payload) ->
  ``{"v", "ok": true, "op": "open", "session": id, "server_bits", "n_layer", "n_embd",
  "block_size", "vocab_size", "codecs", "max_message_bytes", "idle_timeout_s"}``. ``cfg`` is only
  checked; ``server_bits`` must equal the server's ``--server-bits`` (the precision the server's
  blocks run at).
* ``{"v": 1, "op": "step", "session", "cfg": canonical name, "k", "pos", "t", "dtype",
  "mode"?, "d"?, "budget"?, "logits"?: bool, "seq"?}`` + payload. ``k == 0``: ``dtype "uint8"``, the payload is
  the ``t`` token ids, no ``mode`` / ``d`` / ``budget``. ``1 ≤ k < depth(cfg)``: ``dtype "float32"`` (what the
  codec decodes to), ``mode`` in ``CODECS``, ``d == n_embd``, payload = ``encode(x (t, d), mode)``
  whose length is checked against the codec before anything is decoded (exactly for the fixed
  codecs; ``tabq``: at most ``4 + budget·t`` with ``budget`` the bytes per token it was encoded
  with, ≥ ``min_tabq_budget``, default and cap: the most the encoder can use). ``t ≥ 1``,
  ``pos + t ≤ block_size``; ``pos`` must be 0 (restart: the payload is the whole context) or the
  session's current length with the same ``cfg`` and ``k`` (a change of either needs ``pos == 0``).
  Reply: ``{"v", "ok": true, "op": "step", "session", "token": argmax of the last position,
  "pos": cached length after the step, "logits": "fp16"|null, "decode_ms", "compute_ms",
  "server_ms", "seq"?}`` + payload: the last position's logits as little-endian fp16
  (``2 × vocab_size`` bytes) when the request set ``"logits": true``, else empty.
* ``{"v": 1, "op": "close", "session", "seq"?}`` -> ``{"v", "ok": true, "op": "close", "session"}``.

Errors: ``{"v": 1, "ok": false, "error": message, "code": code, "seq"?}`` and the connection keeps
serving. Codes: ``bad_frame`` (framing, JSON, text frame), ``bad_version``, ``bad_op``,
``bad_field`` (``field`` names it), ``bad_payload`` (wrong length / malformed codec data),
``unknown_session``, ``session_limit``, ``kv_limit``, ``pos_mismatch`` (``expect_pos``: the session's
length; re-send from there or from 0), ``internal``. A message larger than ``max_message_bytes``
(the largest legal one: a full-context fp32 step) is refused by the library before it is
buffered: the connection is closed with code 1009 (the client checks the size first).

Limits: ``--max-sessions``; ``--max-kv-mb`` (every session's KV cache bytes are counted when it is
opened; an open beyond the cap is refused); ``--idle-timeout-s`` (an idle session is evicted; its
next step gets ``unknown_session``); ``--max-connections`` (HTTP 503 beyond). Sessions belong to the
connection that opened them and end with it. Model access is serialised by one lock: prefills
(and any step longer than ``--inline-max-tokens``, default 1) run on one compute thread, so a long
prefill delays other sessions' compute but never the event loop (handshakes, validation, error
replies, keepalive go on); a one-token decode step runs directly on the event-loop thread when
the compute thread has nothing queued — it blocks the loop for one token's compute (a few ms),
which other sessions would wait for anyway, and saves the two thread hand-offs (≈ 0.2 ms each
measured here) that dominate the protocol overhead. SIGTERM / SIGINT: close every connection (1001) and
session, finish the compute in flight, exit 0.

Log (stderr): one line per connection (open, close with counts), per refused handshake, per
error reply (the first 20 of a connection, then a count), per eviction.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import ipaddress
import math
import secrets
import signal
import socket
import ssl
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path

import numpy as np

from model.split_client import (
    MAX_HEADER_BYTES,
    PROTOCOL_VERSION,
    ProtocolError,
    TokenFileError,
    pack_message,
    read_token,
    unpack_message,
)

SERVER_BITS = (32, 8, 4)
ERRORS_LOGGED_PER_CONNECTION = 20
_OPS = {
    "open": ({"v", "op"}, {"cfg", "server_bits", "seq"}),
    "step": ({"v", "op", "session", "cfg", "k", "pos", "t", "dtype"}, {"mode", "d", "budget", "logits", "seq"}),
    "close": ({"v", "op", "session"}, {"seq"}),
}


def log(msg: str) -> None:
    print(f"split-server {time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _bad(field_name: str, msg: str) -> ProtocolError:
    return ProtocolError("bad_field", f"{field_name}: {msg}", field=field_name)


@dataclass
class StepRequest:
    session: str
    cfg: object  # the model's Config
    cfg_name: str
    k: int
    pos: int
    t: int
    mode: str | None
    logits: bool


@dataclass
class Session:
    id: str
    side: object  # model.split.ServerSide
    kv_bytes: int
    owner: int  # id of the connection that opened it
    last_used: float
    length: int = 0
    split: tuple | None = None  # (cfg name, k) that filled the cache
    steps: int = 0
    busy: bool = False


@dataclass
class Limits:
    max_sessions: int = 16
    idle_timeout_s: float = 300.0
    max_kv_bytes: int = 256 * 2 ** 20
    max_connections: int = 64


@dataclass
class _Conn:
    peer: str
    sessions: set = field(default_factory=set)
    messages: int = 0
    errors: int = 0


class SplitServer:
    """The protocol state machine around one loaded model; ``serve`` runs it on an address.

    ``handle_message`` is the whole request path (validate -> compute -> reply bytes) and is
    usable without a socket.
    """

    def __init__(self, m, token: bytes, *, server_bits: int = 32, limits: Limits | None = None,
                 inline_max_tokens: int = 1):
        from model import split

        self.m, self.split = m, split
        self.token = bytes(token)
        self.server_bits = int(server_bits)
        self.limits = limits or Limits()
        c = m.config
        self.n_layer, self.n_embd, self.block_size, self.vocab = c.n_layer, c.n_embd, c.block_size, c.vocab_size
        self.codecs = tuple(split.CODECS)
        d = self.n_embd
        self.tabq_min_budget = float(split.min_tabq_budget(d))
        self.tabq_max_budget = float(split.TABQ_TOKEN_OVERHEAD_BYTES + d
                                     + split.OUTLIER_BYTES * max(1, d // split.TABQ_MAX_OUTLIER_DIV))
        self.max_payload_bytes = max(self._payload_max(mode, self.block_size, self.tabq_max_budget)
                                     for mode in self.codecs)
        self.max_message_bytes = 4 + MAX_HEADER_BYTES + self.max_payload_bytes
        self._by_name = {m.name(c): c for c in m.configs()}  # canonical name -> Config (a dict lookup per step)
        self.sessions: dict[str, Session] = {}
        self.kv_bytes = 0
        self.kv_per_session = self._kv_estimate()
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="split-compute")
        self._model_lock = threading.Lock()  # every use of the model (ServerSide.run) holds it
        self._queued = 0  # steps submitted to the compute thread and not finished (event-loop side)
        self.inline_max_tokens = int(inline_max_tokens)
        self.inline_steps = 0
        self.connections = 0
        self.started = time.monotonic()

    # ---- sizes ---------------------------------------------------------------------------
    def _payload_max(self, mode: str, t: int, budget: float | None = None) -> int:
        """Most bytes a legal ``mode`` payload of ``t`` tokens may have (exact for the fixed codecs;
        ``tabq``: header + ``budget`` per token, the budget capped at (and by default) what the
        encoder can use at most: every token at 8 bits with its maximum of outliers)."""
        sp = self.split
        if mode != "tabq":
            return sp.payload_bytes(mode, t, self.n_embd)
        b = self.tabq_max_budget if budget is None else min(float(budget), self.tabq_max_budget)
        return sp.payload_bytes("tabq", t, self.n_embd, budget_bytes_per_token=b)

    def _kv_estimate(self) -> int:
        c = self.m.config
        kv = 2 * c.n_layer * c.n_head * c.block_size * c.head_dim * 4
        resid = (c.n_layer + 1) * c.block_size * c.n_embd * 4
        return kv + resid

    @staticmethod
    def _kv_nbytes(side, fallback: int) -> int:
        """Bytes of the session's cache tensors (``ServerSide.cache``: K, V and residual inputs)."""
        cache = getattr(side, "cache", None)
        tensors = [getattr(cache, name, None) for name in ("k", "v", "resid")]
        total = sum(t.numel() * t.element_size() for t in tensors if hasattr(t, "element_size"))
        return total or fallback

    # ---- validation (no allocation beyond the header) ----------------------------------------
    def _check_cfg(self, name):
        if not isinstance(name, str):
            raise _bad("cfg", "must be a canonical configuration name (string)")
        cfg = self._by_name.get(name)
        if cfg is None:
            raise _bad("cfg", f"unknown configuration {name[:64]!r} (canonical names: {next(iter(self._by_name))}, …)")
        return cfg

    def _check_common(self, h: dict) -> str:
        if "v" not in h:
            raise ProtocolError("bad_version", "missing protocol version v")
        if not _is_int(h["v"]) or h["v"] != PROTOCOL_VERSION:
            raise ProtocolError("bad_version", f"protocol version {str(h['v'])[:16]!r} unsupported "
                                f"(this server speaks {PROTOCOL_VERSION})")
        op = h.get("op")
        if not isinstance(op, str) or op not in _OPS:
            raise ProtocolError("bad_op", f"op {str(op)[:16]!r}: allowed {sorted(_OPS)}")
        required, optional = _OPS[op]
        for key in h:
            if key not in required and key not in optional:
                raise _bad(str(key)[:32], f"unknown field for op {op!r}")
        for key in sorted(required - h.keys()):
            raise _bad(key, f"missing (op {op!r} needs {sorted(required)})")
        if "seq" in h and not (_is_int(h["seq"]) and 0 <= h["seq"] < 2 ** 63):
            raise _bad("seq", "must be an integer >= 0")
        if "session" in h and not (isinstance(h["session"], str) and 0 < len(h["session"]) <= 64):
            raise _bad("session", "must be the id the open reply gave")
        return op

    def validate_step(self, h: dict, payload_len: int) -> StepRequest:
        """Check every field of a step against the model and the payload length."""
        cfg = self._check_cfg(h["cfg"])
        k, pos, t, dtype = h["k"], h["pos"], h["t"], h["dtype"]
        if not _is_int(k) or not 0 <= k < cfg.depth:
            raise _bad("k", f"{str(k)[:16]} outside 0..{cfg.depth - 1} (running blocks of {h['cfg']} on the edge)")
        if not _is_int(t) or not 1 <= t <= self.block_size:
            raise _bad("t", f"{str(t)[:16]} outside 1..{self.block_size}")
        if not _is_int(pos) or not 0 <= pos <= self.block_size - t:
            raise _bad("pos", f"{str(pos)[:16]} outside 0..{self.block_size - t} (pos + t <= block_size "
                       f"{self.block_size})")
        logits = h.get("logits", False)
        if not isinstance(logits, bool):
            raise _bad("logits", "must be true or false")
        mode = h.get("mode")
        if k == 0:
            if dtype != "uint8":
                raise _bad("dtype", f"{str(dtype)[:16]!r}: k == 0 sends token ids as 'uint8'")
            for key in ("mode", "d", "budget"):
                if key in h:
                    raise _bad(key, "not allowed with k == 0 (token ids)")
            if payload_len != t:
                raise ProtocolError("bad_payload", f"{payload_len} bytes of token ids for t={t}")
        else:
            if dtype != "float32":
                raise _bad("dtype", f"{str(dtype)[:16]!r}: boundary activations decode to 'float32'")
            if not isinstance(mode, str) or mode not in self.codecs:
                raise _bad("mode", f"{str(mode)[:16]!r}: allowed {list(self.codecs)}")
            d = h.get("d")
            if not _is_int(d) or d != self.n_embd:
                raise _bad("d", f"{str(d)[:16]} is not n_embd {self.n_embd}")
            budget = h.get("budget")
            if budget is not None:
                if mode != "tabq":
                    raise _bad("budget", f"only with mode 'tabq' (not {mode!r})")
                if not (isinstance(budget, (int, float)) and not isinstance(budget, bool) and math.isfinite(budget)
                        and budget >= self.tabq_min_budget):
                    raise _bad("budget", f"{str(budget)[:16]} bytes/token: tabq needs a finite budget >= "
                               f"{self.tabq_min_budget:g}")
            most = self._payload_max(mode, t, budget)
            if mode != "tabq" and payload_len != most:
                raise ProtocolError("bad_payload", f"{payload_len} payload bytes; {mode} of ({t}, {d}) has exactly "
                                    f"{most}")
            if mode == "tabq" and not payload_len <= most:
                raise ProtocolError("bad_payload", f"{payload_len} payload bytes; tabq of ({t}, {d}) at "
                                    f"{'the largest' if budget is None else budget} budget has at most {most}")
        return StepRequest(h["session"], cfg, h["cfg"], k, pos, t, mode if k else None, logits)

    # ---- the request path ------------------------------------------------------------------
    def _error(self, exc: ProtocolError, seq=None) -> bytes:
        h = {"v": PROTOCOL_VERSION, "ok": False, "error": str(exc)[:500], "code": exc.code, **exc.extra}
        if seq is not None:
            h["seq"] = seq
        return pack_message(h)

    async def handle_message(self, data, conn: _Conn, conn_id: int) -> bytes:
        """Bytes of the reply to one message (every failure becomes an error reply)."""
        seq = None
        try:
            h, payload = unpack_message(data)
            seq = h.get("seq") if _is_int(h.get("seq")) else None
            op = self._check_common(h)
            if op == "open":
                return self._open(h, conn, conn_id, seq)
            if op == "close":
                return self._close(h, conn, conn_id, seq)
            return await self._step(h, payload, conn_id, seq)
        except ProtocolError as exc:
            conn.errors += 1
            if conn.errors <= ERRORS_LOGGED_PER_CONNECTION:
                log(f"error {conn.peer}: {exc.code}: {str(exc)[:200]}")
            return self._error(exc, seq)
        except Exception as exc:  # noqa: BLE001 - a bug or an exhausted resource: answer, keep serving
            conn.errors += 1
            log(f"internal error {conn.peer}: {type(exc).__name__}: {str(exc)[:200]}")
            return self._error(ProtocolError("internal", f"server error ({type(exc).__name__})"), seq)

    def _open(self, h: dict, conn: _Conn, conn_id: int, seq) -> bytes:
        if "cfg" in h:
            self._check_cfg(h["cfg"])
        if "server_bits" in h and (not _is_int(h["server_bits"]) or h["server_bits"] != self.server_bits):
            raise _bad("server_bits", f"{str(h['server_bits'])[:16]}: this server runs at {self.server_bits} bits")
        if len(self.sessions) >= self.limits.max_sessions:
            raise ProtocolError("session_limit", f"{len(self.sessions)} sessions open (max {self.limits.max_sessions})")
        if self.kv_bytes + self.kv_per_session > self.limits.max_kv_bytes:
            raise ProtocolError("kv_limit", f"KV caches hold {self.kv_bytes / 2 ** 20:.1f} MB; another session "
                                f"({self.kv_per_session / 2 ** 20:.1f} MB) exceeds the cap of "
                                f"{self.limits.max_kv_bytes / 2 ** 20:.1f} MB")
        side = self.split.ServerSide(self.m, server_bits=self.server_bits)
        kv = self._kv_nbytes(side, self.kv_per_session)
        sid = secrets.token_hex(16)
        self.sessions[sid] = Session(sid, side, kv, conn_id, time.monotonic())
        self.kv_bytes += kv
        conn.sessions.add(sid)
        reply = {"v": PROTOCOL_VERSION, "ok": True, "op": "open", "session": sid, "server_bits": self.server_bits,
                 "n_layer": self.n_layer, "n_embd": self.n_embd, "block_size": self.block_size,
                 "vocab_size": self.vocab, "codecs": list(self.codecs), "max_message_bytes": self.max_message_bytes,
                 "idle_timeout_s": self.limits.idle_timeout_s}
        if seq is not None:
            reply["seq"] = seq
        return pack_message(reply)

    def _session(self, sid: str, conn_id: int) -> Session:
        s = self.sessions.get(sid)
        if s is None or s.owner != conn_id:
            raise ProtocolError("unknown_session", f"no session {sid[:64]!r} on this connection (closed, evicted "
                                "after the idle timeout, or never opened): open a new one")
        return s

    def drop_session(self, sid: str) -> None:
        s = self.sessions.pop(sid, None)
        if s is not None:
            self.kv_bytes -= s.kv_bytes

    def _close(self, h: dict, conn: _Conn, conn_id: int, seq) -> bytes:
        self._session(h["session"], conn_id)
        self.drop_session(h["session"])
        conn.sessions.discard(h["session"])
        reply = {"v": PROTOCOL_VERSION, "ok": True, "op": "close", "session": h["session"]}
        if seq is not None:
            reply["seq"] = seq
        return pack_message(reply)

    async def _step(self, h: dict, payload: memoryview, conn_id: int, seq) -> bytes:
        t0 = time.perf_counter()
        s = self._session(h["session"], conn_id)
        req = self.validate_step(h, len(payload))
        if s.busy:
            raise ProtocolError("bad_op", "the session has a step in flight")
        split_key = (req.cfg_name, req.k)
        if req.pos != 0 and (req.pos != s.length or split_key != s.split):
            expect = s.length if split_key == s.split else 0
            raise ProtocolError("pos_mismatch", f"pos {req.pos}: the session holds {s.length} positions under "
                                f"{s.split}; send pos {expect}" + (" with the whole context" if expect == 0 else ""),
                                expect_pos=expect)
        data = bytes(payload)  # bounded by validate_step
        s.busy, s.last_used = True, time.monotonic()
        try:
            if req.t <= self.inline_max_tokens and self._queued == 0 and self._model_lock.acquire(blocking=False):
                try:  # a short step while the compute thread is idle: here, saving two thread hand-offs
                    token, logits, decode_s, compute_s = self._compute_locked(s, req, data)
                finally:
                    self._model_lock.release()
                self.inline_steps += 1
            else:
                self._queued += 1
                try:
                    token, logits, decode_s, compute_s = await asyncio.get_running_loop().run_in_executor(
                        self.pool, self._compute, s, req, data)
                finally:
                    self._queued -= 1
        except self.split.CodecError as exc:
            raise ProtocolError("bad_payload", f"{req.mode} payload rejected: {str(exc)[:200]}") from None
        except ValueError as exc:  # ServerSide refused the input (it checks before touching its cache)
            s.length, s.split = 0, None
            raise ProtocolError("bad_payload", f"rejected by the server half: {str(exc)[:200]}; re-send from "
                                "pos 0") from None
        except Exception as exc:  # the model failed: the cache is suspect, start over
            s.length, s.split = 0, None
            log(f"internal error session {s.id[:8]}: {type(exc).__name__}: {str(exc)[:200]}")
            raise ProtocolError("internal", f"server failed on this step ({type(exc).__name__}); the session was "
                                "reset: re-send from pos 0") from None
        finally:
            s.busy, s.last_used = False, time.monotonic()
        if self.sessions.get(s.id) is not s:  # evicted or closed meanwhile
            raise ProtocolError("unknown_session", "the session was closed while this step ran")
        s.length, s.split, s.steps = req.pos + req.t, split_key, s.steps + 1
        reply = {"v": PROTOCOL_VERSION, "ok": True, "op": "step", "session": s.id, "token": token, "pos": s.length,
                 "logits": "fp16" if req.logits else None, "decode_ms": round(decode_s * 1e3, 4),
                 "compute_ms": round(compute_s * 1e3, 4), "server_ms": round((time.perf_counter() - t0) * 1e3, 4)}
        if seq is not None:
            reply["seq"] = seq
        body = logits.astype("<f2").tobytes() if req.logits else b""
        return pack_message(reply, body)

    def _compute(self, s: Session, req: StepRequest, data: bytes):
        """On the compute thread: the model lock, then ``_compute_locked``."""
        with self._model_lock:
            return self._compute_locked(s, req, data)

    def _compute_locked(self, s: Session, req: StepRequest, data: bytes):
        """Decode, run the server's blocks, pick the token (the caller holds the model lock)."""
        t0 = time.perf_counter()
        if req.k == 0:
            x = np.frombuffer(data, dtype=np.uint8).astype(np.int64)
            if int(x.max()) >= self.vocab:
                raise self.split.CodecError(f"token id {int(x.max())} outside the vocabulary of {self.vocab}")
        else:
            x = self.split.decode(data, req.mode, req.t, self.n_embd)
        t1 = time.perf_counter()
        out = s.side.run(x, req.pos, req.cfg_name, req.k)
        last = out[-1] if getattr(out, "ndim", 0) == 2 else out[0, -1]
        last = np.asarray(last.detach().float().numpy() if hasattr(last, "detach") else last, dtype=np.float32)
        token = int(np.argmax(last))
        return token, last, t1 - t0, time.perf_counter() - t1

    # ---- housekeeping ---------------------------------------------------------------------
    def evict_idle(self, now: float | None = None) -> list[str]:
        now = time.monotonic() if now is None else now
        gone = [sid for sid, s in self.sessions.items()
                if not s.busy and now - s.last_used > self.limits.idle_timeout_s]
        for sid in gone:
            self.drop_session(sid)
            log(f"session {sid[:8]} evicted after {self.limits.idle_timeout_s:g} s idle")
        return gone

    async def _evictor(self) -> None:
        period = min(max(self.limits.idle_timeout_s / 4, 0.05), 5.0)
        while True:
            await asyncio.sleep(period)
            self.evict_idle()

    # ---- the websocket side ----------------------------------------------------------------
    def _process_request(self, connection, request):
        peer = _peer(connection)
        values = request.headers.get_all("Authorization")
        given = values[0] if len(values) == 1 else ""
        ok = given.startswith("Bearer ") and hmac.compare_digest(
            given[7:].encode("utf-8", "replace"), self.token)
        if not ok:
            log(f"refused {peer}: {'no' if not values else 'wrong'} token")
            return connection.respond(HTTPStatus.UNAUTHORIZED, _json_body("unauthorized", "missing or wrong token "
                                      "(Authorization: Bearer <token from the server's token file>)"))
        if self.connections >= self.limits.max_connections:
            log(f"refused {peer}: {self.connections} connections open (max {self.limits.max_connections})")
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE,
                                      _json_body("busy", f"{self.connections} connections open"))
        return None

    async def _handler(self, ws) -> None:
        from websockets.exceptions import ConnectionClosed

        conn = _Conn(_peer(ws))
        conn_id = id(conn)
        self.connections += 1
        log(f"connection {conn.peer} open ({self.connections} open)")
        how = "closed"
        try:
            async for msg in ws:
                conn.messages += 1
                reply = await self.handle_message(msg, conn, conn_id)
                await ws.send(reply)
        except ConnectionClosed as exc:
            frame = exc.rcvd or exc.sent
            how = f"lost ({frame.code} {frame.reason})" if frame else "lost (no close frame)"
        finally:
            self.connections -= 1
            ended = [sid for sid in conn.sessions if sid in self.sessions]
            for sid in ended:
                self.drop_session(sid)
            more = conn.errors - ERRORS_LOGGED_PER_CONNECTION
            log(f"connection {conn.peer} {how}: {conn.messages} messages, {conn.errors} errors"
                + (f" ({more} not logged)" if more > 0 else "") + f", {len(ended)} sessions ended")

    async def serve(self, host: str, port: int, ssl_context: ssl.SSLContext | None = None,
                    ready=None, stop: asyncio.Event | None = None) -> None:
        """Serve until ``stop`` is set (or SIGTERM / SIGINT); ``ready(url)`` once listening."""
        from websockets.asyncio.server import serve

        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (ValueError, RuntimeError, NotImplementedError):  # not the main thread
                pass
        server = await serve(self._handler, host, port, ssl=ssl_context, process_request=self._process_request,
                             compression=None, max_size=self.max_message_bytes, max_queue=4,
                             server_header=None, ping_interval=20, ping_timeout=20, close_timeout=2)
        evictor = asyncio.create_task(self._evictor())
        try:
            sock = server.sockets[0].getsockname()
            shown = f"[{sock[0]}]" if ":" in sock[0] else sock[0]
            url = f"{'wss' if ssl_context else 'ws'}://{shown}:{sock[1]}"
            log(f"listening on {url} (server_bits {self.server_bits}, max {self.limits.max_sessions} sessions, "
                f"{self.limits.max_kv_bytes / 2 ** 20:g} MB KV, idle {self.limits.idle_timeout_s:g} s, "
                f"max message {self.max_message_bytes} bytes)")
            if ready is not None:
                ready(url)
            await stop.wait()
            log(f"stopping: closing {self.connections} connections and {len(self.sessions)} sessions")
        finally:
            evictor.cancel()
            server.close()
            try:
                await asyncio.wait_for(server.wait_closed(), timeout=5)
            except TimeoutError:
                log("some connections did not close within 5 s")
            for sid in list(self.sessions):
                self.drop_session(sid)
            await loop.run_in_executor(None, self.pool.shutdown, True)
            log("stopped")


def _json_body(code: str, msg: str) -> str:
    import json

    return json.dumps({"v": PROTOCOL_VERSION, "ok": False, "error": msg, "code": code}) + "\n"


def _peer(conn) -> str:
    try:
        a = conn.remote_address
        return f"{a[0]}:{a[1]}"
    except Exception:  # noqa: BLE001 - only for the log line
        return "?"


# ---- command line ------------------------------------------------------------------------------
def is_loopback(host: str) -> bool:
    """True when every address ``host`` resolves to is a loopback address."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0].split("%")[0]).is_loopback for i in infos)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m model.split_server",
        description="Split-computing server: runs the blocks after the edge's k and the head for many sessions "
                    "(protocol: see the module docstring).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--host", default="127.0.0.1", help="address to bind; anything but loopback needs --tls-cert/key")
    p.add_argument("--port", type=int, default=8765, help="TCP port; 0 picks a free one (the URL is printed)")
    p.add_argument("--token-file", required=True, help="shared secret, >= 16 printable bytes, not world-readable")
    p.add_argument("--checkpoint", default=None, help="model checkpoint (default: the committed one)")
    p.add_argument("--server-bits", type=int, default=32, choices=SERVER_BITS,
                   help="weight precision of the server's blocks")
    p.add_argument("--max-sessions", type=int, default=16, help="sessions open at once")
    p.add_argument("--idle-timeout-s", type=float, default=300.0, help="evict a session idle this long")
    p.add_argument("--max-kv-mb", type=float, default=256.0, help="cap on the sessions' KV caches together (MB)")
    p.add_argument("--max-connections", type=int, default=64, help="websocket connections open at once")
    p.add_argument("--threads", type=int, default=0, help="torch threads for compute (0: torch's default)")
    p.add_argument("--inline-max-tokens", type=int, default=1,
                   help="steps of at most this many tokens run on the event-loop thread when the compute thread "
                        "is idle (saves two thread hand-offs per decode step); 0: always on the compute thread")
    p.add_argument("--tls-cert", default=None, help="PEM certificate (enables wss://)")
    p.add_argument("--tls-key", default=None, help="PEM private key of --tls-cert")
    return p


def main(argv: list[str] | None = None) -> int:
    """Parse, check every argument and file, load the model, serve until SIGTERM / SIGINT (exit 0).

    Exit 2: a bad argument (one line naming it); exit 1: a bad file (token, TLS, checkpoint).
    """
    p = build_parser()
    a = p.parse_args(argv)
    if not 0 <= a.port <= 65535:
        p.error(f"--port {a.port} outside 0..65535")
    if a.max_sessions < 1:
        p.error(f"--max-sessions {a.max_sessions} must be >= 1")
    if a.max_connections < 1:
        p.error(f"--max-connections {a.max_connections} must be >= 1")
    if not (math.isfinite(a.idle_timeout_s) and a.idle_timeout_s > 0):
        p.error(f"--idle-timeout-s {a.idle_timeout_s} must be > 0")
    if not (math.isfinite(a.max_kv_mb) and a.max_kv_mb > 0):
        p.error(f"--max-kv-mb {a.max_kv_mb} must be > 0")
    if a.threads < 0:
        p.error(f"--threads {a.threads} must be >= 0")
    if not 0 <= a.inline_max_tokens <= 16:
        p.error(f"--inline-max-tokens {a.inline_max_tokens} outside 0..16")
    if (a.tls_cert is None) != (a.tls_key is None):
        p.error("--tls-cert and --tls-key go together")
    if not is_loopback(a.host) and a.tls_cert is None:
        p.error(f"--host {a.host} is not a loopback address: binding it requires TLS (--tls-cert and --tls-key); "
                "activations and the token would otherwise cross the network in clear")
    try:
        token = read_token(a.token_file, warn=log)
    except TokenFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    ctx = None
    if a.tls_cert is not None:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            ctx.load_cert_chain(a.tls_cert, a.tls_key)
        except (OSError, ssl.SSLError) as exc:
            print(f"error: --tls-cert {a.tls_cert} / --tls-key {a.tls_key}: cannot load ({exc})", file=sys.stderr)
            return 1
    from model import DEFAULT_CHECKPOINT, CheckpointError, load

    ckpt = Path(a.checkpoint) if a.checkpoint else DEFAULT_CHECKPOINT
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    try:
        m = load(ckpt)
    except (FileNotFoundError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if a.server_bits not in m.config.bits:
        print(f"error: --server-bits {a.server_bits}: the checkpoint packs {list(m.config.bits)}", file=sys.stderr)
        return 2
    limits = Limits(a.max_sessions, a.idle_timeout_s, int(a.max_kv_mb * 2 ** 20), a.max_connections)
    srv = SplitServer(m, token, server_bits=a.server_bits, limits=limits, inline_max_tokens=a.inline_max_tokens)

    def ready(url: str) -> None:
        print(f"listening on {url}", flush=True)

    try:
        asyncio.run(srv.serve(a.host, a.port, ctx, ready=ready))
    except OSError as exc:  # the address is taken / not ours
        print(f"error: cannot listen on {a.host}:{a.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # a second Ctrl-C before the handler was installed
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
