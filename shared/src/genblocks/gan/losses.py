"""StyleGAN2 losses and regularisers: non-saturating logistic losses, R1 and path-length regularisation.

Paper: Karras et al., "Analyzing and Improving the Image Quality of StyleGAN" (arXiv 1912.04958) §3.2 (path-length
regularisation, lazy regularisation) and Mescheder et al., "Which Training Methods for GANs do actually Converge?"
(arXiv 1801.04406) for R1. Conventions follow NVIDIA's PyTorch release (NVlabs/stylegan2-ada-pytorch
``training/loss.py``): losses here are unweighted; the caller multiplies R1 by ``gamma / 2`` and the path-length
penalty by ``pl_weight`` (2 in StyleGAN2) and by the lazy-regularisation interval. EG3D applies R1 to both the final
and the raw image (pass both to :func:`r1_penalty`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "PathLengthRegularizer",
    "discriminator_logistic_loss",
    "generator_nonsaturating_loss",
    "r1_penalty",
]


def generator_nonsaturating_loss(fake_logits: Tensor) -> Tensor:
    """Non-saturating generator loss ``mean(softplus(-D(G(z))))`` = ``-mean(log sigmoid(D(G(z))))``.

    Args:
        fake_logits (`Tensor` of shape `(N, 1)` or `(N,)`): Discriminator logits of generated images.

    Returns:
        `Tensor`: scalar loss.
    """
    return F.softplus(-fake_logits).mean()


def discriminator_logistic_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Logistic discriminator loss ``mean(softplus(D(G(z)))) + mean(softplus(-D(x)))``.

    Args:
        real_logits (`Tensor` of shape `(N, 1)` or `(N,)`): Logits of real images.
        fake_logits (`Tensor` of shape `(M, 1)` or `(M,)`): Logits of generated images.

    Returns:
        `Tensor`: scalar loss.
    """
    return F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()


def r1_penalty(real_logits: Tensor, real_images: Tensor | Sequence[Tensor]) -> Tensor:
    """R1 gradient penalty: per sample, the squared norm of d(sum of logits)/d(inputs), summed over the inputs.

    The inputs must require grad and ``real_logits`` must have been computed from them. The graph is kept
    (``create_graph=True``) so the penalty can be back-propagated. Weight it by ``gamma / 2``.

    Args:
        real_logits (`Tensor` of shape `(N, 1)` or `(N,)`): Logits of the real inputs.
        real_images (`Tensor` of shape `(N, ...)` or a sequence of them): The inputs, e.g. EG3D's ``(image,
            image_raw)``.

    Returns:
        `Tensor` of shape `(N,)`.
    """
    inputs = [real_images] if isinstance(real_images, Tensor) else list(real_images)
    if not inputs:
        raise ValueError("real_images must contain at least one tensor")
    for i, t in enumerate(inputs):
        if not t.requires_grad:
            raise ValueError(f"real_images[{i}] must require grad (call .requires_grad_() before the discriminator)")
    grads = torch.autograd.grad(real_logits.sum(), inputs, create_graph=True)
    return sum(g.square().flatten(1).sum(dim=1) for g in grads)  # type: ignore[return-value]


class PathLengthRegularizer(nn.Module):
    """Path-length regulariser: ``(|J_w^T y| - a)^2`` with ``y ~ N(0, I) / sqrt(H W)`` and ``a`` an EMA of the lengths.

    ``|J_w^T y|`` is computed per sample as ``sqrt(mean over ws of |d(sum(img * y))/d w_i|^2)``. The running mean
    ``pl_mean`` is updated at every call (``pl_mean += decay * (mean length - pl_mean)``) and the penalty uses the
    updated value, as in NVIDIA's and rosinality's code.

    Args:
        decay (`float`, defaults to 0.01): EMA decay of ``pl_mean``.
    """

    pl_mean: Tensor  # buffer

    def __init__(self, decay: float = 0.01) -> None:
        super().__init__()
        self.decay = decay
        self.register_buffer("pl_mean", torch.zeros([]))

    def forward(self, images: Tensor, ws: Tensor) -> Tensor:
        """Compute the penalty and update ``pl_mean``.

        Args:
            images (`Tensor` of shape `(N, C, H, W)`): Generated images, computed from ``ws`` with the graph kept.
            ws (`Tensor` of shape `(N, num_ws, w_dim)` or `(N, w_dim)`): The ws (must be part of the graph).

        Returns:
            `Tensor` of shape `(N,)`: per-sample penalty (multiply by ``pl_weight`` and take the mean).
        """
        if images.ndim != 4:
            raise ValueError(f"images must have shape (N, C, H, W), got {tuple(images.shape)}")
        if not ws.requires_grad:
            raise ValueError("ws must be part of the autograd graph of images (requires_grad)")
        noise = torch.randn_like(images) / math.sqrt(images.shape[2] * images.shape[3])
        (grads,) = torch.autograd.grad((images * noise).sum(), ws, create_graph=True)
        lengths = grads.square().sum(dim=-1)
        if lengths.ndim == 2:
            lengths = lengths.mean(dim=1)
        lengths = lengths.sqrt()
        pl_mean = self.pl_mean.lerp(lengths.mean(), self.decay)
        self.pl_mean.copy_(pl_mean.detach())
        return (lengths - pl_mean).square()

    def extra_repr(self) -> str:
        return f"decay={self.decay}"
