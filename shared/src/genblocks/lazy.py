"""Lazy public names for a package ``__init__``: the names are imported on first use, so importing the package (and
running ``<pkg> --help``) does not import torch, diffusers or lightning.

::

    from genblocks.lazy import lazy_exports

    _EXPORTS = {"XPortraitPipeline": "x_portrait.pipeline_x_portrait"}
    __all__ = ["__version__", *sorted(_EXPORTS)]
    __getattr__ = lazy_exports(__name__, _EXPORTS)
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` for ``package`` that imports ``exports[name]`` (a module path) on first access.

    Args:
        package: The package's ``__name__`` (for the error message).
        exports: Public name -> the module that defines it.

    Returns:
        The ``__getattr__`` function; an unknown name raises ``AttributeError`` as usual.
    """

    def __getattr__(name: str) -> Any:
        if name in exports:
            return getattr(importlib.import_module(exports[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
