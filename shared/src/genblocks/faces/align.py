"""Face alignment: FFHQ-style crops from 68 landmarks and the ArcFace 112-px norm-crop from 5 points.

Sources followed:

- FFHQ alignment (Karras et al., arXiv 1812.04948): NVlabs/ffhq-dataset ``download_ffhq.py``
  (``recreate_aligned_images``, commit 0c4ba98): the oriented quad from the eye and mouth averages
  ``x = eye_to_eye - rot90(eye_to_mouth)``, ``x *= max(|eye_to_eye| * 2.0, |eye_to_mouth| * 1.8)``,
  ``c = eye_avg + eye_to_mouth * 0.1``, the integer shrink for large downscales and reflect padding. The blur/fade
  of the padded border and the 4096-px supersampled transform are left out: the quad is resampled straight to
  ``output_size`` with bicubic filtering after the shrink step.
- ArcFace norm-crop (Deng et al., arXiv 1801.07698): deepinsight/insightface ``python-package/insightface/utils/
  face_align.py`` (``arcface_dst``, ``estimate_norm``, ``norm_crop``): a similarity transform from the 5 detected
  points onto a fixed 112-px template, estimated by least squares (Umeyama, IEEE TPAMI 13(4) 1991, as in
  ``skimage.transform.SimilarityTransform.estimate``), applied like ``cv2.warpAffine(..., borderValue=0.0)``.

Coordinates are pixel-index coordinates (pixel ``(i, j)`` has its centre at ``x = j, y = i``), the convention of
dlib, insightface and OpenCV.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

__all__ = [
    "ARCFACE_TEMPLATE_112",
    "AlignedFace",
    "align_ffhq",
    "apply_affine",
    "ffhq_quad",
    "norm_crop",
    "umeyama_similarity",
    "warp_affine",
]

ARCFACE_TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],  # left eye (image left)
        [73.5318, 51.5014],  # right eye
        [56.0252, 71.7366],  # nose tip
        [41.5493, 92.3655],  # left mouth corner
        [70.7299, 92.2041],  # right mouth corner
    ],
    dtype=np.float64,
)
"""insightface ``arcface_dst``: where the 5 points land in a 112×112 ArcFace crop, shape (5, 2), (x, y)."""


@dataclass(frozen=True)
class AlignedFace:
    """An aligned face crop and the transform that produced it.

    Args:
        image (`np.ndarray`): the crop, uint8 of shape (S, S, C) (or (S, S) for a grey input).
        matrix (`np.ndarray`): float64 of shape (2, 3) mapping source pixel coordinates ``(x, y, 1)`` to crop
            pixel coordinates; use `apply_affine` to carry landmarks into the crop.
    """

    image: np.ndarray
    matrix: np.ndarray


def _check_points(points: np.ndarray, count: int, name: str) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    if points.shape != (count, 2):
        raise ValueError(f"`{name}` must have shape ({count}, 2), got {points.shape}.")
    if not np.isfinite(points).all():
        raise ValueError(f"`{name}` contains non-finite values.")
    return points


def _check_image(image: np.ndarray, name: str = "image") -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        raise ValueError(
            f"`{name}` must be a uint8 array of shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), "
            f"got dtype {image.dtype} and shape {image.shape}."
        )
    return image


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a (2, 3) affine matrix to points.

    Args:
        matrix (`np.ndarray`): shape (2, 3).
        points (`np.ndarray`): shape (N, 2), (x, y).

    Returns:
        `np.ndarray`: float64 of shape (N, 2).
    """
    points = np.asarray(points, dtype=np.float64)
    return points @ np.asarray(matrix, dtype=np.float64)[:, :2].T + np.asarray(matrix, dtype=np.float64)[:, 2]


def umeyama_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (rotation, uniform scale, translation) mapping ``src`` onto ``dst``.

    Umeyama's closed form, with the reflection correction; equals ``skimage.transform.SimilarityTransform``'s
    estimate.

    Args:
        src (`np.ndarray`): shape (N, 2), N >= 2.
        dst (`np.ndarray`): shape (N, 2).

    Returns:
        `np.ndarray`: float64 of shape (2, 3), ``dst ≈ src @ M[:, :2].T + M[:, 2]``.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.ndim != 2 or src.shape[1] != 2 or src.shape != dst.shape or src.shape[0] < 2:
        raise ValueError(f"`src` and `dst` must both have shape (N >= 2, 2), got {src.shape} and {dst.shape}.")
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    cov = dst_c.T @ src_c / src.shape[0]
    sign = np.ones(2)
    if np.linalg.det(cov) < 0:
        sign[-1] = -1.0
    u, s, vt = np.linalg.svd(cov)
    rotation = u @ np.diag(sign) @ vt
    src_var = src_c.var(0).sum()
    if src_var == 0:
        raise ValueError("`src` points are all identical; the similarity transform is undefined.")
    scale = (s * sign).sum() / src_var
    translation = dst_mean - scale * rotation @ src_mean
    return np.concatenate([scale * rotation, translation[:, None]], axis=1)


def _warp_affine(image: np.ndarray, matrix: np.ndarray, size: tuple[int, int], resample: int) -> np.ndarray:
    """``cv2.warpAffine``-like warp with PIL: ``matrix`` (2, 3) maps source pixel-index coordinates to output ones;
    outside pixels are 0. ``size`` is (width, height)."""
    full = np.vstack([matrix, [0.0, 0.0, 1.0]])
    inverse = np.linalg.inv(full)
    # PIL samples at pixel centres (+0.5) in corner coordinates; convert from pixel-index coordinates.
    shift = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]])
    unshift = np.array([[1.0, 0.0, -0.5], [0.0, 1.0, -0.5], [0.0, 0.0, 1.0]])
    pil_inverse = shift @ inverse @ unshift
    squeeze = image.ndim == 3 and image.shape[2] == 1
    pil = Image.fromarray(image[..., 0] if squeeze else image)
    out = pil.transform(size, Image.Transform.AFFINE, tuple(pil_inverse[:2].ravel()), resample=resample, fillcolor=0)
    out_array = np.asarray(out)
    return out_array[..., None] if squeeze else out_array


def warp_affine(
    image: np.ndarray, matrix: np.ndarray, size: tuple[int, int], resample: str = "bilinear"
) -> np.ndarray:
    """Warp an image with a (2, 3) affine matrix, like ``cv2.warpAffine(..., borderValue=0)``.

    Args:
        image (`np.ndarray`): uint8 of shape (H, W), (H, W, 1) or (H, W, 3), or float32 of shape (H, W) (a mask).
        matrix (`np.ndarray`): float of shape (2, 3) mapping ``image`` pixel-index coordinates to output ones (for
            example `AlignedFace.matrix`, or its inverse to paste a crop back).
        size (`tuple[int, int]`): the output's (width, height).
        resample (`str`, defaults to `"bilinear"`): ``"nearest"``, ``"bilinear"`` or ``"bicubic"``.

    Returns:
        `np.ndarray`: the warped image of shape (height, width[, C]), dtype kept; pixels mapped from outside are 0.
    """
    filters = {
        "nearest": Image.Resampling.NEAREST,
        "bilinear": Image.Resampling.BILINEAR,
        "bicubic": Image.Resampling.BICUBIC,
    }
    if resample not in filters:
        raise ValueError(f"`resample` must be one of {sorted(filters)}, got {resample!r}.")
    array = np.asarray(image)
    if not (array.dtype == np.float32 and array.ndim == 2):
        array = _check_image(array)
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape != (2, 3):
        raise ValueError(f"`matrix` must have shape (2, 3), got {matrix.shape}.")
    return _warp_affine(array, matrix, (int(size[0]), int(size[1])), filters[resample])


def norm_crop(
    image: np.ndarray, landmarks5: np.ndarray, image_size: int = 112, template: np.ndarray | None = None
) -> AlignedFace:
    """The ArcFace norm-crop: warp the face so its 5 points land on the 112-px template (insightface ``norm_crop``).

    Args:
        image (`np.ndarray`): uint8 of shape (H, W, C) or (H, W). Channel order is kept (pass BGR to reproduce
            pipelines that crop BGR images).
        landmarks5 (`np.ndarray`): shape (5, 2): left eye, right eye, nose tip, left and right mouth corners (x, y).
        image_size (`int`, defaults to 112): output side; the template is scaled by ``image_size / 112`` (insightface
            also shifts by 8 px in x for multiples of 128, which is done here too).
        template (`np.ndarray`, *optional*): a (5, 2) template for a 112-px crop; defaults to `ARCFACE_TEMPLATE_112`.

    Returns:
        `AlignedFace`: the (image_size, image_size, C) crop and the (2, 3) source-to-crop matrix.
    """
    image = _check_image(image)
    points = _check_points(landmarks5, 5, "landmarks5")
    if image_size <= 0 or (image_size % 112 != 0 and image_size % 128 != 0):
        raise ValueError(f"`image_size` must be a positive multiple of 112 or 128, got {image_size}.")
    reference = ARCFACE_TEMPLATE_112 if template is None else _check_points(template, 5, "template")
    if image_size % 112 == 0:
        dst = reference * (image_size / 112.0)
    else:
        dst = reference * (image_size / 128.0) + np.array([8.0 * image_size / 128.0, 0.0])
    matrix = umeyama_similarity(points, dst)
    crop = _warp_affine(image, matrix, (image_size, image_size), Image.Resampling.BILINEAR)
    return AlignedFace(image=crop, matrix=matrix)


def ffhq_quad(landmarks68: np.ndarray) -> np.ndarray:
    """The FFHQ crop quad from 68 landmarks (``download_ffhq.py``, ``recreate_aligned_images``).

    Args:
        landmarks68 (`np.ndarray`): shape (68, 2), (x, y), iBUG-300W order.

    Returns:
        `np.ndarray`: float64 of shape (4, 2): the corners that map to the output's top-left, bottom-left,
        bottom-right and top-right corners.
    """
    lm = _check_points(landmarks68, 68, "landmarks68")
    eye_left = lm[36:42].mean(0)
    eye_right = lm[42:48].mean(0)
    eye_avg = (eye_left + eye_right) * 0.5
    eye_to_eye = eye_right - eye_left
    mouth_avg = (lm[48] + lm[54]) * 0.5
    eye_to_mouth = mouth_avg - eye_avg
    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    norm = np.hypot(*x)
    if norm == 0:
        raise ValueError("`landmarks68` are degenerate: the eye and mouth geometry gives a zero-size quad.")
    x /= norm
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.flipud(x) * [-1, 1]
    c = eye_avg + eye_to_mouth * 0.1
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def align_ffhq(
    image: np.ndarray, landmarks68: np.ndarray, output_size: int = 1024, enable_padding: bool = True
) -> AlignedFace:
    """FFHQ-style alignment: crop the oriented quad of `ffhq_quad` to an ``output_size`` square.

    Steps as in ``download_ffhq.py``: shrink by an integer factor when the quad is more than twice the output size,
    reflect-pad when the quad leaves the image (``enable_padding``; otherwise outside pixels are black), then resample
    the quad (bicubic). The original's blurred fade of the padded border and its 4096-px supersampling are skipped.

    Args:
        image (`np.ndarray`): uint8 of shape (H, W, C) or (H, W), RGB for the usual pipelines.
        landmarks68 (`np.ndarray`): shape (68, 2), (x, y) in ``image``'s pixel coordinates.
        output_size (`int`, defaults to 1024): side of the aligned square (FFHQ 1024; FG-Net uses 256).
        enable_padding (`bool`, defaults to `True`): reflect-pad instead of filling with black.

    Returns:
        `AlignedFace`: the (output_size, output_size, C) crop and the (2, 3) source-to-crop matrix.
    """
    image = _check_image(image)
    if output_size <= 0:
        raise ValueError(f"`output_size` must be positive, got {output_size}.")
    quad = ffhq_quad(landmarks68)
    single_channel = image.ndim == 3 and image.shape[2] == 1
    work = image[..., 0] if single_channel else image
    # `quad` holds pixel-edge ("corner") coordinates, as PIL's QUAD transform reads it in the original; pixel-index
    # coordinates are half a pixel less. `source_to_work` maps source pixel indices to `work` pixel indices.
    source_to_work = np.eye(3)
    work_quad = quad.copy()
    qsize = np.hypot(*(quad[3] - quad[0]))
    shrink = int(np.floor(qsize / output_size * 0.5))
    if shrink > 1:
        size = (round(work.shape[1] / shrink), round(work.shape[0] / shrink))
        factor = np.array([work.shape[1] / size[0], work.shape[0] / size[1]])
        work = np.asarray(Image.fromarray(work).resize(size, Image.Resampling.LANCZOS))
        work_quad = work_quad / factor
        source_to_work = np.array(
            [[1 / factor[0], 0.0, 0.5 / factor[0] - 0.5], [0.0, 1 / factor[1], 0.5 / factor[1] - 0.5], [0, 0, 1]]
        )
    if enable_padding:
        border = max(round(qsize / shrink * 0.1) if shrink > 1 else round(qsize * 0.1), 3)
        lo = np.floor(work_quad.min(0)).astype(int)
        hi = np.ceil(work_quad.max(0)).astype(int)
        height, width = work.shape[:2]
        pad_left, pad_top = max(-lo[0] + border, 0), max(-lo[1] + border, 0)
        pad_right, pad_bottom = max(hi[0] - width + border, 0), max(hi[1] - height + border, 0)
        if pad_left or pad_top or pad_right or pad_bottom:
            widths = [(pad_top, pad_bottom), (pad_left, pad_right)] + [(0, 0)] * (work.ndim - 2)
            work = np.pad(work, widths, mode="reflect")
            work_quad = work_quad + np.array([pad_left, pad_top])
            source_to_work = np.array([[1.0, 0.0, pad_left], [0.0, 1.0, pad_top], [0, 0, 1]]) @ source_to_work
    # Work-to-output affine from three quad corners: top-left -> (0, 0), bottom-left -> (0, S), top-right -> (S, 0),
    # in pixel-index coordinates (corner coordinates minus half a pixel on both sides).
    side = float(output_size)
    corners_out = np.array([[0.0, 0.0], [0.0, side], [side, 0.0]]) - 0.5
    corners_in = work_quad[[0, 1, 3]] - 0.5
    work_to_out = np.linalg.solve(
        np.hstack([corners_in, np.ones((3, 1))]), np.hstack([corners_out, np.ones((3, 1))])
    ).T[:2]
    crop = _warp_affine(work, work_to_out, (output_size, output_size), Image.Resampling.BICUBIC)
    matrix = work_to_out @ source_to_work
    return AlignedFace(image=crop[..., None] if single_channel else crop, matrix=matrix)
