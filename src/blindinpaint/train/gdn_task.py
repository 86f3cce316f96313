"""GDN training: the generator and the pixel-wise dense detector (seed paper 003, SPEC.md section 5).

One iteration = one generator step and one detector step on the same generator forward
(simultaneous updates, as the authors' two train ops on one graph):

* generator ("G"): ``L_G = mean |W * (G(I, M) - I_gt)|`` with ``W = x^V`` (x = 10) or
  ``W = 1 + V`` and ``V = Det(G(I, M))`` on the *raw* output (GDN Eq. 7-8).  W is not detached
  by default (authors' code): the generator's gradient also flows through the detector, whose
  parameters the G optimiser does not hold.
* detector ("D"): focal loss (Eq. 6, alpha = the image's hole ratio, gamma = 2) of V on the
  detached raw output against the hole mask (weak supervision: artifacts live in the hole,
  Sec. 3.2); CE (Eq. 4) or balanced CE (Eq. 5) for GDN Table 2.

``loss.framework`` selects the frameworks compared in GDN Sec. 4.3 (same generator):
``det`` (the above), ``weight`` (plain hard-weighted L1, 6 on holes / 1 elsewhere, as PConv; the
detector still trains on the outputs with the detector loss, for heat maps and ``inspect``, but
does not enter the generator loss) and ``adv`` (Eq. 3: L1 + lambda_adv * standard GAN loss, the
detector network used as an image-level discriminator, see :func:`image_logit`).

GDN is mask-given inpainting: the generator sees the clean image with the holes filled with 1
(white; done inside :class:`GDNGenerator`) and the true hole mask, so the dataset's noise content
is never used (configs pick the cheap ``constant`` pattern).  Images in [0, 1], hole = 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import to_dict
from ..errors import ConfigError
from ..losses import balanced_ce_loss, ce_loss, focal_loss, l1_loss, weighted_l1
from ..metrics import restoration_metrics
from ..models.gdn import GDN, DenseDetector, GDNConfig
from .logging import make_grid
from .task import ExportSpec, Task

FRAMEWORKS = ("det", "weight", "adv")
DETECTOR_LOSSES = ("focal", "ce", "bce")


@dataclass
class GDNLossConfig:
    """The ``loss:`` section of a GDN config (defaults = the paper's Det framework).

    framework:      det | weight | adv (GDN Sec. 4.3, see the module docstring)
    weight_map:     exp (W = base^V, Sec. 3.4.3, paper's choice) | linear (W = 1 + V)
    base:           x of W = x^V (paper: 10)
    detach_weight:  stop the gradient through W (default False = authors' code)
    detector_loss:  focal (Eq. 6) | ce (Eq. 4) | bce (balanced CE, Eq. 5); GDN Table 2
    focal_gamma:    gamma of the focal loss (paper: 2)
    hard_weights:   [hole, valid] weights of the ``weight`` framework (paper: 6, 1, as PConv)
    adv_form:       ``adv`` framework generator term: saturating = log(1 - D(G)) as printed in
                    Eq. 3; non_saturating = -log D(G) (the usual practical variant)
    """

    framework: Literal["det", "weight", "adv"] = "det"
    weight_map: Literal["exp", "linear"] = "exp"
    base: float = 10.0
    detach_weight: bool = False
    detector_loss: Literal["focal", "ce", "bce"] = "focal"
    focal_gamma: float = 2.0
    hard_weights: list[float] = field(default_factory=lambda: [6.0, 1.0])
    adv_form: Literal["saturating", "non_saturating"] = "saturating"

    def validate(self) -> None:
        if self.framework not in FRAMEWORKS:
            raise ConfigError(f"loss.framework must be one of {', '.join(FRAMEWORKS)}, got {self.framework!r}")
        if self.weight_map not in ("exp", "linear"):
            raise ConfigError(f"loss.weight_map must be exp or linear, got {self.weight_map!r}")
        if self.weight_map == "exp" and self.base <= 1:
            raise ConfigError(f"loss.base must be > 1 for W = base^V, got {self.base}")
        if self.detector_loss not in DETECTOR_LOSSES:
            raise ConfigError(f"loss.detector_loss must be one of {', '.join(DETECTOR_LOSSES)}, "
                              f"got {self.detector_loss!r}")
        if self.focal_gamma < 0:
            raise ConfigError(f"loss.focal_gamma must be >= 0, got {self.focal_gamma}")
        if len(self.hard_weights) != 2 or min(self.hard_weights) <= 0:
            raise ConfigError(f"loss.hard_weights must be two positive numbers [hole, valid], got {self.hard_weights}")
        if self.adv_form not in ("saturating", "non_saturating"):
            raise ConfigError(f"loss.adv_form must be saturating or non_saturating, got {self.adv_form!r}")


def image_logit(logits: Tensor) -> Tensor:
    """Image-level "real" logit of the detector used as a standard discriminator (``adv`` framework).

    logits: B x 2 x H x W detector output (channel 1 = artifact).  Returns B: the mean over pixels
    of the per-pixel log-odds of "real", so D(x) = sigmoid(image_logit) is one scalar per image,
    the averaged judgement the paper contrasts its dense detector with (Sec. 2, 3.2).
    """
    return (logits[:, 0] - logits[:, 1]).mean(dim=(1, 2))


def auroc_per_image(score: Tensor, hole: Tensor) -> Tensor:
    """Per-image area under the ROC curve of ``score`` as a detector of ``hole`` pixels.

    score: B x 1 x H x W (higher = more likely hole); hole: B x 1 x H x W {0, 1}.
    Returns B float64 (Mann-Whitney U with average ranks for ties); NaN for an image whose
    mask is all hole or all valid.
    """
    s = score.flatten(1).double()
    y = (hole > 0.5).flatten(1).double()
    s_sorted, order = s.sort(dim=1)
    y_sorted = y.gather(1, order)
    # average 1-based rank of each value's tie group
    first = torch.searchsorted(s_sorted, s_sorted, right=False)
    last = torch.searchsorted(s_sorted, s_sorted, right=True)
    ranks = (first + last + 1).double() / 2
    n_pos = y.sum(1)
    n_neg = y.shape[1] - n_pos
    u = (ranks * y_sorted).sum(1) - n_pos * (n_pos + 1) / 2
    return torch.where((n_pos > 0) & (n_neg > 0), u / (n_pos * n_neg).clamp_min(1), torch.full_like(u, float("nan")))


def heat_colour(v: Tensor) -> Tensor:
    """B x 1 x H x W in [0, 1] -> B x 3 x H x W "hot" colour map (black -> red -> yellow -> white)."""
    return torch.cat([(3 * v).clamp(0, 1), (3 * v - 1).clamp(0, 1), (3 * v - 2).clamp(0, 1)], dim=1)


def _masked_mean(values: Tensor, weight: Tensor) -> Tensor:
    """Per-image mean of B x 1 x H x W ``values`` over pixels where ``weight`` = 1 (NaN if none)."""
    total = weight.sum(dim=(1, 2, 3))
    return (values * weight).sum(dim=(1, 2, 3)) / total.where(total > 0, torch.full_like(total, float("nan")))


class GDNTask(Task):
    """Generator "G" + dense detector "D" of GDN (see the module docstring)."""

    ModelConfig = GDNConfig
    LossConfig = GDNLossConfig
    OPTIMIZERS = ("G", "D")
    LOSS_WEIGHTS = {"rec": 1.0, "adv": 0.1}  # adv: lambda_adv of Eq. 3 (``adv`` framework only; EdgeConnect's 0.1)
    VAL_METRIC, VAL_MODE = "psnr", "max"

    @classmethod
    def check_config(cls, cfg) -> None:
        super().check_config(cfg)
        if cfg.data.clean_fraction > 0:
            raise ConfigError("data.clean_fraction must be 0 for GDN: it inpaints a given mask, and a clean "
                              "item has no hole to inpaint")

    def build(self) -> None:
        net = GDN(self.model_cfg)  # the same construction (and init order) as the exported model
        self.generator = net.generator.to(self.device)
        self.detector = net.detector.to(self.device)
        self._fakes: list[Tensor] = []

    def modules(self):
        return {"generator": self.generator, "detector": self.detector}

    def optimizers(self, phase):
        return {"G": self.adam("G", self.generator.parameters()), "D": self.adam("D", self.detector.parameters())}

    # ------------------------------------------------------------------ losses
    def generator_loss(self, b: dict) -> tuple[Tensor, dict[str, float]]:
        """The generator's loss on one (micro-)batch; stores the detached raw output for the D step."""
        clean, hole = b["clean"], b["hole"]
        raw = self.module("generator")(clean, hole)  # holes of ``clean`` are filled with 1 inside
        self._fakes.append(raw.detach())
        cfg = self.loss_cfg
        logs: dict[str, float] = {}
        if cfg.framework == "det":
            # Eq. 7-8: V from the detector on the RAW output; W = x^V not detached by default, so the
            # gradient reaches G through Det too (the detector is only passed through here: raw).
            prob = DenseDetector.probability(self.raw("detector")(raw))
            rec = weighted_l1(raw, clean, prob, kind=cfg.weight_map, x=cfg.base, detach=cfg.detach_weight)
            loss = self.weight("rec") * rec
            logs["v_mean"] = prob.mean().item()
        elif cfg.framework == "weight":
            # Sec. 4.3 "Weight": hard-weighted L1 (6 on holes, 1 elsewhere), no detector in the loss.
            rec = weighted_l1(raw, clean, kind="hard", hole=hole, hard_weights=tuple(cfg.hard_weights))
            loss = self.weight("rec") * rec
        else:
            # Sec. 4.3 "Adv" = Eq. 3: lambda_l1 * ||I_out - I_gt||_1 + lambda_adv * E[log(1 - D(G(I, M)))].
            rec = l1_loss(raw, clean)
            s_fake = image_logit(self.raw("detector")(raw))
            if cfg.adv_form == "saturating":
                adv = -F.softplus(s_fake).mean()       # log(1 - sigmoid(s)) = -softplus(s)
            else:
                adv = F.softplus(-s_fake).mean()       # -log sigmoid(s)
            loss = self.weight("rec") * rec + self.weight("adv") * adv
            logs["g_adv"] = adv.item()
        logs["g_rec"] = rec.item()
        return loss, logs

    def detector_loss(self, b: dict) -> tuple[Tensor, dict[str, float]]:
        """The detector's loss on one (micro-)batch, on the generator output of the same iteration."""
        clean, hole = b["clean"], b["hole"]
        if self._fakes:
            raw = self._fakes.pop(0)  # micro-batches come in the same order as in the G step
        else:
            with torch.no_grad():
                raw = self.raw("generator")(clean, hole)
        cfg = self.loss_cfg
        if cfg.framework == "adv":
            # standard discriminator (Eq. 2): real = ground truth, fake = generator output; one
            # forward over [fake; real] (no batch statistics in the detector; one call under DDP)
            s_fake, s_real = image_logit(self.module("detector")(torch.cat([raw, clean]))).chunk(2)
            loss = F.softplus(-s_real).mean() + F.softplus(s_fake).mean()
            return loss, {"d_adv": loss.item()}
        prob = DenseDetector.probability(self.module("detector")(raw))
        if cfg.detector_loss == "focal":
            loss = focal_loss(prob, hole, gamma=cfg.focal_gamma)  # Eq. 6, alpha = hole ratio
        elif cfg.detector_loss == "ce":
            loss = ce_loss(prob, hole)                             # Eq. 4
        else:
            loss = balanced_ce_loss(prob, hole)                    # Eq. 5
        return loss, {f"d_{cfg.detector_loss}": loss.item()}

    def train_step(self, batch: dict, step: int) -> dict[str, float]:
        # One G and one D step per iteration (SPEC section 5); D sees the same raw outputs G produced.
        self._fakes = []
        try:
            logs = self.optimize("G", self.generator_loss, batch)
            logs.update(self.optimize("D", self.detector_loss, batch))
        finally:
            self._fakes = []
        return logs

    # ------------------------------------------------------------ validation
    def _run(self, batch: dict) -> tuple[Tensor, Tensor, Tensor]:
        """(raw output, composited output, detector's V on raw), all at the batch's size."""
        clean, hole = batch["clean"], (batch["hole"] > 0.5).to(batch["clean"].dtype)
        raw = self.module("generator")(clean, hole)
        out = GDN.composite(clean, raw, hole)
        return raw, out, self.module("detector")(raw).softmax(dim=1)[:, 1:2]

    def val_step(self, batch: dict) -> dict[str, float]:
        """Composited-output L1 (%), PSNR, SSIM (whole image and hole region) and how well the
        detector's V separates holes from known pixels (per-image AUROC, mean V inside / outside)."""
        clean, hole = batch["clean"], (batch["hole"] > 0.5).float()
        raw, out, prob = self._run(batch)
        metrics = restoration_metrics(out, clean, hole)
        metrics["raw_psnr"] = restoration_metrics(raw, clean)["psnr"]
        metrics["det_auroc"] = auroc_per_image(prob, hole)
        metrics["v_hole"] = _masked_mean(prob, hole)
        metrics["v_valid"] = _masked_mean(prob, 1 - hole)
        return {k: float(v.double().nanmean()) for k, v in metrics.items()}

    def image_grid(self, batch: dict) -> Tensor:
        """Rows: input (holes white) / hole mask / composited output / detector heat map / ground truth."""
        clean, hole = batch["clean"], (batch["hole"] > 0.5).float()
        _, out, prob = self._run(batch)
        filled = clean * (1 - hole) + hole
        heat = heat_colour(prob)
        n = min(4, clean.shape[0])
        return make_grid([[filled[i], hole[i], out[i], heat[i], clean[i]] for i in range(n)])

    def export_spec(self) -> ExportSpec:
        # prefixes = the attribute names of models.gdn.GDN, so the export loads into GDN(cfg)
        return ExportSpec(model="gdn", config=to_dict(self.model_cfg),
                          modules={"generator": "generator", "detector": "detector"})
