"""Calibrate HCL's label-free "nothing is corrupted" rule (SPEC section 3, last paragraph).

K = 2 clustering (main Sec. 3.2, Eq. 4) always splits an image in two, so a clean photo would lose
part of its pixels.  The no-corruption rule declares an image clean when its ``Detection.clean_score``
exceeds ``contrast.clean_threshold``: the cosine of its two S1 K-means centres
(``no_corruption: centre_cosine``) or the P(clean) of a learnt head (``no_corruption: head``).
This module picks that threshold on clean validation photos:

1. run the detector (eval mode, rule OFF) on clean crops and on seeded corrupted versions of the
   same photos; keep each image's ``clean_score`` and its flagged-pixel counts;
2. an image is cleared iff ``score > T`` (the model's exact rule, float32 comparison); the pixel
   false-positive rate on clean photos after the rule only falls as T falls, so the chosen T is
   the LARGEST one (the one clearing the fewest images, i.e. losing the least recall) whose clean
   pixel FPR is <= ``max_fpr``.  T sits midway between the lowest cleared and the highest kept clean
   score (a margin on both sides), and the bound is checked at that exact T, so it holds on the
   calibration set by construction;
3. report FPR before/after, the fraction of clean photos declared clean, the fraction of
   corrupted images wrongly declared clean (recall loss) and hole-IoU before/after.

``blindinpaint calibrate MODEL --photos DIR [--write]`` records the result in an export's
``config.json`` (the SHA-256 there covers only ``model.safetensors``, so the export stays loadable).

Mask convention: ``hole`` = 1 = corrupted pixel, 0 = valid.  Images are B x 3 x H x W in [0, 1] at
this module's API; the model sees [-1, 1].
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence, Union

import torch
from torch import Tensor, nn
from tqdm import tqdm

from .errors import UserError

CorruptedBatch = Union[Mapping[str, Tensor], Sequence[Tensor]]
#: fraction of the photo's shorter side covered by each extra corner crop
CORNER_CROP = 2 / 3
#: with fewer photos than this, each photo also gives four corner crops
FEW_PHOTOS = 64


@dataclass
class CalibrationResult:
    """Chosen threshold and what it does on the calibration set.

    threshold:        clean_threshold T (an image is clean iff clean_score > T), in [-1, 1]
    max_fpr:          the requested bound on the clean-photo pixel false-positive rate
    fpr_before/after: fraction of clean-photo pixels flagged as hole without / with the rule
    clean_declared:   fraction of clean photos declared clean at T
    recall_loss:      fraction of corrupted images wrongly declared clean at T
    iou_before/after: mean per-image hole-IoU on the corrupted images without / with the rule
    clean_scores:     N float32, clean scores of the clean images
    corrupted_scores: M float32, clean scores of the corrupted images
    """

    threshold: float
    max_fpr: float
    n_clean: int
    n_corrupted: int
    fpr_before: float
    fpr_after: float
    clean_declared: float
    recall_loss: float
    iou_before: float
    iou_after: float
    clean_scores: Tensor
    corrupted_scores: Tensor

    def record(self) -> dict:
        """JSON-ready summary (no per-image arrays)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
               if f.name not in ("clean_scores", "corrupted_scores")}
        # the threshold stays exact (it must equal contrast.clean_threshold); rates are rounded
        return {k: (round(v, 6) if isinstance(v, float) and k != "threshold" else v) for k, v in out.items()}

    def table(self) -> str:
        """A small Markdown table of the before / after numbers."""
        rows = [
            ("clean-photo pixel FPR", _pct(self.fpr_before), _pct(self.fpr_after)),
            ("clean photos declared clean", _pct(0.0), _pct(self.clean_declared)),
            ("corrupted declared clean (recall loss)", _pct(0.0), _pct(self.recall_loss)),
            ("hole-IoU on corrupted", f"{self.iou_before:.3f}", f"{self.iou_after:.3f}"),
        ]
        lines = [f"clean_threshold = {self.threshold:.4f} (max FPR {_pct(self.max_fpr)}; "
                 f"{self.n_clean} clean, {self.n_corrupted} corrupted images)",
                 "| metric | rule off | rule on |", "|---|---|---|"]
        lines += [f"| {name} | {a} | {b} |" for name, a, b in rows]
        return "\n".join(lines)


def _pct(x: float) -> str:
    return f"{100 * x:.2f} %"


# ----------------------------------------------------------------------------- measurement
@contextlib.contextmanager
def rule_off(model: nn.Module) -> Iterator[None]:
    """Temporarily switch the detector's no-corruption rule off (``clean_score`` is still computed)."""
    detector = model.detector
    saved = detector.cfg
    detector.cfg = dataclasses.replace(saved, no_corruption="off")
    try:
        yield
    finally:
        detector.cfg = saved


@torch.no_grad()
def _detect(model: nn.Module, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """images B x 3 x H x W in [0, 1] -> (clean_score B float32, has_samples B bool, hole B x 1 x H x W bool)."""
    device = next(model.parameters()).device
    det, _, hole = model.detect(images.to(device, torch.float32) * 2 - 1)
    has = det.centres[0].norm(dim=-1).amin(dim=1) > 0.5  # K-means found samples (the rule's `has`)
    return det.clean_score.float().cpu(), has.cpu(), (hole > 0.5).cpu()


def _batches(images: Union[Tensor, Iterable[Tensor]], batch_size: int) -> Iterable[Tensor]:
    if isinstance(images, Tensor):
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"clean_images must be N x 3 x H x W, got {tuple(images.shape)}")
        return images.split(batch_size)
    return images


def _unpack(batch: CorruptedBatch) -> tuple[Tensor, Tensor]:
    if isinstance(batch, Mapping):
        return batch["corrupted"], batch["hole"]
    corrupted, hole = batch
    return corrupted, hole


def _score_pass(values: Sequence[Tensor]) -> Tensor:
    return torch.cat(list(values)) if values else torch.zeros(0)


# ----------------------------------------------------------------------------- threshold choice
def cleared(scores: Tensor, has: Tensor, threshold: float | Tensor) -> Tensor:
    """The model's rule (contrast.py): clean = has & (score > T), compared in float32.

    scores: N float32; has: N bool; threshold: scalar or K thresholds -> N or K x N bool."""
    t = torch.as_tensor(threshold, dtype=torch.float32)
    return has & (scores.float() > t.reshape(-1, 1)).reshape(*t.shape, -1)


def choose_threshold(scores: Tensor, has: Tensor, flagged: Tensor, pixels: Tensor, max_fpr: float) -> float:
    """The largest T in [-1, 1] whose clean-photo pixel FPR after the rule is <= ``max_fpr``.

    scores: N clean scores of clean images; has: N bool (clusterable); flagged: N flagged-pixel
    counts with the rule off; pixels: N pixel counts.  Candidates: 1 (clears nothing), the midpoints
    between consecutive distinct scores (descending) and the midpoint between -1 and the lowest
    score; each is evaluated with the model's own float32 comparison.
    """
    distinct = torch.unique(scores.float())  # ascending
    low = torch.tensor([-1.0], dtype=torch.float32)
    mids = (torch.cat([low, distinct[:-1]]) + distinct) / 2
    candidates = torch.cat([torch.tensor([1.0]), mids.flip(0)])  # descending T
    keep = ~cleared(scores, has, candidates)  # K x N, True = still flagged
    fpr = (keep.double() * flagged.double()).sum(1) / pixels.double().sum().clamp(min=1)
    ok = torch.nonzero(fpr <= max_fpr + 1e-12).squeeze(1)
    if ok.numel() == 0:  # only images K-means could not cluster remain: nothing lower helps
        return -1.0
    return float(candidates[ok[0]])


def calibrate(model: nn.Module, clean_images: Union[Tensor, Iterable[Tensor]],
              corrupted_batches: Iterable[CorruptedBatch], max_fpr: float = 0.02, batch_size: int = 8,
              progress: bool = False) -> CalibrationResult:
    """Choose ``contrast.clean_threshold`` of an HCL model on clean and corrupted images.

    model: an :class:`~blindinpaint.models.hcl.HCLNet` (put in eval mode; its rule is switched off
      while measuring and restored afterwards).
    clean_images: N x 3 x H x W in [0, 1] (split into ``batch_size`` batches), or an iterable of
      such batches.
    corrupted_batches: iterable of ``{"corrupted": B x 3 x H x W [0, 1], "hole": B x 1 x H x W {0, 1}}``
      (a DataLoader over :class:`~blindinpaint.data.dataset.CorruptionDataset`) or (corrupted, hole) pairs.
    max_fpr: bound on the fraction of clean-photo pixels flagged as hole, in (0, 1).
    """
    if not 0.0 < max_fpr < 1.0:
        raise UserError(f"max FPR must be in (0, 1), got {max_fpr}")
    from .metrics import confusion_counts

    model.eval()
    clean_s, clean_has, flagged, pixels = [], [], [], []
    cor_s, cor_has, tp, fp, fn = [], [], [], [], []
    with rule_off(model):
        for images in tqdm(_batches(clean_images, batch_size), desc="clean", unit="batch",
                           file=sys.stderr, disable=not progress, dynamic_ncols=True):
            score, has, hole = _detect(model, images)
            clean_s.append(score)
            clean_has.append(has)
            flagged.append(hole.flatten(1).sum(1))
            pixels.append(torch.full_like(score, hole[0].numel(), dtype=torch.float64))
        for batch in tqdm(corrupted_batches, desc="corrupted", unit="batch", file=sys.stderr,
                          disable=not progress, dynamic_ncols=True):
            corrupted, true_hole = _unpack(batch)
            score, has, hole = _detect(model, corrupted)
            counts = confusion_counts(hole.float(), true_hole.float().cpu())
            cor_s.append(score)
            cor_has.append(has)
            tp.append(counts["tp"])
            fp.append(counts["fp"])
            fn.append(counts["fn"])
    scores, has, flagged_t, pixels_t = (_score_pass(v) for v in (clean_s, clean_has, flagged, pixels))
    if scores.numel() == 0:
        raise UserError("no clean images to calibrate on")
    if not cor_s:
        raise UserError("no corrupted images to measure the recall loss on")
    threshold = choose_threshold(scores, has.bool(), flagged_t, pixels_t, max_fpr)

    clean_cleared = cleared(scores, has.bool(), threshold)
    total = pixels_t.double().sum()
    fpr_before = float(flagged_t.double().sum() / total)
    fpr_after = float((flagged_t.double() * (~clean_cleared).double()).sum() / total)

    c_scores, c_has = torch.cat(cor_s), torch.cat(cor_has).bool()
    tp_t, fp_t, fn_t = torch.cat(tp), torch.cat(fp), torch.cat(fn)
    cor_cleared = cleared(c_scores, c_has, threshold)
    iou_before = _mean_iou(tp_t, fp_t, fn_t)
    # a cleared image predicts no hole: its true positives become false negatives
    iou_after = _mean_iou(torch.where(cor_cleared, 0.0, tp_t), torch.where(cor_cleared, 0.0, fp_t),
                          torch.where(cor_cleared, tp_t + fn_t, fn_t))
    return CalibrationResult(
        threshold=threshold, max_fpr=float(max_fpr), n_clean=int(scores.numel()), n_corrupted=int(c_scores.numel()),
        fpr_before=fpr_before, fpr_after=fpr_after, clean_declared=float(clean_cleared.float().mean()),
        recall_loss=float(cor_cleared.float().mean()), iou_before=iou_before, iou_after=iou_after,
        clean_scores=scores, corrupted_scores=c_scores)


def _mean_iou(tp: Tensor, fp: Tensor, fn: Tensor) -> float:
    """Mean per-image hole-IoU (1 for an image with no hole in prediction and truth)."""
    denom = tp + fp + fn
    iou = torch.where(denom > 0, tp / denom.clamp(min=1e-12), torch.ones_like(denom))
    return float(iou.mean())


# ----------------------------------------------------------------------------- data
def crop_boxes(src_hw: tuple[int, int], crops: int) -> list[tuple[float, float, float, float]]:
    """Deterministic square crop boxes (x0, y0, x1, y1): the largest centred square, then (crops = 5)
    squares of ``CORNER_CROP`` x the shorter side at the four corners."""
    from .data.corruptions import center_crop_box

    boxes = [center_crop_box(src_hw, (1, 1))]
    if crops > 1:
        h, w = src_hw
        side = CORNER_CROP * min(h, w)
        boxes += [(x0, y0, x0 + side, y0 + side) for y0 in (0.0, h - side) for x0 in (0.0, w - side)]
    return boxes[:crops]


def clean_crops(paths: Sequence[Path], size: int, crops: int) -> Tensor:
    """N x 3 x size x size float in [0, 1]: ``crops`` (1 or 5) deterministic crops per photo."""
    from .data.corruptions import read_rgb, resize_crop
    from .data.dataset import to_chw

    out = []
    for path in paths:  # file decoding: one photo at a time
        photo = read_rgb(Path(path))
        out += [to_chw(resize_crop(photo, (size, size), box)) for box in crop_boxes(photo.shape[:2], crops)]
    return torch.stack(out)


def corrupted_loader(photos: str, split: str | None, patterns: list[str], size: int, assets: str | None,
                     batch_size: int, seed: int):
    """Seeded eval-mode corrupted versions of the split's photos (every pattern x allowed bucket)."""
    from torch.utils.data import DataLoader

    from .data.dataset import CorruptionDataset, DataConfig

    cfg = DataConfig(root=photos, split=split, val_split=split, patterns=patterns, size=size, assets=assets)
    dataset = CorruptionDataset(cfg, train=False, seed=seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)


# ----------------------------------------------------------------------------- export config
def write_calibration(folder: str | Path, result: CalibrationResult, info: dict) -> Path:
    """Switch an export's rule on with the calibrated threshold and record the calibration.

    Edits ``config.json`` only (its SHA-256 entry covers ``model.safetensors``, which is untouched);
    ``info`` (split, photos, ...) is stored with the result under ``extra.calibration``.
    """
    from .hub import CONFIG_FILE, load_export

    folder = Path(folder)
    path = folder / CONFIG_FILE
    meta = json.loads(path.read_text())
    contrast = meta["model_config"].setdefault("contrast", {})
    if contrast.get("no_corruption") != "head":  # a model with a clean head keeps its head's score
        contrast["no_corruption"] = "centre_cosine"
    contrast["clean_threshold"] = result.threshold
    meta.setdefault("extra", {})
    meta["extra"] = dict(meta["extra"] or {})
    meta["extra"]["calibration"] = {**info, **result.record()}
    tmp = path.with_name(CONFIG_FILE + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp, path)
    load_export(folder)  # still loadable (checksum + JSON)
    return path


# ----------------------------------------------------------------------------- CLI
def _parse_patterns(text: str) -> list[str]:
    from .data.corruptions import PATTERNS

    patterns = [p.strip() for p in text.split(",") if p.strip()]
    if not patterns:
        raise UserError("--patterns is empty")
    unknown = [p for p in patterns if p not in PATTERNS]
    if unknown:
        raise UserError(f"--patterns: unknown pattern '{unknown[0]}' (choose from {', '.join(PATTERNS)})")
    return patterns


def _parse_sizes(text: str) -> list[int]:
    """``"128"`` or ``"128,256"`` -> sorted distinct sides, each >= 16 (else a one-line UserError)."""
    try:
        sizes = sorted({int(t) for t in text.split(",") if t.strip()})
    except ValueError:
        raise UserError(f"--size must be a side in pixels or a comma list of sides, got {text!r}") from None
    if not sizes or sizes[0] < 16:
        raise UserError(f"--size: every side must be at least 16, got {text!r}")
    return sizes


def calibrate_main(args: argparse.Namespace) -> int:
    """Runner of ``blindinpaint calibrate MODEL --photos DIR [...] [--write]``."""
    from .data.dataset import resolve_photos
    from .hub import _is_export, build_model, load

    if not 0.0 < args.max_fpr < 1.0:
        raise UserError(f"--max-fpr must be in (0, 1), got {args.max_fpr}")
    sizes = _parse_sizes(str(args.size))
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.crops is not None and args.crops not in (1, 5):
        raise UserError(f"--crops must be 1 or 5, got {args.crops}")
    patterns = _parse_patterns(args.patterns)
    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = load(args.model)
    if loaded.task != "hcl":
        raise UserError(f"{args.model} is a '{loaded.task}' model; calibrate needs an HCL model")
    if args.write and not _is_export(Path(loaded.source)):
        raise UserError(f"--write needs an export folder, but {args.model} loads from {loaded.source} "
                        f"(run 'blindinpaint export' first)")
    model = build_model(loaded, "cpu")
    paths = resolve_photos(args.photos, args.split, lenient_split=True)
    crops = args.crops or (5 if len(paths) < FEW_PHOTOS else 1)
    start = time.perf_counter()
    show = sys.stderr.isatty()
    # one pool over every size: batches of one size each (clean crops of all sizes, then corrupted ones)
    clean = [b for size in sizes for b in clean_crops(paths, size, crops).split(args.batch_size)]
    loader = itertools.chain.from_iterable(
        corrupted_loader(args.photos, args.split, patterns, size, args.assets, args.batch_size, args.seed)
        for size in sizes)
    result = calibrate(model, clean, loader, args.max_fpr, batch_size=args.batch_size, progress=show)
    seconds = time.perf_counter() - start
    print(result.table())
    print(f"{len(paths)} photos x {crops} crop(s) x sizes {sizes}; {seconds:.1f} s")
    if args.write:
        info = {"photos": Path(args.photos).name, "split": args.split, "n_photos": len(paths), "crops": crops,
                "size": sizes if len(sizes) > 1 else sizes[0], "patterns": patterns, "seed": args.seed}
        path = write_calibration(loaded.source, result, info)
        rule = json.loads(path.read_text())["model_config"]["contrast"]["no_corruption"]
        print(f"wrote contrast.no_corruption = {rule}, clean_threshold = {result.threshold:.4f} to {path}")
    return 0


__all__ = ["CalibrationResult", "calibrate", "choose_threshold", "cleared", "clean_crops", "crop_boxes",
           "corrupted_loader", "write_calibration", "rule_off", "calibrate_main"]
