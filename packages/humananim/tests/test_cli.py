"""The humananim command line: keypoints (json backend, gap count, retargeting onto the astronaut), prepare, eval, and
exit status 2 with one line on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata

from genblocks.media import write_image, write_video
from humananim.cli import main
from humananim.keypoints import PARTS, Keypoints, body_template, load_keypoints, save_keypoints, scripted_dance

W, H = 80, 112


def person(width: int = W, height: int = H, scale: float = 1.0) -> Keypoints:
    angles = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    cx, cy = width / 2, 14 * scale
    face = np.stack([cx + 5 * scale * np.cos(angles), cy + 6 * scale * np.sin(angles)], 1)
    face[8], face[17:27, 1] = (cx, cy + 6 * scale), cy - 5 * scale
    return body_template(face, width, height)


def openpose_folder(folder: Path, keypoints: Keypoints, empty: tuple[int, ...] = ()) -> Path:
    folder.mkdir(parents=True)
    for index, frame in enumerate(keypoints.points):
        people = (
            []
            if index in empty
            else [
                {
                    "pose_keypoints_2d": frame[PARTS["body"]].ravel().tolist(),
                    "hand_left_keypoints_2d": frame[PARTS["left_hand"]].ravel().tolist(),
                    "hand_right_keypoints_2d": frame[PARTS["right_hand"]].ravel().tolist(),
                    "face_keypoints_2d": frame[PARTS["face"]].ravel().tolist(),
                }
            ]
        )
        payload = {"people": people, "canvas_width": keypoints.width, "canvas_height": keypoints.height}
        (folder / f"{index:04d}_keypoints.json").write_text(json.dumps(payload))
    return folder


def video(path: Path, frames: int = 6, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    return write_video(path, rng.integers(0, 256, (frames, H, W, 3), dtype=np.uint8), fps=8)


def test_keypoints_json_backend_fills_counts_and_retargets_onto_the_astronaut(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dance = scripted_dance(person(), 6)
    pose = openpose_folder(tmp_path / "pose", dance, empty=(2, 3))
    astronaut = skdata.astronaut()  # 512 x 512 reference
    write_image(tmp_path / "ref.png", astronaut)
    reference = person(512, 512, scale=4.0)
    save_keypoints(reference, tmp_path / "ref.json")
    status = main([
        "keypoints", "--driving", str(video(tmp_path / "drive.gif")), "--pose", str(pose), "--image",
        str(tmp_path / "ref.png"), "--reference-pose", str(tmp_path / "ref.json"), "--out", str(tmp_path / "out"),
    ])  # fmt: skip
    assert status == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["empty_frames"] == [2, 3] and report["retargeted"]
    assert "nobody found in 2 of 6 frames" in capsys.readouterr().out
    out = load_keypoints(tmp_path / "out" / "keypoints.json")
    assert (out.width, out.height, len(out)) == (512, 512, 6)
    np.testing.assert_allclose(out.points[0, 1, :2], reference.points[0, 1, :2], atol=1e-2)  # on the reference's neck
    upper_arm = np.linalg.norm(out.points[:, 3, :2] - out.points[:, 2, :2], axis=-1)
    ref_arm = np.linalg.norm(reference.points[0, 3, :2] - reference.points[0, 2, :2])
    np.testing.assert_allclose(upper_arm, ref_arm, rtol=1e-3)
    assert (tmp_path / "out" / "pose.gif").stat().st_size > 0


def test_bad_inputs_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    drive = video(tmp_path / "drive.gif")
    pose = openpose_folder(tmp_path / "pose", scripted_dance(person(), 6))
    write_image(tmp_path / "ref.png", skdata.astronaut())
    save_keypoints(Keypoints(np.zeros((1, 128, 3)), 512, 512), tmp_path / "nobody.json")
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    bad_layout = tmp_path / "bad"
    bad_layout.mkdir()
    frame = {
        "people": [{"pose_keypoints_2d": [1.0] * 54, "hand_left_keypoints_2d": [1.0] * 60}],
        "canvas_width": W,
        "canvas_height": H,
    }
    (bad_layout / "0000.json").write_text(json.dumps(frame))
    empty = openpose_folder(tmp_path / "empty", scripted_dance(person(), 3), empty=(0, 1, 2))
    cases = {
        "no person found in the reference": [
            "--pose",
            str(pose),
            "--image",
            str(tmp_path / "ref.png"),
            "--reference-pose",
            str(tmp_path / "nobody.json"),
        ],
        "broken.mp4": ["--pose", str(pose)],
        "hand_left_keypoints_2d must hold 21": ["--pose", str(bad_layout)],
        "nobody found in any of the 3 frames": ["--pose", str(empty)],
        "--pose: the json backend needs": [],
    }
    for expected, extra in cases.items():
        driving = tmp_path / "broken.mp4" if expected == "broken.mp4" else drive
        status = main(["keypoints", "--driving", str(driving), *extra, "--out", str(tmp_path / "o")])
        err = capsys.readouterr().err.strip()
        assert status == 2 and len(err.splitlines()) == 1 and expected in err, (expected, err)
    assert (
        main(["keypoints", "--driving", str(drive), "--set", "keypoints.smoth_window=3", "--out", str(tmp_path / "o")])
        == 2
    )
    assert "smoth_window" in capsys.readouterr().err


def test_prepare_writes_frames_keypoints_and_a_manifest(tmp_path: Path) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    video(videos / "a.gif", frames=5)
    openpose_folder(videos / "a", scripted_dance(person(), 5), empty=(1,))
    video(videos / "b.gif", frames=4, seed=1)  # no keypoints beside it: skipped
    status = main(["prepare", "--videos", str(videos), "--set", "data.frame_stride=2", "--out", str(tmp_path / "ds")])
    assert status == 0
    rows = [json.loads(line) for line in (tmp_path / "ds" / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["num_frames"] == 3 and rows[0]["empty_frames"] == 0  # frames 0, 2, 4
    assert len(list((tmp_path / "ds" / "a" / "frames").glob("*.png"))) == 3
    assert len(load_keypoints(tmp_path / "ds" / rows[0]["keypoints"])) == 3


def test_eval_writes_metrics_with_notes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    truth = video(tmp_path / "truth.gif")
    status = main(["eval", "--generated", str(truth), "--reference", str(truth), "--out", str(tmp_path / "ev")])
    assert status == 0
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["l1"] == 0 and metrics["ssim"] == pytest.approx(1.0) and len(metrics["notes"]) == 3
    assert "note: LPIPS skipped" in capsys.readouterr().out
    assert (
        main(
            ["eval", "--generated", str(truth), "--reference", str(tmp_path / "x.mp4"), "--out", str(tmp_path / "ev")]
        )
        == 2
    )


def test_train_smoke_with_two_steps(tmp_path: Path) -> None:
    status = main(
        ["train", "--config", "tiny", "--stage", "image", "--set", "train.max_steps=2", "--out", str(tmp_path / "run")]
    )
    assert status == 0
    assert (tmp_path / "run" / "trained" / "model_index.json").is_file()
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    assert (
        main(["train", "--config", "tiny", "--set", "train.manifest=missing.jsonl", "--out", str(tmp_path / "r2")])
        == 2
    )


def test_demo_writes_the_labelled_strip_and_gifs(tmp_path: Path) -> None:
    assert main(["demo", "--config", "tiny", "--frames", "4", "--out", str(tmp_path / "demo")]) == 0
    for name in ("strip.png", "README.txt", "animation.gif", "side_by_side.gif", "skeleton.gif", "reference.png"):
        assert (tmp_path / "demo" / name).stat().st_size > 0, name
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert (summary["frames"] == 4 and "body template" in summary["skeleton_from"]) or summary[
        "skeleton_from"
    ] == "mediapipe"
    print(
        f"demo skeleton from: {summary['skeleton_from']}; {summary['seconds_per_frame']:.2f} s per frame (tiny, CPU)"
    )


def test_animate_a_keypoint_file_end_to_end_and_bad_pose_input(tmp_path: Path) -> None:
    save_keypoints(scripted_dance(person(), 4), tmp_path / "dance.json")
    write_image(tmp_path / "ref.png", skdata.astronaut()[:448, 96:416])
    status = main(
        [
            "animate",
            "--image",
            str(tmp_path / "ref.png"),
            "--pose",
            str(tmp_path / "dance.json"),
            "--out",
            str(tmp_path / "anim"),
        ]
    )
    assert status == 0
    assert (tmp_path / "anim" / "animation.gif").stat().st_size > 0 and (tmp_path / "anim" / "strip.png").is_file()
    assert len(load_keypoints(tmp_path / "anim" / "keypoints.json")) == 4
    assert main(["animate", "--image", str(tmp_path / "ref.png"), "--out", str(tmp_path / "a2")]) == 2


def test_convert_a_magicanimate_folder_round_trip(tmp_path: Path) -> None:
    from humananim.config import tiny_config
    from humananim.convert import export_magicanimate
    from humananim.pipeline import load_components

    source = load_components(tiny_config())
    torch.manual_seed(1)
    for p in source.reference_unet.parameters():
        p.data.add_(0.01 * torch.randn_like(p))  # differs from a fresh copy, so loading is visible
    export_magicanimate(source, tmp_path / "ma")
    status = main(["convert", "--checkpoint", str(tmp_path / "ma"), "--out", str(tmp_path / "conv")])
    assert status == 0
    report = json.loads((tmp_path / "conv" / "conversion_report.json").read_text())
    assert all(not part["missing_keys"] and not part["unexpected_keys"] for part in report["parts"].values())
    from humananim.pipeline import HumanAnimPipeline

    loaded = HumanAnimPipeline.from_pretrained(tmp_path / "conv")
    for name, value in source.reference_unet.state_dict().items():
        assert torch.equal(loaded.reference_unet.state_dict()[name], value), name
    assert main(["convert", "--checkpoint", str(tmp_path / "missing"), "--out", str(tmp_path / "c2")]) == 2


def test_animate_a_driving_video_through_the_dlib_detector(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--driving runs the keypoint detector (the offline dlib backend of the main environment): the astronaut's face
    slides 6 px left per frame, one frame shows nobody (interpolated and counted), the result follows the slide."""
    pytest.importorskip("dlib")
    small = np.asarray(Image.fromarray(skdata.astronaut()).resize((256, 256), Image.Resampling.LANCZOS))
    frames = np.stack([small[10:170, 40 + 6 * t : 160 + 6 * t] for t in range(6)])  # (6, 160, 120, 3)
    frames[3] = 128  # nobody in frame 3
    write_video(tmp_path / "drive.gif", frames, fps=8)
    write_image(tmp_path / "ref.png", small)
    status = main(
        [
            *["animate", "--config", "tiny", "--image", str(tmp_path / "ref.png")],
            *["--driving", str(tmp_path / "drive.gif"), "--backend", "dlib", "--out", str(tmp_path / "anim")],
        ]
    )
    out = capsys.readouterr().out
    assert status == 0, out
    assert "nobody found in 1 of 6 frames" in out
    keypoints = load_keypoints(tmp_path / "anim" / "keypoints.json")
    assert (keypoints.width, keypoints.height, len(keypoints)) == (48, 64, 6)
    assert keypoints.valid()[:, :18].any(axis=1).all()  # frame 3 filled in
    neck_x = keypoints.points[:, 1, 0]
    assert (np.diff(neck_x) < 0).all(), neck_x  # the detected face's slide, retargeted onto the reference
    assert (tmp_path / "anim" / "animation.gif").stat().st_size > 0 and (tmp_path / "anim" / "strip.png").is_file()
    close_up = np.asarray(Image.fromarray(skdata.astronaut()[0:220, 140:330]).resize((256, 256)))
    write_image(tmp_path / "face.png", close_up)  # the neck is out of the picture: nothing to retarget onto
    argv = ["animate", "--image", str(tmp_path / "face.png"), "--driving", str(tmp_path / "drive.gif")]
    assert main([*argv, "--backend", "dlib", "--out", str(tmp_path / "a2")]) == 2
    assert "reference image: no person found" in capsys.readouterr().err


def test_keypoints_max_gap_decides_which_missing_hands_are_filled(tmp_path: Path) -> None:
    dance = scripted_dance(person(), 8)
    points = dance.points.copy()
    points[2:5, PARTS["left_hand"], 2] = 0.0  # the left hand is missed in frames 2-4 (a gap of 3)
    pose = openpose_folder(tmp_path / "pose", dance.replace(points))
    drive = video(tmp_path / "drive.gif", frames=8)
    filled = {}
    for max_gap in (3, 2):
        out = tmp_path / f"gap{max_gap}"
        arguments = ["--set", f"keypoints.max_gap={max_gap}", "keypoints.smooth_window=1"]
        assert main(["keypoints", "--driving", str(drive), "--pose", str(pose), *arguments, "--out", str(out)]) == 0
        filled[max_gap] = json.loads((out / "report.json").read_text())["filled_points"]
        hand = load_keypoints(out / "keypoints.json").valid()[2:5][:, PARTS["left_hand"]]
        assert hand.all() if max_gap == 3 else not hand.any(), max_gap
    assert filled == {3: 3 * 21, 2: 0}


def test_smoke_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["smoke"]) == 0
    err = capsys.readouterr().err
    assert "humananim smoke: ok: 4 frames of 64x48" in err and "reproduces the animation" in err
