"""The one exception type for mistakes in what a user passed.

Library code raises :class:`InputError` for a bad input it can name (a missing or unreadable file, a value out of range,
an image with no face, a config key that does not exist); :func:`genblocks.cli.CommandLine.main` turns it into one line
on stderr and exit status 2, never a traceback. It is a :class:`ValueError`, so code that catches ``ValueError`` keeps
working. This module imports nothing, so any module may raise it without slowing imports.
"""

from __future__ import annotations

__all__ = ["FieldError", "InputError"]


class InputError(ValueError):
    """A user input (file, value, key or content) that does not fit; the message names the input and what was expected."""


class FieldError(InputError):
    """A bad value of one field of a config dataclass, raised by its ``__post_init__``.

    ``field`` is the key relative to that dataclass (``"max_steps"``), so a schema shared between packages need not know
    the section it sits under: :func:`genblocks.config.merge_config` reports the error under the key the user wrote
    (``training.max_steps`` in FG-Net's config, ``train.max_steps`` in the others).

    Args:
        field: The field's name (dotted below the raising dataclass).
        expected: What the field needs and the value it got (``"expected a positive integer, got 0"``).
    """

    def __init__(self, field: str, expected: str) -> None:
        super().__init__(f"{field}: {expected}")
        self.field = field
        self.expected = expected
