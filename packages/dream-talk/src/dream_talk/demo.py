"""``dream-talk demo``: speech drives matplotlib's public-domain ``grace_hopper.jpg`` with the tiny random EmoDiff
(every output labelled "random weights"). The renderer is ``render.kind``: by default the portrait itself is warped
(a landmark-driven thin-plate spline, when the dlib ``face`` extra finds the face; otherwise the preview, portrait |
proxy avatar, with a note).

Speech: any WAV given with ``--audio``; otherwise a sentence (``--text``, default :data:`DEFAULT_TEXT`) spoken
offline by eSpeak NG (:func:`dream_talk.speech.synthesize_speech`) when the optional ``speech`` extra is installed
(GPL-3.0, loaded at run time only, never a dependency), else a synthetic speech-like signal (voiced syllables at about
4 per second with a gliding pitch and two formants). The summary's ``speech`` says which: ``"file"``,
``"espeak-ng"`` or ``"synthetic"``. The emotion style is a synthetic "happy" clip (smile, cheek squint, raised inner
brows, two blinks).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from dream_talk.config import DreamTalkConfig
from dream_talk.motion import MotionSequence, blendshape_index
from genblocks.errors import InputError

__all__ = ["DEFAULT_TEXT", "demo_portrait", "demo_speech", "happy_style", "run_demo", "synthetic_speech"]

DEFAULT_TEXT = "Hello, I am a talking portrait."
"""The sentence the demo speaks with eSpeak NG when given neither audio nor text (about 2.2 s at 150 wpm)."""


def demo_portrait() -> tuple[Path, str]:
    """The path of matplotlib's sample ``grace_hopper.jpg`` and its credit line."""
    import matplotlib.cbook

    path = Path(str(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))
    return path, "Grace Hopper (U.S. Navy photo, public domain; matplotlib sample data)"


def synthetic_speech(seconds: float = 2.4, sample_rate: int = 16000, seed: int = 0) -> np.ndarray:
    """A speech-like test signal: voiced syllables (harmonics of a gliding 110-180 Hz pitch shaped by two formants)
    under a 4 Hz syllable envelope with pauses.

    Returns:
        float32 (round(seconds * sample_rate),) in [-1, 1].
    """
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    pitch = 140 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / sample_rate
    formant_a = 500 + 300 * np.sin(2 * np.pi * 1.3 * t + rng.uniform(0, 6))
    formant_b = 1500 + 500 * np.sin(2 * np.pi * 0.9 * t + rng.uniform(0, 6))
    voice = np.zeros_like(t)
    for harmonic in range(1, 25):
        frequency = harmonic * pitch
        gain = np.exp(-(((frequency - formant_a) / 200) ** 2)) + 0.5 * np.exp(-(((frequency - formant_b) / 300) ** 2))
        voice += gain * np.sin(harmonic * phase) / harmonic**0.5
    envelope = np.clip(np.sin(2 * np.pi * 4.0 * t), 0, None) ** 0.7
    envelope *= (np.sin(2 * np.pi * 0.45 * t) > -0.6).astype(float)  # pauses between words
    signal = voice * envelope + 0.002 * rng.standard_normal(t.size)
    return (0.6 * signal / np.max(np.abs(signal))).astype(np.float32)


def happy_style(frames: int = 48, fps: float = 25.0, pose_dim: int = 6) -> MotionSequence:
    """A synthetic "happy" emotion-style clip: smile, cheek squint, raised inner brows, two blinks, a slow nod."""
    values = np.zeros((frames, 52 + pose_dim), np.float32)
    for name, weight in (("mouthSmileLeft", 0.6), ("mouthSmileRight", 0.6), ("cheekSquintLeft", 0.3)):
        values[:, blendshape_index(name)] = weight
    values[:, blendshape_index("cheekSquintRight")] = 0.3
    values[:, blendshape_index("browInnerUp")] = 0.2
    for blink in (frames // 3, 2 * frames // 3):
        for name in ("eyeBlinkLeft", "eyeBlinkRight"):
            values[blink - 1 : blink + 2, blendshape_index(name)] = [0.5, 1.0, 0.5]
    if pose_dim:
        values[:, 52] = 0.05 * np.sin(2 * np.pi * np.arange(frames) / frames)
    return MotionSequence(values, fps)


def demo_speech(text: str | None = None) -> tuple[np.ndarray, int, str, str]:
    """The demo's speech: ``text`` (default :data:`DEFAULT_TEXT`) spoken by eSpeak NG or, when the ``speech`` extra
    is missing and no ``text`` was asked for, the synthetic speech-like signal.

    Args:
        text: A sentence to speak; ``None`` speaks :data:`DEFAULT_TEXT` and allows the synthetic fallback.

    Returns:
        ``(samples, sample_rate, kind, description)``: float32 (N,) in [-1, 1], its rate in Hz, ``"espeak-ng"`` or
        ``"synthetic"``, and a line for README.txt.

    Raises:
        ImportError: ``text`` was given but the ``speech`` extra is not installed (the message names it).
        InputError: ``text`` is empty.
    """
    from dream_talk.speech import synthesize_speech

    spoken = DEFAULT_TEXT if text is None else text
    try:
        samples, rate = synthesize_speech(spoken)
    except ImportError:
        if text is not None:
            raise
        description = "synthetic speech-like signal (speech.wav; the `speech` extra speaks a sentence instead)"
        return synthetic_speech(), 16000, "synthetic", description
    return samples, rate, "espeak-ng", f'"{spoken}" spoken by eSpeak NG (GPL-3.0, the `speech` extra; speech.wav)'


def run_demo(
    config: DreamTalkConfig, out_dir: Path, audio: Path | None = None, text: str | None = None
) -> dict[str, Any]:
    """Run the demo into ``out_dir``: ``video.mp4`` (the warped portrait; ``preview.mp4`` when it fell back to the
    preview; with sound), ``curves.png``, ``motion.json``, ``motion.csv``,
    ``style.json``, ``strip.png``, ``README.txt`` and ``summary.json`` (with a ``headline``, and ``speech``:
    ``"file"``, ``"espeak-ng"`` or ``"synthetic"``).

    Args:
        config: The config (the tiny one by default: random weights).
        out_dir: Output folder.
        audio: A speech file to use instead of synthesised speech.
        text: A sentence for eSpeak NG to speak instead of :data:`DEFAULT_TEXT` (needs the ``speech`` extra).

    Raises:
        InputError: Both ``audio`` and ``text`` are given.
        ImportError: ``text`` is given without the ``speech`` extra.
    """
    from dream_talk.inference import generate_files
    from dream_talk.render import draw_avatar, proxy_landmarks
    from genblocks.audio import write_audio
    from genblocks.media import read_image, write_demo_card

    if audio is not None and text is not None:
        raise InputError("audio and text: expected one of them (a speech file, or a sentence to speak), not both")
    if audio is None:
        samples, rate, speech_kind, speech = demo_speech(text)
        out_dir.mkdir(parents=True, exist_ok=True)
        audio = write_audio(out_dir / "speech.wav", samples, rate)
    else:
        speech_kind, speech = "file", str(audio)
        out_dir.mkdir(parents=True, exist_ok=True)
    portrait, credit = demo_portrait()
    style_path = happy_style(fps=config.motion.fps, pose_dim=config.motion.pose_dim).write_json(out_dir / "style.json")
    # the portrait is a known face, and the check needs the face extra, which the demo extra does not bring
    config = replace(config, inference=replace(config.inference, check_face=False))
    label = {"espeak-ng": "Grace Hopper, eSpeak NG voice", "synthetic": "Grace Hopper, synthetic speech"}
    result = generate_files(config, audio, portrait, style_path, out_dir, label=label.get(speech_kind, "Grace Hopper"))
    summary = json.loads((out_dir / "summary.json").read_text())
    motion = result.motion.values
    jaw = motion[:, blendshape_index("jawOpen")]
    frames = [0, int(jaw.argmin()), int(jaw.argmax())]
    still = read_image(portrait)
    if result.render_kind == "preview":
        pictures = [draw_avatar(points, 256) for points in proxy_landmarks(motion[frames])]
        video = "preview.mp4 (portrait | proxy avatar)"
    else:  # the very renderer (with its reference expression) that drew the video
        pictures = list(result.renderer(still, motion[frames]))
        video = (
            "video.mp4 (the portrait warped by the motion: landmark-driven TPS with a mouth-interior fill)"
            if result.render_kind == "warp"
            else f"video.mp4 (frames of render.renderer {config.render.renderer!r})"
        )
    write_demo_card(
        out_dir,
        f"dream-talk demo: speech ({speech_kind}) + happy style -> blendshapes -> {summary['renderer']} "
        "(tiny random weights)",
        [still, *pictures],
        [
            "portrait",
            "frame 0 (the portrait's expression)",
            f"frame {frames[1]} (least jawOpen)",
            f"frame {frames[2]} (most jawOpen)",
        ],
        notes=[
            f"Portrait: {credit}. Speech: {speech}. Style: synthetic happy clip (style.json).",
            f"Files: {video}, with the audio; curves.png (blendshapes under the waveform), "
            "motion.json, motion.csv (LiveLinkFace columns), strip.png, summary.json.",
            *result.notes,
        ],
    )
    duration = summary["audio_seconds"]
    summary["portrait"] = credit
    summary["speech"] = speech_kind
    summary["headline"] = {
        "frames": summary["frames"],
        "motion_real_time_factor": result.seconds / duration,
        "render_real_time_factor": result.render_seconds / duration,
        "jaw_open_range": float(jaw.max() - jaw.min()),
    }
    written = {"strip.png", "README.txt", "style.json"} | ({"speech.wav"} if speech_kind != "file" else set())
    summary["files"] = sorted({*summary["files"], *written})
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary
