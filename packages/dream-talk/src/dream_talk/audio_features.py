"""Audio front-ends aligned to the video: MFCC (+ delta), log-mel and wav2vec2/HuBERT features, one row per frame.

Audio is read and resampled through :mod:`genblocks.audio` (soundfile + soxr), features are computed at their own
rate (100 rows per second for mel/MFCC with a 10 ms hop, 50 for wav2vec2) and linearly interpolated onto the frame
times of the video, so any input sample rate and any frame rate (25, 29.97, 30, 60 fps) give exactly
``frame_count(duration, fps)`` rows.

Log-mel and MFCC come from ``librosa.feature`` (the ``audio`` extra; torchaudio does not import with the locked
torch): Slaney mel scale with area-normalised filters, an orthonormal DCT-II, Savitzky-Golay deltas.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
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
    "mfcc",
    "tiny_wav2vec2",
]


def frame_count(num_samples: int, sample_rate: int, fps: float) -> int:
    """Video frames covering ``num_samples`` of audio: ``max(1, floor(N / sample_rate * fps + 0.5))`` (halves round
    up: 0.5 s at 25 fps is 13 frames)."""
    return max(1, math.floor(num_samples / sample_rate * fps + 0.5))


def _import_librosa() -> ModuleType:
    try:
        import librosa
    except ImportError as error:
        raise ImportError(
            "audio.kind=mel|mfcc needs librosa: pip install 'dream-talk[audio]' (or use audio.kind=wav2vec2)"
        ) from error
    return librosa


def log_mel(
    samples: np.ndarray, sample_rate: int, n_fft: int, win_length: int, hop_length: int, n_mels: int
) -> np.ndarray:
    """Log-mel energies: natural log (floored at 1e-10) of ``librosa.feature.melspectrogram`` (power 2, a periodic
    Hann window of ``win_length`` centred in ``n_fft``, centred frames, Slaney mel scale and area normalisation).

    Args:
        samples: float (N,) mono audio.
        sample_rate: Its rate.
        n_fft, win_length, hop_length: STFT geometry (samples).
        n_mels: Mel bands.

    Returns:
        float32 (1 + N // hop_length, n_mels), one row every ``hop_length`` samples (row i centred at i * hop).
    """
    librosa = _import_librosa()
    mel = librosa.feature.melspectrogram(
        y=np.asarray(samples, dtype=np.float32),
        sr=sample_rate,
        n_fft=n_fft,
        hop_length=hop_length,
        win_length=win_length,
        window="hann",
        center=True,
        power=2.0,
        n_mels=n_mels,
    )
    return np.log(np.maximum(mel.T, 1e-10)).astype(np.float32)


def mfcc(log_mel_rows: np.ndarray, n_mfcc: int, deltas: bool) -> np.ndarray:
    """MFCCs through ``librosa.feature.mfcc`` (orthonormal DCT-II) of log-mel rows in dB (``10 log10`` of the power,
    no ``top_db`` clipping), first ``n_mfcc`` coefficients, + ``librosa.feature.delta`` (9-frame Savitzky-Golay
    derivative, edges by nearest value).

    Args:
        log_mel_rows: float (R, n_mels) natural-log mel energies (:func:`log_mel`).
        n_mfcc: Coefficients kept.
        deltas: Append the time derivative: (R, n_mfcc) -> (R, 2 n_mfcc).

    Returns:
        float32 (R, n_mfcc) or (R, 2 n_mfcc).
    """
    librosa = _import_librosa()
    db = 10.0 / math.log(10.0) * log_mel_rows.astype(np.float64).T
    coefficients = librosa.feature.mfcc(S=db, n_mfcc=n_mfcc, dct_type=2, norm="ortho")
    if deltas:
        coefficients = np.concatenate([coefficients, librosa.feature.delta(coefficients, mode="nearest")], axis=0)
    return coefficients.T.astype(np.float32)


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

                try:
                    self.encoder = AutoModel.from_pretrained(self.config.pretrained).eval()
                except (OSError, ValueError) as error:
                    raise InputError(
                        f"audio.pretrained={self.config.pretrained}: could not load a wav2vec2/HuBERT encoder "
                        f"(expected a save_pretrained folder or a hub name in the local cache; {error})"
                    ) from None
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
