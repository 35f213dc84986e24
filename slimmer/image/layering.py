"""`--layers auto|N`: the image's file tree split into layers, most shared first.

Every path goes to one group by a rule that reads only the path (and, for directories, what is
under them), never which program the image is for, so that two images from the same root put
the same files in the same group, and the same group of files is the same layer, byte for byte
(docs/layers.md has the rule with figures):

  1. base       the dynamic loader and libc (ld-linux*.so*, ld64.so.*, ld-musl-*.so.1,
                libc.so.6, libc-*.so, libc.musl-*.so.1 in a library directory), the symlinks
                /lib, /lib64, /lib32, /libx32 (-> usr/lib...: on the way to the loader on a
                merged-/usr root), the directories every image gets (/tmp, /root,
                /home/nonroot), libc6's dpkg status and the distribution's identity
                (/etc/os-release, /usr/lib/os-release, base-files' dpkg status)
  2. shared     one layer for each of a fixed list of libraries that many programs use
                (FAMILIES: libgcc_s, zlib, openssl (libssl + libcrypto), libstdc++, zstd, xz,
                bzip2, libffi, expat, pcre2, sqlite), in that order, each holding the files of
                that library the image has: images that use OpenSSL share its layer too
  3. libraries  every other lib*.so / lib*.so.* in a library directory: /lib, /lib64,
                /lib32, /libx32, /usr/lib*, /usr/local/lib*, each possibly followed by a
                multiarch directory (x86_64-linux-gnu) and glibc-hwcaps/NAME
  4. data       the rest under those library roots (gconv, python3.11, ossl-modules, ...),
                under /usr/share and /usr/local/share, and /etc/ssl (certificates)
  5. app        everything else: the programs, /app, /etc (ld.so.cache, passwd, group,
                nsswitch.conf), the other dpkg status files, recipes' directories

A directory goes into each layer that holds something under it, with the same header in each
(a directory repeated in a later layer with other metadata would change it); an empty one goes
by its own path. Files that are one file (the same node: hard links) go together, into the
latest group among theirs. A file is in exactly one layer.

`--layers N` keeps the first N-1 non-empty groups and merges the rest into the last, so the
most shared layers stay apart: 2 gives base + the rest; 1 is the one-layer image, the tree
written as it is (the same bytes as without --layers).

A registry shares equal layers wherever they are; an engine's store (Docker's, containerd's)
shares a layer only with the same layers below it (its chain ID): hence the fixed order, base
first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from slimmer.tree import Dir, Entry, File, FileTree, Symlink

# Libraries many programs share, each its own layer, most used first: name -> file names.
FAMILIES = (
    ("libgcc_s", r"libgcc_s\.so\.1"),
    ("zlib", r"libz\.so\.[0-9][0-9.]*"),
    ("openssl", r"lib(?:ssl|crypto)\.so\.[0-9][0-9.]*"),
    ("libstdc++", r"libstdc\+\+\.so\.[0-9][0-9.]*"),
    ("zstd", r"libzstd\.so\.[0-9][0-9.]*"),
    ("xz", r"liblzma\.so\.[0-9][0-9.]*"),
    ("bzip2", r"libbz2\.so\.[0-9][0-9.]*"),
    ("libffi", r"libffi\.so\.[0-9][0-9.]*"),
    ("expat", r"libexpat\.so\.[0-9][0-9.]*"),
    ("pcre2", r"libpcre2-8\.so\.[0-9][0-9.]*"),
    ("sqlite", r"libsqlite3\.so\.[0-9][0-9.]*"),
)
GROUPS = ("base", *(name for name, _ in FAMILIES), "libraries", "data", "app")
BASE, LIBRARIES, DATA, APP = 0, len(GROUPS) - 3, len(GROUPS) - 2, len(GROUPS) - 1
_FAMILY = [(1 + i, re.compile(pattern)) for i, (_, pattern) in enumerate(FAMILIES)]

_LIB_ROOT = r"(?:/usr(?:/local)?)?/lib(?:64|32|x32)?"
_LIB_DIR = re.compile(_LIB_ROOT + r"(?:/[^/]*-linux-[^/]*)?(?:/glibc-hwcaps/[^/]+)?")
_UNDER_LIB = re.compile(_LIB_ROOT + r"/.")
_LIBRARY = re.compile(r"lib.*\.so(?:\.[0-9][^/]*)?")
_TOP_LIB = re.compile(r"lib(?:64|32|x32)?")
_LOADER_LIBC = re.compile(r"ld-linux[^/]*\.so[^/]*|ld64\.so\.[0-9]+|ld-musl-[^/]*\.so\.1|"
                          r"libc\.so\.6|libc-[0-9.]+\.so|libc\.musl-[^/]*\.so\.1")
BASE_DIRS = frozenset({"/tmp", "/root", "/home/nonroot"})  # baseline.add_to's
BASE_FILES = frozenset({"/var/lib/dpkg/status.d/libc6", "/etc/os-release", "/usr/lib/os-release",
                        "/var/lib/dpkg/status.d/base-files"})  # and the distribution's identity
DATA_TOPS = ("/usr/share/", "/usr/local/share/", "/etc/ssl/")


def group_of(path: str, entry: Entry) -> int:
    """The group of one path of the tree (a directory's own, used when it is empty)."""
    directory, _, name = path.rpartition("/")
    if path in BASE_DIRS or path in BASE_FILES:
        return BASE
    if isinstance(entry, Symlink) and directory == "" and _TOP_LIB.fullmatch(name):
        return BASE  # /lib -> usr/lib, /lib64: on the way to the loader on a merged-/usr root
    if not isinstance(entry, Dir) and _LIB_DIR.fullmatch(directory):
        if _LOADER_LIBC.fullmatch(name):
            return BASE
        if _LIBRARY.fullmatch(name):
            return next((g for g, pattern in _FAMILY if pattern.fullmatch(name)), LIBRARIES)
    if _UNDER_LIB.match(path) or path.startswith(DATA_TOPS):
        return DATA
    return APP


@dataclass(frozen=True, slots=True)
class Part:
    """One layer to write: the names of the groups it holds and its own tree."""

    name: str  # "base", "libraries", "data+app", or "all" for the one-layer image
    tree: FileTree


def assign(tree: FileTree) -> dict[str, int]:
    """The group of every entry that is not a directory with something under it."""
    groups: dict[str, int] = {}
    nodes: dict[str, int] = {}
    has_children: set[str] = set()
    for path, entry in tree.items():
        parent = path.rpartition("/")[0] or "/"
        has_children.add(parent)
        group = group_of(path, entry)
        groups[path] = group
        if isinstance(entry, File) and entry.node is not None:
            nodes[entry.node] = max(nodes.get(entry.node, BASE), group)
    for path, entry in tree.items():
        if isinstance(entry, File) and entry.node is not None:
            groups[path] = nodes[entry.node]  # one file under several names: one layer
        elif isinstance(entry, Dir) and path in has_children:
            del groups[path]  # goes wherever something under it goes
    return groups


def split(tree: FileTree, count: int | None) -> list[Part]:
    """The layers of `tree`, base first: `count` None for every non-empty group, else at
    most `count` (the last holds the groups beyond)."""
    if count == 1:
        return [Part("all", tree)]
    groups = assign(tree)
    used = sorted(set(groups.values()))
    if count is not None and len(used) > count:
        merged = {g: (i if i < count - 1 else count - 1) for i, g in enumerate(used)}
    else:
        merged = {g: i for i, g in enumerate(used)}
    names = ["+".join(GROUPS[g] for g in used if merged[g] == i)
             for i in range(len(set(merged.values())))]
    parts = [FileTree() for _ in names]
    for path, group in groups.items():
        _place(parts[merged[group]], tree, path)
    return [Part(name, part) for name, part in zip(names, parts, strict=True)]


def _place(part: FileTree, tree: FileTree, path: str) -> None:
    """`path` into `part`, its directories before it with the headers the whole tree has."""
    missing: list[str] = []
    cur = path.rpartition("/")[0]
    while cur and cur not in part:
        missing.append(cur)
        cur = cur.rpartition("/")[0]
    for directory in reversed(missing):
        _copy(part, tree, directory)
    _copy(part, tree, path)


def _copy(part: FileTree, tree: FileTree, path: str) -> None:
    entry = tree.get(path)
    assert entry is not None
    part.add(path, entry, tree.reasons.get(path, ""), tree.parents.get(path))
