"""``fit()``: the one training entry of every package's ``train`` command.

It owns the Lightning ``Trainer``, the run folder (:mod:`genblocks.training.run_folder`), and exact resume:

- **Data position.** A plain training loader (shuffled or sequential) gets a step-indexed sampler: the whole run is one
  pass over a stream of seeded permutations of the dataset, global batch ``g`` holds stream items ``[g*B*W, (g+1)*B*W)``
  (``B`` the per-device batch, ``W`` the world size) and rank ``r`` takes its slice ``[r*B, (r+1)*B)`` of it. The
  number of batches consumed is saved in every checkpoint (through Lightning's resumable-loader interface), so a run
  resumed mid-epoch sees exactly the batches the uninterrupted run would have seen. A loader with its own batch sampler
  (batches grouped by a key, say) keeps it, replayed pass after pass and skipped to the position on resume
  (:class:`SkippingBatchSampler`).
- **RNG states.** torch (CPU and CUDA), numpy and Python's ``random`` states are saved with each checkpoint and restored
  before the first resumed step; modules that own a generator save it themselves.
- **Safe writes.** Checkpoints are written in the run folder itself, fsynced and renamed
  (:func:`~genblocks.training.run_folder.atomic_write`): a failed write raises
  :class:`~genblocks.training.run_folder.CheckpointWriteError` and leaves the previous ``last.ckpt`` loadable.
  Checkpoints are read back with ``torch.load(weights_only=True)``.
- **Files.** ``config.yaml``, ``checkpoints/{last,step-<N>,best}.ckpt``, ``metrics.csv`` (``step,metric,value``),
  ``loss.png`` and ``trained/`` (through the package's ``save_trained``).

Several devices or nodes are ``train.devices`` / ``train.num_nodes`` / ``train.strategy``; nothing else changes.
``train.strategy=fsdp`` is FSDP2 (Lightning's ``ModelParallelStrategy``; :func:`fully_shard_module` shards every
submodule that holds parameters over the data-parallel mesh, so the parameters are ``Shard(0)`` DTensors): the COAP
optimizers project such parameters shard by shard, which Lightning's FSDP1 strategy (flattened parameters) rules out.
Checkpoints stay single files (full state dicts gathered on rank 0).
"""

from __future__ import annotations

import csv
import logging
import math
import random
from collections.abc import Callable, Iterator, Sequence, Sized
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch.utils.data import BatchSampler, DataLoader, IterableDataset, RandomSampler, Sampler, SequentialSampler

from genblocks.training.config import TrainConfig
from genblocks.training.run_folder import RunFolder, atomic_link, atomic_write

if TYPE_CHECKING:
    from lightning.fabric.connector import _PRECISION_INPUT

__all__ = [
    "AtomicCheckpointIO",
    "DataPosition",
    "FitResult",
    "SkippingBatchSampler",
    "StepBatchSampler",
    "fit",
    "fully_shard_module",
    "plot_losses",
    "read_metrics",
]

logger = logging.getLogger(__name__)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO that writes beside the target, fsyncs and renames, and loads with ``weights_only``."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        atomic_write(Path(path), lambda handle: torch.save(checkpoint, handle))

    def load_checkpoint(self, path: Any, map_location: Any | None = None, weights_only: bool | None = None) -> Any:
        return torch.load(path, map_location=map_location if map_location is not None else "cpu", weights_only=True)


@dataclass
class DataPosition:
    """How many training batches this process has consumed (shared by the sampler and the checkpoint callback)."""

    consumed: int = 0


class StepBatchSampler(Sampler[list[int]]):
    """Batches of dataset indices for a whole run, indexed by step, resumable at any batch.

    The index stream is the concatenation of permutations of ``range(dataset_size)``; permutation ``p`` is drawn from
    ``torch.Generator().manual_seed(seed + p)``. Batch ``g`` of rank ``r`` is stream items
    ``[g*B*W + r*B, g*B*W + (r+1)*B)``.

    Args:
        dataset_size: Number of samples.
        batch_size: Per-device batch ``B``.
        total_batches: Batches of the whole run on this rank (``max_steps * accumulate_grad_batches``).
        seed: Seed of the permutations.
        position: Where iteration starts (batches already consumed); read at each ``iter()``.
        rank: This process's rank ``r``.
        world_size: Number of processes ``W``.
    """

    def __init__(
        self,
        dataset_size: int,
        batch_size: int,
        total_batches: int,
        seed: int,
        position: DataPosition,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if dataset_size <= 0:
            raise ValueError("the training dataset is empty")
        self.dataset_size = dataset_size
        self.batch_size = batch_size
        self.total_batches = total_batches
        self.seed = seed
        self.position = position
        self.rank = rank
        self.world_size = world_size
        self._cached_index = -1
        self._cached = torch.empty(0, dtype=torch.long)

    def __len__(self) -> int:
        return self.total_batches

    def _permutation(self, index: int) -> torch.Tensor:
        return torch.randperm(self.dataset_size, generator=torch.Generator().manual_seed(self.seed + index))

    def batch(self, step: int) -> list[int]:
        """The dataset indices of batch ``step`` of this rank."""
        start = step * self.batch_size * self.world_size + self.rank * self.batch_size
        indices = []
        for item in range(start, start + self.batch_size):
            permutation, offset = divmod(item, self.dataset_size)
            if permutation != self._cached_index:
                self._cached, self._cached_index = self._permutation(permutation), permutation
            indices.append(int(self._cached[offset]))
        return indices

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.position.consumed, self.total_batches):
            yield self.batch(step)


class SkippingBatchSampler(Sampler[list[int]]):
    """Makes a package's own batch sampler (e.g. batches grouped by a key) resumable at any batch.

    It replays the inner sampler pass after pass (calling its ``set_epoch(pass)`` when it has one, so its order must
    depend only on its seed and the pass), deals the resulting stream of batches round-robin to the ranks (batch ``g``
    goes to rank ``g % world_size``) and, on resume, skips the batches this rank already consumed: only indices are
    skipped, no sample is loaded.

    Args:
        inner: The package's batch sampler.
        total_batches: Batches of the whole run on this rank.
        position: Batches already consumed; read at each ``iter()``.
        rank: This process's rank.
        world_size: Number of processes.
    """

    def __init__(
        self, inner: Any, total_batches: int, position: DataPosition, rank: int = 0, world_size: int = 1
    ) -> None:
        self.inner = inner
        self.total_batches = total_batches
        self.position = position
        self.rank = rank
        self.world_size = world_size

    def __len__(self) -> int:
        return self.total_batches

    def _stream(self) -> Iterator[list[int]]:
        for epoch in range(self.total_batches * self.world_size + 1):
            if hasattr(self.inner, "set_epoch"):
                self.inner.set_epoch(epoch)
            empty = True
            for batch in self.inner:
                empty = False
                yield list(batch)
            if empty:
                raise ValueError("the training batch sampler yields no batch (is the dataset empty?)")

    def __iter__(self) -> Iterator[list[int]]:
        step = 0
        for index, batch in enumerate(self._stream()):
            if index % self.world_size != self.rank:
                continue
            if step >= self.position.consumed:
                yield batch
            step += 1
            if step >= self.total_batches:
                return


class _ResumableLoader(DataLoader):
    """A DataLoader whose state (batches consumed) Lightning saves in checkpoints and restores on resume."""

    position: DataPosition

    def state_dict(self) -> dict[str, int]:
        return {"consumed": self.position.consumed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.position.consumed = int(state["consumed"])


class _StepIndexedData(L.LightningDataModule):
    """Wraps a package's data module; its training loader gets the step-indexed sampler."""

    def __init__(self, inner: L.LightningDataModule, train_config: TrainConfig, position: DataPosition) -> None:
        super().__init__()
        self.inner = inner
        self.train_config = train_config
        self.position = position

    def prepare_data(self) -> None:
        self.inner.prepare_data()

    def setup(self, stage: str) -> None:
        self.inner.trainer = self.trainer
        self.inner.setup(stage)

    def teardown(self, stage: str) -> None:
        self.inner.teardown(stage)

    def train_dataloader(self) -> DataLoader:
        original = self.inner.train_dataloader()
        if not isinstance(original, DataLoader) or isinstance(original.dataset, IterableDataset):
            raise TypeError("fit(): the data module's train_dataloader must be a DataLoader over a map-style dataset")
        batch_size = original.batch_size or getattr(original.batch_sampler, "batch_size", None)
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        config = self.train_config
        total = config.max_steps * config.accumulate_grad_batches
        plain = type(original.batch_sampler) is BatchSampler and type(original.sampler) in (
            RandomSampler,
            SequentialSampler,
        )
        if plain:
            # A plain BatchSampler has an int batch_size, and a map-style dataset drawn by index has a length.
            dataset = original.dataset
            if not isinstance(dataset, Sized) or not isinstance(batch_size, int):
                raise TypeError("fit(): the train DataLoader needs a sized dataset and an int batch_size")
            sampler: Sampler[list[int]] = StepBatchSampler(
                len(dataset), batch_size, total, config.seed, self.position, rank, world
            )
        else:
            sampler = SkippingBatchSampler(original.batch_sampler, total, self.position, rank, world)
        loader = _ResumableLoader(
            original.dataset,
            batch_sampler=sampler,
            collate_fn=original.collate_fn,
            num_workers=original.num_workers,
            pin_memory=original.pin_memory,
            worker_init_fn=original.worker_init_fn,
            persistent_workers=original.persistent_workers if original.num_workers > 0 else False,
            generator=torch.Generator().manual_seed(config.seed + 7919 * rank),
        )
        loader.position = self.position
        return loader

    def state_dict(self) -> dict[str, Any]:
        return self.inner.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.inner.load_state_dict(state_dict)


class _StepIndexedDataWithValidation(_StepIndexedData):
    """The wrapper of a data module that has validation data."""

    def val_dataloader(self) -> Any:
        return self.inner.val_dataloader()


def _wrap_data(inner: L.LightningDataModule, train_config: TrainConfig, position: DataPosition) -> _StepIndexedData:
    from lightning.pytorch.utilities.model_helpers import is_overridden

    validates = is_overridden("val_dataloader", inner, L.LightningDataModule)
    wrapper = _StepIndexedDataWithValidation if validates else _StepIndexedData
    return wrapper(inner, train_config, position)


def _rng_state() -> dict[str, Any]:
    legacy = np.random.get_state(legacy=True)
    if not isinstance(legacy, tuple):  # numpy's global RandomState is MT19937, whose legacy state is a tuple
        raise TypeError(f"numpy's global random state must be an MT19937 tuple, got {type(legacy).__name__}")
    keys, position, has_gauss, cached = legacy[1:]
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(position),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "python": _python_state_to_plain(random.getstate()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _python_state_to_plain(state: tuple) -> dict[str, Any]:
    version, internal, gauss = state
    return {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss": gauss}


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached"],
        )
    )
    python = state["python"]
    random.setstate((python["version"], tuple(int(v) for v in python["internal"].tolist()), python["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def read_metrics(path: Path) -> list[tuple[int, str, float]]:
    """The rows of a ``metrics.csv``: ``(step, metric, value)``."""
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return [(int(row["step"]), row["metric"], float(row["value"])) for row in csv.DictReader(handle)]


def plot_losses(metrics_path: Path, out_path: Path) -> Path | None:
    """Plot every logged metric whose name contains ``loss`` against the step into ``out_path`` (PNG).

    Returns:
        ``out_path``, or ``None`` when nothing was logged yet.
    """
    rows = [row for row in read_metrics(metrics_path) if "loss" in row[1]]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.5), dpi=100)
    for name in sorted({row[1] for row in rows}):
        points = [(step, value) for step, metric, value in rows if metric == name]
        axis.plot([p[0] for p in points], [p[1] for p in points], label=name, marker="." if len(points) < 50 else None)
    axis.set_xlabel("step")
    axis.set_ylabel("loss")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()

    def write(handle: Any) -> None:
        figure.savefig(handle, format="png")

    atomic_write(out_path, write)
    plt.close(figure)
    return out_path


class _RunCallback(Callback):
    """Counts consumed batches, writes checkpoints, metrics and the loss plot, saves and restores RNG states."""

    def __init__(
        self,
        run: RunFolder,
        config: TrainConfig,
        position: DataPosition,
        monitor: str | None,
        monitor_mode: str,
    ) -> None:
        self.run = run
        self.config = config
        self.position = position
        self.monitor = monitor
        self.monitor_mode = monitor_mode
        self.best_score: float | None = None
        self.last_saved_step = -1
        self.last_logged_step = -1
        self._pending_rng: dict[str, Any] | None = None

    # state kept in every checkpoint
    def state_dict(self) -> dict[str, Any]:
        return {"rng": _rng_state(), "best_score": self.best_score}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending_rng = state_dict.get("rng")
        self.best_score = state_dict.get("best_score")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._pending_rng is not None:
            _set_rng_state(self._pending_rng)
            self._pending_rng = None
        self.last_saved_step = self.last_logged_step = trainer.global_step
        if trainer.is_global_zero:
            self._truncate_metrics(trainer.global_step)

    def _truncate_metrics(self, step: int) -> None:
        """Drop rows logged after ``step`` (a killed run's rows past its last checkpoint)."""
        rows = read_metrics(self.run.metrics)
        kept = [row for row in rows if row[0] <= step]
        if len(kept) != len(rows):
            self._write_metrics(kept)

    def _write_metrics(self, rows: Sequence[tuple[int, str, float]]) -> None:
        lines = ["step,metric,value"] + [f"{step},{name},{value!r}" for step, name, value in rows]
        atomic_write(self.run.metrics, lambda handle: handle.write(("\n".join(lines) + "\n").encode()))

    def _append_metrics(self, trainer: L.Trainer, validation: bool = False) -> None:
        """Append the scalar metrics to ``metrics.csv``: training ones after a step, ``val*`` ones after validation."""
        step = trainer.global_step
        values = {
            name: float(value)
            for name, value in trainer.callback_metrics.items()
            if isinstance(value, torch.Tensor | float | int)
            and torch.as_tensor(value).numel() == 1
            and name.startswith("val") == validation
        }
        if not values:
            return
        new_file = not self.run.metrics.is_file()
        with open(self.run.metrics, "a", newline="") as handle:
            if new_file:
                handle.write("step,metric,value\n")
            for name in sorted(values):
                handle.write(f"{step},{name},{values[name]!r}\n")
        if not validation:
            self.last_logged_step = step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self.position.consumed += 1
        if self.position.consumed % self.config.accumulate_grad_batches:
            return
        # Steps may advance by more than one per batch (manual optimisation with several optimizers): act when a
        # multiple of the interval was reached or crossed.
        step = trainer.global_step
        log_every, save_every = self.config.log_every_n_steps, self.config.checkpoint_every_n_steps
        if trainer.is_global_zero and step // log_every > max(self.last_logged_step, 0) // log_every:
            self._append_metrics(trainer)
        if step // save_every > max(self.last_saved_step, 0) // save_every:
            self.save(trainer)

    def save(self, trainer: L.Trainer) -> None:
        """Write ``step-<N>.ckpt`` and point ``last.ckpt`` at it; prune old step checkpoints."""
        step = trainer.global_step
        path = self.run.step_checkpoint(step)
        trainer.save_checkpoint(path)
        self.last_saved_step = step
        if trainer.is_global_zero:
            atomic_link(path, self.run.last)
            for _, old in self.run.step_checkpoints()[: -self.config.keep_last]:
                old.unlink(missing_ok=True)
            plot_losses(self.run.metrics, self.run.loss_plot)
        trainer.strategy.barrier("genblocks-checkpoint")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        if trainer.is_global_zero:
            self._append_metrics(trainer, validation=True)
        if self.monitor is None:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        score = float(value)
        better = self.best_score is None or (
            score > self.best_score if self.monitor_mode == "max" else score < self.best_score
        )
        if better and math.isfinite(score):
            self.best_score = score
            trainer.save_checkpoint(self.run.best)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step != self.last_saved_step:
            self.save(trainer)
        elif trainer.is_global_zero:
            plot_losses(self.run.metrics, self.run.loss_plot)


@dataclass(frozen=True)
class FitResult:
    """What a finished :func:`fit` leaves behind.

    Args:
        run: The run folder.
        global_step: Optimizer steps done (``train.max_steps`` when the run finished).
        last_checkpoint: ``checkpoints/last.ckpt``.
        best_checkpoint: ``checkpoints/best.ckpt`` when a monitored metric selected one.
        best_score: The monitored metric's best value.
        trained: The folder ``save_trained`` wrote, if any.
    """

    run: RunFolder
    global_step: int
    last_checkpoint: Path
    best_checkpoint: Path | None
    best_score: float | None
    trained: Path | None


def fit(
    module: L.LightningModule,
    datamodule: L.LightningDataModule,
    train_config: TrainConfig,
    out_dir: str | Path | RunFolder,
    resume: bool = False,
    *,
    overwrite: bool = False,
    config: Any = None,
    save_trained: Callable[[L.LightningModule, Path], Any] | None = None,
    monitor: str | None = None,
    monitor_mode: str = "max",
    callbacks: Sequence[Callback] = (),
) -> FitResult:
    """Train ``module`` on ``datamodule`` for ``train_config.max_steps`` steps in the run folder ``out_dir``.

    Build ``module`` after seeding (``lightning.seed_everything(train_config.seed)``) so a fresh run is reproducible;
    ``fit`` seeds again before training.

    Args:
        module: The package's LightningModule.
        datamodule: The package's data module; its training loader must be a map-style ``DataLoader`` with a
            ``batch_size`` (its sampler is replaced by the step-indexed one).
        train_config: The shared training settings (``train.`` of the package config).
        out_dir: The run folder, or a :class:`RunFolder` already opened with :meth:`RunFolder.open`.
        resume: Continue from ``checkpoints/last.ckpt``.
        overwrite: Start again in a used folder (its run files are deleted).
        config: The whole merged config, written to ``config.yaml`` (a dataclass instance or a mapping).
        save_trained: ``save_trained(module, folder)`` writes the final weights into ``trained/`` (rank 0 only).
        monitor: A validation metric to select ``best.ckpt`` by.
        monitor_mode: ``"max"`` or ``"min"``.
        callbacks: More Lightning callbacks.

    Returns:
        A :class:`FitResult`.

    Raises:
        InputError: A used folder without ``resume``/``overwrite``, or ``resume`` without a checkpoint.
        CheckpointWriteError: A checkpoint could not be written (the previous ``last.ckpt`` is intact).
    """
    run = out_dir if isinstance(out_dir, RunFolder) else RunFolder.open(out_dir, resume=resume, overwrite=overwrite)
    if config is not None and not (resume and run.config.is_file()):
        from genblocks.config import config_to_yaml

        text = config_to_yaml(config) if not isinstance(config, dict) else _mapping_yaml(config)
        atomic_write(run.config, lambda handle: handle.write(text.encode()))
    L.seed_everything(train_config.seed, workers=True, verbose=False)
    position = DataPosition()
    run_callback = _RunCallback(run, train_config, position, monitor, monitor_mode)
    trainer = L.Trainer(
        max_steps=train_config.max_steps,
        max_epochs=-1,
        # TrainConfig keeps precision a plain string (YAML); Lightning validates it against its Literal names.
        precision=cast("_PRECISION_INPUT", train_config.precision),
        accelerator=train_config.accelerator,
        devices=train_config.devices,
        num_nodes=train_config.num_nodes,
        strategy=_strategy(train_config),
        accumulate_grad_batches=train_config.accumulate_grad_batches,
        gradient_clip_val=train_config.gradient_clip_val,
        log_every_n_steps=train_config.log_every_n_steps,
        val_check_interval=_val_interval(train_config),
        check_val_every_n_epoch=None if train_config.val_every_n_steps else 1,
        num_sanity_val_steps=0,
        enable_checkpointing=False,
        enable_progress_bar=train_config.progress_bar,
        enable_model_summary=False,
        logger=False,
        use_distributed_sampler=False,
        default_root_dir=str(run.root),
        plugins=[AtomicCheckpointIO()],
        callbacks=[run_callback, *callbacks],
    )
    data = _wrap_data(datamodule, train_config, position)
    trainer.fit(module, datamodule=data, ckpt_path=str(run.last) if resume else None)
    trained = None
    if save_trained is not None and trainer.is_global_zero:
        run.trained.mkdir(parents=True, exist_ok=True)
        save_trained(module, run.trained)
        trained = run.trained
    return FitResult(
        run=run,
        global_step=trainer.global_step,
        last_checkpoint=run.last,
        best_checkpoint=run.best if run.best.is_file() else None,
        best_score=run_callback.best_score,
        trained=trained,
    )


def fully_shard_module(module: torch.nn.Module, mesh: Any) -> None:
    """Apply FSDP2's ``fully_shard`` to every submodule of ``module`` that holds parameters of its own.

    Args:
        module: The LightningModule (it is not wrapped itself).
        mesh: A 1-D device mesh of the data-parallel ranks.
    """
    from torch.distributed.fsdp import fully_shard

    owners = [
        sub for sub in module.modules() if sub is not module and any(True for _ in sub.parameters(recurse=False))
    ]
    for sub in owners:
        fully_shard(sub, mesh=mesh)


def _strategy(train_config: TrainConfig) -> Any:
    """The Lightning strategy for ``train.strategy``: ``"fsdp"`` becomes FSDP2 (see the module docstring)."""
    if train_config.strategy != "fsdp":
        return train_config.strategy
    from lightning.pytorch.strategies import ModelParallelStrategy
    from lightning.pytorch.trainer.states import TrainerFn

    class _FullyShardStrategy(ModelParallelStrategy):
        """``ModelParallelStrategy`` that shards the module itself (no ``configure_model`` needed)."""

        def setup(self, trainer: L.Trainer) -> None:
            assert self.model is not None and self.accelerator is not None
            self.accelerator.setup(trainer)
            fully_shard_module(self.model, self.device_mesh["data_parallel"])
            self.model = self.precision_plugin.convert_module(self.model)
            self.model_to_device()
            self.barrier()
            if trainer.state.fn == TrainerFn.FITTING:
                self.setup_optimizers(trainer)
            self.setup_precision_plugin()

        def load_checkpoint(self, checkpoint_path: Any, weights_only: bool | None = None) -> dict[str, Any]:
            return super().load_checkpoint(checkpoint_path, weights_only=True)  # as AtomicCheckpointIO

    world = train_config.devices * train_config.num_nodes
    return _FullyShardStrategy(data_parallel_size=world, tensor_parallel_size=1, save_distributed_checkpoint=False)


def _val_interval(train_config: TrainConfig) -> int | float:
    """Lightning's ``val_check_interval`` in training batches (the whole run is one epoch: 1.0 is its end)."""
    if train_config.val_every_n_steps is None:
        return 1.0
    return train_config.val_every_n_steps * train_config.accumulate_grad_batches


def _mapping_yaml(mapping: dict[str, Any]) -> str:
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.create(mapping))
