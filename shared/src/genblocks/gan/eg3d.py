"""EG3D in one place: the tiny preset (what tests, demos and ``--config tiny`` build) and ``load_eg3d``, which reads
EG3D generator weights from a state dict (``.safetensors`` or a ``torch.save`` file, ``weights_only``) or from the
authors' ``network-snapshot.pkl`` through :func:`genblocks.gan.network_pickle.read_network_pickle` (never unpickling
their code). Used by diffportrait3d, omniavatar and agilegan3d.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from genblocks.errors import InputError
from genblocks.gan.triplane import TriPlaneGenerator

__all__ = ["TINY_EG3D", "load_eg3d", "read_eg3d_state_dict", "tiny_eg3d"]

TINY_EG3D: dict[str, Any] = {
    "z_dim": 32,
    "w_dim": 32,
    "img_resolution": 32,
    "backbone_resolution": 32,
    "plane_channels": 8,
    "channel_base": 256,
    "channel_max": 32,
    "decoder_hidden_features": 16,
    "decoder_output_features": 8,
    "num_samples": 8,
    "num_importance": 8,
    "neural_rendering_resolution": 16,
    "superresolution": "hybrid2x",
    "sr_channels": (16, 8),
    "plane_projection": "xy_yz_xz",
}
"""A tiny EG3D (32-px backbone, 16-px rendering, 32-px output, 8 + 8 samples per ray)."""


def tiny_eg3d(seed: int = 0, **overrides: Any) -> TriPlaneGenerator:
    """A seeded random tiny EG3D generator (:data:`TINY_EG3D` with ``overrides``), in eval mode."""
    torch.manual_seed(seed)
    return TriPlaneGenerator(**{**TINY_EG3D, **overrides}).eval()


def read_eg3d_state_dict(path: str | os.PathLike, network: str = "G_ema") -> dict[str, Tensor]:
    """The generator weights in ``path``: a ``.safetensors`` / ``torch.save`` state dict, or ``network`` of an NVIDIA
    network pickle (``.pkl``).

    Raises:
        InputError: The file is missing or holds no state dict / no such network.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"EG3D weights {path}: file not found")
    if path.suffix == ".pkl":
        from genblocks.gan.network_pickle import read_network_pickle

        return read_network_pickle(path, names=(network,))[network].state_dict
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise InputError(f"EG3D weights {path}: not a state dict torch can load safely ({error})") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise InputError(f"EG3D weights {path}: expected a mapping of parameter names to tensors")
    return state


def load_eg3d(
    path: str | os.PathLike, generator: TriPlaneGenerator | None = None, network: str = "G_ema"
) -> TriPlaneGenerator:
    """Load EG3D generator weights into ``generator`` (strictly: every key must match).

    Args:
        path: A state dict (``.safetensors``, ``.pt``/``.pth``) or an NVIDIA ``network-snapshot.pkl``.
        generator: The architecture; defaults to EG3D's FFHQ 512 generator.
        network: Which network of a pickle (``G_ema``, the one the authors sample from, or ``G``).

    Returns:
        ``generator`` with the weights, in eval mode.

    Raises:
        InputError: A missing file, or weights that do not fit the architecture (the message lists the first
            missing and unexpected keys and shape mismatches).
    """
    state = read_eg3d_state_dict(path, network)
    generator = generator if generator is not None else TriPlaneGenerator()
    own = generator.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [k for k in own.keys() & state.keys() if tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or shapes:
        raise InputError(
            f"EG3D weights {path} do not fit the generator: {len(missing)} missing (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]}), {len(shapes)} of another shape (e.g. {shapes[:3]})"
        )
    generator.load_state_dict(state)
    return generator.eval()
