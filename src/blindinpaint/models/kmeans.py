"""Batched spherical K-means with K = 2 over gathered feature rows (HCL main Eq. 4, SPEC section 3).

All images of a batch are clustered at once.  The caller gathers the rows to cluster from a flat
``(B*N) x E`` tensor (for example only the still-undecided pixels of a quadtree stage) and passes
each row's image index ``seg`` and its position ``pos`` inside its own image.  Per-image centres
are accumulated with one GEMM against a block-sparse weight matrix, so no Python loop runs over
images or pixels.

Every choice (initial centres, tie-breaks, restarts) depends only on an image's own rows and
positions, never on the other images of the batch: an image gives the same centres alone or inside
any batch (up to float rounding of the GEMMs, ~1e-7).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

_MASK32 = (1 << 32) - 1


@dataclass
class KMeansResult:
    """Result of :func:`spherical_kmeans` for ``S`` segments (images).

    centres:      S x 2 x E, unit norm (zeros for a segment without samples)
    has_samples:  S bool, the segment had at least one row with positive weight
    cost:         S, sum over its weighted rows of (1 - cosine to the nearest centre)
    """

    centres: Tensor
    has_samples: Tensor
    cost: Tensor


def position_hash(pos: Tensor, salt: int) -> Tensor:
    """Deterministic pseudo-random 32-bit score per position (int64 in [0, 2^32)).

    A bijection of ``pos mod 2^32`` for a fixed salt (odd multiplies, xor-shifts and additions
    mod 2^32 are all invertible), so the scores of distinct positions inside one image never tie.
    """
    h = (pos.long() * 2654435761 + (salt * 40503 + 12345)) & _MASK32
    h = h ^ (h >> 16)
    h = (h * 0x45D9F3B) & _MASK32
    return h ^ (h >> 16)


def segment_argmax(score: Tensor, seg: Tensor, pos: Tensor, num_segments: int, eligible: Tensor) -> Tensor:
    """Row index of the largest eligible ``score`` in each segment, ties broken by the smallest ``pos``.

    score, seg, pos, eligible: M (eligible bool).  Returns S long, -1 for a segment without an
    eligible row.
    """
    if score.is_floating_point():
        low = torch.tensor(float("-inf"), dtype=score.dtype, device=score.device)
    else:
        low = torch.tensor(torch.iinfo(score.dtype).min, dtype=score.dtype, device=score.device)
    score = torch.where(eligible, score, low)
    best = torch.full((num_segments,), low.item(), dtype=score.dtype, device=score.device)
    best = best.scatter_reduce(0, seg, score, reduce="amax", include_self=True)
    is_best = eligible & (score == best[seg])
    beyond = int(pos.max().item()) + 1 if pos.numel() else 1
    tie_pos = torch.where(is_best, pos, torch.full_like(pos, beyond))
    first_pos = torch.full((num_segments,), beyond, dtype=pos.dtype, device=pos.device)
    first_pos = first_pos.scatter_reduce(0, seg, tie_pos, reduce="amin", include_self=True)
    chosen = is_best & (pos == first_pos[seg])
    out = torch.full((num_segments,), -1, dtype=torch.long, device=seg.device)
    out[seg[chosen]] = torch.nonzero(chosen).squeeze(1)
    return out


def _own_columns(seg: Tensor) -> Tensor:
    """M x 2 column indices (2 seg, 2 seg + 1) of a row's own two centres among all 2S centres."""
    return seg.unsqueeze(1) * 2 + torch.arange(2, device=seg.device)


def cosine_to_centres(x: Tensor, seg: Tensor, centres: Tensor) -> Tensor:
    """Cosine similarity of each unit row to the two centres of its own segment.

    x: M x E unit rows, seg: M, centres: S x 2 x E unit.  Returns M x 2.  One GEMM against all
    2S centres, then each row keeps its own segment's pair (cheaper on CPU than gathering an
    M x 2 x E copy of the centres for the usual batch sizes).
    """
    S = centres.shape[0]
    sim = x @ centres.reshape(2 * S, -1).T  # M x 2S
    return sim.gather(1, _own_columns(seg))


def _segment_weighted_sum(x: Tensor, weights: Tensor, seg: Tensor, num_segments: int) -> Tensor:
    """Per segment and cluster, sum of weighted rows: S x 2 x E = sum_{rows of s} weights[:, k] x.

    x: M x E, weights: M x 2.  A GEMM with a block-sparse M x 2S weight matrix (each row has
    non-zeros only in its own segment's two columns) instead of a serial index_add.
    """
    w = x.new_zeros(x.shape[0], 2 * num_segments).scatter_(1, _own_columns(seg), weights)
    return (w.T @ x).view(num_segments, 2, -1)


def _init_centres(x: Tensor, seg: Tensor, pos: Tensor, num_segments: int, fit: Tensor, salt: int) -> Tensor:
    """One seeded feature per segment and the feature farthest (lowest cosine) from it: S x 2 x E."""
    first = segment_argmax(position_hash(pos, salt), seg, pos, num_segments, fit)
    c1 = torch.where((first >= 0).unsqueeze(1), x[first.clamp(min=0)], torch.zeros_like(x[:1]))
    far = -(x @ c1.T).gather(1, seg.unsqueeze(1)).squeeze(1)
    second = segment_argmax(far, seg, pos, num_segments, fit)
    c2 = torch.where((second >= 0).unsqueeze(1), x[second.clamp(min=0)], torch.zeros_like(x[:1]))
    return torch.stack([c1, c2], dim=1)


@torch.no_grad()
def spherical_kmeans(
    x: Tensor,
    seg: Tensor,
    pos: Tensor,
    num_segments: int,
    weight: Tensor,
    iters: int = 3,
    tau: float = 0.1,
    restarts: int = 1,
    seed: int = 0,
) -> KMeansResult:
    """Spherical K-means (K = 2) per segment on unit rows, with soft assignments (HCL Eq. 4).

    x:        M x E rows, L2-normalised (cosine similarity = dot product)
    seg:      M long, segment (image) index of each row, in [0, num_segments)
    pos:      M long, position of the row inside its own image (seeds the init, breaks ties)
    weight:   M float >= 0, sample weight; rows with weight 0 (padding, decided pixels) never move
              a centre and are never picked as an initial centre
    iters:    assignment/update iterations; tau: temperature of the soft assignment
              ``softmax(-d / tau)`` with cosine distance ``d = 1 - cos`` (= ``softmax(cos / tau)``)
    restarts: independent seeded inits; per segment the run with the lowest cost is kept
    """
    x = x.float()
    weight = weight.float()
    if x.shape[0] == 0:
        zeros = x.new_zeros(num_segments)
        return KMeansResult(x.new_zeros(num_segments, 2, x.shape[1]), zeros.bool(), zeros)
    fit = weight > 0
    has = torch.zeros(num_segments, dtype=torch.bool, device=x.device)
    has[seg[fit]] = True
    best_centres = x.new_zeros(num_segments, 2, x.shape[1])
    best_cost = x.new_full((num_segments,), float("inf"))
    for restart in range(restarts):
        centres = _init_centres(x, seg, pos, num_segments, fit, salt=seed * 1000003 + restart)
        for _ in range(iters):
            resp = torch.softmax(cosine_to_centres(x, seg, centres) / tau, dim=1) * weight.unsqueeze(1)
            total = _segment_weighted_sum(x, resp, seg, num_segments)
            norm = total.norm(dim=-1, keepdim=True)
            # a centre that received no mass keeps its previous position
            centres = torch.where(norm > 1e-12, total / norm.clamp(min=1e-12), centres)
        nearest = cosine_to_centres(x, seg, centres).max(dim=1).values
        cost = x.new_zeros(num_segments).index_add_(0, seg, (1.0 - nearest) * weight)
        better = cost < best_cost
        best_cost = torch.where(better, cost, best_cost)
        best_centres = torch.where(better.view(-1, 1, 1), centres, best_centres)
    best_centres = torch.where(has.view(-1, 1, 1), best_centres, torch.zeros_like(best_centres))
    best_cost = torch.where(has, best_cost, torch.zeros_like(best_cost))
    return KMeansResult(centres=F.normalize(best_centres, dim=-1), has_samples=has, cost=best_cost)
