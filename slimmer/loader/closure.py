"""What resolving a program gives: the closure (program, interpreter, libraries in load order,
what is missing), with how each library was found, and the options it was resolved with."""

from __future__ import annotations

from typing import NamedTuple

from slimmer.loader.elf import ElfInfo, Kind
from slimmer.loader.root import Link

# How a library was found; shown by `slimmer deps` and in its JSON.
VIA_PATH = "path"  # DT_NEEDED holds a '/'
VIA_RPATH = "rpath"
VIA_LIBRARY_PATH = "library-path"
VIA_RUNPATH = "runpath"
VIA_CACHE = "cache"
VIA_CONF = "ld.so.conf"  # no ld.so.cache in the root: ldconfig's directories stand in for it
VIA_DEFAULT = "default"
VIA_HWCAPS = "hwcaps"
VIA_PATH_FILE = "path-file"  # musl's /etc/ld-musl-ARCH.path


class Options(NamedTuple):
    """What the program will run with, beyond the files of the root."""

    library_path: tuple[str, ...] = ()  # LD_LIBRARY_PATH, already split
    hwcaps: tuple[str, ...] = ()  # glibc-hwcaps subdirectories the target CPU supports, best first
    platform: str | None = None  # $PLATFORM; default: the architecture's AT_PLATFORM
    # legacy hwcap names of the target CPU (glibc < 2.37), in bit order, e.g. ("x86_64",
    # "avx512_1"); default: the ones every CPU of the architecture has
    legacy_hwcaps: tuple[str, ...] | None = None


class Library(NamedTuple):
    soname: str  # the DT_NEEDED string that loaded it
    path: str  # the path the loader opens, inside the root
    real: str  # that path with every symlink resolved, inside the root
    links: tuple[Link, ...]  # symlinks met on the way from path to real
    needed_by: str  # path of the object whose DT_NEEDED loaded it
    found_via: str
    hwcaps: tuple[str, ...]  # glibc-hwcaps variants of the same name beside it (paths)
    elf: ElfInfo


class Missing(NamedTuple):
    soname: str
    needed_by: str
    searched: tuple[str, ...]
    reason: str = "not found"


class Closure(NamedTuple):
    binary: str  # as given, inside the root
    real: str
    links: tuple[Link, ...]
    elf: ElfInfo
    interpreter: Library | None
    libraries: tuple[Library, ...]  # load order, without the interpreter
    missing: tuple[Missing, ...]
    warnings: tuple[str, ...] = ()

    @property
    def kind(self) -> Kind:
        return self.elf.kind

    def files(self) -> tuple[str, ...]:
        """Every path the loader opens: program, interpreter, libraries."""
        paths = [self.binary]
        if self.interpreter is not None:
            paths.append(self.interpreter.path)
        paths.extend(lib.path for lib in self.libraries)
        return tuple(paths)
