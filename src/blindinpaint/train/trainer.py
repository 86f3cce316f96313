"""The one training loop, for every model family (the Task holds what differs).

    cfg = load_experiment("configs/hcl_tiny.yaml", ["data.root=photos", "train.steps=100"])
    train(cfg)                      # or: blindinpaint train --config ... key=value ...

Per step: pick the phase, fetch this step's batch, ``task.train_step``, EMA,
logging, validation / image grid / checkpoint when due.  Exact resume rests on
three things: every batch is a pure function of (seed, step, rank) (see
:class:`StepBatchSampler`), every RNG state is checkpointed per rank, and
validation / grids run with the RNG state put back afterwards.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import signal
import threading
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler
from torch.utils.data._utils.collate import default_collate

from ..config import save_config, to_dict
from ..errors import ConfigError, UserError
from .checkpoint import (CheckpointManager, load_checkpoint, load_module_state, resolve_resume, rng_state,
                         seed_all, set_rng_state)
from .config import ExperimentConfig, PhaseConfig
from .distributed import (DistInfo, all_reduce_flag, all_reduce_mean, barrier, cleanup_distributed,
                          gather_objects, init_distributed, wrap_ddp)
from .engine import NonFiniteLoss, StepEngine
from .logging import RunLog
from .task import Task, get_task, section_dict

log = logging.getLogger("blindinpaint.train")

VAL_SEED = 20230   # the validation set is the same for every run, whatever train.seed is
EXIT_INTERRUPTED = 130


# ------------------------------------------------------------------------ data
class StepBatchSampler(Sampler):
    """This rank's item indices for steps ``start .. end-1``, a pure function of (seed, step, rank).

    The global stream of items is the concatenation of per-epoch permutations of
    ``range(n)`` (epoch ``e`` shuffled with seed ``(seed, e)``); step ``s`` takes the
    ``per_rank * world_size`` items from position ``s * per_rank * world_size`` on,
    and rank ``r`` its contiguous share, like a DistributedSampler.  Each index
    comes as ``(epoch, index)`` so the dataset's corruptions follow the epoch too.
    Resuming at step ``s`` therefore needs nothing but ``s``.
    """

    def __init__(self, n: int, per_rank: int, seed: int, start: int, end: int, rank: int = 0,
                 world_size: int = 1):
        self.n, self.per_rank, self.seed = n, per_rank, seed
        self.start, self.end, self.rank, self.world_size = start, end, rank, world_size
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            self._perms = {epoch: np.random.default_rng([self.seed, epoch]).permutation(self.n)}
        return self._perms[epoch]

    def indices(self, step: int) -> list[tuple[int, int]]:
        first = (step * self.world_size + self.rank) * self.per_rank
        out = []
        for pos in range(first, first + self.per_rank):
            epoch, i = divmod(pos, self.n)
            out.append((epoch, int(self._perm(epoch)[i])))
        return out

    def __iter__(self):
        for step in range(self.start, self.end):
            yield self.indices(step)

    def __len__(self) -> int:
        return max(0, self.end - self.start)


class EpochIndexed(Dataset):
    """Wraps a dataset so items are fetched by ``(epoch, index)``; calls ``set_epoch`` as needed
    (inside each DataLoader worker too, since every worker holds its own copy)."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset
        self._epoch: int | None = None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        if epoch != self._epoch and hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
            self._epoch = epoch
        return self.dataset[index]


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()}


# ------------------------------------------------------------------------- EMA
class EMA:
    """Exponential moving average of module states: ``shadow = d * shadow + (1 - d) * current``."""

    def __init__(self, modules: dict[str, nn.Module], decay: float):
        self.decay = decay
        self.shadow = {name: {k: v.detach().clone() for k, v in m.state_dict().items()}
                       for name, m in modules.items()}

    @torch.no_grad()
    def update(self, modules: dict[str, nn.Module]) -> None:
        for name, shadow in self.shadow.items():
            for key, value in modules[name].state_dict().items():
                if value.dtype.is_floating_point:
                    shadow[key].lerp_(value.detach(), 1.0 - self.decay)
                else:
                    shadow[key].copy_(value)

    @contextlib.contextmanager
    def applied(self, modules: dict[str, nn.Module]):
        """Temporarily load the averaged weights (validation, grids)."""
        backup = {name: {k: v.detach().clone() for k, v in modules[name].state_dict().items()}
                  for name in self.shadow}
        for name, shadow in self.shadow.items():
            modules[name].load_state_dict(shadow)
        try:
            yield
        finally:
            for name, state in backup.items():
                modules[name].load_state_dict(state)


@contextlib.contextmanager
def preserved_rng():
    """Run a block (validation, grids) without disturbing any RNG stream of training."""
    state = rng_state()
    try:
        yield
    finally:
        set_rng_state(state)


class _StopFlag:
    """SIGINT / SIGTERM ask the loop to checkpoint and stop; a second SIGINT aborts at once."""

    def __init__(self):
        self.requested = False
        self._old: dict[int, object] = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("%s received: saving a checkpoint after this step (Ctrl-C again to abort)",
                    signal.Signals(signum).name)

    def __exit__(self, *exc):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        return False


def _summarise(keys: list[str]) -> str:
    """State-dict keys -> their distinct parent modules, e.g. ``net.detector.clean_head``."""
    return ", ".join(dict.fromkeys(k.rsplit(".", 1)[0] for k in keys))


def resolve_module(modules: dict[str, nn.Module], path: str) -> nn.Module:
    """``"net.refiner"`` -> ``modules["net"].refiner``; ConfigError naming the path if absent."""
    head, _, rest = path.partition(".")
    try:
        module = modules[head]
        return module.get_submodule(rest) if rest else module
    except (KeyError, AttributeError):
        raise ConfigError(f"reinit: '{path}' names no module (the task has {', '.join(sorted(modules))})") from None


# --------------------------------------------------------------------- trainer
class Trainer:
    """Runs ``cfg`` on this process (one rank under torchrun). Use :func:`train`."""

    def __init__(self, cfg: ExperimentConfig, info: DistInfo):
        self.cfg, self.info = cfg, info
        t = cfg.train
        self.run_dir = Path(t.out)
        if t.threads > 0:
            torch.set_num_threads(t.threads)
        task_cls = get_task(cfg.task)
        task_cls.check_config(cfg)

        resume_path = resolve_resume(t.resume, self.run_dir)
        ckpt = load_checkpoint(resume_path) if resume_path else None
        if ckpt is not None and ckpt["task"] != cfg.task:
            raise UserError(f"checkpoint {resume_path} was trained with task '{ckpt['task']}', "
                            f"this config trains '{cfg.task}'")
        self.start_step = int(ckpt["step"]) if ckpt else 0
        if self.start_step > t.steps:
            raise UserError(f"checkpoint {resume_path} is at step {self.start_step}, beyond train.steps={t.steps}")

        # Same seed on every rank for the weights (DDP would broadcast rank 0's anyway).
        seed_all(t.seed)
        self.task: Task = task_cls(cfg, info.device)
        for phase in cfg.phases:  # a typo in a reinit path fails now, not hours later
            for path in phase.reinit:
                resolve_module(self.task.modules(), path)
        # The resolved config (model / loss sections with the Task's defaults filled in)
        # goes to RUN/config.yaml and into every checkpoint.
        self.cfg = cfg = dataclasses.replace(cfg, model=section_dict(self.task.model_cfg),
                                             loss=section_dict(self.task.loss_cfg))
        self.task.cfg = cfg
        self.engine = StepEngine(info.device, grad_accum=t.grad_accum, amp=t.amp, grad_clip=t.grad_clip,
                                 distributed=info.distributed)
        self.task.engine = self.engine
        self.train_set = self.task.build_dataset("train", seed=t.seed)
        if len(self.train_set) == 0:
            raise UserError("the training dataset is empty (check data.root)")
        self.val_set = self.task.build_dataset("val", seed=VAL_SEED, length=t.val_size) if info.is_main else None

        self.log = RunLog(self.run_dir, info.is_main, t.steps, self.start_step)
        try:
            self._setup(ckpt, resume_path)
        except BaseException:
            self.log.close()
            raise

    def _setup(self, ckpt: dict | None, resume_path: Path | None) -> None:
        cfg, t, info = self.cfg, self.cfg.train, self.info
        if info.is_main:
            save_config(cfg, self.run_dir / "config.yaml")
        self.ckpts = CheckpointManager(self.run_dir, t.keep_last, self.task.VAL_METRIC, self.task.VAL_MODE)
        if info.is_main:
            self.ckpts.remove_stale_temps()
        if ckpt is None and t.init_from:
            self._init_from(t.init_from)
        self.ema = EMA({n: self.task.modules()[n] for n in self.task.ema_modules()}, t.ema) if t.ema > 0 else None
        self.phase_index = -1
        self.images_seen = 0
        self.train_seconds = 0.0
        self.last_val: dict[str, float] = {}
        self.last_ckpt: Path | None = resume_path

        if ckpt is None:
            self._enter_phase(0)
            seed_all(t.seed + 1_000_003 * info.rank)  # per-rank streams for augmentation / sampling
        else:
            self._restore(ckpt, resume_path)

    # ---------------------------------------------------------------- phases
    def _enter_phase(self, index: int) -> None:
        phase = self.cfg.phases[index]
        first = self.phase_index < 0
        if not first and phase.reinit:
            self._reinit(phase)
        self.task.on_phase(phase)
        new = self.task.optimizers(phase)
        unknown = sorted(set(new) - set(self.task.OPTIMIZERS))
        if unknown:
            raise ValueError(f"{type(self.task).__name__}.optimizers returned '{unknown[0]}', "
                             f"not in OPTIMIZERS {self.task.OPTIMIZERS}")
        if not first and not phase.fresh_optimizers:
            for name, old in self.engine.optimizers.items():
                if name in new:  # keep Adam moments, take the new phase's lr
                    for group in old.param_groups:
                        group["lr"] = self.task.lr(name)
                    new[name] = old
        else:
            self.engine.scalers = {}
        self.engine.optimizers = new
        # requires_grad is final now (on_phase): wrap what trains in this phase.
        self.engine.wrapped = {name: wrap_ddp(m, self.info, self.task.FIND_UNUSED_PARAMETERS)
                               for name, m in self.task.modules().items()}
        self.phase_index = index
        if not first:
            self.log.info(f"phase '{phase.name}' begins (optimisers: {', '.join(sorted(new))})")

    def _reinit(self, phase: PhaseConfig) -> None:
        """Copy a freshly built Task's weights into the modules named by ``phase.reinit``
        (the Task's own initialisation code, seeded by train.seed + phase start; RNG streams kept)."""
        with preserved_rng():
            seed_all(self.cfg.train.seed + phase.start)
            fresh = type(self.task)(self.cfg, self.info.device)
        for path in phase.reinit:
            target = resolve_module(self.task.modules(), path)
            target.load_state_dict(resolve_module(fresh.modules(), path).state_dict())
            head, _, rest = path.partition(".")
            if self.ema is not None and head in self.ema.shadow:  # restart the average of these weights only
                prefix = f"{rest}." if rest else ""
                for key, value in self.task.modules()[head].state_dict().items():
                    if key.startswith(prefix):
                        self.ema.shadow[head][key].copy_(value)
        self.log.info(f"phase '{phase.name}': re-initialised {', '.join(phase.reinit)}")

    def _init_from(self, source: str) -> None:
        """Fine-tuning: copy the exported weights of ``source`` (model name, export folder, run or
        checkpoint) into the task's exported modules.  Tensors ``source`` lacks keep their fresh
        initialisation (listed in the log); unknown keys or other shapes are a UserError.  Modules
        outside the export (e.g. a critic) start fresh."""
        from ..hub import load  # the hub imports the trainer's checkpoint helpers

        loaded = load(source)
        if loaded.task != self.cfg.task:
            raise UserError(f"train.init_from: {loaded.source} holds a '{loaded.task}' model, "
                            f"this config trains '{self.cfg.task}'")
        modules = self.task.modules()
        fresh = []
        for prefix, name in self.task.export_spec().modules.items():
            start = f"{prefix}." if prefix else ""
            state = {k[len(start):]: v for k, v in loaded.state_dict.items() if k.startswith(start)}
            fresh += [f"{name}.{k}" for k in load_module_state(modules[name], state, name, loaded.source,
                                                               allow_missing=True)]
        step = loaded.meta.get("training", {}).get("step", "?")
        self.log.info(f"initialised from {loaded.source} (trained {step} steps)"
                      + (f"; {len(fresh)} tensor(s) it lacks start fresh: {_summarise(fresh)}" if fresh else ""))

    # ---------------------------------------------------------------- resume
    def _restore(self, ckpt: dict, path: Path) -> None:
        for name, module in self.task.modules().items():
            if name not in ckpt["modules"]:
                raise UserError(f"checkpoint {path} has no module '{name}'; was it trained with another task?")
            load_module_state(module, ckpt["modules"][name], name, path)
        # The optimisers in the file belong to the phase of the last finished step;
        # the loop then switches phase exactly as the uninterrupted run did.
        done = self.start_step
        self._enter_phase(self.cfg.phase_index(max(done - 1, 0)))
        for name, opt in self.engine.optimizers.items():
            if name not in ckpt["optimizers"]:
                raise UserError(f"checkpoint {path} has no optimiser '{name}' for phase "
                                f"'{self.cfg.phases[self.phase_index].name}' (phases changed?)")
            try:
                opt.load_state_dict(ckpt["optimizers"][name])
            except (ValueError, KeyError) as exc:
                raise UserError(f"checkpoint {path}: optimiser '{name}' does not fit this model: "
                                f"{str(exc).splitlines()[0]}") from None
        for name, state in ckpt.get("scalers", {}).items():
            self.engine.scaler(name).load_state_dict(state)
        if self.ema is not None and ckpt.get("ema"):
            for name, shadow in ckpt["ema"].items():
                if name in self.ema.shadow:
                    for key, value in shadow.items():
                        self.ema.shadow[name][key].copy_(value)
        self.task.load_state_dict(ckpt.get("task_state", {}))
        summary = ckpt.get("summary", {})
        self.images_seen = int(summary.get("images_seen", 0))
        self.train_seconds = float(summary.get("train_seconds", 0.0))
        self.last_val = dict(ckpt.get("val", {}))
        best = ckpt.get("best", {})
        if best.get("metric") == self.ckpts.metric:
            self.ckpts.best_value = best.get("value")
        rngs = ckpt.get("rng", [])
        if len(rngs) == self.info.world_size:
            set_rng_state(rngs[self.info.rank])
        else:
            self.log.info(f"checkpoint saved with {len(rngs)} process(es), running {self.info.world_size}: "
                          "RNG streams re-seeded (data order still follows the step)")
            seed_all(self.cfg.train.seed + 1_000_003 * self.info.rank + done)
        self.log.info(f"resumed from {path} at step {done}")

    # ---------------------------------------------------------- checkpoints
    def _state(self, step: int) -> dict:
        spec = self.task.export_spec()
        return {
            "format": "blindinpaint-checkpoint",
            "version": 1,
            "task": self.cfg.task,
            "config": to_dict(self.cfg),
            "step": step,
            "phase": self.cfg.phases[self.phase_index].name,
            "phase_index": self.phase_index,
            "world_size": self.info.world_size,
            "modules": {n: m.state_dict() for n, m in self.task.modules().items()},
            "optimizers": {n: o.state_dict() for n, o in self.engine.optimizers.items()},
            "scalers": {n: s.state_dict() for n, s in self.engine.scalers.items() if self.engine.amp},
            "ema": self.ema.shadow if self.ema is not None else {},
            "task_state": self.task.state_dict(),
            "rng": gather_objects(rng_state()),
            "best": {"metric": self.ckpts.metric, "mode": self.ckpts.mode, "value": self.ckpts.best_value},
            "val": dict(self.last_val),
            "export": {"model": spec.model, "config": spec.config, "modules": dict(spec.modules),
                       "extra": dict(spec.extra or {})},
            "summary": {"images_seen": self.images_seen, "train_seconds": self.train_seconds,
                        "world_size": self.info.world_size},
        }

    def _save(self, step: int, best: bool = False) -> None:
        state = self._state(step)  # collective (RNG gather): every rank calls this
        if self.info.is_main:
            self.last_ckpt = self.ckpts.save(state, step, best=best)
            self.log.info(f"step {step}: checkpoint {self.last_ckpt}" + (" (best)" if best else ""))
        barrier()

    # ------------------------------------------------------- val and grids
    @contextlib.contextmanager
    def _eval_mode(self):
        modules = self.task.modules()
        self.task.set_train(False)
        self.task._use_wrapped = False
        ema = self.ema.applied(modules) if self.ema is not None else contextlib.nullcontext()
        try:
            with preserved_rng(), torch.no_grad(), ema:
                yield
        finally:
            self.task._use_wrapped = True
            self.task.set_train(True)

    def _val_loader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.cfg.train.batch_size, shuffle=False, num_workers=0)

    def validate(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        count = 0
        with self._eval_mode():
            for batch in self._val_loader():
                n = len(next(v for v in batch.values() if isinstance(v, Tensor)))
                for key, value in self.task.val_step(to_device(batch, self.info.device)).items():
                    totals[key] = totals.get(key, 0.0) + float(value) * n
                count += n
        return {k: v / count for k, v in totals.items()}

    def image_grid(self) -> Tensor:
        with self._eval_mode():
            batch = next(iter(self._val_loader()))
            return self.task.image_grid(to_device(batch, self.info.device))

    # ------------------------------------------------------------------ loop
    def run(self) -> int:
        """Train from ``start_step`` to ``train.steps``; 0 when done, 130 when stopped by a signal."""
        t, info = self.cfg, self.info
        tc = t.train
        per_rank = tc.batch_size * tc.grad_accum
        sampler = StepBatchSampler(len(self.train_set), per_rank, tc.seed, self.start_step, tc.steps,
                                   info.rank, info.world_size)
        workers = int(getattr(t.data, "num_workers", 0))
        loader = DataLoader(EpochIndexed(self.train_set), batch_sampler=sampler, num_workers=workers,
                            collate_fn=default_collate, pin_memory=info.device.type == "cuda",
                            # the loader's own generator: creating it must not draw from torch's RNG
                            generator=torch.Generator().manual_seed(tc.seed))
        if self.start_step == 0 and info.is_main:
            n_params = sum(p.numel() for m in self.task.modules().values() for p in m.parameters())
            self.log.info(f"task '{t.task}': {n_params:,} parameters; {len(self.train_set)} training items; "
                          f"{tc.steps} steps of {per_rank * info.world_size} images on "
                          f"{info.world_size} x {info.device}")
        try:
            return self._loop(loader, per_rank)
        finally:
            self.log.close()

    def _loop(self, loader: DataLoader, per_rank: int) -> int:
        t, info = self.cfg, self.info
        tc = t.train
        self.task.set_train(True)
        window: dict[str, float] = {}
        window_steps, window_time, window_images = 0, 0.0, 0
        status = 0
        step = self.start_step
        with _StopFlag() as stop:
            tick = time.perf_counter()
            for batch in loader:
                phase_index = t.phase_index(step)
                if phase_index != self.phase_index:
                    self._enter_phase(phase_index)
                batch = to_device(batch, info.device)
                try:
                    logs = self.task.train_step(batch, step)
                except NonFiniteLoss as exc:
                    self._non_finite(step, exc.key, exc.value)
                logs = all_reduce_mean(logs)
                for key, value in logs.items():
                    if not math.isfinite(value):
                        self._non_finite(step, key, value)
                if self.ema is not None:
                    self.ema.update(self.task.modules())
                step += 1
                now = time.perf_counter()
                window_time += now - tick
                self.train_seconds += now - tick
                self.images_seen += per_rank * info.world_size
                window_images += per_rank * info.world_size
                window_steps += 1
                for key, value in logs.items():
                    window[key] = window.get(key, 0.0) + value

                if tc.log_every and (step % tc.log_every == 0 or step == tc.steps) and window_steps:
                    means = {k: v / window_steps for k, v in window.items()}
                    rate = window_images / max(window_time, 1e-9)
                    scalars = {f"train/{k}": v for k, v in means.items()}
                    scalars["perf/images_per_s"] = rate
                    for name, opt in self.engine.optimizers.items():
                        scalars[f"lr/{name}"] = opt.param_groups[0]["lr"]
                    self.log.scalars(step, scalars)
                    self.log.progress(step, {**means, "img/s": rate})
                    if not self.log.enabled or not self.log.interactive:
                        text = " ".join(f"{k}={v:.4g}" for k, v in means.items())
                        self.log.info(f"step {step}/{tc.steps} {text} {rate:.2f} img/s")
                    window, window_steps, window_time, window_images = {}, 0, 0.0, 0

                improved = False
                if info.is_main and ((tc.val_every and step % tc.val_every == 0) or step == tc.steps):
                    self.last_val = self.validate()
                    self.log.scalars(step, {f"val/{k}": v for k, v in self.last_val.items()})
                    self.log.info(f"step {step} validation: "
                                  + " ".join(f"{k}={v:.4g}" for k, v in self.last_val.items()))
                    improved = self.ckpts.improves(self.last_val)
                    if improved:
                        self.ckpts.best_value = float(self.last_val[self.ckpts.metric])
                if info.is_main and tc.grid_every and (step % tc.grid_every == 0 or step == tc.steps):
                    self.log.image(step, "grid", self.image_grid())
                improved = all_reduce_flag(improved)
                stopping = all_reduce_flag(stop.requested)
                if improved or stopping or step == tc.steps or (tc.ckpt_every and step % tc.ckpt_every == 0):
                    self._save(step, best=improved)
                if stopping:
                    self.log.info(f"stopped at step {step}; continue with train.resume=latest "
                                  f"(checkpoint {self.last_ckpt})")
                    status = EXIT_INTERRUPTED
                    break
                tick = time.perf_counter()
        if status == 0 and info.is_main:
            self.log.info(f"done: {step} steps, {self.images_seen} images, {self.train_seconds:.0f} s of training")
        return status

    def _non_finite(self, step: int, key: str, value: float) -> None:
        kept = f"last good checkpoint: {self.last_ckpt}" if self.last_ckpt else "no checkpoint written yet"
        raise UserError(f"training stopped at step {step}: loss '{key}' is {value} ({kept})")


def train(cfg: ExperimentConfig) -> int:
    """Train ``cfg`` in this process (joining the torchrun group when launched by torchrun).

    Returns 0 when ``train.steps`` were reached, 130 when stopped by SIGINT/SIGTERM
    (after saving a checkpoint).
    """
    info = init_distributed(cfg.train.device)
    try:
        return Trainer(cfg, info).run()
    finally:
        cleanup_distributed()
