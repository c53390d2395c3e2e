"""Style metrics: FID / KID against closed forms, multi-view identity consistency, and ``agilegan3d eval``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from agilegan3d.cli import main
from agilegan3d.evaluation import frechet_distance, kernel_inception_distance, multiview_identity_consistency
from genblocks.media import write_image


def test_frechet_distance_closed_forms() -> None:
    a = torch.randn(4000, 3, generator=torch.Generator().manual_seed(0))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    shift = torch.tensor([1.0, -2.0, 0.5])
    assert frechet_distance(a, a + shift) == pytest.approx(float(shift.square().sum()), rel=1e-6)
    # N(0, I) vs N(0, 4I): Tr(I + 4I - 2 * 2I) = d
    b = torch.randn(4000, 3, generator=torch.Generator().manual_seed(1)) * 2
    assert frechet_distance(a, b) == pytest.approx(3.0, rel=0.15)


def test_kid_near_zero_for_one_distribution_positive_for_two() -> None:
    rng = torch.Generator().manual_seed(0)
    a, b = torch.randn(300, 8, generator=rng), torch.randn(300, 8, generator=rng)
    same, different = kernel_inception_distance(a, b), kernel_inception_distance(a, b + 1.0)
    assert abs(same) < 0.05 and different > 10 * max(abs(same), 1e-3)


def test_multiview_identity_is_one_for_identical_views() -> None:
    embed = lambda x: x.flatten(1)  # noqa: E731
    views = torch.rand(2, 1, 3, 4, 4).expand(2, 3, 3, 4, 4)
    assert torch.allclose(multiview_identity_consistency(embed, views), torch.ones(2))
    assert float(multiview_identity_consistency(embed, torch.rand(2, 3, 3, 4, 4) - 0.5).mean()) < 0.9


class _Pool(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.adaptive_avg_pool2d(x, 2).flatten(1)


def test_eval_command_writes_metrics(tmp_path: Path) -> None:
    for folder, count in (("photos", 2), ("styles", 3)):
        for k in range(count):
            rng = np.random.default_rng(k)
            write_image(tmp_path / folder / f"{k}.png", rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))
    network = tmp_path / "pool.ts"
    torch.jit.save(torch.jit.script(_Pool()), str(network))
    argv = ["eval", "--images", str(tmp_path / "photos"), "--exemplars", str(tmp_path / "styles")]
    argv += ["--identity", str(network), "--features", str(network), "--out", str(tmp_path / "out")]
    assert main([*argv, "--set", "inference.camera_from=frontal"]) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["photos"] == 2 and metrics["exemplars"] == 3
    assert -1 <= metrics["identity_similarity"] <= 1 and -1 <= metrics["multiview_identity"] <= 1
    assert metrics["fid"] >= 0 and np.isfinite(metrics["kid"])
