"""Tests of coap_optim.tucker: HOOI, Tucker projections and the Tucker refresh step."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F

import coap_optim.projection as projection
from coap_optim.tucker import (
    hooi,
    tucker_back_project,
    tucker_correlation_loss,
    tucker_project,
    tucker_ranks,
    tucker_refresh,
)


def _orthonormal(rows: int, cols: int, gen: torch.Generator, dtype=torch.float32) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(rows, cols, generator=gen, dtype=torch.float64))
    return q.to(dtype)


def _relative_error(tensor: torch.Tensor, factors, modes) -> float:
    recon = tucker_back_project(tucker_project(tensor, factors, modes), factors, modes)
    return ((recon - tensor).norm() / tensor.norm()).item()


def _hosvd_reference(tensor: torch.Tensor, ranks, modes) -> list[torch.Tensor]:
    """Truncated HOSVD from full SVDs of the unfoldings (independent of the library's Gram/eigh route)."""
    factors = []
    for k, r in zip(modes, ranks):
        unfolding = torch.movedim(tensor, k, 0).reshape(tensor.shape[k], -1)
        u, _, _ = torch.linalg.svd(unfolding.double(), full_matrices=False)
        factors.append(u[:, :r].to(tensor.dtype))
    return factors


# --------------------------------------------------------------------------------------------------------------------
# An independent re-implementation of the official Tucker refresh (bytedance/coap,
# coap_torch/projection/coap_high_order_tensor.py `TuckerCOAP.update_proj`): einsum projections, autograd, one
# clip_grad_norm_ per factor, SGD.
# --------------------------------------------------------------------------------------------------------------------
def _official_tucker_update(factors, proj_exp_avg, grad, lr=0.1):
    factors = [f.clone().requires_grad_(True) for f in factors]
    with torch.enable_grad():
        if len(factors) == 2:
            exp_avg = torch.einsum("mncd, am, bn->abcd", proj_exp_avg, factors[0], factors[1])
            proj_grad = torch.einsum("abcd, am, bn->mncd", grad, factors[0], factors[1])
            proj_grad = torch.einsum("mncd, am, bn->abcd", proj_grad, factors[0], factors[1])
        else:
            exp_avg = torch.einsum("mbcd, am->abcd", proj_exp_avg, factors[0])
            proj_grad = torch.einsum("abcd, am->mbcd", grad, factors[0])
            proj_grad = torch.einsum("mbcd, am->abcd", proj_grad, factors[0])
        loss = F.mse_loss(proj_grad, grad)
        cosine_sim = F.cosine_similarity(exp_avg, grad, dim=1)
        loss = loss * (1 - cosine_sim.mean())
        loss.backward()
    out = []
    for f in factors:
        torch.nn.utils.clip_grad_norm_(f, max_norm=1.0)
        with torch.no_grad():
            f -= f.grad * lr
        out.append(f.detach())
    return out


def _refresh_problem(shape, ratio, seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    modes, ranks = tucker_ranks(shape, ratio)
    grad = torch.randn(shape, generator=gen)
    factors = [f + 0.05 * torch.randn(f.shape, generator=gen) for f in hooi(grad, ranks, modes, n_iter=2)]
    core_shape = list(shape)
    for k, r in zip(modes, ranks):
        core_shape[k] = r
    exp_avg_core = torch.randn(core_shape, generator=gen)
    return modes, [f.to(dtype) for f in factors], exp_avg_core.to(dtype), grad.to(dtype)


# --------------------------------------------------------------------------------------------------------------------
# ranks and projections
# --------------------------------------------------------------------------------------------------------------------
def test_tucker_ranks_follow_official_rule():
    assert tucker_ranks((64, 32, 3, 3), 2) == ([0, 1], [45, 22])  # s // sqrt(2)
    assert tucker_ranks(torch.Size([64, 32, 3, 3]), 4) == ([0, 1], [32, 16])
    assert tucker_ranks((64, 32, 3, 3), 1.5) == ([0, 1], [52, 26])
    assert tucker_ranks((64, 8, 1, 1), 2) == ([0], [32])  # 1x1: mode 0 only, C_out // ratio
    assert tucker_ranks((64, 8, 1, 1), 1.5) == ([0], [42])
    assert tucker_ranks((64, 3, 7, 7), 16) == ([0, 1], [16, 1])  # never below 1
    assert tucker_ranks((8, 8, 3, 3), 0.5) == ([0, 1], [8, 8])  # capped at the mode size
    with pytest.raises(ValueError):
        tucker_ranks((8, 8, 3), 2)
    with pytest.raises(ValueError):
        tucker_ranks((8, 8, 3, 3), 0)


def test_tucker_project_matches_official_einsum():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(12, 10, 3, 3, generator=gen)
    u0, u1 = _orthonormal(12, 5, gen), _orthonormal(10, 4, gen)
    core = tucker_project(x, [u0, u1], [0, 1])
    assert core.shape == (5, 4, 3, 3)
    torch.testing.assert_close(core, torch.einsum("abcd, am, bn->mncd", x, u0, u1), rtol=1e-5, atol=1e-5)
    back = tucker_back_project(core, [u0, u1], [0, 1])
    assert back.shape == x.shape
    torch.testing.assert_close(back, torch.einsum("mncd, am, bn->abcd", core, u0, u1), rtol=1e-5, atol=1e-5)
    core0 = tucker_project(x, [u0], [0])
    torch.testing.assert_close(core0, torch.einsum("abcd, am->mbcd", x, u0), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        tucker_back_project(core0, [u0], [0]), torch.einsum("mbcd, am->abcd", core0, u0), rtol=1e-5, atol=1e-5
    )
    with pytest.raises(ValueError):
        tucker_project(x, [u0, u1], [0])
    with pytest.raises(ValueError):
        tucker_project(x, [u0, u1], [0, 0])


# --------------------------------------------------------------------------------------------------------------------
# HOOI
# --------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("shape", "ranks", "modes"), [((16, 12, 3, 3), [5, 4], [0, 1]), ((20, 9, 1, 1), [5], [0])])
def test_hooi_recovers_exact_low_multilinear_rank(shape, ranks, modes):
    gen = torch.Generator().manual_seed(2)
    true_factors = [_orthonormal(shape[k], r, gen) for k, r in zip(modes, ranks)]
    core_shape = list(shape)
    for k, r in zip(modes, ranks):
        core_shape[k] = r
    tensor = tucker_back_project(torch.randn(core_shape, generator=gen), true_factors, modes)
    factors = hooi(tensor, ranks, modes)
    for k, factor, truth in zip(modes, factors, true_factors):
        assert factor.shape == (shape[k], truth.shape[1]) and factor.dtype == tensor.dtype
        torch.testing.assert_close(factor @ factor.T, truth @ truth.T, rtol=0, atol=1e-5)  # same subspace
    assert _relative_error(tensor, factors, modes) < 1e-5


def test_hooi_factors_orthonormal_and_not_worse_than_hosvd():
    gen = torch.Generator().manual_seed(3)
    # Low multilinear rank plus noise, so HOOI has something to improve on HOSVD.
    signal = tucker_back_project(
        torch.randn(6, 5, 3, 3, generator=gen), [_orthonormal(24, 6, gen), _orthonormal(20, 5, gen)], [0, 1]
    )
    tensor = signal + 0.3 * torch.randn(24, 20, 3, 3, generator=gen)
    ranks, modes = [8, 4], [0, 1]
    factors = hooi(tensor, ranks, modes)
    for factor, r in zip(factors, ranks):
        torch.testing.assert_close(factor.T @ factor, torch.eye(r), rtol=0, atol=1e-5)
    hosvd = _hosvd_reference(tensor, ranks, modes)
    hooi_error = _relative_error(tensor, factors, modes)
    hosvd_error = _relative_error(tensor, hosvd, modes)
    assert hooi_error <= hosvd_error + 1e-6
    assert hooi_error < hosvd_error - 1e-3  # the iterations do improve on HOSVD for this noisy tensor
    one_sweep = _relative_error(tensor, hooi(tensor, ranks, modes, n_iter=1), modes)
    assert hooi_error <= one_sweep + 1e-6
    assert 0.0 < hooi_error < 1.0


def test_hooi_without_iterations_is_truncated_hosvd():
    gen = torch.Generator().manual_seed(4)
    tensor = torch.randn(14, 10, 3, 3, generator=gen, dtype=torch.float64)
    ranks, modes = [5, 3], [0, 1]
    for factor, reference in zip(hooi(tensor, ranks, modes, n_iter=0), _hosvd_reference(tensor, ranks, modes)):
        torch.testing.assert_close(factor @ factor.T, reference @ reference.T, rtol=0, atol=1e-10)


def test_hooi_rank_above_projected_unfolding_width_gives_orthonormal_basis():
    """C_in so small that the projected mode-0 unfolding has fewer columns than r_0 (the basis is completed)."""
    gen = torch.Generator().manual_seed(5)
    tensor = torch.randn(40, 2, 2, 2, generator=gen)
    factors = hooi(tensor, [12, 1], [0, 1])
    torch.testing.assert_close(factors[0].T @ factors[0], torch.eye(12), rtol=0, atol=1e-5)
    with pytest.raises(ValueError):
        hooi(tensor, [41, 1], [0, 1])


def test_hooi_bf16_returns_bf16_and_non_finite_entries_count_as_zero():
    tensor = torch.randn(16, 12, 3, 3, generator=torch.Generator().manual_seed(6))
    factors = hooi(tensor.to(torch.bfloat16), [4, 3], [0, 1], n_iter=2)
    assert [f.dtype for f in factors] == [torch.bfloat16, torch.bfloat16]
    bad, clean = tensor.clone(), tensor.clone()
    bad[1, 2, 0, 0] = float("nan")
    clean[1, 2, 0, 0] = 0.0
    for a, b in zip(hooi(bad, [4, 3], [0, 1]), hooi(clean, [4, 3], [0, 1])):
        assert torch.equal(a, b)


# --------------------------------------------------------------------------------------------------------------------
# refresh
# --------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scale", [1.0, 10.0])  # factor gradient norms < 1 (no clipping) and > 1 (clipped)
@pytest.mark.parametrize(("shape", "ratio"), [((24, 16, 3, 3), 2.0), ((32, 8, 1, 1), 2.0), ((12, 20, 3, 1), 1.5)])
def test_tucker_refresh_matches_official_step(shape, ratio, scale):
    modes, factors, exp_avg_core, grad = _refresh_problem(shape, ratio, seed=sum(shape))
    grad = grad * scale
    work = [f.clone().requires_grad_(True) for f in factors]
    norms = [g.norm() for g in torch.autograd.grad(tucker_correlation_loss(work, exp_avg_core, grad, modes), work)]
    assert all((norm > 1.0) == (scale > 1.0) for norm in norms)
    ours = tucker_refresh(factors, exp_avg_core, grad, modes)
    ref = _official_tucker_update(factors, exp_avg_core, grad)
    assert len(ours) == len(ref) == len(modes)
    for new, expected, old in zip(ours, ref, factors):
        step = (expected - old).norm()
        assert step > 1e-3
        torch.testing.assert_close(new, expected, rtol=0, atol=1e-5 * expected.abs().max().item())
        assert (new - expected).norm() <= 1e-4 * step


def test_tucker_correlation_loss_cosine_over_input_channels():
    modes, factors, exp_avg_core, grad = _refresh_problem((16, 12, 3, 3), 2.0, seed=7)
    back = torch.einsum("mncd, am, bn->abcd", exp_avg_core, factors[0], factors[1])
    recon = torch.einsum(
        "mncd, am, bn->abcd", torch.einsum("abcd, am, bn->mncd", grad, factors[0], factors[1]), factors[0], factors[1]
    )
    cos = (back * grad).sum(1) / (back.norm(dim=1) * grad.norm(dim=1))  # (C_out, kh, kw)
    expected = (recon - grad).square().mean() * (1 - cos.mean())
    torch.testing.assert_close(
        tucker_correlation_loss(factors, exp_avg_core, grad, modes), expected, rtol=1e-5, atol=0
    )


def test_tucker_refresh_per_factor_clipping_and_small_step_descent():
    modes, factors, exp_avg_core, grad = _refresh_problem((24, 16, 3, 3), 2.0, seed=8)
    clipped = tucker_refresh(factors, exp_avg_core, grad, modes, lr=1.0, max_norm=1e-4)
    for new, old in zip(clipped, factors):  # each factor moves by max_norm on its own
        torch.testing.assert_close((new - old).norm(), torch.tensor(1e-4), rtol=1e-3, atol=0)
    small = tucker_refresh(factors, exp_avg_core, grad, modes, lr=1e-3)
    assert tucker_correlation_loss(small, exp_avg_core, grad, modes) < tucker_correlation_loss(
        factors, exp_avg_core, grad, modes
    )


def test_tucker_refresh_non_finite_and_dtypes(caplog):
    modes, factors, exp_avg_core, grad = _refresh_problem((16, 12, 3, 3), 2.0, seed=9)
    bad = grad.clone()
    bad[0, 0, 0, 0] = float("nan")
    projection._warn_once.cache_clear()
    with caplog.at_level(logging.WARNING):
        out = tucker_refresh(factors, exp_avg_core, bad, modes)
    assert all(new is old for new, old in zip(out, factors))
    assert any("non-finite gradient in tucker_refresh" in rec.message for rec in caplog.records)

    copies = [f.clone() for f in factors]
    modes16, factors16, core16, grad16 = _refresh_problem((16, 12, 3, 3), 2.0, seed=9, dtype=torch.bfloat16)
    out16 = tucker_refresh(factors16, core16, grad16, modes16)
    assert [f.dtype for f in out16] == [torch.bfloat16] * 2
    expected = tucker_refresh([f.float() for f in factors16], core16.float(), grad16.float(), modes16)
    for a, b in zip(out16, expected):
        assert torch.equal(a, b.to(torch.bfloat16))
    tucker_refresh(factors, exp_avg_core, grad, modes)
    assert all(torch.equal(f, c) for f, c in zip(factors, copies))  # inputs untouched
