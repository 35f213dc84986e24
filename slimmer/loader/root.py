"""A read-only view of a root directory in which every path and symlink is resolved inside it.

`SysRoot("/srv/rootfs").lookup("/lib64/ld-linux-x86-64.so.2")` walks the path one component at a
time the way the kernel does, but an absolute symlink restarts at the root given here and `..` never
climbs above it, so nothing outside the root is ever read. Only directories that have been checked
not to be symlinks are handed to the host, so the host never follows a link on our behalf.
"""

from __future__ import annotations

import os
import stat
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, NamedTuple

from slimmer.errors import FileProblem, SymlinkLoop
from slimmer.loader.elf import ElfInfo, read_elf, read_imports

if TYPE_CHECKING:
    from slimmer.tree import Dir, File

# Linux gives up after 40 symbolic links in one resolution (MAXSYMLINKS, ELOOP).
MAX_SYMLINKS = 40


class Link(NamedTuple):
    """A symbolic link met while resolving: where it is (inside the root) and what it says."""

    path: str
    target: str


class Resolved(NamedTuple):
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


class Stat(NamedTuple):
    mode: int
    size: int
    dev: int
    ino: int


class Root(ABC):
    """A tree seen as `/`: the host directory of SysRoot, or an image being assembled. Path
    resolution is shared; subclasses only answer for paths with no symlink in them."""

    def __init__(self) -> None:
        self._walks: dict[str, Resolved | None] = {}
        # real path -> imported symbols: the evidence step and the runtime rules both ask
        self._imports: dict[str, frozenset[str]] = {}

    @abstractmethod
    def describe(self, path: str) -> str:
        """How to name `path` in a message."""

    @abstractmethod
    def stat_real(self, real: str) -> Stat | None:
        """lstat of a path whose directories are known not to be symlinks; None if absent."""

    @abstractmethod
    def readlink_real(self, real: str) -> str: ...

    @abstractmethod
    def read_real(self, real: str, limit: int | None = None) -> bytes: ...

    @abstractmethod
    def listdir_real(self, real: str) -> list[str]: ...

    @contextmanager
    def reader_real(self, real: str) -> Iterator[tuple[Callable[[int, int], bytes], int]]:
        """(read(offset, length), size) of a regular file, to read parts of it: the sections
        a scan needs, not the whole file (a host root reads them with pread; a file truncated
        meanwhile gives fewer bytes, never a crash as a mapping would)."""
        data = self.read_real(real)
        yield (lambda offset, length: data[offset:offset + length]), len(data)

    @abstractmethod
    def elf_real(self, real: str, shown: str) -> ElfInfo:
        """The ELF facts of a regular file (raises SlimmerError for bad files)."""

    def imports_real(self, real: str, shown: str) -> frozenset[str]:
        """The dynamic symbols an ELF file imports (read once per root)."""
        found = self._imports.get(real)
        if found is None:
            found = self._imports[real] = self.read_imports_real(real, shown)
        return found

    @abstractmethod
    def read_imports_real(self, real: str, shown: str) -> frozenset[str]:
        """The dynamic symbols an ELF file imports, read from the file."""

    @abstractmethod
    def file_entry(self, real: str, keep_setuid: bool) -> File:
        """A regular file of this root as an image entry (its mode normalised)."""

    # dir_entry is always Dir(), what the image implies for a parent anyway (a host root):
    # then placing a file needs no look at the directories above it
    plain_dirs = True

    def dir_entry(self, real: str, keep_setuid: bool) -> Dir:
        """A directory of this root as an image entry: root's 0755 for a host directory (its
        owner and mode are the build machine's); an image root gives its own."""
        from slimmer.tree import Dir  # rootfs builds on this module

        return Dir()

    def walk(self, top: str) -> Iterator[tuple[str, list[str], list[str]]]:
        """Like os.walk over a real directory of the root, top-down, never following a
        symlink: (directory, subdirectories, everything else). Prune by editing the list of
        subdirectories in place."""
        stack = [top]  # not recursion: an image can nest 10,000 directories
        while stack:
            cur = stack.pop()
            dirs: list[str] = []
            others: list[str] = []
            for name in sorted(self.listdir_real(cur)):
                st = self.stat_real(f"{cur.rstrip('/')}/{name}")
                (dirs if st is not None and stat.S_ISDIR(st.mode) else others).append(name)
            yield cur, dirs, others
            stack += [f"{cur.rstrip('/')}/{name}" for name in reversed(dirs)]

    def lookup(self, path: str, _depth: int = 0) -> Resolved | None:
        """Resolve an absolute in-root path; None when it does not exist. Raises SymlinkLoop."""
        if path in self._walks:
            return self._walks[path]
        # The parents not resolved yet first, top-down (each then finds its own parent
        # remembered): a path 10,000 directories deep must not recurse 10,000 times.
        pending: list[str] = []
        parent = path.rpartition("/")[0]
        while parent and parent not in self._walks:
            pending.append(parent)
            parent = parent.rpartition("/")[0]
        for up in reversed(pending):
            self._walks[up] = self._walk_last(up, _depth)
        result = self._walk_last(path, _depth)
        self._walks[path] = result
        return result

    def _walk_last(self, path: str, depth: int) -> Resolved | None:
        """Most lookups share all but their last name with an earlier one: resolve the parent
        (remembered), then the last name; a symlink there continues from its target, which is
        remembered too. `_walk` does the general case."""
        parent, _, name = path.rpartition("/")
        if not parent or name in ("", ".", ".."):
            return self._walk(path)
        if depth >= MAX_SYMLINKS:
            raise SymlinkLoop(f"{self.describe(path)}: too many levels of symbolic links")
        up = self.lookup(parent, depth)
        if up is None or not up.is_dir:
            return None
        real = f"{up.real.rstrip('/')}/{name}"
        st = self.stat_real(real)
        if st is None:
            return None
        if not stat.S_ISLNK(st.mode):
            return Resolved(path, real, up.links, st.mode, st.size, st.dev, st.ino)
        target = self.readlink_real(real)
        further = target if target.startswith("/") else f"{up.real.rstrip('/')}/{target}"
        end = self.lookup(further, depth + 1)
        if end is None:
            return None
        links = (*up.links, Link(real, target), *end.links)
        if len(links) > MAX_SYMLINKS:
            raise SymlinkLoop(f"{self.describe(path)}: too many levels of symbolic links")
        return Resolved(path, end.real, links, end.mode, end.size, end.dev, end.ino)

    def _walk(self, path: str) -> Resolved | None:
        parts = deque(path.split("/"))
        cur = ""
        links: list[Link] = []
        st = self.stat_real("/")
        while parts:
            name = parts.popleft()
            if name in ("", "."):
                continue
            if name == "..":
                cur = cur.rsplit("/", 1)[0]
                st = self.stat_real(cur or "/")
                continue
            if st is None or not stat.S_ISDIR(st.mode):
                return None  # a file used as a directory: ENOTDIR
            nxt = f"{cur}/{name}"
            st = self.stat_real(nxt)
            if st is None:
                return None
            if stat.S_ISLNK(st.mode):
                if len(links) >= MAX_SYMLINKS:
                    raise SymlinkLoop(f"{self.describe(path)}: too many levels of symbolic links")
                target = self.readlink_real(nxt)
                links.append(Link(nxt, target))
                if target.startswith("/"):
                    cur = ""
                parts.extendleft(reversed(target.split("/")))
                st = self.stat_real(cur or "/")
                continue
            cur = nxt
        if st is None:
            return None
        return Resolved(path, cur or "/", tuple(links), st.mode, st.size, st.dev, st.ino)

    def require_file(self, path: str) -> Resolved:
        """Resolve a path that must be an existing regular file, with a clear error otherwise."""
        found = self.lookup(path)
        shown = self.describe(path)
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
        return self.read_real(found.real, limit)

    def listdir(self, path: str) -> list[str]:
        found = self.lookup(path)
        if found is None or not found.is_dir:
            return []
        return sorted(self.listdir_real(found.real))

    def read_elf(self, found: Resolved) -> ElfInfo:
        return self.elf_real(found.real, found.asked)


SMALL_READ = 1 << 16  # read_real up to this limit: one pread (no buffered file object)


class SysRoot(Root):
    """A host directory seen as `/` (default: the host's own root). Caches lstat; never writes."""

    def __init__(self, root: str | os.PathLike[str] = "/") -> None:
        super().__init__()
        host = os.path.abspath(os.fspath(root))
        if not os.path.isdir(host):
            raise FileProblem(f"{root}: root is not a directory")
        self.root = host
        self._lstat: dict[str, Stat | None] = {}

    def __repr__(self) -> str:
        return f"SysRoot({self.root!r})"

    def describe(self, path: str) -> str:
        return path if self.root == "/" else f"{path} (in root {self.root})"

    def host_path(self, real: str) -> str:
        """The host path of an in-root path that `lookup` returned as real (no symlinks in it)."""
        if self.root == "/":
            return real
        return self.root + real if real != "/" else self.root

    def stat_real(self, real: str) -> Stat | None:
        if real in self._lstat:
            return self._lstat[real]
        try:
            st = os.lstat(self.host_path(real))
            found: Stat | None = Stat(st.st_mode, st.st_size, st.st_dev, st.st_ino)
        except (FileNotFoundError, NotADirectoryError):
            found = None
        except OSError as exc:
            raise FileProblem(f"{self.describe(real)}: cannot read ({exc.strerror})") from exc
        self._lstat[real] = found
        return found

    def readlink_real(self, real: str) -> str:
        return os.readlink(self.host_path(real))

    def read_real(self, real: str, limit: int | None = None) -> bytes:
        if limit is not None and limit <= SMALL_READ:  # a magic, a shebang: one pread
            fd = os.open(self.host_path(real), os.O_RDONLY | os.O_CLOEXEC)
            try:
                return os.pread(fd, limit, 0)
            finally:
                os.close(fd)
        with open(self.host_path(real), "rb") as fh:
            return fh.read() if limit is None else fh.read(limit)

    def listdir_real(self, real: str) -> list[str]:
        return os.listdir(self.host_path(real))

    @contextmanager
    def reader_real(self, real: str) -> Iterator[tuple[Callable[[int, int], bytes], int]]:
        fd = os.open(self.host_path(real), os.O_RDONLY | os.O_CLOEXEC)
        try:
            yield (lambda offset, length: os.pread(fd, length, offset)), os.fstat(fd).st_size
        finally:
            os.close(fd)

    def elf_real(self, real: str, shown: str) -> ElfInfo:
        return read_elf(self.host_path(real), shown)

    def read_imports_real(self, real: str, shown: str) -> frozenset[str]:
        return read_imports(self.host_path(real), shown)

    def file_entry(self, real: str, keep_setuid: bool) -> File:
        from slimmer.tree import host_file  # rootfs builds on this module

        return host_file(self.host_path(real), keep_setuid)
