"""The ``fg-net`` command line: predict (real face, tiny random model), train / eval on a tiny corpus, convert,
demo, smoke, and bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fg_net_test_helpers import write_corpus
from PIL import Image

from fg_net.cli import command_line, main
from fg_net.config import FGNetRunConfig, paper_config, tiny_config, tiny_run_config
from fg_net.convert_fg_net_original import fg_net_to_original
from fg_net.testing import tiny_fg_net
from genblocks.cli import load_command_config
from genblocks.config import load_config

TINY = "tiny"


def test_parser_lists_the_commands() -> None:
    help_text = command_line.build_parser().format_help()
    for command in ("predict", "train", "eval", "convert", "demo", "smoke"):
        assert command in help_text


def test_smoke_command() -> None:
    assert main(["smoke"]) == 0


def test_predict_real_face_prints_aus_and_saves_overlays(
    tmp_path: Path, face_image: Any, face_analyzer: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    image_path = tmp_path / "face.jpg"
    Image.fromarray(face_image).save(image_path)
    out = tmp_path / "out"
    assert main(["predict", "--image", str(image_path), "--config", TINY, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "AUs active" in printed and all(f"AU{au} " in printed for au in (1, 2, 6, 12))
    grid = np.asarray(Image.open(out / "face_heatmaps.png"))
    assert grid.shape == (256, 4 * 256, 3)  # one 256-px tile per AU, 4 per row
    for au in (1, 2, 6, 12):
        assert np.asarray(Image.open(out / f"face_AU{au}.png")).shape == (256, 256, 3)
    predictions = json.loads((out / "face_aus.json").read_text())["aus"]
    assert set(predictions) == {"AU1", "AU2", "AU6", "AU12"}
    assert all((v["score"] > 0) == bool(v["active"]) for v in predictions.values())


def test_predict_aligned_input_and_bad_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image_path = tmp_path / "aligned.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(image_path)
    out = tmp_path / "out"
    assert main(["predict", "--image", str(image_path), "--aligned", "--out", str(out)]) == 0  # tiny by default
    assert (out / "aligned_heatmaps.png").is_file()
    assert main(["predict", "--image", str(tmp_path / "missing.jpg"), "--aligned", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "missing.jpg" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert main(["predict", "--image", str(image_path), "--config", "paper", "--aligned", "--out", str(out)]) == 2
    assert "checkpoints/stylegan2-ffhq-config-f.pt" in capsys.readouterr().err  # the paper config names its weights
    no_weights = ["--set", "stylegan_checkpoint=null", "encoder_checkpoint=null"]
    assert main(["predict", "--image", str(image_path), "--config", "paper", "--aligned", *no_weights]) == 2
    assert "no weights configured" in capsys.readouterr().err
    assert (
        main(["predict", "--image", str(image_path), "--aligned", "--set", "model.aus=[1,5]", "--out", str(out)]) == 2
    )
    assert "aus" in capsys.readouterr().err


def test_train_then_eval_on_a_tiny_corpus(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_corpus(tmp_path / "data", rows_per_csv=16, size=64)
    common = ["--set", f"data.root={tmp_path / 'data'}", "data.val_fraction=0.34"]
    run_dir = tmp_path / "run"
    real_data = ["--set", "data.synthetic=false", "training.max_steps=4"]
    code = main(["train", "--config", TINY, *common, *real_data, "--out", str(run_dir)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "test F1 (fold 0)" in printed and "held-out training subjects" in printed
    assert (run_dir / "trained" / "config.json").is_file() and not (run_dir / "data").exists()
    scores_path = tmp_path / "eval" / "scores.json"
    code = main(["eval", "--checkpoint", str(run_dir / "trained"), "--out", str(tmp_path / "eval"), *common])
    assert code == 0
    assert "within-corpus BP4D, fold 0, 4 images" in capsys.readouterr().out
    scores = json.loads(scores_path.read_text())
    assert set(scores) == {"protocol", "fold", "AU1", "AU2", "AU6", "AU12", "avg"}


def test_train_tiny_needs_no_dataset_refuses_a_used_folder_and_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # --out is relative to the working directory, the config ships in the package
    assert main(["train", "--config", "tiny", "--out", "D"]) == 0
    run = tmp_path / "D"
    for name in ("checkpoints/last.ckpt", "checkpoints/best.ckpt", "metrics.csv", "loss.png", "config.yaml"):
        assert (run / name).is_file(), name
    assert (run / "trained" / "config.json").is_file() and (run / "trained" / "interpreter.safetensors").is_file()
    assert (run / "data" / "BP4D" / "labels" / "0" / "train.csv").is_file()  # the synthetic corpus
    assert "run folder: D (4 steps" in capsys.readouterr().out
    recorded = load_config(FGNetRunConfig, run / "config.yaml")
    assert recorded.data.root == "D/data" and not recorded.data.synthetic  # where the corpus was written
    assert recorded.training.optimizer.lr == 1e-3 and recorded.training.fit_config().max_steps == 4
    # a used folder without --resume: exit 2, one line naming the way out
    assert main(["train", "--config", "tiny", "--out", "D"]) == 2
    err = capsys.readouterr().err
    assert "not empty" in err and "--resume" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert main(["train", "--config", "tiny", "--out", "E", "--resume"]) == 2
    assert "last.ckpt not found" in capsys.readouterr().err
    # --resume continues from last.ckpt to a longer schedule
    assert main(["train", "--config", "tiny", "--out", "D", "--resume", "--set", "training.epochs=3"]) == 0
    assert "run folder: D (6 steps" in capsys.readouterr().out
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 6


@pytest.mark.parametrize(
    ("override", "named"),
    [("training.max_steps=0", "training.max_steps"), ("training.optimizer.lr=-1", "training.optimizer.lr")],
)
def test_a_bad_training_value_names_the_training_section(
    tmp_path: Path, override: str, named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # the keys come from genblocks' TrainConfig (``train.`` elsewhere); the message names the section fg-net uses
    assert main(["train", "--config", "tiny", "--set", override, "--out", str(tmp_path / "run")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and f"{named}: expected a positive" in lines[0] and "train." not in lines[0]
    assert not (tmp_path / "run").exists()


def test_eval_cross_corpus(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_corpus(tmp_path / "data", dataset="DISFA")
    bp4d_model = [
        "--set",
        "model.dataset=BP4D",
        "model.aus=[1,2,4,6,7,10,12,14,15,17,23,24]",
        "model.interpreter_out_channels=32",
    ]
    data = ["--set", f"data.root={tmp_path / 'data'}"]
    args = ["eval", "--target-dataset", "DISFA", *data, *bp4d_model, "--out", str(tmp_path / "eval")]
    assert main(args) == 0
    assert "cross-corpus BP4D -> DISFA, fold 0, 4 images: AU1 " in capsys.readouterr().out


def test_convert_command(tmp_path: Path) -> None:
    source = tiny_fg_net(seed=4)
    model_pth, encoder_pt = fg_net_to_original(source)
    torch.save(model_pth, tmp_path / "model.pth")
    torch.save(encoder_pt, tmp_path / "encoder.pt")
    out = tmp_path / "converted"
    args = ["convert", "--checkpoint", str(tmp_path / "model.pth"), "--out", str(out), "--config", TINY]
    assert main([*args, "--encoder-checkpoint", str(tmp_path / "encoder.pt"), "--fold", "1"]) == 0
    metadata = json.loads((out / "config.json").read_text())
    assert metadata["fold"] == 1 and metadata["select_on_test"] is None
    assert main(args) == 2  # latent_avg missing without encoder.pt: refused unless --allow-partial
    assert main([*args, "--allow-partial"]) == 0
    assert main(["convert", "--checkpoint", str(tmp_path / "model.pth"), "--out", str(out)]) == 2  # paper: no fit


def test_demo_writes_overlays_and_headline(tmp_path: Path, face_analyzer: Any, face_image: Any) -> None:
    assert main(["demo", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    headline = summary["headline"]
    assert headline["faces_found"] == 1 and headline["aus"] == 12 and headline["targets_decode_to_labels"] == 1
    assert 25 < headline["inter_ocular_px"] < 55
    for name in summary["files"]:
        assert (tmp_path / name).is_file(), name
    assert np.asarray(Image.open(tmp_path / "astronaut_heatmaps.png")).shape == (3 * 256, 4 * 256, 3)
    strip = np.asarray(Image.open(tmp_path / "strip.png"))
    assert strip.shape[0] > 256 and strip.shape[1] > 6 * 256  # six labelled panels
    readme = (tmp_path / "README.txt").read_text()
    assert "weights are random" in readme and "AU12 lip corner puller: target" in readme


def test_shipped_configs_are_the_python_presets() -> None:
    from fg_net.config import FGNetConfig
    from fg_net.heatmaps import DATASET_AUS

    for dataset in ("BP4D", "DISFA"):
        name = {"BP4D": "paper", "DISFA": "disfa"}[dataset]
        config, path = load_command_config(FGNetRunConfig, "fg_net", "train", name)
        assert config.model == paper_config(dataset) == FGNetConfig(dataset=dataset, aus=DATASET_AUS[dataset])
        assert path.name == f"{name}.yaml" and path.parent.name == "configs"  # flat: configs/{tiny,paper,disfa}.yaml
    tiny, _ = load_command_config(FGNetRunConfig, "fg_net", "predict", "tiny")
    assert tiny == tiny_run_config() and tiny.model == tiny_config() and tiny.tiny_random


def test_set_is_repeatable_and_print_config_shows_the_merge(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "train",
        "--set",
        "training.optimizer.lr=0.5",
        "data.fold=2",
        "--set",
        "training.max_steps=7",
        "--print-config",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "lr: 0.5" in printed and "fold: 2" in printed and "max_steps: 7" in printed


def test_unknown_key_and_bad_value_exit_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "--set", "training.learning_rate=1"]) == 2
    err = capsys.readouterr().err
    assert "unknown config key 'training.learning_rate'" in err and len(err.strip().splitlines()) == 1
    assert main(["eval", "--set", "data.fold=first"]) == 2
    err = capsys.readouterr().err
    assert "'data.fold' = 'first'" in err and "expected int" in err


def test_predict_and_demo_work_from_another_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, face_analyzer: Any
) -> None:
    monkeypatch.chdir(tmp_path)
    image = tmp_path / "aligned.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(image)
    assert main(["predict", "--config", "tiny", "--image", str(image), "--aligned", "--out", "pred"]) == 0
    # the files `fg-net predict --help` and the README name, with the stem of --image
    predicted = {"aligned_aligned.png", "aligned_heatmaps.png", "aligned_aus.json"}
    predicted |= {f"aligned_AU{au}.png" for au in (1, 2, 6, 12)}
    assert {p.name for p in (tmp_path / "pred").iterdir()} == predicted
    assert np.asarray(Image.open(tmp_path / "pred" / "aligned_aligned.png")).shape == (256, 256, 3)
    assert main(["demo", "--out", "demo"]) == 0
    written = {p.name for p in (tmp_path / "demo").iterdir()}
    documented = {"strip.png", "README.txt", "astronaut_heatmaps.png", "astronaut_targets.png", "summary.json"}
    assert documented <= written
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert set(summary["files"]) | {"summary.json", "astronaut.png"} == written  # astronaut.png: the input


def test_command_help_names_the_files_written_in_out() -> None:
    parser = command_line.build_parser()
    commands = next(action for action in parser._actions if action.dest == "command").choices
    predict = commands["predict"].format_help()
    assert all(name in predict for name in ("<stem>_heatmaps.png", "<stem>_AU<n>.png", "<stem>_aus.json"))
    assert "config.json" in commands["convert"].format_help()
    assert "scores.json" in commands["eval"].format_help()
    assert "summary.json" in commands["demo"].format_help() and "strip.png" in commands["demo"].format_help()


def test_repeated_set_reaches_predict(tmp_path: Path) -> None:
    image = tmp_path / "face.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(image)
    out = tmp_path / "out"
    argv = ["predict", "--image", str(image), "--aligned", "--out", str(out)]
    assert main([*argv, "--set", "model.aus=[1,2,6]", "--set", "model.aus=[1,12]", "training.seed=0"]) == 0
    seed_0 = json.loads((out / "face_aus.json").read_text())["aus"]
    assert set(seed_0) == {"AU1", "AU12"}  # the later --set wins
    assert sorted(p.name for p in out.glob("face_AU*.png")) == ["face_AU1.png", "face_AU12.png"]
    assert main([*argv, "--set", "model.aus=[1,12]", "--set", "training.seed=5"]) == 0  # the random weights' seed
    seed_5 = json.loads((out / "face_aus.json").read_text())["aus"]
    assert set(seed_5) == {"AU1", "AU12"} and seed_5["AU1"]["score"] != seed_0["AU1"]["score"]
