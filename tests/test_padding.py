"""Padding to a multiple, cropping back, resizing, and tiling with blended overlaps."""

from __future__ import annotations

import pytest
import torch

from blindinpaint.padding import (crop_back, pad_to_multiple, resize_long_side, resize_to, run_tiled, tile_spans,
                                  valid_region_mask)


def _image(h, w, b=1, c=3, seed=0):
    return torch.rand(b, c, h, w, generator=torch.Generator().manual_seed(seed))


def test_pad_and_crop_roundtrip_with_reflection():
    x = _image(13, 7, b=2)
    padded, size = pad_to_multiple(x, 8)
    assert padded.shape == (2, 3, 16, 8) and size == (13, 7)
    assert torch.equal(crop_back(padded, size), x)
    # Reflection about the last row / column (the edge itself is not repeated).
    assert torch.equal(padded[..., 13, :7], x[..., 11, :])
    assert torch.equal(padded[..., 15, :7], x[..., 9, :])
    assert torch.equal(padded[..., :13, 7], x[..., :, 5])


def test_pad_already_a_multiple_is_unchanged():
    x = _image(16, 24)
    padded, size = pad_to_multiple(x, 8)
    assert torch.equal(padded, x) and size == (16, 24)


@pytest.mark.parametrize("h, w", [(1, 1), (1, 5), (5, 1), (2, 3)])
def test_tiny_images_fall_back_to_replicate(h, w):
    x = _image(h, w)
    padded, size = pad_to_multiple(x, 4)
    assert padded.shape[-2] % 4 == 0 and padded.shape[-1] % 4 == 0
    assert torch.equal(crop_back(padded, size), x)
    assert torch.isfinite(padded).all()
    if h == 1:  # a single row has nothing to mirror: every padded row repeats it
        assert torch.equal(padded[..., 3, :w], x[..., 0, :])
    if w == 5:  # 3 columns of padding < 5: still a reflection
        assert torch.equal(padded[..., :h, 5], x[..., :, 3])
    if (h, w) == (1, 1):
        assert torch.equal(padded, x.expand(1, 3, 4, 4))


def test_constant_padding_and_valid_region():
    x = _image(5, 6, b=2)
    padded, size = pad_to_multiple(x, 4, mode="constant")
    assert padded.shape == (2, 3, 8, 8) and padded[..., 5:, :].abs().sum() == 0
    valid = valid_region_mask(size, padded.shape[-2:], batch=2)
    assert valid.shape == (2, 1, 8, 8) and valid.dtype == torch.float32
    assert valid.sum() == 2 * 5 * 6 and valid[..., :5, :6].min() == 1 and valid[..., 5:, :].max() == 0
    assert valid[..., :, 6:].max() == 0


def test_bad_arguments():
    with pytest.raises(ValueError):
        pad_to_multiple(_image(4, 4), 0)
    with pytest.raises(ValueError):
        pad_to_multiple(torch.zeros(3, 4, 4), 8)
    with pytest.raises(ValueError):
        pad_to_multiple(_image(4, 4), 8, mode="circular")
    with pytest.raises(ValueError):
        tile_spans(100, 16, 16)


@pytest.mark.parametrize("length", [1, 15, 16, 17, 31, 64, 100, 257])
@pytest.mark.parametrize("tile, overlap", [(16, 0), (16, 4), (16, 15), (32, 8)])
def test_tile_spans_cover_the_whole_length(length, tile, overlap):
    spans = tile_spans(length, tile, overlap)
    assert spans[0][0] == 0 and spans[-1][1] == length
    covered = torch.zeros(length, dtype=torch.int64)
    for start, end in spans:
        assert end - start == min(tile, length)
        covered[start:end] += 1
    assert covered.min() >= 1
    for (s0, e0), (s1, e1) in zip(spans, spans[1:]):
        assert s0 < s1 and e0 - s1 >= overlap


def test_tiled_identity_is_exact():
    x = _image(37, 53, b=2)
    calls = []

    def identity(tile):
        calls.append(tuple(tile.shape[-2:]))
        return tile.clone()

    out = run_tiled(x, identity, tile=16, overlap=6)
    assert len(calls) > 4 and set(calls) == {(16, 16)}
    torch.testing.assert_close(out, x, rtol=0, atol=1e-6)


def test_tiled_per_pixel_function_matches_single_pass():
    x = _image(45, 30)

    def to_mask(t):  # 3 channels in, 1 channel out, purely per pixel
        return torch.sigmoid(3 * t.sum(dim=1, keepdim=True) - 4)

    out = run_tiled(x, to_mask, tile=16, overlap=4)
    assert out.shape == (1, 1, 45, 30)
    torch.testing.assert_close(out, to_mask(x), rtol=0, atol=1e-6)


def test_blending_removes_seams():
    x = torch.zeros(1, 1, 1, 100)
    counter = iter(range(100))

    def tile_index(t):  # a hard seam would jump by 1 between neighbouring pixels
        return torch.full_like(t, float(next(counter)))

    out = run_tiled(x, tile_index, tile=20, overlap=8)[0, 0, 0]
    steps = out[1:] - out[:-1]
    assert out[0] == 0 and out[-1] == len(tile_spans(100, 20, 8)) - 1
    assert steps.min() >= -1e-6 and steps.max() < 0.3


def test_small_image_is_one_call_and_bad_fn_rejected():
    x = _image(10, 12)
    calls = []
    run_tiled(x, lambda t: calls.append(t.shape) or t, tile=16, overlap=4)
    assert calls == [x.shape]
    with pytest.raises(ValueError, match="spatial size"):
        run_tiled(_image(40, 40), lambda t: t[..., :-1, :], tile=16, overlap=4)


def test_resize_long_side():
    x = _image(100, 50)
    small, size = resize_long_side(x, 40)
    assert small.shape == (1, 3, 40, 20) and size == (100, 50)
    assert resize_to(small, size).shape == x.shape
    unchanged, _ = resize_long_side(_image(30, 20), 40)
    assert unchanged.shape == (1, 3, 30, 20)
    bigger, _ = resize_long_side(_image(30, 20), 60, allow_upscale=True)
    assert bigger.shape == (1, 3, 60, 40)
    flat = torch.full((1, 3, 64, 64), 0.25)
    torch.testing.assert_close(resize_long_side(flat, 16)[0], torch.full((1, 3, 16, 16), 0.25))
    hole = (torch.rand(1, 1, 64, 48) > 0.5).float()
    assert set(resize_to(hole, (16, 12), mode="nearest").unique().tolist()) <= {0.0, 1.0}
