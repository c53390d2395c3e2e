"""Installed-wheel smoke check: ``python -m omniavatar.smoke`` exits 0 when the tiny generator renders end to end.

It loads the shipped ``tiny`` config, renders two heads (images, depth, mask), checks that changing only the
expression changes the image with the styles fixed, and that a ``save_pretrained`` / ``from_pretrained`` round trip
reproduces the images. No download, no FLAME file.
"""

from __future__ import annotations

import sys
import tempfile
from importlib import resources

import torch

from genblocks.smoke import SmokeError, run_smoke

__all__ = ["SmokeError", "main", "run_checks"]


def run_checks() -> list[str]:
    """Run the checks; return one line per passed check, raise `SmokeError` at the first failure."""
    from genblocks.config import load_config
    from omniavatar.config import OmniAvatarConfig
    from omniavatar.pipeline_omniavatar import OmniAvatarPipeline

    config = load_config(OmniAvatarConfig, str(resources.files("omniavatar") / "configs" / "tiny.yaml"))
    pipeline = OmniAvatarPipeline.from_config(config)
    size = config.generator.img_resolution
    out = pipeline([0, 1])
    if tuple(out.images.shape) != (2, 3, size, size) or not torch.isfinite(out.images).all():
        raise SmokeError(f"images have shape {tuple(out.images.shape)}, expected (2, 3, {size}, {size}) finite")
    if out.mask.min() < -0.01 or out.mask.max() > 1.01:
        raise SmokeError("the mask is outside [0, 1]")
    passed = [f"two {size}-px heads with depth and mask"]
    layout = config.flame
    expression = pipeline.features(expression=torch.full((layout.expression,), 1.5))
    ws = out.ws[:1]
    cameras = pipeline.cameras(0.0, 0.0)
    neutral = pipeline.render(ws, pipeline.labels(cameras, torch.zeros(1, layout.feature_dim))).images
    changed = pipeline.render(ws, pipeline.labels(cameras, expression)).images
    if not (neutral - changed).abs().mean() > 1e-4:
        raise SmokeError("changing the expression with ws fixed left the image unchanged")
    passed.append("the expression changes the image with ws fixed")
    with tempfile.TemporaryDirectory() as folder:
        pipeline.save_pretrained(folder)
        again = OmniAvatarPipeline.from_pretrained(folder)([0, 1])
    if not torch.equal(again.images, out.images):
        raise SmokeError("save_pretrained / from_pretrained changed the images")
    passed.append("weights folder round trip is exact")
    return passed


def main() -> int:
    """Run the checks; exit status 0 when all passed."""
    return run_smoke("omniavatar", run_checks)


if __name__ == "__main__":
    sys.exit(main())
