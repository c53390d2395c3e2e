"""Tests of coap_optim.projection: closed-form refresh vs autograd and vs a re-implementation of the official step."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F

import coap_optim.projection as projection
from coap_optim.projection import (
    back_project,
    choose_side,
    correlation_loss,
    correlation_loss_and_grad,
    initial_projection,
    project,
    random_projection,
    range_finder,
    refresh_projection,
    reproject,
    svd_projection,
)

# (m, n, r): both sides, square, rank 1, full rank, strongly non-square.
SHAPES = [(40, 24, 5), (24, 40, 5), (30, 30, 1), (17, 50, 3), (50, 17, 17), (64, 9, 4), (9, 64, 9)]


def _low_rank_shape(m: int, n: int, r: int, side: str) -> tuple[int, int]:
    return (m, r) if side == "right" else (r, n)


def _proj_shape(m: int, n: int, r: int, side: str) -> tuple[int, int]:
    return (r, n) if side == "right" else (m, r)


def _problem(m: int, n: int, r: int, seed: int = 0, dtype: torch.dtype = torch.float32):
    """A gradient, a slightly perturbed range-finder projection (not orthonormal) and a low-rank moment."""
    gen = torch.Generator().manual_seed(seed)
    side = choose_side((m, n))
    grad = torch.randn(m, n, generator=gen)
    proj = initial_projection(grad, r, side) + 0.05 * torch.randn(_proj_shape(m, n, r, side), generator=gen)
    exp_avg = torch.randn(_low_rank_shape(m, n, r, side), generator=gen)
    return side, proj.to(dtype), exp_avg.to(dtype), grad.to(dtype)


# --------------------------------------------------------------------------------------------------------------------
# An independent re-implementation of the official numerics (bytedance/coap, coap_torch/projection/coap_matrix.py
# `MatrixCOAP.update_proj`, `get_orthogonal_matrix` and coap_torch/utils/orthogonal.py `compute_orthogonal`), written
# the way the official code runs them: autograd on the loss, clip_grad_norm_, SGD, no re-orthonormalisation.
# --------------------------------------------------------------------------------------------------------------------
def _official_update_proj(proj: torch.Tensor, proj_m: torch.Tensor, side: str, grad: torch.Tensor, lr: float = 0.1):
    proj = proj.clone().requires_grad_(True)
    with torch.enable_grad():
        if side == "right":
            exp_avg = proj_m @ proj
            loss = F.mse_loss(grad @ proj.T @ proj, grad)
        else:
            exp_avg = proj @ proj_m
            loss = F.mse_loss(proj @ proj.T @ grad, grad)
        cosine_sim = F.cosine_similarity(exp_avg, grad, dim=1)
        loss = loss * (1 - cosine_sim.mean())
        loss.backward()
    torch.nn.utils.clip_grad_norm_(proj, max_norm=1.0)
    with torch.no_grad():
        proj -= proj.grad * lr
    return proj.detach()


def _official_compute_orthogonal(matrix: torch.Tensor, rank: int, omega: torch.Tensor | None = None) -> torch.Tensor:
    if omega is None:
        generator = torch.Generator(device=matrix.device).manual_seed(3407)
        omega = torch.randn([matrix.shape[1], rank], device=matrix.device, generator=generator)
    omega = omega.float()
    y = matrix @ omega
    q, _ = torch.linalg.qr(y, "reduced")
    b = q.T @ matrix
    _, _, vh = torch.linalg.svd(b, full_matrices=False)
    return vh


def _official_orthogonal_matrix(grad: torch.Tensor, rank: int, side: str, previous: torch.Tensor | None):
    if side == "right":
        return _official_compute_orthogonal(grad.float(), rank, None if previous is None else previous.T)
    return _official_compute_orthogonal(grad.float().T, rank, previous).T


def _assert_rows_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float) -> None:
    """Row-wise relative comparison (rows of very different scale, e.g. tiny-norm rows, are each checked)."""
    floor = 1e-3 * expected.norm() / expected.shape[0] ** 0.5
    err = (actual - expected).norm(dim=1) / torch.maximum(expected.norm(dim=1), floor)
    assert err.max().item() <= rtol, f"max row relative error {err.max().item():.3g} > {rtol}"


# --------------------------------------------------------------------------------------------------------------------
# conventions
# --------------------------------------------------------------------------------------------------------------------
def test_choose_side():
    assert choose_side((64, 32)) == "right"
    assert choose_side(torch.Size([32, 32])) == "right"
    assert choose_side((32, 64)) == "left"
    with pytest.raises(ValueError):
        choose_side((3, 4, 5))


@pytest.mark.parametrize(("m", "n", "r"), [(12, 8, 3), (8, 12, 3)])
def test_project_back_project_shapes_and_roundtrip(m, n, r):
    side = choose_side((m, n))
    gen = torch.Generator().manual_seed(1)
    proj = initial_projection(torch.randn(m, n, generator=gen), r, side)
    x = torch.randn(m, n, generator=gen)
    low = project(x, proj, side)
    assert low.shape == _low_rank_shape(m, n, r, side)
    if side == "right":
        torch.testing.assert_close(low, x @ proj.T)
    else:
        torch.testing.assert_close(low, proj.T @ x)
    # A matrix inside the projected subspace is reconstructed exactly.
    inside = back_project(low, proj, side)
    assert inside.shape == (m, n)
    torch.testing.assert_close(back_project(project(inside, proj, side), proj, side), inside, atol=1e-5, rtol=1e-5)
    # Mixed dtypes compute in the promoted dtype.
    assert back_project(low, proj.to(torch.bfloat16), side).dtype == torch.float32


# --------------------------------------------------------------------------------------------------------------------
# closed-form loss and gradient vs autograd
# --------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("m", "n", "r"), SHAPES)
def test_closed_form_matches_autograd_fp64(m, n, r):
    side, proj, exp_avg, grad = _problem(m, n, r, seed=m * n + r)
    loss, dproj = correlation_loss_and_grad(proj, exp_avg, grad, side)
    assert loss.dtype == torch.float32 and loss.dim() == 0
    assert dproj.dtype == torch.float32 and dproj.shape == proj.shape

    ref_proj = proj.double().requires_grad_(True)
    ref_loss = correlation_loss(ref_proj, exp_avg.double(), grad.double(), side)
    ref_loss.backward()
    torch.testing.assert_close(loss.double(), ref_loss.detach(), rtol=2e-6, atol=0)
    _assert_rows_close(dproj.double(), ref_proj.grad, rtol=2e-5)


@pytest.mark.parametrize("side", ["right", "left"])
def test_closed_form_tiny_norm_rows_follow_torch_eps(side):
    """Rows with |back(M)_i| < eps, back(M)_i = 0 and |G_i| < eps use F.cosine_similarity's clamping semantics."""
    m, n, r = (40, 24, 6) if side == "right" else (24, 40, 6)
    _, proj, exp_avg, grad = _problem(m, n, r, seed=7)
    grad[2] *= 1e-12  # |g_i| < eps
    grad[5] = 0.0
    if side == "right":
        exp_avg[3] = 0.0  # b_i = 0
        exp_avg[4] *= 1e-11  # 0 < |b_i| < eps
        exp_avg[2] *= 1e-11  # both tiny
    else:
        proj[3] = 0.0
        proj[4] *= 1e-11
        proj[2] *= 1e-11
    back = back_project(exp_avg.double(), proj.double(), side)
    assert back[3].norm() == 0 and 0 < back[4].norm() < 1e-8

    loss, dproj = correlation_loss_and_grad(proj, exp_avg, grad, side)
    ref_proj = proj.double().requires_grad_(True)
    ref_loss = correlation_loss(ref_proj, exp_avg.double(), grad.double(), side)
    ref_loss.backward()
    torch.testing.assert_close(loss.double(), ref_loss.detach(), rtol=2e-6, atol=0)
    _assert_rows_close(dproj.double(), ref_proj.grad, rtol=2e-5)


def test_closed_form_eps_argument_matches_cosine_eps():
    side, proj, exp_avg, grad = _problem(30, 20, 4, seed=3)
    exp_avg[1] *= 1e-6  # |b_1| < 1e-3: clamped only under the larger eps
    ref_proj = proj.double().requires_grad_(True)
    mse = F.mse_loss(back_project(project(grad.double(), ref_proj, side), ref_proj, side), grad.double())
    cos = F.cosine_similarity(back_project(exp_avg.double(), ref_proj, side), grad.double(), dim=1, eps=1e-3)
    (mse * (1 - cos.mean())).backward()
    _, dproj = correlation_loss_and_grad(proj, exp_avg, grad, side, eps=1e-3)
    _, dproj_default = correlation_loss_and_grad(proj, exp_avg, grad, side)
    _assert_rows_close(dproj.double(), ref_proj.grad, rtol=2e-5)
    assert (dproj - dproj_default).abs().max() > 1e-3 * dproj.abs().max()


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("noise", [3e-2, 1e-3])
def test_closed_form_accurate_when_projection_captures_almost_all_energy(side, noise):
    """||G - back(project(G))|| << ||G||: the expanded error cancels, the explicit residual keeps the loss exact."""
    m, n, r = (120, 80, 10) if side == "right" else (80, 120, 10)
    gen = torch.Generator().manual_seed(11)
    grad = torch.randn(m, r, generator=gen) @ torch.randn(r, n, generator=gen)
    grad = grad + noise * grad.std() * torch.randn(m, n, generator=gen)
    proj = svd_projection(grad, r, side) + 1e-3 * torch.randn(_proj_shape(m, n, r, side), generator=gen)
    exp_avg = torch.randn(_low_rank_shape(m, n, r, side), generator=gen)
    loss, dproj = correlation_loss_and_grad(proj, exp_avg, grad, side)
    ref_proj = proj.double().requires_grad_(True)
    ref_loss = correlation_loss(ref_proj, exp_avg.double(), grad.double(), side)
    ref_loss.backward()
    torch.testing.assert_close(loss.double(), ref_loss.detach(), rtol=1e-5, atol=0)
    _assert_rows_close(dproj.double(), ref_proj.grad, rtol=1e-3)


@pytest.mark.parametrize(("m", "n", "r"), [(40, 24, 5), (24, 40, 5)])
def test_closed_form_expanded_and_explicit_residual_agree(m, n, r, monkeypatch):
    side, proj, exp_avg, grad = _problem(m, n, r, seed=5)
    monkeypatch.setattr(projection, "_EXPLICIT_RESIDUAL_RATIO", 0.0)  # always the expansion
    loss_expanded, grad_expanded = correlation_loss_and_grad(proj, exp_avg, grad, side)
    monkeypatch.setattr(projection, "_EXPLICIT_RESIDUAL_RATIO", 2.0)  # always the explicit residual
    loss_explicit, grad_explicit = correlation_loss_and_grad(proj, exp_avg, grad, side)
    torch.testing.assert_close(loss_expanded, loss_explicit, rtol=1e-5, atol=0)
    torch.testing.assert_close(grad_expanded, grad_explicit, rtol=1e-4, atol=1e-5 * grad_explicit.abs().max().item())


def test_closed_form_builds_no_graph_and_validates_shapes():
    side, proj, exp_avg, grad = _problem(20, 10, 3)
    loss, dproj = correlation_loss_and_grad(proj.requires_grad_(True), exp_avg, grad, side)
    assert not loss.requires_grad and not dproj.requires_grad
    with pytest.raises(ValueError, match="exp_avg"):
        correlation_loss_and_grad(proj, exp_avg.T, grad, side)
    with pytest.raises(ValueError, match="projection"):
        correlation_loss_and_grad(proj.T, exp_avg, grad, side)
    with pytest.raises(ValueError, match="side"):
        correlation_loss_and_grad(proj, exp_avg, grad, "up")


# --------------------------------------------------------------------------------------------------------------------
# refresh vs the official step
# --------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scale", [1.0, 10.0])  # ||dL/dP|| < 1 (no clipping) and > 1 (clipped)
@pytest.mark.parametrize(("m", "n", "r"), SHAPES)
def test_refresh_matches_official_step(m, n, r, scale):
    side, proj, exp_avg, grad = _problem(m, n, r, seed=m + 3 * n + r)
    grad = grad * scale
    grad_norm = correlation_loss_and_grad(proj, exp_avg, grad, side)[1].norm()
    assert (grad_norm > 1.0) == (scale > 1.0)
    ours = refresh_projection(proj, exp_avg, grad, side)
    ref = _official_update_proj(proj, exp_avg, side, grad)
    step = (ref - proj).norm()
    assert step > 1e-3  # the step is not trivially small
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5 * ref.abs().max().item())
    assert (ours - ref).norm() <= 1e-4 * step


@pytest.mark.parametrize(("m", "n", "r"), [(48, 32, 8), (32, 48, 8)])
def test_refresh_and_reprojection_schedule_matches_official(m, n, r):
    """init -> refresh -> refresh -> warm re-projection -> refresh, with new gradients and moments each time."""
    side = choose_side((m, n))
    gen = torch.Generator().manual_seed(21)
    grads = [torch.randn(m, n, generator=gen) * (10.0 if t % 2 else 1.0) for t in range(5)]  # clipped or not
    moments = [torch.randn(_low_rank_shape(m, n, r, side), generator=gen) for _ in range(5)]

    ours = initial_projection(grads[0], r, side)
    ref = _official_orthogonal_matrix(grads[0], r, side, None)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)
    for t in range(1, 5):
        if t == 3:
            ours = reproject(grads[t], ours, side)
            ref = _official_orthogonal_matrix(grads[t], r, side, ref)
        else:
            ours = refresh_projection(ours, moments[t], grads[t], side)
            ref = _official_update_proj(ref, moments[t], side, grads[t])
        # The SVD inside the re-projection amplifies the ~1e-8 rounding differences of the refreshed P by the inverse
        # gap of the singular values of a random gradient (to ~1e-5), hence the looser tolerance from t = 3 on.
        tol = 1e-5 if t < 3 else 1e-4
        torch.testing.assert_close(ours, ref, rtol=0, atol=tol * ref.abs().max().item())


def test_refresh_multiple_steps_equal_repeated_single_steps():
    side, proj, exp_avg, grad = _problem(30, 20, 4, seed=8)
    once = refresh_projection(proj, exp_avg, grad, side)
    twice = refresh_projection(once, exp_avg, grad, side)
    torch.testing.assert_close(refresh_projection(proj, exp_avg, grad, side, steps=2), twice, rtol=0, atol=1e-7)


@pytest.mark.parametrize("side", ["right", "left"])
def test_refresh_clipping_and_lr(side):
    m, n = (30, 20) if side == "right" else (20, 30)
    _, proj, exp_avg, grad = _problem(m, n, 4, seed=9)
    _, dproj = correlation_loss_and_grad(proj, exp_avg, grad, side)
    # No clipping when max_norm is large: P - lr * g.
    unclipped = refresh_projection(proj, exp_avg, grad, side, lr=0.3, max_norm=1e9)
    torch.testing.assert_close(unclipped, proj - 0.3 * dproj, rtol=0, atol=1e-6)
    # Clipped to norm max_norm (up to the 1e-6 of clip_grad_norm_).
    clipped = refresh_projection(proj, exp_avg, grad, side, lr=1.0, max_norm=1e-3)
    assert dproj.norm() > 1e-3
    torch.testing.assert_close((proj - clipped).norm(), torch.tensor(1e-3), rtol=1e-4, atol=0)


def test_refresh_small_step_decreases_loss():
    for m, n in [(40, 24), (24, 40)]:
        side, proj, exp_avg, grad = _problem(m, n, 5, seed=12)
        new = refresh_projection(proj, exp_avg, grad, side, lr=1e-3)
        assert correlation_loss(new, exp_avg, grad, side) < correlation_loss(proj, exp_avg, grad, side)


@pytest.mark.parametrize("side", ["right", "left"])
def test_refresh_reorthonormalize(side):
    m, n = (30, 20) if side == "right" else (20, 30)
    _, proj, exp_avg, grad = _problem(m, n, 4, seed=13)
    plain = refresh_projection(proj, exp_avg, grad, side)
    ortho = refresh_projection(proj, exp_avg, grad, side, reorthonormalize=True)
    basis, plain_basis = (ortho.T, plain.T) if side == "right" else (ortho, plain)
    torch.testing.assert_close(basis.T @ basis, torch.eye(4), rtol=0, atol=1e-5)
    # Same subspace, and each vector keeps its direction (positive diagonal of the triangular factor).
    torch.testing.assert_close(basis @ (basis.T @ plain_basis), plain_basis, rtol=0, atol=1e-5)
    assert ((basis * plain_basis).sum(dim=0) > 0).all()


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_refresh_non_finite_gradient_leaves_projection_unchanged(bad, caplog):
    side, proj, exp_avg, grad = _problem(20, 12, 3)
    grad[4, 5] = bad
    projection._warn_once.cache_clear()
    with caplog.at_level(logging.WARNING, logger="coap_optim.projection"):
        out = refresh_projection(proj, exp_avg, grad, side)
        refresh_projection(proj, exp_avg, grad, side)
    assert out is proj
    assert sum("non-finite gradient" in rec.message for rec in caplog.records) == 1  # logged once


def test_refresh_non_finite_moment_leaves_projection_unchanged():
    side, proj, exp_avg, grad = _problem(20, 12, 3)
    exp_avg[0, 0] = float("nan")
    before = proj.clone()
    out = refresh_projection(proj, exp_avg, grad, side)
    assert torch.equal(out, before)


@pytest.mark.parametrize(("m", "n"), [(24, 16), (16, 24)])
def test_bf16_inputs_return_bf16(m, n):
    side, proj, exp_avg, grad = _problem(m, n, 4, dtype=torch.bfloat16)
    out = refresh_projection(proj, exp_avg, grad, side)
    assert out.dtype == torch.bfloat16
    # Computed in fp32 from the (exactly representable) bf16 values, then rounded once.
    expected = refresh_projection(proj.float(), exp_avg.float(), grad.float(), side).to(torch.bfloat16)
    assert torch.equal(out, expected)
    assert initial_projection(grad, 4, side).dtype == torch.bfloat16
    assert reproject(grad, proj, side).dtype == torch.bfloat16
    assert svd_projection(grad, 4, side).dtype == torch.bfloat16
    _, dproj = correlation_loss_and_grad(proj, exp_avg, grad, side)
    assert dproj.dtype == torch.float32


def test_refresh_does_not_modify_inputs():
    side, proj, exp_avg, grad = _problem(20, 12, 3)
    copies = [t.clone() for t in (proj, exp_avg, grad)]
    refresh_projection(proj, exp_avg, grad, side, steps=2, reorthonormalize=True)
    for t, c in zip((proj, exp_avg, grad), copies):
        assert torch.equal(t, c)


# --------------------------------------------------------------------------------------------------------------------
# range finder, initial projection, re-projection
# --------------------------------------------------------------------------------------------------------------------
def test_range_finder_orthonormal_rows_and_exact_low_rank_recovery():
    gen = torch.Generator().manual_seed(2)
    m, n, r = 50, 30, 6
    matrix = torch.randn(m, r, generator=gen, dtype=torch.float64) @ torch.randn(
        r, n, generator=gen, dtype=torch.float64
    )
    vh = range_finder(matrix, torch.randn(n, r, generator=gen))
    assert vh.shape == (r, n) and vh.dtype == torch.float64
    torch.testing.assert_close(vh @ vh.T, torch.eye(r, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(matrix @ vh.T @ vh, matrix, rtol=0, atol=1e-10)
    with pytest.raises(ValueError):
        range_finder(matrix, torch.randn(n + 1, r))


@pytest.mark.parametrize(("m", "n", "r"), [(40, 24, 5), (24, 40, 5)])
def test_initial_projection_seeded_and_official_on_cpu(m, n, r):
    side = choose_side((m, n))
    grad = torch.randn(m, n, generator=torch.Generator().manual_seed(4))
    first = initial_projection(grad, r, side)
    assert first.shape == _proj_shape(m, n, r, side) and first.is_contiguous()
    assert torch.equal(first, initial_projection(grad, r, side))
    # On the CPU the official code draws the same Gaussian test matrix (seed 3407).
    torch.testing.assert_close(first, _official_orthogonal_matrix(grad, r, side, None), rtol=0, atol=1e-6)
    # The test matrix comes from a CPU generator, whatever the gradient's device.
    omega = torch.randn(
        (n if side == "right" else m, r), generator=torch.Generator("cpu").manual_seed(123), dtype=torch.float32
    )
    vh = range_finder(grad if side == "right" else grad.T, omega)
    expected = vh if side == "right" else vh.T
    assert torch.equal(initial_projection(grad, r, side, seed=123), expected)
    assert not torch.allclose(initial_projection(grad, r, side, seed=123), first)
    basis = first.T if side == "right" else first
    torch.testing.assert_close(basis.T @ basis, torch.eye(r), rtol=0, atol=1e-5)


def test_initial_projection_non_finite_entries_treated_as_zero():
    grad = torch.randn(20, 12, generator=torch.Generator().manual_seed(6))
    bad = grad.clone()
    bad[3, 4] = float("nan")
    clean = grad.clone()
    clean[3, 4] = 0.0
    assert torch.equal(initial_projection(bad, 3, "right"), initial_projection(clean, 3, "right"))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_initial_projection_same_subspace_on_cuda():
    grad = torch.randn(64, 48, generator=torch.Generator().manual_seed(5))
    cpu = initial_projection(grad, 8, "right")
    cuda = initial_projection(grad.cuda(), 8, "right").cpu()
    # Same test matrix on both devices: the same subspace (SVD signs may differ between devices).
    torch.testing.assert_close(cuda.T @ cuda, cpu.T @ cpu, rtol=0, atol=1e-4)


@pytest.mark.parametrize(("m", "n", "r"), [(40, 24, 5), (24, 40, 5)])
def test_reproject_is_warm_started_range_finder(m, n, r):
    side = choose_side((m, n))
    gen = torch.Generator().manual_seed(10)
    old = initial_projection(torch.randn(m, n, generator=gen), r, side)
    grad = torch.randn(m, n, generator=gen)
    new = reproject(grad, old, side)
    assert new.shape == old.shape and new.is_contiguous()
    torch.testing.assert_close(new, _official_orthogonal_matrix(grad, r, side, old), rtol=0, atol=1e-6)
    if side == "right":
        torch.testing.assert_close(new, range_finder(grad, old.T), rtol=0, atol=0)
    else:
        torch.testing.assert_close(new, range_finder(grad.T, old).T, rtol=0, atol=0)
    bad = grad.clone()
    bad[0, 0] = float("inf")
    assert reproject(bad, old, side) is old


# --------------------------------------------------------------------------------------------------------------------
# GaLore and Flora projections
# --------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("m", "n", "r"), [(30, 20, 4), (20, 30, 4)])
def test_svd_projection_is_top_singular_vectors(m, n, r):
    side = choose_side((m, n))
    gen = torch.Generator().manual_seed(14)
    k = min(m, n)
    u, _ = torch.linalg.qr(torch.randn(m, k, generator=gen, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(n, k, generator=gen, dtype=torch.float64))
    singular = torch.linspace(10.0, 1.0, k, dtype=torch.float64)
    grad = u @ torch.diag(singular) @ v.T
    out = svd_projection(grad, r, side)
    expected = v[:, :r].T if side == "right" else u[:, :r]
    # Singular vectors are defined up to sign.
    dims = 1 if side == "right" else 0
    signs = torch.sign((out * expected).sum(dim=dims, keepdim=True))
    torch.testing.assert_close(out * signs, expected, rtol=0, atol=1e-10)
    # fp32 input gives the same vectors to fp32 accuracy.
    out32 = svd_projection(grad.float(), r, side)
    torch.testing.assert_close((out32 * signs.float()).double(), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("side", ["right", "left"])
def test_random_projection_seeded_and_scaled(side):
    shape, r = (300, 200), 50
    first = random_projection(shape, r, side, seed=1, dtype=torch.float32)
    assert first.shape == ((r, 200) if side == "right" else (300, r))
    assert torch.equal(first, random_projection(shape, r, side, seed=1))
    other = random_projection(shape, r, side, seed=2)
    assert not torch.allclose(first, other)
    # Entries ~ N(0, 1/r): E[back(project(X))] = X.
    torch.testing.assert_close(first.square().mean(), torch.tensor(1.0 / r), rtol=0.05, atol=0)
    half = random_projection(shape, r, side, seed=1, dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16
    assert torch.equal(half, first.to(torch.bfloat16))
