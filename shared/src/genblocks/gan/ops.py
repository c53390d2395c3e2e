"""StyleGAN2 low-level ops in plain PyTorch: FIR up/down-sampling (``upfirdn2d``), fused bias + activation
(``bias_act``) and convolution with resampling (``conv2d_resample``).

Written from the spec (genblocks §3 "ops.py") and the StyleGAN2 paper (Karras et al., "Analyzing and Improving the
Image Quality of StyleGAN", arXiv 1912.04958, appendix B: FIR filtering with the [1, 3, 3, 1] binomial filter). The
reference implementations are NVIDIA's ops (NVlabs/stylegan2-ada-pytorch@d72cc7d041b42ec8e806021a205ed9349f87c6a4
``torch_utils/ops/upfirdn2d.py``, ``bias_act.py``, ``conv2d_resample.py``) and rosinality's ``op/``
(rosinality/stylegan2-pytorch); both are under non-commercial licences and were not copied. Only their conventions are followed, so that checkpoints trained with
them reproduce the same numbers:

- ``upfirdn2d`` inserts ``up - 1`` zeros after every sample (so a length-``H`` signal becomes ``H * up`` long), pads
  (negative padding crops), convolves each channel with the *flipped* 2-D filter (a true convolution; set
  ``flip_filter=True`` for correlation), scales by ``gain`` and keeps every ``down``-th sample.
- Padding is ``(x0, x1, y0, y1)`` = (left, right, top, bottom), the order of :func:`torch.nn.functional.pad`.
- ``upsample2d`` pads ``((fw + up - 1) // 2, (fw - up) // 2)`` and multiplies by ``up ** 2`` (the zeros dilute the
  signal); ``downsample2d`` pads ``((fw - down + 1) // 2, (fw - down) // 2)``. For the 4-tap filter and factor 2 this
  is (2, 1) and (1, 1): a constant image stays constant away from the borders.
- ``conv2d_resample`` with ``up > 1`` runs a transposed convolution followed by the FIR filter. The kernel then acts as
  a *true convolution* on the zero-stuffed input, while ``up == 1`` is the usual cross-correlation of
  :func:`torch.nn.functional.conv2d`. This is what NVIDIA's PyTorch releases (``flip_weight=(up == 1)``) and
  rosinality's ``ModulatedConv2d(upsample=True)`` compute, so their up-sampling weights load unchanged; the TF
  StyleGAN2 release correlates instead, which is why converters from TF flip those kernels spatially.

A CUDA/Triton path may be added later behind an ``impl=`` argument; these functions are the reference.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "ACTIVATIONS",
    "Activation",
    "Padding",
    "bias_act",
    "conv2d_resample",
    "downsample2d",
    "setup_filter",
    "upfirdn2d",
    "upsample2d",
]

Padding = int | tuple[int, int] | tuple[int, int, int, int]
"""``p`` (all sides), ``(px, py)`` or ``(x0, x1, y0, y1)``."""

Activation = Literal["linear", "lrelu", "relu", "sigmoid", "tanh", "softplus"]
"""Activation names understood by :func:`bias_act`."""


def _lrelu(x: Tensor, alpha: float) -> Tensor:
    return F.leaky_relu(x, alpha)


# name -> (function(x, alpha), default alpha, default gain). The gains keep the signal's second moment for lrelu/relu.
ACTIVATIONS: Mapping[str, tuple[Callable[[Tensor, float], Tensor], float, float]] = MappingProxyType(
    {
        "linear": (lambda x, _: x, 0.0, 1.0),
        "lrelu": (_lrelu, 0.2, math.sqrt(2.0)),
        "relu": (lambda x, _: F.relu(x), 0.0, math.sqrt(2.0)),
        "sigmoid": (lambda x, _: torch.sigmoid(x), 0.0, 1.0),
        "tanh": (lambda x, _: torch.tanh(x), 0.0, 1.0),
        "softplus": (lambda x, _: F.softplus(x), 0.0, 1.0),
    }
)
"""Activation table of :func:`bias_act`: ``name -> (function(x, alpha), default alpha, default gain)``."""


def setup_filter(taps: Sequence[float] | Tensor = (1, 3, 3, 1), normalize: bool = True) -> Tensor:
    """Build the 2-D FIR filter used for resampling: the outer product of ``taps`` with itself.

    Args:
        taps (`Sequence[float]` or `Tensor`, defaults to `(1, 3, 3, 1)`): 1-D taps (the StyleGAN2 binomial filter), or
            an already 2-D filter that is returned (normalised) as is.
        normalize (`bool`, defaults to `True`): Divide by the sum so that the filter has unit DC gain.

    Returns:
        `Tensor` of shape `(k, k)` (float32).
    """
    f = torch.as_tensor(taps, dtype=torch.float32)
    if f.ndim == 0 or f.numel() == 0:
        raise ValueError(f"taps must be a non-empty 1-D or 2-D sequence, got shape {tuple(f.shape)}")
    if f.ndim == 1:
        f = torch.outer(f, f)
    elif f.ndim != 2:
        raise ValueError(f"taps must be 1-D or 2-D, got {f.ndim}-D")
    if normalize:
        f = f / f.sum()
    return f


def _parse_padding(padding: Padding) -> tuple[int, int, int, int]:
    if isinstance(padding, int):
        return padding, padding, padding, padding
    pads = tuple(int(p) for p in padding)
    if len(pads) == 2:
        return pads[0], pads[0], pads[1], pads[1]
    if len(pads) == 4:
        return pads  # type: ignore[return-value]
    raise ValueError(f"padding must be an int, (px, py) or (x0, x1, y0, y1), got {padding!r}")


def _filter_size(f: Tensor | None) -> tuple[int, int]:
    """(fw, fh) of a 1-D (separable) or 2-D filter; (1, 1) for no filter."""
    if f is None:
        return 1, 1
    if f.ndim == 1:
        return f.shape[0], f.shape[0]
    return f.shape[1], f.shape[0]


def _pad_or_crop(x: Tensor, x0: int, x1: int, y0: int, y1: int) -> Tensor:
    """Zero-pad (positive values) or crop (negative values) the last two dimensions."""
    if x0 > 0 or x1 > 0 or y0 > 0 or y1 > 0:
        x = F.pad(x, [max(x0, 0), max(x1, 0), max(y0, 0), max(y1, 0)])
    if x0 < 0 or x1 < 0 or y0 < 0 or y1 < 0:
        x = x[..., max(-y0, 0) : x.shape[-2] - max(-y1, 0), max(-x0, 0) : x.shape[-1] - max(-x1, 0)]
    return x


def upfirdn2d(
    x: Tensor,
    f: Tensor | None,
    up: int = 1,
    down: int = 1,
    padding: Padding = 0,
    flip_filter: bool = False,
    gain: float = 1.0,
) -> Tensor:
    """Upsample (zero insertion), pad, FIR-filter and downsample (keep every ``down``-th sample) each channel.

    Output size along x: ``(W * up + x0 + x1 - fw) // down + 1`` (and likewise along y).

    Args:
        x (`Tensor` of shape `(N, C, H, W)`): Input images.
        f (`Tensor` of shape `(fh, fw)` or `(k,)`, or `None`): 2-D filter, or 1-D taps applied separably along x then
            y; `None` means no filtering (pad/resample only).
        up (`int`, defaults to 1): Upsampling factor; ``up - 1`` zeros follow every input sample.
        down (`int`, defaults to 1): Downsampling factor.
        padding (`int`, `(px, py)` or `(x0, x1, y0, y1)`, defaults to 0): Padding after upsampling; negative values
            crop.
        flip_filter (`bool`, defaults to `False`): `False` flips the filter (true convolution); `True` correlates.
        gain (`float`, defaults to 1.0): Overall scale of the output (split as ``gain ** 0.5`` per pass for 1-D taps).

    Returns:
        `Tensor` of shape `(N, C, H', W')`.
    """
    if x.ndim != 4:
        raise ValueError(f"x must have shape (N, C, H, W), got {tuple(x.shape)}")
    if up < 1 or down < 1:
        raise ValueError(f"up and down must be >= 1, got up={up}, down={down}")
    if f is not None and f.ndim not in (1, 2):
        raise ValueError(f"f must be a 1-D or 2-D filter, got shape {tuple(f.shape)}")
    x0, x1, y0, y1 = _parse_padding(padding)
    n, c, h, w = x.shape
    fw, fh = _filter_size(f)
    out_h = (h * up + y0 + y1 - fh) // down + 1
    out_w = (w * up + x0 + x1 - fw) // down + 1
    if out_h < 1 or out_w < 1:
        raise ValueError(
            f"upfirdn2d output would be empty: input {h}x{w}, up={up}, down={down}, padding={padding}, filter {fh}x{fw}"
        )

    # 1. Zero insertion: every sample is followed by up - 1 zeros.
    if up > 1:
        x = F.pad(x.reshape(n, c, h, 1, w, 1), [0, up - 1, 0, 0, 0, up - 1]).reshape(n, c, h * up, w * up)
    # 2. Pad / crop.
    x = _pad_or_crop(x, x0, x1, y0, y1)
    # 3. Depthwise FIR filter (flipped = true convolution) with the output stride doing step 4 (keep every down-th).
    if f is None:
        x = x * gain if gain != 1.0 else x
        return x[:, :, ::down, ::down] if down > 1 else x
    f = f.to(dtype=x.dtype, device=x.device) * (gain ** (f.ndim / 2))
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))
    if f.ndim == 2:
        return F.conv2d(x, f[None, None].expand(c, 1, fh, fw), stride=down, groups=c)
    x = F.conv2d(x, f[None, None, None, :].expand(c, 1, 1, fw), stride=(1, down), groups=c)
    return F.conv2d(x, f[None, None, :, None].expand(c, 1, fh, 1), stride=(down, 1), groups=c)


def upsample2d(x: Tensor, f: Tensor, up: int = 2, padding: Padding = 0, gain: float | None = None) -> Tensor:
    """Upsample by ``up`` with the FIR filter ``f``, keeping the spatial alignment (output ``H * up``).

    Args:
        x (`Tensor` of shape `(N, C, H, W)`): Input images.
        f (`Tensor` of shape `(fh, fw)` or `(k,)`): Filter from :func:`setup_filter`.
        up (`int`, defaults to 2): Upsampling factor.
        padding (`int`, `(px, py)` or `(x0, x1, y0, y1)`, defaults to 0): Extra padding added to the spec padding
            ``((fw + up - 1) // 2, (fw - up) // 2)``.
        gain (`float`, *optional*): Output scale; defaults to ``up ** 2``, which compensates the inserted zeros.

    Returns:
        `Tensor` of shape `(N, C, H * up, W * up)` (with zero extra padding).
    """
    x0, x1, y0, y1 = _parse_padding(padding)
    fw, fh = _filter_size(f)
    pads = (x0 + (fw + up - 1) // 2, x1 + (fw - up) // 2, y0 + (fh + up - 1) // 2, y1 + (fh - up) // 2)
    return upfirdn2d(x, f, up=up, padding=pads, gain=float(up**2) if gain is None else gain)


def downsample2d(x: Tensor, f: Tensor, down: int = 2, padding: Padding = 0, gain: float = 1.0) -> Tensor:
    """Low-pass filter with ``f`` and keep every ``down``-th sample (output ``H // down``).

    Args:
        x (`Tensor` of shape `(N, C, H, W)`): Input images.
        f (`Tensor` of shape `(fh, fw)` or `(k,)`): Filter from :func:`setup_filter`.
        down (`int`, defaults to 2): Downsampling factor.
        padding (`int`, `(px, py)` or `(x0, x1, y0, y1)`, defaults to 0): Extra padding added to the spec padding
            ``((fw - down + 1) // 2, (fw - down) // 2)``.
        gain (`float`, defaults to 1.0): Output scale.

    Returns:
        `Tensor` of shape `(N, C, H // down, W // down)` (with zero extra padding).
    """
    x0, x1, y0, y1 = _parse_padding(padding)
    fw, fh = _filter_size(f)
    pads = (x0 + (fw - down + 1) // 2, x1 + (fw - down) // 2, y0 + (fh - down + 1) // 2, y1 + (fh - down) // 2)
    return upfirdn2d(x, f, down=down, padding=pads, gain=gain)


def bias_act(
    x: Tensor,
    b: Tensor | None = None,
    dim: int = 1,
    act: Activation = "linear",
    alpha: float | None = None,
    gain: float | None = None,
    clamp: float | None = None,
) -> Tensor:
    """Add a bias along ``dim``, apply an activation, scale by ``gain`` and clamp: ``clamp(act(x + b) * gain)``.

    Args:
        x (`Tensor`): Input of any shape.
        b (`Tensor` of shape `(x.shape[dim],)`, *optional*): Bias broadcast along ``dim``.
        dim (`int`, defaults to 1): Dimension of ``x`` that ``b`` indexes (channels).
        act (`str`, defaults to `"linear"`): One of ``"linear"``, ``"lrelu"``, ``"relu"``, ``"sigmoid"``, ``"tanh"``,
            ``"softplus"``.
        alpha (`float`, *optional*): Negative slope of ``"lrelu"``; defaults to 0.2.
        gain (`float`, *optional*): Output scale; defaults to sqrt(2) for ``"lrelu"`` and ``"relu"``, 1 otherwise.
        clamp (`float`, *optional*): Clamp the output to ``[-clamp, clamp]`` (after the gain); `None` disables it.

    Returns:
        `Tensor` of the shape of ``x``.
    """
    if act not in ACTIVATIONS:
        raise ValueError(f"act must be one of {sorted(ACTIVATIONS)}, got {act!r}")
    fn, default_alpha, default_gain = ACTIVATIONS[act]
    if b is not None:
        if b.ndim != 1 or b.shape[0] != x.shape[dim]:
            raise ValueError(f"b must have shape ({x.shape[dim]},) to match x.shape[{dim}], got {tuple(b.shape)}")
        shape = [1] * x.ndim
        shape[dim] = -1
        x = x + b.to(x.dtype).reshape(shape)
    x = fn(x, default_alpha if alpha is None else alpha)
    gain = default_gain if gain is None else gain
    if gain != 1.0:
        x = x * gain
    if clamp is not None:
        if clamp < 0:
            raise ValueError(f"clamp must be >= 0 or None, got {clamp}")
        x = x.clamp(-clamp, clamp)
    return x


def conv2d_resample(
    x: Tensor,
    weight: Tensor,
    f: Tensor | None = None,
    up: int = 1,
    down: int = 1,
    padding: Padding = 0,
    groups: int = 1,
) -> Tensor:
    """2-D convolution combined with FIR up- or down-sampling (the StyleGAN2 resampling convolution).

    - ``up == down == 1``: cross-correlation (:func:`torch.nn.functional.conv2d`) with ``padding``.
    - ``down > 1``: ``upfirdn2d(x, f, padding=padding + ((fw - down + 1) // 2, (fw - down) // 2))`` then a strided
      cross-correlation; ``padding = k // 2`` gives ``H // down``.
    - ``up > 1``: a strided transposed convolution (the kernel acts as a true convolution on the zero-stuffed input)
      then ``f`` with gain ``up ** 2``. It equals ``upfirdn2d(x, f, up, padding + ((fw + up - 1) // 2,
      (fw - up) // 2), gain=up ** 2)`` followed by a valid convolution with the spatially flipped kernel;
      ``padding = k // 2`` gives ``H * up``. This matches NVIDIA's PyTorch releases and rosinality (see module
      docstring).

    Args:
        x (`Tensor` of shape `(N, C_in, H, W)`): Input.
        weight (`Tensor` of shape `(C_out, C_in // groups, kh, kw)`): Kernel, already scaled.
        f (`Tensor` of shape `(fh, fw)`, *optional*): FIR filter; required when ``up > 1`` or ``down > 1``.
        up (`int`, defaults to 1): Upsampling factor.
        down (`int`, defaults to 1): Downsampling factor (not combined with ``up > 1``).
        padding (`int`, `(px, py)` or `(x0, x1, y0, y1)`, defaults to 0): Convolution padding (``k // 2`` for "same").
        groups (`int`, defaults to 1): Convolution groups (the batch size for modulated convolutions).

    Returns:
        `Tensor` of shape `(N, C_out, H', W')`.
    """
    if up < 1 or down < 1:
        raise ValueError(f"up and down must be >= 1, got up={up}, down={down}")
    if up > 1 and down > 1:
        raise ValueError("conv2d_resample supports up > 1 or down > 1, not both")
    if (up > 1 or down > 1) and f is None:
        raise ValueError("a resampling filter f is required when up > 1 or down > 1")
    out_channels, in_per_group, kh, kw = weight.shape
    x0, x1, y0, y1 = _parse_padding(padding)
    fw, fh = _filter_size(f)

    if up > 1:
        # (G * Cout/G, Cin/G, kh, kw) -> (G * Cin/G, Cout/G, kh, kw): the layout conv_transpose2d expects per group.
        w = weight.reshape(groups, out_channels // groups, in_per_group, kh, kw).transpose(1, 2)
        w = w.reshape(groups * in_per_group, out_channels // groups, kh, kw)
        x = F.conv_transpose2d(x, w, stride=up, groups=groups)
        # The transposed convolution already padded k - 1 on the left and k - up on the right of the zero-stuffed input.
        pads = (
            x0 + (fw + up - 1) // 2 - (kw - 1),
            x1 + (fw - up) // 2 - (kw - up),
            y0 + (fh + up - 1) // 2 - (kh - 1),
            y1 + (fh - up) // 2 - (kh - up),
        )
        return upfirdn2d(x, f, padding=pads, gain=float(up**2))
    if down > 1:
        pads = (x0 + (fw - down + 1) // 2, x1 + (fw - down) // 2, y0 + (fh - down + 1) // 2, y1 + (fh - down) // 2)
        x = upfirdn2d(x, f, padding=pads)
        return F.conv2d(x, weight, stride=down, groups=groups)
    if x0 == x1 and y0 == y1 and x0 >= 0 and y0 >= 0:
        return F.conv2d(x, weight, padding=(y0, x0), groups=groups)
    return F.conv2d(_pad_or_crop(x, x0, x1, y0, y1), weight, groups=groups)
