"""Kill-and-resume fixtures: prove that a run killed right after checkpoint k and resumed ends bit-identical to an
uninterrupted one.

A package's test writes a module-level ``build(out_dir) -> dict`` in a test file, returning the keyword arguments of
:func:`genblocks.training.fit` (``module``, ``datamodule``, ``train_config`` and optionally ``save_trained``, ``config``),
then calls :func:`assert_kill_resume_exact` with ``"path/to/test_file.py:build"``.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightning as L
import torch

__all__ = ["KillAfterCheckpoint", "assert_kill_resume_exact", "load_builder", "run_built"]


class KillAfterCheckpoint(L.Callback):
    """SIGKILLs its own process right after the checkpoint of step ``step`` is written (no clean-up runs)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if (
            trainer.global_step == self.step
            and (Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt").is_file()
        ):
            os.kill(os.getpid(), signal.SIGKILL)


def load_builder(spec: str) -> Any:
    """``"path/to/file.py:function"`` -> the function (test files are not importable by module name)."""
    path, _, name = spec.rpartition(":")
    folder = str(Path(path).parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)  # the test's own helper modules (conftest-level imports) resolve as under pytest
    module_spec = importlib.util.spec_from_file_location(f"_builder_{abs(hash(path))}", path)
    if module_spec is None or module_spec.loader is None:
        raise ImportError(f"cannot load a Python module from {path!r} (spec {spec!r})")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return getattr(module, name)


def run_built(spec: str, out_dir: Path, resume: bool = False, kill_after: int | None = None) -> Any:
    """Build with ``spec`` and run :func:`genblocks.training.fit` in this process; returns the trained module."""
    from genblocks.training.fitting import fit

    arguments = load_builder(spec)(out_dir)
    callbacks = [KillAfterCheckpoint(kill_after)] if kill_after is not None else []
    module = arguments["module"]
    fit(out_dir=out_dir, resume=resume, callbacks=callbacks, **arguments)
    return module


def assert_kill_resume_exact(spec: str, tmp_path: Path, kill_after: int, timeout: float = 600) -> dict[str, Any]:
    """Run ``spec`` uninterrupted, and again killed (SIGKILL, in a subprocess) right after checkpoint ``kill_after``
    then resumed; assert every parameter and buffer of the two final modules is bit-identical.

    Returns:
        ``{"uninterrupted": module, "resumed": module, "killed_run": Path}``.
    """
    straight = run_built(spec, tmp_path / "straight")
    killed = tmp_path / "killed"
    # The same torch thread count as this process: CPU reductions split over another number of threads round
    # differently, and the comparison is bit for bit.
    code = (
        f"import torch; torch.set_num_threads({torch.get_num_threads()}); "
        "from pathlib import Path; from genblocks.testing.resume import run_built; "
        f"run_built({spec!r}, Path({str(killed)!r}), kill_after={kill_after})"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    assert result.returncode == -signal.SIGKILL, (
        f"the run was not killed after checkpoint {kill_after} (exit {result.returncode}):\n{result.stderr[-3000:]}"
    )
    saved_step = torch.load(killed / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert saved_step == kill_after, f"last.ckpt holds step {saved_step}, expected {kill_after}"
    resumed = run_built(spec, killed, resume=True)
    expected, actual = straight.state_dict(), resumed.state_dict()
    assert expected.keys() == actual.keys()
    different = [name for name in expected if not torch.equal(expected[name], actual[name])]
    assert not different, f"after kill + resume these differ from the uninterrupted run: {different[:10]}"
    return {"uninterrupted": straight, "resumed": resumed, "killed_run": killed}
