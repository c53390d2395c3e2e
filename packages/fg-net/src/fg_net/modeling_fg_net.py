"""FG-Net: pSp inversion into StyleGAN2, the generator's per-resolution features, and the Pyramid CNN Interpreter.

Yin et al., "FG-Net: Facial Action Unit Detection with Generalizable Pyramidal Features", WACV 2024, arXiv 2308.12380.
Followed code: ihp-lab/FG-Net@6067ab2a5fadc796efd69e25ea9800e095a344b7 ``code/models/interpreter.py``
(``pyramid_interpreter``, ``init_weights``), ``code/model_utils.py`` (``load_psp_standalone``, ``latent_to_image``,
``prepare_model``) and ``code/train_interpreter.py`` (the re-mapping line ``g_all.style(latent_codes...)``); spec
fg-net §3. The building blocks are genblocks' `GradualStyleEncoder` and `StyleGAN2Generator`.

Forward pass (``FGNet.forward``), for FFHQ-aligned faces in [-1, 1]:

1. ``codes = encoder(images)``: W+ of shape (B, n_styles, w_dim), ``latent_avg`` added (upstream's forward hook).
2. With ``remap_encoder_latents`` every code goes through the mapping MLP again (PixelNorm + the ``fc`` layers): the
   authors' code does this; whether it is intended is unverified, so it is a flag.
3. ``synthesis(ws, noise_mode="const", return_features=True)``; of the convolution outputs the last one of each
   resolution (4, 8, ..., R) is kept (`second_conv_feature_indices`). The RGB image is unused.
4. `PyramidInterpreter`: start from the 4-px feature, then ``hs = layer_{i-1}(hs) + f_i``, features larger than the
   heatmap size resized down to it; a final head gives ``interpreter_out_channels`` heatmaps (32 in the paper, of
   which the dataset's K are used).

Feature taps. Upstream's ``g_synthesis`` returns 18 maps at 1024 px: the constant input, ``conv1`` (4 px), then
``convs.{2k}`` and ``convs.{2k+1}`` per resolution; its taps ``[1, 3, ..., 17]`` are ``conv1`` and every
``convs.{2k+1}``. genblocks' ``SynthesisNetwork(return_features=True)`` returns ``2 log2(R) - 3`` maps, without the
constant input: ``b4.conv1``, then ``b{r}.conv0`` and ``b{r}.conv1`` for r = 8..R. `stylegan2_feature_index` maps an
upstream tap t >= 1 to our index ``t - 1``, so the taps become ``[0, 2, ..., 2 log2(R) - 4]``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fg_net.config import FGNetConfig
from genblocks.gan.psp import GradualStyleEncoder
from genblocks.gan.stylegan2 import MappingNetwork, StyleGAN2Generator, normalize_2nd_moment

__all__ = [
    "FGNet",
    "PyramidInterpreter",
    "read_pretrained_metadata",
    "remap_latents",
    "second_conv_feature_indices",
    "second_conv_taps",
    "stylegan2_feature_index",
]

logger = logging.getLogger(__name__)

_PARTS = ("encoder", "generator", "interpreter")


def stylegan2_feature_index(upstream_tap: int) -> int:
    """Map an index of the authors' 18-entry StyleGAN2 feature list to genblocks' ``return_features`` list.

    Upstream (rosinality ``Generator.g_synthesis`` as modified by FG-Net) lists the constant input at 0, ``conv1``
    (4 px) at 1 and then ``convs.0, convs.1, ...``; genblocks lists ``b4.conv1`` at 0, then ``b{r}.conv0``,
    ``b{r}.conv1`` per resolution. Every entry but the constant input has a counterpart one place earlier.

    Args:
        upstream_tap (`int`): index into upstream's list, >= 1 (0, the constant input, is not a convolution output and
            has no counterpart).

    Returns:
        `int`: the index into ``SynthesisNetwork(..., return_features=True)[1]``.
    """
    if upstream_tap < 1:
        raise ValueError(
            f"`upstream_tap` must be >= 1 (upstream index 0 is the constant input, which genblocks' feature list does "
            f"not include), got {upstream_tap}."
        )
    return upstream_tap - 1


def second_conv_taps(resolution: int) -> tuple[int, ...]:
    """The authors' feature taps for a generator of ``resolution``: the last conv of each resolution,
    ``[1, 3, ..., 2 log2(R) - 1]`` (``[1, 3, ..., 17]`` at 1024 px).

    Args:
        resolution (`int`): generator resolution, a power of two >= 4.

    Returns:
        `tuple[int, ...]`: upstream indices, one per resolution 4..R.
    """
    if resolution < 4 or resolution & (resolution - 1):
        raise ValueError(f"`resolution` must be a power of two >= 4, got {resolution}.")
    return tuple(range(1, 2 * int(math.log2(resolution)) - 2, 2))


def second_conv_feature_indices(resolution: int) -> tuple[int, ...]:
    """`second_conv_taps` in genblocks' feature list: ``[0, 2, ..., 2 log2(R) - 4]`` (``[0, 2, ..., 16]`` at 1024 px).

    Args:
        resolution (`int`): generator resolution, a power of two >= 4.

    Returns:
        `tuple[int, ...]`: indices into ``SynthesisNetwork(..., return_features=True)[1]``, one per resolution 4..R.
    """
    return tuple(stylegan2_feature_index(tap) for tap in second_conv_taps(resolution))


def remap_latents(mapping: MappingNetwork, codes: Tensor) -> Tensor:
    """Pass W+ codes through the mapping MLP again, one code at a time (upstream ``g_all.style(codes.reshape(-1, 512))``).

    Computes PixelNorm then ``mapping.fc{i}`` for every layer; no label embedding, truncation or ``w_avg`` update.

    Args:
        mapping (`MappingNetwork`): an unconditional mapping network with ``z_dim == w_dim``.
        codes (`Tensor` of shape `(B, n, w_dim)`): W+ codes.

    Returns:
        `Tensor` of shape `(B, n, w_dim)`.
    """
    if mapping.c_dim != 0 or mapping.z_dim != mapping.w_dim:
        raise ValueError(
            f"re-mapping needs an unconditional mapping with z_dim == w_dim, got z_dim={mapping.z_dim}, "
            f"c_dim={mapping.c_dim}, w_dim={mapping.w_dim}."
        )
    if codes.ndim != 3 or codes.shape[-1] != mapping.z_dim:
        raise ValueError(f"`codes` must have shape (B, n, {mapping.z_dim}), got {tuple(codes.shape)}.")
    x = normalize_2nd_moment(codes.reshape(-1, codes.shape[-1]))
    for index in range(mapping.num_layers):
        x = getattr(mapping, f"fc{index}")(x)
    return x.reshape(codes.shape)


def _block(in_channels: int, out_channels: int, kernel_size: int, dropout: float, upsample: bool) -> nn.Sequential:
    """[Upsample x2 (bilinear, align_corners=True)] -> Conv -> ReLU -> Dropout -> BatchNorm (upstream's layout, so
    that ``layer{i}.{idx}`` keys match: conv at 1 and BN at 4 with upsampling, 0 and 3 without)."""
    layers: list[nn.Module] = []
    if upsample:
        layers.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True))
    layers += [
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
        nn.ReLU(),
        nn.Dropout(p=dropout),
        nn.BatchNorm2d(out_channels),
    ]
    return nn.Sequential(*layers)


class PyramidInterpreter(nn.Module):
    """The Pyramid CNN Interpreter: StyleGAN2 features at 4, 8, ..., R px -> heatmaps at ``target_size``.

    With n features, blocks ``layer0 .. layer{n-2}`` each map ``feature_channels[i]`` to ``feature_channels[i + 1]``
    channels: [Upsample x2 (bilinear, ``align_corners=True``) while the next feature is at most ``target_size``] ->
    Conv -> ReLU -> Dropout -> BatchNorm; kernel ``first_kernel_size`` for ``layer0`` and ``kernel_size`` after. The
    head ``layer{n-1}`` is Conv(c, c) -> ReLU -> Dropout -> BatchNorm -> Conv(c, out_channels), c the last feature's
    channels. ``hs = f_0``, then ``hs = layer_{i-1}(hs) + f_i`` with ``f_i`` resized down to ``target_size``
    (bilinear, ``align_corners=True``: upstream's ``Interpolate`` inverts its flag) when larger.

    The paper (1024-px generator, ``target_size=128``): layers 0-4 upsample (512 -> 512 k3, 512 -> 512 k5 x 3,
    512 -> 256 k5), layers 5-7 do not (256 -> 128 -> 64 -> 32, adding f256, f512, f1024 resized to 128), layer 8 is
    the head (32 -> 32 -> 32 outputs), giving (B, 32, 128, 128).

    Args:
        feature_channels (`Sequence[int]`): channels of the features at 4, 8, ..., R px (at least 2).
        out_channels (`int`, defaults to 32): heatmaps produced (``points`` upstream).
        target_size (`int`, defaults to 128): output side, a power of two between 8 and R.
        dropout (`float`, defaults to 0.1): dropout probability of every block.
        first_kernel_size (`int`, defaults to 3): kernel of ``layer0``'s convolution.
        kernel_size (`int`, defaults to 5): kernel of the other convolutions.
    """

    def __init__(
        self,
        feature_channels: Sequence[int],
        out_channels: int = 32,
        target_size: int = 128,
        dropout: float = 0.1,
        first_kernel_size: int = 3,
        kernel_size: int = 5,
    ) -> None:
        super().__init__()
        channels = tuple(int(c) for c in feature_channels)
        if len(channels) < 2 or min(channels) < 1:
            raise ValueError(f"`feature_channels` must list >= 2 positive channel counts, got {channels}.")
        self.feature_channels = channels
        self.feature_resolutions = tuple(4 * 2**i for i in range(len(channels)))
        if target_size not in self.feature_resolutions[1:]:
            raise ValueError(
                f"`target_size` must be one of the feature resolutions {self.feature_resolutions[1:]}, got {target_size}."
            )
        self.out_channels = out_channels
        self.target_size = target_size
        self.dropout = dropout
        count = len(channels)
        for index in range(count - 1):
            block = _block(
                channels[index],
                channels[index + 1],
                first_kernel_size if index == 0 else kernel_size,
                dropout,
                upsample=self.feature_resolutions[index + 1] <= target_size,
            )
            self.add_module(f"layer{index}", block)
        last = channels[-1]
        head = _block(last, last, kernel_size, dropout, upsample=False)
        head.append(nn.Conv2d(last, out_channels, kernel_size, padding=kernel_size // 2))
        self.add_module(f"layer{count - 1}", head)
        self.init_weights()

    def init_weights(self, std: float = 0.02) -> None:
        """Upstream ``init_weights('normal', 0.02)``: conv weights N(0, std), biases 0; BatchNorm weights N(1, std),
        biases 0.

        Args:
            std (`float`, defaults to 0.02): standard deviation.
        """
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.normal_(module.weight, 1.0, std)
                nn.init.zeros_(module.bias)

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        """Decode the feature pyramid.

        Args:
            features (`Sequence[Tensor]`): n maps, the i-th of shape `(B, feature_channels[i], 4 * 2**i, 4 * 2**i)`;
                not modified.

        Returns:
            `Tensor` of shape `(B, out_channels, target_size, target_size)`.
        """
        if len(features) != len(self.feature_channels):
            raise ValueError(f"`features` must hold {len(self.feature_channels)} maps, got {len(features)}.")
        batch = features[0].shape[0]
        for index, (feature, channels, res) in enumerate(
            zip(features, self.feature_channels, self.feature_resolutions, strict=True)
        ):
            if feature.ndim != 4 or tuple(feature.shape) != (batch, channels, res, res):
                raise ValueError(
                    f"`features[{index}]` must have shape ({batch}, {channels}, {res}, {res}), got {tuple(feature.shape)}."
                )
        hs = features[0]
        for index in range(1, len(features)):
            feature = features[index]
            if feature.shape[-1] > self.target_size:
                size = (self.target_size, self.target_size)
                feature = F.interpolate(feature, size=size, mode="bilinear", align_corners=True)
            hs = getattr(self, f"layer{index - 1}")(hs) + feature
        return getattr(self, f"layer{len(features) - 1}")(hs)

    def extra_repr(self) -> str:
        return (
            f"feature_channels={self.feature_channels}, out_channels={self.out_channels}, "
            f"target_size={self.target_size}, dropout={self.dropout}"
        )


class FGNet(nn.Module):
    """FG-Net: face -> W+ (pSp) -> StyleGAN2 pyramid features -> AU heatmaps.

    Args:
        config (`FGNetConfig`): sizes, AU list and flags.
        encoder (`GradualStyleEncoder`, *optional*): a pSp encoder with ``config.n_styles`` styles of ``w_dim``;
            built from ``config`` (random weights) when `None`.
        generator (`StyleGAN2Generator`, *optional*): an unconditional generator at ``config.resolution``; built
            from ``config`` when `None`.
        interpreter (`PyramidInterpreter`, *optional*): built from ``config`` and the generator's channels when `None`.
    """

    def __init__(
        self,
        config: FGNetConfig,
        encoder: GradualStyleEncoder | None = None,
        generator: StyleGAN2Generator | None = None,
        interpreter: PyramidInterpreter | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        if encoder is None:
            encoder = GradualStyleEncoder(
                n_styles=config.n_styles,
                units=config.encoder_units,
                channels=config.encoder_channels,
                style_dim=config.w_dim,
                input_size=config.input_size,
                se_reduction=config.encoder_se_reduction,
            )
        if generator is None:
            generator = StyleGAN2Generator(
                z_dim=config.w_dim,
                c_dim=0,
                w_dim=config.w_dim,
                img_resolution=config.resolution,
                mapping_layers=config.mapping_layers,
                channel_base=config.channel_base,
                channel_max=config.channel_max,
            )
        if encoder.n_styles != generator.num_ws or encoder.style_dim != generator.w_dim:
            raise ValueError(
                f"encoder emits ({encoder.n_styles}, {encoder.style_dim}) codes but the generator needs "
                f"({generator.num_ws}, {generator.w_dim})."
            )
        if generator.img_resolution != config.resolution:
            raise ValueError(
                f"generator resolution {generator.img_resolution} differs from config.resolution {config.resolution}."
            )
        synthesis = generator.synthesis
        feature_channels = [synthesis.channels[res] for res in synthesis.block_resolutions]
        if interpreter is None:
            interpreter = PyramidInterpreter(
                feature_channels,
                out_channels=config.interpreter_out_channels,
                target_size=config.heatmap_size,
                dropout=config.interpreter_dropout,
                first_kernel_size=config.interpreter_first_kernel_size,
                kernel_size=config.interpreter_kernel_size,
            )
        if tuple(interpreter.feature_channels) != tuple(feature_channels):
            raise ValueError(
                f"interpreter reads channels {interpreter.feature_channels}, the generator gives {tuple(feature_channels)}."
            )
        self.encoder = encoder
        self.generator = generator
        self.interpreter = interpreter
        self.feature_indices = second_conv_feature_indices(config.resolution)

    @property
    def aus(self) -> tuple[int, ...]:
        """The AU of each used heatmap channel."""
        return self.config.aus

    def _check_images(self, images: Tensor) -> None:
        size = self.encoder.input_size
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, size, size):
            raise ValueError(f"`images` must have shape (B, 3, {size}, {size}), got {tuple(images.shape)}.")

    def encode(self, images: Tensor) -> Tensor:
        """W+ codes of aligned faces, re-mapped when ``config.remap_encoder_latents``.

        Args:
            images (`Tensor` of shape `(B, 3, input_size, input_size)`): FFHQ-aligned faces in [-1, 1].

        Returns:
            `Tensor` of shape `(B, n_styles, w_dim)`: the synthesis network's ws.
        """
        self._check_images(images)
        codes = self.encoder(images)
        if self.config.remap_encoder_latents:
            codes = remap_latents(self.generator.mapping, codes)
        return codes

    def pyramid_features(self, images: Tensor) -> list[Tensor]:
        """The generator's last convolution output at each resolution for the inverted faces.

        Args:
            images (`Tensor` of shape `(B, 3, input_size, input_size)`): aligned faces in [-1, 1].

        Returns:
            `list[Tensor]`: one map per resolution r = 4, ..., R, of shape `(B, channels[r], r, r)`.
        """
        ws = self.encode(images)
        _, features = self.generator.synthesis(ws, noise_mode=self.config.noise_mode, return_features=True)
        return [features[index] for index in self.feature_indices]

    def forward(self, images: Tensor) -> Tensor:
        """All heatmaps the interpreter produces.

        Args:
            images (`Tensor` of shape `(B, 3, input_size, input_size)`): aligned faces in [-1, 1].

        Returns:
            `Tensor` of shape `(B, interpreter_out_channels, heatmap_size, heatmap_size)`; channel k < K is AU
            ``aus[k]``.
        """
        return self.interpreter(self.pyramid_features(images))

    def au_heatmaps(self, images: Tensor) -> Tensor:
        """The K used heatmaps, clamped to [-1, 1] (decode with `fg_net.heatmaps.decode_heatmaps`).

        Args:
            images (`Tensor` of shape `(B, 3, input_size, input_size)`): aligned faces in [-1, 1].

        Returns:
            `Tensor` of shape `(B, K, heatmap_size, heatmap_size)`.
        """
        return self(images)[:, : self.config.num_aus].clamp(-1.0, 1.0)

    def save_pretrained(
        self,
        directory: str | Path,
        fold: int | None = None,
        select_on_test: bool | None = None,
        source: str | None = None,
    ) -> Path:
        """Write ``encoder.safetensors``, ``generator.safetensors``, ``interpreter.safetensors`` and ``config.json``.

        Args:
            directory (`str` or `Path`): output folder (created).
            fold (`int`, *optional*): the fold the weights were trained on (unknown for the released checkpoints).
            select_on_test (`bool`, *optional*): whether the epoch was selected on the test fold.
            source (`str`, *optional*): where the weights came from (a file name, "random", ...).

        Returns:
            `Path`: the folder.
        """
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for part in _PARTS:
            state = {k: v.detach().contiguous().cpu() for k, v in getattr(self, part).state_dict().items()}
            save_file(state, str(directory / f"{part}.safetensors"))
        metadata = {
            "model": dataclasses.asdict(self.config),
            "dataset": self.config.dataset,
            "aus": list(self.config.aus),
            "fold": fold,
            "select_on_test": select_on_test,
            "source": source,
        }
        (directory / "config.json").write_text(json.dumps(metadata, indent=2) + "\n")
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, map_location: str | torch.device = "cpu") -> FGNet:
        """Load a folder written by `save_pretrained` (every key must match).

        Args:
            directory (`str` or `Path`): the folder.
            map_location (`str` or `torch.device`, defaults to `"cpu"`): device for the tensors.

        Returns:
            `FGNet` in eval mode.
        """
        from safetensors.torch import load_file

        directory = Path(directory)
        metadata = read_pretrained_metadata(directory)
        model = cls(FGNetConfig(**metadata["model"]))
        for part in _PARTS:
            path = directory / f"{part}.safetensors"
            if not path.is_file():
                raise FileNotFoundError(f"{path} is missing; expected the output of FGNet.save_pretrained.")
            state = load_file(str(path), device=str(map_location))
            getattr(model, part).load_state_dict(state, strict=True)
        return model.to(map_location).eval()


def read_pretrained_metadata(directory: str | Path) -> dict[str, Any]:
    """Read ``config.json`` of a saved FG-Net folder.

    Args:
        directory (`str` or `Path`): the folder.

    Returns:
        `dict[str, Any]`: ``model`` (the `FGNetConfig` fields), ``dataset``, ``aus``, ``fold``, ``select_on_test`` and
        ``source``.
    """
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; expected a folder written by FGNet.save_pretrained.")
    metadata = json.loads(path.read_text())
    if not isinstance(metadata, dict) or not isinstance(metadata.get("model"), dict):
        raise ValueError(f"{path} must hold a JSON object with a 'model' object (the FGNetConfig fields).")
    return metadata
