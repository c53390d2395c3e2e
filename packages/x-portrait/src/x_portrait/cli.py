"""The ``x-portrait`` command line: ``animate``, ``train``, ``convert``, ``demo`` and ``smoke``.

::

    x-portrait animate --source face.png --driving clip.mp4 --out out.mp4 --pretrained checkpoints/x-portrait
    x-portrait animate --source face.png --driving frames/ --out out.gif --config configs/tiny.yaml
    x-portrait train --config configs/tiny.yaml --set train.manifest=data/pairs.jsonl train.max_steps=100
    x-portrait convert --checkpoint model_state-415001.th --base stable-diffusion-v1-5 --out checkpoints/x-portrait
    x-portrait demo --out outputs/x-portrait/demo
    x-portrait smoke

``--config`` takes a YAML file or a built-in name (``tiny``: random 64-px model; ``sd15``: the paper's settings), and
``--set key=value`` overrides any field (``inference.num_inference_steps=2``). The work lives in the library
(:mod:`x_portrait.pipeline_x_portrait`, :mod:`x_portrait.training`, :mod:`x_portrait.convert_x_portrait_original`,
:mod:`x_portrait.demo`).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from x_portrait.config import XPortraitConfig, sd15_config, tiny_config

__all__ = ["build_parser", "load_cli_config", "main", "read_driving"]

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
_VIDEO_SUFFIXES = (".gif", ".mp4", ".mov", ".avi", ".mkv", ".webm")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``x-portrait`` (exposed for documentation and tests)."""
    parser = argparse.ArgumentParser(
        prog="x-portrait", description="X-Portrait portrait animation (arXiv 2403.15931) on diffusers."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress at INFO level")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{animate,train,convert,demo,smoke}")

    def add_config(sub: argparse.ArgumentParser, default: str) -> None:
        sub.add_argument("--config", default=default, help=f"YAML file, or 'tiny' / 'sd15' (default: {default})")
        sub.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")

    animate = commands.add_parser("animate", help="animate a source portrait with a driving video")
    animate.add_argument("--source", type=Path, required=True, help="source portrait image")
    animate.add_argument("--driving", type=Path, required=True, help="video (.mp4, .gif, ...), frame folder or image")
    animate.add_argument("--out", type=Path, required=True, help="output .mp4 or .gif")
    animate.add_argument("--pretrained", default=None, help="XPortraitPipeline folder (sets components.source)")
    animate.add_argument("--metrics", action="store_true", help="print self-reenactment metrics against the driving")
    add_config(animate, "tiny")

    train = commands.add_parser("train", help="run one training stage (train.stage) from a manifest")
    add_config(train, "tiny")

    convert = commands.add_parser("convert", help="official model_state-*.th -> XPortraitPipeline folder")
    convert.add_argument("--checkpoint", type=Path, required=True, help="official .th (or .safetensors) file")
    convert.add_argument("--base", type=Path, required=True, help="diffusers SD1.5 folder (vae, text encoder, ...)")
    convert.add_argument("--out", type=Path, required=True, help="output pipeline folder")
    convert.add_argument("--strict", action="store_true", help="exit 1 unless every key matched")
    add_config(convert, "sd15")

    demo = commands.add_parser("demo", help="animate skimage's astronaut with synthetic motion (tiny model)")
    demo.add_argument("--out", type=Path, default=Path("outputs/x-portrait/demo"), help="output folder")
    demo.add_argument("--frames", type=int, default=8, help="driving frames")
    demo.add_argument("--train-steps", type=int, default=0, help="stage-1 steps on the demo frames first")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--no-face", action="store_true", help="do not use dlib (no alignment or local patches)")

    commands.add_parser("smoke", help="run the self-check (exit status 0 on success)")
    return parser


def load_cli_config(config: str, overrides: Sequence[str] = ()) -> XPortraitConfig:
    """A config from a YAML path or a built-in name (``tiny``, ``sd15``) plus ``key=value`` overrides."""
    from omegaconf import OmegaConf

    from genblocks.config import ConfigError, load_config, merge_config

    builtins = {"tiny": tiny_config, "sd15": sd15_config}
    if config not in builtins:
        return load_config(XPortraitConfig, config, overrides)
    bad = [item for item in overrides if "=" not in item or item.startswith("=")]
    if bad:
        raise ConfigError(f"command line: overrides must look like key.sub=value, got {bad}")
    sources = [(f"built-in '{config}' config", OmegaConf.structured(builtins[config]()))]
    if overrides:
        sources.append(("command line", OmegaConf.from_dotlist(list(overrides))))
    return merge_config(XPortraitConfig, *sources)


def read_driving(path: Path, max_frames: int | None = None) -> tuple[list, float | None]:
    """Driving frames from a video file, a folder of images (sorted by name) or one image.

    Returns:
        `tuple`: uint8 frames (H, W, 3) and the frame rate (`None` for images).
    """
    from genblocks.media import read_image, read_video

    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"--driving folder {path} holds no images ({', '.join(_IMAGE_SUFFIXES)})")
        frames, fps = [read_image(p) for p in files[:max_frames]], None
    elif path.suffix.lower() in _VIDEO_SUFFIXES:
        video, fps = read_video(path)
        frames = list(video[:max_frames])
    elif path.suffix.lower() in _IMAGE_SUFFIXES:
        frames, fps = [read_image(path)], None
    else:
        raise ValueError(f"--driving {path} is neither a folder, a video ({_VIDEO_SUFFIXES}) nor an image")
    return frames, fps


def _animate(args: argparse.Namespace) -> int:
    import torch

    from genblocks.media import read_image, write_video
    from x_portrait.metrics import evaluate_animation
    from x_portrait.pipeline_x_portrait import load_pipeline
    from x_portrait.preprocessing import load_face_analyzer

    overrides = list(args.set)
    if args.pretrained is not None:
        overrides += ["components.source=pretrained", f"components.pretrained={args.pretrained}"]
    config = load_cli_config(args.config, overrides)
    if args.out.suffix.lower() not in (".gif", ".mp4"):
        print(f"x-portrait animate: --out must end in .gif or .mp4, got {args.out}", file=sys.stderr)
        return 2
    inference = config.inference
    source = read_image(args.source)
    frames, fps = read_driving(args.driving, inference.max_frames)
    analyzer = None
    if inference.align_driving or inference.local_patches:
        try:
            analyzer = load_face_analyzer()
        except ImportError as error:
            print(
                f"x-portrait animate: {error}\nOr run without faces: --set inference.align_driving=false "
                "inference.local_patches=false",
                file=sys.stderr,
            )
            return 2
    if config.components.source == "random":
        print("x-portrait animate: components.source=random: untrained weights, the output is noise", file=sys.stderr)
    pipe = load_pipeline(config)
    output = pipe(
        source,
        frames,
        face_analyzer=analyzer,
        align_driving=inference.align_driving,
        best_frame=inference.best_frame,
        local_patches=inference.local_patches,
        num_inference_steps=inference.num_inference_steps,
        guidance_scale=inference.guidance_scale,
        eta=inference.eta,
        ldm_timesteps=inference.ldm_timesteps,
        start_timestep=inference.start_timestep,
        window_size=inference.window_size,
        window_overlap=inference.window_overlap,
        random_window_offset=inference.random_window_offset,
        vae_chunk_size=inference.vae_chunk_size,
        controlnet_scales=(config.model.motion_scale, config.model.local_scale),
        resolution=config.model.resolution,
        generator=torch.Generator().manual_seed(inference.seed),
        output_type="pt",
    )
    rate = inference.fps or fps or 8.0
    write_video(args.out, output.frames * 2 - 1, fps=rate)
    print(f"wrote {len(output.frames)} frames ({output.frames.shape[-1]} px, {rate:g} fps) to {args.out}")
    if args.metrics:
        metrics = evaluate_animation(output.frames, output.driving_frames, source=None, analyzer=None)
        print(json.dumps(metrics.to_dict(), indent=2))
    return 0


def _train(args: argparse.Namespace) -> int:
    from x_portrait.pipeline_x_portrait import load_components
    from x_portrait.training import train

    config = load_cli_config(args.config, args.set)
    components = load_components(config, pretrained=config.train.init_from)
    folder = train(config, components)
    print(f"trained stage {config.train.stage!r} for {config.train.max_steps} steps; pipeline: {folder}")
    return 0


def _convert(args: argparse.Namespace) -> int:
    from x_portrait.convert_x_portrait_original import convert_x_portrait_checkpoint, save_converted_pipeline
    from x_portrait.modeling_x_portrait import build_base_components

    config = load_cli_config(args.config, args.set)
    components = build_base_components(args.base, config.model, load_unet_weights=False)
    report = convert_x_portrait_checkpoint(args.checkpoint, components)
    folder = save_converted_pipeline(
        components, report, args.out, patch_size=config.model.patch_size, landmark_scale=config.model.landmark_scale
    )
    print(report.summary())
    print(f"wrote {folder} ({'exact' if report.is_exact else 'see conversion_report.json for unmatched keys'})")
    return 1 if args.strict and not report.is_exact else 0


def _demo(args: argparse.Namespace) -> int:
    from x_portrait.demo import DemoConfig, run_demo

    config = DemoConfig(
        num_frames=args.frames, train_steps=args.train_steps, seed=args.seed, use_face_analyzer=not args.no_face
    )
    result = run_demo(args.out, config)
    print(f"{'frames':<20} {config.num_frames}")
    print(f"{'seconds per frame':<20} {result.seconds_per_frame:.3f}")
    for name, value in result.metrics.items():
        print(f"{name:<20} {'n/a' if value is None else f'{value:.4g}'}")
    print(f"outputs: {result.out_dir} (summary: {result.summary_path.name})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``x-portrait`` script; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    if args.command == "smoke":
        from x_portrait.smoke import main as smoke_main

        return smoke_main()
    handlers = {"animate": _animate, "train": _train, "convert": _convert, "demo": _demo}
    try:
        return handlers[args.command](args)
    except (ValueError, FileNotFoundError) as error:
        print(f"x-portrait {args.command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
