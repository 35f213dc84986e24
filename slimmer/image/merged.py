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

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from slimmer.image.merge import HostileArchive, Merger
from slimmer.image.model import At, Digest
from slimmer.image.store import ImageSource, Store, decompressed, matches
from slimmer.loader.views import TreeRoot
from slimmer.tree import FileTree

__all__ = ["ArchiveFiles", "HostileArchive", "Image", "ImageSource", "blob_name",
           "decompressed", "layout_file", "matches", "open_image", "ref_name"]

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
def open_image(path: str, image: str | None = None, *,
               spill_limit: int | None = None) -> Iterator[Image]:
    """Read the image at `path` (choosing `image` among several) into a merged view; its
    spilled contents (at most `spill_limit` bytes, when given) live as long as the `with`
    block."""
    spill = tempfile.mkdtemp(prefix="slimmer-image-")
    try:
        with ArchiveFiles(path) as source_input:
            source = source_input.choose(image)
            merged = Merger(spill, spill_limit)
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
