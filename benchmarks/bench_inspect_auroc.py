"""How well does ``blindinpaint inspect`` find the filled region? (a benchmark, not a test)

    python benchmarks/bench_inspect_auroc.py --model runs/gdn_cpu --images data/photos --split test \\
        --size 256 --count 48 --seed 0 [--write docs/results/gdn_inspect_auroc.md]
    python benchmarks/bench_inspect_auroc.py --model runs/gdn_cpu --bench bench/test256 [--count N]

The test set: clean photos with seeded free-form (brush) hole masks, one per photo crop, the
hole-ratio buckets cycling through GDN's (1,10] ... (50,60] %: either made here from a photo
folder (``--images``, a corpus folder with ``--split``, or any folder of photos: photo ``i % n``,
a seeded crop of ``--size`` pixels, mask ``i`` from ``blindinpaint.data.masks.sample_mask``), or
the ground-truth images and true masks of a ``blindinpaint synth`` folder (``--bench``).

Each hole is filled by

* (a) the GDN model's generator: the product output of ``blindinpaint inpaint`` (known pixels
  copied back, 8-bit) and the generator's raw output (every pixel regenerated, what the
  detector sees in training);
* (b) OpenCV's classical inpainting, ``cv2.inpaint`` with ``INPAINT_TELEA`` and ``INPAINT_NS``
  (radius ``--radius``), when the optional wheel ``opencv-python-headless`` is installed
  (``pip install -e ".[bench]"``); without it the script says so and reports (a) only.

Then the GDN dense detector inspects every filled image (``Restorer.inspect``, exactly what
``blindinpaint inspect`` writes as ``_artifacts16.png``), and the heat map is scored against the
hole mask (ground truth: 1 = filled pixel) by the area under the ROC curve: per image (then mean
and median over images) and pooled over all pixels of all images.  AUROC 0.5 = the heat map
says nothing about where the fill is, 1 = every filled pixel scores above every known pixel.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
GDN_BUCKETS = "1-10,10-20,20-30,30-40,40-50,50-60"
CROP_ZOOM = (1.0, 1.25)  # as blindinpaint synth: most of the photo, slightly varied per sample
OPENCV_MISSING = ("OpenCV is not installed, so only the GDN rows are measured: "
                  "pip install opencv-python-headless (or pip install -e \".[bench]\")")


# ----------------------------------------------------------------------------- AUROC
def auroc(score, hole) -> np.ndarray:
    """Per-image AUROC of ``score`` as a detector of ``hole`` pixels.

    score, hole: arrays (or tensors) of one shape ``B x ...``: the first axis indexes images,
    the rest are pixels; ``hole`` is 1 / True on positives (filled pixels).  Returns ``B``
    float64: the Mann-Whitney U statistic over ``n_pos * n_neg`` (average ranks for ties, so a
    tied positive/negative pair counts one half), computed for all images at once by sorting;
    NaN for an image whose pixels are all hole or all known.
    """
    import torch

    from blindinpaint.train.gdn_task import auroc_per_image

    s = torch.as_tensor(np.asarray(score, dtype=np.float64))
    y = torch.as_tensor(np.asarray(hole, dtype=np.float64))
    if s.shape != y.shape or s.ndim < 1:
        raise ValueError(f"score {tuple(s.shape)} and hole {tuple(y.shape)} must have one shape B x ...")
    return auroc_per_image(s.reshape(s.shape[0], -1), y.reshape(y.shape[0], -1)).numpy()


def pooled_auroc(score, hole) -> float:
    """AUROC over every pixel of every image together (one ranking of all pixels)."""
    s, y = np.asarray(score), np.asarray(hole)
    return float(auroc(s.reshape(1, -1), y.reshape(1, -1))[0])


# ----------------------------------------------------------------------------- test set
@dataclass
class Sample:
    """One test image: ``image`` H x W x 3 uint8 (clean), ``hole`` H x W bool (True = to fill)."""

    id: str
    image: np.ndarray
    hole: np.ndarray
    bucket: str


def make_test_set(images: str, split: Optional[str], size: int, count: int, seed: int,
                  buckets: str = GDN_BUCKETS) -> list[Sample]:
    """``count`` seeded samples: photo ``i % n`` of the folder / split, a ``size`` px seeded crop,
    a brush mask in bucket ``i % len(buckets)``; sample ``i`` depends only on (seed, i, photo)."""
    from blindinpaint.data.corruptions import random_crop_box, resize_crop
    from blindinpaint.data.dataset import PhotoCache, resolve_photos
    from blindinpaint.data.masks import make_rng, parse_buckets, sample_mask
    from blindinpaint.errors import UserError

    if size < 16:
        raise UserError(f"--size must be at least 16 pixels, got {size}")
    if count < 1:
        raise UserError(f"--count must be at least 1, got {count}")
    photos = resolve_photos(images, split)
    bucket_list = parse_buckets(buckets)
    cache = PhotoCache(2 * size)
    samples = []
    for i in range(count):
        rng = make_rng(seed, "inspect_auroc", i)
        photo = cache(photos[i % len(photos)])
        image = resize_crop(photo, (size, size), random_crop_box(photo.shape[:2], (size, size), rng, CROP_ZOOM))
        bucket = bucket_list[i % len(bucket_list)]
        hole = sample_mask(size, bucket, rng, kind="brush")
        samples.append(Sample(f"{i:04d}", np.array(image), hole, bucket.name))  # writable copy
    return samples


def load_test_set(bench: str, count: Optional[int] = None) -> list[Sample]:
    """The (ground-truth image, true mask) pairs of a ``blindinpaint synth`` folder (first ``count``)."""
    from blindinpaint.data.bench import load_bench

    chosen = load_bench(bench)[:count]
    return [Sample(s.id, np.array(s.load_gt()), s.load_hole(), s.bucket) for s in chosen]  # writable copies


# ----------------------------------------------------------------------------- fills
Fill = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (H x W x 3 uint8, H x W bool) -> H x W x 3 uint8


def load_cv2():
    """The ``cv2`` module, or None when the optional OpenCV wheel is not installed."""
    try:
        import cv2
    except ImportError:
        return None
    return cv2


def gdn_fills(restorer) -> dict[str, Fill]:
    """(a): the product output of ``inpaint`` and the generator's raw output."""
    import torch

    from blindinpaint.io import from_tensor, mask_to_tensor, to_tensor

    def raw(image: np.ndarray, hole: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            x, h = to_tensor(image).to(restorer.device), mask_to_tensor(hole).to(restorer.device)
            return from_tensor(restorer.net.generator(x, h))

    return {"GDN (inpaint output, known pixels copied back)": lambda image, hole: restorer.inpaint(image, hole).image,
            "GDN raw generator output (every pixel regenerated)": raw}


def opencv_fills(cv2, radius: float) -> dict[str, Fill]:
    """(b): ``cv2.inpaint`` with the Telea and Navier-Stokes methods."""
    def fill(flag: int) -> Fill:
        return lambda image, hole: cv2.inpaint(np.ascontiguousarray(image), hole.astype(np.uint8) * 255,
                                               radius, flag)

    return {f"OpenCV Telea (cv2.INPAINT_TELEA, radius {radius:g})": fill(cv2.INPAINT_TELEA),
            f"OpenCV Navier-Stokes (cv2.INPAINT_NS, radius {radius:g})": fill(cv2.INPAINT_NS)}


# ----------------------------------------------------------------------------- measuring
def measure(restorer, samples: list[Sample], fills: dict[str, Fill], progress: bool = False) -> dict:
    """Fill every sample with every method, inspect it, score the heat map against the hole.

    Returns ``{"rows": [{method, images, mean, median, pooled, v_hole, v_known,
    buckets: {bucket: mean per-image AUROC}}], "buckets": [...]}``.
    """
    from tqdm import tqdm

    from blindinpaint.errors import UserError

    shapes = {s.hole.shape for s in samples}
    if len(shapes) != 1:
        raise UserError(f"the test images have {len(shapes)} different sizes; use one size (e.g. one synth folder)")
    holes = np.stack([s.hole for s in samples])
    buckets = list(dict.fromkeys(s.bucket for s in samples))
    bucket_of = np.array([s.bucket for s in samples])
    rows = []
    for name, fill in fills.items():
        heat = np.stack([restorer.inspect(fill(s.image, s.hole))
                         for s in tqdm(samples, desc=name.split(" (")[0], disable=not progress, file=sys.stderr)])
        per_image = auroc(heat, holes)
        rows.append({"method": name, "images": len(samples), "mean": float(np.nanmean(per_image)),
                     "median": float(np.nanmedian(per_image)), "pooled": pooled_auroc(heat, holes),
                     "v_hole": float(heat[holes].mean()), "v_known": float(heat[~holes].mean()),
                     "buckets": {b: float(np.nanmean(per_image[bucket_of == b])) for b in buckets}})
    return {"rows": rows, "buckets": buckets}


def render(result: dict, header: list[str]) -> str:
    """Markdown: a note per line of ``header``, the summary table, then AUROC per hole-ratio bucket."""
    lines = [*header, "",
             "| filled by | images | AUROC mean per image | median | pooled | mean V in hole | mean V known |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        lines.append(f"| {r['method']} | {r['images']} | {r['mean']:.3f} | {r['median']:.3f} | {r['pooled']:.3f} "
                     f"| {r['v_hole']:.3f} | {r['v_known']:.3f} |")
    buckets = result["buckets"]
    lines += ["", "Mean per-image AUROC by hole ratio (%):", "",
              "| filled by | " + " | ".join(buckets) + " |", "|---|" + "---:|" * len(buckets)]
    for r in result["rows"]:
        lines.append(f"| {r['method']} | " + " | ".join(f"{r['buckets'][b]:.3f}" for b in buckets) + " |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- command line
def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--model", default="gdn", help="GDN model: bundled name, export folder, run directory")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--bench", default=None, help="a 'blindinpaint synth' folder (its gt images + true masks)")
    source.add_argument("--images", default=None, help="photo folder or corpus folder (with --split)")
    p.add_argument("--split", default=None, help="with a corpus folder: the photos of this split, e.g. test")
    p.add_argument("--size", type=int, default=256, help="side of the square test crops (with --images)")
    p.add_argument("--count", type=int, default=None,
                   help="number of test images (default 48 with --images, the whole folder with --bench)")
    p.add_argument("--buckets", default=GDN_BUCKETS, help="hole-ratio buckets cycled over the images (--images)")
    p.add_argument("--seed", type=int, default=0, help="seed of the crops and masks (--images)")
    p.add_argument("--radius", type=float, default=3.0, help="cv2.inpaint's inpaintRadius in pixels")
    p.add_argument("--device", default="cpu", help="auto|cpu|cuda|cuda:N|mps")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--write", default=None, metavar="FILE", help="also write the markdown tables to FILE")
    return p.parse_args(argv)


def run(args: argparse.Namespace, command: str = "") -> str:
    """Build the test set, measure every fill, return the markdown report (``command``: the
    script's arguments, quoted in the report)."""
    import torch

    from blindinpaint import __version__
    from blindinpaint.api import Restorer

    if args.threads:
        torch.set_num_threads(args.threads)
    restorer = Restorer.from_pretrained(args.model, device=args.device)
    restorer._need_detector()
    if args.bench:
        samples = load_test_set(args.bench, args.count)
        source = f"ground truth + true masks of the synth folder {args.bench} ({len(samples)} images)"
    else:
        count = 48 if args.count is None else args.count
        samples = make_test_set(args.images, args.split, args.size, count, args.seed, args.buckets)
        split = f", split {args.split}" if args.split else ""
        source = (f"{count} seeded {args.size} px crops of {args.images}{split}, brush masks in buckets "
                  f"{args.buckets} (seed {args.seed})")
    fills = gdn_fills(restorer)
    cv2 = load_cv2()
    if cv2 is None:
        print(OPENCV_MISSING, file=sys.stderr)
    else:
        fills.update(opencv_fills(cv2, args.radius))
    start = time.perf_counter()
    result = measure(restorer, samples, fills, progress=sys.stderr.isatty())
    seconds = time.perf_counter() - start
    step = (restorer.meta.get("training") or {}).get("step")
    header = [f"Detector: {restorer.source}" + (f" (training step {step})" if step is not None else "") + ".",
              f"Test set: {source}.",
              "Ground truth: the hole mask; score: the `inspect` heat map (the dense detector's V) of each filled "
              "image.",
              f"OpenCV: {cv2.__version__ if cv2 is not None else 'not installed (rows (b) missing)'}; "
              f"blindinpaint {__version__}, torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
              f"{seconds:.0f} s.",
              f"Command: `python benchmarks/bench_inspect_auroc.py {command}`"]
    return render(result, header)


def main(argv: Optional[list[str]] = None) -> int:
    from blindinpaint.errors import UserError

    args = parse_args(argv)
    try:
        report = run(args, " ".join(sys.argv[1:] if argv is None else argv))
    except UserError as exc:
        print(f"bench_inspect_auroc: error: {exc}", file=sys.stderr)
        return 2
    print(report, end="")
    if args.write:
        Path(args.write).parent.mkdir(parents=True, exist_ok=True)
        Path(args.write).write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
