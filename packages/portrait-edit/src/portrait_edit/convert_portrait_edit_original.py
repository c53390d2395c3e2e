"""Convert the official checkpoints (``unet.pth`` + ``adapter.pth``) plus a base SD1.5 folder and a CLIP vision folder
into a ``PortraitEditPipeline`` folder (spec §7).

Upstream: bytedance/feature-preserve-portrait-editing@570c18ac9dc7da45285e80b222d40ffb673c4ce2 ``demo.py``
(``load_unet``: ``get_unet`` builds the SD UNet with ``conv_in`` widened to 8 channels and loads ``unet.pth`` after
``k.replace('module.', '')``; ``load_adapter``: ``Embedding_Adapter(output_nc=50)`` loads ``adapter.pth`` the same way).
Weights: Hugging Face ``ByteDance/feature-preserve-portrait-editing``,
``portrait_editing_models/{outfit,cartoon}/checkpoint-200000/{unet.pth, adapter.pth}``.

Both files are diffusers-named state dicts (the UNet's are ``UNet2DConditionModel`` keys, the adapter's ``vae2clip.*``
and ``linear1.*``), possibly with DDP ``module.`` prefixes; they are read with ``torch.load(weights_only=True)`` (or
safetensors) and loaded strictly: every model key must be filled and every checkpoint key used, with matching shapes,
or nothing is written (``strict=False`` writes anyway and reports). The adapter's sizes are read from ``adapter.pth``
(``vae2clip`` (768, 1024) -> 1024 pooled features; ``linear1`` (50, 54) -> 50 tokens out of 50 CLIP + 4 VAE tokens)
and checked against the CLIP tower. The VAE, text encoder, tokenizer and scheduler (as UniPC) come from the base folder,
the CLIP tower and its processor from the CLIP folder. The output folder is ``save_pretrained``'s (safetensors):
``unet/``, ``adapter/`` (``config.json`` with ``clip_tokens``, ``latent_channels``, ``output_tokens``, ...), ``vae/``,
``text_encoder/``, ``tokenizer/``, ``image_encoder/``, ``feature_extractor/``, ``scheduler/`` and ``model_index.json``
(with ``combine_type``), plus ``conversion_report.json``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from genblocks.diffusion.checkpoints import ConversionReport, PipelineConversionReport, read_ldm_checkpoint
from genblocks.errors import InputError
from portrait_edit.config import ModelConfig
from portrait_edit.modeling_portrait_edit import (
    COMBINE_TYPES,
    EmbeddingAdapter,
    build_base_components,
    clip_token_count,
)
from portrait_edit.pipeline_portrait_edit import PortraitEditPipeline

__all__ = ["adapter_from_state_dict", "convert_original_checkpoint", "load_matching"]

REPORT_NAME = "conversion_report.json"


def load_matching(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> ConversionReport:
    """Load the tensors whose names and shapes match ``model``'s; report the rest.

    Args:
        model (`nn.Module`): Modified in place.
        state_dict (`Mapping[str, torch.Tensor]`): Keys in the model's own naming (prefixes already stripped).

    Returns:
        `ConversionReport`: missing model keys, unused checkpoint keys, shape mismatches, loaded count.
    """
    targets = model.state_dict()
    report = ConversionReport()
    matched = {}
    for key, value in state_dict.items():
        if key not in targets:
            report.unexpected_keys.append(key)
        elif tuple(value.shape) != tuple(targets[key].shape):
            report.mismatched_keys.append(
                f"{key}: checkpoint {tuple(value.shape)} vs model {tuple(targets[key].shape)}"
            )
        else:
            matched[key] = value
    mismatched = {entry.split(":", 1)[0] for entry in report.mismatched_keys}
    report.missing_keys = sorted(k for k in targets if k not in matched and k not in mismatched)
    report.unexpected_keys.sort()
    report.loaded_keys = len(matched)
    model.load_state_dict(matched, strict=False)
    return report


def adapter_from_state_dict(
    state_dict: Mapping[str, torch.Tensor], latent_channels: int = 4, vae_pool: int = 2
) -> EmbeddingAdapter:
    """An :class:`EmbeddingAdapter` shaped like an official ``adapter.pth`` (weights not loaded yet).

    Args:
        state_dict (`Mapping[str, torch.Tensor]`): ``vae2clip.weight`` (D, F) and ``linear1.weight`` (N_out, N + C).
        latent_channels (`int`, defaults to 4): C, the VAE tokens.
        vae_pool (`int`, defaults to 2): The max-pool window (upstream 2); the latent side is ``sqrt(F) * pool``.

    Raises:
        InputError: the keys are missing or the shapes do not describe an adapter.
    """
    for key in ("vae2clip.weight", "linear1.weight"):
        if key not in state_dict:
            raise InputError(f"adapter checkpoint: expected key {key!r} (an Embedding_Adapter state dict)")
    clip_dim, features = state_dict["vae2clip.weight"].shape
    out_tokens, in_tokens = state_dict["linear1.weight"].shape
    side = math.isqrt(int(features))
    if side * side != features or in_tokens <= latent_channels:
        raise InputError(
            f"adapter checkpoint: vae2clip {(clip_dim, features)} / linear1 {(out_tokens, in_tokens)} do not describe "
            f"a square pooled latent and {latent_channels} VAE tokens"
        )
    return EmbeddingAdapter(
        clip_tokens=int(in_tokens) - latent_channels,
        clip_dim=int(clip_dim),
        latent_channels=latent_channels,
        latent_size=side * vae_pool,
        vae_pool=vae_pool,
        output_tokens=int(out_tokens),
    )


def convert_original_checkpoint(
    unet_path: str | os.PathLike,
    adapter_path: str | os.PathLike,
    base_model: str | os.PathLike,
    image_encoder: str | os.PathLike,
    output_dir: str | os.PathLike,
    combine_type: str = "concat",
    vae_pool: int = 2,
    strict: bool = True,
) -> PipelineConversionReport:
    """Official ``unet.pth`` + ``adapter.pth`` -> a ``PortraitEditPipeline`` folder.

    Args:
        unet_path (`str` or `os.PathLike`): ``unet.pth`` (``conv_in.weight`` (320, 8, 3, 3)).
        adapter_path (`str` or `os.PathLike`): ``adapter.pth``.
        base_model (`str` or `os.PathLike`): Diffusers SD1.5 folder (upstream: Realistic Vision); its UNet config is
            used (widened to 8 channels), its weights are not.
        image_encoder (`str` or `os.PathLike`): CLIP vision folder with its preprocessor config
            (``openai/clip-vit-base-patch32``).
        output_dir (`str` or `os.PathLike`): Where the pipeline folder goes.
        combine_type (`str`, defaults to `"concat"`): The released checkpoints use ``"concat"``.
        vae_pool (`int`, defaults to 2): The adapter's max-pool window.
        strict (`bool`, defaults to `True`): Refuse (write nothing) unless every key matches.

    Returns:
        `PipelineConversionReport`: components ``unet`` and ``adapter``, also written to ``conversion_report.json``.

    Raises:
        InputError: a file is missing or unreadable, the checkpoint matches nothing, the adapter does not fit the CLIP
            tower or the text (``combine_type="add"``), or (``strict``) a key does not match.
    """
    if combine_type not in COMBINE_TYPES:
        raise InputError(f"combine_type: expected one of {COMBINE_TYPES}, got {combine_type!r}")
    states = {}
    for name, path in (("unet", Path(unet_path)), ("adapter", Path(adapter_path))):
        if not path.is_file():
            raise InputError(f"{name} checkpoint {path}: no such file")
        try:
            states[name] = read_ldm_checkpoint(path)
        except ValueError as error:
            raise InputError(f"{name} checkpoint {path}: {error}") from None
    adapter = adapter_from_state_dict(states["adapter"], vae_pool=vae_pool)
    adapter_config = adapter.config
    factor_side = int(adapter_config["latent_size"])
    probe = ModelConfig(source="random", combine_type=combine_type, vae_pool=vae_pool)  # type: ignore[arg-type]
    components = build_base_components(base_model, image_encoder, probe, load_unet_weights=False)
    vae_config: Any = components.vae.config  # type: ignore[attr-defined]
    vae_factor = 2 ** (len(vae_config["block_out_channels"]) - 1)
    resolution = factor_side * vae_factor
    clip_tokens = clip_token_count(components.image_encoder)
    clip_width = int(components.image_encoder.config.hidden_size)
    built_for = (int(adapter_config["clip_tokens"]), int(adapter_config["clip_dim"]))
    if built_for != (clip_tokens, clip_width):
        raise InputError(
            f"adapter checkpoint {adapter_path}: built for {built_for[0]} CLIP tokens of width {built_for[1]}, but "
            f"the CLIP tower {image_encoder} gives {clip_tokens} of width {clip_width}"
        )
    expected_out = components.tokenizer.model_max_length if combine_type == "add" else clip_tokens
    if adapter.num_output_tokens != expected_out:
        raise InputError(
            f"adapter checkpoint {adapter_path}: {adapter.num_output_tokens} output tokens, but combine_type="
            f"{combine_type!r} needs {expected_out}"
        )
    components.adapter = adapter

    report = PipelineConversionReport()
    report.components["unet"] = load_matching(cast(nn.Module, components.unet), states["unet"])
    report.components["adapter"] = load_matching(components.adapter, states["adapter"])
    for name, source in (("unet", unet_path), ("adapter", adapter_path)):
        part = report.components[name]
        if part.loaded_keys == 0:
            raise InputError(
                f"{name} checkpoint {source} matches nothing of the {name} ({len(part.unexpected_keys)} keys, e.g. "
                f"{part.unexpected_keys[:3]}): not an official {name}.pth"
            )
    if strict and not report.is_exact:
        raise InputError(
            f"checkpoint {unet_path} / {adapter_path} does not match the model exactly "
            f"({report.unmatched_count()} keys): {report.summary()}; nothing written (strict=False writes anyway)"
        )
    pipeline = PortraitEditPipeline(**components.as_dict(), combine_type=combine_type)  # type: ignore[arg-type]
    output = Path(output_dir)
    pipeline.save_pretrained(output, safe_serialization=True)
    summary = {**report.to_dict(), "resolution": resolution, "combine_type": combine_type}
    (output / REPORT_NAME).write_text(json.dumps(summary, indent=2) + "\n")
    return report
