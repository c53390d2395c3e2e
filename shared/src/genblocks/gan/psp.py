"""pSp ``GradualStyleEncoder``: an IR-SE backbone with a feature pyramid and map-to-style heads, and a pSp checkpoint loader.

Richardson et al., "Encoding in Style: a StyleGAN Encoder for Image-to-Image Translation", arXiv 2008.00951. The
module and parameter names follow eladrich/pixel2style2pixel at commit 2fba1b0 (``models/encoders/psp_encoders.py``,
``GradualStyleBlock`` / ``GradualStyleEncoder``; ``models/psp.py``, ``get_keys`` / ``__load_latent_avg``), so the
encoder half of a released pSp checkpoint loads without renaming:

- ``input_layer.{0,1,2}``: 3×3 conv (no bias), BatchNorm, PReLU.
- ``body.{i}``: the IR-SE units of :class:`genblocks.faces.arcface.BottleneckIRSE` (``shortcut_layer``,
  ``res_layer.{0..5}``), stages of 3/4/14/3 units for IR-SE-50, the first unit of every stage with stride 2.
- ``latlayer1`` (1×1, c2 → c3 channels), ``latlayer2`` (1×1, c1 → c3 channels): the feature pyramid laterals.
- ``styles.{i}.convs.{0,2,...}`` (3×3 stride-2 convs, each followed by a LeakyReLU) and ``styles.{i}.linear``
  (an equalised-lr linear layer, :class:`genblocks.gan.stylegan2.EqualLinear`).

Taps: c1 after the last unit of stage 2 (unit 6 for IR-SE-50, 128 ch at input/4), c2 after stage 3 (unit 20, 256 ch at
input/8), c3 after stage 4 (unit 23, 512 ch at input/16). Pyramid: p2 = up(c3) + latlayer1(c2), p1 = up(p2) +
latlayer2(c1), bilinear with ``align_corners=True``. Styles ``[0, coarse_index)`` read c3, ``[coarse_index,
middle_index)`` read p2 and the rest read p1; ``latent_avg`` is added to the output (pSp ``start_from_latent_avg``).

A pSp training checkpoint is ``{"opts": dict, "state_dict": {"encoder.*", "decoder.*"}, "latent_avg": (n_styles, 512)}``
(pSp ``training/coach.py`` ``__get_save_dict``). The decoder half is a rosinality StyleGAN2 state dict: load it with
``genblocks.gan.convert.load_rosinality_generator(generator, checkpoint.decoder_state_dict)``.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from genblocks.faces.arcface import BottleneckIRSE, StateDictReport
from genblocks.gan.stylegan2 import EqualLinear

__all__ = [
    "GradualStyleBlock",
    "GradualStyleEncoder",
    "PSPCheckpoint",
    "load_psp_encoder",
    "psp_encoder_from_checkpoint",
    "psp_n_styles",
    "read_psp_checkpoint",
]

logger = logging.getLogger(__name__)


def _is_power_of_two(value: int) -> bool:
    return value >= 1 and (value & (value - 1)) == 0


def psp_n_styles(resolution: int) -> int:
    """Number of W+ codes of a StyleGAN2 generator at ``resolution``: ``2 * log2(resolution) - 2`` (18 at 1024²).

    Args:
        resolution (`int`): generator output side, a power of two >= 4.

    Returns:
        `int`: the number of style vectors the encoder must emit.
    """
    if resolution < 4 or not _is_power_of_two(resolution):
        raise ValueError(f"`resolution` must be a power of two >= 4, got {resolution}.")
    return 2 * int(math.log2(resolution)) - 2


class GradualStyleBlock(nn.Module):
    """Map-to-style head: ``max(1, log2(spatial))`` stride-2 3×3 convs with LeakyReLU, then an equalised-lr linear.

    The convolutions reduce a ``spatial``×``spatial`` map to 1×1 (pSp always builds at least one convolution).

    Args:
        in_channels (`int`): channels of the feature map read by the head.
        out_channels (`int`): channels of the convolutions and size of the style vector (512 in pSp).
        spatial (`int`): side of the input feature map, a power of two.
        negative_slope (`float`, defaults to 0.01): LeakyReLU slope; pSp uses ``nn.LeakyReLU()``'s default 0.01.
    """

    def __init__(self, in_channels: int, out_channels: int, spatial: int, negative_slope: float = 0.01) -> None:
        super().__init__()
        if not _is_power_of_two(spatial):
            raise ValueError(f"`spatial` must be a power of two, got {spatial}.")
        self.out_channels = out_channels
        self.spatial = spatial
        num_convs = max(1, int(math.log2(spatial)))
        layers: list[nn.Module] = []
        channels = in_channels
        for _ in range(num_convs):
            layers += [nn.Conv2d(channels, out_channels, 3, 2, 1), nn.LeakyReLU(negative_slope)]
            channels = out_channels
        self.convs = nn.Sequential(*layers)
        self.linear = EqualLinear(out_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map a feature map to one style vector.

        Args:
            x (`torch.Tensor`): shape (N, in_channels, spatial, spatial).

        Returns:
            `torch.Tensor`: shape (N, out_channels).
        """
        return self.linear(self.convs(x).flatten(1))


class GradualStyleEncoder(nn.Module):
    """pSp encoder: an image to W+ codes ``(N, n_styles, style_dim)`` through an IR-SE backbone and a feature pyramid.

    The defaults build pSp's ``GradualStyleEncoder(50, 'ir_se')`` for a 1024² StyleGAN2 (18 styles, 256² input).
    Tiny test models shrink ``units`` (e.g. ``(1, 1, 2, 1)``), ``channels``, ``style_dim`` and ``input_size``; the
    taps always sit at the ends of stages 2, 3 and 4.

    Args:
        n_styles (`int`, defaults to 18): number of style vectors, ``psp_n_styles(generator_resolution)``.
        units (`Sequence[int]`, defaults to `(3, 4, 14, 3)`): IR-SE units per stage (exactly 4 stages).
        channels (`Sequence[int]`, defaults to `(64, 128, 256, 512)`): stage widths; the stem has ``channels[0]``.
        style_dim (`int`, defaults to 512): size of each style vector (the StyleGAN2 ``w_dim``).
        in_channels (`int`, defaults to 3): input channels (pSp ``opts.input_nc``).
        input_size (`int`, defaults to 256): input side, a power of two >= 16; the heads are sized for it.
        coarse_index (`int`, defaults to 3): styles below it read c3.
        middle_index (`int`, defaults to 7): styles in ``[coarse_index, middle_index)`` read p2, the rest p1.
        se_reduction (`int`, defaults to 16): squeeze-and-excitation reduction of the IR-SE units.
        head_negative_slope (`float`, defaults to 0.01): LeakyReLU slope in the style heads.
        start_from_latent_avg (`bool`, defaults to `True`): add the ``latent_avg`` buffer (n_styles, style_dim) to the
            output, as pSp does when trained with ``start_from_latent_avg``.
    """

    latent_avg: torch.Tensor  # buffer

    def __init__(
        self,
        n_styles: int = 18,
        units: Sequence[int] = (3, 4, 14, 3),
        channels: Sequence[int] = (64, 128, 256, 512),
        style_dim: int = 512,
        in_channels: int = 3,
        input_size: int = 256,
        coarse_index: int = 3,
        middle_index: int = 7,
        se_reduction: int = 16,
        head_negative_slope: float = 0.01,
        start_from_latent_avg: bool = True,
    ) -> None:
        super().__init__()
        if len(units) != 4 or len(channels) != 4 or min(units) < 1:
            raise ValueError(
                f"`units` and `channels` must each have 4 entries (units >= 1), got {tuple(units)} and {tuple(channels)}."
            )
        if input_size < 16 or not _is_power_of_two(input_size):
            raise ValueError(f"`input_size` must be a power of two >= 16, got {input_size}.")
        if n_styles < 1:
            raise ValueError(f"`n_styles` must be positive, got {n_styles}.")
        if not 0 <= coarse_index <= middle_index:
            raise ValueError(
                f"`coarse_index` and `middle_index` must satisfy 0 <= coarse_index <= middle_index, got "
                f"{coarse_index} and {middle_index}."
            )
        self.n_styles = n_styles
        self.style_dim = style_dim
        self.in_channels = in_channels
        self.input_size = input_size
        self.coarse_index = coarse_index
        self.middle_index = middle_index
        self.start_from_latent_avg = start_from_latent_avg
        ends = [sum(units[: i + 1]) - 1 for i in range(4)]
        self.tap_indices: tuple[int, int, int] = (ends[1], ends[2], ends[3])

        self.input_layer = nn.Sequential(
            nn.Conv2d(in_channels, channels[0], 3, 1, 1, bias=False),
            nn.BatchNorm2d(channels[0]),
            nn.PReLU(channels[0]),
        )
        body: list[nn.Module] = []
        width_in = channels[0]
        for count, width in zip(units, channels, strict=True):
            body.append(BottleneckIRSE(width_in, width, 2, se_reduction))
            body.extend(BottleneckIRSE(width, width, 1, se_reduction) for _ in range(count - 1))
            width_in = width
        self.body = nn.Sequential(*body)

        top = channels[3]
        spatial = (input_size // 16, input_size // 8, input_size // 4)  # c3, p2, p1
        self.styles = nn.ModuleList()
        for i in range(n_styles):
            side = spatial[0] if i < coarse_index else spatial[1] if i < middle_index else spatial[2]
            self.styles.append(GradualStyleBlock(top, style_dim, side, head_negative_slope))
        self.latlayer1 = nn.Conv2d(channels[2], top, 1, 1, 0)
        self.latlayer2 = nn.Conv2d(channels[1], top, 1, 1, 0)
        self.register_buffer("latent_avg", torch.zeros(n_styles, style_dim))

    def _check_input(self, x: torch.Tensor) -> None:
        expected = (self.in_channels, self.input_size, self.input_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"`x` must have shape (N, {', '.join(map(str, expected))}), got {tuple(x.shape)}.")

    def backbone_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Run the stem and the IR-SE body, returning the three taps.

        Args:
            x (`torch.Tensor`): images of shape (N, in_channels, input_size, input_size), in [-1, 1] for pSp.

        Returns:
            `tuple[torch.Tensor, torch.Tensor, torch.Tensor]`: c1 (N, channels[1], S/4, S/4), c2 (N, channels[2],
            S/8, S/8) and c3 (N, channels[3], S/16, S/16), with S = ``input_size``.
        """
        self._check_input(x)
        x = self.input_layer(x)
        taps: list[torch.Tensor] = []
        for index, unit in enumerate(self.body):
            x = unit(x)
            if index in self.tap_indices:
                taps.append(x)
        return taps[0], taps[1], taps[2]

    @staticmethod
    def upsample_add(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Bilinearly resize ``x`` (N, C, h, w) to ``y``'s size (``align_corners=True``) and add ``y`` (N, C, H, W)."""
        return F.interpolate(x, size=y.shape[-2:], mode="bilinear", align_corners=True) + y

    def feature_pyramid(
        self, c1: torch.Tensor, c2: torch.Tensor, c3: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-down pyramid: p2 = up(c3) + latlayer1(c2), p1 = up(p2) + latlayer2(c1).

        Args:
            c1 (`torch.Tensor`): (N, channels[1], S/4, S/4).
            c2 (`torch.Tensor`): (N, channels[2], S/8, S/8).
            c3 (`torch.Tensor`): (N, channels[3], S/16, S/16).

        Returns:
            `tuple[torch.Tensor, torch.Tensor]`: p2 (N, channels[3], S/8, S/8) and p1 (N, channels[3], S/4, S/4).
        """
        p2 = self.upsample_add(c3, self.latlayer1(c2))
        p1 = self.upsample_add(p2, self.latlayer2(c1))
        return p2, p1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encode images into W+ codes.

        Args:
            x (`torch.Tensor`): images of shape (N, in_channels, input_size, input_size).

        Returns:
            `torch.Tensor`: codes of shape (N, n_styles, style_dim), ``latent_avg`` added when
            ``start_from_latent_avg``.
        """
        c1, c2, c3 = self.backbone_features(x)
        p2, p1 = self.feature_pyramid(c1, c2, c3)
        codes = []
        for index, head in enumerate(self.styles):
            source = c3 if index < self.coarse_index else p2 if index < self.middle_index else p1
            codes.append(head(source))
        out = torch.stack(codes, dim=1)
        return out + self.latent_avg if self.start_from_latent_avg else out


@dataclass(frozen=True)
class PSPCheckpoint:
    """A pSp checkpoint split into its parts.

    Args:
        opts (`dict[str, Any]`): the training options pSp stores (``vars(opts)``); empty when absent.
        encoder_state_dict (`dict[str, torch.Tensor]`): ``state_dict`` entries under ``encoder.``, prefix removed.
        decoder_state_dict (`dict[str, torch.Tensor]`): entries under ``decoder.`` (a rosinality StyleGAN2 state
            dict), prefix removed.
        latent_avg (`torch.Tensor` or `None`): the stored average latent, (n_styles, w_dim) or (w_dim,).
        other_keys (`list[str]`): ``state_dict`` keys under neither prefix (not used).
    """

    opts: dict[str, Any]
    encoder_state_dict: dict[str, torch.Tensor]
    decoder_state_dict: dict[str, torch.Tensor]
    latent_avg: torch.Tensor | None
    other_keys: list[str] = field(default_factory=list)


def _strip_module(key: str) -> str:
    return key[len("module.") :] if key.startswith("module.") else key


def read_psp_checkpoint(checkpoint: str | Path | Mapping[str, Any]) -> PSPCheckpoint:
    """Read a pSp checkpoint with ``torch.load(weights_only=True)`` and split its state dict.

    Args:
        checkpoint (`str`, `Path` or mapping): a ``.pt`` file or an already loaded ``{opts, state_dict, latent_avg}``
            mapping. A bare state dict (keys ``encoder.*`` / ``decoder.*`` at the top level) is accepted too.

    Returns:
        `PSPCheckpoint`: the options, the encoder and decoder state dicts and ``latent_avg``.
    """
    if isinstance(checkpoint, str | Path):
        path = Path(checkpoint)
        if not path.is_file():
            raise FileNotFoundError(f"pSp checkpoint not found: {path}")
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            raise ValueError(
                f"{path} could not be read with torch.load(weights_only=True) ({error}); re-save it as a plain "
                "{'opts': dict, 'state_dict': ..., 'latent_avg': tensor} mapping."
            ) from error
    else:
        loaded = checkpoint
    if not isinstance(loaded, Mapping):
        raise ValueError(f"`checkpoint` must hold a mapping, got {type(loaded).__name__}.")
    state = loaded.get("state_dict", loaded)
    if not isinstance(state, Mapping):
        raise ValueError(f"`checkpoint['state_dict']` must be a mapping, got {type(state).__name__}.")
    encoder: dict[str, torch.Tensor] = {}
    decoder: dict[str, torch.Tensor] = {}
    other: list[str] = []
    for raw_key, value in state.items():
        if not isinstance(value, torch.Tensor):
            continue
        key = _strip_module(raw_key)
        if key.startswith("encoder."):
            encoder[key[len("encoder.") :]] = value
        elif key.startswith("decoder."):
            decoder[key[len("decoder.") :]] = value
        else:
            other.append(raw_key)
    opts = loaded.get("opts", {})
    latent_avg = loaded.get("latent_avg")
    return PSPCheckpoint(
        opts=dict(opts) if isinstance(opts, Mapping) else {},
        encoder_state_dict=encoder,
        decoder_state_dict=decoder,
        latent_avg=latent_avg if isinstance(latent_avg, torch.Tensor) else None,
        other_keys=sorted(other),
    )


def load_psp_encoder(
    encoder: GradualStyleEncoder, checkpoint: str | Path | Mapping[str, Any] | PSPCheckpoint, strict: bool = False
) -> StateDictReport:
    """Load the encoder half and ``latent_avg`` of a pSp checkpoint into ``encoder``.

    ``latent_avg`` of shape (n_styles, style_dim), (1, style_dim) or (style_dim,) is broadcast into the encoder's
    buffer; when the checkpoint has none, the buffer keeps its value and ``"latent_avg"`` is reported missing.

    Args:
        encoder (`GradualStyleEncoder`): the model to fill.
        checkpoint (`str`, `Path`, mapping or `PSPCheckpoint`): see :func:`read_psp_checkpoint`.
        strict (`bool`, defaults to `False`): raise a `ValueError` listing the problems unless every key matches.

    Returns:
        `StateDictReport`: missing, unexpected and shape-mismatched encoder keys.
    """
    parsed = checkpoint if isinstance(checkpoint, PSPCheckpoint) else read_psp_checkpoint(checkpoint)
    state = dict(parsed.encoder_state_dict)
    own = encoder.state_dict()
    missing_avg = False
    if parsed.latent_avg is not None and "latent_avg" not in state:
        avg = parsed.latent_avg.reshape(-1, parsed.latent_avg.shape[-1]) if parsed.latent_avg.ndim else None
        if avg is None or avg.shape[-1] != encoder.style_dim or avg.shape[0] not in (1, encoder.n_styles):
            raise ValueError(
                f"`latent_avg` must have shape ({encoder.n_styles}, {encoder.style_dim}) or ({encoder.style_dim},), "
                f"got {tuple(parsed.latent_avg.shape)}."
            )
        state["latent_avg"] = avg.expand(encoder.n_styles, -1).clone()
    elif "latent_avg" not in state:
        missing_avg = True
        logger.warning("pSp checkpoint has no latent_avg; the encoder keeps its current latent_avg buffer")
    mismatched = sorted(k for k in state if k in own and tuple(state[k].shape) != tuple(own[k].shape))
    loadable = {k: v for k, v in state.items() if k in own and k not in mismatched}
    result = encoder.load_state_dict(loadable, strict=False)
    missing = set(result.missing_keys) | set(mismatched)
    if missing_avg:
        missing.add("latent_avg")
    report = StateDictReport(
        missing_keys=sorted(missing),
        unexpected_keys=sorted(k for k in state if k not in own),
        mismatched_keys=mismatched,
    )
    if strict and not report.complete:
        raise ValueError(
            f"pSp checkpoint does not match the encoder: missing {report.missing_keys[:10]}, unexpected "
            f"{report.unexpected_keys[:10]}, mismatched shapes {report.mismatched_keys[:10]}."
        )
    return report


_UNIT_CONV = re.compile(r"^body\.(\d+)\.res_layer\.1\.weight$")
_STYLE_LINEAR = re.compile(r"^styles\.(\d+)\.linear\.weight$")


def psp_encoder_from_checkpoint(
    checkpoint: str | Path | Mapping[str, Any] | PSPCheckpoint,
    input_size: int = 256,
    units: Sequence[int] | None = None,
    strict: bool = True,
) -> tuple[GradualStyleEncoder, StateDictReport]:
    """Build a :class:`GradualStyleEncoder` shaped like the checkpoint's encoder and load it.

    Stage widths come from the IR-SE units' conv shapes and stage lengths from where the width changes (the first
    stage starts at unit 0; IR-SE-50 gives (3, 4, 14, 3)), ``n_styles`` and ``style_dim`` from the style heads,
    ``in_channels`` from the stem and ``se_reduction`` from the first SE layer. Two consecutive stages of equal width
    cannot be told apart from the weights (their stride-2 unit has a parameter-free shortcut): pass ``units`` then.

    Args:
        checkpoint (`str`, `Path`, mapping or `PSPCheckpoint`): see :func:`read_psp_checkpoint`.
        input_size (`int`, defaults to 256): the encoder's input side (pSp trains at 256²).
        units (`Sequence[int]`, *optional*): units per stage; inferred when `None`.
        strict (`bool`, defaults to `True`): raise unless every key matches (``latent_avg`` included).

    Returns:
        `tuple[GradualStyleEncoder, StateDictReport]`: the loaded encoder (eval mode) and the load report.
    """
    parsed = checkpoint if isinstance(checkpoint, PSPCheckpoint) else read_psp_checkpoint(checkpoint)
    state = parsed.encoder_state_dict
    unit_widths: dict[int, int] = {}
    n_styles = 0
    for key, value in state.items():
        if match := _UNIT_CONV.match(key):
            unit_widths[int(match.group(1))] = int(value.shape[0])
        elif match := _STYLE_LINEAR.match(key):
            n_styles = max(n_styles, int(match.group(1)) + 1)
    if not unit_widths or n_styles == 0 or "input_layer.0.weight" not in state:
        raise ValueError("`checkpoint` has no pSp GradualStyleEncoder weights (encoder.body.*, encoder.styles.*).")
    widths = [unit_widths[index] for index in range(len(unit_widths))]
    if units is None:
        stage_units: list[int] = []
        for index, width in enumerate(widths):
            if index and widths[index - 1] == width:
                stage_units[-1] += 1
            else:
                stage_units.append(1)
    else:
        stage_units = list(units)
        if sum(stage_units) != len(widths):
            raise ValueError(f"`units` {tuple(units)} must sum to the checkpoint's {len(widths)} IR-SE units.")
    starts = [sum(stage_units[:i]) for i in range(len(stage_units))]
    channels = [widths[start] for start in starts]
    se_key = "body.0.res_layer.5.fc1.weight"
    se_reduction = channels[0] // int(state[se_key].shape[0]) if se_key in state else 16
    encoder = GradualStyleEncoder(
        n_styles=n_styles,
        units=stage_units,
        channels=channels,
        style_dim=int(state["styles.0.linear.weight"].shape[0]),
        in_channels=int(state["input_layer.0.weight"].shape[1]),
        input_size=input_size,
        se_reduction=se_reduction,
    )
    report = load_psp_encoder(encoder, parsed, strict=strict)
    return encoder.eval(), report
