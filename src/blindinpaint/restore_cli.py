"""Runners of ``blindinpaint restore``, ``blindinpaint detect`` and ``blindinpaint models``.

Output contract (DESIGN.md "CLI contract"), for each input ``<stem>.<ext>``:

* ``restore``: ``OUT/<sub>/<stem>_restored.png`` and ``OUT/<sub>/<stem>_mask.png``;
* ``detect``:  ``OUT/<sub>/<stem>_mask.png`` only;
* ``--save-overlay``: ``<stem>_overlay.png`` (input with the mask tinted red);
  ``--save-confidence``: ``<stem>_confidence.png`` (16-bit grey, 65535 = surely corrupted);
* ``restore --grid FILE``: one PNG for a README or a report, a row per input restored successfully:
  input | mask (red overlay) | restored, each scaled to :data:`GRID_ROW_HEIGHT` pixels high.

Masks are 8-bit, 255 = corrupted, at the input's size; ``<sub>`` is an input's folder relative
to the folder argument it was found under.  Output collisions are reported before any work, the
model is loaded once, bad files are skipped and listed at the end (exit status 1), and under
``torchrun`` every rank takes its share of the inputs (``batch.run_batch``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Optional

import numpy as np

from .batch import InputItem, collect_inputs, plan_outputs, run_batch
from .errors import UserError

log = logging.getLogger(__name__)

RESTORED, MASK, OVERLAY, CONFIDENCE = "_restored.png", "_mask.png", "_overlay.png", "_confidence.png"
MASK_FOLDER_SUFFIXES = (".png", "_mask.png")
GRID_ROW_HEIGHT = 192   # pixels; every picture of a grid row is scaled to this height
GRID_GAP = 4            # white pixels between cells and around the grid
GRID_HEADER = 22        # height of the column-label strip


def _suffixes(args: argparse.Namespace, restoring: bool) -> list[str]:
    out = [RESTORED, MASK] if restoring else [MASK]
    if getattr(args, "save_overlay", False):
        out.append(OVERLAY)
    if getattr(args, "save_confidence", False):
        out.append(CONFIDENCE)
    return out


def _check_out_dir(out: str) -> Path:
    """Create the output folder and make sure it is writable, before any model or image is loaded."""
    folder = Path(out)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the output folder {folder}: {exc.strerror or exc}") from None
    if not folder.is_dir():
        raise UserError(f"output {folder} exists and is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"output folder {folder} is not writable")
    return folder


def find_mask(item: InputItem, mask_arg: str) -> Path:
    """The mask file of one input: ``--mask FILE`` itself, or in a ``--mask DIR`` the file
    ``<sub>/<stem>.png`` or ``<sub>/<stem>_mask.png`` (then the same names at the folder's top).

    Raises:
        UserError: (one line, naming the input) when the folder has no mask for it.
    """
    root = Path(mask_arg)
    if not root.is_dir():
        return root
    candidates = [root / item.relative_dir / f"{item.stem}{s}" for s in MASK_FOLDER_SUFFIXES]
    if item.relative_dir != Path("."):
        candidates += [root / f"{item.stem}{s}" for s in MASK_FOLDER_SUFFIXES]
    for path in candidates:
        if path.is_file() and path.resolve() != item.path.resolve():
            return path
    names = " or ".join(str(p) for p in candidates[:2])
    raise UserError(f"{item.path}: no mask in {root} (looked for {names})")


def check_grid_path(grid: str) -> Path:
    """Validate ``--grid FILE`` before any work: a ``.png`` name in a folder that exists (created
    here if needed) and is writable, not an existing folder, and a single process (under torchrun
    each rank only sees its share of the inputs).

    Raises:
        UserError: one line saying what is wrong with the path.
    """
    from .batch import resolve_rank

    path = Path(grid)
    if path.is_dir():
        raise UserError(f"--grid {grid} is a folder; give a file name such as {path / 'grid.png'}")
    if path.suffix.lower() != ".png":
        raise UserError(f"--grid {grid}: the grid is a PNG file, give a name ending in .png")
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--grid {grid}: cannot create the folder {folder}: {exc.strerror or exc}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"--grid {grid}: the folder {folder} is not writable")
    if path.exists() and not os.access(path, os.W_OK):
        raise UserError(f"--grid {grid}: the file exists and is not writable")
    _, world_size = resolve_rank()
    if world_size > 1:
        raise UserError("--grid needs a single process (under torchrun each rank restores only its share); "
                        "run 'blindinpaint restore ... --grid FILE' without torchrun")
    return path


def _fit_height(rgb: np.ndarray, height: int) -> np.ndarray:
    """``H x W x 3`` uint8 -> ``height x W' x 3`` uint8 with the aspect kept (Lanczos)."""
    from PIL import Image

    h, w = rgb.shape[:2]
    width = max(1, round(w * height / h))
    return np.asarray(Image.fromarray(rgb).resize((width, height), Image.Resampling.LANCZOS))


def grid_row(rgb: np.ndarray, hole: np.ndarray, restored: np.ndarray,
             height: int = GRID_ROW_HEIGHT) -> list[np.ndarray]:
    """The three cells of one grid row, each ``height x W' x 3`` uint8: the input (``H x W x 3``
    uint8), the input with ``hole`` (``H x W`` bool, True = corrupted) tinted red, the restored
    image (``H x W x 3`` uint8)."""
    from .api import overlay

    return [_fit_height(rgb, height), _fit_height(overlay(rgb, hole), height), _fit_height(restored, height)]


def render_grid(rows: list[list[np.ndarray]], labels: Optional[tuple[str, ...]] = None,
                gap: int = GRID_GAP) -> np.ndarray:
    """Rows of equally high cells -> one ``H x W x 3`` uint8 picture on white.

    Every column is as wide as its widest cell; narrower cells are centred.  ``labels`` (one per
    column) are written in a strip above the first row.
    """
    from PIL import Image, ImageDraw, ImageFont

    if not rows:
        raise ValueError("render_grid needs at least one row")
    n_cols = len(rows[0])
    height = rows[0][0].shape[0]
    widths = [max(row[c].shape[1] for row in rows) for c in range(n_cols)]
    header = GRID_HEADER if labels else 0
    total_w = sum(widths) + gap * (n_cols + 1)
    total_h = header + len(rows) * height + gap * (len(rows) + 1)
    canvas = np.full((total_h, total_w, 3), 255, np.uint8)
    lefts = [gap + sum(widths[:c]) + gap * c for c in range(n_cols)]
    for r, row in enumerate(rows):
        top = header + gap + r * (height + gap)
        for c, cell in enumerate(row):
            x = lefts[c] + (widths[c] - cell.shape[1]) // 2
            canvas[top:top + height, x:x + cell.shape[1]] = cell
    if labels:
        image = Image.fromarray(canvas)
        draw = ImageDraw.Draw(image)
        try:
            font = ImageFont.load_default(size=14)
        except TypeError:  # Pillow < 10.1: the fixed bitmap font
            font = ImageFont.load_default()
        for c, text in enumerate(labels[:n_cols]):
            box = draw.textbbox((0, 0), text, font=font)
            x = lefts[c] + max(0, (widths[c] - (box[2] - box[0])) // 2)
            draw.text((x, max(0, (header + gap - (box[3] - box[1])) // 2)), text, fill=(0, 0, 0), font=font)
        canvas = np.asarray(image)
    return canvas


def _confidence_png(confidence: np.ndarray) -> np.ndarray:
    """``H x W`` float [0, 1] -> ``H x W`` uint16 (65535 = 1)."""
    return np.rint(np.clip(confidence, 0.0, 1.0) * 65535.0).astype(np.uint16)


def _load_restorer(args: argparse.Namespace):
    from .api import Restorer

    restorer = Restorer.from_pretrained(args.model, device=args.device)
    log.info("model %s (%s) on %s", restorer.source, restorer.task, restorer.device)
    return restorer


def _run(args: argparse.Namespace, restoring: bool) -> int:
    from .api import load_input, overlay
    from .io import flatten_alpha, write_png

    mask_arg = getattr(args, "mask", None) if restoring else None
    if mask_arg is not None and not Path(mask_arg).exists():
        raise UserError(f"--mask {mask_arg}: no such file or folder")
    if args.threshold is not None and not 0.0 <= args.threshold < 1.0:
        raise UserError(f"--threshold must be in [0, 1), got {args.threshold}")
    if args.dilate < 0:
        raise UserError(f"--dilate must be >= 0 pixels, got {args.dilate}")
    items = collect_inputs(args.paths)
    plan = plan_outputs(items, args.out, _suffixes(args, restoring))
    grid_arg = getattr(args, "grid", None) if restoring else None
    grid_path = None if grid_arg is None else check_grid_path(grid_arg)
    grid_rows: list[list[np.ndarray]] = []
    if grid_path is not None and grid_path.resolve() in {p.resolve() for o in plan.values() for p in o.values()}:
        raise UserError(f"--grid {grid_arg} is also the name of a per-image output; choose another name")
    _check_out_dir(args.out)
    restorer = _load_restorer(args)
    common = dict(strategy=args.strategy, max_pixels=args.max_pixels)

    def work(item: InputItem) -> None:
        outputs = plan[item]
        loaded = load_input(item.path, args.max_pixels)
        mask_file: Optional[Path] = None if mask_arg is None else find_mask(item, mask_arg)
        restored_rgb = None
        if restoring:
            res = restorer.restore(loaded, mask=mask_file, threshold=args.threshold, dilate=args.dilate, **common)
            write_png(outputs[RESTORED], res.image)
            hole, confidence = res.mask, res.confidence
            restored_rgb = res.image
            if restored_rgb.shape[2] == 4:  # the grid shows what the model sees: alpha flattened on white
                restored_rgb = flatten_alpha(restored_rgb[..., :3], restored_rgb[..., 3])
        else:
            det = restorer.detect(loaded, threshold=args.threshold, dilate=args.dilate, **common)
            hole, confidence = det.mask, det.confidence
        write_png(outputs[MASK], hole)
        if OVERLAY in outputs:
            write_png(outputs[OVERLAY], overlay(loaded.rgb, hole))
        if CONFIDENCE in outputs:
            write_png(outputs[CONFIDENCE], _confidence_png(confidence))
        if grid_path is not None:  # last: only inputs whose every output was written get a row
            grid_rows.append(grid_row(loaded.rgb, hole, restored_rgb))

    report = run_batch(items, work, desc="restore" if restoring else "detect")
    report.print_summary()
    if grid_path is not None:
        if grid_rows:
            labels = ("input", "given mask" if mask_arg is not None else "detected mask", "restored")
            write_png(grid_path, render_grid(grid_rows, labels))
            print(f"grid of {len(grid_rows)} restored input(s): {grid_path}", file=sys.stderr)
        else:
            print(f"no input was restored: grid {grid_path} not written", file=sys.stderr)
    return report.exit_status()


def restore_main(args: argparse.Namespace) -> int:
    """``blindinpaint restore PATH... -o OUT``: restored image + mask per input."""
    return _run(args, restoring=True)


def detect_main(args: argparse.Namespace) -> int:
    """``blindinpaint detect PATH... -o OUT``: mask per input."""
    return _run(args, restoring=False)


# ---------------------------------------------------------------------------- models
def model_rows() -> list[dict]:
    """Installed models (``hub.list_models``) with parameter count and a fresh SHA-256 check.

    Each row: name, task, model, params, mb, source (user | bundled), path, sha256_ok
    (True / False, or None when config.json records no checksum).
    """
    from safetensors import safe_open

    from . import hub

    rows = []
    for entry in hub.list_models():
        folder = Path(entry["path"])
        weights = folder / hub.WEIGHTS_FILE
        params: Optional[int] = None
        sha_ok: Optional[bool] = None
        try:
            with safe_open(str(weights), framework="pt") as f:
                params = sum(int(np.prod(f.get_slice(k).get_shape())) for k in f.keys())
        except Exception:  # noqa: BLE001 - a damaged file is reported in the table, not fatal
            params = None
        try:
            meta = json.loads((folder / hub.CONFIG_FILE).read_text())
            expected = (meta.get("sha256") or {}).get(hub.WEIGHTS_FILE)
            sha_ok = None if not expected else hub.sha256_file(weights) == expected
        except (OSError, json.JSONDecodeError):
            sha_ok = False
        rows.append({**entry, "params": params, "sha256_ok": sha_ok})
    return rows


def models_main(args: argparse.Namespace) -> int:
    """``blindinpaint models [--json]``: bundled and user models; exit 1 if a checksum fails."""
    from . import hub

    rows = model_rows()
    if getattr(args, "json", False):
        print(json.dumps(rows, indent=2))
    elif not rows:
        print(f"no models installed (user folder {hub.home()}, bundled folder {hub.BUNDLED_DIR}); "
              f"pass an export folder or run directory with --model")
    else:
        header = ("name", "task", "params", "MB", "source", "sha256", "path")
        table = [header] + [
            (r["name"], str(r["task"]), "?" if r["params"] is None else f"{r['params']:,}", f"{r['mb']:.2f}",
             r["source"], {True: "ok", False: "MISMATCH", None: "none"}[r["sha256_ok"]], r["path"])
            for r in rows]
        widths = [max(len(row[i]) for row in table) for i in range(len(header))]
        for row in table:
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    bad = [r["name"] for r in rows if r["sha256_ok"] is False]
    if bad:
        print(f"damaged or modified weights: {', '.join(bad)}", file=sys.stderr)
    return 1 if bad else 0
