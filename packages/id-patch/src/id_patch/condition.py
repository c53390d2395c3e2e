"""The ID-Patch condition image: an OpenPose-style skeleton on black plus one RGB ID patch per face (spec id-patch §3).

Followed upstream (bytedance/ID-Patch, commit 38096c9):

- ``utils/draw_condition.py`` (``draw_openpose_from_mmpose``, from mmpose): COCO-17 keypoints gain a neck (mean of
  the shoulders, score = the lower of the two), are reordered to OpenPose-18, joints are discs of radius 4 and limbs
  ellipses of half-width 4 in the OpenPose colours, blended as ``0.4 * joints + 0.6 * (joints + limbs)``. Drawn here
  with PIL instead of OpenCV (same geometry; edge pixels may differ by rasterisation).
- ``modules/inferencer.py`` (``generate``): a zero canvas padded by ``patch_size // 2``; each patch is added (``+=``)
  at ``round(location ∓ patch_size // 2)``; a patch whose centre falls outside the image is skipped; the un-padded
  canvas is added to the pose image, without clamping. ``demo.py`` sorts the nose positions left to right and pairs
  them with the subjects in order.

Renderer-level rule (this module): a patch whose centre lies outside the image is skipped with a logged warning, as
upstream. `id_patch.pipeline_id_patch.IDPatchPipeline` is stricter about positions the *user* gives: there a position
outside the image is a `ValueError` naming the subject.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
import PIL.Image
import torch
from PIL import ImageDraw

__all__ = [
    "COCO_NOSE",
    "ImageLike",
    "draw_pose",
    "face_anchors",
    "order_subjects",
    "render_condition",
    "to_condition_tensor",
]

logger = logging.getLogger(__name__)

ImageLike = PIL.Image.Image | np.ndarray | torch.Tensor
"""An image: PIL, an (H, W, 3) array (uint8 0..255 or float 0..1), or a (3, H, W) / (1, 3, H, W) tensor in [0, 1]."""

COCO_NOSE = 0
"""Index of the nose in COCO-17 keypoints (the face anchor of upstream)."""

_COCO_FACE = (0, 1, 2, 3, 4)  # nose, eyes, ears
# OpenPose-18 joint j is COCO-18 joint _OPENPOSE_FROM_COCO18[j], where COCO-18 is COCO-17 plus the neck at index 17.
_OPENPOSE_FROM_COCO18 = (0, 17, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3)
_LIMBS = (
    (2, 3), (2, 6), (3, 4), (4, 5), (6, 7), (7, 8), (2, 9), (9, 10), (10, 11),
    (2, 12), (12, 13), (13, 14), (2, 1), (1, 15), (15, 17), (1, 16), (16, 18),
)  # fmt: skip
_COLORS = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
    (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
    (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)  # fmt: skip


def _as_numpy(array: np.ndarray | torch.Tensor | Sequence, name: str) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        array = array.detach().float().cpu().numpy()
    out = np.asarray(array, dtype=np.float64)
    if not np.isfinite(out).all():
        raise ValueError(f"`{name}` contains non-finite values.")
    return out


def _check_keypoints(keypoints: np.ndarray | torch.Tensor) -> np.ndarray:
    """(P, 17, 2|3) -> (P, 17, 3) float64 with scores (1 when absent)."""
    kps = _as_numpy(keypoints, "keypoints")
    if kps.ndim != 3 or kps.shape[1] != 17 or kps.shape[2] not in (2, 3):
        raise ValueError(f"`keypoints` must be COCO-17 of shape (P, 17, 2) or (P, 17, 3), got {kps.shape}.")
    if kps.shape[2] == 2:
        kps = np.concatenate([kps, np.ones((*kps.shape[:2], 1))], axis=-1)
    return kps


def _ellipse_polygon(
    center: tuple[int, int], axes: tuple[int, int], angle: int, delta: int = 1
) -> list[tuple[float, float]]:
    """The points of ``cv2.ellipse2Poly(center, axes, angle, 0, 360, delta)`` (rotated ellipse outline)."""
    theta = np.deg2rad(np.arange(0, 361, delta))
    alpha = math.radians(angle)
    x = axes[0] * np.cos(theta)
    y = axes[1] * np.sin(theta)
    px = center[0] + x * math.cos(alpha) - y * math.sin(alpha)
    py = center[1] + x * math.sin(alpha) + y * math.cos(alpha)
    return list(zip(np.round(px).tolist(), np.round(py).tolist(), strict=True))


def draw_pose(
    keypoints: np.ndarray | torch.Tensor,
    height: int,
    width: int,
    score_threshold: float = 0.3,
    stick_width: int = 4,
    joint_radius: int = 4,
) -> torch.Tensor:
    """Draw COCO-17 poses as an OpenPose skeleton on black (upstream ``draw_openpose_from_mmpose``).

    Args:
        keypoints (`np.ndarray` or `torch.Tensor`): (P, 17, 3) ``x, y, score`` in pixels (or (P, 17, 2), all scores 1),
            RTMPose / mmpose COCO-17 order.
        height (`int`): image height.
        width (`int`): image width.
        score_threshold (`float`, defaults to 0.3): joints at or below it are not drawn (upstream ``kpt_thr``).
        stick_width (`int`, defaults to 4): half-width of a limb ellipse in pixels.
        joint_radius (`int`, defaults to 4): radius of a joint disc in pixels.

    Returns:
        `torch.Tensor`: float32 (3, height, width) in [0, 1], RGB.
    """
    if height < 1 or width < 1:
        raise ValueError(f"`height` and `width` must be positive, got {height} x {width}.")
    kps = _check_keypoints(keypoints)
    neck = (kps[:, 5] + kps[:, 6]) / 2
    neck[:, 2] = np.minimum(kps[:, 5, 2], kps[:, 6, 2])
    openpose = np.concatenate([kps, neck[:, None]], axis=1)[:, list(_OPENPOSE_FROM_COCO18)]

    joints = PIL.Image.new("RGB", (width, height))
    joint_draw = ImageDraw.Draw(joints)
    for person in openpose:
        visible = person[:, 2] > score_threshold
        valid = np.zeros(len(person), dtype=bool)
        for a, b in _LIMBS:
            if visible[a - 1] and visible[b - 1]:
                valid[a - 1] = valid[b - 1] = True
        for j, (x, y, _) in enumerate(person):
            if visible[j] and valid[j]:
                cx, cy = int(x), int(y)
                box = (cx - joint_radius, cy - joint_radius, cx + joint_radius, cy + joint_radius)
                joint_draw.ellipse(box, fill=_COLORS[j])
    limbs = joints.copy()
    limb_draw = ImageDraw.Draw(limbs)
    for person in openpose:
        for index, (a, b) in enumerate(_LIMBS):
            (x0, y0, s0), (x1, y1, s1) = person[a - 1], person[b - 1]
            if s0 <= score_threshold or s1 <= score_threshold:
                continue
            length = math.hypot(x0 - x1, y0 - y1)
            angle = int(math.degrees(math.atan2(y0 - y1, x0 - x1)))
            center = (int((x0 + x1) / 2), int((y0 + y1) / 2))
            limb_draw.polygon(_ellipse_polygon(center, (int(length / 2), stick_width), angle), fill=_COLORS[index])
    blended = 0.4 * np.asarray(joints, dtype=np.float64) + 0.6 * np.asarray(limbs, dtype=np.float64)
    image = np.clip(np.round(blended), 0, 255).astype(np.float32) / 255.0
    return torch.from_numpy(image).permute(2, 0, 1).contiguous()


def face_anchors(points: np.ndarray | torch.Tensor, anchor: str = "nose") -> torch.Tensor:
    """Where each face's patch goes, from COCO-17 keypoints, 5-point face landmarks or face boxes.

    Args:
        points (`np.ndarray` or `torch.Tensor`): one of
            - (P, 17, 2|3) COCO-17 body keypoints: ``"nose"`` is keypoint 0 (upstream); ``"bbox_center"`` the centre
              of the box around the face keypoints (nose, eyes, ears);
            - (F, 5, 2) face landmarks (eyes, nose tip, mouth corners, `genblocks.faces.Face.landmarks5`): ``"nose"``
              is point 2; ``"bbox_center"`` the centre of their box;
            - (F, 4) face boxes ``(x0, y0, x1, y1)``: only ``"bbox_center"`` (a box has no nose).
        anchor (`str`, defaults to `"nose"`): ``"nose"`` or ``"bbox_center"`` (config ``face_anchor``).

    Returns:
        `torch.Tensor`: float32 (F, 2), ``(x, y)`` pixels.
    """
    if anchor not in ("nose", "bbox_center"):
        raise ValueError(f"`anchor` must be 'nose' or 'bbox_center', got {anchor!r}.")
    array = _as_numpy(points, "points")
    if array.ndim == 3 and array.shape[1] == 17 and array.shape[2] in (2, 3):
        xy = array[..., :2]
        if anchor == "nose":
            out = xy[:, COCO_NOSE]
        else:
            face = xy[:, list(_COCO_FACE)]
            out = (face.min(1) + face.max(1)) / 2
    elif array.ndim == 3 and array.shape[1:] == (5, 2):
        out = array[:, 2] if anchor == "nose" else (array.min(1) + array.max(1)) / 2
    elif array.ndim == 2 and array.shape[1] == 4:
        if anchor == "nose":
            raise ValueError("face boxes (F, 4) have no nose; use anchor='bbox_center' or pass keypoints/landmarks.")
        out = np.stack([(array[:, 0] + array[:, 2]) / 2, (array[:, 1] + array[:, 3]) / 2], axis=1)
    else:
        raise ValueError(
            f"`points` must be COCO-17 keypoints (P, 17, 2|3), face landmarks (F, 5, 2) or boxes (F, 4), got "
            f"{array.shape}."
        )
    return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32))


def order_subjects(locations: np.ndarray | torch.Tensor) -> torch.Tensor:
    """The permutation that sorts face positions left to right (stable in x, as upstream's ``sorted(key=x)``).

    Args:
        locations (`np.ndarray` or `torch.Tensor`): (F, 2) ``(x, y)`` pixels.

    Returns:
        `torch.Tensor`: int64 (F,); ``locations[order]`` is sorted by x.
    """
    array = _as_numpy(locations, "locations")
    if array.ndim != 2 or array.shape[1] != 2:
        raise ValueError(f"`locations` must have shape (F, 2), got {array.shape}.")
    return torch.from_numpy(np.argsort(array[:, 0], kind="stable").astype(np.int64))


def to_condition_tensor(image: ImageLike, name: str = "pose_image") -> torch.Tensor:
    """An image as a float32 (3, H, W) tensor in [0, 1] (uint8 inputs are divided by 255, as upstream).

    Args:
        image (`ImageLike`): PIL image, (H, W, 3) array (uint8, or float in [0, 1]), or (3, H, W) / (1, 3, H, W)
            tensor.
        name (`str`, defaults to `"pose_image"`): how the input is named in errors.

    Returns:
        `torch.Tensor`: float32 (3, H, W).
    """
    if isinstance(image, PIL.Image.Image):
        image = np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"`{name}` as an array must be (H, W, 3), got {image.shape}.")
        scale = 255.0 if image.dtype == np.uint8 else 1.0
        return torch.from_numpy(image.astype(np.float32) / scale).permute(2, 0, 1).contiguous()
    if isinstance(image, torch.Tensor):
        if image.ndim == 4 and image.shape[0] == 1:
            image = image[0]
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"`{name}` as a tensor must be (3, H, W) or (1, 3, H, W), got {tuple(image.shape)}.")
        return image.detach().float() / (255.0 if image.dtype == torch.uint8 else 1.0)
    raise ValueError(f"`{name}` must be a PIL image, a numpy array or a torch tensor, got {type(image).__name__}.")


def render_condition(
    pose: torch.Tensor | None,
    patches: torch.Tensor,
    locations: torch.Tensor | np.ndarray,
    height: int | None = None,
    width: int | None = None,
    clamp: bool = False,
) -> torch.Tensor:
    """Add ID patches centred at the face positions to the pose image (upstream ``generate``, spec §3 steps 1–4).

    Each patch covers ``[round(x - p/2), round(x - p/2) + p) × [round(y - p/2), round(y - p/2) + p)`` on a canvas padded
    by ``p/2``; overlapping patches add up; a patch whose centre lies outside the image is skipped with a warning.
    Differentiable in ``patches`` (the training path uses it).

    Args:
        pose (`torch.Tensor`, *optional*): (3, H, W) pose image in [0, 1]; `None` for a black image of
            ``height`` × ``width``.
        patches (`torch.Tensor`): (F, 3, p, p) ID patches, subject order.
        locations (`torch.Tensor` or `np.ndarray`): (F, 2) ``(x, y)`` pixel centres, same order.
        height (`int`, *optional*): image height when ``pose`` is `None` (must match it otherwise).
        width (`int`, *optional*): image width when ``pose`` is `None` (must match it otherwise).
        clamp (`bool`, defaults to `False`): clamp the sum to [0, 1] (config ``cond_clamp``; upstream does not).

    Returns:
        `torch.Tensor`: (3, H, W) in ``patches``' dtype and device.
    """
    if patches.ndim != 4 or patches.shape[1] != 3 or patches.shape[2] != patches.shape[3]:
        raise ValueError(f"`patches` must be (F, 3, p, p), got {tuple(patches.shape)}.")
    size = patches.shape[-1]
    if size % 2:
        raise ValueError(f"the patch side must be even, got {size}.")
    locs = torch.as_tensor(_as_numpy(locations, "locations"), dtype=torch.float64)
    if locs.ndim != 2 or locs.shape != (patches.shape[0], 2):
        raise ValueError(
            f"`locations` must be (F, 2) with F={patches.shape[0]} (one per patch), got {tuple(locs.shape)}."
        )
    if pose is not None:
        if pose.ndim != 3 or pose.shape[0] != 3:
            raise ValueError(f"`pose` must be (3, H, W), got {tuple(pose.shape)}.")
        if (height is not None and height != pose.shape[1]) or (width is not None and width != pose.shape[2]):
            raise ValueError(f"`pose` is {tuple(pose.shape[1:])} but height x width = {height} x {width}.")
        height, width = pose.shape[1], pose.shape[2]
    elif height is None or width is None:
        raise ValueError("`height` and `width` are required when `pose` is None.")
    pad = size // 2
    canvas = torch.zeros(3, height + 2 * pad, width + 2 * pad, dtype=patches.dtype, device=patches.device)
    corners = torch.round(locs - pad).long()  # (x_min, y_min) of each patch in image pixels (upstream ``xymin``)
    for index, ((x0, y0), (x, y)) in enumerate(zip(corners.tolist(), locs.tolist(), strict=True)):
        if x0 + pad < 0 or x0 + pad >= width or y0 + pad < 0 or y0 + pad >= height:
            logger.warning(
                "Skipping the ID patch of subject %d: its centre (%.1f, %.1f) is outside the %dx%d image.",
                index,
                x,
                y,
                width,
                height,
            )
            continue
        canvas[:, y0 + pad : y0 + pad + size, x0 + pad : x0 + pad + size] += patches[index]
    condition = canvas[:, pad : pad + height, pad : pad + width]
    if pose is not None:
        condition = condition + pose.to(device=patches.device, dtype=patches.dtype)
    return condition.clamp(0.0, 1.0) if clamp else condition
