"""Tests for genblocks.media: PNG / GIF / MP4 round trips, tensor conversions and the grid helper."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from genblocks.media import make_grid, read_image, read_video, to_tensor, to_uint8, write_image, write_video


def _frames(count: int = 4, size: int = 16) -> np.ndarray:
    rng = np.random.default_rng(0)
    palette = rng.integers(0, 256, size=(6, 3), dtype=np.uint8)  # few colours: GIF keeps them exactly
    indices = rng.integers(0, len(palette), size=(count, size, size))
    return palette[indices]


def test_tensor_uint8_round_trip() -> None:
    frames = _frames()
    tensor = to_tensor(frames)
    assert tensor.shape == (4, 3, 16, 16) and tensor.min() >= -1 and tensor.max() <= 1
    np.testing.assert_array_equal(to_uint8(tensor), frames)
    np.testing.assert_array_equal(to_uint8(to_tensor(frames, (0.0, 1.0)), (0.0, 1.0)), frames)
    assert to_uint8(torch.full((3, 2, 2), 5.0))[0, 0].tolist() == [255, 255, 255]  # clamped


def test_png_round_trip(tmp_path) -> None:
    image = _frames(1, 20)[0]
    path = write_image(tmp_path / "sub" / "image.png", image)
    np.testing.assert_array_equal(read_image(path), image)
    write_image(tmp_path / "tensor.png", to_tensor(image)[None])
    np.testing.assert_array_equal(read_image(tmp_path / "tensor.png"), image)
    with pytest.raises(FileNotFoundError):
        read_image(tmp_path / "missing.png")


def test_gif_round_trip(tmp_path) -> None:
    frames = _frames()
    path = write_video(tmp_path / "clip.gif", to_tensor(frames), fps=10)
    read, fps = read_video(path)
    assert read.shape == frames.shape and fps == pytest.approx(10.0)
    np.testing.assert_array_equal(read, frames)


@pytest.mark.skipif(importlib.util.find_spec("imageio_ffmpeg") is None, reason="needs imageio-ffmpeg")
def test_mp4_written_and_read(tmp_path) -> None:
    frames = np.repeat(np.linspace(0, 255, 6, dtype=np.uint8)[:, None, None, None], 3, axis=-1)
    frames = np.broadcast_to(frames, (6, 32, 48, 3)).copy()  # flat grey levels: H.264 keeps them within a few levels
    path = write_video(tmp_path / "clip.mp4", frames, fps=12)
    read, fps = read_video(path)
    assert read.shape == frames.shape and fps == pytest.approx(12.0)
    assert np.abs(read.astype(int) - frames.astype(int)).mean() < 4


def test_grid() -> None:
    images = _frames(5, 8)
    grid = make_grid(images, nrow=3, padding=1, pad_value=7)
    assert grid.shape == (2 * 9 + 1, 3 * 9 + 1, 3)
    np.testing.assert_array_equal(grid[1:9, 1:9], images[0])
    np.testing.assert_array_equal(grid[10:18, 10:18], images[4])
    assert (grid[10:18, 19:27] == 7).all()  # the empty sixth cell
    np.testing.assert_array_equal(make_grid(to_tensor(images), nrow=3, padding=1, pad_value=7), grid)


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="frames"):
        to_uint8(np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match=r"\.gif or \.mp4"):
        write_video("clip.avi", _frames())
    with pytest.raises(ValueError, match="frames"):
        write_image("x.png", _frames())
