"""One edit from a file to a folder (``portrait-edit edit``) and the demo (``portrait-edit demo``).

`edit_file` runs `PortraitEditPipeline` on an aligned portrait, or on a whole photo through
:mod:`portrait_edit.photo` (detect, align, edit the crop, paste back), and writes ``edit.png``, ``mask.png`` (the
edit mask as a heat overlay on the source), ``strip.png`` (labelled before | mask | after) and ``summary.json``.
`run_demo` edits a real portrait shipped in a package (scikit-image's astronaut, else matplotlib's Grace Hopper)
with the tiny random configuration, and also writes ``README.txt`` saying the weights are random.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from genblocks.errors import InputError

if TYPE_CHECKING:
    from genblocks.faces import FaceAnalyzer
    from portrait_edit.config import PortraitEditConfig
    from portrait_edit.pipeline_portrait_edit import PortraitEditPipeline

__all__ = ["EditResult", "demo_portrait", "edit_file", "edit_image", "run_demo", "write_edit"]

logger = logging.getLogger(__name__)


@dataclass
class EditResult:
    """One edit, ready to write.

    Attributes:
        source: uint8 (H, W, 3), the input (the whole photo, or the aligned portrait at the model's size).
        edited: uint8 (H, W, 3), the edit (pasted back into the photo in photo mode).
        mask: float32 (H, W) in [0, 1], the edit mask at the source's size (zeros when the mask is off).
        seconds: Wall time of the pipeline call.
        notes: Lines for the user (resizing, random weights).
    """

    source: np.ndarray
    edited: np.ndarray
    mask: np.ndarray
    seconds: float
    notes: list[str] = field(default_factory=list)


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BICUBIC))


def _square(image: np.ndarray) -> np.ndarray:
    height, width = image.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return image[top : top + side, left : left + side]


def _mask_image(mask: Any, size: int) -> np.ndarray:
    """A (1, 1, h, w) / (1, h, w) latent mask -> float32 (size, size), bilinear."""
    values = np.asarray(mask.detach().float().cpu().numpy() if hasattr(mask, "detach") else mask, np.float32)
    values = values.reshape(values.shape[-2:])
    resized = Image.fromarray(values).resize((size, size), Image.Resampling.BILINEAR)
    return np.clip(np.asarray(resized, np.float32), 0.0, 1.0)


def edit_image(
    pipeline: PortraitEditPipeline,
    config: PortraitEditConfig,
    image: np.ndarray,
    prompt: str,
    source_prompt: str | None,
    aligned: bool = True,
    analyzer: FaceAnalyzer | None = None,
    name: str = "--image",
) -> EditResult:
    """Edit one image with the pipeline and ``config.sampling``.

    Args:
        pipeline: The pipeline (`portrait_edit.pipeline_portrait_edit.load_pipeline`).
        config: Its config (sampling options, ``model.resolution``).
        image: uint8 (H, W, 3).
        prompt: The target prompt (``""`` is valid: the CFG null).
        source_prompt: The source prompt (the edit mask compares the two).
        aligned: The image is an aligned portrait (square-cropped and resized to the model size); ``False``: a
            whole photo (the face is found with ``analyzer``, aligned, edited and pasted back).
        analyzer: Face analyzer for ``aligned=False``.
        name: How the image is named in errors and notes.

    Returns:
        `EditResult`.
    """
    import torch

    from portrait_edit.pipeline_portrait_edit import PortraitEditPipelineOutput, sampling_options

    size = config.model.resolution
    notes: list[str] = []
    options = sampling_options(config)
    generator = torch.Generator(device="cpu").manual_seed(config.sampling.seed)
    masks: list[np.ndarray] = []

    def run(crop: np.ndarray) -> np.ndarray:
        output = pipeline(
            Image.fromarray(crop),
            prompt,
            source_prompt=source_prompt,
            generator=generator,
            output_type="np",
            **options,
        )
        assert isinstance(output, PortraitEditPipelineOutput)  # return_dict=True
        images = np.asarray(output.images)
        masks.append(
            np.zeros((size, size), np.float32) if output.masks is None else _mask_image(output.masks[0], size)
        )
        return np.clip(np.round(images[0] * 255.0), 0, 255).astype(np.uint8)

    start = time.perf_counter()
    if aligned:
        if min(image.shape[:2]) < size:
            notes.append(
                f"{name}: {image.shape[1]}x{image.shape[0]} px is smaller than the model size {size} px; "
                "resized up (expect a blurry edit)"
            )
        source = _resize(_square(image), size)
        edited = run(source)
        mask = masks[0]
    else:
        if analyzer is None:
            raise InputError(f"{name}: a whole photo needs a face analyzer (install portrait-edit[face]) or --aligned")
        from portrait_edit.photo import edit_photo

        result = edit_photo(image, run, analyzer, crop_size=size, name=name)
        face_side = float(np.hypot(*(result.face.box[2:] - result.face.box[:2])) / np.sqrt(2))
        if face_side < size / 4:
            notes.append(f"{name}: the face is about {face_side:.0f} px; its crop was resized up to {size} px")
        source, edited = image, result.image
        inverse = np.linalg.inv(np.vstack([result.matrix, [0.0, 0.0, 1.0]]))[:2]
        from genblocks.faces import warp_affine

        mask = warp_affine(masks[0], inverse, (image.shape[1], image.shape[0]), "bilinear") * result.mask
    return EditResult(source, edited, mask.astype(np.float32), time.perf_counter() - start, notes)


def write_edit(result: EditResult, out_dir: Path, prompt: str, extra: dict[str, Any] | None = None) -> list[Path]:
    """Write ``edit.png``, ``mask.png`` (heat overlay), ``strip.png`` (before | mask | after) and ``summary.json``."""
    from genblocks.media import heat_overlay, make_strip, write_image

    out_dir.mkdir(parents=True, exist_ok=True)
    overlay = heat_overlay(result.source, result.mask, alpha=0.5, heat_range=(0.0, 1.0))
    files = [
        write_image(out_dir / "edit.png", result.edited),
        write_image(out_dir / "mask.png", overlay),
        write_image(
            out_dir / "strip.png",
            make_strip(
                [result.source, overlay, result.edited],
                ["before", "edit mask", "after"],
                title=f"portrait-edit: {prompt!r}",
                height=256,
            ),
        ),
    ]
    summary = {
        "prompt": prompt,
        "seconds": result.seconds,
        "mask_mean": float(result.mask.mean()),
        "notes": result.notes,
        **(extra or {}),
    }
    path = out_dir / "summary.json"
    path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return [*files, path]


def edit_file(
    config: PortraitEditConfig,
    image_path: Path,
    prompt: str,
    source_prompt: str | None,
    out_dir: Path,
    aligned: bool = False,
) -> tuple[EditResult, list[Path]]:
    """``portrait-edit edit``: check the input, edit, write. Nothing is written when the input is refused.

    Raises:
        InputError: not an image, no face (photo mode), a missing face extra.
    """
    from genblocks.media import read_image
    from portrait_edit.pipeline_portrait_edit import load_pipeline

    image = read_image(image_path)
    analyzer = None
    if not aligned:
        analyzer = load_face_analyzer()
        if not analyzer.analyze(image, embed=False):
            raise InputError(
                f"--image {image_path}: no face found; expected a photo with a visible face "
                "(or pass --aligned for an aligned portrait)"
            )
    pipeline = load_pipeline(config)
    pipeline.set_progress_bar_config(disable=True)
    result = edit_image(pipeline, config, image, prompt, source_prompt, aligned, analyzer, f"--image {image_path}")
    if config.model.source == "random":
        result.notes.append("model.source=random: untrained weights, the edit is noise")
    files = write_edit(result, out_dir, prompt, {"image": str(image_path), "aligned": aligned})
    return result, files


def load_face_analyzer() -> FaceAnalyzer:
    """dlib's analyzer (the face extra), with an `InputError` that says what to install."""
    try:
        from genblocks.faces import DlibFaceAnalyzer

        return DlibFaceAnalyzer()
    except ImportError as error:
        raise InputError(f"{error} (or pass --aligned for an aligned portrait)") from None


def demo_portrait() -> tuple[np.ndarray, str]:
    """A real portrait shipped in a package: scikit-image's astronaut (Eileen Collins, public domain), else
    matplotlib's Grace Hopper sample."""
    try:
        from skimage import data

        return np.asarray(data.astronaut()), "scikit-image astronaut (Eileen Collins, NASA, public domain)"
    except ImportError:
        pass
    try:
        import matplotlib.cbook

        from genblocks.media import read_image

        path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
        return read_image(path), "matplotlib sample grace_hopper.jpg"
    except ImportError as error:
        raise InputError(
            "the demo portrait needs scikit-image or matplotlib: pip install 'portrait-edit[demo]'"
        ) from error


def run_demo(
    config: PortraitEditConfig, out_dir: Path, prompt: str, source_prompt: str, use_face: bool = True
) -> dict[str, Any]:
    """``portrait-edit demo``: edit the shipped portrait with the config's (random) weights; write the edit files, a
    labelled strip and ``README.txt``.

    Returns:
        The summary (also in ``summary.json``), with a ``headline`` for ``make demo``.
    """
    from genblocks.media import heat_overlay, write_demo_card
    from portrait_edit.pipeline_portrait_edit import load_pipeline

    image, credit = demo_portrait()
    analyzer = None
    if use_face:
        try:
            analyzer = load_face_analyzer()
        except InputError as error:
            logger.warning("demo without face alignment: %s", error)
    pipeline = load_pipeline(config)
    pipeline.set_progress_bar_config(disable=True)
    aligned = analyzer is None
    result = edit_image(pipeline, config, image, prompt, source_prompt, aligned, analyzer, "demo portrait")
    outside = result.mask == 0
    unchanged = float((result.edited[outside] == result.source[outside]).all()) if outside.any() else 1.0
    extra = {
        "portrait": credit,
        "mode": "whole photo (dlib alignment, paste-back)" if not aligned else "aligned crop",
        "headline": {
            "seconds_per_edit": result.seconds,
            "mask_mean": float(result.mask.mean()),
            "outside_unchanged": unchanged,
        },
    }
    files = write_edit(result, out_dir, prompt, extra)
    overlay = heat_overlay(result.source, result.mask, alpha=0.5, heat_range=(0.0, 1.0))
    write_demo_card(
        out_dir,
        f"portrait-edit demo: {prompt!r} on the {credit.split(' (')[0]} (tiny random weights)",
        [result.source, overlay, result.edited],
        ["before", "edit mask (heat)", "after"],
        notes=[
            f"Portrait: {credit}. Mode: {extra['mode']}.",
            f"Prompt {prompt!r}, source prompt {source_prompt!r}; {config.sampling.num_inference_steps} UniPC steps, "
            f"mask from {config.sampling.mask_samples} samples.",
            "Files: edit.png, mask.png, strip.png, summary.json, README.txt.",
            *result.notes,
        ],
    )
    summary = json.loads((out_dir / "summary.json").read_text())
    summary["files"] = [p.name for p in files] + ["README.txt"]
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary
