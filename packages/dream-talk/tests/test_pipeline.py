"""Sampling (spec §5, §9): output shape, CFG at scale 1, the DDPM step's mean, both samplers, chained windows,
sliding windows, the head-motion scale and the save / load round trip."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from dream_talk.config import load_shipped_config
from dream_talk.motion import mouth_indices
from dream_talk.pipeline_dream_talk import (
    DreamTalkPipeline,
    ddim_step,
    ddpm_ancestral_step,
    posterior_mean,
    sampling_timesteps,
)


@pytest.fixture(scope="module")
def pipe() -> DreamTalkPipeline:
    return DreamTalkPipeline.from_config(load_shipped_config("tiny"))


def _conditions(frames: int = 8, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    return torch.randn(batch, frames, 13, generator=generator), torch.rand(batch, 10, 58, generator=generator)


def test_output_shape_and_both_samplers_finite(pipe: DreamTalkPipeline) -> None:
    audio, style = _conditions()
    for sampler in ("ddpm_ancestral", "ddim"):
        out = pipe(audio, style, sampler=sampler)
        assert out.motion.shape == (2, 8, 58) and torch.isfinite(out.motion).all()


def test_cfg_scale_one_equals_conditional_prediction(pipe: DreamTalkPipeline) -> None:
    audio, style = _conditions()
    sample, initial = torch.randn(2, 8, 58), torch.rand(2, 58)
    embedding = pipe.style_encoder(style)
    with torch.no_grad():
        guided = pipe.guided_eps(sample, 5, audio, initial, embedding, (1.0, 1.0))
        conditional = pipe.emodiff(sample, torch.full((2,), 5), audio, initial, embedding)
        unguided = pipe.guided_eps(sample, 5, audio, initial, embedding, (0.0, 0.0))
        null = pipe.emodiff(sample, torch.full((2,), 5), audio, initial, embedding, torch.zeros(2), torch.zeros(2))
        strong = pipe.guided_eps(sample, 5, audio, initial, embedding, (2.0, 2.0))
    torch.testing.assert_close(guided, conditional, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(unguided, null, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(strong, 2 * conditional - null, atol=1e-4, rtol=1e-4)


def test_ddpm_step_without_noise_is_the_posterior_mean(pipe: DreamTalkPipeline) -> None:
    cumprod = pipe.alphas_cumprod
    sample, eps = torch.randn(3, 8, 58), torch.randn(3, 8, 58)
    for t, t_prev in ((9, 5), (5, 0), (3, -1)):
        a_t = float(cumprod[t])
        x0 = (sample - (1 - a_t) ** 0.5 * eps) / a_t**0.5
        expected = posterior_mean(x0, sample, cumprod, t, t_prev)
        torch.testing.assert_close(
            ddpm_ancestral_step(eps, sample, cumprod, t, t_prev, None), expected, atol=1e-4, rtol=1e-4
        )
    noise = torch.randn(3, 8, 58)
    beta = 1 - float(cumprod[5]) / float(cumprod[2])
    step = ddpm_ancestral_step(eps, sample, cumprod, 5, 2, noise) - ddpm_ancestral_step(
        eps, sample, cumprod, 5, 2, None
    )
    torch.testing.assert_close(step, beta**0.5 * noise)
    # DDIM with the true noise recovers x0 at the clean end
    x0 = torch.randn(3, 8, 58)
    noisy = float(cumprod[5]) ** 0.5 * x0 + (1 - float(cumprod[5])) ** 0.5 * eps
    torch.testing.assert_close(ddim_step(eps, noisy, cumprod, 5, -1), x0, atol=1e-4, rtol=1e-4)
    assert sampling_timesteps(2, 10) == [9, 0] and sampling_timesteps(4, 1000) == [999, 666, 333, 0]


def test_chained_windows_keep_continuity(pipe: DreamTalkPipeline) -> None:
    audio, style = _conditions(frames=20)
    initial = torch.rand(2, 58)
    out = pipe(audio, style, initial_state=initial, long_audio="chain", refine_lips=False, head_motion_scale=1.0)
    assert out.motion.shape == (2, 20, 58)
    assert [w[0] for w in out.windows] == [0, 7, 14]
    torch.testing.assert_close(out.motion[:, 0], initial)
    for k in range(1, len(out.windows)):
        last = out.windows[k - 1][-1]
        assert out.windows[k][0] == last
        # the last frame of window k - 1 is the initial state of window k, and frame `last` of the sequence
        assert torch.equal(out.initial_states[k], out.raw_motion[:, last])


def test_lip_refinement_over_overlapping_windows_has_no_seams() -> None:
    """Smooth motion and audio: the refined mouth channels jump no more at the borders of 8-frame tiles than inside
    them (stride 1: each frame the mean of all windows containing it), while refining separate tiles (stride = window)
    jumps there; the other channels stay bit-identical."""
    config = load_shipped_config("tiny")
    frames, window = 40, config.emodiff.window
    t = torch.arange(frames, dtype=torch.float32)
    audio = torch.stack([torch.sin(2 * math.pi * t * (k + 1) / 160 + k) for k in range(13)], dim=-1)[None].repeat(
        2, 1, 1
    )
    motion = (0.3 + 0.2 * torch.sin(2 * math.pi * t[:, None] / 50 + torch.arange(58)[None] / 5))[None].repeat(2, 1, 1)
    style = torch.rand(2, 10, 58, generator=torch.Generator().manual_seed(3))
    mouth = mouth_indices()
    borders = [j - 1 for j in range(window, frames, window)]  # jump from frame j - 1 to the first frame j of a tile
    inside = [j for j in range(frames - 1) if j not in borders]

    def jumps(stride: int) -> tuple[float, float]:
        pipe = DreamTalkPipeline.from_config(replace(config, lip=replace(config.lip, stride=stride)))
        with torch.no_grad():
            refined = pipe.refine_mouth(motion, audio, style)
        others = [i for i in range(58) if i not in mouth]
        assert torch.equal(refined[..., others], motion[..., others])
        step = refined[..., mouth].diff(dim=1).abs().amax(dim=(0, 2))
        return float(step[borders].max()), float(step[inside].max())

    border, within = jumps(1)
    assert border <= within  # measured: 0.042 vs 0.059
    tile_border, tile_within = jumps(window)
    assert tile_border > 1.5 * tile_within  # measured: 0.134 vs 0.079


def test_sliding_windows_cover_long_audio(pipe: DreamTalkPipeline) -> None:
    audio, style = _conditions(frames=19)
    out = pipe(audio, style, long_audio="sliding", sampler="ddim")
    assert out.motion.shape == (2, 19, 58) and torch.isfinite(out.motion).all()
    covered = sorted({i for w in out.windows for i in w})
    assert covered == list(range(19)) and all(len(w) == 8 for w in out.windows)


def test_head_motion_scale_zero_freezes_the_head(pipe: DreamTalkPipeline) -> None:
    audio, style = _conditions(frames=12)
    initial = torch.rand(2, 58)
    frozen = pipe(audio, style, initial_state=initial, head_motion_scale=0.0)
    torch.testing.assert_close(frozen.motion[..., 52:], initial[:, None, 52:].expand(2, 12, 6))
    moving = pipe(audio, style, initial_state=initial, head_motion_scale=1.0)
    assert (moving.motion[..., 52:] - initial[:, None, 52:]).abs().amax() > 1e-3
    # the blendshapes of EmoDiff do not depend on the head scale
    torch.testing.assert_close(frozen.raw_motion[..., :52], moving.raw_motion[..., :52])


def test_lip_refinement_in_the_pipeline_touches_only_mouth_channels(pipe: DreamTalkPipeline) -> None:
    from dream_talk.motion import mouth_indices

    audio, style = _conditions(frames=12)
    out = pipe(audio, style)
    others = [i for i in range(58) if i not in set(mouth_indices())]
    clamped = torch.cat([out.raw_motion[..., :52].clamp(0, 1), out.raw_motion[..., 52:]], dim=-1)
    assert torch.equal(out.motion[..., others], clamped[..., others])
    assert not torch.equal(out.motion, clamped)


def test_save_and_load_reproduce_the_motion(pipe: DreamTalkPipeline, tmp_path: Path) -> None:
    import json

    audio, style = _conditions()
    pipe.save_pretrained(tmp_path)
    document = json.loads((tmp_path / "config.json").read_text())
    assert document["blendshapes"][17] == "jawOpen" and document["fps"] == 25.0
    assert document["audio_front_end"] == {"kind": "mfcc", "pretrained": None, "dim": 13}
    loaded = DreamTalkPipeline.from_pretrained(tmp_path)
    assert torch.equal(loaded(audio, style).motion, pipe(audio, style).motion)


def test_bad_shapes_are_refused(pipe: DreamTalkPipeline) -> None:
    audio, style = _conditions()
    with pytest.raises(ValueError, match="audio features"):
        pipe(audio[..., :5], style)
    with pytest.raises(ValueError, match="style"):
        pipe(audio, style[..., :52])


def test_clip_sample_bounds_the_ddim_result_and_blendshapes_are_clamped() -> None:
    config = load_shipped_config("tiny", ["diffusion.clip_sample=0.5", "diffusion.sampler=ddim"])
    pipe = DreamTalkPipeline.from_config(config)
    audio, style = _conditions(frames=8)
    out = pipe(audio, style, initial_state=torch.full((2, 58), 0.25), refine_lips=False)
    assert out.raw_motion.abs().amax() <= 0.5 + 1e-5  # the last DDIM step returns the clamped x0_hat
    unclipped = DreamTalkPipeline.from_config(load_shipped_config("tiny", ["diffusion.clip_sample=null"]))
    free = unclipped(audio, style, sampler="ddim", refine_lips=False)
    assert free.raw_motion.abs().amax() > 1.5
    assert free.motion[..., :52].min() >= 0 and free.motion[..., :52].max() <= 1
