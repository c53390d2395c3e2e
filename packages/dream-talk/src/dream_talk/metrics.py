"""Motion metrics of DREAM-Talk's evaluation (arXiv 2312.13578, spec §6; no upstream code is released, so nothing
here follows upstream lines), on blendshape + head-pose sequences (T, 52 + P):

- :func:`blendshape_l2`: mean per-frame L2 distance of the blendshape weights, over the 27 jaw/mouth channels the lip
  refiner re-predicts (``"mouth"``, :func:`dream_talk.motion.mouth_indices`) or all 52 (``"full"``);
- :func:`landmark_distance`: M-LMD / F-LMD, the mean Euclidean distance of the mouth (iBUG points 48-67) or all 68
  landmarks, on given (T, 68, 2) landmark arrays or on the proxy avatar's landmarks of two motions
  (:func:`motion_landmark_distances`, :func:`dream_talk.render.proxy_landmarks`, normalised units: the neutral face is
  1.7 wide);
- a lip-sync proxy: :func:`lip_sync_correlation`, the Pearson correlation between the mouth opening
  (:func:`mouth_opening`: ``jawOpen`` or the proxy's inner-lip gap) and the per-frame RMS energy of the audio
  (:func:`frame_energy`, aligned to the frame times with :func:`dream_talk.audio_features.align_to_frames`);
- :class:`SyncNetScorer`: a user-given TorchScript lip-sync expert (e.g. a wrapped SyncNet, which we do not ship)
  called on mouth crops of the rendered proxy avatar and the frame-aligned audio features;
- :func:`style_consistency`: the cosine between the style encoder's embeddings of the reference style clip and of the
  generated motion.

The paper's image metrics (SSIM, PSNR, CPBD, FID) need the learned renderer, which is not part of this package.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from dream_talk.audio_features import align_to_frames, frame_count
from dream_talk.motion import ARKIT_BLENDSHAPES, blendshape_index, mouth_indices
from dream_talk.render import proxy_landmarks
from genblocks.errors import InputError

if TYPE_CHECKING:
    import torch

__all__ = [
    "MOUTH_LANDMARKS",
    "SyncNetScorer",
    "blendshape_l2",
    "frame_energy",
    "landmark_distance",
    "lip_sync_correlation",
    "motion_landmark_distances",
    "mouth_crops",
    "mouth_opening",
    "pearson",
    "style_consistency",
]

Region = Literal["mouth", "full"]
MOUTH_LANDMARKS: tuple[int, ...] = tuple(range(48, 68))
"""iBUG 68-point indices of the lips (outer 48-59, inner 60-67): the points of M-LMD."""
_INNER_LIP_TOP, _INNER_LIP_BOTTOM = 62, 66
_BACKGROUND = (236, 232, 226)  # draw_avatar's background colour


def _same_shape(prediction: np.ndarray, target: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    prediction, target = np.asarray(prediction, np.float64), np.asarray(target, np.float64)
    if prediction.shape != target.shape:
        raise ValueError(f"{what}: prediction {prediction.shape} and target {target.shape} differ in shape")
    return prediction, target


def blendshape_l2(prediction: np.ndarray, target: np.ndarray, region: Region = "full") -> float:
    """Mean over frames of the L2 norm of the blendshape difference.

    Args:
        prediction: (T, 52 + P) motion (only the first 52 columns are used).
        target: (T, 52 + P) motion of the same shape.
        region: ``"mouth"``: the 27 jaw/mouth channels of :func:`dream_talk.motion.mouth_indices`; ``"full"``: all 52.

    Returns:
        ``mean_t || prediction[t, C] - target[t, C] ||_2`` over the channels C (a constant offset ``c`` on every
        channel gives ``c sqrt(|C|)``).
    """
    prediction, target = _same_shape(prediction, target, "blendshape_l2")
    channels = mouth_indices() if region == "mouth" else list(range(len(ARKIT_BLENDSHAPES)))
    difference = prediction[:, channels] - target[:, channels]
    return float(np.linalg.norm(difference, axis=1).mean())


def landmark_distance(prediction: np.ndarray, target: np.ndarray, region: Region = "full") -> float:
    """LMD: mean Euclidean distance between corresponding landmarks, over frames and points.

    Args:
        prediction: (T, 68, 2) landmarks (iBUG order; any unit).
        target: (T, 68, 2) landmarks in the same unit.
        region: ``"mouth"`` (M-LMD, :data:`MOUTH_LANDMARKS`) or ``"full"`` (F-LMD, all 68).

    Returns:
        ``mean_{t, p} || prediction[t, p] - target[t, p] ||_2`` in the landmarks' unit.
    """
    prediction, target = _same_shape(prediction, target, "landmark_distance")
    if prediction.ndim != 3 or prediction.shape[1:] != (68, 2):
        raise ValueError(f"landmark_distance: expected (T, 68, 2) landmarks, got {prediction.shape}")
    points = list(MOUTH_LANDMARKS) if region == "mouth" else list(range(68))
    return float(np.linalg.norm(prediction[:, points] - target[:, points], axis=-1).mean())


def motion_landmark_distances(prediction: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """M-LMD and F-LMD between the proxy avatar's landmarks of two motions (head pose included).

    Args:
        prediction: (T, 52 + P) motion.
        target: (T, 52 + P) motion.

    Returns:
        ``{"m_lmd", "f_lmd"}`` in the proxy's normalised units (:func:`dream_talk.render.proxy_landmarks`).
    """
    prediction, target = _same_shape(prediction, target, "motion_landmark_distances")
    predicted, true = proxy_landmarks(prediction), proxy_landmarks(target)
    return {"m_lmd": landmark_distance(predicted, true, "mouth"), "f_lmd": landmark_distance(predicted, true, "full")}


def mouth_opening(motion: np.ndarray, source: Literal["jaw", "lips"] = "jaw") -> np.ndarray:
    """The mouth opening of every frame.

    Args:
        motion: (T, 52 + P) motion, or (T, 68, 2) landmarks (then only ``"lips"`` applies).
        source: ``"jaw"``: the ``jawOpen`` weight; ``"lips"``: the inner-lip gap, the distance between iBUG points 62
            and 66 (of the proxy avatar's landmarks for a motion).

    Returns:
        float64 (T,).
    """
    array = np.asarray(motion, np.float64)
    if array.ndim == 3:
        if source != "lips":
            raise ValueError("mouth_opening: landmarks give the inner-lip gap only (source='lips')")
        landmarks = array
    elif source == "jaw":
        return array[:, blendshape_index("jawOpen")]
    else:
        landmarks = proxy_landmarks(array)
    return np.linalg.norm(landmarks[:, _INNER_LIP_TOP] - landmarks[:, _INNER_LIP_BOTTOM], axis=-1)


def frame_energy(
    samples: np.ndarray, sample_rate: int, fps: float, num_frames: int | None = None, hop_seconds: float = 0.01
) -> np.ndarray:
    """RMS energy of the audio at every video frame.

    The RMS is taken over windows one frame long (``sample_rate / fps`` samples) every ``hop_seconds``, and those rows
    are interpolated onto the frame centres ``(j + 0.5) / fps`` with the audio front-end's
    :func:`~dream_talk.audio_features.align_to_frames` (the same alignment as the model's audio features).

    Args:
        samples: float (N,) mono audio.
        sample_rate: Its rate in Hz.
        fps: Video frame rate.
        num_frames: T; defaults to :func:`~dream_talk.audio_features.frame_count`.
        hop_seconds: Step between RMS windows.

    Returns:
        float64 (T,) RMS amplitude (0 for silence).
    """
    samples = np.asarray(samples, np.float64).reshape(-1)
    if samples.size == 0:
        raise InputError("frame_energy: the audio holds no samples")
    num_frames = frame_count(samples.size, sample_rate, fps) if num_frames is None else num_frames
    width = max(1, round(sample_rate / fps))
    hop = max(1, round(sample_rate * hop_seconds))
    starts = np.arange(0, max(samples.size - width, 0) + 1, hop)
    squares = np.concatenate([[0.0], np.cumsum(samples**2)])
    ends = np.minimum(starts + width, samples.size)
    rms = np.sqrt((squares[ends] - squares[starts]) / np.maximum(ends - starts, 1))
    times = (starts + (ends - starts) / 2) / sample_rate
    return align_to_frames(rms[:, None], times, num_frames, fps)[:, 0].astype(np.float64)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two (T,) signals; 0 when either is constant (the correlation is undefined)."""
    a, b = _same_shape(np.ravel(a), np.ravel(b), "pearson")
    a, b = a - a.mean(), b - b.mean()
    norm = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / norm) if norm > 1e-12 else 0.0


def lip_sync_correlation(opening: np.ndarray, energy: np.ndarray) -> float:
    """The lip-sync proxy: Pearson correlation between the mouth opening and the audio energy per frame.

    Args:
        opening: (T,) mouth opening (:func:`mouth_opening`).
        energy: (T,) audio RMS per frame (:func:`frame_energy`).

    Returns:
        A correlation in [-1, 1] (1: the mouth opens exactly as loud as the speech; 0 for a constant signal).
    """
    return pearson(opening, energy)


def style_consistency(style_encoder: torch.nn.Module, reference: np.ndarray, output: np.ndarray) -> float:
    """Cosine similarity between the style encoder's embeddings of the reference style clip and of the output.

    Args:
        style_encoder: The pipeline's :class:`~dream_talk.modeling_dream_talk.StyleEncoder` ((B, S, M) -> (B, D)).
        reference: (S, M) the emotion-style clip the generation was conditioned on.
        output: (T, M) the generated motion.

    Returns:
        ``cos(E(reference), E(output))`` in [-1, 1] (1 for a clip with itself).
    """
    import torch

    parameter = next(style_encoder.parameters())
    clips = [torch.as_tensor(np.asarray(c, np.float32), device=parameter.device)[None] for c in (reference, output)]
    with torch.no_grad():
        first, second = (style_encoder(clip)[0].double() for clip in clips)
    return float(torch.nn.functional.cosine_similarity(first, second, dim=0))


def mouth_crops(motion: np.ndarray, size: int = 96, render_size: int = 256) -> np.ndarray:
    """Mouth crops of the proxy avatar rendered from a motion (the frames a lip-sync expert looks at).

    The avatar is drawn with :func:`dream_talk.render.draw_avatar` at ``render_size`` and a square around the lips'
    centre, 1.6 times the lips' width of the neutral face, is cut out and resized to ``size`` (parts of the square
    outside the drawing, for a head posed far off, are background).

    Args:
        motion: (T, 52 + P) motion.
        size: Side of the returned crops in pixels.
        render_size: Side of the rendered avatar.

    Returns:
        float32 (T, 3, size, size) in [0, 1].
    """
    from PIL import Image

    from dream_talk.render import draw_avatar

    landmarks = proxy_landmarks(np.asarray(motion, np.float64))
    neutral = proxy_landmarks(np.zeros((1, 58)))[0, list(MOUTH_LANDMARKS)]
    to_pixels = 0.8 * render_size / 2
    half = 0.8 * (neutral[:, 0].max() - neutral[:, 0].min()) * to_pixels
    crops = np.empty((len(landmarks), 3, size, size), np.float32)
    for index, points in enumerate(landmarks):
        image = Image.fromarray(draw_avatar(points, render_size))
        centre = (points[list(MOUTH_LANDMARKS)].mean(0) * 0.8 + 1) * render_size / 2
        box = (centre[0] - half, centre[1] - half, centre[0] + half, centre[1] + half)
        crop = image.transform(
            (size, size), Image.Transform.EXTENT, box, Image.Resampling.BILINEAR, fillcolor=_BACKGROUND
        )
        crops[index] = np.asarray(crop, np.float32).transpose(2, 0, 1) / 255.0
    return crops


@dataclass
class SyncNetScorer:
    """A user-given lip-sync expert as a TorchScript file (e.g. SyncNet wrapped to this interface; none ships here).

    The scripted module is called once per clip as ``model(mouth_frames, audio_features) -> (offset, confidence)``:

    - ``mouth_frames``: float32 (1, T, 3, H, W) in [0, 1], the mouth crops of :func:`mouth_crops` (H = W = ``size``);
    - ``audio_features``: float32 (1, T, A), the frame-aligned features of the config's audio front-end;
    - it returns two scalars (0-d or one-element tensors, or numbers): the audio-visual offset in frames and the sync
      confidence (SyncNet's LSE-D / LSE-C are these kinds of numbers).

    Args:
        model: The loaded module, frozen (:meth:`load` reads a file).
        size: Side of the mouth crops.
    """

    model: Callable[..., Any]
    size: int = 96

    @classmethod
    def load(cls, path: str | Path, size: int = 96) -> SyncNetScorer:
        """Load a TorchScript file (``torch.jit.load``, CPU, frozen) given by the user.

        Raises:
            InputError: naming ``--syncnet`` when the file is missing or not TorchScript.
        """
        from genblocks.metrics import load_feature_extractor

        model = load_feature_extractor(path, "--syncnet")
        return cls(model, size)

    def __call__(self, motion: np.ndarray, audio_features: np.ndarray) -> dict[str, float]:
        """Score one clip.

        Args:
            motion: (T, 52 + P) the motion whose rendered mouth is judged.
            audio_features: (T, A) frame-aligned audio features.

        Returns:
            ``{"syncnet_offset", "syncnet_confidence"}``.
        """
        import torch

        frames = torch.from_numpy(mouth_crops(motion, self.size))[None]
        audio = torch.from_numpy(np.asarray(audio_features, np.float32))[None]
        with torch.no_grad():
            offset, confidence = self.model(frames, audio)
        return {
            "syncnet_offset": float(torch.as_tensor(offset).reshape(-1)[0]),
            "syncnet_confidence": float(torch.as_tensor(confidence).reshape(-1)[0]),
        }
