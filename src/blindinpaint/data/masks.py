"""Free-form hole masks: brush strokes, rectangles, hole-ratio buckets, fixed test sets.

Convention: a mask is ``H x W`` bool with **True = hole** (corrupted), False = valid.

The shapes follow the authors' brush generator (SPEC.md section 1, main paper Sec. 4.1, which
uses the NVIDIA irregular masks; not obtainable here): each stroke has 4-18 turns, a constant
width of 2-10 % of the shorter image side and segments of 10-25 % of that side, turning by
alternating angles in [4 pi / 15, 8 pi / 15]; vertices get round joints.  Rectangles have sides of
20-80 % of the image side.  Every mask gets a random rotation and random flips.

Hole-ratio buckets.  The papers report results per hole-ratio bucket (HCL: 0-30/30-60 %,
0-20/20-40/40-60 %; GDN: (1,10] ... (50,60] %).  Instead of generating masks and throwing
away those outside the bucket, :func:`sample_mask` draws a target ratio uniformly inside the
bucket, adds whole shapes (the authors draw 1-9 strokes; here strokes are added until the target
is reached, so high buckets get more of them) and grows the last shape only as far as needed
(binary search on the fraction of its length drawn).  The result always lies in the bucket.

:func:`grow_to_bucket` is the shared engine; :mod:`blindinpaint.data.corruptions` reuses it for
graffiti, text and logos, whose "shapes" carry an anti-aliased alpha instead of a binary mask.
"""

from __future__ import annotations

import math
import re
import zlib
from dataclasses import dataclass
from typing import Callable, Iterable, Protocol, Sequence

import numpy as np
from PIL import Image, ImageDraw

from ..errors import UserError

#: Largest supported upper end of a bucket (fraction).  Above it a "corruption" covers most of
#: the image; the papers never go beyond 60 %.
MAX_BUCKET_HIGH = 0.80
#: Narrowest supported bucket (fraction of the image).
MIN_BUCKET_WIDTH = 0.01

# Authors' brush parameters (SPEC.md section 1), as fractions of the shorter image side.
BRUSH_TURNS = (4, 18)
BRUSH_WIDTH = (0.02, 0.10)
BRUSH_SEGMENT = (0.10, 0.25)
BRUSH_ANGLE = (4 * math.pi / 15, 8 * math.pi / 15)
RECT_SIDE = (0.20, 0.80)
MASK_KINDS = ("brush", "rect", "mixed")
MIXED_RECT_PROBABILITY = 0.2  # "mixed": share of shapes that are rectangles



# ----------------------------------------------------------------------------- buckets
@dataclass(frozen=True)
class Bucket:
    """A hole-ratio interval ``(low, high]`` as fractions of the image (``low = 0`` still needs >= 1 hole pixel).

    ``name`` is the percent form used on the command line and in manifests, e.g. ``"0-30"``.
    """

    low: float
    high: float

    @property
    def name(self) -> str:
        return f"{_fmt_percent(self.low)}-{_fmt_percent(self.high)}"

    def contains(self, ratio: float) -> bool:
        """True when ``low < ratio <= high`` (the GDN convention ``(1, 10]``)."""
        return self.low < ratio <= self.high

    def __str__(self) -> str:
        return self.name

    @classmethod
    def parse(cls, text: str) -> "Bucket":
        """``"0-30"`` or ``"12.5-20"`` (percent) -> Bucket; UserError for malformed or unsupported ranges."""
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*-\s*(\d+(?:\.\d+)?)\s*%?\s*", str(text))
        if not match:
            raise UserError(f"bad hole-ratio bucket '{text}': expected LOW-HIGH in percent, e.g. 0-30")
        low, high = float(match.group(1)) / 100, float(match.group(2)) / 100
        if not low < high:
            raise UserError(f"bad hole-ratio bucket '{text}': LOW must be smaller than HIGH")
        if high > MAX_BUCKET_HIGH + 1e-9:
            raise UserError(f"hole-ratio bucket '{text}' is not supported: buckets must lie within "
                            f"0-{_fmt_percent(MAX_BUCKET_HIGH)} % (a mask that hides most of the image "
                            f"is not a corruption the papers use)")
        if high - low < MIN_BUCKET_WIDTH - 1e-9:
            raise UserError(f"hole-ratio bucket '{text}' is too narrow: it must span at least "
                            f"{_fmt_percent(MIN_BUCKET_WIDTH)} %")
        return cls(round(low, 6), round(high, 6))


def _fmt_percent(fraction: float) -> str:
    value = round(fraction * 100, 4)
    return str(int(value)) if value == int(value) else f"{value:g}"


#: Named bucket sets of the papers.
BUCKET_SETS: dict[str, tuple[str, ...]] = {
    "hcl2": ("0-30", "30-60"),                                 # main Tables 1, 4, 6
    "hcl3": ("0-20", "20-40", "40-60"),                        # main Tables 3, 5
    "gdn": ("1-10", "10-20", "20-30", "30-40", "40-50", "50-60"),  # GDN Table 1
}


def parse_buckets(spec: str | Iterable[str]) -> list[Bucket]:
    """Comma list (or list) of buckets or set names (``hcl2``, ``hcl3``, ``gdn``) -> Buckets, in order."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    buckets: list[Bucket] = []
    for item in (str(i).strip() for i in items):
        if not item:
            continue
        names = BUCKET_SETS.get(item, (item,))
        buckets.extend(Bucket.parse(n) for n in names)
    if not buckets:
        raise UserError("no hole-ratio bucket given")
    return buckets


# ----------------------------------------------------------------------------- seeding
def stable_hash(text: str) -> int:
    """A process-independent 32-bit hash of a string (Python's ``hash`` is salted per run)."""
    return zlib.crc32(str(text).encode("utf-8"))


def make_rng(*keys: int | str) -> np.random.Generator:
    """A NumPy generator seeded from a tuple of ints/strings (strings via :func:`stable_hash`)."""
    words = [stable_hash(k) if isinstance(k, str) else int(k) for k in keys]
    if any(w < 0 for w in words):
        raise ValueError(f"seed keys must be non-negative, got {keys}")
    return np.random.default_rng(words)


# ----------------------------------------------------------------------------- shapes
class Shape(Protocol):
    """Something drawn onto the image that can be grown from nothing (t -> 0) to full size (t = 1)."""

    def alpha(self, t: float) -> np.ndarray:
        """``H x W`` float32 coverage in [0, 1] of the shape drawn to fraction ``t`` in (0, 1]."""


def _hw(size) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    h, w = size
    return int(h), int(w)


def polyline_prefix(points: np.ndarray, t: float) -> np.ndarray:
    """The first fraction ``t`` (by arc length) of a polyline ``(N, 2)``; always >= 2 points."""
    seg = np.linalg.norm(np.diff(points, axis=0), axis=1)
    total = float(seg.sum())
    if t >= 1.0 or total == 0.0:
        return points
    target = max(t, 0.0) * total
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    k = int(np.searchsorted(cum, target, side="right"))  # points[:k] lie within the prefix
    k = min(max(k, 1), len(points) - 1)
    frac = (target - cum[k - 1]) / max(seg[k - 1], 1e-9)
    end = points[k - 1] + frac * (points[k] - points[k - 1])
    return np.vstack([points[:k], end[None]])


def draw_round_polyline(draw: ImageDraw.ImageDraw, points: np.ndarray, width: float, fill) -> None:
    """A polyline of constant ``width`` with round joints and caps (disc at every vertex)."""
    xy = [tuple(p) for p in points.tolist()]
    w = max(int(round(width)), 1)
    if len(xy) > 1:
        draw.line(xy, fill=fill, width=w)
    r = w / 2
    for x, y in xy:
        draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)


@dataclass
class BrushStroke:
    """One brush stroke of the authors' generator: a zig-zag polyline of constant width."""

    points: np.ndarray  # (N, 2) x, y in pixels
    width: float
    hw: tuple[int, int]

    @classmethod
    def random(cls, hw: tuple[int, int], rng: np.random.Generator, angle: float = 0.0) -> "BrushStroke":
        h, w = hw
        side = min(h, w)
        turns = int(rng.integers(BRUSH_TURNS[0], BRUSH_TURNS[1] + 1))
        width = max(1, int(rng.integers(int(BRUSH_WIDTH[0] * side), int(BRUSH_WIDTH[1] * side) + 1)))
        lengths = rng.uniform(BRUSH_SEGMENT[0] * side, BRUSH_SEGMENT[1] * side, size=turns + 1)
        angles = rng.uniform(*BRUSH_ANGLE, size=turns + 1)
        angles[0::2] = 2 * math.pi - angles[0::2]  # alternate turning direction: zig-zag
        start = rng.uniform((0, 0), (w, h))
        points = [start]
        for length, a in zip(lengths, angles):  # sequential clamp to the frame, as the authors do
            x, y = points[-1]
            points.append(np.clip((x + length * math.cos(a), y + length * math.sin(a)), 0, (w, h)))
        points = _rotate(np.asarray(points, dtype=np.float64), angle, hw)
        return cls(points=points, width=float(width), hw=hw)

    def alpha(self, t: float) -> np.ndarray:
        canvas = Image.new("L", (self.hw[1], self.hw[0]), 0)
        draw_round_polyline(ImageDraw.Draw(canvas), polyline_prefix(self.points, t), self.width, 255)
        return np.asarray(canvas, dtype=np.float32) / 255.0


@dataclass
class Rectangle:
    """A (rotated) rectangle; growing ``t`` scales it about its centre."""

    center: np.ndarray  # (2,) x, y
    half: np.ndarray    # (2,) half width, half height
    angle: float
    hw: tuple[int, int]

    @classmethod
    def random(cls, hw: tuple[int, int], rng: np.random.Generator, angle: float = 0.0) -> "Rectangle":
        h, w = hw
        side = min(h, w)
        half = rng.uniform(RECT_SIDE[0] * side, RECT_SIDE[1] * side, size=2) / 2
        center = rng.uniform(half, (w - half[0], h - half[1]))
        return cls(center=center, half=half, angle=angle, hw=hw)

    def alpha(self, t: float) -> np.ndarray:
        corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=np.float64) * self.half * max(t, 1e-3)
        c, s = math.cos(self.angle), math.sin(self.angle)
        corners = corners @ np.array([[c, s], [-s, c]]) + self.center
        canvas = Image.new("L", (self.hw[1], self.hw[0]), 0)
        ImageDraw.Draw(canvas).polygon([tuple(p) for p in corners.tolist()], fill=255)
        return np.asarray(canvas, dtype=np.float32) / 255.0


def _rotate(points: np.ndarray, angle: float, hw: tuple[int, int]) -> np.ndarray:
    """Rotate ``(N, 2)`` x, y points by ``angle`` radians about the image centre."""
    if angle == 0.0:
        return points
    center = np.array([hw[1] / 2, hw[0] / 2])
    c, s = math.cos(angle), math.sin(angle)
    return (points - center) @ np.array([[c, s], [-s, c]]) + center


# ----------------------------------------------------------------------------- engine
def grow_to_bucket(
    new_shape: Callable[[np.random.Generator], Shape],
    hw: tuple[int, int],
    bucket: Bucket,
    rng: np.random.Generator,
    *,
    on_commit: Callable[[Shape, float, np.ndarray], None] | None = None,
    max_shapes: int = 400,
    max_rejects: int = 30,
    search_steps: int = 14,
    what: str = "mask",
) -> np.ndarray:
    """Add shapes until the hole ratio (``alpha >= 0.5``) reaches a target drawn uniformly in ``bucket``.

    A target ratio ``r*`` is drawn in ``(low, high]``.  Shapes are composited with the "over"
    rule ``A <- A + a - A * a``.  A shape that would push the ratio above ``high`` is grown only
    partly (binary search on its ``t``) so the ratio lands in ``[r*, high]`` (or at least in the
    bucket); if no fraction of it fits, it is dropped and a new one drawn.

    Args:
        new_shape: ``rng -> Shape`` (a fresh random shape).
        hw: image ``(H, W)``.
        on_commit: called as ``on_commit(shape, t, a)`` for every shape kept, in drawing order,
            with ``a`` its ``H x W`` alpha at ``t`` (used to composite colours).
        max_shapes / max_rejects: bounds of one attempt; ``what`` names the pattern in errors.

    Returns:
        ``H x W`` float32 combined alpha in [0, 1]; its hole set ``alpha >= 0.5`` has a ratio in ``bucket``.

    Raises:
        UserError: the bucket could not be reached within the bounds (e.g. text too small for a high bucket).
    """
    h, w = hw
    n = float(h * w)
    target = float(rng.uniform(bucket.low, bucket.high))
    target = min(max(target, bucket.low + 1.0 / n), bucket.high)  # at least one hole pixel
    combined = np.zeros((h, w), dtype=np.float32)
    ratio = 0.0
    rejects = 0
    for _ in range(max_shapes):
        if ratio >= target or rejects > max_rejects:
            break
        shape = new_shape(rng)
        a = shape.alpha(1.0)
        trial = combined + a - combined * a
        trial_ratio = float(np.count_nonzero(trial >= 0.5)) / n
        t = 1.0
        if trial_ratio > bucket.high:
            t, a, trial, trial_ratio = _shrink(shape, combined, n, target, bucket, search_steps)
            if t is None:
                rejects += 1
                continue
        if trial_ratio <= ratio:  # invisible shape (e.g. alpha below 0.5 everywhere): keep the look, count it
            rejects += 1
        combined, ratio = trial, trial_ratio
        if on_commit is not None:
            on_commit(shape, t, a)
        if t < 1.0:  # a grown-to-fit shape always ends the mask
            break
    if not bucket.contains(ratio):
        raise UserError(f"could not make a {what} with a hole ratio in {bucket.name} % "
                        f"(reached {100 * ratio:.1f} %); try a lower bucket or a larger image")
    return combined


def _shrink(shape: Shape, combined: np.ndarray, n: float, target: float, bucket: Bucket, steps: int):
    """Binary search the smallest ``t`` whose ratio reaches ``target`` without passing ``bucket.high``."""
    lo, hi = 0.0, 1.0
    fallback = None
    for _ in range(steps):
        mid = (lo + hi) / 2
        a = shape.alpha(mid)
        trial = combined + a - combined * a
        r = float(np.count_nonzero(trial >= 0.5)) / n
        if r > bucket.high:
            hi = mid
        elif r < target:
            lo = mid
            if bucket.contains(r):
                fallback = (mid, a, trial, r)
        else:
            return mid, a, trial, r
    if fallback is not None:
        return fallback
    return None, None, None, None


def _mask_shape_factory(kind: str, hw: tuple[int, int], angle: float):
    if kind not in MASK_KINDS:
        raise UserError(f"unknown mask kind '{kind}': choose one of {', '.join(MASK_KINDS)}")

    def new_shape(rng: np.random.Generator) -> Shape:
        use_rect = kind == "rect" or (kind == "mixed" and rng.random() < MIXED_RECT_PROBABILITY)
        return (Rectangle if use_rect else BrushStroke).random(hw, rng, angle)

    return new_shape


def sample_mask(size, bucket: Bucket | str, rng: np.random.Generator, kind: str = "brush") -> np.ndarray:
    """A random free-form mask whose hole ratio lies in ``bucket``.

    Args:
        size: side ``S`` (square) or ``(H, W)``.
        bucket: :class:`Bucket` or its text (``"0-30"``).
        rng: NumPy generator (all randomness comes from it).
        kind: ``"brush"`` (authors' strokes), ``"rect"`` or ``"mixed"`` (mostly strokes, some rectangles).

    Returns:
        ``H x W`` bool, True = hole; ``bucket.contains(hole.mean())`` holds.
    """
    bucket = Bucket.parse(bucket) if isinstance(bucket, str) else bucket
    hw = _hw(size)
    angle = float(rng.uniform(0, 2 * math.pi))  # random rotation of the whole mask
    alpha = grow_to_bucket(_mask_shape_factory(kind, hw, angle), hw, bucket, rng, what=f"{kind} mask")
    hole = alpha >= 0.5
    if rng.random() < 0.5:
        hole = hole[:, ::-1]
    if rng.random() < 0.5:
        hole = hole[::-1, :]
    return np.ascontiguousarray(hole)


def fixed_test_masks(n: int, size, bucket: Bucket | str, seed: int, kind: str = "brush") -> np.ndarray:
    """``n`` reproducible masks of one bucket: ``n x H x W`` bool (True = hole).

    Mask ``i`` depends only on ``(seed, bucket, kind, i)``, so a longer set starts with a shorter one.
    """
    bucket = Bucket.parse(bucket) if isinstance(bucket, str) else bucket
    h, w = _hw(size)
    masks = np.zeros((n, h, w), dtype=bool)
    for i in range(n):
        masks[i] = sample_mask((h, w), bucket, make_rng(seed, "fixed_test_masks", bucket.name, kind, i), kind)
    return masks


def hole_ratio(hole: np.ndarray) -> float:
    """Fraction of hole pixels of an ``H x W`` bool mask."""
    return float(np.count_nonzero(hole)) / hole.size


__all__: Sequence[str] = ("Bucket", "BUCKET_SETS", "parse_buckets", "sample_mask", "fixed_test_masks",
                          "grow_to_bucket", "BrushStroke", "Rectangle", "make_rng", "stable_hash", "hole_ratio")
