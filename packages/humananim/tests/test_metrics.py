"""Evaluation: L1/PSNR/SSIM on identical and perturbed frames, LPIPS's structure and weight loading, the Fréchet
distance against a closed form, and the notes when weights or extractors are missing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from genblocks.errors import InputError
from humananim.metrics import LPIPS, evaluate, frechet_distance, load_extractor


def frames(seed: int = 0, count: int = 4) -> torch.Tensor:
    return torch.rand(count, 3, 32, 24, generator=torch.Generator().manual_seed(seed))


def test_image_metrics_and_notes_without_weights() -> None:
    real = frames()
    same = evaluate(real, real)
    assert same.l1 == 0 and same.ssim == pytest.approx(1.0) and same.psnr > 80
    noisy = (real + 0.05 * torch.randn(real.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    result = evaluate(noisy, real)
    print(f"noise 0.05: L1 {result.l1:.4f}, PSNR {result.psnr:.2f} dB, SSIM {result.ssim:.4f}")
    assert 0.02 < result.l1 < 0.05 and 24 < result.psnr < 28 and result.ssim < 0.99
    assert result.lpips is None and result.fid is None and result.fvd is None
    assert [note.split(" ")[0] for note in result.notes] == ["LPIPS", "FID", "FVD"]
    with pytest.raises(InputError, match="one shape"):
        evaluate(real, real[:2])


def test_lpips_is_zero_on_identical_images_and_loads_both_weight_files(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = LPIPS()
    vgg = {f"features.{k}": v for k, v in source.features.state_dict().items()}
    vgg["classifier.0.weight"] = torch.zeros(1)  # torchvision's extra keys are ignored
    lin = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1) for k, c in enumerate((64, 128, 256, 512, 512))}
    torch.save(vgg, tmp_path / "vgg16.pth")
    torch.save(lin, tmp_path / "vgg.pth")
    torch.manual_seed(1)
    model = LPIPS().load(tmp_path / "vgg16.pth", tmp_path / "vgg.pth")
    assert torch.equal(model.features[0].weight, source.features[0].weight)
    assert torch.equal(model.lins[4].weight, lin["lin4.model.1.weight"])
    x = frames(0, 2) * 2 - 1
    y = frames(1, 2) * 2 - 1
    assert torch.allclose(model(x, x), torch.zeros(2), atol=1e-6)
    d = model(x, y)
    assert (d > 0).all() and torch.allclose(d, model(y, x), rtol=1e-5)
    result = evaluate(frames(0), frames(1), lpips=model)
    assert result.lpips is not None and result.lpips > 0 and len(result.notes) == 2
    with pytest.raises(InputError, match="--lpips-weights"):
        LPIPS().load(tmp_path / "vgg16.pth", tmp_path / "vgg16.pth")


def test_frechet_distance_matches_the_closed_form_for_diagonal_gaussians() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, (20000, 3)) * [1.0, 2.0, 0.5]
    b = rng.normal(1, 1, (20000, 3)) * [2.0, 1.0, 0.5] + [1.0, 0.0, 0.0]
    mu_a, mu_b = a.mean(0), b.mean(0)
    sa, sb = a.std(0, ddof=1), b.std(0, ddof=1)
    closed = ((mu_a - mu_b) ** 2).sum() + ((sa - sb) ** 2).sum()  # diagonal covariances: sum (s_a - s_b)^2
    assert frechet_distance(a, b) == pytest.approx(closed, rel=0.02)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_fid_and_fvd_through_torchscript_extractors(tmp_path: Path) -> None:
    class Frame(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean((2, 3))

    class Clip(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean((2, 3, 4))

    torch.jit.script(Frame()).save(str(tmp_path / "frame.pt"))
    torch.jit.script(Clip()).save(str(tmp_path / "clip.pt"))
    fid = load_extractor(tmp_path / "frame.pt", "--fid-extractor")
    fvd = load_extractor(tmp_path / "clip.pt", "--fvd-extractor")
    real = frames(0, 8)
    same = evaluate(real, real, fid_extractor=fid, fvd_extractor=fvd, clip_length=4)
    assert same.fid == pytest.approx(0.0, abs=1e-9) and same.fvd == pytest.approx(0.0, abs=1e-9)
    darker = evaluate(real * 0.5, real, fid_extractor=fid, fvd_extractor=fvd, clip_length=4)
    assert darker.fid is not None and darker.fid > 0.1 and darker.fvd is not None and darker.fvd > 0.1
    assert evaluate(real, real, fvd_extractor=fvd, clip_length=16).fvd is None  # too few clips: a note instead
    with pytest.raises(InputError, match=r"--fid-extractor .*no such"):
        load_extractor(tmp_path / "missing.pt", "--fid-extractor")
