"""genblocks.gan.losses against closed forms and analytic gradients."""

from __future__ import annotations

import math

import pytest
import torch

from genblocks.gan.losses import (
    PathLengthRegularizer,
    discriminator_logistic_loss,
    generator_nonsaturating_loss,
    r1_penalty,
)
from genblocks.gan.stylegan2 import StyleGAN2Generator


def test_nonsaturating_and_logistic_losses_match_closed_forms() -> None:
    fake = torch.tensor([[-3.0], [0.0], [2.5]])
    real = torch.tensor([[1.0], [-0.5]])
    sigmoid = torch.sigmoid
    torch.testing.assert_close(generator_nonsaturating_loss(fake), -torch.log(sigmoid(fake)).mean())
    expected_d = -torch.log(1 - sigmoid(fake)).mean() - torch.log(sigmoid(real)).mean()
    torch.testing.assert_close(discriminator_logistic_loss(real, fake), expected_d)
    assert generator_nonsaturating_loss(torch.zeros(4, 1)).item() == pytest.approx(math.log(2))


def test_r1_equals_analytic_gradient_of_a_linear_discriminator() -> None:
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(3, 4, 4, generator=gen, requires_grad=True)
    x = torch.randn(2, 3, 4, 4, generator=gen).requires_grad_()
    logits = (x * a).sum(dim=(1, 2, 3)) + 0.5  # D(x) = <a, x> + b, so dD/dx = a for every sample
    penalty = r1_penalty(logits, x)
    torch.testing.assert_close(penalty, a.detach().square().sum().expand(2))
    # The penalty is differentiable (create_graph): d(sum_n |a|^2)/da = 2 N a.
    penalty.sum().backward()
    torch.testing.assert_close(a.grad, 4 * a.detach())


def test_r1_on_several_inputs_and_a_quadratic_discriminator() -> None:
    gen = torch.Generator().manual_seed(1)
    image = torch.randn(2, 3, 8, 8, generator=gen).requires_grad_()
    image_raw = torch.randn(2, 3, 4, 4, generator=gen).requires_grad_()
    b = torch.randn(3, 4, 4, generator=gen)
    # D = 0.5 |image|^2 + <b, image_raw>: gradients image and b.
    logits = 0.5 * image.square().sum(dim=(1, 2, 3)) + (image_raw * b).sum(dim=(1, 2, 3))
    penalty = r1_penalty(logits.unsqueeze(1), [image, image_raw])
    expected = image.detach().square().sum(dim=(1, 2, 3)) + b.square().sum()
    torch.testing.assert_close(penalty, expected)
    with pytest.raises(ValueError, match="must require grad"):
        r1_penalty(logits, torch.randn(2, 3, 8, 8))


def test_path_length_regularizer_matches_analytic_jacobian_and_tracks_the_mean() -> None:
    gen = torch.Generator().manual_seed(2)
    A = torch.randn(5, 2 * 4 * 4, generator=gen)  # linear generator: img = (sum_i ws_i) A
    ws = torch.randn(3, 4, 5, generator=gen).requires_grad_()
    images = (ws.sum(dim=1) @ A).reshape(3, 2, 4, 4)
    regularizer = PathLengthRegularizer(decay=0.01)
    torch.manual_seed(123)
    penalty = regularizer(images, ws)
    torch.manual_seed(123)
    y = torch.randn_like(images) / 4.0  # / sqrt(H * W)
    # d(sum(img * y))/d ws_i = A y for every i, so the length is |A y| per sample.
    lengths = (y.reshape(3, -1) @ A.T).norm(dim=1)
    pl_mean = 0.01 * lengths.mean()
    torch.testing.assert_close(regularizer.pl_mean, pl_mean)
    torch.testing.assert_close(penalty, (lengths - pl_mean).square())
    regularizer(images, ws)
    assert 0.01 * lengths.mean() < regularizer.pl_mean < 0.03 * lengths.mean()
    with pytest.raises(ValueError, match="ws must be part"):
        regularizer(images, ws.detach())


def test_path_length_regularizer_on_the_tiny_generator() -> None:
    torch.manual_seed(0)
    G = StyleGAN2Generator(32, 0, 32, 16, mapping_layers=2, channel_base=256, channel_max=16)
    ws = G.mapping(torch.randn(2, 32), None)
    penalty = PathLengthRegularizer()(G.synthesize(ws, noise_mode="const"), ws)
    assert penalty.shape == (2,) and torch.isfinite(penalty).all()
    penalty.mean().backward()
    assert G.synthesis.b16.conv1.weight.grad is not None
