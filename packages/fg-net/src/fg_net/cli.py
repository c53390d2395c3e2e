"""The ``fg-net`` command line: ``predict``, ``train``, ``eval``, ``convert``, ``demo`` and ``smoke``, in the one
convention of :mod:`genblocks.cli`.

::

    fg-net predict --image face.jpg --out outputs/fg-net/predict                    # tiny random model (--config tiny)
    fg-net predict --image face.jpg --config paper --checkpoint checkpoints/fg-net-bp4d --out out/
    fg-net train --config tiny --out runs/tiny                                      # synthetic corpus, no dataset
    fg-net train --config paper --set data.root=/data data.fold=1 data.subset=1000 --out runs/bp4d
    fg-net train --config paper --set data.root=/data --out runs/bp4d --resume     # continue from last.ckpt
    fg-net train --config paper --protocol within --out runs/bp4d-3fold           # 3 folds, averaged F1
    fg-net eval --config paper --checkpoint runs/bp4d/trained --target-dataset DISFA --out runs/bp4d/eval
    fg-net convert --checkpoint model.pth --config disfa --encoder-checkpoint encoder.pt --out checkpoints/fg-net-disfa
    fg-net demo --out outputs/fg-net/demo                                           # astronaut, tiny random model
    fg-net smoke

Configs ship inside the package in ``fg_net/configs/`` (``tiny``, ``paper`` = BP4D, ``disfa``) on
`fg_net.config.FGNetRunConfig`; ``predict``, ``train``, ``eval`` and ``convert`` share them. Files written in ``--out``:
``predict``: ``<image stem>_heatmaps.png``, ``<stem>_AU<n>.png``, ``<stem>_aus.json``; ``train``: the run folder of
`genblocks.training.fit` (``config.yaml``, ``checkpoints/{last,best,step-<N>}.ckpt``, ``metrics.csv``, ``loss.png``,
``trained/`` = the best epoch's model, ``summary.json``; ``fold-<k>/`` per fold with ``--protocol within``);
``eval``: ``scores.json``; ``convert``: the converted model folder (``config.json`` + safetensors).
The work lives in the library modules.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from genblocks.cli import Command, CommandLine, smoke_command

if TYPE_CHECKING:
    from fg_net.config import FGNetRunConfig

__all__ = ["command_line", "main"]

SCHEMA = "fg_net.config:FGNetRunConfig"


def _weights_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", help="a converted FG-Net folder or the authors' model.pth")
    parser.add_argument("--encoder-checkpoint", help="pSp encoder.pt (latent_avg) when --checkpoint is a model.pth")


def _predict_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", type=Path, required=True, help="an image with a face (RGB)")
    parser.add_argument("--aligned", action="store_true", help="the image is already an FFHQ-aligned face")
    _weights_arguments(parser)


def _train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--protocol", choices=("fold", "within"), default="fold", help="one fold, or all 3 averaged")
    parser.add_argument("--progress", action="store_true", help="show Lightning's progress bar")
    parser.add_argument("--overwrite", action="store_true", help="start again in a used run folder")


def _eval_arguments(parser: argparse.ArgumentParser) -> None:
    _weights_arguments(parser)
    parser.add_argument(
        "--target-dataset",
        choices=("BP4D", "DISFA"),
        help="test corpus (default data.dataset); another corpus than the model's scores the shared AUs 1, 2, 4, 6, 12",
    )


def _convert_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", type=Path, required=True, help="the authors' model.pth")
    parser.add_argument("--encoder-checkpoint", type=Path, help="pSp encoder.pt the run started from (latent_avg)")
    parser.add_argument("--fold", type=int, choices=(0, 1, 2), help="training fold, when known")
    parser.add_argument("--select-on-test", action="store_true", help="record that the epoch was chosen on test")
    parser.add_argument("--allow-partial", action="store_true", help="write even when keys are missing")


def _demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0)


def _with_weights(config: FGNetRunConfig, args: argparse.Namespace) -> FGNetRunConfig:
    """``config`` with ``--checkpoint`` / ``--encoder-checkpoint`` applied."""
    if args.checkpoint is not None:
        config = dataclasses.replace(config, checkpoint=str(args.checkpoint))
    if args.encoder_checkpoint is not None:
        config = dataclasses.replace(config, encoder_checkpoint=str(args.encoder_checkpoint))
    return config


def _predict(args: argparse.Namespace, config: FGNetRunConfig) -> int:
    from fg_net.convert_fg_net_original import load_fg_net
    from fg_net.pipeline_fg_net import FGNetPipeline, save_prediction
    from fg_net.preprocessing import build_face_analyzer
    from genblocks.media import read_image

    run = _with_weights(config, args)
    model = load_fg_net(run)
    analyzer = None if args.aligned else build_face_analyzer(run.landmarks)
    output = FGNetPipeline(model, analyzer, aligned_size=run.data.image_size)(read_image(args.image), args.aligned)
    files = save_prediction(output, args.out, args.image.stem)
    print(f"{args.image}: {int(output.active[0].sum())} of {len(output.aus)} AUs active")
    for au, active, score in zip(output.aus, output.active[0], output.scores[0], strict=True):
        print(f"  AU{au:<3} {'active' if active else 'inactive':<9} score {score:+.4f}")
    print(f"heatmap overlays: {files['grid']} (and one PNG per AU in {args.out})")
    return 0


def _train(args: argparse.Namespace, config: FGNetRunConfig) -> int:
    from fg_net.training import run_within_corpus, train_fg_net

    run = config
    if args.progress:
        run = dataclasses.replace(run, training=dataclasses.replace(run.training, progress_bar=True))
    if args.protocol == "within":
        results, average = run_within_corpus(run, args.out, resume=args.resume, overwrite=args.overwrite)
        for result in results:
            scores = result.test_scores.table() if result.test_scores else "n/a"
            print(f"{result.run_dir.name} test F1: {scores}")
        print(f"3-fold average test F1: {average.table()}")
        print(f"runs: {args.out}/fold-<k>/ (trained/ = each fold's best epoch); summary: {args.out / 'summary.json'}")
        return 0
    result = train_fg_net(run, args.out, resume=args.resume, overwrite=args.overwrite)
    selection = "test fold (select_on_test)" if run.training.select_on_test else "held-out training subjects"
    if result.val_scores is not None:
        print(f"best epoch (step {result.best_step}) on {selection}: {result.val_scores.table()}")
    if result.test_scores is not None:
        print(f"test F1 (fold {run.data.fold}): {result.test_scores.table()}")
    print(f"run folder: {result.run_dir} ({result.steps} steps; checkpoints/last.ckpt, metrics.csv, loss.png)")
    print(f"model: {result.export_dir}")
    return 0


def _evaluate(args: argparse.Namespace, config: FGNetRunConfig) -> int:
    from torch.utils.data import DataLoader

    from fg_net.convert_fg_net_original import load_fg_net
    from fg_net.data import AUFoldDataset
    from fg_net.evaluation import evaluate_model, fold_csv_path
    from fg_net.heatmaps import DATASET_AUS

    run = _with_weights(config, args)
    model = load_fg_net(run)
    target = args.target_dataset or run.data.dataset
    model_aus = tuple(model.config.aus)
    cross = model.config.dataset in DATASET_AUS and target != model.config.dataset
    label_aus = DATASET_AUS[target] if cross else model_aus
    csv_path = fold_csv_path(run.data.root, target, run.data.fold, "test")
    dataset = AUFoldDataset(
        csv_path,
        run.data.root,
        label_aus,
        input_size=model.config.input_size,
        with_heatmaps=False,
        aligned=run.data.aligned,
        image_size=run.data.image_size,
        landmarks=run.landmarks,
    )
    loader = DataLoader(dataset, batch_size=run.training.eval_batch_size, num_workers=run.data.num_workers)
    scores = evaluate_model(model, loader, model_aus, label_aus if cross else None)
    kind = f"cross-corpus {model.config.dataset} -> {target}" if cross else f"within-corpus {target}"
    print(f"{kind}, fold {run.data.fold}, {scores.count} images: {scores.table()}")
    args.out.mkdir(parents=True, exist_ok=True)
    scores_path = args.out / "scores.json"
    scores_path.write_text(json.dumps({"protocol": kind, "fold": run.data.fold, **scores.as_dict()}, indent=2) + "\n")
    print(f"scores: {scores_path}")
    return 0


def _convert(args: argparse.Namespace, config: FGNetRunConfig) -> int:
    from fg_net.convert_fg_net_original import convert_original_checkpoint

    report = convert_original_checkpoint(
        args.checkpoint,
        args.out,
        config.model,
        encoder_checkpoint=args.encoder_checkpoint,
        fold=args.fold,
        select_on_test=True if args.select_on_test else None,
        strict=not args.allow_partial,
    )
    print(report.summary())
    print(f"wrote {args.out}")
    return 0


def _demo(args: argparse.Namespace, config: None) -> int:
    from fg_net.demo import run_demo

    summary = run_demo(args.out, seed=args.seed)
    print("fg-net demo (tiny random model: the full path, not skill)")
    for au, values in summary["predictions"].items():
        print(f"  {au:<5} {'active' if values['active'] else 'inactive':<9} score {values['score']:+.4f}")
    print(f"headline: {summary['headline']}")
    print(f"outputs: {Path(args.out).resolve()} ({', '.join(summary['files'])}, summary.json)")
    return 0


command_line = CommandLine(
    prog="fg-net",
    package="fg_net",
    description="FG-Net facial action unit detection (arXiv 2308.12380).",
    commands=(
        Command(
            "predict",
            "detect AUs in an image; writes <stem>_aligned.png, <stem>_heatmaps.png, <stem>_AU<n>.png and"
            " <stem>_aus.json in --out",
            _predict,
            schema=SCHEMA,
            arguments=_predict_arguments,
        ),
        Command(
            "train",
            "train FG-Net on one fold (or the 3-fold protocol); --out is the run folder",
            _train,
            schema=SCHEMA,
            arguments=_train_arguments,
            resume=True,
        ),
        Command(
            "eval",
            "F1 of a model on a fold's test CSV (within- or cross-corpus); writes scores.json",
            _evaluate,
            schema=SCHEMA,
            arguments=_eval_arguments,
        ),
        Command(
            "convert",
            "convert the authors' model.pth into --out: {encoder,generator,interpreter}.safetensors and config.json"
            " (--config names its model: paper (BP4D) or disfa)",
            _convert,
            schema=SCHEMA,
            default_config="paper",
            arguments=_convert_arguments,
            out=None,
        ),
        Command(
            "demo",
            "predict on scikit-image's astronaut with a tiny random model; writes strip.png, README.txt,"
            " astronaut_heatmaps.png, astronaut_targets.png and summary.json in --out",
            _demo,
            arguments=_demo_arguments,
        ),
        smoke_command("fg_net"),
    ),
)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``fg-net``; returns the exit status (2 for bad input)."""
    return command_line.main(argv)


if __name__ == "__main__":
    import sys

    sys.exit(main())
