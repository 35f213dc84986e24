"""The string literals an ELF file carries in its read-only data (.rodata, and .data.rel.ro
where position-independent code keeps initialised pointers' targets): what `strings` shows,
limited to the sections where C string constants live and to the two kinds evidence asks for:
absolute paths (`/usr/lib/ruby/3.1.0`, each part of a `/a:/b` list) and library names
(`libfoo.so.1`, what a dlopen argument looks like). Read from the file's bytes; nothing runs.
"""

from __future__ import annotations

import mmap
import re
import struct
from collections.abc import Callable
from typing import NamedTuple

SECTIONS = (b".rodata", b".data.rel.ro")
MAX_FILE = 1 << 30  # an ELF file larger than this is not scanned
# A NUL-terminated string of printable ASCII after a NUL; a library name ending a string, whose
# start is checked after the match (a look-behind is ten times slower over 70 MB of .rodata).
_PATH = re.compile(rb"\x00(/[\x21-\x7e]{1,1023})(?=\x00)")
_PATH_TEXT = re.compile(rb"/[\x21-\x7e]{1,1023}")  # the same, as a whole string
_SONAME = re.compile(rb"lib[A-Za-z0-9_+.-]*\.so(?:\.[0-9]+)*(?=\x00)")
_SONAME_TEXT = re.compile(rb"lib[A-Za-z0-9_+.-]*\.so(?:\.[0-9]+)*")
_LOCALE = re.compile(rb"\x00(C\.UTF-8|C\.utf8)(?=\x00)")  # what setlocale is asked for

class Literals(NamedTuple):
    paths: tuple[str, ...]  # absolute paths, in file order, each once
    libraries: tuple[str, ...]  # bare names of shared objects (libX.so[.N]); paths are above
    locales: tuple[str, ...] = ()  # C.UTF-8 / C.utf8 as whole strings: a program that asks


Reader = Callable[[int, int], bytes]  # (offset, length) -> the bytes there (fewer at the end)


def literals(data: bytes) -> Literals:
    """The path and library literals of an ELF file held in memory (see literals_in)."""
    return literals_in(lambda offset, length: data[offset:offset + length], len(data))


def literals_in(read: Reader, size: int) -> Literals:
    """The path and library literals of an ELF file's read-only data sections; nothing for a
    file that is not ELF or has no section headers (stripped of them). Only the headers and
    those sections are read, each once (not the file: ffmpeg's closure is 250 MB, its
    read-only data 70 MB); a file that shrinks meanwhile gives shorter sections, not an error."""
    paths: dict[str, None] = {}
    libraries: dict[str, None] = {}
    locales: dict[str, None] = {}
    for offset, length in _sections(read, size):
        data = read(offset, length)
        # the section's first string, which no NUL of the section precedes, is looked at alone
        head = data[:1024].split(b"\x00", 1)
        if len(head) == 2 and head[0]:
            if _PATH_TEXT.fullmatch(head[0]):
                _add_path(paths, head[0])
            if _SONAME_TEXT.fullmatch(head[0]):
                libraries.setdefault(head[0].decode("ascii"), None)
        found_paths, found_libraries, found_locales = (fast_strings or strings_python)(
            data, 0, len(data))
        for found in found_paths:
            _add_path(paths, found)
        for found in found_libraries:
            libraries.setdefault(found.decode("ascii"), None)
        for found in found_locales:
            locales.setdefault(found.decode("ascii"), None)
    return Literals(tuple(paths), tuple(libraries), tuple(locales))


def strings_python(data: bytes | mmap.mmap, start: int,
                   end: int) -> tuple[list[bytes], list[bytes], list[bytes]]:
    """The whole strings of data[start:end] that follow a NUL: absolute paths, library names
    and C.UTF-8 locale names, in order, repeats kept (slimmer/_elfscan.c's `strings` does the
    same in C)."""
    paths = [match.group(1) for match in _PATH.finditer(data, start, end)]
    libraries = [match.group() for match in _SONAME.finditer(data, start, end)
                 if match.start() > start and data[match.start() - 1] == 0]
    locales = [match.group(1) for match in _LOCALE.finditer(data, start, end)]
    return paths, libraries, locales


def _load_fast_strings() -> Callable[[bytes | mmap.mmap, int, int],
                                     tuple[list[bytes], list[bytes], list[bytes]]] | None:
    """The C scan (ten times faster over ffmpeg's 70 MB of .rodata); None when not built."""
    try:
        from slimmer._elfscan import strings
    except ImportError:
        return None
    return strings


fast_strings = _load_fast_strings()


def _add_path(paths: dict[str, None], found: bytes) -> None:
    """Each part of a path literal (`/a:/b` lists are split)."""
    for part in found.decode("ascii").split(":"):
        if part.startswith("/") and len(part) > 1:
            paths.setdefault(part, None)


def read_only_sections(data: bytes | mmap.mmap) -> list[tuple[int, int]]:
    """(start, end) file offsets of the .rodata-like sections; [] when they cannot be read."""
    return [(offset, offset + length) for offset, length in
            _sections(lambda at, n: bytes(data[at:at + n]), len(data))]


def _sections(read: Reader, size: int) -> list[tuple[int, int]]:
    """(offset, length) of the .rodata-like sections of a file of `size` bytes."""
    ident = read(0, 64)
    if len(ident) < 64 or ident[:4] != b"\x7fELF" or ident[4] not in (1, 2) \
            or ident[5] not in (1, 2):
        return []
    wide = ident[4] == 2
    order = "<" if ident[5] == 1 else ">"
    if wide:
        shoff, = struct.unpack_from(order + "Q", ident, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from(order + "HHH", ident, 0x3A)
        fmt, entry = order + "IIQQQQ", 64
    else:
        shoff, = struct.unpack_from(order + "I", ident, 0x20)
        shentsize, shnum, shstrndx = struct.unpack_from(order + "HHH", ident, 0x2E)
        fmt, entry = order + "IIIIII", 40
    if shoff == 0 or shentsize < entry or shnum == 0 or shoff + shnum * shentsize > size:
        return []
    table = read(shoff, shnum * shentsize)
    if len(table) < shnum * shentsize:
        return []
    headers = []
    for i in range(shnum):
        name, kind, _flags, _addr, offset, length = struct.unpack_from(
            fmt, table, i * shentsize)
        headers.append((name, kind, offset, length))
    if shstrndx >= shnum:
        return []
    _, _, names_at, names_len = headers[shstrndx]
    if names_at + names_len > size:
        return []
    names = read(names_at, min(names_len, 1 << 20))
    out = []
    for name, kind, offset, length in headers:
        end = names.find(b"\x00", name)
        label = names[name:end if end >= 0 else len(names)]
        if label in SECTIONS and kind == 1 and offset + length <= size:  # SHT_PROGBITS
            out.append((offset, length))
    return out
