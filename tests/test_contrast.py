"""Hierarchical contrastive detector: K-means, confidence, polarity, quadtree, no-corruption."""

import dataclasses

import pytest
import torch
from helpers import planted_features
import torch.nn.functional as F

from blindinpaint.config import ConfigError, from_dict
from blindinpaint.models.contrast import (ContrastConfig, HierarchicalDetector, _up2,
                                          match_polarity)
from blindinpaint.models.kmeans import cosine_to_centres, spherical_kmeans

CHANNELS = [128, 64, 32]  # coarse -> fine, D = 32


def planted(batch=2, base=8, channels=CHANNELS, seed=0, noise=0.05):
    """Features of images with one rectangular hole region per image.

    Returns (feats coarse -> fine, valid_px, gt_hole at the finest resolution 4*base).  Every pixel's
    feature is the region's vector plus small noise, at every scale.
    """
    full = base * 2 ** (len(channels) - 1)
    gt = torch.zeros(batch, 1, full, full)
    for b in range(batch):  # test data setup, not model code
        top, left = full // 8 * (b + 1), full // 4 + full // 8 * b
        gt[b, :, top:top + full // 2, left:left + full // 2] = 1
    feats = planted_features(gt, noise, seed, channels, base)
    valid_px = [torch.ones(batch, 1, base * 2 ** s, base * 2 ** s) for s in range(len(channels))]
    return feats, valid_px, gt


def make_detector(**overrides):
    torch.manual_seed(0)
    cfg = ContrastConfig(no_corruption="off", **overrides)
    return HierarchicalDetector(CHANNELS[: cfg.stages], cfg).eval()


def n_params(*modules):
    return sum(p.numel() for m in modules for p in m.parameters())


def test_parameter_counts_match_authors():
    det = HierarchicalDetector(CHANNELS, ContrastConfig())
    assert n_params(det.heads, det.maps) == 65_136
    assert n_params(det.cluster_classifier) == 4_225
    no_maps = HierarchicalDetector(CHANNELS, ContrastConfig(inter_stage=False))
    assert len(no_maps.maps) == 0 and n_params(no_maps.heads) < 65_136


def test_config_validation_and_schema():
    cfg = from_dict(ContrastConfig, {"stages": 2, "confidence": "paper", "clean_threshold": 0.3})
    assert cfg.stages == 2 and cfg.confidence == "paper"
    with pytest.raises(ConfigError, match="stages must be 1-4"):
        ContrastConfig(stages=5).validate()
    with pytest.raises(ConfigError, match="decided_fraction"):
        ContrastConfig(decided_fraction=0.0).validate()
    with pytest.raises(ConfigError, match="confidence"):
        from_dict(ContrastConfig, {"confidence": "typo"})
    with pytest.raises(ConfigError, match="hands over 2 feature maps"):
        HierarchicalDetector([64, 32], ContrastConfig(stages=3))


def test_kmeans_recovers_planted_clusters_of_different_sizes():
    g = torch.Generator().manual_seed(1)
    sizes = [(90, 10), (30, 70), (5, 200)]  # (cluster A, cluster B) per image
    rows, seg, truth = [], [], []
    for i, (na, nb) in enumerate(sizes):  # test data setup
        u, v = F.normalize(torch.randn(2, 16, generator=g), dim=1)
        pts = torch.cat([u.expand(na, -1), v.expand(nb, -1)]) + 0.15 * torch.randn(na + nb, 16, generator=g)
        rows.append(F.normalize(pts, dim=1))
        seg.append(torch.full((na + nb,), i))
        truth.append(torch.cat([torch.zeros(na), torch.ones(nb)]).bool())
    x, seg, truth = torch.cat(rows), torch.cat(seg), torch.cat(truth)
    pos = torch.cat([torch.arange(a + b) for a, b in sizes])
    km = spherical_kmeans(x, seg, pos, 3, torch.ones(len(x)))
    assign = cosine_to_centres(x, seg, km.centres).argmax(1).bool()
    for i in range(3):
        a, t = assign[seg == i], truth[seg == i]
        assert torch.equal(a, t) or torch.equal(a, ~t), f"image {i} not recovered"
    assert km.has_samples.all()
    assert torch.allclose(km.centres.norm(dim=-1), torch.ones(3, 2))


def test_kmeans_zero_weight_rows_never_move_centres():
    g = torch.Generator().manual_seed(2)
    x = F.normalize(torch.randn(60, 8, generator=g), dim=1)
    seg = torch.zeros(60, dtype=torch.long)
    pos = torch.arange(60)
    weight = (torch.arange(60) < 40).float()
    km1 = spherical_kmeans(x, seg, pos, 1, weight)
    x2 = x.clone()
    x2[40:] = F.normalize(torch.randn(20, 8, generator=g), dim=1)
    km2 = spherical_kmeans(x2, seg, pos, 1, weight)
    assert torch.allclose(km1.centres, km2.centres, atol=1e-6)


def test_kmeans_restarts_keep_lowest_cost():
    g = torch.Generator().manual_seed(3)
    x = F.normalize(torch.randn(4 * 50, 8, generator=g), dim=1)
    seg = torch.arange(4).repeat_interleave(50)
    pos = torch.arange(50).repeat(4)
    one = spherical_kmeans(x, seg, pos, 4, torch.ones(200), restarts=1)
    many = spherical_kmeans(x, seg, pos, 4, torch.ones(200), restarts=4)
    assert (many.cost <= one.cost + 1e-6).all()


def test_result_independent_of_batch_composition():
    det = make_detector()
    feats, valid_px, _ = planted(batch=3, seed=4)
    with torch.no_grad():
        emb = det.embed(feats)
        together = det.detect(emb, valid_px)
        alone = det.detect([e[1:2] for e in emb], [v[1:2] for v in valid_px])
    for s in range(3):
        assert torch.equal(together.hole[s][1:2], alone.hole[s])
        assert torch.equal(together.decided[s][1:2], alone.decided[s])
        assert torch.allclose(together.prob_hole[s][1:2], alone.prob_hole[s], atol=1e-5)
        assert torch.allclose(together.centres[s][1:2], alone.centres[s], atol=1e-5)


def test_confidence_is_softmax_of_cosine_over_tau():
    det = make_detector(stages=1)
    feats, valid_px, _ = planted(batch=2, channels=CHANNELS[:1], seed=5, noise=0.5)
    with torch.no_grad():
        out = det(feats, valid_px)
    e = out.embeddings[0]
    c = out.centres[0]
    batch = torch.arange(2)
    c_valid = c[batch, out.valid_centre[0]].view(2, -1, 1, 1)
    c_hole = c[batch, 1 - out.valid_centre[0]].view(2, -1, 1, 1)
    cos_v = (e * c_valid).sum(1, keepdim=True)
    cos_h = (e * c_hole).sum(1, keepdim=True)
    expected = torch.sigmoid((cos_h - cos_v) / 0.1)  # SPEC section 0: softmax of cos / tau
    assert torch.allclose(out.prob_hole[0], expected, atol=1e-5)
    assert torch.equal(out.hole[0], (expected > 0.5).float())
    assert out.prob_hole[0].min() < 0.4 and out.prob_hole[0].max() > 0.6  # not trivially constant


def test_polarity_swapping_previous_centres_flips_labels():
    g = torch.Generator().manual_seed(6)
    prev = F.normalize(torch.randn(4, 2, 64, generator=g), dim=-1)
    new = F.normalize(prev + 0.3 * torch.randn(4, 2, 64, generator=g), dim=-1)  # same order as prev
    prev_valid = torch.tensor([0, 1, 0, 1])
    assert torch.equal(match_polarity(prev, prev_valid, new), prev_valid)
    assert torch.equal(match_polarity(prev.flip(1), prev_valid, new), 1 - prev_valid)
    assert torch.equal(match_polarity(prev, prev_valid, new.flip(1)), 1 - prev_valid)


def test_polarity_swapping_s1_centres_flips_classifier_choice():
    det = make_detector()
    centres = F.normalize(torch.randn(5, 2, 64, generator=torch.Generator().manual_seed(7)), dim=-1)
    logits = det.classify_centres(centres)
    swapped = det.classify_centres(centres.flip(1))
    assert logits.shape == (5, 2)
    assert torch.equal(swapped.argmax(1), 1 - logits.argmax(1))


def aligned_embeddings(gt, seed, noise=0.1, stages=3, base=8):
    """Unit embeddings coarse -> fine with the same two region directions at every stage (what the
    inter-stage consistency and the representatives train towards)."""
    g = torch.Generator().manual_seed(seed)
    u, v = F.normalize(torch.randn(2, 64, generator=g), dim=1)
    out = []
    for s in range(stages):
        size = base * 2 ** s
        hole = F.adaptive_avg_pool2d(gt, size) > 0.5
        e = torch.where(hole, u.view(1, 64, 1, 1), v.view(1, 64, 1, 1))
        out.append(F.normalize(e + noise * torch.randn(gt.shape[0], 64, size, size, generator=g), dim=1))
    return out


def test_finer_stages_keep_labels_consistent_with_previous_polarity():
    """S2/S3 polarity follows S1's whatever order K-means gives its centres."""
    det = make_detector()
    _, valid_px, gt = planted(batch=3, seed=8)
    with torch.no_grad():
        out = det.detect(aligned_embeddings(gt, seed=8), valid_px)
    for s in (1, 2):
        batch = torch.arange(3)
        prev_valid = out.centres[s - 1][batch, out.valid_centre[s - 1]]
        new_valid = out.centres[s][batch, out.valid_centre[s]]
        assert ((prev_valid * new_valid).sum(-1) > 0.9).all()  # the valid centre stays the valid one
        coarse = _up2(out.hole[s - 1])
        assert (coarse == out.hole[s]).float().mean() > 0.9


def test_training_polarity_comes_from_ground_truth_inference_never_sees_it():
    det = make_detector()
    _, valid_px, gt = planted(batch=2, seed=9)
    emb = aligned_embeddings(gt, seed=9)
    det.train()
    with torch.no_grad():
        right = det.detect(emb, valid_px, gt)
        # the same embeddings with the opposite truth: polarity follows the truth, not the classifier
        flipped = det.detect(emb, valid_px, 1 - gt)
    for s in range(3):
        truth = F.adaptive_avg_pool2d(gt, right.hole[s].shape[-1]) > 0.5
        assert torch.equal(right.hole[s].bool(), truth)
        assert torch.equal(flipped.hole[s].bool(), ~truth)
    det.eval()
    with torch.no_grad():
        with_gt = det.detect(emb, valid_px, gt)
        without = det.detect(emb, valid_px)
    for a, b in zip(with_gt.hole, without.hole):
        assert torch.equal(a, b)
    assert torch.equal(with_gt.valid_centre[0], with_gt.classifier_logits.argmax(1))


def test_quadtree_decided_parents_fix_children_and_only_undecided_are_gathered():
    det = make_detector()
    feats, valid_px, _ = planted(batch=2, seed=10)
    with torch.no_grad():
        out = det(feats, valid_px)
    B = 2
    for s in (1, 2):
        parent_decided = _up2(out.decided[s - 1])
        assert 0.1 < parent_decided.float().mean() < 1.0
        # decided parents fix their 2x2 children: same label, same confidence
        assert torch.equal(out.hole[s][parent_decided], _up2(out.hole[s - 1])[parent_decided])
        assert torch.equal(out.prob_hole[s][parent_decided], _up2(out.prob_hole[s - 1])[parent_decided])
        # the finer stage gathers exactly the undecided pixels and nothing else
        assert torch.equal(out.uncertain_in[s], ~parent_decided)
        assert out.gathered_rows[s] == int((~parent_decided).sum())
        n = out.hole[s][0].numel()
        assert out.refined_fraction[s] == pytest.approx(out.gathered_rows[s] / (B * n))
        assert (out.decided[s] >= parent_decided).all()  # decided accumulates
    assert out.decided[2].all()  # the last stage decides everything
    assert out.gathered_rows[0] == B * out.hole[0][0].numel() and out.refined_fraction[0] == 1.0


def test_erosion_keeps_region_borders_uncertain():
    det2 = make_detector(stages=2)
    feats, valid_px, _ = planted(batch=2, channels=CHANNELS[:2], seed=11)
    with torch.no_grad():
        out = det2(feats, valid_px)
    hole, decided = out.hole[0].bool(), out.decided[0]
    # every decided pixel has only same-label pixels in its 3x3 neighbourhood
    any_hole = F.max_pool2d(hole.float(), 3, 1, 1) > 0.5
    all_hole = -F.max_pool2d(-hole.float(), 3, 1, 1) > 0.5
    assert (decided & hole & ~all_hole).sum() == 0
    assert (decided & ~hole & any_hole).sum() == 0
    border = any_hole & ~all_hole
    assert border.any() and not (decided & border).any()
    # without erosion, borders can be decided
    with torch.no_grad():
        no_erode = HierarchicalDetector(CHANNELS[:2], dataclasses.replace(det2.cfg, erode=0))
        no_erode.load_state_dict(det2.state_dict())
        raw = no_erode(feats, valid_px)
    assert raw.decided[0].sum() > decided.sum()


@pytest.mark.parametrize("confidence", ["code", "paper"])
def test_decided_fraction_of_each_side(confidence):
    det = make_detector(stages=2, erode=0, decided_fraction=0.5, confidence=confidence)
    feats, valid_px, _ = planted(batch=2, channels=CHANNELS[:2], seed=12, noise=0.5)
    with torch.no_grad():
        out = det(feats, valid_px)
    hole, decided, p = out.hole[0].bool(), out.decided[0], out.prob_hole[0]
    conf = torch.where(hole, p, 1 - p)  # P(assigned cluster)
    for b in range(2):
        for side in (hole[b], ~hole[b]):
            n = int(side.sum())
            assert int((decided[b] & side).sum()) == n // 2
            sure, unsure = conf[b][decided[b] & side], conf[b][~decided[b] & side]
            if confidence == "code":  # the most confident are decided
                assert sure.min() >= unsure.max()
            else:  # Eq. 5 as printed ranks the other way round
                assert sure.max() <= unsure.min()


def test_constant_features_yield_empty_mask():
    torch.manual_seed(0)
    det = HierarchicalDetector(CHANNELS, ContrastConfig()).eval()  # default no-corruption rule
    feats = [torch.randn(1, c, 1, 1).expand(2, c, 8 * 2 ** s, 8 * 2 ** s).contiguous()
             for s, c in enumerate(CHANNELS)]
    valid_px = [torch.ones(2, 1, 8 * 2 ** s, 8 * 2 ** s) for s in range(3)]
    with torch.no_grad():
        out = det(feats, valid_px)
    assert out.clean.all()
    assert out.clean_score.min() > 0.999
    for hole, prob in zip(out.hole, out.prob_hole):
        assert hole.sum() == 0 and prob.sum() == 0


def test_no_corruption_rule_off_and_threshold():
    feats, valid_px, _ = planted(batch=2, seed=13)
    det = make_detector()
    with torch.no_grad():
        out = det(feats, valid_px)
    assert not out.clean.any() and out.hole[2].sum() > 0
    strict = HierarchicalDetector(CHANNELS, dataclasses.replace(det.cfg, no_corruption="centre_cosine",
                                                                 clean_threshold=-1.0)).eval()
    strict.load_state_dict(det.state_dict())
    with torch.no_grad():
        everything_clean = strict(feats, valid_px)
    assert everything_clean.clean.all() and everything_clean.hole[0].sum() == 0


def test_padded_pixels_never_affect_centres_or_real_labels():
    det = make_detector()
    feats, valid_px, _ = planted(batch=2, seed=14)
    for s in range(3):  # the last 2 S1 columns (4 at S2, 8 at S3) are padding
        valid_px[s][..., -2 * 2 ** s:] = 0
    changed = [f.clone() for f in feats]
    for s, f in enumerate(changed):
        f[..., -2 * 2 ** s:] = 10 * torch.randn_like(f[..., -2 * 2 ** s:])
    with torch.no_grad():
        a = det(feats, valid_px)
        b = det(changed, valid_px)
    for s in range(3):
        real = valid_px[s] > 0.5
        assert torch.allclose(a.centres[s], b.centres[s], atol=1e-6)
        assert torch.equal(a.hole[s][real], b.hole[s][real])
        assert torch.allclose(a.prob_hole[s][real], b.prob_hole[s][real], atol=1e-6)
        assert torch.equal(a.decided[s][real], b.decided[s][real])
    n_real = int(valid_px[1].sum())
    assert a.refined_fraction[1] == pytest.approx(
        int((a.uncertain_in[1] & (valid_px[1] > 0.5)).sum()) / n_real)


def test_without_hierarchy_every_stage_clusters_all_pixels():
    det = make_detector(hierarchical=False)
    feats, valid_px, gt = planted(batch=2, seed=15)
    with torch.no_grad():
        out = det(feats, valid_px)
    for s in range(3):
        assert out.gathered_rows[s] == out.hole[s].numel()
        assert out.refined_fraction[s] == 1.0 and out.decided[s].all()
    assert torch.equal(out.hole[2], gt) or torch.equal(out.hole[2], 1 - gt)


@pytest.mark.parametrize("stages", [1, 2, 4])
def test_stage_counts_and_shapes(stages):
    channels = [256, 128, 64, 32][-stages:]
    torch.manual_seed(0)
    det = HierarchicalDetector(channels, ContrastConfig(stages=stages, no_corruption="off")).eval()
    feats = [torch.randn(2, c, 4 * 2 ** s, 4 * 2 ** s) for s, c in enumerate(channels)]
    valid_px = [torch.ones(2, 1, 4 * 2 ** s, 4 * 2 ** s) for s in range(stages)]
    with torch.no_grad():
        out = det(feats, valid_px)
    assert len(out.hole) == stages and out.uncertain_in[0] is None
    for s in range(stages):
        size = 4 * 2 ** s
        assert out.hole[s].shape == (2, 1, size, size) and out.hole[s].dtype == torch.float32
        assert out.embeddings[s].shape == (2, 64, size, size)
        assert torch.allclose(out.embeddings[s].norm(dim=1), torch.ones(2, size, size), atol=1e-5)
        assert out.centres[s].shape == (2, 2, 64)
    assert out.decided[-1].all() and out.classifier_logits.shape == (2, 2) and out.clean.shape == (2,)


def test_shape_errors_are_clear():
    det = make_detector()
    feats, valid_px, _ = planted(batch=1)
    with pytest.raises(ValueError, match="expected 3 feature maps"):
        det(feats[:2], valid_px[:2])
    with pytest.raises(ValueError, match="channels"):
        det([feats[0][:, :64]] + feats[1:], valid_px)
    with pytest.raises(ValueError, match="not twice"):
        det.detect([torch.zeros(1, 64, 8, 8), torch.zeros(1, 64, 15, 16), torch.zeros(1, 64, 30, 32)],
                   [torch.ones(1, 1, 8, 8), torch.ones(1, 1, 15, 16), torch.ones(1, 1, 30, 32)])


def test_nothing_left_to_refine_inherits_everything():
    det = make_detector(decided_fraction=1.0, erode=0)
    feats, valid_px, _ = planted(batch=2, seed=16)
    with torch.no_grad():
        out = det(feats, valid_px)
    assert out.gathered_rows[1:] == [0, 0] and out.refined_fraction[1:] == [0.0, 0.0]
    assert out.decided[0].all()
    for s in (1, 2):
        assert torch.equal(out.hole[s], _up2(out.hole[s - 1]))
        assert torch.equal(out.centres[s], out.centres[0])
        assert torch.equal(out.valid_centre[s], out.valid_centre[0])
