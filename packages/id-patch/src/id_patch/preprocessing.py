"""Face encoding for ID-Patch: one embedding per subject image, or every face of a group photo (spec id-patch §3).

Upstream (bytedance/ID-Patch, commit 38096c9, ``demo.py``): MTCNN (TensorFlow) gives 5 keypoints, insightface
``norm_crop(img, kps, 112)`` warps the **BGR** image, and facexlib's ``arcface`` (IR-SE-50, ``Backbone(50, 'ir_se')``)
embeds the crop scaled to [-1, 1] into a 512-d L2-normalised vector. Here any `genblocks.faces.FaceAnalyzer` with 5
points replaces MTCNN (the offline default is dlib's HOG detector + 68 landmarks):

- `ArcFaceEncoder`: genblocks' IR-SE-50 (``genblocks.faces.IRSEBackbone``) with a loader for facexlib's
  ``arcface`` / pSp's ``model_ir_se50.pth`` weights when the user has them, ``channel_order="bgr"`` as upstream.
- `DlibFaceEncoder`: dlib's 128-d embedding, mapped to ``face_dim`` by a fixed seeded orthonormal matrix and
  L2-normalised. Works offline with the ``face-recognition-models`` files; not the paper's embedding (a trained
  projector expects ArcFace), but enough to drive and test the whole pipeline.

dlib is imported only when a dlib-backed encoder is built (``pip install id-patch[face]``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import PIL.Image
import torch

from genblocks.faces import ArcFaceEmbedder, Face, FaceAnalyzer, IRSEBackbone, ir_se_units, load_arcface_state_dict
from genblocks.faces import norm_crop as arcface_norm_crop
from id_patch.condition import ImageLike, face_anchors

__all__ = [
    "ArcFaceEncoder",
    "DlibFaceEncoder",
    "FaceEncoder",
    "SubjectFaces",
    "crop_faces",
    "encode_subjects",
    "orthonormal_map",
    "to_rgb_uint8",
]

logger = logging.getLogger(__name__)

DLIB_EMBEDDING_DIM = 128
_INSTALL_HINT = "Install the face extra: `pip install id-patch[face]`."


@dataclass(frozen=True)
class SubjectFaces:
    """Faces found for a list of subjects (one per subject image) or in one group photo (left to right).

    Attributes:
        embeds (`torch.Tensor`): float32 (F, D), L2-normalised identity embeddings.
        boxes (`torch.Tensor`): float32 (F, 4) ``(x0, y0, x1, y1)`` in the pixels of the image each face came from.
        landmarks5 (`torch.Tensor`): float32 (F, 5, 2): eyes, nose tip, mouth corners (`genblocks.faces.Face`).
    """

    embeds: torch.Tensor
    boxes: torch.Tensor
    landmarks5: torch.Tensor

    def anchors(self, anchor: str = "nose") -> torch.Tensor:
        """(F, 2) ``(x, y)`` patch centres from the landmarks (``"nose"``) or boxes (``"bbox_center"``)."""
        return face_anchors(self.landmarks5 if anchor == "nose" else self.boxes, anchor=anchor)


@runtime_checkable
class FaceEncoder(Protocol):
    """What `id_patch.pipeline_id_patch.IDPatchPipeline` needs to turn subject images into embeddings.

    Attributes:
        embedding_dim (`int`): D of the embeddings (the ID projector's ``face_dim``).
    """

    embedding_dim: int

    def encode_subjects(self, images: Sequence[ImageLike]) -> SubjectFaces:
        """One embedding per image (the largest face); a `ValueError` naming the subject index when none is found."""
        ...


def to_rgb_uint8(image: ImageLike, name: str = "image") -> np.ndarray:
    """An image as a contiguous uint8 RGB (H, W, 3) array.

    Args:
        image (`ImageLike`): PIL, (H, W, 3) uint8 or float [0, 1] array, or (3, H, W) / (1, 3, H, W) float [0, 1] tensor.
        name (`str`, defaults to `"image"`): how the input is named in errors.

    Returns:
        `np.ndarray`: uint8 (H, W, 3).
    """
    if isinstance(image, PIL.Image.Image):
        return np.ascontiguousarray(np.asarray(image.convert("RGB")))
    if isinstance(image, torch.Tensor):
        tensor = image[0] if image.ndim == 4 and image.shape[0] == 1 else image
        if tensor.ndim != 3 or tensor.shape[0] != 3:
            raise ValueError(f"`{name}` as a tensor must be (3, H, W) in [0, 1], got {tuple(image.shape)}.")
        image = tensor.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"`{name}` must be an RGB image (H, W, 3), got shape {array.shape}.")
    if array.dtype != np.uint8:
        array = np.round(np.clip(array.astype(np.float64), 0.0, 1.0) * 255.0).astype(np.uint8)
    return np.ascontiguousarray(array)


def orthonormal_map(in_dim: int, out_dim: int, seed: int = 0) -> np.ndarray:
    """A fixed random (out_dim, in_dim) matrix with orthonormal columns (out_dim >= in_dim: preserves inner products)
    or orthonormal rows (out_dim < in_dim), from a seeded Gaussian's QR.

    Args:
        in_dim (`int`): input width.
        out_dim (`int`): output width.
        seed (`int`, defaults to 0): numpy seed.

    Returns:
        `np.ndarray`: float32 (out_dim, in_dim).
    """
    rng = np.random.default_rng(seed)
    gaussian = rng.standard_normal((max(in_dim, out_dim), min(in_dim, out_dim)))
    q, r = np.linalg.qr(gaussian)
    q = q * np.sign(np.diag(r))  # unique QR: positive diagonal of r
    matrix = q if out_dim >= in_dim else q.T
    return matrix.astype(np.float32)


def _normalize(embeds: np.ndarray) -> torch.Tensor:
    tensor = torch.from_numpy(np.asarray(embeds, dtype=np.float32))
    return torch.nn.functional.normalize(tensor, dim=-1)


def _largest_faces(analyzer: FaceAnalyzer, images: Sequence[ImageLike], embed: bool) -> tuple[list[np.ndarray], list]:
    arrays, faces = [], []
    if len(images) == 0:
        raise ValueError("no subject images given; expected one image per subject.")
    for index, image in enumerate(images):
        array = to_rgb_uint8(image, name=f"face_images[{index}]")
        faces.append(analyzer.get_face(array, name=f"subject {index} (face_images[{index}])", embed=embed))
        arrays.append(array)
    return arrays, faces


def _stack(faces: Sequence[Face], embeds: torch.Tensor) -> SubjectFaces:
    boxes = torch.from_numpy(np.stack([f.box for f in faces]).astype(np.float32).reshape(-1, 4))
    landmarks = torch.from_numpy(np.stack([f.landmarks5 for f in faces]).astype(np.float32).reshape(-1, 5, 2))
    return SubjectFaces(embeds=embeds, boxes=boxes, landmarks5=landmarks)


def _left_to_right(faces: list[Face]) -> list[Face]:
    return sorted(faces, key=lambda face: float(face.landmarks5[2, 0]))


def _dlib_analyzer(threshold: float, upsample: int) -> FaceAnalyzer:
    try:
        from genblocks.faces import DlibFaceAnalyzer

        return DlibFaceAnalyzer(threshold=threshold, upsample=upsample)
    except ImportError as error:
        raise ImportError(f"{error} {_INSTALL_HINT}") from error


class DlibFaceEncoder:
    """The offline face encoder: dlib detection + 68 landmarks + 128-d embedding, mapped to ``face_dim``.

    The 128-d dlib vector ``e`` becomes ``normalize(M @ e)`` with ``M = orthonormal_map(128, face_dim, seed)``
    (cosine similarities are preserved when ``face_dim >= 128``).

    Args:
        face_dim (`int`, defaults to 512): output width (the ID projector's ``face_dim``).
        seed (`int`, defaults to 0): seed of the fixed map.
        threshold (`float`, defaults to 0.5): dlib HOG detector threshold (`genblocks.faces.DlibFaceAnalyzer`).
        upsample (`int`, defaults to 1): detector upsampling.
        analyzer (`FaceAnalyzer`, *optional*): a ready analyser whose `Face.embedding` is 128-d (replaces the dlib
            one built from ``threshold`` / ``upsample``).
    """

    def __init__(
        self,
        face_dim: int = 512,
        seed: int = 0,
        threshold: float = 0.5,
        upsample: int = 1,
        analyzer: FaceAnalyzer | None = None,
    ) -> None:
        self.embedding_dim = int(face_dim)
        self.analyzer = analyzer if analyzer is not None else _dlib_analyzer(threshold, upsample)
        self.projection = orthonormal_map(DLIB_EMBEDDING_DIM, self.embedding_dim, seed)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(face_dim={self.embedding_dim}, analyzer={self.analyzer!r})"

    def _project(self, faces: Sequence[Face]) -> torch.Tensor:
        embeddings = np.stack([np.asarray(face.embedding, dtype=np.float32) for face in faces])
        if embeddings.shape[1] != DLIB_EMBEDDING_DIM:
            raise ValueError(f"the analyzer gave {embeddings.shape[1]}-d embeddings; expected {DLIB_EMBEDDING_DIM}.")
        return _normalize(embeddings @ self.projection.T)

    def encode_subjects(self, images: Sequence[ImageLike]) -> SubjectFaces:
        """Embed the largest face of each subject image.

        Args:
            images (`Sequence[ImageLike]`): one image per subject.

        Returns:
            `SubjectFaces`: (F, face_dim) embeddings, boxes and 5 points in each image's pixels.

        Raises:
            `ValueError`: naming the subject index when an image has no detectable face.
        """
        _, faces = _largest_faces(self.analyzer, images, embed=True)
        return _stack(faces, self._project(faces))

    def encode_group(self, image: ImageLike) -> SubjectFaces:
        """Embed every face of one group photo, left to right by nose x (the subject order of ID-Patch).

        Args:
            image (`ImageLike`): the photo.

        Returns:
            `SubjectFaces`: F >= 0 faces, in the photo's pixels.
        """
        faces = _left_to_right(self.analyzer.analyze(to_rgb_uint8(image), embed=True))
        if not faces:
            return SubjectFaces(torch.zeros(0, self.embedding_dim), torch.zeros(0, 4), torch.zeros(0, 5, 2))
        return _stack(faces, self._project(faces))


class ArcFaceEncoder:
    """The paper's face encoder: 5 points from a `FaceAnalyzer`, ArcFace norm-crop (112 px), IR-SE-50, 512-d.

    Args:
        weights (`str` or `Path`, *optional*): a local IR-SE-50 checkpoint (facexlib ``arcface_*.pth`` / pSp
            ``model_ir_se50.pth`` layout, read with ``weights_only=True`` or safetensors), loaded strictly.
        model (`IRSEBackbone`, *optional*): a ready backbone instead (tests pass a randomly initialised one).
        channel_order (`str`, defaults to `"bgr"`): what the backbone was trained on; upstream feeds BGR crops
            (config ``face.channel_order``).
        detector (`FaceAnalyzer`, *optional*): gives boxes and 5 points; defaults to dlib (needs the face extra).
        device (`str` or `torch.device`, defaults to `"cpu"`): where the backbone runs.
    """

    def __init__(
        self,
        weights: str | Path | None = None,
        model: IRSEBackbone | None = None,
        channel_order: Literal["rgb", "bgr"] = "bgr",
        detector: FaceAnalyzer | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        if (weights is None) == (model is None):
            raise ValueError("pass exactly one of `weights` (a local IR-SE-50 checkpoint) and `model` (a backbone).")
        if model is None:
            model = IRSEBackbone(units=ir_se_units(50))
            load_arcface_state_dict(model, weights, strict=True)
        self.embedder = ArcFaceEmbedder(model, channel_order=channel_order, device=device)
        self.embedding_dim = int(model.output_layer[3].out_features)
        self._detector = detector

    @property
    def detector(self) -> FaceAnalyzer:
        """The face detector (dlib by default, built on first use)."""
        if self._detector is None:
            self._detector = _dlib_analyzer(threshold=0.5, upsample=1)
        return self._detector

    def __repr__(self) -> str:
        return f"{type(self).__name__}(channel_order={self.embedder.channel_order!r}, detector={self._detector!r})"

    def embed_crops(self, crops: np.ndarray) -> torch.Tensor:
        """Embed ArcFace norm-crops.

        Args:
            crops (`np.ndarray`): uint8 RGB (N, 112, 112, 3) (flipped to BGR inside when ``channel_order="bgr"``).

        Returns:
            `torch.Tensor`: float32 (N, 512), unit norm.
        """
        return _normalize(self.embedder(crops))

    def _embed_faces(self, arrays: Sequence[np.ndarray], faces: Sequence[Face]) -> torch.Tensor:
        crops = np.stack([arcface_norm_crop(a, f.landmarks5, image_size=112).image for a, f in zip(arrays, faces)])
        return self.embed_crops(crops)

    def encode_subjects(self, images: Sequence[ImageLike]) -> SubjectFaces:
        """Embed the largest face of each subject image (`DlibFaceEncoder.encode_subjects`, ArcFace embeddings)."""
        arrays, faces = _largest_faces(self.detector, images, embed=False)
        return _stack(faces, self._embed_faces(arrays, faces))

    def encode_group(self, image: ImageLike) -> SubjectFaces:
        """Embed every face of one group photo, left to right by nose x."""
        array = to_rgb_uint8(image)
        faces = _left_to_right(self.detector.analyze(array, embed=False))
        if not faces:
            return SubjectFaces(torch.zeros(0, self.embedding_dim), torch.zeros(0, 4), torch.zeros(0, 5, 2))
        return _stack(faces, self._embed_faces([array] * len(faces), faces))


def encode_subjects(
    images: Sequence[ImageLike], encoder: FaceEncoder | None = None, face_dim: int = 512
) -> SubjectFaces:
    """Embed one face per subject image with ``encoder`` (default: a `DlibFaceEncoder` of width ``face_dim``).

    Args:
        images (`Sequence[ImageLike]`): one image per subject.
        encoder (`FaceEncoder`, *optional*): the encoder.
        face_dim (`int`, defaults to 512): width of the default encoder.

    Returns:
        `SubjectFaces`: embeddings (F, D), boxes (F, 4), 5 points (F, 5, 2).
    """
    encoder = encoder if encoder is not None else DlibFaceEncoder(face_dim=face_dim)
    return encoder.encode_subjects(images)


def crop_faces(image: ImageLike, boxes: torch.Tensor | np.ndarray, margin: float = 0.6) -> list[np.ndarray]:
    """Square crops around face boxes, enlarged by ``margin`` of the box side on each side (clipped to the image).

    Args:
        image (`ImageLike`): the photo.
        boxes (`torch.Tensor` or `np.ndarray`): (F, 4) ``(x0, y0, x1, y1)``.
        margin (`float`, defaults to 0.6): extra context per side, as a fraction of the box's larger side.

    Returns:
        `list[np.ndarray]`: F uint8 RGB crops (for example subject images cut from a group photo).
    """
    array = to_rgb_uint8(image)
    height, width = array.shape[:2]
    boxes = np.asarray(boxes.detach().cpu() if isinstance(boxes, torch.Tensor) else boxes, dtype=np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"`boxes` must be (F, 4), got {boxes.shape}.")
    crops = []
    for x0, y0, x1, y1 in boxes:
        half = max(x1 - x0, y1 - y0) * (0.5 + margin)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        left, top = max(round(cx - half), 0), max(round(cy - half), 0)
        right, bottom = min(round(cx + half), width), min(round(cy + half), height)
        crops.append(np.ascontiguousarray(array[top:bottom, left:right]))
    return crops
