"""Blockwise 8-bit dynamic quantisation and the 8-bit Adam moment update of COAP (arXiv 2412.00071).

The official 8-bit optimiser (`bytedance/coap` at commit deabc3a, `coap_torch/optimizer/adamw_8bit.py`, `step()`)
keeps the low-rank moments M and V as bitsandbytes blockwise codes (block 4096, fp32 absmax), dequantises them,
runs the Adam update, computes the normalised update from the fp32 moments and requantises. It uses the *signed*
dynamic map for both moments; we keep the signed map for M and give V (never negative) an *unsigned* map, which
spends all 256 codes on [0, 1] (our spec §5, defect 7; bitsandbytes does the same for its second state).

The dynamic map is our own construction of the "dynamic tree" data type of Dettmers et al. (arXiv 2110.02861, §2):
a code is a decimal exponent plus a linear fraction, so it has a large dynamic range (1e-7 .. 1) with relative
precision that grows with magnitude; see :func:`create_dynamic_map`.

Quantisation: per block of `block_size` consecutive elements, ``absmax = max |x|``; each ``x / absmax`` maps to the
nearest code (a binary search over the 255 midpoints of the sorted map); the codes are uint8 indices into the map.

Accuracy of the Triton kernels against the torch twins (checked by ``benchmarks/gpu/run.sh`` on CUDA and, with tiny
sizes, in its CPU dry run under the test suite), for fp32 and bf16 / fp16 inputs alike (loads upcast to fp32):
``absmax`` and dequantised values are exact (the same fp32 max and product); the normalised update ``N`` of
:func:`adam_update_8bit` satisfies ``max |kernel - twin| / max |twin| <= 1e-4`` (fp32 arithmetic in the same order,
up to fused multiply-adds); codes agree except where a value lies on a midpoint within rounding, where they are one
code apart, on at most 0.1 % of the elements. The bound is against the twin; the quantisation error itself is the
map's (relative precision of a code, see :func:`create_dynamic_map`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .dispatch import FLOAT_DTYPES, Impl, check_floating, load_triton_kernels, resolve_impl

N_CODES = 256

# Decades per sign: the signed map gives each sign decades 10^-6 .. 10^0 (2^i codes in decade i, 127 in all);
# the unsigned map has one more decade (10^-7 .. 10^0, 255 codes).
_SIGNED_DECADES = 7
_UNSIGNED_DECADES = 8


def _decade_codes(n_decades: int) -> list[float]:
    """Positive codes: decade i (i = 0 .. n_decades-1) spans (0.1, 1] * 10^(i - n_decades + 1) with 2^i codes.

    The fraction is linear within a decade and each decade's top code is the next decade's bottom edge, so the gap
    between neighbouring codes is the same within a decade and across its lower boundary. The top code is exactly 1.
    """
    codes: list[float] = []
    for decade in range(n_decades):
        scale = 10.0 ** (decade - n_decades + 1)
        count = 2**decade
        codes.extend(scale * (0.1 + 0.9 * k / count) for k in range(1, count + 1))
    return codes


def create_dynamic_map(signed: bool) -> torch.Tensor:
    """The 256-code dynamic (decimal exponent + linear fraction) 8-bit map, sorted ascending.

    - `signed=True` (for the first moment M): ``0``; ``±c`` for the 127 codes ``c`` of decades 10^-6 .. 10^0
      (2^i linear codes in decade i, top code exactly 1, so the map spans [-1, 1]); and one extra code ``1e-7``
      (256 codes need one more than the symmetric 255).
    - `signed=False` (for the second moment V): ``0`` and the 255 codes of decades 10^-7 .. 10^0 (2^i codes in
      decade i), all in [0, 1]: twice the resolution of the signed map's positive half, and no negative codes.

    Args:
        signed (`bool`): Signed map (M) or unsigned map (V).

    Returns:
        `torch.Tensor` of shape `(256,)`: fp32 codes on CPU, strictly increasing. Move it to the state's device.
    """
    if signed:
        positive = _decade_codes(_SIGNED_DECADES)
        codes = [-c for c in positive] + [0.0, 10.0 ** (-_SIGNED_DECADES)] + positive
    else:
        codes = [0.0, *_decade_codes(_UNSIGNED_DECADES)]
    qmap = torch.tensor(sorted(codes), dtype=torch.float64).to(torch.float32)
    if qmap.numel() != N_CODES:
        raise AssertionError(f"dynamic map has {qmap.numel()} codes, expected {N_CODES}")
    return qmap


def _midpoints(qmap: torch.Tensor) -> torch.Tensor:
    """Decision boundaries of nearest-code rounding: the 255 midpoints of neighbouring codes (fp32)."""
    return (qmap[:-1] + qmap[1:]) * 0.5


def _n_blocks(numel: int, block_size: int) -> int:
    return math.ceil(numel / block_size)


def _check_qmap(name: str, qmap: torch.Tensor) -> None:
    if qmap.dtype != torch.float32 or qmap.dim() != 1 or qmap.numel() != N_CODES:
        raise ValueError(f"{name} must be a 1-D float32 map of {N_CODES} sorted codes, got {qmap.dtype} {qmap.shape}")


def _check_block_size(block_size: int) -> None:
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be a positive int, got {block_size!r}")


def _check_codes(codes: torch.Tensor, absmax: torch.Tensor, numel: int, block_size: int, what: str) -> None:
    if codes.dtype != torch.uint8 or codes.numel() != numel or not codes.is_contiguous():
        raise ValueError(
            f"{what} codes must be a contiguous uint8 tensor of {numel} elements, "
            f"got {codes.dtype} {tuple(codes.shape)} (contiguous={codes.is_contiguous()})"
        )
    n_blocks = _n_blocks(numel, block_size)
    if absmax.dtype != torch.float32 or absmax.numel() != n_blocks or not absmax.is_contiguous():
        raise ValueError(
            f"{what} absmax must be a contiguous float32 tensor of {n_blocks} blocks, "
            f"got {absmax.dtype} {tuple(absmax.shape)}"
        )


# ----------------------------------------------------------------------------------------------------------------
# quantize / dequantize
# ----------------------------------------------------------------------------------------------------------------


def _quantize_blockwise_torch(
    x: torch.Tensor, qmap: torch.Tensor, *, block_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pure-torch twin of :func:`quantize_blockwise`."""
    flat = x.reshape(-1).float()
    numel = flat.numel()
    n_blocks = _n_blocks(numel, block_size)
    blocks = F.pad(flat, (0, n_blocks * block_size - numel)).view(n_blocks, block_size)
    absmax = blocks.abs().amax(dim=1)
    inverse = torch.where(absmax > 0, 1.0 / absmax, torch.zeros_like(absmax))
    codes = torch.bucketize(blocks * inverse[:, None], _midpoints(qmap), out_int32=True).to(torch.uint8)
    return codes.view(-1)[:numel].contiguous(), absmax


def _quantize_blockwise_triton(
    x: torch.Tensor, qmap: torch.Tensor, *, block_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton twin of :func:`quantize_blockwise`."""
    kernels = load_triton_kernels(x.device)
    flat = x.reshape(-1)
    codes = torch.empty(flat.numel(), dtype=torch.uint8, device=x.device)
    absmax = torch.empty(_n_blocks(flat.numel(), block_size), dtype=torch.float32, device=x.device)
    if flat.numel() > 0:
        kernels.launch_quantize(flat.contiguous(), _midpoints(qmap), codes, absmax, block_size)
    return codes, absmax


@torch.library.custom_op("coap_optim::quantize_blockwise", mutates_args=())
def _quantize_blockwise_op(
    x: torch.Tensor, qmap: torch.Tensor, block_size: int, impl: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """`torch.ops.coap_optim.quantize_blockwise`; `impl` is already resolved."""
    twin = _quantize_blockwise_triton if impl == "triton" else _quantize_blockwise_torch
    return twin(x, qmap, block_size=block_size)


@_quantize_blockwise_op.register_fake
def _(x, qmap, block_size, impl):
    codes = torch.empty(x.numel(), dtype=torch.uint8, device=x.device)
    return codes, torch.empty(_n_blocks(x.numel(), block_size), dtype=torch.float32, device=x.device)


def quantize_blockwise(
    x: torch.Tensor, qmap: torch.Tensor, *, block_size: int, impl: Impl = "auto"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Blockwise absmax quantisation of `x` (flattened) onto the 8-bit map `qmap`.

    Args:
        x (`torch.Tensor` of any shape):
            Values to quantise (fp32, bf16 or fp16), flattened in row-major order.
        qmap (`torch.Tensor` of shape `(256,)`):
            Sorted fp32 codes from :func:`create_dynamic_map`, on `x`'s device.
        block_size (`int`):
            Elements per block; the last block may be partial. Triton pads each block to the next power of two, so
            powers of two (e.g. 256 .. 4096) waste nothing.
        impl (`str`, *optional*, defaults to `"auto"`): `"triton"`, `"torch"` or `"auto"`.

    Returns:
        `tuple[torch.Tensor, torch.Tensor]`: `codes` (uint8, shape `(x.numel(),)`, indices into `qmap`) and
        `absmax` (fp32, shape `(ceil(x.numel() / block_size),)`, the max |x| of each block; 0 for an all-zero
        block, whose codes then all point at the code 0).
    """
    check_floating("x", x)
    _check_qmap("qmap", qmap)
    _check_block_size(block_size)
    backend = resolve_impl(impl, x, qmap)
    if torch.compiler.is_compiling():
        return _quantize_blockwise_op(x, qmap, block_size, backend)
    twin = _quantize_blockwise_triton if backend == "triton" else _quantize_blockwise_torch
    return twin(x, qmap, block_size=block_size)


def _dequantize_blockwise_torch(
    codes: torch.Tensor, absmax: torch.Tensor, qmap: torch.Tensor, *, block_size: int, shape: Sequence[int]
) -> torch.Tensor:
    """Pure-torch twin of :func:`dequantize_blockwise`."""
    numel = codes.numel()
    scale = absmax.repeat_interleave(block_size)[:numel]
    return (qmap[codes.reshape(-1).long()] * scale).view(tuple(shape))


def _dequantize_blockwise_triton(
    codes: torch.Tensor, absmax: torch.Tensor, qmap: torch.Tensor, *, block_size: int, shape: Sequence[int]
) -> torch.Tensor:
    """Triton twin of :func:`dequantize_blockwise`."""
    kernels = load_triton_kernels(codes.device)
    out = torch.empty(tuple(shape), dtype=torch.float32, device=codes.device)
    if out.numel() > 0:
        kernels.launch_dequantize(codes, absmax, qmap, out, block_size)
    return out


@torch.library.custom_op("coap_optim::dequantize_blockwise", mutates_args=())
def _dequantize_blockwise_op(
    codes: torch.Tensor, absmax: torch.Tensor, qmap: torch.Tensor, block_size: int, shape: list[int], impl: str
) -> torch.Tensor:
    """`torch.ops.coap_optim.dequantize_blockwise`; `impl` is already resolved."""
    twin = _dequantize_blockwise_triton if impl == "triton" else _dequantize_blockwise_torch
    return twin(codes, absmax, qmap, block_size=block_size, shape=shape)


@_dequantize_blockwise_op.register_fake
def _(codes, absmax, qmap, block_size, shape, impl):
    return torch.empty(tuple(shape), dtype=torch.float32, device=codes.device)


def dequantize_blockwise(
    codes: torch.Tensor,
    absmax: torch.Tensor,
    qmap: torch.Tensor,
    *,
    block_size: int,
    shape: Sequence[int],
    impl: Impl = "auto",
) -> torch.Tensor:
    """Inverse of :func:`quantize_blockwise`: ``qmap[codes] * absmax[block]``.

    Args:
        codes (`torch.Tensor` of shape `(numel,)`): Contiguous uint8 codes.
        absmax (`torch.Tensor` of shape `(ceil(numel / block_size),)`): Contiguous fp32 block scales.
        qmap (`torch.Tensor` of shape `(256,)`): The map the codes were made with.
        block_size (`int`): The block size the codes were made with.
        shape (`Sequence[int]`): Output shape, with `numel` elements.
        impl (`str`, *optional*, defaults to `"auto"`): `"triton"`, `"torch"` or `"auto"`.

    Returns:
        `torch.Tensor` of shape `shape`: fp32 values.
    """
    _check_qmap("qmap", qmap)
    _check_block_size(block_size)
    shape = [int(size) for size in shape]
    _check_codes(codes, absmax, math.prod(shape), block_size, "the")
    backend = resolve_impl(impl, codes, absmax, qmap)
    if torch.compiler.is_compiling():
        return _dequantize_blockwise_op(codes, absmax, qmap, block_size, shape, backend)
    twin = _dequantize_blockwise_triton if backend == "triton" else _dequantize_blockwise_torch
    return twin(codes, absmax, qmap, block_size=block_size, shape=shape)


# ----------------------------------------------------------------------------------------------------------------
# 8-bit Adam moment update
# ----------------------------------------------------------------------------------------------------------------


def _adam_update_8bit_torch(
    grad: torch.Tensor,
    codes_m: torch.Tensor,
    absmax_m: torch.Tensor,
    codes_v: torch.Tensor,
    absmax_v: torch.Tensor,
    qmap_m: torch.Tensor,
    qmap_v: torch.Tensor,
    *,
    beta1: float,
    beta2: float,
    eps: float,
    denom_scale: float,
    block_size: int,
) -> torch.Tensor:
    """Pure-torch twin of :func:`adam_update_8bit` (same arithmetic order as the kernel)."""
    flat_grad = grad.reshape(-1).float()
    shape = flat_grad.shape
    exp_avg = _dequantize_blockwise_torch(codes_m, absmax_m, qmap_m, block_size=block_size, shape=shape)
    exp_avg_sq = _dequantize_blockwise_torch(codes_v, absmax_v, qmap_v, block_size=block_size, shape=shape)
    exp_avg = exp_avg * beta1 + (1.0 - beta1) * flat_grad
    exp_avg_sq = exp_avg_sq * beta2 + (1.0 - beta2) * flat_grad * flat_grad
    update = exp_avg / (exp_avg_sq.sqrt() * denom_scale + eps)
    for moment, qmap, codes, absmax in ((exp_avg, qmap_m, codes_m, absmax_m), (exp_avg_sq, qmap_v, codes_v, absmax_v)):
        new_codes, new_absmax = _quantize_blockwise_torch(moment, qmap, block_size=block_size)
        codes.view(-1).copy_(new_codes)
        absmax.view(-1).copy_(new_absmax)
    return update.view(grad.shape)


def _adam_update_8bit_triton(
    grad: torch.Tensor,
    codes_m: torch.Tensor,
    absmax_m: torch.Tensor,
    codes_v: torch.Tensor,
    absmax_v: torch.Tensor,
    qmap_m: torch.Tensor,
    qmap_v: torch.Tensor,
    *,
    beta1: float,
    beta2: float,
    eps: float,
    denom_scale: float,
    block_size: int,
) -> torch.Tensor:
    """Triton twin of :func:`adam_update_8bit`: one program per quantisation block."""
    kernels = load_triton_kernels(grad.device)
    out = torch.empty(grad.shape, dtype=torch.float32, device=grad.device)
    if grad.numel() == 0:
        return out
    kernels.launch_adam8bit(
        grad.reshape(-1).contiguous(),
        codes_m,
        absmax_m,
        codes_v,
        absmax_v,
        qmap_m,
        qmap_v,
        _midpoints(qmap_m),
        _midpoints(qmap_v),
        out,
        beta1=beta1,
        beta2=beta2,
        eps=eps,
        denom_scale=denom_scale,
        block_size=block_size,
    )
    return out


@torch.library.custom_op("coap_optim::adam_update_8bit", mutates_args=("codes_m", "absmax_m", "codes_v", "absmax_v"))
def _adam_update_8bit_op(
    grad: torch.Tensor,
    codes_m: torch.Tensor,
    absmax_m: torch.Tensor,
    codes_v: torch.Tensor,
    absmax_v: torch.Tensor,
    qmap_m: torch.Tensor,
    qmap_v: torch.Tensor,
    beta1: float,
    beta2: float,
    eps: float,
    denom_scale: float,
    block_size: int,
    impl: str,
) -> torch.Tensor:
    """`torch.ops.coap_optim.adam_update_8bit`; `impl` is already resolved."""
    twin = _adam_update_8bit_triton if impl == "triton" else _adam_update_8bit_torch
    return twin(
        grad,
        codes_m,
        absmax_m,
        codes_v,
        absmax_v,
        qmap_m,
        qmap_v,
        beta1=beta1,
        beta2=beta2,
        eps=eps,
        denom_scale=denom_scale,
        block_size=block_size,
    )


@_adam_update_8bit_op.register_fake
def _(grad, codes_m, absmax_m, codes_v, absmax_v, qmap_m, qmap_v, beta1, beta2, eps, denom_scale, block_size, impl):
    return torch.empty(grad.shape, dtype=torch.float32, device=grad.device)


def adam_update_8bit(
    grad: torch.Tensor,
    codes_m: torch.Tensor,
    absmax_m: torch.Tensor,
    codes_v: torch.Tensor,
    absmax_v: torch.Tensor,
    qmap_m: torch.Tensor,
    qmap_v: torch.Tensor,
    *,
    beta1: float,
    beta2: float,
    eps: float,
    denom_scale: float,
    block_size: int,
    impl: Impl = "auto",
) -> torch.Tensor:
    """Adam moment update on 8-bit blockwise-quantised moments; returns the normalised update.

    Dequantises ``M = qmap_m[codes_m] * absmax_m`` and ``V = qmap_v[codes_v] * absmax_v``, updates
    ``M = beta1 * M + (1 - beta1) * grad`` and ``V = beta2 * V + (1 - beta2) * grad^2`` in fp32, computes
    ``N = M / (sqrt(V) * denom_scale + eps)`` from these fp32 moments (as the official code does), then requantises
    M and V into the given code and absmax tensors in place.

    Args:
        grad (`torch.Tensor` of any shape, `numel` elements):
            Gradient (usually the projected low-rank gradient), fp32, bf16 or fp16; flattened row-major.
        codes_m (`torch.Tensor` of shape `(numel,)`): Contiguous uint8 codes of M, updated in place.
        absmax_m (`torch.Tensor` of shape `(ceil(numel / block_size),)`): Contiguous fp32 scales of M, in place.
        codes_v (`torch.Tensor` of shape `(numel,)`): Contiguous uint8 codes of V, updated in place.
        absmax_v (`torch.Tensor` of shape `(ceil(numel / block_size),)`): Contiguous fp32 scales of V, in place.
        qmap_m (`torch.Tensor` of shape `(256,)`): Map of M, normally `create_dynamic_map(signed=True)`.
        qmap_v (`torch.Tensor` of shape `(256,)`): Map of V, normally `create_dynamic_map(signed=False)`.
        beta1 (`float`): First-moment decay.
        beta2 (`float`): Second-moment decay.
        eps (`float`): Added to the scaled square root of V.
        denom_scale (`float`): Multiplies ``sqrt(V)`` (1 in the official convention).
        block_size (`int`): Quantisation block size the codes were made with.
        impl (`str`, *optional*, defaults to `"auto"`): `"triton"`, `"torch"` or `"auto"`.

    Returns:
        `torch.Tensor` of `grad.shape`: N in fp32, contiguous.
    """
    if grad.dtype not in FLOAT_DTYPES:
        raise TypeError(f"grad must have dtype in {FLOAT_DTYPES}, got {grad.dtype}")
    _check_qmap("qmap_m", qmap_m)
    _check_qmap("qmap_v", qmap_v)
    _check_block_size(block_size)
    _check_codes(codes_m, absmax_m, grad.numel(), block_size, "exp_avg")
    _check_codes(codes_v, absmax_v, grad.numel(), block_size, "exp_avg_sq")
    backend = resolve_impl(impl, grad, codes_m, absmax_m, codes_v, absmax_v, qmap_m, qmap_v)
    if torch.compiler.is_compiling():
        return _adam_update_8bit_op(
            grad,
            codes_m,
            absmax_m,
            codes_v,
            absmax_v,
            qmap_m,
            qmap_v,
            beta1,
            beta2,
            eps,
            denom_scale,
            block_size,
            backend,
        )
    twin = _adam_update_8bit_triton if backend == "triton" else _adam_update_8bit_torch
    return twin(
        grad,
        codes_m,
        absmax_m,
        codes_v,
        absmax_v,
        qmap_m,
        qmap_v,
        beta1=beta1,
        beta2=beta2,
        eps=eps,
        denom_scale=denom_scale,
        block_size=block_size,
    )
