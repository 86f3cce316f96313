"""Plain helpers shared by test files: micro exports, tiny training tasks, photo folders, exact resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from blindinpaint import hub
from blindinpaint.config import load_config, to_dict
from blindinpaint.models.contrast import ContrastConfig
from blindinpaint.models.hcl import HCLConfig, HCLNet
from blindinpaint.train import ExperimentConfig, get_task, train

from test_trainer import assert_same_state, final_state


# ----------------------------------------------------------------------------- exports
def micro_hcl_config(no_corruption: str = "off") -> HCLConfig:
    """An HCL small enough for millisecond forwards (pads to multiples of 16).  tau = 0.01 spreads
    the random network's P(hole) over [0, 1] (at 0.1 every pixel sits near 0.5)."""
    return HCLConfig(dim=8, encoder_depths=[1, 1, 1], encoder_heads=[1, 1, 2], bottleneck_depth=1,
                     bottleneck_heads=2, decoder_depths=[1, 1, 1], window=4, refiner_width=8, refiner_levels=2,
                     contrast=ContrastConfig(embed_dim=16, hidden_dim=16, tau=0.01, no_corruption=no_corruption))


def write_export(module: torch.nn.Module, task: str, model_config, folder: Path) -> Path:
    """``folder/model.safetensors`` (float32) + ``folder/config.json`` through :func:`hub.save_export`;
    the registry name is the task name.  ``model_config``: a config dataclass or its dict."""
    config = model_config if isinstance(model_config, dict) else to_dict(model_config)
    return hub.save_export(module, task, task, config, folder, fp16=False)


def make_hcl_export(folder: Path, no_corruption: str = "off", seed: int = 0) -> Path:
    """A randomly initialised (``seed``) micro HCL export in ``folder``."""
    torch.manual_seed(seed)
    cfg = micro_hcl_config(no_corruption)
    return write_export(HCLNet(cfg), "hcl", cfg, folder)


def make_gdn_export(folder: Path, seed: int = 0) -> Path:
    """A randomly initialised (``seed``) GDN export in ``folder``, sized by the ``model:`` section of
    ``configs/gdn_cpu.yaml`` (generator 1.52M, detector 0.57M parameters)."""
    from blindinpaint.models.registry import build_model, load_model_config

    spec = load_model_config(Path(__file__).parents[1] / "configs" / "gdn_cpu.yaml")
    torch.manual_seed(seed)
    return write_export(build_model(spec), spec.task, spec.config, folder)


# ----------------------------------------------------------------------------- training tasks
def make_tiny_task(base: dict):
    """A Task built from the config dict ``base`` (seed 0), entered into its first phase with optimizers."""
    torch.manual_seed(0)
    cfg = load_config(ExperimentConfig, None, None, base=base)
    task_cls = get_task(base["task"])
    task_cls.check_config(cfg)
    task = task_cls(cfg)
    enter_phase(task, cfg.phases[0])
    return task


def enter_phase(task, phase) -> None:
    task.on_phase(phase)
    task.engine.optimizers = task.optimizers(phase)


def tiny_batch(size: int = 32, n: int = 2, noise: bool = True) -> dict:
    """``n`` >= 2 smooth images with two fixed rectangular holes (1 = hole), filled with seeded noise
    (``noise``) or white; ``clean`` / ``corrupted`` in [0, 1], B x 3 x size x size."""
    g = torch.Generator().manual_seed(1)
    clean = torch.nn.functional.interpolate(torch.rand(n, 3, 4, 4, generator=g), size=size, mode="bilinear")
    hole = torch.zeros(n, 1, size, size)
    hole[0, :, 4:16, 6:20] = 1
    hole[1, :, 10:30, 2:12] = 1
    fill = torch.rand(n, 3, size, size, generator=g) if noise else 1
    return {"clean": clean, "hole": hole, "corrupted": clean * (1 - hole) + fill * hole}


# ----------------------------------------------------------------------------- runs through the trainer
def write_photos(folder: Path, n: int = 4, size: int = 48) -> Path:
    """``n`` smooth random RGB photos (seed 0) as ``folder/p{i}.png``."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        Image.fromarray(small).resize((size, size), Image.Resampling.BILINEAR).save(folder / f"p{i}.png")
    return folder


def tiny_run_cfg(task: str, config_name: str, out: Path, photos: Path, steps: int, resume: str,
                 overrides: list[str]) -> ExperimentConfig:
    """``configs/<config_name>.yaml`` shrunk to a 2-image-batch, 32 px, CPU run of ``steps`` steps
    that writes only the final checkpoint; ``overrides`` (model size, losses, phases) come last."""
    cfg = load_config(ExperimentConfig, Path(__file__).parents[1] / "configs" / f"{config_name}.yaml", [
        f"data.root={photos}", "data.size=32", f"train.out={out}", f"train.steps={steps}", f"train.resume={resume}",
        "train.batch_size=2", "train.val_size=2", "train.val_every=0", "train.grid_every=0", "train.ckpt_every=0",
        "train.device=cpu", "train.threads=1", *overrides])
    get_task(task).check_config(cfg)
    return cfg


def straight_and_resumed(tmp_path: Path, run_cfg) -> tuple[dict, dict]:
    """Train 4 steps straight, and 2 steps then resume to 4; ``run_cfg(out, photos, steps, resume="")``
    builds each config.  Asserts the resumed final state equals the straight one; returns both states."""
    photos = write_photos(tmp_path / "photos")
    assert train(run_cfg(tmp_path / "straight", photos, 4)) == 0
    assert train(run_cfg(tmp_path / "resumed", photos, 2)) == 0
    assert train(run_cfg(tmp_path / "resumed", photos, 4, resume="latest")) == 0
    straight, resumed = final_state(tmp_path / "straight"), final_state(tmp_path / "resumed")
    assert_same_state(straight, resumed)
    return straight, resumed


def planted_features(gt: torch.Tensor, noise: float, seed: int = 0, channels=(128, 64, 32),
                     base: int = 8) -> list[torch.Tensor]:
    """Encoder-like features coarse -> fine for a B x 1 x H x W hole mask: at every scale each pixel is
    its region's vector (one for hole, one for valid) plus ``noise`` x Gaussian noise."""
    g = torch.Generator().manual_seed(seed)
    feats = []
    for s, c in enumerate(channels):
        size = base * 2 ** s
        hole = F.adaptive_avg_pool2d(gt, size) > 0.5
        a, h = torch.randn(2, c, generator=g)
        f = torch.where(hole, h.view(1, c, 1, 1), a.view(1, c, 1, 1))
        feats.append(f + noise * torch.randn(gt.shape[0], c, size, size, generator=g))
    return feats
