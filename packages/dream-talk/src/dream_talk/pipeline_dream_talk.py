"""DREAM-Talk inference: EmoDiff sampling over motion windows with classifier-free guidance on audio and style,
chained or sliding windows for long audio, a head-motion scale, then lip refinement (spec §5).

Samplers over a diffusers noise schedule (``squaredcos_cap_v2`` for ``diffusion.schedule="cosine"``), on a strided
subset of the training timesteps ``t_1 > t_2 > ... > t_S``, with ``a_t = alphas_cumprod[t]`` and ``a_prev`` the value
at the next visited timestep (1 after the last):

- ``ddpm_ancestral`` (the spec's reverse step ``N(mu_theta, beta_t I)``): ``alpha = a_t / a_prev``,
  ``beta = 1 - alpha``, ``mu = (x_t - beta / sqrt(1 - a_t) eps) / sqrt(alpha)`` (equal to the posterior mean
  ``q(x_prev | x_t, x0_hat)``, :func:`posterior_mean`), ``x_prev = mu + sqrt(beta) z`` (no noise at the last step);
- ``ddim`` (eta 0): ``x_prev = sqrt(a_prev) x0_hat + sqrt(1 - a_prev) eps``.

With ``diffusion.clip_sample`` set, x0_hat is clamped before each step and eps re-derived from it.

Guidance is genblocks' nested CFG over the branches [null, audio, audio + style]:
``eps = eps_null + s_a (eps_a - eps_null) + s_s (eps_as - eps_a)``; scales (1, 1) give the conditional prediction.

The first frame of every window is its initial state: besides being the model's initial-state token, it is imposed on
frame 0 at every step (noised to the step's level) and exactly at the end, so chained windows join without a jump.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dream_talk.config import DreamTalkConfig
from dream_talk.modeling_dream_talk import EmoDiff, LipRefiner, StyleEncoder
from dream_talk.motion import ARKIT_BLENDSHAPES, POSE_NAMES
from genblocks.diffusion.sampling import denoise_windows, nested_cfg, sliding_windows

__all__ = [
    "DreamTalkPipeline",
    "DreamTalkPipelineOutput",
    "alphas_cumprod",
    "build_components",
    "ddim_step",
    "ddpm_ancestral_step",
    "posterior_mean",
    "sampling_timesteps",
]

logger = logging.getLogger(__name__)

_FILES = {
    "emodiff": "emodiff.safetensors",
    "style_encoder": "style_encoder.safetensors",
    "lip_refiner": "lip_refiner.safetensors",
}


def alphas_cumprod(schedule: str, steps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """Cumulative alpha products of the training schedule, from diffusers' ``DDPMScheduler``.

    Args:
        schedule: ``"cosine"`` (``squaredcos_cap_v2``) or ``"linear"``.
        steps: Training timesteps.

    Returns:
        float32 (steps,).
    """
    from diffusers.schedulers.scheduling_ddpm import DDPMScheduler

    scheduler = DDPMScheduler(
        num_train_timesteps=steps,
        beta_schedule="squaredcos_cap_v2" if schedule == "cosine" else "linear",
        beta_start=beta_start,
        beta_end=beta_end,
    )
    return scheduler.alphas_cumprod.float().clone()


def sampling_timesteps(sample_steps: int, train_steps: int) -> list[int]:
    """``sample_steps`` evenly spaced training timesteps from ``train_steps - 1`` down to 0, descending."""
    values = np.linspace(train_steps - 1, 0, sample_steps).round().astype(int)
    return list(dict.fromkeys(int(v) for v in values))


def _alpha_pair(cumprod: torch.Tensor, t: int, t_prev: int) -> tuple[float, float]:
    return float(cumprod[t]), 1.0 if t_prev < 0 else float(cumprod[t_prev])


def posterior_mean(x0: torch.Tensor, sample: torch.Tensor, cumprod: torch.Tensor, t: int, t_prev: int) -> torch.Tensor:
    """Mean of q(x_prev | x_t, x0) between visited timesteps ``t`` > ``t_prev`` (-1: the clean end).

    ``mu = sqrt(a_prev) beta / (1 - a_t) x0 + sqrt(alpha) (1 - a_prev) / (1 - a_t) x_t`` with ``alpha = a_t / a_prev``.
    """
    a_t, a_prev = _alpha_pair(cumprod, t, t_prev)
    alpha = a_t / a_prev
    beta = 1.0 - alpha
    return (a_prev**0.5 * beta / (1.0 - a_t)) * x0 + (alpha**0.5 * (1.0 - a_prev) / (1.0 - a_t)) * sample


def ddpm_ancestral_step(
    eps: torch.Tensor, sample: torch.Tensor, cumprod: torch.Tensor, t: int, t_prev: int, noise: torch.Tensor | None
) -> torch.Tensor:
    """One DDPM-ancestral step with variance beta_t (see the module docstring); ``noise=None`` returns the mean."""
    a_t, a_prev = _alpha_pair(cumprod, t, t_prev)
    alpha = a_t / a_prev
    beta = 1.0 - alpha
    mean = (sample - beta / (1.0 - a_t) ** 0.5 * eps) / alpha**0.5
    if noise is None or t_prev < 0:
        return mean
    return mean + beta**0.5 * noise


def ddim_step(eps: torch.Tensor, sample: torch.Tensor, cumprod: torch.Tensor, t: int, t_prev: int) -> torch.Tensor:
    """One deterministic DDIM step (eta 0)."""
    a_t, a_prev = _alpha_pair(cumprod, t, t_prev)
    x0 = (sample - (1.0 - a_t) ** 0.5 * eps) / a_t**0.5
    return a_prev**0.5 * x0 + (1.0 - a_prev) ** 0.5 * eps


def build_components(config: DreamTalkConfig) -> tuple[EmoDiff, StyleEncoder, LipRefiner]:
    """Seeded random EmoDiff, style encoder and lip refiner of the config's sizes (``emodiff.seed``)."""
    e, m = config.emodiff, config.motion
    audio_dim = config.audio.feature_dim
    torch.manual_seed(e.seed)
    style_encoder = StyleEncoder(m.dim, e.style_d_model, e.style_layers, e.heads, e.style_frames)
    emodiff = EmoDiff(
        m.dim,
        audio_dim,
        e.style_d_model,
        e.d_model,
        e.layers,
        e.heads,
        e.ff_mult,
        e.dropout,
        e.window,
        config.diffusion.steps,
    )
    lip_refiner = LipRefiner(m.dim, audio_dim, e.lip_d_model, e.lip_layers, e.heads, 1, e.style_frames)
    return emodiff.eval(), style_encoder.eval(), lip_refiner.eval()


@dataclass
class DreamTalkPipelineOutput:
    """Output of :class:`DreamTalkPipeline`.

    Args:
        motion: (B, T, M) final motion (after lip refinement when enabled).
        raw_motion: (B, T, M) EmoDiff's motion before lip refinement (after the head-motion scale).
        initial_states: (B, M) initial state of every window, in order (chain mode; one entry in sliding mode).
        windows: Frame indices of every window.
    """

    motion: torch.Tensor
    raw_motion: torch.Tensor
    initial_states: list[torch.Tensor] = field(default_factory=list)
    windows: list[list[int]] = field(default_factory=list)


class DreamTalkPipeline:
    """Audio features + emotion style (+ initial state) -> blendshape and head-pose sequence.

    Args:
        emodiff: The denoiser.
        style_encoder: Its style encoder.
        lip_refiner: The lip refiner (``None``: no refinement).
        config: The whole config (sizes, schedule, sampler, CFG, inference settings).
    """

    def __init__(
        self, emodiff: EmoDiff, style_encoder: StyleEncoder, lip_refiner: LipRefiner | None, config: DreamTalkConfig
    ) -> None:
        self.emodiff, self.style_encoder, self.lip_refiner, self.config = emodiff, style_encoder, lip_refiner, config
        d = config.diffusion
        self.alphas_cumprod = alphas_cumprod(d.schedule, d.steps, d.beta_start, d.beta_end)

    # ------------------------------------------------------------------ construction and files
    def to(self, device: str | torch.device) -> DreamTalkPipeline:
        """Move every component to ``device`` (``"auto"``: CUDA when available); returns ``self``."""
        from genblocks.devices import resolve_device

        target = resolve_device(device) if isinstance(device, str) else device
        for module in (self.emodiff, self.style_encoder, self.lip_refiner):
            if module is not None:
                module.to(target)
        return self

    @classmethod
    def from_config(cls, config: DreamTalkConfig) -> DreamTalkPipeline:
        """Seeded random components (the tiny config, tests, benchmarks)."""
        emodiff, style_encoder, lip_refiner = build_components(config)
        return cls(emodiff, style_encoder, lip_refiner, config)

    def save_pretrained(
        self, folder: str | Path, parts: tuple[str, ...] = ("emodiff", "style_encoder", "lip_refiner")
    ) -> Path:
        """Write ``emodiff.safetensors``, ``style_encoder.safetensors``, ``lip_refiner.safetensors`` (those of ``parts``
        that exist) and ``config.json`` (the whole config plus the blendshape names, the pose layout, the frame rate
        and the audio front-end ID)."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        modules = {"emodiff": self.emodiff, "style_encoder": self.style_encoder, "lip_refiner": self.lip_refiner}
        for name in parts:
            module = modules[name]
            if module is not None:
                state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
                save_file(state, str(folder / _FILES[name]))
        c = self.config
        document: dict[str, Any] = {
            "config": asdict(c),
            "blendshapes": list(ARKIT_BLENDSHAPES),
            "pose": list(POSE_NAMES[: c.motion.pose_dim]),
            "fps": c.motion.fps,
            "audio_front_end": {"kind": c.audio.kind, "pretrained": c.audio.pretrained, "dim": c.audio.feature_dim},
        }
        (folder / "config.json").write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | Path, lip_folder: str | Path | None = None) -> DreamTalkPipeline:
        """Load a folder written by :meth:`save_pretrained` (strict: every key must match).

        Args:
            folder: Holds ``config.json``, ``emodiff.safetensors``, ``style_encoder.safetensors`` and optionally
                ``lip_refiner.safetensors``.
            lip_folder: A folder whose ``lip_refiner.safetensors`` is used instead (the ``lip`` training stage's
                ``trained/``).
        """
        from safetensors.torch import load_file

        from genblocks.config import merge_config
        from genblocks.errors import InputError

        folder = Path(folder)
        path = folder / "config.json"
        if not path.is_file():
            raise InputError(
                f"{folder}: no config.json (expected a folder written by DreamTalkPipeline.save_pretrained)"
            )
        document = json.loads(path.read_text(encoding="utf-8"))
        config = merge_config(DreamTalkConfig, (str(path), document["config"]))
        emodiff, style_encoder, lip_refiner = build_components(config)
        files = {
            "emodiff": folder / _FILES["emodiff"],
            "style_encoder": folder / _FILES["style_encoder"],
            "lip_refiner": Path(lip_folder if lip_folder is not None else folder) / _FILES["lip_refiner"],
        }
        modules: dict[str, torch.nn.Module] = {
            "emodiff": emodiff,
            "style_encoder": style_encoder,
            "lip_refiner": lip_refiner,
        }
        for name, module in modules.items():
            if not files[name].is_file():
                if name == "lip_refiner" and lip_folder is None:
                    continue
                raise InputError(f"{files[name]}: missing")
            try:
                module.load_state_dict(load_file(str(files[name])), strict=True)
            except RuntimeError as error:
                raise InputError(f"{files[name]}: does not fit the config's sizes ({error})") from error
        has_lip = files["lip_refiner"].is_file()
        return cls(emodiff, style_encoder, lip_refiner if has_lip else None, config)

    # ------------------------------------------------------------------ the steps
    def check_inputs(self, audio: torch.Tensor, style: torch.Tensor, initial_state: torch.Tensor | None) -> None:
        """Shapes: audio (B, T, A), style (B, S, M), initial_state (B, M) or None."""
        m, a = self.config.motion.dim, self.config.audio.feature_dim
        if audio.ndim != 3 or audio.shape[2] != a or audio.shape[1] == 0:
            raise ValueError(f"audio features must be (B, T > 0, {a}), got {tuple(audio.shape)}")
        if style.ndim != 3 or style.shape[2] != m or style.shape[0] != audio.shape[0] or style.shape[1] == 0:
            raise ValueError(f"style must be ({audio.shape[0]}, S > 0, {m}), got {tuple(style.shape)}")
        if initial_state is not None and tuple(initial_state.shape) != (audio.shape[0], m):
            raise ValueError(f"initial_state must be ({audio.shape[0]}, {m}), got {tuple(initial_state.shape)}")

    def guided_eps(
        self,
        sample: torch.Tensor,
        t: int,
        audio: torch.Tensor,
        initial_state: torch.Tensor,
        style_embedding: torch.Tensor,
        scales: tuple[float, float],
    ) -> torch.Tensor:
        """Nested-CFG noise prediction of a window from the three branches [null, audio, audio + style] run as one
        batch of 3B (genblocks ``nested_cfg``)."""
        batch = sample.shape[0]
        zeros, ones = sample.new_zeros(batch), sample.new_ones(batch)
        eps = self.emodiff(
            sample.repeat(3, 1, 1),
            torch.full((3 * batch,), t, dtype=torch.long, device=sample.device),
            audio.repeat(3, 1, 1),
            initial_state.repeat(3, 1),
            style_embedding.repeat(3, 1),
            audio_keep=torch.cat([zeros, ones, ones]),
            style_keep=torch.cat([zeros, zeros, ones]),
        )
        return nested_cfg(list(eps.chunk(3)), list(scales))

    def _impose_initial(
        self, sample: torch.Tensor, initial_state: torch.Tensor, t_prev: int, noise: torch.Tensor
    ) -> torch.Tensor:
        """Frame 0 of ``sample`` set to the initial state noised to the level of ``t_prev`` (exact at the end)."""
        sample = sample.clone()
        if t_prev < 0:
            sample[:, 0] = initial_state
        else:
            a = float(self.alphas_cumprod[t_prev])
            sample[:, 0] = a**0.5 * initial_state + (1 - a) ** 0.5 * noise
        return sample

    def _denoise(
        self,
        predict: Any,
        shape: tuple[int, ...],
        initial_state: torch.Tensor,
        sampler: str,
        steps: int,
        generator: torch.Generator,
        device: torch.device,
    ) -> torch.Tensor:
        timesteps = sampling_timesteps(steps, self.config.diffusion.steps)
        sample = torch.randn(shape, generator=generator).to(device)
        anchor_noise = torch.randn((shape[0], shape[2]), generator=generator).to(device)
        sample = self._impose_initial(sample, initial_state, timesteps[0], anchor_noise)
        for index, t in enumerate(timesteps):
            t_prev = timesteps[index + 1] if index + 1 < len(timesteps) else -1
            eps = predict(sample, t)
            clip = self.config.diffusion.clip_sample
            if clip is not None:
                a_t = float(self.alphas_cumprod[t])
                x0 = ((sample - (1 - a_t) ** 0.5 * eps) / a_t**0.5).clamp(-clip, clip)
                eps = (sample - a_t**0.5 * x0) / (1 - a_t) ** 0.5
            if sampler == "ddim":
                sample = ddim_step(eps, sample, self.alphas_cumprod, t, t_prev)
            else:
                noise = torch.randn(shape, generator=generator).to(device) if t_prev >= 0 else None
                sample = ddpm_ancestral_step(eps, sample, self.alphas_cumprod, t, t_prev, noise)
            sample = self._impose_initial(sample, initial_state, t_prev, anchor_noise)
        return sample

    @torch.no_grad()
    def __call__(
        self,
        audio: torch.Tensor,
        style: torch.Tensor,
        initial_state: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        num_inference_steps: int | None = None,
        sampler: str | None = None,
        guidance_scale: tuple[float, float] | None = None,
        long_audio: str | None = None,
        head_motion_scale: float | None = None,
        refine_lips: bool | None = None,
    ) -> DreamTalkPipelineOutput:
        """Generate the motion of T frames.

        Args:
            audio: (B, T, A) frame-aligned audio features (:class:`dream_talk.audio_features.AudioFrontEnd`).
            style: (B, S, M) emotion-style clip.
            initial_state: (B, M) motion of the first frame (the portrait's expression); ``None``: neutral (zeros).
            generator: CPU generator of the sampling noise; ``None``: seeded with ``inference.seed``.
            num_inference_steps: Denoising steps; defaults to ``diffusion.sample_steps``.
            sampler: ``"ddpm_ancestral"`` or ``"ddim"``; defaults to ``diffusion.sampler``.
            guidance_scale: (audio scale, style scale); defaults to ``cfg.scales``.
            long_audio: ``"chain"`` or ``"sliding"``; defaults to ``inference.long_audio``.
            head_motion_scale: Scales the pose's motion around the initial pose; defaults to the config's.
            refine_lips: Run the lip refiner; defaults to ``lip.enabled`` (and needs a refiner).

        Returns:
            :class:`DreamTalkPipelineOutput`.
        """
        c = self.config
        # 1. Check inputs and fill defaults
        self.check_inputs(audio, style, initial_state)
        device = next(self.emodiff.parameters()).device
        audio, style = audio.to(device).float(), style.to(device).float()
        batch, frames, _ = audio.shape
        initial = audio.new_zeros(batch, c.motion.dim) if initial_state is None else initial_state.to(device).float()
        generator = generator if generator is not None else torch.Generator().manual_seed(c.inference.seed)
        steps = num_inference_steps or c.diffusion.sample_steps
        sampler = sampler or c.diffusion.sampler
        scales = guidance_scale if guidance_scale is not None else c.cfg.scales
        mode = long_audio or c.inference.long_audio
        if sampler not in ("ddpm_ancestral", "ddim") or mode not in ("chain", "sliding"):
            raise ValueError(
                f"sampler must be ddpm_ancestral or ddim and long_audio chain or sliding, got {sampler}, {mode}"
            )
        # 2. Encode the emotion style
        style_embedding = self.style_encoder(style)
        window = c.emodiff.window
        # 3. Denoise: chained windows (each starts at the previous one's last frame) or sliding windows
        if mode == "chain":
            motion, initial_states, windows = self._chain(
                audio, initial, style_embedding, scales, sampler, steps, generator
            )
        else:
            overlap = min(c.inference.overlap, window - 1)
            windows = sliding_windows(frames, window, overlap, wrap=False)

            def predict(sample: torch.Tensor, t: int) -> torch.Tensor:
                return denoise_windows(
                    lambda chunk, index: self.guided_eps(chunk, t, audio[:, index], initial, style_embedding, scales),
                    sample,
                    windows,
                    frame_dim=1,
                )

            motion = self._denoise(predict, (batch, frames, c.motion.dim), initial, sampler, steps, generator, device)
            initial_states = [initial]
        # 4. Head-motion scale around the initial pose
        scale = c.inference.head_motion_scale if head_motion_scale is None else head_motion_scale
        nb = c.motion.num_blendshapes
        if scale != 1.0:
            motion[..., nb:] = initial[:, None, nb:] + scale * (motion[..., nb:] - initial[:, None, nb:])
        # 5. Lip refinement (mouth channels only)
        refine = c.lip.enabled if refine_lips is None else refine_lips
        final = motion
        if refine and self.lip_refiner is not None:
            final = self.refine_mouth(motion, audio, style)
        # 6. Blendshape weights into [0, 1]
        if c.inference.clamp_blendshapes:
            final = torch.cat([final[..., :nb].clamp(0.0, 1.0), final[..., nb:]], dim=-1)
        return DreamTalkPipelineOutput(final, motion, initial_states, windows)

    def refine_mouth(self, motion: torch.Tensor, audio: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """Lip refinement over overlapping windows: the refiner runs on every ``emodiff.window``-frame window of
        genblocks' ``sliding_windows`` (stride ``lip.stride``, the last one aligned to the end) and each frame's mouth
        channels are the mean of its windows' predictions (``denoise_windows``), so the motion does not jump where
        one window's context ends.

        Args:
            motion: (B, T, M) EmoDiff motion.
            audio: (B, T, A) frame-aligned audio features.
            style: (B, S, M) emotion-style clip.

        Returns:
            (B, T, M): ``motion`` with the mouth channels refined; every other channel is ``motion``'s, bit for bit.
        """
        refiner = self.lip_refiner
        if refiner is None:
            raise ValueError("refine_mouth needs a lip refiner; this pipeline has none")
        window = self.config.emodiff.window
        overlap = max(0, window - self.config.lip.stride)
        windows = sliding_windows(motion.shape[1], window, overlap, wrap=False)
        averaged = denoise_windows(
            lambda chunk, index: refiner(chunk, audio[:, index], style), motion, windows, frame_dim=1
        )
        mouth = refiner.mouth
        refined = motion.clone()
        refined[..., mouth] = averaged[..., mouth].to(motion.dtype)
        return refined

    def _chain(
        self,
        audio: torch.Tensor,
        initial: torch.Tensor,
        style_embedding: torch.Tensor,
        scales: tuple[float, float],
        sampler: str,
        steps: int,
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[list[int]]]:
        """Windows of W frames with stride W - 1: window k + 1 starts at window k's last frame, which is its initial
        state."""
        c = self.config
        batch, frames, _ = audio.shape
        window = c.emodiff.window
        starts = list(range(0, max(frames - 1, 1), max(window - 1, 1)))
        pieces: list[torch.Tensor] = []
        initial_states: list[torch.Tensor] = []
        windows: list[list[int]] = []
        state = initial
        for start in starts:
            end = min(start + window, frames)
            chunk_audio = audio[:, start:end]
            initial_states.append(state)
            windows.append(list(range(start, end)))

            def predict(
                sample: torch.Tensor, t: int, a: torch.Tensor = chunk_audio, s: torch.Tensor = state
            ) -> torch.Tensor:
                return self.guided_eps(sample, t, a, s, style_embedding, scales)

            piece = self._denoise(
                predict, (batch, end - start, c.motion.dim), state, sampler, steps, generator, audio.device
            )
            pieces.append(piece if not pieces else piece[:, 1:])
            state = piece[:, -1]
            if end == frames:
                break
        return torch.cat(pieces, dim=1), initial_states, windows
