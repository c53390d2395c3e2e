"""The driving video through the command line: frame rate and audio track read from the file and kept in the
animation (``genblocks.media.read_video_meta`` / ``write_video(audio=...)``, ``genblocks.audio.read_audio``), and
empty or truncated MP4s refused with exit 2 and one line, nothing written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from xp_testing import RESOLUTION

from genblocks.audio import read_audio
from genblocks.media import read_video, read_video_meta, write_video
from x_portrait.cli import main, read_driving

FPS = 5.0  # neither 8 (our fallback) nor 25 (a common assumption): the rate must come from the file
FRAMES = 4
RATE = 16000
TONE = 440.0


def _driving(path: Path, with_audio: bool) -> Path:
    """A small synthetic MP4: FRAMES smooth colour frames at FPS, with a TONE-Hz sine at RATE Hz or silent."""
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, (FRAMES, 4, 4, 3), dtype=np.uint8)
    frames = np.stack(
        [np.asarray(Image.fromarray(c).resize((RESOLUTION, RESOLUTION), Image.Resampling.BICUBIC)) for c in coarse]
    )
    audio = None
    if with_audio:
        t = np.arange(round(FRAMES / FPS * RATE)) / RATE
        audio = (0.5 * np.sin(2 * np.pi * TONE * t)).astype(np.float32), RATE
    return write_video(path, frames, fps=FPS, audio=audio)


def _animate(tmp_path: Path, driving: Path, video_format: str, *overrides: str) -> list[str]:
    Image.fromarray(np.full((RESOLUTION, RESOLUTION, 3), 128, np.uint8)).save(tmp_path / "face.png")
    argv = ["animate", "--config", "tiny", "--image", str(tmp_path / "face.png"), "--driving", str(driving)]
    argv += ["--out", str(tmp_path / "out"), "--format", video_format, "--set", "inference.align_driving=false"]
    return [*argv, "inference.local_patches=false", "inference.num_inference_steps=1", *overrides]


def _dominant_frequency(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1.0 / rate)[int(np.argmax(spectrum))])


def test_read_driving_takes_rate_frames_and_audio_from_the_file(tmp_path: Path) -> None:
    silent = read_driving(_driving(tmp_path / "silent.mp4", with_audio=False))
    assert len(silent.frames) == FRAMES and silent.frames[0].shape == (RESOLUTION, RESOLUTION, 3)
    assert silent.fps == pytest.approx(FPS) and silent.audio is None
    sound = read_driving(_driving(tmp_path / "sound.mp4", with_audio=True), max_frames=2)
    assert len(sound.frames) == 2 and sound.fps == pytest.approx(FPS)
    assert sound.audio is not None
    samples, rate = sound.audio
    assert rate == RATE and abs(len(samples) / rate - FRAMES / FPS) < 0.1
    assert _dominant_frequency(samples, rate) == pytest.approx(TONE, abs=5.0)


def test_animate_keeps_the_driving_rate_and_audio_track(tmp_path: Path, capsys) -> None:
    driving = _driving(tmp_path / "talk.mp4", with_audio=True)
    assert main(_animate(tmp_path, driving, "mp4")) == 0
    assert "with the driving video's audio" in capsys.readouterr().out
    meta = read_video_meta(tmp_path / "out" / "animation.mp4")
    assert meta.fps == pytest.approx(FPS) and meta.num_frames == FRAMES
    assert meta.has_audio and meta.audio_sample_rate == RATE
    samples, rate = read_audio(tmp_path / "out" / "animation.mp4")
    assert abs(len(samples) / rate - FRAMES / FPS) < 0.1  # trimmed to the animation's length
    assert _dominant_frequency(samples, rate) == pytest.approx(TONE, abs=5.0)  # the driving tone, through AAC


def test_animate_from_a_silent_video_writes_no_audio(tmp_path: Path) -> None:
    driving = _driving(tmp_path / "silent.mp4", with_audio=False)
    assert main(_animate(tmp_path, driving, "mp4")) == 0
    meta = read_video_meta(tmp_path / "out" / "animation.mp4")
    assert meta.fps == pytest.approx(FPS) and meta.num_frames == FRAMES and not meta.has_audio


def test_animate_says_why_the_audio_is_left_out(tmp_path: Path, capsys) -> None:
    driving = _driving(tmp_path / "talk.mp4", with_audio=True)
    assert main(_animate(tmp_path, driving, "gif")) == 0
    assert "a GIF cannot hold it" in capsys.readouterr().err
    frames, fps = read_video(tmp_path / "out" / "animation.gif")
    assert len(frames) == FRAMES and fps == pytest.approx(FPS)
    assert main(_animate(tmp_path, driving, "mp4", "inference.fps=10")) == 0  # another rate: the audio would drift
    assert "would drift" in capsys.readouterr().err
    meta = read_video_meta(tmp_path / "out" / "animation.mp4")
    assert meta.fps == pytest.approx(10.0) and not meta.has_audio


@pytest.mark.parametrize("kind", ["empty", "truncated"])
def test_an_empty_or_truncated_mp4_exits_2_with_one_line_and_writes_nothing(tmp_path: Path, capsys, kind) -> None:
    bad = tmp_path / f"{kind}.mp4"
    if kind == "empty":
        bad.write_bytes(b"")
    else:
        whole = _driving(tmp_path / "whole.mp4", with_audio=True).read_bytes()
        bad.write_bytes(whole[: len(whole) // 2])
    assert main(_animate(tmp_path, bad, "mp4")) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("x-portrait animate: error: --driving") and str(bad) in lines[0], lines[0]
    assert not (tmp_path / "out").exists()  # nothing written to --out
