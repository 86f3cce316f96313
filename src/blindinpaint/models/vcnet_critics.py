"""VCNet's two WGAN-GP critics (training only; SPEC.md section 6).

VCNet trains its robust inpainting network against a *global* critic (one score per image) and a
*mask-weighted patch* critic (a map of patch scores averaged with the share of corrupted pixels
in each patch as weights, so the local critic judges the restored region).  Both are plain
strided conv stacks with LeakyReLU 0.2 and no normalisation (WGAN-GP forbids batch norm) and work
at any input size.

Images in [-1, 1]; masks B x 1 x H x W with 1 = hole.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _conv_stack(widths: list[int]) -> nn.Sequential:
    """5x5 stride-2 convs 3 -> widths[0] -> ... with LeakyReLU 0.2, then a 3x3 conv to one score per cell."""
    layers: list[nn.Module] = []
    prev = 3
    for w in widths:
        layers += [nn.Conv2d(prev, w, 5, stride=2, padding=2), nn.LeakyReLU(0.2)]
        prev = w
    layers.append(nn.Conv2d(prev, 1, 3, padding=1))
    return nn.Sequential(*layers)


class GlobalCritic(nn.Module):
    """Whole-image critic: widths c, 2c, 4c, 4c (each stride 2), score = mean of the last map.

    forward(image): B x 3 x H x W in [-1, 1] -> B scores (higher = more real).
    """

    def __init__(self, channels: int = 64):
        super().__init__()
        self.net = _conv_stack([channels, 2 * channels, 4 * channels, 4 * channels])

    def forward(self, image: Tensor) -> Tensor:
        return self.net(image).mean(dim=(1, 2, 3))


class MaskWeightedPatchCritic(nn.Module):
    """Patch critic whose per-patch scores are averaged with weights = the patch's hole fraction.

    Widths c, 2c, 4c (each stride 2): one score per 8 x 8 cell.
    forward(image, hole): image B x 3 x H x W in [-1, 1], hole B x 1 x H x W (1 = hole)
        -> B scores: sum(score * w) / sum(w), w = hole fraction of each cell (0 weight when the
        image has no hole pixel at all: the score is then 0).
    """

    def __init__(self, channels: int = 64):
        super().__init__()
        self.net = _conv_stack([channels, 2 * channels, 4 * channels])

    def forward(self, image: Tensor, hole: Tensor) -> Tensor:
        scores = self.net(image)
        weight = F.adaptive_avg_pool2d(hole.to(scores.dtype), scores.shape[-2:])
        return (scores * weight).sum(dim=(1, 2, 3)) / weight.sum(dim=(1, 2, 3)).clamp_min(1e-6)


class VCNetCritics(nn.Module):
    """Both critics in one module (one optimiser, one checkpoint entry)."""

    def __init__(self, channels: int = 64):
        super().__init__()
        self.global_critic = GlobalCritic(channels)
        self.patch_critic = MaskWeightedPatchCritic(channels)

    def forward(self, image: Tensor, hole: Tensor) -> tuple[Tensor, Tensor]:
        """(global scores B, mask-weighted patch scores B)."""
        return self.global_critic(image), self.patch_critic(image, hole)


__all__ = ["GlobalCritic", "MaskWeightedPatchCritic", "VCNetCritics"]
