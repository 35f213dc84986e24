"""A read-only view of a root directory in which every path and symlink is resolved inside it.

`SysRoot("/srv/rootfs").lookup("/lib64/ld-linux-x86-64.so.2")` walks the path one component at a
time the way the kernel does, but an absolute symlink restarts at the root given here and `..` never
climbs above it, so nothing outside the root is ever read. Only directories that have been checked
not to be symlinks are handed to the host, so the host never follows a link on our behalf.
"""

from __future__ import annotations

import os
import stat
from collections import deque
from dataclasses import dataclass

from slimmer.errors import FileProblem, SymlinkLoop

# Linux gives up after 40 symbolic links in one resolution (MAXSYMLINKS, ELOOP).
MAX_SYMLINKS = 40


@dataclass(frozen=True, slots=True)
class Link:
    """A symbolic link met while resolving: where it is (inside the root) and what it says."""

    path: str
    target: str


@dataclass(frozen=True, slots=True)
class Resolved:
    """An existing path inside the root: `real` has no symlink left in it."""

    asked: str
    real: str
    links: tuple[Link, ...]
    mode: int
    size: int
    dev: int
    ino: int

    @property
    def is_file(self) -> bool:
        return stat.S_ISREG(self.mode)

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)


def normalize(path: str) -> str:
    """An absolute in-root path with `.`, `..` and repeated slashes folded (no symlinks read)."""
    parts: list[str] = []
    for name in path.split("/"):
        if name in ("", "."):
            continue
        if name == "..":
            if parts:
                parts.pop()
            continue
        parts.append(name)
    return "/" + "/".join(parts)


class SysRoot:
    """A root directory seen as `/`. Caches what it has read; never writes."""

    def __init__(self, root: str | os.PathLike[str] = "/") -> None:
        host = os.path.abspath(os.fspath(root))
        if not os.path.isdir(host):
            raise FileProblem(f"{root}: root is not a directory")
        self.root = host
        self._lstat: dict[str, os.stat_result | None] = {}
        self._walks: dict[str, Resolved | None] = {}

    def __repr__(self) -> str:
        return f"SysRoot({self.root!r})"

    def host_path(self, real: str) -> str:
        """The host path of an in-root path that `lookup` returned as real (no symlinks in it)."""
        if self.root == "/":
            return real
        return self.root + real if real != "/" else self.root

    def _lstat_real(self, real: str) -> os.stat_result | None:
        if real in self._lstat:
            return self._lstat[real]
        try:
            st: os.stat_result | None = os.lstat(self.host_path(real))
        except (FileNotFoundError, NotADirectoryError):
            st = None
        except OSError as exc:
            raise FileProblem(f"{real}: cannot read ({exc.strerror})") from exc
        self._lstat[real] = st
        return st

    def lookup(self, path: str) -> Resolved | None:
        """Resolve an absolute in-root path; None when it does not exist. Raises SymlinkLoop."""
        if path in self._walks:
            return self._walks[path]
        result = self._walk(path)
        self._walks[path] = result
        return result

    def _walk(self, path: str) -> Resolved | None:
        parts = deque(path.split("/"))
        cur = ""
        links: list[Link] = []
        st: os.stat_result | None = self._lstat_real("/")
        while parts:
            name = parts.popleft()
            if name in ("", "."):
                continue
            if name == "..":
                cur = cur.rsplit("/", 1)[0]
                st = self._lstat_real(cur or "/")
                continue
            nxt = f"{cur}/{name}"
            st = self._lstat_real(nxt)
            if st is None:
                return None
            if stat.S_ISLNK(st.st_mode):
                if len(links) >= MAX_SYMLINKS:
                    raise SymlinkLoop(f"{path}: too many levels of symbolic links")
                target = os.readlink(self.host_path(nxt))
                links.append(Link(nxt, target))
                if target.startswith("/"):
                    cur = ""
                parts.extendleft(reversed(target.split("/")))
                st = self._lstat_real(cur or "/")
                continue
            if parts and not stat.S_ISDIR(st.st_mode) and any(p not in ("", ".") for p in parts):
                return None
            cur = nxt
        assert st is not None
        return Resolved(path, cur or "/", tuple(links), st.st_mode, st.st_size, st.st_dev,
                        st.st_ino)

    def require_file(self, path: str) -> Resolved:
        """Resolve a path that must be an existing regular file, with a clear error otherwise."""
        found = self.lookup(path)
        shown = path if self.root == "/" else f"{path} (in root {self.root})"
        if found is None:
            raise FileProblem(f"{shown}: no such file")
        if found.is_dir:
            raise FileProblem(f"{shown}: is a directory, not a program")
        if not found.is_file:
            raise FileProblem(f"{shown}: not a regular file")
        return found

    def is_dir(self, path: str) -> bool:
        found = self.lookup(path)
        return found is not None and found.is_dir

    def read_bytes(self, path: str, limit: int | None = None) -> bytes | None:
        """The content of a regular file inside the root, or None when there is none."""
        found = self.lookup(path)
        if found is None or not found.is_file:
            return None
        with open(self.host_path(found.real), "rb") as fh:
            return fh.read() if limit is None else fh.read(limit)

    def listdir(self, path: str) -> list[str]:
        found = self.lookup(path)
        if found is None or not found.is_dir:
            return []
        return sorted(os.listdir(self.host_path(found.real)))
