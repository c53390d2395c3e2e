"""Audio front-ends aligned to the video: MFCC (+ delta), log-mel and wav2vec2/HuBERT features, one row per frame.

Audio is read and resampled through :mod:`genblocks.audio` (soundfile + soxr), features are computed at their own
rate (100 rows per second for mel/MFCC with a 10 ms hop, 50 for wav2vec2) and linearly interpolated onto the frame
times of the video, so any input sample rate and any frame rate (25, 29.97, 30, 60 fps) give exactly
``frame_count(duration, fps)`` rows.

The mel filterbank (Slaney mel scale, area-normalised triangles, as librosa's default ``htk=False, norm="slaney"``)
and the orthonormal DCT-II of the MFCCs are computed here with numpy: librosa is not a dependency of this workspace,
and torchaudio does not import with the locked torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from genblocks.errors import InputError

if TYPE_CHECKING:
    import torch

    from dream_talk.config import AudioConfig

__all__ = [
    "AudioFrontEnd",
    "align_to_frames",
    "frame_count",
    "load_speech",
    "log_mel",
    "mel_filterbank",
    "mfcc",
    "tiny_wav2vec2",
]


def frame_count(num_samples: int, sample_rate: int, fps: float) -> int:
    """Video frames covering ``num_samples`` of audio: ``max(1, floor(N / sample_rate * fps + 0.5))`` (halves round
    up: 0.5 s at 25 fps is 13 frames)."""
    return max(1, math.floor(num_samples / sample_rate * fps + 0.5))


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3.0, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    return np.where(hz >= min_log_hz, min_log_mel + np.log(np.maximum(hz, 1e-10) / min_log_hz) / logstep, hz / f_sp)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    f_sp, min_log_hz = 200.0 / 3.0, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    return np.where(mel >= min_log_mel, min_log_hz * np.exp(logstep * (mel - min_log_mel)), f_sp * mel)


def mel_filterbank(
    sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None
) -> np.ndarray:
    """Triangular mel filters on the rFFT bins, Slaney-normalised (each filter's area is 2 / bandwidth).

    Returns:
        float32 (n_mels, n_fft // 2 + 1).
    """
    fmax = sample_rate / 2.0 if fmax is None else fmax
    bins = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(np.array(fmin)), _hz_to_mel(np.array(fmax)), n_mels + 2))
    lower = (bins[None, :] - edges[:-2, None]) / np.maximum(edges[1:-1, None] - edges[:-2, None], 1e-10)
    upper = (edges[2:, None] - bins[None, :]) / np.maximum(edges[2:, None] - edges[1:-1, None], 1e-10)
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.astype(np.float32)


def _power_spectrogram(samples: np.ndarray, n_fft: int, win_length: int, hop_length: int) -> np.ndarray:
    """|STFT|^2 with a periodic Hann window, centred frames (reflect padding): (1 + N // hop, n_fft // 2 + 1)."""
    pad = n_fft // 2
    signal = samples.astype(np.float64)
    padded = np.pad(signal, pad, mode="reflect") if samples.shape[0] > pad else np.pad(signal, pad)
    count = 1 + (padded.shape[0] - n_fft) // hop_length
    window = np.zeros(n_fft)
    start = (n_fft - win_length) // 2
    window[start : start + win_length] = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(win_length) / win_length)
    index = np.arange(n_fft)[None, :] + hop_length * np.arange(count)[:, None]
    return np.abs(np.fft.rfft(padded[index] * window, axis=1)) ** 2


def log_mel(
    samples: np.ndarray, sample_rate: int, n_fft: int, win_length: int, hop_length: int, n_mels: int
) -> np.ndarray:
    """Log-mel energies (natural log of the filterbank power, floored at 1e-10).

    Args:
        samples: float (N,) mono audio.
        sample_rate: Its rate.
        n_fft, win_length, hop_length: STFT geometry (samples).
        n_mels: Mel bands.

    Returns:
        float32 (1 + N // hop_length, n_mels), one row every ``hop_length`` samples (row i centred at i * hop).
    """
    power = _power_spectrogram(samples, n_fft, win_length, hop_length)
    mel = power @ mel_filterbank(sample_rate, n_fft, n_mels).T.astype(np.float64)
    return np.log(np.maximum(mel, 1e-10)).astype(np.float32)


def mfcc(log_mel_rows: np.ndarray, n_mfcc: int, deltas: bool) -> np.ndarray:
    """MFCCs: the orthonormal DCT-II of log-mel rows (in dB), first ``n_mfcc`` coefficients, + time derivative.

    Args:
        log_mel_rows: float (R, n_mels) natural-log mel energies.
        n_mfcc: Coefficients kept.
        deltas: Append ``np.gradient`` along time (R, n_mfcc) -> (R, 2 n_mfcc).
    """
    db = 10.0 / math.log(10.0) * log_mel_rows.astype(np.float64)
    n_mels = db.shape[1]
    k = np.arange(n_mfcc)[:, None]
    basis = np.cos(np.pi / n_mels * (np.arange(n_mels)[None, :] + 0.5) * k) * math.sqrt(2.0 / n_mels)
    basis[0] /= math.sqrt(2.0)
    coefficients = db @ basis.T
    if deltas:
        delta = np.gradient(coefficients, axis=0) if coefficients.shape[0] > 1 else np.zeros_like(coefficients)
        coefficients = np.concatenate([coefficients, delta], axis=1)
    return coefficients.astype(np.float32)


def align_to_frames(features: np.ndarray, feature_times: np.ndarray, num_frames: int, fps: float) -> np.ndarray:
    """Linearly interpolate feature rows onto video frame times ``(j + 0.5) / fps`` (held constant past the ends).

    Args:
        features: (R, D) rows.
        feature_times: (R,) their times in seconds, increasing.
        num_frames: T.
        fps: Video frame rate.

    Returns:
        float32 (T, D).
    """
    times = (np.arange(num_frames) + 0.5) / fps
    if features.shape[0] == 1:
        return np.repeat(features.astype(np.float32), num_frames, axis=0)
    columns = [np.interp(times, feature_times, features[:, d]) for d in range(features.shape[1])]
    return np.stack(columns, axis=1).astype(np.float32)


def tiny_wav2vec2(hidden_size: int = 32, seed: int = 0) -> torch.nn.Module:
    """A seeded random ``Wav2Vec2Model`` with a 320-sample stride (50 rows per second at 16 kHz), 2 layers: tests and
    the tiny config (no download)."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    config = Wav2Vec2Config(
        hidden_size=hidden_size,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=2 * hidden_size,
        conv_dim=(16, 16, 16),
        conv_kernel=(10, 8, 4),
        conv_stride=(5, 8, 8),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        do_stable_layer_norm=True,
        feat_extract_norm="layer",
    )
    torch.manual_seed(seed)
    return Wav2Vec2Model(config).eval()


@dataclass
class AudioFrontEnd:
    """Audio -> (T, D) features at the video frame rate (``audio.kind`` in ``{mfcc, mel, wav2vec2}``).

    Args:
        config: The ``audio`` section.
        encoder: For ``kind="wav2vec2"``: a transformers ``Wav2Vec2Model``/``HubertModel`` (anything whose output has
            ``last_hidden_state`` and whose config has ``conv_stride``); ``None`` loads ``config.pretrained`` or, when
            that is ``None`` too, builds :func:`tiny_wav2vec2` with ``config.wav2vec2_hidden``.
    """

    config: AudioConfig
    encoder: torch.nn.Module | None = None

    def __post_init__(self) -> None:
        if self.config.kind == "wav2vec2" and self.encoder is None:
            if self.config.pretrained is None:
                self.encoder = tiny_wav2vec2(self.config.wav2vec2_hidden)
            else:
                from transformers import AutoModel

                self.encoder = AutoModel.from_pretrained(self.config.pretrained).eval()
        if self.encoder is not None:
            hidden = int(getattr(self.encoder.config, "hidden_size", -1))
            if hidden != self.config.wav2vec2_hidden:
                raise InputError(
                    f"audio.wav2vec2_hidden={self.config.wav2vec2_hidden} but the encoder's hidden size is {hidden}"
                )

    @property
    def dim(self) -> int:
        """D, the feature width."""
        return self.config.feature_dim

    def __call__(self, samples: np.ndarray, sample_rate: int, fps: float, num_frames: int | None = None) -> np.ndarray:
        """Features of mono audio, one row per video frame.

        Args:
            samples: float32 (N,) in [-1, 1].
            sample_rate: Their rate; resampled to ``config.sample_rate`` first (rates below ``min_sample_rate`` are
                refused).
            fps: Video frame rate.
            num_frames: T; defaults to :func:`frame_count`.

        Returns:
            float32 (T, D).
        """
        from genblocks.audio import resample_audio

        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        if samples.size == 0:
            raise InputError("the audio holds no samples")
        if sample_rate < self.config.min_sample_rate:
            raise InputError(
                f"audio sample rate {sample_rate} Hz is below audio.min_sample_rate={self.config.min_sample_rate} Hz"
            )
        num_frames = frame_count(samples.size, sample_rate, fps) if num_frames is None else num_frames
        rate = self.config.sample_rate
        samples = resample_audio(samples, sample_rate, rate)
        if self.config.kind == "wav2vec2":
            rows = self._wav2vec2(samples)
            times = (np.arange(rows.shape[0]) + 0.5) * (samples.size / max(rows.shape[0], 1)) / rate
        else:
            c = self.config
            rows = log_mel(samples, rate, c.n_fft, c.win_length, c.hop_length, c.n_mels)
            if c.kind == "mfcc":
                rows = mfcc(rows, c.n_mfcc, c.deltas)
            times = np.arange(rows.shape[0]) * c.hop_length / rate
        return align_to_frames(rows, times, num_frames, fps)

    def _wav2vec2(self, samples: np.ndarray) -> np.ndarray:
        import torch

        assert self.encoder is not None
        kernel = int(sum(getattr(self.encoder.config, "conv_kernel", (400,))))
        if samples.size < kernel:  # shorter than the receptive field of the feature encoder: pad with silence
            samples = np.pad(samples, (0, kernel - samples.size))
        normalised = (samples - samples.mean()) / np.sqrt(samples.var() + 1e-7)
        parameter = next(self.encoder.parameters())
        with torch.no_grad():
            inputs = torch.from_numpy(normalised).to(device=parameter.device, dtype=parameter.dtype)[None]
            hidden = self.encoder(inputs).last_hidden_state[0]
        return hidden.float().cpu().numpy()


def load_speech(path: str | Path, config: AudioConfig) -> tuple[np.ndarray, int]:
    """Read speech for generation and refuse what cannot drive a face.

    Args:
        path: Any file :func:`genblocks.audio.read_audio` reads (WAV, FLAC, MP3, an MP4's audio track).
        config: The ``audio`` section (``min_sample_rate``, ``silence_db``).

    Returns:
        ``(samples (N,), sample rate)`` at the file's own rate.

    Raises:
        InputError: naming the file when it is missing, unreadable, empty, recorded below ``audio.min_sample_rate``,
            shorter than one 40 ms frame, or silent (peak below ``audio.silence_db`` dBFS).
    """
    from genblocks.audio import read_audio

    path = Path(path)
    samples, rate = read_audio(path)
    if rate < config.min_sample_rate:
        raise InputError(
            f"{path}: sample rate {rate} Hz is too low for speech features (expected >= {config.min_sample_rate} Hz)"
        )
    if samples.size < rate // 25:
        raise InputError(f"{path}: {samples.size} samples is shorter than one video frame (expected >= 40 ms)")
    peak = float(np.max(np.abs(samples)))
    if peak <= 10.0 ** (config.silence_db / 20.0):
        level = "-inf" if peak == 0 else f"{20 * math.log10(peak):.1f}"
        raise InputError(
            f"{path}: the audio is silent (peak {level} dBFS; expected speech above {config.silence_db} dBFS)"
        )
    return samples, rate
