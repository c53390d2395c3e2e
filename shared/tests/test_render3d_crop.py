"""EG3D's crop of an ordinary photo: the window from synthetic landmarks of known shift/scale/roll, the face's points
at EG3D's canonical crop positions, agreement with EG3D's own resize-and-crop procedure, and the astronaut through
the dlib analyzer."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from genblocks.errors import InputError
from genblocks.faces import apply_affine
from genblocks.render3d import eg3d_canonical_points, eg3d_crop, eg3d_crop_box, eg3d_five_points
from genblocks.render3d.crop import EG3D_STANDARD_POINTS


def five_points(scale: float, center: tuple[float, float], roll: float = 0.0) -> np.ndarray:
    """The standard face seen frontally: its (x, -y) times ``scale``, rolled by ``roll``, centred on ``center``."""
    flat = EG3D_STANDARD_POINTS[:, :2] * np.array([1.0, -1.0]) * scale
    rotation = np.array([[math.cos(roll), -math.sin(roll)], [math.sin(roll), math.cos(roll)]])
    return flat @ rotation.T + np.array(center)


def sixty_eight(points5: np.ndarray) -> np.ndarray:
    """68 landmarks whose EG3D five points are ``points5`` (eye corners straddle the eye centres)."""
    landmarks = np.full((68, 2), 50.0)
    for corners, eye in (((36, 39), points5[0]), ((42, 45), points5[1])):
        landmarks[corners[0]] = eye - np.array([7.0, 1.0])
        landmarks[corners[1]] = eye + np.array([7.0, 1.0])
    landmarks[[30, 48, 54]] = points5[[2, 3, 4]]
    return landmarks


def blob_image(points: np.ndarray, height: int, width: int, sigma: float, channels: int = 3) -> np.ndarray:
    """A uint8 image with a bright Gaussian blob at each point."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    image = np.zeros((height, width))
    for x, y in points:
        image = np.maximum(image, np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2)))
    gray = np.round(image * 255).astype(np.uint8)
    return np.repeat(gray[..., None], channels, axis=2)


def blob_centres(image: np.ndarray, near: np.ndarray, radius: int) -> np.ndarray:
    """Intensity centroids of the blobs in windows of ``radius`` around the points ``near``: (N, 2)."""
    gray = image[..., 0].astype(np.float64)
    centres = []
    for x, y in near:
        x0, y0 = round(float(x)) - radius, round(float(y)) - radius
        window = gray[max(y0, 0) : y0 + 2 * radius + 1, max(x0, 0) : x0 + 2 * radius + 1]
        ys, xs = np.mgrid[0 : window.shape[0], 0 : window.shape[1]]
        centres.append(
            [(xs * window).sum() / window.sum() + max(x0, 0), (ys * window).sum() / window.sum() + max(y0, 0)]
        )
    return np.array(centres)


@pytest.mark.parametrize(("scale", "center", "roll"), [(120.0, (200.0, 150.0), 0.0), (333.0, (-40.0, 610.5), 0.35)])
def test_window_of_synthetic_landmarks(scale: float, center: tuple[float, float], roll: float) -> None:
    points = five_points(scale, center, roll)
    for landmarks in (points, sixty_eight(points)):
        box = eg3d_crop_box(landmarks)
        np.testing.assert_allclose(box.center, center, atol=1e-6)
        assert box.scale == pytest.approx(scale, rel=1e-9)
        assert box.side == pytest.approx(700 / 300 * scale, rel=1e-9) and box.angle == 0.0  # EG3D keeps the roll
        # the window is axis-aligned: its corners are the centre +- side / 2
        np.testing.assert_allclose(box.corners()[0], np.array(center) - box.side / 2, atol=1e-6)
        levelled = eg3d_crop_box(landmarks, level=True)
        assert levelled.angle == pytest.approx(roll, abs=1e-9)
        np.testing.assert_allclose(levelled.center, center, atol=1e-6)
    # EG3D's other parameters scale the window as theirs would
    assert eg3d_crop_box(points, rescale_factor=150.0).side == pytest.approx(2 * 700 / 300 * scale)
    # the window's corners land on the crop's outer pixel edges
    box = eg3d_crop_box(points, level=True)
    np.testing.assert_allclose(
        apply_affine(box.matrix(256), box.corners()), [[-0.5, -0.5], [-0.5, 255.5], [255.5, 255.5], [255.5, -0.5]],
        atol=1e-6,
    )  # fmt: skip


def test_five_points_from_68_use_the_eye_corners() -> None:
    landmarks = np.random.default_rng(0).uniform(0, 100, (68, 2))
    points = eg3d_five_points(landmarks)
    np.testing.assert_allclose(points[0], (landmarks[36] + landmarks[39]) / 2)
    np.testing.assert_allclose(points[1], (landmarks[42] + landmarks[45]) / 2)
    np.testing.assert_allclose(points[2:], landmarks[[30, 48, 54]])


def test_canonical_positions() -> None:
    canonical = eg3d_canonical_points(512)
    # the standard face's eyes 0.621 units apart, at 300 px / unit in the 1024 window, 700 -> 512 px
    assert canonical[1, 0] - canonical[0, 0] == pytest.approx((0.309799 + 0.311487) * 300 * 512 / 700)
    np.testing.assert_allclose(canonical[0], [187.15, 191.79], atol=0.01)
    assert canonical[3, 1] > canonical[2, 1] > canonical[0, 1]  # mouth below nose below eyes (y down)


@pytest.mark.parametrize(
    ("size", "scale", "center", "roll", "level", "image_side"),
    [
        (512, 150.0, (210.0, 180.0), 0.0, False, 420),  # an upscale (window 350 px -> 512)
        (256, 150.0, (230.0, 190.0), 0.3, True, 420),  # a rolled face, levelled
        (128, 700.0, (1100.0, 1300.0), -0.2, True, 2400),  # a large downscale (integer shrink first)
    ],
)
def test_crop_puts_the_face_at_eg3d_canonical_positions(
    size: int, scale: float, center: tuple[float, float], roll: float, level: bool, image_side: int
) -> None:
    points = five_points(scale, center, roll)
    sigma = 0.02 * scale
    image = blob_image(points, image_side, image_side, sigma, channels=1 if image_side > 1000 else 3)
    crop = eg3d_crop(image, sixty_eight(points), size=size, level=level)
    assert crop.image.shape == (size, size, image.shape[2]) and crop.image.dtype == np.uint8
    canonical = eg3d_canonical_points(size)
    np.testing.assert_allclose(apply_affine(crop.matrix, points), canonical, atol=1e-6)
    found = blob_centres(crop.image, canonical, radius=max(int(4 * sigma * size / crop.box.side), 3))
    assert np.abs(found - canonical).max() < 1.0, found - canonical


def eg3d_reference_crop(image: np.ndarray, points5: np.ndarray, size: int) -> np.ndarray:
    """EG3D's own steps, written out: the affine fit's scale, the photo resized by 300 / s (bicubic), the 1024-px
    window on the fitted centre (y through EG3D's flipped coordinates), its central 700 px, resized (Lanczos)."""
    height = image.shape[0]
    flipped = points5 * [1.0, -1.0] + [0.0, height - 1.0]
    design = np.concatenate([EG3D_STANDARD_POINTS, np.ones((5, 1))], axis=1)
    solution = np.linalg.lstsq(design, flipped, rcond=None)[0]
    s = 300.0 / ((np.linalg.norm(solution[:3, 0]) + np.linalg.norm(solution[:3, 1])) / 2)
    t = solution[3]
    w0, h0 = image.shape[1], image.shape[0]
    w, h = int(w0 * s), int(h0 * s)
    left = int(w / 2 - 512 + (t[0] - w0 / 2) * s)
    up = int(h / 2 - 512 + (h0 / 2 - t[1]) * s)
    resized = Image.fromarray(image).resize((w, h), Image.Resampling.BICUBIC)
    window = resized.crop((left, up, left + 1024, up + 1024))
    return np.asarray(window.crop((162, 162, 862, 862)).resize((size, size), Image.Resampling.LANCZOS))


def test_agrees_with_eg3d_resize_and_crop_to_about_a_pixel() -> None:
    points = five_points(220.0, (260.0, 240.0), 0.1)  # a 513-px window: one crop pixel is one source pixel
    image = blob_image(points, 480, 520, sigma=4.0)
    ours = eg3d_crop(image, points, size=512)
    theirs = eg3d_reference_crop(image, points, 512)
    where = apply_affine(ours.matrix, points)
    radius = 12
    shift = blob_centres(theirs, where, radius) - blob_centres(ours.image, where, radius)
    # EG3D's half-pixel conventions (y flipped with H - 1, cropped with H) and integer sizes move its window by about
    # one source pixel, mostly in y (measured: x <= 0.22, y 0.81 .. 1.11)
    assert np.abs(shift[:, 0]).max() < 0.5 and np.abs(shift[:, 1]).max() < 1.5, shift
    assert np.abs(ours.image.astype(np.float64) - theirs).mean() < 2.0


def test_astronaut_through_the_dlib_analyzer() -> None:
    data = pytest.importorskip("skimage.data", reason="scikit-image provides the astronaut photo")
    from genblocks.faces import DlibFaceAnalyzer

    try:
        analyzer = DlibFaceAnalyzer()
    except ImportError as error:
        pytest.skip(f"no dlib face analyzer: {error}")
    photo = data.astronaut()
    face = analyzer.get_face(photo, embed=False)
    assert face.landmarks68 is not None
    crop = eg3d_crop(photo, face.landmarks68, size=512)
    assert crop.image.shape == (512, 512, 3)
    # the face sits where EG3D puts faces: eye centres and mouth corners within ~8 % of the canonical ones
    moved = apply_affine(crop.matrix, eg3d_five_points(face.landmarks68))
    assert np.abs(moved - eg3d_canonical_points(512)).max() < 40
    # the crop's pixels follow its matrix: landmarks found again in the crop are the carried ones
    again = analyzer.get_face(crop.image, embed=False)
    assert again.landmarks68 is not None
    distance = np.linalg.norm(again.landmarks68 - apply_affine(crop.matrix, face.landmarks68), axis=1)
    assert np.median(distance) < 4.0, np.median(distance)


def test_bad_inputs_are_refused() -> None:
    points = five_points(100.0, (50.0, 50.0))
    with pytest.raises(InputError, match=r"\(68, 2\) or \(5, 2\)"):
        eg3d_crop_box(np.zeros((4, 2)))
    with pytest.raises(InputError, match="finite"):
        eg3d_crop_box(np.full((5, 2), np.nan))
    with pytest.raises(InputError, match="degenerate"):
        eg3d_crop_box(np.zeros((5, 2)))
    with pytest.raises(InputError, match="uint8"):
        eg3d_crop(np.zeros((64, 64, 3), dtype=np.float32), points)
    with pytest.raises(InputError, match="size"):
        eg3d_crop(np.zeros((64, 64, 3), dtype=np.uint8), points, size=0)
