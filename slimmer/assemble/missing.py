"""Missing libraries, said so that a person can act on them.

One summary line ("56 libraries missing, 1 distinct: libjvm.so"), then one line per distinct
name: who needs it (the first few) and where it was searched (each place once); then a hint
per name: a file of that name elsewhere in the root (or among the --add'ed files) is named with
the --library-path that finds it, a program that lies in another root gets --root, and else
--add or --library-path. --verbose shows every missing library with its full search instead.

Looking for "elsewhere" is bounded: the usual library directories and /opt, DEPTH levels
deep, at most MAX_DIRS directories (60-200 ms for the 34,000 entries of the development
machine's: docs/messages.md; tests/test_messages.py measures it).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from slimmer.errors import MissingLibraries, SlimmerError, counted
from slimmer.loader.arch import Arch
from slimmer.loader.closure import Closure, Missing
from slimmer.loader.report import missing_line, searched_places
from slimmer.loader.root import Root, SysRoot
from slimmer.loader.views import OverlayRoot
from slimmer.tree import FileTree

TOPS = ("/opt", "/usr/lib", "/usr/lib64", "/usr/local/lib", "/lib", "/lib64", "/usr/libexec")
DEPTH = 5  # directories below a top: /usr/lib/jvm/java-17-openjdk-amd64/lib/server is 4
MAX_DIRS = 20_000
SHOWN_NAMES = 8  # distinct names with a line of their own (all with --verbose)
SHOWN_NEEDERS = 3


@dataclass(frozen=True, slots=True)
class Where:
    """Where the files come from, for the hints: `root` as the resolver saw it (--add'ed
    files over it), `host_root` the directory of --root (None for an image being slimmed),
    `added` the --add'ed files."""

    root: Root
    host_root: str | None = "/"
    added: FileTree | None = None


@dataclass(frozen=True, slots=True)
class Group:
    """The missing libraries of one name."""

    soname: str
    needed_by: tuple[str, ...]
    reasons: tuple[str, ...]
    places: tuple[str, ...]  # directories (or the cache) searched, each once, in order
    arch: Arch | None

    def line(self) -> str:
        return (f"{self.soname}: {', '.join(self.reasons)}, needed by "
                f"{_needers(self.needed_by)} (searched {_places(self.places)})")


def refuse(closures: Iterable[Closure], where: Where | None = None, prefix: str = "") -> None:
    """Raise MissingLibraries when a closure misses a library; `prefix` leads the message. A
    library two programs miss through the same object counts once."""
    seen: dict[tuple[str, str], tuple[Missing, Arch | None]] = {}
    for c in closures:
        for m in c.missing:
            seen.setdefault((m.soname, m.needed_by), (m, c.elf.arch))
    pairs = list(seen.values())
    if pairs:
        raise error(pairs, where, prefix)


def error(pairs: Sequence[tuple[Missing, Arch | None]], where: Where | None = None,
          prefix: str = "") -> MissingLibraries:
    """The error for these missing libraries (each with the architecture of its program)."""
    groups = group(pairs)
    full = [missing_line(m) for m, _ in pairs]
    hints = hints_for(groups, where) if where is not None else []  # the CLI shows 5
    if len(pairs) == 1:
        m = pairs[0][0]
        message = (f"{m.soname} needed by {m.needed_by}: {m.reason} "
                   f"(searched {_places(groups[0].places)})")
        return MissingLibraries(prefix + message, full_details=full, hints=hints)
    names = [g.soname for g in groups]
    message = (f"{len(pairs)} libraries missing, {len(groups)} distinct: "
               f"{counted(names, SHOWN_NAMES)}")
    details = [g.line() for g in groups[:SHOWN_NAMES]]
    if len(groups) > SHOWN_NAMES:
        details.append(f"... and {len(groups) - SHOWN_NAMES} more names "
                       "(--verbose shows every missing library)")
    return MissingLibraries(prefix + message, details=details, full_details=full, hints=hints)


def group(pairs: Sequence[tuple[Missing, Arch | None]]) -> list[Group]:
    """The missing libraries by name, in the order first missed."""
    by_name: dict[str, tuple[dict[str, None], dict[str, None], dict[str, None], Arch | None]] = {}
    for m, arch in pairs:
        needers, reasons, places, _ = by_name.setdefault(m.soname, ({}, {}, {}, arch))
        needers.setdefault(m.needed_by, None)
        reasons.setdefault(m.reason, None)
        for place in searched_places(m):
            places.setdefault(place, None)
    return [Group(name, tuple(n), tuple(r), tuple(p), arch)
            for name, (n, r, p, arch) in by_name.items()]


def _needers(paths: Sequence[str]) -> str:
    """The first few objects, by name only when they share one directory."""
    folders = {os.path.dirname(p) for p in paths}
    if len(paths) > 1 and len(folders) == 1:
        names = [os.path.basename(p) for p in paths]
        return f"{counted(names, SHOWN_NEEDERS)} in {folders.pop()}"
    return counted(paths, SHOWN_NEEDERS)


def _places(places: Sequence[str]) -> str:
    return ", ".join(places) if places else "nowhere"


# ---- hints ---------------------------------------------------------------------------------


def hints_for(groups: Sequence[Group], where: Where) -> list[str]:
    """One fix per missing name, the one that fits."""
    found = find_elsewhere(where, {g.soname for g in groups if "/" not in g.soname})
    hints = []
    for g in groups:
        places = set(g.places)
        candidates = [p for p in dict.fromkeys(found.get(g.soname, []))
                      if os.path.dirname(p) not in places and _fits(where.root, p, g.arch)]
        other = _other_root(where, g)
        if candidates:
            more = len(candidates) - 1
            also = f" (and {more} more place{'s' if more > 1 else ''})" if more else ""
            hints.append(f"{g.soname}: found at {candidates[0]}{also}, not on any search "
                         f"path: add --library-path {os.path.dirname(candidates[0])}")
        elif other is not None:
            hints.append(other)
        else:
            hints.append(f"{g.soname}: in no library directory of {_name(where)} either: add "
                         "the file with --add SRC:DEST, or its directory with --library-path DIR")
    return hints


def _name(where: Where) -> str:
    if where.host_root is None:
        return "the image"
    return "this machine" if where.host_root == "/" else where.host_root


def find_elsewhere(where: Where, names: set[str]) -> dict[str, list[str]]:
    """The files named like a missing library: among the --add'ed ones, then in the usual
    library directories of the root (a bounded walk)."""
    found: dict[str, list[str]] = {}
    if not names:
        return found
    if where.added is not None:
        for path in where.added.paths():
            if os.path.basename(path) in names:
                found.setdefault(os.path.basename(path), []).append(path)
    root = where.root.below if isinstance(where.root, OverlayRoot) else where.root
    budget = [MAX_DIRS]
    seen: set[str] = set()
    for top in TOPS:
        start = root.lookup(top)
        if start is None or not start.is_dir or start.real in seen:
            continue
        seen.add(start.real)
        for directory, files in _walk(root, start.real, budget):
            shown = top + directory[len(start.real.rstrip("/")):]
            for name in files:
                if name in names:
                    found.setdefault(name, []).append(f"{shown.rstrip('/')}/{name}")
    return found


def _walk(root: Root, top: str, budget: list[int]) -> Iterator[tuple[str, list[str]]]:
    """(directory, names of what is not a directory in it) for `top` and DEPTH levels below,
    symlinks never followed, while budget[0] directories remain. A host directory is read with
    scandir (no stat per entry: 34,000 entries of /usr/lib and /opt in 60 ms)."""
    stack = [(top, 0)]
    while stack and budget[0] > 0:
        directory, depth = stack.pop()
        budget[0] -= 1
        dirs: list[str] = []
        others: list[str] = []
        if isinstance(root, SysRoot):
            try:
                with os.scandir(root.host_path(directory)) as entries:
                    for entry in entries:
                        is_dir = entry.is_dir(follow_symlinks=False)
                        (dirs if is_dir else others).append(entry.name)
            except OSError:
                continue
        else:
            for name in root.listdir_real(directory):
                st = root.stat_real(f"{directory.rstrip('/')}/{name}")
                (dirs if st is not None and stat.S_ISDIR(st.mode) else others).append(name)
        yield directory, others
        if depth < DEPTH:
            here = directory.rstrip("/")
            stack += [(f"{here}/{d}", depth + 1) for d in sorted(dirs, reverse=True)]


def _fits(root: Root, path: str, arch: Arch | None) -> bool:
    """A regular file of the program's architecture (a 32-bit libfoo.so is no fix)."""
    found = root.lookup(path)
    if found is None or not found.is_file:
        return False
    try:
        return arch is None or root.read_elf(found).arch == arch
    except SlimmerError:
        return False


def _other_root(where: Where, g: Group) -> str | None:
    """A program of this machine that lies in a directory that is a root of its own (it
    holds the missing file where the program's loader would look): --root. The outermost
    such directory is the root (its /usr would hold the file too)."""
    if where.host_root != "/":
        return None
    for needer in g.needed_by:
        parts = needer.strip("/").split("/")
        for depth in range(1, len(parts)):
            top = "/" + "/".join(parts[:depth])
            if os.path.isdir(f"{top}/usr") and _holds(top, g):
                inside = "/" + "/".join(parts[depth:])
                return (f"{top}: a root of its own, holding {inside} and {g.soname}: pack "
                        f"{inside} with --root {top}")
    return None


def _holds(top: str, g: Group) -> bool:
    if g.soname.startswith("/"):  # the interpreter, by its path
        return os.path.isfile(top + g.soname)
    places = [p for p in g.places if p.startswith("/") and " (" not in p]
    return any(os.path.isfile(f"{top}{p.rstrip('/')}/{g.soname}") for p in places)
