"""``blindinpaint restore --grid FILE``: one before/after picture, a row per restored input."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from blindinpaint import restore_cli
from blindinpaint.cli import main
from blindinpaint.restore_cli import GRID_GAP, GRID_HEADER, GRID_ROW_HEIGHT, _fit_height, render_grid

from helpers import make_hcl_export
from test_api import corrupted_image

pytestmark = pytest.mark.usefixtures("one_thread")  # fixture in conftest.py


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return make_hcl_export(tmp_path_factory.mktemp("model") / "hcl")


@pytest.fixture
def inputs(tmp_path) -> Path:
    """photos/a.png (48 x 48), photos/b.png (32 high x 64 wide), photos/broken.png (not an image)."""
    root = tmp_path / "photos"
    root.mkdir()
    Image.fromarray(corrupted_image(48, seed=0)).save(root / "a.png")
    wide = np.concatenate([corrupted_image(32, seed=1), corrupted_image(32, seed=2)], axis=1)
    Image.fromarray(wide).save(root / "b.png")
    (root / "broken.png").write_bytes(b"this is not a PNG")
    return root


def _cell(grid: np.ndarray, row: int, col: int, widths: list[int], cell_width: int) -> np.ndarray:
    """The picture in grid cell (row, col), given every column's width and this cell's width."""
    top = GRID_HEADER + GRID_GAP + row * (GRID_ROW_HEIGHT + GRID_GAP)
    left = GRID_GAP + sum(widths[:col]) + GRID_GAP * col + (widths[col] - cell_width) // 2
    return grid[top:top + GRID_ROW_HEIGHT, left:left + cell_width]


def test_grid_has_a_row_per_good_input_and_is_written_despite_failures(model, inputs, tmp_path, capsys):
    out, grid_file = tmp_path / "out", tmp_path / "figs" / "grid.png"   # figs/ does not exist yet
    status = main(["restore", str(inputs), "-o", str(out), "--model", str(model), "--device", "cpu",
                   "--grid", str(grid_file)])
    err = capsys.readouterr().err
    assert status == 1 and "broken.png" in err                  # the bad file failed, the batch went on
    assert grid_file.is_file() and "grid of 2 restored input(s)" in err
    grid = np.asarray(Image.open(grid_file).convert("RGB"))
    assert grid.shape[0] == GRID_HEADER + 2 * GRID_ROW_HEIGHT + 3 * GRID_GAP   # two rows: a, b
    widths = [_fit_height(np.zeros((32, 64, 3), np.uint8), GRID_ROW_HEIGHT).shape[1]] * 3   # b is the widest
    assert grid.shape[1] == sum(widths) + 4 * GRID_GAP
    for row, stem in enumerate(["a", "b"]):                     # input order; broken.png left out
        given = np.asarray(Image.open(inputs / f"{stem}.png").convert("RGB"))
        restored = np.asarray(Image.open(out / f"{stem}_restored.png").convert("RGB"))
        hole = np.asarray(Image.open(out / f"{stem}_mask.png")) == 255
        want_input, want_restored = _fit_height(given, GRID_ROW_HEIGHT), _fit_height(restored, GRID_ROW_HEIGHT)
        w = want_input.shape[1]
        assert np.array_equal(_cell(grid, row, 0, widths, w), want_input)
        assert np.array_equal(_cell(grid, row, 2, widths, w), want_restored)
        tinted = _cell(grid, row, 1, widths, w)
        if hole.any():   # the overlay cell differs from the input exactly where the mask tints it red
            assert not np.array_equal(tinted, want_input)
            assert tinted[..., 0].astype(int).sum() >= want_input[..., 0].astype(int).sum()


def test_unwritable_grid_folder_is_refused_before_any_work(model, inputs, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the grid's folder should be")
    status = main(["restore", str(inputs / "a.png"), "-o", str(out), "--model", str(model),
                   "--grid", str(blocker / "grid.png")])
    err = capsys.readouterr().err
    assert status == 2 and "--grid" in err and "cannot create the folder" in err
    assert not out.exists()                                     # nothing was done

    read_only = tmp_path / "read_only"
    read_only.mkdir()
    real_access = os.access
    monkeypatch.setattr(restore_cli.os, "access",               # root ignores chmod: simulate the check
                        lambda p, mode: False if Path(p) == read_only else real_access(p, mode))
    monkeypatch.setattr(restore_cli, "_load_restorer", lambda args: pytest.fail("model loaded"))
    status = main(["restore", str(inputs / "a.png"), "-o", str(out), "--model", str(model),
                   "--grid", str(read_only / "grid.png")])
    err = capsys.readouterr().err
    assert status == 2 and f"the folder {read_only} is not writable" in err
    assert not out.exists()


@pytest.mark.parametrize("name, message", [("grid.jpg", "ending in .png"), ("adir", "is a folder")])
def test_bad_grid_names_are_refused(model, inputs, tmp_path, capsys, name, message):
    (tmp_path / "adir").mkdir()
    status = main(["restore", str(inputs / "a.png"), "-o", str(tmp_path / "out"), "--model", str(model),
                   "--grid", str(tmp_path / name)])
    assert status == 2 and message in capsys.readouterr().err


def test_grid_under_several_ranks_is_refused(model, inputs, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    status = main(["restore", str(inputs / "a.png"), "-o", str(tmp_path / "out"), "--model", str(model),
                   "--grid", str(tmp_path / "grid.png")])
    assert status == 2 and "single process" in capsys.readouterr().err


def test_render_grid_centres_narrow_cells_and_labels_columns():
    red = np.zeros((10, 6, 3), np.uint8)
    red[..., 0] = 255
    blue = np.zeros((10, 12, 3), np.uint8)
    blue[..., 2] = 255
    grid = render_grid([[red, red], [blue, blue]], labels=("in", "out"), gap=2)
    assert grid.shape == (GRID_HEADER + 2 * 10 + 3 * 2, 2 * 12 + 3 * 2, 3)
    top = GRID_HEADER + 2
    assert np.array_equal(grid[top:top + 10, 2 + 3:2 + 9], red)              # centred in a 12-wide column
    assert (grid[top:top + 10, 2:2 + 3] == 255).all()                        # white margin beside it
    assert np.array_equal(grid[top + 12:top + 22, 2:14], blue)
    assert (grid[:GRID_HEADER] < 128).any()                                  # label text drawn
    assert render_grid([[red]]).shape[0] == 10 + 2 * GRID_GAP                # no labels, no header strip
