"""The experiment schema: what a ``configs/*.yaml`` file may contain.

    task: hcl                 # key into blindinpaint.train.task.TASKS
    model: {...}              # validated by the Task's own ModelConfig dataclass
    data: {root: DIR, ...}    # blindinpaint.data.dataset.DataConfig
    train: {steps: 1000, batch_size: 4, out: runs/x, resume: latest, ...}
    phases:                   # phase schedule as data, sorted by ``start``
      - {name: phase1, start: 0, loss_weights: {pixel: 0.1}, lrs: {G: 1.0e-3}, flags: {gt_masks: true}}
    loss: {...}               # task-specific loss options (the Task's LossConfig)

Scripts outside the project rely on the override keys ``data.root``,
``train.steps``, ``train.out`` and ``train.resume``: keep these names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import load_config
from ..data.dataset import DataConfig
from ..errors import ConfigError


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping of one run (the trainer's own settings)."""

    steps: int = 1000               # total optimiser steps (resume continues up to this)
    batch_size: int = 4             # images per process per micro-batch
    grad_accum: int = 1             # micro-batches per optimiser step
    lr: float = 1e-3                # default Adam lr (a phase's ``lrs`` overrides per optimiser)
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    grad_clip: float = 0.0          # max grad norm per optimiser; 0 = off
    amp: bool = False               # float16 autocast + GradScaler; CUDA only (ignored elsewhere)
    ema: float = 0.0                # EMA decay of the exported weights (e.g. 0.999); 0 = off
    threads: int = 0                # torch.set_num_threads; 0 = leave torch's default
    seed: int = 0
    out: str = "runs/default"       # the run directory
    resume: str = ""                # "" = fresh run, "latest" = newest checkpoint in ``out`` (if any), or a path
    init_from: str = ""             # fresh run (step 0) from these weights: model name, export, run or checkpoint;
                                    # tensors it lacks (a new head) keep their init; ignored when resuming
    log_every: int = 10             # steps between scalar logs
    val_every: int = 500            # steps between validations (0 = only at the end)
    val_size: int = 16              # images in the fixed seeded validation set
    grid_every: int = 500           # steps between image grids (0 = off)
    ckpt_every: int = 500           # steps between checkpoints (one is always written at the end)
    keep_last: int = 3              # periodic checkpoints kept (plus best.pt)
    device: str = "auto"            # auto | cpu | cuda | mps (cuda:N accepted)

    def validate(self) -> None:
        positive = ("steps", "batch_size", "grad_accum", "val_size", "keep_last")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("log_every", "val_every", "grid_every", "ckpt_every", "threads"):
            if getattr(self, name) < 0:
                raise ConfigError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.ema < 1.0:
            raise ConfigError(f"train.ema must be in [0, 1), got {self.ema}")
        if self.lr <= 0:
            raise ConfigError(f"train.lr must be > 0, got {self.lr}")
        if len(self.betas) != 2:
            raise ConfigError(f"train.betas must hold two numbers, got {list(self.betas)}")
        if self.device.split(":")[0] not in ("auto", "cpu", "cuda", "mps"):
            raise ConfigError(f"train.device must be auto, cpu, cuda or mps, got '{self.device}'")


@dataclass
class PhaseConfig:
    """One phase of the schedule; it runs from step ``start`` until the next phase starts.

    ``loss_weights`` and ``flags`` mean whatever the Task says (it validates the keys);
    ``lrs`` maps optimiser names (see ``Task.OPTIMIZERS``) to learning rates.
    ``fresh_optimizers``: rebuild the optimisers (new Adam moments) when this phase begins.
    ``reinit``: modules given as dotted paths into the Task's modules (``D``, ``net.refiner``)
    that are set back to a fresh initialisation when this phase begins (seeded by ``train.seed``
    and the phase's start, so a resumed run re-initialises exactly like an uninterrupted one).
    """

    name: str = "main"
    start: int = 0
    loss_weights: dict[str, float] = field(default_factory=dict)
    lrs: dict[str, float] = field(default_factory=dict)
    flags: dict[str, Any] = field(default_factory=dict)
    fresh_optimizers: bool = True
    reinit: list[str] = field(default_factory=list)


@dataclass
class ExperimentConfig:
    """A whole experiment: task + model + data + training + phase schedule + loss options."""

    task: str = "hcl"
    model: dict[str, Any] = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    phases: list[PhaseConfig] = field(default_factory=lambda: [PhaseConfig()])
    loss: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if not self.phases:
            raise ConfigError("phases must hold at least one phase")
        starts = [p.start for p in self.phases]
        if starts[0] != 0:
            raise ConfigError(f"phases[0].start must be 0, got {starts[0]}")
        if any(b <= a for a, b in zip(starts, starts[1:])):
            raise ConfigError(f"phase starts must increase strictly, got {starts}")
        names = [p.name for p in self.phases]
        if len(set(names)) != len(names):
            raise ConfigError(f"phase names must be unique, got {names}")
        if self.phases[0].reinit:
            raise ConfigError("phases[0].reinit: the first phase starts from a fresh initialisation anyway")

    def phase_index(self, step: int) -> int:
        """Index of the phase that step ``step`` (0-based) belongs to."""
        index = 0
        for i, phase in enumerate(self.phases):
            if phase.start <= step:
                index = i
        return index


def load_experiment(path: str | Path | None, overrides: list[str] | None = None) -> ExperimentConfig:
    """YAML file + ``key=value`` overrides -> validated ExperimentConfig.

    The Task named by ``task`` also validates its ``model``, ``loss`` and phase keys here,
    so a typo fails before any data is read.
    """
    from .task import get_task

    cfg = load_config(ExperimentConfig, path, overrides)
    get_task(cfg.task).check_config(cfg)
    return cfg
