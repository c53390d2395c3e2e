"""The TPS portrait warp: exact identity, jaw-open moves only the lower face, border fixed, shapes."""

from __future__ import annotations

import numpy as np
import pytest

from dream_talk.motion import blendshape_index
from dream_talk.render import template_landmarks
from dream_talk.warp_render import PortraitWarpRenderer, fit_tps, target_landmarks

SIZE = 96
# the neutral proxy face placed in a 96 x 96 picture: 30 px per normalised unit, centred at (48, 44)
LANDMARKS = template_landmarks() * 30.0 + np.array([48.0, 44.0])


def _portrait() -> np.ndarray:
    """A textured picture (smooth gradients plus stripes) so any warp changes pixels."""
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    red = 128 + 100 * np.sin(x / 3.0)
    green = 128 + 100 * np.sin(y / 2.5)
    blue = 128 + 100 * np.sin((x + y) / 4.0)
    return np.stack([red, green, blue], -1).round().astype(np.uint8)


def _motion(frames: int = 1, jaw: float = 0.0) -> np.ndarray:
    motion = np.zeros((frames, 58))
    motion[:, blendshape_index("jawOpen")] = jaw
    return motion


def test_tps_interpolates_and_reproduces_affine() -> None:
    rng = np.random.default_rng(0)
    source = rng.uniform(-1, 1, (20, 2))
    target = source + 0.1 * rng.standard_normal((20, 2))
    weights, affine = fit_tps(source, target, regularization=0.0)
    squared = ((source[:, None] - source[None]) ** 2).sum(-1)
    kernel = squared * np.log(np.maximum(squared, 1e-20))
    mapped = affine[0] + source @ affine[1:] + kernel @ weights
    assert np.abs(mapped - target).max() < 1e-9
    weights, affine = fit_tps(source, source @ np.array([[1.1, 0.2], [-0.1, 0.9]]) + 0.3)
    assert np.abs(weights).max() < 1e-9
    assert np.allclose(affine, [[0.3, 0.3], [1.1, 0.2], [-0.1, 0.9]])


def test_identity_motion_renders_the_portrait() -> None:
    portrait = _portrait()
    frames = PortraitWarpRenderer(LANDMARKS)(portrait, _motion(2))
    assert frames.shape == (2, SIZE, SIZE, 3) and frames.dtype == np.uint8
    assert np.abs(frames.astype(int) - portrait.astype(int)).max() <= 1


def test_jaw_open_moves_only_the_lower_face() -> None:
    moved = target_landmarks(LANDMARKS, _motion(1, jaw=1.0))[0] - LANDMARKS
    distance = np.linalg.norm(moved, axis=1)
    # the jaw line below the nose base (template y > 0.2: points 2-14, not the ones by the ears), the mouth
    lower = [i for i in range(17) if template_landmarks()[i, 1] > 0.2] + list(range(48, 68))
    assert 0 not in lower and 16 not in lower and 8 in lower
    upper = [i for i in range(68) if i not in lower]
    assert distance[upper].max() < 1e-6
    assert distance[8] > 5.0  # the chin drops by 0.3 units * 30 px
    assert (moved[lower, 1] >= 0).all()


def test_jaw_open_changes_pixels_below_the_nose_not_above_the_eyes() -> None:
    portrait = _portrait()
    frame = PortraitWarpRenderer(LANDMARKS)(portrait, _motion(1, jaw=1.0))[0]
    diff = np.abs(frame.astype(int) - portrait.astype(int)).mean(-1)
    nose_y = int(LANDMARKS[33, 1])
    brow_y = int(LANDMARKS[17:27, 1].min())
    below, above = diff[nose_y + 2 : -5, 5:-5].mean(), diff[5 : brow_y - 2, 5:-5].mean()
    assert below > 10.0 * max(above, 0.1), (below, above)
    assert below > 5.0


def test_border_pixels_unchanged_under_head_motion() -> None:
    portrait = _portrait()
    motion = _motion(3, jaw=0.8)
    motion[:, 52:55] = [[0.2, 0.3, 0.1], [-0.2, -0.3, -0.1], [0.0, 0.0, 0.3]]
    frames = PortraitWarpRenderer(LANDMARKS)(portrait, motion)
    for frame in frames:
        assert np.abs(frame[0].astype(int) - portrait[0]).max() <= 1
        assert np.abs(frame[-1].astype(int) - portrait[-1]).max() <= 1
        assert np.abs(frame[:, 0].astype(int) - portrait[:, 0]).max() <= 1
        assert np.abs(frame[:, -1].astype(int) - portrait[:, -1]).max() <= 1
    assert np.abs(frames[0].astype(int) - portrait).mean() > 1.0


def test_bad_landmarks_rejected() -> None:
    with pytest.raises(ValueError, match="landmarks"):
        PortraitWarpRenderer(np.zeros((5, 2)))


def test_render_kind_config_defaults_to_warp_and_rejects_others() -> None:
    from dream_talk.config import RenderConfig, load_shipped_config

    assert load_shipped_config("paper").render.kind == "warp"
    assert load_shipped_config("tiny", ["render.kind=preview"]).render.kind == "preview"
    with pytest.raises(Exception, match="kind"):
        RenderConfig(kind="photoreal")  # type: ignore[arg-type]


def test_head_pose_held_within_the_warpable_range() -> None:
    portrait = _portrait()
    renderer = PortraitWarpRenderer(LANDMARKS, max_angle=0.3, max_shift=0.1)
    extreme, limit = _motion(1, jaw=0.5), _motion(1, jaw=0.5)
    extreme[0, 52:58] = [1.5, -1.5, 1.5, 1.5, -1.5, 1.5]
    limit[0, 52:58] = [0.3, -0.3, 0.3, 0.1, -0.1, 0.1]
    assert np.array_equal(renderer(portrait, extreme), renderer(portrait, limit))
    assert not np.array_equal(renderer(portrait, limit), renderer(portrait, _motion(1, jaw=0.5)))
