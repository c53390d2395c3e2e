"""Fused projection + Adam moment update of COAP (arXiv 2412.00071, §3 of our spec).

The official step (`bytedance/coap` at commit deabc3a, `coap_torch/optimizer/adamw.py`, `step()`) projects the
gradient, updates the low-rank moments and divides::

    g = G @ P^T (RIGHT) or P^T @ G (LEFT)
    M = b1 M + (1 - b1) g;  V = b2 V + (1 - b2) g^2
    N = M / (sqrt(V) * denom_scale + eps)

:func:`project_and_update_moments` does the three in one pass. The Triton kernel computes ``g`` tile by tile and
applies the moment update in the GEMM epilogue, so ``g`` is never written to memory; the torch twin runs the same
arithmetic with torch ops (matmul in fp32).

Accuracy of the Triton kernel against the torch twin (checked by ``benchmarks/gpu/run.sh`` on CUDA and, with tiny
sizes, in its CPU dry run under the test suite). All three outputs are fp32. For fp32 and for bf16 / fp16 ``grad`` and
``proj`` alike, both backends multiply the same input values (16-bit operands are exact in the kernel's TF32 ``tl.dot``;
fp32 operands use IEEE fp32 unless ``torch.backends.cuda.matmul.allow_tf32`` is set) and accumulate in fp32, so they
differ only in summation order: the documented bound is ``max |kernel - twin| / max |twin| <= 1e-4`` for each of
``N``, ``exp_avg`` and ``exp_avg_sq`` (the error of a K-term fp32 sum grows like ``sqrt(K) * 2**-24``; K = 11008 gives
about 6e-6). The bound is against the twin, not against exact arithmetic: rounding the inputs to bf16 is the caller's.
"""

from __future__ import annotations

import torch

from .dispatch import (
    Impl,
    Side,
    check_floating,
    check_side,
    common_device,
    dot_precision,
    gemm_blocks,
    load_triton_kernels,
    lowrank_shape,
    resolve_impl,
)


def _check_args(grad: torch.Tensor, proj: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor, side: str):
    check_floating("grad", grad)
    check_floating("proj", proj)
    if grad.dim() != 2:
        raise ValueError(f"grad must be 2-D (m, n), got shape {tuple(grad.shape)}")
    shape = lowrank_shape(grad.shape, proj, side)
    for name, state in (("exp_avg", exp_avg), ("exp_avg_sq", exp_avg_sq)):
        if state.dtype != torch.float32:
            raise TypeError(f"{name} must be float32, got {state.dtype}")
        if tuple(state.shape) != shape:
            raise ValueError(f"{name} must have the low-rank shape {shape}, got {tuple(state.shape)}")
    common_device(grad, proj, exp_avg, exp_avg_sq)


def _project_and_update_moments_torch(
    grad: torch.Tensor,
    proj: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    *,
    side: Side,
    beta1: float,
    beta2: float,
    eps: float,
    denom_scale: float,
) -> torch.Tensor:
    """Pure-torch twin of :func:`project_and_update_moments` (same arguments, same arithmetic order)."""
    grad32, proj32 = grad.float(), proj.float()
    low_rank = grad32 @ proj32.T if side == "right" else proj32.T @ grad32
    exp_avg.mul_(beta1).add_(low_rank, alpha=1.0 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(low_rank, low_rank, value=1.0 - beta2)
    denom = exp_avg_sq.sqrt()
    if denom_scale != 1.0:
        denom.mul_(denom_scale)
    return exp_avg / denom.add_(eps)


def _project_and_update_moments_triton(
    grad: torch.Tensor,
    proj: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    *,
    side: Side,
    beta1: float,
    beta2: float,
    eps: float,
    denom_scale: float,
    blocks: tuple[int, int, int] | None = None,
) -> torch.Tensor:
    """Triton twin of :func:`project_and_update_moments`.

    Args:
        blocks (`tuple[int, int, int]`, *optional*):
            (BLOCK_M, BLOCK_N, BLOCK_K) of the kernel, powers of two >= 16; defaults to
            :func:`~coap_optim.kernels.dispatch.gemm_blocks` of the low-rank shape.
        Other arguments as in :func:`project_and_update_moments`.
    """
    kernels = load_triton_kernels(grad.device)
    a_strides: tuple[int, ...]
    b_strides: tuple[int, ...]
    if side == "right":  # (m, n) @ (n, r): A = G, B = P^T
        size_k = grad.shape[1]
        a, a_strides = grad, grad.stride()
        b, b_strides = proj, (proj.stride(1), proj.stride(0))
    else:  # (r, m) @ (m, n): A = P^T, B = G
        size_k = grad.shape[0]
        a, a_strides = proj, (proj.stride(1), proj.stride(0))
        b, b_strides = grad, grad.stride()
    out = torch.empty(exp_avg.shape, dtype=torch.float32, device=grad.device)
    if out.numel() == 0:
        return out
    kernels.launch_project_update(
        a,
        a_strides,
        b,
        b_strides,
        exp_avg,
        exp_avg_sq,
        out,
        size_k,
        beta1=beta1,
        beta2=beta2,
        eps=eps,
        denom_scale=denom_scale,
        blocks=blocks or gemm_blocks(*out.shape),
        input_precision=dot_precision(grad, proj),
    )
    return out


@torch.library.custom_op("coap_optim::project_and_update_moments", mutates_args=("exp_avg", "exp_avg_sq"))
def _project_and_update_moments_op(
    grad: torch.Tensor,
    proj: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    side: str,
    beta1: float,
    beta2: float,
    eps: float,
    denom_scale: float,
    impl: str,
) -> torch.Tensor:
    """`torch.ops.coap_optim.project_and_update_moments`: the op `torch.compile` sees; `impl` is already resolved."""
    twin = _project_and_update_moments_triton if impl == "triton" else _project_and_update_moments_torch
    return twin(
        grad,
        proj,
        exp_avg,
        exp_avg_sq,
        side=check_side(side),
        beta1=beta1,
        beta2=beta2,
        eps=eps,
        denom_scale=denom_scale,
    )


@_project_and_update_moments_op.register_fake
def _(grad, proj, exp_avg, exp_avg_sq, side, beta1, beta2, eps, denom_scale, impl):
    return torch.empty(exp_avg.shape, dtype=torch.float32, device=exp_avg.device)


def project_and_update_moments(
    grad: torch.Tensor,
    proj: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    *,
    side: Side,
    beta1: float,
    beta2: float,
    eps: float,
    denom_scale: float,
    impl: Impl = "auto",
) -> torch.Tensor:
    """Project the gradient, update the low-rank Adam moments in place and return the normalised update.

    Computes ``g = grad @ proj.T`` (`side="right"`) or ``proj.T @ grad`` (`side="left"`) with fp32 accumulation, then
    ``exp_avg = beta1 * exp_avg + (1 - beta1) * g``, ``exp_avg_sq = beta2 * exp_avg_sq + (1 - beta2) * g * g`` and
    ``N = exp_avg / (sqrt(exp_avg_sq) * denom_scale + eps)``.

    Args:
        grad (`torch.Tensor` of shape `(m, n)`):
            Full-size gradient, fp32, bf16 or fp16; any strides (the Triton kernel reads it strided, no copy).
        proj (`torch.Tensor` of shape `(r, n)` for `side="right"`, `(m, r)` for `side="left"`):
            Projection matrix P, fp32, bf16 or fp16; any strides.
        exp_avg (`torch.Tensor` of the low-rank shape `(m, r)` / `(r, n)`):
            First moment M, fp32, updated in place.
        exp_avg_sq (`torch.Tensor` of the low-rank shape):
            Second moment V, fp32, updated in place.
        side (`str`): `"right"` (P is (r, n)) or `"left"` (P is (m, r)).
        beta1 (`float`): First-moment decay b1.
        beta2 (`float`): Second-moment decay b2.
        eps (`float`): Added to the scaled square root of V.
        denom_scale (`float`): Multiplies ``sqrt(V)``: 1 for the official convention, ``1 / sqrt(1 - b2^t)`` for
            the torch convention.
        impl (`str`, *optional*, defaults to `"auto"`):
            `"triton"`, `"torch"` or `"auto"` (Triton for CUDA tensors when Triton imports, torch otherwise).

    Returns:
        `torch.Tensor` of the low-rank shape: N in fp32, contiguous.
    """
    _check_args(grad, proj, exp_avg, exp_avg_sq, side)
    backend = resolve_impl(impl, grad, proj, exp_avg, exp_avg_sq)
    if torch.compiler.is_compiling():
        return _project_and_update_moments_op(
            grad, proj, exp_avg, exp_avg_sq, side, beta1, beta2, eps, denom_scale, backend
        )
    twin = _project_and_update_moments_triton if backend == "triton" else _project_and_update_moments_torch
    return twin(grad, proj, exp_avg, exp_avg_sq, side=side, beta1=beta1, beta2=beta2, eps=eps, denom_scale=denom_scale)
