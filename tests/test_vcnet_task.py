"""VCNet training Task: mask BCE learning, the two-phase PCN mask feeding, the WGAN-GP critics,
and exact resume (across the phase switch) through the one trainer."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from blindinpaint.config import load_config
from blindinpaint.models.vcnet_critics import MaskWeightedPatchCritic
from blindinpaint.train import ExperimentConfig, get_task

sys.path.insert(0, str(Path(__file__).parent))
from helpers import enter_phase as enter  # noqa: E402
from helpers import make_tiny_task, straight_and_resumed, tiny_batch, tiny_run_cfg  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # fixture in conftest.py

TINY_MODEL = {"mpn_channels": 8, "neck_channels": 8, "rin_channels": 4, "se_reduction": 4}
TINY_LOSS = {"perceptual_backbone": "none", "critic_channels": 4}
PHASES = [{"name": "given", "start": 0, "flags": {"given_hole": True}},
          {"name": "predicted", "start": 2, "flags": {"given_hole": False}, "fresh_optimizers": False}]


def make_task(lr: float = 1e-3):
    return make_tiny_task({"task": "vcnet", "model": TINY_MODEL, "loss": TINY_LOSS, "phases": PHASES,
                           "train": {"lr": lr, "betas": [0.5, 0.9], "device": "cpu"}})


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


def run_cfg(out: Path, photos: Path, steps: int, resume: str = "") -> ExperimentConfig:
    return tiny_run_cfg("vcnet", "vcnet_cpu", out, photos, steps, resume, [
        "data.patterns=[constant]", "data.buckets=[0-30]", "train.grad_accum=1", "train.log_every=1",
        "model.mpn_channels=8", "model.neck_channels=8", "model.rin_channels=4", "model.se_reduction=4",
        "loss.perceptual_backbone=none", "loss.critic_channels=4",
        "phases=[{name: given, start: 0, flags: {given_hole: true}}, "
        "{name: predicted, start: 2, flags: {given_hole: false}, fresh_optimizers: false}]"])


def test_exact_resume_across_the_phase_switch(tmp_path):
    straight, _ = straight_and_resumed(tmp_path, run_cfg)
    assert straight["phase"] == "predicted" and set(straight["optimizers"]) == {"G", "D"}


@pytest.mark.parametrize("name", ["vcnet_cpu", "vcnet_paper"])
def test_configs_load(name):
    cfg = load_config(ExperimentConfig, Path(__file__).parents[1] / "configs" / f"{name}.yaml")
    get_task("vcnet").check_config(cfg)
    assert cfg.phases[0].flags["given_hole"] is True and cfg.phases[-1].flags["given_hole"] is False
    assert tuple(cfg.train.betas) == (0.5, 0.9)
