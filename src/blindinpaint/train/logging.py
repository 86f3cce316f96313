"""Run logging on rank 0: log file, TensorBoard, ``scalars.jsonl``, image grids, tqdm.

Everything lands in the run directory::

    RUN/train.log          the log messages of the run (appended on resume)
    RUN/tb/                TensorBoard scalars and image grids
    RUN/scalars.jsonl      one JSON object per logged step (plot loss curves without TensorBoard)
    RUN/grids/step_*.png   the periodic image grids

Other ranks get a :class:`RunLog` with ``enabled=False``: every method is a no-op.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from tqdm import tqdm

logger = logging.getLogger("blindinpaint.train")


class RunLog:
    def __init__(self, run_dir: str | Path, enabled: bool, total_steps: int, start_step: int):
        self.enabled = enabled
        self.run_dir = Path(run_dir)
        self._handler: logging.Handler | None = None
        self._writer = None
        self._jsonl = None
        self._bar = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._handler = logging.FileHandler(self.run_dir / "train.log")
        self._handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        pkg = logging.getLogger("blindinpaint")
        pkg.addHandler(self._handler)
        if pkg.getEffectiveLevel() > logging.INFO:
            pkg.setLevel(logging.INFO)
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            logger.warning("tensorboard is not installed (pip install 'blindinpaint[train]'): "
                           "scalars go to scalars.jsonl only")
        else:
            self._writer = SummaryWriter(str(self.run_dir / "tb"), purge_step=start_step or None)
        self._jsonl = open(self.run_dir / "scalars.jsonl", "a")
        # The bar only on an interactive terminal; elsewhere log lines report progress.
        self.interactive = sys.stderr.isatty()
        self._bar = tqdm(total=total_steps, initial=start_step, disable=not self.interactive,
                         dynamic_ncols=True, unit="step")

    def info(self, msg: str) -> None:
        if self.enabled:
            logger.info(msg)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        if self._writer is not None:
            for key, value in values.items():
                self._writer.add_scalar(key, value, step)
        self._jsonl.write(json.dumps({"step": step, "time": round(time.time(), 3), **values}) + "\n")
        self._jsonl.flush()

    def progress(self, step: int, postfix: dict[str, float]) -> None:
        if self.enabled and self._bar is not None:
            self._bar.n = step
            self._bar.set_postfix({k: f"{v:.4g}" for k, v in postfix.items()}, refresh=False)
            self._bar.refresh()

    def image(self, step: int, tag: str, grid: Tensor) -> Path | None:
        """Save a 3 x H x W [0, 1] grid as ``grids/step_<8-digit step>.png`` and to TensorBoard."""
        if not self.enabled:
            return None
        grid = grid.detach().float().clamp(0, 1).cpu()
        if self._writer is not None:
            self._writer.add_image(tag, grid, step)
        path = self.run_dir / "grids" / f"step_{step:08d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        array = (grid.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
        Image.fromarray(array).save(path)
        return path

    def close(self) -> None:
        """Flush and detach everything (safe to call twice)."""
        if not self.enabled:
            return
        self.enabled = False
        if self._bar is not None:
            self._bar.close()
        if self._writer is not None:
            self._writer.close()
        if self._jsonl is not None:
            self._jsonl.close()
        if self._handler is not None:
            logging.getLogger("blindinpaint").removeHandler(self._handler)
            self._handler.close()


def make_grid(rows: list[list[Tensor]], pad: int = 2) -> Tensor:
    """Tile images into a grid: ``rows[r][c]`` is C x H x W in [0, 1] (C = 1 or 3, equal H, W).

    Returns 3 x (R*(H+pad)+pad) x (C*(W+pad)+pad) in [0, 1] on a white background.
    """
    h, w = rows[0][0].shape[-2:]
    n_cols = max(len(r) for r in rows)
    out = torch.ones(3, len(rows) * (h + pad) + pad, n_cols * (w + pad) + pad)
    for r, row in enumerate(rows):
        for c, img in enumerate(row):
            img = img.detach().float().cpu().clamp(0, 1)
            if img.shape[0] == 1:
                img = img.expand(3, -1, -1)
            y, x = pad + r * (h + pad), pad + c * (w + pad)
            out[:, y:y + h, x:x + w] = img
    return out
