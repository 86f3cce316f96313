"""Corruption synthesis: Eq. 1 exactly, the soft boundary, hole-only changes, pattern rules."""

import json
import math

import numpy as np
import pytest
from PIL import Image, ImageDraw
from scipy import ndimage

from blindinpaint.data.corruptions import (ALPHA_PATTERNS, PATTERNS, Assets, CorruptionOptions, LogoAsset,
                                           NoisePool, blend, blur_sigma_for, corrupt, soft_valid_mask)
from blindinpaint.data.masks import Bucket, make_rng
from blindinpaint.errors import UserError

SIZE = 96


def _photo(seed, h=SIZE, w=SIZE):
    """A smooth, non-constant test photo (gradients + a disc), H x W x 3 uint8."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    rgb = np.stack([x, y, (x + y) / 2], axis=-1) * rng.uniform(100, 200, size=3) + rng.uniform(0, 50, size=3)
    image = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))
    ImageDraw.Draw(image).ellipse((w // 4, h // 4, w // 2, h // 2), fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    return np.asarray(image)


def _logo():
    image = Image.new("RGBA", (60, 40), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.ellipse((2, 2, 58, 38), fill=(20, 120, 220, 255))
    draw.rectangle((20, 12, 40, 28), fill=(250, 250, 250, 255))
    return np.asarray(image)


@pytest.fixture(scope="module")
def env():
    pool = NoisePool([_photo(1), _photo(2)])
    assets = Assets(fonts=Assets.builtin().fonts, logos=[LogoAsset("disc", rgba=_logo())])
    return pool, assets


def _run(pattern, bucket, seed, env, **kw):
    pool, assets = env
    return corrupt(_photo(0), pattern, bucket, make_rng(seed), pool, assets, exclude="array:0", **kw)


def test_soft_boundary_is_monotone_across_an_edge_and_exact_far_from_it():
    hole = np.zeros((40, 120), dtype=bool)
    hole[:, :60] = True
    sigma = 3.0
    soft = soft_valid_mask(hole, sigma)
    row = soft[20]
    assert np.all(np.diff(row) >= 0) and row[0] == 0.0 and row[-1] == 1.0
    assert 0.4 < row[59] < 0.5 < row[60] < 0.6  # the edge sits between the hole and valid pixels
    radius = math.ceil(4 * sigma)
    assert np.all(row[:60 - radius - 1] == 0.0) and np.all(row[60 + radius + 1:] == 1.0)
    band = np.nonzero((row > 0) & (row < 1))[0]
    assert band.min() >= 60 - radius - 1 and band.max() <= 60 + radius and len(band) >= 2 * sigma * 2
    assert np.allclose(row[60:60 + radius] + row[59:59 - radius:-1], 1.0, atol=1e-5)  # symmetric about the edge


def test_blur_scales_with_image_size():
    assert blur_sigma_for((256, 256)) == 3.0
    assert blur_sigma_for((512, 768)) == 6.0
    assert blur_sigma_for((128, 128), 2.0) == 1.0
    assert np.array_equal(soft_valid_mask(np.eye(8, dtype=bool), 0), ~np.eye(8, dtype=bool))


def test_blend_is_eq1():
    clean = np.full((2, 2, 3), 200, np.uint8)
    noise = np.full((2, 2, 3), 100, np.uint8)
    soft = np.array([[1.0, 0.0], [0.25, 0.5]], np.float32)
    out = blend(clean, noise, soft)
    assert out[0, 0, 0] == 200 and out[0, 1, 0] == 100 and out[1, 0, 0] == 125 and out[1, 1, 0] == 150


@pytest.mark.parametrize("pattern", ["image", "constant", "single_color", "noise"])
@pytest.mark.parametrize("bucket", ["0-30", "30-60"])
def test_mask_patterns_follow_eq1_and_change_only_holes(pattern, bucket, env):
    for seed in range(3):
        result = _run(pattern, bucket, seed, env)
        clean = _photo(0)
        assert Bucket.parse(bucket).contains(result.hole_ratio)
        assert result.image.dtype == np.uint8 and result.image.shape == clean.shape
        # Eq. 1 everywhere, with the returned soft mask and noise content
        expected = np.rint(clean * result.soft_valid[..., None] + result.noise * (1 - result.soft_valid[..., None]))
        assert np.array_equal(result.image, expected.astype(np.uint8))
        # exactly the noise deep inside holes, exactly the photo far from them
        radius = math.ceil(4 * blur_sigma_for(clean.shape[:2])) + 1
        deep_hole = ndimage.distance_transform_edt(result.hole) > radius
        far_valid = ndimage.distance_transform_edt(~result.hole) > radius
        assert np.array_equal(result.image[deep_hole], result.noise[deep_hole])
        assert np.array_equal(result.image[far_valid], clean[far_valid])
        # changes stay within the hole plus the blend band
        changed = np.any(result.image != clean, axis=-1)
        assert not np.any(changed & far_valid)
        assert np.array_equal(result.target, clean)


def test_pattern_contents(env):
    r = _run("constant", "20-40", 0, env, options=CorruptionOptions(constant_color=(10, 20, 30)))
    assert np.all(r.noise == np.array([10, 20, 30], np.uint8)) and r.meta["color"] == [10, 20, 30]
    colours = {tuple(_run("single_color", "20-40", s, env).meta["color"]) for s in range(4)}
    assert len(colours) == 4  # a random colour per image
    noise = _run("noise", "20-40", 0, env).noise
    assert noise.std() > 60 and abs(noise.mean() - 127.5) < 5  # i.i.d. uniform 0-255
    for seed in range(5):  # a *different* photo than the one corrupted
        assert _run("image", "0-30", seed, env).meta["noise_source"] == "array:1"


@pytest.mark.parametrize("pattern", ALPHA_PATTERNS)
def test_alpha_patterns_use_their_own_alpha(pattern, env):
    clean = _photo(0)
    for seed in range(3):
        r = _run(pattern, "0-30", seed, env)
        alpha = 1.0 - r.soft_valid
        assert Bucket.parse("0-30").contains(r.hole_ratio)
        assert np.array_equal(r.hole, alpha >= 0.5)  # label = alpha >= 0.5
        assert np.any((alpha > 0) & (alpha < 0.5)) or pattern == "logo"  # anti-aliased edges
        changed = np.any(r.image != clean, axis=-1)
        assert not np.any(changed & (alpha == 0))  # pixels outside the strokes are untouched
        assert np.array_equal(r.image, blend(clean, r.noise, r.soft_valid))  # Eq. 1 with soft_valid = 1 - alpha
    assert json.dumps(r.meta)  # metadata is JSON-serialisable


@pytest.mark.parametrize("pattern", ALPHA_PATTERNS)
def test_alpha_patterns_above_30_percent_are_user_errors(pattern, env):
    with pytest.raises(UserError, match="up to 30 %"):
        _run(pattern, "30-60", 0, env)


def test_other_errors(env):
    with pytest.raises(UserError, match="unknown corruption pattern"):
        _run("blur", "0-30", 0, env)
    with pytest.raises(UserError, match="needs logos"):
        corrupt(_photo(0), "logo", "0-30", make_rng(0), assets=Assets.builtin())
    with pytest.raises(UserError, match="noise pool"):
        corrupt(_photo(0), "image", "0-30", make_rng(0))
    with pytest.raises(UserError, match="other than"):
        NoisePool([_photo(1)]).sample(make_rng(0), (8, 8), exclude="array:0")
    with pytest.raises(UserError, match="bidirectional"):
        _run("noise", "0-30", 0, env, bidirectional=True)


def test_bidirectional_swaps_target_and_inverts_mask(env):
    plain = _run("image", "0-30", 5, env)
    swapped = _run("image", "0-30", 5, env, bidirectional=True)
    assert np.array_equal(plain.image, swapped.image)  # one corrupted image, two restoration targets
    assert np.array_equal(swapped.hole, ~plain.hole)
    assert np.array_equal(swapped.target, plain.noise)
    assert np.allclose(swapped.soft_valid, 1 - plain.soft_valid)
    assert swapped.meta["bidirectional"] and abs(swapped.hole_ratio - (1 - plain.hole_ratio)) < 1e-9


def test_every_pattern_is_reproducible_and_works_on_non_square_images(env):
    pool, assets = env
    clean = _photo(3, 64, 100)
    for pattern in PATTERNS:
        a = corrupt(clean, pattern, "10-20", make_rng(9), pool, assets)
        b = corrupt(clean, pattern, "10-20", make_rng(9), pool, assets)
        assert np.array_equal(a.image, b.image) and np.array_equal(a.hole, b.hole), pattern
        assert a.image.shape == (64, 100, 3) and Bucket.parse("10-20").contains(a.hole_ratio), pattern


def test_assets_folder_with_logos(tmp_path):
    (tmp_path / "logos").mkdir()
    Image.fromarray(_logo()).save(tmp_path / "logos" / "disc.png")
    (tmp_path / "manifest.json").write_text(json.dumps({"fonts": [], "logos": [{"file": "logos/disc.png",
                                                                                "sha256": "x"}]}))
    assets = Assets.load(tmp_path)
    assert [g.name for g in assets.logos] == ["disc.png"] and assets.fonts[0].path is None  # built-in font
    r = corrupt(_photo(0), "logo", "0-30", make_rng(0), assets=assets)
    assert r.meta["logos"][0] == "disc.png"
    assert assets.fingerprint()["logos"] == {"disc.png": "x"}
