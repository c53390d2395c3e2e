"""The one command-line convention of every paper package.

::

    <pkg> <command> [--config NAME|PATH] [--set key.path=value ...] [--print-config] [--out DIR] [-v]
    <pkg> train [--stage NAME] [--resume] ...

- ``--config`` takes a bare name or a YAML path. A bare name resolves per command inside the installed package:
  ``configs/<group>/<name>.yaml`` under ``src/<import_name>/`` (read with :mod:`importlib.resources`), where ``group``
  is the command's config group (its name unless it shares another command's configs, e.g. ``eval`` reading the
  ``generate`` configs). So ``train --config tiny`` and ``generate --config tiny`` find different files, from any
  working directory and from an installed wheel.
- ``--set`` takes one or more ``key.path=value`` pairs and may be repeated; every pair is kept, in order. Values parse
  as YAML scalars or lists (``--set model.sizes=[1,2] train.lr=1e-4``). An unknown key fails before any work, naming the
  key and the nearest valid keys; a bad value names the key, the value and the expected type.
- ``--print-config`` prints the merged config as YAML and exits.
- ``--out`` is always a folder; the files a command writes inside it have documented names.
- ``train --stage NAME`` (where a paper trains in stages) is the override ``train.stage=NAME``; ``train --resume``
  continues the run in ``--out``.
- A user error (a missing or unreadable file, bad YAML, a bad value, an unknown key, no face found: any
  :class:`~genblocks.errors.InputError`, ``ValueError`` or ``OSError``) exits with status 2 and one line on stderr naming
  the input and what was expected; ``-v`` also shows the traceback and logs progress at INFO level. So does a missing
  optional library (a ``ModuleNotFoundError`` outside genblocks and the package, or an ``ImportError`` raised with an
  install hint); any other ``ImportError`` is a bug and keeps its traceback.

This module imports only the standard library at import time, so ``<pkg> --help`` stays fast: a package's ``cli.py``
imports its heavy modules inside its command functions, and the config schema is named as ``"module:Class"`` and
imported only when the command runs.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import re
import sys
import traceback
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = [
    "Command",
    "CommandLine",
    "available_configs",
    "load_command_config",
    "require_file",
    "require_folder",
    "resolve_config",
    "smoke_command",
]

Handler = Callable[[argparse.Namespace, Any], "int | None"]

_YAML_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class Command:
    """One sub-command of a package's command line.

    Args:
        name: The sub-command (``generate``, ``train``, ``demo``, ...).
        help: One line shown by ``<pkg> --help``.
        run: ``run(args, config) -> exit status | None``; ``config`` is the merged config (an instance of ``schema``), or
            ``None`` when the command has no schema. Imports its heavy modules itself.
        schema: ``"module:Class"`` of the config dataclass, imported only when the command runs; ``None`` for a command
            without a config (no ``--config`` / ``--set``).
        config_group: Folder under the package's ``configs/`` that bare ``--config`` names resolve in (defaults to
            ``name``).
        default_config: The ``--config`` used when none is given.
        arguments: Adds the command's own flags to its parser (``--image``, ``--driving``, ...).
        out: The default ``--out`` folder (``{prog}`` and ``{command}`` are filled in); ``None`` makes ``--out``
            required; ``False`` leaves it out (a command that writes nothing).
        stages: The stage names of ``--stage``; empty for a command without stages.
        stage_key: The config key ``--stage NAME`` sets.
        resume: Add ``--resume`` (training commands).
    """

    name: str
    help: str
    run: Handler
    schema: str | None = None
    config_group: str | None = None
    default_config: str = "tiny"
    arguments: Callable[[argparse.ArgumentParser], None] | None = None
    out: str | bool | None = "outputs/{prog}/{command}"
    stages: tuple[str, ...] = ()
    stage_key: str = "train.stage"
    resume: bool = False

    @property
    def group(self) -> str:
        """The folder under ``configs/`` that bare config names of this command resolve in."""
        return self.config_group or self.name


def _config_folder(package: str, group: str) -> Any:
    """``configs/<group>/`` where a package ships one folder per command group, else ``configs/`` itself."""
    root = resources.files(package) / "configs"
    grouped = root / group
    return grouped if grouped.is_dir() else root


def available_configs(package: str, group: str) -> list[str]:
    """The bare config names ``package`` ships for a command group, sorted.

    A package with one config per size keeps them at ``configs/{tiny,paper}.yaml``; one whose commands need
    different configs (id-patch: ``generate`` and ``train``) keeps a folder per group, ``configs/<group>/*.yaml``.
    """
    folder = _config_folder(package, group)
    if not folder.is_dir():
        return []
    return sorted(entry.name.rsplit(".", 1)[0] for entry in folder.iterdir() if entry.name.endswith(_YAML_SUFFIXES))


def _looks_like_path(config: str) -> bool:
    return config.endswith(_YAML_SUFFIXES) or "/" in config or "\\" in config or Path(config).is_file()


def resolve_config(package: str, group: str, config: str) -> Path:
    """The YAML file behind ``--config``: a path as given, or a bare name inside the installed package.

    Args:
        package: The import name of the package (``"x_portrait"``).
        group: The command's config group (a folder under ``configs/``, or ``configs/`` itself when absent).
        config: A bare name (``"tiny"``) or a path to a YAML file.

    Returns:
        The file's path (for a wheel installed as a zip, importlib.resources extracts it).

    Raises:
        InputError: no such file, or no shipped config of that name (the message lists the names there are).
    """
    from genblocks.errors import InputError

    if _looks_like_path(config):
        path = Path(config)
        if not path.is_file():
            raise InputError(f"--config {config}: no such file (expected a YAML file or a built-in config name)")
        return path
    names = available_configs(package, group)
    if config not in names:
        known = ", ".join(names) if names else "none"
        raise InputError(f"--config {config}: no built-in '{group}' config of that name (built-in: {known})")
    resource = _config_folder(package, group) / f"{config}.yaml"
    with resources.as_file(resource) as path:
        return Path(path)


def require_file(path: Path | None, flag: str, expected: str) -> None:
    """Refuse a missing input file before any model is built, naming the flag and the file (`None`: not given).

    Raises:
        InputError: ``path`` is given and is not a file.
    """
    from genblocks.errors import InputError

    if path is not None and not path.is_file():
        raise InputError(f"{flag} {path}: file not found (expected {expected})")


def require_folder(path: Path | None, flag: str, expected: str) -> None:
    """Refuse a missing input folder before any model is built, naming the flag and the folder (`None`: not given).

    Raises:
        InputError: ``path`` is given and is not a folder.
    """
    from genblocks.errors import InputError

    if path is not None and not path.is_dir():
        raise InputError(f"{flag} {path}: folder not found (expected {expected})")


def _import_object(spec: str) -> Any:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def load_command_config(
    schema: type, package: str, group: str, config: str, overrides: Sequence[str] = ()
) -> tuple[Any, Path]:
    """Resolve ``--config``, load it onto ``schema`` and apply the ``--set`` overrides.

    Returns:
        ``(config instance, resolved YAML path)``.

    Raises:
        InputError: see :func:`resolve_config`; ConfigError: a bad file, key or value.
    """
    from genblocks.config import load_config

    path = resolve_config(package, group, config)
    return load_config(schema, path, list(overrides)), path


def smoke_command(package: str) -> Command:
    """The ``smoke`` command every package has: runs ``<package>.smoke.main()`` (exit status 0 when every check
    passed), imported only when the command runs."""

    def run(args: argparse.Namespace, config: None) -> int:
        return int(importlib.import_module(f"{package}.smoke").main())

    return Command("smoke", "run the self-check of an installed package (exit status 0 on success)", run, out=False)


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps descriptions as written; shows a flag's default only when it has a meaningful one."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        help_text = action.help or ""
        default = action.default
        if "%(default)" in help_text or "default" in help_text or default in (None, False, argparse.SUPPRESS, []):
            return help_text
        return f"{help_text} (default: %(default)s)"


@dataclass
class CommandLine:
    """A package's command line in the one convention: build it once in ``cli.py`` and call :meth:`main`.

    Args:
        prog: The script name (``"x-portrait"``).
        package: The import name whose ``configs/`` bare config names resolve in (``"x_portrait"``).
        description: One paragraph for ``--help``.
        commands: The sub-commands, in the order ``--help`` lists them.
    """

    prog: str
    package: str
    description: str
    commands: Sequence[Command] = field(default_factory=tuple)

    def command(self, name: str) -> Command:
        """The :class:`Command` called ``name``."""
        for command in self.commands:
            if command.name == name:
                return command
        raise KeyError(name)

    def build_parser(self) -> argparse.ArgumentParser:
        """The argparse parser of the whole command line (exposed for documentation and tests)."""
        parser = argparse.ArgumentParser(prog=self.prog, description=self.description, formatter_class=_Formatter)
        parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level; tracebacks on errors")
        names = ",".join(command.name for command in self.commands)
        subparsers = parser.add_subparsers(dest="command", required=True, metavar=f"{{{names}}}")
        for command in self.commands:
            sub = subparsers.add_parser(
                command.name, help=command.help, description=command.help, formatter_class=_Formatter
            )
            self._add_common(sub, command)
            if command.arguments is not None:
                command.arguments(sub)
        return parser

    def _add_common(self, sub: argparse.ArgumentParser, command: Command) -> None:
        sub.add_argument(
            "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log at INFO level; tracebacks"
        )
        if command.schema is not None:
            sub.add_argument(
                "--config",
                default=command.default_config,
                metavar="NAME|PATH",
                help=f"a built-in config ({', '.join(available_configs(self.package, command.group)) or 'none'}) or a YAML file",
            )
            sub.add_argument(
                "--set",
                dest="overrides",
                action="extend",
                nargs="+",
                default=[],
                metavar="KEY=VALUE",
                help="config overrides key.path=value (several per flag; repeatable; values are YAML)",
            )
            sub.add_argument("--print-config", action="store_true", help="print the merged config as YAML and exit")
        if command.out is not False:
            default = None if command.out is None else str(command.out).format(prog=self.prog, command=command.name)
            sub.add_argument(
                "--out",
                type=Path,
                required=default is None,
                default=None if default is None else Path(default),
                metavar="DIR",
                help="output folder",
            )
        if command.stages:
            sub.add_argument("--stage", choices=command.stages, help=f"training stage (sets {command.stage_key})")
        if command.resume:
            sub.add_argument(
                "--resume", action="store_true", help="continue the run in --out from its last checkpoint"
            )

    def main(self, argv: Sequence[str] | None = None) -> int:
        """Parse ``argv``, load the config and run the command; returns the exit status (2 on a user error)."""
        parser = self.build_parser()
        args = parser.parse_args(argv)
        verbose = bool(getattr(args, "verbose", False))
        logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s")
        if not verbose:
            _quiet_libraries()
        command = self.command(args.command)
        try:
            config = self._config(command, args)
            if getattr(args, "print_config", False):
                from genblocks.config import config_to_yaml

                sys.stdout.write(config_to_yaml(config))
                return 0
            status = command.run(args, config)
        except KeyboardInterrupt:
            sys.stderr.write(f"{self.prog} {command.name}: interrupted\n")
            return 130
        except (ValueError, OSError) as error:
            if verbose:
                traceback.print_exc()
            sys.stderr.write(f"{self.prog} {command.name}: error: {_one_line(error)}\n")
            return 2
        except ImportError as error:
            if not _missing_dependency(error, own=("genblocks", self.package)):
                raise
            if verbose:
                traceback.print_exc()
            sys.stderr.write(f"{self.prog} {command.name}: error: {_dependency_message(error)}\n")
            return 2
        return 0 if status is None else int(status)

    def _config(self, command: Command, args: argparse.Namespace) -> Any:
        if command.schema is None:
            return None
        overrides = list(args.overrides)
        if getattr(args, "stage", None):
            overrides.insert(0, f"{command.stage_key}={args.stage}")
        schema = _import_object(command.schema)
        config, path = load_command_config(schema, self.package, command.group, args.config, overrides)
        args.config_path = path
        return config


_LIBRARY_VERBOSITY = {"TRANSFORMERS_VERBOSITY": "error", "DIFFUSERS_VERBOSITY": "error", "BITSANDBYTES_NOWELCOME": "1"}


def _quiet_libraries() -> None:
    """Silence notices the user did not cause (transformers' image-processor backend notes, diffusers' and
    bitsandbytes' banners), unless the environment already sets them; ``-v`` keeps them."""
    for name, value in _LIBRARY_VERBOSITY.items():
        os.environ.setdefault(name, value)
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(diffusers|transformers|torchvision)\..*")
    warnings.filterwarnings("ignore", category=UserWarning, module=r"torchvision\..*")


def _missing_dependency(error: ImportError, own: Sequence[str]) -> bool:
    """Whether ``error`` means an optional library is not installed (a user's set-up, exit 2), not a bug of ours.

    True for a ``ModuleNotFoundError`` of a module outside ``own``, and for an ``ImportError`` a package raised on
    purpose with an install hint (it chains the original import error or names ``pip install``).
    """
    if isinstance(error, ModuleNotFoundError):
        return bool(error.name) and str(error.name).split(".")[0] not in own
    return isinstance(error.__cause__, ImportError) or "pip install" in str(error)


def _dependency_message(error: ImportError) -> str:
    if isinstance(error, ModuleNotFoundError):
        return f"this command needs the module '{error.name}', which is not installed ({_one_line(error)})"
    return _one_line(error)


def _one_line(error: BaseException) -> str:
    """The error's message on one line; a file error names its file."""
    message = str(error)
    if isinstance(error, OSError) and error.filename is not None and str(error.filename) not in message:
        message = f"{error.filename}: {message}"
    elif isinstance(error, OSError) and error.strerror and error.filename is not None:
        message = f"{error.filename}: {error.strerror}"
    return re.sub(r"\s*\n\s*", " ", message).strip() or type(error).__name__
