"""Library notices the user did not cause, silenced narrowly where we call the library (issue #17).

Each context manager drops one known message, and only around our own call, so the same kind of notice still shows
when the user's input causes it (a long prompt of their own is still reported as truncated; a module that really is
kept in float32 is still named). Command-line runs and Python use behave the same. The messages silenced:

- transformers' note that an image processor falls back to its PIL backend without torchvision (printed when an
  SDXL / CLIP pipeline module is imported; :data:`IMAGE_PROCESSOR_BACKEND`), and torchvision's own deprecation
  warnings while those libraries import it (:func:`quiet_library_imports`);
- diffusers' "modules that should be kept in float32: []" note, printed on every ``.to(dtype)`` even when the list is
  empty (:data:`EMPTY_FP32_MODULES`);
- numpy 2's ``__array__`` copy-keyword deprecation raised inside diffusers' schedulers on torch tensors
  (:data:`NUMPY_ARRAY_COPY`).

This module imports only the standard library.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

__all__ = [
    "EMPTY_FP32_MODULES",
    "IMAGE_PROCESSOR_BACKEND",
    "NUMPY_ARRAY_COPY",
    "ignore_log_records",
    "ignore_warnings",
    "quiet_library_imports",
]

IMAGE_PROCESSOR_BACKEND = ("transformers.utils.import_utils", r"requires torchvision \(not installed\); falling back")
"""transformers: ``CLIPImageProcessor`` (and Siglip's) use their PIL backend when torchvision is missing; we never
call those processors' torchvision paths, so the note says nothing to our users."""

EMPTY_FP32_MODULES = ("diffusers.models.modeling_utils", r"should be kept in float32: \[\]")
"""diffusers: ``ModelMixin.to(dtype)`` warns about "modules kept in float32" even when there are none."""

NUMPY_ARRAY_COPY = r"__array__ implementation doesn't accept a copy keyword"
"""numpy >= 2 deprecation raised when diffusers' schedulers call ``np.array`` on a torch tensor."""


class _DropMatching(logging.Filter):
    def __init__(self, pattern: str) -> None:
        super().__init__()
        self.pattern = re.compile(pattern)

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.search(record.getMessage())


@contextmanager
def ignore_log_records(logger: str, pattern: str) -> Iterator[None]:
    """Drop the records of one logger whose message matches ``pattern`` (``re.search``) while the block runs.

    Args:
        logger: The emitting logger's name (a filter on it sees only its own records, not its children's).
        pattern: Regular expression of the messages to drop; other records pass.
    """
    target = logging.getLogger(logger)
    drop = _DropMatching(pattern)
    target.addFilter(drop)
    try:
        yield
    finally:
        target.removeFilter(drop)


@contextmanager
def ignore_warnings(message: str, category: type[Warning] = Warning, module: str = "") -> Iterator[None]:
    """``warnings.catch_warnings`` ignoring one message (regular expression matched at its start) of ``category``.

    Args:
        message: Regular expression the warning's text must match from its start.
        category: The warning class (subclasses match too).
        module: Regular expression the warning's module must match (empty: any).
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
        yield


@contextmanager
def quiet_library_imports() -> Iterator[None]:
    """Around importing diffusers / transformers pipeline classes: drop transformers' image-processor backend note
    (:data:`IMAGE_PROCESSOR_BACKEND`) and torchvision's deprecation warnings raised while they import it."""
    with ExitStack() as stack:
        stack.enter_context(ignore_log_records(*IMAGE_PROCESSOR_BACKEND))
        for category in (DeprecationWarning, FutureWarning, UserWarning):
            stack.enter_context(ignore_warnings("", category, module=r"torchvision(\.|$)"))
        yield
