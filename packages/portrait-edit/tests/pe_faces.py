"""Test helpers: a controllable face analyzer (fixed landmarks, an embedding read from the face's pixels)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from genblocks.faces import Face, FaceAnalyzer


def synthetic_landmarks68(cx: float, cy: float, eye: float) -> np.ndarray:
    """68 points whose eye centres sit at (cx -/+ eye, cy) and mouth corners below: all FFHQ alignment reads."""
    points = np.tile(np.array([cx, cy + eye], dtype=np.float32), (68, 1))
    points[36:42] = (cx - eye, cy)
    points[42:48] = (cx + eye, cy)
    points[48] = (cx - 0.8 * eye, cy + 1.6 * eye)
    points[54] = (cx + 0.8 * eye, cy + 1.6 * eye)
    return points


def pixel_embedding(image: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The face box as an 8x8 grey thumbnail, centred: an "identity" that changes when the face's pixels change and
    ignores everything outside the box."""
    x0, y0, x1, y1 = (round(float(v)) for v in box)
    grey = np.asarray(Image.fromarray(image[y0:y1, x0:x1]).convert("L").resize((8, 8)), np.float32).ravel()
    return (grey - grey.mean()).astype(np.float32)


class FixedFaceAnalyzer(FaceAnalyzer):
    """One face with fixed landmarks (``None``: no face) and `pixel_embedding` identities.

    Args:
        landmarks68: (68, 2) points or ``None``.
        margin: The face box is the landmarks' bounding box grown by this many pixels.
        shift: Callable image -> (dx, dy) moving the landmarks (to simulate a misaligned edit); default none.
    """

    def __init__(self, landmarks68: np.ndarray | None, margin: float = 4.0, shift=None) -> None:
        self.landmarks68 = landmarks68
        self.margin = margin
        self.shift = shift

    def analyze(self, image: np.ndarray, boxes: np.ndarray | None = None, embed: bool = True) -> list[Face]:
        if self.landmarks68 is None:
            return []
        landmarks = self.landmarks68.copy()
        if self.shift is not None:
            landmarks = landmarks + np.asarray(self.shift(image), np.float32)
        lo, hi = landmarks.min(0) - self.margin, landmarks.max(0) + self.margin
        box = np.array([*lo, *hi], dtype=np.float32)
        return [
            Face(
                box=box,
                score=1.0,
                landmarks5=np.zeros((5, 2), np.float32),
                landmarks68=landmarks,
                embedding=pixel_embedding(image, box) if embed else None,
            )
        ]
