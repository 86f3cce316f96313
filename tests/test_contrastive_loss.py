"""Circle-form contrastive loss (HCL Eq. 2), its query / representative sampling, classifier BCE."""

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import planted_features

from blindinpaint.models.contrast import (ContrastConfig, HierarchicalDetector, circle_loss,
                                          classifier_loss, contrastive_loss, pool_ground_truth,
                                          representatives, stage_queries)

CHANNELS = [128, 64, 32]


def gt_box(batch=2, full=32):
    """B x 1 x full x full hole masks with a rectangle whose edges cut S1/S2 patches (mixed patches)."""
    gt = torch.zeros(batch, 1, full, full)
    gt[0, :, 5:19, 6:23] = 1
    gt[1, :, 13:30, 2:15] = 1
    return gt


def features_for(gt, noise, seed=0, channels=CHANNELS, base=8):
    return planted_features(gt, noise, seed, channels, base)


def ones_like_stages(batch, base=8, stages=3):
    return [torch.ones(batch, 1, base * 2 ** s, base * 2 ** s) for s in range(stages)]


def detector(**kw):
    torch.manual_seed(0)
    return HierarchicalDetector(CHANNELS, ContrastConfig(no_corruption="off", **kw))


def embeddings_from_labels(label_hole, separated, seed):
    """Unit embeddings B x 64 x H x W: one direction per label, the same at every stage
    (separated), or random (mixed)."""
    g = torch.Generator().manual_seed(seed)
    B, _, H, W = label_hole.shape
    if separated:
        u, v = F.normalize(torch.randn(2, 64, generator=torch.Generator().manual_seed(99)), dim=1)
        e = torch.where(label_hole.bool(), u.view(1, 64, 1, 1), v.view(1, 64, 1, 1))
        e = e + 0.05 * torch.randn(B, 64, H, W, generator=g)
    else:
        e = torch.randn(B, 64, H, W, generator=g)
    return F.normalize(e, dim=1)


def test_loss_lower_for_separated_than_mixed_embeddings():
    det = detector().train()  # training: S1 polarity (hence representative labels) from the truth
    cfg = det.cfg
    gt = gt_box()
    valid_px = ones_like_stages(2)
    losses = {}
    for separated in (True, False):
        emb = [embeddings_from_labels(F.adaptive_avg_pool2d(gt, 8 * 2 ** s) > 0.5, separated, s)
               for s in range(3)]
        out = det.detect(emb, valid_px, gt)
        total, per_stage = contrastive_loss(out, gt, cfg, torch.Generator().manual_seed(0))
        losses[separated] = (total, per_stage)
    sep_total, sep_stages = losses[True]
    mix_total, mix_stages = losses[False]
    assert sep_total < 0.1 * mix_total
    for a, b in zip(sep_stages, mix_stages):
        assert a < b
    assert len(sep_stages) == 3 and torch.isclose(sep_total, torch.stack(sep_stages).sum())


def test_circle_loss_matches_equation_2_by_hand():
    g = torch.Generator().manual_seed(1)
    q = F.normalize(torch.randn(1, 4, 8, generator=g), dim=-1)
    hole = torch.tensor([[True, True, False, False]])
    mask = torch.ones(1, 4, dtype=torch.bool)
    tau = 0.1
    per_image, has = circle_loss(q, hole, mask, q, hole, mask, tau, True)
    s = q[0] @ q[0].T
    expected = []
    for i in range(4):  # Eq. 2 written out, mean over queries (SPEC section 0)
        pos = [j for j in range(4) if j != i and hole[0, j] == hole[0, i]]
        neg = [j for j in range(4) if hole[0, j] != hole[0, i]]
        sp = sum(math.exp(-s[i, j] / tau) for j in pos)
        sn = sum(math.exp(s[i, j] / tau) for j in neg)
        expected.append(math.log(1 + sp * sn))
    assert has.item() and per_image.item() == pytest.approx(sum(expected) / 4, rel=1e-5)


def test_gradients_reach_heads_and_features_not_kmeans():
    det = detector().train()
    gt = gt_box()
    feats = [f.requires_grad_() for f in features_for(gt, noise=0.3)]
    out = det(feats, ones_like_stages(2), gt)
    total, _ = contrastive_loss(out, gt, det.cfg, torch.Generator().manual_seed(0))
    total.backward()
    for name, p in list(det.heads.named_parameters()) + list(det.maps.named_parameters()):
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    for f in feats:
        assert f.grad is not None and f.grad.abs().sum() > 0
    for s in range(3):
        assert not out.centres[s].requires_grad and not out.prob_hole[s].requires_grad
    assert all(p.grad is None for p in det.cluster_classifier.parameters())


def test_s1_sampling_never_picks_a_mixed_patch():
    det = detector()
    gt = gt_box()
    with torch.no_grad():
        out = det(features_for(gt, noise=0.3), ones_like_stages(2))
    frac, _, _ = pool_ground_truth(gt, (8, 8))
    idx, mask, hole = stage_queries(out, gt, 0, det.cfg, torch.Generator().manual_seed(3))
    picked_frac = frac.reshape(2, -1).gather(1, idx)[mask]
    assert ((picked_frac == 0) | (picked_frac == 1)).all()
    assert torch.equal(hole[mask], picked_frac == 1)  # labels from the ground truth
    mixed = ((frac > 0) & (frac < 1)).sum()
    assert mixed > 0 and int(mask.sum()) == 2 * 64 - int(mixed)  # every pure position, no mixed one


@pytest.mark.parametrize("stage", [1, 2])
def test_finer_queries_are_a_subset_of_coarser_uncertain_positions(stage):
    det = detector()
    gt = gt_box()
    with torch.no_grad():
        out = det(features_for(gt, noise=0.3), ones_like_stages(2))
    idx, mask, hole = stage_queries(out, gt, stage, det.cfg, torch.Generator().manual_seed(4))
    uncertain = out.uncertain_in[stage].reshape(2, -1).gather(1, idx)
    assert mask.any() and uncertain[mask].all()
    assert not out.uncertain_in[stage].all()  # the restriction is not vacuous
    _, pure_valid, pure_hole = pool_ground_truth(gt, out.hole[stage].shape[-2:])
    assert torch.equal(hole[mask], pure_hole.reshape(2, -1).gather(1, idx)[mask])
    # without sample selection, queries come from the whole map
    free = ContrastConfig(no_corruption="off", sample_selection=False)
    idx2, mask2, _ = stage_queries(out, gt, stage, free, torch.Generator().manual_seed(4))
    assert not out.uncertain_in[stage].reshape(2, -1).gather(1, idx2)[mask2].all()


def test_query_cap_seeded_and_padding_excluded():
    det = detector(max_queries=20)
    gt = gt_box()
    valid_px = ones_like_stages(2)
    for s in range(3):
        valid_px[s][..., -2 * 2 ** s:] = 0
    with torch.no_grad():
        out = det(features_for(gt, noise=0.3), valid_px)
    a = stage_queries(out, gt, 0, det.cfg, torch.Generator().manual_seed(5))
    b = stage_queries(out, gt, 0, det.cfg, torch.Generator().manual_seed(5))
    assert torch.equal(a[0], b[0]) and a[0].shape == (2, 20) and a[1].all()
    cols = a[0] % 8
    assert (cols < 6).all()  # padded columns 6, 7 never sampled
    la = contrastive_loss(out, gt, det.cfg, torch.Generator().manual_seed(5))[0]
    lb = contrastive_loss(out, gt, det.cfg, torch.Generator().manual_seed(5))[0]
    assert la == lb


def test_representatives_detached_decided_capped_and_cluster_labelled():
    det = detector(max_representatives=8)
    gt = gt_box()
    feats = [f.requires_grad_() for f in features_for(gt, noise=0.3)]
    out = det(feats, ones_like_stages(2))
    emb, hole, mask = representatives(out, 0, det.cfg)
    assert not emb.requires_grad
    assert mask.any()
    for label in (False, True):
        assert ((hole == label) & mask).sum(1).max() <= 8  # per class cap
    B, E, H, W = out.embeddings[0].shape
    flat = out.embeddings[0].detach().reshape(B, E, -1).transpose(1, 2)
    decided = out.decided[0].reshape(B, -1)
    labels = out.cluster_prob_hole[0].reshape(B, -1) > 0.5
    # every representative is a decided position, with that position's embedding and cluster label
    for b in range(B):
        for r in torch.nonzero(mask[b]).squeeze(1):
            match = torch.nonzero((flat[b] == emb[b, r]).all(1)).squeeze(1)
            assert len(match) >= 1 and decided[b, match].any()
            assert labels[b, match[0]] == hole[b, r]


def test_representatives_take_both_confidence_extremes():
    det = detector(max_representatives=4, edge_radius=0)  # 2 per subset: 1 top + 1 bottom
    gt = gt_box()
    with torch.no_grad():
        out = det(features_for(gt, noise=0.5), ones_like_stages(2))
    p = out.cluster_prob_hole[0].reshape(2, -1)
    conf = torch.where(p > 0.5, p, 1 - p)
    decided = out.decided[0].reshape(2, -1)
    label = p > 0.5
    emb, hole, mask = representatives(out, 0, det.cfg)
    flat = out.embeddings[0].reshape(2, 64, -1).transpose(1, 2)
    for b in range(2):
        for cls in (False, True):
            member = decided[b] & (label[b] == cls)
            if member.sum() < 2:
                continue
            chosen = [torch.nonzero((flat[b] == emb[b, r]).all(1)).squeeze(1)[0]
                      for r in torch.nonzero(mask[b] & (hole[b] == cls)).squeeze(1)]
            got = conf[b, torch.stack(chosen)]
            assert got.max() == conf[b][member].max() and got.min() == conf[b][member].min()


@pytest.mark.parametrize("fill", [0.0, 1.0])
def test_loss_finite_with_all_valid_or_all_hole_truth(fill):
    det = detector().train()
    gt = torch.full((2, 1, 32, 32), fill)
    feats = [f.requires_grad_() for f in features_for(gt_box(), noise=0.3)]
    out = det(feats, ones_like_stages(2), gt)
    total, per_stage = contrastive_loss(out, gt, det.cfg)
    assert torch.isfinite(total)
    assert per_stage[0] == 0  # S1 keys are queries only: no negatives, nothing to contrast
    total.backward()
    assert all(torch.isfinite(f.grad).all() for f in feats)
    bce = classifier_loss(out, gt)
    assert torch.isfinite(bce)


def test_classifier_loss_trains_the_classifier_to_the_true_polarity():
    det = detector().train()
    gt = gt_box()
    feats = features_for(gt, noise=0.1)
    opt = torch.optim.Adam(det.cluster_classifier.parameters(), lr=1e-2)
    first = None
    for _ in range(30):
        with torch.no_grad():
            emb = det.embed(feats)
        out = det.detect(emb, ones_like_stages(2), gt)
        loss = classifier_loss(out, gt)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first
    det.eval()
    with torch.no_grad():
        inferred = det(feats, ones_like_stages(2))
    # inference polarity (classifier only, no ground truth) is now right at S1
    _, pure_valid, pure_hole = pool_ground_truth(gt, (8, 8))
    assert (inferred.hole[0][pure_hole] == 1).all() and (inferred.hole[0][pure_valid] == 0).all()


def test_a_few_steps_reduce_the_contrastive_loss():
    det = detector().train()
    gt = gt_box()
    feats = features_for(gt, noise=1.0, seed=3)
    valid_px = ones_like_stages(2)
    opt = torch.optim.Adam(list(det.heads.parameters()) + list(det.maps.parameters()), lr=3e-3)
    history = []
    for step in range(15):
        total, _ = contrastive_loss(det(feats, valid_px, gt), gt, det.cfg, torch.Generator().manual_seed(step))
        opt.zero_grad()
        total.backward()
        opt.step()
        history.append(total.item())
    assert sum(history[-3:]) < 0.7 * sum(history[:3]), history


def test_circle_loss_fast_path_matches_masked_log_sum_exp():
    """The shift-free evaluation (one GEMM, class sums) equals the masked per-row log-sum-exp."""
    from blindinpaint.models.contrast import _circle_lse_masked, _circle_lse_shifted

    g = torch.Generator().manual_seed(2)
    B, Q, R = 3, 40, 30
    q_hole, r_hole = torch.rand(B, Q, generator=g) > 0.5, torch.rand(B, R, generator=g) > 0.5
    # tight clusters: a query's positives are as close to it as itself (its own pair must not count)
    centre = F.normalize(torch.randn(2, 16, generator=g), dim=-1)
    q = F.normalize(centre[q_hole.long()] + 0.01 * torch.randn(B, Q, 16, generator=g), dim=-1).requires_grad_()
    r = F.normalize(torch.randn(B, R, 16, generator=g), dim=-1)
    k_mask = torch.rand(B, Q + R, generator=g) > 0.2
    keys, k_hole = torch.cat([q, r], 1), torch.cat([q_hole, r_hole], 1)
    for tau in (0.1, 0.05):
        fast = _circle_lse_shifted(q, q_hole, keys, k_hole, k_mask, tau, 1.0 / tau, True)
        ref = _circle_lse_masked(q, q_hole, keys, k_hole, k_mask, tau, True)
        # compare where a positive and a negative exist (elsewhere both are masked out of the loss)
        n_same = (k_mask.unsqueeze(1) & (k_hole.unsqueeze(1) == q_hole.unsqueeze(2))).sum(-1)
        ok = n_same - k_mask[:, :Q].long() > 0  # a positive other than the query itself
        for a, b in zip(fast, ref):
            assert torch.allclose(a[ok], b[ok], rtol=1e-5, atol=1e-5)
        ga = torch.autograd.grad(sum(t[ok].sum() for t in fast), q)[0]
        gb = torch.autograd.grad(sum(t[ok].sum() for t in ref), q)[0]
        assert torch.allclose(ga, gb, atol=1e-5)
    # far from unit vectors the exponent range would not fit float32: the masked path is taken
    big = (q.detach() * 30).requires_grad_()
    loss, has = circle_loss(big, q_hole, k_mask[:, :Q], big, q_hole, k_mask[:, :Q], 0.1, True)
    assert torch.isfinite(loss).all() and has.all()
    loss.sum().backward()
    assert torch.isfinite(big.grad).all()


def test_projection_head_backward_on_few_rows_equals_dense_backward(monkeypatch):
    import blindinpaint.models.contrast as contrast

    torch.manual_seed(0)
    head = contrast.ProjectionHead(24, 32, 16)
    t = torch.randn(2, 8, 8, 24, requires_grad=True)
    rows = torch.tensor([3, 17, 64, 100])
    for sparse in (True, False):  # a loss on a few rows, and on every row
        weight = torch.zeros(128, 1)
        weight[rows if sparse else slice(None)] = torch.randn(len(rows) if sparse else 128, 1)
        params = [t] + list(head.parameters())
        out = head.forward_tokens(t)  # row-sparse backward
        got = torch.autograd.grad((out.reshape(128, 16) * weight).sum(), params)
        ref_out = head._rows(t)  # plain autograd
        want = torch.autograd.grad((ref_out.reshape(128, 16) * weight).sum(), params)
        assert torch.allclose(out, ref_out)
        for a, b in zip(got, want):
            assert torch.allclose(a, b, atol=1e-6), float((a - b).abs().max())
        if sparse:  # rows without a gradient get exactly none
            untouched = torch.ones(128, dtype=torch.bool)
            untouched[rows] = False
            assert torch.all(got[0].reshape(128, 24)[untouched] == 0)
    monkeypatch.setattr(contrast, "_HEAD_RUN_ROWS", 10)  # no-gradient runs of rows
    with torch.no_grad():
        assert torch.allclose(head.forward_tokens(t), head._rows(t), atol=1e-6)
