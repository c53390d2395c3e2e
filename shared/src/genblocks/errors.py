"""The one exception type for mistakes in what a user passed.

Library code raises :class:`InputError` for a bad input it can name (a missing or unreadable file, a value out of range,
an image with no face, a config key that does not exist); :func:`genblocks.cli.CommandLine.main` turns it into one line
on stderr and exit status 2, never a traceback. It is a :class:`ValueError`, so code that catches ``ValueError`` keeps
working. This module imports nothing, so any module may raise it without slowing imports.
"""

from __future__ import annotations

__all__ = ["InputError"]


class InputError(ValueError):
    """A user input (file, value, key or content) that does not fit; the message names the input and what was expected."""
