"""VCNet baseline: blind inpainting = mask prediction + robust inpainting with PCN.

Wang et al., "VCNet: A Robust Approach to Blind Image Inpainting" (ECCV 2020),
sizes as in SPEC.md section 6 (the PyTorch re-implementation the HCL paper
compares against: 3.88M parameters, supp. Table 5).

* :class:`MaskPredictionNetwork` (MPN) - image -> P(hole) per pixel + "neck" features at 1/4.
* :class:`RobustInpaintingNetwork` (RIN) - image + soft hole mask + neck -> restoration; its
  residual blocks apply probabilistic context normalisation (:class:`PCN`).
* :class:`VCNet` - both; ``forward`` returns a :class:`VCNetOutput` with the same fields as
  HCL's output (``hole``, ``prob_hole``, ``rec``, ``refined``), so one evaluation measures both.

Images are in **[-1, 1]** (as inside HCL); masks use the public convention, 1 = hole.
Any H x W: padded (reflect) to a multiple of 4 and cropped back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError
from ..padding import crop_back, pad_to_multiple

#: Both networks down-sample by 2 twice.
SIZE_MULTIPLE = 4


@dataclass
class VCNetConfig:
    """VCNet sizes and options (defaults = the 3.88M-parameter paper model)."""

    mpn_channels: int = 64           # MPN widths: c, 2c in the encoder; 2c, c, c/2, c/4 in the decoder
    neck_channels: int = 128         # MPN neck (1/4 resolution), concatenated into the RIN
    rin_channels: int = 32           # RIN widths: c, 2c, 4c
    pcn_gate: Literal["se", "fixed"] = "se"  # b from a squeeze-excitation gate, or a constant
    pcn_fixed_gate: float = 0.5      # b when pcn_gate = "fixed"
    se_reduction: int = 16           # SE gate C -> C / r -> C
    pcn_eps: float = 1e-5            # added to the region variances and pixel counts
    detach_neck: bool = True         # RIN does not back-propagate into the MPN through the neck
    hole_threshold: float = 0.5      # prob_hole >= threshold -> binary hole

    def validate(self) -> None:
        for name in ("mpn_channels", "neck_channels", "rin_channels", "se_reduction"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model.{name} must be >= 1, got {getattr(self, name)}")
        if self.mpn_channels < 4:
            raise ConfigError(f"model.mpn_channels must be >= 4 (decoder ends at c/4), got {self.mpn_channels}")
        if self.pcn_gate not in ("se", "fixed"):
            raise ConfigError(f"model.pcn_gate must be 'se' or 'fixed', got {self.pcn_gate!r}")
        if not 0.0 <= self.pcn_fixed_gate <= 1.0:
            raise ConfigError(f"model.pcn_fixed_gate must be in [0, 1], got {self.pcn_fixed_gate}")
        if not 0.0 < self.hole_threshold < 1.0:
            raise ConfigError(f"model.hole_threshold must be in (0, 1), got {self.hole_threshold}")


# ------------------------------------------------------------------ PCN
def _region_stats(x: torch.Tensor, weight: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted per-sample, per-channel mean and std of x (B x C x H x W) under weight (B x 1 x H x W)."""
    total = weight.sum(dim=(2, 3), keepdim=True) + eps
    mean = (x * weight).sum(dim=(2, 3), keepdim=True) / total
    var = ((x - mean).square() * weight).sum(dim=(2, 3), keepdim=True) / total
    return mean, torch.sqrt(var + eps)


class PCN(nn.Module):
    """Probabilistic context normalisation (VCNet Sec. 3.2, SPEC.md section 6).

    With hole mask m (1 = hole, soft values allowed and used as-is):
        T(x)   = (x - mu_hole) / sd_hole * sd_valid + mu_valid   (per sample and channel)
        PCN(x) = [b * T(x) + (1 - b) * x] * m + x * (1 - m)
    b = sigmoid(SE(x)) per sample and channel (C -> C/r -> C), or a fixed constant.

    forward(x, hole): x B x C x H x W, hole B x 1 x H x W in [0, 1] -> B x C x H x W.
    """

    def __init__(self, channels: int, gate: str = "se", reduction: int = 16,
                 fixed_gate: float = 0.5, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.fixed_gate = fixed_gate
        self.se = None
        if gate == "se":
            hidden = max(1, channels // reduction)
            self.se = nn.Sequential(
                nn.AdaptiveAvgPool2d(1),
                nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True),
                nn.Conv2d(hidden, channels, 1), nn.Sigmoid(),
            )

    def transfer(self, x: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        """T(x): move the hole region's feature statistics onto the valid region's."""
        mu_hole, sd_hole = _region_stats(x, hole, self.eps)
        mu_valid, sd_valid = _region_stats(x, 1 - hole, self.eps)
        return (x - mu_hole) / sd_hole * sd_valid + mu_valid

    def forward(self, x: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        b = self.se(x) if self.se is not None else self.fixed_gate
        return (b * self.transfer(x, hole) + (1 - b) * x) * hole + x * (1 - hole)


# ------------------------------------------------------------------ residual blocks
class VCResBlock(nn.Module):
    """conv -> ELU -> conv [-> PCN], plus shortcut, ELU after the add (VCNet Sec. 3).

    Shortcut: identity when channels and resolution are kept, else a strided 1x1 conv.
    Both convs share kernel size and dilation ("same" zero padding); the first carries the stride.
    forward(x, hole=None): hole (B x 1 x h x w at the *output* resolution) is required iff ``pcn``.
    """

    def __init__(self, c_in: int, c_out: int, kernel: int = 3, stride: int = 1, dilation: int = 1,
                 pcn: PCN | None = None):
        super().__init__()
        pad = dilation * (kernel - 1) // 2
        self.conv1 = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=pad, dilation=dilation)
        self.conv2 = nn.Conv2d(c_out, c_out, kernel, padding=pad, dilation=dilation)
        self.shortcut = (nn.Identity() if c_in == c_out and stride == 1
                         else nn.Conv2d(c_in, c_out, 1, stride=stride))
        self.pcn = pcn

    def forward(self, x: torch.Tensor, hole: torch.Tensor | None = None) -> torch.Tensor:
        y = self.conv2(F.elu(self.conv1(x)))
        if self.pcn is not None:
            y = self.pcn(y, hole)
        return F.elu(y + self.shortcut(x))


def _up(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2.0, mode="nearest")


# ------------------------------------------------------------------ the two networks
class MaskPredictionNetwork(nn.Module):
    """MPN (SPEC.md section 6, about 1.38M params at c = 64, neck 128).

    forward(image): B x 3 x H x W in [-1, 1], H and W multiples of 4 ->
        (prob_hole B x 1 x H x W in [0, 1] with 1 = hole, neck B x neck x H/4 x W/4).
    """

    def __init__(self, cfg: VCNetConfig):
        super().__init__()
        c, neck = cfg.mpn_channels, cfg.neck_channels
        self.encoder = nn.Sequential(
            VCResBlock(3, c, kernel=5, stride=2),
            VCResBlock(c, 2 * c, stride=2),
            VCResBlock(2 * c, 2 * c, dilation=2),
            VCResBlock(2 * c, neck, dilation=4),
        )
        self.dec_quarter = VCResBlock(neck, 2 * c)
        self.dec_half = VCResBlock(2 * c, c)
        self.dec_full = VCResBlock(c, c // 2)
        self.head = nn.Sequential(
            nn.Conv2d(c // 2, c // 4, 3, padding=1), nn.ELU(inplace=True),
            nn.Conv2d(c // 4, 1, 3, padding=1), nn.Sigmoid(),
        )

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        neck = self.encoder(image)
        y = self.dec_half(_up(self.dec_quarter(neck)))
        y = self.dec_full(_up(y))
        return self.head(y), neck


class RobustInpaintingNetwork(nn.Module):
    """RIN with PCN residual blocks (SPEC.md section 6, about 2.50M params at c = 32).

    forward(image, hole, neck):
        image B x 3 x H x W in [-1, 1] (the corrupted input), H, W multiples of 4
        hole  B x 1 x H x W in [0, 1], 1 = hole (soft predicted or ground-truth mask)
        neck  B x neck x H/4 x W/4 (MPN features, concatenated in at 1/4 resolution)
        -> restoration B x 3 x H x W in [-1, 1] (tanh).
    """

    def __init__(self, cfg: VCNetConfig):
        super().__init__()
        c = cfg.rin_channels

        def block(c_in: int, c_out: int, **kw) -> VCResBlock:
            pcn = PCN(c_out, cfg.pcn_gate, cfg.se_reduction, cfg.pcn_fixed_gate, cfg.pcn_eps)
            return VCResBlock(c_in, c_out, pcn=pcn, **kw)

        self.full_in = nn.ModuleList([block(3, c, kernel=5)])
        self.half_in = nn.ModuleList([block(c, 2 * c, stride=2), block(2 * c, 2 * c)])
        self.quarter = nn.ModuleList(
            [block(2 * c, 4 * c, stride=2), block(4 * c, 4 * c)]
            + [block(4 * c, 4 * c, dilation=d) for d in (2, 2, 4, 4)]
            + [block(4 * c, 4 * c)]
        )
        self.half_out = nn.ModuleList([block(4 * c + cfg.neck_channels, 2 * c), block(2 * c, 2 * c)])
        self.full_out = nn.ModuleList([block(2 * c, c), block(c, c)])
        self.to_rgb = nn.Conv2d(c, 3, 3, padding=1)

    @staticmethod
    def _run(blocks: nn.ModuleList, x: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        for blk in blocks:
            x = blk(x, hole)
        return x

    def forward(self, image: torch.Tensor, hole: torch.Tensor, neck: torch.Tensor) -> torch.Tensor:
        # the hole mask at each resolution, computed once (nearest, as in the re-implementation)
        hole_half = F.interpolate(hole, size=(image.shape[-2] // 2, image.shape[-1] // 2), mode="nearest")
        hole_quarter = F.interpolate(hole, size=neck.shape[-2:], mode="nearest")
        x = self._run(self.full_in, image, hole)
        x = self._run(self.half_in, x, hole_half)
        x = self._run(self.quarter, x, hole_quarter)
        x = self._run(self.half_out, _up(torch.cat([x, neck], dim=1)), hole_half)
        x = self._run(self.full_out, _up(x), hole)
        return torch.tanh(self.to_rgb(x))


# ------------------------------------------------------------------ the full model
@dataclass
class VCNetOutput:
    """VCNet result at the input size; the fields HCL's output has, for one evaluation path.

    hole:      B x 1 x H x W float {0, 1}, 1 = predicted corrupted pixel (prob_hole >= threshold)
    prob_hole: B x 1 x H x W in [0, 1], the MPN's soft mask
    rec:       B x 3 x H x W in [-1, 1], the RIN's restoration (not composited)
    refined:   the same tensor as ``rec`` (VCNet has no separate refiner)
    """

    hole: torch.Tensor
    prob_hole: torch.Tensor
    rec: torch.Tensor
    refined: torch.Tensor


class VCNet(nn.Module):
    """MPN + RIN.  ``forward(image, given_hole=None) -> VCNetOutput``.

    image: B x 3 x H x W in [-1, 1], any H x W.
    given_hole: optional B x 1 x H x W (1 = hole) fed to the PCNs instead of the prediction:
        VCNet's first training phase uses the ground-truth mask here, the second the prediction.
    """

    def __init__(self, cfg: VCNetConfig | None = None):
        super().__init__()
        self.cfg = cfg or VCNetConfig()
        self.mpn = MaskPredictionNetwork(self.cfg)
        self.rin = RobustInpaintingNetwork(self.cfg)

    def forward(self, image: torch.Tensor, given_hole: torch.Tensor | None = None) -> VCNetOutput:
        x, size = pad_to_multiple(image, SIZE_MULTIPLE, mode="reflect")
        prob_hole, neck = self.mpn(x)
        if self.cfg.detach_neck:
            neck = neck.detach()
        if given_hole is None:
            pcn_hole = prob_hole  # the soft prediction, used as-is (SPEC section 6)
        else:
            pcn_hole = pad_to_multiple(given_hole.to(x.dtype), SIZE_MULTIPLE, mode="reflect")[0]
        rec = crop_back(self.rin(x, pcn_hole, neck), size)
        prob_hole = crop_back(prob_hole, size)
        hole = (prob_hole >= self.cfg.hole_threshold).to(prob_hole.dtype)
        return VCNetOutput(hole=hole, prob_hole=prob_hole, rec=rec, refined=rec)
