"""Load the authors' FG-Net checkpoints and the rosinality StyleGAN2 / pSp weights it starts from; write ours.

Formats (spec fg-net §7; ihp-lab/FG-Net@6067ab2 ``code/train_interpreter.py``, ``code/model_utils.py``):

- ``stylegan2-ffhq-config-f.pt``: rosinality ``{g, d, g_ema, latent_avg, ...}``; FG-Net uses ``g_ema``
  (`genblocks.gan.convert.load_rosinality_generator`).
- ``encoder.pt`` (pSp FFHQ encode): ``{opts, state_dict, latent_avg}``, encoder keys under ``encoder.``; upstream adds
  ``latent_avg`` (18, 512) to the encoder output with a forward hook (`genblocks.gan.psp.load_psp_encoder`).
- ``<exp>/model.pth``: ``{"interpreter", "g_all", "pspencoder"}``, three fine-tuned state dicts: the interpreter
  (keys ``layer{0..8}.{idx}``, the layout of `fg_net.modeling_fg_net.PyramidInterpreter`), the rosinality generator,
  and the pSp encoder without prefix and without ``latent_avg`` (which stays the one of ``encoder.pt``: pass it too).

Everything is read with ``torch.load(weights_only=True)`` (rosinality files may also hold an ``argparse.Namespace``,
which genblocks allows). Loaders report missing / unexpected / shape-mismatched keys; `convert_original_checkpoint`
writes `FGNet.save_pretrained`'s folder (three safetensors files and ``config.json`` with dataset, AU list, fold and
``select_on_test``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from fg_net.config import FGNetConfig, FGNetRunConfig
from fg_net.modeling_fg_net import FGNet
from genblocks.faces.arcface import StateDictReport
from genblocks.gan.convert import (
    RosinalityLoadReport,
    generator_to_rosinality,
    load_rosinality_generator,
    read_rosinality_checkpoint,
)
from genblocks.gan.psp import PSPCheckpoint, load_psp_encoder, read_psp_checkpoint

__all__ = [
    "ORIGINAL_KEYS",
    "FGNetLoadReport",
    "convert_original_checkpoint",
    "fg_net_to_original",
    "load_fg_net",
    "load_original_fg_net",
    "load_psp_weights",
    "load_stylegan2_weights",
    "read_original_checkpoint",
]

logger = logging.getLogger(__name__)

ORIGINAL_KEYS = ("interpreter", "g_all", "pspencoder")
"""The entries of an authors' ``model.pth``."""


@dataclass
class FGNetLoadReport:
    """Key matching of the three parts of an authors' checkpoint.

    Attributes:
        interpreter (`StateDictReport`): interpreter keys.
        generator (`RosinalityLoadReport`): generator keys (rosinality names for unexpected ones).
        encoder (`StateDictReport`): encoder keys (``latent_avg`` missing when no ``encoder.pt`` was given).
    """

    interpreter: StateDictReport = field(default_factory=StateDictReport)
    generator: RosinalityLoadReport = field(default_factory=RosinalityLoadReport)
    encoder: StateDictReport = field(default_factory=StateDictReport)

    @property
    def is_exact(self) -> bool:
        """Every key of every part matched."""
        return self.interpreter.complete and self.generator.is_exact and self.encoder.complete

    def summary(self) -> str:
        """One line per part: counts of missing, unexpected and mismatched keys (first few named)."""
        lines = []
        parts = (("interpreter", self.interpreter), ("generator", self.generator), ("encoder", self.encoder))
        for name, report in parts:
            lines.append(
                f"{name}: {len(report.missing_keys)} missing {report.missing_keys[:3]}, "
                f"{len(report.unexpected_keys)} unexpected {report.unexpected_keys[:3]}, "
                f"{len(report.mismatched_keys)} mismatched {report.mismatched_keys[:3]}"
            )
        return "\n".join(lines)


def _torch_load(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(
            f"{path} could not be read with torch.load(weights_only=True) ({error}); re-save it as a plain dict of "
            "state dicts (tensors only)."
        ) from error


def read_original_checkpoint(checkpoint: str | os.PathLike | Mapping[str, Any]) -> dict[str, dict[str, Tensor]]:
    """Read an authors' ``model.pth``: ``{"interpreter", "g_all", "pspencoder"}`` state dicts.

    Args:
        checkpoint (`str`, `os.PathLike` or mapping): the file, or its already loaded content.

    Returns:
        `dict[str, dict[str, Tensor]]` with the three entries (``module.`` prefixes removed).
    """
    loaded = checkpoint if isinstance(checkpoint, Mapping) else _torch_load(checkpoint)
    missing = [key for key in ORIGINAL_KEYS if key not in loaded]
    if missing:
        raise ValueError(
            f"not an FG-Net model.pth: missing {missing}; found {sorted(loaded)} (expected {ORIGINAL_KEYS})."
        )
    parts = {}
    for key in ORIGINAL_KEYS:
        state = loaded[key]
        if not isinstance(state, Mapping):
            raise ValueError(f"model.pth entry {key!r} must be a state dict, got {type(state).__name__}.")
        parts[key] = {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in state.items()}
    return parts


def _load_plain(module: nn.Module, state: Mapping[str, Tensor], ignore: tuple[str, ...] = ()) -> StateDictReport:
    own = module.state_dict()
    mismatched = sorted(
        f"{k}: checkpoint {tuple(v.shape)} vs expected {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    )
    loadable = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    module.load_state_dict(loadable, strict=False)
    return StateDictReport(
        missing_keys=sorted(k for k in own if k not in state and k not in ignore),
        unexpected_keys=sorted(k for k in state if k not in own),
        mismatched_keys=mismatched,
    )


def load_original_fg_net(
    model: FGNet,
    checkpoint: str | os.PathLike | Mapping[str, Any],
    encoder_checkpoint: str | os.PathLike | Mapping[str, Any] | None = None,
    strict: bool = False,
) -> FGNetLoadReport:
    """Load an authors' ``model.pth`` (and ``latent_avg`` from ``encoder.pt``) into ``model`` in place.

    Args:
        model (`FGNet`): a model of the checkpoint's shape (`fg_net.config.paper_config` for the released weights).
        checkpoint (`str`, `os.PathLike` or mapping): ``model.pth`` or its content.
        encoder_checkpoint (`str`, `os.PathLike` or mapping, *optional*): the pSp ``encoder.pt`` the run started
            from; only its ``latent_avg`` is used (``model.pth`` does not store it). Without it the encoder keeps its
            current ``latent_avg`` and the report lists it missing.
        strict (`bool`, defaults to `False`): raise a `ValueError` unless every key matches.

    Returns:
        `FGNetLoadReport`.
    """
    parts = read_original_checkpoint(checkpoint)
    report = FGNetLoadReport()
    report.interpreter = _load_plain(model.interpreter, parts["interpreter"])
    report.generator = load_rosinality_generator(model.generator, parts["g_all"])
    # model.pth has no latent_avg (upstream's mapping keeps no w_avg buffer either): not reported missing
    report.generator.missing_keys = [k for k in report.generator.missing_keys if k != "mapping.w_avg"]
    latent_avg = None
    if encoder_checkpoint is not None:
        latent_avg = read_psp_checkpoint(encoder_checkpoint).latent_avg
        if latent_avg is None:
            raise ValueError("`encoder_checkpoint` holds no latent_avg.")
    psp = PSPCheckpoint(
        opts={}, encoder_state_dict=dict(parts["pspencoder"]), decoder_state_dict={}, latent_avg=latent_avg
    )
    report.encoder = load_psp_encoder(model.encoder, psp)
    logger.info("FG-Net checkpoint loaded:\n%s", report.summary())
    if strict and not report.is_exact:
        raise ValueError(f"the FG-Net checkpoint does not match the model:\n{report.summary()}")
    return report


def load_stylegan2_weights(
    model: FGNet, checkpoint: str | os.PathLike | Mapping[str, Any], generator_key: str = "g_ema"
) -> RosinalityLoadReport:
    """Load a rosinality StyleGAN2 checkpoint (``g_ema`` and ``latent_avg``) into ``model.generator``.

    Args:
        model (`FGNet`): the model.
        checkpoint (`str`, `os.PathLike` or mapping): ``stylegan2-ffhq-config-f.pt`` or its content.
        generator_key (`str`, defaults to `"g_ema"`): which generator of the file to use.

    Returns:
        `RosinalityLoadReport`.
    """
    loaded = checkpoint if isinstance(checkpoint, Mapping) else read_rosinality_checkpoint(checkpoint)
    if generator_key not in loaded:
        raise ValueError(f"rosinality checkpoint has no {generator_key!r} entry (found {sorted(loaded)}).")
    return load_rosinality_generator(model.generator, loaded[generator_key], loaded.get("latent_avg"))


def load_psp_weights(model: FGNet, checkpoint: str | os.PathLike | Mapping[str, Any]) -> StateDictReport:
    """Load a pSp checkpoint's encoder and ``latent_avg`` into ``model.encoder`` (the decoder half is ignored).

    Args:
        model (`FGNet`): the model.
        checkpoint (`str`, `os.PathLike` or mapping): ``encoder.pt`` or its content.

    Returns:
        `StateDictReport`.
    """
    return load_psp_encoder(model.encoder, checkpoint)


def fg_net_to_original(model: FGNet) -> tuple[dict[str, dict[str, Tensor]], dict[str, Any]]:
    """Write ``model`` in the authors' layout (the inverse of `load_original_fg_net`).

    Args:
        model (`FGNet`): the model.

    Returns:
        `tuple`: the ``model.pth`` content ``{"interpreter", "g_all", "pspencoder"}`` (the encoder without
        ``latent_avg``) and a pSp ``encoder.pt`` content ``{"opts", "state_dict", "latent_avg"}`` holding the encoder
        and its ``latent_avg``.
    """
    encoder_state = {k: v.detach().clone() for k, v in model.encoder.state_dict().items() if k != "latent_avg"}
    model_pth = {
        "interpreter": {k: v.detach().clone() for k, v in model.interpreter.state_dict().items()},
        "g_all": generator_to_rosinality(model.generator),
        "pspencoder": encoder_state,
    }
    encoder_pt = {
        "opts": {"output_size": model.config.resolution, "encoder_type": "GradualStyleEncoder"},
        "state_dict": {f"encoder.{k}": v for k, v in encoder_state.items()},
        "latent_avg": model.encoder.latent_avg.detach().clone(),
    }
    return model_pth, encoder_pt


def convert_original_checkpoint(
    checkpoint: str | os.PathLike,
    output_dir: str | os.PathLike,
    config: FGNetConfig,
    encoder_checkpoint: str | os.PathLike | None = None,
    fold: int | None = None,
    select_on_test: bool | None = None,
    strict: bool = True,
) -> FGNetLoadReport:
    """Convert an authors' ``model.pth`` into our folder (``FGNet.save_pretrained``).

    Args:
        checkpoint (`str` or `os.PathLike`): ``model.pth``.
        output_dir (`str` or `os.PathLike`): the folder to write.
        config (`FGNetConfig`): the checkpoint's model (`paper_config("BP4D")` or ``("DISFA")`` for the releases).
        encoder_checkpoint (`str` or `os.PathLike`, *optional*): the pSp ``encoder.pt`` (for ``latent_avg``).
        fold (`int`, *optional*): the fold the weights were trained on, recorded in ``config.json`` (unknown for the
            released weights: ihp-lab/FG-Net#5).
        select_on_test (`bool`, *optional*): whether the epoch was chosen on the test fold (the authors' code does).
        strict (`bool`, defaults to `True`): refuse to write unless every key matched.

    Returns:
        `FGNetLoadReport`.
    """
    model = FGNet(config)
    report = load_original_fg_net(model, checkpoint, encoder_checkpoint, strict=strict)
    model.save_pretrained(output_dir, fold=fold, select_on_test=select_on_test, source=Path(checkpoint).name)
    return report


def load_fg_net(run: FGNetRunConfig, strict: bool = True) -> FGNet:
    """Build the model of a run and load its weights.

    Precedence: ``run.checkpoint`` (a `FGNet.save_pretrained` folder, or an authors' ``model.pth`` with
    ``run.encoder_checkpoint`` for ``latent_avg``), else ``run.stylegan_checkpoint`` and ``run.encoder_checkpoint``
    (the pretrained starting point of training; the interpreter starts random), else random weights seeded with
    ``run.training.seed`` when ``run.tiny_random``.

    Args:
        run (`FGNetRunConfig`): the run.
        strict (`bool`, defaults to `True`): raise when a checkpoint does not match the configured model.

    Returns:
        `FGNet`.
    """
    if run.checkpoint:
        path = Path(run.checkpoint)
        if path.is_dir():
            model = FGNet.from_pretrained(path)
            if tuple(model.config.aus) != tuple(run.model.aus):
                logger.warning("checkpoint AUs %s differ from the configured %s", model.config.aus, run.model.aus)
            return model
        model = FGNet(run.model)
        load_original_fg_net(model, path, run.encoder_checkpoint, strict=strict)
        return model
    if run.stylegan_checkpoint is None and run.encoder_checkpoint is None and not run.tiny_random:
        raise ValueError(
            "no weights configured: set `checkpoint`, or `stylegan_checkpoint` and `encoder_checkpoint`, or "
            "`tiny_random: true` for random weights."
        )
    torch.manual_seed(run.training.seed)
    model = FGNet(run.model)
    if run.stylegan_checkpoint is not None:
        generator_report = load_stylegan2_weights(model, run.stylegan_checkpoint)
        if strict and generator_report.mismatched_keys:
            raise ValueError(f"{run.stylegan_checkpoint} does not fit the configured generator: {generator_report}")
    if run.encoder_checkpoint is not None:
        encoder_report = load_psp_weights(model, run.encoder_checkpoint)
        if strict and encoder_report.mismatched_keys:
            raise ValueError(f"{run.encoder_checkpoint} does not fit the configured encoder: {encoder_report}")
    return model
