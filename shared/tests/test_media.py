"""Tests for genblocks.media: PNG / GIF / MP4 round trips, tensor conversions, the grid, labelled strips, grids and
video frames (layout arithmetic, exact panel placement, drawn text) and heat-map overlays."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from genblocks.errors import InputError
from genblocks.media import (
    heat_overlay,
    label_frames,
    make_grid,
    make_labelled_grid,
    make_strip,
    read_image,
    read_video,
    read_video_meta,
    to_tensor,
    to_uint8,
    write_image,
    write_video,
)


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
    meta = read_video_meta(path)
    assert (meta.num_frames, meta.width, meta.height, meta.has_audio) == (4, 16, 16, False)
    assert meta.fps == pytest.approx(10.0) and meta.duration == pytest.approx(0.4)
    truncated = tmp_path / "truncated.gif"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    for bad in (truncated, tmp_path / "missing.gif"):
        with pytest.raises(InputError, match=str(bad.name)):
            read_video(bad)


@pytest.mark.skipif(importlib.util.find_spec("imageio_ffmpeg") is None, reason="needs imageio-ffmpeg")
def test_mp4_written_and_read(tmp_path) -> None:
    frames = np.repeat(np.linspace(0, 255, 6, dtype=np.uint8)[:, None, None, None], 3, axis=-1)
    frames = np.broadcast_to(frames, (6, 32, 48, 3)).copy()  # flat grey levels: H.264 keeps them within a few levels
    path = write_video(tmp_path / "clip.mp4", frames, fps=12)
    read, fps = read_video(path)
    assert read.shape == frames.shape and fps == pytest.approx(12.0)
    assert np.abs(read.astype(int) - frames.astype(int)).mean() < 4
    meta = read_video_meta(path)
    assert (meta.fps, meta.num_frames, meta.width, meta.height, meta.has_audio) == (12.0, 6, 48, 32, False)
    assert meta.duration == pytest.approx(0.5)


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


def _is_ink(region: np.ndarray) -> bool:
    """Whether a region of a white figure holds drawn (dark) pixels."""
    return bool((region.min(axis=-1) < 128).any())


def test_strip_layout_and_exact_panels() -> None:
    rng = np.random.default_rng(1)
    square = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    small = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)  # enlarged 2x: nearest neighbour, exact
    grey = rng.integers(0, 256, (64, 40), dtype=np.uint8)
    panels = [square, small, to_tensor(grey[..., None].repeat(3, axis=-1))]
    strip = make_strip(panels, ["source", "driving", "output"], height=64, spacing=4)
    widths, lefts = [64, 96, 40], [0, 68, 168]
    assert strip.dtype == np.uint8 and strip.shape[1] == sum(widths) + 2 * 4 == 208
    bar = strip.shape[0] - 64
    assert bar > 0
    np.testing.assert_array_equal(strip[:64, 0:64], square)
    np.testing.assert_array_equal(strip[:64, 68:164], small.repeat(2, axis=0).repeat(2, axis=1))
    np.testing.assert_array_equal(strip[:64, 168:208], grey[..., None].repeat(3, axis=-1))
    assert (strip[:64, 64:68] == 255).all() and (strip[:64, 164:168] == 255).all()  # white spacing
    for left, width in zip(lefts, widths):
        assert _is_ink(strip[64:, left : left + width])  # each caption was drawn under its panel

    assert make_strip(panels, None, height=64).shape == (64, 208, 3)  # no captions, no bar
    np.testing.assert_array_equal(make_strip([square], None), square)  # default height: the tallest panel
    one, two, three = (make_strip([square], ["\n".join("x" * n)], height=64).shape[0] - 64 for n in (1, 2, 3))
    assert 0 < one < two < three and two - one == three - two  # bar = lines · line height + padding

    titled = make_strip(panels, ["source", "driving", "output"], title="X-Portrait", height=64)
    top = titled.shape[0] - strip.shape[0]
    assert top > 0 and _is_ink(titled[:top])
    np.testing.assert_array_equal(titled[top:], strip)

    wrapped = make_strip([square], ["a caption far too long for a sixty-four pixel panel"], height=64)
    assert wrapped.shape[0] - 64 > one  # wrapped onto several lines, not cut
    with pytest.raises(InputError, match="one caption per panel"):
        make_strip(panels, ["only one"])
    with pytest.raises(InputError, match="empty"):
        make_strip([], [])


def test_labelled_grid() -> None:
    rng = np.random.default_rng(2)
    a, b, c = (rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(3))
    plain = make_labelled_grid([[a, b, c], [c]], spacing=2)
    assert plain.shape == (32 + 2 + 32, 3 * 32 + 2 * 2, 3)
    np.testing.assert_array_equal(plain[:32, 34:66], b)
    np.testing.assert_array_equal(plain[34:, :32], c)
    assert (plain[34:, 32:] == 255).all()  # the short row is padded with white

    grid = make_labelled_grid([[a, b], [c, a]], [["1", "2"], ["3", "4"]], row_labels=["ours", "baseline"], title="t")
    row = make_strip([a, b], ["1", "2"])
    assert grid.shape[1] > row.shape[1] and grid.shape[0] > 2 * row.shape[0]
    label = grid.shape[1] - row.shape[1]
    bottom = grid[-row.shape[0] :]
    np.testing.assert_array_equal(bottom[:32, label : label + 32], c)
    assert _is_ink(bottom[:32, :label])  # the row label
    with pytest.raises(InputError, match="row_labels"):
        make_labelled_grid([[a]], row_labels=["x", "y"])


def test_label_frames_side_by_side() -> None:
    rng = np.random.default_rng(3)
    video = rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    still = rng.integers(0, 256, (32, 24, 3), dtype=np.uint8)
    frames = label_frames([still, to_tensor(video)], ["reference", "generated"], title="demo")
    strip = make_strip([still, video[0]], ["reference", "generated"], title="demo")
    assert frames.shape == (5, *strip.shape)
    np.testing.assert_array_equal(frames[0], strip)
    top = strip.shape[0] - make_strip([still, video[0]], ["reference", "generated"]).shape[0]  # the title bar
    for index in range(5):
        np.testing.assert_array_equal(frames[index, top : top + 32, :24], still)
        np.testing.assert_array_equal(frames[index, top : top + 32, 28:60], video[index])
    single = label_frames(video, "generated")
    assert single.shape[0] == 5 and single.shape[2] == 32
    with pytest.raises(InputError, match="differ in length"):
        label_frames([video, video[:3]], ["a", "b"])


def test_heat_overlay() -> None:
    import matplotlib

    image = np.full((32, 48, 3), 128, np.uint8)
    heat = np.zeros((32, 48), np.float32)
    heat[10, 30] = 3.0
    overlay = heat_overlay(image, heat, alpha=0.5, colormap="jet")
    hottest = np.round(np.array(matplotlib.colormaps["jet"](1.0)[:3]) * 255)
    coldest = np.round(np.array(matplotlib.colormaps["jet"](0.0)[:3]) * 255)
    np.testing.assert_array_equal(overlay[10, 30], np.round(0.5 * 128 + 0.5 * hottest))
    np.testing.assert_array_equal(overlay[0, 0], np.round(0.5 * 128 + 0.5 * coldest))
    warmth = overlay[..., 0].astype(int) - overlay[..., 2].astype(int)  # jet: red is hot, blue is cold
    assert np.unravel_index(warmth.argmax(), warmth.shape) == (10, 30)

    coarse = np.zeros((8, 12), np.float32)
    coarse[2, 7] = 1.0  # one heat cell covers 4 x 4 image pixels: rows 8-11, columns 28-31
    warmth = heat_overlay(image, torch.from_numpy(coarse)[None]).astype(int)
    row, col = np.unravel_index((warmth[..., 0] - warmth[..., 2]).argmax(), warmth.shape[:2])
    assert 8 <= row <= 11 and 28 <= col <= 31

    np.testing.assert_array_equal(heat_overlay(image, heat, alpha=0.0), image)
    np.testing.assert_array_equal(heat_overlay(to_tensor(image), heat, alpha=0.0), image)
    assert (heat_overlay(image, heat, alpha=1.0)[0, 0] == coldest).all()
    with pytest.raises(InputError, match="alpha"):
        heat_overlay(image, heat, alpha=1.5)
    with pytest.raises(InputError, match="colormap"):
        heat_overlay(image, heat, colormap="no-such-map")
    with pytest.raises(InputError, match="2-D"):
        heat_overlay(image, np.zeros((2, 3, 4)))


def test_read_image_scales_16_bit_grayscale_instead_of_clipping(tmp_path: Path) -> None:
    from genblocks.media import read_image

    ramp = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    path = tmp_path / "portrait16.png"
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode.startswith("I")
    rgb = read_image(path)
    assert rgb.shape == (64, 64, 3) and (rgb[..., 0] == rgb[..., 1]).all()
    assert rgb.min() == 0 and rgb.max() == 255
    assert (rgb[..., 0] == 255).mean() < 0.01  # was 99.6 % saturated when clipped
    np.testing.assert_allclose(rgb[..., 0].astype(float), ramp / 65535 * 255, atol=0.6)


def test_read_image_composites_transparency_on_white_and_applies_exif(tmp_path: Path) -> None:
    from genblocks.media import read_image

    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:4, :, 3] = 255  # top half opaque red, bottom half transparent
    Image.fromarray(rgba).save(tmp_path / "alpha.png")
    rgb = read_image(tmp_path / "alpha.png")
    assert (rgb[:4] == [200, 0, 0]).all() and (rgb[4:] == 255).all()

    wide = np.zeros((10, 20, 3), np.uint8)
    wide[:, :10] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to view
    Image.fromarray(wide).save(tmp_path / "rotated.jpg", exif=exif, quality=100)
    shown = read_image(tmp_path / "rotated.jpg")
    assert shown.shape == (20, 10, 3) and shown[:8].mean() > 200 and shown[12:].mean() < 50


def test_read_image_refuses_huge_and_broken_files(tmp_path: Path) -> None:
    from genblocks.errors import InputError
    from genblocks.media import read_image

    Image.new("RGB", (300, 300)).save(tmp_path / "big.png")
    with pytest.raises(InputError, match=r"big\.png: 300x300 .* limit"):
        read_image(tmp_path / "big.png", max_pixels=50_000)
    assert read_image(tmp_path / "big.png").shape == (300, 300, 3)
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(
        InputError, match=r"notes\.png: not a readable image: could not be decoded .* expected PNG, JPEG"
    ):
        read_image(tmp_path / "notes.png")
    full = (tmp_path / "big.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(full[: len(full) // 3])
    with pytest.raises(InputError, match=r"cut\.png"):
        read_image(tmp_path / "cut.png")
    with pytest.raises(FileNotFoundError, match="file not found"):
        read_image(tmp_path / "missing.png")
