"""The elastic micro-LLM: one resident decoder-only transformer whose depth, attention heads
and weight precision switch at run time without re-reading the checkpoint.

Read top to bottom:

1. ``ModelConfig`` — the architecture (frozen) and the grid of supported sub-configurations.
2. ``ElasticGPT.space`` — the grid as a ``runtime.configspace.ConfigSpace`` (depth × heads × bits):
   a configuration is one of its ``Config`` named tuples ``(depth, heads, bits)``, named
   canonically (``L4-H050-int8``) by the space; there is no other configuration type.
3. ``active_layers`` — the documented rule for which layers run at a given depth.
4. ``ElasticGPT`` — parameters (fp32 master weights), ``set_config``, ``forward`` with an
   optional ``KVCache``, ``generate``.

Switching is cheap because everything a configuration needs is prepared once at load:
for every (layer, head count, precision) the projections are *pre-sliced* to the active heads
and packed for that precision's kernel (``model.quant``). ``set_config`` is then a dict
lookup; masked heads are never computed (their rows/columns are not in the packed weights).

KV-cache rule (exact): a cache remembers the *plan* — the per-position list of
(layer, heads, bits) — that filled it, plus the residual-stream input of every plan position
for every cached token. After a switch, the first forward finds the longest common prefix of
the old and new plans; layers in that prefix keep their cache (their inputs are unchanged);
from the first differing position on, the new plan's layers are re-run over the cached
prefix starting from the stored residual input at that position. The state after a switch is
therefore identical to a fresh prefill under the new configuration (tested against full
recomputation), and the repair costs a prefill of only the changed suffix of layers.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from model import quant
from model.data import decode, encode
from runtime.configspace import ConfigSpace, ConfigSpaceError, model_space


@dataclass(frozen=True)
class ModelConfig:
    """Architecture and the grid of run-time sub-configurations."""

    vocab_size: int = 256  # byte-level: no tokenizer to ship, tokens/s == bytes/s
    block_size: int = 256  # context in bytes: ~2-3 verses, enough for the MC benchmark
    n_layer: int = 6
    n_head: int = 8  # 8 heads so that 25/50/75/100 % are whole head counts (2/4/6/8)
    n_embd: int = 256  # head_dim 32: every active-head width (64..256) divides the int4
    #                   kernel's group size of 32, so the out-projection can be int4 at any mask
    mlp_ratio: int = 4
    depths: tuple[int, ...] = (2, 3, 4, 6)  # depth 1 is not offered: skipping all but one
    #                                         layer left the model near unigram quality
    head_fractions: tuple[float, ...] = (1.0, 0.75, 0.5, 0.25)
    bits: tuple[int, ...] = (32, 8, 4)
    int4_group: int = 32  # smallest group the CPU int4 kernel accepts (32/64/128/256)
    layer_rule: str = "prefix"  # see active_layers(); model.train measures all rules after pre-training
    #                            and stores the best in the checkpoint (measured: prefix, table in docs/model.md)

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd {self.n_embd} must be divisible by n_head {self.n_head}")
        for f in self.head_fractions:
            h = f * self.n_head
            if abs(h - round(h)) > 1e-9 or round(h) < 1:
                raise ValueError(f"head fraction {f} of {self.n_head} heads is not a whole count")
        if any(d < 1 or d > self.n_layer for d in self.depths):
            raise ValueError(f"depths {self.depths} must lie in 1..{self.n_layer}")
        if 4 in self.bits:
            widths = {round(f * self.n_head) * self.head_dim for f in self.head_fractions}
            bad = sorted(w for w in widths | {self.n_embd, self.mlp_ratio * self.n_embd}
                         if w % self.int4_group)
            if bad:
                raise ValueError(f"int4 needs every input width divisible by int4_group="
                                 f"{self.int4_group}; {bad} are not (raise head_dim or drop bits 4)")
        if self.layer_rule not in LAYER_RULES:
            raise ValueError(f"layer_rule {self.layer_rule!r}: allowed {LAYER_RULES}")


LAYER_RULES = ("prefix", "spread", "ends")


def active_layers(n_layer: int, depth: int, rule: str) -> tuple[int, ...]:
    """Which blocks run at ``depth``.

    * ``prefix``: the first ``depth`` blocks (early exit).
    * ``spread``: the first and last blocks always, the rest evenly spaced between them.
    * ``ends``:   the first ceil(depth/2) and last floor(depth/2) blocks (drop the middle).

    The first block is kept by every rule: skipping it broke the model in every measurement.
    The default was chosen by measuring all three after pre-training (model.train logs it).
    """
    if not 1 <= depth <= n_layer:
        raise ValueError(f"depth {depth} outside 1..{n_layer}")
    if rule == "prefix" or depth == n_layer:
        return tuple(range(depth))
    if rule == "spread":
        if depth == 1:
            return (0,)
        return tuple(round(i * (n_layer - 1) / (depth - 1)) for i in range(depth))
    if rule == "ends":
        head = (depth + 1) // 2
        return tuple(range(head)) + tuple(range(n_layer - (depth - head), n_layer))
    raise ValueError(f"layer rule {rule!r}: allowed {LAYER_RULES}")


class Block(nn.Module):
    """Pre-LN transformer block. The qkv weight rows are head-major — [head0: q k v][head1: …]
    — so the first h heads are the first 3·h·head_dim rows: a head mask is a row slice."""

    def __init__(self, c: ModelConfig):
        super().__init__()
        d, hd = c.n_embd, c.head_dim
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * c.n_head * hd)
        self.proj = nn.Linear(c.n_head * hd, d)
        self.ln2 = nn.LayerNorm(d)
        self.fc = nn.Linear(d, c.mlp_ratio * d)
        self.fc2 = nn.Linear(c.mlp_ratio * d, d)


@dataclass
class LayerPlan:
    """Everything one running block needs under one configuration (prepared once)."""

    layer: int
    n_head: int
    bits: int
    ln1: tuple[torch.Tensor, torch.Tensor]
    qkv: tuple
    proj: tuple
    ln2: tuple[torch.Tensor, torch.Tensor]
    fc: tuple
    fc2: tuple

    @property
    def key(self) -> tuple[int, int, int]:
        return (self.layer, self.n_head, self.bits)


@dataclass
class KVCache:
    """Per-sequence decoding state; see the module docstring for the switching rule."""

    k: torch.Tensor  # (n_layer, B, n_head, T, head_dim)
    v: torch.Tensor  # (n_layer, B, n_head, T, head_dim)
    resid: torch.Tensor  # (n_layer + 1, B, T, n_embd): input of each plan position
    length: int = 0  # tokens cached
    plan: tuple[tuple[int, int, int], ...] = ()  # the plan that filled the cache
    repairs: int = 0  # switches that needed re-running layers (for benchmarks)
    repaired_layers: int = 0

    def reset(self) -> None:
        self.length, self.plan = 0, ()


def _block_forward(x: torch.Tensor, p: LayerPlan, hd: int, cache: KVCache | None,
                   pos: int) -> torch.Tensor:
    """One block. x (B, t, d) -> (B, t, d); writes K/V (and nothing else) into the cache."""
    B, t, d = x.shape
    h = p.n_head
    a = F.layer_norm(x, (d,), p.ln1[0], p.ln1[1])
    qkv = quant.linear(a, p.qkv).view(B, t, h, 3, hd)  # (B, t, h, 3, hd)
    q, k, v = (qkv[:, :, :, i].transpose(1, 2) for i in range(3))  # each (B, h, t, hd)
    if cache is not None:
        cache.k[p.layer, :, :h, pos:pos + t] = k
        cache.v[p.layer, :, :h, pos:pos + t] = v
        k = cache.k[p.layer, :, :h, :pos + t]  # (B, h, pos+t, hd)
        v = cache.v[p.layer, :, :h, :pos + t]
    if t == 1:
        y = F.scaled_dot_product_attention(q, k, v)  # one query sees all cached keys
    elif pos == 0:
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    else:  # a chunk after a cached prefix: query i sees keys 0..pos+i
        mask = torch.ones(t, pos + t, dtype=torch.bool).tril(diagonal=pos)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    y = y.transpose(1, 2).reshape(B, t, h * hd)  # (B, t, h·hd)
    x = x + quant.linear(y, p.proj)
    m = F.layer_norm(x, (d,), p.ln2[0], p.ln2[1])
    return x + quant.linear(F.gelu(quant.linear(m, p.fc), approximate="tanh"), p.fc2)


def sample_token(logits: torch.Tensor, temperature: float, top_k: int | None,
                 gen: torch.Generator | None) -> int:
    """The next token from logits (1, vocab): argmax at temperature 0, else top-k sampling."""
    if temperature <= 0:
        return int(logits.argmax(-1))
    lg = logits / temperature
    if top_k:
        kth = torch.topk(lg, min(top_k, lg.shape[-1])).values[:, -1:]
        lg = lg.masked_fill(lg < kth, float("-inf"))
    return int(torch.multinomial(F.softmax(lg, -1), 1, generator=gen))


class ElasticGPT(nn.Module):
    """Byte-level GPT with run-time depth, head and precision switching.

    ``forward``/``generate`` run the *active* configuration (``set_config``). Training uses
    ``forward_train(idx, cfg)``, which builds fake-quantised plans from the live parameters
    so gradients flow (the inference plans are frozen packs made by ``prepare()``).
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = c = config
        self.wte = nn.Embedding(c.vocab_size, c.n_embd)  # tied with the output head
        self.wpe = nn.Embedding(c.block_size, c.n_embd)
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.n_layer))
        self.ln_f = nn.LayerNorm(c.n_embd)
        self.apply(self._init)
        for b in self.blocks:  # GPT-2 scaled init of residual projections
            nn.init.normal_(b.proj.weight, std=0.02 / math.sqrt(2 * c.n_layer))
            nn.init.normal_(b.fc2.weight, std=0.02 / math.sqrt(2 * c.n_layer))
        self.space: ConfigSpace = model_space(c.depths, c.head_fractions, c.bits)
        self._plans: dict[tuple, list[LayerPlan]] = {}
        self._active = self.full_config()
        self._plan: list[LayerPlan] | None = None

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)

    # ---- configurations ----------------------------------------------------------------
    def configs(self) -> list:
        """Every supported configuration (``space`` order: largest depth first)."""
        return list(self.space.configs)

    def full_config(self):
        c = self.config
        return self.space.make(depth=max(c.depths), heads=max(c.head_fractions), bits=max(c.bits))

    def smallest_config(self):
        c = self.config
        return self.space.make(depth=min(c.depths), heads=min(c.head_fractions), bits=min(c.bits))

    @property
    def active(self):
        return self._active

    def validate(self, cfg):
        """The space's configuration for ``cfg``: a ``Config``/(depth, heads, bits) tuple, an index,
        a canonical name (looked up, never parsed) or a mapping of knob values.

        Raises:
            ValueError: not a configuration of this model (the message lists what is allowed).
        """
        try:
            return self.space.configs[self.space.index(cfg)]
        except ConfigSpaceError as exc:
            c = self.config
            raise ValueError(f"invalid configuration {cfg!r}: {exc} (depths {list(c.depths)}, heads "
                             f"{list(c.head_fractions)}, bits {list(c.bits)})") from None

    def name(self, cfg=None) -> str:
        """Canonical name of ``cfg`` (default: the active configuration)."""
        return self.space.name_of(self.validate(cfg if cfg is not None else self._active))

    def set_config(self, cfg) -> None:
        """Validate and apply a configuration. Costs a dict lookup once ``prepare()`` ran."""
        cfg = self.validate(cfg)
        if not self._plans:
            self.prepare()
        self._active, self._plan = cfg, self._plans[cfg]

    def layers_for(self, depth: int) -> tuple[int, ...]:
        return active_layers(self.config.n_layer, depth, self.config.layer_rule)

    # ---- preparing the resident packs ------------------------------------------------------
    @torch.no_grad()
    def prepare(self) -> None:
        """Pre-slice and pack every (layer, head count, precision) once; build every plan.

        Called after loading or training; afterwards no configuration switch touches the
        fp32 master weights or the checkpoint.
        """
        c, hd = self.config, self.config.head_dim
        packs: dict[tuple[int, int, int], LayerPlan] = {}
        for li, b in enumerate(self.blocks):
            for bits in c.bits:
                # the MLP does not depend on the head count: one pack per (layer, bits), shared
                fc = quant.pack(b.fc.weight, b.fc.bias, bits, c.int4_group)
                fc2 = quant.pack(b.fc2.weight, b.fc2.bias, bits, c.int4_group)
                for f in c.head_fractions:
                    h = round(f * c.n_head)
                    packs[(li, h, bits)] = LayerPlan(
                        li, h, bits,
                        ln1=(b.ln1.weight.detach(), b.ln1.bias.detach()),
                        qkv=quant.pack(b.qkv.weight[:3 * h * hd], b.qkv.bias[:3 * h * hd],
                                       bits, c.int4_group),
                        proj=quant.pack(b.proj.weight[:, :h * hd], b.proj.bias, bits, c.int4_group),
                        ln2=(b.ln2.weight.detach(), b.ln2.bias.detach()),
                        fc=fc, fc2=fc2,
                    )
        self._packs = packs
        self._plans = {
            cfg: [packs[(li, round(cfg.heads * c.n_head), cfg.bits)]
                  for li in self.layers_for(cfg.depth)]
            for cfg in self.configs()
        }
        self._plan = self._plans[self._active]

    # ---- sizes ----------------------------------------------------------------------------
    def _shared_params(self) -> int:
        c = self.config
        return (c.vocab_size + c.block_size) * c.n_embd + 2 * c.n_embd  # embeddings + ln_f

    def active_params(self, cfg=None) -> int:
        """Parameters a forward pass under ``cfg`` reads (tied embedding counted once)."""
        cfg = self.validate(cfg or self._active)
        c, hd = self.config, self.config.head_dim
        h = round(cfg.heads * c.n_head)
        d, m = c.n_embd, c.mlp_ratio * c.n_embd
        per_layer = (4 * d + 3 * h * hd * (d + 1) + h * hd * d + d + d * m + m + m * d + d)
        return self._shared_params() + cfg.depth * per_layer

    def resident_bytes(self, cfg=None) -> int:
        """Bytes of weights the configuration reads per forward (its resident working set)."""
        cfg = self.validate(cfg or self._active)
        if not self._plans:
            self.prepare()
        total = self._shared_params() * 4
        for p in self._plans[cfg]:
            total += 4 * 4 * self.config.n_embd  # two LayerNorms, fp32
            total += sum(quant.packed_nbytes(x) for x in (p.qkv, p.proj, p.fc, p.fc2))
        return total

    def total_resident_bytes(self) -> int:
        """Everything held in memory: fp32 masters + every packed (layer, heads, bits) form."""
        if not self._plans:
            self.prepare()
        seen, total = set(), sum(p.numel() * p.element_size() for p in self.parameters())
        for lp in self._packs.values():
            for x in (lp.qkv, lp.proj, lp.fc, lp.fc2):
                for t in x[1:4]:
                    if isinstance(t, torch.Tensor) and t.data_ptr() not in seen:
                        seen.add(t.data_ptr())
                        total += t.numel() * t.element_size()
        return total

    # ---- forward ----------------------------------------------------------------------------
    def new_cache(self, batch: int = 1, max_len: int | None = None) -> KVCache:
        c = self.config
        T = max_len or c.block_size
        dev = self.wte.weight.device  # the cache lives where the model runs (cpu or cuda)
        return KVCache(
            k=torch.zeros(c.n_layer, batch, c.n_head, T, c.head_dim, device=dev),
            v=torch.zeros(c.n_layer, batch, c.n_head, T, c.head_dim, device=dev),
            resid=torch.zeros(c.n_layer + 1, batch, T, c.n_embd, device=dev),
        )

    def _embed(self, idx: torch.Tensor, pos: int) -> torch.Tensor:
        t = idx.shape[1]
        if pos + t > self.config.block_size:
            raise ValueError(f"sequence of {pos + t} tokens exceeds the context of "
                             f"{self.config.block_size}; crop the context first")
        return self.wte(idx) + self.wpe.weight[pos:pos + t]  # (B, t, d)

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x, (self.config.n_embd,), self.ln_f.weight, self.ln_f.bias)
        return F.linear(x, self.wte.weight)  # (B, t, vocab)

    @torch.no_grad()
    def forward(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """Logits for ``idx`` (B, t) under the active configuration -> (B, t, vocab).

        With a cache, ``idx`` are the *new* tokens after ``cache.length`` cached ones.
        """
        if self._plan is None:
            self.prepare()
        plan, hd = self._plan, self.config.head_dim
        if cache is None:
            x = self._embed(idx, 0)
            for p in plan:
                x = _block_forward(x, p, hd, None, 0)
            return self._head(x)
        pos, t = cache.length, idx.shape[1]
        keys = tuple(p.key for p in plan)
        if cache.plan != keys and pos > 0:
            self._repair(cache, plan, keys)
        x = self._embed(idx, pos)
        for j, p in enumerate(plan):
            cache.resid[j, :, pos:pos + t] = x
            x = _block_forward(x, p, hd, cache, pos)
        cache.resid[len(plan), :, pos:pos + t] = x
        cache.length, cache.plan = pos + t, keys
        return self._head(x)

    def _repair(self, cache: KVCache, plan: list[LayerPlan], keys: tuple) -> None:
        """Re-run the new plan's layers over the cached prefix from the first changed one."""
        j = 0
        while j < min(len(keys), len(cache.plan)) and keys[j] == cache.plan[j]:
            j += 1
        n = cache.length
        x = cache.resid[j, :, :n]  # the unchanged prefix's output = the input at position j
        for jj in range(j, len(plan)):
            x = _block_forward(x, plan[jj], self.config.head_dim, cache, 0)
            cache.resid[jj + 1, :, :n] = x
        cache.repairs += 1
        cache.repaired_layers += len(plan) - j

    # ---- training path --------------------------------------------------------------------
    def train_plan(self, cfg) -> list[LayerPlan]:
        """Differentiable plan: live parameter slices, fake-quantised for bits < 32."""
        c, hd = self.config, self.config.head_dim
        h = round(cfg.heads * c.n_head)
        g = c.int4_group

        def fq(w, b):
            return (32, quant.fake_quant(w, cfg.bits, g), None, b)

        plan = []
        for li in self.layers_for(cfg.depth):
            b = self.blocks[li]
            plan.append(LayerPlan(
                li, h, cfg.bits, (b.ln1.weight, b.ln1.bias),
                fq(b.qkv.weight[:3 * h * hd], b.qkv.bias[:3 * h * hd]),
                fq(b.proj.weight[:, :h * hd], b.proj.bias),
                (b.ln2.weight, b.ln2.bias),
                fq(b.fc.weight, b.fc.bias), fq(b.fc2.weight, b.fc2.bias)))
        return plan

    def forward_train(self, idx: torch.Tensor, cfg) -> torch.Tensor:
        """Logits (B, T, vocab) with gradients, for training and teacher-forced evaluation."""
        x = self._embed(idx, 0)
        for p in self.train_plan(cfg):
            x = _block_forward(x, p, self.config.head_dim, None, 0)
        return self._head(x)

    # ---- generation -------------------------------------------------------------------------
    @torch.no_grad()
    def stream(self, prompt: str | torch.Tensor, max_new_tokens: int = 200,
               temperature: float = 0.8, top_k: int | None = 40, seed: int | None = None):
        """Yield generated byte tokens one at a time.

        ``set_config`` may be called between yields: the next token is computed under the
        new configuration and the KV cache is repaired as the module docstring describes.
        When the context fills up, it is cropped to its last half and re-prefilled.
        """
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        ids = (torch.as_tensor(encode(prompt), dtype=torch.long) if isinstance(prompt, str)
               else prompt.long().flatten())
        if ids.numel() == 0:
            ids = torch.tensor([ord("\n")])
        T = self.config.block_size
        ids = ids[-(T - 1):]
        cache = self.new_cache(1, T)
        logits = self.forward(ids[None], cache)[:, -1]
        history = ids.tolist()
        for _ in range(max_new_tokens):
            nxt = sample_token(logits, temperature, top_k, gen)
            yield nxt
            history.append(nxt)
            if cache.length >= T:
                cache.reset()
                keep = torch.tensor(history[-(T // 2):])
                logits = self.forward(keep[None], cache)[:, -1]
            else:
                logits = self.forward(torch.tensor([[nxt]]), cache)[:, -1]

    def generate(self, prompt: str, max_new_tokens: int = 200, **kw) -> str:
        """Generate text after ``prompt`` under the active configuration."""
        return decode(list(self.stream(prompt, max_new_tokens, **kw)))

    # ---- checkpoints ---------------------------------------------------------------------------
    def checkpoint(self, meta: dict | None = None) -> dict:
        """A weights-only checkpoint: tensors + plain config values (loads with weights_only).

        ``meta["state_sha256"]`` is :func:`state_digest` of the tensors: ``model.load`` recomputes it
        and refuses a checkpoint whose weights changed on disk (flipped bytes load without error)."""
        state = {k: v.detach().clone() for k, v in self.state_dict().items()}
        return {"model_config": {k: list(v) if isinstance(v, tuple) else v
                                 for k, v in asdict(self.config).items()},
                "state_dict": state,
                "meta": {**(meta or {}), "state_sha256": state_digest(state)}}

    @classmethod
    def from_checkpoint(cls, ckpt: dict) -> ElasticGPT:
        cfg = {k: tuple(v) if isinstance(v, list) else v for k, v in ckpt["model_config"].items()}
        m = cls(ModelConfig(**cfg))
        m.load_state_dict(ckpt["state_dict"])
        m.meta = dict(ckpt.get("meta", {}))
        m.eval()
        m.prepare()
        return m



def state_digest(state: dict) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes (name order): the integrity check
    stored in a checkpoint's ``meta["state_sha256"]``."""
    import hashlib

    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name]
        if not isinstance(t, torch.Tensor):
            continue
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
