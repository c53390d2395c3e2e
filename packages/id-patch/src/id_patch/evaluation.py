"""Evaluation of group-photo personalisation: face-ID resemblance, ID-position association accuracy, generation time.

ID-Patch (Zhang et al., CVPR 2025, arXiv 2411.13632; inference code bytedance/ID-Patch) names three metrics in its
abstract: face-ID resemblance (ArcFace cosine), ID-position association accuracy and generation efficiency (time). The
paper's exact protocol is not public (spec §8: "position-accuracy protocol" unverified), so this module states ours:

1. **Faces to positions.** The faces detected in a generated image (positions (G, 2), embeddings (G, D)) are matched
   one-to-one to the F target positions by Hungarian assignment on Euclidean distance
   (:func:`scipy.optimize.linear_sum_assignment`); a pair farther apart than ``max_distance`` pixels is left unmatched.
   A target position without a matched face has no face.
2. **Resemblance** of identity ``f``: the cosine similarity of reference embedding ``f`` and the embedding of the face
   at target position ``f`` (``nan`` when no face is there); the image's resemblance is the mean over identities with
   a face (``nan`` when there is none).
3. **Association.** Each identity is given its best-matching generated face by embedding similarity: either by a
   second Hungarian assignment on cosine similarity (``identity_matching="hungarian"``, the default: every generated
   face goes to at most one identity, spec §6) or by a plain arg-max per identity (``"argmax"``). Identity ``f`` counts
   as a hit when that face is the one at its own target position. The accuracy is hits / F (an identity without any
   detected face is a miss).

Example::

    from id_patch.evaluation import association_accuracy

    result = association_accuracy(gen_embeds, gen_positions, ref_embeds, target_positions)
    result.accuracy, result.resemblance
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeVar

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from genblocks.faces import FaceAnalyzer

__all__ = [
    "AssociationResult",
    "EvaluationSummary",
    "IdentityMatching",
    "association_accuracy",
    "detect_generated_faces",
    "match_positions",
    "positional_resemblance",
    "summarize",
    "timed",
]

logger = logging.getLogger(__name__)

IdentityMatching = Literal["hungarian", "argmax"]
T = TypeVar("T")


def _as_array(
    value: np.ndarray | torch.Tensor | Sequence[Sequence[float]], name: str, width: int | None
) -> np.ndarray:
    array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    array = array.astype(np.float64)
    if array.ndim == 1 and array.size == 0:
        array = array.reshape(0, width or 0)
    if array.ndim != 2 or (width is not None and array.shape[1] != width):
        expected = f"(N, {width})" if width is not None else "(N, D)"
        raise ValueError(f"`{name}` must have shape {expected}, got {tuple(array.shape)}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"`{name}` holds non-finite values")
    return array


def _cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return a @ b.T


def match_positions(
    detected_positions: np.ndarray | torch.Tensor,
    target_positions: np.ndarray | torch.Tensor,
    max_distance: float | None = None,
) -> np.ndarray:
    """Match detected faces to target positions one-to-one, minimising the summed Euclidean distance.

    Args:
        detected_positions: (G, 2) xy pixel positions of the faces found in the generated image.
        target_positions: (F, 2) xy pixel positions where the identities were asked for.
        max_distance: Pairs farther apart than this many pixels are left unmatched; ``None`` keeps every pair of the
            assignment.

    Returns:
        (F,) int64: for each target position, the index of its detected face, or -1 when it has none.
    """
    detected = _as_array(detected_positions, "detected_positions", 2)
    targets = _as_array(target_positions, "target_positions", 2)
    if max_distance is not None and max_distance <= 0:
        raise ValueError(f"`max_distance` must be positive or None, got {max_distance}")
    assignment = np.full(len(targets), -1, dtype=np.int64)
    if len(detected) == 0 or len(targets) == 0:
        return assignment
    distance = np.linalg.norm(targets[:, None, :] - detected[None, :, :], axis=-1)  # (F, G)
    rows, cols = linear_sum_assignment(distance)
    for row, col in zip(rows, cols, strict=True):
        if max_distance is None or distance[row, col] <= max_distance:
            assignment[row] = col
    return assignment


def positional_resemblance(
    generated_embeds: np.ndarray | torch.Tensor,
    reference_embeds: np.ndarray | torch.Tensor,
    assignment: np.ndarray,
) -> np.ndarray:
    """Cosine similarity of each reference identity with the generated face at its own position.

    Args:
        generated_embeds: (G, D) embeddings of the detected faces.
        reference_embeds: (F, D) embeddings of the reference identities, in target-position order.
        assignment: (F,) from :func:`match_positions` (-1: no face at that position).

    Returns:
        (F,) float64 cosine similarities, ``nan`` where no face sits at the position.
    """
    references = _as_array(reference_embeds, "reference_embeds", None)
    generated = _as_array(generated_embeds, "generated_embeds", references.shape[1])
    assignment = np.asarray(assignment, dtype=np.int64)
    if assignment.shape != (len(references),):
        raise ValueError(f"`assignment` must have shape ({len(references)},), got {assignment.shape}")
    if np.any(assignment >= len(generated)):
        raise ValueError(f"`assignment` points past the {len(generated)} generated faces: {assignment.tolist()}")
    similarity = np.full(len(references), np.nan)
    if len(generated):
        cosine = _cosine_matrix(references, generated)
        matched = assignment >= 0
        similarity[matched] = cosine[np.flatnonzero(matched), assignment[matched]]
    return similarity


@dataclass
class AssociationResult:
    """Metrics of one generated image.

    Args:
        accuracy: Fraction of identities whose best-matching generated face sits at their own position, in [0, 1].
        resemblance: Mean cosine of each identity with the face at its position, over positions that have a face
            (``nan`` when none has).
        hits: (F,) bool, per identity.
        per_identity_resemblance: (F,) cosine per identity (``nan``: no face at that position).
        position_assignment: (F,) detected-face index at each target position (-1: none).
        identity_assignment: (F,) detected-face index that best matches each identity by embedding (-1: none).
        num_detected: G, the number of faces found in the generated image.
    """

    accuracy: float
    resemblance: float
    hits: np.ndarray
    per_identity_resemblance: np.ndarray
    position_assignment: np.ndarray
    identity_assignment: np.ndarray
    num_detected: int

    def to_dict(self) -> dict[str, object]:
        """JSON-ready values (``nan`` becomes ``None``)."""

        def clean(values: np.ndarray) -> list[object]:
            return [None if isinstance(v, float) and math.isnan(v) else v for v in values.tolist()]

        return {
            "accuracy": self.accuracy,
            "resemblance": None if math.isnan(self.resemblance) else self.resemblance,
            "hits": clean(self.hits),
            "per_identity_resemblance": clean(self.per_identity_resemblance),
            "position_assignment": clean(self.position_assignment),
            "identity_assignment": clean(self.identity_assignment),
            "num_detected": self.num_detected,
        }


def association_accuracy(
    generated_embeds: np.ndarray | torch.Tensor,
    generated_positions: np.ndarray | torch.Tensor,
    reference_embeds: np.ndarray | torch.Tensor,
    target_positions: np.ndarray | torch.Tensor,
    max_distance: float | None = None,
    identity_matching: IdentityMatching = "hungarian",
) -> AssociationResult:
    """ID-position association accuracy and positional resemblance of one generated image (see the module docstring).

    Args:
        generated_embeds: (G, D) embeddings of the faces detected in the generated image.
        generated_positions: (G, 2) their xy pixel positions (nose tip or box centre).
        reference_embeds: (F, D) reference identity embeddings, row ``f`` asked for at ``target_positions[f]``.
        target_positions: (F, 2) xy pixel positions.
        max_distance: Position pairs farther apart than this are unmatched (``None``: no limit).
        identity_matching: ``"hungarian"``: one-to-one assignment of identities to generated faces maximising the
            summed cosine; ``"argmax"``: each identity takes its most similar face (two identities may take the same).

    Returns:
        An :class:`AssociationResult`.
    """
    references = _as_array(reference_embeds, "reference_embeds", None)
    targets = _as_array(target_positions, "target_positions", 2)
    if len(references) != len(targets):
        raise ValueError(
            f"got {len(references)} reference embeddings but {len(targets)} target positions; expected one each"
        )
    if len(references) == 0:
        raise ValueError("`reference_embeds` is empty; expected at least one identity")
    if identity_matching not in ("hungarian", "argmax"):
        raise ValueError(f"`identity_matching` must be 'hungarian' or 'argmax', got {identity_matching!r}")
    generated = _as_array(generated_embeds, "generated_embeds", references.shape[1])
    positions = _as_array(generated_positions, "generated_positions", 2)
    if len(generated) != len(positions):
        raise ValueError(f"got {len(generated)} generated embeddings but {len(positions)} generated positions")

    position_assignment = match_positions(positions, targets, max_distance)
    per_identity = positional_resemblance(generated, references, position_assignment)
    identity_assignment = np.full(len(references), -1, dtype=np.int64)
    if len(generated):
        cosine = _cosine_matrix(references, generated)  # (F, G)
        if identity_matching == "argmax":
            identity_assignment = cosine.argmax(axis=1).astype(np.int64)
        else:
            rows, cols = linear_sum_assignment(cosine, maximize=True)
            identity_assignment[rows] = cols
    hits = (identity_assignment >= 0) & (identity_assignment == position_assignment)
    found = per_identity[~np.isnan(per_identity)]
    return AssociationResult(
        accuracy=float(hits.mean()),
        resemblance=float(found.mean()) if found.size else math.nan,
        hits=hits,
        per_identity_resemblance=per_identity,
        position_assignment=position_assignment,
        identity_assignment=identity_assignment,
        num_detected=len(generated),
    )


def detect_generated_faces(
    image: np.ndarray,
    analyzer: FaceAnalyzer,
    face_anchor: Literal["nose", "bbox_center"] = "nose",
) -> tuple[np.ndarray, np.ndarray]:
    """Find the faces of a generated image with a ``genblocks.faces.FaceAnalyzer`` and return embeddings and positions.

    Args:
        image: (H, W, 3) uint8 RGB.
        analyzer: A ``genblocks.faces.FaceAnalyzer`` (e.g. ``DlibFaceAnalyzer``) whose ``analyze`` gives embeddings.
        face_anchor: The face position: the nose tip (5-point landmark 2) or the box centre.

    Returns:
        ``(embeddings (G, D), positions (G, 2))``; G may be 0, then the arrays are (0, 0) and (0, 2).
    """
    if face_anchor not in ("nose", "bbox_center"):
        raise ValueError(f"`face_anchor` must be 'nose' or 'bbox_center', got {face_anchor!r}")
    faces = analyzer.analyze(image, embed=True)
    if not faces:
        return np.zeros((0, 0)), np.zeros((0, 2))
    if any(face.embedding is None for face in faces):
        raise ValueError(f"{type(analyzer).__name__}.analyze returned faces without embeddings")
    embeds = np.stack([np.asarray(face.embedding, dtype=np.float64) for face in faces])
    if face_anchor == "nose":
        positions = np.stack([np.asarray(face.landmarks5[2], dtype=np.float64) for face in faces])
    else:
        positions = np.stack([(face.box[:2] + face.box[2:]) / 2.0 for face in faces]).astype(np.float64)
    return embeds, positions


def timed(fn: Callable[[], T], synchronize: bool = True) -> tuple[T, float]:
    """Run ``fn()`` and return its result with the wall-clock seconds it took (CUDA synchronised when available).

    Args:
        fn: The generation call.
        synchronize: Call ``torch.cuda.synchronize()`` before and after when CUDA is initialised.

    Returns:
        ``(result, seconds)``.
    """
    sync = synchronize and torch.cuda.is_available() and torch.cuda.is_initialized()
    if sync:
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = fn()
    if sync:
        torch.cuda.synchronize()
    return result, time.perf_counter() - start


@dataclass
class EvaluationSummary:
    """Aggregate over generated images.

    Args:
        num_images: Images evaluated.
        accuracy: Mean association accuracy over images.
        resemblance: Mean positional resemblance over images where any identity had a face (``nan``: none).
        detection_rate: Detected faces / asked-for identities, summed over images (may exceed 1 with extra faces).
        seconds_per_image: Mean generation time (``nan`` when no times were given).
        per_image: The per-image results.
    """

    num_images: int
    accuracy: float
    resemblance: float
    detection_rate: float
    seconds_per_image: float
    per_image: list[AssociationResult] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready values (``nan`` becomes ``None``)."""

        def clean(value: float) -> float | None:
            return None if math.isnan(value) else value

        return {
            "num_images": self.num_images,
            "accuracy": self.accuracy,
            "resemblance": clean(self.resemblance),
            "detection_rate": self.detection_rate,
            "seconds_per_image": clean(self.seconds_per_image),
            "per_image": [result.to_dict() for result in self.per_image],
        }


def summarize(results: Sequence[AssociationResult], seconds: Sequence[float] = ()) -> EvaluationSummary:
    """Average per-image results (and generation times) into an :class:`EvaluationSummary`.

    Args:
        results: One :class:`AssociationResult` per generated image.
        seconds: Generation time of each image (may be empty).

    Returns:
        The summary.
    """
    if not results:
        raise ValueError("`results` is empty; expected at least one evaluated image")
    resemblances = [r.resemblance for r in results if not math.isnan(r.resemblance)]
    asked = sum(len(r.hits) for r in results)
    return EvaluationSummary(
        num_images=len(results),
        accuracy=float(np.mean([r.accuracy for r in results])),
        resemblance=float(np.mean(resemblances)) if resemblances else math.nan,
        detection_rate=sum(r.num_detected for r in results) / asked,
        seconds_per_image=float(np.mean(seconds)) if len(seconds) else math.nan,
        per_image=list(results),
    )
