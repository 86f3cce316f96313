"""Checkpoints: tensors and primitives only, written atomically, last K + best kept.

Layout inside a run directory::

    RUN/checkpoints/step_00001000.pt   periodic (the newest ``train.keep_last`` are kept)
    RUN/checkpoints/best.pt            best validation metric so far (a hard link when possible)

A checkpoint is a plain dict loadable with ``torch.load(path, weights_only=True)``:
config as a dict, RNG states as tensors, no pickled objects.  Writing goes to a
temporary file in the same folder, is fsync'ed, then ``os.replace``d over the
final name, so a crash (even SIGKILL) mid-write leaves the previous files intact.
"""

from __future__ import annotations

import os
import random
import re
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import UserError

CKPT_DIR = "checkpoints"
BEST = "best.pt"
_STEP_RE = re.compile(r"^step_(\d+)\.pt$")


# ------------------------------------------------------------------- RNG state
def rng_state() -> dict:
    """This process's RNG states (torch, CUDA, numpy, python) as tensors and primitives."""
    np_state = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(cuda),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": int(py_version), "state": torch.tensor(py_state, dtype=torch.int64),
                   "gauss_next": py_gauss},
    }


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(x) for x in p["state"].tolist()), p["gauss_next"]))


def seed_all(seed: int) -> None:
    """Seed python, numpy and torch (all devices) with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# --------------------------------------------------------------- file helpers
def atomic_save(obj: dict, path: str | Path) -> None:
    """``torch.save`` to a temp file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".pt", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint with ``weights_only=True``; a clear UserError for a bad file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated file, not a torch file, pickled objects, ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot read checkpoint {path}: {first}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != "blindinpaint-checkpoint":
        raise UserError(f"{path} is not a blindinpaint training checkpoint")
    return ckpt


def step_checkpoints(run_dir: str | Path) -> list[Path]:
    """Periodic checkpoints of a run, oldest first."""
    folder = Path(run_dir) / CKPT_DIR
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _STEP_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    ckpts = step_checkpoints(run_dir)
    return ckpts[-1] if ckpts else None


def best_checkpoint(run_dir: str | Path) -> Path | None:
    path = Path(run_dir) / CKPT_DIR / BEST
    return path if path.is_file() else None


def find_checkpoint(path: str | Path, which: str = "latest") -> Path:
    """A checkpoint file, or a run directory's ``latest`` / ``best`` checkpoint."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise UserError(f"no such run directory or checkpoint: {path}")
    if which not in ("latest", "best"):
        raise UserError(f"checkpoint choice must be 'latest' or 'best', got '{which}'")
    found = best_checkpoint(path) if which == "best" else latest_checkpoint(path)
    if found is None:
        raise UserError(f"no {which} checkpoint in {path / CKPT_DIR}")
    return found


def resolve_resume(resume: str, run_dir: str | Path) -> Path | None:
    """``train.resume``: "" -> None; "latest" -> newest checkpoint in ``run_dir`` (None if
    the run has none yet, so re-running a script is idempotent); else a file or run dir."""
    if not resume:
        return None
    if resume == "latest":
        return latest_checkpoint(run_dir)
    return find_checkpoint(resume, "latest")


# ------------------------------------------------------------- state loading
def load_module_state(module: nn.Module, state: dict, name: str, source: str | Path,
                      allow_missing: bool = False) -> list[str]:
    """``module.load_state_dict(state)`` with a one-line UserError on any mismatch.

    ``allow_missing``: keys of the module that ``state`` lacks keep their current values (a
    fine-tuning run adding a new head); returns those keys.  Unknown keys and shape mismatches
    are always errors.
    """
    own = module.state_dict()
    hint = "was it trained with a different model config?"
    for key, value in state.items():
        if key in own and tuple(own[key].shape) != tuple(value.shape):
            raise UserError(f"weights in {source} do not fit this model: '{name}.{key}' has shape "
                            f"{tuple(value.shape)} there but {tuple(own[key].shape)} here; {hint}")
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if unexpected or (missing and not allow_missing):
        what = f"lacks '{name}.{missing[0]}'" if missing and not allow_missing else \
            f"has an unknown key '{name}.{unexpected[0]}'"
        raise UserError(f"weights in {source} do not fit this model: the file {what} "
                        f"({len(missing)} missing, {len(unexpected)} unknown keys); {hint}")
    module.load_state_dict(state, strict=not allow_missing)
    return missing


# ------------------------------------------------------------------ manager
class CheckpointManager:
    """Writes ``step_<8-digit step>.pt`` files, keeps the newest ``keep_last`` and ``best.pt``."""

    def __init__(self, run_dir: str | Path, keep_last: int, metric: str, mode: str = "min",
                 best_value: float | None = None):
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.folder = Path(run_dir) / CKPT_DIR
        self.keep_last = keep_last
        self.metric = metric
        self.mode = mode
        self.best_value = best_value

    def remove_stale_temps(self) -> None:
        """Delete temp files a killed writer left behind."""
        if self.folder.is_dir():
            for p in self.folder.glob(".tmp-*"):
                p.unlink(missing_ok=True)

    def improves(self, metrics: dict[str, float] | None) -> bool:
        if not metrics or self.metric not in metrics:
            return False
        value = float(metrics[self.metric])
        if self.best_value is None:
            return True
        return value < self.best_value if self.mode == "min" else value > self.best_value

    def save(self, state: dict, step: int, best: bool = False) -> Path:
        """Write the checkpoint for ``step``; also make it ``best.pt`` when ``best``."""
        path = self.folder / f"step_{step:08d}.pt"
        atomic_save(state, path)
        if best:
            self._link_best(path)
        for old in step_checkpoints(self.folder.parent)[:-self.keep_last]:
            old.unlink(missing_ok=True)
        return path

    def _link_best(self, path: Path) -> None:
        # A hard link costs no space and no second write; rename it over best.pt atomically.
        tmp = self.folder / f".tmp-best-{os.getpid()}.pt"
        tmp.unlink(missing_ok=True)
        try:
            os.link(path, tmp)
        except OSError:
            atomic_save(torch.load(path, map_location="cpu", weights_only=True), tmp)
        os.replace(tmp, self.folder / BEST)
        _fsync_dir(self.folder)
