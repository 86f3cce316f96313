"""Parameters, MACs, latency and peak memory of every model config in configs/ (a benchmark, not a test).

    python benchmarks/bench_configs.py [--threads 2] [--repeats 5] [--only hcl_tiny,gdn_cpu]
                                       [--write docs/models.md] [--json out.json]

One row per distinct model: configs whose resolved ``task`` + ``model:`` section are identical
(training-only variants such as the GDN loss ablations, or ``default`` = ``hcl_tiny``) are
measured once and listed together.  Every (config, input size) is profiled in a fresh process by
``blindinpaint.evaluate.run_bench`` (the code behind ``blindinpaint bench`` and ``info``), so the peak
memory is that model's own: parameters per module (counted on the ``meta`` device), MACs
(``torch.utils.flop_counter``), median forward latency (batch 1, after two warm-up passes) and peak
resident memory.  Sizes: 256 px for every model, also 128 px for the tiny / CPU-sized ones, and the
training size when it is above 256 (``hcl_places512``: 512 px).

``--write FILE`` replaces the section between ``<!-- bench_configs -->`` and ``<!-- /bench_configs -->``
of FILE (appended when absent), stating the command, thread count, machine and load average.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from doc_section import command_line, load_average, load_label, machine_line, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SECTION = "bench_configs"
SMALL_TAGS = ("tiny", "cpu")  # configs sized for CPU: also measured at 128 px

# Major modules of each family: name -> the profiler's per-module keys it sums (params and MACs use
# different keys for the HCL detector: ``heads`` + ``cluster_classifier`` vs the ``detector`` child).
MAJOR_MODULES: dict[str, dict[str, tuple[str, ...]]] = {
    "hcl": {"detection": ("heads", "cluster_classifier", "detector"),
            "restoration": ("stem", "encoder", "bottleneck", "decoder"),
            "refiner": ("refiner",), "discriminator": ("discriminator",)},
    "seg": {"detection": ("detector",), "restoration": ("stem", "encoder", "bottleneck", "decoder"),
            "refiner": ("refiner",), "discriminator": ("discriminator",)},
    "gdn": {"generator": ("generator",), "detector": ("detector",)},
    "vcnet": {"detection (MPN)": ("mpn",), "restoration (RIN)": ("rin",)},
}
SUMMARY_KEYS = ("total", "restoration")  # keys of the profiler's dict that are sums, not modules
# Families whose example forward does not go through the top-level module's forward(), so the MAC
# counter sees no top-level children: the module that does all the counted work.  GDN's forward is
# ``GDN.inpaint`` = the generator + a composite (elementwise, not counted).
WHOLE_FORWARD_MODULE = {"gdn": "generator"}


@dataclass
class ModelGroup:
    """Configs with one identical model section; ``names[0]`` is the one measured."""

    names: list[str]
    task: str
    path: Path
    train_size: Optional[int] = None
    rows: list[dict] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.names[0] + (f" (= {', '.join(self.names[1:])})" if len(self.names) > 1 else "")

    def sizes(self) -> list[int]:
        sizes = {256}
        if any(tag in name for name in self.names for tag in SMALL_TAGS):
            sizes.add(128)
        if self.train_size and self.train_size > 256:
            sizes.add(self.train_size)
        return sorted(sizes)


def _preference(name: str) -> tuple:
    """Which name of a group is measured and shown first: not an ablation, then the shortest, then a-z."""
    return ("ablation" in name, len(name), name)


def discover(folder: Path) -> tuple[list[ModelGroup], list[tuple[str, str]]]:
    """Model groups of every ``*.yaml`` in ``folder``, and the files skipped with why."""
    from blindinpaint.config import read_yaml, to_dict
    from blindinpaint.errors import ConfigError
    from blindinpaint.models.registry import model_config_from_dict

    groups: dict[str, ModelGroup] = {}
    skipped = []
    for path in sorted(folder.glob("*.yaml")):
        try:
            data = read_yaml(path)
            spec = model_config_from_dict(data, source=str(path))
        except ConfigError as exc:
            skipped.append((path.stem, str(exc)))
            continue
        key = json.dumps({"task": spec.task, "model": to_dict(spec.config)}, sort_keys=True)
        size = (data.get("data") or {}).get("size")
        group = groups.setdefault(key, ModelGroup([], spec.task, path))
        group.names.append(path.stem)
        if isinstance(size, int):
            group.train_size = max(group.train_size or 0, size)
    for group in groups.values():
        first = min(group.names, key=_preference)
        group.names = [first] + sorted(n for n in group.names if n != first)
        group.path = folder / f"{group.names[0]}.yaml"
    return sorted(groups.values(), key=lambda g: (g.task, _preference(g.names[0]))), skipped


def major_modules(task: str, counts: dict[str, int]) -> dict[str, int]:
    """Per-module counts (params or MACs) -> the family's major modules; what no major module claims
    goes to ``other`` so the parts always add up to the whole."""
    groups = MAJOR_MODULES.get(task, {})
    out, claimed = {}, set()
    for name, keys in groups.items():
        present = [k for k in keys if k in counts]
        if present:
            out[name] = sum(counts[k] for k in present)
            claimed.update(present)
    rest = sum(v for k, v in counts.items() if k not in claimed and k not in SUMMARY_KEYS)
    if rest:
        out["other"] = rest
    return out


def macs_by_module(task: str, row: dict) -> dict[str, int]:
    """A profiler row's MACs per major module (see :data:`WHOLE_FORWARD_MODULE`)."""
    per_module = row.get("macs_per_module") or {}
    if not per_module and task in WHOLE_FORWARD_MODULE:
        return {WHOLE_FORWARD_MODULE[task]: int(row["macs"])}
    return major_modules(task, per_module)


def _fmt_params(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}K"


def _fmt_parts(parts: dict[str, int], fmt) -> str:
    return "; ".join(f"{name} {fmt(v)}" for name, v in parts.items())


def render(groups: list[ModelGroup], skipped: list[tuple[str, str]], context: dict) -> str:
    """The markdown section: context, one table row per (model, size), notes."""
    lines = [
        "### Every model config: parameters, MACs, latency, memory (`benchmarks/bench_configs.py`)",
        "",
        f"Status: **{context['label']}**.  Command: `{context['command']}`",
        f"Machine: {context['machine']}; torch threads = {context['threads']}; device {context['device']}; "
        f"load average {context['load_before']:.2f} before / {context['load_after']:.2f} after.",
        "",
        "| config (same model) | task | params total | params per module | input | GMACs | GMACs per module "
        "| latency (ms) | peak RSS (MB) | forward added (MB) |",
        "|---|---|---:|---|---:|---:|---|---:|---:|---:|",
    ]
    for g in groups:
        for i, r in enumerate(g.rows):
            params = r["params"]
            latency = r.get("latency_ms")
            lines.append(
                f"| {g.label if i == 0 else g.names[0]} | {g.task} | {_fmt_params(params['total'])} "
                f"| {_fmt_parts(major_modules(g.task, params), _fmt_params)} | {r['size']} "
                f"| {r['macs'] / 1e9:.2f} | {_fmt_parts(macs_by_module(g.task, r), lambda v: f'{v / 1e9:.2f}')} "
                f"| {'-' if latency is None else f'{latency:.1f}'} | {(r.get('peak_mem_mb') or 0):.0f} "
                f"| {(r.get('forward_mem_mb') or 0):.0f} |")
    lines += [
        "",
        f"Latency = median of {context['repeats']} forward passes (batch 1, `torch.inference_mode`) after two "
        "warm-up passes; MACs by `torch.utils.flop_counter.FlopCounterMode` (MACs = FLOPs / 2: convolutions, "
        "matmuls, fused attention; elementwise ops not counted); peak RSS = peak resident set of a fresh "
        "process per row (interpreter + torch + weights + activations), *forward added* = how far the forward "
        "passes raised it.  What one forward is: HCL / seg = the full blind network with its refiner "
        "(detection + restoration + refiner, random input in [-1, 1]); GDN = mask-given inpainting "
        "(`GDN.inpaint`: generator + composite; its dense detector runs in `inspect`, not in this "
        "forward, so it has parameters but no MACs here); VCNet = MPN + RIN.",
        "Modules: HCL *detection* = projection heads + inter-stage maps + cluster classifier, *restoration* = "
        "stem + encoder + bottleneck + decoder (supp. Table 5's restoration figure = restoration + heads + "
        "maps); seg *detection* = its BCE mask heads; *discriminator* = HCL's training-only patch critic "
        "(in the total; the seg baseline trains the same critic and VCNet two critics, which the registry "
        "does not build, so they are not counted).",
    ]
    same = [g for g in groups if len(g.names) > 1]
    if same:
        lines.append("Measured once because their resolved `task` + `model:` sections are identical (they differ "
                     "only in data / training settings): "
                     + "; ".join(f"{', '.join(g.names[1:])} = {g.names[0]}" for g in same) + ".")
    if skipped:
        lines.append("Skipped (no model section): " + "; ".join(f"{n}: {why}" for n, why in skipped) + ".")
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default=str(ROOT / "configs"), help="folder of YAML configs")
    ap.add_argument("--only", default=None, help="comma list of config names (any name of a group)")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads of each profiling process")
    ap.add_argument("--repeats", type=int, default=5, help="timed forward passes per row (median)")
    ap.add_argument("--sizes", default=None, help="comma list of input sides for every row (default: per config)")
    ap.add_argument("--json", default=None, help="also write every row to this JSON file")
    ap.add_argument("--write", default=None, metavar="FILE",
                    help=f"replace the <!-- {SECTION} --> section of this markdown file (e.g. docs/models.md)")
    ap.add_argument("--label", default=None, help="status label (default: from the load average)")
    args = ap.parse_args(argv)

    from blindinpaint.errors import UserError
    from blindinpaint.evaluate import run_bench

    try:
        if args.threads < 1 or args.repeats < 1:
            raise UserError("--threads and --repeats must be >= 1")
        sizes = None
        if args.sizes:
            try:
                sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
            except ValueError:
                raise UserError(f"--sizes must be a comma list of integers, got {args.sizes!r}") from None
        groups, skipped = discover(Path(args.configs))
        if args.only:
            wanted = {n.strip() for n in args.only.split(",") if n.strip()}
            unknown = wanted - {n for g in groups for n in g.names}
            if unknown:
                raise UserError(f"--only: no model config named {', '.join(sorted(unknown))}")
            groups = [g for g in groups if wanted & set(g.names)]
        load_before = load_average()
        for g in groups:
            result = run_bench([str(g.path)], sizes or g.sizes(), repeats=args.repeats, device="cpu",
                               threads=args.threads, progress=False)
            g.rows = result["rows"]
            for r in g.rows:
                print(f"{g.label} {r['size']} px: {r['params']['total']:,} params, {r['macs'] / 1e9:.2f} GMACs, "
                      f"{r['latency_ms']:.1f} ms, {r['peak_mem_mb']:.0f} MB", file=sys.stderr, flush=True)
    except UserError as exc:
        print(f"bench_configs: error: {exc}", file=sys.stderr)
        return 2
    load_after = load_average()
    threads = next((r.get("threads") for g in groups for r in g.rows), args.threads)
    context = {"label": load_label(load_before, load_after, args.label), "command": command_line(),
               "machine": machine_line(), "threads": threads, "device": "cpu", "load_before": load_before,
               "load_after": load_after, "repeats": args.repeats}
    text = render(groups, skipped, context)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps({"context": context, "groups": [
            {"names": g.names, "task": g.task, "rows": g.rows} for g in groups]}, indent=1, default=str) + "\n")
    if args.write:
        write_section(args.write, SECTION, text)
        print(f"wrote the {SECTION} section of {args.write}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
