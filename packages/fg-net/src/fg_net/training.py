"""Training FG-Net with Lightning: per-AU heatmap MSE, AdamW over interpreter + generator + encoder, F1 selection.

Follows ihp-lab/FG-Net@6067ab2a5fadc796efd69e25ea9800e095a344b7 ``code/train_interpreter.py`` (spec fg-net §4):

- **Loss.** The MSE of each used heatmap channel against its target, averaged over the K AUs (optionally weighted,
  ``TrainingConfig.au_weights``); no classification loss.
- **Optimiser.** AdamW (lr 5e-5, weight decay 5e-4, default betas/eps) over the interpreter, the whole StyleGAN2
  (mapping included: it is reached through the re-mapping) and the pSp encoder; gradient-norm clipping at 0.1 over
  the same parameters. ``train_encoder`` / ``train_generator`` / ``train_mapping`` freeze parts (frozen parts stay in
  eval mode, so their BatchNorm statistics do not move either).
- **Schedule.** Batch 16, 15 epochs of 500 steps (Lightning ``limit_train_batches``; the loader reshuffles every
  epoch as upstream's does), seed 0, evaluation batch 32.
- **Selection.** After every epoch the decoded predictions are scored (mean per-AU F1 x 100, ``val/f1``) and the best
  epoch is kept. Upstream's "val" loader reads the test CSV, i.e. it selects on the test fold; here that happens only
  with ``TrainingConfig.select_on_test=True`` and by default the validation set is held-out training subjects
  (`fg_net.data.AUDataModule`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from fg_net.config import FGNetConfig, FGNetRunConfig, TrainingConfig
from fg_net.evaluation import AUScores, au_f1_scores, average_scores
from fg_net.heatmaps import decode_heatmaps
from fg_net.modeling_fg_net import FGNet

__all__ = [
    "FGNetTrainingModule",
    "TrainResult",
    "build_trainer",
    "heatmap_loss",
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
        """AdamW over the trainable parameters (interpreter + generator + encoder by default)."""
        from genblocks.training.optim import OptimizerConfig, build_optimizer  # its package imports diffusers

        config = OptimizerConfig(
            name="adamw", lr=self.training_config.lr, weight_decay=self.training_config.weight_decay
        )
        return build_optimizer(self.model, config)


def build_trainer(
    training: TrainingConfig,
    output_dir: str | Path | None = None,
    enable_checkpointing: bool = True,
    enable_progress_bar: bool = False,
    logger_enabled: bool = False,
) -> L.Trainer:
    """A Lightning trainer with FG-Net's schedule: ``epochs`` x ``steps_per_epoch`` steps, gradient-norm clipping,
    and (with checkpointing) the best epoch by ``val/f1`` kept.

    Args:
        training (`TrainingConfig`): schedule, clipping, precision, accelerator.
        output_dir (`str` or `Path`, *optional*): where checkpoints go (defaults to ``training.output_dir``).
        enable_checkpointing (`bool`, defaults to `True`): keep the best checkpoint by ``val/f1``.
        enable_progress_bar (`bool`, defaults to `False`): show Lightning's progress bar.
        logger_enabled (`bool`, defaults to `False`): write CSV logs under ``output_dir``.

    Returns:
        `L.Trainer`.
    """
    output_dir = Path(output_dir if output_dir is not None else training.output_dir)
    callbacks: list[L.Callback] = []
    if enable_checkpointing:
        callbacks.append(
            L.pytorch.callbacks.ModelCheckpoint(
                dirpath=output_dir / "checkpoints",
                filename="best-{epoch}",
                monitor="val/f1",
                mode="max",
                save_top_k=1,
            )
        )
    csv_logger: Any = L.pytorch.loggers.CSVLogger(str(output_dir), name="logs") if logger_enabled else False
    return L.Trainer(
        max_epochs=training.epochs,
        limit_train_batches=training.steps_per_epoch,
        max_steps=training.max_steps if training.max_steps is not None else -1,
        gradient_clip_val=training.grad_clip_norm,
        gradient_clip_algorithm="norm",
        accelerator=training.accelerator,
        devices=1,
        precision=training.precision,
        callbacks=callbacks,
        enable_checkpointing=enable_checkpointing,
        enable_progress_bar=enable_progress_bar,
        enable_model_summary=False,
        logger=csv_logger,
        default_root_dir=str(output_dir),
        num_sanity_val_steps=0,
        log_every_n_steps=min(50, training.steps_per_epoch),
    )


@dataclass(frozen=True)
class TrainResult:
    """What `train_fg_net` produced.

    Args:
        model (`FGNet`): the selected model (best validation epoch), in eval mode.
        val_scores (`AUScores` or `None`): F1 of the selected epoch on the validation set.
        test_scores (`AUScores` or `None`): F1 of the selected model on the test fold.
        checkpoint (`Path` or `None`): the best Lightning checkpoint.
        export_dir (`Path`): ``FGNet.save_pretrained`` folder of the selected model (provenance in its config.json).
    """

    model: FGNet
    val_scores: AUScores | None
    test_scores: AUScores | None
    checkpoint: Path | None
    export_dir: Path


def train_fg_net(
    run: FGNetRunConfig,
    model: FGNet | None = None,
    datamodule: L.LightningDataModule | None = None,
    enable_progress_bar: bool = False,
) -> TrainResult:
    """Train one run (one fold of one corpus), select the best epoch, test it and export it.

    Args:
        run (`FGNetRunConfig`): model, data, training and checkpoint settings.
        model (`FGNet`, *optional*): the starting network; loaded from ``run``'s checkpoints (or random with
            ``run.tiny_random``) when `None`, see `fg_net.convert_fg_net_original.load_fg_net`.
        datamodule (`L.LightningDataModule`, *optional*): the data; `fg_net.data.AUDataModule` from ``run`` when
            `None`. It must yield training dicts with ``heatmap`` and evaluation dicts with ``labels``.
        enable_progress_bar (`bool`, defaults to `False`): show Lightning's progress bar.

    Returns:
        `TrainResult`.
    """
    from fg_net.convert_fg_net_original import load_fg_net
    from fg_net.data import AUDataModule

    L.seed_everything(run.training.seed, workers=True)
    if model is None:
        model = load_fg_net(run)
    if datamodule is None:
        datamodule = AUDataModule.from_run_config(run)
    module = FGNetTrainingModule(run.model, run.training, model)
    output_dir = Path(run.training.output_dir)
    trainer = build_trainer(run.training, output_dir, enable_progress_bar=enable_progress_bar, logger_enabled=True)
    trainer.fit(module, datamodule=datamodule)
    callback = trainer.checkpoint_callback
    best = Path(callback.best_model_path) if callback is not None and callback.best_model_path else None
    val_scores = None
    if best is not None:
        module.load_state_dict(torch.load(best, map_location="cpu", weights_only=True)["state_dict"])
        trainer.validate(module, datamodule=datamodule, verbose=False)
        val_scores = module.last_val_scores
    trainer.test(module, datamodule=datamodule, verbose=False)
    test_scores = module.last_test_scores
    export_dir = output_dir / "best"
    module.model.save_pretrained(
        export_dir,
        fold=run.data.fold,
        select_on_test=run.training.select_on_test,
        source="fg_net.training.train_fg_net",
    )
    return TrainResult(module.model.eval(), val_scores, test_scores, best, export_dir)


def run_within_corpus(run: FGNetRunConfig, folds: Sequence[int] = (0, 1, 2)) -> tuple[list[TrainResult], AUScores]:
    """The within-corpus protocol: train and test on each fold of ``run.data.dataset``, average the test F1.

    Each fold starts from the same weights (``run``'s checkpoints) and writes to ``{output_dir}/fold{k}``.

    Args:
        run (`FGNetRunConfig`): the run; ``data.fold`` and ``training.output_dir`` are replaced per fold.
        folds (`Sequence[int]`, defaults to `(0, 1, 2)`): the folds to run.

    Returns:
        `tuple[list[TrainResult], AUScores]`: per-fold results and the fold-averaged test F1.
    """
    results = []
    for fold in folds:
        fold_run = dataclasses.replace(
            run,
            data=dataclasses.replace(run.data, fold=fold),
            training=dataclasses.replace(run.training, output_dir=str(Path(run.training.output_dir) / f"fold{fold}")),
        )
        results.append(train_fg_net(fold_run))
    scores = [r.test_scores for r in results if r.test_scores is not None]
    if len(scores) != len(results):
        raise RuntimeError("a fold produced no test scores; check that every fold has a test CSV.")
    return results, average_scores(scores)
