"""Device and dtype names as configs write them (``device: auto``, ``dtype: bfloat16``) -> torch objects."""

from __future__ import annotations

import torch

from genblocks.errors import InputError

__all__ = ["DTYPES", "resolve_device", "torch_dtype"]

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else as given (``"cpu"``, ``"cuda:1"``)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of a config's dtype name (``float32``, ``float16``, ``bfloat16``).

    Raises:
        InputError: another name (the message lists the known ones).
    """
    if name not in DTYPES:
        raise InputError(f"dtype {name!r}: expected one of {', '.join(DTYPES)}")
    return DTYPES[name]
