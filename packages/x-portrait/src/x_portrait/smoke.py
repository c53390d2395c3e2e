"""Installed-wheel smoke check: ``python -m x_portrait.smoke`` exits 0 when the tiny pipeline works end to end.

It builds the tiny random pipeline (``x_portrait.config.tiny_config``), animates 3 frames with windows of 2 (overlap
1), 1 DDIM step and CFG, checks the output's shape and range, and checks that a ``save_pretrained`` /
``from_pretrained`` round trip reproduces the frames. No download, no face model.
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
    from x_portrait.config import tiny_config
    from x_portrait.pipeline_x_portrait import XPortraitPipeline, load_pipeline

    config = tiny_config()
    size = config.model.resolution
    pipe = load_pipeline(config)
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(0)
    source = torch.rand(3, size, size, generator=generator)
    driving = torch.rand(3, 3, size, size, generator=generator)
    options: dict[str, Any] = {
        "align_driving": False,
        "local_patches": False,
        "num_inference_steps": 1,
        "window_size": 2,
        "window_overlap": 1,
        "output_type": "pt",
    }
    frames = output_tensor(pipe(source, driving, generator=torch.Generator().manual_seed(1), **options), "frames")
    if tuple(frames.shape) != (3, 3, size, size):
        raise SmokeError(f"frames have shape {tuple(frames.shape)}, expected {(3, 3, size, size)}")
    if not torch.isfinite(frames).all() or float(frames.min()) < 0 or float(frames.max()) > 1:
        raise SmokeError("frames are not finite values in [0, 1]")
    passed = [f"3 frames of {size} px in [0, 1] from windows of 2 with overlap 1"]
    with tempfile.TemporaryDirectory() as folder:
        pipe.save_pretrained(folder)
        loaded = XPortraitPipeline.from_pretrained(folder)
        loaded.set_progress_bar_config(disable=True)
        again = output_tensor(loaded(source, driving, generator=torch.Generator().manual_seed(1), **options), "frames")
    if not torch.allclose(again, frames, atol=1e-4):
        raise SmokeError(f"save/load round trip changed the frames by {float((again - frames).abs().max()):.3g}")
    passed.append("save_pretrained / from_pretrained reproduces the frames")
    return passed


def main() -> int:
    """Run :func:`run_checks`; report on stderr. Returns 0 when every check passed, 1 otherwise."""
    return run_smoke("x-portrait", run_checks)


if __name__ == "__main__":
    sys.exit(main())
