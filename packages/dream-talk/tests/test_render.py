"""The proxy-avatar preview renderer: neutral motion gives the template, the jaw moves only lower-face landmarks,
blinks move only eyelids, head roll is a rotation, and the renderer returns frames of the expected shape."""

from __future__ import annotations

import numpy as np

from dream_talk.motion import blendshape_index
from dream_talk.render import KeypointPreviewRenderer, Renderer, landmark_basis, proxy_landmarks, template_landmarks


def test_neutral_motion_is_the_template() -> None:
    np.testing.assert_allclose(proxy_landmarks(np.zeros((3, 58)))[1], template_landmarks(), atol=1e-12)


def test_jaw_open_moves_only_lower_face_landmarks() -> None:
    motion = np.zeros((1, 58))
    motion[0, blendshape_index("jawOpen")] = 1.0
    moved = np.abs(proxy_landmarks(motion)[0] - template_landmarks()).sum(axis=1) > 1e-9
    template = template_landmarks()
    assert moved.any() and (template[moved, 1] > 0.2).all()  # only points below the nose
    assert moved[57] and moved[8] and not moved[51]  # lower lip and chin move, upper lip does not
    assert (proxy_landmarks(motion)[0, 57, 1] - template[57, 1]) > 0.25  # downwards


def test_blink_moves_only_that_eye() -> None:
    basis = landmark_basis()
    moved = np.nonzero(np.abs(basis[blendshape_index("eyeBlinkLeft")]).sum(axis=1))[0].tolist()
    assert moved and set(moved) <= set(range(42, 48))  # the subject's left eye is drawn on the image's right
    assert basis.shape == (52, 68, 2)


def test_head_roll_rotates_about_the_origin() -> None:
    motion = np.zeros((1, 58))
    motion[0, 54] = 0.3
    rotated = proxy_landmarks(motion)[0]
    template = template_landmarks()
    np.testing.assert_allclose(np.linalg.norm(rotated, axis=1), np.linalg.norm(template, axis=1), atol=1e-9)
    angle = np.arctan2(rotated[8, 1], rotated[8, 0]) - np.arctan2(template[8, 1], template[8, 0])
    assert abs(angle - 0.3) < 1e-9


def test_renderer_protocol_and_frame_shape() -> None:
    renderer: Renderer = KeypointPreviewRenderer(size=64)
    portrait = np.full((100, 80, 3), 120, np.uint8)
    motion = np.zeros((5, 58))
    motion[2, blendshape_index("jawOpen")] = 1.0
    frames = renderer(portrait, motion)
    assert frames.shape == (5, 64, 52 + 4 + 64, 3) and frames.dtype == np.uint8
    assert (frames[:, :, :52] == frames[0, :, :52]).all()  # the portrait panel is the still
    assert not np.array_equal(frames[2, :, 56:], frames[0, :, 56:]) and np.array_equal(frames[1], frames[0])
