"""Load rosinality-format StyleGAN2 checkpoints into :mod:`genblocks.gan.stylegan2` modules, and write them back.

rosinality/stylegan2-pytorch (``model.py``, ``train.py``; ``convert_weight.py`` at
1376b90bc35a5bb160881ebf8c2dd5e1268ab17d) saves ``torch.save`` dicts
``{"g": ..., "d": ..., "g_ema": ..., "latent_avg": ..., "g_optim": ..., "d_optim": ..., "args": Namespace}``; the FFHQ
conversions of the official TF weights hold ``{"g_ema", "latent_avg"}`` (and ``"g"``, ``"d"`` when converted with
``--gen``/``--disc``). We read them with ``torch.load(weights_only=True)``, allowing only ``argparse.Namespace`` beyond
tensors and containers.

Generator layout (``Generator(size, style_dim, n_mlp, channel_multiplier)``), rosinality -> ours:

- ``style.{i}.{weight,bias}``, i = 1..n_mlp (``style.0`` is the parameter-free PixelNorm) -> ``mapping.fc{i-1}.*``.
- ``input.input`` (1, C, 4, 4) -> ``synthesis.b4.const`` (C, 4, 4).
- Styled convolutions ``conv1`` -> ``synthesis.b4.conv1``; ``convs.{2k}`` -> ``synthesis.b{2^(k+3)}.conv0`` (the
  up-sampling one); ``convs.{2k+1}`` -> ``synthesis.b{2^(k+3)}.conv1``. Inside each: ``conv.weight`` (1, O, I, 3, 3)
  -> ``weight`` (O, I, 3, 3); ``conv.modulation.{weight,bias}`` (an EqualLinear) -> ``affine.*``; ``noise.weight``
  (1,) -> ``noise_strength`` (); ``activate.bias`` (FusedLeakyReLU, (O,)) -> ``bias``.
- ``to_rgb1`` -> ``synthesis.b4.torgb``; ``to_rgbs.{k}`` -> ``synthesis.b{2^(k+3)}.torgb``: ``conv.weight``
  (1, 3, I, 1, 1) -> ``weight`` (3, I, 1, 1); ``conv.modulation.*`` -> ``affine.*``; ``bias`` (1, 3, 1, 1) -> ``bias``
  (3,).
- ``noises.noise_0`` (1, 1, 4, 4) -> ``synthesis.b4.conv1.noise_const`` (4, 4); ``noises.noise_{j+1}`` -> the
  ``noise_const`` of the layer that ``convs.{j}`` maps to.
- ``latent_avg`` (top level of the checkpoint, (w_dim,)) -> ``mapping.w_avg``.

``convs.{2k}.conv.blur.kernel`` and ``to_rgbs.{k}.upsample.kernel`` are the [1, 3, 3, 1] filter times 4 (our
``resample_filter`` with the up-sampling gain); they are checked, not loaded. Both codes store equalised-lr weights raw
with the same gains (rosinality multiplies the modulated weight by 1/sqrt(fan_in), we do too), and rosinality's
up-sampling convolution (``conv_transpose2d`` then ``Blur`` with padding (1, 1) and gain 4) is exactly our
``conv2d_resample(up=2)``, so up-sampling kernels load unflipped. (rosinality's ``convert_weight.py`` flips the TF
``Conv0_up`` kernels; NVIDIA's PyTorch ``legacy.py`` does the same; so rosinality and NVIDIA-PyTorch up-kernels agree.)

Discriminator layout (``Discriminator(size, channel_multiplier)``, resnet, ``stddev_group=4``, ``stddev_feat=1``):
``convs.0.{0.weight,1.bias}`` -> ``b{R}.fromrgb``; ``convs.{k}`` (k >= 1, resolution ``R / 2^(k-1)``):
``conv1.{0.weight,1.bias}`` -> ``conv0``, ``conv2.{1.weight,2.bias}`` -> ``conv1``, ``skip.1.weight`` -> ``skip``
(``conv2.0.kernel`` and ``skip.0.kernel`` are the normalised blur filter, checked); ``final_conv.{0.weight,1.bias}`` ->
``b4.conv``; ``final_linear.{0,1}.{weight,bias}`` -> ``b4.fc``, ``b4.out``. rosinality's discriminator is unconditional.

Channels: rosinality ``channel_multiplier=m`` equals our ``channel_base=16384 * m, channel_max=512``;
:func:`build_rosinality_generator` infers the rule from the weight shapes.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from genblocks.gan.stylegan2 import (
    StyleGAN2Discriminator,
    StyleGAN2Generator,
    SynthesisLayer,
    channels_per_resolution,
)

__all__ = [
    "ROSINALITY_CHECKPOINT_KEYS",
    "RosinalityLoadReport",
    "build_rosinality_discriminator",
    "build_rosinality_generator",
    "discriminator_to_rosinality",
    "generator_to_rosinality",
    "load_rosinality_checkpoint",
    "load_rosinality_discriminator",
    "load_rosinality_generator",
    "read_rosinality_checkpoint",
    "save_rosinality_checkpoint",
]

logger = logging.getLogger(__name__)

ROSINALITY_CHECKPOINT_KEYS = ("g", "d", "g_ema", "latent_avg")
"""Top-level entries of a rosinality checkpoint that hold weights (training checkpoints add optimizer states and
``args``)."""

# How a rosinality tensor's shape relates to ours: the rosinality shape given our shape.
_SAME, _LEAD1, _SCALAR, _BIAS4D, _NOISE = "same", "lead1", "scalar", "bias4d", "noise"


def _rosinality_shape(kind: str, ours: torch.Size) -> tuple[int, ...]:
    if kind == _LEAD1:
        return (1, *ours)
    if kind == _SCALAR:
        return (1,)
    if kind == _BIAS4D:
        return (1, ours[0], 1, 1)
    if kind == _NOISE:
        return (1, 1, *ours)
    return tuple(ours)


@dataclass
class RosinalityLoadReport:
    """What did not match when a rosinality state dict was loaded into one of our modules.

    Attributes:
        missing_keys (`list[str]`): Our keys (parameters and persistent buffers other than the fixed
            ``resample_filter``) that the checkpoint did not provide; they keep their current values.
        unexpected_keys (`list[str]`): Checkpoint keys (rosinality names) that map to nothing in our module, e.g.
            a larger resolution or more mapping layers than the module has.
        mismatched_keys (`list[str]`): ``"rosinality_key -> our_key: checkpoint (shape) vs expected (shape)"``, or a
            blur kernel that differs from the module's filter; not loaded.
    """

    missing_keys: list[str] = field(default_factory=list)
    unexpected_keys: list[str] = field(default_factory=list)
    mismatched_keys: list[str] = field(default_factory=list)

    @property
    def is_exact(self) -> bool:
        """True when every key was loaded and every checkpoint key was used."""
        return not (self.missing_keys or self.unexpected_keys or self.mismatched_keys)


def read_rosinality_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a rosinality ``.pt`` checkpoint with ``torch.load(weights_only=True)`` on CPU.

    ``argparse.Namespace`` (the ``args`` entry of training checkpoints) is the only non-tensor class allowed.

    Args:
        path (`str` or `os.PathLike`): Checkpoint file.

    Returns:
        `dict[str, Any]` with some of ``g``, ``d``, ``g_ema`` (state dicts) and ``latent_avg`` (`Tensor` of shape
        `(w_dim,)`), plus whatever else the file holds.
    """
    with torch.serialization.safe_globals([argparse.Namespace]):
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, dict) or not any(k in checkpoint for k in ("g", "d", "g_ema")):
        keys = sorted(checkpoint) if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise ValueError(f"{os.fspath(path)} is not a rosinality checkpoint: expected g, d or g_ema, found {keys}")
    return checkpoint


def _generator_pairs(
    generator: StyleGAN2Generator,
) -> tuple[list[tuple[str, str, str]], dict[str, Tensor]]:
    """(rosinality key, our key, shape kind) for every weight, and the expected blur kernels by rosinality key."""
    synthesis = generator.synthesis
    first_layer = synthesis.get_submodule("b4.conv1")
    if not isinstance(first_layer, SynthesisLayer):
        raise TypeError(f"synthesis.b4.conv1 must be a SynthesisLayer, got {type(first_layer).__name__}")
    use_noise = first_layer.use_noise
    pairs = []
    for i in range(generator.mapping.num_layers):
        for name in ("weight", "bias"):
            pairs.append((f"style.{i + 1}.{name}", f"mapping.fc{i}.{name}", _SAME))
    pairs.append(("input.input", "synthesis.b4.const", _LEAD1))

    def styled(ros: str, ours: str, noise_index: int) -> None:
        pairs.append((f"{ros}.conv.weight", f"{ours}.weight", _LEAD1))
        pairs.append((f"{ros}.conv.modulation.weight", f"{ours}.affine.weight", _SAME))
        pairs.append((f"{ros}.conv.modulation.bias", f"{ours}.affine.bias", _SAME))
        pairs.append((f"{ros}.activate.bias", f"{ours}.bias", _SAME))
        if use_noise:
            pairs.append((f"{ros}.noise.weight", f"{ours}.noise_strength", _SCALAR))
            pairs.append((f"noises.noise_{noise_index}", f"{ours}.noise_const", _NOISE))

    def torgb(ros: str, ours: str) -> None:
        pairs.append((f"{ros}.conv.weight", f"{ours}.weight", _LEAD1))
        pairs.append((f"{ros}.conv.modulation.weight", f"{ours}.affine.weight", _SAME))
        pairs.append((f"{ros}.conv.modulation.bias", f"{ours}.affine.bias", _SAME))
        pairs.append((f"{ros}.bias", f"{ours}.bias", _BIAS4D))

    styled("conv1", "synthesis.b4.conv1", 0)
    torgb("to_rgb1", "synthesis.b4.torgb")
    kernels = {}
    for k, res in enumerate(synthesis.block_resolutions[1:]):
        block = getattr(synthesis, f"b{res}")
        styled(f"convs.{2 * k}", f"synthesis.b{res}.conv0", 2 * k + 1)
        styled(f"convs.{2 * k + 1}", f"synthesis.b{res}.conv1", 2 * k + 2)
        torgb(f"to_rgbs.{k}", f"synthesis.b{res}.torgb")
        kernels[f"convs.{2 * k}.conv.blur.kernel"] = block.conv0.resample_filter * 4
        kernels[f"to_rgbs.{k}.upsample.kernel"] = block.resample_filter * 4
    return pairs, kernels


def _discriminator_pairs(
    discriminator: StyleGAN2Discriminator,
) -> tuple[list[tuple[str, str, str]], dict[str, Tensor]]:
    first = f"b{discriminator.img_resolution}"
    pairs = [
        ("convs.0.0.weight", f"{first}.fromrgb.weight", _SAME),
        ("convs.0.1.bias", f"{first}.fromrgb.bias", _SAME),
    ]
    kernels = {}
    for k, res in enumerate(discriminator.block_resolutions, start=1):
        block = getattr(discriminator, f"b{res}")
        pairs += [
            (f"convs.{k}.conv1.0.weight", f"b{res}.conv0.weight", _SAME),
            (f"convs.{k}.conv1.1.bias", f"b{res}.conv0.bias", _SAME),
            (f"convs.{k}.conv2.1.weight", f"b{res}.conv1.weight", _SAME),
            (f"convs.{k}.conv2.2.bias", f"b{res}.conv1.bias", _SAME),
            (f"convs.{k}.skip.1.weight", f"b{res}.skip.weight", _SAME),
        ]
        kernels[f"convs.{k}.conv2.0.kernel"] = block.conv1.resample_filter
        kernels[f"convs.{k}.skip.0.kernel"] = block.skip.resample_filter
    pairs += [
        ("final_conv.0.weight", "b4.conv.weight", _SAME),
        ("final_conv.1.bias", "b4.conv.bias", _SAME),
        ("final_linear.0.weight", "b4.fc.weight", _SAME),
        ("final_linear.0.bias", "b4.fc.bias", _SAME),
        ("final_linear.1.weight", "b4.out.weight", _SAME),
        ("final_linear.1.bias", "b4.out.bias", _SAME),
    ]
    return pairs, kernels


def _load(
    module: torch.nn.Module,
    pairs: list[tuple[str, str, str]],
    kernels: Mapping[str, Tensor],
    state_dict: Mapping[str, Tensor],
) -> RosinalityLoadReport:
    report = RosinalityLoadReport()
    target = module.state_dict()
    converted: dict[str, Tensor] = {}
    used = set()
    for ros_key, our_key, kind in pairs:
        if ros_key not in state_dict:
            continue
        used.add(ros_key)
        tensor, ours = state_dict[ros_key], target[our_key]
        expected = _rosinality_shape(kind, ours.shape)
        if tuple(tensor.shape) != expected:
            report.mismatched_keys.append(
                f"{ros_key} -> {our_key}: checkpoint {tuple(tensor.shape)} vs expected {expected}"
            )
            continue
        converted[our_key] = tensor.reshape(ours.shape).to(ours.dtype)
    for ros_key, kernel in kernels.items():
        if ros_key not in state_dict:
            continue
        used.add(ros_key)
        tensor = state_dict[ros_key]
        # values of a meta tensor are unknown (a model built on the meta device to check a checkpoint's layout)
        comparable = not (tensor.is_meta or kernel.is_meta)
        if tensor.shape != kernel.shape or (
            comparable and not torch.allclose(tensor.float(), kernel.float().to(tensor.device), atol=1e-6)
        ):
            report.mismatched_keys.append(f"{ros_key}: blur kernel differs from the module's resample filter")
    report.unexpected_keys = sorted(k for k in state_dict if k not in used)
    report.missing_keys = sorted(k for k in target if k not in converted and not k.endswith("resample_filter"))
    # a module on the meta device takes the checkpoint's tensors as they are (copying into meta would drop them)
    on_meta = any(value.is_meta for value in target.values())
    module.load_state_dict(converted, strict=False, assign=on_meta)
    return report


def load_rosinality_generator(
    generator: StyleGAN2Generator, state_dict: Mapping[str, Tensor], latent_avg: Tensor | None = None
) -> RosinalityLoadReport:
    """Load a rosinality generator state dict (``ckpt["g_ema"]`` or ``ckpt["g"]``) into ``generator`` in place.

    Keys are checked for shape before loading; keys that do not fit are reported and left alone.

    Args:
        generator (`StyleGAN2Generator`): Target with the checkpoint's resolution, w_dim, mapping layers and
            channels (see :func:`build_rosinality_generator` to build one from the shapes).
        state_dict (`Mapping[str, Tensor]`): rosinality generator state dict.
        latent_avg (`Tensor` of shape `(w_dim,)`, *optional*): ``ckpt["latent_avg"]``, loaded into
            ``mapping.w_avg``; reported missing when absent.

    Returns:
        `RosinalityLoadReport`.
    """
    pairs, kernels = _generator_pairs(generator)
    source = dict(state_dict)
    if latent_avg is not None:
        source["latent_avg"] = latent_avg
        pairs.append(("latent_avg", "mapping.w_avg", _SAME))
    report = _load(generator, pairs, kernels, source)
    logger.info(
        "rosinality generator: %d missing, %d unexpected, %d mismatched keys",
        len(report.missing_keys),
        len(report.unexpected_keys),
        len(report.mismatched_keys),
    )
    return report


def load_rosinality_discriminator(
    discriminator: StyleGAN2Discriminator, state_dict: Mapping[str, Tensor]
) -> RosinalityLoadReport:
    """Load a rosinality discriminator state dict (``ckpt["d"]``) into ``discriminator`` in place.

    Args:
        discriminator (`StyleGAN2Discriminator`): Target (3 image channels; with ``c_dim > 0`` its label mapping is
            reported missing, rosinality discriminators being unconditional).
        state_dict (`Mapping[str, Tensor]`): rosinality discriminator state dict.

    Returns:
        `RosinalityLoadReport`.
    """
    pairs, kernels = _discriminator_pairs(discriminator)
    report = _load(discriminator, pairs, kernels, state_dict)
    logger.info(
        "rosinality discriminator: %d missing, %d unexpected, %d mismatched keys",
        len(report.missing_keys),
        len(report.unexpected_keys),
        len(report.mismatched_keys),
    )
    return report


def load_rosinality_checkpoint(
    checkpoint: str | os.PathLike | Mapping[str, Any],
    generator: StyleGAN2Generator | None = None,
    discriminator: StyleGAN2Discriminator | None = None,
    generator_key: str = "g_ema",
) -> dict[str, RosinalityLoadReport]:
    """Load a rosinality checkpoint (file or already-read dict) into a generator and/or a discriminator.

    Args:
        checkpoint (`str`, `os.PathLike` or `Mapping`): ``.pt`` file or the dict from
            :func:`read_rosinality_checkpoint`.
        generator (`StyleGAN2Generator`, *optional*): Receives ``checkpoint[generator_key]`` and ``latent_avg``.
        discriminator (`StyleGAN2Discriminator`, *optional*): Receives ``checkpoint["d"]``.
        generator_key (`str`, defaults to `"g_ema"`): ``"g_ema"`` (the EMA generator, for inference) or ``"g"``.

    Returns:
        `dict[str, RosinalityLoadReport]` with entries ``"generator"`` and/or ``"discriminator"``.
    """
    if not isinstance(checkpoint, Mapping):
        checkpoint = read_rosinality_checkpoint(checkpoint)
    reports = {}
    if generator is not None:
        if generator_key not in checkpoint:
            raise ValueError(f"checkpoint has no {generator_key!r} entry (found {sorted(checkpoint)})")
        reports["generator"] = load_rosinality_generator(
            generator, checkpoint[generator_key], checkpoint.get("latent_avg")
        )
    if discriminator is not None:
        if "d" not in checkpoint:
            raise ValueError(f"checkpoint has no 'd' entry (found {sorted(checkpoint)})")
        reports["discriminator"] = load_rosinality_discriminator(discriminator, checkpoint["d"])
    return reports


def _to_rosinality(
    module: torch.nn.Module, pairs: list[tuple[str, str, str]], kernels: Mapping[str, Tensor]
) -> dict[str, Tensor]:
    state = module.state_dict()
    out = {
        ros: state[ours].detach().reshape(_rosinality_shape(kind, state[ours].shape)).clone()
        for ros, ours, kind in pairs
    }
    out.update({ros: kernel.detach().clone() for ros, kernel in kernels.items()})
    return out


def generator_to_rosinality(generator: StyleGAN2Generator) -> dict[str, Tensor]:
    """Write ``generator`` as a rosinality ``Generator`` state dict (the inverse of :func:`load_rosinality_generator`).

    ``mapping.w_avg`` is not part of it: save it as the checkpoint's ``latent_avg``.

    Args:
        generator (`StyleGAN2Generator`): Unconditional generator with 3 image channels.

    Returns:
        `dict[str, Tensor]` in rosinality names and shapes, blur kernels included.
    """
    if generator.c_dim != 0 or generator.img_channels != 3:
        raise ValueError(
            f"rosinality generators are unconditional RGB: got c_dim={generator.c_dim}, "
            f"img_channels={generator.img_channels}"
        )
    if generator.z_dim != generator.w_dim:
        raise ValueError(f"rosinality generators need z_dim == w_dim, got {generator.z_dim} and {generator.w_dim}")
    pairs, kernels = _generator_pairs(generator)
    return _to_rosinality(generator, pairs, kernels)


def discriminator_to_rosinality(discriminator: StyleGAN2Discriminator) -> dict[str, Tensor]:
    """Write ``discriminator`` as a rosinality ``Discriminator`` state dict.

    Args:
        discriminator (`StyleGAN2Discriminator`): Unconditional discriminator with 3 image channels.

    Returns:
        `dict[str, Tensor]` in rosinality names and shapes, blur kernels included.
    """
    if discriminator.c_dim != 0 or discriminator.img_channels != 3:
        raise ValueError(
            f"rosinality discriminators are unconditional RGB: got c_dim={discriminator.c_dim}, "
            f"img_channels={discriminator.img_channels}"
        )
    pairs, kernels = _discriminator_pairs(discriminator)
    return _to_rosinality(discriminator, pairs, kernels)


def save_rosinality_checkpoint(
    path: str | os.PathLike,
    g_ema: StyleGAN2Generator,
    generator: StyleGAN2Generator | None = None,
    discriminator: StyleGAN2Discriminator | None = None,
) -> None:
    """Save ``{"g_ema", "latent_avg"[, "g"][, "d"]}`` in rosinality's layout with ``torch.save``.

    Args:
        path (`str` or `os.PathLike`): Output ``.pt`` file.
        g_ema (`StyleGAN2Generator`): Inference generator; its ``mapping.w_avg`` becomes ``latent_avg``.
        generator (`StyleGAN2Generator`, *optional*): Training generator (``g``).
        discriminator (`StyleGAN2Discriminator`, *optional*): Discriminator (``d``).
    """
    checkpoint: dict[str, Any] = {
        "g_ema": generator_to_rosinality(g_ema),
        "latent_avg": g_ema.mapping.w_avg.detach().clone(),
    }
    if generator is not None:
        checkpoint["g"] = generator_to_rosinality(generator)
    if discriminator is not None:
        checkpoint["d"] = discriminator_to_rosinality(discriminator)
    torch.save(checkpoint, path)


def _channel_rule(channels: Mapping[int, int], what: str) -> tuple[int, int]:
    """The smallest (channel_base, channel_max) that reproduce ``channels`` under ``min(base // res, max)``."""
    channel_max = max(channels.values())
    # base // res == c  <=>  c * res <= base < (c + 1) * res; at channel_max only base >= channel_max * res is needed.
    low = max(c * r for r, c in channels.items())
    high = min(((c + 1) * r - 1 for r, c in channels.items() if c < channel_max), default=low)
    if low <= high and channels_per_resolution(list(channels), low, channel_max) == dict(channels):
        return low, channel_max
    raise ValueError(f"{what} channels {dict(channels)} do not follow min(channel_base // res, channel_max)")


def build_rosinality_generator(
    state_dict: Mapping[str, Tensor], latent_avg: Tensor | None = None
) -> tuple[StyleGAN2Generator, RosinalityLoadReport]:
    """Build a :class:`StyleGAN2Generator` shaped like a rosinality generator state dict and load it.

    Resolution, w_dim, mapping depth and the channel rule are read from the weight shapes (FFHQ config F gives
    ``img_resolution=1024, w_dim=512, mapping_layers=8, channel_base=32768, channel_max=512``).

    Args:
        state_dict (`Mapping[str, Tensor]`): rosinality generator state dict (``ckpt["g_ema"]``).
        latent_avg (`Tensor` of shape `(w_dim,)`, *optional*): ``ckpt["latent_avg"]``.

    Returns:
        `(generator, report)`.
    """
    if "style.1.weight" not in state_dict or "input.input" not in state_dict:
        raise ValueError("state_dict is not a rosinality generator: style.1.weight / input.input missing")
    w_dim = state_dict["style.1.weight"].shape[1]
    mapping_layers = len([k for k in state_dict if re.fullmatch(r"style\.\d+\.weight", k)])
    num_rgbs = len([k for k in state_dict if re.fullmatch(r"to_rgbs\.\d+\.conv\.weight", k)])
    resolution = 2 ** (num_rgbs + 2)
    channels = {4: state_dict["input.input"].shape[1]}
    for k in range(num_rgbs):
        channels[2 ** (k + 3)] = state_dict[f"convs.{2 * k}.conv.weight"].shape[1]
    channel_base, channel_max = _channel_rule(channels, "generator")
    generator = StyleGAN2Generator(
        z_dim=w_dim,
        c_dim=0,
        w_dim=w_dim,
        img_resolution=resolution,
        mapping_layers=mapping_layers,
        channel_base=channel_base,
        channel_max=channel_max,
        use_noise="noises.noise_0" in state_dict or "conv1.noise.weight" in state_dict,
    )
    return generator, load_rosinality_generator(generator, state_dict, latent_avg)


def build_rosinality_discriminator(
    state_dict: Mapping[str, Tensor],
) -> tuple[StyleGAN2Discriminator, RosinalityLoadReport]:
    """Build a :class:`StyleGAN2Discriminator` shaped like a rosinality discriminator state dict and load it.

    Args:
        state_dict (`Mapping[str, Tensor]`): rosinality discriminator state dict (``ckpt["d"]``).

    Returns:
        `(discriminator, report)`.
    """
    if "convs.0.0.weight" not in state_dict or "final_conv.0.weight" not in state_dict:
        raise ValueError(
            "state_dict is not a rosinality discriminator: convs.0.0.weight / final_conv.0.weight missing"
        )
    num_blocks = len([k for k in state_dict if re.fullmatch(r"convs\.\d+\.conv1\.0\.weight", k)])
    resolution = 2 ** (num_blocks + 2)
    channels = {resolution: state_dict["convs.0.0.weight"].shape[0], 4: state_dict["final_conv.0.weight"].shape[0]}
    for k in range(1, num_blocks + 1):
        channels[resolution // 2**k] = state_dict[f"convs.{k}.conv2.1.weight"].shape[0]
    channel_base, channel_max = _channel_rule(channels, "discriminator")
    discriminator = StyleGAN2Discriminator(
        resolution,
        img_channels=state_dict["convs.0.0.weight"].shape[1],
        channel_base=channel_base,
        channel_max=channel_max,
    )
    return discriminator, load_rosinality_discriminator(discriminator, state_dict)
