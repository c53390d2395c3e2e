"""Face encoding: the offline dlib encoder finds the astronaut's face and gives a unit-norm embedding of the configured
width, a blank image is an error naming the subject (also through the pipeline), and ArcFace IR-SE-50 (random
weights here) embeds a norm-cropped face into 512 unit-norm numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genblocks.faces import IRSEBackbone, ir_se_units, norm_crop
from id_patch.preprocessing import (
    ArcFaceEncoder,
    DlibFaceEncoder,
    FaceEncoder,
    crop_faces,
    orthonormal_map,
    to_rgb_uint8,
)
from id_patch.testing import tiny_face_encoder, tiny_id_patch_pipeline

pytest.importorskip("dlib", reason="needs the face extra (dlib-bin, face-recognition-models)")
skimage_data = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skimage_data.astronaut()


@pytest.fixture(scope="module")
def dlib_encoder() -> DlibFaceEncoder:
    return DlibFaceEncoder(face_dim=512)


def test_dlib_encoder_finds_the_astronaut(dlib_encoder: DlibFaceEncoder, astronaut: np.ndarray) -> None:
    assert isinstance(dlib_encoder, FaceEncoder)
    faces = dlib_encoder.encode_subjects([astronaut])
    assert faces.embeds.shape == (1, 512)
    torch.testing.assert_close(faces.embeds.norm(dim=-1), torch.ones(1))
    x0, y0, x1, y1 = faces.boxes[0].tolist()
    nose_x, nose_y = faces.anchors("nose")[0].tolist()
    assert x0 < nose_x < x1 and y0 < nose_y < y1
    assert 150 < nose_x < 250 and 60 < nose_y < 160  # the face is in the upper middle of the 512-px image
    group = dlib_encoder.encode_group(astronaut)
    torch.testing.assert_close(group.embeds, faces.embeds)
    # the 128 -> 512 map preserves the dlib embedding's geometry: same image, same vector
    again = dlib_encoder.encode_subjects([astronaut.copy()])
    torch.testing.assert_close(again.embeds, faces.embeds)


def test_blank_image_is_an_error_naming_the_subject(dlib_encoder: DlibFaceEncoder, astronaut: np.ndarray) -> None:
    blank = np.zeros((128, 128, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"No face found in subject 1 \(face_images\[1\]\)"):
        dlib_encoder.encode_subjects([astronaut, blank])
    assert dlib_encoder.encode_group(blank).embeds.shape == (0, 512)


def test_pipeline_reports_the_faceless_subject(dlib_encoder: DlibFaceEncoder, astronaut: np.ndarray) -> None:
    pipe = tiny_id_patch_pipeline()
    encoder = DlibFaceEncoder(face_dim=16, analyzer=dlib_encoder.analyzer)
    astronaut = astronaut[::2, ::2].copy()  # 256 px: the face (about 50 px) is still found, twice as fast
    blank = np.zeros((96, 96, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="subject 1"):
        pipe("x", face_images=[astronaut, blank], face_encoder=encoder, face_locations=[[10, 10], [40, 40]])
    out = pipe(
        "x",
        face_images=[astronaut],
        face_encoder=encoder,
        face_locations=[[32, 32]],
        num_inference_steps=1,
        output_type="np",
    )
    assert out.images.shape == (1, 64, 64, 3)


def test_orthonormal_map() -> None:
    up = orthonormal_map(128, 512, seed=0)
    assert up.shape == (512, 128)
    np.testing.assert_allclose(up.T @ up, np.eye(128), atol=1e-5)
    down = orthonormal_map(128, 16, seed=0)
    assert down.shape == (16, 128)
    np.testing.assert_allclose(down @ down.T, np.eye(16), atol=1e-5)
    assert np.array_equal(orthonormal_map(128, 16, seed=0), down)
    assert not np.allclose(orthonormal_map(128, 16, seed=1), down)


def test_arcface_ir_se_50_on_a_norm_cropped_face(dlib_encoder: DlibFaceEncoder, astronaut: np.ndarray) -> None:
    torch.manual_seed(0)
    backbone = IRSEBackbone(units=ir_se_units(50))
    encoder = ArcFaceEncoder(model=backbone, detector=dlib_encoder.analyzer)
    assert encoder.embedding_dim == 512 and isinstance(encoder, FaceEncoder)
    face = dlib_encoder.analyzer.get_face(astronaut, embed=False)
    crop = norm_crop(astronaut, face.landmarks5, image_size=112).image
    embeds = encoder.embed_crops(crop[None])
    assert embeds.shape == (1, 512)
    torch.testing.assert_close(embeds.norm(dim=-1), torch.ones(1))
    # channel_order="bgr" feeds the backbone the BGR crop, as upstream
    rgb = ArcFaceEncoder(model=backbone, channel_order="rgb", detector=dlib_encoder.analyzer)
    torch.testing.assert_close(rgb.embed_crops(crop[None, ..., ::-1].copy()), embeds)
    torch.testing.assert_close(encoder.encode_subjects([astronaut]).embeds, embeds)
    with pytest.raises(ValueError, match="exactly one of `weights`"):
        ArcFaceEncoder()


def test_image_helpers() -> None:
    array = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    tensor = torch.from_numpy(array).permute(2, 0, 1).float() / 255
    assert np.array_equal(to_rgb_uint8(tensor), array)
    assert np.array_equal(to_rgb_uint8(array.astype(np.float32) / 255), array)
    with pytest.raises(ValueError, match="face_images"):
        to_rgb_uint8(np.zeros((5, 5)), name="face_images")
    crops = crop_faces(array, np.array([[10, 5, 16, 11], [0, 0, 4, 4]]), margin=0.5)
    assert np.array_equal(crops[0], array[2:14, 7:19])
    assert np.array_equal(crops[1], array[0:6, 0:6])


def test_tiny_face_encoder_is_unit_norm() -> None:
    encoder = tiny_face_encoder(seed=0)
    faces = encoder.encode_subjects([np.zeros((20, 20, 3), dtype=np.uint8) + 9, np.ones((30, 40, 3), dtype=np.uint8)])
    assert faces.embeds.shape == (2, 16) and faces.landmarks5.shape == (2, 5, 2)
    torch.testing.assert_close(faces.embeds.norm(dim=-1), torch.ones(2))
