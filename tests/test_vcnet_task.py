"""VCNet training Task: mask BCE learning, the two-phase PCN mask feeding, the WGAN-GP critics,
and exact resume (across the phase switch) through the one trainer."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from blindinpaint.config import load_config
from blindinpaint.models.vcnet_critics import MaskWeightedPatchCritic
from blindinpaint.train import ExperimentConfig, get_task, train

sys.path.insert(0, str(Path(__file__).parent))
from test_trainer import assert_same_state, final_state  # noqa: E402


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: these models are tiny, and on a shared machine extra threads only contend."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

TINY_MODEL = {"mpn_channels": 8, "neck_channels": 8, "rin_channels": 4, "se_reduction": 4}
TINY_LOSS = {"perceptual_backbone": "none", "critic_channels": 4}
PHASES = [{"name": "given", "start": 0, "flags": {"given_hole": True}},
          {"name": "predicted", "start": 2, "flags": {"given_hole": False}, "fresh_optimizers": False}]


def make_task(lr: float = 1e-3):
    torch.manual_seed(0)
    cfg = load_config(ExperimentConfig, None, None, base={
        "task": "vcnet", "model": TINY_MODEL, "loss": TINY_LOSS, "phases": PHASES,
        "train": {"lr": lr, "betas": [0.5, 0.9], "device": "cpu"}})
    task_cls = get_task("vcnet")
    task_cls.check_config(cfg)
    task = task_cls(cfg)
    enter(task, cfg.phases[0])
    return task


def enter(task, phase):
    task.on_phase(phase)
    task.engine.optimizers = task.optimizers(phase)


def tiny_batch(size: int = 32) -> dict:
    g = torch.Generator().manual_seed(1)
    clean = torch.nn.functional.interpolate(torch.rand(2, 3, 4, 4, generator=g), size=size, mode="bilinear")
    hole = torch.zeros(2, 1, size, size)
    hole[0, :, 4:16, 6:20] = 1
    hole[1, :, 10:30, 2:12] = 1
    noise = torch.rand(2, 3, size, size, generator=g)
    return {"clean": clean, "hole": hole, "corrupted": clean * (1 - hole) + noise * hole}


def test_training_steps_reduce_the_mask_bce():
    task, batch = make_task(lr=3e-3), tiny_batch()
    losses = [task.train_step(batch, step)["mask_bce"] for step in range(10)]
    assert losses[-1] < 0.9 * losses[0]


def test_phase_one_feeds_the_true_mask_and_phase_two_the_prediction_to_the_pcns():
    task, batch = make_task(), tiny_batch()
    seen: dict[str, torch.Tensor] = {}
    task.vcnet.rin.register_forward_pre_hook(lambda m, args: seen.__setitem__("pcn_hole", args[1].detach()))
    task.vcnet.mpn.register_forward_hook(lambda m, args, out: seen.__setitem__("predicted", out[0].detach()))
    task.train_step(batch, 0)
    assert torch.equal(seen["pcn_hole"], batch["hole"])
    enter(task, task.cfg.phases[1])
    task.train_step(batch, 2)
    assert torch.equal(seen["pcn_hole"], seen["predicted"])
    assert not torch.equal(seen["pcn_hole"], batch["hole"])


def test_critic_step_moves_only_the_critics_and_generator_step_only_the_generator():
    task, batch = make_task(), tiny_batch()
    critics0 = [p.detach().clone() for p in task.critics.parameters()]
    gen0 = [p.detach().clone() for p in task.vcnet.parameters()]
    task.optimize("G", task.generator_loss, batch)
    assert all(torch.equal(a, b) for a, b in zip(critics0, task.critics.parameters()))
    gen1 = [p.detach().clone() for p in task.vcnet.parameters()]
    assert any(not torch.equal(a, b) for a, b in zip(gen0, gen1))
    logs = task.optimize("D", task.critic_loss, batch)
    assert any(not torch.equal(a, b) for a, b in zip(critics0, task.critics.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(gen1, task.vcnet.parameters()))
    assert {"d_global", "gp_global", "d_patch", "gp_patch"} <= set(logs)


def test_patch_critic_weights_patches_by_their_hole_fraction():
    torch.manual_seed(0)
    critic = MaskWeightedPatchCritic(4)
    image = torch.rand(1, 3, 32, 32) * 2 - 1
    scores = critic.net(image)                         # one score per 8 x 8 cell: 4 x 4
    hole = torch.zeros(1, 1, 32, 32)
    hole[..., 8:16, 16:24] = 1                         # exactly cell (1, 2)
    assert torch.allclose(critic(image, hole), scores[0, 0, 1, 2].reshape(1))
    hole[..., 0:8, 0:4] = 1                            # half of cell (0, 0)
    expected = (scores[0, 0, 1, 2] + 0.5 * scores[0, 0, 0, 0]) / 1.5
    assert torch.allclose(critic(image, hole), expected.reshape(1))


def test_validation_is_blind_and_reports_mask_and_restoration_metrics():
    task, batch = make_task(), tiny_batch(size=30)
    task.set_train(False)
    with torch.no_grad():
        metrics = task.val_step(batch)
        grid = task.image_grid(batch)
    for key in ("mask_f1", "mask_iou", "mask_bce", "psnr", "ssim", "l1", "comp_psnr"):
        assert np.isfinite(metrics[key]), key
    assert grid.shape == (3, 2 * 32 + 2, 5 * 32 + 2)


def write_photos(folder: Path, n: int = 4, size: int = 48) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        Image.fromarray(small).resize((size, size), Image.Resampling.BILINEAR).save(folder / f"p{i}.png")
    return folder


def run_cfg(out: Path, photos: Path, steps: int, resume: str = "") -> ExperimentConfig:
    cfg = load_config(ExperimentConfig, Path(__file__).parents[1] / "configs" / "vcnet_cpu.yaml", [
        f"data.root={photos}", "data.size=32", "data.patterns=[constant]", "data.buckets=[0-30]",
        f"train.out={out}", f"train.steps={steps}", f"train.resume={resume}",
        "train.batch_size=2", "train.grad_accum=1", "train.val_size=2", "train.val_every=0", "train.grid_every=0",
        "train.ckpt_every=0", "train.log_every=1", "train.device=cpu", "train.threads=1",
        "model.mpn_channels=8", "model.neck_channels=8", "model.rin_channels=4", "model.se_reduction=4",
        "loss.perceptual_backbone=none", "loss.critic_channels=4",
        "phases=[{name: given, start: 0, flags: {given_hole: true}}, "
        "{name: predicted, start: 2, flags: {given_hole: false}, fresh_optimizers: false}]"])
    get_task("vcnet").check_config(cfg)
    return cfg


def test_exact_resume_across_the_phase_switch(tmp_path):
    photos = write_photos(tmp_path / "photos")
    assert train(run_cfg(tmp_path / "straight", photos, 4)) == 0
    assert train(run_cfg(tmp_path / "resumed", photos, 2)) == 0
    assert train(run_cfg(tmp_path / "resumed", photos, 4, resume="latest")) == 0
    straight, resumed = final_state(tmp_path / "straight"), final_state(tmp_path / "resumed")
    assert straight["phase"] == "predicted" and set(straight["optimizers"]) == {"G", "D"}
    assert_same_state(straight, resumed)


@pytest.mark.parametrize("name", ["vcnet_cpu", "vcnet_paper"])
def test_configs_load(name):
    cfg = load_config(ExperimentConfig, Path(__file__).parents[1] / "configs" / f"{name}.yaml")
    get_task("vcnet").check_config(cfg)
    assert cfg.phases[0].flags["given_hole"] is True and cfg.phases[-1].flags["given_hole"] is False
    assert tuple(cfg.train.betas) == (0.5, 0.9)
