"""Shared fixtures: the tiny config, seeded tiny networks, one thread (bit-exact comparisons)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from agilegan3d.config import AgileGAN3DConfig, load_preset


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny() -> AgileGAN3DConfig:
    return load_preset("tiny")


@pytest.fixture
def toon_run(tmp_path: Path) -> Path:
    return tmp_path / "run"
