"""Synthetic benchmark folders: ``blindinpaint synth`` writes them, :func:`load_bench` reads them back.

A benchmark folder holds, for every sample ``<id>``::

    <id>_input.png   corrupted image (RGB)
    <id>_gt.png      restoration target (RGB)
    <id>_mask.png    true hole mask (8-bit, 255 = hole)

and ``manifest.json``::

    {"format": "blindinpaint-bench", "version": 1, "seed": 0, "size": 256,
     "patterns": [...], "buckets": [...], "per_image": 1, "images": "...", "split": null,
     "noise_images": null, "noise_split": null, "bidirectional": false, "blur_sigma": 3.0,
     "fonts": {name: sha256}, "logos": {name: sha256}, "libraries": {"numpy": ..., ...},
     "entries": [{"id", "pattern", "bucket", "hole_ratio", "source", "input", "gt", "mask", "meta"}]}

Every sample has its own generator seeded from ``(seed, photo index, pattern, bucket, k)``, so
a sample does not depend on which other samples are made or in which order.  The same seed gives
identical pixels wherever the library versions and font files (SHA-256 in the manifest) match.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
from torch.utils.data import Dataset
from tqdm import tqdm

from ..errors import UserError
from .corruptions import (DEFAULT_BLUR_SIGMA, Assets, CorruptionOptions, NoisePool,
                          allowed_buckets, check_pattern, corrupt, random_crop_box, resize_crop)
from .dataset import PhotoCache, hole_to_tensor, resolve_photos, to_chw
from .masks import MASK_KINDS, Bucket, make_rng, parse_buckets

FORMAT = "blindinpaint-bench"
VERSION = 1
SYNTH_ZOOM = (1.0, 1.25)  # benchmark crops: most of the photo, slightly varied per sample


# ----------------------------------------------------------------------------- writing
def _parse_patterns(text: str) -> list[str]:
    patterns = [p.strip() for p in str(text).split(",") if p.strip()]
    if not patterns:
        raise UserError("no corruption pattern given (--patterns)")
    for p in patterns:
        check_pattern(p)
    if len(set(patterns)) != len(patterns):
        raise UserError(f"pattern listed twice in --patterns {text}")
    return patterns


def synth(
    images: str,
    out: str,
    patterns: list[str],
    buckets: list[Bucket],
    per_image: int = 1,
    size: int = 256,
    seed: int = 0,
    split: Optional[str] = None,
    noise_images: Optional[str] = None,
    noise_split: Optional[str] = None,
    assets: Optional[str] = None,
    bidirectional: bool = False,
    blur_sigma: float = DEFAULT_BLUR_SIGMA,
    mask_kind: str = "brush",
    progress: Optional[bool] = None,
) -> dict:
    """Write a benchmark folder (see the module docstring) and return its manifest.

    Every (photo, pattern, bucket, k < per_image) gets one sample, ``size x size`` pixels;
    graffiti/text/logo only in the buckets up to 30 % (UserError if one has no such bucket).
    With ``bidirectional``, each ``image`` sample also gets an ``<id>_inv`` sample: same input,
    the pasted photo as target and the inverted mask (main Sec. 4.3.1).

    Raises:
        UserError: unknown pattern, bad/unsupported bucket, an alpha pattern above 30 %, a missing
            or empty folder, ``logo`` without assets, bad sizes.
    """
    # graffiti/text/logo are made only in the buckets up to 30 % (error if a pattern has none)
    combos = [(p, b) for p in patterns for b in allowed_buckets(p, buckets)]
    if per_image < 1:
        raise UserError(f"--per-image must be at least 1, got {per_image}")
    if size < 16:
        raise UserError(f"--size must be at least 16 pixels, got {size}")
    if blur_sigma < 0:
        raise UserError(f"--blur-sigma must be >= 0, got {blur_sigma}")
    if mask_kind not in MASK_KINDS:
        raise UserError(f"unknown mask kind '{mask_kind}': choose one of {', '.join(MASK_KINDS)}")
    if bidirectional and "image" not in patterns:
        raise UserError("--bidirectional needs the 'image' pattern in --patterns")
    photos = resolve_photos(images, split)
    cache = PhotoCache(int(round(2 * size)))
    pool = None
    if "image" in patterns:
        pool_photos = resolve_photos(noise_images, noise_split) if noise_images else photos
        pool = NoisePool(pool_photos, load=cache)
        if len({str(p) for p in pool_photos} | {str(p) for p in photos}) < 2:
            raise UserError("the 'image' pattern needs at least two photos (one to corrupt, another to paste)")
    loaded_assets = Assets.load(assets)  # None: Pillow's built-in font, no logos
    if "logo" in patterns and not loaded_assets.logos:
        raise UserError("the 'logo' pattern needs logos: pass --assets DIR (made by 'blindinpaint data assets DIR')")
    options = CorruptionOptions(blur_sigma=blur_sigma, mask_kind=mask_kind)

    from ..io import write_png

    out_dir = Path(out)
    _prepare_output(out_dir)
    jobs = [(i, p, b, k) for i in range(len(photos)) for p, b in combos for k in range(per_image)]
    show = sys.stderr.isatty() if progress is None else progress
    entries = []
    for i, pattern, bucket, k in tqdm(jobs, desc="synth", unit="img", disable=not show):
        path = photos[i]
        rng = make_rng(seed, i, pattern, bucket.name, k)
        photo = cache(path)
        clean = resize_crop(photo, (size, size), random_crop_box(photo.shape[:2], (size, size), rng, SYNTH_ZOOM))
        result = corrupt(clean, pattern, bucket, rng, pool, loaded_assets, exclude=path, options=options)
        sample_id = f"{i:04d}_{pattern}_{bucket.name}_{k}"
        source = _relative(path, images)
        entries.append(_write_sample(out_dir, sample_id, result.image, result.target, result.hole,
                                     pattern, bucket.name, source, result.meta, write_png))
        if bidirectional and pattern == "image":
            inv_hole = ~result.hole
            meta = dict(result.meta, bidirectional=True, hole_ratio=float(inv_hole.mean()), inverse_of=sample_id)
            entries.append(_write_sample(out_dir, sample_id + "_inv", result.image, result.noise, inv_hole,
                                         pattern, bucket.name, source, meta, write_png))

    import PIL
    import PIL.features
    import scipy

    from .. import __version__

    manifest = {
        "format": FORMAT, "version": VERSION, "seed": int(seed), "size": int(size),
        "patterns": list(patterns), "buckets": [b.name for b in buckets], "per_image": int(per_image),
        "images": str(images), "split": split, "noise_images": noise_images, "noise_split": noise_split,
        "bidirectional": bool(bidirectional), "blur_sigma": float(blur_sigma), "mask_kind": mask_kind,
        **loaded_assets.fingerprint(),
        "libraries": {"blindinpaint": __version__, "numpy": np.__version__, "pillow": PIL.__version__,
                      "freetype": PIL.features.version("freetype2"), "scipy": scipy.__version__},
        "entries": entries,
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def _prepare_output(out_dir: Path) -> None:
    """Create ``out_dir``; an earlier benchmark there is replaced, any other content is an error.

    (Left-over samples of an earlier run would otherwise sit next to the new ones unlisted.)
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"output path exists and is not a folder: {out_dir}")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        try:
            old = read_bench_manifest(out_dir)
        except UserError:
            raise UserError(f"output folder {out_dir} is not empty and holds no benchmark: "
                            f"choose a new or empty folder") from None
        for entry in old["entries"]:
            for key in ("input", "gt", "mask"):
                name = entry.get(key)
                if isinstance(name, str) and "/" not in name and "\\" not in name:
                    (out_dir / name).unlink(missing_ok=True)
        (out_dir / "manifest.json").unlink()
    out_dir.mkdir(parents=True, exist_ok=True)


def _relative(path: Path, root: str) -> str:
    try:
        return str(Path(path).relative_to(Path(root)))
    except ValueError:
        return str(path)


def _write_sample(out_dir, sample_id, image, target, hole, pattern, bucket, source, meta, write_png) -> dict:
    files = {"input": f"{sample_id}_input.png", "gt": f"{sample_id}_gt.png", "mask": f"{sample_id}_mask.png"}
    write_png(out_dir / files["input"], image)
    write_png(out_dir / files["gt"], target)
    write_png(out_dir / files["mask"], hole.astype(np.uint8) * 255)
    extra = {k: v for k, v in meta.items() if k not in ("pattern", "bucket", "hole_ratio")}
    return {"id": sample_id, "pattern": pattern, "bucket": bucket, "hole_ratio": float(hole.mean()),
            "source": source, **files, "meta": extra}


def synth_main(args) -> int:
    """Runner of ``blindinpaint synth`` (arguments: see ``cli._add_synth``)."""
    patterns = _parse_patterns(args.patterns)
    buckets = parse_buckets(args.buckets)
    manifest = synth(
        images=args.images, out=args.out, patterns=patterns, buckets=buckets, per_image=args.per_image,
        size=args.size, seed=args.seed, split=args.split, noise_images=args.noise_images,
        noise_split=getattr(args, "noise_split", None), assets=args.assets, bidirectional=args.bidirectional,
        blur_sigma=getattr(args, "blur_sigma", DEFAULT_BLUR_SIGMA), mask_kind=getattr(args, "mask_kind", "brush"),
    )
    print(f"{len(manifest['entries'])} samples -> {Path(args.out) / 'manifest.json'}")
    return 0


# ----------------------------------------------------------------------------- reading
@dataclass
class BenchSample:
    """One sample of a benchmark folder: file paths plus metadata; pixels are loaded on demand."""

    id: str
    pattern: str
    bucket: str
    hole_ratio: float
    source: str
    input_path: Path
    gt_path: Path
    mask_path: Path
    meta: dict = field(default_factory=dict)

    def load_input(self) -> np.ndarray:
        """``H x W x 3`` uint8 corrupted image."""
        from ..io import read_image

        return read_image(self.input_path).rgb

    def load_gt(self) -> np.ndarray:
        """``H x W x 3`` uint8 restoration target."""
        from ..io import read_image

        return read_image(self.gt_path).rgb

    def load_hole(self) -> np.ndarray:
        """``H x W`` bool true mask, True = hole."""
        from ..io import read_mask

        return read_mask(self.mask_path)

    def tensors(self) -> dict:
        """The :class:`~blindinpaint.data.dataset.CorruptionDataset` item dict (+ ``id``) of this sample."""
        return {"corrupted": to_chw(self.load_input()), "clean": to_chw(self.load_gt()),
                "hole": hole_to_tensor(self.load_hole()), "pattern": self.pattern, "bucket": self.bucket,
                "hole_ratio": float(self.hole_ratio), "source": self.source, "id": self.id}


def read_bench_manifest(folder: str | Path) -> dict:
    """The parsed ``manifest.json`` of a benchmark folder (UserError when missing or malformed)."""
    folder = Path(folder)
    path = folder / "manifest.json"
    if not folder.is_dir():
        raise UserError(f"benchmark folder not found: {folder}")
    if not path.is_file():
        raise UserError(f"{folder} has no manifest.json: make a benchmark with 'blindinpaint synth'")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("entries"), list):
        raise UserError(f"{path} has no 'entries' list: is this a benchmark folder?")
    return manifest


def load_bench(folder: str | Path, patterns: Optional[list[str]] = None,
               buckets: Optional[list[str]] = None) -> list[BenchSample]:
    """The samples of a benchmark folder, optionally filtered by pattern and bucket names.

    Raises:
        UserError: missing folder/manifest, or a file the manifest lists is missing.
    """
    folder = Path(folder)
    manifest = read_bench_manifest(folder)
    samples = []
    for entry in manifest["entries"]:
        try:
            sample = BenchSample(
                id=entry["id"], pattern=entry["pattern"], bucket=entry["bucket"],
                hole_ratio=float(entry["hole_ratio"]), source=entry.get("source", ""),
                input_path=folder / entry.get("input", f"{entry['id']}_input.png"),
                gt_path=folder / entry.get("gt", f"{entry['id']}_gt.png"),
                mask_path=folder / entry.get("mask", f"{entry['id']}_mask.png"),
                meta=entry.get("meta", {}))
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"{folder / 'manifest.json'}: malformed entry {entry!r} ({exc})") from None
        if patterns is not None and sample.pattern not in patterns:
            continue
        if buckets is not None and sample.bucket not in buckets:
            continue
        for p in (sample.input_path, sample.gt_path, sample.mask_path):
            if not p.is_file():
                raise UserError(f"benchmark file listed in {folder / 'manifest.json'} is missing: {p}")
        samples.append(sample)
    return samples


class BenchDataset(Dataset):
    """A benchmark folder as a torch Dataset of :meth:`BenchSample.tensors` dicts."""

    def __init__(self, folder: str | Path, patterns: Optional[list[str]] = None,
                 buckets: Optional[list[str]] = None):
        self.samples = load_bench(folder, patterns, buckets)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        return self.samples[index].tensors()


__all__ = ["synth", "synth_main", "BenchSample", "load_bench", "read_bench_manifest", "BenchDataset"]
