"""The command line: a tiny style end to end, stylize, demo, and bad input (exit 2, one line, nothing written)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from agilegan3d.cli import main
from agilegan3d.preprocessing import default_face_analyzer
from genblocks.media import write_image

FAST = ["--set", "prior.method=toon", "transfer_steps=4", "encoder_steps=2"]


def _face(tmp_path: Path) -> Path:
    skimage = pytest.importorskip("skimage")
    return write_image(tmp_path / "face.png", np.array(skimage.data.astronaut(), dtype=np.uint8))


def test_help_imports_no_training_stack() -> None:
    code = "import sys; from agilegan3d.cli import command_line; command_line.build_parser(); print('lightning' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.slow
def test_train_resume_and_stylize(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert main(["train", "--config", "tiny", "--out", str(run), *FAST]) == 0
    style = run / "style"
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["style"] == str(style)
    assert main(["train", "--config", "tiny", "--out", str(run), "--resume", *FAST]) == 0  # all finished: skipped
    out = tmp_path / "stylized"
    code = main(["stylize", "--image", str(_face(tmp_path)), "--style", str(style), "--out", str(out)])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["image_shape"] == [1, 3, 3, 32, 32] and (out / "orbit.gif").is_file()
    assert (out / "strip.png").is_file() and len(list((out / "views").iterdir())) == 3


def test_fit_style_runs_every_stage_and_continues_a_used_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import agilegan3d.training

    calls = []

    def record(config, run, exemplars, resume, progress=None):
        calls.append((config.stage, resume))
        (Path(run) / "prior").mkdir(parents=True, exist_ok=True)
        return Path(run) / "style"

    monkeypatch.setattr(agilegan3d.training, "train_style", record)
    run = tmp_path / "run"
    argv = ["fit-style", "--config", "tiny", "--set", "stage=pairs", "--out", str(run)]
    assert main(argv) == 0 and main(argv) == 0
    assert calls == [("all", False), ("all", True)]


def test_demo_writes_labelled_pictures(tmp_path: Path) -> None:
    pytest.importorskip("skimage")
    assert main(["demo", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["headline"]["weights"] == "random weights" and summary["headline"]["views"] == 3
    assert "random weights" in (tmp_path / "README.txt").read_text()
    assert (tmp_path / "strip.png").is_file() and (tmp_path / "stylize" / "orbit.gif").is_file()


def _exit_2(argv: list[str], capsys: pytest.CaptureFixture[str], expected: str) -> None:
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], lines


def test_too_few_exemplars_refused_before_writing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "styles"
    for k in range(2):
        write_image(folder / f"{k}.png", np.full((40, 48, 3), 30 * k, np.uint8))
    out = tmp_path / "run"
    _exit_2(["train", "--config", "tiny", "--exemplars", str(folder), "--out", str(out)], capsys, "at least 4")
    assert not out.exists()


def test_style_folder_of_another_version_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    style = tmp_path / "style"
    style.mkdir()
    (style / "config.json").write_text(json.dumps({"format": "agilegan3d-style/0"}))
    image = write_image(tmp_path / "x.png", np.zeros((32, 32, 3), np.uint8))
    argv = ["stylize", "--image", str(image), "--style", str(style), "--out", str(tmp_path / "o")]
    _exit_2(argv, capsys, "another version")
    assert not (tmp_path / "o").exists()


def test_photo_without_a_face_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if default_face_analyzer() is None:
        pytest.skip("no face analyzer installed (agilegan3d[face])")
    image = write_image(tmp_path / "noise.png", np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    _exit_2(["stylize", "--image", str(image), "--out", str(tmp_path / "o")], capsys, "no face")
    assert not (tmp_path / "o").exists()


def test_missing_checkpoint_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _exit_2(["convert", "--checkpoint", str(tmp_path / "nope.pkl"), "--out", str(tmp_path / "o")], capsys, "nope.pkl")
