"""The benchmark scripts' own logic (benchmarks/*.py): doc sections, config grouping, the
hierarchical-vs-full measurement.  Small inputs only; no timing is asserted."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from blindinpaint.models.hcl import HCLNet
from blindinpaint.profile import count_parameters, load_for_profile

from helpers import make_gdn_export, make_hcl_export, micro_hcl_config, tiny_run_cfg, write_photos

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_configs  # noqa: E402
import bench_hierarchy  # noqa: E402
import no_corruption_scores  # noqa: E402
import pick_grid  # noqa: E402
import summarise_eval  # noqa: E402
import refiner_gradient_balance  # noqa: E402
from doc_section import replace_section  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # fixture in conftest.py


# ----------------------------------------------------------------------------- doc sections
def test_section_is_appended_then_replaced_in_place():
    doc = "# Title\n\nhand-written text\n"
    once = replace_section(doc, "bench_x", "| a |\n")
    assert once == "# Title\n\nhand-written text\n\n<!-- bench_x -->\n| a |\n<!-- /bench_x -->\n"
    twice = replace_section(once + "\nmore text after\n", "bench_x", "| b |")
    assert twice == ("# Title\n\nhand-written text\n\n<!-- bench_x -->\n| b |\n<!-- /bench_x -->\n"
                     "\nmore text after\n")
    assert replace_section(twice, "bench_x", "| b |") == twice              # idempotent
    assert "<!-- bench_y -->" in replace_section(twice, "bench_y", "y")     # other sections untouched
    assert "| b |" in replace_section(twice, "bench_y", "y")


@pytest.mark.parametrize("doc", ["<!-- bench_x -->\nonly the start\n", "<!-- /bench_x -->\n<!-- bench_x -->\n",
                                 "<!-- bench_x -->\n<!-- /bench_x -->\n<!-- bench_x -->\n<!-- /bench_x -->\n"])
def test_unbalanced_markers_are_an_error_not_an_overwrite(doc):
    with pytest.raises(ValueError):
        replace_section(doc, "bench_x", "new")


# ----------------------------------------------------------------------------- bench_configs
def test_identical_model_sections_are_grouped_and_non_models_skipped(tmp_path):
    hcl = (ROOT / "configs" / "hcl_tiny.yaml").read_text()
    (tmp_path / "tiny.yaml").write_text(hcl)
    (tmp_path / "tiny_ablation_loss.yaml").write_text(hcl.replace("steps:", "steps: 7 #"))  # training differs
    (tmp_path / "wider.yaml").write_text(hcl.replace("dim: 16", "dim: 24"))               # model differs
    (tmp_path / "notes.yaml").write_text("train: {steps: 3}\n")
    groups, skipped = bench_configs.discover(tmp_path)
    assert [g.names for g in groups] == [["tiny", "tiny_ablation_loss"], ["wider"]]
    assert groups[0].path == tmp_path / "tiny.yaml" and groups[0].label == "tiny (= tiny_ablation_loss)"
    assert groups[0].sizes() == [128, 256]          # 'tiny' in the name: also 128 px
    assert [name for name, _ in skipped] == ["notes"]


def test_repository_configs_that_differ_only_in_training_are_measured_once():
    groups, skipped = bench_configs.discover(ROOT / "configs")
    by_first = {g.names[0]: g.names for g in groups}
    assert by_first["gdn_cpu"][1:] == sorted(n for n in by_first["gdn_cpu"] if "ablation" in n)
    assert not skipped and len({n for g in groups for n in g.names}) == len(list((ROOT / "configs").glob("*.yaml")))
    assert next(g for g in groups if "hcl_places512" in g.names).sizes() == [256, 512]


@pytest.mark.parametrize("config", ["hcl_tiny", "seg_tiny", "gdn_cpu", "vcnet_cpu"])
def test_major_modules_add_up_to_the_total(config):
    task, cfg, _ = load_for_profile(str(ROOT / "configs" / f"{config}.yaml"))
    params = count_parameters(task, cfg)
    parts = bench_configs.major_modules(task, params)
    assert sum(parts.values()) == params["total"] and "other" not in parts
    if task == "hcl":
        assert parts["detection"] + parts["restoration"] == params["restoration"] + params["cluster_classifier"]


def test_gdn_macs_belong_to_the_generator():
    row = {"macs": 123, "macs_per_module": {}}
    assert bench_configs.macs_by_module("gdn", row) == {"generator": 123}
    row = {"macs": 10, "macs_per_module": {"stem": 1, "encoder": 2, "detector": 3, "refiner": 4}}
    assert bench_configs.macs_by_module("hcl", row) == {"detection": 3, "restoration": 3, "refiner": 4}


# ----------------------------------------------------------------------------- bench_hierarchy
@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """A corpus folder of 4 smooth photos: 3 in split 'test', 1 in 'train'."""
    root = tmp_path_factory.mktemp("corpus")
    write_photos(root / "photos", n=4, size=48)
    entries = [{"file": f"photos/p{i}.png", "split": "test" if i < 3 else "train"} for i in range(4)]
    (root / "manifest.json").write_text(json.dumps({"photos": entries}))
    return root


def test_samples_are_seeded_real_corruptions_of_the_split(corpus):
    a = bench_hierarchy.make_samples(corpus, "test", 2, 64, seed=3, patterns=["constant", "noise"], buckets=["30-60"])
    b = bench_hierarchy.make_samples(corpus, "test", 2, 64, seed=3, patterns=["constant", "noise"], buckets=["30-60"])
    assert [s.pattern for s in a] == ["constant", "noise"]                  # combinations in turn
    assert all(s.name in {"p0.png", "p1.png", "p2.png"} for s in a)         # only the 'test' split
    for x, y in zip(a, b):
        assert x.image.shape == (64, 64, 3) and x.image.dtype == np.uint8 and x.hole.shape == (64, 64)
        assert np.array_equal(x.image, y.image) and np.array_equal(x.hole, y.hole)
        assert 0.3 <= x.hole.mean() <= 0.6                                  # the requested bucket
    inside = np.abs(a[0].image[a[0].hole].astype(int) - 128)                # constant = mid grey (blurred edge)
    assert np.median(inside) <= 2 < np.median(np.abs(a[0].image[~a[0].hole].astype(int) - 128))


def test_full_mode_reclusters_everything_and_hierarchy_less(corpus):
    torch.manual_seed(0)
    net = HCLNet(micro_hcl_config()).eval()
    before = net.detector.cfg
    samples = bench_hierarchy.make_samples(corpus, "test", 2, 64, seed=0, patterns=["noise"], buckets=["30-60"])
    results = [bench_hierarchy.measure_sample(net, s, repeats=2) for s in samples]
    assert net.detector.cfg is before and before.hierarchical                # the model is left as it was
    for r in results:
        assert r["full"]["refined_fraction"] == [1.0, 1.0, 1.0]
        assert r["hierarchical"]["refined_fraction"][0] == 1.0
        assert all(f < 1.0 for f in r["hierarchical"]["refined_fraction"][1:])
        assert r["hierarchical"]["gathered_rows"][2] < r["full"]["gathered_rows"][2] == 64 * 64
        assert len(r["full"]["cluster_ms"]) == len(r["hierarchical"]["detect_ms"]) == 2
        tp, fp, fn = r["hierarchical"]["iou_counts"]
        assert tp + fn == pytest.approx(r["true_hole_fraction"] * 64 * 64)
    summary = bench_hierarchy.summarise(results)
    assert [row["stage"] for row in summary["stages"]] == ["S1", "S2", "S3"]
    assert summary["stages"][2]["full"]["mean"] == 1.0 > summary["stages"][2]["hierarchical"]["mean"]
    text = bench_hierarchy.render(summary, {
        "label": "test", "command": "python benchmarks/bench_hierarchy.py", "machine": "m", "threads": 1,
        "load_before": 0.0, "load_after": 0.0, "model": "micro", "split": "test", "corpus": "c", "size": 64,
        "patterns": "noise", "buckets": "30-60", "noise": "n", "seed": 0, "repeats": 2})
    assert text.count("| S") == 3 and "| hierarchical |" in text and "| full |" in text


# ----------------------------------------------------------------------------- no_corruption_scores
def test_no_corruption_scores_table_and_wrong_model(corpus, tmp_path, capsys):
    export = make_hcl_export(tmp_path / "hcl")
    args = ["--model", str(export), "--photos", str(corpus), "--split", "test", "--size", "64", "--threads", "1"]
    assert no_corruption_scores.main(args) == 0
    rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    table = {r[0].strip(): [c.strip() for c in r[1:]] for r in rows[1:]}
    assert set(table) == {"centre_cosine", "classifier_min_valid", "classifier_small_margin"}
    for clean_mean, cor_mean, auroc, counts in table.values():
        assert 0.0 <= float(auroc) <= 1.0 and counts.startswith("15 / ")   # 3 photos x 5 crops
    assert float(table["classifier_small_margin"][0]) <= 0 and -1 <= float(table["centre_cosine"][0]) <= 1
    head = make_hcl_export(tmp_path / "head", no_corruption="head")
    assert no_corruption_scores.main([*args[:1], str(head), *args[2:]]) == 0
    rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    table = {r[0].strip(): [c.strip() for c in r[1:]] for r in rows[1:]}
    assert "clean_head" in table and 0 <= float(table["clean_head"][0]) <= 1
    assert table["centre_cosine"] != table["clean_head"]
    gdn = make_gdn_export(tmp_path / "gdn")
    assert no_corruption_scores.main(["--model", str(gdn), "--photos", str(corpus), "--split", "test"]) == 2
    assert "'gdn' model" in capsys.readouterr().err


# ----------------------------------------------------------------------------- refiner_gradient_balance
def test_refiner_gradient_balance_scales_with_the_adversarial_weight(tmp_path, capsys):
    from blindinpaint.train import train

    photos = write_photos(tmp_path / "photos")
    phases = ("phases=[{name: p1, start: 0, flags: {gt_masks: true, train_refiner: false}, loss_weights: {adv: 0}}, "
              "{name: p2, start: 1, flags: {gt_masks: false, train_refiner: true}, loss_weights: {adv: 1.0}}, "
              "{name: weak, start: 2, flags: {gt_masks: false, train_refiner: true}, loss_weights: {adv: 0.001}}]")
    micro = ["model.dim=8", "model.encoder_depths=[1,1,1]", "model.encoder_heads=[1,1,2]", "model.bottleneck_depth=1",
             "model.bottleneck_heads=2", "model.decoder_depths=[1,1,1]", "model.window=4", "model.refiner_width=8",
             "model.refiner_levels=2", "loss.perceptual=none"]
    assert train(tiny_run_cfg("hcl", "hcl_tiny", tmp_path / "run", photos, 2, "", [*micro, phases])) == 0
    ckpt = str(next((tmp_path / "run" / "checkpoints").glob("step_*.pt")))
    norms = {}
    for phase in ("p2", "weak"):
        assert refiner_gradient_balance.main(["--checkpoint", ckpt, "--phase", phase, "--count", "2",
                                              "--threads", "1"]) == 0
        lines = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith(("adv_g", "pixel"))]
        norms[phase] = {row[0]: float(row[-1]) for row in lines}
    assert norms["p2"]["adv_g"] == pytest.approx(1000 * norms["weak"]["adv_g"], rel=1e-4)
    assert norms["p2"]["pixel_refined"] == pytest.approx(norms["weak"]["pixel_refined"], rel=1e-6)
    assert refiner_gradient_balance.main(["--checkpoint", ckpt, "--phase", "p1"]) == 2
    assert "does not train the refiner" in capsys.readouterr().err


# ----------------------------------------------------------------------------- pick_grid
def test_pick_grid_shows_the_best_and_worst_samples_best_first(corpus, tmp_path, capsys):
    import csv

    from PIL import Image

    from blindinpaint import evaluate as E
    from blindinpaint.data.bench import synth
    from blindinpaint.data.masks import parse_buckets
    from blindinpaint.predictors import load_predictor

    bench = tmp_path / "bench"
    synth(str(corpus), str(bench), ["constant"], parse_buckets("0-30,30-60"), per_image=2, size=32, seed=0,
          split="test", progress=False)                                          # 3 photos x 2 buckets x 2
    export = make_hcl_export(tmp_path / "hcl")
    E.evaluate([load_predictor(str(export))], [bench], tmp_path / "eval", fid_extractor=None, lpips=None,
               progress=False)
    ranked = pick_grid.ranked_ids(tmp_path / "eval" / "per_image.csv", "bench", "constant", "hcl", "composite/psnr")
    with open(tmp_path / "eval" / "per_image.csv", newline="") as f:
        psnr = {r["id"]: float(r["composite/psnr"]) for r in csv.DictReader(f)}
    assert len(ranked) == 12 and [psnr[i] for i in ranked] == sorted(psnr.values(), reverse=True)

    out = tmp_path / "grid.png"
    args = ["--eval", str(tmp_path / "eval"), "--bench", "bench", "--pattern", "constant", "--rank-by", "hcl",
            "--metric", "composite/psnr", "--model", str(export), "--rows", "2", "-o", str(out)]
    assert pick_grid.main(args) == 0
    with Image.open(out) as grid, Image.open(tmp_path / "eval" / "grid_constant.png") as three_rows:
        assert (grid.height - 30) * 3 == (three_rows.height - 30) * 4                # 4 rows vs evaluate's 3
    assert pick_grid.main([*args[:-8], "--metric", "no_such", *args[-6:]]) == 2
    assert "no column 'no_such'" in capsys.readouterr().err


def test_pick_grid_replays_a_given_mask_evaluation_with_the_true_masks(corpus, tmp_path, capsys):
    from blindinpaint import evaluate as E
    from blindinpaint.data.bench import synth
    from blindinpaint.data.masks import parse_buckets
    from blindinpaint.predictors import load_predictor

    bench = tmp_path / "bench"
    synth(str(corpus), str(bench), ["constant"], parse_buckets("0-30"), per_image=1, size=32, seed=0,
          split="test", progress=False)
    gdn = str(make_gdn_export(tmp_path / "gdn"))
    E.evaluate([load_predictor(gdn)], [bench], tmp_path / "eval", given_mask="true", fid_extractor=None,
               lpips=None, progress=False)
    args = ["--eval", str(tmp_path / "eval"), "--bench", "bench", "--pattern", "constant", "--rank-by",
            "gdn + true mask", "--metric", "composite/psnr", "--model", gdn, "--rows", "1",
            "-o", str(tmp_path / "grid.png")]
    assert pick_grid.main(args) == 0 and (tmp_path / "grid.png").is_file()  # GDN alone cannot detect
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    results["settings"]["given_mask"] = "model"
    (tmp_path / "eval" / "results.json").write_text(json.dumps(results))
    assert pick_grid.main(args) == 2
    assert "another model's masks" in capsys.readouterr().err


# ----------------------------------------------------------------------------- summarise_eval
def _results_file(path: Path, method: str, iou: float, bce: float) -> Path:
    records = [{"method": method, "bench": "seen", "pattern": "image", "bucket": b, "part": "final",
                "metrics": {"hole/iou/per_image": iou + k / 10, "bce/per_image": bce}} for k, b in enumerate(["0-30", "all"])]
    clean = [{"method": method, "bench": "clean:photos", "pattern": "clean", "bucket": "all", "part": "final",
              "metrics": {"fpr/per_image": bce / 10, "n_images": 4.0}}]
    path.write_text(json.dumps({"detection": records, "restoration": [], "clean": clean}))
    return path


def test_summarise_eval_merges_files_and_marks_the_best_per_direction(tmp_path, capsys):
    a = _results_file(tmp_path / "a.json", "hcl", iou=0.5, bce=0.9)
    b = _results_file(tmp_path / "b.json", "vcnet", iou=0.3, bce=0.4)
    assert summarise_eval.main([str(a), str(b), "--metrics", "hole/iou/per_image,bce/per_image"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert rows[0] == "| metric | method | 0-30 | all |"
    assert rows[1] == "| IoU ↑ (hole+) | hcl | **0.500** | **0.600** |"      # higher IoU is better
    assert rows[2] == "|  | vcnet | 0.300 | 0.400 |"
    assert rows[3] == "| BCE ↓ | hcl | 0.900 | 0.900 |"                       # lower BCE is better
    assert rows[4] == "|  | vcnet | **0.400** | **0.400** |"
    assert summarise_eval.main([str(a), "--clean"]) == 0
    assert "| hcl | photos | 0.09 | 4 |" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="'hcl' is in both"):
        summarise_eval.main([str(a), str(_results_file(tmp_path / "c.json", "hcl", iou=0.1, bce=0.1))])
    assert summarise_eval.main([str(tmp_path / "missing.json")]) == 2
