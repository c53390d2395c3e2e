"""Image and video read/write helpers and pictures a person can read.

Files: PNG (and other still formats) and GIF through Pillow; MP4 through imageio-ffmpeg (``pip install
genblocks[video]``), with an AAC audio track muxed in from samples or an audio file (:mod:`genblocks.audio`);
:func:`read_video_meta` probes frame rate, frame count, size and audio without decoding. Pictures: a plain grid, a
labelled strip (panels at one height with a caption under each), a labelled grid, labelled side-by-side video frames
and a heat-map overlay, drawn with Pillow's default font (FreeType, scaled), so every package's demo shows what it
made in a figure that names its parts.

Conventions: arrays are uint8 channel-last, (H, W, C) for an image and (F, H, W, C) for a video; tensors are float
channel-first, (C, H, W) or (F, C, H, W), in ``value_range`` (default [-1, 1], the VAE's range). A file that is missing,
not a video, empty or truncated raises :class:`genblocks.errors.InputError` naming it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont, ImageOps, ImageSequence, UnidentifiedImageError

from genblocks.audio import AAC_SAMPLE_RATES, _fit_length, _run_ffmpeg, _write_wav_pcm16, read_audio
from genblocks.errors import InputError

__all__ = [
    "MAX_IMAGE_PIXELS",
    "VideoMeta",
    "heat_overlay",
    "label_frames",
    "make_grid",
    "make_labelled_grid",
    "make_strip",
    "read_image",
    "read_video",
    "read_video_meta",
    "to_tensor",
    "to_uint8",
    "write_demo_card",
    "write_image",
    "write_video",
]

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


MAX_IMAGE_PIXELS = 64_000_000
"""The default pixel limit of :func:`read_image` (64 Mpx): larger images are refused before they are decoded."""


def _to_eight_bit(image: Image.Image) -> Image.Image:
    """16-bit and float grayscale (modes I;16*, I, F) scaled to 8 bits by their type's range, not clipped."""
    if image.mode.startswith("I;16"):
        array = np.asarray(image, dtype=np.float64) / 65535.0
    elif image.mode == "I":
        array = np.asarray(image, dtype=np.float64)
        array = array / 65535.0 if array.max(initial=0) > 255 else array / 255.0
    elif image.mode == "F":
        array = np.asarray(image, dtype=np.float64)
        array = array if array.max(initial=0) <= 1.0 else array / 255.0
    else:
        return image
    return Image.fromarray(np.round(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8), mode="L")


def read_image(path: str | Path, mode: str = "RGB", max_pixels: int | None = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Read an image file as a person sees it.

    EXIF orientation is applied; 16-bit (and 32-bit integer or float) grayscale is scaled to 8 bits by its range
    rather than clipped; transparent images (RGBA, LA, palette with transparency) are composited on white before an
    RGB conversion; grayscale becomes RGB by repetition.

    Args:
        path (`str` or `Path`): PNG, JPEG or any format Pillow reads.
        mode (`str`, defaults to `"RGB"`): Pillow mode to convert to (``"RGB"``, ``"RGBA"``, ``"L"``).
        max_pixels (`int`, *optional*, defaults to 64 Mpx): refuse larger images before decoding them (``None``: no
            limit); a 10000 x 10000 photo would otherwise take gigabytes downstream.

    Returns:
        `np.ndarray`: uint8 of shape (H, W, C) (or (H, W) for ``"L"``).

    Raises:
        FileNotFoundError: the file is missing.
        InputError: the file is not an image, is truncated, or is larger than ``max_pixels``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image {path}: file not found")
    try:
        with Image.open(path) as image:
            width, height = image.size
            if max_pixels is not None and width * height > max_pixels:
                raise InputError(
                    f"image {path}: {width}x{height} is {width * height / 1e6:.0f} Mpx, more than the limit of "
                    f"{max_pixels / 1e6:.0f} Mpx (downscale it, or raise max_pixels)"
                )
            shown: Image.Image = _to_eight_bit(ImageOps.exif_transpose(image))
            if mode == "RGB" and (shown.mode in ("RGBA", "LA", "PA") or "transparency" in shown.info):
                rgba = shown.convert("RGBA")
                shown = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
            return np.asarray(shown.convert(mode)).copy()
    except InputError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise InputError(
            f"image {path}: not a readable image: could not be decoded ({error}); expected PNG, JPEG, WebP, BMP, TIFF "
            "or another format Pillow reads"
        ) from None


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


@dataclass(frozen=True)
class VideoMeta:
    """What a video file holds, read from its container without decoding the frames.

    Args:
        fps (`float`): frame rate (ffmpeg's stream rate, two decimals; a GIF's from its first frame's duration).
        num_frames (`int`): number of frames (video packets counted by ffmpeg; a GIF's frames).
        width (`int`): frame width in pixels.
        height (`int`): frame height in pixels.
        has_audio (`bool`): whether the file holds an audio track.
        audio_sample_rate (`int`, *optional*): that track's sample rate in Hz.
    """

    fps: float
    num_frames: int
    width: int
    height: int
    has_audio: bool = False
    audio_sample_rate: int | None = None

    @property
    def duration(self) -> float:
        """Video length in seconds, ``num_frames / fps``."""
        return self.num_frames / self.fps


def read_video_meta(path: str | Path) -> VideoMeta:
    """Probe a GIF or MP4 (or any ffmpeg-readable video) for frame rate, frame count, size and audio.

    MP4s go through one ``ffmpeg -c copy -f null`` pass that counts packets (no decoding), GIFs through Pillow.

    Args:
        path (`str` or `Path`): the file.

    Returns:
        `VideoMeta`: fps, num_frames, width, height, has_audio and audio_sample_rate.

    Raises:
        `InputError`: naming ``path``, when it does not exist, is not a video, is empty or truncated, or holds no
            frames.
    """
    path = _existing(path, "video")
    if path.suffix.lower() == ".gif":
        with _open_gif(path) as gif:
            fps = 1000.0 / float(gif.info.get("duration") or 100)
            return VideoMeta(fps, int(getattr(gif, "n_frames", 1)), gif.width, gif.height)
    process = _run_ffmpeg(["-i", str(path), "-map", "0:v:0", "-c", "copy", "-f", "null", "-"], path, "a video file")
    log = process.stderr.decode(errors="replace")
    header = log.split("Stream mapping:", 1)[0]
    video_line = next((line for line in header.splitlines() if re.search(r"Stream #0:\d+.*: Video: ", line)), "")
    size = re.search(r", (\d+)x(\d+)", video_line)
    rate = re.search(r"([\d.]+) fps", video_line) or re.search(r"([\d.]+) tbr", video_line)
    counts = re.findall(r"frame=\s*(\d+)", log)
    if size is None or rate is None or not counts or int(counts[-1]) == 0 or float(rate.group(1)) <= 0:
        raise InputError(f"{path}: holds no readable video frames (empty or truncated?).")
    audio = re.search(r"Stream #0:\d+.*: Audio: .*?, (\d+) Hz", header)
    return VideoMeta(
        fps=float(rate.group(1)),
        num_frames=int(counts[-1]),
        width=int(size.group(1)),
        height=int(size.group(2)),
        has_audio=audio is not None,
        audio_sample_rate=int(audio.group(1)) if audio is not None else None,
    )


def read_video(path: str | Path) -> tuple[np.ndarray, float]:
    """Read all frames of a GIF or MP4 (or any ffmpeg-readable video).

    Args:
        path (`str` or `Path`): the file. Its audio track, if any, is read by `genblocks.audio.read_audio`.

    Returns:
        `tuple[np.ndarray, float]`: uint8 RGB frames of shape (F, H, W, 3) and the frame rate (fps).

    Raises:
        `InputError`: naming ``path``, when it does not exist, is not a video, is empty or truncated.
    """
    path = _existing(path, "video")
    if path.suffix.lower() == ".gif":
        with _open_gif(path) as gif:
            try:
                frames = [np.asarray(frame.convert("RGB")).copy() for frame in ImageSequence.Iterator(gif)]
            except OSError as error:
                raise InputError(f"{path}: truncated or unreadable GIF ({error}).") from error
            duration_ms = gif.info.get("duration") or 100
        return np.stack(frames), 1000.0 / float(duration_ms)
    meta = read_video_meta(path)  # a clear InputError for a truncated or empty file before decoding
    imageio_ffmpeg = _import_imageio_ffmpeg()
    try:
        reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
        width, height = next(reader)["size"]
        frames = [np.frombuffer(buffer, dtype=np.uint8).reshape(height, width, 3) for buffer in reader]
    except (OSError, RuntimeError) as error:
        raise InputError(f"{path}: could not decode the video ({error}).") from error
    if not frames:
        raise InputError(f"{path}: holds no readable video frames (empty or truncated?).")
    return np.stack(frames), meta.fps


def write_video(
    path: str | Path,
    frames: torch.Tensor | np.ndarray,
    fps: float = 8.0,
    value_range: tuple[float, float] = (-1.0, 1.0),
    loop: int = 0,
    quality: float = 8.0,
    audio: tuple[np.ndarray | torch.Tensor, int] | str | Path | None = None,
) -> Path:
    """Write frames as a GIF (Pillow, adaptive palette) or MP4 (H.264 yuv420p through imageio-ffmpeg, optional AAC).

    Args:
        path (`str` or `Path`): output file, ``.gif`` or ``.mp4``; parent folders are created.
        frames (`torch.Tensor` or `np.ndarray`): float tensor (F, C, H, W) in ``value_range`` or uint8 (F, H, W, C),
            C in {1, 3}.
        fps (`float`, defaults to 8.0): frame rate (GIF stores whole milliseconds per frame); pass the rate of the
            input (`read_video` / `read_video_meta` return it) rather than assuming one.
        value_range (`tuple[float, float]`, defaults to `(-1.0, 1.0)`): range of a float tensor.
        loop (`int`, defaults to 0): GIF loop count (0 = forever).
        quality (`float`, defaults to 8.0): MP4 quality, 0 (worst) to 10 (best), imageio-ffmpeg's scale.
        audio (`tuple` or `str` or `Path`, *optional*): an audio track for an MP4: ``(samples, sample_rate)`` with
            float samples in [-1, 1] of shape (N,) or (N, C) (array or tensor), or an audio or video file (read mono
            by `genblocks.audio.read_audio`). It is trimmed, or padded with silence, to the video's length
            ``F / fps`` and encoded as AAC (rates AAC cannot carry are resampled to 48 kHz by ffmpeg).

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
    suffix = path.suffix.lower()
    if suffix not in (".gif", ".mp4"):
        raise ValueError(f"`path` must end in .gif or .mp4, got {path.name!r}.")
    if audio is not None and suffix != ".mp4":
        raise InputError(f"{path}: a GIF has no audio track; write an .mp4 to keep `audio`.")
    track = None if audio is None else _audio_track(audio, array.shape[0] / fps)
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".gif":
        images = [Image.fromarray(frame) for frame in array]
        images[0].save(
            path, save_all=True, append_images=images[1:], duration=round(1000.0 / fps), loop=loop, optimize=False
        )
    else:
        imageio_ffmpeg = _import_imageio_ffmpeg()
        height, width = array.shape[1:3]
        with contextlib.ExitStack() as stack:
            audio_options: dict = {}
            if track is not None:
                samples, sample_rate = track
                wav = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "audio.wav"
                _write_wav_pcm16(wav, samples, sample_rate)
                resample = [] if sample_rate in AAC_SAMPLE_RATES else ["-ar", "48000"]
                audio_options = {"audio_path": str(wav), "audio_codec": "aac", "output_params": resample}
            writer = imageio_ffmpeg.write_frames(
                str(path),
                (width, height),
                fps=fps,
                codec="libx264",
                pix_fmt_in="rgb24",
                pix_fmt_out="yuv420p",
                quality=quality,
                macro_block_size=2,
                ffmpeg_log_level="error",
                **audio_options,
            )
            writer.send(None)
            for frame in array:
                writer.send(np.ascontiguousarray(frame))
            writer.close()
    logger.debug("wrote %d frames of %s to %s (audio: %s)", array.shape[0], array.shape[1:], path, track is not None)
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


# Pictures a person can read: labelled strips and grids, labelled video frames, heat-map overlays.

_BACKGROUND = (255, 255, 255)
_INK = (20, 20, 20)

Panel = torch.Tensor | np.ndarray


def make_strip(
    panels: Sequence[Panel],
    captions: Sequence[str] | None = None,
    title: str | None = None,
    height: int | None = None,
    font_size: int | None = None,
    spacing: int = 4,
    value_range: tuple[float, float] = (-1.0, 1.0),
) -> np.ndarray:
    """Place images side by side at one height, with a caption bar under each and an optional title bar on top.

    Layout (pixels): the title bar (if any), then the panels, left to right with ``spacing`` columns of white
    between them, then one caption bar as tall as the longest wrapped caption. Width is
    ``sum(panel widths at height) + spacing · (len(panels) - 1)``; a panel already ``height`` tall is copied exactly.

    Args:
        panels (`Sequence[torch.Tensor | np.ndarray]`): images, each uint8 (H, W), (H, W, C) or float (C, H, W) /
            (1, C, H, W) in ``value_range``; C in {1, 3, 4} (grey is repeated, alpha dropped).
        captions (`Sequence[str]`, *optional*): one caption per panel, wrapped to the panel's width (``""`` for
            none); `None` for no caption bar.
        title (`str`, *optional*): a line (wrapped) above the panels, 1.25x the caption font.
        height (`int`, *optional*): panel height; panels keep their aspect ratio (nearest-neighbour when enlarged,
            so tiny model outputs stay crisp; Lanczos when reduced). Defaults to the tallest panel.
        font_size (`int`, *optional*): caption font size in pixels; defaults to ``height / 12`` clipped to [12, 32].
        spacing (`int`, defaults to 4): white columns between panels.
        value_range (`tuple[float, float]`, defaults to `(-1.0, 1.0)`): range of float tensors.

    Returns:
        `np.ndarray`: uint8 RGB of shape (title + height + caption bar, total width, 3).
    """
    images = [_as_rgb(panel, value_range) for panel in panels]
    if not images:
        raise InputError("`panels` is empty; pass at least one image.")
    height = max(image.shape[0] for image in images) if height is None else int(height)
    images = [_resize_to_height(image, height) for image in images]
    canvas, top, lefts = _strip_canvas(
        [image.shape[1] for image in images], height, captions, title, font_size, spacing
    )
    for image, left in zip(images, lefts):
        canvas[top : top + height, left : left + image.shape[1]] = image
    return canvas


def make_labelled_grid(
    rows: Sequence[Sequence[Panel]],
    captions: Sequence[Sequence[str]] | None = None,
    row_labels: Sequence[str] | None = None,
    title: str | None = None,
    height: int | None = None,
    font_size: int | None = None,
    spacing: int = 4,
    value_range: tuple[float, float] = (-1.0, 1.0),
) -> np.ndarray:
    """Stack labelled strips (:func:`make_strip`) into a grid, with an optional label left of each row.

    Args:
        rows (`Sequence[Sequence[torch.Tensor | np.ndarray]]`): the panels of each row (rows may differ in length).
        captions (`Sequence[Sequence[str]]`, *optional*): one caption per panel, row by row.
        row_labels (`Sequence[str]`, *optional*): one label per row, drawn in a left column, centred on the panels.
        title (`str`, *optional*): a line above the grid.
        height (`int`, *optional*): panel height for every row; defaults to the tallest panel.
        font_size (`int`, *optional*): caption and label font size; defaults as in :func:`make_strip`.
        spacing (`int`, defaults to 4): white pixels between panels and between rows.
        value_range (`tuple[float, float]`, defaults to `(-1.0, 1.0)`): range of float tensors.

    Returns:
        `np.ndarray`: uint8 RGB; shorter rows are padded on the right with white.
    """
    if not rows or any(len(row) == 0 for row in rows):
        raise InputError("`rows` must hold at least one non-empty row of panels.")
    if captions is not None and len(captions) != len(rows):
        raise InputError(f"`captions` has {len(captions)} rows for {len(rows)} rows of panels.")
    if row_labels is not None and len(row_labels) != len(rows):
        raise InputError(f"`row_labels` has {len(row_labels)} labels for {len(rows)} rows.")
    images = [[_as_rgb(panel, value_range) for panel in row] for row in rows]
    height = max(image.shape[0] for row in images for image in row) if height is None else int(height)
    font_size = _default_font_size(height) if font_size is None else int(font_size)
    strips = [
        make_strip(row, None if captions is None else captions[index], None, height, font_size, spacing)
        for index, row in enumerate(images)
    ]
    font = _font(font_size)
    label_width = 0 if row_labels is None else max(math.ceil(font.getlength(label)) for label in row_labels)
    label_width += font_size if row_labels is not None else 0
    width = label_width + max(strip.shape[1] for strip in strips)
    blocks = []
    for index, strip in enumerate(strips):
        block = Image.new("RGB", (width, strip.shape[0]), _BACKGROUND)
        block.paste(Image.fromarray(strip), (label_width, 0))
        if row_labels is not None:
            y = max(0, (height - _line_height(font)) // 2)  # centred on the panels, above the caption bar
            ImageDraw.Draw(block).text((font_size // 2, y), row_labels[index], font=font, fill=_INK)
        blocks.append(np.asarray(block))
        if index < len(strips) - 1:
            blocks.append(np.full((spacing, width, 3), _BACKGROUND, np.uint8))
    grid = np.concatenate(blocks)
    if title:
        bar, _, _ = _strip_canvas([width], 0, None, title, font_size, 0)
        grid = np.concatenate([bar, grid])
    return grid


def label_frames(
    videos: Panel | Sequence[Panel],
    captions: str | Sequence[str] | None,
    title: str | None = None,
    height: int | None = None,
    font_size: int | None = None,
    spacing: int = 4,
    value_range: tuple[float, float] = (-1.0, 1.0),
) -> np.ndarray:
    """Caption a video, or put several side by side with a caption under each, frame by frame (for GIF/MP4).

    The captions are drawn once; each output frame is that canvas with the videos' frames pasted in.

    Args:
        videos (`torch.Tensor | np.ndarray` or a sequence of them): one video, uint8 (F, H, W, C) or float
            (F, C, H, W) in ``value_range``, or a list of videos and still images ((H, W, C) / (C, H, W) or one
            frame), which are repeated over the longest video. Videos longer than one frame must agree in length.
        captions (`str` or `Sequence[str]`, *optional*): one caption per video.
        title (`str`, *optional*): a line above the videos.
        height (`int`, *optional*): panel height; defaults to the tallest video.
        font_size (`int`, *optional*): caption font size; defaults as in :func:`make_strip`.
        spacing (`int`, defaults to 4): white columns between videos.
        value_range (`tuple[float, float]`, defaults to `(-1.0, 1.0)`): range of float tensors.

    Returns:
        `np.ndarray`: uint8 frames of shape (F, H', W', 3), ready for :func:`write_video`.
    """
    if isinstance(videos, (np.ndarray, torch.Tensor)):
        videos = [videos]
    if isinstance(captions, str):
        captions = [captions]
    clips = [_as_rgb_frames(video, value_range) for video in videos]
    if not clips:
        raise InputError("`videos` is empty; pass at least one video.")
    lengths = {clip.shape[0] for clip in clips} - {1}
    if len(lengths) > 1:
        raise InputError(f"`videos` differ in length: {sorted(lengths)} frames (stills of one frame are repeated).")
    count = lengths.pop() if lengths else 1
    height = max(clip.shape[1] for clip in clips) if height is None else int(height)
    clips = [np.stack([_resize_to_height(frame, height) for frame in clip]) for clip in clips]
    canvas, top, lefts = _strip_canvas([clip.shape[2] for clip in clips], height, captions, title, font_size, spacing)
    out = np.repeat(canvas[None], count, axis=0)
    for clip, left in zip(clips, lefts):
        out[:, top : top + height, left : left + clip.shape[2]] = clip
    return out


def heat_overlay(
    image: Panel,
    heat: torch.Tensor | np.ndarray,
    alpha: float = 0.5,
    colormap: str = "jet",
    heat_range: tuple[float, float] | None = None,
    value_range: tuple[float, float] = (-1.0, 1.0),
) -> np.ndarray:
    """Blend a colour-mapped heat map (an attention or saliency map, an error map) over an image.

    Args:
        image (`torch.Tensor` or `np.ndarray`): uint8 (H, W) / (H, W, C) or float (C, H, W) in ``value_range``.
        heat (`torch.Tensor` or `np.ndarray`): float of shape (H', W') (or with singleton leading dimensions), any
            size: resized bilinearly to (H, W).
        alpha (`float`, defaults to 0.5): weight of the colours; 0 returns the image, 1 the colour map alone.
        colormap (`str`, defaults to `"jet"`): any matplotlib colour map name (``"turbo"``, ``"inferno"``);
            matplotlib is imported on first use.
        heat_range (`tuple[float, float]`, *optional*): heat values mapped to the map's ends (clipped); defaults to
            the map's own minimum and maximum.
        value_range (`tuple[float, float]`, defaults to `(-1.0, 1.0)`): range of a float image tensor.

    Returns:
        `np.ndarray`: uint8 RGB of shape (H, W, 3): ``round((1 - alpha) · image + alpha · colormap(heat))``.
    """
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"`alpha` must be in [0, 1], got {alpha}.")
    base = _as_rgb(image, value_range)
    values = heat.detach().float().cpu().numpy() if isinstance(heat, torch.Tensor) else np.asarray(heat, np.float32)
    while values.ndim > 2 and values.shape[0] == 1:
        values = values[0]
    if values.ndim != 2 or values.size == 0:
        raise InputError(f"`heat` must be a 2-D (H', W') map, got shape {tuple(np.shape(heat))}.")
    values = np.nan_to_num(values)
    low, high = (float(values.min()), float(values.max())) if heat_range is None else heat_range
    scaled = np.clip((values - low) / (high - low), 0.0, 1.0) if high > low else np.zeros_like(values)
    scaled = np.asarray(Image.fromarray(scaled).resize(base.shape[1::-1], Image.Resampling.BILINEAR))
    colours = _colour_table(colormap)[np.round(np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.int64)]
    blend = (1.0 - alpha) * base.astype(np.float32) + alpha * colours.astype(np.float32)
    return np.round(blend).astype(np.uint8)


def _colour_table(name: str) -> np.ndarray:
    """A (256, 3) uint8 lookup table of a matplotlib colour map."""
    import matplotlib

    try:
        colormap = matplotlib.colormaps[name]
    except KeyError as error:
        raise InputError(f"Unknown `colormap` {name!r}; use a matplotlib name such as 'jet' or 'turbo'.") from error
    return np.round(colormap(np.linspace(0.0, 1.0, 256))[:, :3] * 255.0).astype(np.uint8)


def _as_rgb(panel: Panel, value_range: tuple[float, float]) -> np.ndarray:
    """One image as uint8 (H, W, 3): grey repeated, alpha dropped, a leading batch of one removed."""
    array = to_uint8(panel, value_range)
    if array.ndim == 4:
        if array.shape[0] != 1:
            raise InputError(f"A panel holds {array.shape[0]} images; pass them as separate panels.")
        array = array[0]
    if array.ndim == 2:
        array = array[..., None]
    if array.shape[-1] not in (1, 3, 4):
        raise InputError(f"A panel must have 1, 3 or 4 channels, got shape {array.shape}.")
    return np.ascontiguousarray(np.repeat(array, 3, axis=-1) if array.shape[-1] == 1 else array[..., :3])


def _as_rgb_frames(video: Panel, value_range: tuple[float, float]) -> np.ndarray:
    """A video (or still) as uint8 (F, H, W, 3)."""
    array = to_uint8(video, value_range)
    if array.ndim != 4:
        return _as_rgb(array, value_range)[None]
    return np.stack([_as_rgb(frame, value_range) for frame in array])


def _resize_to_height(image: np.ndarray, height: int) -> np.ndarray:
    if height < 1:
        raise InputError(f"`height` must be positive, got {height}.")
    if image.shape[0] == height:
        return image
    width = max(1, round(image.shape[1] * height / image.shape[0]))
    resample = Image.Resampling.NEAREST if height > image.shape[0] else Image.Resampling.LANCZOS
    return np.asarray(Image.fromarray(image).resize((width, height), resample))


def _default_font_size(height: int) -> int:
    return int(np.clip(round(height / 12), 12, 32))


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled default font (Aileron, FreeType) at ``size`` pixels."""
    return ImageFont.load_default(size=size)


def _line_height(font: ImageFont.FreeTypeFont | ImageFont.ImageFont) -> int:
    if isinstance(font, ImageFont.FreeTypeFont):
        ascent, descent = font.getmetrics()
        return ascent + descent
    return font.getbbox("Ahgjy")[3] + 2  # Pillow built without FreeType: the fixed bitmap font


def _wrap(text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, width: int) -> list[str]:
    """Greedy word wrap to ``width`` pixels; a word wider than a line is split between characters."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split():
            candidate = f"{line} {word}" if line else word
            if font.getlength(candidate) <= width:
                line = candidate
                continue
            if line:
                lines.append(line)
            while font.getlength(word) > width and len(word) > 1:
                cut = 1
                while cut < len(word) - 1 and font.getlength(word[: cut + 1]) <= width:
                    cut += 1
                lines.append(word[:cut])
                word = word[cut:]
            line = word
        lines.append(line)
    return lines


def _strip_canvas(
    widths: Sequence[int],
    height: int,
    captions: Sequence[str] | None,
    title: str | None,
    font_size: int | None,
    spacing: int,
) -> tuple[np.ndarray, int, list[int]]:
    """A white canvas with the title and captions drawn, and where the panels go.

    Returns:
        `tuple`: the uint8 (H', W', 3) canvas, the panels' top row and each panel's left column.
    """
    if captions is not None and len(captions) != len(widths):
        raise InputError(f"{len(captions)} captions for {len(widths)} panels; pass one caption per panel.")
    if spacing < 0:
        raise InputError(f"`spacing` must be >= 0, got {spacing}.")
    font_size = _default_font_size(height) if font_size is None else int(font_size)
    pad = max(2, font_size // 3)
    lefts = [sum(widths[:index]) + spacing * index for index in range(len(widths))]
    total = sum(widths) + spacing * (len(widths) - 1)
    caption_font = _font(font_size)
    line = _line_height(caption_font)
    wrapped = [_wrap(text, caption_font, max(1, width - 2 * pad)) for text, width in zip(captions or [], widths)]
    caption_height = max(len(lines) for lines in wrapped) * line + 2 * pad if wrapped else 0
    title_font = _font(round(font_size * 1.25))
    title_lines = _wrap(title, title_font, max(1, total - 2 * pad)) if title else []
    title_line = _line_height(title_font)
    title_height = len(title_lines) * title_line + 2 * pad if title_lines else 0
    image = Image.new("RGB", (total, title_height + height + caption_height), _BACKGROUND)
    draw = ImageDraw.Draw(image)
    for index, text in enumerate(title_lines):
        x = (total - title_font.getlength(text)) / 2
        draw.text((x, pad + index * title_line), text, font=title_font, fill=_INK)
    for lines, left, width in zip(wrapped, lefts, widths):
        for index, text in enumerate(lines):
            x = left + (width - caption_font.getlength(text)) / 2
            draw.text((x, title_height + height + pad + index * line), text, font=caption_font, fill=_INK)
    return np.asarray(image).copy(), title_height, lefts


def _existing(path: str | Path, kind: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {kind} file not found.")
    return path


def _open_gif(path: Path) -> Image.Image:
    try:
        return Image.open(path)
    except (UnidentifiedImageError, OSError) as error:
        raise InputError(f"{path}: not a readable GIF ({error}).") from error


def _audio_track(audio: tuple[np.ndarray | torch.Tensor, int] | str | Path, duration: float) -> tuple[np.ndarray, int]:
    """The audio to mux: float32 (N, C) samples trimmed or padded to ``duration`` seconds, and their rate."""
    if isinstance(audio, (str, Path)):
        samples, sample_rate = read_audio(audio)
    elif isinstance(audio, (tuple, list)) and len(audio) == 2:
        given, sample_rate = audio
        if isinstance(given, torch.Tensor):
            given = given.detach().float().cpu().numpy()
        samples = np.asarray(given, dtype=np.float32)
    else:
        raise InputError("`audio` must be (samples, sample_rate) or the path of an audio or video file.")
    if isinstance(sample_rate, bool) or int(sample_rate) != sample_rate or sample_rate <= 0:
        raise InputError(f"`audio` sample rate must be a positive integer, got {sample_rate!r}.")
    if samples.ndim not in (1, 2) or samples.shape[0] == 0 or not np.isfinite(samples).all():
        raise InputError(f"`audio` samples must be finite, non-empty (N,) or (N, C), got shape {samples.shape}.")
    samples = samples.reshape(samples.shape[0], -1)
    length = round(duration * int(sample_rate))
    if abs(samples.shape[0] - length) > 1:
        logger.debug("audio of %d samples fitted to the video's %d (%.3f s)", samples.shape[0], length, duration)
    return _fit_length(samples, length), int(sample_rate)


def _import_imageio_ffmpeg() -> ModuleType:
    try:
        import imageio_ffmpeg
    except ImportError as error:
        raise ImportError(_VIDEO_HINT) from error
    return imageio_ffmpeg


def write_demo_card(
    out_dir: str | Path,
    title: str,
    panels: Sequence[Panel],
    captions: Sequence[str],
    notes: Sequence[str] = (),
    height: int = 256,
    value_range: tuple[float, float] = (-1.0, 1.0),
) -> tuple[Path, Path]:
    """The two files every ``<pkg> demo`` writes for a person: ``strip.png`` (the panels side by side at ``height``
    pixels, a caption under each, ``title`` on top) and ``README.txt`` (that the weights are random, what each panel
    shows, and ``notes``).

    Args:
        out_dir: The demo's output folder (created).
        title: One line: what the demo runs.
        panels: Images as :func:`make_strip` takes them (e.g. input | condition | output).
        captions: One caption per panel; also listed in ``README.txt``.
        notes: More lines for ``README.txt`` (other files in the folder, figures).
        height: Panel height in pixels (small tiny-model outputs are enlarged, nearest-neighbour).
        value_range: Range of float panels.

    Returns:
        ``(strip path, README path)``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if len(panels) != len(captions):
        raise ValueError(f"write_demo_card: {len(panels)} panels but {len(captions)} captions")
    strip = write_image(
        out / "strip.png", make_strip(panels, captions, title=title, height=height, value_range=value_range)
    )
    lines = [
        title,
        "",
        "The weights are random (the tiny configuration, no download): the outputs show that every step of the",
        "method runs end to end, not what a trained model produces.",
        "",
        "strip.png, left to right:",
        *(f"  {index + 1}. {caption}" for index, caption in enumerate(captions)),
    ]
    if notes:
        lines += ["", *notes]
    readme = out / "README.txt"
    readme.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return strip, readme
