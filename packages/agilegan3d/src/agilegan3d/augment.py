"""Differentiable augmentation of discriminator inputs for few-shot GAN fine-tuning: DiffAugment's colour,
translation and cut-out (Zhao et al., "Differentiable Augmentation for Data-Efficient GAN Training", arXiv
2006.10738) applied per image with probability p, and ADA's adaptive p (Karras et al., arXiv 2006.06676, §3: raise p
when the overfitting heuristic r_t = E[sign(D(real))] exceeds its target). Written from the papers in plain torch.

Every transform is differentiable in the image, so the generator's gradient flows through the augmentation of its
fakes (the point of DiffAugment: the discriminator never sees un-augmented images, the generator never learns the
augmentation). Several images fed to one discriminator call (EG3D's ``image`` and ``image_raw``) get the *same*
transform (:func:`augment_pair` draws once, resizes the offsets).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ada_adjust", "augment_pair", "diff_augment", "draw_augment_params", "resize_like"]

AugmentParams = dict[str, Tensor]


def draw_augment_params(
    n: int,
    policy: Sequence[str],
    probability: float,
    translation: float = 0.125,
    cutout: float = 0.5,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> AugmentParams:
    """Random parameters of one augmentation of ``n`` images, independent of the image size.

    Args:
        n: Batch size.
        policy: Transforms in order, from ``"color"``, ``"translation"``, ``"cutout"``.
        probability: Probability of applying each transform to each image.
        translation: Largest shift, a fraction of the side.
        cutout: Cut-out side, a fraction of the side.
        generator: Source of randomness (``None``: the global RNG).
        device: Placement.

    Returns:
        Per-image tensors: ``apply_<name>`` (n,) masks, ``brightness``/``saturation``/``contrast`` (n,), ``shift``
        (n, 2) as fractions of the side, ``cutout_center`` (n, 2) in [0, 1] and ``cutout_size`` (scalar).
    """
    params: AugmentParams = {}
    for name in policy:
        params[f"apply_{name}"] = (torch.rand(n, generator=generator) < probability).float()
    if "color" in policy:
        params["brightness"] = torch.rand(n, generator=generator) - 0.5
        params["saturation"] = torch.rand(n, generator=generator) * 2
        params["contrast"] = torch.rand(n, generator=generator) + 0.5
    if "translation" in policy:
        params["shift"] = (torch.rand(n, 2, generator=generator) * 2 - 1) * translation
    if "cutout" in policy:
        params["cutout_center"] = torch.rand(n, 2, generator=generator)
        params["cutout_size"] = torch.tensor(cutout)
    return {key: value.to(device) for key, value in params.items()}


def _color(x: Tensor, p: AugmentParams) -> Tensor:
    mask = p["apply_color"].to(x.dtype).view(-1, 1, 1, 1)
    y = x + p["brightness"].to(x.dtype).view(-1, 1, 1, 1)
    mean = y.mean(dim=1, keepdim=True)
    y = (y - mean) * p["saturation"].to(x.dtype).view(-1, 1, 1, 1) + mean
    mean = y.mean(dim=(1, 2, 3), keepdim=True)
    y = (y - mean) * p["contrast"].to(x.dtype).view(-1, 1, 1, 1) + mean
    return torch.lerp(x, y, mask)


def _translation(x: Tensor, p: AugmentParams) -> Tensor:
    """Shift by whole pixels with zero padding (DiffAugment), done as an exact integer gather."""
    n, _, h, w = x.shape
    shift = (p["shift"] * p["apply_translation"].view(-1, 1)).to(x.device)
    dy = torch.round(shift[:, 0] * h).long().view(n, 1, 1)
    dx = torch.round(shift[:, 1] * w).long().view(n, 1, 1)
    rows = torch.arange(h, device=x.device).view(1, h, 1) - dy  # source row of every target row
    cols = torch.arange(w, device=x.device).view(1, 1, w) - dx
    valid = ((rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)).unsqueeze(1).to(x.dtype)
    index = (rows.clamp(0, h - 1) * w + cols.clamp(0, w - 1)).view(n, 1, h * w).expand(-1, x.shape[1], -1)
    return torch.gather(x.flatten(2), 2, index).view_as(x) * valid


def _cutout(x: Tensor, p: AugmentParams) -> Tensor:
    _n, _, h, w = x.shape
    size = p["cutout_size"].to(x.device)
    center = p["cutout_center"].to(x.device)
    ys = (torch.arange(h, device=x.device) + 0.5) / h
    xs = (torch.arange(w, device=x.device) + 0.5) / w
    inside_y = (ys.view(1, h) - center[:, :1]).abs() < size / 2
    inside_x = (xs.view(1, w) - center[:, 1:]).abs() < size / 2
    hole = (inside_y.unsqueeze(2) & inside_x.unsqueeze(1)).unsqueeze(1).to(x.dtype)
    mask = 1 - hole * p["apply_cutout"].to(x.dtype).view(-1, 1, 1, 1)
    return x * mask


_TRANSFORMS = {"color": _color, "translation": _translation, "cutout": _cutout}


def diff_augment(x: Tensor, params: AugmentParams, policy: Sequence[str]) -> Tensor:
    """Apply ``policy`` with ``params`` (from :func:`draw_augment_params`) to images ``x`` (N, C, H, W).

    Differentiable in ``x``; with every ``apply_*`` mask zero it returns ``x`` unchanged.
    """
    for name in policy:
        x = _TRANSFORMS[name](x, params)
    return x


def augment_pair(
    images: dict[str, Tensor],
    policy: Sequence[str],
    probability: float,
    translation: float = 0.125,
    cutout: float = 0.5,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """One draw of the augmentation applied alike to every entry of ``images`` (each (N, C, H_k, W_k)).

    Returns ``images`` itself when ``probability`` is 0 or the policy is empty (no random draw is made).
    """
    if probability <= 0 or not policy:
        return images
    first = next(iter(images.values()))
    params = draw_augment_params(first.shape[0], policy, probability, translation, cutout, generator, first.device)
    return {key: diff_augment(value, params, policy) for key, value in images.items()}


def ada_adjust(probability: float, real_logits: Tensor, target: float = 0.6, adjust_kimg: float = 100.0) -> float:
    """ADA's update of the augmentation probability after one discriminator step on reals.

    ``p <- clamp(p + sign(r_t - target) · N / (1000 · adjust_kimg), 0, 1)`` with ``r_t = E[sign(D(real))]`` over this
    batch's logits (N, 1) (ADA accumulates r_t over 4 steps; one step is the same rule with a noisier estimate).
    """
    r_t = float(torch.sign(real_logits.detach()).mean())
    step = (1.0 if r_t > target else -1.0) * real_logits.shape[0] / (adjust_kimg * 1000)
    return min(max(probability + step, 0.0), 1.0)


def resize_like(x: Tensor, size: int) -> Tensor:
    """Antialiased bilinear resize of ``x`` (N, C, H, W) to ``size`` x ``size`` (no-op when already that size)."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
