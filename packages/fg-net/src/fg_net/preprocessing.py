"""Face preprocessing for FG-Net: 68 dlib landmarks, FFHQ alignment to 256 px, and landmarks again on the crop.

The authors' preprocessing (spec fg-net §4 "Data"; ihp-lab/FG-Net@6067ab2 ``code/data_utils.py`` ``findlandmark``):
dlib's HOG detector (``detector(gray, 1)``, i.e. upsample 1, threshold 0) and 68-point shape predictor on the raw
frame, FFHQ alignment of the face to 256 px, then dlib again on the aligned image; the second set of landmarks builds
the target heatmaps. Here the landmark backend is genblocks' `FaceAnalyzer` (dlib by default, behind the ``face``
extra: ``pip install fg-net[face]``); dlib is imported only when an analyzer is built.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fg_net.config import LandmarkConfig
from genblocks.faces.align import align_ffhq
from genblocks.faces.analyzer import FaceAnalyzer

__all__ = [
    "AlignedFaceLandmarks",
    "align_face",
    "build_face_analyzer",
    "cached_landmarks_path",
    "detect_landmarks",
    "load_cached_landmarks",
]

logger = logging.getLogger(__name__)

_INSTALL_HINT = "FG-Net's landmarks need dlib: `pip install fg-net[face]` (dlib-bin and face-recognition-models)."


def build_face_analyzer(config: LandmarkConfig | None = None) -> FaceAnalyzer:
    """The 68-point landmark backend named by ``config`` (dlib: genblocks' `DlibFaceAnalyzer`).

    Args:
        config (`LandmarkConfig`, *optional*): backend settings; the defaults follow the authors (threshold 0,
            upsample 1).

    Returns:
        `FaceAnalyzer`.

    Raises:
        `ImportError`: when dlib or its model files are missing; the message names the extra to install.
    """
    config = config if config is not None else LandmarkConfig()
    from genblocks.faces.dlib_backend import DlibFaceAnalyzer

    try:
        return DlibFaceAnalyzer(threshold=config.threshold, upsample=config.upsample)
    except ImportError as error:
        raise ImportError(f"{_INSTALL_HINT} ({error})") from error


def detect_landmarks(analyzer: FaceAnalyzer, image: np.ndarray, name: str = "image") -> np.ndarray:
    """The 68 landmarks of the largest face in ``image``.

    Args:
        analyzer (`FaceAnalyzer`): a backend with 68-point landmarks.
        image (`np.ndarray`): uint8 RGB of shape (H, W, 3).
        name (`str`, defaults to `"image"`): how the image is named in errors (e.g. its path).

    Returns:
        `np.ndarray`: float32 of shape (68, 2), (x, y) pixel coordinates.
    """
    face = analyzer.get_face(image, name=name, embed=False)
    if face.landmarks68 is None:
        raise ValueError(f"{type(analyzer).__name__} gave no 68-point landmarks for {name}; FG-Net needs them.")
    return np.asarray(face.landmarks68, dtype=np.float32)


@dataclass(frozen=True)
class AlignedFaceLandmarks:
    """An FFHQ-aligned face and its landmarks.

    Args:
        image (`np.ndarray`): uint8 RGB of shape (S, S, 3).
        landmarks (`np.ndarray`): float32 (68, 2), detected again on ``image`` (what the targets use).
        source_landmarks (`np.ndarray`): float32 (68, 2) on the input image.
        matrix (`np.ndarray`): float64 (2, 3), input pixel coordinates -> crop pixel coordinates.
    """

    image: np.ndarray
    landmarks: np.ndarray
    source_landmarks: np.ndarray
    matrix: np.ndarray


def align_face(
    analyzer: FaceAnalyzer, image: np.ndarray, output_size: int = 256, name: str = "image"
) -> AlignedFaceLandmarks:
    """Detect, FFHQ-align to ``output_size`` and detect again on the crop (the authors' preprocessing).

    Args:
        analyzer (`FaceAnalyzer`): a backend with 68-point landmarks.
        image (`np.ndarray`): uint8 RGB of shape (H, W, 3).
        output_size (`int`, defaults to 256): side of the aligned crop.
        name (`str`, defaults to `"image"`): how the image is named in errors.

    Returns:
        `AlignedFaceLandmarks`.
    """
    source = detect_landmarks(analyzer, image, name)
    aligned = align_ffhq(image, source, output_size=output_size)
    landmarks = detect_landmarks(analyzer, aligned.image, f"{name} (aligned)")
    return AlignedFaceLandmarks(aligned.image, landmarks, source, aligned.matrix)


def cached_landmarks_path(image_path: str | Path) -> Path:
    """Where the authors cache an aligned image's landmarks: ``aligned_images`` -> ``aligned_landmarks``, ``.npy``
    (next to the image when its path has no ``aligned_images`` folder).

    Args:
        image_path (`str` or `Path`): path of an aligned image.

    Returns:
        `Path` (not checked for existence).
    """
    path = Path(image_path)
    parts = ["aligned_landmarks" if part == "aligned_images" else part for part in path.parts]
    return Path(*parts).with_suffix(".npy")


def load_cached_landmarks(image_path: str | Path) -> np.ndarray | None:
    """Read the cached landmarks of an aligned image, or `None` when there is no cache file.

    Args:
        image_path (`str` or `Path`): path of an aligned image.

    Returns:
        `np.ndarray` float32 of shape (68, 2), or `None`.
    """
    path = cached_landmarks_path(image_path)
    if not path.is_file():
        return None
    landmarks = np.load(path, allow_pickle=False)
    if landmarks.shape != (68, 2):
        raise ValueError(f"{path} must hold a (68, 2) landmark array, got shape {landmarks.shape}.")
    return landmarks.astype(np.float32)
