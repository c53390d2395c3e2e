"""Landmark-to-AU heatmaps (FG-Net's training targets) and their decoding.

FG-Net (Yin et al., WACV 2024, arXiv 2308.12380) regresses one heatmap per facial action unit (AU). The target of an
AU is built from the 68 dlib landmarks of the aligned face (ihp-lab/FG-Net@6067ab2 ``code/data_utils.py``,
``add_noise`` / ``au2heatmap`` / ``heatmap2au``; spec fg-net §3 "Target heatmaps"):

- landmarks of the 256-px aligned image are scaled to the heatmap grid (halved for 128 px);
- each AU has two centres (see `AU_LANDMARK_RULES`), each giving a Gaussian ``exp(-d² / 2σ²)`` over the pixel-index
  grid (pixel ``(i, j)`` sits at ``x = j, y = i``), with σ = 20 px at 128 px and values below 0.01 set to 0;
- both Gaussians are **added** to the AU's channel when the AU is active and **subtracted** when it is inactive, and
  the result is clipped to [-1, 1];
- decoding clamps a predicted heatmap to [-1, 1] and calls the AU active iff its spatial mean is > 0.

Reference points: IOD = ``|p42 - p39|`` (inner eye corners, in heatmap pixels), eye centres the means of points 36-41
and 42-47, brow centres the means of 17-21 and 22-26; "shifted down" adds to y.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import MappingProxyType

import torch
from torch import Tensor

__all__ = [
    "AU_LANDMARK_RULES",
    "BP4D_AUS",
    "CROSS_CORPUS_AUS",
    "DATASET_AUS",
    "DISFA_AUS",
    "AURule",
    "au_centres",
    "au_heatmaps",
    "check_aus",
    "decode_heatmaps",
    "heatmap_scores",
    "inter_ocular_distance",
]

BP4D_AUS: tuple[int, ...] = (1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24)
"""The 12 AUs of BP4D, in the order of the authors' CSV columns and heatmap channels."""

DISFA_AUS: tuple[int, ...] = (1, 2, 4, 6, 9, 12, 25, 26)
"""The 8 AUs of DISFA, in the order of the authors' CSV columns and heatmap channels."""

CROSS_CORPUS_AUS: tuple[int, ...] = (1, 2, 4, 6, 12)
"""The AUs BP4D and DISFA share, scored in the cross-corpus protocol (BP4D channels [0, 1, 2, 3, 6], DISFA channels
[0, 1, 2, 3, 5])."""

DATASET_AUS = MappingProxyType({"BP4D": BP4D_AUS, "DISFA": DISFA_AUS})
"""AU lists by dataset name."""


@dataclass(frozen=True)
class AURule:
    """Where an AU's two Gaussians sit, in terms of the 68 landmarks.

    Args:
        first (`tuple[int, ...]`): landmark indices averaged into the first centre (one index: the landmark itself).
        second (`tuple[int, ...]`): landmark indices averaged into the second centre.
        shift_iod (`float`, defaults to 0.0): both centres move down (+y) by this many inter-ocular distances.
    """

    first: tuple[int, ...]
    second: tuple[int, ...]
    shift_iod: float = 0.0


_LEFT_EYE = tuple(range(36, 42))
_RIGHT_EYE = tuple(range(42, 48))
_LEFT_BROW = tuple(range(17, 22))
_RIGHT_BROW = tuple(range(22, 27))

AU_LANDMARK_RULES = MappingProxyType(
    {
        1: AURule((21,), (22,)),  # inner brow raiser: inner brow ends
        2: AURule((17,), (26,)),  # outer brow raiser: outer brow ends
        4: AURule(_LEFT_BROW, _RIGHT_BROW),  # brow lowerer: brow centres
        6: AURule(_LEFT_EYE, _RIGHT_EYE, shift_iod=1.0),  # cheek raiser: one IOD below the eye centres
        7: AURule((38,), (43,)),  # lid tightener (BP4D)
        9: AURule((39,), (42,)),  # nose wrinkler (DISFA): inner eye corners
        10: AURule((50,), (52,)),  # upper lip raiser (BP4D)
        12: AURule((48,), (54,)),  # lip corner puller: mouth corners
        14: AURule((48,), (54,)),  # dimpler (BP4D)
        15: AURule((48,), (54,)),  # lip corner depressor (BP4D)
        17: AURule((56,), (58,), shift_iod=0.5),  # chin raiser (BP4D): half an IOD below the lower lip
        23: AURule((51,), (57,)),  # lip tightener (BP4D): lip centres
        24: AURule((51,), (57,)),  # lip pressor (BP4D)
        25: AURule((51,), (57,)),  # lips part (DISFA)
        26: AURule((56,), (58,)),  # jaw drop (DISFA): lower lip, no shift
    }
)
"""The centre rule of every supported AU (spec fg-net §3 table; upstream ``au2heatmap``)."""


def check_aus(aus: Sequence[int], name: str = "aus") -> tuple[int, ...]:
    """Validate an AU list: non-empty, no repeats, every AU in `AU_LANDMARK_RULES`.

    Args:
        aus (`Sequence[int]`): AU numbers, in channel order.
        name (`str`, defaults to `"aus"`): how the input is named in errors.

    Returns:
        `tuple[int, ...]`: the AUs.
    """
    aus = tuple(int(au) for au in aus)
    if not aus:
        raise ValueError(f"`{name}` must list at least one AU, got an empty list.")
    if len(set(aus)) != len(aus):
        raise ValueError(f"`{name}` must not repeat AUs, got {aus}.")
    unknown = [au for au in aus if au not in AU_LANDMARK_RULES]
    if unknown:
        raise ValueError(
            f"`{name}` has AUs without a landmark rule {unknown}; supported: {sorted(AU_LANDMARK_RULES)}."
        )
    return aus


def _check_landmarks(landmarks: Tensor) -> Tensor:
    if not isinstance(landmarks, Tensor):
        landmarks = torch.as_tensor(landmarks)
    if landmarks.ndim < 2 or tuple(landmarks.shape[-2:]) != (68, 2):
        raise ValueError(f"`landmarks` must have shape (..., 68, 2), got {tuple(landmarks.shape)}.")
    landmarks = landmarks.to(torch.float64) if not landmarks.is_floating_point() else landmarks
    if not torch.isfinite(landmarks).all():
        raise ValueError("`landmarks` contains non-finite values.")
    return landmarks


def inter_ocular_distance(landmarks: Tensor) -> Tensor:
    """IOD as FG-Net defines it: the distance between the inner eye corners, ``|p42 - p39|``.

    Args:
        landmarks (`Tensor` of shape `(..., 68, 2)`): (x, y) landmarks.

    Returns:
        `Tensor` of shape `(...)`.
    """
    landmarks = _check_landmarks(landmarks)
    return torch.linalg.vector_norm(landmarks[..., 42, :] - landmarks[..., 39, :], dim=-1)


def au_centres(landmarks: Tensor, aus: Sequence[int]) -> Tensor:
    """The two Gaussian centres of each AU, in the coordinates of ``landmarks``.

    Args:
        landmarks (`Tensor` of shape `(..., 68, 2)`): (x, y) landmarks (already scaled to the heatmap grid when the
            centres are meant for `au_heatmaps`).
        aus (`Sequence[int]`): AU numbers, in channel order.

    Returns:
        `Tensor` of shape `(..., K, 2, 2)`: for each AU, its first and second centre as (x, y).
    """
    landmarks = _check_landmarks(landmarks)
    aus = check_aus(aus)
    iod = inter_ocular_distance(landmarks)
    centres = []
    for au in aus:
        rule = AU_LANDMARK_RULES[au]
        pair = torch.stack(
            [landmarks[..., list(rule.first), :].mean(-2), landmarks[..., list(rule.second), :].mean(-2)], dim=-2
        )
        if rule.shift_iod:
            shift = torch.zeros_like(pair)
            shift[..., 1] = rule.shift_iod * iod[..., None]
            pair = pair + shift
        centres.append(pair)
    return torch.stack(centres, dim=-3)


def au_heatmaps(
    landmarks: Tensor,
    labels: Tensor,
    aus: Sequence[int],
    size: int = 128,
    sigma: float = 20.0,
    landmark_scale: float = 0.5,
    threshold: float = 0.01,
) -> Tensor:
    """Build FG-Net's target heatmaps: per AU, two thresholded Gaussians, signed by the label, clipped to [-1, 1].

    Args:
        landmarks (`Tensor` of shape `(..., 68, 2)`): (x, y) dlib landmarks in the aligned image's pixel coordinates.
        labels (`Tensor` of shape `(..., K)`): 1 for an active AU, 0 for an inactive one (bool or integer or float).
        aus (`Sequence[int]`): the K AU numbers, in channel order.
        size (`int`, defaults to 128): side of the square heatmaps.
        sigma (`float`, defaults to 20.0): Gaussian standard deviation in heatmap pixels (20 at 128 px).
        landmark_scale (`float`, defaults to 0.5): factor taking landmarks to heatmap pixels (128 / 256).
        threshold (`float`, defaults to 0.01): Gaussian values below it are set to 0.

    Returns:
        `Tensor` of shape `(..., K, size, size)`, float32, values in [-1, 1].
    """
    landmarks = _check_landmarks(landmarks)
    aus = check_aus(aus)
    labels = torch.as_tensor(labels)
    if labels.shape != (*landmarks.shape[:-2], len(aus)):
        raise ValueError(
            f"`labels` must have shape {(*landmarks.shape[:-2], len(aus))} (landmarks batch, K={len(aus)} AUs), got "
            f"{tuple(labels.shape)}."
        )
    if not ((labels == 0) | (labels == 1)).all():
        raise ValueError(f"`labels` must be 0 (inactive) or 1 (active), got values {torch.unique(labels).tolist()}.")
    if size < 1:
        raise ValueError(f"`size` must be positive, got {size}.")
    if sigma <= 0:
        raise ValueError(f"`sigma` must be positive, got {sigma}.")
    if landmark_scale <= 0:
        raise ValueError(f"`landmark_scale` must be positive, got {landmark_scale}.")
    centres = au_centres(landmarks.to(torch.float64) * landmark_scale, aus)  # (..., K, 2, 2)
    grid = torch.arange(size, dtype=torch.float64, device=centres.device)
    dx2 = (grid - centres[..., 0, None]).square()  # (..., K, 2, size) over x = column index
    dy2 = (grid - centres[..., 1, None]).square()  # (..., K, 2, size) over y = row index
    gauss = torch.exp(-(dy2[..., :, None] + dx2[..., None, :]) / (2.0 * sigma * sigma))  # (..., K, 2, size, size)
    gauss = torch.where(gauss < threshold, torch.zeros_like(gauss), gauss.clamp(max=1.0))
    sign = labels.to(torch.float64).mul(2.0).sub(1.0).to(centres.device)
    heatmaps = gauss.sum(dim=-3) * sign[..., None, None]
    return heatmaps.clamp(-1.0, 1.0).to(torch.float32)


def heatmap_scores(heatmaps: Tensor) -> Tensor:
    """Spatial mean of each heatmap after clamping to [-1, 1] (the decoding score; positive = active).

    Args:
        heatmaps (`Tensor` of shape `(..., K, H, W)`): predicted or target heatmaps.

    Returns:
        `Tensor` of shape `(..., K)`.
    """
    if heatmaps.ndim < 3:
        raise ValueError(f"`heatmaps` must have shape (..., K, H, W), got {tuple(heatmaps.shape)}.")
    return heatmaps.clamp(-1.0, 1.0).mean(dim=(-2, -1))


def decode_heatmaps(heatmaps: Tensor) -> Tensor:
    """Decode AU activations: active iff the clamped heatmap's spatial mean is > 0 (upstream ``heatmap2au``).

    Args:
        heatmaps (`Tensor` of shape `(..., K, H, W)`): predicted or target heatmaps.

    Returns:
        `Tensor` of shape `(..., K)`, int64 in {0, 1}.
    """
    return (heatmap_scores(heatmaps) > 0).long()
