"""EG3D's dual discriminator and the discriminator blur schedule (arXiv 2112.07945 §4.2; spec genblocks §3
"discriminators.py" and "losses.py"; conventions of NVlabs/eg3d ``eg3d/training/dual_discriminator.py`` and
``training/loss.py``, not their code).

The dual discriminator sees the final image and the raw neural rendering together: ``image_raw`` is resized to the
final resolution (antialiased bilinear) and concatenated with ``image`` into 6 channels, which a StyleGAN2 resnet
discriminator scores with projection conditioning on the 25-d camera label (optionally jittered by
``c_noise · std_batch(c) · N(0, 1)`` in training mode).

Blur: early in training the final image is blurred before D with the separable kernel ``2^(−(k/σ)²)``,
k = −⌊3σ⌋..⌊3σ⌋, normalised (zero padding, same size); σ fades linearly from 10 to 0 over the first 200 kimg
(`discriminator_blur_sigma`). Only ``image`` is blurred, as in EG3D.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from genblocks.gan.stylegan2 import StyleGAN2Discriminator
from genblocks.render3d.cameras import CAMERA_LABEL_DIM

__all__ = ["DualDiscriminator", "blur_images", "discriminator_blur_sigma"]


def discriminator_blur_sigma(cur_kimg: float, initial_sigma: float = 10.0, fade_kimg: float = 200.0) -> float:
    """Blur σ after `cur_kimg` thousand real images: `initial_sigma` fading linearly to 0 over `fade_kimg` (0 when
    `fade_kimg` is 0, i.e. blur disabled)."""
    if fade_kimg <= 0:
        return 0.0
    return max(1.0 - cur_kimg / fade_kimg, 0.0) * initial_sigma


def blur_images(images: Tensor, sigma: float) -> Tensor:
    """Separable blur with taps ``2^(−(k/σ)²)``, k = −⌊3σ⌋..⌊3σ⌋, normalised, zero-padded to keep the size.

    Args:
        images (`torch.Tensor` of shape `(N, C, H, W)`).
        sigma (`float`): blur width; images come back unchanged when ⌊3σ⌋ = 0.

    Returns:
        `torch.Tensor` of shape `(N, C, H, W)`.
    """
    if images.dim() != 4:
        raise ValueError(f"images must have shape (N, C, H, W), got {tuple(images.shape)}")
    half = math.floor(3 * sigma)
    if half <= 0:
        return images
    taps = torch.arange(-half, half + 1, device=images.device, dtype=images.dtype)
    taps = torch.exp2(-((taps / sigma) ** 2))
    taps = taps / taps.sum()
    channels = images.shape[1]
    horizontal = taps.view(1, 1, 1, -1).expand(channels, 1, 1, 2 * half + 1)
    vertical = taps.view(1, 1, -1, 1).expand(channels, 1, 2 * half + 1, 1)
    images = F.conv2d(images, horizontal, padding=(0, half), groups=channels)
    return F.conv2d(images, vertical, padding=(half, 0), groups=channels)


class DualDiscriminator(StyleGAN2Discriminator):
    """Camera-conditioned resnet discriminator on ``concat(image, resize(image_raw))`` (module docstring).

    Args:
        img_resolution (`int`): final image side R (a power of two).
        img_channels (`int`, defaults to 3): channels of each of the two images; the network sees twice as many.
        c_dim (`int`, defaults to 25): conditioning label size (0 for unconditional).
        channel_base (`int`, defaults to 32768), channel_max (`int`, defaults to 512): channel rule
            ``min(channel_base // res, channel_max)``.
        mbstd_group_size (`int`, defaults to 4), mbstd_num_channels (`int`, defaults to 1): minibatch-stddev layer.
        cmap_dim (`int`, *optional*): projection size; defaults to the StyleGAN2 discriminator's choice.
        mapping_layers (`int`, defaults to 8): layers of the label mapping network (StyleGAN2's default).
        c_noise (`float`, defaults to 0.0): label jitter in training mode (EG3D ``disc_c_noise``); skipped for a batch
            of one, whose standard deviation is undefined.

    Parameter names are those of `StyleGAN2Discriminator` (``b{res}``, ``b4``, ``mapping``), as in EG3D.
    """

    def __init__(
        self,
        img_resolution: int,
        img_channels: int = 3,
        c_dim: int = CAMERA_LABEL_DIM,
        channel_base: int = 32768,
        channel_max: int = 512,
        mbstd_group_size: int = 4,
        mbstd_num_channels: int = 1,
        cmap_dim: int | None = None,
        mapping_layers: int = 8,
        c_noise: float = 0.0,
    ) -> None:
        if c_noise < 0:
            raise ValueError(f"c_noise must be non-negative, got {c_noise}")
        super().__init__(
            img_resolution,
            img_channels=img_channels,
            c_dim=c_dim,
            channel_base=channel_base,
            channel_max=channel_max,
            mbstd_group_size=mbstd_group_size,
            mbstd_num_channels=mbstd_num_channels,
            cmap_dim=cmap_dim,
            in_channels=2 * img_channels,
            mapping_layers=mapping_layers,
        )
        self.dual_img_resolution = img_resolution
        self.dual_img_channels = img_channels
        self.c_noise = c_noise

    def forward(  # type: ignore[override]
        self,
        image: Tensor,
        image_raw: Tensor,
        c: Tensor | None = None,
        blur_sigma: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Score image pairs.

        Args:
            image (`torch.Tensor` of shape `(N, img_channels, R, R)`): final (super-resolved or real) image.
            image_raw (`torch.Tensor` of shape `(N, img_channels, r, r)`): raw rendering (or the real image
                downsampled to r).
            c (`torch.Tensor` of shape `(N, c_dim)`, *optional*): camera labels; required when ``c_dim > 0``.
            blur_sigma (`float`, defaults to 0): blur applied to `image` first (`discriminator_blur_sigma`).
            generator (`torch.Generator`, *optional*): source of the label jitter.

        Returns:
            `torch.Tensor` of shape `(N, 1)`, logits.
        """
        r, ch = self.dual_img_resolution, self.dual_img_channels
        if image.dim() != 4 or image.shape[1:] != (ch, r, r):
            raise ValueError(f"image must have shape (N, {ch}, {r}, {r}), got {tuple(image.shape)}")
        if image_raw.dim() != 4 or image_raw.shape[:2] != image.shape[:2]:
            raise ValueError(f"image_raw must have shape ({image.shape[0]}, {ch}, r, r), got {tuple(image_raw.shape)}")
        if blur_sigma > 0:
            image = blur_images(image, blur_sigma)
        if image_raw.shape[-2:] != (r, r):
            image_raw = F.interpolate(image_raw, size=(r, r), mode="bilinear", align_corners=False, antialias=True)
        if c is not None and self.training and self.c_noise > 0 and c.shape[0] > 1:
            noise = torch.randn(c.shape, generator=generator, device=c.device, dtype=c.dtype)
            c = c + noise * c.std(dim=0) * self.c_noise
        return super().forward(torch.cat([image, image_raw], dim=1), c)
