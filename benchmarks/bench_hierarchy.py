"""Hierarchical (quadtree) vs full re-clustering in the HCL detector, on real photos of the corpus.

    python benchmarks/bench_hierarchy.py [--model default] [--split test] [--count 16] [--size 256]
                                         [--repeats 5] [--threads 2] [--write docs/performance.md]

Real photos of one split of the offline corpus (``data/corpus``) are cropped to ``--size`` and
corrupted with :func:`blindinpaint.data.corruptions.corrupt`, seeded per sample exactly as
``blindinpaint synth`` seeds it (``seed, photo index, pattern, bucket, 0``); photo ``k`` of the
seeded selection gets the ``k``-th (pattern, bucket) combination in turn.  The detector then runs
in two modes on every photo:

* ``hierarchical`` - the model's detector as shipped (``contrast.hierarchical = true``): S1 clusters
  every position; each finer stage gathers and re-clusters only the positions the coarser stage
  left undecided (quadtree refinement, ``models/contrast.py``);
* ``full`` - the same weights with ``contrast.hierarchical = false`` (the paper's "w/o hierarchy"
  setting): every stage clusters ALL positions afresh (polarity at S2+ by centre matching) and the
  finest stage's clustering is the mask.  The script checks that this mode really re-clusters
  100 % of the positions at every stage and stops otherwise.

Reported per stage: ``Detection.refined_fraction`` (fraction of the stage's real positions gathered
and labelled by K-means) and the rows gathered; per mode: the clustering time
(``HierarchicalDetector.detect`` on embeddings computed once: the only part that differs), the time
of the whole detection path (``HCLNet.detect``: stem, encoder, projection heads, clustering; what
``blindinpaint detect`` runs), and the mask IoU against the true mask.  Times: one warm-up call per
mode and photo, then ``--repeats`` timed calls with the modes interleaved (A B, B A, ...); the
median per photo, then the median over photos.  The thread count, the machine and the load average
before and after are printed with the table; on a loaded machine only the ratios mean much.

``--model``: a bundled name (``default``), an export folder, a run directory, or a
``configs/*.yaml`` (random weights, seed 0: timings and fractions of that architecture, IoU
meaningless).  ``--write FILE`` replaces the section between ``<!-- bench_hierarchy -->`` and
``<!-- /bench_hierarchy -->`` of FILE (appended when absent).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from doc_section import command_line, load_average, load_label, machine_line, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SECTION = "bench_hierarchy"
MODES = ("hierarchical", "full")
DEFAULT_PATTERNS = "image,constant,noise,graffiti,text"
DEFAULT_BUCKETS = "0-30,30-60"


# ----------------------------------------------------------------------------- inputs
@dataclass
class Sample:
    """One corrupted photo: ``image`` H x W x 3 uint8, ``hole`` H x W bool (True = corrupted)."""

    name: str
    pattern: str
    bucket: str
    image: np.ndarray
    hole: np.ndarray


def _manifest_splits(corpus: Path) -> set[str]:
    from blindinpaint.data.folders import read_manifest

    entries = read_manifest(corpus)
    return set() if entries is None else {e.get("split") for e in entries}


def make_samples(corpus: str | Path, split: Optional[str], count: int, size: int, seed: int = 0,
                 patterns: Sequence[str] = tuple(DEFAULT_PATTERNS.split(",")),
                 buckets: Sequence[str] = tuple(DEFAULT_BUCKETS.split(",")),
                 noise_split: Optional[str] = "auto", assets: Optional[str] = None) -> list[Sample]:
    """``count`` photos of ``split`` (a seeded choice, in corpus order), each cropped to ``size`` and
    corrupted with one (pattern, bucket) combination, cycling through the combinations.

    noise_split: photos pasted by the ``image`` pattern: ``auto`` = the corpus's ``noise_test`` split
    when ``split`` is ``test`` and the corpus has one (test noise from sources never used for
    training), else the photos of ``split`` themselves; None = the same photos; a name = that split.
    Raises UserError (from blindinpaint.data) for a missing corpus/split, unknown patterns or buckets.
    """
    from blindinpaint.data.bench import SYNTH_ZOOM
    from blindinpaint.data.corruptions import (Assets, CorruptionOptions, NoisePool, allowed_buckets,
                                               check_pattern, corrupt, random_crop_box, resize_crop)
    from blindinpaint.data.dataset import PhotoCache, resolve_photos
    from blindinpaint.data.masks import make_rng, parse_buckets
    from blindinpaint.errors import UserError

    if count < 1:
        raise UserError(f"--count must be >= 1, got {count}")
    if size < 32:
        raise UserError(f"--size must be >= 32, got {size}")
    for p in patterns:
        check_pattern(p)
    parsed = parse_buckets(list(buckets))
    combos = [(p, b) for p in patterns for b in allowed_buckets(p, parsed)]
    photos = resolve_photos(str(corpus), split)
    chosen = sorted(np.random.default_rng(seed).permutation(len(photos))[:count].tolist())
    cache = PhotoCache(2 * size)
    if noise_split == "auto":
        noise_split = "noise_test" if split == "test" and "noise_test" in _manifest_splits(Path(corpus)) else None
    pool_photos = resolve_photos(str(corpus), noise_split) if noise_split else photos
    pool = NoisePool(pool_photos, load=cache)
    loaded_assets = Assets.load(assets)
    options = CorruptionOptions()
    samples = []
    for k, i in enumerate(chosen):
        pattern, bucket = combos[k % len(combos)]
        rng = make_rng(seed, i, pattern, bucket.name, 0)  # the seeding of ``blindinpaint synth``
        photo = cache(photos[i])
        clean = resize_crop(photo, (size, size), random_crop_box(photo.shape[:2], (size, size), rng, SYNTH_ZOOM))
        res = corrupt(clean, pattern, bucket, rng, pool, loaded_assets, exclude=photos[i], options=options)
        samples.append(Sample(photos[i].name, pattern, bucket.name, res.image, res.hole))
    return samples


# ----------------------------------------------------------------------------- model
def load_net(source: str, seed: int = 0) -> tuple[torch.nn.Module, str]:
    """``source`` -> (HCLNet in eval mode on the CPU, a description for the report).

    A ``.yaml`` config gets random weights (``seed``); anything else goes through
    :meth:`blindinpaint.api.Restorer.from_pretrained` (bundled name, export, run directory).
    """
    from blindinpaint.errors import UserError

    path = Path(source)
    if path.suffix in (".yaml", ".yml"):
        from blindinpaint.models.registry import build_model, load_model_config

        if not path.is_file():
            raise UserError(f"config file not found: {source}")
        spec = load_model_config(path)
        if spec.task != "hcl":
            raise UserError(f"{source} builds a '{spec.task}' model; this benchmark needs an HCL model")
        torch.manual_seed(seed)
        return build_model(spec).eval(), (f"`{source}` with RANDOM weights (seed {seed}): fractions and times "
                                          f"of that architecture, mask IoU meaningless")
    from blindinpaint.api import Restorer

    restorer = Restorer.from_pretrained(source, device="cpu")
    if restorer.task != "hcl":
        raise UserError(f"{source} holds a '{restorer.task}' model; this benchmark needs an HCL model")
    return restorer.net.eval(), f"`{source}` ({restorer.source})"


def mode_configs(cfg: Any) -> dict[str, Any]:
    """The detector config of each mode: only ``hierarchical`` differs (every other field kept)."""
    return {"hierarchical": dataclasses.replace(cfg, hierarchical=True),
            "full": dataclasses.replace(cfg, hierarchical=False)}


# ----------------------------------------------------------------------------- measuring
def _iou_counts(pred: np.ndarray, true: np.ndarray) -> tuple[float, float, float]:
    """(tp, fp, fn) of H x W bool masks (True = corrupted), through blindinpaint.metrics."""
    from blindinpaint.metrics import confusion_counts

    c = confusion_counts(torch.from_numpy(pred).float()[None, None], torch.from_numpy(true).float()[None, None])
    return float(c["tp"][0]), float(c["fp"][0]), float(c["fn"][0])


def _cluster_mask(net: torch.nn.Module, det: Any, hw: tuple[int, int]) -> np.ndarray:
    """The finest stage's clustering BEFORE the no-corruption rule (``cluster_prob_hole > 0.5``),
    upsampled (nearest) to the padded input and cropped to ``hw``: H x W bool, True = hole."""
    prob = det.cluster_prob_hole[-1]
    mult = net.cfg.multiple()
    padded = [-(-n // mult) * mult for n in hw]
    factor = padded[0] // prob.shape[-2]
    hole = (prob > 0.5)[0, 0].repeat_interleave(factor, 0).repeat_interleave(factor, 1)
    return hole[: hw[0], : hw[1]].numpy()


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return 1000.0 * (time.perf_counter() - start)


def measure_sample(net: torch.nn.Module, sample: Sample, repeats: int) -> dict[str, Any]:
    """Both modes on one sample: per-stage fractions, mask, IoU counts and timings (ms)."""
    detector = net.detector
    cfgs = mode_configs(detector.cfg)
    original = detector.cfg
    image = torch.from_numpy(sample.image).permute(2, 0, 1)[None].float() / 127.5 - 1.0  # [-1, 1] in HCL
    captured: dict[str, tuple] = {}
    hook = detector.register_forward_pre_hook(lambda module, args: captured.__setitem__("args", args))
    out: dict[str, Any] = {"name": sample.name, "pattern": sample.pattern, "bucket": sample.bucket,
                           "true_hole_fraction": float(sample.hole.mean())}
    masks = {}
    try:
        with torch.inference_mode():
            for mode in MODES:  # warm-up call, which also gives the mode's detection
                detector.cfg = cfgs[mode]
                det, _, hole = net.detect(image)
                pred = hole[0, 0].numpy() > 0.5
                clusters = _cluster_mask(net, det, pred.shape)
                masks[mode] = pred
                out[mode] = {"refined_fraction": [float(f) for f in det.refined_fraction],
                             "gathered_rows": [int(r) for r in det.gathered_rows],
                             "grid": [list(h.shape[-2:]) for h in det.hole],
                             "clean": bool(det.clean.all()), "detected_fraction": float(pred.mean()),
                             "iou_counts": _iou_counts(pred, sample.hole),
                             "cluster_iou_counts": _iou_counts(clusters, sample.hole),
                             "cluster_ms": [], "detect_ms": []}
            feats, valid_px = captured["args"][:2]
            embeddings = detector.embed(feats)
            for r in range(repeats):
                order = MODES if r % 2 == 0 else MODES[::-1]
                for mode in order:
                    detector.cfg = cfgs[mode]
                    out[mode]["cluster_ms"].append(_timed(lambda: detector.detect(embeddings, valid_px)))
                for mode in order:
                    detector.cfg = cfgs[mode]
                    out[mode]["detect_ms"].append(_timed(lambda: net.detect(image)))
    finally:
        hook.remove()
        detector.cfg = original
    full = out["full"]["refined_fraction"]
    if any(f != 1.0 for f in full):
        raise RuntimeError(f"the 'full' mode (contrast.hierarchical = false) re-clustered {full} of the "
                           f"positions per stage, not 100 %: the baseline is not what this benchmark reports")
    out["agreement"] = float((masks["hierarchical"] == masks["full"]).mean())
    return out


def summarise(per_image: list[dict]) -> dict[str, Any]:
    """Across photos: per-stage fractions, per-mode median times, IoU (mean and pooled), ratios."""
    stages = len(per_image[0]["hierarchical"]["refined_fraction"])
    summary: dict[str, Any] = {"images": len(per_image), "stages": []}
    for s in range(stages):
        row = {"stage": f"S{s + 1}", "grid": "x".join(str(n) for n in per_image[0]["hierarchical"]["grid"][s])}
        for mode in MODES:
            fr = [im[mode]["refined_fraction"][s] for im in per_image]
            rows = [im[mode]["gathered_rows"][s] for im in per_image]
            row[mode] = {"mean": statistics.fmean(fr), "min": min(fr), "max": max(fr),
                         "rows_mean": statistics.fmean(rows)}
        summary["stages"].append(row)
    def iou(mode: str, key: str) -> tuple[float, float]:
        counts = np.array([im[mode][key] for im in per_image])  # N x (tp, fp, fn)
        denom = counts.sum(1)
        per_iou = np.where(denom > 0, counts[:, 0] / np.maximum(denom, 1e-12), 1.0)  # nothing to find: 1
        tp, fp, fn = counts.sum(0)
        return float(per_iou.mean()), float(tp / max(tp + fp + fn, 1e-12))

    for mode in MODES:
        iou_mean, iou_pooled = iou(mode, "iou_counts")
        cluster_mean, cluster_pooled = iou(mode, "cluster_iou_counts")
        summary[mode] = {
            "cluster_ms": statistics.median(statistics.median(im[mode]["cluster_ms"]) for im in per_image),
            "detect_ms": statistics.median(statistics.median(im[mode]["detect_ms"]) for im in per_image),
            "iou_mean": iou_mean, "iou_pooled": iou_pooled,
            "cluster_iou_mean": cluster_mean, "cluster_iou_pooled": cluster_pooled,
            "detected_fraction": statistics.fmean(im[mode]["detected_fraction"] for im in per_image),
            "clean_images": sum(im[mode]["clean"] for im in per_image),
        }

    def ratio(key: str) -> float:
        return statistics.median(statistics.median(im["full"][key]) / statistics.median(im["hierarchical"][key])
                                 for im in per_image)

    summary["ratio_cluster"] = ratio("cluster_ms")
    summary["ratio_detect"] = ratio("detect_ms")
    summary["agreement"] = statistics.fmean(im["agreement"] for im in per_image)
    summary["true_hole_fraction"] = statistics.fmean(im["true_hole_fraction"] for im in per_image)
    return summary


# ----------------------------------------------------------------------------- report
def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def render(summary: dict, context: dict) -> str:
    """Markdown report: context lines, the per-stage table, the per-mode table, definitions."""
    lines = [
        "### Hierarchical vs full re-clustering of the detector (`benchmarks/bench_hierarchy.py`)",
        "",
        f"Status: **{context['label']}**.  Command: `{context['command']}`",
        f"Machine: {context['machine']}; torch threads = {context['threads']}; load average "
        f"{context['load_before']:.2f} before / {context['load_after']:.2f} after.",
        f"Model: {context['model']}.",
        f"Inputs: {summary['images']} real photos of the `{context['split']}` split of `{context['corpus']}`, "
        f"{context['size']} px crops, corrupted with `blindinpaint.data` (patterns {context['patterns']}, "
        f"buckets {context['buckets']}, noise photos: {context['noise']}, seed {context['seed']}); true holes "
        f"cover {_pct(summary['true_hole_fraction'])} of the pixels on average.",
        "",
        "| stage | grid | re-clustered, hierarchical: mean [min, max] | re-clustered, full "
        "| rows labelled per photo, hierarchical | rows, full |",
        "|---|---|---|---|---:|---:|",
    ]
    for row in summary["stages"]:
        h, f = row["hierarchical"], row["full"]
        lines.append(f"| {row['stage']} | {row['grid']} | {_pct(h['mean'])} [{_pct(h['min'])}, {_pct(h['max'])}] "
                     f"| {_pct(f['mean'])} | {h['rows_mean']:,.0f} | {f['rows_mean']:,.0f} |")
    lines += [
        "",
        "| mode | clustering (ms) | detection path (ms) | mask IoU: mean of photos / pooled "
        "| clusters' IoU: mean / pooled | detected | photos judged clean |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for mode in MODES:
        m = summary[mode]
        lines.append(f"| {mode} | {m['cluster_ms']:.1f} | {m['detect_ms']:.1f} | {m['iou_mean']:.3f} / "
                     f"{m['iou_pooled']:.3f} | {m['cluster_iou_mean']:.3f} / {m['cluster_iou_pooled']:.3f} "
                     f"| {_pct(m['detected_fraction'])} | {m['clean_images']} |")
    lines += [
        "",
        f"Full / hierarchical time (median over photos of the per-photo ratio): clustering "
        f"x{summary['ratio_cluster']:.2f}, detection path x{summary['ratio_detect']:.2f}.  The two modes' masks "
        f"agree on {_pct(summary['agreement'])} of the pixels.",
        "",
        "*Re-clustered* = `Detection.refined_fraction`: the share of a stage's real positions whose features "
        "are gathered and labelled by K-means at that stage (S1 always clusters all).  *Hierarchical* = the "
        "model as shipped (`contrast.hierarchical: true`, quadtree refinement of the undecided positions); "
        "*full* = the same weights with `contrast.hierarchical: false` (every stage clusters all positions "
        "afresh, the finest stage's clustering is the mask).  *Clustering* = `HierarchicalDetector.detect` "
        "on embeddings computed once (K-means, polarity, decided/uncertain split, gathering: the only part "
        f"that differs); *detection path* = `HCLNet.detect` (stem, encoder, projection heads, clustering) as "
        f"`blindinpaint detect` runs it.  Times: median of {context['repeats']} timed calls per photo after "
        "one warm-up, modes interleaved, then the median over photos.  *Mask IoU* = the detected mask (what "
        "`blindinpaint detect` writes) vs the true mask; a photo the no-corruption rule judges clean gets an "
        "empty mask (IoU 0).  *Clusters' IoU* = the finest stage's clustering before that rule "
        "(`Detection.cluster_prob_hole > 0.5`).  Both IoUs count a photo with nothing true and nothing "
        "detected as 1; *pooled* sums the pixel counts over photos first.",
    ]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- main
def _shown(path: str) -> str:
    """A path as the report shows it: relative to the repository when inside it."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return path


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default",
                    help="bundled name, export folder, run directory, or configs/*.yaml (random weights)")
    ap.add_argument("--corpus", default="data/corpus",
                    help="corpus folder with manifest.json (relative paths: from the current folder, else the repo)")
    ap.add_argument("--split", default="test", help="corpus split of the photos")
    ap.add_argument("--count", type=int, default=16, help="number of photos")
    ap.add_argument("--size", type=int, default=256, help="square crop side in pixels")
    ap.add_argument("--repeats", type=int, default=5, help="timed calls per mode and photo (median)")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    ap.add_argument("--seed", type=int, default=0, help="seed of the photo choice and the corruptions")
    ap.add_argument("--patterns", default=DEFAULT_PATTERNS, help="comma list of corruption patterns")
    ap.add_argument("--buckets", default=DEFAULT_BUCKETS, help="comma list of hole-ratio buckets in percent")
    ap.add_argument("--noise-split", default="auto",
                    help="corpus split pasted by the 'image' pattern: auto (noise_test for the test split "
                         "when present), same, or a split name")
    ap.add_argument("--assets", default="auto",
                    help="fonts/logos folder ('blindinpaint data assets'); auto = data/assets when present, "
                         "none = Pillow's built-in font")
    ap.add_argument("--json", default=None, help="also write summary + per-photo results to this JSON file")
    ap.add_argument("--write", default=None, metavar="FILE",
                    help=f"replace the <!-- {SECTION} --> section of this markdown file (appended when absent)")
    ap.add_argument("--label", default=None, help="status label (default: from the load average)")
    return ap.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    from blindinpaint.errors import UserError

    try:
        if args.threads < 1 or args.repeats < 1:
            raise UserError("--threads and --repeats must be >= 1")
        torch.set_num_threads(args.threads)
        assets = args.assets
        if assets == "auto":
            assets = str(ROOT / "data" / "assets") if (ROOT / "data" / "assets" / "manifest.json").is_file() else None
        elif assets == "none":
            assets = None
        noise_split = None if args.noise_split == "same" else args.noise_split
        patterns = [p.strip() for p in args.patterns.split(",") if p.strip()]
        buckets = [b.strip() for b in args.buckets.split(",") if b.strip()]
        if not Path(args.corpus).exists() and (ROOT / args.corpus).exists():
            args.corpus = str(ROOT / args.corpus)
        load_before = load_average()
        net, model_note = load_net(args.model, args.seed)
        samples = make_samples(args.corpus, args.split, args.count, args.size, args.seed, patterns, buckets,
                               noise_split, assets)
        if noise_split == "auto":
            noise_split = ("noise_test" if args.split == "test" and "noise_test" in _manifest_splits(Path(args.corpus))
                           else None)
        per_image = []
        for k, sample in enumerate(samples):
            per_image.append(measure_sample(net, sample, args.repeats))
            h = per_image[-1]["hierarchical"]
            print(f"[{k + 1}/{len(samples)}] {sample.name} ({sample.pattern} {sample.bucket}): re-clustered "
                  + ", ".join(_pct(f) for f in h["refined_fraction"])
                  + f"; clustering {statistics.median(h['cluster_ms']):.1f} ms hierarchical vs "
                  f"{statistics.median(per_image[-1]['full']['cluster_ms']):.1f} ms full", file=sys.stderr, flush=True)
    except UserError as exc:
        print(f"bench_hierarchy: error: {exc}", file=sys.stderr)
        return 2
    load_after = load_average()
    summary = summarise(per_image)
    context = {
        "label": load_label(load_before, load_after, args.label), "command": command_line(),
        "machine": machine_line(), "threads": torch.get_num_threads(), "load_before": load_before,
        "load_after": load_after, "model": model_note, "split": args.split, "corpus": _shown(args.corpus),
        "size": args.size, "patterns": ", ".join(patterns), "buckets": ", ".join(buckets),
        "noise": f"`{noise_split}` split" if noise_split else f"the `{args.split}` photos themselves",
        "seed": args.seed, "repeats": args.repeats,
    }
    text = render(summary, context)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "context": context, "per_image": per_image},
                                              indent=1) + "\n")
    if args.write:
        write_section(args.write, SECTION, text)
        print(f"wrote the {SECTION} section of {args.write}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
