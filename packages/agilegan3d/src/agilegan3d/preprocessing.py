"""A photo before inversion (spec agilegan3d §5): EG3D's crop from the face's 68 landmarks and the camera estimated
from them (``genblocks.render3d.eg3d_crop`` / ``estimate_camera``), with dlib as the face analyzer behind
``pip install 'agilegan3d[face]'``. Without an analyzer (``inference.camera_from=auto``) or with
``camera_from=frontal`` the photo is centre-cropped and the camera is frontal.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from agilegan3d.augment import resize_like
from agilegan3d.pairs import cameras_at
from genblocks.errors import InputError
from genblocks.faces.analyzer import FaceAnalyzer
from genblocks.media import to_tensor
from genblocks.render3d import eg3d_crop, estimate_camera

__all__ = ["PreparedPhoto", "default_face_analyzer", "prepare_photo"]

logger = logging.getLogger(__name__)


@dataclass
class PreparedPhoto:
    """A photo ready for the encoder.

    Attributes:
        image: (3, size, size) in [-1, 1] (EG3D's crop, or the centre crop).
        camera: Its EG3D camera (25,).
        yaw, pitch: The camera's offsets from frontal, radians.
        reason: Where the crop and camera came from.
    """

    image: Tensor
    camera: Tensor
    yaw: float
    pitch: float
    reason: str


def default_face_analyzer() -> FaceAnalyzer | None:
    """genblocks' dlib analyzer when the ``face`` extra is installed, else ``None``."""
    from genblocks.faces.dlib_backend import DlibFaceAnalyzer

    try:
        return DlibFaceAnalyzer()
    except ImportError as error:
        logger.info("no face analyzer (%s): the photo is centre-cropped and seen from the front", error)
        return None


def _centre_crop(array: np.ndarray, size: int) -> Tensor:
    h, w = array.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return resize_like(to_tensor(array[top : top + side, left : left + side]).unsqueeze(0), size)[0]


def prepare_photo(
    image: np.ndarray,
    analyzer: FaceAnalyzer | None,
    camera_from: str = "auto",
    size: int = 512,
    name: str = "--image",
) -> PreparedPhoto:
    """EG3D's crop of ``image`` and its camera from 68 landmarks, or the centre crop seen from the front.

    Args:
        image: uint8 RGB (H, W, 3).
        analyzer: A face analyzer (:func:`default_face_analyzer`), or ``None``.
        camera_from: ``"landmarks"`` (a face is required), ``"auto"`` (landmarks when found; with an analyzer that
            finds no face this is an error too: the photo shows no face), ``"frontal"`` (no analyzer).
        size: Side of the result.
        name: How the input is named in errors.

    Raises:
        InputError: Not a uint8 RGB array; no face found (``landmarks``, or ``auto`` with an analyzer).
    """
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise InputError(f"{name}: expected a uint8 RGB image (H, W, 3), got {array.dtype} {array.shape}")
    frontal = cameras_at(torch.zeros(1), torch.zeros(1))[0]
    if camera_from == "frontal" or (analyzer is None and camera_from == "auto"):
        reason = "inference.camera_from=frontal" if camera_from == "frontal" else "no face analyzer installed"
        return PreparedPhoto(_centre_crop(array, size), frontal, 0.0, 0.0, f"centre crop, frontal camera ({reason})")
    if analyzer is None:
        raise InputError(
            f"{name}: inference.camera_from=landmarks needs a face analyzer: pip install 'agilegan3d[face]'"
        )
    try:
        face = analyzer.get_face(array, name=name, embed=False)
    except ValueError as error:
        raise InputError(f"{name}: no face found ({error}); expected a portrait photo") from None
    if face.landmarks68 is None:
        raise InputError(f"{name}: the face analyzer gives no 68 landmarks; use --set inference.camera_from=frontal")
    crop = eg3d_crop(array, face.landmarks68, size=size, level=True)
    camera, yaw, pitch = estimate_camera(torch.as_tensor(face.landmarks68, dtype=torch.float32))
    face_image = to_tensor(np.array(crop.image, dtype=np.uint8, copy=True))
    return PreparedPhoto(face_image, camera, yaw, pitch, "EG3D crop, camera from 68 landmarks")
