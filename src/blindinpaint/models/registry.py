"""Model registry: plain dicts from a task name to its config dataclass and builders.

No import-time scanning: a model family is registered by adding one line to each dict.

    spec = load_model_config("configs/hcl_tiny.yaml")      # -> ModelSpec(task="hcl", config=HCLConfig)
    net = MODELS[spec.task](spec.config)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, NamedTuple

from torch import nn

from ..config import from_dict, merge, parse_overrides, read_yaml
from ..errors import ConfigError
from .gdn import GDN, GDNConfig
from .hcl import HCLConfig, build_hcl, build_hcl_discriminator
from .segbaseline import SegBaselineConfig, build_seg_baseline
from .vcnet import VCNet, VCNetConfig


def _from_config(cls: type, build: Callable[[Any], nn.Module]) -> Callable[[Any], nn.Module]:
    """Builder taking the config dataclass or its plain dict (hub exports store dicts)."""
    return lambda cfg: build(cfg if isinstance(cfg, cls) else from_dict(cls, cfg, prefix="model"))


# task -> builder(config) of the network used at inference (and trained by the task's trainer)
MODELS: dict[str, Callable[[Any], nn.Module]] = {
    "hcl": build_hcl,
    "gdn": _from_config(GDNConfig, GDN),
    "vcnet": _from_config(VCNetConfig, VCNet),
    "seg": build_seg_baseline,
}

# task -> config dataclass of the YAML ``model:`` section
CONFIGS: dict[str, type] = {
    "hcl": HCLConfig,
    "gdn": GDNConfig,
    "vcnet": VCNetConfig,
    "seg": SegBaselineConfig,
}

# task -> builder(config) of an adversarial critic trained alongside (training only)
DISCRIMINATORS: dict[str, Callable[[Any], nn.Module]] = {
    "hcl": build_hcl_discriminator,
}


class ModelSpec(NamedTuple):
    """A model family name (``task``) and its resolved architecture config."""

    task: str
    config: Any


def model_config_from_dict(data: dict, source: str = "config") -> ModelSpec:
    """``{"task": ..., "model": {...}, ...}`` -> :class:`ModelSpec`; other top-level sections
    (``data:``, ``train:`` ...) belong to the trainer and are ignored here."""
    task = data.get("task")
    if task is None:
        raise ConfigError(f"{source} has no 'task:' key (one of: {', '.join(sorted(CONFIGS))})")
    if task not in CONFIGS:
        raise ConfigError(f"{source}: unknown task {task!r} (known: {', '.join(sorted(CONFIGS))})")
    model = data.get("model") or {}
    if not isinstance(model, dict):
        raise ConfigError(f"{source}: 'model:' must be a mapping")
    return ModelSpec(task, from_dict(CONFIGS[task], model, prefix="model"))


def load_model_config(path: str | Path, overrides: list[str] | None = None) -> ModelSpec:
    """Read a YAML from ``configs/`` into the task's config dataclass.

    ``overrides`` are dotted ``key=value`` strings over the whole file, e.g. ``model.dim=16``.
    Unknown keys inside ``model:`` are errors (:class:`~blindinpaint.errors.ConfigError`).
    """
    data = read_yaml(path)
    if overrides:
        data = merge(data, parse_overrides(overrides))
    return model_config_from_dict(data, source=str(path))


def build_model(spec: ModelSpec) -> nn.Module:
    """Build the network of ``spec`` with freshly initialised weights."""
    return MODELS[spec.task](spec.config)
