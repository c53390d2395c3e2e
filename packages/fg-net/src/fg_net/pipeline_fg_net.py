"""Single-image AU detection with FG-Net, and heatmap overlays.

The inference path of the authors' ``code/single_image_inference.py`` (ihp-lab/FG-Net@0db26d9; spec fg-net §5):
FFHQ-align the face to 256 px (dlib landmarks, `fg_net.preprocessing.align_face`), scale to [-1, 1], run
pSp -> re-mapping -> synthesis with constant noise -> interpreter, keep the dataset's first K heatmaps, clamp them to
[-1, 1] and call an AU active iff its heatmap's spatial mean is > 0. In eval mode the path is deterministic.

Example::

    from fg_net import FGNetPipeline

    pipeline = FGNetPipeline.from_pretrained("checkpoints/fg-net-bp4d")   # a converted checkpoint folder
    output = pipeline(image)                                               # uint8 RGB (H, W, 3)
    print(dict(zip(output.aus, output.active[0])))
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch import Tensor

from fg_net.heatmaps import decode_heatmaps, heatmap_scores
from fg_net.modeling_fg_net import FGNet
from fg_net.preprocessing import AlignedFaceLandmarks, align_face
from genblocks.faces.analyzer import FaceAnalyzer
from genblocks.media import write_image

__all__ = ["FGNetOutput", "FGNetPipeline", "draw_landmarks", "heatmap_overlay", "overlay_grid", "save_prediction"]


@dataclass(frozen=True)
class FGNetOutput:
    """AU predictions for a batch of faces.

    Args:
        aus (`tuple[int, ...]`): the K AUs, in column order.
        active (`np.ndarray`): int64 (B, K), 1 = active.
        scores (`np.ndarray`): float32 (B, K), the clamped heatmaps' spatial means (active iff > 0).
        heatmaps (`Tensor`): float32 (B, K, T, T) in [-1, 1], on CPU.
        aligned_images (`np.ndarray`): uint8 (B, S, S, 3), the faces the model saw (before resizing to its input).
        faces (`list[AlignedFaceLandmarks]` or `None`): alignment results (landmarks, transforms) when the pipeline
            aligned the inputs.
    """

    aus: tuple[int, ...]
    active: np.ndarray
    scores: np.ndarray
    heatmaps: Tensor
    aligned_images: np.ndarray
    faces: list[AlignedFaceLandmarks] | None

    def as_dicts(self) -> list[dict[str, dict[str, float | int]]]:
        """Per image ``{"AU1": {"active": 0/1, "score": mean}, ...}``."""
        return [
            {
                f"AU{au}": {"active": int(self.active[b, k]), "score": float(self.scores[b, k])}
                for k, au in enumerate(self.aus)
            }
            for b in range(self.active.shape[0])
        ]


class FGNetPipeline:
    """Align faces, run FG-Net and decode AUs.

    Args:
        model (`FGNet`): the model (put in eval mode).
        analyzer (`FaceAnalyzer`, *optional*): 68-point landmark backend for alignment; needed unless the inputs are
            already aligned (``aligned=True`` in `__call__`).
        aligned_size (`int`, defaults to 256): side of the FFHQ crop (the paper's 256; resized to the encoder input).
    """

    def __init__(self, model: FGNet, analyzer: FaceAnalyzer | None = None, aligned_size: int = 256) -> None:
        self.model = model.eval()
        self.analyzer = analyzer
        self.aligned_size = aligned_size

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, analyzer: FaceAnalyzer | None = None, device: str | torch.device = "cpu"
    ) -> FGNetPipeline:
        """A pipeline around `FGNet.from_pretrained(directory)`.

        Args:
            directory (`str` or `Path`): a ``save_pretrained`` folder.
            analyzer (`FaceAnalyzer`, *optional*): the landmark backend.
            device (`str` or `torch.device`, defaults to `"cpu"`): where to run.

        Returns:
            `FGNetPipeline`.
        """
        return cls(FGNet.from_pretrained(directory, map_location=device), analyzer)

    @property
    def device(self) -> torch.device:
        """The model's device."""
        return next(self.model.parameters()).device

    def check_inputs(self, images: Sequence[np.ndarray], aligned: bool) -> None:
        """Validate the images (uint8 RGB (H, W, 3)) and that an analyzer is available when aligning."""
        if not images:
            raise ValueError("`images` must hold at least one image.")
        for index, image in enumerate(images):
            if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                shape = getattr(image, "shape", None)
                raise ValueError(
                    f"`images[{index}]` must be a uint8 RGB array (H, W, 3), got {type(image).__name__} {shape}."
                )
        if not aligned and self.analyzer is None:
            raise ValueError(
                "aligning faces needs a landmark `analyzer` (fg_net.preprocessing.build_face_analyzer())."
            )

    def prepare_images(self, faces: np.ndarray) -> Tensor:
        """uint8 (B, S, S, 3) faces -> float (B, 3, input, input) in [-1, 1] on the model's device."""
        tensor = torch.from_numpy(np.array(faces, dtype=np.float32)).permute(0, 3, 1, 2) / 127.5 - 1.0
        size = self.model.encoder.input_size
        if tensor.shape[-1] != size or tensor.shape[-2] != size:
            tensor = F.interpolate(tensor, size=(size, size), mode="bicubic", align_corners=False).clamp(-1.0, 1.0)
        return tensor.to(self.device)

    @torch.no_grad()
    def __call__(self, images: np.ndarray | Sequence[np.ndarray], aligned: bool = False) -> FGNetOutput:
        """Detect AUs.

        Args:
            images (`np.ndarray` or `Sequence[np.ndarray]`): one uint8 RGB image (H, W, 3) or several.
            aligned (`bool`, defaults to `False`): the images are already FFHQ-aligned square faces (skip detection).

        Returns:
            `FGNetOutput`.
        """
        # 1. Check inputs
        batch = [images] if isinstance(images, np.ndarray) and images.ndim == 3 else list(images)
        self.check_inputs(batch, aligned)
        # 2. Align the faces (dlib -> FFHQ crop -> dlib again)
        faces = None
        if aligned:
            crops = [
                np.asarray(Image.fromarray(img).resize((self.aligned_size,) * 2, Image.Resampling.BICUBIC))
                if img.shape[:2] != (self.aligned_size, self.aligned_size)
                else img
                for img in batch
            ]
        else:
            faces = [
                align_face(self.analyzer, img, self.aligned_size, name=f"images[{i}]") for i, img in enumerate(batch)
            ]
            crops = [face.image for face in faces]
        aligned_images = np.stack(crops)
        # 3. Encode, synthesise features, interpret
        heatmaps = self.model.au_heatmaps(self.prepare_images(aligned_images)).float().cpu()
        # 4. Decode by spatial mean > 0
        return FGNetOutput(
            aus=tuple(self.model.config.aus),
            active=decode_heatmaps(heatmaps).numpy(),
            scores=heatmap_scores(heatmaps).numpy(),
            heatmaps=heatmaps,
            aligned_images=aligned_images,
            faces=faces,
        )


def heatmap_overlay(image: np.ndarray, heatmap: Tensor | np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """Blend a signed heatmap onto a face: red where positive (active evidence), blue where negative.

    Args:
        image (`np.ndarray`): uint8 RGB (S, S, 3).
        heatmap (`Tensor` or `np.ndarray`): (T, T), values in [-1, 1]; resized to S (bilinear).
        alpha (`float`, defaults to 0.6): opacity at |value| = 1.

    Returns:
        `np.ndarray`: uint8 RGB (S, S, 3).
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"`image` must be uint8 RGB (S, S, 3), got {image.dtype} {image.shape}.")
    heat = torch.as_tensor(np.asarray(heatmap), dtype=torch.float32)
    if heat.ndim != 2:
        raise ValueError(f"`heatmap` must have shape (T, T), got {tuple(heat.shape)}.")
    heat = F.interpolate(heat[None, None], size=image.shape[:2], mode="bilinear", align_corners=False)[0, 0]
    heat = heat.clamp(-1.0, 1.0).numpy()[..., None]
    red = np.array([255.0, 40.0, 40.0])
    blue = np.array([40.0, 90.0, 255.0])
    colour = np.where(heat > 0, red, blue)
    weight = alpha * np.abs(heat)
    return (image.astype(np.float64) * (1 - weight) + colour * weight).round().clip(0, 255).astype(np.uint8)


def overlay_grid(
    image: np.ndarray,
    heatmaps: Tensor | np.ndarray,
    aus: Sequence[int],
    active: Sequence[int] | None = None,
    columns: int = 4,
) -> np.ndarray:
    """A grid of `heatmap_overlay` tiles, one per AU, captioned ``AU{n}`` (and ``+``/``-`` when ``active`` is given).

    Args:
        image (`np.ndarray`): uint8 RGB (S, S, 3).
        heatmaps (`Tensor` or `np.ndarray`): (K, T, T).
        aus (`Sequence[int]`): the K AUs.
        active (`Sequence[int]`, *optional*): K decoded activations.
        columns (`int`, defaults to 4): tiles per row.

    Returns:
        `np.ndarray`: uint8 RGB (rows * S, columns * S, 3).
    """
    heatmaps = np.asarray(heatmaps)
    if heatmaps.ndim != 3 or heatmaps.shape[0] != len(aus):
        raise ValueError(f"`heatmaps` must have shape (K={len(aus)}, T, T), got {heatmaps.shape}.")
    size = image.shape[0]
    rows = -(-len(aus) // columns)
    grid = Image.new("RGB", (columns * size, rows * size), (0, 0, 0))
    for k, au in enumerate(aus):
        tile = Image.fromarray(heatmap_overlay(image, heatmaps[k]))
        caption = f"AU{au}" + ("" if active is None else (" +" if int(active[k]) else " -"))
        draw = ImageDraw.Draw(tile)
        draw.rectangle((0, 0, 8 * len(caption) + 6, 14), fill=(0, 0, 0))
        draw.text((3, 1), caption, fill=(255, 255, 255))
        grid.paste(tile, ((k % columns) * size, (k // columns) * size))
    return np.asarray(grid)


def draw_landmarks(image: np.ndarray, landmarks: np.ndarray, radius: int = 2) -> np.ndarray:
    """Draw 68 landmarks as green dots.

    Args:
        image (`np.ndarray`): uint8 RGB (H, W, 3).
        landmarks (`np.ndarray`): (68, 2), (x, y).
        radius (`int`, defaults to 2): dot radius in pixels.

    Returns:
        `np.ndarray`: uint8 RGB (H, W, 3).
    """
    canvas = Image.fromarray(image.copy())
    draw = ImageDraw.Draw(canvas)
    for x, y in np.asarray(landmarks, dtype=np.float64):
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=(40, 255, 80))
    return np.asarray(canvas)


def save_prediction(output: FGNetOutput, out_dir: str | Path, stem: str, index: int = 0) -> dict[str, Path]:
    """Write one image's prediction: the aligned face, a grid of heatmap overlays, one overlay per AU and the AUs as
    JSON.

    Files: ``{stem}_aligned.png``, ``{stem}_heatmaps.png`` (grid), ``{stem}_AU{n}.png`` and ``{stem}_aus.json``
    (``{"aus": {"AU1": {"active", "score"}, ...}}``).

    Args:
        output (`FGNetOutput`): the pipeline's output.
        out_dir (`str` or `Path`): output folder (created).
        stem (`str`): file-name prefix.
        index (`int`, defaults to 0): which image of the batch.

    Returns:
        `dict[str, Path]`: the written files by role (``"aligned"``, ``"grid"``, ``"AU{n}"``, ``"json"``).
    """
    out_dir = Path(out_dir)
    face = output.aligned_images[index]
    heatmaps = output.heatmaps[index].numpy()
    files = {
        "aligned": write_image(out_dir / f"{stem}_aligned.png", face),
        "grid": write_image(
            out_dir / f"{stem}_heatmaps.png", overlay_grid(face, heatmaps, output.aus, output.active[index])
        ),
    }
    for k, au in enumerate(output.aus):
        files[f"AU{au}"] = write_image(out_dir / f"{stem}_AU{au}.png", heatmap_overlay(face, heatmaps[k]))
    json_path = out_dir / f"{stem}_aus.json"
    json_path.write_text(json.dumps({"aus": output.as_dicts()[index]}, indent=2) + "\n")
    files["json"] = json_path
    return files
