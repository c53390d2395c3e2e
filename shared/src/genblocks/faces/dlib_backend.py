"""The offline default `FaceAnalyzer`: dlib's HOG detector, 68-point shape predictor and 128-d ResNet embedding, with the
model files shipped in the ``face-recognition-models`` distribution (``pip install genblocks[face]``).

Sources followed: davisking/dlib ``python_examples/face_recognition.py`` and ageitgey/face_recognition
``face_recognition/api.py`` (``face_encodings``: the 68-point shape passed to ``compute_face_descriptor``; same
person when the Euclidean distance is below 0.6). ``face_recognition_models/__init__.py`` imports ``pkg_resources``,
which current setuptools no longer provides, so the models folder is located without importing the package.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from genblocks.faces.align import norm_crop
from genblocks.faces.analyzer import Face, FaceAnalyzer, landmarks5_from_68

__all__ = ["DlibFaceAnalyzer", "face_recognition_models_dir"]

logger = logging.getLogger(__name__)

_INSTALL_HINT = "Install the face extra: `pip install genblocks[face]` (dlib-bin and face-recognition-models)."
_SHAPE_PREDICTOR = "shape_predictor_68_face_landmarks.dat"
_RECOGNITION_MODEL = "dlib_face_recognition_resnet_model_v1.dat"


def face_recognition_models_dir() -> Path:
    """Locate the ``models/`` folder of the installed ``face-recognition-models`` distribution without importing it.

    Returns:
        `Path`: the folder holding ``shape_predictor_68_face_landmarks.dat`` and the other model files.

    Raises:
        `ImportError`: when the distribution is not installed or its model files are missing.
    """
    candidates: list[Path] = []
    spec = importlib.util.find_spec("face_recognition_models")  # finds the package; does not run its __init__
    if spec is not None and spec.submodule_search_locations:
        candidates.extend(Path(location) / "models" for location in spec.submodule_search_locations)
    try:
        distribution = importlib.metadata.distribution("face-recognition-models")
    except importlib.metadata.PackageNotFoundError:
        distribution = None
    if distribution is not None:
        for file in distribution.files or []:
            if file.name == _SHAPE_PREDICTOR:
                candidates.append(Path(str(distribution.locate_file(file))).parent)
    for folder in candidates:
        if (folder / _SHAPE_PREDICTOR).is_file() and (folder / _RECOGNITION_MODEL).is_file():
            return folder
    raise ImportError(f"The face-recognition-models files ({_SHAPE_PREDICTOR}, ...) were not found. {_INSTALL_HINT}")


def _import_dlib() -> ModuleType:
    try:
        import dlib
    except ImportError as error:
        raise ImportError(f"DlibFaceAnalyzer needs dlib. {_INSTALL_HINT}") from error
    return dlib


class DlibFaceAnalyzer(FaceAnalyzer):
    """Face analysis with dlib: HOG detection, 68 landmarks (5 points derived from them) and a 128-d embedding.

    Args:
        threshold (`float`, defaults to 0.5): minimum HOG detector score (``adjust_threshold`` of dlib's
            ``detector.run``). dlib's own default is 0, which keeps weak false positives: on scikit-image's
            ``astronaut`` at ``upsample=1`` the face scores ≈1.16 and a patch of the suit ≈0.12.
        upsample (`int`, defaults to 1): times the image is upsampled before detection (finds faces down to ≈40 px
            at 1, ≈80 px at 0; each step costs about 4× time).
        embed_jitters (`int`, defaults to 0): dlib's ``num_jitters`` for the embedding (0 = one deterministic pass;
            more = average over randomly jittered crops, slower and random).
        embedder (`Callable`, *optional*): replaces dlib's embedding: called with the faces' ArcFace norm-crops,
            uint8 of shape (N, 112, 112, 3) RGB, returns (N, D) embeddings (for example `ArcFaceEmbedder`).
        models_dir (`str` or `Path`, *optional*): folder with the dlib ``.dat`` files; defaults to the installed
            ``face-recognition-models`` folder.
    """

    def __init__(
        self,
        threshold: float = 0.5,
        upsample: int = 1,
        embed_jitters: int = 0,
        embedder: Callable[[np.ndarray], np.ndarray] | None = None,
        models_dir: str | Path | None = None,
    ) -> None:
        if upsample < 0:
            raise ValueError(f"`upsample` must be >= 0, got {upsample}.")
        if embed_jitters < 0:
            raise ValueError(f"`embed_jitters` must be >= 0, got {embed_jitters}.")
        dlib = _import_dlib()
        folder = face_recognition_models_dir() if models_dir is None else Path(models_dir)
        for name in (_SHAPE_PREDICTOR, _RECOGNITION_MODEL):
            if not (folder / name).is_file():
                raise ImportError(f"Missing dlib model file {folder / name}. {_INSTALL_HINT}")
        self.threshold = float(threshold)
        self.upsample = int(upsample)
        self.embed_jitters = int(embed_jitters)
        self.embedder = embedder
        self._dlib = dlib
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(folder / _SHAPE_PREDICTOR))
        self._recognition_model_path = folder / _RECOGNITION_MODEL
        self._recognizer: Any = (
            None  # dlib.face_recognition_model_v1, loaded on first use: detection-only callers skip the 22 MB ResNet
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(threshold={self.threshold}, upsample={self.upsample}, "
            f"embed_jitters={self.embed_jitters}, embedder={self.embedder!r})"
        )

    def detect(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run the HOG detector.

        Args:
            image (`np.ndarray`): uint8 RGB of shape (H, W, 3).

        Returns:
            `tuple[np.ndarray, np.ndarray]`: boxes float32 (N, 4) ``(x0, y0, x1, y1)`` and scores float32 (N,),
            sorted by decreasing score, all at or above ``threshold``.
        """
        image = _check_rgb(image)
        rects, scores, _ = self._detector.run(image, self.upsample, self.threshold)
        order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
        boxes = np.array([[r.left(), r.top(), r.right(), r.bottom()] for r in rects], dtype=np.float32).reshape(-1, 4)
        return boxes[order], np.asarray(scores, dtype=np.float32)[order]

    def analyze(self, image: np.ndarray, boxes: np.ndarray | None = None, embed: bool = True) -> list[Face]:
        """Detect faces (or take ``boxes``), predict 68 landmarks, derive 5 points and embed.

        Args:
            image (`np.ndarray`): uint8 RGB of shape (H, W, 3).
            boxes (`np.ndarray`, *optional*): shape (N, 4) ``(x0, y0, x1, y1)``; skips detection (scores are ``nan``).
            embed (`bool`, defaults to `True`): compute embeddings (128-d dlib, or the ``embedder``'s).

        Returns:
            `list[Face]`: one per box, by decreasing score.
        """
        image = _check_rgb(image)
        if boxes is None:
            boxes, scores = self.detect(image)
        else:
            boxes = np.asarray(boxes, dtype=np.float32)
            if boxes.ndim != 2 or boxes.shape[1] != 4:
                raise ValueError(f"`boxes` must have shape (N, 4), got {boxes.shape}.")
            scores = np.full(len(boxes), np.nan, dtype=np.float32)
        faces = []
        shapes = []
        for box, score in zip(boxes, scores):
            rect = self._dlib.rectangle(*(round(float(v)) for v in box))
            shape = self._predictor(image, rect)
            landmarks68 = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)
            shapes.append(shape)
            faces.append(
                Face(box=box, score=float(score), landmarks5=landmarks5_from_68(landmarks68), landmarks68=landmarks68)
            )
        if embed and faces:
            embeddings = self._embed(image, faces, shapes)
            faces = [
                Face(f.box, f.score, f.landmarks5, f.landmarks68, emb)
                for f, emb in zip(faces, embeddings, strict=True)
            ]
        logger.debug("DlibFaceAnalyzer found %d face(s) in an image of shape %s", len(faces), image.shape)
        return faces

    def _embed(self, image: np.ndarray, faces: list[Face], shapes: list) -> list[np.ndarray]:
        if self.embedder is not None:
            crops = np.stack([norm_crop(image, face.landmarks5).image for face in faces])
            embeddings = np.asarray(self.embedder(crops), dtype=np.float32)
            if embeddings.ndim != 2 or embeddings.shape[0] != len(faces):
                raise ValueError(f"`embedder` must return shape ({len(faces)}, D), got {embeddings.shape}.")
            return list(embeddings)
        if self._recognizer is None:
            self._recognizer = self._dlib.face_recognition_model_v1(str(self._recognition_model_path))
        return [
            np.asarray(self._recognizer.compute_face_descriptor(image, shape, self.embed_jitters), dtype=np.float32)
            for shape in shapes
        ]


def _check_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"`image` must be a uint8 RGB array of shape (H, W, 3), got {image.dtype} {image.shape}.")
    return np.ascontiguousarray(image)
