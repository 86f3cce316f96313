"""The learnt no-corruption head (``contrast.no_corruption: head``), clean items in the training data
(``data.clean_fraction``) and fine-tuning from a model's weights (``train.init_from``)."""

from __future__ import annotations

import dataclasses
import json
import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import make_hcl_export, planted_features, tiny_run_cfg, write_photos

from blindinpaint import hub
from blindinpaint.calibrate import CalibrationResult, write_calibration
from blindinpaint.config import ConfigError
from blindinpaint.data.dataset import CorruptionDataset, DataConfig
from blindinpaint.errors import UserError
from blindinpaint.models.contrast import (CleanHead, ContrastConfig, HierarchicalDetector, classifier_loss,
                                          clean_loss)
from blindinpaint.train import train
from blindinpaint.train.checkpoint import latest_checkpoint, load_checkpoint

CHANNELS = [128, 64, 32]


def head_detector(**overrides) -> HierarchicalDetector:
    torch.manual_seed(0)
    return HierarchicalDetector(CHANNELS, ContrastConfig(no_corruption="head", embed_dim=16, hidden_dim=16,
                                                         clean_head_width=8, **overrides))


def batch(with_hole: list[bool], seed: int = 0, base: int = 8):
    """Planted features of images with (True) or without (False) a rectangular hole region."""
    full = 4 * base
    gt = torch.zeros(len(with_hole), 1, full, full)
    for b, hole in enumerate(with_hole):
        if hole:
            gt[b, :, 4 + 2 * b:20 + 2 * b, 6:26] = 1
    feats = planted_features(gt, 0.1, seed, CHANNELS, base)
    valid = [torch.ones(len(with_hole), 1, base * 2 ** s, base * 2 ** s) for s in range(3)]
    return feats, valid, gt


def test_config_builds_the_head_only_for_its_rule():
    assert head_detector().clean_head is not None
    assert HierarchicalDetector(CHANNELS, ContrastConfig()).clean_head is None
    with pytest.raises(ConfigError, match="'centre_cosine', 'head' or 'off'"):
        ContrastConfig(no_corruption="learnt").validate()
    with pytest.raises(ConfigError, match="clean_head_width"):
        ContrastConfig(clean_head_width=0).validate()


def test_clean_score_is_the_heads_probability_and_drives_the_rule():
    det = head_detector().eval()
    feats, valid, _ = batch([True, False])
    with torch.no_grad():
        out = det(feats, valid)
        assert torch.allclose(out.clean_score, torch.sigmoid(out.clean_logit))
        det.clean_head.out.bias.fill_(50.0)  # P(clean) ~ 1 for every image
        everything = det(feats, valid)
        det.clean_head.out.bias.fill_(-50.0)
        nothing = det(feats, valid)
    assert everything.clean.all() and all(h.sum() == 0 for h in everything.hole)
    assert not nothing.clean.any() and nothing.hole[-1].sum() > 0
    det.cfg = dataclasses.replace(det.cfg, no_corruption="off")  # calibration: rule off, score kept
    det.clean_head.out.bias.data.fill_(50.0)
    with torch.no_grad():
        off = det(feats, valid)
    assert not off.clean.any() and off.clean_score.min() > 0.99


def test_head_ignores_padding():
    head = CleanHead(16, 8)
    emb = F.normalize(torch.randn(2, 16, 8, 8), dim=1)
    real = torch.ones(2, 1, 8, 8, dtype=torch.bool)
    real[..., -3:] = False
    changed = emb.clone()
    changed[..., -3:] = F.normalize(torch.randn(2, 16, 8, 3), dim=1)
    cos = torch.tensor([0.2, 0.9])
    assert torch.allclose(head(emb, real, cos), head(changed, real, cos), atol=1e-6)
    assert not torch.allclose(head(emb, real, cos), head(emb, real, torch.tensor([0.9, 0.2])))


@pytest.mark.parametrize("detach", [False, True])
def test_clean_loss_gradient_reaches_the_encoder_side_unless_detached(detach):
    det = head_detector(clean_head_detach=detach).train()
    feats, valid, gt = batch([True, False])
    feats = [f.requires_grad_(True) for f in feats]
    out = det(feats, valid, gt)
    clean_loss(out, gt).backward()
    assert det.clean_head.out.weight.grad.abs().sum() > 0
    reached = det.heads[0].fc2.weight.grad
    assert (reached is not None and reached.abs().sum() > 0) == (not detach)
    assert (feats[0].grad is not None and feats[0].grad.abs().sum() > 0) == (not detach)


def test_clean_loss_targets_images_without_holes():
    det = head_detector().train()
    feats, valid, gt = batch([True, False, True])
    out = det(feats, valid, gt)
    target = torch.tensor([0.0, 1.0, 0.0])
    expected = F.binary_cross_entropy_with_logits(out.clean_logit, target)
    assert torch.allclose(clean_loss(out, gt), expected)
    no_head = HierarchicalDetector(CHANNELS, ContrastConfig(embed_dim=16, hidden_dim=16)).train()
    with pytest.raises(ValueError, match="clean head"):
        clean_loss(no_head(feats, valid, gt), gt)


def test_head_learns_to_tell_clean_from_corrupted():
    det = head_detector(clean_head_detach=True).train()
    opt = torch.optim.Adam(det.clean_head.parameters(), lr=1e-2)
    losses = []
    for step in range(80):
        feats, valid, gt = batch([True, False, True, False], seed=step % 4)
        loss = clean_loss(det(feats, valid, gt), gt)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.4 * np.mean(losses[:5])
    det.eval()
    feats, valid, _ = batch([True, False, True, False], seed=9)
    with torch.no_grad():
        assert det(feats, valid).clean.tolist() == [False, True, False, True]


def test_classifier_loss_skips_clean_images():
    det = head_detector().train()
    feats, valid, gt = batch([True, False])
    both = classifier_loss(det(feats, valid, gt), gt)
    first = classifier_loss(det([f[:1] for f in feats], [v[:1] for v in valid], gt[:1]), gt[:1])
    assert torch.allclose(both, first, atol=1e-6)


# ----------------------------------------------------------------------------- data
def test_clean_fraction_leaves_training_items_uncorrupted(tmp_path):
    photos = write_photos(tmp_path / "photos", n=4, size=48)
    cfg = DataConfig(root=str(photos), patterns=["constant"], size=32, clean_fraction=0.5)
    data = CorruptionDataset(cfg, train=True, seed=0, length=40)
    items = [data[i] for i in range(40)]
    clean = [it for it in items if it["pattern"] == "none"]
    assert 8 <= len(clean) <= 32
    for it in clean:
        assert it["hole"].sum() == 0 and it["hole_ratio"] == 0.0 and it["bucket"] == "none"
        assert torch.equal(it["corrupted"], it["clean"])
    assert all(it["hole"].sum() > 0 for it in items if it["pattern"] != "none")
    evaluation = CorruptionDataset(cfg, train=False, seed=0)  # evaluation items are always corrupted
    assert all(evaluation[i]["pattern"] == "constant" for i in range(len(evaluation)))
    with pytest.raises(ConfigError, match="clean_fraction"):
        DataConfig(root=str(photos), clean_fraction=1.0).validate()


def test_gdn_rejects_clean_items(tmp_path):
    photos = write_photos(tmp_path / "photos")
    with pytest.raises(ConfigError, match="clean_fraction must be 0 for GDN"):
        tiny_run_cfg("gdn", "gdn_cpu", tmp_path / "run", photos, 1, "", ["data.clean_fraction=0.2"])


# ----------------------------------------------------------------------------- fine-tuning
HEAD_RUN = ["model.dim=8", "model.encoder_depths=[1,1,1]", "model.encoder_heads=[1,1,2]",
            "model.bottleneck_depth=1", "model.bottleneck_heads=2", "model.decoder_depths=[1,1,1]", "model.window=4",
            "model.refiner_width=8", "model.refiner_levels=2", "model.contrast.embed_dim=16",
            "model.contrast.hidden_dim=16", "model.contrast.tau=0.01", "loss.perceptual=none",
            "data.patterns=[constant]"]


def test_init_from_copies_weights_and_starts_new_head_fresh(tmp_path, caplog):
    source = make_hcl_export(tmp_path / "export", seed=3)
    photos = write_photos(tmp_path / "photos")
    cfg = tiny_run_cfg("hcl", "hcl_tiny", tmp_path / "run", photos, 2, "",
                       HEAD_RUN + ["model.contrast.no_corruption=head", "data.clean_fraction=0.5",
                                   f"train.init_from={source}", "phases=[{name: p, start: 0, lrs: {G: 0.0}, "
                                   "loss_weights: {adv: 0.0}, flags: {gt_masks: true, train_refiner: false}}]"])
    with caplog.at_level(logging.INFO, logger="blindinpaint.train"):
        assert train(cfg) == 0
    assert "start fresh: net.detector.clean_head" in caplog.text
    exported = hub.load(source).state_dict
    trained = load_checkpoint(latest_checkpoint(tmp_path / "run"))["modules"]["net"]
    for key, value in exported.items():  # lr 0 for G; the refiner (lr default) is not trained in phase 1
        assert torch.equal(trained[key], value), key
    assert any(k.startswith("detector.clean_head.") for k in trained)


def test_init_from_errors_are_clear(tmp_path):
    photos = write_photos(tmp_path / "photos")
    source = make_hcl_export(tmp_path / "export")
    wider = tiny_run_cfg("hcl", "hcl_tiny", tmp_path / "a", photos, 1, "",
                         [*HEAD_RUN, "model.dim=16", f"train.init_from={source}"])
    with pytest.raises(UserError, match="do not fit this model"):
        train(wider)
    missing = tiny_run_cfg("hcl", "hcl_tiny", tmp_path / "b", photos, 1, "",
                           [*HEAD_RUN, f"train.init_from={tmp_path / 'nothing'}"])
    with pytest.raises(UserError, match="no model"):
        train(missing)


def test_calibration_keeps_the_head_rule(tmp_path):
    folder = make_hcl_export(tmp_path / "export", no_corruption="head")
    result = CalibrationResult(threshold=0.7, max_fpr=0.02, n_clean=1, n_corrupted=1, fpr_before=0.5,
                               fpr_after=0.0, clean_declared=1.0, recall_loss=0.0, iou_before=0.5, iou_after=0.5,
                               clean_scores=torch.ones(1), corrupted_scores=torch.zeros(1))
    write_calibration(folder, result, {"split": "val"})
    contrast = json.loads((folder / "config.json").read_text())["model_config"]["contrast"]
    assert contrast["no_corruption"] == "head" and contrast["clean_threshold"] == 0.7
    model = hub.build_model(hub.load(folder))
    assert model.detector.clean_head is not None and model.detector.cfg.clean_threshold == 0.7
