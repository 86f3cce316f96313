"""Model profiler: parameters per module, MACs, forward latency and peak memory.

Used by ``blindinpaint info`` (and by the ``bench`` command).  ``--json`` prints one object:

    {"params": {<module>: count, ..., "restoration": n, "total": n}, "macs": n,
     "latency_ms": t, "peak_mem_mb": m, ...}

* Parameters are counted on the ``meta`` device, so paper configs allocate nothing.
* MACs = FLOPs / 2 from ``torch.utils.flop_counter.FlopCounterMode`` (convolutions, matmuls and
  fused attention; elementwise ops are not counted).  PyTorch registers no formula for the CPU
  fused-attention kernel, so one is registered here (same formula as the GPU kernels).
* Latency: median wall time of ``repeats`` forward passes after two warm-up passes, batch 1,
  ``torch.inference_mode``; the thread count and the load average are reported with it.
* Memory: ``peak_mem_mb`` = peak resident set size of the process (``resource.getrusage``
  ``ru_maxrss``) after building the model and running the timed passes (weights + activations +
  runtime); ``forward_mem_mb`` = how far the forward passes raised it above the resident size
  just before them.  On CUDA: ``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, register_flop_formula, sdpa_flop_count

from .errors import UserError

MAC_COUNTER = "torch.utils.flop_counter.FlopCounterMode (MACs = FLOPs / 2)"


@register_flop_formula(torch.ops.aten._scaled_dot_product_flash_attention_for_cpu)
def _cpu_sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    # The CPU fused kernel does the same two batched matmuls as the GPU kernels PyTorch counts.
    return sdpa_flop_count(query_shape, key_shape, value_shape)


# ----------------------------------------------------------------------------- loading
def load_for_profile(source: str) -> tuple[str, Any, str]:
    """``source`` -> ``(task, config, description)``.  Config files are read with the registry;
    exports, run directories and bundled names go through :mod:`blindinpaint.hub` when present."""
    from .models.registry import load_model_config

    path = Path(source)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise UserError(f"config file not found: {source}")
        spec = load_model_config(path)
        return spec.task, spec.config, str(path)
    try:
        from . import hub  # noqa: F401  (optional until model export/loading lands)
        load = getattr(hub, "load")
    except (ImportError, AttributeError):
        raise UserError(f"cannot profile {source!r}: give a config file (configs/*.yaml); loading "
                        f"exports, run directories and bundled models needs blindinpaint.hub.load") from None
    from .config import from_dict
    from .models.registry import CONFIGS

    loaded = load(source)  # profiled with its architecture; weights do not change the cost
    name = getattr(loaded, "model", None) or getattr(loaded, "task", None)
    config = getattr(loaded, "model_config", None)
    if name not in CONFIGS or config is None:
        raise UserError(f"{source}: model {name!r} cannot be profiled (known: {', '.join(sorted(CONFIGS))})")
    if isinstance(config, dict):
        config = from_dict(CONFIGS[name], config, prefix="model")
    return name, config, source


# -------------------------------------------------------------------------- parameters
def _count(module: nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def hcl_parameter_breakdown(net: nn.Module, discriminator: nn.Module | None) -> dict[str, int]:
    """Per-module counts of an HCL network.  ``heads`` = projection heads + inter-stage maps
    (Eq. 3, 6); ``restoration`` = stem + encoder + heads + bottleneck + decoder (the figure of
    supp. Table 5 / SPEC section 2); ``total`` = every module listed."""
    det = net.detector
    params = {
        "stem": _count(net.stem),
        "encoder": _count(net.encoder),
        "heads": _count(det.heads) + _count(det.maps),
        "cluster_classifier": _count(det.cluster_classifier),
        "bottleneck": _count(net.bottleneck),
        "decoder": _count(net.decoder),
        "refiner": _count(net.refiner),
        "discriminator": _count(discriminator),
    }
    params["restoration"] = sum(params[k] for k in ("stem", "encoder", "heads", "bottleneck", "decoder"))
    params["total"] = _count(net) + _count(discriminator)
    return params


def _generic_breakdown(net: nn.Module, discriminator: nn.Module | None) -> dict[str, int]:
    params = {name: _count(child) for name, child in net.named_children()}
    if discriminator is not None:
        params["discriminator"] = _count(discriminator)
    params["total"] = _count(net) + _count(discriminator)
    return params


BREAKDOWNS: dict[str, Callable[[nn.Module, nn.Module | None], dict[str, int]]] = {
    "hcl": hcl_parameter_breakdown,
}


def _build(task: str, config: Any, device: str | torch.device,
           discriminator: bool = True) -> tuple[nn.Module, nn.Module | None]:
    from .models.registry import DISCRIMINATORS, MODELS

    with torch.device(device):
        net = MODELS[task](config)
        disc = DISCRIMINATORS[task](config) if discriminator and task in DISCRIMINATORS else None
    return net, disc


def count_parameters(task: str, config: Any) -> dict[str, int]:
    """Parameters per module, counted on the ``meta`` device (no weights allocated)."""
    net, disc = _build(task, config, "meta")
    return BREAKDOWNS.get(task, _generic_breakdown)(net, disc)


# ----------------------------------------------------------------------- forward passes
def _hcl_forward(model: nn.Module, size: int, device: torch.device, refine: bool = True) -> Callable[[], Any]:
    image = torch.rand(1, 3, size, size, device=device) * 2 - 1  # [-1, 1] inside HCL
    return lambda: model(image, refine=refine)


# task -> function(model, size, device, refine) returning a zero-argument callable running one forward
EXAMPLE_FORWARD: dict[str, Callable[..., Callable[[], Any]]] = {
    "hcl": _hcl_forward,
}


def count_macs(model: nn.Module, run: Callable[[], Any]) -> tuple[int, dict[str, int]]:
    """MACs of one call of ``run`` (total, and per top-level child module of ``model``)."""
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        run()
    per_module = {}
    prefix = type(model).__name__ + "."
    for name, counts in counter.get_flop_counts().items():
        if name.startswith(prefix) and name.count(".") == 1:
            per_module[name[len(prefix):]] = int(sum(counts.values())) // 2
    return counter.get_total_flops() // 2, per_module


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _maxrss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


def measure_latency(run: Callable[[], Any], device: torch.device, repeats: int = 5,
                    warmup: int = 2) -> dict[str, float]:
    """Median wall time of ``repeats`` calls after ``warmup`` calls, plus peak memory."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    before = _rss_mb() if os.path.exists("/proc/self/statm") else 0.0
    times = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            sync()
            start = time.perf_counter()
            run()
            sync()
            if i >= warmup:
                times.append(time.perf_counter() - start)
    out = {"latency_ms": 1000 * statistics.median(times), "latency_min_ms": 1000 * min(times)}
    if device.type == "cuda":
        out["peak_mem_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        out["peak_mem_method"] = "torch.cuda.max_memory_allocated"
    else:
        peak = _maxrss_mb()
        out["peak_mem_mb"] = peak
        out["forward_mem_mb"] = max(0.0, peak - before)
        out["peak_mem_method"] = "resource.getrusage ru_maxrss (process peak RSS)"
    return out


def profile(source: str, size: int = 256, repeats: int = 5, latency: bool = True,
            device: str = "cpu", refine: bool = True) -> dict[str, Any]:
    """Profile a model given by a config file (or a hub name/path when hub loading exists).
    ``refine=False`` leaves the refinement network out of MACs and latency."""
    if size < 8:
        raise UserError(f"--size must be >= 8, got {size}")
    if repeats < 1:
        raise UserError(f"--repeats must be >= 1, got {repeats}")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise UserError(f"unknown device {device!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda requested but CUDA is not available")
    task, config, described = load_for_profile(source)
    if task not in EXAMPLE_FORWARD:
        raise UserError(f"profiling is not available for task {task!r}")
    result: dict[str, Any] = {"model": described, "task": task, "size": size,
                              "params": count_parameters(task, config)}
    torch.manual_seed(0)
    net, _ = _build(task, config, dev, discriminator=False)  # the critic is training-only
    net.eval()
    run = EXAMPLE_FORWARD[task](net, size, dev, refine)
    result["refine"] = refine
    result["threads"] = torch.get_num_threads()
    result["device"] = str(dev)
    if latency:  # before MAC counting, so the memory peak is the plain forward's
        result.update(measure_latency(run, dev, repeats))
        result["repeats"] = repeats
        result["load_average"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    else:
        result.update(latency_ms=None, peak_mem_mb=None)
    macs, per_module = count_macs(net, run)
    result["macs"] = macs
    result["macs_per_module"] = per_module
    result["mac_counter"] = MAC_COUNTER
    return result


def _fmt_count(n: int) -> str:
    return f"{n:,}" + (f"  ({n / 1e6:.2f}M)" if n >= 1e5 else "")


def format_report(r: dict[str, Any]) -> str:
    lines = [f"model: {r['model']}  (task {r['task']}, input 1 x 3 x {r['size']} x {r['size']})", "parameters:"]
    for name, n in r["params"].items():
        lines.append(f"  {name:<20} {_fmt_count(n)}")
    lines.append(f"MACs: {r['macs'] / 1e9:.2f} G  [{r['mac_counter']}]"
                 + ("" if r.get("refine", True) else "  (without the refiner)"))
    for name, n in r.get("macs_per_module", {}).items():
        lines.append(f"  {name:<20} {n / 1e9:.2f} G")
    if r.get("latency_ms") is not None:
        load = r.get("load_average")
        load_txt = f", load average {load[0]:.2f}" if load else ""
        lines.append(f"latency: {r['latency_ms']:.1f} ms median of {r['repeats']} (min {r['latency_min_ms']:.1f} ms), "
                     f"{r['threads']} threads, {r['device']}{load_txt}")
        mem = f"peak memory: {r['peak_mem_mb']:.0f} MB [{r['peak_mem_method']}]"
        if "forward_mem_mb" in r:
            mem += f"; forward passes added {r['forward_mem_mb']:.0f} MB"
        lines.append(mem)
    return "\n".join(lines)


def info_main(args) -> int:
    """Runner of ``blindinpaint info``."""
    result = profile(args.model, size=args.size, repeats=args.repeats, latency=not args.no_latency,
                     device=getattr(args, "device", "cpu"), refine=not getattr(args, "no_refiner", False))
    if args.json:
        print(json.dumps(result))
    else:
        print(format_report(result))
    return 0
