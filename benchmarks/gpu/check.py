"""Entry of the prepared GPU check: ``python -m benchmarks.gpu.check --out DIR [--dry-run] [--budget S]``
(``benchmarks/gpu/run.sh`` sets the paths and calls it).

Sections, in order, each written to ``DIR/<section>.json`` the moment it ends (a run cut off still returns what it
measured): ``env`` (machine and library versions), ``kernels``, ``optimizers``, ``pipelines``, ``new_packages``;
then ``DIR/summary.md`` (every section's table and status). Six files, so a log beside them still fits the device
tool's limit of eight returned files.

A section that raises writes ``{"status": "error", "error", "traceback"}`` and the next one runs. The time budget
(``--budget``, 270 s by default on a GPU; 600 s in a dry run, a safety cap: the dry run itself takes about a
minute on an idle 2-core CPU) is split between the sections; a section past its share
is interrupted (SIGALRM) and recorded as ``"status": "timeout"`` with what it had measured so far (``ctx.partial``),
and items that would not fit in what is left are skipped with a note.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Share of the whole budget each section may use (what a section leaves unused flows to the next ones).
SHARES = {"env": 0.01, "kernels": 0.15, "optimizers": 0.34, "pipelines": 0.34, "new_packages": 0.16}
LIBRARIES = ("torch", "triton", "transformers", "diffusers", "omegaconf", "bitsandbytes", "numpy", "huggingface_hub")


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="benchmarks/gpu/run.sh", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="folder for the JSON files and summary.md")
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU (the rehearsal)")
    parser.add_argument("--budget", type=float, default=None, help="seconds for the whole run")
    parser.add_argument("--only", nargs="*", choices=list(SHARES), help="run only these sections")
    return parser.parse_args(argv)


def env_section(ctx: Any) -> dict[str, Any]:
    """Machine, device and library versions."""
    import importlib.metadata

    import torch

    versions: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    device = torch.cuda.get_device_name(0) if ctx.cuda else platform.processor() or platform.machine()
    memory = torch.cuda.get_device_properties(0).total_memory / 2**30 if ctx.cuda else None
    cuda_version = torch.version.cuda if ctx.cuda else None
    rows = [
        ["device", device],
        ["device memory GiB", memory if memory else "n/a"],
        ["CUDA", cuda_version or "n/a"],
        ["python", platform.python_version()],
    ]
    rows += [[name, version or "missing"] for name, version in versions.items()]
    return {
        "device": device,
        "device_memory_gib": memory,
        "cuda_version": cuda_version,
        "cuda": ctx.cuda,
        "dry_run": ctx.dry_run,
        "python": platform.python_version(),
        "versions": versions,
        "cpu_count": os.cpu_count(),
        "table": {"title": "Machine", "columns": ["what", "value"], "rows": rows},
    }


def _sections() -> dict[str, Callable[[Any], dict[str, Any]]]:
    from benchmarks.gpu import kernels, optimizers, pipelines

    return {
        "env": env_section,
        "kernels": kernels.run,
        "optimizers": optimizers.run,
        "pipelines": pipelines.run,
        "new_packages": pipelines.run_new,
    }


def _on_alarm(signum: int, frame: Any) -> None:
    from benchmarks.gpu.common import BudgetExceeded

    raise BudgetExceeded("section ran past its share of the time budget")


def _write(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str))
    tmp.replace(path)


def _summary_markdown(results: dict[str, dict[str, Any]], header: str) -> str:
    from benchmarks.gpu.common import markdown_table

    parts = [f"# GPU check\n\n{header}\n"]
    for name, result in results.items():
        status = result["status"]
        table = result.get("table")
        title = table["title"] if table else name
        parts.append(f"## {title} (`{name}.json`: {status}, {result['seconds']:.1f} s)\n")
        if table:
            parts.append(markdown_table(table["columns"], table["rows"]) + "\n")
        if result.get("notes"):
            parts.append(result["notes"] + "\n")
        if status != "ok":
            parts.append(f"**{status}**: {result.get('error', '')}\n")
        for line in result.get("skipped", []):
            parts.append(f"- {line}")
        if result.get("skipped"):
            parts.append("")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    if args.dry_run:
        # the Triton kernels run under the interpreter on CPU tensors; it must be set before triton is imported
        os.environ.setdefault("TRITON_INTERPRET", "1")
    import torch

    from benchmarks.gpu.common import BudgetExceeded, Context, free_memory

    cuda = torch.cuda.is_available() and not args.dry_run
    if not cuda and not args.dry_run:
        print("no CUDA device: running the dry run instead (tiny sizes on the CPU)", file=sys.stderr)
        args.dry_run = True
        os.environ.setdefault("TRITON_INTERPRET", "1")
    budget = args.budget if args.budget is not None else (270.0 if cuda else 600.0)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    ctx = Context(
        out=out, dry_run=args.dry_run, device=torch.device("cuda" if cuda else "cpu"), deadline=start + budget
    )
    sections = {k: v for k, v in _sections().items() if not args.only or k in args.only}
    shares = {k: SHARES[k] for k in sections}
    results: dict[str, dict[str, Any]] = {}
    signal.signal(signal.SIGALRM, _on_alarm)
    for index, (name, section) in enumerate(sections.items()):
        now = time.perf_counter()
        remaining_share = sum(list(shares.values())[index:])
        allowed = max(1.0, (ctx.deadline - now) * shares[name] / remaining_share)
        ctx.section_deadline = now + allowed
        ctx.skipped = []
        ctx.partial = {}
        result: dict[str, Any]
        if ctx.deadline - now < 1.0:
            result = {"status": "skipped", "error": "the time budget was used up"}
        else:
            # hard stop a little after the soft deadline, so an item that started in time can finish
            signal.alarm(max(1, int(allowed * 1.5 + 1)))
            try:
                result = {"status": "ok", **section(ctx)}
            except BudgetExceeded as error:
                result = {"status": "timeout", "error": str(error), "partial": ctx.partial}
            except Exception as error:
                result = {
                    "status": "error",
                    "error": f"{type(error).__name__}: {error}",
                    "traceback": traceback.format_exc(),
                    "partial": ctx.partial,
                }
            finally:
                signal.alarm(0)
                free_memory()
        result["seconds"] = time.perf_counter() - now
        result["skipped"] = list(ctx.skipped)
        results[name] = result
        _write(out / f"{name}.json", {"section": name, **result})
        print(f"[gpu-check] {name}: {result['status']} in {result['seconds']:.1f} s", file=sys.stderr, flush=True)
    total = time.perf_counter() - start
    header = (
        f"{'Dry run (tiny sizes, CPU)' if args.dry_run else 'GPU run'} on "
        f"{results.get('env', {}).get('device', ctx.device.type)}; {total:.0f} s of a {budget:.0f} s budget. "
        "Command: `benchmarks/gpu/run.sh --out DIR" + (" --dry-run`." if args.dry_run else "`.")
    )
    (out / "summary.md").write_text(_summary_markdown(results, header))
    print((out / "summary.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
