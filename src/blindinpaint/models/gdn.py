"""GDN: mask-given inpainting with a pixel-wise dense artifact detector.

Seed paper 003 ("Pixel-wise Dense Detector for Image Inpainting", Sec. 3.3)
and SPEC.md section 5.  Everything here works on images in **[0, 1]**; the
mask convention is the public one: ``hole`` = 1 where content is missing.

* :class:`GDNGenerator` - EdgeConnect-style encoder / 8 residual blocks /
  decoder; input = concat(image with holes filled with 1, hole), output in
  [0, 1] via ``(tanh + 1) / 2``.
* :class:`DenseDetector` - seven-layer fully convolutional net (all kernels
  4x4) that maps an image to per-pixel two-class logits; channel 1 is
  "artifact" (the paper's valuation V, Sec. 3.3.2).
* :class:`GDN` - holds both; :meth:`GDN.inpaint` copies the known pixels back
  so they are bit-identical to the input.

Both networks down-sample twice, so inputs are padded to a multiple of 4
(reflect) and cropped back: any H x W works.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn

from ..errors import ConfigError
from ..padding import crop_back, pad_to_multiple

#: Both GDN networks down-sample by 2 twice.
SIZE_MULTIPLE = 4
#: The residual blocks reflect-pad by 2 at 1/4 resolution, which needs at least 3 x 3 there.
MIN_SIZE = 16


def _pad(x: torch.Tensor, min_size: int = 0) -> tuple[torch.Tensor, tuple[int, int]]:
    """Reflect-pad B x C x H x W bottom/right to a multiple of 4 (sides below ``min_size``: up to it)."""
    small = min(x.shape[-2:]) < min_size
    return pad_to_multiple(x, min_size if small else SIZE_MULTIPLE, mode="reflect")


@dataclass
class GDNConfig:
    """Sizes of the GDN generator and detector (defaults = paper size, 10.78M + 2.27M params).

    ``dilation``: the residual blocks' second 3x3 conv uses dilation 1 in the
    authors' code ("code", default) and dilation 2 in the paper's text
    ("paper", Sec. 3.3.1); SPEC.md section 0.
    """

    base_channels: int = 64          # generator width after the 7x7 stem; x2, x4 after the down-samplings
    res_blocks: int = 8              # residual blocks at 4 * base_channels
    dilation: Literal["code", "paper"] = "code"
    norm_affine: bool = True         # InstanceNorm scale/shift (TF instance_norm default; gives 10.78M)
    detector_channels: int = 32      # detector widths: c, 2c, 4c, 8c, 8c, then 4c, 2 (transposed)
    leaky_slope: float = 0.2         # detector LeakyReLU slope (Sec. 3.3.2)

    def validate(self) -> None:
        for name in ("base_channels", "res_blocks", "detector_channels"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model.{name} must be >= 1, got {getattr(self, name)}")
        if self.dilation not in ("code", "paper"):
            raise ConfigError(f"model.dilation must be 'code' or 'paper', got {self.dilation!r}")


def _norm_relu(channels: int, affine: bool) -> list[nn.Module]:
    return [nn.InstanceNorm2d(channels, affine=affine), nn.ReLU(inplace=True)]


class GDNResidualBlock(nn.Module):
    """Reflect-pad 3x3 conv (dilation 2) + IN + ReLU, reflect-pad 3x3 conv + IN, plus skip.

    No activation after the addition (EdgeConnect / GDN code).  ``second_dilation``
    is 1 in the authors' code, 2 in the paper (Sec. 3.3.1).
    """

    def __init__(self, channels: int, second_dilation: int = 1, affine: bool = True):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(2),
            nn.Conv2d(channels, channels, 3, dilation=2, bias=False),
            *_norm_relu(channels, affine),
            nn.ReflectionPad2d(second_dilation),
            nn.Conv2d(channels, channels, 3, dilation=second_dilation, bias=False),
            nn.InstanceNorm2d(channels, affine=affine),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class GDNGenerator(nn.Module):
    """Inpainting generator G(I, M) of GDN Sec. 3.3.1 / SPEC.md section 5.

    forward(image01, hole):
        image01: B x 3 x H x W in [0, 1] (hole pixels may hold anything)
        hole:    B x 1 x H x W, 1 = hole (to fill), 0 = known
        returns  B x 3 x H x W in [0, 1], the *raw* output (known pixels not copied back).
    Any H x W: padded (reflect) to a multiple of 4, at least 16 x 16, and cropped back.
    """

    def __init__(self, cfg: GDNConfig | None = None):
        super().__init__()
        cfg = cfg or GDNConfig()
        c, aff = cfg.base_channels, cfg.norm_affine
        second = 1 if cfg.dilation == "code" else 2
        self.encoder = nn.Sequential(
            nn.ReflectionPad2d(3),
            nn.Conv2d(4, c, 7, bias=False), *_norm_relu(c, aff),
            nn.Conv2d(c, 2 * c, 4, stride=2, padding=1, bias=False), *_norm_relu(2 * c, aff),
            nn.Conv2d(2 * c, 4 * c, 4, stride=2, padding=1, bias=False), *_norm_relu(4 * c, aff),
        )
        self.blocks = nn.Sequential(*[GDNResidualBlock(4 * c, second, aff) for _ in range(cfg.res_blocks)])
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(4 * c, 2 * c, 4, stride=2, padding=1, bias=False), *_norm_relu(2 * c, aff),
            nn.ConvTranspose2d(2 * c, c, 4, stride=2, padding=1, bias=False), *_norm_relu(c, aff),
            nn.ReflectionPad2d(3),
            nn.Conv2d(c, 3, 7, bias=False),  # the last conv: no norm, no ReLU (Sec. 3.3.1)
        )

    @staticmethod
    def prepare_input(image01: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        """concat(image with holes filled with 1 (white), hole) -> B x 4 x H x W (SPEC section 5)."""
        filled = image01 * (1 - hole) + hole
        return torch.cat([filled, hole], dim=1)

    def forward(self, image01: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        x, size = _pad(self.prepare_input(image01, hole), MIN_SIZE)
        y = self.decoder(self.blocks(self.encoder(x)))
        return crop_back((torch.tanh(y) + 1) / 2, size)


class DenseDetector(nn.Module):
    """Pixel-wise artifact detector Det of GDN Sec. 3.3.2 / SPEC.md section 5.

    Seven layers, all 4x4 kernels with bias, no normalisation: conv c s1, 2c s1,
    4c s2, 8c s2, 8c s1 (LeakyReLU 0.2 after each of these five), transposed
    conv 4c s2 (linear), transposed conv 2 s2 (logits).  Stride-1 4x4 convs use
    TF "SAME" padding (1 before, 2 after) so the output matches the input size.

    forward(image01): B x 3 x H x W in [0, 1] (the raw generator output, or any
        image to inspect) -> logits B x 2 x H x W (channel 1 = artifact / hole).
    artifact_prob(image01) -> V = softmax(logits)[:, 1:2], B x 1 x H x W in [0, 1].
    Any H x W (reflect pad to a multiple of 4, crop back).
    """

    def __init__(self, cfg: GDNConfig | None = None):
        super().__init__()
        cfg = cfg or GDNConfig()
        c, slope = cfg.detector_channels, cfg.leaky_slope
        widths = [3, c, 2 * c, 4 * c, 8 * c, 8 * c]
        strides = [1, 1, 2, 2, 1]
        layers: list[nn.Module] = []
        for c_in, c_out, s in zip(widths[:-1], widths[1:], strides):
            # TF "SAME": stride 2 pads 1/1, stride 1 pads 1 before and 2 after (left/right, top/bottom)
            layers += [nn.ZeroPad2d(1 if s == 2 else (1, 2, 1, 2)),
                       nn.Conv2d(c_in, c_out, 4, stride=s), nn.LeakyReLU(slope, inplace=True)]
        layers += [
            nn.ConvTranspose2d(8 * c, 4 * c, 4, stride=2, padding=1),  # linear (SPEC section 5)
            nn.ConvTranspose2d(4 * c, 2, 4, stride=2, padding=1),      # two-class logits
        ]
        self.net = nn.Sequential(*layers)

    def forward(self, image01: torch.Tensor) -> torch.Tensor:
        x, size = _pad(image01)
        return crop_back(self.net(x), size)

    @staticmethod
    def probability(logits: torch.Tensor) -> torch.Tensor:
        """Logits B x 2 x H x W -> V = P(artifact) B x 1 x H x W in [0, 1]."""
        return torch.softmax(logits, dim=1)[:, 1:2]

    def artifact_prob(self, image01: torch.Tensor) -> torch.Tensor:
        """V, the per-pixel probability that a pixel is an artifact: B x 1 x H x W in [0, 1]."""
        return self.probability(self(image01))


@dataclass
class GDNOutput:
    """One GDN pass; all B x C x H x W at the input size, images in [0, 1].

    raw:       generator output (3 channels), known pixels *not* copied back
    inpainted: ``raw`` inside the hole, the input image outside (bit-identical)
    artifact:  detector's V on ``raw`` (1 channel), P(pixel is an artifact)
    """

    raw: torch.Tensor
    inpainted: torch.Tensor
    artifact: torch.Tensor


class GDN(nn.Module):
    """Generator + dense detector.  Images in [0, 1], ``hole`` = 1 where to fill."""

    def __init__(self, cfg: GDNConfig | None = None):
        super().__init__()
        self.cfg = cfg or GDNConfig()
        self.generator = GDNGenerator(self.cfg)
        self.detector = DenseDetector(self.cfg)

    @staticmethod
    def composite(image01: torch.Tensor, raw: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        """``raw`` where ``hole`` > 0.5, else ``image01`` bit for bit.  Shapes broadcast over channels."""
        return torch.where(hole > 0.5, raw, image01)

    def inpaint(self, image01: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        """Fill the holes of ``image01`` (B x 3 x H x W, [0, 1]); ``hole`` B x 1 x H x W, 1 = fill.

        The mask is binarised at 0.5; pixels outside the hole are returned unchanged.
        """
        hole = (hole > 0.5).to(image01.dtype)
        return self.composite(image01, self.generator(image01, hole), hole)

    def forward(self, image01: torch.Tensor, hole: torch.Tensor) -> GDNOutput:
        """Generator, composite and the detector's V on the raw output (SPEC section 5)."""
        hole = (hole > 0.5).to(image01.dtype)
        raw = self.generator(image01, hole)
        return GDNOutput(raw=raw, inpainted=self.composite(image01, raw, hole),
                         artifact=self.detector.artifact_prob(raw))
