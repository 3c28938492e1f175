"""Edge side of split computing: the transport to a ``model.split_server`` and a link shaper.

The device runs the embedding and the first ``k`` running blocks of the elastic model
(``model.split.EdgeSide``), encodes the boundary activations with one of ``model.split.CODECS``
and sends them here; the server runs the remaining blocks and the head and replies with the
next token (greedy argmax) and, on request, the fp16 logits of the last position. The wire
format (one binary websocket message per request and per reply) is documented in
``model.split_server``; this module holds the framing both sides share (``pack_message``,
``unpack_message``, ``read_token``) so that the edge does not import the server (nor torch).

Public API::

    from model.split_client import SplitClient, LinkShaper, LinkDown, SplitServerError

    shaper = LinkShaper(bandwidth_mbps=10, rtt_ms=40)      # optional: make loopback behave like a link
    with SplitClient("ws://127.0.0.1:8765", token, shaper=shaper, timeout_s=5) as c:
        info = c.open("L6-H100-fp32")                        # connects, opens a server session
        tok, logits, timing = c.step(payload, "L6-H100-fp32", k=2, mode="int8", pos=0, t=12)
        shaper.set(bandwidth_mbps=0.0, rtt_ms=40)           # the trace says: no link
        c.step(...)                                         # -> LinkDown, nothing sent

* ``LinkDown`` (a ``ConnectionError``): the link cannot carry this step — the shaper's bandwidth
  is 0, the connection was refused, lost or timed out, or the server died. The caller falls back
  to local generation. After a real loss the client is disconnected: ``open`` again reconnects
  (a new session: re-send the whole context from ``pos=0``). After a shaped (emulated) outage the
  connection and the session stay, but the server has not seen the tokens made locally meanwhile,
  so the next step re-sends the context from ``pos=0`` (the server answers ``pos_mismatch``
  otherwise).
* ``SplitServerError``: the server answered with an error reply (``.code``: e.g. ``bad_field``,
  ``pos_mismatch`` — then ``.reply["expect_pos"]`` says where it is —, ``session_limit``,
  ``kv_limit``, ``unknown_session`` after an idle eviction, ``unauthorized`` at connect). The
  link works; the request was wrong or refused.

Only numpy, the standard library and ``websockets`` (its synchronous client) are imported;
``model.split`` (torch) is imported only when ``step`` is handed float activations to encode.
"""

from __future__ import annotations

import json
import math
import os
import ssl
import stat
import struct
import sys
import threading
import time
from pathlib import Path

import numpy as np

__all__ = ["PROTOCOL_VERSION", "MAX_HEADER_BYTES", "MIN_TOKEN_BYTES", "ProtocolError", "pack_message",
           "unpack_message", "read_token", "TokenFileError", "LinkDown", "SplitServerError", "LinkShaper",
           "SplitClient"]

PROTOCOL_VERSION = 1
MAX_HEADER_BYTES = 4096  # the JSON header of one message, after its 4-byte length prefix
MIN_TOKEN_BYTES = 16  # the shared secret
MAX_TOKEN_BYTES = 1024
_LEN = struct.Struct(">I")


# ---- framing shared with the server ------------------------------------------------------------
class ProtocolError(ValueError):
    """A message that does not follow the protocol; ``code`` is the error reply's ``code``."""

    def __init__(self, code: str, message: str, **extra):
        super().__init__(message)
        self.code = code
        self.extra = extra


def pack_message(header: dict, payload: bytes | bytearray | memoryview = b"") -> bytes:
    """One message: 4-byte big-endian header length, the JSON header (UTF-8, compact), the payload."""
    h = json.dumps(header, separators=(",", ":"), allow_nan=False).encode()
    if len(h) > MAX_HEADER_BYTES:
        raise ProtocolError("bad_frame", f"header of {len(h)} bytes exceeds {MAX_HEADER_BYTES}")
    return b"".join((_LEN.pack(len(h)), h, payload))


def unpack_message(data: bytes | bytearray | memoryview) -> tuple[dict, memoryview]:
    """``(header, payload)`` of one message; ``ProtocolError('bad_frame')`` for anything malformed.

    Nothing is allocated beyond the header (≤ ``MAX_HEADER_BYTES``): the payload is a view.
    """
    if isinstance(data, str):
        raise ProtocolError("bad_frame", "text frame: the protocol uses binary frames only")
    view = memoryview(data)
    if len(view) < _LEN.size:
        raise ProtocolError("bad_frame", f"message of {len(view)} bytes is shorter than the 4-byte header length")
    (n,) = _LEN.unpack_from(view)
    if n == 0 or n > MAX_HEADER_BYTES:
        raise ProtocolError("bad_frame", f"header length {n} outside 1..{MAX_HEADER_BYTES}")
    if n > len(view) - _LEN.size:
        raise ProtocolError("bad_frame", f"header length {n} exceeds the {len(view) - _LEN.size} bytes that follow")
    raw = bytes(view[_LEN.size:_LEN.size + n])
    try:
        header = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ProtocolError("bad_frame", f"header is not UTF-8 JSON ({type(exc).__name__})") from None
    if not isinstance(header, dict):
        raise ProtocolError("bad_frame", f"header is a JSON {type(header).__name__}, not an object")
    return header, view[_LEN.size + n:]


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


class TokenFileError(ValueError):
    """The shared-secret token file is missing, too short, not printable ASCII or world-readable."""


def read_token(path: str | Path, *, warn=None) -> bytes:
    """The shared secret in ``path``: printable ASCII without spaces (it travels in an HTTP header),
    ``MIN_TOKEN_BYTES``..``MAX_TOKEN_BYTES`` bytes, surrounding whitespace stripped.

    A world-readable file is refused (``chmod 600``); a group-readable one is accepted with a
    warning passed to ``warn`` (default: stderr).

    Raises:
        TokenFileError: naming the file and the fix.
    """
    path = Path(path)
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            raise TokenFileError(f"{path}: token file is not a regular file")
        if st.st_size > MAX_TOKEN_BYTES + 64:
            raise TokenFileError(f"{path}: token file of {st.st_size} bytes is too large (at most {MAX_TOKEN_BYTES})")
        data = path.read_bytes()
    except OSError as exc:
        raise TokenFileError(f"{path}: cannot read the token file ({exc.strerror or exc})") from None
    if os.name == "posix":
        if st.st_mode & stat.S_IROTH:
            raise TokenFileError(f"{path}: token file is world-readable; fix: chmod 600 {path}")
        if st.st_mode & stat.S_IRGRP:
            (warn or _stderr)(f"warning: {path}: token file is group-readable (chmod 600 {path})")
    token = data.strip()
    if not MIN_TOKEN_BYTES <= len(token) <= MAX_TOKEN_BYTES:
        raise TokenFileError(f"{path}: token of {len(token)} bytes; it must have {MIN_TOKEN_BYTES}.."
                             f"{MAX_TOKEN_BYTES} (e.g. python -c 'import secrets; print(secrets.token_hex(32))')")
    if any(b < 0x21 or b > 0x7E for b in token):
        raise TokenFileError(f"{path}: token must be printable ASCII without spaces (it is sent in an HTTP header)")
    return token


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---- the client -------------------------------------------------------------------------------
class LinkDown(ConnectionError):
    """The split link cannot carry this step (shaped outage, refused / lost / timed-out connection,
    dead server): fall back to local generation. ``reason`` says which."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class SplitServerError(RuntimeError):
    """The server replied with an error (``code``, message; ``reply`` is the whole reply header)."""

    def __init__(self, code: str, message: str, reply: dict | None = None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.reply = reply or {}


class LinkShaper:
    """Make a fast link (loopback) behave like a recorded one: per message, RTT/2 of propagation
    plus the serialisation time ``bytes·8/bandwidth``, through a token bucket per direction.

    Each direction has its own bucket of ``burst_bytes`` (default 1500, one Ethernet frame),
    refilled at the link rate: a message waits until the bucket holds its bytes (the bucket may
    go negative, so back-to-back messages queue behind each other as on a real link). A
    bandwidth of 0 (or less) means the link is down: ``uplink`` raises ``LinkDown`` and nothing
    is sent. ``set`` changes the link between steps (replaying a trace); the buckets keep their
    level. ``sleep`` and ``clock`` are injectable for tests.

    Totals of what was injected are kept in ``shaped_s`` / ``messages``; ``SplitClient`` puts the
    per-step shaped and measured times in its timing dict.
    """

    def __init__(self, bandwidth_mbps: float, rtt_ms: float, *, burst_bytes: int = 1500,
                 clock=time.monotonic, sleep=time.sleep):
        if burst_bytes < 0:
            raise ValueError(f"burst_bytes {burst_bytes} must be >= 0")
        self.burst_bytes = int(burst_bytes)
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()
        now = clock()
        self._level = {"up": float(burst_bytes), "down": float(burst_bytes)}
        self._t = {"up": now, "down": now}
        self.shaped_s = 0.0
        self.messages = 0
        self.set(bandwidth_mbps, rtt_ms)

    def set(self, bandwidth_mbps: float, rtt_ms: float) -> None:
        """The link from now on (e.g. the trace row of this step)."""
        bw, rtt = float(bandwidth_mbps), float(rtt_ms)
        if not (math.isfinite(bw) and math.isfinite(rtt)) or rtt < 0:
            raise ValueError(f"bandwidth_mbps {bandwidth_mbps} and rtt_ms {rtt_ms} must be finite, rtt >= 0")
        with self._lock:
            for d in ("up", "down"):  # settle the buckets at the old rate before changing it
                self._refill(d, self._clock())
            self.bandwidth_mbps, self.rtt_ms = bw, rtt

    @property
    def down(self) -> bool:
        return self.bandwidth_mbps <= 0

    def _refill(self, direction: str, now: float) -> None:
        rate = max(getattr(self, "bandwidth_mbps", 0.0), 0.0) * 1e6 / 8  # bytes/s
        dt = max(now - self._t[direction], 0.0)
        self._level[direction] = min(self.burst_bytes, self._level[direction] + rate * dt)
        self._t[direction] = now

    def delay_s(self, nbytes: int, direction: str = "up") -> float:
        """Seconds a message of ``nbytes`` is held now (and book its bytes); LinkDown if down."""
        with self._lock:
            if self.down:
                raise LinkDown(f"link down (shaper bandwidth {self.bandwidth_mbps} Mbit/s)")
            now = self._clock()
            self._refill(direction, now)
            self._level[direction] -= nbytes
            rate = self.bandwidth_mbps * 1e6 / 8
            wait = max(-self._level[direction], 0.0) / rate
            return self.rtt_ms / 2000.0 + wait

    def _hold(self, nbytes: int, direction: str) -> float:
        d = self.delay_s(nbytes, direction)
        if d > 0:
            self._sleep(d)
        with self._lock:
            self.shaped_s += d
            self.messages += 1
        return d

    def uplink(self, nbytes: int) -> float:
        """Hold an edge -> server message (call before sending); returns the seconds held."""
        return self._hold(nbytes, "up")

    def downlink(self, nbytes: int) -> float:
        """Hold a server -> edge message (call after receiving); returns the seconds held."""
        return self._hold(nbytes, "down")

    def predict_s(self, bytes_up: int, bytes_down: int = 0) -> float:
        """The latency model's link time of one round trip: RTT + bytes·8/bandwidth (no burst)."""
        if self.down:
            return math.inf
        return self.rtt_ms / 1000.0 + (bytes_up + bytes_down) * 8 / (self.bandwidth_mbps * 1e6)


def check_url(url: str) -> None:
    """Raises ValueError unless ``url`` is ``wss://HOST:PORT``, or ``ws://HOST:PORT`` with a loopback host: over
    ``ws://`` the bearer token and the activations cross the network in clear text."""
    from urllib.parse import urlsplit

    from model.split_server import is_loopback

    if not (isinstance(url, str) and url.startswith(("ws://", "wss://"))):
        raise ValueError(f"url {url!r} must start with ws:// or wss://")
    host = urlsplit(url).hostname or ""
    if url.startswith("ws://") and not is_loopback(host):
        raise ValueError(f"url {url!r}: ws:// to {host!r}, which is not this machine, would send the token and the "
                         "activations in clear text; use wss:// (TLS) for a server on another host")


class SplitClient:
    """One split session with a ``model.split_server`` over one websocket connection.

    Args:
        url: ``ws://host:port`` (loopback) or ``wss://host:port``.
        token: the shared secret (str or bytes; see ``read_token``), sent at the handshake as
            ``Authorization: Bearer <token>``.
        shaper: a ``LinkShaper`` applied to every message (None: the link as it is).
        timeout_s: connect and per-reply deadline; past it the step raises ``LinkDown``.
        ssl_context: for ``wss://`` (e.g. ``ssl.create_default_context(cafile=cert)``).

    Not thread-safe: one client per thread (one session each).
    """

    def __init__(self, url: str, token: str | bytes, *, shaper: LinkShaper | None = None, timeout_s: float = 10.0,
                 ssl_context: ssl.SSLContext | None = None):
        check_url(url)
        if not timeout_s > 0:
            raise ValueError(f"timeout_s {timeout_s} must be > 0")
        tok = token.encode() if isinstance(token, str) else bytes(token)
        if len(tok) < MIN_TOKEN_BYTES or any(b < 0x21 or b > 0x7E for b in tok):
            raise ValueError(f"token must be >= {MIN_TOKEN_BYTES} printable ASCII bytes without spaces")
        self.url, self.shaper, self.timeout_s = url, shaper, float(timeout_s)
        self._token = tok.decode("ascii")
        self._ssl = ssl_context
        self._ws = None
        self._seq = 0
        self.session: str | None = None
        self.info: dict = {}

    # ---- connection ---------------------------------------------------------------------
    def _connect(self) -> None:
        from websockets.exceptions import InvalidStatus, WebSocketException
        from websockets.sync.client import connect

        try:  # entered as a context manager: websockets >= 17.1 deprecates connect() used bare
            self._ws = connect(self.url, additional_headers={"Authorization": f"Bearer {self._token}"},
                               ssl=self._ssl, compression=None, proxy=None, open_timeout=self.timeout_s,
                               close_timeout=1.0, max_size=2 ** 20, user_agent_header=None).__enter__()
        except InvalidStatus as exc:
            code = exc.response.status_code
            body = bytes(exc.response.body or b"").decode("utf-8", "replace")
            try:
                reply = json.loads(body)
                msg, ecode = str(reply.get("error", body)), str(reply.get("code", code))
            except (ValueError, AttributeError):
                reply, msg, ecode = {}, body.strip() or f"HTTP {code}", "unauthorized" if code == 401 else str(code)
            if code in (401, 403):
                raise SplitServerError(ecode, msg, reply if isinstance(reply, dict) else {}) from None
            raise LinkDown(f"server refused the connection: HTTP {code} {msg}") from None
        except (OSError, TimeoutError, WebSocketException, EOFError) as exc:  # refused, reset, TLS, handshake
            raise LinkDown(f"cannot connect to {self.url}: {type(exc).__name__}: {exc}") from None

    def _drop(self) -> None:
        ws, self._ws, self.session = self._ws, None, None
        if ws is not None:
            try:
                ws.close()
            except Exception:  # noqa: BLE001 - the link is gone anyway
                pass

    def _roundtrip(self, header: dict, payload: bytes = b"") -> tuple[dict, bytes, dict]:
        """Send one request, return (reply header, reply payload, timing)."""
        from websockets.exceptions import WebSocketException

        if self._ws is None:
            raise LinkDown("not connected (the link was lost earlier; open() again)")
        self._seq += 1
        header = {**header, "seq": self._seq}
        msg = pack_message(header, payload)
        limit = self.info.get("max_message_bytes")
        if limit and len(msg) > limit:
            raise ValueError(f"message of {len(msg)} bytes exceeds the server's limit of {limit}")
        t_hold = time.perf_counter()
        shaped_up = self.shaper.uplink(len(msg)) if self.shaper is not None else 0.0
        t0 = time.perf_counter()
        held_up = t0 - t_hold
        try:
            self._ws.send(msg)
            data = self._ws.recv(timeout=self.timeout_s)
        except TimeoutError:
            self._drop()
            raise LinkDown(f"no reply within {self.timeout_s} s") from None
        except (WebSocketException, OSError, EOFError) as exc:  # closed, reset, protocol violation
            self._drop()
            raise LinkDown(f"connection lost: {type(exc).__name__}: {exc}") from None
        wire_s = time.perf_counter() - t0
        try:
            rh, rp = unpack_message(data)
        except ProtocolError as exc:
            self._drop()
            raise LinkDown(f"unreadable reply from the server ({exc})") from None
        if rh.get("seq") != self._seq:
            self._drop()
            raise LinkDown(f"reply out of order (seq {rh.get('seq')!r}, expected {self._seq})")
        t_hold = time.perf_counter()
        shaped_down = self.shaper.downlink(len(data)) if self.shaper is not None else 0.0
        held_down = time.perf_counter() - t_hold
        timing = {"wire_ms": wire_s * 1e3, "shaped_up_ms": shaped_up * 1e3, "shaped_down_ms": shaped_down * 1e3,
                  "held_up_ms": held_up * 1e3, "held_down_ms": held_down * 1e3,
                  "bytes_up": len(msg), "bytes_down": len(data)}
        if rh.get("ok") is not True:
            raise SplitServerError(str(rh.get("code", "error")), str(rh.get("error", "error reply")), rh)
        return rh, bytes(rp), timing

    # ---- public API -----------------------------------------------------------------------
    def open(self, session_cfg: str | None = None, *, server_bits: int | None = None) -> dict:
        """Connect (if needed) and open a session on the server.

        ``session_cfg`` (a canonical configuration name) and ``server_bits`` are checked by the
        server now rather than at the first step. Returns the server's open reply: ``session``,
        ``server_bits``, ``n_layer``, ``n_embd``, ``block_size``, ``vocab_size``, ``codecs``,
        ``max_message_bytes``, ``idle_timeout_s``.

        Raises:
            LinkDown: cannot connect. SplitServerError: wrong token, session or KV limit, bad cfg.
        """
        if self.session is not None:
            raise RuntimeError(f"session {self.session} is already open; close() it first")
        if self._ws is None:
            self._connect()
        header: dict = {"v": PROTOCOL_VERSION, "op": "open"}
        if session_cfg is not None:
            header["cfg"] = session_cfg
        if server_bits is not None:
            header["server_bits"] = server_bits
        rh, _, _ = self._roundtrip(header)
        self.info = rh
        self.session = rh["session"]
        return rh

    def step(self, payload_or_ids, cfg: str, k: int, mode: str | None, pos: int, t: int, *,
             want_logits: bool = False, budget_bytes_per_token: float | None = None
             ) -> tuple[int, np.ndarray | None, dict]:
        """Send one step and return ``(token, logits | None, timing)``.

        Args:
            payload_or_ids: with ``k == 0`` the ``t`` token ids (bytes, or ints 0..255); with
                ``k >= 1`` the encoded boundary activations (bytes from ``model.split.encode``) or
                the float activations ``(t, n_embd)`` themselves (numpy or torch; encoded here with
                ``mode``).
            cfg, k, mode: the split: configuration name, running blocks on the edge, codec
                (ignored with ``k == 0``).
            pos, t: the first position of these ``t`` tokens in the context; ``pos == 0`` (or a
                change of ``cfg`` / ``k``) restarts the server's KV cache, so it must then carry
                the whole context.
            want_logits: also return the last position's logits (float32 from fp16, vocab wide).
            budget_bytes_per_token: ``tabq`` only: the budget the payload is (or is to be) encoded
                with; sent so the server can bound the payload (default: the encoder's maximum).

        timing (ms unless named): ``total_ms`` (this call, shaping included), ``wire_ms``
        (measured send -> reply), ``shaped_up_ms`` / ``shaped_down_ms`` (the delays the shaper
        imposed) and ``held_up_ms`` / ``held_down_ms`` (the measured time they took: sleeps overshoot),
        ``server_ms`` (server: message in -> reply out, queueing included), ``compute_ms``
        (server: decode + model), ``overhead_ms`` (``wire_ms - compute_ms``), ``bytes_up``,
        ``bytes_down``.

        Raises:
            LinkDown: shaped outage (nothing sent), timeout, lost connection, dead server.
            SplitServerError: the server refused the step (``.code``).
        """
        t0 = time.perf_counter()
        if self.session is None:
            raise RuntimeError("no open session: call open() first")
        if self.shaper is not None and self.shaper.down:  # before any work: nothing is sent
            raise LinkDown(f"link down (shaper bandwidth {self.shaper.bandwidth_mbps} Mbit/s)")
        header = {"v": PROTOCOL_VERSION, "op": "step", "session": self.session, "cfg": cfg, "k": int(k),
                  "pos": int(pos), "t": int(t)}
        if int(k) == 0:
            payload = _ids_bytes(payload_or_ids, t)
            header["dtype"] = "uint8"
        else:
            if isinstance(payload_or_ids, (bytes, bytearray, memoryview)):
                payload = bytes(payload_or_ids)
            elif isinstance(payload_or_ids, np.ndarray) or hasattr(payload_or_ids, "detach"):
                from model import split

                x = payload_or_ids.detach().cpu().numpy() if hasattr(payload_or_ids, "detach") else payload_or_ids
                payload = split.encode(np.ascontiguousarray(x, dtype=np.float32), mode,
                                       budget_bytes_per_token=budget_bytes_per_token if mode == "tabq" else None)
            else:
                raise TypeError(f"activations must be bytes or a float array, not {type(payload_or_ids).__name__}")
            header.update(dtype="float32", mode=mode, d=int(self.info.get("n_embd", 0)))
            if mode == "tabq" and budget_bytes_per_token is not None:
                header["budget"] = float(budget_bytes_per_token)
        if want_logits:
            header["logits"] = True
        rh, rp, timing = self._roundtrip(header, payload)
        token = rh.get("token")
        if not isinstance(token, int) or isinstance(token, bool):
            raise SplitServerError("bad_reply", f"reply has no integer token: {token!r}", rh)
        logits = None
        if want_logits:
            if len(rp) % 2:
                raise SplitServerError("bad_reply", f"logits payload of {len(rp)} bytes is not fp16", rh)
            logits = np.frombuffer(rp, dtype="<f2").astype(np.float32)
        compute_ms = float(rh.get("decode_ms", 0.0)) + float(rh.get("compute_ms", 0.0))
        timing.update(server_ms=float(rh.get("server_ms", 0.0)), compute_ms=compute_ms,
                      overhead_ms=timing["wire_ms"] - compute_ms, total_ms=(time.perf_counter() - t0) * 1e3)
        return token, logits, timing

    def close(self) -> None:
        """Close the session (best effort) and the connection. Never raises."""
        if self._ws is not None and self.session is not None:
            try:
                self._roundtrip({"v": PROTOCOL_VERSION, "op": "close", "session": self.session})
            except (LinkDown, SplitServerError, ValueError):
                pass
        self._drop()

    def __enter__(self) -> SplitClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _ids_bytes(ids, t: int) -> bytes:
    if isinstance(ids, (bytes, bytearray, memoryview)):
        b = bytes(ids)
    else:
        a = np.asarray(ids.detach().cpu() if hasattr(ids, "detach") else ids)
        if a.dtype.kind not in "iu" or a.ndim > 2 or (a.size and (a.min() < 0 or a.max() > 255)):
            raise ValueError("token ids must be integers 0..255")
        b = a.astype(np.uint8).tobytes()
    if len(b) != t:
        raise ValueError(f"{len(b)} token ids for t={t}")
    return b
