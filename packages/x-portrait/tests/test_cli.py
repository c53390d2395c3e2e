"""The command line: smoke, demo, animate, train and convert on tiny inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from xp_testing import RESOLUTION, face_landmarks, randomize_motion_modules, tiny_components

from genblocks.media import read_video
from genblocks.testing.ldm_layout import controlnet_to_ldm, motion_modules_to_ldm, unet_to_ldm
from x_portrait.cli import main
from x_portrait.pipeline_x_portrait import XPortraitPipeline


def _png(path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (RESOLUTION, RESOLUTION, 3), dtype=np.uint8)).save(path)


def test_smoke_command() -> None:
    assert main(["smoke"]) == 0


def test_demo_writes_gifs_beside_source_and_driving_frames(tmp_path, capsys) -> None:
    assert main(["demo", "--out", str(tmp_path), "--frames", "3", "--no-face"]) == 0
    names = {p.name for p in tmp_path.iterdir()}
    assert {"source.png", "driving.gif", "animation.gif", "side_by_side.gif", "summary.json"} <= names
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["headline"]["frames"] == 3 and summary["headline"]["seconds_per_frame"] > 0
    frames, _ = read_video(tmp_path / "animation.gif")
    assert frames.shape == (3, 4 * RESOLUTION, 4 * RESOLUTION, 3)
    assert "seconds per frame" in capsys.readouterr().out


def test_animate_from_a_frame_folder(tmp_path, capsys) -> None:
    _png(tmp_path / "face.png", 0)
    (tmp_path / "frames").mkdir()
    for i in range(3):
        _png(tmp_path / "frames" / f"{i:03d}.png", i + 1)
    out = tmp_path / "out.gif"
    no_faces = ["inference.align_driving=false", "inference.local_patches=false"]
    args = [
        "animate",
        "--source",
        str(tmp_path / "face.png"),
        "--driving",
        str(tmp_path / "frames"),
        "--out",
        str(out),
    ]
    assert main([*args, "--metrics", "--set", *no_faces]) == 0
    frames, _ = read_video(out)
    assert frames.shape == (3, RESOLUTION, RESOLUTION, 3)
    assert '"psnr"' in capsys.readouterr().out
    (tmp_path / "empty").mkdir()
    empty = [
        "animate",
        "--source",
        str(tmp_path / "face.png"),
        "--driving",
        str(tmp_path / "empty"),
        "--out",
        str(out),
    ]
    assert main([*empty, "--set", *no_faces]) == 2
    assert "--driving folder" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_train_command_writes_a_loadable_pipeline(tmp_path) -> None:
    rows = []
    for i in range(2):
        _png(tmp_path / f"source{i}.png", 10 + i)
        _png(tmp_path / f"target{i}.png", 20 + i)
        np.save(tmp_path / f"landmarks{i}.npy", face_landmarks(seed=i).astype(np.float32))
        rows.append({"source": f"source{i}.png", "target": f"target{i}.png", "landmarks": f"landmarks{i}.npy"})
    manifest = tmp_path / "pairs.jsonl"
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    overrides = [f"train.manifest={manifest}", f"train.output_dir={tmp_path / 'run'}", "train.max_steps=2"]
    overrides += ["train.log_every_n_steps=1"]
    assert main(["train", "--config", "tiny", "--set", *overrides]) == 0
    pipeline = XPortraitPipeline.from_pretrained(tmp_path / "run" / "pipeline")
    assert pipeline.config.patch_size == 16
    assert (tmp_path / "run" / "config.yaml").is_file()


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_convert_command_round_trip(tmp_path) -> None:
    source = tiny_components(seed=3)
    randomize_motion_modules(source)
    for name in ("unet", "vae", "text_encoder", "tokenizer"):
        getattr(source, name).save_pretrained(tmp_path / "base" / name)
    state = {f"model.diffusion_model.{k}": v for k, v in unet_to_ldm(source.unet).items()}
    state |= {
        f"model.diffusion_model.{k}": v for k, v in motion_modules_to_ldm(source.motion_modules.module_set).items()
    }
    state |= {
        f"appearance_control_model.{k}": v for k, v in unet_to_ldm(source.reference_unet, with_out=False).items()
    }
    state |= {f"pose_control_model.{k}": v for k, v in controlnet_to_ldm(source.motion_controlnet).items()}
    state |= {f"local_pose_control_model.{k}": v for k, v in controlnet_to_ldm(source.local_controlnet).items()}
    torch.save(state, tmp_path / "model_state.th")
    out = tmp_path / "converted"
    args = ["convert", "--checkpoint", str(tmp_path / "model_state.th"), "--base", str(tmp_path / "base")]
    assert main([*args, "--out", str(out), "--config", "tiny", "--strict"]) == 0
    loaded = XPortraitPipeline.from_pretrained(out)
    for a, b in zip(
        loaded.motion_modules.state_dict().values(), source.motion_modules.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)
    assert json.loads((out / "conversion_report.json").read_text())["is_exact"] is True
