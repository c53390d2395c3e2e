"""Backend selection for the COAP kernels: pure torch or Triton, imported lazily.

Every public op in :mod:`coap_optim.kernels` takes ``impl: Literal["auto", "triton", "torch"]``.
``"auto"`` picks Triton when the tensors live on a CUDA device and Triton imports, and the pure-torch twin otherwise.
``"triton"`` on CPU tensors runs the kernels under the Triton interpreter, which must be switched on with
``TRITON_INTERPRET=1`` before the kernels are first imported (triton-lang/triton#4317).

Nothing here imports Triton at module import time (STYLE rule 6): :func:`has_triton` tries the import when first
called, and the ``@triton.jit`` kernels live in :mod:`coap_optim.kernels.triton_kernels`, which is imported only by
:func:`load_triton_kernels`.
"""

from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType
from typing import Literal

import torch

Impl = Literal["auto", "triton", "torch"]
ResolvedImpl = Literal["triton", "torch"]
Side = Literal["left", "right"]

FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)

_IMPLS = ("auto", "triton", "torch")
_KERNEL_MODULE = "coap_optim.kernels.triton_kernels"
_INTERPRET_HINT = (
    "set the environment variable TRITON_INTERPRET=1 before triton (and coap_optim's Triton kernels) are imported, "
    "e.g. `TRITON_INTERPRET=1 python ...`, or use impl='torch' / impl='auto' on CPU"
)


def has_triton() -> bool:
    """Whether Triton can be imported (the import happens here, on first call, never at module import).

    Returns:
        `bool`: `True` if `import triton` succeeds.
    """
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def triton_interpret_requested() -> bool:
    """Whether the environment asks for the Triton interpreter (`TRITON_INTERPRET` set to a true value)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")


def common_device(*tensors: torch.Tensor) -> torch.device:
    """The device shared by all `tensors`.

    Raises:
        `ValueError`: if the tensors live on different devices.
    """
    device = tensors[0].device
    for tensor in tensors[1:]:
        if tensor.device != device:
            raise ValueError(f"all tensors must be on the same device, got {device} and {tensor.device}")
    return device


def resolve_impl(impl: str, *tensors: torch.Tensor) -> ResolvedImpl:
    """Turn `impl` into the concrete backend for `tensors`.

    Args:
        impl (`str`): `"auto"`, `"triton"` or `"torch"`.
        *tensors (`torch.Tensor`): the op's tensor arguments; they must share one device.

    Returns:
        `str`: `"triton"` or `"torch"`.

    Raises:
        `ValueError`: for an unknown `impl` or tensors on different devices.
        `RuntimeError`: for `impl="triton"` when Triton is not installed, the device is neither CUDA nor CPU, or the
            tensors are on CPU without the Triton interpreter (`TRITON_INTERPRET=1`).
    """
    if impl not in _IMPLS:
        raise ValueError(f"impl must be one of {_IMPLS}, got {impl!r}")
    device = common_device(*tensors)
    if impl == "torch":
        return "torch"
    if impl == "auto":
        return "triton" if device.type == "cuda" and has_triton() else "torch"
    if not has_triton():
        raise RuntimeError("impl='triton' was requested but triton is not installed; use impl='torch' or 'auto'")
    if device.type == "cpu":
        if _KERNEL_MODULE in sys.modules:
            if not _kernels_interpreted(sys.modules[_KERNEL_MODULE]):
                raise RuntimeError(
                    "impl='triton' on CPU tensors needs the Triton interpreter, but coap_optim's Triton kernels were "
                    f"already compiled for the GPU in this process; {_INTERPRET_HINT}"
                )
        elif not triton_interpret_requested():
            raise RuntimeError(f"impl='triton' on CPU tensors needs the Triton interpreter: {_INTERPRET_HINT}")
    elif device.type != "cuda":
        raise RuntimeError(f"impl='triton' supports CUDA tensors (or CPU under TRITON_INTERPRET=1), got {device}")
    return "triton"


def _kernels_interpreted(module: ModuleType) -> bool:
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(module.project_update_kernel, InterpretedFunction)


def load_triton_kernels(device: torch.device) -> ModuleType:
    """Import (once) and return the module holding the `@triton.jit` kernels.

    Args:
        device (`torch.device`): where the kernels will run; on CPU the kernels must be interpreted.

    Returns:
        `ModuleType`: :mod:`coap_optim.kernels.triton_kernels`.

    Raises:
        `RuntimeError`: if `device` is CPU and the kernels were compiled (not interpreted).
    """
    module = importlib.import_module(_KERNEL_MODULE)
    if device.type == "cpu" and not _kernels_interpreted(module):
        raise RuntimeError(f"coap_optim's Triton kernels were not built by the Triton interpreter; {_INTERPRET_HINT}")
    return module


def next_power_of_2(value: int) -> int:
    """Smallest power of two that is `>= value` (and `>= 1`)."""
    return 1 << max(int(value) - 1, 0).bit_length()


def dot_precision(*tensors: torch.Tensor) -> str:
    """The `tl.dot` input precision that matches torch for these operands.

    16-bit operands are exact in TF32, so `"tf32"` loses nothing; fp32 operands use TF32 only when
    `torch.backends.cuda.matmul.allow_tf32` is set, as `torch.matmul` does, and `"ieee"` otherwise.
    """
    if all(t.dtype in (torch.bfloat16, torch.float16) for t in tensors):
        return "tf32"
    return "tf32" if torch.backends.cuda.matmul.allow_tf32 else "ieee"


def gemm_blocks(size_m: int, size_n: int) -> tuple[int, int, int]:
    """Default (BLOCK_M, BLOCK_N, BLOCK_K) of the GEMM kernels for a (size_m, size_n) output (not autotuned).

    Tiles are at most 64 x 64 and shrink to the next power of two >= 16 (the `tl.dot` minimum) for thin outputs,
    e.g. the rank dimension of a projected gradient.
    """
    return (min(64, max(16, next_power_of_2(size_m))), min(64, max(16, next_power_of_2(size_n))), 32)


def check_side(side: str) -> Side:
    """`side` as a `Side`; raise `ValueError` unless it is `"left"` or `"right"` (custom-op schemas carry a `str`)."""
    if side == "left":
        return "left"
    if side == "right":
        return "right"
    raise ValueError(f"side must be 'left' or 'right', got {side!r}")


def lowrank_shape(shape: torch.Size | tuple[int, ...], proj: torch.Tensor, side: str) -> tuple[int, int]:
    """Shape of the projected tensor and a check that `proj` fits a full-size (m, n) tensor on `side`.

    Args:
        shape (`torch.Size`): (m, n), the full-size shape.
        proj (`torch.Tensor`): (r, n) for `side="right"`, (m, r) for `side="left"`.
        side (`str`): `"left"` or `"right"`.

    Returns:
        `tuple[int, int]`: (m, r) for `"right"`, (r, n) for `"left"`.

    Raises:
        `ValueError`: on a bad side or mismatched shapes.
    """
    check_side(side)
    if len(shape) != 2 or proj.dim() != 2:
        raise ValueError(f"expected a 2-D full-size shape and a 2-D projection, got {tuple(shape)} and {proj.shape}")
    m, n = shape
    if side == "right":
        if proj.shape[1] != n:
            raise ValueError(f"side='right' needs proj of shape (r, {n}), got {tuple(proj.shape)}")
        return (m, proj.shape[0])
    if proj.shape[0] != m:
        raise ValueError(f"side='left' needs proj of shape ({m}, r), got {tuple(proj.shape)}")
    return (proj.shape[1], n)


def check_floating(name: str, tensor: torch.Tensor, dtypes: tuple[torch.dtype, ...] = FLOAT_DTYPES) -> None:
    """Raise `TypeError` unless `tensor.dtype` is one of `dtypes`."""
    if tensor.dtype not in dtypes:
        raise TypeError(f"{name} must have dtype in {dtypes}, got {tensor.dtype}")
