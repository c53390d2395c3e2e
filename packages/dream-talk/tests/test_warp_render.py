"""The TPS portrait warp: exact identity, jaw-open moves only the lower face, border fixed, shapes; the mouth
interior (bit-identical when the mouth does not open, a dark cavity and a teeth band scaled with the opening, no hard
edge); the face crop and its feathered paste-back (pixels outside the crop are the portrait's, no step at the crop's
edge, equal to the whole-photo warp in the face)."""

from __future__ import annotations

import numpy as np
import pytest

from dream_talk.motion import blendshape_index
from dream_talk.render import template_landmarks
from dream_talk.warp_render import PortraitWarpRenderer, crop_box, feather_mask, fit_tps, target_landmarks

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


def test_a_frame_equal_to_the_reference_renders_the_portrait() -> None:
    portrait = _portrait()
    reference = _motion(1, jaw=0.3)[0]
    reference[blendshape_index("mouthSmileLeft")] = 0.4
    renderer = PortraitWarpRenderer(LANDMARKS, reference=reference)
    frames = renderer(portrait, np.stack([reference, np.zeros(58)]))
    assert np.abs(frames[0].astype(int) - portrait.astype(int)).max() <= 1
    assert np.abs(frames[1].astype(int) - portrait.astype(int)).max() > 20  # neutral is a change from this portrait
    moved = target_landmarks(LANDMARKS, np.stack([reference, np.zeros(58)]), reference)
    assert np.abs(moved[0] - LANDMARKS).max() < 1e-9
    with pytest.raises(ValueError, match="reference"):
        target_landmarks(LANDMARKS, _motion(1), np.zeros(57))


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


# --- mouth interior -------------------------------------------------------------------------------------------------

BIG = template_landmarks() * 60.0 + np.array([96.0, 90.0])  # a 24-px wide inner mouth in a 192 x 192 picture


def _skin(size: int = 192) -> np.ndarray:
    """A smooth skin-like picture with red lips painted between the outer (48-59) and inner (60-67) lip lines."""
    from dream_talk.mouth_interior import polygon_mask

    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    image = np.stack([200 + 20 * np.sin(x / 17), 150 + 20 * np.sin(y / 13), 120 + 15 * np.sin((x + y) / 19)], -1)
    lips = polygon_mask(BIG[48:60], size, size) * (1 - polygon_mask(BIG[60:68], size, size))
    image = image * (1 - lips[..., None]) + np.array([180.0, 60.0, 70.0]) * lips[..., None]
    return image.round().astype(np.uint8)


def test_closed_mouth_is_bit_identical_to_the_no_fill_path() -> None:
    portrait = _skin()
    motion = np.zeros((4, 58))
    motion[1, blendshape_index("mouthSmileLeft")] = 1.0
    motion[2, [blendshape_index("eyeBlinkLeft"), blendshape_index("browInnerUp")]] = 1.0
    motion[3, [blendshape_index("jawOpen"), blendshape_index("mouthClose")]] = [0.3, 1.0]  # lips meet: gap shrinks
    motion[3, 52:55] = [0.1, 0.2, 0.1]
    filled = PortraitWarpRenderer(BIG)(portrait, motion)
    plain = PortraitWarpRenderer(BIG, mouth_fill=False)(portrait, motion)
    assert np.array_equal(filled, plain)
    open_jaw = _motion(1, jaw=0.8)
    assert not np.array_equal(PortraitWarpRenderer(BIG)(portrait, open_jaw), plain[:1])


def test_open_mouth_is_filled_with_a_dark_cavity_and_an_upper_teeth_band() -> None:
    from dream_talk.mouth_interior import inner_lip_gap, mouth_colours

    portrait = _skin()
    colours = mouth_colours(portrait, BIG, cavity_darkness=0.3)
    np.testing.assert_allclose(colours.cavity, 0.3 * np.array([180.0, 60.0, 70.0]), atol=1.5)  # lip colour x 0.3
    assert colours.teeth.min() > 150 and colours.teeth[0] > colours.cavity[0] + 100
    motion = _motion(1, jaw=1.0)
    target = target_landmarks(BIG, motion)[0]
    frame = PortraitWarpRenderer(BIG)(portrait, motion)[0].astype(float)
    plain = PortraitWarpRenderer(BIG, mouth_fill=False)(portrait, motion)[0].astype(float)
    gap = inner_lip_gap(target)
    top, bottom = target[62], target[66]  # upper and lower inner lip at the mouth's centre line
    x = round(float(top[0]))
    teeth_y = round(float(top[1] + 0.15 * gap))  # inside the band (0.3 x the opening under the upper lip)
    cavity_y = round(float(top[1] + 0.7 * gap))
    assert gap > 10.0 and frame[teeth_y, x].mean() > 150.0
    np.testing.assert_allclose(frame[cavity_y, x], colours.cavity, atol=6.0)
    assert frame[cavity_y, x].mean() < plain[cavity_y, x].mean() - 60.0
    # the band scales with the opening: at jawOpen 0.5 it is thinner
    half = target_landmarks(BIG, _motion(1, jaw=0.5))[0]
    frame_half = PortraitWarpRenderer(BIG)(portrait, _motion(1, jaw=0.5))[0].astype(float)
    column = frame[int(top[1]) : int(bottom[1]), x].mean(-1)
    column_half = frame_half[int(half[62, 1]) : int(half[66, 1]), x].mean(-1)
    assert (column > 150).sum() > (column_half > 150).sum() >= 1


def test_mouth_fill_has_no_hard_edge() -> None:
    from dream_talk.mouth_interior import fill_mouth, inner_lip_gap, mouth_colours

    portrait = _skin()
    target = target_landmarks(BIG, _motion(1, jaw=1.0))[0]
    colours = mouth_colours(portrait, BIG)
    grey = np.full((192, 192, 3), 200.0, np.float32)
    soft = fill_mouth(grey, target, inner_lip_gap(BIG), colours, feather=0.04)
    hard = fill_mouth(grey, target, inner_lip_gap(BIG), colours, feather=0.0)
    assert fill_mouth(grey, BIG, inner_lip_gap(BIG), colours) is grey  # not opened: untouched
    x = round(float(target[66, 0]))
    for image, limit in ((soft, 0.5), (hard, 1.0)):
        # across the lower inner lip: the blend from the cavity to the surrounding grey
        profile = image[int(target[62, 1]) + 8 : int(target[66, 1]) + 8, x].mean(-1)
        contrast = 200.0 - profile.min()
        steps = np.abs(np.diff(profile))
        if limit < 1.0:
            assert steps.max() < limit * contrast, (steps.max(), contrast)  # spread over several pixels
        else:
            assert steps.max() > 0.6 * contrast  # the unfeathered mask is a step: the check can fail


# --- face crop and feathered paste-back -----------------------------------------------------------------------------

CROP_SIZE = 192
CROP_LANDMARKS = template_landmarks() * 24.0 + np.array([90.0, 80.0])  # a 41-px face in a 192-px photo


def _smooth() -> np.ndarray:
    """A smooth textured picture (adjacent pixels differ by at most ~6 grey levels)."""
    y, x = np.mgrid[0:CROP_SIZE, 0:CROP_SIZE].astype(np.float64)
    channels = [128 + 60 * np.sin(x / 11), 128 + 60 * np.sin(y / 9 + 1), 128 + 50 * np.sin((x + y) / 13)]
    return np.stack(channels, -1).round().astype(np.uint8)


def _talking(frames: int = 3) -> np.ndarray:
    motion = _motion(frames, jaw=0.0)
    motion[:, blendshape_index("jawOpen")] = np.linspace(0.3, 1.0, frames)
    poses = [[0.2, 0.3, 0.1, 0.1, -0.1, 0.1], [-0.2, -0.3, -0.2, -0.1, 0.1, -0.1], [0.0, 0.35, 0.35, 0.15, 0.15, 0.15]]
    motion[:, 52:58] = np.array(poses)[np.arange(frames) % 3]
    return motion


def _box(motion: np.ndarray) -> tuple[int, int, int, int]:
    points = np.concatenate([CROP_LANDMARKS[None], target_landmarks(CROP_LANDMARKS, motion)])
    return crop_box(points, CROP_SIZE, CROP_SIZE, 0.5)


def _edge_step(frame: np.ndarray, box: tuple[int, int, int, int]) -> int:
    """Largest difference between the pixel pairs straddling the crop's edge (last inside, first outside)."""
    x0, y0, x1, y1 = box
    f = frame.astype(int)
    pairs = [
        (f[y0:y1, x0], f[y0:y1, x0 - 1]),
        (f[y0:y1, x1 - 1], f[y0:y1, x1]),
        (f[y0, x0:x1], f[y0 - 1, x0:x1]),
        (f[y1 - 1, x0:x1], f[y1, x0:x1]),
    ]
    return int(max(np.abs(a - b).max() for a, b in pairs))


def test_pixels_outside_the_crop_are_the_portrait_and_zero_motion_is_the_identity() -> None:
    portrait = _smooth()
    motion = _talking(3)
    box = _box(motion)
    x0, y0, x1, y1 = box
    assert 0 < x0 < x1 < CROP_SIZE and 0 < y0 < y1 < CROP_SIZE  # the crop is inside the photo
    assert (x1 - x0) * (y1 - y0) < 0.4 * CROP_SIZE**2
    frames = PortraitWarpRenderer(CROP_LANDMARKS)(portrait, motion)
    outside = np.ones((CROP_SIZE, CROP_SIZE), bool)
    outside[y0:y1, x0:x1] = False
    for frame in frames:
        assert np.array_equal(frame[outside], portrait[outside])
        assert np.abs(frame[y0:y1, x0:x1].astype(int) - portrait[y0:y1, x0:x1]).max() > 20  # it did move
    still = PortraitWarpRenderer(CROP_LANDMARKS)(portrait, np.zeros((2, 58)))
    assert np.abs(still.astype(int) - portrait).max() <= 1


def test_paste_back_has_no_step_at_the_crop_edge() -> None:
    """Across the crop's edge the frame differs between neighbours by at most what the portrait does there plus 2 grey
    levels: 1 for the two pixels' independent rounding to uint8, 1 for the sub-pixel motion left where both the TPS
    fade and the paste-back ramp are near 0 (the portrait's gradient is <= 6 levels per pixel). A hard paste of the
    whole-photo warp's crop (what a renderer without fade and feather would do) steps by tens of levels."""
    portrait = _smooth()
    motion = _talking(3)
    box = _box(motion)
    frames = PortraitWarpRenderer(CROP_LANDMARKS)(portrait, motion)
    whole = PortraitWarpRenderer(CROP_LANDMARKS, crop_margin=None)(portrait, motion)
    x0, y0, x1, y1 = box
    for frame, reference in zip(frames, whole, strict=True):
        assert _edge_step(frame, box) <= _edge_step(portrait, box) + 2
        hard = portrait.copy()
        hard[y0:y1, x0:x1] = reference[y0:y1, x0:x1]
        assert _edge_step(hard, box) > _edge_step(portrait, box) + 20


def test_crop_path_matches_the_whole_photo_path_in_the_face() -> None:
    portrait = _smooth()
    motion = _talking(3)
    crop = PortraitWarpRenderer(CROP_LANDMARKS)(portrait, motion).astype(int)
    whole = PortraitWarpRenderer(CROP_LANDMARKS, crop_margin=None)(portrait, motion).astype(int)
    low, high = CROP_LANDMARKS[36:68].min(0).astype(int), CROP_LANDMARKS[36:68].max(0).astype(int)
    face = np.abs(crop - whole)[:, low[1] : high[1] + 12, low[0] : high[0]]  # eyes to below the opened mouth
    assert face.max() <= 4 and face.mean() < 0.5, (face.max(), face.mean())


def test_feather_mask_ramps_from_zero_on_inner_edges_to_one() -> None:
    mask = feather_mask((10, 0, 110, 80), height=80, width=200, feather=0.25)  # touches the top and bottom
    assert mask is not None and mask.shape == (80, 100, 1)
    row = mask[40, :, 0]
    assert row[0] == 0.0 and row[-1] == 0.0 and row[20] == 1.0 and row[50] == 1.0  # 0.25 x 80 = 20 px ramp
    assert (np.diff(row[:21]) >= 0).all() and 0.3 < row[10] < 0.7
    assert (mask[:, 50, 0] == 1.0).all()  # the photo's top and bottom border are not faded
    assert feather_mask((0, 0, 200, 80), 80, 200, 0.25) is None  # the whole photo: nothing to blend
    assert feather_mask((10, 10, 50, 50), 80, 200, 0.0) is None  # feather 0: a hard paste


def test_render_config_fields_reach_the_renderer_and_are_checked() -> None:
    from dream_talk.config import RenderConfig

    renderer = PortraitWarpRenderer.from_config(
        RenderConfig(crop_margin=None, feather=0.2, interpolation="bilinear", mouth_fill=False, teeth_max=0.1),
        LANDMARKS,
    )
    assert (renderer.crop_margin, renderer.feather, renderer.interpolation) == (None, 0.2, "bilinear")
    assert not renderer.mouth_fill and renderer.teeth_max == 0.1
    for field, value in (("feather", 0.7), ("crop_margin", -1.0), ("teeth_height", 2.0), ("interpolation", "x")):
        with pytest.raises(Exception, match=field):
            RenderConfig(**{field: value})  # type: ignore[arg-type]
