"""Low-rank gradient projections for COAP (arXiv 2412.00071).

This module holds the matrix projections used by the COAP optimisers and their baselines:

* the randomized range finder that COAP uses to create (and periodically re-create) the projection ``P``,
* the correlation-aware refresh of ``P``: one (or a few) clipped SGD steps on the loss
  ``mse(back(project(G)), G) * (1 - mean_rows cos(back(M), G))``, computed here with a closed-form gradient,
* the GaLore (full SVD) and Flora (seeded Gaussian) projections, for comparisons.

It follows the official code of `bytedance/coap` at commit ``deabc3a671f63f9a8b49066c925d9df6b260089e``:
``coap_torch/projection/coap_matrix.py`` (``MatrixCOAP.update_proj``, ``get_orthogonal_matrix``) and
``coap_torch/utils/orthogonal.py`` (``compute_orthogonal``). Deliberate differences, each documented where it applies:

* the random test matrix of the range finder is drawn on the CPU and then moved, so ``P`` is the same on every device
  (the official generator is device-local, see defect 8 of the spec);
* the refresh gradient is computed in closed form in fp32 (no autograd graph), which is about 30x cheaper than a full
  SVD at 4096 x 4096, rank 1024; it equals the autograd gradient of :func:`correlation_loss` up to rounding,
  including torch's ``eps`` clamping of the cosine similarity;
* a non-finite gradient leaves ``P`` unchanged (with a warning) instead of filling it with NaN.

Conventions (``Side``): ``"right"`` when ``m >= n``, with ``P`` of shape ``(r, n)``, ``project(X) = X @ P.T`` and
``back(Y) = Y @ P``; ``"left"`` when ``m < n``, with ``P`` of shape ``(m, r)``, ``project(X) = P.T @ X`` and
``back(Y) = P @ Y``.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "Side",
    "back_project",
    "choose_side",
    "correlation_loss",
    "correlation_loss_and_grad",
    "initial_projection",
    "project",
    "random_projection",
    "range_finder",
    "refresh_projection",
    "reproject",
    "svd_projection",
]

logger = logging.getLogger(__name__)

Side = Literal["left", "right"]

# The squared reconstruction error is computed from the expansion ||G||^2 - 2 ||G P^T||^2 + <(G P^T)^T (G P^T), P P^T>,
# whose absolute fp32 error is about eps * ||G||^2: its relative error grows like ||G||^2 / ||E||^2. Below this ratio
# ||E||^2 / ||G||^2 (relative error then above ~1e-5) it is recomputed from the explicit residual E, at the price of
# one more (m x r x n) GEMM.
_EXPLICIT_RESIDUAL_RATIO = 1e-2

# `torch.nn.utils.clip_grad_norm_` divides by (total_norm + 1e-6).
_CLIP_EPS = 1e-6


@functools.cache
def _warn_once(message: str) -> None:
    """Log ``message`` as a warning the first time it is seen in this process."""
    logger.warning(message)


def _check_side(side: str) -> None:
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")


def _check_matrix(name: str, x: Tensor) -> None:
    if x.dim() != 2:
        raise ValueError(f"{name} must be a 2-D matrix, got shape {tuple(x.shape)}")


def _check_rank(rank: int, shape: tuple[int, ...]) -> None:
    if not 1 <= rank <= min(shape):
        raise ValueError(f"rank must be in [1, {min(shape)}] for a matrix of shape {tuple(shape)}, got {rank}")


def _check_proj_shape(proj: Tensor, grad_shape: tuple[int, ...], side: Side) -> int:
    """Validate ``proj`` against the gradient shape and return its rank."""
    _check_matrix("proj", proj)
    m, n = grad_shape
    if side == "right":
        if proj.shape[1] != n:
            raise ValueError(
                f"right projection must have shape (r, {n}) for a ({m}, {n}) matrix, got {tuple(proj.shape)}"
            )
        return proj.shape[0]
    if proj.shape[0] != m:
        raise ValueError(f"left projection must have shape ({m}, r) for a ({m}, {n}) matrix, got {tuple(proj.shape)}")
    return proj.shape[1]


def _work_dtype(x: Tensor) -> torch.dtype:
    """fp32 for every input dtype except fp64, which is kept."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _low_rank_shape(grad_shape: tuple[int, ...], rank: int, side: Side) -> tuple[int, int]:
    m, n = grad_shape
    return (m, rank) if side == "right" else (rank, n)


def choose_side(shape: torch.Size | tuple[int, int]) -> Side:
    """Choose which dimension of an ``(m, n)`` matrix to project, as the official code does.

    Args:
        shape (`torch.Size` or `tuple[int, int]`): Shape ``(m, n)`` of the weight (and gradient) matrix.

    Returns:
        `Side`: ``"right"`` (project the columns, ``P`` is ``(r, n)``) when ``m >= n``, else ``"left"``
        (project the rows, ``P`` is ``(m, r)``). The projected dimension is always the smaller one.
    """
    if len(shape) != 2:
        raise ValueError(f"choose_side expects a 2-D shape, got {tuple(shape)}")
    return "right" if shape[0] >= shape[1] else "left"


def project(x: Tensor, proj: Tensor, side: Side) -> Tensor:
    """Project a full matrix onto the low-rank subspace.

    Computed in the promoted dtype of ``x`` and ``proj`` (so an fp32 moment with a bf16 ``P`` stays fp32).

    Args:
        x (`torch.Tensor` of shape `(m, n)`): Full-rank matrix (gradient or moment).
        proj (`torch.Tensor`): Projection, `(r, n)` for ``side="right"`` or `(m, r)` for ``side="left"``.
        side (`Side`): Which side ``proj`` acts on.

    Returns:
        `torch.Tensor`: ``x @ proj.T`` of shape `(m, r)` (right) or ``proj.T @ x`` of shape `(r, n)` (left).
    """
    _check_side(side)
    dtype = torch.promote_types(x.dtype, proj.dtype)
    x, proj = x.to(dtype), proj.to(dtype)
    return x @ proj.T if side == "right" else proj.T @ x


def back_project(y: Tensor, proj: Tensor, side: Side) -> Tensor:
    """Map a low-rank matrix back to the full space.

    Computed in the promoted dtype of ``y`` and ``proj``.

    Args:
        y (`torch.Tensor`): Low-rank matrix, `(m, r)` for ``side="right"`` or `(r, n)` for ``side="left"``.
        proj (`torch.Tensor`): Projection, `(r, n)` (right) or `(m, r)` (left).
        side (`Side`): Which side ``proj`` acts on.

    Returns:
        `torch.Tensor` of shape `(m, n)`: ``y @ proj`` (right) or ``proj @ y`` (left).
    """
    _check_side(side)
    dtype = torch.promote_types(y.dtype, proj.dtype)
    y, proj = y.to(dtype), proj.to(dtype)
    return y @ proj if side == "right" else proj @ y


@torch.no_grad()
def range_finder(matrix: Tensor, omega: Tensor) -> Tensor:
    """Randomized range finder followed by a small SVD (``compute_orthogonal`` of the official code).

    ``Y = A @ omega``, ``Q = qr(Y).Q``, ``B = Q.T @ A``, and the result is the ``Vh`` factor of ``svd(B)``: ``r``
    orthonormal rows spanning (approximately) the dominant right singular subspace of ``A``. Everything is computed
    in fp32 (fp64 inputs stay fp64) and cast back to ``matrix.dtype``.

    Args:
        matrix (`torch.Tensor` of shape `(m, n)`): The matrix ``A`` whose row space is sought.
        omega (`torch.Tensor` of shape `(n, r)`): Test matrix: Gaussian noise for a fresh start, or the transpose of
            the previous right projection for a warm start. Moved to ``matrix.device`` if needed.

    Returns:
        `torch.Tensor` of shape `(r, n)`: ``Vh`` with orthonormal rows, in ``matrix.dtype``.
    """
    _check_matrix("matrix", matrix)
    _check_matrix("omega", omega)
    if omega.shape[0] != matrix.shape[1]:
        raise ValueError(f"omega must have shape ({matrix.shape[1]}, r), got {tuple(omega.shape)}")
    _check_rank(omega.shape[1], tuple(matrix.shape))
    a = matrix.to(_work_dtype(matrix))
    sample = a @ omega.to(device=a.device, dtype=a.dtype)
    q, _ = torch.linalg.qr(sample, mode="reduced")
    _, _, vh = torch.linalg.svd(q.T @ a, full_matrices=False)
    return vh.to(matrix.dtype)


def _finite_or_zeroed(grad: Tensor, where: str) -> Tensor:
    if torch.isfinite(grad.sum()):
        return grad
    _warn_once(f"coap_optim: non-finite gradient in {where}; non-finite entries are treated as 0.")
    return torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)


@torch.no_grad()
def initial_projection(grad: Tensor, rank: int, side: Side, *, seed: int = 3407) -> Tensor:
    """Create the first COAP projection from a gradient with the randomized range finder.

    The Gaussian test matrix is drawn from ``torch.Generator("cpu").manual_seed(seed)`` in fp32 and then moved to
    ``grad.device``, so the same gradient gives the same ``P`` on every device. On the CPU this reproduces the official
    code exactly (it draws ``randn([n, r])`` from a generator seeded with 3407 on the gradient's device). Non-finite
    gradient entries are treated as zeros (with a one-time warning).

    Args:
        grad (`torch.Tensor` of shape `(m, n)`): The gradient.
        rank (`int`): Target rank ``r``, ``1 <= r <= min(m, n)``.
        side (`Side`): ``"right"`` or ``"left"`` (see :func:`choose_side`).
        seed (`int`, *optional*, defaults to 3407): Seed of the CPU generator (the official seed).

    Returns:
        `torch.Tensor`: ``P`` of shape `(r, n)` (right, orthonormal rows) or `(m, r)` (left, orthonormal columns), in
        ``grad.dtype`` on ``grad.device``, contiguous.
    """
    _check_side(side)
    _check_matrix("grad", grad)
    _check_rank(rank, tuple(grad.shape))
    grad = _finite_or_zeroed(grad, "initial_projection")
    matrix = grad if side == "right" else grad.T
    generator = torch.Generator(device="cpu").manual_seed(seed)
    omega = torch.randn((matrix.shape[1], rank), generator=generator, device="cpu", dtype=torch.float32).to(
        grad.device
    )
    vh = range_finder(matrix, omega)
    return vh.contiguous() if side == "right" else vh.T.contiguous()


@torch.no_grad()
def reproject(grad: Tensor, proj: Tensor, side: Side) -> Tensor:
    """Re-compute the projection with the range finder, warm-started from the current one.

    The test matrix is the current projection (``P.T`` for right, ``P`` for left), as in the official code. If the
    gradient has a non-finite entry, ``proj`` is returned unchanged (with a one-time warning).

    Args:
        grad (`torch.Tensor` of shape `(m, n)`): The current gradient.
        proj (`torch.Tensor`): The current projection, `(r, n)` (right) or `(m, r)` (left).
        side (`Side`): Which side ``proj`` acts on.

    Returns:
        `torch.Tensor`: The new projection, same shape as ``proj``, in ``grad.dtype``, contiguous.
    """
    _check_side(side)
    _check_matrix("grad", grad)
    _check_proj_shape(proj, tuple(grad.shape), side)
    if not torch.isfinite(grad.sum()):
        _warn_once("coap_optim: non-finite gradient in reproject; the projection is left unchanged.")
        return proj
    if side == "right":
        return range_finder(grad, proj.T).contiguous()
    return range_finder(grad.T, proj).T.contiguous()


@torch.no_grad()
def svd_projection(grad: Tensor, rank: int, side: Side) -> Tensor:
    """GaLore projection: the top-``rank`` singular vectors of the gradient from a full SVD (fp32 or fp64 inside).

    Args:
        grad (`torch.Tensor` of shape `(m, n)`): The gradient.
        rank (`int`): Target rank ``r``.
        side (`Side`): ``"right"`` returns the top right singular vectors as rows; ``"left"`` the top left singular
            vectors as columns.

    Returns:
        `torch.Tensor`: `(r, n)` (right) or `(m, r)` (left), in ``grad.dtype``, contiguous.
    """
    _check_side(side)
    _check_matrix("grad", grad)
    _check_rank(rank, tuple(grad.shape))
    u, _, vh = torch.linalg.svd(grad.to(_work_dtype(grad)), full_matrices=False)
    out = vh[:rank] if side == "right" else u[:, :rank]
    return out.to(grad.dtype).contiguous()


@torch.no_grad()
def random_projection(
    shape: tuple[int, int],
    rank: int,
    side: Side,
    *,
    seed: int,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Flora projection: a seeded Gaussian matrix with entries of variance ``1 / rank``.

    With this scaling ``back(project(X))`` is an unbiased estimate of ``X`` (``E[P.T @ P] = I`` for right). The matrix
    is drawn on the CPU in fp32, so a seed gives the same projection on every device; re-sampling with another seed
    (Flora's ``kappa`` schedule) is a call with a new ``seed``.

    Args:
        shape (`tuple[int, int]`): Shape ``(m, n)`` of the matrix to project.
        rank (`int`): Target rank ``r``.
        side (`Side`): ``"right"`` gives `(r, n)`, ``"left"`` gives `(m, r)`.
        seed (`int`): Seed of the CPU generator.
        device (`torch.device` or `str`, *optional*): Device of the result (default: CPU).
        dtype (`torch.dtype`, *optional*, defaults to `torch.float32`): Dtype of the result.

    Returns:
        `torch.Tensor`: The projection, `(r, n)` (right) or `(m, r)` (left).
    """
    _check_side(side)
    if len(shape) != 2:
        raise ValueError(f"shape must be (m, n), got {tuple(shape)}")
    _check_rank(rank, tuple(shape))
    m, n = shape
    out_shape = (rank, n) if side == "right" else (m, rank)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    proj = torch.randn(out_shape, generator=generator, device="cpu", dtype=torch.float32) / math.sqrt(rank)
    return proj.to(device=device, dtype=dtype)


def correlation_loss(proj: Tensor, exp_avg: Tensor, grad: Tensor, side: Side) -> Tensor:
    """Differentiable COAP refresh loss (reference implementation, use autograd on it).

    ``mse(back(project(G)), G) * (1 - mean_i cos(back(M)_i, G_i))``, where the cosine similarity is taken over the
    rows of the `(m, n)` matrices (``dim=1``) on both sides, as in ``MatrixCOAP.update_proj``. Computed in the
    promoted dtype of the inputs.

    Args:
        proj (`torch.Tensor`): Projection ``P``, `(r, n)` (right) or `(m, r)` (left).
        exp_avg (`torch.Tensor`): Low-rank first moment ``M``, `(m, r)` (right) or `(r, n)` (left).
        grad (`torch.Tensor` of shape `(m, n)`): The current gradient ``G``.
        side (`Side`): Which side ``proj`` acts on.

    Returns:
        `torch.Tensor`: The scalar loss (0-d).
    """
    _check_side(side)
    recon = back_project(project(grad, proj, side), proj, side)
    mse = F.mse_loss(recon, grad.to(recon.dtype))
    cosine = F.cosine_similarity(back_project(exp_avg, proj, side), grad.to(recon.dtype), dim=1)
    return mse * (1 - cosine.mean())


def _cosine_terms(dot: Tensor, b_sq: Tensor, g_norm: Tensor, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """Row cosines and the coefficients of their gradient, with torch's ``eps`` semantics.

    ``F.cosine_similarity`` computes ``(b / max(|b|, eps)) . (g / max(|g|, eps))`` and clamps the norms in place under
    ``no_grad``, so its backward differentiates ``max(|b|, eps)`` as if it were ``|b|``. Hence, with
    ``cb = max(|b|, eps)`` and ``cg = max(|g|, eps)``::

        d cos / d b = a * g - q * b,   a = 1 / (cb * cg),   q = cos / (cb * |b|)   (q = 0 when |b| = 0).

    Returns:
        `tuple`: ``(cos, a, q)``, each of shape `(m,)`.
    """
    b_norm = b_sq.clamp_min(0).sqrt()
    cb = b_norm.clamp_min(eps)
    cg = g_norm.clamp_min(eps)
    a = 1.0 / (cb * cg)
    cos = dot * a
    q = torch.where(b_norm > 0, cos / (cb * b_norm.clamp_min(torch.finfo(b_norm.dtype).tiny)), 0.0)
    return cos, a, q


def _squared_residual(g_sq: Tensor, gp: Tensor, gram: Tensor, s: Tensor, explicit: Callable[[], Tensor]) -> Tensor:
    """``||G - back(project(G))||^2`` from the expansion ``||G||^2 - 2 ||Gp||^2 + <Gp^T Gp, S>`` (fp64 scalars).

    ``explicit`` is a callable returning the residual norm squared from the explicit residual; it is used when
    cancellation makes the expansion inaccurate.
    """
    expanded = g_sq - 2.0 * gp.double().square().sum() + (gram.double() * s.double()).sum()
    if expanded < _EXPLICIT_RESIDUAL_RATIO * g_sq:
        return explicit()
    return expanded


def _loss_and_grad_right(p: Tensor, m_lr: Tensor, g: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """Closed form for ``side="right"``: ``P`` (r, n), ``M`` (m, r), ``G`` (m, n), all fp32.

    With ``Gp = G P^T`` and ``S = P P^T``::

        mse  = (||G||^2 - 2 ||Gp||^2 + <Gp^T Gp, S>) / (m n)
        dmse = 2 / (m n) * [(Gp S - 2 Gp)^T G + (Gp^T Gp) P]
        cos_i = <M_i, Gp_i> / (|b_i| |g_i|),   |b_i|^2 = M_i S M_i^T
        dc   = -1 / m * [(a * M)^T G - ((q * M)^T M) P]           (c = 1 - mean cos)
        dL   = c * dmse + mse * dc = X^T G + Y P

    so the whole gradient costs two (m x n x r) GEMMs plus a few (r x r) sized ones.
    """
    rows, cols = g.shape
    gp = g @ p.T
    s = p @ p.T
    gram = gp.T @ gp
    g_norm = torch.linalg.vector_norm(g, dim=1)
    g_sq = g_norm.double().square().sum()

    sq_res = _squared_residual(g_sq, gp, gram, s, lambda: (gp @ p - g).double().square().sum())
    mse = sq_res / (rows * cols)

    gps_ms = torch.cat([gp, m_lr]) @ s
    gp_s, m_s = gps_ms[:rows], gps_ms[rows:]
    dot = (m_lr * gp).sum(dim=1)
    b_sq = (m_s * m_lr).sum(dim=1)
    cos, a, q = _cosine_terms(dot, b_sq, g_norm, eps)
    c = 1.0 - cos.double().mean()

    k_mse = float(2.0 * c / (rows * cols))
    k_cos = float(mse / rows)
    x = (gp_s - 2.0 * gp).mul_(k_mse).sub_(m_lr * (a * k_cos).unsqueeze(1))
    y = gram.mul_(k_mse).add_((m_lr * (q * k_cos).unsqueeze(1)).T @ m_lr)
    dp = torch.addmm(y @ p, x.T, g)
    return (mse * c).to(torch.float32), dp


def _loss_and_grad_left(p: Tensor, m_lr: Tensor, g: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """Closed form for ``side="left"``: ``P`` (m, r), ``M`` (r, n), ``G`` (m, n), all fp32.

    With ``Gq = G^T P`` (n, r), ``S = P^T P``, ``GM = G M^T`` (m, r) and ``K = M M^T``::

        mse  = (||G||^2 - 2 ||Gq||^2 + <Gq^T Gq, S>) / (m n)
        dmse = 2 / (m n) * [G (Gq S - 2 Gq) + P (Gq^T Gq)]
        cos_i = <P_i, GM_i> / (|b_i| |g_i|),   |b_i|^2 = P_i K P_i^T
        dc   = -1 / m * [a * GM - q * (P K)]

    which costs three (m x n x r) GEMMs (``G^T P`` and one ``G @ [Gq S - 2 Gq, M^T]``).
    """
    rows, cols = g.shape
    rank = p.shape[1]
    gq = g.T @ p
    s = p.T @ p
    gram = gq.T @ gq
    g_norm = torch.linalg.vector_norm(g, dim=1)
    g_sq = g_norm.double().square().sum()

    sq_res = _squared_residual(g_sq, gq, gram, s, lambda: (p @ gq.T - g).double().square().sum())
    mse = sq_res / (rows * cols)

    both = g @ torch.cat([gq @ s - 2.0 * gq, m_lr.T], dim=1)
    g_z, gm = both[:, :rank], both[:, rank:]
    pk = p @ (m_lr @ m_lr.T)
    dot = (p * gm).sum(dim=1)
    b_sq = (pk * p).sum(dim=1)
    cos, a, q = _cosine_terms(dot, b_sq, g_norm, eps)
    c = 1.0 - cos.double().mean()

    k_mse = float(2.0 * c / (rows * cols))
    k_cos = float(mse / rows)
    dp = torch.addmm(g_z, p, gram).mul_(k_mse)
    dp.sub_(gm.mul_((a * k_cos).unsqueeze(1))).add_(pk.mul_((q * k_cos).unsqueeze(1)))
    return (mse * c).to(torch.float32), dp


@torch.no_grad()
def correlation_loss_and_grad(
    proj: Tensor, exp_avg: Tensor, grad: Tensor, side: Side, *, eps: float = 1e-8
) -> tuple[Tensor, Tensor]:
    """Value and gradient w.r.t. ``proj`` of :func:`correlation_loss`, in closed form (no autograd graph).

    Everything is computed in fp32 (scalar reductions in fp64); the expansion of the reconstruction error is replaced
    by the explicit residual when cancellation would make it inaccurate. The result matches autograd on
    :func:`correlation_loss` up to rounding, including the ``eps`` clamping of ``F.cosine_similarity`` for rows of
    tiny norm. Cost: two (right) or three (left) GEMMs of size ``m x n x r``, plus ``O((m + n) r^2)``.

    Args:
        proj (`torch.Tensor`): Projection ``P``, `(r, n)` (right) or `(m, r)` (left).
        exp_avg (`torch.Tensor`): Low-rank first moment ``M``, `(m, r)` (right) or `(r, n)` (left).
        grad (`torch.Tensor` of shape `(m, n)`): The current gradient ``G``.
        side (`Side`): Which side ``proj`` acts on.
        eps (`float`, *optional*, defaults to 1e-8): ``eps`` of ``F.cosine_similarity``.

    Returns:
        `tuple[torch.Tensor, torch.Tensor]`: The loss (fp32, 0-d) and ``dL/dP`` (fp32, same shape as ``proj``).
    """
    _check_side(side)
    _check_matrix("grad", grad)
    rank = _check_proj_shape(proj, tuple(grad.shape), side)
    expected = _low_rank_shape(tuple(grad.shape), rank, side)
    if tuple(exp_avg.shape) != expected:
        raise ValueError(f"exp_avg must have shape {expected}, got {tuple(exp_avg.shape)}")
    p = proj.to(torch.float32)
    m_lr = exp_avg.to(device=p.device, dtype=torch.float32)
    g = grad.to(device=p.device, dtype=torch.float32)
    if side == "right":
        return _loss_and_grad_right(p, m_lr, g, eps)
    return _loss_and_grad_left(p, m_lr, g, eps)


def _orthonormalize(proj: Tensor, side: Side) -> Tensor:
    """Orthonormalise the rows (right) or columns (left) of ``proj`` by QR, keeping the sign of each vector."""
    basis = proj.T if side == "right" else proj
    q, r = torch.linalg.qr(basis, mode="reduced")
    signs = torch.where(torch.diagonal(r) < 0, -1.0, 1.0).to(q.dtype)
    q = q * signs
    return q.T.contiguous() if side == "right" else q.contiguous()


@torch.no_grad()
def refresh_projection(
    proj: Tensor,
    exp_avg: Tensor,
    grad: Tensor,
    side: Side,
    *,
    lr: float = 0.1,
    max_norm: float = 1.0,
    steps: int = 1,
    reorthonormalize: bool = False,
) -> Tensor:
    """COAP's correlation-aware refresh of the projection: clipped SGD on :func:`correlation_loss`.

    Each step computes ``g = dL/dP`` in closed form (:func:`correlation_loss_and_grad`), scales it like
    ``torch.nn.utils.clip_grad_norm_`` (``g * min(1, max_norm / (||g|| + 1e-6))``) and sets ``P <- P - lr * g``.
    With the defaults this is exactly one step of ``MatrixCOAP.update_proj``. ``P`` is not re-orthonormalised unless
    asked (the official code does not). The input ``proj`` is never modified.

    If ``grad`` (or the loss gradient) has a non-finite entry, ``proj`` itself is returned unchanged and a warning is
    logged once per process.

    Args:
        proj (`torch.Tensor`): Current projection, `(r, n)` (right) or `(m, r)` (left).
        exp_avg (`torch.Tensor`): Low-rank first moment from the previous step, `(m, r)` (right) or `(r, n)` (left).
        grad (`torch.Tensor` of shape `(m, n)`): The current gradient.
        side (`Side`): Which side ``proj`` acts on.
        lr (`float`, *optional*, defaults to 0.1): SGD step size on ``P``.
        max_norm (`float`, *optional*, defaults to 1.0): Gradient-norm clip.
        steps (`int`, *optional*, defaults to 1): Number of SGD steps (``M`` and ``G`` held fixed).
        reorthonormalize (`bool`, *optional*, defaults to `False`): Orthonormalise ``P`` (QR, signs kept) afterwards.

    Returns:
        `torch.Tensor`: The new projection, same shape as ``proj``, in ``proj.dtype`` (computed in fp32).
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not torch.isfinite(grad.sum()):
        _warn_once("coap_optim: non-finite gradient in refresh_projection; the projection is left unchanged.")
        return proj
    p = proj.to(torch.float32, copy=True)
    for _ in range(steps):
        _, dp = correlation_loss_and_grad(p, exp_avg, grad, side)
        total_norm = torch.linalg.vector_norm(dp)
        if not torch.isfinite(total_norm):
            _warn_once("coap_optim: non-finite refresh gradient (check exp_avg); the projection is left unchanged.")
            return proj
        coef = torch.clamp(max_norm / (total_norm + _CLIP_EPS), max=1.0)
        p.sub_(dp.mul_(coef).mul_(lr))
    if reorthonormalize:
        p = _orthonormalize(p, side)
    return p.to(proj.dtype)
