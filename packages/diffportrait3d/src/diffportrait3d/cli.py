"""The ``diffportrait3d`` command line: ``render``, ``train``, ``convert``, ``demo`` and ``smoke``, in the one
convention of :mod:`genblocks.cli`.

::

    diffportrait3d convert --checkpoint model_state-540000-001.th --base stable-diffusion-v1-5 \
        --out checkpoints/diffportrait3d
    diffportrait3d render --config paper --image face.png --eg3d eg3d_G.safetensors --out out/ --views 8 --path orbit
    diffportrait3d render --config tiny --image face.png --conditions cond/ --out out/      # tiny random model
    diffportrait3d train --config tiny --stage 2 --manifest data/views.jsonl --out runs/dp3d
    diffportrait3d train --config tiny --stage 2 --out runs/dp3d --resume --set train.max_steps=10
    diffportrait3d demo --config tiny --out outputs/diffportrait3d/demo
    diffportrait3d smoke

Files written into ``--out``: ``render``: ``view_000.png``, ``view_001.png``, ... and ``views.gif`` (``views.mp4``
with ``--format mp4``); ``train`` (the run folder): ``config.yaml``, ``checkpoints/last.ckpt``,
``checkpoints/step-<N>.ckpt``, ``metrics.csv``, ``loss.png``, ``trained/`` (a ``DiffPortrait3DPipeline`` folder);
``convert``: a ``DiffPortrait3DPipeline`` folder (``model_index.json``, one subfolder per component) and
``conversion_report.json``; ``demo``: ``orbit.gif``, ``conditions.gif``, ``noise_renders.gif``, ``side_by_side.gif``,
``strip.png``, ``README.txt``, ``summary.json``.

Configs ship inside the package in ``diffportrait3d/configs/`` (``tiny``, ``paper``), one schema
(:class:`diffportrait3d.config.DiffPortrait3DConfig`) shared by ``render``, ``train``, ``convert`` (default ``paper``:
the model section of the converted pipeline) and ``demo``; ``--set key=value`` overrides any field and
``--print-config`` shows the merged config. The work lives in :mod:`diffportrait3d.pipeline_diffportrait3d`,
:mod:`diffportrait3d.training`, :mod:`diffportrait3d.convert_diffportrait3d_original` and :mod:`diffportrait3d.demo`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from genblocks.cli import Command, CommandLine, require_file, smoke_command
from genblocks.errors import InputError

if TYPE_CHECKING:
    from diffportrait3d.config import DiffPortrait3DConfig

__all__ = ["command_line", "main"]

SCHEMA = "diffportrait3d.config:DiffPortrait3DConfig"
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def _render_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--image", type=Path, required=True, metavar="FILE", help="the portrait to render from new views"
    )
    parser.add_argument(
        "--conditions",
        type=Path,
        default=None,
        metavar="DIR",
        help="folder of condition images, one per view (instead of cameras)",
    )
    parser.add_argument("--views", type=int, default=8, metavar="N", help="number of cameras on the path")
    parser.add_argument("--path", choices=("orbit", "yaw"), default="orbit", help="camera path")
    parser.add_argument(
        "--eg3d",
        type=Path,
        default=None,
        metavar="FILE",
        help="EG3D weights (state dict or network pickle; default: tiny random)",
    )
    parser.add_argument("--format", choices=("gif", "mp4"), default="gif", help="views.gif or views.mp4 in --out")


def _train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--manifest", type=Path, default=None, metavar="FILE", help="JSON-lines manifest (default: synthetic data)"
    )
    parser.add_argument("--overwrite", action="store_true", help="start again in a used run folder")


def _convert_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint", type=Path, required=True, metavar="FILE", help="official model_state-*.th (or .safetensors)"
    )
    parser.add_argument(
        "--base", type=Path, required=True, metavar="DIR", help="diffusers SD1.5 folder (unet/, vae/, text_encoder/)"
    )
    parser.add_argument("--trust-pickle", action="store_true", help="allow full unpickling of the .th file")
    parser.add_argument(
        "--strict", action="store_true", help="exit 1 unless every key matched (scheduler buffers are ignored)"
    )


def _demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--views", type=int, default=8, metavar="N", help="views on the orbit")


def _condition_files(folder: Path) -> list[Path]:
    """The images of ``--conditions``, sorted by name."""
    if not folder.is_dir():
        raise InputError(f"--conditions {folder}: expected a folder of condition images")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"--conditions {folder}: the folder holds no images ({', '.join(_IMAGE_SUFFIXES)})")
    return files


def _render(args: argparse.Namespace, config: DiffPortrait3DConfig) -> int:
    require_file(args.image, "--image", "a portrait image")
    require_file(args.eg3d, "--eg3d", "EG3D generator weights")
    if args.views < 1:
        raise InputError(f"--views {args.views}: expected at least 1 view")
    condition_files = _condition_files(args.conditions) if args.conditions is not None else None
    if condition_files is not None and config.inference.noise_prior == "eg3d":
        raise InputError(
            f"--conditions {args.conditions}: inference.noise_prior=eg3d renders the 3D-aware noise at cameras "
            "(--views/--path), not at condition images; drop --conditions or --set inference.noise_prior=source"
        )

    from genblocks.media import read_image, write_image, write_video

    # images are read (and bad ones refused: not an image, truncated, over the pixel limit) before any model loads
    photo = read_image(args.image)
    conditions = [read_image(p) for p in condition_files] if condition_files is not None else None

    import torch

    from diffportrait3d.cameras import orbit_cameras, yaw_sweep_cameras
    from diffportrait3d.noise3d import EG3DConditionRenderer, EG3DNoisePrior, load_eg3d, tiny_eg3d
    from diffportrait3d.pipeline_diffportrait3d import load_pipeline
    from diffportrait3d.preprocessing import default_face_analyzer, prepare_portrait

    portrait = torch.from_numpy(photo).permute(2, 0, 1).float() / 255
    pipe = load_pipeline(config)
    eg3d = load_eg3d(args.eg3d) if args.eg3d is not None else tiny_eg3d()
    cameras = None
    if conditions is None:
        cameras = orbit_cameras(args.views) if args.path == "orbit" else yaw_sweep_cameras(args.views)
    noise_renders = None
    if config.inference.noise_prior == "eg3d" and cameras is not None:  # the paper's start latents (paper config)
        # EG3D's crop and the camera from landmarks when a face analyzer finds a face, else the photo and a grid
        camera_from = config.inference.camera_from
        analyzer = default_face_analyzer() if camera_from != "grid" else None
        prepared = prepare_portrait(photo, analyzer, camera_from, config.model.resolution, f"--image {args.image}")
        portrait = prepared.image
        prior = EG3DNoisePrior(eg3d, config.inference.inversion_steps, config.inference.inversion_lr)
        noise_renders = prior.renders(portrait, cameras, landmarks=prepared.landmarks)
    output = pipe(
        portrait,
        cameras=cameras,
        condition_images=conditions,
        condition_renderer=EG3DConditionRenderer(eg3d),
        noise_prior=config.inference.noise_prior,
        noise_renders=noise_renders,
        num_inference_steps=config.inference.num_inference_steps,
        guidance_scale=config.inference.guidance_scale,
        eta=config.inference.eta,
        start_timestep=config.inference.start_timestep,
        generator=torch.Generator().manual_seed(config.seed),
        output_type="pt",
    )
    assert not isinstance(output, tuple)  # return_dict=True
    for index, view in enumerate(output.images):
        write_image(args.out / f"view_{index:03d}.png", view, value_range=(0.0, 1.0))
    video = args.out / f"views.{args.format}"
    write_video(video, output.images, fps=config.inference.fps, value_range=(0.0, 1.0))
    print(f"wrote {len(output.images)} views to {args.out} (view_000.png ..., {video.name})")
    return 0


def _train(args: argparse.Namespace, config: DiffPortrait3DConfig) -> int:
    require_file(args.manifest, "--manifest", "a JSON-lines manifest")
    from diffportrait3d.training import train_from_config

    result = train_from_config(config, args.out, manifest=args.manifest, resume=args.resume, overwrite=args.overwrite)
    print(json.dumps(result, indent=2, default=str))
    return 0


def _convert(args: argparse.Namespace, config: DiffPortrait3DConfig) -> int:
    require_file(args.checkpoint, "--checkpoint", "the official model_state-*.th")
    if not (args.base / "unet").is_dir():
        raise InputError(f"--base {args.base}: expected a diffusers SD1.5 folder with unet/, vae/, text_encoder/")
    from diffportrait3d.convert_diffportrait3d_original import convert_checkpoint

    report = convert_checkpoint(
        args.checkpoint, args.base, args.out, config=config.model, trust_pickle=args.trust_pickle
    )
    print(json.dumps(report, indent=2, default=str))
    return 1 if args.strict and not report["is_exact"] else 0


def _demo(args: argparse.Namespace, config: DiffPortrait3DConfig) -> int:
    if args.views < 1:
        raise InputError(f"--views {args.views}: expected at least 1 view")
    from diffportrait3d.demo import run_demo

    summary = run_demo(args.out, config, num_views=args.views)
    print(json.dumps(summary["headline"], indent=2))
    print(f"wrote {', '.join(summary['files'])} and summary.json to {args.out}")
    return 0


command_line = CommandLine(
    prog="diffportrait3d",
    package="diffportrait3d",
    description="DiffPortrait3D portrait novel-view synthesis (arXiv 2312.13016). Configs: configs/ (tiny, paper).",
    commands=(
        Command(
            "render",
            "render the portrait --image from new views: view_000.png, ... and views.gif (or views.mp4) in --out",
            _render,
            schema=SCHEMA,
            arguments=_render_arguments,
        ),
        Command(
            "train",
            "train one stage (--stage 1: reference UNet + view ControlNet on pairs; --stage 2: cross-view modules on "
            "view sequences); --out is the run folder (config.yaml, checkpoints/, metrics.csv, loss.png, trained/)",
            _train,
            schema=SCHEMA,
            arguments=_train_arguments,
            stages=("1", "2"),
            resume=True,
        ),
        Command(
            "convert",
            "official --checkpoint model_state-*.th on the SD1.5 --base folder -> DiffPortrait3DPipeline folder in "
            "--out (model_index.json, component subfolders, conversion_report.json)",
            _convert,
            schema=SCHEMA,
            default_config="paper",
            arguments=_convert_arguments,
            out=None,
        ),
        Command(
            "demo",
            "orbit of scikit-image's astronaut with the tiny random model: orbit.gif, conditions.gif, "
            "noise_renders.gif, side_by_side.gif, strip.png, README.txt, summary.json in --out",
            _demo,
            schema=SCHEMA,
            arguments=_demo_arguments,
        ),
        smoke_command("diffportrait3d"),
    ),
)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``diffportrait3d``; returns the exit status (2 for bad input)."""
    return command_line.main(argv)


if __name__ == "__main__":
    sys.exit(main())
