"""The authors' ``omniavatar.pkl`` -> an OmniAvatar weights folder (``config.json`` + ``generator.safetensors``).

The pickle is an NVIDIA persistence pickle (spec §7). It is read by
:func:`genblocks.gan.network_pickle.read_network_pickle`, which never imports or runs the module source embedded in it.
From ``G_ema`` we take the state dict, ``init_kwargs`` and the pickled ``rendering_kwargs`` (whose values appear nowhere
in the public code) and:

- derive the sizes the authors' classes fix or infer from tensor shapes: plane channels and depth from the backbone's
  ToRGB, decoder widths, the pose input (→ the expression count), W's and the template SDF's widths, the SR widths;
- rename keys: ``renderer.im3dmm.*`` -> ``semantic_sdf.correspondence.*``, ``renderer.template_sdf.*`` ->
  ``semantic_sdf.template.*``, ``renderer.sigmoid_beta`` -> ``sigmoid_beta``; the rest keep their names;
- drop, with the reason in the report: the duplicate ``renderer.im3dmm._template_sdf.*`` (checked equal to the
  template), the super-resolution's noise inputs (our SR has none; exact when ``superresolution_noise_mode`` is
  ``none``), FIR ``resample_filter`` buffers (constants ours rebuild), ``dataset_label_std`` (training statistics);
- report every other key either side as unmatched: strict by default (:class:`ConversionError`).

Settings the renderer cannot reproduce (``absorption``, ``force_background``, disparity-space sampling, automatic ray
ranges, a clamp mode other than softplus) are refused by name. ``ffhq_labels.npy`` (an (N, 25 + F) array) is read
by :func:`read_labels`.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from genblocks.errors import InputError
from genblocks.gan.network_pickle import NetworkRecord, read_network_pickle
from omniavatar.config import FlameLayout, IGRConfig, OmniAvatarConfig
from omniavatar.modeling_omniavatar import OmniAvatarGenerator
from omniavatar.pipeline_omniavatar import OmniAvatarPipeline

__all__ = [
    "GENERATOR_LAYOUT",
    "ConversionError",
    "ConversionReport",
    "convert_omniavatar",
    "density_noise_note",
    "original_state_dict",
    "read_labels",
    "record_to_config",
]

_SR_CLASSES: dict[str, tuple[Literal["hybrid2x", "hybrid4x", "hybrid8xdc"], tuple[int, int]]] = {
    "SuperresolutionHybrid2X": ("hybrid2x", (128, 64)),
    "SuperresolutionHybrid4X": ("hybrid4x", (128, 64)),
    "SuperresolutionHybrid8X": ("hybrid8xdc", (128, 64)),
    "SuperresolutionHybrid8XDC": ("hybrid8xdc", (256, 128)),
}
_RENAMES = (
    ("renderer.im3dmm.", "semantic_sdf.correspondence."),
    ("renderer.template_sdf.", "semantic_sdf.template."),
    ("renderer.sigmoid_beta", "sigmoid_beta"),
)
_DUPLICATE_TEMPLATE = "renderer.im3dmm._template_sdf."


GENERATOR_LAYOUT = (
    "the authors' network pickle: a dict whose G_ema (or --network) is a torch_utils.persistence object of "
    "training.triplane.TriPlaneGenerator with _init_kwargs (z_dim, c_dim, w_dim, img_resolution, rendering_kwargs) "
    "and the tensors backbone.*, decoder.sigma_net.*, decoder.pose_net.*, superresolution.*, renderer.im3dmm.*, "
    "renderer.template_sdf.*"
)
"""What :func:`convert_omniavatar` reads, for error messages."""


class ConversionError(InputError):
    """The pickle's generator does not convert cleanly (the message lists what did not match)."""


@dataclass
class ConversionReport:
    """What a conversion matched and did not.

    Attributes:
        matched: Our keys filled from the pickle.
        dropped: Pickle keys left out on purpose, with the reason.
        unexpected: Pickle keys with no place in our generator.
        missing: Our keys the pickle did not fill (FIR filter buffers excepted, which are rebuilt).
        shape_mismatch: Keys of another shape.
        notes: Settings that change results (e.g. the SR noise).
    """

    matched: list[str] = field(default_factory=list)
    dropped: dict[str, str] = field(default_factory=dict)
    unexpected: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    shape_mismatch: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No unexpected, missing or mismatched key."""
        return not (self.unexpected or self.missing or self.shape_mismatch)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "matched": len(self.matched),
            "dropped": self.dropped,
            "unexpected": self.unexpected,
            "missing": self.missing,
            "shape_mismatch": self.shape_mismatch,
            "notes": self.notes,
        }


def _plain(value: Any) -> Any:
    """JSON-able copy of pickled settings (tensors and arrays become lists)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Tensor | np.ndarray):
        return np.asarray(value).tolist()
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return repr(value)


def _fc_widths(state: dict[str, Tensor], prefix: str) -> tuple[list[int], int, int]:
    """(hidden widths, output width, first-layer input width) of ``{prefix}fc{i}`` linear layers."""
    layers = sorted(int(m.group(1)) for k in state if (m := re.fullmatch(re.escape(prefix) + r"fc(\d+)\.weight", k)))
    if not layers:
        raise ConversionError(f"no {prefix}fc*.weight layers in the pickle")
    widths = [int(state[f"{prefix}fc{i}.weight"].shape[0]) for i in layers]
    return widths[:-1], widths[-1], int(state[f"{prefix}fc0.weight"].shape[1])


def record_to_config(record: NetworkRecord, base: OmniAvatarConfig | None = None) -> OmniAvatarConfig:
    """Our config of the pickled generator `record` (sizes from tensor shapes, settings from ``rendering_kwargs``).

    Raises:
        ConversionError: not an OmniAvatar generator, or settings our renderer does not reproduce.
    """
    base = base or OmniAvatarConfig()
    state, kwargs = record.state_dict, record.init_kwargs
    rk = kwargs.get("rendering_kwargs") or record.extra.get("rendering_kwargs")
    if not isinstance(rk, dict) or "decoder.sigma_net.0.weight" not in state:
        raise ConversionError(
            f"the pickle's {record.class_name} is not an OmniAvatar generator (no rendering_kwargs or "
            f"decoder.sigma_net.* weights; expected {GENERATOR_LAYOUT})"
        )
    refused = {
        "absorption": bool(rk.get("absorption", False)),
        "force_background": bool(rk.get("force_background", False)),
        "disparity_space_sampling": bool(rk.get("disparity_space_sampling", False)),
        "ray_start=auto": rk.get("ray_start") == "auto",
        "clamp_mode": rk.get("clamp_mode", "softplus") != "softplus",
    }
    bad = [name for name, on in refused.items() if on]
    if bad:
        raise ConversionError(f"rendering_kwargs settings our renderer does not reproduce: {bad}")
    if "decoder.pose_net.0.weight" not in state:
        raise ConversionError("the generator has no decoder.pose_net (it was built without im3dmm_path)")
    pose_embed = bool(rk.get("pose_embed", False))
    pose_in = int(state["decoder.pose_net.0.weight"].shape[1])
    pose_dim = pose_in // 3 if pose_embed else pose_in
    feature_dim = int(rk.get("feature_dim", 206))
    layout = FlameLayout(shape=feature_dim - pose_dim, expression=pose_dim - 6)
    plane_channels = int(state["decoder.sigma_net.0.weight"].shape[1]) // 2
    synthesis_blocks = [int(m.group(1)) for k in state if (m := re.match(r"backbone\.synthesis\.b(\d+)\.", k))]
    backbone_resolution = max(synthesis_blocks)
    backbone_channels = int(state[f"backbone.synthesis.b{backbone_resolution}.torgb.weight"].shape[0])
    triplane_depth = backbone_channels // (3 * plane_channels)
    sr_module = str(rk.get("superresolution_module", "SuperresolutionHybrid8XDC")).rsplit(".", 1)[-1]
    if sr_module not in _SR_CLASSES:
        raise ConversionError(f"superresolution_module {sr_module!r}: expected one of {sorted(_SR_CLASSES)}")
    sr_kind, _ = _SR_CLASSES[sr_module]
    sr_channels = (
        int(state["superresolution.block0.conv1.weight"].shape[0]),
        int(state["superresolution.block1.conv1.weight"].shape[0]),
    )
    mapping_layers = len({k for k in state if re.match(r"backbone\.mapping\.fc\d+\.weight", k)})
    box = rk.get("box_warp", 1.0)
    generator = replace(
        base.generator,
        z_dim=int(kwargs.get("z_dim", 512)),
        c_dim=int(kwargs.get("c_dim", 25)),
        w_dim=int(kwargs.get("w_dim", 512)),
        img_resolution=int(kwargs.get("img_resolution", 512)),
        img_channels=int(kwargs.get("img_channels", 3)),
        backbone_resolution=backbone_resolution,
        plane_channels=plane_channels,
        triplane_depth=triplane_depth,
        mapping_layers=mapping_layers,
        channel_base=int(kwargs.get("channel_base", 32768)),
        channel_max=int(kwargs.get("channel_max", 512)),
        decoder_hidden=int(state["decoder.sigma_net.0.weight"].shape[0]),
        decoder_output_dim=int(state["decoder.sigma_net.2.weight"].shape[0]) - 1,
        decoder_lr_mul=float(rk.get("decoder_lr_mul", 1.0)),
        decoder_activation=rk.get("decoder_activation") or "sigmoid",
        pose_embed=pose_embed,
        pose_perturb_magnitude=0.0,
        density_mode="with_sdf" if rk.get("with_sdf") else ("delta_geom" if rk.get("delta_geom") else "decoder_only"),
        c_scale=float(rk.get("c_scale", 0.0)),
        c_gen_conditioning_zero=bool(rk.get("c_gen_conditioning_zero", False)),
        use_background=bool(rk.get("use_background", False)),
        with_torgb=bool(rk.get("with_torgb", False)),
        superresolution=sr_kind,
        sr_channels=sr_channels,
        sr_antialias=bool(rk.get("sr_antialias", True)),
        conv_clamp=_conv_clamp(kwargs),
        sr_conv_clamp=256.0 if int(kwargs.get("sr_num_fp16_res", 0) or 0) > 0 else None,
        superresolution_noise_mode=rk.get("superresolution_noise_mode", "none"),
        box_warp=float(box if not isinstance(box, list | tuple) else box[0]),
        ray_start=float(rk["ray_start"]),
        ray_end=float(rk["ray_end"]),
        depth_resolution=int(rk["depth_resolution"]),
        depth_resolution_importance=int(rk["depth_resolution_importance"]),
        neural_rendering_resolution=int(record.extra.get("neural_rendering_resolution", 64)),
        density_noise=0.0,
        white_back=bool(rk.get("white_back", False)),
        avg_camera_radius=float(rk.get("avg_camera_radius", 2.7)),
        avg_camera_pivot=tuple(float(v) for v in rk.get("avg_camera_pivot", (0.0, 0.0, 0.2))),  # type: ignore[arg-type]
    )
    if isinstance(box, list | tuple) and len(set(box)) > 1:
        raise ConversionError(f"box_warp {box}: per-axis boxes are not supported by the converter yet")
    if "renderer.im3dmm.fc0.weight" not in state:
        raise ConversionError("no renderer.im3dmm.* (the semantic SDF W) in the pickle")
    hidden, _, _ = _fc_widths(state, "renderer.im3dmm.")
    if "renderer.template_sdf.fc0.weight" not in state:
        raise ConversionError("no renderer.template_sdf.* (the template SDF) in the pickle")
    template_hidden, _, _ = _fc_widths(state, "renderer.template_sdf.")
    bbox = rk.get("bbox", base.igr.bbox)
    igr = IGRConfig(
        intermediate_dims=tuple(hidden),
        template_intermediate_dims=tuple(template_hidden),
        skip_connection_layers=tuple(int(v) for v in rk.get("skip_connection_layers", ())),
        bbox=(tuple(float(v) for v in bbox[0]), tuple(float(v) for v in bbox[1])),  # type: ignore[arg-type]
        activation=base.igr.activation,
    )
    return replace(base, flame=layout, generator=generator, igr=igr, model=replace(base.model, head="flame"))


def _map_key(key: str) -> str:
    for old, new in _RENAMES:
        if key.startswith(old):
            return new + key[len(old) :]
    return key


def _drop_reason(key: str, state: dict[str, Tensor]) -> str | None:
    if key.startswith(_DUPLICATE_TEMPLATE):
        twin = "renderer.template_sdf." + key[len(_DUPLICATE_TEMPLATE) :]
        if twin in state and torch.equal(state[twin], state[key]):
            return "duplicate of renderer.template_sdf (equal)"
        return None
    if key.startswith("superresolution.") and key.endswith(("noise_const", "noise_strength")):
        return "super-resolution noise input (our SR has none)"
    if key.endswith("resample_filter") and not key.startswith("backbone."):
        return "FIR filter constant (rebuilt)"
    if key == "dataset_label_std":
        return "training label statistics"
    return None


def convert_state_dict(
    state: dict[str, Tensor], generator: OmniAvatarGenerator, report: ConversionReport
) -> dict[str, Tensor]:
    """Rename the pickle's tensors into `generator`'s keys; fills `report`. Returns the state dict to load."""
    own = generator.state_dict()
    converted: dict[str, Tensor] = {}
    for key, value in state.items():
        reason = _drop_reason(key, state)
        if reason is not None:
            report.dropped[key] = reason
            continue
        target = _map_key(key)
        if target not in own:
            report.unexpected.append(key)
            continue
        if tuple(own[target].shape) != tuple(value.shape):
            report.shape_mismatch.append(f"{key}: {tuple(value.shape)} vs ours {tuple(own[target].shape)}")
            continue
        converted[target] = value.detach().to(own[target].dtype).clone()
        report.matched.append(target)
    for key in own:
        if key not in converted:
            if key.endswith("resample_filter"):
                converted[key] = own[key]
            else:
                report.missing.append(key)
    return converted


def original_state_dict(generator: OmniAvatarGenerator) -> dict[str, Tensor]:
    """Our generator's weights under the authors' key names (the inverse renames, W's template duplicated), for tests
    and for writing reference pickles."""
    out: dict[str, Tensor] = {}
    inverse = [(new, old) for old, new in _RENAMES]
    for key, value in generator.state_dict().items():
        name = key
        for new, old in inverse:
            if key.startswith(new):
                name = old + key[len(new) :]
                break
        out[name] = value.detach().clone()
        if key.startswith("semantic_sdf.template."):
            out[_DUPLICATE_TEMPLATE + key[len("semantic_sdf.template.") :]] = value.detach().clone()
    return out


def _conv_clamp(init_kwargs: dict[str, Any]) -> float | None:
    """The backbone clamp of the authors' networks: ``conv_clamp`` of their ``init_kwargs`` (their ``SynthesisBlock``
    default, 256, when absent; None when they set it to None)."""
    value = init_kwargs.get("conv_clamp", 256)
    return None if value is None else float(value)


def density_noise_note(rendering_kwargs: dict[str, Any]) -> str | None:
    """A note when the pickle's ``density_noise`` is positive: the authors' renderer adds it at inference too; ours
    only in training mode (the converted config sets 0)."""
    noise = float(rendering_kwargs.get("density_noise", 0.0) or 0.0)
    if noise <= 0:
        return None
    return (
        f"density_noise={noise:g}: the authors' renderer adds random density noise at inference too; the converted "
        "generator renders without it (generator.density_noise=0; set it for training)"
    )


def _read_generator(pkl: str | os.PathLike, network: str) -> NetworkRecord:
    """The pickled `network`, read without running code; a pickle of anything else names :data:`GENERATOR_LAYOUT`."""
    try:
        return read_network_pickle(pkl, names=(network,))[network]
    except InputError as error:
        reason = str(error).removeprefix(f"network pickle {pkl}: ")
        raise InputError(f"network pickle {pkl}: {reason}; expected {GENERATOR_LAYOUT}") from None


def convert_omniavatar(
    pkl: str | os.PathLike,
    out_dir: str | os.PathLike,
    network: str = "G_ema",
    strict: bool = True,
    base: OmniAvatarConfig | None = None,
) -> tuple[OmniAvatarPipeline, ConversionReport]:
    """Convert ``network`` of the authors' pickle into a weights folder in `out_dir` (plus
    ``conversion_report.json``).

    Raises:
        InputError: not a readable network pickle, or no such network.
        ConversionError: not an OmniAvatar generator, unsupported settings, or (strict) unmatched keys.
    """
    record = _read_generator(pkl, network)
    config = record_to_config(record, base)
    generator = OmniAvatarGenerator(config.generator, config.flame, config.igr)
    report = ConversionReport()
    if config.generator.superresolution_noise_mode != "none":
        strengths = [
            float(v.abs().max())
            for k, v in record.state_dict.items()
            if k.startswith("superresolution.") and k.endswith("noise_strength")
        ]
        report.notes.append(
            f"superresolution_noise_mode={config.generator.superresolution_noise_mode!r}: the authors' SR adds noise "
            f"(max |noise_strength| {max(strengths, default=0.0):.3g}); ours does not"
        )
    note = density_noise_note(record.init_kwargs.get("rendering_kwargs") or record.extra.get("rendering_kwargs") or {})
    if note is not None:
        report.notes.append(note)
    state = convert_state_dict(record.state_dict, generator, report)
    if strict and not report.ok:
        raise ConversionError(
            f"{pkl}: {len(report.unexpected)} unexpected (e.g. {report.unexpected[:3]}), {len(report.missing)} "
            f"missing (e.g. {report.missing[:3]}), {len(report.shape_mismatch)} of another shape "
            f"(e.g. {report.shape_mismatch[:2]})"
        )
    generator.load_state_dict(state, strict=False)
    pipeline = OmniAvatarPipeline(generator, config)
    rendering_kwargs = _plain(record.init_kwargs.get("rendering_kwargs") or record.extra.get("rendering_kwargs"))
    out = Path(out_dir)
    pipeline.save_pretrained(
        out, extra={"rendering_kwargs": rendering_kwargs, "conversion": {"source": str(pkl), "network": network}}
    )
    (out / "conversion_report.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    return pipeline, report


def read_labels(path: str | os.PathLike, layout: FlameLayout) -> np.ndarray:
    """The authors' ``ffhq_labels.npy``: an (N, 25 + F) float array.

    Raises:
        InputError: missing, not a numeric .npy, or rows of another length (the message names the layout).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"labels {path}: file not found (expected an (N, {25 + layout.feature_dim}) .npy array)")
    try:
        labels = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as error:
        raise InputError(f"labels {path}: not a numeric .npy array ({error})") from None
    width = 25 + layout.feature_dim
    if labels.ndim != 2 or labels.shape[1] != width or not np.issubdtype(labels.dtype, np.number):
        raise InputError(
            f"labels {path}: expected rows of {width} numbers (25 camera values then {layout.describe()}), "
            f"got shape {labels.shape}"
        )
    return labels.astype(np.float32)
