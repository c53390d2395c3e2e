"""The portrait before the inversion: EG3D's crop and the camera from landmarks when a face analyzer finds a face,
the photo and the render grid search otherwise; both paths through the library and the command line."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from diffportrait3d import noise3d
from diffportrait3d.cameras import cameras_at
from diffportrait3d.noise3d import EG3DNoisePrior, camera_from_landmarks, invert_portrait, tiny_eg3d
from diffportrait3d.preprocessing import prepare_portrait
from genblocks.errors import InputError
from genblocks.faces import Face, FaceAnalyzer
from genblocks.render3d import eg3d_canonical_points, eg3d_five_points, estimate_camera
from genblocks.render3d.pose import GENERIC_FACE_POINTS, LANDMARK_68_INDICES, project_points


def posed_landmarks(yaw: float, pitch: float, roll: float = 0.0, scale: float = 400.0) -> np.ndarray:
    """68 landmarks whose pose points are the generic head at (yaw, pitch), rolled and placed in a 300-px photo; the
    eye corners straddle the eye points so EG3D's five points are defined."""
    points = project_points(GENERIC_FACE_POINTS, torch.tensor([yaw]), torch.tensor([pitch]))[0].double().numpy()
    points = points - points.mean(0)
    rotation = np.array([[math.cos(roll), -math.sin(roll)], [math.sin(roll), math.cos(roll)]])
    pixels = points @ rotation.T * scale + np.array([150.0, 160.0])
    landmarks = np.zeros((68, 2))
    landmarks[list(LANDMARK_68_INDICES)] = pixels
    # inner eye corners 39 / 42 between the outer ones (36, 45) and the nose tip
    landmarks[39] = pixels[2] + 0.4 * (pixels[0] - pixels[2])
    landmarks[42] = pixels[3] + 0.4 * (pixels[0] - pixels[3])
    return landmarks


class FakeAnalyzer(FaceAnalyzer):
    """Returns one face with the given landmarks (or none); counts its calls."""

    def __init__(self, landmarks68: np.ndarray | None, five_only: bool = False) -> None:
        self.landmarks68 = landmarks68
        self.five_only = five_only
        self.calls = 0

    def analyze(self, image: np.ndarray, boxes: np.ndarray | None = None, embed: bool = True) -> list[Face]:
        self.calls += 1
        if self.landmarks68 is None:
            return []
        box = np.array([0.0, 0.0, 100.0, 100.0], dtype=np.float32)
        five = eg3d_five_points(self.landmarks68).astype(np.float32)
        return [Face(box, 1.0, five, None if self.five_only else self.landmarks68.astype(np.float32))]


def photo(side: int = 300) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)


def test_landmarks_give_eg3d_crop_with_the_face_at_canonical_positions() -> None:
    landmarks = posed_landmarks(0.0, 0.0, roll=0.3)
    analyzer = FakeAnalyzer(landmarks)
    prepared = prepare_portrait(photo(), analyzer, "auto", size=128)
    assert analyzer.calls == 1 and prepared.crop is not None and prepared.landmarks is not None
    assert (
        prepared.image.shape == (3, 128, 128) and 0 <= float(prepared.image.min()) <= float(prepared.image.max()) <= 1
    )
    np.testing.assert_array_equal((prepared.image.permute(1, 2, 0) * 255).round().byte().numpy(), prepared.crop.image)
    # the crop is levelled: EG3D's five points of the carried landmarks are where EG3D puts a frontal face, up to the
    # generic head's proportions (a few pixels at 128)
    five = eg3d_five_points(prepared.landmarks.double().numpy())
    assert abs(five[1, 1] - five[0, 1]) < 0.5  # eyes level despite the 0.3 rad roll
    assert np.abs(five - eg3d_canonical_points(128)).max() < 12


def test_grid_and_fallbacks() -> None:
    analyzer = FakeAnalyzer(posed_landmarks(0.0, 0.0))
    grid = prepare_portrait(photo(), analyzer, "grid")
    assert analyzer.calls == 0 and grid.landmarks is None and grid.image.shape == (3, 300, 300)
    for fallback, reason in (
        (FakeAnalyzer(None), "no face found in image"),
        (FakeAnalyzer(posed_landmarks(0.0, 0.0), five_only=True), "no 68 landmarks"),
        (None, "no face analyzer installed"),
    ):
        prepared = prepare_portrait(photo(), fallback, "auto")
        assert prepared.landmarks is None and prepared.crop is None and reason in prepared.reason
        torch.testing.assert_close(prepared.image, torch.from_numpy(photo()).permute(2, 0, 1).float() / 255)
        with pytest.raises(InputError, match="camera_from=landmarks needs a face"):
            prepare_portrait(photo(), fallback, "landmarks", name="--image face.png")
    with pytest.raises(InputError, match="uint8 RGB"):
        prepare_portrait(photo().astype(np.float32), None)


@pytest.mark.parametrize(("yaw", "pitch"), [(0.3, 0.1), (-0.5, -0.2)])
def test_inversion_camera_from_landmarks_not_the_grid(
    yaw: float, pitch: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    prepared = prepare_portrait(photo(), FakeAnalyzer(posed_landmarks(yaw, pitch, roll=0.2)), "landmarks", size=64)
    assert prepared.landmarks is not None

    def no_grid(*args: object, **kwargs: object) -> torch.Tensor:
        raise AssertionError("the grid search ran although landmarks were given")

    monkeypatch.setattr(noise3d, "search_camera", no_grid)
    result = invert_portrait(tiny_eg3d(seed=0), prepared.image, num_steps=1, landmarks=prepared.landmarks)
    assert result.camera_source == "landmarks"
    # the camera of the posed head, through the crop: the same label cameras_at builds for the orbit
    torch.testing.assert_close(
        result.camera, cameras_at(torch.tensor([yaw]), torch.tensor([pitch])), atol=0.03, rtol=0
    )
    torch.testing.assert_close(result.camera, camera_from_landmarks(prepared.landmarks))


def test_inversion_without_landmarks_searches_the_grid() -> None:
    result = invert_portrait(tiny_eg3d(seed=0), torch.rand(3, 32, 32), num_steps=1)
    assert result.camera_source == "grid"
    candidates = cameras_at(
        torch.tensor([y for y in (-0.6, -0.3, 0.0, 0.3, 0.6) for _ in range(3)]), torch.tensor([-0.15, 0.0, 0.15] * 5)
    )
    assert (result.camera - candidates).abs().amax(dim=1).min() < 1e-6  # one of the grid's cameras


def test_prior_passes_landmarks_to_the_inversion() -> None:
    prepared = prepare_portrait(photo(), FakeAnalyzer(posed_landmarks(0.2, 0.0)), "landmarks", size=64)
    prior = EG3DNoisePrior(tiny_eg3d(seed=0), num_steps=1)
    renders = prior.renders(prepared.image, cameras_at(torch.zeros(2), torch.zeros(2)), landmarks=prepared.landmarks)
    assert renders.shape == (2, 3, 32, 32)
    assert prior.last_inversion is not None and prior.last_inversion.camera_source == "landmarks"


def test_astronaut_through_dlib() -> None:
    data = pytest.importorskip("skimage.data", reason="scikit-image provides the astronaut photo")
    from diffportrait3d.preprocessing import default_face_analyzer

    analyzer = default_face_analyzer()
    if analyzer is None:
        pytest.skip("no dlib face analyzer (diffportrait3d[face])")
    prepared = prepare_portrait(np.asarray(data.astronaut()), analyzer, "landmarks", size=256)
    assert prepared.crop is not None and prepared.landmarks is not None and prepared.image.shape == (3, 256, 256)
    _, yaw, pitch = estimate_camera(prepared.landmarks)
    assert abs(yaw) < 0.45 and abs(pitch) < 0.45  # a roughly frontal portrait


def _write_face(folder: Path) -> Path:
    from genblocks.media import write_image

    path = folder / "face.png"
    write_image(path, torch.rand(3, 80, 80), value_range=(0.0, 1.0))
    return path


@pytest.mark.parametrize(("camera_from", "expected"), [("auto", "landmarks"), ("grid", "grid")])
def test_render_command_both_paths(
    camera_from: str, expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from diffportrait3d import preprocessing
    from diffportrait3d.cli import main

    face = _write_face(tmp_path)
    analyzer = FakeAnalyzer(posed_landmarks(0.25, 0.0) * 0.2)  # fits the 80-px photo
    monkeypatch.setattr(preprocessing, "default_face_analyzer", lambda: analyzer)
    seen: list[str] = []
    original = noise3d.invert_portrait

    def spy(*args: object, **kwargs: object) -> noise3d.InversionResult:
        result = original(*args, **kwargs)  # type: ignore[arg-type]
        seen.append(result.camera_source)
        return result

    monkeypatch.setattr(noise3d, "invert_portrait", spy)
    argv = ["render", "--config", "tiny", "--image", str(face), "--views", "2", "--out", str(tmp_path / "out")]
    settings = ["inference.noise_prior=eg3d", f"inference.camera_from={camera_from}", "inference.inversion_steps=1"]
    assert main([*argv, "--set", *settings, "inference.num_inference_steps=1"]) == 0
    assert seen == [expected] and analyzer.calls == (1 if camera_from == "auto" else 0)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["view_000.png", "view_001.png", "views.gif"]
