"""Test configuration of humananim: every test runs with one intra-op thread (the tensors are tiny, and on a busy
2-core machine several OpenMP threads per test make each op many times slower)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_intra_op_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
