"""Installed-wheel smoke check: ``python -m humananim.smoke`` (or ``humananim smoke``) exits 0 when the tiny pipeline
animates end to end.

It builds the tiny random pipeline (``humananim.config.tiny_config``: non-square 64 x 48 frames, windows of 3 with
overlap 1), makes the hint of a 4-frame scripted dance of a template skeleton (skeleton + hand motion-blur channels),
animates a random reference with it, checks the frames' shape and range and that the hands' sharpness channel reads
"sharp", and checks that a ``save_pretrained`` / ``from_pretrained`` round trip reproduces the animation. No download,
no keypoint model.
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from genblocks.smoke import SmokeError, check_save_load, output_tensor, run_smoke

__all__ = ["SmokeError", "main", "run_checks"]

NUM_FRAMES = 4


def run_checks() -> list[str]:
    """Run the checks; return one line per passed check, raise `SmokeError` at the first failure."""
    from humananim.config import tiny_config
    from humananim.keypoints import body_template, scripted_dance
    from humananim.pipeline import HumanAnimPipeline, driving_hints, load_pipeline, sampling_options

    config = tiny_config()
    height, width = config.model.height, config.model.width
    angles = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    face = np.stack([width / 2 + 0.06 * width * np.cos(angles), 0.12 * height + 0.05 * height * np.sin(angles)], 1)
    dance = scripted_dance(body_template(face, width, height), NUM_FRAMES)
    pose_images, blur_maps = driving_hints(dance, config)
    if blur_maps is None or tuple(blur_maps.shape) != (NUM_FRAMES, 3, height, width):
        raise SmokeError(f"the blur channels of the hint are missing or not (F, 3, {height}, {width})")
    reference = torch.rand(3, height, width, generator=torch.Generator().manual_seed(0))
    pipe = load_pipeline(config)
    pipe.set_progress_bar_config(disable=True)
    options = sampling_options(config)

    def animate(pipeline: HumanAnimPipeline) -> tuple[torch.Tensor, torch.Tensor]:
        output = pipeline(
            reference,
            pose_images=pose_images,
            blur_maps=blur_maps,
            generator=torch.Generator().manual_seed(1),
            output_type="pt",
            **options,
        )
        return output_tensor(output, "frames"), output_tensor(output, "hints")

    frames, hints = animate(pipe)
    expected = (NUM_FRAMES, 3, height, width)
    if tuple(frames.shape) != expected or not torch.isfinite(frames).all() or frames.min() < 0 or frames.max() > 1:
        raise SmokeError(f"the animation has shape {tuple(frames.shape)}, expected {expected} in [0, 1]")
    sharpness = hints[:, -1]
    if not (sharpness > 0).any() or not torch.all((sharpness == 0) | (sharpness == 1)):
        raise SmokeError("the hands' sharpness channel is not 1 on the hands and 0 elsewhere")
    passed = [
        f"{NUM_FRAMES} frames of {height}x{width} in windows of {config.sampling.window_size} "
        f"(overlap {config.sampling.window_overlap}), sharp-hand hint"
    ]
    passed.append(check_save_load(pipe, lambda loaded: animate(loaded)[0], frames, "animation"))
    return passed


def main() -> int:
    """Run :func:`run_checks`; report on stderr. Returns 0 when every check passed, 1 otherwise."""
    return run_smoke("humananim", run_checks)


if __name__ == "__main__":
    sys.exit(main())
