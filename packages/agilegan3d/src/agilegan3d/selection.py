"""FID/KID checkpoint selection of the 2-D style prior (AgileGAN3D, arXiv 2303.14297; spec agilegan3d §4 "Stage A":
"checkpoints are selected by FID/KID against the exemplars, computed on augmented copies"; no official code exists).

:class:`EMASelector` scores the EMA generator at fixed latents against a fixed reference set, ``augmented_copies``
DiffAugment copies of every exemplar (:mod:`agilegan3d.augment`, the prior's policy, every transform applied), through
a user-given TorchScript feature extractor (:func:`genblocks.metrics.load_feature_extractor`). FID is
:func:`genblocks.metrics.frechet_distance`, KID :func:`genblocks.metrics.kernel_inception_distance` on the whole sets
(one unbiased estimate, no random subsets). It keeps a CPU copy of the best EMA state with its step and score; its
:meth:`~EMASelector.state_dict` goes into every checkpoint, so a resumed run chooses what an uninterrupted one does.

Every draw comes from generators seeded with ``selection.seed`` and the global RNG is forked around an evaluation,
so evaluating changes nothing in the training run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from agilegan3d.augment import diff_augment, draw_augment_params
from agilegan3d.config import AugmentConfig, SelectionConfig
from genblocks.errors import InputError
from genblocks.gan import StyleGAN2Generator
from genblocks.metrics import extract_features, frechet_distance, kernel_inception_distance

__all__ = ["EMASelector"]

Extractor = Callable[[Tensor], Tensor]


class EMASelector:
    """Evaluates the prior's EMA generator every ``settings.every`` steps and keeps the best state.

    Args:
        extractor: Feature network, images (B, 3, H, W) in [-1, 1] -> (B, D).
        exemplars: The style exemplars (M, 3, H, W) in [-1, 1], at the generator's resolution.
        z_dim: The generator's latent size.
        settings: ``prior.selection``.
        augment: ``prior.augment`` (its policy, translation and cut-out size make the copies).

    Attributes:
        history: One ``{"step", "fid", "kid"}`` row per evaluation, in order.
        best_step: Step of the best evaluation so far (``None`` before the first).
        best_state: CPU copy of the EMA generator's state dict at ``best_step``.

    Raises:
        InputError: Fewer than 2 reference images, or an extractor that does not give (B, D) finite features (probed
            on two exemplars on the CPU, before training).
    """

    def __init__(
        self,
        extractor: Extractor,
        exemplars: Tensor,
        z_dim: int,
        settings: SelectionConfig,
        augment: AugmentConfig,
    ) -> None:
        if len(exemplars) * settings.augmented_copies < 2:
            raise InputError(
                f"prior.selection.augmented_copies={settings.augmented_copies}: the reference set of "
                f"{len(exemplars)} exemplar(s) needs at least 2 images"
            )
        extract_features(extractor, exemplars[:2], settings.batch_size)  # a wrong extractor fails before training
        self.extractor = extractor
        self.exemplars = exemplars.detach().cpu()
        self.settings = settings
        self.policy = tuple(augment.policy)
        self.translation = augment.translation
        self.cutout = augment.cutout
        self.z = torch.randn(settings.samples, z_dim, generator=torch.Generator().manual_seed(settings.seed))
        self.history: list[dict[str, float]] = []
        self.best_step: int | None = None
        self.best_state: dict[str, Tensor] | None = None
        self._reference: np.ndarray | None = None

    # ----------------------------------------------------------------- schedule
    def due(self, step: int, max_steps: int) -> bool:
        """Whether an iteration that ended at ``step`` is evaluated: it crossed a multiple of ``every`` since the last
        evaluation, or it is the last one (``step >= max_steps``) and not evaluated yet."""
        last = int(self.history[-1]["step"]) if self.history else 0
        if step <= last:
            return False
        return step // self.settings.every > last // self.settings.every or step >= max_steps

    # ----------------------------------------------------------------- features
    def _augment(self, images: Tensor, seed: int) -> Tensor:
        """``images`` (N, 3, H, W) with every transform of the policy, drawn from a generator seeded with ``seed``."""
        if not self.policy:
            return images
        generator = torch.Generator().manual_seed(seed)
        params = draw_augment_params(
            len(images), self.policy, 1.0, self.translation, self.cutout, generator, images.device
        )
        return diff_augment(images, params, self.policy)

    def reference_features(self, device: torch.device) -> np.ndarray:
        """Features (M · augmented_copies, D) of the reference set, copy by copy (computed once per process)."""
        if self._reference is None:
            exemplars = self.exemplars.to(device)
            base = self.settings.seed * 1_000_003 + 1
            rows = [
                extract_features(self.extractor, self._augment(exemplars, base + copy), self.settings.batch_size)
                for copy in range(self.settings.augmented_copies)
            ]
            self._reference = np.concatenate(rows)
        return self._reference

    def sample_features(self, generator: StyleGAN2Generator, device: torch.device) -> np.ndarray:
        """Features (samples, D) of ``generator`` at the fixed latents (constant noise, no truncation), each batch
        augmented with fixed draws when ``augment_samples``."""
        rows = []
        size = self.settings.batch_size
        base = self.settings.seed * 1_000_003 + 2 + self.settings.augmented_copies
        for start in range(0, len(self.z), size):
            images = generator(self.z[start : start + size].to(device), noise_mode="const")
            if self.settings.augment_samples:
                images = self._augment(images, base + start)
            rows.append(extract_features(self.extractor, images, size))
        return np.concatenate(rows)

    # ----------------------------------------------------------------- evaluation
    @torch.no_grad()
    def evaluate(self, generator: StyleGAN2Generator, step: int) -> dict[str, float]:
        """Score ``generator`` (the EMA) at ``step``; keep a CPU copy of its state when it is the best so far (ties
        keep the earlier step).

        Returns:
            The new history row ``{"step", "fid", "kid"}``.
        """
        device = next(generator.parameters()).device
        if isinstance(self.extractor, nn.Module):
            self.extractor.to(device)
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            reference = self.reference_features(device)
            generated = self.sample_features(generator, device)
        row = {
            "step": step,
            "fid": frechet_distance(reference, generated),
            "kid": kernel_inception_distance(reference, generated),
        }
        self.history.append(row)
        metric = self.settings.metric
        best = self.best_row()
        if best is None or row[metric] < best[metric]:
            self.best_step = step
            self.best_state = {
                key: value.detach().to("cpu", copy=True) for key, value in generator.state_dict().items()
            }
        return row

    def best_row(self) -> dict[str, float] | None:
        """The history row of ``best_step`` (``None`` before the first evaluation)."""
        return next((row for row in self.history if row["step"] == self.best_step), None)

    def summary(self) -> dict[str, Any]:
        """What ``selection.json`` holds: the metric, ``chosen_step`` and every evaluation."""
        return {
            "metric": self.settings.metric,
            "chosen_step": self.best_step,
            "chosen": self.best_row(),
            "evaluations": list(self.history),
            "samples": self.settings.samples,
            "reference_images": len(self.exemplars) * self.settings.augmented_copies,
        }

    # ----------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """The history, the best step and the best state (plain values and tensors: loads with ``weights_only``)."""
        return {
            "history": [dict(row) for row in self.history],
            "best_step": self.best_step,
            "best_state": self.best_state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.history = [dict(row) for row in state["history"]]
        self.best_step = state["best_step"]
        self.best_state = state["best_state"]
