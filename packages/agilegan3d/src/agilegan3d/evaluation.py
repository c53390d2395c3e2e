"""The metrics the spec names for a style (agilegan3d §6; the paper's tables could not be read): identity similarity
of the stylised head to the input photo, multi-view identity consistency across the orbit, and FID / KID of the
stylised renders to the style exemplars through a feature extractor the user gives (no network is bundled).

FID (Heusel et al., arXiv 1706.08500): ``|μa − μb|² + Tr(Σa + Σb − 2 (Σa Σb)^½)``, the trace of the square root
taken as the sum of the square roots of the eigenvalues of ``Σa^½ Σb Σa^½`` (symmetric, so ``eigh`` in float64).
KID (Bińkowski et al., arXiv 1801.01401): the unbiased MMD² with the cubic kernel ``k(x, y) = (xᵀy / d + 1)³``, averaged
over random subsets. With ~20 exemplars both are noisy; read them relative to the naive-fine-tuning ablation
(``transfer.naive=true``) trained on the same exemplars, as the spec's comparison rule says.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from genblocks.metrics import identity_similarity

__all__ = ["frechet_distance", "kernel_inception_distance", "multiview_identity_consistency", "style_metrics"]


def _sqrtm_psd(matrix: Tensor) -> Tensor:
    values, vectors = torch.linalg.eigh(matrix)
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T


def frechet_distance(a: Tensor, b: Tensor) -> float:
    """FID between feature sets a (N, D) and b (M, D) (N, M >= 2)."""
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or len(a) < 2 or len(b) < 2:
        raise ValueError(f"features must be (N >= 2, D) and (M >= 2, D), got {tuple(a.shape)} and {tuple(b.shape)}")
    a, b = a.double(), b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T).reshape(a.shape[1], -1), torch.cov(b.T).reshape(b.shape[1], -1)
    root_a = _sqrtm_psd(cov_a)
    cross = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp(min=0).sqrt().sum()
    return float((mu_a - mu_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * cross)


def kernel_inception_distance(a: Tensor, b: Tensor, subsets: int = 10, subset_size: int = 100, seed: int = 0) -> float:
    """KID between feature sets a (N, D) and b (M, D): mean unbiased MMD² over ``subsets`` random subsets of
    ``min(subset_size, N, M)`` rows each (at least 2)."""
    size = min(subset_size, len(a), len(b))
    if size < 2 or a.shape[1:] != b.shape[1:]:
        raise ValueError(f"features must be (N >= 2, D) and (M >= 2, D), got {tuple(a.shape)} and {tuple(b.shape)}")
    a, b = a.double(), b.double()
    dim = a.shape[1]
    rng = torch.Generator().manual_seed(seed)
    total = 0.0
    for _ in range(subsets):
        x = a[torch.randperm(len(a), generator=rng)[:size]]
        y = b[torch.randperm(len(b), generator=rng)[:size]]
        kxx, kyy, kxy = ((x @ x.T / dim + 1) ** 3, (y @ y.T / dim + 1) ** 3, (x @ y.T / dim + 1) ** 3)
        off = size * (size - 1)
        total += float((kxx.sum() - kxx.diagonal().sum()) / off + (kyy.sum() - kyy.diagonal().sum()) / off)
        total -= float(2 * kxy.mean())
    return total / subsets


def multiview_identity_consistency(embed: Callable[[Tensor], Tensor], views: Tensor) -> Tensor:
    """Mean pairwise cosine similarity of the identity embeddings of each subject's views.

    Args:
        embed: Identity network, images (K, 3, H, W) in [-1, 1] -> (K, D).
        views: (N, V, 3, H, W), V >= 2.

    Returns:
        (N,) in [-1, 1].
    """
    n, v = views.shape[:2]
    if v < 2:
        raise ValueError(f"views: expected at least 2 views per subject, got {v}")
    features = torch.nn.functional.normalize(embed(views.flatten(0, 1)).reshape(n, v, -1).float(), dim=-1)
    gram = features @ features.transpose(1, 2)
    return (gram.sum((1, 2)) - gram.diagonal(dim1=1, dim2=2).sum(1)) / (v * (v - 1))


def style_metrics(
    inputs: Tensor,
    frontal_renders: Tensor,
    views: Tensor,
    exemplars: Tensor,
    identity: Callable[[Tensor], Tensor] | None = None,
    features: Callable[[Tensor], Tensor] | None = None,
) -> dict[str, float]:
    """Every metric its networks allow: ``identity_similarity`` (input vs stylised render at the input's camera) and
    ``multiview_identity`` need ``identity``; ``fid`` and ``kid`` (all views vs the exemplars) need ``features``.

    Args:
        inputs: The photos (N, 3, H, W) in [-1, 1].
        frontal_renders: G3s at the photos' cameras (N, 3, H', W').
        views: G3s on the orbit (N, V, 3, H', W').
        exemplars: The style exemplars (M, 3, h, w).
        identity: Face-embedding network.
        features: Feature extractor for FID / KID.
    """
    result: dict[str, float] = {}
    if identity is not None:
        result["identity_similarity"] = float(identity_similarity(identity(frontal_renders), identity(inputs)).mean())
        result["multiview_identity"] = float(multiview_identity_consistency(identity, views).mean())
    if features is not None:
        rendered, style = features(views.flatten(0, 1)), features(exemplars)
        result["fid"] = frechet_distance(rendered, style)
        result["kid"] = kernel_inception_distance(rendered, style)
    return result
