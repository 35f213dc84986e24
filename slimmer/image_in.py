"""Reading a container image (docker-archive tar, OCI archive tar, or OCI layout directory) into
a merged view of its root, without extracting anything onto the host.

The layers are read in order into one FileTree: whiteouts (`.wh.NAME`) delete what lower layers
put at NAME, an opaque marker (`.wh..wh..opq`) empties a directory of what lower layers put in
it, and a later entry replaces an earlier one. File contents are spilled into numbered files in
a private temporary directory (never under a name from the archive), so the view is a Root like
any other: the resolver, the recipes and the writer read it as they read a directory.

Hostile archives are refused with the member named: names with `..` or absolute names, a
hardlink to anything that is not a file of the image, a file written through a symlink. Device
files and FIFOs are left out. Nothing is ever read or written outside the image's own root and
the temporary directory.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any

from slimmer.errors import FileProblem, SlimmerError
from slimmer.image.model import At, Digest
from slimmer.image.store import ImageSource, Store, decompressed, matches
from slimmer.rootfs import Dir, Entry, File, FileTree, Symlink, TreeConflict, TreeRoot

__all__ = ["ArchiveFiles", "HostileArchive", "Image", "ImageSource", "blob_name",
           "decompressed", "layout_file", "matches", "open_image", "ref_name"]

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"


class HostileArchive(SlimmerError):
    """An image archive that tries to reach outside its root."""


@dataclass(slots=True)
class Image:
    """A merged image root and what it came with. Use within `open_image`."""

    source: ImageSource
    tree: FileTree
    root: TreeRoot
    notes: list[str] = field(default_factory=list)
    mtimes: dict[str, int] = field(default_factory=dict)  # path -> mtime, as the layers say

    def content_size(self) -> int:
        return self.tree.content_size()

    def file_count(self) -> int:
        return self.tree.file_count()


@contextmanager
def open_image(path: str, image: str | None = None) -> Iterator[Image]:
    """Read the image at `path` (choosing `image` among several) into a merged view; its
    spilled contents live as long as the `with` block."""
    spill = tempfile.mkdtemp(prefix="slimmer-image-")
    try:
        with ArchiveFiles(path) as source_input:
            source = source_input.choose(image)
            merged = _Merger(spill)
            for layer in source.blobs:
                with source_input.layer(layer) as stream:  # checked: digest, size, diff_id
                    merged.read_layer(stream, layer.name)
            yield Image(source, merged.tree, TreeRoot(merged.tree), merged.notes,
                        merged.mtimes)
    finally:
        shutil.rmtree(spill, ignore_errors=True)


# ---- the input formats: slimmer/image/store.py -----------------------------------------------

ArchiveFiles = Store  # the name the other modules knew it by


def layout_file(directory: str, name: str) -> str | None:
    """The host path of regular file `name` of a layout directory; None when it is not there
    (a symlink on the way, or a file of another kind, is refused)."""
    return Store(directory)._host(name)


def blob_name(digest: str) -> str:
    return Digest.parse(digest, At("descriptor", "digest")).member


def ref_name(desc: dict[str, Any]) -> str:
    """The image name an index entry's annotations give it ("" when none)."""
    notes = desc.get("annotations") or {}
    return str(notes.get("io.containerd.image.name") or notes.get(
        "org.opencontainers.image.ref.name") or "")


# ---- merging layers ------------------------------------------------------------------------


class _Merger:
    def __init__(self, spill: str) -> None:
        self.spill = spill
        self.tree = FileTree()
        self.count = 0
        self.notes: list[str] = []
        self.mtimes: dict[str, int] = {}

    def read_layer(self, stream: IO[bytes], layer: str) -> None:
        added: set[str] = set()
        opaque: list[str] = []
        try:
            tar = tarfile.open(fileobj=stream, mode="r|")  # noqa: SIM115 - closed below
        except tarfile.TarError as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise FileProblem(f"layer {layer}: not a tar stream ({first})") from None
        with tar:
            for member in tar:
                path = _safe_name(member.name, layer)
                if path is None:
                    continue
                parent, _, base = path.rpartition("/")
                if base == OPAQUE:
                    opaque.append(parent or "/")
                    continue
                if base.startswith(WHITEOUT):
                    self._remove(f"{parent}/{base[len(WHITEOUT):]}")
                    continue
                entry = self._entry(tar, member, path, layer)
                if entry is None:
                    continue
                self._place(path, entry, layer)
                self.mtimes[path] = int(member.mtime)
                added.add(path)
        for directory in opaque:
            prefix = directory.rstrip("/") + "/"
            for path in [p for p in self.tree.paths() if p.startswith(prefix)]:
                if path not in added and not any(a.startswith(path + "/") for a in added):
                    self.tree.remove(path)

    def _remove(self, path: str) -> None:
        prefix = path + "/"
        for p in [p for p in self.tree.paths() if p == path or p.startswith(prefix)]:
            self.tree.remove(p)

    def _entry(self, tar: tarfile.TarFile, member: tarfile.TarInfo, path: str,
               layer: str) -> Entry | None:
        mode = member.mode & 0o7777
        if member.isdir():
            return Dir(mode, member.uid, member.gid)
        if member.issym():
            return Symlink(member.linkname)
        if member.islnk():
            target = _safe_name(member.linkname, layer)
            existing = self.tree.get(target) if target else None
            if not isinstance(existing, File):
                raise HostileArchive(f"layer {layer}: {member.name} is a hard link to "
                                     f"{member.linkname!r}, which is no file of the image")
            return existing
        if member.isfile():
            self.count += 1
            spilled = os.path.join(self.spill, str(self.count))
            data = tar.extractfile(member)
            assert data is not None
            with data, open(spilled, "wb") as out:
                shutil.copyfileobj(data, out, 1 << 20)
            # node: hard links to this member get this very entry, so they share it
            return File(mode, member.size, source=spilled, uid=member.uid, gid=member.gid,
                        xattrs=_xattrs(member), node=str(self.count))
        self.notes.append(f"layer {layer}: {member.name}: device or FIFO left out")
        return None

    def _place(self, path: str, entry: Entry, layer: str) -> None:
        old = self.tree.get(path)
        if old is not None and not (isinstance(old, Dir) and isinstance(entry, Dir)):
            self._remove(path)
        elif isinstance(old, Dir) and isinstance(entry, Dir):
            self.tree.remove(path)  # keep the children, take the new mode and owner
        try:
            self.tree.add(path, entry, "")
        except TreeConflict:
            raise HostileArchive(f"layer {layer}: {path} would be written through a symlink "
                                 "or under a file (refused: it could lead outside the "
                                 "image)") from None


def _xattrs(member: tarfile.TarInfo) -> tuple[tuple[str, bytes], ...]:
    """A member's SCHILY.xattr records (a file capability, say), as the bytes they were:
    tarfile decodes values with surrogateescape when they are not UTF-8."""
    prefix = "SCHILY.xattr."
    return tuple(sorted((key[len(prefix):], value.encode("utf-8", "surrogateescape"))
                        for key, value in member.pax_headers.items() if key.startswith(prefix)))


def _safe_name(name: str, layer: str) -> str | None:
    """The in-image path of a member name; None for the root itself. Refuses what climbs."""
    if name.startswith("/"):
        raise HostileArchive(f"layer {layer}: member {name!r} has an absolute name")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise HostileArchive(f"layer {layer}: member {name!r} climbs out with '..'")
    return "/" + "/".join(parts) if parts else None
