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
the temporary directory. The spill directory is removed when the view is done with; one that a
killed run left (SIGKILL runs no cleanup) is removed by the next run.
"""

from __future__ import annotations

import os
import shutil
import stat
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
    directory = tempfile.gettempdir()
    remove_stale_spills(directory)
    spill = tempfile.mkdtemp(prefix=f"{SPILL_PREFIX}{os.getpid()}-", dir=directory)
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


SPILL_PREFIX = "slimmer-image-"  # then the pid of the run that owns it, a dash, random


def remove_stale_spills(directory: str) -> list[str]:
    """Remove the spill directories that killed runs left in `directory` (a SIGKILL runs no
    cleanup): ours (same owner), real directories, whose process no longer exists. A pid in
    use again by another process only keeps a stale spill a while longer. Returns what went."""
    removed: list[str] = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        pid_text, sep, _ = name.removeprefix(SPILL_PREFIX).partition("-")
        if not name.startswith(SPILL_PREFIX) or not sep or not pid_text.isdecimal():
            continue
        path = os.path.join(directory, name)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or _alive(int(pid_text)):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # someone else's process (or a pid no process can have: left alone)
    return True
