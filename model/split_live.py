"""Live split generation: the token loop that follows the runtime's configuration — on the device, or
split with a server over ``model.split_client`` — and falls back to the device, with no token lost,
when the link drops or the server dies (``deploy.py run --split-server``; docs/split.md).

* :class:`LinkState` — what the device knows about its link: whether the last exchange failed, and
  until when it waits before trying the server again (back-off doubling per failure, capped).
* :class:`SplitLinkSensor` — a ``runtime.sensors.Sensor`` for ``bandwidth_mbps``: the recorded (or
  assumed) bandwidth while the link works, 0 while it is down. The runtime manager's shield masks every
  split configuration at 0 Mbit/s, so after a failure the policy is moved to a local configuration.
* :class:`SplitStream` — ``stream(prompt, …)`` yields tokens like ``ElasticGPT.stream`` (same sampling,
  same context cropping), computing each under the configuration ``current()`` returns at that token:

  - local: the model's own KV cache (``ElasticGPT.forward``); tokens generated meanwhile on the split
    path are fed to it in one chunk when it is used again (a prefill of the missed tokens: exact);
  - split: ``model.split.EdgeSide`` runs the device's blocks and builds the message under the KV rule
    (only new tokens while (configuration, split) is unchanged, else the whole context from position 0),
    the client sends it, shaped to the link's bandwidth and round trip, and the server answers with the
    logits of the last position (sampled here, as locally) or its argmax (temperature 0);
  - on ``LinkDown`` or a server error the same token is computed locally from the full context (no token
    is lost or repeated), the link is marked down, and the edge forgets what the server held (the next
    split message re-sends the whole context).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from model.model import sample_token
from runtime.configspace import SPLIT_LOCAL
from runtime.sensors import Reading, Sensor


@dataclass
class LinkState:
    """The device's view of its link to the split server (module docstring)."""

    retry_s: float = 2.0  # first back-off after a failure, s (doubles per consecutive failure)
    retry_max_s: float = 30.0
    clock: Callable[[], float] = time.monotonic
    down_until: float = -np.inf
    failures: int = 0  # consecutive
    total_failures: int = 0
    last_error: str = ""
    events: list = field(default_factory=list)  # (t, "down"|"up", detail)

    @property
    def up(self) -> bool:
        return self.clock() >= self.down_until

    def fail(self, err: str) -> None:
        self.failures += 1
        self.total_failures += 1
        self.last_error = err
        self.down_until = self.clock() + min(self.retry_s * 2 ** (self.failures - 1), self.retry_max_s)
        self.events.append((self.clock(), "down", err))

    def ok(self) -> None:
        if self.failures:
            self.events.append((self.clock(), "up", ""))
        self.failures = 0


class SplitLinkSensor(Sensor):
    """``bandwidth_mbps`` of the split link: ``base()`` while it works, 0 while :class:`LinkState` says
    it is down (module docstring). List it before the sensor it wraps: the hub takes each field from
    the first sensor that provides it."""

    name = "split-link"
    provides = ("bandwidth_mbps",)

    def __init__(self, state: LinkState, base: Callable[[], float], clock: Callable[[], float] = time.monotonic,
                 connected: Callable[[], bool] = lambda: True) -> None:
        super().__init__(clock, 0.0)
        self.state, self.base, self.connected = state, base, connected

    def read(self) -> Reading:
        bw = float(self.base()) if self.state.up and self.connected() else 0.0
        return Reading(self.clock(), bandwidth_mbps=bw)


class SplitStream:
    """Tokens under the configuration that ``current()`` names (module docstring).

    Args:
        m: The loaded ``ElasticGPT``.
        space: The policy's configuration space (knobs depth, heads, bits[, split, wire]).
        client: A connected ``model.split_client.SplitClient`` (``open()`` done), or None (local only).
        link: The shared :class:`LinkState`.
        reconnect: Called to get a fresh, opened client after a failure (None: never reconnect).
        bandwidth: Called per split step for the link's current bandwidth (Mbit/s) to shape the traffic.
        rtt_ms: The link's round trip (the shaper's), ms.
        budget_bytes_per_token: TS + TAB-Q budget (None: the codec's default).
    """

    def __init__(self, m, space, client=None, link: LinkState | None = None,
                 reconnect: Callable[[], object] | None = None, bandwidth: Callable[[], float] | None = None,
                 rtt_ms: float = 0.0, budget_bytes_per_token: float | None = None) -> None:
        from model.split import EdgeSide

        self.m, self.space, self.client = m, space, client
        self.link = link or LinkState()
        self.reconnect, self.bandwidth, self.rtt_ms = reconnect, bandwidth, float(rtt_ms)
        self.budget = budget_bytes_per_token
        self.edge = EdgeSide(m)
        has = "split" in space.knob_names
        self._split = [int(c.split) if has else SPLIT_LOCAL for c in space.configs]
        self._wire = [str(c.wire) if has and "wire" in space.knob_names else "none" for c in space.configs]
        self._local = [m.validate({"depth": c.depth, "heads": c.heads, "bits": c.bits}) for c in space.configs]
        self.history: list[int] = []
        self.cache = m.new_cache(1, m.config.block_size)
        self.local_n = 0  # history tokens the local cache holds
        self.stats = {"local_tokens": 0, "split_tokens": 0, "fallback_tokens": 0, "bytes_up": 0, "wire_ms": 0.0,
                      "resends": 0}
        self.last_timing: dict | None = None

    # ---- one token's logits -------------------------------------------------------------------
    def _local_logits(self, cfg) -> torch.Tensor:
        m = self.m
        if m.active != cfg:
            m.set_config(cfg)
        new = self.history[self.local_n:]
        logits = m.forward(torch.tensor([new]), self.cache)[:, -1]  # the model repairs its cache on a switch
        self.local_n = len(self.history)
        return logits

    def _split_step(self, cfg, k: int, wire: str, want_logits: bool):
        """Token logits (1, vocab) or the server's argmax token, over the link; raises on failure."""
        from model.split_client import LinkDown

        if self.client is None:
            raise LinkDown("no split server")
        new = torch.tensor(self.history[self.edge.length:])
        msg = self.edge.send(new, cfg, k)
        if msg.t > len(new):  # the KV rule: a new (configuration, split) re-sends the whole context
            self.stats["resends"] += 1
        sh = getattr(self.client, "shaper", None)
        if sh is not None and self.bandwidth is not None:
            sh.set(float(self.bandwidth()), self.rtt_ms)
        payload = msg.ids.numpy().astype(np.uint8) if k == 0 else msg.x.numpy()
        token, logits, timing = self.client.step(payload, self.m.name(cfg), k, wire if k else None, msg.pos, msg.t,
                                                 want_logits=want_logits,
                                                 budget_bytes_per_token=self.budget if wire == "tabq" else None)
        self.last_timing = timing
        self.stats["bytes_up"] += int(timing.get("bytes_up", 0))
        self.stats["wire_ms"] += float(timing.get("wire_ms", 0.0))
        if logits is not None:
            return torch.as_tensor(np.asarray(logits, dtype=np.float32))[None]
        return int(token)

    def _next(self, idx: int, want_logits: bool):
        cfg, k, wire = self._local[idx], self._split[idx], self._wire[idx]
        if k == SPLIT_LOCAL:
            self.stats["local_tokens"] += 1
            return self._local_logits(cfg)
        if self.client is None and self.reconnect is not None and self.link.up:
            self._try_reconnect()
        if self.client is not None and self.link.up:
            try:
                out = self._split_step(cfg, k, wire, want_logits)
                self.link.ok()
                self.stats["split_tokens"] += 1
                return out
            except Exception as exc:  # noqa: BLE001 - LinkDown, a server error, a dead socket: fall back
                self._fail(f"{type(exc).__name__}: {exc}")
        self.stats["fallback_tokens"] += 1
        return self._local_logits(cfg)  # the same token, computed on the device from the full context

    def _fail(self, err: str) -> None:
        self.link.fail(err)
        self.edge._sent = None  # the server's cache is unknown now: re-send the whole context next time
        try:
            if self.client is not None:
                self.client.close()
        except Exception:  # noqa: BLE001 - it is already broken
            pass
        self.client = None

    def _try_reconnect(self) -> None:
        try:
            self.client = self.reconnect()
        except Exception as exc:  # noqa: BLE001
            self.client = None
            self.link.fail(f"reconnect: {type(exc).__name__}: {exc}")

    # ---- the stream ---------------------------------------------------------------------------
    @torch.no_grad()
    def stream(self, prompt, max_new_tokens: int, *, current: Callable[[], int], temperature: float = 0.8,
               top_k: int | None = 40, seed: int | None = None) -> Iterator[int]:
        """Yield generated byte tokens (``ElasticGPT.stream``'s sampling and cropping); ``current()`` is
        read before each token, so a switch between tokens takes effect at the next one."""
        from model.data import encode

        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        ids = (torch.as_tensor(encode(prompt), dtype=torch.long) if isinstance(prompt, str)
               else torch.as_tensor(prompt).long().flatten())
        if ids.numel() == 0:
            ids = torch.tensor([ord("\n")])
        T = self.m.config.block_size
        self._reset(ids[-(T - 1):].tolist())
        for _ in range(max_new_tokens):
            out = self._next(int(current()), temperature > 0)
            nxt = out if isinstance(out, int) else sample_token(out, temperature, top_k, gen)
            yield nxt
            self.history.append(nxt)
            if len(self.history) >= T:  # as ElasticGPT.stream: keep the last half and re-prefill
                self._reset(self.history[-(T // 2):])

    def _reset(self, history: list[int]) -> None:
        self.history = list(history)
        self.cache.reset()
        self.local_n = 0
        self.edge.reset()


__all__ = ["LinkState", "SplitLinkSensor", "SplitStream"]
