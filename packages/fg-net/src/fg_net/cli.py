"""The ``fg-net`` command line: ``predict``, ``train``, ``eval``, ``convert``, ``demo`` and ``smoke``.

::

    fg-net predict face.jpg --checkpoint checkpoints/fg-net-bp4d --out outputs/fg-net/predict
    fg-net predict face.jpg --config packages/fg-net/configs/tiny.yaml          # tiny random model
    fg-net train --config packages/fg-net/configs/bp4d.yaml data.fold=1 data.subset=1000
    fg-net train --config packages/fg-net/configs/bp4d.yaml --protocol within   # 3 folds, averaged F1
    fg-net eval --config packages/fg-net/configs/bp4d.yaml --checkpoint runs/bp4d/best --target-dataset DISFA
    fg-net convert model.pth checkpoints/fg-net-bp4d --dataset BP4D --encoder-checkpoint encoder.pt
    fg-net demo --out outputs/fg-net                                              # astronaut, tiny random model
    fg-net smoke

Configs are YAML files on `fg_net.config.FGNetRunConfig` (``configs/tiny.yaml``, ``bp4d.yaml``, ``disfa.yaml``) with
``key.sub=value`` overrides after them. The script stays thin: the work lives in the library modules.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fg_net.config import FGNetRunConfig

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``fg-net`` (exposed for documentation and tests)."""
    parser = argparse.ArgumentParser(
        prog="fg-net", description="FG-Net facial action unit detection (arXiv 2308.12380)."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress at INFO level")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{predict,train,eval,convert,demo,smoke}")

    predict = commands.add_parser("predict", help="detect AUs in an image; print them and save heatmap overlays")
    predict.add_argument("image", type=Path, help="an image with a face (RGB)")
    predict.add_argument("--config", type=Path, help="run config YAML (default: the paper's BP4D model)")
    predict.add_argument("--checkpoint", help="a converted FG-Net folder or the authors' model.pth")
    predict.add_argument("--encoder-checkpoint", help="pSp encoder.pt (latent_avg) when --checkpoint is a model.pth")
    predict.add_argument("--out", type=Path, default=Path("outputs/fg-net/predict"), help="output folder")
    predict.add_argument("--aligned", action="store_true", help="the image is already an FFHQ-aligned face")
    predict.add_argument("overrides", nargs="*", help="config overrides key.sub=value")

    train = commands.add_parser("train", help="train FG-Net on one fold (or the 3-fold protocol)")
    train.add_argument("--config", type=Path, required=True, help="run config YAML")
    train.add_argument("--protocol", choices=("fold", "within"), default="fold", help="one fold, or all 3 averaged")
    train.add_argument("--progress", action="store_true", help="show Lightning's progress bar")
    train.add_argument("overrides", nargs="*", help="config overrides key.sub=value")

    evaluate = commands.add_parser("eval", help="F1 of a model on a fold's test CSV (within- or cross-corpus)")
    evaluate.add_argument("--config", type=Path, required=True, help="run config YAML")
    evaluate.add_argument("--checkpoint", help="a converted FG-Net folder or the authors' model.pth")
    evaluate.add_argument("--encoder-checkpoint", help="pSp encoder.pt (latent_avg) when --checkpoint is a model.pth")
    evaluate.add_argument(
        "--target-dataset",
        choices=("BP4D", "DISFA"),
        help="test corpus (default data.dataset); another corpus "
        "than the model's scores the shared AUs 1, 2, 4, 6, 12",
    )
    evaluate.add_argument("--json", type=Path, help="also write the scores to this JSON file")
    evaluate.add_argument("overrides", nargs="*", help="config overrides key.sub=value")

    convert = commands.add_parser("convert", help="convert the authors' model.pth into a safetensors folder")
    convert.add_argument("checkpoint", type=Path, help="the authors' model.pth")
    convert.add_argument("output", type=Path, help="output folder")
    convert.add_argument("--dataset", choices=("BP4D", "DISFA"), help="the corpus it was trained on (paper model)")
    convert.add_argument("--config", type=Path, help="run config YAML whose model to use instead of --dataset's")
    convert.add_argument("--encoder-checkpoint", type=Path, help="pSp encoder.pt the run started from (latent_avg)")
    convert.add_argument("--fold", type=int, choices=(0, 1, 2), help="training fold, when known")
    convert.add_argument("--select-on-test", action="store_true", help="record that the epoch was chosen on test")
    convert.add_argument("--allow-partial", action="store_true", help="write even when keys are missing")

    demo = commands.add_parser("demo", help="predict on scikit-image's astronaut with a tiny random model")
    demo.add_argument("--out", type=Path, default=Path("outputs/fg-net"), help="output folder")
    demo.add_argument("--seed", type=int, default=0)

    commands.add_parser("smoke", help="run the self-check (exit status 0 on success)")
    return parser


def _run_config(
    config: Path | None, overrides: Sequence[str], checkpoint: str | None, encoder: str | None
) -> FGNetRunConfig:
    from fg_net.config import FGNetRunConfig
    from genblocks.config import load_config

    run = load_config(FGNetRunConfig, config, list(overrides))
    if checkpoint is not None:
        run = dataclasses.replace(run, checkpoint=checkpoint)
    if encoder is not None:
        run = dataclasses.replace(run, encoder_checkpoint=encoder)
    return run


def _predict(args: argparse.Namespace) -> int:
    from fg_net.convert_fg_net_original import load_fg_net
    from fg_net.pipeline_fg_net import FGNetPipeline, save_prediction
    from fg_net.preprocessing import build_face_analyzer
    from genblocks.media import read_image

    run = _run_config(args.config, args.overrides, args.checkpoint, args.encoder_checkpoint)
    model = load_fg_net(run)
    analyzer = None if args.aligned else build_face_analyzer(run.landmarks)
    output = FGNetPipeline(model, analyzer, aligned_size=run.data.image_size)(read_image(args.image), args.aligned)
    files = save_prediction(output, args.out, args.image.stem)
    print(f"{args.image}: {int(output.active[0].sum())} of {len(output.aus)} AUs active")
    for au, active, score in zip(output.aus, output.active[0], output.scores[0], strict=True):
        print(f"  AU{au:<3} {'active' if active else 'inactive':<9} score {score:+.4f}")
    print(f"heatmap overlays: {files['grid']} (and one PNG per AU in {args.out})")
    return 0


def _train(args: argparse.Namespace) -> int:
    from fg_net.training import run_within_corpus, train_fg_net

    run = _run_config(args.config, args.overrides, None, None)
    if args.protocol == "within":
        results, average = run_within_corpus(run)
        for fold, result in enumerate(results):
            print(f"fold {fold} test F1: {result.test_scores.table() if result.test_scores else 'n/a'}")
        print(f"3-fold average test F1: {average.table()}")
        return 0
    result = train_fg_net(run, enable_progress_bar=args.progress)
    selection = "test fold (select_on_test)" if run.training.select_on_test else "held-out training subjects"
    if result.val_scores is not None:
        print(f"best epoch on {selection}: {result.val_scores.table()}")
    if result.test_scores is not None:
        print(f"test F1 (fold {run.data.fold}): {result.test_scores.table()}")
    print(f"model: {result.export_dir}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from torch.utils.data import DataLoader

    from fg_net.convert_fg_net_original import load_fg_net
    from fg_net.data import AUFoldDataset
    from fg_net.evaluation import evaluate_model, fold_csv_path
    from fg_net.heatmaps import DATASET_AUS

    run = _run_config(args.config, args.overrides, args.checkpoint, args.encoder_checkpoint)
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
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps({"protocol": kind, "fold": run.data.fold, **scores.as_dict()}, indent=2) + "\n"
        )
    return 0


def _convert(args: argparse.Namespace) -> int:
    from fg_net.config import paper_config
    from fg_net.convert_fg_net_original import convert_original_checkpoint

    if (args.dataset is None) == (args.config is None):
        raise ValueError("give exactly one of --dataset (the paper's model for that corpus) and --config.")
    if args.config is not None:
        model_config = _run_config(args.config, (), None, None).model
    else:
        model_config = paper_config(args.dataset)
    report = convert_original_checkpoint(
        args.checkpoint,
        args.output,
        model_config,
        encoder_checkpoint=args.encoder_checkpoint,
        fold=args.fold,
        select_on_test=True if args.select_on_test else None,
        strict=not args.allow_partial,
    )
    print(report.summary())
    print(f"wrote {args.output}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from fg_net.demo import run_demo

    summary = run_demo(args.out, seed=args.seed)
    print("fg-net demo (tiny random model: the full path, not skill)")
    for au, values in summary["predictions"].items():
        print(f"  {au:<5} {'active' if values['active'] else 'inactive':<9} score {values['score']:+.4f}")
    print(f"headline: {summary['headline']}")
    print(f"outputs: {Path(args.out).resolve()} ({', '.join(summary['files'])}, summary.json)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``fg-net``.

    Args:
        argv (`Sequence[str]`, *optional*): arguments (default: ``sys.argv[1:]``).

    Returns:
        `int`: the exit status (2 for bad input).
    """
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # overrides may follow options (``predict face.jpg --config c.yaml model.aus=[1,2]``): argparse leaves them over
    unknown = [item for item in extra if item.startswith("-") or "=" not in item]
    if unknown or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(unknown or extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    if args.command == "smoke":
        from fg_net.smoke import main as smoke_main

        return smoke_main()
    handlers = {"predict": _predict, "train": _train, "eval": _evaluate, "convert": _convert, "demo": _demo}
    try:
        return handlers[args.command](args)
    except (ValueError, FileNotFoundError, ImportError) as error:
        print(f"fg-net {args.command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
