"""Evaluation metrics: detection, restoration, FID/LPIPS plumbing (SPEC section 7).

All functions are batched and vectorised: they take ``B x ...`` tensors and
return ``B``-vectors of per-image values; the ``*Meter`` classes accumulate
them over a data set. Training validation and ``blindinpaint evaluate`` use
this module.

Conventions
-----------
- Masks ``B x 1 x H x W``, 1 = hole (corrupted), 0 = valid. ``pred_hole`` may be
  probabilities in [0, 1] or binary; a pixel is *predicted hole* when
  ``pred_hole > threshold`` (default 0.5).
- Images ``B x C x H x W`` in [0, 1] (data range 1).
- ``region`` (optional, ``B x 1 x H x W``, 1 = evaluate) restricts detection
  metrics to some pixels, e.g. to drop padding. It is not the "valid" class.

Detection
---------
Two conventions for the positive class (SPEC section 7):
``hole`` (our default: the hole region is positive) and ``valid`` (the HCL
authors': valid pixels are positive; it flatters small holes). Acc and BCE do
not depend on the convention. Two averages: ``per_image`` (the metric on each
image, then the mean: the authors' "samplewise") and ``pooled`` (confusion
counts and BCE sums added over all images, the metric computed once).

Edge cases, explicit: when an image (per-image mode) or the whole data set
(pooled mode) has no positive pixel in both prediction and truth, F1 and IoU
are **1** (a perfect answer: nothing to find, nothing claimed). An image with
an empty ``region`` counts as acc 1, BCE 0.

Restoration
-----------
PSNR (data range 1), SSIM (Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03,
reflect padding, SSIM map averaged over the image: the same as torchmetrics'
``structural_similarity_index_measure(..., data_range=1.0)``), and L1 (%) =
100 x mean absolute error; each on the full image and on the hole region
(``*/hole``: L1 and PSNR over hole pixels x channels, SSIM map averaged over
hole pixels). Hole metrics of an image without hole pixels are NaN and are
left out of the meters' means (``n_images/hole`` says how many counted).
Identical images give PSNR = inf.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from blindinpaint.models.vgg import torch_hub_checkpoints

__all__ = [
    "NA",
    "DETECTION_THRESHOLD",
    "confusion_counts",
    "detection_metrics",
    "DetectionMeter",
    "composite",
    "psnr",
    "ssim",
    "ssim_map",
    "l1_percent",
    "restoration_metrics",
    "RestorationMeter",
    "frechet_distance",
    "FIDMeter",
    "load_inception_extractor",
    "lpips_metric",
]

NA = "n/a (weights unavailable offline)"  # printed for LPIPS/FID when their weights are missing
DETECTION_THRESHOLD = 0.5
BCE_EPS = 1e-7  # probabilities clipped to [eps, 1 - eps] in the BCE metric

_CONVENTIONS = ("hole", "valid")


# --------------------------------------------------------------------------- detection


def _check_masks(pred_hole: torch.Tensor, true_hole: torch.Tensor, region: torch.Tensor | None) -> None:
    if pred_hole.shape != true_hole.shape or pred_hole.dim() != 4 or pred_hole.shape[1] != 1:
        raise ValueError(
            "pred_hole and true_hole must both be B x 1 x H x W, "
            f"got {tuple(pred_hole.shape)} and {tuple(true_hole.shape)}"
        )
    if region is not None and region.shape != true_hole.shape:
        raise ValueError(f"region must be B x 1 x H x W like the masks, got {tuple(region.shape)}")


def confusion_counts(
    pred_hole: torch.Tensor,
    true_hole: torch.Tensor,
    threshold: float = DETECTION_THRESHOLD,
    region: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Per-image confusion counts with the *hole* class positive.

    Args:
        pred_hole: ``B x 1 x H x W`` P(hole) in [0, 1] or binary.
        true_hole: ``B x 1 x H x W`` {0, 1}, 1 = hole.
        threshold: predicted hole where ``pred_hole > threshold``.
        region: optional ``B x 1 x H x W`` {0, 1}, 1 = pixel counted.

    Returns:
        ``{"tp", "fp", "fn", "tn"}``, each a float64 ``B``-vector. For the valid-positive
        convention swap roles: tp_valid = tn, fp_valid = fn, fn_valid = fp, tn_valid = tp.
    """
    _check_masks(pred_hole, true_hole, region)
    pred = (pred_hole > threshold).flatten(1)
    true = (true_hole > 0.5).flatten(1)
    weight = torch.ones_like(pred, dtype=torch.float64) if region is None else (region > 0.5).flatten(1).double()
    return {
        "tp": (weight * (pred & true)).sum(1),
        "fp": (weight * (pred & ~true)).sum(1),
        "fn": (weight * (~pred & true)).sum(1),
        "tn": (weight * (~pred & ~true)).sum(1),
    }


def _positive_counts(counts: dict[str, torch.Tensor], positive: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(tp, fp, fn) for the requested positive class from hole-positive counts."""
    if positive == "hole":
        return counts["tp"], counts["fp"], counts["fn"]
    if positive == "valid":
        return counts["tn"], counts["fn"], counts["fp"]
    raise ValueError(f"positive must be one of {_CONVENTIONS}, got {positive!r}")


def _f1(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor) -> torch.Tensor:
    denom = 2 * tp + fp + fn
    return torch.where(denom > 0, 2 * tp / denom.clamp_min(1e-12), torch.ones_like(denom))  # empty: perfect


def _iou(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor) -> torch.Tensor:
    denom = tp + fp + fn
    return torch.where(denom > 0, tp / denom.clamp_min(1e-12), torch.ones_like(denom))  # empty: perfect


def _bce_sums(
    pred_hole: torch.Tensor, true_hole: torch.Tensor, region: torch.Tensor | None, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image sum of pixel BCE and number of pixels counted (float64 ``B``-vectors)."""
    p = pred_hole.double().clamp(eps, 1.0 - eps).flatten(1)
    y = (true_hole > 0.5).double().flatten(1)
    bce = -(y * torch.log(p) + (1.0 - y) * torch.log1p(-p))
    weight = torch.ones_like(bce) if region is None else (region > 0.5).flatten(1).double()
    return (weight * bce).sum(1), weight.sum(1)


def detection_metrics(
    pred_hole: torch.Tensor,
    true_hole: torch.Tensor,
    threshold: float = DETECTION_THRESHOLD,
    region: torch.Tensor | None = None,
    positive: str = "hole",
    bce_eps: float = BCE_EPS,
) -> dict[str, torch.Tensor]:
    """Per-image Acc, F1, BCE, IoU (float64 ``B``-vectors) in one convention.

    Args:
        pred_hole, true_hole, threshold, region: see :func:`confusion_counts`.
        positive: ``"hole"`` (hole region positive) or ``"valid"`` (authors' convention).
        bce_eps: BCE uses ``pred_hole`` (unthresholded) clipped to [eps, 1 - eps].

    Returns:
        ``{"acc", "f1", "iou", "bce"}``; F1/IoU are 1 for an image with no positive pixel
        in prediction and truth.
    """
    counts = confusion_counts(pred_hole, true_hole, threshold, region)
    tp, fp, fn = _positive_counts(counts, positive)
    n = counts["tp"] + counts["fp"] + counts["fn"] + counts["tn"]
    bce_sum, bce_n = _bce_sums(pred_hole, true_hole, region, bce_eps)
    return {
        "acc": torch.where(n > 0, (counts["tp"] + counts["tn"]) / n.clamp_min(1), torch.ones_like(n)),
        "f1": _f1(tp, fp, fn),
        "iou": _iou(tp, fp, fn),
        "bce": bce_sum / bce_n.clamp_min(1),
    }


class DetectionMeter:
    """Accumulates detection metrics over many batches.

    ``update(pred_hole, true_hole, region=None)`` takes the same tensors as
    :func:`detection_metrics`. ``compute()`` returns floats under these keys::

        acc/per_image  acc/pooled  bce/per_image  bce/pooled
        acc  bce                     (aliases of the per-image means)
        hole/f1/per_image  hole/f1/pooled  hole/iou/per_image  hole/iou/pooled
        valid/f1/per_image valid/f1/pooled valid/iou/per_image valid/iou/pooled
        n_images

    ``per_image()`` returns the per-image values (``N``-vectors) under
    ``acc``, ``bce``, ``hole/f1``, ``hole/iou``, ``valid/f1``, ``valid/iou``
    in the order the images were seen (for per-image tables and breakdowns).
    """

    def __init__(self, threshold: float = DETECTION_THRESHOLD, bce_eps: float = BCE_EPS):
        self.threshold = threshold
        self.bce_eps = bce_eps
        self.reset()

    def reset(self) -> None:
        self._counts: list[dict[str, torch.Tensor]] = []
        self._bce: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __len__(self) -> int:
        return int(sum(c["tp"].numel() for c in self._counts))

    @torch.no_grad()
    def update(self, pred_hole: torch.Tensor, true_hole: torch.Tensor, region: torch.Tensor | None = None) -> None:
        counts = confusion_counts(pred_hole, true_hole, self.threshold, region)
        self._counts.append({k: v.cpu() for k, v in counts.items()})
        bce_sum, bce_n = _bce_sums(pred_hole, true_hole, region, self.bce_eps)
        self._bce.append((bce_sum.cpu(), bce_n.cpu()))

    def _all(self) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        if not self._counts:
            raise ValueError("DetectionMeter has no images: call update() first")
        counts = {k: torch.cat([c[k] for c in self._counts]) for k in ("tp", "fp", "fn", "tn")}
        bce_sum = torch.cat([b[0] for b in self._bce])
        bce_n = torch.cat([b[1] for b in self._bce])
        return counts, bce_sum, bce_n

    def per_image(self) -> dict[str, torch.Tensor]:
        counts, bce_sum, bce_n = self._all()
        n = counts["tp"] + counts["fp"] + counts["fn"] + counts["tn"]
        out = {
            "acc": torch.where(n > 0, (counts["tp"] + counts["tn"]) / n.clamp_min(1), torch.ones_like(n)),
            "bce": bce_sum / bce_n.clamp_min(1),
        }
        for positive in _CONVENTIONS:
            tp, fp, fn = _positive_counts(counts, positive)
            out[f"{positive}/f1"] = _f1(tp, fp, fn)
            out[f"{positive}/iou"] = _iou(tp, fp, fn)
        return out

    def compute(self) -> dict[str, float]:
        counts, bce_sum, bce_n = self._all()
        per_image = self.per_image()
        totals = {k: v.sum() for k, v in counts.items()}
        n_total = sum(totals.values())
        out: dict[str, float] = {
            "acc/per_image": per_image["acc"].mean().item(),
            "acc/pooled": ((totals["tp"] + totals["tn"]) / n_total).item() if n_total > 0 else 1.0,
            "bce/per_image": per_image["bce"].mean().item(),
            "bce/pooled": (bce_sum.sum() / bce_n.sum().clamp_min(1)).item(),
        }
        out["acc"], out["bce"] = out["acc/per_image"], out["bce/per_image"]
        for positive in _CONVENTIONS:
            tp, fp, fn = _positive_counts({k: v.reshape(1) for k, v in totals.items()}, positive)
            out[f"{positive}/f1/per_image"] = per_image[f"{positive}/f1"].mean().item()
            out[f"{positive}/f1/pooled"] = _f1(tp, fp, fn).item()
            out[f"{positive}/iou/per_image"] = per_image[f"{positive}/iou"].mean().item()
            out[f"{positive}/iou/pooled"] = _iou(tp, fp, fn).item()
        out["n_images"] = float(len(self))
        return out


# --------------------------------------------------------------------------- restoration


def composite(pred: torch.Tensor, corrupted: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
    """``pred`` inside holes, ``corrupted`` (the input) elsewhere: ``pred*hole + corrupted*(1-hole)``.

    ``pred``, ``corrupted``: ``B x C x H x W``; ``hole``: ``B x 1 x H x W`` in [0, 1], 1 = hole.
    """
    hole = hole.to(pred.dtype)
    return pred * hole + corrupted * (1.0 - hole)


def _hole_weights(hole: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if hole.dim() != 4 or hole.shape[1] != 1 or hole.shape[0] != like.shape[0] or hole.shape[2:] != like.shape[2:]:
        raise ValueError(f"hole must be B x 1 x H x W matching the images, got {tuple(hole.shape)}")
    return (hole > 0.5).to(like.dtype)


def _masked_mean(values: torch.Tensor, hole: torch.Tensor | None) -> torch.Tensor:
    """Per-image mean of ``values`` (``B x C x H x W``) over all elements or over hole pixels x channels.

    No hole pixel -> NaN.
    """
    if hole is None:
        return values.flatten(1).mean(1)
    weight = _hole_weights(hole, values).expand_as(values)
    total = weight.flatten(1).sum(1)
    mean = (values * weight).flatten(1).sum(1) / total.clamp_min(1)
    return torch.where(total > 0, mean, torch.full_like(mean, float("nan")))


def psnr(
    pred: torch.Tensor, target: torch.Tensor, hole: torch.Tensor | None = None, data_range: float = 1.0
) -> torch.Tensor:
    """Per-image PSNR in dB (``B``), over the whole image or over the hole pixels only."""
    mse = _masked_mean((pred - target) ** 2, hole)
    return 10.0 * torch.log10(data_range**2 / mse)


def l1_percent(pred: torch.Tensor, target: torch.Tensor, hole: torch.Tensor | None = None) -> torch.Tensor:
    """Per-image mean absolute error x 100 (``B``), images in [0, 1] (GDN Table 1's L1 %)."""
    return 100.0 * _masked_mean((pred - target).abs(), hole)


def _gaussian_window(size: int, sigma: float, channels: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    offsets = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(offsets**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def ssim_map(
    pred: torch.Tensor,
    target: torch.Tensor,
    data_range: float = 1.0,
    window: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """Per-pixel SSIM ``B x C x H x W`` (Wang et al. 2004), Gaussian window, reflect padding.

    Local statistics with a normalised Gaussian window, biased (population)
    variances clamped at 0; ``C1 = (k1 L)^2``, ``C2 = (k2 L)^2``.
    """
    if pred.shape != target.shape or pred.dim() != 4:
        raise ValueError(
            f"pred and target must both be B x C x H x W, got {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    pad = window // 2
    if min(pred.shape[-2:]) <= pad:
        raise ValueError(f"SSIM needs images larger than {pad} px per side, got {tuple(pred.shape[-2:])}")
    channels = pred.shape[1]
    kernel = _gaussian_window(window, sigma, channels, pred.dtype, pred.device)
    stack = torch.cat([pred, target, pred * pred, target * target, pred * target])  # 5B x C x H x W
    stack = F.pad(stack, (pad, pad, pad, pad), mode="reflect")
    mu_p, mu_t, e_pp, e_tt, e_pt = F.conv2d(stack, kernel, groups=channels).split(pred.shape[0])
    var_p = (e_pp - mu_p**2).clamp_min(0)
    var_t = (e_tt - mu_t**2).clamp_min(0)
    cov = e_pt - mu_p * mu_t
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    return ((2 * mu_p * mu_t + c1) * (2 * cov + c2)) / ((mu_p**2 + mu_t**2 + c1) * (var_p + var_t + c2))


def ssim(
    pred: torch.Tensor, target: torch.Tensor, hole: torch.Tensor | None = None, data_range: float = 1.0
) -> torch.Tensor:
    """Per-image SSIM (``B``): the SSIM map averaged over the image, or over its hole pixels."""
    return _masked_mean(ssim_map(pred, target, data_range), hole)


def restoration_metrics(
    pred: torch.Tensor, target: torch.Tensor, hole: torch.Tensor | None = None, data_range: float = 1.0
) -> dict[str, torch.Tensor]:
    """Per-image ``psnr``, ``ssim``, ``l1`` (``B``-vectors), plus ``psnr/hole``, ``ssim/hole``,
    ``l1/hole`` when ``hole`` (``B x 1 x H x W``, 1 = hole) is given.

    ``pred``, ``target``: ``B x C x H x W`` in [0, 1]. Computed without gradients.
    """
    with torch.no_grad():
        pred, target = pred.float(), target.float()
        sq_err = (pred - target) ** 2
        abs_err = (pred - target).abs()
        smap = ssim_map(pred, target, data_range)
        out = {
            "psnr": 10.0 * torch.log10(data_range**2 / _masked_mean(sq_err, None)),
            "ssim": _masked_mean(smap, None),
            "l1": 100.0 * _masked_mean(abs_err, None),
        }
        if hole is not None:
            out["psnr/hole"] = 10.0 * torch.log10(data_range**2 / _masked_mean(sq_err, hole))
            out["ssim/hole"] = _masked_mean(smap, hole)
            out["l1/hole"] = 100.0 * _masked_mean(abs_err, hole)
    return out


class RestorationMeter:
    """Accumulates :func:`restoration_metrics` over many batches.

    ``compute()`` returns the mean of each per-image value (keys ``psnr``,
    ``ssim``, ``l1`` and, when holes were given, ``psnr/hole``, ``ssim/hole``,
    ``l1/hole``; images without hole pixels are left out of the hole means),
    plus ``n_images`` and ``n_images/hole``. ``per_image()`` returns the
    ``N``-vectors (NaN for hole metrics of hole-free images).
    """

    def __init__(self, data_range: float = 1.0):
        self.data_range = data_range
        self.reset()

    def reset(self) -> None:
        self._values: dict[str, list[torch.Tensor]] = {}

    def __len__(self) -> int:
        return int(sum(v.numel() for v in self._values.get("psnr", [])))

    def update(self, pred: torch.Tensor, target: torch.Tensor, hole: torch.Tensor | None = None) -> None:
        values = restoration_metrics(pred, target, hole, self.data_range)
        if self._values and set(values) != set(self._values):
            raise ValueError("RestorationMeter.update: give `hole` for every batch or for none")
        for key, value in values.items():
            self._values.setdefault(key, []).append(value.detach().cpu().double())

    def per_image(self) -> dict[str, torch.Tensor]:
        if not self._values:
            raise ValueError("RestorationMeter has no images: call update() first")
        return {key: torch.cat(chunks) for key, chunks in self._values.items()}

    def compute(self) -> dict[str, float]:
        values = self.per_image()
        out = {key: value.nanmean().item() for key, value in values.items()}
        out["n_images"] = float(values["psnr"].numel())
        if "psnr/hole" in values:
            out["n_images/hole"] = float((~values["l1/hole"].isnan()).sum().item())
        return out


# --------------------------------------------------------------------------- FID / LPIPS


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """Fréchet distance of two Gaussians: ``|mu1-mu2|^2 + tr(S1 + S2 - 2 sqrt(S1 S2))``.

    ``scipy.linalg.sqrtm`` of the product; when it is singular or non-finite an
    ``eps`` multiple of the identity is added to both covariances; a small
    imaginary part (numerical error) is dropped, a large one is an error.
    """
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(f"shape mismatch: mu {mu1.shape}/{mu2.shape}, sigma {sigma1.shape}/{sigma2.shape}")
    diff = mu1 - mu2
    with warnings.catch_warnings():
        warnings.simplefilter("error", linalg.LinAlgWarning)  # singular product: retry with an offset
        try:
            covmean = linalg.sqrtm(sigma1 @ sigma2)
        except (linalg.LinAlgWarning, linalg.LinAlgError):
            covmean = np.full_like(sigma1, np.nan)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"sqrtm has a large imaginary component {np.abs(covmean.imag).max():.3g}")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


class _GaussianStats:
    """Streaming mean/covariance of feature vectors (float64 sums)."""

    def __init__(self) -> None:
        self.n = 0
        self.total: np.ndarray | None = None
        self.outer: np.ndarray | None = None

    def add(self, features: np.ndarray) -> None:
        if self.total is None:
            self.total = np.zeros(features.shape[1])
            self.outer = np.zeros((features.shape[1], features.shape[1]))
        self.n += features.shape[0]
        self.total += features.sum(0)
        self.outer += features.T @ features

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        if self.n < 2:
            raise ValueError(f"FID needs at least 2 images per set, got {self.n}")
        mu = self.total / self.n
        cov = (self.outer - self.n * np.outer(mu, mu)) / (self.n - 1)  # unbiased, like np.cov
        return mu, cov


class FIDMeter:
    """FID between real and generated images with any feature extractor.

    Args:
        feature_extractor: callable ``B x 3 x H x W`` images in [0, 1] -> ``B x D`` features
            (e.g. from :func:`load_inception_extractor`; tests pass a tiny one).

    ``update(images, real=True|False)``, then ``compute()`` -> float.
    """

    def __init__(self, feature_extractor: Callable[[torch.Tensor], torch.Tensor]):
        self.feature_extractor = feature_extractor
        self.reset()

    def reset(self) -> None:
        self._real = _GaussianStats()
        self._fake = _GaussianStats()

    @torch.no_grad()
    def update(self, images: torch.Tensor, real: bool) -> None:
        features = self.feature_extractor(images)
        features = features.reshape(features.shape[0], -1).double().cpu().numpy()
        (self._real if real else self._fake).add(features)

    def compute(self) -> float:
        mu1, sigma1 = self._real.mean_cov()
        mu2, sigma2 = self._fake.mean_cov()
        return frechet_distance(mu1, sigma1, mu2, sigma2)


_PYTORCH_FID_WEIGHTS = "pt_inception-2015-12-05-6726825d.pth"
_TORCH_FIDELITY_WEIGHTS = "weights-inception-2015-12-05-6726825d.pth"


def load_inception_extractor() -> tuple[Callable[[torch.Tensor], torch.Tensor] | None, str]:
    """The FID Inception-v3 (2048-d pool features) if an FID package and its weights are present.

    Never downloads: only weights already in the torch hub cache
    (``$TORCH_HOME/hub/checkpoints``) are used. Tries ``pytorch_fid`` (file
    ``pt_inception-2015-12-05-6726825d.pth``), then ``torch_fidelity`` (torchmetrics'
    FID backend, file ``weights-inception-2015-12-05-6726825d.pth``).

    Returns:
        ``(extractor, "")`` where ``extractor(images) -> B x 2048`` for images
        ``B x 3 x H x W`` in [0, 1], or ``(None, reason)``.
    """
    reasons = []
    cache = torch_hub_checkpoints()
    if importlib.util.find_spec("pytorch_fid") is None:
        reasons.append("pytorch_fid not installed")
    elif not (cache / _PYTORCH_FID_WEIGHTS).is_file():
        reasons.append(f"pytorch_fid weights {cache / _PYTORCH_FID_WEIGHTS} missing")
    else:
        try:
            from pytorch_fid.inception import InceptionV3

            # With the file in the hub cache, pytorch_fid's loader reads it instead of downloading.
            net = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]], resize_input=True, normalize_input=True).eval()

            def extract(images: torch.Tensor) -> torch.Tensor:
                with torch.no_grad():
                    return net(images.clamp(0, 1))[0].flatten(1)

            return extract, ""
        except Exception as exc:  # broken install, missing torchvision
            reasons.append(f"pytorch_fid failed: {exc}")
    if importlib.util.find_spec("torch_fidelity") is None:
        reasons.append("torch_fidelity not installed")
    elif not (cache / _TORCH_FIDELITY_WEIGHTS).is_file():
        reasons.append(f"torch_fidelity weights {cache / _TORCH_FIDELITY_WEIGHTS} missing")
    else:
        try:
            from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

            fidelity_net = FeatureExtractorInceptionV3(
                "inception-v3-compat", ["2048"], feature_extractor_weights_path=str(cache / _TORCH_FIDELITY_WEIGHTS)
            ).eval()

            def extract_uint8(images: torch.Tensor) -> torch.Tensor:
                with torch.no_grad():
                    as_uint8 = (images.clamp(0, 1) * 255).round().to(torch.uint8)  # its input convention
                    return fidelity_net(as_uint8)[0].reshape(images.shape[0], -1)

            return extract_uint8, ""
        except Exception as exc:
            reasons.append(f"torch_fidelity failed: {exc}")
    return None, "; ".join(reasons)


def lpips_metric(net: str = "alex") -> tuple[Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None, str]:
    """LPIPS (``lpips`` package) if it, torchvision and the ImageNet backbone weights are present.

    Never downloads: the backbone (``alexnet-owt-7be5be79.pth`` or ``vgg16-397923af.pth``)
    must already be in the torch hub cache.

    Returns:
        ``(metric, "")`` with ``metric(pred, target) -> B`` distances for images in [0, 1]
        ``B x 3 x H x W``, or ``(None, reason)``.
    """
    backbone_files = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}
    if net not in backbone_files:
        raise ValueError(f"LPIPS net must be one of {sorted(backbone_files)}, got {net!r}")
    for package in ("lpips", "torchvision"):
        if importlib.util.find_spec(package) is None:
            return None, f"package {package} not installed (optional extra [metrics])"
    file = torch_hub_checkpoints() / backbone_files[net]
    if not file.is_file():
        return None, f"LPIPS backbone weights {file} missing"
    try:
        import lpips

        model = lpips.LPIPS(net=net, verbose=False).eval()
    except Exception as exc:
        return None, f"lpips failed to load: {exc}"

    def metric(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model(pred * 2 - 1, target * 2 - 1).reshape(pred.shape[0])

    return metric, ""

