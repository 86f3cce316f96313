"""Benchmark runner: ``blindinpaint evaluate`` (quality) and ``blindinpaint bench`` (compute).

``evaluate`` runs one or more :class:`~blindinpaint.predictors.Predictor` over benchmark
folders made by ``blindinpaint synth`` and measures (SPEC section 7):

* **detection** (models that detect): Acc, F1, BCE, IoU at threshold 0.5, for the final
  mask and per detection stage (S1 = coarsest, as in the paper), in both conventions
  (``hole/*``: hole region positive; ``valid/*``: the HCL authors' valid-positive) and both
  averages (``*/per_image``: the authors' "samplewise"; ``*/pooled``: counts added over
  images).  Acc/F1/IoU use the model's binary mask, BCE its soft P(hole).
* **restoration**: PSNR, SSIM, L1 (%) on the full image and on the true hole region
  (``*/hole``) for ``rec``, ``refined`` (when the model has a refiner) and ``composite``
  (the final restoration inside the mask the restoration used, the input elsewhere);
  LPIPS and FID when available, else :data:`blindinpaint.metrics.NA` in every table.
* every metric per (bench, pattern, bucket), with ``all`` rows pooling patterns and/or buckets;
* **clean photos** (``clean=``): false-positive rate (fraction of pixels flagged) and the
  change the model makes to an uncorrupted photo.

Mask-given mode (``given_mask``): ``"true"`` feeds every model the true mask, a Predictor
feeds its predicted mask (main Table 2 idea); detectors still report their own detection.
Inverted-mask targets of a bidirectional bench (``synth --bidirectional``, main Fig. 6) are scored
against the inverted true mask, so a detector's mask is inverted there and, without a given mask,
it restores with that inverted mask (the pasted photo is restored).

Outputs (``out``): ``results.json`` (the source of truth; :func:`render_tables` renders it),
``results.csv`` (one row per number), ``per_image.csv``, ``tables.md`` (main Tables 1, 3, 4
layout: rows = metric x method, columns = buckets, one block per pattern), ``grid_*.png``
and ``bars_*.png``.  Runs are deterministic: no timings in ``results.json`` (they go to
``timing.json``).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
from torch import Tensor

from . import metrics as M
from .errors import UserError
from .predictors import Prediction, Predictor

log = logging.getLogger(__name__)

FORMAT = "blindinpaint-eval"
VERSION = 1
ALL = "all"  # pattern/bucket value of the pooled groups
FINAL = "final"  # detection stage name of the model's final mask
DETECTION_KEYS = ("acc/per_image", "acc/pooled", "bce/per_image", "bce/pooled",
                  "hole/f1/per_image", "hole/f1/pooled", "hole/iou/per_image", "hole/iou/pooled",
                  "valid/f1/per_image", "valid/f1/pooled", "valid/iou/per_image", "valid/iou/pooled",
                  "n_images")
RESTORATION_KEYS = ("psnr", "ssim", "l1", "psnr/hole", "ssim/hole", "l1/hole", "lpips", "fid",
                    "n_images", "n_images/hole")
NO_SOFT_MASK = "n/a (model gives no soft mask)"
FEW_IMAGES = "n/a (fewer than 2 images)"

Extractor = Callable[[Tensor], Tensor]
LpipsFn = Callable[[Tensor, Tensor], Tensor]


# ----------------------------------------------------------------------------- helpers
def _jsonable(value: Any) -> Any:
    """Floats for JSON: inf -> "inf", NaN -> None; tensors/numpy scalars -> float."""
    if isinstance(value, (torch.Tensor, np.floating, np.integer)):
        value = float(value)
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    return value


def _unique_labels(names: Sequence[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return out


def _bench_labels(benches: Sequence[Path]) -> list[str]:
    names = [b.resolve().name for b in benches]
    return [b.name if names.count(n) == 1 else str(b) for b, n in zip(benches, names)]


def _ordered(values: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(values))


# ----------------------------------------------------------------------------- accumulation
class _Identity:
    """FIDMeter's extractor when the features were computed once per batch (shared by methods)."""

    def __call__(self, features: Tensor) -> Tensor:
        return features


@dataclass
class _GridRow:
    id: str
    corrupted: Tensor          # 3 x H x W
    true_hole: Tensor          # 1 x H x W
    gt: Tensor                 # 3 x H x W
    per_method: dict           # method -> {"stages": [1xHxW], "hole": 1xHxW|None, "restored": 3xHxW|None}


class _Accumulator:
    """Meters per (method, bench, pattern, bucket, part); ``ALL`` groups pool patterns/buckets."""

    def __init__(self, threshold: float, fid_extractor: Optional[Extractor], lpips_fn: Optional[LpipsFn],
                 grid_rows: int):
        self.threshold = threshold
        self.fid_extractor = fid_extractor
        self.lpips_fn = lpips_fn
        self.grid_rows = grid_rows
        self.det: dict[tuple, tuple[M.DetectionMeter, Optional[M.DetectionMeter]]] = {}
        # (method, bench, output) -> metric -> per-image chunks; groups select from them at the end,
        # so SSIM etc. are computed once per image, not once per group
        self.rest: dict[tuple, dict[str, list[Tensor]]] = {}
        self.fid: dict[tuple, M.FIDMeter] = {}
        self.images: dict[tuple[str, str], list[dict]] = defaultdict(list)  # (method, bench) -> sample infos
        self.grids: dict[tuple[str, str], dict[str, _GridRow]] = defaultdict(dict)  # (bench, pattern) -> rows

    @staticmethod
    def groups(patterns: Sequence[str], buckets: Sequence[str]) -> dict[tuple[str, str], Tensor]:
        """(pattern, bucket) group -> indices into the batch, including the ``ALL`` groups."""
        found: dict[tuple[str, str], list[int]] = defaultdict(list)
        for i, (p, b) in enumerate(zip(patterns, buckets)):
            for key in ((p, b), (p, ALL), (ALL, b), (ALL, ALL)):
                found[key].append(i)
        return {k: torch.tensor(v, dtype=torch.long) for k, v in found.items()}

    def add(self, method: str, bench: str, infos: list[dict], groups: dict, corrupted: Tensor, gt: Tensor,
            true_hole: Tensor, pred: Prediction, real_features: Optional[Tensor]) -> None:
        self.images[(method, bench)].extend(infos)
        stages: list[tuple[str, Tensor, Optional[Tensor]]] = []
        if pred.hole is not None:
            stages.append((FINAL, pred.hole, pred.prob_hole))
            for s, (h, p) in enumerate(zip(pred.stage_holes, pred.stage_probs or [None] * len(pred.stage_holes))):
                stages.append((f"S{s + 1}", h, p))
        outputs: list[tuple[str, Tensor]] = []
        if pred.rec is not None:
            outputs.append(("rec", pred.rec))
        if pred.refined is not None:
            outputs.append(("refined", pred.refined))
        final, restore_hole = pred.final, pred.mask_for_restoration()
        if final is not None and restore_hole is not None:
            outputs.append(("composite", M.composite(final, corrupted, restore_hole)))
        for name, image in outputs:
            values = M.restoration_metrics(image, gt, true_hole)
            if self.lpips_fn is not None:
                values["lpips"] = self.lpips_fn(image, gt).detach().reshape(-1)
            store = self.rest.setdefault((method, bench, name), {})
            for k, v in values.items():
                store.setdefault(k, []).append(v.detach().cpu().double())
        fake_features = {name: self.fid_extractor(img).reshape(img.shape[0], -1).double().cpu()
                         for name, img in outputs} if self.fid_extractor is not None else {}

        for (pattern, bucket), idx in groups.items():
            for stage, hole, prob in stages:
                key = (method, bench, pattern, bucket, stage)
                if key not in self.det:
                    self.det[key] = (M.DetectionMeter(self.threshold),
                                     M.DetectionMeter(self.threshold) if prob is not None else None)
                binary, soft = self.det[key]
                binary.update(hole[idx], true_hole[idx])
                if soft is not None and prob is not None:
                    soft.update(prob[idx], true_hole[idx])
            for name, _ in outputs:
                key = (method, bench, pattern, bucket, name)
                if name in fake_features and real_features is not None:
                    meter = self.fid.setdefault(key, M.FIDMeter(_Identity()))
                    meter.update(real_features[idx], real=True)
                    meter.update(fake_features[name][idx], real=False)
        self._grid(method, bench, infos, corrupted, gt, true_hole, pred, dict(outputs))

    def _grid(self, method, bench, infos, corrupted, gt, true_hole, pred, outputs) -> None:
        restored = outputs.get("composite", pred.final)
        for i, info in enumerate(infos):
            rows = self.grids[(bench, info["pattern"])]
            if info["id"] not in rows:
                if len(rows) >= self.grid_rows:
                    continue
                rows[info["id"]] = _GridRow(info["id"], corrupted[i], true_hole[i], gt[i], {})
            rows[info["id"]].per_method[method] = {
                "stages": [h[i] for h in pred.stage_holes],
                "hole": None if pred.hole is None else pred.hole[i],
                "restored": None if restored is None else restored[i],
            }

    # -------------------------------------------------------------- results
    def detection_metrics(self, key: tuple) -> dict[str, Any]:
        binary, soft = self.det[key]
        values = binary.compute()
        out: dict[str, Any] = {}
        for k in DETECTION_KEYS:
            if k.startswith("bce/"):
                out[k] = soft.compute()[k] if soft is not None else NO_SOFT_MASK
            else:
                out[k] = values[k]
        return out

    def has_restoration(self, key: tuple) -> bool:
        """Whether group ``(method, bench, pattern, bucket, output)`` holds any image."""
        method, bench, pattern, bucket, output = key
        return (method, bench, output) in self.rest and bool(self.member_index(method, bench, pattern, bucket).numel())

    def member_index(self, method: str, bench: str, pattern: str, bucket: str) -> Tensor:
        infos = self.images.get((method, bench), [])
        return torch.tensor([i for i, info in enumerate(infos) if pattern in (ALL, info["pattern"])
                             and bucket in (ALL, info["bucket"])], dtype=torch.long)

    def per_image_restoration(self, method: str, bench: str, output: str) -> dict[str, Tensor]:
        return {k: torch.cat(v) for k, v in self.rest[(method, bench, output)].items()}

    def restoration_metrics(self, key: tuple, lpips_note: str, fid_note: str) -> dict[str, Any]:
        """Means of the per-image values (hole metrics over images that have hole pixels),
        as :class:`~blindinpaint.metrics.RestorationMeter` computes them, for one group."""
        method, bench, pattern, bucket, output = key
        idx = self.member_index(method, bench, pattern, bucket)
        values = {k: v[idx] for k, v in self.per_image_restoration(method, bench, output).items()}
        out: dict[str, Any] = {k: values[k].nanmean().item() if k in values else None
                               for k in ("psnr", "ssim", "l1", "psnr/hole", "ssim/hole", "l1/hole")}
        out["lpips"] = values["lpips"].mean().item() if "lpips" in values else lpips_note
        if key not in self.fid:
            out["fid"] = fid_note
        else:
            try:
                out["fid"] = self.fid[key].compute()
            except ValueError:  # fewer than 2 images in this group
                out["fid"] = FEW_IMAGES
        out["n_images"] = float(idx.numel())
        out["n_images/hole"] = float((~values["l1/hole"].isnan()).sum().item())
        return out


# ----------------------------------------------------------------------------- the run
def pattern_label(pattern: str, meta: Optional[dict]) -> str:
    """The table block of a sample: ``image_inv`` for the inverted-mask targets of a bidirectional
    bench (main Sec. 4.3.1, Fig. 6: restore the pasted photo), else the corruption pattern."""
    return f"{pattern}_inv" if (meta or {}).get("bidirectional") else pattern


def _load_batch(samples) -> tuple[Tensor, Tensor, Tensor, list[dict]]:
    items = [s.tensors() for s in samples]
    corrupted = torch.stack([it["corrupted"] for it in items])
    gt = torch.stack([it["clean"] for it in items])
    true_hole = torch.stack([it["hole"] for it in items])
    infos = [{"id": s.id, "pattern": pattern_label(s.pattern, s.meta), "bucket": s.bucket,
              "hole_ratio": float(s.hole_ratio)}
             for s in samples]
    return corrupted, gt, true_hole, infos


def _is_inverted(sample) -> bool:
    """An inverted-mask target of a bidirectional bench (the pasted photo is the ground truth)."""
    return bool((sample.meta or {}).get("bidirectional"))


def _batches(samples: list, batch_size: int) -> list[list]:
    """Consecutive samples of equal image size and kind (inverted-mask target or not), at most
    ``batch_size`` per batch (manifest order)."""
    from PIL import Image

    out: list[list] = []
    last_key = None
    for sample in samples:
        with Image.open(sample.input_path) as im:
            key = (im.size, _is_inverted(sample))
        if out and key == last_key and len(out[-1]) < batch_size:
            out[-1].append(sample)
        else:
            out.append([sample])
        last_key = key
    return out


def _to_cpu(pred: Prediction) -> Prediction:
    def cpu(x):
        return None if x is None else x.detach().float().cpu()

    return Prediction(hole=cpu(pred.hole), prob_hole=cpu(pred.prob_hole), rec=cpu(pred.rec),
                      refined=cpu(pred.refined), stage_holes=[cpu(h) for h in pred.stage_holes],
                      stage_probs=[cpu(p) for p in pred.stage_probs], restore_hole=cpu(pred.restore_hole))


def _run_predictor(model: Predictor, corrupted: Tensor, given_hole: Optional[Tensor]) -> Prediction:
    device = getattr(model, "device", torch.device("cpu"))
    given = None if given_hole is None else given_hole.to(device)
    with torch.no_grad():
        return _to_cpu(model.predict(corrupted.to(device), given))


def _run_inverted(model: Predictor, corrupted: Tensor, given_hole: Optional[Tensor]) -> Prediction:
    """An inverted-mask target of a bidirectional bench (main Sec. 4.3.1, Fig. 6): the pasted photo
    is kept and its surroundings are the hole.  Without ``given_hole`` a detecting model restores
    with its inverted detected mask.  A detecting model's detection is reported inverted
    (``1 - hole``), the convention of the inverted true mask it is scored against."""
    if not model.detects:
        return _run_predictor(model, corrupted, given_hole)
    own = _run_predictor(model, corrupted, None)
    pred = _run_predictor(model, corrupted, 1.0 - own.hole if given_hole is None else given_hole)

    def flip(x: Optional[Tensor]) -> Optional[Tensor]:
        return None if x is None else 1.0 - x

    return replace(pred, hole=flip(own.hole), prob_hole=flip(own.prob_hole),
                   stage_holes=[1.0 - h for h in own.stage_holes], stage_probs=[1.0 - p for p in own.stage_probs])


def _resolve_optional_metrics(fid_extractor, lpips) -> tuple[Optional[Extractor], str, Optional[LpipsFn], str]:
    if isinstance(fid_extractor, str):
        if fid_extractor != "auto":
            raise ValueError(f"fid_extractor must be a callable, None or 'auto', got {fid_extractor!r}")
        fid_extractor, fid_reason = M.load_inception_extractor()
    else:
        fid_reason = "" if fid_extractor is not None else "disabled"
    if isinstance(lpips, str):
        if lpips != "auto":
            raise ValueError(f"lpips must be a callable, None or 'auto', got {lpips!r}")
        lpips, lpips_reason = M.lpips_metric()
    else:
        lpips_reason = "" if lpips is not None else "disabled"
    return fid_extractor, fid_reason, lpips, lpips_reason


def evaluate(
    models: Sequence[Predictor],
    benches: Sequence[Union[str, Path]],
    out: Optional[Union[str, Path]] = None,
    *,
    given_mask: Union[str, Predictor, None] = None,
    clean: Sequence[Union[str, Path]] = (),
    clean_size: int = 256,
    batch_size: int = 4,
    threshold: float = M.DETECTION_THRESHOLD,
    fid_extractor: Union[Extractor, str, None] = "auto",
    lpips: Union[LpipsFn, str, None] = "auto",
    grid_rows: int = 3,
    progress: Optional[bool] = None,
    seed: int = 0,
) -> dict:
    """Evaluate ``models`` on benchmark folders; returns the results dict (also written to ``out``).

    Args:
        models: predictors (see :mod:`blindinpaint.predictors`); their ``name`` labels the rows.
        benches: folders made by ``blindinpaint synth``.
        out: output folder (results.json/.csv, per_image.csv, tables.md, figures), or None.
        given_mask: None / ``"none"`` (each model restores with its own detection), ``"true"``
            (the true mask), or a Predictor whose predicted ``hole`` is fed to every model.
        clean: folders of uncorrupted photos for the clean-image test (false-positive rate).
        clean_size: clean photos are centre-cropped to a square and resized to this side.
        batch_size: images per forward pass.
        threshold: detection threshold (a pixel is predicted hole when its mask value > threshold).
        fid_extractor: ``B x 3 x H x W`` [0, 1] -> ``B x D`` features; ``"auto"`` = Inception if
            its package and weights are present offline; None = off.  Without one, FID is
            :data:`~blindinpaint.metrics.NA`.
        lpips: ``(pred, target) -> B`` distances; ``"auto"`` = :func:`~blindinpaint.metrics.lpips_metric`.
        grid_rows: samples per pattern in the figures.
        progress: tqdm bar (default: when stderr is a terminal).
        seed: torch seed set before the run (models are deterministic in eval mode).

    Raises:
        UserError: missing bench folder / manifest, a mask-given model without a mask source,
            a mask source that does not detect.
    """
    from tqdm import tqdm

    from .data.bench import load_bench, read_bench_manifest

    if not models:
        raise UserError("no model to evaluate (--model)")
    if batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {batch_size}")
    if not benches and not clean:
        raise UserError("nothing to evaluate on: give --bench DIR and/or --clean DIR")
    mask_mode = "none" if given_mask in (None, "none") else ("true" if given_mask == "true" else "model")
    if isinstance(given_mask, str) and given_mask not in ("none", "true"):
        raise ValueError(f"given_mask must be None, 'none', 'true' or a Predictor, got {given_mask!r}")
    mask_model: Optional[Predictor] = given_mask if mask_mode == "model" else None  # type: ignore[assignment]
    if mask_model is not None and not mask_model.detects:
        raise UserError(f"--given-mask {mask_model.name}: that model does not predict masks")
    for model in models:
        if model.needs_mask and mask_mode == "none":
            raise UserError(f"{model.name} is a mask-given inpainting model: evaluate it with "
                            "--given-mask true or --given-mask MODEL")

    mask_label = {"none": None, "true": "true mask",
                  "model": f"{mask_model.name if mask_model else ''} mask"}[mask_mode]
    names = _unique_labels([m.name if mask_label is None else f"{m.name} + {mask_label}" for m in models])
    bench_paths = [Path(b) for b in benches]
    bench_names = _bench_labels(bench_paths)
    bench_samples = [load_bench(b) for b in bench_paths]  # UserError on missing folder/manifest/files
    for path, samples in zip(bench_paths, bench_samples):
        if not samples:
            raise UserError(f"benchmark {path} has no samples")
    manifests = [read_bench_manifest(b) for b in bench_paths]

    fid_fn, fid_reason, lpips_fn, lpips_reason = _resolve_optional_metrics(fid_extractor, lpips)
    fid_note = M.NA if fid_fn is None else ""
    lpips_note = M.NA if lpips_fn is None else ""
    torch.manual_seed(seed)
    acc = _Accumulator(threshold, fid_fn, lpips_fn, grid_rows)
    show = sys.stderr.isatty() if progress is None else progress
    total = sum(len(s) for s in bench_samples)
    timing: dict[str, float] = defaultdict(float)

    with tqdm(total=total, desc="evaluate", unit="img", disable=not show) as bar:
        for bench, samples in zip(bench_names, bench_samples):
            for batch in _batches(samples, batch_size):
                corrupted, gt, true_hole, infos = _load_batch(batch)
                groups = acc.groups([i["pattern"] for i in infos], [i["bucket"] for i in infos])
                inverted = _is_inverted(batch[0])
                given = None
                if mask_mode == "true":
                    given = true_hole  # already the inverted mask on an inverted-mask target
                elif mask_model is not None:
                    given = _run_predictor(mask_model, corrupted, None).hole
                    given = 1.0 - given if inverted else given
                real_features = (fid_fn(gt).reshape(gt.shape[0], -1).double().cpu()
                                 if fid_fn is not None else None)
                for model, name in zip(models, names):
                    start = time.perf_counter()
                    pred = (_run_inverted(model, corrupted, given) if inverted
                            else _run_predictor(model, corrupted, given))
                    timing[name] += time.perf_counter() - start
                    acc.add(name, bench, infos, groups, corrupted, gt, true_hole, pred, real_features)
                bar.update(len(batch))

    clean_records, clean_rows = [], []
    for folder in clean:
        records, rows = _evaluate_clean(models, names, Path(folder), clean_size, batch_size, show)
        clean_records += records
        clean_rows += rows

    results = _collect(acc, names, bench_names, bench_paths, manifests, lpips_note, fid_note)
    results["clean"] = clean_records
    results["settings"] = {
        "threshold": threshold, "batch_size": batch_size, "given_mask": mask_mode,
        "given_mask_model": mask_model.name if mask_model is not None else None,
        "clean": [str(c) for c in clean], "clean_size": clean_size, "seed": seed,
        "lpips": {"available": lpips_fn is not None, "reason": lpips_reason},
        "fid": {"available": fid_fn is not None, "reason": fid_reason},
    }
    per_image = _per_image_rows(acc, names, bench_names) + clean_rows
    if out is not None:
        n_images = {name: sum(len(s) for s in bench_samples) for name in names}
        write_outputs(results, per_image, acc, Path(out), timing, n_images)
    return results


def _collect(acc: _Accumulator, names, bench_names, bench_paths, manifests, lpips_note, fid_note) -> dict:
    """Records in a fixed order: method, bench, pattern (manifest order, then all), bucket, part."""
    detection, restoration, benches = [], [], []
    for bench, path, manifest in zip(bench_names, bench_paths, manifests):
        entries = manifest["entries"]
        patterns = _ordered(list(manifest.get("patterns") or [])
                            + [pattern_label(e["pattern"], e.get("meta")) for e in entries])
        buckets = _ordered(list(manifest.get("buckets") or []) + [e["bucket"] for e in entries])
        benches.append({"name": bench, "path": str(path), "n_images": len(entries),
                        "patterns": patterns, "buckets": buckets, "size": manifest.get("size"),
                        "seed": manifest.get("seed")})
        for method in names:
            for pattern in patterns + [ALL]:
                for bucket in buckets + [ALL]:
                    stage_keys = [k for k in acc.det if k[:4] == (method, bench, pattern, bucket)]
                    for key in sorted(stage_keys, key=lambda k: (k[4] != FINAL, k[4])):
                        detection.append({"method": method, "bench": bench, "pattern": pattern, "bucket": bucket,
                                          "part": key[4], "metrics": acc.detection_metrics(key)})
                    for part in ("rec", "refined", "composite"):
                        key = (method, bench, pattern, bucket, part)
                        if acc.has_restoration(key):
                            restoration.append({"method": method, "bench": bench, "pattern": pattern,
                                                "bucket": bucket, "part": part,
                                                "metrics": acc.restoration_metrics(key, lpips_note, fid_note)})
    return {"format": FORMAT, "version": VERSION, "methods": list(names), "benches": benches,
            "detection": detection, "restoration": restoration}


# ----------------------------------------------------------------------------- clean photos
def _load_clean(folder: Path, size: int) -> tuple[list[str], Tensor]:
    from .data.corruptions import center_crop_box, resize_crop
    from .data.dataset import to_chw
    from .data.folders import list_photos
    from .io import read_image

    paths = list_photos(folder)  # UserError when missing/empty
    images = []
    for path in paths:
        rgb = read_image(path).rgb
        images.append(to_chw(resize_crop(rgb, (size, size), center_crop_box(rgb.shape[:2], (size, size)))))
    return [str(p.relative_to(folder)) for p in paths], torch.stack(images)


def _evaluate_clean(models, names, folder: Path, size: int, batch_size: int, show: bool):
    """False-positive rate and image change of each detector on uncorrupted photos."""
    from tqdm import tqdm

    ids, images = _load_clean(folder, size)
    records, rows = [], []
    for model, name in zip(models, names):
        if not model.detects:
            continue
        flagged, change_sq, change_abs = [], [], []
        for start in tqdm(range(0, len(ids), batch_size), desc=f"clean {name}", disable=not show):
            x = images[start:start + batch_size]
            pred = _run_predictor(model, x, None)
            flagged.append(pred.hole.flatten(1).mean(1).double())
            final = pred.final
            if final is not None:
                restored = M.composite(final, x, pred.mask_for_restoration())
                change_sq.append(((restored - x) ** 2).flatten(1).mean(1).double())
                change_abs.append((restored - x).abs().flatten(1).mean(1).double())
        fpr = torch.cat(flagged)
        metrics: dict[str, Any] = {
            "fpr/per_image": fpr.mean().item(),  # equal image sizes: also the pooled rate
            "fpr/median": fpr.median().item(),
            "fpr/max": fpr.max().item(),
            "images_flagged": (fpr > 0).double().mean().item(),
        }
        mse = torch.cat(change_sq) if change_sq else None
        if mse is not None:
            l1 = torch.cat(change_abs)
            metrics["psnr_change/pooled"] = (10 * torch.log10(1.0 / mse.mean())).item()
            metrics["l1_change"] = (100 * l1.mean()).item()
            metrics["images_unchanged"] = (mse == 0).double().mean().item()
        metrics["n_images"] = float(len(ids))
        records.append({"method": name, "bench": f"clean:{folder.name}", "pattern": "clean", "bucket": ALL,
                        "part": FINAL, "metrics": metrics})
        for i, image_id in enumerate(ids):
            row = {"bench": f"clean:{folder.name}", "id": image_id, "pattern": "clean", "bucket": "",
                   "hole_ratio": 0.0, "method": name, "fpr": fpr[i].item()}
            if mse is not None:
                row["psnr_change"] = (10 * torch.log10(1.0 / mse[i])).item()
            rows.append(row)
    return records, rows


# ----------------------------------------------------------------------------- per-image rows
def _per_image_rows(acc: _Accumulator, names, bench_names) -> list[dict]:
    rows = []
    for method in names:
        for bench in bench_names:
            infos = acc.images.get((method, bench), [])
            if not infos:
                continue
            columns: dict[str, Tensor] = {}
            stages = sorted({k[4] for k in acc.det if k[:4] == (method, bench, ALL, ALL)},
                            key=lambda s: (s != FINAL, s))
            for stage in stages:
                binary, soft = acc.det[(method, bench, ALL, ALL, stage)]
                values = binary.per_image()
                prefix = "" if stage == FINAL else f"{stage}/"
                for k in ("acc", "hole/f1", "hole/iou", "valid/f1", "valid/iou"):
                    columns[prefix + k] = values[k]
                if soft is not None:
                    columns[prefix + "bce"] = soft.per_image()["bce"]
            for part in ("rec", "refined", "composite"):
                if (method, bench, part) in acc.rest:
                    for k, v in acc.per_image_restoration(method, bench, part).items():
                        columns[f"{part}/{k}"] = v
            for i, info in enumerate(infos):
                row = {"bench": bench, "id": info["id"], "pattern": info["pattern"], "bucket": info["bucket"],
                       "hole_ratio": info["hole_ratio"], "method": method}
                row.update({k: v[i].item() for k, v in columns.items()})
                rows.append(row)
    return rows


# ----------------------------------------------------------------------------- writing
def results_csv_rows(results: dict) -> list[dict]:
    """One row per number: section, method, bench, pattern, bucket, part, metric, value."""
    rows = []
    for section in ("detection", "restoration", "clean"):
        for rec in results.get(section, []):
            for metric, value in rec["metrics"].items():
                rows.append({"section": section, "method": rec["method"], "bench": rec["bench"],
                             "pattern": rec["pattern"], "bucket": rec["bucket"], "part": rec["part"],
                             "metric": metric, "value": _csv_value(value)})
    return rows


def _csv_value(value: Any) -> str:
    value = _jsonable(value)
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _write_csv(path: Path, rows: list[dict]) -> None:
    columns = _ordered([k for row in rows for k in row])
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _csv_value(row.get(k)) for k in columns})


def _sanitise(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _sanitise(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_sanitise(v) for v in obj]
    return _jsonable(obj)


def write_outputs(results: dict, per_image: list[dict], acc: Optional[_Accumulator], out: Path,
                  timing: Optional[dict] = None, n_images: Optional[dict] = None) -> None:
    """results.json, results.csv, per_image.csv, tables.md, figures and timing.json under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(_sanitise(results), indent=1) + "\n")
    _write_csv(out / "results.csv", results_csv_rows(results))
    _write_csv(out / "per_image.csv", per_image)
    (out / "tables.md").write_text(render_tables(results))
    if acc is not None:
        write_figures(results, acc.grids, out)
    if timing:
        (out / "timing.json").write_text(json.dumps(
            {name: {"seconds": round(sec, 3), "images_per_s": round((n_images or {}).get(name, 0) / sec, 3)
                    if sec > 0 else None} for name, sec in timing.items()}, indent=1) + "\n")


def load_results(path: Union[str, Path]) -> dict:
    """A stored ``results.json`` (file or its folder)."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    try:
        results = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read evaluation results {path}: {exc}") from None
    if results.get("format") != FORMAT:
        raise UserError(f"{path} is not a blindinpaint evaluation result")
    return results


# ----------------------------------------------------------------------------- tables
#: +1: higher is better, -1: lower is better (for bold-facing the best method of a column).
_DIRECTION = {"acc": 1, "f1": 1, "iou": 1, "psnr": 1, "ssim": 1, "bce": -1, "l1": -1, "fid": -1, "lpips": -1}
_DIGITS = {"psnr": 2, "l1": 2, "fid": 2}

# Rows of the detection tables (main Tables 1 and 4 use the first four: authors' convention).
DETECTION_ROWS = (
    ("Acc ↑ (per image)", "acc/per_image"),
    ("F1 ↑ (valid+, per image) [paper]", "valid/f1/per_image"),
    ("BCE ↓ (per image)", "bce/per_image"),
    ("IoU ↑ (valid+, per image) [paper]", "valid/iou/per_image"),
    ("F1 ↑ (hole+, per image)", "hole/f1/per_image"),
    ("IoU ↑ (hole+, per image)", "hole/iou/per_image"),
    ("Acc ↑ (pooled)", "acc/pooled"),
    ("BCE ↓ (pooled)", "bce/pooled"),
    ("F1 ↑ (valid+, pooled)", "valid/f1/pooled"),
    ("IoU ↑ (valid+, pooled)", "valid/iou/pooled"),
    ("F1 ↑ (hole+, pooled)", "hole/f1/pooled"),
    ("IoU ↑ (hole+, pooled)", "hole/iou/pooled"),
)
# Rows of the restoration tables (main Tables 3 and 5: PSNR, SSIM, FID, LPIPS; GDN Table 1: L1 %).
RESTORATION_ROWS = (
    ("PSNR ↑", "psnr"), ("SSIM ↑", "ssim"), ("FID ↓", "fid"), ("LPIPS ↓", "lpips"), ("L1 % ↓", "l1"),
    ("PSNR ↑ (hole)", "psnr/hole"), ("SSIM ↑ (hole)", "ssim/hole"), ("L1 % ↓ (hole)", "l1/hole"),
)


def _fmt(value: Any, metric: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return f"{value:.{_DIGITS.get(metric.split('/')[0], 3)}f}"


def _numeric(value: Any) -> Optional[float]:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value):
        return float(value)
    if value == "inf":
        return math.inf
    return None


def _metric_table(row_groups: list[tuple[str, list[tuple[str, list[Any]]]]], columns: list[str],
                  first: str = "Metric", second: str = "Method") -> list[str]:
    """Markdown rows: one group per metric label, one line per method; best numeric value in bold."""
    lines = [f"| {first} | {second} | " + " | ".join(columns) + " |",
             "|---|---|" + "---:|" * len(columns)]
    for label, method_rows in row_groups:
        metric = label
        direction = next((d for k, d in _DIRECTION.items() if k in metric.lower().split()[0].lower()), 0)
        best = {}
        if direction and len(method_rows) > 1:
            for c in range(len(columns)):
                values = [_numeric(vals[c][0]) for _, vals in method_rows]
                numeric = [v for v in values if v is not None]
                if len(numeric) > 1:
                    best[c] = max(numeric) if direction > 0 else min(numeric)
        for i, (method, vals) in enumerate(method_rows):
            cells = []
            for c, (raw, key) in enumerate(vals):
                text = _fmt(raw, key)
                if c in best and _numeric(raw) == best[c]:
                    text = f"**{text}**"
                elif c > 0 and isinstance(raw, str) and raw.startswith("n/a") and raw == vals[0][0]:
                    text = "n/a"  # the full reason is in the row's first cell
                cells.append(text)
            lines.append(f"| {label if i == 0 else ''} | {method} | " + " | ".join(cells) + " |")
    return lines


def _index(records: list[dict]) -> dict[tuple, dict]:
    return {(r["method"], r["bench"], r["pattern"], r["bucket"], r["part"]): r["metrics"] for r in records}


def _raw_part(restoration: dict, method: str, bench: str) -> str:
    """The model's last restoration: ``refined`` if it has a refiner, else ``rec``."""
    return "refined" if (method, bench, ALL, ALL, "refined") in restoration else "rec"


def render_tables(results: Union[dict, str, Path]) -> str:
    """Markdown tables (main Tables 1, 3, 4 layout) from a results dict or a stored results.json.

    Detection: rows = metric x method, columns = hole-ratio buckets (+ all), one block per
    bench and pattern; the ``[paper]`` rows use the authors' convention.  A per-stage table
    follows.  Restoration: the model's raw last output (``refined`` when it has a refiner,
    else ``rec``; the authors' convention) and the composite.  Then clean photos.
    """
    if not isinstance(results, dict):
        results = load_results(results)
    det, rest = _index(results.get("detection", [])), _index(results.get("restoration", []))
    methods = results.get("methods", [])
    settings = results.get("settings", {})
    lines = ["# Evaluation results", ""]
    for b in results.get("benches", []):
        lines.append(f"- bench `{b['name']}`: {b['n_images']} images, {b.get('size')} px, patterns "
                     f"{', '.join(b['patterns'])}, buckets {', '.join(b['buckets'])} ({b['path']})")
    mask = settings.get("given_mask", "none")
    lines.append(f"- methods: {', '.join(methods)}; restoration mask: "
                 + {"none": "each model's own detection", "true": "the true mask"}.get(
                     mask, f"predicted by {settings.get('given_mask_model')}"))
    for name in ("lpips", "fid"):
        info = settings.get(name, {})
        reason = f": {info['reason']}" if info.get("reason") else ""
        status = "computed" if info.get("available") else M.NA + reason
        lines.append(f"- {name.upper()}: {status}")
    lines += ["- detection threshold 0.5; `hole+` = hole region is the positive class; `valid+` = valid pixels "
              "positive (the authors' convention, flatters small holes); per image = mean over images "
              "(authors' samplewise); pooled = pixel counts added over all images.", ""]

    for b in results.get("benches", []):
        bench, buckets = b["name"], b["buckets"] + [ALL]
        patterns = [p for p in b["patterns"] + [ALL]]
        if any(k[1] == bench for k in det):
            lines += [f"## Detection: `{bench}` (layout of main Tables 1 and 4)", ""]
            for pattern in patterns:
                groups = []
                for label, key in DETECTION_ROWS:
                    rows = [(m, [(det.get((m, bench, pattern, bu, FINAL), {}).get(key), key) for bu in buckets])
                            for m in methods if (m, bench, pattern, ALL, FINAL) in det]
                    if rows:
                        groups.append((label, rows))
                if groups:
                    lines += [f"### pattern `{pattern}`", ""] + _metric_table(groups, buckets) + [""]
            stage_rows = [(m, part) for (m, be, p, bu, part) in det if be == bench and p == ALL and bu == ALL
                          and part != FINAL]
            if stage_rows:
                lines += [f"## Detection per stage: `{bench}` (S1 = coarsest; all patterns)", ""]
                groups = []
                for label, key in (("IoU ↑ (hole+, per image)", "hole/iou/per_image"),
                                   ("IoU ↑ (valid+, per image)", "valid/iou/per_image"),
                                   ("Acc ↑ (per image)", "acc/per_image")):
                    rows = [(f"{m} {part}", [(det.get((m, bench, ALL, bu, part), {}).get(key), key) for bu in buckets])
                            for m, part in stage_rows]
                    groups.append((label, rows))
                lines += _metric_table(groups, buckets, second="Method, stage") + [""]
        if any(k[1] == bench for k in rest):
            lines += [f"## Restoration: `{bench}` (layout of main Tables 3 and 5)", "",
                      "raw = the model's last output without compositing (`refined` when it has a refiner, "
                      "else `rec`; the authors' convention); composite = known pixels copied back outside "
                      "the mask the restoration used; (hole) = over true hole pixels only.", ""]
            for pattern in patterns:
                groups = []
                for label, key in RESTORATION_ROWS:
                    for which in ("raw", "composite"):
                        rows = []
                        for m in methods:
                            part = _raw_part(rest, m, bench) if which == "raw" else "composite"
                            if (m, bench, pattern, ALL, part) in rest:
                                rows.append((m, [(rest.get((m, bench, pattern, bu, part), {}).get(key), key)
                                                 for bu in buckets]))
                        if rows:
                            groups.append((f"{label} {which}", rows))
                if groups:
                    lines += [f"### pattern `{pattern}`", ""] + _metric_table(groups, buckets) + [""]
    clean = results.get("clean", [])
    if clean:
        lines += ["## Clean photos (no corruption: every flagged pixel is a false positive)", "",
                  "| Method | Photos | FPR ↓ (pixels flagged) | median | max | images flagged | "
                  "PSNR vs input (dB) | L1 change % | n |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for r in clean:
            m = r["metrics"]
            lines.append(f"| {r['method']} | {r['bench']} | {_fmt(m.get('fpr/per_image'), 'fpr')} | "
                         f"{_fmt(m.get('fpr/median'), 'fpr')} | {_fmt(m.get('fpr/max'), 'fpr')} | "
                         f"{_fmt(m.get('images_flagged'), 'x')} | {_fmt(m.get('psnr_change/pooled'), 'psnr')} | "
                         f"{_fmt(m.get('l1_change'), 'l1')} | {int(m.get('n_images', 0))} |")
        lines.append("")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- figures (PIL only)
_PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
            (227, 119, 194), (127, 127, 127)]


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _tile(t: Optional[Tensor], side: int):
    from PIL import Image

    if t is None:
        return Image.new("RGB", (side, side), (235, 235, 235))
    array = (t.clamp(0, 1) * 255).round().byte()
    if array.shape[0] == 1:
        array = array.expand(3, -1, -1)
    image = Image.fromarray(array.permute(1, 2, 0).numpy())
    scale = side / max(image.size)
    return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                        Image.Resampling.NEAREST if t.shape[0] == 1 else Image.Resampling.BILINEAR)


def render_grid(rows: list[_GridRow], methods: list[str], side: int = 128):
    """Input | true mask | per method: mask per stage, final mask, restored | ground truth (PIL image)."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    columns: list[tuple[str, str, Callable[[_GridRow], Optional[Tensor]]]] = [
        ("", "input", lambda r: r.corrupted), ("", "true mask", lambda r: r.true_hole)]
    for m in methods:
        entries = [r.per_method.get(m) for r in rows if m in r.per_method]
        if not entries:
            continue
        n_stages = max(len(e["stages"]) for e in entries)
        for s in range(n_stages):
            columns.append((m if s == 0 else "", f"S{s + 1}",
                            lambda r, m=m, s=s: (r.per_method.get(m) or {}).get("stages", [None] * (s + 1))[s]
                            if len((r.per_method.get(m) or {}).get("stages", [])) > s else None))
        if any(e["hole"] is not None for e in entries):
            columns.append((m if n_stages == 0 else "", "mask", lambda r, m=m: (r.per_method.get(m) or {}).get("hole")))
        columns.append((m if n_stages == 0 and all(e["hole"] is None for e in entries) else "", "restored",
                        lambda r, m=m: (r.per_method.get(m) or {}).get("restored")))
    columns.append(("", "ground truth", lambda r: r.gt))
    pad, header = 4, 30
    canvas = Image.new("RGB", (pad + len(columns) * (side + pad), header + len(rows) * (side + pad)), "white")
    draw = ImageDraw.Draw(canvas)
    for c, (group, label, get) in enumerate(columns):
        x = pad + c * (side + pad)
        if group:
            draw.text((x, 2), group[:40], fill=(0, 0, 0), font=font)
        draw.text((x, 16), label, fill=(60, 60, 60), font=font)
        for r, row in enumerate(rows):
            canvas.paste(_tile(get(row), side), (x, header + r * (side + pad)))
    return canvas


def render_bars(panels: list[tuple[str, list[str], dict[str, list[Optional[float]]]]], title: str,
                width: int = 360, height: int = 240):
    """Grouped bar charts drawn with PIL: one panel per (metric, groups, method -> values)."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    legend_h = 14 * (1 + max((len(p[2]) for p in panels), default=0))
    canvas = Image.new("RGB", (width * len(panels), height + legend_h + 20), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((6, 4), title, fill=(0, 0, 0), font=font)
    for k, (metric, groups, values) in enumerate(panels):
        x0, y0, y1 = k * width + 40, 40, height - 20
        numbers = [v for vals in values.values() for v in vals if v is not None and math.isfinite(v)]
        top = max(numbers) * 1.1 if numbers and max(numbers) > 0 else 1.0
        draw.text((x0, 22), metric, fill=(0, 0, 0), font=font)
        draw.line([(x0, y0), (x0, y1), (k * width + width - 10, y1)], fill=(0, 0, 0))
        draw.text((x0 - 36, y0 - 6), f"{top:.3g}", fill=(90, 90, 90), font=font)
        slot = (width - 60) / max(1, len(groups))
        bar_w = slot * 0.8 / max(1, len(values))
        for g, group in enumerate(groups):
            gx = x0 + 4 + g * slot
            draw.text((gx, y1 + 4), group, fill=(0, 0, 0), font=font)
            for i, (method, vals) in enumerate(values.items()):
                v = vals[g]
                if v is None or not math.isfinite(v):
                    continue
                bx = gx + i * bar_w
                by = y1 - (y1 - y0) * max(0.0, v) / top
                draw.rectangle([bx, by, bx + bar_w - 2, y1], fill=_PALETTE[i % len(_PALETTE)])
                draw.text((bx, by - 11), f"{v:.3g}", fill=(0, 0, 0), font=font)
    for i, method in enumerate(next((p[2] for p in panels), {})):
        y = height + 14 * i + 4
        draw.rectangle([8, y, 18, y + 9], fill=_PALETTE[i % len(_PALETTE)])
        draw.text((24, y - 1), method, fill=(0, 0, 0), font=font)
    return canvas


def write_figures(results: dict, grids: dict, out: Path) -> list[Path]:
    """``grid_<pattern>.png`` and ``bars_<pattern>.png`` (bench name prefixed with several benches)."""
    written = []
    several = len(results.get("benches", [])) > 1
    methods = results.get("methods", [])
    det, rest = _index(results.get("detection", [])), _index(results.get("restoration", []))
    for b in results.get("benches", []):
        bench = b["name"]
        prefix = f"{_safe(bench)}_" if several else ""
        for pattern in b["patterns"]:
            rows = list(grids.get((bench, pattern), {}).values())
            if rows:
                path = out / f"grid_{prefix}{_safe(pattern)}.png"
                render_grid(rows, methods).save(path)
                written.append(path)
            groups = b["buckets"] + [ALL]
            panels = []
            iou = {m: [_numeric(det.get((m, bench, pattern, g, FINAL), {}).get("hole/iou/per_image"))
                       for g in groups] for m in methods if (m, bench, pattern, ALL, FINAL) in det}
            if iou:
                panels.append(("IoU (hole+, per image)", groups, iou))
            psnr = {m: [_numeric(rest.get((m, bench, pattern, g, "composite"), {}).get("psnr")) for g in groups]
                    for m in methods if (m, bench, pattern, ALL, "composite") in rest}
            if psnr:
                panels.append(("PSNR composite (dB)", groups, psnr))
            if panels:
                path = out / f"bars_{prefix}{_safe(pattern)}.png"
                render_bars(panels, f"{bench} / {pattern}").save(path)
                written.append(path)
    return written


# ----------------------------------------------------------------------------- CLI: evaluate
def _parse_given_mask(value: str, device) -> Union[str, Predictor]:
    from .predictors import load_predictor

    if value in ("none", "true"):
        return value
    return load_predictor(value, device)


def evaluate_main(args) -> int:
    """Runner of ``blindinpaint evaluate`` (arguments: ``cli._add_evaluate``)."""
    from .predictors import load_predictor
    from .train.distributed import resolve_device

    if args.render:
        text = render_tables(args.render)
        if args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            (Path(args.out) / "tables.md").write_text(text)
        print(text)
        return 0
    if not args.model:
        raise UserError("give at least one --model NAME_OR_PATH (or --render RESULTS.json)")
    if not args.out:
        raise UserError("give an output folder with -o OUT")
    if args.threads is not None:
        if args.threads < 1:
            raise UserError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    models = [load_predictor(name, device) for name in args.model]
    given = _parse_given_mask(args.given_mask, device)
    results = evaluate(models, args.bench or [], args.out, given_mask=given, clean=args.clean or [],
                       clean_size=args.clean_size, batch_size=args.batch_size, grid_rows=args.grid_rows,
                       seed=args.seed)
    print(f"{len(results['detection'])} detection + {len(results['restoration'])} restoration + "
          f"{len(results['clean'])} clean records -> {Path(args.out) / 'results.json'}, tables.md")
    return 0


# ----------------------------------------------------------------------------- bench (compute)
REPO_CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def resolve_bench_model(name: str) -> str:
    """``hcl_tiny`` -> ``configs/hcl_tiny.yaml`` (current folder, then the source tree's configs/);
    YAML paths, exports, run folders and hub names are returned unchanged for the profiler."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return name
    for folder in (Path("configs"), REPO_CONFIGS):
        for suffix in (".yaml", ".yml"):
            candidate = folder / f"{name}{suffix}"
            if candidate.is_file():
                return str(candidate)
    return name  # a hub model name: the profiler's hub lookup reports unknown names


def _vcnet_forward(model, size: int, device, refine: bool = True):
    image = torch.rand(1, 3, size, size, device=device) * 2 - 1  # [-1, 1] inside VCNet
    return lambda: model(image)


def _gdn_forward(model, size: int, device, refine: bool = True):
    image = torch.rand(1, 3, size, size, device=device)  # [0, 1] in GDN
    hole = torch.zeros(1, 1, size, size, device=device)
    hole[..., size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 1  # the cost does not depend on the mask
    return lambda: model.inpaint(image, hole)  # inference = generator + composite (no detector)


# Example forwards of the families ``profile.EXAMPLE_FORWARD`` does not list (only added when absent).
_EXTRA_FORWARDS = {"vcnet": _vcnet_forward, "gdn": _gdn_forward, "seg": "hcl"}


def profile_one(source: str, size: int, repeats: int, device: str, refine: bool = True) -> dict:
    """:func:`blindinpaint.profile.profile` of one model at one size (call in a fresh process:
    its peak memory is the process's peak resident size)."""
    from . import profile as P

    for task, forward in _EXTRA_FORWARDS.items():
        if task not in P.EXAMPLE_FORWARD:
            P.EXAMPLE_FORWARD[task] = P.EXAMPLE_FORWARD.get(forward) if isinstance(forward, str) else forward
    return P.profile(source, size=size, repeats=repeats, latency=True, device=device, refine=refine)


def _profile_subprocess(source: str, size: int, repeats: int, device: str, threads: Optional[int],
                        refine: bool) -> dict:
    """Run :func:`profile_one` in a new Python process; a UserError there becomes one here."""
    import os
    import subprocess

    code = ("import json, sys, torch\n"
            "from blindinpaint.errors import UserError\n"
            "from blindinpaint.evaluate import profile_one\n"
            f"threads = {threads!r}\n"
            "if threads: torch.set_num_threads(threads)\n"
            "try:\n"
            f"    r = profile_one({source!r}, {size}, {repeats}, {device!r}, {refine!r})\n"
            "except UserError as exc:\n"
            "    print(json.dumps({'error': str(exc)})); sys.exit(0)\n"
            "print(json.dumps(r))\n")
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"profiling {source} at {size} px failed: {tail}")
    result = json.loads(lines[-1])
    if "error" in result:
        raise UserError(result["error"])
    return result


def run_bench(models: Sequence[str], sizes: Sequence[int] = (256,), repeats: int = 5, device: str = "auto",
              threads: Optional[int] = None, refine: bool = True, out: Optional[Union[str, Path]] = None,
              progress: Optional[bool] = None) -> dict:
    """Params, MACs, latency and peak memory of each model at each size (supp. Table 5 layout).

    Every (model, size) is profiled in its own process so its peak memory is its own.
    Returns ``{"rows": [...], "device", "threads", "mac_counter"}``; with ``out`` also writes
    ``bench.json`` and ``bench.md``.
    """
    from tqdm import tqdm

    from .train.distributed import resolve_device

    if not models:
        raise UserError("no model given (--models a,b,...)")
    if repeats < 1 or any(s < 8 for s in sizes):
        raise UserError("--repeats must be >= 1 and every --sizes value >= 8")
    dev = str(resolve_device(device))
    n_threads = threads or torch.get_num_threads()
    rows = []
    show = sys.stderr.isatty() if progress is None else progress
    jobs = [(m, s) for m in models for s in sizes]
    for name, size in tqdm(jobs, desc="bench", disable=not show):
        r = _profile_subprocess(resolve_bench_model(name), size, repeats, dev, threads, refine)
        r["name"] = name
        rows.append(r)
    result = {"rows": rows, "device": dev, "threads": rows[0].get("threads", n_threads) if rows else n_threads,
              "repeats": repeats, "refine": refine,
              "mac_counter": rows[0].get("mac_counter") if rows else None}
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench.json").write_text(json.dumps(_sanitise(result), indent=1) + "\n")
        (out / "bench.md").write_text(render_bench(result))
    return result


def render_bench(result: dict) -> str:
    """Markdown in the layout of supp. Table 5 (rows = models, columns = cost figures)."""
    lines = ["# Computational overhead (layout of supp. Table 5)", "",
             f"Device {result['device']}, {result['threads']} threads, latency = median of {result['repeats']} "
             "forward passes (batch 1) after 2 warm-up passes"
             + ("" if result.get("refine", True) else ", without refiner")
             + f"; MACs by {result.get('mac_counter')}; memory = peak resident size of a fresh process "
             "(CPU) or torch.cuda.max_memory_allocated (CUDA). Params (M) = the network without refiner and "
             "training-only critic (HCL: stem + encoder + heads + bottleneck + decoder, the figure of supp. "
             "Table 5; GDN: generator + detector); 'total' includes refiner and critic.", "",
             "| Model | Input | Params (M) | Total params (M) | Memory (MB) | GMACs | Inference time (ms) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        params = r.get("params", {})
        main = params.get("restoration",
                          params.get("total", 0) - params.get("refiner", 0) - params.get("discriminator", 0))
        latency = r.get("latency_ms")
        lines.append(f"| {r['name']} | {r['size']} | {main / 1e6:.2f} | {params.get('total', 0) / 1e6:.2f} | "
                     f"{(r.get('peak_mem_mb') or 0):.0f} | {r['macs'] / 1e9:.2f} | "
                     + (f"{latency:.1f}" if latency is not None else "-") + " |")
    return "\n".join(lines) + "\n"


def bench_main(args) -> int:
    """Runner of ``blindinpaint bench`` (arguments: ``cli._add_bench``)."""
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    try:
        sizes = [int(s) for s in str(args.sizes).split(",") if s.strip()]
    except ValueError:
        raise UserError(f"--sizes must be a comma list of integers, got {args.sizes!r}") from None
    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads must be >= 1, got {args.threads}")
    result = run_bench(models, sizes, repeats=args.repeats, device=args.device, threads=args.threads,
                       refine=not getattr(args, "no_refiner", False), out=args.out)
    print(render_bench(result))
    return 0
