"""CoapAdafactor: HF Adafactor arithmetic (relative_step=False), in full and in low rank."""

from __future__ import annotations

import math

import pytest
import torch
from coap_testing import TINY_PROJECTION, tiny_batches, tiny_model, train
from torch import nn

from coap_optim import CoapAdafactor
from coap_optim.projection import refresh_projection


def hf_adafactor_step(p, grad, state, *, lr, eps, clip_threshold, decay_rate, beta1, weight_decay, scale_parameter):
    """transformers.Adafactor.step for one tensor with relative_step=False, written out (fp32)."""
    state["step"] = state.get("step", 0) + 1
    factored = grad.dim() >= 2
    if "v" not in state:
        if factored:
            state["row"], state["col"] = (
                grad.new_zeros(grad.shape[:-1]),
                grad.new_zeros(grad.shape[:-2] + grad.shape[-1:]),
            )
        state["v"] = grad.new_zeros(grad.shape)
        state["m"] = grad.new_zeros(grad.shape)
    rms = lambda x: x.norm(2) / math.sqrt(x.numel())  # noqa: E731
    step_lr = lr * (max(eps[1], float(rms(p))) if scale_parameter else 1.0)
    beta2t = 1.0 - state["step"] ** decay_rate
    sq = grad**2 + eps[0]
    if factored:
        state["row"] = beta2t * state["row"] + (1 - beta2t) * sq.mean(dim=-1)
        state["col"] = beta2t * state["col"] + (1 - beta2t) * sq.mean(dim=-2)
        r = (state["row"] / state["row"].mean(dim=-1, keepdim=True)).rsqrt().unsqueeze(-1)
        c = state["col"].unsqueeze(-2).rsqrt()
        update = r * c * grad
    else:
        state["v"] = beta2t * state["v"] + (1 - beta2t) * sq
        update = state["v"].rsqrt() * grad
    update = update / (rms(update) / clip_threshold).clamp(min=1.0) * step_lr
    if beta1 is not None:
        state["m"] = beta1 * state["m"] + (1 - beta1) * update
        update = state["m"]
    return update, step_lr


@pytest.mark.parametrize("beta1", [None, 0.9])
@pytest.mark.parametrize(("weight_decay", "scale_parameter"), [(0.0, False), (0.01, True)])
def test_unprojected_matches_hf_adafactor(beta1, weight_decay, scale_parameter) -> None:
    batches = tiny_batches(6)
    ours, theirs = tiny_model(), tiny_model()
    hyper = {"lr": 1e-2, "eps": (1e-30, 1e-3), "clip_threshold": 1.0, "decay_rate": -0.8, "beta1": beta1}
    opt = CoapAdafactor(ours.parameters(), weight_decay=weight_decay, scale_parameter=scale_parameter, **hyper)
    train(ours, opt, batches)
    states: dict = {}
    for x, img, target in batches:
        theirs.zero_grad()
        theirs(x, img, target).backward()
        with torch.no_grad():
            for p in theirs.parameters():
                update, step_lr = hf_adafactor_step(
                    p,
                    p.grad,
                    states.setdefault(p, {}),
                    weight_decay=weight_decay,
                    scale_parameter=scale_parameter,
                    **hyper,
                )
                p.add_(p, alpha=-weight_decay * step_lr)
                p.add_(-update)
    for (name, a), b in zip(ours.named_parameters(), theirs.parameters()):
        assert torch.allclose(a, b, atol=1e-6, rtol=0), name
    assert float((ours.lin1.weight.detach() - tiny_model().lin1.weight.detach()).abs().max()) > 1e-3
    # Factored second moment for matrices / convolutions, unfactored for vectors.
    assert set(opt.state[ours.lin1.weight]) == {"step", "exp_avg_sq_row", "exp_avg_sq_col"} | (
        {"exp_avg"} if beta1 is not None else set()
    )
    assert "exp_avg_sq" in opt.state[ours.lin1.bias]


def range_finder(a, omega):
    q, _ = torch.linalg.qr(a @ omega)
    return torch.linalg.svd(q.T @ a, full_matrices=False).Vh


def test_projected_first_steps_match_low_rank_reference() -> None:
    """t=0 (initial range finder) and t=1: Adafactor on G @ P.T, update back-projected and scaled."""
    torch.manual_seed(0)
    weight = nn.Parameter(torch.randn(48, 20))  # RIGHT, r = 10
    reference = weight.detach().clone()
    opt = CoapAdafactor([weight], lr=1e-2, beta1=0.9, rank=10, scale=0.5, update_interval=4)
    grads = [torch.randn(48, 20) for _ in range(2)]
    omega = torch.randn(20, 10, generator=torch.Generator().manual_seed(3407))
    proj = range_finder(grads[0], omega)
    state: dict = {}
    hyper = {"lr": 1e-2, "eps": (1e-30, 1e-3), "clip_threshold": 1.0, "decay_rate": -0.8, "beta1": 0.9}
    for g in grads:
        weight.grad = g.clone()
        opt.step()
        update, _ = hf_adafactor_step(reference, g @ proj.T, state, weight_decay=0.0, scale_parameter=False, **hyper)
        reference -= 0.5 * (update @ proj)
        assert torch.allclose(weight.detach(), reference, atol=1e-6, rtol=0)
    assert opt.state[weight]["exp_avg_sq_row"].shape == (48,) and opt.state[weight]["exp_avg_sq_col"].shape == (10,)


def test_refresh_without_first_moment_uses_reconstruction_loss() -> None:
    """beta1=None: no M exists (the official code raises KeyError at the first refresh); here M = 0 is used."""
    torch.manual_seed(0)
    weight = nn.Parameter(torch.randn(40, 24))
    opt = CoapAdafactor([weight], lr=1e-2, rank=6, update_interval=2, reproject_factor=10, beta1=None, proj_lr=10.0)
    grads = [torch.randn(40, 24) for _ in range(3)]
    for g in grads[:2]:
        weight.grad = g.clone()
        opt.step()
    before = opt.state[weight]["P"].clone()
    weight.grad = grads[2].clone()
    opt.step()
    expected = refresh_projection(before, torch.zeros(40, 6), grads[2], "right", lr=10.0)
    assert not torch.allclose(before, expected, atol=1e-4)
    assert torch.allclose(opt.state[weight]["P"], expected, atol=1e-6)
    assert "exp_avg" not in opt.state[weight]


@pytest.mark.parametrize("beta1", [None, 0.9])
@pytest.mark.parametrize("restore_state", [False, True])
def test_projected_adafactor_decreases_regression_loss(beta1, restore_state) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.Tanh(), nn.Linear(64, 16))
    teacher = nn.Sequential(nn.Linear(32, 64), nn.Tanh(), nn.Linear(64, 16))
    x = torch.randn(256, 32)
    with torch.no_grad():
        y = teacher(x)
    opt = CoapAdafactor(
        model.parameters(),
        lr=3e-2,
        beta1=beta1,
        rank_ratio=2,
        update_interval=5,
        reproject_factor=2,
        restore_state=restore_state,
    )
    losses = []
    for _ in range(40):
        opt.zero_grad()
        loss = (model(x) - y).square().mean()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.5 * losses[0]
    assert opt.state[model[0].weight]["P"].shape == (16, 32)  # (64, 32) weight: RIGHT, P is (r, n)


def test_tiny_model_all_routes() -> None:
    model = tiny_model()
    opt = CoapAdafactor(model.parameters(), lr=1e-2, beta1=0.9, **TINY_PROJECTION)
    losses = train(model, opt, tiny_batches(6))
    assert losses[-1] < losses[0]
    conv = opt.state[model.conv.weight]
    assert conv["exp_avg"].shape == (45, 22, 3, 3)
    assert conv["exp_avg_sq_row"].shape == (45, 22, 3) and conv["exp_avg_sq_col"].shape == (45, 22, 3)
