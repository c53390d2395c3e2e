"""Start-up time of every package's command line: ``<pkg> --help`` against ``python -c "import torch"``.

Command line (from the repository root)::

    uv run --frozen python -m benchmarks --package cli [--quick]

Each command is run in a fresh interpreter (the installed console script through ``python -m <import_name>.cli``
would add nothing: the scripts call ``<import_name>.cli:main``), ``repeats`` times after one warm-up run that fills the
file-system cache; the figure is the median wall time. The target of the one-command-line issue: ``<pkg> --help`` under
2x ``import torch``, which holds when ``--help`` imports neither lightning, diffusers nor transformers.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.demo import convention_packages

ROOT = Path(__file__).resolve().parents[2]
COMMAND = "uv run --frozen python -m benchmarks --package cli"


def wall_time(code: str, repeats: int) -> float:
    """Median seconds of ``python -c code`` over ``repeats`` runs (after one warm-up)."""
    times = []
    for attempt in range(repeats + 1):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, cwd=ROOT)
        if attempt:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def help_code(import_name: str) -> str:
    return (
        f"import sys\nfrom {import_name}.cli import main\ntry:\n    main(['--help'])\n"
        "except SystemExit as exit:\n    sys.exit(exit.code)"
    )


def run(out_dir: Path, quick: bool) -> dict[str, Any]:
    """Time ``import torch`` and each package's ``--help``; report seconds and the ratio."""
    repeats = 3 if quick else 7
    baseline = wall_time("import torch", repeats)
    rows: list[list[Any]] = [["python -c 'import torch'", round(baseline, 3), 1.0]]
    figures: dict[str, dict[str, Any]] = {"import_torch_seconds": {"value": baseline, "unit": "s"}}
    for name, import_name in convention_packages().items():
        seconds = wall_time(help_code(import_name), repeats)
        ratio = seconds / baseline
        rows.append([f"{name} --help", round(seconds, 3), round(ratio, 2)])
        figures[f"{name}_help_seconds"] = {"value": seconds, "unit": "s"}
        figures[f"{name}_help_over_import_torch"] = {"value": ratio, "unit": "x"}
    return {
        "title": "Command-line start-up: <pkg> --help vs import torch",
        "command": COMMAND + (" --quick" if quick else ""),
        "columns": ["command", "median seconds", "x import torch"],
        "rows": rows,
        "figures": figures,
        "notes": f"Median of {repeats} fresh interpreters after one warm-up each; target: every --help under 2x.",
    }
