"""Discover, run and record the benchmark matrix.

Usage::

    uv run python -m benchmarks                       # every package's benchmarks
    uv run python -m benchmarks --package coap-optim  # one package (what ``make bench PKG=coap-optim`` runs)
    uv run python -m benchmarks --quick               # smaller sizes, for smoke checks and the demo
    uv run python -m benchmarks --list

Writes ``results/<package>.json`` (figures with units, machine, library versions) and ``results/<package>.md``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

BENCH_ROOT = Path(__file__).resolve().parent
REQUIRED_KEYS = ("title", "columns", "rows", "figures")
TRACKED_LIBRARIES = (
    "torch",
    "triton",
    "transformers",
    "diffusers",
    "lightning",
    "bitsandbytes",
    "galore-torch",
    "peft",
)


def discover(root: Path = BENCH_ROOT) -> dict[str, list[Path]]:
    """Map each package name to its ``bench_*.py`` files, sorted.

    Args:
        root: the ``benchmarks/`` folder.

    Returns:
        ``{package: [paths]}`` for every sub-folder holding at least one ``bench_*.py``.
    """
    found: dict[str, list[Path]] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))):
        files = sorted(folder.glob("bench_*.py"))
        if files:
            found[folder.name] = files
    return found


def load_module(path: Path) -> ModuleType:
    """Import a benchmark file by path (package folders have hyphens, so they are not importable packages)."""
    name = f"benchmarks_{path.parent.name.replace('-', '_')}_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import benchmark file {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def machine_info() -> dict[str, Any]:
    """The machine and library versions a result was measured with."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "libraries": {},
    }
    for lib in TRACKED_LIBRARIES:
        try:
            info["libraries"][lib] = importlib.metadata.version(lib)
        except importlib.metadata.PackageNotFoundError:
            continue
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["cuda_device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        info["cuda_device"] = None
    return info


def validate_result(result: Any, source: Path) -> dict[str, Any]:
    """Check a benchmark's return value against the contract in this package's docstring."""
    if not isinstance(result, dict):
        raise TypeError(f"{source}: run() must return a dict, got {type(result).__name__}")
    missing = [key for key in REQUIRED_KEYS if key not in result]
    if missing:
        raise KeyError(f"{source}: result lacks keys {missing}; expected {list(REQUIRED_KEYS)}")
    width = len(result["columns"])
    for row in result["rows"]:
        if len(row) != width:
            raise ValueError(
                f"{source}: row {row!r} has {len(row)} cells, expected {width} (columns {result['columns']})"
            )
    for name, figure in result["figures"].items():
        if not isinstance(figure, dict) or "value" not in figure or "unit" not in figure:
            raise ValueError(f"{source}: figure {name!r} must be {{'value': ..., 'unit': ...}}, got {figure!r}")
    return result


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def to_markdown(package: str, results: list[dict[str, Any]], machine: dict[str, Any]) -> str:
    """Render one package's results as Markdown tables."""
    libs = ", ".join(f"{k} {v}" for k, v in machine["libraries"].items())
    lines = [
        f"# Benchmarks: {package}",
        "",
        f"Machine: {machine['platform']}, {machine['cpu_count']} CPUs, "
        f"CUDA device: {machine.get('cuda_device')}. Libraries: {libs}.",
        "",
    ]
    for result in results:
        lines += [f"## {result['title']}", ""]
        if "command" in result:
            lines += [f"`{result['command']}`", ""]
        lines.append("| " + " | ".join(result["columns"]) + " |")
        lines.append("|" + "---|" * len(result["columns"]))
        lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in result["rows"]]
        lines.append("")
        if result.get("notes"):
            lines += [result["notes"], ""]
        for artifact in result.get("artifacts", []):
            lines += [f"![{Path(artifact).stem}]({Path(artifact).as_posix()})", ""]
    return "\n".join(lines)


def run_package(
    package: str, files: list[Path], results_dir: Path, quick: bool
) -> tuple[list[dict[str, Any]], list[str]]:
    """Run one package's benchmarks; return (results, failures)."""
    out_dir = results_dir / package
    out_dir.mkdir(parents=True, exist_ok=True)
    results, failures = [], []
    for path in files:
        start = time.perf_counter()
        try:
            result = validate_result(load_module(path).run(out_dir=out_dir, quick=quick), path)
        except Exception:
            failures.append(f"{path}: {traceback.format_exc()}")
            continue
        result["source"] = (
            str(path.relative_to(BENCH_ROOT.parent)) if path.is_relative_to(BENCH_ROOT.parent) else str(path)
        )
        result["wall_seconds"] = round(time.perf_counter() - start, 2)
        results.append(result)
    machine = machine_info()
    payload = {"package": package, "quick": quick, "machine": machine, "results": results}
    (results_dir / f"{package}.json").write_text(json.dumps(payload, indent=2, default=str))
    (results_dir / f"{package}.md").write_text(to_markdown(package, results, machine))
    return results, failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--package", action="append", help="package to benchmark (repeatable); default: all")
    parser.add_argument("--quick", action="store_true", help="small sizes: seconds instead of minutes")
    parser.add_argument("--results-dir", type=Path, default=Path("results"))
    parser.add_argument("--list", action="store_true", help="list the discovered benchmarks and exit")
    args = parser.parse_args(argv)

    found = discover()
    if args.list:
        for package, files in found.items():
            print(package + ": " + ", ".join(f.name for f in files))
        return 0
    selected = args.package or list(found)
    unknown = [p for p in selected if p not in found]
    if unknown:
        parser.error(f"no benchmarks for {unknown}; known packages: {sorted(found)}")
    args.results_dir.mkdir(parents=True, exist_ok=True)
    exit_code = 0
    for package in selected:
        print(f"== {package}", flush=True)
        _, failures = run_package(package, found[package], args.results_dir, args.quick)
        print((args.results_dir / f"{package}.md").read_text())
        for failure in failures:
            print(f"FAILED {failure}", file=sys.stderr)
            exit_code = 1
        print(f"wrote {args.results_dir / (package + '.json')} and {args.results_dir / (package + '.md')}")
    return exit_code
