"""Evaluation harness: predictors, metrics plumbing, outputs, tables, CLI errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import linalg

from blindinpaint import cli
from blindinpaint import evaluate as E
from blindinpaint import metrics as M
from blindinpaint.errors import UserError
from blindinpaint.predictors import (GDNPredictor, HCLPredictor, Prediction, Predictor, VCNetPredictor,
                                     upsample_stage)

SIDE = 32
FILL = np.array([255, 0, 255], np.uint8)  # hole content of the hand-made bench: never in the ground truth


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one thread avoids thread hand-off costs on a shared, loaded machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _write_bench(folder: Path, seed: int = 0) -> list[dict]:
    """4 samples: patterns image/constant x buckets 0-30/30-60, rectangular holes of known size."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    holes = [(0, 0, 8, 16), (4, 4, 20, 28), (10, 2, 18, 12), (0, 8, 24, 32)]  # y0, x0, y1, x1
    specs = [("image", "0-30"), ("image", "30-60"), ("constant", "0-30"), ("constant", "30-60")]
    entries = []
    for k, ((pattern, bucket), (y0, x0, y1, x1)) in enumerate(zip(specs, holes)):
        gt = rng.integers(40, 200, size=(SIDE, SIDE, 3), dtype=np.uint8)
        hole = np.zeros((SIDE, SIDE), bool)
        hole[y0:y1, x0:x1] = True
        corrupted = gt.copy()
        corrupted[hole] = FILL
        sid = f"{k:04d}_{pattern}_{bucket}_0"
        Image.fromarray(corrupted).save(folder / f"{sid}_input.png")
        Image.fromarray(gt).save(folder / f"{sid}_gt.png")
        Image.fromarray(hole.astype(np.uint8) * 255).save(folder / f"{sid}_mask.png")
        entries.append({"id": sid, "pattern": pattern, "bucket": bucket, "hole_ratio": float(hole.mean()),
                        "source": f"photo{k}.png"})
    manifest = {"format": "blindinpaint-bench", "version": 1, "seed": seed, "size": SIDE,
                "patterns": ["image", "constant"], "buckets": ["0-30", "30-60"], "entries": entries}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return entries


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("eval") / "bench"
    _write_bench(folder)
    return folder


class TrueMaskDouble:
    """Finds the hole exactly (the FILL colour); restores with grey; two stages (coarse, fine)."""

    name, detects, needs_mask, device = "oracle", True, False, torch.device("cpu")

    def predict(self, corrupted, given_hole=None):
        fill = torch.tensor(FILL / 255.0, dtype=corrupted.dtype).view(1, 3, 1, 1)
        hole = ((corrupted - fill).abs().amax(1, keepdim=True) < 1e-3).float()
        coarse = torch.nn.functional.max_pool2d(hole, 4)
        stage1 = upsample_stage(coarse, tuple(hole.shape[-2:]), tuple(hole.shape[-2:]))
        used = hole if given_hole is None else given_hole
        rec = torch.where(hole > 0.5, torch.full_like(corrupted, 0.5), corrupted)
        return Prediction(hole=hole, prob_hole=hole * 0.9 + 0.05, rec=rec, stage_holes=[stage1, hole],
                          stage_probs=[stage1, hole], restore_hole=used)


class AllValidDouble:
    """Says nothing is corrupted and returns the input unchanged."""

    name, detects, needs_mask, device = "all-valid", True, False, torch.device("cpu")

    def predict(self, corrupted, given_hole=None):
        zeros = torch.zeros_like(corrupted[:, :1])
        return Prediction(hole=zeros, prob_hole=zeros, rec=corrupted.clone(), restore_hole=zeros)


class MaskGivenDouble:
    """A mask-given inpainter: fills the given hole with grey."""

    name, detects, needs_mask, device = "inpaint", False, True, torch.device("cpu")

    def predict(self, corrupted, given_hole=None):
        assert given_hole is not None
        rec = torch.full_like(corrupted, 0.5)
        return Prediction(hole=None, prob_hole=None, rec=rec, restore_hole=given_hole)


def tiny_features(images: torch.Tensor) -> torch.Tensor:
    """A 2-d 'feature extractor': mean red and green per image."""
    return images.mean(dim=(2, 3))[:, :2]


def _no_weights(monkeypatch):
    monkeypatch.setattr(M, "lpips_metric", lambda *a, **k: (None, "LPIPS backbone weights missing"))
    monkeypatch.setattr(M, "load_inception_extractor", lambda *a, **k: (None, "Inception weights missing"))


def _record(records, **where):
    found = [r for r in records if all(r[k] == v for k, v in where.items())]
    assert len(found) == 1, (where, len(found))
    return found[0]["metrics"]


# ----------------------------------------------------------------------------- detection properties
def test_true_mask_gives_perfect_iou_and_all_valid_gives_valid_fraction(bench, monkeypatch):
    _no_weights(monkeypatch)
    entries = json.loads((bench / "manifest.json").read_text())["entries"]
    results = E.evaluate([TrueMaskDouble(), AllValidDouble()], [bench], None, progress=False)
    det = results["detection"]
    oracle = _record(det, method="oracle", pattern="all", bucket="all", part="final")
    for key in ("hole/iou/per_image", "valid/iou/per_image", "hole/iou/pooled", "valid/iou/pooled",
                "hole/f1/per_image", "valid/f1/pooled", "acc/per_image"):
        assert oracle[key] == pytest.approx(1.0)
    # the coarse stage over-covers the rectangles that do not align with its 4 x 4 cells
    coarse = _record(det, method="oracle", pattern="all", bucket="all", part="S1")
    assert coarse["hole/iou/per_image"] < 1.0
    assert _record(det, method="oracle", pattern="all", bucket="all", part="S2")["hole/iou/per_image"] == 1.0

    blind = _record(det, method="all-valid", pattern="all", bucket="all", part="final")
    valid_fraction = np.array([1 - e["hole_ratio"] for e in entries])
    assert blind["hole/iou/per_image"] == 0.0
    assert blind["valid/iou/per_image"] == pytest.approx(valid_fraction.mean())
    assert blind["acc/per_image"] == pytest.approx(valid_fraction.mean())
    assert blind["valid/iou/pooled"] == pytest.approx(valid_fraction.mean())  # equal image sizes
    # a group of one image: exactly its valid fraction
    one = _record(det, method="all-valid", pattern="constant", bucket="30-60", part="final")
    assert one["valid/iou/per_image"] == pytest.approx(valid_fraction[3])
    assert one["n_images"] == 1


def test_restoration_composite_and_mask_given_mode(bench, monkeypatch):
    _no_weights(monkeypatch)
    with pytest.raises(UserError, match="mask-given"):
        E.evaluate([MaskGivenDouble()], [bench], None, progress=False)
    results = E.evaluate([MaskGivenDouble(), AllValidDouble()], [bench], None, given_mask="true", progress=False)
    assert results["methods"] == ["inpaint + true mask", "all-valid + true mask"]
    rest = results["restoration"]
    # composite keeps the known pixels: with the true mask, the error lives in the hole only
    comp = _record(rest, method="inpaint + true mask", pattern="all", bucket="all", part="composite")
    raw = _record(rest, method="inpaint + true mask", pattern="all", bucket="all", part="rec")
    assert comp["psnr"] > raw["psnr"]
    assert comp["l1/hole"] == pytest.approx(raw["l1/hole"])
    # an identity model fed the true mask: the composite copies the input back, error only in holes
    ident = _record(rest, method="all-valid + true mask", pattern="all", bucket="all", part="composite")
    assert np.isfinite(ident["psnr"]) and ident["l1"] > 0
    # a predicted mask from another model: the all-valid detector gives an empty mask -> nothing restored
    results = E.evaluate([MaskGivenDouble()], [bench], None, given_mask=AllValidDouble(), progress=False)
    comp = _record(results["restoration"], pattern="all", bucket="all", part="composite")
    assert comp["psnr"] == float("inf") or comp["psnr"] == "inf" or comp["l1"] > 0
    assert results["detection"] == []  # the inpainter does not detect


# ----------------------------------------------------------------------------- FID / LPIPS plumbing
def test_lpips_fid_are_na_without_weights(bench, tmp_path, monkeypatch):
    _no_weights(monkeypatch)
    out = tmp_path / "out"
    results = E.evaluate([TrueMaskDouble()], [bench], out, progress=False)
    for rec in results["restoration"]:
        assert rec["metrics"]["lpips"] == M.NA
        assert rec["metrics"]["fid"] == M.NA
    tables = (out / "tables.md").read_text()
    assert "LPIPS ↓" in tables and "FID ↓" in tables  # rows kept, not dropped
    for line in tables.splitlines():
        if line.startswith("| FID") or line.startswith("| LPIPS"):
            assert M.NA in line
    assert "n/a" in tables and M.NA in (out / "results.csv").read_text()


def test_fid_with_tiny_extractor_equals_direct_computation(bench, monkeypatch):
    _no_weights(monkeypatch)
    results = E.evaluate([TrueMaskDouble()], [bench], None, fid_extractor=tiny_features, progress=False)
    fid = _record(results["restoration"], pattern="all", bucket="all", part="composite")["fid"]

    # direct: features of ground truth and of the composite restoration of all 4 images
    from blindinpaint.data.bench import load_bench

    samples = load_bench(bench)
    gt = torch.stack([s.tensors()["clean"] for s in samples])
    corrupted = torch.stack([s.tensors()["corrupted"] for s in samples])
    pred = TrueMaskDouble().predict(corrupted)
    restored = M.composite(pred.rec, corrupted, pred.hole)
    real, fake = tiny_features(gt).double().numpy(), tiny_features(restored).double().numpy()
    mu1, mu2 = real.mean(0), fake.mean(0)
    s1, s2 = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    direct = float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))
    assert fid == pytest.approx(direct, rel=1e-6, abs=1e-9)
    # a group of one image has no covariance: labelled, not dropped
    one = _record(results["restoration"], pattern="image", bucket="0-30", part="composite")
    assert one["fid"] == E.FEW_IMAGES
    assert one["lpips"] == M.NA


# ----------------------------------------------------------------------------- outputs
def test_outputs_csv_json_agree_tables_render_and_deterministic(bench, tmp_path, monkeypatch):
    _no_weights(monkeypatch)
    clean = tmp_path / "clean"
    clean.mkdir()
    rng = np.random.default_rng(1)
    for k in range(2):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(clean / f"p{k}.png")
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        E.evaluate([TrueMaskDouble(), AllValidDouble()], [bench], out, clean=[clean], clean_size=SIDE,
                   batch_size=3, progress=False)
        runs.append(out)
    a, b = runs
    for file in ("results.json", "results.csv", "per_image.csv", "tables.md"):
        assert (a / file).read_bytes() == (b / file).read_bytes(), file
    for file in ("grid_image.png", "grid_constant.png", "bars_image.png", "bars_constant.png"):
        assert (a / file).is_file(), file
    grid = Image.open(a / "grid_image.png")
    assert grid.width > 6 * 128 and grid.height > 2 * 128  # 2 rows; input, truth, masks, restorations, gt

    results = json.loads((a / "results.json").read_text())
    assert results["format"] == E.FORMAT
    # CSV and JSON agree, number for number
    with open(a / "results.csv") as f:
        rows = list(csv.DictReader(f))
    index = {(r["method"], r["bench"], r["pattern"], r["bucket"], r["part"], s): r["metrics"]
             for s in ("detection", "restoration", "clean") for r in results[s]}
    assert len(rows) == sum(len(m) for m in index.values())
    for row in rows:
        value = index[(row["method"], row["bench"], row["pattern"], row["bucket"], row["part"],
                       row["section"])][row["metric"]]
        if isinstance(value, (int, float)):
            assert float(row["value"]) == pytest.approx(value, rel=1e-12)
        else:
            assert row["value"] == ("" if value is None else str(value))
    # per-image CSV: one row per method and image; its means are the per-image aggregates
    with open(a / "per_image.csv") as f:
        per_image = [r for r in csv.DictReader(f) if r["bench"] == "bench"]
    assert len(per_image) == 2 * 4
    blind = [float(r["valid/iou"]) for r in per_image if r["method"] == "all-valid"]
    assert np.mean(blind) == pytest.approx(
        _record(results["detection"], method="all-valid", pattern="all", bucket="all", part="final")
        ["valid/iou/per_image"])
    # clean photos: the all-valid model flags nothing and changes nothing
    clean_all_valid = _record(results["clean"], method="all-valid")
    assert clean_all_valid["fpr/per_image"] == 0.0 and clean_all_valid["images_unchanged"] == 1.0
    assert clean_all_valid["n_images"] == 2

    # tables render from the stored results file, identically
    rendered = E.render_tables(a / "results.json")
    assert rendered == (a / "tables.md").read_text()
    assert "### pattern `image`" in rendered and "### pattern `constant`" in rendered
    assert "| Metric | Method | 0-30 | 30-60 | all |" in rendered
    assert "IoU ↑ (valid+, per image) [paper]" in rendered and "IoU ↑ (hole+, pooled)" in rendered
    assert "| oracle S1 |" in rendered and "## Clean photos" in rendered
    # side by side: the oracle's perfect IoU is bold-faced against the all-valid model
    assert "| IoU ↑ (hole+, per image) | oracle | **1.000** | **1.000** | **1.000** |" in rendered


# ----------------------------------------------------------------------------- errors
def test_bad_inputs_are_one_line_user_errors(bench, tmp_path, capsys):
    with pytest.raises(UserError, match="not found"):
        E.evaluate([AllValidDouble()], [tmp_path / "missing"], None, progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="manifest.json"):
        E.evaluate([AllValidDouble()], [empty], None, progress=False)
    with pytest.raises(UserError, match="does not predict masks"):
        E.evaluate([MaskGivenDouble()], [bench], None, given_mask=MaskGivenDouble(), progress=False)
    status = cli.main(["evaluate", "--model", "no_such_model_xyz", "--bench", str(bench), "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and "no_such_model_xyz" in err[0]
    assert cli.main(["evaluate", "--render", str(tmp_path / "nothing.json")]) == 2


# ----------------------------------------------------------------------------- real adaptors
def test_adaptors_of_real_models_shapes_ranges_and_given_mask():
    from blindinpaint.models.contrast import ContrastConfig
    from blindinpaint.models.gdn import GDN, GDNConfig
    from blindinpaint.models.hcl import HCLConfig, HCLNet
    from blindinpaint.models.vcnet import VCNet, VCNetConfig

    torch.manual_seed(0)
    x = torch.rand(2, 3, 36, 40)  # not a multiple of any model's size: padding and crop back
    given = torch.zeros(2, 1, 36, 40)
    given[:, :, 5:20, 8:30] = 1
    hcl = HCLPredictor(HCLNet(HCLConfig(dim=8, encoder_depths=[1, 1, 1], encoder_heads=[1, 1, 1],
                                        bottleneck_depth=1, bottleneck_heads=1, decoder_depths=[1, 1, 1],
                                        window=4, refiner_width=4, refiner_levels=2,
                                        contrast=ContrastConfig(embed_dim=8, hidden_dim=8))), "hcl")
    vcnet = VCNetPredictor(VCNet(VCNetConfig(mpn_channels=8, neck_channels=8, rin_channels=8, se_reduction=4)))
    gdn = GDNPredictor(GDN(GDNConfig(base_channels=4, res_blocks=1, detector_channels=4)))
    for model in (hcl, vcnet, gdn):
        assert isinstance(model, Predictor)
    own = hcl.predict(x)
    assert len(own.stage_holes) == 3 and all(h.shape == (2, 1, 36, 40) for h in own.stage_holes)
    assert set(own.hole.unique().tolist()) <= {0.0, 1.0} and torch.equal(own.hole, own.stage_holes[-1])
    assert torch.equal(own.restore_hole, own.hole)
    assert own.rec.shape == own.refined.shape == x.shape
    assert 0 <= own.rec.min() and own.rec.max() <= 1
    told = hcl.predict(x, given)
    assert torch.equal(told.restore_hole, given) and torch.equal(told.hole, own.hole)  # own detection kept
    v = vcnet.predict(x, given)
    assert v.refined is None and v.rec.shape == x.shape and torch.equal(v.restore_hole, given)
    assert v.hole.shape == (2, 1, 36, 40) and 0 <= v.prob_hole.min() and v.prob_hole.max() <= 1
    with pytest.raises(UserError, match="mask-given"):
        gdn.predict(x)
    g = gdn.predict(x, given)
    assert g.hole is None and g.rec.shape == x.shape
    # the harness composite equals GDN's own inpaint
    composite = M.composite(g.rec, x, g.restore_hole)
    assert torch.allclose(composite, gdn.net.inpaint(x, given), atol=1e-6)


def test_upsample_stage_maps_cells_to_their_pixels():
    stage = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    up = upsample_stage(stage, (6, 7), (8, 8))  # padded 8 x 8, factor 4, cropped to 6 x 7
    assert up.shape == (1, 1, 6, 7)
    assert up[0, 0, :4, :4].eq(1).all() and up[0, 0, :4, 4:].eq(0).all() and up[0, 0, 4:, 4:].eq(1).all()
    with pytest.raises(ValueError):
        upsample_stage(stage, (6, 7), (9, 8))


# ----------------------------------------------------------------------------- end to end
TINY_HCL = {"dim": 8, "encoder_depths": [1, 1, 1], "encoder_heads": [1, 1, 1], "bottleneck_depth": 1,
            "bottleneck_heads": 1, "decoder_depths": [1, 1, 1], "window": 4, "refiner_width": 4,
            "refiner_levels": 2, "refiner_max_channels": 8, "disc_channels": [4], "contrast": {"embed_dim": 8, "hidden_dim": 8}}


def _hand_export(folder: Path) -> Path:
    """An export folder (model.safetensors + config.json) of a randomly initialised tiny HCL."""
    from safetensors.torch import save_file

    from blindinpaint.hub import sha256_file
    from blindinpaint.models.registry import MODELS

    torch.manual_seed(0)
    net = MODELS["hcl"](TINY_HCL)
    folder.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(folder / "model.safetensors"))
    meta = {"format": "blindinpaint-export", "version": 1, "task": "hcl", "model": "hcl", "model_config": TINY_HCL,
            "extra": {}, "sha256": {"model.safetensors": sha256_file(folder / "model.safetensors")}}
    (folder / "config.json").write_text(json.dumps(meta))
    return folder


def test_cli_evaluate_an_export_and_render(bench, tmp_path, monkeypatch):
    _no_weights(monkeypatch)
    export = _hand_export(tmp_path / "tiny_hcl")
    out = tmp_path / "out"
    argv = ["evaluate", "--model", str(export), "--bench", str(bench), "-o", str(out), "--device", "cpu",
            "--batch-size", "2"]
    assert cli.main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["methods"] == ["tiny_hcl"]
    parts = [r["part"] for r in results["detection"] if r["pattern"] == "all" and r["bucket"] == "all"]
    assert parts == ["final", "S1", "S2", "S3"]
    outputs = {r["part"] for r in results["restoration"]}
    assert outputs == {"rec", "refined", "composite"}
    # the true mask fed to the decoder: labelled, detection still the model's own
    out2 = tmp_path / "out2"
    assert cli.main(argv[:-4] + ["-o", str(out2), "--given-mask", "true", "--device", "cpu"]) == 0
    told = json.loads((out2 / "results.json").read_text())
    assert told["methods"] == ["tiny_hcl + true mask"]
    assert _record(told["detection"], pattern="all", bucket="all", part="final") == \
        _record(results["detection"], pattern="all", bucket="all", part="final")
    assert cli.main(["evaluate", "--render", str(out / "results.json")]) == 0


def test_bench_profiles_configs_in_table5_layout(tmp_path):
    import yaml

    hcl_yaml = tmp_path / "tiny_hcl.yaml"
    hcl_yaml.write_text(yaml.safe_dump({"task": "hcl", "model": TINY_HCL}))
    vc_yaml = tmp_path / "tiny_vcnet.yaml"
    vc_yaml.write_text(yaml.safe_dump({"task": "vcnet", "model": {"mpn_channels": 8, "neck_channels": 8,
                                                                   "rin_channels": 8, "se_reduction": 4}}))
    result = E.run_bench([str(hcl_yaml), str(vc_yaml)], sizes=[32], repeats=1, device="cpu", threads=1,
                         out=tmp_path / "b", progress=False)
    rows = result["rows"]
    assert [r["size"] for r in rows] == [32, 32] and result["threads"] == 1
    assert all(r["macs"] > 0 and r["latency_ms"] > 0 and r["peak_mem_mb"] > 0 for r in rows)
    from blindinpaint.models.vcnet import VCNet, VCNetConfig

    assert rows[1]["params"]["total"] == sum(p.numel() for p in VCNet(
        VCNetConfig(mpn_channels=8, neck_channels=8, rin_channels=8, se_reduction=4)).parameters())
    table = (tmp_path / "b" / "bench.md").read_text()
    assert "| Model | Input | Params (M) | Total params (M) | Memory (MB) | GMACs | Inference time (ms) |" in table
    assert json.loads((tmp_path / "b" / "bench.json").read_text())["rows"][0]["name"] == str(hcl_yaml)
    assert E.resolve_bench_model("hcl_tiny").endswith("configs/hcl_tiny.yaml")
    with pytest.raises(UserError, match="no model 'no_such_model_xyz'"):
        E.run_bench(["no_such_model_xyz"], sizes=[32], repeats=1, device="cpu", progress=False)


def test_bidirectional_targets_get_their_own_block(bench, tmp_path, monkeypatch):
    import shutil

    _no_weights(monkeypatch)
    copy = tmp_path / "bidi"
    shutil.copytree(bench, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["entries"][1]["meta"] = {"bidirectional": True, "inverse_of": manifest["entries"][0]["id"]}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    results = E.evaluate([AllValidDouble()], [copy], None, progress=False)
    assert results["benches"][0]["patterns"] == ["image", "constant", "image_inv"]
    assert _record(results["detection"], pattern="image_inv", bucket="all", part="final")["n_images"] == 1
    assert _record(results["detection"], pattern="image", bucket="all", part="final")["n_images"] == 1


class RecordingDouble(TrueMaskDouble):
    """TrueMaskDouble that records the mask each restoration used."""

    name = "recording"

    def __init__(self):
        self.used = []

    def predict(self, corrupted, given_hole=None):
        self.used.append(None if given_hole is None else given_hole.clone())
        return super().predict(corrupted, given_hole)


def test_inverted_targets_restore_with_the_inverted_detection(bench, tmp_path, monkeypatch):
    """Main Fig. 6: on an inverted-mask target (true hole = everything but the pasted region) a
    detector's own mask is inverted both for scoring and for the restoration."""
    import shutil

    _no_weights(monkeypatch)
    copy = tmp_path / "bidi"
    shutil.copytree(bench, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    entry = manifest["entries"][1]
    mask_path = copy / f"{entry['id']}_mask.png"
    pasted = np.asarray(Image.open(mask_path)) > 127
    Image.fromarray((~pasted).astype(np.uint8) * 255).save(mask_path)
    entry["meta"] = {"bidirectional": True}
    entry["hole_ratio"] = float((~pasted).mean())
    (copy / "manifest.json").write_text(json.dumps(manifest))

    model = RecordingDouble()
    results = E.evaluate([model], [copy], None, batch_size=4, progress=False)
    inv = _record(results["detection"], pattern="image_inv", bucket="all", part="final")
    assert inv["hole/iou/per_image"] == pytest.approx(1.0)   # not 0: the detection was inverted
    assert inv["n_images"] == 1
    assert _record(results["detection"], pattern="image", bucket="all", part="final")["hole/iou/per_image"] \
        == pytest.approx(1.0)
    given = [g for g in model.used if g is not None]
    assert len(given) == 1 and given[0].shape[0] == 1        # the inverted sample had its own batch
    assert torch.equal(given[0][0, 0].bool(), torch.from_numpy(~pasted))
