"""Whole-body keypoint detectors for humananim, each returning the layout of :mod:`humananim.keypoints` (issue 19 item 2).

- ``dwpose``: DWPose / RTMW through onnxruntime, decoding as rtmlib does (Tau-J/rtmlib ``tools/object_detection/
  yolox.py``, ``tools/pose_estimation/{rtmpose,pre_processings,post_processings}.py``): a YOLOX person detector whose
  ONNX graph ends in NMS (outputs (1, N, 5) boxes ``x0, y0, x1, y1, score`` on a 114-padded letterbox), then the
  top-down whole-body model on each box (the box padded by 1.25, widened to the model's aspect ratio, cropped to the
  model input, normalised by ImageNet mean/std on BGR pixels) whose SimCC outputs (1, 133, 2W) and (1, 133, 2H) are
  decoded by arg-max (confidence: the smaller of the two maxima) and mapped back to the frame. The 133 COCO-WholeBody
  points become our 128: body 0-16 -> OpenPose 18 (neck = mean of the shoulders), face 23-90, left hand 91-111, right
  hand 112-132 (the 6 foot points are dropped). Weights come from paths the user gives (rtmlib's
  ``yolox_m_8xb8-300e_humanart`` and ``dw-ll_ucoco_384`` ONNX files); onnxruntime is imported only here.
- ``mediapipe``: MediaPipe Holistic (pose 33, face 468/478, hands 21 x 2), fully offline with ``mediapipe==0.10.21``,
  the last release whose wheel ships the Holistic models. Its pins (numpy<2, protobuf<5, Python <= 3.12) conflict with
  the workspace, so it is not a dependency: install it in its own environment (``make test-mediapipe`` shows how).
- ``dlib``: the offline fallback that installs with ``humananim[face]`` (dlib and its model files, no download): the
  face is detected (dlib's HOG detector and 68-point shape predictor, through :class:`genblocks.faces.DlibFaceAnalyzer`;
  with dlib alone, a schematic 68-point face in the HOG box), and the body and both hands are a template placed from
  the face (:func:`humananim.keypoints.body_template`). The limbs therefore do not follow the person's: this backend
  is right for a reference portrait's skeleton and for face and head motion (a talking or turning head), not for a
  dance, where ``dwpose`` or ``mediapipe`` is needed.

Every backend is a callable ``frame (H, W, 3) uint8 RGB -> (128, 3)`` with all zeros when nobody is found;
:func:`extract_keypoints` runs one over a video.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from genblocks.errors import InputError
from humananim.keypoints import NUM_POINTS, PARTS, Keypoints, body_template

__all__ = [
    "MEDIAPIPE_FACE_TO_IBUG68",
    "MEDIAPIPE_INSTALL",
    "DWPoseBackend",
    "DlibTemplateBackend",
    "KeypointBackend",
    "MediaPipeBackend",
    "coco_wholebody_to_layout",
    "decode_simcc",
    "extract_keypoints",
    "load_backend",
    "schematic_face",
]

logger = logging.getLogger(__name__)

MEDIAPIPE_INSTALL = (
    "the mediapipe backend needs mediapipe 0.10.21 (Python <= 3.12, numpy < 2), which conflicts with the workspace "
    "pins: install it in its own environment, e.g. `uv run --isolated --python 3.12 --with 'mediapipe==0.10.21' "
    "--with-editable packages/humananim humananim keypoints --backend mediapipe ...`, or use --backend dwpose/json"
)
ONNXRUNTIME_INSTALL = "the dwpose backend needs onnxruntime: pip install onnxruntime (or onnxruntime-gpu)"
DLIB_INSTALL = "the dlib backend needs dlib: pip install 'humananim[face]' (dlib-bin and face-recognition-models)"

_COCO17_TO_OPENPOSE18 = (0, -1, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3)  # -1: the neck
_MEDIAPIPE33_TO_OPENPOSE18 = (0, -1, 12, 14, 16, 11, 13, 15, 24, 26, 28, 23, 25, 27, 5, 2, 8, 7)

MEDIAPIPE_FACE_TO_IBUG68: tuple[int, ...] = (
    162, 234, 93, 58, 172, 136, 149, 148, 152, 377, 378, 365, 397, 288, 323, 454, 389,
    71, 63, 105, 66, 107, 336, 296, 334, 293, 301,
    168, 197, 5, 4, 75, 97, 2, 326, 305,
    33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181, 78, 82, 13, 312, 308, 317, 14, 87,
)  # fmt: skip
"""Face-mesh vertex for each iBUG-68 landmark (jaw, brows, nose, eyes, mouth): an approximate correspondence (the mesh
has no exact 68-point subset); used only by the mediapipe backend."""


class KeypointBackend(Protocol):
    """A detector: ``frame (H, W, 3) uint8 RGB -> (128, 3)`` keypoints, all zeros when nobody is found."""

    def __call__(self, frame: np.ndarray) -> np.ndarray: ...


class InferenceSession(Protocol):
    """The part of ``onnxruntime.InferenceSession`` the dwpose backend uses (a fake one in tests)."""

    def get_inputs(self) -> Sequence[Any]: ...

    def run(self, output_names: Sequence[str] | None, input_feed: dict[str, np.ndarray]) -> list[np.ndarray]: ...


def coco_wholebody_to_layout(points: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """133 COCO-WholeBody keypoints -> the module's 128.

    Args:
        points: (133, 2) pixel coordinates.
        scores: (133,) confidences.

    Returns:
        (128, 3) ``(x, y, c)``; the neck is the mean of the shoulders with the smaller of their confidences.
    """
    if points.shape != (133, 2) or scores.shape != (133,):
        raise InputError(f"wholebody keypoints: expected (133, 2) and (133,), got {points.shape} and {scores.shape}")
    full = np.concatenate([points, scores[:, None]], axis=1).astype(np.float32)
    out = np.zeros((NUM_POINTS, 3), dtype=np.float32)
    for target, source in enumerate(_COCO17_TO_OPENPOSE18):
        if source >= 0:
            out[target] = full[source]
    out[1, :2] = (full[5, :2] + full[6, :2]) / 2
    out[1, 2] = min(full[5, 2], full[6, 2])
    out[PARTS["face"]] = full[23:91]
    out[PARTS["left_hand"]] = full[91:112]
    out[PARTS["right_hand"]] = full[112:133]
    return out


def decode_simcc(simcc_x: np.ndarray, simcc_y: np.ndarray, split_ratio: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Arg-max decoding of SimCC outputs (rtmlib ``get_simcc_maximum``).

    Args:
        simcc_x: (K, Wx) scores along x.
        simcc_y: (K, Wy) scores along y.
        split_ratio: Bins per input pixel.

    Returns:
        ``locations`` (K, 2) in model-input pixels (-1 where the confidence is <= 0) and ``scores`` (K,), the smaller of
        the two maxima.
    """
    x = np.argmax(simcc_x, axis=1)
    y = np.argmax(simcc_y, axis=1)
    scores = np.minimum(simcc_x.max(axis=1), simcc_y.max(axis=1))
    locations = np.stack([x, y], axis=1).astype(np.float32) / split_ratio
    locations[scores <= 0] = -1.0
    return locations, scores.astype(np.float32)


def _import(module: str, message: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(message) from error


class DWPoseBackend:
    """DWPose / RTMW whole-body keypoints through onnxruntime (module docstring).

    Args:
        pose_model: The whole-body ONNX file (``dw-ll_ucoco_384.onnx``) or an inference session.
        det_model: The YOLOX person detector ONNX file (with NMS in the graph) or a session; ``None`` uses the whole
            frame as the person box.
        det_score: Detector score threshold.
        providers: onnxruntime execution providers (default CPU).
    """

    mean = np.array([123.675, 116.28, 103.53], dtype=np.float32)
    std = np.array([58.395, 57.12, 57.375], dtype=np.float32)

    def __init__(
        self,
        pose_model: str | Path | InferenceSession,
        det_model: str | Path | InferenceSession | None = None,
        det_score: float = 0.3,
        providers: Sequence[str] = ("CPUExecutionProvider",),
    ) -> None:
        self.pose = self._session(pose_model, "--pose-model", providers)
        self.det = None if det_model is None else self._session(det_model, "--det-model", providers)
        self.det_score = det_score
        pose_shape = self.pose.get_inputs()[0].shape  # (1, 3, H, W)
        self.pose_size = (int(pose_shape[3]), int(pose_shape[2]))  # (W, H)
        if self.det is not None:
            det_shape = self.det.get_inputs()[0].shape
            self.det_size = (int(det_shape[2]), int(det_shape[3]))  # (H, W), as rtmlib's model_input_size

    @staticmethod
    def _session(model: str | Path | InferenceSession, option: str, providers: Sequence[str]) -> InferenceSession:
        if not isinstance(model, str | Path):
            return model
        path = Path(model)
        if not path.is_file():
            raise InputError(
                f"{option} {path}: no such ONNX file (download rtmlib's DWPose models once and pass them)"
            )
        ort = _import("onnxruntime", ONNXRUNTIME_INSTALL)
        return ort.InferenceSession(str(path), providers=list(providers))

    def detect(self, frame: np.ndarray) -> np.ndarray:
        """Person boxes (N, 4) ``x0, y0, x1, y1`` in frame pixels (the whole frame without a detector)."""
        height, width = frame.shape[:2]
        if self.det is None:
            return np.array([[0.0, 0.0, width, height]], dtype=np.float32)
        size_h, size_w = self.det_size
        ratio = min(size_h / height, size_w / width)
        resized = Image.fromarray(frame[..., ::-1].copy()).resize(
            (int(width * ratio), int(height * ratio)), Image.Resampling.BILINEAR
        )
        padded = np.full((size_h, size_w, 3), 114, dtype=np.uint8)
        padded[: resized.height, : resized.width] = np.asarray(resized)
        batch = padded.transpose(2, 0, 1)[None].astype(np.float32)
        outputs = self.det.run(None, {self.det.get_inputs()[0].name: batch})[0]
        if outputs.ndim != 3 or outputs.shape[-1] != 5:
            raise InputError(
                f"--det-model: expected a YOLOX graph with NMS, output (1, N, 5), got {outputs.shape}; "
                "use rtmlib's yolox_*_humanart ONNX files"
            )
        boxes = outputs[0, outputs[0, :, 4] > self.det_score, :4] / ratio
        return boxes.astype(np.float32)

    def crop(self, frame: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The model input for one box: ((1, 3, H, W) float32, centre (2,), scale (2,) in frame pixels)."""
        width, height = self.pose_size
        centre = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2], dtype=np.float32)
        scale = np.array([box[2] - box[0], box[3] - box[1]], dtype=np.float32) * 1.25
        aspect = width / height
        if scale[0] > scale[1] * aspect:
            scale = np.array([scale[0], scale[0] / aspect], dtype=np.float32)
        else:
            scale = np.array([scale[1] * aspect, scale[1]], dtype=np.float32)
        # input pixel u maps to frame x = centre_x + (u - W / 2) * scale_x / W (rtmlib's get_warp_matrix, no rotation)
        sx, sy = scale[0] / width, scale[1] / height
        coefficients = (sx, 0.0, centre[0] - sx * width / 2, 0.0, sy, centre[1] - sy * height / 2)
        bgr = Image.fromarray(frame[..., ::-1].copy())
        crop = bgr.transform((width, height), Image.Transform.AFFINE, coefficients, Image.Resampling.BILINEAR)
        pixels = (np.asarray(crop, dtype=np.float32) - self.mean) / self.std
        return pixels.transpose(2, 0, 1)[None].astype(np.float32), centre, scale

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """Keypoints (128, 3) of the most confident person in ``frame`` (H, W, 3) uint8 RGB; zeros when none."""
        frame = _check_frame(frame)
        best, best_score = np.zeros((NUM_POINTS, 3), dtype=np.float32), 0.0
        for box in self.detect(frame):
            batch, centre, scale = self.crop(frame, box)
            simcc_x, simcc_y = self.pose.run(None, {self.pose.get_inputs()[0].name: batch})[:2]
            locations, scores = decode_simcc(simcc_x[0], simcc_y[0])
            points = locations / np.array(self.pose_size, dtype=np.float32) * scale + centre - scale / 2
            if points.shape[0] != 133:
                raise InputError(f"--pose-model: expected 133 whole-body keypoints, the model gives {points.shape[0]}")
            score = float(scores[:17].mean())
            if score > best_score:
                best, best_score = coco_wholebody_to_layout(points, scores), score
        return best


class MediaPipeBackend:
    """MediaPipe Holistic keypoints (body 33 -> OpenPose 18, face mesh -> iBUG 68, both hands), offline.

    Args:
        model_complexity: Holistic's pose model complexity (0, 1 or 2).
        min_detection_confidence: Holistic's detection threshold.
        static_image_mode: Treat frames independently (``False`` tracks across a video).
    """

    def __init__(
        self, model_complexity: int = 1, min_detection_confidence: float = 0.5, static_image_mode: bool = True
    ) -> None:
        mp = _import("mediapipe", MEDIAPIPE_INSTALL)
        self.holistic = mp.solutions.holistic.Holistic(
            static_image_mode=static_image_mode,
            model_complexity=model_complexity,
            min_detection_confidence=min_detection_confidence,
            refine_face_landmarks=False,
        )

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """Keypoints (128, 3) of ``frame`` (H, W, 3) uint8 RGB; zeros when nobody is found."""
        frame = _check_frame(frame)
        height, width = frame.shape[:2]
        result = self.holistic.process(np.ascontiguousarray(frame))
        return mediapipe_to_layout(result, width, height)


def schematic_face(box: tuple[float, float, float, float]) -> np.ndarray:
    """A generic iBUG-68 face filling a face box ``(x0, y0, x1, y1)``: jaw on the lower half-ellipse, brows, nose, eyes
    and mouth at average proportions. Returns (68, 2)."""
    x0, y0, x1, y1 = box
    cx, w, h = (x0 + x1) / 2, x1 - x0, y1 - y0
    points = np.zeros((68, 2))
    angles = np.linspace(np.pi, 0, 17)
    points[0:17] = np.stack([cx + 0.5 * w * np.cos(angles), y0 + 0.35 * h + 0.65 * h * np.sin(angles)], 1)
    points[17:22] = np.stack([np.linspace(x0 + 0.12 * w, x0 + 0.42 * w, 5), np.full(5, y0 + 0.25 * h)], 1)
    points[22:27] = np.stack([np.linspace(x0 + 0.58 * w, x0 + 0.88 * w, 5), np.full(5, y0 + 0.25 * h)], 1)
    points[27:31] = np.stack([np.full(4, cx), np.linspace(y0 + 0.35 * h, y0 + 0.6 * h, 4)], 1)
    points[31:36] = np.stack([np.linspace(cx - 0.1 * w, cx + 0.1 * w, 5), np.full(5, y0 + 0.65 * h)], 1)
    for start, ex in ((36, x0 + 0.3 * w), (42, x0 + 0.7 * w)):
        ring = np.linspace(0, 2 * np.pi, 6, endpoint=False)
        points[start : start + 6] = np.stack([ex - 0.1 * w * np.cos(ring), y0 + 0.4 * h + 0.04 * h * np.sin(ring)], 1)
    outer = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    points[48:60] = np.stack([cx - 0.2 * w * np.cos(outer), y0 + 0.8 * h + 0.07 * h * np.sin(outer)], 1)
    inner = np.linspace(0, 2 * np.pi, 8, endpoint=False)
    points[60:68] = np.stack([cx - 0.12 * w * np.cos(inner), y0 + 0.8 * h + 0.03 * h * np.sin(inner)], 1)
    return points


class DlibTemplateBackend:
    """Face keypoints from dlib with a body and hands template placed from the face (module docstring: the limbs do
    not follow the person's).

    Args:
        upsample: Times dlib's HOG detector upsamples the frame (1 finds faces down to about 40 px; each step costs
            about 4x time).
        threshold: The detector's minimum score (dlib's SVM margin; 0.5 drops its weak false positives).
        template_confidence: Confidence given to the template's body and hand points (the detected face's points get
            1), so a reader can tell them apart; at or above ``keypoints.min_confidence`` (0.3) so they are used.
    """

    def __init__(self, upsample: int = 1, threshold: float = 0.5, template_confidence: float = 0.5) -> None:
        self.dlib = _import("dlib", DLIB_INSTALL)
        self.upsample, self.threshold, self.template_confidence = upsample, threshold, template_confidence
        self.detector = self.dlib.get_frontal_face_detector()
        try:
            from genblocks.faces import DlibFaceAnalyzer

            self.analyzer: Any = DlibFaceAnalyzer(threshold=threshold, upsample=upsample)
        except (ImportError, OSError) as error:
            logger.info("dlib backend: no 68-point shape predictor (%s); using a schematic face in the HOG box", error)
            self.analyzer = None

    def face(self, frame: np.ndarray) -> np.ndarray | None:
        """The 68 landmarks (68, 2) of the largest face in ``frame``, or ``None`` when no face is found."""
        if self.analyzer is not None:
            faces = [f for f in self.analyzer.analyze(frame, embed=False) if f.landmarks68 is not None]
            if not faces:
                return None
            return np.asarray(max(faces, key=lambda f: f.area).landmarks68, dtype=np.float32)
        rects, _, _ = self.detector.run(frame, self.upsample, self.threshold)
        if not rects:
            return None
        rect = max(rects, key=lambda r: r.width() * r.height())
        return schematic_face((rect.left(), rect.top(), rect.right(), rect.bottom())).astype(np.float32)

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """Keypoints (128, 3) of ``frame`` (H, W, 3) uint8 RGB: face detected, body and hands a template; zeros when
        no face is found."""
        frame = np.ascontiguousarray(_check_frame(frame))
        landmarks = self.face(frame)
        if landmarks is None:
            return np.zeros((NUM_POINTS, 3), dtype=np.float32)
        points = body_template(landmarks, frame.shape[1], frame.shape[0]).points[0].copy()
        guessed = np.ones(NUM_POINTS, dtype=bool)
        guessed[PARTS["face"]] = False
        guessed[[0, 14, 15, 16, 17]] = False  # nose, eyes and ears come from the face landmarks
        points[guessed & (points[:, 2] > 0), 2] = self.template_confidence
        return points


def _landmarks(landmarks: Any, width: int, height: int, visibility: bool) -> np.ndarray | None:
    if landmarks is None:
        return None
    rows = []
    for mark in landmarks.landmark:
        confidence = float(getattr(mark, "visibility", 1.0)) if visibility else 1.0
        rows.append((mark.x * width - 0.5, mark.y * height - 0.5, confidence))
    return np.asarray(rows, dtype=np.float32)


def mediapipe_to_layout(result: Any, width: int, height: int) -> np.ndarray:
    """A Holistic result (normalised landmarks) -> (128, 3) pixels in the module's layout."""
    out = np.zeros((NUM_POINTS, 3), dtype=np.float32)
    pose = _landmarks(result.pose_landmarks, width, height, visibility=True)
    if pose is not None:
        for target, source in enumerate(_MEDIAPIPE33_TO_OPENPOSE18):
            if source >= 0:
                out[target] = pose[source]
        out[1, :2] = (pose[11, :2] + pose[12, :2]) / 2
        out[1, 2] = min(pose[11, 2], pose[12, 2])
    face = _landmarks(result.face_landmarks, width, height, visibility=False)
    if face is not None:
        out[PARTS["face"]] = face[list(MEDIAPIPE_FACE_TO_IBUG68)]
    for name in ("left_hand", "right_hand"):
        hand = _landmarks(getattr(result, f"{name}_landmarks"), width, height, visibility=False)
        if hand is not None:
            out[PARTS[name]] = hand
    inside = (out[:, 0] >= -0.5) & (out[:, 0] <= width - 0.5) & (out[:, 1] >= -0.5) & (out[:, 1] <= height - 0.5)
    out[~inside] = 0.0
    return out


def _check_frame(frame: np.ndarray) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise InputError(f"frame: expected (H, W, 3) uint8 RGB, got {frame.dtype} {frame.shape}")
    return frame


def load_backend(
    name: str,
    pose_model: str | Path | None = None,
    det_model: str | Path | None = None,
) -> KeypointBackend:
    """A detector by name: ``dwpose`` (needs ``pose_model``, optional ``det_model``), ``mediapipe`` or ``dlib`` (face
    detected, body and hands a template).

    The ``json`` backend reads files instead (:func:`humananim.keypoints.load_keypoints`).
    """
    if name == "dwpose":
        if pose_model is None:
            raise InputError(
                "--pose-model: the dwpose backend needs the whole-body ONNX file (e.g. dw-ll_ucoco_384.onnx)"
            )
        return DWPoseBackend(pose_model, det_model)
    if name == "mediapipe":
        return MediaPipeBackend()
    if name == "dlib":
        return DlibTemplateBackend()
    raise InputError(f"--backend: expected dwpose, mediapipe, dlib or json, got {name!r}")


def extract_keypoints(
    frames: np.ndarray, backend: KeypointBackend | Callable[[np.ndarray], np.ndarray], fps: float = 25.0
) -> Keypoints:
    """Run a detector over every frame.

    Args:
        frames: (F, H, W, 3) uint8 RGB.
        backend: A :class:`KeypointBackend`.
        fps: Frame rate to record.

    Returns:
        The raw (F, 128, 3) sequence: frames where nobody is found are all zero (fill them with
        :func:`humananim.keypoints.fill_gaps`).
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise InputError(f"frames: expected (F, H, W, 3) RGB frames, got shape {frames.shape}")
    points = np.stack([backend(frame) for frame in frames]).astype(np.float32)
    if points.shape[1:] != (NUM_POINTS, 3):
        raise InputError(f"keypoint backend: expected (128, 3) per frame, got {points.shape[1:]}")
    found = int((points[:, PARTS["body"], 2] > 0).any(axis=1).sum())
    logger.info("keypoints: a person found in %d of %d frames", found, len(points))
    return Keypoints(points, int(frames.shape[2]), int(frames.shape[1]), fps)
