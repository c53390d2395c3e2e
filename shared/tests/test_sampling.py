"""LDM DDIM preset, q-sample start latents, sliding windows, multi-condition CFG and chunked VAE coding."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from genblocks.diffusion.sampling import (
    LdmDdimConfig,
    denoise_windows,
    encode_clip_prompt,
    ldm_ddim_scheduler,
    nested_branches,
    nested_cfg,
    plain_cfg,
    q_sample_start,
    set_ldm_timesteps,
    shift_snr,
    sliding_windows,
    vae_decode_chunked,
    vae_encode,
)
from genblocks.tiny import tiny_clip_text_encoder, tiny_clip_tokenizer, tiny_vae


def ldm_make_ddim_timesteps(num_ddim_timesteps: int, num_ddpm_timesteps: int = 1000) -> list[int]:
    """LDM ``make_ddim_timesteps("uniform")``."""
    c = num_ddpm_timesteps // num_ddim_timesteps
    return [t + 1 for t in range(0, num_ddpm_timesteps, c)]


# ---------------------------------------------------------------------------------------------------------------- DDIM


def test_ldm_ddim_betas_equal_ldm_linear_schedule():
    scheduler = ldm_ddim_scheduler()
    ldm_betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=np.float64) ** 2  # LDM make_beta_schedule("linear")
    np.testing.assert_allclose(scheduler.betas.double().numpy(), ldm_betas, rtol=1e-6, atol=0)
    np.testing.assert_allclose(scheduler.alphas_cumprod.double().numpy(), np.cumprod(1 - ldm_betas), rtol=1e-5)
    assert scheduler.config.clip_sample is False
    assert scheduler.config.set_alpha_to_one is False
    assert scheduler.final_alpha_cumprod.item() == scheduler.alphas_cumprod[0].item()  # LDM alphas_prev[0]
    assert scheduler.config.prediction_type == "epsilon"


def test_ldm_ddim_timesteps_leading_offset_one():
    scheduler = ldm_ddim_scheduler()
    scheduler.set_timesteps(50)
    assert scheduler.timesteps.tolist() == list(range(981, 0, -20))
    assert scheduler.timesteps.tolist() == ldm_make_ddim_timesteps(50)[::-1]


def test_set_ldm_timesteps_matches_ldm_for_any_step_count():
    scheduler = ldm_ddim_scheduler()
    for steps in (25, 30, 50, 7):
        timesteps = set_ldm_timesteps(scheduler, steps).tolist()
        assert timesteps == ldm_make_ddim_timesteps(steps)[::-1]
    set_ldm_timesteps(scheduler, 30)
    assert scheduler.timesteps[0].item() == 991 and len(scheduler.timesteps) == 31  # LDM runs 31 calls for "30 steps"


def test_ddim_step_with_eta_matches_ldm_update():
    config = LdmDdimConfig(eta=0.5)
    scheduler = ldm_ddim_scheduler(config)
    scheduler.set_timesteps(50)
    x = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(0))
    eps = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(1))
    noise = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(2))
    t, t_prev = 981, 961
    out = scheduler.step(eps, t, x, eta=config.eta, variance_noise=noise).prev_sample
    a_t, a_prev = scheduler.alphas_cumprod[t].double(), scheduler.alphas_cumprod[t_prev].double()
    sigma = config.eta * torch.sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))  # LDM make_ddim_sampling_parameters
    pred_x0 = (x.double() - (1 - a_t).sqrt() * eps.double()) / a_t.sqrt()
    expected = a_prev.sqrt() * pred_x0 + (1 - a_prev - sigma**2).sqrt() * eps.double() + sigma * noise.double()
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=1e-5)


def test_preset_config_validation_and_linear_schedule():
    linear = ldm_ddim_scheduler(LdmDdimConfig(beta_schedule="linear"))
    np.testing.assert_allclose(linear.betas.numpy(), np.linspace(0.00085, 0.012, 1000), rtol=1e-5)
    with pytest.raises(ValueError, match="eta"):
        LdmDdimConfig(eta=-1.0)
    with pytest.raises(ValueError, match="beta_start"):
        LdmDdimConfig(beta_start=0.02)


def test_shift_snr_identity_and_ratio():
    scheduler = ldm_ddim_scheduler()
    same = shift_snr(scheduler, 1.0)
    torch.testing.assert_close(same.alphas_cumprod, scheduler.alphas_cumprod, atol=1e-6, rtol=1e-5)
    shifted = shift_snr(scheduler, 2.0)
    assert isinstance(shifted, DDIMScheduler)
    snr = scheduler.alphas_cumprod.double() / (1 - scheduler.alphas_cumprod.double())
    snr_shifted = shifted.alphas_cumprod.double() / (1 - shifted.alphas_cumprod.double())
    torch.testing.assert_close(snr_shifted, snr / 4, rtol=1e-3, atol=0)
    assert isinstance(shift_snr(DDPMScheduler(), 1.5), DDPMScheduler)
    with pytest.raises(ValueError, match="scale"):
        shift_snr(scheduler, 0.0)


def test_q_sample_start_at_999():
    scheduler = ldm_ddim_scheduler()
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    sqrt_abar = scheduler.alphas_cumprod[999].sqrt().item()
    assert sqrt_abar == pytest.approx(0.068, abs=5e-4)
    x_t = q_sample_start(z, scheduler, 999, noise=noise)
    torch.testing.assert_close(x_t, sqrt_abar * z + math.sqrt(1 - sqrt_abar**2) * noise)
    torch.testing.assert_close(q_sample_start(z, scheduler, noise=torch.zeros_like(z)), sqrt_abar * z)
    # Seeded drawing, 5-D video latents.
    video = torch.randn(1, 4, 3, 8, 8)
    a = q_sample_start(video, scheduler, generator=torch.Generator().manual_seed(3))
    b = q_sample_start(video, scheduler, generator=torch.Generator().manual_seed(3))
    assert a.shape == video.shape and torch.equal(a, b)
    with pytest.raises(ValueError, match="timestep"):
        q_sample_start(z, scheduler, 1000)
    with pytest.raises(ValueError, match="noise"):
        q_sample_start(z, scheduler, noise=torch.zeros(1, 4, 8, 8))


# ------------------------------------------------------------------------------------------------------------- windows


def test_sliding_windows_spec_layout_and_wrap_around():
    windows = sliding_windows(28, window=16, overlap=4, offset=0)
    assert windows == [list(range(16)), [*range(12, 28)]]
    wrapped = sliding_windows(30, window=16, overlap=4, offset=25)
    # Starts 25, 37 (mod 30 = 7), 49 (mod 30 = 19); stop before offset + F - overlap = 51.
    assert [w[0] for w in wrapped] == [25, 7, 19]
    assert wrapped[0] == [*range(25, 30), *range(11)]
    assert all(len(w) == 16 for w in wrapped)
    for num_frames in range(17, 60):
        for offset in (0, 5, num_frames - 1):
            cover = torch.zeros(num_frames)
            for w in sliding_windows(num_frames, 16, 4, offset):
                cover[w] += 1
            assert (cover >= 1).all(), (num_frames, offset)
    assert sliding_windows(5, window=3, overlap=1, offset=4) == [[4, 0, 1], [1, 2, 3]]


def test_sliding_windows_without_wrap_and_short_sequences():
    assert sliding_windows(10, window=4, overlap=1, wrap=False) == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]]
    assert sliding_windows(11, window=4, overlap=1, wrap=False)[-1] == [7, 8, 9, 10]
    assert sliding_windows(12, window=16, overlap=4, offset=7) == [list(range(12))]
    with pytest.raises(ValueError, match="overlap"):
        sliding_windows(10, window=4, overlap=4)
    with pytest.raises(ValueError, match="offset"):
        sliding_windows(10, window=4, overlap=1, offset=2, wrap=False)


def test_denoise_windows_short_sequence_equals_plain_pass():
    latents = torch.randn(2, 4, 5, 3, 3, generator=torch.Generator().manual_seed(0))

    def predict(x: torch.Tensor, frames: list[int]) -> torch.Tensor:
        return torch.sin(3 * x) + x.mean(dim=2, keepdim=True)  # mixes frames, like temporal attention

    windowed = denoise_windows(predict, latents, sliding_windows(5, window=16, overlap=4, offset=3))
    assert torch.equal(windowed, predict(latents, list(range(5))))


def test_denoise_windows_averages_overlaps():
    num_frames = 7
    latents = torch.zeros(1, 2, num_frames, 2, 2)
    windows = sliding_windows(num_frames, window=3, overlap=1, offset=5)
    calls: list[list[int]] = []

    def predict(x: torch.Tensor, frames: list[int]) -> torch.Tensor:
        calls.append(frames)
        return torch.full_like(x, float(len(calls)))  # window k (1-based) predicts the constant k

    out = denoise_windows(predict, latents, windows)
    assert calls == windows
    expected = torch.zeros(num_frames)
    counts = torch.zeros(num_frames)
    for k, w in enumerate(windows, start=1):
        for f in w:
            expected[f] += k
            counts[f] += 1
    expected /= counts
    assert (counts >= 1).all() and (counts > 1).any()
    torch.testing.assert_close(out, expected.view(1, 1, -1, 1, 1).expand_as(out))


def test_denoise_windows_passes_frames_in_window_order_and_frame_dim():
    latents = torch.arange(6.0).view(6, 1, 1, 1)  # (F, C, H, W) batch of frames, value = frame index
    seen = []

    def predict(x: torch.Tensor, frames: list[int]) -> torch.Tensor:
        seen.append(x.flatten().tolist())
        return x

    out = denoise_windows(predict, latents, sliding_windows(6, window=4, overlap=2, offset=4), frame_dim=0)
    assert seen[0] == [4.0, 5.0, 0.0, 1.0]
    torch.testing.assert_close(out, latents)  # identity prediction averages to itself


def test_denoise_windows_errors():
    latents = torch.zeros(1, 1, 4, 1, 1)
    with pytest.raises(ValueError, match="cover every frame"):
        denoise_windows(lambda x, f: x, latents, [[0, 1]])
    with pytest.raises(ValueError, match="shape"):
        denoise_windows(lambda x, f: x[:, :, :1], latents, [[0, 1, 2, 3]])
    with pytest.raises(ValueError, match="frame indices"):
        denoise_windows(lambda x, f: x, latents, [[0, 4]])


# ----------------------------------------------------------------------------------------------------------------- CFG


def test_plain_cfg():
    u, c = torch.tensor([1.0, -2.0]), torch.tensor([3.0, 0.0])
    torch.testing.assert_close(plain_cfg(u, c, 5.0), torch.tensor([11.0, 8.0]))
    torch.testing.assert_close(plain_cfg(u, c, 1.0), c)
    torch.testing.assert_close(plain_cfg(u, c, 0.0), u)
    with pytest.raises(ValueError, match="same shape"):
        plain_cfg(u, torch.zeros(3), 2.0)


def test_nested_cfg_closed_form():
    g = torch.Generator().manual_seed(0)
    e0, e1, e2 = (torch.randn(2, 4, 3, 3, generator=g) for _ in range(3))
    s1, s2 = 1.5, 7.5
    expected = e0 + s1 * (e1 - e0) + s2 * (e2 - e1)
    torch.testing.assert_close(nested_cfg([e0, e1, e2], [s1, s2]), expected)
    # Known numbers: eps = 1 + 2 (3 - 1) + 4 (10 - 3) = 33.
    ones = torch.ones(1)
    torch.testing.assert_close(nested_cfg([ones, 3 * ones, 10 * ones], [2.0, 4.0]), 33 * ones)
    # All scales 1: the full-condition prediction; one condition: plain CFG.
    torch.testing.assert_close(nested_cfg([e0, e1, e2], [1.0, 1.0]), e2)
    torch.testing.assert_close(nested_cfg([e0, e1], [3.0]), plain_cfg(e0, e1, 3.0))
    with pytest.raises(ValueError, match="one more tensor"):
        nested_cfg([e0, e1], [1.0, 2.0])
    with pytest.raises(ValueError, match=r"predictions\[1\]"):
        nested_cfg([e0, e1[:1]], [1.0])


def test_nested_branches_declare_drops():
    branches = nested_branches(["image", "text"])
    assert [b.name for b in branches] == ["null", "image", "image+text"]
    assert branches[0].drop == {"image", "text"} and branches[1].drop == {"text"} and branches[2].drop == set()
    assert branches[1].uses("image") and not branches[1].uses("text")
    # X-Portrait controlnet_important: one group, the unconditional pass is the bare UNet.
    null, full = nested_branches([("text", "reference", "motion", "local")])
    assert null.drop == {"text", "reference", "motion", "local"} and full.drop == set()
    assert null.uses("anything_else")
    with pytest.raises(ValueError, match="one stage only"):
        nested_branches(["a", ("a", "b")])
    with pytest.raises(ValueError, match="non-empty"):
        nested_branches([])


# ----------------------------------------------------------------------------------------------------------------- VAE


def test_vae_decode_chunked_equals_one_shot():
    vae = tiny_vae().eval()
    latents = torch.randn(2, 4, 5, 8, 8, generator=torch.Generator().manual_seed(0))  # (B, C, F, h, w)
    with torch.no_grad():
        chunked = vae_decode_chunked(vae, latents, chunk_size=3)
        flat = latents.permute(0, 2, 1, 3, 4).reshape(10, 4, 8, 8)
        one_shot = vae.decode(flat / vae.config.scaling_factor).sample
    assert vae.config.scaling_factor == pytest.approx(0.18215)
    assert chunked.shape == (2, 3, 5, 16, 16)
    torch.testing.assert_close(chunked.permute(0, 2, 1, 3, 4).reshape(10, 3, 16, 16), one_shot, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(vae_decode_chunked(vae, flat, chunk_size=4), one_shot, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="latents"):
        vae_decode_chunked(vae, torch.zeros(4, 8, 8))


def test_vae_encode_scales_and_chunks():
    vae = tiny_vae().eval()
    images = torch.rand(1, 3, 4, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        latents = vae_encode(vae, images, chunk_size=3, sample=False)
        flat = images.permute(0, 2, 1, 3, 4).reshape(4, 3, 16, 16)
        expected = vae.encode(flat).latent_dist.mode() * 0.18215
    assert latents.shape == (1, 4, 4, 8, 8)
    torch.testing.assert_close(latents.permute(0, 2, 1, 3, 4).reshape(4, 4, 8, 8), expected, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        a = vae_encode(vae, flat, generator=torch.Generator().manual_seed(1))
        b = vae_encode(vae, flat, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, expected)


def test_encode_clip_prompt_pads_to_the_tokenizer_length() -> None:
    tokenizer, encoder = tiny_clip_tokenizer(), tiny_clip_text_encoder(seed=0)
    with torch.no_grad():
        empty = encode_clip_prompt(tokenizer, encoder)
        long = encode_clip_prompt(tokenizer, encoder, "a " * 100, torch.device("cpu"))
        tokens = tokenizer([""], padding="max_length", max_length=tokenizer.model_max_length, return_tensors="pt")
        expected = encoder(tokens.input_ids)[0]
    assert empty.shape == long.shape == (1, tokenizer.model_max_length, encoder.config.hidden_size)
    assert torch.equal(empty, expected)
