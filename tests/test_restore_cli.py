"""``blindinpaint restore`` / ``detect`` / ``models``: output contract, bad files, masks, sharding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from blindinpaint import hub
from blindinpaint.cli import main

from helpers import make_hcl_export
from test_api import corrupted_image

pytestmark = pytest.mark.usefixtures("one_thread")  # fixture in conftest.py


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return make_hcl_export(tmp_path_factory.mktemp("model") / "hcl")


@pytest.fixture
def inputs(tmp_path) -> Path:
    """photos/a.png, photos/sub/b.jpg, photos/sub/deeper/c.png (RGBA)."""
    root = tmp_path / "photos"
    (root / "sub" / "deeper").mkdir(parents=True)
    Image.fromarray(corrupted_image(48, seed=0)).save(root / "a.png")
    Image.fromarray(corrupted_image(32, seed=1)[:, :24]).save(root / "sub" / "b.jpg", quality=95)
    rgba = np.dstack([corrupted_image(40, seed=2), np.full((40, 40), 255, np.uint8)])
    rgba[:5, :, 3] = 0
    Image.fromarray(rgba, "RGBA").save(root / "sub" / "deeper" / "c.png")
    return root


def _run(args, capsys):
    status = main([str(a) for a in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_restore_writes_the_contract_names_and_formats(model, inputs, tmp_path, capsys):
    out = tmp_path / "out"
    status, _, err = _run(["restore", inputs, "-o", out, "--model", model, "--device", "cpu"], capsys)
    assert status == 0, err
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*.png"))
    assert written == ["a_mask.png", "a_restored.png", "sub/b_mask.png", "sub/b_restored.png",
                       "sub/deeper/c_mask.png", "sub/deeper/c_restored.png"]
    mask = Image.open(out / "a_mask.png")
    assert mask.mode == "L" and mask.size == (48, 48)
    assert set(np.unique(np.asarray(mask))) <= {0, 255}
    restored = np.asarray(Image.open(out / "a_restored.png"))
    original = np.asarray(Image.open(inputs / "a.png"))
    hole = np.asarray(mask) == 255
    assert hole.any() and np.array_equal(restored[~hole], original[~hole])   # 255 = restored pixels
    assert Image.open(out / "sub" / "b_mask.png").size == (24, 32)
    c = Image.open(out / "sub" / "deeper" / "c_restored.png")
    assert c.mode == "RGBA" and np.array_equal(np.asarray(c)[..., 3], np.asarray(Image.open(
        inputs / "sub" / "deeper" / "c.png"))[..., 3])


def test_detect_writes_only_masks_and_optional_extras(model, inputs, tmp_path, capsys):
    out = tmp_path / "out"
    status, _, err = _run(["detect", inputs / "a.png", "-o", out, "--model", model, "--device", "cpu"], capsys)
    assert status == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["a_mask.png"]
    status, _, _ = _run(["detect", inputs / "a.png", "-o", out, "--model", model, "--save-confidence",
                         "--save-overlay", "--dilate", "2"], capsys)
    assert status == 0
    conf = Image.open(out / "a_confidence.png")
    assert conf.mode.startswith("I;16") and conf.size == (48, 48)
    conf_values = np.asarray(conf).astype(np.float64) / 65535.0
    grown = np.asarray(Image.open(out / "a_mask.png")) == 255
    assert grown[conf_values > 0.5 + 1e-4].all()    # the mask covers the confident pixels (then grows)
    assert np.asarray(Image.open(out / "a_overlay.png")).shape == (48, 48, 3)


def test_given_mask_file_and_folder_matched_by_stem(model, inputs, tmp_path, capsys):
    masks = tmp_path / "masks"
    (masks / "deeper").mkdir(parents=True)
    square = np.zeros((48, 48), np.uint8)
    square[10:20, 30:40] = 255
    Image.fromarray(square).save(masks / "a.png")
    Image.fromarray(np.full((32, 24), 255, np.uint8)).save(masks / "b_mask.png")
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(masks / "deeper" / "c.png")  # relative subfolder
    out = tmp_path / "out"
    status, _, err = _run(["restore", inputs / "a.png", inputs / "sub", "-o", out, "--model", model,
                           "--mask", masks], capsys)
    assert status == 0, err
    c_in = np.asarray(Image.open(inputs / "sub" / "deeper" / "c.png"))
    c_out = np.asarray(Image.open(out / "deeper" / "c_restored.png"))
    assert np.array_equal(c_in[5:], c_out[5:])    # an all-black mask restores nothing (opaque rows)
    restored = np.asarray(Image.open(out / "a_restored.png")).astype(int)
    original = np.asarray(Image.open(inputs / "a.png")).astype(int)
    changed = np.any(restored != original, axis=2)
    assert not changed[square == 0].any() and changed[square == 255].mean() > 0.5
    assert np.array_equal(np.asarray(Image.open(out / "a_mask.png")), square)
    # a single mask file for one input; a folder without a match fails that input only
    status, _, err = _run(["restore", inputs / "a.png", "-o", tmp_path / "o2", "--model", model,
                           "--mask", masks / "a.png"], capsys)
    assert status == 0, err
    (masks / "deeper" / "c.png").unlink()
    status, _, err = _run(["restore", inputs / "sub", "-o", tmp_path / "o3", "--model", model, "--mask", masks],
                          capsys)
    assert status == 1 and "no mask in" in err


def test_bad_files_are_skipped_listed_and_exit_nonzero(model, inputs, tmp_path, capsys):
    (inputs / "broken.png").write_bytes((inputs / "a.png").read_bytes()[:200])
    (inputs / "notes.png").write_text("not an image")
    Image.fromarray(np.zeros((200, 200, 3), np.uint8)).save(inputs / "huge.png")
    out = tmp_path / "out"
    status, _, err = _run(["restore", inputs, "-o", out, "--model", model, "--max-pixels", "5000"], capsys)
    assert status == 1
    assert (out / "a_restored.png").is_file() and (out / "sub" / "b_mask.png").is_file()
    assert not (out / "broken_restored.png").exists()
    tail = err[err.index("failed:"):].strip().splitlines()[1:]
    assert len(tail) == 3 and all(str(inputs) in line for line in tail)
    assert any("broken.png" in line and "truncated" in line for line in tail)
    assert any("notes.png" in line and "not an image" in line for line in tail)
    assert any("huge.png" in line and "BLINDINPAINT_MAX_PIXELS" in line for line in tail)


def test_collisions_and_unwritable_output_fail_before_any_work(model, inputs, tmp_path, capsys):
    Image.fromarray(corrupted_image(16)).save(inputs / "a.jpg")
    out = tmp_path / "out"
    status, _, err = _run(["restore", inputs, "-o", out, "--model", model], capsys)
    assert status == 2 and "collision" in err and len(err.strip().splitlines()) == 1
    assert not out.exists() or not any(out.rglob("*.png"))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    status, _, err = _run(["detect", inputs / "sub", "-o", blocker / "out", "--model", model], capsys)
    assert status == 2 and "output folder" in err


def test_missing_model_and_bad_options_are_one_line_errors(inputs, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("BLINDINPAINT_HOME", str(tmp_path / "home"))
    status, _, err = _run(["restore", inputs / "a.png", "-o", tmp_path / "o", "--model", "nope"], capsys)
    assert status == 2 and "no model 'nope'" in err and len(err.strip().splitlines()) == 1
    status, _, err = _run(["restore", inputs / "a.png", "-o", tmp_path / "o", "--mask", tmp_path / "none"], capsys)
    assert status == 2 and "--mask" in err
    status, _, err = _run(["detect", inputs / "a.png", "-o", tmp_path / "o2", "--threshold", "1.2"], capsys)
    assert status == 2 and "--threshold" in err
    assert not (tmp_path / "o2").exists()   # refused before any work


def test_inputs_are_sharded_by_rank(model, inputs, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    out = tmp_path / "out"
    status, _, err = _run(["detect", inputs, "-o", out, "--model", model, "--device", "cpu"], capsys)
    assert status == 0, err
    assert [p.name for p in out.rglob("*_mask.png")] == ["b_mask.png"]   # items[1::2] of a, b, c
    assert "[rank 1/2]" in err


def test_models_lists_user_models_with_checksum_status(model, tmp_path, capsys, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("BLINDINPAINT_HOME", str(home))
    monkeypatch.setattr(hub, "BUNDLED_DIR", tmp_path / "bundled")
    make_hcl_export(home / "mine")
    status, out, _ = _run(["models"], capsys)
    assert status == 0
    row = [line for line in out.splitlines() if line.startswith("mine")][0]
    params = sum(p.numel() for p in hub.build_model(hub.load(home / "mine")).parameters())
    assert "hcl" in row and f"{params:,}" in row and "user" in row and " ok " in row
    data = bytearray((home / "mine" / hub.WEIGHTS_FILE).read_bytes())
    data[-3] ^= 0xFF
    (home / "mine" / hub.WEIGHTS_FILE).write_bytes(bytes(data))
    status, out, err = _run(["models"], capsys)
    assert status == 1 and "MISMATCH" in out and "mine" in err
