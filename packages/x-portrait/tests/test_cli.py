"""The command line: smoke, demo, animate, train and convert on tiny inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
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


DEMO_FILES = {
    "strip.png",
    "README.txt",
    "source.png",
    "driving.gif",
    "local_patches.gif",
    "animation.gif",
    "side_by_side.gif",
    "summary.json",
}


def test_demo_from_another_directory_writes_its_documented_files(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    argv = ["demo", "--config", "tiny", "--out", "demo", "--frames", "3", "--no-face"]
    assert main([*argv, "--set", "inference.seed=5", "--set", "inference.num_inference_steps=1"]) == 0
    out = tmp_path / "demo"
    assert {p.name for p in out.iterdir()} == DEMO_FILES
    assert "weights are random" in (out / "README.txt").read_text()
    assert Image.open(out / "strip.png").height > 256
    summary = json.loads((out / "summary.json").read_text())
    assert summary["headline"]["frames"] == 3 and summary["headline"]["seconds_per_frame"] > 0
    assert summary["seeds"] == {"weights": 0, "noise": 5} and summary["resolution"] == RESOLUTION
    frames, _ = read_video(out / "animation.gif")
    assert frames.shape == (3, 4 * RESOLUTION, 4 * RESOLUTION, 3)
    assert "seconds per frame" in capsys.readouterr().out


def test_demo_refuses_trained_weights(tmp_path, capsys) -> None:
    assert main(["demo", "--config", "paper", "--out", str(tmp_path / "demo")]) == 2
    err = capsys.readouterr().err
    assert "components.source='pretrained'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "demo").exists()


def test_animate_from_a_frame_folder(tmp_path, capsys) -> None:
    _png(tmp_path / "face.png", 0)
    (tmp_path / "frames").mkdir()
    for i in range(3):
        _png(tmp_path / "frames" / f"{i:03d}.png", i + 1)
    out = tmp_path / "out"
    no_faces = ["inference.align_driving=false", "inference.local_patches=false"]
    args = ["animate", "--image", str(tmp_path / "face.png"), "--driving", str(tmp_path / "frames"), "--out", str(out)]
    assert main([*args, "--metrics", "--set", *no_faces]) == 0
    frames, _ = read_video(out / "animation.gif")
    assert frames.shape == (3, RESOLUTION, RESOLUTION, 3)
    assert '"psnr"' in capsys.readouterr().out
    assert "psnr" in json.loads((out / "metrics.json").read_text())
    (tmp_path / "empty").mkdir()
    empty = ["animate", "--image", str(tmp_path / "face.png"), "--driving", str(tmp_path / "empty"), "--out", str(out)]
    assert main([*empty, "--set", *no_faces]) == 2
    err = capsys.readouterr().err
    assert "--driving folder" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_animate_from_another_directory_with_repeated_set(tmp_path, monkeypatch) -> None:
    _png(tmp_path / "face.png", 0)
    (tmp_path / "frames").mkdir()
    for i in range(4):
        _png(tmp_path / "frames" / f"{i:03d}.png", i + 1)
    monkeypatch.chdir(tmp_path)
    argv = ["animate", "--config", "tiny", "--image", "face.png", "--driving", "frames", "--out", "out"]
    argv += ["--set", "inference.align_driving=false", "--set", "inference.local_patches=false", "inference.seed=3"]
    argv += ["--set", "inference.max_frames=2", "inference.fps=4"]  # both reach the run: 2 of 4 frames, 4 fps
    assert main([*argv, "--format", "gif"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["animation.gif"]
    frames, fps = read_video(tmp_path / "out" / "animation.gif")
    assert frames.shape == (2, RESOLUTION, RESOLUTION, 3) and fps == pytest.approx(4.0)


def test_repeated_set_and_stage_reach_the_printed_config(capsys) -> None:
    argv = ["animate", "--image", "unused.png", "--driving", "unused.mp4", "--print-config"]
    argv += ["--set", "inference.num_inference_steps=7", "model.motion_scale=0.5", "--set", "inference.best_frame=2"]
    assert main(argv) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["inference"]["num_inference_steps"] == 7 and printed["inference"]["best_frame"] == 2
    assert printed["model"]["motion_scale"] == 0.5 and printed["model"]["resolution"] == RESOLUTION
    assert (
        main(["convert", "--config", "paper", "--checkpoint", "u", "--base", "u", "--out", "u", "--print-config"]) == 0
    )
    printed = yaml.safe_load(capsys.readouterr().out)
    assert (printed["model"]["resolution"], printed["inference"]["num_inference_steps"]) == (512, 30)


def test_user_errors_exit_2_with_one_line(tmp_path, capsys) -> None:
    _png(tmp_path / "face.png", 0)
    base = ["animate", "--image", str(tmp_path / "face.png"), "--out", str(tmp_path / "o")]
    cases = [
        ([*base, "--driving", str(tmp_path / "missing.mp4")], "--driving " + str(tmp_path / "missing.mp4")),
        (
            ["animate", "--image", str(tmp_path / "nope.png"), "--driving", str(tmp_path / "face.png"), "--out", "o"],
            "--image " + str(tmp_path / "nope.png"),
        ),
        (
            ["convert", "--checkpoint", str(tmp_path / "m.th"), "--base", str(tmp_path), "--out", str(tmp_path / "c")],
            "--checkpoint " + str(tmp_path / "m.th"),
        ),
        ([*base, "--driving", str(tmp_path / "face.png"), "--pretrained", "nowhere"], "--pretrained nowhere"),
        ([*base, "--driving", str(tmp_path / "face.png"), "--set", "inference.window=3"], "inference.window"),
        ([*base, "--driving", str(tmp_path / "face.png"), "--set", "train.stage=video"], "train.stage"),
        (["train", "--config", "nope", "--out", str(tmp_path / "r")], "--config nope"),
    ]
    for argv, named in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert named in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_stage_and_print_config(capsys) -> None:
    argv = ["train", "--stage", "temporal", "--set", "train.optimizer.lr=0.5", "--out", "unused", "--print-config"]
    assert main([*argv, "--set", "train.max_steps=9"]) == 0
    train = yaml.safe_load(capsys.readouterr().out)["train"]
    assert (train["stage"], train["optimizer"]["lr"], train["max_steps"]) == ("temporal", 0.5, 9)
    assert main(["train", "--config", "paper", "--print-config"]) == 0
    train = yaml.safe_load(capsys.readouterr().out)["train"]
    assert (train["stage"], train["max_steps"], train["optimizer"]["lr"]) == ("image", 415000, 1e-5)


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
    overrides = [f"train.manifest={manifest}", "train.max_steps=2", "train.log_every_n_steps=1"]
    assert (
        main(["train", "--config", "tiny", "--stage", "image", "--set", *overrides, "--out", str(tmp_path / "run")])
        == 0
    )
    pipeline = XPortraitPipeline.from_pretrained(tmp_path / "run" / "trained")
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
    # a complete training checkpoint also holds the DDPM schedule: ignored, so --strict still passes
    state |= {"betas": torch.linspace(0.00085, 0.012, 1000), "alphas_cumprod": torch.rand(1000)}
    torch.save(state, tmp_path / "model_state.th")
    out = tmp_path / "converted"
    args = ["convert", "--checkpoint", str(tmp_path / "model_state.th"), "--base", str(tmp_path / "base")]
    assert main([*args, "--out", str(out), "--config", "tiny", "--strict"]) == 0
    loaded = XPortraitPipeline.from_pretrained(out)
    for a, b in zip(
        loaded.motion_modules.state_dict().values(), source.motion_modules.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)
    report = json.loads((out / "conversion_report.json").read_text())
    assert report["is_exact"] is True and {"betas", "alphas_cumprod"} <= set(report["ignored_keys"])


def test_convert_refuses_a_checkpoint_that_matches_nothing(tmp_path, capsys) -> None:
    source = tiny_components(seed=3)
    for name in ("unet", "vae", "text_encoder", "tokenizer"):
        getattr(source, name).save_pretrained(tmp_path / "base" / name)
    torch.save({"encoder.layer.0.weight": torch.randn(4, 4)}, tmp_path / "other.pth")
    out = tmp_path / "converted"
    args = [
        "convert",
        "--checkpoint",
        str(tmp_path / "other.pth"),
        "--base",
        str(tmp_path / "base"),
        "--out",
        str(out),
    ]
    capsys.readouterr()  # the progress of saving the base above
    assert main([*args, "--config", "tiny"]) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # (loading the base shows its progress bar first)
    assert last.startswith("x-portrait convert: error:") and "matches nothing" in last and "other.pth" in last
    assert "Traceback" not in err and not out.exists()  # nothing written


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_tiny_train_needs_no_data_and_writes_the_run_folder(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--config", "tiny", "--out", "run", "--set", "train.progress_bar=false"]) == 0
    run = tmp_path / "run"
    for name in ("config.yaml", "metrics.csv", "loss.png", "checkpoints/last.ckpt", "trained/model_index.json"):
        assert (run / name).is_file(), name
    assert (run / "data" / "manifest.jsonl").is_file()
    assert main(["train", "--config", "tiny", "--out", "run"]) == 2  # a used folder without --resume
    assert main(["train", "--config", "tiny", "--out", "run", "--resume", "--set", "train.max_steps=3"]) == 0
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3
