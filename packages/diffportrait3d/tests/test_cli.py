"""The ``diffportrait3d`` command line in the one convention: shipped configs, --set, render/demo/train/smoke,
errors with exit status 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from diffportrait3d.cli import main
from diffportrait3d.config import DiffPortrait3DConfig, paper_config, tiny_config
from genblocks.cli import load_command_config


def test_shipped_configs_are_the_presets() -> None:
    tiny, path = load_command_config(DiffPortrait3DConfig, "diffportrait3d", "render", "tiny")
    assert tiny == tiny_config() and path.parent.name == "configs"  # flat: configs/{tiny,paper}.yaml
    paper, _ = load_command_config(DiffPortrait3DConfig, "diffportrait3d", "train", "paper")
    assert paper == paper_config()
    assert (paper.inference.num_inference_steps, paper.inference.eta, paper.inference.guidance_scale) == (50, 0.5, 3.0)
    # the paper config is the YAML's: EG3D 3D-aware noise, a pretrained folder, the ~540k-step schedule
    assert (paper.inference.noise_prior, paper.pretrained, paper.train.max_steps) == (
        "eg3d",
        "checkpoints/diffportrait3d",
        540000,
    )
    assert (paper.dtype, tiny.dtype) == ("float16", "float32")  # the paper config samples in half precision
    more, _ = load_command_config(
        DiffPortrait3DConfig, "diffportrait3d", "render", "tiny", ["model.views_per_batch=2", "seed=3"]
    )
    assert (more.model.views_per_batch, more.seed) == (2, 3)


DEMO_FILES = [
    "README.txt",
    "conditions.gif",
    "noise_renders.gif",
    "orbit.gif",
    "side_by_side.gif",
    "strip.png",
    "summary.json",
]


def test_demo_writes_its_documented_files_from_another_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    argv = ["demo", "--config", "tiny", "--out", "demo", "--views", "4", "--set", "inference.fps=5"]
    assert main(argv) == 0
    out = tmp_path / "demo"
    assert sorted(p.name for p in out.iterdir()) == DEMO_FILES
    summary = json.loads((out / "summary.json").read_text())
    assert summary["headline"]["views"] == 4 and summary["config"]["inference"]["fps"] == 5.0
    assert summary["headline"]["inversion_loss_last"] < summary["headline"]["inversion_loss_first"]
    from diffportrait3d.preprocessing import default_face_analyzer

    # with dlib the astronaut is EG3D-cropped and the inversion's camera comes from its landmarks, else the grid
    landmarks = default_face_analyzer() is not None
    assert summary["headline"]["camera_from"] == ("landmarks" if landmarks else "grid")
    assert ("EG3D crop" in summary["portrait"]) == landmarks
    assert sorted(summary["files"]) == sorted(set(DEMO_FILES) - {"summary.json"})
    from PIL import Image

    strip = Image.open(out / "strip.png")
    assert strip.height > 256 and strip.width > 4 * 256  # four labelled panels, larger than the 64-px views
    readme = (out / "README.txt").read_text()
    assert "weights are random" in readme and "3D-aware noise render" in readme
    frames, fps = read_video(out / "side_by_side.gif")
    assert len(frames) == 4 and fps == pytest.approx(5.0, rel=0.05)
    assert len(read_video(out / "orbit.gif")[0]) == 4


def test_demo_default_out_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from diffportrait3d.cli import command_line

    monkeypatch.chdir(tmp_path)
    args = command_line.build_parser().parse_args(["demo"])
    assert args.out == Path("outputs/diffportrait3d/demo") and args.config == "tiny"


def read_video(path: Path) -> tuple[np.ndarray, float]:
    from genblocks.media import read_video as read

    return read(path)


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
    assert main([*argv, "--set", "inference.num_inference_steps=1", "--set", "inference.fps=4", "seed=2"]) == 0
    out = tmp_path / "views"
    assert sorted(p.name for p in out.iterdir()) == ["view_000.png", "view_001.png", "views.gif"]
    frames, fps = read_video(out / "views.gif")
    assert frames.shape == (2, 64, 64, 3) and fps == pytest.approx(4.0, rel=0.05)  # --set inference.fps reached it


def test_render_seed_from_set_changes_the_views(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from genblocks.media import read_image

    write_inputs(tmp_path)
    monkeypatch.chdir(tmp_path)
    argv = ["render", "--image", "face.png", "--conditions", "cond", "--set", "inference.num_inference_steps=1"]
    views = {}
    for name, seed in (("a", 2), ("b", 2), ("c", 3)):
        assert main([*argv, "--set", f"seed={seed}", "--out", name]) == 0
        views[name] = read_image(tmp_path / name / "view_000.png").astype(np.int16)
    assert np.abs(views["a"] - views["b"]).max() == 0
    assert np.abs(views["a"] - views["c"]).max() > 0


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
        "--set",
        "seed=5",
        "--print-config",
    ]
    assert main([*argv, "--out", "unused"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["train"]["stage"] == 2 and printed["train"]["optimizer"]["lr"] == 0.5
    assert printed["seed"] == 5 and printed["model"]["view_heads"] == 4  # later --set wins
    assert printed["model"]["resolution"] == 64 and printed["train"]["max_steps"] == 2  # the rest is tiny.yaml
    assert not Path("unused").exists()


def test_convert_reads_the_paper_model_config(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["convert", "--checkpoint", "x.th", "--base", "sd15", "--out", "unused", "--print-config"]
    assert main([*argv, "--set", "model.views_per_batch=4"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["resolution"] == 512 and printed["model"]["views_per_batch"] == 4
    assert printed["model"]["controlnet_embedding_channels"] == [16, 32, 96, 256]


def test_user_errors_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_inputs(tmp_path)
    face = str(tmp_path / "face.png")
    cases = [
        (["render", "--image", str(tmp_path / "nope.png"), "--out", str(tmp_path / "o")], "nope.png"),
        (["render", "--image", face, "--eg3d", str(tmp_path / "g.pkl"), "--out", str(tmp_path / "o")], "g.pkl"),
        (["render", "--image", face, "--set", "inference.num_steps=3"], "inference.num_steps"),
        (["render", "--image", face, "--conditions", face], "--conditions"),
        (["render", "--image", face, "--views", "0", "--out", str(tmp_path / "o")], "--views 0"),
        (["train", "--config", "huge", "--out", str(tmp_path / "r")], "--config huge"),
        (["train", "--set", "train.max_steps=many", "--out", str(tmp_path / "r")], "'many'"),
        (["train", "--manifest", str(tmp_path / "views.jsonl"), "--out", str(tmp_path / "r")], "views.jsonl"),
        (["convert", "--checkpoint", str(tmp_path / "m.th"), "--base", str(tmp_path), "--out", "o"], "m.th"),
        (["convert", "--checkpoint", face, "--base", str(tmp_path / "sd"), "--out", "o"], "--base"),
        (["demo", "--config", "paper", "--out", str(tmp_path / "d")], "source='pretrained'"),
    ]
    for argv, named in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert named in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert err.startswith(f"diffportrait3d {argv[0]}: error: "), err
    assert not (tmp_path / "o").exists() and not (tmp_path / "r").exists() and not (tmp_path / "d").exists()


def test_paper_config_eg3d_noise_reaches_the_pipeline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``noise_prior: eg3d`` of configs/paper.yaml, end to end: render inverts the portrait into EG3D, and the
    pipeline call gets ``noise_prior="eg3d"`` with one 3D-aware render per camera, whose latents start the sampling."""
    import torch

    from diffportrait3d import pipeline_diffportrait3d
    from diffportrait3d.pipeline_diffportrait3d import DiffPortrait3DPipeline

    calls: list[dict] = []
    starts: list[object] = []
    tiny = pipeline_diffportrait3d.load_pipeline(tiny_config())
    original_call = DiffPortrait3DPipeline.__call__
    original_prepare = DiffPortrait3DPipeline.prepare_latents

    def loaded(config: DiffPortrait3DConfig) -> DiffPortrait3DPipeline:
        assert config.inference.noise_prior == "eg3d" and config.source == "pretrained"  # paper as shipped
        return tiny  # paper's SD1.5 weights are not here: its settings drive the tiny random model

    def call(self: DiffPortrait3DPipeline, *args: object, **kwargs: object) -> object:
        calls.append(kwargs)
        return original_call(self, *args, **kwargs)

    def prepare(self: DiffPortrait3DPipeline, *args: object, **kwargs: object) -> torch.Tensor:
        starts.append(args[-1] if len(args) == 7 else kwargs.get("noise_render_latents"))
        return original_prepare(self, *args, **kwargs)

    monkeypatch.setattr(pipeline_diffportrait3d, "load_pipeline", loaded)
    monkeypatch.setattr(DiffPortrait3DPipeline, "__call__", call)
    monkeypatch.setattr(DiffPortrait3DPipeline, "prepare_latents", prepare)
    write_inputs(tmp_path)
    argv = ["render", "--config", "paper", "--image", str(tmp_path / "face.png"), "--views", "2"]
    quick = ["inference.num_inference_steps=1", "inference.inversion_steps=1", "inference.camera_from=grid"]
    assert main([*argv, "--out", str(tmp_path / "out"), "--set", *quick]) == 0
    assert len(calls) == 1 and calls[0]["noise_prior"] == "eg3d"
    renders = calls[0]["noise_renders"]
    assert isinstance(renders, torch.Tensor) and renders.shape == (2, 3, 32, 32)  # tiny EG3D renders, one per camera
    assert len(starts) == 1 and isinstance(starts[0], torch.Tensor) and starts[0].shape == (2, 4, 8, 8)
    # with condition images there are no cameras to render the noise at: refused, nothing written
    capsys.readouterr()
    argv = [
        "render",
        "--config",
        "paper",
        "--image",
        str(tmp_path / "face.png"),
        "--conditions",
        str(tmp_path / "cond"),
    ]
    assert main([*argv, "--out", str(tmp_path / "refused")]) == 2
    assert "inference.noise_prior=eg3d" in capsys.readouterr().err and not (tmp_path / "refused").exists()


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_bad_images_exit_2_with_one_line_and_write_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Not an image, a truncated PNG, a 10000 x 10000 PNG (over genblocks' 64 Mpx limit, refused before decoding):
    exit 2, one line naming the file, no output folder."""
    from PIL import Image

    write_inputs(tmp_path)
    (tmp_path / "notes.png").write_text("not an image at all")
    whole = (tmp_path / "face.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(whole[: len(whole) // 2])
    Image.new("1", (10000, 10000)).save(tmp_path / "huge.png")  # 1-bit: a few kB on disk, 100 Mpx
    cases = [
        (["--image", str(tmp_path / "notes.png")], "notes.png", "not a readable image"),
        (["--image", str(tmp_path / "cut.png")], "cut.png", "not a readable image"),
        (["--image", str(tmp_path / "huge.png")], "huge.png", "10000x10000 is 100 Mpx, more than the limit of 64 Mpx"),
    ]
    (tmp_path / "badcond").mkdir()
    (tmp_path / "badcond" / "0.png").write_bytes(whole[:100])
    cases.append(
        (["--image", str(tmp_path / "face.png"), "--conditions", str(tmp_path / "badcond")], "0.png", "not a readable")
    )
    for index, (args, named, expected) in enumerate(cases):
        out = tmp_path / f"out{index}"
        assert main(["render", "--config", "tiny", *args, "--out", str(out)]) == 2, args
        err = capsys.readouterr().err
        assert named in err and expected in err and "Traceback" not in err, err
        assert len(err.strip().splitlines()) == 1 and err.startswith("diffportrait3d render: error: "), err
        assert not out.exists()
