"""The ``id-patch`` command line: ``generate``, ``train``, ``eval``, ``convert``, ``demo`` and ``smoke``, in the one
convention of :mod:`genblocks.cli`.

::

    id-patch generate --config tiny --image a.png b.png --positions 20,22 44,22 --out outputs/gen
    id-patch generate --config paper --image a.png b.png --set sampling.guidance_scale=5.5 --out outputs/gen
    id-patch train --config tiny --set train.max_steps=20 --out runs/id-patch
    id-patch train --config tiny --resume --out runs/id-patch
    id-patch eval --config tiny --image a.png b.png --positions 20,22 44,22 --num-images 4 --out out/eval
    id-patch eval --config tiny --generated group.png --image a.png b.png --positions 86,87 237,87 --out out/eval
    id-patch convert --checkpoint models/ID-Patch --out models/id-patch-converted
    id-patch demo --config tiny --out outputs/id-patch/demo
    id-patch smoke

Files written into ``--out``: ``generate``: ``image.png``, ``condition.png``, ``image_and_condition.png``,
``summary.json``; ``train`` (the run folder): ``config.yaml``, ``checkpoints/last.ckpt``, ``metrics.csv``,
``loss.png``, ``trained/controlnet/``, ``trained/id_projector/``, ``summary.json``; ``eval``: ``eval.json`` and
``image_000.png``, ... (the generated images); ``convert``: ``id_projector/`` and ``controlnet/``; ``demo``:
``group.png``, ``condition.png``, ``group_and_condition_x4.png``, ``subject_0.png``, ``subject_1.png``,
``subjects.png``, ``summary.json``.

Configs ship inside the package: ``id_patch/configs/`` (``tiny``, ``paper`` (SDXL): `id_patch.config.GenerateConfig`,
also read by ``eval`` and ``demo``) and ``id_patch/configs/train/`` (``tiny``, ``paper`` (SDXL): `id_patch.config.TrainConfig`);
``--print-config`` shows the merged one. The script stays thin: the work lives in :mod:`id_patch.config` (generation),
:mod:`id_patch.training`, :mod:`id_patch.evaluation`, :mod:`id_patch.convert_id_patch_original`, :mod:`id_patch.demo`
and :mod:`id_patch.smoke`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from genblocks.cli import Command, CommandLine, smoke_command
from genblocks.errors import InputError

__all__ = ["command_line", "main", "parse_positions"]


def parse_positions(values: Sequence[str]) -> list[tuple[float, float]]:
    """``["x,y", ...]`` pixel positions -> ``[(x, y), ...]``; a malformed entry is a ``ValueError`` naming it."""
    positions = []
    for index, value in enumerate(values):
        parts = value.split(",")
        try:
            if len(parts) != 2:
                raise ValueError
            positions.append((float(parts[0]), float(parts[1])))
        except ValueError:
            raise InputError(f"--positions entry {index} ({value!r}): expected 'x,y' in pixels, e.g. 20,22") from None
    return positions


def _check_inputs(args: argparse.Namespace) -> None:
    """Refuse missing input files of ``generate`` / ``eval`` before any model is built, naming the file."""
    for index, path in enumerate(args.image):
        if not path.is_file():
            raise InputError(f"subject {index}: face image {path} not found (--image)")
    if args.keypoints is not None and args.positions:
        raise InputError("pass --positions or --keypoints, not both")
    if args.keypoints is not None and not args.keypoints.is_file():
        raise InputError(f"--keypoints {args.keypoints}: file not found (expected an (F, 17, 2|3) .npy)")
    for path in getattr(args, "generated", None) or ():
        if not path.is_file():
            raise InputError(f"--generated {path}: image not found")


def _subjects(args: argparse.Namespace, height: int, width: int) -> dict[str, Any]:
    """Face images, positions or keypoints of ``generate`` / ``eval`` (checked by `_check_inputs`) as pipeline keyword
    arguments."""
    import numpy as np
    from PIL import Image

    faces = []
    for path in args.image:
        with Image.open(path) as image:
            faces.append(image.convert("RGB"))
    if args.keypoints is not None:
        return {"face_images": faces, "keypoints": np.load(args.keypoints, allow_pickle=False)}
    if args.positions:
        positions = parse_positions(args.positions)
    else:
        positions = [(width * (i + 0.5) / len(faces), height * 0.35) for i in range(len(faces))]
    return {"face_images": faces, "face_locations": positions}


def _size(config: Any, pipe: Any) -> tuple[int, int]:
    default = pipe.unet.config.sample_size * pipe.vae_scale_factor
    return config.sampling.height or default, config.sampling.width or default


def _run_generate(args: argparse.Namespace, config: Any) -> int:
    import time

    from id_patch.config import build_face_encoder, build_pipeline, generate
    from id_patch.demo import side_by_side

    _check_inputs(args)
    if args.prompt is not None:
        config.prompt = args.prompt
    out = args.out
    pipe = build_pipeline(config.model)
    encoder = build_face_encoder(config.face, pipe.id_projector.config.face_dim, device=config.model.device)
    height, width = _size(config, pipe)
    subjects = _subjects(args, height, width)
    start = time.perf_counter()
    output = generate(pipe, config, face_encoder=encoder, **subjects)
    seconds = time.perf_counter() - start
    out.mkdir(parents=True, exist_ok=True)
    image, condition = output.images[0], output.condition_images[0]
    image.save(out / "image.png")
    condition.save(out / "condition.png")
    side_by_side([image, condition]).save(out / "image_and_condition.png")
    summary = {
        "prompt": config.prompt,
        "faces": [str(p) for p in args.image],
        "positions": subjects.get("face_locations"),
        "keypoints": None if args.keypoints is None else str(args.keypoints),
        "seconds": seconds,
        "size": [height, width],
        "sampling": vars(config.sampling),
        "model": vars(config.model) | {"id_patch": vars(config.model.id_patch)},
        "face_backend": config.face.backend,
        "files": ["image.png", "condition.png", "image_and_condition.png"],
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    print(f"generated {len(args.image)} subject(s) in {seconds:.2f} s: {out / 'image_and_condition.png'}")
    return 0


def _run_train(args: argparse.Namespace, config: Any) -> int:
    from id_patch.training import train

    summary = train(config, args.out, resume=args.resume, overwrite=args.overwrite)
    print(f"{'steps':<12} {summary['steps']}")
    print(f"{'first loss':<12} {summary['first_loss']:.4f}")
    print(f"{'last loss':<12} {summary['last_loss']:.4f}")
    print(f"checkpoint: {summary['checkpoint']}")
    print(f"trained controlnet + id_projector: {summary['trained']}")
    return 0


def _train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--overwrite", action="store_true", help="start again in a used run folder")


def _evaluator(args: argparse.Namespace) -> Any:
    from id_patch.config import FaceSection, build_face_encoder

    if args.evaluator == "arcface":
        if args.arcface_weights is None:
            raise InputError("--evaluator arcface needs --arcface-weights (a local IR-SE-50 checkpoint)")
        section = FaceSection(backend="arcface", arcface_weights=str(args.arcface_weights))
        return build_face_encoder(section, 512)
    return build_face_encoder(FaceSection(backend="dlib"), 128)


def _run_eval(args: argparse.Namespace, config: Any) -> int:
    from dataclasses import replace

    import numpy as np
    from PIL import Image

    from id_patch.condition import order_subjects
    from id_patch.config import build_face_encoder, build_pipeline, generate
    from id_patch.evaluation import association_accuracy, summarize, timed

    _check_inputs(args)
    if args.prompt is not None:
        config.prompt = args.prompt
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    evaluator = _evaluator(args)
    pipe = build_pipeline(config.model)
    height, width = _size(config, pipe)
    subjects = _subjects(args, height, width)
    if "keypoints" in subjects:
        from id_patch.condition import face_anchors

        anchors = face_anchors(subjects["keypoints"], pipe.id_projector.config.face_anchor)
        targets = anchors[order_subjects(anchors)].numpy()
    else:
        targets = np.asarray(subjects["face_locations"], dtype=np.float64)
    references = evaluator.encode_subjects(subjects["face_images"]).embeds
    images, seconds = [], []
    if args.generated:
        images = [Image.open(path).convert("RGB") for path in args.generated]
    else:
        encoder = build_face_encoder(config.face, pipe.id_projector.config.face_dim, device=config.model.device)
        for index in range(args.num_images):
            run_config = replace(config, sampling=replace(config.sampling, seed=config.sampling.seed + index))
            output, took = timed(lambda c=run_config: generate(pipe, c, face_encoder=encoder, **subjects))
            output.images[0].save(out / f"image_{index:03d}.png")
            images.append(output.images[0])
            seconds.append(took)
    results = []
    for image in images:
        found = evaluator.encode_group(image)
        anchor = pipe.id_projector.config.face_anchor
        results.append(
            association_accuracy(
                found.embeds,
                found.anchors(anchor),
                references,
                targets,
                max_distance=args.max_distance,
                identity_matching=args.identity_matching,
            )
        )
    summary = summarize(results, seconds)
    report = {
        "evaluator": args.evaluator,
        "identity_matching": args.identity_matching,
        "max_distance": args.max_distance,
        "targets": targets.tolist(),
        **summary.to_dict(),
    }
    (out / "eval.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    resemblance = "n/a (no face found)" if report["resemblance"] is None else f"{summary.resemblance:.4f}"
    timing = "n/a" if report["seconds_per_image"] is None else f"{summary.seconds_per_image:.3f}"
    print(f"{'images':<26} {summary.num_images}")
    print(f"{'ID-position accuracy':<26} {summary.accuracy:.4f}")
    print(f"{'face-ID resemblance':<26} {resemblance}")
    print(f"{'faces found / subjects':<26} {summary.detection_rate:.3f}")
    print(f"{'seconds per image':<26} {timing}")
    print(f"report: {out / 'eval.json'}")
    return 0


def _run_convert(args: argparse.Namespace, config: None) -> int:
    from id_patch.convert_id_patch_original import convert_release

    conversion = convert_release(args.checkpoint, args.out, args.dim_head, expect_paper_shapes=not args.any_shape)
    print(f"projection: {conversion.projector.id_patch_config}")
    for name, report in conversion.reports.items():
        status = "exact" if report.is_exact else f"unexpected {report.unexpected_keys}, missing {report.missing_keys}"
        print(f"{name:<12} {status}")
    print(f"written: {args.out / 'id_projector'} and {args.out / 'controlnet'}")
    return 0


def _run_demo(args: argparse.Namespace, config: Any) -> int:
    from id_patch.demo import run_demo

    summary = run_demo(args.out, config)
    headline = summary["headline"]
    print(f"{len(summary['files'])} files in {args.out}: {', '.join(summary['files'])}")
    print(f"subjects: {summary['subjects']}")
    print(
        f"{headline['subjects']} subjects, {headline['context_tokens']} context tokens, "
        f"{headline['seconds_per_image']:.2f} s, subject cosine {headline['subject_cosine']:.3f}"
    )
    return 0


def _subject_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", type=Path, nargs="+", required=True, help="one face image per subject")
    parser.add_argument(
        "--positions",
        nargs="+",
        metavar="X,Y",
        help="one face position per subject in pixels of the output (default: evenly spaced, 35%% from the top)",
    )
    parser.add_argument("--keypoints", type=Path, help="(F, 17, 2|3) COCO-17 keypoints .npy instead of --positions")
    parser.add_argument("--prompt", help="text prompt (overrides the config's)")


def _eval_arguments(parser: argparse.ArgumentParser) -> None:
    _subject_arguments(parser)
    parser.add_argument("--num-images", type=int, default=4, help="images to generate (seeds seed, seed+1, ...)")
    parser.add_argument(
        "--generated", type=Path, nargs="+", help="score these generated images instead of generating (--num-images)"
    )
    parser.add_argument(
        "--evaluator", choices=("dlib", "arcface"), default="dlib", help="face detector + embedding of the metrics"
    )
    parser.add_argument("--arcface-weights", type=Path, help="IR-SE-50 checkpoint for --evaluator arcface")
    parser.add_argument("--max-distance", type=float, help="pixels beyond which a face is not at a position")
    parser.add_argument("--identity-matching", choices=("hungarian", "argmax"), default="hungarian")


def _convert_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint", type=Path, required=True, help="the release folder with id-patch.bin and ControlNetModel/"
    )
    parser.add_argument("--dim-head", type=int, default=64, help="resampler width per head (resampler checkpoints)")
    parser.add_argument("--any-shape", action="store_true", help="do not require the paper's 16x2048 / 3x64x64")


command_line = CommandLine(
    prog="id-patch",
    package="id_patch",
    description="ID-Patch group-photo personalisation (arXiv 2411.13632).",
    commands=(
        Command(
            "generate",
            "one image of the subjects at the positions; writes image.png, condition.png, image_and_condition.png"
            " and summary.json into --out",
            _run_generate,
            schema="id_patch.config:GenerateConfig",
            arguments=_subject_arguments,
        ),
        Command(
            "train",
            "train ControlNet + patch/token projections; --out is the run folder: config.yaml, checkpoints/last.ckpt,"
            " metrics.csv, loss.png, trained/{controlnet,id_projector}/, summary.json",
            _run_train,
            schema="id_patch.config:TrainConfig",
            arguments=_train_arguments,
            resume=True,
        ),
        Command(
            "eval",
            "resemblance, ID-position accuracy and time over generated images; writes eval.json and the generated"
            " image_000.png, ... into --out",
            _run_eval,
            schema="id_patch.config:GenerateConfig",
            config_group="generate",
            arguments=_eval_arguments,
        ),
        Command(
            "convert",
            "official id-patch.bin + ControlNetModel/ -> id_projector/ and controlnet/ in --out",
            _run_convert,
            arguments=_convert_arguments,
            out=None,
        ),
        Command(
            "demo",
            "group image from real faces (skimage astronaut) on a generate config; writes group.png, condition.png,"
            " group_and_condition_x4.png, subject_0.png, subject_1.png, subjects.png and summary.json into --out",
            _run_demo,
            schema="id_patch.config:GenerateConfig",
            config_group="generate",
        ),
        smoke_command("id_patch"),
    ),
)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``id-patch``; returns the exit status: 0 on success, 2 for bad input (the message names it),
    1 for a failed smoke check."""
    return command_line.main(argv)


if __name__ == "__main__":
    sys.exit(main())
