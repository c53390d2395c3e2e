"""Evaluation of a portrait edit (issue #18 item 7): identity similarity of the edit to the source, landmark distance,
PSNR / SSIM outside the edit mask, and a CLIP text-image score with a CLIP the user gives.

The paper's tables could not be read (spec §6); these are the likely metrics it reports [unverified]: ArcFace identity
cosine (here: any `genblocks.faces.FaceAnalyzer`'s embeddings, dlib's 128-d ResNet by default; an ``ArcFaceEmbedder``
gives ArcFace numbers), structural alignment (mean 68-landmark distance as a fraction of the image side), preservation
outside the edit (PSNR / SSIM weighted by ``1 - mask``, from `genblocks.metrics`) and text alignment (CLIP score,
``100 · max(cos(image, text), 0)``, as torchmetrics' ``CLIPScore``). The same measures are the filters of
:mod:`portrait_edit.pairs`. No paper numbers live here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from genblocks.errors import InputError
from genblocks.faces import Face, FaceAnalyzer
from genblocks.metrics import identity_similarity, psnr, ssim

__all__ = [
    "ClipScorer",
    "EditMetrics",
    "evaluate_edit",
    "face_identity_distance",
    "face_identity_similarity",
    "landmark_distance",
    "outside_mask_scores",
]


def _as_tensor(image: np.ndarray, name: str) -> torch.Tensor:
    """uint8 (H, W, 3) -> float64 (1, 3, H, W) in [0, 1]."""
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise InputError(f"{name}: expected a uint8 RGB image (H, W, 3), got {array.dtype} {array.shape}")
    return torch.from_numpy(array.copy()).permute(2, 0, 1)[None].double() / 255.0


def _mask_tensor(mask: np.ndarray | torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A soft edit mask of any size ((h, w), (1, h, w) or (1, 1, h, w)) -> float64 (1, 1, H, W) in [0, 1]."""
    values = mask.detach().cpu() if isinstance(mask, torch.Tensor) else torch.from_numpy(np.asarray(mask, np.float32))
    values = values.double()
    while values.ndim > 2 and values.shape[0] == 1:
        values = values[0]
    if values.ndim != 2:
        raise InputError(f"mask: expected a 2-D (h, w) map, got shape {tuple(np.shape(mask))}")
    if not torch.isfinite(values).all() or values.min() < 0 or values.max() > 1:
        raise InputError("mask: expected finite values in [0, 1]")
    values = values[None, None]
    if tuple(values.shape[-2:]) != size:
        values = F.interpolate(values, size=size, mode="bilinear", align_corners=False).clamp(0.0, 1.0)
    return values


def outside_mask_scores(
    source: np.ndarray, edited: np.ndarray, mask: np.ndarray | torch.Tensor | None
) -> tuple[float, float]:
    """PSNR (dB) and SSIM between source and edit, weighted by ``1 - mask`` (the region the edit should keep).

    Args:
        source (`np.ndarray`): uint8 (H, W, 3).
        edited (`np.ndarray`): uint8 (H, W, 3).
        mask (`np.ndarray` or `torch.Tensor`, *optional*): the edit mask, 1 where the edit may change the image, any
            resolution (a latent mask is resized bilinearly); ``None``: the whole image.

    Returns:
        `tuple[float, float]`: ``(psnr, ssim)``; ``inf`` PSNR for identical regions, NaN when the mask covers
        everything.
    """
    x, y = _as_tensor(source, "source"), _as_tensor(edited, "edited")
    if x.shape != y.shape:
        raise InputError(f"edited: expected the source's shape {tuple(source.shape)}, got {tuple(edited.shape)}")
    weight = None if mask is None else 1.0 - _mask_tensor(mask, (x.shape[-2], x.shape[-1]))
    if weight is not None and float(weight.sum()) == 0.0:
        return math.nan, math.nan
    window = min(11, min(x.shape[-2:]) - 1 + min(x.shape[-2:]) % 2)
    return float(psnr(x, y, 1.0, weight)[0]), float(ssim(x, y, 1.0, window_size=window, weight=weight)[0])


def landmark_distance(landmarks: np.ndarray, reference: np.ndarray, side: float) -> float:
    """Mean Euclidean distance between corresponding landmarks, as a fraction of the image side.

    No alignment is removed: the edit should keep the face where it is (the paper's "structural alignment").

    Args:
        landmarks (`np.ndarray`): (N, 2) points of the edit (68 for dlib).
        reference (`np.ndarray`): (N, 2) points of the source.
        side (`float`): the image side in pixels (max of height and width).

    Returns:
        `float`: the mean distance divided by ``side``.
    """
    a, b = np.asarray(landmarks, np.float64), np.asarray(reference, np.float64)
    if a.ndim != 2 or a.shape[1] != 2 or a.shape != b.shape:
        raise InputError(f"landmarks: expected two (N, 2) arrays of one shape, got {a.shape} and {b.shape}")
    if side <= 0:
        raise InputError(f"side: expected a positive image side, got {side}")
    return float(np.linalg.norm(a - b, axis=1).mean() / side)


def face_identity_distance(face: Face, reference: Face) -> float:
    """Euclidean distance of two analysed faces' identity embeddings (dlib's rule: the same person below 0.6)."""
    if face.embedding is None or reference.embedding is None:
        raise InputError("face: the face analyzer gave no identity embedding")
    difference = np.asarray(face.embedding, np.float64) - np.asarray(reference.embedding, np.float64)
    return float(np.linalg.norm(difference))


def face_identity_similarity(face: Face, reference: Face) -> float:
    """Identity cosine similarity of two analysed faces (both need embeddings)."""
    if face.embedding is None or reference.embedding is None:
        raise InputError("face: the face analyzer gave no identity embedding")
    similarity = identity_similarity(torch.from_numpy(face.embedding)[None], torch.from_numpy(reference.embedding))
    return float(similarity[0])


class ClipScorer:
    """CLIP text-image score with a CLIP model the user gives (no download): ``100 · max(cos(image, text), 0)``.

    Args:
        model: A ``transformers.CLIPModel``.
        processor: Its ``CLIPProcessor`` (tokenizer + image processor).
    """

    def __init__(self, model: Any, processor: Any) -> None:
        self.model = model.eval()
        self.processor = processor

    @classmethod
    def from_pretrained(cls, path: str | Path) -> ClipScorer:
        """Load a local CLIP folder (``CLIPModel`` + ``CLIPProcessor``, e.g. ``openai/clip-vit-base-patch32`` saved)."""
        folder = Path(path)
        if not folder.is_dir():
            raise InputError(f"--clip {folder}: folder not found (expected a CLIPModel folder with its processor)")
        from transformers import CLIPModel, CLIPProcessor

        return cls(CLIPModel.from_pretrained(folder, local_files_only=True), CLIPProcessor.from_pretrained(folder))

    @torch.no_grad()
    def __call__(self, images: Sequence[np.ndarray], prompts: Sequence[str]) -> torch.Tensor:
        """Scores of images against prompts, pairwise.

        Args:
            images (`Sequence[np.ndarray]`): uint8 (H, W, 3) images.
            prompts (`Sequence[str]`): one prompt per image.

        Returns:
            `torch.Tensor`: float32 of shape (B,), in [0, 100].
        """
        if len(images) != len(prompts):
            raise InputError(f"prompts: expected one per image ({len(images)}), got {len(prompts)}")
        inputs = self.processor(
            text=list(prompts),
            images=[np.asarray(i) for i in images],
            return_tensors="pt",
            padding=True,
            truncation=True,
        )
        device = next(self.model.parameters()).device
        output = self.model(**{key: value.to(device) for key, value in inputs.items()})
        image_embeds = F.normalize(output.image_embeds.float(), dim=-1)  # (B, P) projections
        text_embeds = F.normalize(output.text_embeds.float(), dim=-1)
        return (100.0 * (image_embeds * text_embeds).sum(-1).clamp_min(0.0)).cpu()


@dataclass
class EditMetrics:
    """Metrics of one edit (NaN where not measured; ``notes`` says why).

    Attributes:
        identity: Identity cosine similarity of the edit to the source.
        landmark_distance: Mean 68-landmark distance, fraction of the image side.
        psnr_outside: PSNR outside the edit mask (dB).
        ssim_outside: SSIM outside the edit mask.
        clip_score: CLIP score of the edit against the prompt.
        notes: Why a metric was skipped.
    """

    identity: float = math.nan
    landmark_distance: float = math.nan
    psnr_outside: float = math.nan
    ssim_outside: float = math.nan
    clip_score: float = math.nan
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: NaN -> ``None``, ``inf`` -> ``"inf"``."""
        out: dict[str, Any] = {}
        for key, value in asdict(self).items():
            if isinstance(value, float) and math.isnan(value):
                value = None
            elif isinstance(value, float) and math.isinf(value):
                value = "inf"
            out[key] = value
        return out


def evaluate_edit(
    source: np.ndarray,
    edited: np.ndarray,
    mask: np.ndarray | torch.Tensor | None = None,
    prompt: str | None = None,
    analyzer: FaceAnalyzer | None = None,
    clip: ClipScorer | None = None,
) -> EditMetrics:
    """All metrics of one edit.

    Args:
        source (`np.ndarray`): uint8 (H, W, 3), the source portrait.
        edited (`np.ndarray`): uint8 (H, W, 3), the edit at the same size.
        mask (`np.ndarray` or `torch.Tensor`, *optional*): the edit mask (1 = may change), any resolution;
            ``None``: PSNR / SSIM over the whole image.
        prompt (`str`, *optional*): the edit's prompt, for the CLIP score.
        analyzer (`FaceAnalyzer`, *optional*): faces, landmarks and embeddings; ``None`` skips identity and landmarks.
        clip (`ClipScorer`, *optional*): ``None`` skips the CLIP score (with a note).

    Returns:
        `EditMetrics`.
    """
    metrics = EditMetrics()
    metrics.psnr_outside, metrics.ssim_outside = outside_mask_scores(source, edited, mask)
    if analyzer is None:
        metrics.notes.append("identity and landmarks skipped: no face analyzer (install portrait-edit[face])")
    else:
        reference = analyzer.analyze(np.asarray(source), embed=True)
        if not reference:
            raise InputError("source: no face found; expected a portrait")
        source_face = max(reference, key=lambda face: face.area)
        faces = analyzer.analyze(np.asarray(edited), embed=True)
        if not faces:
            metrics.notes.append("identity and landmarks undefined: no face found in the edit")
        else:
            edit_face = max(faces, key=lambda face: face.area)
            metrics.identity = face_identity_similarity(edit_face, source_face)
            if edit_face.landmarks68 is not None and source_face.landmarks68 is not None:
                side = float(max(np.shape(source)[:2]))
                metrics.landmark_distance = landmark_distance(edit_face.landmarks68, source_face.landmarks68, side)
    if clip is None or prompt is None:
        reason = "no CLIP given (--clip DIR)" if clip is None else "no prompt"
        metrics.notes.append(f"CLIP score skipped: {reason}")
    else:
        metrics.clip_score = float(clip([edited], [prompt])[0])
    return metrics
