"""Checkpoint loaders: the authors' model.pth layout, rosinality StyleGAN2 and pSp files, all through
torch.load(weights_only=True), round-tripped from a random tiny model."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest
import torch

from fg_net.config import FGNetRunConfig, tiny_config
from fg_net.convert_fg_net_original import (
    ORIGINAL_KEYS,
    convert_original_checkpoint,
    fg_net_to_original,
    load_fg_net,
    load_original_fg_net,
    load_psp_weights,
    load_stylegan2_weights,
    read_original_checkpoint,
)
from fg_net.modeling_fg_net import FGNet, read_pretrained_metadata
from fg_net.testing import tiny_fg_net
from genblocks.gan.convert import save_rosinality_checkpoint


def _source_model() -> FGNet:
    model = tiny_fg_net(seed=7)
    with torch.no_grad():  # non-trivial buffers so the round trip checks them too
        model.encoder.latent_avg.normal_()
        for name, buffer in model.named_buffers():
            if name.endswith("running_mean"):
                buffer.normal_()
            elif name.endswith("running_var"):
                buffer.uniform_(0.5, 1.5)
        for name, param in model.named_parameters():
            if name.endswith("noise_strength"):
                param.fill_(0.3)
    return model


def _images() -> torch.Tensor:
    return torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3)) * 2 - 1


def test_original_layout_round_trip(tmp_path: Path) -> None:
    source = _source_model()
    model_pth, encoder_pt = fg_net_to_original(source)
    assert tuple(model_pth) == ORIGINAL_KEYS
    interpreter_keys = {k.rsplit(".", 1)[0] for k in model_pth["interpreter"]}
    assert {"layer0.1", "layer0.4", "layer2.0", "layer2.3", "layer3.0", "layer3.3", "layer3.4"} <= interpreter_keys
    assert "style.1.weight" in model_pth["g_all"] and "noises.noise_0" in model_pth["g_all"]
    assert "latent_avg" not in model_pth["pspencoder"] and "input_layer.0.weight" in model_pth["pspencoder"]
    torch.save(model_pth, tmp_path / "model.pth")
    torch.save(encoder_pt, tmp_path / "encoder.pt")

    target = tiny_fg_net(seed=8)
    report = load_original_fg_net(target, tmp_path / "model.pth", tmp_path / "encoder.pt", strict=True)
    assert report.is_exact, report.summary()
    images = _images()
    with torch.no_grad():
        torch.testing.assert_close(target(images), source(images), rtol=0, atol=0)
    for (name, a), b in zip(source.state_dict().items(), target.state_dict().values(), strict=True):
        if name != "generator.mapping.w_avg":  # model.pth carries no w_avg (unused by FG-Net)
            assert torch.equal(a, b), name

    # without encoder.pt the latent_avg is reported missing (and kept)
    partial = tiny_fg_net(seed=8)
    report = load_original_fg_net(partial, tmp_path / "model.pth")
    assert report.encoder.missing_keys == ["latent_avg"] and not report.is_exact
    with pytest.raises(ValueError, match="latent_avg"):
        load_original_fg_net(tiny_fg_net(seed=8), tmp_path / "model.pth", strict=True)


def test_convert_writes_safetensors_and_provenance(tmp_path: Path) -> None:
    source = _source_model()
    model_pth, encoder_pt = fg_net_to_original(source)
    torch.save(model_pth, tmp_path / "model.pth")
    torch.save(encoder_pt, tmp_path / "encoder.pt")
    out = tmp_path / "converted"
    convert_original_checkpoint(
        tmp_path / "model.pth", out, tiny_config(), tmp_path / "encoder.pt", fold=None, select_on_test=True
    )
    metadata = read_pretrained_metadata(out)
    assert metadata["fold"] is None and metadata["select_on_test"] is True and metadata["source"] == "model.pth"
    loaded = FGNet.from_pretrained(out)
    with torch.no_grad():
        torch.testing.assert_close(loaded(_images()), source(_images()), rtol=0, atol=0)
    run = FGNetRunConfig(model=tiny_config(), checkpoint=str(out))
    assert isinstance(load_fg_net(run), FGNet)
    run = FGNetRunConfig(
        model=tiny_config(), checkpoint=str(tmp_path / "model.pth"), encoder_checkpoint=str(tmp_path / "encoder.pt")
    )
    with torch.no_grad():
        torch.testing.assert_close(load_fg_net(run).eval()(_images()), source(_images()), rtol=0, atol=0)


def test_rosinality_and_psp_starting_weights(tmp_path: Path) -> None:
    source = _source_model()
    save_rosinality_checkpoint(tmp_path / "stylegan2.pt", source.generator)
    ckpt = torch.load(tmp_path / "stylegan2.pt", weights_only=True)
    ckpt["args"] = argparse.Namespace(size=32)  # rosinality training checkpoints carry their args
    torch.save(ckpt, tmp_path / "stylegan2.pt")
    _, encoder_pt = fg_net_to_original(source)
    torch.save(encoder_pt, tmp_path / "encoder.pt")

    target = tiny_fg_net(seed=9)
    assert load_stylegan2_weights(target, tmp_path / "stylegan2.pt").is_exact
    assert load_psp_weights(target, tmp_path / "encoder.pt").complete
    for part in ("encoder", "generator"):
        for (name, a), b in zip(
            getattr(source, part).state_dict().items(), getattr(target, part).state_dict().values(), strict=True
        ):
            assert torch.equal(a, b), f"{part}.{name}"
    run = FGNetRunConfig(
        model=tiny_config(),
        stylegan_checkpoint=str(tmp_path / "stylegan2.pt"),
        encoder_checkpoint=str(tmp_path / "encoder.pt"),
    )
    started = load_fg_net(run)
    assert torch.equal(started.generator.synthesis.b8.conv1.weight, source.generator.synthesis.b8.conv1.weight)
    assert not torch.equal(started.interpreter.layer0[1].weight, source.interpreter.layer0[1].weight)


def test_bad_checkpoints(tmp_path: Path) -> None:
    torch.save({"interpreter": {}}, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match=r"missing \['g_all', 'pspencoder'\]"):
        read_original_checkpoint(tmp_path / "partial.pth")
    torch.save(
        {"interpreter": {}, "g_all": {}, "pspencoder": {}, "extra": argparse.Namespace(a=1)}, tmp_path / "obj.pth"
    )
    with pytest.raises(ValueError, match="weights_only=True"):
        read_original_checkpoint(tmp_path / "obj.pth")  # arbitrary objects are never unpickled
    with pytest.raises(FileNotFoundError):
        read_original_checkpoint(tmp_path / "missing.pth")
    source = _source_model()
    model_pth, _ = fg_net_to_original(source)
    model_pth["interpreter"]["layer0.1.weight"] = torch.zeros(3, 3, 3, 3)
    report = load_original_fg_net(tiny_fg_net(), model_pth)
    assert any(k.startswith("layer0.1.weight") for k in report.interpreter.mismatched_keys)
    with pytest.raises(ValueError, match="no weights configured"):
        load_fg_net(dataclasses.replace(FGNetRunConfig(model=tiny_config()), tiny_random=False))
