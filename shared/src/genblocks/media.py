"""Image and video read/write helpers: PNG (and other still formats) and GIF through Pillow, MP4 through
imageio-ffmpeg (``pip install genblocks[video]``), plus conversions between model tensors and uint8 arrays and a grid.

Conventions: arrays are uint8 channel-last, (H, W, C) for an image and (F, H, W, C) for a video; tensors are float
channel-first, (C, H, W) or (F, C, H, W), in ``value_range`` (default [-1, 1], the VAE's range).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from PIL import Image, ImageSequence

__all__ = ["make_grid", "read_image", "read_video", "to_tensor", "to_uint8", "write_image", "write_video"]

logger = logging.getLogger(__name__)

_VIDEO_HINT = "MP4 needs imageio-ffmpeg: `pip install genblocks[video]`."


def to_uint8(frames: torch.Tensor | np.ndarray, value_range: tuple[float, float] = (-1.0, 1.0)) -> np.ndarray:
    """Convert model tensors or arrays to uint8 channel-last arrays.

    Args:
        frames (`torch.Tensor` or `np.ndarray`): a float tensor of shape (C, H, W) or (F, C, H, W) in
            ``value_range`` (clamped, rounded), or a uint8 array of shape (H, W), (H, W, C) or (F, H, W, C), which is
            returned unchanged.
        value_range (`tuple[float, float]`, defaults to `(-1.0, 1.0)`): the tensor's black and white values.

    Returns:
        `np.ndarray`: uint8 of shape (H, W, C) or (F, H, W, C).
    """
    if isinstance(frames, np.ndarray):
        if frames.dtype != np.uint8 or frames.ndim not in (2, 3, 4):
            raise ValueError(
                f"`frames` arrays must be uint8 (H, W), (H, W, C) or (F, H, W, C), got {frames.dtype} {frames.shape}."
            )
        return frames
    if not isinstance(frames, torch.Tensor) or frames.ndim not in (3, 4) or not frames.is_floating_point():
        raise ValueError("`frames` must be a float tensor (C, H, W) / (F, C, H, W) or a uint8 array.")
    low, high = value_range
    if high <= low:
        raise ValueError(f"`value_range` must be increasing, got {value_range}.")
    scaled = ((frames.detach().float().cpu() - low) / (high - low)).clamp(0, 1) * 255.0
    array = scaled.round().to(torch.uint8).movedim(-3, -1).numpy()
    return np.ascontiguousarray(array)


def to_tensor(frames: np.ndarray, value_range: tuple[float, float] = (-1.0, 1.0)) -> torch.Tensor:
    """Convert uint8 channel-last arrays to float channel-first tensors in ``value_range``.

    Args:
        frames (`np.ndarray`): uint8 of shape (H, W, C) or (F, H, W, C).
        value_range (`tuple[float, float]`, defaults to `(-1.0, 1.0)`): the output's black and white values.

    Returns:
        `torch.Tensor`: float32 of shape (C, H, W) or (F, C, H, W).
    """
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim not in (3, 4):
        raise ValueError(f"`frames` must be uint8 (H, W, C) or (F, H, W, C), got {frames.dtype} {frames.shape}.")
    low, high = value_range
    tensor = torch.from_numpy(np.ascontiguousarray(frames)).movedim(-1, -3).float() / 255.0
    return tensor * (high - low) + low


def read_image(path: str | Path, mode: str = "RGB") -> np.ndarray:
    """Read an image file.

    Args:
        path (`str` or `Path`): PNG, JPEG or any format Pillow reads.
        mode (`str`, defaults to `"RGB"`): Pillow mode to convert to (``"RGB"``, ``"RGBA"``, ``"L"``).

    Returns:
        `np.ndarray`: uint8 of shape (H, W, C) (or (H, W) for ``"L"``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Image not found: {path}")
    with Image.open(path) as image:
        return np.asarray(image.convert(mode)).copy()


def write_image(
    path: str | Path, image: torch.Tensor | np.ndarray, value_range: tuple[float, float] = (-1.0, 1.0)
) -> Path:
    """Write one image (PNG is lossless; the format follows the suffix).

    Args:
        path (`str` or `Path`): output file; parent folders are created.
        image (`torch.Tensor` or `np.ndarray`): float tensor (C, H, W) or (1, C, H, W) in ``value_range``, or uint8
            (H, W) / (H, W, C) with C in {1, 3, 4}.
        value_range (`tuple[float, float]`, defaults to `(-1.0, 1.0)`): range of a float tensor.

    Returns:
        `Path`: the written file.
    """
    array = to_uint8(image, value_range)
    if array.ndim == 4:
        if array.shape[0] != 1:
            raise ValueError(f"`image` holds {array.shape[0]} frames; use `write_video` or `make_grid`.")
        array = array[0]
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def read_video(path: str | Path) -> tuple[np.ndarray, float]:
    """Read all frames of a GIF or MP4 (or any ffmpeg-readable video).

    Args:
        path (`str` or `Path`): the file.

    Returns:
        `tuple[np.ndarray, float]`: uint8 RGB frames of shape (F, H, W, 3) and the frame rate (fps).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Video not found: {path}")
    if path.suffix.lower() == ".gif":
        with Image.open(path) as gif:
            frames = [np.asarray(frame.convert("RGB")).copy() for frame in ImageSequence.Iterator(gif)]
            duration_ms = gif.info.get("duration") or 100
        return np.stack(frames), 1000.0 / float(duration_ms)
    imageio_ffmpeg = _import_imageio_ffmpeg()
    reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
    meta = next(reader)
    width, height = meta["size"]
    frames = [np.frombuffer(buffer, dtype=np.uint8).reshape(height, width, 3) for buffer in reader]
    return np.stack(frames), float(meta["fps"])


def write_video(
    path: str | Path,
    frames: torch.Tensor | np.ndarray,
    fps: float = 8.0,
    value_range: tuple[float, float] = (-1.0, 1.0),
    loop: int = 0,
    quality: float = 8.0,
) -> Path:
    """Write frames as a GIF (Pillow, adaptive palette) or MP4 (H.264 yuv420p through imageio-ffmpeg).

    Args:
        path (`str` or `Path`): output file, ``.gif`` or ``.mp4``; parent folders are created.
        frames (`torch.Tensor` or `np.ndarray`): float tensor (F, C, H, W) in ``value_range`` or uint8 (F, H, W, C),
            C in {1, 3}.
        fps (`float`, defaults to 8.0): frame rate (GIF stores whole milliseconds per frame).
        value_range (`tuple[float, float]`, defaults to `(-1.0, 1.0)`): range of a float tensor.
        loop (`int`, defaults to 0): GIF loop count (0 = forever).
        quality (`float`, defaults to 8.0): MP4 quality, 0 (worst) to 10 (best), imageio-ffmpeg's scale.

    Returns:
        `Path`: the written file.
    """
    array = to_uint8(frames, value_range)
    if array.ndim != 4 or array.shape[-1] not in (1, 3) or array.shape[0] == 0:
        raise ValueError(f"`frames` must hold (F > 0, H, W, C in {{1, 3}}) frames, got shape {array.shape}.")
    if fps <= 0:
        raise ValueError(f"`fps` must be positive, got {fps}.")
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix == ".gif":
        images = [Image.fromarray(frame) for frame in array]
        images[0].save(
            path, save_all=True, append_images=images[1:], duration=round(1000.0 / fps), loop=loop, optimize=False
        )
    elif suffix == ".mp4":
        imageio_ffmpeg = _import_imageio_ffmpeg()
        height, width = array.shape[1:3]
        writer = imageio_ffmpeg.write_frames(
            str(path),
            (width, height),
            fps=fps,
            codec="libx264",
            pix_fmt_in="rgb24",
            pix_fmt_out="yuv420p",
            quality=quality,
            macro_block_size=2,
        )
        writer.send(None)
        for frame in array:
            writer.send(np.ascontiguousarray(frame))
        writer.close()
    else:
        raise ValueError(f"`path` must end in .gif or .mp4, got {path.name!r}.")
    logger.debug("wrote %d frames of %s to %s", array.shape[0], array.shape[1:], path)
    return path


def make_grid(
    images: torch.Tensor | np.ndarray,
    nrow: int | None = None,
    padding: int = 2,
    pad_value: int = 0,
    value_range: tuple[float, float] = (-1.0, 1.0),
) -> np.ndarray:
    """Tile images into one image, row by row.

    Args:
        images (`torch.Tensor` or `np.ndarray`): float tensor (N, C, H, W) in ``value_range`` or uint8
            (N, H, W, C).
        nrow (`int`, *optional*): images per row; defaults to ``ceil(sqrt(N))``.
        padding (`int`, defaults to 2): pixels between and around tiles.
        pad_value (`int`, defaults to 0): uint8 value of the padding.
        value_range (`tuple[float, float]`, defaults to `(-1.0, 1.0)`): range of a float tensor.

    Returns:
        `np.ndarray`: uint8 of shape (rows·(H+p)+p, nrow·(W+p)+p, C).
    """
    array = to_uint8(images, value_range)
    if array.ndim != 4 or array.shape[0] == 0:
        raise ValueError(f"`images` must hold a non-empty batch (N, H, W, C) / (N, C, H, W), got {array.shape}.")
    count, height, width, channels = array.shape
    nrow = math.ceil(math.sqrt(count)) if nrow is None else nrow
    if nrow < 1 or padding < 0:
        raise ValueError(f"`nrow` must be >= 1 and `padding` >= 0, got {nrow} and {padding}.")
    rows = math.ceil(count / nrow)
    grid = np.full(
        (rows * (height + padding) + padding, nrow * (width + padding) + padding, channels), pad_value, np.uint8
    )
    for index, image in enumerate(array):
        top = padding + (index // nrow) * (height + padding)
        left = padding + (index % nrow) * (width + padding)
        grid[top : top + height, left : left + width] = image
    return grid


def _import_imageio_ffmpeg() -> ModuleType:
    try:
        import imageio_ffmpeg
    except ImportError as error:
        raise ImportError(_VIDEO_HINT) from error
    return imageio_ffmpeg
