"""Corruption synthesis: main paper Eq. 1 with an alpha-blended boundary, and seven noise patterns.

``I = gt * soft_valid + N * (1 - soft_valid)`` (main Eq. 1, Sec. 4.1): ``gt`` the clean photo,
``N`` the noise content, ``soft_valid`` the valid mask smoothed so the corruption has no hard
edge.  The label stays the hard hole mask (True = hole).

Patterns (how each fills ``N``; SPEC.md section 1, see ``docs/corruptions.md``):

* ``image`` - a random crop of a *different* photo from a noise pool (the paper's training pattern);
* ``constant`` - one fixed colour for every image (authors' code ``noise_type: constant``,
  default value 0 in [-1, 1], i.e. mid grey 128);
* ``single_color`` - one random colour per image (authors' ``random_single_color``; this is the
  paper's "random constant" unseen pattern of main Tables 4-5);
* ``noise`` - i.i.d. uniform noise per pixel and channel (authors' ``random_noise``);
* ``graffiti`` - coloured free-hand anti-aliased strokes;
* ``text`` - words in (handwriting) fonts at random size, angle and colour;
* ``logo`` - semi-transparent alpha logos (watermarks, main Table 7).

The first four use a free-form mask (:mod:`.masks`) whose ``soft_valid`` is a Gaussian blur of the
valid mask (authors: PIL ``GaussianBlur(radius=3)`` at 256 px, i.e. sigma = 3 px; scaled here
with the shorter image side).  ``graffiti``/``text``/``logo`` carry their own anti-aliased alpha:
``soft_valid = 1 - alpha`` and ``hole = alpha >= 0.5``; they are limited to buckets up to 30 %.
"""

from __future__ import annotations

import colorsys
import functools
import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from ..errors import UserError
from .masks import Bucket, draw_round_polyline, grow_to_bucket, polyline_prefix, sample_mask

PATTERNS = ("image", "constant", "single_color", "noise", "graffiti", "text", "logo")
#: Patterns whose own anti-aliased alpha is the soft mask (label = alpha >= 0.5).
ALPHA_PATTERNS = ("graffiti", "text", "logo")
#: Highest bucket end allowed for ALPHA_PATTERNS (their hole ratio is naturally small).
ALPHA_MAX_HOLE = 0.30
#: Authors' blur: sigma 3 px at 256 px (PIL's GaussianBlur radius is the standard deviation).
DEFAULT_BLUR_SIGMA = 3.0
REFERENCE_SIDE = 256
#: soft_valid values this close to 0 or 1 are snapped (invisible after uint8 rounding), so the
#: formula gives exactly N deep inside holes and exactly gt far from them.
SNAP = 1e-3
SUPERSAMPLE = 4  # graffiti strokes are drawn at 4x and box-filtered down: anti-aliased alpha

# Pattern parameters (fractions of the shorter image side unless noted).
GRAFFITI_WIDTH = (0.015, 0.045)
GRAFFITI_STEP = (0.03, 0.07)
GRAFFITI_STEPS = (6, 20)
GRAFFITI_TURN_SD = 0.45  # radians per step: how wiggly the hand is
TEXT_SIZE = (0.06, 0.16)
TEXT_ANGLE = 35.0        # degrees, uniform in +-TEXT_ANGLE
LOGO_SIDE = (0.20, 0.50)
LOGO_OPACITY = (0.60, 0.95)  # must exceed 0.5, or no pixel would be labelled a hole

WORDS = (
    "hello", "world", "summer", "memory", "river", "garden", "paris", "love", "sunday", "dream",
    "coffee", "music", "light", "ocean", "forest", "hope", "winter", "happy", "birthday", "travel",
    "mountain", "family", "friends", "holiday", "secret", "city", "morning", "night", "star",
    "road", "home", "photo", "wild", "yes", "no", "maybe", "free", "blue", "red", "gold", "stop",
    "go", "today", "tomorrow", "always", "never", "smile", "look", "here", "there", "wow", "cool",
    "best", "day", "ever", "nice", "view", "kiss", "team", "2023", "xoxo", "lol", "#tbt", "art",
)


# ----------------------------------------------------------------------------- options / result
@dataclass
class CorruptionOptions:
    """Knobs of :func:`corrupt`.

    Attributes:
        blur_sigma: sigma of the boundary blur in pixels *at 256 px*; scaled by ``min(H, W) / 256``.
        constant_color: RGB 0-255 of the ``constant`` pattern (authors' default: mid grey).
        mask_kind: ``brush``, ``rect`` or ``mixed`` (see :func:`masks.sample_mask`).
    """

    blur_sigma: float = DEFAULT_BLUR_SIGMA
    constant_color: tuple[int, int, int] = (128, 128, 128)
    mask_kind: str = "brush"


@dataclass
class Corrupted:
    """One synthesised corruption.

    Attributes:
        image: ``H x W x 3`` uint8, the corrupted image ``I`` of Eq. 1.
        hole: ``H x W`` bool, True = hole (the label).
        soft_valid: ``H x W`` float32 in [0, 1], the blending weight of the clean image.
        target: ``H x W x 3`` uint8, what a restorer should output (the clean photo; the noise
            photo in a bidirectional sample).
        noise: ``H x W x 3`` uint8, the noise content ``N``.
        meta: JSON-serialisable details (pattern, bucket, hole_ratio, colours, sources, ...).
    """

    image: np.ndarray
    hole: np.ndarray
    soft_valid: np.ndarray
    target: np.ndarray
    noise: np.ndarray
    meta: dict = field(default_factory=dict)

    @property
    def hole_ratio(self) -> float:
        return float(np.count_nonzero(self.hole)) / self.hole.size


def uncorrupted(clean: np.ndarray) -> Corrupted:
    """A clean photo as a :class:`Corrupted` with nothing corrupted (pattern and bucket ``none``):
    an all-False hole, ``image`` and ``target`` = ``clean`` (``H x W x 3`` uint8)."""
    h, w = clean.shape[:2]
    return Corrupted(image=clean, hole=np.zeros((h, w), dtype=bool), soft_valid=np.ones((h, w), np.float32),
                     target=clean, noise=clean, meta={"pattern": "none", "bucket": "none", "hole_ratio": 0.0})


def check_pattern(pattern: str) -> None:
    if pattern not in PATTERNS:
        raise UserError(f"unknown corruption pattern '{pattern}': choose from {', '.join(PATTERNS)}")


def check_pattern_bucket(pattern: str, bucket: Bucket) -> None:
    """UserError for an unknown pattern or an alpha pattern in a bucket above 30 %."""
    check_pattern(pattern)
    if pattern in ALPHA_PATTERNS and bucket.high > ALPHA_MAX_HOLE + 1e-9:
        raise UserError(f"pattern '{pattern}' supports hole-ratio buckets up to {int(ALPHA_MAX_HOLE * 100)} % "
                        f"only, not {bucket.name}: its strokes cannot cover more of an image")


def allowed_buckets(pattern: str, buckets: Sequence[Bucket]) -> list[Bucket]:
    """The buckets ``pattern`` can be made in (alpha patterns: those up to 30 %), in order.

    Raises UserError (the :func:`check_pattern_bucket` message) when none is left.
    """
    check_pattern(pattern)
    allowed = [b for b in buckets if pattern not in ALPHA_PATTERNS or b.high <= ALPHA_MAX_HOLE + 1e-9]
    if not allowed and buckets:
        check_pattern_bucket(pattern, buckets[0])
    return allowed


# ----------------------------------------------------------------------------- Eq. 1
def blur_sigma_for(hw: tuple[int, int], sigma_at_256: float = DEFAULT_BLUR_SIGMA) -> float:
    """Boundary blur in pixels for an ``H x W`` image: ``sigma_at_256 * min(H, W) / 256``."""
    return float(sigma_at_256) * min(hw) / REFERENCE_SIDE


def soft_valid_mask(hole: np.ndarray, sigma: float) -> np.ndarray:
    """Alpha-blended valid mask (main Sec. 4.1): Gaussian blur of ``valid = ~hole``.

    Args:
        hole: ``H x W`` bool, True = hole.
        sigma: blur standard deviation in pixels (0 = hard edge).

    Returns:
        ``H x W`` float32 in [0, 1]; exactly 0 more than ``4 sigma`` inside a hole, exactly 1
        more than ``4 sigma`` away from any hole (values within 1e-3 of 0/1 are snapped).
    """
    valid = (~hole.astype(bool)).astype(np.float32)
    if sigma <= 0:
        return valid
    soft = ndimage.gaussian_filter(valid, sigma=sigma, mode="nearest", truncate=4.0)
    soft[soft < SNAP] = 0.0
    soft[soft > 1.0 - SNAP] = 1.0
    return soft.astype(np.float32, copy=False)


def blend(clean: np.ndarray, noise: np.ndarray, soft_valid: np.ndarray) -> np.ndarray:
    """Main Eq. 1: ``round(clean * soft_valid + noise * (1 - soft_valid))`` as ``H x W x 3`` uint8.

    ``clean``/``noise``: ``H x W x 3`` uint8 (or float in 0-255); ``soft_valid``: ``H x W`` in [0, 1].
    """
    sv = soft_valid[..., None].astype(np.float32)
    out = clean.astype(np.float32) * sv + noise.astype(np.float32) * (1.0 - sv)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- crops
def resize_crop(photo: np.ndarray, hw: tuple[int, int], box: tuple[float, float, float, float]) -> np.ndarray:
    """Resize the region ``box = (x0, y0, x1, y1)`` of ``photo`` (``H x W x 3`` uint8) to ``hw``."""
    h, w = hw
    if box == (0, 0, photo.shape[1], photo.shape[0]) and photo.shape[:2] == (h, w):
        return photo
    image = Image.fromarray(photo)
    return np.asarray(image.resize((w, h), Image.Resampling.BICUBIC, box=box))


def random_crop_box(src_hw: tuple[int, int], hw: tuple[int, int], rng: np.random.Generator,
                    zoom: tuple[float, float] = (1.0, 1.0)) -> tuple[float, float, float, float]:
    """A random box of ``src_hw`` with the aspect of ``hw``; ``zoom`` > 1 takes a smaller part of the photo.

    ``zoom = 1`` takes the largest box of that aspect (the short side fills the crop).
    """
    sh, sw = src_hw
    h, w = hw
    scale = min(sh / h, sw / w) / float(rng.uniform(*zoom))  # source pixels per output pixel
    bh, bw = h * scale, w * scale
    y0 = float(rng.uniform(0, sh - bh)) if sh > bh else 0.0
    x0 = float(rng.uniform(0, sw - bw)) if sw > bw else 0.0
    return (x0, y0, x0 + bw, y0 + bh)


def center_crop_box(src_hw: tuple[int, int], hw: tuple[int, int]) -> tuple[float, float, float, float]:
    """The largest centred box of ``src_hw`` with the aspect of ``hw``."""
    sh, sw = src_hw
    h, w = hw
    scale = min(sh / h, sw / w)
    bh, bw = h * scale, w * scale
    y0, x0 = (sh - bh) / 2, (sw - bw) / 2
    return (x0, y0, x0 + bw, y0 + bh)


# ----------------------------------------------------------------------------- noise pool
class NoisePool:
    """Photos whose crops are pasted by the ``image`` pattern.

    Args:
        items: photo paths and/or ``H x W x 3`` uint8 arrays.
        load: ``path -> H x W x 3 uint8`` (e.g. a caching loader); default reads the file.
    """

    def __init__(self, items: Sequence[Union[str, Path, np.ndarray]],
                 load: Optional[Callable[[Path], np.ndarray]] = None):
        self.items = list(items)
        self.keys = [f"array:{i}" if isinstance(x, np.ndarray) else str(Path(x)) for i, x in enumerate(self.items)]
        self._load = load if load is not None else read_rgb

    def __len__(self) -> int:
        return len(self.items)

    def photo(self, index: int) -> np.ndarray:
        item = self.items[index]
        return item if isinstance(item, np.ndarray) else self._load(Path(item))

    def sample(self, rng: np.random.Generator, hw: tuple[int, int],
               exclude: Optional[Union[str, Path]] = None) -> tuple[np.ndarray, str]:
        """A random crop (zoom 1-1.5x, random flip) of a random photo other than ``exclude``.

        Returns ``(H x W x 3 uint8, key of the photo used)``.
        """
        excluded = None if exclude is None else str(Path(exclude))
        choices = [i for i, k in enumerate(self.keys) if k != excluded]
        if not choices:
            raise UserError("the 'image' pattern needs a noise pool with at least one photo other than "
                            "the one being corrupted")
        index = choices[int(rng.integers(len(choices)))]
        photo = self.photo(index)
        crop = resize_crop(photo, hw, random_crop_box(photo.shape[:2], hw, rng, zoom=(1.0, 1.5)))
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        return np.ascontiguousarray(crop), self.keys[index]


def read_rgb(path: Path) -> np.ndarray:
    """``H x W x 3`` uint8 RGB of an image file (EXIF orientation applied; UserError if unreadable)."""
    from ..io import read_image

    return read_image(path).rgb


# ----------------------------------------------------------------------------- assets
@dataclass
class FontAsset:
    """A font file (``path``) or Pillow's built-in font (``path=None``)."""

    name: str
    path: Optional[str]
    style: str = "plain"  # "handwriting" | "plain"
    sha256: str = ""


@dataclass
class LogoAsset:
    """An alpha logo: a PNG ``path`` or an in-memory ``rgba`` array (``h x w x 4`` uint8)."""

    name: str
    path: Optional[str] = None
    rgba: Optional[np.ndarray] = None
    sha256: str = ""

    def pixels(self) -> np.ndarray:
        if self.rgba is None:
            self.rgba = _read_rgba(self.path)
        return self.rgba


@functools.lru_cache(maxsize=64)
def _read_rgba(path: str) -> np.ndarray:
    try:
        with Image.open(path) as im:
            im = im.convert("RGBA")
            if max(im.size) > 512:  # logos are pasted at most 0.5 x the image side
                im.thumbnail((512, 512), Image.Resampling.LANCZOS)
            return np.asarray(im).copy()
    except OSError as exc:
        raise UserError(f"cannot read logo {path}: {exc}") from None


def _sha256(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@dataclass
class Assets:
    """Fonts and logos for ``text``/``logo``; :meth:`load` reads a ``blindinpaint data assets`` folder."""

    fonts: list[FontAsset] = field(default_factory=list)
    logos: list[LogoAsset] = field(default_factory=list)

    @classmethod
    def builtin(cls) -> "Assets":
        """Pillow's built-in font only (no downloads); no logos."""
        import PIL

        return cls(fonts=[FontAsset("pillow-default", None, "plain", f"pillow-{PIL.__version__}")], logos=[])

    @classmethod
    def load(cls, folder: Union[str, Path, None]) -> "Assets":
        """Read an assets folder (``manifest.json`` with ``fonts``/``logos``); None -> :meth:`builtin`.

        Font files are checked against the SHA-256 in the manifest (text pixels depend on them).
        """
        if folder is None:
            return cls.builtin()
        from .photos import load_assets  # the folder's builder owns its format

        manifest = load_assets(folder)
        fonts = []
        for entry in manifest["fonts"]:
            digest = _sha256(entry["file"])
            if entry.get("sha256") and entry["sha256"] != digest:
                raise UserError(f"font {entry['file']} does not match the SHA-256 in its assets manifest")
            fonts.append(FontAsset(Path(entry["file"]).name, entry["file"], entry.get("style", "plain"), digest))
        logos = [LogoAsset(Path(e["file"]).name, e["file"], None, e.get("sha256", "")) for e in manifest["logos"]]
        if not fonts:
            fonts = cls.builtin().fonts
        return cls(fonts=fonts, logos=logos)

    def text_fonts(self) -> list[FontAsset]:
        """Handwriting fonts when there are any (the paper's text corruptions look hand-written), else all."""
        fonts = self.fonts or Assets.builtin().fonts
        hand = [f for f in fonts if f.style == "handwriting"]
        return hand or fonts

    def fingerprint(self) -> dict:
        """``{"fonts": {name: sha256}, "logos": {name: sha256}}`` for manifests."""
        return {"fonts": {f.name: f.sha256 for f in self.fonts},
                "logos": {g.name: g.sha256 for g in self.logos}}


@functools.lru_cache(maxsize=256)
def _font(path: Optional[str], size: int) -> ImageFont.FreeTypeFont:
    if path is None:
        return ImageFont.load_default(size)
    try:
        return ImageFont.truetype(path, size)
    except OSError as exc:
        raise UserError(f"cannot load font {path}: {exc}") from None


# ----------------------------------------------------------------------------- alpha shapes
def _random_color(rng: np.random.Generator, vivid: bool = False) -> np.ndarray:
    if not vivid:
        return rng.integers(0, 256, size=3).astype(np.float32)
    hue, sat, val = rng.random(), rng.uniform(0.6, 1.0), rng.uniform(0.6, 1.0)
    return np.array(colorsys.hsv_to_rgb(hue, sat, val), dtype=np.float32) * 255


def _chaikin(points: np.ndarray, iterations: int = 2) -> np.ndarray:
    """Chaikin corner cutting: a smooth curve through a control polygon ``(N, 2)``."""
    for _ in range(iterations):
        q = 0.75 * points[:-1] + 0.25 * points[1:]
        r = 0.25 * points[:-1] + 0.75 * points[1:]
        points = np.vstack([points[:1], np.stack([q, r], axis=1).reshape(-1, 2), points[-1:]])
    return points


@dataclass
class GraffitiStroke:
    """A free-hand stroke: a smoothed random walk with a wandering heading, drawn anti-aliased."""

    points: np.ndarray
    width: float
    color: np.ndarray
    hw: tuple[int, int]

    @classmethod
    def random(cls, hw: tuple[int, int], rng: np.random.Generator) -> "GraffitiStroke":
        h, w = hw
        side = min(h, w)
        steps = int(rng.integers(GRAFFITI_STEPS[0], GRAFFITI_STEPS[1] + 1))
        heading = rng.uniform(0, 2 * math.pi) + np.cumsum(rng.normal(0, GRAFFITI_TURN_SD, size=steps))
        lengths = rng.uniform(*GRAFFITI_STEP, size=steps) * side
        moves = np.stack([np.cos(heading), np.sin(heading)], axis=1) * lengths[:, None]
        start = rng.uniform((0.1 * w, 0.1 * h), (0.9 * w, 0.9 * h))
        control = np.vstack([start, start + np.cumsum(moves, axis=0)])
        width = max(1.0, float(rng.uniform(*GRAFFITI_WIDTH)) * side)
        return cls(_chaikin(control), width, _random_color(rng, vivid=True), hw)

    def alpha(self, t: float) -> np.ndarray:
        h, w = self.hw
        canvas = Image.new("L", (w * SUPERSAMPLE, h * SUPERSAMPLE), 0)
        points = polyline_prefix(self.points, t) * SUPERSAMPLE
        draw_round_polyline(ImageDraw.Draw(canvas), points, self.width * SUPERSAMPLE, 255)
        return np.asarray(canvas.reduce(SUPERSAMPLE), dtype=np.float32) / 255.0

    def colour(self, t: float):
        return self.color


def _place(patch: np.ndarray, hw: tuple[int, int], x0: int, y0: int) -> np.ndarray:
    """Paste ``patch`` (``h x w [x C]``) into a zero ``H x W [x C]`` array at ``(x0, y0)``, clipped to the frame."""
    h, w = hw
    out = np.zeros((h, w) + patch.shape[2:], dtype=np.float32)
    ph, pw = patch.shape[:2]
    ys, xs = max(0, -y0), max(0, -x0)
    ye, xe = min(ph, h - y0), min(pw, w - x0)
    if ye > ys and xe > xs:
        out[y0 + ys:y0 + ye, x0 + xs:x0 + xe] = patch[ys:ye, xs:xe]
    return out


@dataclass
class TextWord:
    """A word in a font, rotated, at a random place; growing ``t`` writes more of its letters."""

    word: str
    font: FontAsset
    size: int
    angle: float
    stroke: int
    color: np.ndarray
    center: np.ndarray
    hw: tuple[int, int]

    @classmethod
    def random(cls, hw: tuple[int, int], rng: np.random.Generator, fonts: Sequence[FontAsset]) -> "TextWord":
        side = min(hw)
        font = fonts[int(rng.integers(len(fonts)))]
        size = max(8, int(round(rng.uniform(*TEXT_SIZE) * side)))
        stroke = int(rng.integers(0, max(1, side // 128) + 1))
        center = rng.uniform((0, 0), (hw[1], hw[0]))
        return cls(WORDS[int(rng.integers(len(WORDS)))], font, size, float(rng.uniform(-TEXT_ANGLE, TEXT_ANGLE)),
                   stroke, _random_color(rng), center, hw)

    def alpha(self, t: float) -> np.ndarray:
        font = _font(self.font.path, self.size)
        left, top, right, bottom = font.getbbox(self.word, stroke_width=self.stroke)
        pad = 2 + self.stroke
        canvas = Image.new("L", (right - left + 2 * pad, bottom - top + 2 * pad), 0)
        shown = self.word[:max(1, math.ceil(t * len(self.word)))]  # a prefix is drawn where the full word is
        ImageDraw.Draw(canvas).text((pad - left, pad - top), shown, fill=255, font=font,
                                    stroke_width=self.stroke, stroke_fill=255)
        canvas = canvas.rotate(self.angle, resample=Image.Resampling.BICUBIC, expand=True)
        patch = np.asarray(canvas, dtype=np.float32) / 255.0
        x0 = int(round(self.center[0] - patch.shape[1] / 2))
        y0 = int(round(self.center[1] - patch.shape[0] / 2))
        return _place(patch, self.hw, x0, y0)

    def colour(self, t: float):
        return self.color


@dataclass
class LogoStamp:
    """A semi-transparent logo; growing ``t`` scales it about its centre."""

    logo: LogoAsset
    side: float
    opacity: float
    center: np.ndarray
    hw: tuple[int, int]
    _cache: dict = field(default_factory=dict, repr=False)

    @classmethod
    def random(cls, hw: tuple[int, int], rng: np.random.Generator, logos: Sequence[LogoAsset]) -> "LogoStamp":
        logo = logos[int(rng.integers(len(logos)))]
        side = float(rng.uniform(*LOGO_SIDE)) * min(hw)
        center = rng.uniform((0, 0), (hw[1], hw[0]))
        return cls(logo, side, float(rng.uniform(*LOGO_OPACITY)), center, hw)

    def _render(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        if t not in self._cache:
            rgba = Image.fromarray(self.logo.pixels())
            scale = max(4.0, self.side * t) / max(rgba.size)
            size = (max(1, round(rgba.size[0] * scale)), max(1, round(rgba.size[1] * scale)))
            pixels = np.asarray(rgba.resize(size, Image.Resampling.LANCZOS), dtype=np.float32)
            x0 = int(round(self.center[0] - size[0] / 2))
            y0 = int(round(self.center[1] - size[1] / 2))
            alpha = _place(pixels[..., 3] / 255.0 * self.opacity, self.hw, x0, y0)
            colour = _place(pixels[..., :3], self.hw, x0, y0)
            self._cache.clear()
            self._cache[t] = (alpha, colour)
        return self._cache[t]

    def alpha(self, t: float) -> np.ndarray:
        return self._render(t)[0]

    def colour(self, t: float):
        return self._render(t)[1]


def _composite_alpha_shapes(hw, bucket: Bucket, rng: np.random.Generator, new_shape, what: str):
    """Grow coloured alpha shapes into the bucket; returns (alpha ``H x W``, colour ``H x W x 3`` float, shapes)."""
    h, w = hw
    alpha_total = np.zeros((h, w), dtype=np.float32)
    colour = np.zeros((h, w, 3), dtype=np.float32)
    kept = []

    def on_commit(shape, t, a):
        nonlocal alpha_total, colour
        # "over" compositing of (colour c, alpha a) onto (colour, alpha_total), un-premultiplied
        new_total = alpha_total + a - alpha_total * a
        c = np.asarray(shape.colour(t), dtype=np.float32)
        premult = c * a[..., None] + colour * (alpha_total * (1 - a))[..., None]
        colour = np.divide(premult, new_total[..., None], out=np.zeros_like(premult),
                           where=new_total[..., None] > 0)
        alpha_total = new_total
        kept.append(shape)

    grow_to_bucket(new_shape, hw, bucket, rng, on_commit=on_commit, what=what)
    return alpha_total, colour, kept


# ----------------------------------------------------------------------------- corrupt
def corrupt(
    clean: np.ndarray,
    pattern: str,
    bucket: Union[Bucket, str],
    rng: np.random.Generator,
    noise_pool: Optional[NoisePool] = None,
    assets: Optional[Assets] = None,
    *,
    exclude: Optional[Union[str, Path]] = None,
    options: Optional[CorruptionOptions] = None,
    bidirectional: bool = False,
) -> Corrupted:
    """Corrupt a clean photo with one pattern at a hole ratio inside ``bucket`` (main Eq. 1).

    Args:
        clean: ``H x W x 3`` uint8 RGB.
        pattern: one of :data:`PATTERNS`.
        bucket: hole-ratio bucket (``Bucket`` or ``"0-30"``); alpha patterns only up to 30 %.
        rng: all randomness comes from this generator.
        noise_pool: photos for ``image`` (required for it).
        assets: fonts/logos (``text`` falls back to Pillow's font; ``logo`` needs logos).
        exclude: key/path of ``clean`` in ``noise_pool``, so ``image`` pastes a *different* photo.
        options: :class:`CorruptionOptions`.
        bidirectional: ``image`` only (main Sec. 4.3.1): return the swapped view - same corrupted
            image, target = the noise photo, hole = the inverted mask (its ratio is ``1 - r``).

    Returns:
        :class:`Corrupted` (hole True = corrupted; ``meta["bucket"]`` is the bucket the mask was drawn in).
    """
    options = options or CorruptionOptions()
    bucket = Bucket.parse(bucket) if isinstance(bucket, str) else bucket
    check_pattern_bucket(pattern, bucket)
    if bidirectional and pattern != "image":
        raise UserError(f"the bidirectional setting needs the 'image' pattern, not '{pattern}'")
    if clean.ndim != 3 or clean.shape[2] != 3 or clean.dtype != np.uint8:
        raise ValueError(f"clean must be H x W x 3 uint8, got {clean.dtype} {clean.shape}")
    hw = clean.shape[:2]
    meta: dict = {"pattern": pattern, "bucket": bucket.name}

    if pattern in ALPHA_PATTERNS:
        new_shape = _alpha_shape_factory(pattern, hw, assets)
        alpha, colour, shapes = _composite_alpha_shapes(hw, bucket, rng, new_shape, pattern)
        hole = alpha >= 0.5
        soft_valid = (1.0 - alpha).astype(np.float32)
        noise = np.clip(np.rint(colour), 0, 255).astype(np.uint8)
        image = blend(clean, noise, soft_valid)  # Eq. 1 holds exactly with the returned N
        meta.update(_alpha_meta(pattern, shapes))
    else:
        hole = sample_mask(hw, bucket, rng, kind=options.mask_kind)
        sigma = blur_sigma_for(hw, options.blur_sigma)
        soft_valid = soft_valid_mask(hole, sigma)
        noise = _fill(pattern, hw, rng, noise_pool, exclude, options, meta)
        image = blend(clean, noise, soft_valid)
        meta["blur_sigma"] = round(sigma, 4)
        meta["mask_kind"] = options.mask_kind

    target = clean
    if bidirectional:
        target, hole, soft_valid = noise, ~hole, (1.0 - soft_valid).astype(np.float32)
    meta["bidirectional"] = bool(bidirectional)
    meta["hole_ratio"] = float(np.count_nonzero(hole)) / hole.size
    return Corrupted(image=image, hole=hole, soft_valid=soft_valid, target=target, noise=noise, meta=meta)


def _fill(pattern, hw, rng, noise_pool, exclude, options, meta) -> np.ndarray:
    """The noise content ``N`` (``H x W x 3`` uint8) of the mask-based patterns."""
    h, w = hw
    if pattern == "image":
        if noise_pool is None or len(noise_pool) == 0:
            raise UserError("the 'image' pattern needs a noise pool of photos")
        noise, key = noise_pool.sample(rng, hw, exclude=exclude)
        meta["noise_source"] = key
        return noise
    if pattern == "constant":
        color = np.asarray(options.constant_color, dtype=np.uint8)
    elif pattern == "single_color":
        color = rng.integers(0, 256, size=3).astype(np.uint8)
    else:  # "noise": i.i.d. uniform
        return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    meta["color"] = [int(c) for c in color]
    return np.broadcast_to(color, (h, w, 3)).copy()


def _alpha_shape_factory(pattern: str, hw, assets: Optional[Assets]):
    if pattern == "graffiti":
        return lambda rng: GraffitiStroke.random(hw, rng)
    if pattern == "text":
        fonts = (assets or Assets.builtin()).text_fonts()
        return lambda rng: TextWord.random(hw, rng, fonts)
    logos = assets.logos if assets is not None else []
    if not logos:
        raise UserError("the 'logo' pattern needs logos: pass an assets folder made by "
                        "'blindinpaint data assets DIR' (--assets DIR)")
    return lambda rng: LogoStamp.random(hw, rng, logos)


def _alpha_meta(pattern: str, shapes) -> dict:
    if pattern == "graffiti":
        return {"strokes": len(shapes)}
    if pattern == "text":
        return {"words": [s.word for s in shapes], "fonts": sorted({s.font.name for s in shapes})}
    return {"logos": [s.logo.name for s in shapes]}


__all__ = ["PATTERNS", "ALPHA_PATTERNS", "CorruptionOptions", "Corrupted", "NoisePool", "Assets", "FontAsset",
           "LogoAsset", "corrupt", "blend", "soft_valid_mask", "blur_sigma_for", "check_pattern",
           "check_pattern_bucket", "allowed_buckets", "resize_crop", "random_crop_box", "center_crop_box", "read_rgb",
           "uncorrupted"]
