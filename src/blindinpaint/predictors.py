"""Model adaptors for evaluation: one ``predict`` call per model family, one output format.

Every model the harness measures is wrapped in a :class:`Predictor`::

    pred = predictor.predict(corrupted, given_hole)   # -> Prediction

``corrupted``: ``B x 3 x H x W`` float in [0, 1] (the API boundary range; adaptors
convert to the model's own range).  ``given_hole``: ``B x 1 x H x W`` {0, 1},
1 = hole, or None: the mask the restoration should use instead of the model's own
detection (mask-given mode, main Table 2 idea); a detector still reports its *own*
detection in :attr:`Prediction.hole`.

Adaptors: :class:`HCLPredictor` (``models/hcl.py``), :class:`VCNetPredictor`
(``models/vcnet.py``), :class:`GDNPredictor` (``models/gdn.py``, needs a mask).
:func:`load_predictor` builds the right one from a hub name, export folder, run
directory or checkpoint (``hub.load`` + ``models.registry.MODELS``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import UserError


@dataclass
class Prediction:
    """One batch of model outputs; every tensor ``B x C x H x W`` at the input size, on the CPU or device.

    hole:          ``B x 1 x H x W`` {0, 1}, 1 = hole: the model's own final detected mask
                   (None when the model does not detect, e.g. GDN).
    prob_hole:     ``B x 1 x H x W`` soft P(hole) in [0, 1] of the final detection (None if unavailable).
    stage_holes:   per detection stage, coarse -> fine, ``B x 1 x H x W`` {0, 1} upsampled (nearest)
                   to the input size; empty when the model has a single detection stage.
    stage_probs:   the matching soft P(hole) maps (same length as ``stage_holes``).
    rec:           ``B x 3 x H x W`` restoration in [0, 1], not composited (None if the model does
                   not restore).
    refined:       second-stage restoration in [0, 1] (HCL's refiner), None if the model has none.
    restore_hole:  ``B x 1 x H x W`` {0, 1}: the mask the restoration used (the given mask in
                   mask-given mode, else ``hole``); the composite copies known pixels back outside it.
    """

    hole: Optional[Tensor]
    prob_hole: Optional[Tensor]
    rec: Optional[Tensor]
    refined: Optional[Tensor] = None
    stage_holes: list[Tensor] = field(default_factory=list)
    stage_probs: list[Tensor] = field(default_factory=list)
    restore_hole: Optional[Tensor] = None

    @property
    def final(self) -> Optional[Tensor]:
        """The model's last restoration: ``refined`` if it has one, else ``rec``."""
        return self.refined if self.refined is not None else self.rec

    def mask_for_restoration(self) -> Optional[Tensor]:
        return self.restore_hole if self.restore_hole is not None else self.hole


@runtime_checkable
class Predictor(Protocol):
    """What the evaluation harness calls.

    ``name``: label in tables.  ``detects``: ``predict`` fills ``hole``.  ``needs_mask``:
    ``predict`` requires ``given_hole`` (mask-given inpainting).  ``device``: where inputs go.
    """

    name: str
    detects: bool
    needs_mask: bool
    device: torch.device

    def predict(self, corrupted: Tensor, given_hole: Optional[Tensor] = None) -> Prediction: ...


def _device_of(module: nn.Module) -> torch.device:
    param = next(module.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _to01(x: Optional[Tensor]) -> Optional[Tensor]:
    """[-1, 1] model output -> [0, 1] (clamped)."""
    return None if x is None else ((x + 1.0) * 0.5).clamp(0.0, 1.0)


def _binary(hole: Tensor) -> Tensor:
    return (hole > 0.5).float()


def upsample_stage(stage: Tensor, size: tuple[int, int], padded: tuple[int, int]) -> Tensor:
    """A per-scale map of a padded input -> ``B x 1 x H x W`` at the input size.

    ``stage``: ``B x 1 x h x w`` with ``h = H_pad / f``; ``padded`` = ``(H_pad, W_pad)``, the
    input size after padding to the model's multiple; ``size`` = ``(H, W)``.  Nearest
    upsampling by the integer factor ``f``, then the padding is cropped away, so each cell
    covers exactly its ``f x f`` pixels.
    """
    factor = padded[0] // stage.shape[-2]
    if factor * stage.shape[-2] != padded[0] or factor * stage.shape[-1] != padded[1]:
        raise ValueError(f"stage map {tuple(stage.shape[-2:])} does not divide the padded size {padded}")
    up = F.interpolate(stage.float(), scale_factor=factor, mode="nearest") if factor > 1 else stage.float()
    return up[..., :size[0], :size[1]]


class HCLPredictor:
    """HCL (``HCLNet``): blind detection + restoration; images to [-1, 1] inside (SPEC conventions).

    In mask-given mode the given mask goes to the decoder (``decoder_hole``) and the refiner;
    the detector still runs and its own masks are reported.
    """

    detects = True
    needs_mask = False

    def __init__(self, net: nn.Module, name: str = "hcl", refine: bool = True):
        self.net = net.eval()
        self.name = name
        self.refine = refine
        self.device = _device_of(net)

    @torch.no_grad()
    def predict(self, corrupted: Tensor, given_hole: Optional[Tensor] = None) -> Prediction:
        size = tuple(corrupted.shape[-2:])
        multiple = self.net.cfg.multiple()
        padded = tuple(-(-side // multiple) * multiple for side in size)
        given = None if given_hole is None else _binary(given_hole)
        out = self.net(corrupted * 2.0 - 1.0, decoder_hole=given, refine=self.refine)
        stage_holes = [_binary(upsample_stage(h, size, padded)) for h in out.detection.hole]
        stage_probs = [upsample_stage(p, size, padded).clamp(0, 1) for p in out.detection.prob_hole]
        hole = stage_holes[-1]  # the finest detected scale (what the decoder gets without a given mask)
        return Prediction(hole=hole, prob_hole=out.prob_hole.float().clamp(0, 1), rec=_to01(out.rec),
                          refined=_to01(out.refined), stage_holes=stage_holes, stage_probs=stage_probs,
                          restore_hole=given if given is not None else _binary(out.hole))


class VCNetPredictor:
    """VCNet (``models/vcnet.py``): MPN mask + RIN restoration, images in [-1, 1] inside.

    VCNet has no separate refiner: ``refined`` is None and ``rec`` is its restoration.
    In mask-given mode the mask goes to the PCN layers (``given_hole``).
    """

    detects = True
    needs_mask = False

    def __init__(self, net: nn.Module, name: str = "vcnet"):
        self.net = net.eval()
        self.name = name
        self.device = _device_of(net)

    @torch.no_grad()
    def predict(self, corrupted: Tensor, given_hole: Optional[Tensor] = None) -> Prediction:
        given = None if given_hole is None else _binary(given_hole)
        out = self.net(corrupted * 2.0 - 1.0, given_hole=given)
        hole = _binary(out.hole)
        return Prediction(hole=hole, prob_hole=out.prob_hole.float().clamp(0, 1), rec=_to01(out.rec),
                          restore_hole=given if given is not None else hole)


class GDNPredictor:
    """GDN (``models/gdn.py``): mask-given inpainting in [0, 1]; needs ``given_hole``.

    ``rec`` is the raw generator output (known pixels not copied back); the harness's
    composite equals :meth:`GDN.inpaint`.
    """

    detects = False
    needs_mask = True

    def __init__(self, net: nn.Module, name: str = "gdn"):
        self.net = net.eval()
        self.name = name
        self.device = _device_of(net)

    @torch.no_grad()
    def predict(self, corrupted: Tensor, given_hole: Optional[Tensor] = None) -> Prediction:
        if given_hole is None:
            raise UserError(f"{self.name} is a mask-given inpainting model: evaluate it with "
                            "--given-mask true or --given-mask MODEL (a detector's predicted mask)")
        given = _binary(given_hole)
        raw = self.net.generator(corrupted, given)
        return Prediction(hole=None, prob_hole=None, rec=raw.clamp(0, 1), restore_hole=given)


#: Task name (``hub.LoadedModel.task``) -> adaptor class.  The segmentation baseline
#: (``models/segbaseline.py``) is an HCLNet with BCE mask heads and the same output.
ADAPTORS = {"hcl": HCLPredictor, "seg": HCLPredictor, "vcnet": VCNetPredictor, "gdn": GDNPredictor}


def adaptor_for(module: nn.Module, name: str, task: Optional[str] = None):
    """The adaptor of ``module``: by ``task`` when given, else by the module's class."""
    if task is not None and task in ADAPTORS:
        return ADAPTORS[task](module, name=name)
    from .models.gdn import GDN
    from .models.hcl import HCLNet
    from .models.vcnet import VCNet

    for cls, adaptor in ((HCLNet, HCLPredictor), (VCNet, VCNetPredictor), (GDN, GDNPredictor)):
        if isinstance(module, cls):
            return adaptor(module, name=name)
    raise UserError(f"model '{name}' (task {task!r}, {type(module).__name__}) has no evaluation adaptor "
                    f"(known tasks: {', '.join(sorted(ADAPTORS))})")


def model_label(name_or_path: str) -> str:
    """A short table label: the name itself, or the export/run folder's name for a path."""
    path = Path(name_or_path)
    if not path.exists():
        return str(name_or_path)
    if path.is_file():  # a checkpoint file or an export's model.safetensors: name its folder
        folder = path.parent
        return folder.parent.name if folder.name == "checkpoints" else folder.name
    return path.resolve().name


def load_predictor(name_or_path: str, device: str | torch.device = "cpu", label: Optional[str] = None):
    """A :class:`Predictor` for a hub name, export folder, run directory or checkpoint file.

    Raises:
        UserError: unknown name / unreadable weights (from ``hub.load``), or no adaptor for its task.
    """
    from . import hub

    loaded = hub.load(name_or_path, device)
    module = hub.build_model(loaded, device)
    return adaptor_for(module, label or model_label(str(name_or_path)), loaded.task)


__all__ = ["Prediction", "Predictor", "HCLPredictor", "VCNetPredictor", "GDNPredictor", "ADAPTORS",
           "adaptor_for", "load_predictor", "model_label", "upsample_stage"]
