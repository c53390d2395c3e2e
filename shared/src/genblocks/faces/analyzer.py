"""The face-analysis interface shared by the portrait packages: detection, 5/68 landmarks, identity embedding and the
two alignments (FFHQ crop, ArcFace norm-crop).

Backends subclass `FaceAnalyzer` and implement `FaceAnalyzer.analyze`; the offline default is
`genblocks.faces.dlib_backend.DlibFaceAnalyzer` (behind ``pip install genblocks[face]``). Packages that only need a
detector with 5 keypoints (ID-Patch) or 68 landmarks (FG-Net) type against this interface.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np

from genblocks.faces.align import AlignedFace, align_ffhq, norm_crop

__all__ = ["Face", "FaceAnalyzer", "landmarks5_from_68"]


@dataclass(frozen=True, eq=False)
class Face:
    """One detected face, in the pixel-index coordinates of the analysed image.

    Args:
        box (`np.ndarray`): float32 of shape (4,), ``(x0, y0, x1, y1)``.
        score (`float`): the detector's confidence (for dlib's HOG detector the SVM margin: about 1 for a clear
            frontal face, around 0 for false positives).
        landmarks5 (`np.ndarray`): float32 of shape (5, 2): left eye centre, right eye centre, nose tip, left and
            right mouth corners ("left" = image left), the order of insightface's ``kps`` and ArcFace's template.
        landmarks68 (`np.ndarray`, *optional*): float32 of shape (68, 2), iBUG-300W order, when the backend has them.
        embedding (`np.ndarray`, *optional*): float32 of shape (D,), the identity embedding, when computed.
    """

    box: np.ndarray
    score: float
    landmarks5: np.ndarray
    landmarks68: np.ndarray | None = None
    embedding: np.ndarray | None = None

    @property
    def area(self) -> float:
        """Box area in pixels."""
        return float(max(self.box[2] - self.box[0], 0.0) * max(self.box[3] - self.box[1], 0.0))


def landmarks5_from_68(landmarks68: np.ndarray) -> np.ndarray:
    """Derive the 5 ArcFace points from 68 iBUG-300W landmarks.

    Eye centres are the means of points 36–41 and 42–47, the nose tip is point 30, the mouth corners points 48 and 54.

    Args:
        landmarks68 (`np.ndarray`): shape (68, 2).

    Returns:
        `np.ndarray`: float32 of shape (5, 2).
    """
    lm = np.asarray(landmarks68, dtype=np.float64)
    if lm.shape != (68, 2):
        raise ValueError(f"`landmarks68` must have shape (68, 2), got {lm.shape}.")
    points = np.stack([lm[36:42].mean(0), lm[42:48].mean(0), lm[30], lm[48], lm[54]])
    return points.astype(np.float32)


class FaceAnalyzer(abc.ABC):
    """Interface for face analysers: detection with landmarks and (optionally) identity embeddings.

    Images are uint8 RGB arrays of shape (H, W, 3). Subclasses implement `analyze`; the alignment helpers work from
    the returned landmarks and are shared.
    """

    @abc.abstractmethod
    def analyze(self, image: np.ndarray, boxes: np.ndarray | None = None, embed: bool = True) -> list[Face]:
        """Find faces, their landmarks and (if ``embed``) their identity embeddings.

        Args:
            image (`np.ndarray`): uint8 RGB of shape (H, W, 3).
            boxes (`np.ndarray`, *optional*): shape (N, 4), ``(x0, y0, x1, y1)``; when given, detection is skipped and
                these boxes are analysed (their score is reported as ``nan``).
            embed (`bool`, defaults to `True`): compute identity embeddings.

        Returns:
            `list[Face]`: the faces, sorted by decreasing score (given boxes keep their order).
        """

    def get_face(self, image: np.ndarray, name: str = "image", embed: bool = True) -> Face:
        """The largest face in ``image``; raises a `ValueError` naming ``name`` when there is none.

        Args:
            image (`np.ndarray`): uint8 RGB of shape (H, W, 3).
            name (`str`, defaults to `"image"`): how the input is named in the error (for example its file path).
            embed (`bool`, defaults to `True`): compute the identity embedding.

        Returns:
            `Face`: the face with the largest box.
        """
        faces = self.analyze(image, embed=embed)
        if not faces:
            raise ValueError(
                f"No face found in {name} (shape {tuple(np.shape(image))}); expected at least one face above the "
                "detector's threshold. Lower the threshold, upsample small faces, or pass boxes explicitly."
            )
        return max(faces, key=lambda face: face.area)

    def align_ffhq(self, image: np.ndarray, face: Face, output_size: int = 1024) -> AlignedFace:
        """FFHQ-style crop of ``face`` (needs its 68 landmarks); see `genblocks.faces.align.align_ffhq`.

        Args:
            image (`np.ndarray`): uint8 of shape (H, W, C), the image the face was found in.
            face (`Face`): a face with ``landmarks68``.
            output_size (`int`, defaults to 1024): side of the square crop.

        Returns:
            `AlignedFace`: the crop and its (2, 3) source-to-crop matrix.
        """
        if face.landmarks68 is None:
            raise ValueError("`face.landmarks68` is None; FFHQ alignment needs a backend that gives 68 landmarks.")
        return align_ffhq(image, face.landmarks68, output_size=output_size)

    def norm_crop(self, image: np.ndarray, face: Face, image_size: int = 112) -> AlignedFace:
        """ArcFace norm-crop of ``face`` from its 5 points; see `genblocks.faces.align.norm_crop`.

        Args:
            image (`np.ndarray`): uint8 of shape (H, W, C), the image the face was found in.
            face (`Face`): the face.
            image_size (`int`, defaults to 112): side of the square crop.

        Returns:
            `AlignedFace`: the crop and its (2, 3) source-to-crop matrix.
        """
        return norm_crop(image, face.landmarks5, image_size=image_size)
