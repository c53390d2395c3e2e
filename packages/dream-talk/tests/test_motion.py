"""The motion format: ARKit order, mouth channels, JSON / LiveLinkFace CSV / NPY round trips and refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dream_talk.motion import (
    ARKIT_BLENDSHAPES,
    MOUTH_BLENDSHAPES,
    MotionSequence,
    blendshape_index,
    mouth_indices,
    read_motion,
)
from genblocks.errors import InputError


def _sequence(frames: int = 7, fps: float = 30.0) -> MotionSequence:
    values = np.random.default_rng(0).uniform(0, 1, (frames, 58)).astype(np.float32)
    values[:, 52:] -= 0.5
    return MotionSequence(values, fps)


def test_arkit_names_and_mouth_channels() -> None:
    assert len(ARKIT_BLENDSHAPES) == 52 == len(set(ARKIT_BLENDSHAPES))
    assert len(MOUTH_BLENDSHAPES) == 27
    assert sum(n.startswith("jaw") for n in MOUTH_BLENDSHAPES) == 4
    assert mouth_indices() == list(range(14, 41))
    assert blendshape_index("jawOpen") == 17 == blendshape_index("JawOpen")
    with pytest.raises(InputError):
        blendshape_index("smile")


def test_json_round_trip_is_exact_to_6_decimals(tmp_path: Path) -> None:
    sequence = _sequence()
    back = read_motion(sequence.write_json(tmp_path / "m.json"), fps=1.0)
    assert back.fps == 30.0
    np.testing.assert_allclose(back.values, sequence.values, atol=1e-6)


def test_livelink_csv_keeps_rotations_and_drops_translation(tmp_path: Path) -> None:
    sequence = _sequence()
    path = sequence.write_csv(tmp_path / "m.csv")
    header = path.read_text().splitlines()[0].split(",")
    assert header[:3] == ["Timecode", "BlendShapeCount", "EyeBlinkLeft"] and header[-9] == "HeadYaw"
    assert len(header) == 2 + 52 + 9
    rows = path.read_text().splitlines()[1:]
    assert {row.split(",")[1] for row in rows} == {"61"}  # LiveLinkFace exports count the 9 head/eye angles too
    back = read_motion(path, fps=30.0)
    np.testing.assert_allclose(back.values[:, :55], sequence.values[:, :55], atol=1e-6)
    assert np.all(back.values[:, 55:] == 0)
    for count, accepted in (("52", True), ("60", False)):
        other = tmp_path / f"count{count}.csv"
        other.write_text(
            "\n".join([path.read_text().splitlines()[0], *(r.replace(",61,", f",{count},", 1) for r in rows)])
        )
        if accepted:
            np.testing.assert_array_equal(read_motion(other, fps=30.0).values, back.values)
        else:
            with pytest.raises(InputError, match="BlendShapeCount: expected 61 or 52, got '60'"):
                read_motion(other, fps=30.0)


def test_npy_52_columns_gets_zero_pose(tmp_path: Path) -> None:
    np.save(tmp_path / "m.npy", np.ones((4, 52), np.float32))
    back = read_motion(tmp_path / "m.npy", fps=25.0)
    assert back.values.shape == (4, 58) and back.pose.sum() == 0 and back.fps == 25.0


def test_csv_with_missing_or_unknown_columns_is_refused(tmp_path: Path) -> None:
    path = _sequence().write_csv(tmp_path / "m.csv")
    lines = path.read_text().splitlines()
    missing = tmp_path / "missing.csv"
    missing.write_text("\n".join(",".join(line.split(",")[:-20]) for line in lines) + "\n")
    with pytest.raises(InputError, match="missing columns"):
        read_motion(missing, fps=25.0)
    unknown = tmp_path / "unknown.csv"
    unknown.write_text("\n".join(line + ",1" if i else line + ",Smile" for i, line in enumerate(lines)) + "\n")
    with pytest.raises(InputError, match="unknown columns: \\['Smile'\\]"):
        read_motion(unknown, fps=25.0)


def test_bad_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        read_motion(tmp_path / "none.json", fps=25.0)
    (tmp_path / "m.txt").write_text("x")
    with pytest.raises(InputError, match="unknown motion format"):
        read_motion(tmp_path / "m.txt", fps=25.0)
    np.save(tmp_path / "bad.npy", np.ones((4, 10), np.float32))
    with pytest.raises(InputError, match="52"):
        read_motion(tmp_path / "bad.npy", fps=25.0)
