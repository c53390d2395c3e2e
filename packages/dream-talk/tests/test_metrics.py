"""Metrics (``dream_talk.metrics``) and ``dream-talk eval``: zero distances for identical motions, known distances for
known shifts, the lip-sync proxy on energy-built and shuffled mouth signals, the style cosine of a clip with itself,
the SyncNet hook's documented call, and eval end to end on a prepared tiny MEAD manifest plus its bad-input exits."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from dream_talk.audio_features import frame_count
from dream_talk.cli import main
from dream_talk.config import load_shipped_config
from dream_talk.demo import synthetic_speech
from dream_talk.metrics import (
    MOUTH_LANDMARKS,
    SyncNetScorer,
    blendshape_l2,
    frame_energy,
    landmark_distance,
    lip_sync_correlation,
    motion_landmark_distances,
    mouth_crops,
    mouth_opening,
    style_consistency,
)
from dream_talk.motion import blendshape_index
from dream_talk.pipeline_dream_talk import DreamTalkPipeline
from genblocks.errors import InputError


def _motion(frames: int = 20, seed: int = 0) -> np.ndarray:
    """Blendshapes in [0.2, 0.7] (a +-0.1 shift stays inside [0, 1]) and a small head pose."""
    rng = np.random.default_rng(seed)
    motion = np.zeros((frames, 58))
    motion[:, :52] = rng.uniform(0.2, 0.7, (frames, 52))
    motion[:, 52:55] = rng.uniform(-0.1, 0.1, (frames, 3))
    return motion


def test_identical_motions_have_zero_distances() -> None:
    motion = _motion()
    assert blendshape_l2(motion, motion, "mouth") == 0.0 and blendshape_l2(motion, motion, "full") == 0.0
    assert motion_landmark_distances(motion, motion) == {"m_lmd": 0.0, "f_lmd": 0.0}
    landmarks = np.random.default_rng(1).normal(size=(5, 68, 2))
    assert landmark_distance(landmarks, landmarks, "mouth") == 0.0


def test_a_known_shift_gives_the_known_distance() -> None:
    motion = _motion()
    shifted = motion.copy()
    shifted[:, :52] += 0.1
    assert blendshape_l2(motion, shifted, "full") == pytest.approx(0.1 * math.sqrt(52))
    assert blendshape_l2(motion, shifted, "mouth") == pytest.approx(0.1 * math.sqrt(27))
    moved = motion.copy()
    moved[:, 55] += 0.25  # headX: every proxy landmark moves 0.25 to the right
    assert motion_landmark_distances(motion, moved) == pytest.approx({"m_lmd": 0.25, "f_lmd": 0.25})
    landmarks = np.random.default_rng(1).normal(size=(5, 68, 2))
    mouth_moved = landmarks.copy()
    mouth_moved[:, list(MOUTH_LANDMARKS)] += (3.0, 4.0)
    assert landmark_distance(landmarks, mouth_moved, "mouth") == pytest.approx(5.0)
    assert landmark_distance(landmarks, mouth_moved, "full") == pytest.approx(5.0 * 20 / 68)
    with pytest.raises(ValueError, match="differ in shape"):
        blendshape_l2(motion, motion[:-1])


def test_frame_energy_is_the_rms_at_the_frame_rate() -> None:
    rate, fps = 16000, 25.0
    tone = 0.5 * np.sin(2 * np.pi * 440 * np.arange(rate) / rate)
    energy = frame_energy(tone, rate, fps)
    assert energy.shape == (frame_count(rate, rate, fps),) == (25,)
    assert np.allclose(energy, 0.5 / math.sqrt(2), atol=2e-3)
    half = tone.copy()
    half[rate // 2 :] = 0.0
    energy = frame_energy(half, rate, fps, num_frames=30)
    assert energy.shape == (30,) and energy[5] > 0.3 and np.allclose(energy[14:], 0.0, atol=1e-6)


def test_lip_sync_proxy_tracks_a_mouth_built_from_the_energy() -> None:
    rate, fps = 16000, 25.0
    samples = synthetic_speech(3.0, rate)
    energy = frame_energy(samples, rate, fps)
    rng = np.random.default_rng(0)
    motion = np.zeros((len(energy), 58))
    motion[:, blendshape_index("jawOpen")] = 0.8 * energy / energy.max() + rng.normal(0, 0.02, len(energy))
    for source in ("jaw", "lips"):
        assert lip_sync_correlation(mouth_opening(motion, source), energy) > 0.9
    shuffled = rng.permutation(motion)
    assert lip_sync_correlation(mouth_opening(shuffled), energy) < 0.5
    assert lip_sync_correlation(np.zeros(len(energy)), energy) == 0.0  # undefined for a constant mouth: 0


def test_style_cosine_of_a_clip_with_itself_is_one() -> None:
    encoder = DreamTalkPipeline.from_config(load_shipped_config("tiny")).style_encoder.eval()
    clip, other = _motion(12, seed=0), _motion(12, seed=1)
    other[:, :52] = 1.0 - other[:, :52]
    assert style_consistency(encoder, clip, clip) == pytest.approx(1.0, abs=1e-6)
    assert style_consistency(encoder, clip, other) < 0.999


def test_mouth_crops_follow_the_jaw() -> None:
    motion = np.zeros((2, 58))
    motion[1, blendshape_index("jawOpen")] = 1.0
    crops = mouth_crops(motion, size=48)
    assert crops.shape == (2, 3, 48, 48) and crops.dtype == np.float32 and 0.0 <= crops.min() <= crops.max() <= 1.0
    dark = (crops.mean(axis=1) < 0.2).sum(axis=(1, 2))  # the drawn mouth interior
    assert dark[1] > 2 * dark[0]
    far = np.zeros((1, 58))
    far[0, 55] = 5.0  # headX far right: the crop falls outside the drawing and is background
    assert np.allclose(mouth_crops(far, size=16), np.array([236, 232, 226])[None, :, None, None] / 255, atol=1e-6)


class _ShapeReporter(torch.nn.Module):
    """A stand-in lip-sync expert that reports the shapes it was called with."""

    def forward(self, mouth_frames: torch.Tensor, audio_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        offset = torch.tensor(mouth_frames.shape[1] * 1000 + audio_features.shape[1], dtype=torch.float64)
        b, _, c, h, w = mouth_frames.shape
        confidence = torch.tensor(b * 1e9 + c * 1e6 + h * 1e3 + w + audio_features.shape[2] / 100, dtype=torch.float64)
        return offset, confidence


@pytest.fixture
def syncnet_file(tmp_path: Path) -> Path:
    path = tmp_path / "expert.pt"
    torch.jit.script(_ShapeReporter()).save(str(path))
    return path


def test_syncnet_hook_is_called_with_the_documented_shapes(syncnet_file: Path, tmp_path: Path) -> None:
    scorer = SyncNetScorer.load(syncnet_file, size=32)
    scores = scorer(_motion(9), np.zeros((9, 13), np.float32))
    # (1, T=9, 3, 32, 32) mouth frames and (1, T=9, A=13) audio features
    assert scores == {"syncnet_offset": 9009.0, "syncnet_confidence": pytest.approx(1e9 + 3e6 + 32e3 + 32 + 0.13)}
    (tmp_path / "not.pt").write_text("not torchscript")
    for path, message in ((tmp_path / "missing.pt", "no such file"), (tmp_path / "not.pt", "not a TorchScript")):
        with pytest.raises(InputError, match=f"--syncnet .*{message}"):
            SyncNetScorer.load(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "file not found"),
        ("", "holds no rows"),
        ('{"audio": "a.wav", "motion": "m.json"}\n{not json\n', "row 1: audio file a.wav not found"),
        ("{not json\n", "row 1 is not JSON"),
        ('{"audio": "a.wav"}\n', "row 1 lacks 'motion'"),
    ],
)
def test_eval_bad_manifest_exits_2_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, message: str
) -> None:
    manifest = tmp_path / "manifest.jsonl"
    if content is not None:
        manifest.write_text(content)
    out = tmp_path / "out"
    assert main(["eval", "--manifest", str(manifest), "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("dream-talk eval: error: --manifest") and message in error[0]
    assert not out.exists()


@pytest.mark.slow
def test_eval_end_to_end_on_a_prepared_manifest(
    tmp_path_factory: pytest.TempPathFactory, syncnet_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from dt_mead_tree import FACE_CLIPS, prepared_dataset

    manifest = prepared_dataset(tmp_path_factory) / "manifest.jsonl"
    capsys.readouterr()
    argv = ["eval", "--config", "tiny", "--manifest", str(manifest), "--syncnet", str(syncnet_file)]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    document = json.loads((tmp_path / "metrics.json").read_text())
    clips = {clip["id"]: clip for clip in document["clips"]}
    assert set(clips) == set(FACE_CLIPS)
    # the style clip is another clip of the same emotion, or the clip itself when it is the only one
    assert clips["M003_happy_level_1_001"]["style"] == "W009_happy_level_3_001"
    assert clips["W009_happy_level_3_001"]["style"] == "M003_happy_level_1_001"
    assert clips["M003_neutral_level_1_001"]["style"] == "M003_neutral_level_1_001"
    for clip_id, (_, frames, _) in FACE_CLIPS.items():
        clip = clips[clip_id]
        assert clip["frames"] == frames and clip["syncnet_offset"] == frames * 1001
        assert clip["bs_l2_full"] >= clip["bs_l2_mouth"] > 0 and clip["f_lmd"] > 0 and -1 <= clip["style_cosine"] <= 1
        assert clip["lip_sync_truth"] > 0.8  # the videos' jaw follows the speech energy, and tracking recovers it
        generated = json.loads((tmp_path / "motion" / f"{clip_id}.json").read_text())
        assert len(generated["frames"]) == frames
    for name, value in document["mean"].items():
        assert value == pytest.approx(np.mean([clip[name] for clip in clips.values()]))
    table = capsys.readouterr().out
    assert "mean" in table and "M003_neutral_level_1_001" in table and "lip_sync" in table
    assert main([*argv, "--limit", "1", "--out", str(tmp_path / "one")]) == 0
    assert len(json.loads((tmp_path / "one" / "metrics.json").read_text())["clips"]) == 1
