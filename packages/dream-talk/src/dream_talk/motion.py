"""The motion format: ARKit-52 blendshapes in the standard order followed by the head pose, one row per video frame.

A :class:`MotionSequence` holds ``values`` of shape (T, 52 + P) (P = 6: pitch, yaw, roll in radians, then x, y, z
translation) and the frame rate. It is read and written as

- our JSON (``{"format": "dream-talk-motion", "fps", "blendshapes": [names], "pose": [names], "frames": [[...]]}``),
  which keeps everything;
- a LiveLinkFace-compatible CSV (``Timecode, BlendShapeCount`` (61 as in LiveLinkFace exports; 52 is read too), the
  52 blendshapes in UpperCamel case, ``HeadYaw, HeadPitch, HeadRoll`` and the six eye angles): rotations are kept,
  head translation is not (the format has no column for it; it reads back as zeros). The rotation unit of that CSV is written as radians [unverified: LiveLinkFace's
  own unit was not checked];
- a ``.npy`` array of shape (T, 52) or (T, 52 + P) (pose zero when absent), at the frame rate given by the caller.

The order of :data:`ARKIT_BLENDSHAPES` is the one of LiveLinkFace exports (eyes left then right, jaw, mouth, brows,
cheeks, nose, tongue), the de-facto "standard ARKit 52 order" of rigs and datasets.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genblocks.errors import InputError

__all__ = [
    "ARKIT_BLENDSHAPES",
    "LIVELINK_EXTRA_COLUMNS",
    "MOUTH_BLENDSHAPES",
    "POSE_NAMES",
    "MotionSequence",
    "blendshape_index",
    "mouth_indices",
    "read_motion",
]

ARKIT_BLENDSHAPES: tuple[str, ...] = (
    "eyeBlinkLeft",
    "eyeLookDownLeft",
    "eyeLookInLeft",
    "eyeLookOutLeft",
    "eyeLookUpLeft",
    "eyeSquintLeft",
    "eyeWideLeft",
    "eyeBlinkRight",
    "eyeLookDownRight",
    "eyeLookInRight",
    "eyeLookOutRight",
    "eyeLookUpRight",
    "eyeSquintRight",
    "eyeWideRight",
    "jawForward",
    "jawRight",
    "jawLeft",
    "jawOpen",
    "mouthClose",
    "mouthFunnel",
    "mouthPucker",
    "mouthRight",
    "mouthLeft",
    "mouthSmileLeft",
    "mouthSmileRight",
    "mouthFrownLeft",
    "mouthFrownRight",
    "mouthDimpleLeft",
    "mouthDimpleRight",
    "mouthStretchLeft",
    "mouthStretchRight",
    "mouthRollLower",
    "mouthRollUpper",
    "mouthShrugLower",
    "mouthShrugUpper",
    "mouthPressLeft",
    "mouthPressRight",
    "mouthLowerDownLeft",
    "mouthLowerDownRight",
    "mouthUpperUpLeft",
    "mouthUpperUpRight",
    "browDownLeft",
    "browDownRight",
    "browInnerUp",
    "browOuterUpLeft",
    "browOuterUpRight",
    "cheekPuff",
    "cheekSquintLeft",
    "cheekSquintRight",
    "noseSneerLeft",
    "noseSneerRight",
    "tongueOut",
)
"""The 52 ARKit blendshape names in the standard (LiveLinkFace) order."""

POSE_NAMES: tuple[str, ...] = ("headPitch", "headYaw", "headRoll", "headX", "headY", "headZ")
"""Head-pose channels after the blendshapes: rotations in radians, then translations (image-plane units)."""

MOUTH_BLENDSHAPES: tuple[str, ...] = tuple(name for name in ARKIT_BLENDSHAPES if name.startswith(("jaw", "mouth")))
"""The 27 channels lip refinement re-predicts (``lip.channels="arkit_jaw_mouth"``): 4 ``jaw*`` + 23 ``mouth*``."""

LIVELINK_EXTRA_COLUMNS: tuple[str, ...] = (
    "HeadYaw",
    "HeadPitch",
    "HeadRoll",
    "LeftEyeYaw",
    "LeftEyePitch",
    "LeftEyeRoll",
    "RightEyeYaw",
    "RightEyePitch",
    "RightEyeRoll",
)
"""LiveLinkFace's columns after the 52 blendshapes: head rotation and the eye angles (no head translation)."""

_LIVELINK_HEAD = ("Timecode", "BlendShapeCount")
_LIVELINK_COUNTS = (61, 52)  # real exports count the 9 head and eye angles too; some tools write 52
_FORMAT = "dream-talk-motion"


def _upper(name: str) -> str:
    return name[0].upper() + name[1:]


def blendshape_index(name: str) -> int:
    """The channel of an ARKit blendshape (``"jawOpen"`` -> 17); LiveLinkFace's UpperCamel spelling is accepted."""
    lookup = {n.lower(): i for i, n in enumerate(ARKIT_BLENDSHAPES)}
    if name.lower() not in lookup:
        raise InputError(f"{name!r} is not an ARKit blendshape name")
    return lookup[name.lower()]


def mouth_indices() -> list[int]:
    """Channels of :data:`MOUTH_BLENDSHAPES` (17 of them are ``mouth*``), ascending: 14..40."""
    return [ARKIT_BLENDSHAPES.index(name) for name in MOUTH_BLENDSHAPES]


@dataclass
class MotionSequence:
    """Blendshapes and head pose of T frames.

    Args:
        values: float32 (T, 52 + P): blendshape weights (nominally in [0, 1]) then the P pose values.
        fps: Frames per second.
    """

    values: np.ndarray
    fps: float

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values, dtype=np.float32)
        if self.values.ndim != 2 or self.values.shape[1] < len(ARKIT_BLENDSHAPES) or self.values.shape[0] == 0:
            raise InputError(f"motion values must be (T > 0, 52 + pose) numbers, got shape {self.values.shape}")
        if self.values.shape[1] - len(ARKIT_BLENDSHAPES) not in (0, 3, 6):
            raise InputError(f"motion values: expected 52, 55 or 58 columns, got {self.values.shape[1]}")
        if not np.isfinite(self.values).all():
            raise InputError("motion values hold NaN or infinite numbers")
        if not self.fps > 0:
            raise InputError(f"motion fps must be positive, got {self.fps}")

    @property
    def num_frames(self) -> int:
        """T."""
        return int(self.values.shape[0])

    @property
    def blendshapes(self) -> np.ndarray:
        """(T, 52) blendshape weights."""
        return self.values[:, : len(ARKIT_BLENDSHAPES)]

    @property
    def pose(self) -> np.ndarray:
        """(T, P) head pose."""
        return self.values[:, len(ARKIT_BLENDSHAPES) :]

    def with_pose_dim(self, pose_dim: int) -> MotionSequence:
        """The same frames with P = ``pose_dim`` pose columns (missing ones zero, extra ones dropped)."""
        pose = np.zeros((self.num_frames, pose_dim), np.float32)
        keep = min(pose_dim, self.pose.shape[1])
        pose[:, :keep] = self.pose[:, :keep]
        return MotionSequence(np.concatenate([self.blendshapes, pose], axis=1), self.fps)

    # ---------------------------------------------------------------- JSON
    def to_json(self) -> dict:
        """Our JSON document (see the module docstring)."""
        return {
            "format": _FORMAT,
            "fps": self.fps,
            "blendshapes": list(ARKIT_BLENDSHAPES),
            "pose": list(POSE_NAMES[: self.pose.shape[1]]),
            "frames": [[round(float(v), 6) for v in row] for row in self.values],
        }

    def write_json(self, path: str | Path) -> Path:
        """Write :meth:`to_json` to ``path``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json()) + "\n", encoding="utf-8")
        return path

    @classmethod
    def read_json(cls, path: str | Path) -> MotionSequence:
        """Read our JSON; names must be the ARKit order and known pose names."""
        path = Path(path)
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise InputError(f"{path}: not a readable dream-talk motion JSON ({error})") from error
        if not isinstance(document, dict) or document.get("format") != _FORMAT:
            raise InputError(f"{path}: expected a JSON object with format={_FORMAT!r}")
        names = document.get("blendshapes")
        if names != list(ARKIT_BLENDSHAPES):
            missing = sorted(set(ARKIT_BLENDSHAPES) - set(names or []))
            unknown = sorted(set(names or []) - set(ARKIT_BLENDSHAPES))
            raise InputError(
                f"{path}: 'blendshapes' must list the 52 ARKit names in order (missing: {missing[:5]}, unknown: "
                f"{unknown[:5]})"
            )
        pose = document.get("pose", [])
        if list(pose) != list(POSE_NAMES[: len(pose)]):
            raise InputError(f"{path}: 'pose' must be a prefix of {list(POSE_NAMES)}, got {pose}")
        try:
            values = np.asarray(document["frames"], dtype=np.float32)
        except (KeyError, ValueError, TypeError) as error:
            raise InputError(f"{path}: 'frames' must be a list of equal-length number rows ({error})") from error
        if values.ndim != 2 or values.shape[1] != 52 + len(pose):
            raise InputError(f"{path}: each frame must hold {52 + len(pose)} numbers, got shape {values.shape}")
        return cls(values, float(document.get("fps", 0.0)))

    # ---------------------------------------------------------------- LiveLinkFace CSV
    def write_csv(self, path: str | Path) -> Path:
        """Write a LiveLinkFace-compatible CSV (head translation is dropped: the format has no column for it).

        ``BlendShapeCount`` is 61, as in LiveLinkFace's own exports: the 52 blendshapes plus ``HeadYaw``,
        ``HeadPitch``, ``HeadRoll`` and the six eye angles (written as zeros).
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        pose = self.with_pose_dim(3).pose
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow([*_LIVELINK_HEAD, *(_upper(n) for n in ARKIT_BLENDSHAPES), *LIVELINK_EXTRA_COLUMNS])
            for index, row in enumerate(self.blendshapes):
                pitch, yaw, roll = (float(v) for v in pose[index])
                head = [yaw, pitch, roll]
                writer.writerow(
                    [_timecode(index, self.fps), _LIVELINK_COUNTS[0]]
                    + [f"{float(v):.6f}" for v in row]
                    + [f"{v:.6f}" for v in head]
                    + ["0.000000"] * 6
                )
        return path

    @classmethod
    def read_csv(cls, path: str | Path, fps: float) -> MotionSequence:
        """Read a LiveLinkFace CSV: every blendshape column is required and no column may be unknown;
        ``BlendShapeCount``, when present, is 61 (LiveLinkFace exports) or 52 (the blendshapes alone).

        Args:
            path: The CSV file.
            fps: Its frame rate (LiveLinkFace's timecode frames depend on the recording's rate, which it does not
                store).

        Returns:
            A sequence with P = 6 (pitch, yaw, roll from the head columns when present, zero translation).
        """
        path = Path(path)
        try:
            with path.open(newline="", encoding="utf-8") as handle:
                rows = list(csv.reader(handle))
        except (OSError, UnicodeDecodeError) as error:
            raise InputError(f"{path}: not a readable CSV ({error})") from error
        if len(rows) < 2:
            raise InputError(f"{path}: expected a header row and at least one frame")
        header = [name.strip() for name in rows[0]]
        known = {*_LIVELINK_HEAD, *(_upper(n) for n in ARKIT_BLENDSHAPES), *LIVELINK_EXTRA_COLUMNS}
        unknown = [name for name in header if name not in known]
        missing = [_upper(n) for n in ARKIT_BLENDSHAPES if _upper(n) not in header]
        if unknown or missing:
            raise InputError(
                f"{path}: not a LiveLinkFace blendshape CSV (missing columns: {missing[:6]}"
                f"{'...' if len(missing) > 6 else ''}; unknown columns: {unknown[:6]})"
            )
        column = {name: header.index(name) for name in header}
        values = np.zeros((len(rows) - 1, 58), np.float32)
        order = [*(_upper(n) for n in ARKIT_BLENDSHAPES), "HeadPitch", "HeadYaw", "HeadRoll"]
        for row_index, row in enumerate(rows[1:]):
            if "BlendShapeCount" in column:
                count = row[column["BlendShapeCount"]].strip() if column["BlendShapeCount"] < len(row) else ""
                if count not in {str(n) for n in _LIVELINK_COUNTS}:
                    raise InputError(
                        f"{path}: row {row_index + 2}, column BlendShapeCount: expected 61 or 52, got {count!r}"
                    )
            for channel, name in enumerate(order):
                if name not in column:
                    continue
                try:
                    values[row_index, channel] = float(row[column[name]])
                except (IndexError, ValueError) as error:
                    raise InputError(f"{path}: row {row_index + 2}, column {name}: not a number") from error
        return cls(values, fps)


def _timecode(frame: int, fps: float) -> str:
    """LiveLinkFace's ``HH:MM:SS:FF.mmm`` timecode of frame ``frame`` at ``fps``."""
    seconds = frame / fps
    whole = math.floor(seconds + 1e-9)
    sub = round((seconds - whole) * fps) % max(1, round(fps))
    return f"{whole // 3600:02d}:{whole // 60 % 60:02d}:{whole % 60:02d}:{sub:02d}.000"


def read_motion(path: str | Path, fps: float, pose_dim: int = 6) -> MotionSequence:
    """Read a motion (or emotion-style) clip from ``.json`` (ours), ``.csv`` (LiveLinkFace) or ``.npy`` (T, 52 + P).

    Args:
        path: The file.
        fps: Frame rate for the formats that do not store one (CSV, NPY).
        pose_dim: P of the returned sequence (missing pose columns are zero).

    Raises:
        InputError: naming the file, for a missing file, an unknown suffix, missing or unknown columns, bad numbers.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: motion file not found (expected .json, .csv or .npy)")
    suffix = path.suffix.lower()
    if suffix == ".json":
        sequence = MotionSequence.read_json(path)
    elif suffix == ".csv":
        sequence = MotionSequence.read_csv(path, fps)
    elif suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise InputError(f"{path}: not a readable .npy array ({error})") from error
        if array.ndim != 2 or array.shape[1] not in (52, 55, 58):
            raise InputError(f"{path}: expected a (T, 52), (T, 55) or (T, 58) array, got shape {array.shape}")
        sequence = MotionSequence(array, fps)
    else:
        raise InputError(f"{path}: unknown motion format {suffix!r} (expected .json, .csv or .npy)")
    return sequence.with_pose_dim(pose_dim)
