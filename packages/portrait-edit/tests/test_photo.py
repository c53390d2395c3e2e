"""Whole-photo editing: feathered mask, paste-back (pixels outside the face unchanged), detection errors."""

from __future__ import annotations

import numpy as np
import pytest
from pe_faces import FixedFaceAnalyzer, synthetic_landmarks68

from genblocks.errors import InputError
from genblocks.faces import ffhq_quad
from portrait_edit.photo import edit_photo, feather_mask, paste_back


def test_feather_mask_range_border_and_centre() -> None:
    mask = feather_mask(64, feather=0.1, margin=0.05)
    assert mask.shape == (64, 64) and mask.dtype == np.float32
    assert mask.min() == 0.0 and mask.max() == 1.0
    assert (mask[:3] == 0).all() and (mask[:, -3:] == 0).all()  # the margin band (3.2 px) is exactly 0
    assert (mask[16:48, 16:48] == 1).all()
    ramp = mask[32, :16]
    assert (np.diff(ramp) >= 0).all() and 0 < ramp[6] < 1  # monotone soft ramp
    with pytest.raises(InputError):
        feather_mask(64, feather=0.6)


def test_paste_back_leaves_outside_pixels_unchanged() -> None:
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    # crop = the 64x64 square at x in [40, 104), y in [30, 94), scaled by 0.5 -> 32-px crop
    matrix = np.array([[0.5, 0.0, -20.0], [0.0, 0.5, -15.0]])
    edited = np.full((32, 32, 3), 200, dtype=np.uint8)
    out, weight = paste_back(photo, edited, matrix, feather=0.1, margin=0.05)
    assert out.shape == photo.shape and out.dtype == np.uint8 and weight.shape == (120, 160)
    assert weight.min() >= 0.0 and weight.max() <= 1.0
    outside = weight == 0
    np.testing.assert_array_equal(out[outside], photo[outside])
    # everything outside the crop's square is outside the mask
    square = np.zeros((120, 160), bool)
    square[30:94, 40:104] = True
    assert outside[~square].all()
    # the inner part of the square is the edit
    inner = weight == 1
    assert inner.sum() > 0.4 * 64 * 64
    np.testing.assert_array_equal(out[inner], 200)
    # in the ramp the result lies between the photo and the edit
    ramp = (weight > 0) & (weight < 1)
    expected = photo[ramp] * (1 - weight[ramp, None]) + 200 * weight[ramp, None]
    assert np.abs(out[ramp].astype(np.float64) - expected).max() <= 0.5 + 1e-6


def test_edit_photo_pastes_an_inverted_face_and_keeps_the_rest() -> None:
    rng = np.random.default_rng(1)
    photo = rng.integers(0, 256, (200, 240, 3), dtype=np.uint8)
    landmarks = synthetic_landmarks68(120.0, 90.0, 15.0)
    calls: list[tuple[int, ...]] = []

    def invert(crop: np.ndarray) -> np.ndarray:
        calls.append(crop.shape)
        return 255 - crop[::2, ::2]  # half size: edit_photo resizes it back

    result = edit_photo(photo, invert, FixedFaceAnalyzer(landmarks), crop_size=64)
    assert calls == [(64, 64, 3)]
    assert result.crop.shape == result.edited_crop.shape == (64, 64, 3)
    outside = result.mask == 0
    np.testing.assert_array_equal(result.image[outside], photo[outside])
    # the mask stays inside the FFHQ quad of the face
    quad = ffhq_quad(landmarks)
    ys, xs = np.nonzero(~outside)
    assert xs.min() >= quad[:, 0].min() - 1 and xs.max() <= quad[:, 0].max() + 1
    assert ys.min() >= quad[:, 1].min() - 1 and ys.max() <= quad[:, 1].max() + 1
    # the face centre (weight 1) is changed: inverted noise differs from the photo on average by ~85 levels
    centre = result.mask == 1
    assert centre.sum() > 100
    assert np.abs(result.image[centre].astype(float) - photo[centre]).mean() > 40


def test_edit_photo_without_a_face_raises_input_error() -> None:
    photo = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(InputError, match="no face found"):
        edit_photo(photo, lambda crop: crop, FixedFaceAnalyzer(None), crop_size=64, name="--image blank.png")


def test_edit_photo_with_dlib_on_a_real_portrait() -> None:
    skimage_data = pytest.importorskip("skimage.data")
    try:
        from genblocks.faces import DlibFaceAnalyzer

        analyzer = DlibFaceAnalyzer()
    except ImportError as error:
        pytest.skip(f"dlib face models not installed: {error}")
    photo = skimage_data.astronaut()
    result = edit_photo(photo, lambda crop: 255 - crop, analyzer, crop_size=128)
    outside = result.mask == 0
    np.testing.assert_array_equal(result.image[outside], photo[outside])
    x0, y0, x1, y1 = result.face.box
    assert result.mask[int(y0) : int(y1), int(x0) : int(x1)].mean() > 0.9  # the detected face box is edited
    assert outside.mean() > 0.5  # most of the 512x512 photo is left as it was
