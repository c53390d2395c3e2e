"""Installed-wheel smoke check: ``python -m portrait_edit.smoke`` exits 0 when the tiny pipeline edits end to end.

It builds the tiny random pipeline (``portrait_edit.config.tiny_config``), edits a random 64-px portrait with the edit
mask on, checks the edit's and the mask's shapes and ranges, and checks that a ``save_pretrained`` / ``from_pretrained``
round trip reproduces the edit. No download, no face model.
"""

from __future__ import annotations

import sys

import torch

from genblocks.smoke import SmokeError, check_save_load, run_smoke

__all__ = ["SmokeError", "main", "run_checks"]


def run_checks() -> list[str]:
    """Run the checks; return one line per passed check, raise `SmokeError` at the first failure."""
    from portrait_edit.config import tiny_config
    from portrait_edit.pipeline_portrait_edit import (
        PortraitEditPipeline,
        PortraitEditPipelineOutput,
        load_pipeline,
        sampling_options,
    )

    config = tiny_config()
    size = config.model.resolution
    pipe = load_pipeline(config)
    pipe.set_progress_bar_config(disable=True)
    source = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    options = sampling_options(config)

    def edit(pipeline: PortraitEditPipeline) -> tuple[torch.Tensor, torch.Tensor | None]:
        output = pipeline(
            source,
            "a man, santa claus costume",
            source_prompt="a man",
            generator=torch.Generator().manual_seed(1),
            output_type="pt",
            **options,
        )
        if not isinstance(output, PortraitEditPipelineOutput) or not isinstance(output.images, torch.Tensor):
            raise SmokeError(f"output_type='pt' gave {type(output).__name__}, expected tensors")
        return output.images, output.masks

    images, masks = edit(pipe)
    if tuple(images.shape) != (1, 3, size, size) or not torch.isfinite(images).all():
        raise SmokeError(f"the edit has shape {tuple(images.shape)}, expected {(1, 3, size, size)} finite values")
    if masks is None or tuple(masks.shape) != (1, 1, size // 8, size // 8) or masks.min() < 0 or masks.max() > 1:
        raise SmokeError("the edit mask is missing or not a (1, 1, h, w) map in [0, 1]")
    passed = [f"one {size}-px edit and its {size // 8}x{size // 8} mask in [0, 1]"]
    passed.append(check_save_load(pipe, lambda loaded: edit(loaded)[0], images, "edit"))
    return passed


def main() -> int:
    """Run :func:`run_checks`; report on stderr. Returns 0 when every check passed, 1 otherwise."""
    return run_smoke("portrait-edit", run_checks)


if __name__ == "__main__":
    sys.exit(main())
