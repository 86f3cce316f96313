"""Segmentation baseline: the HCL network with a plain BCE mask head instead of contrastive detection.

The control for HCL's central claim (SPEC.md section 6, last item): same stem, blind transformer
encoder, bottleneck, mask-guided decoder and refiner as :class:`~blindinpaint.models.hcl.HCLNet`
(this class *is* an HCLNet, built from the same config), but the hierarchical contrastive detector
(projection heads, K-means, polarity classifier, quadtree refinement) is replaced by
:class:`SegMaskHeads`: on each encoder scale the contrastive detector would see (``contrast.stages``,
coarse -> fine), a 1x1 conv -> GELU -> 1x1 conv head predicts a P(hole) logit per position, trained
with BCE.  No contrastive learning, no clustering.  The predicted masks feed the decoder exactly as
the detected ones do in HCL, and the output is the same :class:`~blindinpaint.models.hcl.HCLOutput`
(``hole``, ``prob_hole``, ``rec``, ``refined``, ``decoder_masks``), so one evaluation path measures both.

Images in [-1, 1]; masks 1 = hole.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from .hcl import HCLConfig, HCLNet


@dataclass
class SegBaselineConfig(HCLConfig):
    """An :class:`HCLConfig` (use the HCL model's values unchanged) plus the mask heads' width.

    Of ``contrast`` only ``stages`` is used: which encoder scales get a mask head.
    """

    head_hidden: int = 128   # hidden width of each 1x1-conv mask head (HCL's projection heads: 128)

    def validate(self) -> None:
        super().validate()
        if self.head_hidden < 1:
            raise ConfigError(f"model.head_hidden must be >= 1, got {self.head_hidden}")


@dataclass
class SegDetection:
    """Mask-head output in the shape HCL's ``Detection`` has where evaluation reads it (coarse -> fine).

    logits:            B x 1 x H_s x W_s P(hole) logits, with gradient (the BCE loss uses these)
    prob_hole:         sigmoid(logits), no gradient
    hole:              B x 1 x H_s x W_s float {0, 1}: prob_hole >= 0.5 on real pixels (padding = 0)
    cluster_prob_hole: = prob_hole (no clustering, no "nothing corrupted" override)
    valid_px:          B x 1 x H_s x W_s bool, real image pixels (not padding)
    clean:             B bool, all False (this baseline has no image-level "clean" decision)
    """

    logits: list[Tensor]
    prob_hole: list[Tensor]
    hole: list[Tensor]
    cluster_prob_hole: list[Tensor]
    valid_px: list[Tensor]
    clean: Tensor


class SegMaskHeads(nn.Module):
    """One BCE mask head per encoder scale, drop-in for HCL's ``HierarchicalDetector``.

    stage_channels: encoder channels of the scales it sees, coarse -> fine.
    forward(feats, valid_px, gt_hole=None) -> :class:`SegDetection`; feats[i] B x C_i x H_i x W_i
    coarse -> fine, valid_px[i] B x 1 x H_i x W_i float (1 = real pixel).  ``gt_hole`` is accepted
    for interface compatibility and ignored: the heads never see the ground truth.  So is ``centres``
    (HCL's whole-image cluster centres for tiling): per-position heads need nothing shared across tiles.
    """

    def __init__(self, stage_channels: list[int], hidden: int = 128):
        super().__init__()
        self.heads = nn.ModuleList([
            nn.Sequential(nn.Conv2d(c, hidden, 1), nn.GELU(), nn.Conv2d(hidden, 1, 1)) for c in stage_channels])

    def forward(self, feats: list[Tensor], valid_px: list[Tensor], gt_hole: Optional[Tensor] = None,
                centres: Optional[object] = None) -> SegDetection:
        if len(feats) != len(self.heads):
            raise ValueError(f"expected {len(self.heads)} feature maps, got {len(feats)}")
        logits = [head(f).float() for head, f in zip(self.heads, feats)]
        prob = [torch.sigmoid(z).detach() for z in logits]
        real = [v > 0.5 for v in valid_px]
        hole = [((p >= 0.5) & r).to(p.dtype) for p, r in zip(prob, real)]
        clean = torch.zeros(feats[0].shape[0], dtype=torch.bool, device=feats[0].device)
        return SegDetection(logits=logits, prob_hole=prob, hole=hole, cluster_prob_hole=prob, valid_px=real,
                            clean=clean)


class SegBaselineNet(HCLNet):
    """HCLNet whose detector is :class:`SegMaskHeads`; ``forward`` is HCLNet's (same arguments, same
    :class:`~blindinpaint.models.hcl.HCLOutput`, ``detection`` a :class:`SegDetection`)."""

    def __init__(self, cfg: SegBaselineConfig):
        super().__init__(cfg)
        # HCLNet built the contrastive detector (so every other module is initialised exactly as in
        # an HCLNet of the same config and seed); the control replaces it with BCE heads on the same scales.
        dims = cfg.stage_dims()
        self.detector = SegMaskHeads(list(reversed(dims))[:cfg.contrast.stages], cfg.head_hidden)


def build_seg_baseline(cfg: SegBaselineConfig | dict) -> SegBaselineNet:
    """Registry builder; takes the config dataclass or its plain dict (exports store dicts)."""
    if not isinstance(cfg, SegBaselineConfig):
        from ..config import from_dict

        cfg = from_dict(SegBaselineConfig, dict(cfg), prefix="model")
    return SegBaselineNet(cfg)


__all__ = ["SegBaselineConfig", "SegDetection", "SegMaskHeads", "SegBaselineNet", "build_seg_baseline"]
