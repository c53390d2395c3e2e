"""NVIDIA network pickles (StyleGAN2-ADA, EG3D, OmniAvatar ``network-snapshot.pkl``) read without running their code.

Those pickles hold ``torch_utils.persistence`` objects whose reconstruction imports and executes the module source
embedded in the file. :func:`read_network_pickle` uses a restricted unpickler instead: it resolves only the torch tensor,
parameter and storage rebuilders, ``_codecs.encode`` with latin-1 (protocol-2 ``bytes``) (storage blobs are read with ``torch.load(weights_only=True)``), ``OrderedDict``, the
numpy array / dtype / scalar rebuilders (numpy 1.x ``numpy.core`` and 2.x ``numpy._core`` names) and torch dtypes, sizes
and devices. Every other global (the persistence reconstructor, ``torch.nn`` layers, ``dnnlib.EasyDict``, the networks'
own classes) becomes an inert :class:`PickledObject` that records its name, arguments and state; nothing is imported
and no embedded source is executed. The module trees are then flattened into ``state_dict``s bit for bit.

The layout read here follows ``torch_utils/persistence.py`` of NVlabs/stylegan2-ada-pytorch (``persistent_class``'s
``__reduce__``: ``_reconstruct_persistent_obj(meta)`` with ``meta = {type, version, module_src, class_name, state}``,
``state`` being the module's ``__dict__``).
"""

from __future__ import annotations

import collections
import importlib
import io
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from genblocks.errors import InputError

__all__ = ["NetworkRecord", "PickledObject", "read_network_pickle", "restricted_load"]

_TORCH_REBUILDERS = {
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_tensor_v3"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"),
}
_NUMPY_NAMES = {"_reconstruct", "scalar", "ndarray", "dtype"}
_NUMPY_MODULES = {
    "numpy",
    "numpy.core.multiarray",
    "numpy._core.multiarray",
    "numpy.core.numeric",
    "numpy._core.numeric",
}
_BUILTINS = {"set": set, "frozenset": frozenset, "slice": slice, "complex": complex, "tuple": tuple, "list": list}
_PERSISTENCE_RECONSTRUCTOR = "_reconstruct_persistent_obj"


class PickledObject:
    """An inert stand-in for any object of a class the restricted unpickler does not resolve.

    Attributes:
        module: The pickled global's module name (never imported).
        name: The pickled global's qualified name.
        args: Arguments of its reconstruction call (``REDUCE`` / ``NEWOBJ``).
        state: What ``BUILD`` gave (usually the object's ``__dict__``).
        items: Dict items set on it (pickled dict subclasses such as ``EasyDict``).
        list_items: List items appended to it.
    """

    module = ""
    name = ""
    args: tuple[Any, ...]
    state: Any
    items: dict[Any, Any]
    list_items: list[Any]

    def __new__(cls, *args: Any, **kwargs: Any) -> PickledObject:
        instance = super().__new__(cls)
        instance.args = args
        instance.state = None
        instance.items = {}
        instance.list_items = []
        return instance

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.items[key] = value

    def append(self, value: Any) -> None:
        self.list_items.append(value)

    def extend(self, values: Any) -> None:
        self.list_items.extend(values)

    @property
    def qualified_name(self) -> str:
        return f"{self.module}.{self.name}"

    def __repr__(self) -> str:
        return f"PickledObject({self.qualified_name})"


def _stand_in(module: str, name: str) -> type[PickledObject]:
    return type(name.replace(".", "_"), (PickledObject,), {"module": module, "name": name})


def _load_storage(blob: bytes) -> Any:
    return torch.load(io.BytesIO(blob), weights_only=True)


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """How protocol-2 pickles store ``bytes``: ``_codecs.encode(text, "latin1")``."""
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


def _rebuild_from_type_v2(function: Any, new_type: Any, args: tuple, state: Any) -> Any:
    if new_type not in (torch.Tensor, torch.nn.Parameter):
        raise pickle.UnpicklingError(f"refusing to rebuild a tensor of type {new_type!r}")
    return function(*args)


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _TORCH_REBUILDERS:
            return getattr(importlib.import_module(module), name)
        if module == "torch._tensor" and name == "_rebuild_from_type_v2":
            return _rebuild_from_type_v2
        if module == "torch.storage" and name == "_load_from_bytes":
            return _load_storage
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if module == "torch" and name in ("Size", "device"):
            return getattr(torch, name)
        if module == "torch.nn.parameter" and name == "Parameter":
            return torch.nn.Parameter
        if module == "torch._utils" and name == "_rebuild_device_tensor_from_numpy":
            return getattr(importlib.import_module(module), name)
        if module == "_codecs" and name == "encode":
            return _latin1_encode
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "builtins" and name in _BUILTINS:
            return _BUILTINS[name]
        if module in _NUMPY_MODULES and name in _NUMPY_NAMES:
            return _numpy_global(name)
        return _stand_in(module, name)

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError(f"persistent id {pid!r}: not a network pickle (a torch.save zip file?)")


def _numpy_global(name: str) -> Any:
    import numpy as np

    if name in ("ndarray", "dtype"):
        return getattr(np, name)
    try:
        multiarray = importlib.import_module("numpy._core.multiarray")
    except ImportError:
        multiarray = importlib.import_module("numpy.core.multiarray")
    return getattr(multiarray, name)


def restricted_load(handle: Any) -> Any:
    """Unpickle ``handle`` with the restricted unpickler (see the module docstring); never runs pickled code."""
    return _RestrictedUnpickler(handle).load()


@dataclass
class NetworkRecord:
    """One network of a pickle (``G``, ``D`` or ``G_ema``), as data.

    Attributes:
        class_name: The network's class (``TriPlaneGenerator``, ``DualDiscriminator``, ...).
        init_kwargs: Its constructor's keyword arguments (EasyDicts become dicts).
        init_args: Its constructor's positional arguments.
        state_dict: Every parameter and buffer by dotted name, as stored.
        source_text: The module source embedded in the pickle (for reading; never executed).
        extra: The module's other plain attributes (``rendering_kwargs``, ``neural_rendering_resolution``, ...).
    """

    class_name: str
    init_kwargs: dict[str, Any]
    init_args: tuple[Any, ...]
    state_dict: dict[str, Tensor]
    source_text: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _plain(value: Any) -> Any:
    """Stand-ins of dict subclasses (EasyDict) -> dicts, containers recursively; other values as they are."""
    if isinstance(value, PickledObject):
        if value.items:
            return {key: _plain(item) for key, item in value.items.items()}
        if isinstance(value.state, dict) and not value.args:
            return {key: _plain(item) for key, item in value.state.items()}
        return value
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_plain(item) for item in value)
    return value


def _module_state(obj: Any) -> tuple[dict[str, Any], str | None, str]:
    """``(module __dict__, embedded source, class name)`` of a pickled module, persistent or plain."""
    if isinstance(obj, PickledObject) and obj.name == _PERSISTENCE_RECONSTRUCTOR:
        meta = obj.args[0]
        return meta.get("state") or {}, meta.get("module_src"), str(meta.get("class_name"))
    if isinstance(obj, PickledObject) and isinstance(obj.state, dict):
        owner = obj.args[0] if obj.args and isinstance(obj.args[0], type) else type(obj)
        return obj.state, None, getattr(owner, "name", obj.name)
    raise InputError(f"expected a pickled network module, got {obj!r}")


def _flatten(obj: Any, prefix: str, out: dict[str, Tensor]) -> None:
    state, _, _ = _module_state(obj)
    for table in ("_parameters", "_buffers"):
        for name, value in (state.get(table) or {}).items():
            if value is not None:
                out[f"{prefix}{name}"] = value.detach() if isinstance(value, Tensor) else value
    for name, child in (state.get("_modules") or {}).items():
        if child is not None:
            _flatten(child, f"{prefix}{name}.", out)


def _record(obj: Any) -> NetworkRecord:
    state, source, class_name = _module_state(obj)
    tensors: dict[str, Tensor] = {}
    _flatten(obj, "", tensors)
    skip = {"_parameters", "_buffers", "_modules", "_init_args", "_init_kwargs", "training"}
    extra = {
        key: _plain(value)
        for key, value in state.items()
        if key not in skip and not key.startswith("_") and not isinstance(value, PickledObject)
    }
    return NetworkRecord(
        class_name=class_name,
        init_kwargs=_plain(state.get("_init_kwargs") or {}),
        init_args=tuple(_plain(state.get("_init_args") or ())),
        state_dict=tensors,
        source_text=source,
        extra=extra,
    )


def read_network_pickle(
    path: str | os.PathLike, names: tuple[str, ...] = ("G", "D", "G_ema")
) -> dict[str, NetworkRecord]:
    """Read the networks of an NVIDIA ``network-snapshot.pkl`` without importing or running anything from it.

    Args:
        path: The pickle file.
        names: The networks to read; those absent from the file are skipped.

    Returns:
        ``{name: NetworkRecord}`` for each network found (its ``state_dict`` holds every tensor bit for bit).

    Raises:
        InputError: The file is missing, not a pickle, or holds none of ``names``.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"network pickle {path}: file not found")
    try:
        with open(path, "rb") as handle:
            data = restricted_load(handle)
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as error:
        raise InputError(f"network pickle {path}: not a readable pickle ({error})") from None
    if isinstance(data, PickledObject) and data.items:
        data = data.items
    if not isinstance(data, dict):
        raise InputError(f"network pickle {path}: expected a dict of networks, got {type(data).__name__}")
    found = {name: _record(data[name]) for name in names if name in data}
    if not found:
        raise InputError(f"network pickle {path}: none of {list(names)} in it (keys: {sorted(map(str, data))})")
    return found
