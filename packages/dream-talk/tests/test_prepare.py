"""``dream-talk prepare``: clip discovery in the MEAD / HDTF / flat layouts and a labels CSV, and end to end on a tiny
MEAD tree of rendered face videos with sound (manifest rows, motion frames = video frames, labels from the path,
skipped clips counted with their reason, an idempotent re-run, ``train --stage emodiff`` on the manifest)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from dream_talk.cli import main
from dream_talk.prepare import find_clips
from genblocks.errors import InputError


def _touch(root: Path, *names: str) -> Path:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")
    return root


def test_mead_layout_labels_from_the_path(tmp_path: Path) -> None:
    root = _touch(
        tmp_path,
        "M003/video/front/happy/level_2/001.mp4",
        "M003/video/front/angry/level_1/003.MP4",
        "W009/video/front/neutral/level_1/001.mp4",
        "M003/video/left_30/happy/level_2/001.mp4",  # another camera: not the frontal layout
        "M003/audio/happy/level_2/001.m4a",
        "notes.txt",
    )
    clips = find_clips(root, "mead")
    assert [(c.id, c.emotion, c.speaker, c.level) for c in clips] == [
        ("M003_angry_level_1_003", "angry", "M003", 1),
        ("M003_happy_level_2_001", "happy", "M003", 2),
        ("W009_neutral_level_1_001", "neutral", "W009", 1),
    ]
    assert clips[1].source == "M003/video/front/happy/level_2/001.mp4"


def test_hdtf_and_flat_layouts_with_a_labels_csv(tmp_path: Path) -> None:
    root = _touch(tmp_path / "videos", "WRA_AdamSchiff_000.mp4", "WRA_AdamSchiff_001.mp4", "RD_Radio1_000.mp4")
    clips = find_clips(root, "hdtf")
    assert [(c.id, c.speaker, c.emotion) for c in clips] == [
        ("RD_Radio1_000", "RD_Radio1", "neutral"),
        ("WRA_AdamSchiff_000", "WRA_AdamSchiff", "neutral"),
        ("WRA_AdamSchiff_001", "WRA_AdamSchiff", "neutral"),
    ]
    _touch(root, "more/talk.mov")
    labels = tmp_path / "labels.csv"
    labels.write_text("path,emotion,speaker\nmore/talk.mov,happy,anna\nRD_Radio1_000.mp4,sad,\n")
    flat = {c.id: (c.emotion, c.speaker) for c in find_clips(root, "flat", labels)}
    assert flat == {
        "RD_Radio1_000": ("sad", "RD_Radio1_000"),  # an empty speaker cell keeps the layout's
        "WRA_AdamSchiff_000": ("neutral", "WRA_AdamSchiff_000"),
        "WRA_AdamSchiff_001": ("neutral", "WRA_AdamSchiff_001"),
        "more__talk": ("happy", "anna"),
    }


@pytest.mark.parametrize(
    ("layout", "labels", "message"),
    [
        ("mead", None, "no videos found in the mead layout"),
        ("flat", "missing.mp4,happy,a\n", "row 1 names missing.mp4, which is not a file"),
        ("flat", "clip.mp4,happy\n", "row 1 has 2 cells"),
    ],
)
def test_bad_video_folders_and_labels_are_named(tmp_path: Path, layout: str, labels: str | None, message: str) -> None:
    root = _touch(tmp_path / "videos", "clip.mp4")
    path = None
    if labels is not None:
        path = tmp_path / "labels.csv"
        path.write_text(labels)
    with pytest.raises(InputError, match=message):
        find_clips(root, layout, path)  # type: ignore[arg-type]


def test_prepare_cli_without_videos_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    for videos in (tmp_path / "missing", _touch(tmp_path / "empty", "readme.txt")):
        assert main(["prepare", "--videos", str(videos), "--out", str(out), "--no-progress"]) == 2
        error = capsys.readouterr().err.strip().splitlines()
        assert len(error) == 1 and error[0].startswith("dream-talk prepare: error: --videos")
    assert not out.exists()


@pytest.mark.slow
def test_prepare_a_mead_tree_then_rerun_and_train(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    from dt_mead_tree import FACE_CLIPS, NO_AUDIO, NO_FACE, build_tree, prepared_dataset

    from genblocks.audio import read_audio
    from genblocks.media import read_video_meta

    tree, out = build_tree(tmp_path_factory), prepared_dataset(tmp_path_factory)
    manifest = out / "manifest.jsonl"
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert [row["id"] for row in rows] == sorted(FACE_CLIPS)
    for row in rows:
        source, frames, fps = FACE_CLIPS[row["id"]]
        meta = read_video_meta(tree / source)
        assert row["video"] == source and row["frames"] == frames == meta.num_frames and row["fps"] == fps
        assert row["gap_frames"] == 0 and row["level"] == int(source.split("level_")[1][0])
        assert (row["speaker"], row["emotion"]) == tuple(np.array(source.split("/"))[[0, 3]])
        motion = json.loads((out / row["motion"]).read_text())
        assert len(motion["frames"]) == frames and len(motion["frames"][0]) == 58 and motion["fps"] == fps
        samples, rate = read_audio(out / row["audio"])
        assert rate == meta.audio_sample_rate and abs(samples.size / rate - frames / fps) < 0.05
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["clips"], summary["found"], summary["skipped"], summary["reused"]) == (3, 5, 2, 0)
    reasons = {clip["video"]: clip["reason"] for clip in summary["skipped_clips"]}
    assert "no face" in reasons[NO_FACE] and reasons[NO_AUDIO] == "no audio track"
    assert summary["emotions"] == {"happy": 2, "neutral": 1} and summary["speakers"] == ["M003", "W009"]

    # a second run on the same --out keeps the finished clips untouched
    before = manifest.read_text()
    stamps = {p: p.stat().st_mtime_ns for p in (out / "motion").iterdir()}
    assert main(["prepare", "--videos", str(tree), "--out", str(out), "--no-progress"]) == 0
    assert manifest.read_text() == before
    assert {p: p.stat().st_mtime_ns for p in (out / "motion").iterdir()} == stamps
    again = json.loads((out / "summary.json").read_text())
    assert (again["clips"], again["prepared_now"], again["reused"], again["skipped"]) == (3, 0, 3, 2)
    # new labels relabel the finished clips without redoing them; another --smooth redoes them
    relabelled = tmp_path / "relabelled"
    shutil.copytree(out, relabelled)
    labels = tmp_path / "labels.csv"
    labels.write_text(f"{FACE_CLIPS['M003_neutral_level_1_001'][0]},calm,\n")
    argv = ["prepare", "--videos", str(tree), "--out", str(relabelled), "--no-progress", "--labels", str(labels)]
    assert main(argv) == 0
    emotions = [json.loads(line)["emotion"] for line in (relabelled / "manifest.jsonl").read_text().splitlines()]
    assert emotions == ["happy", "calm", "happy"]
    assert json.loads((relabelled / "summary.json").read_text())["reused"] == 3
    assert main([*argv, "--smooth", "1.0"]) == 0
    assert json.loads((relabelled / "summary.json").read_text())["prepared_now"] == 3
    assert main([*argv, "--smooth", "1.0"]) == 0
    assert json.loads((relabelled / "summary.json").read_text())["reused"] == 3
    assert main([*argv, "--smooth", "1.0", "--neutral-frame", "0"]) == 0  # another tracking reference redoes them
    neutral = json.loads((relabelled / "summary.json").read_text())
    assert neutral["prepared_now"] == 3 and neutral["neutral_frame"] == 0
    assert all(
        json.loads(line)["neutral_frame"] == 0 for line in (relabelled / "manifest.jsonl").read_text().splitlines()
    )
    manifest_before = (relabelled / "manifest.jsonl").read_text()
    assert main([*argv, "--neutral-frame", "99"]) == 2  # no clip has a frame 99: each is skipped, so none is left
    assert (relabelled / "manifest.jsonl").read_text() == manifest_before

    run = tmp_path / "run"
    argv = ["train", "--stage", "emodiff", "--set", f"train.manifest={manifest}", "train.max_steps=2"]
    assert main([*argv, "--out", str(run)]) == 0
    assert (run / "trained" / "emodiff.safetensors").is_file()


@pytest.mark.slow
def test_windows_of_clips_of_different_lengths_batch_together(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Every window's style is its partner clip cropped or looped to emodiff.style_frames, as the encoder reads it."""
    import torch
    from dt_mead_tree import prepared_dataset

    from dream_talk.config import load_shipped_config
    from dream_talk.modeling_dream_talk import fit_style_length
    from dream_talk.training import ManifestWindows

    config = load_shipped_config("tiny")
    dataset = ManifestWindows(prepared_dataset(tmp_path_factory) / "manifest.jsonl", config)
    lengths = {len(motion) for _, motion, _ in dataset.clips}
    assert len(lengths) > 1  # the prepared clips differ in length (one is 20 fps)
    batch = torch.utils.data.default_collate([dataset[i] for i in range(len(dataset))])
    assert batch["style"].shape == (len(dataset), config.emodiff.style_frames, 58)
    clip, _ = dataset.items[0]
    same = [i for i, c in enumerate(dataset.clips) if c[2] == dataset.clips[clip][2]]
    partner = torch.from_numpy(dataset.clips[same[(same.index(clip) + 1) % len(same)]][1])
    torch.testing.assert_close(batch["style"][0], fit_style_length(partner[None], config.emodiff.style_frames)[0])


@pytest.mark.slow
def test_prepare_with_no_usable_clip_exits_2_and_writes_nothing(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from dt_mead_tree import NO_AUDIO, NO_FACE, build_tree

    tree = build_tree(tmp_path_factory)
    videos = tmp_path / "videos"
    for source in (NO_FACE, NO_AUDIO):
        (videos / source).parent.mkdir(parents=True, exist_ok=True)
        (videos / source).write_bytes((tree / source).read_bytes())
    out = tmp_path / "out"
    assert main(["prepare", "--videos", str(videos), "--out", str(out), "--no-progress"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "none of the 2 clips could be prepared" in error[0] and "no audio track" in error[0]
    assert not out.exists()
