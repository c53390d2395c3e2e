"""The EG3D crop of an ordinary photo: the square window EG3D's preprocessing cuts around a face (for the inversions
of diffportrait3d, omniavatar and agilegan3d, whose generators were trained on such crops).

It is not FFHQ's alignment (:func:`genblocks.faces.align_ffhq`). Source followed: NVlabs/eg3d
``dataset_preprocessing/ffhq/crop_images_in_the_wild.py`` (commit 7cf1fd1), which calls ``align_img`` of
sicxu/Deep3DFaceRecon_pytorch ``util/preprocess.py`` (submodule commit 6ba3d22):

1. Five points (eye centres, nose tip, mouth corners; from 68 landmarks the eye centre is the mean of the two eye
   corners, points 36/39 and 42/45) are fitted to a standard 3-D face (the BFM mean face's five points,
   :data:`EG3D_STANDARD_POINTS`) with an affine camera by least squares (``POS``): ``x ≈ R1·X + tx``,
   ``y ≈ R2·X + ty``; the face's scale is ``s = (|R1| + |R2|) / 2`` pixels per 3-D unit and its centre ``(tx, ty)``.
2. The photo is resized by ``rescale_factor / s`` (300: the standard face becomes 300 px wide per unit), a 1024 px
   window centred on ``(tx, ty)`` is cut, then its central ``center_crop_size`` (700) px, resized to 512.

So the crop is the axis-aligned square of side ``center_crop_size * s / rescale_factor`` source pixels centred on the
fitted centre: no rotation (EG3D's in-the-wild path keeps the head's roll and leaves it to the camera). Our
``level=True`` rotates the square about the same centre to undo the head's roll, which cameras without roll need
(:func:`genblocks.render3d.estimate_camera` has none). EG3D's integer sizes and its mixed pixel conventions (the y
flip uses ``H - 1``, the crop ``H``) move its window by about one source pixel; this module centres on the fit
exactly, in pixel-index coordinates (pixel ``(i, j)`` has its centre at ``x = j, y = i``, as dlib and OpenCV).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from genblocks.errors import InputError
from genblocks.faces.align import _warp_affine, umeyama_similarity

__all__ = [
    "EG3D_CENTER_CROP_SIZE",
    "EG3D_RESCALE_FACTOR",
    "EG3D_STANDARD_POINTS",
    "EG3DCrop",
    "EG3DCropBox",
    "eg3d_canonical_points",
    "eg3d_crop",
    "eg3d_crop_box",
    "eg3d_five_points",
]

EG3D_STANDARD_POINTS = np.array(
    [
        [-0.311487, 0.290361, 0.133780],  # left eye centre (image left)
        [0.309799, 0.289720, 0.131795],  # right eye centre
        [0.003253, -0.046179, 0.552442],  # nose tip
        [-0.252169, -0.381339, 0.224057],  # left mouth corner
        [0.248466, -0.381282, 0.222358],  # right mouth corner
    ]
)
"""The standard 3-D face of EG3D's crop, (5, 3), x right, y up: Deep3DFaceRecon's ``load_lm3d`` five points of the
BFM mean face (``BFM/similarity_Lm3D_all.mat``), in the order of :func:`eg3d_five_points`."""

EG3D_RESCALE_FACTOR = 300.0
"""``rescale_factor`` of EG3D's in-the-wild crop: pixels per unit of the standard face in the 1024-px window."""

EG3D_CENTER_CROP_SIZE = 700.0
"""``center_crop_size`` of EG3D's in-the-wild crop: the side kept from the 1024-px window (then resized to 512)."""


def eg3d_five_points(landmarks: np.ndarray) -> np.ndarray:
    """The five points of EG3D's crop from 68 iBUG landmarks (or five points, returned as they are).

    Args:
        landmarks (`np.ndarray`): (68, 2) dlib / iBUG-300W landmarks, or (5, 2) points in the order left eye centre,
            right eye centre, nose tip, left and right mouth corners ("left" = image left; the order of
            :attr:`genblocks.faces.Face.landmarks5`), in pixels (x, y).

    Returns:
        `np.ndarray`: float64 (5, 2). From 68 landmarks each eye centre is the mean of its two corners (36, 39 and
        42, 45), as Deep3DFaceRecon's ``extract_5p``; the nose tip is 30 and the mouth corners 48 and 54.

    Raises:
        InputError: not a finite (68, 2) or (5, 2) array.
    """
    points = np.asarray(landmarks, dtype=np.float64)
    if points.shape not in ((68, 2), (5, 2)) or not np.isfinite(points).all():
        raise InputError(
            f"landmarks: expected finite (68, 2) or (5, 2) pixel coordinates, got shape {tuple(points.shape)}"
        )
    if points.shape[0] == 5:
        return points.copy()
    return np.stack([points[[36, 39]].mean(0), points[[42, 45]].mean(0), points[30], points[48], points[54]])


@dataclass(frozen=True)
class EG3DCropBox:
    """Where EG3D's crop lies in the source photo.

    Args:
        center (`np.ndarray`): float64 (2,), the fitted face centre ``(x, y)`` in source pixels (the window's centre).
        side (`float`): the window's side in source pixels (``center_crop_size * s / rescale_factor``).
        angle (`float`): the window's rotation in radians (0 for EG3D's own crop; with ``level=True`` the roll of
            the best 2-D similarity from the frontal standard face onto the points), positive turns from +x towards +y
            (clockwise on screen, y points down).
        scale (`float`): the fitted face scale ``s``, source pixels per unit of the standard face.
    """

    center: np.ndarray
    side: float
    angle: float
    scale: float

    def corners(self) -> np.ndarray:
        """The window's corners in source pixels, (4, 2): top-left, bottom-left, bottom-right, top-right."""
        half = self.side / 2
        offsets = np.array([[-half, -half], [-half, half], [half, half], [half, -half]])
        return offsets @ _rotation(self.angle).T + self.center

    def matrix(self, size: int) -> np.ndarray:
        """The (2, 3) affine matrix from source pixel-index coordinates to those of a ``size`` x ``size`` crop."""
        linear = _rotation(-self.angle) * (size / self.side)
        offset = np.full(2, (size - 1) / 2) - linear @ self.center
        return np.concatenate([linear, offset[:, None]], axis=1)


@dataclass(frozen=True)
class EG3DCrop:
    """An EG3D crop and how it was cut.

    Args:
        image (`np.ndarray`): uint8 (S, S, C), the crop (outside the photo: black, as EG3D's PIL crop).
        matrix (`np.ndarray`): float64 (2, 3), source pixel-index coordinates -> crop ones
            (:func:`genblocks.faces.apply_affine` carries landmarks into the crop).
        box (`EG3DCropBox`): The window in the source photo.
    """

    image: np.ndarray
    matrix: np.ndarray
    box: EG3DCropBox


def _rotation(angle: float) -> np.ndarray:
    cos, sin = math.cos(angle), math.sin(angle)
    return np.array([[cos, -sin], [sin, cos]])


def eg3d_crop_box(
    landmarks: np.ndarray,
    rescale_factor: float = EG3D_RESCALE_FACTOR,
    center_crop_size: float = EG3D_CENTER_CROP_SIZE,
    level: bool = False,
) -> EG3DCropBox:
    """EG3D's crop window of a face from its landmarks (see the module docstring for the steps).

    Args:
        landmarks (`np.ndarray`): (68, 2) or (5, 2) landmarks in source pixels (:func:`eg3d_five_points`).
        rescale_factor (`float`, defaults to 300): EG3D's ``rescale_factor``.
        center_crop_size (`float`, defaults to 700): EG3D's ``center_crop_size``.
        level (`bool`, defaults to `False`): rotate the window to undo the head's roll (EG3D does not).

    Returns:
        `EG3DCropBox`.

    Raises:
        InputError: bad landmarks, or points so degenerate that the face has no size.
    """
    points = eg3d_five_points(landmarks)
    if rescale_factor <= 0 or center_crop_size <= 0:
        raise InputError(
            f"rescale_factor and center_crop_size: expected positive sizes, got {rescale_factor}, {center_crop_size}"
        )
    # POS: least-squares affine camera [x y] = [X Y Z 1] @ k, one column of k per image axis
    design = np.concatenate([EG3D_STANDARD_POINTS, np.ones((5, 1))], axis=1)
    solution = np.linalg.lstsq(design, points, rcond=None)[0]  # (4, 2)
    scale = float((np.linalg.norm(solution[:3, 0]) + np.linalg.norm(solution[:3, 1])) / 2)
    if not scale > 1e-6:
        raise InputError("landmarks: the points are degenerate (the face has no size); expected a detected face")
    angle = 0.0
    if level:  # the roll of the best 2-D similarity from the frontal standard face onto the points
        similarity = umeyama_similarity(EG3D_STANDARD_POINTS[:, :2] * np.array([1.0, -1.0]), points)
        angle = math.atan2(similarity[1, 0], similarity[0, 0])
    return EG3DCropBox(
        center=solution[3].copy(), side=center_crop_size * scale / rescale_factor, angle=angle, scale=scale
    )


def eg3d_canonical_points(
    size: int = 512, rescale_factor: float = EG3D_RESCALE_FACTOR, center_crop_size: float = EG3D_CENTER_CROP_SIZE
) -> np.ndarray:
    """Where the five points of a frontal standard face land in a ``size`` crop: (5, 2) crop pixels.

    The standard face's x and y (y flipped to point down) times ``rescale_factor * size / center_crop_size`` around
    the crop centre ``(size - 1) / 2``: at 512 px the eye centres sit at about (187.2, 191.8) and (323.5, 191.9).
    """
    flipped = EG3D_STANDARD_POINTS[:, :2] * np.array([1.0, -1.0])
    return flipped * (rescale_factor * size / center_crop_size) + (size - 1) / 2


def _check_image(image: np.ndarray) -> np.ndarray:
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] not in (1, 3, 4) or min(array.shape[:2]) < 1:
        raise InputError(
            f"image: expected a uint8 (H, W, C) array with 1, 3 or 4 channels, got {array.dtype} {array.shape}"
        )
    return array


def eg3d_crop(
    image: np.ndarray,
    landmarks: np.ndarray,
    size: int = 512,
    rescale_factor: float = EG3D_RESCALE_FACTOR,
    center_crop_size: float = EG3D_CENTER_CROP_SIZE,
    level: bool = False,
) -> EG3DCrop:
    """Cut EG3D's crop of the face with ``landmarks`` out of ``image`` at ``size`` x ``size``.

    Large downscales first shrink the photo by an integer factor (Lanczos), then the window is resampled bicubically;
    pixels outside the photo are black.

    Args:
        image (`np.ndarray`): uint8 (H, W, C) photo, C in {1, 3, 4}.
        landmarks (`np.ndarray`): (68, 2) or (5, 2) landmarks of the face in ``image``'s pixels.
        size (`int`, defaults to 512): side of the crop (EG3D's ``output_size``).
        rescale_factor (`float`, defaults to 300): EG3D's ``rescale_factor``.
        center_crop_size (`float`, defaults to 700): EG3D's ``center_crop_size``.
        level (`bool`, defaults to `False`): rotate to undo the head's roll (EG3D does not; see the module docstring).

    Returns:
        `EG3DCrop`: the (size, size, C) crop, its (2, 3) source-to-crop matrix and the window.

    Raises:
        InputError: a bad image, landmarks or size.
    """
    array = _check_image(image)
    if size < 1:
        raise InputError(f"size: expected a positive crop side, got {size}")
    box = eg3d_crop_box(landmarks, rescale_factor, center_crop_size, level)
    matrix = box.matrix(size)
    work, source_to_work = array, np.eye(3)
    shrink = int(box.side / size / 2)
    if shrink > 1:
        height, width = array.shape[:2]
        reduced = (max(round(width / shrink), 1), max(round(height / shrink), 1))
        factor = np.array([width / reduced[0], height / reduced[1]])
        work = _pil_array(_as_pil(array).resize(reduced, Image.Resampling.LANCZOS), array.shape[2])
        # pixel-index coordinates: the reduced pixel j covers source [j * f, (j + 1) * f), centre (j + 0.5) f - 0.5
        source_to_work = np.array(
            [[1 / factor[0], 0.0, 0.5 / factor[0] - 0.5], [0.0, 1 / factor[1], 0.5 / factor[1] - 0.5], [0, 0, 1]]
        )
    work_to_crop = (np.vstack([matrix, [0.0, 0.0, 1.0]]) @ np.linalg.inv(source_to_work))[:2]
    cropped = _warp_affine(work, work_to_crop, (size, size), Image.Resampling.BICUBIC)
    return EG3DCrop(image=cropped, matrix=matrix, box=box)


def _as_pil(array: np.ndarray) -> Image.Image:
    return Image.fromarray(array[..., 0] if array.shape[2] == 1 else array)


def _pil_array(image: Image.Image, channels: int) -> np.ndarray:
    out = np.asarray(image)
    return out[..., None] if channels == 1 else out
