"""Whole-body keypoints for humananim: one layout, its JSON file, gap filling, smoothing, retargeting, hint rendering and
the motion-blur channels (humananim spec §3 "Pose ControlNet", "Motion-blur condition"; issue 19 item 2).

**Layout.** A sequence is a :class:`Keypoints` holding ``points`` of shape (F, 128, 3): ``(x, y, confidence)`` per
keypoint in pixels of a ``width`` x ``height`` frame (pixel ``(i, j)`` has its centre at ``x = j, y = i``);
confidence 0 marks a keypoint that is absent. The 128 rows are, in order:

- ``body``: 18 points in OpenPose COCO-18 order (nose, neck, right shoulder/elbow/wrist, left shoulder/elbow/wrist,
  right hip/knee/ankle, left hip/knee/ankle, right eye, left eye, right ear, left ear), the layout DWPose renders;
- ``left_hand`` and ``right_hand``: 21 points each (wrist, then four joints per finger from thumb to little finger),
  the OpenPose / COCO-WholeBody hand layout;
- ``face``: 68 points in the iBUG-68 layout (jaw 0-16, brows 17-26, nose 27-35, eyes 36-47, mouth 48-67), the layout
  of DWPose's face and of dlib's landmarks.

"Left" and "right" are the person's own sides. The JSON file (:func:`save_keypoints`, :func:`load_keypoints`) is::

    {"format": "humananim-keypoints", "version": 1, "width": W, "height": H, "fps": 25.0,
     "frames": [{"body": [[x, y, c] x 18], "left_hand": [[x, y, c] x 21],
                 "right_hand": [[x, y, c] x 21], "face": [[x, y, c] x 68]}, ...]}

:func:`load_keypoints` also reads OpenPose / DWPose JSON (``{"people": [{"pose_keypoints_2d": [...], ...}]}``, one
file per frame or a folder of them; BODY_25 bodies are reduced to COCO-18 and 70-point faces to 68).

**Motion blur.** :func:`blur_channels` gives three channels per frame, rasterised on each hand's box (the hint
contract of :mod:`humananim.config`): the hand's displacement to the previous frame as ``dx / W`` and ``dy / H`` (zero
for a still hand, growing with speed) and a sharpness in (0, 1] (the variance of the Laplacian of the hand crop mapped
by ``v / (v + sharpness_ref)``, floored at ``SHARPNESS_FLOOR`` so the channel also marks the hand regions; 1 is
"sharp", the value used at inference). The encoding is our design: the paper's is not public ([unverified], spec §3).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from genblocks.errors import InputError

__all__ = [
    "BODY_LIMBS",
    "HAND_EDGES",
    "NUM_POINTS",
    "PARTS",
    "SHARPNESS_FLOOR",
    "GapReport",
    "Keypoints",
    "blur_channels",
    "body_template",
    "empty_points",
    "fill_gaps",
    "laplacian_variance",
    "load_keypoints",
    "part_boxes",
    "pose_hint",
    "prepare_driving",
    "render_pose",
    "retarget",
    "save_keypoints",
    "scripted_dance",
    "smooth_keypoints",
    "stack_sequences",
]

logger = logging.getLogger(__name__)

PARTS: dict[str, slice] = {
    "body": slice(0, 18),
    "left_hand": slice(18, 39),
    "right_hand": slice(39, 60),
    "face": slice(60, 128),
}
"""Rows of each part in the (F, 128, 3) array."""

NUM_POINTS = 128
SHARPNESS_FLOOR = 0.01
"""The smallest sharpness written on a hand region (so the sharpness channel is > 0 exactly on the hands)."""
_PART_SIZES = {name: part.stop - part.start for name, part in PARTS.items()}
FORMAT = "humananim-keypoints"

BODY_LIMBS: tuple[tuple[int, int], ...] = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10),
    (1, 11), (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
)  # fmt: skip
"""The 17 OpenPose limbs as (parent, child) body indices; every parent appears as a child (or is the neck) before its
own children, so the list is a breadth-first walk of the tree rooted at the neck."""

HAND_EDGES: tuple[tuple[int, int], ...] = tuple(
    (0 if joint == 0 else 1 + 4 * finger + joint - 1, 1 + 4 * finger + joint)
    for finger in range(5)
    for joint in range(4)
)
"""The 20 hand bones (parent, child) of the 21-point hand."""

_BODY_COLOURS = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
    (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
    (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)  # fmt: skip
"""OpenPose's 18 joint colours (RGB); limb ``k`` takes colour ``k``."""

_BODY25_TO_COCO18 = (0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18)
_WRIST = {"left_hand": 7, "right_hand": 4}
_ELBOW = {"left_hand": 6, "right_hand": 3}
_NOSE, _NECK = 0, 1


@dataclass
class Keypoints:
    """A whole-body keypoint sequence in the module's layout.

    Args:
        points: (F, 128, 3) float32 ``(x, y, confidence)`` in pixels; confidence 0 marks an absent keypoint.
        width: Frame width in pixels.
        height: Frame height in pixels.
        fps: Frame rate of the source video (informative).
    """

    points: np.ndarray
    width: int
    height: int
    fps: float = 25.0

    def __post_init__(self) -> None:
        points = np.asarray(self.points, dtype=np.float32)
        if points.ndim != 3 or points.shape[1:] != (NUM_POINTS, 3):
            raise InputError(f"keypoints: expected an array of shape (F, {NUM_POINTS}, 3), got {points.shape}")
        if self.width <= 0 or self.height <= 0:
            raise InputError(f"keypoints: expected a positive frame size, got {self.width}x{self.height}")
        points = points.copy()
        points[~np.isfinite(points).all(-1)] = 0.0
        self.points = points

    def __len__(self) -> int:
        return int(self.points.shape[0])

    def part(self, name: str) -> np.ndarray:
        """The (F, n, 3) rows of one part: ``body``, ``left_hand``, ``right_hand`` or ``face``."""
        return self.points[:, PARTS[name]]

    def valid(self, min_confidence: float = 0.3) -> np.ndarray:
        """(F, 128) bool: keypoints whose confidence reaches ``min_confidence``."""
        return self.points[..., 2] >= min_confidence

    def replace(self, points: np.ndarray) -> Keypoints:
        """A sequence with new points and the same frame size and rate."""
        return Keypoints(points, self.width, self.height, self.fps)

    def resized(self, width: int, height: int) -> Keypoints:
        """The same keypoints for frames resized to ``width`` x ``height`` (pixel centres map onto pixel centres)."""
        points = self.points.copy()
        points[..., 0] = (points[..., 0] + 0.5) * width / self.width - 0.5
        points[..., 1] = (points[..., 1] + 0.5) * height / self.height - 0.5
        return Keypoints(points, width, height, self.fps)

    def to_json(self) -> dict[str, Any]:
        """The documented JSON layout (module docstring)."""
        frames = []
        for frame in self.points:
            frames.append({name: np.round(frame[part], 3).tolist() for name, part in PARTS.items()})
        return {
            "format": FORMAT,
            "version": 1,
            "width": self.width,
            "height": self.height,
            "fps": self.fps,
            "frames": frames,
        }


def empty_points(num_frames: int) -> np.ndarray:
    """(F, 128, 3) zeros: F frames where nobody is found."""
    return np.zeros((num_frames, NUM_POINTS, 3), dtype=np.float32)


# ----------------------------------------------------------------------------------------------------- files
def save_keypoints(keypoints: Keypoints, path: str | Path) -> Path:
    """Write ``keypoints`` as the module's JSON layout; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(keypoints.to_json()))
    return path


def _triples(values: Any, count: int, name: str, source: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float32)
    if array.ndim == 1:
        if array.size % 3:
            raise InputError(f"{source}: {name} has {array.size} numbers, expected a multiple of 3 (x, y, c)")
        array = array.reshape(-1, 3)
    if array.ndim != 2 or array.shape[1] != 3 or array.shape[0] != count:
        raise InputError(f"{source}: {name} must hold {count} (x, y, c) triples, got shape {array.shape}")
    return array


def _ours_from_json(data: dict[str, Any], source: str) -> Keypoints:
    if data.get("version") != 1:
        raise InputError(f"{source}: unsupported {FORMAT} version {data.get('version')!r}, expected 1")
    frames = data.get("frames")
    if not isinstance(frames, list) or not frames:
        raise InputError(f"{source}: expected a non-empty 'frames' list")
    points = empty_points(len(frames))
    for index, frame in enumerate(frames):
        if not isinstance(frame, dict) or set(frame) != set(PARTS):
            keys = sorted(frame) if isinstance(frame, dict) else type(frame).__name__
            raise InputError(f"{source}: frame {index} must have exactly the parts {sorted(PARTS)}, got {keys}")
        for name, part in PARTS.items():
            points[index, part] = _triples(frame[name], _PART_SIZES[name], f"frame {index} {name}", source)
    return Keypoints(points, int(data["width"]), int(data["height"]), float(data.get("fps", 25.0)))


def _person_area(points: np.ndarray) -> float:
    seen = points[points[:, 2] > 0]
    if len(seen) < 2:
        return 0.0
    extent = seen[:, :2].max(0) - seen[:, :2].min(0)
    return float(extent[0] * extent[1])


def _openpose_person(person: dict[str, Any], source: str) -> np.ndarray:
    points = np.zeros((NUM_POINTS, 3), dtype=np.float32)
    body = np.asarray(person.get("pose_keypoints_2d", []), dtype=np.float32).reshape(-1, 3)
    if len(body) == 25:
        body = body[list(_BODY25_TO_COCO18)]
    if len(body) != 18:
        raise InputError(f"{source}: pose_keypoints_2d has {len(body)} points, expected 18 (COCO) or 25 (BODY_25)")
    points[PARTS["body"]] = body
    for name, key in (("left_hand", "hand_left_keypoints_2d"), ("right_hand", "hand_right_keypoints_2d")):
        if person.get(key):
            points[PARTS[name]] = _triples(person[key], 21, key, source)
    if person.get("face_keypoints_2d"):
        face = np.asarray(person["face_keypoints_2d"], dtype=np.float32).reshape(-1, 3)
        if len(face) not in (68, 70):
            raise InputError(f"{source}: face_keypoints_2d has {len(face)} points, expected 68 or 70")
        points[PARTS["face"]] = face[:68]  # OpenPose's 69th and 70th points are the pupils
    return points


def _openpose_frame(data: dict[str, Any], source: str) -> tuple[np.ndarray, tuple[int, int] | None]:
    people = data.get("people")
    if not isinstance(people, list):
        raise InputError(f"{source}: expected an OpenPose/DWPose JSON with a 'people' list")
    size = None
    if "canvas_width" in data and "canvas_height" in data:
        size = (int(data["canvas_width"]), int(data["canvas_height"]))
    candidates = [_openpose_person(person, source) for person in people]
    if not candidates:
        return np.zeros((NUM_POINTS, 3), dtype=np.float32), size
    points = max(candidates, key=_person_area)  # the largest person is the one animated
    if size is not None:
        seen = points[points[:, 2] > 0, :2]
        if len(seen) and float(np.abs(seen).max()) <= 1.0:  # controlnet_aux writes coordinates in [0, 1]
            points[:, 0] *= size[0]
            points[:, 1] *= size[1]
    return points, size


def load_keypoints(path: str | Path, size: tuple[int, int] | None = None, fps: float = 25.0) -> Keypoints:
    """Read keypoints: the module's JSON file, an OpenPose/DWPose JSON file, or a folder of per-frame OpenPose JSONs.

    Args:
        path: A ``.json`` file or a folder of them (read in name order; a folder holding ``keypoints.json`` reads that).
        size: ``(width, height)`` of the frames for OpenPose files that carry no ``canvas_width/height``.
        fps: Frame rate to record for OpenPose files.

    Returns:
        The sequence; OpenPose frames with several people keep the largest, frames with nobody are all zero.

    Raises:
        InputError: a missing or unreadable file, or points that do not fit the layout (named with the frame).
    """
    path = Path(path)
    if path.is_dir() and (path / "keypoints.json").is_file():
        path = path / "keypoints.json"
    if path.is_dir():
        files = sorted(path.glob("*.json"))
        if not files:
            raise InputError(f"--pose {path}: the folder holds no .json keypoint files")
    elif path.is_file():
        files = [path]
    else:
        raise InputError(f"--pose {path}: no such keypoint file or folder")
    frames: list[np.ndarray] = []
    sizes: set[tuple[int, int]] = set()
    for file in files:
        try:
            data = json.loads(file.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise InputError(f"{file}: not a readable JSON file ({error})") from error
        if isinstance(data, dict) and data.get("format") == FORMAT:
            if len(files) > 1:
                raise InputError(f"{file}: a {FORMAT} file holds a whole sequence; pass it alone, not in a folder")
            return _ours_from_json(data, str(file))
        if not isinstance(data, dict):
            raise InputError(f"{file}: expected a JSON object, got {type(data).__name__}")
        points, canvas = _openpose_frame(data, str(file))
        frames.append(points)
        if canvas is not None:
            sizes.add(canvas)
    if len(sizes) > 1:
        raise InputError(f"{path}: the frames have different canvas sizes {sorted(sizes)}")
    frame_size = next(iter(sizes)) if sizes else size
    if frame_size is None:
        raise InputError(f"{path}: OpenPose JSON without canvas_width/height; give the frame size")
    return Keypoints(np.stack(frames), frame_size[0], frame_size[1], fps)


# ----------------------------------------------------------------------------------------------------- cleaning
@dataclass(frozen=True)
class GapReport:
    """What :func:`fill_gaps` filled.

    Args:
        frames: Number of frames.
        empty_frames: Indices of frames where nobody was found (all of their points were interpolated).
        filled_points: Number of (frame, keypoint) entries filled in, the empty frames' included.
    """

    frames: int
    empty_frames: tuple[int, ...]
    filled_points: int

    def summary(self) -> str:
        """One line for the log."""
        return (
            f"nobody found in {len(self.empty_frames)} of {self.frames} frames (interpolated); "
            f"{self.filled_points} keypoints filled in"
        )


def fill_gaps(keypoints: Keypoints, min_confidence: float = 0.3, max_gap: int = 8) -> tuple[Keypoints, GapReport]:
    """Interpolate keypoints over frames where they are missing.

    A frame whose body has no keypoint at ``min_confidence`` counts as "nobody found": every keypoint of it is filled
    from the neighbouring frames where that keypoint is present (linearly between the two, held constant before the
    first and after the last). In frames where the person is found, a keypoint missing for at most ``max_gap``
    consecutive frames between two present ones is filled too (a longer absence, say a hand out of view, stays
    absent). A filled keypoint takes the smaller confidence of its two neighbours.

    Args:
        keypoints: (F, 128, 3) sequence.
        min_confidence: Confidence at which a keypoint counts as present.
        max_gap: Longest run of missing frames filled inside frames where the person is found.

    Returns:
        The filled sequence and a :class:`GapReport` (also logged at INFO).

    Raises:
        InputError: nobody is found in any frame.
    """
    points = keypoints.points.copy()
    present = points[..., 2] >= min_confidence
    person = np.asarray(present[:, PARTS["body"]].any(axis=1))
    if not person.any():
        raise InputError(f"keypoints: nobody found in any of the {len(points)} frames")
    frames = np.arange(len(points))
    filled = 0
    for k in range(NUM_POINTS):
        have = np.flatnonzero(present[:, k])
        if len(have) == 0:
            continue
        missing = np.flatnonzero(~present[:, k])
        if len(missing) == 0:
            continue
        after_index = np.searchsorted(have, missing)
        before = have[np.clip(after_index - 1, 0, len(have) - 1)]
        after = have[np.clip(after_index, 0, len(have) - 1)]
        inside = (after_index > 0) & (after_index < len(have))
        gap = np.where(inside, after - before - 1, np.iinfo(np.int64).max)
        take = ~person[missing] | (inside & (gap <= max_gap))
        if not take.any():
            continue
        rows, lo, hi = missing[take], before[take], after[take]
        span = np.maximum(hi - lo, 1)
        weight = np.where(hi == lo, 0.0, (frames[rows] - lo) / span)[:, None]
        weight = np.clip(weight, 0.0, 1.0)
        points[rows, k, :2] = (1 - weight) * points[lo, k, :2] + weight * points[hi, k, :2]
        points[rows, k, 2] = np.minimum(points[lo, k, 2], points[hi, k, 2])
        filled += len(rows)
    report = GapReport(len(points), tuple(int(i) for i in np.flatnonzero(~person)), filled)
    if report.empty_frames or filled:
        logger.info("keypoints: %s", report.summary())
    return keypoints.replace(points), report


def smooth_keypoints(keypoints: Keypoints, window: int = 5, min_confidence: float = 0.3) -> Keypoints:
    """Temporal Gaussian smoothing of each keypoint over the frames where it is present.

    Each present keypoint becomes the confidence-weighted mean of its present neighbours within ``window // 2``
    frames, with Gaussian weights of standard deviation ``window / 4`` frames; absent keypoints stay absent and
    confidences are kept. A constant or uniformly moving keypoint away from the ends is unchanged; jitter shrinks.

    Args:
        keypoints: (F, 128, 3) sequence.
        window: Frames of the smoothing window (``keypoints.smooth_window``); 1 returns the input.
        min_confidence: Confidence at which a keypoint counts as present.
    """
    if window < 1:
        raise InputError(f"keypoints.smooth_window: expected a positive number of frames, got {window}")
    if window < 3 or len(keypoints) < 2:
        return keypoints
    sigma = window / 4
    points = keypoints.points.copy()
    present = points[..., 2] >= min_confidence
    radius = window // 2
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-(offsets**2) / (2 * sigma**2))
    count = len(points)
    weight_sum = np.zeros(points.shape[:2])
    value_sum = np.zeros((*points.shape[:2], 2))
    for offset, k in zip(offsets.tolist(), kernel.tolist(), strict=True):
        lo, hi = max(0, -offset), min(count, count - offset)
        w = k * present[lo + offset : hi + offset] * points[lo + offset : hi + offset, :, 2]
        weight_sum[lo:hi] += w
        value_sum[lo:hi] += w[..., None] * points[lo + offset : hi + offset, :, :2]
    smoothed = value_sum / np.maximum(weight_sum, 1e-12)[..., None]
    points[..., :2] = np.where(present[..., None], smoothed, points[..., :2])
    return keypoints.replace(points)


# ----------------------------------------------------------------------------------------------------- retargeting
def _median_length(points: np.ndarray, a: int, b: int, min_confidence: float) -> float:
    ok = (points[:, a, 2] >= min_confidence) & (points[:, b, 2] >= min_confidence)
    if not ok.any():
        return float("nan")
    return float(np.median(np.linalg.norm(points[ok, a, :2] - points[ok, b, :2], axis=-1)))


def _part_scale(points: np.ndarray, name: str, min_confidence: float) -> float:
    """Median over frames of the RMS distance of a part's present points to their centroid (NaN when absent)."""
    part = points[:, PARTS[name]]
    sizes = []
    for frame in part:
        seen = frame[frame[:, 2] >= min_confidence, :2]
        if len(seen) >= 3:
            sizes.append(float(np.sqrt(((seen - seen.mean(0)) ** 2).sum(-1).mean())))
    return float(np.median(sizes)) if sizes else float("nan")


def retarget(driving: Keypoints, reference: Keypoints, min_confidence: float = 0.3) -> Keypoints:
    """Move the driving skeleton onto the reference person's bone lengths and placement.

    Body: the neck is placed on the reference's neck (its motion relative to the driving's first frame is kept,
    scaled by the body-size ratio); walking :data:`BODY_LIMBS` from the neck, each child joint keeps the driving
    limb's direction with the reference's length (a limb absent in the reference keeps the driving length times the
    median ratio of the limbs both have). Hands are scaled about their wrist by the hand-size ratio (the forearm ratio
    when the reference hand is absent) and moved with the body wrist; the face likewise about the nose.

    Args:
        driving: (F, 128, 3) driving sequence (already in the output frame size).
        reference: The reference person's keypoints; frame 0 is used.
        min_confidence: Confidence at which a keypoint counts as present.

    Returns:
        The retargeted sequence in the reference's frame size; absent keypoints stay absent.

    Raises:
        InputError: the reference has no neck or fewer than one limb present (no person in the reference image).
    """
    ref = reference.points[:1]
    drive = driving.points
    ref_ok = ref[0, :, 2] >= min_confidence
    if not ref_ok[_NECK] or not any(ref_ok[a] and ref_ok[b] for a, b in BODY_LIMBS):
        raise InputError("reference image: no person found (its skeleton needs a neck and at least one limb)")
    ref_lengths = np.array([_median_length(ref, a, b, min_confidence) for a, b in BODY_LIMBS])
    drive_lengths = np.array([_median_length(drive, a, b, min_confidence) for a, b in BODY_LIMBS])
    both = np.isfinite(ref_lengths) & np.isfinite(drive_lengths) & (drive_lengths > 0)
    ratio = float(np.median(ref_lengths[both] / drive_lengths[both])) if both.any() else 1.0
    lengths = np.where(np.isfinite(ref_lengths), ref_lengths, drive_lengths * ratio)

    out = np.zeros_like(drive)
    ok = drive[..., 2] >= min_confidence
    has_neck = np.flatnonzero(ok[:, _NECK])
    anchor = drive[has_neck[0], _NECK, :2] if len(has_neck) else drive[0, _NECK, :2]
    for t in range(len(drive)):
        placed = np.zeros(18, dtype=bool)
        if ok[t, _NECK]:
            out[t, _NECK, :2] = ref[0, _NECK, :2] + (drive[t, _NECK, :2] - anchor) * ratio
            out[t, _NECK, 2] = drive[t, _NECK, 2]
            placed[_NECK] = True
        for limb, (a, b) in enumerate(BODY_LIMBS):
            if not ok[t, b]:
                continue
            if placed[a] and ok[t, a]:
                direction = drive[t, b, :2] - drive[t, a, :2]
                norm = float(np.linalg.norm(direction))
                unit = direction / norm if norm > 0 else np.zeros(2, dtype=np.float32)
                out[t, b, :2] = out[t, a, :2] + unit * lengths[limb]
            else:  # parent missing in this frame: a similarity map of the driving point
                out[t, b, :2] = ref[0, _NECK, :2] + (drive[t, b, :2] - anchor) * ratio
            out[t, b, 2] = drive[t, b, 2]
            placed[b] = True

    for name in ("left_hand", "right_hand", "face"):
        part = PARTS[name]
        pivot = _NOSE if name == "face" else _WRIST[name]
        scale = _part_scale(ref, name, min_confidence) / _part_scale(drive, name, min_confidence)
        if not np.isfinite(scale):
            if name == "face":
                scale = lengths[BODY_LIMBS.index((_NECK, _NOSE))] / drive_lengths[BODY_LIMBS.index((_NECK, _NOSE))]
            else:
                limb = BODY_LIMBS.index((_ELBOW[name], _WRIST[name]))
                scale = lengths[limb] / drive_lengths[limb]
        if not np.isfinite(scale):
            scale = ratio
        for t in range(len(drive)):
            seen = ok[t, part]
            if not seen.any():
                continue
            if ok[t, pivot]:
                origin, target, factor = drive[t, pivot, :2], out[t, pivot, :2], scale
            else:  # the pivot joint is missing in this frame: the body's similarity map
                origin, target, factor = anchor, ref[0, _NECK, :2], ratio
            out[t, part, :2] = np.where(seen[:, None], target + (drive[t, part, :2] - origin) * factor, 0.0)
            out[t, part, 2] = np.where(seen, drive[t, part, 2], 0.0)
    return Keypoints(out, reference.width, reference.height, driving.fps)


# ----------------------------------------------------------------------------------------------------- boxes and hints
def part_boxes(
    keypoints: Keypoints, name: str, margin: float = 0.25, min_confidence: float = 0.3, min_size: float = 4.0
) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame boxes around one part's present keypoints.

    Args:
        keypoints: (F, 128, 3) sequence.
        name: ``face``, ``left_hand``, ``right_hand`` or ``body``.
        margin: Padding on each side as a fraction of the box's longer side.
        min_confidence: Confidence at which a keypoint counts as present.
        min_size: Smallest box side in pixels (a box around one point is a square of this side).

    Returns:
        ``boxes`` (F, 4) float32 ``(x0, y0, x1, y1)`` in pixels, clipped to the frame, and ``valid`` (F,) bool (False
        where the part has no present keypoint; those boxes are zero).
    """
    if name not in PARTS:
        raise InputError(f"part: expected one of {sorted(PARTS)}, got {name!r}")
    part = keypoints.part(name)
    boxes = np.zeros((len(part), 4), dtype=np.float32)
    valid = np.zeros(len(part), dtype=bool)
    for t, frame in enumerate(part):
        seen = frame[frame[:, 2] >= min_confidence, :2]
        if not len(seen):
            continue
        lo, hi = seen.min(0), seen.max(0)
        centre, side = (lo + hi) / 2, max(float((hi - lo).max()), min_size)
        half = (hi - lo) / 2 + side * margin
        half = np.maximum(half, min_size / 2)
        lo, hi = centre - half, centre + half
        boxes[t] = [
            max(lo[0], 0.0),
            max(lo[1], 0.0),
            min(hi[0], keypoints.width - 1.0),
            min(hi[1], keypoints.height - 1.0),
        ]
        valid[t] = boxes[t, 2] > boxes[t, 0] and boxes[t, 3] > boxes[t, 1]
    return boxes, valid


def _hsv_colour(hue: float) -> tuple[int, int, int]:
    h = hue * 6.0
    i = int(h) % 6
    f = h - int(h)
    values = [(1, f, 0), (1 - f, 1, 0), (0, 1, f), (0, 1 - f, 1), (f, 0, 1), (1, 0, 1 - f)][i]
    return tuple(round(255 * v) for v in values)  # type: ignore[return-value]


def render_pose(
    keypoints: Keypoints,
    min_confidence: float = 0.3,
    draw_hands: bool = True,
    draw_face: bool = True,
    line_width: int | None = None,
) -> np.ndarray:
    """Rasterise the DWPose-style skeleton hint: body limbs and joints in OpenPose colours, hand bones in a rainbow with
    blue joints, face points in white, on black.

    Args:
        keypoints: (F, 128, 3) sequence.
        min_confidence: Keypoints below this are not drawn (nor their limbs).
        draw_hands: Draw both hands.
        draw_face: Draw the face points.
        line_width: Body limb width in pixels; ``None`` scales 4 px per 512 px of the shorter side.

    Returns:
        (F, H, W, 3) uint8 RGB.
    """
    width, height = keypoints.width, keypoints.height
    stick = line_width if line_width is not None else max(1, round(4 * min(width, height) / 512))
    joint = max(1, stick)
    small = max(1, stick // 2)
    out = np.zeros((len(keypoints), height, width, 3), dtype=np.uint8)
    ok = keypoints.valid(min_confidence)
    for t, frame in enumerate(keypoints.points):
        canvas = Image.new("RGB", (width, height))
        draw = ImageDraw.Draw(canvas)
        for limb, (a, b) in enumerate(BODY_LIMBS):
            if ok[t, a] and ok[t, b]:
                colour = tuple(int(0.6 * c) for c in _BODY_COLOURS[limb])
                draw.line([tuple(frame[a, :2]), tuple(frame[b, :2])], fill=colour, width=stick)
        for k in range(18):
            if ok[t, k]:
                x, y = frame[k, :2]
                draw.ellipse([x - joint, y - joint, x + joint, y + joint], fill=_BODY_COLOURS[k])
        if draw_hands:
            for name in ("left_hand", "right_hand"):
                offset = PARTS[name].start
                for edge, (a, b) in enumerate(HAND_EDGES):
                    if ok[t, offset + a] and ok[t, offset + b]:
                        draw.line(
                            [tuple(frame[offset + a, :2]), tuple(frame[offset + b, :2])],
                            fill=_hsv_colour(edge / len(HAND_EDGES)),
                            width=small,
                        )
                for k in range(21):
                    if ok[t, offset + k]:
                        x, y = frame[offset + k, :2]
                        draw.ellipse([x - small, y - small, x + small, y + small], fill=(0, 0, 255))
        if draw_face:
            for k in range(PARTS["face"].start, PARTS["face"].stop):
                if ok[t, k]:
                    x, y = frame[k, :2]
                    draw.ellipse([x - small, y - small, x + small, y + small], fill=(255, 255, 255))
        out[t] = np.asarray(canvas)
    return out


def laplacian_variance(gray: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian of a 2-D grey image (values in 0..255); 0 for a crop under 3x3."""
    gray = np.asarray(gray, dtype=np.float64)
    if gray.ndim != 2 or min(gray.shape) < 3:
        return 0.0
    lap = gray[:-2, 1:-1] + gray[2:, 1:-1] + gray[1:-1, :-2] + gray[1:-1, 2:] - 4 * gray[1:-1, 1:-1]
    return float(lap.var())


def blur_channels(
    keypoints: Keypoints,
    frames: np.ndarray | None = None,
    motion_gain: float = 1.0,
    sharpness_ref: float = 100.0,
    margin: float = 0.25,
    min_confidence: float = 0.3,
    sharpness: float | None = None,
) -> np.ndarray:
    """The motion-blur condition: (dx, dy, sharpness) rasterised on each hand's box, zero elsewhere.

    dx, dy: the mean displacement from the previous frame of the hand's keypoints present in both (frame 0 takes
    frame 1's), as a fraction of the frame width / height, times ``motion_gain``, clipped to [-1, 1]: zero for a still
    hand and growing with its speed. Sharpness: ``max(v / (v + sharpness_ref), SHARPNESS_FLOOR)`` for ``v`` the
    variance of the Laplacian of the hand crop of the grey frame (the ground-truth frames in training), or the given
    constant (``sharpness=1.0``, "sharp", at inference; ``sampling.sharp_hands``).

    Args:
        keypoints: (F, 128, 3) sequence.
        frames: (F, H, W, 3) uint8 RGB frames of the same size, used for the sharpness; ``None`` needs ``sharpness``.
        motion_gain: Scale of the displacement channels (1: the config's ``dx / W``, ``dy / H``).
        sharpness_ref: Laplacian variance (grey 0..255) that maps to sharpness 0.5.
        margin: Hand box padding, see :func:`part_boxes`.
        min_confidence: Confidence at which a keypoint counts as present.
        sharpness: A constant sharpness in (0, 1] instead of measuring ``frames``.

    Returns:
        (F, 3, H, W) float32: dx and dy in [-1, 1], sharpness in (0, 1] on the hands, all three 0 elsewhere.
    """
    if frames is None and sharpness is None:
        raise InputError("blur_channels: give the frames (measured sharpness) or a constant sharpness")
    if sharpness is not None and not 0.0 < sharpness <= 1.0:
        raise InputError(f"blur sharpness: expected a value in (0, 1], got {sharpness}")
    count, width, height = len(keypoints), keypoints.width, keypoints.height
    gray = None
    if frames is not None:
        frames = np.asarray(frames)
        if frames.shape != (count, height, width, 3):
            raise InputError(
                f"frames: expected shape {(count, height, width, 3)} to match the keypoints, got {frames.shape}"
            )
        gray = frames.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    out = np.zeros((count, 3, height, width), dtype=np.float32)
    ok = keypoints.valid(min_confidence)
    for name in ("left_hand", "right_hand"):
        part = PARTS[name]
        boxes, valid = part_boxes(keypoints, name, margin, min_confidence)
        hand, hand_ok = keypoints.points[:, part, :2], ok[:, part]
        for t in range(count):
            if not valid[t]:
                continue
            before = t - 1 if t > 0 else 0
            after = t if t > 0 else min(1, count - 1)
            common = hand_ok[before] & hand_ok[after]
            motion = np.zeros(2, dtype=np.float32)
            if after > before and common.any():
                motion = (hand[after, common] - hand[before, common]).mean(0) / (after - before)
            x0, y0, x1, y1 = boxes[t]
            cols = slice(math.floor(x0), math.ceil(x1) + 1)
            rows = slice(math.floor(y0), math.ceil(y1) + 1)
            out[t, 0, rows, cols] = np.clip(motion[0] / width * motion_gain, -1.0, 1.0)
            out[t, 1, rows, cols] = np.clip(motion[1] / height * motion_gain, -1.0, 1.0)
            if sharpness is not None:
                out[t, 2, rows, cols] = sharpness
            else:
                assert gray is not None
                variance = laplacian_variance(gray[t, rows, cols])
                out[t, 2, rows, cols] = max(variance / (variance + sharpness_ref), SHARPNESS_FLOOR)
    return out


def pose_hint(
    keypoints: Keypoints,
    frames: np.ndarray | None = None,
    blur: bool = True,
    sharpness: float | None = None,
    min_confidence: float = 0.3,
    motion_gain: float = 1.0,
    sharpness_ref: float = 100.0,
) -> np.ndarray:
    """The ControlNet hint: the rendered skeleton in [0, 1] followed by the three blur channels.

    Args:
        keypoints: (F, 128, 3) sequence.
        frames: Ground-truth frames for the measured sharpness (training), see :func:`blur_channels`.
        blur: Append the blur channels (``conditioning_channels`` 6); ``False`` gives the 3-channel skeleton.
        sharpness: Constant sharpness (1.0 at inference); ``None`` measures ``frames``.
        min_confidence: Confidence at which a keypoint counts as present.
        motion_gain: See :func:`blur_channels`.
        sharpness_ref: See :func:`blur_channels`.

    Returns:
        (F, 6, H, W) float32 (or (F, 3, H, W) with ``blur=False``).
    """
    skeleton = render_pose(keypoints, min_confidence).transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    if not blur:
        return skeleton
    channels = blur_channels(
        keypoints,
        frames,
        motion_gain=motion_gain,
        sharpness_ref=sharpness_ref,
        min_confidence=min_confidence,
        sharpness=sharpness,
    )
    return np.concatenate([skeleton, channels], axis=1)


def body_template(face: np.ndarray, width: int, height: int) -> Keypoints:
    """A standing-person skeleton anchored on 68 face landmarks (the demo's fallback when no pose model is installed).

    The body is placed below the face in units of the face's height (chin to brow), with proportions of an adult
    (about 7.5 heads tall), arms hanging at the sides; hands are drawn as open fans at the wrists. Points outside the
    frame get confidence 0.

    Args:
        face: (68, 2) iBUG-68 landmarks ``(x, y)`` in pixels.
        width: Frame width.
        height: Frame height.

    Returns:
        A one-frame :class:`Keypoints`.
    """
    face = np.asarray(face, dtype=np.float32)
    if face.shape != (68, 2):
        raise InputError(f"face landmarks: expected shape (68, 2), got {face.shape}")
    chin, brow = face[8], face[17:27].mean(0)
    unit = float(np.linalg.norm(chin - brow))  # about one head height minus the forehead
    if unit <= 0:
        raise InputError("face landmarks: degenerate face (chin on the brows)")
    centre_x = float(face[:, 0].mean())
    nose = face[30]
    body = {
        0: nose,
        1: (centre_x, chin[1] + 0.5 * unit),
        2: (centre_x - 1.1 * unit, chin[1] + 0.7 * unit),
        3: (centre_x - 1.4 * unit, chin[1] + 2.1 * unit),
        4: (centre_x - 1.5 * unit, chin[1] + 3.4 * unit),
        5: (centre_x + 1.1 * unit, chin[1] + 0.7 * unit),
        6: (centre_x + 1.4 * unit, chin[1] + 2.1 * unit),
        7: (centre_x + 1.5 * unit, chin[1] + 3.4 * unit),
        8: (centre_x - 0.6 * unit, chin[1] + 3.6 * unit),
        9: (centre_x - 0.65 * unit, chin[1] + 5.4 * unit),
        10: (centre_x - 0.7 * unit, chin[1] + 7.2 * unit),
        11: (centre_x + 0.6 * unit, chin[1] + 3.6 * unit),
        12: (centre_x + 0.65 * unit, chin[1] + 5.4 * unit),
        13: (centre_x + 0.7 * unit, chin[1] + 7.2 * unit),
        14: face[36:42].mean(0),
        15: face[42:48].mean(0),
        16: face[0],
        17: face[16],
    }
    points = empty_points(1)
    for k, xy in body.items():
        points[0, k, :2] = xy
        points[0, k, 2] = 1.0
    points[0, PARTS["face"], :2] = face
    points[0, PARTS["face"], 2] = 1.0
    for name, wrist, sign in (("left_hand", 7, 1.0), ("right_hand", 4, -1.0)):
        base = points[0, wrist, :2]
        hand = np.zeros((21, 2), dtype=np.float32)
        hand[0] = base
        for finger in range(5):
            angle = math.radians(90 + sign * (finger - 2) * 15)  # fingers point down, fanned
            direction = np.array([math.cos(angle), math.sin(angle)], dtype=np.float32)
            for joint in range(4):
                hand[1 + 4 * finger + joint] = base + direction * unit * (0.25 + 0.13 * joint)
        points[0, PARTS[name], :2] = hand
        points[0, PARTS[name], 2] = 1.0
    inside = (
        (points[0, :, 0] >= 0)
        & (points[0, :, 0] <= width - 1)
        & (points[0, :, 1] >= 0)
        & (points[0, :, 1] <= height - 1)
    )
    points[0, ~inside] = 0.0
    return Keypoints(points, width, height)


def scripted_dance(reference: Keypoints, num_frames: int, amplitude: float = 0.35, seed: int = 0) -> Keypoints:
    """A synthetic dance moving the reference skeleton: arms wave, the body sways, hands follow their wrists.

    Every limb keeps the reference's length (each child rotates about its parent by a scripted angle), so the sequence
    is already retargeted to the reference person.

    Args:
        reference: One-frame skeleton (frame 0 is used).
        num_frames: Number of frames.
        amplitude: Largest joint rotation in radians.
        seed: Phase offsets of the joints.

    Returns:
        A (num_frames, 128, 3) sequence in the reference's frame size.
    """
    if num_frames < 1:
        raise InputError(f"num_frames: expected a positive count, got {num_frames}")
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, 2 * np.pi, size=18)
    base = reference.points[0]
    out = np.repeat(base[None], num_frames, axis=0)
    swing = {3: 1.0, 4: 1.6, 6: -1.0, 7: -1.6, 9: 0.3, 10: 0.3, 12: -0.3, 13: -0.3}
    for t in range(num_frames):
        time = 2 * np.pi * t / max(num_frames, 2)
        sway = amplitude * 0.15 * math.sin(time) * float(np.linalg.norm(base[2, :2] - base[5, :2]))
        frame = base.copy()
        frame[:, 0] += sway  # the whole person sways sideways
        angles = np.zeros(18)
        for joint, gain in swing.items():
            angles[joint] = amplitude * gain * math.sin(time + phase[joint])
        rotation = np.zeros(18)
        for a, b in BODY_LIMBS:  # accumulate rotations down the tree
            rotation[b] = rotation[a] + angles[b]
            vector = base[b, :2] - base[a, :2]
            c, s = math.cos(rotation[b]), math.sin(rotation[b])
            frame[b, :2] = frame[a, :2] + np.array([c * vector[0] - s * vector[1], s * vector[0] + c * vector[1]])
        for name, wrist in _WRIST.items():
            part = PARTS[name]
            c, s = math.cos(rotation[wrist]), math.sin(rotation[wrist])
            rel = base[part, :2] - base[wrist, :2]
            frame[part, :2] = frame[wrist, :2] + rel @ np.array([[c, s], [-s, c]], dtype=np.float32)
        frame[PARTS["face"], :2] = base[PARTS["face"], :2] + (frame[_NOSE, :2] - base[_NOSE, :2])
        frame[:, 2] = base[:, 2]
        out[t] = frame
    return Keypoints(out, reference.width, reference.height, reference.fps)


def prepare_driving(
    driving: Keypoints,
    reference: Keypoints | None = None,
    min_confidence: float = 0.3,
    max_gap: int = 8,
    smooth_window: int = 5,
) -> tuple[Keypoints, GapReport]:
    """Gap filling, smoothing and (with a reference) retargeting, in that order.

    Args:
        driving: Raw driving keypoints.
        reference: The reference person's skeleton (one frame) or ``None`` to keep the driving proportions.
        min_confidence: Confidence at which a keypoint counts as present.
        max_gap: See :func:`fill_gaps`.
        smooth_window: See :func:`smooth_keypoints`.

    Returns:
        The prepared sequence (in the reference's frame size when one is given) and the gap report.
    """
    filled, report = fill_gaps(driving, min_confidence, max_gap)
    smoothed = smooth_keypoints(filled, smooth_window, min_confidence)
    if reference is None:
        return smoothed, report
    if (driving.width, driving.height) != (reference.width, reference.height):
        smoothed = smoothed.resized(reference.width, reference.height)
    return retarget(smoothed, reference, min_confidence), report


def stack_sequences(sequences: Sequence[Keypoints]) -> Keypoints:
    """Concatenate sequences of one frame size along time."""
    if not sequences:
        raise InputError("keypoints: nothing to concatenate")
    sizes = {(k.width, k.height) for k in sequences}
    if len(sizes) > 1:
        raise InputError(f"keypoints: the sequences have different frame sizes {sorted(sizes)}")
    first = sequences[0]
    return Keypoints(np.concatenate([k.points for k in sequences]), first.width, first.height, first.fps)
