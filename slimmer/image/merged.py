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

from slimmer.image.merge import Merger
from slimmer.image.model import Contents
from slimmer.image.store import ImageSource, Store
from slimmer.loader.views import TreeRoot
from slimmer.tree import FileTree


@dataclass(slots=True)
class Image:
    """A merged image root and what it came with. Use within `open_image`."""

    source: ImageSource
    tree: FileTree
    root: TreeRoot
    notes: list[str] = field(default_factory=list)
    mtimes: dict[str, int] = field(default_factory=dict)  # path -> mtime, as the layers say
    contents: Contents | None = None  # slimmer.json, when slimmer wrote the archive

    def content_size(self) -> int:
        return self.tree.content_size()

    def file_count(self) -> int:
        return self.tree.file_count()


@contextmanager
def open_image(path: str, image: str | None = None, *, spill_limit: int | None = None,
               contents: bool = False) -> Iterator[Image]:
    """Read the image at `path` (choosing `image` among several) into a merged view; its
    spilled contents (at most `spill_limit` bytes, when given) live as long as the `with`
    block. `contents`: read slimmer.json too (`why`, `inspect`)."""
    spill = tempfile.mkdtemp(prefix="slimmer-image-")
    try:
        with Store(path) as store:
            source = store.choose(image)
            merged = Merger(spill, spill_limit)
            for layer in source.blobs:
                with store.layer(layer) as stream:  # checked: digest, size, diff_id
                    merged.read_layer(stream, layer.name)
            yield Image(source, merged.tree, TreeRoot(merged.tree), merged.notes,
                        merged.mtimes, store.contents() if contents else None)
    finally:
        shutil.rmtree(spill, ignore_errors=True)
