"""``fg-net demo``: the full prediction path on a real face with a tiny random model.

The point is the path, not the numbers (the weights are random): scikit-image's ``astronaut`` photo is written to the
output folder, read back like any ``fg-net predict`` input, analysed with dlib (68 landmarks), FFHQ-aligned to 256 px,
analysed again, and run through a tiny FG-Net with BP4D's 12 AUs; the AU list, heatmap overlays, the landmarks and the
target heatmaps the real landmarks give (every AU active, then the decoding check) are written next to a
``summary.json`` whose ``headline`` the monorepo's ``make demo`` prints.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fg_net.config import LandmarkConfig, tiny_config
from fg_net.heatmaps import BP4D_AUS, au_heatmaps, decode_heatmaps, inter_ocular_distance
from fg_net.modeling_fg_net import FGNet
from fg_net.pipeline_fg_net import FGNetPipeline, draw_landmarks, overlay_grid, save_prediction
from fg_net.preprocessing import build_face_analyzer
from genblocks.media import heat_overlay, read_image, write_demo_card, write_image

__all__ = ["demo_model", "load_demo_image", "run_demo"]

logger = logging.getLogger(__name__)


def load_demo_image() -> np.ndarray:
    """scikit-image's ``astronaut`` (512 x 512 RGB, public domain, ships with scikit-image: nothing is downloaded)."""
    try:
        from skimage import data
    except ImportError as error:
        raise ImportError("the demo's face photo comes from scikit-image: `pip install scikit-image`.") from error
    return np.asarray(data.astronaut())


def demo_model(seed: int = 0) -> FGNet:
    """The tiny architecture (spec §9) with BP4D's 12 AUs and the paper's 32-channel head, random weights."""
    config = dataclasses.replace(tiny_config(), dataset="BP4D", aus=BP4D_AUS, interpreter_out_channels=32)
    torch.manual_seed(seed)
    return FGNet(config).eval()


AU_NAMES = {
    1: "inner brow raiser",
    2: "outer brow raiser",
    4: "brow lowerer",
    6: "cheek raiser",
    7: "lid tightener",
    9: "nose wrinkler",
    10: "upper lip raiser",
    12: "lip corner puller",
    14: "dimpler",
    15: "lip corner depressor",
    17: "chin raiser",
    23: "lip tightener",
    24: "lip pressor",
    25: "lips part",
    26: "jaw drop",
}
"""FACS names of the BP4D and DISFA action units."""

_CARD_AUS = (1, 6, 12, 24)


def _write_card(out: Path, face: Any, targets: Any, output: Any) -> None:
    """``strip.png`` + ``README.txt``: the aligned face, where four AUs' target heatmaps sit on it (coloured, named),
    and the random model's predicted heatmap of AU12."""
    panels = [draw_landmarks(face.image, face.landmarks)]
    captions = ["aligned face, 68 landmarks"]
    for au in _CARD_AUS:
        panels.append(heat_overlay(face.image, targets[BP4D_AUS.index(au)], alpha=0.55, heat_range=(0.0, 1.0)))
        captions.append(f"AU{au} {AU_NAMES[au]}: target")
    shown = list(output.aus).index(12) if 12 in output.aus else 0
    panels.append(heat_overlay(face.image, output.heatmaps[0, shown].numpy(), alpha=0.55, heat_range=(-1.0, 1.0)))
    captions.append(f"AU{output.aus[shown]} predicted (random model)")
    write_demo_card(
        out,
        "FG-Net: action-unit heatmaps on the astronaut (tiny config, random weights)",
        panels,
        captions,
        notes=[
            "Targets are the landmark rules of the paper (where each AU acts); the prediction is a random model's.",
            "astronaut_heatmaps.png: every predicted AU; astronaut_targets.png: every target; summary.json: scores.",
        ],
        value_range=(0.0, 1.0),
    )


def run_demo(out_dir: str | Path, seed: int = 0) -> dict[str, Any]:
    """Run the demo and write its files.

    Args:
        out_dir (`str` or `Path`): output folder (created).
        seed (`int`, defaults to 0): model seed.

    Returns:
        `dict[str, Any]`: the summary written to ``summary.json``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    input_path = write_image(out / "astronaut.png", load_demo_image())
    image = read_image(input_path)
    analyzer = build_face_analyzer(LandmarkConfig(threshold=0.5))
    model = demo_model(seed)
    pipeline = FGNetPipeline(model, analyzer)
    predict_start = time.perf_counter()
    output = pipeline(image)
    predict_seconds = time.perf_counter() - predict_start
    files = save_prediction(output, out, "astronaut")

    face = output.faces[0]
    landmarks = torch.from_numpy(face.landmarks).double()
    write_image(out / "astronaut_landmarks.png", draw_landmarks(face.image, face.landmarks))
    labels = torch.ones(len(BP4D_AUS), dtype=torch.long)
    targets = au_heatmaps(landmarks, labels, BP4D_AUS, size=128, sigma=20.0, landmark_scale=0.5)
    write_image(out / "astronaut_targets.png", overlay_grid(face.image, targets.numpy(), BP4D_AUS, labels.tolist()))
    _write_card(out, face, targets.numpy(), output)
    alternating = torch.tensor([1, 0] * 6)
    decodes = bool(torch.equal(decode_heatmaps(au_heatmaps(landmarks, alternating, BP4D_AUS)), alternating))

    summary = {
        "headline": {
            "faces_found": len(output.faces),
            "inter_ocular_px": round(float(inter_ocular_distance(landmarks)), 2),
            "aus": len(output.aus),
            "predicted_active": int(output.active[0].sum()),
            "targets_decode_to_labels": int(decodes),
            "predict_seconds": round(predict_seconds, 3),
        },
        "note": "tiny random model: the predictions show the full path (real landmarks, alignment, heatmaps), not skill",
        "input": input_path.name,
        "predictions": output.as_dicts()[0],
        "landmarks_aligned": face.landmarks.tolist(),
        "model": dataclasses.asdict(model.config),
        "files": [
            *sorted(p.name for p in files.values()),
            "astronaut_landmarks.png",
            "astronaut_targets.png",
            "strip.png",
            "README.txt",
        ],
        "seconds": round(time.perf_counter() - start, 3),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    logger.info("fg-net demo wrote %s", out)
    return summary
