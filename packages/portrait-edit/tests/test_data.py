"""The pair manifest: synthetic pairs for tiny runs and make-pairs' manifest read into training batches."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from pe_faces import FixedFaceAnalyzer, synthetic_landmarks68

from genblocks.errors import InputError
from portrait_edit.config import tiny_config
from portrait_edit.data import pair_datamodule
from portrait_edit.pairs import EditorPairGenerator, PairFilters, make_pairs, read_sources


def test_synthetic_pairs_load_as_batches(tmp_path: Path) -> None:
    config = tiny_config()
    module = pair_datamodule(config, tmp_path)
    module.setup("fit")
    batch = next(iter(module.train_dataloader()))
    size = config.data.image_size
    assert batch["source"].shape == batch["target"].shape == (config.train.batch_size, 3, size, size)
    assert batch["source"].min() >= -1 and batch["source"].max() <= 1
    top = slice(0, size // 2)
    torch.testing.assert_close(
        batch["source"][..., top, :], batch["target"][..., top, :]
    )  # only the lower half changes
    assert not torch.allclose(batch["source"][..., size // 2 :, :], batch["target"][..., size // 2 :, :])
    assert batch["prompt"] == ["a person, red costume"] * 2 and batch["source_prompt"] == ["a person"] * 2
    assert len((tmp_path / "data" / "pairs.jsonl").read_text().splitlines()) == config.data.synthetic_pairs


def test_make_pairs_output_is_a_training_manifest(tmp_path: Path) -> None:
    from genblocks.media import write_image

    (tmp_path / "sources").mkdir()
    for index in range(2):
        write_image(tmp_path / "sources" / f"s{index}.png", np.full((64, 64, 3), 40 * index + 60, np.uint8))
    generator = EditorPairGenerator(
        lambda image, prompt, seed: np.where(np.arange(64)[:, None, None] > 56, 255, image).astype(np.uint8),
        FixedFaceAnalyzer(synthetic_landmarks68(32, 26, 8)),
        PairFilters(identity_threshold=-1.0, outside_psnr_min=0.0),
    )
    sources = read_sources(tmp_path / "sources", "a man, santa", "a man")
    summary = make_pairs(sources, generator, tmp_path / "pairs", image_size=64, progress=False)
    config = tiny_config()
    config = replace(config, data=replace(config.data, manifest=str(summary.manifest)))
    module = pair_datamodule(config, tmp_path / "run")
    module.setup("fit")
    batch = next(iter(module.train_dataloader()))
    assert batch["target"].shape == (2, 3, 64, 64) and sorted(batch["prompt"]) == ["a man, santa"] * 2
    assert (batch["target"][..., 60:, :] == 1).all()
    with pytest.raises(InputError, match=r"data\.manifest"):
        pair_datamodule(replace(config, data=replace(config.data, manifest=str(tmp_path / "no.jsonl"))), tmp_path)
    assert json.loads(summary.manifest.read_text().splitlines()[0])["source"] == "condition/s0.png"
