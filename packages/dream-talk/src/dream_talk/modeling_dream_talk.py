"""The DREAM-Talk networks (arXiv 2312.13578; no official code exists, so every wiring choice below is the spec's
[unverified] default): the emotion-style encoder, the EmoDiff transformer denoiser over windows of motion frames and
the lip refiner that re-predicts the jaw/mouth blendshapes.

Token layout of :class:`EmoDiff` for a window of T frames (spec §3 "Conditions", "Time-position embedding")::

    [initial-state token, style token, frame_1, ..., frame_T]
    frame_j = in_proj(x_t[j]) + audio_proj(audio[j])   (the learned null audio row when the audio is dropped)
    every token += timestep_mlp(sinusoid(t));  frame tokens += learned position embedding[j]

The style token is the style encoder's embedding (a learned null token when the style is dropped), so
classifier-free guidance runs the same network with ``audio_keep`` / ``style_keep`` set to 0.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from dream_talk.motion import mouth_indices

__all__ = ["EmoDiff", "LipRefiner", "StyleEncoder", "fit_style_length", "sinusoidal_embedding"]


def sinusoidal_embedding(positions: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Transformer sinusoids of (fractional) positions.

    Args:
        positions: (N,) timesteps or frame indices.
        dim: Embedding width (even).

    Returns:
        float32 (N, dim): ``[cos(p w_k), sin(p w_k)]`` with ``w_k = max_period^(-k / (dim / 2))``.
    """
    half = dim // 2
    frequencies = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=positions.device) / half
    )
    angles = positions.float()[:, None] * frequencies[None, :]
    embedding = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
    if dim % 2:
        embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
    return embedding


def _encoder(d_model: int, layers: int, heads: int, ff_mult: int, dropout: float) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(
        d_model, heads, ff_mult * d_model, dropout=dropout, activation="gelu", batch_first=True, norm_first=True
    )
    return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)


def fit_style_length(style: torch.Tensor, frames: int) -> torch.Tensor:
    """Centre-crop a (B, S, M) style clip to `frames` frames when S >= frames, else loop it: (B, frames, M)."""
    length = style.shape[1]
    if length >= frames:
        start = (length - frames) // 2
        return style[:, start : start + frames]
    return style.repeat(1, math.ceil(frames / length), 1)[:, :frames]


class StyleEncoder(nn.Module):
    """Emotion-style clip -> one embedding: linear frame tokens, a small transformer, mean pooling (spec §3).

    Args:
        motion_dim: Values per frame M (58).
        d_model: Token and embedding width.
        layers: Transformer layers (2 in the spec).
        heads: Attention heads.
        max_frames: Frames used; longer clips are centre-cropped, shorter ones looped.
    """

    def __init__(
        self, motion_dim: int = 58, d_model: int = 256, layers: int = 2, heads: int = 8, max_frames: int = 64
    ) -> None:
        super().__init__()
        self.max_frames = max_frames
        self.in_proj = nn.Linear(motion_dim, d_model)
        self.position = nn.Parameter(torch.randn(max_frames, d_model) * 0.02)
        self.encoder = _encoder(d_model, layers, heads, 2, 0.0)
        self.norm = nn.LayerNorm(d_model)

    def fit_length(self, style: torch.Tensor) -> torch.Tensor:
        """Centre-crop or loop a (B, S, M) clip to ``max_frames`` frames (:func:`fit_style_length`)."""
        return fit_style_length(style, self.max_frames)

    def forward(self, style: torch.Tensor) -> torch.Tensor:
        """(B, S, M) style clip -> (B, d_model) embedding (the mean of the encoded frame tokens)."""
        style = self.fit_length(style)
        tokens = self.in_proj(style) + self.position[None]
        return self.norm(self.encoder(tokens).mean(dim=1))


class EmoDiff(nn.Module):
    """Transformer denoiser of EmoDiff: predicts the noise of a window of noisy motion frames.

    Args:
        motion_dim: M, values per frame (52 blendshapes + 6 pose).
        audio_dim: A, audio feature width per frame.
        style_dim: Width of the style embedding.
        d_model: Token width (256).
        layers: Transformer layers (8).
        heads: Attention heads (8).
        ff_mult: Feed-forward width multiple.
        dropout: Dropout in the transformer.
        window: Frames per window (64): size of the learned frame-position table.
        num_train_timesteps: Training timesteps (for the sinusoid's scale only).
    """

    def __init__(
        self,
        motion_dim: int = 58,
        audio_dim: int = 768,
        style_dim: int = 256,
        d_model: int = 256,
        layers: int = 8,
        heads: int = 8,
        ff_mult: int = 4,
        dropout: float = 0.0,
        window: int = 64,
        num_train_timesteps: int = 1000,
    ) -> None:
        super().__init__()
        self.motion_dim, self.audio_dim, self.window, self.d_model = motion_dim, audio_dim, window, d_model
        self.num_train_timesteps = num_train_timesteps
        self.in_proj = nn.Linear(motion_dim, d_model)
        self.audio_proj = nn.Linear(audio_dim, d_model)
        self.null_audio = nn.Parameter(torch.zeros(d_model))
        self.initial_proj = nn.Linear(motion_dim, d_model)
        self.style_proj = nn.Linear(style_dim, d_model)
        self.null_style = nn.Parameter(torch.randn(d_model) * 0.02)
        self.position = nn.Parameter(torch.randn(window, d_model) * 0.02)
        self.time_mlp = nn.Sequential(nn.Linear(d_model, d_model), nn.SiLU(), nn.Linear(d_model, d_model))
        self.encoder = _encoder(d_model, layers, heads, ff_mult, dropout)
        self.norm = nn.LayerNorm(d_model)
        self.out_proj = nn.Linear(d_model, motion_dim)

    def forward(
        self,
        sample: torch.Tensor,
        timesteps: torch.Tensor,
        audio: torch.Tensor,
        initial_state: torch.Tensor,
        style_embedding: torch.Tensor,
        audio_keep: torch.Tensor | None = None,
        style_keep: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predicted noise of a window.

        Args:
            sample: (B, T, M) noisy motion x_t, T <= ``window``.
            timesteps: (B,) integer diffusion timesteps.
            audio: (B, T, A) frame-aligned audio features.
            initial_state: (B, M) the motion of the window's first frame.
            style_embedding: (B, style_dim) from :class:`StyleEncoder`.
            audio_keep: (B,) 1 = use the audio, 0 = the null audio (CFG / condition dropout); ``None``: all 1.
            style_keep: (B,) the same for the style.

        Returns:
            (B, T, M) epsilon prediction.
        """
        batch, frames, _ = sample.shape
        if frames > self.window:
            raise ValueError(f"EmoDiff: a window holds at most {self.window} frames, got {frames}")
        if audio.shape[:2] != (batch, frames) or audio.shape[2] != self.audio_dim:
            raise ValueError(f"EmoDiff: audio must be ({batch}, {frames}, {self.audio_dim}), got {tuple(audio.shape)}")
        ones = sample.new_ones(batch)
        audio_keep = (ones if audio_keep is None else audio_keep.to(sample))[:, None, None]
        style_keep = (ones if style_keep is None else style_keep.to(sample))[:, None]
        audio_tokens = audio_keep * self.audio_proj(audio) + (1 - audio_keep) * self.null_audio
        frame_tokens = self.in_proj(sample) + audio_tokens + self.position[:frames][None]
        style_token = style_keep * self.style_proj(style_embedding) + (1 - style_keep) * self.null_style
        prefix = torch.stack([self.initial_proj(initial_state), style_token], dim=1)
        time = self.time_mlp(sinusoidal_embedding(timesteps.reshape(-1).expand(batch), self.d_model).to(sample))
        tokens = torch.cat([prefix, frame_tokens], dim=1) + time[:, None]
        hidden = self.norm(self.encoder(tokens))
        return self.out_proj(hidden[:, 2:])


class LipRefiner(nn.Module):
    """Re-predicts the 27 jaw/mouth blendshapes from audio, emotion style and the EmoDiff motion; every other channel
    is copied through unchanged (bit-identical).

    The mouth channels are the input's plus a predicted residual, so an untrained refiner starts near the identity.

    Args:
        motion_dim: M (58).
        audio_dim: A.
        d_model: Token width (256).
        layers: Transformer layers (4 in the spec).
        heads: Attention heads.
        style_layers: Layers of its own style encoder.
        style_frames: Frames of the style clip it reads.
    """

    mouth: torch.Tensor

    def __init__(
        self,
        motion_dim: int = 58,
        audio_dim: int = 768,
        d_model: int = 256,
        layers: int = 4,
        heads: int = 8,
        style_layers: int = 1,
        style_frames: int = 64,
    ) -> None:
        super().__init__()
        self.register_buffer("mouth", torch.tensor(mouth_indices(), dtype=torch.long), persistent=False)
        self.d_model = d_model
        self.style_encoder = StyleEncoder(motion_dim, d_model, style_layers, heads, style_frames)
        self.in_proj = nn.Linear(motion_dim + audio_dim, d_model)
        self.encoder = _encoder(d_model, layers, heads, 2, 0.0)
        self.norm = nn.LayerNorm(d_model)
        self.out_proj = nn.Linear(d_model, len(mouth_indices()))
        nn.init.normal_(self.out_proj.weight, std=0.01)
        nn.init.zeros_(self.out_proj.bias)

    def mouth_residual(self, motion: torch.Tensor, audio: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """(B, T, 27) change of the mouth channels."""
        positions = sinusoidal_embedding(torch.arange(motion.shape[1], device=motion.device), self.d_model)
        tokens = self.in_proj(torch.cat([motion, audio], dim=-1)) + positions.to(motion)[None]
        style_token = self.style_encoder(style)[:, None]
        hidden = self.norm(self.encoder(torch.cat([style_token, tokens], dim=1)))
        return self.out_proj(hidden[:, 1:])

    def forward(self, motion: torch.Tensor, audio: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """Refined motion.

        Args:
            motion: (B, T, M) EmoDiff output.
            audio: (B, T, A) frame-aligned audio features.
            style: (B, S, M) emotion-style clip.

        Returns:
            (B, T, M): ``motion`` with channels :func:`dream_talk.motion.mouth_indices` replaced by
            ``motion[..., mouth] + residual``; every other channel is the input's, bit for bit.
        """
        refined = motion.clone()
        refined[..., self.mouth] = motion[..., self.mouth] + self.mouth_residual(motion, audio, style)
        return refined
