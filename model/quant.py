"""Weight quantisation: the one implementation used by training (fake-quant) and inference.

* int8: symmetric, one scale per output row: ``w ≈ q · s``, ``q ∈ [-127, 127]``.
* int4: asymmetric, one (scale, zero) per output row and group of ``group`` input columns:
  ``w ≈ (q − 8) · s + z``, ``q ∈ [0, 15]`` — the layout torch's CPU int4 kernel
  (``_weight_int4pack_mm_for_cpu``) consumes.

Scales and zeros are rounded to bfloat16 *before* the integers are chosen, because the CPU
integer kernels take bf16 scales: training's fake-quant then sees exactly the weights the
kernels use.
"""

from __future__ import annotations

import torch


def quantize_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, K) float -> (q int8 (N, K), scale float32 (N,)), symmetric per row."""
    amax = w.detach().abs().amax(dim=1).clamp_min(1e-8)
    scale = (amax / 127.0).to(torch.bfloat16).float()
    q = torch.clamp(torch.round(w.detach() / scale[:, None]), -127, 127).to(torch.int8)
    return q, scale


def dequantize_int8(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return q.float() * scale[:, None]


def quantize_int4(w: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N, K) float -> (q int32 in [0,15] (N, K), scale (K/g, N), zero (K/g, N)) float32."""
    n, k = w.shape
    if k % group:
        raise ValueError(f"int4 needs the input width {k} divisible by the group size {group}")
    wg = w.detach().reshape(n, k // group, group)  # (N, G, g)
    lo, hi = wg.amin(dim=2), wg.amax(dim=2)  # (N, G)
    scale = ((hi - lo).clamp_min(1e-8) / 15.0).to(torch.bfloat16).float()
    zero = (lo + 8.0 * scale).to(torch.bfloat16).float()
    q = torch.clamp(torch.round((wg - zero[..., None]) / scale[..., None]) + 8, 0, 15)
    return q.reshape(n, k).to(torch.int32), scale.T.contiguous(), zero.T.contiguous()


def dequantize_int4(q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, group: int) -> torch.Tensor:
    s = scale.T.repeat_interleave(group, dim=1)  # (N, K)
    z = zero.T.repeat_interleave(group, dim=1)
    return (q.float() - 8.0) * s + z


def fake_quant(w: torch.Tensor, bits: int, group: int) -> torch.Tensor:
    """Quantise-dequantise with a straight-through gradient (for quantisation-aware steps)."""
    if bits == 32:
        return w
    if bits == 8:
        dq = dequantize_int8(*quantize_int8(w))
    elif bits == 4:
        dq = dequantize_int4(*quantize_int4(w, group), group)
    else:
        raise ValueError(f"bits must be 32, 8 or 4, got {bits}")
    return w + (dq - w).detach()


# ---- packed forms for the CPU integer kernels --------------------------------------------
# Measured on the development host (figures and method in docs/model.md, "Which kernels, measured
# here"; the one-off micro-benchmark script was not kept): with bf16 activations the weight-only
# kernels are as fast as fp32 F.linear at batch 1 (int8 ≈ 6 µs, int4 ≈ 5 µs vs 6.5 µs for a
# 160×480 layer), but with fp32 activations they are 9–25× slower — so activations are cast
# to bf16 around each quantised matmul.

#: The last element of a pack that is dequantised per matmul (off the CPU: no int8/int4 kernel is used).
DEQUANT = "dequant"


def pack(w: torch.Tensor, b: torch.Tensor | None, bits: int, group: int, generic: bool | None = None) -> tuple:
    """A linear layer's weights in the form its precision's kernel consumes.

    Returns ``(bits, weight, scales, bias)``; ``linear()`` below is the only consumer.

    ``generic`` (default: the weights are not on the CPU, e.g. CUDA): weight-only quantised storage
    (int8 codes; int4 codes one per byte, so int4 saves no memory over int8 there) dequantised to the
    activations' dtype at every matmul, ending in ``DEQUANT``. It is the honest path on a GPU here:
    the CPU's packed int8/int4 kernels do not exist on CUDA, and no GPU integer kernel is claimed.
    """
    w = w.detach().float().contiguous()
    b = None if b is None else b.detach().float().contiguous()
    if bits == 32:
        return (32, w, None, b)
    if generic or (generic is None and w.device.type != "cpu"):
        if bits == 8:
            q, s = quantize_int8(w)
            return (8, q.contiguous(), s, b, DEQUANT)
        if bits == 4:
            q, s, z = quantize_int4(w, group)
            return (4, q.to(torch.uint8).contiguous(), torch.stack([s, z], dim=-1).contiguous(), b, group, DEQUANT)
    if bits == 8:
        q, s = quantize_int8(w)
        return (8, q.contiguous(), s.to(torch.bfloat16), b)
    if bits == 4:
        q, s, z = quantize_int4(w, group)
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1)
        sz = torch.stack([s, z], dim=-1).to(torch.bfloat16).contiguous()  # (K/g, N, 2)
        return (4, packed, sz, b, group)
    raise ValueError(f"bits must be 32, 8 or 4, got {bits}")


def packed_nbytes(p: tuple) -> int:
    """Resident bytes of a packed layer (weights + scales + bias)."""
    return sum(t.numel() * t.element_size() for t in p[1:4] if isinstance(t, torch.Tensor))


def linear(x: torch.Tensor, p: tuple) -> torch.Tensor:
    """y = x Wᵀ + b for a packed layer; x (..., K) float32 -> (..., N) float32."""
    bits = p[0]
    if bits == 32:
        return torch.nn.functional.linear(x, p[1], p[3])
    if p[-1] == DEQUANT:  # dequantise per matmul (pack's ``generic`` path)
        if bits == 8:
            w = p[1].float() * p[2][:, None]
        else:
            sz = p[2]
            w = dequantize_int4(p[1].to(torch.int32), sz[..., 0], sz[..., 1], p[4])
        return torch.nn.functional.linear(x, w, p[3])
    shape = x.shape
    x2 = x.reshape(-1, shape[-1]).to(torch.bfloat16)
    if bits == 8:
        y = torch.ops.aten._weight_int8pack_mm(x2, p[1], p[2])
    else:
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(x2, p[1], p[4], p[2])
    y = y.float().reshape(*shape[:-1], -1)
    return y if p[3] is None else y + p[3]
