"""Training: the heatmap loss, the optimiser / clipping / freezing settings, F1 rising from chance on a synthetic task
built from known landmark sets and labels, and `train_fg_net` on `genblocks.training.fit` (run folder, best epoch,
export, bit-exact resume after a kill mid-epoch)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from fg_net.config import FGNetRunConfig, TrainingConfig, tiny_config, tiny_run_config
from fg_net.evaluation import evaluate_model
from fg_net.heatmaps import decode_heatmaps
from fg_net.modeling_fg_net import FGNet, read_pretrained_metadata
from fg_net.testing import SyntheticAUDataset, synthetic_au_task, tiny_fg_net
from fg_net.training import FGNetTrainingModule, build_fit_arguments, heatmap_loss, prepare_data, train_fg_net
from genblocks.errors import InputError
from genblocks.training import OptimizerConfig, TrainConfig, fit
from genblocks.training.fitting import read_metrics


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
    assert isinstance(training, TrainConfig)  # genblocks' shared training keys
    assert (training.optimizer.name, training.optimizer.lr, training.optimizer.weight_decay) == ("adamw", 5e-5, 5e-4)
    assert training.gradient_clip_val == 0.1
    assert (training.batch_size, training.eval_batch_size, training.epochs, training.steps_per_epoch) == (
        16,
        32,
        15,
        500,
    )
    assert training.select_on_test is False and training.seed == 0
    schedule = training.fit_config()  # 15 epochs of 500 steps, a validation after each
    assert (schedule.max_steps, schedule.val_every_n_steps, training.max_steps) == (7500, 500, None)
    smoke = TrainingConfig(max_steps=3, steps_per_epoch=5).fit_config()
    assert (smoke.max_steps, smoke.val_every_n_steps) == (3, 3)  # at least one validation
    module = FGNetTrainingModule(tiny_config(), training, tiny_fg_net())
    optimizer = module.configure_optimizers()
    assert isinstance(optimizer, torch.optim.AdamW)
    group = optimizer.param_groups[0]
    assert (group["lr"], group["weight_decay"], group["betas"], group["eps"]) == (5e-5, 5e-4, (0.9, 0.999), 1e-8)
    optimised = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert optimised == {id(p) for p in module.model.parameters()}  # interpreter + generator (mapping too) + encoder
    with pytest.raises(InputError, match="max_steps"):
        TrainingConfig(max_steps=0)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        TrainingConfig(steps_per_epoch=0)


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


class _SyntheticDataModule(L.LightningDataModule):
    def __init__(self, train_count: int = 64, test_count: int = 32) -> None:
        super().__init__()
        self.train, self.test = _loaders(train_count, test_count)

    def train_dataloader(self) -> DataLoader:
        return self.train

    def val_dataloader(self) -> DataLoader:
        return self.test

    def test_dataloader(self) -> DataLoader:
        return self.test


def _quiet(**changes: object) -> TrainingConfig:
    """A CPU training config without progress bar (``changes`` override)."""
    values: dict[str, object] = {"accelerator": "cpu", "progress_bar": False, "log_every_n_steps": 1}
    values.update(changes)
    return TrainingConfig(**values)


def test_training_drives_f1_up_from_chance(tmp_path: Path) -> None:
    data = _SyntheticDataModule(256, 128)
    torch.manual_seed(0)
    model = tiny_fg_net()
    aus = model.config.aus
    before = evaluate_model(model, data.test, aus)
    training = _quiet(
        optimizer=OptimizerConfig(lr=1e-3, weight_decay=5e-4), batch_size=8, epochs=1, steps_per_epoch=40
    )
    module = FGNetTrainingModule(model.config, training, model)
    result = fit(module, data, training.fit_config(), tmp_path / "run", monitor="val/f1")
    after = evaluate_model(module.model, data.test, aus)
    # chance: always "active" scores 2p / (1 + p) ~ 67 on balanced labels; the untrained model is no better
    assert before.mean < 70.0
    assert after.mean > 90.0, after.table()
    assert min(after.f1) > 80.0, after.table()
    assert result.global_step == 40 and result.best_score == pytest.approx(after.mean)


def test_train_fg_net_selects_exports_and_records_provenance(tmp_path: Path) -> None:
    run = FGNetRunConfig(
        model=tiny_config(),
        training=_quiet(optimizer=OptimizerConfig(lr=1e-3), batch_size=8, epochs=3, steps_per_epoch=2),
        tiny_random=True,
    )
    run = dataclasses.replace(run, data=dataclasses.replace(run.data, fold=1))
    out = tmp_path / "run"
    result = train_fg_net(run, out, datamodule=_SyntheticDataModule())
    assert result.steps == 6 and result.run_dir == out
    for name in ("config.yaml", "metrics.csv", "loss.png", "summary.json", "checkpoints/last.ckpt"):
        assert (out / name).is_file(), name
    # the best epoch by val/f1 (the first of equal ones) is best.ckpt, and trained/ holds its model
    validations = [(step, value) for step, name, value in read_metrics(out / "metrics.csv") if name == "val/f1"]
    assert [step for step, _ in validations] == [2, 4, 6]
    best_step, best_f1 = max(validations, key=lambda row: (row[1], -row[0]))
    assert result.checkpoint == out / "checkpoints" / "best.ckpt" and result.best_step == best_step
    best = torch.load(result.checkpoint, weights_only=True)
    assert best["global_step"] == best_step
    assert result.export_dir == out / "trained"
    exported = FGNet.from_pretrained(result.export_dir).state_dict()
    for name, value in exported.items():
        assert torch.equal(value, best["state_dict"][f"model.{name}"]), name
    assert result.val_scores is not None and result.val_scores.mean == pytest.approx(best_f1)
    assert result.test_scores is not None and result.test_scores.aus == (1, 2, 6, 12)
    metadata = read_pretrained_metadata(result.export_dir)
    assert (metadata["fold"], metadata["select_on_test"], metadata["aus"]) == (1, False, [1, 2, 6, 12])
    assert not result.model.training
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best_step"] == best_step and summary["test_f1"]["avg"] == pytest.approx(result.test_scores.mean)
    # a used run folder is refused without --resume / --overwrite
    with pytest.raises(InputError, match=r"not empty.*--resume.*--overwrite"):
        train_fg_net(run, out, datamodule=_SyntheticDataModule())


def _kill_resume_run() -> FGNetRunConfig:
    run = tiny_run_config()
    training = dataclasses.replace(
        run.training,
        batch_size=5,
        epochs=2,
        steps_per_epoch=3,
        checkpoint_every_n_steps=2,
        accelerator="cpu",
        progress_bar=False,
    )
    return dataclasses.replace(run, training=training)


def build(out_dir: Path) -> dict:
    """fit() arguments of the kill/resume test (loaded by file path in a subprocess): the tiny config on its synthetic
    corpus (written into ``out_dir/data``: 24 training faces), batch 5, 2 epochs of 3 steps, a checkpoint every 2."""
    return build_fit_arguments(prepare_data(_kill_resume_run(), out_dir))


def test_kill_mid_epoch_then_resume_is_bit_exact(tmp_path: Path) -> None:
    from genblocks.testing.resume import assert_kill_resume_exact

    # step 4 is mid-way through epoch 2 (steps 4-6; validation after steps 3 and 6) and 20 faces into the data's
    # second pass (24 faces, batch 5)
    result = assert_kill_resume_exact(f"{Path(__file__).resolve()}:build", tmp_path, kill_after=4)
    killed, straight = result["killed_run"], tmp_path / "straight"
    assert torch.load(killed / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 6
    rows = read_metrics(killed / "metrics.csv")
    assert rows == read_metrics(straight / "metrics.csv")
    assert [step for step, name, _ in rows if name == "val/f1"] == [3, 6]  # the validation before the kill is kept
