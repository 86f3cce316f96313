"""No-corruption threshold calibration: the FPR bound holds by construction (and through the real
model rule), the threshold is the largest that meets it, --write round-trips through hub.load."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from blindinpaint import hub
from blindinpaint.calibrate import calibrate, choose_threshold, cleared, crop_boxes
from blindinpaint.cli import main
from blindinpaint.config import to_dict
from blindinpaint.models.registry import build_model, load_model_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TINY = ["model.dim=8", "model.encoder_depths=[1,1,1]", "model.decoder_depths=[1,1,1]",
        "model.bottleneck_depth=1", "model.refiner_width=0", "model.contrast.hidden_dim=16",
        "model.contrast.embed_dim=8"]


@pytest.fixture(scope="module")
def tiny_spec():
    torch.set_num_threads(1)
    return load_model_config(CONFIGS / "hcl_tiny.yaml", TINY)


@pytest.fixture(scope="module")
def tiny_net(tiny_spec):
    torch.manual_seed(0)
    return build_model(tiny_spec).eval()


@pytest.fixture()
def export_dir(tiny_spec, tiny_net, tmp_path):
    from safetensors.torch import save_file

    out = tmp_path / "export"
    out.mkdir()
    save_file({k: v.contiguous() for k, v in tiny_net.state_dict().items()}, str(out / hub.WEIGHTS_FILE))
    meta = {"format": hub.EXPORT_FORMAT, "version": 1, "task": "hcl", "model": "hcl",
            "model_config": to_dict(tiny_spec.config), "extra": {}, "dtype": "float32",
            "sha256": {hub.WEIGHTS_FILE: hub.sha256_file(out / hub.WEIGHTS_FILE)}}
    (out / hub.CONFIG_FILE).write_text(json.dumps(meta))
    return out


@pytest.fixture()
def photo_dir(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "photos"
    folder.mkdir()
    yy, xx = np.mgrid[0:40, 0:48]
    for i in range(3):
        base = np.stack([xx * (2 + i), yy * (3 - i) + 40, (xx + yy) * 2], -1)
        photo = np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(photo).save(folder / f"p{i}.png")
    return folder


def _images(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(0, 1, size)
    base = torch.stack([ramp.view(1, -1).expand(size, size), ramp.view(-1, 1).expand(size, size),
                        torch.full((size, size), 0.5)])
    return (base + 0.1 * torch.randn(n, 3, size, size, generator=g)).clamp(0, 1)


def test_choose_threshold_is_the_largest_meeting_the_bound():
    scores = torch.tensor([0.9, 0.5, 0.1, -0.3])
    has = torch.ones(4, dtype=torch.bool)
    flagged, pixels = torch.full((4,), 50.0), torch.full((4,), 100.0)  # FPR 0.5 with the rule off
    assert choose_threshold(scores, has, flagged, pixels, 0.6) == 1.0  # nothing to clear
    t = choose_threshold(scores, has, flagged, pixels, 0.25)  # clear the two most clean-looking
    assert t == pytest.approx(0.3)
    assert cleared(scores, has, t).tolist() == [True, True, False, False]
    assert choose_threshold(scores, has, flagged, pixels, 1e-4) == pytest.approx(-0.65)  # clear all
    # ties clear together: the strict '>' rule cannot separate equal scores
    tied = torch.tensor([0.5, 0.5, 0.1])
    t = choose_threshold(tied, torch.ones(3, dtype=torch.bool), torch.full((3,), 30.0), torch.full((3,), 100.0), 0.2)
    assert cleared(tied, torch.ones(3, dtype=torch.bool), t).tolist() == [True, True, False]
    # an image K-means could not cluster is never cleared, whatever T
    assert not cleared(torch.tensor([0.9]), torch.tensor([False]), -1.0).any()


def test_crop_boxes_are_squares_inside_the_photo():
    boxes = crop_boxes((40, 48), 5)
    assert len(boxes) == 5 and len(set(boxes)) == 5
    for x0, y0, x1, y1 in boxes:
        assert x0 >= 0 and y0 >= 0 and x1 <= 48 and y1 <= 40 and x1 - x0 == pytest.approx(y1 - y0)


def test_calibrate_meets_the_bound_through_the_model_rule(tiny_net):
    clean = _images(6)
    corrupted = _images(4, seed=1)
    hole = torch.zeros(4, 1, 32, 32)
    hole[:, :, 8:24, 4:20] = 1
    corrupted = torch.where(hole > 0, torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1), corrupted)
    saved = tiny_net.detector.cfg
    result = calibrate(tiny_net, clean, [(corrupted[:2], hole[:2]), {"corrupted": corrupted[2:], "hole": hole[2:]}],
                       max_fpr=0.1, batch_size=6)  # one batch: compared bit-for-bit with the rule-on pass below
    assert tiny_net.detector.cfg is saved  # the rule is restored after measuring
    assert result.n_clean == 6 and result.n_corrupted == 4
    assert result.fpr_before > 0.1 >= result.fpr_after and result.fpr_after <= result.fpr_before
    assert result.iou_after <= result.iou_before + 1e-9
    assert 0.0 <= result.recall_loss <= 1.0 and -1.0 <= result.threshold <= 1.0

    # the same number measured by the model itself with the rule switched on at T
    from dataclasses import replace

    tiny_net.detector.cfg = replace(saved, no_corruption="centre_cosine", clean_threshold=result.threshold)
    try:
        with torch.no_grad():
            det, _, flagged = tiny_net.detect(clean * 2 - 1)
    finally:
        tiny_net.detector.cfg = saved
    assert float(flagged.mean()) == pytest.approx(result.fpr_after, abs=1e-6)
    assert float(det.clean.float().mean()) == pytest.approx(result.clean_declared)
    # maximality: keeping the lowest-scoring cleared image flagged would break the bound
    lowest = result.clean_scores[det.clean].min()
    with torch.no_grad():
        _, _, off_flagged = tiny_net.detect(clean * 2 - 1)  # rule off (saved cfg: "off")
    per_image = off_flagged.flatten(1).mean(1)
    still = ~det.clean | (result.clean_scores == lowest)
    assert float((per_image * still).mean()) > 0.1


def test_cli_write_round_trips_through_hub_load(export_dir, photo_dir, capsys):
    rc = main(["calibrate", str(export_dir), "--photos", str(photo_dir), "--size", "32", "--patterns",
               "constant,noise", "--max-fpr", "0.1", "--batch-size", "8", "--write"])
    out = capsys.readouterr().out
    assert rc == 0 and "clean_threshold" in out and "recall loss" in out
    loaded = hub.load(export_dir)
    contrast = loaded.model_config["contrast"]
    record = loaded.extra["calibration"]
    assert contrast["no_corruption"] == "centre_cosine"
    assert contrast["clean_threshold"] == record["threshold"]
    assert record["n_photos"] == 3 and record["n_clean"] == 15 and record["n_corrupted"] == 12  # 3 x 2 x 2
    assert record["fpr_after"] <= 0.1 and record["split"] == "val"
    net = hub.build_model(loaded)
    assert net.detector.cfg.no_corruption == "centre_cosine"
    assert net.detector.cfg.clean_threshold == record["threshold"]


@pytest.mark.parametrize("extra, message", [
    (["--max-fpr", "1.5"], "--max-fpr must be in (0, 1)"),
    (["--patterns", "constant,bogus"], "unknown pattern 'bogus'"),
    (["--crops", "3"], "--crops must be 1 or 5"),
    (["--size", "32,8"], "every side must be at least 16"),
    (["--size", "32,big"], "comma list of sides"),
])
def test_bad_arguments_give_one_line_errors(export_dir, photo_dir, capsys, extra, message):
    rc = main(["calibrate", str(export_dir), "--photos", str(photo_dir), "--size", "32", *extra])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and message in err and "\n" not in err


def test_missing_photos_and_model_are_user_errors(export_dir, tmp_path, capsys):
    assert main(["calibrate", str(export_dir), "--photos", str(tmp_path / "nope")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["calibrate", str(tmp_path / "nope"), "--photos", str(tmp_path)]) == 2
    assert "no model" in capsys.readouterr().err


def test_several_sizes_pool_their_crops(export_dir, photo_dir, capsys):
    rc = main(["calibrate", str(export_dir), "--photos", str(photo_dir), "--size", "48,32", "--patterns",
               "constant,noise", "--max-fpr", "0.1", "--batch-size", "8", "--write"])
    assert rc == 0 and "sizes [32, 48]" in capsys.readouterr().out
    record = hub.load(export_dir).extra["calibration"]
    assert record["size"] == [32, 48]
    assert record["n_clean"] == 30 and record["n_corrupted"] == 24  # every crop and sample at both sizes
