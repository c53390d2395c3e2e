"""The portrait-edit command line: edit (aligned and whole photo), bad input (exit 2, nothing written), eval, make-pairs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from genblocks.media import read_image, write_image
from portrait_edit.cli import main

TINY_EDIT = ["--config", "tiny", "--set", "sampling.num_inference_steps=1", "sampling.mask_samples=1"]


def _portrait(path: Path, size: int = 64, seed: int = 0) -> Path:
    write_image(path, np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))
    return path


def test_edit_aligned_writes_the_documented_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = _portrait(tmp_path / "face.png")
    out = tmp_path / "out"
    argv = ["edit", *TINY_EDIT, "--image", str(image), "--prompt", "a man, santa", "--source-prompt", "a man"]
    assert main([*argv, "--aligned", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["edit.png", "mask.png", "strip.png", "summary.json"]
    assert read_image(out / "edit.png").shape == (64, 64, 3)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["aligned"] is True and 0.0 <= summary["mask_mean"] <= 1.0
    assert "untrained weights" in " ".join(summary["notes"])
    assert "smaller than the model size" not in capsys.readouterr().err


def test_small_image_is_resized_with_a_note(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = _portrait(tmp_path / "small.png", size=40)
    out = tmp_path / "out"
    argv = ["edit", *TINY_EDIT, "--image", str(image), "--prompt", "", "--source-prompt", "a man", "--aligned"]
    assert main([*argv, "--out", str(out)]) == 0  # an empty prompt is valid (the CFG null)
    err = capsys.readouterr().err
    assert "40x40 px is smaller than the model size 64 px; resized up" in err
    assert read_image(out / "edit.png").shape == (64, 64, 3)


def test_not_an_image_exits_2_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fake = tmp_path / "face.png"
    fake.write_text("not an image")
    out = tmp_path / "out"
    argv = ["edit", *TINY_EDIT, "--image", str(fake), "--prompt", "a man", "--source-prompt", "a", "--aligned"]
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "not a readable image" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    assert main(["edit", "--image", str(tmp_path / "missing.png"), "--prompt", "a", "--out", str(out)]) == 2
    assert "file not found" in capsys.readouterr().err and not out.exists()
    no_source_prompt = ["edit", *TINY_EDIT, "--image", str(_portrait(tmp_path / "ok.png")), "--prompt", "a"]
    assert main([*no_source_prompt, "--aligned", "--out", str(out)]) == 2
    assert "--source-prompt" in capsys.readouterr().err and not out.exists()


def test_photo_without_a_face_exits_2_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("dlib")
    image = tmp_path / "wall.png"
    write_image(image, np.full((96, 96, 3), 128, np.uint8))
    out = tmp_path / "out"
    argv = ["edit", *TINY_EDIT, "--image", str(image), "--prompt", "a man", "--source-prompt", "a"]
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no face found" in err and "--aligned" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_eval_writes_metrics_outside_the_mask(tmp_path: Path) -> None:
    source = _portrait(tmp_path / "source.png")
    edited_array = read_image(source).copy()
    edited_array[:, 32:] = 255 - edited_array[:, 32:]
    edited = tmp_path / "edited.png"
    write_image(edited, edited_array)
    mask = np.zeros((64, 64), np.uint8)
    mask[:, 24:] = 255
    write_image(tmp_path / "mask.png", mask)
    out = tmp_path / "eval"
    argv = ["eval", "--source", str(source), "--edited", str(edited), "--mask", str(tmp_path / "mask.png")]
    assert main([*argv, "--no-face", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["psnr_outside"] == "inf" and metrics["identity"] is None
    assert any("CLIP score skipped" in note for note in metrics["notes"])
    assert main(["eval", "--source", str(source), "--edited", str(edited), "--no-face", "--out", str(out)]) == 0
    assert json.loads((out / "metrics.json").read_text())["psnr_outside"] < 10.0


def test_make_pairs_refuses_missing_sources(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "pairs"
    assert main(["make-pairs", "--sources", str(tmp_path / "none"), "--prompt", "a", "--out", str(out)]) == 2
    assert "--sources" in capsys.readouterr().err and not out.exists()
