"""What every section of the GPU check shares: the run context (device, sizes, time budget), timing and memory.

A section is a function ``run(ctx: Context) -> dict`` returning ``{"rows": [...], "table": {"columns", "rows"},
"notes": str, ...}``; :mod:`benchmarks.gpu.check` wraps it so an exception or an exhausted time budget becomes an
error / skipped JSON and the next section still runs.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn


class BudgetExceeded(Exception):
    """Raised (from a SIGALRM handler or a deadline check) when a section runs past its share of the time budget."""


@dataclass
class Context:
    """Where and how big the check runs.

    Args:
        out: folder the JSON and Markdown files go to.
        dry_run: tiny sizes on CPU (the rehearsal the test suite runs).
        device: ``cuda`` when a GPU is there (and not a dry run), else ``cpu``.
        deadline: ``time.perf_counter()`` value after which no new item starts.
        section_deadline: the current section's own deadline (set by the runner).
        skipped: notes of the items the section skipped for lack of time (reset per section).
        partial: what the section measured so far, kept in its JSON if it fails or times out (reset per section).
    """

    out: Path
    dry_run: bool
    device: torch.device
    deadline: float
    section_deadline: float = math.inf
    skipped: list[str] = field(default_factory=list)
    partial: dict[str, Any] = field(default_factory=dict)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def dtype(self) -> torch.dtype:
        """The low-precision dtype of the run: bf16 (on CPU too, so the dry run takes the same paths)."""
        return torch.bfloat16

    def left(self) -> float:
        """Seconds left before the section's (or the whole run's) deadline."""
        return min(self.deadline, self.section_deadline) - time.perf_counter()

    def fits(self, label: str, estimate_s: float) -> bool:
        """Whether an item estimated to take ``estimate_s`` seconds may start; records it as skipped if not."""
        if self.left() >= estimate_s:
            return True
        self.skipped.append(
            f"{label}: skipped, {self.left():.0f} s left of the budget, needs about {estimate_s:.0f} s"
        )
        return False


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(
    fn: Callable[[], Any], device: torch.device, *, warmup: int = 2, reps: int = 10, budget_s: float = 1.0
) -> dict[str, float]:
    """Median / min wall time of ``fn()`` in ms (CUDA synchronised around every call).

    Args:
        fn: the call.
        device: where it runs.
        warmup: untimed calls first (compilation, autotuning, allocator).
        reps: timed calls at most.
        budget_s: stop repeating once this much time was spent (after at least one timed call).
    """
    for _ in range(warmup):
        fn()
    sync(device)
    times: list[float] = []
    spent = 0.0
    while len(times) < reps and (not times or spent < budget_s):
        start = time.perf_counter()
        fn()
        sync(device)
        elapsed = time.perf_counter() - start
        times.append(1e3 * elapsed)
        spent += elapsed
    return {"median_ms": statistics.median(times), "min_ms": min(times), "reps": len(times)}


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@contextmanager
def peak_memory(device: torch.device) -> Iterator[dict[str, float]]:
    """Yields a dict that receives ``peak_mib`` (peak during the block, everything allocated included) and
    ``above_start_mib`` (the rise above what was allocated when the block started).

    CUDA: ``torch.cuda.max_memory_allocated``. CPU: the process's resident-set high-water mark (``VmHWM``, reset
    through ``/proc/self/clear_refs``), so CPU figures include the interpreter and every library.
    """
    result: dict[str, float] = {}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        yield result
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        result["peak_mib"] = peak / 2**20
        result["above_start_mib"] = (peak - base) / 2**20
        return
    with suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
    base_kib = _status_kib("VmRSS")
    yield result
    peak_kib = _status_kib("VmHWM")
    result["peak_mib"] = peak_kib / 1024
    result["above_start_mib"] = (peak_kib - base_kib) / 1024


def _status_kib(field_name: str) -> int:
    with suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    return 0


# ----------------------------------------------------------------------------------------------------------------
# Paper-size random weights without a slow CPU init: parameters are created on the meta device, then materialised
# directly on the target device in the target dtype and filled with seeded random values there.
# ----------------------------------------------------------------------------------------------------------------


@contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Every ``nn.Parameter`` registered inside the block lives on the meta device (buffers stay real).

    Initialisers then run on meta tensors (free), so a 5-billion-parameter SDXL + ControlNet builds in seconds and
    needs no host memory. Buffers (position ids, schedules) keep their real values.
    """
    original = nn.Module.register_parameter

    def register(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        original(module, name, param)
        if param is not None and param.device.type != "meta":
            meta = nn.Parameter(param.detach().to("meta"), requires_grad=param.requires_grad)
            module._parameters[name] = meta

    nn.Module.register_parameter = register  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        nn.Module.register_parameter = original  # type: ignore[method-assign]


@torch.no_grad()
def materialise(
    module: nn.Module,
    device: torch.device,
    dtype: torch.dtype,
    seed: int = 0,
    memo: dict[int, nn.Parameter] | None = None,
) -> nn.Module:
    """Give every meta parameter of ``module`` real storage on ``device`` in ``dtype``, with seeded random values.

    Values: weights of 2+ dimensions ~ N(0, 1 / fan_in) (activations keep their scale through deep stacks, so bf16
    does not overflow), 1-D ``weight`` = 1 (norms), other 1-D tensors = 0 (biases). Zero-initialised layers
    (ControlNet zero convolutions, temporal output projections) thus get random values too, which changes no cost.
    A parameter shared by several modules stays shared (``memo``). Buffers and non-meta parameters are moved to
    ``device`` (floating ones cast to ``dtype``).

    Returns:
        ``module`` itself.
    """
    memo = {} if memo is None else memo
    generator = torch.Generator(device=device).manual_seed(seed)
    for sub in module.modules():
        for name, param in list(sub._parameters.items()):
            if param is None or param.device.type != "meta":
                continue
            if id(param) not in memo:
                data = torch.empty(
                    param.shape, device=device, dtype=dtype if param.is_floating_point() else param.dtype
                )
                if data.dim() >= 2:
                    fan_in = max(1, data[0].numel())
                    data.normal_(0.0, 1.0 / math.sqrt(fan_in), generator=generator)
                elif name == "weight":
                    data.fill_(1.0)
                else:
                    data.zero_()
                memo[id(param)] = nn.Parameter(data, requires_grad=param.requires_grad)
            sub._parameters[name] = memo[id(param)]
        for name, buffer in list(sub._buffers.items()):
            if buffer is not None and buffer.device.type == "meta":  # made from a meta parameter's device
                sub._buffers[name] = torch.zeros(buffer.shape, dtype=buffer.dtype, device=device)
    module.to(device=device)
    module.to(dtype=dtype)
    return module


def count_parameters(*modules: Any) -> int:
    seen: set[int] = set()
    total = 0
    for module in modules:
        if isinstance(module, nn.Module):
            for param in module.parameters():
                if id(param) not in seen:
                    seen.add(id(param))
                    total += param.numel()
    return total


def markdown_table(columns: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table; floats with 4 significant digits."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value).replace("|", "/")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
