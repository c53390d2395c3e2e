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

from fg_net.cli import build_parser, main
from fg_net.convert_fg_net_original import fg_net_to_original
from fg_net.testing import tiny_fg_net

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TINY = CONFIGS / "tiny.yaml"


def test_parser_lists_the_commands() -> None:
    help_text = build_parser().format_help()
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
    assert main(["predict", str(image_path), "--config", str(TINY), "--out", str(out)]) == 0
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
    assert main(["predict", str(image_path), "--config", str(TINY), "--aligned", "--out", str(out)]) == 0
    assert (out / "aligned_heatmaps.png").is_file()
    assert main(["predict", str(tmp_path / "missing.jpg"), "--config", str(TINY), "--aligned"]) == 2
    assert "missing.jpg" in capsys.readouterr().err
    assert main(["predict", str(image_path), "--aligned"]) == 2  # paper config without weights
    assert "no weights configured" in capsys.readouterr().err
    assert main(["predict", str(image_path), "--config", str(TINY), "--aligned", "model.aus=[1,5]"]) == 2
    assert "aus" in capsys.readouterr().err


def test_train_then_eval_on_a_tiny_corpus(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_corpus(tmp_path / "data", rows_per_csv=16, size=64)
    common = [f"data.root={tmp_path / 'data'}", "data.val_fraction=0.34"]
    run_dir = tmp_path / "run"
    code = main(["train", "--config", str(TINY), *common, f"training.output_dir={run_dir}", "training.max_steps=4"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "test F1 (fold 0)" in printed and "held-out training subjects" in printed
    assert (run_dir / "best" / "config.json").is_file()
    scores_path = tmp_path / "scores.json"
    code = main(
        ["eval", "--config", str(TINY), "--checkpoint", str(run_dir / "best"), "--json", str(scores_path), *common]
    )
    assert code == 0
    assert "within-corpus BP4D, fold 0, 4 images" in capsys.readouterr().out
    scores = json.loads(scores_path.read_text())
    assert set(scores) == {"protocol", "fold", "AU1", "AU2", "AU6", "AU12", "avg"}


def test_eval_cross_corpus(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_corpus(tmp_path / "data", dataset="DISFA")
    bp4d_model = [
        "model.dataset=BP4D",
        "model.aus=[1,2,4,6,7,10,12,14,15,17,23,24]",
        "model.interpreter_out_channels=32",
    ]
    args = ["eval", "--config", str(TINY), "--target-dataset", "DISFA", f"data.root={tmp_path / 'data'}", *bp4d_model]
    assert main(args) == 0
    assert "cross-corpus BP4D -> DISFA, fold 0, 4 images: AU1 " in capsys.readouterr().out


def test_convert_command(tmp_path: Path) -> None:
    source = tiny_fg_net(seed=4)
    model_pth, encoder_pt = fg_net_to_original(source)
    torch.save(model_pth, tmp_path / "model.pth")
    torch.save(encoder_pt, tmp_path / "encoder.pt")
    out = tmp_path / "converted"
    args = ["convert", str(tmp_path / "model.pth"), str(out), "--config", str(TINY)]
    assert main([*args, "--encoder-checkpoint", str(tmp_path / "encoder.pt"), "--fold", "1"]) == 0
    metadata = json.loads((out / "config.json").read_text())
    assert metadata["fold"] == 1 and metadata["select_on_test"] is None
    assert main(args) == 2  # latent_avg missing without encoder.pt: refused unless --allow-partial
    assert main([*args, "--allow-partial"]) == 0
    assert main(["convert", str(tmp_path / "model.pth"), str(out)]) == 2  # neither --dataset nor --config


def test_demo_writes_overlays_and_headline(tmp_path: Path, face_analyzer: Any, face_image: Any) -> None:
    assert main(["demo", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    headline = summary["headline"]
    assert headline["faces_found"] == 1 and headline["aus"] == 12 and headline["targets_decode_to_labels"] == 1
    assert 25 < headline["inter_ocular_px"] < 55
    for name in summary["files"]:
        assert (tmp_path / name).is_file(), name
    assert np.asarray(Image.open(tmp_path / "astronaut_heatmaps.png")).shape == (3 * 256, 4 * 256, 3)
