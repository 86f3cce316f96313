"""The ``blindinpaint`` command: one entry point, one subcommand per job.

Each ``_add_<command>`` function below declares that command's arguments and
names its runner as ``"module:function"``; the runner module is imported only
when the command runs, so ``blindinpaint --help`` stays fast.  A runner takes
the parsed ``argparse.Namespace`` and returns an exit status (0 = success).

Errors the user can cause raise :class:`blindinpaint.errors.UserError`; they are
printed as one line (``blindinpaint: error: ...``) with exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from . import __version__
from .errors import UserError


def _runner(target: str):
    return {"_runner": target}


# --------------------------------------------------------------------------- data
def _add_synth(sub) -> None:
    p = sub.add_parser("synth", help="write a seeded synthetic benchmark folder (input/gt/mask + manifest)")
    p.add_argument("--images", required=True, help="folder of clean photos (searched recursively) or a corpus folder")
    p.add_argument("--split", default=None, help="with a corpus folder: use the photos of this split (train/val/test)")
    p.add_argument("--patterns", default="image,constant,noise,text",
                   help="comma list of: image, constant, single_color, noise, graffiti, text, logo")
    p.add_argument("--buckets", default="0-30,30-60", help="comma list of hole-ratio buckets in percent, e.g. 0-30,30-60")
    p.add_argument("--per-image", type=int, default=1, help="samples per photo, pattern and bucket")
    p.add_argument("--size", type=int, default=256, help="side of the square samples in pixels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--noise-images", default=None,
                   help="folder of photos used as 'image' noise content (default: the --images photos)")
    p.add_argument("--noise-split", default=None,
                   help="with a corpus folder as --noise-images: use this split (e.g. noise_test)")
    p.add_argument("--assets", default=None, help="folder made by 'blindinpaint data assets' (fonts, logos)")
    p.add_argument("--bidirectional", action="store_true", help="also write the inverted-mask target for 'image'")
    p.add_argument("--blur-sigma", type=float, default=3.0,
                   help="boundary blur sigma in pixels at 256 px, scaled with --size (authors: 3)")
    p.add_argument("--mask-kind", default="brush", choices=("brush", "rect", "mixed"),
                   help="free-form brush strokes (authors' generator), rectangles, or both")
    p.add_argument("-o", "--out", required=True, help="output folder")
    p.set_defaults(**_runner("blindinpaint.data.bench:synth_main"))


def _add_data(sub) -> None:
    p = sub.add_parser("data", help="build the offline photo corpus and corruption assets from Debian packages")
    dsub = p.add_subparsers(dest="data_command", required=True, metavar="{photos,assets}")
    ph = dsub.add_parser("photos", help="extract real photographs from Debian packages + the scikit-image wheel")
    ph.add_argument("dir", help="output folder (photos + manifest.json + contact sheet)")
    ph.add_argument("--seed", type=int, default=0, help="seed of the train/val/test split")
    ph.add_argument("--cache", default=None, help="folder for downloaded .deb/.whl files (default DIR/.cache)")
    ph.set_defaults(**_runner("blindinpaint.data.photos:photos_main"))
    asp = dsub.add_parser("assets", help="fonts and logos for the text/graffiti/logo corruptions")
    asp.add_argument("dir", help="output folder (fonts/, logos/, manifest.json)")
    asp.add_argument("--cache", default=None, help="folder for downloaded .deb files (default DIR/.cache)")
    asp.set_defaults(**_runner("blindinpaint.data.photos:assets_main"))


# ------------------------------------------------------------------------- models
def _add_info(sub) -> None:
    p = sub.add_parser("info", help="parameters per module, MACs, latency and peak memory of a model or config")
    p.add_argument("model", help="config file (configs/*.yaml), bundled model name, export or run directory")
    p.add_argument("--size", type=int, default=256, help="square input side for MACs/latency")
    p.add_argument("--repeats", type=int, default=5, help="timed forward passes (median reported)")
    p.add_argument("--no-latency", action="store_true", help="skip the latency and memory measurement")
    p.add_argument("--no-refiner", action="store_true",
                   help="measure MACs/latency without the refinement network (params still list it)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--device", default="cpu")
    p.set_defaults(**_runner("blindinpaint.profile:info_main"))


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a model from a config (any model family; DDP under torchrun)",
                       epilog="multi-process: torchrun --nproc_per_node N -m blindinpaint.cli train --config ...")
    p.add_argument("--config", required=True, help="YAML config, e.g. configs/hcl_tiny.yaml")
    p.add_argument("overrides", nargs="*",
                   help="key=value overrides, e.g. data.root=DIR train.steps=1000 train.out=runs/x train.resume=latest")
    p.set_defaults(**_runner("blindinpaint.train.cli:train_main"))


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="export a run's weights as model.safetensors + config.json")
    p.add_argument("run", help="run directory or checkpoint file")
    p.add_argument("-o", "--out", required=True, help="output folder")
    p.add_argument("--fp32", action="store_true", help="store float32 instead of float16")
    p.add_argument("--checkpoint", choices=["latest", "best"], default="latest",
                   help="with a run directory: its newest checkpoint or the best by validation")
    p.add_argument("--no-ema", action="store_true", help="export the raw weights even if the run kept an EMA")
    p.add_argument("--drop-refiner", action="store_true",
                   help="HCL: leave out the refiner (for a run stopped before phase 2 trained it)")
    p.set_defaults(**_runner("blindinpaint.hub:export_main"))


# --------------------------------------------------------------------- evaluation
def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="detection + restoration metrics on benchmark folders -> tables, CSV, JSON, figures")
    p.add_argument("--model", action="append", default=[],
                   help="model name, export folder, run directory or checkpoint (repeat for a side-by-side table)")
    p.add_argument("--bench", action="append", default=[], help="benchmark folder made by 'blindinpaint synth' (repeatable)")
    p.add_argument("-o", "--out", default=None, help="output folder (results.json/.csv, per_image.csv, tables.md, figures)")
    p.add_argument("--given-mask", default="none",
                   help="mask the restoration uses: none (each model's own detection), true (the true mask), "
                        "or a MODEL whose predicted mask is fed to every --model (main Table 2)")
    p.add_argument("--clean", action="append", default=[],
                   help="folder of uncorrupted photos: false-positive rate and image change (repeatable)")
    p.add_argument("--clean-size", type=int, default=256, help="clean photos: centre crop resized to this side")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--grid-rows", type=int, default=3, help="samples per pattern in grid_<pattern>.png")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto|cpu|cuda|cuda:N|mps")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--render", default=None, metavar="RESULTS_JSON",
                   help="only render tables.md from a stored results.json (prints it; writes OUT/tables.md with -o)")
    p.set_defaults(**_runner("blindinpaint.evaluate:evaluate_main"))


def _add_bench(sub) -> None:
    p = sub.add_parser("bench", help="params, MACs, latency and peak memory of several models (supp. Table 5 layout)")
    p.add_argument("--models", required=True,
                   help="comma list of configs/<name>.yaml names, YAML paths, model names, exports or run folders")
    p.add_argument("--sizes", default="256", help="comma list of square input sides, e.g. 256,512")
    p.add_argument("--repeats", type=int, default=5, help="timed forward passes after warm-up (median reported)")
    p.add_argument("--no-refiner", action="store_true", help="HCL models: leave the refiner out of MACs and latency")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--device", default="auto", help="auto|cpu|cuda|cuda:N|mps")
    p.add_argument("-o", "--out", default=None, help="output folder (bench.md + bench.json)")
    p.set_defaults(**_runner("blindinpaint.evaluate:bench_main"))


# ------------------------------------------------------------------------ product
def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _add_product_options(p, restoring: bool) -> None:
    """Options shared by ``restore`` and ``detect`` (DESIGN.md "CLI contract")."""
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders (searched recursively)")
    p.add_argument("-o", "--out", required=True, help="output folder (inputs' subfolders are kept under it)")
    p.add_argument("--model", default="default",
                   help="bundled/user model name, export folder, run directory or checkpoint (default: default)")
    p.add_argument("--device", default="auto", help="auto|cpu|cuda|cuda:N|mps")
    p.add_argument("--threshold", type=float, default=None,
                   help="detection threshold on the confidence in [0, 1) (default 0.5, the model's decision)")
    p.add_argument("--dilate", type=int, default=0, metavar="N",
                   help="grow the mask by N pixels" + (" before restoring" if restoring else ""))
    p.add_argument("--strategy", choices=["auto", "resize", "tile"], default="auto",
                   help="auto: one pass up to 1024 px, tiles above; tile: overlapping tiles sharing one "
                        "clustering; resize: run at 512 px and upsample")
    p.add_argument("--max-pixels", type=_positive_int, default=None, metavar="N",
                   help="refuse larger images (default $BLINDINPAINT_MAX_PIXELS or 64 megapixels)")
    p.add_argument("--save-overlay", action="store_true", help="also write <stem>_overlay.png (mask tinted red)")
    p.add_argument("--save-confidence", action="store_true",
                   help="also write <stem>_confidence.png (16-bit grey, 65535 = surely corrupted)")


def _add_restore(sub) -> None:
    p = sub.add_parser("restore", help="blind restoration: writes OUT/<stem>_restored.png and OUT/<stem>_mask.png",
                       epilog="mask PNGs: 8-bit, 255 = corrupted. Exit status 0 only when every input succeeded.")
    _add_product_options(p, restoring=True)
    p.add_argument("--mask", default=None, metavar="FILE_OR_DIR",
                   help="skip detection: a mask file (white = corrupted) or a folder matched by stem "
                        "(<stem>.png or <stem>_mask.png)")
    p.add_argument("--grid", default=None, metavar="FILE",
                   help="also write one PNG (e.g. docs/restore_grid.png) with a row per restored input: "
                        "input | mask (red overlay) | restored, 192 px high; failed inputs are left out")
    p.set_defaults(**_runner("blindinpaint.restore_cli:restore_main"))


def _add_detect(sub) -> None:
    p = sub.add_parser("detect", help="corruption detection: writes OUT/<stem>_mask.png (255 = corrupted)")
    _add_product_options(p, restoring=False)
    p.set_defaults(**_runner("blindinpaint.restore_cli:detect_main"))


def _add_inpaint(sub) -> None:
    p = sub.add_parser("inpaint", help="mask-given inpainting (GDN): writes OUT/<stem>_inpainted.png",
                       epilog="Pixels outside the mask are copied back bit-identical. Exit status 0 only when "
                              "every input succeeded.")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders (searched recursively)")
    p.add_argument("--mask", required=True, metavar="FILE_OR_DIR",
                   help="white = fill: one mask file for every input, or a folder matched by stem "
                        "(<stem>.png or <stem>_mask.png)")
    p.add_argument("-o", "--out", required=True, help="output folder (inputs' subfolders are kept under it)")
    p.add_argument("--model", default="gdn",
                   help="GDN model name, export folder, run directory or checkpoint (default: the bundled gdn); "
                        "an HCL model also works, in given-mask mode")
    p.add_argument("--dilate", type=int, default=0, metavar="N", help="grow the mask by N pixels before filling")
    p.add_argument("--device", default="auto", help="auto|cpu|cuda|cuda:N|mps")
    p.add_argument("--strategy", choices=["auto", "resize", "tile"], default="auto",
                   help="auto: one pass up to 1024 px, tiles above; tile: overlapping tiles; "
                        "resize: run at 512 px and upsample the fill")
    p.add_argument("--max-pixels", type=_positive_int, default=None, metavar="N",
                   help="refuse larger images (default $BLINDINPAINT_MAX_PIXELS or 64 megapixels)")
    p.set_defaults(**_runner("blindinpaint.inpaint_cli:inpaint_main"))


def _add_inspect(sub) -> None:
    p = sub.add_parser("inspect", help="artifact heat map of any inpainted image (GDN dense detector): writes "
                                       "OUT/<stem>_artifacts.png and OUT/<stem>_artifacts16.png",
                       epilog="_artifacts.png: the image blended with the heat map (bright = looks generated); "
                              "_artifacts16.png: 16-bit grey, value/65535 = P(artifact). Exit status 0 only "
                              "when every input succeeded.")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders (searched recursively)")
    p.add_argument("-o", "--out", required=True, help="output folder (inputs' subfolders are kept under it)")
    p.add_argument("--model", default="gdn",
                   help="GDN model name, export folder, run directory or checkpoint (default: the bundled gdn)")
    p.add_argument("--device", default="auto", help="auto|cpu|cuda|cuda:N|mps")
    p.add_argument("--strategy", choices=["auto", "tile"], default="auto",
                   help="auto: one pass up to 1024 px, overlapping tiles above; tile: always tiles")
    p.add_argument("--max-pixels", type=_positive_int, default=None, metavar="N",
                   help="refuse larger images (default $BLINDINPAINT_MAX_PIXELS or 64 megapixels)")
    p.set_defaults(**_runner("blindinpaint.inpaint_cli:inspect_main"))


def _add_models(sub) -> None:
    p = sub.add_parser("models", help="list bundled and user models (name, task, params, size, source, sha256)")
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p.set_defaults(**_runner("blindinpaint.restore_cli:models_main"))


def _add_serve(sub) -> None:
    p = sub.add_parser("serve", help="web page + HTTP API (detect, restore, inpaint, inspect) on http://127.0.0.1:7860",
                       epilog="API reference at /docs; see docs/serve.md. Needs the 'serve' extra.")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1, this machine only; the server has no authentication)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--model", default="default",
                   help="blind restoration model (HCL): name, export folder, run directory or checkpoint")
    p.add_argument("--inpaint-model", default="gdn", metavar="NAME",
                   help="GDN model for /api/inpaint and /api/inspect (default: the bundled gdn; "
                        "if it is missing they answer 503)")
    p.add_argument("--device", default="auto", help="auto|cpu|cuda|cuda:N|mps")
    p.add_argument("--max-upload-mb", type=float, default=25.0, help="largest request body in MB (413 above)")
    p.add_argument("--max-pixels", type=_positive_int, default=16_000_000, metavar="N",
                   help="largest image in pixels (413 above; default 16 megapixels)")
    p.set_defaults(**_runner("blindinpaint.serve:serve_main"))


COMMANDS = [_add_synth, _add_data, _add_info, _add_train, _add_export, _add_evaluate, _add_bench]
COMMANDS += [_add_restore, _add_detect, _add_models]
COMMANDS += [_add_serve]
COMMANDS += [_add_inpaint, _add_inspect]


def _add_calibrate(sub) -> None:
    p = sub.add_parser("calibrate", help="choose an HCL model's no-corruption threshold on clean validation photos")
    p.add_argument("model", help="model name, export folder, run directory or checkpoint (HCL)")
    p.add_argument("--photos", required=True, help="corpus folder (with --split) or plain folder of clean photos")
    p.add_argument("--split", default="val", help="corpus split of the calibration photos (ignored for a plain folder)")
    p.add_argument("--size", default="128", help="side of the square crops in pixels, or a comma list of sides "
                   "(e.g. 128,256: the threshold must hold at every size the model is used at)")
    p.add_argument("--max-fpr", type=float, default=0.02, help="bound on the clean-photo pixel false-positive rate")
    p.add_argument("--patterns", default="image,constant,single_color,noise,graffiti,text,logo",
                   help="comma list of corruption patterns for the recall-loss measurement")
    p.add_argument("--assets", default=None, help="folder made by 'blindinpaint data assets' (text/logo patterns)")
    p.add_argument("--crops", type=int, default=None, help="crops per photo: 1 (centre) or 5 (+ four corners); "
                   "default 5 with fewer than 64 photos")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0, help="seed of the corrupted samples")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--write", action="store_true",
                   help="store the threshold (rule on) and a calibration record in the export's config.json")
    p.set_defaults(**_runner("blindinpaint.calibrate:calibrate_main"))


COMMANDS += [_add_calibrate]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="blindinpaint", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"blindinpaint {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    module_name, func_name = args._runner.split(":")
    try:
        func = getattr(importlib.import_module(module_name), func_name)
        status = func(args)
    except UserError as exc:
        print(f"blindinpaint: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("blindinpaint: interrupted", file=sys.stderr)
        return 130
    return int(status or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
