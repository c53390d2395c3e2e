"""Wheels contain every module (the official COAP wheel shipped only __init__.py); genblocks installs alone."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("repo_wheels", Path(__file__).with_name("wheels.py"))
wheels = importlib.util.module_from_spec(_spec)
sys.modules["repo_wheels"] = wheels
_spec.loader.exec_module(wheels)
build, install_and_check, members, missing_modules = (
    wheels.build,
    wheels.install_and_check,
    wheels.members,
    wheels.missing_modules,
)


@pytest.mark.slow
def test_every_wheel_ships_every_module(tmp_path: Path) -> None:
    for member in members():
        wheel = build(member, tmp_path)
        assert missing_modules(member, wheel) == [], member.name


@pytest.mark.slow
def test_genblocks_installs_alone_and_passes_smoke(tmp_path: Path) -> None:
    core = next(m for m in members() if m.name == "genblocks")
    install_and_check(core, build(core, tmp_path), tmp_path, tmp_path / "venvs")
