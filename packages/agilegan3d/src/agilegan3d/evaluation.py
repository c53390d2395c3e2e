"""The metrics the spec names for a style (agilegan3d §6; the paper's tables could not be read): identity similarity
of the stylised head to the input photo, multi-view identity consistency across the orbit, and FID / KID of the
stylised renders to the style exemplars through a feature extractor the user gives (no network is bundled).

FID and KID come from :mod:`genblocks.metrics`. FID (Heusel et al., arXiv 1706.08500): ``|μa − μb|² + Tr(Σa + Σb − 2 (Σa Σb)^½)``, the trace of the square root
taken as the sum of the square roots of the eigenvalues of ``Σa^½ Σb Σa^½`` (symmetric, so ``eigh`` in float64).
KID (Bińkowski et al., arXiv 1801.01401): the unbiased MMD² with the cubic kernel ``k(x, y) = (xᵀy / d + 1)³``, averaged
over random subsets. With ~20 exemplars both are noisy; read them relative to the naive-fine-tuning ablation
(``transfer.naive=true``) trained on the same exemplars, as the spec's comparison rule says.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from genblocks.metrics import extract_features, frechet_distance, identity_similarity, kernel_inception_distance

__all__ = ["frechet_distance", "kernel_inception_distance", "multiview_identity_consistency", "style_metrics"]


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
    batch_size: int = 16,
) -> dict[str, float]:
    """Every metric its networks allow: ``identity_similarity`` (input vs stylised render at the input's camera) and
    ``multiview_identity`` need ``identity``; ``fid`` and ``kid`` (all views vs the exemplars) need ``features``.

    Args:
        inputs: The photos (N, 3, H, W) in [-1, 1].
        frontal_renders: G3s at the photos' cameras (N, 3, H', W').
        views: G3s on the orbit (N, V, 3, H', W').
        exemplars: The style exemplars (M, 3, h, w).
        identity: Face-embedding network.
        features: Feature extractor for FID / KID (e.g. :func:`genblocks.metrics.load_feature_extractor`), called on
            batches of ``batch_size`` images.
        batch_size: Images per feature-extractor call.
    """
    result: dict[str, float] = {}
    if identity is not None:
        result["identity_similarity"] = float(identity_similarity(identity(frontal_renders), identity(inputs)).mean())
        result["multiview_identity"] = float(multiview_identity_consistency(identity, views).mean())
    if features is not None:
        rendered = extract_features(features, views.flatten(0, 1), batch_size)
        style = extract_features(features, exemplars, batch_size)
        result["fid"] = frechet_distance(rendered, style)
        result["kid"] = kernel_inception_distance(rendered, style, subsets=10, subset_size=100)
    return result
