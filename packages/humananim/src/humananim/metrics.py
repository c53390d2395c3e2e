"""Evaluation of an animation against its ground truth (humananim spec §6; issue 19 item 7): L1, PSNR, SSIM always;
LPIPS when its weights are given; FID and FVD through feature extractors the user gives.

- L1 / PSNR / SSIM: :func:`genblocks.metrics.frame_metrics` per frame, averaged.
- LPIPS (Zhang et al., arXiv 1801.03924; richzhang/PerceptualSimilarity ``lpips/pretrained_networks.py`` and
  ``lpips/lpips.py``, the VGG variant): VGG16 features at relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 of inputs shifted
  and scaled by LPIPS's ``ScalingLayer``, each unit-normalised over channels; the squared differences are weighted by
  the learned 1x1 convolutions ``lin0..lin4``, averaged over space and summed. Weights: a torchvision ``vgg16``
  state dict (``features.N.*`` keys) and LPIPS's ``vgg.pth`` (``linK.model.1.weight``), both local files.
- FID / FVD: the Fréchet distance between Gaussians fitted to features of the generated and the real frames (FID) or
  16-frame clips (FVD), with the extractor a TorchScript file the user gives
  (:func:`genblocks.metrics.load_feature_extractor`, re-exported here as ``load_extractor``; e.g. the Inception and
  I3D TorchScript exports commonly used for FID/FVD) called as ``extractor(x) -> (N, D)`` on ``x`` in [-1, 1], (N, 3, H, W) for FID
  and (N, 3, T, H, W) for FVD. The paper's exact protocol is not known ([unverified], spec §6): the numbers are for
  comparing runs of this code, not the paper's tables.

Anything missing is reported in ``notes`` instead of a number.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from genblocks.errors import InputError
from genblocks.metrics import extract_features, frame_metrics, frechet_distance
from genblocks.metrics import load_feature_extractor as load_extractor

__all__ = ["LPIPS", "EvaluationResult", "evaluate", "frechet_distance", "load_extractor"]

_VGG16_CONVS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
_TAPS = (3, 8, 15, 22, 29)  # torchvision vgg16.features indices of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
_CHANNELS = (64, 128, 256, 512, 512)


class LPIPS(nn.Module):
    """LPIPS with a VGG16 backbone (module docstring); random weights until :meth:`load` is called.

    Inputs are (N, 3, H, W) in [-1, 1]; the output is (N,), 0 for identical images.
    """

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for item in _VGG16_CONVS:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(channels, int(item), 3, padding=1), nn.ReLU(inplace=False)]
                channels = int(item)
        self.features = nn.Sequential(*layers[: _TAPS[-1] + 1])
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in _CHANNELS)
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False).eval()

    def load(self, backbone: str | Path, weights: str | Path) -> LPIPS:
        """Load a torchvision ``vgg16`` state dict and LPIPS's linear weights (``vgg.pth``), strictly."""
        vgg = _read_state_dict(backbone, "--lpips-backbone")
        features = {k.removeprefix("features."): v for k, v in vgg.items() if k.startswith("features.")}
        features = {k: v for k, v in features.items() if int(k.split(".")[0]) <= _TAPS[-1]}
        missing = self.features.load_state_dict(features, strict=False)
        if missing.missing_keys:
            raise InputError(
                f"--lpips-backbone {backbone}: not a torchvision vgg16 state dict (missing {missing.missing_keys[:3]})"
            )
        lin = _read_state_dict(weights, "--lpips-weights")
        try:
            for k, conv in enumerate(self.lins):
                assert isinstance(conv, nn.Conv2d)
                conv.weight.data.copy_(lin[f"lin{k}.model.1.weight"])
        except (KeyError, RuntimeError) as error:
            raise InputError(
                f"--lpips-weights {weights}: not LPIPS's vgg.pth (linK.model.1.weight) ({error})"
            ) from error
        return self

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """LPIPS distance per image pair: (N, 3, H, W) x 2 in [-1, 1] -> (N,)."""
        shift, scale = self.get_buffer("shift"), self.get_buffer("scale")
        a, b = (x.float() - shift) / scale, (y.float() - shift) / scale
        total = x.new_zeros(x.shape[0], dtype=torch.float32)
        tap = 0
        for index, layer in enumerate(self.features):
            a, b = layer(a), layer(b)
            if index == _TAPS[tap]:
                na = a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
                nb = b / (b.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
                total = total + self.lins[tap]((na - nb) ** 2).mean((1, 2, 3))
                tap += 1
        return total


def _read_state_dict(path: str | Path, option: str) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{option} {path}: no such file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise InputError(f"{option} {path}: not a readable state dict ({error})") from error
    if not isinstance(state, dict):
        raise InputError(f"{option} {path}: expected a state dict, got {type(state).__name__}")
    return state


@dataclass
class EvaluationResult:
    """Mean metrics over the frames (None where not computed) and notes on what was skipped.

    Args:
        l1: Mean absolute error in [0, 1] units.
        psnr: PSNR in dB.
        ssim: SSIM.
        lpips: LPIPS (lower is better).
        fid: Fréchet distance of frame features.
        fvd: Fréchet distance of clip features.
        frames: Number of frames compared.
        notes: Why a metric is missing.
    """

    l1: float
    psnr: float
    ssim: float
    lpips: float | None = None
    fid: float | None = None
    fvd: float | None = None
    frames: int = 0
    notes: list[str] = field(default_factory=list)


def evaluate(
    generated: torch.Tensor,
    reference: torch.Tensor,
    lpips: LPIPS | None = None,
    fid_extractor: Callable[[torch.Tensor], torch.Tensor] | None = None,
    fvd_extractor: Callable[[torch.Tensor], torch.Tensor] | None = None,
    clip_length: int = 16,
    batch_size: int = 16,
) -> EvaluationResult:
    """Compare generated frames with the ground truth.

    Args:
        generated: (F, 3, H, W) frames in [0, 1].
        reference: (F, 3, H, W) ground-truth frames in [0, 1] (same size; resize before).
        lpips: An :class:`LPIPS` with loaded weights, or ``None``.
        fid_extractor: Frame feature extractor ``(N, 3, H, W) in [-1, 1] -> (N, D)``, or ``None``.
        fvd_extractor: Clip feature extractor ``(N, 3, T, H, W) in [-1, 1] -> (N, D)``, or ``None``.
        clip_length: Frames per FVD clip (non-overlapping; at least 2 clips are needed).
        batch_size: Frames per extractor call.

    Returns:
        :class:`EvaluationResult`.
    """
    if generated.ndim != 4 or generated.shape != reference.shape or generated.shape[1] != 3:
        raise InputError(
            f"frames: expected generated and reference of one shape (F, 3, H, W), got {tuple(generated.shape)} and "
            f"{tuple(reference.shape)}"
        )
    per_frame = frame_metrics(generated.float(), reference.float())
    result = EvaluationResult(
        l1=float(np.mean(per_frame["l1"])),
        psnr=float(np.mean(per_frame["psnr"])),
        ssim=float(np.mean(per_frame["ssim"])),
        frames=int(generated.shape[0]),
    )
    fake, real = generated.float() * 2 - 1, reference.float() * 2 - 1
    if lpips is None:
        result.notes.append("LPIPS skipped: give --lpips-backbone (torchvision vgg16) and --lpips-weights (vgg.pth)")
    else:
        with torch.no_grad():
            values = [
                lpips(fake[i : i + batch_size], real[i : i + batch_size]) for i in range(0, len(fake), batch_size)
            ]
        result.lpips = float(torch.cat(values).mean())
    if fid_extractor is None:
        result.notes.append("FID skipped: give --fid-extractor (a TorchScript frame feature extractor)")
    elif len(fake) < 2:
        result.notes.append("FID skipped: needs at least 2 frames")
    else:
        result.fid = frechet_distance(
            extract_features(fid_extractor, real, batch_size), extract_features(fid_extractor, fake, batch_size)
        )
    clips = len(fake) // clip_length
    if fvd_extractor is None:
        result.notes.append("FVD skipped: give --fvd-extractor (a TorchScript clip feature extractor)")
    elif clips < 2:
        result.notes.append(f"FVD skipped: needs at least 2 clips of {clip_length} frames, got {len(fake)} frames")
    else:

        def as_clips(x: torch.Tensor) -> torch.Tensor:
            """(F, 3, H, W) -> (clips, 3, clip_length, H, W)."""
            return x[: clips * clip_length].reshape(clips, clip_length, *x.shape[1:]).permute(0, 2, 1, 3, 4)

        result.fvd = frechet_distance(
            extract_features(fvd_extractor, as_clips(real), 1), extract_features(fvd_extractor, as_clips(fake), 1)
        )
    for name in ("lpips", "fid", "fvd"):
        value = getattr(result, name)
        if value is not None and not math.isfinite(value):
            raise InputError(f"{name}: the extractor gave non-finite features")
    return result


def resize_frames(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(F, 3, H, W) -> (F, 3, height, width) by area (down) or bilinear (up) resampling."""
    if frames.shape[-2:] == (height, width):
        return frames
    mode = "area" if frames.shape[-2] >= height else "bilinear"
    return F.interpolate(frames, size=(height, width), mode=mode)
