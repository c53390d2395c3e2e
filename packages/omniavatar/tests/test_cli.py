"""The command line: render files, conversion, and exit status 2 with one line naming the expected layout."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from genblocks.media import write_image
from omniavatar.cli import main


def test_help_imports_no_heavy_library() -> None:
    code = (
        "import sys; from omniavatar.cli import command_line; command_line.build_parser(); "
        "print(sorted(m for m in ('lightning', 'diffusers', 'transformers', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_render_writes_labelled_files(tmp_path: Path) -> None:
    labels = np.zeros((4, 51), dtype=np.float32)
    labels[:, 35:45] = np.random.RandomState(0).randn(4, 10)
    np.save(tmp_path / "labels.npy", labels)
    out = tmp_path / "render"
    status = main(
        [
            "render",
            "--seed",
            "2",
            "--yaw",
            "0.1",
            "--jaw",
            "0.2,0,0",
            "--labels",
            str(tmp_path / "labels.npy"),
            "--row",
            "1",
            "--path",
            "orbit",
            "--set",
            "render.frames=3",
            "--out",
            str(out),
        ]
    )
    assert status == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["random_weights"] is True
    assert {"image.png", "grid.png", "depth.png", "mask.png", "orbit.gif"} <= set(summary["files"])
    assert summary["features"][-3] == pytest.approx(0.2)
    assert summary["features"][10:20] == pytest.approx(labels[1, 35:45].tolist())


def test_render_row_camera_uses_the_rows_camera(tmp_path: Path, tiny_config: object) -> None:
    from PIL import Image

    from omniavatar.pipeline_omniavatar import OmniAvatarPipeline

    pipeline = OmniAvatarPipeline.from_config(tiny_config)  # type: ignore[arg-type]
    labels = np.zeros((2, 51), dtype=np.float32)
    labels[:, :25] = pipeline.cameras(0.0, 0.0).numpy()
    labels[1, :25] = pipeline.cameras(0.3, 0.0).numpy()[0]  # yaw 0.3 at the orbit centre, without the pitch offset
    np.save(tmp_path / "labels.npy", labels)
    row = ["render", "--labels", str(tmp_path / "labels.npy"), "--row", "1"]
    pitch = str(-pipeline.config.render.pitch_offset)
    assert main([*row, "--row-camera", "--out", str(tmp_path / "row")]) == 0
    assert main([*row, "--yaw", "0.3", "--pitch", pitch, "--out", str(tmp_path / "offsets")]) == 0
    assert main([*row, "--out", str(tmp_path / "demo")]) == 0
    image = {name: np.asarray(Image.open(tmp_path / name / "image.png")) for name in ("row", "offsets", "demo")}
    assert np.abs(image["row"].astype(int) - image["offsets"]).max() <= 1  # the same camera, by either route
    assert np.abs(image["row"].astype(int) - image["demo"]).mean() > 1  # not the demo's frontal camera
    summary = json.loads((tmp_path / "row" / "summary.json").read_text())
    assert summary["camera"] == pytest.approx(labels[1, :25].tolist())


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["render", "--expression", "1,2,3"], "expected 10 values (layout shape 10 | expression 10 | neck 3 | jaw 3"),
        (["render", "--jaw", "1,2"], "--jaw: expected 3 values"),
        (["render", "--labels", "@LABELS", "--row", "0"], "rows of 51 numbers (25 camera values then shape 10"),
        (["convert", "--pkl", "@PKL"], "not a readable pickle"),
        (["render", "--row-camera"], "--row-camera: expected --labels FILE.npy and --row N"),
        (["train", "--stage", "sdf", "--set", "model.head=flame", "model.flame_path=@FLAME"], "not FLAME, missing"),
        (["eval", "--count", "1", "--estimator", "@TEXT"], "--estimator @TEXT: not a safetensors file (expected "),
        (
            ["eval", "--count", "1", "--estimator", "@OTHER"],
            "--estimator @OTHER: does not fit (expected safetensors of a ",
        ),
        (
            ["train", "--stage", "gan", "--set", "train.sdf_checkpoint=@TEXT"],
            "train.sdf_checkpoint @TEXT: not a safetensors file (expected safetensors of the Stage I SemanticSDF",
        ),
        (
            ["train", "--stage", "gan", "--set", "ctrl_loss.estimator=pretrained", "ctrl_loss.estimator_path=@TEXT"],
            "ctrl_loss.estimator_path @TEXT: not a safetensors file (expected safetensors of a ControlEstimator",
        ),
        (
            [
                "train",
                "--stage",
                "gan",
                "--set",
                "ctrl_loss.estimator=pretrained",
                "ctrl_loss.estimator_path=@MISSING",
            ],
            "ctrl_loss.estimator_path @MISSING: file not found (expected safetensors of a ControlEstimator",
        ),
    ],
)
def test_bad_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    from safetensors.torch import save_file

    np.save(tmp_path / "labels.npy", np.zeros((2, 40), dtype=np.float32))
    (tmp_path / "model.pkl").write_text("not a pickle")
    (tmp_path / "flame.pkl").write_bytes(pickle.dumps({"v_template": np.zeros((3, 3))}, protocol=2))
    (tmp_path / "text.safetensors").write_text("not safetensors")
    save_file({"weight": torch.zeros(2)}, str(tmp_path / "other.safetensors"))  # safetensors, but not an estimator
    replacements = {
        "@LABELS": str(tmp_path / "labels.npy"),
        "@PKL": str(tmp_path / "model.pkl"),
        "@FLAME": str(tmp_path / "flame.pkl"),
        "@TEXT": str(tmp_path / "text.safetensors"),
        "@OTHER": str(tmp_path / "other.safetensors"),
        "@MISSING": str(tmp_path / "missing.safetensors"),
    }
    for token, path in replacements.items():
        argv = [a.replace(token, path) for a in argv]
        message = message.replace(token, path)
    out = tmp_path / "out"
    status = main([*argv, "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    assert len(err) == 1 and message in err[0]
    assert not (out / "summary.json").exists()


def test_convert_command_round_trip(tmp_path: Path, tiny_config: object) -> None:
    from omniavatar_authors_pickle import authors_config, write_authors_pickle

    from omniavatar.pipeline_omniavatar import OmniAvatarPipeline

    path, reference = write_authors_pickle(tmp_path, authors_config(tiny_config))  # type: ignore[arg-type]
    assert main(["convert", "--pkl", str(path), "--out", str(tmp_path / "weights")]) == 0
    report = json.loads((tmp_path / "weights" / "conversion_report.json").read_text())
    assert report["ok"] and report["unexpected"] == []
    loaded = OmniAvatarPipeline.from_pretrained(tmp_path / "weights")
    assert (loaded([1]).images == reference([1]).images).all()
    assert main(["render", "--weights", str(tmp_path / "weights"), "--out", str(tmp_path / "r")]) == 0
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["random_weights"] is False


def test_eval_command(tmp_path: Path, tiny_config: object) -> None:
    from safetensors.torch import save_file

    from omniavatar.training import ControlEstimator

    torch_estimator = ControlEstimator(16, 8)
    save_file(torch_estimator.state_dict(), str(tmp_path / "e.safetensors"))
    status = main(
        ["eval", "--count", "2", "--estimator", str(tmp_path / "e.safetensors"), "--out", str(tmp_path / "m")]
    )
    assert status == 0
    metrics = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert len(metrics["depth_consistency_chamfer"]) == 2 and metrics["control_error"]["expression"] >= 0


class _MeanColour(torch.nn.Module):
    """A toy face embedder: the mean colour of the upper and of the lower image half, `(N, 6)`, plus a constant."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = x.shape[-2] // 2
        return torch.cat(
            [x[..., :half, :].mean((2, 3)), x[..., half:, :].mean((2, 3)), torch.ones_like(x[:, :1, 0, 0])], 1
        )


def test_eval_reports_identity_consistency(tmp_path: Path, tiny_config: object) -> None:
    from omniavatar.metrics import identity_consistency
    from omniavatar.pipeline_omniavatar import OmniAvatarPipeline

    torch.jit.script(_MeanColour()).save(str(tmp_path / "embedder.pt"))
    argv = ["eval", "--count", "2", "--identity-embedder", str(tmp_path / "embedder.pt")]
    assert main([*argv, "--out", str(tmp_path / "m")]) == 0
    scores = json.loads((tmp_path / "m" / "metrics.json").read_text())["identity_consistency"]
    pipeline = OmniAvatarPipeline.from_config(tiny_config)  # type: ignore[arg-type]
    expected = identity_consistency(pipeline, _MeanColour(), heads=2, variations=3)
    assert scores == {
        "same": pytest.approx(expected["same"]),
        "different": pytest.approx(expected["different"]),
        "heads": 2,
        "variations": 3,
    }
    assert scores["different"] < scores["same"] < 1.0  # one head varies less than two heads do (0.83 < 0.98)


def test_eval_identity_embedder_must_be_torchscript(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "embedder.pt").write_text("not TorchScript")
    argv = ["eval", "--identity-embedder", str(tmp_path / "embedder.pt"), "--out", str(tmp_path / "m")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--identity-embedder {tmp_path / 'embedder.pt'}: not a TorchScript file" in err[0]
    assert not (tmp_path / "m" / "metrics.json").exists()


def _fid_inputs(folder: Path, real_images: int) -> tuple[Path, Path]:
    """A scripted conv + average-pool extractor and an FFHQ-style folder of `real_images` random images."""
    import torch

    class ConvPool(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x).mean((2, 3))

    torch.manual_seed(0)
    torch.jit.script(ConvPool()).save(str(folder / "extractor.pt"))
    real = folder / "real"
    real.mkdir()
    rng = np.random.default_rng(0)
    for k in range(real_images):
        write_image(real / "00000" / f"{k:05d}.png", rng.integers(0, 255, (40, 40, 3), dtype=np.uint8), (0, 255))
    return folder / "extractor.pt", real


def test_eval_writes_fid_and_kid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    extractor, real = _fid_inputs(tmp_path, 5)
    argv = ["eval", "--count", "1", "--features", str(extractor), "--real", str(real), "--num-images", "4"]
    assert main([*argv, "--out", str(tmp_path / "m")]) == 0
    metrics = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert metrics["fid"] > 0 and np.isfinite(metrics["kid"])
    assert metrics["fid_images"] == {"real": 4, "generated": 4}  # --num-images caps the real images too
    assert json.loads(capsys.readouterr().out)["fid"] == metrics["fid"]
    assert metrics["fid_conditioning"] == "random"  # no labels in the real folder
    assert main(["eval", "--count", "1", "--out", str(tmp_path / "plain")]) == 0  # without --features: as before
    assert "fid" not in json.loads((tmp_path / "plain" / "metrics.json").read_text())


def test_eval_conditions_fid_samples_on_the_real_labels(tmp_path: Path, tiny_config: object) -> None:
    import torch

    from omniavatar.pipeline_omniavatar import OmniAvatarPipeline

    extractor, real = _fid_inputs(tmp_path, 3)
    pipeline = OmniAvatarPipeline.from_config(tiny_config)  # type: ignore[arg-type]
    frontal = pipeline.labels(pipeline.cameras(0.0, 0.0), torch.zeros(1, pipeline.layout.feature_dim))
    rows = [[f"00000/{k:05d}.png", frontal[0].tolist()] for k in range(3)]
    (real / "dataset.json").write_text(json.dumps({"labels": rows}))
    argv = ["eval", "--count", "1", "--features", str(extractor), "--real", str(real), "--num-images", "3"]
    assert main([*argv, "--out", str(tmp_path / "m")]) == 0
    assert json.loads((tmp_path / "m" / "metrics.json").read_text())["fid_conditioning"] == "dataset labels"
    rows[0][1] = rows[0][1][:25]  # the camera only: the FLAME values are missing
    (real / "dataset.json").write_text(json.dumps({"labels": rows}))
    assert main([*argv, "--out", str(tmp_path / "bad")]) == 2
    assert not (tmp_path / "bad" / "metrics.json").exists()


@pytest.mark.parametrize(
    ("real_images", "options", "message"),
    [
        (0, "--features EXT --real REAL", "--real REAL: no images (.png"),
        (1, "--features EXT --real REAL", "--real REAL: FID / KID need at least 2 real images, found 1"),
        (3, "--features NOT_TS --real REAL", "--features NOT_TS: not a TorchScript file"),
        (3, "--features MISSING --real REAL", "--features MISSING: no such file"),
        (3, "--features EXT", "--features and --real: FID / KID need both"),
        (3, "--features EXT --real REAL --num-images 1", "--num-images 1: FID / KID need at least 2 images"),
    ],
    ids=["empty-folder", "one-image", "not-torchscript", "missing-extractor", "no-real", "one-sample"],
)
def test_eval_bad_fid_input_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], real_images: int, options: str, message: str
) -> None:
    extractor, real = _fid_inputs(tmp_path, real_images)
    (tmp_path / "not_ts.pt").write_text("not TorchScript")
    names = {
        "EXT": str(extractor),
        "REAL": str(real),
        "NOT_TS": str(tmp_path / "not_ts.pt"),
        "MISSING": str(tmp_path / "missing.pt"),
    }
    argv = ["eval", "--count", "1", "--out", str(tmp_path / "m"), *(names.get(a, a) for a in options.split())]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    for name, value in names.items():
        message = message.replace(name, value)
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "m" / "metrics.json").exists()


@pytest.mark.slow
def test_demo(tmp_path: Path) -> None:
    assert main(["demo", "--set", "render.frames=4", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["headline"]["stage1_sdf_l1_last"] < summary["headline"]["stage1_sdf_l1_first"]
    assert (tmp_path / "demo.gif").is_file() and (tmp_path / "strip.png").is_file()


def test_render_mesh_is_a_closed_index_set_inside_the_box(tmp_path: Path) -> None:
    pytest.importorskip("skimage")
    out = tmp_path / "render"
    assert main(["render", "--config", "tiny", "--seed", "1", "--mesh", "--out", str(out)]) == 0
    lines = (out / "mesh.obj").read_text().splitlines()
    vertices = np.array([[float(v) for v in line.split()[1:]] for line in lines if line.startswith("v ")])
    faces = np.array([[int(i) for i in line.split()[1:]] for line in lines if line.startswith("f ")])
    assert len(vertices) > 100 and faces.shape[1] == 3
    assert faces.min() == 1 and faces.max() == len(vertices)  # OBJ indices are 1-based and all used
    assert np.abs(vertices).max() <= 0.3 + 1e-6  # inside the volumes' box (tiny box_warp 0.6)
