"""Training: the heatmap loss, the optimiser / clipping / freezing settings, and F1 rising from chance on a synthetic
task built from known landmark sets and labels."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from fg_net.config import FGNetRunConfig, TrainingConfig, tiny_config
from fg_net.evaluation import evaluate_model
from fg_net.heatmaps import decode_heatmaps
from fg_net.modeling_fg_net import read_pretrained_metadata
from fg_net.testing import SyntheticAUDataset, synthetic_au_task, tiny_fg_net
from fg_net.training import FGNetTrainingModule, build_trainer, heatmap_loss, train_fg_net


def test_heatmap_loss_is_the_mean_of_per_au_mse() -> None:
    generator = torch.Generator().manual_seed(0)
    predicted = torch.randn(3, 8, 16, 16, generator=generator)
    target = torch.randn(3, 4, 16, 16, generator=generator)
    per_au = [torch.nn.functional.mse_loss(predicted[:, k], target[:, k]) for k in range(4)]
    torch.testing.assert_close(heatmap_loss(predicted, target), sum(per_au) / 4)
    weights = (2.0, 0.5, 1.0, 0.0)
    expected = sum(w * loss for w, loss in zip(weights, per_au, strict=True)) / 4
    torch.testing.assert_close(heatmap_loss(predicted, target, weights), expected)
    with pytest.raises(ValueError, match="au_weights"):
        heatmap_loss(predicted, target, (1.0, 2.0))
    with pytest.raises(ValueError, match="at least its 4 channels"):
        heatmap_loss(predicted[:, :2], target)


def test_defaults_follow_the_paper() -> None:
    training = TrainingConfig()
    assert (training.lr, training.weight_decay, training.grad_clip_norm) == (5e-5, 5e-4, 0.1)
    assert (training.batch_size, training.eval_batch_size, training.epochs, training.steps_per_epoch) == (
        16,
        32,
        15,
        500,
    )
    assert training.select_on_test is False and training.seed == 0
    module = FGNetTrainingModule(tiny_config(), training, tiny_fg_net())
    optimizer = module.configure_optimizers()
    assert isinstance(optimizer, torch.optim.AdamW)
    group = optimizer.param_groups[0]
    assert (group["lr"], group["weight_decay"], group["betas"], group["eps"]) == (5e-5, 5e-4, (0.9, 0.999), 1e-8)
    optimised = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert optimised == {id(p) for p in module.model.parameters()}  # interpreter + generator (mapping too) + encoder
    trainer = build_trainer(training, enable_checkpointing=False)
    assert (trainer.gradient_clip_val, trainer.gradient_clip_algorithm) == (0.1, "norm")
    assert (trainer.max_epochs, trainer.limit_train_batches) == (15, 500)


def test_freezing_options() -> None:
    training = TrainingConfig(train_encoder=False, train_mapping=False)
    module = FGNetTrainingModule(tiny_config(), training, tiny_fg_net())
    optimised = {id(p) for g in module.configure_optimizers().param_groups for p in g["params"]}
    model = module.model
    assert not optimised & {id(p) for p in model.encoder.parameters()}
    assert not optimised & {id(p) for p in model.generator.mapping.parameters()}
    assert {id(p) for p in model.generator.synthesis.parameters()} <= optimised
    assert {id(p) for p in model.interpreter.parameters()} <= optimised
    module.train()
    assert not model.encoder.training and model.interpreter.training and model.generator.synthesis.training
    with pytest.raises(ValueError, match="au_weights"):
        FGNetTrainingModule(tiny_config(), TrainingConfig(au_weights=(1.0,)), tiny_fg_net())


def _loaders(train_count: int, test_count: int) -> tuple[DataLoader, DataLoader]:
    train = SyntheticAUDataset(synthetic_au_task(train_count, seed=0))
    test = SyntheticAUDataset(synthetic_au_task(test_count, seed=1))
    generator = torch.Generator().manual_seed(0)
    return DataLoader(train, batch_size=8, shuffle=True, generator=generator), DataLoader(test, batch_size=64)


def test_synthetic_task_targets_decode_to_labels() -> None:
    task = synthetic_au_task(64, seed=3)
    assert task.images.shape == (64, 3, 32, 32) and task.heatmaps.shape == (64, 4, 16, 16)
    assert task.heatmaps.abs().max() <= 1.0
    assert torch.equal(decode_heatmaps(task.heatmaps), task.labels)
    assert 0.3 < task.labels.float().mean() < 0.7


def test_training_drives_f1_up_from_chance() -> None:
    train_loader, test_loader = _loaders(256, 128)
    torch.manual_seed(0)
    model = tiny_fg_net()
    aus = model.config.aus
    before = evaluate_model(model, test_loader, aus)
    training = TrainingConfig(lr=1e-3, batch_size=8, epochs=1, steps_per_epoch=40)
    module = FGNetTrainingModule(model.config, training, model)
    trainer = build_trainer(training, enable_checkpointing=False)
    trainer.fit(module, train_dataloaders=train_loader, val_dataloaders=test_loader)
    after = evaluate_model(module.model, test_loader, aus)
    # chance: always "active" scores 2p / (1 + p) ~ 67 on balanced labels; the untrained model is no better
    assert before.mean < 70.0
    assert after.mean > 90.0, after.table()
    assert min(after.f1) > 80.0, after.table()
    assert trainer.callback_metrics["val/f1"] == pytest.approx(after.mean)


class _SyntheticDataModule(L.LightningDataModule):
    def __init__(self) -> None:
        super().__init__()
        self.train, self.test = _loaders(64, 32)

    def train_dataloader(self) -> DataLoader:
        return self.train

    def val_dataloader(self) -> DataLoader:
        return self.test

    def test_dataloader(self) -> DataLoader:
        return self.test


def test_train_fg_net_selects_exports_and_records_provenance(tmp_path: Path) -> None:
    run = FGNetRunConfig(
        model=tiny_config(),
        training=TrainingConfig(lr=1e-3, batch_size=8, epochs=2, steps_per_epoch=3, output_dir=str(tmp_path / "run")),
        tiny_random=True,
    )
    run = dataclasses.replace(run, data=dataclasses.replace(run.data, fold=1))
    result = train_fg_net(run, datamodule=_SyntheticDataModule())
    assert result.checkpoint is not None and result.checkpoint.is_file()
    assert result.val_scores is not None and result.test_scores is not None
    assert result.test_scores.aus == (1, 2, 6, 12)
    metadata = read_pretrained_metadata(result.export_dir)
    assert (metadata["fold"], metadata["select_on_test"], metadata["aus"]) == (1, False, [1, 2, 6, 12])
    assert not result.model.training
