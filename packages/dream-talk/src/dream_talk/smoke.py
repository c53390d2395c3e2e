"""Installed-wheel smoke check: ``python -m dream_talk.smoke`` exits 0 when the tiny pipeline runs end to end.

It builds the tiny random pipeline, turns 0.5 s of a test tone into MFCC rows at 25 fps, samples the motion with
both samplers, checks shapes, finiteness and that lip refinement leaves the non-mouth channels bit-identical, and
checks that a ``save_pretrained`` / ``from_pretrained`` round trip reproduces the motion. No download, no face model.
"""

from __future__ import annotations

import sys
import tempfile

import numpy as np
import torch

from genblocks.smoke import SmokeError, run_smoke

__all__ = ["SmokeError", "main", "run_checks"]


def run_checks() -> list[str]:
    """Run the checks; return one line per passed check, raise `SmokeError` at the first failure."""
    from dream_talk.audio_features import AudioFrontEnd
    from dream_talk.config import load_shipped_config
    from dream_talk.motion import mouth_indices
    from dream_talk.pipeline_dream_talk import DreamTalkPipeline

    config = load_shipped_config("tiny")
    tone = (0.3 * np.sin(2 * np.pi * 220 * np.arange(8000) / 16000)).astype(np.float32)
    features = AudioFrontEnd(config.audio)(tone, 16000, 25.0)
    if features.shape != (13, config.audio.feature_dim):
        raise SmokeError(f"0.5 s at 25 fps gave features {features.shape}, expected (13, {config.audio.feature_dim})")
    passed = [f"audio front-end '{config.audio.kind}': {features.shape[0]} rows for 0.5 s at 25 fps"]
    pipe = DreamTalkPipeline.from_config(config)
    audio = torch.from_numpy(features)[None]
    style = torch.zeros(1, 6, config.motion.dim)
    for sampler in ("ddpm_ancestral", "ddim"):
        out = pipe(audio, style, sampler=sampler, generator=torch.Generator().manual_seed(0))
        if tuple(out.motion.shape) != (1, 13, 58) or not torch.isfinite(out.motion).all():
            raise SmokeError(f"{sampler}: motion {tuple(out.motion.shape)}, expected (1, 13, 58) finite values")
    others = [i for i in range(58) if i not in set(mouth_indices())]
    clamped = torch.cat([out.raw_motion[..., :52].clamp(0, 1), out.raw_motion[..., 52:]], dim=-1)
    if not torch.equal(out.motion[..., others], clamped[..., others]):
        raise SmokeError("lip refinement changed channels outside the mouth")
    passed.append("EmoDiff (both samplers, chained windows) + lip refinement: (1, 13, 58) motion")
    with tempfile.TemporaryDirectory() as folder:
        pipe.save_pretrained(folder)
        loaded = DreamTalkPipeline.from_pretrained(folder)
        again = loaded(audio, style, sampler="ddim", generator=torch.Generator().manual_seed(0)).motion
    if not torch.equal(again, out.motion):
        raise SmokeError("a save_pretrained / from_pretrained round trip changed the motion")
    passed.append("save_pretrained / from_pretrained reproduces the motion")
    return passed


def main() -> int:
    """Run the checks, report on stderr; exit status 0 when every check passed."""
    return run_smoke("dream-talk", run_checks)


if __name__ == "__main__":
    sys.exit(main())
