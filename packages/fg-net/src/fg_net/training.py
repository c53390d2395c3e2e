"""Training FG-Net on `genblocks.training.fit`: per-AU heatmap MSE, AdamW over interpreter + generator + encoder, the
best epoch by F1.

Follows ihp-lab/FG-Net@6067ab2a5fadc796efd69e25ea9800e095a344b7 ``code/train_interpreter.py`` (spec fg-net §4):

- **Loss.** The MSE of each used heatmap channel against its target, averaged over the K AUs (optionally weighted,
  ``TrainingConfig.au_weights``); no classification loss.
- **Optimiser.** ``training.optimizer`` built by name with `genblocks.training.optim.build_optimizer`: AdamW (lr 5e-5,
  weight decay 5e-4, default betas/eps) over the interpreter, the whole StyleGAN2 (mapping included: it is reached
  through the re-mapping) and the pSp encoder; gradient-norm clipping at 0.1 (``training.gradient_clip_val``) over the
  same parameters. ``train_encoder`` / ``train_generator`` / ``train_mapping`` freeze parts (frozen parts stay in
  eval mode, so their BatchNorm statistics do not move either).
- **Schedule.** Batch 16, 15 epochs of 500 steps, i.e. ``max_steps`` 7500 with a validation every 500 steps
  (`fg_net.config.TrainingConfig.fit_config`); the batches are seeded permutations of the training rows, reshuffled
  every pass as upstream's loader does; seed 0, evaluation batch 32.
- **Selection.** After every epoch the decoded predictions are scored (mean per-AU F1 x 100, ``val/f1``) and the best
  epoch is kept (``checkpoints/best.ckpt``, exported to ``trained/``). Upstream's "val" loader reads the test CSV, i.e.
  it selects on the test fold; here that happens only with ``TrainingConfig.select_on_test=True`` and by default the
  validation set is held-out training subjects (`fg_net.data.AUDataModule`).

`train_fg_net` runs one fold in a run folder (`genblocks.training.run_folder`)::

    DIR/config.yaml                   the merged run config
    DIR/checkpoints/last.ckpt         the newest checkpoint (``fg-net train --resume`` continues from it)
    DIR/checkpoints/step-<N>.ckpt     one per epoch (``training.checkpoint_every_n_steps``), the newest 2 kept
    DIR/checkpoints/best.ckpt         the epoch with the best ``val/f1``
    DIR/metrics.csv, DIR/loss.png     train/loss every ``log_every_n_steps`` steps, val/f1 after each epoch
    DIR/trained/                      the best epoch's model, `fg_net.FGNet.save_pretrained` (``fg-net eval --checkpoint``)
    DIR/summary.json                  the best epoch's validation F1 and the test F1 of the fold
    DIR/data/                         the synthetic corpus when ``data.synthetic`` (the tiny config)

`run_within_corpus` runs the 3-fold protocol: ``DIR/fold-<k>/`` with that layout, and ``DIR/summary.json`` with the
per-fold and averaged test F1.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import lightning as L
import torch
from torch import Tensor, nn

from fg_net.config import FGNetConfig, FGNetRunConfig, TrainingConfig
from fg_net.evaluation import AUScores, au_f1_scores, average_scores, evaluate_model
from fg_net.heatmaps import decode_heatmaps
from fg_net.modeling_fg_net import FGNet
from genblocks.errors import InputError

__all__ = [
    "FGNetTrainingModule",
    "TrainResult",
    "build_fit_arguments",
    "heatmap_loss",
    "prepare_data",
    "run_within_corpus",
    "train_fg_net",
]

logger = logging.getLogger(__name__)


def heatmap_loss(predicted: Tensor, target: Tensor, au_weights: Sequence[float] | None = None) -> Tensor:
    """Per-AU heatmap MSE averaged over AUs: ``sum_k w_k MSE(pred[:, k], target[:, k]) / K``.

    Args:
        predicted (`Tensor` of shape `(B, C, H, W)`): interpreter output, C >= K; only the first K channels count.
        target (`Tensor` of shape `(B, K, H, W)`): target heatmaps.
        au_weights (`Sequence[float]`, *optional*): K weights; `None` weighs every AU 1.

    Returns:
        `Tensor`: scalar loss.
    """
    if predicted.ndim != 4 or target.ndim != 4:
        raise ValueError(
            f"`predicted` and `target` must be (B, C, H, W), got {tuple(predicted.shape)}, {tuple(target.shape)}."
        )
    k = target.shape[1]
    if predicted.shape[0] != target.shape[0] or predicted.shape[1] < k or predicted.shape[2:] != target.shape[2:]:
        raise ValueError(
            f"`predicted` {tuple(predicted.shape)} must have the batch and size of `target` {tuple(target.shape)} and "
            f"at least its {k} channels."
        )
    per_au = (predicted[:, :k].float() - target.float()).square().mean(dim=(0, 2, 3))
    if au_weights is not None:
        if len(au_weights) != k:
            raise ValueError(f"`au_weights` must hold {k} weights (one per AU), got {len(au_weights)}.")
        per_au = per_au * per_au.new_tensor(list(au_weights))
    return per_au.sum() / k


class FGNetTrainingModule(L.LightningModule):
    """Lightning module training an `FGNet` on AU heatmaps and scoring decoded AUs with F1.

    Batches are dicts: training ``{"image": (B, 3, S, S), "heatmap": (B, K, T, T), ...}``; validation and test
    ``{"image", "labels": (B, K)}``. Logged: ``train/loss``, ``val/f1`` (mean F1 x 100) and ``val/f1_au{N}``, the same
    under ``test/``.

    Args:
        model_config (`FGNetConfig`): the model (its AU list is the channel order of heatmaps and labels).
        training (`TrainingConfig`): optimisation and freezing.
        model (`FGNet`, *optional*): the network to train (pretrained weights loaded); built with random weights
            from ``model_config`` when `None`.
    """

    def __init__(self, model_config: FGNetConfig, training: TrainingConfig, model: FGNet | None = None) -> None:
        super().__init__()
        self.save_hyperparameters(
            {"model_config": dataclasses.asdict(model_config), "training": dataclasses.asdict(training)}
        )
        self.model_config = model_config
        self.training_config = training
        self.model = model if model is not None else FGNet(model_config)
        if tuple(self.model.config.aus) != tuple(model_config.aus):
            raise ValueError(f"model AUs {self.model.config.aus} differ from model_config.aus {model_config.aus}.")
        if training.au_weights is not None and len(training.au_weights) != model_config.num_aus:
            raise ValueError(
                f"TrainingConfig.au_weights has {len(training.au_weights)} weights for {model_config.num_aus} AUs."
            )
        for module in self.frozen_modules():
            module.requires_grad_(False)
        self._outputs: dict[str, list[tuple[Tensor, Tensor]]] = {"val": [], "test": []}
        self.last_val_scores: AUScores | None = None
        self.last_test_scores: AUScores | None = None

    def frozen_modules(self) -> list[nn.Module]:
        """The parts the freezing flags exclude from training."""
        frozen: list[nn.Module] = []
        if not self.training_config.train_encoder:
            frozen.append(self.model.encoder)
        if not self.training_config.train_generator:
            frozen.append(self.model.generator.synthesis)
        if not self.training_config.train_mapping:
            frozen.append(self.model.generator.mapping)
        return frozen

    def train(self, mode: bool = True) -> FGNetTrainingModule:
        """Set train mode, keeping frozen parts in eval mode."""
        super().train(mode)
        if mode:
            for module in self.frozen_modules():
                module.eval()
        return self

    def on_fit_start(self) -> None:
        """Put the model in train mode: Lightning keeps the modes modules arrive in (frozen parts stay in eval)."""
        self.train()

    def forward(self, images: Tensor) -> Tensor:
        """The model's heatmaps (B, interpreter_out_channels, T, T)."""
        return self.model(images)

    def training_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> Tensor:
        """One optimisation step on ``batch["image"]`` and ``batch["heatmap"]``."""
        predicted = self.model(batch["image"])
        loss = heatmap_loss(predicted, batch["heatmap"], self.training_config.au_weights)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["image"].shape[0])
        return loss

    def _collect(self, stage: str, batch: Mapping[str, Tensor]) -> None:
        heatmaps = self.model.au_heatmaps(batch["image"])
        self._outputs[stage].append((batch["labels"].long().cpu(), decode_heatmaps(heatmaps).cpu()))

    def validation_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> None:
        """Decode predictions for F1 at the end of the epoch."""
        self._collect("val", batch)

    def test_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> None:
        """Decode predictions for F1 at the end of the test run."""
        self._collect("test", batch)

    def _score(self, stage: str) -> AUScores | None:
        outputs = self._outputs[stage]
        self._outputs[stage] = []
        if not outputs:
            return None
        labels = torch.cat([o[0] for o in outputs])
        predictions = torch.cat([o[1] for o in outputs])
        scores = au_f1_scores(labels, predictions, self.model_config.aus)
        self.log(f"{stage}/f1", scores.mean, prog_bar=True)
        for au, value in zip(scores.aus, scores.f1, strict=True):
            self.log(f"{stage}/f1_au{au}", value)
        logger.info("%s F1: %s", stage, scores.table())
        return scores

    def on_validation_epoch_end(self) -> None:
        """Log the validation F1."""
        self.last_val_scores = self._score("val")

    def on_test_epoch_end(self) -> None:
        """Log the test F1."""
        self.last_test_scores = self._score("test")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """``training.optimizer`` (AdamW by default) over the trainable parameters (interpreter + generator + encoder
        unless frozen)."""
        from genblocks.training.optim import build_optimizer

        return build_optimizer(self.model, self.training_config.optimizer)


def prepare_data(run: FGNetRunConfig, out_dir: str | Path) -> FGNetRunConfig:
    """The run with its data in place: with ``data.synthetic``, a synthetic corpus
    (`fg_net.data.write_synthetic_corpus`: the model's AUs painted, faces at the encoder's input size, seeded with
    ``training.seed``) is written into ``out_dir/data`` unless it is there already (a resumed run) and the returned run
    reads it (``data.root`` set to it, ``data.synthetic`` off).

    Args:
        run (`FGNetRunConfig`): the run.
        out_dir (`str` or `Path`): the run folder.

    Returns:
        `FGNetRunConfig`: ``run`` itself without ``data.synthetic``.
    """
    if not run.data.synthetic:
        return run
    from fg_net.data import write_synthetic_corpus
    from fg_net.evaluation import fold_csv_path

    root = Path(out_dir) / "data"
    if not all(
        fold_csv_path(root, run.data.dataset, fold, split).is_file()
        for fold in (0, 1, 2)
        for split in ("train", "test")
    ):
        write_synthetic_corpus(
            root, run.data.dataset, aus=run.model.aus, image_size=run.model.input_size, seed=run.training.seed
        )
    return dataclasses.replace(run, data=dataclasses.replace(run.data, root=str(root), synthetic=False))


def build_fit_arguments(
    run: FGNetRunConfig, model: FGNet | None = None, datamodule: L.LightningDataModule | None = None
) -> dict[str, Any]:
    """The `genblocks.training.fit` arguments of a run: the seeded training module, the data module and the training
    settings with the schedule filled in (`TrainingConfig.fit_config`).

    Args:
        run (`FGNetRunConfig`): the run (its data in place: see `prepare_data`).
        model (`FGNet`, *optional*): the starting network; `fg_net.convert_fg_net_original.load_fg_net` of ``run``
            (random with ``run.tiny_random``) when `None`.
        datamodule (`L.LightningDataModule`, *optional*): the data; `fg_net.data.AUDataModule` of ``run`` when `None`.
            It must yield training dicts with ``heatmap`` and evaluation dicts with ``labels``.

    Returns:
        `dict`: ``module``, ``datamodule`` and ``train_config``.
    """
    from fg_net.convert_fg_net_original import load_fg_net
    from fg_net.data import AUDataModule

    L.seed_everything(run.training.seed, workers=True, verbose=False)
    if model is None:
        model = load_fg_net(run)
    if datamodule is None:
        datamodule = AUDataModule.from_run_config(run)
    module = FGNetTrainingModule(run.model, run.training, model)
    return {"module": module, "datamodule": datamodule, "train_config": run.training.fit_config()}


@dataclass(frozen=True)
class TrainResult:
    """What `train_fg_net` produced.

    Args:
        model (`FGNet`): the selected model (best validation epoch), in eval mode.
        val_scores (`AUScores` or `None`): F1 of the selected epoch on the validation set.
        test_scores (`AUScores` or `None`): F1 of the selected model on the test fold (`None` when the data module
            has no test data).
        checkpoint (`Path` or `None`): ``checkpoints/best.ckpt`` (`None` when no validation ran).
        export_dir (`Path`): ``trained/``, the `FGNet.save_pretrained` folder of the selected model (provenance in
            its config.json).
        run_dir (`Path`): the run folder.
        steps (`int`): optimizer steps done.
        best_step (`int` or `None`): the step of ``best.ckpt``.
    """

    model: FGNet
    val_scores: AUScores | None
    test_scores: AUScores | None
    checkpoint: Path | None
    export_dir: Path
    run_dir: Path
    steps: int
    best_step: int | None


def _has_loader(datamodule: L.LightningDataModule, name: str) -> bool:
    from lightning.pytorch.utilities.model_helpers import is_overridden

    return is_overridden(name, datamodule, L.LightningDataModule)


def _evaluation_device(training: TrainingConfig) -> torch.device:
    if training.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def _scores(model: FGNet, datamodule: L.LightningDataModule, name: str, device: torch.device) -> AUScores | None:
    if not _has_loader(datamodule, name):
        return None
    with torch.no_grad():
        return evaluate_model(model, getattr(datamodule, name)(), model.config.aus, device=device)


def train_fg_net(
    run: FGNetRunConfig,
    out_dir: str | Path,
    resume: bool = False,
    overwrite: bool = False,
    model: FGNet | None = None,
    datamodule: L.LightningDataModule | None = None,
    callbacks: Sequence[L.Callback] = (),
) -> TrainResult:
    """Train one run (one fold of one corpus) with `genblocks.training.fit` in the run folder ``out_dir``, select the
    best epoch by ``val/f1``, export it to ``out_dir/trained`` and test it (see the module docstring for the layout).

    Args:
        run (`FGNetRunConfig`): model, data, training and checkpoint settings.
        out_dir (`str` or `Path`): the run folder; a used one is refused unless ``resume`` or ``overwrite``.
        resume (`bool`, defaults to `False`): continue from ``out_dir/checkpoints/last.ckpt`` (bit-exact with the
            uninterrupted run, mid-epoch included).
        overwrite (`bool`, defaults to `False`): start again in a used run folder (its run files are deleted).
        model (`FGNet`, *optional*): the starting network (see `build_fit_arguments`).
        datamodule (`L.LightningDataModule`, *optional*): the data (see `build_fit_arguments`).
        callbacks (`Sequence[L.Callback]`): more Lightning callbacks.

    Returns:
        `TrainResult` (on the main process; other ranks of a multi-device run get no scores).

    Raises:
        InputError: a used run folder without ``resume`` / ``overwrite``, or ``resume`` without a checkpoint.
    """
    from genblocks.training import RunFolder, fit

    folder = RunFolder.open(out_dir, resume=resume, overwrite=overwrite)
    run = prepare_data(run, folder.root)
    arguments = build_fit_arguments(run, model=model, datamodule=datamodule)
    best_step: list[int] = []

    def save_trained(module: L.LightningModule, directory: Path) -> None:
        """Load the best epoch (``best.ckpt``) into the module and export its model."""
        if folder.best.is_file():
            checkpoint = torch.load(folder.best, map_location="cpu", weights_only=True)
            module.load_state_dict(checkpoint["state_dict"])
            best_step.append(int(checkpoint["global_step"]))
        cast(FGNet, module.model).save_pretrained(
            directory,
            fold=run.data.fold,
            select_on_test=run.training.select_on_test,
            source="fg_net.training.train_fg_net",
        )

    result = fit(
        arguments["module"],
        arguments["datamodule"],
        arguments["train_config"],
        folder,
        resume,
        config=run,
        save_trained=save_trained,
        monitor="val/f1",
        monitor_mode="max",
        callbacks=callbacks,
    )
    module, data = arguments["module"], arguments["datamodule"]
    trained_model = module.model.eval()
    val_scores = test_scores = None
    if result.trained is not None:
        device = _evaluation_device(run.training)
        trained_model.to(device)
        val_scores = _scores(trained_model, data, "val_dataloader", device)
        test_scores = _scores(trained_model, data, "test_dataloader", device)
        trained_model.cpu()
        summary = {
            "dataset": run.data.dataset,
            "fold": run.data.fold,
            "select_on_test": run.training.select_on_test,
            "steps": result.global_step,
            "best_step": best_step[0] if best_step else None,
            "val_f1": val_scores.as_dict() if val_scores is not None else None,
            "test_f1": test_scores.as_dict() if test_scores is not None else None,
            "trained": str(result.trained),
        }
        (folder.root / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return TrainResult(
        model=trained_model,
        val_scores=val_scores,
        test_scores=test_scores,
        checkpoint=result.best_checkpoint,
        export_dir=folder.trained,
        run_dir=folder.root,
        steps=result.global_step,
        best_step=best_step[0] if best_step else None,
    )


def run_within_corpus(
    run: FGNetRunConfig,
    out_dir: str | Path,
    folds: Sequence[int] = (0, 1, 2),
    resume: bool = False,
    overwrite: bool = False,
) -> tuple[list[TrainResult], AUScores]:
    """The within-corpus protocol: train and test on each fold of ``run.data.dataset``, average the test F1.

    Each fold starts from the same weights (``run``'s checkpoints) and runs in ``out_dir/fold-<k>/`` (the layout of
    `train_fg_net`); ``out_dir/summary.json`` gets the per-fold and averaged test F1. A synthetic corpus
    (``data.synthetic``) is written once, into ``out_dir/data``.

    Args:
        run (`FGNetRunConfig`): the run; ``data.fold`` is replaced per fold.
        out_dir (`str` or `Path`): the protocol folder; a used one is refused unless ``resume`` or ``overwrite``.
        folds (`Sequence[int]`, defaults to `(0, 1, 2)`): the folds to run.
        resume (`bool`, defaults to `False`): continue each fold from its last checkpoint (a finished fold is only
            re-tested; a fold with no checkpoint yet starts again).
        overwrite (`bool`, defaults to `False`): start every fold again.

    Returns:
        `tuple[list[TrainResult], AUScores]`: per-fold results and the fold-averaged test F1.
    """
    root = Path(out_dir)
    if resume and overwrite:
        raise InputError("--resume and --overwrite: pick one (continue the run, or start it again)")
    if root.exists() and not root.is_dir():
        raise InputError(f"--out {root}: is a file, expected a run folder")
    used = sorted(p.name for p in root.iterdir() if p.name != "data") if root.is_dir() else []
    if used and not (resume or overwrite):
        raise InputError(
            f"--out {root}: the folder is not empty ({', '.join(used[:5])}{', ...' if len(used) > 5 else ''});"
            " pass --resume to continue that run, --overwrite to start again, or another --out"
        )
    if resume and not any((root / f"fold-{fold}" / "checkpoints" / "last.ckpt").is_file() for fold in folds):
        raise InputError(
            f"--resume: no {root}/fold-<k>/checkpoints/last.ckpt found (expected the folder of an earlier train)"
        )
    root.mkdir(parents=True, exist_ok=True)
    run = prepare_data(run, root)
    results = []
    for fold in folds:
        fold_dir = root / f"fold-{fold}"
        started = (fold_dir / "checkpoints" / "last.ckpt").is_file()
        fold_run = dataclasses.replace(run, data=dataclasses.replace(run.data, fold=fold))
        results.append(
            train_fg_net(
                fold_run, fold_dir, resume=resume and started, overwrite=overwrite or (resume and not started)
            )
        )
    scores = [r.test_scores for r in results if r.test_scores is not None]
    if len(scores) != len(results):
        raise RuntimeError("a fold produced no test scores; check that every fold has a test CSV.")
    average = average_scores(scores)
    summary = {
        "dataset": run.data.dataset,
        "folds": {str(fold): score.as_dict() for fold, score in zip(folds, scores, strict=True)},
        "average": average.as_dict(),
        "runs": [str(r.run_dir) for r in results],
    }
    (root / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return results, average
