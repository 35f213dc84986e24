"""Parsing /etc/ld.so.cache (glibc dl-cache.h), the old "ld.so-1.7.0" and new "glibc-ld.so.cache1.1"
formats, and looking a SONAME up in it the way dl-cache.c's search_cache does."""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable
from typing import NamedTuple

from slimmer.errors import CorruptCache, FileProblem
from slimmer.loader.root import Root

OLD_MAGIC = b"ld.so-1.7.0"
NEW_MAGIC = b"glibc-ld.so.cache1.1"
EXTENSION_MAGIC = 0xEAA42174
EXT_TAG_GENERATOR = 0
EXT_TAG_GLIBC_HWCAPS = 1
HWCAP_EXTENSION_HIGH = 1 << 30  # DL_CACHE_HWCAP_EXTENSION >> 32
# A real cache is tens of KB (Debian 12 with 2,000 packages: under 200 KB); this bounds the
# memory a hostile root can make us spend on one.
MAX_CACHE_SIZE = 64 << 20


class CacheEntry(NamedTuple):
    soname: str
    path: str
    flags: int
    osversion: int
    hwcap: int
    hwcaps_subdir: str | None  # the glibc-hwcaps subdirectory of an extension entry

    @property
    def baseline(self) -> bool:
        return self.hwcap == 0


RawEntry = tuple[str, str, int, int, int, "str | None"]  # the CacheEntry fields, in order


class LdCache(NamedTuple):
    raw: tuple[RawEntry, ...]  # plain tuples: a cache has hundreds, a lookup needs a few
    generator: str | None
    by_name: dict[str, tuple[RawEntry, ...]]

    @property
    def entries(self) -> tuple[CacheEntry, ...]:
        return tuple(CacheEntry(*e) for e in self.raw)

    def lookup(self, soname: str, flags: tuple[int, ...], hwcaps: tuple[str, ...] = (),
               legacy: Callable[[CacheEntry], bool] | None = None) -> CacheEntry | None:
        """The entry ld.so would use for `soname`: for an ABI accepting `flags`, on a CPU whose
        glibc-hwcaps subdirectories are `hwcaps` (best first; empty for a baseline CPU).
        `legacy` says whether a legacy hwcap entry (glibc < 2.37) suits the CPU (it may raise
        to refuse one); None: such entries are passed over, as glibc 2.37 does."""
        best: RawEntry | None = None
        best_rank = len(hwcaps)
        for entry in self.by_name.get(soname, ()):
            _name, _path, entry_flags, _osversion, hwcap, subdir = entry
            if entry_flags not in flags:
                continue
            if subdir is not None:
                if subdir in hwcaps:
                    rank = hwcaps.index(subdir)
                    if best is None or rank < best_rank:
                        best, best_rank = entry, rank
                continue
            if best is not None:
                break  # named hwcaps entries come first; a usable one beats the baseline
            if hwcap != 0 and (legacy is None or not legacy(CacheEntry(*entry))):
                continue  # ldconfig sorts them first, the most specific first
            return CacheEntry(*entry)
        return CacheEntry(*best) if best is not None else None


def read_ldcache(root: Root, path: str = "/etc/ld.so.cache") -> LdCache | None:
    """The cache of a root, or None when there is none or glibc's loader would pass it over
    (it cannot be parsed). One larger than MAX_CACHE_SIZE is refused before it is read."""
    found = root.lookup(path)
    if found is None or not found.is_file:
        return None
    if found.size > MAX_CACHE_SIZE:
        raise FileProblem(f"{root.describe(path)}: {found.size} bytes, more than the "
                          f"{MAX_CACHE_SIZE >> 20} MiB an ld.so.cache may have")
    try:
        return parse_ldcache(root.read_real(found.real, MAX_CACHE_SIZE), path)
    except CorruptCache:
        return None  # glibc's loader passes over a cache it cannot read


def parse_ldcache(data: bytes, name: str = "/etc/ld.so.cache") -> LdCache:
    """Parse a whole cache file. Raises CorruptCache with the file name on any inconsistency."""
    if data.startswith(NEW_MAGIC):
        return _parse_new(data, 0, name)
    if data.startswith(OLD_MAGIC):
        if len(data) < 16:
            raise CorruptCache(f"{name}: truncated ld.so.cache header")
        (nlibs,) = struct.unpack_from("<I", data, 12)
        if nlibs > (len(data) - 16) // 12:
            nlibs = struct.unpack_from(">I", data, 12)[0]
            if nlibs > (len(data) - 16) // 12:
                raise CorruptCache(f"{name}: entry count {nlibs} does not fit the file")
        new_at = (16 + nlibs * 12 + 7) & ~7
        if data[new_at:new_at + len(NEW_MAGIC)] == NEW_MAGIC:
            return _parse_new(data, new_at, name)
        return _parse_old(data, nlibs, name)
    raise CorruptCache(f"{name}: not an ld.so.cache file (unknown magic)")


def _cstring(data: bytes, at: int, name: str) -> str:
    end = data.find(b"\0", at)
    if at >= len(data) or end < 0:
        raise CorruptCache(f"{name}: string offset {at} outside the file")
    return data[at:end].decode("utf-8", "surrogateescape")


def _index(entries: list[RawEntry], generator: str | None) -> LdCache:
    by_name: dict[str, list[RawEntry]] = {}
    for entry in entries:
        by_name.setdefault(entry[0], []).append(entry)
    return LdCache(tuple(entries), generator, {k: tuple(v) for k, v in by_name.items()})


def _parse_old(data: bytes, nlibs: int, name: str) -> LdCache:
    strings = 16 + nlibs * 12
    entries: list[RawEntry] = []
    for i in range(nlibs):
        flags, key, value = struct.unpack_from("<iII", data, 16 + i * 12)
        entries.append((_cstring(data, strings + key, name),
                        _cstring(data, strings + value, name), flags, 0, 0, None))
    return _index(entries, None)


def _parse_new(data: bytes, base: int, name: str) -> LdCache:
    if len(data) < base + 48:
        raise CorruptCache(f"{name}: truncated ld.so.cache header")
    order = ">" if data[base + 28] & 3 == 3 else "<"
    nlibs, _len_strings = struct.unpack_from(order + "II", data, base + 20)
    (ext_offset,) = struct.unpack_from(order + "I", data, base + 32)
    if nlibs > (len(data) - base - 48) // 24:
        raise CorruptCache(f"{name}: entry count {nlibs} does not fit the file")

    generator, hwcaps_names = _parse_extensions(data, base, ext_offset, order, name)
    entry = struct.Struct(order + "iIIIQ")
    entries: list[RawEntry] = []
    for i in range(nlibs):
        flags, key, value, osversion, hwcap = entry.unpack_from(data, base + 48 + i * 24)
        subdir = None
        if hwcap >> 32 == HWCAP_EXTENSION_HIGH:
            index = hwcap & 0xFFFFFFFF
            if index >= len(hwcaps_names):
                raise CorruptCache(f"{name}: hwcaps index {index} out of range")
            subdir = hwcaps_names[index]
        entries.append((_cstring(data, base + key, name), _cstring(data, base + value, name),
                        flags, osversion, hwcap, subdir))
    return _index(entries, generator)


def _parse_extensions(data: bytes, base: int, ext_offset: int, order: str,
                      name: str) -> tuple[str | None, list[str]]:
    if ext_offset == 0:
        return None, []
    at = ext_offset  # from the start of the file, also in the combined "compat" format
    if at + 8 > len(data):
        raise CorruptCache(f"{name}: extension directory outside the file")
    magic, count = struct.unpack_from(order + "II", data, at)
    if magic != EXTENSION_MAGIC:
        return None, []
    generator: str | None = None
    hwcaps: list[str] = []
    for i in range(count):
        pos = at + 8 + i * 16
        if pos + 16 > len(data):
            raise CorruptCache(f"{name}: extension section {i} outside the file")
        tag, _flags, offset, size = struct.unpack_from(order + "IIII", data, pos)
        if offset + size > len(data):
            raise CorruptCache(f"{name}: extension section {i} outside the file")
        if tag == EXT_TAG_GENERATOR:
            raw = data[offset:offset + size]
            generator = raw.decode("utf-8", "replace").rstrip("\0")
        elif tag == EXT_TAG_GLIBC_HWCAPS:
            for j in range(size // 4):
                (sat,) = struct.unpack_from(order + "I", data, offset + j * 4)
                hwcaps.append(_cstring(data, base + sat, name))
    return generator, hwcaps


def libcmp(a: str, b: str) -> int:
    """glibc's _dl_cache_libcmp: like strcmp, but runs of digits compare as numbers and a digit
    sorts after any other character. The cache is sorted by it, descending, and ld.so
    binary-searches with it."""
    i = j = 0
    while i < len(a):
        ca = a[i]
        cb = b[j] if j < len(b) else "\0"
        if ca.isdigit() and ca.isascii():
            if not (cb.isdigit() and cb.isascii()):
                return 1
            si, sj = i, j
            while i < len(a) and a[i].isdigit() and a[i].isascii():
                i += 1
            while j < len(b) and b[j].isdigit() and b[j].isascii():
                j += 1
            va, vb = int(a[si:i]), int(b[sj:j])
            if va != vb:
                return va - vb
        elif cb.isdigit() and cb.isascii():
            return -1
        elif ca != cb:
            return ord(ca) - ord(cb)
        else:
            i += 1
            j += 1
    return 0 - (ord(b[j]) if j < len(b) else 0)


def write_ldcache(entries: list[tuple[str, str]], flags: int) -> bytes:
    """A new-format cache ("glibc-ld.so.cache1.1", little-endian) for (soname, path) pairs, in
    the order ldconfig writes and ld.so's binary search expects. The same pairs give the same
    bytes: no generator string, no time."""
    def descending(x: tuple[str, str], y: tuple[str, str]) -> int:
        return libcmp(y[0], x[0])

    unique = sorted(set(entries), key=lambda e: e[1])
    ordered = sorted(unique, key=functools.cmp_to_key(descending))
    header_size, entry_size = 48, 24
    strings = bytearray()
    offsets: dict[str, int] = {}
    base = header_size + entry_size * len(ordered)

    def offset(text: str) -> int:
        if text not in offsets:
            offsets[text] = base + len(strings)
            strings.extend(text.encode("utf-8", "surrogateescape") + b"\0")
        return offsets[text]

    packed = bytearray()
    for soname, path in ordered:
        packed += struct.pack("<iIIIQ", flags, offset(soname), offset(path), 0, 0)
    header = NEW_MAGIC + struct.pack("<IIB3xI12x", len(ordered), len(strings), 2, 0)
    return bytes(header + packed + strings)
