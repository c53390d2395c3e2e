"""The ``x-portrait`` command line: ``animate``, ``train``, ``convert``, ``demo`` and ``smoke``, in the one convention
of :mod:`genblocks.cli`.

::

    x-portrait animate --image face.png --driving clip.mp4 --config paper --pretrained checkpoints/x-portrait --out out/
    x-portrait animate --image face.png --driving frames/ --out out/                    # tiny random model
    x-portrait train --config tiny --stage temporal --set train.manifest=data/clips.jsonl train.max_steps=100 --out runs/xp
    x-portrait convert --checkpoint model_state-415001.th --base stable-diffusion-v1-5 --out checkpoints/x-portrait
    x-portrait demo --config tiny --out outputs/x-portrait/demo
    x-portrait smoke

Configs ship inside the package in ``x_portrait/configs/`` (``tiny``: random 64-px model; ``paper``: the paper's
settings), shared by ``animate``, ``train``, ``convert`` and ``demo`` (one schema, :class:`x_portrait.config.XPortraitConfig`);
``--set key=value`` overrides any field (``inference.num_inference_steps=2``) and ``--print-config`` shows the merged
config. Files in ``--out``: ``animate`` writes ``animation.gif`` (``--format mp4``: ``animation.mp4``, at the driving
video's frame rate and with its audio track when it has one) and, with ``--metrics``, ``metrics.json``; ``train`` uses it as the run folder (``config.yaml``, ``checkpoints/``,
``metrics.csv``, ``loss.png``, the trained pipeline in ``trained/``); ``convert`` writes an ``XPortraitPipeline`` folder
(``model_index.json``, component sub-folders, ``conversion_report.json``); ``demo`` writes ``strip.png``,
``README.txt``, ``source.png``, ``driving.gif``, ``local_patches.gif``, ``animation.gif``, ``side_by_side.gif`` and
``summary.json``. The work lives in the
library (:mod:`x_portrait.pipeline_x_portrait`, :mod:`x_portrait.training`, :mod:`x_portrait.convert_x_portrait_original`,
:mod:`x_portrait.demo`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from genblocks.cli import Command, CommandLine, require_file, require_folder, smoke_command
from genblocks.errors import InputError

if TYPE_CHECKING:
    import numpy as np

    from x_portrait.config import XPortraitConfig

__all__ = ["DrivingInput", "command_line", "main", "read_driving"]

SCHEMA = "x_portrait.config:XPortraitConfig"
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
_VIDEO_SUFFIXES = (".gif", ".mp4", ".mov", ".avi", ".mkv", ".webm")


def _animate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", type=Path, required=True, metavar="FILE", help="source portrait image")
    parser.add_argument(
        "--driving", type=Path, required=True, metavar="PATH", help="video (.mp4, .gif, ...), frame folder or image"
    )
    parser.add_argument(
        "--pretrained",
        type=Path,
        default=None,
        metavar="DIR",
        help="XPortraitPipeline folder (same as --set components.source=pretrained components.pretrained=DIR)",
    )
    parser.add_argument("--format", choices=("gif", "mp4"), default="gif", help="animation file in --out")
    parser.add_argument("--metrics", action="store_true", help="self-reenactment metrics against the driving frames")


def _convert_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint", type=Path, required=True, metavar="FILE", help="official .th (or .safetensors) file"
    )
    parser.add_argument(
        "--base", type=Path, required=True, metavar="DIR", help="diffusers SD1.5 folder (vae, text encoder, ...)"
    )
    parser.add_argument(
        "--strict", action="store_true", help="exit 1 unless every key matched (scheduler buffers are ignored)"
    )


def _demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--frames", type=int, default=8, help="driving frames")
    parser.add_argument("--train-steps", type=int, default=0, help="stage-1 steps on the demo frames first")
    parser.add_argument(
        "--seed", type=int, default=None, help="seed of the weights and the noise (default: the config's seeds)"
    )
    parser.add_argument("--no-face", action="store_true", help="do not use dlib (no alignment or local patches)")


@dataclass(frozen=True)
class DrivingInput:
    """What ``--driving`` holds.

    Args:
        frames (`list[np.ndarray]`): uint8 frames (H, W, 3), at most ``inference.max_frames`` of them.
        fps (`float`, *optional*): The video's frame rate as its container states it (``read_video_meta``); `None`
            for a folder of frames or one image.
        audio (`tuple[np.ndarray, int]`, *optional*): The video's audio track, mono float32 samples (N,) and their
            rate, from the start of the video; `None` without one.
    """

    frames: list[np.ndarray]
    fps: float | None = None
    audio: tuple[np.ndarray, int] | None = None


def read_driving(path: Path, max_frames: int | None = None) -> DrivingInput:
    """Driving frames from a video file, a folder of images (sorted by name) or one image; a video's frame rate and
    audio track come from the file (``genblocks.media.read_video_meta``, ``genblocks.audio.read_audio``).

    Raises:
        `InputError`: naming ``--driving`` and the file: not found, empty, truncated, not a video or image.
    """
    from genblocks.media import read_image, read_video, read_video_meta

    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
        if not files:
            raise InputError(f"--driving folder {path} holds no images ({', '.join(_IMAGE_SUFFIXES)})")
        return DrivingInput([read_image(p) for p in files[:max_frames]])
    if path.suffix.lower() in _IMAGE_SUFFIXES:
        return DrivingInput([read_image(path)])
    if path.suffix.lower() not in _VIDEO_SUFFIXES:
        raise InputError(f"--driving {path} is neither a folder, a video ({_VIDEO_SUFFIXES}) nor an image")
    try:
        meta = read_video_meta(path)
        video, _ = read_video(path)
    except InputError as error:
        raise InputError(f"--driving {error}") from None
    audio = _read_audio_track(path) if meta.has_audio else None
    return DrivingInput(list(video[:max_frames]), meta.fps, audio)


def _read_audio_track(path: Path) -> tuple[np.ndarray, int] | None:
    """The audio track of the driving video, or `None` (with a note) when the audio extra is not installed."""
    from genblocks.audio import read_audio

    try:
        return read_audio(path)
    except ImportError as error:
        print(f"x-portrait animate: the audio of --driving {path} is left out: {error}", file=sys.stderr)
        return None


def _output_audio(driving: DrivingInput, video_format: str, fps: float) -> tuple[np.ndarray, int] | None:
    """The driving audio to mux into the animation, or `None` (with a note saying why when there was one)."""
    if driving.audio is None:
        return None
    if video_format != "mp4":
        print("x-portrait animate: --driving has an audio track; a GIF cannot hold it (--format mp4 keeps it)",
              file=sys.stderr)  # fmt: skip
        return None
    if driving.fps is not None and abs(fps - driving.fps) > 1e-6:
        print(f"x-portrait animate: the driving audio is left out: it would drift at {fps:g} fps (inference.fps) "
              f"instead of the video's {driving.fps:g}", file=sys.stderr)  # fmt: skip
        return None
    return driving.audio


def _animate(args: argparse.Namespace, config: XPortraitConfig) -> int:
    require_file(args.image, "--image", "a portrait image")
    if not args.driving.exists():
        raise InputError(f"--driving {args.driving}: not found (expected a video, a folder of frames or an image)")
    if args.pretrained is not None:
        require_folder(args.pretrained, "--pretrained", "an XPortraitPipeline folder from `x-portrait convert`")
    import torch

    from genblocks.media import read_image, write_video
    from x_portrait.metrics import evaluate_animation
    from x_portrait.pipeline_x_portrait import load_pipeline, sampling_options
    from x_portrait.preprocessing import load_face_analyzer

    if args.pretrained is not None:
        components = replace(config.components, source="pretrained", pretrained=str(args.pretrained))
        config = replace(config, components=components)
    inference = config.inference
    source = read_image(args.image)
    driving = read_driving(args.driving, inference.max_frames)
    analyzer = None
    if inference.align_driving or inference.local_patches:
        try:
            analyzer = load_face_analyzer()
        except ImportError as error:
            raise InputError(
                f"{error}; or run without faces: --set inference.align_driving=false inference.local_patches=false"
            ) from None
    if config.components.source == "random":
        print("x-portrait animate: components.source=random: untrained weights, the output is noise", file=sys.stderr)
    pipe = load_pipeline(config)
    output = pipe(
        source,
        driving.frames,
        face_analyzer=analyzer,
        generator=torch.Generator().manual_seed(inference.seed),
        output_type="pt",
        **sampling_options(config),
    )
    rate = inference.fps or driving.fps or 8.0
    audio = _output_audio(driving, args.format, rate)
    video = args.out / f"animation.{args.format}"
    write_video(video, output.frames * 2 - 1, fps=rate, audio=audio)
    sound = ", with the driving video's audio" if audio is not None else ""
    print(f"wrote {len(output.frames)} frames ({output.frames.shape[-1]} px, {rate:g} fps{sound}) to {video}")
    if args.metrics:
        metrics = evaluate_animation(output.frames, output.driving_frames, source=None, analyzer=None)
        (args.out / "metrics.json").write_text(json.dumps(metrics.to_dict(), indent=2) + "\n")
        print(json.dumps(metrics.to_dict(), indent=2))
    return 0


def _train(args: argparse.Namespace, config: XPortraitConfig) -> int:
    from x_portrait.pipeline_x_portrait import load_components
    from x_portrait.training import train

    components = load_components(config, pretrained=config.train.init_from)
    folder = train(config, components, args.out, resume=args.resume, overwrite=args.overwrite)
    print(f"trained stage {config.train.stage!r} for {config.train.max_steps} steps; pipeline: {folder}")
    return 0


def _train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--overwrite", action="store_true", help="start again in a used run folder")


def _convert(args: argparse.Namespace, config: XPortraitConfig) -> int:
    require_file(args.checkpoint, "--checkpoint", "the official model_state-*.th")
    require_folder(args.base, "--base", "a diffusers SD1.5 folder with unet/, vae/, text_encoder/, tokenizer/")
    from x_portrait.convert_x_portrait_original import convert_x_portrait_checkpoint, save_converted_pipeline
    from x_portrait.modeling_x_portrait import build_base_components

    components = build_base_components(args.base, config.model, load_unet_weights=False)
    report = convert_x_portrait_checkpoint(args.checkpoint, components)
    report.check_matches(args.checkpoint)  # a random or foreign file: exit 2, nothing written
    folder = save_converted_pipeline(
        components, report, args.out, patch_size=config.model.patch_size, landmark_scale=config.model.landmark_scale
    )
    print(report.summary())
    print(f"wrote {folder} ({'exact' if report.is_exact else 'see conversion_report.json for unmatched keys'})")
    return 1 if args.strict and not report.is_exact else 0


def _demo(args: argparse.Namespace, config: XPortraitConfig) -> int:
    if args.frames < 1:
        raise InputError(f"--frames {args.frames}: expected at least 1 driving frame")
    if args.train_steps < 0:
        raise InputError(f"--train-steps {args.train_steps}: expected 0 or more steps")
    from x_portrait.demo import DemoConfig, run_demo

    demo = DemoConfig(
        num_frames=args.frames, train_steps=args.train_steps, seed=args.seed, use_face_analyzer=not args.no_face
    )
    result = run_demo(args.out, demo, config)
    print(f"{'frames':<20} {demo.num_frames}")
    print(f"{'seconds per frame':<20} {result.seconds_per_frame:.3f}")
    for name, value in result.metrics.items():
        print(f"{name:<20} {'n/a' if value is None else f'{value:.4g}'}")
    print(f"outputs: {result.out_dir} (summary: {result.summary_path.name})")
    return 0


command_line = CommandLine(
    prog="x-portrait",
    package="x_portrait",
    description=(
        "X-Portrait portrait animation (arXiv 2403.15931) on diffusers. Configs: x_portrait/configs/ (tiny, paper), "
        "shared by every command; --print-config shows the merged one."
    ),
    commands=(
        Command(
            "animate",
            "animate a portrait (--image) with a driving video (--driving): animation.gif (--format mp4: "
            "animation.mp4) and, with --metrics, metrics.json in --out",
            _animate,
            schema=SCHEMA,
            arguments=_animate_arguments,
        ),
        Command(
            "train",
            "run one training stage (--stage image: reference UNet + ControlNets on pairs; --stage temporal: "
            "temporal modules on clips); --out is the run folder (config.yaml, checkpoints/, metrics.csv, loss.png, "
            "trained/)",
            _train,
            schema=SCHEMA,
            arguments=_train_arguments,
            stages=("image", "temporal"),
            resume=True,
        ),
        Command(
            "convert",
            "official --checkpoint model_state-*.th on the SD1.5 --base folder -> XPortraitPipeline folder in --out "
            "(model_index.json, component sub-folders, conversion_report.json)",
            _convert,
            schema=SCHEMA,
            default_config="paper",
            arguments=_convert_arguments,
            out=None,
        ),
        Command(
            "demo",
            "animate scikit-image's astronaut with synthetic motion (random weights; --config tiny by default): "
            "strip.png, README.txt, source.png, driving.gif, local_patches.gif, animation.gif, side_by_side.gif, "
            "summary.json in --out",
            _demo,
            schema=SCHEMA,
            arguments=_demo_arguments,
        ),
        smoke_command("x_portrait"),
    ),
)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``x-portrait`` script; returns the exit status (2 for bad input)."""
    return command_line.main(argv)


if __name__ == "__main__":
    sys.exit(main())
