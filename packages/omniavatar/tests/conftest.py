"""Shared fixtures: the tiny config, the procedural head, a Stage I network fitted once per session.

The helper module ``omniavatar_test_pickle`` is made importable (the workspace runs pytest with
``--import-mode=importlib``), and every test runs with one intra-op thread (tiny tensors on a busy 2-core machine).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from genblocks.config import load_config
from omniavatar.config import OmniAvatarConfig
from omniavatar.head_model import ProceduralHead
from omniavatar.semantic_sdf import SemanticSDF, fit_semantic_sdf

_TESTS_DIR = str(Path(__file__).resolve().parent)
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

CONFIGS = Path(__file__).resolve().parents[1] / "src" / "omniavatar" / "configs"
SDF_STEPS = 1200


@pytest.fixture(autouse=True)
def _one_intra_op_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_config() -> OmniAvatarConfig:
    return load_config(OmniAvatarConfig, CONFIGS / "tiny.yaml")


@pytest.fixture(scope="session")
def head(tiny_config: OmniAvatarConfig) -> ProceduralHead:
    return ProceduralHead(tiny_config.flame, seed=tiny_config.model.seed)


@pytest.fixture(scope="session")
def fitted_sdf(tiny_config: OmniAvatarConfig, head: ProceduralHead) -> tuple[SemanticSDF, list[dict[str, float]]]:
    """W and the template SDF fitted for SDF_STEPS steps on the procedural head (single thread: reproducible)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        network = SemanticSDF(tiny_config.flame.feature_dim, tiny_config.igr)
        history = fit_semantic_sdf(network, head, tiny_config.sdf_train, tiny_config.igr.bbox, SDF_STEPS)
    finally:
        torch.set_num_threads(threads)
    return network.eval(), history
