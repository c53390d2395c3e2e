"""The YAML configurations load onto the schema, match the built-in ones, and bad values name their key."""

from __future__ import annotations

from pathlib import Path

import pytest

from genblocks.cli import load_command_config
from genblocks.config import ConfigError, load_config
from x_portrait.config import ModelConfig, TrainConfig, XPortraitConfig, paper_config, tiny_config

CONFIGS = Path(__file__).resolve().parents[1] / "src" / "x_portrait" / "configs"


def load_cli_config(name: str, overrides: list[str]) -> XPortraitConfig:
    return load_command_config(XPortraitConfig, "x_portrait", "animate", name, overrides)[0]


def test_yaml_files_equal_the_built_in_configs() -> None:
    assert load_config(XPortraitConfig, CONFIGS / "tiny.yaml") == tiny_config()
    assert load_config(XPortraitConfig, CONFIGS / "paper.yaml") == paper_config()


def test_paper_config_holds_the_paper_values() -> None:
    config = paper_config()
    assert (config.model.resolution, config.model.patch_size) == (512, 128)
    assert config.model.controlnet_embedding_channels == (16, 32, 96, 256)
    assert (config.model.temporal_heads, config.model.temporal_max_len) == (8, 24)
    inference = config.inference
    assert (inference.num_inference_steps, inference.guidance_scale, inference.eta) == (30, 5.0, 0.0)
    assert (inference.window_size, inference.window_overlap, inference.vae_chunk_size) == (16, 4, 16)
    assert (inference.start_timestep, inference.seed) == (999, 999)
    assert (config.train.optimizer.lr, config.train.aug_scale, config.train.num_frames) == (1e-5, (0.8, 1.2), 16)


def test_overrides_and_bad_values_name_the_key() -> None:
    config = load_cli_config("tiny", ["inference.num_inference_steps=3", "train.stage=temporal"])
    assert config.inference.num_inference_steps == 3 and config.train.stage == "temporal"
    with pytest.raises(ConfigError, match=r"inference\.num_inference_stpes"):
        load_cli_config("tiny", ["inference.num_inference_stpes=3"])
    with pytest.raises(ConfigError, match=r"train\.stage"):
        load_cli_config("tiny", ["train.stage=video"])
    with pytest.raises(ValueError, match=r"model\.patch_size"):
        ModelConfig(resolution=64, patch_size=18)
    with pytest.raises(ValueError, match=r"train\.aug_scale"):
        TrainConfig(aug_scale=(1.2, 0.8))
