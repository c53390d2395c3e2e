"""Tests for genblocks.faces: the dlib backend on scikit-image's astronaut, FFHQ / ArcFace alignment, the IR-SE
backbone and its checkpoint loader."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from PIL import Image

from genblocks.faces import (
    ARCFACE_TEMPLATE_112,
    ArcFaceEmbedder,
    IRSEBackbone,
    align_ffhq,
    apply_affine,
    ffhq_quad,
    ir_se_units,
    landmarks5_from_68,
    load_arcface_state_dict,
    norm_crop,
    umeyama_similarity,
    warp_affine,
)

skimage_data = pytest.importorskip("skimage.data")
pytest.importorskip("dlib")

from genblocks.faces.dlib_backend import DlibFaceAnalyzer, face_recognition_models_dir  # noqa: E402

TINY = {"units": (1, 1, 1, 1), "channels": (8, 8, 16, 16), "embedding_dim": 32}


@pytest.fixture(scope="module")
def analyzer() -> DlibFaceAnalyzer:
    return DlibFaceAnalyzer()


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skimage_data.astronaut()


@pytest.fixture(scope="module")
def astronaut_faces(analyzer: DlibFaceAnalyzer, astronaut: np.ndarray) -> list:
    return analyzer.analyze(astronaut)


# --------------------------------------------------------------------------------------------------------------------
# dlib backend
# --------------------------------------------------------------------------------------------------------------------


def test_models_dir_found_without_importing_the_package() -> None:
    was_imported = "face_recognition_models" in sys.modules
    folder = face_recognition_models_dir()
    assert (folder / "shape_predictor_68_face_landmarks.dat").is_file()
    assert (folder / "dlib_face_recognition_resnet_model_v1.dat").is_file()
    assert ("face_recognition_models" in sys.modules) == was_imported


def test_missing_dlib_or_models_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    with pytest.raises(ImportError, match=r"genblocks\[face\]"):
        DlibFaceAnalyzer(models_dir=tmp_path)
    monkeypatch.setitem(sys.modules, "dlib", None)  # makes `import dlib` fail
    with pytest.raises(ImportError, match=r"genblocks\[face\]"):
        DlibFaceAnalyzer()


def test_exactly_one_face_on_astronaut(astronaut_faces: list) -> None:
    assert len(astronaut_faces) == 1
    face = astronaut_faces[0]
    assert face.score > 1.0
    np.testing.assert_allclose(face.box, [175, 76, 265, 166], atol=6)  # the face, upper middle of the 512² photo
    assert face.landmarks68.shape == (68, 2) and face.landmarks5.shape == (5, 2)
    assert face.embedding.shape == (128,)


def test_threshold_matters(analyzer: DlibFaceAnalyzer, astronaut: np.ndarray) -> None:
    loose = DlibFaceAnalyzer(threshold=0.0)
    faces = loose.analyze(astronaut, embed=False)
    assert len(faces) == 2
    weak = faces[1]
    assert 0.0 < weak.score < analyzer.threshold  # the weak HOG hit on the suit, rejected by the default threshold
    assert weak.box[1] > 300  # lower part of the image: the suit, not the face


def test_landmarks_within_box(astronaut_faces: list) -> None:
    face = astronaut_faces[0]
    x0, y0, x1, y1 = face.box
    # dlib's HOG box is tight (brows to lip); the jaw line may leave it by a few pixels: allow 15 % of the box size.
    margin = 0.15 * (x1 - x0)
    lm = face.landmarks68
    assert (lm[:, 0] >= x0 - margin).all() and (lm[:, 0] <= x1 + margin).all()
    assert (lm[:, 1] >= y0 - margin).all() and (lm[:, 1] <= y1 + margin).all()
    inner = lm[17:]  # brows, nose, eyes, mouth: strictly inside
    assert (inner[:, 0] >= x0).all() and (inner[:, 0] <= x1).all()
    assert (inner[:, 1] >= y0).all() and (inner[:, 1] <= y1).all()


def test_landmarks5_derived_from_68(astronaut_faces: list) -> None:
    lm = astronaut_faces[0].landmarks68
    expected = [lm[36:42].mean(0), lm[42:48].mean(0), lm[30], lm[48], lm[54]]
    np.testing.assert_allclose(landmarks5_from_68(lm), expected, atol=1e-5)
    np.testing.assert_allclose(astronaut_faces[0].landmarks5, expected, atol=1e-5)


def test_embedding_same_face_closer_than_other_person(
    analyzer: DlibFaceAnalyzer, astronaut: np.ndarray, astronaut_faces: list
) -> None:
    reference = astronaut_faces[0].embedding
    # Same photo shifted by (20, 12) px and rescaled by ~0.9 / 0.9 (different aspect).
    moved = np.asarray(Image.fromarray(astronaut[12:, 20:]).resize((440, 450), Image.Resampling.BILINEAR))
    same = analyzer.get_face(moved).embedding
    # A different person: the cameraman in skimage's camera (HOG misses the small face, so its box is given).
    camera = np.repeat(skimage_data.camera()[..., None], 3, axis=-1)
    other = analyzer.analyze(camera, boxes=np.array([[216, 130, 268, 182]]))[0]
    assert np.isnan(other.score)
    d_same = np.linalg.norm(same - reference)
    d_other = np.linalg.norm(other.embedding - reference)
    assert d_same < 0.3 < 0.6 < d_other  # dlib's same-person threshold is 0.6


def test_no_face_error_names_input(analyzer: DlibFaceAnalyzer) -> None:
    with pytest.raises(ValueError, match=r"No face found in coffee\.png"):
        analyzer.get_face(skimage_data.coffee(), name="coffee.png")


def test_bad_image_rejected(analyzer: DlibFaceAnalyzer) -> None:
    with pytest.raises(ValueError, match="uint8 RGB"):
        analyzer.analyze(np.zeros((32, 32, 3), dtype=np.float32))


def test_external_embedder(astronaut: np.ndarray) -> None:
    torch.manual_seed(0)
    embedder = ArcFaceEmbedder(IRSEBackbone(**TINY), channel_order="bgr")
    faces = DlibFaceAnalyzer(embedder=embedder).analyze(astronaut)
    assert faces[0].embedding.shape == (32,)
    np.testing.assert_allclose(np.linalg.norm(faces[0].embedding), 1.0, atol=1e-5)


# --------------------------------------------------------------------------------------------------------------------
# Alignment
# --------------------------------------------------------------------------------------------------------------------


def _synthetic_landmarks68() -> np.ndarray:
    lm = np.zeros((68, 2))
    lm[36:42] = (100.0, 100.0)  # left eye
    lm[42:48] = (140.0, 100.0)  # right eye
    lm[48] = (105.0, 150.0)
    lm[54] = (135.0, 150.0)
    return lm


def test_ffhq_quad_construction() -> None:
    # eye_to_eye (40, 0), eye_to_mouth (0, 50): x = (90, 0) scaled to max(80, 90) = 90, centre (120, 105).
    quad = ffhq_quad(_synthetic_landmarks68())
    np.testing.assert_allclose(quad, [[30, 15], [30, 195], [210, 195], [210, 15]], atol=1e-9)


@pytest.mark.parametrize(
    ("scale", "shift", "size"),
    [(1, 0, 256), (4, 0, 64), (1, -40, 128)],
    ids=["plain", "shrink", "reflect-pad"],
)
def test_ffhq_alignment_puts_eyes_on_template(scale: int, shift: float, size: int) -> None:
    landmarks = _synthetic_landmarks68() * scale + [shift, 0.0]
    eye = np.array([100.0, 100.0]) * scale + [shift, 0.0]
    image = np.zeros((240 * scale, 240 * scale, 3), dtype=np.uint8)
    x, y = eye.astype(int)
    image[y - 2 * scale : y + 2 * scale + 1, x - 2 * scale : x + 2 * scale + 1] = 255  # a dot on the left eye
    aligned = align_ffhq(image, landmarks, output_size=size)
    assert aligned.image.shape == (size, size, 3)
    # The quad spans 180·scale px from (30, 15)·scale; pixel centres sit half a pixel inside its edges.
    corner = np.array([30.0, 15.0]) * scale + [shift, 0.0]
    expected = (eye + 0.5 - corner) * size / (180.0 * scale) - 0.5
    np.testing.assert_allclose(apply_affine(aligned.matrix, [eye])[0], expected, atol=1e-6)
    grey = aligned.image[..., 0].astype(np.float64)
    ys, xs = np.mgrid[:size, :size]
    centroid = np.array([(xs * grey).sum(), (ys * grey).sum()]) / grey.sum()
    np.testing.assert_allclose(centroid, expected, atol=0.5)


def test_ffhq_alignment_on_astronaut(analyzer: DlibFaceAnalyzer, astronaut: np.ndarray, astronaut_faces: list) -> None:
    face = astronaut_faces[0]
    aligned = analyzer.align_ffhq(astronaut, face, output_size=256)
    assert aligned.image.shape == (256, 256, 3)
    mapped = apply_affine(aligned.matrix, face.landmarks5)
    # FFHQ framing: eyes level, about 0.25 of the width apart, around 0.47 of the height.
    assert abs(mapped[0, 1] - mapped[1, 1]) < 3
    assert 0.2 < (mapped[1, 0] - mapped[0, 0]) / 256 < 0.3
    assert 0.42 < mapped[:2, 1].mean() / 256 < 0.52
    # Re-detecting on the aligned crop (FG-Net's dlib → FFHQ → dlib) finds the eyes where the matrix puts them.
    redetected = analyzer.get_face(aligned.image, name="aligned", embed=False)
    np.testing.assert_allclose(redetected.landmarks5[:2], mapped[:2], atol=3)


def test_umeyama_recovers_similarity_and_matches_skimage() -> None:
    transform = pytest.importorskip("skimage.transform")
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, size=(5, 2))
    angle, scale, shift = 0.3, 1.7, np.array([5.0, -3.0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = scale * src @ rotation.T + shift
    np.testing.assert_allclose(umeyama_similarity(src, dst), np.hstack([scale * rotation, shift[:, None]]), atol=1e-9)
    noisy = dst + rng.normal(0, 2.0, size=dst.shape)
    if hasattr(transform.SimilarityTransform, "from_estimate"):
        reference = transform.SimilarityTransform.from_estimate(src, noisy)
    else:
        reference = transform.SimilarityTransform()
        reference.estimate(src, noisy)
    np.testing.assert_allclose(umeyama_similarity(src, noisy), reference.params[:2], atol=1e-9)


def test_norm_crop_maps_points_to_template(astronaut: np.ndarray, astronaut_faces: list) -> None:
    points = astronaut_faces[0].landmarks5
    crop = norm_crop(astronaut, points)
    assert crop.image.shape == (112, 112, 3)
    residual = apply_affine(crop.matrix, points) - ARCFACE_TEMPLATE_112
    assert np.sqrt((residual**2).sum(1).mean()) < 6.0  # 5 points, 4 similarity parameters: a least-squares fit
    # The warp agrees with the matrix: a dot on the nose tip lands where the matrix sends it.
    image = np.zeros_like(astronaut)
    x, y = np.round(points[2]).astype(int)
    image[y, x] = 255
    dotted = norm_crop(image, points).image[..., 0].astype(np.float64)
    ys, xs = np.mgrid[:112, :112]
    centroid = np.array([(xs * dotted).sum(), (ys * dotted).sum()]) / dotted.sum()
    np.testing.assert_allclose(centroid, apply_affine(crop.matrix, [[x, y]])[0], atol=0.3)


def test_alignment_input_errors() -> None:
    with pytest.raises(ValueError, match="landmarks68"):
        align_ffhq(np.zeros((8, 8, 3), np.uint8), np.zeros((5, 2)))
    with pytest.raises(ValueError, match="image"):
        norm_crop(np.zeros((8, 8, 3), np.float32), ARCFACE_TEMPLATE_112)


# --------------------------------------------------------------------------------------------------------------------
# ArcFace IR-SE backbone
# --------------------------------------------------------------------------------------------------------------------


def test_ir_se_50_layout() -> None:
    model = IRSEBackbone(units=ir_se_units(50))
    assert len(model.body) == 24
    assert model.output_layer[3].in_features == 512 * 7 * 7 and model.output_layer[3].out_features == 512
    keys = model.state_dict().keys()
    for key in ("input_layer.0.weight", "body.3.shortcut_layer.0.weight", "body.23.res_layer.5.fc2.weight"):
        assert key in keys
    assert "body.0.shortcut_layer.0.weight" not in keys  # 64 -> 64: a strided max-pool shortcut, as in the original


def test_tiny_backbone_forward() -> None:
    torch.manual_seed(0)
    model = IRSEBackbone(**TINY).eval()
    out = model(torch.rand(2, 3, 112, 112) * 2 - 1)
    assert out.shape == (2, 32)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(2))
    with pytest.raises(ValueError, match="x"):
        model(torch.zeros(1, 3, 64, 64))


def test_loader_reports_keys_and_loads(tmp_path) -> None:
    torch.manual_seed(0)
    source = IRSEBackbone(**TINY).eval()
    torch.manual_seed(1)
    target = IRSEBackbone(**TINY).eval()
    state = {f"module.{k}": v for k, v in source.state_dict().items()}
    state["module.head.kernel"] = torch.zeros(3)
    torch.save(state, tmp_path / "arcface.pth")
    report = load_arcface_state_dict(target, tmp_path / "arcface.pth")
    assert report.unexpected_keys == ["head.kernel"] and report.missing_keys == [] and not report.complete
    x = torch.rand(2, 3, 112, 112) * 2 - 1
    torch.testing.assert_close(target(x), source(x))

    del state["module.output_layer.3.weight"]
    state["module.output_layer.4.weight"] = torch.zeros(5)
    report = load_arcface_state_dict(target, state)
    assert report.missing_keys == ["output_layer.3.weight", "output_layer.4.weight"]
    assert report.mismatched_keys == ["output_layer.4.weight"]
    with pytest.raises(ValueError, match="does not match"):
        load_arcface_state_dict(target, state, strict=True)


def test_warp_affine_translation_and_float_masks() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    shifted = warp_affine(image, np.array([[1.0, 0.0, 3.0], [0.0, 1.0, 2.0]]), (30, 20), "nearest")
    np.testing.assert_array_equal(shifted[2:, 3:], image[:-2, :-3])  # an integer shift moves pixels exactly
    assert (shifted[:2] == 0).all() and (shifted[:, :3] == 0).all()  # outside the source: 0
    mask = np.ones((20, 30), np.float32)
    halved = warp_affine(mask, np.array([[0.5, 0.0, 0.0], [0.0, 0.5, 0.0]]), (30, 20), "bilinear")
    assert halved.dtype == np.float32 and halved.shape == (20, 30)
    np.testing.assert_allclose(halved[:8, :13], 1.0)
    assert (halved[12:] == 0).all()
    with pytest.raises(ValueError, match="resample"):
        warp_affine(image, np.eye(2, 3), (30, 20), "lanczos")
