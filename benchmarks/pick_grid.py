"""Picture grid of the best and worst samples of one pattern, ranked by a per-image metric.

    python benchmarks/pick_grid.py --eval runs/rep_eval/main --bench seen --pattern image \
        --rank-by hcl_tiny --model runs/rep_exports/hcl_tiny --model runs/rep_exports/vcnet_cpu \
        --rows 2 -o docs/results/rep_seen_image.png

Reads ``per_image.csv`` of an earlier ``blindinpaint evaluate`` run, ranks the samples of
``--pattern`` in ``--bench`` by ``--metric`` of the method ``--rank-by`` (default hole IoU,
higher = better), and re-runs ``blindinpaint evaluate`` on a temporary benchmark holding the
``--rows`` best and ``--rows`` worst of them, so the grid (input / true mask / mask per stage /
restored / ground truth, one column group per ``--model``) shows successes on top and failures
at the bottom, best first.  Every model must be the one the ranking came from or a comparison.
An evaluation run with ``--given-mask true`` (mask-given models such as GDN) is replayed with the
true masks; one that fed another model's detection is refused (the detection model is not recorded
as a loadable path).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shutil
import sys
import tempfile
from pathlib import Path

from blindinpaint import evaluate as E
from blindinpaint.errors import UserError
from blindinpaint.predictors import load_predictor


def ranked_ids(per_image_csv: Path, bench: str, pattern: str, method: str, metric: str) -> list[str]:
    """Sample ids of (bench, pattern) sorted by ``metric`` of ``method``, best (highest) first; NaN last."""
    with open(per_image_csv, newline="") as f:
        rows = [r for r in csv.DictReader(f)
                if r["bench"] == bench and r["pattern"] == pattern and r["method"] == method]
    if not rows:
        raise UserError(f"no rows for bench '{bench}', pattern '{pattern}', method '{method}' in {per_image_csv}")
    if metric not in rows[0]:
        raise UserError(f"no column '{metric}' in {per_image_csv}")

    def score(row: dict) -> float:
        value = float(row[metric]) if row[metric] not in ("", None) else math.nan
        return -math.inf if math.isnan(value) else value

    return [r["id"] for r in sorted(rows, key=score, reverse=True)]


def sub_bench(source: Path, ids: list[str], folder: Path) -> Path:
    """A benchmark folder with only ``ids`` (in that order); files are copied, the manifest filtered."""
    manifest = json.loads((source / "manifest.json").read_text())
    by_id = {e["id"]: e for e in manifest["entries"]}
    folder.mkdir(parents=True, exist_ok=True)
    for sample_id in ids:
        for path in source.glob(f"{sample_id}_*.png"):
            if path.name[len(sample_id) + 1:] in ("input.png", "gt.png", "mask.png"):
                shutil.copy(path, folder / path.name)
    manifest["entries"] = [by_id[i] for i in ids]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--eval", required=True, type=Path, help="output folder of blindinpaint evaluate")
    parser.add_argument("--bench", required=True, help="bench name as in per_image.csv (e.g. seen)")
    parser.add_argument("--pattern", required=True, help="pattern label (e.g. image, image_inv)")
    parser.add_argument("--rank-by", required=True, help="method label whose metric ranks the samples")
    parser.add_argument("--metric", default="hole/iou", help="per_image.csv column, higher = better")
    parser.add_argument("--model", action="append", required=True, help="model to show (repeatable)")
    parser.add_argument("--rows", type=int, default=2, help="best and worst samples shown (each)")
    parser.add_argument("-o", "--out", required=True, type=Path, help="grid PNG to write")
    args = parser.parse_args(argv)
    try:
        results = json.loads((args.eval / "results.json").read_text())
        source = next((Path(b["path"]) for b in results["benches"] if b["name"] == args.bench), None)
        if source is None:
            raise UserError(f"bench '{args.bench}' is not in {args.eval / 'results.json'}")
        given_mask = results.get("settings", {}).get("given_mask", "none")
        if given_mask not in ("none", "true"):
            raise UserError(f"{args.eval} fed the models another model's masks (--given-mask MODEL); "
                            "pick_grid replays only own detections or --given-mask true")
        ids = ranked_ids(args.eval / "per_image.csv", args.bench, args.pattern, args.rank_by, args.metric)
        chosen = list(dict.fromkeys(ids[:args.rows] + ids[-args.rows:]))  # best first, then the worst
        models = [load_predictor(m) for m in args.model]
        with tempfile.TemporaryDirectory() as tmp:
            bench = sub_bench(source, chosen, Path(tmp) / args.bench)
            E.evaluate(models, [bench], Path(tmp) / "eval", given_mask=given_mask, grid_rows=len(chosen),
                       fid_extractor=None, lpips=None, progress=False)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(Path(tmp) / "eval" / f"grid_{args.pattern}.png", args.out)
    except (UserError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{len(chosen)} samples (best first) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
