"""VCNet training: the blind-inpainting baseline of every HCL table (SPEC.md section 6).

Generator ("G" = mask prediction network + robust inpainting network) loss::

    2 * BCE(prob_hole, hole; pos_weight = #valid / #hole)       mask prediction
  + 1.4 * L1(rec, clean)                                          reconstruction, images in [-1, 1]
  + 1e-4 * |phi(rec) - phi(clean)|_1 at relu3_2                   perceptual (backbone from the config)
  + 1e-3 * (-D_global(rec) - D_patch(rec, hole))                  WGAN (global + mask-weighted patch critic)

Critics ("D", :mod:`blindinpaint.models.vcnet_critics`): WGAN-GP, penalty 10 per critic, on the
same generator outputs as the G step of the iteration.  Adam (0.5, 0.9), lr 1e-4.

Two phases (flag ``given_hole``): first the ground-truth mask is fed to the PCNs while the MPN
learns to predict it; later the PCNs get the MPN's own soft prediction, as at inference.
Weights are loss_weights ``mask``, ``l1``, ``perceptual``, ``adv`` (phases may override).

Images enter the model in [-1, 1] (dataset [0, 1] x 2 - 1); masks 1 = hole.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import Tensor

from ..config import to_dict
from ..errors import ConfigError
from ..losses import build_perceptual_loss, l1_loss, mask_bce_pos_weighted, wgan_d_loss, wgan_g_loss
from ..metrics import composite, detection_metrics, restoration_metrics
from ..models.vcnet import VCNet, VCNetConfig
from ..models.vcnet_critics import VCNetCritics
from .logging import make_grid
from .task import ExportSpec, Task


@dataclass
class VCNetLossConfig:
    """The ``loss:`` section of a VCNet config.

    perceptual_backbone: vgg19 (VCNet / SPEC; needs ImageNet weights at ``perceptual_path`` or
        the torch hub cache) | vgg16-hed (offline, non-standard edge-tuned VGG16) | none
    perceptual_layers:   feature layers of the perceptual term (VCNet: relu3_2)
    critic_channels:     width c of both critics (global c..4c, patch c..4c)
    gp_weight:           WGAN-GP penalty weight (10)
    """

    perceptual_backbone: str = "vgg16-hed"
    perceptual_path: Optional[str] = None
    perceptual_layers: list[str] = field(default_factory=lambda: ["relu3_2"])
    critic_channels: int = 64
    gp_weight: float = 10.0

    def validate(self) -> None:
        if self.critic_channels < 1:
            raise ConfigError(f"loss.critic_channels must be >= 1, got {self.critic_channels}")
        if self.gp_weight < 0:
            raise ConfigError(f"loss.gp_weight must be >= 0, got {self.gp_weight}")
        if not self.perceptual_layers:
            raise ConfigError("loss.perceptual_layers is empty (use perceptual_backbone: none to drop the term)")


def _input_gradient_penalty(scores: Tensor, mixed: Tensor, weight: float) -> Tensor:
    """``weight * mean_b (||d scores_b / d mixed_b||_2 - 1)^2`` (WGAN-GP), keeping the graph."""
    (grad,) = torch.autograd.grad(scores.sum(), mixed, create_graph=True)
    return weight * ((grad.flatten(1).norm(2, dim=1) - 1.0) ** 2).mean()


class VCNetTask(Task):
    """VCNet "G" (MPN + RIN) against two WGAN-GP critics "D" (see the module docstring)."""

    ModelConfig = VCNetConfig
    LossConfig = VCNetLossConfig
    OPTIMIZERS = ("G", "D")
    LOSS_WEIGHTS = {"mask": 2.0, "l1": 1.4, "perceptual": 1e-4, "adv": 1e-3}
    FLAGS = {"given_hole": False}   # True: PCNs get the ground-truth mask (VCNet's first phase)
    VAL_METRIC, VAL_MODE = "psnr", "max"

    def build(self) -> None:
        self.vcnet = VCNet(self.model_cfg).to(self.device)
        self.critics = VCNetCritics(self.loss_cfg.critic_channels).to(self.device)
        lc = self.loss_cfg
        self.perceptual = build_perceptual_loss(lc.perceptual_backbone, lc.perceptual_layers,
                                                path=lc.perceptual_path, input_range="-1,1")
        if self.perceptual is not None:
            self.perceptual.to(self.device)  # frozen, rebuilt from the config: not checkpointed
        self._fakes: list[Tensor] = []

    def modules(self):
        return {"vcnet": self.vcnet, "critics": self.critics}

    def optimizers(self, phase):
        return {"G": self.adam("G", self.vcnet.parameters()), "D": self.adam("D", self.critics.parameters())}

    @staticmethod
    def _inputs(b: dict) -> tuple[Tensor, Tensor, Tensor]:
        """(corrupted, clean) in [-1, 1] and the hole mask {0, 1}."""
        return b["corrupted"] * 2 - 1, b["clean"] * 2 - 1, (b["hole"] > 0.5).to(b["clean"].dtype)

    # ------------------------------------------------------------------ losses
    def generator_loss(self, b: dict) -> tuple[Tensor, dict[str, float]]:
        """MPN + RIN loss on one (micro-)batch; keeps the detached restoration for the critic step."""
        image, clean, hole = self._inputs(b)
        out = self.module("vcnet")(image, given_hole=hole if self.flag("given_hole") else None)
        mask = mask_bce_pos_weighted(out.prob_hole, hole)
        l1 = l1_loss(out.rec, clean)
        loss = self.weight("mask") * mask + self.weight("l1") * l1
        logs = {"mask_bce": mask.item(), "l1": l1.item()}
        if self.perceptual is not None and self.weight("perceptual") > 0:
            perc = self.perceptual(out.rec, clean)
            loss = loss + self.weight("perceptual") * perc
            logs["perceptual"] = perc.item()
        if self.weight("adv") > 0:
            self._fakes.append(out.rec.detach())
            score_global, score_patch = self.raw("critics")(out.rec, hole)  # pass-through: raw
            adv = wgan_g_loss(score_global) + wgan_g_loss(score_patch)
            loss = loss + self.weight("adv") * adv
            logs["g_adv"] = adv.item()
        return loss, logs

    def critic_loss(self, b: dict) -> tuple[Tensor, dict[str, float]]:
        """WGAN-GP loss of both critics: E[D(fake)] - E[D(real)] + 10 * GP, per critic, summed."""
        image, clean, hole = self._inputs(b)
        if self._fakes:
            fake = self._fakes.pop(0)  # micro-batches come in the same order as in the G step
        else:
            with torch.no_grad():
                fake = self.raw("vcnet")(image, given_hole=hole if self.flag("given_hole") else None).rec
        n = clean.shape[0]
        eps = torch.rand(n, 1, 1, 1, device=clean.device, dtype=clean.dtype)  # one weight per sample
        mixed = (eps * clean + (1 - eps) * fake).requires_grad_(True)
        # one forward over [real; fake; mixed] (the critics have no batch statistics)
        scores = self.module("critics")(torch.cat([clean, fake, mixed]), hole.repeat(3, 1, 1, 1))
        loss = clean.new_zeros(())
        logs: dict[str, float] = {}
        for name, s in zip(("global", "patch"), scores):
            real_s, fake_s, mixed_s = s.split(n)
            wasserstein = wgan_d_loss(real_s, fake_s)
            penalty = _input_gradient_penalty(mixed_s, mixed, self.loss_cfg.gp_weight)
            loss = loss + wasserstein + penalty
            logs[f"d_{name}"] = wasserstein.item()
            logs[f"gp_{name}"] = penalty.item()
        return loss, logs

    def train_step(self, batch: dict, step: int) -> dict[str, float]:
        self._fakes = []
        try:
            logs = self.optimize("G", self.generator_loss, batch)
            if self.weight("adv") > 0:
                logs.update(self.optimize("D", self.critic_loss, batch))
        finally:
            self._fakes = []
        return logs

    # ------------------------------------------------------------ validation
    def val_step(self, batch: dict) -> dict[str, float]:
        """Blind inference (predicted mask into the PCNs): mask Acc / F1 / IoU / BCE (hole class
        positive, per image) and PSNR / SSIM / L1 (%) of ``rec`` raw, plus PSNR of ``rec``
        composited with the *predicted* mask (known-looking pixels copied from the input)."""
        image, _, hole = self._inputs(batch)
        out = self.module("vcnet")(image)
        rec = ((out.rec + 1) / 2).clamp(0, 1)
        metrics = {f"mask_{k}": v for k, v in detection_metrics(out.prob_hole, hole).items()}
        metrics.update(restoration_metrics(rec, batch["clean"], hole))
        metrics["comp_psnr"] = restoration_metrics(composite(rec, batch["corrupted"], out.hole), batch["clean"])["psnr"]
        return {k: float(v.double().nanmean()) for k, v in metrics.items()}

    def image_grid(self, batch: dict) -> Tensor:
        """Rows: corrupted / true hole / predicted P(hole) / restoration / ground truth."""
        image, _, hole = self._inputs(batch)
        out = self.module("vcnet")(image)
        rec = (out.rec + 1) / 2
        n = min(4, image.shape[0])
        return make_grid([[batch["corrupted"][i], hole[i], out.prob_hole[i], rec[i], batch["clean"][i]]
                          for i in range(n)])

    def export_spec(self) -> ExportSpec:
        return ExportSpec(model="vcnet", config=to_dict(self.model_cfg), modules={"": "vcnet"})
