"""HCL restoration network (Feng et al., ICCV 2023, main Sec. 3, supp. Sec. 2 / Table 1, SPEC section 2).

    image [-1, 1] -> stem (5x5 conv + GELU, optional stride-2 conv stages)
                  -> encoder: L transformer stages D*2^i (blind attention), stride-2 convs between
                  -> detector (models/contrast.py) on the coarsest ``contrast.stages`` scales
                  -> bottleneck (transformer stage at the coarsest scale)
                  -> decoder coarse -> fine: concat(features, encoder skip), mask-guided blocks fed
                     the hole mask of their scale, partial conv; nearest x2 + conv between stages
                  -> 1x1 conv + tanh = ``rec``
                  -> gated Conv-U-Net refiner on concat(rec.detach(), hole) -> ``refined``
    ``PatchDiscriminator`` (spectral norm) is a separate module, built by the registry.

Mask convention: every mask in this file is float {0, 1} with 1 = hole (corrupted) except the
ones named ``valid`` (1 = uncorrupted) and ``real`` (1 = real pixel, 0 = padding).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError
from ..padding import crop_back, pad_to_multiple, valid_region_mask
from .contrast import ContrastConfig, Detection, FixedCentres, HierarchicalDetector
from .layers import GatedConv2d, PartialConv2d, TransformerBlock, sn_conv2d


@dataclass
class HCLConfig:
    """Architecture of the HCL network; defaults = the D = 32 FFHQ model (supp. Table 1, SPEC s.2).

    Lists run over the L transformer scales: ``encoder_*`` fine -> coarse, ``decoder_*`` coarse -> fine.
    ``decoder_heads`` None = the encoder heads reversed (Table 1: 4, 2, 1).
    ``mask_bias``: where gamma * (M - 1) enters the logits, ``after_scale`` (authors' code) or
    ``inside_scale`` (main Eq. 8 as printed); SPEC section 0.
    ``refiner_width`` 0 builds no refiner.
    """

    dim: int = 32
    conv_stages: int = 0
    encoder_depths: list[int] = field(default_factory=lambda: [6, 4, 2])
    encoder_heads: list[int] = field(default_factory=lambda: [1, 2, 4])
    bottleneck_depth: int = 2
    bottleneck_heads: int = 4
    decoder_depths: list[int] = field(default_factory=lambda: [2, 2, 2])
    decoder_heads: Optional[list[int]] = None
    window: int = 8
    mlp_ratio: float = 2.0
    gamma: float = 100.0
    mask_bias: Literal["after_scale", "inside_scale"] = "after_scale"
    refiner_width: int = 64
    refiner_levels: int = 5
    refiner_max_channels: int = 512
    refiner_mid_blocks: int = 2
    disc_channels: list[int] = field(default_factory=lambda: [64, 128, 128, 256, 512])
    contrast: ContrastConfig = field(default_factory=ContrastConfig)

    @property
    def scales(self) -> int:
        return len(self.encoder_depths)

    def stage_dims(self) -> list[int]:
        """Encoder channels per scale, fine -> coarse: D * 2^i."""
        return [self.dim * 2 ** i for i in range(self.scales)]

    def dec_heads(self) -> list[int]:
        return list(self.decoder_heads) if self.decoder_heads is not None else list(reversed(self.encoder_heads))

    def multiple(self) -> int:
        """Input sides are padded to a multiple of this (windows at the coarsest scale, refiner levels)."""
        transformer = self.window * 2 ** (self.conv_stages + self.scales - 1)
        refiner = 2 ** self.refiner_levels if self.refiner_width > 0 else 1
        return transformer * refiner // math.gcd(transformer, refiner)

    def validate(self) -> None:
        if self.dim < 1 or self.conv_stages < 0 or self.window < 2:
            raise ConfigError("model.dim must be >= 1, model.conv_stages >= 0, model.window >= 2")
        n = self.scales
        if n < 1:
            raise ConfigError("model.encoder_depths needs at least one stage")
        if len(self.encoder_heads) != n or len(self.decoder_depths) != n:
            raise ConfigError(f"model.encoder_heads and model.decoder_depths need {n} entries "
                              f"(one per encoder stage), got {len(self.encoder_heads)} and "
                              f"{len(self.decoder_depths)}")
        if self.decoder_heads is not None and len(self.decoder_heads) != n:
            raise ConfigError(f"model.decoder_heads needs {n} entries, got {len(self.decoder_heads)}")
        dims = self.stage_dims()
        for d, h in zip(dims, self.encoder_heads):
            if d % h:
                raise ConfigError(f"encoder width {d} is not divisible by {h} heads")
        for d, h in zip(reversed(dims), self.dec_heads()):
            if (2 * d) % h:
                raise ConfigError(f"decoder width {2 * d} is not divisible by {h} heads")
        if dims[-1] % self.bottleneck_heads:
            raise ConfigError(f"bottleneck width {dims[-1]} is not divisible by {self.bottleneck_heads} heads")
        if self.contrast.stages > n:
            raise ConfigError(f"contrast.stages = {self.contrast.stages} needs at least that many encoder "
                              f"stages, model.encoder_depths has {n}")
        if self.mask_bias not in ("after_scale", "inside_scale"):
            raise ConfigError(f"model.mask_bias must be after_scale or inside_scale, got {self.mask_bias!r}")
        if self.refiner_width < 0 or (self.refiner_width and self.refiner_levels < 1):
            raise ConfigError("model.refiner_width must be >= 0 and model.refiner_levels >= 1")
        if len(self.disc_channels) < 1:
            raise ConfigError("model.disc_channels needs at least one entry")
        self.contrast.validate()


@dataclass
class HCLOutput:
    """Result of :meth:`HCLNet.forward`; images B x 3 x H x W in [-1, 1] at the input size.

    detection:      the detector's :class:`Detection` (on padded per-scale maps, coarse -> fine)
    hole:           B x 1 x H x W float {0,1}, 1 = hole: the mask the decoder used at full
                    resolution (``decoder_hole`` if given, else the finest detected mask)
    prob_hole:      B x 1 x H x W soft P(hole) of the finest detected scale, no gradient
    rec:            transformer decoder output (tanh)
    refined:        refiner output, or None (``refine=False`` or no refiner)
    decoder_masks:  hole masks fed to the decoder stages, coarse -> fine, B x 1 x h_s x w_s
                    (cropped to the real part of each scale)
    """

    detection: Detection
    hole: Tensor
    prob_hole: Tensor
    rec: Tensor
    refined: Optional[Tensor]
    decoder_masks: list[Tensor]


# ----------------------------------------------------------------------------- stages
def _to_tokens(x: Tensor) -> Tensor:
    return x.permute(0, 2, 3, 1)  # B x C x H x W -> B x H x W x C (a view)


def _to_maps(t: Tensor) -> Tensor:
    return t.permute(0, 3, 1, 2)


class TransformerStage(nn.Module):
    """N transformer blocks (shift on odd blocks), then a 3x3 conv + GELU, residual around the
    whole stage (MAT-style, SPEC s.2).  ``partial=True`` (decoder) ends with a partial conv and
    makes the blocks mask-guided (main Eq. 8-9); the encoder and bottleneck are blind."""

    def __init__(self, dim: int, depth: int, heads: int, window: int, mlp_ratio: float, gamma: float,
                 mask_bias: str, partial: bool = False) -> None:
        super().__init__()
        self.partial = partial
        self.blocks = nn.ModuleList([
            TransformerBlock(dim, heads, window, shift=bool(i % 2), mlp_ratio=mlp_ratio, gamma=gamma,
                             mask_bias=mask_bias) for i in range(depth)])
        self.conv = PartialConv2d(dim, dim, 3) if partial else nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, x: Tensor, real: Optional[Tensor] = None, valid: Optional[Tensor] = None) -> Tensor:
        """x: B x C x H x W; real: B x 1 x H x W or None (no padding); valid: B x 1 x H x W
        (1 = valid content) for a mask-guided stage.  Returns B x C x H x W."""
        t = _to_tokens(x).contiguous()
        real_t = None if real is None else real[:, 0]
        valid_t = None if valid is None else valid[:, 0]
        for block in self.blocks:
            t, valid_t = block(t, valid_t, real_t)
        y = _to_maps(t)
        if self.partial:
            if valid_t is None:
                valid_t = x.new_ones(x.shape[0], *x.shape[2:])
            pvalid = valid_t.unsqueeze(1) if real is None else valid_t.unsqueeze(1) * real
            y, _ = self.conv(y, pvalid)
        else:
            y = self.conv(y)
        if torch.is_grad_enabled():
            return x + F.gelu(y)
        return torch.ops.aten.gelu_(y).add_(x)  # inference: in place in the conv's output buffer


class HCLEncoder(nn.Module):
    """Transformer stages at D * 2^i (fine -> coarse), stride-2 3x3 conv + GELU between stages."""

    def __init__(self, cfg: HCLConfig) -> None:
        super().__init__()
        dims = cfg.stage_dims()
        self.stages = nn.ModuleList([
            TransformerStage(d, depth, h, cfg.window, cfg.mlp_ratio, cfg.gamma, cfg.mask_bias)
            for d, depth, h in zip(dims, cfg.encoder_depths, cfg.encoder_heads)])
        self.downs = nn.ModuleList([
            nn.Sequential(nn.Conv2d(dims[i], dims[i + 1], 3, stride=2, padding=1), nn.GELU())
            for i in range(len(dims) - 1)])

    def forward(self, x: Tensor, real: list[Optional[Tensor]]) -> list[Tensor]:
        """x: B x D x H x W; real[i] per scale (fine -> coarse). Returns features fine -> coarse."""
        feats = []
        for i, stage in enumerate(self.stages):
            if i:
                x = self.downs[i - 1](x)
            x = stage(x, real[i])
            feats.append(x)
        return feats


class HCLDecoder(nn.Module):
    """Coarse -> fine: stage input concat(features, encoder skip) = 2x channels, mask-guided blocks,
    partial conv; nearest x2 + 3x3 conv + GELU between stages; the conv stages of the stem are
    mirrored by nearest x2 + 3x3 conv + GELU; output 1x1 conv + tanh (``rec``)."""

    def __init__(self, cfg: HCLConfig) -> None:
        super().__init__()
        dims = list(reversed(cfg.stage_dims()))  # coarse -> fine
        self.stages = nn.ModuleList([
            TransformerStage(2 * d, depth, h, cfg.window, cfg.mlp_ratio, cfg.gamma, cfg.mask_bias, partial=True)
            for d, depth, h in zip(dims, cfg.decoder_depths, cfg.dec_heads())])
        self.ups = nn.ModuleList([
            nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                          nn.Conv2d(2 * dims[i], dims[i + 1], 3, padding=1), nn.GELU())
            for i in range(len(dims) - 1)])
        out_ch = 2 * dims[-1]
        self.conv_ups = nn.ModuleList([
            nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                          nn.Conv2d(out_ch, out_ch, 3, padding=1), nn.GELU())
            for _ in range(cfg.conv_stages)])
        self.out = nn.Conv2d(out_ch, 3, 1)

    def forward(self, x: Tensor, skips: list[Tensor], holes: list[Tensor],
                real: list[Optional[Tensor]]) -> Tensor:
        """x: bottleneck output; skips, holes (1 = hole), real: coarse -> fine per scale."""
        for i, stage in enumerate(self.stages):
            if i:
                x = self.ups[i - 1](x)
            x = stage(torch.cat([x, skips[i]], dim=1), real[i], 1.0 - holes[i])
        for up in self.conv_ups:
            x = up(x)
        return torch.tanh(self.out(x))


# ----------------------------------------------------------------------------- refiner
class GatedResBlock(nn.Module):
    """Gated 3x3 conv (stride s) -> GELU -> gated 1x1 conv, plus a shortcut (gated 1x1 conv when
    channels change, 2x2 average pooling when only the size halves); GELU after the sum."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = GatedConv2d(in_ch, out_ch, 3, stride)
        self.conv2 = GatedConv2d(out_ch, out_ch, 1)
        self.shortcut = GatedConv2d(in_ch, out_ch, 1, stride) if in_ch != out_ch else None
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv2(F.gelu(self.conv1(x)))
        if self.shortcut is not None:
            s = self.shortcut(x)
        elif self.stride > 1:
            s = F.avg_pool2d(x, self.stride)
        else:
            s = x
        return F.gelu(h + s)


class GatedUNetRefiner(nn.Module):
    """Conv-U-Net refiner of supp. Sec. 2 (all convs gated, no normalisation, GELU).

    Input concat(rec detached, hole) = 4 channels; channels w*[1,2,4,8,8,8...] (capped at
    ``max_channels``) over ``levels`` stride-2 residual blocks, ``mid_blocks`` residual blocks at the
    bottom, then per level bilinear x2 + gated 3x3 conv, concat skip, residual block; 1x1 conv +
    tanh.  At w = 64: 61,565,251 parameters (SPEC's count of the authors' net: 61,564,995).
    """

    def __init__(self, width: int = 64, levels: int = 5, max_channels: int = 512, mid_blocks: int = 2) -> None:
        super().__init__()
        chans = [min(width * min(2 ** i, 8), max_channels) for i in range(levels)]  # w*[1,2,4,8,8]
        self.stem = GatedConv2d(4, width, 7)
        self.downs = nn.ModuleList()
        prev = width
        for c in chans:
            self.downs.append(GatedResBlock(prev, c, stride=2))
            prev = c
        self.mid = nn.Sequential(*[GatedResBlock(prev, prev) for _ in range(mid_blocks)])
        skip_chans = [width] + chans[:-1]  # stem output, then every level but the bottom
        self.up_convs = nn.ModuleList()
        self.up_blocks = nn.ModuleList()
        for s in reversed(skip_chans):
            self.up_convs.append(GatedConv2d(prev, s, 3))
            self.up_blocks.append(GatedResBlock(2 * s, s))
            prev = s
        self.out = nn.Conv2d(width, 3, 1)

    def forward(self, rec: Tensor, hole: Tensor) -> Tensor:
        """rec: B x 3 x H x W in [-1, 1] (H, W multiples of 2^levels); hole: B x 1 x H x W, 1 = hole.
        Returns B x 3 x H x W in [-1, 1]."""
        # Plain NCHW layout: oneDNN runs these wide convolutions faster than channels_last on CPU.
        x = F.gelu(self.stem(torch.cat([rec, hole], dim=1).contiguous()))
        skips = [x]
        for down in self.downs:
            x = down(x)
            skips.append(x)
        skips.pop()  # the bottom level has no skip
        x = self.mid(x)
        for up_conv, block in zip(self.up_convs, self.up_blocks):
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            x = block(torch.cat([F.gelu(up_conv(x)), skips.pop()], dim=1))
        return torch.tanh(self.out(x))


class PatchDiscriminator(nn.Module):
    """5 x (5x5 conv stride 2, spectral norm, LeakyReLU 0.2), channels 64,128,128,256,512
    (SPEC s.2); unconditional, sees ``refined`` only.  Critic value = mean of the output map."""

    def __init__(self, channels: list[int] | tuple[int, ...] = (64, 128, 128, 256, 512), in_ch: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = in_ch
        for c in channels:
            layers += [sn_conv2d(prev, c, 5, stride=2), nn.LeakyReLU(0.2)]
            prev = c
        self.net = nn.Sequential(*layers)

    def forward(self, image: Tensor) -> Tensor:
        """image: B x 3 x H x W in [-1, 1]. Returns the critic value per image, shape B."""
        return self.net(image).mean(dim=(1, 2, 3))


# --------------------------------------------------------------------------------- network
def _init_transformer_weights(module: nn.Module) -> None:
    # Swin/MAT initialisation for the token layers; convolutions keep PyTorch defaults.
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class HCLNet(nn.Module):
    """Blind restoration: detection (hierarchical contrastive) + mask-guided transformer + refiner."""

    def __init__(self, cfg: HCLConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        d = cfg.dim
        stem: list[nn.Module] = [nn.Conv2d(3, d, 5, padding=2), nn.GELU()]
        for _ in range(cfg.conv_stages):  # authors: one at 512 px, none at 256 px
            stem += [nn.Conv2d(d, d, 3, stride=2, padding=1), nn.GELU()]
        self.stem = nn.Sequential(*stem)
        self.encoder = HCLEncoder(cfg)
        dims = cfg.stage_dims()
        n_det = cfg.contrast.stages
        self.detector = HierarchicalDetector(list(reversed(dims))[:n_det], cfg.contrast)
        self.bottleneck = TransformerStage(dims[-1], cfg.bottleneck_depth, cfg.bottleneck_heads, cfg.window,
                                           cfg.mlp_ratio, cfg.gamma, cfg.mask_bias)
        self.decoder = HCLDecoder(cfg)
        self.refiner = (GatedUNetRefiner(cfg.refiner_width, cfg.refiner_levels, cfg.refiner_max_channels,
                                         cfg.refiner_mid_blocks) if cfg.refiner_width > 0 else None)
        for part in (self.encoder, self.bottleneck, self.decoder):
            part.apply(_init_transformer_weights)

    # The scale of transformer stage i (fine -> coarse) relative to the input.
    def _factor(self, i: int) -> int:
        return 2 ** (self.cfg.conv_stages + i)

    def _encode(self, image: Tensor) -> tuple[Tensor, tuple[int, int], list[Tensor], list[Optional[Tensor]],
                                              list[Tensor]]:
        """Pad (reflect) to ``cfg.multiple()``, run stem + encoder.  Returns (padded image, original
        (H, W), real-pixel maps per scale fine -> coarse, the same or None when nothing was padded
        (for the attention), encoder features fine -> coarse)."""
        x, size = pad_to_multiple(image, self.cfg.multiple(), mode="reflect")
        hp, wp = x.shape[-2:]
        padded = (hp, wp) != tuple(size)
        real_full = valid_region_mask(size, (hp, wp), image.shape[0], x.device, x.dtype)
        factors = [self._factor(i) for i in range(self.cfg.scales)]
        real_px = [F.max_pool2d(real_full, f) if f > 1 else real_full for f in factors]
        real_attn = [r if padded else None for r in real_px]
        # channels_last: convolutions and the token view B x H x W x C share one layout (no copies).
        feats = self.encoder(self.stem(x.contiguous(memory_format=torch.channels_last)), real_attn)
        return x, size, real_px, real_attn, feats

    def forward(self, image: Tensor, gt_hole: Optional[Tensor] = None, decoder_hole: Optional[Tensor] = None,
                refine: bool = True, centres: Optional[FixedCentres] = None) -> HCLOutput:
        """Args:
            image: B x 3 x H x W in [-1, 1], any H, W (reflect-padded to ``cfg.multiple()``, cropped back).
            gt_hole: B x 1 x H x W {0,1} true hole mask (training only: S1 polarity in the detector).
            decoder_hole: B x 1 x H x W {0,1} hole mask fed to the decoder instead of the detected one
                (training phase 1, or a user-given mask); max-pooled per scale, so a cell with any
                hole pixel is a hole.
            refine: run the refiner (if the config has one).
            centres: cluster centres fitted on the whole image, used instead of K-means on this
                input (a tile of that image); see :meth:`detect` and ``contrast.FixedCentres``.
        """
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"expected a B x 3 x H x W image, got shape {tuple(image.shape)}")
        b = image.shape[0]
        for name, m in (("gt_hole", gt_hole), ("decoder_hole", decoder_hole)):
            if m is not None and (m.ndim != 4 or m.shape[1] != 1 or m.shape[0] != b
                                  or m.shape[-2:] != image.shape[-2:]):
                raise ValueError(f"{name} must be B x 1 x H x W matching the image {tuple(image.shape)}, "
                                 f"got {tuple(m.shape)}")
        x, size, real_px, real_attn, feats = self._encode(image)
        hp, wp = x.shape[-2:]
        n = self.cfg.scales
        factors = [self._factor(i) for i in range(n)]  # fine -> coarse

        n_det = self.cfg.contrast.stages
        gt_pad = None if gt_hole is None else pad_to_multiple(gt_hole.to(x.dtype), self.cfg.multiple(),
                                                              "constant")[0]
        detection = self.detector(feats[::-1][:n_det], real_px[::-1][:n_det], gt_pad, centres=centres)

        coarse_factors = factors[::-1]
        if decoder_hole is not None:
            hole_pad = pad_to_multiple(decoder_hole.to(x.dtype), self.cfg.multiple(), "constant")[0]
            holes = [F.max_pool2d(hole_pad, f) if f > 1 else hole_pad for f in coarse_factors]
        else:
            holes = list(detection.hole)
            while len(holes) < n:  # finer decoder scales than detected ones: nearest upsampling
                holes.append(F.interpolate(holes[-1], scale_factor=2, mode="nearest"))
            holes = [h.to(x.dtype) for h in holes]
            hole_pad = F.interpolate(holes[-1], size=(hp, wp), mode="nearest") if factors[0] > 1 else holes[-1]

        y = self.bottleneck(feats[-1], real_attn[-1])
        rec_pad = self.decoder(y, feats[::-1], holes, real_attn[::-1])

        refined = None
        if refine and self.refiner is not None:
            # No gradient from the refiner into the restoration network (SPEC s.2).
            refined = crop_back(self.refiner(rec_pad.detach(), hole_pad), size)

        prob = detection.prob_hole[-1].to(x.dtype)
        prob = F.interpolate(prob, size=(hp, wp), mode="nearest") if prob.shape[-2:] != (hp, wp) else prob
        h, w = size
        decoder_masks = [m[..., :math.ceil(h / f), :math.ceil(w / f)] for m, f in zip(holes, coarse_factors)]
        return HCLOutput(detection=detection, hole=crop_back(hole_pad, size), prob_hole=crop_back(prob, size),
                         rec=crop_back(rec_pad, size), refined=refined, decoder_masks=decoder_masks)

    # ------------------------------------------------------------------ product hook (api.py)
    @torch.no_grad()
    def detect(self, image: Tensor, centres: Optional[FixedCentres] = None) -> tuple[Detection, Tensor, Tensor]:
        """Detection only (stem, encoder, detector; no decoder or refiner): the same detection as
        :meth:`forward` on the same input, for ``blindinpaint detect`` and for fitting the cluster
        centres of a whole (downscaled) image once before tiling it.

        image: B x 3 x H x W in [-1, 1]; centres: as in :meth:`forward`.
        Returns (detection, prob_hole B x 1 x H x W in [0, 1], hole B x 1 x H x W {0, 1}, 1 = hole),
        the finest detected scale upsampled (nearest) to the input size.
        """
        x, size, real_px, _, feats = self._encode(image)
        hp, wp = x.shape[-2:]
        n_det = self.cfg.contrast.stages
        detection = self.detector(feats[::-1][:n_det], real_px[::-1][:n_det], None, centres=centres)
        prob = F.interpolate(detection.prob_hole[-1].to(x.dtype), size=(hp, wp), mode="nearest")
        hole = F.interpolate(detection.hole[-1].to(x.dtype), size=(hp, wp), mode="nearest")
        return detection, crop_back(prob, size), crop_back(hole, size)


def _as_config(cfg: HCLConfig | dict) -> HCLConfig:
    # Builders also take the plain dict stored in exports (config.json), validated like YAML.
    if isinstance(cfg, HCLConfig):
        return cfg
    from ..config import from_dict

    return from_dict(HCLConfig, dict(cfg), prefix="model")


def build_hcl(cfg: HCLConfig | dict) -> HCLNet:
    """Registry builder: the restoration network (stem, encoder, detector, bottleneck, decoder, refiner)."""
    return HCLNet(_as_config(cfg))


def build_hcl_discriminator(cfg: HCLConfig | dict) -> PatchDiscriminator:
    """Registry builder: the spectral-norm patch discriminator trained against ``refined``."""
    return PatchDiscriminator(_as_config(cfg).disc_channels)
