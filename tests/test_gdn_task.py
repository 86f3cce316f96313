"""GDN training Task: the generator / detector coupling of GDN Eq. 7-8, the Sec. 4.3 frameworks,
validation helpers, and exact resume through the one trainer."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from blindinpaint.config import load_config
from blindinpaint.losses import weighted_l1
from blindinpaint.train import ExperimentConfig, get_task
from blindinpaint.train.gdn_task import auroc_per_image, image_logit

sys.path.insert(0, str(Path(__file__).parent))
from helpers import make_tiny_task, straight_and_resumed, tiny_run_cfg  # noqa: E402
from helpers import tiny_batch as _tiny_batch  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # fixture in conftest.py

TINY_MODEL = {"base_channels": 8, "res_blocks": 1, "detector_channels": 4}


def make_task(loss: dict | None = None, lr: float = 1e-3):
    return make_tiny_task({"task": "gdn", "model": TINY_MODEL, "loss": loss or {},
                           "train": {"lr": lr, "betas": [0.0, 0.9], "device": "cpu"},
                           "phases": [{"name": "main", "lrs": {"G": lr, "D": lr}}]})


def tiny_batch(size: int = 32, n: int = 2) -> dict:
    """Holes filled with white (GDN's mask-given setting)."""
    return _tiny_batch(size, n, noise=False)


def snapshot(module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def changed(before, module) -> bool:
    return any(not torch.equal(a, b) for a, b in zip(before, module.parameters()))


def plain_l1(task, batch) -> float:
    with torch.no_grad():
        return float((task.generator(batch["clean"], batch["hole"]) - batch["clean"]).abs().mean())


def test_training_steps_reduce_the_l1():
    task, batch = make_task(lr=2e-3), tiny_batch()
    before = plain_l1(task, batch)
    for step in range(8):
        logs = task.train_step(batch, step)
    assert {"g_rec", "d_focal", "v_mean"} <= set(logs)
    assert plain_l1(task, batch) < 0.8 * before


def test_generator_step_leaves_the_detector_and_detector_step_changes_it():
    task, batch = make_task(), tiny_batch()
    det0, gen0 = snapshot(task.detector), snapshot(task.generator)
    task.optimize("G", task.generator_loss, batch)
    assert not changed(det0, task.detector), "the G step moved the detector"
    assert changed(gen0, task.generator)
    gen1 = snapshot(task.generator)
    task.optimize("D", task.detector_loss, batch)
    assert changed(det0, task.detector)
    assert not changed(gen1, task.generator), "the D step moved the generator"


def generator_grads(detach: bool) -> tuple[float, list[torch.Tensor]]:
    task, batch = make_task({"detach_weight": detach}), tiny_batch()
    loss, _ = task.generator_loss(batch)
    loss.backward()
    return loss.item(), [p.grad.clone() for p in task.generator.parameters()]


def test_detaching_w_changes_the_generator_gradient_not_the_loss():
    loss_a, grads_a = generator_grads(detach=False)
    loss_b, grads_b = generator_grads(detach=True)
    assert loss_a == pytest.approx(loss_b, rel=1e-6)   # same forward
    diff = sum(float((a - b).abs().sum()) for a, b in zip(grads_a, grads_b))
    assert diff > 1e-6 * sum(float(a.abs().sum()) for a in grads_a)


def test_weight_framework_is_hard_weighted_l1_without_the_detector():
    task, batch = make_task({"framework": "weight"}), tiny_batch()
    loss, _ = task.generator_loss(batch)
    loss.backward()
    with torch.no_grad():
        raw = task.generator(batch["clean"], batch["hole"])
    expected = weighted_l1(raw, batch["clean"], kind="hard", hole=batch["hole"], hard_weights=(6.0, 1.0))
    assert loss.item() == pytest.approx(float(expected), rel=1e-5)
    assert all(p.grad is None for p in task.detector.parameters())


def test_adv_framework_trains_the_detector_as_an_image_discriminator():
    task, batch = make_task({"framework": "adv"}, lr=1e-3), tiny_batch()
    first = task.train_step(batch, 0)["d_adv"]
    for step in range(1, 6):
        last = task.train_step(batch, step)["d_adv"]
    assert last < first
    with torch.no_grad():
        fake = task.generator(batch["clean"], batch["hole"])
        assert (image_logit(task.detector(batch["clean"])) > image_logit(task.detector(fake))).all()


@pytest.mark.parametrize("kind", ["ce", "bce"])
def test_table2_detector_losses(kind):
    task, batch = make_task({"detector_loss": kind}), tiny_batch()
    assert f"d_{kind}" in task.train_step(batch, 0)


def test_auroc_per_image_matches_pairwise_counting():
    g = torch.Generator().manual_seed(0)
    score = torch.rand(3, 1, 6, 7, generator=g).round(decimals=1)  # plenty of ties
    hole = (torch.rand(3, 1, 6, 7, generator=g) > 0.6).float()
    got = auroc_per_image(score, hole)
    for i in range(3):
        pos, neg = score[i][hole[i] > 0.5], score[i][hole[i] < 0.5]
        diff = pos[:, None] - neg[None, :]
        expected = float(((diff > 0).double() + 0.5 * (diff == 0).double()).mean())
        assert float(got[i]) == pytest.approx(expected, abs=1e-12)
    perfect = auroc_per_image(hole, hole)
    assert torch.allclose(perfect, torch.ones(3, dtype=torch.float64))
    assert torch.isnan(auroc_per_image(score, torch.zeros_like(hole))).all()


def test_validation_and_grid():
    task, batch = make_task(), tiny_batch(size=36)
    task.set_train(False)
    with torch.no_grad():
        metrics = task.val_step(batch)
        grid = task.image_grid(batch)
    for key in ("psnr", "ssim", "l1", "psnr/hole", "det_auroc", "v_hole", "v_valid"):
        assert np.isfinite(metrics[key]), key
    assert grid.shape == (3, 2 * 38 + 2, 5 * 38 + 2)


def run_cfg(out: Path, photos: Path, steps: int, resume: str = "") -> ExperimentConfig:
    return tiny_run_cfg("gdn", "gdn_cpu", out, photos, steps, resume, [
        "train.log_every=1", "model.base_channels=8", "model.res_blocks=1", "model.detector_channels=4"])


def test_exact_resume_through_the_trainer(tmp_path):
    straight, _ = straight_and_resumed(tmp_path, run_cfg)
    assert set(straight["modules"]) == {"generator", "detector"} and set(straight["optimizers"]) == {"G", "D"}


@pytest.mark.parametrize("name, framework, detector_loss", [
    ("gdn_paper", "det", "focal"), ("gdn_cpu", "det", "focal"), ("gdn_ablation_weight", "weight", "focal"),
    ("gdn_ablation_adv", "adv", None), ("gdn_ablation_ce", "det", "ce"), ("gdn_ablation_bce", "det", "bce")])
def test_configs_select_the_ablations(name, framework, detector_loss):
    cfg = load_config(ExperimentConfig, Path(__file__).parents[1] / "configs" / f"{name}.yaml")
    get_task("gdn").check_config(cfg)
    loss = get_task("gdn").LossConfig(**cfg.loss)
    assert loss.framework == framework and (detector_loss is None or loss.detector_loss == detector_loss)
    assert cfg.data.buckets == ["1-10", "10-20", "20-30", "30-40", "40-50", "50-60"]
    assert tuple(cfg.train.betas) == (0.0, 0.9) and cfg.phases[0].lrs == {"G": 1e-4, "D": 1e-5}
