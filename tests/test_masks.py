"""Free-form masks: bucket parsing, every mask in its bucket, authors' brush parameters, fixed sets."""

import numpy as np
import pytest

from blindinpaint.data.masks import (BUCKET_SETS, BrushStroke, Bucket, Rectangle, fixed_test_masks, grow_to_bucket,
                                     make_rng, parse_buckets, polyline_prefix, sample_mask)
from blindinpaint.errors import UserError


def test_bucket_parse_and_contains():
    b = Bucket.parse("0-30")
    assert (b.low, b.high, b.name) == (0.0, 0.3, "0-30")
    assert not b.contains(0.0) and b.contains(1e-6) and b.contains(0.3) and not b.contains(0.3001)
    g = Bucket.parse("1-10")
    assert not g.contains(0.01) and g.contains(0.0101)  # GDN's half-open (1, 10]
    assert Bucket.parse(" 12.5-20 % ").name == "12.5-20"


@pytest.mark.parametrize("text, message", [
    ("30-10", "LOW must be smaller"), ("abc", "expected LOW-HIGH"), ("90-100", "not supported"),
    ("10-10.5", "too narrow"), ("0-30-60", "expected LOW-HIGH"),
])
def test_bad_buckets_are_user_errors(text, message):
    with pytest.raises(UserError, match=message):
        Bucket.parse(text)


def test_bucket_sets():
    assert [b.name for b in parse_buckets("gdn")] == ["1-10", "10-20", "20-30", "30-40", "40-50", "50-60"]
    assert [b.name for b in parse_buckets("hcl3")] == ["0-20", "20-40", "40-60"]
    assert [b.name for b in parse_buckets("0-30, 30-60")] == ["0-30", "30-60"]
    with pytest.raises(UserError):
        parse_buckets(" , ")


ALL_BUCKETS = sorted({name for names in BUCKET_SETS.values() for name in names})


@pytest.mark.parametrize("bucket", ALL_BUCKETS)
def test_every_mask_lands_in_its_bucket(bucket):
    b = Bucket.parse(bucket)
    ratios = []
    for seed in range(25):
        for size, kind in (((64, 64), "brush"), ((48, 80), "mixed"), ((72, 56), "rect")):
            hole = sample_mask(size, b, make_rng(seed, kind), kind=kind)
            assert hole.shape == size and hole.dtype == bool
            ratios.append(hole.mean())
            assert b.contains(hole.mean()), (bucket, kind, seed, hole.mean())
    # the target ratio is drawn across the bucket, so ratios are spread, not piled at one end
    assert np.ptp(ratios) > 0.3 * (b.high - b.low)


def test_mask_is_reproducible_and_seed_dependent():
    a = sample_mask(64, "20-40", make_rng(3))
    assert np.array_equal(a, sample_mask(64, "20-40", make_rng(3)))
    assert not np.array_equal(a, sample_mask(64, "20-40", make_rng(4)))


def test_fixed_test_masks():
    masks = fixed_test_masks(5, 64, "30-60", seed=7)
    assert masks.shape == (5, 64, 64) and masks.dtype == bool
    assert np.array_equal(masks, fixed_test_masks(5, 64, "30-60", seed=7))
    assert np.array_equal(masks[:3], fixed_test_masks(3, 64, "30-60", seed=7))  # mask i depends on i only
    assert not np.array_equal(masks, fixed_test_masks(5, 64, "30-60", seed=8))
    assert all(Bucket.parse("30-60").contains(m.mean()) for m in masks)


def test_brush_stroke_follows_authors_parameters():
    side = 200
    for seed in range(30):
        stroke = BrushStroke.random((side, side), make_rng(seed))
        assert 0.02 * side - 1 <= stroke.width <= 0.10 * side
        assert 4 + 2 <= len(stroke.points) <= 18 + 2  # start + (turns + 1) segments
        seg = np.linalg.norm(np.diff(stroke.points, axis=0), axis=1)
        assert seg.max() <= 0.25 * side + 1e-6  # clamping to the frame can only shorten a segment


def test_growing_a_shape_only_adds_pixels():
    stroke = BrushStroke.random((96, 96), make_rng(1))
    counts = [np.count_nonzero(stroke.alpha(t) >= 0.5) for t in (0.1, 0.3, 0.6, 1.0)]
    assert counts == sorted(counts) and counts[0] > 0
    rect = Rectangle.random((96, 96), make_rng(2), angle=0.3)
    assert np.count_nonzero(rect.alpha(0.5)) < np.count_nonzero(rect.alpha(1.0))
    pts = np.array([[0.0, 0.0], [10.0, 0.0], [10.0, 10.0]])
    assert np.allclose(polyline_prefix(pts, 0.75), [[0, 0], [10, 0], [10, 5]])


def test_unreachable_bucket_raises_instead_of_looping():
    class Dot:
        def alpha(self, t):
            a = np.zeros((32, 32), np.float32)
            a[0, 0] = 1.0  # every shape covers the same pixel: the ratio can never grow
            return a

    with pytest.raises(UserError, match="could not make"):
        grow_to_bucket(lambda rng: Dot(), (32, 32), Bucket.parse("40-60"), make_rng(0), max_shapes=50)


def test_unknown_mask_kind():
    with pytest.raises(UserError, match="unknown mask kind"):
        sample_mask(32, "0-30", make_rng(0), kind="blob")
