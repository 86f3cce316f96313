"""Runners of ``blindinpaint inpaint`` and ``blindinpaint inspect`` (GDN product commands).

Output contract (scripts outside the project rely on these names), for each input ``<stem>.<ext>``:

* ``inpaint``: ``OUT/<sub>/<stem>_inpainted.png``, the input with the ``--mask`` pixels (white =
  fill) filled, at the input size; every pixel outside the mask is bit-identical to the (8-bit)
  input, and an RGBA input keeps its alpha;
* ``inspect``: ``OUT/<sub>/<stem>_artifacts.png``, an RGB preview (the input blended half and half
  with the heat map in an inferno-like colour map: dark = looks real, bright yellow = looks
  generated), and ``OUT/<sub>/<stem>_artifacts16.png``, the raw heat map as a 16-bit grey PNG at
  the input size: ``value / 65535`` = the dense detector's probability that the pixel is an
  inpainting artifact.

``<sub>`` is an input's folder relative to the folder argument it was found under.  The batch
machinery is the one of ``restore`` (:mod:`blindinpaint.batch`): collisions are reported before
any work, the model is loaded once, bad files are skipped and listed at the end (exit status 1),
and under ``torchrun`` every rank takes its share of the inputs.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from .batch import InputItem, collect_inputs, plan_outputs, run_batch
from .errors import UserError
from .restore_cli import _check_out_dir, _confidence_png, _load_restorer, find_mask

log = logging.getLogger(__name__)

INPAINTED, ARTIFACTS, ARTIFACTS16 = "_inpainted.png", "_artifacts.png", "_artifacts16.png"


def inpaint_main(args: argparse.Namespace) -> int:
    """``blindinpaint inpaint PATH... --mask FILE_OR_DIR -o OUT``: ``<stem>_inpainted.png`` per input.

    The mask lookup is ``restore --mask``'s (:func:`blindinpaint.restore_cli.find_mask`): one file
    for every input, or a folder holding ``<stem>.png`` / ``<stem>_mask.png``; white = fill.
    """
    from .api import load_input
    from .io import write_png

    if not Path(args.mask).exists():
        raise UserError(f"--mask {args.mask}: no such file or folder")
    if args.dilate < 0:
        raise UserError(f"--dilate must be >= 0 pixels, got {args.dilate}")
    items = collect_inputs(args.paths)
    plan = plan_outputs(items, args.out, [INPAINTED])
    _check_out_dir(args.out)
    restorer = _load_restorer(args)

    def work(item: InputItem) -> None:
        loaded = load_input(item.path, args.max_pixels)
        result = restorer.inpaint(loaded, find_mask(item, args.mask), dilate=args.dilate,
                                  strategy=args.strategy, max_pixels=args.max_pixels)
        write_png(plan[item][INPAINTED], result.image)

    report = run_batch(items, work, desc="inpaint")
    report.print_summary()
    return report.exit_status()


def inspect_main(args: argparse.Namespace) -> int:
    """``blindinpaint inspect PATH... -o OUT``: artifact heat map (preview + 16-bit) per input."""
    from .api import artifact_overlay, load_input
    from .io import write_png

    items = collect_inputs(args.paths)
    plan = plan_outputs(items, args.out, [ARTIFACTS, ARTIFACTS16])
    _check_out_dir(args.out)
    restorer = _load_restorer(args)
    restorer._need_detector()  # one clear error for the whole run, not one per file

    def work(item: InputItem) -> None:
        loaded = load_input(item.path, args.max_pixels)
        heat = restorer.inspect(loaded, strategy=args.strategy, max_pixels=args.max_pixels)
        write_png(plan[item][ARTIFACTS], artifact_overlay(loaded.rgb, heat))
        write_png(plan[item][ARTIFACTS16], _confidence_png(heat))

    report = run_batch(items, work, desc="inspect")
    report.print_summary()
    return report.exit_status()
