"""Build every workspace member's wheel, install each ALONE in a fresh virtual environment, import it, run its smoke check.

``make wheels`` runs this. uv resolves a workspace into one environment, so nothing there stops a member from importing a
package that only another member declares; installing each wheel alone, with only its declared dependencies, is what proves
that every component installs independently. Wheels that depend on ``genblocks`` get it from the wheel built here.

Usage::

    uv run python tests/wheels.py --dist dist [--package coap-optim] [--no-install]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Member:
    """One workspace member: its distribution name, import name and folder."""

    name: str
    import_name: str
    folder: Path


def members() -> list[Member]:
    """Every workspace member (``shared`` and ``packages/*``), genblocks first."""
    folders = [ROOT / "shared", *sorted(p for p in (ROOT / "packages").iterdir() if (p / "pyproject.toml").is_file())]
    found = []
    for folder in folders:
        project = tomllib.loads((folder / "pyproject.toml").read_text())["project"]
        packages = sorted(p.name for p in (folder / "src").iterdir() if (p / "__init__.py").is_file())
        if len(packages) != 1:
            raise ValueError(f"{folder}: expected exactly one import package under src/, found {packages}")
        found.append(Member(project["name"], packages[0], folder))
    return found


def build(member: Member, dist: Path) -> Path:
    """Build ``member``'s wheel into ``dist`` and return its path."""
    subprocess.run(["uv", "build", "--package", member.name, "--wheel", "--out-dir", str(dist)], check=True, cwd=ROOT)
    wheels = sorted(dist.glob(f"{member.name.replace('-', '_')}-*.whl"))
    if not wheels:
        raise FileNotFoundError(f"uv build produced no wheel for {member.name} in {dist}")
    return wheels[-1]


def missing_modules(member: Member, wheel: Path) -> list[str]:
    """Source modules of ``member`` absent from ``wheel`` (the official COAP wheel shipped only ``__init__.py``)."""
    src = member.folder / "src"
    expected = {p.relative_to(src).as_posix() for p in (src / member.import_name).rglob("*.py")}
    with zipfile.ZipFile(wheel) as archive:
        shipped = set(archive.namelist())
    return sorted(expected - shipped)


CLI_CHECKS: dict[str, list[list[str]]] = {
    "id-patch": [
        ["demo", "--out", "{out}/demo"],
        [
            "speak",
            "--config",
            "tiny",
            "--image",
            "{image}",
            "--set",
            "face.backend=tiny",
            "--out",
            "{out}/speak",
        ],
    ],
    "x-portrait": [
        ["demo", "--out", "{out}/demo", "--frames", "2", "--no-face"],
        [
            *["animate", "--config", "tiny", "--image", "{image}", "--driving", "{image}", "--out", "{out}/animate"],
            *["--set", "inference.align_driving=false", "inference.local_patches=false"],
        ],
    ],
    "diffportrait3d": [
        ["demo", "--out", "{out}/demo", "--views", "2"],
        ["render", "--config", "tiny", "--image", "{image}", "--views", "2", "--out", "{out}/render"],
    ],
    "fg-net": [
        ["demo", "--out", "{out}/demo"],
        ["predict", "--config", "tiny", "--image", "{image}", "--aligned", "--out", "{out}/predict"],
    ],
    "portrait-edit": [
        ["demo", "--out", "{out}/demo"],
        [
            *["edit", "--config", "tiny", "--image", "{image}", "--aligned", "--prompt", "a man, santa claus costume"],
            *["--source-prompt", "a man", "--out", "{out}/edit"],
        ],
        ["train", "--config", "tiny", "--out", "{out}/train"],
    ],
    "humananim": [
        ["demo", "--out", "{out}/demo", "--frames", "4"],
        [
            *["animate", "--config", "tiny", "--image", "{image}", "--pose", "{out}/demo/keypoints.json"],
            *["--out", "{out}/animate"],
        ],
    ],
    "omniavatar": [
        ["demo", "--out", "{out}/demo"],
        ["render", "--config", "tiny", "--seed", "1", "--path", "orbit", "--out", "{out}/render"],
    ],
    "agilegan3d": [
        ["demo", "--out", "{out}/demo"],
        [
            *["stylize", "--config", "tiny", "--image", "{image}", "--set", "inference.camera_from=frontal"],
            *["--out", "{out}/stylize"],
        ],
    ],
    "dream-talk": [
        ["demo", "--out", "{out}/demo"],
        [
            *["speak", "--config", "tiny", "--set", "inference.check_face=false"],
            *["--audio", "{out}/demo/speech.wav", "--image", "{image}"],
            *["--style", "{out}/demo/style.json", "--out", "{out}/speak"],
        ],
    ],
}
"""Per paper package: the demo and its main command on ``--config tiny``, run from a folder outside the repository
with the installed console script (``{image}`` is a 64-px PNG written there, ``{out}`` a fresh folder)."""


def run_cli_checks(member: Member, venv: Path, workdir: Path) -> None:
    """Run ``CLI_CHECKS[member.name]`` with the venv's console script from ``workdir`` (outside the repository)."""
    workdir.mkdir(parents=True, exist_ok=True)
    python = str(venv / "bin" / "python")
    image = workdir / "portrait.png"
    code = (
        f"import numpy, PIL.Image; PIL.Image.fromarray(numpy.full((64, 64, 3), 128, numpy.uint8)).save({str(image)!r})"
    )
    subprocess.run([python, "-c", code], check=True, cwd=workdir)
    script = str(venv / "bin" / member.name)
    for command in CLI_CHECKS.get(member.name, []):
        argv = [part.format(image=image, out=workdir / "out") for part in command]
        subprocess.run([script, *argv], check=True, cwd=workdir)


def _extras(member: Member) -> list[str]:
    project = tomllib.loads((member.folder / "pyproject.toml").read_text())["project"]
    return [name for name in ("demo", "face") if name in project.get("optional-dependencies", {})]


def install_and_check(member: Member, wheel: Path, dist: Path, venvs: Path, cli: bool = False) -> None:
    """Fresh venv, install the wheel alone (deps from the index, workspace siblings from ``dist``), import, smoke;
    with ``cli``, also the package's demo and main command from a folder outside the repository."""
    venv = venvs / member.name
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run(["uv", "venv", "--quiet", "--python", sys.executable, str(venv)], check=True)
    python = str(venv / "bin" / "python")
    extras = _extras(member) if cli else []
    requirement = f"{wheel}[{','.join(extras)}]" if extras else str(wheel)
    subprocess.run(
        ["uv", "pip", "install", "--quiet", "--python", python, "--find-links", str(dist), requirement], check=True
    )
    subprocess.run(
        [python, "-c", f"import {member.import_name} as m; print(m.__name__, m.__version__, len(m.__all__))"],
        check=True,
        cwd=venvs,
    )
    subprocess.run([python, "-m", f"{member.import_name}.smoke"], check=True, cwd=venvs)
    if cli and member.name in CLI_CHECKS:
        run_cli_checks(member, venv, venvs / f"{member.name}-run")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dist", type=Path, default=ROOT / "dist")
    parser.add_argument("--package", action="append", help="only these members (genblocks is always built)")
    parser.add_argument("--no-install", action="store_true", help="build and check wheel contents only")
    parser.add_argument("--no-cli", action="store_true", help="skip the demo / main-command runs of paper packages")
    args = parser.parse_args(argv)
    dist = args.dist.resolve()
    shutil.rmtree(dist, ignore_errors=True)
    dist.mkdir(parents=True)
    everything = members()
    selected = [m for m in everything if not args.package or m.name in args.package or m.name == "genblocks"]
    unknown = set(args.package or ()) - {m.name for m in everything}
    if unknown:
        parser.error(f"unknown members {sorted(unknown)}; known: {[m.name for m in everything]}")
    wheels = {m.name: build(m, dist) for m in selected}
    failures = []
    for member in selected:
        missing = missing_modules(member, wheels[member.name])
        if missing:
            failures.append(f"{member.name}: wheel lacks {missing}")
    if not args.no_install:
        for member in selected:
            try:
                install_and_check(member, wheels[member.name], dist, dist / "venvs", cli=not args.no_cli)
            except subprocess.CalledProcessError as error:
                failures.append(f"{member.name}: {error}")
            else:
                ran = (
                    " and its demo + main command on --config tiny"
                    if member.name in CLI_CHECKS and not args.no_cli
                    else ""
                )
                print(f"ok  {member.name}: installed alone, imported, smoke check passed{ran}")
    for failure in failures:
        print(f"FAIL {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
