"""ID-Patch's own modules: the patch projection R_patch and the token projection R_token (spec id-patch §3).

Zhang et al., "ID-Patch: Robust ID Association for Group Photo Personalization", CVPR 2025, arXiv 2411.13632.
Upstream: bytedance/ID-Patch (inference only), commit 38096c9, ``modules/inferencer.py``: both projections are built by
diffusers' ``UNet2DConditionLoadersMixin._convert_ip_adapter_image_proj_to_diffusers`` from the two sub-state-dicts of
``id-patch.bin``; ``prompt_proj`` maps (N·F, 1, 512) face embeddings to (N·F, 16, 2048) ID tokens, ``patch_proj`` maps
them to (N·F, 3, 4096), reshaped to 3 × 64 × 64 RGB patches (lines ``id_prompt_projection`` / ``id_patch_projection``).

Which IP-Adapter projection the release uses is not documented (spec §8), so both fit:

- ``"faceid_mlp"``: diffusers' ``IPAdapterFaceIDImageProjection`` (IP-Adapter FaceID ``MLPProjModel``): Linear(D → D·mult)
  → GELU → Linear(→ tokens·dim) → reshape → LayerNorm(dim). For ``patch_proj`` the "tokens" are the 3 colour channels
  and dim is ``patch_size²``, so the LayerNorm normalises each 4096-long channel.
- ``"resampler"``: diffusers' ``IPAdapterPlusImageProjection`` (IP-Adapter Plus ``Resampler``), with 3 / ``num_tokens``
  learned queries.

Only the glue is written here: the reshapes to patches and to the B × (F·tokens) × dim context, the negative
(zero-embedding) tokens and a safetensors save format with one file per projection. The sizes, `IDPatchConfig`, live in
:mod:`id_patch.config` (no torch there, so loading a YAML config stays cheap) and are re-exported here.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, NamedTuple

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.models.embeddings import IPAdapterFaceIDImageProjection, IPAdapterPlusImageProjection
from safetensors.torch import load_file, save_file
from torch import nn

from id_patch.config import FACE_ANCHORS, PROJ_TYPES, IDPatchConfig

__all__ = [
    "FACE_ANCHORS",
    "PATCH_CHANNELS",
    "PROJ_TYPES",
    "IDPatchConfig",
    "IDPatchProjection",
    "IDPatchProjector",
    "build_projection",
]

logger = logging.getLogger(__name__)

PATCH_CHANNELS = 3
"""An ID patch is an RGB image added to the 3-channel ControlNet condition."""

PATCH_WEIGHTS_NAME = "patch_proj.safetensors"
PROMPT_WEIGHTS_NAME = "prompt_proj.safetensors"
CONFIG_NAME = "config.json"


def build_projection(config: IDPatchConfig, num_queries: int, output_dim: int) -> nn.Module:
    """One IP-Adapter-style projection of the configured type: (N, 1, face_dim) -> (N, num_queries, output_dim).

    Args:
        config (`IDPatchConfig`): type and sizes.
        num_queries (`int`): output tokens (3 colour channels for ``patch_proj``, ``num_tokens`` for ``prompt_proj``).
        output_dim (`int`): width per output token (``patch_size**2`` or ``token_dim``).

    Returns:
        `nn.Module`: an ``IPAdapterFaceIDImageProjection`` or an ``IPAdapterPlusImageProjection``.
    """
    if config.proj_type == "faceid_mlp":
        return IPAdapterFaceIDImageProjection(
            image_embed_dim=config.face_dim,
            cross_attention_dim=output_dim,
            mult=config.mlp_mult,
            num_tokens=num_queries,
        )
    return IPAdapterPlusImageProjection(
        embed_dims=config.face_dim,
        output_dims=output_dim,
        hidden_dims=config.resampler_hidden_dim,
        depth=config.resampler_depth,
        dim_head=config.resampler_dim_head,
        heads=config.resampler_heads,
        num_queries=num_queries,
        ffn_ratio=config.resampler_ff_mult,
    )


class IDPatchProjection(NamedTuple):
    """Both uses of a batch of face embeddings.

    Attributes:
        patches (`torch.Tensor`): (B, F, 3, patch_size, patch_size) ID patches.
        id_tokens (`torch.Tensor`): (B, F * num_tokens, token_dim) ID tokens, face-major (all tokens of face 0 first).
    """

    patches: torch.Tensor
    id_tokens: torch.Tensor


class IDPatchProjector(ModelMixin, ConfigMixin):
    """R_patch and R_token of ID-Patch: a face embedding becomes an RGB patch and ``num_tokens`` context tokens.

    A diffusers model (``ModelMixin``), so it is a regular pipeline component: ``pipe.to(...)``, and the pipeline's
    ``save_pretrained`` / ``from_pretrained`` carry it. Its own folder format (spec §7) is ``config.json`` plus one
    safetensors file per projection (`save_pretrained`), mirroring the two sub-state-dicts of upstream's
    ``id-patch.bin``. Parameters in diffusers' naming (``ff.net.0.proj.weight``, ``layers.0.attn.to_q.weight``, ...);
    `id_patch.convert_id_patch_original` maps the IP-Adapter naming of the official file.

    Args:
        face_dim, num_tokens, token_dim, patch_size, proj_type, mlp_mult, resampler_hidden_dim, resampler_depth,
        resampler_heads, resampler_dim_head, resampler_ff_mult, cond_clamp, face_anchor:
            the fields of `IDPatchConfig` (see there; same defaults). ``cond_clamp`` and ``face_anchor`` are stored so
            that a saved folder records how its condition images were made.

    Attributes:
        patch_proj (`nn.Module`): (N, 1, face_dim) -> (N, 3, patch_size**2).
        prompt_proj (`nn.Module`): (N, 1, face_dim) -> (N, num_tokens, token_dim).
    """

    config_name = CONFIG_NAME

    @register_to_config
    def __init__(
        self,
        face_dim: int = 512,
        num_tokens: int = 16,
        token_dim: int = 2048,
        patch_size: int = 64,
        proj_type: str = "faceid_mlp",
        mlp_mult: int = 1,
        resampler_hidden_dim: int = 1280,
        resampler_depth: int = 4,
        resampler_heads: int = 20,
        resampler_dim_head: int = 64,
        resampler_ff_mult: int = 4,
        cond_clamp: bool = False,
        face_anchor: str = "nose",
    ) -> None:
        super().__init__()
        config = IDPatchConfig(
            face_dim=face_dim,
            num_tokens=num_tokens,
            token_dim=token_dim,
            patch_size=patch_size,
            proj_type=proj_type,
            mlp_mult=mlp_mult,
            resampler_hidden_dim=resampler_hidden_dim,
            resampler_depth=resampler_depth,
            resampler_heads=resampler_heads,
            resampler_dim_head=resampler_dim_head,
            resampler_ff_mult=resampler_ff_mult,
            cond_clamp=cond_clamp,
            face_anchor=face_anchor,
        )
        self.patch_proj = build_projection(config, PATCH_CHANNELS, patch_size * patch_size)
        self.prompt_proj = build_projection(config, num_tokens, token_dim)

    @classmethod
    def from_id_patch_config(cls, config: IDPatchConfig) -> IDPatchProjector:
        """Build randomly initialised projections from an `IDPatchConfig`."""
        return cls(**config.to_dict())

    @property
    def id_patch_config(self) -> IDPatchConfig:
        """The configuration as an `IDPatchConfig`."""
        return IDPatchConfig.from_dict(dict(self.config))

    def _as_tokens(self, face_embeds: torch.Tensor) -> torch.Tensor:
        """(..., D) -> (N, 1, D) in the module's dtype and device."""
        face_dim = self.config.face_dim
        if face_embeds.shape[-1] != face_dim:
            raise ValueError(f"face embeddings must end in face_dim={face_dim}, got shape {tuple(face_embeds.shape)}.")
        return face_embeds.reshape(-1, 1, face_dim).to(device=self.device, dtype=self.dtype)

    def patches(self, face_embeds: torch.Tensor) -> torch.Tensor:
        """ID patches of faces.

        Args:
            face_embeds (`torch.Tensor`): (F, D), (F, 1, D) or (B, F, D) face embeddings.

        Returns:
            `torch.Tensor`: (..., 3, patch_size, patch_size), the leading dims of ``face_embeds`` without D (and
            without a singleton token axis for (F, 1, D)).
        """
        lead = face_embeds.shape[:-1]
        if face_embeds.ndim == 3 and face_embeds.shape[1] == 1:
            lead = face_embeds.shape[:1]
        size = self.config.patch_size
        out = self.patch_proj(self._as_tokens(face_embeds))
        return out.reshape(*lead, PATCH_CHANNELS, size, size)

    def id_tokens(self, face_embeds: torch.Tensor) -> torch.Tensor:
        """ID tokens to append to the text context (upstream ``id_embeds``).

        Args:
            face_embeds (`torch.Tensor`): (B, F, D), or (F, D) for one sample.

        Returns:
            `torch.Tensor`: (B, F * num_tokens, token_dim); the tokens of face 0 come first.
        """
        if face_embeds.ndim == 2:
            face_embeds = face_embeds[None]
        if face_embeds.ndim != 3:
            raise ValueError(f"face_embeds must be (B, F, D) or (F, D), got shape {tuple(face_embeds.shape)}.")
        batch = face_embeds.shape[0]
        tokens = self.prompt_proj(self._as_tokens(face_embeds))
        return tokens.reshape(batch, -1, self.config.token_dim)

    def negative_id_tokens(self, num_faces: int, batch_size: int = 1) -> torch.Tensor:
        """ID tokens of the unconditional branch: ``prompt_proj(zeros(F, 1, D))`` (spec §5, upstream
        ``negative_id_embeds``).

        Args:
            num_faces (`int`): F.
            batch_size (`int`, defaults to 1): B.

        Returns:
            `torch.Tensor`: (B, F * num_tokens, token_dim).
        """
        zeros = torch.zeros(batch_size, num_faces, self.config.face_dim, device=self.device, dtype=self.dtype)
        return self.id_tokens(zeros)

    def forward(self, face_embeds: torch.Tensor) -> IDPatchProjection:
        """Both projections of a batch of faces.

        Args:
            face_embeds (`torch.Tensor`): (B, F, D).

        Returns:
            `IDPatchProjection`: patches (B, F, 3, p, p) and ID tokens (B, F * num_tokens, token_dim).
        """
        if face_embeds.ndim != 3:
            raise ValueError(f"face_embeds must be (B, F, D), got shape {tuple(face_embeds.shape)}.")
        return IDPatchProjection(patches=self.patches(face_embeds), id_tokens=self.id_tokens(face_embeds))

    def save_pretrained(
        self, save_directory: str | os.PathLike, is_main_process: bool = True, safe_serialization: bool = True
    ) -> None:
        """Write ``config.json``, ``patch_proj.safetensors`` and ``prompt_proj.safetensors`` (spec §7).

        The signature is the subset of ``ModelMixin.save_pretrained`` that ``DiffusionPipeline.save_pretrained``
        passes when saving this component.

        Args:
            save_directory (`str` or `os.PathLike`): the folder (created if needed).
            is_main_process (`bool`, defaults to `True`): write nothing when `False` (distributed runs).
            safe_serialization (`bool`, defaults to `True`): must be `True`; only safetensors are written.
        """
        if not safe_serialization:
            raise ValueError("IDPatchProjector saves safetensors only; `safe_serialization` must be True.")
        if not is_main_process:
            return
        directory = Path(save_directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.save_config(directory)
        for name, module in (("patch_proj", self.patch_proj), ("prompt_proj", self.prompt_proj)):
            tensors = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
            save_file(tensors, str(directory / f"{name}.safetensors"), metadata={"format": "pt"})
        logger.info("Saved IDPatchProjector to %s", directory)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any) -> IDPatchProjector:
        """Load a folder written by `save_pretrained` (local folders only).

        ``DiffusionPipeline.from_pretrained`` calls this with the keyword arguments of ``ModelMixin.from_pretrained``
        (``torch_dtype``, ``device_map``, ``low_cpu_mem_usage``, ...); the signature is therefore the base class's.
        ``torch_dtype`` (or ``dtype``) is applied; ``device_map``, ``max_memory``, ``offload_folder``, ``variant`` and
        ``quantization_config`` must be left unset; the remaining loader switches do not apply and are ignored.

        Args:
            pretrained_model_name_or_path (`str` or `os.PathLike`): the folder.

        Returns:
            `IDPatchProjector`: in eval mode.
        """
        directory = Path(pretrained_model_name_or_path)
        unsupported = {
            k: kwargs[k]
            for k in ("device_map", "max_memory", "offload_folder", "variant", "quantization_config")
            if kwargs.get(k) is not None
        }
        if unsupported:
            raise ValueError(f"IDPatchProjector.from_pretrained does not support {sorted(unsupported)}.")
        config_file = directory / CONFIG_NAME
        if not config_file.is_file():
            raise FileNotFoundError(f"No {CONFIG_NAME} in {directory}; expected a folder written by save_pretrained.")
        with open(config_file, encoding="utf-8") as handle:
            config = IDPatchConfig.from_dict(json.load(handle))
        model = cls.from_id_patch_config(config)
        for name, module in (("patch_proj", model.patch_proj), ("prompt_proj", model.prompt_proj)):
            path = directory / f"{name}.safetensors"
            if not path.is_file():
                raise FileNotFoundError(f"Missing {path} (IDPatchProjector folders hold {name}.safetensors).")
            module.load_state_dict(load_file(str(path)), strict=True)
        torch_dtype = kwargs.get("torch_dtype") or kwargs.get("dtype")
        if torch_dtype is not None:
            model = model.to(torch_dtype)
        return model.eval()

    def extra_repr(self) -> str:
        cfg = self.config
        return (
            f"proj_type={cfg.proj_type!r}, face_dim={cfg.face_dim}, tokens={cfg.num_tokens}x{cfg.token_dim}, "
            f"patch={PATCH_CHANNELS}x{cfg.patch_size}x{cfg.patch_size}"
        )
