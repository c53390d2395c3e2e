"""Sampling helpers around diffusers schedulers: the LDM DDIM preset, q-sample start latents, sliding windows over
frames, multi-condition classifier-free guidance and chunked VAE encoding/decoding (spec genblocks §3, §5).

Sources followed:

- DDIM (arXiv 2010.02502) as run by LDM / ControlNet (arXiv 2112.10752), CompVis/stable-diffusion ``ldm/models/diffusion/
  ddim.py`` and ``ldm/modules/diffusionmodules/util.py`` (``make_beta_schedule("linear")`` is linear in sqrt(beta),
  ``make_ddim_timesteps("uniform")`` = ``range(0, 1000, 1000 // S) + 1``, ``alphas_prev[0] = alphas_cumprod[0]``). The
  diffusers ``DDIMScheduler`` reproduces it with ``beta_schedule="scaled_linear"``, ``timestep_spacing="leading"``,
  ``steps_offset=1`` and ``set_alpha_to_one=False``; only the configuration lives here, plus `set_ldm_timesteps` for
  step counts that do not divide 1000 (LDM then visits one more timestep than diffusers).
- Sliding windows with a random start offset and wrap-around, averaging overlapping predictions: bytedance/X-Portrait
  ``model_lib/ControlNet/ldm/models/diffusion/ddim.py`` (``DDIMSampler_ReferenceOnly.ddim_sampling``, commit e63e565),
  ``offset = randint(0, F - 1)``, ``for start in range(offset, offset + F - overlap, window - overlap)``,
  ``indices = arange(start, start + window) % F``.
- Classifier-free guidance (arXiv 2207.12598) and its nested multi-condition form (InstructPix2Pix, arXiv 2211.09800):
  ``eps = eps_null + sum_k s_k (eps_<=k - eps_<=k-1)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, cast

import torch
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
from diffusers.schedulers.scheduling_ddim import DDIMScheduler
from transformers import CLIPTextModel, CLIPTokenizer

__all__ = [
    "LDM_VAE_SCALING_FACTOR",
    "GuidanceBranch",
    "LdmDdimConfig",
    "denoise_windows",
    "encode_clip_prompt",
    "ldm_ddim_scheduler",
    "nested_branches",
    "nested_cfg",
    "plain_cfg",
    "q_sample_start",
    "set_ldm_timesteps",
    "shift_snr",
    "sliding_windows",
    "vae_decode_chunked",
    "vae_encode",
]

LDM_VAE_SCALING_FACTOR = 0.18215
"""LDM's ``scale_factor`` for the SD1.5 KL-f8 VAE; used when a VAE config has no ``scaling_factor``."""


# --------------------------------------------------------------------------------------------------------------------
# Scheduler preset
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LdmDdimConfig:
    """The LDM DDIM sampler as a diffusers ``DDIMScheduler`` configuration, plus the sampling ``eta``.

    Args:
        num_train_timesteps (`int`, defaults to 1000): length T of the training noise schedule.
        beta_start (`float`, defaults to 0.00085): first beta.
        beta_end (`float`, defaults to 0.012): last beta.
        beta_schedule (`str`, defaults to `"scaled_linear"`): `"scaled_linear"` is LDM's `"linear"` (linear in
            sqrt(beta)); `"linear"` is linear in beta (MagicAnimate's `inference.yaml`, used by humananim).
        prediction_type (`str`, defaults to `"epsilon"`): what the UNet predicts.
        eta (`float`, defaults to 0.0): DDIM stochasticity. It is not a scheduler setting in diffusers: pass it to
            every `scheduler.step(..., eta=config.eta)`. 0 is deterministic DDIM (X-Portrait); DiffPortrait3D uses 0.5.
    """

    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    beta_schedule: Literal["scaled_linear", "linear"] = "scaled_linear"
    prediction_type: Literal["epsilon", "v_prediction", "sample"] = "epsilon"
    eta: float = 0.0

    def __post_init__(self) -> None:
        if self.num_train_timesteps < 1:
            raise ValueError(f"num_train_timesteps must be >= 1, got {self.num_train_timesteps}")
        if not 0.0 < self.beta_start < self.beta_end < 1.0:
            raise ValueError(
                f"beta_start/beta_end must satisfy 0 < beta_start < beta_end < 1, got {self.beta_start}, {self.beta_end}"
            )
        if self.eta < 0.0:
            raise ValueError(f"eta must be >= 0, got {self.eta}")


def ldm_ddim_scheduler(config: LdmDdimConfig | None = None) -> DDIMScheduler:
    """Build the diffusers ``DDIMScheduler`` that reproduces LDM's DDIM sampler.

    ``clip_sample=False``, ``set_alpha_to_one=False`` (the last step uses alphas_cumprod[0], as LDM does),
    ``steps_offset=1`` and ``timestep_spacing="leading"``, so 50 steps visit 981, 961, ..., 1.

    Args:
        config (`LdmDdimConfig`, *optional*): schedule and prediction settings; defaults to the SD1.5 schedule.

    Returns:
        `DDIMScheduler`: call ``set_timesteps(num_inference_steps)`` before sampling and pass ``eta=config.eta`` to
        ``step``.
    """
    config = config or LdmDdimConfig()
    return DDIMScheduler(
        num_train_timesteps=config.num_train_timesteps,
        beta_start=config.beta_start,
        beta_end=config.beta_end,
        beta_schedule=config.beta_schedule,
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        timestep_spacing="leading",
        prediction_type=config.prediction_type,
    )


def set_ldm_timesteps(
    scheduler: DDIMScheduler, num_inference_steps: int, device: str | torch.device | None = None
) -> torch.Tensor:
    """Set LDM's DDIM timesteps ``range(0, T, T // S)[::-1] + steps_offset`` on a diffusers DDIM scheduler.

    For S dividing T (25, 50) these are diffusers' "leading" timesteps. Otherwise LDM visits ``ceil(T / (T // S))``
    timesteps, one more than S (30 steps: 991, 958, ..., 1, i.e. 31 model calls), while diffusers visits S starting
    at 958. The step size T // S, which ``DDIMScheduler.step`` uses to find the previous timestep, is the same in both,
    so only ``scheduler.timesteps`` changes.

    Args:
        scheduler (`DDIMScheduler`): typically from `ldm_ddim_scheduler`.
        num_inference_steps (`int`): S, as passed to LDM's ``DDIMSampler.sample``.
        device (`str` or `torch.device`, *optional*): device of the timesteps.

    Returns:
        `torch.Tensor`: the timesteps now in ``scheduler.timesteps``, descending.
    """
    num_train = scheduler.config["num_train_timesteps"]
    if not 1 <= num_inference_steps <= num_train:
        raise ValueError(f"num_inference_steps must be in [1, {num_train}], got {num_inference_steps}")
    # diffusers annotates device as `str | torch.device` with a None default; None is accepted (keeps the device).
    scheduler.set_timesteps(num_inference_steps, device=cast("str | torch.device", device))
    step = num_train // num_inference_steps
    ldm = torch.arange(0, num_train, step, dtype=torch.long).flip(0) + scheduler.config["steps_offset"]
    scheduler.timesteps = ldm.to(device=scheduler.timesteps.device)
    return scheduler.timesteps


def shift_snr(scheduler: DDIMScheduler, scale: float) -> DDIMScheduler:
    """A copy of ``scheduler`` whose signal-to-noise ratio is divided by ``scale**2`` at every timestep.

    log SNR'(t) = log SNR(t) - 2 log(scale), i.e. abar'(t) = SNR'(t) / (1 + SNR'(t)); the new betas are passed as
    ``trained_betas``. The form is [unverified] for humananim (spec genblocks §3, config ``snr_shift=None``); scale 1 is
    the identity.

    Args:
        scheduler (`DDIMScheduler`): any diffusers scheduler with ``alphas_cumprod`` that accepts ``trained_betas``
            (DDIM, DDPM, ...).
        scale (`float`): > 0; values above 1 add noise (lower SNR), as for higher resolutions.

    Returns:
        A new scheduler of the same class and configuration with shifted betas.
    """
    if scale <= 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    alphas_cumprod = scheduler.alphas_cumprod.double()
    snr = alphas_cumprod / (1.0 - alphas_cumprod) / scale**2
    shifted = snr / (1.0 + snr)
    previous = torch.cat([shifted.new_ones(1), shifted[:-1]])
    betas = 1.0 - shifted / previous
    # from_config returns (scheduler, unused kwargs) only with return_unused_kwargs=True; diffusers has no overload.
    return cast(DDIMScheduler, type(scheduler).from_config(scheduler.config, trained_betas=betas.tolist()))


def q_sample_start(
    latents: torch.Tensor,
    scheduler: DDIMScheduler,
    timestep: int = 999,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Starting latents x_T = sqrt(abar_t) z + sqrt(1 - abar_t) eps instead of pure noise (``scheduler.add_noise``).

    X-Portrait and DiffPortrait3D start from the VAE latent of the source (or of a render) at t = 999, where
    sqrt(abar) ~ 0.068 keeps its coarse layout.

    Args:
        latents (`torch.Tensor`): clean, scaled VAE latents z of any shape, e.g. (B, C, H, W) or (B, C, F, H, W).
        scheduler (`DDIMScheduler`): provides ``alphas_cumprod``.
        timestep (`int`, defaults to 999): training timestep t in [0, num_train_timesteps).
        noise (`torch.Tensor`, *optional*): eps with the shape of ``latents``; drawn with ``generator`` if not given.
        generator (`torch.Generator`, *optional*): seeds the drawn noise.

    Returns:
        `torch.Tensor`: x_t with the shape and dtype of ``latents``.
    """
    num_train = scheduler.config["num_train_timesteps"]
    if not 0 <= timestep < num_train:
        raise ValueError(f"timestep must be in [0, {num_train}), got {timestep}")
    if noise is None:
        noise = torch.randn(latents.shape, generator=generator, dtype=latents.dtype, device=latents.device)
    elif noise.shape != latents.shape:
        raise ValueError(f"noise must have the shape of latents {tuple(latents.shape)}, got {tuple(noise.shape)}")
    timesteps = torch.full((latents.shape[0],), timestep, dtype=torch.long, device=latents.device)
    # diffusers annotates timesteps as the legacy torch.IntTensor; any integer tensor is what it takes.
    return scheduler.add_noise(latents, noise, cast(torch.IntTensor, timesteps))


# --------------------------------------------------------------------------------------------------------------------
# Sliding windows over frames
# --------------------------------------------------------------------------------------------------------------------


def sliding_windows(
    num_frames: int, window: int = 16, overlap: int = 4, offset: int = 0, wrap: bool = True
) -> list[list[int]]:
    """Frame indices of the overlapping windows that cover a sequence (stride ``window - overlap``).

    With ``wrap=True`` (X-Portrait) the windows start at ``offset`` and wrap around the end modulo ``num_frames``:
    ``[(start + j) % num_frames for j in range(window)]`` for ``start in range(offset, offset + num_frames - overlap,
    window - overlap)``; a pipeline draws a new random ``offset`` in [0, num_frames) at every step so the window
    seams move. With ``wrap=False`` the windows start at 0 and the last one is aligned to the end of the sequence.
    A sequence no longer than ``window`` gives the single window ``[0, ..., num_frames - 1]`` (whatever the offset), so
    windowed denoising then equals one plain pass.

    Args:
        num_frames (`int`): F >= 1.
        window (`int`, defaults to 16): frames per window, >= 1.
        overlap (`int`, defaults to 4): frames shared by consecutive windows, in [0, window).
        offset (`int`, defaults to 0): first frame of the first window; taken modulo ``num_frames``. Must be 0 when
            ``wrap=False``.
        wrap (`bool`, defaults to `True`): wrap windows around the end of the sequence.

    Returns:
        `list[list[int]]`: one list of ``window`` frame indices per window (``num_frames`` indices if F <= window).
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if not 0 <= overlap < window:
        raise ValueError(f"overlap must be in [0, window={window}), got {overlap}")
    if not wrap and offset != 0:
        raise ValueError(f"offset must be 0 when wrap=False (windows cannot start mid-sequence), got {offset}")
    if num_frames <= window:
        return [list(range(num_frames))]
    stride = window - overlap
    if wrap:
        offset %= num_frames
        starts = range(offset, offset + num_frames - overlap, stride)
        return [[(start + j) % num_frames for j in range(window)] for start in starts]
    firsts = list(range(0, num_frames - window + 1, stride))
    if firsts[-1] + window < num_frames:
        firsts.append(num_frames - window)
    return [list(range(start, start + window)) for start in firsts]


def denoise_windows(
    predict_fn: Callable[[torch.Tensor, list[int]], torch.Tensor],
    latents: torch.Tensor,
    windows: Sequence[Sequence[int]],
    frame_dim: int = 2,
) -> torch.Tensor:
    """Run ``predict_fn`` on every window of frames and average the predictions where windows overlap.

    Args:
        predict_fn (`Callable`): ``predict_fn(window_latents, frame_indices) -> prediction`` of the same shape; gets
            ``latents`` restricted to the window's frames (in window order) and the indices, so it can select the
            matching per-frame conditions.
        latents (`torch.Tensor`): (B, C, F, H, W) with frames on ``frame_dim``.
        windows (`Sequence[Sequence[int]]`): frame indices per window, e.g. from `sliding_windows`; together they must
            cover every frame.
        frame_dim (`int`, defaults to 2): the frame axis of ``latents`` (0 for a (F, C, H, W) batch of frames).

    Returns:
        `torch.Tensor`: (B, C, F, H, W), for each frame the mean of the predictions of the windows containing it,
        in the dtype of the predictions (accumulated in at least float32).
    """
    if not -latents.ndim <= frame_dim < latents.ndim:
        raise ValueError(f"frame_dim {frame_dim} is out of range for latents of shape {tuple(latents.shape)}")
    frame_dim = frame_dim % latents.ndim
    num_frames = latents.shape[frame_dim]
    if len(windows) == 0:
        raise ValueError("windows must not be empty")
    counts = torch.zeros(num_frames, dtype=torch.float32, device=latents.device)
    total: torch.Tensor | None = None
    out_dtype = latents.dtype
    for window in windows:
        frames = list(window)
        if not frames or min(frames) < 0 or max(frames) >= num_frames:
            raise ValueError(f"window {frames} must hold frame indices in [0, {num_frames})")
        index = torch.tensor(frames, dtype=torch.long, device=latents.device)
        chunk = latents.index_select(frame_dim, index)
        prediction = predict_fn(chunk, frames)
        if prediction.shape != chunk.shape:
            raise ValueError(
                f"predict_fn must return the shape of its input {tuple(chunk.shape)}, got {tuple(prediction.shape)}"
            )
        if total is None:
            out_dtype = prediction.dtype
            acc_dtype = torch.promote_types(prediction.dtype, torch.float32)
            total = torch.zeros(latents.shape, dtype=acc_dtype, device=latents.device)
        total.index_add_(frame_dim, index, prediction.to(total.dtype))
        counts.index_add_(0, index, torch.ones(len(frames), device=latents.device))
    uncovered = (counts == 0).nonzero().flatten().tolist()
    if uncovered:
        raise ValueError(f"windows must cover every frame; frames {uncovered} are in no window")
    assert total is not None  # windows is not empty, so the loop ran
    shape = [1] * latents.ndim
    shape[frame_dim] = num_frames
    return (total / counts.view(shape)).to(out_dtype)


# --------------------------------------------------------------------------------------------------------------------
# Classifier-free guidance
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GuidanceBranch:
    """One forward pass of a guided step, declaring which conditions it replaces by their null values.

    Null values are the pipeline's business (empty text, zero latent, black-image embedding, reference bank off,
    ControlNets disabled); the branch only names what to drop. In X-Portrait's "controlnet_important" mode the
    unconditional branch drops text, reference and both ControlNets, i.e. it is the plain UNet.

    Args:
        name (`str`): label, e.g. `"null"` or `"text+ref"`.
        drop (`frozenset[str]`): conditions this branch runs without.
    """

    name: str
    drop: frozenset[str] = frozenset()

    def uses(self, condition: str) -> bool:
        """Whether this branch runs with ``condition`` (it is not dropped)."""
        return condition not in self.drop


def nested_branches(stages: Sequence[str | Sequence[str]]) -> list[GuidanceBranch]:
    """The chain of branches for `nested_cfg`: [null, stage 1, stages 1-2, ..., all stages].

    A stage is one condition name or a group of names added together. Branch 0 drops every condition of every stage;
    branch k keeps stages 1..k. Conditions that appear in no stage are never dropped.

    Example: ``nested_branches([("text", "ref", "motion", "local")])`` is plain CFG with a bare-UNet unconditional pass;
    ``nested_branches(["image", "text"])`` is InstructPix2Pix's [null, image, image+text].

    Args:
        stages (`Sequence[str | Sequence[str]]`): K >= 1 stages, in the order the guidance scales refer to them.

    Returns:
        `list[GuidanceBranch]`: K + 1 branches.
    """
    groups = [(stage,) if isinstance(stage, str) else tuple(stage) for stage in stages]
    if not groups or any(len(group) == 0 for group in groups):
        raise ValueError(f"stages must be a non-empty list of non-empty condition groups, got {list(stages)}")
    names = [name for group in groups for name in group]
    if len(set(names)) != len(names):
        raise ValueError(f"every condition must appear in one stage only, got {names}")
    branches = [GuidanceBranch("null", frozenset(names))]
    for k in range(1, len(groups) + 1):
        kept = [name for group in groups[:k] for name in group]
        branches.append(GuidanceBranch("+".join(kept), frozenset(names) - frozenset(kept)))
    return branches


def plain_cfg(eps_uncond: torch.Tensor, eps_cond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: eps_uncond + scale (eps_cond - eps_uncond).

    Args:
        eps_uncond (`torch.Tensor`): prediction without the condition, any shape.
        eps_cond (`torch.Tensor`): prediction with the condition, same shape.
        scale (`float`): guidance scale s; 1 returns ``eps_cond``, 0 returns ``eps_uncond``.
    """
    if eps_uncond.shape != eps_cond.shape:
        raise ValueError(
            f"eps_uncond and eps_cond must have the same shape, got {tuple(eps_uncond.shape)} and "
            f"{tuple(eps_cond.shape)}"
        )
    return eps_uncond + scale * (eps_cond - eps_uncond)


def nested_cfg(predictions: Sequence[torch.Tensor], scales: Sequence[float]) -> torch.Tensor:
    """Nested multi-condition guidance: eps_null + sum_k s_k (eps_<=k - eps_<=k-1).

    With K = 1 this is `plain_cfg`; with all s_k = 1 it telescopes to the full-condition prediction.

    Args:
        predictions (`Sequence[torch.Tensor]`): K + 1 predictions of equal shape, ordered as `nested_branches`:
            [eps_null, eps_c1, eps_c1c2, ..., eps_all].
        scales (`Sequence[float]`): K guidance scales s_1..s_K.

    Returns:
        `torch.Tensor`: the guided prediction, shape of the inputs.
    """
    if len(predictions) != len(scales) + 1:
        raise ValueError(
            f"predictions must hold one more tensor than scales (null branch first); got {len(predictions)} "
            f"predictions and {len(scales)} scales"
        )
    shape = predictions[0].shape
    for k, prediction in enumerate(predictions):
        if prediction.shape != shape:
            raise ValueError(f"predictions[{k}] has shape {tuple(prediction.shape)}, expected {tuple(shape)}")
    guided = predictions[0]
    for k, scale in enumerate(scales, start=1):
        guided = guided + scale * (predictions[k] - predictions[k - 1])
    return guided


# --------------------------------------------------------------------------------------------------------------------
# VAE
# --------------------------------------------------------------------------------------------------------------------


def _vae_factors(vae: AutoencoderKL, scaling_factor: float | None) -> tuple[float, float]:
    scale = scaling_factor if scaling_factor is not None else getattr(vae.config, "scaling_factor", None)
    shift = getattr(vae.config, "shift_factor", None)
    return (LDM_VAE_SCALING_FACTOR if scale is None else float(scale)), (0.0 if shift is None else float(shift))


def _to_frames(x: torch.Tensor, name: str) -> tuple[torch.Tensor, int | None]:
    """(B, C, F, H, W) -> (B*F, C, H, W) plus F, or a 4-D batch unchanged."""
    if x.ndim == 4:
        return x, None
    if x.ndim == 5:
        b, c, f, h, w = x.shape
        return x.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w), f
    raise ValueError(f"{name} must be (N, C, H, W) or (B, C, F, H, W), got shape {tuple(x.shape)}")


def _from_frames(x: torch.Tensor, num_frames: int | None) -> torch.Tensor:
    if num_frames is None:
        return x
    n, c, h, w = x.shape
    return x.reshape(n // num_frames, num_frames, c, h, w).permute(0, 2, 1, 3, 4)


def vae_decode_chunked(
    vae: AutoencoderKL, latents: torch.Tensor, chunk_size: int = 16, scaling_factor: float | None = None
) -> torch.Tensor:
    """Decode scaled latents in chunks of frames (X-Portrait's ``vae_bs``) to bound memory.

    Latents are divided by the scaling factor (``vae.config.scaling_factor``, LDM's 0.18215 if the config has none)
    and shifted by ``vae.config.shift_factor`` when set, then decoded ``chunk_size`` images at a time.

    Args:
        vae (`AutoencoderKL`): the decoder.
        latents (`torch.Tensor`): (N, C, h, w) or (B, C, F, h, w) scaled latents.
        chunk_size (`int`, defaults to 16): images per decoder call.
        scaling_factor (`float`, *optional*): overrides the VAE config's factor.

    Returns:
        `torch.Tensor`: images in [-1, 1] (not clamped), (N, 3, H, W) or (B, 3, F, H, W), in the VAE's dtype.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    scale, shift = _vae_factors(vae, scaling_factor)
    flat, num_frames = _to_frames(latents, "latents")
    flat = flat.to(dtype=vae.dtype) / scale + shift
    images = [vae.decode(chunk).sample for chunk in flat.split(chunk_size)]
    return _from_frames(torch.cat(images), num_frames)


def encode_clip_prompt(
    tokenizer: CLIPTokenizer, text_encoder: CLIPTextModel, prompt: str = "", device: torch.device | None = None
) -> torch.Tensor:
    """CLIP context of one prompt, padded (and truncated) to the tokenizer's ``model_max_length`` as SD1.5 does
    (LDM's ``FrozenCLIPEmbedder``); the empty prompt gives the unconditional context.

    Args:
        tokenizer (`CLIPTokenizer`): The tokenizer.
        text_encoder (`CLIPTextModel`): The text encoder.
        prompt (`str`, defaults to `""`): The prompt.
        device (`torch.device`, *optional*): Where to run; defaults to ``text_encoder.device``.

    Returns:
        `torch.Tensor` of shape `(1, T, D)`: the last hidden state, ``T = model_max_length``.
    """
    tokens = tokenizer(
        [prompt], padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    )
    return text_encoder(tokens.input_ids.to(device if device is not None else text_encoder.device))[0]


def vae_encode(
    vae: AutoencoderKL,
    images: torch.Tensor,
    chunk_size: int = 16,
    sample: bool = True,
    generator: torch.Generator | None = None,
    scaling_factor: float | None = None,
) -> torch.Tensor:
    """Encode images to scaled latents, ``chunk_size`` images at a time (LDM's ``get_first_stage_encoding``).

    Args:
        vae (`AutoencoderKL`): the encoder.
        images (`torch.Tensor`): (N, 3, H, W) or (B, 3, F, H, W) in [-1, 1].
        chunk_size (`int`, defaults to 16): images per encoder call.
        sample (`bool`, defaults to `True`): draw from the posterior (LDM); `False` takes its mean.
        generator (`torch.Generator`, *optional*): seeds the posterior samples.
        scaling_factor (`float`, *optional*): overrides the VAE config's factor.

    Returns:
        `torch.Tensor`: (latent - shift_factor) * scaling_factor, (N, C, h, w) or (B, C, F, h, w).
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    scale, shift = _vae_factors(vae, scaling_factor)
    flat, num_frames = _to_frames(images, "images")
    latents = []
    for chunk in flat.to(dtype=vae.dtype).split(chunk_size):
        posterior = vae.encode(chunk).latent_dist
        latents.append(posterior.sample(generator) if sample else posterior.mode())
    return _from_frames((torch.cat(latents) - shift) * scale, num_frames)
