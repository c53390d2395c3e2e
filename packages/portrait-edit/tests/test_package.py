"""The package imports lazily and reports the version its pyproject declares."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import portrait_edit

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_version_matches_pyproject() -> None:
    assert portrait_edit.__version__ == tomllib.loads(PYPROJECT.read_text())["project"]["version"]


def test_import_loads_no_model_library() -> None:
    code = "import sys, portrait_edit; print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_every_public_name_resolves() -> None:
    missing = [name for name in portrait_edit.__all__ if getattr(portrait_edit, name, None) is None]
    assert not missing
    assert portrait_edit.PortraitEditTrainingModule.__module__ == "portrait_edit.training"
