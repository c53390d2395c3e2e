"""Installed-wheel smoke check: ``python -m agilegan3d.smoke`` exits 0 when the tiny style pipeline works: encode a
face, render 3 views of the right shape, a style folder round trip, and one guided-transfer loss that is finite and
differentiable. No download, no training run.
"""

from __future__ import annotations

import sys
import tempfile

import torch

from genblocks.smoke import SmokeError, run_smoke

__all__ = ["SmokeError", "main", "run_checks"]


def run_checks() -> list[str]:
    """Run the checks; one line per passed check; raises `SmokeError` at the first failure."""
    from agilegan3d.config import load_preset
    from agilegan3d.demo import random_pipeline
    from agilegan3d.modeling_agilegan3d import paired_guidance_loss
    from agilegan3d.pipeline_agilegan3d import AgileGAN3DPipeline

    config = load_preset("tiny")
    pipe = random_pipeline(config)
    size = config.g3d.img_resolution
    image = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    out = pipe(image)
    expected = (1, config.inference.views, 3, size, size)
    if tuple(out.images.shape) != expected or not torch.isfinite(out.images).all():
        raise SmokeError(f"renders have shape {tuple(out.images.shape)}, expected finite {expected}")
    passed = [f"{config.inference.views} stylised views of {size} px"]
    with tempfile.TemporaryDirectory() as folder:
        pipe.save_pretrained(folder)
        again = AgileGAN3DPipeline.from_pretrained(folder)(image)
    if not torch.equal(again.images, out.images):
        raise SmokeError("the style folder round trip changed the renders")
    passed.append("style folder save / load reproduces the renders")
    rendered = out.images[:, 0].clone().requires_grad_(True)
    loss, _ = paired_guidance_loss(rendered, torch.zeros_like(rendered))
    loss.backward()
    if not torch.isfinite(loss) or rendered.grad is None or not rendered.grad.abs().sum() > 0:
        raise SmokeError("the paired guidance loss is not finite and differentiable")
    passed.append("paired guidance loss is finite with a gradient")
    return passed


def main() -> int:
    """Exit status 0 when every check passed."""
    return run_smoke("agilegan3d", run_checks)


if __name__ == "__main__":
    sys.exit(main())
