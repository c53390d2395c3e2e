"""Read CompVis/LDM-format single-file checkpoints (SD1.5 layout) into diffusers / transformers models (spec genblocks
§7 "LDM single-file checkpoints").

X-Portrait's ``model_state-415001.th`` and DiffPortrait3D's ``model_state-540000-001.th`` are ``torch.load`` dicts,
optionally wrapped in ``state_dict`` and with DDP ``module.`` prefixes, whose top-level prefixes name the modules:
``model.diffusion_model.`` (UNet, plus motion modules), ``first_stage_model.`` (VAE), ``cond_stage_model.`` (CLIP) and
one prefix per ControlNet or reference UNet (``control_model.``, ``pose_control_model.``, ...).

The key maps are diffusers' own single-file converters (``diffusers/loaders/single_file_utils.py``:
``convert_ldm_unet_checkpoint``, ``convert_controlnet_checkpoint``, ``convert_ldm_vae_checkpoint``,
``convert_ldm_clip_checkpoint``). This module adds what they lack: prefix splitting, a report of the keys that did not
match (in LDM names for the checkpoint side, diffusers names for the model side), shape checks before loading, and
the ControlNet hint encoder for any depth (diffusers hard-codes its last convolution at ``input_hint_block.14``, i.e.
four hint widths). Motion-module keys (``*_motion_module.*``) are left unconverted and reported as unexpected: the
packages map them with their own index maps. Files are read with ``torch.load(weights_only=True)`` or safetensors.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Self, TypeVar, cast

import torch
from diffusers.loaders.single_file_utils import (
    LDM_CONTROLNET_KEY,
    LDM_UNET_KEY,
    convert_controlnet_checkpoint,
    convert_ldm_clip_checkpoint,
    convert_ldm_unet_checkpoint,
    convert_ldm_vae_checkpoint,
)
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
from diffusers.models.controlnets.controlnet import ControlNetModel
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
from safetensors.torch import load_file
from torch import nn
from transformers import CLIPTextModel, PreTrainedModel

from genblocks.diffusion.temporal import TemporalModuleSet, convert_ldm_motion_state_dict
from genblocks.errors import InputError

__all__ = [
    "LDM_SCHEDULER_KEYS",
    "LDM_TEXT_ENCODER_PREFIX",
    "LDM_UNET_PREFIX",
    "LDM_VAE_PREFIX",
    "OPTIONAL_LDM_COMPONENTS",
    "ConversionReport",
    "LdmCheckpointReport",
    "PipelineConversionReport",
    "clean_state_dict",
    "convert_ldm_component",
    "convert_reference_ldm_state_dict",
    "load_ldm_checkpoint",
    "load_ldm_component",
    "load_ldm_motion_modules",
    "load_ldm_reference_unet",
    "read_ldm_checkpoint",
    "save_components",
    "split_by_prefix",
    "split_ldm_motion_keys",
    "write_converted_pipeline",
]

logger = logging.getLogger(__name__)

LDM_UNET_PREFIX = "model.diffusion_model."
"""Top-level prefix of the denoising UNet in LDM checkpoints."""
LDM_VAE_PREFIX = "first_stage_model."
"""Top-level prefix of the KL autoencoder."""
LDM_TEXT_ENCODER_PREFIX = "cond_stage_model."
"""Top-level prefix of the CLIP text encoder (``FrozenCLIPEmbedder``: ``transformer.text_model.*`` below it)."""

_VAE_KEY = "first_stage_model."  # one of diffusers' LDM_VAE_KEYS
_HINT = "input_hint_block."


@dataclass
class ConversionReport:
    """What did not match when an LDM state dict was converted into a model.

    Attributes:
        missing_keys (`list[str]`): model keys (diffusers names) the checkpoint did not provide.
        unexpected_keys (`list[str]`): checkpoint keys (LDM names, without the component prefix) that were not loaded:
            no converter rule maps them (e.g. motion modules) or the model has no such parameter.
        mismatched_keys (`list[str]`): ``"ldm_key -> model_key: checkpoint (shape) vs model (shape)"``; not loaded.
        loaded_keys (`int`): model keys the checkpoint filled.
    """

    missing_keys: list[str] = field(default_factory=list)
    unexpected_keys: list[str] = field(default_factory=list)
    mismatched_keys: list[str] = field(default_factory=list)
    loaded_keys: int = 0

    @property
    def is_exact(self) -> bool:
        """True when every model key was loaded and every checkpoint key was used."""
        return not (self.missing_keys or self.unexpected_keys or self.mismatched_keys)


@dataclass
class LdmCheckpointReport:
    """Per-component reports of `load_ldm_checkpoint`.

    Attributes:
        components (`dict[str, ConversionReport]`): one report per requested prefix.
        unclaimed_keys (`list[str]`): full checkpoint keys under none of the requested prefixes.
    """

    components: dict[str, ConversionReport] = field(default_factory=dict)
    unclaimed_keys: list[str] = field(default_factory=list)

    @property
    def is_exact(self) -> bool:
        """True when every component loaded exactly and no key was left unclaimed."""
        return not self.unclaimed_keys and all(r.is_exact for r in self.components.values())


LDM_SCHEDULER_KEYS = frozenset(
    {
        "betas",
        "alphas_cumprod",
        "alphas_cumprod_prev",
        "sqrt_alphas_cumprod",
        "sqrt_one_minus_alphas_cumprod",
        "log_one_minus_alphas_cumprod",
        "sqrt_recip_alphas_cumprod",
        "sqrt_recipm1_alphas_cumprod",
        "posterior_variance",
        "posterior_log_variance_clipped",
        "posterior_mean_coef1",
        "posterior_mean_coef2",
        "logvar",
    }
)
"""Top-level buffers of a complete LDM training checkpoint (the DDPM schedule): recomputed by diffusers' scheduler,
so a converter ignores them instead of calling them unclaimed."""


@dataclass
class PipelineConversionReport:
    """What an official single-file checkpoint of a reference-UNet paper (X-Portrait, DiffPortrait3D, ...) did and did
    not load, per component, plus its temporal (motion or cross-view) modules.

    Attributes:
        components (`dict[str, ConversionReport]`): per component (``unet``, ``reference_unet``, ControlNets, ...).
        temporal (`ConversionReport`): the temporal modules (LDM names with the ``model.diffusion_model.`` prefix).
        ignored_keys (`list[str]`): keys known to be unused (scheduler buffers, upstream quirks).
        unclaimed_keys (`list[str]`): checkpoint keys under none of the paper's prefixes.
    """

    components: dict[str, ConversionReport] = field(default_factory=dict)
    temporal: ConversionReport = field(default_factory=ConversionReport)
    ignored_keys: list[str] = field(default_factory=list)
    unclaimed_keys: list[str] = field(default_factory=list)
    temporal_name = "temporal_modules"

    @classmethod
    def from_unclaimed(cls, keys: Iterable[str]) -> Self:
        """A report whose unclaimed keys are ``keys`` less the LDM scheduler buffers (those go to ``ignored_keys``)."""
        keys = sorted(keys)
        return cls(
            ignored_keys=[k for k in keys if k in LDM_SCHEDULER_KEYS],
            unclaimed_keys=[k for k in keys if k not in LDM_SCHEDULER_KEYS],
        )

    @property
    def reports(self) -> dict[str, ConversionReport]:
        """Every report by name, the temporal modules under :attr:`temporal_name`."""
        return {**self.components, self.temporal_name: self.temporal}

    @property
    def is_exact(self) -> bool:
        """Every model key loaded and every checkpoint key used (ignored keys aside)."""
        return not self.unclaimed_keys and all(report.is_exact for report in self.reports.values())

    @property
    def loaded_keys(self) -> int:
        """Model keys filled from the checkpoint, over all components."""
        return sum(report.loaded_keys for report in self.reports.values())

    def unmatched_count(self) -> int:
        """Missing + unexpected + mismatched keys over all components, plus unclaimed keys."""
        per_report = sum(
            len(r.missing_keys) + len(r.unexpected_keys) + len(r.mismatched_keys) for r in self.reports.values()
        )
        return per_report + len(self.unclaimed_keys)

    def check_matches(self, source: str | os.PathLike) -> None:
        """Refuse a checkpoint that filled nothing (a random state dict, another paper's file): nothing is written.

        Raises:
            InputError: no model key was loaded; the message names ``source`` and a few of its keys.
        """
        if self.loaded_keys == 0:
            keys = [*self.unclaimed_keys, *(k for r in self.reports.values() for k in r.unexpected_keys)]
            raise InputError(
                f"checkpoint {source} matches nothing of this model ({len(keys)} keys, e.g. {keys[:3]}): "
                "not an official checkpoint of this paper"
            )

    def to_dict(self) -> dict[str, object]:
        """JSON-ready view."""
        return {
            "is_exact": self.is_exact,
            "loaded_keys": self.loaded_keys,
            "components": {name: asdict(report) for name, report in self.components.items()},
            self.temporal_name: asdict(self.temporal),
            "ignored_keys": self.ignored_keys,
            "unclaimed_keys": self.unclaimed_keys,
        }

    def summary(self) -> str:
        """One line per component: loaded / missing / unexpected / mismatched counts."""
        lines = [
            f"{name}: {report.loaded_keys} loaded, {len(report.missing_keys)} missing, "
            f"{len(report.unexpected_keys)} unexpected, {len(report.mismatched_keys)} mismatched"
            for name, report in self.reports.items()
        ]
        lines.append(f"ignored: {len(self.ignored_keys)}, unclaimed: {len(self.unclaimed_keys)}")
        return "\n".join(lines)


def clean_state_dict(checkpoint: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Unwrap a ``{"state_dict": ...}`` container, drop non-tensor entries and strip leading ``module.`` prefixes.

    Args:
        checkpoint (`Mapping[str, Any]`): what ``torch.load`` returned.

    Returns:
        `dict[str, torch.Tensor]`: flat state dict.
    """
    inner = checkpoint.get("state_dict")
    if isinstance(inner, Mapping):
        checkpoint = inner
    cleaned: dict[str, torch.Tensor] = {}
    skipped = []
    for key, value in checkpoint.items():
        if not isinstance(value, torch.Tensor):
            skipped.append(key)
            continue
        name = key
        while name.startswith("module."):
            name = name.removeprefix("module.")
        if name in cleaned:
            raise ValueError(f"checkpoint has key {name!r} both with and without a 'module.' prefix")
        cleaned[name] = value
    if skipped:
        logger.info("Ignored %d non-tensor checkpoint entries: %s", len(skipped), skipped[:10])
    return cleaned


def read_ldm_checkpoint(path: str | os.PathLike, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Read a single-file checkpoint (``.safetensors``, or ``.ckpt``/``.th``/``.pt``/``.bin`` with
    ``torch.load(weights_only=True)``) and clean it with `clean_state_dict`.

    Args:
        path (`str` or `os.PathLike`): the file.
        trust_pickle (`bool`, defaults to `False`): Unpickle a ``torch.load`` file in full (it may run code: only for
            a file from a source you trust, holding objects ``weights_only`` refuses).

    Returns:
        `dict[str, torch.Tensor]`: flat state dict on CPU with the LDM top-level prefixes.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint path {path} is not a file")
    if path.suffix == ".safetensors":
        return clean_state_dict(load_file(path))
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"checkpoint {path} holds objects other than tensors and plain containers, which "
            f"torch.load(weights_only=True) refuses to unpickle: {error}"
        ) from error
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"checkpoint {path} must hold a dict of tensors, got {type(checkpoint).__name__}")
    return clean_state_dict(checkpoint)


def split_by_prefix(
    state_dict: Mapping[str, torch.Tensor], prefixes: Iterable[str]
) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
    """Group keys by top-level prefix (longest match first) and strip it.

    Args:
        state_dict (`Mapping[str, torch.Tensor]`): flat checkpoint.
        prefixes (`Iterable[str]`): e.g. ``["model.diffusion_model.", "pose_control_model."]``.

    Returns:
        `tuple`: ``({prefix: {key_without_prefix: tensor}}, {key: tensor} under no prefix)``.
    """
    ordered = sorted(set(prefixes), key=len, reverse=True)
    if any(not p for p in ordered):
        raise ValueError("prefixes must be non-empty strings")
    groups: dict[str, dict[str, torch.Tensor]] = {p: {} for p in ordered}
    rest: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        prefix = next((p for p in ordered if key.startswith(p)), None)
        if prefix is None:
            rest[key] = value
        else:
            groups[prefix][key.removeprefix(prefix)] = value
    return groups, rest


def _convert_hint_block(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``input_hint_block.{0, 2, ..., 2n+2}`` -> ``controlnet_cond_embedding.{conv_in, blocks.0..n-1, conv_out}``."""
    by_index: dict[int, list[str]] = {}
    for key in state_dict:
        if key.startswith(_HINT):
            digits = key.removeprefix(_HINT).split(".", 1)[0]
            if digits.isdigit():
                by_index.setdefault(int(digits), []).append(key)
    indices = sorted(by_index)
    if len(indices) < 2:
        return {}
    targets = ["conv_in", *[f"blocks.{i}" for i in range(len(indices) - 2)], "conv_out"]
    converted = {}
    for index, target in zip(indices, targets, strict=True):
        for key in by_index[index]:
            suffix = key.removeprefix(f"{_HINT}{index}.")
            converted[f"controlnet_cond_embedding.{target}.{suffix}"] = state_dict[key]
    return converted


def _convert_keys(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor | None]:
    """Diffusers-named state dict from a prefix-free LDM one, with diffusers' converters chosen by model type."""
    if isinstance(model, UNet2DConditionModel):
        prefixed = {LDM_UNET_KEY + k: v for k, v in state_dict.items()}
        return convert_ldm_unet_checkpoint(prefixed, dict(model.config))
    if isinstance(model, ControlNetModel):
        rest = {LDM_CONTROLNET_KEY + k: v for k, v in state_dict.items() if not k.startswith(_HINT)}
        converted = convert_controlnet_checkpoint(rest, dict(model.config))
        converted.update(_convert_hint_block(state_dict))
        return converted
    if isinstance(model, AutoencoderKL):
        prefixed = {_VAE_KEY + k: v for k, v in state_dict.items()}
        return convert_ldm_vae_checkpoint(prefixed, dict(model.config))
    if isinstance(model, CLIPTextModel):
        converted = convert_ldm_clip_checkpoint({LDM_TEXT_ENCODER_PREFIX + k: v for k, v in state_dict.items()})
        if not hasattr(model, "text_model"):  # CLIPTextModel is flat in transformers >= 5.6
            converted = {k.removeprefix("text_model."): v for k, v in converted.items()}
        return converted
    raise ValueError(
        "model must be a diffusers UNet2DConditionModel, ControlNetModel or AutoencoderKL, or a transformers "
        f"CLIPTextModel; got {type(model).__name__}"
    )


def convert_ldm_component(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Convert a prefix-free LDM state dict to ``model``'s key names and report what does not match.

    Supported: ``UNet2DConditionModel`` (SD1.5 ``input_blocks``/``middle_block``/``output_blocks``/``out``; a reference
    UNet without ``out`` reports ``conv_norm_out``/``conv_out`` missing), ``ControlNetModel`` (``input_hint_block``,
    ``zero_convs``, ``middle_block_out``; any hint depth), ``AutoencoderKL`` (``encoder``/``decoder``/
    ``quant_conv``/``post_quant_conv``) and ``CLIPTextModel`` (``transformer.text_model.*``). The model's config
    drives the converter (e.g. ``layers_per_block``).

    Args:
        model (`nn.Module`): target model; only read.
        state_dict (`Mapping[str, torch.Tensor]`): keys without the component's top-level prefix.

    Returns:
        `tuple`: (state dict with the model's key names and shapes, ready for ``load_state_dict``; report).
    """
    # Fresh tensor objects that are not views, so each converted tensor (or a view diffusers made of it, such as the
    # VAE attention 1x1-conv -> linear slices) can be traced back to its LDM key by identity.
    source = {key: value.detach() for key, value in state_dict.items()}
    origin = {id(value): key for key, value in source.items()}
    try:
        converted = _convert_keys(model, source)
    except KeyError as error:
        raise ValueError(
            f"state_dict lacks {error}, which diffusers' converter requires for this {type(model).__name__} config"
        ) from error

    targets = model.state_dict()
    matched: dict[str, torch.Tensor] = {}
    mismatched: set[str] = set()
    used: set[str] = set()
    report = ConversionReport()
    for model_key, value in converted.items():
        if value is None:
            continue
        base = value._base if value._base is not None else value
        ldm_key = origin.get(id(base), origin.get(id(value), model_key))
        if model_key not in targets:
            if model_key.endswith("embeddings.position_ids"):  # non-persistent buffer in current transformers
                used.add(ldm_key)
            continue
        if value.shape != targets[model_key].shape:
            report.mismatched_keys.append(
                f"{ldm_key} -> {model_key}: checkpoint {tuple(value.shape)} vs model {tuple(targets[model_key].shape)}"
            )
            mismatched.add(model_key)
            used.add(ldm_key)
            continue
        matched[model_key] = value
        used.add(ldm_key)
    report.missing_keys = sorted(k for k in targets if k not in matched and k not in mismatched)
    report.unexpected_keys = sorted(k for k in source if k not in used)
    report.loaded_keys = len(matched)
    return matched, report


def load_ldm_component(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> ConversionReport:
    """`convert_ldm_component`, then load the matched tensors into ``model`` (``strict=False``).

    Args:
        model (`nn.Module`): UNet, ControlNet, VAE or CLIP text encoder, modified in place.
        state_dict (`Mapping[str, torch.Tensor]`): keys without the component's top-level prefix.

    Returns:
        `ConversionReport`: missing, unexpected and shape-mismatched keys.
    """
    matched, report = convert_ldm_component(model, state_dict)
    model.load_state_dict(matched, strict=False)
    return report


_LDM_MOTION_KEY = re.compile(r"^(input_blocks|output_blocks|middle_block)_motion_module\.")
_REFERENCE_UNUSED = re.compile(r"^input_hint_block\.")
_REFERENCE_NO_OUT = ("conv_norm_out.", "conv_out.")


def split_ldm_motion_keys(
    unet_state: Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Split an LDM UNet state dict into its motion-module keys (``{input,output}_blocks_motion_module.*``,
    ``middle_block_motion_module.*``: AnimateDiff-style ``UNetModel_Temporal`` checkpoints) and the UNet's own keys.

    Args:
        unet_state (`Mapping[str, torch.Tensor]`): Keys without :data:`LDM_UNET_PREFIX`.

    Returns:
        `tuple`: ``(motion_state, unet_state)``, two dicts that partition the input.
    """
    motion = {key: value for key, value in unet_state.items() if _LDM_MOTION_KEY.match(key)}
    return motion, {key: value for key, value in unet_state.items() if key not in motion}


def load_ldm_motion_modules(
    motion_state: Mapping[str, torch.Tensor], modules: TemporalModuleSet | None, prefix: str = LDM_UNET_PREFIX
) -> ConversionReport:
    """Convert LDM motion-module keys (:func:`~genblocks.diffusion.temporal.convert_ldm_motion_state_dict`) and load
    them into ``modules`` (``strict=False``), reporting what did not match.

    Args:
        motion_state (`Mapping[str, torch.Tensor]`): Motion-module keys without ``prefix`` (see
            :func:`split_ldm_motion_keys`).
        modules (`TemporalModuleSet`, *optional*): The target set, modified in place; `None` (a model without
            temporal modules) reports every key as unexpected.
        prefix (`str`, defaults to :data:`LDM_UNET_PREFIX`): Prepended to checkpoint keys in the report.

    Returns:
        `ConversionReport`: unexpected keys (checkpoint keys with ``prefix`` that no rule maps, then converted keys the
        set lacks), missing keys and shape mismatches (``"key: checkpoint (shape) vs model (shape)"``), in our names.
    """
    report = ConversionReport()
    if modules is None:
        report.unexpected_keys = sorted(prefix + key for key in motion_state)
        return report
    converted, unmatched = convert_ldm_motion_state_dict(dict(motion_state), modules.placement)
    report.unexpected_keys = sorted(prefix + key for key in unmatched)
    expected = modules.state_dict()
    loadable = {}
    for key, value in converted.items():
        if key not in expected:
            report.unexpected_keys.append(key)
        elif value.shape != expected[key].shape:
            report.mismatched_keys.append(
                f"{key}: checkpoint {tuple(value.shape)} vs model {tuple(expected[key].shape)}"
            )
        else:
            loadable[key] = value
    report.missing_keys = sorted(key for key in expected if key not in loadable and key not in converted)
    report.loaded_keys = len(loadable)
    modules.load_state_dict(loadable, strict=False)
    return report


def load_ldm_reference_unet(
    reference_unet: UNet2DConditionModel,
    state_dict: Mapping[str, torch.Tensor],
    prefix: str,
    name: str = "reference_unet",
) -> tuple[ConversionReport, list[str]]:
    """Load an appearance (reference-only) UNet saved as a ControlNet-style LDM copy: its ``input_hint_block`` is
    unused and it may lack the ``out`` layers (``conv_norm_out`` / ``conv_out``).

    Args:
        reference_unet (`UNet2DConditionModel`): The reference UNet, modified in place.
        state_dict (`Mapping[str, torch.Tensor]`): Its keys without ``prefix``.
        prefix (`str`): The component's top-level checkpoint prefix (names the ignored checkpoint keys).
        name (`str`, defaults to `"reference_unet"`): Names the ignored model keys.

    Returns:
        `tuple`: ``(report, ignored_keys)``: the :func:`load_ldm_component` report without the missing ``out`` keys,
        and the ignored keys (``prefix + "input_hint_block.*"`` and ``name + ".conv_norm_out.*"`` / ``".conv_out.*"``).
    """
    unused = sorted(key for key in state_dict if _REFERENCE_UNUSED.match(key))
    ignored = [prefix + key for key in unused]
    report = load_ldm_component(reference_unet, {k: v for k, v in state_dict.items() if k not in unused})
    no_out = [key for key in report.missing_keys if key.startswith(_REFERENCE_NO_OUT)]
    report.missing_keys = [key for key in report.missing_keys if key not in no_out]
    ignored += [f"{name}.{key}" for key in no_out]
    return report, ignored


def load_ldm_checkpoint(
    checkpoint: str | os.PathLike | Mapping[str, torch.Tensor], components: Mapping[str, nn.Module]
) -> LdmCheckpointReport:
    """Load the components of an LDM single-file checkpoint into prebuilt models, by top-level prefix.

    Example (X-Portrait)::

        report = load_ldm_checkpoint("model_state-415001.th", {
            "model.diffusion_model.": unet, "appearance_control_model.": reference_unet,
            "pose_control_model.": motion_controlnet, "local_pose_control_model.": local_controlnet,
        })
        motion_keys = report.components["model.diffusion_model."].unexpected_keys  # *_motion_module.* for the package

    Args:
        checkpoint (`str`, `os.PathLike` or `Mapping[str, torch.Tensor]`): a file for `read_ldm_checkpoint`, or an
            already-read state dict (cleaned with `clean_state_dict`).
        components (`Mapping[str, nn.Module]`): prefix -> model (see `convert_ldm_component` for the supported types).

    Returns:
        `LdmCheckpointReport`: one `ConversionReport` per prefix and the keys under no prefix.
    """
    if not components:
        raise ValueError("components must map at least one checkpoint prefix to a model")
    state_dict = clean_state_dict(checkpoint) if isinstance(checkpoint, Mapping) else read_ldm_checkpoint(checkpoint)
    groups, rest = split_by_prefix(state_dict, components)
    report = LdmCheckpointReport(unclaimed_keys=sorted(rest))
    for prefix, model in components.items():
        if not groups[prefix]:
            logger.warning("Checkpoint has no keys under prefix %r", prefix)
        part = load_ldm_component(model, groups[prefix])
        report.components[prefix] = part
        logger.info(
            "%s -> %s: %d missing, %d unexpected, %d mismatched keys",
            prefix,
            type(model).__name__,
            len(part.missing_keys),
            len(part.unexpected_keys),
            len(part.mismatched_keys),
        )
    if rest:
        top = sorted({key.split(".", 1)[0] for key in rest})
        logger.info("%d checkpoint keys under no requested prefix (top-level names: %s)", len(rest), top)
    return report


R = TypeVar("R", bound=PipelineConversionReport)

OPTIONAL_LDM_COMPONENTS: tuple[str, ...] = ("vae", "text_encoder")
"""Components a paper's official checkpoint may leave out (the base model's are kept then)."""


def convert_reference_ldm_state_dict(
    checkpoint: Mapping[str, Any],
    prefixes: Mapping[str, str],
    models: Mapping[str, nn.Module],
    temporal: TemporalModuleSet | None,
    report_type: type[R],
    optional: Iterable[str] = OPTIONAL_LDM_COMPONENTS,
) -> R:
    """Load the official single-file checkpoint of a reference-UNet paper (X-Portrait, DiffPortrait3D) into its
    prebuilt models, in place, and report every key that did not load.

    The ``unet`` group is split into the UNet's own keys and its motion-module keys (loaded into ``temporal``); the
    ``reference_unet`` group goes through :func:`load_ldm_reference_unet` (its unused ``input_hint_block`` and missing
    ``out`` layers become ignored keys); a component named in ``optional`` loads only when the checkpoint has keys
    under its prefix; every other component through :func:`load_ldm_component`. Checkpoint keys under no prefix are
    unclaimed, except the DDPM schedule buffers of a complete checkpoint, which are ignored.

    Args:
        checkpoint (`Mapping[str, Any]`): The official state dict (a ``state_dict`` wrapper and ``module.`` prefixes
            are removed).
        prefixes (`Mapping[str, str]`): Component name -> top-level checkpoint prefix; holds ``unet`` and
            ``reference_unet``. Reports follow its order.
        models (`Mapping[str, nn.Module]`): Component name -> model, for every name of ``prefixes``.
        temporal (`TemporalModuleSet`, *optional*): The temporal modules; `None` reports their keys as unexpected.
        report_type (`type[PipelineConversionReport]`): The paper's report class (its :attr:`temporal_name`).
        optional (`Iterable[str]`, defaults to ``("vae", "text_encoder")``): Components the checkpoint may lack.

    Returns:
        An instance of ``report_type``.
    """
    missing = sorted({"unet", "reference_unet", *prefixes} - set(models))
    if missing:
        raise ValueError(f"models lacks components {missing} (prefixes name {list(prefixes)})")
    optional = set(optional)
    groups, rest = split_by_prefix(clean_state_dict(checkpoint), prefixes.values())
    report = report_type.from_unclaimed(rest)
    for name, prefix in prefixes.items():
        part = groups[prefix]
        if name == "unet":
            motion_state, unet_only = split_ldm_motion_keys(part)
            report.components[name] = load_ldm_component(models[name], unet_only)
            report.temporal = load_ldm_motion_modules(motion_state, temporal)
        elif name == "reference_unet":
            reference = cast(UNet2DConditionModel, models[name])
            report.components[name], ignored = load_ldm_reference_unet(reference, part, prefix, name)
            report.ignored_keys += ignored
        elif name in optional and not part:
            logger.info("checkpoint has no %s keys (%s); keeping the given %s", name, prefix, name)
        else:
            report.components[name] = load_ldm_component(models[name], part)
    for name, component in report.reports.items():
        logger.info(
            "%s: %d missing, %d unexpected, %d mismatched keys",
            name,
            len(component.missing_keys),
            len(component.unexpected_keys),
            len(component.mismatched_keys),
        )
    if not report.is_exact:
        logger.warning("conversion is not exact:\n%s", report.summary())
    return report


def write_converted_pipeline(pipeline: Any, report: PipelineConversionReport, output_dir: str | os.PathLike) -> Path:
    """Save a converted pipeline (``pipeline.save_pretrained``, safetensors) and its ``conversion_report.json``.

    Args:
        pipeline: A diffusers pipeline holding the converted components.
        report (`PipelineConversionReport`): What the conversion loaded and left out.
        output_dir (`str` or `os.PathLike`): The folder (created).

    Returns:
        `Path`: ``output_dir``.
    """
    output = Path(output_dir)
    pipeline.save_pretrained(output, safe_serialization=True)
    (output / "conversion_report.json").write_text(json.dumps(report.to_dict(), indent=2))
    return output


def save_components(
    components: Mapping[str, ModelMixin | PreTrainedModel], directory: str | os.PathLike
) -> dict[str, Path]:
    """Save converted models as diffusers/transformers folders (``config.json`` + safetensors) under ``directory``.

    Args:
        components (`Mapping[str, ModelMixin | PreTrainedModel]`): folder name -> model, e.g. ``{"unet": unet}``.
        directory (`str` or `os.PathLike`): parent folder, created if needed.

    Returns:
        `dict[str, Path]`: folder name -> the folder written.
    """
    root = Path(directory)
    written = {}
    for name, model in components.items():
        if not isinstance(model, ModelMixin | PreTrainedModel):
            raise ValueError(
                f"components[{name!r}] must be a diffusers or transformers model, got {type(model).__name__}"
            )
        target = root / name
        model.save_pretrained(target)
        written[name] = target
    return written
