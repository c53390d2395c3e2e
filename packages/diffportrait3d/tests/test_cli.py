"""The ``diffportrait3d`` command line in the one convention: shipped configs, --set, render/demo/train/smoke,
errors with exit status 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from diffportrait3d.cli import main
from diffportrait3d.config import DiffPortrait3DConfig, sd15_config, tiny_config
from genblocks.cli import load_command_config


def test_shipped_configs_are_the_presets() -> None:
    tiny, path = load_command_config(DiffPortrait3DConfig, "diffportrait3d", "run", "tiny")
    assert tiny == tiny_config() and path.parent.name == "run"
    sd15, _ = load_command_config(DiffPortrait3DConfig, "diffportrait3d", "run", "sd15")
    assert sd15 == sd15_config()
    assert (sd15.inference.num_inference_steps, sd15.inference.eta, sd15.inference.guidance_scale) == (50, 0.5, 3.0)
    # the paper config is the YAML's: EG3D 3D-aware noise, a pretrained folder, the ~540k-step schedule
    assert (sd15.inference.noise_prior, sd15.pretrained, sd15.train.max_steps) == (
        "eg3d",
        "checkpoints/diffportrait3d",
        540000,
    )
    more, _ = load_command_config(
        DiffPortrait3DConfig, "diffportrait3d", "run", "tiny", ["model.views_per_batch=2", "seed=3"]
    )
    assert (more.model.views_per_batch, more.seed) == (2, 3)


def test_demo_writes_orbit_gif_and_summary(tmp_path: Path) -> None:
    assert main(["demo", "--out", str(tmp_path), "--views", "4"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["headline"]["views"] == 4
    assert summary["headline"]["inversion_loss_last"] < summary["headline"]["inversion_loss_first"]
    assert (tmp_path / "orbit.gif").stat().st_size > 0
    from PIL import Image

    strip = Image.open(tmp_path / "strip.png")
    assert strip.height > 256 and strip.width > 4 * 256  # four labelled panels, larger than the 64-px views
    readme = (tmp_path / "README.txt").read_text()
    assert "weights are random" in readme and "3D-aware noise render" in readme
    assert len(read_video_frames(tmp_path / "side_by_side.gif")) == 4


def read_video_frames(path: Path) -> list:
    from genblocks.media import read_video

    return list(read_video(path)[0])


def test_smoke() -> None:
    assert main(["smoke"]) == 0


def write_inputs(folder: Path) -> None:
    import torch

    from genblocks.media import write_image

    write_image(folder / "face.png", torch.rand(3, 48, 48), value_range=(0.0, 1.0))
    for i in range(2):
        write_image(folder / "cond" / f"{i}.png", torch.rand(3, 64, 64), value_range=(0.0, 1.0))


def test_render_from_condition_folder_from_another_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_inputs(tmp_path)
    monkeypatch.chdir(tmp_path)
    argv = ["render", "--config", "tiny", "--image", "face.png", "--conditions", "cond", "--out", "views"]
    assert main([*argv, "--set", "inference.num_inference_steps=1", "--set", "seed=2"]) == 0
    assert sorted(p.name for p in (tmp_path / "views").iterdir()) == ["view_000.png", "view_001.png", "views.gif"]


def test_set_is_repeatable_and_print_config(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "train",
        "--stage",
        "2",
        "--set",
        "train.optimizer.lr=0.5",
        "seed=4",
        "--set",
        "model.view_heads=4",
        "--print-config",
    ]
    assert main([*argv, "--out", "unused"]) == 0
    printed = capsys.readouterr().out
    assert "stage: 2" in printed and "lr: 0.5" in printed and "seed: 4" in printed and "view_heads: 4" in printed


def test_user_errors_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_inputs(tmp_path)
    cases = [
        (["render", "--image", str(tmp_path / "nope.png"), "--out", str(tmp_path / "o")], "nope.png"),
        (["render", "--image", str(tmp_path / "face.png"), "--set", "inference.num_steps=3"], "inference.num_steps"),
        (
            ["render", "--image", str(tmp_path / "face.png"), "--conditions", str(tmp_path / "face.png")],
            "--conditions",
        ),
        (["train", "--config", "huge", "--out", str(tmp_path / "r")], "--config huge"),
        (["train", "--set", "train.max_steps=many", "--out", str(tmp_path / "r")], "'many'"),
    ]
    for argv, named in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert named in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
