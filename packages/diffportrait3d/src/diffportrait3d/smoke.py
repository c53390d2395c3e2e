"""Installed-wheel smoke check: ``python -m diffportrait3d.smoke`` exits 0 when the tiny pipeline works end to end.

It builds the tiny random pipeline, renders 2 views from condition images with 1 DDIM step and CFG, checks shape and
range, and checks that a ``save_pretrained`` / ``from_pretrained`` round trip reproduces the views. No download.
"""

from __future__ import annotations

import sys
import tempfile
from typing import Any

import torch

from genblocks.smoke import SmokeError, output_tensor, run_smoke

__all__ = ["SmokeError", "main", "run_checks"]


def run_checks() -> list[str]:
    """Run the checks; return one line per passed check, raise `SmokeError` at the first failure."""
    from diffportrait3d.config import tiny_config
    from diffportrait3d.pipeline_diffportrait3d import DiffPortrait3DPipeline, load_pipeline

    config = tiny_config()
    size = config.model.resolution
    pipe = load_pipeline(config)
    gen = torch.Generator().manual_seed(0)
    portrait = torch.rand(3, size, size, generator=gen)
    conditions = torch.rand(2, 3, size, size, generator=gen)
    options: dict[str, Any] = {"num_inference_steps": 1, "output_type": "pt", "noise_prior": "source"}
    views = output_tensor(
        pipe(portrait, condition_images=conditions, generator=torch.Generator().manual_seed(1), **options), "images"
    )
    if tuple(views.shape) != (2, 3, size, size):
        raise SmokeError(f"views have shape {tuple(views.shape)}, expected {(2, 3, size, size)}")
    if not torch.isfinite(views).all() or float(views.min()) < 0 or float(views.max()) > 1:
        raise SmokeError("views are not finite values in [0, 1]")
    passed = [f"2 views of {size} px in [0, 1]"]
    with tempfile.TemporaryDirectory() as folder:
        pipe.save_pretrained(folder)
        loaded = DiffPortrait3DPipeline.from_pretrained(folder)
        loaded.set_progress_bar_config(disable=True)
        again = output_tensor(
            loaded(portrait, condition_images=conditions, generator=torch.Generator().manual_seed(1), **options),
            "images",
        )
    if not torch.allclose(again, views, atol=1e-4):
        raise SmokeError(f"save/load round trip changed the views by {float((again - views).abs().max()):.3g}")
    passed.append("save_pretrained / from_pretrained reproduces the views")
    return passed


def main() -> int:
    """Run :func:`run_checks`; report on stderr. Returns 0 when every check passed, 1 otherwise."""
    return run_smoke("diffportrait3d", run_checks)


if __name__ == "__main__":
    sys.exit(main())
