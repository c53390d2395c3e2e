"""Dataset preparation (``dream-talk prepare``): a folder of talking-face videos -> per-clip WAV audio, tracked
blendshape + head-pose motion and the JSONL manifest that ``dream-talk train`` (``train.manifest``) and
``dream-talk eval`` read. DREAM-Talk (arXiv 2312.13578) trains on MEAD and HDTF with blendshape labels from an
unnamed face tracker (spec §4; no upstream code is released); the tracker here is :mod:`dream_talk.tracking`.

Layouts of ``--videos`` (:func:`find_clips`):

- ``mead``: MEAD's ``<speaker>/video/front/<emotion>/level_<k>/<clip>.mp4``; emotion, speaker and intensity level
  come from the path, the clip id is ``<speaker>_<emotion>_level_<k>_<clip>``;
- ``hdtf``: HDTF's flat folder of ``<source>_<Name>_<index>.mp4``; the speaker is the name without its trailing
  ``_<index>``, the id is the file name;
- ``flat``: any video below the folder (searched recursively); the speaker is the file name, the id its path with
  ``/`` replaced by ``__``.

In every layout a labels CSV (``path,emotion,speaker``, an optional header row, paths relative to ``--videos``)
overrides the emotion and speaker of the clips it names; clips a layout does not label are ``neutral``.

Per clip (:func:`prepare_dataset`): the audio track is read (genblocks.audio.read_audio) and checked like speech at
inference (:func:`dream_talk.audio_features.load_speech`: not silent, not shorter than a frame), the face is tracked
at the video's own frame rate (:func:`dream_talk.tracking.track_video`), and ``audio/<id>.wav`` and
``motion/<id>.json`` are written. A clip that fails (no audio track, silent audio, no face in any frame, an
unreadable file) is skipped and listed with its reason in ``summary.json``; only when no clip succeeds is the run an
error. The manifest grows one line per finished clip, so a run that is stopped and started again on the same
``--out`` skips the clips already done (as does any re-run: the result is the same). A finished clip is redone only
when its files are gone or ``--smooth`` changed; its labels always follow the current layout and labels CSV.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from genblocks.errors import InputError

if TYPE_CHECKING:
    from genblocks.faces import FaceAnalyzer

__all__ = ["VIDEO_SUFFIXES", "Clip", "PrepareResult", "find_clips", "prepare_clip", "prepare_dataset", "read_labels"]

logger = logging.getLogger(__name__)

Layout = Literal["mead", "hdtf", "flat"]
VIDEO_SUFFIXES: tuple[str, ...] = (".mp4", ".mov", ".mkv", ".avi", ".webm")
"""File suffixes taken for videos (case-insensitive)."""
_MEAD_PATTERN = "<speaker>/video/front/<emotion>/level_<k>/<clip>.mp4"
_HDTF_INDEX = re.compile(r"_\d+$")


@dataclass(frozen=True)
class Clip:
    """One video of the dataset.

    Args:
        id: Unique name of the clip; its files are ``audio/<id>.wav`` and ``motion/<id>.json``.
        video: The video file.
        source: ``video`` relative to ``--videos`` (POSIX separators), as the manifest and labels name it.
        emotion: Emotion label (``neutral`` when the layout and labels give none).
        speaker: Speaker id.
        level: MEAD's emotion intensity level (``None`` in the other layouts).
    """

    id: str
    video: Path
    source: str
    emotion: str
    speaker: str
    level: int | None = None


@dataclass
class PrepareResult:
    """What :func:`prepare_dataset` wrote.

    Args:
        manifest: The JSONL manifest.
        rows: Its rows, in clip order.
        skipped: ``{"id", "video", "reason"}`` of every clip that failed.
        prepared: Ids of the clips processed in this run.
        reused: Ids of the clips found done in ``out`` and kept.
        summary: The ``summary.json`` document.
    """

    manifest: Path
    rows: list[dict[str, Any]]
    skipped: list[dict[str, str]] = field(default_factory=list)
    prepared: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


def read_labels(path: Path, videos: Path) -> dict[str, tuple[str, str]]:
    """Read a labels CSV: rows ``path,emotion,speaker`` (a first row ``path,emotion,speaker`` is a header).

    Args:
        path: The CSV.
        videos: The ``--videos`` folder the paths are relative to (absolute paths inside it are accepted too).

    Returns:
        ``{source: (emotion, speaker)}`` with ``source`` relative to ``videos``; an empty emotion or speaker cell
        keeps the layout's value (returned as ``""``).

    Raises:
        InputError: naming ``--labels`` and the row, for a missing or unreadable file, a row without three cells or
            one naming a video that does not exist.
    """
    if not path.is_file():
        raise InputError(f"--labels {path}: file not found (expected a CSV of path,emotion,speaker rows)")
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = [row for row in csv.reader(handle) if any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise InputError(f"--labels {path}: not a readable CSV ({error})") from error
    if rows and [cell.strip().lower() for cell in rows[0][:3]] == ["path", "emotion", "speaker"]:
        rows = rows[1:]
    labels: dict[str, tuple[str, str]] = {}
    for number, row in enumerate(rows, start=1):
        if len(row) != 3:
            raise InputError(f"--labels {path}: row {number} has {len(row)} cells (expected path,emotion,speaker)")
        name, emotion, speaker = (cell.strip() for cell in row)
        video = Path(name) if Path(name).is_absolute() else videos / name
        if not video.is_file():
            raise InputError(f"--labels {path}: row {number} names {name}, which is not a file in {videos}")
        try:
            source = video.resolve().relative_to(videos.resolve()).as_posix()
        except ValueError as error:
            raise InputError(f"--labels {path}: row {number} names {name}, which is outside {videos}") from error
        labels[source] = (emotion, speaker)
    return labels


def _videos_below(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)


def find_clips(videos: Path, layout: Layout = "mead", labels: Path | None = None) -> list[Clip]:
    """The clips of a video folder in one of the layouts of the module docstring, sorted by id.

    Args:
        videos: The dataset folder.
        layout: ``"mead"``, ``"hdtf"`` or ``"flat"``.
        labels: Optional labels CSV (:func:`read_labels`); its emotion and speaker win over the layout's.

    Raises:
        InputError: naming ``--videos`` when the folder is missing or holds no video of the layout, or when two
            videos get the same id; naming ``--labels`` for a bad labels file.
    """
    if not videos.is_dir():
        raise InputError(f"--videos {videos}: folder not found (expected a folder of talking-face videos)")
    if layout not in ("mead", "hdtf", "flat"):
        raise InputError(f"--layout {layout!r}: expected mead, hdtf or flat")
    clips: list[Clip] = []
    if layout == "mead":
        for path in _videos_below(videos):
            parts = path.relative_to(videos).parts
            match = re.fullmatch(r"level_(\d+)", parts[-2]) if len(parts) == 6 else None
            if match is None or parts[1:3] != ("video", "front"):
                continue
            speaker, emotion = parts[0], parts[3]
            clip_id = f"{speaker}_{emotion}_level_{match.group(1)}_{path.stem}"
            source = path.relative_to(videos).as_posix()
            clips.append(Clip(clip_id, path, source, emotion, speaker, int(match.group(1))))
    elif layout == "hdtf":
        for path in sorted(p for p in videos.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES):
            speaker = _HDTF_INDEX.sub("", path.stem) or path.stem
            clips.append(Clip(path.stem, path, path.name, "neutral", speaker))
    else:
        for path in _videos_below(videos):
            source = path.relative_to(videos).as_posix()
            clip_id = source.rsplit(".", 1)[0].replace("/", "__")
            clips.append(Clip(clip_id, path, source, "neutral", path.stem))
    if not clips:
        expected = {"mead": _MEAD_PATTERN, "hdtf": "<name>.mp4 files in the folder", "flat": "video files below it"}
        raise InputError(f"--videos {videos}: no videos found in the {layout} layout (expected {expected[layout]})")
    if labels is not None:
        table = read_labels(labels, videos)
        relabelled = []
        for clip in clips:
            emotion, speaker = table.get(clip.source, ("", ""))
            relabelled.append(
                Clip(clip.id, clip.video, clip.source, emotion or clip.emotion, speaker or clip.speaker, clip.level)
            )
        clips = relabelled
    seen: dict[str, str] = {}
    for clip in clips:
        if clip.id in seen:
            raise InputError(f"--videos {videos}: {seen[clip.id]} and {clip.source} both make clip id {clip.id!r}")
        seen[clip.id] = clip.source
    return sorted(clips, key=lambda clip: clip.id)


def prepare_clip(
    clip: Clip,
    out: Path,
    smooth_sigma: float = 0.0,
    analyzer: FaceAnalyzer | None = None,
    neutral_frame: int | None = None,
) -> dict[str, Any]:
    """Extract, check and track one clip; write ``out/audio/<id>.wav`` and ``out/motion/<id>.json``.

    The audio is read and checked before the (slower) tracking, and both files are written only when both succeed.

    Args:
        clip: The clip.
        out: The dataset folder.
        smooth_sigma: Gaussian smoothing of the tracked motion over frames (0: none).
        analyzer: The face analyser (default: genblocks' dlib analyser; pass one to reuse it across clips).
        neutral_frame: Track from this frame's face instead of the proxy's template
            (:func:`dream_talk.tracking.track_landmarks`); ``None``: the template.

    Returns:
        The manifest row: ``id``, ``audio``, ``motion`` (relative to ``out``), ``emotion``, ``speaker``, ``level``
        (MEAD), ``video`` (relative to ``--videos``), ``fps``, ``frames``, ``gap_frames``, ``audio_seconds``,
        ``smooth_sigma``, ``neutral_frame``.

    Raises:
        InputError: the clip cannot be used (no audio track, silent or too short audio, no face in any frame, an
            unreadable video); the message says why.
        ImportError: the ``face`` extra (dlib) is not installed.
    """
    from dream_talk.audio_features import load_speech
    from dream_talk.config import AudioConfig
    from dream_talk.tracking import track_video
    from genblocks.audio import write_audio
    from genblocks.media import read_video_meta

    meta = read_video_meta(clip.video)
    if not meta.has_audio:
        raise InputError(f"{clip.source}: no audio track")
    samples, rate = load_speech(clip.video, AudioConfig())
    tracked = track_video(clip.video, smooth_sigma=smooth_sigma, analyzer=analyzer, neutral_frame=neutral_frame)
    audio = Path("audio") / f"{clip.id}.wav"
    motion = Path("motion") / f"{clip.id}.json"
    write_audio(out / audio, samples, rate)
    tracked.motion.write_json(out / motion)
    row: dict[str, Any] = {
        "id": clip.id,
        "audio": audio.as_posix(),
        "motion": motion.as_posix(),
        "emotion": clip.emotion,
        "speaker": clip.speaker,
    }
    if clip.level is not None:
        row["level"] = clip.level
    row |= {
        "video": clip.source,
        "fps": tracked.motion.fps,
        "frames": tracked.motion.num_frames,
        "gap_frames": tracked.num_gaps,
        "audio_seconds": round(samples.size / rate, 4),
        "smooth_sigma": smooth_sigma,
        "neutral_frame": neutral_frame,
    }
    return row


def _done_rows(manifest: Path, out: Path) -> dict[str, dict[str, Any]]:
    """Rows of an earlier run whose files are still there (a half-written last line is ignored)."""
    if not manifest.is_file():
        return {}
    rows: dict[str, dict[str, Any]] = {}
    for line in manifest.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and all((out / str(row.get(key, ""))).is_file() for key in ("audio", "motion")):
            rows[str(row.get("id"))] = row
    return rows


def _write_atomic(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def prepare_dataset(
    videos: str | Path,
    out: str | Path,
    layout: Layout = "mead",
    labels: str | Path | None = None,
    smooth_sigma: float = 0.0,
    analyzer: FaceAnalyzer | None = None,
    progress: bool = True,
    neutral_frame: int | None = None,
) -> PrepareResult:
    """Prepare every clip of ``videos`` into ``out`` (module docstring): ``audio/``, ``motion/``, ``manifest.jsonl``
    and ``summary.json``.

    Args:
        videos: The dataset folder.
        out: The output folder; clips already in its manifest (with their files, tracked with the same
            ``smooth_sigma`` and ``neutral_frame``) are kept, not redone.
        layout: ``"mead"``, ``"hdtf"`` or ``"flat"`` (:func:`find_clips`).
        labels: Optional labels CSV (:func:`read_labels`).
        smooth_sigma: Gaussian smoothing of the tracked motion over frames (0: none).
        analyzer: The face analyser (default: one genblocks dlib analyser for the whole run).
        progress: Show a tqdm progress bar.
        neutral_frame: Track every clip from this frame's face (:func:`prepare_clip`); a clip whose frame has no face
            is skipped with the reason.

    Returns:
        A :class:`PrepareResult`.

    Raises:
        InputError: bad ``videos`` / ``labels`` (:func:`find_clips`), a negative ``smooth_sigma``, the ``face`` extra
            missing, or no clip prepared (the message gives the first reasons); nothing is written then.
    """
    from tqdm.auto import tqdm

    videos, out = Path(videos), Path(out)
    if smooth_sigma < 0:
        raise InputError(f"--smooth {smooth_sigma}: expected >= 0")
    clips = find_clips(videos, layout, None if labels is None else Path(labels))
    manifest = out / "manifest.jsonl"
    done = _done_rows(manifest, out)
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    prepared: list[str] = []
    reused: list[str] = []
    for clip in tqdm(clips, desc="dream-talk prepare", unit="clip", disable=not progress):
        earlier = done.get(clip.id)
        tracking = (smooth_sigma, neutral_frame)
        if earlier is not None and (earlier.get("smooth_sigma", 0.0), earlier.get("neutral_frame")) == tracking:
            # the files stand; the labels follow this run's layout and labels CSV
            labels_now = {"emotion": clip.emotion, "speaker": clip.speaker, "video": clip.source}
            rows.append(earlier | labels_now | ({} if clip.level is None else {"level": clip.level}))
            reused.append(clip.id)
            continue
        if analyzer is None:
            try:
                from genblocks.faces import DlibFaceAnalyzer

                analyzer = DlibFaceAnalyzer()
            except ImportError as error:
                raise InputError(
                    f"--videos {videos}: tracking needs the face extra (pip install 'dream-talk[face]')"
                ) from error
        try:
            row = prepare_clip(clip, out, smooth_sigma, analyzer, neutral_frame)
        except InputError as error:
            reason = str(error).removeprefix(f"{clip.video}: ").removeprefix(f"{clip.source}: ")
            logger.info("skipped %s: %s", clip.source, reason)
            skipped.append({"id": clip.id, "video": clip.source, "reason": reason})
            continue
        with manifest.open("a", encoding="utf-8") as handle:  # a stopped run keeps what it finished
            handle.write(json.dumps(row) + "\n")
        rows.append(row)
        prepared.append(clip.id)
    if not rows:
        reasons = "; ".join(f"{s['video']}: {s['reason']}" for s in skipped[:3])
        raise InputError(f"--videos {videos}: none of the {len(clips)} clips could be prepared ({reasons})")
    _write_atomic(manifest, "".join(json.dumps(row) + "\n" for row in rows))
    emotions: dict[str, int] = {}
    for row in rows:
        emotions[row["emotion"]] = emotions.get(row["emotion"], 0) + 1
    summary: dict[str, Any] = {
        "videos": str(videos),
        "layout": layout,
        "smooth_sigma": smooth_sigma,
        "neutral_frame": neutral_frame,
        "clips": len(rows),
        "found": len(clips),
        "prepared_now": len(prepared),
        "reused": len(reused),
        "skipped": len(skipped),
        "skipped_clips": skipped,
        "frames": sum(int(row["frames"]) for row in rows),
        "gap_frames": sum(int(row["gap_frames"]) for row in rows),
        "emotions": dict(sorted(emotions.items())),
        "speakers": sorted({str(row["speaker"]) for row in rows}),
        "files": ["audio/", "manifest.jsonl", "motion/", "summary.json"],
    }
    _write_atomic(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return PrepareResult(manifest, rows, skipped, prepared, reused, summary)
