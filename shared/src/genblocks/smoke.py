"""The installed-wheel smoke checks: the runner every package's ``python -m <package>.smoke`` uses, and genblocks' own.

A package writes ``run_checks() -> list[str]`` (one line per passed check, raising :class:`SmokeError` on a failed
one) and a ``main`` that returns ``run_smoke("<package>", run_checks)``: the report goes to stderr and the exit status
is 0 when every check passed, 1 otherwise. ``python -m genblocks.smoke`` checks the core the same way.
"""

from __future__ import annotations

import sys
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["SmokeError", "check_save_load", "main", "output_tensor", "run_checks", "run_smoke"]


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


def check_save_load(
    pipe: Any, run: Callable[[Any], torch.Tensor], reference: torch.Tensor, what: str, atol: float = 1e-4
) -> str:
    """Save ``pipe`` with ``save_pretrained``, reload it with its class's ``from_pretrained`` and run it again.

    Args:
        pipe: A diffusers-style pipeline.
        run: Calls a pipeline and returns the tensor to compare (same seed and inputs as ``reference``).
        reference: What ``run(pipe)`` gave before saving.
        what: The output's name for the report (``"edit"``, ``"animation"``).
        atol: The largest difference accepted.

    Returns:
        The passed line: ``"save_pretrained / from_pretrained reproduces the {what}"``.

    Raises:
        SmokeError: the reloaded pipeline's output differs by more than ``atol``.
    """
    import torch

    with tempfile.TemporaryDirectory() as folder:
        pipe.save_pretrained(folder)
        loaded = type(pipe).from_pretrained(folder)
        loaded.set_progress_bar_config(disable=True)
        again = run(loaded)
    if not torch.allclose(again, reference, atol=atol):
        raise SmokeError(f"save/load round trip changed the {what} by {float((again - reference).abs().max()):.3g}")
    return f"save_pretrained / from_pretrained reproduces the {what}"


def output_tensor(output: object, name: str) -> torch.Tensor:
    """A pipeline output's ``name`` field (e.g. ``frames``), checked to be a tensor (``output_type="pt"``).

    Raises:
        SmokeError: when the field is missing or not a tensor.
    """
    import torch

    value = getattr(output, name, None)
    if not isinstance(value, torch.Tensor):
        raise SmokeError(f"pipeline output {name}: expected a tensor, got {type(value).__name__}")
    return value


@dataclass
class _Inner:
    width: int = 8


@dataclass
class _Schema:
    name: str = "smoke"
    inner: _Inner = field(default_factory=_Inner)


def run_checks() -> list[str]:
    """genblocks' own checks: a YAML file with an override loads, an unknown key is refused naming it."""
    from genblocks.config import ConfigError, load_config

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.yaml"
        path.write_text("inner:\n  width: 16\n")
        config = load_config(_Schema, path, ["name=ok"])
        if (config.name, config.inner.width) != ("ok", 16):
            raise SmokeError(f"unexpected config {config}")
        try:
            load_config(_Schema, path, ["inner.widht=3"])
        except ConfigError as error:
            if "inner.widht" not in str(error):
                raise SmokeError(f"the unknown-key error does not name the key: {error}") from None
        else:
            raise SmokeError("an unknown key was not rejected")
    return ["config file + override loaded", "unknown key refused"]


def main() -> int:
    """Entry point of ``python -m genblocks.smoke``; returns the exit status."""
    return run_smoke("genblocks", run_checks)


if __name__ == "__main__":
    sys.exit(main())
