"""The repository's promises: layout, Makefile targets, README commands, CI script, member metadata."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAKEFILE = (ROOT / "Makefile").read_text()
README = (ROOT / "README.md").read_text()
MEMBER_DIRS = [ROOT / "shared", *sorted(p for p in (ROOT / "packages").iterdir() if p.is_dir())]


def make_targets() -> set[str]:
    return set(re.findall(r"^([a-zA-Z][\w%-]*):", MAKEFILE, flags=re.M))


def test_layout() -> None:
    for name in (
        "packages",
        "shared",
        "benchmarks",
        "tests",
        "pyproject.toml",
        "uv.lock",
        "Makefile",
        "README.md",
        ".ci/run",
        ".github/workflows/ci.yml",
    ):
        assert (ROOT / name).exists(), f"{name} is missing"


def test_makefile_has_required_targets() -> None:
    missing = {"setup", "demo", "test", "bench", "wheels", "lint", "test-%"} - make_targets()
    assert not missing, f"Makefile lacks targets {missing}"


def test_readme_commands_are_make_targets() -> None:
    for command in ("make demo", "make test"):
        assert command in README
    targets = make_targets()
    for target in re.findall(r"\bmake ([a-z][\w-]*)", README):
        if target.startswith("test-"):
            assert (ROOT / "packages" / target.removeprefix("test-")).is_dir() or target == "test-genblocks", target
        else:
            assert target in targets, f"README mentions `make {target}`, which the Makefile does not define"


def test_readme_make_commands_dry_run() -> None:
    for target in sorted(set(re.findall(r"\bmake ([a-z][\w-]*)", README))):
        result = subprocess.run(["make", "-n", target], cwd=ROOT, capture_output=True, text=True)
        assert result.returncode == 0, f"`make -n {target}` failed: {result.stderr}"


def test_ci_script_lints_and_tests() -> None:
    script = (ROOT / ".ci/run").read_text()
    assert "make test" in script and "make lint" in script
    assert "set -euo pipefail" in script


@pytest.mark.parametrize("folder", MEMBER_DIRS, ids=lambda p: p.name)
def test_member_metadata(folder: Path) -> None:
    project = tomllib.loads((folder / "pyproject.toml").read_text())
    assert (folder / "README.md").read_text().strip().count("\n") > 5, f"{folder.name}: README is a stub"
    assert list((folder / "tests").glob("test_*.py")), f"{folder.name} has no tests"
    assert project["project"]["requires-python"] == ">=3.11"
    assert project["build-system"]["build-backend"] == "hatchling.build"
    for requirement in project["project"].get("dependencies", []):
        assert ">=" in requirement or "==" in requirement, f"{folder.name}: {requirement!r} has no lower bound"
    depends_on_core = any(
        r.split(">")[0].split("=")[0].strip() == "genblocks" for r in project["project"]["dependencies"]
    )
    if depends_on_core:
        assert project["tool"]["uv"]["sources"]["genblocks"] == {"workspace": True}


def test_coap_optim_depends_on_torch_and_triton_only() -> None:
    project = tomllib.loads((ROOT / "packages/coap-optim/pyproject.toml").read_text())
    names = {re.split(r"[<>=;\s\[]", r, maxsplit=1)[0] for r in project["project"]["dependencies"]}
    assert names == {"torch", "triton"}


def test_workspace_members() -> None:
    root = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "project" not in root, "the root must stay a virtual workspace"
    assert root["tool"]["uv"]["workspace"]["members"] == ["shared", "packages/*"]


def test_ci_workflow_matrices_cover_every_member() -> None:
    workflow = (ROOT / ".github/workflows/ci.yml").read_text()
    matrices = re.findall(r"package: \[([^\]]*)\]", workflow)
    test_matrix = {p.strip() for p in matrices[0].split(",")}
    bench_matrix = {p.strip() for p in matrices[1].split(",")}
    names = {tomllib.loads((d / "pyproject.toml").read_text())["project"]["name"] for d in MEMBER_DIRS}
    assert test_matrix == names
    benchmarked = {p.name for p in (ROOT / "benchmarks").iterdir() if list(p.glob("bench_*.py"))}
    assert bench_matrix == benchmarked
    for target in re.findall(r"make ([a-z-]+)", workflow):
        assert target.startswith("test-") or target in make_targets(), target
