"""Segmentation baseline: the HCL network with BCE mask heads (model contract and its Task)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from blindinpaint.config import load_config
from blindinpaint.models.hcl import HCLConfig, HCLNet, HCLOutput
from blindinpaint.models.registry import MODELS
from blindinpaint.models.segbaseline import SegBaselineConfig, SegBaselineNet, SegMaskHeads
from blindinpaint.train import ExperimentConfig, get_task, train

sys.path.insert(0, str(Path(__file__).parent))
from test_trainer import assert_same_state, final_state  # noqa: E402

TINY_MODEL = {"dim": 8, "encoder_depths": [1, 1, 1], "encoder_heads": [1, 2, 4], "bottleneck_depth": 1,
              "decoder_depths": [1, 1, 1], "refiner_width": 0, "head_hidden": 16}
PHASE1 = {"name": "phase1", "start": 0, "loss_weights": {"adv": 0.0},
          "flags": {"gt_masks": True, "train_refiner": False}}


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: these models are tiny, and on a shared machine extra threads only contend."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_net() -> SegBaselineNet:
    torch.manual_seed(0)
    return MODELS["seg"](dict(TINY_MODEL))


def test_forward_at_an_odd_size_has_hcl_output_shapes():
    net = tiny_net().eval()
    image = torch.rand(2, 3, 37, 45) * 2 - 1
    with torch.no_grad():
        out = net(image)
    assert isinstance(out, HCLOutput) and isinstance(net.detector, SegMaskHeads)
    assert out.rec.shape == (2, 3, 37, 45) and out.refined is None
    assert out.hole.shape == out.prob_hole.shape == (2, 1, 37, 45)
    assert set(out.hole.unique().tolist()) <= {0.0, 1.0} and 0 <= out.prob_hole.min() <= out.prob_hole.max() <= 1
    # three scales, coarse -> fine, on the 64 x 64 padded grid; the decoder reads the predicted masks
    assert [tuple(h.shape[-2:]) for h in out.detection.hole] == [(16, 16), (32, 32), (64, 64)]
    assert [tuple(m.shape[-2:]) for m in out.decoder_masks] == [(10, 12), (19, 23), (37, 45)]
    assert torch.equal(out.hole, out.detection.hole[-1][..., :37, :45])
    assert not out.detection.hole[-1][..., 37:, :].any()  # padding is never a hole
    with torch.no_grad():
        _, prob, hole = net.detect(image)                  # HCL's detection-only product hook works too
    assert torch.equal(prob, out.prob_hole) and torch.equal(hole, out.hole)


def test_same_network_as_hcl_except_the_detector():
    cfg = load_config(SegBaselineConfig, None, None, base=dict(TINY_MODEL))
    hcl_cfg = load_config(HCLConfig, None, None, base={k: v for k, v in TINY_MODEL.items() if k != "head_hidden"})
    torch.manual_seed(0)
    seg = SegBaselineNet(cfg)
    torch.manual_seed(0)
    hcl = HCLNet(hcl_cfg)
    seg_state = {k: v for k, v in seg.state_dict().items() if not k.startswith("detector.")}
    hcl_state = {k: v for k, v in hcl.state_dict().items() if not k.startswith("detector.")}
    assert seg_state.keys() == hcl_state.keys()
    assert all(torch.equal(seg_state[k], hcl_state[k]) for k in seg_state)  # same init as well
    # one head per scale (channels 32, 16, 8): C x 16 + 16 (1x1 conv), then 16 + 1 (1x1 conv to a logit)
    assert sum(p.numel() for p in seg.detector.parameters()) == sum(c * 16 + 16 + 16 + 1 for c in (32, 16, 8))


def make_task():
    torch.manual_seed(0)
    cfg = load_config(ExperimentConfig, None, None, base={
        "task": "seg", "model": TINY_MODEL, "loss": {"perceptual": "none"}, "phases": [PHASE1],
        "train": {"lr": 3e-3, "device": "cpu"}})
    task_cls = get_task("seg")
    task_cls.check_config(cfg)
    task = task_cls(cfg)
    task.on_phase(cfg.phases[0])
    task.engine.optimizers = task.optimizers(cfg.phases[0])
    return task


def tiny_batch(size: int = 32) -> dict:
    g = torch.Generator().manual_seed(1)
    clean = torch.nn.functional.interpolate(torch.rand(2, 3, 4, 4, generator=g), size=size, mode="bilinear")
    hole = torch.zeros(2, 1, size, size)
    hole[0, :, 4:16, 6:20] = 1
    hole[1, :, 10:30, 2:12] = 1
    noise = torch.rand(2, 3, size, size, generator=g)
    return {"clean": clean, "hole": hole, "corrupted": clean * (1 - hole) + noise * hole}


def test_bce_decreases_and_validation_uses_the_hcl_metrics():
    task, batch = make_task(), tiny_batch()
    losses = [task.train_step(batch, step)["mask"] for step in range(12)]
    assert losses[-1] < 0.85 * losses[0] and all(b < a for a, b in zip(losses[::3], losses[3::3]))
    task.set_train(False)
    with torch.no_grad():
        metrics = task.val_step(batch)
        grid = task.image_grid(batch)
    assert {"hole_iou", "valid_iou", "bce", "psnr_rec", "iou_s3"} <= set(metrics)
    assert grid.shape[0] == 3
    assert task.export_spec().model == "seg"


def write_photos(folder: Path, n: int = 4, size: int = 48) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        Image.fromarray(small).resize((size, size), Image.Resampling.BILINEAR).save(folder / f"p{i}.png")
    return folder


def run_cfg(out: Path, photos: Path, steps: int, resume: str = "") -> ExperimentConfig:
    overrides = [f"data.root={photos}", "data.size=32", "data.patterns=[constant]", f"train.out={out}",
                 f"train.steps={steps}", f"train.resume={resume}", "train.batch_size=2", "train.val_size=2",
                 "train.val_every=0", "train.grid_every=0", "train.ckpt_every=0", "train.device=cpu",
                 "train.threads=1", "loss.perceptual=none",
                 "phases=[{name: phase1, start: 0, loss_weights: {adv: 0.0}, "
                 "flags: {gt_masks: true, train_refiner: false}}]"]
    overrides += [f"model.{k}={v if not isinstance(v, list) else ','.join(map(str, v))}" for k, v in TINY_MODEL.items()]
    cfg = load_config(ExperimentConfig, Path(__file__).parents[1] / "configs" / "seg_tiny.yaml", overrides)
    get_task("seg").check_config(cfg)
    return cfg


def test_exact_resume_through_the_trainer(tmp_path):
    photos = write_photos(tmp_path / "photos")
    assert train(run_cfg(tmp_path / "straight", photos, 4)) == 0
    assert train(run_cfg(tmp_path / "resumed", photos, 2)) == 0
    assert train(run_cfg(tmp_path / "resumed", photos, 4, resume="latest")) == 0
    assert_same_state(final_state(tmp_path / "straight"), final_state(tmp_path / "resumed"))
