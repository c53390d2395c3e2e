"""StyleGAN2 generator (mapping + skip-architecture synthesis) and resnet discriminator in plain PyTorch.

Paper: Karras et al., "Analyzing and Improving the Image Quality of StyleGAN" (arXiv 1912.04958), config F; module
structure and parameter names follow NVIDIA's PyTorch release
(NVlabs/stylegan2-ada-pytorch@d72cc7d041b42ec8e806021a205ed9349f87c6a4 ``training/networks.py``:
``mapping.fc{i}``, ``mapping.w_avg``, ``synthesis.b{res}.{const,conv0,conv1,torgb}``, ``b{res}.{fromrgb,conv0,conv1,
skip}``, ``b4.{conv,fc,out}``) so that converted state dicts map one to one. The code is our own (NVIDIA's is under a
non-commercial licence and compiles CUDA at import); rosinality-format checkpoints load through
:mod:`genblocks.gan.convert`.

What the spec (genblocks §3 "stylegan2.py") fixes and this module implements:

- **Equalised learning rate.** Weights are stored raw (``randn / lr_multiplier``) and scaled at run time by
  ``lr_multiplier / sqrt(fan_in)``; biases are multiplied by ``lr_multiplier``.
- **Mapping.** 2nd-moment normalisation (PixelNorm) of z, optional label embedding (EqualLinear(c_dim, w_dim), also
  normalised and concatenated), ``num_layers`` x EqualLinear + lrelu with ``lr_multiplier=0.01``, a tracked ``w_avg``
  (EMA with ``w_avg_beta``) and truncation ``w_avg + psi * (w - w_avg)`` on the first ``truncation_cutoff`` ws.
- **Modulated convolution.** ``w' = w * s``, demodulated by ``rsqrt(sum w'^2 + 1e-8)`` per output channel, run as one
  grouped convolution over the batch; up-sampling layers use a transposed convolution followed by the [1, 3, 3, 1] FIR
  filter (see :func:`genblocks.gan.ops.conv2d_resample` for the kernel orientation, compatible with NVIDIA's PyTorch
  release and rosinality).
- **Noise.** Per-layer learned scalar ``noise_strength`` (initially 0) and a fixed ``noise_const`` buffer;
  ``noise_mode`` is ``"random"`` (fresh N(0, 1) per call), ``"const"`` (the buffer) or ``"none"``.
- **Skip architecture.** Every block adds ``ToRGB(x)`` (modulated, not demodulated) to the up-sampled image so far.
- **Channels.** ``channels(res) = min(channel_base // res, channel_max)``; config F at 1024 px is
  ``channel_base=32768, channel_max=512`` (rosinality ``channel_multiplier=m`` is ``channel_base=16384 * m``).
- **Discriminator.** Resnet blocks (``fromrgb`` only at the input resolution, skip and residual branches scaled by
  sqrt(0.5)), minibatch standard deviation, and projection conditioning on a label ``c`` through a mapping network
  (EG3D: ``c_dim=25``, ``in_channels=6``).

Differences from NVIDIA's release, all numerically immaterial in fp32: no fp16 paths; the modulated convolution always
uses the fused (grouped) form; the 1/sqrt(fan_in) gain multiplies the weights rather than the styles (it only moves
where the 1e-8 of the demodulation sits, as in rosinality).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from genblocks.gan.ops import ACTIVATIONS, Activation, bias_act, conv2d_resample, setup_filter, upsample2d

__all__ = [
    "DiscriminatorBlock",
    "DiscriminatorEpilogue",
    "EqualConv2d",
    "EqualLinear",
    "MappingNetwork",
    "MinibatchStdLayer",
    "NoiseMode",
    "StyleGAN2Discriminator",
    "StyleGAN2Generator",
    "SynthesisBlock",
    "SynthesisLayer",
    "SynthesisNetwork",
    "ToRGBLayer",
    "channels_per_resolution",
    "modulated_conv2d",
    "normalize_2nd_moment",
]

NoiseMode = Literal["random", "const", "none"]
"""Noise injection mode: fresh Gaussian noise, the fixed per-layer buffers, or none."""

_NOISE_MODES = ("random", "const", "none")


def _check_resolution(resolution: int, name: str) -> int:
    if not isinstance(resolution, int) or resolution < 4 or resolution & (resolution - 1):
        raise ValueError(f"{name} must be a power of two >= 4, got {resolution!r}")
    return int(math.log2(resolution))


def channels_per_resolution(
    resolutions: Sequence[int], channel_base: int = 32768, channel_max: int = 512
) -> dict[int, int]:
    """The StyleGAN2 channel rule ``min(channel_base // res, channel_max)`` for each resolution.

    Args:
        resolutions (`Sequence[int]`): Resolutions (powers of two).
        channel_base (`int`, defaults to 32768): Overall capacity (config F).
        channel_max (`int`, defaults to 512): Upper bound on channels.

    Returns:
        `dict[int, int]` mapping resolution to channels.
    """
    channels = {res: min(channel_base // res, channel_max) for res in resolutions}
    bad = {res: ch for res, ch in channels.items() if ch < 1}
    if bad:
        raise ValueError(f"channel_base={channel_base} gives no channels at resolutions {sorted(bad)}")
    return channels


def normalize_2nd_moment(x: Tensor, dim: int = 1, eps: float = 1e-8) -> Tensor:
    """PixelNorm: ``x * rsqrt(mean(x^2, dim) + eps)``.

    Args:
        x (`Tensor`): Input, e.g. latents of shape `(N, D)`.
        dim (`int`, defaults to 1): Dimension to normalise over.
        eps (`float`, defaults to 1e-8): Added to the mean square.

    Returns:
        `Tensor` of the shape of ``x``.
    """
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


class EqualLinear(nn.Module):
    """Fully connected layer with equalised learning rate and fused bias + activation.

    The weight is stored as ``randn / lr_multiplier`` and used as ``weight * lr_multiplier / sqrt(in_features)``; the
    bias is stored as ``bias_init`` and used as ``bias * lr_multiplier``.

    Args:
        in_features (`int`): Input features.
        out_features (`int`): Output features.
        bias (`bool`, defaults to `True`): Learn a bias.
        bias_init (`float`, defaults to 0.0): Initial (stored) bias value; 1 for style affines.
        lr_multiplier (`float`, defaults to 1.0): Learning-rate multiplier (0.01 in the mapping network).
        activation (`str`, defaults to `"linear"`): Activation of :func:`genblocks.gan.ops.bias_act` (``"lrelu"``
            includes the sqrt(2) gain).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        bias_init: float = 0.0,
        lr_multiplier: float = 1.0,
        activation: Activation = "linear",
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.lr_multiplier = lr_multiplier
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: Tensor) -> Tensor:
        """Apply the layer.

        Args:
            x (`Tensor` of shape `(..., in_features)`): Input.

        Returns:
            `Tensor` of shape `(..., out_features)`.
        """
        w = self.weight * self.weight_gain
        b = self.bias * self.bias_gain if self.bias is not None else None
        if self.activation == "linear":
            return nn.functional.linear(x, w, b)
        return bias_act(nn.functional.linear(x, w), b, dim=x.ndim - 1, act=self.activation)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
            f"lr_multiplier={self.lr_multiplier}, activation={self.activation}"
        )


class EqualConv2d(nn.Module):
    """2-D convolution with equalised learning rate, optional FIR up/down-sampling and fused bias + activation.

    Args:
        in_channels (`int`): Input channels.
        out_channels (`int`): Output channels.
        kernel_size (`int`): Square kernel size; padding is ``kernel_size // 2``.
        bias (`bool`, defaults to `True`): Learn a bias.
        activation (`str`, defaults to `"linear"`): Activation of :func:`genblocks.gan.ops.bias_act`.
        up (`int`, defaults to 1): Upsampling factor (transposed convolution + FIR filter).
        down (`int`, defaults to 1): Downsampling factor (FIR filter + strided convolution).
        resample_filter (`Sequence[float]`, defaults to `(1, 3, 3, 1)`): FIR taps for resampling.
        conv_clamp (`float`, *optional*): Clamp the output to ``[-conv_clamp * gain, conv_clamp * gain]``.
    """

    resample_filter: Tensor  # buffer

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        bias: bool = True,
        activation: Activation = "linear",
        up: int = 1,
        down: int = 1,
        resample_filter: Sequence[float] = (1, 3, 3, 1),
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.activation = activation
        self.up = up
        self.down = down
        self.conv_clamp = conv_clamp
        self.padding = kernel_size // 2
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size**2)
        self.act_gain = ACTIVATIONS[activation][2]
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def forward(self, x: Tensor, gain: float = 1.0) -> Tensor:
        """Apply the layer.

        Args:
            x (`Tensor` of shape `(N, in_channels, H, W)`): Input.
            gain (`float`, defaults to 1.0): Extra output scale (sqrt(0.5) on the discriminator's residual branches).

        Returns:
            `Tensor` of shape `(N, out_channels, H * up // down, W * up // down)`.
        """
        w = self.weight * self.weight_gain
        x = conv2d_resample(x, w, self.resample_filter, up=self.up, down=self.down, padding=self.padding)
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, self.bias, act=self.activation, gain=self.act_gain * gain, clamp=clamp)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, bias={self.bias is not None}, "
            f"activation={self.activation}, up={self.up}, down={self.down}"
        )


class MappingNetwork(nn.Module):
    """StyleGAN2 mapping network z (and label c) -> w, with w_avg tracking and truncation.

    Layer features are ``[z_dim + (w_dim if c_dim else 0)] + [w_dim] * num_layers``. With ``z_dim=0`` it maps a label
    only (the discriminator's projection conditioning).

    Args:
        z_dim (`int`): Latent size (0 for none).
        c_dim (`int`): Label size (0 for unconditional; 25 for an EG3D camera).
        w_dim (`int`): Output size.
        num_ws (`int`, *optional*): Broadcast the output to `(N, num_ws, w_dim)`; `None` returns `(N, w_dim)`.
        num_layers (`int`, defaults to 8): Fully connected layers (2 in EG3D).
        lr_multiplier (`float`, defaults to 0.01): Learning-rate multiplier of the fully connected layers (not of the
            label embedding).
        w_avg_beta (`float`, *optional*, defaults to 0.995): Decay of the tracked ``w_avg`` buffer; `None` disables
            tracking (and truncation).
    """

    w_avg: Tensor  # buffer, when w_avg_beta is set

    def __init__(
        self,
        z_dim: int,
        c_dim: int,
        w_dim: int,
        num_ws: int | None,
        num_layers: int = 8,
        lr_multiplier: float = 0.01,
        w_avg_beta: float | None = 0.995,
    ) -> None:
        super().__init__()
        if z_dim < 0 or c_dim < 0 or z_dim + c_dim == 0:
            raise ValueError(f"z_dim and c_dim must be >= 0 and not both 0, got z_dim={z_dim}, c_dim={c_dim}")
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta
        self.embed = EqualLinear(c_dim, w_dim) if c_dim > 0 else None
        features = [z_dim + (w_dim if c_dim > 0 else 0)] + [w_dim] * num_layers
        for i in range(num_layers):
            layer = EqualLinear(features[i], features[i + 1], activation="lrelu", lr_multiplier=lr_multiplier)
            setattr(self, f"fc{i}", layer)
        if w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(
        self,
        z: Tensor | None,
        c: Tensor | None = None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        update_emas: bool = False,
    ) -> Tensor:
        """Map latents (and labels) to w.

        Args:
            z (`Tensor` of shape `(N, z_dim)`, *optional*): Latents; `None` when ``z_dim == 0``.
            c (`Tensor` of shape `(N, c_dim)`, *optional*): Labels; required when ``c_dim > 0``.
            truncation_psi (`float`, defaults to 1.0): ``w_avg + psi * (w - w_avg)``; 1 disables truncation.
            truncation_cutoff (`int`, *optional*): Truncate only the first ``truncation_cutoff`` ws (all if `None`).
            update_emas (`bool`, defaults to `False`): Move ``w_avg`` towards the batch mean (training).

        Returns:
            `Tensor` of shape `(N, num_ws, w_dim)`, or `(N, w_dim)` when ``num_ws`` is `None`.
        """
        parts = []
        batch = None
        if self.z_dim > 0:
            if z is None or z.ndim != 2 or z.shape[1] != self.z_dim:
                raise ValueError(f"z must have shape (N, {self.z_dim}), got {None if z is None else tuple(z.shape)}")
            parts.append(normalize_2nd_moment(z))
            batch = z.shape[0]
        if self.embed is not None:
            if c is None or c.ndim != 2 or c.shape[1] != self.c_dim or (batch is not None and c.shape[0] != batch):
                raise ValueError(
                    f"c must have shape ({batch if batch is not None else 'N'}, {self.c_dim}), "
                    f"got {None if c is None else tuple(c.shape)}"
                )
            parts.append(normalize_2nd_moment(self.embed(c.to(self.embed.weight.dtype))))
        x = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)

        if update_emas and self.w_avg_beta is not None:
            with torch.no_grad():
                self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        if self.num_ws is not None:
            x = x.unsqueeze(1).repeat(1, self.num_ws, 1)
        if truncation_psi != 1:
            if self.w_avg_beta is None:
                raise ValueError("truncation_psi != 1 needs a tracked w_avg (w_avg_beta is None)")
            if self.num_ws is None or truncation_cutoff is None:
                x = self.w_avg.lerp(x, truncation_psi)
            else:
                head = self.w_avg.lerp(x[:, :truncation_cutoff], truncation_psi)
                x = torch.cat([head, x[:, truncation_cutoff:]], dim=1)
        return x

    def extra_repr(self) -> str:
        return (
            f"z_dim={self.z_dim}, c_dim={self.c_dim}, w_dim={self.w_dim}, num_ws={self.num_ws}, "
            f"num_layers={self.num_layers}"
        )


def modulated_conv2d(
    x: Tensor,
    weight: Tensor,
    styles: Tensor,
    demodulate: bool = True,
    up: int = 1,
    down: int = 1,
    padding: int = 0,
    resample_filter: Tensor | None = None,
    noise: Tensor | None = None,
) -> Tensor:
    """Modulated (and demodulated) convolution, run as one grouped convolution over the batch.

    Per sample n: ``w_n = weight * styles[n]`` (scaling input channels), then, if ``demodulate``,
    ``w_n *= rsqrt(sum_{in,kh,kw} w_n^2 + 1e-8)`` per output channel; then
    :func:`genblocks.gan.ops.conv2d_resample` with ``up``/``down``; then ``+ noise``.

    Args:
        x (`Tensor` of shape `(N, C_in, H, W)`): Input.
        weight (`Tensor` of shape `(C_out, C_in, kh, kw)`): Kernel, already scaled by the equalised-lr gain.
        styles (`Tensor` of shape `(N, C_in)`): Per-sample input-channel scales.
        demodulate (`bool`, defaults to `True`): Normalise each sample's output channels to unit weight norm.
        up (`int`, defaults to 1): Upsampling factor.
        down (`int`, defaults to 1): Downsampling factor.
        padding (`int`, defaults to 0): Convolution padding (``k // 2`` keeps the size before resampling).
        resample_filter (`Tensor` of shape `(fh, fw)`, *optional*): FIR filter; required for ``up``/``down`` > 1.
        noise (`Tensor` broadcastable to the output, e.g. `(N, 1, H', W')`, *optional*): Added to the output (already
            scaled by the noise strength).

    Returns:
        `Tensor` of shape `(N, C_out, H', W')`.
    """
    if x.ndim != 4:
        raise ValueError(f"x must have shape (N, C, H, W), got {tuple(x.shape)}")
    batch, in_channels, height, width = x.shape
    out_channels, w_in, kh, kw = weight.shape
    if w_in != in_channels:
        raise ValueError(f"weight expects {w_in} input channels but x has {in_channels}")
    if styles.shape != (batch, in_channels):
        raise ValueError(f"styles must have shape ({batch}, {in_channels}), got {tuple(styles.shape)}")
    w = weight.unsqueeze(0) * styles.reshape(batch, 1, in_channels, 1, 1)
    if demodulate:
        w = w * (w.square().sum(dim=(2, 3, 4)) + 1e-8).rsqrt().reshape(batch, out_channels, 1, 1, 1)
    out = conv2d_resample(
        x.reshape(1, batch * in_channels, height, width),
        w.reshape(batch * out_channels, in_channels, kh, kw),
        resample_filter,
        up=up,
        down=down,
        padding=padding,
        groups=batch,
    )
    out = out.reshape(batch, out_channels, out.shape[2], out.shape[3])
    if noise is not None:
        out = out + noise
    return out


class SynthesisLayer(nn.Module):
    """Modulated 3x3 convolution + noise + bias + lrelu (one "StyledConv").

    Args:
        in_channels (`int`): Input channels.
        out_channels (`int`): Output channels.
        w_dim (`int`): Size of w.
        resolution (`int`): Output resolution (the noise buffer is ``resolution x resolution``).
        kernel_size (`int`, defaults to 3): Kernel size.
        up (`int`, defaults to 1): Upsampling factor (2 for the first layer of a block).
        use_noise (`bool`, defaults to `True`): Create ``noise_strength`` and ``noise_const``.
        activation (`str`, defaults to `"lrelu"`): Activation (with its default gain).
        resample_filter (`Sequence[float]`, defaults to `(1, 3, 3, 1)`): FIR taps for upsampling.
        conv_clamp (`float`, *optional*): Clamp the output to ``[-conv_clamp * gain, conv_clamp * gain]``.
    """

    resample_filter: Tensor  # buffer
    noise_const: Tensor  # buffer, when use_noise

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        kernel_size: int = 3,
        up: int = 1,
        use_noise: bool = True,
        activation: Activation = "lrelu",
        resample_filter: Sequence[float] = (1, 3, 3, 1),
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        if resolution % up:
            raise ValueError(f"resolution {resolution} must be divisible by up={up}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.kernel_size = kernel_size
        self.up = up
        self.use_noise = use_noise
        self.activation = activation
        self.conv_clamp = conv_clamp
        self.padding = kernel_size // 2
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size**2)
        self.act_gain = ACTIVATIONS[activation][2]
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        if use_noise:
            self.register_buffer("noise_const", torch.randn(resolution, resolution))
            self.noise_strength = nn.Parameter(torch.zeros([]))

    def forward(self, x: Tensor, w: Tensor, noise_mode: NoiseMode = "random", gain: float = 1.0) -> Tensor:
        """Apply the layer.

        Args:
            x (`Tensor` of shape `(N, in_channels, resolution // up, resolution // up)`): Input features.
            w (`Tensor` of shape `(N, w_dim)`): The w of this layer.
            noise_mode (`str`, defaults to `"random"`): ``"random"``, ``"const"`` or ``"none"``.
            gain (`float`, defaults to 1.0): Extra output scale.

        Returns:
            `Tensor` of shape `(N, out_channels, resolution, resolution)`.
        """
        if noise_mode not in _NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {_NOISE_MODES}, got {noise_mode!r}")
        in_res = self.resolution // self.up
        if x.ndim != 4 or x.shape[1:] != (self.in_channels, in_res, in_res):
            raise ValueError(f"x must have shape (N, {self.in_channels}, {in_res}, {in_res}), got {tuple(x.shape)}")
        if w.shape != (x.shape[0], self.w_dim):
            raise ValueError(f"w must have shape ({x.shape[0]}, {self.w_dim}), got {tuple(w.shape)}")
        styles = self.affine(w)
        noise = None
        if self.use_noise and noise_mode == "random":
            noise = torch.randn(x.shape[0], 1, self.resolution, self.resolution, device=x.device, dtype=x.dtype)
            noise = noise * self.noise_strength
        elif self.use_noise and noise_mode == "const":
            noise = self.noise_const * self.noise_strength
        x = modulated_conv2d(
            x,
            self.weight * self.weight_gain,
            styles,
            demodulate=True,
            up=self.up,
            padding=self.padding,
            resample_filter=self.resample_filter,
            noise=noise,
        )
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, self.bias, act=self.activation, gain=self.act_gain * gain, clamp=clamp)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, w_dim={self.w_dim}, resolution={self.resolution}, "
            f"kernel_size={self.kernel_size}, up={self.up}, use_noise={self.use_noise}"
        )


class ToRGBLayer(nn.Module):
    """Modulated 1x1 convolution to image channels, without demodulation, plus bias.

    Args:
        in_channels (`int`): Input channels.
        out_channels (`int`): Image channels (3 for RGB; 96 for an EG3D tri-plane backbone).
        w_dim (`int`): Size of w.
        kernel_size (`int`, defaults to 1): Kernel size.
        conv_clamp (`float`, *optional*): Clamp the output to ``[-conv_clamp, conv_clamp]``.
    """

    def __init__(
        self, in_channels: int, out_channels: int, w_dim: int, kernel_size: int = 1, conv_clamp: float | None = None
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.w_dim = w_dim
        self.kernel_size = kernel_size
        self.conv_clamp = conv_clamp
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size**2)
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        """Apply the layer.

        Args:
            x (`Tensor` of shape `(N, in_channels, H, W)`): Features.
            w (`Tensor` of shape `(N, w_dim)`): The w of this layer.

        Returns:
            `Tensor` of shape `(N, out_channels, H, W)`.
        """
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"x must have shape (N, {self.in_channels}, H, W), got {tuple(x.shape)}")
        styles = self.affine(w)
        x = modulated_conv2d(
            x, self.weight * self.weight_gain, styles, demodulate=False, padding=self.kernel_size // 2
        )
        return bias_act(x, self.bias, clamp=self.conv_clamp)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, w_dim={self.w_dim}, kernel_size={self.kernel_size}"


class SynthesisBlock(nn.Module):
    """One resolution of the skip-architecture synthesis network.

    ``in_channels == 0`` makes the 4x4 block: a learned constant ``const`` then ``conv1`` (``num_conv = 1``).
    Otherwise ``conv0`` (upsampling by ``up``) then ``conv1`` (``num_conv = 2``). Both end with ``torgb``, whose
    output is added to the upsampled incoming image (``num_torgb = 1``).

    Args:
        in_channels (`int`): Input channels, 0 for the constant-input block.
        out_channels (`int`): Output channels.
        w_dim (`int`): Size of w.
        resolution (`int`): Output resolution.
        img_channels (`int`): Channels of the ToRGB output.
        is_last (`bool`): Whether this is the last block (kept for NVIDIA parity; the skip architecture always has
            ToRGB).
        use_noise (`bool`, defaults to `True`): Noise injection in the convolutions.
        up (`int`, defaults to 2): Upsampling factor of ``conv0`` and of the incoming image; 1 for EG3D's
            super-resolution blocks that do not upsample.
        resample_filter (`Sequence[float]`, defaults to `(1, 3, 3, 1)`): FIR taps.
        conv_clamp (`float`, *optional*): Output clamp of the layers.
    """

    resample_filter: Tensor  # buffer

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        img_channels: int,
        is_last: bool,
        use_noise: bool = True,
        up: int = 2,
        resample_filter: Sequence[float] = (1, 3, 3, 1),
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.is_last = is_last
        self.up = up
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn(out_channels, resolution, resolution))
            self.num_conv = 1
        else:
            self.conv0 = SynthesisLayer(
                in_channels,
                out_channels,
                w_dim,
                resolution,
                up=up,
                use_noise=use_noise,
                resample_filter=resample_filter,
                conv_clamp=conv_clamp,
            )
            self.num_conv = 2
        self.conv1 = SynthesisLayer(
            out_channels,
            out_channels,
            w_dim,
            resolution,
            use_noise=use_noise,
            resample_filter=resample_filter,
            conv_clamp=conv_clamp,
        )
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)
        self.num_torgb = 1

    def forward(
        self,
        x: Tensor | None,
        img: Tensor | None,
        ws: Tensor,
        noise_mode: NoiseMode = "random",
        return_features: bool = False,
    ) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, list[Tensor]]:
        """Run the block.

        Args:
            x (`Tensor` of shape `(N, in_channels, resolution // up, resolution // up)`, *optional*): Features; must be
                `None` for the constant-input block.
            img (`Tensor` of shape `(N, img_channels, resolution // up, resolution // up)`, *optional*): Image so far;
                `None` at the first block.
            ws (`Tensor` of shape `(N, num_conv + num_torgb, w_dim)`): The ws of the convolutions then of ToRGB.
            noise_mode (`str`, defaults to `"random"`): ``"random"``, ``"const"`` or ``"none"``.
            return_features (`bool`, defaults to `False`): Also return the outputs of the convolutions.

        Returns:
            `(x, img)` with x of shape `(N, out_channels, resolution, resolution)` and img of shape
            `(N, img_channels, resolution, resolution)`; with ``return_features`` a third element, the list of the
            ``num_conv`` convolution outputs in order.
        """
        count = self.num_conv + self.num_torgb
        if ws.ndim != 3 or ws.shape[1:] != (count, self.w_dim):
            raise ValueError(f"ws must have shape (N, {count}, {self.w_dim}), got {tuple(ws.shape)}")
        features = []
        if self.in_channels == 0:
            if x is not None:
                raise ValueError("x must be None for the constant-input block (in_channels == 0)")
            x = self.const.unsqueeze(0).expand(ws.shape[0], -1, -1, -1)
            x = self.conv1(x, ws[:, 0], noise_mode=noise_mode)
            features.append(x)
        else:
            if x is None:
                raise ValueError(f"x is required for a block with in_channels={self.in_channels}")
            x = self.conv0(x, ws[:, 0], noise_mode=noise_mode)
            features.append(x)
            x = self.conv1(x, ws[:, 1], noise_mode=noise_mode)
            features.append(x)
        if img is not None:
            in_res = self.resolution // self.up
            if img.shape != (x.shape[0], self.img_channels, in_res, in_res):
                raise ValueError(
                    f"img must have shape ({x.shape[0]}, {self.img_channels}, {in_res}, {in_res}), got "
                    f"{tuple(img.shape)}"
                )
            if self.up > 1:
                img = upsample2d(img, self.resample_filter, up=self.up)
        y = self.torgb(x, ws[:, self.num_conv])
        img = img + y if img is not None else y
        if return_features:
            return x, img, features
        return x, img

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, resolution={self.resolution}, "
            f"img_channels={self.img_channels}, up={self.up}"
        )


class SynthesisNetwork(nn.Module):
    """StyleGAN2 synthesis network (skip architecture): blocks ``b4, b8, ..., b{img_resolution}``.

    ``num_ws = 2 * log2(img_resolution) - 2``: block ``b{r}`` reads ws ``[i, i + num_conv]`` where its ToRGB w is the
    next block's first w (as in NVIDIA's and rosinality's generators).

    Args:
        w_dim (`int`): Size of w.
        img_resolution (`int`): Output resolution, a power of two >= 4.
        img_channels (`int`): Output channels.
        channel_base (`int`, defaults to 32768): ``channels(res) = min(channel_base // res, channel_max)``.
        channel_max (`int`, defaults to 512): Upper bound on channels.
        use_noise (`bool`, defaults to `True`): Noise injection.
        conv_clamp (`float`, *optional*): Output clamp of every layer (NVIDIA trains with 256).
        resample_filter (`Sequence[float]`, defaults to `(1, 3, 3, 1)`): FIR taps.
    """

    def __init__(
        self,
        w_dim: int,
        img_resolution: int,
        img_channels: int,
        channel_base: int = 32768,
        channel_max: int = 512,
        use_noise: bool = True,
        conv_clamp: float | None = None,
        resample_filter: Sequence[float] = (1, 3, 3, 1),
    ) -> None:
        super().__init__()
        log2 = _check_resolution(img_resolution, "img_resolution")
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.block_resolutions = [2**i for i in range(2, log2 + 1)]
        self.channels = channels_per_resolution(self.block_resolutions, channel_base, channel_max)
        self.num_ws = 0
        for res in self.block_resolutions:
            block = SynthesisBlock(
                self.channels[res // 2] if res > 4 else 0,
                self.channels[res],
                w_dim,
                res,
                img_channels,
                is_last=res == img_resolution,
                use_noise=use_noise,
                resample_filter=resample_filter,
                conv_clamp=conv_clamp,
            )
            setattr(self, f"b{res}", block)
            self.num_ws += block.num_conv + (block.num_torgb if res == img_resolution else 0)

    @property
    def num_features(self) -> int:
        """Length of the ``features`` list returned with ``return_features=True`` (every convolution output)."""
        return 2 * len(self.block_resolutions) - 1

    def forward(
        self, ws: Tensor, noise_mode: NoiseMode = "random", return_features: bool = False
    ) -> Tensor | tuple[Tensor, list[Tensor]]:
        """Synthesise images from per-layer ws.

        Args:
            ws (`Tensor` of shape `(N, num_ws, w_dim)`): One w per layer (W+).
            noise_mode (`str`, defaults to `"random"`): ``"random"``, ``"const"`` or ``"none"``.
            return_features (`bool`, defaults to `False`): Also return every convolution output.

        Returns:
            img (`Tensor` of shape `(N, img_channels, img_resolution, img_resolution)`); with ``return_features`` the
            tuple `(img, features)` where features holds the ``2 * log2(img_resolution) - 3`` convolution outputs
            (after noise, bias and activation) in order: ``b4.conv1`` at 4x4, then ``b{r}.conv0``, ``b{r}.conv1`` of
            shape `(N, channels[r], r, r)` for r = 8, ..., img_resolution (rosinality's ``conv1``, ``convs.{i}``).
        """
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"ws must have shape (N, {self.num_ws}, {self.w_dim}), got {tuple(ws.shape)}")
        x: Tensor | None = None
        img: Tensor | None = None
        features: list[Tensor] = []
        w_idx = 0
        for res in self.block_resolutions:
            block: SynthesisBlock = getattr(self, f"b{res}")
            block_ws = ws.narrow(1, w_idx, block.num_conv + block.num_torgb)
            w_idx += block.num_conv
            if return_features:
                x, img, block_features = block(x, img, block_ws, noise_mode=noise_mode, return_features=True)
                features.extend(block_features)
            else:
                x, img = block(x, img, block_ws, noise_mode=noise_mode)
        assert img is not None  # block_resolutions is never empty
        if return_features:
            return img, features
        return img

    def extra_repr(self) -> str:
        return (
            f"w_dim={self.w_dim}, img_resolution={self.img_resolution}, img_channels={self.img_channels}, "
            f"num_ws={self.num_ws}"
        )


class StyleGAN2Generator(nn.Module):
    """StyleGAN2 generator: ``mapping`` (z, c -> ws) then ``synthesis`` (ws -> image).

    Args:
        z_dim (`int`): Latent size.
        c_dim (`int`): Label size (0 for unconditional).
        w_dim (`int`): Size of w.
        img_resolution (`int`): Output resolution, a power of two >= 4.
        img_channels (`int`, defaults to 3): Output channels.
        mapping_layers (`int`, defaults to 8): Fully connected layers of the mapping network.
        channel_base (`int`, defaults to 32768): ``channels(res) = min(channel_base // res, channel_max)``.
        channel_max (`int`, defaults to 512): Upper bound on channels.
        use_noise (`bool`, defaults to `True`): Noise injection.
        conv_clamp (`float`, *optional*): Output clamp of the synthesis layers.
        mapping_lr_multiplier (`float`, defaults to 0.01): Learning-rate multiplier of the mapping network.
        w_avg_beta (`float`, defaults to 0.995): Decay of the tracked ``mapping.w_avg``.
    """

    def __init__(
        self,
        z_dim: int,
        c_dim: int,
        w_dim: int,
        img_resolution: int,
        img_channels: int = 3,
        mapping_layers: int = 8,
        channel_base: int = 32768,
        channel_max: int = 512,
        use_noise: bool = True,
        conv_clamp: float | None = None,
        mapping_lr_multiplier: float = 0.01,
        w_avg_beta: float = 0.995,
    ) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.synthesis = SynthesisNetwork(
            w_dim, img_resolution, img_channels, channel_base, channel_max, use_noise=use_noise, conv_clamp=conv_clamp
        )
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(
            z_dim,
            c_dim,
            w_dim,
            self.num_ws,
            mapping_layers,
            lr_multiplier=mapping_lr_multiplier,
            w_avg_beta=w_avg_beta,
        )

    def forward(
        self,
        z: Tensor,
        c: Tensor | None = None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        noise_mode: NoiseMode = "random",
        return_features: bool = False,
        update_emas: bool = False,
    ) -> Tensor | tuple[Tensor, list[Tensor]]:
        """Generate images from latents.

        Args:
            z (`Tensor` of shape `(N, z_dim)`): Latents.
            c (`Tensor` of shape `(N, c_dim)`, *optional*): Labels; required when ``c_dim > 0``.
            truncation_psi (`float`, defaults to 1.0): Truncation strength (1 = none, 0 = ``w_avg``).
            truncation_cutoff (`int`, *optional*): Truncate only the first ws.
            noise_mode (`str`, defaults to `"random"`): ``"random"``, ``"const"`` or ``"none"``.
            return_features (`bool`, defaults to `False`): Also return every convolution output.
            update_emas (`bool`, defaults to `False`): Update ``mapping.w_avg``.

        Returns:
            See :meth:`synthesize`.
        """
        ws = self.mapping(
            z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff, update_emas=update_emas
        )
        return self.synthesize(ws, noise_mode=noise_mode, return_features=return_features)

    def synthesize(
        self, ws: Tensor, noise_mode: NoiseMode = "random", return_features: bool = False
    ) -> Tensor | tuple[Tensor, list[Tensor]]:
        """Generate images from W (one w for all layers) or W+ (one w per layer).

        Args:
            ws (`Tensor` of shape `(N, num_ws, w_dim)` or `(N, w_dim)`): Per-layer ws, or one w broadcast to all
                layers.
            noise_mode (`str`, defaults to `"random"`): ``"random"``, ``"const"`` or ``"none"``.
            return_features (`bool`, defaults to `False`): Also return every convolution output.

        Returns:
            img (`Tensor` of shape `(N, img_channels, R, R)`), or `(img, features)`; see
            :meth:`SynthesisNetwork.forward`.
        """
        if ws.ndim == 2:
            ws = ws.unsqueeze(1).expand(-1, self.num_ws, -1)
        return self.synthesis(ws, noise_mode=noise_mode, return_features=return_features)


class MinibatchStdLayer(nn.Module):
    """Append the per-group standard deviation of the features as extra channels.

    The batch is split into ``G = min(group_size, N)`` interleaved groups (sample n belongs to group member
    ``n // (N / G)``); for each of ``num_channels`` channel slices the std over the group is averaged over channels and
    pixels.

    Args:
        group_size (`int`, *optional*, defaults to 4): Group size; `None` uses the whole batch.
        num_channels (`int`, defaults to 1): Number of std channels appended.
    """

    def __init__(self, group_size: int | None = 4, num_channels: int = 1) -> None:
        super().__init__()
        self.group_size = group_size
        self.num_channels = num_channels

    def forward(self, x: Tensor) -> Tensor:
        """Append the std channels.

        Args:
            x (`Tensor` of shape `(N, C, H, W)`): Features; N must be divisible by the group size.

        Returns:
            `Tensor` of shape `(N, C + num_channels, H, W)`.
        """
        n, c, h, w = x.shape
        g = min(self.group_size, n) if self.group_size is not None else n
        f = self.num_channels
        if n % g:
            raise ValueError(f"batch size {n} must be divisible by the minibatch-std group size {g}")
        if c % f:
            raise ValueError(f"channels {c} must be divisible by mbstd num_channels {f}")
        y = x.reshape(g, -1, f, c // f, h, w)
        y = (y - y.mean(dim=0)).square().mean(dim=0)
        y = (y + 1e-8).sqrt().mean(dim=(2, 3, 4))
        y = y.reshape(-1, f, 1, 1).repeat(g, 1, h, w)
        return torch.cat([x, y], dim=1)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}, num_channels={self.num_channels}"


class DiscriminatorBlock(nn.Module):
    """Resnet discriminator block: ``(skip(x) + conv1(conv0(x))) * sqrt(0.5)``, halving the resolution.

    The first block (``first=True``) starts with ``fromrgb`` (1x1 conv + lrelu) from ``img_channels`` to
    ``tmp_channels``. ``conv0``: 3x3 to ``tmp_channels``; ``conv1``: 3x3 with FIR downsampling to ``out_channels``;
    ``skip``: 1x1 with FIR downsampling, no bias, linear.

    Args:
        in_channels (`int`): Input feature channels (ignored when ``first``).
        tmp_channels (`int`): Channels inside the block.
        out_channels (`int`): Output channels.
        resolution (`int`): Input resolution.
        img_channels (`int`): Image channels read by ``fromrgb``.
        first (`bool`): Whether this block reads the image.
        resample_filter (`Sequence[float]`, defaults to `(1, 3, 3, 1)`): FIR taps.
        conv_clamp (`float`, *optional*): Output clamp of the convolutions.
    """

    def __init__(
        self,
        in_channels: int,
        tmp_channels: int,
        out_channels: int,
        resolution: int,
        img_channels: int,
        first: bool,
        resample_filter: Sequence[float] = (1, 3, 3, 1),
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.tmp_channels = tmp_channels
        self.out_channels = out_channels
        self.resolution = resolution
        self.img_channels = img_channels
        self.first = first
        conv_in = tmp_channels if first else in_channels
        if first:
            self.fromrgb = EqualConv2d(img_channels, tmp_channels, 1, activation="lrelu", conv_clamp=conv_clamp)
        self.conv0 = EqualConv2d(conv_in, tmp_channels, 3, activation="lrelu", conv_clamp=conv_clamp)
        self.conv1 = EqualConv2d(
            tmp_channels,
            out_channels,
            3,
            activation="lrelu",
            down=2,
            resample_filter=resample_filter,
            conv_clamp=conv_clamp,
        )
        self.skip = EqualConv2d(conv_in, out_channels, 1, bias=False, down=2, resample_filter=resample_filter)

    def forward(self, x: Tensor) -> Tensor:
        """Run the block.

        Args:
            x (`Tensor` of shape `(N, img_channels, resolution, resolution)` if ``first``, else
                `(N, in_channels, resolution, resolution)`): Image or features.

        Returns:
            `Tensor` of shape `(N, out_channels, resolution // 2, resolution // 2)`.
        """
        channels = self.img_channels if self.first else self.in_channels
        if x.ndim != 4 or x.shape[1:] != (channels, self.resolution, self.resolution):
            raise ValueError(
                f"x must have shape (N, {channels}, {self.resolution}, {self.resolution}), got {tuple(x.shape)}"
            )
        if self.first:
            x = self.fromrgb(x)
        y = self.skip(x, gain=math.sqrt(0.5))
        x = self.conv1(self.conv0(x), gain=math.sqrt(0.5))
        return x + y

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.tmp_channels}, {self.out_channels}, resolution={self.resolution}, "
            f"first={self.first}"
        )


class DiscriminatorEpilogue(nn.Module):
    """Discriminator head at 4x4: minibatch std, 3x3 conv, fc, output (with projection on ``cmap``).

    Args:
        in_channels (`int`): Input channels.
        cmap_dim (`int`): Size of the label projection; 0 for an unconditional logit.
        resolution (`int`): Input resolution (4).
        img_channels (`int`): Image channels (kept for NVIDIA parity; unused by the resnet architecture).
        mbstd_group_size (`int`, *optional*, defaults to 4): Minibatch-std group size.
        mbstd_num_channels (`int`, defaults to 1): Minibatch-std channels; 0 disables the layer.
        conv_clamp (`float`, *optional*): Output clamp of the convolution.
    """

    def __init__(
        self,
        in_channels: int,
        cmap_dim: int,
        resolution: int,
        img_channels: int,
        mbstd_group_size: int | None = 4,
        mbstd_num_channels: int = 1,
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.cmap_dim = cmap_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.mbstd = MinibatchStdLayer(mbstd_group_size, mbstd_num_channels) if mbstd_num_channels > 0 else None
        self.conv = EqualConv2d(
            in_channels + mbstd_num_channels, in_channels, 3, activation="lrelu", conv_clamp=conv_clamp
        )
        self.fc = EqualLinear(in_channels * resolution**2, in_channels, activation="lrelu")
        self.out = EqualLinear(in_channels, 1 if cmap_dim == 0 else cmap_dim)

    def forward(self, x: Tensor, cmap: Tensor | None = None) -> Tensor:
        """Compute the logits.

        Args:
            x (`Tensor` of shape `(N, in_channels, resolution, resolution)`): Features.
            cmap (`Tensor` of shape `(N, cmap_dim)`, *optional*): Label projection; required when ``cmap_dim > 0``.

        Returns:
            `Tensor` of shape `(N, 1)`: ``out(x)`` or ``sum(out(x) * cmap) / sqrt(cmap_dim)``.
        """
        if x.ndim != 4 or x.shape[1:] != (self.in_channels, self.resolution, self.resolution):
            raise ValueError(
                f"x must have shape (N, {self.in_channels}, {self.resolution}, {self.resolution}), got "
                f"{tuple(x.shape)}"
            )
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.conv(x)
        x = self.out(self.fc(x.flatten(1)))
        if self.cmap_dim > 0:
            if cmap is None or cmap.shape != (x.shape[0], self.cmap_dim):
                raise ValueError(
                    f"cmap must have shape ({x.shape[0]}, {self.cmap_dim}), got "
                    f"{None if cmap is None else tuple(cmap.shape)}"
                )
            x = (x * cmap).sum(dim=1, keepdim=True) * (1.0 / math.sqrt(self.cmap_dim))
        return x

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, cmap_dim={self.cmap_dim}, resolution={self.resolution}"


class StyleGAN2Discriminator(nn.Module):
    """StyleGAN2 resnet discriminator with minibatch std and optional projection conditioning.

    Blocks ``b{R}, ..., b8`` (block at ``res`` maps ``channels[res]`` to ``channels[res // 2]``), then the epilogue
    ``b4``; with ``c_dim > 0`` a ``mapping`` network (z_dim 0) turns the label into ``cmap``.

    Args:
        img_resolution (`int`): Input resolution, a power of two >= 4.
        img_channels (`int`, defaults to 3): Image channels.
        c_dim (`int`, defaults to 0): Label size (25 for an EG3D camera).
        channel_base (`int`, defaults to 32768): ``channels(res) = min(channel_base // res, channel_max)``.
        channel_max (`int`, defaults to 512): Upper bound on channels.
        mbstd_group_size (`int`, *optional*, defaults to 4): Minibatch-std group size.
        mbstd_num_channels (`int`, defaults to 1): Minibatch-std channels.
        cmap_dim (`int`, *optional*): Projection size; defaults to ``channels[4]`` when ``c_dim > 0``.
        in_channels (`int`, *optional*): Input channels overriding ``img_channels`` (EG3D's dual discriminator: 6).
        mapping_layers (`int`, defaults to 8): Layers of the label mapping network.
        conv_clamp (`float`, *optional*): Output clamp of the convolutions.
    """

    def __init__(
        self,
        img_resolution: int,
        img_channels: int = 3,
        c_dim: int = 0,
        channel_base: int = 32768,
        channel_max: int = 512,
        mbstd_group_size: int | None = 4,
        mbstd_num_channels: int = 1,
        cmap_dim: int | None = None,
        in_channels: int | None = None,
        mapping_layers: int = 8,
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        log2 = _check_resolution(img_resolution, "img_resolution")
        if img_resolution < 8:
            raise ValueError(f"img_resolution must be >= 8 for the discriminator, got {img_resolution}")
        if c_dim < 0:
            raise ValueError(f"c_dim must be >= 0, got {c_dim}")
        self.img_resolution = img_resolution
        self.img_channels = in_channels if in_channels is not None else img_channels
        self.c_dim = c_dim
        self.block_resolutions = [2**i for i in range(log2, 2, -1)]
        self.channels = channels_per_resolution([*self.block_resolutions, 4], channel_base, channel_max)
        self.cmap_dim = 0 if c_dim == 0 else (cmap_dim if cmap_dim is not None else self.channels[4])
        for res in self.block_resolutions:
            block = DiscriminatorBlock(
                self.channels[res],
                self.channels[res],
                self.channels[res // 2],
                res,
                self.img_channels,
                first=res == img_resolution,
                conv_clamp=conv_clamp,
            )
            setattr(self, f"b{res}", block)
        if c_dim > 0:
            self.mapping = MappingNetwork(
                0, c_dim, self.cmap_dim, num_ws=None, num_layers=mapping_layers, w_avg_beta=None
            )
        self.b4 = DiscriminatorEpilogue(
            self.channels[4],
            self.cmap_dim,
            4,
            self.img_channels,
            mbstd_group_size=mbstd_group_size,
            mbstd_num_channels=mbstd_num_channels,
            conv_clamp=conv_clamp,
        )

    def forward(self, img: Tensor, c: Tensor | None = None) -> Tensor:
        """Score images.

        Args:
            img (`Tensor` of shape `(N, img_channels, R, R)`): Images (``in_channels`` channels if given).
            c (`Tensor` of shape `(N, c_dim)`, *optional*): Labels; required when ``c_dim > 0``.

        Returns:
            `Tensor` of shape `(N, 1)`: logits.
        """
        r = self.img_resolution
        if img.ndim != 4 or img.shape[1:] != (self.img_channels, r, r):
            raise ValueError(f"img must have shape (N, {self.img_channels}, {r}, {r}), got {tuple(img.shape)}")
        cmap = None
        if self.c_dim > 0:
            if c is None or c.shape != (img.shape[0], self.c_dim):
                raise ValueError(
                    f"c must have shape ({img.shape[0]}, {self.c_dim}), got {None if c is None else tuple(c.shape)}"
                )
            cmap = self.mapping(None, c)
        x = img
        for res in self.block_resolutions:
            x = getattr(self, f"b{res}")(x)
        return self.b4(x, cmap)

    def extra_repr(self) -> str:
        return f"img_resolution={self.img_resolution}, img_channels={self.img_channels}, c_dim={self.c_dim}"
