"""Audio read/write and sample-rate conversion: WAV, FLAC, OGG and MP3 through soundfile (libsndfile), the audio track
of an MP4 (or any file ffmpeg reads) through imageio-ffmpeg's bundled ffmpeg binary, resampling through soxr
(libsoxr, "HQ"). ``pip install genblocks[audio]`` for files and resampling, plus ``genblocks[video]`` for the audio
track of a video.

Conventions: samples are float32 in [-1, 1], shape (N,) for mono or (N, C) for C channels (frames first, as
soundfile returns them); :func:`read_audio` always returns mono (the mean of the channels). The audio-driven papers
(DREAM-Talk's MFCC / log-mel / wav2vec2 front-ends at 16 kHz, resampled to the video frame rate) read through here, and
:func:`genblocks.media.write_video` muxes audio into an MP4 with the helpers at the bottom of this module.
"""

from __future__ import annotations

import io
import logging
import subprocess
import wave
from pathlib import Path
from types import ModuleType

import numpy as np

from genblocks.errors import InputError

__all__ = ["AAC_SAMPLE_RATES", "read_audio", "resample_audio", "write_audio"]

logger = logging.getLogger(__name__)

_AUDIO_HINT = "Audio files and resampling need soundfile and soxr: `pip install genblocks[audio]`."
_FFMPEG_HINT = "The audio track of a video needs imageio-ffmpeg's ffmpeg: `pip install genblocks[video]`."

_AUDIO_FORMATS = "WAV, FLAC, OGG/Opus, MP3 or AIFF audio"
# Suffixes read by libsndfile; everything else (.mp4, .m4a, .mov, .mkv, .webm, .aac, ...) goes through ffmpeg.
_SOUNDFILE_SUFFIXES = frozenset(
    {
        ".wav",
        ".wave",
        ".flac",
        ".ogg",
        ".oga",
        ".opus",
        ".mp3",
        ".aif",
        ".aiff",
        ".aifc",
        ".au",
        ".snd",
        ".caf",
        ".w64",
    }
)

#: Sample rates an AAC (MPEG-4 audio) stream can carry; :func:`genblocks.media.write_video` resamples others to 48 kHz.
AAC_SAMPLE_RATES = frozenset({96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350})


def read_audio(path: str | Path, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    """Read an audio file, or the first audio track of a video, as mono float32 samples.

    Args:
        path (`str` or `Path`): WAV, FLAC, OGG or MP3 (read by soundfile), or any other file ffmpeg reads (an MP4's
            audio track, M4A, MOV, MKV, WebM), decoded by imageio-ffmpeg's ffmpeg into a WAV pipe.
        sample_rate (`int`, *optional*): resample to this rate (soxr, "HQ"); defaults to the file's own rate.

    Returns:
        `tuple[np.ndarray, int]`: float32 samples of shape (N,), the mean over the file's channels, and their sample
        rate (``sample_rate`` when given).

    Raises:
        `InputError`: naming ``path``, when the file does not exist, is not audio (or a video without an audio track),
            is truncated, or holds no samples.
        `ImportError`: soundfile/soxr (``genblocks[audio]``) or, for a video, imageio-ffmpeg (``genblocks[video]``)
            is missing.
    """
    path = Path(path)
    if sample_rate is not None and (
        isinstance(sample_rate, bool) or int(sample_rate) != sample_rate or sample_rate <= 0
    ):
        raise InputError(f"`sample_rate` must be a positive integer, got {sample_rate!r}.")
    if not path.is_file():
        raise InputError(f"{path}: audio file not found.")
    soundfile = _import_soundfile()
    if path.suffix.lower() in _SOUNDFILE_SUFFIXES:
        source: str | io.BytesIO = str(path)
    else:
        process = _run_ffmpeg(
            ["-i", str(path), "-map", "0:a:0", "-vn", "-c:a", "pcm_f32le", "-f", "wav", "pipe:1"],
            path,
            what="an audio or video file with an audio track",
        )
        source = io.BytesIO(process.stdout)
    try:
        samples, rate = soundfile.read(source, dtype="float32", always_2d=True)
    except RuntimeError as error:  # soundfile.LibsndfileError; for a garbled MP3 it says "File does not exist"
        logger.debug("libsndfile could not read %s: %s", path, error)
        raise InputError(
            f"{path}: could not be decoded as audio; expected {_AUDIO_FORMATS} (or a video with an audio track)."
        ) from error
    if samples.shape[0] == 0:
        raise InputError(f"{path}: holds no audio samples.")
    mono = samples.mean(axis=1, dtype=np.float32) if samples.shape[1] > 1 else samples[:, 0]
    if sample_rate is not None and int(sample_rate) != rate:
        mono = resample_audio(mono, rate, int(sample_rate))
        rate = int(sample_rate)
    logger.debug("read %d samples at %d Hz from %s", mono.shape[0], rate, path)
    return np.ascontiguousarray(mono, dtype=np.float32), int(rate)


def resample_audio(samples: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    """Change the sample rate with soxr's high-quality (``"HQ"``) band-limited resampler.

    Args:
        samples (`np.ndarray`): float samples of shape (N,) or (N, C).
        orig_rate (`int`): their sample rate in Hz.
        target_rate (`int`): the wanted rate in Hz.

    Returns:
        `np.ndarray`: float32 of shape (round(N · target_rate / orig_rate),) or (…, C).
    """
    if orig_rate <= 0 or target_rate <= 0:
        raise InputError(f"Sample rates must be positive, got {orig_rate} and {target_rate}.")
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim not in (1, 2):
        raise InputError(f"`samples` must be (N,) or (N, C), got shape {samples.shape}.")
    if orig_rate == target_rate:
        return samples
    try:
        import soxr
    except ImportError as error:
        raise ImportError(_AUDIO_HINT) from error
    return np.ascontiguousarray(soxr.resample(samples, orig_rate, target_rate, quality="HQ"), dtype=np.float32)


def write_audio(path: str | Path, samples: np.ndarray, sample_rate: int, subtype: str | None = None) -> Path:
    """Write samples to an audio file through soundfile (the format follows the suffix: WAV, FLAC, OGG).

    Args:
        path (`str` or `Path`): output file; parent folders are created.
        samples (`np.ndarray`): float samples in [-1, 1] of shape (N,) or (N, C).
        sample_rate (`int`): their sample rate in Hz.
        subtype (`str`, *optional*): soundfile subtype, e.g. ``"FLOAT"`` for lossless float32 WAV; defaults to the
            format's default (16-bit PCM for WAV).

    Returns:
        `Path`: the written file.
    """
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim not in (1, 2) or samples.shape[0] == 0:
        raise InputError(f"`samples` must be non-empty (N,) or (N, C), got shape {samples.shape}.")
    if sample_rate <= 0:
        raise InputError(f"`sample_rate` must be positive, got {sample_rate}.")
    soundfile = _import_soundfile()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), samples, int(sample_rate), subtype=subtype)
    return path


# Helpers shared with genblocks.media (muxing audio into an MP4, probing a video).


def _ffmpeg_exe() -> str:
    """The path of imageio-ffmpeg's bundled ffmpeg binary (``pip install genblocks[video]``)."""
    try:
        import imageio_ffmpeg
    except ImportError as error:
        raise ImportError(_FFMPEG_HINT) from error
    return imageio_ffmpeg.get_ffmpeg_exe()


def _run_ffmpeg(args: list[str], path: Path, what: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``ffmpeg -hide_banner -nostdin <args>`` capturing stdout (bytes) and stderr.

    Args:
        args (`list[str]`): everything after the global options, inputs and outputs included.
        path (`Path`): the input file, named in the error.
        what (`str`): what ``path`` should have been, for the error ("a video file").
        check (`bool`, defaults to `True`): raise `InputError` (with ffmpeg's last error lines) on a non-zero exit.

    Returns:
        `subprocess.CompletedProcess`: the finished process.
    """
    command = [_ffmpeg_exe(), "-hide_banner", "-nostdin", *args]
    process = subprocess.run(command, capture_output=True, check=False)
    if check and process.returncode != 0:
        lines = [line.strip() for line in process.stderr.decode(errors="replace").splitlines() if line.strip()]
        if any("matches no streams" in line for line in lines):
            stream = "audio track" if "0:a" in " ".join(args) else "video stream"
            raise InputError(f"{path}: has no {stream}; expected {what}.")
        detail = "; ".join(lines[-2:]) or f"exit status {process.returncode}"
        raise InputError(f"{path}: not {what}, or truncated (ffmpeg: {detail}).")
    return process


def _fit_length(samples: np.ndarray, length: int) -> np.ndarray:
    """Trim ``samples`` (N, ...) to ``length`` frames, or pad them with trailing silence."""
    if samples.shape[0] >= length:
        return samples[:length]
    padding = np.zeros((length - samples.shape[0], *samples.shape[1:]), dtype=samples.dtype)
    return np.concatenate([samples, padding])


def _write_wav_pcm16(path: Path, samples: np.ndarray, sample_rate: int) -> None:
    """Write (N,) or (N, C) float samples as 16-bit PCM WAV with the standard library (clipped to [-1, 1])."""
    samples = samples.reshape(samples.shape[0], -1)
    pcm = np.round(np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2")
    with wave.open(str(path), "wb") as file:
        file.setnchannels(samples.shape[1])
        file.setsampwidth(2)
        file.setframerate(int(sample_rate))
        file.writeframes(pcm.tobytes())


def _import_soundfile() -> ModuleType:
    try:
        import soundfile
    except ImportError as error:
        raise ImportError(_AUDIO_HINT) from error
    return soundfile
