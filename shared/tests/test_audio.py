"""Tests for genblocks.audio and the MP4 audio track of genblocks.media: numbers in, numbers out.

A 440 Hz sine at 16 kHz goes through WAV (read at its own rate and resampled), through an MP4's AAC track and back;
lengths, dominant frequencies (FFT peak within 1%) and frame rates are compared, and bad files must raise an
`InputError` that names them.
"""

from __future__ import annotations

import importlib.util
import re
from contextlib import AbstractContextManager

import numpy as np
import pytest
import torch

from genblocks.audio import read_audio, resample_audio, write_audio
from genblocks.errors import InputError
from genblocks.media import read_video, read_video_meta, write_video

pytest.importorskip("soundfile")
pytest.importorskip("soxr")
needs_ffmpeg = pytest.mark.skipif(importlib.util.find_spec("imageio_ffmpeg") is None, reason="needs imageio-ffmpeg")

RATE = 16_000


def _sine(frequency: float = 440.0, seconds: float = 1.0, rate: int = RATE, amplitude: float = 0.5) -> np.ndarray:
    return (amplitude * np.sin(2 * np.pi * frequency * np.arange(round(seconds * rate)) / rate)).astype(np.float32)


def _dominant_frequency(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1.0 / rate)[spectrum.argmax()])


def _frames(count: int) -> np.ndarray:
    return np.broadcast_to(np.linspace(0, 255, count, dtype=np.uint8)[:, None, None, None], (count, 32, 48, 3)).copy()


def _raises_naming(path) -> AbstractContextManager:
    return pytest.raises(InputError, match=re.escape(str(path)))


@pytest.mark.parametrize("target", [None, 16_000, 24_000, 8_000])
def test_wav_round_trip_and_resampling(tmp_path, target: int | None) -> None:
    sine = _sine()
    path = write_audio(tmp_path / "sine.wav", sine, RATE, subtype="FLOAT")
    samples, rate = read_audio(path, sample_rate=target)
    assert rate == (target or RATE) and samples.dtype == np.float32 and samples.shape == (rate,)  # 1 s
    assert _dominant_frequency(samples, rate) == pytest.approx(440.0, rel=0.01)
    if target in (None, RATE):
        np.testing.assert_array_equal(samples, sine)  # float WAV at its own rate: bit-exact
    else:  # band-limited resampling keeps the amplitude of a tone well below Nyquist
        assert np.sqrt(np.mean(samples[rate // 10 : -rate // 10] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.01)


def test_stereo_is_the_channel_mean(tmp_path) -> None:
    stereo = np.stack([_sine(440.0), _sine(1000.0, amplitude=0.25)], axis=1)
    path = write_audio(tmp_path / "stereo.flac", stereo, RATE, subtype="PCM_24")
    samples, rate = read_audio(path)
    assert rate == RATE and samples.shape == (RATE,)
    np.testing.assert_allclose(samples, stereo.mean(axis=1), atol=1e-6)  # 24-bit FLAC: within 2^-23
    float_wav = write_audio(tmp_path / "stereo.wav", stereo, RATE, subtype="FLOAT")
    np.testing.assert_array_equal(read_audio(float_wav)[0], stereo.mean(axis=1, dtype=np.float32))
    resampled = resample_audio(stereo, RATE, 24_000)
    assert resampled.shape == (24_000, 2) and resampled.dtype == np.float32


def test_read_audio_errors_name_the_file(tmp_path) -> None:
    text = tmp_path / "notes.wav"
    text.write_text("not audio at all\n")
    with _raises_naming(text):
        read_audio(text)
    missing = tmp_path / "missing.wav"
    with _raises_naming(missing):
        read_audio(missing)
    wav = write_audio(tmp_path / "sine.wav", _sine(), RATE)
    with pytest.raises(InputError, match="sample_rate"):
        read_audio(wav, sample_rate=0)
    with pytest.raises(InputError, match="sample_rate"):
        read_audio(wav, sample_rate=16_000.5)


@needs_ffmpeg
@pytest.mark.parametrize("fps", [12.5, 30.0])
def test_mp4_audio_track_round_trip(tmp_path, fps: float) -> None:
    frames = _frames(25)  # 2 s at 12.5 fps (audio padded with silence), 0.83 s at 30 fps (audio trimmed)
    path = write_video(tmp_path / "clip.mp4", frames, fps=fps, audio=(_sine(), RATE))
    meta = read_video_meta(path)
    assert (meta.fps, meta.num_frames, meta.width, meta.height) == (fps, 25, 48, 32)
    assert meta.has_audio and meta.audio_sample_rate == RATE
    video, read_fps = read_video(path)
    assert video.shape == frames.shape and read_fps == fps

    samples, rate = read_audio(path)
    expected = 25 / fps * RATE
    assert rate == RATE and abs(samples.shape[0] - expected) <= 0.03 * RATE  # within 30 ms of the video's length
    assert _dominant_frequency(samples[: min(RATE, samples.shape[0])], rate) == pytest.approx(440.0, rel=0.01)
    if fps == 12.5:  # the second half is the padding
        assert np.sqrt(np.mean(samples[RATE + RATE // 10 :] ** 2)) < 1e-3
        assert np.sqrt(np.mean(samples[RATE // 10 : RATE - RATE // 10] ** 2)) == pytest.approx(0.354, rel=0.05)
    resampled, rate = read_audio(path, sample_rate=24_000)
    assert rate == 24_000 and abs(resampled.shape[0] - 25 / fps * 24_000) <= 0.03 * 24_000
    assert _dominant_frequency(resampled[: min(24_000, resampled.shape[0])], rate) == pytest.approx(440.0, rel=0.01)


@needs_ffmpeg
def test_mp4_audio_from_a_file_a_tensor_and_an_odd_rate(tmp_path) -> None:
    wav = write_audio(tmp_path / "sine.wav", _sine(seconds=3.0), RATE)
    from_file = write_video(tmp_path / "from_file.mp4", _frames(10), fps=10, audio=wav)
    samples, rate = read_audio(from_file)
    assert rate == RATE and abs(samples.shape[0] - RATE) <= 0.03 * RATE  # 3 s of audio trimmed to 1 s

    stereo = torch.from_numpy(np.stack([_sine(rate=22_050), _sine(rate=22_050)], axis=1))
    from_tensor = write_video(tmp_path / "tensor.mp4", _frames(10), fps=10, audio=(stereo, 22_050))
    assert read_video_meta(from_tensor).audio_sample_rate == 22_050

    odd = write_video(tmp_path / "odd.mp4", _frames(10), fps=10, audio=(_sine(rate=8_001), 8_001))
    assert read_video_meta(odd).audio_sample_rate == 48_000  # AAC cannot carry 8001 Hz
    samples, rate = read_audio(odd)
    assert _dominant_frequency(samples, rate) == pytest.approx(440.0, rel=0.01)

    assert not read_video_meta(write_video(tmp_path / "silent.mp4", _frames(4), fps=8)).has_audio


@needs_ffmpeg
def test_video_errors_name_the_file(tmp_path) -> None:
    real = write_video(tmp_path / "real.mp4", _frames(25), fps=25, audio=(_sine(), RATE))
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(real.read_bytes()[:1024])
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    text = tmp_path / "text.mp4"
    text.write_text("not a video\n")
    for path in (truncated, empty, text, tmp_path / "missing.mp4"):
        for read in (read_video, read_video_meta, read_audio):
            with _raises_naming(path):
                read(path)
    silent = write_video(tmp_path / "silent.mp4", _frames(4), fps=8)
    with pytest.raises(InputError, match=re.escape(f"{silent}: has no audio track")):
        read_audio(silent)


def test_garbage_audio_is_reported_as_undecodable(tmp_path) -> None:
    """Non-empty garbage with an audio suffix: libsndfile says "File does not exist" for an MP3; the error says the
    file exists but is not audio, and names the formats expected."""
    noise = np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes()
    for name in ("garbage.mp3", "garbage.wav", "garbage.flac"):
        (tmp_path / name).write_bytes(noise)
        with pytest.raises(InputError) as error:
            read_audio(tmp_path / name)
        message = str(error.value)
        assert message.startswith(f"{tmp_path / name}: could not be decoded as audio; expected WAV, FLAC")
        assert "does not exist" not in message


def test_write_video_audio_arguments(tmp_path) -> None:
    with pytest.raises(InputError, match="GIF has no audio"):
        write_video(tmp_path / "clip.gif", _frames(4), fps=8, audio=(_sine(), RATE))
    with pytest.raises(InputError, match="sample rate"):
        write_video(tmp_path / "clip.mp4", _frames(4), fps=8, audio=(_sine(), 0))
    with pytest.raises(InputError, match="samples"):
        write_video(tmp_path / "clip.mp4", _frames(4), fps=8, audio=(np.zeros((2, 3, 4)), RATE))
    with pytest.raises(InputError, match="audio"):
        write_video(tmp_path / "clip.mp4", _frames(4), fps=8, audio=_sine())
    assert not (tmp_path / "clip.mp4").exists()  # checked before anything is written
