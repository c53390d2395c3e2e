"""Every paper package's command line follows the one convention of genblocks.cli (issue: one command line).

Checked for each package with a ``cli.py`` built on :class:`genblocks.cli.CommandLine` (coap-optim keeps its own small
CLI): ``--help`` of the package and of every command imports neither lightning, diffusers nor transformers; every
command with a config ships its default config inside the package (``configs/<name>.yaml``, or
``configs/<group>/<name>.yaml`` for a package whose commands take different configs) and every shipped
config loads onto its schema; an unknown ``--set`` key exits 2 with one line; library modules never import
``genblocks.testing``.
"""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.demo import convention_packages
from genblocks.cli import CommandLine, available_configs

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("lightning", "diffusers", "transformers")


PACKAGES = convention_packages()


def command_line(import_name: str) -> CommandLine:
    cli = importlib.import_module(f"{import_name}.cli")
    return cli.command_line


def test_every_wave_one_paper_package_uses_the_convention() -> None:
    assert {"id-patch", "x-portrait", "diffportrait3d", "fg-net"} <= set(PACKAGES)


@pytest.mark.parametrize("import_name", sorted(PACKAGES.values()))
def test_help_imports_no_heavy_library(import_name: str) -> None:
    code = f"""
import json, sys
from {import_name}.cli import command_line
for argv in [["--help"]] + [[c.name, "--help"] for c in command_line.commands]:
    try:
        command_line.main(argv)
    except SystemExit as exit:
        assert exit.code == 0, (argv, exit.code)
print(json.dumps(sorted({{m.split(".")[0] for m in sys.modules}})))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    loaded = set(json.loads(result.stdout.strip().splitlines()[-1]))
    assert not loaded & set(HEAVY), f"{import_name} --help imported {sorted(loaded & set(HEAVY))}"


def config_cases() -> list[tuple[str, str, str, str]]:
    cases = []
    for import_name in sorted(PACKAGES.values()):
        for command in command_line(import_name).commands:
            if command.schema is None:
                continue
            for name in available_configs(import_name, command.group) or [command.default_config]:
                cases.append((import_name, command.name, command.group, name))
    return cases


@pytest.mark.parametrize(("import_name", "command", "group", "name"), config_cases())
def test_shipped_configs_load_onto_their_schema(import_name: str, command: str, group: str, name: str) -> None:
    from genblocks.cli import load_command_config

    spec = command_line(import_name).command(command)
    module, _, attr = str(spec.schema).partition(":")
    schema = getattr(importlib.import_module(module), attr)
    config, path = load_command_config(schema, import_name, group, name)
    assert path.is_file() and isinstance(config, schema)
    assert spec.default_config in available_configs(import_name, group), f"{import_name} {command}: default missing"
    assert path.is_relative_to(ROOT / "packages") and "/src/" in path.as_posix(), f"{path} is not inside the package"


@pytest.mark.parametrize("import_name", sorted(PACKAGES.values()))
def test_every_config_group_ships_tiny_and_paper(import_name: str) -> None:
    """``--config tiny`` (random CPU sizes) and ``--config paper`` (the paper's sizes) mean the same in every package."""
    for command in command_line(import_name).commands:
        if command.schema is not None:
            shipped = set(available_configs(import_name, command.group))
            assert {"tiny", "paper"} <= shipped, f"{import_name} {command.name}: ships {sorted(shipped)}"


@pytest.mark.parametrize("import_name", sorted(PACKAGES.values()))
def test_unknown_key_exits_2_with_one_line(import_name: str, capsys: pytest.CaptureFixture[str]) -> None:
    cli = command_line(import_name)
    for command in cli.commands:
        if command.schema is None:
            continue
        argv = [command.name, "--set", "no_such_section.no_such_key=1"]
        if command.out is None:
            argv += ["--out", "unused"]
        argv += _required_inputs(cli, command.name)
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "unknown config key 'no_such_section" in err and "Traceback" not in err, err
        assert len(err.strip().splitlines()) == 1, err


def _required_inputs(cli: CommandLine, command: str) -> list[str]:
    """Placeholder values for a command's required flags (the config fails before they are read)."""
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    argv = []
    for action in sub._actions:
        if action.required and action.option_strings and action.dest != "out":
            argv += [action.option_strings[-1], "unused"] if action.nargs != "+" else [action.option_strings[-1], "u"]
    return argv


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_library_code_never_imports_genblocks_testing() -> None:
    sources = [p for p in (ROOT / "shared" / "src" / "genblocks").rglob("*.py") if "testing" not in p.parts]
    sources += list((ROOT / "packages").glob("*/src/**/*.py"))
    offenders = [
        str(path.relative_to(ROOT))
        for path in sources
        if any(name == "genblocks.testing" or name.startswith("genblocks.testing.") for name in _imports(path))
    ]
    assert not offenders, f"library modules importing genblocks.testing: {offenders}"


def test_no_configs_left_outside_the_packages() -> None:
    stray = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "packages").glob("*/configs/**/*.yaml"))
    assert not stray, f"configs outside src/<import_name>/configs (not in the wheel): {stray}"
