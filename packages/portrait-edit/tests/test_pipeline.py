"""PortraitEditPipeline on tiny random components (spec §5, §9): the pipeline contract, the 4-way CFG branches, the
edit mask and mask-guided sampling, nulls and image latents, bad input."""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import numpy as np
import PIL.Image
import pytest
import torch

from genblocks.diffusion import vae_encode
from genblocks.errors import InputError
from genblocks.testing.pipelines import PipelineTesterMixin
from portrait_edit.config import tiny_config
from portrait_edit.modeling_portrait_edit import (
    black_clip_pixels,
    build_adapter,
    build_random_components,
    encode_image_tokens,
    null_pixels,
)
from portrait_edit.pipeline_portrait_edit import PortraitEditPipeline

PROMPT, SOURCE_PROMPT = "a man, santa claus costume", "a man"
SCALES = (3.0, 2.0, 4.0)

_BASE: dict[str, PortraitEditPipeline] = {}


def tiny_pipeline(combine_type: str = "concat") -> PortraitEditPipeline:
    """A fresh copy of the seeded tiny pipeline (built once per combine type)."""
    if combine_type not in _BASE:
        model = tiny_config().model
        components = build_random_components(model)
        if combine_type != "concat":
            components.adapter = build_adapter(
                components.image_encoder, components.vae, components.tokenizer, 64, combine_type
            )
        pipe = PortraitEditPipeline(**components.as_dict(), combine_type=combine_type)
        pipe.set_progress_bar_config(disable=True)
        _BASE[combine_type] = pipe
    return copy.deepcopy(_BASE[combine_type])


def portrait(seed: int = 0) -> PIL.Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    return PIL.Image.fromarray(pixels)


def call_inputs(seed: int = 0, **overrides: Any) -> dict[str, Any]:
    inputs: dict[str, Any] = {
        "image": portrait(),
        "prompt": PROMPT,
        "source_prompt": SOURCE_PROMPT,
        "num_inference_steps": 2,
        "mask_samples": 2,
        "generator": torch.Generator().manual_seed(seed),
        "output_type": "pt",
    }
    inputs.update(overrides)
    return inputs


@pytest.fixture(scope="module")
def pipe() -> PortraitEditPipeline:
    return tiny_pipeline()


@pytest.fixture(scope="module")
def conditions(pipe: PortraitEditPipeline):
    pixels, clip_values = pipe.preprocess_image(portrait(), 64, 64, torch.device("cpu"), torch.float32)
    return pipe.prepare_image_conditions(pixels, clip_values, image_latents="mean")


class TestPortraitEditPipeline(PipelineTesterMixin):
    pipeline_class = PortraitEditPipeline
    expected_slice: ClassVar[list[list[float]]] = [
        [0.7033, 0.6888, 0.6158],
        [0.5954, 0.4681, 0.4637],
        [0.5320, 0.4064, 0.4716],
    ]

    def get_pipeline(self) -> PortraitEditPipeline:
        return tiny_pipeline()

    def get_inputs(self, seed: int = 0) -> dict[str, Any]:
        return call_inputs(seed)

    def get_batch_inputs(self, seed: int = 0) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        images, prompts = [portrait(0), portrait(1)], [PROMPT, "a man, cute flower costume"]
        singles = [
            call_inputs(image=images[i], prompt=prompts[i], generator=torch.Generator().manual_seed(seed + i))
            for i in range(2)
        ]
        generators = [torch.Generator().manual_seed(seed + i) for i in range(2)]
        return singles, call_inputs(image=images, prompt=prompts, generator=generators)


# ----------------------------------------------------------------------------------------------------------------------
# 4-way nested CFG
# ----------------------------------------------------------------------------------------------------------------------


class UNetSpy:
    """Records the UNet's inputs and outputs."""

    def __init__(self, pipe: PortraitEditPipeline) -> None:
        self.calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        unet = pipe.unet
        forward = unet.forward

        def spy(sample: torch.Tensor, timestep: Any, encoder_hidden_states: torch.Tensor, **kwargs: Any) -> Any:
            out = forward(sample, timestep, encoder_hidden_states=encoder_hidden_states, **kwargs)
            self.calls.append((sample, encoder_hidden_states, out.sample))
            return out

        unet.forward = spy  # type: ignore[method-assign]


def test_each_cfg_branch_gets_the_spec_inputs(conditions) -> None:
    pipe = tiny_pipeline()
    spy = UNetSpy(pipe)
    device = torch.device("cpu")
    text, null_text = pipe.encode_prompts([PROMPT], device), pipe.encode_prompts([""], device)
    latents = torch.randn(1, 4, 8, 8)
    t = torch.tensor(500)
    with torch.no_grad():
        (guided,) = pipe.guided_noise([latents], [text], null_text, conditions, t, SCALES)
    sample, context, out = spy.calls[0]
    assert sample.shape == (4, 8, 8, 8) and context.shape == (4, 16 + 17, 32)
    for row in range(4):  # the noisy latent in every branch
        assert torch.equal(sample[row, :4], latents[0])
    c = conditions
    # upstream's order [null, all, img, img+concat]: concat [0, src, 0, src], text [neg, prompt, neg, neg],
    # image tokens [null, img, img, img]
    expected_concat = [torch.zeros(4, 8, 8), c.latents[0], torch.zeros(4, 8, 8), c.latents[0]]
    expected_text = [null_text[0], text[0], null_text[0], null_text[0]]
    expected_tokens = [c.null_tokens[0], c.tokens[0], c.tokens[0], c.tokens[0]]
    for row in range(4):
        assert torch.equal(sample[row, 4:], expected_concat[row])
        assert torch.equal(context[row, :16], expected_text[row])
        assert torch.equal(context[row, 16:], expected_tokens[row])
    null, everything, image, image_concat = out.chunk(4)
    s1, s2, s3 = SCALES
    manual = null + s1 * (image - null) + s2 * (image_concat - image) + s3 * (everything - image_concat)
    torch.testing.assert_close(guided, manual, atol=1e-6, rtol=0)
    assert not torch.allclose(c.null_tokens, c.tokens, atol=1e-3)


def test_unit_scales_give_the_all_condition_prediction(pipe, conditions) -> None:
    device = torch.device("cpu")
    text, null_text = pipe.encode_prompts([PROMPT], device), pipe.encode_prompts([""], device)
    latents, t = torch.randn(1, 4, 8, 8), torch.tensor(500)
    with torch.no_grad():
        (plain,) = pipe.guided_noise([latents], [text], null_text, conditions, t, (1.0, 1.0, 1.0))
        direct = pipe.unet(
            torch.cat([latents, conditions.latents], 1),
            t,
            encoder_hidden_states=torch.cat([text, conditions.tokens], 1),
        ).sample
        (guided,) = pipe.guided_noise([latents], [text], null_text, conditions, t, (1.0, 1.0, 4.0))
    torch.testing.assert_close(plain, direct, atol=1e-6, rtol=0)
    # the nested formula telescopes to eps_all at (1, 1, 1); (1, 1, 4) guides the text (upstream would not)
    assert (guided - plain).abs().max() > 1e-3


# ----------------------------------------------------------------------------------------------------------------------
# Edit mask and mask-guided sampling
# ----------------------------------------------------------------------------------------------------------------------


def test_mask_is_soft_with_the_latent_shape_and_zero_for_identical_prompts(pipe) -> None:
    out = pipe(**call_inputs(output_type="latent"))
    assert out.masks.shape == (1, 1, 8, 8)
    assert out.masks.min() >= 0 and out.masks.max() <= 1 and out.masks.max() > 0
    # divided by 3x its mean after clamping there: the mask's mean is at most 1/3
    assert 0 < out.masks.mean() <= 1 / 3 + 1e-6
    same = pipe(**call_inputs(prompt=SOURCE_PROMPT, output_type="latent"))
    assert not torch.isnan(same.masks).any()
    assert torch.equal(same.masks, torch.zeros(1, 1, 8, 8))


def test_mask_samples_are_independent(pipe, conditions) -> None:
    device = torch.device("cpu")
    target, source = pipe.encode_prompts([PROMPT], device), pipe.encode_prompts([SOURCE_PROMPT], device)
    null = pipe.encode_prompts([""], device)
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    kwargs = {"guidance_scales": SCALES, "mask_strength": 0.5, "mask_steps": 50, "mask_clamp": 3.0}
    one = pipe.generate_mask(conditions, target, source, null, mask_samples=1, noise=noise[:1], **kwargs)
    repeated = pipe.generate_mask(conditions, target, source, null, mask_samples=2, noise=noise[[0, 0]], **kwargs)
    two = pipe.generate_mask(conditions, target, source, null, mask_samples=2, noise=noise, **kwargs)
    torch.testing.assert_close(repeated, one, atol=1e-4, rtol=0)  # batch composition only
    assert (two - one).abs().max() > 1e-3
    drawn = pipe.generate_mask(
        conditions, target, source, null, mask_samples=2, generator=torch.Generator().manual_seed(3), **kwargs
    )
    torch.testing.assert_close(drawn, two, atol=0, rtol=0)  # the generator draws (samples, 4, h, w) per image


@pytest.mark.parametrize("blend", ["latent", "eps"])
def test_all_ones_mask_equals_unmasked_sampling(pipe, blend: str) -> None:
    unmasked = pipe(**call_inputs(use_mask=False, output_type="latent")).images
    ones = pipe(**call_inputs(mask=torch.ones(1, 1, 8, 8), mask_blend=blend, output_type="latent")).images
    # the masked call batches the reconstruction run beside the edit, so its GEMMs take other kernel paths: 4.3e-5 on an
    # AVX-512 Xeon after the tiny schedule's steps, ~1e-6 elsewhere
    torch.testing.assert_close(ones, unmasked, atol=2e-4, rtol=0)


def test_outside_the_mask_the_latents_are_the_reconstruction_run(pipe) -> None:
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 2:6, 2:6] = 1.0
    out = pipe(**call_inputs(mask=mask, output_type="latent"))
    outside = (mask == 0).expand(1, 4, 8, 8)
    assert torch.equal(out.images[outside], out.reconstructions[outside])
    assert (out.images - out.reconstructions)[~outside].abs().max() > 1e-3
    alone = pipe(**call_inputs(prompt=SOURCE_PROMPT, use_mask=False, output_type="latent")).images
    torch.testing.assert_close(out.reconstructions, alone, atol=2e-4, rtol=0)  # batched vs alone, as above


# ----------------------------------------------------------------------------------------------------------------------
# Nulls, image latents, combine types
# ----------------------------------------------------------------------------------------------------------------------


def test_null_modes(pipe) -> None:
    device = torch.device("cpu")
    pixels, clip_values = pipe.preprocess_image(portrait(), 64, 64, device, torch.float32)
    black_clip = black_clip_pixels(pipe.feature_extractor, 1)
    for mode, kind in (("upstream", "black"), ("matched", "grey")):
        c = pipe.prepare_image_conditions(pixels, clip_values, null_mode=mode, image_latents="mean")
        null_latents = vae_encode(pipe.vae, null_pixels(kind, 1, 64, 64), sample=False)
        expected_tokens = encode_image_tokens(pipe.image_encoder, pipe.adapter, black_clip, null_latents)
        torch.testing.assert_close(c.null_tokens, expected_tokens, atol=1e-6, rtol=0)
        expected_concat = torch.zeros(1, 4, 8, 8) if mode == "upstream" else null_latents
        torch.testing.assert_close(c.null_latents, expected_concat, atol=1e-6, rtol=0)
    assert not torch.allclose(vae_encode(pipe.vae, null_pixels("grey", 1, 64, 64), sample=False), torch.zeros(1))


def test_image_latents_modes(pipe) -> None:
    device = torch.device("cpu")
    pixels, clip_values = pipe.preprocess_image(portrait(), 64, 64, device, torch.float32)
    mean = pipe.prepare_image_conditions(pixels, clip_values, image_latents="mean").latents
    torch.testing.assert_close(mean, vae_encode(pipe.vae, pixels, sample=False), atol=0, rtol=0)
    first = pipe.prepare_image_conditions(pixels, clip_values, generator=torch.Generator().manual_seed(1)).latents
    again = pipe.prepare_image_conditions(pixels, clip_values, generator=torch.Generator().manual_seed(1)).latents
    assert torch.equal(first, again) and not torch.allclose(first, mean, atol=1e-4)
    given = torch.randn(1, 4, 8, 8)
    assert torch.equal(pipe.prepare_image_conditions(pixels, clip_values, image_latents=given).latents, given)


def test_passed_image_latents_fix_the_result(pipe) -> None:
    given, null = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    kwargs = {"use_mask": False, "output_type": "latent", "image_latents": given, "negative_image_latents": null}
    first = pipe(**call_inputs(seed=0, latents=torch.ones(1, 4, 8, 8), **kwargs)).images
    second = pipe(**call_inputs(seed=5, latents=torch.ones(1, 4, 8, 8), **kwargs)).images
    assert torch.equal(first, second)  # nothing else is drawn


@pytest.mark.parametrize("combine_type", ["add", "img_only"])
def test_other_combine_types_run(combine_type: str) -> None:
    other = tiny_pipeline(combine_type)
    out = other(**call_inputs(output_type="latent"))
    assert out.images.shape == (1, 4, 8, 8) and torch.isfinite(out.images).all()


def test_empty_prompt_is_valid(pipe) -> None:
    out = pipe(**call_inputs(prompt="", use_mask=False, output_type="latent"))
    assert torch.isfinite(out.images).all()


def test_outputs_in_every_type(pipe) -> None:
    out = pipe(**call_inputs(output_type="pil", use_mask=False))
    assert isinstance(out.images[0], PIL.Image.Image) and out.images[0].size == (64, 64)
    assert out.masks is None and out.reconstructions is None
    images, masks, reconstructions = pipe(**call_inputs(output_type="np", return_dict=False))
    assert images.shape == (1, 64, 64, 3) and reconstructions.shape == (1, 64, 64, 3) and masks.shape == (1, 1, 8, 8)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"image": "face.png"}, "image"),
        ({"image": torch.rand(1, 4, 64, 64)}, "image"),
        ({"source_prompt": None}, "source_prompt"),
        ({"prompt": ["a", "b"]}, "prompt"),
        ({"height": 60, "width": 60}, "height"),
        ({"height": 128, "width": 128}, "height"),
        ({"mask": torch.ones(1, 1, 4, 4)}, "mask"),
        ({"mask_blend": "pixel"}, "mask_blend"),
        ({"mask_strength": 0.0}, "mask_strength"),
        ({"null_mode": "grey"}, "null_mode"),
        ({"image_latents": "mode"}, "image_latents"),
        ({"image_latents": torch.zeros(1, 4, 4, 4)}, "image_latents"),
    ],
)
def test_bad_input_names_the_argument(pipe, overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=message):
        pipe(**call_inputs(**overrides))


def test_combine_type_survives_save_and_load(tmp_path) -> None:
    other = tiny_pipeline("add")
    other.save_pretrained(tmp_path / "pipe")
    loaded = PortraitEditPipeline.from_pretrained(tmp_path / "pipe")
    assert loaded.config.combine_type == "add"
    assert loaded.adapter.num_output_tokens == 16
