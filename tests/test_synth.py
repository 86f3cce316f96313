"""`blindinpaint synth` benchmark folders, their loader, and the training/eval dataset."""

import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from blindinpaint.cli import main
from blindinpaint.config import from_dict
from blindinpaint.data.bench import BenchDataset, load_bench
from blindinpaint.data.dataset import CorruptionDataset, DataConfig, build_dataset
from blindinpaint.data.masks import Bucket
from blindinpaint.errors import ConfigError, UserError

PATTERNS = "image,constant,single_color,noise,graffiti,text"


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Three small photos of different sizes and formats in nested folders."""
    root = tmp_path_factory.mktemp("photos")
    (root / "sub").mkdir()
    for i, (w, h, name) in enumerate([(90, 70, "a.png"), (80, 80, "sub/b.jpg"), (70, 100, "c.png")]):
        rng = np.random.default_rng(i)
        y, x = np.mgrid[0:h, 0:w]
        rgb = np.stack([x * 255 / w, y * 255 / h, np.full((h, w), 60 * i)], -1).astype(np.uint8)
        image = Image.fromarray(rgb)
        ImageDraw.Draw(image).rectangle((5, 5, w // 2, h // 3), fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
        image.save(root / name, quality=95)
    return root


def _synth(photos, out, *extra):
    return main(["synth", "--images", str(photos), "--patterns", PATTERNS, "--buckets", "0-30,30-60",
                 "--size", "48", "--seed", "3", "-o", str(out), *extra])


def _pixels(folder):
    return {p.name: np.asarray(Image.open(p)).tobytes() for p in sorted(folder.glob("*.png"))}


def test_synth_is_deterministic_and_manifest_lists_every_file(photos, tmp_path):
    assert _synth(photos, tmp_path / "a") == 0
    assert _synth(photos, tmp_path / "b") == 0
    a, b = _pixels(tmp_path / "a"), _pixels(tmp_path / "b")
    assert a == b and len(a) > 0

    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    entries = manifest["entries"]
    # 3 photos x (4 mask patterns x 2 buckets + 2 alpha patterns x the 0-30 bucket only)
    assert len(entries) == 3 * (4 * 2 + 2 * 1)
    listed = {e[k] for e in entries for k in ("input", "gt", "mask")}
    on_disk = {p.name for p in (tmp_path / "a").iterdir()} - {"manifest.json"}
    assert listed == on_disk
    assert len({e["id"] for e in entries}) == len(entries)
    assert manifest["seed"] == 3 and "pillow-default" in manifest["fonts"]
    for e in entries:
        hole = np.asarray(Image.open(tmp_path / "a" / e["mask"])) == 255
        assert hole.shape == (48, 48) and abs(hole.mean() - e["hole_ratio"]) < 1e-9
        assert Bucket.parse(e["bucket"]).contains(e["hole_ratio"])
        assert e["source"] in ("a.png", "sub/b.jpg", "c.png")
        if e["pattern"] == "image":
            assert not e["meta"]["noise_source"].endswith(e["source"])  # a different photo is pasted


def test_samples_do_not_depend_on_the_other_samples(photos, tmp_path):
    assert _synth(photos, tmp_path / "all") == 0
    assert main(["synth", "--images", str(photos), "--patterns", "text", "--buckets", "0-30", "--size", "48",
                 "--seed", "3", "-o", str(tmp_path / "one")]) == 0
    one, full = _pixels(tmp_path / "one"), _pixels(tmp_path / "all")
    assert one and all(full[name] == data for name, data in one.items())


def test_rerun_replaces_an_old_benchmark_and_refuses_other_folders(photos, tmp_path, capsys):
    out = tmp_path / "bench"
    assert _synth(photos, out) == 0
    assert main(["synth", "--images", str(photos), "--patterns", "noise", "--buckets", "0-30", "--size", "48",
                 "-o", str(out)]) == 0
    entries = json.loads((out / "manifest.json").read_text())["entries"]
    assert {p.name for p in out.iterdir()} == {e[k] for e in entries for k in ("input", "gt", "mask")} | {
        "manifest.json"}
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    assert main(["synth", "--images", str(photos), "-o", str(other)]) == 2
    assert "not empty" in capsys.readouterr().err and (other / "keep.txt").exists()


def test_bidirectional_entries(photos, tmp_path):
    out = tmp_path / "bi"
    assert main(["synth", "--images", str(photos), "--patterns", "image", "--buckets", "0-30", "--size", "48",
                 "--bidirectional", "-o", str(out)]) == 0
    samples = {s.id: s for s in load_bench(out)}
    assert len(samples) == 6
    base, inv = samples["0000_image_0-30_0"], samples["0000_image_0-30_0_inv"]
    assert np.array_equal(base.load_input(), inv.load_input())
    assert np.array_equal(base.load_hole(), ~inv.load_hole())
    assert not np.array_equal(base.load_gt(), inv.load_gt())


def test_load_bench_reads_samples_back(photos, tmp_path):
    out = tmp_path / "bench"
    assert _synth(photos, out, "--per-image", "2") == 0
    samples = load_bench(out)
    assert len(samples) == 2 * 3 * 10
    s = samples[0]
    assert s.load_input().shape == (48, 48, 3) and s.load_gt().dtype == np.uint8
    assert s.load_hole().dtype == bool and abs(s.load_hole().mean() - s.hole_ratio) < 1e-9
    assert len(load_bench(out, patterns=["text"], buckets=["0-30"])) == 2 * 3
    item = BenchDataset(out, patterns=["noise"])[0]
    assert item["corrupted"].shape == (3, 48, 48) and item["hole"].shape == (1, 48, 48)
    (out / samples[0].mask_path.name).unlink()
    with pytest.raises(UserError, match="missing"):
        load_bench(out)
    with pytest.raises(UserError, match="no manifest"):
        load_bench(tmp_path)


@pytest.mark.parametrize("args, message", [
    (["--patterns", "image,blur"], "unknown corruption pattern 'blur'"),
    (["--buckets", "90-100"], "not supported"),
    (["--buckets", "30-10"], "LOW must be smaller"),
    (["--patterns", "text", "--buckets", "30-60"], "up to 30 %"),
    (["--patterns", "logo", "--buckets", "0-30"], "needs logos"),
    (["--per-image", "0"], "at least 1"),
    (["--split", "test"], "no manifest.json"),
])
def test_bad_arguments_give_one_line_errors(photos, tmp_path, capsys, args, message):
    assert main(["synth", "--images", str(photos), "-o", str(tmp_path / "x"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("blindinpaint: error:")


def test_missing_and_empty_folders(tmp_path, capsys):
    assert main(["synth", "--images", str(tmp_path / "nope"), "-o", str(tmp_path / "x")]) == 2
    assert "not found" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["synth", "--images", str(tmp_path / "empty"), "-o", str(tmp_path / "x")]) == 2
    assert "no images found" in capsys.readouterr().err


# ----------------------------------------------------------------------------- dataset
def _cfg(photos, **kw):
    base = dict(root=str(photos), patterns=["image", "noise", "text"], buckets=["0-30", "30-60"], size=32)
    base.update(kw)
    return DataConfig(**base)


def _check_item(item, size=32):
    assert set(item) >= {"corrupted", "clean", "hole", "pattern", "hole_ratio"}
    assert item["corrupted"].shape == (3, size, size) and item["clean"].shape == (3, size, size)
    assert item["hole"].shape == (1, size, size)
    for key in ("corrupted", "clean", "hole"):
        assert item[key].dtype == torch.float32
    assert 0 <= item["corrupted"].min() and item["corrupted"].max() <= 1
    assert set(torch.unique(item["hole"]).tolist()) <= {0.0, 1.0}
    assert abs(item["hole"].mean().item() - item["hole_ratio"]) < 1e-6
    assert Bucket.parse(item["bucket"]).contains(item["hole_ratio"])


def test_training_items_are_reproducible_per_seed_index_epoch(photos):
    a = CorruptionDataset(_cfg(photos), train=True, seed=1, length=6)
    b = CorruptionDataset(_cfg(photos), train=True, seed=1, length=6)
    assert len(a) == 6
    for i in (0, 4, 2):  # any order
        _check_item(a[i])
        assert torch.equal(a[i]["corrupted"], b[i]["corrupted"]) and torch.equal(a[i]["hole"], b[i]["hole"])
    first = a[0]["corrupted"]
    a.set_epoch(1)
    assert not torch.equal(a[0]["corrupted"], first)
    c = CorruptionDataset(_cfg(photos), train=True, seed=2, length=6)
    assert not torch.equal(c[0]["corrupted"], first)
    # corrupted pixels differ from the clean target exactly where the corruption is
    item = b[3]
    changed = (item["corrupted"] - item["clean"]).abs().amax(0) > 0
    assert changed[item["hole"][0] > 0].float().mean() > 0.5


def test_items_do_not_depend_on_worker_count(photos):
    ds = build_dataset(_cfg(photos, num_workers=2), train=True, seed=0)
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2)
    batched = torch.cat([b["corrupted"] for b in loader])
    direct = torch.stack([ds[i]["corrupted"] for i in range(len(ds))])
    assert torch.equal(batched, direct)


def test_eval_items_cover_every_pattern_bucket_pair(photos):
    ds = CorruptionDataset(_cfg(photos), train=False, seed=0)
    assert len(ds) == 3 * 5  # text only in 0-30
    pairs = {(ds[i]["pattern"], ds[i]["bucket"]) for i in range(5)}
    assert pairs == {("image", "0-30"), ("image", "30-60"), ("noise", "0-30"), ("noise", "30-60"), ("text", "0-30")}
    again = CorruptionDataset(_cfg(photos), train=False, seed=0)
    again.set_epoch(5)  # evaluation ignores epochs
    assert torch.equal(ds[7]["corrupted"], again[7]["corrupted"])
    _check_item(ds[7])


def test_bidirectional_training_items(photos):
    ds = CorruptionDataset(_cfg(photos, patterns=["image"], buckets=["0-30"], bidirectional=1.0), train=True, seed=0)
    item = ds[0]
    assert item["hole_ratio"] >= 0.7  # the inverted mask of a 0-30 % corruption


@pytest.mark.parametrize("change, message", [
    ({"patterns": ["image", "blur"]}, "unknown pattern"),
    ({"patterns": ["image", "noise"], "pattern_weights": [1.0]}, "pattern_weights"),
    ({"patterns": ["image", "noise"], "pattern_weights": [0.0, 0.0]}, "positive sum"),
    ({"buckets": ["90-100"]}, "not supported"),
    ({"patterns": ["text"], "buckets": ["30-60"]}, "up to 30 %"),
    ({"bidirectional": 2.0}, "probability"),
    ({"size": 8}, "at least 16"),
    ({"mask_kind": "blob"}, "mask_kind"),
])
def test_config_validation(change, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(DataConfig, {"root": "x", **change})


def test_missing_root_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not found"):
        CorruptionDataset(DataConfig(root=str(tmp_path / "nope")), train=True)
