"""The package imports lazily, exports what ``__all__`` names, ships both configs, and reports its version."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import dream_talk
from dream_talk.config import load_shipped_config
from genblocks.config import ConfigError

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_version_matches_pyproject() -> None:
    assert dream_talk.__version__ == tomllib.loads(PYPROJECT.read_text())["project"]["version"]


def test_import_loads_no_model_library() -> None:
    code = (
        "import sys, dream_talk; print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_every_public_name_resolves() -> None:
    for name in dream_talk.__all__:
        assert getattr(dream_talk, name) is not None, name


def test_shipped_configs_have_the_spec_sizes() -> None:
    tiny, paper = load_shipped_config("tiny"), load_shipped_config("paper")
    assert (tiny.emodiff.window, tiny.emodiff.d_model, tiny.emodiff.layers, tiny.emodiff.heads) == (8, 32, 2, 2)
    assert (tiny.diffusion.steps, tiny.diffusion.sample_steps, tiny.audio.feature_dim) == (10, 2, 13)
    assert (paper.emodiff.window, paper.emodiff.d_model, paper.emodiff.layers, paper.emodiff.heads) == (64, 256, 8, 8)
    assert (paper.diffusion.schedule, paper.diffusion.steps, paper.diffusion.sampler) == (
        "cosine",
        1000,
        "ddpm_ancestral",
    )
    assert (paper.cfg.p_drop_audio, paper.cfg.p_drop_style, paper.cfg.scale) == (0.1, 0.1, 2.0)
    assert paper.motion.dim == 58 and paper.audio.kind == "wav2vec2" and paper.emodiff.lip_layers == 4


def test_bad_config_values_name_their_key() -> None:
    with pytest.raises(ConfigError, match=r"emodiff\.window"):
        load_shipped_config("tiny", ["emodiff.window=1"])
    with pytest.raises(ConfigError, match=r"cfg\.p_drop_audio"):
        load_shipped_config("tiny", ["cfg.p_drop_audio=2"])
    with pytest.raises(ConfigError, match=r"emodiff\.layer"):
        load_shipped_config("tiny", ["emodiff.layer=3"])
