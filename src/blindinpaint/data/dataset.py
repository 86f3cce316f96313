"""The training / evaluation dataset: clean photos corrupted on the fly (main Eq. 1).

Each item is a dict (the trainer relies on these keys)::

    {"corrupted": 3 x H x W float [0, 1],   # the image a blind restorer sees
     "clean":     3 x H x W float [0, 1],   # the restoration target
     "hole":      1 x H x W float {0, 1},   # 1 = hole (corrupted), 0 = valid
     "pattern":   str, "bucket": str, "hole_ratio": float, "source": str}

(``pattern`` and ``bucket`` are ``"none"`` for the uncorrupted items of ``data.clean_fraction``.)

Training items take a random crop/zoom/flip of a photo, a random pattern and a random bucket;
evaluation items are a deterministic function of the index (centre crop, patterns and buckets
cycled so each photo gets every combination).  All randomness of an item derives from
``(seed, epoch, index)`` (training) or ``(seed, index)`` (evaluation), so results do not depend
on the number of DataLoader workers or the order items are drawn in.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..errors import ConfigError, UserError
from .corruptions import (PATTERNS, Assets, CorruptionOptions, NoisePool, allowed_buckets, center_crop_box,
                          corrupt, random_crop_box, read_rgb, resize_crop, uncorrupted)
from .folders import list_photos, read_manifest
from .masks import MASK_KINDS, Bucket, make_rng

log = logging.getLogger(__name__)

TRAIN_ZOOM = (1.0, 2.0)  # training crops cover 1/zoom of the photo's shorter side
CACHE_SHORT_SIDE = 2.0   # photos are cached downscaled to at most this x size on the shorter side


@dataclass
class DataConfig:
    """Where the photos come from and how they are corrupted.

    Attributes:
        root: folder of photos (searched recursively) or a corpus folder (``manifest.json``).
        split: corpus split of the training photos; ignored for a plain folder (it has no splits).
        val_split: corpus split used when the dataset is built for evaluation (``train=False``).
        noise_root / noise_split: photos pasted by the ``image`` pattern; default: the same photos
            as the dataset (never the photo being corrupted).
        assets: folder from ``blindinpaint data assets`` (fonts, logos) for ``text``/``logo``.
        patterns: corruption patterns (see :data:`corruptions.PATTERNS`).
        pattern_weights: sampling weights of ``patterns`` for training (default uniform).
        buckets: hole-ratio buckets in percent, e.g. ``["0-30", "30-60"]``; graffiti/text/logo use
            only the buckets up to 30 %.
        size: side of the square samples in pixels.
        bidirectional: probability that an ``image`` sample is the swapped view (target = pasted
            photo, inverted mask; main Sec. 4.3.1).
        clean_fraction: probability that a TRAINING item is left uncorrupted (pattern ``none``,
            an all-zero hole mask, corrupted = clean), so a blind model also sees clean photos
            (the no-corruption head, ``model.contrast.no_corruption: head``).  Not in the papers.
        num_workers: DataLoader workers.
        blur_sigma: boundary blur sigma in pixels at 256 px (authors: 3), scaled with ``size``.
        mask_kind: ``brush`` (authors' strokes), ``rect`` or ``mixed``.
    """

    root: str = ""
    split: Optional[str] = "train"
    val_split: Optional[str] = "val"
    noise_root: Optional[str] = None
    noise_split: Optional[str] = None
    assets: Optional[str] = None
    patterns: list[str] = field(default_factory=lambda: ["image"])
    pattern_weights: Optional[list[float]] = None
    buckets: list[str] = field(default_factory=lambda: ["0-30", "30-60"])
    size: int = 256
    bidirectional: float = 0.0
    clean_fraction: float = 0.0
    num_workers: int = 0
    blur_sigma: float = 3.0
    mask_kind: str = "brush"

    def validate(self) -> None:
        """Raise ConfigError for values no dataset could be built from (the folders are checked later)."""
        if not self.patterns:
            raise ConfigError("data.patterns is empty")
        for p in self.patterns:
            if p not in PATTERNS:
                raise ConfigError(f"data.patterns: unknown pattern '{p}' (choose from {', '.join(PATTERNS)})")
        if self.pattern_weights is not None:
            if len(self.pattern_weights) != len(self.patterns):
                raise ConfigError(f"data.pattern_weights has {len(self.pattern_weights)} values for "
                                  f"{len(self.patterns)} patterns")
            if any(w < 0 for w in self.pattern_weights) or sum(self.pattern_weights) <= 0:
                raise ConfigError("data.pattern_weights must be non-negative with a positive sum")
        try:
            buckets = self.parsed_buckets()
        except UserError as exc:
            raise ConfigError(f"data.buckets: {exc}") from None
        for p in self.patterns:
            try:
                allowed_buckets(p, buckets)
            except UserError as exc:
                raise ConfigError(f"data.patterns/data.buckets: {exc}") from None
        if self.size < 16:
            raise ConfigError(f"data.size must be at least 16, got {self.size}")
        if not 0.0 <= self.bidirectional <= 1.0:
            raise ConfigError(f"data.bidirectional is a probability in [0, 1], got {self.bidirectional}")
        if not 0.0 <= self.clean_fraction < 1.0:
            raise ConfigError(f"data.clean_fraction is a probability in [0, 1), got {self.clean_fraction}")
        if self.num_workers < 0:
            raise ConfigError(f"data.num_workers must be >= 0, got {self.num_workers}")
        if self.blur_sigma < 0:
            raise ConfigError(f"data.blur_sigma must be >= 0, got {self.blur_sigma}")
        if self.mask_kind not in MASK_KINDS:
            raise ConfigError(f"data.mask_kind must be one of {', '.join(MASK_KINDS)}, got '{self.mask_kind}'")

    def parsed_buckets(self) -> list[Bucket]:
        if not self.buckets:
            raise UserError("no hole-ratio bucket given")
        return [Bucket.parse(b) for b in self.buckets]

    def corruption_options(self) -> CorruptionOptions:
        return CorruptionOptions(blur_sigma=self.blur_sigma, mask_kind=self.mask_kind)


# ----------------------------------------------------------------------------- photos
class PhotoCache:
    """Decodes each photo once and keeps it in memory, downscaled so its shorter side is at most ``max_short``."""

    def __init__(self, max_short: int):
        self.max_short = int(max_short)
        self._photos: dict[str, np.ndarray] = {}

    def __call__(self, path: Path) -> np.ndarray:
        key = str(path)
        photo = self._photos.get(key)
        if photo is None:
            photo = read_rgb(Path(path))
            short = min(photo.shape[:2])
            if short > self.max_short:
                scale = self.max_short / short
                size = (max(1, round(photo.shape[1] * scale)), max(1, round(photo.shape[0] * scale)))
                photo = np.asarray(Image.fromarray(photo).resize(size, Image.Resampling.LANCZOS))
            self._photos[key] = photo
        return photo

    def __len__(self) -> int:
        return len(self._photos)


def resolve_photos(root: str, split: Optional[str], lenient_split: bool = False) -> list[Path]:
    """Photos of ``root``: one split of a corpus folder, or every image of a plain folder.

    A split given for a plain folder is an error, unless ``lenient_split`` (config defaults such as
    ``split: train`` then simply mean "all images").
    """
    if not root:
        raise UserError("no photo folder given (data.root / --images)")
    if not Path(root).is_dir():
        raise UserError(f"image folder not found: {root}")
    if lenient_split and split is not None and read_manifest(root) is None:
        log.info("%s is a plain folder (no manifest.json): using all its images, split '%s' ignored", root, split)
        split = None
    return list_photos(root, split)


def to_chw(image: np.ndarray) -> torch.Tensor:
    """``H x W x 3`` uint8 -> ``3 x H x W`` float32 in [0, 1]."""
    chw = image.transpose(2, 0, 1).astype(np.float32)  # a contiguous copy
    np.divide(chw, 255.0, out=chw)
    return torch.from_numpy(chw)


def hole_to_tensor(hole: np.ndarray) -> torch.Tensor:
    """``H x W`` bool (True = hole) -> ``1 x H x W`` float32 {0, 1}."""
    return torch.from_numpy(np.array(hole, dtype=np.float32))[None]


# ----------------------------------------------------------------------------- dataset
class CorruptionDataset(Dataset):
    """Clean photos corrupted on the fly.

    Args:
        cfg: :class:`DataConfig`.
        train: random crops/patterns/buckets (True) or deterministic samples per index (False).
        seed: base seed of every item's generator.
        length: number of items; default = number of photos (training) or photos x
            (pattern, bucket) combinations (evaluation).

    Items: see the module docstring.  Call :meth:`set_epoch` at each training epoch for fresh
    corruptions (with ``persistent_workers`` the workers keep their own copy: recreate them).
    """

    def __init__(self, cfg: DataConfig, train: bool, seed: int = 0, length: Optional[int] = None):
        cfg.validate()
        self.cfg, self.train, self.seed, self.epoch = cfg, bool(train), int(seed), 0
        self.photos = resolve_photos(cfg.root, cfg.split if train else cfg.val_split, lenient_split=True)
        self.cache = PhotoCache(int(round(CACHE_SHORT_SIDE * cfg.size)))
        self.buckets = cfg.parsed_buckets()
        self.options = cfg.corruption_options()
        needs_assets = any(p in ("text", "logo") for p in cfg.patterns)
        self.assets = Assets.load(cfg.assets) if needs_assets else Assets.builtin()
        if "image" in cfg.patterns:
            if cfg.noise_root:
                noise_photos = resolve_photos(cfg.noise_root, cfg.noise_split, lenient_split=True)
            else:
                noise_photos = self.photos
            self.noise_pool: Optional[NoisePool] = NoisePool(noise_photos, load=self.cache)
            if len({str(p) for p in noise_photos} | {str(p) for p in self.photos}) < 2:
                raise UserError("the 'image' pattern needs at least two photos (one to corrupt, another to paste)")
        else:
            self.noise_pool = None
        weights = np.asarray(cfg.pattern_weights or [1.0] * len(cfg.patterns), dtype=np.float64)
        self.pattern_p = weights / weights.sum()
        # evaluation: every allowed (pattern, bucket) pair, cycled per photo
        self.combos = [(p, b) for p in cfg.patterns for b in allowed_buckets(p, self.buckets)]
        default = len(self.photos) if self.train else len(self.photos) * len(self.combos)
        self.length = int(length) if length is not None else default

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        """Training: items of a new epoch get new (reproducible) crops and corruptions."""
        self.epoch = int(epoch)

    def preload(self) -> None:
        """Decode every photo now (before DataLoader workers fork, so they share the memory)."""
        for path in self.photos:
            self.cache(path)
        if self.noise_pool is not None:
            for item in self.noise_pool.items:
                self.cache(Path(item))

    def sample(self, index: int):
        """``(Corrupted, source path)`` of item ``index`` as NumPy arrays (the tensors come from this)."""
        if not 0 <= index < self.length:
            raise IndexError(index)
        size = self.cfg.size
        if self.train:
            rng = make_rng(self.seed, "train", self.epoch, index)
            path = self.photos[index % len(self.photos)]
            photo = self.cache(path)
            clean = resize_crop(photo, (size, size), random_crop_box(photo.shape[:2], (size, size), rng, TRAIN_ZOOM))
            if rng.random() < 0.5:
                clean = np.ascontiguousarray(clean[:, ::-1])
            # drawn only when enabled, so runs without clean items keep their exact data order
            if self.cfg.clean_fraction > 0 and rng.random() < self.cfg.clean_fraction:
                return uncorrupted(clean), path
            pattern = self.cfg.patterns[int(rng.choice(len(self.cfg.patterns), p=self.pattern_p))]
            allowed = allowed_buckets(pattern, self.buckets)
            bucket = allowed[int(rng.integers(len(allowed)))]
            swap = pattern == "image" and rng.random() < self.cfg.bidirectional
        else:
            rng = make_rng(self.seed, "eval", index)
            per_photo = len(self.combos)
            path = self.photos[(index // per_photo) % len(self.photos)]
            pattern, bucket = self.combos[index % per_photo]
            photo = self.cache(path)
            clean = resize_crop(photo, (size, size), center_crop_box(photo.shape[:2], (size, size)))
            swap = pattern == "image" and self.cfg.bidirectional > 0 and rng.random() < self.cfg.bidirectional
        result = corrupt(clean, pattern, bucket, rng, self.noise_pool, self.assets, exclude=path,
                         options=self.options, bidirectional=swap)
        return result, path

    def __getitem__(self, index: int) -> dict:
        result, path = self.sample(int(index))
        return {
            "corrupted": to_chw(result.image),
            "clean": to_chw(result.target),
            "hole": hole_to_tensor(result.hole),
            "pattern": result.meta["pattern"],
            "bucket": result.meta["bucket"],
            "hole_ratio": float(result.meta["hole_ratio"]),
            "source": str(path),
        }


def build_dataset(cfg: DataConfig, train: bool, seed: int = 0, length: Optional[int] = None) -> CorruptionDataset:
    """A :class:`CorruptionDataset`; photos are decoded up front when DataLoader workers will be used."""
    dataset = CorruptionDataset(cfg, train=train, seed=seed, length=length)
    if cfg.num_workers > 0:
        dataset.preload()
    return dataset


__all__ = ["DataConfig", "CorruptionDataset", "build_dataset", "PhotoCache", "resolve_photos", "to_chw",
           "hole_to_tensor"]
