"""Starting points in: AgileGAN3D has no official checkpoint (spec agilegan3d §7), so the "original" weights are the
ones it starts from. :func:`convert_eg3d` reads an official EG3D ``network-snapshot.pkl`` (``G_ema``) with genblocks'
restricted unpickler (the pickle's embedded code is never run), loads it strictly into the configured EG3D and writes
``g3d.safetensors`` plus ``conversion_report.json``; point ``g3d.weights`` at either file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from safetensors.torch import save_file

from agilegan3d.config import G3DConfig
from genblocks.errors import InputError
from genblocks.gan import TriPlaneGenerator, read_eg3d_state_dict

__all__ = ["convert_eg3d", "eg3d_key_report"]


def eg3d_key_report(state: dict[str, Any], generator: TriPlaneGenerator) -> dict[str, list[str]]:
    """Keys of ``state`` against ``generator``: ``missing``, ``unexpected`` and ``shape_mismatch`` (sorted)."""
    own = generator.state_dict()
    return {
        "missing": sorted(set(own) - set(state)),
        "unexpected": sorted(set(state) - set(own)),
        "shape_mismatch": sorted(k for k in own.keys() & state.keys() if tuple(own[k].shape) != tuple(state[k].shape)),
    }


def convert_eg3d(
    source: str | os.PathLike, out_dir: str | os.PathLike, config: G3DConfig, network: str = "G_ema"
) -> dict[str, Any]:
    """An official EG3D pickle (or state dict) -> ``out_dir/g3d.safetensors`` in the TriPlaneGenerator layout.

    Args:
        source: ``network-snapshot.pkl`` / ``ffhq512-128.pkl`` (or ``.safetensors`` / ``.pt``).
        out_dir: Output folder (created).
        config: The architecture it must fit (``paper``: FFHQ-512, ``eg3d_legacy`` planes).
        network: Which network of the pickle.

    Returns:
        The report written to ``conversion_report.json`` (every key matched when its lists are empty).

    Raises:
        InputError: Unreadable source, or weights that do not fit the architecture (the report names the keys).
    """
    state = read_eg3d_state_dict(source, network)
    generator = TriPlaneGenerator(**config.generator_kwargs())
    report = eg3d_key_report(state, generator)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"source": str(source), "network": network, "tensors": len(state), **report}
    (out / "conversion_report.json").write_text(json.dumps(summary, indent=1))
    if report["missing"] or report["unexpected"] or report["shape_mismatch"]:
        counts = {key: len(value) for key, value in report.items()}
        raise InputError(f"{source}: the weights do not fit g3d ({counts}; see {out / 'conversion_report.json'})")
    generator.load_state_dict(state)
    save_file({k: v.detach().contiguous() for k, v in generator.state_dict().items()}, str(out / "g3d.safetensors"))
    return summary
