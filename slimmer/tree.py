"""The image's file tree, in memory: the single source of truth the layer writer walks.

Every entry is a directory, a regular file (content from a host file or given bytes) or a
symlink, with a reason saying why it is there. `TreeRoot` lets the resolver read the tree as a
root, so the assembled image can be checked on its own before anything is written.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass

from slimmer.errors import SlimmerError
from slimmer.paths import normalize


class TreeConflict(SlimmerError):
    """Two different things asked for at the same path in the image."""


@dataclass(frozen=True, slots=True)
class Dir:
    mode: int = 0o755
    uid: int = 0
    gid: int = 0


@dataclass(frozen=True, slots=True)
class File:
    mode: int
    size: int
    source: str | None = None  # host path to copy from
    data: bytes | None = None  # or the content itself
    uid: int = 0
    gid: int = 0
    # Extended attributes carried into the layer as PAX SCHILY.xattr.NAME records, sorted by
    # name (e.g. ("security.capability", b"...") for a file capability).
    xattrs: tuple[tuple[str, bytes], ...] = ()
    # The identity of the underlying file: entries with the same node are one file (hard links
    # in the source image). The writer stores the first in tree order and links the others to
    # it. None: not linked to anything.
    node: str | None = None


@dataclass(frozen=True, slots=True)
class Symlink:
    target: str


Entry = Dir | File | Symlink
IMPLIED = "parent directory"  # the reason of a directory only implied by what is below it


SETID = stat.S_ISUID | stat.S_ISGID


def normal_mode(host_mode: int, keep_setuid: bool = False) -> int:
    """0755 for anything executable, 0644 otherwise, so that the umask and a build user's
    group or world write bits never show, but never looser than the source: its own permission
    bits are kept out too (a 0640 key stays 0640, a 0700 tool 0700); setuid/setgid only on
    request."""
    mode = (0o755 if host_mode & 0o111 else 0o644) & host_mode
    if keep_setuid:
        mode |= host_mode & SETID
    return mode


def kept_mode(mode: int, keep_setuid: bool) -> int:
    """An image's own permission bits, as they are (sticky included); setuid/setgid only on
    request."""
    return mode & 0o7777 if keep_setuid else mode & 0o7777 & ~SETID


class FileTree:
    """path (absolute, normalised) -> entry, with a reason for each path."""

    def __init__(self) -> None:
        self._entries: dict[str, Entry] = {"/": Dir()}
        # directory -> the names in it: listing a directory and removing a subtree cost what
        # they return or remove, not a scan of every path (a layer can hold 100,000 entries)
        self._children: dict[str, dict[str, None]] = {"/": {}}
        self.reasons: dict[str, str] = {}
        self.parents: dict[str, str] = {}  # path -> the image path that brought it in

    def __contains__(self, path: str) -> bool:
        return path in self._entries

    def __len__(self) -> int:
        return len(self._entries) - 1

    def get(self, path: str) -> Entry | None:
        return self._entries.get(path)

    def add(self, path: str, entry: Entry, reason: str, parent: str | None = None) -> None:
        """Add an entry (and its parent directories). The same entry twice is fine; a
        different one at the same path is a TreeConflict. The first reason (and parent: the
        image path that needed this one) given for a path is kept."""
        path = path if _is_normal(path) else normalize(path)
        if path == "/":
            raise TreeConflict("cannot replace the image's root directory")
        self._parents(path)
        old = self._entries.get(path)
        if old is not None:
            if old == entry or (isinstance(old, Dir) and isinstance(entry, Dir)):
                if isinstance(entry, Dir) and old != entry:
                    self._entries[path] = entry  # an explicit directory beats an implied one
                return
            raise TreeConflict(f"{path}: two different entries for one path in the image "
                               f"({_describe(old)} and {_describe(entry)})")
        self._entries[path] = entry
        self._adopt(path, entry)
        self.reasons.setdefault(path, reason)
        if parent is not None and parent != path:
            self.parents.setdefault(path, parent)

    def replace(self, path: str, entry: File) -> None:
        """Put `entry` in place of the file at `path`, keeping its reason and parent (the
        content of a file changed before writing, e.g. a pyc header)."""
        if not isinstance(self._entries.get(path), File):
            raise TreeConflict(f"{path}: no file in the image to replace")
        self._entries[path] = entry

    def _parents(self, path: str) -> None:
        # Upwards to the nearest existing ancestor only: every entry's ancestors exist and are
        # directories (add and remove keep it so), so a deep tree costs no rescan of its top.
        missing: list[str] = []
        cur = path.rpartition("/")[0] or "/"
        while (old := self._entries.get(cur)) is None:
            missing.append(cur)
            cur = cur.rpartition("/")[0] or "/"
        if not isinstance(old, Dir):
            raise TreeConflict(f"{cur}: is a {_describe(old)} in the image, but "
                               f"{path} needs it to be a directory")
        for cur in reversed(missing):
            self._entries[cur] = Dir()
            self._adopt(cur, self._entries[cur])
            self.reasons.setdefault(cur, IMPLIED)

    def _adopt(self, path: str, entry: Entry) -> None:
        parent, _, name = path.rpartition("/")
        self._children[parent or "/"][name] = None
        if isinstance(entry, Dir):
            self._children[path] = {}

    def children(self, path: str) -> list[str]:
        """The names in directory `path` (none for anything else), in the order added."""
        return list(self._children.get(path, ()))

    def remove(self, path: str) -> list[tuple[str, Entry]]:
        """Take an entry out with everything under it (a later layer replacing or deleting an
        earlier one's); what was taken, parents first. The root stays (its content goes)."""
        removed: list[tuple[str, Entry]] = []
        if path == "/":
            for name in self.children("/"):
                removed += self.remove(f"/{name}")
            return removed
        entry = self._entries.pop(path, None)
        if entry is None:
            return removed
        parent, _, name = path.rpartition("/")
        self._children[parent or "/"].pop(name, None)
        stack = [(path, entry)]
        while stack:
            cur, found = stack.pop()
            removed.append((cur, found))
            self.reasons.pop(cur, None)
            self.parents.pop(cur, None)
            for child in self._children.pop(cur, ()):
                sub = f"{cur}/{child}"
                stack.append((sub, self._entries.pop(sub)))
        return removed

    def paths(self) -> Iterator[str]:
        return iter(self._entries)

    def items(self) -> Iterator[tuple[str, Entry]]:
        """Every entry but the root, parents before children, in a fixed order: sorted by
        path components (so "a/b" comes before "a-b", which byte order would not give)."""
        # "/" as the lowest character is the component order (names hold no NUL) without a
        # list per path, which for 10,000 nested directories would be 50 million strings
        for path in sorted(self._entries, key=lambda p: p.replace("/", "\0")):
            if path != "/":
                yield path, self._entries[path]

    def file_count(self) -> int:
        return sum(1 for e in self._entries.values() if isinstance(e, File))

    def content_size(self) -> int:
        """Bytes of content, each hard-linked file once (the layer stores it once)."""
        seen: set[str] = set()
        total = 0
        for e in self._entries.values():
            if isinstance(e, File) and (e.node is None or e.node not in seen):
                total += e.size
                if e.node is not None:
                    seen.add(e.node)
        return total


def _is_normal(path: str) -> bool:
    """Whether normalize would return `path` as it is: the common case, checked without
    splitting a path of 10,000 names into 10,000 strings."""
    return path == "/" or (path.startswith("/") and not path.endswith("/") and not any(
        bad in f"{path}/" for bad in ("//", "/./", "/../")))


def _describe(entry: Entry) -> str:
    if isinstance(entry, Dir):
        return "directory"
    if isinstance(entry, Symlink):
        return f"symlink to {entry.target}"
    return f"file from {entry.source}" if entry.source else "generated file"


def host_file(path: str, keep_setuid: bool = False) -> File:
    """A File entry copying a host file (its mode normalised)."""
    st = os.stat(path)
    return File(normal_mode(st.st_mode, keep_setuid), st.st_size, source=path)


def file_digests(entry: File) -> tuple[str, str]:
    """(sha256, sha1) of a file entry's content."""
    a, b = hashlib.sha256(), hashlib.sha1()
    if entry.data is not None:
        a.update(entry.data)
        b.update(entry.data)
    elif entry.source is not None:
        with open(entry.source, "rb") as fh:
            while chunk := fh.read(1 << 20):
                a.update(chunk)
                b.update(chunk)
    return a.hexdigest(), b.hexdigest()
