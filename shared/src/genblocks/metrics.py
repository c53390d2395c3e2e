"""Image and identity metrics shared by the portrait packages (spec genblocks §6): identity cosine similarity, PSNR,
SSIM and L1, batched in torch; the distances between two sets of features (FID's Fréchet distance, KID); and the
user-given TorchScript feature extractor those are computed with (:func:`load_feature_extractor`,
:func:`extract_features`: no network is bundled).

Images are (B, C, H, W) floats in ``[0, data_range]`` (``data_range=1.0`` for [0, 1]; pass ``data_range=2.0`` for
[-1, 1] images, or ``255.0`` for uint8-valued tensors). Every metric returns one value per batch item, shape (B,).

SSIM follows Wang et al., IEEE TIP 13(4) 2004 (``K1 = 0.01``, ``K2 = 0.03``, 11×11 Gaussian window with σ = 1.5,
population (co)variances), averaged over channels and valid window positions; it equals
``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5, use_sample_covariance=False)``.
No paper numbers live here.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from genblocks.errors import InputError

__all__ = [
    "extract_features",
    "frame_metrics",
    "frechet_distance",
    "gaussian_window",
    "identity_similarity",
    "kernel_inception_distance",
    "l1",
    "load_feature_extractor",
    "psnr",
    "ssim",
]


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.ndim != 4 or x.shape != y.shape:
        raise ValueError(
            f"`x` and `y` must be (B, C, H, W) tensors of the same shape, got {tuple(x.shape)} and {tuple(y.shape)}."
        )


def identity_similarity(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of identity embeddings (the ArcFace "ID similarity").

    Args:
        x (`torch.Tensor`): shape (B, D).
        y (`torch.Tensor`): shape (B, D), or (D,) to compare every row of ``x`` with one reference.

    Returns:
        `torch.Tensor`: shape (B,), in [-1, 1].
    """
    if x.ndim != 2 or y.ndim not in (1, 2) or x.shape[-1] != y.shape[-1] or (y.ndim == 2 and y.shape != x.shape):
        raise ValueError(f"`x` must be (B, D) and `y` (B, D) or (D,), got {tuple(x.shape)} and {tuple(y.shape)}.")
    return F.cosine_similarity(x.float(), y.float().expand_as(x), dim=-1)


def l1(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean absolute error per image.

    Args:
        x (`torch.Tensor`): shape (B, C, H, W).
        y (`torch.Tensor`): shape (B, C, H, W).

    Returns:
        `torch.Tensor`: shape (B,), in the units of the inputs.
    """
    _check_pair(x, y)
    return (x.float() - y.float()).abs().flatten(1).mean(1)


def _check_weight(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A (B, 1, H, W) or (B, H, W) per-pixel weight as float64 (B, 1, H, W)."""
    if weight.ndim == 3:
        weight = weight.unsqueeze(1)
    if weight.ndim != 4 or weight.shape[1] != 1 or weight.shape[0] != x.shape[0] or weight.shape[2:] != x.shape[2:]:
        raise ValueError(
            f"`weight` must have shape ({x.shape[0]}, 1, {x.shape[2]}, {x.shape[3]}) or "
            f"({x.shape[0]}, {x.shape[2]}, {x.shape[3]}), got {tuple(weight.shape)}."
        )
    return weight.to(device=x.device, dtype=torch.float64)


def psnr(
    x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Peak signal-to-noise ratio per image, ``10 log10(data_range² / MSE)`` in dB (``inf`` for identical images).

    Args:
        x (`torch.Tensor`): shape (B, C, H, W), values in [0, data_range].
        y (`torch.Tensor`): shape (B, C, H, W).
        data_range (`float`, defaults to 1.0): the peak-to-peak value range.
        weight (`torch.Tensor`, *optional*): shape (B, 1, H, W) or (B, H, W), non-negative per-pixel weights (e.g.
            ``1 - mask`` for the PSNR outside a mask): the MSE becomes ``sum(w (x - y)²) / (C sum(w))`` (NaN where a
            weight map sums to 0).

    Returns:
        `torch.Tensor`: shape (B,).
    """
    _check_pair(x, y)
    if data_range <= 0:
        raise ValueError(f"`data_range` must be positive, got {data_range}.")
    squared = (x.double() - y.double()).pow(2)
    if weight is None:
        mse = squared.flatten(1).mean(1)
    else:
        w = _check_weight(weight, x)
        mse = (squared * w).flatten(1).sum(1) / (w.flatten(1).sum(1) * x.shape[1])
    return (10.0 * torch.log10(data_range**2 / mse)).to(torch.float32)


def gaussian_window(size: int = 11, sigma: float = 1.5, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Normalised 1-D Gaussian window.

    Args:
        size (`int`, defaults to 11): odd number of taps.
        sigma (`float`, defaults to 1.5): standard deviation in pixels.
        dtype (`torch.dtype`, defaults to `torch.float32`): output dtype.

    Returns:
        `torch.Tensor`: shape (size,), sums to 1.
    """
    if size < 1 or size % 2 == 0:
        raise ValueError(f"`size` must be a positive odd integer, got {size}.")
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    window = torch.exp(-(coords**2) / (2 * sigma**2))
    return (window / window.sum()).to(dtype)


def ssim(
    x: torch.Tensor,
    y: torch.Tensor,
    data_range: float = 1.0,
    window_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Structural similarity per image with a Gaussian window, over valid window positions, averaged over channels.

    Args:
        x (`torch.Tensor`): shape (B, C, H, W), values in [0, data_range], H and W >= ``window_size``.
        y (`torch.Tensor`): shape (B, C, H, W).
        data_range (`float`, defaults to 1.0): the peak-to-peak value range L (``C1 = (k1 L)²``, ``C2 = (k2 L)²``).
        window_size (`int`, defaults to 11): Gaussian window taps.
        sigma (`float`, defaults to 1.5): Gaussian window σ.
        k1 (`float`, defaults to 0.01): luminance constant.
        k2 (`float`, defaults to 0.03): contrast constant.
        weight (`torch.Tensor`, *optional*): shape (B, 1, H, W) or (B, H, W), non-negative per-pixel weights (e.g.
            ``1 - mask`` for the SSIM outside a mask): the SSIM map is averaged with the weights at the window centres
            (NaN where they sum to 0).

    Returns:
        `torch.Tensor`: shape (B,), 1 for identical images.
    """
    _check_pair(x, y)
    if min(x.shape[-2:]) < window_size:
        raise ValueError(f"`x` spatial size {tuple(x.shape[-2:])} is smaller than `window_size`={window_size}.")
    channels = x.shape[1]
    x, y = x.double(), y.double()
    window = gaussian_window(window_size, sigma, torch.float64).to(x.device)
    kernel_h = window.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    kernel_w = window.view(1, 1, 1, -1).expand(channels, 1, 1, -1)

    def blur(image: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(image, kernel_h, groups=channels), kernel_w, groups=channels)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    if weight is None:
        return ssim_map.flatten(1).mean(1).to(torch.float32)
    w = _check_weight(weight, x)
    pad = window_size // 2  # the map covers the valid window centres: drop the border the window does not reach
    w = w[..., pad : x.shape[2] - pad, pad : x.shape[3] - pad].expand_as(ssim_map)
    return ((ssim_map * w).flatten(1).sum(1) / w.flatten(1).sum(1)).to(torch.float32)


def frame_metrics(generated: torch.Tensor, reference: torch.Tensor) -> dict[str, list[float]]:
    """Per-frame L1, PSNR (dB) and SSIM between generated and ground-truth frames (self-reenactment metrics).

    SSIM's window shrinks to the largest odd size that fits frames smaller than 11 pixels.

    Args:
        generated (`torch.Tensor` of shape `(F, 3, H, W)`): Frames in [0, 1].
        reference (`torch.Tensor` of shape `(F, 3, H, W)`): Ground truth in [0, 1].

    Returns:
        `dict[str, list[float]]`: ``{"l1": [...], "psnr": [...], "ssim": [...]}``, one value per frame.
    """
    side = min(generated.shape[-2:])
    window = 11 if side >= 11 else side - 1 + side % 2
    return {
        "l1": l1(generated, reference).tolist(),
        "psnr": psnr(generated, reference, data_range=1.0).tolist(),
        "ssim": ssim(generated, reference, data_range=1.0, window_size=window).tolist(),
    }


def _feature_pair(
    real: torch.Tensor | np.ndarray, fake: torch.Tensor | np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    a = torch.as_tensor(real).detach().to("cpu", torch.float64)
    b = torch.as_tensor(fake).detach().to("cpu", torch.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(
            f"features: expected (N, D) and (M, D) with N, M >= 2, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    return a, b


def frechet_distance(real: torch.Tensor | np.ndarray, fake: torch.Tensor | np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (FID/FVD on Inception/I3D features).

    ``|mu_r - mu_f|^2 + tr(S_r) + tr(S_f) - 2 tr((S_r^1/2 S_f S_r^1/2)^1/2)``: the symmetric form of
    ``tr((S_r S_f)^1/2)``, computed in float64 with eigen-decompositions (no complex square roots).

    Args:
        real: (N, D) features of the real samples, N >= 2.
        fake: (M, D) features of the generated samples, M >= 2.
    """
    a, b = _feature_pair(real, fake)
    cov_a, cov_b = torch.cov(a.T).reshape(a.shape[1], -1), torch.cov(b.T).reshape(b.shape[1], -1)
    values, vectors = torch.linalg.eigh(cov_a)
    root_a = (vectors * values.clamp(min=0).sqrt()) @ vectors.T
    middle = root_a @ cov_b @ root_a
    trace_root = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    mean_term = (a.mean(0) - b.mean(0)).square().sum()
    return float(mean_term + cov_a.trace() + cov_b.trace() - 2 * trace_root)


def kernel_inception_distance(
    real: torch.Tensor | np.ndarray,
    fake: torch.Tensor | np.ndarray,
    subsets: int | None = None,
    subset_size: int = 1000,
    seed: int = 0,
) -> float:
    """KID: the unbiased MMD² between two feature sets with the cubic kernel ``k(x, y) = (x·y / D + 1)^3``.

    Args:
        real: (N, D) features, N >= 2.
        fake: (M, D) features, M >= 2.
        subsets: ``None``: one estimate on the whole sets. Otherwise the mean over this many random subsets of
            ``min(subset_size, N, M)`` rows of each set (the usual protocol for large sets), drawn from ``seed``.
    """
    a, b = _feature_pair(real, fake)
    dim = a.shape[1]

    def mmd(x: torch.Tensor, y: torch.Tensor) -> float:
        kxx, kyy, kxy = (x @ x.T / dim + 1) ** 3, (y @ y.T / dim + 1) ** 3, (x @ y.T / dim + 1) ** 3
        m, n = len(x), len(y)
        same = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1)) + (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
        return float(same - 2 * kxy.mean())

    if subsets is None:
        return mmd(a, b)
    size = min(subset_size, len(a), len(b))
    generator = torch.Generator().manual_seed(seed)
    draws = [
        mmd(
            a[torch.randperm(len(a), generator=generator)[:size]],
            b[torch.randperm(len(b), generator=generator)[:size]],
        )
        for _ in range(subsets)
    ]
    return sum(draws) / subsets


def load_feature_extractor(path: str | os.PathLike[str], option: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """A TorchScript feature extractor (a ``torch.jit.save`` file the user gives) on the CPU, in eval mode, with its
    parameters frozen.

    Args:
        path: The local file.
        option: The command-line option or config key that named it, for the error messages (``--features``).

    Returns:
        The module, called as ``extractor(images) -> (N, D)`` (the input convention is the caller's).

    Raises:
        InputError: The file is missing or not TorchScript.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{option} {path}: no such file (expected a TorchScript file from torch.jit.save)")
    try:
        with (
            warnings.catch_warnings()
        ):  # torch 2.9+ marks TorchScript deprecated; the files users have are TorchScript
            warnings.simplefilter("ignore", FutureWarning)
            module = torch.jit.load(str(path), map_location="cpu")
    except RuntimeError as error:
        raise InputError(f"{option} {path}: not a TorchScript file ({str(error).splitlines()[0]})") from None
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module.eval()


def extract_features(
    extractor: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, batch_size: int = 16
) -> np.ndarray:
    """Features of every item of ``images``, ``batch_size`` items per call, without gradients.

    Args:
        extractor: ``(B, ...) -> (B, D)`` (or ``(B, ...)``, flattened to ``(B, D)``).
        images: ``(N, ...)``: images ``(N, 3, H, W)``, clips ``(N, 3, T, H, W)``, in the extractor's convention.
        batch_size: Items per extractor call.

    Returns:
        ``(N, D)`` float64 features.

    Raises:
        InputError: The extractor gave a different number of rows than it was given, or non-finite features.
    """
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be positive, got {batch_size}.")
    rows = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size]
            features = extractor(batch)
            if features.ndim == 0 or features.shape[0] != len(batch):
                raise InputError(
                    f"feature extractor: expected ({len(batch)}, D) features for {len(batch)} inputs of shape "
                    f"{tuple(batch.shape[1:])}, got {tuple(features.shape)}"
                )
            rows.append(features.detach().to("cpu", torch.float64).reshape(len(batch), -1))
    if not rows:
        raise ValueError("`images` is empty: nothing to extract features from.")
    result = torch.cat(rows)
    if not torch.isfinite(result).all():
        raise InputError("feature extractor: gave non-finite features")
    return result.numpy()
