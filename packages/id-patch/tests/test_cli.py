"""The ``id-patch`` command line, in-process on the tiny configs: generate, train, eval, convert, demo, smoke."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import id_patch
from id_patch.cli import main, parse_positions

TINY = "tiny"
TRAIN_TINY = "tiny"
CONFIGS = Path(id_patch.__file__).resolve().parent / "configs"
DEMO_FILES = [
    "group.png",
    "condition.png",
    "group_and_condition_x4.png",
    "subject_0.png",
    "subject_1.png",
    "subjects.png",
    "strip.png",
    "README.txt",
]


@pytest.fixture(autouse=True)
def _one_thread() -> Any:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def astronaut(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The astronaut's face crop, its mirror image, and a 2-person "group photo" of the two side by side."""
    data = pytest.importorskip("skimage.data")
    photo = data.astronaut()
    crop = np.ascontiguousarray(photo[36:198, 140:302])  # dlib's box [175, 76, 265, 166] with a 0.4 margin
    mirror = np.ascontiguousarray(crop[:, ::-1])
    folder = tmp_path_factory.mktemp("faces")
    Image.fromarray(crop).save(folder / "face.png")
    Image.fromarray(mirror).save(folder / "mirror.png")
    Image.fromarray(np.concatenate([crop, mirror], axis=1)).save(folder / "group.png")
    Image.fromarray(np.full((48, 48, 3), 90, np.uint8)).save(folder / "blank.png")
    return {"face": folder / "face.png", "mirror": folder / "mirror.png", "group": folder / "group.png", "dir": folder}


def _has_dlib() -> bool:
    try:
        import dlib  # noqa: F401
    except ImportError:
        return False
    return True


needs_dlib = pytest.mark.skipif(not _has_dlib(), reason="needs dlib (pip install id-patch[face])")


def test_parse_positions() -> None:
    assert parse_positions(["20,22", "44.5,10"]) == [(20.0, 22.0), (44.5, 10.0)]
    with pytest.raises(ValueError, match=r"entry 1 \('3'\)"):
        parse_positions(["1,2", "3"])


def test_generate_writes_image_condition_and_summary(tmp_path: Path, astronaut: dict[str, Any]) -> None:
    out = tmp_path / "gen"
    args = ["generate", "--config", TINY, "--set", "face.backend=tiny", "--image", str(astronaut["face"])]
    code = main([*args, str(astronaut["mirror"]), "--positions", "44,22", "16,30", "--out", str(out)])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["positions"] == [[44.0, 22.0], [16.0, 30.0]] and summary["seconds"] > 0
    assert Image.open(out / "image.png").size == (64, 64)
    side = Image.open(out / "image_and_condition.png")
    assert side.size == (64 * 2 + 4, 64)
    condition = np.asarray(Image.open(out / "condition.png").convert("RGB")).astype(int)
    # no pose: black except the two 8x8 patches centred at the positions
    patch_mask = np.zeros((64, 64), bool)
    patch_mask[18:26, 40:48] = patch_mask[26:34, 12:20] = True
    assert condition[~patch_mask].max() == 0
    assert condition[18:26, 40:48].max() > 0 and condition[26:34, 12:20].max() > 0


def test_generate_bad_input_names_the_subject(
    tmp_path: Path, astronaut: dict[str, Any], capsys: pytest.CaptureFixture
) -> None:
    base = ["generate", "--config", TINY, "--set", "face.backend=tiny", "--out", str(tmp_path)]
    faces = ["--image", str(astronaut["face"]), str(astronaut["mirror"])]
    assert main([*base, *faces, "--positions", "10,10", "20,20", "30,30"]) == 2
    assert "3 face positions" in capsys.readouterr().err
    assert main([*base, *faces, "--positions", "10,10", "70,20"]) == 2
    assert "subject 1: position (70.0, 20.0)" in capsys.readouterr().err
    assert main([*base, *faces, "--positions", "10,10", "x,20"]) == 2
    assert "--positions entry 1" in capsys.readouterr().err
    assert main([*base, "--image", str(tmp_path / "none.png"), "--positions", "10,10"]) == 2
    err = capsys.readouterr().err
    assert "subject 0: face image" in err and "none.png" in err and "Traceback" not in err
    assert main([*base, *faces, "--set", "sampling.steps=3"]) == 2
    err = capsys.readouterr().err
    assert "unknown config key 'sampling.steps'; nearest valid keys: sampling.num_inference_steps" in err
    assert len(err.strip().splitlines()) == 1 and err.startswith("id-patch generate: error:")


def test_missing_inputs_exit_2_naming_the_file_before_any_model(
    tmp_path: Path, astronaut: dict[str, Any], capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import id_patch.config

    def no_model(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a model was built before the inputs were checked")

    monkeypatch.setattr(id_patch.config, "build_pipeline", no_model)
    face = ["--image", str(astronaut["face"])]
    cases = [
        (
            ["generate", "--image", str(astronaut["face"]), str(tmp_path / "bob.png")],
            "subject 1: face image",
            "bob.png",
        ),
        (["generate", *face, "--keypoints", str(tmp_path / "poses.npy")], "--keypoints", "poses.npy"),
        (["eval", *face, "--generated", str(astronaut["group"]), str(tmp_path / "g1.png")], "--generated", "g1.png"),
    ]
    for argv, flag, name in cases:
        assert main([*argv, "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert flag in err and str(tmp_path / name) in err and "Traceback" not in err, err
        assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


@needs_dlib
def test_generate_with_dlib_rejects_a_faceless_subject(
    tmp_path: Path, astronaut: dict[str, Any], capsys: pytest.CaptureFixture
) -> None:
    faces = ["--image", str(astronaut["face"]), str(astronaut["dir"] / "blank.png")]
    code = main(["generate", "--config", TINY, *faces, "--positions", "16,20", "48,20", "--out", str(tmp_path)])
    assert code == 2
    assert "No face found in subject 1" in capsys.readouterr().err


def test_train_unknown_key_names_the_nearest(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["train", "--out", str(tmp_path / "run"), "--set", "train.max_step=3"]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        "id-patch train: error: command line: unknown config key 'train.max_step'; "
        "nearest valid keys: train.max_steps, train.ema_decay, train.seed"
    ]
    assert not (tmp_path / "run").exists()


def test_train_runs_and_exports(tmp_path: Path) -> None:
    out = tmp_path / "run"
    overrides = ["--set", "train.max_steps=3", "--set", "train.progress_bar=false", "--set", "data.synthetic_images=2"]
    assert main(["train", "--config", TRAIN_TINY, "--out", str(out), *overrides]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 3 and len(summary["losses"]) == 3 and np.isfinite(summary["last_loss"])
    assert (out / "checkpoints" / "last.ckpt").is_file()
    assert (out / "trained" / "controlnet" / "config.json").is_file()
    assert (out / "trained" / "id_projector" / "prompt_proj.safetensors").is_file()
    assert (out / "config.yaml").read_text().count("max_steps: 3") == 1


def test_train_refuses_a_used_run_folder_and_resumes_it(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    settings = ["--set", "train.progress_bar=false", "data.synthetic_images=2", "train.checkpoint_every_n_steps=1"]
    assert main(["train", "--out", str(out), *settings, "--set", "train.max_steps=2"]) == 0
    assert main(["train", "--out", str(out), *settings, "--set", "train.max_steps=3"]) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert main(["train", "--out", str(out), *settings, "--set", "train.max_steps=3", "--resume"]) == 0
    assert json.loads((out / "summary.json").read_text())["steps"] == 3
    assert main(["train", "--out", str(tmp_path / "fresh"), "--resume"]) == 2
    assert "last.ckpt not found" in capsys.readouterr().err


def test_generate_from_another_directory_with_repeated_set(
    tmp_path: Path, astronaut: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    argv = ["generate", "--config", "tiny", "--image", str(astronaut["face"]), "--out", "gen"]
    argv += ["--set", "face.backend=tiny", "--set", "sampling.seed=7", "sampling.num_inference_steps=1"]
    assert main(argv) == 0
    summary = json.loads((tmp_path / "gen" / "summary.json").read_text())
    assert summary["sampling"]["seed"] == 7 and summary["sampling"]["num_inference_steps"] == 1
    assert summary["files"] == ["image.png", "condition.png", "image_and_condition.png"]
    for name in [*summary["files"], "summary.json"]:
        assert (tmp_path / "gen" / name).is_file(), name
    assert Image.open(tmp_path / "gen" / "image.png").size == (64, 64)


def test_print_config_resolves_per_command(capsys: pytest.CaptureFixture) -> None:
    argv = ["train", "--config", "tiny", "--set", "train.max_steps=7", "train.optimizer.lr=0.5", "--print-config"]
    assert main(argv) == 0
    train = yaml.safe_load(capsys.readouterr().out)
    assert (train["train"]["max_steps"], train["train"]["optimizer"]["lr"], train["data"]["resolution"]) == (
        7,
        0.5,
        64,
    )
    assert main(["generate", "--config", "tiny", "--image", "x.png", "--print-config"]) == 0
    generate = yaml.safe_load(capsys.readouterr().out)
    assert (generate["sampling"]["num_inference_steps"], generate["sampling"]["height"]) == (2, 64)
    assert "train" not in generate and "out_dir" not in generate
    assert main(["eval", "--config", "paper", "--image", "x.png", "--print-config"]) == 0
    sdxl = yaml.safe_load(capsys.readouterr().out)
    assert (sdxl["sampling"]["num_inference_steps"], sdxl["sampling"]["guidance_scale"]) == (50, 5.0)
    assert main(["demo", "--config", "tiny", "--set", "sampling.seed=3", "--print-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == {**generate, "sampling": {**generate["sampling"], "seed": 3}}


def test_configs_load_without_torch() -> None:
    code = """
import json, sys
from id_patch.cli import main
for argv in (["train", "--print-config"], ["generate", "--config", "paper", "--image", "x.png", "--print-config"]):
    assert main(argv) == 0
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules})))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(json.loads(result.stdout.strip().splitlines()[-1]))
    assert not loaded & {"torch", "diffusers", "transformers", "lightning"}, sorted(loaded)


@needs_dlib
def test_eval_on_a_real_two_person_photo(tmp_path: Path, astronaut: dict[str, Any]) -> None:
    # the group photo holds the face at x in [0, 162) and its mirror at [162, 324); dlib puts the noses at x 86, 237
    base = ["eval", "--config", TINY, "--generated", str(astronaut["group"]), "--image", str(astronaut["face"])]
    assert main([*base, str(astronaut["mirror"]), "--positions", "86,87", "237,87", "--out", str(tmp_path / "a")]) == 0
    report = json.loads((tmp_path / "a" / "eval.json").read_text())
    assert report["accuracy"] == 1.0 and report["detection_rate"] == 1.0 and report["resemblance"] > 0.99
    assert main([*base, str(astronaut["mirror"]), "--positions", "237,87", "86,87", "--out", str(tmp_path / "b")]) == 0
    swapped = json.loads((tmp_path / "b" / "eval.json").read_text())
    assert swapped["accuracy"] == 0.0 and swapped["per_image"][0]["hits"] == [False, False]


@needs_dlib
def test_eval_generates_and_times(tmp_path: Path, astronaut: dict[str, Any]) -> None:
    faces = ["--image", str(astronaut["face"]), str(astronaut["mirror"])]
    args = ["eval", "--config", TINY, *faces, "--positions", "16,20", "48,20", "--num-images", "2"]
    assert main([*args, "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["num_images"] == 2 and report["seconds_per_image"] > 0
    # the tiny model's images are noise: no face is found, so no identity is at its place
    assert report["accuracy"] == 0.0 and report["detection_rate"] == 0.0 and report["resemblance"] is None
    assert (tmp_path / "image_001.png").is_file()


def test_convert_round_trip(tmp_path: Path) -> None:
    from id_patch.convert_id_patch_original import to_official_state_dict
    from id_patch.modeling_id_patch import IDPatchProjector
    from id_patch.testing import tiny_id_patch_pipeline

    pipe = tiny_id_patch_pipeline(seed=3)
    release = tmp_path / "release"
    release.mkdir()
    torch.save(to_official_state_dict(pipe.id_projector), release / "id-patch.bin")
    pipe.controlnet.save_pretrained(release / "ControlNetModel")
    out = tmp_path / "converted"
    assert main(["convert", "--checkpoint", str(release), "--out", str(out), "--any-shape"]) == 0
    projector = IDPatchProjector.from_pretrained(out / "id_projector")
    for a, b in zip(pipe.id_projector.state_dict().values(), projector.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert (out / "controlnet" / "diffusion_pytorch_model.safetensors").is_file()
    assert main(["convert", "--checkpoint", str(release), "--out", str(out)]) == 2  # tiny sizes are not the paper's


def test_demo_writes_group_and_condition(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("skimage")
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--config", "tiny", "--out", "demo"]) == 0
    out = tmp_path / "demo"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["headline"]["subjects"] == 2 and summary["headline"]["context_tokens"] == 16 + 2 * 2
    assert "mirrored" in summary["subjects"]
    assert summary["files"] == DEMO_FILES and sorted(p.name for p in out.iterdir()) == sorted(
        [*DEMO_FILES, "summary.json"]
    )
    assert summary["positions"] == [[20.0, 22.0], [44.0, 22.0]] and summary["size"] == [64, 64]
    condition = np.asarray(Image.open(out / "condition.png"))
    assert condition.shape == (64, 64, 3) and condition.max() > 0
    assert Image.open(out / "group_and_condition_x4.png").size == (64 * 4 * 2 + 4, 64 * 4)


def test_demo_default_config_is_the_shipped_yaml() -> None:
    from genblocks.config import load_config
    from id_patch.config import GenerateConfig
    from id_patch.demo import tiny_generate_config

    config = tiny_generate_config()
    assert config == load_config(GenerateConfig, CONFIGS / "tiny.yaml")
    assert (config.sampling.num_inference_steps, config.sampling.height, config.model.base) == (2, 64, "tiny")


def test_smoke() -> None:
    assert main(["smoke"]) == 0


def test_an_empty_negative_prompt_is_encoded_as_the_empty_string(
    tmp_path: Path, astronaut: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The authors' pipeline encodes "" (no zero embeddings): through generate() and the CLI."""
    from id_patch.pipeline_id_patch import IDPatchPipeline

    seen: list[Any] = []
    original = IDPatchPipeline.encode_prompt

    def recording(self: Any, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("negative_prompt_embeds") is None:  # the call that encodes text (the parent gets embeddings)
            seen.append(kwargs.get("negative_prompt", args[5] if len(args) > 5 else None))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(IDPatchPipeline, "encode_prompt", recording)
    argv = ["generate", "--config", "tiny", "--set", "face.backend=tiny", "--out", str(tmp_path)]  # tiny: negative ""
    assert main([*argv, "--image", str(astronaut["face"])]) == 0
    assert seen and all(value == "" for value in seen), seen


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("sampling.num_inference_steps=0", "sampling.num_inference_steps"),  # was a ZeroDivisionError
        ("sampling.num_inference_steps=-2", "sampling.num_inference_steps"),  # ran silently
        ("sampling.height=60", "multiple of 8"),
        ("sampling.width=-64", "sampling.width"),
        ("sampling.id_injection_ratio=2", "sampling.id_injection_ratio"),
    ],
)
def test_bad_sampling_values_exit_2_naming_the_key(
    tmp_path: Path, astronaut: dict[str, Any], capsys: pytest.CaptureFixture, override: str, named: str
) -> None:
    argv = [
        "generate",
        "--image",
        str(astronaut["face"]),
        "--set",
        "face.backend=tiny",
        override,
        "--out",
        str(tmp_path),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert named in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
