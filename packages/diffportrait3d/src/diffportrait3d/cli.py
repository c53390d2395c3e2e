"""The ``diffportrait3d`` command line: ``render``, ``train``, ``convert``, ``demo`` and ``smoke``.

::

    diffportrait3d render --image face.png --out orbit.gif --views 8 --path orbit --pretrained checkpoints/dp3d \
        --eg3d eg3d_G.safetensors --noise-prior eg3d
    diffportrait3d render --image face.png --conditions cond/ --out views.gif --config tiny
    diffportrait3d train --config tiny --set train.stage=2 --manifest data/views.jsonl
    diffportrait3d convert --checkpoint model_state-540000-001.th --base stable-diffusion-v1-5 --out checkpoints/dp3d
    diffportrait3d demo --out outputs/diffportrait3d/demo
    diffportrait3d smoke

``--config`` takes a YAML file or a built-in name (``tiny``, ``sd15``); ``--set key=value`` overrides any field.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from diffportrait3d.config import DiffPortrait3DConfig, sd15_config, tiny_config

__all__ = ["build_parser", "load_cli_config", "main"]

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``diffportrait3d``."""
    parser = argparse.ArgumentParser(
        prog="diffportrait3d", description="DiffPortrait3D portrait novel-view synthesis (arXiv 2312.13016)."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress at INFO level")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{render,train,convert,demo,smoke}")

    def add_config(sub: argparse.ArgumentParser, default: str) -> None:
        sub.add_argument("--config", default=default, help=f"YAML file, or 'tiny' / 'sd15' (default: {default})")
        sub.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")

    render = commands.add_parser("render", help="render a portrait from new views (GIF/MP4 or PNG folder)")
    render.add_argument("--image", type=Path, required=True, help="portrait image")
    render.add_argument("--out", type=Path, required=True, help="output .gif / .mp4, or a folder for PNGs")
    render.add_argument("--conditions", type=Path, default=None, help="folder of condition images (one per view)")
    render.add_argument("--views", type=int, default=8, help="number of cameras on the path (default 8)")
    render.add_argument("--path", choices=("orbit", "yaw"), default="orbit", help="camera path (default orbit)")
    render.add_argument("--eg3d", type=Path, default=None, help="EG3D generator state dict (default: tiny random)")
    render.add_argument("--pretrained", default=None, help="DiffPortrait3DPipeline folder")
    add_config(render, "tiny")

    train = commands.add_parser("train", help="run one training stage (train.stage) from a manifest")
    train.add_argument("--manifest", type=Path, default=None, help="JSON-lines manifest (default: synthetic data)")
    add_config(train, "tiny")

    convert = commands.add_parser("convert", help="official model_state-*.th -> DiffPortrait3DPipeline folder")
    convert.add_argument("--checkpoint", type=Path, required=True, help="official .th (or .safetensors) file")
    convert.add_argument("--base", type=Path, required=True, help="diffusers SD1.5 folder (vae, text encoder, ...)")
    convert.add_argument("--out", type=Path, required=True, help="output pipeline folder")
    convert.add_argument("--trust-pickle", action="store_true", help="allow full unpickling of the .th file")

    demo = commands.add_parser("demo", help="orbit GIF of scikit-image's astronaut with the tiny random model")
    demo.add_argument("--out", type=Path, default=Path("outputs/diffportrait3d/demo"), help="output folder")
    demo.add_argument("--views", type=int, default=8, help="views on the orbit (default 8)")

    commands.add_parser("smoke", help="tiny end-to-end self check")
    return parser


def load_cli_config(name: str, overrides: Sequence[str] = ()) -> DiffPortrait3DConfig:
    """A built-in config (``tiny`` / ``sd15``) or a YAML file, with dotted overrides."""
    from omegaconf import OmegaConf

    from genblocks.config import load_config, merge_config

    if name in ("tiny", "sd15"):
        base = tiny_config() if name == "tiny" else sd15_config()
        if not overrides:
            return base
        return merge_config(
            DiffPortrait3DConfig,
            (name, OmegaConf.structured(base)),
            ("--set", OmegaConf.from_dotlist(list(overrides))),
        )
    return load_config(DiffPortrait3DConfig, name, overrides)


def _render(args: argparse.Namespace) -> int:
    import torch

    from diffportrait3d.cameras import orbit_cameras, yaw_sweep_cameras
    from diffportrait3d.noise3d import EG3DConditionRenderer, EG3DNoisePrior, load_eg3d, tiny_eg3d
    from diffportrait3d.pipeline_diffportrait3d import load_pipeline
    from genblocks.media import read_image, write_image, write_video

    config = load_cli_config(args.config, args.set)
    if args.pretrained is not None:
        config = replace(config, source="pretrained", pretrained=args.pretrained)
    pipe = load_pipeline(config)
    portrait = torch.from_numpy(read_image(args.image)).permute(2, 0, 1).float() / 255
    eg3d = load_eg3d(args.eg3d) if args.eg3d is not None else tiny_eg3d()
    cameras = orbit_cameras(args.views) if args.path == "orbit" else yaw_sweep_cameras(args.views)
    conditions = None
    if args.conditions is not None:
        files = sorted(p for p in args.conditions.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
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
    if args.out.suffix.lower() in (".gif", ".mp4"):
        write_video(args.out, output.images, fps=config.inference.fps, value_range=(0.0, 1.0))
    else:
        for index, view in enumerate(output.images):
            write_image(args.out / f"view_{index:03d}.png", view, value_range=(0.0, 1.0))
    print(f"wrote {len(output.images)} views to {args.out}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from diffportrait3d.training import train_from_config

    config = load_cli_config(args.config, args.set)
    result = train_from_config(config, manifest=args.manifest)
    print(json.dumps(result, indent=2, default=str))
    return 0


def _convert(args: argparse.Namespace) -> int:
    from diffportrait3d.convert_diffportrait3d_original import convert_checkpoint

    report = convert_checkpoint(args.checkpoint, args.base, args.out, trust_pickle=args.trust_pickle)
    print(json.dumps(report, indent=2, default=str))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``diffportrait3d``; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    if args.command == "render":
        return _render(args)
    if args.command == "train":
        return _train(args)
    if args.command == "convert":
        return _convert(args)
    if args.command == "demo":
        from diffportrait3d.demo import run_demo

        summary = run_demo(args.out, num_views=args.views)
        print(json.dumps(summary["headline"], indent=2))
        print(f"wrote {args.out / 'orbit.gif'} and {args.out / 'summary.json'}")
        return 0
    from diffportrait3d.smoke import main as smoke_main

    return smoke_main()


if __name__ == "__main__":
    sys.exit(main())
