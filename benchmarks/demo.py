"""``make demo``: run every package's demo on its embedded defaults and summarise.

Each package's CLI (``<import_name>.cli.main``) has a ``demo`` subcommand taking ``--out DIR``; it writes its pictures and a
``summary.json`` there (a ``headline`` mapping of a few figures is shown in the table printed at the end).

Usage::

    uv run python -m benchmarks.demo --out outputs [--package coap-optim]
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def package_import_names() -> dict[str, str]:
    """``{distribution: import name}`` for every paper package with a CLI."""
    found = {}
    for folder in sorted((ROOT / "packages").iterdir()):
        pyproject = folder / "pyproject.toml"
        if not pyproject.is_file():
            continue
        name = tomllib.loads(pyproject.read_text())["project"]["name"]
        found[name] = name.replace("-", "_")
    return found


def convention_packages() -> dict[str, str]:
    """The packages of :func:`package_import_names` whose ``cli.py`` is a ``genblocks.cli.CommandLine``."""
    return {
        name: import_name
        for name, import_name in package_import_names().items()
        if "CommandLine(" in _read(ROOT / "packages" / name / "src" / import_name / "cli.py")
    }


def _read(path: Path) -> str:
    return path.read_text() if path.is_file() else ""


def run_demo(package: str, import_name: str, out: Path) -> dict:
    """Run one package's demo in-process and return its row for the summary table."""
    start = time.perf_counter()
    cli = importlib.import_module(f"{import_name}.cli")
    code = cli.main(["demo", "--out", str(out)])
    seconds = time.perf_counter() - start
    summary_path = out / "summary.json"
    headline = json.loads(summary_path.read_text()).get("headline", {}) if summary_path.is_file() else {}
    files = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    return {"package": package, "ok": code == 0, "seconds": seconds, "files": files, "headline": headline}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("outputs"))
    parser.add_argument("--package", action="append")
    args = parser.parse_args(argv)
    packages = package_import_names()
    selected = args.package or list(packages)
    rows = [run_demo(p, packages[p], args.out / p) for p in selected]
    print("\nDemo summary")
    print(f"{'package':<16} {'status':<7} {'seconds':>8}  headline")
    for row in rows:
        headline = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row["headline"].items()
        )
        print(f"{row['package']:<16} {'ok' if row['ok'] else 'FAILED':<7} {row['seconds']:>8.1f}  {headline}")
    for row in rows:
        print(f"outputs of {row['package']}: {(args.out / row['package']).resolve()} ({', '.join(row['files'])})")
    return 0 if all(row["ok"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
