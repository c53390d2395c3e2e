"""The one run folder of every ``train`` command, and atomic file writes.

::

    DIR/config.yaml                 the merged config of the run
    DIR/checkpoints/last.ckpt       the newest checkpoint (what ``--resume`` continues from)
    DIR/checkpoints/step-<N>.ckpt   periodic checkpoints, the newest ``train.keep_last`` kept
    DIR/checkpoints/best.ckpt       where a package selects by a validation metric
    DIR/metrics.csv                 step,metric,value rows
    DIR/loss.png                    the logged losses against the step
    DIR/trained/                    the final weights in the package's own loading format
    DIR/data/                       data a run made itself (the tiny configs' synthetic manifest)

Every file is written to a temporary name in its own folder, flushed to disk (fsync) and renamed over the target, so a
crash or a full disk leaves the previous file whole. Lightning's own writer goes through ``$TMPDIR`` and copies across
file systems, which can leave a truncated checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from genblocks.errors import InputError

__all__ = ["RUN_FILES", "CheckpointWriteError", "RunFolder", "atomic_write"]

RUN_FILES = ("config.yaml", "checkpoints", "metrics.csv", "loss.png", "trained", "data")


class CheckpointWriteError(OSError):
    """Writing a checkpoint (or another run file) failed; the previous file of that name is intact."""


def _fsync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


@contextlib.contextmanager
def _temporary_beside(path: Path) -> Iterator[Path]:
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield temporary
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], object]) -> Path:
    """Write ``path`` atomically: ``write(file)`` into a temporary file beside it, fsync, rename over ``path``.

    Args:
        path: The target file; its folder is created.
        write: Writes the content into the open binary file it is given.

    Returns:
        ``path``.

    Raises:
        CheckpointWriteError: The write, flush or rename failed (a full disk, a lost mount); ``path`` is unchanged.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _temporary_beside(path) as temporary:
        try:
            with open(temporary, "wb") as handle:
                write(handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
        except OSError as error:
            raise CheckpointWriteError(
                error.errno, f"could not write {path} ({error.strerror or error}); the previous file is intact"
            ) from error
    _fsync_folder(path.parent)
    return path


def atomic_link(source: Path, target: Path) -> Path:
    """Make ``target`` hold ``source``'s bytes atomically: a hard link (a copy where links fail) renamed over it."""
    with _temporary_beside(target) as temporary:
        try:
            os.link(source, temporary)
        except OSError:
            shutil.copyfile(source, temporary)
            with open(temporary, "rb+") as handle:
                os.fsync(handle.fileno())
        os.replace(temporary, target)
    _fsync_folder(target.parent)
    return target


@dataclass(frozen=True)
class RunFolder:
    """The paths of one run folder (see the module docstring); :meth:`open` checks it for a new or resumed run."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def last(self) -> Path:
        return self.checkpoints / "last.ckpt"

    @property
    def best(self) -> Path:
        return self.checkpoints / "best.ckpt"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.csv"

    @property
    def loss_plot(self) -> Path:
        return self.root / "loss.png"

    @property
    def trained(self) -> Path:
        return self.root / "trained"

    @property
    def data(self) -> Path:
        return self.root / "data"

    def step_checkpoint(self, step: int) -> Path:
        """``checkpoints/step-<step>.ckpt``."""
        return self.checkpoints / f"step-{step}.ckpt"

    def step_checkpoints(self) -> list[tuple[int, Path]]:
        """The ``step-<N>.ckpt`` files present, oldest first."""
        found = []
        for path in self.checkpoints.glob("step-*.ckpt"):
            with contextlib.suppress(ValueError):
                found.append((int(path.stem.split("-", 1)[1]), path))
        return sorted(found)

    @classmethod
    def open(cls, root: str | Path, resume: bool = False, overwrite: bool = False) -> RunFolder:
        """Check ``root`` for a run and return its :class:`RunFolder` (the folder is created).

        Args:
            root: The run folder (``--out``).
            resume: Continue the run: ``checkpoints/last.ckpt`` must exist.
            overwrite: Start again in a used folder: the run's own files (``RUN_FILES``) are deleted first; other
                files are left alone.

        Raises:
            InputError: A used folder (anything but ``data/``) without ``resume`` or ``overwrite``; ``resume`` without a last checkpoint; both
                flags at once.
        """
        folder = cls(Path(root))
        if resume and overwrite:
            raise InputError("--resume and --overwrite: pick one (continue the run, or start it again)")
        if resume:
            if not folder.last.is_file():
                raise InputError(f"--resume: {folder.last} not found (expected the run folder of an earlier train)")
            return folder
        if folder.root.exists() and not folder.root.is_dir():
            raise InputError(f"--out {folder.root}: is a file, expected a run folder")
        # data/ alone is not a run: a train command may write its synthetic manifest there before fit() opens it.
        used = sorted(p.name for p in folder.root.iterdir() if p.name != "data") if folder.root.is_dir() else []
        if used and not overwrite:
            raise InputError(
                f"--out {folder.root}: the folder is not empty ({', '.join(used[:5])}{', ...' if len(used) > 5 else ''});"
                " pass --resume to continue that run, --overwrite to start again, or another --out"
            )
        if overwrite:
            for name in RUN_FILES:
                target = folder.root / name
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()
        folder.root.mkdir(parents=True, exist_ok=True)
        return folder
