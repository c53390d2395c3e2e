"""Whole photos (issue #18 item 3): find the face, align it, edit the aligned crop, paste the edit back.

The model edits aligned square portraits at its own size (512² for SD1.5). An ordinary photo is handled in three
steps: the largest face is detected with a `genblocks.faces.FaceAnalyzer` and cropped FFHQ-style
(`genblocks.faces.align_ffhq`, which needs 68 landmarks), the crop goes through any editing callable (for example
`PortraitEditPipeline` wrapped to take and return uint8 images), and the edited crop is warped back with the inverse
of the alignment and blended in with a feathered mask. The mask is exactly 0 outside the warped crop's inner square,
so every pixel there keeps its original value (the paste-back test checks this bit for bit). Not in the paper or the
authors' code, which edits pre-aligned 512² portraits only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from genblocks.errors import InputError
from genblocks.faces import Face, FaceAnalyzer, align_ffhq, warp_affine

__all__ = ["PhotoEdit", "edit_photo", "feather_mask", "paste_back"]

CropEditor = Callable[[np.ndarray], np.ndarray]
"""Edits an aligned crop: uint8 (S, S, 3) RGB in, uint8 (S', S', 3) RGB out (resized back to S when S' differs)."""


@dataclass(frozen=True)
class PhotoEdit:
    """The result of `edit_photo`.

    Args:
        image (`np.ndarray`): uint8 (H, W, 3), the photo with the edited face pasted back.
        crop (`np.ndarray`): uint8 (S, S, 3), the aligned source crop given to the editor.
        edited_crop (`np.ndarray`): uint8 (S, S, 3), the editor's output at the crop size.
        mask (`np.ndarray`): float32 (H, W) in [0, 1], the paste-back weight of the edited crop (0 = original pixel).
        matrix (`np.ndarray`): float64 (2, 3), photo pixel coordinates -> crop pixel coordinates.
        face (`Face`): the face that was edited.
    """

    image: np.ndarray
    crop: np.ndarray
    edited_crop: np.ndarray
    mask: np.ndarray
    matrix: np.ndarray
    face: Face


def feather_mask(size: int, feather: float = 0.1, margin: float = 0.02) -> np.ndarray:
    """A square blending mask: 1 in the middle, a smooth (cosine) ramp to 0 towards the border.

    Args:
        size (`int`): side S of the crop.
        feather (`float`, defaults to 0.1): width of the ramp as a fraction of S.
        margin (`float`, defaults to 0.02): an outer band (fraction of S) that stays exactly 0, so the resampled
            crop border (where the warp mixes in black) never reaches the photo.

    Returns:
        `np.ndarray`: float32 of shape (S, S) in [0, 1].
    """
    if size < 4:
        raise InputError(f"feather_mask: `size` must be at least 4 pixels, got {size}")
    if not 0.0 <= margin < 0.5 or not 0.0 <= feather < 0.5 - margin:
        raise InputError(
            f"feather_mask: need 0 <= margin < 0.5 and 0 <= feather < 0.5 - margin, got {feather=}, {margin=}"
        )
    # distance of each pixel centre to the nearest border, in pixels
    coords = np.arange(size, dtype=np.float64) + 0.5
    edge = np.minimum(coords, size - coords)
    distance = np.minimum(edge[:, None], edge[None, :])
    start, width = margin * size, feather * size
    if width == 0:
        ramp = (distance > start).astype(np.float64)
    else:
        ramp = np.clip((distance - start) / width, 0.0, 1.0)
        ramp = 0.5 - 0.5 * np.cos(np.pi * ramp)
    return ramp.astype(np.float32)


def paste_back(
    photo: np.ndarray, crop: np.ndarray, matrix: np.ndarray, feather: float = 0.1, margin: float = 0.02
) -> tuple[np.ndarray, np.ndarray]:
    """Warp an edited aligned crop back into the photo and blend it in with a feathered mask.

    Args:
        photo (`np.ndarray`): uint8 (H, W, 3), the original photo.
        crop (`np.ndarray`): uint8 (S, S, 3), the edited crop, aligned by ``matrix``.
        matrix (`np.ndarray`): float (2, 3), photo pixel coordinates -> crop pixel coordinates.
        feather (`float`, defaults to 0.1): ramp width of `feather_mask`, fraction of S.
        margin (`float`, defaults to 0.02): zero band of `feather_mask`, fraction of S.

    Returns:
        `tuple[np.ndarray, np.ndarray]`: the blended photo, uint8 (H, W, 3), and the blending weight, float32 (H, W)
        in [0, 1]; where the weight is 0 the photo's pixels are returned unchanged.
    """
    photo = np.asarray(photo)
    crop = np.asarray(crop)
    if photo.dtype != np.uint8 or photo.ndim != 3 or photo.shape[2] != 3:
        raise InputError(f"paste_back: `photo` must be uint8 (H, W, 3), got {photo.dtype} {photo.shape}")
    if crop.dtype != np.uint8 or crop.ndim != 3 or crop.shape[2] != 3 or crop.shape[0] != crop.shape[1]:
        raise InputError(f"paste_back: `crop` must be a square uint8 (S, S, 3), got {crop.dtype} {crop.shape}")
    height, width = photo.shape[:2]
    full = np.vstack([np.asarray(matrix, dtype=np.float64), [0.0, 0.0, 1.0]])
    crop_to_photo = np.linalg.inv(full)[:2]
    weight = warp_affine(feather_mask(crop.shape[0], feather, margin), crop_to_photo, (width, height), "bilinear")
    weight = np.clip(weight, 0.0, 1.0)
    warped = warp_affine(crop, crop_to_photo, (width, height), "bicubic").astype(np.float32)
    blend = photo.astype(np.float32) * (1.0 - weight[..., None]) + warped * weight[..., None]
    out = np.where(weight[..., None] > 0, np.clip(np.round(blend), 0, 255), photo).astype(np.uint8)
    return out, weight.astype(np.float32)


def edit_photo(
    photo: np.ndarray,
    editor: CropEditor,
    analyzer: FaceAnalyzer,
    crop_size: int = 512,
    feather: float = 0.1,
    margin: float = 0.02,
    name: str = "image",
) -> PhotoEdit:
    """Edit the largest face of a whole photo: detect, align (FFHQ crop), edit the crop, paste back.

    Args:
        photo (`np.ndarray`): uint8 (H, W, 3) RGB.
        editor (`Callable`): uint8 (S, S, 3) aligned crop -> uint8 edited crop (any square size; resized to S).
        analyzer (`FaceAnalyzer`): gives the face's 68 landmarks (e.g. `genblocks.faces.DlibFaceAnalyzer`).
        crop_size (`int`, defaults to 512): S, the model's image size.
        feather (`float`, defaults to 0.1): ramp width of the paste-back mask, fraction of S.
        margin (`float`, defaults to 0.02): zero band of the paste-back mask, fraction of S.
        name (`str`, defaults to `"image"`): how the photo is named in errors (its path or flag).

    Returns:
        `PhotoEdit`: the pasted photo, the crops, the blending mask, the alignment and the face.

    Raises:
        InputError: no face in the photo, a face without 68 landmarks, or an editor output that is not an image.
    """
    photo = np.asarray(photo)
    if photo.dtype != np.uint8 or photo.ndim != 3 or photo.shape[2] != 3:
        raise InputError(f"{name}: expected a uint8 RGB image (H, W, 3), got {photo.dtype} {photo.shape}")
    faces = analyzer.analyze(photo, embed=False)
    if not faces:
        raise InputError(f"{name}: no face found (shape {photo.shape}); expected a photo with a visible face")
    face = max(faces, key=lambda found: found.area)
    if face.landmarks68 is None:
        raise InputError(f"{name}: the face analyzer gave no 68 landmarks; FFHQ alignment needs them")
    aligned = align_ffhq(photo, face.landmarks68, output_size=crop_size)
    edited = np.asarray(editor(aligned.image))
    if edited.dtype != np.uint8 or edited.ndim != 3 or edited.shape[2] != 3:
        raise InputError(f"the crop editor must return a uint8 (S, S, 3) image, got {edited.dtype} {edited.shape}")
    if edited.shape[:2] != (crop_size, crop_size):
        edited = np.asarray(Image.fromarray(edited).resize((crop_size, crop_size), Image.Resampling.BICUBIC))
    image, mask = paste_back(photo, edited, aligned.matrix, feather=feather, margin=margin)
    return PhotoEdit(image=image, crop=aligned.image, edited_crop=edited, mask=mask, matrix=aligned.matrix, face=face)
