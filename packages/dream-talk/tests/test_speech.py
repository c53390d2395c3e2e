"""eSpeak NG speech (the optional ``speech`` extra): plausible waveforms whose length follows the text and the rate,
features one row per video frame, refusals naming the argument, the install hint without the extra, and the demo
speaking with eSpeak NG or falling back to the synthetic signal (saying which in its summary)."""

from __future__ import annotations

import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import dream_talk.speech
from dream_talk import AudioFrontEnd
from dream_talk.config import DreamTalkConfig, load_shipped_config
from dream_talk.demo import DEFAULT_TEXT, run_demo
from dream_talk.speech import synthesize_speech
from genblocks.audio import read_audio
from genblocks.errors import InputError

SHORT = "Hello, I am a talking portrait."
LONG = "Hello, I am a talking portrait, and this longer sentence takes me a good deal more time to say."


@pytest.fixture
def espeak() -> None:
    pytest.importorskip("espeakng_loader")


def _frame_rms(samples: np.ndarray, rate: int, seconds: float = 0.02) -> np.ndarray:
    size = int(rate * seconds)
    frames = samples[: samples.size // size * size].reshape(-1, size)
    return np.sqrt((frames.astype(np.float64) ** 2).mean(axis=1))


def test_sentence_is_plausible_speech(espeak: None) -> None:
    samples, rate = synthesize_speech(SHORT)
    assert rate == 22050 and samples.dtype == np.float32 and samples.ndim == 1
    assert 0.5 < samples.size / rate < 6.0  # 6 words at 150 wpm: about 2.2 s
    assert np.abs(samples).max() <= 1.0 and np.sqrt(np.mean(samples**2)) > 0.02
    rms = _frame_rms(samples, rate)
    voiced = rms > 0.05
    assert 0.3 < voiced.mean() < 0.95  # words and pauses, not a tone or silence
    assert np.count_nonzero(np.diff(voiced.astype(int)) == 1) >= 3  # several separate bursts of sound


def test_length_follows_the_text_and_the_rate(espeak: None) -> None:
    short, _ = synthesize_speech(SHORT)
    long, _ = synthesize_speech(LONG)
    fast, _ = synthesize_speech(SHORT, rate_wpm=300)
    assert long.size > 2 * short.size
    assert 0.35 < fast.size / short.size < 0.7  # twice the rate: about half the time (pauses shrink less)
    again, _ = synthesize_speech(SHORT)
    assert again.size == pytest.approx(short.size, rel=0.02)  # the rate set for `fast` does not leak into later calls


def test_threads_share_the_one_library(espeak: None) -> None:
    # eSpeak NG keeps state between utterances: repeated calls agree in length to within 1% (measured: 0.6%)
    expected = {text: synthesize_speech(text)[0].size for text in (SHORT, LONG)}
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda text: (text, synthesize_speech(text)[0].size), [SHORT, LONG] * 3))
    for text, size in results:  # samples of concurrent calls mixed up would change the lengths by seconds
        assert size == pytest.approx(expected[text], rel=0.02)


def test_audio_front_end_gives_one_row_per_frame(espeak: None) -> None:
    samples, rate = synthesize_speech(SHORT)
    features = AudioFrontEnd(load_shipped_config("tiny").audio)(samples, rate, fps=25.0)
    assert features.shape == (int(samples.size / rate * 25.0 + 0.5), 13) and np.isfinite(features).all()
    # the first MFCC follows loudness: higher in the loudest frame than in the quietest
    frame_rms = _frame_rms(samples, rate, seconds=1 / 25.0)[: features.shape[0]]
    assert features[frame_rms.argmax(), 0] > features[frame_rms.argmin(), 0] + 1.0


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"text": ""}, "text"), ({"text": "   "}, "text"), ({"text": "hi", "rate_wpm": 20}, "rate_wpm")],
)
def test_bad_text_or_rate_is_refused_by_name(kwargs: dict[str, object], name: str) -> None:
    with pytest.raises(InputError, match=rf"^{name}="):
        synthesize_speech(**kwargs)  # type: ignore[arg-type]


def test_unknown_voice_is_refused_by_name(espeak: None) -> None:
    with pytest.raises(InputError, match=r"^voice='xx-no-such-voice': eSpeak NG has no voice"):
        synthesize_speech(SHORT, voice="xx-no-such-voice")
    assert synthesize_speech(SHORT, voice="en-us")[0].size > 0  # the library still works afterwards


def test_without_the_extra_the_error_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "espeakng_loader", None)  # makes `import espeakng_loader` fail
    with pytest.raises(ImportError, match=r"pip install 'dream-talk\[speech\]'.*GPL-3"):
        dream_talk.speech._engine.__wrapped__()  # the uncached loader: a cached engine would not import again


@pytest.fixture(scope="module")
def preview_config() -> DreamTalkConfig:
    """The tiny config with the preview renderer, so the demo runs in seconds."""
    return load_shipped_config("tiny", ["render.kind=preview"])


def test_demo_speaks_with_espeak(espeak: None, preview_config: DreamTalkConfig, tmp_path: Path) -> None:
    summary = run_demo(preview_config, tmp_path)
    assert summary["speech"] == "espeak-ng" and "speech.wav" in summary["files"]
    assert json.loads((tmp_path / "summary.json").read_text())["speech"] == "espeak-ng"
    samples, rate = read_audio(tmp_path / "speech.wav")
    expected, _ = synthesize_speech(DEFAULT_TEXT)
    assert rate == 22050 and samples.shape[0] == pytest.approx(expected.size, rel=0.02)
    assert summary["audio_seconds"] == pytest.approx(samples.shape[0] / 22050)
    readme = (tmp_path / "README.txt").read_text()
    assert f'"{DEFAULT_TEXT}" spoken by eSpeak NG' in readme and "speech (espeak-ng)" in readme


def test_demo_falls_back_to_synthetic_speech(
    monkeypatch: pytest.MonkeyPatch,
    preview_config: DreamTalkConfig,
    tmp_path: Path,
) -> None:
    def missing(text: str, voice: str = "en", rate_wpm: int = 150) -> tuple[np.ndarray, int]:
        raise ImportError("pip install 'dream-talk[speech]'")

    monkeypatch.setattr(dream_talk.speech, "synthesize_speech", missing)
    summary = run_demo(preview_config, tmp_path / "fallback")
    assert summary["speech"] == "synthetic" and summary["audio_seconds"] == pytest.approx(2.4)
    assert read_audio(tmp_path / "fallback" / "speech.wav")[1] == 16000
    assert "synthetic speech-like signal" in (tmp_path / "fallback" / "README.txt").read_text()
    # a sentence asked for explicitly does not fall back: the install hint reaches the user, nothing is written
    with pytest.raises(ImportError, match=r"dream-talk\[speech\]"):
        run_demo(preview_config, tmp_path / "asked", text="Say this.")
    assert not (tmp_path / "asked").exists()


def test_demo_with_a_file_and_text_is_refused(preview_config: DreamTalkConfig, tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"^audio and text"):
        run_demo(preview_config, tmp_path / "out", audio=tmp_path / "speech.wav", text="Say this.")
    assert not (tmp_path / "out").exists()
