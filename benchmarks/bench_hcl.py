"""Params, MACs, CPU latency and peak memory of every HCL config (a benchmark, not a test).

    python benchmarks/bench_hcl.py [--threads 2] [--repeats 5] [--json out.json]

Each config runs in its own subprocess (``blindinpaint info --json``), so the peak resident
memory of one model does not leak into the next.  Sizes: 256 px, ``hcl_places512`` at 512 px.
Prints a markdown table for docs/models.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = [("hcl_tiny", 256), ("hcl_ffhq256", 256), ("hcl_places256", 256), ("hcl_places512", 512)]


def run_one(name: str, size: int, threads: int, repeats: int, refine: bool = True) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    cmd = [sys.executable, "-m", "blindinpaint.cli", "info", str(ROOT / "configs" / f"{name}.yaml"),
           "--size", str(size), "--repeats", str(repeats), "--json"] + ([] if refine else ["--no-refiner"])
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--only", default=None, help="comma list of config names")
    ap.add_argument("--json", default=None, help="also write all results to this file")
    args = ap.parse_args()
    runs = [r for r in RUNS if args.only is None or r[0] in args.only.split(",")]
    results = []
    print("| config | size | restoration params | refiner params | MACs total (G) | MACs w/o refiner (G) "
          "| latency (ms) | latency w/o refiner (ms) | peak RSS (MB) | threads | load avg |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, size in runs:
        r = run_one(name, size, args.threads, args.repeats)
        bare = run_one(name, size, args.threads, args.repeats, refine=False)
        r["config"] = name
        r["latency_no_refiner_ms"] = bare["latency_ms"]
        results.append(r)
        p, m = r["params"], r["macs_per_module"]
        no_ref = sum(v for k, v in m.items() if k != "refiner")
        print(f"| {name} | {size} | {p['restoration']:,} | {p['refiner']:,} | {r['macs'] / 1e9:.1f} | "
              f"{no_ref / 1e9:.1f} | {r['latency_ms']:.0f} | {bare['latency_ms']:.0f} | {r['peak_mem_mb']:.0f} | {r['threads']} | "
              f"{r['load_average'][0]:.1f} |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
