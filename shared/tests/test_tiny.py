"""The tiny seeded components behind every package's `--config tiny` and its tests."""

from __future__ import annotations

import pytest
import torch

from genblocks.tiny import (
    RandomComponentsConfig,
    random_sd15_base,
    tiny_clip_tokenizer,
    tiny_controlnet,
    tiny_sd15_components,
    tiny_sdxl_text_encoders,
    tiny_sdxl_unet,
    tiny_unet,
)


def test_same_seed_same_weights_other_seed_differs() -> None:
    a, b, c = tiny_unet(0), tiny_unet(0), tiny_unet(1)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb), name
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters(), strict=True))


def test_sd15_components_shapes() -> None:
    parts = tiny_sd15_components()
    ids = parts.tokenizer(["a face"], padding="max_length", max_length=16, return_tensors="pt").input_ids
    assert ids.shape == (1, 16)
    context = parts.text_encoder(ids)[0]
    assert context.shape == (1, 16, 32)
    latents = parts.vae.encode(torch.randn(1, 3, 16, 16)).latent_dist.mean
    assert latents.shape == (1, 4, 8, 8)
    assert parts.unet(latents, 10, encoder_hidden_states=context).sample.shape == (1, 4, 8, 8)
    assert parts.scheduler.config.steps_offset == 1


def test_controlnet_any_channel_count_and_sdxl_unet() -> None:
    unet = tiny_unet()
    net = tiny_controlnet(unet, conditioning_channels=5)
    down, mid = net(
        torch.randn(2, 4, 8, 8),
        10,
        encoder_hidden_states=torch.randn(2, 3, 32),
        controlnet_cond=torch.randn(2, 5, 64, 64),
        return_dict=False,
    )
    assert len(down) == 4 and mid.shape == (2, 64, 4, 4)
    xl = tiny_sdxl_unet()
    out = xl(
        torch.randn(2, 4, 8, 8),
        10,
        encoder_hidden_states=torch.randn(2, 7, 64),
        added_cond_kwargs={"text_embeds": torch.randn(2, 32), "time_ids": torch.randn(2, 6)},
    ).sample
    assert out.shape == (2, 4, 8, 8)


def test_sdxl_text_encoders_feed_the_sdxl_unet() -> None:
    first, second = tiny_sdxl_text_encoders()
    ids = tiny_clip_tokenizer()(["a group photo"], padding="max_length", max_length=16, return_tensors="pt").input_ids
    hidden_first = first(ids, output_hidden_states=True).hidden_states[-2]
    out_second = second(ids, output_hidden_states=True)
    context = torch.cat([hidden_first, out_second.hidden_states[-2]], dim=-1)
    assert context.shape == (1, 16, 64) and out_second.text_embeds.shape == (1, 32)
    sample = tiny_sdxl_unet()(
        torch.randn(1, 4, 8, 8),
        10,
        encoder_hidden_states=context,
        added_cond_kwargs={"text_embeds": out_second.text_embeds, "time_ids": torch.zeros(1, 6)},
    ).sample
    assert sample.shape == (1, 4, 8, 8) and torch.isfinite(sample).all()


def test_random_sd15_base_is_seeded_and_sized_from_the_config() -> None:
    config = RandomComponentsConfig()
    unet, vae, text_encoder, tokenizer, scheduler = random_sd15_base(config, resolution=64, seed=3)
    again = random_sd15_base(config, resolution=64, seed=3)[0]
    assert all(torch.equal(p, q) for p, q in zip(unet.parameters(), again.parameters(), strict=True))
    assert unet.config.sample_size == 64 // 8 and vae.config.sample_size == 64
    assert tuple(unet.config.block_out_channels) == config.block_out_channels
    assert text_encoder.config.hidden_size == config.cross_attention_dim == unet.config.cross_attention_dim
    assert tokenizer.model_max_length > 0 and scheduler.config.steps_offset == 1
    latents = torch.randn(1, 4, 8, 8)
    text = torch.randn(1, 3, config.cross_attention_dim)
    with torch.no_grad():
        assert unet(latents, 10, text).sample.shape == latents.shape
    with pytest.raises(ValueError, match="VAE factor 8"):
        random_sd15_base(config, resolution=60)
