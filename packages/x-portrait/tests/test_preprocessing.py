"""Preprocessing: the local patch image, the best frame, the 3-point affine alignment and the frame checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from xp_testing import PATCH, RESOLUTION, face_landmarks

from genblocks.faces import apply_affine
from x_portrait.preprocessing import (
    LOCAL_PATCH_SLICES,
    alignment_matrix,
    alignment_points,
    best_frame_index,
    frames_to_tensor,
    load_face_analyzer,
    local_patch_centers,
    local_patch_images,
    resize_landmarks,
    three_point_affine,
    transform_landmarks,
    warp_affine,
)


def _landmarks_with_centers(centers: list[tuple[int, int]]) -> np.ndarray:
    """68 points whose left-eye, right-eye and mouth slices average exactly to ``centers``."""
    landmarks = np.full((68, 2), 5.0)
    for part, (x, y) in zip(LOCAL_PATCH_SLICES, centers, strict=True):
        count = part.stop - part.start
        offsets = np.linspace(-3, 3, count)
        landmarks[part] = np.stack([x + offsets, np.full(count, float(y))], 1)
    return landmarks


def test_local_patch_image_has_patches_exactly_at_the_landmark_centres() -> None:
    centers = [(40, 24), (22, 26), (32, 46)]
    landmarks = _landmarks_with_centers(centers)
    np.testing.assert_array_equal(local_patch_centers(landmarks, RESOLUTION, PATCH), np.array(centers))
    generator = torch.Generator().manual_seed(0)
    frames = torch.rand(2, 3, RESOLUTION, RESOLUTION, generator=generator) * 1.8 - 0.9  # never exactly -1
    both = np.stack([landmarks, np.full((68, 2), np.nan)])
    patches = local_patch_images(frames, both, PATCH)
    expected = torch.full_like(frames, -1.0)
    half = PATCH // 2
    for x, y in centers:
        expected[0, :, y - half : y + half, x - half : x + half] = frames[
            0, :, y - half : y + half, x - half : x + half
        ]
    assert torch.equal(patches, expected)
    assert int((patches[0, 0] != -1).sum()) == 3 * PATCH * PATCH  # three disjoint patches
    assert torch.equal(patches[1], torch.full_like(frames[1], -1.0))  # no face: all -1 (upstream fallback)


def test_local_patch_centres_round_and_clip_at_half_resolution_like_upstream() -> None:
    # paper geometry: 512 px, 128-px patches, clip(round(mean / 2), 32, 223) * 2
    landmarks = _landmarks_with_centers([(3, 500), (301, 257), (256, 256)])
    centers = local_patch_centers(landmarks, 512, 128)
    np.testing.assert_array_equal(centers, [[64, 446], [300, 256], [256, 256]])


def test_three_point_affine_alignment_maps_the_three_points_exactly() -> None:
    source = face_landmarks(center=(30.0, 34.0), scale=1.1, jitter=0.5, seed=1)
    driving = face_landmarks(center=(36.0, 28.0), scale=0.8, jitter=0.5, seed=2)
    matrix = alignment_matrix(source, driving)
    np.testing.assert_allclose(
        apply_affine(matrix, alignment_points(driving)), alignment_points(source), rtol=0, atol=1e-9
    )
    src = np.array([[1.0, 2.0], [7.0, -3.0], [0.5, 9.0]])
    dst = np.array([[10.0, 0.0], [3.0, 4.0], [-2.0, 5.5]])
    np.testing.assert_allclose(apply_affine(three_point_affine(src, dst), src), dst, atol=1e-12)
    with pytest.raises(ValueError, match="collinear"):
        three_point_affine(np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]]), dst)


def test_warp_affine_matches_the_point_map_and_fills_black() -> None:
    image = torch.full((1, 3, RESOLUTION, RESOLUTION), -1.0)
    image[0, :, 10, 20] = 1.0  # one white pixel at (x=20, y=10)
    shift = np.array([[1.0, 0.0, 7.0], [0.0, 1.0, -4.0]])
    warped = warp_affine(image, shift)
    assert warped[0, 0, 6, 27] == pytest.approx(1.0, abs=1e-5)
    assert float((warped > -0.99).sum()) == 3  # only that pixel (x 3 channels) is lit
    zoom = three_point_affine(
        np.array([[0.0, 0.0], [63.0, 0.0], [0.0, 63.0]]), np.array([[16.0, 16.0], [47.5, 16.0], [16.0, 47.5]])
    )
    shrunk = warp_affine(torch.zeros(1, 1, RESOLUTION, RESOLUTION), zoom)
    assert float(shrunk[0, 0, 2, 2]) == -1.0 and float(shrunk[0, 0, 32, 32]) == 0.0
    point = np.array([[20.0, 10.0]])
    np.testing.assert_allclose(transform_landmarks(point, shift), [[27.0, 6.0]])


def test_best_frame_is_the_closest_in_l1_and_skips_frames_without_a_face() -> None:
    source = face_landmarks(seed=0)
    driving = np.stack([source + 3.0, np.full((68, 2), np.nan), source + 0.5, source - 1.0])
    assert best_frame_index(source, driving) == 2
    with pytest.raises(ValueError, match="driving_frames"):
        best_frame_index(source, np.full((2, 68, 2), np.nan))


def test_frames_to_tensor_accepts_pil_numpy_and_torch_and_names_bad_input() -> None:
    array = np.zeros((2, 20, 30, 3), dtype=np.uint8)
    array[..., 0] = 255
    from_numpy = frames_to_tensor(array)
    assert from_numpy.shape == (2, 3, 20, 30) and float(from_numpy[:, 0].min()) == 1.0
    from_pil = frames_to_tensor([Image.fromarray(a) for a in array])
    assert torch.equal(from_pil, from_numpy)
    assert frames_to_tensor(torch.rand(3, 20, 30)).shape == (1, 3, 20, 30)
    with pytest.raises(ValueError, match=r"driving_frames must all have the same size.*frame 1"):
        frames_to_tensor([np.zeros((20, 30, 3), np.uint8), np.zeros((21, 30, 3), np.uint8)], "driving_frames")
    with pytest.raises(ValueError, match="driving_frames holds no frames"):
        frames_to_tensor([], "driving_frames")
    np.testing.assert_allclose(resize_landmarks(np.array([[-0.5, 9.5]]), (20, 30), (40, 60)), [[-0.5, 19.5]])


def test_missing_face_backend_names_the_extra(monkeypatch) -> None:
    import genblocks.faces

    class _NoDlib:
        def __init__(self, threshold: float, upsample: int) -> None:
            raise ImportError("No module named 'dlib'")

    monkeypatch.setattr(genblocks.faces, "DlibFaceAnalyzer", _NoDlib)
    with pytest.raises(ImportError, match=r"x-portrait\[face\]"):
        load_face_analyzer()
