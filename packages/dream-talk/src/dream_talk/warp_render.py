"""A renderer that animates the portrait itself: a landmark-driven thin-plate-spline (TPS) warp of a face crop,
a synthesised mouth interior and a feathered paste-back into the full photo.

Per call (:class:`PortraitWarpRenderer`):

1. the proxy avatar's landmark motion relative to the reference frame, ``proxy_landmarks(motion, face) -
   proxy_landmarks(reference, face)`` (:func:`dream_talk.render.proxy_landmarks`: a documented blendshape -> landmark
   basis and the head pose as a similarity transform, normalised units; ``face``: the portrait's own offset from the
   template, so the head pose turns the person's face), is mapped into the portrait's pixels by the linear part of the
   similarity that aligns the reference proxy landmarks to the portrait's 68 landmarks (Umeyama,
   genblocks.faces.align) and added to the portrait's landmarks: the target landmarks (:func:`target_landmarks`);
2. the face crop (:func:`crop_box`): the box around the portrait's and every frame's target landmarks, widened by
   ``crop_margin`` times its longer side on each side and clipped to the photo (``crop_margin=None``: the whole
   photo). Only the crop is warped, at its own resolution (no resampling of the photo, so no added blur);

Per frame:

3. a TPS fitted from the target to the source control points (the 68 landmarks plus fixed anchors on the crop's
   border), evaluated on a coarse grid and upsampled, gives where to sample the portrait; the displacement fades to
   zero within ``border_margin`` of the crop's border;
4. ``torch.nn.functional.grid_sample`` (``interpolation`` bicubic or bilinear, ``align_corners=True``, coordinates
   normalised the same way, so a zero displacement samples every pixel centre exactly);
5. where the inner lips opened beyond the portrait's own gap, the opening is filled with a mouth interior
   (:func:`dream_talk.mouth_interior.fill_mouth`: a dark cavity and an upper-teeth band, colours from the portrait,
   feathered masks); a mouth no more open than the portrait's leaves the frame bit-identical to the no-fill path;
6. the crop is pasted back with a feathered mask (:func:`feather_mask`: a Gaussian-blurred box, 0 on the crop's edge
   and 1 from ``feather`` times the crop's shorter side inwards, on the sides inside the photo): pixels outside the
   crop are exactly the portrait's, and there is no step at the crop's edge.

The paper's learned video-to-video renderer (Face-Vid2Vid fine-tuned on the rig) is not part of this package; plug
one in with ``render.kind: learned`` (:func:`dream_talk.render.load_renderer`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal, NamedTuple

import numpy as np

from dream_talk.mouth_interior import fill_mouth, inner_lip_gap, mouth_colours
from dream_talk.render import proxy_face_offsets, proxy_landmarks
from genblocks.errors import InputError

if TYPE_CHECKING:
    import torch

    from dream_talk.config import RenderConfig
    from genblocks.faces import FaceAnalyzer

__all__ = [
    "PortraitWarpRenderer",
    "border_anchors",
    "crop_box",
    "feather_mask",
    "fit_tps",
    "portrait_landmarks",
    "target_landmarks",
]


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
    values = torch.as_tensor(np.asarray(target, np.float64))
    count = points.shape[0]
    poly = torch.cat([torch.ones(count, 1, dtype=torch.float64), points], dim=1)
    system = torch.zeros(count + 3, count + 3, dtype=torch.float64)
    system[:count, :count] = _tps_kernel(torch.cdist(points, points) ** 2) + regularization * torch.eye(count)
    system[:count, count:], system[count:, :count] = poly, poly.T
    rhs = torch.cat([values, torch.zeros(3, 2, dtype=torch.float64)])
    # torch's solver: numpy's LAPACK may spin up dozens of OpenBLAS threads for this 100 x 100 system
    solved, info = torch.linalg.solve_ex(system, rhs)
    if int(info) != 0:  # coincident control points: the least-squares spline
        solved = torch.linalg.lstsq(system, rhs, driver="gelsd").solution
    solution = solved.numpy()
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


def target_landmarks(landmarks: np.ndarray, motion: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
    """The portrait's landmarks moved by the proxy avatar's motion.

    Args:
        landmarks: (68, 2) the portrait's landmarks in pixels.
        motion: (T, 52 + P) blendshapes and head pose.
        reference: (52 + P,) the motion frame the portrait itself shows (its fitted expression,
            :func:`dream_talk.tracking.portrait_state`); ``None``: neutral (zeros).

    Returns:
        float64 (T, 68, 2) pixels: ``landmarks + (proxy(motion) - proxy(reference)) @ L.T`` with L the linear part
        (scale * rotation) of the similarity aligning the reference proxy to ``landmarks``; the proxy here is posed
        with the portrait's own shape (its offset from the template, in the proxy's frame), so a head turn turns the
        person's face, not only the template's. A frame equal to the reference leaves the landmarks where they are.
    """
    from genblocks.faces.align import umeyama_similarity

    motion = np.asarray(motion, np.float64)
    landmarks = np.asarray(landmarks, np.float64)
    reference = np.zeros(motion.shape[1]) if reference is None else np.asarray(reference, np.float64)
    if reference.shape != (motion.shape[1],):
        raise ValueError(f"reference: expected ({motion.shape[1]},) like a motion frame, got {reference.shape}")
    neutral = proxy_landmarks(reference[None])[0]
    transform = umeyama_similarity(neutral, landmarks)
    linear = transform[:, :2]
    portrait = (landmarks - transform[:, 2]) @ np.linalg.inv(linear).T  # in the proxy's frame
    face_offsets = proxy_face_offsets(portrait, reference[:52])
    posed = proxy_landmarks(motion, face_offsets)
    start = proxy_landmarks(reference[None], face_offsets)[0]
    return landmarks[None] + (posed - start[None]) @ linear.T


def crop_box(points: np.ndarray, height: int, width: int, margin: float | None) -> tuple[int, int, int, int]:
    """The face crop: the box around ``points`` widened by ``margin`` times its longer side on each side.

    Args:
        points: (..., 2) pixel coordinates (the portrait's and every frame's target landmarks).
        height, width: The photo's size.
        margin: Fraction of the box's longer side added on each side; ``None``: the whole photo.

    Returns:
        ``(x0, y0, x1, y1)`` integer pixel bounds (end exclusive), clipped to the photo, at least 2 px a side.
    """
    if margin is None:
        return 0, 0, width, height
    flat = np.asarray(points, np.float64).reshape(-1, 2)
    low, high = flat.min(0), flat.max(0)
    pad = margin * float((high - low).max())
    x0, y0 = (int(max(0, math.floor(v - pad))) for v in low)
    x1, y1 = int(min(width, math.ceil(high[0] + pad) + 1)), int(min(height, math.ceil(high[1] + pad) + 1))
    x0, y0 = min(x0, max(width - 2, 0)), min(y0, max(height - 2, 0))
    return x0, y0, max(x1, x0 + 2), max(y1, y0 + 2)


def _ramp(length: int, width: float, fade_start: bool, fade_end: bool) -> np.ndarray:
    """(length,) Gaussian-blurred box profile: 0 at a faded end's pixel, 1 from ``width`` pixels inwards."""
    depth = np.arange(length, dtype=np.float64)
    distances = []
    if fade_start:
        distances.append(depth)
    if fade_end:
        distances.append(depth[::-1])
    if not distances or width <= 0:
        return np.ones(length)
    distance = np.minimum.reduce(distances)
    # a box inset by width / 2 blurred with sigma = width / 6, rescaled so that it is exactly 0 at distance 0 and 1
    # at distance >= width (the Gaussian's +-3 sigma)
    low, high = 0.5 * (1.0 + math.erf(-3.0 / math.sqrt(2.0))), 0.5 * (1.0 + math.erf(3.0 / math.sqrt(2.0)))
    scaled = (distance - 0.5 * width) / (width / 6.0) / math.sqrt(2.0)
    blurred = 0.5 * (1.0 + np.array([math.erf(v) for v in scaled]))
    return np.clip((blurred - low) / (high - low), 0.0, 1.0)


def feather_mask(box: tuple[int, int, int, int], height: int, width: int, feather: float) -> np.ndarray | None:
    """The paste-back mask of a crop: a Gaussian-blurred box, 0 on each crop edge that lies inside the photo and 1
    from ``feather`` times the crop's shorter side inwards (edges on the photo's border are not faded).

    Args:
        box: ``(x0, y0, x1, y1)`` from :func:`crop_box`.
        height, width: The photo's size.
        feather: Ramp width as a fraction of the crop's shorter side (0: a hard paste).

    Returns:
        float32 (h, w, 1) with (h, w) the crop's size, or ``None`` when it is all ones.
    """
    x0, y0, x1, y1 = box
    ramp_width = feather * min(x1 - x0, y1 - y0)
    across = _ramp(x1 - x0, ramp_width, x0 > 0, x1 < width)
    down = _ramp(y1 - y0, ramp_width, y0 > 0, y1 < height)
    if (across == 1.0).all() and (down == 1.0).all():
        return None
    return (down[:, None] * across[None, :]).astype(np.float32)[..., None]


class _Grids(NamedTuple):
    """Per-size constants of the warp: the identity grid (H, W, 2), the border fade (H, W, 1), the coarse grid (N, 2)
    of ``coarse_size`` where the spline is evaluated, and the kernel (N, A) between it and the border anchors."""

    size: tuple[int, int]
    grid: torch.Tensor
    fade: torch.Tensor
    coarse: torch.Tensor
    coarse_size: tuple[int, int]
    anchor_kernel: torch.Tensor


class PortraitWarpRenderer:
    """A :class:`~dream_talk.render.Renderer` that warps a face crop of the portrait with a TPS driven by its moved
    landmarks, fills the opened mouth and pastes the crop back with a feathered mask (module docstring).

    Args:
        landmarks: The portrait's 68 landmarks in pixels (68, 2); ``None``: found with ``analyzer`` on each call.
        analyzer: A ``genblocks.faces.FaceAnalyzer`` (default: genblocks' dlib analyser, the ``face`` extra).
        anchors_per_side: Fixed TPS control points per crop side.
        border_margin: Width of the band along the crop's border (fraction of its side) over which the displacement
            fades to zero.
        regularization: TPS smoothing (see :func:`fit_tps`).
        max_angle: Head pitch, yaw and roll are clipped to this many radians, and
        max_shift: the head's x, y translation and z scale change to this (normalised units): a 2-D warp of one
            photo cannot show a head turned or moved far (the stretched background folds), so poses beyond what it
            can render (e.g. from random weights) are held at the limit.
        tps_resolution: The spline is evaluated on a grid of at most this many points per side and its
            displacement upsampled bilinearly (the warp is smooth; this keeps a frame cheap).
        crop_margin: Face crop margin (:func:`crop_box`); ``None`` warps the whole photo.
        feather: Paste-back ramp width, a fraction of the crop's shorter side (:func:`feather_mask`).
        interpolation: ``"bicubic"`` (sharper) or ``"bilinear"`` sampling of the portrait.
        mouth_fill: Paint the mouth interior where the lips open beyond the portrait's own gap.
        cavity_darkness: The cavity colour is the portrait's mean lip colour times this.
        teeth_height: Upper-teeth band height as a fraction of the mouth opening,
        teeth_max: capped at this fraction of the inner mouth width.
        mouth_feather: Blur sigma of the mouth masks as a fraction of the inner mouth width.
        reference: (52 + P,) the motion frame the portrait shows (:func:`target_landmarks`); ``None``: neutral.
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
        crop_margin: float | None = 0.5,
        feather: float = 0.1,
        interpolation: Literal["bicubic", "bilinear"] = "bicubic",
        mouth_fill: bool = True,
        cavity_darkness: float = 0.3,
        teeth_height: float = 0.3,
        teeth_max: float = 0.2,
        mouth_feather: float = 0.04,
        reference: np.ndarray | None = None,
    ) -> None:
        if landmarks is not None:
            landmarks = np.asarray(landmarks, np.float64)
            if landmarks.shape != (68, 2) or not np.isfinite(landmarks).all():
                raise ValueError(f"landmarks: expected finite (68, 2) pixel coordinates, got {landmarks.shape}")
        if interpolation not in ("bicubic", "bilinear"):
            raise ValueError(f"interpolation: expected bicubic or bilinear, got {interpolation!r}")
        self.landmarks = landmarks
        self.analyzer = analyzer
        self.anchors_per_side = anchors_per_side
        self.border_margin = border_margin
        self.regularization = regularization
        self.max_angle = max_angle
        self.max_shift = max_shift
        self.tps_resolution = tps_resolution
        self.crop_margin = crop_margin
        self.feather = feather
        self.interpolation = interpolation
        self.mouth_fill = mouth_fill
        self.cavity_darkness = cavity_darkness
        self.teeth_height = teeth_height
        self.teeth_max = teeth_max
        self.mouth_feather = mouth_feather
        self.reference = reference
        self._cache: _Grids | None = None

    @classmethod
    def from_config(cls, render: RenderConfig, landmarks: np.ndarray | None = None) -> PortraitWarpRenderer:
        """The renderer ``render`` (the ``render`` section of the config) describes, for these landmarks."""
        return cls(
            landmarks,
            crop_margin=render.crop_margin,
            feather=render.feather,
            interpolation=render.interpolation,
            mouth_fill=render.mouth_fill,
            cavity_darkness=render.cavity_darkness,
            teeth_height=render.teeth_height,
            teeth_max=render.teeth_max,
            mouth_feather=render.mouth_feather,
        )

    def _grids(self, height: int, width: int) -> _Grids:
        """The per-size constants of :meth:`sampling_grid`, cached for the last size."""
        import torch

        if self._cache is not None and self._cache.size == (height, width):
            return self._cache
        ys = torch.linspace(-1.0, 1.0, height, dtype=torch.float64)
        xs = torch.linspace(-1.0, 1.0, width, dtype=torch.float64)
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # (H, W, 2) as (x, y)
        margin = max(self.border_margin * 2.0, 1e-6)
        fade = ((1.0 - grid.abs()).amin(dim=-1, keepdim=True) / margin).clamp(0.0, 1.0)
        fade = fade * fade * (3.0 - 2.0 * fade)
        coarse_h, coarse_w = min(height, self.tps_resolution), min(width, self.tps_resolution)
        coarse = torch.stack(
            torch.meshgrid(torch.linspace(-1.0, 1.0, coarse_w), torch.linspace(-1.0, 1.0, coarse_h), indexing="xy"),
            dim=-1,
        ).reshape(-1, 2)
        anchors = torch.from_numpy(border_anchors(self.anchors_per_side)).float()
        anchor_kernel = _tps_kernel(((coarse[:, None] - anchors[None]) ** 2).sum(-1))
        self._cache = _Grids((height, width), grid.float(), fade.float(), coarse, (coarse_h, coarse_w), anchor_kernel)
        return self._cache

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
        # the spline is smooth: evaluate it on a grid of at most ``tps_resolution`` per side, upsample bilinearly; the
        # anchors' kernel columns are the same every frame
        grids = self._grids(height, width)
        coarse, count = grids.coarse, len(target)
        moving = torch.from_numpy(control[:count]).float()
        kernel = _tps_kernel(
            (coarse[:, None, 0] - moving[None, :, 0]) ** 2 + (coarse[:, None, 1] - moving[None, :, 1]) ** 2
        )
        weights_t, affine_t = torch.from_numpy(weights).float(), torch.from_numpy(affine).float()
        mapped = (
            affine_t[0] + coarse @ affine_t[1:] + kernel @ weights_t[:count] + grids.anchor_kernel @ weights_t[count:]
        )
        displacement = (mapped - coarse).reshape(1, *grids.coarse_size, 2).permute(0, 3, 1, 2)
        displacement = F.interpolate(displacement, size=(height, width), mode="bilinear", align_corners=True)
        return grids.grid + displacement[0].permute(1, 2, 0) * grids.fade

    def __call__(self, portrait: np.ndarray, motion: np.ndarray) -> np.ndarray:
        """Args: portrait uint8 (H, W, 3); motion (T, 52 + P). Returns uint8 (T, H, W, 3).

        Raises:
            InputError: no landmarks given and no face found in the portrait.
        """
        import torch
        import torch.nn.functional as F

        portrait = np.asarray(portrait)[..., :3]
        height, width = portrait.shape[:2]
        source = self.landmarks if self.landmarks is not None else portrait_landmarks(portrait, self.analyzer)
        motion = np.array(motion, np.float64)
        motion[:, 52:55] = np.clip(motion[:, 52:55], -self.max_angle, self.max_angle)
        motion[:, 55:58] = np.clip(motion[:, 55:58], -self.max_shift, self.max_shift)
        targets = target_landmarks(source, motion, self.reference)
        # 1. the face crop, its landmarks and its paste-back mask
        box = crop_box(np.concatenate([source[None], targets]), height, width, self.crop_margin)
        x0, y0, x1, y1 = box
        offset = np.array([x0, y0], np.float64)
        crop = np.array(portrait[y0:y1, x0:x1])
        crop_source, crop_targets = source - offset, targets - offset
        mask = feather_mask(box, height, width, self.feather)
        colours = mouth_colours(portrait, source, self.cavity_darkness) if self.mouth_fill else None
        source_gap = inner_lip_gap(source)
        image = torch.from_numpy(crop).permute(2, 0, 1)[None].float()
        still = crop.astype(np.float32)
        frames = np.repeat(portrait[None], len(targets), axis=0)
        with torch.no_grad():
            for index, target in enumerate(crop_targets):
                # 2. warp the crop
                grid = self.sampling_grid(crop_source, target, y1 - y0, x1 - x0)
                warped_t = F.grid_sample(
                    image, grid[None], mode=self.interpolation, padding_mode="border", align_corners=True
                )
                warped = warped_t[0].permute(1, 2, 0).numpy()
                # 3. the mouth interior where the lips opened
                if colours is not None:
                    warped = fill_mouth(
                        warped, target, source_gap, colours, self.teeth_height, self.teeth_max, self.mouth_feather
                    )
                # 4. feathered paste-back
                if mask is not None:
                    warped = still + (warped - still) * mask
                frames[index, y0:y1, x0:x1] = np.clip(np.rint(warped), 0, 255).astype(np.uint8)
        return frames
