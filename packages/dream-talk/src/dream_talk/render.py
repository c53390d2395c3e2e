"""Rendering the motion: the :class:`Renderer` protocol and a weight-free preview renderer on a 2-D proxy avatar.

The paper renders a blendshape rig and transfers it onto the portrait with a fine-tuned video-to-video model
(Face-Vid2Vid, spec §3); neither the rig nor the model is released. What ships here needs no weights:

- :func:`proxy_landmarks`: a 68-point face (iBUG order) moved by a documented blendshape -> landmark basis
  (:func:`landmark_basis`: jaw open, lip shapes, smile, frown, pucker, blink, eye wide / squint, brows, cheek puff,
  sneer) and posed by a similarity transform from the head pose (roll rotates, yaw and pitch shift and foreshorten,
  x / y translate, z scales);
- :class:`KeypointPreviewRenderer`: draws that avatar frame by frame next to the portrait (a ``Renderer``), so the
  motion can be judged and muxed with the input audio into an MP4;
- :func:`load_renderer`: the slot for a learned renderer (``render.kind: learned``): a user factory named
  ``"package.module:Factory"`` is imported and called with the weights and the config, and what it returns is checked
  against the :class:`Renderer` protocol.

The portrait-warping renderer is :class:`dream_talk.warp_render.PortraitWarpRenderer`.

ARKit's ``Left`` is the subject's left, drawn on the image's right (the avatar faces the viewer).
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from dream_talk.motion import ARKIT_BLENDSHAPES
from genblocks.errors import InputError

if TYPE_CHECKING:
    from dream_talk.config import DreamTalkConfig

__all__ = [
    "KeypointPreviewRenderer",
    "Renderer",
    "check_frames",
    "draw_avatar",
    "landmark_basis",
    "load_renderer",
    "proxy_face_offsets",
    "proxy_landmarks",
    "template_landmarks",
]


@runtime_checkable
class Renderer(Protocol):
    """Turns a portrait and a motion sequence into video frames (the learned video-to-video renderer's slot)."""

    def __call__(self, portrait: np.ndarray, motion: np.ndarray) -> np.ndarray:
        """Args: portrait uint8 (H, W, 3); motion (T, 52 + P). Returns uint8 frames (T, H', W', 3)."""
        ...


_SIGNATURE = (
    "expected 'package.module:Factory' where Factory(weights: Path | None, config: DreamTalkConfig) returns a "
    "Renderer, renderer(portrait uint8 (H, W, 3), motion (T, 52 + P)) -> uint8 frames (T, H', W', 3)"
)


def load_renderer(spec: str | None, weights: str | Path | None, config: DreamTalkConfig) -> Renderer:
    """The learned renderer's slot: import ``Factory`` from ``spec`` and return ``Factory(weights, config)``.

    Args:
        spec: ``"package.module:Factory"`` (``render.renderer``); the module is imported with importlib, so it must
            be on ``sys.path`` (an installed package or the working directory).
        weights: Handed to the factory as a ``Path`` (``render.weights``, must exist) or ``None``.
        config: The whole config, handed to the factory.

    Raises:
        InputError: naming ``render.renderer`` (with the expected signature) when the spec is malformed, the module
            or attribute cannot be imported, the factory does not take ``(weights, config)`` or returns something that
            is not a :class:`Renderer`; naming ``render.weights`` when that path does not exist.
    """
    name = f"render.renderer {spec!r}"
    module_name, _, attribute = (spec or "").partition(":")
    if not module_name or not attribute:
        raise InputError(f"{name}: {_SIGNATURE}")
    path = None if weights is None else Path(weights)
    if path is not None and not path.exists():
        raise InputError(f"render.weights {str(weights)!r}: no such file or folder")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise InputError(f"{name}: module {module_name!r} not importable ({error}); {_SIGNATURE}") from error
    factory = getattr(module, attribute, None)
    if factory is None or not callable(factory):
        raise InputError(f"{name}: {module_name} has no callable {attribute!r}; {_SIGNATURE}")
    if not _accepts(factory, 2):
        raise InputError(f"{name}: {attribute} does not take (weights, config); {_SIGNATURE}")
    renderer = factory(path, config)
    if not isinstance(renderer, Renderer) or not _accepts(renderer, 2):
        raise InputError(f"{name}: {attribute}(weights, config) returned {type(renderer).__name__}; {_SIGNATURE}")
    return renderer


def _accepts(function: object, count: int) -> bool:
    """Whether ``function`` can be called with ``count`` positional arguments (True when it has no signature)."""
    try:
        inspect.signature(function).bind(*range(count))  # type: ignore[arg-type]
    except TypeError:
        return False
    except ValueError:  # builtins without a signature
        return True
    return True


def check_frames(frames: object, num_frames: int, source: str) -> np.ndarray:
    """Check a renderer's output: a uint8 array (num_frames, H, W, 3).

    Args:
        frames: What the renderer returned.
        num_frames: The motion's frame count.
        source: The renderer's name for the message (``render.renderer 'pkg.mod:Factory'``).

    Raises:
        InputError: naming ``source`` and the expected shape.
    """
    array = np.asarray(frames) if isinstance(frames, np.ndarray) else None
    if array is None or array.dtype != np.uint8 or array.ndim != 4 or array.shape[0] != num_frames:
        got = f"{type(frames).__name__} {getattr(frames, 'dtype', '')} {getattr(frames, 'shape', '')}".strip()
        raise InputError(f"{source}: expected uint8 frames ({num_frames}, H, W, 3), got {got}")
    if array.shape[3] != 3 or array.shape[1] < 2 or array.shape[2] < 2:
        raise InputError(f"{source}: expected uint8 frames ({num_frames}, H, W, 3), got shape {array.shape}")
    return array


_JAW, _BROW_R, _BROW_L = range(0, 17), range(17, 22), range(22, 27)  # image-left brow first (the subject's right)
_NOSE_BRIDGE, _NOSE_BASE = range(27, 31), range(31, 36)
_EYE_R, _EYE_L = range(36, 42), range(42, 48)
_LIPS_OUT, _LIPS_IN = range(48, 60), range(60, 68)


def template_landmarks() -> np.ndarray:
    """The neutral 68-point proxy face in normalised image coordinates (x right, y down, face within [-1, 1]).

    Returns:
        float64 (68, 2).
    """
    points = np.zeros((68, 2))
    theta = np.linspace(np.pi, 0.0, 17)
    points[_JAW] = np.stack([0.85 * np.cos(theta), -0.15 + 1.1 * np.sin(theta)], axis=1)
    arch = -0.45 - 0.08 * np.sin(np.linspace(0, np.pi, 5))
    points[_BROW_R] = np.stack([np.linspace(-0.7, -0.15, 5), arch], axis=1)
    points[_BROW_L] = np.stack([np.linspace(0.15, 0.7, 5), arch], axis=1)
    points[_NOSE_BRIDGE] = np.stack([np.zeros(4), np.linspace(-0.3, 0.05, 4)], axis=1)
    points[_NOSE_BASE] = np.stack([np.linspace(-0.15, 0.15, 5), [0.15, 0.17, 0.18, 0.17, 0.15]], axis=1)
    for eye, cx in ((_EYE_R, -0.38), (_EYE_L, 0.38)):
        offsets = np.array([[-0.15, 0], [-0.06, -0.07], [0.06, -0.07], [0.15, 0], [0.06, 0.06], [-0.06, 0.06]])
        points[eye] = offsets + np.array([cx, -0.22])
    outer = np.array(
        [
            [-0.27, 0.5],
            [-0.17, 0.42],
            [-0.06, 0.39],
            [0.0, 0.4],
            [0.06, 0.39],
            [0.17, 0.42],
            [0.27, 0.5],
            [0.17, 0.58],
            [0.07, 0.61],
            [0.0, 0.62],
            [-0.07, 0.61],
            [-0.17, 0.58],
        ]
    )
    points[_LIPS_OUT] = outer
    points[_LIPS_IN] = np.array(
        [[-0.2, 0.5], [-0.08, 0.47], [0.0, 0.47], [0.08, 0.47], [0.2, 0.5], [0.08, 0.52], [0.0, 0.52], [-0.08, 0.52]]
    )
    return points


def _index(name: str) -> int:
    return ARKIT_BLENDSHAPES.index(name)


def landmark_basis() -> np.ndarray:
    """Landmark displacement of each blendshape at weight 1 (normalised units, the face is ~2 wide).

    ============================  =============================================================================
    blendshape                    displacement
    ============================  =============================================================================
    jawOpen                       lower jaw (weighted towards the chin) and lower lip down 0.3, corners 0.12
    jawLeft / jawRight            jaw and lower lip sideways 0.1; jawForward: nothing visible in 2-D
    mouthClose                    lower lip up 0.1 (lips meet with the jaw open)
    mouthSmileLeft / Right        that corner out 0.06 and up 0.1
    mouthFrownLeft / Right        that corner down 0.08
    mouthStretchLeft / Right      that corner out 0.08
    mouthDimpleLeft / Right       that corner out 0.03
    mouthFunnel / mouthPucker     every lip point 25 % / 40 % towards the mouth centre in x
    mouthLeft / mouthRight        every lip point sideways 0.1
    mouthUpperUp* / LowerDown*    that side's upper lip up / lower lip down 0.06
    mouthRoll* / Shrug* / Press*  lips towards each other 0.03
    eyeBlinkLeft / Right          upper lid down to the lower lid (0.13), lower lid up 0.01
    eyeWide* / eyeSquint*         upper lid up 0.04 / lower lid up 0.03
    browDown* / browOuterUp*      that brow down 0.08 / its outer half up 0.1
    browInnerUp                   inner halves of both brows up 0.1
    cheekPuff, cheekSquint*       cheeks (jaw 3-5, 11-13) out 0.05; squint: lower lids up 0.02
    noseSneer*                    nose base up 0.03
    eyeLook*, tongueOut           no landmark motion (eye direction and tongue are not landmarks)
    ============================  =============================================================================

    Returns:
        float64 (52, 68, 2).
    """
    template = template_landmarks()
    basis = np.zeros((52, 68, 2))
    # the jaw line moves below y = 0.2 (under the nose), fully at the chin (y = 0.95)
    chin_weight = np.clip((template[list(_JAW), 1] - 0.2) / 0.75, 0.0, 1.0) ** 1.2
    lower_lip = [55, 56, 57, 58, 59, 65, 66, 67]
    upper_lip = [49, 50, 51, 52, 53, 61, 62, 63]
    lips = list(_LIPS_OUT) + list(_LIPS_IN)
    mouth_centre_x = 0.0

    def side(points: list[int], sign: int) -> list[int]:
        return [p for p in points if np.sign(template[p, 0]) == sign]

    b = basis[_index("jawOpen")]
    b[list(_JAW), 1] = 0.3 * chin_weight
    b[lower_lip, 1] = 0.3
    b[[48, 54, 60, 64], 1] = 0.12
    for name, sign in (("jawLeft", 1), ("jawRight", -1)):
        basis[_index(name)][list(_JAW), 0] = sign * 0.1 * chin_weight
        basis[_index(name)][lower_lip, 0] = sign * 0.1
    basis[_index("mouthClose")][lower_lip, 1] = -0.1
    for suffix, sign in (("Left", 1), ("Right", -1)):
        corners = [54, 64] if sign > 0 else [48, 60]
        basis[_index("mouthSmile" + suffix)][corners] = [sign * 0.06, -0.1]
        basis[_index("mouthFrown" + suffix)][corners, 1] = 0.08
        basis[_index("mouthStretch" + suffix)][corners, 0] = sign * 0.08
        basis[_index("mouthDimple" + suffix)][corners, 0] = sign * 0.03
        basis[_index("mouthUpperUp" + suffix)][side(upper_lip, sign), 1] = -0.06
        basis[_index("mouthLowerDown" + suffix)][side(lower_lip, sign), 1] = 0.06
        basis[_index("mouthPress" + suffix)][side(upper_lip, sign), 1] = 0.03
        eye = list(_EYE_L) if sign > 0 else list(_EYE_R)
        upper_lid, lower_lid = [eye[1], eye[2]], [eye[4], eye[5]]
        basis[_index("eyeBlink" + suffix)][upper_lid, 1] = 0.13
        basis[_index("eyeBlink" + suffix)][lower_lid, 1] = -0.01
        basis[_index("eyeWide" + suffix)][upper_lid, 1] = -0.04
        basis[_index("eyeSquint" + suffix)][lower_lid, 1] = -0.03
        basis[_index("cheekSquint" + suffix)][lower_lid, 1] = -0.02
        brow = list(_BROW_L) if sign > 0 else list(_BROW_R)
        basis[_index("browDown" + suffix)][brow, 1] = 0.08
        outer = brow[3:] if sign > 0 else brow[:2]
        basis[_index("browOuterUp" + suffix)][outer, 1] = -0.1
        basis[_index("noseSneer" + suffix)][[*side(list(_NOSE_BASE), sign), 33], 1] = -0.03
    basis[_index("mouthRollLower")][lower_lip, 1] = -0.03
    basis[_index("mouthShrugLower")][lower_lip, 1] = -0.03
    basis[_index("mouthRollUpper")][upper_lip, 1] = 0.03
    basis[_index("mouthShrugUpper")][upper_lip, 1] = 0.03
    for name, factor in (("mouthFunnel", 0.25), ("mouthPucker", 0.4)):
        basis[_index(name)][lips, 0] = -factor * (template[lips, 0] - mouth_centre_x)
    basis[_index("mouthLeft")][lips, 0] = 0.1
    basis[_index("mouthRight")][lips, 0] = -0.1
    basis[_index("browInnerUp")][[19, 20, 21, 22, 23, 24], 1] = -0.1
    puff = [3, 4, 5, 11, 12, 13]
    basis[_index("cheekPuff")][puff, 0] = 0.05 * np.sign(template[puff, 0])
    return basis


_TEMPLATE = template_landmarks()
_BASIS = landmark_basis()


def proxy_landmarks(motion: np.ndarray, face_offsets: np.ndarray | None = None) -> np.ndarray:
    """Landmarks of the proxy avatar for each frame.

    Args:
        motion: (T, 52 + P) blendshapes (clipped to [0, 1]) and head pose (pitch, yaw, roll radians; x, y, z).
        face_offsets: (68, 2) added to the template before the pose (another person's neutral face); ``None``: none.

    Returns:
        float64 (T, 68, 2) in normalised coordinates.
    """
    motion = np.asarray(motion, dtype=np.float64)
    weights = np.clip(motion[:, :52], 0.0, 1.0)
    face = _TEMPLATE if face_offsets is None else _TEMPLATE + np.asarray(face_offsets, np.float64)
    points = face[None] + np.einsum("tk,kpc->tpc", weights, _BASIS)
    pose = np.zeros((motion.shape[0], 6))
    pose[:, : motion.shape[1] - 52] = motion[:, 52:58]
    pitch, yaw, roll = np.clip(pose[:, 0], -1.2, 1.2), np.clip(pose[:, 1], -1.2, 1.2), np.clip(pose[:, 2], -1.2, 1.2)
    x = points[..., 0] * np.cos(yaw)[:, None]
    y = points[..., 1] * np.cos(pitch)[:, None]
    cos, sin = np.cos(roll)[:, None], np.sin(roll)[:, None]
    scale = np.clip(1.0 + pose[:, 5], 0.5, 1.5)[:, None]
    shift_x = 0.6 * np.sin(yaw)[:, None] + pose[:, 3:4]
    shift_y = 0.6 * np.sin(pitch)[:, None] + pose[:, 4:5]
    rotated_x = scale * (cos * x - sin * y) + shift_x
    rotated_y = scale * (sin * x + cos * y) + shift_y
    return np.stack([rotated_x, rotated_y], axis=-1)


def proxy_face_offsets(landmarks: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """The offset of one face from the proxy's template, for the ``face_offsets`` argument of :func:`proxy_landmarks`
    (and of the tracking fits).

    Args:
        landmarks: (68, 2) the face in the proxy's normalised coordinates, taken at zero pose.
        weights: (52,) the blendshapes it shows (e.g. a portrait's fitted state); ``None``: neutral.

    Returns:
        float64 (68, 2): ``landmarks - proxy_landmarks([weights, zero pose])``, so that
        ``proxy_landmarks([weights, zero pose], offsets)`` is ``landmarks``.
    """
    landmarks = np.asarray(landmarks, np.float64)
    if landmarks.shape != (68, 2) or not np.isfinite(landmarks).all():
        raise ValueError(f"landmarks: expected a finite (68, 2) face, got {landmarks.shape}")
    frame = np.zeros((1, 58))
    if weights is not None:
        frame[0, :52] = np.asarray(weights, np.float64).reshape(-1)[:52]
    return landmarks - proxy_landmarks(frame)[0]


def draw_avatar(landmarks: np.ndarray, size: int = 256) -> np.ndarray:
    """Draw one frame of the proxy avatar (68 normalised points) as a uint8 (size, size, 3) image."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size), (236, 232, 226))
    draw = ImageDraw.Draw(image)
    pixels = [(float((x * 0.8 + 1) * size / 2), float((y * 0.8 + 1) * size / 2)) for x, y in landmarks]

    def line(indices: range, closed: bool = False, fill: tuple[int, int, int] = (60, 60, 60)) -> None:
        chain = [pixels[i] for i in indices]
        if closed:
            chain.append(chain[0])
        draw.line(chain, fill=fill, width=max(1, size // 128))

    draw.polygon([pixels[i] for i in _LIPS_OUT], fill=(200, 110, 110))
    draw.polygon([pixels[i] for i in _LIPS_IN], fill=(70, 25, 30))
    for part, closed in (
        (_JAW, False),
        (_BROW_R, False),
        (_BROW_L, False),
        (_NOSE_BRIDGE, False),
        (_NOSE_BASE, False),
    ):
        line(part, closed)
    for eye in (_EYE_R, _EYE_L):
        draw.polygon([pixels[i] for i in eye], fill=(250, 250, 250), outline=(60, 60, 60))
    line(_LIPS_OUT, True, (120, 40, 40))
    radius = max(1, size // 160)
    for x, y in pixels:
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=(30, 90, 200))
    return np.asarray(image)


class KeypointPreviewRenderer:
    """The default :class:`Renderer`: the portrait (static) beside the proxy avatar driven by the motion.

    Args:
        size: Height of both panels in pixels (the avatar is square).
    """

    def __init__(self, size: int = 256) -> None:
        self.size = size

    def __call__(self, portrait: np.ndarray, motion: np.ndarray) -> np.ndarray:
        """Args: portrait uint8 (H, W, 3); motion (T, 52 + P). Returns uint8 (T, size, W' + 4 + size, 3)."""
        from PIL import Image

        height, width = portrait.shape[:2]
        panel_width = max(2, round(width * self.size / height / 2) * 2)
        still = np.asarray(
            Image.fromarray(portrait).convert("RGB").resize((panel_width, self.size), Image.Resampling.BILINEAR)
        )
        landmarks = proxy_landmarks(motion)
        frames = np.full((len(landmarks), self.size, panel_width + 4 + self.size, 3), 255, np.uint8)
        frames[:, :, :panel_width] = still
        for index, points in enumerate(landmarks):
            frames[index, :, panel_width + 4 :] = draw_avatar(points, self.size)
        return frames
