"""The shipped YAML configs equal the presets (paper settings), overrides are typed, and the public API resolves."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from fg_net.config import (
    DataConfig,
    FGNetConfig,
    FGNetRunConfig,
    LandmarkConfig,
    TrainingConfig,
    paper_config,
    tiny_run_config,
)
from fg_net.heatmaps import BP4D_AUS, DISFA_AUS
from genblocks.config import ConfigError, load_config

CONFIGS = Path(__file__).resolve().parents[1] / "src" / "fg_net" / "configs"


def test_tiny_yaml_is_the_tiny_preset() -> None:
    assert load_config(FGNetRunConfig, CONFIGS / "tiny.yaml").model == tiny_run_config().model
    loaded = load_config(FGNetRunConfig, CONFIGS / "tiny.yaml")
    assert loaded.tiny_random and loaded.data.synthetic  # trains on a synthetic corpus: no dataset needed
    schedule = loaded.training.fit_config()
    assert (schedule.max_steps, schedule.val_every_n_steps, schedule.checkpoint_every_n_steps) == (4, 2, 2)


@pytest.mark.parametrize(("name", "dataset", "aus"), [("paper", "BP4D", BP4D_AUS), ("disfa", "DISFA", DISFA_AUS)])
def test_paper_yamls(name: str, dataset: str, aus: tuple[int, ...]) -> None:
    run = load_config(FGNetRunConfig, CONFIGS / f"{name}.yaml")
    assert run.model == paper_config(dataset) and run.model.aus == aus
    assert run.training == TrainingConfig()  # the paper's schedule: 15 epochs of 500 steps, AdamW 5e-5 / 5e-4
    assert (run.training.fit_config().max_steps, run.training.fit_config().val_every_n_steps) == (7500, 500)
    assert run.data == DataConfig(dataset=dataset) and run.landmarks == LandmarkConfig()
    assert run.stylegan_checkpoint.endswith("stylegan2-ffhq-config-f.pt") and run.encoder_checkpoint.endswith(
        "encoder.pt"
    )
    assert not run.tiny_random
    # the spec's unverified items are config fields with documented defaults
    assert run.model.remap_encoder_latents is True and run.training.select_on_test is False
    assert run.data.fold == 0 and run.landmarks.backend == "dlib"


def test_overrides_and_errors_name_the_key() -> None:
    run = load_config(
        FGNetRunConfig, CONFIGS / "paper.yaml", ["data.fold=2", "data.subset=1000", "training.select_on_test=true"]
    )
    assert (run.data.fold, run.data.subset, run.training.select_on_test) == (2, 1000, True)
    with pytest.raises(ConfigError, match=r"training\.optimizer\.lr"):
        load_config(FGNetRunConfig, CONFIGS / "paper.yaml", ["training.optimizer.lr=fast"])
    with pytest.raises(ConfigError, match=r"optimizer\.name.*sgd"):
        load_config(FGNetRunConfig, CONFIGS / "paper.yaml", ["training.optimizer.name=sgd"])
    run = load_config(FGNetRunConfig, CONFIGS / "paper.yaml", ["training.epochs=2", "training.optimizer.lr=1e-4"])
    assert (run.training.fit_config().max_steps, run.training.optimizer.lr) == (1000, 1e-4)
    with pytest.raises(ConfigError, match="selct_on_test"):
        load_config(FGNetRunConfig, CONFIGS / "paper.yaml", ["training.selct_on_test=true"])
    with pytest.raises(ValueError, match="subset"):
        DataConfig(subset=200)
    with pytest.raises(ValueError, match="fold"):
        DataConfig(fold=3)
    with pytest.raises(ValueError, match="backend"):
        LandmarkConfig(backend="mediapipe")
    with pytest.raises(ValueError, match="aus"):
        FGNetConfig(aus=())


def test_public_api() -> None:
    fg_net = importlib.import_module("fg_net")
    assert fg_net.__version__ == "0.1.0"
    for name in fg_net.__all__:
        assert hasattr(fg_net, name), name
        assert name == "__version__" or not name.startswith("_")
    for module in ("heatmaps", "config", "modeling_fg_net", "pipeline_fg_net", "training", "evaluation", "data"):
        sub = importlib.import_module(f"fg_net.{module}")
        for name in sub.__all__:
            assert hasattr(sub, name), f"fg_net.{module}.{name}"
