"""Root test configuration for every package of the workspace.

- ``TRITON_INTERPRET=1`` is set before anything imports triton when no CUDA GPU is present, so Triton kernels run on CPU
  under the interpreter (it must be set before ``import triton``; see triton-lang/triton#4317).
- ``gpu`` tests skip cleanly without CUDA; ``RUN_ONLY_GPU_TESTS=1`` keeps only them (Lightning's convention).
- ``slow`` tests run by default (CI runs them); ``-m "not slow"`` or ``make test-fast`` leaves them out.
"""

from __future__ import annotations

import os
import sys

import pytest


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


if "TRITON_INTERPRET" not in os.environ and not _cuda_available():
    if "triton" in sys.modules:
        raise RuntimeError("triton was imported before TRITON_INTERPRET=1 could be set; import order is broken")
    os.environ["TRITON_INTERPRET"] = "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    only_gpu = os.environ.get("RUN_ONLY_GPU_TESTS") == "1"
    has_cuda = _cuda_available()
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    kept = []
    for item in items:
        is_gpu = "gpu" in item.keywords
        if only_gpu and not is_gpu:
            continue
        if is_gpu and not has_cuda:
            item.add_marker(skip_gpu)
        kept.append(item)
    if len(kept) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in kept])
        items[:] = kept
