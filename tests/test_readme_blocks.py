"""Every code block of every README runs (issue #17), so the documentation cannot drift from the code.

The READMEs are found automatically: the root ``README.md``, ``shared/README.md`` and ``packages/*/README.md``. The rules
(documented in the root README, "Contributing: README code blocks"):

- A block marked by an HTML comment on the line before its fence, ``<!-- needs: weights -->`` (real checkpoints or files
  of an official release), ``<!-- needs: data -->`` (a dataset) or ``<!-- needs: gpu -->`` (several reasons separated by
  commas), is not run. The marker must use one of these reasons.
- A ```` ```python ```` block runs as written in a fresh namespace, in an empty temporary working directory.
- A ```` ```bash ```` block runs its lines in order in one temporary working directory (a later line may continue the
  run of an earlier one). A line whose command is a workspace package's console script (``id-patch``, ``fg-net``, ...)
  runs in-process through that script's ``main`` and must exit 0. ``pip``, ``uv`` and ``make`` lines are skipped by rule:
  the test runs inside the installed workspace, and the Makefile targets a README names are checked by
  ``tests/test_repo.py``. Any other command fails the test (a synopsis belongs in a ```` ```text ```` block).
- Every file a command (or a string literal of a python block) names with an image suffix (``.png``, ``.jpg``, ``.jpeg``) or a video suffix (``.mp4``, ``.gif``)
  that does not exist yet is written before the command runs: a photo of a real face (scikit-image's astronaut), and
  for a video a four-frame clip of it.
- Blocks in other languages (``json``, ``text``, ``yaml``) are illustrations and are not run.

The bash blocks that run a package's ``demo``, ``train``, ``generate``, ``animate`` or ``render`` command sample or
train a whole (tiny) model end to end, tens of seconds to minutes on one CPU; they are marked ``slow``.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import re
import shlex
import sys
import tomllib
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
REASONS = ("weights", "data", "gpu")
SKIPPED_COMMANDS = ("pip", "uv", "make")
SLOW_SUBCOMMANDS = ("demo", "train", "generate", "animate", "render")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
VIDEO_SUFFIXES = (".mp4", ".gif")
RUN_LANGUAGES = ("python", "bash")

FENCE = re.compile(r"^(?P<indent>\s{0,3})(?P<fence>```+|~~~+)\s*(?P<language>[\w+-]*)")
MARKER = re.compile(r"^\s*<!--\s*needs:\s*(?P<reasons>[^>]*?)\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a README."""

    readme: Path
    line: int  # 1-based line of the opening fence
    language: str
    code: str
    needs: tuple[str, ...]  # the reasons of its ``<!-- needs: ... -->`` marker, empty when unmarked

    @property
    def name(self) -> str:
        return f"{self.readme.relative_to(ROOT).as_posix()}:{self.line}"


def readmes() -> list[Path]:
    """Every README the rules cover, found on disk (a new package's README is covered when it lands)."""
    found = [ROOT / "README.md", ROOT / "shared" / "README.md", *sorted((ROOT / "packages").glob("*/README.md"))]
    return [path for path in found if path.is_file()]


def readme_blocks(path: Path) -> list[Block]:
    """The fenced code blocks of one Markdown file, each with the marker on the line before its fence."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks = []
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        fence, indent = opening["fence"], len(opening["indent"])
        end = index + 1
        while end < len(lines) and not lines[end].strip().startswith(fence):
            end += 1
        code = "\n".join(line[indent:] if line[:indent].isspace() else line for line in lines[index + 1 : end])
        previous = next((line for line in reversed(lines[:index]) if line.strip()), "")
        marker = MARKER.match(previous)
        needs = tuple(r.strip() for r in marker["reasons"].split(",")) if marker else ()
        blocks.append(Block(path, index + 1, opening["language"].lower(), code + "\n", needs))
        index = end + 1
    return blocks


def all_blocks() -> list[Block]:
    return [block for path in readmes() for block in readme_blocks(path)]


@functools.cache
def console_scripts() -> dict[str, str]:
    """``{script: "module:function"}`` of every workspace member's ``[project.scripts]``."""
    scripts = {}
    for pyproject in [ROOT / "shared" / "pyproject.toml", *sorted((ROOT / "packages").glob("*/pyproject.toml"))]:
        if pyproject.is_file():
            scripts.update(tomllib.loads(pyproject.read_text())["project"].get("scripts", {}))
    return scripts


def bash_commands(code: str) -> list[list[str]]:
    """The commands of a bash block as argument lists: continuation lines joined, comments dropped."""
    commands = []
    for line in code.replace("\\\n", " ").splitlines():
        argv = shlex.split(line, comments=True)
        if argv:
            commands.append(argv)
    return commands


def is_slow(block: Block) -> bool:
    if block.language != "bash":
        return False
    return any(
        argv[0] in console_scripts() and len(argv) > 1 and argv[1] in SLOW_SUBCOMMANDS
        for argv in bash_commands(block.code)
    )


def runnable_blocks() -> list[Any]:
    params = []
    for block in all_blocks():
        if block.language not in RUN_LANGUAGES or block.needs:
            continue
        if block.language == "bash" and all(argv[0] in SKIPPED_COMMANDS for argv in bash_commands(block.code)):
            continue  # install / build lines only
        marks = [pytest.mark.slow] if is_slow(block) else []
        params.append(pytest.param(block, id=block.name, marks=marks))
    return params


@functools.cache
def portrait() -> np.ndarray:
    """A 256-px photo of a real face (dlib finds it), uint8 (256, 256, 3)."""
    from PIL import Image
    from skimage import data

    face = Image.fromarray(data.astronaut()[0:220, 140:330])
    return np.asarray(face.resize((256, 256), Image.Resampling.BICUBIC))


def write_inputs(names: list[str], folder: Path) -> None:
    """Write the image and video files ``names`` lists that do not exist yet (paths relative to ``folder``)."""
    from genblocks.media import write_image, write_video

    for token in names:
        if token.startswith("-"):
            continue
        path = folder / token
        suffix = path.suffix.lower()
        if path.exists() or suffix not in IMAGE_SUFFIXES + VIDEO_SUFFIXES:
            continue
        if suffix in IMAGE_SUFFIXES:
            write_image(path, portrait())
        else:  # four frames drifting sideways, so a motion extractor sees motion
            frames = np.stack([np.roll(portrait(), 4 * k, axis=1) for k in range(4)])
            write_video(path, frames, fps=8.0)


def script_main(name: str) -> Callable[[list[str]], int]:
    module, _, function = console_scripts()[name].partition(":")
    return getattr(importlib.import_module(module), function)


def run_command(argv: list[str], folder: Path) -> None:
    """Run one README command line in-process in ``folder``; fail with its stderr unless it exits 0."""
    if argv[0] in SKIPPED_COMMANDS:
        return
    assert argv[0] in console_scripts(), (
        f"`{shlex.join(argv)}`: {argv[0]!r} is not a workspace command; run only package commands in a bash block, "
        "mark it <!-- needs: ... --> or use a ```text block"
    )
    write_inputs(argv[1:], folder)
    try:
        status = script_main(argv[0])(argv[1:])
    except SystemExit as exit:
        status = exit.code if isinstance(exit.code, int) else 1
    assert status == 0, f"`{shlex.join(argv)}` exited {status}"


@contextlib.contextmanager
def working_directory(folder: Path) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        yield


def test_markers_name_known_reasons() -> None:
    for block in all_blocks():
        unknown = set(block.needs) - set(REASONS)
        assert not unknown, f"{block.name}: unknown <!-- needs: --> reason {sorted(unknown)}; use one of {REASONS}"


def test_every_readme_is_found() -> None:
    found = {path.relative_to(ROOT).as_posix() for path in readmes()}
    assert {"README.md", "shared/README.md", "packages/id-patch/README.md", "packages/fg-net/README.md"} <= found
    packages = {path.parent.name for path in (ROOT / "packages").glob("*/pyproject.toml")}
    assert {path.split("/")[1] for path in found if path.startswith("packages/")} == {
        name for name in packages if (ROOT / "packages" / name / "README.md").is_file()
    }


def test_rules_on_a_sample_readme(tmp_path: Path) -> None:
    sample = tmp_path / "README.md"
    sample.write_text(
        "Intro\n\n<!-- needs: weights, gpu -->\n```python\nload('big.ckpt')\n```\n\n"
        "```bash\npip install x\nfg-net smoke \\\n    --flag  # comment\n```\n\n  ```json\n  {}\n  ```\n"
    )
    blocks = readme_blocks(sample)
    assert [(b.line, b.language, b.needs) for b in blocks] == [
        (4, "python", ("weights", "gpu")),
        (8, "bash", ()),
        (14, "json", ()),
    ]
    assert bash_commands(blocks[1].code) == [["pip", "install", "x"], ["fg-net", "smoke", "--flag"]]
    assert blocks[2].code == "{}\n"


@pytest.mark.parametrize("block", runnable_blocks())
def test_readme_block_runs(block: Block, tmp_path: Path) -> None:
    with working_directory(tmp_path):
        if block.language == "python":  # a module of its own, so dataclasses and pickling find it in sys.modules
            write_inputs(re.findall(r"[\"']([^\"'{}]+)[\"']", block.code), tmp_path)
            module = types.ModuleType("readme_block")
            with pytest.MonkeyPatch.context() as patch:
                patch.setitem(sys.modules, module.__name__, module)
                exec(compile(block.code, block.name, "exec"), module.__dict__)
        else:
            for argv in bash_commands(block.code):
                run_command(argv, tmp_path)
