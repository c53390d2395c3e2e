"""The ``dream-talk`` command line: speak (files, frame count at the requested rate, the audio track), train,
demo, and bad input -> exit status 2 with one line naming the input, nothing written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dream_talk.cli import main
from dream_talk.demo import demo_portrait, happy_style, synthetic_speech
from dream_talk.motion import mouth_indices
from dream_talk.tracking import portrait_state
from dream_talk.warp_render import portrait_landmarks
from genblocks.audio import read_audio, write_audio
from genblocks.media import read_image, read_video, write_image, write_video

NO_FACE_CHECK = ["--set", "inference.check_face=false"]  # the flat grey test portrait has no face


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("inputs")
    files = {
        "audio": write_audio(folder / "speech.wav", synthetic_speech(1.2, 22050), 22050),
        "image": write_image(folder / "face.png", np.full((64, 48, 3), 128, np.uint8)),
        "style": happy_style(12).write_csv(folder / "happy.csv"),
        "silent": write_audio(folder / "silent.wav", np.zeros(16000, np.float32), 16000),
        "low": write_audio(folder / "low.wav", synthetic_speech(1.0, 4000), 4000),
        "empty": folder / "empty.wav",
        "not_image": folder / "face.txt",
        "bad_style": folder / "bad.csv",
        "video_style": folder / "clip.mp4",
        "garbage_mp3": folder / "garbage.mp3",
        "garbage_wav": folder / "garbage.wav",
        "unknown_style": folder / "unknown.csv",
    }
    noise = np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes()
    files["garbage_mp3"].write_bytes(noise)
    files["garbage_wav"].write_bytes(noise)
    files["empty"].write_bytes(b"")
    files["not_image"].write_text("not an image")
    lines = files["style"].read_text().splitlines()
    files["bad_style"].write_text("\n".join(",".join(line.split(",")[:20]) for line in lines) + "\n")
    files["video_style"].write_bytes(b"\x00" * 10)
    header, *rows = lines
    files["unknown_style"].write_text("\n".join([header + ",tongueRoll", *(row + ",0.5" for row in rows)]) + "\n")
    return files


def test_help_imports_no_model_library() -> None:
    code = (
        "import sys; from dream_talk.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('torch', 'lightning', 'diffusers', 'transformers') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_speak_writes_motion_preview_and_plot(inputs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = [
        "speak",
        *NO_FACE_CHECK,
        "--audio",
        str(inputs["audio"]),
        "--image",
        str(inputs["image"]),
        "--fps",
        "30",
    ]
    assert main([*argv, "--style", str(inputs["style"]), "--out", str(out)]) == 0
    names = {"motion.json", "motion.csv", "preview.mp4", "curves.png", "summary.json"}
    assert names <= {p.name for p in out.iterdir()}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 36 and summary["fps"] == 30.0 and summary["audio_sample_rate"] == 22050
    assert summary["renderer"] == "preview"  # render.kind=warp falls back: the grey portrait has no face
    motion = json.loads((out / "motion.json").read_text())
    assert len(motion["frames"]) == 36 and len(motion["frames"][0]) == 58
    assert all(0.0 <= v <= 1.0 for row in motion["frames"] for v in row[:52])
    track, rate = read_audio(out / "preview.mp4")
    assert abs(track.size / rate - 1.2) < 0.1  # the input audio is muxed in, over the video's 36 / 30 s


@pytest.mark.parametrize(
    ("flag", "key", "message"),
    [
        ("--audio", "missing", "file not found"),
        ("--audio", "empty", "empty.wav"),
        ("--audio", "silent", "silent"),
        ("--audio", "low", "too low"),
        ("--audio", "garbage_mp3", "garbage.mp3: could not be decoded as audio; expected WAV, FLAC"),
        ("--audio", "garbage_wav", "garbage.wav: could not be decoded as audio"),
        ("--image", "not_image", "face.txt: not a readable image: could not be decoded"),
        ("--style", "bad_style", "missing columns"),
        ("--style", "unknown_style", "unknown columns: ['tongueRoll']"),
        ("--style", "video_style", "style video not tracked"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    inputs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, key: str, message: str
) -> None:
    files = {"--audio": inputs["audio"], "--image": inputs["image"], "--style": inputs["style"]}
    files[flag] = inputs.get(key, tmp_path / "missing.wav")
    out = tmp_path / "out"
    argv = ["speak", *NO_FACE_CHECK, "--out", str(out)]
    for name, path in files.items():
        argv += [name, str(path)]
    assert main(argv) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith(f"dream-talk speak: error: {flag} ") and message in error[0]
    assert not out.exists()


def test_train_tiny_then_speak_with_its_weights(inputs: dict[str, Path], tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert main(["train", "--config", "tiny", "--set", "train.max_steps=2", "--out", str(run)]) == 0
    assert (run / "trained" / "emodiff.safetensors").is_file()
    out = tmp_path / "out"
    argv = ["speak", *NO_FACE_CHECK, "--audio", str(inputs["audio"]), "--image", str(inputs["image"])]
    assert main([*argv, "--out", str(out), "--weights", str(run / "trained")]) == 0
    assert json.loads((out / "summary.json").read_text())["frames"] == 30  # 1.2 s at 25 fps


def test_train_lip_with_a_sync_expert_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    class Expert(torch.nn.Module):
        def forward(self, motion: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
            return (motion[..., 17] - audio[..., 0]).pow(2).mean()

    expert = tmp_path / "expert.pt"
    torch.jit.save(torch.jit.script(Expert()), str(expert))
    capsys.readouterr()
    lip = ["train", "--config", "tiny", "--stage", "lip", "--set", "train.max_steps=2", "--set", "lip.w_sync=1"]
    refused = tmp_path / "refused"
    assert main([*lip, "--out", str(refused)]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "lip.w_sync=1.0 needs a lip-sync expert" in error[0] and not refused.exists()
    run = tmp_path / "run"
    assert main([*lip, "--set", f"lip.sync_model={expert}", "--out", str(run)]) == 0
    assert (run / "trained" / "lip_refiner.safetensors").is_file()


def test_demo_writes_a_labelled_card_and_headline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import genblocks.media

    card: dict[str, list[np.ndarray]] = {}
    write_card = genblocks.media.write_demo_card

    def spy(out_dir: Path, title: str, panels: list[np.ndarray], captions: list[str], **kwargs: object) -> object:
        card["panels"] = list(panels)
        return write_card(out_dir, title, panels, captions, **kwargs)

    monkeypatch.setattr(genblocks.media, "write_demo_card", spy)
    assert main(["demo", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary["headline"]) == {
        "frames",
        "motion_real_time_factor",
        "render_real_time_factor",
        "jaw_open_range",
    }
    assert "random weights" in (tmp_path / "README.txt").read_text()
    # the warp renderer when the dlib face extra finds Grace Hopper's face, else the preview
    video = "video.mp4" if summary["renderer"] == "warp" else "preview.mp4"
    for name in (video, "curves.png", "strip.png", "speech.wav", "style.json"):
        assert (tmp_path / name).is_file()
    if summary["renderer"] == "warp":
        frames, _ = read_video(tmp_path / "video.mp4")
        portrait = read_image(demo_portrait()[0])
        assert frames.shape[0] == summary["frames"] and frames.shape[2] == portrait.shape[1]
        # strip.png's frame 0 is the video's frame 0 (same renderer, same reference expression; the video is
        # H.264 with a caption bar below the portrait), and close to the portrait, whose fitted expression it starts
        # from (the lip refiner moves only the mouth). Applying the expression twice gave 13 grey levels.
        first = card["panels"][1].astype(np.float64)
        assert card["panels"][0].shape == first.shape == portrait.shape
        assert np.abs(first - frames[0, : portrait.shape[0]]).mean() < 3.0
        assert np.abs(first - portrait).mean() < 3.0
        track, rate = read_audio(tmp_path / "video.mp4")
        assert rate > 0 and track.size > 0


def test_demo_speaks_the_given_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("espeakng_loader")
    preview = ["--set", "render.kind=preview"]
    assert main(["demo", *preview, "--text", "Good morning to you all.", "--out", str(tmp_path / "a")]) == 0
    assert "speech: espeak-ng" in capsys.readouterr().out
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert (
        summary["speech"] == "espeak-ng" and "Good morning to you all." in (tmp_path / "a" / "README.txt").read_text()
    )
    assert main(["demo", *preview, "--text", "  ", "--out", str(tmp_path / "b")]) == 2
    assert "--text: expected a non-empty sentence" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:  # argparse: one of --audio / --text
        main(["demo", "--text", "Hi.", "--audio", str(tmp_path / "a" / "speech.wav"), "--out", str(tmp_path / "c")])
    assert exit_info.value.code == 2 and not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


def test_portrait_without_a_face_exits_2_naming_image(
    inputs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    argv = ["speak", "--audio", str(inputs["audio"]), "--image", str(inputs["image"]), "--out", str(out)]
    assert main(argv) == 2  # no face found, or (without the face extra) the extra named
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "--image" in error[0] and ("no face" in error[0] or "face extra" in error[0])
    assert not out.exists()


@pytest.fixture(scope="module")
def face_video(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The astronaut portrait (cropped to her head) as a 5-frame video whose frame 2 is blank, and the portrait."""
    skimage_data = pytest.importorskip("skimage.data")
    pytest.importorskip("dlib")
    folder = tmp_path_factory.mktemp("video")
    head = skimage_data.astronaut()[0:256, 96:352]
    frames = np.stack([np.roll(head, shift, axis=1) for shift in (0, 2, 4, 6, 8)])
    frames[2] = 128
    return write_video(folder / "clip.mp4", frames, fps=10.0), write_image(folder / "astronaut.png", head)


def test_track_writes_motion_and_counts_gap_frames(face_video: tuple[Path, Path], tmp_path: Path) -> None:
    assert main(["track", "--video", str(face_video[0]), "--out", str(tmp_path), "--smooth", "0.5"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["frames"] == 5 and summary["gap_frames"] == 1 and summary["gap_frame_indices"] == [2]
    motion = json.loads((tmp_path / "motion.json").read_text())
    assert np.isfinite(np.array(motion["frames"])).all() and len(motion["frames"][0]) == 58


def test_track_measures_from_a_neutral_frame(
    face_video: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    video = str(face_video[0])
    assert main(["track", "--video", video, "--out", str(tmp_path / "a"), "--neutral-frame", "0"]) == 0
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["neutral_frame"] == 0 and summary["gap_frame_indices"] == [2]
    values = np.array(json.loads((tmp_path / "a" / "motion.json").read_text())["frames"])
    assert np.abs(values[0]).max() < 1e-5  # the neutral frame itself: no expression, zero pose
    assert np.abs(values[1:]).max() > 0  # the others are measured from it (dlib's ~1 px jitter moves the weights)
    capsys.readouterr()
    for frame, message in (("2", "no face found in it"), ("9", "the clip has 5 frames")):
        out = tmp_path / f"bad{frame}"
        assert main(["track", "--video", video, "--out", str(out), "--neutral-frame", frame]) == 2
        error = capsys.readouterr().err.strip().splitlines()
        assert len(error) == 1 and error[0].startswith(f"dream-talk track: error: --neutral-frame {frame}: ")
        assert message in error[0] and not out.exists()


def test_a_style_video_is_tracked_from_inference_style_neutral_frame(face_video: tuple[Path, Path]) -> None:
    from dream_talk.config import load_shipped_config
    from dream_talk.inference import load_style
    from dream_talk.tracking import track_video

    video = face_video[0]
    relative = load_style(video, load_shipped_config("tiny", ["inference.style_neutral_frame=0"]))
    assert np.abs(relative[0]).max() < 1e-5
    np.testing.assert_array_equal(relative, track_video(video, fps=25.0, neutral_frame=0).motion.values)
    assert np.abs(load_style(video, load_shipped_config("tiny"))[0]).max() > 0.1  # from the template: not zero


def test_speak_with_a_real_portrait_and_a_style_video(
    face_video: tuple[Path, Path], inputs: dict[str, Path], tmp_path: Path
) -> None:
    video, portrait = face_video
    argv = ["speak", "--audio", str(inputs["audio"]), "--image", str(portrait), "--style", str(video)]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["frames"] == 30 and summary["initial_state"] == "portrait"
    # the first frame is the portrait's own fitted expression (every channel but the lip-refined mouth ones)
    state = portrait_state(portrait_landmarks(read_image(portrait)))
    assert np.abs(state[:52]).max() > 0.01  # the astronaut is not the proxy's neutral face
    first = np.array(json.loads((tmp_path / "motion.json").read_text())["frames"][0])
    kept = [i for i in range(58) if i not in mouth_indices()]
    assert np.abs(first[kept] - state[kept]).max() < 1e-5
    neutral = tmp_path / "neutral"
    assert main([*argv, "--out", str(neutral), "--set", "inference.initial_state=neutral"]) == 0
    assert json.loads((neutral / "summary.json").read_text())["initial_state"] == "neutral"
    first = np.array(json.loads((neutral / "motion.json").read_text())["frames"][0])
    assert np.abs(first[kept]).max() < 1e-5


@pytest.mark.parametrize("content", ["unreadable", "blank"])
def test_track_bad_video_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str
) -> None:
    if content == "unreadable":
        video = tmp_path / "clip.mp4"
        video.write_bytes(b"\x00" * 10)
    else:
        pytest.importorskip("dlib")
        video = write_video(tmp_path / "clip.mp4", np.full((3, 64, 64, 3), 128, np.uint8), fps=10.0)
    out = tmp_path / "out"
    assert main(["track", "--video", str(video), "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("dream-talk track: error: --video")
    assert content == "unreadable" or "no face" in error[0]
    assert not out.exists()
