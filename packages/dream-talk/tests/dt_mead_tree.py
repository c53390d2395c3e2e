"""A tiny MEAD-style video tree for the prepare / eval tests, rendered once per test session.

The astronaut's head (scikit-image) is animated by the package's warp renderer with ``jawOpen`` following the RMS
energy of a synthetic speech signal, and written with that speech as the audio track:

========================================================  ======  ====  ==================
path under the tree                                       frames  fps   what prepare does
========================================================  ======  ====  ==================
``M003/video/front/happy/level_1/001.mp4``                14      25    prepared
``M003/video/front/neutral/level_1/001.mp4``              10      25    prepared
``W009/video/front/happy/level_3/001.mp4``                12      20    prepared
``W009/video/front/angry/level_1/001.mp4`` (grey)         8       25    skipped: no face
``W009/video/front/angry/level_1/002.mp4`` (silent film)  8       25    skipped: no audio track
``M003/video/side/happy/level_1/001.mp4``                 2       25    not in the layout
========================================================  ======  ====  ==================
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

FACE_CLIPS: dict[str, tuple[str, int, float]] = {
    "M003_happy_level_1_001": ("M003/video/front/happy/level_1/001.mp4", 14, 25.0),
    "M003_neutral_level_1_001": ("M003/video/front/neutral/level_1/001.mp4", 10, 25.0),
    "W009_happy_level_3_001": ("W009/video/front/happy/level_3/001.mp4", 12, 20.0),
}
NO_FACE = "W009/video/front/angry/level_1/001.mp4"
NO_AUDIO = "W009/video/front/angry/level_1/002.mp4"
SIDE_VIEW = "M003/video/side/happy/level_1/001.mp4"
SAMPLE_RATE = 16000
_CACHE: dict[str, Path] = {}


def speech(frames: int, fps: float, seed: int = 0) -> np.ndarray:
    """Synthetic speech lasting ``frames`` video frames (float32 (N,))."""
    from dream_talk.demo import synthetic_speech

    return synthetic_speech(frames / fps, SAMPLE_RATE, seed)


def build_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tree of the module docstring (built once per session; needs scikit-image and the dlib face extra)."""
    if "tree" in _CACHE:
        return _CACHE["tree"]
    skimage_data = pytest.importorskip("skimage.data")
    pytest.importorskip("dlib")
    from dream_talk.metrics import frame_energy
    from dream_talk.motion import blendshape_index
    from dream_talk.warp_render import PortraitWarpRenderer, portrait_landmarks
    from genblocks.media import write_video

    root = tmp_path_factory.mktemp("mead")
    head = np.ascontiguousarray(skimage_data.astronaut()[0:256, 96:352])
    renderer = PortraitWarpRenderer(portrait_landmarks(head))
    for seed, (source, frames, fps) in enumerate(FACE_CLIPS.values()):
        samples = speech(frames, fps, seed)
        energy = frame_energy(samples, SAMPLE_RATE, fps, frames)
        motion = np.zeros((frames, 58), np.float32)
        motion[:, blendshape_index("jawOpen")] = 0.8 * energy / energy.max()
        write_video(root / source, renderer(head, motion), fps=fps, audio=(samples, SAMPLE_RATE))
    grey = np.full((8, 64, 64, 3), 128, np.uint8)
    write_video(root / NO_FACE, grey, fps=25.0, audio=(speech(8, 25.0), SAMPLE_RATE))
    write_video(root / NO_AUDIO, grey, fps=25.0)
    write_video(root / SIDE_VIEW, grey[:2], fps=25.0, audio=(speech(2, 25.0), SAMPLE_RATE))
    _CACHE["tree"] = root
    return root


def prepared_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``dream-talk prepare`` run once on :func:`build_tree`; returns its output folder."""
    if "prepared" in _CACHE:
        return _CACHE["prepared"]
    from dream_talk.cli import main

    out = tmp_path_factory.mktemp("prepared")
    assert main(["prepare", "--videos", str(build_tree(tmp_path_factory)), "--out", str(out), "--no-progress"]) == 0
    _CACHE["prepared"] = out
    return out
