"""Renderer factories for the ``render.kind: learned`` slot tests (imported by module path,
``dream_talk_renderer_stub:StubRenderer``; conftest puts this folder on ``sys.path``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


class StubRenderer:
    """A 'learned' renderer: frame t is the portrait with every pixel set to ``min(t, 255)`` in the red channel.

    Records what the factory call and each render call received, so tests can check the slot's wiring.
    """

    def __init__(self, weights: Path | None, config: Any) -> None:
        self.weights = weights
        self.config = config
        self.calls: list[tuple[tuple[int, ...], tuple[int, ...]]] = []

    def __call__(self, portrait: np.ndarray, motion: np.ndarray) -> np.ndarray:
        self.calls.append((portrait.shape, motion.shape))
        frames = np.repeat(np.asarray(portrait, np.uint8)[None], len(motion), axis=0)
        frames[..., 0] = np.minimum(np.arange(len(motion)), 255).astype(np.uint8)[:, None, None]
        return frames


def not_a_renderer(weights: Path | None, config: Any) -> object:
    """A factory that returns something without ``__call__``."""
    return object()


def one_argument(weights: Path | None) -> StubRenderer:
    """A factory with the wrong signature (no config)."""
    return StubRenderer(weights, None)


def float_frames(weights: Path | None, config: Any) -> Any:
    """A factory whose renderer returns float frames instead of uint8."""
    return lambda portrait, motion: np.zeros((len(motion), 8, 8, 3), np.float32)
