"""Segmentation-baseline training: HCL's schedule and losses with BCE mask heads instead of
hierarchical contrastive detection (the equal-capacity control, SPEC.md section 6).

Everything but the detection term is :class:`~blindinpaint.train.hcl_task.HCLTask`'s: phases and
flags (``gt_masks``, ``train_refiner``), pixel L1 and perceptual terms on ``rec`` (and on
``refined`` with the critic in phase 2), optimisers ``G`` / ``R`` / ``D``, validation (the same
detection and restoration metrics) and image grids.  The contrastive loss (weight ``contrast``)
and the centre classifier's BCE are replaced by one term (weight ``mask``)::

    L_mask = sum_s mean over real positions of BCE(logit_s, hole fraction of the position's patch)

over the scales the mask heads sit on (HCL sums its contrastive loss over the same stages).  The
soft target is the ground-truth hole fraction of each position's patch at the padded input
resolution; the decoder reads ``prob_hole >= 0.5``.

Mask convention: ``hole`` = 1 for corrupted pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import to_dict
from ..losses import l1_loss
from ..models.contrast import pool_ground_truth
from ..models.hcl import HCLOutput
from ..models.segbaseline import SegBaselineConfig, SegBaselineNet, SegDetection
from .hcl_task import HCLTask, stage_hole_iou, to_model_range
from .task import ExportSpec


def mask_bce_loss(det: SegDetection, gt_pad: Tensor) -> tuple[Tensor, list[Tensor]]:
    """BCE of every mask head against the patch hole fraction, padding excluded.

    det: the heads' output (coarse -> fine); gt_pad: B x 1 x Hp x Wp {0, 1} hole mask at the padded
    network input resolution.  Returns (sum over scales, per-scale losses).
    """
    per_scale = []
    for logits, real in zip(det.logits, det.valid_px):
        frac, _, _ = pool_ground_truth(gt_pad, tuple(logits.shape[-2:]))
        bce = F.binary_cross_entropy_with_logits(logits, frac.to(logits.dtype), reduction="none")
        weight = real.to(bce.dtype)
        per_scale.append((bce * weight).sum() / weight.sum().clamp_min(1.0))
    return torch.stack(per_scale).sum(), per_scale


class SegTask(HCLTask):
    """HCLTask with :class:`SegBaselineNet` and the BCE mask loss (see the module docstring)."""

    ModelConfig = SegBaselineConfig
    # HCL's weights (supp. Sec. 3) with ``mask`` in the place of ``contrast`` (same default 0.1)
    LOSS_WEIGHTS = {"pixel": 0.1, "perc": 1.0, "mask": 0.1, "adv": 1.0}

    def build(self) -> None:
        super().build()  # perceptual losses and the critic exactly as HCL's (and an HCLNet, replaced here)
        self.net = SegBaselineNet(self.model_cfg).to(self.device)

    def generator_loss(self, batch: dict) -> tuple[Tensor, dict[str, float], HCLOutput]:
        """HCL's generator loss with the BCE mask term; returns (loss, logs, network output)."""
        out = self.forward(batch)
        target = to_model_range(batch["clean"])
        gt_pad = self.padded_hole(batch["hole"])
        mask, per_scale = mask_bce_loss(out.detection, gt_pad)
        terms = {"pixel_rec": l1_loss(out.rec, target), "mask": mask}
        loss = self.weight("pixel") * terms["pixel_rec"] + self.weight("mask") * mask
        loss = self.add_restoration_terms(out, target, loss, terms)
        logs = {k: float(v.detach()) for k, v in terms.items()}
        logs.update({f"mask_s{s + 1}": float(v.detach()) for s, v in enumerate(per_scale)})
        with torch.no_grad():
            for s, iou in enumerate(stage_hole_iou(out.detection, gt_pad)):
                logs[f"iou_s{s + 1}"] = float(iou.mean())
        logs["g_total"] = float(loss.detach())
        return loss, logs, out

    def export_spec(self) -> ExportSpec:
        return ExportSpec(model="seg", config=to_dict(self.model_cfg), modules={"": "net"})
