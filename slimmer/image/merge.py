"""Merging an image's layers, base first, into one FileTree, in time linear in the layers.

Whiteouts (`.wh.NAME`) delete what lower layers put at NAME, an opaque marker (`.wh..wh..opq`)
empties a directory of what lower layers put in it (at the root: the root's content, never the
root), and a later entry replaces an earlier one. Removing costs what is removed: the tree keeps
a children index per directory.

File contents are spilled into numbered files of a private directory (never under a name from
the archive) so that the merged view reads like any root. The spill is bounded: a file's copy
goes as soon as a later layer replaces or deletes it, sparse members are written sparsely (their
holes cost no disk), and before each file the free space of the spill directory (and the
optional budget) is checked, so that a small hostile layer (a sparse 64 GiB file, a gzip bomb)
stops with one line instead of filling the disk.

Owners, modes, hard links (entries sharing a `node`) and PAX `SCHILY.xattr.` records (file
capabilities) are carried into the tree.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import IO

from slimmer.errors import FileProblem, SlimmerError
from slimmer.tree import Dir, Entry, File, FileTree, Symlink, TreeConflict

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
XATTR = "SCHILY.xattr."
# Room left on the spill's disk for everyone else: a run never fills it to the last byte.
RESERVE = 256 << 20
CHUNK = 1 << 20


class HostileArchive(SlimmerError):
    """An image archive that tries to reach outside its root."""


class SpillFull(SlimmerError):
    """An image whose contents do not fit in the spill directory or the spill budget."""


class _Spill:
    """Numbered copies of file contents in `directory`, counted by reference (hard links share
    one) and by the bytes they hold on disk."""

    def __init__(self, directory: str, limit: int | None) -> None:
        self.directory = directory
        self.limit = limit  # bytes held at once, None: only the free space bounds it
        self.count = 0
        self.used = 0
        self.refs: dict[str, int] = {}
        self.sizes: dict[str, int] = {}

    def write(self, tar: tarfile.TarFile, member: tarfile.TarInfo, layer: str) -> str:
        what = f"layer {layer}: {member.name}"
        # A sparse member stores only its data blocks; the holes cost nothing on disk.
        blocks = _blocks(member, what)
        need = sum(size for _, size in blocks)
        self._check(need, what)
        self.count += 1
        path = os.path.join(self.directory, str(self.count))
        found = tar.extractfile(member)
        assert isinstance(found, io.BufferedReader)
        # Its raw file seeks by setting a position (the buffered one would ask the stream
        # whether it can seek, and a stream cannot); reads go forward, block after block.
        data = found.raw
        with self._writing(what):  # O_EXCL|O_NOFOLLOW: the name is ours, in our directory
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600)
        try:
            with found:
                for offset, size in blocks:
                    data.seek(offset)
                    while size > 0 and (chunk := data.read(min(size, CHUNK))):
                        with self._writing(what):
                            _write_at(fd, chunk, offset)
                        offset, size = offset + len(chunk), size - len(chunk)
            with self._writing(what):
                os.ftruncate(fd, member.size)
        finally:
            os.close(fd)
        self.refs[path], self.sizes[path] = 1, need
        self.used += need
        return path

    @contextmanager
    def _writing(self, what: str) -> Iterator[None]:
        """Around a step writing the spill: its failure (a full disk) is one line naming the
        member (reading the layer is not in it: a damaged layer is another error)."""
        try:
            yield
        except OSError as exc:
            raise SpillFull(f"{what}: cannot spill its content to "
                            f"{os.path.dirname(self.directory)} ({exc.strerror})") from None

    def _check(self, need: int, what: str) -> None:
        if self.limit is not None and self.used + need > self.limit:
            raise SpillFull(f"{what}: its content needs {_size(need)} on disk, over the "
                            f"budget of {_size(self.limit)} for the image's contents "
                            f"({_size(self.used)} already taken)")
        free = shutil.disk_usage(self.directory).free
        if need + RESERVE > free:
            raise SpillFull(f"{what}: its content needs {_size(need)} in "
                            f"{os.path.dirname(self.directory)}, which has {_size(free)} free "
                            "(set TMPDIR to a directory on a larger disk)")

    def hold(self, path: str) -> None:
        self.refs[path] += 1

    def release(self, path: str) -> None:
        """One entry less uses the copy at `path`; the last one deletes it."""
        self.refs[path] -= 1
        if self.refs[path] == 0:
            del self.refs[path]
            self.used -= self.sizes.pop(path)
            os.unlink(path)


def _blocks(member: tarfile.TarInfo, what: str) -> list[tuple[int, int]]:
    """The (offset, size) data blocks of a member: one for a plain file, the map of a sparse
    one, which must go forward inside the file (tarfile would loop forever on some others)."""
    sparse: list[tuple[int, int]] | None = getattr(member, "sparse", None)  # typeshed: bytes
    if sparse is None:
        return [(0, member.size)]
    blocks = [(offset, size) for offset, size in sparse if size]  # GNU tar pads with (N, 0)
    end = 0
    for offset, size in blocks:
        if offset < end or size < 0 or offset + size > member.size:
            raise HostileArchive(f"{what}: its sparse map is out of order or out of bounds")
        end = offset + size
    return blocks


def _write_at(fd: int, chunk: bytes, offset: int) -> None:
    view = memoryview(chunk)
    while view:
        done = os.pwrite(fd, view, offset)
        view, offset = view[done:], offset + done


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    value = float(n)
    units = iter(("KiB", "MiB", "GiB", "TiB"))
    unit = next(units)
    while (value := value / 1024) >= 1024 and unit != "TiB":
        unit = next(units)
    return f"{value:.1f} {unit} ({n} bytes)"


class Merger:
    """The layers of one image, base first, merged into `tree`, contents spilled into the
    directory `spill` (which the caller removes), at most `limit` bytes of them at once."""

    def __init__(self, spill: str, limit: int | None = None) -> None:
        self.tree = FileTree()
        self.spill = _Spill(spill, limit)
        self.notes: list[str] = []
        self.mtimes: dict[str, int] = {}  # path -> mtime, as the layers say
        self.nodes = 0  # hard-linked files so far: each gets its number as its node

    def read_layer(self, stream: IO[bytes], layer: str) -> None:
        kept: set[str] = set()  # what this layer put, and every directory above it
        opaque: list[str] = []
        try:
            tar = tarfile.open(fileobj=stream, mode="r|",  # noqa: SIM115 - closed below
                               errors="surrogateescape")  # PAX values round-trip to bytes
        except tarfile.TarError as exc:
            raise FileProblem(f"layer {layer}: not a tar stream ({_first(exc)})") from None
        with tar:  # a damaged stream raises as it is read: the caller names the archive
            for member in tar:
                self._member(tar, member, layer, kept, opaque)
        # Shallowest first: a walk from a directory also empties the opaque ones under it.
        walked: set[str] = set()
        for directory in sorted(opaque, key=len):
            if directory not in walked:
                self._opaque(directory, kept, walked)

    def _member(self, tar: tarfile.TarFile, member: tarfile.TarInfo, layer: str,
                kept: set[str], opaque: list[str]) -> None:
        path = _safe_name(member.name, layer)
        if path is None:
            return
        parent, _, base = path.rpartition("/")
        if base == OPAQUE:
            opaque.append(parent or "/")
            return
        if base.startswith(WHITEOUT):
            # `.wh..wh.*` other than the opaque marker is AUFS bookkeeping, no whiteout
            if base != WHITEOUT and not base.startswith(WHITEOUT + WHITEOUT):
                self._drop(f"{parent}/{base[len(WHITEOUT):]}")
            return
        entry = self._entry(tar, member, path, layer)
        if entry is None:
            return
        self._place(path, entry, layer)
        self.mtimes[path] = int(member.mtime)
        while path != "/" and path not in kept:
            kept.add(path)
            path = path.rpartition("/")[0] or "/"

    def _opaque(self, directory: str, kept: set[str], walked: set[str]) -> None:
        """Empty `directory` of what lower layers put anywhere under it (this layer's entries
        and the directories above them stay); the directory itself stays, the root too."""
        stack = [directory]
        while stack:
            cur = stack.pop()
            walked.add(cur)
            for name in self.tree.children(cur):
                child = f"{cur.rstrip('/')}/{name}"
                if child not in kept:
                    self._drop(child)
                elif isinstance(self.tree.get(child), Dir):
                    stack.append(child)

    def _drop(self, path: str) -> None:
        """Delete `path` and everything under it, and the spilled copies nothing else uses."""
        for gone, entry in self.tree.remove(path):
            self.mtimes.pop(gone, None)
            if isinstance(entry, File) and entry.source is not None:
                self.spill.release(entry.source)

    def _entry(self, tar: tarfile.TarFile, member: tarfile.TarInfo, path: str,
               layer: str) -> Entry | None:
        mode = member.mode & 0o7777
        if member.isdir():
            return Dir(mode, member.uid, member.gid)
        if member.issym():
            return Symlink(member.linkname)
        if member.islnk():
            return self._link(member, layer)
        if member.isfile():
            # an empty file needs no copy (nor an inode of the temporary disk)
            source = self.spill.write(tar, member, layer) if member.size else None
            return File(mode, member.size, source=source, data=None if source else b"",
                        uid=member.uid, gid=member.gid, xattrs=_xattrs(member))
        self.notes.append(f"layer {layer}: {member.name}: device or FIFO left out")
        return None

    def _link(self, member: tarfile.TarInfo, layer: str) -> File:
        """A hard link: the target's entry, both marked as one file (the same node)."""
        target = _safe_name(member.linkname, layer)
        existing = self.tree.get(target) if target else None
        if target is None or not isinstance(existing, File):
            raise HostileArchive(f"layer {layer}: {member.name} is a hard link to "
                                 f"{member.linkname!r}, which is no file of the image")
        if existing.node is None:
            self.nodes += 1
            existing = replace(existing, node=str(self.nodes))
            self.tree.remove(target)  # the same file, now marked as linked: no release
            self.tree.add(target, existing, "")
        if existing.source is not None:
            self.spill.hold(existing.source)
        return existing

    def _place(self, path: str, entry: Entry, layer: str) -> None:
        old = self.tree.get(path)
        if old is not None and not (isinstance(old, Dir) and isinstance(entry, Dir)):
            self._drop(path)
        try:
            self.tree.add(path, entry, "")  # over a directory: its mode and owner, same children
        except TreeConflict:
            raise HostileArchive(f"layer {layer}: {path} would be written through a symlink "
                                 "or under a file (refused: it could lead outside the "
                                 "image)") from None


def _xattrs(member: tarfile.TarInfo) -> tuple[tuple[str, bytes], ...]:
    """The member's PAX `SCHILY.xattr.NAME` records, sorted by name, as the bytes the archive
    holds: tarfile decodes values as UTF-8 with surrogateescape, which encodes back exactly
    (binary values such as security.capability included)."""
    return tuple(sorted((key[len(XATTR):], value.encode("utf-8", "surrogateescape"))
                        for key, value in member.pax_headers.items()
                        if key.startswith(XATTR) and len(key) > len(XATTR)))


def _first(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _safe_name(name: str, layer: str) -> str | None:
    """The in-image path of a member name; None for the root itself. Refuses what climbs."""
    if name.startswith("/"):
        raise HostileArchive(f"layer {layer}: member {name!r} has an absolute name")
    if "\0" in name:
        raise HostileArchive(f"layer {layer}: member {name!r} has a NUL byte in its name")
    clean = name.removeprefix("./").rstrip("/")
    if clean and not any(bad in f"/{clean}/" for bad in ("//", "/./", "/../")):
        return "/" + clean  # the common case, without a string per name in the path
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise HostileArchive(f"layer {layer}: member {name!r} climbs out with '..'")
    return "/" + "/".join(parts) if parts else None
