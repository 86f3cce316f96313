"""The Python API: blind restoration, detection and mask-given inpainting of single images.

    from blindinpaint import Restorer
    r = Restorer.from_pretrained("default")          # bundled name, export folder or run directory
    res = r.restore("photo.jpg")                     # res.image, res.mask, res.confidence
    det = r.detect("photo.jpg")                      # det.mask, det.confidence
    res = r.restore("photo.jpg", mask="mask.png")    # skip detection: white = corrupted

    g = Restorer.from_pretrained("gdn")              # a GDN model: mask-given inpainting + dense detector
    res = g.inpaint("photo.jpg", "mask.png")         # white = fill
    heat = g.inspect("any_inpainted.png")            # H x W float32 P(artifact) in [0, 1]

Formats at this boundary:

* images in: a path, a PIL image, an ``H x W x 3`` (or ``H x W``, ``H x W x 4``) ``uint8`` /
  ``uint16`` array, an ``H x W x 3`` float array in [0, 1], or a ``3 x H x W`` float tensor in [0, 1];
  RGBA: the alpha is flattened onto white for the model and put back on the result;
* images out: ``H x W x 3`` uint8 (``H x W x 4`` when the input had alpha), at the input size;
* masks: ``H x W`` bool, **True = corrupted** (to be restored); mask files: white = corrupted;
* confidence: ``H x W`` float32 in [0, 1], the per-pixel probability of corruption;
* artifact heat maps (:meth:`Restorer.inspect`): ``H x W`` float32 in [0, 1], the GDN dense
  detector's per-pixel probability that a pixel is an inpainting artifact.

Any size works (``strategy``): ``"auto"`` runs images up to :attr:`Restorer.max_single_side`
pixels (1024) in one pass, only padded to the model's multiple, and tiles larger ones;
``"tile"`` runs overlapping tiles blended with a raised-cosine ramp, after fitting the
cluster centres ONCE on the downscaled whole image so every tile agrees on what is corrupted
(SPEC.md section 3, "No corruption"); ``"resize"`` runs at :attr:`Restorer.resize_side` and
upsamples the mask and the restoration (composited into the full-resolution input).

Every restored image keeps every pixel outside its mask bit-identical to the (8-bit) input.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from . import hub
from .errors import UserError
from .io import LoadedImage, flatten_alpha, from_pil, read_image, read_mask, resolve_max_pixels, to_tensor
from .padding import resize_long_side, resize_to, run_tiled

ImageInput = Union[str, os.PathLike, Image.Image, np.ndarray, Tensor, LoadedImage]
MaskInput = Union[str, os.PathLike, Image.Image, np.ndarray, Tensor]
STRATEGIES = ("auto", "resize", "tile")
DEFAULT_MODEL = "default"
#: The bundled GDN model (mask-given inpainting + dense artifact detector) of ``inpaint`` / ``inspect``.
DEFAULT_GDN_MODEL = "gdn"
#: Bundled model names -> (example run folder, config that trains one), for the "not installed" message.
_BUNDLED_HINTS = {DEFAULT_MODEL: ("runs/hcl_tiny", "configs/hcl_tiny.yaml"),
                  DEFAULT_GDN_MODEL: ("runs/gdn_cpu", "configs/gdn_cpu.yaml")}


# ----------------------------------------------------------------------------- results
@dataclass
class DetectResult:
    """Detected corruption of one image.

    mask:       ``H x W`` bool, True = corrupted.
    confidence: ``H x W`` float32 in [0, 1], probability of corruption (``mask = confidence > threshold``).
    clean:      the no-corruption rule judged the whole image clean (then ``mask`` is empty).
    """

    mask: np.ndarray
    confidence: np.ndarray
    clean: bool = False


@dataclass
class RestoreResult:
    """Restoration of one image.

    image:      ``H x W x 3`` uint8 (``H x W x 4`` when the input had alpha, the alpha kept);
                equal to the input outside ``mask``, bit for bit.
    mask:       ``H x W`` bool, True = corrupted = the pixels that were restored.
    confidence: ``H x W`` float32 in [0, 1]: probability of corruption (a given mask: 0 / 1).
    clean:      the no-corruption rule judged the image clean (nothing restored).
    """

    image: np.ndarray
    mask: np.ndarray
    confidence: np.ndarray
    clean: bool = False


# ----------------------------------------------------------------------------- inputs
def _array_to_rgb(array: np.ndarray, name: str) -> tuple[np.ndarray, Optional[np.ndarray], int]:
    """An image array -> (``H x W x 3`` uint8, ``H x W`` uint8 alpha or None, bit depth)."""
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise UserError(f"{name}: expected an H x W, H x W x 3 or H x W x 4 array, got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise UserError(f"{name}: image has zero size ({array.shape[1]}x{array.shape[0]})")
    depth = 8
    if array.dtype == np.uint8:
        pixels = array
    elif array.dtype == np.bool_:
        pixels = array.astype(np.uint8) * 255
    elif array.dtype == np.uint16:
        depth = 16
        pixels = np.rint(array.astype(np.float64) / 257.0).astype(np.uint8)  # 65535 -> 255, as io.py
    elif array.dtype.kind == "f":
        values = array.astype(np.float64)
        if not np.isfinite(values).all():
            raise UserError(f"{name}: float image contains NaN or infinite values")
        lo, hi = float(values.min()), float(values.max())
        if lo < 0.0 or hi > 1.0:
            raise UserError(f"{name}: float images must hold values in [0, 1], got [{lo:.3g}, {hi:.3g}] "
                            f"(pass uint8 for 0-255 data)")
        depth = 32
        pixels = np.rint(values * 255.0).astype(np.uint8)
    else:
        raise UserError(f"{name}: unsupported array dtype {array.dtype} (use uint8, uint16 or float in [0, 1])")
    alpha = None
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[..., None], 3, axis=2)
    elif pixels.shape[2] == 4:
        alpha = np.ascontiguousarray(pixels[..., 3])
        pixels = flatten_alpha(pixels[..., :3], alpha)
    return np.ascontiguousarray(pixels), alpha, depth


def load_input(img: ImageInput, max_pixels: Optional[int] = None) -> LoadedImage:
    """Any supported image input -> :class:`~blindinpaint.io.LoadedImage` (``rgb`` H x W x 3 uint8).

    Paths go through :func:`~blindinpaint.io.read_image` (EXIF orientation, modes, size limit);
    tensors are ``3 x H x W`` or ``1 x 3 x H x W`` float in [0, 1].

    Raises:
        UserError: one line for unreadable files, bad shapes / dtypes / value ranges, or images
            over the pixel limit.
    """
    if isinstance(img, LoadedImage):
        return img
    if isinstance(img, (str, os.PathLike)):
        return read_image(img, max_pixels=max_pixels)
    if isinstance(img, Image.Image):
        return from_pil(img, name="<PIL image>", max_pixels=max_pixels)
    if isinstance(img, Tensor):
        t = img.detach().cpu()
        t = t.float() if t.is_floating_point() else t
        if t.ndim == 4 and t.shape[0] == 1:
            t = t[0]
        if t.ndim != 3 or t.shape[0] not in (1, 3, 4):
            raise UserError(f"<tensor>: expected a 3 x H x W (or 1 x 3 x H x W) tensor, got {tuple(img.shape)}")
        img = t.permute(1, 2, 0).numpy()
    if not isinstance(img, np.ndarray):
        raise UserError(f"cannot read an image from a {type(img).__name__}: pass a path, PIL image or array")
    rgb, alpha, depth = _array_to_rgb(img, "<array>")
    height, width = rgb.shape[:2]
    limit = resolve_max_pixels(max_pixels)
    if height * width > limit:
        raise UserError(f"<array>: image is {width}x{height} = {width * height:,} pixels, more than the limit "
                        f"of {limit:,}; pass max_pixels=N to raise it")
    return LoadedImage(rgb=rgb, alpha=alpha, mode="array", bit_depth=depth, path=None, size=(width, height))


def load_mask(mask: MaskInput, size: tuple[int, int]) -> np.ndarray:
    """A user mask -> ``H x W`` bool, True = corrupted (white / nonzero / > 0.5).

    ``mask``: a mask file (white = corrupted, see :func:`~blindinpaint.io.read_mask`), a PIL image,
    an ``H x W`` (or ``H x W x C``) bool / uint8 (> 127) / float (> 0.5) array, or a tensor.
    ``size``: the image's ``(width, height)``; a mask of another size is an error.
    """
    if isinstance(mask, (str, os.PathLike)):
        return read_mask(mask, size=size)
    name = "mask"
    if isinstance(mask, Image.Image):
        array = np.asarray(mask.convert("L") if mask.mode not in ("L", "1") else mask)
    elif isinstance(mask, Tensor):
        array = mask.detach().float().cpu().squeeze().numpy()
    elif isinstance(mask, np.ndarray):
        array = mask
    else:
        raise UserError(f"cannot read a mask from a {type(mask).__name__}: pass a path, PIL image or array")
    if array.ndim == 3:
        array = array.max(axis=2)
    if array.ndim != 2:
        raise UserError(f"{name}: expected an H x W mask, got shape {array.shape}")
    if (array.shape[1], array.shape[0]) != tuple(size):
        raise UserError(f"{name}: mask is {array.shape[1]}x{array.shape[0]} pixels but the image is "
                        f"{size[0]}x{size[1]}; a mask must have its image's size")
    if array.dtype == np.bool_:
        return array.copy()
    if array.dtype.kind == "f":
        return array > 0.5
    if array.dtype == np.uint16:
        return array > 32767
    return array > 127


# ----------------------------------------------------------------------------- devices
def resolve_device(device: Union[str, torch.device] = "auto") -> torch.device:
    """``auto|cpu|cuda|cuda:N|mps`` -> a device that exists here (``auto``: CUDA, then MPS, then CPU;
    under torchrun each rank takes ``cuda:$LOCAL_RANK``)."""
    if isinstance(device, torch.device):
        return device
    name = str(device).strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    kind = name.split(":")[0]
    if kind not in ("cpu", "cuda", "mps"):
        raise UserError(f"unknown device '{device}': use auto, cpu, cuda, cuda:N or mps")
    if kind == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device '{device}' requested but CUDA is not available here (use --device cpu)")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"device '{device}' requested but MPS is not available here (use --device cpu)")
    return torch.device(name)


# ----------------------------------------------------------------------------- helpers
def dilate_mask(hole: Tensor, radius: int) -> Tensor:
    """Grow a ``B x 1 x H x W`` {0, 1} hole mask by ``radius`` pixels (square structuring element)."""
    if radius <= 0:
        return hole
    return F.max_pool2d(hole.float(), 2 * radius + 1, stride=1, padding=radius)


def composite_uint8(rgb: np.ndarray, restored01: Tensor, hole: np.ndarray) -> np.ndarray:
    """Copy the restored pixels into the input inside ``hole`` only.

    rgb: ``H x W x 3`` uint8 input; restored01: ``1 x 3 x H x W`` in [0, 1]; hole: ``H x W`` bool.
    Returns ``H x W x 3`` uint8, bit-identical to ``rgb`` wherever ``hole`` is False.
    """
    out = rgb.copy()
    if hole.any():
        fill = restored01[0].detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0)
        out[hole] = fill.cpu().numpy()[hole]
    return out


def overlay(rgb: np.ndarray, hole: np.ndarray, colour=(255, 0, 0), strength: float = 0.5) -> np.ndarray:
    """A preview: ``H x W x 3`` uint8 with the ``hole`` pixels (True = corrupted) tinted with ``colour``."""
    out = rgb.astype(np.float32)
    tint = np.asarray(colour, dtype=np.float32).reshape(1, 1, 3)
    out[hole] = (1.0 - strength) * out[hole] + strength * tint[0]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


#: Anchor colours of the heat-map colour map (dark purple -> red -> orange -> pale yellow, an
#: "inferno"-like ramp whose brightness rises steadily with the value, so it also reads in grey).
_HEAT_STOPS = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
_HEAT_COLOURS = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]],
                         dtype=np.float64)


def heat_colours(prob: np.ndarray) -> np.ndarray:
    """``H x W`` float in [0, 1] -> ``H x W x 3`` uint8 colours (0 = near black, 1 = pale yellow)."""
    p = np.clip(np.nan_to_num(np.asarray(prob, dtype=np.float64)), 0.0, 1.0)
    rgb = np.stack([np.interp(p, _HEAT_STOPS, _HEAT_COLOURS[:, c]) for c in range(3)], axis=-1)
    return np.rint(rgb).astype(np.uint8)


def artifact_overlay(rgb: np.ndarray, prob: np.ndarray, strength: float = 0.5) -> np.ndarray:
    """A preview of a heat map: ``H x W x 3`` uint8 ``rgb`` blended with :func:`heat_colours` of
    ``prob`` (``H x W`` in [0, 1]); ``strength`` = weight of the colours (0.5 = half and half)."""
    if prob.shape != rgb.shape[:2]:
        raise ValueError(f"heat map {prob.shape} does not match image {rgb.shape[:2]}")
    mixed = (1.0 - strength) * rgb[..., :3].astype(np.float64) + strength * heat_colours(prob)
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


def _image_tensor(loaded: LoadedImage) -> Tensor:
    """``1 x 3 x H x W`` float in [0, 1]; read-only arrays (from PIL) are copied so torch never
    warns about sharing non-writable memory."""
    rgb = loaded.rgb if loaded.rgb.flags.writeable else loaded.rgb.copy()
    return to_tensor(rgb)


def _numpy_map(x: Tensor) -> np.ndarray:
    """``1 x 1 x H x W`` -> ``H x W`` float32 numpy in [0, 1]."""
    return x[0, 0].detach().float().clamp(0, 1).cpu().numpy()


@dataclass
class _Pass:
    """What one run of the network gives at the input size: P(hole) and, when restoring, the image."""

    prob: Tensor                       # 1 x 1 x H x W in [0, 1]
    restored: Optional[Tensor] = None  # 1 x 3 x H x W in [0, 1]
    clean: bool = False


# ----------------------------------------------------------------------------- Restorer
@dataclass
class Restorer:
    """A loaded model plus the any-size machinery; one instance serves many images.

    Build it with :meth:`from_pretrained`.  ``net`` is an ``HCLNet`` (blind: detect + restore)
    or a ``GDN`` (mask-given inpainting only).  Tiling / strategy settings are attributes:

    max_single_side: ``auto`` runs images whose long side is at most this in one pass (never
        downsampled), and tiles larger ones.
    tile, overlap: tile side and minimum overlap (pixels) of the ``tile`` strategy.
    fit_side: long side of the downscaled whole image the cluster centres are fitted on before
        tiling (as large as a single pass allows: features drift with scale, so the smaller the
        downscaling, the better full-resolution tiles match the centres).
    resize_side: long side the ``resize`` strategy runs at.
    """

    net: nn.Module
    task: str
    device: torch.device
    source: str = ""
    meta: dict = field(default_factory=dict)
    max_single_side: int = 1024
    # 2048 px = 4 x 4 tiles of 544 at overlap 32: 13 % more pixels than the image (576 / 64: 27 %),
    # same mask and IoU on the bench photo, ~8 % faster (benchmarks/bench_product.py)
    tile: int = 544
    overlap: int = 32
    fit_side: int = 1024
    resize_side: int = 512
    threshold: float = 0.5

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, name_or_path: Union[str, os.PathLike] = DEFAULT_MODEL,
                        device: Union[str, torch.device] = "auto", which: str = "latest") -> "Restorer":
        """Load a bundled / user model by name, an export folder (``model.safetensors`` +
        ``config.json``, SHA-256 checked), a training run directory (its ``which`` checkpoint:
        ``latest`` or ``best``) or a checkpoint file.  ``device``: auto | cpu | cuda | cuda:N | mps.

        Raises:
            UserError: unknown name (for the bundled names ``"default"`` and ``"gdn"`` before such a
                model is installed: how to pass a path instead), damaged weights, or a model this
                API cannot run.
        """
        dev = resolve_device(device)
        name = str(name_or_path)
        if name in _BUNDLED_HINTS and not Path(name).exists() and not any(
                m["name"] == name for m in hub.list_models()):
            run, config = _BUNDLED_HINTS[name]
            raise UserError(f"no bundled '{name}' model is installed in this copy of blindinpaint; pass an "
                            f"export folder or run directory instead, e.g. Restorer.from_pretrained('{run}') "
                            f"or --model {run} (make one with 'blindinpaint train --config {config}' + "
                            f"'blindinpaint export')")
        loaded = hub.load(name_or_path, device=dev, which=which)
        if loaded.task not in ("hcl", "gdn"):
            raise UserError(f"{loaded.source} holds a '{loaded.task}' model; restore/detect/inpaint run "
                            f"'hcl' (blind restoration) and 'gdn' (mask-given inpainting) models")
        net = hub.build_model(loaded, dev)
        return cls(net=net, task=loaded.task, device=dev, source=loaded.source, meta=loaded.meta)

    @property
    def blind(self) -> bool:
        """The model detects corruption itself (HCL); False for mask-given inpainting (GDN)."""
        return self.task == "hcl"

    @property
    def can_inspect(self) -> bool:
        """The model has a GDN dense artifact detector (:meth:`inspect` works)."""
        from .models.gdn import DenseDetector

        return isinstance(getattr(self.net, "detector", None), DenseDetector)

    # ------------------------------------------------------------------ public calls
    def detect(self, img: ImageInput, threshold: Optional[float] = None, dilate: int = 0,
               strategy: str = "auto", max_pixels: Optional[int] = None) -> DetectResult:
        """Detect the corrupted pixels of ``img`` (see the module docstring for input formats).

        threshold: ``mask = confidence > threshold`` (default 0.5, the model's own decision).
        dilate: grow the mask by this many pixels.
        Returns a :class:`DetectResult` (``mask`` H x W bool, True = corrupted).
        """
        self._need_blind("detect")
        loaded = load_input(img, max_pixels)
        thr = self._threshold(threshold)
        x = _image_tensor(loaded).to(self.device)
        if dilate < 0:
            raise UserError(f"dilate must be >= 0 pixels, got {dilate}")
        result = self._detect(x, self._strategy(strategy, x))
        mask = (dilate_mask((result.prob > thr).float(), dilate) > 0.5)[0, 0].cpu().numpy()
        return DetectResult(mask=mask, confidence=_numpy_map(result.prob), clean=result.clean)

    def restore(self, img: ImageInput, mask: Optional[MaskInput] = None, threshold: Optional[float] = None,
                dilate: int = 0, strategy: str = "auto", max_pixels: Optional[int] = None) -> RestoreResult:
        """Blind restoration: detect the corrupted pixels and restore them.

        img: path, PIL image, ``H x W x 3`` uint8 / float [0, 1] array, ... (module docstring).
        mask: skip detection and restore these pixels (file: white = corrupted; array: True /
            nonzero = corrupted; must have the image's size).
        threshold: detection threshold on the confidence (default 0.5).
        dilate: grow the mask by this many pixels before restoring.
        strategy: ``auto`` | ``resize`` | ``tile`` (module docstring).
        Returns a :class:`RestoreResult`; ``image`` equals the input outside ``mask`` bit for bit.
        """
        loaded = load_input(img, max_pixels)
        if dilate < 0:
            raise UserError(f"dilate must be >= 0 pixels, got {dilate}")
        x = _image_tensor(loaded).to(self.device)
        strat = self._strategy(strategy, x)
        clean = False
        if mask is not None:
            hole = torch.from_numpy(load_mask(mask, loaded.size)).float()[None, None].to(self.device)
            hole = dilate_mask(hole, dilate)
            confidence = hole
        else:
            self._need_blind("restore without a mask")
            thr = self._threshold(threshold)
            if thr == self.threshold and dilate == 0:
                # one pass: the decoder restores exactly the pixels the detector marks
                result = self._restore(x, None, strat)
                hole = (result.prob > thr).float()
                return self._result(loaded, result.restored, hole, result.prob, result.clean)
            detected = self._detect(x, strat)
            hole = dilate_mask((detected.prob > thr).float(), dilate)
            confidence, clean = detected.prob, detected.clean
        result = self._restore(x, hole, strat) if hole.any() else _Pass(prob=hole, restored=x)
        return self._result(loaded, result.restored, hole, confidence, clean)

    def inpaint(self, img: ImageInput, mask: MaskInput, dilate: int = 0, strategy: str = "auto",
                max_pixels: Optional[int] = None) -> RestoreResult:
        """Mask-given inpainting: fill the ``mask`` pixels (white / True = fill) of ``img``.

        Runs a GDN model, or an HCL model in given-mask mode (its decoder is fed the mask).
        Same formats as :meth:`restore`.
        """
        if mask is None:
            raise UserError("inpaint needs a mask (white = the pixels to fill)")
        return self.restore(img, mask=mask, dilate=dilate, strategy=strategy, max_pixels=max_pixels)

    def inspect(self, img: ImageInput, strategy: str = "auto", max_pixels: Optional[int] = None) -> np.ndarray:
        """Artifact heat map of ``img``: where does the image look inpainted?

        Runs the GDN dense detector (seed paper 003, Sec. 3.3.2) on the whole image: ``img`` may be
        the output of *any* inpainting tool, no mask is needed.
        img: path, PIL image, ``H x W x 3`` uint8 / float [0, 1] array, ... (module docstring; alpha
            is flattened onto white first).
        strategy: ``auto`` (one pass up to :attr:`max_single_side`, overlapping tiles above) or
            ``tile``; ``resize`` is refused, since artifacts are pixel-level detail a downscale erases.
        Returns ``H x W`` float32 in [0, 1] at the input size: the detector's per-pixel probability
        V that the pixel is an inpainting artifact (high = looks generated, low = looks real).

        Raises:
            UserError: the model has no dense detector (e.g. an HCL model), bad input or strategy.
        """
        self._need_detector()
        if strategy == "resize":
            raise UserError("inspect runs at full resolution (artifacts are pixel-level detail): "
                            "use strategy auto or tile")
        loaded = load_input(img, max_pixels)
        x = _image_tensor(loaded).to(self.device)
        return _numpy_map(self._artifact(x, self._strategy(strategy, x)))

    # ------------------------------------------------------------------ checks
    def _need_detector(self) -> None:
        if not self.can_inspect:
            raise UserError(f"{self.source or self.task} is a '{self.task}' model without a dense artifact "
                            f"detector: inspect needs a GDN model (--model gdn, or a GDN export folder or "
                            f"run directory)")

    def _need_blind(self, what: str) -> None:
        if not self.blind:
            raise UserError(f"{self.source or self.task} is a mask-given inpainting model ({self.task}): it cannot "
                            f"{what}; pass a mask (mask=..., CLI --mask FILE_OR_DIR) or use an HCL model")

    def _threshold(self, threshold: Optional[float]) -> float:
        thr = self.threshold if threshold is None else float(threshold)
        if not 0.0 <= thr < 1.0:
            raise UserError(f"threshold must be in [0, 1), got {threshold}")
        return thr

    def _strategy(self, strategy: str, x: Tensor) -> str:
        """``auto`` -> ``single`` (long side <= max_single_side) or ``tile``; ``resize``/``tile`` kept
        unless the image is small enough for one pass anyway."""
        if strategy not in STRATEGIES:
            raise UserError(f"unknown strategy '{strategy}': use {', '.join(STRATEGIES)}")
        long_side = max(x.shape[-2:])
        if strategy == "auto":
            return "single" if long_side <= self.max_single_side else "tile"
        if strategy == "resize" and long_side <= self.resize_side:
            return "single"
        if strategy == "tile" and long_side <= self.tile:
            return "single"
        return strategy

    # ------------------------------------------------------------------ network passes
    @torch.no_grad()
    def _hcl(self, x01: Tensor, hole: Optional[Tensor] = None, centres=None, restore: bool = True) -> _Pass:
        """One HCL pass on ``1 x 3 x h x w`` [0, 1] (the model pads to its multiple itself)."""
        image = x01 * 2.0 - 1.0  # [-1, 1] inside HCL
        if not restore:
            det, prob, _ = self.net.detect(image, centres=centres)
            return _Pass(prob=prob.float().clamp(0, 1), clean=bool(det.clean.all()))
        out = self.net(image, decoder_hole=hole, refine=True, centres=centres)
        final = out.refined if out.refined is not None else out.rec
        return _Pass(prob=out.prob_hole.float().clamp(0, 1), restored=((final + 1.0) * 0.5).clamp(0, 1),
                     clean=bool(out.detection.clean.all()))

    @torch.no_grad()
    def _gdn(self, x01: Tensor, hole: Tensor) -> _Pass:
        return _Pass(prob=hole, restored=self.net.inpaint(x01, hole).clamp(0, 1))

    @torch.no_grad()
    def _artifact(self, x: Tensor, strategy: str) -> Tensor:
        """The dense detector's V of ``1 x 3 x H x W`` [0, 1] -> ``1 x 1 x H x W`` in [0, 1] (the
        detector pads to its multiple and crops back itself; ``tile`` blends overlapping tiles)."""
        detector = self.net.detector
        if strategy == "single":
            return detector.artifact_prob(x).clamp(0, 1)
        return run_tiled(x, detector.artifact_prob, self.tile, self.overlap).clamp(0, 1)

    def _fit_centres(self, x01: Tensor):
        """Cluster centres, polarity and clean decision of the whole image, fitted once on a
        copy downscaled to ``fit_side`` (SPEC section 3): every tile is assigned to them."""
        from .models.contrast import FixedCentres

        small, _ = resize_long_side(x01, self.fit_side)
        det, _, _ = self.net.detect(small * 2.0 - 1.0)
        return FixedCentres.from_detection(det)

    def _detect(self, x: Tensor, strategy: str) -> _Pass:
        """P(hole) of ``1 x 3 x H x W`` [0, 1] at the input size."""
        if strategy == "single":
            return self._hcl(x, restore=False)
        if strategy == "resize":
            small, size = resize_long_side(x, self.resize_side)
            result = self._hcl(small, restore=False)
            return _Pass(prob=resize_to(result.prob, size, mode="bilinear").clamp(0, 1), clean=result.clean)
        centres = self._fit_centres(x)
        if bool(centres.clean.all()):  # the whole image is clean: no tile can find anything
            return _Pass(prob=torch.zeros_like(x[:, :1]), clean=True)
        prob = run_tiled(x, lambda t: self._hcl(t, centres=centres, restore=False).prob, self.tile, self.overlap)
        return _Pass(prob=prob.clamp(0, 1), clean=bool(centres.clean.all()))

    def _restore(self, x: Tensor, hole: Optional[Tensor], strategy: str) -> _Pass:
        """Restore ``1 x 3 x H x W`` [0, 1]: with ``hole`` (1 x 1 x H x W, 1 = hole) the decoder is
        fed it; without, the model's own detection (one pass).  Returns P(hole) and the raw
        (not yet composited) restoration, both at the input size."""
        run: Callable[..., _Pass]
        if self.blind:
            run = self._hcl
        else:
            run = lambda t, h, centres=None: self._gdn(t, h)  # noqa: E731 - GDN has no centres
        if strategy == "single":
            return run(x, hole)
        if strategy == "resize":
            small, size = resize_long_side(x, self.resize_side)
            small_hole = None if hole is None else (resize_to(hole, small.shape[-2:], mode="bilinear") > 0).float()
            result = run(small, small_hole)
            return _Pass(prob=resize_to(result.prob, size, mode="bilinear").clamp(0, 1),
                         restored=resize_to(result.restored, size, mode="bilinear").clamp(0, 1), clean=result.clean)
        given = hole is not None
        centres = self._fit_centres(x) if self.blind and not given else None  # a given mask needs none
        if centres is not None and bool(centres.clean.all()):  # clean: nothing to restore, skip the tiles
            return _Pass(prob=torch.zeros_like(x[:, :1]), restored=x, clean=True)
        stacked = torch.cat([x, hole], dim=1) if given else x

        def tile_fn(t: Tensor) -> Tensor:
            res = run(t[:, :3], t[:, 3:] if given else None, centres=centres)
            return torch.cat([res.restored, res.prob], dim=1)

        blended = run_tiled(stacked, tile_fn, self.tile, self.overlap)
        clean = bool(centres.clean.all()) if centres is not None else False
        return _Pass(prob=blended[:, 3:].clamp(0, 1), restored=blended[:, :3].clamp(0, 1), clean=clean)

    def _result(self, loaded: LoadedImage, restored01: Tensor, hole: Tensor, confidence: Tensor,
                clean: bool) -> RestoreResult:
        hole_np = (hole > 0.5)[0, 0].cpu().numpy()
        rgb = composite_uint8(loaded.rgb, restored01, hole_np)
        return RestoreResult(image=loaded.with_alpha(rgb), mask=hole_np, confidence=_numpy_map(confidence),
                             clean=clean)


# ----------------------------------------------------------------------------- module-level
_CACHE: dict[tuple[str, str], Restorer] = {}


def load_model(name_or_path: Union[str, os.PathLike] = DEFAULT_MODEL,
               device: Union[str, torch.device] = "auto") -> Restorer:
    """:meth:`Restorer.from_pretrained`, cached per (model, device) for the conveniences below."""
    key = (str(name_or_path), str(resolve_device(device)))
    if key not in _CACHE:
        _CACHE[key] = Restorer.from_pretrained(name_or_path, device)
    return _CACHE[key]


def detect(img: ImageInput, model: Union[str, os.PathLike] = DEFAULT_MODEL, device: str = "auto",
           **kwargs: Any) -> DetectResult:
    """``load_model(model, device).detect(img, **kwargs)``: ``mask`` H x W bool, True = corrupted."""
    return load_model(model, device).detect(img, **kwargs)


def restore(img: ImageInput, mask: Optional[MaskInput] = None, model: Union[str, os.PathLike] = DEFAULT_MODEL,
            device: str = "auto", **kwargs: Any) -> RestoreResult:
    """``load_model(model, device).restore(img, mask, **kwargs)``: ``image`` H x W x 3 uint8."""
    return load_model(model, device).restore(img, mask=mask, **kwargs)


def inpaint(img: ImageInput, mask: MaskInput, model: Union[str, os.PathLike] = DEFAULT_GDN_MODEL,
            device: str = "auto", **kwargs: Any) -> RestoreResult:
    """``load_model(model, device).inpaint(img, mask, **kwargs)``; mask white / True = fill
    (default: the bundled GDN model, like ``blindinpaint inpaint``)."""
    return load_model(model, device).inpaint(img, mask, **kwargs)


def inspect(img: ImageInput, model: Union[str, os.PathLike] = DEFAULT_GDN_MODEL, device: str = "auto",
            **kwargs: Any) -> np.ndarray:
    """``load_model(model, device).inspect(img, **kwargs)``: ``H x W`` float32 P(artifact) in [0, 1]
    from the GDN dense detector (default: the bundled ``gdn`` model)."""
    return load_model(model, device).inspect(img, **kwargs)


__all__ = ["Restorer", "RestoreResult", "DetectResult", "load_model", "detect", "restore", "inpaint", "inspect",
           "load_input", "load_mask", "resolve_device", "overlay", "artifact_overlay", "heat_colours",
           "composite_uint8", "dilate_mask", "DEFAULT_MODEL", "DEFAULT_GDN_MODEL"]
