"""Read Qt binary resource bundles (``.rcc``) without Qt.

GCompris ships its activity pictures inside such bundles.  The layout (Qt's
``rcc`` tool, ``RCCResourceLibrary``), all integers big-endian:

* header: magic ``b"qres"``, then u32 format version, u32 tree offset,
  u32 data offset, u32 names offset (version >= 3 adds a u32 of global flags);
* tree: an array of nodes, 14 bytes each in version 1 and 22 bytes in
  version >= 2 (a u64 modification time is appended).  A node starts with
  u32 name offset and u16 flags.  A directory (flag 2) continues with u32 child
  count and u32 index of its first child (children are contiguous); a file
  continues with u16 country, u16 language and u32 data offset.  Node 0 is the
  root directory;
* names: u16 length (in UTF-16 code units), u32 hash, UTF-16BE characters;
* data: u32 size, then the bytes.  Flag 1 = zlib (``qCompress``: a 4-byte
  big-endian uncompressed length, then a zlib stream); flag 4 = zstd frame.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError

MAGIC = b"qres"
FLAG_ZLIB = 1
FLAG_DIRECTORY = 2
FLAG_ZSTD = 4


@dataclass(frozen=True)
class RccEntry:
    """One file of a bundle: ``path`` is '/'-joined from the root, ``data`` is decompressed."""

    path: str
    data: bytes


class RccFile:
    """Parse a ``.rcc`` bundle held in memory; iterate its files with :meth:`entries`."""

    def __init__(self, blob: bytes, name: str = "<rcc>"):
        self.blob = blob
        self.name = name
        if len(blob) < 20 or blob[:4] != MAGIC:
            raise UserError(f"{name}: not a Qt resource bundle (missing 'qres' magic)")
        self.version, self.tree_offset, self.data_offset, self.names_offset = struct.unpack_from(">4I", blob, 4)
        if self.version not in (1, 2, 3):
            raise UserError(f"{name}: unsupported rcc format version {self.version}")
        self.node_size = 14 if self.version == 1 else 22

    @classmethod
    def open(cls, path: str | Path) -> "RccFile":
        path = Path(path)
        return cls(path.read_bytes(), name=str(path))

    # ---------------------------------------------------------------- low level
    def _node(self, index: int) -> tuple[int, int, int, int]:
        """(name offset, flags, a, b): a, b = child count, first child for a directory;
        for a file a = 0 and b = data offset."""
        at = self.tree_offset + index * self.node_size
        if at + 14 > len(self.blob):
            raise UserError(f"{self.name}: tree node {index} lies outside the file (corrupt bundle)")
        name_off, flags = struct.unpack_from(">IH", self.blob, at)
        if flags & FLAG_DIRECTORY:
            count, first = struct.unpack_from(">II", self.blob, at + 6)
            return name_off, flags, count, first
        (data_off,) = struct.unpack_from(">I", self.blob, at + 10)
        return name_off, flags, 0, data_off

    def _name(self, offset: int) -> str:
        at = self.names_offset + offset
        (length,) = struct.unpack_from(">H", self.blob, at)
        raw = self.blob[at + 6: at + 6 + 2 * length]  # skip u16 length + u32 hash
        return raw.decode("utf-16-be")

    def _data(self, offset: int, flags: int) -> bytes:
        at = self.data_offset + offset
        (size,) = struct.unpack_from(">I", self.blob, at)
        raw = self.blob[at + 4: at + 4 + size]
        if len(raw) != size:
            raise UserError(f"{self.name}: truncated data block at offset {offset}")
        if flags & FLAG_ZSTD:
            import zstandard

            # Qt writes frames with the content size set; max_output_size covers frames without it.
            return zstandard.ZstdDecompressor().decompress(raw, max_output_size=1 << 30)
        if flags & FLAG_ZLIB:
            return zlib.decompress(raw[4:])  # first 4 bytes: qCompress' expected length
        return raw

    def _walk(self):
        """Yield (path, flags, data offset) of every file, depth first in stored order."""
        stack: list[tuple[int, str]] = [(0, "")]
        max_nodes = (len(self.blob) - self.tree_offset) // self.node_size + 1
        visited = 0
        while stack:
            index, path = stack.pop()
            visited += 1
            if visited > max_nodes:
                raise UserError(f"{self.name}: directory tree has a cycle (corrupt bundle)")
            _, flags, count, first_or_data = self._node(index)
            if flags & FLAG_DIRECTORY:
                # Push children in reverse so they pop in stored order.
                for child in range(first_or_data + count - 1, first_or_data - 1, -1):
                    child_name = self._name(self._node(child)[0])
                    stack.append((child, f"{path}/{child_name}" if path else child_name))
            else:
                yield path, flags, first_or_data

    # --------------------------------------------------------------- public API
    def paths(self) -> list[str]:
        """Paths of all files ('/'-joined from the root), without decompressing anything."""
        return [path for path, _, _ in self._walk()]

    def entries(self, prefix: str = "") -> list[RccEntry]:
        """All files whose path starts with ``prefix``, decompressed, in tree order."""
        return [RccEntry(path, self._data(offset, flags))
                for path, flags, offset in self._walk() if path.startswith(prefix)]


def read_rcc(path: str | Path, prefix: str = "") -> list[RccEntry]:
    """Decompressed files of the bundle at ``path`` (paths relative to the root, '/'-joined)."""
    return RccFile.open(path).entries(prefix)
