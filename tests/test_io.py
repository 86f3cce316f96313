"""Image I/O: every mode, EXIF orientation, bad files, the pixel limit, masks, PNG writing."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from blindinpaint.errors import UserError
from blindinpaint.io import (MAX_PIXELS_ENV, from_pil, from_tensor, mask_to_tensor, read_image, read_mask,
                             restore_alpha, to_tensor, write_png)


def _gradient(h=6, w=5):
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 40, y * 30, (x + y) * 10], axis=2).astype(np.uint8)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_header_only(path, width, height):
    """A PNG whose header claims width x height with a few bytes of (bogus) pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 16)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat)
                     + _png_chunk(b"IEND", b""))
    return path


def _user_error(path, **kwargs) -> str:
    with pytest.raises(UserError) as info:
        read_image(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message and str(path) in message, message
    return message


# ------------------------------------------------------------------ modes
def test_rgb_png_roundtrip(tmp_path):
    rgb = _gradient()
    Image.fromarray(rgb).save(tmp_path / "a.png")
    loaded = read_image(tmp_path / "a.png")
    np.testing.assert_array_equal(loaded.rgb, rgb)
    assert loaded.alpha is None and loaded.mode == "RGB" and loaded.bit_depth == 8
    assert loaded.size == (5, 6) and loaded.rgb.dtype == np.uint8 and loaded.path == tmp_path / "a.png"


def test_grey_and_bilevel(tmp_path):
    grey = _gradient()[..., 0]
    Image.fromarray(grey).save(tmp_path / "l.png")
    loaded = read_image(tmp_path / "l.png")
    assert loaded.mode == "L" and loaded.rgb.shape == (6, 5, 3)
    for c in range(3):
        np.testing.assert_array_equal(loaded.rgb[..., c], grey)
    bits = (np.arange(20).reshape(4, 5) % 3 == 0)
    Image.fromarray(bits).convert("1").save(tmp_path / "b.png")
    loaded = read_image(tmp_path / "b.png")
    assert loaded.mode == "1" and loaded.bit_depth == 1
    np.testing.assert_array_equal(loaded.rgb[..., 1], bits.astype(np.uint8) * 255)


def test_rgba_flattened_and_alpha_kept(tmp_path):
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[..., :3] = (200, 40, 10)
    rgba[..., 3] = [[255, 128, 0], [255, 255, 64]]
    Image.fromarray(rgba).save(tmp_path / "a.png")
    loaded = read_image(tmp_path / "a.png")
    assert loaded.mode == "RGBA"
    np.testing.assert_array_equal(loaded.alpha, rgba[..., 3])
    np.testing.assert_array_equal(loaded.rgb[0, 0], (200, 40, 10))  # opaque: unchanged
    np.testing.assert_array_equal(loaded.rgb[0, 2], (255, 255, 255))  # transparent: the white background
    np.testing.assert_array_equal(loaded.rgb[0, 1], np.rint(np.array([200, 40, 10]) * 128 / 255 + 255 * 127 / 255))
    kept = read_image(tmp_path / "a.png", background=None)
    np.testing.assert_array_equal(kept.rgb, rgba[..., :3])
    # Putting the alpha back reproduces the file where the alpha leaves enough precision.
    back = loaded.with_alpha(loaded.rgb)
    assert back.shape == (2, 3, 4)
    np.testing.assert_array_equal(back[..., 3], rgba[..., 3])
    visible = rgba[..., 3] >= 64
    assert np.abs(back[..., :3].astype(int) - rgba[..., :3])[visible].max() <= 3


def test_la_mode(tmp_path):
    la = np.stack([np.full((3, 3), 90, np.uint8), np.full((3, 3), 255, np.uint8)], axis=2)
    la[1, 1, 1] = 0
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    loaded = read_image(tmp_path / "la.png")
    assert loaded.mode == "LA"
    assert loaded.alpha[1, 1] == 0 and loaded.alpha[0, 0] == 255
    np.testing.assert_array_equal(loaded.rgb[0, 0], (90, 90, 90))
    np.testing.assert_array_equal(loaded.rgb[1, 1], (255, 255, 255))


def test_palette_with_and_without_transparency(tmp_path):
    index = np.array([[0, 1], [2, 1]], np.uint8)
    palette = [255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 9)
    image = Image.fromarray(index, "P")
    image.putpalette(palette)
    image.save(tmp_path / "p.png")
    loaded = read_image(tmp_path / "p.png")
    assert loaded.mode == "P" and loaded.alpha is None
    np.testing.assert_array_equal(loaded.rgb[1, 0], (0, 0, 255))
    image.save(tmp_path / "pt.png", transparency=1)
    image.save(tmp_path / "pt.gif", transparency=1)
    for name in ("pt.png", "pt.gif"):
        loaded = read_image(tmp_path / name, background=None)
        np.testing.assert_array_equal(loaded.alpha, [[255, 0], [255, 0]])
        np.testing.assert_array_equal(loaded.rgb[0, 0], (255, 0, 0))


def test_cmyk(tmp_path):
    cmyk = np.array([[[0, 0, 0, 0], [255, 0, 0, 0], [0, 0, 0, 255]]], np.uint8)
    Image.fromarray(cmyk, "CMYK").save(tmp_path / "c.tif")
    loaded = read_image(tmp_path / "c.tif")
    assert loaded.mode == "CMYK"
    np.testing.assert_array_equal(loaded.rgb[0], [(255, 255, 255), (0, 255, 255), (0, 0, 0)])


def test_16_bit_grey_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 1000, 25700], [40000, 65000, 65535]], np.uint16)
    expected = np.rint(values / 257.0).astype(np.uint8)  # 0, 4, 100, 156, 253, 255
    Image.fromarray(values).save(tmp_path / "g16.png")
    loaded = read_image(tmp_path / "g16.png")
    assert loaded.mode.startswith("I;16") and loaded.bit_depth == 16
    np.testing.assert_array_equal(loaded.rgb[..., 0], expected)
    np.testing.assert_array_equal(loaded.rgb[..., 2], expected)
    # 16-bit PGM opens as mode "I" and must scale the same way.
    pgm = tmp_path / "g16.pgm"
    pgm.write_bytes(b"P5 3 2 65535\n" + values.astype(">u2").tobytes())
    loaded = read_image(pgm)
    assert loaded.mode == "I"
    np.testing.assert_array_equal(loaded.rgb[..., 1], expected)


def test_float_and_wide_integer(tmp_path):
    floats = np.array([[0.0, 0.5, 1.0]], np.float32)
    Image.fromarray(floats, "F").save(tmp_path / "f.tif")
    loaded = read_image(tmp_path / "f.tif")
    assert loaded.mode == "F" and loaded.bit_depth == 32
    np.testing.assert_array_equal(loaded.rgb[0, :, 0], [0, 128, 255])
    wide = np.array([[-100000, 0, 100000]], np.int32)
    Image.fromarray(wide, "I").save(tmp_path / "i.tif")
    np.testing.assert_array_equal(read_image(tmp_path / "i.tif").rgb[0, :, 0], [0, 128, 255])


def test_animated_gif_first_frame(tmp_path):
    frames = [Image.new("RGB", (4, 4), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=50, loop=0)
    assert Image.open(tmp_path / "anim.gif").n_frames == 2
    loaded = read_image(tmp_path / "anim.gif")
    assert (loaded.rgb == (255, 0, 0)).all()


def test_exif_orientation_applied(tmp_path):
    stored = np.zeros((32, 64, 3), np.uint8)
    stored[:, :32] = (255, 0, 0)  # left half red, right half blue
    stored[:, 32:] = (0, 0, 255)
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    image.save(tmp_path / "rot.jpg", exif=exif.tobytes(), quality=95)
    loaded = read_image(tmp_path / "rot.jpg")
    assert loaded.size == (32, 64) and loaded.rgb.shape == (64, 32, 3)
    # The stored left column becomes the displayed top row.
    assert loaded.rgb[:24, :, 0].mean() > 200 and loaded.rgb[:24, :, 2].mean() < 50
    assert loaded.rgb[40:, :, 2].mean() > 200 and loaded.rgb[40:, :, 0].mean() < 50


# ------------------------------------------------------------------ bad files
def test_truncated_files(tmp_path):
    rng = np.random.default_rng(0)
    noisy = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    for name in ("t.png", "t.jpg"):
        Image.fromarray(noisy).save(tmp_path / name)
        data = (tmp_path / name).read_bytes()
        (tmp_path / name).write_bytes(data[: len(data) // 2])
        assert "truncated or corrupt" in _user_error(tmp_path / name)


def test_non_image_directory_missing(tmp_path):
    (tmp_path / "notes.png").write_text("this is not a picture\n")
    assert "not an image" in _user_error(tmp_path / "notes.png")
    (tmp_path / "folder.png").mkdir()
    assert "folder" in _user_error(tmp_path / "folder.png")
    assert "not found" in _user_error(tmp_path / "missing.jpg")


def test_zero_size(tmp_path):
    _user_error(_png_header_only(tmp_path / "zero.png", 0, 5))
    with pytest.raises(UserError, match="zero size"):
        from_pil(Image.new("RGB", (0, 3)), name="mem")


def test_pixel_limit_checked_from_header(tmp_path, monkeypatch):
    Image.fromarray(_gradient(4, 4)).save(tmp_path / "small.png")
    message = _user_error(tmp_path / "small.png", max_pixels=10)
    assert "4x4 = 16 pixels" in message and "limit of 10 pixels" in message
    assert MAX_PIXELS_ENV in message and "max_pixels" in message
    monkeypatch.setenv(MAX_PIXELS_ENV, "15")
    assert "limit of 15 pixels" in _user_error(tmp_path / "small.png")
    monkeypatch.setenv(MAX_PIXELS_ENV, "16")
    assert read_image(tmp_path / "small.png").size == (4, 4)
    monkeypatch.delenv(MAX_PIXELS_ENV)
    # 9000 x 9000 claimed by the header, almost no data: refused before decoding (a
    # decoding attempt would report truncation instead).
    message = _user_error(_png_header_only(tmp_path / "bomb.png", 9000, 9000))
    assert "9000x9000" in message and "64,000,000" in message


def test_pillow_own_bomb_check_is_handled(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    Image.fromarray(_gradient(20, 20)).save(tmp_path / "big.png")  # 400 px > 2 * Pillow's 100
    assert "limit of 300 pixels" in _user_error(tmp_path / "big.png", max_pixels=300)
    Image.fromarray(_gradient(12, 12)).save(tmp_path / "mid.png")  # 144 px: Pillow would only warn
    assert "limit of 120 pixels" in _user_error(tmp_path / "mid.png", max_pixels=120)
    # Raising our limit lifts Pillow's as well.
    assert read_image(tmp_path / "big.png", max_pixels=1000).size == (20, 20)


# ------------------------------------------------------------------ masks
def test_read_mask_threshold_and_colours(tmp_path):
    grey = np.array([[0, 127, 128, 255]], np.uint8)
    Image.fromarray(grey).save(tmp_path / "m.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png"), [[False, False, True, True]])
    painted = np.zeros((1, 2, 3), np.uint8)
    painted[0, 1] = (255, 0, 0)  # a red stroke is a hole too
    Image.fromarray(painted).save(tmp_path / "red.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "red.png"), [[False, True]])


def test_read_mask_alpha_only(tmp_path):
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 3] = [[0, 255], [200, 10]]  # strokes on a transparent layer, colour uniform
    Image.fromarray(rgba).save(tmp_path / "alpha.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "alpha.png"), [[False, True], [True, False]])


def test_read_mask_size(tmp_path):
    hole = np.zeros((4, 6), np.uint8)
    hole[:2, :3] = 255
    Image.fromarray(hole).save(tmp_path / "m.png")
    with pytest.raises(UserError, match="mask is 6x4 pixels but the image is 12x8") as info:
        read_mask(tmp_path / "m.png", size=(12, 8))
    assert str(tmp_path / "m.png") in str(info.value)
    big = read_mask(tmp_path / "m.png", size=(12, 8), resize=True)
    assert big.shape == (8, 12) and big.dtype == bool
    assert big[:4, :6].all() and not big[4:].any() and not big[:, 6:].any()


# ------------------------------------------------------------------ writing
@pytest.mark.parametrize("array", [
    _gradient(),
    _gradient()[..., 0],
    np.dstack([_gradient(), np.full((6, 5), 77, np.uint8)]),
    (np.arange(30).reshape(6, 5) * 2000).astype(np.uint16),
])
def test_write_png_roundtrip(tmp_path, array):
    out = write_png(tmp_path / "deep" / "er" / "x.png", array)
    assert out.is_file()
    with Image.open(out) as image:
        np.testing.assert_array_equal(np.asarray(image), array)
    assert sorted(p.name for p in out.parent.iterdir()) == ["x.png"]  # no temporary file left


def test_write_png_bool_mask(tmp_path):
    write_png(tmp_path / "m.png", np.array([[True, False]]))
    with Image.open(tmp_path / "m.png") as image:
        assert image.mode == "L" and np.asarray(image).tolist() == [[255, 0]]


def test_write_png_unwritable(tmp_path):
    (tmp_path / "file.txt").write_text("x")
    target = tmp_path / "file.txt" / "sub" / "out.png"
    with pytest.raises(UserError) as info:
        write_png(target, _gradient())
    assert str(target) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(TypeError):
        write_png(tmp_path / "f.png", np.zeros((2, 2), np.float32))


# ------------------------------------------------------------------ tensors
def test_tensor_helpers():
    rgb = _gradient()
    tensor = to_tensor(rgb)
    assert tensor.shape == (1, 3, 6, 5) and tensor.dtype == torch.float32
    assert 0 <= tensor.min() and tensor.max() <= 1
    assert tensor[0, 0, 2, 3] == pytest.approx(rgb[2, 3, 0] / 255)
    np.testing.assert_array_equal(from_tensor(tensor), rgb)
    clamped = from_tensor(torch.tensor([-0.5, 0.1, 0.5, 1.7]).reshape(1, 1, 2, 2))
    assert clamped.tolist() == [[0, 26], [128, 255]]  # clamped to [0, 1], rounded to 8-bit levels
    hole = np.array([[True, False]])
    assert mask_to_tensor(hole).tolist() == [[[[1.0, 0.0]]]]
    np.testing.assert_array_equal(from_tensor(mask_to_tensor(hole)), [[255, 0]])


def test_restore_alpha_without_alpha_is_identity():
    rgb = _gradient()
    assert restore_alpha(rgb, None) is rgb
    back = restore_alpha(rgb, np.full((6, 5), 255, np.uint8))
    np.testing.assert_array_equal(back[..., :3], rgb)
