"""The 2-D starting points of the style prior: a rosinality StyleGAN2 checkpoint (``g_ema`` + ``latent_avg``) and a
pSp checkpoint (``{opts, state_dict, latent_avg}``), written here from seeded tiny networks and read back bit-exactly
through ``prior.generator`` / ``prior.encoder``."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from agilegan3d.config import load_preset
from agilegan3d.modeling_agilegan3d import build_prior_encoder, build_prior_generator
from genblocks.errors import InputError
from genblocks.gan.convert import generator_to_rosinality


def test_rosinality_generator_loads_bit_exactly(tmp_path: Path) -> None:
    prior = load_preset("tiny").prior
    source = build_prior_generator(prior, seed=11)
    with torch.no_grad():
        source.mapping.w_avg.normal_()
    path = tmp_path / "ffhq.pt"
    torch.save({"g_ema": generator_to_rosinality(source), "latent_avg": source.mapping.w_avg.clone()}, path)
    loaded = build_prior_generator(dataclasses.replace(prior, generator=str(path)), seed=0)
    expected, got = source.state_dict(), loaded.state_dict()
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    z = torch.randn(2, prior.z_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(source(z, None, noise_mode="const"), loaded(z, None, noise_mode="const"))


def test_foreign_generator_checkpoint_names_the_field(tmp_path: Path) -> None:
    prior = load_preset("tiny").prior
    path = tmp_path / "other.pt"
    torch.save({"g_ema": {"style.1.weight": torch.zeros(3, 3)}}, path)
    with pytest.raises(InputError, match=r"prior.generator .*other.pt: \d+ keys do not fit"):
        build_prior_generator(dataclasses.replace(prior, generator=str(path)))


def test_psp_encoder_loads_bit_exactly(tmp_path: Path) -> None:
    prior = load_preset("tiny").prior
    num_ws = build_prior_generator(prior).num_ws
    source = build_prior_encoder(prior, num_ws, seed=12)
    state = {f"encoder.{k}": v for k, v in source.state_dict().items() if k != "latent_avg"}
    latent_avg = torch.randn(num_ws, prior.w_dim)
    path = tmp_path / "psp.pt"
    torch.save({"opts": {"output_size": prior.resolution}, "state_dict": state, "latent_avg": latent_avg}, path)
    loaded = build_prior_encoder(dataclasses.replace(prior, encoder=str(path)), num_ws, seed=0)
    got = loaded.state_dict()
    assert all(torch.equal(v, got[k]) for k, v in source.state_dict().items() if k != "latent_avg")
    assert torch.equal(got["latent_avg"].reshape(num_ws, -1), latent_avg)
