"""Tracking: blendshapes and head pose from 68-point landmarks, the inverse of the proxy renderer's model.

:func:`dream_talk.render.proxy_landmarks` moves the template by the blendshape basis, foreshortens x by cos(yaw)
and y by cos(pitch), rotates by roll, scales by 1 + z and shifts by (0.6 sin yaw + x, 0.6 sin pitch + y). Per frame,
:func:`fit_motion` inverts it:

1. **pose** from the *rigid* landmarks (those no blendshape moves: the upper jaw line, the nose bridge, the eye
   corners): roll from the fitted affine's first column, then the two axis scales and the shift by least squares in
   the roll-free frame. The 2-D proxy cannot tell a sideways shift from yaw's shift, nor a uniform scale from equal
   foreshortening, so the tracker takes the pose with the smallest translation (x, y) that explains them (exact when
   the true x, y are zero; the rendered landmarks are reproduced in every case);
2. **blendshapes** by bounded least squares in [0, 1] on all 68 points (an active-set solver, a small ridge
   term) over :data:`TRACKED_BLENDSHAPES`: the channels whose landmark displacements are linearly independent
   (``mouthShrugLower`` moves the same points as ``mouthRollLower``, ``eyeLook*`` and ``tongueOut`` move none, so
   those come back 0);
3. optional temporal smoothing (a Gaussian over frames, ``smooth_sigma``);
4. frames without a face (NaN landmarks) are filled by linear interpolation of the motion over time and counted.

A real face is not the proxy's template: fitted absolutely, its own shape reads as expression and pose (channels pushed
to their bounds, where the fit of the others bends). Given a ``neutral`` face of the same person (a frame of the clip
with a relaxed face, or the portrait a clip was rendered from with its :func:`portrait_state`), the fit starts from
template + :func:`dream_talk.render.proxy_face_offsets` instead, so it measures expression and pose relative to that face.

:func:`track_video` reads a video (genblocks.media.read_video), finds the 68 landmarks with genblocks' dlib analyser
and maps pixels to the template's normalised frame with one clip-level similarity (median over frames).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dream_talk.motion import ARKIT_BLENDSHAPES, MotionSequence
from dream_talk.render import landmark_basis, proxy_face_offsets, proxy_landmarks, template_landmarks
from genblocks.errors import InputError

if TYPE_CHECKING:
    from genblocks.faces import FaceAnalyzer

__all__ = [
    "RIGID_POINTS",
    "TRACKED_BLENDSHAPES",
    "TrackResult",
    "detect_landmarks",
    "fit_blendshapes",
    "fit_motion",
    "fit_pose",
    "normalise_landmarks",
    "track_landmarks",
    "track_video",
]

_TEMPLATE = template_landmarks()
_BASIS = landmark_basis()
RIGID_POINTS: np.ndarray = np.flatnonzero(np.abs(_BASIS).sum(axis=(0, 2)) == 0)
"""Landmarks no blendshape moves (jaw 0, 1, 15, 16, nose bridge 27-30, eye corners 36, 39, 42, 45)."""
_PRIORITY = (
    "jawOpen",
    "eyeBlinkLeft",
    "eyeBlinkRight",
    "mouthSmileLeft",
    "mouthSmileRight",
    "browInnerUp",
    "browDownLeft",
    "browDownRight",
    "browOuterUpLeft",
    "browOuterUpRight",
    "mouthFunnel",
    "mouthPucker",
    "mouthClose",
    "jawLeft",
    "jawRight",
    "mouthFrownLeft",
    "mouthFrownRight",
    "mouthStretchLeft",
    "mouthStretchRight",
    "mouthUpperUpLeft",
    "mouthUpperUpRight",
    "mouthLowerDownLeft",
    "mouthLowerDownRight",
    "eyeWideLeft",
    "eyeWideRight",
    "eyeSquintLeft",
    "eyeSquintRight",
    "cheekPuff",
    "noseSneerLeft",
    "noseSneerRight",
    "mouthLeft",
    "mouthRight",
    "mouthRollLower",
    "mouthRollUpper",
    "mouthPressLeft",
    "mouthPressRight",
    "mouthDimpleLeft",
    "mouthDimpleRight",
)


def _tracked_channels() -> tuple[str, ...]:
    chosen: list[str] = []
    for name in _PRIORITY:
        columns = np.stack([_BASIS[ARKIT_BLENDSHAPES.index(n)].ravel() for n in [*chosen, name]], axis=1)
        if np.linalg.matrix_rank(columns, tol=1e-9) == len(chosen) + 1:
            chosen.append(name)
    return tuple(chosen)


TRACKED_BLENDSHAPES: tuple[str, ...] = _tracked_channels()
"""The channels the tracker estimates: in :data:`_PRIORITY` order, each whose landmark displacement is not a linear
combination of those before it (the others, e.g. ``mouthShrugLower`` = ``mouthRollLower``, ``eyeLook*``,
``tongueOut``, come back 0)."""
_SHIFT = 0.6  # proxy_landmarks: shift = 0.6 sin(angle) + translation
_MAX_ANGLE = 1.2
_SCALE_RANGE = (0.5, 1.5)


@dataclass
class TrackResult:
    """What tracking made.

    Args:
        motion: The recovered sequence (T, 52 + 6).
        gap_frames: Indices of the frames without a face (filled by interpolation).
        residual: Per-frame RMS landmark error of the fit in normalised units (NaN on gap frames), shape (T,).
    """

    motion: MotionSequence
    gap_frames: list[int] = field(default_factory=list)
    residual: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def num_gaps(self) -> int:
        """How many frames had no face."""
        return len(self.gap_frames)


def _face(face_offsets: np.ndarray | None) -> np.ndarray:
    """The unposed neutral face the fit starts from: the template, plus ``face_offsets`` (68, 2) when given."""
    if face_offsets is None:
        return _TEMPLATE
    face_offsets = np.asarray(face_offsets, np.float64)
    if face_offsets.shape != (68, 2) or not np.isfinite(face_offsets).all():
        raise ValueError(f"face_offsets: expected finite (68, 2) offsets, got {face_offsets.shape}")
    return _TEMPLATE + face_offsets


def fit_pose(landmarks: np.ndarray, face_offsets: np.ndarray | None = None) -> np.ndarray:
    """Head pose of each frame from its rigid landmarks (normalised coordinates).

    Args:
        landmarks: (T, 68, 2) normalised landmarks (no NaN).
        face_offsets: (68, 2) the face's offset from the template (:func:`dream_talk.render.proxy_face_offsets`);
            ``None``: the template.

    Returns:
        float64 (T, 6): pitch, yaw, roll (radians), x, y, z, as :func:`proxy_landmarks` reads them.
    """
    observed = np.asarray(landmarks, np.float64)[:, RIGID_POINTS]  # (T, R, 2)
    source = _face(face_offsets)[RIGID_POINTS]  # (R, 2)
    design = np.concatenate([source, np.ones((len(source), 1))], axis=1)  # (R, 3)
    affine, *_ = np.linalg.lstsq(design, observed.transpose(1, 0, 2).reshape(len(source), -1), rcond=None)
    affine = affine.reshape(3, -1, 2)  # rows x-coef, y-coef, shift; (3, T, 2)
    # M = R(roll) diag(a, b): column 1 = a (cos, sin), column 2 = b (-sin, cos)
    roll = np.arctan2(affine[0, :, 1] - affine[1, :, 0], affine[0, :, 0] + affine[1, :, 1])
    cos, sin = np.cos(roll)[:, None], np.sin(roll)[:, None]
    unrolled_x = cos * observed[..., 0] + sin * observed[..., 1]  # R(-roll) p
    unrolled_y = -sin * observed[..., 0] + cos * observed[..., 1]
    a, shift_x_local = _line_fit(source[:, 0], unrolled_x)
    b, shift_y_local = _line_fit(source[:, 1], unrolled_y)
    shift_x = cos[:, 0] * shift_x_local - sin[:, 0] * shift_y_local
    shift_y = sin[:, 0] * shift_x_local + cos[:, 0] * shift_y_local
    scale, yaw, pitch = _split_scale(np.abs(a), np.abs(b), shift_x, shift_y)
    x = shift_x - _SHIFT * np.sin(yaw)
    y = shift_y - _SHIFT * np.sin(pitch)
    return np.stack([pitch, yaw, roll, x, y, scale - 1.0], axis=1)


def _line_fit(source: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row least squares ``target ≈ slope * source + offset``; source (R,), target (T, R)."""
    centred = source - source.mean()
    slope = (target - target.mean(axis=1, keepdims=True)) @ centred / (centred @ centred)
    return slope, target.mean(axis=1) - slope * source.mean()


def _split_scale(
    a: np.ndarray, b: np.ndarray, shift_x: np.ndarray, shift_y: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scale s, yaw and pitch with s cos(yaw) = a, s cos(pitch) = b and the smallest leftover translation."""
    low = np.clip(np.maximum(a, b), _SCALE_RANGE[0], _SCALE_RANGE[1])
    high = np.clip(np.maximum(a, b) / np.cos(_MAX_ANGLE), low, _SCALE_RANGE[1])

    def cost(s: np.ndarray) -> np.ndarray:
        cos_yaw, cos_pitch = np.clip(a[:, None] / s, 0.0, 1.0), np.clip(b[:, None] / s, 0.0, 1.0)
        rest_x = np.abs(shift_x)[:, None] - _SHIFT * np.sqrt(1.0 - cos_yaw**2)
        rest_y = np.abs(shift_y)[:, None] - _SHIFT * np.sqrt(1.0 - cos_pitch**2)
        return rest_x**2 + rest_y**2

    grid = low[:, None] + (high - low)[:, None] * np.linspace(0.0, 1.0, 401)[None]
    best = np.argmin(cost(grid), axis=1)
    step = (high - low) / 400
    left = np.maximum(low, grid[np.arange(len(a)), best] - step)
    right = np.minimum(high, grid[np.arange(len(a)), best] + step)
    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    for _ in range(60):  # golden section inside the best grid cell
        m1, m2 = right - ratio * (right - left), left + ratio * (right - left)
        lower = cost(m1[:, None])[:, 0] < cost(m2[:, None])[:, 0]
        right = np.where(lower, m2, right)
        left = np.where(lower, left, m1)
    scale = (left + right) / 2.0
    yaw = np.sign(shift_x) * np.arccos(np.clip(a / scale, 0.0, 1.0))
    pitch = np.sign(shift_y) * np.arccos(np.clip(b / scale, 0.0, 1.0))
    return scale, yaw, pitch


def _pose_transform(pose: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The proxy's pose as ``linear (T, 2, 2)`` = s R(roll) diag(cos yaw, cos pitch) and ``shift (T, 2)``."""
    pitch, yaw, roll = (np.clip(pose[:, i], -_MAX_ANGLE, _MAX_ANGLE) for i in range(3))
    scale = np.clip(1.0 + pose[:, 5], *_SCALE_RANGE)
    cos, sin = np.cos(roll), np.sin(roll)
    # linear part of the pose: s R(roll) diag(cos yaw, cos pitch), (T, 2, 2)
    linear = scale[:, None, None] * np.stack(
        [
            np.stack([cos * np.cos(yaw), -sin * np.cos(pitch)], -1),
            np.stack([sin * np.cos(yaw), cos * np.cos(pitch)], -1),
        ],
        axis=1,
    )
    shift = np.stack([_SHIFT * np.sin(yaw) + pose[:, 3], _SHIFT * np.sin(pitch) + pose[:, 4]], axis=1)  # (T, 2)
    return linear, shift


def fit_blendshapes(
    landmarks: np.ndarray,
    pose: np.ndarray,
    ridge: float = 1e-9,
    iterations: int = 100,
    face_offsets: np.ndarray | None = None,
) -> np.ndarray:
    """Weights in [0, 1] of :data:`TRACKED_BLENDSHAPES` (others 0) that best explain the landmarks under the pose.

    Args:
        landmarks: (T, 68, 2) normalised landmarks.
        pose: (T, 6) from :func:`fit_pose`.
        ridge: L2 weight on the blendshapes (keeps the system well posed with noisy landmarks).
        iterations: Most active-set steps per frame.
        face_offsets: (68, 2) the face's offset from the template (:func:`dream_talk.render.proxy_face_offsets`);
            ``None``: the template.

    Returns:
        float64 (T, 52).
    """
    linear, shift = _pose_transform(pose)
    channels = [ARKIT_BLENDSHAPES.index(name) for name in TRACKED_BLENDSHAPES]
    count = len(channels)
    design = np.einsum("tij,kpj->tpik", linear, _BASIS[channels]).reshape(len(pose), -1, count)  # (T, 136, K)
    neutral = np.einsum("tij,pj->tpi", linear, _face(face_offsets)) + shift[:, None]
    target = (np.asarray(landmarks, np.float64) - neutral).reshape(len(pose), -1)  # (T, 136)
    hessian = np.einsum("tnk,tnl->tkl", design, design) + ridge * np.eye(count)
    rhs = np.einsum("tnk,tn->tk", design, target)
    weights = np.stack([_box_least_squares(h, r, iterations) for h, r in zip(hessian, rhs, strict=True)])
    full = np.zeros((len(pose), 52))
    full[:, channels] = weights
    return full


def _box_least_squares(hessian: np.ndarray, rhs: np.ndarray, iterations: int) -> np.ndarray:
    """argmin over w in [0, 1]^K of w^T H w / 2 - r^T w (H positive definite), by an active-set method."""
    weights = np.clip(np.linalg.solve(hessian, rhs), 0.0, 1.0)
    for _ in range(iterations):
        gradient = hessian @ weights - rhs
        # a bound variable stays bound while the gradient pushes it outwards
        bound = ((weights <= 0.0) & (gradient > 0.0)) | ((weights >= 1.0) & (gradient < 0.0))
        free = ~bound
        if not free.any():
            break
        candidate = weights.copy()
        candidate[free] = np.linalg.solve(
            hessian[np.ix_(free, free)], rhs[free] - hessian[np.ix_(free, bound)] @ weights[bound]
        )
        if np.all((candidate >= 0.0) & (candidate <= 1.0)):
            weights = candidate
            gradient = hessian @ weights - rhs
            bound_ok = np.all(gradient[weights <= 0.0] >= -1e-12) and np.all(gradient[weights >= 1.0] <= 1e-12)
            if bound_ok:
                break
            continue
        # step towards the candidate until the first variable hits a bound
        step = candidate - weights
        with np.errstate(divide="ignore", invalid="ignore"):
            limits = np.where(step > 0, (1.0 - weights) / step, np.where(step < 0, -weights / step, np.inf))
        alpha = float(np.clip(limits.min(), 0.0, 1.0))
        weights = np.clip(weights + alpha * step, 0.0, 1.0)
        weights[np.isclose(weights, 0.0, atol=1e-12)] = 0.0
        weights[np.isclose(weights, 1.0, atol=1e-12)] = 1.0
    return weights


def _smooth(values: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing over frames (axis 0), edges padded by repetition."""
    if sigma <= 0 or len(values) < 2:
        return values
    radius = max(1, round(3 * sigma))
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(values, ((radius, radius), (0, 0)), mode="edge")
    return np.stack([np.convolve(padded[:, c], kernel, mode="valid") for c in range(values.shape[1])], axis=1)


def fit_motion(
    landmarks: np.ndarray,
    fps: float,
    smooth_sigma: float = 0.0,
    ridge: float = 1e-9,
    face_offsets: np.ndarray | None = None,
) -> TrackResult:
    """Blendshapes + head pose for every frame of normalised landmarks; NaN frames are gaps.

    Args:
        landmarks: (T, 68, 2) in the template's normalised coordinates; a frame with any NaN has no face.
        fps: Frame rate of the sequence.
        smooth_sigma: Standard deviation (frames) of a Gaussian smoothing of the motion over time; 0 disables it.
        ridge: See :func:`fit_blendshapes`.
        face_offsets: (68, 2) the face's offset from the template (:func:`dream_talk.render.proxy_face_offsets`);
            ``None``: the template.

    Returns:
        A :class:`TrackResult` with the (T, 58) motion, the gap frame indices and the per-frame fit residual.

    Raises:
        InputError: when no frame has a face.
    """
    landmarks = np.asarray(landmarks, np.float64)
    if landmarks.ndim != 3 or landmarks.shape[1:] != (68, 2):
        raise ValueError(f"landmarks: expected (T, 68, 2), got {landmarks.shape}")
    valid = np.isfinite(landmarks).all(axis=(1, 2))
    if not valid.any():
        raise InputError("no face found in any frame: nothing to track")
    found = landmarks[valid]
    pose = fit_pose(found, face_offsets)
    weights = fit_blendshapes(found, pose, ridge=ridge, face_offsets=face_offsets)
    fitted = np.concatenate([weights, pose], axis=1)
    residual = np.full(len(landmarks), np.nan)
    residual[valid] = np.sqrt(((proxy_landmarks(fitted, face_offsets) - found) ** 2).sum(-1).mean(-1))
    frames = np.arange(len(landmarks))
    values = np.stack([np.interp(frames, frames[valid], fitted[:, c]) for c in range(fitted.shape[1])], axis=1)
    values = _smooth(values, smooth_sigma)
    values[:, :52] = np.clip(values[:, :52], 0.0, 1.0)
    gaps = [int(i) for i in frames[~valid]]
    return TrackResult(MotionSequence(values.astype(np.float32), fps), gaps, residual)


def normalise_landmarks(landmarks: np.ndarray, frame: np.ndarray | None = None) -> np.ndarray:
    """Map pixel landmarks (T, 68, 2) (NaN frames allowed) into the template's normalised frame.

    One similarity for the whole clip, without rotation (head roll stays in the pose): the median over the frames of
    ``frame`` (default: the clip itself; (K, 68, 2) pixels) of the scale and shift that map the template's rigid points
    onto each frame's.
    """
    landmarks = np.asarray(landmarks, np.float64)
    faces = landmarks if frame is None else np.asarray(frame, np.float64).reshape(-1, 68, 2)
    valid = np.isfinite(faces).all(axis=(1, 2))
    if not valid.any():
        raise InputError("no face found in any frame: nothing to track")
    source = _TEMPLATE[RIGID_POINTS]
    observed = faces[valid][:, RIGID_POINTS]
    centred_source = source - source.mean(0)
    centred = observed - observed.mean(1, keepdims=True)
    scales = np.sqrt((centred**2).sum(axis=(1, 2)) / (centred_source**2).sum())
    scale = float(np.median(scales))
    shift = np.median(observed.mean(1) - scale * source.mean(0), axis=0)
    return (landmarks - shift) / scale


def track_landmarks(
    pixel_landmarks: np.ndarray,
    fps: float,
    smooth_sigma: float = 0.0,
    neutral: int | np.ndarray | None = None,
    neutral_weights: np.ndarray | None = None,
) -> TrackResult:
    """:func:`normalise_landmarks` then :func:`fit_motion` (pixel landmarks (T, 68, 2), NaN where no face).

    Args:
        pixel_landmarks: (T, 68, 2) pixels, NaN where no face.
        fps: Frame rate of the sequence.
        smooth_sigma: See :func:`fit_motion`.
        neutral: This person's face as the fit's starting face (module docstring), either the index of a frame of the
            clip (it tracks to ``neutral_weights`` and zero pose; pick one with a relaxed face) or (68, 2) pixel
            landmarks from the same camera framing (e.g. the portrait a clip was rendered from), whose similarity
            then normalises the clip. ``None``: the proxy's template.
        neutral_weights: (52,) the blendshapes the neutral face shows (a portrait's :func:`portrait_state`);
            ``None``: zeros.

    Raises:
        InputError: no face in any frame, or none in the ``neutral`` frame (or its index is out of range).
    """
    landmarks = np.asarray(pixel_landmarks, np.float64)
    if neutral is None:
        return fit_motion(normalise_landmarks(landmarks), fps, smooth_sigma)
    if isinstance(neutral, (int, np.integer)):
        if not -len(landmarks) <= int(neutral) < len(landmarks):
            raise InputError(f"neutral frame {neutral}: the clip has {len(landmarks)} frames")
        face = landmarks[int(neutral)]
        if not np.isfinite(face).all():
            raise InputError(f"neutral frame {neutral}: no face found in it; pick a frame that shows the face")
    else:
        face = np.asarray(neutral, np.float64)
        if face.shape != (68, 2) or not np.isfinite(face).all():
            raise ValueError(f"neutral: expected a frame index or finite (68, 2) pixel landmarks, got {face.shape}")
    normalised = normalise_landmarks(landmarks, frame=face)
    offsets = proxy_face_offsets(normalise_landmarks(face[None])[0], neutral_weights)
    return fit_motion(normalised, fps, smooth_sigma, face_offsets=offsets)


def portrait_state(pixel_landmarks: np.ndarray, pose_dim: int = 6) -> np.ndarray:
    """The portrait's own expression as a motion frame, by the same fit as :func:`track_landmarks`.

    Args:
        pixel_landmarks: (68, 2) the portrait's landmarks in pixels.
        pose_dim: Pose values per frame.

    Returns:
        float32 (52 + pose_dim,): the fitted blendshape weights and a zero pose (the portrait is where the head
        motion starts). Identity differs from the proxy's template, so a neutral face may fit small non-zero weights;
        renderers take this frame as the portrait's reference, so the portrait itself is rendered unchanged.

    Raises:
        InputError: the landmarks hold no finite face.
    """
    landmarks = np.asarray(pixel_landmarks, np.float64)
    if landmarks.shape != (68, 2):
        raise ValueError(f"pixel_landmarks: expected (68, 2), got {landmarks.shape}")
    state = np.zeros(52 + pose_dim, np.float32)
    state[:52] = track_landmarks(landmarks[None], fps=1.0).motion.values[0, :52]
    return state


def detect_landmarks(frames: np.ndarray, analyzer: FaceAnalyzer | None = None) -> np.ndarray:
    """68 landmarks of the largest face in each frame with genblocks' dlib analyser (NaN where none is found).

    Args:
        frames: uint8 (T, H, W, 3).
        analyzer: A ``genblocks.faces.FaceAnalyzer`` (default: ``DlibFaceAnalyzer()``, the ``face`` extra).

    Returns:
        float64 (T, 68, 2) pixel coordinates.
    """
    if analyzer is None:
        from genblocks.faces import DlibFaceAnalyzer

        analyzer = DlibFaceAnalyzer()
    points = np.full((len(frames), 68, 2), np.nan)
    for index, frame in enumerate(frames):
        faces = [face for face in analyzer.analyze(frame, embed=False) if face.landmarks68 is not None]
        if faces:
            points[index] = max(faces, key=lambda face: face.area).landmarks68
    return points


def track_video(
    path: str | Path,
    fps: float | None = None,
    smooth_sigma: float = 0.0,
    analyzer: FaceAnalyzer | None = None,
    neutral_frame: int | None = None,
) -> TrackResult:
    """Track a video file: read it, find landmarks per frame, fit the motion.

    Args:
        path: Any video genblocks.media.read_video reads.
        fps: Frame rate of the motion (default: the video's).
        smooth_sigma: See :func:`fit_motion`.
        analyzer: See :func:`detect_landmarks`.
        neutral_frame: The frame showing this person's relaxed face (``neutral`` of :func:`track_landmarks`);
            ``None``: expression relative to the proxy's template.

    Raises:
        InputError: an unreadable video, or no face in any frame (naming ``path``).
        ImportError: the dlib analyser is needed and the ``face`` extra is not installed.
    """
    from genblocks.media import read_video

    frames, video_fps = read_video(path)
    landmarks = detect_landmarks(frames, analyzer)
    if not np.isfinite(landmarks).all(axis=(1, 2)).any():
        raise InputError(f"{path}: no face found in any of its {len(frames)} frames; expected a video of a face")
    return track_landmarks(landmarks, float(fps or video_fps), smooth_sigma, neutral=neutral_frame)
