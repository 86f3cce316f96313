"""Compact markdown tables from one or more ``results.json`` of ``blindinpaint evaluate``.

    python benchmarks/summarise_eval.py runs/rep_eval/main/results.json --part final \
        --metrics acc/per_image,valid/f1/per_image,bce/per_image,valid/iou/per_image,hole/iou/per_image

One table per (bench, pattern) in the layout of the paper's tables: rows = metric x method,
columns = the hole-ratio buckets and ``all``; the best value of each row group is bold.
``--part`` selects detection records (``final``, ``S1``...) or restoration records (``rec``,
``refined``, ``composite``).  Several files are merged (their methods side by side), so models
evaluated in separate runs on the same benches share a table.  ``--clean`` prints the
clean-photo table instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

LOWER_IS_BETTER = ("bce", "l1", "lpips", "fid")
LABELS = {"acc/per_image": "Acc ↑", "valid/f1/per_image": "F1 ↑ (valid+) [paper]", "bce/per_image": "BCE ↓",
          "valid/iou/per_image": "IoU ↑ (valid+) [paper]", "hole/iou/per_image": "IoU ↑ (hole+)",
          "hole/f1/per_image": "F1 ↑ (hole+)", "psnr": "PSNR ↑", "ssim": "SSIM ↑", "l1": "L1 % ↓",
          "psnr/hole": "PSNR ↑ (hole)", "ssim/hole": "SSIM ↑ (hole)", "l1/hole": "L1 % ↓ (hole)"}


def lower_is_better(metric: str) -> bool:
    return metric.split("/")[0] in LOWER_IS_BETTER


def load_records(paths: list[Path], part: str) -> list[dict]:
    """Detection or restoration records of ``part`` from every file (methods renamed ``a`` / ``a (2)``
    would collide: a method label must be unique across the files)."""
    records, owner = [], {}
    for path in paths:
        results = json.loads(path.read_text())
        for kind in ("detection", "restoration"):
            for rec in results.get(kind, []):
                if rec["part"] != part:
                    continue
                if owner.setdefault(rec["method"], path) != path:
                    raise SystemExit(f"error: method '{rec['method']}' is in both {owner[rec['method']]} and {path}")
                records.append(rec)
    if not records:
        raise SystemExit(f"error: no records of part '{part}' in {', '.join(map(str, paths))}")
    return records


def tables(records: list[dict], metrics: list[str], benches: list[str] | None = None,
           patterns: list[str] | None = None, digits: int = 3) -> str:
    """Markdown tables, one per (bench, pattern), in record order."""
    keys = list(dict.fromkeys((r["bench"], r["pattern"]) for r in records))
    out = []
    for bench, pattern in keys:
        if (benches and bench not in benches) or (patterns and pattern not in patterns):
            continue
        group = [r for r in records if r["bench"] == bench and r["pattern"] == pattern]
        buckets = list(dict.fromkeys(r["bucket"] for r in group))
        methods = list(dict.fromkeys(r["method"] for r in group))
        value = {(r["method"], r["bucket"]): r["metrics"] for r in group}
        lines = [f"**{bench} / {pattern}**", "", "| metric | method | " + " | ".join(buckets) + " |",
                 "|---|---|" + "---:|" * len(buckets)]
        for metric in metrics:
            cells = {(m, b): value.get((m, b), {}).get(metric) for m in methods for b in buckets}
            best = {}
            for b in buckets:
                numbers = [v for m in methods if isinstance(v := cells[(m, b)], (int, float))]
                if len(numbers) > 1:
                    best[b] = min(numbers) if lower_is_better(metric) else max(numbers)
            for i, m in enumerate(methods):
                row = []
                for b in buckets:
                    v = cells[(m, b)]
                    text = f"{v:.{digits}f}" if isinstance(v, (int, float)) else ("n/a" if v is None else str(v))
                    row.append(f"**{text}**" if b in best and v == best[b] else text)
                label = LABELS.get(metric, metric) if i == 0 else ""
                lines.append(f"| {label} | {m} | " + " | ".join(row) + " |")
        out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


def _cell(value, digits: int) -> str:
    return f"{value:.{digits}g}" if isinstance(value, (int, float)) else ("n/a" if value is None else str(value))


def clean_table(paths: list[Path]) -> str:
    """Clean-photo records of every file: one row per (method, folder)."""
    lines = []
    for path in paths:
        for rec in json.loads(path.read_text()).get("clean", []):
            if not lines:
                keys = [k for k in rec["metrics"] if isinstance(rec["metrics"][k], (int, float))]
                lines += ["| method | photos | " + " | ".join(keys) + " |", "|---|---|" + "---:|" * len(keys)]
            lines.append(f"| {rec['method']} | {rec['bench'].removeprefix('clean:')} | "
                         + " | ".join(_cell(rec["metrics"].get(k), 4) for k in keys) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+", type=Path, help="results.json files")
    parser.add_argument("--part", default="final", help="final, S1, S2, S3, rec, refined or composite")
    parser.add_argument("--metrics", default="acc/per_image,valid/f1/per_image,bce/per_image,valid/iou/per_image,"
                                             "hole/iou/per_image", help="comma list of metric keys")
    parser.add_argument("--benches", default="", help="comma list (default: all)")
    parser.add_argument("--patterns", default="", help="comma list (default: all)")
    parser.add_argument("--digits", type=int, default=3)
    parser.add_argument("--clean", action="store_true", help="print the clean-photo table instead")
    args = parser.parse_args(argv)
    for path in args.results:
        if not path.is_file():
            print(f"error: no such file: {path}", file=sys.stderr)
            return 2
    if args.clean:
        print(clean_table(args.results), end="")
        return 0
    split = [[x for x in text.split(",") if x] for text in (args.metrics, args.benches, args.patterns)]
    print(tables(load_records(args.results, args.part), split[0], split[1] or None, split[2] or None, args.digits),
          end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
