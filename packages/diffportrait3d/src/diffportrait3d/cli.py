"""The ``diffportrait3d`` command line: ``render``, ``train``, ``convert``, ``demo`` and ``smoke``, in the one
convention of :mod:`genblocks.cli`.

::

    diffportrait3d render --image face.png --out out/ --views 8 --path orbit --pretrained checkpoints/dp3d \
        --eg3d eg3d_G.safetensors --set inference.noise_prior=eg3d
    diffportrait3d render --image face.png --conditions cond/ --out out/                 # tiny random model
    diffportrait3d train --config tiny --stage 2 --manifest data/views.jsonl --out runs/dp3d
    diffportrait3d convert --checkpoint model_state-540000-001.th --base stable-diffusion-v1-5 --out checkpoints/dp3d
    diffportrait3d demo --out outputs/diffportrait3d/demo
    diffportrait3d smoke

Configs ship inside the package in ``diffportrait3d/configs/run/`` (``tiny``, ``sd15``), shared by ``render`` and
``train``; ``--set key=value`` overrides any field. ``render`` writes ``view_000.png``, ... and ``views.gif`` (or
``views.mp4`` with ``--format mp4``) into ``--out``; ``train`` uses ``--out`` as its run folder; ``convert`` writes a
``DiffPortrait3DPipeline`` folder there.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from genblocks.cli import Command, CommandLine, smoke_command
from genblocks.errors import InputError

if TYPE_CHECKING:
    from diffportrait3d.config import DiffPortrait3DConfig

__all__ = ["command_line", "main"]

SCHEMA = "diffportrait3d.config:DiffPortrait3DConfig"
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def _render_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", type=Path, required=True, help="portrait image")
    parser.add_argument("--conditions", type=Path, default=None, help="folder of condition images (one per view)")
    parser.add_argument("--views", type=int, default=8, help="number of cameras on the path")
    parser.add_argument("--path", choices=("orbit", "yaw"), default="orbit", help="camera path")
    parser.add_argument("--eg3d", type=Path, default=None, help="EG3D weights: state dict or network pickle")
    parser.add_argument("--pretrained", default=None, help="DiffPortrait3DPipeline folder (sets source=pretrained)")
    parser.add_argument("--format", choices=("gif", "mp4"), default="gif", help="video of the views in --out")


def _train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--manifest", type=Path, default=None, help="JSON-lines manifest (default: synthetic data)")
    parser.add_argument("--overwrite", action="store_true", help="start again in a used run folder")


def _convert_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", type=Path, required=True, help="official .th (or .safetensors) file")
    parser.add_argument("--base", type=Path, required=True, help="diffusers SD1.5 folder (vae, text encoder, ...)")
    parser.add_argument("--trust-pickle", action="store_true", help="allow full unpickling of the .th file")
    parser.add_argument(
        "--strict", action="store_true", help="exit 1 unless every key matched (scheduler buffers are ignored)"
    )


def _demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--views", type=int, default=8, help="views on the orbit")


def _render(args: argparse.Namespace, config: DiffPortrait3DConfig) -> int:
    import torch

    from diffportrait3d.cameras import orbit_cameras, yaw_sweep_cameras
    from diffportrait3d.noise3d import EG3DConditionRenderer, EG3DNoisePrior, load_eg3d, tiny_eg3d
    from diffportrait3d.pipeline_diffportrait3d import load_pipeline
    from genblocks.media import read_image, write_image, write_video

    if args.pretrained is not None:
        config = replace(config, source="pretrained", pretrained=args.pretrained)
    pipe = load_pipeline(config)
    portrait = torch.from_numpy(read_image(args.image)).permute(2, 0, 1).float() / 255
    eg3d = load_eg3d(args.eg3d) if args.eg3d is not None else tiny_eg3d()
    cameras = orbit_cameras(args.views) if args.path == "orbit" else yaw_sweep_cameras(args.views)
    conditions = None
    if args.conditions is not None:
        if not args.conditions.is_dir():
            raise InputError(f"--conditions {args.conditions}: expected a folder of condition images")
        files = sorted(p for p in args.conditions.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
        if not files:
            raise InputError(
                f"--conditions {args.conditions}: the folder holds no images ({', '.join(_IMAGE_SUFFIXES)})"
            )
        conditions = [read_image(p) for p in files]
        cameras = None
    noise_renders = None
    if config.inference.noise_prior == "eg3d" and cameras is not None:
        prior = EG3DNoisePrior(eg3d, config.inference.inversion_steps, config.inference.inversion_lr)
        noise_renders = prior.renders(portrait, cameras)
    output = pipe(
        portrait,
        cameras=cameras,
        condition_images=conditions,
        condition_renderer=EG3DConditionRenderer(eg3d),
        noise_prior="source" if config.inference.noise_prior == "source" else "none",
        noise_renders=noise_renders,
        num_inference_steps=config.inference.num_inference_steps,
        guidance_scale=config.inference.guidance_scale,
        eta=config.inference.eta,
        start_timestep=config.inference.start_timestep,
        generator=torch.Generator().manual_seed(config.seed),
        output_type="pt",
    )
    for index, view in enumerate(output.images):
        write_image(args.out / f"view_{index:03d}.png", view, value_range=(0.0, 1.0))
    video = args.out / f"views.{args.format}"
    write_video(video, output.images, fps=config.inference.fps, value_range=(0.0, 1.0))
    print(f"wrote {len(output.images)} views to {args.out} (view_000.png ..., {video.name})")
    return 0


def _train(args: argparse.Namespace, config: DiffPortrait3DConfig) -> int:
    from diffportrait3d.training import train_from_config

    result = train_from_config(config, args.out, manifest=args.manifest, resume=args.resume, overwrite=args.overwrite)
    print(json.dumps(result, indent=2, default=str))
    return 0


def _convert(args: argparse.Namespace, config: None) -> int:
    from diffportrait3d.convert_diffportrait3d_original import convert_checkpoint

    report = convert_checkpoint(args.checkpoint, args.base, args.out, trust_pickle=args.trust_pickle)
    print(json.dumps(report, indent=2, default=str))
    return 1 if args.strict and not report["is_exact"] else 0


def _demo(args: argparse.Namespace, config: None) -> int:
    from diffportrait3d.demo import run_demo

    summary = run_demo(args.out, num_views=args.views)
    print(json.dumps(summary["headline"], indent=2))
    print(f"wrote {args.out / 'orbit.gif'} and {args.out / 'summary.json'}")
    return 0


command_line = CommandLine(
    prog="diffportrait3d",
    package="diffportrait3d",
    description="DiffPortrait3D portrait novel-view synthesis (arXiv 2312.13016).",
    commands=(
        Command(
            "render",
            "render a portrait from new views (PNGs + views.gif in --out)",
            _render,
            schema=SCHEMA,
            config_group="run",
            arguments=_render_arguments,
        ),
        Command(
            "train",
            "run one training stage from a manifest; --out is the run folder",
            _train,
            schema=SCHEMA,
            config_group="run",
            arguments=_train_arguments,
            stages=("1", "2"),
            resume=True,
        ),
        Command(
            "convert",
            "official model_state-*.th -> DiffPortrait3DPipeline folder in --out",
            _convert,
            arguments=_convert_arguments,
            out=None,
        ),
        Command(
            "demo",
            "orbit GIF of scikit-image's astronaut with the tiny random model",
            _demo,
            arguments=_demo_arguments,
        ),
        smoke_command("diffportrait3d"),
    ),
)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``diffportrait3d``; returns the exit status (2 for bad input)."""
    return command_line.main(argv)


if __name__ == "__main__":
    import sys

    sys.exit(main())
