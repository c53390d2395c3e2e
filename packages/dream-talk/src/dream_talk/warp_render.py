"""A renderer that animates the portrait itself: a landmark-driven thin-plate-spline (TPS) warp.

Per frame (:class:`PortraitWarpRenderer`):

1. the proxy avatar's landmark motion relative to its neutral face, ``proxy_landmarks(motion) -
   proxy_landmarks(zeros)`` (:func:`dream_talk.render.proxy_landmarks`, normalised units);
2. mapped into the portrait's pixels by the linear part of the similarity that aligns the neutral proxy landmarks
   to the portrait's 68 landmarks (Umeyama, genblocks.faces.align) and added to the portrait's landmarks: the
   target landmarks;
3. a TPS fitted from the target to the source control points (the 68 landmarks plus fixed anchors on the image
   border), evaluated at every output pixel, gives where to sample the portrait; the displacement fades to zero
   within ``border_margin`` of the border, so the border pixels stay exactly put;
4. ``torch.nn.functional.grid_sample`` (bilinear, ``align_corners=True``, coordinates normalised the same way, so
   a zero displacement samples every pixel centre exactly).

Nothing inside the mouth is synthesised (an open jaw stretches the lips' pixels); the paper's learned
video-to-video renderer (Face-Vid2Vid fine-tuned on the rig) is not part of this package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from dream_talk.render import proxy_landmarks
from genblocks.errors import InputError

if TYPE_CHECKING:
    import torch

    from genblocks.faces import FaceAnalyzer

__all__ = ["PortraitWarpRenderer", "border_anchors", "fit_tps", "portrait_landmarks", "target_landmarks"]


def _tps_kernel(squared_distance: torch.Tensor) -> torch.Tensor:
    """U(r) = r^2 log r^2 (0 at r = 0)."""
    import torch

    return squared_distance * torch.log(squared_distance.clamp_min(1e-20))


def fit_tps(source: np.ndarray, target: np.ndarray, regularization: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """Fit the thin-plate spline f with f(source_i) ≈ target_i.

    Args:
        source: (N, 2) control points where f is evaluated.
        target: (N, 2) their images.
        regularization: Added to the kernel's diagonal (smoothing; keeps near-coincident points solvable). The
            identity (``target == source``) is reproduced exactly for any value.

    Returns:
        ``(weights (N, 2), affine (3, 2))`` float64: f(p) = [1, p] @ affine + sum_i U(|p - source_i|^2) weights_i.
    """
    import torch

    points = torch.as_tensor(np.asarray(source, np.float64))
    values = np.asarray(target, np.float64)
    count = points.shape[0]
    kernel = _tps_kernel(torch.cdist(points, points) ** 2).numpy() + regularization * np.eye(count)
    poly = np.concatenate([np.ones((count, 1)), points.numpy()], axis=1)
    system = np.zeros((count + 3, count + 3))
    system[:count, :count], system[:count, count:], system[count:, :count] = kernel, poly, poly.T
    rhs = np.concatenate([values, np.zeros((3, 2))])
    try:
        solution = np.linalg.solve(system, rhs)
    except np.linalg.LinAlgError:  # coincident control points: the least-squares spline
        solution = np.linalg.lstsq(system, rhs, rcond=None)[0]
    return solution[:count], solution[count:]


def border_anchors(per_side: int = 8) -> np.ndarray:
    """``4 * per_side`` points evenly spaced on the border of the normalised square [-1, 1]^2 (corners included).

    Returns:
        float64 (4 * per_side, 2).
    """
    steps = np.linspace(-1.0, 1.0, per_side + 1)[:-1]
    ones = np.ones_like(steps)
    return np.concatenate(
        [
            np.stack([steps, -ones], 1),
            np.stack([ones, steps], 1),
            np.stack([-steps, ones], 1),
            np.stack([-ones, -steps], 1),
        ]
    )


def portrait_landmarks(portrait: np.ndarray, analyzer: FaceAnalyzer | None = None) -> np.ndarray:
    """68 landmarks (pixels, float64 (68, 2)) of the largest face in ``portrait`` (genblocks' dlib analyser by default).

    Raises:
        InputError: no face found.
        ImportError: the dlib analyser is needed and the ``face`` extra is not installed.
    """
    from dream_talk.tracking import detect_landmarks

    points = detect_landmarks(np.asarray(portrait)[None], analyzer)[0]
    if not np.isfinite(points).all():
        raise InputError("portrait: no face found; expected a portrait with one visible face")
    return points


def target_landmarks(landmarks: np.ndarray, motion: np.ndarray) -> np.ndarray:
    """The portrait's landmarks moved by the proxy avatar's motion.

    Args:
        landmarks: (68, 2) the portrait's landmarks in pixels.
        motion: (T, 52 + P) blendshapes and head pose.

    Returns:
        float64 (T, 68, 2) pixels: ``landmarks + (proxy(motion) - proxy(0)) @ L.T`` with L the linear part
        (scale * rotation) of the similarity aligning the neutral proxy to ``landmarks``.
    """
    from genblocks.faces.align import umeyama_similarity

    motion = np.asarray(motion, np.float64)
    neutral = proxy_landmarks(np.zeros((1, motion.shape[1])))[0]
    linear = umeyama_similarity(neutral, landmarks)[:, :2]
    offsets = proxy_landmarks(motion) - neutral[None]
    return np.asarray(landmarks, np.float64)[None] + offsets @ linear.T


class PortraitWarpRenderer:
    """A :class:`~dream_talk.render.Renderer` that warps the portrait with a TPS driven by its moved landmarks.

    Args:
        landmarks: The portrait's 68 landmarks in pixels (68, 2); ``None``: found with ``analyzer`` on each call.
        analyzer: A ``genblocks.faces.FaceAnalyzer`` (default: genblocks' dlib analyser, the ``face`` extra).
        anchors_per_side: Fixed TPS control points per image side.
        border_margin: Width of the band along the border (fraction of the image side) over which the displacement
            fades to zero.
        regularization: TPS smoothing (see :func:`fit_tps`).
        max_angle: Head pitch, yaw and roll are clipped to this many radians, and
        max_shift: the head's x, y translation and z scale change to this (normalised units): a 2-D warp of one
            photo cannot show a head turned or moved far (the stretched background folds), so poses beyond what it
            can render (e.g. from random weights) are held at the limit.
        tps_resolution: The spline is evaluated on a grid of at most this many points per side and its
            displacement upsampled bilinearly (the warp is smooth; this keeps a frame cheap).
    """

    def __init__(
        self,
        landmarks: np.ndarray | None = None,
        analyzer: FaceAnalyzer | None = None,
        anchors_per_side: int = 8,
        border_margin: float = 0.05,
        regularization: float = 1e-6,
        max_angle: float = 0.35,
        max_shift: float = 0.15,
        tps_resolution: int = 96,
    ) -> None:
        if landmarks is not None:
            landmarks = np.asarray(landmarks, np.float64)
            if landmarks.shape != (68, 2) or not np.isfinite(landmarks).all():
                raise ValueError(f"landmarks: expected finite (68, 2) pixel coordinates, got {landmarks.shape}")
        self.landmarks = landmarks
        self.analyzer = analyzer
        self.anchors_per_side = anchors_per_side
        self.border_margin = border_margin
        self.regularization = regularization
        self.max_angle = max_angle
        self.max_shift = max_shift
        self.tps_resolution = tps_resolution
        self._cache: tuple[tuple[int, int], torch.Tensor, torch.Tensor] | None = None

    def _base_grid(self, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The identity grid (H, W, 2) and the border fade (H, W, 1): 0 on the border, 1 past the margin."""
        import torch

        if self._cache is not None and self._cache[0] == (height, width):
            return self._cache[1], self._cache[2]
        ys = torch.linspace(-1.0, 1.0, height, dtype=torch.float64)
        xs = torch.linspace(-1.0, 1.0, width, dtype=torch.float64)
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # (H, W, 2) as (x, y)
        margin = max(self.border_margin * 2.0, 1e-6)
        fade = ((1.0 - grid.abs()).amin(dim=-1, keepdim=True) / margin).clamp(0.0, 1.0)
        fade = fade * fade * (3.0 - 2.0 * fade)
        self._cache = ((height, width), grid.float(), fade.float())
        return self._cache[1], self._cache[2]

    def sampling_grid(self, source: np.ndarray, target: np.ndarray, height: int, width: int) -> torch.Tensor:
        """Where each output pixel samples the portrait.

        Args:
            source: (68, 2) portrait landmarks (pixels).
            target: (68, 2) moved landmarks (pixels).
            height, width: Image size.

        Returns:
            float32 (H, W, 2) grid_sample coordinates (x, y in [-1, 1], ``align_corners=True``).
        """
        import torch
        import torch.nn.functional as F

        scale = np.array([2.0 / max(width - 1, 1), 2.0 / max(height - 1, 1)])
        anchors = border_anchors(self.anchors_per_side)
        control = np.concatenate([target * scale - 1.0, anchors])
        values = np.concatenate([source * scale - 1.0, anchors])
        weights, affine = fit_tps(control, values, self.regularization)
        # the spline is smooth: evaluate it on a grid of at most ``tps_resolution`` per side, upsample bilinearly
        coarse_h, coarse_w = min(height, self.tps_resolution), min(width, self.tps_resolution)
        coarse = torch.stack(
            torch.meshgrid(torch.linspace(-1.0, 1.0, coarse_w), torch.linspace(-1.0, 1.0, coarse_h), indexing="xy"),
            dim=-1,
        ).reshape(-1, 2)
        kernel = _tps_kernel(torch.cdist(coarse, torch.from_numpy(control).float()) ** 2)
        affine_t = torch.from_numpy(affine).float()
        mapped = affine_t[0] + coarse @ affine_t[1:] + kernel @ torch.from_numpy(weights).float()
        displacement = (mapped - coarse).reshape(1, coarse_h, coarse_w, 2).permute(0, 3, 1, 2)
        displacement = F.interpolate(displacement, size=(height, width), mode="bilinear", align_corners=True)
        displacement = displacement[0].permute(1, 2, 0)
        grid, fade = self._base_grid(height, width)
        return grid + displacement * fade

    def __call__(self, portrait: np.ndarray, motion: np.ndarray) -> np.ndarray:
        """Args: portrait uint8 (H, W, 3); motion (T, 52 + P). Returns uint8 (T, H, W, 3).

        Raises:
            InputError: no landmarks given and no face found in the portrait.
        """
        import torch
        import torch.nn.functional as F

        portrait = np.asarray(portrait)
        height, width = portrait.shape[:2]
        source = self.landmarks if self.landmarks is not None else portrait_landmarks(portrait, self.analyzer)
        motion = np.array(motion, np.float64)
        motion[:, 52:55] = np.clip(motion[:, 52:55], -self.max_angle, self.max_angle)
        motion[:, 55:58] = np.clip(motion[:, 55:58], -self.max_shift, self.max_shift)
        targets = target_landmarks(source, motion)
        image = torch.from_numpy(np.ascontiguousarray(portrait[..., :3])).permute(2, 0, 1)[None].float()
        frames = np.empty((len(targets), height, width, 3), np.uint8)
        with torch.no_grad():
            for index, target in enumerate(targets):
                grid = self.sampling_grid(source, target, height, width)
                warped = F.grid_sample(image, grid[None], mode="bilinear", padding_mode="border", align_corners=True)
                frames[index] = warped[0].permute(1, 2, 0).round().clamp(0, 255).byte().numpy()
        return frames
