"""Temporal / cross-view attention: the AnimateDiff "Vanilla" motion module and its insertion into a diffusers UNet.

The module (spec genblocks §3) is GroupNorm(groups, C) -> Linear(C, C) -> N x TemporalTransformerBlock ->
zero-initialised Linear(C, C) -> residual, where each block is 2 x [LayerNorm -> sinusoidal frame positions ->
self-attention over frames] -> LayerNorm -> GEGLU feed-forward (x4). Activations go (b*f, c, h, w) -> (b*h*w, f, c) ->
back, so attention only mixes the frames of one pixel of one sample; ``num_frames`` is a forward argument (upstream
hard-codes 16 or 8).

It subclasses diffusers' :class:`~diffusers.models.unets.unet_motion_model.AnimateDiffTransformer3D` (the module
inside ``MotionAdapter``; its blocks are ``BasicTransformerBlock(double_self_attention=True,
positional_embeddings="sinusoidal")`` with ``FeedForward``/``GEGLU`` and ``SinusoidalPositionalEmbedding``), so
parameter names match diffusers' motion modules. One difference from diffusers is kept switchable: AnimateDiff,
X-Portrait, DiffPortrait3D and MagicAnimate normalise each frame on its own (GroupNorm on ``(b f) c h w``), diffusers
normalises all frames of a sample together (GroupNorm on ``b c f h w``); ``norm_per_frame=True`` (default) follows the
papers' code.

**Placement.** Modules go *after* LDM blocks, named by LDM indices, as in the papers' code. A diffusers
``UNet2DConditionModel`` maps onto LDM blocks as follows (see :func:`unet_ldm_layout`):

- ``input_blocks[0]`` is ``conv_in``; then for each ``down_blocks[b]``, one input block per layer ``l`` (``resnets[l]``
  followed by ``attentions[l]`` when the block has attention), then one for ``downsamplers[0]`` if present.
  SD1.5: 1, 2 = ``down_blocks.0`` layers; 3 = its downsampler; 4, 5 / 6; 7, 8 / 9; 10, 11 = ``down_blocks.3``.
- ``middle_block`` is ``mid_block`` (resnet, attention, resnet); a middle module runs after
  ``mid_block.attentions[0]``.
- ``output_blocks``: for each ``up_blocks[b]``, one per layer (``layers_per_block + 1``): ``resnets[l]`` (+
  ``attentions[l]``), the last one also ``upsamplers[0]``. SD1.5: 0-2 = ``up_blocks.0`` (2 ends with the upsampler),
  3-5, 6-8, 9-11 = ``up_blocks.3``.

Presets (:meth:`MotionPlacement.animatediff`, :meth:`MotionPlacement.diffportrait3d`) are defined by block structure
and resolved on a UNet, so SD1.5 gets the papers' indices and a tiny 2-level UNet gets the same pattern:

- ``animatediff``: after every down-block layer (SD1.5 input blocks 1, 2, 4, 5, 7, 8, 10, 11), after every output block
  (0-11), no middle module. X-Portrait runs the module of an upsampling output block after the upsampler (the LDM
  block ends there); AnimateDiff's own UNet3D and diffusers' ``UNetMotionModel`` run it before the upsampler
  (``output_before_upsampler=True``).
- ``diffportrait3d``: after every input block 1-11 (downsamplers included), after every output block and a second one
  stacked after each upsampling output block (LDM ``output_blocks_motion_module.{j}.1``), and a middle module that only
  the unconditional pass calls (``middle_uncond_only=True``, an upstream quirk kept behind a flag).

Modules run through forward hooks on the chosen diffusers sub-modules, so the UNet's own state dict and forward are
untouched; the modules live in a :class:`TemporalModuleSet` (an ``nn.ModuleDict``) to save and train on their own.

Papers: AnimateDiff (arXiv 2307.04725); X-Portrait (arXiv 2403.15931); DiffPortrait3D (arXiv 2312.13016). Upstream:
guoyww/AnimateDiff@0741d34cebbddbe32a6d6d1f7715d57a1de7ed8a ``animatediff/models/motion_module.py``
(``VanillaTemporalModule``, ``TemporalTransformer3DModel``: per-frame GroupNorm, ``PositionalEncoding``);
bytedance/X-Portrait@e63e565f9f5ddbc5a23f662215d29e6227fb24a0 ``model_lib/ControlNet/cldm/cldm.py`` (motion modules
after input blocks ``[1,2,4,5,7,8,10,11]`` and after every output block);
FreedomGu/DiffPortrait3D@f3ef2dbe55ad0408c8cdbfdf211e0509e7388be1
``control_model/ControlNet/ldm/modules/diffusionmodules/openaimodel.py`` (``UNetModel_Temporal``: modules after input
blocks 1-11, ``output_blocks_motion_module.{j}`` with a second module after upsamplers, ``middle_block_motion_module``
called only with ``uc=True``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Self, cast

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D
from torch import nn
from torch.utils.hooks import RemovableHandle

logger = logging.getLogger(__name__)

MIDDLE_NAME = "middle_block"


class TemporalTransformer(AnimateDiffTransformer3D):
    """AnimateDiff "Vanilla" temporal transformer over the frames (or views) of a ``(b f)`` batch.

    Args:
        in_channels (`int`): Channels C of the feature map; must be divisible by ``num_attention_heads`` and
            ``norm_num_groups``.
        num_attention_heads (`int`, defaults to 8): Heads; each head has ``C // num_attention_heads`` channels.
        num_layers (`int`, defaults to 1): TemporalTransformerBlocks (each: 2 frame self-attentions + feed-forward).
        max_len (`int`, defaults to 24): Length of the sinusoidal position table (32 in DiffPortrait3D); the most
            frames one call may have when ``positional_encoding`` is on.
        positional_encoding (`bool`, defaults to `True`): Add sinusoidal frame positions before each attention.
        norm_num_groups (`int`, defaults to 32): GroupNorm groups.
        norm_per_frame (`bool`, defaults to `True`): GroupNorm statistics per frame (AnimateDiff and the papers' code);
            `False` pools them over the frames of a sample (diffusers ``AnimateDiffTransformer3D``).
        zero_init (`bool`, defaults to `True`): Zero the output projection, so a new module is an identity.
    """

    def __init__(
        self,
        in_channels: int,
        num_attention_heads: int = 8,
        num_layers: int = 1,
        max_len: int = 24,
        positional_encoding: bool = True,
        norm_num_groups: int = 32,
        norm_per_frame: bool = True,
        zero_init: bool = True,
    ) -> None:
        if in_channels % num_attention_heads:
            raise ValueError(
                f"in_channels={in_channels} must be divisible by num_attention_heads={num_attention_heads}."
            )
        if in_channels % norm_num_groups:
            raise ValueError(f"in_channels={in_channels} must be divisible by norm_num_groups={norm_num_groups}.")
        if max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {max_len}.")
        super().__init__(
            num_attention_heads=num_attention_heads,
            attention_head_dim=in_channels // num_attention_heads,
            in_channels=in_channels,
            num_layers=num_layers,
            norm_num_groups=norm_num_groups,
            cross_attention_dim=None,
            activation_fn="geglu",
            attention_bias=False,
            double_self_attention=True,
            positional_embeddings="sinusoidal" if positional_encoding else None,
            num_positional_embeddings=max_len if positional_encoding else None,
        )
        self.max_len = max_len
        self.positional_encoding = positional_encoding
        self.norm_per_frame = norm_per_frame
        if zero_init:
            nn.init.zeros_(self.proj_out.weight)
            nn.init.zeros_(self.proj_out.bias)

    def forward(self, hidden_states: torch.Tensor, num_frames: int) -> torch.Tensor:  # type: ignore[override]
        """Attend over frames at every pixel and add the result to the input.

        Args:
            hidden_states (`torch.Tensor` of shape `(batch * num_frames, C, H, W)`): Features laid out ``(b f)``.
            num_frames (`int`): Frames (views) per sample.

        Returns:
            `torch.Tensor` of shape `(batch * num_frames, C, H, W)`.
        """
        if hidden_states.ndim != 4:
            raise ValueError(f"hidden_states must be (batch*frames, C, H, W), got {tuple(hidden_states.shape)}.")
        batch_frames, channels, height, width = hidden_states.shape
        if num_frames < 1 or batch_frames % num_frames:
            raise ValueError(f"batch {batch_frames} of hidden_states is not a multiple of num_frames={num_frames}.")
        if self.positional_encoding and num_frames > self.max_len:
            raise ValueError(f"num_frames={num_frames} exceeds the positional-encoding max_len={self.max_len}.")
        batch = batch_frames // num_frames
        residual = hidden_states
        if self.norm_per_frame:
            hidden_states = self.norm(hidden_states).reshape(batch, num_frames, channels, height, width)
        else:
            hidden_states = hidden_states.reshape(batch, num_frames, channels, height, width).permute(0, 2, 1, 3, 4)
            hidden_states = self.norm(hidden_states).permute(0, 2, 1, 3, 4)
        # (b, f, c, h, w) -> (b*h*w, f, c): one sequence of frames per pixel per sample
        hidden_states = hidden_states.permute(0, 3, 4, 1, 2).reshape(batch * height * width, num_frames, channels)
        hidden_states = self.proj_in(hidden_states)
        for block in self.transformer_blocks:
            hidden_states = block(hidden_states)
        hidden_states = self.proj_out(hidden_states)
        hidden_states = hidden_states.reshape(batch, height, width, num_frames, channels).permute(0, 3, 4, 1, 2)
        return hidden_states.reshape(batch_frames, channels, height, width) + residual

    def extra_repr(self) -> str:
        settings = (self.max_len, self.positional_encoding, self.norm_per_frame)
        return "max_len={}, positional_encoding={}, norm_per_frame={}".format(*settings)


@dataclass(frozen=True)
class TemporalModuleConfig:
    """Hyper-parameters shared by every temporal module of a UNet (see :class:`TemporalTransformer`).

    Defaults are AnimateDiff v1/v2 "Vanilla" as used by X-Portrait and MagicAnimate; DiffPortrait3D uses
    ``max_len=32``.
    """

    num_attention_heads: int = 8  # heads per temporal attention
    num_layers: int = 1  # TemporalTransformerBlocks per module ("num_transformer_block" upstream)
    max_len: int = 24  # sinusoidal table length ("temporal_position_encoding_max_len")
    positional_encoding: bool = True  # "temporal_position_encoding"
    norm_num_groups: int = 32  # GroupNorm groups; must divide every channel count
    norm_per_frame: bool = True  # per-frame GroupNorm statistics (papers' code) vs. pooled over frames (diffusers)
    zero_init: bool = True  # zero output projection ("zero_initialize")

    def build(self, in_channels: int) -> TemporalTransformer:
        """A :class:`TemporalTransformer` for ``in_channels`` channels with these settings."""
        return TemporalTransformer(
            in_channels,
            num_attention_heads=self.num_attention_heads,
            num_layers=self.num_layers,
            max_len=self.max_len,
            positional_encoding=self.positional_encoding,
            norm_num_groups=self.norm_num_groups,
            norm_per_frame=self.norm_per_frame,
            zero_init=self.zero_init,
        )


@dataclass(frozen=True)
class LdmBlock:
    """One LDM block of a diffusers UNet.

    Attributes:
        index: LDM ``input_blocks`` / ``output_blocks`` index (0 for the middle block).
        kind: ``"conv_in"``, ``"layer"`` (resnet + optional attention), ``"downsampler"`` or ``"middle"``.
        target: Dotted path of the diffusers module whose output ends the block.
        channels: Channels of that output.
        down_or_up_block: Index into ``down_blocks`` / ``up_blocks`` (`None` for conv_in and the middle block).
        layer: Layer index inside that block (`None` for conv_in, downsamplers and the middle block).
        pre_upsampler_target: For an output block ending with an upsampler, the module just before the upsampler.
    """

    index: int
    kind: Literal["conv_in", "layer", "downsampler", "middle"]
    target: str
    channels: int
    down_or_up_block: int | None = None
    layer: int | None = None
    pre_upsampler_target: str | None = None


@dataclass(frozen=True)
class UNetLdmLayout:
    """The LDM block structure of a diffusers UNet (see the module docstring for the mapping)."""

    input_blocks: tuple[LdmBlock, ...]
    middle_block: LdmBlock | None
    output_blocks: tuple[LdmBlock, ...]


def _layer_target(prefix: str, block: nn.Module, layer: int) -> str:
    attentions = getattr(block, "attentions", None)
    if attentions is not None and layer < len(attentions):
        return f"{prefix}.attentions.{layer}"
    return f"{prefix}.resnets.{layer}"


def _sub_modules(block: nn.Module, name: str) -> nn.ModuleList:
    """``block.<name>`` (``resnets``, ``downsamplers``, ``upsamplers``), empty where diffusers leaves it ``None``."""
    found = getattr(block, name, None)
    return found if isinstance(found, nn.ModuleList) else nn.ModuleList()


def _out_channels(module: nn.Module) -> int:
    """The ``out_channels`` of a diffusers resnet, downsampler or upsampler."""
    channels = module.out_channels
    if not isinstance(channels, int):
        raise TypeError(f"{type(module).__name__}.out_channels must be an int, got {type(channels).__name__}")
    return channels


def unet_ldm_layout(unet: UNet2DConditionModel) -> UNetLdmLayout:
    """Map ``unet``'s ``down_blocks`` / ``mid_block`` / ``up_blocks`` onto LDM input / middle / output blocks."""
    inputs = [LdmBlock(0, "conv_in", "conv_in", unet.conv_in.out_channels)]
    for b, block in enumerate(unet.down_blocks):
        for layer, resnet in enumerate(_sub_modules(block, "resnets")):
            target = _layer_target(f"down_blocks.{b}", block, layer)
            inputs.append(LdmBlock(len(inputs), "layer", target, _out_channels(resnet), b, layer))
        for d, downsampler in enumerate(_sub_modules(block, "downsamplers")):
            path = f"down_blocks.{b}.downsamplers.{d}"
            inputs.append(LdmBlock(len(inputs), "downsampler", path, _out_channels(downsampler), b))
    middle = None
    if unet.mid_block is not None:
        mid = unet.mid_block
        middle = LdmBlock(0, "middle", _layer_target("mid_block", mid, 0), _out_channels(mid.resnets[0]))
    outputs: list[LdmBlock] = []
    for b, block in enumerate(unet.up_blocks):
        resnets = _sub_modules(block, "resnets")
        last = len(resnets) - 1
        for layer, resnet in enumerate(resnets):
            target = _layer_target(f"up_blocks.{b}", block, layer)
            if layer == last and _sub_modules(block, "upsamplers"):
                path = f"up_blocks.{b}.upsamplers.0"
                outputs.append(LdmBlock(len(outputs), "layer", path, _out_channels(resnet), b, layer, target))
            else:
                outputs.append(LdmBlock(len(outputs), "layer", target, _out_channels(resnet), b, layer))
    return UNetLdmLayout(tuple(inputs), middle, tuple(outputs))


def _sorted_unique(name: str, values: tuple[int, ...]) -> tuple[int, ...]:
    if any(not isinstance(v, int) or v < 0 for v in values):
        raise ValueError(f"{name} must hold non-negative block indices, got {values}.")
    if len(set(values)) != len(values):
        raise ValueError(f"{name} has repeated indices: {values}.")
    return tuple(sorted(values))


@dataclass(frozen=True)
class MotionPlacement:
    """Where temporal modules go, in LDM block indices (see the module docstring).

    Attributes:
        input_blocks: LDM input blocks followed by a module (not 0, which is ``conv_in``).
        output_blocks: LDM output blocks followed by a module.
        output_second_blocks: Output blocks (a subset of ``output_blocks``) followed by a *second* module stacked after
            the first (DiffPortrait3D's ``output_blocks_motion_module.{j}.1`` after each upsampler).
        middle_block: A module after the middle block's attention.
        middle_uncond_only: The middle module runs only while :attr:`TemporalModuleSet.unconditional` is set
            (DiffPortrait3D calls it only in the unconditional pass).
        output_before_upsampler: Run the module of an upsampling output block before its upsampler (AnimateDiff UNet3D,
            diffusers ``UNetMotionModel``) instead of after it (the LDM block end; X-Portrait, DiffPortrait3D).

    Example:
        >>> MotionPlacement(input_blocks=(2, 1), output_blocks=(0,)).module_names()
        ['input_blocks_1', 'input_blocks_2', 'output_blocks_0']
    """

    input_blocks: tuple[int, ...] = ()
    output_blocks: tuple[int, ...] = ()
    output_second_blocks: tuple[int, ...] = ()
    middle_block: bool = False
    middle_uncond_only: bool = False
    output_before_upsampler: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_blocks", _sorted_unique("input_blocks", tuple(self.input_blocks)))
        object.__setattr__(self, "output_blocks", _sorted_unique("output_blocks", tuple(self.output_blocks)))
        second = _sorted_unique("output_second_blocks", tuple(self.output_second_blocks))
        object.__setattr__(self, "output_second_blocks", second)
        if 0 in self.input_blocks:
            raise ValueError("input_blocks cannot contain 0: LDM input block 0 is conv_in.")
        if not set(second) <= set(self.output_blocks):
            raise ValueError(f"output_second_blocks {second} must be a subset of output_blocks {self.output_blocks}.")
        if self.middle_uncond_only and not self.middle_block:
            raise ValueError("middle_uncond_only=True needs middle_block=True.")

    @classmethod
    def animatediff(cls, unet: UNet2DConditionModel, output_before_upsampler: bool = False) -> MotionPlacement:
        """AnimateDiff / X-Portrait: after every down-block layer and every output block, no middle module."""
        layout = unet_ldm_layout(unet)
        return cls(
            input_blocks=tuple(b.index for b in layout.input_blocks if b.kind == "layer"),
            output_blocks=tuple(b.index for b in layout.output_blocks),
            output_before_upsampler=output_before_upsampler,
        )

    @classmethod
    def diffportrait3d(cls, unet: UNet2DConditionModel, middle_uncond_only: bool = True) -> MotionPlacement:
        """DiffPortrait3D: after every input block (downsamplers too), every output block plus a second module after
        each upsampler, and a middle module (by default only in the unconditional pass)."""
        layout = unet_ldm_layout(unet)
        return cls(
            input_blocks=tuple(b.index for b in layout.input_blocks if b.kind != "conv_in"),
            output_blocks=tuple(b.index for b in layout.output_blocks),
            output_second_blocks=tuple(b.index for b in layout.output_blocks if b.pre_upsampler_target is not None),
            middle_block=layout.middle_block is not None,
            middle_uncond_only=middle_uncond_only and layout.middle_block is not None,
        )

    @classmethod
    def preset(cls, name: Literal["animatediff", "diffportrait3d"], unet: UNet2DConditionModel) -> MotionPlacement:
        """The named preset resolved on ``unet``."""
        if name == "animatediff":
            return cls.animatediff(unet)
        if name == "diffportrait3d":
            return cls.diffportrait3d(unet)
        raise ValueError(f"unknown motion placement preset {name!r}; expected 'animatediff' or 'diffportrait3d'.")

    def module_names(self) -> list[str]:
        """Module names in execution order: ``input_blocks_{i}``, ``middle_block``, ``output_blocks_{j}[_1]``."""
        names = [f"input_blocks_{i}" for i in self.input_blocks]
        if self.middle_block:
            names.append(MIDDLE_NAME)
        for j in self.output_blocks:
            names.append(f"output_blocks_{j}")
            if j in self.output_second_blocks:
                names.append(f"output_blocks_{j}_1")
        return names


@dataclass(frozen=True)
class _Slot:
    name: str
    target: str
    channels: int


def _resolve_slots(layout: UNetLdmLayout, placement: MotionPlacement) -> list[_Slot]:
    slots: list[_Slot] = []
    for i in placement.input_blocks:
        if i >= len(layout.input_blocks):
            raise ValueError(
                f"input block {i} out of range: the UNet has input blocks 0..{len(layout.input_blocks) - 1}."
            )
        block = layout.input_blocks[i]
        slots.append(_Slot(f"input_blocks_{i}", block.target, block.channels))
    if placement.middle_block:
        if layout.middle_block is None:
            raise ValueError("placement asks for a middle module but the UNet has no mid_block.")
        slots.append(_Slot(MIDDLE_NAME, layout.middle_block.target, layout.middle_block.channels))
    for j in placement.output_blocks:
        if j >= len(layout.output_blocks):
            raise ValueError(
                f"output block {j} out of range: the UNet has output blocks 0..{len(layout.output_blocks) - 1}."
            )
        block = layout.output_blocks[j]
        target = block.target
        if placement.output_before_upsampler and block.pre_upsampler_target is not None:
            target = block.pre_upsampler_target
        slots.append(_Slot(f"output_blocks_{j}", target, block.channels))
        if j in placement.output_second_blocks:
            slots.append(_Slot(f"output_blocks_{j}_1", target, block.channels))
    return slots


def _apply_to_sample(output: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """Apply ``fn`` to the feature map inside a diffusers sub-module output (tensor, tuple or ``BaseOutput``)."""
    if isinstance(output, torch.Tensor):
        return fn(output)
    if isinstance(output, tuple):
        return (fn(output[0]), *output[1:])
    if hasattr(output, "sample"):
        output.sample = fn(output.sample)
        return output
    raise TypeError(f"cannot insert a temporal module after a module returning {type(output).__name__}.")


class TemporalModuleSet(nn.ModuleDict):
    """The temporal modules of one UNet, keyed by :meth:`MotionPlacement.module_names`, plus their forward hooks.

    The set is an ``nn.ModuleDict`` that is *not* registered inside the UNet: save, load, train and move it on its own
    (``set.to(device)``), e.g. ``safetensors.torch.save_file(set.state_dict(), path)``. The hooks hold references to
    this set, and ``copy.deepcopy(unet)`` copies them by reference: :meth:`remove` before deep-copying the UNet (e.g.
    for an EMA copy) and attach a copied set to the copy.

    Args:
        modules (`dict[str, TemporalTransformer]`): The modules, keyed by name.
        placement (`MotionPlacement`): Where they go.
        num_frames_getter (`Callable[[], int]`, *optional*): Returns the frames per sample of the current UNet call;
            when not given, the :attr:`num_frames` attribute (or :meth:`frames`) is used.

    Attributes:
        num_frames (`int | None`): Frames (views) per sample of the next UNet calls; the UNet batch is ``(b f)``.
        unconditional (`bool`): Marks the unconditional CFG pass (enables a ``middle_uncond_only`` middle module).
    """

    def __init__(
        self,
        modules: Mapping[str, TemporalTransformer],
        placement: MotionPlacement,
        num_frames_getter: Callable[[], int] | None = None,
    ) -> None:
        expected = placement.module_names()
        if list(modules) != expected:
            raise ValueError(f"modules must be keyed {expected} (placement order), got {list(modules)}.")
        super().__init__(dict(modules))
        self.placement = placement
        self.num_frames_getter = num_frames_getter
        self.num_frames: int | None = None
        self.unconditional = False
        self._handles: list[RemovableHandle] = []

    @classmethod
    def build(
        cls,
        unet: UNet2DConditionModel,
        placement: MotionPlacement,
        config: TemporalModuleConfig | None = None,
        num_frames_getter: Callable[[], int] | None = None,
    ) -> TemporalModuleSet:
        """Create one :class:`TemporalTransformer` per placement slot, sized from ``unet``, on its device and dtype."""
        config = config if config is not None else TemporalModuleConfig()
        slots = _resolve_slots(unet_ldm_layout(unet), placement)
        modules = {slot.name: config.build(slot.channels) for slot in slots}
        return cls(modules, placement, num_frames_getter).to(device=unet.device, dtype=unet.dtype)

    def attach(self, unet: UNet2DConditionModel) -> TemporalModuleSet:
        """Register forward hooks so ``unet``'s forward runs each module after its block; returns ``self``."""
        if self._handles:
            raise ValueError("this TemporalModuleSet is already attached; call remove() first.")
        groups: dict[str, list[str]] = {}
        for slot in _resolve_slots(unet_ldm_layout(unet), self.placement):
            if self[slot.name].in_channels != slot.channels:
                raise ValueError(
                    f"module {slot.name!r} has {self[slot.name].in_channels} channels, the UNet block {slot.channels}."
                )
            groups.setdefault(slot.target, []).append(slot.name)
        for target, names in groups.items():
            hook = self._make_hook(tuple(names))
            self._handles.append(unet.get_submodule(target).register_forward_hook(hook))
        logger.debug("temporal modules attached: %s", self.placement.module_names())
        return self

    def remove(self) -> None:
        """Remove the hooks; the UNet is plain again."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    @property
    def attached(self) -> bool:
        """Whether hooks are registered on a UNet."""
        return bool(self._handles)

    def current_num_frames(self) -> int:
        """Frames per sample for the running UNet call, from ``num_frames_getter`` or :attr:`num_frames`."""
        frames = self.num_frames_getter() if self.num_frames_getter is not None else self.num_frames
        if frames is None:
            raise ValueError(
                "num_frames is not set: set TemporalModuleSet.num_frames, use `with modules.frames(n):`, "
                "or pass num_frames_getter."
            )
        return int(frames)

    @contextmanager
    def frames(self, num_frames: int) -> Iterator[TemporalModuleSet]:
        """Set :attr:`num_frames` inside the ``with`` block."""
        previous, self.num_frames = self.num_frames, num_frames
        try:
            yield self
        finally:
            self.num_frames = previous

    @contextmanager
    def unconditional_pass(self) -> Iterator[TemporalModuleSet]:
        """Mark the UNet calls inside the ``with`` block as the unconditional CFG pass."""
        previous, self.unconditional = self.unconditional, True
        try:
            yield self
        finally:
            self.unconditional = previous

    def _make_hook(self, names: tuple[str, ...]) -> Callable[[nn.Module, Any, Any], Any]:
        def hook(module: nn.Module, args: Any, output: Any) -> Any:
            active = [
                n
                for n in names
                if not (n == MIDDLE_NAME and self.placement.middle_uncond_only and not self.unconditional)
            ]
            if not active:
                return output
            frames = self.current_num_frames()

            def run(hidden_states: torch.Tensor) -> torch.Tensor:
                for name in active:
                    hidden_states = self[name](hidden_states, num_frames=frames)
                return hidden_states

            return _apply_to_sample(output, run)

        return hook


class TemporalModules(ModelMixin, ConfigMixin):
    """A :class:`TemporalModuleSet` as one saveable diffusers model (``config.json`` + safetensors): the base of a
    paper's motion (X-Portrait) or cross-view (DiffPortrait3D) modules.

    A subclass sets :attr:`set_attribute` (the attribute holding the set, hence the state-dict prefix) and defines a
    ``@register_to_config`` constructor with its paper's typed, JSON-able settings that builds a
    :class:`MotionPlacement` and a :class:`TemporalModuleConfig` and calls ``super().__init__``; diffusers resolves a
    saved folder by the subclass's name. The subclass's module must also import ``ModelMixin``: a pipeline's
    ``from_pretrained`` looks the loadable base classes up in the module that defines the component's class. The modules are hooked into a UNet with :meth:`attach`; the ``(b f)`` layout
    of the UNet batch is set with :meth:`frames`, the unconditional pass with :meth:`unconditional_pass`.

    Args:
        placement (`MotionPlacement`): Where the modules go, in LDM block indices.
        module_channels (`Sequence[int]`): Channels of each module, in :meth:`MotionPlacement.module_names` order.
        temporal (`TemporalModuleConfig`): Hyper-parameters of every module.
    """

    # ConfigMixin declares `config_name = None` without a type, so mypy takes None as its type.
    config_name = "config.json"  # type: ignore[assignment]
    set_attribute: ClassVar[str] = "temporal_modules"

    def __init__(
        self, placement: MotionPlacement, module_channels: Sequence[int], temporal: TemporalModuleConfig
    ) -> None:
        super().__init__()
        names = placement.module_names()
        if len(module_channels) != len(names):
            raise ValueError(
                f"module_channels must hold one width per module ({len(names)}: {names}), got {list(module_channels)}"
            )
        modules = {name: temporal.build(int(c)) for name, c in zip(names, module_channels, strict=True)}
        setattr(self, self.set_attribute, TemporalModuleSet(modules, placement))
        self.temporal_config = temporal

    @staticmethod
    def placement_channels(unet: UNet2DConditionModel, placement: MotionPlacement) -> tuple[int, ...]:
        """Channels of each module of ``placement`` on ``unet``, in :meth:`MotionPlacement.module_names` order."""
        return tuple(slot.channels for slot in _resolve_slots(unet_ldm_layout(unet), placement))

    def to_unet(self, unet: UNet2DConditionModel) -> Self:
        """Move the modules to ``unet``'s device, and to its dtype when that is not fp32; returns ``self``."""
        # ModelMixin.to is wrapped with functools.wraps, which typeshed types as an unbound call; the call is the usual.
        modules = cast(nn.Module, self)
        modules.to(unet.device)
        if unet.dtype != torch.float32:
            modules.to(unet.dtype)
        return self

    @property
    def module_set(self) -> TemporalModuleSet:
        """The :class:`TemporalModuleSet` (stored under :attr:`set_attribute`)."""
        return getattr(self, self.set_attribute)

    @property
    def placement(self) -> MotionPlacement:
        """Where the modules go, in LDM block indices."""
        return self.module_set.placement

    @property
    def max_frames(self) -> int:
        """The most frames (views) one UNet call may have (the position-table length)."""
        return int(self.temporal_config.max_len)

    @property
    def attached(self) -> bool:
        """Whether the modules are hooked into a UNet."""
        return self.module_set.attached

    def attach(self, unet: UNet2DConditionModel) -> Self:
        """Hook the modules into ``unet``'s forward, after their blocks; returns ``self``."""
        self.module_set.attach(unet)
        return self

    def remove(self) -> None:
        """Remove the hooks; the UNet is plain again."""
        self.module_set.remove()

    @contextmanager
    def frames(self, num_frames: int) -> Iterator[Self]:
        """Inside the ``with`` block, the hooked UNet's batch is laid out ``(b f)`` with ``num_frames`` frames."""
        if num_frames > self.max_frames:
            raise ValueError(f"num_frames={num_frames} exceeds the temporal modules' max_len={self.max_frames}")
        with self.module_set.frames(num_frames):
            yield self

    @contextmanager
    def unconditional_pass(self) -> Iterator[Self]:
        """Mark the UNet calls inside the ``with`` block as the unconditional pass (enables a ``middle_uncond_only``
        middle module)."""
        with self.module_set.unconditional_pass():
            yield self

    def forward(self, hidden_states: torch.Tensor, num_frames: int) -> torch.Tensor:
        """Not a standalone layer: the modules run inside the UNet they are attached to."""
        raise TypeError(
            f"{type(self).__name__} runs through hooks: call attach(unet), then the UNet inside `with modules.frames(n)`"
        )


_PLACEMENT_FIELDS = (
    "input_blocks",
    "output_blocks",
    "output_second_blocks",
    "middle_block",
    "middle_uncond_only",
    "output_before_upsampler",
)
_MODULE_FIELDS = ("num_attention_heads", "num_layers", "max_len", "norm_num_groups", "norm_per_frame", "zero_init")


class PlacedTemporalModules(TemporalModules):
    """:class:`TemporalModules` whose constructor takes the placement and the module settings as flat, JSON-able
    arguments: the saveable form of a paper's motion (X-Portrait, humananim) or cross-view (DiffPortrait3D) modules.

    A paper's class only names its :attr:`~TemporalModules.set_attribute` and its :attr:`defaults` (the values of the
    arguments left ``None``); diffusers saves the resolved arguments in ``config.json`` and resolves a saved folder by
    the subclass's name. Its module must import ``ModelMixin`` (see :class:`TemporalModules`). Arguments missing from
    an older ``config.json`` take the class's defaults.

    Args:
        input_blocks (`Sequence[int]`, *optional*): LDM input blocks followed by a module.
        output_blocks (`Sequence[int]`, *optional*): LDM output blocks followed by a module.
        module_channels (`Sequence[int]`, *optional*): Channels of each module, in :meth:`MotionPlacement.module_names`
            order.
        output_second_blocks, middle_block, middle_uncond_only, output_before_upsampler: The other
            :class:`MotionPlacement` fields.
        num_attention_heads, num_layers, max_len, norm_num_groups, norm_per_frame, zero_init: The
            :class:`TemporalModuleConfig` fields.

    Every argument left ``None`` takes :attr:`defaults`, else the :class:`MotionPlacement` /
    :class:`TemporalModuleConfig` default (no modules, AnimateDiff "Vanilla" settings).
    """

    defaults: ClassVar[Mapping[str, Any]] = {}
    """A paper's values of the arguments left ``None`` (e.g. SD1.5's blocks and channels, ``max_len``)."""

    @register_to_config
    def __init__(
        self,
        input_blocks: Sequence[int] | None = None,
        output_blocks: Sequence[int] | None = None,
        module_channels: Sequence[int] | None = None,
        output_second_blocks: Sequence[int] | None = None,
        middle_block: bool | None = None,
        middle_uncond_only: bool | None = None,
        output_before_upsampler: bool | None = None,
        num_attention_heads: int | None = None,
        num_layers: int | None = None,
        max_len: int | None = None,
        norm_num_groups: int | None = None,
        norm_per_frame: bool | None = None,
        zero_init: bool | None = None,
    ) -> None:
        given: dict[str, Any] = {
            "input_blocks": input_blocks,
            "output_blocks": output_blocks,
            "module_channels": module_channels,
            "output_second_blocks": output_second_blocks,
            "middle_block": middle_block,
            "middle_uncond_only": middle_uncond_only,
            "output_before_upsampler": output_before_upsampler,
            "num_attention_heads": num_attention_heads,
            "num_layers": num_layers,
            "max_len": max_len,
            "norm_num_groups": norm_num_groups,
            "norm_per_frame": norm_per_frame,
            "zero_init": zero_init,
        }
        base = {
            **{name: getattr(MotionPlacement(), name) for name in _PLACEMENT_FIELDS},
            **{name: getattr(TemporalModuleConfig(), name) for name in _MODULE_FIELDS},
            "module_channels": (),
        }
        settings = {
            name: value if value is not None else self.defaults.get(name, base[name]) for name, value in given.items()
        }
        for name in ("input_blocks", "output_blocks", "output_second_blocks", "module_channels"):
            settings[name] = tuple(int(v) for v in settings[name])
        placement = MotionPlacement(**{name: settings[name] for name in _PLACEMENT_FIELDS})
        temporal = TemporalModuleConfig(**{name: settings[name] for name in _MODULE_FIELDS})
        super().__init__(placement, settings["module_channels"], temporal)
        self.register_to_config(**settings)  # the resolved values, so config.json reads on its own

    @classmethod
    def for_placement(cls, unet: UNet2DConditionModel, placement: MotionPlacement, **settings: Any) -> Self:
        """Modules at ``placement`` sized for ``unet`` (channels from its blocks), on its device and dtype.

        Args:
            unet (`UNet2DConditionModel`): The UNet they will be attached to.
            placement (`MotionPlacement`): Where they go (e.g. :meth:`MotionPlacement.animatediff` on ``unet``).
            **settings: :class:`TemporalModuleConfig` fields (``num_attention_heads``, ``max_len``, ...).
        """
        unknown = sorted(set(settings) - set(_MODULE_FIELDS))
        if unknown:
            raise TypeError(
                f"{cls.__name__}.for_placement got unknown settings {unknown}; known: {list(_MODULE_FIELDS)}"
            )
        placed = {name: getattr(placement, name) for name in _PLACEMENT_FIELDS}
        modules = cls(module_channels=cls.placement_channels(unet, placement), **placed, **settings)
        return modules.to_unet(unet)


def insert_temporal_modules(
    unet: UNet2DConditionModel,
    placement: MotionPlacement,
    config: TemporalModuleConfig | None = None,
    num_frames_getter: Callable[[], int] | None = None,
) -> TemporalModuleSet:
    """Build temporal modules for ``placement`` and hook them into ``unet`` (:meth:`TemporalModuleSet.build` +
    :meth:`~TemporalModuleSet.attach`).

    Args:
        unet (`UNet2DConditionModel`): The UNet; its batch is ``(b f)`` while the modules are attached.
        placement (`MotionPlacement`): Where the modules go (a preset or explicit LDM indices).
        config (`TemporalModuleConfig`, *optional*): Module hyper-parameters; defaults to AnimateDiff's.
        num_frames_getter (`Callable[[], int]`, *optional*): Frames per sample; else set ``num_frames`` on the result.

    Returns:
        `TemporalModuleSet`: The attached modules.

    Example::

        modules = insert_temporal_modules(unet, MotionPlacement.animatediff(unet))
        with modules.frames(16):
            eps = unet(latents_bf, t, text_bf).sample  # latents_bf: (b*16, 4, h, w)
    """
    return TemporalModuleSet.build(unet, placement, config, num_frames_getter).attach(unet)


# --- checkpoint key maps -------------------------------------------------------------------------------------------

_BLOCK = r"transformer_blocks\.(\d+)\."
_PARAM = r"(weight|bias)"
_SUBKEY_RULES: tuple[tuple[re.Pattern[str], Callable[[re.Match[str]], str]], ...] = (
    # AnimateDiff / LDM layout (under "temporal_transformer.")
    (
        re.compile(rf"^{_BLOCK}attention_blocks\.([01])\.pos_encoder\.pe$"),
        lambda m: f"transformer_blocks.{m[1]}.pos_embed.pe",
    ),
    (
        re.compile(rf"^{_BLOCK}attention_blocks\.([01])\.(to_q|to_k|to_v|to_out\.0)\.{_PARAM}$"),
        lambda m: f"transformer_blocks.{m[1]}.attn{int(m[2]) + 1}.{m[3]}.{m[4]}",
    ),
    (
        re.compile(rf"^{_BLOCK}norms\.([01])\.{_PARAM}$"),
        lambda m: f"transformer_blocks.{m[1]}.norm{int(m[2]) + 1}.{m[3]}",
    ),
    (re.compile(rf"^{_BLOCK}ff_norm\.{_PARAM}$"), lambda m: f"transformer_blocks.{m[1]}.norm3.{m[2]}"),
    (
        re.compile(rf"^{_BLOCK}ff\.(net\.0\.proj|net\.2)\.{_PARAM}$"),
        lambda m: f"transformer_blocks.{m[1]}.ff.{m[2]}.{m[3]}",
    ),
    (re.compile(rf"^(norm|proj_in|proj_out)\.{_PARAM}$"), lambda m: m[0]),
)
_DIFFUSERS_SUBKEY = re.compile(
    rf"^((norm|proj_in|proj_out)\.{_PARAM}|{_BLOCK}(pos_embed\.pe|"
    rf"(norm[123]|attn[12]\.(to_q|to_k|to_v|to_out\.0)|ff\.net\.0\.proj|ff\.net\.2)\.{_PARAM}))$"
)


def _convert_subkey(sub: str) -> str | None:
    """A motion-module parameter name (AnimateDiff ``temporal_transformer.*`` or diffusers style) in our naming."""
    if sub.startswith("temporal_transformer."):
        inner = sub[len("temporal_transformer.") :]
        for pattern, replace in _SUBKEY_RULES:
            match = pattern.match(inner)
            if match:
                return replace(match)
        return None
    return sub if _DIFFUSERS_SUBKEY.match(sub) else None


def _add_converted(
    out: dict[str, torch.Tensor], unmatched: list[str], key: str, target: str | None, value: torch.Tensor
) -> None:
    if target is None:
        unmatched.append(key)
    elif target in out:
        # AnimateDiff stores one (identical, deterministic) position table per attention; we keep one per block.
        if not (target.endswith(".pos_embed.pe") and torch.equal(out[target], value)):
            unmatched.append(key)
    else:
        out[target] = value


_LDM_KEY = re.compile(r"^(input|output)_blocks_motion_module\.(\d+)\.(\d+)\.(.+)$")
_LDM_MIDDLE_KEY = re.compile(r"^middle_block_motion_module\.(\d+)\.(.+)$")


def ldm_motion_module_names(placement: MotionPlacement) -> dict[str, str]:
    """LDM motion-module prefixes -> our module names, for ``placement``.

    LDM lists hold one entry per *placed* block in block order: ``input_blocks_motion_module.{k}.0`` is the k-th placed
    input block (X-Portrait: k=0..7 for blocks 1, 2, 4, 5, 7, 8, 10, 11; DiffPortrait3D: k = block - 1),
    ``output_blocks_motion_module.{k}.{s}`` the s-th module after the k-th placed output block, and
    ``middle_block_motion_module.0`` the middle module.

    Example:
        >>> ldm_motion_module_names(MotionPlacement(input_blocks=(1, 4)))
        {'input_blocks_motion_module.0.0': 'input_blocks_1', 'input_blocks_motion_module.1.0': 'input_blocks_4'}
    """
    names = {f"input_blocks_motion_module.{k}.0": f"input_blocks_{i}" for k, i in enumerate(placement.input_blocks)}
    if placement.middle_block:
        names["middle_block_motion_module.0"] = MIDDLE_NAME
    for k, j in enumerate(placement.output_blocks):
        names[f"output_blocks_motion_module.{k}.0"] = f"output_blocks_{j}"
        if j in placement.output_second_blocks:
            names[f"output_blocks_motion_module.{k}.1"] = f"output_blocks_{j}_1"
    return names


def convert_ldm_motion_state_dict(
    state_dict: Mapping[str, torch.Tensor], placement: MotionPlacement, prefix: str = ""
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Map LDM-layout motion-module weights (spec §7) onto a :class:`TemporalModuleSet`'s state dict.

    Keys ``{prefix}input_blocks_motion_module.{k}.{s}.temporal_transformer.{norm, proj_in, proj_out,
    transformer_blocks.{n}.{attention_blocks.{0,1}, norms.{0,1}, ff, ff_norm}}...`` (and ``output_blocks_...``,
    ``middle_block_motion_module.{s}...``) become ``{module}.{norm, proj_in, proj_out, transformer_blocks.{n}.{attn1,
    attn2, norm1, norm2, norm3, ff, pos_embed}}...`` (diffusers' AnimateDiff naming). Keys outside the motion modules
    (the UNet itself) are ignored.

    Args:
        state_dict (`Mapping[str, torch.Tensor]`): A checkpoint's state dict (possibly the whole LDM model).
        placement (`MotionPlacement`): The placement the checkpoint was trained with (it fixes the index map).
        prefix (`str`, defaults to `""`): Prefix before the motion keys, e.g. ``"model.diffusion_model."``.

    Returns:
        `tuple[dict[str, torch.Tensor], list[str]]`: The converted state dict (load it with ``strict=True``) and the
        motion-module keys that could not be mapped.
    """
    names = ldm_motion_module_names(placement)
    out: dict[str, torch.Tensor] = {}
    unmatched: list[str] = []
    for key, value in state_dict.items():
        if not key.startswith(prefix):
            continue
        rest = key[len(prefix) :]
        match = _LDM_KEY.match(rest)
        middle = _LDM_MIDDLE_KEY.match(rest) if match is None else None
        if match is not None:
            ldm_prefix, sub = f"{match[1]}_blocks_motion_module.{match[2]}.{match[3]}", match[4]
        elif middle is not None:
            ldm_prefix, sub = f"middle_block_motion_module.{middle[1]}", middle[2]
        else:
            continue
        name = names.get(ldm_prefix)
        converted = _convert_subkey(sub)
        target = f"{name}.{converted}" if name is not None and converted is not None else None
        _add_converted(out, unmatched, key, target, value)
    if unmatched:
        logger.warning("%d motion-module keys not matched, e.g. %s", len(unmatched), unmatched[:3])
    return out, unmatched


_ANIMATEDIFF_KEY = re.compile(r"^(down_blocks|up_blocks|mid_block)\.(?:(\d+)\.)?motion_modules\.(\d+)\.(.+)$")


def convert_animatediff_motion_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    unet: UNet2DConditionModel,
    placement: MotionPlacement,
    prefix: str = "",
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Map AnimateDiff / diffusers ``MotionAdapter`` motion-module weights onto a :class:`TemporalModuleSet`.

    Keys ``down_blocks.{b}.motion_modules.{l}.*`` go to the module after down block b's layer l, ``up_blocks.{b}.
    motion_modules.{l}.*`` after up block b's layer l, ``mid_block.motion_modules.0.*`` to the middle module;
    sub-keys may be AnimateDiff's (``temporal_transformer.*``) or diffusers'. Modules the placement lacks are reported.

    Args:
        state_dict (`Mapping[str, torch.Tensor]`): e.g. ``mm_sd_v15_v2.ckpt`` or a ``MotionAdapter`` state dict.
        unet (`UNet2DConditionModel`): The UNet the modules are for (fixes the block -> LDM index map).
        placement (`MotionPlacement`): The placement of the target :class:`TemporalModuleSet`.
        prefix (`str`, defaults to `""`): Prefix before the motion keys.

    Returns:
        `tuple[dict[str, torch.Tensor], list[str]]`: The converted state dict and the unmatched motion-module keys.
    """
    layout = unet_ldm_layout(unet)
    down = {(b.down_or_up_block, b.layer): b.index for b in layout.input_blocks if b.kind == "layer"}
    up = {(b.down_or_up_block, b.layer): b.index for b in layout.output_blocks}
    wanted = set(placement.module_names())
    out: dict[str, torch.Tensor] = {}
    unmatched: list[str] = []
    for key, value in state_dict.items():
        if not key.startswith(prefix):
            continue
        match = _ANIMATEDIFF_KEY.match(key[len(prefix) :])
        if match is None:
            continue
        kind, block, layer, sub = match[1], match[2], int(match[3]), match[4]
        name: str | None = None
        if kind == "mid_block":
            name = MIDDLE_NAME if layer == 0 else None
        elif kind == "down_blocks" and (int(block), layer) in down:
            name = f"input_blocks_{down[int(block), layer]}"
        elif kind == "up_blocks" and (int(block), layer) in up:
            name = f"output_blocks_{up[int(block), layer]}"
        converted = _convert_subkey(sub)
        target = f"{name}.{converted}" if name in wanted and converted is not None else None
        _add_converted(out, unmatched, key, target, value)
    if unmatched:
        logger.warning("%d motion-module keys not matched, e.g. %s", len(unmatched), unmatched[:3])
    return out, unmatched


__all__ = [
    "LdmBlock",
    "MotionPlacement",
    "PlacedTemporalModules",
    "TemporalModuleConfig",
    "TemporalModuleSet",
    "TemporalModules",
    "TemporalTransformer",
    "UNetLdmLayout",
    "convert_animatediff_motion_state_dict",
    "convert_ldm_motion_state_dict",
    "insert_temporal_modules",
    "ldm_motion_module_names",
    "unet_ldm_layout",
]
