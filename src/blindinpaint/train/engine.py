"""One optimiser step done right: gradient accumulation, AMP and DDP ``no_sync``.

A Task calls :meth:`StepEngine.optimize` once per optimiser it steps (``"G"`` then
``"D"`` for a GAN).  The engine splits the step's batch into ``grad_accum``
micro-batches, backpropagates each micro-batch's loss divided by their number
(so the accumulated gradient equals that of one big batch), skips the DDP
all-reduce on all but the last micro-batch, then unscales, clips and steps.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Callable

import torch
from torch import Tensor, nn

from .distributed import all_reduce_flag

LossFn = Callable[[dict], "tuple[Tensor, dict[str, float]]"]


class NonFiniteLoss(Exception):
    """A loss (or a logged loss term) became NaN or infinite; the trainer adds the step."""

    def __init__(self, key: str, value: float):
        super().__init__(f"loss '{key}' is {value}")
        self.key = key
        self.value = value


def split_batch(batch: dict, parts: int) -> list[dict]:
    """Split every tensor / list of a batch dict into ``parts`` equal chunks along dim 0."""
    if parts == 1:
        return [batch]
    size = next(len(v) for v in batch.values() if isinstance(v, (Tensor, list, tuple)))
    if size % parts:
        raise ValueError(f"batch of {size} does not split into {parts} micro-batches")
    step = size // parts
    chunks = []
    for i in range(parts):
        chunk = {}
        for key, value in batch.items():
            if isinstance(value, (Tensor, list, tuple)):
                chunk[key] = value[i * step:(i + 1) * step]
            else:
                chunk[key] = value
        chunks.append(chunk)
    return chunks


class StepEngine:
    """Optimisers, DDP wrappers and AMP scalers of a running Task.

    ``optimizers`` and ``wrapped`` are filled by the trainer (a Task used on its
    own, e.g. in a test, gets a default engine: no accumulation, no AMP, no DDP).
    """

    def __init__(self, device: torch.device, grad_accum: int = 1, amp: bool = False,
                 grad_clip: float = 0.0, distributed: bool = False):
        self.device = device
        self.grad_accum = grad_accum
        # AMP only on CUDA: CPU autocast is bfloat16 and slower than fp32 on most CPUs here.
        self.amp = bool(amp) and device.type == "cuda"
        self.grad_clip = grad_clip
        self.distributed = distributed
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.wrapped: dict[str, nn.Module] = {}
        self.scalers: dict[str, torch.amp.GradScaler] = {}

    def autocast(self):
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=torch.float16)

    def scaler(self, name: str) -> torch.amp.GradScaler:
        if name not in self.scalers:
            self.scalers[name] = torch.amp.GradScaler("cuda", enabled=self.amp)
        return self.scalers[name]

    def _no_sync(self):
        """Skip DDP gradient all-reduce (every wrapped module) for a non-final micro-batch."""
        stack = contextlib.ExitStack()
        for module in self.wrapped.values():
            if hasattr(module, "no_sync"):
                stack.enter_context(module.no_sync())
        return stack

    def optimize(self, name: str | tuple[str, ...], loss_fn: LossFn, batch: dict) -> dict[str, float]:
        """Accumulate ``loss_fn`` over the micro-batches of ``batch``, then step optimiser(s) ``name``.

        ``loss_fn(micro_batch) -> (loss, logs)``: a scalar loss to minimise and a dict
        of floats to log.  ``name`` may be a tuple: one backward, several optimisers
        stepped (e.g. a restoration net and a refiner with their own learning rates).
        Returns the logs averaged over micro-batches.  Raises :class:`NonFiniteLoss`
        (on every rank) before any backward of a NaN/inf loss.
        """
        names = (name,) if isinstance(name, str) else tuple(name)
        missing = [n for n in names if n not in self.optimizers]
        if missing:
            raise KeyError(f"no optimiser '{missing[0]}' in this phase (have {sorted(self.optimizers)})")
        optimizers = [self.optimizers[n] for n in names]
        # One scaler per backward: its scale must be the same for every optimiser stepped here.
        scaler = self.scaler("+".join(names))
        # Clear gradients other losses may have left here (e.g. the adversarial term
        # of a generator loss reaches the discriminator's parameters).
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        chunks = split_batch(batch, self.grad_accum)
        totals: dict[str, float] = {}
        for i, micro in enumerate(chunks):
            last = i == len(chunks) - 1
            with contextlib.nullcontext() if last else self._no_sync():
                with self.autocast():
                    loss, logs = loss_fn(micro)
                bad = _first_non_finite(loss, logs, "+".join(names))
                if self.distributed and all_reduce_flag(bad is not None) and bad is None:
                    bad = (f"{'+'.join(names)} (on another rank)", float("nan"))
                if bad is not None:
                    raise NonFiniteLoss(*bad)
                scaler.scale(loss / len(chunks)).backward()
            for key, value in logs.items():
                totals[key] = totals.get(key, 0.0) + float(value) / len(chunks)
        for optimizer in optimizers:
            if self.grad_clip > 0:
                scaler.unscale_(optimizer)
                params = [p for group in optimizer.param_groups for p in group["params"]]
                torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
            scaler.step(optimizer)
        scaler.update()
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        return totals


def _first_non_finite(loss: Tensor, logs: dict[str, Any], name: str) -> tuple[str, float] | None:
    for key, value in logs.items():
        value = float(value)
        if not math.isfinite(value):
            return key, value
    value = float(loss.detach())
    if not math.isfinite(value):
        return f"loss/{name}", value
    return None
