"""``blindinpaint inpaint`` / ``inspect`` (GDN product commands), ``Restorer.inspect`` and the
``benchmarks/bench_inspect_auroc.py`` script."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import blindinpaint
from blindinpaint import Restorer, UserError, hub
from blindinpaint.api import artifact_overlay, heat_colours
from blindinpaint.cli import main

from helpers import make_gdn_export, make_hcl_export, write_photos
from test_api import corrupted_image

pytestmark = pytest.mark.usefixtures("one_thread")  # fixture in conftest.py

BENCH_SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_inspect_auroc.py"


@pytest.fixture(scope="module")
def gdn(tmp_path_factory) -> Path:
    return make_gdn_export(tmp_path_factory.mktemp("model") / "gdn")


@pytest.fixture(scope="module")
def gdn_restorer(gdn) -> Restorer:
    return Restorer.from_pretrained(gdn, device="cpu")


@pytest.fixture(scope="module")
def hcl(tmp_path_factory) -> Path:
    return make_hcl_export(tmp_path_factory.mktemp("model") / "hcl")


def _hole(height: int, width: int, box) -> np.ndarray:
    hole = np.zeros((height, width), bool)
    hole[box] = True
    return hole


@pytest.fixture
def inputs(tmp_path) -> dict:
    """photos/a.png (48 x 48) and photos/sub/odd.png (37 high, 53 wide), black under their holes so a
    fill must change them; masks/a_mask.png and masks/odd.png (white = fill)."""
    photos, masks = tmp_path / "photos", tmp_path / "masks"
    (photos / "sub").mkdir(parents=True)
    masks.mkdir()
    holes = {"a": _hole(48, 48, np.s_[10:30, 5:25]), "odd": _hole(37, 53, np.s_[3:20, 30:50])}
    images = {"a": corrupted_image(48, seed=0), "odd": corrupted_image(53, seed=1)[:37]}
    for name, image in images.items():
        image[holes[name]] = 0
    Image.fromarray(images["a"]).save(photos / "a.png")
    Image.fromarray(images["odd"]).save(photos / "sub" / "odd.png")
    Image.fromarray(holes["a"].astype(np.uint8) * 255).save(masks / "a_mask.png")
    Image.fromarray(holes["odd"].astype(np.uint8) * 255).save(masks / "odd.png")
    return {"photos": photos, "masks": masks, "holes": holes, "images": images}


def _run(args, capsys):
    status = main([str(a) for a in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


# ----------------------------------------------------------------------------- inpaint
def test_inpaint_fills_only_the_white_mask_pixels_at_any_size(gdn, gdn_restorer, inputs, tmp_path, capsys):
    out = tmp_path / "out"
    status, _, err = _run(["inpaint", inputs["photos"], "--mask", inputs["masks"], "-o", out, "--model", gdn,
                           "--device", "cpu"], capsys)
    assert status == 0, err
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.png")) == ["a_inpainted.png",
                                                                          "sub/odd_inpainted.png"]
    for name, path in (("a", out / "a_inpainted.png"), ("odd", out / "sub" / "odd_inpainted.png")):
        result = Image.open(path)
        original, hole = inputs["images"][name], inputs["holes"][name]
        assert result.mode == "RGB" and result.size == (original.shape[1], original.shape[0])
        pixels = np.asarray(result)
        assert np.array_equal(pixels[~hole], original[~hole])            # known pixels: bit-identical
        assert np.any(pixels != original, axis=2)[hole].mean() > 0.9      # white = fill: the hole changed
        assert np.array_equal(pixels, gdn_restorer.inpaint(original, hole).image)


def test_inpaint_with_one_mask_file_dilation_and_an_hcl_model(gdn, hcl, inputs, tmp_path, capsys):
    photo, mask = inputs["photos"] / "a.png", inputs["masks"] / "a_mask.png"
    original, hole = inputs["images"]["a"], inputs["holes"]["a"]
    status, _, err = _run(["inpaint", photo, "--mask", mask, "-o", tmp_path / "grown", "--model", gdn,
                           "--dilate", "2", "--device", "cpu"], capsys)
    assert status == 0, err
    grown = np.any(np.asarray(Image.open(tmp_path / "grown" / "a_inpainted.png")) != original, axis=2)
    assert grown[8:32, 3:27].mean() > 0.9 and not grown[:7].any()       # 2 px more, nothing beyond
    # an HCL model has no GDN generator: it inpaints in given-mask mode (Restorer.inpaint)
    status, _, err = _run(["inpaint", photo, "--mask", mask, "-o", tmp_path / "hcl", "--model", hcl], capsys)
    assert status == 0, err
    assert np.array_equal(np.asarray(Image.open(tmp_path / "hcl" / "a_inpainted.png"))[~hole], original[~hole])


def test_inpaint_needs_a_mask(gdn, inputs, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["inpaint", str(inputs["photos"] / "a.png"), "-o", str(tmp_path / "out"), "--model", str(gdn)])
    assert exc.value.code == 2 and "--mask" in capsys.readouterr().err
    status, _, err = _run(["inpaint", inputs["photos"] / "a.png", "--mask", tmp_path / "nope.png", "-o",
                           tmp_path / "out", "--model", gdn], capsys)
    assert status == 2 and "--mask" in err and "no such file" in err and not (tmp_path / "out").exists()


def test_bad_files_are_skipped_listed_and_exit_nonzero(gdn, inputs, tmp_path, capsys):
    photos = inputs["photos"]
    (photos / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    Image.fromarray(corrupted_image(48, seed=5)).save(photos / "nomask.png")   # no mask in the folder
    out = tmp_path / "out"
    status, _, err = _run(["inpaint", photos, "--mask", inputs["masks"], "-o", out, "--model", gdn], capsys)
    assert status == 1
    assert "2 of 4 file(s) done, 2 failed" in err and "broken.png" in err and "nomask" in err
    assert (out / "a_inpainted.png").is_file() and (out / "sub" / "odd_inpainted.png").is_file()
    status, _, err = _run(["inspect", photos, "-o", tmp_path / "heat", "--model", gdn], capsys)
    assert status == 1 and "3 of 4 file(s) done, 1 failed" in err and "broken.png" in err
    assert (tmp_path / "heat" / "nomask_artifacts16.png").is_file()
    assert not list((tmp_path / "heat").glob("broken*"))


def test_missing_bundled_gdn_model_says_how_to_pass_one(inputs, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("BLINDINPAINT_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(hub, "BUNDLED_DIR", tmp_path / "bundled")
    monkeypatch.chdir(tmp_path)
    for args in (["inpaint", inputs["photos"], "--mask", inputs["masks"]], ["inspect", inputs["photos"]]):
        status, _, err = _run([*args, "-o", tmp_path / "out"], capsys)
        assert status == 2 and "no bundled 'gdn' model" in err and "--model" in err and "gdn_cpu.yaml" in err
        assert len(err.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- inspect
def test_inspect_writes_overlay_and_16_bit_probability(gdn, gdn_restorer, inputs, tmp_path, capsys):
    out = tmp_path / "out"
    status, _, err = _run(["inspect", inputs["photos"], "-o", out, "--model", gdn, "--device", "cpu"], capsys)
    assert status == 0, err
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.png")) == [
        "a_artifacts.png", "a_artifacts16.png", "sub/odd_artifacts.png", "sub/odd_artifacts16.png"]
    detector = gdn_restorer.net.detector
    for name, folder in (("a", out), ("odd", out / "sub")):
        rgb = inputs["images"][name]
        raw = Image.open(folder / f"{name}_artifacts16.png")
        assert raw.mode in ("I;16", "I") and raw.size == (rgb.shape[1], rgb.shape[0])
        with torch.no_grad():
            v = detector.artifact_prob(torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0)[0, 0].numpy()
        stored = np.asarray(raw).astype(np.float64) / 65535.0
        assert np.abs(stored - v).max() <= 1.0 / 65535                  # the probability, not an 8-bit copy
        preview = Image.open(folder / f"{name}_artifacts.png")
        assert preview.mode == "RGB" and preview.size == raw.size
        expected = 0.5 * rgb.astype(np.float64) + 0.5 * heat_colours(v)
        assert np.abs(np.asarray(preview).astype(np.float64) - expected).max() <= 1.0
    heat = gdn_restorer.inspect(inputs["images"]["odd"])
    assert heat.shape == (37, 53) and heat.dtype == np.float32 and 0.0 <= heat.min() <= heat.max() <= 1.0
    assert np.array_equal(blindinpaint.inspect(inputs["images"]["odd"], model=gdn, device="cpu"), heat)


def test_inspect_refuses_a_model_without_dense_detector(hcl, inputs, tmp_path, capsys):
    status, _, err = _run(["inspect", inputs["photos"], "-o", tmp_path / "out", "--model", hcl], capsys)
    assert status == 2 and "dense artifact detector" in err and "GDN" in err
    assert len(err.strip().splitlines()) == 1 and not list((tmp_path / "out").rglob("*.png"))
    with pytest.raises(UserError, match="without a dense artifact detector"):
        Restorer.from_pretrained(hcl, device="cpu").inspect(inputs["images"]["a"])


def test_inspect_tiles_large_inputs_and_refuses_resize(gdn_restorer, inputs):
    rgb = inputs["images"]["odd"]
    tiled = Restorer(gdn_restorer.net, "gdn", gdn_restorer.device, tile=24, overlap=8)
    heat = tiled.inspect(rgb, strategy="tile")
    assert heat.shape == (37, 53) and 0.0 <= heat.min() <= heat.max() <= 1.0
    with pytest.raises(UserError, match="full resolution"):
        gdn_restorer.inspect(rgb, strategy="resize")


def test_heat_colours_brighten_with_probability():
    colours = heat_colours(np.linspace(0.0, 1.0, 21)[None])[0].astype(np.float64)
    luminance = colours @ np.array([0.299, 0.587, 0.114])
    assert np.all(np.diff(luminance) > 0)                                # readable even in grey
    assert luminance[0] < 10 and luminance[-1] > 230
    rgb = np.full((2, 3, 3), 200, np.uint8)
    assert np.array_equal(artifact_overlay(rgb, np.zeros((2, 3))), np.full((2, 3, 3), [100, 100, 102], np.uint8))


# ----------------------------------------------------------------------------- AUROC benchmark
@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_inspect_auroc", BENCH_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def test_auroc_matches_a_hand_computed_example_with_ties(bench):
    score = np.array([[0.1, 0.4], [0.4, 0.8]])
    hole = np.array([[0, 1], [0, 1]])
    assert bench.auroc(score, hole).tolist() == [1.0, 1.0]               # each image ranks perfectly
    # pooled: positives {0.4, 0.8} vs negatives {0.1, 0.4}: 1 + 1/2 (the tie) + 1 + 1 over 4 pairs
    assert bench.pooled_auroc(score, hole) == pytest.approx(0.875, abs=1e-12)
    ranked = bench.auroc(np.array([[0.3, 0.3, 0.9, 0.1, 0.3]]), np.array([[1, 0, 0, 1, 1]]))
    # pairs (pos, neg): (.3,.3)=.5 (.3,.9)=0 (.1,.3)=0 (.1,.9)=0 (.3,.3)=.5 (.3,.9)=0 -> 1 / 6
    assert ranked[0] == pytest.approx(1 / 6, abs=1e-12)
    assert np.isnan(bench.auroc(np.array([[0.2, 0.7]]), np.array([[1, 1]]))[0])


def _rows(report: str) -> dict[str, tuple[int, list[float]]]:
    """The summary table: method -> (images, [mean, median, pooled, V hole, V known])."""
    rows = {}
    for line in report.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 7 and re.fullmatch(r"\d+", cells[1]):
            rows[cells[0]] = (int(cells[1]), [float(c) for c in cells[2:]])
    return rows


def test_auroc_script_end_to_end(bench, gdn, tmp_path, capsys, monkeypatch):
    photos = write_photos(tmp_path / "photos", n=3, size=72)
    written = tmp_path / "auroc.md"
    monkeypatch.setattr(bench, "load_cv2", lambda: None)
    args = ["--model", str(gdn), "--images", str(photos), "--size", "64", "--count", "4", "--write", str(written)]
    assert bench.main(args) == 0
    captured = capsys.readouterr()
    assert "OpenCV is not installed" in captured.err and "opencv-python-headless" in captured.err
    rows = _rows(written.read_text())
    assert written.read_text() == captured.out
    assert len(rows) == 2 and all(k.startswith("GDN") for k in rows)
    for images, values in rows.values():
        assert images == 4 and all(0.0 <= v <= 1.0 for v in values)
    assert bench.main(["--model", str(gdn), "--images", str(tmp_path / "none")]) == 2


def test_auroc_script_measures_opencv_on_a_synth_folder(bench, gdn, tmp_path, capsys):
    pytest.importorskip("cv2")
    from blindinpaint.data.bench import synth
    from blindinpaint.data.masks import parse_buckets

    photos = write_photos(tmp_path / "photos", n=2, size=64)
    synth(str(photos), str(tmp_path / "bench"), ["constant"], parse_buckets("10-20,30-40"), size=48, seed=1,
          progress=False)
    assert bench.main(["--model", str(gdn), "--bench", str(tmp_path / "bench"), "--count", "3"]) == 0
    rows = _rows(capsys.readouterr().out)
    assert len(rows) == 4 and any("Telea" in k for k in rows) and any("Navier-Stokes" in k for k in rows)
    for images, values in rows.values():
        assert images == 3 and all(0.0 <= v <= 1.0 for v in values)
