"""The Task: everything model-specific the one trainer needs.

A Task builds its modules, says which optimisers train which parameters in a
phase, does one training step (its own forward, backward and optimiser steps,
through :meth:`Task.optimize` so gradient accumulation, AMP and DDP just work),
validates a batch, draws an image grid and names what goes into an export.
The trainer owns everything else: data order, phases, checkpoints, EMA, DDP
wrapping, logging.

Minimal example (a one-optimiser regression task)::

    class MyTask(Task):
        ModelConfig = MyModelConfig          # dataclass for the ``model:`` section
        OPTIMIZERS = ("G",)

        def build(self):
            self.net = MyNet(self.model_cfg).to(self.device)

        def modules(self):
            return {"net": self.net}

        def optimizers(self, phase):
            return {"G": self.adam("G", self.net.parameters())}

        def train_step(self, batch, step):
            def loss_fn(b):
                out = self.module("net")(b["corrupted"])
                loss = (out - b["clean"]).abs().mean()
                return loss, {"l1": loss.item()}
            return self.optimize("G", loss_fn, batch)

A GAN steps ``"D"`` then ``"G"`` (or the reverse) with two ``optimize`` calls.
Inside the generator loss, call the discriminator as ``self.raw("D")``: it only
passes gradients through there, so its DDP wrapper must not expect a backward.

Registering: ``TASKS["name"] = MyTask`` (tests, plugins) or an entry in
``BUILTIN_TASKS`` (imported only when that task is asked for).
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Iterable

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from ..config import from_dict, to_dict
from ..errors import ConfigError
from .config import ExperimentConfig, PhaseConfig
from .engine import LossFn, StepEngine


@dataclass
class ExportSpec:
    """What ``blindinpaint export`` writes for this task.

    ``model``: key into ``blindinpaint.models.registry.MODELS``; its builder, given
    ``config``, returns the module whose ``state_dict`` the export holds.
    ``modules``: state-dict prefix -> name in :meth:`Task.modules`; prefix ``""``
    stores that module's keys unprefixed.
    ``extra``: primitives to keep beside the config (e.g. a calibrated threshold).
    """

    model: str
    config: dict
    modules: dict[str, str]
    extra: dict | None = None


class Task(ABC):
    """Base class of a model family's training logic (see the module docstring)."""

    ModelConfig: type | None = None     # dataclass for the ``model:`` section (None: must be empty)
    LossConfig: type | None = None      # dataclass for the ``loss:`` section (None: must be empty)
    OPTIMIZERS: tuple[str, ...] = ()    # optimiser names a phase's ``lrs`` may set
    LOSS_WEIGHTS: dict[str, float] = {}  # loss term -> default weight (phases may override)
    FLAGS: dict[str, Any] = {}          # phase flag -> default value
    VAL_METRIC: str = "loss"            # validation metric that picks best.pt
    VAL_MODE: str = "min"               # "min" or "max"
    FIND_UNUSED_PARAMETERS: bool = False  # DDP option, for tasks whose forward skips parameters

    def __init__(self, cfg: ExperimentConfig, device: torch.device | str = "cpu"):
        self.cfg = cfg
        self.device = torch.device(device)
        self.model_cfg = _section(self.ModelConfig, cfg.model, "model")
        self.loss_cfg = _section(self.LossConfig, cfg.loss, "loss")
        self.phase: PhaseConfig = cfg.phases[0]
        self.engine = StepEngine(self.device)
        self._use_wrapped = True
        self.build()

    # ------------------------------------------------------------ config checks
    @classmethod
    def check_config(cls, cfg: ExperimentConfig) -> None:
        """Validate the task-specific parts of ``cfg``; raise ConfigError naming the key."""
        _section(cls.ModelConfig, cfg.model, "model")
        _section(cls.LossConfig, cfg.loss, "loss")
        for i, phase in enumerate(cfg.phases):
            for key, allowed, what in ((phase.loss_weights, cls.LOSS_WEIGHTS, "loss_weights"),
                                       (phase.lrs, cls.OPTIMIZERS, "lrs"),
                                       (phase.flags, cls.FLAGS, "flags")):
                unknown = sorted(set(key) - set(allowed))
                if unknown:
                    raise ConfigError(f"unknown config key 'phases[{i}].{what}.{unknown[0]}' for task "
                                      f"'{cfg.task}' (known: {', '.join(sorted(allowed)) or 'none'})")

    # ------------------------------------------------------- subclass interface
    @abstractmethod
    def build(self) -> None:
        """Create the modules (on ``self.device``) from ``self.model_cfg``."""

    @abstractmethod
    def modules(self) -> dict[str, nn.Module]:
        """Every module whose state is checkpointed, by name."""

    @abstractmethod
    def optimizers(self, phase: PhaseConfig) -> dict[str, torch.optim.Optimizer]:
        """Optimisers for ``phase`` (called at the start and when a phase asks for fresh ones)."""

    @abstractmethod
    def train_step(self, batch: dict, step: int) -> dict[str, float]:
        """One training step on ``batch`` (already on the device); returns floats to log."""

    @abstractmethod
    def val_step(self, batch: dict) -> dict[str, float]:
        """Metrics of one validation batch (modules in eval mode, no grad); averaged by the trainer."""

    @abstractmethod
    def image_grid(self, batch: dict) -> Tensor:
        """A 3 x H x W picture in [0, 1] of the task's inputs and outputs on ``batch``."""

    @abstractmethod
    def export_spec(self) -> ExportSpec:
        """Which modules and which model config go into an export."""

    # ---------------------------------------------------- optional overrides
    def on_phase(self, phase: PhaseConfig) -> None:
        """Enter ``phase``: set flags and ``requires_grad`` (before the trainer wraps for DDP)."""
        self.phase = phase

    def build_dataset(self, split: str, seed: int, length: int | None = None) -> Dataset:
        """The dataset for ``split`` ("train" or "val"); items are dicts of tensors.

        Default: the synthetic corruption dataset of ``cfg.data`` (val = eval mode,
        a fixed seeded set of ``length`` items).  It must be deterministic given
        (seed, epoch, index) so resume reproduces the data exactly.
        """
        from ..data.dataset import build_dataset

        return build_dataset(self.cfg.data, train=split == "train", seed=seed, length=length)

    def ema_modules(self) -> list[str]:
        """Modules that get an exponential moving average (default: the exported ones)."""
        return sorted(set(self.export_spec().modules.values()))

    def state_dict(self) -> dict:
        """Extra task state (tensors and primitives only) to checkpoint."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned."""

    # ------------------------------------------------------- helpers for tasks
    def weight(self, term: str) -> float:
        """Loss weight of ``term`` in the current phase (default from LOSS_WEIGHTS)."""
        return float(self.phase.loss_weights.get(term, self.LOSS_WEIGHTS[term]))

    def flag(self, name: str) -> Any:
        """Phase flag ``name`` (default from FLAGS)."""
        return self.phase.flags.get(name, self.FLAGS[name])

    def lr(self, name: str) -> float:
        """Learning rate of optimiser ``name`` in the current phase (default ``train.lr``)."""
        return float(self.phase.lrs.get(name, self.cfg.train.lr))

    def adam(self, name: str, params: Iterable, **kwargs) -> torch.optim.Adam:
        """Adam with the phase's lr for ``name`` and ``train.betas`` / ``train.weight_decay``."""
        t = self.cfg.train
        kwargs.setdefault("betas", tuple(t.betas))
        kwargs.setdefault("weight_decay", t.weight_decay)
        return torch.optim.Adam([p for p in params if p.requires_grad], lr=self.lr(name), **kwargs)

    def module(self, name: str) -> nn.Module:
        """Module ``name`` to call in a loss: DDP-wrapped while training under torchrun."""
        if self._use_wrapped and name in self.engine.wrapped:
            return self.engine.wrapped[name]
        return self.modules()[name]

    def raw(self, name: str) -> nn.Module:
        """Module ``name`` without its DDP wrapper (for pass-through uses, e.g. D in the G loss)."""
        return self.modules()[name]

    def optimize(self, name: str | tuple[str, ...], loss_fn: LossFn, batch: dict) -> dict[str, float]:
        """Backward ``loss_fn`` over the micro-batches of ``batch`` and step optimiser(s) ``name``."""
        return self.engine.optimize(name, loss_fn, batch)

    def set_train(self, mode: bool) -> None:
        for m in self.modules().values():
            m.train(mode)


def _section(cls: type | None, data: dict, prefix: str):
    if cls is None:
        if data:
            raise ConfigError(f"unknown config key '{prefix}.{sorted(data)[0]}' (this task takes no {prefix} options)")
        return None
    return from_dict(cls, data, prefix=prefix)


def section_dict(obj) -> dict:
    """A model/loss config dataclass (or None) as a plain dict."""
    return {} if obj is None else to_dict(obj)


TASKS: dict[str, type[Task]] = {}
# Built-in tasks, imported only when asked for (importing one must not build every model family).
BUILTIN_TASKS: dict[str, str] = {
    "hcl": "blindinpaint.train.hcl_task:HCLTask",
    "gdn": "blindinpaint.train.gdn_task:GDNTask",
    "vcnet": "blindinpaint.train.vcnet_task:VCNetTask",
    "seg": "blindinpaint.train.seg_task:SegTask",
}


def get_task(name: str) -> type[Task]:
    """The Task class registered as ``name`` (TASKS first, then BUILTIN_TASKS)."""
    if name in TASKS:
        return TASKS[name]
    if name in BUILTIN_TASKS:
        module_name, cls_name = BUILTIN_TASKS[name].split(":")
        TASKS[name] = getattr(importlib.import_module(module_name), cls_name)
        return TASKS[name]
    known = ", ".join(sorted(set(TASKS) | set(BUILTIN_TASKS))) or "none registered"
    raise ConfigError(f"unknown task '{name}' (known tasks: {known})")
