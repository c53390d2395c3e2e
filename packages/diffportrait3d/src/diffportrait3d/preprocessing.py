"""The portrait before the EG3D inversion: EG3D's crop of the photo and the face's landmarks in it, from a face
analyzer (``genblocks.faces``; dlib behind ``pip install 'diffportrait3d[face]'``).

With 68 landmarks the inversion's camera comes from them (``genblocks.render3d.estimate_camera``, through
:func:`diffportrait3d.noise3d.camera_from_landmarks`) and the portrait becomes EG3D's crop
(``genblocks.render3d.eg3d_crop``, the framing EG3D generators were trained on), levelled because the orbit cameras
have no roll. Without landmarks (``inference.camera_from=grid``, no analyzer installed, no face found, a backend with
five points only) the photo is used as given and the camera is searched on a grid of renders
(:func:`diffportrait3d.noise3d.search_camera`), which only tells a few coarse poses apart.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from genblocks.errors import InputError
from genblocks.faces.align import apply_affine
from genblocks.faces.analyzer import FaceAnalyzer
from genblocks.render3d import EG3DCrop, eg3d_crop

__all__ = ["CameraFrom", "PreparedPortrait", "default_face_analyzer", "prepare_portrait"]

logger = logging.getLogger(__name__)

CameraFrom = Literal["auto", "landmarks", "grid"]
"""Where the inversion's camera comes from: ``landmarks`` (required), ``grid`` (render search, no crop) or ``auto``
(landmarks when a face analyzer is installed and finds a face with 68 landmarks, else the grid)."""


@dataclass
class PreparedPortrait:
    """A portrait ready for the inversion and the pipeline.

    Attributes:
        image (`torch.Tensor` of shape `(3, H, W)`): In [0, 1]: EG3D's crop (``size`` x ``size``) or the photo.
        landmarks (`torch.Tensor` of shape `(68, 2)`, *optional*): The face's landmarks in ``image``'s pixels; None
            on the grid path.
        crop (`EG3DCrop`, *optional*): The crop and its source-to-crop matrix; None on the grid path.
        reason (`str`): Why the camera comes from landmarks or from the grid (for logs and summaries).
    """

    image: torch.Tensor
    landmarks: torch.Tensor | None
    crop: EG3DCrop | None
    reason: str


def default_face_analyzer() -> FaceAnalyzer | None:
    """genblocks' dlib analyzer when the ``face`` extra is installed, else None."""
    from genblocks.faces.dlib_backend import DlibFaceAnalyzer

    try:
        return DlibFaceAnalyzer()
    except ImportError as error:
        logger.info("no face analyzer (%s): cameras are searched on a grid of renders", error)
        return None


def _as_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).permute(2, 0, 1).float() / 255


def prepare_portrait(
    image: np.ndarray,
    analyzer: FaceAnalyzer | None,
    camera_from: CameraFrom = "auto",
    size: int = 512,
    name: str = "image",
) -> PreparedPortrait:
    """EG3D's crop of ``image`` and its landmarks when a face with 68 landmarks is found, else the photo as given.

    Args:
        image (`np.ndarray`): uint8 RGB (H, W, 3).
        analyzer (`FaceAnalyzer`, *optional*): Finds the face (e.g. :func:`default_face_analyzer`).
        camera_from (`str`, defaults to `"auto"`): ``"landmarks"`` requires them; ``"grid"`` skips the analyzer;
            ``"auto"`` falls back to the grid when there are none.
        size (`int`, defaults to 512): Side of the crop.
        name (`str`, defaults to `"image"`): How the input is named in errors (e.g. ``--image face.png``).

    Returns:
        `PreparedPortrait`.

    Raises:
        InputError: ``image`` is not uint8 RGB, or ``camera_from="landmarks"`` and there are no 68 landmarks.
    """
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise InputError(f"{name}: expected a uint8 RGB array (H, W, 3), got {array.dtype} {array.shape}")
    if camera_from not in ("auto", "landmarks", "grid"):
        raise InputError(f"inference.camera_from: expected auto, landmarks or grid, got {camera_from!r}")
    if camera_from == "grid":
        return PreparedPortrait(_as_tensor(array), None, None, "inference.camera_from=grid")
    reason = ""
    landmarks68 = None
    if analyzer is None:
        reason = "no face analyzer installed (pip install 'diffportrait3d[face]')"
    else:
        try:
            face = analyzer.get_face(array, name=name, embed=False)
        except ValueError:
            reason = f"no face found in {name}"
        else:
            landmarks68 = face.landmarks68
            if landmarks68 is None:
                reason = f"the face analyzer gives no 68 landmarks for {name}"
    if landmarks68 is None:
        if camera_from == "landmarks":
            raise InputError(f"{name}: inference.camera_from=landmarks needs a face with 68 landmarks, but {reason}")
        logger.warning("%s: the camera is searched on a grid of renders and the photo is used uncropped", reason)
        return PreparedPortrait(_as_tensor(array), None, None, reason)
    crop = eg3d_crop(array, landmarks68, size=size, level=True)
    landmarks = torch.from_numpy(apply_affine(crop.matrix, landmarks68)).float()
    return PreparedPortrait(_as_tensor(crop.image), landmarks, crop, "EG3D crop and camera from 68 landmarks")
