"""Picture grid of mask-given inpainting and its artifact heat map (for docs/gdn.md).

    python benchmarks/gdn_grid.py [--model gdn] [--images examples/corrupted] [--masks examples/masks] \
        -o docs/gdn_grid.png

One row per image of ``--images`` that has ``<stem>_mask.png`` (white = fill) in ``--masks``:
input | mask (red tint) | ``inpaint`` output | ``inspect`` heat map of that output.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="gdn", help="GDN model: bundled name, export folder or run directory")
    ap.add_argument("--images", default="examples/corrupted")
    ap.add_argument("--masks", default="examples/masks")
    ap.add_argument("-o", "--out", required=True, help="PNG file to write")
    args = ap.parse_args(argv)

    from PIL import Image

    from blindinpaint.api import Restorer, artifact_overlay, load_input
    from blindinpaint.restore_cli import GRID_ROW_HEIGHT, _fit_height, grid_row, render_grid

    gdn = Restorer.from_pretrained(args.model, device="cpu")
    rows = []
    for path in sorted(Path(args.images).glob("*.png")):
        mask = Path(args.masks) / f"{path.stem}_mask.png"
        if not mask.exists():
            continue
        rgb = load_input(path).rgb
        res = gdn.inpaint(rgb, str(mask))
        heat = artifact_overlay(res.image, gdn.inspect(res.image))
        rows.append(grid_row(rgb, res.mask, res.image) + [_fit_height(heat, GRID_ROW_HEIGHT)])
    if not rows:
        print(f"error: no image of {args.images} has a <stem>_mask.png in {args.masks}", file=sys.stderr)
        return 2
    grid = render_grid(rows, labels=("input", "mask (fill)", "GDN inpaint", "inspect heat map"))
    Image.fromarray(grid).save(args.out, optimize=True)
    print(f"wrote {args.out} ({len(rows)} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
