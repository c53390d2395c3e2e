"""Peak memory of a block of benchmark code: the rise of the process's peak RSS on CPU (``VmHWM`` after resetting it
through ``/proc/self/clear_refs``, Linux >= 4.0), or of ``torch.cuda.max_memory_allocated`` on CUDA."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import torch

__all__ = ["peak_memory"]


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


@contextmanager
def peak_memory(cuda: bool = False) -> Iterator[dict[str, float]]:
    """Yields a dict that receives ``peak_mib`` (MiB above the memory in use when the block started) when it ends."""
    result: dict[str, float] = {}
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        yield result
        torch.cuda.synchronize()
        result["peak_mib"] = (torch.cuda.max_memory_allocated() - base) / 2**20
        return
    with suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
    base_kib = _rss_kib("VmRSS")
    yield result
    result["peak_mib"] = (_rss_kib("VmHWM") - base_kib) / 1024
