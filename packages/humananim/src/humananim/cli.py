"""The ``humananim`` command line in the one convention of :mod:`genblocks.cli`.

::

    humananim keypoints --driving dance.mp4 --image ref.png --backend dwpose --pose-model dw-ll_ucoco_384.onnx \\
        --det-model yolox_m.onnx --out out/pose
    humananim keypoints --driving dance.mp4 --pose openpose_json/ --out out/pose        # existing OpenPose JSON
    humananim prepare --videos tiktok/ --backend dwpose --pose-model dw-ll_ucoco_384.onnx --out data/tiktok
    humananim train --config tiny --stage video --set train.max_steps=2 --out runs/tiny   # synthetic clips
    humananim train --config paper --stage image --set train.manifest=data/tiny/manifest.jsonl --out runs/image
    humananim animate --image ref.png --pose out/pose/keypoints.json --out out/anim              # tiny random model
    humananim animate --image ref.png --driving talk.mp4 --backend dlib --out out/talk   # offline: face + body template
    humananim animate --config paper --set components.source=pretrained components.pretrained=ckpt/humananim \
        --image ref.png --driving dance.mp4 --backend dwpose --pose-model dw-ll_ucoco_384.onnx --out out/anim
    humananim convert --from magicanimate --checkpoint MagicAnimate/ --config paper --set components.source=base \
        components.base_model=stable-diffusion-v1-5 --out checkpoints/humananim
    humananim demo --config tiny --out outputs/humananim/demo
    humananim eval --generated out/animation.mp4 --reference truth.mp4 --out out/eval
    humananim smoke                                                  # the installed package's self-check

Configs ship in ``humananim/configs/`` (``tiny``, ``paper``), one schema for every command
(:class:`humananim.config.HumanAnimConfig`); ``--set keypoints.smooth_window=7`` overrides a field. Files in ``--out``:
``keypoints`` writes ``keypoints.json`` (the documented layout), ``pose.gif`` (the rendered skeleton hint) and
``report.json`` (frames, frames where nobody was found, keypoints filled); ``prepare`` writes the dataset layout of
:mod:`humananim.data`; ``convert`` writes a ``HumanAnimPipeline`` folder and ``conversion_report.json``; ``animate`` writes ``animation.gif`` (``--format mp4``: ``animation.mp4``), ``pose.gif``, ``reference.png``,
``keypoints.json``, ``strip.png`` and ``README.txt``; ``demo`` writes the files listed in :mod:`humananim.demo`; ``train`` uses ``--out`` as the run folder of :func:`genblocks.training.fit` (``config.yaml``,
``checkpoints/``, ``metrics.csv``, ``loss.png``, the trained modules as safetensors in ``trained/``); ``eval`` writes
``metrics.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from genblocks.cli import Command, CommandLine, smoke_command
from genblocks.errors import InputError

if TYPE_CHECKING:
    import numpy as np

    from humananim.config import HumanAnimConfig
    from humananim.keypoints import Keypoints

__all__ = ["command_line", "main"]

SCHEMA = "humananim.config:HumanAnimConfig"
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def _backend_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backend",
        choices=("json", "dwpose", "mediapipe", "dlib"),
        help=(
            "keypoint detector (default: keypoints.backend of the config; json reads existing OpenPose/DWPose files; "
            "dlib detects the face only and places a body template)"
        ),
    )
    parser.add_argument("--pose-model", type=Path, help="dwpose: the whole-body ONNX file (dw-ll_ucoco_384.onnx)")
    parser.add_argument("--det-model", type=Path, help="dwpose: the YOLOX person detector ONNX file (with NMS)")


def _keypoints_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--driving", type=Path, required=True, help="driving video (MP4/GIF) or folder of frames")
    parser.add_argument(
        "--pose", type=Path, help="json backend: OpenPose/DWPose JSON file or folder for the driving video"
    )
    parser.add_argument("--image", type=Path, help="reference image: retarget the skeleton to this person")
    parser.add_argument("--reference-pose", type=Path, help="json backend: keypoint JSON of the reference image")
    _backend_arguments(parser)


def _detector(args: argparse.Namespace, config: HumanAnimConfig) -> object | None:
    from humananim.keypoints_backends import load_backend

    backend = args.backend or config.keypoints.backend
    if backend == "json":
        return None
    return load_backend(backend, args.pose_model, args.det_model)


def read_frames(path: Path) -> tuple[np.ndarray, float]:
    """(F, H, W, 3) uint8 frames and fps of a video file or a folder of images (8 fps)."""
    import numpy as np

    from genblocks.media import read_image, read_video

    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
        if not files:
            raise InputError(f"--driving {path}: the folder holds no images")
        frames = [read_image(p) for p in files]
        if len({f.shape for f in frames}) > 1:
            raise InputError(f"--driving {path}: the images differ in size")
        return np.stack(frames), 8.0
    return read_video(path)


def _reference_keypoints(args: argparse.Namespace, detector: object | None) -> Keypoints | None:
    from genblocks.media import read_image
    from humananim.keypoints import load_keypoints

    if args.image is None:
        return None
    image = read_image(args.image)
    if detector is None:
        if args.reference_pose is None:
            raise InputError("--reference-pose: the json backend needs the reference image's keypoint JSON")
        reference = load_keypoints(args.reference_pose, size=(image.shape[1], image.shape[0]))
    else:
        from humananim.keypoints import Keypoints

        reference = Keypoints(detector(image)[None], image.shape[1], image.shape[0])  # type: ignore[operator]
    if not (reference.valid()[0, :18]).any():
        raise InputError(f"--image {args.image}: no person found in the reference image")
    return reference


def run_keypoints(args: argparse.Namespace, config: HumanAnimConfig) -> int:
    from genblocks.media import write_video
    from humananim.keypoints import load_keypoints, prepare_driving, render_pose, save_keypoints
    from humananim.keypoints_backends import extract_keypoints

    detector = _detector(args, config)
    if detector is None:
        if args.pose is None:
            raise InputError("--pose: the json backend needs the driving video's OpenPose/DWPose JSON file or folder")
        frames, fps = read_frames(args.driving)
        raw = load_keypoints(args.pose, size=(frames.shape[2], frames.shape[1]), fps=fps)
        if (raw.width, raw.height) != (frames.shape[2], frames.shape[1]):
            raw = raw.resized(frames.shape[2], frames.shape[1])
    else:
        frames, fps = read_frames(args.driving)
        raw = extract_keypoints(frames, detector, fps)  # type: ignore[arg-type]
    reference = _reference_keypoints(args, detector)
    settings = config.keypoints
    keypoints, report = prepare_driving(
        raw,
        reference if settings.retarget else None,
        min_confidence=settings.min_confidence,
        max_gap=settings.max_gap,
        smooth_window=settings.smooth_window,
    )
    out = Path(args.out)
    save_keypoints(keypoints, out / "keypoints.json")
    write_video(out / "pose.gif", render_pose(keypoints, settings.min_confidence), fps=min(keypoints.fps, 25.0))
    summary = {
        "frames": report.frames,
        "empty_frames": list(report.empty_frames),
        "filled_points": report.filled_points,
        "retargeted": reference is not None and settings.retarget,
    }
    (out / "report.json").write_text(json.dumps(summary, indent=2))
    print(f"keypoints: {report.summary()}; wrote {out / 'keypoints.json'} and {out / 'pose.gif'}")
    return 0


def _prepare_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--videos", type=Path, required=True, help="folder of training videos")
    _backend_arguments(parser)


def run_prepare(args: argparse.Namespace, config: HumanAnimConfig) -> int:
    from humananim.data import prepare_dataset

    summary = prepare_dataset(
        args.videos,
        args.out,
        detector=_detector(args, config),  # type: ignore[arg-type]
        stride=config.data.frame_stride,
        max_frames=config.data.max_frames,
        min_confidence=config.keypoints.min_confidence,
        max_gap=config.keypoints.max_gap,
        smooth_window=config.keypoints.smooth_window,
    )
    print(f"prepare: {len(summary.rows)} videos in {summary.manifest}; {len(summary.skipped)} skipped")
    for line in summary.skipped:
        print(f"  skipped {line}", file=sys.stderr)
    return 0


def _eval_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--generated", type=Path, required=True, help="generated video or folder of frames")
    parser.add_argument("--reference", type=Path, required=True, help="ground-truth video or folder of frames")
    parser.add_argument("--lpips-backbone", type=Path, help="torchvision vgg16 state dict (for LPIPS)")
    parser.add_argument("--lpips-weights", type=Path, help="LPIPS's linear weights vgg.pth (for LPIPS)")
    parser.add_argument("--fid-extractor", type=Path, help="TorchScript frame feature extractor (for FID)")
    parser.add_argument("--fvd-extractor", type=Path, help="TorchScript clip feature extractor (for FVD)")


def run_eval(args: argparse.Namespace, config: HumanAnimConfig) -> int:
    import torch

    from genblocks.metrics import load_feature_extractor
    from humananim.metrics import LPIPS, evaluate, resize_frames

    generated, _ = read_frames(args.generated)
    reference, _ = read_frames(args.reference)
    count = min(len(generated), len(reference))
    fake = torch.from_numpy(generated[:count]).permute(0, 3, 1, 2).float() / 255
    real = torch.from_numpy(reference[:count]).permute(0, 3, 1, 2).float() / 255
    fake = resize_frames(fake, real.shape[2], real.shape[3])
    lpips = None
    if (args.lpips_backbone is None) != (args.lpips_weights is None):
        raise InputError("--lpips-backbone and --lpips-weights: LPIPS needs both files")
    if args.lpips_backbone is not None:
        lpips = LPIPS().load(args.lpips_backbone, args.lpips_weights)
    fid = load_feature_extractor(args.fid_extractor, "--fid-extractor") if args.fid_extractor else None
    fvd = load_feature_extractor(args.fvd_extractor, "--fvd-extractor") if args.fvd_extractor else None
    result = evaluate(fake, real, lpips=lpips, fid_extractor=fid, fvd_extractor=fvd)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(asdict(result), indent=2))
    numbers = ", ".join(
        f"{name} {value:.4f}"
        for name in ("l1", "psnr", "ssim", "lpips", "fid", "fvd")
        if (value := getattr(result, name)) is not None
    )
    print(f"eval over {result.frames} frames: {numbers}")
    for note in result.notes:
        print(f"  note: {note}")
    return 0


def run_train(args: argparse.Namespace, config: HumanAnimConfig) -> int:
    from humananim.training import train

    result = train(config, args.out, resume=bool(args.resume))
    print(f"train ({config.train.stage}): run folder {args.out}; {result}")
    return 0


def _animate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", type=Path, required=True, help="reference image of the person")
    parser.add_argument(
        "--pose", type=Path, help="keypoints: a humananim keypoints.json or OpenPose/DWPose JSON file/folder"
    )
    parser.add_argument("--driving", type=Path, help="driving video (keypoints are extracted with --backend)")
    parser.add_argument("--reference-pose", type=Path, help="json backend: keypoint JSON of the reference image")
    parser.add_argument("--format", choices=("gif", "mp4"), default="gif", help="animation file format")
    _backend_arguments(parser)


def run_animate(args: argparse.Namespace, config: HumanAnimConfig) -> int:
    import numpy as np
    import torch
    from PIL import Image

    from genblocks.media import read_image, write_demo_card, write_image, write_video
    from humananim.keypoints import load_keypoints, prepare_driving, render_pose, save_keypoints
    from humananim.keypoints_backends import extract_keypoints
    from humananim.pipeline import driving_hints, load_pipeline, sampling_options

    if (args.pose is None) == (args.driving is None):
        raise InputError("--pose / --driving: give exactly one (keypoint files, or a video to extract them from)")
    height, width = config.model.height, config.model.width
    image = read_image(args.image)
    detector = None if args.pose is not None else _detector(args, config)
    fps = config.sampling.fps or 8.0
    if args.pose is not None:
        raw = load_keypoints(args.pose, size=(image.shape[1], image.shape[0]))
    else:
        if detector is None:
            raise InputError(
                "--driving: extracting keypoints needs --backend dwpose, mediapipe or dlib (or pass --pose)"
            )
        frames, video_fps = read_frames(args.driving)
        raw = extract_keypoints(frames, detector, video_fps)  # type: ignore[arg-type]
        fps = config.sampling.fps or video_fps
    if config.sampling.max_frames is not None:
        raw = type(raw)(raw.points[: config.sampling.max_frames], raw.width, raw.height, raw.fps)
    settings = config.keypoints
    wants_reference = settings.retarget and (args.reference_pose is not None or detector is not None)
    reference = _reference_keypoints(args, detector) if wants_reference else None
    driving = raw.resized(width, height)
    if reference is not None:
        reference = reference.resized(width, height)
    keypoints, report = prepare_driving(
        driving,
        reference if settings.retarget else None,
        settings.min_confidence,
        max_gap=settings.max_gap,
        smooth_window=settings.smooth_window,
    )
    pose_images, blur_maps = driving_hints(keypoints, config)
    reference_image = np.array(Image.fromarray(image).resize((width, height), Image.Resampling.LANCZOS))
    pipeline = load_pipeline(config)
    output = pipeline(
        reference_image,
        pose_images=pose_images,
        blur_maps=blur_maps,
        generator=torch.Generator().manual_seed(config.sampling.seed),
        output_type="pt",
        **sampling_options(config),
    )
    frames_out = output.frames  # type: ignore[union-attr]
    out = Path(args.out)
    skeleton = render_pose(keypoints)
    write_video(out / f"animation.{args.format}", frames_out, fps=fps, value_range=(0.0, 1.0))
    write_video(out / "pose.gif", skeleton, fps=fps)
    write_image(out / "reference.png", reference_image)
    save_keypoints(keypoints, out / "keypoints.json")
    middle = len(frames_out) // 2
    result = (frames_out[middle].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    write_demo_card(
        out,
        f"humananim animate ({height}x{width}, {len(frames_out)} frames, components: {config.components.source})",
        [reference_image, skeleton[middle], result],
        ["reference", "skeleton (retargeted)" if reference is not None else "skeleton", "result"],
        notes=[f"Frame {middle + 1} of {len(frames_out)}; {report.summary()}."],
    )
    print(f"animate: {len(frames_out)} frames -> {out / f'animation.{args.format}'}; {report.summary()}")
    return 0


def _convert_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--from", dest="source", choices=("magicanimate",), default="magicanimate", help="checkpoint kind"
    )
    parser.add_argument("--checkpoint", type=Path, required=True, help="MagicAnimate's release folder")
    parser.add_argument("--no-strict", dest="strict", action="store_false", help="write even when keys do not match")


def run_convert(args: argparse.Namespace, config: HumanAnimConfig) -> int:
    from humananim.convert import convert_magicanimate
    from humananim.pipeline import HumanAnimPipeline, load_components

    components = load_components(config)
    report = convert_magicanimate(args.checkpoint, components, config.model, strict=args.strict)
    out = Path(args.out)
    pipeline = HumanAnimPipeline(**components.as_dict())  # type: ignore[arg-type]
    pipeline.save_pretrained(out)
    parts = {name: asdict(part) for name, part in report.parts.items()}
    (out / "conversion_report.json").write_text(json.dumps({"parts": parts, "skipped": report.skipped}, indent=2))
    print(f"convert: wrote a HumanAnimPipeline to {out}\n{report.summary()}")
    return 0


def _demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--frames", type=int, default=8, help="frames of the dance (default 8)")


def run_demo(args: argparse.Namespace, config: HumanAnimConfig) -> int:
    from humananim.demo import run_demo as demo

    if args.frames < 1:
        raise InputError(f"--frames: expected a positive count, got {args.frames}")
    summary = demo(config, args.out, args.frames)
    print(f"demo: {summary['frames']} frames ({summary['skeleton_from']}), written to {args.out} (random weights)")
    return 0


command_line = CommandLine(
    prog="humananim",
    package="humananim",
    description=(
        "Human image animation with regional supervision and a motion-blur condition (arXiv 2409.19580): keypoints "
        "from videos, dataset preparation, training and evaluation."
    ),
    commands=(
        Command(
            "keypoints",
            "whole-body keypoints of a driving video: gaps filled, smoothed, retargeted, rendered",
            run_keypoints,
            schema=SCHEMA,
            arguments=_keypoints_arguments,
        ),
        Command(
            "prepare",
            "a folder of videos -> frames, keypoints and a training manifest",
            run_prepare,
            schema=SCHEMA,
            arguments=_prepare_arguments,
            out=None,
        ),
        Command(
            "train",
            "train one stage (image: reference net + ControlNet; video: temporal modules; hires: all, shifted SNR)",
            run_train,
            schema=SCHEMA,
            stages=("image", "video", "hires"),
            resume=True,
        ),
        Command(
            "animate",
            "animate a reference image with a keypoint sequence or a driving video",
            run_animate,
            schema=SCHEMA,
            arguments=_animate_arguments,
        ),
        Command(
            "convert",
            "MagicAnimate's appearance encoder, DensePose ControlNet and temporal modules -> a HumanAnimPipeline folder",
            run_convert,
            schema=SCHEMA,
            arguments=_convert_arguments,
            out=None,
        ),
        Command(
            "demo",
            "animate scikit-image's astronaut with a scripted dance of her own skeleton (tiny random weights)",
            run_demo,
            schema=SCHEMA,
            arguments=_demo_arguments,
        ),
        Command(
            "eval",
            "L1 / PSNR / SSIM (+ LPIPS, FID, FVD with user-given weights) of a generated video against the truth",
            run_eval,
            schema=SCHEMA,
            arguments=_eval_arguments,
        ),
        smoke_command("humananim"),
    ),
)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``humananim`` script."""
    return command_line.main(argv)


if __name__ == "__main__":
    sys.exit(main())
