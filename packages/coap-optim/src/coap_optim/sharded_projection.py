"""COAP's projection updates on a row-sharded gradient (FSDP2's ``Shard(0)``), with small collectives only.

Each rank holds rows ``[start, stop)`` of the `(m, n)` gradient ``G`` (see :class:`coap_optim.sharding.RowShard`).
The side of the projection is chosen from the *global* shape, as without sharding, and the state is laid out so that
the per-step update needs no collective on the right side:

- ``side="right"`` (``m >= n``): ``P`` `(r, n)` is replicated; ``G P^T``, the moments `(m, r)` and ``N P`` are
  row-local.
- ``side="left"`` (``m < n``): ``P`` `(m, r)` is row-sharded with the weight; the projected gradient ``P^T G``
  `(r, n)` is a sum over rows (one all-reduce of ``r n`` values per step); the moments `(r, n)` are replicated and
  ``P N`` is row-local.

Projection updates (every ``T_u`` steps), in values moved per rank (``c`` = a few scalars):

==================  ====================================================  =========================================
update              right (``m >= n``)                                    left (``m < n``)
==================  ====================================================  =========================================
range finder        all-gather ``Y = G Omega`` (``m r``); all-reduce      all-reduce ``Y = G^T Omega`` (``n r``);
                    ``Q^T G`` (``r n``)                                   all-gather ``G Q`` (``m r``)
COAP refresh        all-reduce ``2 r^2 + c``, then ``r n`` (``dL/dP``)    all-reduce ``n r + r^2 + c``, then ``c``
svd (GaLore)        all-gather ``G`` (``m n``): the full SVD needs it     all-gather ``G`` (``m n``)
random (Flora)      none (seeded)                                         none (seeded)
==================  ====================================================  =========================================

Every rank then runs the same small QR / SVD on the same replicated inputs, so the projections agree across ranks
and equal the unsharded optimizer's to fp32 round-off (the sums over rows are split across ranks).
"""

from __future__ import annotations

import torch
from torch import Tensor

from coap_optim.projection import (
    _CLIP_EPS,
    _EXPLICIT_RESIDUAL_RATIO,
    Side,
    _cosine_terms,
    _orthonormalize,
    _work_dtype,
    random_projection,
    svd_projection,
)
from coap_optim.sharding import RowShard

__all__ = [
    "sharded_initial_projection",
    "sharded_random_projection",
    "sharded_refresh",
    "sharded_reproject",
    "sharded_svd_projection",
]


def _rows(full: Tensor, shard: RowShard) -> Tensor:
    return full[shard.start : shard.stop].contiguous()


def _range_finder(grad: Tensor, omega: Tensor, side: Side, shard: RowShard) -> Tensor:
    """:func:`coap_optim.projection.range_finder` of ``G`` (right) or ``G^T`` (left) from row shards.

    Args:
        grad (`torch.Tensor` of shape `(local_rows, n)`): This rank's rows of ``G``.
        omega (`torch.Tensor`): Right: `(n, r)`, replicated. Left: this rank's rows `(local_rows, r)` of the `(m, r)`
            test matrix.
        side (`Side`): Which side the projection acts on.
        shard (`RowShard`): The row layout.

    Returns:
        `torch.Tensor`: Right: ``P`` `(r, n)` (replicated). Left: this rank's rows `(local_rows, r)` of ``P``.
    """
    a = grad.to(_work_dtype(grad))
    omega = omega.to(device=a.device, dtype=a.dtype)
    if side == "right":
        sample = shard.gather_rows(a @ omega)  # (m, r)
        q, _ = torch.linalg.qr(sample, mode="reduced")
        b = shard.all_reduce_(_rows(q, shard).T @ a)  # (r, n) = Q^T G
        _, _, vh = torch.linalg.svd(b, full_matrices=False)
        return vh.to(grad.dtype).contiguous()
    sample = shard.all_reduce_(a.T @ omega)  # (n, r) = G^T Omega
    q, _ = torch.linalg.qr(sample, mode="reduced")
    b = shard.gather_rows(a @ q).T  # (r, m) = Q^T G^T
    _, _, vh = torch.linalg.svd(b, full_matrices=False)
    return _rows(vh.T, shard).to(grad.dtype)


@torch.no_grad()
def sharded_initial_projection(grad: Tensor, rank: int, side: Side, shard: RowShard, *, seed: int) -> Tensor:
    """:func:`coap_optim.projection.initial_projection` from row shards (the same seeded CPU Gaussian test matrix).

    Returns:
        `torch.Tensor`: Right: ``P`` `(r, n)`. Left: this rank's rows of ``P``, `(local_rows, r)`.
    """
    rows, cols = shard.rows, grad.shape[1]
    generator = torch.Generator(device="cpu").manual_seed(seed)
    omega = torch.randn((cols if side == "right" else rows, rank), generator=generator, dtype=torch.float32)
    if side == "left":
        omega = _rows(omega, shard)
    return _range_finder(grad, omega.to(grad.device), side, shard)


@torch.no_grad()
def sharded_reproject(grad: Tensor, proj: Tensor, side: Side, shard: RowShard) -> Tensor:
    """:func:`coap_optim.projection.reproject` (warm-started range finder) from row shards.

    Args:
        grad (`torch.Tensor` of shape `(local_rows, n)`): This rank's rows of ``G``.
        proj (`torch.Tensor`): Right: ``P`` `(r, n)`. Left: this rank's rows of ``P``.
        side (`Side`): Which side.
        shard (`RowShard`): The row layout.

    Returns:
        `torch.Tensor`: The new projection, laid out like ``proj``.
    """
    return _range_finder(grad, proj.T if side == "right" else proj, side, shard)


@torch.no_grad()
def sharded_svd_projection(grad: Tensor, rank: int, side: Side, shard: RowShard) -> Tensor:
    """GaLore's full-SVD projection: the gradient is all-gathered (the SVD needs all of it).

    Returns:
        `torch.Tensor`: Right: `(r, n)`. Left: this rank's rows `(local_rows, r)`.
    """
    full = svd_projection(shard.gather_rows(grad), rank, side)
    return full if side == "right" else _rows(full, shard)


@torch.no_grad()
def sharded_random_projection(
    shape: tuple[int, int], rank: int, side: Side, shard: RowShard, *, seed: int, device: torch.device
) -> Tensor:
    """Flora's seeded Gaussian projection (no communication: every rank draws the same matrix).

    Returns:
        `torch.Tensor`: Right: `(r, n)`. Left: this rank's rows `(local_rows, r)`.
    """
    full = random_projection(shape, rank, side, seed=seed, device=device)
    return full if side == "right" else _rows(full, shard)


def _loss_grad_right(p: Tensor, m_lr: Tensor, g: Tensor, shard: RowShard, eps: float) -> Tensor:
    """``dL/dP`` (replicated `(r, n)`) of the refresh loss for ``side="right"`` from row shards of ``M`` and ``G``.

    The closed form of :func:`coap_optim.projection._loss_and_grad_right`; the sums over rows become all-reduces.
    """
    rows, cols = shard.rows, g.shape[1]
    rank = p.shape[0]
    gp = g @ p.T
    s = p @ p.T
    g_norm = torch.linalg.vector_norm(g, dim=1)
    gps_ms = torch.cat([gp, m_lr]) @ s
    gp_s, m_s = gps_ms[: gp.shape[0]], gps_ms[gp.shape[0] :]
    dot = (m_lr * gp).sum(dim=1)
    b_sq = (m_s * m_lr).sum(dim=1)
    cos, a, q = _cosine_terms(dot, b_sq, g_norm, eps)
    sums = torch.cat(
        [
            (gp.T @ gp).double().reshape(-1),
            ((m_lr * q.unsqueeze(1)).T @ m_lr).double().reshape(-1),
            torch.stack([g_norm.double().square().sum(), gp.double().square().sum(), cos.double().sum()]),
        ]
    )
    shard.all_reduce_(sums)
    gram = sums[: rank * rank].view(rank, rank).float()
    qmm = sums[rank * rank : 2 * rank * rank].view(rank, rank).float()
    g_sq, gp_sq, cos_sum = sums[-3], sums[-2], sums[-1]
    sq_res = g_sq - 2.0 * gp_sq + (gram.double() * s.double()).sum()
    if sq_res < _EXPLICIT_RESIDUAL_RATIO * g_sq:
        sq_res = shard.all_reduce_((gp @ p - g).double().square().sum())
    mse = sq_res / (rows * cols)
    c = 1.0 - cos_sum / rows
    k_mse = float(2.0 * c / (rows * cols))
    k_cos = float(mse / rows)
    x = (gp_s - 2.0 * gp).mul_(k_mse).sub_(m_lr * (a * k_cos).unsqueeze(1))
    y = gram.mul_(k_mse).add_(qmm.mul_(k_cos))
    return (y @ p).add_(shard.all_reduce_(x.T @ g))


def _loss_grad_left(p: Tensor, m_lr: Tensor, g: Tensor, shard: RowShard, eps: float) -> Tensor:
    """This rank's rows of ``dL/dP`` for ``side="left"`` (``P``, ``G`` row-sharded, ``M`` `(r, n)` replicated).

    The closed form of :func:`coap_optim.projection._loss_and_grad_left`; the sums over rows become all-reduces.
    """
    rows, cols = shard.rows, g.shape[1]
    rank = p.shape[1]
    g_norm = torch.linalg.vector_norm(g, dim=1)
    gm = g @ m_lr.T
    pk = p @ (m_lr @ m_lr.T)
    dot = (p * gm).sum(dim=1)
    b_sq = (pk * p).sum(dim=1)
    cos, a, q = _cosine_terms(dot, b_sq, g_norm, eps)
    sums = torch.cat(
        [
            (g.T @ p).double().reshape(-1),
            (p.T @ p).double().reshape(-1),
            torch.stack([g_norm.double().square().sum(), cos.double().sum()]),
        ]
    )
    shard.all_reduce_(sums)
    gq = sums[: cols * rank].view(cols, rank).float()
    s = sums[cols * rank : cols * rank + rank * rank].view(rank, rank).float()
    g_sq, cos_sum = sums[-2], sums[-1]
    gram = gq.T @ gq
    sq_res = g_sq - 2.0 * gq.double().square().sum() + (gram.double() * s.double()).sum()
    if sq_res < _EXPLICIT_RESIDUAL_RATIO * g_sq:
        sq_res = shard.all_reduce_((p @ gq.T - g).double().square().sum())
    mse = sq_res / (rows * cols)
    c = 1.0 - cos_sum / rows
    k_mse = float(2.0 * c / (rows * cols))
    k_cos = float(mse / rows)
    g_z = g @ (gq @ s - 2.0 * gq)
    dp = torch.addmm(g_z, p, gram).mul_(k_mse)
    return dp.sub_(gm.mul_((a * k_cos).unsqueeze(1))).add_(pk.mul_((q * k_cos).unsqueeze(1)))


@torch.no_grad()
def sharded_refresh(
    proj: Tensor,
    exp_avg: Tensor,
    grad: Tensor,
    side: Side,
    shard: RowShard,
    *,
    lr: float,
    max_norm: float,
    steps: int,
    reorthonormalize: bool,
) -> Tensor:
    """:func:`coap_optim.projection.refresh_projection` (clipped SGD on the correlation-aware loss) from row shards.

    Args:
        proj (`torch.Tensor`): Right: ``P`` `(r, n)`. Left: this rank's rows `(local_rows, r)` of ``P``.
        exp_avg (`torch.Tensor`): ``M`` from the previous step. Right: this rank's rows `(local_rows, r)`. Left:
            `(r, n)`, replicated.
        grad (`torch.Tensor` of shape `(local_rows, n)`): This rank's rows of ``G`` (finite on every rank).
        side (`Side`): Which side.
        shard (`RowShard`): The row layout.
        lr (`float`): SGD step size on ``P``.
        max_norm (`float`): Gradient-norm clip (of the global ``dL/dP``).
        steps (`int`): SGD steps.
        reorthonormalize (`bool`): QR-orthonormalise ``P`` afterwards (left: on the all-gathered ``P``).

    Returns:
        `torch.Tensor`: The new projection, laid out like ``proj``, in ``proj.dtype``; ``proj`` itself when the
        loss gradient is non-finite (the same decision on every rank).
    """
    p = proj.to(torch.float32, copy=True)
    m_lr = exp_avg.to(device=p.device, dtype=torch.float32)
    g = grad.to(device=p.device, dtype=torch.float32)
    for _ in range(steps):
        if side == "right":
            dp = _loss_grad_right(p, m_lr, g, shard, 1e-8)
            total_norm = torch.linalg.vector_norm(dp)
        else:
            dp = _loss_grad_left(p, m_lr, g, shard, 1e-8)
            total_norm = shard.all_reduce_(dp.double().square().sum()).sqrt().float()
        if not torch.isfinite(total_norm):
            return proj
        coef = torch.clamp(max_norm / (total_norm + _CLIP_EPS), max=1.0)
        p.sub_(dp.mul_(coef).mul_(lr))
    if reorthonormalize:
        p = _orthonormalize(p, side) if side == "right" else _rows(_orthonormalize(shard.gather_rows(p), side), shard)
    return p.to(proj.dtype)
