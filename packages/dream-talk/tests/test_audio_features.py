"""Audio front-ends: one feature row per video frame for several sample rates and frame rates, log-mel
and MFCCs against librosa called directly, their alignment to frame times, and the refusals of unusable speech."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from dream_talk.audio_features import AudioFrontEnd, frame_count, load_speech, log_mel, mfcc
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


def test_log_mel_and_mfcc_match_librosa_called_directly() -> None:
    """The front end's rows are librosa's: melspectrogram (Slaney, power 2), power_to_db without top_db clipping,
    the orthonormal DCT-II and 9-frame deltas, with the config's n_fft / win / hop / n_mels / n_mfcc."""
    librosa = pytest.importorskip("librosa")
    c = AudioConfig(kind="mfcc", n_mels=40)
    samples = np.random.default_rng(0).standard_normal(8000).astype(np.float32)
    rows = log_mel(samples, 16000, c.n_fft, c.win_length, c.hop_length, c.n_mels)
    power = librosa.feature.melspectrogram(
        y=samples, sr=16000, n_fft=c.n_fft, hop_length=c.hop_length, win_length=c.win_length, n_mels=c.n_mels
    )
    assert rows.shape == (1 + 8000 // c.hop_length, 40) == power.T.shape
    np.testing.assert_allclose(rows, np.log(power.T), rtol=1e-5, atol=1e-4)
    reference = librosa.feature.mfcc(S=librosa.power_to_db(power, top_db=None), n_mfcc=c.n_mfcc)
    coefficients = mfcc(rows, c.n_mfcc, deltas=True)
    assert coefficients.shape == (51, 26)
    np.testing.assert_allclose(coefficients[:, :13], reference.T, rtol=1e-4, atol=1e-2)
    delta = librosa.feature.delta(reference, mode="nearest")
    np.testing.assert_allclose(coefficients[:, 13:], delta.T, rtol=1e-4, atol=1e-2)
    # the orthonormal DCT keeps the energy of the dB log-mel rows when all coefficients are kept
    db = 10 / np.log(10) * rows.astype(np.float64)
    np.testing.assert_allclose((mfcc(rows, 40, deltas=False) ** 2).sum(axis=1), (db**2).sum(axis=1), rtol=1e-4)


def test_mel_rows_are_aligned_to_frame_times() -> None:
    """At 100 fps with a 10 ms hop, frame j ((j + 0.5) / 100 s) lies midway between rows j and j + 1."""
    c = AudioConfig(kind="mel", n_mels=40)
    samples = np.random.default_rng(1).standard_normal(16000).astype(np.float32) * 0.1
    rows = log_mel(samples, 16000, c.n_fft, c.win_length, c.hop_length, c.n_mels)
    features = AudioFrontEnd(c)(samples, 16000, 100.0)
    assert features.shape == (100, 40)
    np.testing.assert_allclose(features, (rows[:-1] + rows[1:]) / 2, rtol=1e-5, atol=1e-4)


def test_wav2vec2_width_mismatch_is_refused() -> None:
    from dream_talk.audio_features import tiny_wav2vec2

    with pytest.raises(InputError, match="hidden size is 16"):
        AudioFrontEnd(AudioConfig(kind="wav2vec2", wav2vec2_hidden=32), encoder=tiny_wav2vec2(16))


def test_a_saved_hubert_folder_loads_through_audio_pretrained(tmp_path: Path) -> None:
    import torch
    from transformers import HubertConfig, HubertModel

    config = HubertConfig(
        hidden_size=24,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=48,
        conv_dim=(8, 8),
        conv_kernel=(10, 8),
        conv_stride=(10, 32),
        num_conv_pos_embeddings=8,
        num_conv_pos_embedding_groups=2,
    )
    torch.manual_seed(3)
    model = HubertModel(config).eval()
    model.save_pretrained(tmp_path / "hubert")
    audio = AudioConfig(kind="wav2vec2", wav2vec2_hidden=24, pretrained=str(tmp_path / "hubert"))
    loaded = AudioFrontEnd(audio)
    assert type(loaded.encoder).__name__ == "HubertModel"
    samples = np.random.default_rng(0).standard_normal(22050).astype(np.float32) * 0.1
    features = loaded(samples, 22050, 29.97)
    assert features.shape == (30, 24)  # one row per frame of 1 s at 29.97 fps, at the saved model's width
    np.testing.assert_array_equal(features, AudioFrontEnd(audio, encoder=model)(samples, 22050, 29.97))
    with pytest.raises(InputError, match="hidden size is 24"):
        AudioFrontEnd(replace(audio, wav2vec2_hidden=32))
    with pytest.raises(InputError, match=r"audio\.pretrained=.*missing: could not load a wav2vec2/HuBERT encoder"):
        AudioFrontEnd(replace(audio, pretrained=str(tmp_path / "missing")))


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
