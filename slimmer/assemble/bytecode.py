"""Cached Python bytecode that stays valid when the layer normalises every mtime.

A timestamp-based .pyc records its source's mtime and size in its header; CPython compares
them with the source's stat at every import and, when they differ, compiles the source again
("bytecode is stale"), and writes a new pyc where it may (never as a user who cannot write
`__pycache__`). The layer sets every file's mtime to the build epoch, so every pyc would be
stale: each pyc that matched its source before (its source in the image, the recorded mtime
and size those of the source as read) gets the epoch as its recorded mtime here, nothing else
changed. Hash-based pycs (PEP 552) do not depend on mtimes and are left as they are; so are
pycs that were stale already, whose source is not in the image, or that cannot be read as a
pyc (docs/reproducibility.md says why the timestamp form is kept rather than turned into
hash-based pycs).

Header layouts, by magic number (CPython's importlib/_bootstrap_external.py lists them):
3.7+ (3392, PEP 552) magic, flags, mtime, size; 3.3-3.6 (3210) magic, mtime, size; older
(3.0-3.2, and Python 2 for legacy pycs beside their source) magic, mtime.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, replace

from slimmer.errors import SymlinkLoop
from slimmer.loader.views import TreeRoot
from slimmer.tree import File, FileTree

# (image path of the source, its entry) -> the source's mtime before normalising, as CPython
# reads it (int(st_mtime)); None: unknown (a generated file), and the pyc is left alone.
OriginalMtime = Callable[[str, File], int | None]

PYCACHE = "__pycache__"
FLAGS_HEADER = 3392  # 3.7a4: PEP 552, a flags word before the mtime
SIZE_HEADER = 3210  # 3.3a1: the source size after the mtime
PYTHON2 = 20000  # magic numbers of Python 1.x and 2.x are above this one (2.7: 62211)


@dataclass(frozen=True, slots=True)
class BytecodeReport:
    """What was found: pycs given the epoch, and those left alone (by why)."""

    fixed: int = 0
    hash_based: int = 0  # valid whatever the mtimes
    stale: int = 0  # did not match their source before: left stale
    orphans: int = 0  # no source in the image (or not a file): left as they are
    unreadable: int = 0  # too short, an unknown magic number or flags: left as they are


def source_of(path: str) -> str | None:
    """The source a pyc caches: `d/__pycache__/NAME.TAG[.opt-N].pyc` -> `d/NAME.py` (PEP 3147
    and 488, as importlib.util.source_from_cache has it, for CPython's tags), and a legacy
    `d/NAME.pyc` -> `d/NAME.py`; None for anything else."""
    head, _, name = path.rpartition("/")
    if not name.endswith(".pyc"):
        return None
    parent, _, directory = head.rpartition("/")
    if directory != PYCACHE:
        return f"{head}/{name[:-4]}.py"
    parts = name.split(".")  # NAME, TAG, [opt-N,] pyc
    if len(parts) not in (3, 4) or not parts[0] or not parts[1].startswith("cpython-"):
        return None
    if len(parts) == 4 and not parts[2].startswith("opt-"):
        return None
    return f"{parent}/{parts[0]}.py"


def mtime_field(header: bytes) -> tuple[int, int | None, int] | None:
    """Where a timestamp pyc's header keeps the source's mtime: (offset of the mtime, offset
    of the size or None, length of the header); None when `header` is no timestamp pyc header
    (hash-based ones included: `flags` says so)."""
    if len(header) < 8 or header[2:4] != b"\r\n":
        return None
    magic = int.from_bytes(header[:2], "little")
    if FLAGS_HEADER <= magic < PYTHON2:
        if len(header) < 16 or struct.unpack_from("<I", header, 4)[0] != 0:
            return None
        return 8, 12, 16
    if SIZE_HEADER <= magic < PYTHON2:
        return (4, 8, 12) if len(header) >= 12 else None
    return 4, None, 8


def is_hash_based(header: bytes) -> bool:
    """A PEP 552 pyc checked (flags 0b11) or not (0b01) against its source's hash."""
    if len(header) < 16 or header[2:4] != b"\r\n":
        return False
    magic = int.from_bytes(header[:2], "little")
    flags = struct.unpack_from("<I", header, 4)[0]
    return FLAGS_HEADER <= magic < PYTHON2 and flags in (0b01, 0b11)


def refreshed(header: bytes, source_mtime: int, source_size: int, epoch: int) -> bytes | None:
    """`header` with `epoch` as its recorded mtime, when it recorded `source_mtime` and
    `source_size` (CPython compares both modulo 2**32); None when it did not (stale), or is no
    timestamp pyc header."""
    field = mtime_field(header)
    if field is None:
        return None
    at, size_at, length = field
    mask = 0xFFFFFFFF
    if struct.unpack_from("<I", header, at)[0] != source_mtime & mask:
        return None
    if size_at is not None and struct.unpack_from("<I", header, size_at)[0] != (
            source_size & mask):
        return None
    out = bytearray(header[:length])
    struct.pack_into("<I", out, at, epoch & mask)
    return bytes(out)


def host_mtime(_path: str, entry: File) -> int | None:
    """A host file's mtime, as CPython reads it (int(st_mtime)); None for generated content."""
    if entry.source is None:
        return None
    try:
        return int(os.stat(entry.source).st_mtime)
    except OSError:
        return None


def _read(entry: File, limit: int | None = None) -> bytes:
    if entry.data is not None:
        return entry.data if limit is None else entry.data[:limit]
    assert entry.source is not None
    with open(entry.source, "rb") as fh:
        return fh.read() if limit is None else fh.read(limit)


def fix_bytecode(tree: FileTree, epoch: int, original: OriginalMtime = host_mtime
                 ) -> BytecodeReport:
    """Give every valid timestamp pyc of `tree` the epoch as its source's mtime (in place:
    the entry becomes its new bytes, the same size). `original` tells a source's mtime before
    normalising."""
    counts = {"fixed": 0, "hash_based": 0, "stale": 0, "orphans": 0, "unreadable": 0}
    view: TreeRoot | None = None
    for path, entry in list(tree.items()):
        source = source_of(path) if isinstance(entry, File) else None
        if source is None or not isinstance(entry, File):
            continue
        if view is None:
            view = TreeRoot(tree)
        try:
            found = view.lookup(source)  # the source may be a symlink inside the image
        except SymlinkLoop:
            found = None
        source_entry = tree.get(found.real) if found is not None else None
        if not isinstance(source_entry, File):
            counts["orphans"] += 1
            continue
        try:
            header = _read(entry, 16)
        except OSError:
            counts["unreadable"] += 1
            continue
        if is_hash_based(header):
            counts["hash_based"] += 1
            continue
        if mtime_field(header) is None:
            counts["unreadable"] += 1
            continue
        assert found is not None
        mtime = original(found.real, source_entry)
        new = None if mtime is None else refreshed(header, mtime, source_entry.size, epoch)
        if new is None:
            counts["stale"] += 1
            continue
        if new != header[:len(new)]:
            data = _read(entry)
            if len(data) != entry.size:
                counts["unreadable"] += 1  # changed since planned: the writer will say so
                continue
            # A new file of its own: the others its node linked to may not change alike.
            tree.replace(path, replace(entry, data=new + data[len(new):], source=None,
                                       node=None))
        counts["fixed"] += 1
    return BytecodeReport(**counts)
