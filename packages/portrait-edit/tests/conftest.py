"""Test configuration of portrait-edit.

- Makes the helper modules of this folder (``pe_faces``) importable (the workspace runs pytest with
  ``--import-mode=importlib``, which does not put test folders on ``sys.path``).
- Runs every test with one intra-op thread: the tensors are tiny, and on a busy 2-core machine several OpenMP threads
  per worker make each op many times slower.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

_TESTS_DIR = str(Path(__file__).resolve().parent)
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)


@pytest.fixture(autouse=True)
def _one_intra_op_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
