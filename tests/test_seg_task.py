"""Segmentation baseline: the HCL network with BCE mask heads (model contract and its Task)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from blindinpaint.config import load_config
from blindinpaint.models.hcl import HCLConfig, HCLNet, HCLOutput
from blindinpaint.models.registry import MODELS
from blindinpaint.models.segbaseline import SegBaselineConfig, SegBaselineNet, SegMaskHeads
from blindinpaint.train import ExperimentConfig

sys.path.insert(0, str(Path(__file__).parent))
from helpers import make_tiny_task, straight_and_resumed, tiny_batch, tiny_run_cfg  # noqa: E402

TINY_MODEL = {"dim": 8, "encoder_depths": [1, 1, 1], "encoder_heads": [1, 2, 4], "bottleneck_depth": 1,
              "decoder_depths": [1, 1, 1], "refiner_width": 0, "head_hidden": 16}
PHASE1 = {"name": "phase1", "start": 0, "loss_weights": {"adv": 0.0},
          "flags": {"gt_masks": True, "train_refiner": False}}

pytestmark = pytest.mark.usefixtures("one_thread")  # fixture in conftest.py


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
    return make_tiny_task({"task": "seg", "model": TINY_MODEL, "loss": {"perceptual": "none"}, "phases": [PHASE1],
                           "train": {"lr": 3e-3, "device": "cpu"}})


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


def run_cfg(out: Path, photos: Path, steps: int, resume: str = "") -> ExperimentConfig:
    overrides = ["data.patterns=[constant]", "loss.perceptual=none",
                 "phases=[{name: phase1, start: 0, loss_weights: {adv: 0.0}, "
                 "flags: {gt_masks: true, train_refiner: false}}]"]
    overrides += [f"model.{k}={v if not isinstance(v, list) else ','.join(map(str, v))}" for k, v in TINY_MODEL.items()]
    return tiny_run_cfg("seg", "seg_tiny", out, photos, steps, resume, overrides)


def test_exact_resume_through_the_trainer(tmp_path):
    straight_and_resumed(tmp_path, run_cfg)
