"""The training schema every package shares under ``train.``: :class:`TrainConfig` and its :class:`OptimizerConfig`.

Light on purpose (no torch, no lightning), so a package's ``config.py`` can extend it and ``<pkg> train --set ...``
validates the config before anything heavy is imported. A package's own training settings subclass it::

    @dataclass
    class XPortraitTrainConfig(TrainConfig):
        stage: Literal["image", "temporal"] = "image"
        manifest: str | None = None
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from genblocks.errors import FieldError

__all__ = ["OPTIMIZER_NAMES", "OptimizerConfig", "TrainConfig"]

OptimizerName = Literal["adamw", "adamw8bit", "coap_adamw", "coap_adamw8bit", "coap_adafactor"]
OPTIMIZER_NAMES: tuple[str, ...] = ("adamw", "adamw8bit", "coap_adamw", "coap_adamw8bit", "coap_adafactor")


@dataclass
class OptimizerConfig:
    """Which optimizer to build and its hyper-parameters.

    Args:
        name: One of ``"adamw"`` (torch), ``"adamw8bit"`` (bitsandbytes), ``"coap_adamw"``, ``"coap_adamw8bit"``,
            ``"coap_adafactor"`` (coap-optim).
        lr: Learning rate.
        betas: Adam moment coefficients (AdamW variants only).
        weight_decay: Decoupled weight decay.
        eps: Adam denominator epsilon (AdamW variants only).
        rank: COAP projection rank. ``None`` with ``rank_ratio`` also ``None``: coap-optim's default rank rule
            (``coap_optim.defaults.rank_ratio``: ``r = min(m, n) // 4``).
        rank_ratio: COAP: ``r = min(m, n) // rank_ratio`` (used when ``rank`` is ``None``).
        update_interval: COAP steps between projection refreshes (``None``: ``coap_optim.defaults``, 32).
        reproject_factor: COAP: every ``update_interval * reproject_factor`` steps the projection is re-computed
            (``None``: ``coap_optim.defaults``, 5).
        scale: COAP update scale (``None``: ``coap_optim.defaults``, 1.0).
        target_modules: COAP: module-name substrings whose weights are projected (``None``: every eligible weight).
        adafactor_eps: ``(eps1, eps2)`` of Adafactor (``coap_adafactor`` only).
    """

    name: str = "adamw"
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 1e-2
    eps: float = 1e-8
    rank: int | None = None
    rank_ratio: float | None = None
    update_interval: int | None = None
    reproject_factor: int | None = None
    scale: float | None = None
    target_modules: tuple[str, ...] | None = None
    adafactor_eps: tuple[float, float] = (1e-30, 1e-3)

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZER_NAMES:
            raise FieldError("name", f"expected one of {OPTIMIZER_NAMES}, got {self.name!r}")
        if self.lr <= 0:
            raise FieldError("lr", f"expected a positive learning rate, got {self.lr}")


def _positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise FieldError(name, f"expected a positive integer, got {value!r}")


@dataclass
class TrainConfig:
    """What :func:`genblocks.training.fit` needs: the same keys under ``train.`` in every package.

    Args:
        max_steps: Optimizer steps of the whole run (a positive integer).
        precision: Lightning precision (``"32-true"``, ``"bf16-mixed"``, ``"16-mixed"``, ...).
        accelerator: Lightning accelerator (``"auto"``, ``"cpu"``, ``"gpu"``).
        devices: Devices per node (``--set train.devices=2 train.strategy=ddp`` trains on two GPUs).
        num_nodes: Nodes.
        strategy: Lightning strategy (``"auto"``, ``"ddp"``, ``"fsdp"``, ...).
        accumulate_grad_batches: Micro-batches per optimizer step.
        gradient_clip_val: Gradient-norm clipping; ``None`` disables it.
        log_every_n_steps: Steps between rows of ``metrics.csv``.
        checkpoint_every_n_steps: Steps between checkpoints (``checkpoints/step-<N>.ckpt`` and ``last.ckpt``); the last
            step is always checkpointed.
        keep_last: How many ``step-<N>.ckpt`` files to keep (older ones are deleted; ``last.ckpt`` always stays).
        val_every_n_steps: Steps between validation runs (``None``: once, at the end of training); a run with a
            ``monitor`` metric keeps ``checkpoints/best.ckpt`` at its best validation.
        seed: Seed of the run: global RNGs at the start and the data order.
        progress_bar: Show Lightning's progress bar.
        optimizer: The optimizer by name and its hyper-parameters.
    """

    max_steps: int = 1000
    precision: str = "32-true"
    accelerator: str = "auto"
    devices: int = 1
    num_nodes: int = 1
    strategy: str = "auto"
    accumulate_grad_batches: int = 1
    gradient_clip_val: float | None = None
    log_every_n_steps: int = 10
    checkpoint_every_n_steps: int = 500
    keep_last: int = 2
    val_every_n_steps: int | None = None
    seed: int = 0
    progress_bar: bool = True
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)

    def __post_init__(self) -> None:
        for name in (
            "max_steps",
            "devices",
            "num_nodes",
            "accumulate_grad_batches",
            "log_every_n_steps",
            "checkpoint_every_n_steps",
            "keep_last",
        ):
            _positive_int(name, getattr(self, name))
        if self.val_every_n_steps is not None:
            _positive_int("val_every_n_steps", self.val_every_n_steps)
        if self.gradient_clip_val is not None and self.gradient_clip_val <= 0:
            raise FieldError("gradient_clip_val", f"expected a positive number or null, got {self.gradient_clip_val}")
