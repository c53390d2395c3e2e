"""The condition image: patches exactly at the given positions, summed where they overlap, skipped (with a warning)
when their centre is outside; poses drawn in OpenPose colours; anchors and left-to-right order."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from id_patch.condition import draw_pose, face_anchors, order_subjects, render_condition, to_condition_tensor

SIZE = 64
P = 8


def _patches(count: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(count, 3, P, P, generator=torch.Generator().manual_seed(seed)) + 0.5  # in [0.5, 1.5)


def test_patch_is_exactly_at_each_position() -> None:
    patches = _patches(3)
    locations = torch.tensor([[20.0, 30.0], [45.0, 12.0], [10.4, 50.6]])  # the last one rounds to (10, 51)
    condition = render_condition(None, patches, locations, height=SIZE, width=SIZE)
    assert condition.shape == (3, SIZE, SIZE)
    expected = torch.zeros(3, SIZE, SIZE)
    for patch, (x, y) in zip(patches, [(20, 30), (45, 12), (10, 51)], strict=True):
        block = condition[:, y - P // 2 : y + P // 2, x - P // 2 : x + P // 2]
        assert torch.equal(block, patch)
        expected[:, y - P // 2 : y + P // 2, x - P // 2 : x + P // 2] = patch
    assert torch.equal(condition, expected)  # nothing anywhere else


def test_overlapping_patches_add_up_without_clamping() -> None:
    patches = _patches(2)
    condition = render_condition(None, patches, torch.tensor([[20.0, 20.0], [24.0, 20.0]]), height=SIZE, width=SIZE)
    # columns 20..23 are covered by the right half of patch 0 and the left half of patch 1
    overlap = condition[:, 16:24, 20:24]
    torch.testing.assert_close(overlap, patches[0, :, :, 4:] + patches[1, :, :, :4])
    assert condition.max() > 1.0  # summed, not clamped
    clamped = render_condition(None, patches, torch.tensor([[20.0, 20.0], [24.0, 20.0]]), SIZE, SIZE, clamp=True)
    assert clamped.max() <= 1.0 and torch.equal(clamped, condition.clamp(0, 1))


def test_pose_is_added_and_patches_are_differentiable() -> None:
    pose = torch.rand(3, SIZE, SIZE)
    patches = _patches(1).requires_grad_()
    condition = render_condition(pose, patches, torch.tensor([[32.0, 32.0]]))
    expected = pose.clone()
    expected[:, 28:36, 28:36] += patches[0].detach()
    torch.testing.assert_close(condition.detach(), expected)
    condition.sum().backward()
    assert torch.equal(patches.grad, torch.ones_like(patches))


def test_patch_with_centre_outside_is_skipped_with_warning(caplog: pytest.LogCaptureFixture) -> None:
    patches = _patches(4)
    locations = torch.tensor([[-1.0, 10.0], [10.0, 64.0], [0.0, 0.0], [63.0, 40.0]])
    with caplog.at_level(logging.WARNING, logger="id_patch.condition"):
        condition = render_condition(None, patches, locations, height=SIZE, width=SIZE)
    skipped = [r.getMessage() for r in caplog.records if "Skipping" in r.getMessage()]
    assert len(skipped) == 2 and "subject 0" in skipped[0] and "subject 1" in skipped[1]
    # subjects 2 and 3 sit on the border: only their inside quarter / half is visible
    assert torch.equal(condition[:, 0:4, 0:4], patches[2, :, 4:, 4:])
    assert torch.equal(condition[:, 36:44, 59:64], patches[3, :, :, :5])
    assert condition.abs().sum() == patches[2, :, 4:, 4:].sum() + patches[3, :, :, :5].sum()


def test_render_rejects_mismatched_inputs() -> None:
    with pytest.raises(ValueError, match="one per patch"):
        render_condition(None, _patches(2), torch.zeros(3, 2), height=SIZE, width=SIZE)
    with pytest.raises(ValueError, match="height"):
        render_condition(None, _patches(1), torch.zeros(1, 2))


def test_order_subjects_left_to_right_is_stable() -> None:
    order = order_subjects(torch.tensor([[40.0, 1.0], [10.0, 5.0], [40.0, 0.0], [25.0, 9.0]]))
    assert order.tolist() == [1, 3, 0, 2]


def test_face_anchors() -> None:
    keypoints = np.zeros((2, 17, 3))
    keypoints[:, :, 2] = 1.0
    keypoints[0, :5, :2] = [[10, 20], [8, 18], [12, 18], [6, 19], [16, 19]]  # nose, eyes, ears
    keypoints[1, 0, :2] = [50, 30]
    keypoints[1, 1:5, :2] = [50, 30]
    assert face_anchors(keypoints).tolist() == [[10, 20], [50, 30]]
    assert face_anchors(keypoints, "bbox_center").tolist() == [[11, 19], [50, 30]]
    landmarks = np.array([[[8, 10], [14, 10], [11, 13], [9, 16], [13, 16]]], dtype=np.float32)
    assert face_anchors(landmarks).tolist() == [[11, 13]]
    assert face_anchors(landmarks, "bbox_center").tolist() == [[11, 13]]
    assert face_anchors(np.array([[0, 0, 10, 20]]), "bbox_center").tolist() == [[5, 10]]
    with pytest.raises(ValueError, match="no nose"):
        face_anchors(np.array([[0, 0, 10, 20]]))
    with pytest.raises(ValueError, match="COCO-17"):
        face_anchors(np.zeros((2, 3)))


def test_draw_pose_colours_limbs_and_joints() -> None:
    keypoints = np.zeros((1, 17, 3))
    keypoints[0, 8] = [20, 30, 1.0]  # right elbow
    keypoints[0, 10] = [20, 50, 1.0]  # right wrist
    keypoints[0, 0] = [40, 10, 0.2]  # nose below the score threshold: not drawn
    pose = draw_pose(keypoints, SIZE, SIZE)
    assert pose.shape == (3, SIZE, SIZE) and pose.dtype == torch.float32
    # limb 4-5 (elbow-wrist) is yellow, blended at 0.6 away from the joints
    torch.testing.assert_close(pose[:, 40, 20], torch.tensor([153, 153, 0]) / 255.0)
    # beside the wrist tip only the joint disc (colour 4: (170, 255, 0)) is drawn: 0.4 * c + 0.6 * c
    torch.testing.assert_close(pose[:, 50, 23], torch.tensor([170, 255, 0]) / 255.0)
    assert pose[:, 10, 40].sum() == 0 and pose[:, :, 45:].sum() == 0


def test_to_condition_tensor_formats() -> None:
    array = np.random.default_rng(0).integers(0, 256, (4, 6, 3), dtype=np.uint8)
    tensor = to_condition_tensor(array)
    assert tensor.shape == (3, 4, 6)
    torch.testing.assert_close(tensor, torch.from_numpy(array).permute(2, 0, 1).float() / 255)
    from PIL import Image

    torch.testing.assert_close(to_condition_tensor(Image.fromarray(array)), tensor)
    torch.testing.assert_close(to_condition_tensor(tensor[None]), tensor)
    with pytest.raises(ValueError, match="pose_image"):
        to_condition_tensor(np.zeros((4, 6)))
