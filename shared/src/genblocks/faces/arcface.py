"""ArcFace IR-SE backbone (IR-SE-50 by default) in torch, a loader for local checkpoints, and an embedder for norm-crops.

The architecture and parameter names follow TreB1eN/InsightFace_Pytorch ``model.py`` (``Backbone``, ``get_blocks``,
``bottleneck_IR_SE``, ``SEModule``), the layout of ``model_ir_se50.pth`` used by pSp/e4e
(eladrich/pixel2style2pixel ``models/encoders/model_irse.py``, commit 5e5f38e) and by ID-Patch's
``Backbone(50, 'ir_se')``: ``input_layer.{0,1,2}``, ``body.N.shortcut_layer``, ``body.N.res_layer.{0..5}``,
``output_layer.{0,3,4}``. ArcFace: Deng et al., arXiv 1801.07698. No weights ship here; pass a local file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ArcFaceEmbedder",
    "BottleneckIRSE",
    "IRSEBackbone",
    "StateDictReport",
    "ir_se_units",
    "load_arcface_state_dict",
]

_UNITS = {50: (3, 4, 14, 3), 100: (3, 13, 30, 3), 152: (3, 8, 36, 3)}
_PREFIXES = ("module.", "facenet.", "backbone.", "model.")


def ir_se_units(num_layers: int) -> tuple[int, int, int, int]:
    """Residual units per stage for IR-SE-50/100/152 (``get_blocks``).

    Args:
        num_layers (`int`): 50, 100 or 152.

    Returns:
        `tuple[int, int, int, int]`: units per stage.
    """
    if num_layers not in _UNITS:
        raise ValueError(f"`num_layers` must be one of {sorted(_UNITS)}, got {num_layers}.")
    return _UNITS[num_layers]


class SEModule(nn.Module):
    """Squeeze-and-excitation with 1×1 convolutions (no biases), as in ``SEModule``."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, max(channels // reduction, 1), kernel_size=1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(max(channels // reduction, 1), channels, kernel_size=1, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.sigmoid(self.fc2(self.relu(self.fc1(self.avg_pool(x)))))


class BottleneckIRSE(nn.Module):
    """Improved residual unit with SE (``bottleneck_IR_SE``): BN → 3×3 conv → PReLU → 3×3 conv (stride) → BN → SE,
    plus a max-pool (same width) or 1×1 conv + BN shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, se_reduction: int) -> None:
        super().__init__()
        if in_channels == out_channels:
            self.shortcut_layer: nn.Module = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, out_channels, 3, 1, 1, bias=False),
            nn.PReLU(out_channels),
            nn.Conv2d(out_channels, out_channels, 3, stride, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            SEModule(out_channels, se_reduction),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class IRSEBackbone(nn.Module):
    """The ArcFace IR-SE backbone: a 112×112 face crop in [-1, 1] to an L2-normalised identity embedding.

    Args:
        units (`Sequence[int]`, defaults to `(3, 4, 14, 3)`): residual units per stage (IR-SE-50; see `ir_se_units`).
            Tiny values such as ``(1, 1, 1, 1)`` make test models.
        channels (`Sequence[int]`, defaults to `(64, 128, 256, 512)`): widths per stage; the stem has ``channels[0]``.
        embedding_dim (`int`, defaults to 512): output size.
        input_size (`int`, defaults to 112): crop side; each stage halves it, so it must be divisible by 2**stages.
        drop_ratio (`float`, defaults to 0.4): dropout before the final linear layer (active in train mode only).
        se_reduction (`int`, defaults to 16): squeeze-and-excitation reduction.
        normalize (`bool`, defaults to `True`): L2-normalise the output (``l2_norm`` in the original).
    """

    def __init__(
        self,
        units: Sequence[int] = (3, 4, 14, 3),
        channels: Sequence[int] = (64, 128, 256, 512),
        embedding_dim: int = 512,
        input_size: int = 112,
        drop_ratio: float = 0.4,
        se_reduction: int = 16,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        if len(units) != len(channels) or not units or min(units) < 1:
            raise ValueError(f"`units` and `channels` must be equally long and non-empty, got {units} and {channels}.")
        if input_size % (2 ** len(units)) != 0:
            raise ValueError(f"`input_size` must be divisible by {2 ** len(units)}, got {input_size}.")
        self.input_size = input_size
        self.normalize = normalize
        self.input_layer = nn.Sequential(
            nn.Conv2d(3, channels[0], 3, 1, 1, bias=False), nn.BatchNorm2d(channels[0]), nn.PReLU(channels[0])
        )
        modules = []
        in_channels = channels[0]
        for count, width in zip(units, channels, strict=True):
            modules.append(BottleneckIRSE(in_channels, width, 2, se_reduction))
            modules.extend(BottleneckIRSE(width, width, 1, se_reduction) for _ in range(count - 1))
            in_channels = width
        self.body = nn.Sequential(*modules)
        side = input_size // 2 ** len(units)
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.Dropout(drop_ratio),
            nn.Flatten(),
            nn.Linear(in_channels * side * side, embedding_dim),
            nn.BatchNorm1d(embedding_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed face crops.

        Args:
            x (`torch.Tensor`): shape (B, 3, input_size, input_size), values in [-1, 1].

        Returns:
            `torch.Tensor`: shape (B, embedding_dim), unit-norm when ``normalize``.
        """
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[-2:] != (self.input_size, self.input_size):
            raise ValueError(
                f"`x` must have shape (B, 3, {self.input_size}, {self.input_size}), got {tuple(x.shape)}."
            )
        out = self.output_layer(self.body(self.input_layer(x)))
        return F.normalize(out, dim=-1) if self.normalize else out


@dataclass(frozen=True)
class StateDictReport:
    """What loading a checkpoint matched.

    Args:
        missing_keys (`list[str]`): model keys the checkpoint lacks (left at their current values).
        unexpected_keys (`list[str]`): checkpoint keys the model does not have (ignored).
        mismatched_keys (`list[str]`): keys present in both with different shapes (not loaded).
    """

    missing_keys: list[str] = field(default_factory=list)
    unexpected_keys: list[str] = field(default_factory=list)
    mismatched_keys: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Whether every model key was loaded and every checkpoint key used."""
        return not (self.missing_keys or self.unexpected_keys or self.mismatched_keys)


def _read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ArcFace checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(loaded, Mapping) and "state_dict" in loaded and isinstance(loaded["state_dict"], Mapping):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, Mapping):
        raise ValueError(f"{path} does not hold a state dict (got {type(loaded).__name__}).")
    return dict(loaded)


def load_arcface_state_dict(
    model: IRSEBackbone, checkpoint: str | Path | Mapping[str, torch.Tensor], strict: bool = False
) -> StateDictReport:
    """Load a TreB1eN/pSp-layout IR-SE checkpoint (``model_ir_se50.pth`` and the like) into ``model``.

    Files are read with ``torch.load(weights_only=True)`` (or safetensors); a ``state_dict`` entry is unwrapped and the
    prefixes ``module.``, ``facenet.``, ``backbone.`` and ``model.`` are stripped.

    Args:
        model (`IRSEBackbone`): the model to fill.
        checkpoint (`str`, `Path` or mapping): a local file or an in-memory state dict.
        strict (`bool`, defaults to `False`): raise a `ValueError` listing the problems unless every key matches.

    Returns:
        `StateDictReport`: missing, unexpected and shape-mismatched keys.
    """
    state = _read_state_dict(checkpoint) if isinstance(checkpoint, str | Path) else dict(checkpoint)
    cleaned: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix) :]
                break
        cleaned[key] = value
    own = model.state_dict()
    mismatched = sorted(k for k in cleaned if k in own and tuple(cleaned[k].shape) != tuple(own[k].shape))
    loadable = {k: v for k, v in cleaned.items() if k in own and k not in mismatched}
    result = model.load_state_dict(loadable, strict=False)
    report = StateDictReport(
        missing_keys=sorted(set(result.missing_keys) | set(mismatched)),
        unexpected_keys=sorted(k for k in cleaned if k not in own),
        mismatched_keys=mismatched,
    )
    if strict and not report.complete:
        raise ValueError(
            f"ArcFace checkpoint does not match the model: missing {report.missing_keys[:10]}, unexpected "
            f"{report.unexpected_keys[:10]}, mismatched shapes {report.mismatched_keys[:10]}."
        )
    return report


class ArcFaceEmbedder:
    """Callable that embeds ArcFace norm-crops with an `IRSEBackbone`; usable as ``DlibFaceAnalyzer(embedder=...)``.

    Args:
        model (`IRSEBackbone`): the backbone (put in eval mode here).
        channel_order (`str`, defaults to `"rgb"`): channel order the backbone expects. ID-Patch feeds BGR crops to
            its IR-SE-50 (``face.channel_order="bgr"``); crops arrive RGB and are flipped when this is ``"bgr"``.
        device (`str` or `torch.device`, defaults to `"cpu"`): where the model runs.
    """

    def __init__(
        self, model: IRSEBackbone, channel_order: Literal["rgb", "bgr"] = "rgb", device: str | torch.device = "cpu"
    ) -> None:
        if channel_order not in ("rgb", "bgr"):
            raise ValueError(f"`channel_order` must be 'rgb' or 'bgr', got {channel_order!r}.")
        self.model = model.eval().to(device)
        self.channel_order = channel_order
        self.device = torch.device(device)

    @torch.no_grad()
    def __call__(self, crops: np.ndarray) -> np.ndarray:
        """Embed crops.

        Args:
            crops (`np.ndarray`): uint8 RGB of shape (N, S, S, 3), S the model's ``input_size``.

        Returns:
            `np.ndarray`: float32 of shape (N, embedding_dim).
        """
        crops = np.asarray(crops)
        size = self.model.input_size
        if crops.dtype != np.uint8 or crops.shape[1:] != (size, size, 3):
            raise ValueError(
                f"`crops` must be uint8 of shape (N, {size}, {size}, 3), got {crops.dtype} {crops.shape}."
            )
        if self.channel_order == "bgr":
            crops = crops[..., ::-1]
        x = torch.from_numpy(np.ascontiguousarray(crops)).to(self.device).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        return self.model(x).float().cpu().numpy()
