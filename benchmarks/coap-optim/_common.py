"""Helpers shared by the coap-optim benchmarks (loaded by path: the folder name has a hyphen).

- :func:`state_bytes`: optimizer-state bytes counted the same way for every optimizer: every tensor reachable from
  ``optimizer.state`` (through dicts, lists, tuples and plain objects such as GaLore's projector), each storage once.
- :func:`time_call`: median / mean wall time of a callable with warm-up and an adaptive repeat count.
- :func:`line_plot`: a PNG line plot when matplotlib is importable.
"""

from __future__ import annotations

import importlib.util
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch


def _walk_tensors(value: Any, seen_objects: set[int]) -> Iterable[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
        return
    if id(value) in seen_objects or isinstance(value, str | bytes | int | float | bool | type(None)):
        return
    seen_objects.add(id(value))
    if isinstance(value, dict):
        for item in value.values():
            yield from _walk_tensors(item, seen_objects)
    elif isinstance(value, list | tuple | set):
        for item in value:
            yield from _walk_tensors(item, seen_objects)
    elif hasattr(value, "__dict__"):
        for item in vars(value).values():
            yield from _walk_tensors(item, seen_objects)


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of every tensor in ``optimizer.state`` (moments, codes, absmax, quantile maps, projection matrices, steps).

    Tensors are found recursively inside containers and plain objects (GaLore/APOLLO keep P in a projector object);
    a storage shared by several parameters (bitsandbytes' quantile maps) is counted once.
    """
    seen_storages: set[tuple[int, int]] = set()
    total = 0
    seen_objects: set[int] = set()
    for state in optimizer.state.values():
        for tensor in _walk_tensors(state, seen_objects):
            storage = tensor.untyped_storage()
            key = (storage.data_ptr(), storage.nbytes())
            if key in seen_storages:
                continue
            seen_storages.add(key)
            total += tensor.numel() * tensor.element_size()
    return total


def time_call(
    fn: Callable[[], Any], *, min_reps: int = 3, max_reps: int = 50, budget_s: float = 2.0, warmup: bool = True
) -> dict[str, float]:
    """Wall time of ``fn()`` in milliseconds.

    Args:
        fn: the call to time (CUDA work must synchronise inside ``fn``).
        min_reps: timed calls at least, unless a single call already exceeds ``budget_s`` (then one is enough).
        max_reps: timed calls at most.
        budget_s: stop repeating (after ``min_reps``) once this much time was spent.
        warmup: make one untimed call first (skipped automatically when that call took longer than ``budget_s``,
            in which case it is used as the first timed call).

    Returns:
        ``{"median_ms", "mean_ms", "min_ms", "reps"}``.
    """
    times: list[float] = []
    if warmup:
        start = time.perf_counter()
        fn()
        first = time.perf_counter() - start
        if first > budget_s:
            times.append(first)
    spent = sum(times)
    while len(times) < max_reps:
        if (len(times) >= min_reps and spent >= budget_s) or (times and times[0] > budget_s):
            break  # enough samples, or one call alone exceeds the budget
        start = time.perf_counter()
        fn()
        elapsed = time.perf_counter() - start
        times.append(elapsed)
        spent += elapsed
    ms = [1e3 * t for t in times]
    return {"median_ms": statistics.median(ms), "mean_ms": statistics.fmean(ms), "min_ms": min(ms), "reps": len(ms)}


def line_plot(
    path: Path,
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    log_x: bool = False,
    log_y: bool = False,
    marker: str = "",
) -> Path | None:
    """Draw ``{label: (xs, ys)}`` to ``path``; ``None`` (and no file) when matplotlib is missing."""
    if importlib.util.find_spec("matplotlib") is None:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.5, 4.5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for label, (xs, ys) in series.items():
        axes.plot(list(xs), list(ys), marker=marker, label=label)
    if log_x:
        axes.set_xscale("log", base=2)
    if log_y:
        axes.set_yscale("log")
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return path


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A small Markdown table (floats with 4 significant digits), for sections kept in ``notes``."""

    def cell(value: Any) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
