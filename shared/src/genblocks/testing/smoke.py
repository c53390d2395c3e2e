"""The runner of the packages' installed-wheel smoke checks (``python -m <package>.smoke``).

A package writes ``run_checks() -> list[str]`` (one line per passed check, raising :class:`SmokeError` on a failed
one) and a ``main`` that returns ``run_smoke("<package>", run_checks)``: the report goes to stderr and the exit status
is 0 when every check passed, 1 otherwise.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable

__all__ = ["SmokeError", "run_smoke"]


class SmokeError(RuntimeError):
    """A smoke check failed; the message says which."""


def run_smoke(name: str, run_checks: Callable[[], list[str]]) -> int:
    """Run ``run_checks`` and report on stderr: ``"{name} smoke: ok: {line}"`` per passed check, or
    ``"{name} smoke: FAILED: ..."`` (with the traceback for an unexpected error).

    Args:
        name (`str`): The package name that prefixes every line.
        run_checks (`Callable[[], list[str]]`): The checks; returns one line per passed check, raises
            :class:`SmokeError` when one fails.

    Returns:
        `int`: 0 when every check passed, 1 otherwise (the process exit status).
    """
    try:
        passed = run_checks()
    except SmokeError as error:
        sys.stderr.write(f"{name} smoke: FAILED: {error}\n")
        return 1
    except Exception:
        sys.stderr.write(f"{name} smoke: FAILED with an unexpected error:\n{traceback.format_exc()}")
        return 1
    sys.stderr.write("".join(f"{name} smoke: ok: {line}\n" for line in passed))
    return 0
