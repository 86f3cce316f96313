"""Plot training curves of a run directory (its scalars.jsonl) to a PNG.

    python benchmarks/plot_curves.py runs/hcl_tiny_image128 -o docs/curves_hcl_tiny_image128.png

Needs matplotlib (not a dependency of the package: ``pip install matplotlib``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

KEYS = [
    ("train/pixel_rec", "L1 on rec"),
    ("train/perc_rec", "perceptual on rec"),
    ("train/contrast_s1", "contrastive S1 (coarsest)"),
    ("train/contrast_s2", "contrastive S2"),
    ("train/contrast_s3", "contrastive S3"),
    ("train/iou_s3", "train hole IoU S3 (GT polarity)"),
    ("val/hole_iou", "val hole IoU (eval mode)"),
    ("val/psnr_rec", "val PSNR of rec (dB)"),
]


def moving_average(values: list[float], width: int) -> list[float]:
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= width:
            acc -= values[i - width]
        out.append(acc / min(i + 1, width))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("-o", "--out", type=Path, required=True)
    parser.add_argument("--smooth", type=int, default=10, help="moving-average width in log points")
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in (args.run / "scalars.jsonl").read_text().splitlines() if line.strip()]
    fig, axes = plt.subplots(2, 4, figsize=(16, 7))
    for ax, (key, title) in zip(axes.flat, KEYS):
        points = [(r["step"], r[key]) for r in rows if key in r]
        if points:
            steps, values = zip(*points)
            smooth = args.smooth if key.startswith("train/") else 1
            ax.plot(steps, values, alpha=0.3 if smooth > 1 else 1.0, marker="" if smooth > 1 else "o")
            if smooth > 1:
                ax.plot(steps, moving_average(list(values), smooth))
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
    fig.suptitle(f"{args.run.name}")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=80)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
