"""Config device and dtype names resolve to torch objects; unknown dtypes are refused by name."""

from __future__ import annotations

import pytest
import torch

from genblocks.devices import resolve_device, torch_dtype
from genblocks.errors import InputError


def test_device_names() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")


def test_dtype_names() -> None:
    assert [torch_dtype(n) for n in ("float32", "float16", "bfloat16")] == [
        torch.float32,
        torch.float16,
        torch.bfloat16,
    ]
    with pytest.raises(InputError, match="dtype 'fp8': expected one of float32, float16, bfloat16"):
        torch_dtype("fp8")
