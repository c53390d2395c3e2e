"""AgileGAN3D's own pieces (arXiv 2303.14297; no official code exists, spec agilegan3d §2): building the networks
from the config, which layers train, the 2-D style prior that stylises renders, and the losses of guided transfer
(paired guidance) and of the inversion encoder (multi-view consistency).

The networks themselves are genblocks': EG3D's :class:`~genblocks.gan.TriPlaneGenerator` (G3D / G3s),
:class:`~genblocks.gan.DualDiscriminator`, StyleGAN2 (G2s, rosinality layout) and pSp's
:class:`~genblocks.gan.GradualStyleEncoder` (E2 and the 3-D encoder E).
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from agilegan3d.augment import resize_like
from agilegan3d.config import EncoderConfig, G3DConfig, PriorConfig
from genblocks.errors import InputError
from genblocks.gan import (
    DualDiscriminator,
    GradualStyleEncoder,
    StyleGAN2Discriminator,
    StyleGAN2Generator,
    TriPlaneGenerator,
    load_eg3d,
    load_psp_encoder,
    load_rosinality_generator,
    read_rosinality_checkpoint,
)

__all__ = [
    "PerceptualDistance",
    "StylePrior",
    "build_encoder",
    "build_g3d",
    "build_g3d_discriminator",
    "build_prior_discriminator",
    "build_prior_encoder",
    "build_prior_generator",
    "encode",
    "load_torchscript",
    "multiview_consistency_loss",
    "paired_guidance_loss",
    "prior_frozen_prefixes",
    "set_trainable",
    "toon_filter",
]

logger = logging.getLogger(__name__)


class PerceptualDistance(Protocol):
    """A perceptual distance: ``d(x (N, 3, H, W), y (N, 3, H, W)) -> (N,)`` for images in [-1, 1] (e.g. LPIPS)."""

    def __call__(self, x: Tensor, y: Tensor) -> Tensor: ...


def load_torchscript(path: str | os.PathLike | None, what: str) -> nn.Module | None:
    """A TorchScript network (``torch.jit.save``) for a pluggable loss: LPIPS, ArcFace; ``None`` for no path.

    Raises:
        InputError: The file is missing or not TorchScript.
    """
    if path is None:
        return None
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} {path}: file not found (expected a TorchScript file from torch.jit.save)")
    try:
        network = torch.jit.load(str(path), map_location="cpu")
    except RuntimeError as error:
        raise InputError(f"{what} {path}: not a TorchScript file ({str(error).splitlines()[0]})") from None
    for parameter in network.parameters():
        parameter.requires_grad_(False)
    return cast(nn.Module, network.eval())


# ---------------------------------------------------------------------------------------------------------------------
# Building the networks
# ---------------------------------------------------------------------------------------------------------------------


def build_g3d(config: G3DConfig, weights: str | os.PathLike | None = None) -> TriPlaneGenerator:
    """The pretrained 3-D generator G3D: EG3D built from ``config``, with ``weights`` (default ``config.weights``:
    an official ``network-snapshot.pkl``, read by genblocks' restricted unpickler, or a state dict) or seeded random.

    Raises:
        InputError: Weights that are missing or do not fit the architecture (a strict key report).
    """
    torch.manual_seed(config.seed)
    generator = TriPlaneGenerator(**config.generator_kwargs())
    weights = weights if weights is not None else config.weights
    if weights is not None:
        load_eg3d(weights, generator)
    return generator.eval()


def build_g3d_discriminator(config: G3DConfig, seed: int = 0) -> DualDiscriminator:
    """EG3D's camera-conditioned dual discriminator at G3D's resolution, channels as the generator's."""
    torch.manual_seed(seed)
    return DualDiscriminator(config.img_resolution, channel_base=config.channel_base, channel_max=config.channel_max)


def build_prior_generator(config: PriorConfig, seed: int = 0) -> StyleGAN2Generator:
    """The 2-D StyleGAN2 that becomes G2s: ``config.generator`` (rosinality ``g_ema``) or seeded random.

    Raises:
        InputError: A checkpoint that does not fit (any missing, unexpected or mismatched key).
    """
    torch.manual_seed(seed)
    generator = StyleGAN2Generator(
        config.z_dim,
        0,
        config.w_dim,
        config.resolution,
        mapping_layers=config.mapping_layers,
        channel_base=config.channel_base,
        channel_max=config.channel_max,
    )
    if config.generator is not None:
        checkpoint = read_rosinality_checkpoint(config.generator)
        report = load_rosinality_generator(generator, checkpoint["g_ema"], checkpoint.get("latent_avg"))
        problems = report.missing_keys + report.unexpected_keys + report.mismatched_keys
        if problems:
            raise InputError(
                f"prior.generator {config.generator}: {len(problems)} keys do not fit, e.g. {problems[:3]}"
            )
    return generator.eval()


def build_prior_discriminator(config: PriorConfig, seed: int = 1) -> StyleGAN2Discriminator:
    """A StyleGAN2 discriminator for the prior's few-shot fine-tuning (random: the FFHQ D is rarely published)."""
    torch.manual_seed(seed)
    return StyleGAN2Discriminator(config.resolution, channel_base=config.channel_base, channel_max=config.channel_max)


def build_prior_encoder(config: PriorConfig, num_ws: int, seed: int = 2) -> GradualStyleEncoder:
    """E2, the pSp encoder of a real face into the 2-D StyleGAN2's W+: ``config.encoder`` or seeded random."""
    torch.manual_seed(seed)
    encoder = GradualStyleEncoder(
        n_styles=num_ws,
        units=config.encoder_units,
        channels=config.encoder_channels,
        style_dim=config.w_dim,
        input_size=config.encoder_input_size,
        se_reduction=min(16, config.encoder_channels[0] // 2),
    )
    if config.encoder is not None:
        load_psp_encoder(encoder, config.encoder, strict=True)
    return encoder.eval()


def build_encoder(config: EncoderConfig, generator: TriPlaneGenerator, seed: int = 3) -> GradualStyleEncoder:
    """The 3-D inversion encoder E into G3D's W+: ``n_styles`` (default the generator's ``num_ws``) x ``w_dim``.

    Its ``latent_avg`` starts at G3D's frontal ``w_avg`` (pSp's ``start_from_latent_avg``).
    """
    n_styles = config.n_styles if config.n_styles is not None else generator.num_ws
    if n_styles != generator.num_ws:
        raise InputError(f"encoder.n_styles={n_styles}: the generator takes {generator.num_ws} ws")
    torch.manual_seed(seed)
    encoder = GradualStyleEncoder(
        n_styles=n_styles,
        units=config.units,
        channels=config.channels,
        style_dim=generator.w_dim,
        input_size=config.input_size,
        se_reduction=config.se_reduction,
        coarse_index=min(3, n_styles),
        middle_index=min(7, n_styles),
    )
    with torch.no_grad():
        encoder.latent_avg.copy_(generator.backbone.mapping.w_avg.expand(n_styles, -1))
    return encoder


def encode(encoder: GradualStyleEncoder, images: Tensor) -> Tensor:
    """W+ codes (N, n_styles, w_dim) of images (N, 3, H, W) in [-1, 1], resized to the encoder's input side."""
    return cast(Tensor, encoder(resize_like(images, encoder.input_size)))


# ---------------------------------------------------------------------------------------------------------------------
# Which layers train
# ---------------------------------------------------------------------------------------------------------------------


def set_trainable(module: nn.Module, prefixes: Sequence[str]) -> list[str]:
    """Let exactly the parameters whose names start with one of ``prefixes`` train; freeze the rest.

    Returns:
        The names of the trainable parameters.

    Raises:
        InputError: A prefix that matches no parameter (a typo would silently freeze everything).
    """
    names = [name for name, _ in module.named_parameters()]
    unused = [p for p in prefixes if not any(name.startswith(p) for name in names)]
    if unused:
        raise InputError(f"train_layers: {unused} match no parameter (e.g. {names[:3]})")
    trainable = []
    for name, parameter in module.named_parameters():
        keep = any(name.startswith(p) for p in prefixes)
        parameter.requires_grad_(keep)
        if keep:
            trainable.append(name)
    return trainable


def prior_frozen_prefixes(config: PriorConfig) -> list[str]:
    """Parameter-name prefixes of the StyleGAN2 that the few-shot recipe freezes: the mapping (``freeze_mapping``)
    and the synthesis blocks at ``freeze_layers`` resolutions (spec §3: mapping and 4²–16²)."""
    prefixes = ["mapping."] if config.freeze_mapping else []
    return prefixes + [f"synthesis.b{resolution}." for resolution in config.freeze_layers]


# ---------------------------------------------------------------------------------------------------------------------
# The 2-D style prior
# ---------------------------------------------------------------------------------------------------------------------


def toon_filter(images: Tensor, levels: int = 4, edges: float = 1.0) -> Tensor:
    """A fixed cartoon look: smoothed colours quantised to ``levels`` per channel, dark Sobel edges.

    Args:
        images: (N, 3, H, W) in [-1, 1].
        levels: Colour levels per channel.
        edges: Edge darkening (0: none).

    Returns:
        (N, 3, H, W) in [-1, 1].
    """
    x = (images.clamp(-1, 1) + 1) / 2
    smooth = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    quantised = torch.round(smooth * (levels - 1)) / (levels - 1)
    gray = x.mean(dim=1, keepdim=True)
    kernel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=x.dtype, device=x.device)
    padded = F.pad(gray, (1, 1, 1, 1), mode="replicate")
    gx = F.conv2d(padded, kernel.view(1, 1, 3, 3))
    gy = F.conv2d(padded, kernel.t().reshape(1, 1, 3, 3))
    edge = (gx.square() + gy.square()).sqrt().clamp(0, 1)
    return (quantised * (1 - edges * edge)).clamp(0, 1) * 2 - 1


class StylePrior(nn.Module):
    """The 2-D stylisation of stage B: a real face (a G3D render) -> its stylised counterpart x_sty.

    ``stylegan2_finetune``: ``G2s(E2(x))`` — E2 inverts the face into the FFHQ StyleGAN2's W+, and the fine-tuned G2s
    (same mapping, so the same W+) draws it in the style (AgileGAN's inversion-consistent transfer); ``toon``:
    :func:`toon_filter`; ``external``: any callable. The output has the input's size.

    Args:
        method: ``"stylegan2_finetune"``, ``"toon"`` or ``"external"``.
        generator: G2s (``stylegan2_finetune``).
        encoder: E2 (``stylegan2_finetune``).
        function: The external stylisation (``external``).
        toon_levels, toon_edges: :func:`toon_filter` settings.
    """

    def __init__(
        self,
        method: str,
        generator: StyleGAN2Generator | None = None,
        encoder: GradualStyleEncoder | None = None,
        function: Callable[[Tensor], Tensor] | None = None,
        toon_levels: int = 4,
        toon_edges: float = 1.0,
    ) -> None:
        super().__init__()
        if method == "stylegan2_finetune" and (generator is None or encoder is None):
            raise ValueError("StylePrior(stylegan2_finetune) needs the generator G2s and the encoder E2")
        if method == "external" and function is None:
            raise ValueError("StylePrior(external) needs a function")
        self.method = method
        self.generator = generator
        self.encoder = encoder
        self.function = function
        self.toon_levels = toon_levels
        self.toon_edges = toon_edges

    @classmethod
    def from_config(
        cls,
        config: PriorConfig,
        generator: StyleGAN2Generator | None = None,
        encoder: GradualStyleEncoder | None = None,
    ) -> StylePrior:
        """The prior ``config`` describes; ``stylegan2_finetune`` takes the fine-tuned G2s and E2."""
        function = None
        if config.method == "external":
            module, _, name = cast(str, config.external).partition(":")
            try:
                function = getattr(importlib.import_module(module), name)
            except (ImportError, AttributeError) as error:
                raise InputError(f"prior.external={config.external!r}: cannot import it ({error})") from None
        return cls(config.method, generator, encoder, function, config.toon_levels, config.toon_edges)

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        """Stylise images (N, 3, H, W) in [-1, 1]; returns (N, 3, H, W) in [-1, 1]."""
        size = images.shape[-1]
        if self.method == "toon":
            return toon_filter(images, self.toon_levels, self.toon_edges)
        if self.method == "external":
            return cast(Callable[[Tensor], Tensor], self.function)(images)
        generator, encoder = cast(StyleGAN2Generator, self.generator), cast(GradualStyleEncoder, self.encoder)
        ws = encode(encoder, images)
        styled = cast(Tensor, generator.synthesize(ws, noise_mode="const"))
        return resize_like(styled, size).clamp(-1, 1)


# ---------------------------------------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------------------------------------


def paired_guidance_loss(
    rendered: Tensor,
    target: Tensor,
    l1_weight: float = 1.0,
    perceptual_weight: float = 1.0,
    perceptual: PerceptualDistance | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The paired guidance of stage C: ``l1 · |G3s(ws, c) − x_sty|₁ + lpips · d(G3s(ws, c), x_sty)``.

    Args:
        rendered: G3s's renders of the pairs' (ws, c), (N, 3, H, W) in [-1, 1].
        target: The stylised pairs x_sty, same shape (resized to it when another size).
        l1_weight, perceptual_weight: Weights.
        perceptual: The distance (``None``: that term is off).

    Returns:
        ``(loss, {"l1": ..., "perceptual": ...})`` (unweighted parts, detached).
    """
    target = resize_like(target, rendered.shape[-1])
    l1 = (rendered - target).abs().mean()
    parts = {"l1": l1.detach()}
    loss = l1_weight * l1
    if perceptual is not None and perceptual_weight > 0:
        distance = perceptual(rendered, target).mean()
        parts["perceptual"] = distance.detach()
        loss = loss + perceptual_weight * distance
    return loss, parts


def multiview_consistency_loss(
    generator: TriPlaneGenerator,
    ws_hat: Tensor,
    ws: Tensor,
    c2: Tensor,
    l1_weight: float = 1.0,
    perceptual_weight: float = 1.0,
    perceptual: PerceptualDistance | None = None,
) -> Tensor:
    """The encoder's multi-view term ``‖G3D(E(x_c1), c2) − G3D(w, c2)‖`` at another camera c2 (spec §3), as
    ``l1 · L1 + lpips · d`` of the two renders.

    Zero when ``ws_hat`` equals ``ws`` (renders use ``noise_mode="const"`` and an eval-mode renderer, so both renders
    are the same function of their ws); differentiable in ``ws_hat`` (the target render has no gradient).

    Args:
        generator: G3D (frozen by the caller).
        ws_hat: Encoded codes (N, num_ws, w_dim).
        ws: The true codes (N, num_ws, w_dim).
        c2: Second cameras (N, 25).
        l1_weight, perceptual_weight, perceptual: As in :func:`paired_guidance_loss`.

    Returns:
        Scalar loss.
    """
    with torch.no_grad():
        target = generator.synthesis(ws, c2, noise_mode="const")["image"]
    rendered = generator.synthesis(ws_hat, c2, noise_mode="const")["image"]
    loss = l1_weight * (rendered - target).abs().mean()
    if perceptual is not None and perceptual_weight > 0:
        loss = loss + perceptual_weight * perceptual(rendered, target).mean()
    return loss
