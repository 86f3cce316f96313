"""Hierarchical contrastive corruption detection (HCL main Sec. 3.2, SPEC sections 0 and 3).

Stages run coarse -> fine on the encoder's feature maps (the paper's S1 is the coarsest).  Each
stage projects its features to unit embeddings (Eq. 3, Eq. 6 with inter-stage consistency),
clusters them into two groups with batched spherical K-means (Eq. 4), turns cosine similarities
into a soft P(hole) (Eq. 5 as corrected in SPEC section 0), decides which cluster is the hole
(classifier at S1, centre matching at S2+), and marks the confident pixels as *decided*.  The next
finer stage re-clusters only the still-undecided pixels (quadtree refinement): their features are
gathered into a flat tensor, so the work really shrinks with the undecided fraction.

The circle-form contrastive loss of Eq. 2 with the query / representative sampling of SPEC
section 3 and the S1 classifier's BCE live here too (one concern: contrastive detection).

Mask convention: ``hole`` = 1 / True = corrupted pixel, ``valid`` = clean pixel.  ``valid_px``
marks real image pixels (1) versus padding (0), which is a different notion.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError
from .kmeans import cosine_to_centres, spherical_kmeans



@dataclass
class ContrastConfig:
    """Settings of the hierarchical contrastive detector (defaults = paper / authors' code).

    no_corruption: the "nothing is corrupted" rule (SPEC section 3, last paragraph); an image is
      declared clean when its ``clean_score`` exceeds ``clean_threshold``.
      ``centre_cosine`` (label-free): the score is the cosine similarity of the two S1 centres.
      K-means always splits in two; on a corrupted image the contrastive loss drives the two
      regions' embeddings apart (low or negative centre cosine), while the two halves of one
      homogeneous population stay close.
      ``head`` (an extension, not in the paper): the score is P(clean) of a small learnt
      :class:`CleanHead` on the S1 embeddings and the centre cosine, trained with the BCE of
      :func:`clean_loss` on batches that mix clean photos in (``data.clean_fraction``).
      ``off`` never declares an image clean (a model with a head keeps computing its score).
      Calibrate ``clean_threshold`` on clean validation photos (``blindinpaint calibrate``; the
      default is a placeholder until then).
    clean_head_width: hidden channels of the :class:`CleanHead` (``no_corruption: head``).
    clean_head_detach: feed the head detached S1 embeddings (its BCE then trains the head only);
      False = its gradient also reaches the projection heads and the encoder.
    confidence: ``code`` = P(assigned cluster) = softmax(cos / tau) (authors' code, SPEC section 0);
      ``paper`` = Eq. 5 exactly as printed, softmax(-cos / tau) at the assigned cluster, which for
      K = 2 equals 1 - the code confidence (the sign is a typo; kept for the ablation).  It ranks
      pixels for the decided / uncertain split; P(hole) outputs always use the code form.
    """

    stages: int = 3
    embed_dim: int = 64
    hidden_dim: int = 128
    tau: float = 0.1
    kmeans_iters: int = 3
    kmeans_restarts: int = 1
    seed: int = 0
    inter_stage: bool = True
    hierarchical: bool = True
    sample_selection: bool = True
    decided_fraction: float = 0.95
    erode: int = 1
    edge_radius: int = 2
    max_queries: int = 512
    max_representatives: int = 256
    confidence: Literal["code", "paper"] = "code"
    polarity_from_gt_in_training: bool = True
    no_corruption: Literal["centre_cosine", "head", "off"] = "centre_cosine"
    clean_threshold: float = 0.5
    clean_head_width: int = 32
    clean_head_detach: bool = False

    def validate(self) -> None:
        if not 1 <= self.stages <= 4:
            raise ConfigError(f"contrast.stages must be 1-4, got {self.stages}")
        for name in ("embed_dim", "hidden_dim", "kmeans_iters", "kmeans_restarts",
                     "max_queries", "max_representatives", "clean_head_width"):
            if getattr(self, name) < 1:
                raise ConfigError(f"contrast.{name} must be >= 1, got {getattr(self, name)}")
        if self.max_representatives < 4:
            raise ConfigError("contrast.max_representatives must be >= 4 (two classes x edge/interior)")
        if self.tau <= 0:
            raise ConfigError(f"contrast.tau must be > 0, got {self.tau}")
        if not 0.0 < self.decided_fraction <= 1.0:
            raise ConfigError(f"contrast.decided_fraction must be in (0, 1], got {self.decided_fraction}")
        if self.erode < 0 or self.edge_radius < 0:
            raise ConfigError("contrast.erode and contrast.edge_radius must be >= 0")
        if self.confidence not in ("code", "paper"):
            raise ConfigError(f"contrast.confidence must be 'code' or 'paper', got {self.confidence!r}")
        if self.no_corruption not in ("centre_cosine", "head", "off"):
            raise ConfigError("contrast.no_corruption must be 'centre_cosine', 'head' or 'off', "
                              f"got {self.no_corruption!r}")
        if not -1.0 <= self.clean_threshold <= 1.0:
            raise ConfigError("contrast.clean_threshold is a cosine or a probability, in [-1, 1]; "
                              f"got {self.clean_threshold}")


@dataclass
class Detection:
    """Output of :class:`HierarchicalDetector`; every list runs coarse -> fine (S1 first).

    hole:              B x 1 x H_s x W_s float {0, 1}, 1 = hole; all 0 for images judged clean
    prob_hole:         B x 1 x H_s x W_s soft P(hole) in [0, 1] (0 for clean images), no gradient
    embeddings:        B x E x H_s x W_s L2-normalised projections, with gradient
    decided:           B x 1 x H_s x W_s bool, decided at or before stage s (all True at the last)
    uncertain_in:      B x 1 x H_s x W_s bool, positions re-clustered at stage s (None at S1)
    centres:           B x 2 x E K-means centres (K-means order), no gradient
    refined_fraction:  per stage, fraction of real pixels (re-)clustered (1.0 at S1)
    classifier_logits: B x 2, logit that S1 centre k is the VALID one
    clean:             B bool, no-corruption decision (then all hole masks are 0)
    valid_centre:      per stage, B long index into ``centres[s]`` of the valid cluster
    cluster_prob_hole: per stage, P(hole) before the no-corruption override (loss sampling)
    valid_px:          per stage, B x 1 x H_s x W_s bool, real image pixels (not padding)
    clean_score:       B, the no-corruption statistic: cosine of the two S1 centres, or P(clean)
                       of the :class:`CleanHead` when the detector has one
    gathered_rows:     per stage, number of feature rows gathered and labelled by K-means
    clean_logit:       B logit of "clean" of the :class:`CleanHead` (with gradient), or None
    """

    hole: list[Tensor]
    prob_hole: list[Tensor]
    embeddings: list[Tensor]
    decided: list[Tensor]
    uncertain_in: list[Optional[Tensor]]
    centres: list[Tensor]
    refined_fraction: list[float]
    classifier_logits: Tensor
    clean: Tensor
    valid_centre: list[Tensor]
    cluster_prob_hole: list[Tensor]
    valid_px: list[Tensor]
    clean_score: Tensor
    gathered_rows: list[int]
    clean_logit: Optional[Tensor] = None


@dataclass
class FixedCentres:
    """Cluster centres fitted ONCE on a whole image, reused for every tile of it (SPEC section 3,
    "No corruption": tiles of one image must agree on centres, polarity and the clean decision).

    centres:      per stage (coarse -> fine), B x 2 x E unit centres (``Detection.centres``)
    valid_centre: per stage, B long index of the valid centre
    clean:        B bool, the whole image's no-corruption decision
    clean_score:  B, its statistic (``Detection.clean_score``)
    """

    centres: list[Tensor]
    valid_centre: list[Tensor]
    clean: Tensor
    clean_score: Tensor

    @classmethod
    def from_detection(cls, det: Detection) -> "FixedCentres":
        return cls([c.detach() for c in det.centres], [v.detach() for v in det.valid_centre],
                   det.clean.detach(), det.clean_score.detach())


class ProjectionHead(nn.Module):
    """Eq. 3: two "fully connected" layers (1x1 convs) with GELU in between, then L2 normalisation.

    B x C_in x H x W -> B x E x H x W, unit norm along channels.
    """

    def __init__(self, in_channels: int, hidden_dim: int, embed_dim: int):
        super().__init__()
        self.fc1 = nn.Conv2d(in_channels, hidden_dim, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden_dim, embed_dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        return _tokens_to_maps(self.forward_tokens(_maps_to_tokens(x)))

    def forward_tokens(self, t: Tensor) -> Tensor:
        """The same on channels-last tokens: ``B x H x W x C_in`` -> ``B x H x W x E`` (unit rows).

        The 1x1 convs run as plain matrix products over the tokens (their weights viewed as
        ``out x in``): no layout conversion, no im2col.  With gradients, see :class:`_RowSparseHead`."""
        params = (self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias)
        if torch.is_grad_enabled() and (t.requires_grad or any(p.requires_grad for p in params)):
            return _RowSparseHead.apply(self, t, *params)
        if t.device.type != "cpu":
            return self._rows(t)
        # no gradient on CPU: runs of rows, so the 128-wide hidden layer never fills a full-map buffer
        rows = t.reshape(-1, t.shape[-1])
        out = rows.new_empty(rows.shape[0], self.fc2.out_channels)
        for r0 in range(0, rows.shape[0], _HEAD_RUN_ROWS):
            out[r0:r0 + _HEAD_RUN_ROWS] = self._rows(rows[r0:r0 + _HEAD_RUN_ROWS])
        return out.view(*t.shape[:-1], out.shape[-1])

    def _rows(self, t: Tensor) -> Tensor:
        return F.normalize(_conv1x1_tokens(self.fc2, self.act(_conv1x1_tokens(self.fc1, t))), dim=-1)


class CleanHead(nn.Module):
    """Learnt "is this image clean?" score (``contrast.no_corruption: head``; an extension).

    S1 embeddings B x E x H x W (unit vectors), real-pixel mask B x 1 x H x W bool and the centre
    cosine B -> B logits of "the image is clean".  1x1 conv E -> w, ReLU, 3x3 conv w -> w, ReLU;
    mean and max over the real pixels (2w features) plus the centre cosine; one linear layer.
    """

    def __init__(self, embed_dim: int, width: int):
        super().__init__()
        self.conv1 = nn.Conv2d(embed_dim, width, 1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.out = nn.Linear(2 * width + 1, 1)

    def forward(self, emb: Tensor, real: Tensor, centre_cosine: Tensor) -> Tensor:
        realf = real.to(emb.dtype)
        x = F.relu(self.conv1(emb * realf))
        x = F.relu(self.conv2(x)) * realf  # padding contributes 0 (features are >= 0 after ReLU)
        mean = x.sum((2, 3)) / realf.sum((2, 3)).clamp(min=1)
        peak = x.amax((2, 3))
        features = torch.cat([mean, peak, centre_cosine.to(x.dtype).unsqueeze(1)], dim=1)
        return self.out(features).squeeze(1)


# Rows per run of the no-gradient projection head (each row is computed alone).
_HEAD_RUN_ROWS = 16384


class _RowSparseHead(torch.autograd.Function):
    """:class:`ProjectionHead` on tokens whose backward runs on the rows that receive a gradient.

    The head acts on every token alone, and the losses read few of its output rows (the contrastive
    queries; K-means and the classifier see detached embeddings), so the usual backward would push
    mostly zero rows through both layers at full resolution.  The forward runs without a graph;
    the backward recomputes the head with autograd on the rows whose output gradient is non-zero
    and scatters the input gradient back (zero rows add nothing, so the gradients are the same up
    to float rounding; with a dense gradient every row is taken).
    """

    @staticmethod
    def forward(ctx, head: "ProjectionHead", t: Tensor, *params: Tensor) -> Tensor:
        ctx.head = head
        ctx.save_for_backward(t)
        with torch.no_grad():
            return head._rows(t)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (t,) = ctx.saved_tensors
        head = ctx.head
        params = (head.fc1.weight, head.fc1.bias, head.fc2.weight, head.fc2.bias)
        c_in = t.shape[-1]
        g = grad.reshape(-1, grad.shape[-1])
        rows = torch.nonzero((g != 0).any(dim=1)).squeeze(1)
        need_t = ctx.needs_input_grad[1]
        with torch.enable_grad():
            sub = t.reshape(-1, c_in).index_select(0, rows).detach().requires_grad_(need_t)
            out = head._rows(sub)
            wanted = [sub] if need_t else []
            wanted += [p for p, need in zip(params, ctx.needs_input_grad[2:]) if need]
            grads = list(torch.autograd.grad(out, wanted, g.index_select(0, rows), allow_unused=True))
        d_t = None
        if need_t:
            d_t = t.new_zeros(t.numel() // c_in, c_in).index_copy_(0, rows, grads.pop(0)).view(t.shape)
        d_params = [grads.pop(0) if need else None for need in ctx.needs_input_grad[2:]]
        return (None, d_t, *d_params)


def _maps_to_tokens(x: Tensor) -> Tensor:
    """B x C x H x W -> B x H x W x C (a view for a channels-last tensor, else one copy)."""
    return x.permute(0, 2, 3, 1)


def _tokens_to_maps(t: Tensor) -> Tensor:
    """B x H x W x C -> B x C x H x W view (channels-last strides when ``t`` is contiguous)."""
    return t.permute(0, 3, 1, 2)


def _conv1x1_tokens(conv: nn.Conv2d, t: Tensor) -> Tensor:
    """A 1x1 ``nn.Conv2d`` (stride 1, no groups) applied to ``B x H x W x C_in`` tokens."""
    out = torch.mm(t.reshape(-1, t.shape[-1]), conv.weight.view(conv.weight.shape[0], -1).t())
    if conv.bias is not None:
        out = out.add_(conv.bias)  # mm + in-place bias: faster than addmm on CPU (layers.linear)
    return out.view(*t.shape[:-1], out.shape[-1])


def _up2_tokens(t: Tensor) -> Tensor:
    """Nearest x2 upsampling of ``B x H x W x C`` tokens (one copy): ``B x 2H x 2W x C``."""
    b, h, w, c = t.shape
    return t[:, :, None, :, None, :].expand(b, h, 2, w, 2, c).reshape(b, 2 * h, 2 * w, c)


def _up2(x: Tensor) -> Tensor:
    """Nearest x2 upsampling (quadtree parent -> its 2x2 children); works for bool maps."""
    return x.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)


def centre_cosine(centres: Tensor) -> Tensor:
    """B x 2 x E unit centres -> B cosine of the two (the ``centre_cosine`` no-corruption score)."""
    return (centres[:, 0] * centres[:, 1]).sum(-1)


def _erode(mask: Tensor, radius: int) -> Tensor:
    """Binary erosion of a B x 1 x H x W bool map with a (2r+1)^2 square; outside counts as inside."""
    if radius == 0:
        return mask
    x = F.pad(mask.float(), (radius,) * 4, value=1.0)
    return -F.max_pool2d(-x, 2 * radius + 1, stride=1) > 0.5


def _dilate(mask: Tensor, radius: int) -> Tensor:
    if radius == 0:
        return mask
    return F.max_pool2d(mask.float(), 2 * radius + 1, stride=1, padding=radius) > 0.5


def _rank_in_groups(score: Tensor, group: Tensor, num_groups: int) -> tuple[Tensor, Tensor]:
    """Rank (0 = largest score) of each row within its group, and the size of each group.

    score, group: M.  Stable sorts keep ties in row order, which within an image is position order,
    so ranks never depend on the other images of a batch.
    """
    by_score = torch.argsort(score, descending=True, stable=True)
    order = by_score[torch.argsort(group[by_score], stable=True)]
    counts = torch.bincount(group, minlength=num_groups)
    start = counts.cumsum(0) - counts
    rank = torch.empty_like(group)
    rank[order] = torch.arange(group.numel(), device=group.device) - start[group[order]]
    return rank, counts


def match_polarity(prev_centres: Tensor, prev_valid: Tensor, centres: Tensor) -> Tensor:
    """Polarity at S2+ (SPEC section 3): classify the previous stage's centres with the new clustering.

    prev_centres, centres: B x 2 x E unit; prev_valid: B long, index of the previous valid centre.
    Returns B long, index of the new valid centre: the pairing (valid -> valid, hole -> hole) with
    the larger summed cosine similarity.  Swapping the previous centres flips the answer.
    """
    batch = torch.arange(prev_centres.shape[0], device=prev_centres.device)
    prev_v = prev_centres[batch, prev_valid]
    prev_h = prev_centres[batch, 1 - prev_valid]
    sim_v = (centres * prev_v.unsqueeze(1)).sum(-1)  # B x 2
    sim_h = (centres * prev_h.unsqueeze(1)).sum(-1)
    keep = sim_v[:, 0] + sim_h[:, 1] >= sim_v[:, 1] + sim_h[:, 0]
    return torch.where(keep, 0, 1).long()


def _follow_polarity(prev_centres: Tensor, prev_valid: Tensor, centres: Tensor,
                     has: Tensor) -> tuple[Tensor, Tensor]:
    """S2+ polarity from the previous stage; an image with nothing left to cluster (``has`` False)
    keeps the previous stage's centres and polarity.  Returns (B x 2 x E centres, B long valid index)."""
    valid = match_polarity(prev_centres, prev_valid, centres)
    centres = torch.where(has.view(-1, 1, 1), centres, prev_centres)
    return centres, torch.where(has, valid, prev_valid)


def _gt_valid_centre(assign: Tensor, real: Tensor, hole_frac: Tensor, seg: Tensor,
                     num_images: int) -> tuple[Tensor, Tensor]:
    """Training-time S1 polarity from the ground truth: the labelling that agrees with more pixels.

    assign: M long cluster of each row; real: M bool; hole_frac: M true hole fraction of the row's
    patch; seg: M image index.  Returns (B long valid centre index, B bool "not a tie").
    """
    w = real.float()
    valid_frac = 1.0 - hole_frac
    agree0 = torch.where(assign == 0, valid_frac, hole_frac) * w  # centre 0 valid, centre 1 hole
    agree1 = torch.where(assign == 1, valid_frac, hole_frac) * w
    a0 = torch.zeros(num_images, device=assign.device).index_add_(0, seg, agree0)
    a1 = torch.zeros(num_images, device=assign.device).index_add_(0, seg, agree1)
    return (a1 > a0).long(), a0 != a1


def pool_ground_truth(gt_hole: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor, Tensor]:
    """Full-resolution hole mask -> per-position statistics of its patch at a stage's grid.

    gt_hole: B x 1 x H x W {0, 1} (1 = hole), H and W integer multiples of the stage size.
    Returns (hole fraction, entirely valid, entirely hole), each B x 1 x h x w (float, bool, bool).
    """
    h, w = size
    H, W = gt_hole.shape[-2:]
    if H % h or W % w:
        raise ValueError(f"gt_hole of size {H}x{W} is not an integer multiple of the {h}x{w} stage map; "
                         "pass the mask at the (padded) network input resolution")
    hole = (gt_hole > 0.5).float()
    k = (H // h, W // w)
    frac = F.avg_pool2d(hole, k)
    any_hole = F.max_pool2d(hole, k) > 0.5
    all_hole = -F.max_pool2d(-hole, k) > 0.5
    return frac, ~any_hole, all_hole


class HierarchicalDetector(nn.Module):
    """Projection heads, batched K-means, polarity, decided/uncertain split and quadtree refinement.

    stage_channels: encoder channels of the stages it sees, coarse -> fine (e.g. [128, 64, 32]).
    Parameters: ``heads`` (one :class:`ProjectionHead` per stage), ``maps`` (Eq. 6 inter-stage
    1x1 convs C_{s-1} -> C_{s-1}/4, one per stage after the first) and ``cluster_classifier``
    (Linear E->E, ReLU, Linear E->1 on each S1 centre).
    """

    def __init__(self, stage_channels: list[int], cfg: ContrastConfig):
        super().__init__()
        cfg.validate()
        if len(stage_channels) != cfg.stages:
            raise ConfigError(f"contrast.stages = {cfg.stages} but the encoder hands over "
                              f"{len(stage_channels)} feature maps")
        self.cfg = cfg
        self.stage_channels = list(stage_channels)
        self.maps = nn.ModuleList()
        self.heads = nn.ModuleList()
        for s, c in enumerate(stage_channels):
            in_ch = c
            if cfg.inter_stage and s > 0:
                prev = stage_channels[s - 1]
                if prev < 4:
                    raise ConfigError(f"inter-stage map needs >= 4 channels at stage {s}, got {prev}")
                self.maps.append(nn.Conv2d(prev, prev // 4, 1))  # Eq. 6: F_map, linear
                in_ch += prev // 4
            self.heads.append(ProjectionHead(in_ch, cfg.hidden_dim, cfg.embed_dim))
        self.cluster_classifier = nn.Sequential(  # Sec. 3.2.1: two FC layers with ReLU
            nn.Linear(cfg.embed_dim, cfg.embed_dim), nn.ReLU(), nn.Linear(cfg.embed_dim, 1))
        self.clean_head = CleanHead(cfg.embed_dim, cfg.clean_head_width) if cfg.no_corruption == "head" else None

    # ----------------------------------------------------------------------------- embeddings
    def embed(self, feats: list[Tensor]) -> list[Tensor]:
        """Encoder features (coarse -> fine, B x C_s x H_s x W_s) -> unit embeddings B x E x H_s x W_s."""
        # Channels-last token views throughout (the encoder hands over channels-last maps, for
        # which these permutes are free); the result is B x E x H x W with channels-last strides.
        out = []
        for s, f in enumerate(feats):
            x = _maps_to_tokens(f)
            if self.cfg.inter_stage and s > 0:  # Eq. 6; not detached: gradients reach stage s-1
                mapped = _conv1x1_tokens(self.maps[s - 1], _maps_to_tokens(feats[s - 1]))
                x = torch.cat([x, _up2_tokens(mapped)], dim=-1)
            out.append(_tokens_to_maps(self.heads[s].forward_tokens(x)))
        return out

    def classify_centres(self, centres: Tensor) -> Tensor:
        """B x 2 x E S1 centres -> B x 2 logits that centre k is the valid one."""
        return self.cluster_classifier(centres).squeeze(-1)

    def forward(self, feats: list[Tensor], valid_px: list[Tensor],
                gt_hole: Optional[Tensor] = None, centres: Optional[FixedCentres] = None) -> Detection:
        """feats[i]: B x C_i x H_i x W_i (coarse -> fine, H_{i+1} = 2 H_i); valid_px[i]: B x 1 x H_i x W_i
        float (1 = real pixel, 0 = padding); gt_hole: B x 1 x H x W {0,1} at the padded input
        resolution, used only in training mode for S1 polarity.  Returns a :class:`Detection`."""
        if len(feats) != self.cfg.stages or len(valid_px) != self.cfg.stages:
            raise ValueError(f"expected {self.cfg.stages} feature maps and valid_px maps, "
                             f"got {len(feats)} and {len(valid_px)}")
        for s, f in enumerate(feats):
            if f.shape[1] != self.stage_channels[s]:
                raise ValueError(f"stage {s + 1} features have {f.shape[1]} channels, expected "
                                 f"{self.stage_channels[s]}")
        return self.detect(self.embed(feats), valid_px, gt_hole, centres)

    # ------------------------------------------------------------------------------ detection
    def detect(self, embeddings: list[Tensor], valid_px: list[Tensor],
               gt_hole: Optional[Tensor] = None, centres: Optional[FixedCentres] = None) -> Detection:
        """Cluster precomputed unit embeddings (list of B x E x H_s x W_s, coarse -> fine).

        ``centres``: skip K-means, polarity and the no-corruption decision and assign every pixel
        to these centres instead (tiling: fitted once on the downscaled whole image).
        """
        fixed = centres
        cfg = self.cfg
        for s in range(1, len(embeddings)):
            if tuple(embeddings[s].shape[-2:]) != tuple(2 * n for n in embeddings[s - 1].shape[-2:]):
                raise ValueError(f"stage {s + 1} map {tuple(embeddings[s].shape[-2:])} is not twice "
                                 f"stage {s}'s {tuple(embeddings[s - 1].shape[-2:])}")
        use_gt = gt_hole is not None and self.training and cfg.polarity_from_gt_in_training
        last = len(embeddings) - 1
        out: dict[str, list] = {k: [] for k in ("hole", "prob", "decided", "uncertain", "centres",
                                                "refined", "valid_centre", "real", "rows")}
        logits = clean = clean_score = clean_logit = None
        for s, emb in enumerate(embeddings):
            B, E, H, W = emb.shape
            N = H * W
            real = valid_px[s].reshape(B, 1, H, W) > 0.5
            hierarchy = cfg.hierarchical and s > 0
            if hierarchy:  # quadtree: decided parents fix their 2x2 children
                inherited = _up2(out["decided"][-1])
                prob = _up2(out["prob"][-1]).reshape(-1).clone()
            else:
                inherited = torch.zeros_like(real)
                prob = emb.new_zeros(B * N, dtype=torch.float32)
            active = ~inherited
            # gather ONLY the pixels to (re-)label: the saving of the hierarchy is real
            rows = torch.nonzero(active.reshape(-1)).squeeze(1)
            img = torch.div(rows, N, rounding_mode="floor")
            pos = rows - img * N
            # M x E: only the gathered rows are copied (a view of channels-last embeddings)
            x = _maps_to_tokens(emb.detach()).reshape(B * N, E)[rows].float()
            row_real = real.reshape(-1)[rows]
            if fixed is None:
                km = spherical_kmeans(x, img, pos, B, row_real.float(), iters=cfg.kmeans_iters,
                                      tau=cfg.tau, restarts=cfg.kmeans_restarts, seed=cfg.seed + 7919 * s)
                centres, has = km.centres, km.has_samples
            else:  # tiling: the whole image's centres (zero centres = that fit had no samples)
                centres = fixed.centres[s].to(emb.device, torch.float32)
                has = centres.norm(dim=-1).amin(dim=1) > 0.5
            sim = cosine_to_centres(x, img, centres)  # M x 2
            if s == 0:  # S1: the classifier on the two centres says which one is valid
                logits = self.classify_centres(centres)
                valid_c = logits.detach().argmax(dim=1)
                if fixed is not None:
                    valid_c = fixed.valid_centre[0].to(emb.device)
                if use_gt:  # authors: S1 polarity from the ground truth during training
                    frac, _, _ = pool_ground_truth(gt_hole, (H, W))
                    valid_c, _ = _gt_valid_centre(sim.argmax(1), row_real, frac.reshape(-1)[rows], img, B)
            elif fixed is not None:
                valid_c = fixed.valid_centre[s].to(emb.device)
            else:
                centres, valid_c = _follow_polarity(out["centres"][-1], out["valid_centre"][-1], centres, has)
            # Eq. 5 (SPEC section 0): P(valid) = softmax over the two centres of cos / tau
            p_centres = torch.softmax(sim / cfg.tau, dim=1)
            hole_c = (1 - valid_c)[img]
            p_hole = p_centres.gather(1, hole_c.unsqueeze(1)).squeeze(1)
            labelled = has[img]
            p_hole = torch.where(labelled, p_hole, prob[rows])
            prob[rows] = p_hole
            prob_map = prob.reshape(B, 1, H, W)
            hole_map = prob_map > 0.5
            if s < last and cfg.hierarchical:
                decided = self._decide(p_hole, row_real & labelled, img, rows, inherited, hole_map, real)
            else:
                decided = torch.ones_like(real)
            n_real = real.sum().clamp(min=1)
            out["refined"].append(float((active & real).sum() / n_real))
            out["hole"].append(hole_map)
            out["prob"].append(prob_map)
            out["decided"].append(decided)
            out["uncertain"].append(active if s > 0 else None)
            out["centres"].append(centres)
            out["valid_centre"].append(valid_c)
            out["real"].append(real)
            out["rows"].append(int(rows.numel()))
            if s == 0:
                clean_score = centre_cosine(centres)
                if self.clean_head is not None and fixed is None:
                    head_in = emb.detach() if cfg.clean_head_detach else emb
                    clean_logit = self.clean_head(head_in, real, clean_score)
                    clean_score = torch.sigmoid(clean_logit.detach().float())
                if fixed is not None:
                    clean_score, clean = fixed.clean_score.to(emb.device), fixed.clean.to(emb.device)
                elif cfg.no_corruption != "off" and not self.training:
                    # inference only: in training the decoder must see the clusters' masks
                    clean = has & (clean_score > cfg.clean_threshold)
                else:
                    clean = torch.zeros_like(has)
        keep = (~clean).view(-1, 1, 1, 1)
        return Detection(
            hole=[(h & keep).float() for h in out["hole"]],
            prob_hole=[p * keep for p in out["prob"]],
            embeddings=list(embeddings),
            decided=out["decided"],
            uncertain_in=out["uncertain"],
            centres=out["centres"],
            refined_fraction=out["refined"],
            classifier_logits=logits,
            clean=clean,
            valid_centre=out["valid_centre"],
            cluster_prob_hole=out["prob"],
            valid_px=out["real"],
            clean_score=clean_score,
            gathered_rows=out["rows"],
            clean_logit=clean_logit,
        )

    def _decide(self, p_hole: Tensor, eligible: Tensor, img: Tensor, rows: Tensor,
                inherited: Tensor, hole_map: Tensor, real: Tensor) -> Tensor:
        """Decided vs uncertain after a non-last stage (SPEC section 3).

        Of the real pixels labelled at this stage on each side of 0.5, the ``decided_fraction``
        most confident are decided; each decided set (inherited + new, per label) is eroded so
        region borders stay uncertain; the result accumulates onto the inherited decided map.
        Returns B x 1 x H x W bool.
        """
        cfg = self.cfg
        B = real.shape[0]
        side_hole = p_hole > 0.5
        conf = torch.where(side_hole, p_hole, 1.0 - p_hole)
        if cfg.confidence == "paper":  # Eq. 5 as printed: softmax(-cos/tau) at the assigned centre
            conf = 1.0 - conf
        group = torch.where(eligible, img * 2 + side_hole.long(), torch.full_like(img, 2 * B))
        rank, counts = _rank_in_groups(conf, group, 2 * B + 1)
        ppm = round(cfg.decided_fraction * 1_000_000)  # exact integer arithmetic (no float64 on MPS)
        quota = counts * ppm // 1_000_000
        newly = eligible & (rank < quota[group])
        new_hole = torch.zeros(real.numel(), dtype=torch.bool, device=real.device)
        new_valid = torch.zeros_like(new_hole)
        new_hole[rows[newly & side_hole]] = True
        new_valid[rows[newly & ~side_hole]] = True
        new_hole, new_valid = new_hole.view_as(real), new_valid.view_as(real)
        pad = ~real  # padding counts as inside both sets, so it never erodes real pixels
        keep_hole = _erode((inherited & hole_map) | new_hole | pad, cfg.erode)
        keep_valid = _erode((inherited & ~hole_map) | new_valid | pad, cfg.erode)
        return inherited | (new_hole & keep_hole) | (new_valid & keep_valid)


# ---------------------------------------------------------------------------------- losses
def _gather_rows(maps: Tensor, idx: Tensor) -> Tensor:
    """maps: B x C x H x W, idx: B x K flat positions -> B x K x C."""
    B, C = maps.shape[:2]
    flat = _maps_to_tokens(maps).reshape(B, -1, C)  # a view for channels-last maps
    return flat.gather(1, idx.unsqueeze(-1).expand(-1, -1, C))


def _sample_queries(eligible: Tensor, max_queries: int,
                    generator: Optional[torch.Generator]) -> tuple[Tensor, Tensor]:
    """Uniform random subset of eligible positions, at most ``max_queries`` per image.

    eligible: B x N bool.  Returns (B x Q flat positions, B x Q bool mask), Q = min(max, N).
    Random scores + top-k: vectorised over images; seeded through ``generator``.
    """
    B, N = eligible.shape
    scores = torch.rand(B, N, generator=generator, device=eligible.device)
    scores = torch.where(eligible, scores, torch.full_like(scores, -1.0))
    idx = scores.topk(min(max_queries, N), dim=1).indices
    return idx, eligible.gather(1, idx)


def _extremes(conf: Tensor, member: Tensor, quota: int) -> Tensor:
    """Per image, up to ``quota`` members taken from both confidence extremes (half most, half least
    confident).  conf, member: B x N.  Returns B x N bool selection."""
    masked = torch.where(member, conf, torch.full_like(conf, float("-inf")))
    order = torch.argsort(masked, dim=1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(conf.shape[1], device=conf.device).expand_as(order))
    n = member.sum(1, keepdim=True)
    k = n.clamp(max=quota)
    k_top = (k + 1) // 2
    k_bottom = k - k_top
    return member & ((rank < k_top) | (rank >= n - k_bottom))


def _uses_representatives(stage: int, cfg: ContrastConfig) -> bool:
    """S2+ of the hierarchical scheme with sample selection (SPEC section 3, main Fig. 3)."""
    return stage > 0 and cfg.hierarchical and cfg.sample_selection


def stage_queries(det: Detection, gt_hole: Tensor, stage: int, cfg: ContrastConfig,
                  generator: Optional[torch.Generator] = None) -> tuple[Tensor, Tensor, Tensor]:
    """Query positions of one stage (SPEC section 3), at most ``max_queries`` per image.

    Eligible: real positions whose patch of the full-resolution ``gt_hole`` (B x 1 x H x W, 1 = hole)
    is entirely valid or entirely hole; at S2+ of the hierarchical scheme with sample selection,
    only positions re-clustered at this stage (left uncertain by the coarser stage).
    Returns (B x Q flat positions, B x Q bool mask, B x Q bool ground-truth hole label).
    """
    B, _, H, W = det.embeddings[stage].shape
    _, pure_valid, pure_hole = pool_ground_truth(gt_hole, (H, W))
    eligible = det.valid_px[stage].reshape(B, -1) & (pure_valid | pure_hole).reshape(B, -1)
    if _uses_representatives(stage, cfg):
        eligible &= det.uncertain_in[stage].reshape(B, -1)
    idx, mask = _sample_queries(eligible, cfg.max_queries, generator)
    return idx, mask, pure_hole.reshape(B, -1).gather(1, idx)


def representatives(det: Detection, stage: int, cfg: ContrastConfig) -> tuple[Tensor, Tensor, Tensor]:
    """Hard-mined representatives of the coarser ``stage`` (SPEC section 3, main Fig. 3).

    Its DETACHED embeddings at decided real positions, labelled with its cluster labels; per class
    up to ``max_representatives``: half near region edges (within ``edge_radius`` of a pixel not
    decided with that label), half elsewhere, each half from both confidence extremes.
    Returns (B x R x E embeddings, B x R bool hole label, B x R bool mask).
    """
    emb = det.embeddings[stage].detach()
    B = emb.shape[0]
    p_hole = det.cluster_prob_hole[stage].reshape(B, -1)
    decided = det.decided[stage].reshape(B, -1)
    real = det.valid_px[stage]
    label_hole = p_hole > 0.5
    conf = torch.where(label_hole, p_hole, 1.0 - p_hole)
    quota = cfg.max_representatives // 2
    chosen = torch.zeros_like(decided)
    for cls in (False, True):
        member = decided & real.reshape(B, -1) & (label_hole == cls)
        outside = real & ~member.view_as(real)
        near = _dilate(outside, cfg.edge_radius).reshape(B, -1)
        chosen |= _extremes(conf, member & near, quota)
        chosen |= _extremes(conf, member & ~near, quota)
    idx = chosen.float().topk(min(2 * cfg.max_representatives, chosen.shape[1]), dim=1).indices
    return _gather_rows(emb, idx), label_hole.gather(1, idx), chosen.gather(1, idx)


# Largest exponent range of the shift-free evaluation below: exp(-80) = 1.8e-35 is still a normal float32.
_CIRCLE_EXP_RANGE = 80.0


def circle_loss(q: Tensor, q_hole: Tensor, q_mask: Tensor, keys: Tensor, k_hole: Tensor,
                k_mask: Tensor, tau: float, queries_in_keys: bool) -> tuple[Tensor, Tensor]:
    """Eq. 2 per image, averaged over queries (SPEC section 0): returns B losses and B "has queries".

    q: B x Q x E, keys: B x K x E (unit); q_hole / k_hole: bool labels; masks: bool.  With
    ``queries_in_keys`` the first Q keys are the queries themselves (pairs (i, i) excluded).  For each query:
    ``log(1 + sum_P exp(-s_qp / tau) * sum_N exp(s_qn / tau)) = softplus(LSE_P(-s/tau) + LSE_N(s/tau))``.
    Queries lacking a positive or a negative are masked out.

    Evaluation: ``|s / tau| <= c = max|q| max|k| / tau``, so with ``c`` as the log-sum-exp shift no
    exponent leaves ``[-2c, 0]``.  When ``2c`` is small enough for float32 (unit vectors and
    tau >= 0.025): one GEMM gives ``s/tau - c``, two ``exp`` give every pair's positive and negative
    term, and a GEMM with the per-key class indicators sums them per query (no B x Q x K masks).
    Else the masked log-sum-exp with per-row maxima.
    """
    qf, kf = q.float(), keys.float()
    Q = q.shape[1]
    # a query needs a positive (a same-label key other than itself) and a negative
    n_hole = (k_mask & k_hole).sum(1, keepdim=True)
    n_valid = (k_mask & ~k_hole).sum(1, keepdim=True)
    n_same = torch.where(q_hole, n_hole, n_valid)
    if queries_in_keys:
        n_same = n_same - q_mask.long()
    used = q_mask & (n_same > 0) & (torch.where(q_hole, n_valid, n_hole) > 0)
    shift = 0.0
    if qf.numel() and kf.numel():
        with torch.no_grad():
            shift = float(qf.norm(dim=-1).amax() * kf.norm(dim=-1).amax()) / tau
    if 2.0 * shift <= _CIRCLE_EXP_RANGE:
        lse_pos, lse_neg = _circle_lse_shifted(qf, q_hole, kf, k_hole, k_mask, tau, shift, queries_in_keys)
    else:
        lse_pos, lse_neg = _circle_lse_masked(qf, q_hole, kf, k_hole, k_mask, tau, queries_in_keys)
    per_query = F.softplus(lse_pos + lse_neg) * used
    n_used = used.sum(1)
    return per_query.sum(1) / n_used.clamp(min=1), n_used > 0


def _circle_lse_shifted(q: Tensor, q_hole: Tensor, keys: Tensor, k_hole: Tensor, k_mask: Tensor, tau: float,
                        shift: float, queries_in_keys: bool) -> tuple[Tensor, Tensor]:
    """LSE_P(-s/tau), LSE_N(s/tau) per query (B x Q each) with the fixed shift ``shift >= max|s/tau|``.

    The self pair (i, i) of ``queries_in_keys`` is removed from the positive sum by subtraction: for
    unit vectors its term exp(-|q|^2/tau - c) = exp(-2c) is the smallest of all, so no cancellation.
    """
    Q = q.shape[1]
    t = torch.baddbmm(q.new_full((1, 1, 1), -shift), q, keys.transpose(1, 2), alpha=1.0 / tau)  # s/tau - c
    e_neg = torch.exp(t)  # negatives' terms exp(s/tau) e^-c
    e_pos = torch.exp(-2.0 * shift - t)  # positives' terms exp(-s/tau) e^-c
    # per key: [usable valid key, usable hole key]; one GEMM sums each query's terms per class
    classes = torch.stack([k_mask & ~k_hole, k_mask & k_hole], dim=-1).to(t.dtype)  # B x K x 2
    own = q_hole.long().unsqueeze(-1)
    neg = torch.bmm(e_neg, classes).gather(2, 1 - own).squeeze(2)
    pos = torch.bmm(e_pos, classes).gather(2, own).squeeze(2)
    if queries_in_keys:  # the pair (i, i) is no positive; for unit vectors its term is the smallest
        pos = pos - torch.diagonal(e_pos[:, :, :Q], dim1=1, dim2=2) * k_mask[:, :Q]
    tiny = torch.finfo(t.dtype).tiny  # empty sums (query masked out below): finite, no gradient
    return torch.log(pos.clamp(min=tiny)) + shift, torch.log(neg.clamp(min=tiny)) + shift


def _circle_lse_masked(q: Tensor, q_hole: Tensor, keys: Tensor, k_hole: Tensor, k_mask: Tensor, tau: float,
                       queries_in_keys: bool) -> tuple[Tensor, Tensor]:
    """The same as :func:`_circle_lse_shifted` with masked B x Q x K logits and per-row maxima."""
    s = torch.einsum("bqe,bke->bqk", q, keys) / tau
    key_ok = k_mask.unsqueeze(1).expand_as(s)
    Q = q.shape[1]
    if queries_in_keys:
        key_ok = key_ok.clone()
        key_ok[:, :, :Q] &= ~torch.eye(Q, dtype=torch.bool, device=q.device)
    same = q_hole.unsqueeze(2) == k_hole.unsqueeze(1)
    # masked pairs: a finite logit 50 below any real one (|s| <= 1/tau for unit vectors).  Finite
    # keeps fully masked rows NaN-free; not much lower, so exp() never walks the slow denormal path.
    fill = torch.full_like(s, -1.0 / tau - 50.0)
    lse_pos = torch.logsumexp(torch.where(key_ok & same, -s, fill), dim=2)
    lse_neg = torch.logsumexp(torch.where(key_ok & ~same, s, fill), dim=2)
    return lse_pos, lse_neg


def contrastive_loss(det: Detection, gt_hole: Tensor, cfg: ContrastConfig,
                     generator: Optional[torch.Generator] = None) -> tuple[Tensor, list[Tensor]]:
    """Hierarchical contrastive loss: sum over stages of Eq. 2 (mean over queries, then images).

    det: the detector's output; gt_hole: B x 1 x H x W {0, 1} (1 = hole) at the padded input
    resolution; generator seeds the query subsampling.  Sampling (SPEC section 3): a query is a
    real position whose patch of the full-resolution mask is entirely valid or entirely hole
    (mixed patches dropped), at most ``max_queries`` per image; at S2+ (hierarchical with sample
    selection) only positions left uncertain by the coarser stage, with the coarser stage's
    hard-mined representatives added as keys.  Returns (total, per-stage losses).
    """
    per_stage = []
    for s, emb in enumerate(det.embeddings):
        idx, q_mask, q_hole = stage_queries(det, gt_hole, s, cfg, generator)
        q = _gather_rows(emb, idx)
        keys, k_hole, k_mask = q, q_hole, q_mask
        if _uses_representatives(s, cfg):
            r, r_hole, r_mask = representatives(det, s - 1, cfg)
            keys = torch.cat([q, r.to(q.dtype)], dim=1)
            k_hole = torch.cat([q_hole, r_hole], dim=1)
            k_mask = torch.cat([q_mask, r_mask], dim=1)
        per_image, has = circle_loss(q, q_hole, q_mask, keys, k_hole, k_mask, cfg.tau, True)
        per_stage.append((per_image * has).sum() / has.sum().clamp(min=1))
    return torch.stack(per_stage).sum(), per_stage


def has_hole(gt_hole: Tensor) -> Tensor:
    """B x 1 x H x W {0, 1} ground truth -> B bool: the image has at least one hole pixel."""
    return (gt_hole > 0.5).flatten(1).any(1)


def classifier_loss(det: Detection, gt_hole: Tensor) -> Tensor:
    """BCE of the S1 cluster classifier against the ground-truth polarity (valid centre = 1).

    The true polarity is the labelling of the two S1 clusters that agrees with more real pixels
    (hole fraction of each position's patch); images where both labellings tie, and clean images
    (no hole pixel: no true polarity), are skipped.
    """
    emb = det.embeddings[0].detach()
    B, E, H, W = emb.shape
    x = emb.permute(0, 2, 3, 1).reshape(B * H * W, E).float()
    img = torch.arange(B, device=x.device).repeat_interleave(H * W)
    assign = cosine_to_centres(x, img, det.centres[0]).argmax(1)
    frac, _, _ = pool_ground_truth(gt_hole, (H, W))
    gt_valid, decisive = _gt_valid_centre(assign, det.valid_px[0].reshape(-1), frac.reshape(-1), img, B)
    decisive = decisive & has_hole(gt_hole)  # a clean image has no true polarity
    target = F.one_hot(gt_valid, 2).to(det.classifier_logits.dtype)
    bce = F.binary_cross_entropy_with_logits(det.classifier_logits, target, reduction="none").mean(1)
    return (bce * decisive).sum() / decisive.sum().clamp(min=1)


def clean_loss(det: Detection, gt_hole: Tensor) -> Tensor:
    """BCE of the :class:`CleanHead`'s logit against "the image has no hole pixel" (mean over images).

    gt_hole: B x 1 x H x W {0, 1} (1 = hole), padding 0.  Needs a detector with a clean head.
    """
    if det.clean_logit is None:
        raise ValueError("clean_loss needs a detector with a clean head (contrast.no_corruption: head)")
    target = (~has_hole(gt_hole)).to(det.clean_logit.dtype)
    return F.binary_cross_entropy_with_logits(det.clean_logit, target)
