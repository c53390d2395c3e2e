"""The type check of ``make lint``: mypy over every member's source; strict on the core, a shrinking baseline elsewhere.

``genblocks`` (``shared/src/genblocks``) and ``coap-optim`` (``packages/coap-optim/src``) must have no mypy error at
all: any error there fails the check, naming the file, line and message, whatever the baseline says. The other members
have errors that predate the check; the baseline (``tests/mypy_baseline.json``: file -> error count) records them, and
the check fails when any file has more errors than its baseline or a file absent from it has any, so the count can
only shrink. ``--update`` rewrites the baseline after a clean-up: each file keeps the lower of its recorded and its
current count (new errors are never accepted, and strict files never enter it); it still fails while any file is
above its baseline.

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
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT / "tests" / "mypy_baseline.json"
# Sources held to zero errors, independent of the baseline (as repository-relative path prefixes).
STRICT = ("shared/src/genblocks/", "packages/coap-optim/src/")
_ERROR = re.compile(r"^(?P<file>[^:\s]+\.py):\d+: error:")


def sources() -> list[str]:
    """Every member's import package: shared/src/genblocks and packages/*/src/<import_name>."""
    found = [ROOT / "shared" / "src" / "genblocks"]
    found += sorted(p for p in (ROOT / "packages").glob("*/src/*") if (p / "__init__.py").is_file())
    return [str(p.relative_to(ROOT)) for p in found]


def is_strict(file: str) -> bool:
    """Whether ``file`` (repository-relative, ``/``-separated) must have no mypy error."""
    return file.replace("\\", "/").startswith(STRICT)


@dataclass
class Verdict:
    """What one mypy report means against a baseline.

    Attributes:
        counts: Errors per file (all files).
        strict_errors: The error lines of strict files, in report order.
        worse: Non-strict files above their baseline: file -> (errors now, baseline).
    """

    counts: Counter[str]
    strict_errors: list[str] = field(default_factory=list)
    worse: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.strict_errors and not self.worse

    def baseline_counts(self) -> dict[str, int]:
        """The non-strict error counts, as the baseline stores them."""
        return {f: n for f, n in sorted(self.counts.items()) if not is_strict(f)}

    def shrunk(self, baseline: dict[str, int]) -> dict[str, int]:
        """``baseline`` lowered to the current counts: per file the smaller count, files without errors dropped."""
        counts = self.baseline_counts()
        kept = {f: min(n, baseline.get(f, n)) for f, n in counts.items() if f in baseline or not baseline}
        return {f: n for f, n in sorted(kept.items()) if n > 0}


def judge(report: str, baseline: dict[str, int]) -> Verdict:
    """Split mypy's ``report`` into strict-file errors and non-strict files above ``baseline``."""
    verdict = Verdict(Counter())
    for line in report.splitlines():
        match = _ERROR.match(line)
        if match:
            verdict.counts[match["file"]] += 1
            if is_strict(match["file"]):
                verdict.strict_errors.append(line)
    verdict.worse = {
        f: (n, baseline.get(f, 0))
        for f, n in sorted(verdict.counts.items())
        if not is_strict(f) and n > baseline.get(f, 0)
    }
    return verdict


def run_mypy() -> str:
    """mypy's whole report over every member's source."""
    command = [sys.executable, "-m", "mypy", "--ignore-missing-imports", "--follow-imports=silent", *sources()]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    return result.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--update", action="store_true", help="rewrite the baseline (it may only shrink)")
    args = parser.parse_args(argv)
    report = run_mypy()
    baseline: dict[str, int] = json.loads(BASELINE.read_text()) if BASELINE.is_file() else {}
    verdict = judge(report, baseline)
    if verdict.strict_errors:
        print(
            f"mypy: {len(verdict.strict_errors)} errors where none are allowed ({', '.join(STRICT)}):", file=sys.stderr
        )
        for line in verdict.strict_errors:
            print(f"  {line}", file=sys.stderr)
    if args.update:
        counts = verdict.shrunk(baseline if BASELINE.is_file() else {})
        BASELINE.write_text(json.dumps(counts, indent=1) + "\n")
        print(f"baseline: {sum(counts.values())} errors in {len(counts)} files")
        if verdict.worse:
            print("not accepted into the baseline (fix these):", file=sys.stderr)
            for file, (now, before) in verdict.worse.items():
                print(f"  {file}: {before} -> {now}", file=sys.stderr)
        return 0 if verdict.ok else 1
    if verdict.worse:
        print(report, file=sys.stderr)
        for file, (now, before) in verdict.worse.items():
            print(f"mypy: {file}: {now} errors, baseline {before}", file=sys.stderr)
    if not verdict.ok:
        return 1
    counts = verdict.baseline_counts()
    better = sum(baseline.get(f, 0) for f in baseline if not is_strict(f)) - sum(counts.values())
    hint = f"; {better} fewer than the baseline: run tests/typecheck.py --update" if better > 0 else ""
    print(
        f"mypy: none in {', '.join(STRICT)}; {sum(counts.values())} errors in {len(counts)} other files, "
        f"none beyond the baseline{hint}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
