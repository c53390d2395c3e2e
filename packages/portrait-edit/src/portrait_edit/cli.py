"""The ``portrait-edit`` command line: ``edit``, ``make-pairs``, ``train``, ``eval``, ``convert``, ``demo`` and
``smoke``, in the one convention of :mod:`genblocks.cli`.

::

    portrait-edit edit --image face.png --prompt "a man, santa claus costume" --source-prompt "a man" --out out/
    portrait-edit edit --config paper --set model.source=pretrained model.pretrained=ckpt/outfit --image photo.jpg ...
    portrait-edit make-pairs --sources portraits/ --prompt "a man, santa claus costume" --source-prompt "a man" --out pairs/
    portrait-edit train --config tiny --out runs/pe
    portrait-edit train --config paper --set data.manifest=pairs/pairs.jsonl model.source=base ... --out runs/pe
    portrait-edit train --config tiny --out runs/pe --resume --set train.max_steps=10
    portrait-edit eval --source face.png --edited out/edit.png --prompt "a man, santa claus costume" --out eval/
    portrait-edit convert --unet unet.pth --adapter adapter.pth --base sd15/ --image-encoder clip-b32/ --out ckpt/outfit
    portrait-edit demo --out outputs/portrait-edit/demo
    portrait-edit smoke

Configs ship inside the package in ``portrait_edit/configs/`` (``tiny``: random 64-px model; ``paper``: the paper's
settings), shared by every command (one schema, :class:`portrait_edit.config.PortraitEditConfig`); ``--set`` overrides
any field and ``--print-config`` shows the merged config. Files in ``--out``: ``edit`` and ``demo`` write ``edit.png``,
``mask.png`` (the edit mask as a heat overlay), ``strip.png`` (labelled before | mask | after) and ``summary.json``
(``demo`` also ``README.txt``); ``make-pairs`` writes ``condition/``, ``gt/``, ``pairs.jsonl`` (the training manifest)
and ``report.jsonl``; ``train`` fills the run folder (``config.yaml``, ``checkpoints/``, ``metrics.csv``, ``loss.png``,
``trained/`` (a ``PortraitEditPipeline`` folder), ``summary.json``); ``eval`` writes ``metrics.json``; ``convert`` writes a ``PortraitEditPipeline`` folder
(``model_index.json``, component sub-folders, ``conversion_report.json``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from genblocks.cli import Command, CommandLine, require_file, require_folder, smoke_command
from genblocks.errors import InputError

if TYPE_CHECKING:
    from portrait_edit.config import PortraitEditConfig

__all__ = ["command_line", "main"]

SCHEMA = "portrait_edit.config:PortraitEditConfig"


def _edit_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", type=Path, required=True, metavar="FILE", help="portrait or whole photo")
    parser.add_argument("--prompt", required=True, help='target prompt, e.g. "a man, santa claus costume"')
    parser.add_argument("--source-prompt", default=None, help='source prompt, e.g. "a man" (the mask compares them)')
    parser.add_argument(
        "--aligned",
        action="store_true",
        help="the image is an aligned portrait (no face detection; square-cropped and resized to the model size)",
    )


def _edit(args: argparse.Namespace, config: PortraitEditConfig) -> int:
    require_file(args.image, "--image", "a portrait image")
    if config.sampling.use_mask and args.source_prompt is None:
        raise InputError(
            '--source-prompt: expected the source\'s prompt (e.g. "a man") for the edit mask, or '
            "--set sampling.use_mask=false"
        )
    from portrait_edit.demo import edit_file

    result, files = edit_file(config, args.image, args.prompt, args.source_prompt, args.out, aligned=args.aligned)
    for note in result.notes:
        print(f"portrait-edit edit: note: {note}", file=sys.stderr)
    print(f"edited in {result.seconds:.2f} s; wrote {', '.join(p.name for p in files)} to {args.out}")
    return 0


def _pairs_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sources", type=Path, required=True, metavar="PATH", help="folder of aligned portraits or a .jsonl listing"
    )
    parser.add_argument("--prompt", default=None, help="target prompt of every source (a folder of sources)")
    parser.add_argument("--source-prompt", default=None, help="source prompt of every source")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _make_pairs(args: argparse.Namespace, config: PortraitEditConfig) -> int:
    if not args.sources.exists():
        raise InputError(f"--sources {args.sources}: not found (expected a folder of portraits or a .jsonl file)")
    if config.data.pair_generator != "editor":
        raise InputError(f"data.pair_generator: only 'editor' ships, got {config.data.pair_generator!r}")
    from portrait_edit.demo import load_face_analyzer
    from portrait_edit.pairs import DiffusersEditor, EditorPairGenerator, PairFilters, make_pairs, read_sources

    sources = read_sources(args.sources, args.prompt, args.source_prompt)
    pairs = config.pairs
    analyzer = load_face_analyzer()
    if pairs.editor is None:
        print(
            "portrait-edit make-pairs: pairs.editor is unset: a tiny random editor (its pairs are noise)",
            file=sys.stderr,
        )
        editor = DiffusersEditor.tiny(seed=config.model.seed, resolution=config.data.image_size)
    else:
        editor = DiffusersEditor.from_pretrained(pairs.editor, resolution=config.data.image_size)
    filters = PairFilters(
        identity_threshold=pairs.identity_threshold,
        landmark_tolerance=pairs.landmark_tolerance,
        outside_psnr_min=pairs.outside_psnr_min,
        edit_region=pairs.edit_region,
        identity_max_distance=pairs.identity_max_distance,
    )
    summary = make_pairs(
        sources,
        EditorPairGenerator(editor, analyzer, filters),
        args.out,
        image_size=config.data.image_size,
        max_pairs=pairs.max_pairs,
        seed=config.sampling.seed,
        progress=not args.no_progress,
    )
    print(
        f"pairs: {summary.kept} kept, {summary.rejected} rejected, {summary.skipped} done earlier; "
        f"manifest {summary.manifest}, report {summary.report}"
    )
    return 0


def _train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--overwrite", action="store_true", help="start again in a used run folder")


def _train(args: argparse.Namespace, config: PortraitEditConfig) -> int:
    data, train = config.data, config.train
    if data.manifest is not None:
        require_file(Path(data.manifest), "data.manifest", "the pairs.jsonl of make-pairs")
    if train.init_from is not None:
        require_folder(Path(train.init_from), "train.init_from", "a PortraitEditPipeline folder")
    if data.manifest is None:
        print(
            "portrait-edit train: data.manifest is unset: synthetic pairs (a smoke run, not training)", file=sys.stderr
        )
    from portrait_edit.training import train_from_config

    summary = train_from_config(config, args.out, resume=args.resume, overwrite=args.overwrite)
    print(
        f"trained {summary['steps']} steps ({summary['optimizer']}, {summary['prediction_type']}): loss "
        f"{summary['first_loss']:.4g} -> {summary['last_loss']:.4g}; pipeline in {summary['trained']}"
    )
    return 0


def _eval_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", type=Path, required=True, metavar="FILE", help="the source portrait")
    parser.add_argument("--edited", type=Path, required=True, metavar="FILE", help="the edit (same size)")
    parser.add_argument("--mask", type=Path, default=None, metavar="FILE", help="edit mask image (white = edited)")
    parser.add_argument("--prompt", default=None, help="the edit's prompt (CLIP score)")
    parser.add_argument("--clip", type=Path, default=None, metavar="DIR", help="local CLIPModel folder (CLIP score)")
    parser.add_argument("--no-face", action="store_true", help="skip identity and landmarks (no dlib)")


def _eval(args: argparse.Namespace, config: PortraitEditConfig) -> int:
    require_file(args.source, "--source", "the source image")
    require_file(args.edited, "--edited", "the edited image")
    if args.mask is not None:
        require_file(args.mask, "--mask", "a grey mask image")
    import numpy as np

    from genblocks.media import read_image
    from portrait_edit.demo import load_face_analyzer
    from portrait_edit.metrics import ClipScorer, evaluate_edit

    source, edited = read_image(args.source), read_image(args.edited)
    if source.shape != edited.shape:
        raise InputError(
            f"--edited {args.edited}: expected the source's size {source.shape[1::-1]}, got {edited.shape[1::-1]}"
        )
    mask = None if args.mask is None else read_image(args.mask, mode="L").astype(np.float32) / 255.0
    clip = None if args.clip is None else ClipScorer.from_pretrained(args.clip)
    analyzer = None if args.no_face else load_face_analyzer()
    metrics = evaluate_edit(source, edited, mask, args.prompt, analyzer, clip)
    args.out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(metrics.to_dict(), indent=2)
    (args.out / "metrics.json").write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


def _convert_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--unet", type=Path, required=True, metavar="FILE", help="official unet.pth")
    parser.add_argument("--adapter", type=Path, required=True, metavar="FILE", help="official adapter.pth")
    parser.add_argument("--base", type=Path, required=True, metavar="DIR", help="diffusers SD1.5 folder")
    parser.add_argument(
        "--image-encoder", type=Path, required=True, metavar="DIR", help="CLIP vision folder (clip-vit-base-patch32)"
    )
    parser.add_argument("--lenient", action="store_true", help="write the folder even when keys do not all match")


def _convert(args: argparse.Namespace, config: PortraitEditConfig) -> int:
    require_file(args.unet, "--unet", "the official unet.pth")
    require_file(args.adapter, "--adapter", "the official adapter.pth")
    require_folder(args.base, "--base", "a diffusers SD1.5 folder")
    require_folder(args.image_encoder, "--image-encoder", "a CLIP vision folder")
    from portrait_edit.convert_portrait_edit_original import convert_original_checkpoint

    report = convert_original_checkpoint(
        args.unet,
        args.adapter,
        args.base,
        args.image_encoder,
        args.out,
        combine_type=config.model.combine_type,
        vae_pool=config.model.vae_pool,
        strict=not args.lenient,
    )
    print(report.summary())
    print(f"wrote {args.out}")
    return 0


def _demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prompt", default="a woman, santa claus costume", help="target prompt")
    parser.add_argument("--source-prompt", default="a woman", help="source prompt")
    parser.add_argument("--no-face", action="store_true", help="no dlib: edit a centre crop instead of the face")


def _demo(args: argparse.Namespace, config: PortraitEditConfig) -> int:
    from portrait_edit.demo import run_demo

    summary = run_demo(config, args.out, args.prompt, args.source_prompt, use_face=not args.no_face)
    for key, value in summary["headline"].items():
        print(f"{key:<20} {value:.4g}")
    print(f"outputs: {args.out} ({', '.join(summary['files'])})")
    return 0


command_line = CommandLine(
    prog="portrait-edit",
    package="portrait_edit",
    description=(
        "Feature-preserving portrait editing learned from generated pairs (arXiv 2407.20455) on diffusers. Configs: "
        "portrait_edit/configs/ (tiny, paper), shared by every command; --print-config shows the merged one."
    ),
    commands=(
        Command(
            "edit",
            "edit a portrait (--image; a whole photo is face-aligned and pasted back, --aligned skips that): "
            "edit.png, mask.png, strip.png, summary.json in --out",
            _edit,
            schema=SCHEMA,
            arguments=_edit_arguments,
        ),
        Command(
            "make-pairs",
            "generate training pairs from --sources with an off-the-shelf editor + identity/landmark/outside-PSNR "
            "filters (resumable): condition/, gt/, pairs.jsonl, report.jsonl in --out",
            _make_pairs,
            schema=SCHEMA,
            arguments=_pairs_arguments,
            out=None,
        ),
        Command(
            "train",
            "train the UNet and the adapter on pairs (data.manifest; synthetic pairs when unset): --out is the run "
            "folder (config.yaml, checkpoints/, metrics.csv, loss.png, trained/ pipeline, summary.json)",
            _train,
            schema=SCHEMA,
            arguments=_train_arguments,
            out=None,
            resume=True,
        ),
        Command(
            "eval",
            "identity, landmark distance, PSNR/SSIM outside the mask and CLIP score (--clip) of --edited against "
            "--source: metrics.json in --out",
            _eval,
            schema=SCHEMA,
            arguments=_eval_arguments,
        ),
        Command(
            "convert",
            "official unet.pth + adapter.pth on an SD1.5 --base and a CLIP --image-encoder -> PortraitEditPipeline "
            "folder in --out (model_index.json, component folders, conversion_report.json)",
            _convert,
            schema=SCHEMA,
            default_config="paper",
            arguments=_convert_arguments,
            out=None,
        ),
        Command(
            "demo",
            "edit a shipped real portrait (scikit-image's astronaut) with tiny random weights: edit.png, mask.png, "
            "strip.png, summary.json, README.txt in --out",
            _demo,
            schema=SCHEMA,
            arguments=_demo_arguments,
        ),
        smoke_command("portrait_edit"),
    ),
)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``portrait-edit`` script; returns the exit status (2 for bad input)."""
    return command_line.main(argv)


if __name__ == "__main__":
    sys.exit(main())
