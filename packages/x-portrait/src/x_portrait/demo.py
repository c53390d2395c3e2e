"""``x-portrait demo``: animate scikit-image's astronaut portrait with synthetic driving frames, on a random-weight
config (the shipped ``tiny`` by default).

The source is a square crop around the astronaut's face (``skimage.data.astronaut()``, Eileen Collins, public domain;
found with the dlib face analyser when installed, else a fixed crop). The driving frames are the same portrait under
small, smooth head motions (rotation, translation, zoom) taken from the full photograph, so their landmarks are known
exactly (the source's, carried through each motion): a self-reenactment, where the driving frames are also the ground
truth of the image metrics. The pipeline runs a configuration with ``components.source: random`` (by default the
shipped ``x_portrait/configs/tiny.yaml``; ``x-portrait demo --config NAME|PATH --set ...``) with seeded random
weights, optionally after a few training steps on these frames (``--train-steps``): the output shows the whole path
(alignment, patches, reference bank, ControlNets, windows, CFG, chunked decoding) and its cost, not a trained model's
quality; convert the official checkpoint (``x-portrait convert``) for that.

Writes ``strip.png`` and ``README.txt`` (a labelled still and what it shows), ``source.png``, ``driving.gif``,
``local_patches.gif``, ``animation.gif``, ``side_by_side.gif`` (captioned: animation,
driving, patches and source per frame, like upstream's output video) and ``summary.json``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from genblocks.errors import InputError
from genblocks.faces import FaceAnalyzer
from genblocks.media import label_frames, write_demo_card, write_image, write_video
from genblocks.training import OptimizerConfig
from x_portrait.config import XPortraitConfig, tiny_config
from x_portrait.metrics import evaluate_animation
from x_portrait.modeling_x_portrait import XPortraitComponents
from x_portrait.pipeline_x_portrait import XPortraitPipeline, load_components, sampling_options
from x_portrait.preprocessing import load_face_analyzer, similarity_matrix, transform_landmarks, warp_affine
from x_portrait.training import IdentityReenactor, XPortraitTrainingModule

__all__ = ["DemoConfig", "DemoResult", "astronaut_portrait", "run_demo", "synthetic_driving"]

logger = logging.getLogger(__name__)

_FALLBACK_CENTER = (224.0, 128.0)  # the astronaut's face centre in the 512-px photograph (dlib box 175-265, 76-166)
_CROP_TO_BOX = 2.4  # crop side / detected face-box side


@dataclass(frozen=True)
class DemoConfig:
    """Settings of the demo run.

    Args:
        num_frames: Driving frames.
        max_rotation: Largest head rotation of the synthetic motion, degrees.
        max_shift: Largest translation, as a fraction of the crop side.
        zoom: Largest relative zoom.
        train_steps: Stage-1 training steps on (source, driving frame) pairs before animating (0: random weights).
        seed: Seed of the weights, start noise and window offsets; ``None`` keeps the config's (``components.seed``
            for the weights, ``inference.seed`` for the noise).
        display_scale: Nearest-neighbour upscaling of the written GIFs (the tiny model renders 64 px).
        use_face_analyzer: Use dlib (if installed) for the crop, alignment, local patches and face metrics.
    """

    num_frames: int = 8
    max_rotation: float = 8.0
    max_shift: float = 0.04
    zoom: float = 0.05
    train_steps: int = 0
    seed: int | None = None
    display_scale: int = 4
    use_face_analyzer: bool = True


@dataclass
class DemoResult:
    """What the demo wrote and measured."""

    out_dir: Path
    summary_path: Path
    seconds_per_frame: float
    metrics: dict[str, float | None]


def _load_astronaut() -> np.ndarray:
    try:
        from skimage import data
    except ImportError as error:
        raise ImportError("the demo portrait comes from scikit-image: pip install scikit-image") from error
    return np.asarray(data.astronaut())


def astronaut_portrait(
    analyzer: FaceAnalyzer | None,
) -> tuple[np.ndarray, tuple[float, float], float, np.ndarray | None]:
    """The astronaut photograph, the face crop's centre and side, and the face's 68 landmarks (if an analyser is given).

    Returns:
        `tuple`: uint8 image (512, 512, 3), crop centre ``(x, y)``, crop side in pixels, landmarks (68, 2) or `None`.
    """
    photo = _load_astronaut()
    if analyzer is None:
        return photo, _FALLBACK_CENTER, 90.0 * _CROP_TO_BOX, None
    face = analyzer.get_face(photo, name="skimage.data.astronaut()", embed=False)
    x0, y0, x1, y1 = (float(v) for v in face.box)
    side = min(max(x1 - x0, y1 - y0) * _CROP_TO_BOX, float(min(photo.shape[:2])))
    return photo, ((x0 + x1) / 2, (y0 + y1) / 2), side, face.landmarks68


def _crop_matrix(center: tuple[float, float], side: float, size: int) -> np.ndarray:
    """Photograph pixels -> pixels of a ``size`` square showing the ``side`` square around ``center``."""
    scale = size / side
    return np.array(
        [[scale, 0.0, (size - 1) / 2 - scale * center[0]], [0.0, scale, (size - 1) / 2 - scale * center[1]]]
    )


def synthetic_driving(
    photo: np.ndarray,
    center: tuple[float, float],
    side: float,
    size: int,
    landmarks: np.ndarray | None,
    config: DemoConfig,
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray | None, np.ndarray | None]:
    """The source crop and driving frames: the photograph moved by smooth similarity transforms about the face centre
    and cropped like the source (no black borders), with the landmarks carried along.

    Returns:
        `tuple`: source (3, size, size) and driving (F, 3, size, size) in [0, 1]; source (68, 2) and driving
        (F, 68, 2) landmarks at ``size``, or `None` without ``landmarks``.
    """
    image = torch.from_numpy(photo).permute(2, 0, 1).float()[None] / 255.0
    full_side = round(side)  # crop at the photograph's scale, then downscale with antialiasing

    def crop(matrix: np.ndarray) -> torch.Tensor:
        warped = warp_affine(image, matrix, fill=0.0)[..., :full_side, :full_side]
        return F.interpolate(warped, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]

    to_crop = np.vstack([_crop_matrix(center, side, full_side), [0, 0, 1]])
    to_output = np.vstack([_crop_matrix(((full_side - 1) / 2,) * 2, full_side, size), [0, 0, 1]]) @ to_crop
    frames, moved = [], []
    for i in range(config.num_frames):
        phase = 2 * math.pi * i / config.num_frames
        motion = np.vstack(
            [
                similarity_matrix(
                    center,
                    angle=math.radians(config.max_rotation) * math.sin(phase),
                    scale=1.0 + config.zoom * math.sin(2 * phase),
                    shift=(config.max_shift * side * math.sin(phase), 0.5 * config.max_shift * side * math.cos(phase)),
                ),
                [0, 0, 1],
            ]
        )
        frames.append(crop((to_crop @ motion)[:2]))
        if landmarks is not None:
            moved.append(transform_landmarks(landmarks, (to_output @ motion)[:2]))
    source = crop(to_crop[:2])
    if landmarks is None:
        return source.clamp(0, 1), torch.stack(frames).clamp(0, 1), None, None
    source_landmarks = transform_landmarks(landmarks, to_output[:2])
    return source.clamp(0, 1), torch.stack(frames).clamp(0, 1), source_landmarks, np.stack(moved)


def _display(frames: torch.Tensor, scale: int) -> torch.Tensor:
    """(F, 3, H, W) in [0, 1] -> nearest-upscaled, in [-1, 1] for genblocks.media."""
    return F.interpolate(frames.float(), scale_factor=scale, mode="nearest") * 2 - 1


def _train_on_frames(
    config: XPortraitConfig,
    components: XPortraitComponents,
    source: torch.Tensor,
    driving: torch.Tensor,
    landmarks: np.ndarray | None,
    steps: int,
) -> None:
    """Stage-1 steps on (source, driving frame) pairs: self-reenactment, no augmentation or dropout."""
    samples = []
    for i in range(len(driving)):
        sample = {"source": source * 2 - 1, "target": driving[i] * 2 - 1}
        if landmarks is not None:
            sample["landmarks"] = torch.from_numpy(landmarks[i]).float()
        samples.append(sample)
    module = XPortraitTrainingModule(
        components,
        stage="image",
        patch_size=config.model.patch_size,
        landmark_scale=config.model.landmark_scale,
        reenactor=IdentityReenactor(),
        aug_scale=(1.0, 1.0),
        cond_drop_ref=0.0,
        cond_drop_motion=0.0,
        cond_drop_local=0.0,
        optimizer=OptimizerConfig(lr=1e-3),
        seed=config.components.seed,
    )
    trainer = L.Trainer(
        max_steps=steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    repeats = steps // len(samples) + 1
    trainer.fit(module, DataLoader(samples * repeats, batch_size=1, shuffle=True))


def _face_metrics(
    frames: torch.Tensor, driving: torch.Tensor, source: torch.Tensor, analyzer: FaceAnalyzer | None, size: int
) -> dict[str, float | None]:
    """Image metrics at the rendered size; face metrics on ``size``-px bicubic upscales (dlib needs ~80-px faces)."""
    metrics = evaluate_animation(frames, driving).to_dict()
    if analyzer is None:
        return metrics

    def up(images: torch.Tensor) -> torch.Tensor:
        return F.interpolate(images.float(), size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)

    try:
        faces = evaluate_animation(up(frames), up(driving), source=up(source[None])[0], analyzer=analyzer)
    except ValueError as error:
        logger.warning("face metrics skipped: %s", error)
        return metrics
    metrics.update({k: v for k, v in faces.to_dict().items() if k in ("identity", "expression", "pose", "face_rate")})
    return metrics


def run_demo(
    out_dir: str | Path, config: DemoConfig | None = None, model_config: XPortraitConfig | None = None
) -> DemoResult:
    """Run the demo and write its files to ``out_dir``; see the module docstring.

    Args:
        out_dir: The output folder (created).
        config: The demo's own settings (frames, motion, training steps, seed).
        model_config: A random-weight configuration (``components.source: random``); ``None``: the shipped ``tiny``.

    Raises:
        InputError: ``model_config.components.source`` is not ``random`` (the demo's README says the weights are
            random; animate your own portrait with trained weights through ``x-portrait animate``).
    """
    config = config if config is not None else DemoConfig()
    settings = model_config if model_config is not None else tiny_config()
    if settings.components.source != "random":
        raise InputError(
            f"demo runs random weights (components.source=random), got components.source="
            f"{settings.components.source!r}: use `x-portrait animate` for trained weights"
        )
    if config.seed is not None:
        settings = replace(
            settings,
            components=replace(settings.components, seed=config.seed),
            inference=replace(settings.inference, seed=config.seed),
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    analyzer: FaceAnalyzer | None = None
    if config.use_face_analyzer:
        try:
            analyzer = load_face_analyzer()
        except ImportError as error:
            logger.warning("no face analyser (%s): no alignment, local patches or face metrics", error)
    photo, center, side, landmarks = astronaut_portrait(analyzer)
    size = settings.model.resolution
    source, driving, source_landmarks, driving_landmarks = synthetic_driving(
        photo, center, side, size, landmarks, config
    )

    components = load_components(settings)
    train_seconds = 0.0
    if config.train_steps > 0:
        start = time.perf_counter()
        _train_on_frames(settings, components, source, driving, driving_landmarks, config.train_steps)
        train_seconds = time.perf_counter() - start
    pipe = XPortraitPipeline(
        **components.as_dict(), patch_size=settings.model.patch_size, landmark_scale=settings.model.landmark_scale
    )
    pipe.set_progress_bar_config(disable=True)
    has_landmarks = source_landmarks is not None
    inference = settings.inference
    start = time.perf_counter()
    options = sampling_options(settings)
    options["align_driving"] = has_landmarks and inference.align_driving
    options["local_patches"] = has_landmarks and inference.local_patches
    output = pipe(
        source,
        driving,
        source_landmarks=source_landmarks,
        driving_landmarks=driving_landmarks,
        generator=torch.Generator().manual_seed(inference.seed),
        output_type="pt",
        **options,
    )
    seconds = time.perf_counter() - start
    assert not isinstance(output, tuple)  # return_dict=True
    frames = output.frames

    metrics = _face_metrics(frames, output.driving_frames, source, analyzer, size=256)
    scale = config.display_scale
    fps = inference.fps or 8.0
    write_image(out / "source.png", _display(source[None], scale)[0])
    write_video(out / "driving.gif", _display(driving, scale), fps=fps)
    write_video(out / "local_patches.gif", _display(output.local_images, scale), fps=fps)
    write_video(out / "animation.gif", _display(frames, scale), fps=fps)
    captions = ["generated (random weights)", "driving frame", "local patches (eyes, mouth)", "source portrait"]
    side_by_side = label_frames(  # upstream's layout: generated | driving | local | source, now captioned
        [frames, output.driving_frames, output.local_images, source],
        captions,
        title=f"X-Portrait animation ({size} px, random weights)",
        height=max(192, frames.shape[-1] * scale),
        value_range=(0.0, 1.0),
    )
    write_video(out / "side_by_side.gif", side_by_side, fps=fps)
    middle = len(frames) // 2
    write_demo_card(
        out,
        f"X-Portrait: the astronaut driven by synthetic motion ({size} px, random weights)",
        [frames[middle], output.driving_frames[middle], output.local_images[middle], source],
        captions,
        notes=[
            f"Frame {middle + 1} of {len(frames)}. animation.gif: the generated frames; driving.gif: the motion;",
            "local_patches.gif: the local ControlNet's hint; side_by_side.gif: all four, labelled.",
        ],
        value_range=(0.0, 1.0),
    )
    headline = {
        "frames": len(frames),
        "seconds_per_frame": seconds / len(frames),
        "psnr_db": metrics["psnr"],
        "ssim": metrics["ssim"],
        "face_rate": metrics["face_rate"],
    }
    summary = {
        "headline": headline,
        "demo": asdict(config),
        "seeds": {"weights": settings.components.seed, "noise": inference.seed},
        "resolution": size,
        "best_frame": output.best_frame,
        "aligned": output.alignment is not None,
        "face_analyzer": type(analyzer).__name__ if analyzer is not None else None,
        "train_seconds": train_seconds,
        "inference_seconds": seconds,
        "metrics_vs_driving": metrics,
        "note": "tiny random-weight model: the animation shows the pipeline, not a trained model's quality",
    }
    summary_path = out / "summary.json"
    summary_path.write_text(json.dumps(summary, indent=2, default=str))
    return DemoResult(out, summary_path, seconds / len(frames), metrics)
