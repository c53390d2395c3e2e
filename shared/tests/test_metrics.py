"""Tests for genblocks.metrics: PSNR, SSIM, L1 and identity similarity against closed forms and scikit-image; FID /
KID; the TorchScript feature extractor loader."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from genblocks.errors import InputError
from genblocks.metrics import (
    extract_features,
    frechet_distance,
    gaussian_window,
    identity_similarity,
    kernel_inception_distance,
    l1,
    load_feature_extractor,
    psnr,
    ssim,
)


def _astronaut_batch() -> torch.Tensor:
    data = pytest.importorskip("skimage.data")
    image = torch.from_numpy(data.astronaut()[::4, ::4].copy()).permute(2, 0, 1).double() / 255.0
    return image[None]  # (1, 3, 128, 128) in [0, 1]


def test_psnr_identical_is_inf() -> None:
    x = torch.rand(2, 3, 16, 16)
    assert torch.isinf(psnr(x, x)).all()


def test_psnr_matches_formula_for_known_noise() -> None:
    x = torch.full((2, 3, 32, 32), 0.5)
    sign = torch.where(torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) < 0.5, -1.0, 1.0)
    sigma = torch.tensor([0.01, 0.1]).view(2, 1, 1, 1)
    y = x + sign * sigma  # every pixel off by exactly sigma: MSE = sigma²
    expected = 10 * torch.log10(1.0 / torch.tensor([0.01, 0.1]) ** 2)  # 40 dB and 20 dB
    torch.testing.assert_close(psnr(y, x), expected.float(), atol=1e-4, rtol=0)
    torch.testing.assert_close(psnr(2 * y - 1, 2 * x - 1, data_range=2.0), expected.float(), atol=1e-4, rtol=0)


def test_ssim_identical_is_one_and_falls_with_noise() -> None:
    x = _astronaut_batch()
    torch.testing.assert_close(ssim(x, x), torch.ones(1))
    generator = torch.Generator().manual_seed(0)
    scores = [
        ssim((x + s * torch.randn(x.shape, generator=generator, dtype=x.dtype)).clamp(0, 1), x).item()
        for s in (0.02, 0.05, 0.1, 0.2)
    ]
    assert all(a > b for a, b in itertools.pairwise(scores))
    assert scores[0] < 1.0


def test_ssim_matches_skimage() -> None:
    metrics = pytest.importorskip("skimage.metrics")
    x = _astronaut_batch()
    generator = torch.Generator().manual_seed(0)
    y = (x + 0.08 * torch.randn(x.shape, generator=generator, dtype=x.dtype)).clamp(0, 1)
    reference = metrics.structural_similarity(
        x[0].permute(1, 2, 0).numpy(),
        y[0].permute(1, 2, 0).numpy(),
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=1.0,
        channel_axis=-1,
    )
    assert abs(ssim(x, y).item() - reference) < 1e-3
    batch = ssim(torch.cat([x, x]), torch.cat([y, x]))
    assert batch.shape == (2,) and abs(batch[0].item() - reference) < 1e-3 and batch[1].item() == pytest.approx(1.0)


def test_gaussian_window() -> None:
    window = gaussian_window(11, 1.5, torch.float64)
    assert window.sum().item() == pytest.approx(1.0)
    assert window[5] / window[4] == pytest.approx(math.exp(1 / (2 * 1.5**2)))


def test_l1_and_identity_similarity() -> None:
    x = torch.zeros(2, 1, 4, 4)
    y = torch.stack([torch.full((1, 4, 4), 0.25), torch.full((1, 4, 4), -1.0)])
    torch.testing.assert_close(l1(x, y), torch.tensor([0.25, 1.0]))
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    torch.testing.assert_close(identity_similarity(a, torch.tensor([1.0, 0.0])), torch.tensor([1.0, 0.0, 2**-0.5]))
    torch.testing.assert_close(identity_similarity(a, -a), -torch.ones(3))


def test_shape_errors() -> None:
    with pytest.raises(ValueError, match="same shape"):
        psnr(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 9))
    with pytest.raises(ValueError, match="window_size"):
        ssim(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="x"):
        identity_similarity(torch.zeros(3), torch.zeros(3))
    assert np.isfinite(psnr(torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2)).item())


def test_weighted_psnr_and_ssim_measure_only_the_weighted_pixels() -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 32, 32, generator=generator, dtype=torch.float64)
    y = x.clone()
    y[:, :, :, 16:] = torch.rand(2, 3, 32, 16, generator=generator, dtype=torch.float64)  # right half differs
    left = torch.zeros(2, 1, 32, 32)
    left[..., :16] = 1.0
    assert torch.isinf(psnr(x, y, weight=left)).all()
    # the weighted MSE over the right half equals the plain MSE of the right half
    right = 1.0 - left
    torch.testing.assert_close(psnr(x, y, weight=right), psnr(x[..., 16:], y[..., 16:]))
    # SSIM: weight 1 everywhere is the plain SSIM; the left half (window centres away from the edit) is 1
    torch.testing.assert_close(ssim(x, y, weight=torch.ones(2, 32, 32)), ssim(x, y))
    far_left = torch.zeros(2, 32, 32)
    far_left[:, :, :8] = 1.0  # centres at columns 5..7 see only unchanged columns 0..12
    torch.testing.assert_close(ssim(x, y, weight=far_left), torch.ones(2))
    assert (ssim(x, y, weight=right) < 0.2).all()
    with pytest.raises(ValueError, match="weight"):
        psnr(x, y, weight=torch.ones(2, 3, 32, 32))


def test_frechet_distance_equals_the_matrix_square_root_form() -> None:
    from scipy import linalg

    rng = np.random.default_rng(0)
    real = rng.normal(size=(200, 6)) @ rng.normal(size=(6, 6))
    fake = rng.normal(size=(150, 6)) @ rng.normal(size=(6, 6)) + 0.5
    cov_r, cov_f = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    root = linalg.sqrtm(cov_r @ cov_f).real
    expected = ((real.mean(0) - fake.mean(0)) ** 2).sum() + np.trace(cov_r + cov_f - 2 * root)
    assert frechet_distance(real, fake) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(torch.from_numpy(real).float(), torch.from_numpy(real).float()) == pytest.approx(
        0, abs=1e-4
    )
    assert frechet_distance(real, real + 1.0) == pytest.approx(6.0, rel=1e-9)


def test_kernel_inception_distance_is_the_unbiased_mmd() -> None:
    rng = np.random.default_rng(1)
    real, fake = rng.normal(size=(40, 3)), rng.normal(size=(30, 3)) + 1.0

    def kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return (x @ y.T / 3 + 1) ** 3

    terms = [kernel(real, real), kernel(fake, fake)]
    same = sum((k.sum() - np.trace(k)) / (len(k) * (len(k) - 1)) for k in terms)
    assert kernel_inception_distance(real, fake) == pytest.approx(same - 2 * kernel(real, fake).mean(), rel=1e-9)
    assert abs(kernel_inception_distance(real, rng.normal(size=(40, 3)), subsets=20, subset_size=20)) < 0.5
    assert kernel_inception_distance(real, fake, subsets=20, subset_size=20) > 1.0


def test_feature_distances_name_a_bad_shape() -> None:
    with pytest.raises(ValueError, match=r"features: expected \(N, D\) and \(M, D\) with N, M >= 2"):
        frechet_distance(np.zeros((5, 3)), np.zeros((5, 4)))
    with pytest.raises(ValueError, match="features"):
        kernel_inception_distance(np.zeros((1, 3)), np.zeros((5, 3)))


class _PooledConv(torch.nn.Module):
    """A tiny extractor: 3x3 conv to 5 channels, global average pool -> (N, 5)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean((2, 3))


def test_load_feature_extractor_runs_a_scripted_module_in_batches(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = _PooledConv()
    torch.jit.script(module).save(str(tmp_path / "features.pt"))
    extractor = load_feature_extractor(tmp_path / "features.pt", "--features")
    assert isinstance(extractor, torch.nn.Module) and not extractor.training
    assert not any(p.requires_grad for p in extractor.parameters())
    images = torch.rand(7, 3, 8, 8) * 2 - 1
    features = extract_features(extractor, images, batch_size=3)  # batches of 3, 3, 1
    assert features.shape == (7, 5) and features.dtype == np.float64
    with torch.no_grad():
        expected = module(images).double().numpy()
    np.testing.assert_allclose(features, expected, atol=1e-6)


def test_load_feature_extractor_names_the_option_for_a_missing_or_wrong_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"^--features .*missing\.pt: no such file"):
        load_feature_extractor(tmp_path / "missing.pt", "--features")
    (tmp_path / "text.pt").write_text("not a network")
    with pytest.raises(InputError, match=r"^--features .*text\.pt: not a TorchScript file"):
        load_feature_extractor(tmp_path / "text.pt", "--features")
    torch.save({"weight": torch.ones(2)}, tmp_path / "state.pt")  # a zip archive, but a state dict
    with pytest.raises(InputError, match=r"^eval\.features .*state\.pt: not a TorchScript file"):
        load_feature_extractor(tmp_path / "state.pt", "eval.features")


def test_extract_features_rejects_a_wrong_row_count_and_non_finite_features() -> None:
    images = torch.rand(4, 3, 4, 4)
    with pytest.raises(InputError, match=r"expected \(2, D\) features"):
        extract_features(lambda x: x.flatten()[:5], images, batch_size=2)
    with pytest.raises(InputError, match="non-finite"):
        extract_features(lambda x: x.flatten(1) / 0.0 * 0.0, images)
    assert extract_features(lambda x: x, images, batch_size=4).shape == (4, 48)  # (N, ...) is flattened to (N, D)
