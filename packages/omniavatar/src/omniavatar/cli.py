"""The ``omniavatar`` command line, in the one convention of :mod:`genblocks.cli`.

::

    omniavatar render --seed 3 --out out/ [--weights DIR] [--yaw 0.2] [--expression 0.5,0,...] [--jaw 0.1,0,0]
                      [--labels ffhq_labels.npy --row 7 [--row-camera]] [--path orbit|expression]
                      [--format gif|mp4] [--mesh]
    omniavatar generate ...            (the same as render)
    omniavatar convert --pkl omniavatar.pkl --out weights/
    omniavatar train --stage sdf --out runs/sdf      (Stage I; then --stage gan --set train.sdf_checkpoint=...)
    omniavatar eval --weights DIR [--estimator E.safetensors] [--features inception.pt --real ffhq/ --num-images N]
                    [--identity-embedder arcface.pt] --out eval/
    omniavatar demo --out outputs/omniavatar/demo
    omniavatar smoke

Configs ``tiny`` (random weights, seconds on a CPU) and ``paper`` ship in ``omniavatar/configs/``. ``render`` without
``--weights`` uses random weights of the config and labels every picture "random weights". Bad input (a FLAME file that
is not FLAME, a pickle that is not a generator, a labels row or a vector of the wrong length) exits with status 2 and
one line naming the expected layout.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from genblocks.cli import Command, CommandLine, require_file, require_folder, smoke_command
from genblocks.errors import InputError

if TYPE_CHECKING:
    import numpy as np
    from torch import Tensor

    from omniavatar.config import OmniAvatarConfig
    from omniavatar.pipeline_omniavatar import OmniAvatarPipeline

__all__ = ["command_line", "main"]

SCHEMA = "omniavatar.config:OmniAvatarConfig"
IDENTITY_VARIATIONS = 3
"""Renders per head for ``eval --identity-embedder``: the neutral expression and two random ones, at yaws spread over
±``render.yaw_range``."""


def _render_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0, help="z seed")
    parser.add_argument(
        "--weights", type=Path, default=None, metavar="DIR", help="converted or trained weights folder"
    )
    parser.add_argument("--yaw", type=float, default=0.0, help="camera yaw offset (radians)")
    parser.add_argument("--pitch", type=float, default=0.0, help="camera pitch offset (radians)")
    parser.add_argument("--radius", type=float, default=None, help="camera orbit radius (default: the config's)")
    parser.add_argument("--shape", default=None, help="shape values, comma-separated or a .npy file")
    parser.add_argument("--expression", default=None, help="expression values, comma-separated or a .npy file")
    parser.add_argument("--neck", default=None, help="3 neck axis-angle values")
    parser.add_argument("--jaw", default=None, help="3 jaw axis-angle values")
    parser.add_argument("--labels", type=Path, default=None, metavar="NPY", help="label pool (ffhq_labels.npy)")
    parser.add_argument("--row", type=int, default=None, help="take the 3DMM values of this labels row")
    parser.add_argument(
        "--row-camera",
        action="store_true",
        help="also render image/depth/mask/mesh from the row's 25 camera values (instead of --yaw/--pitch)",
    )
    parser.add_argument("--truncation", type=float, default=None, help="truncation psi (default: the config's 0.7)")
    parser.add_argument("--path", choices=("none", "orbit", "expression"), default="none", help="also render a path")
    parser.add_argument("--format", choices=("gif", "mp4"), default="gif", help="path video format")
    parser.add_argument("--mesh", action="store_true", help="also export mesh.obj (needs scikit-image)")


def _load_pipeline(args: argparse.Namespace, config: OmniAvatarConfig) -> tuple[object, bool]:
    from omniavatar.pipeline_omniavatar import OmniAvatarPipeline

    if args.weights is not None:
        require_folder(args.weights, "--weights", "a weights folder (config.json + generator.safetensors)")
        return OmniAvatarPipeline.from_pretrained(args.weights), False
    return OmniAvatarPipeline.from_config(config), True


def _row_camera(args: argparse.Namespace, labels: np.ndarray | None) -> Tensor | None:
    """The 25 camera values of ``--labels`` row ``--row`` with ``--row-camera`` (None without)."""
    if not args.row_camera:
        return None
    if labels is None or args.row is None:
        raise InputError("--row-camera: expected --labels FILE.npy and --row N (the row's 25 camera values)")
    if args.yaw != 0.0 or args.pitch != 0.0:
        raise InputError("--row-camera: the row gives the camera; --yaw and --pitch offset the demo's camera instead")
    import torch

    return torch.from_numpy(labels[args.row, :25].copy())


def _render(args: argparse.Namespace, config: OmniAvatarConfig) -> int:
    from dataclasses import replace

    import torch

    from omniavatar.convert_omniavatar_original import read_labels
    from omniavatar.inference import RenderRequest, parse_vector, render_to_folder
    from omniavatar.pipeline_omniavatar import OmniAvatarPipeline

    pipeline, random_weights = _load_pipeline(args, config)
    assert isinstance(pipeline, OmniAvatarPipeline)
    if args.truncation is not None or args.radius is not None:
        generator_config = pipeline.config.generator
        if args.radius is not None:
            generator_config = replace(generator_config, avg_camera_radius=args.radius)
        render_config = pipeline.config.render
        if args.truncation is not None:
            render_config = replace(render_config, truncation_psi=args.truncation)
        pipeline.config = replace(pipeline.config, generator=generator_config, render=render_config)
    layout = pipeline.layout
    pool = None
    labels = None
    features = torch.zeros(layout.feature_dim)
    if args.labels is not None:
        require_file(args.labels, "--labels", f"an (N, {25 + layout.feature_dim}) .npy label array")
        labels = read_labels(args.labels, layout)
        pool = torch.from_numpy(labels[:, 25:])
        if args.row is not None:
            if not 0 <= args.row < len(labels):
                raise InputError(f"--row {args.row}: expected a row index in [0, {len(labels)})")
            features = pool[args.row].clone()
    elif args.row is not None:
        raise InputError("--row: expected --labels FILE.npy as well")
    camera = _row_camera(args, labels)
    parts = {
        "shape": (args.shape, layout.shape, 0),
        "expression": (args.expression, layout.expression, layout.shape),
        "neck": (args.neck, layout.neck, layout.shape + layout.expression),
        "jaw": (args.jaw, layout.jaw, layout.shape + layout.expression + layout.neck),
    }
    for name, (text, size, start) in parts.items():
        values = parse_vector(text, size, name, layout)
        if values is not None:
            features[start : start + size] = values
    request = RenderRequest(
        seed=args.seed,
        features=features,
        yaw=args.yaw,
        pitch=args.pitch,
        path=args.path,
        video_format=args.format,
        mesh=args.mesh,
        label_pool=pool,
        random_weights=random_weights,
        camera=camera,
    )
    summary = render_to_folder(pipeline, request, args.out)
    note = " (random weights: pass --weights for a trained or converted model)" if random_weights else ""
    print(f"wrote {', '.join(summary['files'])} to {args.out}{note}")
    return 0


def _convert_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pkl", type=Path, required=True, metavar="FILE", help="the authors' omniavatar.pkl")
    parser.add_argument("--network", default="G_ema", help="network in the pickle (G_ema, G)")
    parser.add_argument("--no-strict", action="store_true", help="write even with unmatched keys (see the report)")


def _convert(args: argparse.Namespace, config: OmniAvatarConfig) -> int:
    require_file(args.pkl, "--pkl", "the authors' network pickle (omniavatar.pkl)")
    from omniavatar.convert_omniavatar_original import convert_omniavatar

    _, report = convert_omniavatar(args.pkl, args.out, args.network, strict=not args.no_strict, base=config)
    for note in report.notes:
        print(f"omniavatar convert: note: {note}", file=sys.stderr)
    print(
        f"converted {len(report.matched)} tensors ({len(report.dropped)} dropped, {len(report.unexpected)} unexpected, "
        f"{len(report.missing)} missing) into {args.out}"
    )
    return 0


def _train(args: argparse.Namespace, config: OmniAvatarConfig) -> int:
    if config.model.head == "flame":  # check the user's FLAME file before the heavy imports
        from omniavatar.head_model import load_flame

        if config.model.flame_path is None:
            raise InputError("model.flame_path: expected FLAME's generic_model.pkl (or .npz) for model.head=flame")
        load_flame(config.model.flame_path)
    import lightning as L

    from genblocks.training.fitting import fit
    from omniavatar import training

    L.seed_everything(config.train.seed, verbose=False)
    if config.train.stage == "sdf":
        module: L.LightningModule = training.SemanticSDFModule(config)
        result = fit(
            module,
            training.step_datamodule(config.train.max_steps),
            config.train,
            args.out,
            resume=args.resume,
            config=config,
            save_trained=training.save_semantic_sdf,
        )
    else:
        module = training.OmniAvatarGANModule(config)  # reads and checks the weights files it names first
        if config.train.sdf_checkpoint is None:
            print(
                "omniavatar train: note: train.sdf_checkpoint is unset: W starts as initialised (identity warp with "
                "igr.residual_warp); run --stage sdf first for the geometry prior",
                file=sys.stderr,
            )
        result = fit(
            module,
            training.OmniAvatarDataModule(config),
            config.train,
            args.out,
            resume=args.resume,
            config=config,
            save_trained=training.save_generator,
        )
    print(f"trained {result.global_step} steps; run folder {args.out}; weights in {result.trained}")
    return 0


def _eval_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", type=Path, default=None, metavar="DIR", help="weights folder (default: random)")
    parser.add_argument(
        "--estimator",
        type=Path,
        default=None,
        metavar="FILE",
        help="ControlEstimator weights (.safetensors) for the control error",
    )
    parser.add_argument("--count", type=int, default=8, help="heads per metric")
    parser.add_argument(
        "--features",
        type=Path,
        default=None,
        metavar="FILE",
        help="TorchScript feature extractor ((N, 3, R, R) in [-1, 1] -> (N, D)) for FID / KID; needs --real",
    )
    parser.add_argument(
        "--real", type=Path, default=None, metavar="DIR", help="FFHQ-style folder of real images for FID / KID"
    )
    parser.add_argument(
        "--identity-embedder",
        type=Path,
        default=None,
        metavar="FILE",
        help="TorchScript face embedder ((N, 3, R, R) in [-1, 1] -> (N, D)) for identity consistency",
    )
    parser.add_argument(
        "--num-images", type=int, default=100, metavar="N", help="generated (and at most real) images for FID / KID"
    )


def _identity(
    pipeline: OmniAvatarPipeline, embedder: Callable[[Tensor], Tensor], heads: int
) -> dict[str, float | int | None]:
    """:func:`~omniavatar.metrics.identity_consistency` of `heads` heads, JSON-ready (NaN, one head's ``different``,
    becomes None)."""
    from omniavatar.metrics import identity_consistency

    scores = identity_consistency(pipeline, embedder, heads=heads, variations=IDENTITY_VARIATIONS)
    result: dict[str, float | int | None] = {k: None if v != v else v for k, v in scores.items()}
    result.update(heads=heads, variations=IDENTITY_VARIATIONS)
    return result


def _eval(args: argparse.Namespace, config: OmniAvatarConfig) -> int:
    from genblocks.metrics import load_feature_extractor
    from omniavatar.metrics import control_error, depth_consistency, fid_kid, read_real_images, real_labels
    from omniavatar.pipeline_omniavatar import OmniAvatarPipeline

    if (args.features is None) != (args.real is None):
        raise InputError("--features and --real: FID / KID need both (a TorchScript extractor and a folder of images)")
    if args.features is not None and args.num_images < 2:
        raise InputError(f"--num-images {args.num_images}: FID / KID need at least 2 images")
    extractor = None if args.features is None else load_feature_extractor(args.features, "--features")
    embedder = None
    if args.identity_embedder is not None:
        embedder = load_feature_extractor(args.identity_embedder, "--identity-embedder")
    pipeline, random_weights = _load_pipeline(args, config)
    assert isinstance(pipeline, OmniAvatarPipeline)
    resolution = pipeline.generator.img_resolution
    real = None if args.real is None else read_real_images(args.real, resolution, args.num_images, "--real")
    labels = None if args.real is None else real_labels(args.real, 25 + pipeline.layout.feature_dim, "--real")
    metrics: dict[str, object] = {"random_weights": random_weights}
    chamfer = [depth_consistency(pipeline, seed=s) for s in range(args.count)]
    # inf: a view showed no opaque pixel (random weights); JSON has no inf
    metrics["depth_consistency_chamfer"] = [value if value != float("inf") else None for value in chamfer]
    if args.estimator is not None:
        from omniavatar.training import ESTIMATOR_FILE, ControlEstimator, load_weights_file

        estimator = ControlEstimator(pipeline.layout.pose_dim, pipeline.config.ctrl_loss.estimator_channels)
        load_weights_file(estimator, args.estimator, "--estimator", ESTIMATOR_FILE)
        metrics["control_error"] = control_error(pipeline, estimator.eval(), count=args.count)
    if embedder is not None:
        metrics["identity_consistency"] = _identity(pipeline, embedder, args.count)
    if extractor is not None and real is not None:
        scores = fid_kid(pipeline, extractor, real, args.num_images, labels=labels)
        metrics["fid"], metrics["kid"] = scores["fid"], scores["kid"]
        metrics["fid_conditioning"] = scores["conditioning"]
        metrics["fid_images"] = {"real": scores["real_images"], "generated": scores["generated_images"]}
    args.out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(metrics, indent=2)
    (args.out / "metrics.json").write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


def _demo(args: argparse.Namespace, config: OmniAvatarConfig) -> int:
    from omniavatar.demo import run_demo

    summary = run_demo(config, args.out)
    print(json.dumps(summary["headline"], indent=2))
    return 0


_RENDER = Command(
    "render",
    "render a head: images, grid, depth, path GIF/MP4, mesh",
    _render,
    SCHEMA,
    arguments=_render_arguments,
)
command_line = CommandLine(
    prog="omniavatar",
    package="omniavatar",
    description="OmniAvatar: geometry-guided controllable 3D head synthesis (CVPR 2023, arXiv 2303.15539).",
    commands=(
        _RENDER,
        Command("generate", "the same as render", _render, SCHEMA, config_group="render", arguments=_render_arguments),
        Command(
            "convert",
            "the authors' omniavatar.pkl -> a weights folder",
            _convert,
            SCHEMA,
            config_group="render",
            arguments=_convert_arguments,
            out=None,
        ),
        Command(
            "train",
            "train Stage I (sdf) or Stage II (gan)",
            _train,
            SCHEMA,
            config_group="render",
            stages=("sdf", "gan"),
            resume=True,
            out=None,
        ),
        Command(
            "eval",
            "metrics: depth consistency, control error (--estimator), FID / KID (--features, --real), identity consistency "
            "(--identity-embedder)",
            _eval,
            SCHEMA,
            config_group="render",
            arguments=_eval_arguments,
        ),
        Command(
            "demo",
            "tiny random-weights demo: GIF over cameras and expressions, mesh",
            _demo,
            SCHEMA,
            config_group="render",
        ),
        smoke_command("omniavatar"),
    ),
)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``omniavatar`` script."""
    return command_line.main(argv)


if __name__ == "__main__":
    sys.exit(main())
