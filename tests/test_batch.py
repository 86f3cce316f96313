"""Batch runner: input discovery, output naming, collisions, skip-and-continue, rank sharding."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from blindinpaint.batch import BatchReport, InputItem, collect_inputs, plan_outputs, resolve_rank, run_batch
from blindinpaint.errors import UserError
from blindinpaint.io import read_image, write_png

SUFFIXES = ["_restored.png", "_mask.png"]


def _image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (3, 2), (10, 20, 30)).save(path)
    return path


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "in"
    _image(root / "a.jpg")
    _image(root / "sub" / "b.png")
    _image(root / "sub" / "deeper" / "c.webp")
    (root / "sub" / "notes.txt").write_text("not an image")
    loose = _image(tmp_path / "loose.png")
    return root, loose


def test_collect_inputs_keeps_relative_subfolders(tree):
    root, loose = tree
    items = collect_inputs([str(root), str(loose)])
    got = {(item.path.name, item.relative_dir.as_posix()) for item in items}
    assert got == {("a.jpg", "."), ("b.png", "sub"), ("c.webp", "sub/deeper"), ("loose.png", ".")}
    # Naming the same file twice (directly and via its folder at top level) keeps it once.
    again = collect_inputs([str(root), str(root / "a.jpg")])
    assert [item.path.name for item in again].count("a.jpg") == 1


def test_collect_inputs_errors(tmp_path):
    with pytest.raises(UserError, match="input not found: .*nothing"):
        collect_inputs([str(tmp_path / "nothing")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no images found in folder"):
        collect_inputs([str(tmp_path / "empty")])
    with pytest.raises(UserError, match="no input"):
        collect_inputs([])


def test_plan_outputs_follows_the_contract(tree, tmp_path):
    root, loose = tree
    out = tmp_path / "out"
    items = collect_inputs([str(root), str(loose)])
    plan = plan_outputs(items, out, SUFFIXES)
    by_name = {item.path.name: paths for item, paths in plan.items()}
    assert by_name["a.jpg"]["_restored.png"] == out / "a_restored.png"
    assert by_name["a.jpg"]["_mask.png"] == out / "a_mask.png"
    assert by_name["b.png"]["_mask.png"] == out / "sub" / "b_mask.png"
    assert by_name["c.webp"]["_restored.png"] == out / "sub" / "deeper" / "c_restored.png"
    assert by_name["loose.png"]["_mask.png"] == out / "loose_mask.png"


def test_collisions_reported_before_any_work(tmp_path):
    _image(tmp_path / "in" / "x.jpg")
    _image(tmp_path / "in" / "x.png")
    _image(tmp_path / "in" / "ok.png")
    items = collect_inputs([str(tmp_path / "in")])
    calls = []
    with pytest.raises(UserError) as info:
        plan = plan_outputs(items, tmp_path / "out", SUFFIXES)
        run_batch(items, lambda item: calls.append(plan[item]), progress=False)
    message = str(info.value)
    assert calls == [] and not (tmp_path / "out").exists()
    assert "x.jpg" in message and "x.png" in message and "x_mask.png" in message and "\n" not in message
    assert "ok.png" not in message
    # Same stem in different subfolders is fine: the subfolder keeps them apart.
    _image(tmp_path / "in2" / "p" / "x.png")
    _image(tmp_path / "in2" / "q" / "x.png")
    plan_outputs(collect_inputs([str(tmp_path / "in2")]), tmp_path / "out", SUFFIXES)


def test_output_overwriting_an_input_is_refused(tmp_path):
    _image(tmp_path / "x.png")
    _image(tmp_path / "x_mask.png")
    with pytest.raises(UserError, match="would overwrite the input"):
        plan_outputs(collect_inputs([str(tmp_path)]), tmp_path, ["_mask.png"])


def test_skip_and_continue(tmp_path, capsys):
    root = tmp_path / "in"
    _image(root / "good1.png")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    _image(root / "good2.png")
    (root / "crash.png").write_bytes(Path(root / "good1.png").read_bytes())
    items = collect_inputs([str(root)])
    plan = plan_outputs(items, tmp_path / "out", ["_copy.png"])

    def work(item: InputItem) -> None:
        if item.path.name == "crash.png":
            raise RuntimeError("model blew up\non two lines")
        loaded = read_image(item.path)
        write_png(plan[item]["_copy.png"], loaded.rgb)

    report = run_batch(items, work, desc="copy", progress=False)
    assert report.ok == 2 and report.total == 4 and report.exit_status() == 1
    failed = dict(report.failures)
    assert set(failed) == {root / "broken.png", root / "crash.png"}
    assert "corrupt" in failed[root / "broken.png"] and str(root / "broken.png") in failed[root / "broken.png"]
    assert failed[root / "crash.png"] == "RuntimeError: model blew up on two lines"
    assert (tmp_path / "out" / "good1_copy.png").is_file() and (tmp_path / "out" / "good2_copy.png").is_file()
    # Failures are shown as they happen, and listed again at the end.
    err = capsys.readouterr().err.splitlines()
    assert f"skipped {root / 'crash.png'}: RuntimeError: model blew up on two lines" in err
    assert sum(str(root / "broken.png") in line for line in err) == 1 and str(root / "broken.png") in err[0]
    summary = io.StringIO()
    report.print_summary(summary)
    lines = summary.getvalue().splitlines()
    assert lines[0].startswith("2 of 4 file(s) done, 2 failed")
    assert any(str(root / "broken.png") in line for line in lines[1:])
    good = [item for item in items if item.path.name.startswith("good")]
    assert run_batch(good, work, progress=False).exit_status() == 0


def test_keyboard_interrupt_is_not_swallowed(tmp_path):
    items = [InputItem(tmp_path / "a.png")]

    def interrupt(item):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_batch(items, interrupt, progress=False)


def test_rank_sharding_covers_every_item_once(tmp_path, monkeypatch):
    items = [InputItem(tmp_path / f"{i}.png") for i in range(11)]
    for world in (1, 2, 3, 4, 16):
        seen = []
        for rank in range(world):
            report = run_batch(items, lambda item: seen.append(item), rank=rank, world_size=world, progress=False)
            assert report.ok == len(items[rank::world]) and report.rank == rank
        assert sorted(seen, key=lambda i: int(i.path.stem)) == items
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    seen = []
    run_batch(items, seen.append, progress=False)
    assert seen == items[1::3]
    monkeypatch.setenv("RANK", "3")
    with pytest.raises(UserError, match="invalid rank 3 for world size 3"):
        resolve_rank()


def test_report_summary_all_ok():
    report = BatchReport(ok=3)
    out = io.StringIO()
    report.print_summary(out)
    assert report.exit_status() == 0 and out.getvalue().strip() == "3 of 3 file(s) done"
