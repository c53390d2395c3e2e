"""The ``agilegan3d`` command line, in the one convention of :mod:`genblocks.cli`.

::

    agilegan3d train --config tiny --out runs/toon                       # every stage, synthetic toon exemplars
    agilegan3d train --config paper --exemplars styles/pixar --out runs/pixar --set g3d.weights=ffhq512-128.pkl
    agilegan3d train --config tiny --out runs/toon --resume              # continue; finished stages are skipped
    agilegan3d train --config tiny --stage transfer --out runs/toon      # one stage (earlier ones finished)
    agilegan3d fit-style --config paper --exemplars styles/pixar --out runs/pixar  # all stages; reruns continue
    agilegan3d stylize --image face.png --style runs/toon/style --out out/ [--format gif|mp4] [--mesh]
    agilegan3d convert --checkpoint ffhq512-128.pkl --config paper --out weights/eg3d
    agilegan3d eval --images photos/ --exemplars styles/pixar --style runs/pixar/style --identity arcface.ts \
        --features inception.ts --out eval/
    agilegan3d demo --out outputs/agilegan3d/demo
    agilegan3d smoke

Files in ``--out``: ``train`` (a style run): ``prior/``, ``pairs/``, ``transfer/``, ``encoder/`` (each a genblocks run
folder: ``config.yaml``, ``checkpoints/``, ``metrics.csv``, ``loss.png``, ``trained/``; pairs: PNG + ``.npz`` tuples and
``done.json``) and ``style/`` (``config.json``, ``g3_style.safetensors``, ``encoder.safetensors``,
``g2_style.safetensors``); ``stylize``: ``strip.png``, ``orbit.gif`` (``orbit.mp4`` with ``--format mp4``),
``views/view_<k>.png``, ``mesh.obj`` (with ``--mesh``), ``summary.json``;
``eval``: ``metrics.json``; ``convert``: ``g3d.safetensors``, ``conversion_report.json``; ``demo``: ``strip.png``, ``README.txt``,
``summary.json``, ``stylize/``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from genblocks.cli import Command, CommandLine, require_file, require_folder, smoke_command

if TYPE_CHECKING:
    from agilegan3d.config import AgileGAN3DConfig

__all__ = ["command_line", "main"]

SCHEMA = "agilegan3d.config:AgileGAN3DConfig"
GROUP = "train"


def _train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--exemplars", type=Path, default=None, metavar="DIR", help="folder of ~20 style images (tiny: synthetic)"
    )


def _stylize_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", type=Path, required=True, metavar="FILE", help="the portrait photo")
    parser.add_argument(
        "--style", type=Path, default=None, metavar="DIR", help="a style folder (run/style); default: random tiny"
    )
    parser.add_argument("--views", type=int, default=None, metavar="N", help="cameras on the orbit")
    parser.add_argument(
        "--format", choices=("gif", "mp4"), default="gif", help="orbit video container (mp4 needs imageio-ffmpeg)"
    )
    parser.add_argument(
        "--mesh", action="store_true", help="also export mesh.obj from the stylised density (needs scikit-image)"
    )


def _convert_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint", type=Path, required=True, metavar="FILE", help="official EG3D network-snapshot.pkl"
    )
    parser.add_argument("--network", default="G_ema", help="network of the pickle (G_ema or G)")


def _eval_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images", type=Path, required=True, metavar="DIR", help="folder of test portrait photos")
    parser.add_argument("--exemplars", type=Path, required=True, metavar="DIR", help="the style's exemplars")
    parser.add_argument(
        "--style", type=Path, default=None, metavar="DIR", help="a style folder (run/style); default: random tiny"
    )
    parser.add_argument("--identity", type=Path, default=None, metavar="FILE", help="TorchScript face embedder")
    parser.add_argument("--features", type=Path, default=None, metavar="FILE", help="TorchScript FID/KID features")


def _demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--views", type=int, default=None, metavar="N", help="cameras on the orbit")


def _train(args: argparse.Namespace, config: AgileGAN3DConfig) -> int:
    require_folder(args.exemplars, "--exemplars", "a folder of style images")
    from agilegan3d.data import load_exemplars
    from agilegan3d.training import train_style

    if args.exemplars is not None:  # refuse too few / unreadable exemplars before anything is written
        load_exemplars(args.exemplars, config.exemplar_resolution or config.prior.resolution, config.min_exemplars)

    def progress(done: int, total: int) -> None:
        sys.stderr.write(f"\rpairs {done}/{total}")
        if done == total:
            sys.stderr.write("\n")

    style = train_style(config, args.out, args.exemplars, args.resume, progress=progress)
    print(json.dumps({"run": str(args.out), "style": str(style) if style.is_dir() else None}))
    return 0


def _fit_style(args: argparse.Namespace, config: AgileGAN3DConfig) -> int:
    """Every stage in order: a used ``--out`` is continued (a killed run resumes, finished stages are skipped)."""
    args.resume = args.out.is_dir() and any(args.out.iterdir())
    return _train(args, dataclasses.replace(config, stage="all"))


def _stylize(args: argparse.Namespace, config: AgileGAN3DConfig) -> int:
    require_file(args.image, "--image", "a portrait photo")
    require_folder(args.style, "--style", "a style folder (run/style)")
    from genblocks.errors import InputError
    from genblocks.media import read_image

    if args.views is not None and args.views < 1:
        raise InputError(f"--views {args.views}: expected at least 1")
    photo_array = read_image(args.image)
    from agilegan3d.demo import random_pipeline
    from agilegan3d.pipeline_agilegan3d import AgileGAN3DPipeline
    from agilegan3d.preprocessing import default_face_analyzer, prepare_photo
    from agilegan3d.stylize import stylize_photo

    pipeline = AgileGAN3DPipeline.from_pretrained(args.style) if args.style else random_pipeline(config)
    pipeline.config = dataclasses.replace(pipeline.config, inference=config.inference)  # --config/--set decide
    camera_from = pipeline.config.inference.camera_from
    analyzer = default_face_analyzer() if camera_from != "frontal" else None
    photo = prepare_photo(photo_array, analyzer, camera_from, 256, f"--image {args.image}")
    label = "" if args.style else "random weights"
    _, summary = stylize_photo(pipeline, photo, args.out, args.views, label, args.format, args.mesh)
    print(json.dumps({"out": str(args.out), "files": summary["files"][:2]}))
    return 0


def _convert(args: argparse.Namespace, config: AgileGAN3DConfig) -> int:
    require_file(args.checkpoint, "--checkpoint", "an EG3D network pickle or state dict")
    from agilegan3d.convert_agilegan3d_original import convert_eg3d

    report = convert_eg3d(args.checkpoint, args.out, config.g3d, args.network)
    print(json.dumps({"out": str(args.out), "tensors": report["tensors"]}))
    return 0


def _eval(args: argparse.Namespace, config: AgileGAN3DConfig) -> int:
    require_folder(args.images, "--images", "a folder of portrait photos")
    require_folder(args.exemplars, "--exemplars", "a folder of style images")
    require_folder(args.style, "--style", "a style folder (run/style)")
    require_file(args.identity, "--identity", "a TorchScript face-embedding network")
    require_file(args.features, "--features", "a TorchScript feature extractor")
    from agilegan3d.evaluation_run import evaluate_style

    metrics = evaluate_style(config, args.images, args.exemplars, args.out, args.style, args.identity, args.features)
    print(json.dumps(metrics))
    return 0


def _demo(args: argparse.Namespace, config: AgileGAN3DConfig) -> int:
    from agilegan3d.demo import run_demo

    summary = run_demo(config, args.out, args.views)
    print(json.dumps(summary["headline"]))
    return 0


command_line = CommandLine(
    prog="agilegan3d",
    package="agilegan3d",
    description="AgileGAN3D (arXiv 2303.14297): few-shot 3-D portrait stylisation by augmented transfer learning.",
    commands=(
        Command(
            "train",
            "train a style from ~20 exemplars: 2-D prior, pairs, guided EG3D transfer, multi-view encoder",
            _train,
            schema=SCHEMA,
            config_group=GROUP,
            arguments=_train_arguments,
            out=None,
            stages=("prior", "pairs", "transfer", "encoder"),
            stage_key="stage",
            resume=True,
        ),
        Command(
            "fit-style",
            "train every stage in order into --out, continuing a killed run there and skipping finished stages",
            _fit_style,
            schema=SCHEMA,
            config_group=GROUP,
            arguments=_train_arguments,
            out=None,
        ),
        Command(
            "stylize",
            "stylise a portrait photo into a multi-view strip, an orbit GIF/MP4 and optionally a mesh",
            _stylize,
            schema=SCHEMA,
            config_group=GROUP,
            arguments=_stylize_arguments,
        ),
        Command(
            "convert",
            "an official EG3D pickle -> g3d.safetensors (strict key report), the starting generator",
            _convert,
            schema=SCHEMA,
            config_group=GROUP,
            default_config="paper",
            arguments=_convert_arguments,
            out=None,
        ),
        Command(
            "eval",
            "identity similarity, multi-view identity consistency, FID/KID to the exemplars (networks you give)",
            _eval,
            schema=SCHEMA,
            config_group=GROUP,
            arguments=_eval_arguments,
        ),
        Command(
            "demo",
            "stylise scikit-image's astronaut with a tiny random-weights style (labelled)",
            _demo,
            schema=SCHEMA,
            config_group=GROUP,
            arguments=_demo_arguments,
        ),
        smoke_command("agilegan3d"),
    ),
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    return command_line.main(argv)


if __name__ == "__main__":
    sys.exit(main())
