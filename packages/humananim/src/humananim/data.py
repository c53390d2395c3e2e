"""``humananim prepare``: a TikTok / HumanDance-style folder of videos -> frames, keypoints and a manifest (issue 19
item 5).

Output layout under ``--out``::

    <video stem>/frames/000000.png ...   the frames (every ``stride``-th, at most ``max_frames``)
    <video stem>/keypoints.json          the module's keypoint JSON (humananim.keypoints), gaps filled and smoothed
    manifest.jsonl                       one row per video: {"video", "frames", "keypoints", "num_frames",
                                         "width", "height", "fps", "empty_frames"}

Keypoints come from a detector backend (``dwpose``, ``mediapipe``) or, with the ``json`` backend, from an existing
``<video stem>.json`` file or ``<video stem>/`` folder of OpenPose JSONs next to each video. A video that cannot be read
or where nobody is ever found is skipped with a warning and listed in ``skipped`` of the returned summary.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from genblocks.errors import InputError
from genblocks.media import read_video, write_image
from humananim.keypoints import Keypoints, fill_gaps, load_keypoints, save_keypoints, smooth_keypoints

__all__ = ["VIDEO_SUFFIXES", "PrepareSummary", "prepare_dataset"]

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".gif")


@dataclass
class PrepareSummary:
    """What :func:`prepare_dataset` wrote.

    Args:
        manifest: Path of ``manifest.jsonl``.
        rows: The manifest rows.
        skipped: ``"<video>: <reason>"`` for each video left out.
    """

    manifest: Path
    rows: list[dict[str, object]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def prepare_dataset(
    videos: str | Path,
    out: str | Path,
    detector: Callable[[np.ndarray], np.ndarray] | None = None,
    stride: int = 1,
    max_frames: int | None = None,
    min_confidence: float = 0.3,
    max_gap: int = 8,
    smooth_window: int = 5,
) -> PrepareSummary:
    """Extract frames and keypoints of every video in a folder and write the manifest.

    Args:
        videos: Folder of videos (searched recursively for :data:`VIDEO_SUFFIXES`).
        out: Output folder (layout in the module docstring).
        detector: A keypoint backend (``frame -> (128, 3)``); ``None`` reads ``<stem>.json`` / ``<stem>/`` next to
            each video (the ``json`` backend).
        stride: Keep every ``stride``-th frame.
        max_frames: Keep at most this many frames per video.
        min_confidence: See :func:`humananim.keypoints.fill_gaps`.
        max_gap: See :func:`humananim.keypoints.fill_gaps`.
        smooth_window: See :func:`humananim.keypoints.smooth_keypoints`.

    Returns:
        :class:`PrepareSummary`.

    Raises:
        InputError: ``videos`` is not a folder or holds no video, or no video could be prepared.
    """
    from humananim.keypoints_backends import extract_keypoints

    source, out = Path(videos), Path(out)
    if not source.is_dir():
        raise InputError(f"--videos {source}: not a folder")
    files = sorted(p for p in source.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
    if not files:
        raise InputError(f"--videos {source}: no video files ({', '.join(VIDEO_SUFFIXES)})")
    if stride < 1:
        raise InputError(f"data.frame_stride: expected a positive integer, got {stride}")
    out.mkdir(parents=True, exist_ok=True)
    summary = PrepareSummary(out / "manifest.jsonl")
    for video in files:
        name = video.relative_to(source).with_suffix("").as_posix().replace("/", "__")
        try:
            frames, fps = read_video(video)
            keep = np.arange(0, len(frames), stride)[:max_frames]
            frames = frames[keep]
            if detector is None:
                sidecar = video.with_suffix(".json") if video.with_suffix(".json").is_file() else video.with_suffix("")
                raw = load_keypoints(sidecar, size=(frames.shape[2], frames.shape[1]), fps=fps)
                if len(raw) < int(keep[-1]) + 1:
                    raise InputError(f"{sidecar}: {len(raw)} keypoint frames for a {int(keep[-1]) + 1}-frame video")
                raw = Keypoints(raw.points[keep], raw.width, raw.height, fps / stride)
            else:
                raw = extract_keypoints(frames, detector, fps / stride)
            filled, report = fill_gaps(raw, min_confidence, max_gap)
            keypoints = smooth_keypoints(filled, smooth_window, min_confidence)
        except InputError as error:
            logger.warning("prepare: skipping %s: %s", video, error)
            summary.skipped.append(f"{video}: {error}")
            continue
        folder = out / name
        for index, frame in enumerate(frames):
            write_image(folder / "frames" / f"{index:06d}.png", frame)
        save_keypoints(keypoints, folder / "keypoints.json")
        summary.rows.append(
            {
                "video": str(video),
                "frames": f"{name}/frames",
                "keypoints": f"{name}/keypoints.json",
                "num_frames": len(frames),
                "width": int(frames.shape[2]),
                "height": int(frames.shape[1]),
                "fps": fps / stride,
                "empty_frames": len(report.empty_frames),
            }
        )
        logger.info("prepare: %s: %d frames, %s", video.name, len(frames), report.summary())
    if not summary.rows:
        raise InputError(f"--videos {source}: no video could be prepared ({'; '.join(summary.skipped)})")
    summary.manifest.write_text("".join(json.dumps(row) + "\n" for row in summary.rows))
    return summary
