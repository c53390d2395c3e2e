"""Convert the official ID-Patch release (``ByteDance/ID-Patch`` on the HF Hub) into our format (spec id-patch §7).

The release holds ``id-patch.bin``, a ``torch.load`` dict ``{"patch_proj": {...}, "prompt_proj": {...}}`` of two
IP-Adapter-style projections, and ``ControlNetModel/``, a diffusers folder that loads as-is. Upstream
(bytedance/ID-Patch, commit 38096c9, ``modules/inferencer.py``) builds both projections with diffusers'
``UNet2DConditionLoadersMixin._convert_ip_adapter_image_proj_to_diffusers``; the key rules here are the same for the
two types that fit ID-Patch (spec §3), written as explicit tables so they also run backwards and handle any resampler
depth (diffusers' string replacements cover layers 0–3 only):

- FaceID MLP (IP-Adapter FaceID ``MLPProjModel``): ``proj.0.*`` -> ``ff.net.0.proj.*``, ``proj.2.*`` -> ``ff.net.2.*``,
  ``norm.*`` unchanged.
- Perceiver resampler (IP-Adapter Plus ``Resampler``): ``latents``, ``proj_in.*``, ``proj_out.*``, ``norm_out.*``
  unchanged; per block ``layers.{i}.0.norm1/norm2`` -> ``layers.{i}.ln0/ln1``, ``layers.{i}.0.to_q`` ->
  ``layers.{i}.attn.to_q``, ``layers.{i}.0.to_kv`` -> ``to_k`` + ``to_v`` (split in halves), ``layers.{i}.0.to_out`` ->
  ``layers.{i}.attn.to_out.0``, ``layers.{i}.1.{0,1,3}`` -> ``layers.{i}.ff.0`` / ``ff.1.net.0.proj`` /
  ``ff.1.net.2``.

The projection type is detected from the keys; sizes are read from the tensor shapes; the outputs are checked to be
(·, 16, 2048) for ``prompt_proj`` and (·, 3, 4096) for ``patch_proj`` (paper sizes) unless told otherwise. Files are
read with ``torch.load(weights_only=True)`` (the official file is a plain dict of tensors) or safetensors.

Command line::

    id-patch convert --checkpoint models/ID-Patch --out converted/
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import torch
from diffusers import ControlNetModel, EulerDiscreteScheduler
from safetensors.torch import load_file

from genblocks.diffusion import ConversionReport
from id_patch.modeling_id_patch import PATCH_CHANNELS, IDPatchConfig, IDPatchProjector
from id_patch.pipeline_id_patch import IDPatchPipeline

__all__ = [
    "OfficialConversion",
    "convert_official",
    "convert_release",
    "detect_key_layout",
    "detect_projection_type",
    "diffusers_to_official",
    "infer_config",
    "load_official_controlnet",
    "load_official_pipeline",
    "official_to_diffusers",
    "read_official_checkpoint",
    "to_official_state_dict",
]

logger = logging.getLogger(__name__)

OFFICIAL_WEIGHTS_NAME = "id-patch.bin"
OFFICIAL_CONTROLNET_FOLDER = "ControlNetModel"
SUBMODULES = ("patch_proj", "prompt_proj")
PAPER_NUM_TOKENS, PAPER_TOKEN_DIM, PAPER_PATCH_SIZE = 16, 2048, 64

_MLP_OFFICIAL = ("proj.0.weight", "proj.2.weight", "norm.weight")
_MLP_DIFFUSERS = ("ff.net.0.proj.weight", "ff.net.2.weight", "norm.weight")
_RESAMPLER_COMMON = ("latents", "proj_in.weight", "proj_out.weight")

# official -> diffusers renames (regex, replacement); to_kv is split separately
_MLP_RULES = ((r"^proj\.0\.", "ff.net.0.proj."), (r"^proj\.2\.", "ff.net.2."), (r"^norm\.", "norm."))
_RESAMPLER_RULES = (
    (r"^(latents)$", r"\1"),
    (r"^(proj_in|proj_out|norm_out)\.", r"\1."),
    (r"^layers\.(\d+)\.0\.norm1\.", r"layers.\1.ln0."),
    (r"^layers\.(\d+)\.0\.norm2\.", r"layers.\1.ln1."),
    (r"^layers\.(\d+)\.0\.to_q\.", r"layers.\1.attn.to_q."),
    (r"^layers\.(\d+)\.0\.to_out\.", r"layers.\1.attn.to_out.0."),
    (r"^layers\.(\d+)\.1\.0\.", r"layers.\1.ff.0."),
    (r"^layers\.(\d+)\.1\.1\.", r"layers.\1.ff.1.net.0.proj."),
    (r"^layers\.(\d+)\.1\.3\.", r"layers.\1.ff.1.net.2."),
)
_TO_KV = re.compile(r"^layers\.(\d+)\.0\.to_kv\.(\w+)$")
# diffusers -> official
_MLP_REVERSE = ((r"^ff\.net\.0\.proj\.", "proj.0."), (r"^ff\.net\.2\.", "proj.2."), (r"^norm\.", "norm."))
_RESAMPLER_REVERSE = (
    (r"^(latents)$", r"\1"),
    (r"^(proj_in|proj_out|norm_out)\.", r"\1."),
    (r"^layers\.(\d+)\.ln0\.", r"layers.\1.0.norm1."),
    (r"^layers\.(\d+)\.ln1\.", r"layers.\1.0.norm2."),
    (r"^layers\.(\d+)\.attn\.to_q\.", r"layers.\1.0.to_q."),
    (r"^layers\.(\d+)\.attn\.to_out\.0\.", r"layers.\1.0.to_out."),
    (r"^layers\.(\d+)\.ff\.0\.", r"layers.\1.1.0."),
    (r"^layers\.(\d+)\.ff\.1\.net\.0\.proj\.", r"layers.\1.1.1."),
    (r"^layers\.(\d+)\.ff\.1\.net\.2\.", r"layers.\1.1.3."),
)
_TO_K = re.compile(r"^layers\.(\d+)\.attn\.to_k\.(\w+)$")


class OfficialConversion(NamedTuple):
    """Result of `convert_official`.

    Attributes:
        projector (`IDPatchProjector`): the converted projections (in eval mode).
        reports (`dict[str, ConversionReport]`): per sub-dict (``patch_proj``, ``prompt_proj``): checkpoint keys no
            rule maps or the model lacks (``unexpected_keys``), model keys left unset (``missing_keys``) and shape
            mismatches.
    """

    projector: IDPatchProjector
    reports: dict[str, ConversionReport]


def _preview(keys: Sequence[str], count: int = 12) -> str:
    keys = sorted(keys)
    more = f" ... (+{len(keys) - count} more)" if len(keys) > count else ""
    return f"{keys[:count]}{more}"


def detect_key_layout(state_dict: Mapping[str, torch.Tensor]) -> str:
    """``"official"`` (IP-Adapter naming) or ``"diffusers"`` (our naming) for one projection's state dict.

    Raises:
        `ValueError`: naming the keys when they fit neither the FaceID MLP nor the resampler (spec §3).
    """
    keys = set(state_dict)
    if all(k in keys for k in _MLP_OFFICIAL):
        return "official"
    if all(k in keys for k in _MLP_DIFFUSERS):
        return "diffusers"
    if all(k in keys for k in _RESAMPLER_COMMON):
        if any(_TO_KV.match(k) or re.match(r"^layers\.\d+\.0\.", k) for k in keys):
            return "official"
        if any(k.startswith("layers.") for k in keys):
            return "diffusers"
    hint = ""
    if "proj.weight" in keys:
        hint = " This looks like plain IP-Adapter (always 4 tokens), which ID-Patch does not use."
    elif "proj.3.weight" in keys:
        hint = " This looks like IP-Adapter Full (keeps the input token count), which ID-Patch does not use."
    elif any(k.startswith("perceiver_resampler.") for k in keys):
        hint = " This looks like IP-Adapter FaceID-Plus (needs CLIP embeddings), which ID-Patch does not use."
    raise ValueError(
        f"Cannot tell the projection type from the keys {_preview(list(keys))}: expected the FaceID MLP "
        f"(proj.0.weight, proj.2.weight, norm.weight) or the Perceiver resampler (latents, proj_in.*, proj_out.*, "
        f"layers.*).{hint}"
    )


def detect_projection_type(state_dict: Mapping[str, torch.Tensor]) -> str:
    """``"faceid_mlp"`` or ``"resampler"`` from one projection's keys (official or diffusers naming).

    Args:
        state_dict (`Mapping[str, torch.Tensor]`): ``patch_proj`` or ``prompt_proj``.

    Returns:
        `str`: the projection type.

    Raises:
        `ValueError`: naming the keys when they fit neither (see `detect_key_layout`).
    """
    detect_key_layout(state_dict)
    return "faceid_mlp" if "norm.weight" in state_dict else "resampler"


def _rename(
    state_dict: Mapping[str, torch.Tensor], rules: Sequence[tuple[str, str]]
) -> tuple[dict[str, torch.Tensor], list[str]]:
    out, unmatched = {}, []
    for key, value in state_dict.items():
        for pattern, replacement in rules:
            new, count = re.subn(pattern, replacement, key)
            if count:
                out[new] = value
                break
        else:
            unmatched.append(key)
    return out, unmatched


def official_to_diffusers(
    state_dict: Mapping[str, torch.Tensor], proj_type: str | None = None
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename one official projection state dict to diffusers' (our) parameter names.

    Args:
        state_dict (`Mapping[str, torch.Tensor]`): IP-Adapter naming.
        proj_type (`str`, *optional*): ``"faceid_mlp"`` or ``"resampler"``; detected when `None`.

    Returns:
        `tuple[dict[str, torch.Tensor], list[str]]`: the renamed dict and the keys no rule matched.
    """
    proj_type = proj_type or detect_projection_type(state_dict)
    if proj_type == "faceid_mlp":
        return _rename(state_dict, _MLP_RULES)
    plain = {k: v for k, v in state_dict.items() if not _TO_KV.match(k)}
    out, unmatched = _rename(plain, _RESAMPLER_RULES)
    for key, value in state_dict.items():
        match = _TO_KV.match(key)
        if match:
            layer, param = match.groups()
            to_k, to_v = value.chunk(2, dim=0)
            out[f"layers.{layer}.attn.to_k.{param}"] = to_k
            out[f"layers.{layer}.attn.to_v.{param}"] = to_v
    return out, unmatched


def diffusers_to_official(state_dict: Mapping[str, torch.Tensor], proj_type: str) -> dict[str, torch.Tensor]:
    """The inverse of `official_to_diffusers` (``to_k`` and ``to_v`` are concatenated back into ``to_kv``).

    Args:
        state_dict (`Mapping[str, torch.Tensor]`): diffusers naming.
        proj_type (`str`): ``"faceid_mlp"`` or ``"resampler"``.

    Returns:
        `dict[str, torch.Tensor]`: IP-Adapter naming.
    """
    if proj_type == "faceid_mlp":
        out, unmatched = _rename(state_dict, _MLP_REVERSE)
    else:
        plain = {k: v for k, v in state_dict.items() if ".attn.to_k." not in k and ".attn.to_v." not in k}
        out, unmatched = _rename(plain, _RESAMPLER_REVERSE)
        for key, value in state_dict.items():
            match = _TO_K.match(key)
            if match:
                layer, param = match.groups()
                to_v = state_dict[f"layers.{layer}.attn.to_v.{param}"]
                out[f"layers.{layer}.0.to_kv.{param}"] = torch.cat([value, to_v], dim=0)
    if unmatched:
        raise ValueError(f"No official name for the {proj_type} keys {_preview(unmatched)}.")
    return out


def to_official_state_dict(projector: IDPatchProjector) -> dict[str, dict[str, torch.Tensor]]:
    """Our projector as the official ``id-patch.bin`` dict ``{"patch_proj": {...}, "prompt_proj": {...}}``."""
    proj_type = projector.config.proj_type
    return {name: diffusers_to_official(getattr(projector, name).state_dict(), proj_type) for name in SUBMODULES}


def _side(width: int) -> int:
    side = math.isqrt(width)
    if side * side != width:
        raise ValueError(f"patch_proj's output width {width} is not a square patch_size**2.")
    return side


def _mlp_sizes(state_dict: Mapping[str, torch.Tensor], name: str) -> dict[str, int]:
    hidden, face_dim = state_dict["ff.net.0.proj.weight"].shape
    width = state_dict["norm.weight"].shape[0]
    out_features = state_dict["ff.net.2.weight"].shape[0]
    if hidden % face_dim or out_features % width:
        raise ValueError(
            f"{name}: inconsistent FaceID-MLP shapes (hidden {hidden}, input {face_dim}, output {out_features}, "
            f"norm {width})."
        )
    return {"face_dim": face_dim, "mlp_mult": hidden // face_dim, "queries": out_features // width, "width": width}


def _resampler_sizes(state_dict: Mapping[str, torch.Tensor], name: str, dim_head: int) -> dict[str, int]:
    _, queries, hidden = state_dict["latents"].shape
    layers = {int(m.group(1)) for k in state_dict if (m := re.match(r"^layers\.(\d+)\.", k))}
    inner = state_dict["layers.0.attn.to_q.weight"].shape[0]
    if inner % dim_head:
        raise ValueError(f"{name}: attention width {inner} is not a multiple of dim_head={dim_head}; pass dim_head.")
    ff_hidden = state_dict["layers.0.ff.1.net.0.proj.weight"].shape[0]
    return {
        "face_dim": state_dict["proj_in.weight"].shape[1],
        "resampler_hidden_dim": hidden,
        "resampler_depth": len(layers),
        "resampler_heads": inner // dim_head,
        "resampler_dim_head": dim_head,
        "resampler_ff_mult": ff_hidden // hidden,
        "queries": queries,
        "width": state_dict["proj_out.weight"].shape[0],
    }


def infer_config(
    patch_proj: Mapping[str, torch.Tensor], prompt_proj: Mapping[str, torch.Tensor], dim_head: int = 64
) -> IDPatchConfig:
    """Read the `IDPatchConfig` from two projection state dicts in diffusers naming.

    Args:
        patch_proj (`Mapping[str, torch.Tensor]`): R_patch weights.
        prompt_proj (`Mapping[str, torch.Tensor]`): R_token weights.
        dim_head (`int`, defaults to 64): the resampler's width per head (not recoverable from the shapes; 64 as in
            IP-Adapter and diffusers' converter).

    Returns:
        `IDPatchConfig`: type and sizes (``cond_clamp`` and ``face_anchor`` keep their defaults).
    """
    types = {
        name: detect_projection_type(sd) for name, sd in (("patch_proj", patch_proj), ("prompt_proj", prompt_proj))
    }
    if len(set(types.values())) != 1:
        raise ValueError(f"patch_proj and prompt_proj must be of one projection type, got {types}.")
    proj_type = types["prompt_proj"]
    if proj_type == "faceid_mlp":
        patch, prompt = _mlp_sizes(patch_proj, "patch_proj"), _mlp_sizes(prompt_proj, "prompt_proj")
    else:
        patch = _resampler_sizes(patch_proj, "patch_proj", dim_head)
        prompt = _resampler_sizes(prompt_proj, "prompt_proj", dim_head)
    if patch["queries"] != PATCH_CHANNELS:
        raise ValueError(f"patch_proj must output {PATCH_CHANNELS} channels, its weights give {patch['queries']}.")
    shared = {k: v for k, v in prompt.items() if k not in ("queries", "width")}
    differing = sorted(k for k in shared if patch[k] != prompt[k])
    if differing:
        raise ValueError(
            f"patch_proj and prompt_proj differ in {differing} ({[patch[k] for k in differing]} vs "
            f"{[prompt[k] for k in differing]}); IDPatchProjector builds both from one config."
        )
    return IDPatchConfig(
        proj_type=proj_type,
        num_tokens=prompt["queries"],
        token_dim=prompt["width"],
        patch_size=_side(patch["width"]),
        **shared,
    )


def read_official_checkpoint(path: str | os.PathLike) -> dict[str, dict[str, torch.Tensor]]:
    """Read ``id-patch.bin`` (or a release folder holding it, or a safetensors file with ``patch_proj.`` /
    ``prompt_proj.`` prefixes) into ``{"patch_proj": {...}, "prompt_proj": {...}}``.

    Args:
        path (`str` or `os.PathLike`): file or folder.

    Returns:
        `dict[str, dict[str, torch.Tensor]]`: the two sub-state-dicts.
    """
    path = Path(path)
    if path.is_dir():
        path = path / OFFICIAL_WEIGHTS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"ID-Patch checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        flat = load_file(str(path))
        loaded = {
            name: {k[len(name) + 1 :]: v for k, v in flat.items() if k.startswith(f"{name}.")} for name in SUBMODULES
        }
    else:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    return _split(loaded, str(path))


def _split(checkpoint: Mapping, source: str) -> dict[str, dict[str, torch.Tensor]]:
    missing = [name for name in SUBMODULES if not isinstance(checkpoint.get(name), Mapping)]
    if missing:
        raise ValueError(
            f"{source}: expected sub-state-dicts {list(SUBMODULES)}, missing {missing}; top-level keys are "
            f"{_preview([str(k) for k in checkpoint])}."
        )
    extra = sorted(str(k) for k in checkpoint if k not in SUBMODULES)
    if extra:
        logger.warning("%s: ignoring top-level entries %s", source, extra)
    return {name: dict(checkpoint[name]) for name in SUBMODULES}


def _load_into(
    module: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], unmatched: list[str], assign: bool
) -> ConversionReport:
    own = module.state_dict()
    mismatched = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state_dict.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    loadable = {k: v for k, v in state_dict.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    result = module.load_state_dict(loadable, strict=False, assign=assign)
    return ConversionReport(
        missing_keys=sorted(set(result.missing_keys) | {m.split(":")[0] for m in mismatched}),
        unexpected_keys=sorted(unmatched + [k for k in state_dict if k not in own]),
        mismatched_keys=mismatched,
    )


def convert_official(
    checkpoint: str | os.PathLike | Mapping[str, Mapping[str, torch.Tensor]],
    dim_head: int = 64,
    expect_paper_shapes: bool = True,
    strict: bool = True,
) -> OfficialConversion:
    """Build an `IDPatchProjector` from the official ``id-patch.bin`` (file, release folder or in-memory dict).

    Both sub-dicts may be in IP-Adapter (official) or diffusers naming; the type is detected from the keys and the
    sizes from the shapes. State dicts of meta tensors give a meta projector (shape checks without memory).

    Args:
        checkpoint (`str`, `os.PathLike` or mapping): ``{"patch_proj": {...}, "prompt_proj": {...}}`` or where to read
            it (see `read_official_checkpoint`).
        dim_head (`int`, defaults to 64): resampler width per head (see `infer_config`).
        expect_paper_shapes (`bool`, defaults to `True`): require (·, 16, 2048) from ``prompt_proj`` and (·, 3, 4096)
            from ``patch_proj``.
        strict (`bool`, defaults to `True`): raise when any key is missing, unexpected or mismatched.

    Returns:
        `OfficialConversion`: the projector and one `ConversionReport` per sub-dict.
    """
    if isinstance(checkpoint, Mapping):
        parts = _split(checkpoint, "checkpoint")
    else:
        parts = read_official_checkpoint(checkpoint)
    renamed, unmatched = {}, {}
    for name, state_dict in parts.items():
        if detect_key_layout(state_dict) == "official":
            renamed[name], unmatched[name] = official_to_diffusers(state_dict)
        else:
            renamed[name], unmatched[name] = dict(state_dict), []
    config = infer_config(renamed["patch_proj"], renamed["prompt_proj"], dim_head=dim_head)
    meta = any(t.is_meta for sd in renamed.values() for t in sd.values())
    with torch.device("meta") if meta else contextlib.nullcontext():
        projector = IDPatchProjector.from_id_patch_config(config)
    reports = {
        name: _load_into(getattr(projector, name), renamed[name], unmatched[name], assign=meta) for name in SUBMODULES
    }
    problems = {name: report for name, report in reports.items() if not report.is_exact}
    if strict and problems:
        raise ValueError(f"The ID-Patch checkpoint does not match the model: {problems}")
    for name, report in problems.items():
        logger.warning("%s: %s", name, report)
    _check_output_shapes(projector, expect_paper_shapes)
    logger.info("Converted ID-Patch projections: %s", projector.id_patch_config)
    return OfficialConversion(projector.eval(), reports)


def _check_output_shapes(projector: IDPatchProjector, expect_paper_shapes: bool) -> None:
    cfg = projector.config
    probe = torch.zeros(1, 1, cfg.face_dim, device=projector.device, dtype=projector.dtype)
    with torch.no_grad():
        prompt_shape = tuple(projector.prompt_proj(probe).shape)
        patch_shape = tuple(projector.patch_proj(probe).shape)
    expected_prompt = (1, cfg.num_tokens, cfg.token_dim)
    expected_patch = (1, PATCH_CHANNELS, cfg.patch_size**2)
    if expect_paper_shapes:
        expected_prompt = (1, PAPER_NUM_TOKENS, PAPER_TOKEN_DIM)
        expected_patch = (1, PATCH_CHANNELS, PAPER_PATCH_SIZE**2)
    if prompt_shape != expected_prompt or patch_shape != expected_patch:
        raise ValueError(
            f"converted projections give prompt_proj {prompt_shape[1:]} and patch_proj {patch_shape[1:]} per face; "
            f"expected {expected_prompt[1:]} and {expected_patch[1:]}"
            + (" (paper sizes; pass expect_paper_shapes=False for other checkpoints)." if expect_paper_shapes else ".")
        )


def load_official_controlnet(release: str | os.PathLike, torch_dtype: torch.dtype | None = None) -> ControlNetModel:
    """The release's ``ControlNetModel/`` (a diffusers folder; loads as-is).

    Args:
        release (`str` or `os.PathLike`): the release folder, or the ControlNet folder itself.
        torch_dtype (`torch.dtype`, *optional*): load in this dtype.
    """
    folder = Path(release)
    if (folder / OFFICIAL_CONTROLNET_FOLDER).is_dir():
        folder = folder / OFFICIAL_CONTROLNET_FOLDER
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"No diffusers ControlNet folder (config.json + weights) at {folder}.")
    controlnet = ControlNetModel.from_pretrained(folder)
    return controlnet if torch_dtype is None else controlnet.to(torch_dtype)


def load_official_pipeline(
    base_model: str | os.PathLike,
    release: str | os.PathLike,
    torch_dtype: torch.dtype = torch.float32,
    dim_head: int = 64,
    expect_paper_shapes: bool = True,
) -> IDPatchPipeline:
    """Assemble `IDPatchPipeline` as upstream's ``IDPatchInferencer``: an SDXL base in diffusers layout (its own
    ``EulerDiscreteScheduler``), the release's ControlNet and the converted projections.

    Args:
        base_model (`str` or `os.PathLike`): SDXL folder (or Hub id, if the caller allows downloads).
        release (`str` or `os.PathLike`): folder with ``id-patch.bin`` and ``ControlNetModel/``.
        torch_dtype (`torch.dtype`, defaults to `torch.float32`): upstream uses bf16 on GPU.
        dim_head (`int`, defaults to 64): see `convert_official`.
        expect_paper_shapes (`bool`, defaults to `True`): see `convert_official`.
    """
    projector = convert_official(release, dim_head=dim_head, expect_paper_shapes=expect_paper_shapes).projector
    controlnet = load_official_controlnet(release, torch_dtype=torch_dtype)
    scheduler = EulerDiscreteScheduler.from_pretrained(base_model, subfolder="scheduler")
    pipe = IDPatchPipeline.from_pretrained(
        base_model, controlnet=controlnet, id_projector=projector.to(torch_dtype), scheduler=scheduler
    )
    return pipe.to(dtype=torch_dtype)


def convert_release(
    release: str | os.PathLike, output: str | os.PathLike, dim_head: int = 64, expect_paper_shapes: bool = True
) -> OfficialConversion:
    """Write the release in our format: ``output/id_projector/`` (config.json + two safetensors) and
    ``output/controlnet/`` (diffusers, safetensors).

    Args:
        release (`str` or `os.PathLike`): folder with ``id-patch.bin`` and ``ControlNetModel/``.
        output (`str` or `os.PathLike`): target folder.
        dim_head (`int`, defaults to 64): see `convert_official`.
        expect_paper_shapes (`bool`, defaults to `True`): see `convert_official`.

    Returns:
        `OfficialConversion`: the converted projector and the key reports.
    """
    conversion = convert_official(release, dim_head=dim_head, expect_paper_shapes=expect_paper_shapes)
    output = Path(output)
    conversion.projector.save_pretrained(output / "id_projector")
    load_official_controlnet(release).save_pretrained(output / "controlnet", safe_serialization=True)
    return conversion
