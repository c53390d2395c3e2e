"""Test configuration of fg-net.

- Makes the helper module ``fg_net_test_helpers`` importable (the workspace runs pytest with
  ``--import-mode=importlib``, which does not put test folders on ``sys.path``).
- Every test runs with one intra-op thread: the tensors are tiny, and on a busy 2-core machine (``pytest -n 2``) two
  OpenMP threads per worker make each op many times slower.
- Imports ``torch._dynamo`` once at collection: ``torch.optim.Optimizer`` imports it on first use (10-20 s without
  bytecode caching), which would otherwise be charged to whichever test builds the first optimizer.
- ``face_image`` / ``aligned_astronaut`` give scikit-image's astronaut and its dlib landmarks (detected, FFHQ-aligned
  to 256 px, detected again), computed once per session; tests using them skip when dlib or scikit-image is missing.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch._dynamo

_TESTS_DIR = str(Path(__file__).resolve().parent)
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)


@pytest.fixture(autouse=True)
def _one_intra_op_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def face_image() -> Any:
    skimage_data = pytest.importorskip("skimage.data")
    return skimage_data.astronaut()


@pytest.fixture(scope="session")
def face_analyzer() -> Any:
    pytest.importorskip("dlib")
    from fg_net.preprocessing import build_face_analyzer

    return build_face_analyzer()


@pytest.fixture(scope="session")
def aligned_astronaut(face_analyzer: Any, face_image: Any) -> Any:
    from fg_net.preprocessing import align_face

    return align_face(face_analyzer, face_image, output_size=256, name="astronaut")
