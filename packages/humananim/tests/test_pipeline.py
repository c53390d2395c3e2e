"""HumanAnimPipeline: the shared pipeline contract, windows, sharp hands, a 16-frame non-square run, bad inputs."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
import torch

from genblocks.diffusion import denoise_windows
from genblocks.errors import InputError
from genblocks.testing.pipelines import PipelineTesterMixin
from humananim.config import tiny_config
from humananim.modeling import build_random_components
from humananim.pipeline import (
    HumanAnimPipeline,
    animation_windows,
    driving_hints,
    sampling_options,
    set_sharp_hands,
)

CONFIG = tiny_config()
HEIGHT, WIDTH = CONFIG.model.height, CONFIG.model.width  # 64 x 48: non-square


def tiny_pipeline() -> HumanAnimPipeline:
    components = build_random_components(CONFIG.model, CONFIG.random, seed=0)
    return HumanAnimPipeline(**components.as_dict(), fusion_blocks=CONFIG.model.fusion_blocks)


def inputs(num_frames: int, seed: int = 0) -> dict[str, Any]:
    g = torch.Generator().manual_seed(seed)
    blur = torch.zeros(num_frames, 3, HEIGHT, WIDTH)
    blur[:, :2, 40:56, 8:24] = torch.rand(num_frames, 2, 16, 16, generator=g) * 0.2 - 0.1
    blur[:, 2, 40:56, 8:24] = 0.3
    return {
        "reference_image": torch.rand(3, 80, 60, generator=g),
        "pose_images": torch.rand(num_frames, 3, HEIGHT, WIDTH, generator=g),
        "blur_maps": blur,
        **sampling_options(CONFIG),
        "generator": torch.Generator().manual_seed(seed),
        "output_type": "pt",
    }


class TestHumanAnimPipeline(PipelineTesterMixin):
    pipeline_class = HumanAnimPipeline
    output_field = "frames"
    expected_slice: ClassVar[list[list[float]]] = [
        [0.3057, 0.3436, 0.3653],
        [0.2824, 0.4008, 0.4914],
        [0.3660, 0.5276, 0.4977],
    ]

    def get_pipeline(self) -> HumanAnimPipeline:
        return tiny_pipeline()

    def get_inputs(self, seed: int = 0) -> dict[str, Any]:
        return inputs(4, seed)


def test_four_frames_in_windows_of_three() -> None:
    """The spec's tiny check: 2 DDIM steps, window 3, overlap 1: (4, 3, H, W) frames in [0, 1]."""
    out = tiny_pipeline()(**inputs(4))
    assert out.frames.shape == (4, 3, HEIGHT, WIDTH)
    assert float(out.frames.min()) >= 0.0 and float(out.frames.max()) <= 1.0
    assert out.hints.shape == (4, 6, HEIGHT, WIDTH)


def test_sixteen_frame_non_square_sequence_end_to_end() -> None:
    pipe = tiny_pipeline()
    args = {**inputs(16), "window_size": 8, "window_overlap": 2, "vae_chunk_size": 5, "output_type": "np"}
    frames = pipe(**args).frames
    assert frames.shape == (16, HEIGHT, WIDTH, 3)
    assert frames.std(axis=(1, 2, 3)).min() > 0  # every frame decoded, none left blank


@pytest.mark.parametrize(
    ("num_frames", "window", "overlap"), [(4, 3, 1), (16, 8, 2), (16, 16, 4), (23, 16, 4), (5, 2, 1)]
)
def test_windows_weight_every_frame_to_one(num_frames: int, window: int, overlap: int) -> None:
    windows = animation_windows(num_frames, window, overlap)
    weights = torch.zeros(len(windows), num_frames)
    for k, frames in enumerate(windows):
        weights[k, frames] = 1.0
    weights = weights / weights.sum(0, keepdim=True)
    torch.testing.assert_close(weights.sum(0), torch.ones(num_frames))
    latents = torch.zeros(num_frames, 1, 1, 1)
    ones = denoise_windows(lambda chunk, frames: torch.ones_like(chunk), latents, windows, frame_dim=0)
    assert torch.equal(ones, torch.ones_like(latents))
    # a window-dependent prediction comes out as the weighted mean of the windows holding each frame
    index = {id(w): k for k, w in enumerate(windows)}
    calls = iter(windows)
    mixed = denoise_windows(
        lambda chunk, frames: torch.full_like(chunk, float(index[id(next(calls))])), latents, windows, 0
    )
    expected = (weights * torch.arange(len(windows), dtype=torch.float32)[:, None]).sum(0)
    torch.testing.assert_close(mixed.flatten(), expected)
    assert max(len(w) for w in windows) == min(window, num_frames)


def test_sharp_hands_sets_only_the_hand_regions() -> None:
    hints = torch.zeros(2, 6, 8, 8)
    hints[:, 5, 2:4, 2:4] = 0.25  # a blurred hand
    hints[:, 3, 2:4, 2:4] = 0.5
    sharp = set_sharp_hands(hints)
    assert torch.equal(sharp[:, 5, 2:4, 2:4], torch.ones(2, 2, 2))
    assert float(sharp[:, 5].sum()) == 8.0  # nowhere else
    assert torch.equal(sharp[:, :5], hints[:, :5])
    pipe = tiny_pipeline()
    out = pipe(**{**inputs(2), "num_inference_steps": 1, "output_type": "latent"})
    assert set(out.hints[:, 5].unique().tolist()) == {0.0, 1.0}


def test_guidance_branches_change_the_result() -> None:
    pipe = tiny_pipeline()
    base = {**inputs(2), "num_inference_steps": 1, "output_type": "latent"}
    both = pipe(**{**base, "generator": torch.Generator().manual_seed(0)}).frames
    ref_only = pipe(**{**base, "generator": torch.Generator().manual_seed(0), "uncond_drops": ("ref",)}).frames
    no_cfg = pipe(**{**base, "generator": torch.Generator().manual_seed(0), "guidance_scale": 1.0}).frames
    assert (both - ref_only).abs().max() < 1e-6  # fresh ControlNet: zero residuals, so dropping the pose is a no-op
    assert (both - no_cfg).abs().max() > 1e-4  # the bank-free branch moves the result


@pytest.mark.parametrize(
    ("change", "name"),
    [
        ({"pose_images": torch.rand(4, 3, 60, 48)}, "pose_images"),
        ({"pose_images": torch.rand(4, 4, 64, 48)}, "pose_images"),
        ({"blur_maps": torch.zeros(4, 2, 64, 48)}, "blur_maps"),
        ({"uncond_drops": ("text",)}, "uncond_drops"),
        ({"window_size": 3, "window_overlap": 3}, "window_overlap"),
        ({"window_size": 9, "pose_images": torch.rand(10, 3, 64, 48), "blur_maps": None}, "window_size"),
        ({"reference_image": torch.rand(4, 64, 48)}, "reference_image"),
    ],
)
def test_bad_inputs_name_the_argument(change: dict[str, Any], name: str) -> None:
    with pytest.raises(InputError, match=name):
        tiny_pipeline()(**{**inputs(4), **change})


def test_driving_hints_scale_motion_by_the_config_and_ask_for_sharp_hands() -> None:
    from dataclasses import replace

    import numpy as np

    from humananim.keypoints import PARTS, Keypoints, body_template

    base = tiny_config()
    angles = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    face = np.stack([24 + 3 * np.cos(angles), 8 + 4 * np.sin(angles)], 1)
    face[8], face[17:27, 1] = (24, 12), 4
    points = np.repeat(body_template(face, 48, 64).points, 3, axis=0)
    points[:, PARTS["right_hand"], 0] += np.arange(3)[:, None] * 1.5  # the right hand moves 1.5 px per frame
    dance = Keypoints(points, 48, 64)
    pose, blur = driving_hints(dance, base)
    doubled_pose, doubled = driving_hints(dance, replace(base, keypoints=replace(base.keypoints, motion_gain=2.0)))
    assert pose.shape == (3, 3, 64, 48) and blur is not None and doubled is not None
    torch.testing.assert_close(doubled_pose, pose)
    assert blur[:, 0].max() == pytest.approx(1.5 / 48)  # dx / W on the moving hand
    torch.testing.assert_close(doubled[:, :2], 2 * blur[:, :2])
    assert set(blur[:, 2].unique().tolist()) == {0.0, 1.0}  # sharp on the hands, 0 elsewhere
    no_blur = replace(base, model=replace(base.model, blur_channels=0))
    assert driving_hints(dance, no_blur)[1] is None
