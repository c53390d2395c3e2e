"""The MCDM's parts (spec §3, §9): adapter sizes and numbers, the widened conv_in, the context combinations, the nulls."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from genblocks.errors import InputError
from genblocks.tiny import random_sd15_base
from portrait_edit.config import tiny_config
from portrait_edit.modeling_portrait_edit import (
    EmbeddingAdapter,
    black_clip_pixels,
    build_adapter,
    build_random_components,
    combine_context,
    encode_image_tokens,
    null_pixels,
    widen_unet,
)


@pytest.fixture(scope="module")
def components():
    return build_random_components(tiny_config().model)


def test_tiny_adapter_has_the_spec_sizes(components) -> None:
    adapter = components.adapter
    assert (adapter.vae2clip.in_features, adapter.vae2clip.out_features) == (16, 32)
    assert (adapter.linear1.in_features, adapter.linear1.out_features) == (21, 17)
    assert torch.equal(adapter.linear1.weight, torch.eye(17, 21))
    assert components.unet.conv_in.in_channels == components.unet.config.in_channels == 8


def test_sd15_sizes_and_names_are_upstreams() -> None:
    adapter = EmbeddingAdapter(clip_tokens=50, clip_dim=768, latent_channels=4, latent_size=64, vae_pool=2)
    shapes = {name: tuple(value.shape) for name, value in adapter.state_dict().items()}
    assert shapes == {
        "vae2clip.weight": (768, 1024),
        "vae2clip.bias": (768,),
        "linear1.weight": (50, 54),
        "linear1.bias": (50,),
    }
    assert torch.equal(adapter.linear1.weight, torch.eye(50, 54))


def test_adapter_forward_matches_an_explicit_computation() -> None:
    torch.manual_seed(0)
    adapter = EmbeddingAdapter(clip_tokens=17, clip_dim=32, latent_channels=4, latent_size=8, vae_pool=2)
    with torch.no_grad():
        adapter.linear1.weight.normal_()
    clip, latents = torch.randn(2, 17, 32), torch.randn(2, 4, 8, 8)
    pooled = F.max_pool2d(latents, 2).reshape(2, 4, 16)
    vae_tokens = pooled @ adapter.vae2clip.weight.T + adapter.vae2clip.bias
    tokens = torch.cat([clip, vae_tokens], 1)  # (2, 21, 32)
    expected = torch.einsum("on,bnd->bod", adapter.linear1.weight, tokens) + adapter.linear1.bias[None, :, None]
    torch.testing.assert_close(adapter(clip, latents), expected, atol=1e-5, rtol=1e-5)


def test_identity_adapter_passes_clip_tokens_through() -> None:
    adapter = EmbeddingAdapter(clip_tokens=17, clip_dim=32, latent_channels=4, latent_size=8)
    with torch.no_grad():
        adapter.linear1.bias.zero_()
    clip = torch.randn(3, 17, 32)
    assert torch.equal(adapter(clip, torch.randn(3, 4, 8, 8)), clip)


def test_adapter_refuses_wrong_shapes() -> None:
    adapter = EmbeddingAdapter(clip_tokens=17, clip_dim=32, latent_channels=4, latent_size=8)
    with pytest.raises(InputError, match="clip_embeds"):
        adapter(torch.randn(1, 50, 32), torch.randn(1, 4, 8, 8))
    with pytest.raises(InputError, match="vae_latents"):
        adapter(torch.randn(1, 17, 32), torch.randn(1, 4, 16, 16))
    with pytest.raises(InputError, match="vae_pool"):
        EmbeddingAdapter(latent_size=9, vae_pool=2)


def test_add_combine_gets_the_text_token_count(components) -> None:
    adapter = build_adapter(
        components.image_encoder, components.vae, components.tokenizer, 64, combine_type="add", vae_pool=2
    )
    assert adapter.num_output_tokens == components.tokenizer.model_max_length == 16
    with pytest.raises(InputError, match="combine_type"):
        build_adapter(components.image_encoder, components.vae, components.tokenizer, 64, combine_type="sum")


def test_widening_keeps_the_pretrained_channels_and_bias() -> None:
    unet = random_sd15_base(tiny_config().model.random, 64, seed=0)[0]
    weight, bias = unet.conv_in.weight.clone(), unet.conv_in.bias.clone()
    x, t, context = torch.randn(1, 4, 8, 8), torch.tensor(10), torch.randn(1, 16, 32)
    with torch.no_grad():
        before = unet(x, t, encoder_hidden_states=context).sample
        widen_unet(unet)
        after = unet(torch.cat([x, torch.randn(1, 4, 8, 8)], 1), t, encoder_hidden_states=context).sample
    assert unet.config.in_channels == 8 and unet.conv_in.weight.shape[1] == 8
    assert torch.equal(unet.conv_in.weight[:, :4], weight)
    assert torch.equal(unet.conv_in.bias, bias)
    assert torch.count_nonzero(unet.conv_in.weight[:, 4:]) == 0
    torch.testing.assert_close(after, before, atol=1e-6, rtol=0)


def test_combine_context() -> None:
    text, image = torch.randn(2, 16, 32), torch.randn(2, 17, 32)
    concat = combine_context(text, image, "concat")
    assert concat.shape == (2, 33, 32) and torch.equal(concat[:, :16], text) and torch.equal(concat[:, 16:], image)
    assert torch.equal(combine_context(text, image, "img_only"), image)
    same = torch.randn(2, 16, 32)
    assert torch.equal(combine_context(text, same, "add"), text + same)
    with pytest.raises(InputError, match="add"):
        combine_context(text, image, "add")
    with pytest.raises(InputError, match="combine_type"):
        combine_context(text, image, "mean")


def test_nulls(components) -> None:
    assert torch.equal(null_pixels("black", 2, 8, 8), torch.full((2, 3, 8, 8), -1.0))
    assert torch.equal(null_pixels("grey", 1, 8, 8), torch.zeros(1, 3, 8, 8))
    with pytest.raises(InputError, match="null image"):
        null_pixels("white", 1, 8, 8)
    fe = components.feature_extractor
    pixels = black_clip_pixels(fe, 3)
    mean, std = torch.tensor(fe.image_mean), torch.tensor(fe.image_std)
    assert pixels.shape == (3, 3, 32, 32)
    torch.testing.assert_close(pixels, (-mean / std)[None, :, None, None].expand(3, 3, 32, 32))
    tokens = encode_image_tokens(components.image_encoder, components.adapter, pixels, torch.zeros(3, 4, 8, 8))
    assert tokens.shape == (3, 17, 32)
    torch.testing.assert_close(tokens[0], tokens[2], atol=1e-5, rtol=0)
