"""Writes NVIDIA persistence-format network pickles for the converter tests (``torch_utils.persistence`` layout:
``_reconstruct_persistent_obj(meta)`` per module, meta = {type, version, module_src, class_name, state}). The embedded
source raises if it is ever run, and so does the reconstructor a plain ``pickle.load`` would import."""

from __future__ import annotations

import pickle
import sys
import types
from collections import OrderedDict
from pathlib import Path
from typing import Any

from torch import Tensor

EMBEDDED_SOURCE = "raise RuntimeError('the embedded module source was executed')\n"


def _reconstruct_persistent_obj(meta: Any) -> Any:
    raise RuntimeError("the persistence reconstructor was called: pickled code would run")


class _Persistent:
    def __init__(self, meta: dict[str, Any]) -> None:
        self.meta = meta

    def __reduce__(self) -> tuple[Any, ...]:
        return (_reconstruct_persistent_obj, (self.meta,))


def _tree(state: dict[str, Tensor]) -> dict[str, Any]:
    root: dict[str, Any] = {"_parameters": OrderedDict(), "_buffers": OrderedDict(), "_modules": OrderedDict()}
    for key, value in state.items():
        node = root
        *path, leaf = key.split(".")
        for part in path:
            node = node["_modules"].setdefault(
                part, {"_parameters": OrderedDict(), "_buffers": OrderedDict(), "_modules": OrderedDict()}
            )
        node["_parameters"][leaf] = value
    return root


def _persistent(node: dict[str, Any], class_name: str, extra: dict[str, Any] | None = None) -> _Persistent:
    state = {
        "_parameters": node["_parameters"],
        "_buffers": node["_buffers"],
        "_modules": OrderedDict((k, _persistent(v, f"Module_{k}")) for k, v in node["_modules"].items()),
        "training": False,
        **(extra or {}),
    }
    meta = {"type": "class", "version": 4, "module_src": EMBEDDED_SOURCE, "class_name": class_name, "state": state}
    return _Persistent(meta)


def write_persistence_pickle(
    path: Path, state: dict[str, Tensor], init_kwargs: dict[str, Any], extra: dict[str, Any]
) -> Path:
    """Write ``{"G_ema": <generator>, "training_set_kwargs": {...}}`` with `state` as its tensors."""
    module = types.ModuleType("torch_utils.persistence")
    package = types.ModuleType("torch_utils")
    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    module._reconstruct_persistent_obj = _reconstruct_persistent_obj  # type: ignore[attr-defined]
    package.persistence = module  # type: ignore[attr-defined]
    saved = {name: sys.modules.get(name) for name in ("torch_utils", "torch_utils.persistence")}
    sys.modules["torch_utils"], sys.modules["torch_utils.persistence"] = package, module
    try:
        generator = _persistent(
            _tree(state),
            "training.triplane.TriPlaneGenerator",
            {"_init_args": (), "_init_kwargs": init_kwargs, **extra},
        )
        with open(path, "wb") as handle:
            pickle.dump({"G_ema": generator, "training_set_kwargs": {"resolution": 32}}, handle, protocol=2)
    finally:
        for name, value in saved.items():
            if value is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = value
    return path
