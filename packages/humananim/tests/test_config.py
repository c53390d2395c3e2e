"""The shipped configs load onto the schema; bad values fail naming their key."""

from __future__ import annotations

import pytest

from genblocks.config import load_config
from genblocks.errors import InputError
from humananim.config import HumanAnimConfig, ModelConfig, SamplingConfig, TrainConfig, sd15_config, tiny_config


def test_shipped_configs_load() -> None:
    tiny, sd15 = tiny_config(), sd15_config()
    assert (tiny.model.height, tiny.model.width) == (64, 48)
    assert tiny.model.conditioning_channels == 6
    assert (sd15.sampling.num_inference_steps, sd15.sampling.guidance_scale) == (25, 7.5)
    assert (sd15.sampling.window_size, sd15.sampling.window_overlap) == (16, 4)
    assert sd15.model.fusion_blocks == "midup" and sd15.model.beta_schedule == "linear"
    assert sd15.sampling.uncond_drops == ("ref", "pose")
    assert sd15.train.optimizer.lr == pytest.approx(1e-5)


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
    ],
)
def test_bad_values_name_their_field(make, key: str) -> None:
    with pytest.raises(InputError, match=key):
        make()


def test_override_reaches_nested_field(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  height: 96\n")
    config = load_config(HumanAnimConfig, path, ["sampling.window_overlap=2", "loss.region_space=pixel"])
    assert (config.model.height, config.sampling.window_overlap, config.loss.region_space) == (96, 2, "pixel")
