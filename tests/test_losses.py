"""Losses: GDN detector/reconstruction losses, WGAN-GP, perceptual, classifier BCEs."""

import math

import pytest
import torch
import torch.nn.functional as F

from blindinpaint import losses as L
from blindinpaint.models.vgg import build_backbone, layer_names


def _probs_and_mask(seed=0, shape=(3, 1, 8, 8)):
    g = torch.Generator().manual_seed(seed)
    prob = torch.rand(shape, generator=g)
    hole = (torch.rand(shape, generator=g) > 0.7).float()
    return prob, hole


# --------------------------------------------------------------------------- GDN detector losses


def test_focal_gamma0_alpha_half_is_half_ce():
    prob, hole = _probs_and_mask()
    focal = L.focal_loss(prob, hole, gamma=0.0, alpha=0.5)
    assert focal.item() == pytest.approx(0.5 * L.ce_loss(prob, hole).item(), rel=1e-6)
    assert L.ce_loss(prob, hole).item() == pytest.approx(F.binary_cross_entropy(prob, hole).item(), rel=1e-5)


def test_balanced_ce_and_focal_by_hand():
    hole = torch.tensor([1.0, 0.0, 0.0, 0.0]).reshape(1, 1, 2, 2)  # alpha = 0.25
    prob = torch.tensor([0.8, 0.1, 0.3, 0.6]).reshape(1, 1, 2, 2)
    a = 0.25
    bce = -((1 - a) * math.log(0.8) + a * (math.log(0.9) + math.log(0.7) + math.log(0.4))) / 4
    assert L.balanced_ce_loss(prob, hole).item() == pytest.approx(bce, rel=1e-6)
    focal = -(
        (1 - a) * 0.2**2 * math.log(0.8)
        + a * (0.1**2 * math.log(0.9) + 0.3**2 * math.log(0.7) + 0.6**2 * math.log(0.4))
    ) / 4
    assert L.focal_loss(prob, hole).item() == pytest.approx(focal, rel=1e-6)


def test_alpha_is_per_image_hole_ratio():
    hole = torch.zeros(2, 1, 4, 4)
    hole[0, :, :1] = 1  # ratio 0.25
    hole[1, :, :2] = 1  # ratio 0.5
    prob = torch.full_like(hole, 0.3)
    per_image = torch.stack([L.focal_loss(prob[i : i + 1], hole[i : i + 1]) for i in range(2)])
    assert L.focal_loss(prob, hole).item() == pytest.approx(per_image.mean().item(), rel=1e-6)
    assert L.hole_ratio(hole).flatten().tolist() == [0.25, 0.5]


def test_focal_down_weights_confident_pixels():
    hole = torch.ones(1, 1, 1, 1)
    confident, unsure = torch.full_like(hole, 0.95), torch.full_like(hole, 0.6)
    ratio_confident = L.focal_loss(confident, hole, alpha=0.5) / L.focal_loss(confident, hole, gamma=0, alpha=0.5)
    ratio_unsure = L.focal_loss(unsure, hole, alpha=0.5) / L.focal_loss(unsure, hole, gamma=0, alpha=0.5)
    assert ratio_confident.item() == pytest.approx(0.05**2)
    assert ratio_confident < ratio_unsure < 1


def test_probabilities_clipped():
    hole = torch.tensor([1.0, 0.0]).reshape(1, 1, 1, 2)
    prob = torch.tensor([0.0, 1.0]).reshape(1, 1, 1, 2)  # both completely wrong
    loss = L.ce_loss(prob, hole)
    assert torch.isfinite(loss) and loss.item() == pytest.approx(-math.log(1e-8), rel=1e-3)


# --------------------------------------------------------------------------- weighted reconstruction


def test_weight_map_ranges():
    v = torch.linspace(0, 1, 11)
    w_exp, w_lin = L.weight_map(v, "exp", 10.0), L.weight_map(v, "linear")
    assert w_exp[0].item() == pytest.approx(1.0) and w_exp[-1].item() == pytest.approx(10.0)
    assert w_lin[0].item() == 1.0 and w_lin[-1].item() == 2.0
    assert (w_exp.diff() > 0).all() and (w_lin.diff() > 0).all()
    assert w_exp.min() >= 1 - 1e-6 and w_exp.max() <= 10 + 1e-5
    with pytest.raises(ValueError, match="x > 1"):
        L.weight_map(v, "exp", 1.0)


def test_weighted_l1_hard_and_exp_values():
    pred = torch.zeros(1, 3, 2, 2)
    target = torch.ones(1, 3, 2, 2)
    hole = torch.tensor([1.0, 0.0, 0.0, 0.0]).reshape(1, 1, 2, 2)
    assert L.weighted_l1(pred, target, kind="hard", hole=hole).item() == pytest.approx((6 + 1 + 1 + 1) / 4)
    v = torch.tensor([1.0, 0.0, 0.5, 0.0]).reshape(1, 1, 2, 2)
    assert L.weighted_l1(pred, target, v).item() == pytest.approx((10 + 1 + 10**0.5 + 1) / 4, rel=1e-6)
    assert L.weighted_l1(pred, target, v, kind="linear").item() == pytest.approx((2 + 1 + 1.5 + 1) / 4)
    with pytest.raises(ValueError, match="hole mask"):
        L.weighted_l1(pred, target, kind="hard")


def test_weighted_l1_gradient_flows_through_detector_unless_detached():
    torch.manual_seed(0)
    detector = torch.nn.Conv2d(3, 1, 3, padding=1)
    target = torch.rand(2, 3, 8, 8)
    grads, values = {}, {}
    for detach in (False, True):
        pred = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
        prob_hole = torch.sigmoid(detector(pred))
        loss = L.weighted_l1(pred, target, prob_hole, detach=detach)
        detector.zero_grad()
        loss.backward()
        grads[detach], values[detach] = pred.grad.clone(), loss.item()
        assert (detector.weight.grad is None or detector.weight.grad.abs().sum() == 0) == detach
    assert values[True] == pytest.approx(values[False])
    assert not torch.allclose(grads[True], grads[False])


# --------------------------------------------------------------------------- WGAN-GP


def test_gradient_penalty_zero_for_unit_norm_linear_critic():
    g = torch.Generator().manual_seed(0)
    real, fake = torch.rand(4, 3, 5, 5, generator=g), torch.rand(4, 3, 5, 5, generator=g)
    w = torch.randn(75, generator=g)

    def critic_with(scale):
        weight = scale * w / w.norm()
        return lambda x: x.flatten(1) @ weight

    assert L.gradient_penalty(critic_with(1.0), real, fake).item() == pytest.approx(0.0, abs=1e-8)
    assert L.gradient_penalty(critic_with(3.0), real, fake).item() == pytest.approx(10 * (3 - 1) ** 2, rel=1e-5)


def test_gradient_penalty_trains_the_critic_and_is_seeded():
    critic = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    real, fake = torch.rand(3, 3, 2, 2), torch.rand(3, 3, 2, 2)
    a = L.gradient_penalty(critic, real, fake, generator=torch.Generator().manual_seed(5))
    b = L.gradient_penalty(critic, real, fake, generator=torch.Generator().manual_seed(5))
    assert a.item() == b.item() > 0
    a.backward()
    assert critic[1].weight.grad.abs().sum() > 0


def test_wgan_losses():
    real, fake = torch.tensor([2.0, 4.0]), torch.tensor([1.0, -1.0])
    assert L.wgan_d_loss(real, fake).item() == pytest.approx(0.0 - 3.0)
    assert L.wgan_g_loss(fake).item() == pytest.approx(0.0)


# --------------------------------------------------------------------------- perceptual


@pytest.fixture(scope="module")
def backbone():
    return build_backbone("vgg19", random_init=True, layers=["relu5_2"], seed=0)


def test_perceptual_zero_for_identical_and_no_backbone_gradient(backbone):
    loss_fn = L.PerceptualLoss(backbone, ["relu2_2", "relu3_2"], [1.0, 0.5])
    x = torch.rand(2, 3, 24, 24) * 2 - 1
    assert loss_fn(x, x.clone()).item() == 0.0
    pred = (x + 0.1 * torch.randn_like(x)).requires_grad_(True)
    target = x.clone().requires_grad_(True)
    loss = loss_fn(pred, target)
    assert loss.item() > 0
    loss.backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    assert target.grad is None  # target branch ran under no_grad
    assert all(p.grad is None and not p.requires_grad for p in backbone.parameters())


def test_perceptual_runs_only_to_deepest_layer(backbone):
    loss_fn = L.PerceptualLoss(backbone, ["relu2_2", "relu3_2"])
    assert len(loss_fn.backbone.features) == layer_names("vgg19").index("relu3_2") + 1 == 14
    assert loss_fn.backbone.features[0] is backbone.features[0]  # shared, not copied
    deeper_calls = []
    backbone.features[14].register_forward_hook(lambda *args: deeper_calls.append(1))
    loss_fn(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16))
    assert deeper_calls == []
    loss_fn.train()
    assert not loss_fn.backbone.training


def test_perceptual_input_range_conversion(backbone):
    x, y = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    in_01 = L.PerceptualLoss(backbone, ["relu1_2"], input_range="0,1")(x, y)
    in_pm1 = L.PerceptualLoss(backbone, ["relu1_2"], input_range="-1,1")(x * 2 - 1, y * 2 - 1)
    assert in_01.item() == pytest.approx(in_pm1.item(), rel=1e-5)
    assert L.build_perceptual_loss("none", ["relu2_2"]) is None
    built = L.build_perceptual_loss("vgg16-hed", ["relu2_2"], random_init=True)
    assert len(built.backbone.features) == layer_names("vgg16").index("relu2_2") + 1


# --------------------------------------------------------------------------- classifier / mask BCE


def test_centre_classifier_bce():
    logits = torch.tensor([[3.0, -2.0], [-1.0, 4.0]])
    valid_centre = torch.tensor([0, 1])
    expected = F.binary_cross_entropy_with_logits(logits, torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    assert L.centre_classifier_bce(logits, valid_centre).item() == pytest.approx(expected.item())
    assert L.centre_classifier_bce(logits, valid_centre) < L.centre_classifier_bce(logits, 1 - valid_centre)


def test_mask_bce_pos_weight_is_valid_over_hole_ratio():
    hole = torch.tensor([1.0, 0.0, 0.0, 0.0]).reshape(1, 1, 2, 2)  # ratio valid/hole = 3
    prob = torch.tensor([0.6, 0.2, 0.1, 0.3]).reshape(1, 1, 2, 2)
    expected = -(3 * math.log(0.6) + math.log(0.8) + math.log(0.9) + math.log(0.7)) / 4
    assert L.mask_bce_pos_weighted(prob, hole).item() == pytest.approx(expected, rel=1e-6)
    no_hole = torch.zeros(1, 1, 2, 2)
    plain = F.binary_cross_entropy(prob, no_hole).item()
    assert L.mask_bce_pos_weighted(prob, no_hole).item() == pytest.approx(plain, rel=1e-5)
