"""Image reading and writing with clear errors.

Every image that enters the toolkit goes through :func:`read_image`, which turns
whatever Pillow can open into ``HxWx3 uint8`` RGB plus an optional ``HxW uint8``
alpha channel, and turns every way a file can be bad into a one-line
:class:`~blindinpaint.errors.UserError` naming the file:

* EXIF orientation is applied, so the pixels come back the way viewers show them;
* modes ``1``, ``L``, ``LA``, ``P`` (with or without transparency), ``RGB``,
  ``RGBA``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``, 16-bit grey (``I;16*``), 32-bit
  integer ``I`` and float ``F`` are converted to 8-bit RGB; 16-bit values are
  *scaled* (``v / 257``, so 65535 -> 255), never clipped;
* animated images give their first frame;
* a pixel-count limit (default :data:`DEFAULT_MAX_PIXELS`, environment variable
  ``BLINDINPAINT_MAX_PIXELS``, or the ``max_pixels`` argument) is checked from the
  header, before any pixel is decoded, as a guard against decompression bombs.

Masks follow the project convention: white / nonzero = hole (corrupted),
black / 0 = valid.  :func:`read_mask` returns ``HxW bool`` with True = hole.
"""

from __future__ import annotations

import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
import torch
from PIL import Image, ImageOps

from .errors import UserError

#: Default pixel-count limit: 64 megapixels (e.g. 8000 x 8000).
DEFAULT_MAX_PIXELS = 64_000_000
#: Environment variable that overrides :data:`DEFAULT_MAX_PIXELS`.
MAX_PIXELS_ENV = "BLINDINPAINT_MAX_PIXELS"
#: Colour that transparent pixels are flattened onto (white, as on a page).
WHITE = (255, 255, 255)

Source = Union[str, os.PathLike, BinaryIO]
_PIL_LIMIT_LOCK = threading.Lock()


@dataclass
class LoadedImage:
    """A decoded image.

    Attributes:
        rgb: ``H x W x 3`` uint8.  Transparent pixels are flattened onto
            ``background`` (see :func:`flatten_alpha`) unless that is None.
        alpha: ``H x W`` uint8 alpha of the file (255 = opaque), or None when
            the file has no transparency.
        mode: Pillow mode of the file as stored (``"RGBA"``, ``"I;16"``, ...).
        bit_depth: bits per channel of the stored samples (1, 8, 16 or 32).
        path: the file read, or None for in-memory images.
        size: ``(width, height)`` after EXIF orientation (Pillow's order).
        background: RGB colour transparent pixels were flattened onto, or None.
    """

    rgb: np.ndarray
    alpha: np.ndarray | None
    mode: str
    bit_depth: int
    path: Path | None
    size: tuple[int, int]
    background: tuple[int, int, int] | None = WHITE

    def with_alpha(self, rgb: np.ndarray) -> np.ndarray:
        """Put this image's alpha back on a result of the same size (see :func:`restore_alpha`)."""
        return restore_alpha(rgb, self.alpha, self.background)


# ------------------------------------------------------------------ limits
def resolve_max_pixels(max_pixels: int | None = None) -> int:
    """The pixel-count limit: the argument, else ``$BLINDINPAINT_MAX_PIXELS``, else the default."""
    if max_pixels is not None:
        limit = max_pixels
    else:
        raw = os.environ.get(MAX_PIXELS_ENV, "").strip().replace("_", "")
        if not raw:
            return DEFAULT_MAX_PIXELS
        try:
            limit = int(float(raw))
        except ValueError:
            raise UserError(f"{MAX_PIXELS_ENV}={raw!r} is not a number of pixels") from None
    if limit <= 0:
        raise UserError(f"the pixel limit must be positive, got {limit}")
    return int(limit)


def _bomb_message(name: str, limit: int, size: tuple[int, int] | None = None) -> str:
    what = f"{size[0]}x{size[1]} = {size[0] * size[1]:,} pixels" if size else "larger than that"
    return (f"{name}: image is {what}, more than the limit of {limit:,} pixels "
            f"(a guard against decompression bombs); to raise it set {MAX_PIXELS_ENV}=N "
            f"in the environment or pass max_pixels=N")


def _lift_pil_limit(limit: int) -> None:
    """Let Pillow's own bomb check allow at least ``limit`` pixels (it never lowers it).

    Pillow refuses images over ``2 * Image.MAX_IMAGE_PIXELS`` (about 179 Mpx) by
    itself; a user who raised our limit above that must not be blocked by it.
    """
    with _PIL_LIMIT_LOCK:
        if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < limit:
            Image.MAX_IMAGE_PIXELS = limit


# ------------------------------------------------------------------ reading
def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _display_name(source: Source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return str(getattr(source, "name", "<image data>"))


def _open(source: Source, name: str, limit: int) -> Image.Image:
    """Open, check the size from the header, then decode. Any failure -> UserError."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            raise UserError(f"{name}: is a folder, not an image file")
        if not path.exists():
            raise UserError(f"{name}: file not found")
    _lift_pil_limit(limit)
    with warnings.catch_warnings():
        # Pillow warns (instead of failing) between its limit and twice it: refuse those too.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(source)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise UserError(_bomb_message(name, limit)) from None
        except Image.UnidentifiedImageError:
            raise UserError(f"{name}: not an image file (or a format Pillow cannot read)") from None
        except PermissionError:
            raise UserError(f"{name}: permission denied") from None
        except Exception as exc:  # noqa: BLE001 - any decoder failure is the file's fault
            raise UserError(f"{name}: truncated or corrupt image ({_one_line(exc)})") from None
        width, height = image.size
        if width <= 0 or height <= 0:
            image.close()
            raise UserError(f"{name}: image has zero size ({width}x{height})")
        if width * height > limit:
            image.close()
            raise UserError(_bomb_message(name, limit, (width, height)))
        try:
            image.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            image.close()
            raise UserError(_bomb_message(name, limit, (width, height))) from None
        except MemoryError:
            image.close()
            raise UserError(f"{name}: not enough memory to decode a {width}x{height} image") from None
        except Exception as exc:  # noqa: BLE001 - truncated data, bad chunks, zlib errors ...
            image.close()
            raise UserError(f"{name}: truncated or corrupt image ({_one_line(exc)})") from None
    return image


def _apply_exif_orientation(image: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not make the pixels unreadable
        return image


def _bit_depth(mode: str) -> int:
    if mode == "1":
        return 1
    if mode.startswith("I;16"):
        return 16
    if mode in ("I", "F"):
        return 32
    return 8


def _wide_grey_to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    """Map 16/32-bit integer or float grey samples to uint8.

    * ``I;16*`` and ``I`` holding values in [0, 65535] (16-bit PNG/TIFF/PGM): ``v / 257``,
      so the full 16-bit range maps onto the full 8-bit range.
    * ``F`` holding values in [0, 1]: ``v * 255``.
    * anything else (negative or larger values): min-max stretched to [0, 255].
    """
    values = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if mode.startswith("I;16") or (mode == "I" and lo >= 0 and hi <= 65535):
        scaled = values / 257.0
    elif mode == "F" and lo >= 0 and hi <= 1:
        scaled = values * 255.0
    elif hi > lo:
        scaled = (values - lo) * (255.0 / (hi - lo))
    else:
        scaled = np.zeros_like(values)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def flatten_alpha(rgb: np.ndarray, alpha: np.ndarray, background=WHITE) -> np.ndarray:
    """Composite ``H x W x 3`` uint8 colours with ``H x W`` uint8 alpha over ``background``.

    ``out = a * rgb + (1 - a) * background`` with ``a = alpha / 255``; the inverse is
    :func:`restore_alpha`.
    """
    a = alpha.astype(np.float32)[..., None] / 255.0
    bg = np.asarray(background, dtype=np.float32).reshape(1, 1, 3)
    out = a * rgb.astype(np.float32) + (1.0 - a) * bg
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _to_rgb_alpha(image: Image.Image, name: str) -> tuple[np.ndarray, np.ndarray | None]:
    mode = image.mode
    if mode.startswith("I") or mode == "F":
        grey = _wide_grey_to_uint8(np.asarray(image), mode)
        return np.repeat(grey[..., None], 3, axis=2), None
    has_alpha = mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in image.info
    try:
        if mode == "La":  # premultiplied grey + alpha: Pillow converts it via LA only
            image = image.convert("LA")
        if has_alpha:
            rgba = np.asarray(image.convert("RGBA"))
            return np.ascontiguousarray(rgba[..., :3]), np.ascontiguousarray(rgba[..., 3])
        return np.asarray(image.convert("RGB")), None
    except (ValueError, OSError) as exc:
        raise UserError(f"{name}: unsupported colour mode {mode} ({_one_line(exc)})") from None


def from_pil(image: Image.Image, name: str = "<image>", max_pixels: int | None = None,
             background=WHITE, path: Path | None = None) -> LoadedImage:
    """Convert an already opened PIL image (EXIF orientation, mode, size limit) to a :class:`LoadedImage`.

    ``background`` is the RGB colour transparent pixels are flattened onto; None keeps
    the stored colours under transparency unchanged.
    """
    limit = resolve_max_pixels(max_pixels)
    width, height = image.size
    if width <= 0 or height <= 0:
        raise UserError(f"{name}: image has zero size ({width}x{height})")
    if width * height > limit:
        raise UserError(_bomb_message(name, limit, (width, height)))
    mode = image.mode
    image = _apply_exif_orientation(image)
    rgb, alpha = _to_rgb_alpha(image, name)
    if alpha is not None and background is not None:
        rgb = flatten_alpha(rgb, alpha, background)
    return LoadedImage(rgb=rgb, alpha=alpha, mode=mode, bit_depth=_bit_depth(mode), path=path,
                       size=(rgb.shape[1], rgb.shape[0]),
                       background=None if background is None else tuple(int(c) for c in background))


def read_image(source: Source, max_pixels: int | None = None, background=WHITE) -> LoadedImage:
    """Read an image file (or binary file object) into 8-bit RGB + optional alpha.

    Args:
        source: path, or a binary file object (its ``name`` is used in messages).
        max_pixels: refuse images with more pixels than this (checked from the header,
            before decoding).  None: ``$BLINDINPAINT_MAX_PIXELS`` or :data:`DEFAULT_MAX_PIXELS`.
        background: RGB colour transparent pixels are flattened onto (default white);
            None keeps the colours stored under transparency.

    Returns:
        :class:`LoadedImage` with ``rgb`` ``H x W x 3`` uint8 after EXIF orientation.

    Raises:
        UserError: one line naming the file for a missing file, a folder, a non-image,
            a truncated/corrupt file, a zero-size image or an image over the pixel limit.
    """
    name = _display_name(source)
    limit = resolve_max_pixels(max_pixels)
    image = _open(source, name, limit)
    try:
        # Frame 0 of animated GIF/WebP/APNG/multi-page TIFF is what Image.open gives.
        path = Path(source) if isinstance(source, (str, os.PathLike)) else None
        return from_pil(image, name=name, max_pixels=limit, background=background, path=path)
    finally:
        image.close()


def read_mask(source: Source, size: tuple[int, int] | None = None, resize: bool = False,
              max_pixels: int | None = None) -> np.ndarray:
    """Read a mask file: ``H x W`` bool, True = hole (white / nonzero), False = valid (black).

    A pixel is a hole when its brightest channel is above 127, so white, grey-above-half
    and brightly painted strokes all mark holes.  *Alpha-only* masks (an alpha channel
    over uniform colour, e.g. strokes painted on a transparent layer) use alpha > 127.
    EXIF orientation is applied as for images.

    Args:
        size: expected ``(width, height)`` (e.g. ``LoadedImage.size``); None skips the check.
        resize: when the size differs, resize with nearest neighbour instead of failing.

    Raises:
        UserError: unreadable file (as :func:`read_image`) or wrong size without ``resize``.
    """
    name = _display_name(source)
    loaded = read_image(source, max_pixels=max_pixels, background=None)
    rgb, alpha = loaded.rgb, loaded.alpha
    if alpha is not None and rgb.min() == rgb.max():
        hole = alpha > 127
    else:
        hole = rgb.max(axis=2) > 127
    if size is not None and tuple(size) != loaded.size:
        want_w, want_h = size
        if not resize:
            raise UserError(f"{name}: mask is {loaded.size[0]}x{loaded.size[1]} pixels but the image is "
                            f"{want_w}x{want_h}; a mask must have its image's size")
        resized = Image.fromarray(hole.astype(np.uint8) * 255).resize((want_w, want_h), Image.Resampling.NEAREST)
        hole = np.asarray(resized) > 127
    return hole


# ------------------------------------------------------------------ writing
def _png_pixels(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.dtype.kind == "u" and array.dtype.itemsize == 2 and array.ndim == 2:
        return array.astype(np.uint16)  # native byte order (big-endian input from I;16B)
    if array.dtype != np.uint8:
        raise TypeError(f"write_png needs uint8 (or 2-D uint16 / bool) pixels, got {array.dtype} {array.shape}")
    if array.ndim == 2:
        return array
    if array.ndim == 3 and array.shape[2] in (3, 4):
        return array
    raise TypeError(f"write_png needs H x W, H x W x 3 or H x W x 4 pixels, got shape {array.shape}")


def write_png(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write a PNG, creating parent folders.

    ``array``: ``H x W`` uint8 (grey), ``H x W`` bool (written 0 / 255),
    ``H x W`` uint16 (16-bit grey), ``H x W x 3`` uint8 (RGB) or ``H x W x 4`` uint8 (RGBA).
    The file is written to a temporary name and renamed, so an interrupted run never
    leaves a half-written PNG under the final name.

    Raises:
        UserError: the folder cannot be created or the file cannot be written.
        TypeError: unsupported dtype or shape (a programming error).
    """
    path = Path(path)
    pixels = _png_pixels(np.ascontiguousarray(array))
    image = Image.fromarray(pixels)  # uint8 2-D/3-D -> L/RGB/RGBA, uint16 2-D -> I;16
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(tmp, format="PNG")
        os.replace(tmp, path)
    except OSError as exc:
        if tmp.parent.is_dir():
            tmp.unlink(missing_ok=True)
        reason = exc.strerror or _one_line(exc)
        raise UserError(f"cannot write {path}: {reason}") from None
    return path


def restore_alpha(rgb: np.ndarray, alpha: np.ndarray | None, background=WHITE) -> np.ndarray:
    """Put the original alpha back on an ``H x W x 3`` uint8 result -> ``H x W x 4`` uint8.

    With ``background`` (the colour :func:`read_image` flattened onto) the colours are
    un-composited, ``c = (flat - (1 - a) * bg) / a``, so the RGBA output shown over that
    background looks exactly like the flattened result; with None they are kept as is.
    ``alpha`` None returns ``rgb`` unchanged.
    """
    if alpha is None:
        return rgb
    if alpha.shape != rgb.shape[:2]:
        raise ValueError(f"alpha {alpha.shape} does not match image {rgb.shape[:2]}")
    colour = rgb
    if background is not None:
        a = alpha.astype(np.float32)[..., None] / 255.0
        bg = np.asarray(background, dtype=np.float32).reshape(1, 1, 3)
        flat = rgb.astype(np.float32)
        unmixed = (flat - (1.0 - a) * bg) / np.maximum(a, 1e-6)
        # Fully transparent pixels have no colour of their own: keep the flattened one.
        colour = np.where(a > 0, np.clip(np.rint(unmixed), 0, 255), flat).astype(np.uint8)
    return np.concatenate([colour, alpha[..., None].astype(np.uint8)], axis=2)


# ------------------------------------------------------------------ tensors
def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """``H x W x 3`` (or ``H x W``) uint8 -> ``1 x 3 x H x W`` (or ``1 x 1 x H x W``) float32 in [0, 1]."""
    array = np.ascontiguousarray(rgb)
    if array.dtype != np.uint8:
        raise TypeError(f"to_tensor needs uint8 pixels, got {array.dtype}")
    tensor = torch.from_numpy(array)
    tensor = tensor[None] if tensor.ndim == 2 else tensor.permute(2, 0, 1)
    return tensor.unsqueeze(0).float().div_(255.0)


def mask_to_tensor(hole: np.ndarray) -> torch.Tensor:
    """``H x W`` bool hole mask (True = hole) -> ``1 x 1 x H x W`` float32 {0, 1}, 1 = hole."""
    return torch.from_numpy(np.ascontiguousarray(hole, dtype=bool)).float()[None, None]


def from_tensor(tensor: torch.Tensor) -> np.ndarray:
    """``1 x C x H x W`` or ``C x H x W`` float in [0, 1] (C = 3 or 1) -> ``H x W x 3`` / ``H x W`` uint8.

    Values are clamped to [0, 1] and rounded to the nearest 8-bit level.
    """
    if tensor.ndim == 4:
        if tensor.shape[0] != 1:
            raise ValueError(f"from_tensor takes one image, got a batch of {tensor.shape[0]}")
        tensor = tensor[0]
    if tensor.ndim != 3 or tensor.shape[0] not in (1, 3):
        raise ValueError(f"from_tensor needs 1 x C x H x W or C x H x W with C in (1, 3), got {tuple(tensor.shape)}")
    pixels = tensor.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).cpu()
    return pixels[0].numpy() if pixels.shape[0] == 1 else pixels.permute(1, 2, 0).contiguous().numpy()
