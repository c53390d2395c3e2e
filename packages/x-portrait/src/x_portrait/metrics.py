"""Evaluation of an animation (X-Portrait spec §6): identity similarity to the source, landmark-based expression and
pose distances to the driving frames, and per-frame L1 / PSNR / SSIM for self-reenactment.

The paper's protocol ([unverified]: FID, LPIPS, ArcFace ID-SIM, AED/APD from a 3DMM, gaze error) is approximated with
what runs offline: identity cosine similarity from any ``FaceAnalyzer``'s embeddings (dlib's 128-d ResNet by default;
an ``ArcFaceEmbedder`` gives ArcFace numbers), and expression / pose distances from 68-point landmarks instead of a
3DMM. Image metrics come from ``genblocks.metrics``. No paper numbers live here.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from genblocks.faces import FaceAnalyzer, umeyama_similarity
from genblocks.metrics import frame_metrics, identity_similarity

__all__ = [
    "AnimationMetrics",
    "evaluate_animation",
    "expression_distance",
    "frame_metrics",
    "identity_scores",
    "pose_descriptors",
    "pose_distance",
]

_INNER = slice(17, 68)  # brows, nose, eyes, mouth: the expressive points (the jaw line follows the head pose)


def _check(landmarks: np.ndarray, name: str) -> np.ndarray:
    points = np.asarray(landmarks, dtype=np.float64)
    if points.ndim != 3 or points.shape[1:] != (68, 2):
        raise ValueError(f"{name} must have shape (F, 68, 2), got {points.shape}")
    return points


def _interocular(points: np.ndarray) -> float:
    return float(np.linalg.norm(points[42:48].mean(0) - points[36:42].mean(0)))


def expression_distance(generated: np.ndarray, driving: np.ndarray) -> np.ndarray:
    """Landmark expression distance per frame: the generated landmarks are aligned onto the driving ones with a
    least-squares similarity (removing position, scale and in-plane rotation), then the mean point distance over the
    inner face (points 17-67) is divided by the driving inter-ocular distance.

    Args:
        generated (`np.ndarray` of shape `(F, 68, 2)`): Landmarks of the generated frames (NaN rows: no face).
        driving (`np.ndarray` of shape `(F, 68, 2)`): Landmarks of the driving frames.

    Returns:
        `np.ndarray` of shape `(F,)`: NaN where either frame has no face.
    """
    gen, drv = _check(generated, "generated"), _check(driving, "driving")
    if gen.shape != drv.shape:
        raise ValueError(f"generated and driving landmarks differ in shape: {gen.shape} vs {drv.shape}")
    out = np.full(len(gen), np.nan)
    for i, (g, d) in enumerate(zip(gen, drv, strict=True)):
        if not (np.isfinite(g).all() and np.isfinite(d).all()):
            continue
        matrix = umeyama_similarity(g, d)
        aligned = g @ matrix[:, :2].T + matrix[:, 2]
        out[i] = np.linalg.norm(aligned[_INNER] - d[_INNER], axis=1).mean() / max(_interocular(d), 1e-6)
    return out


def pose_descriptors(landmarks: np.ndarray) -> np.ndarray:
    """Head-pose proxies per frame from 68 landmarks: roll (degrees, the eye line's angle), yaw and pitch proxies
    (the nose tip's offset from the eye midpoint along and across the eye line, in inter-ocular distances).

    Returns:
        `np.ndarray` of shape `(F, 3)`: (roll, yaw, pitch); NaN rows where there is no face.
    """
    points = _check(landmarks, "landmarks")
    out = np.full((len(points), 3), np.nan)
    for i, p in enumerate(points):
        if not np.isfinite(p).all():
            continue
        left, right = p[36:42].mean(0), p[42:48].mean(0)
        axis = right - left
        distance = max(float(np.linalg.norm(axis)), 1e-6)
        along = axis / distance
        across = np.array([-along[1], along[0]])
        offset = p[30] - (left + right) / 2
        out[i] = (math.degrees(math.atan2(axis[1], axis[0])), offset @ along / distance, offset @ across / distance)
    return out


def pose_distance(generated: np.ndarray, driving: np.ndarray) -> np.ndarray:
    """Per-frame L1 distance between the pose descriptors (roll / 10 degrees, yaw, pitch) of generated and driving
    landmarks; NaN where either has no face."""
    gen, drv = pose_descriptors(generated), pose_descriptors(driving)
    if gen.shape != drv.shape:
        raise ValueError(f"generated and driving landmarks differ in shape: {gen.shape} vs {drv.shape}")
    weights = np.array([0.1, 1.0, 1.0])
    return (np.abs(gen - drv) * weights).sum(1)


def _uint8(frames: torch.Tensor) -> np.ndarray:
    return (frames.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def identity_scores(
    generated: torch.Tensor, source: torch.Tensor, analyzer: FaceAnalyzer
) -> tuple[np.ndarray, np.ndarray]:
    """Identity cosine similarity of each generated frame to the source, and the generated frames' landmarks.

    Args:
        generated (`torch.Tensor` of shape `(F, 3, H, W)`): Frames in [0, 1].
        source (`torch.Tensor` of shape `(3, H', W')`): The source portrait in [0, 1].
        analyzer (`FaceAnalyzer`): Gives embeddings and 68 landmarks.

    Returns:
        `tuple`: similarities (F,) and landmarks (F, 68, 2), NaN where no face is found.
    """
    source_face = analyzer.get_face(_uint8(source[None])[0], name="source")
    if source_face.embedding is None:
        raise ValueError(f"{type(analyzer).__name__} gives no identity embedding")
    reference = torch.from_numpy(source_face.embedding)
    similarities = np.full(len(generated), np.nan)
    landmarks = np.full((len(generated), 68, 2), np.nan)
    for i, frame in enumerate(_uint8(generated)):
        faces = analyzer.analyze(frame, embed=True)
        if not faces:
            continue
        face = max(faces, key=lambda f: f.area)
        if face.embedding is not None:
            similarities[i] = float(identity_similarity(torch.from_numpy(face.embedding)[None], reference)[0])
        if face.landmarks68 is not None:
            landmarks[i] = face.landmarks68
    return similarities, landmarks


@dataclass
class AnimationMetrics:
    """Metrics of one animation (means over the frames where they are defined; NaN when never defined).

    Attributes:
        l1: Mean absolute error to the reference frames (self-reenactment), in [0, 1] units.
        psnr: PSNR in dB.
        ssim: SSIM.
        identity: Identity cosine similarity to the source.
        expression: Landmark expression distance to the driving frames (inter-ocular units).
        pose: Landmark pose-descriptor distance to the driving frames.
        face_rate: Fraction of generated frames where a face was found.
    """

    l1: float = math.nan
    psnr: float = math.nan
    ssim: float = math.nan
    identity: float = math.nan
    expression: float = math.nan
    pose: float = math.nan
    face_rate: float = math.nan

    def to_dict(self) -> dict[str, float | None]:
        """JSON-ready (NaN -> None)."""
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}


def _mean(values: np.ndarray | list[float]) -> float:
    array = np.asarray(values, dtype=np.float64)
    defined = array[~np.isnan(array)]
    return float(defined.mean()) if defined.size else math.nan


def evaluate_animation(
    generated: torch.Tensor,
    driving: torch.Tensor,
    source: torch.Tensor | None = None,
    driving_landmarks: np.ndarray | None = None,
    analyzer: FaceAnalyzer | None = None,
) -> AnimationMetrics:
    """All metrics of an animation.

    Args:
        generated (`torch.Tensor` of shape `(F, 3, H, W)`): Generated frames in [0, 1].
        driving (`torch.Tensor` of shape `(F, 3, H, W)`): The (aligned) driving frames in [0, 1]; the reference of the
            image metrics (meaningful for self-reenactment).
        source (`torch.Tensor` of shape `(3, H', W')`, *optional*): The source portrait, for identity similarity.
        driving_landmarks (`np.ndarray` of shape `(F, 68, 2)`, *optional*): Driving landmarks at H x W; detected with
            ``analyzer`` when not given.
        analyzer (`FaceAnalyzer`, *optional*): Needed for identity, expression and pose metrics.
    """
    if generated.shape != driving.shape:
        raise ValueError(f"generated {tuple(generated.shape)} and driving {tuple(driving.shape)} must match")
    image = frame_metrics(generated.float(), driving.float())
    metrics = AnimationMetrics(l1=_mean(image["l1"]), psnr=_mean(image["psnr"]), ssim=_mean(image["ssim"]))
    if analyzer is None:
        return metrics
    if source is not None:
        similarities, generated_landmarks = identity_scores(generated, source, analyzer)
        metrics.identity = _mean(similarities)
    else:
        generated_landmarks = np.stack([_landmarks_or_nan(analyzer, frame) for frame in _uint8(generated)])
    metrics.face_rate = float(np.isfinite(generated_landmarks).all(axis=(1, 2)).mean())
    if driving_landmarks is None:
        driving_landmarks = np.stack([_landmarks_or_nan(analyzer, frame) for frame in _uint8(driving)])
    metrics.expression = _mean(expression_distance(generated_landmarks, driving_landmarks))
    metrics.pose = _mean(pose_distance(generated_landmarks, driving_landmarks))
    return metrics


def _landmarks_or_nan(analyzer: FaceAnalyzer, image: np.ndarray) -> np.ndarray:
    faces = analyzer.analyze(image, embed=False)
    face = max(faces, key=lambda f: f.area) if faces else None
    if face is None or face.landmarks68 is None:
        return np.full((68, 2), np.nan)
    return face.landmarks68.astype(np.float64)
