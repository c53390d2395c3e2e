"""One generation from files: speech + portrait + emotion-style clip -> motion files, an MP4 with the input audio
and a plot of the main blendshape curves under the waveform (what ``dream-talk speak`` and ``demo`` run).

Files written in the output folder: ``motion.json`` (ours, everything), ``motion.csv`` (LiveLinkFace columns),
the video with the input audio track at the motion's frame rate and labelled (``render.kind``): ``video.mp4`` (the
portrait warped by :class:`~dream_talk.warp_render.PortraitWarpRenderer`, or a learned renderer's frames) or
``preview.mp4`` (portrait | proxy
avatar, also the fallback when no face is found), ``curves.png`` and ``summary.json``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from dream_talk.config import DreamTalkConfig
from dream_talk.motion import ARKIT_BLENDSHAPES, MotionSequence, blendshape_index, read_motion
from genblocks.errors import InputError

__all__ = [
    "GenerationResult",
    "check_portrait_face",
    "choose_renderer",
    "generate_files",
    "load_pipeline",
    "load_style",
    "plot_curves",
    "portrait_initial_state",
]

_VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".gif")
_CURVES = ("jawOpen", "mouthSmileLeft", "mouthFunnel", "eyeBlinkLeft", "browInnerUp")


@dataclass
class GenerationResult:
    """What :func:`generate_files` made.

    Args:
        motion: The generated sequence.
        files: Written files, by role.
        seconds: Wall time of motion generation (audio features + sampling + lip refinement).
        render_seconds: Wall time of rendering the preview frames.
        notes: Lines for the user (random weights, the frame rate used).
        renderer: The renderer that drew the video (for the warp renderer: with the portrait's fitted expression as
            its ``reference``), so more frames of the same motion render as the video's do.
        render_kind: ``"warp"``, ``"learned"`` or ``"preview"``: what the renderer is.
    """

    motion: MotionSequence
    files: dict[str, Path]
    seconds: float
    render_seconds: float
    notes: list[str] = field(default_factory=list)
    renderer: Any = None
    render_kind: str = "preview"


@contextmanager
def _naming(option: str) -> Iterator[None]:
    """Re-raise an :class:`InputError` with ``option`` (``--audio``) in front, unless its message names it already."""
    try:
        yield
    except InputError as error:
        message = str(error)
        if message.startswith(option):
            raise
        raise InputError(f"{option} {message.removeprefix('image ')}") from error


def load_style(path: Path | None, config: DreamTalkConfig) -> np.ndarray:
    """The emotion-style clip (S, 52 + P): a ``.json`` / ``.csv`` / ``.npy`` motion file, or a neutral clip (zeros)
    when ``path`` is ``None``.

    A video is tracked on the fly (:func:`dream_talk.tracking.track_video`, genblocks' dlib analyser, the ``face``
    extra) at ``motion.fps``, from ``inference.style_neutral_frame``'s face when it is set.

    Raises:
        InputError: an unreadable video or one without a face, the face extra missing for a video, a missing file,
            missing or unknown columns.
    """
    m = config.motion
    if path is None:
        return np.zeros((config.emodiff.style_frames, m.dim), np.float32)
    if path.suffix.lower() in _VIDEO_SUFFIXES:
        from dream_talk.tracking import track_video

        try:
            tracked = track_video(path, fps=m.fps, neutral_frame=config.inference.style_neutral_frame)
        except InputError as error:
            raise InputError(f"--style {path}: style video not tracked: {error}") from error
        except ImportError as error:
            raise InputError(
                f"--style {path}: tracking a style video needs the face extra (pip install 'dream-talk[face]'); "
                "or pass the clip's blendshapes as .json, LiveLinkFace .csv or .npy"
            ) from error
        return tracked.motion.with_pose_dim(m.pose_dim).values
    return read_motion(path, m.fps, m.pose_dim).values


def check_portrait_face(portrait: np.ndarray, path: Path | str) -> None:
    """Raise :class:`InputError` naming ``--image`` when genblocks' dlib analyser finds no face in ``portrait``, or
    when the ``face`` extra that the check needs is not installed."""
    try:
        from genblocks.faces import DlibFaceAnalyzer

        analyzer = DlibFaceAnalyzer()
    except ImportError as error:
        raise InputError(
            f"--image {path}: checking the portrait for a face needs the face extra (pip install 'dream-talk[face]'); "
            "or pass --set inference.check_face=false"
        ) from error
    if not analyzer.analyze(portrait, embed=False):
        raise InputError(f"--image {path}: no face found; expected a portrait with one visible face")


def choose_renderer(config: DreamTalkConfig, portrait: np.ndarray) -> tuple[Any, str, list[str]]:
    """The renderer ``config.render`` asks for: ``(renderer, kind actually used, notes)``.

    ``warp`` finds the portrait's 68 landmarks with genblocks' dlib analyser; when the ``face`` extra is missing or
    no face is found it falls back to the preview, with a note saying why. ``learned`` imports and builds
    ``render.renderer`` from ``render.weights`` (:func:`dream_talk.render.load_renderer`, InputError when it does not
    give a Renderer).
    """
    from dream_talk.render import KeypointPreviewRenderer, load_renderer

    render = config.render
    if render.kind == "learned":
        return load_renderer(render.renderer, render.weights, config), "learned", []
    preview = KeypointPreviewRenderer(render.preview_size)
    if render.kind == "preview":
        return preview, "preview", []
    from dream_talk.warp_render import PortraitWarpRenderer, portrait_landmarks

    try:
        landmarks = portrait_landmarks(portrait)
    except ImportError:
        return preview, "preview", ["render.kind=warp needs the face extra (dlib landmarks); rendered the preview"]
    except InputError:
        return preview, "preview", ["render.kind=warp: no face found in the portrait; rendered the preview"]
    return PortraitWarpRenderer.from_config(render, landmarks), "warp", []


def portrait_initial_state(
    config: DreamTalkConfig, portrait: np.ndarray, renderer: Any
) -> tuple[np.ndarray | None, list[str]]:
    """The initial state ``inference.initial_state`` asks for: ``(state (52 + P,) or None for neutral, notes)``.

    ``"portrait"`` fits the portrait's landmarks (the warp renderer's, else found with genblocks' dlib analyser) with
    :func:`dream_talk.tracking.portrait_state` and makes it the warp renderer's reference, so a frame equal to it
    shows the portrait unchanged; without the ``face`` extra or a face it falls back to neutral, with a note.
    """
    if config.inference.initial_state == "neutral":
        return None, []
    from dream_talk.tracking import portrait_state
    from dream_talk.warp_render import PortraitWarpRenderer, portrait_landmarks

    landmarks = renderer.landmarks if isinstance(renderer, PortraitWarpRenderer) else None
    if landmarks is None:
        try:
            landmarks = portrait_landmarks(portrait)
        except ImportError:
            return None, ["inference.initial_state=portrait needs the face extra (dlib landmarks); started neutral"]
        except InputError:
            return None, ["inference.initial_state=portrait: no face found in the portrait; started neutral"]
    state = portrait_state(landmarks, config.motion.pose_dim)
    if isinstance(renderer, PortraitWarpRenderer):
        renderer.reference = state
    return state, []


def load_pipeline(config: DreamTalkConfig, weights: Path | None, lip_weights: Path | None = None) -> Any:
    """A :class:`~dream_talk.pipeline_dream_talk.DreamTalkPipeline` from a weights folder, or seeded random components
    of ``config``'s sizes when ``weights`` is ``None``."""
    from dream_talk.pipeline_dream_talk import DreamTalkPipeline

    if weights is None:
        if lip_weights is not None:
            raise InputError("--lip-weights needs --weights (the EmoDiff folder it completes)")
        return DreamTalkPipeline.from_config(config).to(config.inference.device)
    return DreamTalkPipeline.from_pretrained(weights, lip_weights).to(config.inference.device)


def plot_curves(path: Path, samples: np.ndarray, sample_rate: int, motion: MotionSequence, title: str) -> Path:
    """The waveform on top and the main blendshape curves plus head yaw below it, on one time axis (seconds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (wave, curves) = plt.subplots(2, 1, figsize=(9, 4.5), sharex=True, height_ratios=(1, 2))
    seconds = np.arange(samples.size) / sample_rate
    step = max(1, samples.size // 20000)
    wave.plot(seconds[::step], samples[::step], color="0.3", linewidth=0.5)
    wave.set_ylabel("audio")
    wave.set_title(title, fontsize=9)
    times = np.arange(motion.num_frames) / motion.fps
    for name in _CURVES:
        curves.plot(times, motion.values[:, blendshape_index(name)], label=name, linewidth=1.2)
    if motion.pose.shape[1] >= 2:
        curves.plot(times, motion.pose[:, 1], label="headYaw (rad)", linestyle="--", linewidth=1.0)
    curves.set_xlabel("seconds")
    curves.set_ylabel("weight")
    curves.legend(fontsize=7, ncol=3, loc="upper right")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def generate_files(
    config: DreamTalkConfig,
    audio_path: Path,
    image_path: Path,
    style_path: Path | None,
    out: Path,
    weights: Path | None = None,
    lip_weights: Path | None = None,
    fps: float | None = None,
    label: str | None = None,
) -> GenerationResult:
    """Generate the motion for ``audio_path`` and write the files of the module docstring into ``out``.

    Every input is read and checked before anything is written: missing, empty, silent or too-low-rate audio, an
    unreadable portrait or one without a face (``inference.check_face``), a bad style file or untrackable style video
    each raise :class:`InputError` naming the file.

    Args:
        config: The whole config (its ``audio`` section is replaced by the weights folder's when ``weights`` is
            given, so the front-end matches the model).
        audio_path: Speech (WAV, FLAC, MP3, an MP4's audio track).
        image_path: The portrait.
        style_path: Emotion-style clip, or ``None`` for a neutral style.
        out: Output folder.
        weights: A pipeline folder (``trained/`` of an EmoDiff run); ``None``: random weights of ``config``.
        lip_weights: ``trained/`` of a lip run.
        fps: Frame rate of the motion and the video; defaults to ``motion.fps``.
        label: Caption of the video, before the weights note (default: what the renderer shows).
    """
    import torch

    from dream_talk.audio_features import AudioFrontEnd, load_speech
    from genblocks.media import label_frames, read_image, write_video

    # 1. Read and check every input
    with _naming("--audio"):
        samples, rate = load_speech(audio_path, config.audio)
    with _naming("--image"):
        portrait = read_image(image_path)
    if config.inference.check_face:
        check_portrait_face(portrait, image_path)
    render = config.render  # the caller's, also when the weights folder brings its own config
    renderer, render_kind, render_notes = choose_renderer(config, portrait)
    pipe = load_pipeline(config, weights, lip_weights)
    initial, initial_notes = portrait_initial_state(
        replace(pipe.config, inference=config.inference), portrait, renderer
    )
    config = pipe.config
    with _naming("--style"):
        style = load_style(style_path, config)
    frame_rate = float(fps) if fps is not None else config.motion.fps
    if frame_rate <= 0:
        raise InputError(f"--fps {fps}: expected a positive frame rate")
    # 2. Audio features at the frame rate, then EmoDiff + lip refinement
    start = time.perf_counter()
    features = AudioFrontEnd(config.audio)(samples, rate, frame_rate)
    generator = torch.Generator().manual_seed(config.inference.seed)
    initial_state = None if initial is None else torch.from_numpy(initial)[None]
    output = pipe(
        torch.from_numpy(features)[None],
        torch.from_numpy(style)[None],
        initial_state=initial_state,
        generator=generator,
    )
    seconds = time.perf_counter() - start
    motion = MotionSequence(output.motion[0].numpy(), frame_rate)
    # 3. Files
    out.mkdir(parents=True, exist_ok=True)
    files = {"motion_json": motion.write_json(out / "motion.json"), "motion_csv": motion.write_csv(out / "motion.csv")}
    start = time.perf_counter()
    frames = renderer(portrait, motion.values)
    render_seconds = time.perf_counter() - start
    weights_note = "random weights" if weights is None else f"weights: {weights.name}"
    if render_kind == "learned":
        from dream_talk.render import check_frames

        frames = check_frames(frames, motion.num_frames, f"render.renderer {render.renderer!r}")
        caption = (label or f"rendered by {render.renderer}") + f" ({weights_note})"
        video_name = "video.mp4"
    elif render_kind == "warp":
        caption = (label or "portrait warped by the motion") + f" ({weights_note})"
        video_name = "video.mp4"
    else:
        caption = (label or "portrait | proxy avatar") + f" ({weights_note})"
        video_name = "preview.mp4"
    labelled = label_frames(frames, caption)
    files["video"] = write_video(out / video_name, labelled, fps=frame_rate, audio=(samples, rate))
    duration = samples.size / rate
    files["curves"] = plot_curves(
        out / "curves.png", samples, rate, motion, f"DREAM-Talk motion ({weights_note}), {duration:.2f} s"
    )
    notes = [
        f"{motion.num_frames} frames at {frame_rate:g} fps for {duration:.2f} s of audio ({weights_note})",
        *render_notes,
        *initial_notes,
    ]
    summary = {
        "frames": motion.num_frames,
        "fps": frame_rate,
        "audio_seconds": duration,
        "audio_sample_rate": rate,
        "seconds": seconds,
        "render_seconds": render_seconds,
        "renderer": render_kind,
        "initial_state": "neutral" if initial is None else "portrait",
        "real_time_factor": seconds / duration,
        "weights": "random" if weights is None else str(weights),
        "audio_front_end": config.audio.kind,
        "blendshapes": len(ARKIT_BLENDSHAPES),
        "jaw_open_mean": float(motion.values[:, blendshape_index("jawOpen")].mean()),
        "files": sorted(p.name for p in files.values()),
    }
    files["summary"] = out / "summary.json"
    files["summary"].write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return GenerationResult(motion, files, seconds, render_seconds, notes, renderer, render_kind)
