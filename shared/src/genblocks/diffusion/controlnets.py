"""Several ControlNets whose residuals add up, each with its own conditioning scale (spec genblocks §3 "controlnet").

ControlNet (arXiv 2302.05543): each net returns one residual per UNet skip connection (12 for SD1.5) and one for the mid
block; several nets are summed before entering the UNet (X-Portrait: motion + local patch ControlNets; humananim: pose
with motion-blur channels). diffusers' ``MultiControlNetModel`` (``models/controlnets/multicontrolnet.py``) already does
the sum; `ControlNetStack` subclasses it (so diffusers' ControlNet pipelines accept it) and adds what it lacks: names,
stored per-net scales, a switch that disables all nets (the bare-UNet unconditional pass of "controlnet_important" CFG),
skipping nets whose scale is 0, ``from_unet`` for several nets with any conditioning channel count, and input
validation with errors that name the net.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from diffusers.models.controlnets.controlnet import ControlNetModel
from diffusers.models.controlnets.multicontrolnet import MultiControlNetModel
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel

__all__ = ["ControlNetResiduals", "ControlNetStack"]

_STACK_FILE = "controlnet_stack.json"


class ControlNetResiduals(NamedTuple):
    """Summed ControlNet residuals, ready for ``UNet2DConditionModel.forward``; both `None` when no net ran.

    Attributes:
        down_block_res_samples (`tuple[torch.Tensor, ...]` or `None`): one (B, C_i, H_i, W_i) residual per UNet skip
            connection (12 for SD1.5).
        mid_block_res_sample (`torch.Tensor` or `None`): (B, C_mid, H_mid, W_mid).
    """

    down_block_res_samples: tuple[torch.Tensor, ...] | None
    mid_block_res_sample: torch.Tensor | None

    def unet_kwargs(self) -> dict[str, Any]:
        """``{"down_block_additional_residuals": ..., "mid_block_additional_residual": ...}`` for ``unet(...)``."""
        return {
            "down_block_additional_residuals": self.down_block_res_samples,
            "mid_block_additional_residual": self.mid_block_res_sample,
        }


class ControlNetStack(MultiControlNetModel):
    """Named ControlNets whose scaled residuals are summed.

    Args:
        controlnets (`Sequence[ControlNetModel]`): the nets, built for the same UNet.
        names (`Sequence[str]`, *optional*): one unique name per net (defaults to ``controlnet_0``, ...). Conditions
            and scales may be given by name.
        scales (`Sequence[float]`, *optional*): default conditioning scale per net (defaults to 1.0 each).

    Attributes:
        enabled (`bool`): when `False`, `forward` runs no net and returns `ControlNetResiduals(None, None)`, so the UNet
            runs bare. See `disabled`.
    """

    def __init__(
        self,
        controlnets: Sequence[ControlNetModel],
        names: Sequence[str] | None = None,
        scales: Sequence[float] | None = None,
    ) -> None:
        if len(controlnets) == 0:
            raise ValueError("controlnets must hold at least one ControlNetModel")
        for i, net in enumerate(controlnets):
            if not isinstance(net, ControlNetModel):
                raise ValueError(f"controlnets[{i}] must be a diffusers ControlNetModel, got {type(net).__name__}")
        super().__init__(list(controlnets))
        names = list(names) if names is not None else [f"controlnet_{i}" for i in range(len(controlnets))]
        if len(names) != len(controlnets) or len(set(names)) != len(names):
            raise ValueError(f"names must be {len(controlnets)} unique strings (one per net), got {names}")
        scales = [1.0] * len(controlnets) if scales is None else [float(s) for s in scales]
        if len(scales) != len(controlnets):
            raise ValueError(f"scales must hold one float per net ({len(controlnets)}), got {scales}")
        self.names: tuple[str, ...] = tuple(names)
        self.scales: dict[str, float] = dict(zip(self.names, scales, strict=True))
        self.enabled: bool = True

    @classmethod
    def from_unet(
        cls,
        unet: UNet2DConditionModel,
        names: Sequence[str],
        conditioning_channels: int | Sequence[int] = 3,
        conditioning_embedding_out_channels: tuple[int, ...] = (16, 32, 96, 256),
        scales: Sequence[float] | None = None,
        load_weights_from_unet: bool = True,
    ) -> ControlNetStack:
        """One ``ControlNetModel.from_unet`` per name (encoder copied from ``unet``, zero-initialised outputs).

        Args:
            unet (`UNet2DConditionModel`): the UNet whose encoder the nets copy.
            names (`Sequence[str]`): one name per net.
            conditioning_channels (`int` or `Sequence[int]`, defaults to 3): hint channels, shared or per net (e.g.
                6 for humananim's pose + hand-blur hint).
            conditioning_embedding_out_channels (`tuple[int, ...]`, defaults to `(16, 32, 96, 256)`): hint encoder
                widths; `len - 1` stride-2 convolutions, so hints are ``2**(len - 1)`` times the latent size (SD1.5:
                512 px for 64 latents).
            scales (`Sequence[float]`, *optional*): default scale per net.
            load_weights_from_unet (`bool`, defaults to `True`): copy the UNet encoder weights.
        """
        names = list(names)
        channels = (
            [conditioning_channels] * len(names)
            if isinstance(conditioning_channels, int)
            else list(conditioning_channels)
        )
        if len(channels) != len(names):
            raise ValueError(f"conditioning_channels must be an int or one int per name ({names}), got {channels}")
        nets = [
            ControlNetModel.from_unet(
                unet,
                conditioning_embedding_out_channels=conditioning_embedding_out_channels,
                load_weights_from_unet=load_weights_from_unet,
                conditioning_channels=c,
            )
            for c in channels
        ]
        return cls(nets, names=names, scales=scales)

    def __getitem__(self, name: str) -> ControlNetModel:
        """The net called ``name``."""
        if name not in self.names:
            raise KeyError(f"no ControlNet named {name!r}; names are {list(self.names)}")
        return self._net(self.names.index(name))

    def _net(self, index: int) -> ControlNetModel:
        """Net ``index`` (``self.nets`` is an ``nn.ModuleList``, typed as holding plain modules)."""
        net = self.nets[index]
        if not isinstance(net, ControlNetModel):
            raise TypeError(f"nets[{index}] must be a ControlNetModel, got {type(net).__name__}")
        return net

    @contextlib.contextmanager
    def disabled(self) -> Iterator[ControlNetStack]:
        """Context in which `forward` runs no net (restores the previous `enabled` state on exit)."""
        previous = self.enabled
        self.enabled = False
        try:
            yield self
        finally:
            self.enabled = previous

    def hint_size_factor(self, index: int) -> int:
        """How many times larger than the latent the hint of net ``index`` must be (``2**(len(out_channels) - 1)``)."""
        return 2 ** (len(self._net(index).config["conditioning_embedding_out_channels"]) - 1)

    def _ordered(self, values: Sequence[Any] | Mapping[str, Any], what: str) -> list[Any]:
        if isinstance(values, Mapping):
            if set(values) != set(self.names):
                raise ValueError(f"{what} must have one entry per net name {list(self.names)}, got {list(values)}")
            return [values[name] for name in self.names]
        values = list(values)
        if len(values) != len(self.names):
            raise ValueError(f"{what} must hold one entry per net ({list(self.names)}), got {len(values)} entries")
        return values

    def _check_condition(self, index: int, sample: torch.Tensor, image: torch.Tensor) -> None:
        name, config = self.names[index], self._net(index).config
        if sample.ndim != 4 or sample.shape[1] != config["in_channels"]:
            raise ValueError(
                f"sample must be (B, {config['in_channels']}, h, w) for ControlNet {name!r}, got {tuple(sample.shape)}"
            )
        factor = self.hint_size_factor(index)
        b, _, h, w = sample.shape
        expected = (b, config["conditioning_channels"], h * factor, w * factor)
        if image.ndim != 4 or tuple(image.shape) != expected:
            raise ValueError(
                f"controlnet_cond for ControlNet {name!r} must be (B, conditioning_channels, {factor}h, {factor}w) = "
                f"{expected} for sample {tuple(sample.shape)}, got {tuple(image.shape)}"
            )

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor,
        controlnet_cond: Sequence[torch.Tensor] | Mapping[str, torch.Tensor],
        conditioning_scale: Sequence[float] | Mapping[str, float] | None = None,
        class_labels: torch.Tensor | None = None,
        timestep_cond: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        added_cond_kwargs: dict[str, torch.Tensor] | None = None,
        cross_attention_kwargs: dict[str, Any] | None = None,
        guess_mode: bool = False,
        return_dict: bool = True,
    ) -> ControlNetResiduals:
        """Run every enabled net with a non-zero scale and sum its scaled residuals.

        The argument order matches ``MultiControlNetModel.forward``, so diffusers' ControlNet pipelines can call it.

        Args:
            sample (`torch.Tensor`): noisy latents (B, C, h, w).
            timestep (`torch.Tensor`, `float` or `int`): diffusion timestep(s).
            encoder_hidden_states (`torch.Tensor`): text context (B, T, D).
            controlnet_cond (`Sequence[torch.Tensor]` or `Mapping[str, torch.Tensor]`): one hint per net, in net order
                or by name, each (B, conditioning_channels, h * 2**(n-1), w * 2**(n-1)).
            conditioning_scale (`Sequence[float]` or `Mapping[str, float]`, *optional*): per-net scales for this call;
                defaults to the stored `scales`. Nets with scale 0 are skipped (their residuals would be zero).
            class_labels, timestep_cond, attention_mask, added_cond_kwargs, cross_attention_kwargs, guess_mode:
                passed to every ``ControlNetModel.forward`` (SDXL nets need ``added_cond_kwargs``).
            return_dict (`bool`): ignored, kept for signature compatibility; a `ControlNetResiduals` (a tuple) is
                always returned.

        Returns:
            `ControlNetResiduals`: sum_i s_i * residuals_i, or (None, None) when disabled or every scale is 0.
        """
        if not self.enabled:
            return ControlNetResiduals(None, None)
        images = self._ordered(controlnet_cond, "controlnet_cond")
        scales = self._ordered(conditioning_scale if conditioning_scale is not None else self.scales, "scales")
        active = [i for i, scale in enumerate(scales) if float(scale) != 0.0]
        for index in active:
            self._check_condition(index, sample, images[index])
        down: list[torch.Tensor] | None = None
        mid: torch.Tensor | None = None
        first_name = ""
        for index in active:
            net, image, scale = self.nets[index], images[index], scales[index]
            down_i, mid_i = net(
                sample=sample,
                timestep=timestep,
                encoder_hidden_states=encoder_hidden_states,
                controlnet_cond=image,
                conditioning_scale=float(scale),
                class_labels=class_labels,
                timestep_cond=timestep_cond,
                attention_mask=attention_mask,
                added_cond_kwargs=added_cond_kwargs,
                cross_attention_kwargs=cross_attention_kwargs,
                guess_mode=guess_mode,
                return_dict=False,
            )
            if down is None or mid is None:
                down, mid, first_name = list(down_i), mid_i, self.names[index]
                continue
            shapes, shapes_i = [tuple(d.shape) for d in down], [tuple(d.shape) for d in down_i]
            if shapes != shapes_i or mid.shape != mid_i.shape:
                raise ValueError(
                    f"ControlNet {self.names[index]!r} gives residuals {shapes_i} + mid {tuple(mid_i.shape)}, which "
                    f"cannot be summed with {first_name!r}'s {shapes} + mid {tuple(mid.shape)}; build all nets from "
                    "the same UNet"
                )
            down = [d + d_i for d, d_i in zip(down, down_i, strict=True)]
            mid = mid + mid_i
        if down is None:
            return ControlNetResiduals(None, None)
        return ControlNetResiduals(tuple(down), mid)

    # The stack saves only the options it forwards to each net, unlike ModelMixin's (sharding, hub, save_function).
    def save_pretrained(  # type: ignore[override]
        self,
        save_directory: str | os.PathLike,
        is_main_process: bool = True,
        safe_serialization: bool = True,
        variant: str | None = None,
    ) -> None:
        """Save every net to ``save_directory/<name>`` (diffusers folders) plus names and scales in a JSON file."""
        directory = Path(save_directory)
        for index, name in enumerate(self.names):
            self._net(index).save_pretrained(
                directory / name,
                is_main_process=is_main_process,
                safe_serialization=safe_serialization,
                variant=variant,
            )
        if is_main_process:
            stack = {"names": list(self.names), "scales": [self.scales[n] for n in self.names]}
            (directory / _STACK_FILE).write_text(json.dumps(stack, indent=2))

    @classmethod
    def from_pretrained(  # type: ignore[override]  # a stack folder is required (no None); only torch_dtype applies
        cls, pretrained_model_path: str | os.PathLike, torch_dtype: torch.dtype | None = None
    ) -> ControlNetStack:
        """Load a stack written by `save_pretrained`."""
        directory = Path(pretrained_model_path)
        stack_file = directory / _STACK_FILE
        if not stack_file.is_file():
            raise ValueError(f"pretrained_model_path {directory} has no {_STACK_FILE}; save it with save_pretrained")
        stack = json.loads(stack_file.read_text())
        nets = [ControlNetModel.from_pretrained(directory / name, torch_dtype=torch_dtype) for name in stack["names"]]
        return cls(nets, names=stack["names"], scales=stack["scales"])
