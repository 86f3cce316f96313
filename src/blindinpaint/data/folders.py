"""Finding image files: plain folders and corpus folders with a ``manifest.json``.

A *corpus folder* (made by ``blindinpaint data photos DIR``) holds
``DIR/manifest.json`` = ``{"photos": [{"file": "photos/x.jpg", "split": "train", ...}, ...]}``
with ``file`` relative to ``DIR``.  Any other folder is searched recursively.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import UserError

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")


def list_images(folder: str | Path, recursive: bool = True) -> list[Path]:
    """Sorted image files (by extension, case-insensitive) under ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"not a folder: {folder}")
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in folder.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_EXTS)


def read_manifest(root: str | Path) -> list[dict] | None:
    """The photo entries of a corpus folder's manifest, or None for a plain folder."""
    path = Path(root) / "manifest.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON: {exc}") from None
    photos = data.get("photos") if isinstance(data, dict) else None
    if not isinstance(photos, list):
        raise UserError(f"{path} has no 'photos' list: is this a corpus folder?")
    return photos


def list_photos(root: str | Path, split: str | None = None) -> list[Path]:
    """Photos of a corpus folder (optionally one split), or every image of a plain folder.

    ``split`` on a plain folder is an error: only a corpus manifest knows splits.
    Raises :class:`UserError` when nothing is found.
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"image folder not found: {root}")
    entries = read_manifest(root)
    if entries is None:
        if split is not None:
            raise UserError(f"{root} has no manifest.json, so it has no '{split}' split")
        paths = list_images(root)
    else:
        paths = [root / e["file"] for e in entries if split is None or e.get("split") == split]
    if not paths:
        what = f"split '{split}' of " if split else ""
        raise UserError(f"no images found in {what}{root}")
    return paths
