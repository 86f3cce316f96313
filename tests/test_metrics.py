"""Metrics against hand-computed values and torchmetrics' reference SSIM/PSNR."""

import math

import numpy as np
import pytest
import torch
from scipy import linalg

from blindinpaint import metrics as M


def _mask(rows):
    return torch.tensor(rows, dtype=torch.float32).reshape(1, 1, 3, 3)


# Five 3x3 cases, counts worked out by hand (hole-positive tp, fp, fn, tn):
#  0: truth = top row, pred = top-left two + centre   -> tp 2, fp 1, fn 1, tn 5
#  1: empty truth, empty pred                          -> tn 9
#  2: all-hole truth, all-hole pred                    -> tp 9
#  3: all-hole truth, empty pred                       -> fn 9
#  4: empty truth, one false alarm                     -> fp 1, tn 8
TRUTH = torch.cat([
    _mask([[1, 1, 1], [0, 0, 0], [0, 0, 0]]),
    _mask([[0] * 3] * 3),
    _mask([[1] * 3] * 3),
    _mask([[1] * 3] * 3),
    _mask([[0] * 3] * 3),
])
PRED = torch.cat([
    _mask([[0.9, 0.8, 0.2], [0.1, 0.7, 0.0], [0.0, 0.0, 0.3]]),
    _mask([[0.0] * 3] * 3),
    _mask([[1.0] * 3] * 3),
    _mask([[0.0] * 3] * 3),
    _mask([[0, 0, 0], [0, 1, 0], [0, 0, 0]]),
])
HOLE_F1 = [2 / 3, 1.0, 1.0, 0.0, 0.0]
HOLE_IOU = [0.5, 1.0, 1.0, 0.0, 0.0]
VALID_F1 = [5 / 6, 1.0, 1.0, 0.0, 16 / 17]  # valid positive: tp = tn, fp = fn, fn = fp
VALID_IOU = [5 / 7, 1.0, 1.0, 0.0, 8 / 9]
ACC = [7 / 9, 1.0, 1.0, 0.0, 8 / 9]


def test_confusion_counts_by_hand():
    counts = M.confusion_counts(PRED, TRUTH)
    assert counts["tp"].tolist() == [2, 0, 9, 0, 0]
    assert counts["fp"].tolist() == [1, 0, 0, 0, 1]
    assert counts["fn"].tolist() == [1, 0, 0, 9, 0]
    assert counts["tn"].tolist() == [5, 9, 0, 0, 8]


@pytest.mark.parametrize("positive, f1, iou", [("hole", HOLE_F1, HOLE_IOU), ("valid", VALID_F1, VALID_IOU)])
def test_per_image_detection_both_conventions(positive, f1, iou):
    out = M.detection_metrics(PRED, TRUTH, positive=positive)
    assert out["f1"].tolist() == pytest.approx(f1)
    assert out["iou"].tolist() == pytest.approx(iou)
    assert out["acc"].tolist() == pytest.approx(ACC)


def test_meter_per_image_and_pooled_over_two_batches():
    meter = M.DetectionMeter()
    meter.update(PRED[:2], TRUTH[:2])
    meter.update(PRED[2:], TRUTH[2:])
    out = meter.compute()
    assert out["n_images"] == 5
    assert out["hole/iou/per_image"] == pytest.approx(np.mean(HOLE_IOU))
    assert out["hole/f1/per_image"] == pytest.approx(np.mean(HOLE_F1))
    assert out["valid/iou/per_image"] == pytest.approx(np.mean(VALID_IOU))
    assert out["valid/f1/per_image"] == pytest.approx(np.mean(VALID_F1))
    assert out["acc/per_image"] == pytest.approx(np.mean(ACC)) == out["acc"]
    # pooled: tp 11, fp 2, fn 10, tn 22 (hole positive), 45 pixels
    assert out["acc/pooled"] == pytest.approx(33 / 45)
    assert out["hole/f1/pooled"] == pytest.approx(22 / 34)
    assert out["hole/iou/pooled"] == pytest.approx(11 / 23)
    assert out["valid/f1/pooled"] == pytest.approx(44 / 56)
    assert out["valid/iou/pooled"] == pytest.approx(22 / 34)
    assert meter.per_image()["hole/iou"].tolist() == pytest.approx(HOLE_IOU)


def test_pooled_differs_from_per_image_for_small_holes():
    # One image with a tiny hole missed entirely, one large hole found: per-image
    # hole IoU averages 0 and 1; pooled IoU is dominated by the large hole.
    truth = torch.zeros(2, 1, 10, 10)
    truth[0, :, 0, 0] = 1
    truth[1, :, :5] = 1
    pred = truth.clone()
    pred[0] = 0
    meter = M.DetectionMeter()
    meter.update(pred, truth)
    out = meter.compute()
    assert out["hole/iou/per_image"] == pytest.approx(0.5)
    assert out["hole/iou/pooled"] == pytest.approx(50 / 51)
    # The authors' valid-positive convention barely notices the missed hole.
    assert out["valid/iou/per_image"] == pytest.approx((99 / 100 + 1.0) / 2)


def test_empty_everything_is_perfect_pooled_too():
    zeros = torch.zeros(2, 1, 4, 4)
    meter = M.DetectionMeter()
    meter.update(zeros, zeros)
    out = meter.compute()
    assert out["hole/iou/pooled"] == 1.0 and out["hole/f1/pooled"] == 1.0
    assert out["hole/iou/per_image"] == 1.0 and out["valid/iou/pooled"] == 1.0


def test_bce_by_hand_and_clipping():
    truth = torch.tensor([1.0, 0.0]).reshape(1, 1, 1, 2)
    pred = torch.tensor([0.8, 0.3]).reshape(1, 1, 1, 2)
    bce = M.detection_metrics(pred, truth)["bce"]
    assert bce.item() == pytest.approx(-(math.log(0.8) + math.log(0.7)) / 2)
    # binary and wrong: clipped to eps, finite
    wrong = M.detection_metrics(1 - truth, truth)["bce"]
    assert wrong.item() == pytest.approx(-math.log(M.BCE_EPS), rel=1e-6)
    assert M.detection_metrics(truth, truth)["bce"].item() < 1e-6


def test_threshold_is_strict_and_configurable():
    truth = torch.ones(1, 1, 1, 2)
    pred = torch.tensor([0.5, 0.6]).reshape(1, 1, 1, 2)
    assert M.confusion_counts(pred, truth)["tp"].item() == 1  # 0.5 is not > 0.5
    assert M.confusion_counts(pred, truth, threshold=0.4)["tp"].item() == 2


def test_region_excludes_pixels():
    truth = torch.tensor([1.0, 0.0, 0.0, 1.0]).reshape(1, 1, 2, 2)
    pred = torch.tensor([1.0, 1.0, 0.0, 0.0]).reshape(1, 1, 2, 2)
    region = torch.tensor([1.0, 0.0, 1.0, 0.0]).reshape(1, 1, 2, 2)  # drop both mistakes
    out = M.detection_metrics(pred, truth, region=region)
    assert out["acc"].item() == 1.0 and out["iou"].item() == 1.0 and out["bce"].item() < 1e-6
    assert M.detection_metrics(pred, truth)["acc"].item() == 0.5


def test_shape_errors():
    with pytest.raises(ValueError, match="B x 1 x H x W"):
        M.detection_metrics(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match="no images"):
        M.DetectionMeter().compute()


# --------------------------------------------------------------------------- restoration


def _pair(seed=0, shape=(3, 3, 24, 30)):
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(shape, generator=g)
    pred = (target + 0.1 * torch.randn(shape, generator=g)).clamp(0, 1)
    hole = (torch.rand(shape[0], 1, *shape[2:], generator=g) > 0.6).float()
    return pred, target, hole


def test_ssim_and_psnr_match_torchmetrics():
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    pred, target, hole = _pair()
    ours = M.restoration_metrics(pred, target, hole)
    ref_ssim = structural_similarity_index_measure(pred, target, data_range=1.0, reduction="none")
    ref_psnr = peak_signal_noise_ratio(pred, target, data_range=1.0, reduction="none", dim=(1, 2, 3))
    torch.testing.assert_close(ours["ssim"], ref_ssim, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours["psnr"], ref_psnr, atol=1e-4, rtol=0)
    # hole region: torchmetrics' full SSIM map averaged over hole pixels; PSNR of the hole pixels alone
    _, ref_map = structural_similarity_index_measure(
        pred, target, data_range=1.0, reduction="none", return_full_image=True
    )
    h = hole.expand_as(pred).bool()
    for b in range(pred.shape[0]):
        assert ours["ssim/hole"][b].item() == pytest.approx(ref_map[b][h[b]].mean().item(), abs=1e-5)
        ref = peak_signal_noise_ratio(pred[b][h[b]], target[b][h[b]], data_range=1.0)
        assert ours["psnr/hole"][b].item() == pytest.approx(ref.item(), abs=1e-4)


def test_l1_percent_psnr_by_hand():
    target = torch.full((2, 3, 8, 8), 0.25)
    pred = torch.full((2, 3, 8, 8), 0.5)
    hole = torch.zeros(2, 1, 8, 8)
    hole[:, :, :4] = 1
    pred[:, :, 4:] = 0.25  # error only inside the hole
    out = M.restoration_metrics(pred, target, hole)
    assert out["l1"].tolist() == pytest.approx([12.5, 12.5])
    assert out["l1/hole"].tolist() == pytest.approx([25.0, 25.0])
    assert out["psnr/hole"][0].item() == pytest.approx(10 * math.log10(1 / 0.0625))
    assert out["psnr"][0].item() == pytest.approx(10 * math.log10(1 / 0.03125))
    assert out["ssim"][0].item() < 1 and M.ssim(target, target).tolist() == pytest.approx([1.0, 1.0])


def test_composite_and_restoration_meter_empty_hole():
    pred, target, hole = _pair(1, (2, 3, 16, 16))
    comp = M.composite(pred, target, hole)
    assert torch.equal(comp[hole.expand_as(pred) == 1], pred[hole.expand_as(pred) == 1])
    assert torch.equal(comp[hole.expand_as(pred) == 0], target[hole.expand_as(pred) == 0])
    hole[1] = 0  # second image: no hole
    meter = M.RestorationMeter()
    meter.update(pred, target, hole)
    meter.update(pred[:1], target[:1], hole[:1])
    per_image = meter.per_image()
    assert math.isnan(per_image["psnr/hole"][1].item())
    out = meter.compute()
    assert out["n_images"] == 3 and out["n_images/hole"] == 2
    assert out["psnr/hole"] == pytest.approx(per_image["psnr/hole"][0].item())
    assert out["l1"] == pytest.approx(per_image["l1"].mean().item())
    assert M.psnr(target, target).isinf().all()  # identical images


# --------------------------------------------------------------------------- FID / LPIPS


def _tiny_extractor(images):
    """Per-channel mean, std and max: 9 features per image."""
    flat = images.flatten(2)
    return torch.cat([flat.mean(2), flat.std(2), flat.amax(2)], dim=1)


def test_fid_meter_equals_direct_computation():
    g = torch.Generator().manual_seed(0)
    real = torch.rand(40, 3, 8, 8, generator=g)
    fake = torch.rand(40, 3, 8, 8, generator=g) ** 2
    meter = M.FIDMeter(_tiny_extractor)
    for chunk in real.split(16):
        meter.update(chunk, real=True)
    for chunk in fake.split(7):
        meter.update(chunk, real=False)
    f1, f2 = _tiny_extractor(real).double().numpy(), _tiny_extractor(fake).double().numpy()
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    direct = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real)
    assert meter.compute() == pytest.approx(direct, rel=1e-6)
    assert direct > 0.01


def test_frechet_distance_closed_forms():
    # 1-D: (m1 - m2)^2 + (s1 - s2)^2 for standard deviations s1, s2
    assert M.frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([3.0]), np.array([[1.0]])) == pytest.approx(
        4.0 + 1.0
    )
    cov = np.array([[2.0, 0.5], [0.5, 1.0]])
    assert M.frechet_distance(np.zeros(2), cov, np.zeros(2), cov) == pytest.approx(0.0, abs=1e-9)
    # singular covariances take the eps path and stay finite
    assert np.isfinite(M.frechet_distance(np.zeros(2), np.zeros((2, 2)), np.ones(2), np.zeros((2, 2))))


def test_fid_needs_two_images():
    meter = M.FIDMeter(_tiny_extractor)
    meter.update(torch.rand(1, 3, 4, 4), real=True)
    meter.update(torch.rand(3, 3, 4, 4), real=False)
    with pytest.raises(ValueError, match="at least 2"):
        meter.compute()


def test_offline_extras_report_a_reason():
    assert M.NA == "n/a (weights unavailable offline)"
    extractor, reason = M.load_inception_extractor()
    assert (extractor is None) == bool(reason)
    metric, reason = M.lpips_metric()
    assert (metric is None) == bool(reason)
