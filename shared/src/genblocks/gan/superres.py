"""EG3D's "hybrid" super-resolution modules: two StyleGAN2 synthesis blocks that lift the rendered feature image to
the output resolution (arXiv 2112.07945, supplement; spec genblocks §3 "superres.py"; conventions of NVlabs/eg3d
``eg3d/training/superresolution.py``, not its code).

The rendered features (first channels = raw RGB) are resized with antialiased bilinear interpolation to the module's
input resolution, then:

- `SuperResolutionHybrid2X` (128 px): a no-upsampling block 32→128 at 64, then an upsampling block 128→64 at 128.
- `SuperResolutionHybrid4X` (256 px): no-upsampling block 32→128 at 128, then 128→64 at 256.
- `SuperResolutionHybrid8XDC` (512 px): upsampling blocks 32→256 at 256 and 256→128 at 512.

Both blocks use the last backbone w, ``ws[:, -1]`` repeated three times (conv0, conv1, torgb), and the skip
architecture (``img = upsample(img) + torgb(x)``); the first block of 2X/4X is EG3D's ``SynthesisBlockNoUp``, here a
`~genblocks.gan.stylegan2.SynthesisBlock` with ``up=1`` (same parameter names ``conv0``, ``conv1``, ``torgb``). The
SR never uses noise (EG3D runs it with ``noise_mode="none"``), so its layers are built without noise inputs: released
checkpoints' SR ``noise_strength``/``noise_const`` entries are unused and may be dropped by a converter. Output
resolution, block widths and channels are arguments, so tiny configurations (e.g. 16 → 32 px) use the same classes.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from genblocks.gan.stylegan2 import SynthesisBlock

__all__ = [
    "SuperResolutionHybrid",
    "SuperResolutionHybrid2X",
    "SuperResolutionHybrid4X",
    "SuperResolutionHybrid8XDC",
]


def _is_power_of_two(value: int) -> bool:
    return value >= 1 and value & (value - 1) == 0


class SuperResolutionHybrid(nn.Module):
    """Two-block hybrid super-resolution (module docstring); the named presets below subclass it.

    Args:
        channels (`int`): channels of the rendered feature image.
        img_resolution (`int`): output side R (a power of two).
        input_resolution (`int`): side the features are resized to: R/2 when the first block keeps the resolution,
            R/4 when it upsamples.
        block_channels (`tuple[int, int]`): output widths of block0 and block1.
        first_block_upsamples (`bool`): whether block0 upsamples (8XDC) or keeps the resolution (2X, 4X).
        w_dim (`int`, defaults to 512): style size.
        img_channels (`int`, defaults to 3): image channels (4 for OmniAvatar's RGB + mask).
        antialias (`bool`, defaults to `True`): antialiased input resize (EG3D ``sr_antialias``).
        conv_clamp (`float`, *optional*): clamp of every conv output, as the blocks' ``conv_clamp`` (EG3D clamps its
            SR at 256 whenever ``sr_num_fp16_res > 0``, in fp32 too); `None`: no clamp.
    """

    default_block_channels: tuple[int, int] = (128, 64)

    def __init__(
        self,
        channels: int,
        img_resolution: int,
        input_resolution: int,
        block_channels: tuple[int, int],
        first_block_upsamples: bool,
        w_dim: int = 512,
        img_channels: int = 3,
        antialias: bool = True,
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        if not _is_power_of_two(img_resolution) or img_resolution < 8:
            raise ValueError(f"img_resolution must be a power of two >= 8, got {img_resolution}")
        factor = 4 if first_block_upsamples else 2
        if input_resolution * factor != img_resolution:
            raise ValueError(
                f"input_resolution must be img_resolution / {factor} = {img_resolution // factor}, "
                f"got {input_resolution}"
            )
        self.channels = channels
        self.img_resolution = img_resolution
        self.input_resolution = input_resolution
        self.img_channels = img_channels
        self.antialias = antialias
        self.block0 = SynthesisBlock(
            channels,
            block_channels[0],
            w_dim,
            img_resolution // 2,
            img_channels,
            is_last=False,
            use_noise=False,
            up=2 if first_block_upsamples else 1,
            conv_clamp=conv_clamp,
        )
        self.block1 = SynthesisBlock(
            block_channels[0],
            block_channels[1],
            w_dim,
            img_resolution,
            img_channels,
            is_last=True,
            use_noise=False,
            conv_clamp=conv_clamp,
        )

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, input_resolution={self.input_resolution}, "
            f"img_resolution={self.img_resolution}, antialias={self.antialias}"
        )

    def _resize(self, x: Tensor) -> Tensor:
        if x.shape[-1] == self.input_resolution and x.shape[-2] == self.input_resolution:
            return x
        size = (self.input_resolution, self.input_resolution)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=self.antialias)

    def forward(self, rgb: Tensor, features: Tensor, ws: Tensor) -> Tensor:
        """Upsample a rendered image.

        Args:
            rgb (`torch.Tensor` of shape `(N, img_channels, r, r)`): raw image (the first rendered feature channels).
            features (`torch.Tensor` of shape `(N, channels, r, r)`): rendered feature image.
            ws (`torch.Tensor` of shape `(N, num_ws, w_dim)`): backbone styles; only ``ws[:, -1]`` is used.

        Returns:
            `torch.Tensor` of shape `(N, img_channels, R, R)`.
        """
        if features.dim() != 4 or features.shape[1] != self.channels:
            raise ValueError(f"features must have shape (N, {self.channels}, r, r), got {tuple(features.shape)}")
        if rgb.dim() != 4 or rgb.shape[1] != self.img_channels or rgb.shape[-2:] != features.shape[-2:]:
            raise ValueError(
                f"rgb must have shape (N, {self.img_channels}, {features.shape[-2]}, {features.shape[-1]}), "
                f"got {tuple(rgb.shape)}"
            )
        if ws.dim() != 3:
            raise ValueError(f"ws must have shape (N, num_ws, w_dim), got {tuple(ws.shape)}")
        ws = ws[:, -1:].repeat(1, 3, 1)
        x, img = self.block0(self._resize(features), self._resize(rgb), ws, noise_mode="none")
        _, img = self.block1(x, img, ws, noise_mode="none")
        return img


class _HybridPreset(SuperResolutionHybrid):
    """A named EG3D preset: its output side, block widths and whether block0 upsamples are class attributes."""

    default_img_resolution: int = 128
    first_block_upsamples: bool = False

    def __init__(
        self,
        channels: int = 32,
        img_resolution: int | None = None,
        w_dim: int = 512,
        img_channels: int = 3,
        block_channels: tuple[int, int] | None = None,
        antialias: bool = True,
        conv_clamp: float | None = None,
    ) -> None:
        resolution = self.default_img_resolution if img_resolution is None else img_resolution
        super().__init__(
            channels,
            resolution,
            resolution // (4 if self.first_block_upsamples else 2),
            self.default_block_channels if block_channels is None else block_channels,
            self.first_block_upsamples,
            w_dim,
            img_channels,
            antialias,
            conv_clamp,
        )


class SuperResolutionHybrid2X(_HybridPreset):
    """EG3D ``SuperresolutionHybrid2X``: input resized to R/2 (64 for 128 px), blocks (128, 64), first keeps size.

    Args:
        channels (`int`, defaults to 32): rendered feature channels.
        img_resolution (`int`, defaults to 128): output side.
        w_dim (`int`, defaults to 512), img_channels (`int`, defaults to 3), antialias (`bool`, defaults to `True`).
        block_channels (`tuple[int, int]`, defaults to `(128, 64)`), conv_clamp (`float`, *optional*).
    """

    default_block_channels = (128, 64)
    default_img_resolution = 128


class SuperResolutionHybrid4X(_HybridPreset):
    """EG3D ``SuperresolutionHybrid4X``: input resized to R/2 (128 for 256 px), blocks (128, 64), first keeps size.

    Same layout as `SuperResolutionHybrid2X`; the factor names the usual neural-rendering resolution (64 → 256).

    Args:
        channels (`int`, defaults to 32), img_resolution (`int`, defaults to 256), w_dim (`int`, defaults to 512),
        img_channels (`int`, defaults to 3), block_channels (defaults to `(128, 64)`), antialias (defaults to `True`),
        conv_clamp (`float`, *optional*).
    """

    default_block_channels = (128, 64)
    default_img_resolution = 256


class SuperResolutionHybrid8XDC(_HybridPreset):
    """EG3D ``SuperresolutionHybrid8XDC``: input resized to R/4 (128 for 512 px), two upsampling blocks (256, 128).

    Args:
        channels (`int`, defaults to 32), img_resolution (`int`, defaults to 512), w_dim (`int`, defaults to 512),
        img_channels (`int`, defaults to 3), block_channels (defaults to `(256, 128)`), antialias (defaults to `True`),
        conv_clamp (`float`, *optional*).
    """

    default_block_channels = (256, 128)
    default_img_resolution = 512
    first_block_upsamples = True
