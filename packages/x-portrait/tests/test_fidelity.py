"""Fidelity to the authors' sampling code (bytedance/X-Portrait ``core/test_xportrait.py`` and
``model_lib/ControlNet/ldm/models/diffusion/ddim.py``): the ``balance`` guidance mode, how the VAE posterior is
sampled, and clips no longer than the window."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from xp_testing import PATCH, RESOLUTION, randomize_motion_modules, tiny_components, tiny_video

from genblocks.diffusion.sampling import set_ldm_timesteps
from genblocks.testing.controlnets import randomize_controlnet_outputs
from x_portrait.pipeline_x_portrait import XPortraitPipeline


def _pipeline() -> XPortraitPipeline:
    components = tiny_components(seed=0)
    randomize_motion_modules(components)
    # zero output convolutions would hide every hint (even an all-zero one) from the UNet
    randomize_controlnet_outputs([components.motion_controlnet, components.local_controlnet])
    pipe = XPortraitPipeline(**components.as_dict(), patch_size=PATCH, landmark_scale=2)
    pipe.set_progress_bar_config(disable=True)
    return pipe


class _ReferenceSpy:
    """Records every ``write_reference`` call of a pipeline's model (and still writes the bank)."""

    def __init__(self, pipe: XPortraitPipeline) -> None:
        self.calls: list[tuple[torch.Tensor, Any, torch.Tensor]] = []
        self._write = pipe.model.write_reference
        pipe.model.write_reference = self  # type: ignore[method-assign]

    def __call__(self, latents: torch.Tensor, timestep: Any, text: torch.Tensor) -> None:
        self.calls.append((latents.clone(), timestep, text.clone()))
        self._write(latents, timestep, text)


def test_balance_guidance_matches_the_formula_on_numbers() -> None:
    """One DDIM step with ``guidance_mode="balance"`` equals, to float precision, the step written out here:

    eps_c = model(x, t, text, bank, motion hint, local hint)
    eps_u = model(x, t, empty text, bank, zeros, zeros)        # upstream's uc: image_control kept, hints zeros_like
    eps   = eps_u + s * (eps_c - eps_u)
    x0    = (x - sqrt(1 - a_t) * eps) / sqrt(a_t);  x_prev = sqrt(a_prev) * x0 + sqrt(1 - a_prev) * eps
    """
    pipe = _pipeline()
    source, driving, source_lm, driving_lm = tiny_video(3)
    start = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    scale = 5.0
    options = {
        "source_landmarks": source_lm, "driving_landmarks": driving_lm, "num_inference_steps": 1,
        "guidance_scale": scale, "window_size": 4, "window_overlap": 2, "output_type": "latent",
    }  # fmt: skip
    spy = _ReferenceSpy(pipe)
    out = pipe(source, driving, latents=start.clone(), guidance_mode="balance", generator=torch.Generator(), **options)
    assert len(spy.calls) == 1  # one step, one window
    reference_latents, _, reference_text = spy.calls[0]

    # the reference computation, from the formula
    inputs = pipe.prepare_inputs(source, driving, RESOLUTION, source_lm, driving_lm)
    (t,) = set_ldm_timesteps(copy.deepcopy(pipe.scheduler), 1)
    text = pipe.encode_prompt("", torch.device("cpu")).expand(3, -1, -1)
    model = pipe.model
    with torch.no_grad():
        model.write_reference(reference_latents, t, reference_text)
        eps_c = model(start, t, text, num_frames=3, motion_image=inputs.driving, local_image=inputs.local)
        zeros = torch.zeros_like(inputs.driving)
        eps_u = model(start, t, text, num_frames=3, motion_image=zeros, local_image=zeros)
        bare = model.unconditional(start, t, text, num_frames=3)
        model.clear_reference()
    eps = eps_u + scale * (eps_c - eps_u)
    alphas = pipe.scheduler.alphas_cumprod
    a_t, a_prev = alphas[int(t)], alphas[0]  # LDM's last step goes to alphas_cumprod[0]
    x0 = (start - (1 - a_t).sqrt() * eps) / a_t.sqrt()
    expected = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
    torch.testing.assert_close(out.frames, expected, atol=1e-5, rtol=1e-5)

    # the two unconditional passes really differ, and so do the modes' results
    assert float((eps_u - bare).abs().max()) > 1e-2
    important = pipe(source, driving, latents=start.clone(), generator=torch.Generator(), **options).frames
    assert float((important - expected).abs().max()) > 1e-3


def test_guidance_mode_is_validated_and_reaches_the_pipeline_from_the_config() -> None:
    from genblocks.cli import load_command_config
    from x_portrait.config import XPortraitConfig
    from x_portrait.pipeline_x_portrait import sampling_options

    config, _ = load_command_config(
        XPortraitConfig, "x_portrait", "animate", "tiny", ["inference.guidance_mode=balance"]
    )
    assert sampling_options(config)["guidance_mode"] == "balance"
    paper, _ = load_command_config(XPortraitConfig, "x_portrait", "animate", "paper", [])
    assert sampling_options(paper)["guidance_mode"] == "controlnet_important"  # upstream's default
    with pytest.raises(Exception, match="guidance_mode"):
        load_command_config(XPortraitConfig, "x_portrait", "animate", "tiny", ["inference.guidance_mode=both"])
    pipe = _pipeline()
    source, driving, _, _ = tiny_video(2)
    with pytest.raises(ValueError, match="guidance_mode"):
        pipe(source, driving, align_driving=False, local_patches=False, num_inference_steps=1, guidance_mode="both")


def test_encode_source_draws_what_encoding_one_copy_per_frame_draws() -> None:
    """Upstream encodes one copy of the source per frame and samples each posterior: identical images, different
    latents. ``encode_source`` gives exactly those draws from one encoder pass."""
    from genblocks.diffusion import vae_encode

    pipe = _pipeline()
    source = torch.rand(1, 3, RESOLUTION, RESOLUTION, generator=torch.Generator().manual_seed(4)) * 2 - 1
    ours = pipe.encode_source(source, 3, torch.Generator().manual_seed(5))
    copies = vae_encode(pipe.vae, source.expand(3, -1, -1, -1), generator=torch.Generator().manual_seed(5))
    assert ours.shape == (3, 4, 8, 8)
    torch.testing.assert_close(ours, copies, atol=1e-5, rtol=1e-5)
    for i, j in ((0, 1), (0, 2), (1, 2)):
        assert float((ours[i] - ours[j]).abs().max()) > 1e-2  # one sample per frame, not one shared
    mean = vae_encode(pipe.vae, source, sample=False)
    spread = pipe.encode_source(source, 256, torch.Generator().manual_seed(6)).mean(0, keepdim=True)
    assert float((spread - mean).abs().max()) < 0.25 * float((ours - mean).abs().max())  # draws around the mean


@pytest.mark.parametrize("vae_sample", ["per_frame", "shared"])
def test_pipeline_samples_the_posterior_as_configured(vae_sample: str) -> None:
    """``per_frame`` (upstream): each frame keeps its own reference sample through every window and step, and the start
    latents use another, independent sample per frame; ``shared``: one sample for every frame and both uses."""
    pipe = _pipeline()
    spy = _ReferenceSpy(pipe)
    starts: list[torch.Tensor] = []
    prepare = pipe.prepare_latents

    def record(clean: torch.Tensor, *args: Any) -> torch.Tensor:
        starts.append(clean.clone())
        return prepare(clean, *args)

    pipe.prepare_latents = record  # type: ignore[method-assign]
    source, driving, source_lm, driving_lm = tiny_video(6)
    pipe(
        source, driving, source_landmarks=source_lm, driving_landmarks=driving_lm, num_inference_steps=2,
        window_size=4, window_overlap=2, vae_sample=vae_sample, generator=torch.Generator().manual_seed(0),
        output_type="latent",
    )  # fmt: skip
    (start,) = starts
    rows = torch.cat([latents for latents, _, _ in spy.calls]).flatten(1)
    distinct = torch.unique(rows, dim=0)
    if vae_sample == "shared":
        assert len(spy.calls) == 2 and all(latents.shape[0] == 1 for latents, _, _ in spy.calls)  # once per step
        assert len(distinct) == 1 and start.shape == (1, 4, 8, 8)
        torch.testing.assert_close(start.flatten(1), distinct)  # the same sample starts every frame
    else:
        assert len(spy.calls) > 2 and all(latents.shape[0] <= 4 for latents, _, _ in spy.calls)  # per window
        assert len(distinct) == 6  # one sample per frame, the same in every window and step
        assert start.shape == (6, 4, 8, 8) and len(torch.unique(start.flatten(1), dim=0)) == 6
        nearest = torch.cdist(start.flatten(1), distinct).min(dim=1).values
        assert float(nearest.min()) > 1e-2  # the start latents' samples are independent of the reference's


@pytest.mark.parametrize("num_frames", [1, 2, 4])
def test_a_clip_no_longer_than_the_window_is_one_ordered_window(num_frames: int, monkeypatch) -> None:
    """Upstream rotates a random offset even when the clip fits one window: with F <= num_overlap no window runs and
    the output is 0 / 0 = NaN; with F < window a window repeats frames; with F == window the frames arrive rotated.
    Here such a clip is one window of its frames in order, every step, whatever the offset setting."""
    import x_portrait.pipeline_x_portrait as module

    windows_seen: list[list[list[int]]] = []
    denoise = module.denoise_windows

    def record(predict: Any, latents: torch.Tensor, windows: list[list[int]], **kwargs: Any) -> torch.Tensor:
        windows_seen.append([list(w) for w in windows])
        return denoise(predict, latents, windows, **kwargs)

    monkeypatch.setattr(module, "denoise_windows", record)
    pipe = _pipeline()
    source, driving, source_lm, driving_lm = tiny_video(num_frames)
    options = {
        "source_landmarks": source_lm, "driving_landmarks": driving_lm, "num_inference_steps": 2,
        "window_size": 4, "window_overlap": 2, "output_type": "pt",
    }  # fmt: skip
    frames = pipe(source, driving, generator=torch.Generator().manual_seed(0), **options).frames
    assert windows_seen == [[list(range(num_frames))]] * 2  # one window, each frame once, in order, both steps
    assert frames.shape == (num_frames, 3, RESOLUTION, RESOLUTION) and torch.isfinite(frames).all()
    for i in range(num_frames):
        for j in range(i + 1, num_frames):
            assert float((frames[i] - frames[j]).abs().max()) > 1e-3, (i, j)  # no duplicated frames
    fixed = pipe(source, driving, generator=torch.Generator().manual_seed(0), random_window_offset=False, **options)
    torch.testing.assert_close(fixed.frames, frames)  # no offset is drawn or applied
