"""Roots over an image's file tree: what the assembled image looks like to the loader
(TreeRoot), and the tree in front of another root (OverlayRoot)."""

from __future__ import annotations

import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace

from slimmer.loader.elf import ElfInfo, parse_elf, parse_imports, read_elf, read_imports
from slimmer.loader.root import Root, Stat
from slimmer.tree import Dir, File, FileTree, Symlink, kept_mode


class TreeRoot(Root):
    """A FileTree seen as a root: what the image will look like to the loader inside it."""

    plain_dirs = False  # an image's directories have their owners and modes

    def __init__(self, tree: FileTree) -> None:
        super().__init__()
        self.tree = tree
        self._inodes = {path: i for i, path in enumerate(tree.paths())}

    def describe(self, path: str) -> str:
        return f"{path} (in the image)"

    def stat_real(self, real: str) -> Stat | None:
        entry = self.tree.get(real)
        if entry is None:
            return None
        ino = self._inodes.get(real, 0)
        if isinstance(entry, Dir):
            return Stat(stat.S_IFDIR | entry.mode, 0, 0, ino)
        if isinstance(entry, Symlink):
            return Stat(stat.S_IFLNK | 0o777, len(entry.target), 0, ino)
        return Stat(stat.S_IFREG | entry.mode, entry.size, 0, ino)

    def readlink_real(self, real: str) -> str:
        entry = self.tree.get(real)
        assert isinstance(entry, Symlink)
        return entry.target

    def read_real(self, real: str, limit: int | None = None) -> bytes:
        entry = self.tree.get(real)
        assert isinstance(entry, File)
        if entry.data is not None:
            return entry.data if limit is None else entry.data[:limit]
        assert entry.source is not None
        with open(entry.source, "rb") as fh:
            return fh.read() if limit is None else fh.read(limit)

    def listdir_real(self, real: str) -> list[str]:
        return self.tree.children(real)

    def elf_real(self, real: str, shown: str) -> ElfInfo:
        entry = self._file(real)
        if entry.data is not None:
            return parse_elf(entry.data, shown)
        assert entry.source is not None
        return read_elf(entry.source, shown)

    def read_imports_real(self, real: str, shown: str) -> frozenset[str]:
        entry = self._file(real)
        if entry.data is not None:
            return parse_imports(entry.data, shown)
        assert entry.source is not None
        return read_imports(entry.source, shown)

    def file_entry(self, real: str, keep_setuid: bool) -> File:
        """The entry as the image has it: owner, permission bits, xattrs and hard-link identity
        kept (a service's 0640 key stays its own); setuid/setgid only on request."""
        entry = self._file(real)
        return replace(entry, mode=kept_mode(entry.mode, keep_setuid))

    def dir_entry(self, real: str, keep_setuid: bool) -> Dir:
        """The image's directory as it is: on a directory setgid only makes new files take
        its group (Debian's /run/postgresql, /var/mail) and grants no privilege, so unlike a
        file's it is kept without --keep-setuid."""
        entry = self.tree.get(real)
        if not isinstance(entry, Dir):
            return Dir()
        return replace(entry, mode=entry.mode & 0o7777)

    def _file(self, real: str) -> File:
        entry = self.tree.get(real)
        assert isinstance(entry, File), real
        return entry


class OverlayRoot(Root):
    """The tree in front of a host root: a path in the tree hides the same path below."""

    plain_dirs = False

    def __init__(self, tree: FileTree, below: Root) -> None:
        super().__init__()
        self.top = TreeRoot(tree)
        self.below = below

    def describe(self, path: str) -> str:
        return self.below.describe(path)

    def _layer(self, real: str) -> Root:
        return self.top if real in self.top.tree else self.below

    def stat_real(self, real: str) -> Stat | None:
        found = self.top.stat_real(real)
        if found is not None:
            return Stat(found.mode, found.size, -1, found.ino)  # never equal to a host inode
        return self.below.stat_real(real)

    def readlink_real(self, real: str) -> str:
        return self._layer(real).readlink_real(real)

    def read_real(self, real: str, limit: int | None = None) -> bytes:
        return self._layer(real).read_real(real, limit)

    @contextmanager
    def reader_real(self, real: str) -> Iterator[tuple[Callable[[int, int], bytes], int]]:
        with self._layer(real).reader_real(real) as found:
            yield found

    def listdir_real(self, real: str) -> list[str]:
        names = set(self.below.listdir_real(real)) if self.below.is_dir(real) else set()
        return sorted(names | set(self.top.listdir_real(real)))

    def elf_real(self, real: str, shown: str) -> ElfInfo:
        return self._layer(real).elf_real(real, shown)

    def read_imports_real(self, real: str, shown: str) -> frozenset[str]:
        return self._layer(real).imports_real(real, shown)

    def file_entry(self, real: str, keep_setuid: bool) -> File:
        return self._layer(real).file_entry(real, keep_setuid)

    def dir_entry(self, real: str, keep_setuid: bool) -> Dir:
        return self._layer(real).dir_entry(real, keep_setuid)
