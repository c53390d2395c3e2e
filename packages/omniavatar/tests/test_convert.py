"""Converter round trip on a persistence-format pickle whose embedded code would raise if run."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from omniavatar_authors_pickle import authors_config, write_authors_pickle

from genblocks.errors import InputError
from omniavatar.config import OmniAvatarConfig
from omniavatar.convert_omniavatar_original import (
    GENERATOR_LAYOUT,
    ConversionError,
    clamp_notes,
    convert_omniavatar,
    read_labels,
)
from omniavatar.pipeline_omniavatar import OmniAvatarPipeline


def test_the_pickle_would_run_code(tmp_path: Path, tiny_config: OmniAvatarConfig) -> None:
    path, _ = write_authors_pickle(tmp_path, authors_config(tiny_config))
    with pytest.raises((RuntimeError, ModuleNotFoundError, AttributeError)), open(path, "rb") as handle:
        pickle.load(handle)


def test_round_trip_reproduces_images_depth_and_mask(tmp_path: Path, tiny_config: OmniAvatarConfig) -> None:
    config = authors_config(tiny_config)
    path, reference = write_authors_pickle(tmp_path, config)
    converted, report = convert_omniavatar(path, tmp_path / "converted", base=tiny_config)
    assert report.ok and "superresolution.block0.conv0.noise_const" in report.dropped and report.notes == []
    assert any(key.startswith("renderer.im3dmm._template_sdf.") for key in report.dropped)
    loaded = OmniAvatarPipeline.from_pretrained(tmp_path / "converted")
    saved = json.loads((tmp_path / "converted" / "config.json").read_text())
    assert saved["rendering_kwargs"]["pose_perturb_magtinude"] == 0.1
    assert loaded.config.igr.residual_warp is False and loaded.config.generator.c_scale == 1.0
    features = torch.randn(2, config.flame.feature_dim) * 0.3
    for pipeline in (converted, loaded):
        expected = reference([4, 5], features, yaw=torch.tensor([0.1, -0.2]), truncation_psi=0.7)
        actual = pipeline([4, 5], features, yaw=torch.tensor([0.1, -0.2]), truncation_psi=0.7)
        assert torch.equal(expected.images, actual.images)
        assert torch.equal(expected.depth, actual.depth)
        assert torch.equal(expected.mask, actual.mask)


def test_report_notes_the_authors_conv_clamps(tmp_path: Path, tiny_config: OmniAvatarConfig) -> None:
    # EG3D trains the SR with sr_num_fp16_res 4, which makes the authors' SR clamp at ±256 even in fp32; ours does not.
    extra = {"sr_num_fp16_res": 4, "conv_clamp": 256}
    path, _ = write_authors_pickle(tmp_path, authors_config(tiny_config), extra_init=extra)
    _, report = convert_omniavatar(path, tmp_path / "converted", base=tiny_config)
    assert report.ok and len(report.notes) == 2
    assert report.notes[0].startswith("conv_clamp=256: the authors' backbone clamps conv outputs at ±256")
    assert report.notes[1].startswith("sr_num_fp16_res=4: the authors' super-resolution clamps conv outputs at ±256")
    saved = json.loads((tmp_path / "converted" / "conversion_report.json").read_text())
    assert saved["notes"] == report.notes
    # Without conv_clamp in init_kwargs their SynthesisBlock default (256) applies.
    assert [note.split(":")[0] for note in clamp_notes({})] == ["conv_clamp=256"]
    assert clamp_notes({"conv_clamp": None, "sr_num_fp16_res": 0}) == []


def test_strict_report_names_unexpected_keys(tmp_path: Path, tiny_config: OmniAvatarConfig) -> None:
    path, _ = write_authors_pickle(tmp_path, authors_config(tiny_config), {"decoder.extra_net.weight": torch.zeros(3)})
    with pytest.raises(ConversionError, match=r"decoder\.extra_net\.weight"):
        convert_omniavatar(path, tmp_path / "out", base=tiny_config)
    assert not (tmp_path / "out").exists()
    _, report = convert_omniavatar(path, tmp_path / "loose", strict=False, base=tiny_config)
    assert report.unexpected == ["decoder.extra_net.weight"]


def test_not_a_generator(tmp_path: Path) -> None:
    path = tmp_path / "other.pkl"
    path.write_bytes(pickle.dumps({"G_ema": {"weights": [1, 2, 3]}}))
    with pytest.raises(InputError) as caught:
        convert_omniavatar(path, tmp_path / "out")
    message = str(caught.value)
    assert message.startswith(f"network pickle {path}: expected a pickled network module, got {{'weights'")
    assert message.endswith(f"; expected {GENERATOR_LAYOUT}")
    assert "training.triplane.TriPlaneGenerator" in message and "rendering_kwargs" in message
    (tmp_path / "text.pkl").write_text("not a pickle")
    with pytest.raises(InputError, match="not a readable pickle"):
        convert_omniavatar(tmp_path / "text.pkl", tmp_path / "out")


def test_labels(tmp_path: Path, tiny_config: OmniAvatarConfig) -> None:
    np.save(tmp_path / "ffhq_labels.npy", np.zeros((3, 51), dtype=np.float32))
    assert read_labels(tmp_path / "ffhq_labels.npy", tiny_config.flame).shape == (3, 51)
    np.save(tmp_path / "bad.npy", np.zeros((3, 40), dtype=np.float32))
    with pytest.raises(InputError, match="rows of 51 numbers"):
        read_labels(tmp_path / "bad.npy", tiny_config.flame)
