"""The shipped configs load onto the schema; bad values fail naming their key."""

from __future__ import annotations

import pytest

from genblocks.config import load_config
from genblocks.errors import InputError
from humananim.config import (
    HumanAnimConfig,
    KeypointsConfig,
    ModelConfig,
    SamplingConfig,
    TrainConfig,
    paper_config,
    tiny_config,
)


def test_shipped_configs_load() -> None:
    tiny, paper = tiny_config(), paper_config()
    assert (tiny.model.height, tiny.model.width) == (64, 48)
    assert tiny.model.conditioning_channels == 6
    assert (paper.sampling.num_inference_steps, paper.sampling.guidance_scale) == (25, 7.5)
    assert (paper.sampling.window_size, paper.sampling.window_overlap) == (16, 4)
    assert paper.model.fusion_blocks == "midup" and paper.model.beta_schedule == "linear"
    assert paper.sampling.uncond_drops == ("ref", "pose")
    assert paper.train.optimizer.lr == pytest.approx(1e-5)


def test_snr_scale_only_in_hires_stage() -> None:
    assert TrainConfig(stage="image").snr_scale == 1.0
    assert TrainConfig(stage="hires", base_resolution=512, resolution=1024).snr_scale == 2.0
    assert TrainConfig(stage="hires", snr_shift="none").snr_scale == 1.0


@pytest.mark.parametrize(
    ("make", "key"),
    [
        (lambda: ModelConfig(height=60), "height"),
        (lambda: ModelConfig(blur_channels=2), "blur_channels"),
        (lambda: SamplingConfig(window_size=4, window_overlap=4), "window_overlap"),
        (lambda: SamplingConfig(uncond_drops=("text",)), "uncond_drops"),
        (lambda: TrainConfig(cond_drop_pose=1.5), "cond_drop_pose"),
        (lambda: KeypointsConfig(max_gap=-1), "max_gap"),
        (lambda: KeypointsConfig(sharpness_ref=0.0), "sharpness_ref"),
        (lambda: KeypointsConfig(motion_gain=-1.0), "motion_gain"),
    ],
)
def test_bad_values_name_their_field(make, key: str) -> None:
    with pytest.raises(InputError, match=key):
        make()


def test_override_reaches_nested_field(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  height: 96\n")
    overrides = [
        "sampling.window_overlap=2",
        "loss.region_space=pixel",
        "keypoints.max_gap=3",
        "keypoints.motion_gain=2",
    ]
    config = load_config(HumanAnimConfig, path, overrides)
    assert (config.model.height, config.sampling.window_overlap, config.loss.region_space) == (96, 2, "pixel")
    assert (config.keypoints.max_gap, config.keypoints.motion_gain, config.keypoints.sharpness_ref) == (3, 2.0, 100.0)


def test_every_command_finds_tiny_and_paper_in_the_flat_configs_folder() -> None:
    from genblocks.cli import available_configs
    from humananim.cli import command_line

    for name in ("keypoints", "prepare", "train", "animate", "convert", "demo", "eval"):
        assert available_configs("humananim", command_line.command(name).group) == ["paper", "tiny"], name
