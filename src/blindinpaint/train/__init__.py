"""One model-agnostic trainer; a :class:`Task` per model family.

- :mod:`.config`      ExperimentConfig / TrainConfig / PhaseConfig (the YAML schema)
- :mod:`.task`        the Task base class and the ``TASKS`` registry
- :mod:`.engine`      one optimiser step: gradient accumulation, AMP, DDP no_sync
- :mod:`.trainer`     the loop: data order, phases, EMA, validation, grids, checkpoints
- :mod:`.checkpoint`  atomic checkpoints, last K + best, exact resume
- :mod:`.distributed` torchrun / DDP helpers
- :mod:`.logging`     log file, TensorBoard, scalars.jsonl, tqdm
"""

from .config import ExperimentConfig, PhaseConfig, TrainConfig, load_experiment
from .task import TASKS, ExportSpec, Task, get_task
from .trainer import train

__all__ = ["ExperimentConfig", "PhaseConfig", "TrainConfig", "load_experiment", "TASKS", "ExportSpec", "Task",
           "get_task", "train"]
