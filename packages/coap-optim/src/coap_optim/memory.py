"""Optimizer state memory: the byte count of every state tensor (moments, projections, 8-bit codes and scales).

This is the quantity the COAP paper (arXiv 2412.00071) reports as optimizer memory (``coap_torch/utils/memory.py`` of
`bytedance/coap` at commit ``deabc3a671f63f9a8b49066c925d9df6b260089e`` sums the same tensors).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch

__all__ = ["state_nbytes"]


def _tensor_nbytes(value: object) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, Mapping):
        return sum(_tensor_nbytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_tensor_nbytes(v) for v in value)
    return 0


def state_nbytes(optimizer: torch.optim.Optimizer | Iterable[torch.optim.Optimizer]) -> int:
    """Total bytes of all tensors held in an optimizer's state.

    Counts every tensor of ``optimizer.state`` (nested in dicts, lists or tuples too): moments, ``P`` / Tucker
    factors, 8-bit codes and absmax scales, and the ``step`` counters (8 bytes each for the COAP optimizers). Python
    scalars and the parameters themselves are not counted. For a DTensor the global size is counted.

    Args:
        optimizer (`torch.optim.Optimizer` or an iterable of them): E.g. the optimizers of a layer-wise handle
            (``handle.optimizers.values()``).

    Returns:
        `int`: Bytes.
    """
    if isinstance(optimizer, torch.optim.Optimizer):
        return sum(_tensor_nbytes(state) for state in optimizer.state.values())
    return sum(state_nbytes(opt) for opt in optimizer)
