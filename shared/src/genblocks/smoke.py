"""Installed-wheel smoke check: ``python -m genblocks.smoke`` exits 0 when the core works."""

from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from genblocks.config import ConfigError, load_config


@dataclass
class _Inner:
    width: int = 8


@dataclass
class _Schema:
    name: str = "smoke"
    inner: _Inner = field(default_factory=_Inner)


def main() -> int:
    """Load a YAML file with an override, and check that an unknown key is rejected."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.yaml"
        path.write_text("inner:\n  width: 16\n")
        cfg = load_config(_Schema, path, ["name=ok"])
        if (cfg.name, cfg.inner.width) != ("ok", 16):
            sys.stderr.write(f"genblocks smoke: unexpected config {cfg}\n")
            return 1
        try:
            load_config(_Schema, path, ["inner.widht=3"])
        except ConfigError:
            return 0
    sys.stderr.write("genblocks smoke: an unknown key was not rejected\n")
    return 1


if __name__ == "__main__":
    sys.exit(main())
