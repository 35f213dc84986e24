"""Search-path facts: dynamic string tokens, glibc's compiled-in system directories, ld.so.conf,
and musl's path file."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterator
from typing import NamedTuple

from slimmer.errors import FileProblem
from slimmer.loader.arch import Arch
from slimmer.loader.root import Resolved, Root
from slimmer.paths import normalize

# glibc keeps SYSTEM_DIRS as one NUL-separated run of absolute directories with a trailing slash,
# e.g. b"/lib/x86_64-linux-gnu/\0/usr/lib/x86_64-linux-gnu/\0/lib/\0/usr/lib/\0" in ld.so's
# .rodata; --help prints it as "System search directories". Reading it from the root's own loader
# gives exactly the directories that loader searches, also for multilib loaders (/lib32).
_SYSTEM_DIRS = re.compile(rb"(?:/[A-Za-z0-9_.+-]+(?:/[A-Za-z0-9_.+-]+)*/\x00){2,}")


class SearchDefaults(NamedTuple):
    """What one glibc loader searches after the cache, and how it expands $LIB."""

    dirs: tuple[str, ...]  # without trailing slash
    lib_token: str
    legacy: bool = True  # searches the legacy hwcaps subdirectories (tls/, x86_64/...)


# glibc 2.37 dropped the legacy hwcaps subdirectories; 2.33 to 2.36 print this heading in
# `ld.so --help`, and loaders before 2.33 know no glibc-hwcaps at all (and search them).
_LEGACY_HEADING = b"Legacy HWCAP subdirectories"


def _searches_legacy(loader: bytes | None) -> bool:
    return loader is None or _LEGACY_HEADING in loader or b"glibc-hwcaps" not in loader


LOADER_READ_LIMIT = 16 << 20


def glibc_defaults(root: Root, interpreter: str | None, arch: Arch) -> SearchDefaults:
    """System directories of the loader at `interpreter` inside `root`, or the arch's table."""
    # Real loaders are 0.2-2 MB; a hostile root's "loader" is read no further than this.
    data = root.read_bytes(interpreter, LOADER_READ_LIMIT) if interpreter else None
    if data is not None:
        # Every such run holds "/\0/": look only around those places (a regex over the whole
        # 200 KB loader would cost more than resolving a program).
        pos = data.find(b"/\0/")
        while pos >= 0:
            match = _SYSTEM_DIRS.search(data, max(0, pos - 512), pos + 4096)
            if match is not None and match.start() <= pos < match.end():
                dirs = tuple(d.decode().rstrip("/") or "/"
                             for d in match.group().split(b"\0") if d)
                if all("lib" in d for d in dirs):
                    return SearchDefaults(dirs, dirs[0].lstrip("/"), _searches_legacy(data))
                pos = match.end()
            pos = data.find(b"/\0/", pos + 1)
    multiarch = root.is_dir(f"/usr/lib/{arch.triplet}") or root.is_dir(f"/lib/{arch.triplet}")
    return SearchDefaults(arch.default_dirs(multiarch), arch.lib_token(multiarch),
                          _searches_legacy(data))


def legacy_subdirs(hwcap_names: tuple[str, ...], platform: str | None) -> tuple[str, ...]:
    """The legacy hwcaps subdirectories glibc before 2.37 tries in every search directory,
    after the glibc-hwcaps ones and before the directory itself (elf/dl-hwcaps.c
    _dl_important_hwcaps): every combination of the CPU's hwcap names (`hwcap_names` in bit
    order), the platform and "tls", the fullest first, counting down with the first name as the
    lowest bit, each written from the last name to the first: for x86_64 on a haswell CPU
    tls/haswell/x86_64, tls/haswell, tls/x86_64, tls, haswell/x86_64, haswell, x86_64."""
    names = [*hwcap_names, *([platform] if platform else []), "tls"]
    out: list[str] = []
    for mask in range((1 << len(names)) - 1, 0, -1):
        out.append("/".join(names[n] for n in reversed(range(len(names))) if mask >> n & 1))
    return tuple(dict.fromkeys(out))


_TOKEN = re.compile(r"\$(\{(ORIGIN|LIB|PLATFORM)\}|(ORIGIN|LIB|PLATFORM)(?![A-Za-z0-9_]))")


def expand_glibc(element: str, origin: str, lib: str, platform: str) -> str:
    """Expand $ORIGIN, $LIB and $PLATFORM (also braced); an unknown `$NAME` stays as written,
    as glibc's _dl_dst_substitute leaves it."""
    values = {"ORIGIN": origin, "LIB": lib, "PLATFORM": platform}
    return _TOKEN.sub(lambda m: values[m.group(2) or m.group(3)], element)


def split_glibc_path(value: str, origin: str, lib: str, platform: str) -> tuple[str, ...]:
    """A DT_RPATH/DT_RUNPATH/LD_LIBRARY_PATH value as glibc's fillin_rpath makes it: split on
    ':' (and ';' for LD_LIBRARY_PATH, which the caller passes already split), tokens expanded,
    trailing slashes removed, duplicates dropped. An empty element means the working directory,
    which is `/` in a container unless a workdir is set."""
    dirs: list[str] = []
    for element in value.split(":"):
        expanded = expand_glibc(element, origin, lib, platform) if element else "."
        expanded = expanded.rstrip("/") or "/"
        if not expanded.startswith("/"):
            expanded = normalize("/" + expanded) if expanded != "." else "/"
        if expanded not in dirs:
            dirs.append(expanded)
    return tuple(dirs)


def split_musl_path(value: str, origin: str) -> tuple[str, ...] | None:
    """musl's fixup_rpath: only $ORIGIN/${ORIGIN} are known; any other `$` makes musl ignore the
    whole rpath (None)."""
    rest = value.replace("${ORIGIN}", "\0").replace("$ORIGIN", "\0")
    if "$" in rest:
        return None
    return tuple(d for d in rest.replace("\0", origin).split(":") if d)


# ld.so.conf files are a few hundred bytes; a bigger one is not a configuration file.
MAX_CONF_SIZE = 1 << 20


def read_ld_so_conf(root: Root, path: str = "/etc/ld.so.conf") -> tuple[str, ...]:
    """Directories named by ld.so.conf and its `include` globs, in order (what ldconfig reads).
    Each file is read once, however often it is included (files that include each other would
    otherwise be read a factorial number of times); an explicit stack instead of recursion, so
    a long chain of includes cannot exhaust Python's."""
    dirs: list[str] = []
    seen: set[str] = set()
    stack: list[Iterator[tuple[bool, str]]] = [iter([(True, path)])]
    while stack:
        item = next(stack[-1], None)
        if item is None:
            stack.pop()
            continue
        is_file, value = item
        if not is_file:
            dirs.append(value)
            continue
        found = root.lookup(value)
        if found is None or not found.is_file or found.real in seen:
            continue
        seen.add(found.real)
        stack.append(_conf_items(root, value, found))
    return tuple(dict.fromkeys(dirs))


def _conf_items(root: Root, path: str, found: Resolved) -> Iterator[tuple[bool, str]]:
    """One conf file's entries in order: (False, directory) or (True, included file)."""
    if found.size > MAX_CONF_SIZE:
        raise FileProblem(f"{root.describe(path)}: {found.size} bytes, more than the "
                          f"{MAX_CONF_SIZE >> 20} MiB an ld.so.conf file may have")
    data = root.read_real(found.real, MAX_CONF_SIZE)
    base = path.rsplit("/", 1)[0] or "/"
    for raw in data.decode("utf-8", "replace").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        words = line.split()
        if words[0] == "include":
            for pattern in words[1:]:
                full = pattern if pattern.startswith("/") else f"{base}/{pattern}"
                for conf in _glob(root, normalize(full)):
                    yield True, conf
        elif words[0] != "hwcap":
            for d in re.split(r"[:,\s]+", line):
                if d.startswith("/"):
                    yield False, normalize(d)


def _glob(root: Root, pattern: str) -> list[str]:
    """Expand a glob whose wildcards are in its last component, inside the root."""
    directory, _, name = pattern.rpartition("/")
    directory = directory or "/"
    if not any(c in name for c in "*?["):
        return [pattern]
    return [f"{directory.rstrip('/')}/{entry}" for entry in root.listdir(directory)
            if fnmatch.fnmatchcase(entry, name)]


def musl_path_file(interpreter: str, arch_name: str) -> str:
    """`<prefix>/etc/ld-musl-ARCH.path`, prefix = the interpreter path less two components."""
    parts = interpreter.split("/")
    prefix = "/".join(parts[:-2]) if len(parts) > 2 else ""
    return f"{prefix}/etc/ld-musl-{arch_name}.path"


MUSL_DEFAULT = ("/lib", "/usr/local/lib", "/usr/lib")
MUSL_LIBC_NAMES = frozenset({"c", "pthread", "rt", "m", "dl", "util", "xnet"})


def musl_is_libc(name: str) -> bool:
    """musl maps libc, libpthread, librt, libm, libdl, libutil and libxnet to itself."""
    return name.startswith("lib") and name[3:].split(".", 1)[0] in MUSL_LIBC_NAMES


def musl_system_dirs(root: Root, interpreter: str,
                     arch_name: str) -> tuple[tuple[str, ...], str]:
    """musl's search path after rpath: the path file when it exists (empty file: none), else the
    built-in default. Also says which it was."""
    path_file = musl_path_file(interpreter, arch_name)
    data = root.read_bytes(path_file)
    if data is None:
        return MUSL_DEFAULT, "default"
    text = data.decode("utf-8", "replace")
    return tuple(d for d in re.split(r"[:\n]", text) if d), "path-file"
