"""Keypoints: the JSON layout and OpenPose files, gap filling, smoothing, retargeting, hint rendering, blur channels and
the dwpose decoding through a fake onnxruntime session."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from genblocks.errors import InputError
from humananim.keypoints import (
    BODY_LIMBS,
    PARTS,
    SHARPNESS_FLOOR,
    Keypoints,
    blur_channels,
    body_template,
    fill_gaps,
    load_keypoints,
    part_boxes,
    pose_hint,
    prepare_driving,
    render_pose,
    retarget,
    save_keypoints,
    scripted_dance,
    smooth_keypoints,
)
from humananim.keypoints_backends import (
    MEDIAPIPE_INSTALL,
    DWPoseBackend,
    coco_wholebody_to_layout,
    decode_simcc,
    extract_keypoints,
    load_backend,
)

W, H = 96, 160


def skeleton(width: int = W, height: int = H, scale: float = 1.0, arm: float = 1.0) -> Keypoints:
    """A one-frame standing person (body, hands and face) built from body_template on a synthetic face."""
    angles = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    face = np.stack([width / 2 + 6 * scale * np.cos(angles), 22 + 8 * scale * np.sin(angles)], 1)
    face[8] = (width / 2, 30 * scale + 22 - 22 * scale)  # chin
    face[17:27, 1] = 22 - 6 * scale  # brows
    kp = body_template(face, width, height)
    if arm != 1.0:  # stretch the forearms: other proportions
        points = kp.points.copy()
        for elbow, wrist, hand in ((3, 4, "right_hand"), (6, 7, "left_hand")):
            shift = (points[0, wrist, :2] - points[0, elbow, :2]) * (arm - 1)
            points[0, wrist, :2] += shift
            points[0, PARTS[hand], :2] += shift
        kp = kp.replace(points)
    return kp


def test_json_round_trip_and_layout(tmp_path: Path) -> None:
    dance = scripted_dance(skeleton(), 5)
    path = save_keypoints(dance, tmp_path / "kp.json")
    data = json.loads(path.read_text())
    assert data["format"] == "humananim-keypoints" and data["width"] == W and data["height"] == H
    assert [len(data["frames"][0][name]) for name in ("body", "left_hand", "right_hand", "face")] == [18, 21, 21, 68]
    back = load_keypoints(tmp_path)  # a folder holding keypoints.json reads that file
    np.testing.assert_allclose(back.points, dance.points, atol=5e-4)
    data["frames"][2]["left_hand"] = data["frames"][2]["left_hand"][:20]
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match=r"frame 2 left_hand must hold 21"):
        load_keypoints(path)


def test_openpose_folder_body25_face70_largest_person_and_normalised_canvas(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for i in range(3):
        body25 = np.concatenate([rng.uniform(0.1, 0.9, (25, 2)), np.ones((25, 1))], 1)
        small = body25.copy()
        small[:, :2] = 0.5 + 0.01 * (small[:, :2] - 0.5)  # a tiny person in the background
        people = [
            {"pose_keypoints_2d": small.ravel().tolist()},
            {
                "pose_keypoints_2d": body25.ravel().tolist(),
                "face_keypoints_2d": np.tile([0.5, 0.5, 0.9], 70).tolist(),
                "hand_left_keypoints_2d": np.tile([0.2, 0.3, 0.8], 21).tolist(),
            },
        ]
        frame = {"people": people if i != 1 else [], "canvas_width": 200, "canvas_height": 100}
        (tmp_path / f"{i:04d}_keypoints.json").write_text(json.dumps(frame))
        if i == 0:
            expected = body25
    kp = load_keypoints(tmp_path)
    assert (len(kp), kp.width, kp.height) == (3, 200, 100)
    coco = [0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18]  # BODY_25 without MidHip and feet
    np.testing.assert_allclose(kp.points[0, :18, 0], expected[coco, 0] * 200, rtol=1e-5)
    np.testing.assert_allclose(kp.points[0, :18, 1], expected[coco, 1] * 100, rtol=1e-5)
    np.testing.assert_allclose(kp.part("face")[0, :, :2], np.tile([100.0, 50.0], (68, 1)))
    assert kp.part("right_hand")[0, :, 2].max() == 0 and kp.part("left_hand")[0, 0, 2] == pytest.approx(0.8)
    assert not kp.points[1].any()  # nobody in frame 1
    bad = {"people": [{"pose_keypoints_2d": [1.0] * 17 * 3}], "canvas_width": 200, "canvas_height": 100}
    (tmp_path / "0009_keypoints.json").write_text(json.dumps(bad))
    with pytest.raises(InputError, match="17 points, expected 18"):
        load_keypoints(tmp_path)
    with pytest.raises(InputError, match="no such keypoint file"):
        load_keypoints(tmp_path / "missing")


def test_fill_gaps_interpolates_empty_frames_counts_them_and_keeps_long_absences() -> None:
    base = skeleton().points[0]
    frames = 10
    points = np.repeat(base[None], frames, axis=0)
    points[:, :, 0] += np.arange(frames, dtype=np.float32)[:, None] * 2.0  # uniform motion to the right
    truth = points.copy()
    points[3:5] = 0.0  # nobody found in frames 3 and 4
    points[0] = 0.0  # nor in the first frame
    points[2:9, PARTS["left_hand"]] = 0.0  # the left hand out of view for 7 frames (> max_gap)
    points[6, 5, 2] = 0.1  # one low-confidence left shoulder
    filled, report = fill_gaps(Keypoints(points, W, H), max_gap=3)
    assert report.empty_frames == (0, 3, 4)
    np.testing.assert_allclose(filled.points[3:5, PARTS["body"], :2], truth[3:5, PARTS["body"], :2], atol=1e-4)
    np.testing.assert_allclose(filled.points[6, 5, :2], truth[6, 5, :2], atol=1e-4)
    np.testing.assert_allclose(filled.points[0, :18, :2], truth[1, :18, :2])  # held before the first detection
    assert filled.points[5:9, PARTS["left_hand"], 2].max() == 0  # long absence in found frames stays absent
    assert filled.points[3, PARTS["left_hand"], 2].min() > 0  # but the empty frames get every point
    assert report.filled_points == 3 * 128 + 1  # the empty frames' points and the shoulder
    assert "nobody found in 3 of 10 frames" in report.summary()
    with pytest.raises(InputError, match="nobody found in any of the 4 frames"):
        fill_gaps(Keypoints(np.zeros((4, 128, 3)), W, H))


def test_smoothing_keeps_constant_and_linear_motion_and_shrinks_jitter() -> None:
    rng = np.random.default_rng(0)
    base = skeleton().points[0]
    linear = np.repeat(base[None], 30, axis=0)
    linear[:, :, 1] += np.arange(30, dtype=np.float32)[:, None] * 0.5
    smoothed = smooth_keypoints(Keypoints(linear, W, H), window=7)
    np.testing.assert_allclose(smoothed.points[5:-5], linear[5:-5], atol=1e-3)
    noisy = linear.copy()
    noisy[:, :, :2] += rng.normal(0, 1.0, noisy[:, :, :2].shape).astype(np.float32)
    noisy[7, 40, 2] = 0.0  # an absent point stays absent and untouched
    out = smooth_keypoints(Keypoints(noisy, W, H), window=7).points
    before = np.abs(noisy[5:-5, :, :2] - linear[5:-5, :, :2]).std()
    after = np.abs(out[5:-5, :, :2] - linear[5:-5, :, :2]).std()
    print(f"smoothing over 7 frames: jitter std {before:.3f} -> {after:.3f} px")
    assert after < 0.6 * before
    assert out[7, 40, 2] == 0 and np.array_equal(out[7, 40], noisy[7, 40])


def _limb_lengths(points: np.ndarray) -> np.ndarray:
    return np.stack([np.linalg.norm(points[:, b, :2] - points[:, a, :2], axis=-1) for a, b in BODY_LIMBS], 1)


def test_retarget_gives_the_reference_bone_lengths_and_the_driving_directions() -> None:
    reference = skeleton(width=W, height=H, scale=1.0)
    driver = skeleton(width=W, height=H, scale=0.8, arm=1.6)  # smaller person, long forearms
    driving = scripted_dance(driver, 8, amplitude=0.5)
    driving.points[:, :, 0] += 7.0  # and standing elsewhere
    out = retarget(driving, reference)
    ref_lengths = _limb_lengths(reference.points)[0]
    np.testing.assert_allclose(_limb_lengths(out.points), np.broadcast_to(ref_lengths, (8, 17)), rtol=1e-4)
    for a, b in BODY_LIMBS:
        drive_dir = driving.points[:, b, :2] - driving.points[:, a, :2]
        out_dir = out.points[:, b, :2] - out.points[:, a, :2]
        cos = (drive_dir * out_dir).sum(-1) / np.linalg.norm(drive_dir, axis=-1) / np.linalg.norm(out_dir, axis=-1)
        np.testing.assert_allclose(cos, 1.0, atol=1e-5)
    np.testing.assert_allclose(out.points[0, 1, :2], reference.points[0, 1, :2], atol=1e-4)  # placed on its neck
    # the hand follows the retargeted wrist with the reference's hand size
    np.testing.assert_allclose(out.points[:, PARTS["right_hand"].start, :2], out.points[:, 4, :2], atol=1e-3)
    drive_span = np.ptp(driver.part("right_hand")[0, :, :2], axis=0).max()
    ref_span = np.ptp(reference.part("right_hand")[0, :, :2], axis=0).max()
    out_span = np.ptp(out.part("right_hand")[0, :, :2], axis=0).max()
    assert abs(out_span - ref_span) < 0.02 * ref_span and abs(drive_span - ref_span) > 0.1 * ref_span
    with pytest.raises(InputError, match="reference image: no person found"):
        retarget(driving, Keypoints(np.zeros((1, 128, 3)), W, H))


def test_prepare_driving_resizes_fills_and_retargets() -> None:
    driving = scripted_dance(skeleton(), 6)
    driving.points[2] = 0.0
    small = driving.resized(48, 64)
    out, report = prepare_driving(small, reference=skeleton(), smooth_window=5)
    assert report.empty_frames == (2,) and (out.width, out.height) == (W, H)
    assert out.points[2, :18, 2].min() > 0


def test_render_pose_draws_joints_in_their_colours_and_nothing_else() -> None:
    kp = skeleton()
    kp.points[0, 10, 2] = 0.0  # the right ankle is absent: neither it nor its limb is drawn
    image = render_pose(kp)[0]
    assert image.shape == (H, W, 3) and image.dtype == np.uint8
    x, y = np.round(kp.points[0, 1, :2]).astype(int)
    assert tuple(image[y, x]) == (255, 85, 0)  # the neck's OpenPose colour
    x, y = np.round(kp.points[0, PARTS["face"].start + 30, :2]).astype(int)
    assert tuple(image[y, x]) == (255, 255, 255)  # a face point
    x, y = np.round(kp.points[0, PARTS["left_hand"].start + 8, :2]).astype(int)
    assert tuple(image[y, x]) == (0, 0, 255)  # a hand joint
    knee, ankle = kp.points[0, 9, :2], kp.points[0, 10, :2]
    below = np.round(knee + 0.8 * (ankle - knee)).astype(int)
    assert not image[below[1], below[0]].any()
    assert not render_pose(Keypoints(np.zeros((1, 128, 3)), W, H)).any()


def test_part_boxes_cover_the_part_and_report_absence() -> None:
    kp = skeleton()
    boxes, valid = part_boxes(kp, "face", margin=0.0)
    face = kp.part("face")[0, :, :2]
    np.testing.assert_allclose(boxes[0], [*face.min(0), *face.max(0)], atol=1e-4)
    kp.points[0, PARTS["left_hand"], 2] = 0
    boxes, valid = part_boxes(kp, "left_hand")
    assert not valid[0] and not boxes[0].any()


def _moving_hand(speed: float, frames: int = 5) -> Keypoints:
    base = skeleton().points[0]
    points = np.repeat(base[None], frames, axis=0)
    points[:, PARTS["right_hand"], 0] += np.arange(frames, dtype=np.float32)[:, None] * speed
    return Keypoints(points, W, H)


def test_blur_channels_zero_for_a_still_hand_and_growing_with_speed() -> None:
    magnitudes = []
    for speed in (0.0, 1.0, 2.0, 4.0):
        channels = blur_channels(_moving_hand(speed), sharpness=1.0)
        assert channels.shape == (5, 3, H, W)
        boxes, _ = part_boxes(_moving_hand(speed), "right_hand")
        x0, y0, x1, y1 = boxes[2].astype(int)
        inside = channels[2, 0, y0 + 1 : y1, x0 + 1 : x1]
        np.testing.assert_allclose(inside, speed / W, rtol=1e-5)  # dx / W
        assert not channels[2, 1].any()  # no vertical motion
        magnitudes.append(float(inside.mean()))
        outside = np.ones((H, W), dtype=bool)
        for name in ("left_hand", "right_hand"):
            b = part_boxes(_moving_hand(speed), name)[0][2]
            outside[int(b[1]) : int(np.ceil(b[3])) + 1, int(b[0]) : int(np.ceil(b[2])) + 1] = False
        assert not channels[2][:, outside].any()  # rasterised on the hands only
    print("blur dx on the hand vs speed 0/1/2/4 px per frame:", [round(m, 4) for m in magnitudes])
    assert magnitudes[0] == 0 and magnitudes[1] < magnitudes[2] < magnitudes[3]
    left = blur_channels(_moving_hand(3.0), sharpness=1.0)[:, :2]
    box = part_boxes(_moving_hand(3.0), "left_hand")[0][2].astype(int)
    assert not left[2, :, box[1] + 1 : box[3], box[0] + 1 : box[2]].any()  # the still left hand has zero motion


def test_sharpness_channel_measures_the_frames() -> None:
    rng = np.random.default_rng(0)
    kp = _moving_hand(0.0, frames=2)
    sharp = rng.integers(0, 256, (2, H, W, 3), dtype=np.uint8)
    smooth = np.full((2, H, W, 3), 128, dtype=np.uint8)
    s_sharp = blur_channels(kp, frames=sharp)[0, 2]
    s_flat = blur_channels(kp, frames=smooth)[0, 2]
    assert s_sharp.max() > 0.9 and s_flat.max() == SHARPNESS_FLOOR  # > 0 on the hands even when flat
    assert s_flat[s_sharp == 0].max() == 0.0 and (s_flat > 0).sum() == (s_sharp > 0).sum()
    hint = pose_hint(kp, sharpness=1.0)
    assert hint.shape == (2, 6, H, W) and hint[:, :3].max() <= 1.0 and hint[:, 5].max() == 1.0
    with pytest.raises(InputError, match="frames: expected shape"):
        blur_channels(kp, frames=sharp[:1])


class _Input(SimpleNamespace):
    pass


class FakePoseSession:
    """A whole-body "model" that puts all 133 SimCC peaks on the brightness centroid of its input crop."""

    def __init__(self, width: int = 48, height: int = 64) -> None:
        self.width, self.height = width, height
        self.calls = 0

    def get_inputs(self) -> list[_Input]:
        return [_Input(name="input", shape=[1, 3, self.height, self.width])]

    def run(self, output_names: object, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        self.calls += 1
        image = feed["input"][0].sum(0)
        image = image - image.min()
        ys, xs = np.mgrid[: self.height, : self.width]
        x = float((image * xs).sum() / image.sum())
        y = float((image * ys).sum() / image.sum())
        simcc_x = np.zeros((1, 133, 2 * self.width), dtype=np.float32)
        simcc_y = np.zeros((1, 133, 2 * self.height), dtype=np.float32)
        simcc_x[0, :, round(2 * x)] = 0.9  # SimCC bins are half input pixels
        simcc_y[0, :, round(2 * y)] = 0.8
        return [simcc_x, simcc_y]


class FakeDetector:
    """A YOLOX-with-NMS "model" returning fixed boxes (in letterbox pixels) and scores."""

    def __init__(self, boxes: np.ndarray) -> None:
        self.boxes = boxes
        self.seen: np.ndarray | None = None

    def get_inputs(self) -> list[_Input]:
        return [_Input(name="images", shape=[1, 3, 64, 64])]

    def run(self, output_names: object, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        self.seen = feed["images"]
        return [self.boxes[None].astype(np.float32)]


def test_dwpose_decoding_maps_simcc_peaks_back_to_the_frame() -> None:
    frame = np.zeros((80, 120, 3), dtype=np.uint8)
    frame[28:33, 68:73] = 255  # the only bright blob, centred on (70, 30): where every keypoint should land
    # letterbox ratio min(64/80, 64/120) = 0.5333; a box around the dot, plus a low-score one that is ignored
    ratio = 64 / 120
    boxes = np.array([[50 * ratio, 10 * ratio, 90 * ratio, 50 * ratio, 0.9], [0, 0, 5, 5, 0.1]])
    detector = FakeDetector(boxes)
    backend = DWPoseBackend(FakePoseSession(), det_model=detector)
    points = backend(frame)
    assert detector.seen is not None and detector.seen.shape == (1, 3, 64, 64)
    assert detector.seen[0, :, 63, 0].tolist() == [114.0, 114.0, 114.0]  # the letterbox padding
    assert backend.pose.calls == 1  # type: ignore[attr-defined]
    body = points[:18]
    np.testing.assert_allclose(body[[0, 2, 3], :2], [[70, 30]] * 3, atol=1.0)
    np.testing.assert_allclose(body[:, 2], 0.8)  # the smaller of the two maxima
    np.testing.assert_allclose(points[PARTS["face"], :2], np.tile([70, 30], (68, 1)), atol=1.0)
    # without a detector, the whole frame is the box
    whole = DWPoseBackend(FakePoseSession())(frame)
    np.testing.assert_allclose(whole[0, :2], [70, 30], atol=2.0)
    assert not DWPoseBackend(FakePoseSession(), det_model=FakeDetector(boxes[1:]))(frame).any()
    kp = extract_keypoints(np.stack([frame, frame]), backend)
    assert (len(kp), kp.width, kp.height) == (2, 120, 80)


def test_simcc_and_wholebody_conversion() -> None:
    simcc_x = np.zeros((3, 10), dtype=np.float32)
    simcc_y = np.zeros((3, 8), dtype=np.float32)
    simcc_x[0, 7], simcc_y[0, 3] = 0.5, 0.7
    simcc_x[1, 2], simcc_y[1, 5] = 0.9, 0.4
    locations, scores = decode_simcc(simcc_x, simcc_y)
    np.testing.assert_allclose(locations[:2], [[3.5, 1.5], [1.0, 2.5]])
    np.testing.assert_allclose(scores, [0.5, 0.4, 0.0])
    assert locations[2].tolist() == [-1.0, -1.0]
    coco = np.arange(133 * 2, dtype=np.float32).reshape(133, 2)
    out = coco_wholebody_to_layout(coco, np.linspace(0.1, 1, 133).astype(np.float32))
    np.testing.assert_allclose(out[1, :2], (coco[5] + coco[6]) / 2)  # neck
    np.testing.assert_allclose(out[2, :2], coco[6])  # right shoulder
    np.testing.assert_allclose(out[PARTS["right_hand"], :2], coco[112:133])


def test_backends_report_missing_dependencies_and_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "mediapipe", None)
    with pytest.raises(ImportError, match=r"mediapipe 0\.10\.21") as info:
        load_backend("mediapipe")
    assert str(info.value) == MEDIAPIPE_INSTALL
    monkeypatch.setitem(sys.modules, "dlib", None)
    with pytest.raises(ImportError, match=r"humananim\[face\]"):
        load_backend("dlib")
    with pytest.raises(InputError, match=r"--pose-model .*no such ONNX file"):
        load_backend("dwpose", pose_model=tmp_path / "missing.onnx")
    with pytest.raises(InputError, match="needs the whole-body ONNX file"):
        load_backend("dwpose")
    with pytest.raises(InputError, match="--backend"):
        load_backend("openpifpaf")
