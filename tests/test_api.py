"""The Python API (blindinpaint.api): input forms, mask convention, compositing, strategies, loading.

Models are randomly initialised micro HCL / GDN networks exported the way ``hub`` expects
(``model.safetensors`` + ``config.json`` with SHA-256), so no trained weights are needed.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import blindinpaint
from blindinpaint import hub
from blindinpaint.api import Restorer, load_input
from blindinpaint.errors import UserError
from blindinpaint.models.contrast import FixedCentres
from blindinpaint.models.gdn import GDN, GDNConfig

from helpers import make_hcl_export, write_export

pytestmark = pytest.mark.usefixtures("one_thread")  # fixture in conftest.py


# ----------------------------------------------------------------------------- helpers
def corrupted_image(size: int = 64, seed: int = 0) -> np.ndarray:
    """A smooth colour ramp with a square of random noise: H x W x 3 uint8."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0.0, 1.0, size)[None, :, None] * np.array([0.3, 0.6, 0.9])
    img = np.tile(ramp, (size, 1, 1))
    img[size // 6: size // 2, size // 4: 3 * size // 4] = rng.random((size // 2 - size // 6, size // 2, 3))
    return np.rint(img * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("exports")
    torch.manual_seed(1)
    gdn_cfg = GDNConfig(base_channels=4, res_blocks=1, detector_channels=4)
    return {"hcl": make_hcl_export(root / "hcl"),
            "hcl_clean_rule": make_hcl_export(root / "hcl_clean", no_corruption="centre_cosine"),
            "gdn": write_export(GDN(gdn_cfg), "gdn", gdn_cfg, root / "gdn")}


@pytest.fixture(scope="module")
def restorer(exports) -> Restorer:
    return Restorer.from_pretrained(exports["hcl"], device="cpu")


# ----------------------------------------------------------------------------- input forms
def test_every_input_form_gives_the_same_result(restorer, tmp_path):
    rgb = corrupted_image(48)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    reference = restorer.restore(rgb)
    assert reference.image.shape == (48, 48, 3) and reference.image.dtype == np.uint8
    assert reference.mask.shape == (48, 48) and reference.mask.dtype == np.bool_
    assert reference.confidence.dtype == np.float32
    assert 0.0 <= reference.confidence.min() and reference.confidence.max() <= 1.0
    assert reference.mask.any(), "the micro model must flag something for the test to mean anything"
    forms = {"path": tmp_path / "a.png", "str": str(tmp_path / "a.png"), "pil": Image.fromarray(rgb),
             "float": rgb.astype(np.float64) / 255.0, "float32": rgb.astype(np.float32) / 255.0,
             "uint16": rgb.astype(np.uint16) * 257, "tensor": torch.from_numpy(rgb).permute(2, 0, 1) / 255.0}
    for name, form in forms.items():
        res = restorer.restore(form)
        assert np.array_equal(res.image, reference.image), name
        assert np.array_equal(res.mask, reference.mask), name


def test_rgba_keeps_alpha_and_grey_and_16bit_files_work(restorer, tmp_path):
    rgb = corrupted_image(32)
    alpha = np.full((32, 32), 255, np.uint8)
    alpha[:, :8] = 0
    alpha[:, 8:12] = 128
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(tmp_path / "rgba.png")
    res = restorer.restore(tmp_path / "rgba.png")
    assert res.image.shape == (32, 32, 4)
    assert np.array_equal(res.image[..., 3], alpha)
    opaque = (alpha == 255) & ~res.mask
    assert np.array_equal(res.image[..., :3][opaque], rgb[opaque])
    # RGBA arrays too
    assert restorer.restore(np.dstack([rgb, alpha])).image.shape == (32, 32, 4)

    grey = rgb[..., 1]
    Image.fromarray(grey, "L").save(tmp_path / "grey.png")
    res = restorer.restore(tmp_path / "grey.png")
    assert res.image.shape == (32, 32, 3)
    assert np.array_equal(res.image[~res.mask], np.repeat(grey[..., None], 3, 2)[~res.mask])

    deep = grey.astype(np.uint16) * 257
    Image.fromarray(deep).save(tmp_path / "deep.png")  # mode I;16
    res16 = restorer.restore(tmp_path / "deep.png")
    assert np.array_equal(res16.image, res.image)
    assert restorer.restore(grey).image.shape == (32, 32, 3)


@pytest.mark.parametrize("shape", [(1, 1, 3), (1, 7, 3), (7, 1, 3), (1, 1), (3, 50, 3)])
def test_tiny_and_thin_images(restorer, shape):
    img = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    res = restorer.restore(img)
    assert res.image.shape == shape[:2] + (3,)
    assert res.mask.shape == shape[:2] and res.confidence.shape == shape[:2]
    rgb = img if img.ndim == 3 else np.repeat(img[..., None], 3, 2)
    assert np.array_equal(res.image[~res.mask], rgb[~res.mask])
    assert restorer.detect(img).mask.shape == shape[:2]


def test_bad_inputs_give_one_line_user_errors(restorer, tmp_path):
    rgb = corrupted_image(32)
    cases = [
        (lambda: restorer.restore(rgb.astype(np.float32)), "[0, 1]"),          # 0-255 floats
        (lambda: restorer.restore(np.full((4, 4, 3), np.nan)), "NaN"),
        (lambda: restorer.restore(np.zeros((4, 4, 2), np.uint8)), "shape"),
        (lambda: restorer.restore(np.zeros((0, 4, 3), np.uint8)), "zero size"),
        (lambda: restorer.restore(rgb, mask=np.zeros((31, 32), bool)), "size"),
        (lambda: restorer.restore(rgb, strategy="crop"), "strategy"),
        (lambda: restorer.restore(rgb, threshold=1.5), "threshold"),
        (lambda: restorer.restore(rgb, dilate=-1), "dilate"),
        (lambda: restorer.restore(tmp_path / "missing.png"), "not found"),
        (lambda: restorer.restore(rgb, max_pixels=100), "limit"),
        (lambda: restorer.restore(12), "int"),
    ]
    for call, needle in cases:
        with pytest.raises(UserError) as info:
            call()
        message = str(info.value)
        assert needle in message and "\n" not in message, message


# ----------------------------------------------------------------------------- masks and compositing
def test_user_mask_white_is_corrupted_and_only_it_changes(restorer, tmp_path):
    rgb = corrupted_image(64)
    mask = np.zeros((64, 64), np.uint8)
    mask[20:36, 8:24] = 255  # white square = to restore
    Image.fromarray(mask).save(tmp_path / "mask.png")
    for given in (tmp_path / "mask.png", mask > 0, mask, Image.fromarray(mask)):
        res = restorer.restore(rgb, mask=given)
        changed = np.any(res.image != rgb, axis=2)
        assert changed[20:36, 8:24].mean() > 0.5          # the network's output really went in
        assert not changed[mask == 0].any()               # and nothing else moved
        assert np.array_equal(res.mask, mask > 0)
        assert np.array_equal(res.confidence, (mask > 0).astype(np.float32))
    dilated = restorer.restore(rgb, mask=mask > 0, dilate=3)
    assert dilated.mask[17:39, 5:27].all() and dilated.mask.sum() == 22 * 22
    assert not np.any(dilated.image != rgb, axis=2)[~dilated.mask].any()
    assert np.array_equal(restorer.inpaint(rgb, mask > 0).image, restorer.restore(rgb, mask=mask > 0).image)


def test_blind_restoration_keeps_every_pixel_outside_the_mask(restorer):
    rgb = corrupted_image(64)
    res = restorer.restore(rgb)
    assert 0 < res.mask.mean() < 1
    assert np.array_equal(res.image[~res.mask], rgb[~res.mask])
    assert np.any(res.image[res.mask] != rgb[res.mask])
    det = restorer.detect(rgb)
    assert np.array_equal(det.mask, res.mask)              # one-pass restore == detect
    assert np.array_equal(det.mask, det.confidence > 0.5)
    low = restorer.detect(rgb, threshold=0.3)
    assert low.mask.sum() >= det.mask.sum() and np.array_equal(low.mask, det.confidence > 0.3)
    # a non-default threshold / dilation: the decoder is fed that mask and only it is restored
    grown = restorer.restore(rgb, threshold=0.3, dilate=2)
    assert grown.mask.sum() >= low.mask.sum()
    assert np.array_equal(grown.image[~grown.mask], rgb[~grown.mask])


def test_clean_image_gives_an_empty_mask_with_the_no_corruption_rule(exports):
    smooth = np.rint(np.tile(np.linspace(0, 1, 64)[None, :, None] * [0.2, 0.5, 0.8], (64, 1, 1)) * 255)
    smooth = smooth.astype(np.uint8)
    constant = np.full((48, 40, 3), 120, np.uint8)
    with_rule = Restorer.from_pretrained(exports["hcl_clean_rule"], device="cpu")
    for img in (smooth, constant):
        res = with_rule.restore(img)
        assert res.clean and not res.mask.any() and np.array_equal(res.image, img)
        assert not with_rule.detect(img).mask.any()
    tiled = Restorer(with_rule.net, with_rule.task, with_rule.device, tile=32, overlap=8, fit_side=64)
    res = tiled.restore(smooth, strategy="tile")   # whole-image decision: every tile skipped
    assert res.clean and not res.mask.any() and np.array_equal(res.image, smooth)
    assert not tiled.detect(smooth, strategy="tile").mask.any()
    # the same weights without the rule split the smooth image in two: the rule is what empties it
    without = Restorer.from_pretrained(exports["hcl"], device="cpu")
    assert without.detect(smooth).mask.mean() > 0.05


# ----------------------------------------------------------------------------- strategies
def test_auto_runs_one_pass_up_to_1024_and_tiles_above(restorer):
    x = torch.zeros(1, 3, 1024, 700)
    assert restorer._strategy("auto", x) == "single"
    assert restorer._strategy("auto", torch.zeros(1, 3, 1025, 10)) == "tile"
    assert restorer._strategy("resize", torch.zeros(1, 3, 64, 64)) == "single"  # small: not upscaled


def test_tiled_and_single_pass_agree():
    # The bundled (trained) model: a random micro net's embeddings are nearly degenerate, so float
    # rounding alone flips its K-means assignments and no two forward paths agree (seen: any seed).
    r = Restorer.from_pretrained("default", device="cpu")
    rgb = corrupted_image(96)
    single_det = r.detect(rgb, strategy="auto")
    single = r.restore(rgb, mask=single_det.mask)
    r.tile, r.overlap, r.fit_side = 64, 32, 96   # force 2 x 2 tiles; centres fitted at full size
    tiled_det = r.detect(rgb, strategy="tile")
    assert np.abs(tiled_det.confidence - single_det.confidence).mean() < 0.03
    assert (tiled_det.mask == single_det.mask).mean() > 0.95
    tiled = r.restore(rgb, mask=single_det.mask, strategy="tile")
    inside = single_det.mask
    assert inside.any()
    assert np.abs(tiled.image.astype(int) - single.image)[inside].mean() < 8.0   # of 255
    assert np.array_equal(tiled.image[~inside], rgb[~inside])
    blind = r.restore(rgb, strategy="tile")
    assert np.array_equal(blind.image[~blind.mask], rgb[~blind.mask])
    assert np.array_equal(blind.mask, blind.confidence > r.threshold)


def test_tiles_use_the_centres_fitted_on_the_whole_image(restorer):
    net = restorer.net
    x = torch.from_numpy(corrupted_image(64)).permute(2, 0, 1)[None].float() / 127.5 - 1.0
    det, prob, hole = net.detect(x)
    with torch.no_grad():
        full = net(x)
    assert torch.allclose(prob, full.prob_hole, atol=1e-6) and torch.equal(hole, full.hole)  # hook == forward
    fixed = FixedCentres.from_detection(det)
    _, prob_fixed, _ = net.detect(x, centres=fixed)
    assert torch.allclose(prob_fixed, prob, atol=1e-5)     # assigning to its own centres changes nothing
    flipped = FixedCentres(fixed.centres, [1 - v for v in fixed.valid_centre], fixed.clean, fixed.clean_score)
    det_flipped, _, _ = net.detect(x, centres=flipped)     # the whole image's polarity is obeyed
    # (S1: later stages inherit decisions where ties at exactly 0.5 break one way)
    assert torch.allclose(det_flipped.prob_hole[0], 1.0 - det.prob_hole[0], atol=1e-5)
    clean = FixedCentres(fixed.centres, fixed.valid_centre, torch.tensor([True]), fixed.clean_score)
    _, prob_clean, hole_clean = net.detect(x[..., :32, :32], centres=clean)  # a tile of a clean image
    assert not prob_clean.any() and not hole_clean.any()


def test_resize_strategy_keeps_size_and_outside_pixels(restorer):
    rgb = corrupted_image(64)
    restorer_small = Restorer(restorer.net, restorer.task, restorer.device, resize_side=32)
    res = restorer_small.restore(rgb, strategy="resize")
    assert res.image.shape == rgb.shape and res.mask.shape == (64, 64)
    assert np.array_equal(res.image[~res.mask], rgb[~res.mask])
    given = np.zeros((64, 64), bool)
    given[10:20, 10:30] = True
    res = restorer_small.restore(rgb, mask=given, strategy="resize")
    assert not np.any(res.image != rgb, axis=2)[~given].any() and np.any(res.image != rgb, axis=2)[given].any()


# ----------------------------------------------------------------------------- models
def test_gdn_inpaints_with_a_mask_and_refuses_blind_use(exports):
    r = Restorer.from_pretrained(exports["gdn"], device="cpu")
    rgb = corrupted_image(40)
    mask = np.zeros((40, 40), bool)
    mask[5:15, 20:35] = True
    res = r.inpaint(rgb, mask)
    assert np.array_equal(res.image[~mask], rgb[~mask]) and np.any(res.image[mask] != rgb[mask])
    for call in (lambda: r.restore(rgb), lambda: r.detect(rgb)):
        with pytest.raises(UserError, match="mask-given"):
            call()
    tiled = Restorer(r.net, r.task, r.device, tile=16, overlap=4).restore(rgb, mask=mask, strategy="tile")
    assert np.array_equal(tiled.image[~mask], rgb[~mask])


def test_missing_default_model_explains_how_to_pass_a_path(tmp_path, monkeypatch):
    monkeypatch.setenv("BLINDINPAINT_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(hub, "BUNDLED_DIR", tmp_path / "bundled")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="no bundled 'default' model.*export folder or run directory"):
        Restorer.from_pretrained()


def test_named_model_in_user_folder_and_module_level_calls(exports, tmp_path, monkeypatch):
    monkeypatch.setenv("BLINDINPAINT_HOME", str(tmp_path))
    make_hcl_export(tmp_path / "default")
    r1 = blindinpaint.load_model(device="cpu")
    assert blindinpaint.load_model("default", "cpu") is r1   # cached: loaded once
    rgb = corrupted_image(32)
    assert np.array_equal(blindinpaint.restore(rgb, device="cpu").image, r1.restore(rgb).image)
    assert np.array_equal(blindinpaint.detect(rgb, device="cpu").mask, r1.detect(rgb).mask)
    mask = np.zeros((32, 32), bool)
    mask[:8] = True
    assert np.array_equal(blindinpaint.inpaint(rgb, mask, model=exports["hcl"], device="cpu").image[8:], rgb[8:])


def test_damaged_weights_fail_the_sha256_check(exports, tmp_path):
    folder = tmp_path / "copy"
    folder.mkdir()
    data = bytearray((exports["hcl"] / hub.WEIGHTS_FILE).read_bytes())
    data[-5] ^= 0xFF
    (folder / hub.WEIGHTS_FILE).write_bytes(bytes(data))
    (folder / hub.CONFIG_FILE).write_text((exports["hcl"] / hub.CONFIG_FILE).read_text())
    with pytest.raises(UserError, match="SHA-256"):
        Restorer.from_pretrained(folder, device="cpu")


class _Exploit:
    """Unpickling this would run ``Path.touch`` on the marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickled_code_in_a_checkpoint_is_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"format": "blindinpaint-checkpoint", "payload": _Exploit(marker)}, f, protocol=2)
    with pytest.raises(UserError):
        Restorer.from_pretrained(tmp_path / "evil.pt", device="cpu")
    assert not marker.exists()


def test_device_names(restorer):
    from blindinpaint.api import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(UserError, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="CUDA is not available"):
            resolve_device("cuda")


def test_load_input_reports_alpha_and_size(tmp_path):
    rgba = np.zeros((5, 9, 4), np.uint8)
    rgba[..., 3] = 200
    loaded = load_input(rgba)
    assert loaded.size == (9, 5) and loaded.alpha is not None and loaded.rgb.shape == (5, 9, 3)
