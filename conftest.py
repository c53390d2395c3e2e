"""Root test configuration for every package of the workspace.

- ``TRITON_INTERPRET=1`` is set before anything imports triton when no CUDA GPU is present, so Triton kernels run on CPU
  under the interpreter (it must be set before ``import triton``; see triton-lang/triton#4317).
- ``gpu`` tests skip cleanly without CUDA; ``RUN_ONLY_GPU_TESTS=1`` keeps only them (Lightning's convention).
- Under ``pytest -n N`` each worker uses one intra-op thread.
- ``slow`` tests run by default (CI runs them); ``-m "not slow"`` or ``make test-fast`` leaves them out.
"""

from __future__ import annotations

import os
import sys

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs one xdist worker per core: one intra-op thread each avoids oversubscription, which makes tiny
    # models orders of magnitude slower (thread thrashing). Set before torch is imported so subprocesses inherit it.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


if "TRITON_INTERPRET" not in os.environ and not _cuda_available():
    if "triton" in sys.modules:
        raise RuntimeError("triton was imported before TRITON_INTERPRET=1 could be set; import order is broken")
    os.environ["TRITON_INTERPRET"] = "1"


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)


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
