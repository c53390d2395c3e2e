"""The shipped configs load onto the schema, hold the spec's values, and bad values are refused naming their key."""

from __future__ import annotations

import pytest

from genblocks.config import load_config
from genblocks.errors import InputError
from portrait_edit.config import PortraitEditConfig, paper_config, tiny_config


def test_paper_holds_the_spec_values() -> None:
    config = paper_config()
    sampling = config.sampling
    assert sampling.num_inference_steps == 20
    assert sampling.guidance_scales == (3.0, 2.0, 4.0)
    assert (sampling.null_mode, sampling.image_latents, sampling.mask_blend) == ("upstream", "sample", "latent")
    assert (sampling.use_mask, sampling.mask_strength, sampling.mask_samples, sampling.mask_clamp) == (
        True,
        0.5,
        10,
        3.0,
    )
    train = config.train
    assert (train.optimizer.name, train.optimizer.lr, train.optimizer.weight_decay) == ("adamw", 5e-6, 1e-2)
    assert (train.gradient_clip_val, train.batch_size, train.reconstruction_prob) == (1.0, 4, 0.05)
    assert (train.drop_concat, train.drop_image, train.drop_text, train.drop_all) == (0.05, 0.05, 0.05, 0.05)
    assert train.condition_dropout == pytest.approx(0.2)
    assert (config.model.resolution, config.model.clip_image_size, config.model.vae_pool) == (512, 224, 2)
    assert config.model.combine_type == "concat"


def test_tiny_is_the_spec_test_configuration() -> None:
    config = tiny_config()
    assert config.model.source == "random"
    assert config.model.random.block_out_channels == (32, 64)
    assert config.model.random.cross_attention_dim == config.model.random_clip.hidden_size == 32
    assert (config.model.clip_image_size, config.model.random_clip.patch_size) == (32, 8)
    assert config.sampling.num_inference_steps == 2
    assert config.sampling.guidance_scales == (3.0, 2.0, 4.0)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("sampling.mask_strength=0", "sampling.mask_strength"),
        ("sampling.mask_samples=0", "sampling.mask_samples"),
        ("train.drop_text=1.5", "train.drop_text"),
        ("train.drop_all=0.9", "train.drop_*"),
        ("model.resolution=-8", "model.resolution"),
        ("model.random_clip.hidden_size=16", "model.random_clip.hidden_size"),
        ("pairs.identity_threshold=2", "pairs.identity_threshold"),
        ("pairs.identity_max_distance=0", "pairs.identity_max_distance"),
    ],
)
def test_bad_values_name_their_key(override: str, key: str) -> None:
    from genblocks.cli import resolve_config

    with pytest.raises(InputError, match=key.replace("*", r"\*")):
        load_config(PortraitEditConfig, resolve_config("portrait_edit", "edit", "tiny"), [override])


def test_literal_fields_refuse_unknown_values() -> None:
    with pytest.raises(InputError, match="null_mode"):
        load_config(PortraitEditConfig, None, ["sampling.null_mode=grey"])
    with pytest.raises(InputError, match="combine_type"):
        load_config(PortraitEditConfig, None, ["model.combine_type=sum"])
    with pytest.raises(InputError, match="edit_region"):
        load_config(PortraitEditConfig, None, ["pairs.edit_region=hair"])


def test_pair_filter_fields_default_to_dlib_and_outfit_edits() -> None:
    pairs = paper_config().pairs
    assert (pairs.identity_max_distance, pairs.identity_threshold, pairs.edit_region) == (0.6, 0.6, "outfit")
    assert (
        load_config(PortraitEditConfig, None, ["pairs.identity_max_distance=null"]).pairs.identity_max_distance is None
    )
