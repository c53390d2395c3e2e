from __future__ import annotations

import json
from pathlib import Path

from diffportrait3d.cli import load_cli_config, main
from diffportrait3d.config import DiffPortrait3DConfig, sd15_config, tiny_config
from genblocks.config import load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_yaml_configs_match_builtins() -> None:
    assert load_config(DiffPortrait3DConfig, CONFIGS / "tiny.yaml") == tiny_config()
    sd15 = load_config(DiffPortrait3DConfig, CONFIGS / "sd15.yaml")
    assert sd15.model == sd15_config().model and sd15.inference.num_inference_steps == 50
    assert sd15.inference.eta == 0.5 and sd15.inference.guidance_scale == 3.0
    assert load_cli_config("tiny", ["model.views_per_batch=2"]).model.views_per_batch == 2


def test_demo_writes_orbit_gif_and_summary(tmp_path: Path) -> None:
    assert main(["demo", "--out", str(tmp_path), "--views", "4"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["headline"]["views"] == 4
    assert summary["headline"]["inversion_loss_last"] < summary["headline"]["inversion_loss_first"]
    assert (tmp_path / "orbit.gif").stat().st_size > 0


def test_smoke() -> None:
    assert main(["smoke"]) == 0


def test_render_from_condition_folder(tmp_path: Path) -> None:
    import torch

    from genblocks.media import write_image

    write_image(tmp_path / "face.png", torch.rand(3, 48, 48), value_range=(0.0, 1.0))
    for i in range(2):
        write_image(tmp_path / "cond" / f"{i}.png", torch.rand(3, 64, 64), value_range=(0.0, 1.0))
    out = tmp_path / "views"
    assert (
        main(
            [
                "render",
                "--image",
                str(tmp_path / "face.png"),
                "--conditions",
                str(tmp_path / "cond"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert sorted(p.name for p in out.iterdir()) == ["view_000.png", "view_001.png"]
