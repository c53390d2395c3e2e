"""The type check of ``make lint``: mypy over every member's source, held to a committed per-file baseline.

mypy reports errors that predate it in this repository; the baseline (``tests/mypy_baseline.json``: file -> error
count) records them, and this check fails when any file has more errors than its baseline or a file absent from it has
any, so the count can only shrink. ``--update`` rewrites the baseline after a clean-up (never to accept new errors).

Usage::

    uv run python tests/typecheck.py            # check (what make lint runs)
    uv run python tests/typecheck.py --update   # shrink the baseline after fixing errors
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT / "tests" / "mypy_baseline.json"
_ERROR = re.compile(r"^(?P<file>[^:\s]+\.py):\d+: error:")


def sources() -> list[str]:
    """Every member's import package: shared/src/genblocks and packages/*/src/<import_name>."""
    found = [ROOT / "shared" / "src" / "genblocks"]
    found += sorted(p for p in (ROOT / "packages").glob("*/src/*") if (p / "__init__.py").is_file())
    return [str(p.relative_to(ROOT)) for p in found]


def run_mypy() -> tuple[Counter[str], str]:
    """Errors per file and mypy's whole report."""
    command = [sys.executable, "-m", "mypy", "--ignore-missing-imports", "--follow-imports=silent", *sources()]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    counts: Counter[str] = Counter()
    for line in result.stdout.splitlines():
        match = _ERROR.match(line)
        if match:
            counts[match["file"]] += 1
    return counts, result.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--update", action="store_true", help="rewrite the baseline (it may only shrink)")
    args = parser.parse_args(argv)
    counts, report = run_mypy()
    baseline: dict[str, int] = json.loads(BASELINE.read_text()) if BASELINE.is_file() else {}
    worse = {f: (n, baseline.get(f, 0)) for f, n in sorted(counts.items()) if n > baseline.get(f, 0)}
    if args.update:
        if worse and BASELINE.is_file():
            print("refusing to grow the baseline; new errors:", file=sys.stderr)
            for file, (now, before) in worse.items():
                print(f"  {file}: {before} -> {now}", file=sys.stderr)
            return 1
        BASELINE.write_text(json.dumps(dict(sorted(counts.items())), indent=1) + "\n")
        print(f"baseline: {sum(counts.values())} errors in {len(counts)} files")
        return 0
    if worse:
        print(report, file=sys.stderr)
        for file, (now, before) in worse.items():
            print(f"mypy: {file}: {now} errors, baseline {before}", file=sys.stderr)
        return 1
    better = sum(baseline.values()) - sum(counts.values())
    hint = f"; {better} fewer than the baseline: run tests/typecheck.py --update" if better > 0 else ""
    print(f"mypy: {sum(counts.values())} errors in {len(counts)} files, none beyond the baseline{hint}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
