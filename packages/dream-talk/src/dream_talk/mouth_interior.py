"""A synthetic mouth interior for the warp renderer: when the jaw opens further than in the portrait, the opened
inner-lip polygon is filled with a dark oral cavity and an upper-teeth band, composited with feathered masks.

A geometric warp only stretches the lips' pixels when the mouth opens; this paints what the opening shows. All
colours come from the portrait (:func:`mouth_colours`):

- cavity: the portrait's mean lip colour (pixels inside the outer lip line 48-59 and outside the inner one 60-67)
  times ``cavity_darkness``: a dark red-brown that matches the lips' hue and the photo's exposure;
- teeth: ivory (236, 228, 212) times the portrait's face brightness (mean luma of the pixels inside the landmarks'
  bounding box / 170, clipped to [0.5, 1]), blended towards the cavity colour at the mouth corners (depth).

The teeth band hangs under the upper inner lip (60-64): its height is ``teeth_height`` times the opening (the mean
distance of the inner-lip pairs 61-67, 62-66, 63-65), capped at ``teeth_max`` times the inner mouth width (60-64).
Both masks are rasterised (PIL) and Gaussian-blurred with sigma ``feather`` times the mouth width, so the fill has no
hard edge. Its opacity ramps with the extra opening, ``clip((opening - portrait opening) / (0.1 * mouth width), 0,
1)``: a closed mouth (or one no more open than the portrait's) leaves the frame bit-identical.
"""

from __future__ import annotations

import numpy as np

__all__ = ["MouthColours", "fill_mouth", "gaussian_blur", "inner_lip_gap", "mouth_colours", "polygon_mask"]

_UPPER_INNER, _LOWER_INNER = [61, 62, 63], [67, 66, 65]
_INNER, _OUTER = list(range(60, 68)), list(range(48, 60))
_TEETH_LINE = [60, 61, 62, 63, 64]
_IVORY = np.array([236.0, 228.0, 212.0])


def inner_lip_gap(landmarks: np.ndarray) -> float:
    """The mouth opening in pixels: mean distance between the upper (61, 62, 63) and lower (67, 66, 65) inner lip.

    Args:
        landmarks: (68, 2) pixel coordinates.
    """
    return float(np.linalg.norm(landmarks[_LOWER_INNER] - landmarks[_UPPER_INNER], axis=1).mean())


def polygon_mask(points: np.ndarray, height: int, width: int) -> np.ndarray:
    """A filled polygon as a float32 (H, W) mask of 0 and 1 (PIL's rasteriser, pixel centres at integer coordinates).

    Args:
        points: (N, 2) vertices in pixels (x, y).
    """
    from PIL import Image, ImageDraw

    image = Image.new("L", (width, height), 0)
    ImageDraw.Draw(image).polygon([(float(x), float(y)) for x, y in points], fill=255)
    return np.asarray(image, np.float32) / 255.0


def gaussian_blur(mask: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur (zero padding, kernel radius 3 sigma) of a float (H, W) array; ``sigma <= 0``: a copy."""
    out = np.array(mask, np.float32)
    if sigma <= 0:
        return out
    radius = max(1, int(np.ceil(3.0 * sigma)))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps = (taps / taps.sum()).astype(np.float32)
    for axis in (0, 1):
        padded = np.pad(out, [(radius, radius) if a == axis else (0, 0) for a in (0, 1)])
        length = out.shape[axis]
        out = sum(  # type: ignore[assignment]
            weight * np.take(padded, np.arange(k, k + length), axis=axis) for k, weight in enumerate(taps)
        )
    return np.asarray(out, np.float32)


class MouthColours:
    """The cavity and teeth colours of one portrait (float64 RGB in [0, 255], see the module docstring).

    Args:
        cavity: (3,) the oral cavity.
        teeth: (3,) the teeth.
    """

    def __init__(self, cavity: np.ndarray, teeth: np.ndarray) -> None:
        self.cavity = np.asarray(cavity, np.float64)
        self.teeth = np.asarray(teeth, np.float64)

    def __repr__(self) -> str:
        return f"MouthColours(cavity={self.cavity.round(1).tolist()}, teeth={self.teeth.round(1).tolist()})"


def mouth_colours(portrait: np.ndarray, landmarks: np.ndarray, cavity_darkness: float = 0.3) -> MouthColours:
    """The mouth-interior colours derived from ``portrait`` (module docstring).

    Args:
        portrait: uint8 (H, W, 3).
        landmarks: (68, 2) its landmarks in pixels.
        cavity_darkness: The cavity is the mean lip colour times this.
    """
    image = np.asarray(portrait, np.float64)[..., :3]
    height, width = image.shape[:2]
    lips = polygon_mask(landmarks[_OUTER], height, width) * (1.0 - polygon_mask(landmarks[_INNER], height, width))
    if lips.sum() < 1.0:  # a degenerate lip line: the pixels around the mouth centre
        centre = np.clip(landmarks[_OUTER].mean(0).round().astype(int), 0, [width - 1, height - 1])
        lip_colour = image[centre[1], centre[0]]
    else:
        lip_colour = (image * lips[..., None]).sum((0, 1)) / lips.sum()
    x0, y0 = np.clip(np.floor(landmarks.min(0)).astype(int), 0, [width - 1, height - 1])
    x1, y1 = np.clip(np.ceil(landmarks.max(0)).astype(int) + 1, 1, [width, height])
    luma = float((image[y0:y1, x0:x1] @ np.array([0.299, 0.587, 0.114])).mean())
    return MouthColours(lip_colour * cavity_darkness, _IVORY * float(np.clip(luma / 170.0, 0.5, 1.0)))


def fill_mouth(
    image: np.ndarray,
    landmarks: np.ndarray,
    source_gap: float,
    colours: MouthColours,
    teeth_height: float = 0.3,
    teeth_max: float = 0.2,
    feather: float = 0.04,
) -> np.ndarray:
    """Paint the mouth interior into a warped frame where its inner lips opened beyond the portrait's.

    Args:
        image: float32 (H, W, 3) in [0, 255], the warped frame (not modified).
        landmarks: (68, 2) the frame's (moved) landmarks in the image's pixels.
        source_gap: The portrait's own opening (:func:`inner_lip_gap` of its landmarks).
        colours: From :func:`mouth_colours` of the portrait.
        teeth_height: Teeth band height as a fraction of the opening.
        teeth_max: Cap of the teeth band height as a fraction of the inner mouth width.
        feather: Mask blur sigma as a fraction of the inner mouth width.

    Returns:
        float32 (H, W, 3): ``image`` itself (the same object) when the mouth is not open further than the portrait's,
        else a copy with the interior composited in.
    """
    mouth_width = float(np.linalg.norm(landmarks[64] - landmarks[60]))
    gap = inner_lip_gap(landmarks)
    strength = float(np.clip((gap - source_gap) / max(0.1 * mouth_width, 1e-6), 0.0, 1.0))
    if strength <= 0.0:
        return image
    height, width = image.shape[:2]
    sigma = feather * mouth_width
    pad = int(np.ceil(3.0 * sigma)) + 2
    inner = landmarks[_INNER]
    x0, y0 = np.maximum(np.floor(inner.min(0)).astype(int) - pad, 0)
    x1, y1 = np.minimum(np.ceil(inner.max(0)).astype(int) + pad + 1, [width, height])
    if x1 <= x0 or y1 <= y0:
        return image
    offset = np.array([x0, y0], np.float64)
    box_h, box_w = int(y1 - y0), int(x1 - x0)
    cavity = polygon_mask(inner - offset, box_h, box_w)
    line = landmarks[_TEETH_LINE] - offset
    band = min(teeth_height * gap, teeth_max * mouth_width)
    lowered = line + np.array([0.0, band])
    teeth_polygon = np.concatenate([line, lowered[::-1]])
    teeth = gaussian_blur(polygon_mask(teeth_polygon, box_h, box_w) * cavity, 0.5 * sigma)
    # teeth recede into the cavity towards the corners
    xs = np.arange(box_w, dtype=np.float64)
    centre, half = 0.5 * (line[0, 0] + line[-1, 0]), max(0.5 * abs(line[-1, 0] - line[0, 0]), 1e-6)
    depth = np.clip(1.0 - ((xs - centre) / half) ** 2, 0.0, 1.0)[None, :, None]
    teeth_colour = colours.cavity + (colours.teeth - colours.cavity) * (0.35 + 0.65 * depth)
    interior = colours.cavity + (teeth_colour - colours.cavity) * teeth[..., None]
    alpha = (gaussian_blur(cavity, sigma) * strength)[..., None]
    out = np.array(image, np.float32)
    region = out[y0:y1, x0:x1]
    out[y0:y1, x0:x1] = region * (1.0 - alpha) + (interior * alpha).astype(np.float32)
    return out
