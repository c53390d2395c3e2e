"""Triton kernels of COAP (arXiv 2412.00071) and their launchers.

This module imports Triton at import time, so nothing imports it except
:func:`coap_optim.kernels.dispatch.load_triton_kernels`, and only when ``impl="triton"`` is chosen (STYLE rule 6).
Under ``TRITON_INTERPRET=1`` (set before this module is imported) the kernels run on CPU tensors in the Triton
interpreter, which is how the test suite checks them against their pure-torch twins.

Kernels (the design card of the paper's release, `bytedance/coap` at commit deabc3a, asks for these three):

* :func:`project_update_kernel`: ``g = A @ B`` tile by tile (``tl.dot`` over K blocks, fp32 accumulator), with the
  Adam moment update and the normalised update ``N = M / (sqrt(V) * denom_scale + eps)`` in the epilogue. RIGHT
  projection uses ``A = G, B = P^T``, LEFT uses ``A = P^T, B = G``; both are strided views, nothing is copied.
* :func:`back_project_apply_kernel`: ``U = A @ B`` (RIGHT ``N @ P``, LEFT ``P @ N``) with the parameter update in
  the epilogue, so the full-size ``U`` never exists in memory.
* :func:`quantize_kernel`, :func:`dequantize_kernel`, :func:`adam8bit_kernel`: blockwise 8-bit dynamic
  quantisation (one program per quantisation block), the last one dequantising M and V, applying the Adam moment
  update and requantising both in place (Dettmers et al., arXiv 2110.02861, §2).

Only block sizes (and the ``tl.dot`` precision) are ``tl.constexpr``; betas, eps, step sizes and decay are runtime
scalars, so changing a hyperparameter never recompiles. Loads upcast to fp32 and all arithmetic is fp32 (the
interpreter computes bf16 arithmetic wrongly; see the package notes); stores cast to the destination dtype.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# Every quantisation map has 256 codes, so the nearest-code search has 255 midpoints and 8 halving steps.
_N_SEARCH_STEPS = 8


@triton.jit
def _tile_matmul(
    a_ptr,
    b_ptr,
    offs_m,
    offs_n,
    size_m,
    size_n,
    size_k,
    stride_am,
    stride_ak,
    stride_bk,
    stride_bn,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
):
    """One (BLOCK_M, BLOCK_N) tile of ``A @ B`` in fp32, for strided A (size_m, size_k) and B (size_k, size_n)."""
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    mask_m = offs_m[:, None] < size_m
    mask_n = offs_n[None, :] < size_n
    for k_start in range(0, size_k, BLOCK_K):
        offs_k = k_start + tl.arange(0, BLOCK_K).to(tl.int64)
        a = tl.load(
            a_ptr + offs_m[:, None] * stride_am + offs_k[None, :] * stride_ak,
            mask=mask_m & (offs_k[None, :] < size_k),
            other=0.0,
        ).to(tl.float32)
        b = tl.load(
            b_ptr + offs_k[:, None] * stride_bk + offs_n[None, :] * stride_bn,
            mask=(offs_k[:, None] < size_k) & mask_n,
            other=0.0,
        ).to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=INPUT_PRECISION)
    return acc


@triton.jit
def project_update_kernel(
    a_ptr,
    b_ptr,
    exp_avg_ptr,
    exp_avg_sq_ptr,
    out_ptr,
    size_m,
    size_n,
    size_k,
    stride_am,
    stride_ak,
    stride_bk,
    stride_bn,
    stride_mm,
    stride_mn,
    stride_vm,
    stride_vn,
    stride_om,
    stride_on,
    beta1,
    one_minus_beta1,
    beta2,
    one_minus_beta2,
    eps,
    denom_scale,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
):
    """``g = A @ B``; ``M = b1 M + (1-b1) g``; ``V = b2 V + (1-b2) g^2``; ``N = M / (sqrt(V) * denom_scale + eps)``.

    M and V (fp32, shape (size_m, size_n)) are updated in place; N (fp32) is written to ``out_ptr``.
    """
    offs_m = (tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    offs_n = (tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    g = _tile_matmul(
        a_ptr,
        b_ptr,
        offs_m,
        offs_n,
        size_m,
        size_n,
        size_k,
        stride_am,
        stride_ak,
        stride_bk,
        stride_bn,
        BLOCK_M,
        BLOCK_N,
        BLOCK_K,
        INPUT_PRECISION,
    )
    mask = (offs_m[:, None] < size_m) & (offs_n[None, :] < size_n)
    m_ptrs = exp_avg_ptr + offs_m[:, None] * stride_mm + offs_n[None, :] * stride_mn
    v_ptrs = exp_avg_sq_ptr + offs_m[:, None] * stride_vm + offs_n[None, :] * stride_vn
    exp_avg = tl.load(m_ptrs, mask=mask, other=0.0)
    exp_avg_sq = tl.load(v_ptrs, mask=mask, other=0.0)
    exp_avg = exp_avg * beta1 + one_minus_beta1 * g
    exp_avg_sq = exp_avg_sq * beta2 + one_minus_beta2 * g * g
    update = tl.div_rn(exp_avg, tl.sqrt_rn(exp_avg_sq) * denom_scale + eps)
    tl.store(m_ptrs, exp_avg, mask=mask)
    tl.store(v_ptrs, exp_avg_sq, mask=mask)
    tl.store(out_ptr + offs_m[:, None] * stride_om + offs_n[None, :] * stride_on, update, mask=mask)


@triton.jit
def back_project_apply_kernel(
    a_ptr,
    b_ptr,
    w_ptr,
    size_m,
    size_n,
    size_k,
    stride_am,
    stride_ak,
    stride_bk,
    stride_bn,
    stride_wm,
    stride_wn,
    step_size,
    keep,
    decay_before,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
):
    """``U = A @ B`` tile by tile, then ``W <- W * keep - step_size * U`` (decay first) or ``(W - step_size * U) * keep``.

    ``keep = 1 - decay``. W (size_m, size_n) may be fp32, bf16 or fp16: it is upcast on load and cast back on store.
    """
    offs_m = (tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    offs_n = (tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    update = _tile_matmul(
        a_ptr,
        b_ptr,
        offs_m,
        offs_n,
        size_m,
        size_n,
        size_k,
        stride_am,
        stride_ak,
        stride_bk,
        stride_bn,
        BLOCK_M,
        BLOCK_N,
        BLOCK_K,
        INPUT_PRECISION,
    )
    mask = (offs_m[:, None] < size_m) & (offs_n[None, :] < size_n)
    w_ptrs = w_ptr + offs_m[:, None] * stride_wm + offs_n[None, :] * stride_wn
    weight = tl.load(w_ptrs, mask=mask, other=0.0).to(tl.float32)
    if decay_before:  # noqa: SIM108 (a runtime scalar branch; keep the plain if/else for the Triton frontend)
        weight = weight * keep - step_size * update
    else:
        weight = (weight - step_size * update) * keep
    tl.store(w_ptrs, weight.to(w_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _nearest_code(normalized, mids_ptr, N_STEPS: tl.constexpr):
    """Index of the nearest code: the number of midpoints strictly below each value (branch-free binary search).

    With 2**N_STEPS codes and 2**N_STEPS - 1 sorted midpoints, every probe stays in bounds, so no mask is needed.
    """
    index = tl.zeros(normalized.shape, dtype=tl.int32)
    for step in tl.static_range(N_STEPS):
        half = 1 << (N_STEPS - 1 - step)
        probe = tl.load(mids_ptr + index + (half - 1))
        index = tl.where(probe < normalized, index + half, index)
    return index


@triton.jit
def _quantize_block(values, mask, offs, block_id, mids_ptr, codes_ptr, absmax_ptr, N_STEPS: tl.constexpr):
    """Store the codes (uint8) and absmax (fp32) of one block of fp32 ``values``."""
    absmax = tl.max(tl.where(mask, tl.abs(values), 0.0), axis=0)
    nonzero = absmax > 0.0
    inverse = tl.where(nonzero, tl.div_rn(1.0, tl.where(nonzero, absmax, 1.0)), 0.0)
    codes = _nearest_code(values * inverse, mids_ptr, N_STEPS)
    tl.store(codes_ptr + offs, codes.to(tl.uint8), mask=mask)
    tl.store(absmax_ptr + block_id, absmax)


@triton.jit
def _block_offsets(block_size, numel, BLOCK: tl.constexpr):
    block_id = tl.program_id(0)
    lanes = tl.arange(0, BLOCK)
    offs = block_id.to(tl.int64) * block_size + lanes
    mask = (lanes < block_size) & (offs < numel)
    return block_id, offs, mask


@triton.jit
def quantize_kernel(
    x_ptr, mids_ptr, codes_ptr, absmax_ptr, numel, block_size, BLOCK: tl.constexpr, N_STEPS: tl.constexpr
):
    """Blockwise absmax quantisation of a flat tensor: one program per block of ``block_size`` elements."""
    block_id, offs, mask = _block_offsets(block_size, numel, BLOCK)
    values = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    _quantize_block(values, mask, offs, block_id, mids_ptr, codes_ptr, absmax_ptr, N_STEPS)


@triton.jit
def dequantize_kernel(codes_ptr, absmax_ptr, qmap_ptr, out_ptr, numel, block_size, BLOCK: tl.constexpr):
    """``out = qmap[codes] * absmax[block]`` (fp32), one program per block."""
    block_id, offs, mask = _block_offsets(block_size, numel, BLOCK)
    codes = tl.load(codes_ptr + offs, mask=mask, other=0).to(tl.int32)
    values = tl.load(qmap_ptr + codes) * tl.load(absmax_ptr + block_id)
    tl.store(out_ptr + offs, values, mask=mask)


@triton.jit
def adam8bit_kernel(
    grad_ptr,
    codes_m_ptr,
    absmax_m_ptr,
    codes_v_ptr,
    absmax_v_ptr,
    qmap_m_ptr,
    qmap_v_ptr,
    mids_m_ptr,
    mids_v_ptr,
    out_ptr,
    numel,
    block_size,
    beta1,
    one_minus_beta1,
    beta2,
    one_minus_beta2,
    eps,
    denom_scale,
    BLOCK: tl.constexpr,
    N_STEPS: tl.constexpr,
):
    """Dequantise M and V, Adam moment update, write ``N = M / (sqrt(V) * denom_scale + eps)``, requantise M and V."""
    block_id, offs, mask = _block_offsets(block_size, numel, BLOCK)
    grad = tl.load(grad_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    codes_m = tl.load(codes_m_ptr + offs, mask=mask, other=0).to(tl.int32)
    codes_v = tl.load(codes_v_ptr + offs, mask=mask, other=0).to(tl.int32)
    exp_avg = tl.load(qmap_m_ptr + codes_m) * tl.load(absmax_m_ptr + block_id)
    exp_avg_sq = tl.load(qmap_v_ptr + codes_v) * tl.load(absmax_v_ptr + block_id)
    exp_avg = exp_avg * beta1 + one_minus_beta1 * grad
    exp_avg_sq = exp_avg_sq * beta2 + one_minus_beta2 * grad * grad
    update = tl.div_rn(exp_avg, tl.sqrt_rn(exp_avg_sq) * denom_scale + eps)
    tl.store(out_ptr + offs, update, mask=mask)
    _quantize_block(exp_avg, mask, offs, block_id, mids_m_ptr, codes_m_ptr, absmax_m_ptr, N_STEPS)
    _quantize_block(exp_avg_sq, mask, offs, block_id, mids_v_ptr, codes_v_ptr, absmax_v_ptr, N_STEPS)


def _num_warps(*blocks: int) -> int:
    tile = 1
    for block in blocks:
        tile *= block
    return 8 if tile >= 8192 else 4


def launch_project_update(
    a: torch.Tensor,
    a_strides: tuple[int, int],
    b: torch.Tensor,
    b_strides: tuple[int, int],
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    out: torch.Tensor,
    size_k: int,
    *,
    beta1: float,
    beta2: float,
    eps: float,
    denom_scale: float,
    blocks: tuple[int, int, int],
    input_precision: str,
) -> None:
    """Launch :func:`project_update_kernel` over the (size_m, size_n) = ``out.shape`` output grid."""
    size_m, size_n = out.shape
    block_m, block_n, block_k = blocks
    grid = (triton.cdiv(size_m, block_m), triton.cdiv(size_n, block_n))
    project_update_kernel[grid](
        a,
        b,
        exp_avg,
        exp_avg_sq,
        out,
        size_m,
        size_n,
        size_k,
        *a_strides,
        *b_strides,
        *exp_avg.stride(),
        *exp_avg_sq.stride(),
        *out.stride(),
        beta1,
        1.0 - beta1,
        beta2,
        1.0 - beta2,
        eps,
        denom_scale,
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        BLOCK_K=block_k,
        INPUT_PRECISION=input_precision,
        num_warps=_num_warps(block_m, block_n),
    )


def launch_back_project_apply(
    a: torch.Tensor,
    a_strides: tuple[int, int],
    b: torch.Tensor,
    b_strides: tuple[int, int],
    param: torch.Tensor,
    size_k: int,
    *,
    step_size: float,
    decay: float,
    decay_before: bool,
    blocks: tuple[int, int, int],
    input_precision: str,
) -> None:
    """Launch :func:`back_project_apply_kernel` over the ``param.shape`` output grid."""
    size_m, size_n = param.shape
    block_m, block_n, block_k = blocks
    grid = (triton.cdiv(size_m, block_m), triton.cdiv(size_n, block_n))
    back_project_apply_kernel[grid](
        a,
        b,
        param,
        size_m,
        size_n,
        size_k,
        *a_strides,
        *b_strides,
        *param.stride(),
        step_size,
        1.0 - decay,
        bool(decay_before),
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        BLOCK_K=block_k,
        INPUT_PRECISION=input_precision,
        num_warps=_num_warps(block_m, block_n),
    )


def _block_grid(numel: int, block_size: int) -> tuple[tuple[int], int]:
    block = triton.next_power_of_2(block_size)
    return (triton.cdiv(numel, block_size),), block


def launch_quantize(x: torch.Tensor, mids: torch.Tensor, codes: torch.Tensor, absmax: torch.Tensor, block_size: int):
    """Launch :func:`quantize_kernel` on the flat contiguous `x`, writing `codes` and `absmax`."""
    grid, block = _block_grid(x.numel(), block_size)
    quantize_kernel[grid](
        x,
        mids,
        codes,
        absmax,
        x.numel(),
        block_size,
        BLOCK=block,
        N_STEPS=_N_SEARCH_STEPS,
        num_warps=_num_warps(block),
    )


def launch_dequantize(
    codes: torch.Tensor, absmax: torch.Tensor, qmap: torch.Tensor, out: torch.Tensor, block_size: int
):
    """Launch :func:`dequantize_kernel`, writing fp32 values into the flat contiguous `out`."""
    grid, block = _block_grid(codes.numel(), block_size)
    dequantize_kernel[grid](
        codes, absmax, qmap, out, codes.numel(), block_size, BLOCK=block, num_warps=_num_warps(block)
    )


def launch_adam8bit(
    grad: torch.Tensor,
    codes_m: torch.Tensor,
    absmax_m: torch.Tensor,
    codes_v: torch.Tensor,
    absmax_v: torch.Tensor,
    qmap_m: torch.Tensor,
    qmap_v: torch.Tensor,
    mids_m: torch.Tensor,
    mids_v: torch.Tensor,
    out: torch.Tensor,
    *,
    beta1: float,
    beta2: float,
    eps: float,
    denom_scale: float,
    block_size: int,
) -> None:
    """Launch :func:`adam8bit_kernel`; all tensors flat and contiguous, `grad` and `out` of `codes_m.numel()` items."""
    grid, block = _block_grid(grad.numel(), block_size)
    adam8bit_kernel[grid](
        grad,
        codes_m,
        absmax_m,
        codes_v,
        absmax_v,
        qmap_m,
        qmap_v,
        mids_m,
        mids_v,
        out,
        grad.numel(),
        block_size,
        beta1,
        1.0 - beta1,
        beta2,
        1.0 - beta2,
        eps,
        denom_scale,
        BLOCK=block,
        N_STEPS=_N_SEARCH_STEPS,
        num_warps=_num_warps(block),
    )
