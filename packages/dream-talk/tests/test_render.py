"""The proxy-avatar preview renderer: neutral motion gives the template, the jaw moves only lower-face landmarks,
blinks move only eyelids, head roll is a rotation, and the renderer returns frames of the expected shape. The
learned renderer's slot (``render.kind: learned``): a factory named by module path is imported, built from the
weights and the config and checked against the protocol; every wrong factory is an InputError naming
``render.renderer`` and the expected signature."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dream_talk.motion import blendshape_index
from dream_talk.render import (
    KeypointPreviewRenderer,
    Renderer,
    check_frames,
    landmark_basis,
    load_renderer,
    proxy_landmarks,
    template_landmarks,
)
from genblocks.errors import InputError


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


# the render.kind: learned slot, with the factories of tests/dream_talk_renderer_stub.py
STUB = "dream_talk_renderer_stub"


def test_learned_renderer_is_imported_and_built_from_weights_and_config(tmp_path: Path) -> None:
    from dream_talk.config import load_shipped_config

    weights = tmp_path / "renderer.safetensors"
    weights.write_bytes(b"\0")
    config = load_shipped_config(
        "tiny", ["render.kind=learned", f"render.renderer={STUB}:StubRenderer", f"render.weights={weights}"]
    )
    renderer = load_renderer(config.render.renderer, config.render.weights, config)
    assert isinstance(renderer, Renderer)
    assert renderer.weights == weights and renderer.config is config  # type: ignore[attr-defined]
    frames = renderer(np.full((10, 12, 3), 7, np.uint8), np.zeros((4, 58)))
    assert frames.shape == (4, 10, 12, 3) and frames[3, 0, 0].tolist() == [3, 7, 7]
    assert renderer.calls == [((10, 12, 3), (4, 58))]  # type: ignore[attr-defined]
    assert load_renderer(f"{STUB}:StubRenderer", None, config).weights is None  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_colon_here", "expected 'package.module:Factory'"),
        ("dream_talk_no_such_module_xyz:Factory", "not importable"),
        (f"{STUB}:Missing", "has no callable 'Missing'"),
        (f"{STUB}:one_argument", "does not take \\(weights, config\\)"),
        (f"{STUB}:not_a_renderer", "returned object"),
    ],
)
def test_learned_renderer_errors_name_the_field_and_the_signature(spec: str, message: str) -> None:
    from dream_talk.config import DreamTalkConfig

    with pytest.raises(InputError, match=message) as caught:
        load_renderer(spec, None, DreamTalkConfig())
    assert str(caught.value).startswith(f"render.renderer {spec!r}")
    assert "Factory(weights: Path | None, config: DreamTalkConfig)" in str(caught.value)


def test_learned_renderer_missing_weights_and_config_checks(tmp_path: Path) -> None:
    from dream_talk.config import DreamTalkConfig, RenderConfig

    with pytest.raises(InputError, match=r"render.weights .*no such file"):
        load_renderer(f"{STUB}:StubRenderer", tmp_path / "missing.pt", DreamTalkConfig())
    with pytest.raises(InputError, match=r"renderer: render\.kind=learned needs 'package\.module:Factory'"):
        RenderConfig(kind="learned")
    assert RenderConfig(kind="learned", renderer=f"{STUB}:StubRenderer").weights is None


def test_check_frames_refuses_wrong_dtype_count_and_channels() -> None:
    good = np.zeros((3, 4, 5, 3), np.uint8)
    assert check_frames(good, 3, "r") is good
    for bad, expected in (
        (good.astype(np.float32), "float32"),
        (good[:2], r"\(2, 4, 5, 3\)"),
        (good[..., :1], "shape"),
        ([[1]], "list"),
    ):
        with pytest.raises(InputError, match=f"^r: expected uint8 frames \\(3, H, W, 3\\), got .*{expected}"):
            check_frames(bad, 3, "r")


def test_speak_with_a_learned_renderer_writes_its_frames(tmp_path: Path) -> None:
    from dream_talk.config import load_shipped_config
    from dream_talk.demo import synthetic_speech
    from dream_talk.inference import choose_renderer, generate_files
    from genblocks.audio import write_audio
    from genblocks.media import read_video, write_image

    overrides = ["render.kind=learned", f"render.renderer={STUB}:StubRenderer", "inference.check_face=false"]
    config = load_shipped_config("tiny", overrides)
    portrait = np.full((32, 24, 3), 90, np.uint8)
    renderer, kind, notes = choose_renderer(config, portrait)
    assert kind == "learned" and notes == [] and type(renderer).__name__ == "StubRenderer"
    audio = write_audio(tmp_path / "speech.wav", synthetic_speech(0.4, 16000), 16000)
    image = write_image(tmp_path / "face.png", portrait)
    result = generate_files(config, audio, image, None, tmp_path / "out")
    summary = json.loads(result.files["summary"].read_text())
    assert summary["renderer"] == "learned" and result.files["video"].name == "video.mp4"
    frames, fps = read_video(result.files["video"])
    assert len(frames) == summary["frames"] == 10 and fps == 25.0  # 0.4 s at 25 fps

    bad = load_shipped_config("tiny", [*overrides[:1], f"render.renderer={STUB}:float_frames", overrides[2]])
    with pytest.raises(InputError, match=r"render\.renderer .*float_frames.*expected uint8 frames"):
        generate_files(bad, audio, image, None, tmp_path / "bad")
