"""Test configuration of coap-optim.

- Makes the shared helper module ``coap_testing`` importable: the workspace runs pytest with
  ``--import-mode=importlib``, which does not put test directories on ``sys.path``.
- Imports ``torch._dynamo`` once at collection: ``torch.optim.Optimizer`` methods are wrapped by
  ``torch._disable_dynamo``, which imports it on first use (10-20 s when bytecode caching is off), and that one-time
  cost would otherwise be charged to whichever test builds the first optimizer.
- Runs every test of this directory with one intra-op thread: the tensors are tiny, and on a busy 2-core machine
  (``pytest -n 2``) two OpenMP threads per worker make each op 50-100x slower than one.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

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
