"""Run one job over many image files: input discovery, output naming, skip-and-report.

The CLI contract (DESIGN.md) for ``restore`` / ``detect`` / ``inpaint``:

* ``PATH...`` are image files or folders; folders are searched recursively and each
  image keeps its subfolder relative to the folder it was found in;
* ``OUT/<subfolder>/<stem><suffix>`` is each output; two inputs mapping to the same
  output is an error reported *before any work* (:func:`plan_outputs`);
* a bad file is reported and skipped, the batch continues, the bad files are listed
  at the end and the exit status is non-zero (:class:`BatchReport`);
* under ``torchrun`` each rank takes ``items[rank::world_size]``.

Typical use::

    items = collect_inputs(args.paths)
    plan = plan_outputs(items, args.out, ["_restored.png", "_mask.png"])
    report = run_batch(items, lambda item: work(item, plan[item]), desc="restore")
    report.print_summary()
    return report.exit_status()
"""

from __future__ import annotations

import os
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, TextIO

from tqdm import tqdm

from .data.folders import list_images
from .errors import UserError


@dataclass(frozen=True)
class InputItem:
    """One input file.

    Attributes:
        path: the file.
        relative_dir: its folder relative to the folder argument it was found under
            (``Path(".")`` for files named directly); outputs mirror it under ``OUT``.
    """

    path: Path
    relative_dir: Path = Path(".")

    @property
    def stem(self) -> str:
        return self.path.stem


def collect_inputs(paths: Iterable[str | os.PathLike]) -> list[InputItem]:
    """Expand files and folders (recursively) into :class:`InputItem` s, in argument order.

    A file named directly is taken whatever its extension (reading it reports a
    non-image); folders contribute the image files ``blindinpaint.data.folders.list_images``
    finds.  The same file reached twice with the same relative folder is kept once.

    Raises:
        UserError: a path does not exist, a folder holds no images, or no path was given.
    """
    items: list[InputItem] = []
    seen: set[tuple[Path, Path]] = set()
    paths = list(paths)
    if not paths:
        raise UserError("no input files or folders given")
    for raw in paths:
        root = Path(raw)
        if root.is_dir():
            found = [InputItem(f, f.parent.relative_to(root)) for f in list_images(root, recursive=True)]
            if not found:
                raise UserError(f"no images found in folder {root}")
        elif root.exists():
            found = [InputItem(root)]
        else:
            raise UserError(f"input not found: {root}")
        for item in found:
            key = (item.path.resolve(), item.relative_dir)
            if key not in seen:
                seen.add(key)
                items.append(item)
    return items


def output_path(item: InputItem, out_dir: str | os.PathLike, suffix: str) -> Path:
    """``OUT/<relative subfolder>/<stem><suffix>``, e.g. suffix ``"_mask.png"``."""
    return Path(out_dir) / item.relative_dir / f"{item.stem}{suffix}"


def plan_outputs(items: list[InputItem], out_dir: str | os.PathLike,
                 suffixes: list[str]) -> dict[InputItem, dict[str, Path]]:
    """Every output path of every input, checked for collisions before any work.

    Returns ``{item: {suffix: path}}``.

    Raises:
        UserError: (one line) when two inputs would write the same output, e.g.
            ``a.jpg`` and ``a.png`` from the same folder, or when an output would
            overwrite one of the inputs.
    """
    plan: dict[InputItem, dict[str, Path]] = {}
    writers: dict[Path, list[InputItem]] = defaultdict(list)
    for item in items:
        plan[item] = {suffix: output_path(item, out_dir, suffix) for suffix in suffixes}
        for path in plan[item].values():
            writers[path.resolve()].append(item)
    clashes = [(out, who) for out, who in writers.items() if len(who) > 1]
    if clashes:
        shown = "; ".join(f"{', '.join(str(i.path) for i in who)} -> {out}" for out, who in clashes[:5])
        more = f" (and {len(clashes) - 5} more)" if len(clashes) > 5 else ""
        raise UserError(f"{len(clashes)} output name collision(s), nothing was written: {shown}{more}; "
                        f"rename the inputs or process them into separate output folders")
    inputs = {item.path.resolve(): item for item in items}
    overwritten = [(inputs[out], out) for out in writers if out in inputs]
    if overwritten:
        item, out = overwritten[0]
        raise UserError(f"output {out} would overwrite the input {item.path}; choose another output folder")
    return plan


def resolve_rank(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """``(rank, world_size)`` from the arguments, else ``$RANK`` / ``$WORLD_SIZE`` (torchrun), else (0, 1)."""
    try:
        rank = int(os.environ.get("RANK", 0)) if rank is None else int(rank)
        world_size = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else int(world_size)
    except ValueError:
        raise UserError(f"RANK={os.environ.get('RANK')!r} / WORLD_SIZE={os.environ.get('WORLD_SIZE')!r} "
                        f"are not integers") from None
    if world_size < 1 or not 0 <= rank < world_size:
        raise UserError(f"invalid rank {rank} for world size {world_size}")
    return rank, world_size


@dataclass
class BatchReport:
    """What a batch did: how many files succeeded and which failed, with why."""

    ok: int = 0
    failures: list[tuple[Path, str]] = field(default_factory=list)
    rank: int = 0
    world_size: int = 1

    @property
    def total(self) -> int:
        return self.ok + len(self.failures)

    def exit_status(self) -> int:
        """0 when every file succeeded, 1 otherwise."""
        return 0 if not self.failures else 1

    def print_summary(self, file: TextIO | None = None) -> None:
        """One line of counts, then one line per failed file (on stderr by default)."""
        file = file if file is not None else sys.stderr
        where = f"[rank {self.rank}/{self.world_size}] " if self.world_size > 1 else ""
        if not self.failures:
            print(f"{where}{self.ok} of {self.total} file(s) done", file=file)
            return
        print(f"{where}{self.ok} of {self.total} file(s) done, {len(self.failures)} failed:", file=file)
        for path, message in self.failures:
            print(f"  {_naming(path, message)}", file=file)


def _naming(path: Path, message: str) -> str:
    """``message`` if it already names the file (as UserErrors from io.py do), else ``path: message``."""
    return message if str(path) in message else f"{path}: {message}"


def _failure_message(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    if isinstance(exc, UserError):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def run_batch(items: list[InputItem], fn: Callable[[InputItem], Any], desc: str = "",
              rank: int | None = None, world_size: int | None = None,
              progress: bool | None = None) -> BatchReport:
    """Call ``fn(item)`` for this rank's share of ``items``; a failing file is reported, not fatal.

    Args:
        items: from :func:`collect_inputs`; this rank takes ``items[rank::world_size]``.
        fn: does the work for one file; its return value is ignored.  Any exception
            (a :class:`UserError` or otherwise) counts as that file's failure and is
            printed as one line naming the file; ``KeyboardInterrupt`` still stops.
        rank, world_size: default to ``$RANK`` / ``$WORLD_SIZE`` (torchrun), else 0 / 1.
        progress: show a tqdm bar on stderr; None = only when stderr is a terminal
            and this is rank 0.
    """
    rank, world_size = resolve_rank(rank, world_size)
    mine = items[rank::world_size]
    if progress is None:
        progress = rank == 0 and sys.stderr.isatty()
    report = BatchReport(rank=rank, world_size=world_size)
    bar = tqdm(mine, desc=desc or None, unit="file", file=sys.stderr, disable=not progress, dynamic_ncols=True)
    for item in bar:
        try:
            fn(item)
        except Exception as exc:  # noqa: BLE001 - one bad file must not stop the batch
            message = _failure_message(exc)
            report.failures.append((item.path, message))
            tqdm.write(f"skipped {_naming(item.path, message)}", file=sys.stderr)
        else:
            report.ok += 1
    bar.close()
    return report
