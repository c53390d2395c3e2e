"""genblocks.training.fit: the run folder, exact resume after SIGKILL mid-epoch, atomic checkpoints, the schema."""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from genblocks.errors import InputError
from genblocks.testing.resume import assert_kill_resume_exact
from genblocks.training import TrainConfig, fit
from genblocks.training.fitting import DataPosition, StepBatchSampler, read_metrics
from genblocks.training.run_folder import CheckpointWriteError, RunFolder

THIS_FILE = Path(__file__).resolve()


class Points(Dataset):
    """7 fixed points (an odd size: batches of 2 straddle epoch boundaries)."""

    def __init__(self) -> None:
        generator = torch.Generator().manual_seed(0)
        self.x = torch.randn(7, 4, generator=generator)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1

    def __len__(self) -> int:
        return 7

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[index], "y": self.y[index], "index": torch.tensor(index)}


class PointsData(L.LightningDataModule):
    def __init__(self, batch_size: int = 2) -> None:
        super().__init__()
        self.batch_size = batch_size

    def train_dataloader(self) -> DataLoader:
        return DataLoader(Points(), batch_size=self.batch_size, shuffle=True)


class Regressor(L.LightningModule):
    """Linear regression with dropout (it draws from the global RNG) and a record of the batches it saw."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 16), nn.Dropout(0.3), nn.Linear(16, 1))
        self.register_buffer("seen", torch.zeros(0, dtype=torch.long))

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        self.seen = torch.cat([self.seen, batch["index"]])
        loss = ((self.net(batch["x"]).squeeze(-1) - batch["y"]) ** 2).mean()
        self.log("train/loss", loss)
        return loss

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["seen"] = self.seen.clone()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.seen = checkpoint["seen"]

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-2)


def small_config(**changes: object) -> TrainConfig:
    values = {
        "max_steps": 9,
        "checkpoint_every_n_steps": 2,
        "log_every_n_steps": 1,
        "keep_last": 2,
        "progress_bar": False,
        "accelerator": "cpu",
        "seed": 3,
    }
    values.update(changes)
    return TrainConfig(**values)


def build(out_dir: Path) -> dict:
    """The fit() arguments of the kill/resume test (loaded by file path in a subprocess)."""
    L.seed_everything(3, verbose=False)
    return {"module": Regressor(), "datamodule": PointsData(), "train_config": small_config()}


def test_kill_after_a_mid_epoch_checkpoint_then_resume_is_bit_exact(tmp_path: Path) -> None:
    # Step 4 with batch 2 over 7 samples is 8 samples in: the second pass over the data, mid-permutation.
    result = assert_kill_resume_exact(f"{THIS_FILE}:build", tmp_path, kill_after=4)
    seen = result["uninterrupted"].seen
    assert seen.numel() == 18 and torch.equal(seen, result["resumed"].seen)
    assert sorted(seen[:7].tolist()) == list(range(7))  # the first 7 samples are one permutation
    killed_rows = read_metrics(result["killed_run"] / "metrics.csv")
    straight_rows = read_metrics(tmp_path / "straight" / "metrics.csv")
    assert [row[0] for row in killed_rows] == [row[0] for row in straight_rows] == list(range(1, 10))
    assert [row[2] for row in killed_rows] == [row[2] for row in straight_rows]


def test_run_folder_layout(tmp_path: Path) -> None:
    L.seed_everything(0, verbose=False)
    saved = []
    result = fit(
        Regressor(),
        PointsData(),
        small_config(),
        tmp_path / "run",
        config={"train": {"max_steps": 9}},
        save_trained=lambda module, folder: saved.append(torch.save(module.state_dict(), folder / "weights.pt")),
    )
    run = result.run
    assert result.global_step == 9 and run.last.is_file() and run.config.read_text().startswith("train:")
    assert [step for step, _ in run.step_checkpoints()] == [8, 9]  # keep_last=2 of 2, 4, 6, 8, 9
    assert torch.load(run.last, weights_only=True)["global_step"] == 9
    assert run.loss_plot.is_file() and run.loss_plot.read_bytes()[:4] == b"\x89PNG"
    assert (run.trained / "weights.pt").is_file()
    losses = [value for _, name, value in read_metrics(run.metrics) if name == "train/loss"]
    assert len(losses) == 9
    assert not list(run.checkpoints.glob(".*tmp*")), "temporary files left behind"


def test_a_used_folder_is_refused_without_resume_or_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "run"
    fit(Regressor(), PointsData(), small_config(max_steps=2), out)
    with pytest.raises(InputError, match=r"not empty.*--resume.*--overwrite"):
        fit(Regressor(), PointsData(), small_config(max_steps=2), out)
    result = fit(Regressor(), PointsData(), small_config(max_steps=3), out, overwrite=True)
    assert result.global_step == 3 and [s for s, _ in result.run.step_checkpoints()] == [2, 3]
    with pytest.raises(InputError, match=r"--resume: .*last\.ckpt not found"):
        RunFolder.open(tmp_path / "empty", resume=True)
    (tmp_path / "fresh" / "data").mkdir(parents=True)  # a synthetic manifest written before fit() is not a run
    assert RunFolder.open(tmp_path / "fresh").root == tmp_path / "fresh"


def test_resume_continues_a_finished_run_to_more_steps(tmp_path: Path) -> None:
    out = tmp_path / "run"
    L.seed_everything(1, verbose=False)
    fit(Regressor(), PointsData(), small_config(max_steps=4), out)
    resumed = fit(Regressor(), PointsData(), small_config(max_steps=6), out, resume=True)
    assert resumed.global_step == 6
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 6


def test_failed_checkpoint_write_keeps_the_previous_last_loadable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    L.seed_everything(0, verbose=False)
    fit(Regressor(), PointsData(), small_config(max_steps=2), out)
    before = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    real_save = torch.save

    def disk_full(obj: object, handle: object, *args: object, **kwargs: object) -> None:
        real_save({"partial": torch.zeros(10)}, handle)  # some bytes reach the temporary file, then the disk fills
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(CheckpointWriteError, match=r"No space left on device.*previous file is intact"):
        fit(Regressor(), PointsData(), small_config(max_steps=4), out, resume=True)
    monkeypatch.setattr(torch, "save", real_save)
    after = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert after["global_step"] == before["global_step"] == 2
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]


def test_step_sampler_slices_the_global_batch_by_rank() -> None:
    position = DataPosition()
    single = StepBatchSampler(10, 4, 5, seed=0, position=position)
    ranks = [StepBatchSampler(10, 2, 5, seed=0, position=DataPosition(), rank=r, world_size=2) for r in (0, 1)]
    for step in range(5):
        assert single.batch(step) == ranks[0].batch(step) + ranks[1].batch(step)
    position.consumed = 3
    assert list(single) == [single.batch(3), single.batch(4)]
    first_pass = single.batch(0) + single.batch(1)[:2] + single.batch(1)[2:]
    assert sorted((first_pass + single.batch(2))[:10]) == list(range(10))


@pytest.mark.parametrize(
    ("key", "value"),
    [("max_steps", 0), ("max_steps", -3), ("max_steps", 2.5), ("devices", 0), ("accumulate_grad_batches", True)],
)
def test_schema_refuses_non_positive_and_non_integer_sizes(key: str, value: object) -> None:
    with pytest.raises(InputError, match=rf"^{key}: expected a positive integer"):
        TrainConfig(**{key: value})


def test_schema_loads_from_yaml_overrides() -> None:
    from genblocks.config import ConfigError, load_config

    config = load_config(TrainConfig, None, ["max_steps=5", "optimizer.name=coap_adamw", "optimizer.lr=1e-3"])
    assert (config.max_steps, config.optimizer.name, config.optimizer.lr) == (5, "coap_adamw", 1e-3)
    with pytest.raises(ConfigError, match="max_steps"):
        load_config(TrainConfig, None, ["max_steps=0"])
    with pytest.raises(ConfigError, match=r"optimizer\.name"):
        load_config(TrainConfig, None, ["optimizer.name=sgd"])


def test_importing_train_config_is_light() -> None:
    import subprocess
    import sys

    code = "import sys, genblocks.training as t; t.TrainConfig; print(sorted(m for m in ('lightning', 'torch', 'diffusers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_atomic_write_leaves_no_temporary_on_success(tmp_path: Path) -> None:
    from genblocks.training.run_folder import atomic_write

    target = tmp_path / "a" / "file.bin"
    atomic_write(target, lambda handle: handle.write(b"abc"))
    assert target.read_bytes() == b"abc" and os.listdir(target.parent) == ["file.bin"]


class ValidatedRegressor(Regressor):
    """Validation score = minus the step count at which it runs (so the first validation is the best)."""

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.log("val/score", -float(self.global_step))


class ValidatedData(PointsData):
    def val_dataloader(self) -> DataLoader:
        return DataLoader(Points(), batch_size=7)


def test_validation_every_n_steps_keeps_the_best_checkpoint(tmp_path: Path) -> None:
    L.seed_everything(0, verbose=False)
    config = small_config(max_steps=6, val_every_n_steps=2)
    result = fit(ValidatedRegressor(), ValidatedData(), config, tmp_path / "run", monitor="val/score")
    assert result.best_score == -2.0  # validations at steps 2, 4, 6: the first is the best by construction
    assert torch.load(result.best_checkpoint, weights_only=True)["global_step"] == 2
    assert [step for step, name, _ in read_metrics(result.run.metrics) if name == "val/score"][:1] == [2]


class Grouped(torch.utils.data.Sampler):
    """Batches of equal parity, reshuffled from seed + epoch (a package's own batch sampler)."""

    def __init__(self) -> None:
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        order = torch.randperm(7, generator=torch.Generator().manual_seed(self.epoch)).tolist()
        evens, odds = [i for i in order if i % 2 == 0], [i for i in order if i % 2]
        yield from (evens[:2], evens[2:], odds[:2], odds[2:])

    def __len__(self) -> int:
        return 4


def test_a_package_batch_sampler_is_replayed_dealt_and_skipped() -> None:
    from genblocks.training.fitting import SkippingBatchSampler

    full = list(SkippingBatchSampler(Grouped(), 10, DataPosition()))
    first_pass, second = Grouped(), Grouped()
    second.set_epoch(1)
    assert len(full) == 10 and full[:4] == list(first_pass) and full[4:8] == list(second)
    assert all(len({i % 2 for i in batch}) == 1 for batch in full)  # the grouping is kept
    resumed = list(SkippingBatchSampler(Grouped(), 10, DataPosition(consumed=6)))
    assert resumed == full[6:]
    ranks = [list(SkippingBatchSampler(Grouped(), 5, DataPosition(), rank=r, world_size=2)) for r in (0, 1)]
    assert ranks[0] == full[0:10:2] and ranks[1] == full[1:10:2]
