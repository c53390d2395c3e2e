"""Fused back-projection + parameter update of COAP (arXiv 2412.00071, §3 of our spec).

The official step (`bytedance/coap` at commit deabc3a, `coap_torch/optimizer/adamw.py`, end of `step()`)
materialises ``U = back(N)`` (m x n) and then updates the weight::

    W <- W - step_size * U;  W <- W - lr * wd * W       (decay after the update, the official order)

:func:`back_project_and_apply` supports both orders (``decay_before=True`` is `torch.optim.AdamW`'s). The Triton kernel
computes ``U`` tile by tile and applies the update in the GEMM epilogue, so the full-size ``U`` never exists in memory;
the torch twin materialises it.

Accuracy of the Triton kernel against the torch twin (checked by ``benchmarks/gpu/run.sh`` on CUDA and, with tiny
sizes, in its CPU dry run under the test suite). Both compute the new weight in fp32 from the same inputs and differ
only in the summation order of ``U``. An fp32 ``param``: ``max |kernel - twin| / max |twin| <= 1e-4``. A bf16
``param`` (the documented bf16 bound): both round nearly the same fp32 value to bf16, so each element differs by at
most one bf16 ulp, ``|kernel - twin| <= 2**-7 * |twin|`` elementwise (fp16: ``2**-10``), the rounding that storing
any updated weight in bf16 costs on either backend.
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


def _check_args(param: torch.Tensor, update: torch.Tensor, proj: torch.Tensor, side: str) -> None:
    check_floating("param", param)
    check_floating("update", update)
    check_floating("proj", proj)
    if param.dim() != 2:
        raise ValueError(f"param must be 2-D (m, n), got shape {tuple(param.shape)}")
    shape = lowrank_shape(param.shape, proj, side)
    if tuple(update.shape) != shape:
        raise ValueError(f"update must have the low-rank shape {shape}, got {tuple(update.shape)}")
    common_device(param, update, proj)


def _back_project_and_apply_torch(
    param: torch.Tensor,
    update: torch.Tensor,
    proj: torch.Tensor,
    *,
    side: Side,
    step_size: float,
    decay: float,
    decay_before: bool,
) -> None:
    """Pure-torch twin of :func:`back_project_and_apply`.

    The back-projection GEMM accumulates straight into the fp32 weight (``addmm_`` with ``alpha=-step_size``), so no
    scaled copy of the (m, n) update is made and a zero decay costs no pass over the weight.
    """
    update32, proj32 = update.float(), proj.float()
    weight = param if param.dtype == torch.float32 else param.float()
    keep = 1.0 - decay
    if decay_before and decay != 0.0:
        weight.mul_(keep)
    if side == "right":
        weight.addmm_(update32, proj32, alpha=-step_size)
    else:
        weight.addmm_(proj32, update32, alpha=-step_size)
    if not decay_before and decay != 0.0:
        weight.mul_(keep)
    if weight is not param:
        param.copy_(weight)


def _back_project_and_apply_triton(
    param: torch.Tensor,
    update: torch.Tensor,
    proj: torch.Tensor,
    *,
    side: Side,
    step_size: float,
    decay: float,
    decay_before: bool,
    blocks: tuple[int, int, int] | None = None,
) -> None:
    """Triton twin of :func:`back_project_and_apply`.

    Args:
        blocks (`tuple[int, int, int]`, *optional*):
            (BLOCK_M, BLOCK_N, BLOCK_K) of the kernel, powers of two >= 16; defaults to
            :func:`~coap_optim.kernels.dispatch.gemm_blocks` of `param.shape`.
        Other arguments as in :func:`back_project_and_apply`.
    """
    kernels = load_triton_kernels(param.device)
    if param.numel() == 0:
        return
    if side == "right":  # (m, r) @ (r, n): A = N, B = P
        a, b = update, proj
    else:  # (m, r) @ (r, n): A = P, B = N
        a, b = proj, update
    kernels.launch_back_project_apply(
        a,
        a.stride(),
        b,
        b.stride(),
        param,
        a.shape[1],
        step_size=step_size,
        decay=decay,
        decay_before=decay_before,
        blocks=blocks or gemm_blocks(*param.shape),
        input_precision=dot_precision(update, proj),
    )


@torch.library.custom_op("coap_optim::back_project_and_apply", mutates_args=("param",))
def _back_project_and_apply_op(
    param: torch.Tensor,
    update: torch.Tensor,
    proj: torch.Tensor,
    side: str,
    step_size: float,
    decay: float,
    decay_before: bool,
    impl: str,
) -> None:
    """`torch.ops.coap_optim.back_project_and_apply`: the op `torch.compile` sees; `impl` is already resolved."""
    twin = _back_project_and_apply_triton if impl == "triton" else _back_project_and_apply_torch
    twin(param, update, proj, side=check_side(side), step_size=step_size, decay=decay, decay_before=decay_before)


@_back_project_and_apply_op.register_fake
def _(param, update, proj, side, step_size, decay, decay_before, impl):
    return None


def back_project_and_apply(
    param: torch.Tensor,
    update: torch.Tensor,
    proj: torch.Tensor,
    *,
    side: Side,
    step_size: float,
    decay: float,
    decay_before: bool,
    impl: Impl = "auto",
) -> None:
    """Back-project the normalised update and apply it, with decoupled weight decay, to `param` in place.

    With ``U = update @ proj`` (`side="right"`) or ``proj @ update`` (`side="left"`), computed with fp32
    accumulation:

    - `decay_before=True` (`torch.optim.AdamW` order): ``param <- param * (1 - decay) - step_size * U``
    - `decay_before=False` (official COAP order): ``param <- (param - step_size * U) * (1 - decay)``

    Args:
        param (`torch.Tensor` of shape `(m, n)`):
            The weight W, fp32, bf16 or fp16, updated in place (computed in fp32, cast on store). Any strides.
        update (`torch.Tensor` of shape `(m, r)` for `side="right"`, `(r, n)` for `side="left"`):
            The normalised low-rank update N (usually fp32). Any strides.
        proj (`torch.Tensor` of shape `(r, n)` for `side="right"`, `(m, r)` for `side="left"`):
            Projection matrix P. Any strides.
        side (`str`): `"right"` or `"left"`.
        step_size (`float`): Multiplies U; already includes the projection `scale` and the bias correction.
        decay (`float`): ``lr * weight_decay``; 0 disables weight decay.
        decay_before (`bool`): Decay before (`True`) or after (`False`) subtracting the update.
        impl (`str`, *optional*, defaults to `"auto"`):
            `"triton"`, `"torch"` or `"auto"` (Triton for CUDA tensors when Triton imports, torch otherwise).
    """
    _check_args(param, update, proj, side)
    backend = resolve_impl(impl, param, update, proj)
    if torch.compiler.is_compiling():
        _back_project_and_apply_op(param, update, proj, side, step_size, decay, decay_before, backend)
        return
    twin = _back_project_and_apply_triton if backend == "triton" else _back_project_and_apply_torch
    twin(param, update, proj, side=side, step_size=step_size, decay=decay, decay_before=decay_before)
