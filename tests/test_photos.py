"""Offline photo corpus and assets: rcc unpacker, photo filter, dedup, split, licences, errors.

No downloads: every input is built in memory or in tmp_path.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import struct
import zlib

import numpy as np
import pytest
import zstandard
from PIL import Image, ImageDraw

from blindinpaint.data import photos
from blindinpaint.data.folders import list_photos
from blindinpaint.data.rcc import RccFile, read_rcc
from blindinpaint.errors import UserError


# ------------------------------------------------------------------------ rcc builder
def _name_record(name: str) -> bytes:
    encoded = name.encode("utf-16-be")
    return struct.pack(">HI", len(name), zlib.crc32(encoded)) + encoded


def make_rcc(version: int, tree: dict) -> bytes:
    """Build a Qt .rcc bundle. ``tree`` maps names to bytes (file) or dicts (directory);
    a file may be ``("zlib" | "zstd", bytes)`` to store it compressed."""
    names, data = bytearray(), bytearray()
    name_offsets: dict[str, int] = {}

    def name_offset(name: str) -> int:
        if name not in name_offsets:
            name_offsets[name] = len(names)
            names.extend(_name_record(name))
        return name_offsets[name]

    # Breadth-first numbering: the children of each directory are contiguous.
    nodes: list[tuple[str, object]] = [("", tree)]
    records: list[bytes] = []
    i = 0
    while i < len(nodes):
        name, item = nodes[i]
        noff = name_offset(name) if i else 0
        if isinstance(item, dict):
            first = len(nodes)
            nodes.extend(sorted(item.items()))
            record = struct.pack(">IHII", noff, 2, len(item), first)
        else:
            method, payload = item if isinstance(item, tuple) else (None, item)
            if method == "zlib":
                stored, flags = struct.pack(">I", len(payload)) + zlib.compress(payload), 1
            elif method == "zstd":
                stored, flags = zstandard.ZstdCompressor().compress(payload), 4
            else:
                stored, flags = payload, 0
            record = struct.pack(">IHHHI", noff, flags, 0, 0, len(data))
            data.extend(struct.pack(">I", len(stored)) + stored)
        if version >= 2:
            record += struct.pack(">Q", 0)  # last-modified time
        records.append(record)
        i += 1
    tree_blob = b"".join(records)
    header_size = 24 if version >= 3 else 20
    tree_off = header_size
    data_off = tree_off + len(tree_blob)
    names_off = data_off + len(data)
    header = b"qres" + struct.pack(">IIII", version, tree_off, data_off, names_off)
    if version >= 3:
        header += struct.pack(">I", 0)
    return header + tree_blob + bytes(data) + bytes(names)


BUNDLE = {
    "gcompris": {
        "src": {
            "erase": {"a.webp": ("zstd", b"zstd-photo" * 50), "notes.txt": ("zlib", b"hello " * 40)},
            "raw.bin": b"\x00\x01plain",
        },
    },
    "top.qml": b"Item {}",
}
EXPECTED = {
    "gcompris/src/erase/a.webp": b"zstd-photo" * 50,
    "gcompris/src/erase/notes.txt": b"hello " * 40,
    "gcompris/src/raw.bin": b"\x00\x01plain",
    "top.qml": b"Item {}",
}


@pytest.mark.parametrize("version", [1, 2, 3])
def test_rcc_unpacks_nested_compressed_tree(version, tmp_path):
    path = tmp_path / "x.rcc"
    path.write_bytes(make_rcc(version, BUNDLE))
    rcc = RccFile.open(path)
    assert rcc.node_size == (14 if version == 1 else 22)
    assert sorted(rcc.paths()) == sorted(EXPECTED)
    assert {e.path: e.data for e in read_rcc(path)} == EXPECTED
    assert [e.path for e in rcc.entries("gcompris/src/erase/")] == ["gcompris/src/erase/a.webp",
                                                                    "gcompris/src/erase/notes.txt"]


def test_rcc_rejects_non_bundle():
    with pytest.raises(UserError, match="qres"):
        RccFile(b"PK\x03\x04" + bytes(40), name="fake.rcc")


def test_rcc_real_webp_leaf_decodes():
    buf = io.BytesIO()
    Image.new("RGB", (8, 6), (10, 200, 30)).save(buf, "WEBP", lossless=True)
    blob = make_rcc(3, {"img": {"p.webp": ("zstd", buf.getvalue())}})
    (entry,) = RccFile(blob).entries()
    image = Image.open(io.BytesIO(entry.data))
    assert image.size == (8, 6) and image.getpixel((3, 3)) == (10, 200, 30)


# ------------------------------------------------------------------- synthetic images
def natural_like(seed: int, size=(320, 400)) -> Image.Image:
    """A photo-like texture: 1/f colour noise (smooth structure at every scale) + sensor noise."""
    rng = np.random.default_rng(seed)
    h, w = size
    fy, fx = np.meshgrid(np.fft.fftfreq(h), np.fft.fftfreq(w), indexing="ij")
    amplitude = 1.0 / np.maximum(np.hypot(fy, fx), 1.0 / max(h, w))
    channels = []
    for _ in range(3):
        spectrum = amplitude * np.exp(2j * np.pi * rng.random((h, w)))
        field = np.real(np.fft.ifft2(spectrum))
        channels.append((field - field.mean()) / field.std())
    img = np.stack(channels, -1) * 40 + 128 + rng.normal(0, 3, (h, w, 3))
    return Image.fromarray(img.clip(0, 255).astype(np.uint8))


def flat_drawing(size=(320, 400)) -> Image.Image:
    image = Image.new("RGB", (size[1], size[0]), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    draw.rectangle((20, 30, 180, 200), fill=(230, 60, 40), outline=(0, 0, 0), width=3)
    draw.ellipse((200, 60, 380, 260), fill=(40, 120, 220), outline=(0, 0, 0), width=3)
    draw.polygon([(50, 300), (150, 220), (250, 310)], fill=(250, 210, 30))
    return image


def test_photo_filter_rejects_drawing_accepts_natural_image():
    assert photos.photo_verdict(photos.photo_stats(natural_like(0))) is None
    drawing = photos.photo_verdict(photos.photo_stats(flat_drawing()))
    assert drawing is not None and drawing.startswith("drawing")
    # JPEG compression destroys exact flatness but the drawing must still be rejected.
    buf = io.BytesIO()
    flat_drawing().save(buf, "JPEG", quality=85)
    assert photos.photo_verdict(photos.photo_stats(Image.open(buf))) is not None
    grey = natural_like(1).convert("L").convert("RGB")
    assert photos.photo_verdict(photos.photo_stats(grey)) == "greyscale"


def test_prepare_drops_small_and_transparent(tmp_path):
    small = tmp_path / "small.png"
    natural_like(2, size=(200, 600)).save(small)
    assert photos._prepare(photos.Candidate("s", "small.png", "small", path=small)) == (None, "small")
    cutout = natural_like(3).convert("RGBA")
    alpha = np.full(cutout.size[::-1], 255, np.uint8)
    alpha[:, :100] = 0
    cutout.putalpha(Image.fromarray(alpha))
    path = tmp_path / "cut.png"
    cutout.save(path)
    kept, reason = photos._prepare(photos.Candidate("s", "cut.png", "cut", path=path))
    assert kept is None and reason.startswith("transparent")
    photo = tmp_path / "p.png"
    natural_like(4).save(photo)
    kept, reason = photos._prepare(photos.Candidate("s", "p.png", "p", path=photo))
    assert reason is None and kept.lossless and kept.image.mode == "RGB"


# ------------------------------------------------------------------------------ dedup
def test_dhash_dedup_finds_resized_recompressed_copy():
    original = natural_like(5)
    buf = io.BytesIO()
    original.resize((250, 200), Image.BILINEAR).save(buf, "JPEG", quality=60)
    copy = Image.open(buf)
    others = [natural_like(s) for s in (6, 7, 8)]
    images = [original] + others + [copy]
    assert photos.hamming(photos.dhash(original), photos.dhash(copy)) <= photos.DHASH_MAX_DISTANCE
    duplicates = photos.find_duplicates([photos.dhash(im) for im in images],
                                        [photos.thumbnail_signature(im) for im in images])
    assert duplicates == {4: 0}


def test_dedup_needs_thumbnail_confirmation():
    # Equal hashes alone would merge; uncorrelated signatures keep both images.
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=1024), rng.normal(size=1024)
    assert photos.find_duplicates([7, 7]) == {1: 0}
    assert photos.find_duplicates([7, 7], [a, b]) == {}


# ------------------------------------------------------------------------------ split
def test_split_deterministic_disjoint_and_sized():
    names = [f"img{i:03d}" for i in range(260)]
    sources = ["mate-backgrounds" if i % 13 == 0 else "scratch" for i in range(260)]
    first = photos.assign_splits(names, sources, seed=0)
    assert first == photos.assign_splits(names, sources, seed=0)
    assert first != photos.assign_splits(names, sources, seed=1)
    # Independent of input order: shuffling the inputs gives each name the same split.
    perm = np.random.default_rng(3).permutation(260)
    shuffled = photos.assign_splits([names[i] for i in perm], [sources[i] for i in perm], seed=0)
    assert {names[i]: s for i, s in zip(perm, shuffled)} == dict(zip(names, first))
    counts = {s: first.count(s) for s in photos.SPLITS}
    assert counts["test"] >= 40 and counts["val"] >= 20 and counts["noise_test"] == 20
    assert sum(counts.values()) == 260  # every image in exactly one split
    for label, source in zip(first, sources):
        assert (label == "noise_test") == (source == "mate-backgrounds")


def test_split_too_few_images_is_user_error():
    with pytest.raises(UserError, match="too few"):
        photos.assign_splits([f"x{i}" for i in range(50)], ["scratch"] * 50, seed=0)


# --------------------------------------------------------------------------- licences
COPYRIGHT = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/

Files: *
Copyright: someone
License: GPL-3+

Files: src/activities/erase/resource/tiger.jpg
       src/activities/erase/resource/bear*.png
Copyright: photographer
License: CC-BY-SA-3.0
 long text of the licence

Files: data/*
License: BSD-3-Clause
"""


def test_dep5_licence_lookup():
    stanzas = photos.parse_dep5(COPYRIGHT)
    assert photos.licence_for(stanzas, "src/activities/erase/resource/gorilla.webp", "?") == "GPL-3+"
    # Upstream .jpg shipped as .webp still matches its stanza.
    assert photos.licence_for(stanzas, "src/activities/erase/resource/tiger.webp", "?") == "CC-BY-SA-3.0"
    assert photos.licence_for(stanzas, "src/activities/erase/resource/bear01.png", "?") == "CC-BY-SA-3.0"
    # Installed paths are longer than upstream ones: trailing parts are matched.
    assert photos.licence_for(stanzas, "usr/share/doc/x/examples/data/fruits.jpg", "?") == "BSD-3-Clause"


# ------------------------------------------------------------------------- collectors
def test_plasma_takes_largest_image_of_photo_folders(tmp_path):
    base = tmp_path / "usr/share/wallpapers"
    for folder in ("Path", "Flow"):  # Path holds a photograph, Flow an abstract render
        images = base / folder / "contents/images"
        images.mkdir(parents=True)
        Image.new("RGB", (64, 40)).save(images / "640x400.png")
        Image.new("RGB", (128, 80)).save(images / "1280x800.png")
    (found,) = list(photos.plasma_candidates(tmp_path))
    assert found.name == "path" and found.path.name == "1280x800.png"


# ----------------------------------------------------------------------------- errors
def test_missing_apt_get_is_user_error(monkeypatch, tmp_path):
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda tool, *a, **k: None if tool == "apt-get" else real_which(tool))
    with pytest.raises(UserError, match="apt-get"):
        photos.photos_main(argparse.Namespace(dir=str(tmp_path / "c"), seed=0, cache=None))
    with pytest.raises(UserError, match="apt-get"):
        photos.assets_main(argparse.Namespace(dir=str(tmp_path / "a"), cache=None))
    assert not (tmp_path / "c").exists()  # nothing written before the check


def test_load_assets_absolute_paths_and_errors(tmp_path):
    with pytest.raises(UserError, match="blindinpaint data assets"):
        photos.load_assets(tmp_path)
    (tmp_path / "fonts").mkdir()
    (tmp_path / "fonts/f.ttf").write_bytes(b"font")
    manifest = {"fonts": [{"file": "fonts/f.ttf", "family": "F", "style": "plain", "source": "s",
                           "version": "1", "licence": "OFL-1.1", "sha256": "0"}],
                "logos": [{"file": "logos/l.png", "source": "openclipart-png", "version": "1",
                           "licence": "public-domain", "sha256": "0"}]}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="missing"):
        photos.load_assets(tmp_path)
    (tmp_path / "logos").mkdir()
    (tmp_path / "logos/l.png").write_bytes(b"png")
    loaded = photos.load_assets(tmp_path)
    assert loaded["fonts"][0]["file"] == str((tmp_path / "fonts/f.ttf").resolve())
    assert loaded["logos"][0]["file"] == str((tmp_path / "logos/l.png").resolve())


def test_is_alpha_logo(tmp_path):
    logo = Image.new("RGBA", (200, 160), (0, 0, 0, 0))
    ImageDraw.Draw(logo).ellipse((20, 20, 180, 140), fill=(200, 30, 30, 255))
    logo.save(tmp_path / "logo.png")
    Image.new("RGB", (200, 160), (200, 30, 30)).save(tmp_path / "opaque.png")
    logo.resize((20, 16)).save(tmp_path / "tiny.png")
    assert photos.is_alpha_logo(tmp_path / "logo.png")
    assert not photos.is_alpha_logo(tmp_path / "opaque.png")
    assert not photos.is_alpha_logo(tmp_path / "tiny.png")


def test_manifest_format_read_by_list_photos(tmp_path):
    # The manifest entries build_corpus writes are what folders.list_photos consumes.
    (tmp_path / "photos").mkdir()
    entries = []
    for i, split in enumerate(["train", "test", "noise_test"]):
        natural_like(i, size=(64, 64)).save(tmp_path / f"photos/p{i}.png")
        entries.append({"file": f"photos/p{i}.png", "source": "scratch", "version": "1", "licence": "GPL-2",
                        "width": 64, "height": 64, "sha256": "0", "split": split})
    (tmp_path / "manifest.json").write_text(json.dumps({"photos": entries, "seed": 0, "counts": {}}))
    assert list_photos(tmp_path, "noise_test") == [tmp_path / "photos/p2.png"]
    sheet = photos.contact_sheet(list_photos(tmp_path), tmp_path / "sheet.png",
                                 labels=[e["split"] for e in entries])
    assert Image.open(sheet).size[0] == 1400
