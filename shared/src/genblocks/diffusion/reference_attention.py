"""Reference attention ("ReferenceNet" / appearance bank) for diffusers ``UNet2DConditionModel`` (spec genblocks §3).

A *reference* UNet runs on the clean latent of the reference image; every self-attention ``attn1`` of a transformer
block *writes* its input ``norm1(x)``, shape (B, HW, C), into a :class:`ReferenceBank`. The *denoising* UNet then
*reads* the bank in the matching layer: queries come from its own tokens, keys and values from
``concat([x, bank[layer]], tokens)``, so 4096 tokens become 8192 at 64² with one reference. Several references
concatenate along tokens; the bank is repeated over the frames (or views) of a video batch laid out as ``(b f)``. Mode
``"off"`` is plain self-attention, used by the classifier-free-guidance unconditional pass.

This is implemented with diffusers attention processors set on ``attn1`` only (``attn2`` keeps its processor), which
wrap the processor that was there before (normally ``AttnProcessor2_0``) and hand it the concatenated tokens as
``encoder_hidden_states``; the attention math is therefore diffusers' own. Layers pair up by processor name
(``"down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor"``), so write and read UNets must share the
architecture (a trainable copy of the denoising UNet, as in all three papers).

Papers: Animate Anyone (arXiv 2311.17117), MagicAnimate (arXiv 2311.16498); used by X-Portrait (arXiv 2403.15931) and
DiffPortrait3D (arXiv 2312.13016). Upstream: magic-research/magic-animate@4a61106efb87a2acd124a5848602993863d4ca2a
``magicanimate/models/mutual_self_attention.py`` (``ReferenceAttentionControl``: write ``norm_hidden_states``, read
with ``encoder_hidden_states=torch.cat([norm_hidden_states] + bank, dim=1)``, bank repeated ``(b t)`` over frames,
``fusion_blocks in {"midup", "full"}``); bytedance/X-Portrait@e63e565f9f5ddbc5a23f662215d29e6227fb24a0
``model_lib/ControlNet/cldm/cldm.py`` (bank of all 16 SD1.5 transformer blocks, read in execution order).

Typical step::

    bank = ReferenceBank()
    attach_reference_attention(reference_unet, bank, role="write")
    attach_reference_attention(unet, bank, role="read")
    bank.clear()
    reference_unet(ref_latent, t, text)                 # fills the bank
    eps_c = unet(x_t, t, text).sample                   # reads it
    with reference_mode(unet, "off"):
        eps_u = unet(x_t, t, empty_text).sample         # plain UNet
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal, Protocol, cast

import torch
from diffusers.models.attention_processor import Attention, AttentionProcessor
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel

logger = logging.getLogger(__name__)

ReferenceMode = Literal["write", "read", "off"]
FusionBlocks = Literal["full", "midup"]

_MODES = ("write", "read", "off")


class SelfAttentionProcessor(Protocol):
    """What :class:`ReferenceAttnProcessor` needs of the processor it wraps: diffusers' standard call, as in
    ``AttnProcessor2_0.__call__`` (diffusers' ``AttentionProcessor`` alias also lists processors with other signatures).
    """

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
    ) -> torch.Tensor: ...


_FUSION_PREFIXES: dict[str, tuple[str, ...]] = {
    "full": ("down_blocks.", "mid_block.", "up_blocks."),
    "midup": ("mid_block.", "up_blocks."),
}


class ReferenceBank:
    """Per-layer store of reference ``attn1`` inputs, filled by a reference UNet and read by a denoising UNet.

    Entries are kept per layer name in execution order. A layer may be written several times (one reference UNet call
    per reference image); the writes concatenate along tokens when read. Clear the bank once per denoising step.
    A classifier-free-guidance batch ``[uncond; cond]`` in which both halves should read needs a reference batch
    doubled the same way; a pass that must not read (X-Portrait, DiffPortrait3D) runs separately under
    ``reference_mode(unet, "off")``.

    Args:
        num_references (`int`, defaults to 1):
            How many reference images one write carries: a reference batch of ``B * num_references`` samples laid out
            ``(b r)`` is stored as (B, num_references * HW, C).
        num_frames (`int`, *optional*):
            Frames (or views) per bank sample in the reading batch, which is laid out ``(b f)``. ``None`` infers it as
            ``read_batch // bank_batch``.

    Example:
        >>> bank = ReferenceBank(num_references=2)
        >>> bank.write("layer", torch.zeros(4, 16, 8))  # B = 2 samples x 2 references
        >>> tuple(bank["layer"].shape)
        (2, 32, 8)
    """

    def __init__(self, num_references: int = 1, num_frames: int | None = None) -> None:
        if num_references < 1:
            raise ValueError(f"num_references must be >= 1, got {num_references}.")
        if num_frames is not None and num_frames < 1:
            raise ValueError(f"num_frames must be >= 1 or None, got {num_frames}.")
        self.num_references = num_references
        self.num_frames = num_frames
        self._entries: dict[str, list[torch.Tensor]] = {}

    def write(self, name: str, hidden_states: torch.Tensor) -> None:
        """Append one write for layer ``name``.

        Args:
            name (`str`): The layer (processor) name.
            hidden_states (`torch.Tensor` of shape `(B * num_references, HW, C)`): The ``attn1`` input ``norm1(x)``.
                It is stored as is (not detached), so a trainable reference UNet receives gradients.
        """
        if hidden_states.ndim != 3:
            raise ValueError(
                f"hidden_states for layer {name!r} must be (batch, tokens, channels), "
                f"got {tuple(hidden_states.shape)}."
            )
        n, tokens, channels = hidden_states.shape
        if n % self.num_references:
            raise ValueError(
                f"reference batch for layer {name!r} must be a multiple of "
                f"num_references={self.num_references}, got {n}."
            )
        stored = hidden_states.reshape(n // self.num_references, self.num_references * tokens, channels)
        previous = self._entries.get(name)
        if previous and (previous[0].shape[0], previous[0].shape[2]) != (stored.shape[0], channels):
            raise ValueError(
                f"write for layer {name!r} has batch/channels {(stored.shape[0], channels)}, earlier writes "
                f"{(previous[0].shape[0], previous[0].shape[2])}."
            )
        self._entries.setdefault(name, []).append(stored)

    def __getitem__(self, key: str | int) -> torch.Tensor:
        """The bank entry of a layer (by name, or by index in execution order): (B, n_ref * HW, C)."""
        name = self.layer_names[key] if isinstance(key, int) else key
        if name not in self._entries:
            raise KeyError(f"no reference written for layer {name!r}; written layers: {self.layer_names}.")
        writes = self._entries[name]
        return writes[0] if len(writes) == 1 else torch.cat(writes, dim=1)

    def read(self, name: str, batch_size: int) -> torch.Tensor:
        """The entry of layer ``name`` repeated over frames for a reading batch of ``batch_size`` samples.

        Args:
            name (`str`): The layer (processor) name.
            batch_size (`int`): The reading batch, ``bank_batch * num_frames`` laid out ``(b f)``.

        Returns:
            `torch.Tensor` of shape `(batch_size, n_ref * HW, C)`.
        """
        entry = self[name]
        bank_batch = entry.shape[0]
        frames = self.num_frames if self.num_frames is not None else batch_size // max(bank_batch, 1)
        if bank_batch * frames != batch_size:
            raise ValueError(
                f"reading batch {batch_size} for layer {name!r} is not bank batch {bank_batch} x num_frames "
                f"{self.num_frames if self.num_frames is not None else 'inferred'}; lay the batch out as (b f)."
            )
        return entry if frames == 1 else entry.repeat_interleave(frames, dim=0)

    @property
    def layer_names(self) -> list[str]:
        """Written layer names, in the order they were first written (execution order)."""
        return list(self._entries)

    def is_empty(self) -> bool:
        """Whether nothing has been written since the last :meth:`clear`."""
        return not self._entries

    def clear(self) -> None:
        """Drop every entry (call once per denoising step, before the reference UNet runs)."""
        self._entries.clear()

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"ReferenceBank(layers={len(self)}, num_references={self.num_references}, num_frames={self.num_frames})"


class ReferenceAttnProcessor:
    """Attention processor for one ``attn1``: writes to, reads from, or ignores a :class:`ReferenceBank`.

    It wraps ``base`` (the layer's previous processor, e.g. ``AttnProcessor2_0``) and only changes what ``base`` gets
    as keys and values, so projection, heads, scaling and output projection stay diffusers' own.

    Args:
        bank (`ReferenceBank`): The shared bank.
        name (`str`): The layer's processor name, the bank key; equal in the write and the read UNet.
        mode (`str`): ``"write"``, ``"read"`` or ``"off"``.
        base (`SelfAttentionProcessor`): The processor doing the attention (e.g. ``AttnProcessor2_0``).
    """

    def __init__(self, bank: ReferenceBank, name: str, mode: ReferenceMode, base: SelfAttentionProcessor) -> None:
        _check_mode(mode)
        self.bank = bank
        self.name = name
        self.mode: ReferenceMode = mode
        self.base = base

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Self-attention of ``hidden_states`` (B, HW, C), with the bank appended to keys and values in ``"read"``."""
        if encoder_hidden_states is not None:
            raise ValueError(f"reference attention on {self.name!r} expects self-attention (attn1), got a context.")
        if self.mode == "write":
            self.bank.write(self.name, hidden_states)
        elif self.mode == "read" and not self.bank.is_empty():
            if attention_mask is not None:
                raise ValueError(f"reference read on {self.name!r} does not support an attention_mask.")
            reference = self.bank.read(self.name, hidden_states.shape[0]).to(hidden_states.dtype)
            context = torch.cat([hidden_states, reference], dim=1)
            return self.base(attn, hidden_states, encoder_hidden_states=context, temb=temb)
        return self.base(attn, hidden_states, encoder_hidden_states=None, attention_mask=attention_mask, temb=temb)

    def __repr__(self) -> str:
        return f"ReferenceAttnProcessor(name={self.name!r}, mode={self.mode!r}, base={type(self.base).__name__})"


def _check_mode(mode: str) -> None:
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}.")


def reference_layer_names(unet: UNet2DConditionModel, fusion_blocks: FusionBlocks = "full") -> list[str]:
    """Processor names of the transformer-block self-attentions that take part, in execution order.

    SD1.5 gives 16 names with ``"full"`` (6 down, 1 mid, 9 up) and 10 with ``"midup"``.

    Args:
        unet (`UNet2DConditionModel`): The UNet.
        fusion_blocks (`str`, defaults to `"full"`): ``"full"`` (down, mid, up) or ``"midup"`` (MagicAnimate).
    """
    if fusion_blocks not in _FUSION_PREFIXES:
        raise ValueError(f"fusion_blocks must be one of {tuple(_FUSION_PREFIXES)}, got {fusion_blocks!r}.")
    prefixes = _FUSION_PREFIXES[fusion_blocks]
    names = [n for n in unet.attn_processors if n.endswith(".attn1.processor") and ".transformer_blocks." in n]
    # diffusers registers mid_block after up_blocks; execution order is down -> mid -> up.
    return [name for prefix in prefixes for name in names if name.startswith(prefix)]


def attach_reference_attention(
    unet: UNet2DConditionModel,
    bank: ReferenceBank,
    role: Literal["write", "read"],
    fusion_blocks: FusionBlocks = "full",
) -> list[str]:
    """Set :class:`ReferenceAttnProcessor` on the chosen ``attn1`` layers of ``unet``; every other processor is kept.

    Args:
        unet (`UNet2DConditionModel`): The reference UNet (``role="write"``) or the denoising UNet (``role="read"``).
        bank (`ReferenceBank`): The bank both UNets share.
        role (`str`): Initial mode, ``"write"`` or ``"read"``; switch with :func:`reference_mode`.
        fusion_blocks (`str`, defaults to `"full"`): Which blocks take part; use the same value on both UNets.

    Returns:
        `list[str]`: The attached layer names, in execution order.
    """
    if role not in ("write", "read"):
        raise ValueError(f"role must be 'write' or 'read', got {role!r}.")
    names = reference_layer_names(unet, fusion_blocks)
    if not names:
        raise ValueError("unet has no transformer-block self-attention (attn1) to attach reference attention to.")
    processors = _processors(unet)
    for name in names:
        current = processors[name]
        # The attn1 processors of a UNet2DConditionModel take diffusers' standard call (SelfAttentionProcessor).
        base = current.base if isinstance(current, ReferenceAttnProcessor) else cast(SelfAttentionProcessor, current)
        processors[name] = ReferenceAttnProcessor(bank, name, role, base)
    _set_processors(unet, processors)
    logger.debug("reference attention (%s) on %d layers", role, len(names))
    return names


def attach_reference_pair(
    reference_unet: UNet2DConditionModel,
    unet: UNet2DConditionModel,
    bank: ReferenceBank,
    fusion_blocks: FusionBlocks = "full",
) -> list[str]:
    """Attach ``bank`` to a reference UNet (writes) and a denoising UNet (reads), checking they pair up layer by layer
    (reference-only appearance control: X-Portrait, DiffPortrait3D).

    Args:
        reference_unet (`UNet2DConditionModel`): The appearance UNet (``role="write"``); a separate copy of ``unet``.
        unet (`UNet2DConditionModel`): The denoising UNet (``role="read"``).
        bank (`ReferenceBank`): The bank both share.
        fusion_blocks (`str`, defaults to `"full"`): Which blocks take part.

    Returns:
        `list[str]`: The attached layer names (the same on both UNets), in execution order.
    """
    if reference_unet is unet:
        raise ValueError("reference_unet must be a separate UNet (a copy of unet), not unet itself")
    write_layers = attach_reference_attention(reference_unet, bank, "write", fusion_blocks)
    read_layers = attach_reference_attention(unet, bank, "read", fusion_blocks)
    if write_layers != read_layers:
        raise ValueError(
            "reference_unet and unet must have the same transformer blocks; got "
            f"{len(write_layers)} vs {len(read_layers)} self-attention layers"
        )
    return read_layers


def write_reference_bank(
    reference_unet: UNet2DConditionModel,
    bank: ReferenceBank,
    reference_latents: torch.Tensor,
    timestep: torch.Tensor | int,
    encoder_hidden_states: torch.Tensor,
) -> None:
    """Clear ``bank`` and fill it from ``reference_unet`` run on the clean reference latents at ``timestep``.

    Args:
        reference_unet (`UNet2DConditionModel`): The writing UNet (see :func:`attach_reference_pair`).
        bank (`ReferenceBank`): The bank it writes.
        reference_latents (`torch.Tensor` of shape `(B, 4, h, w)`): Scaled VAE latents of the references (not
            noised).
        timestep (`torch.Tensor` or `int`): The current timestep (scalar or (B,)).
        encoder_hidden_states (`torch.Tensor` of shape `(B, T, D)`): Text context of the references.
    """
    if reference_latents.ndim != 4:
        raise ValueError(f"reference_latents must be (B, C, h, w), got {tuple(reference_latents.shape)}")
    bank.clear()
    set_reference_mode(reference_unet, "write")
    reference_unet(reference_latents, timestep, encoder_hidden_states=encoder_hidden_states)


def detach_reference_attention(unet: UNet2DConditionModel) -> None:
    """Restore the processors that :func:`attach_reference_attention` wrapped."""
    processors = {
        name: proc.base if isinstance(proc, ReferenceAttnProcessor) else proc
        for name, proc in _processors(unet).items()
    }
    _set_processors(unet, processors)


def _processors(unet: UNet2DConditionModel) -> dict[str, object]:
    """``unet.attn_processors`` as plain objects: ours are not members of diffusers' ``AttentionProcessor`` alias."""
    return dict(unet.attn_processors)


def _set_processors(unet: UNet2DConditionModel, processors: dict[str, object]) -> None:
    # diffusers accepts any processor object (custom processors are documented); its AttentionProcessor alias lists
    # only diffusers' own classes, so the annotation is narrower than the behaviour.
    unet.set_attn_processor(cast("dict[str, AttentionProcessor]", processors))


def _reference_processors(unet: UNet2DConditionModel) -> list[ReferenceAttnProcessor]:
    found = [p for p in _processors(unet).values() if isinstance(p, ReferenceAttnProcessor)]
    if not found:
        raise ValueError("unet has no reference attention attached; call attach_reference_attention first.")
    return found


def set_reference_mode(unet: UNet2DConditionModel, mode: ReferenceMode) -> None:
    """Switch every reference processor of ``unet`` to ``mode`` (``"write"``, ``"read"`` or ``"off"``)."""
    _check_mode(mode)
    for processor in _reference_processors(unet):
        processor.mode = mode


@contextmanager
def reference_mode(unet: UNet2DConditionModel, mode: ReferenceMode) -> Iterator[UNet2DConditionModel]:
    """Temporarily switch ``unet``'s reference processors to ``mode``; the previous modes come back on exit.

    Example::

        with reference_mode(unet, "off"):
            eps_uncond = unet(x_t, t, empty_text).sample
    """
    _check_mode(mode)
    processors = _reference_processors(unet)
    previous = [p.mode for p in processors]
    for processor in processors:
        processor.mode = mode
    try:
        yield unet
    finally:
        for processor, old in zip(processors, previous, strict=True):
            processor.mode = old


__all__ = [
    "FusionBlocks",
    "ReferenceAttnProcessor",
    "ReferenceBank",
    "ReferenceMode",
    "attach_reference_attention",
    "attach_reference_pair",
    "detach_reference_attention",
    "reference_layer_names",
    "reference_mode",
    "set_reference_mode",
    "write_reference_bank",
]
