"""Inputs of X-Portrait: frames as tensors, 68-point landmarks, the best driving frame, the 3-point affine alignment of
the driving video to the source, and the local ControlNet's eye/eye/mouth patch image (X-Portrait spec §3, §5).

Upstream: bytedance/X-Portrait@59f002f45a07ddffdbbea6b3d421abf9db292dbd ``core/test_xportrait.py``:

- ``extract_local_feature_from_single_img``: 68 landmarks of the (aligned) 512-px driving frame resized to 256; patch
  centres ``clip(round(mean(lmks[43:48])), 32, 223) * 2`` (left eye), ``lmks[37:42]`` (right eye), ``lmks[49:68]``
  (mouth), the code's literal slices; 128-px patches ``[c - 64, c + 64)`` copied from the frame into an image that is
  -1 everywhere else; all -1 when no face is found.
- ``find_best_frame_byheadpose_fa``: the driving frame whose landmarks have the smallest L1 distance to the source's.
- ``adjust_driving_video_to_src_image``: boxes ``mean ± (max - min) / 2`` of the source's and the best frame's
  landmarks; ``cv2.getAffineTransform`` of three box corners (top-left, top-right, bottom-left) maps the driving box
  onto the source box and ``cv2.warpAffine`` (bilinear, black border) applies it to every driving frame.

Here landmarks may come from any ``genblocks.faces.FaceAnalyzer`` with 68 points (the default is dlib, ``pip install
x-portrait[face]``) or be passed in as arrays, so nothing here needs a face model. Landmarks are ``(x, y)`` in
pixel-index coordinates (pixel ``(i, j)`` has its centre at ``x = j, y = i``); frames that have no face carry NaN
landmarks. Driving landmarks are carried through the alignment with the same affine matrix instead of being detected
again on the warped frames.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from genblocks.faces import FaceAnalyzer, apply_affine

__all__ = [
    "LOCAL_PATCH_SLICES",
    "alignment_matrix",
    "alignment_points",
    "best_frame_index",
    "detect_landmarks",
    "frames_to_tensor",
    "load_face_analyzer",
    "local_patch_centers",
    "local_patch_images",
    "resize_landmarks",
    "similarity_matrix",
    "three_point_affine",
    "transform_landmarks",
    "warp_affine",
]

logger = logging.getLogger(__name__)

_FACE_EXTRA = "pip install 'x-portrait[face]'"

LOCAL_PATCH_SLICES: tuple[slice, slice, slice] = (slice(43, 48), slice(37, 42), slice(49, 68))
"""68-point landmark slices whose means centre the left-eye, right-eye and mouth patches (upstream's literal slices)."""

ImageLike = Image.Image | np.ndarray | torch.Tensor


def load_face_analyzer(threshold: float = 0.5, upsample: int = 1) -> FaceAnalyzer:
    """The default 68-point face analyser (dlib HOG detector + shape predictor, offline).

    Args:
        threshold (`float`, defaults to 0.5): Minimum detector score.
        upsample (`int`, defaults to 1): Image upsamplings before detection (finds faces down to about 40 px).

    Raises:
        `ImportError`: When dlib or its model files are missing; the message names the ``x-portrait[face]`` extra.
    """
    from genblocks.faces import DlibFaceAnalyzer

    try:
        return DlibFaceAnalyzer(threshold=threshold, upsample=upsample)
    except ImportError as error:
        raise ImportError(
            f"Face alignment and local patches need a 68-point face analyser (dlib): {_FACE_EXTRA}. ({error})"
        ) from error


def _array_to_tensor(array: np.ndarray, name: str) -> torch.Tensor:
    if array.ndim != 3 or array.shape[-1] not in (3, 4):
        raise ValueError(f"{name} must be (H, W, 3) arrays, got shape {array.shape}")
    if array.dtype == np.uint8:
        values = torch.tensor(array[..., :3], dtype=torch.float32) / 255.0
    elif np.issubdtype(array.dtype, np.floating):
        values = torch.tensor(array[..., :3], dtype=torch.float32)
    else:
        raise ValueError(f"{name} arrays must be uint8 or float in [0, 1], got dtype {array.dtype}")
    return values.permute(2, 0, 1)


def _one_frame(image: ImageLike, name: str) -> torch.Tensor:
    if isinstance(image, Image.Image):
        return _array_to_tensor(np.asarray(image.convert("RGB")), name)
    if isinstance(image, np.ndarray):
        return _array_to_tensor(image, name)
    if isinstance(image, torch.Tensor):
        if image.ndim != 3 or image.shape[0] != 3 or not image.is_floating_point():
            raise ValueError(
                f"{name} tensors must be float (3, H, W) in [0, 1], got {image.dtype} {tuple(image.shape)}"
            )
        return image.detach().float().cpu()
    raise ValueError(f"{name} must be PIL images, numpy arrays or torch tensors, got {type(image).__name__}")


def frames_to_tensor(frames: ImageLike | Sequence[ImageLike], name: str = "frames") -> torch.Tensor:
    """Stack images into one float tensor in [0, 1].

    Args:
        frames: One image or a sequence of images: PIL images, uint8 (or float [0, 1]) arrays of shape (H, W, 3) or
            (F, H, W, 3), or float tensors of shape (3, H, W) or (F, 3, H, W) in [0, 1].
        name (`str`, defaults to `"frames"`): How the input is named in errors.

    Returns:
        `torch.Tensor` of shape `(F, 3, H, W)`, float32 on CPU.

    Raises:
        `ValueError`: No frames, frames of different sizes, or an unsupported type; the message names ``name``.
    """
    if isinstance(frames, torch.Tensor) and frames.ndim == 4 and frames.shape[1] == 3 and frames.is_floating_point():
        if frames.shape[0] == 0:
            raise ValueError(f"{name} holds no frames; expected at least one image")
        return frames.detach().float().cpu()
    if isinstance(frames, np.ndarray | torch.Tensor) and frames.ndim == 4:
        frames = list(frames)
    elif isinstance(frames, Image.Image | np.ndarray | torch.Tensor):
        frames = [frames]
    items = [_one_frame(frame, name) for frame in frames]
    if not items:
        raise ValueError(f"{name} holds no frames; expected at least one image")
    sizes = [tuple(item.shape[-2:]) for item in items]
    different = [i for i, size in enumerate(sizes) if size != sizes[0]]
    if different:
        raise ValueError(
            f"{name} must all have the same size: frame 0 is {sizes[0]} (H, W) but frame {different[0]} is "
            f"{sizes[different[0]]}"
        )
    return torch.stack(items)


def resize_landmarks(landmarks: np.ndarray, from_size: tuple[int, int], to_size: tuple[int, int]) -> np.ndarray:
    """Carry pixel-index landmarks through an image resize: ``x' = (x + 0.5) * W' / W - 0.5`` (same for y).

    Args:
        landmarks (`np.ndarray` of shape `(..., 2)`): ``(x, y)`` points.
        from_size (`tuple[int, int]`): (H, W) of the image the points are in.
        to_size (`tuple[int, int]`): (H', W') of the resized image.
    """
    scale = np.array([to_size[1] / from_size[1], to_size[0] / from_size[0]])
    return (np.asarray(landmarks, dtype=np.float64) + 0.5) * scale - 0.5


def transform_landmarks(landmarks: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a (2, 3) affine matrix to landmarks of shape (..., 2); NaN rows stay NaN."""
    points = np.asarray(landmarks, dtype=np.float64)
    return apply_affine(matrix, points.reshape(-1, 2)).reshape(points.shape)


def detect_landmarks(
    frames: torch.Tensor, analyzer: FaceAnalyzer, name: str = "frames", require: bool = False
) -> np.ndarray:
    """68 landmarks of the largest face in each frame.

    Args:
        frames (`torch.Tensor` of shape `(F, 3, H, W)`): Float frames in [0, 1].
        analyzer (`FaceAnalyzer`): A backend that gives 68 landmarks (e.g. ``load_face_analyzer()``).
        name (`str`, defaults to `"frames"`): How the input is named in errors.
        require (`bool`, defaults to `False`): Raise when a frame has no face instead of returning NaN for it.

    Returns:
        `np.ndarray` of shape `(F, 68, 2)`, float64, NaN for frames without a face.
    """
    arrays = (frames.clamp(0, 1) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    landmarks = np.full((len(arrays), 68, 2), np.nan)
    for index, image in enumerate(arrays):
        faces = analyzer.analyze(np.ascontiguousarray(image), embed=False)
        if not faces:
            if require:
                raise ValueError(
                    f"No face found in {name}" + (f"[{index}]" if len(arrays) > 1 else "") + f" (shape {image.shape});"
                    " face alignment needs a detectable face. Pass landmarks explicitly or disable alignment."
                )
            continue
        face = max(faces, key=lambda f: f.area)
        if face.landmarks68 is None:
            raise ValueError(f"{type(analyzer).__name__} gives no 68-point landmarks; X-Portrait needs them")
        landmarks[index] = face.landmarks68
    return landmarks


def _check_landmarks(landmarks: np.ndarray, name: str) -> np.ndarray:
    points = np.asarray(landmarks, dtype=np.float64)
    if points.shape != (68, 2):
        raise ValueError(f"{name} must have shape (68, 2), got {points.shape}")
    return points


def local_patch_centers(
    landmarks: np.ndarray, resolution: int, patch_size: int, landmark_scale: int = 2
) -> np.ndarray:
    """Centres of the left-eye, right-eye and mouth patches, as upstream computes them.

    The means of ``LOCAL_PATCH_SLICES`` are taken at ``resolution / landmark_scale`` (upstream's 256-px copy),
    rounded, clipped so the patch stays inside the frame, and scaled back by ``landmark_scale``.

    Args:
        landmarks (`np.ndarray` of shape `(68, 2)`): ``(x, y)`` at ``resolution``.
        resolution (`int`): Side of the square frame.
        patch_size (`int`): Patch side at ``resolution``; a multiple of ``2 * landmark_scale``.
        landmark_scale (`int`, defaults to 2): Downscale at which centres are rounded and clipped.

    Returns:
        `np.ndarray` of shape `(3, 2)`, int64 ``(x, y)`` centres.
    """
    points = _check_landmarks(landmarks, "landmarks") / landmark_scale
    half = patch_size // (2 * landmark_scale)
    high = resolution // landmark_scale - 1 - half
    if high < half:
        raise ValueError(f"patch_size {patch_size} does not fit in a {resolution}-px frame")
    centers = [np.clip(np.round(points[part].mean(0)), half, high) for part in LOCAL_PATCH_SLICES]
    return (np.stack(centers) * landmark_scale).astype(np.int64)


def local_patch_images(
    frames: torch.Tensor, landmarks: np.ndarray | None, patch_size: int, landmark_scale: int = 2
) -> torch.Tensor:
    """The local ControlNet's hint: the frame inside the three patches, -1 everywhere else.

    Args:
        frames (`torch.Tensor` of shape `(F, 3, S, S)`): Driving frames in [-1, 1].
        landmarks (`np.ndarray` of shape `(F, 68, 2)`, *optional*): Landmarks at S; a frame with NaN landmarks (no
            face), or every frame when `None`, gives an image that is -1 everywhere (upstream's fallback).
        patch_size (`int`): Patch side in pixels.
        landmark_scale (`int`, defaults to 2): See `local_patch_centers`.

    Returns:
        `torch.Tensor` of shape `(F, 3, S, S)`: patch ``k`` covers rows ``[cy_k - p/2, cy_k + p/2)`` and columns
        ``[cx_k - p/2, cx_k + p/2)``.
    """
    if frames.ndim != 4 or frames.shape[-1] != frames.shape[-2]:
        raise ValueError(f"frames must be square (F, 3, S, S), got {tuple(frames.shape)}")
    num_frames, _, size, _ = frames.shape
    mask = torch.zeros(num_frames, 1, size, size, dtype=torch.bool, device=frames.device)
    if landmarks is not None:
        landmarks = np.asarray(landmarks, dtype=np.float64)
        if landmarks.shape != (num_frames, 68, 2):
            raise ValueError(
                f"landmarks must have shape ({num_frames}, 68, 2) for {num_frames} frames, got {landmarks.shape}"
            )
        half = patch_size // 2
        for index in range(num_frames):
            if not np.isfinite(landmarks[index]).all():
                continue
            for x, y in local_patch_centers(landmarks[index], size, patch_size, landmark_scale):
                mask[index, :, y - half : y + half, x - half : x + half] = True
    return torch.where(mask, frames, torch.full_like(frames, -1.0))


def alignment_points(landmarks: np.ndarray) -> np.ndarray:
    """Top-left, top-right and bottom-left corners of the landmark box ``mean ± (max - min) / 2``.

    Args:
        landmarks (`np.ndarray` of shape `(68, 2)`): ``(x, y)`` points.

    Returns:
        `np.ndarray` of shape `(3, 2)`, float64.
    """
    points = _check_landmarks(landmarks, "landmarks")
    if not np.isfinite(points).all():
        raise ValueError("landmarks contain NaN or inf; the frame has no detected face")
    center = points.mean(0)
    half = (points.max(0) - points.min(0)) * 0.5
    if (half <= 0).any():
        raise ValueError(f"landmarks span a degenerate box (half-extent {half.tolist()}); cannot align")
    return np.array(
        [[center[0] - half[0], center[1] - half[1]], [center[0] + half[0], center[1] - half[1]],
         [center[0] - half[0], center[1] + half[1]]]
    )  # fmt: skip


def three_point_affine(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The affine matrix mapping three points exactly onto three others (``cv2.getAffineTransform``).

    Args:
        src (`np.ndarray` of shape `(3, 2)`): Non-collinear ``(x, y)`` points.
        dst (`np.ndarray` of shape `(3, 2)`): Their images.

    Returns:
        `np.ndarray` of shape `(2, 3)`, float64: ``dst = src @ M[:, :2].T + M[:, 2]``.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != (3, 2) or dst.shape != (3, 2):
        raise ValueError(f"src and dst must both have shape (3, 2), got {src.shape} and {dst.shape}")
    system = np.hstack([src, np.ones((3, 1))])
    if abs(np.linalg.det(system)) < 1e-12:
        raise ValueError(f"src points are collinear: {src.tolist()}")
    return np.linalg.solve(system, dst).T


def similarity_matrix(
    center: tuple[float, float], angle: float = 0.0, scale: float = 1.0, shift: tuple[float, float] = (0.0, 0.0)
) -> np.ndarray:
    """A (2, 3) map that rotates by ``angle`` (radians, counter-clockwise on screen is negative y) and scales by
    ``scale`` about ``center``, then translates by ``shift`` (pixels).

    Args:
        center (`tuple[float, float]`): ``(x, y)`` fixed point of rotation and scaling.
        angle (`float`, defaults to 0.0): Rotation in radians.
        scale (`float`, defaults to 1.0): Scale factor.
        shift (`tuple[float, float]`, defaults to `(0.0, 0.0)`): Translation ``(dx, dy)``.
    """
    cos, sin = math.cos(angle) * scale, math.sin(angle) * scale
    linear = np.array([[cos, -sin], [sin, cos]])
    offset = np.asarray(center, dtype=np.float64) - linear @ np.asarray(center, dtype=np.float64) + np.asarray(shift)
    return np.concatenate([linear, offset[:, None]], axis=1)


def alignment_matrix(source_landmarks: np.ndarray, driving_landmarks: np.ndarray) -> np.ndarray:
    """The (2, 3) affine matrix that maps the driving face box onto the source face box (three corners exactly).

    Args:
        source_landmarks (`np.ndarray` of shape `(68, 2)`): Source landmarks at the working resolution.
        driving_landmarks (`np.ndarray` of shape `(68, 2)`): Landmarks of the best driving frame, same resolution.
    """
    return three_point_affine(alignment_points(driving_landmarks), alignment_points(source_landmarks))


def best_frame_index(source_landmarks: np.ndarray, driving_landmarks: np.ndarray) -> int:
    """The driving frame whose landmarks are closest to the source's in L1 (sum of absolute differences).

    Args:
        source_landmarks (`np.ndarray` of shape `(68, 2)`): Source landmarks.
        driving_landmarks (`np.ndarray` of shape `(F, 68, 2)`): Driving landmarks, NaN for frames without a face
            (never chosen).

    Raises:
        `ValueError`: When no driving frame has landmarks.
    """
    source = _check_landmarks(source_landmarks, "source_landmarks")
    driving = np.asarray(driving_landmarks, dtype=np.float64)
    if driving.ndim != 3 or driving.shape[1:] != (68, 2):
        raise ValueError(f"driving_landmarks must have shape (F, 68, 2), got {driving.shape}")
    distances = np.abs(driving - source).sum(axis=(1, 2))
    distances[~np.isfinite(distances)] = np.inf
    if not np.isfinite(distances).any():
        raise ValueError("driving_frames: no frame has a detected face, so none can serve as the best frame")
    return int(np.argmin(distances))


def warp_affine(images: torch.Tensor, matrix: np.ndarray | torch.Tensor, fill: float = -1.0) -> torch.Tensor:
    """Warp images with an affine map of pixel-index coordinates, like ``cv2.warpAffine`` (bilinear, constant border).

    Args:
        images (`torch.Tensor` of shape `(N, C, H, W)`): Images.
        matrix (`np.ndarray` or `torch.Tensor` of shape `(2, 3)` or `(N, 2, 3)`): Maps input ``(x, y, 1)`` to output
            ``(x', y')``.
        fill (`float`, defaults to -1.0): Value outside the input (-1 is black for [-1, 1] images).

    Returns:
        `torch.Tensor` of shape `(N, C, H, W)`: ``out[y', x'] = images[M^-1 (x', y')]``.
    """
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got {tuple(images.shape)}")
    num, _, height, width = images.shape
    forward = torch.as_tensor(np.asarray(matrix) if isinstance(matrix, np.ndarray) else matrix, dtype=torch.float64)
    forward = forward.cpu().expand(num, 2, 3) if forward.ndim == 2 else forward.cpu()
    if forward.shape != (num, 2, 3):
        raise ValueError(f"matrix must be (2, 3) or ({num}, 2, 3), got {tuple(forward.shape)}")
    bottom = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64).expand(num, 1, 3)
    output_to_input = torch.linalg.inv(torch.cat([forward, bottom], dim=1))
    # pixel-index coordinates <-> grid_sample's [-1, 1] with align_corners=True: u = 2 x / (W - 1) - 1
    to_norm = torch.tensor(
        [[2.0 / max(width - 1, 1), 0.0, -1.0], [0.0, 2.0 / max(height - 1, 1), -1.0], [0.0, 0.0, 1.0]],
        dtype=torch.float64,
    )
    theta = (to_norm @ output_to_input @ torch.linalg.inv(to_norm))[:, :2]
    dtype = images.dtype if images.is_floating_point() else torch.float32
    grid = F.affine_grid(theta.to(dtype), [num, 1, height, width], align_corners=True).to(images.device)
    shifted = images - fill
    warped = F.grid_sample(shifted, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return warped + fill
