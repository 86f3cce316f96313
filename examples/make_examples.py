"""Rebuild the bundled examples and the pattern grid of docs/corruptions.md.

    python examples/make_examples.py --skimage-data DIR [--assets data/assets]   # examples/clean, corrupted, masks
    python examples/make_examples.py --grid docs/corruptions.png [--assets data/assets]

``--skimage-data`` is the ``skimage/data`` folder of the scikit-image wheel (e.g. unpacked by
``blindinpaint data photos``); ``--assets`` is a folder made by ``blindinpaint data assets``
(fonts for ``text``, public-domain openclipart logos for ``logo``).  Everything is seeded.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from blindinpaint.data.corruptions import Assets, NoisePool, corrupt
from blindinpaint.data.masks import make_rng
from blindinpaint.io import read_image, write_png

HERE = Path(__file__).resolve().parent
#: stem -> (file in skimage/data, pattern, bucket, variant); "image" pastes a crop of the rocket
#: photo; the variant picks the seeded draw (rocket: one whose logos are generic clip art).
EXAMPLES = {
    "astronaut": ("astronaut.png", "graffiti", "10-20", 0),
    "coffee": ("coffee.png", "text", "10-20", 0),
    "chelsea": ("chelsea.png", "image", "20-30", 0),
    "rocket": ("rocket.jpg", "logo", "10-20", 2),
}
LONG_SIDE = 512


def _load_clean(path: Path) -> np.ndarray:
    image = Image.fromarray(read_image(path).rgb)
    if max(image.size) > LONG_SIDE:
        image.thumbnail((LONG_SIDE, LONG_SIDE), Image.Resampling.LANCZOS)
    return np.asarray(image)


def make_examples(skimage_data: Path, assets: Assets, seed: int = 0) -> None:
    clean = {stem: _load_clean(skimage_data / file) for stem, (file, *_) in EXAMPLES.items()}
    pool = NoisePool([clean["rocket"]])
    for stem, (_, pattern, bucket, variant) in EXAMPLES.items():
        result = corrupt(clean[stem], pattern, bucket, make_rng(seed + variant, stem), pool, assets)
        write_png(HERE / "clean" / f"{stem}.png", clean[stem])
        write_png(HERE / "corrupted" / f"{stem}.png", result.image)
        write_png(HERE / "masks" / f"{stem}_mask.png", result.hole)
        details = {k: v for k, v in result.meta.items() if k in ("words", "fonts", "logos", "strokes")}
        print(f"{stem}: {pattern} {bucket} % -> hole ratio {100 * result.hole_ratio:.1f} % {details}")


def make_grid(out: Path, assets: Assets, tile: int = 160, seed: int = 0) -> None:
    """Rows = patterns; columns = (input, true mask) for two photos/buckets."""
    photos = sorted((HERE / "clean").glob("*.png"))
    if len(photos) < 2:
        raise SystemExit("run make_examples first: examples/clean needs the photos")
    clean = [np.asarray(Image.fromarray(read_image(p).rgb).resize((tile, tile), Image.Resampling.LANCZOS,
                                                                  box=_square_box(read_image(p).rgb)))
             for p in photos]
    pool = NoisePool(clean)
    rows = [("image", "0-30", "30-60"), ("constant", "0-30", "30-60"), ("single_color", "0-30", "30-60"),
            ("noise", "0-30", "30-60"), ("graffiti", "0-30", "0-30"), ("text", "0-30", "0-30"),
            ("logo", "0-30", "0-30")]
    label_w, head_h, gap = 110, 22, 4
    width = label_w + 4 * (tile + gap)
    height = head_h + len(rows) * (tile + gap)
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for c, text in enumerate(("input", "true mask", "input", "true mask")):
        draw.text((label_w + c * (tile + gap) + 4, 4), text, fill=(0, 0, 0))
    for r, (pattern, *buckets) in enumerate(rows):
        y = head_h + r * (tile + gap)
        draw.text((6, y + tile // 2 - 14), pattern, fill=(0, 0, 0))
        for j, bucket in enumerate(buckets):
            k = (2 * r + j) % len(clean)
            result = corrupt(clean[k], pattern, bucket, make_rng(seed, pattern, j), pool, assets,
                             exclude=f"array:{k}")
            draw.text((6, y + tile // 2 + 2 + 12 * j), f"{bucket} %: hole {100 * result.hole_ratio:.0f} %",
                      fill=(90, 90, 90))
            x = label_w + 2 * j * (tile + gap)
            sheet.paste(Image.fromarray(result.image), (x, y))
            sheet.paste(Image.fromarray(result.hole.astype(np.uint8) * 255).convert("RGB"), (x + tile + gap, y))
    write_png(out, np.asarray(sheet))
    print(f"wrote {out}")


def _square_box(rgb: np.ndarray) -> tuple[int, int, int, int]:
    h, w = rgb.shape[:2]
    s = min(h, w)
    return ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skimage-data", type=Path, help="skimage/data folder of the scikit-image wheel")
    parser.add_argument("--assets", default=None, help="folder made by 'blindinpaint data assets'")
    parser.add_argument("--grid", type=Path, help="write the pattern grid to this PNG instead")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    assets = Assets.load(args.assets)
    if args.grid:
        make_grid(args.grid, assets, seed=args.seed)
    elif args.skimage_data:
        make_examples(args.skimage_data, assets, seed=args.seed)
    else:
        parser.error("give --skimage-data DIR or --grid PNG")


if __name__ == "__main__":
    main()
