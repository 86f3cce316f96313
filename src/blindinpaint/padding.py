"""Any input size: pad to a model's multiple and crop back, resize, or tile with blending.

All functions take images as ``B x C x H x W`` float tensors.  Padding goes on the
bottom and right only, so cropping back is ``x[..., :H, :W]`` and the real pixels keep
their coordinates.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F


def _check_4d(x: torch.Tensor) -> None:
    if x.ndim != 4:
        raise ValueError(f"expected a B x C x H x W tensor, got shape {tuple(x.shape)}")


def _pad_axis(x: torch.Tensor, amount: int, dim: int, mode: str) -> torch.Tensor:
    """Pad ``amount`` pixels after the end of ``dim`` (-1 = width, -2 = height)."""
    if amount == 0:
        return x
    pad = (0, amount, 0, 0) if dim == -1 else (0, 0, 0, amount)
    if mode == "reflect" and amount >= x.shape[dim]:
        # Reflection needs amount < length (a 1-pixel row has nothing to mirror): repeat the edge.
        mode = "replicate"
    if mode == "constant":
        return F.pad(x, pad, mode="constant", value=0.0)
    return F.pad(x, pad, mode=mode)


def pad_to_multiple(x: torch.Tensor, multiple: int, mode: str = "reflect") -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad bottom/right so height and width become multiples of ``multiple``.

    Args:
        x: ``B x C x H x W``.
        multiple: e.g. the model's total downsampling factor times its window size.
        mode: ``"reflect"`` (falls back to ``"replicate"`` along an axis shorter than
            its padding, e.g. 1 x 1 or 1 x N images), ``"replicate"`` or ``"constant"`` (zeros).

    Returns:
        ``(padded B x C x Hp x Wp, (H, W))``; :func:`crop_back` undoes it.
    """
    _check_4d(x)
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    if mode not in ("reflect", "replicate", "constant"):
        raise ValueError(f"unknown padding mode {mode!r}: use reflect, replicate or constant")
    height, width = x.shape[-2:]
    x = _pad_axis(x, (-width) % multiple, -1, mode)
    x = _pad_axis(x, (-height) % multiple, -2, mode)
    return x, (height, width)


def crop_back(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Undo :func:`pad_to_multiple`: ``B x C x Hp x Wp`` -> ``B x C x H x W`` with ``size = (H, W)``."""
    height, width = size
    return x[..., :height, :width]


def valid_region_mask(size: tuple[int, int], padded_size: tuple[int, int], batch: int = 1,
                      device: torch.device | str | None = None,
                      dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``B x 1 x Hp x Wp`` mask, 1 on real pixels (top-left ``H x W``), 0 on padding.

    Models multiply statistics, losses and attention by it so padded pixels never count.
    (``valid`` here means "real image", not the corruption convention.)
    """
    height, width = size
    padded_h, padded_w = padded_size
    if height > padded_h or width > padded_w:
        raise ValueError(f"size {size} is larger than the padded size {padded_size}")
    valid = torch.zeros(batch, 1, padded_h, padded_w, device=device, dtype=dtype)
    valid[..., :height, :width] = 1
    return valid


# ------------------------------------------------------------------ resizing
def resize_to(x: torch.Tensor, size: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """Resize ``B x C x H x W`` to ``size = (H', W')``; antialiased when shrinking.

    ``mode="nearest"`` is for masks (values stay in {0, 1}).
    """
    _check_4d(x)
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if mode == "nearest":
        return F.interpolate(x, size=tuple(size), mode="nearest-exact")
    shrinking = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    return F.interpolate(x, size=tuple(size), mode=mode, align_corners=False, antialias=shrinking)


def resize_long_side(x: torch.Tensor, long_side: int, mode: str = "bilinear",
                     allow_upscale: bool = False) -> tuple[torch.Tensor, tuple[int, int]]:
    """Scale ``B x C x H x W`` so ``max(H, W) == long_side``, keeping the aspect ratio.

    Images already no larger than ``long_side`` are returned unchanged unless
    ``allow_upscale``.  Returns ``(resized, (H, W))``; ``resize_to(result, (H, W))``
    goes back to the original size.
    """
    _check_4d(x)
    if long_side < 1:
        raise ValueError(f"long_side must be >= 1, got {long_side}")
    height, width = x.shape[-2:]
    longest = max(height, width)
    if longest == long_side or (longest < long_side and not allow_upscale):
        return x, (height, width)
    scale = long_side / longest
    new_size = (max(1, round(height * scale)), max(1, round(width * scale)))
    return resize_to(x, new_size, mode=mode), (height, width)


# ------------------------------------------------------------------ tiling
def tile_spans(length: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """Half-open ``(start, end)`` spans of at most ``tile`` pixels covering ``[0, length)``.

    Neighbouring spans overlap by at least ``overlap`` pixels; every span is exactly
    ``tile`` long when ``length >= tile`` (the last one is aligned to the end), so a
    model that needs fixed or multiple-of-N sizes sees only one size.
    """
    if tile < 1:
        raise ValueError(f"tile must be >= 1, got {tile}")
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, tile), got overlap={overlap} with tile={tile}")
    if length <= tile:
        return [(0, length)]
    stride = tile - overlap
    count = math.ceil((length - tile) / stride) + 1
    starts = [min(i * stride, length - tile) for i in range(count)]
    return [(s, s + tile) for s in starts]


def _ramp_weights(length: int, spans: list[tuple[int, int]], overlap: int,
                  device: torch.device, dtype: torch.dtype) -> list[torch.Tensor]:
    """Per-span 1-D blending weights: a raised-cosine ramp over ``overlap`` pixels at each
    edge shared with another tile, 1 elsewhere (also at the image border).

    The ramp rises from near 0 to 1, so a tile's output fades out where the next one
    takes over and seams vanish; the weights stay > 0 so normalising is always defined.
    """
    ramp_len = min(overlap, max(1, (spans[0][1] - spans[0][0]) // 2)) if overlap > 0 else 0
    positions = torch.arange(ramp_len, device=device, dtype=torch.float64)
    ramp = (0.5 - 0.5 * torch.cos(math.pi * (positions + 0.5) / max(ramp_len, 1))).to(dtype)
    weights = []
    for start, end in spans:
        w = torch.ones(end - start, device=device, dtype=dtype)
        if ramp_len:
            if start > 0:
                w[:ramp_len] *= ramp
            if end < length:
                w[-ramp_len:] *= ramp.flip(0)
        weights.append(w)
    return weights


def run_tiled(x: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor], tile: int = 512,
              overlap: int = 64) -> torch.Tensor:
    """Apply ``fn`` to overlapping tiles of ``x`` and blend the results.

    Args:
        x: ``B x C x H x W``.
        fn: maps a ``B x C x h x w`` tile to ``B x C' x h x w`` (C' may differ from C,
            e.g. a 1-channel mask).
        tile: tile side in pixels; images no larger than that are processed in one call.
        overlap: minimum overlap of neighbouring tiles, blended with a raised-cosine ramp.

    Returns:
        ``B x C' x H x W``: ``sum_t w_t * fn(tile_t) / sum_t w_t`` per pixel, so an
        identity or any per-pixel ``fn`` gives exactly the single-pass result (up to
        float rounding).
    """
    _check_4d(x)
    height, width = x.shape[-2:]
    if height <= tile and width <= tile:
        return fn(x)
    rows, cols = tile_spans(height, tile, overlap), tile_spans(width, tile, overlap)
    out = total = None
    row_weights = col_weights = None
    for r, (top, bottom) in enumerate(rows):
        for c, (left, right) in enumerate(cols):
            result = fn(x[..., top:bottom, left:right])
            if result.ndim != 4 or result.shape[0] != x.shape[0] or result.shape[-2:] != (bottom - top, right - left):
                raise ValueError(f"tile fn must keep batch and spatial size: got {tuple(result.shape)} "
                                 f"for a {bottom - top} x {right - left} tile")
            if out is None:
                dtype = result.dtype if result.is_floating_point() else torch.float32
                out = torch.zeros(x.shape[0], result.shape[1], height, width, device=result.device, dtype=dtype)
                total = torch.zeros(1, 1, height, width, device=result.device, dtype=dtype)
                row_weights = _ramp_weights(height, rows, overlap, result.device, dtype)
                col_weights = _ramp_weights(width, cols, overlap, result.device, dtype)
            weight = row_weights[r][:, None] * col_weights[c][None, :]
            out[..., top:bottom, left:right] += result * weight
            total[..., top:bottom, left:right] += weight
    return out / total
