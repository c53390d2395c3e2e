"""``dream-talk eval``: generate every clip of a manifest from its audio and compare it with its tracked motion
(DREAM-Talk, arXiv 2312.13578, spec §6: the paper's tables could not be read, so the protocol is ours).

For each row of a ``dream-talk prepare`` manifest (``{"id", "audio", "motion", "emotion", ...}``, paths relative to
the manifest):

1. the style clip is the next row with the same emotion label (in manifest order, wrapping around; the row itself
   when it is the only one), so the model never sees the clip's own expressions unless it must;
2. the motion is generated from the row's audio at the tracked motion's frame rate and length, starting from the
   tracked first frame (the initial state, as the portrait's expression would be);
3. :mod:`dream_talk.metrics` compares it with the tracked motion: blendshape L2 (mouth, full), M-LMD / F-LMD on the
   proxy landmarks, the lip-sync proxy of the generated motion and of the tracked one (for reference), the style
   consistency with the style clip, and the SyncNet scores when a TorchScript expert is given.

``metrics.json`` holds every clip's numbers and their mean; ``motion/<id>.json`` the generated motions.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dream_talk.config import DreamTalkConfig
from genblocks.errors import InputError

__all__ = ["METRIC_NAMES", "EvalResult", "evaluate_manifest", "format_table", "read_manifest"]

METRIC_NAMES: tuple[str, ...] = (
    "bs_l2_mouth",
    "bs_l2_full",
    "m_lmd",
    "f_lmd",
    "lip_sync",
    "lip_sync_truth",
    "style_cosine",
)
"""The per-clip numbers ``eval`` always reports (plus ``syncnet_offset`` / ``syncnet_confidence`` with ``--syncnet``)."""


@dataclass
class EvalResult:
    """What :func:`evaluate_manifest` measured.

    Args:
        clips: One dict per evaluated row: ``id``, ``emotion``, ``style``, ``frames`` and the metrics.
        mean: The mean of every metric over the clips.
        path: The written ``metrics.json``.
    """

    clips: list[dict[str, Any]] = field(default_factory=list)
    mean: dict[str, float] = field(default_factory=dict)
    path: Path | None = None


def read_manifest(path: Path, option: str = "--manifest") -> list[dict[str, Any]]:
    """Read and check a JSONL manifest: every row an object with ``audio`` and ``motion`` files that exist.

    Returns:
        The rows, each with an ``id`` (the motion file's stem when the row has none).

    Raises:
        InputError: naming `option` (``--manifest``, ``train.manifest``) and the row number for a missing or empty file, a row that is not a JSON
            object, lacks ``audio`` / ``motion``, or names a file that does not exist.
    """
    if not path.is_file():
        raise InputError(f"{option} {path}: file not found (expected a JSONL manifest from dream-talk prepare)")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{option} {path}: not a readable text file ({error})") from error
    rows: list[dict[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise InputError(f"{option} {path}: row {number} is not JSON ({error.msg})") from error
        if not isinstance(row, dict):
            raise InputError(f"{option} {path}: row {number} is not a JSON object")
        missing = [key for key in ("audio", "motion") if not isinstance(row.get(key), str)]
        if missing:
            raise InputError(f"{option} {path}: row {number} lacks {missing[0]!r} (a path relative to the manifest)")
        for key in ("audio", "motion"):
            if not (path.parent / row[key]).is_file():
                raise InputError(f"{option} {path}: row {number}: {key} file {row[key]} not found")
        row.setdefault("id", Path(row["motion"]).stem)
        rows.append(row)
    if not rows:
        raise InputError(f"{option} {path}: holds no rows")
    return rows


def _style_row(rows: list[dict[str, Any]], index: int) -> dict[str, Any]:
    """The next row (wrapping) with the same emotion label as row ``index``; the row itself when it is alone."""
    emotion = str(rows[index].get("emotion", ""))
    for step in range(1, len(rows)):
        other = rows[(index + step) % len(rows)]
        if str(other.get("emotion", "")) == emotion:
            return other
    return rows[index]


def _mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def evaluate_manifest(
    config: DreamTalkConfig,
    manifest: str | Path,
    out: str | Path,
    weights: Path | None = None,
    lip_weights: Path | None = None,
    syncnet: Path | None = None,
    limit: int | None = None,
) -> EvalResult:
    """Evaluate the first ``limit`` rows of ``manifest`` (module docstring) and write ``out/metrics.json``.

    Args:
        config: The whole config (replaced by the weights folder's when ``weights`` is given).
        manifest: The JSONL manifest.
        out: Output folder (``metrics.json``, ``motion/<id>.json``).
        weights: A pipeline folder; ``None``: seeded random weights of ``config``.
        lip_weights: A lip run's ``trained/``.
        syncnet: A TorchScript lip-sync expert (:class:`dream_talk.metrics.SyncNetScorer`).
        limit: Evaluate only the first ``limit`` rows (``None``: all).

    Raises:
        InputError: a bad manifest or row (:func:`read_manifest`, unreadable motion or audio: naming the row), a bad
            ``limit``, weights folder or SyncNet file.
    """
    import torch

    from dream_talk.audio_features import AudioFrontEnd, load_speech
    from dream_talk.inference import load_pipeline
    from dream_talk.metrics import (
        SyncNetScorer,
        blendshape_l2,
        frame_energy,
        lip_sync_correlation,
        motion_landmark_distances,
        mouth_opening,
        style_consistency,
    )
    from dream_talk.motion import MotionSequence, read_motion

    manifest, out = Path(manifest), Path(out)
    if limit is not None and limit < 1:
        raise InputError(f"--limit {limit}: expected a positive number of rows")
    rows = read_manifest(manifest)
    scorer = SyncNetScorer.load(syncnet) if syncnet is not None else None
    pipe = load_pipeline(config, weights, lip_weights)
    config = pipe.config
    front = AudioFrontEnd(config.audio)
    m = config.motion
    result = EvalResult()
    for index, row in enumerate(rows[:limit]):
        style_row = _style_row(rows, index)
        try:
            truth = read_motion(manifest.parent / row["motion"], float(row.get("fps", m.fps)), m.pose_dim)
            style = read_motion(manifest.parent / style_row["motion"], float(style_row.get("fps", m.fps)), m.pose_dim)
            samples, rate = load_speech(manifest.parent / row["audio"], config.audio)
        except InputError as error:
            raise InputError(f"--manifest {manifest}: row {index + 1} ({row['id']}): {error}") from error
        features = front(samples, rate, truth.fps, truth.num_frames)
        generator = torch.Generator().manual_seed(config.inference.seed)
        output = pipe(
            torch.from_numpy(features)[None],
            torch.from_numpy(style.values)[None],
            initial_state=torch.from_numpy(truth.values[0])[None],
            generator=generator,
        )
        generated = output.motion[0].cpu().numpy().astype(np.float64)
        MotionSequence(generated, truth.fps).write_json(out / "motion" / f"{row['id']}.json")
        energy = frame_energy(samples, rate, truth.fps, truth.num_frames)
        clip: dict[str, Any] = {
            "id": row["id"],
            "emotion": row.get("emotion", ""),
            "style": style_row["id"],
            "frames": truth.num_frames,
            "bs_l2_mouth": blendshape_l2(generated, truth.values, "mouth"),
            "bs_l2_full": blendshape_l2(generated, truth.values, "full"),
            **motion_landmark_distances(generated, truth.values),
            "lip_sync": lip_sync_correlation(mouth_opening(generated), energy),
            "lip_sync_truth": lip_sync_correlation(mouth_opening(truth.values), energy),
            "style_cosine": style_consistency(pipe.style_encoder, style.values, generated),
        }
        if scorer is not None:
            clip |= scorer(generated, features)
        result.clips.append(clip)
    names = [name for name in result.clips[0] if name not in ("id", "emotion", "style", "frames")]
    result.mean = {name: _mean([float(clip[name]) for clip in result.clips]) for name in names}
    document = {
        "manifest": str(manifest),
        "weights": "random" if weights is None else str(weights),
        "lip_weights": None if lip_weights is None else str(lip_weights),
        "syncnet": None if syncnet is None else str(syncnet),
        "clips": result.clips,
        "mean": result.mean,
    }
    result.path = out / "metrics.json"
    result.path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return result


def format_table(result: EvalResult) -> str:
    """A plain-text table: one line per clip and a final ``mean`` line."""
    names = list(result.mean)
    width = max([len("mean"), *(len(str(clip["id"])) for clip in result.clips)])
    lines = [f"{'clip':<{width}}  " + "  ".join(f"{name:>14}" for name in names)]
    for clip in result.clips:
        lines.append(f"{clip['id']:<{width}}  " + "  ".join(f"{float(clip[name]):>14.4f}" for name in names))
    lines.append(f"{'mean':<{width}}  " + "  ".join(f"{result.mean[name]:>14.4f}" for name in names))
    return "\n".join(lines)
