"""Audio front-ends: one feature row per video frame for several sample rates and frame rates, the mel filterbank
against its definition, MFCCs as the DCT of log-mel, and the refusals of unusable speech."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from dream_talk.audio_features import AudioFrontEnd, frame_count, load_speech, log_mel, mel_filterbank, mfcc
from dream_talk.config import AudioConfig
from genblocks.audio import write_audio
from genblocks.errors import InputError


@pytest.mark.parametrize("kind", ["mfcc", "mel", "wav2vec2"])
def test_one_row_per_frame_for_any_rate(kind: str) -> None:
    front = AudioFrontEnd(AudioConfig(kind=kind, wav2vec2_hidden=32))
    for rate in (8000, 16000, 22050, 44100):
        samples = np.random.default_rng(rate).standard_normal(int(rate * 1.3)).astype(np.float32) * 0.1
        for fps in (24.0, 25.0, 29.97, 60.0):
            features = front(samples, rate, fps)
            assert features.shape == (frame_count(samples.size, rate, fps), front.dim)
            assert features.shape[0] == int(1.3 * fps + 0.5)  # halves round up: 32.5 frames at 25 fps -> 33
            assert np.isfinite(features).all()
    assert front.dim == {"mfcc": 26, "mel": 80, "wav2vec2": 32}[kind]


def test_features_follow_the_audio_in_time() -> None:
    """A tone in the second half of the clip raises the log-mel energy only in the frames of that half."""
    rate, fps = 16000, 25.0
    samples = np.zeros(rate * 2, np.float32)
    samples[rate:] = 0.5 * np.sin(2 * np.pi * 440 * np.arange(rate) / rate)
    features = AudioFrontEnd(AudioConfig(kind="mel"))(samples, rate, fps)
    energy = features.mean(axis=1)
    assert energy.shape == (50,)
    assert energy[30:].min() > energy[:20].max() + 5


def test_mel_filterbank_is_triangular_and_area_normalised() -> None:
    bank = mel_filterbank(16000, 512, 40)
    assert bank.shape == (40, 257) and (bank >= 0).all()
    peaks = bank.argmax(axis=1)
    assert (np.diff(peaks) >= 0).all()
    bin_hz = 8000 / 256
    areas = bank.sum(axis=1) * bin_hz  # each triangle has area 1 (height 2 / bandwidth); wide ones sample it well
    np.testing.assert_allclose(areas[20:], 1.0, rtol=0.05)


def test_mfcc_is_orthonormal_dct_of_db_log_mel() -> None:
    rows = log_mel(np.random.default_rng(0).standard_normal(8000).astype(np.float32), 16000, 512, 400, 160, 40)
    coefficients = mfcc(rows, 40, deltas=False)
    db = 10 / np.log(10) * rows.astype(np.float64)
    np.testing.assert_allclose((coefficients**2).sum(axis=1), (db**2).sum(axis=1), rtol=1e-4)
    with_deltas = mfcc(rows, 13, deltas=True)
    np.testing.assert_allclose(with_deltas[:, 13:], np.gradient(with_deltas[:, :13], axis=0), rtol=1e-4, atol=1e-3)


def test_wav2vec2_width_mismatch_is_refused() -> None:
    from dream_talk.audio_features import tiny_wav2vec2

    with pytest.raises(InputError, match="hidden size is 16"):
        AudioFrontEnd(AudioConfig(kind="wav2vec2", wav2vec2_hidden=32), encoder=tiny_wav2vec2(16))


def test_load_speech_refuses_silence_low_rates_and_empty(tmp_path: Path) -> None:
    config = AudioConfig(kind="mfcc")
    speech = (0.3 * np.sin(np.arange(16000) / 5)).astype(np.float32)
    write_audio(tmp_path / "ok.wav", speech, 16000)
    samples, rate = load_speech(tmp_path / "ok.wav", config)
    assert rate == 16000 and samples.shape == (16000,)
    write_audio(tmp_path / "silent.wav", np.zeros(16000, np.float32), 16000)
    with pytest.raises(InputError, match="silent"):
        load_speech(tmp_path / "silent.wav", config)
    write_audio(tmp_path / "low.wav", speech[:4000], 4000)
    with pytest.raises(InputError, match="too low"):
        load_speech(tmp_path / "low.wav", replace(config, min_sample_rate=8000))
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(InputError):
        load_speech(tmp_path / "empty.wav", config)
    with pytest.raises(InputError, match="not found"):
        load_speech(tmp_path / "none.wav", config)
