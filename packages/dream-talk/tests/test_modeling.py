"""EmoDiff, the style encoder and the lip refiner on the tiny config (spec §9)."""

from __future__ import annotations

import torch

from dream_talk.config import load_shipped_config
from dream_talk.motion import mouth_indices
from dream_talk.pipeline_dream_talk import build_components


def _inputs(batch: int = 2, frames: int = 8) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        "sample": torch.randn(batch, frames, 58, generator=generator),
        "timesteps": torch.tensor([3, 7][:batch]),
        "audio": torch.randn(batch, frames, 13, generator=generator),
        "initial_state": torch.rand(batch, 58, generator=generator),
    }


def test_emodiff_shapes_and_every_condition_matters() -> None:
    emodiff, style_encoder, _ = build_components(load_shipped_config("tiny"))
    inputs = _inputs()
    style = style_encoder(torch.rand(2, 12, 58, generator=torch.Generator().manual_seed(1)))
    assert style.shape == (2, 32)
    eps = emodiff(style_embedding=style, **inputs)
    assert eps.shape == (2, 8, 58) and torch.isfinite(eps).all()
    changed = {
        "audio": {**inputs, "audio": inputs["audio"] + 1},
        "initial_state": {**inputs, "initial_state": inputs["initial_state"] + 1},
        "timesteps": {**inputs, "timesteps": inputs["timesteps"] + 1},
    }
    for name, other in changed.items():
        assert not torch.allclose(emodiff(style_embedding=style, **other), eps), name
    assert not torch.allclose(emodiff(style_embedding=style + 1, **inputs), eps)
    # dropped conditions: the output no longer depends on them
    zeros = torch.zeros(2)
    dropped = emodiff(style_embedding=style, audio_keep=zeros, style_keep=zeros, **inputs)
    again = emodiff(
        style_embedding=style * 3, audio_keep=zeros, style_keep=zeros, **{**inputs, "audio": inputs["audio"] * 5}
    )
    torch.testing.assert_close(dropped, again)


def test_emodiff_gradients_reach_every_parameter() -> None:
    emodiff, style_encoder, _ = build_components(load_shipped_config("tiny"))
    inputs = _inputs()
    keep = torch.tensor([1.0, 0.0])
    loss = (
        emodiff(style_embedding=style_encoder(torch.rand(2, 5, 58)), audio_keep=keep, style_keep=keep, **inputs)
        .square()
        .mean()
    )
    loss.backward()
    missing = [
        n
        for n, p in [*emodiff.named_parameters(), *style_encoder.named_parameters()]
        if p.grad is None or not p.grad.abs().sum() > 0
    ]
    assert not missing, missing


def test_style_encoder_crops_and_loops_clips() -> None:
    _, style_encoder, _ = build_components(load_shipped_config("tiny"))
    clip = torch.rand(1, 3, 58)
    looped = style_encoder.fit_length(clip)
    assert looped.shape == (1, 8, 58) and torch.equal(looped[0, 3:6], clip[0])
    long = torch.rand(1, 20, 58)
    assert torch.equal(style_encoder.fit_length(long), long[:, 6:14])


def test_lip_refiner_changes_only_mouth_channels() -> None:
    _, _, lip = build_components(load_shipped_config("tiny"))
    motion = torch.rand(2, 8, 58)
    refined = lip(motion, torch.randn(2, 8, 13), torch.rand(2, 6, 58))
    mouth = torch.tensor(mouth_indices())
    others = torch.tensor([i for i in range(58) if i not in set(mouth_indices())])
    assert torch.equal(refined[..., others], motion[..., others])  # bit-identical
    assert (refined[..., mouth] - motion[..., mouth]).abs().amax() > 0
    assert refined.shape == motion.shape
