"""Reading the ELF facts the loader uses, through the program headers, as ld.so does.

Only the ELF header, the program headers, PT_INTERP, PT_DYNAMIC and the strings DT_STRTAB points at
(mapped through PT_LOAD) are read, so stripped section headers do not matter and a 100 MB library
costs one 16 KiB read and a few small preads. Every offset is checked against the file size
before it is used: a truncated or corrupt file gives CorruptElf, never an exception from struct
or a read past the end.

`read_elf` first asks slimmer/_elfscan.c (an optional C extension) for the same facts: it reads
well-formed files the same way and returns None for anything else, which this module then reads
and names the problem of. tests/test_elfscan.py holds the two to the same answers.
docs/benchmarks.md compares these readers with pyelftools and LIEF.
"""

from __future__ import annotations

import os
import stat
import struct
from collections.abc import Callable
from enum import StrEnum
from itertools import compress
from typing import TYPE_CHECKING, NamedTuple

from slimmer.errors import CorruptElf, FileProblem, NotElf, UnsupportedElf
from slimmer.loader.arch import Arch, detect, machine_name

ELF_MAGIC = b"\x7fELF"
ELFCLASS32, ELFCLASS64 = 1, 2
ELFDATA2LSB, ELFDATA2MSB = 1, 2
ELFOSABI_SYSV, ELFOSABI_GNU = 0, 3

ET_EXEC, ET_DYN = 2, 3
_ET_NAMES = {0: "ET_NONE", 1: "ET_REL (an object file)", 4: "ET_CORE (a core dump)"}

PT_LOAD, PT_DYNAMIC, PT_INTERP = 1, 2, 3
PN_XNUM = 0xFFFF

DT_NULL, DT_NEEDED, DT_STRTAB, DT_STRSZ = 0, 1, 5, 10
DT_SONAME, DT_RPATH, DT_RUNPATH, DT_FLAGS = 14, 15, 29, 30
DT_FLAGS_1 = 0x6FFFFFFB

DF_1_NODEFLIB = 0x00000800
DF_1_PIE = 0x08000000


class Kind(StrEnum):
    DYNAMIC = "dynamic"
    STATIC = "static"
    STATIC_PIE = "static-pie"
    SHARED_LIBRARY = "shared-library"


class ElfInfo(NamedTuple):
    """The loader-relevant facts of one ELF file."""

    path: str
    elf_class: int  # 32 or 64
    little_endian: bool
    machine: int
    osabi: int
    abiversion: int
    etype: int
    flags: int  # e_flags
    interpreter: str | None
    has_dynamic: bool
    needed: tuple[str, ...]
    soname: str | None
    rpath: str | None  # None when DT_RUNPATH is present: glibc then ignores DT_RPATH
    runpath: str | None
    raw_rpath: str | None  # DT_RPATH as written, for musl and for display
    flags_1: int

    @property
    def arch(self) -> Arch | None:
        return detect(self.machine, self.elf_class, self.little_endian, self.flags)

    @property
    def arch_name(self) -> str:
        arch = self.arch
        if arch is not None:
            return arch.name
        return f"{machine_name(self.machine)}-{self.elf_class}"

    @property
    def kind(self) -> Kind:
        if self.interpreter is not None:
            if self.etype == ET_DYN and self.soname and not self.flags_1 & DF_1_PIE:
                return Kind.SHARED_LIBRARY  # e.g. glibc's libc.so.6, which can also be run
            return Kind.DYNAMIC
        if self.etype == ET_EXEC:
            return Kind.STATIC
        if self.flags_1 & DF_1_PIE:
            return Kind.STATIC_PIE
        return Kind.SHARED_LIBRARY

    @property
    def nodeflib(self) -> bool:
        return bool(self.flags_1 & DF_1_NODEFLIB)

    @property
    def is_musl(self) -> bool:
        return self.interpreter is not None and os.path.basename(self.interpreter).startswith(
            "ld-musl-"
        )


_EHDR = {
    (ELFCLASS64, "<"): struct.Struct("<HHIQQQIHHHHHH"),
    (ELFCLASS64, ">"): struct.Struct(">HHIQQQIHHHHHH"),
    (ELFCLASS32, "<"): struct.Struct("<HHIIIIIHHHHHH"),
    (ELFCLASS32, ">"): struct.Struct(">HHIIIIIHHHHHH"),
}
# The program header fields we use (type, offset, vaddr, filesz), the others skipped as padding.
_PHDR = {
    (ELFCLASS64, "<"): struct.Struct("<I4xQQ8xQ16x"),
    (ELFCLASS64, ">"): struct.Struct(">I4xQQ8xQ16x"),
    (ELFCLASS32, "<"): struct.Struct("<III4xI12x"),
    (ELFCLASS32, ">"): struct.Struct(">III4xI12x"),
}
# sh_info of section header 0, where the real e_phnum lives when e_phnum == PN_XNUM.
_SH0_INFO = {ELFCLASS64: 44, ELFCLASS32: 28}


def read_elf(host_path: str, shown: str | None = None) -> ElfInfo:
    """Read one file. `shown` is the name used in messages (the in-root path)."""
    name = shown or host_path
    if fast_scan is not None:
        facts = fast_scan(host_path)
        if facts is not None:
            return _info(name, *facts)
    return read_elf_python(host_path, name)


def read_elf_python(host_path: str, name: str) -> ElfInfo:
    """read_elf without the C fast path: every file, every error message."""
    try:
        fd = os.open(host_path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise FileProblem(f"{name}: no such file") from None
    except IsADirectoryError:
        raise FileProblem(f"{name}: is a directory") from None
    except OSError as exc:
        raise FileProblem(f"{name}: cannot open ({exc.strerror})") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise FileProblem(f"{name}: is a directory")
        if not stat.S_ISREG(st.st_mode):
            raise FileProblem(f"{name}: not a regular file")
        return _parse(_Source(fd, os.pread(fd, _HEAD, 0), st.st_size), name)
    finally:
        os.close(fd)


def _load_fast_scan() -> Callable[[str], Facts | None] | None:
    """The same reading in C, for the files it reads without complaint (slimmer/_elfscan.c);
    None when it was not built (no C compiler or Python headers): this module alone then."""
    try:
        from slimmer._elfscan import scan
    except ImportError:
        return None
    return scan


fast_scan = _load_fast_scan()


def _load_fast_undefined() -> Callable[[bytes, bytes, int, int, bool, bool],
                                       list[bytes] | None] | None:
    """_imports' loop in C (slimmer/_elfscan.c `undefined`); None when it was not built. It
    answers None for a table it cannot read, and the loop below names the problem."""
    try:
        from slimmer._elfscan import undefined
    except ImportError:
        return None
    return undefined


fast_undefined = _load_fast_undefined()


def parse_elf(buf: bytes, name: str) -> ElfInfo:
    """Parse ELF facts from a buffer holding the whole file."""
    return _parse(_Source(None, bytes(buf), len(buf)), name)


_HEAD = 16384  # read at once: the headers and, for most programs, the dynamic strings


class _Source:
    """Bounded reads: from the first bytes already read, else with pread. Every read is
    checked against the file size, so nothing past the end is ever asked for."""

    def __init__(self, fd: int | None, head: bytes, size: int) -> None:
        self.fd = fd
        self.head = head
        self.size = size

    def read(self, off: int, n: int) -> bytes | None:
        """Exactly n bytes at off, or None when they are not all inside the file."""
        end = off + n
        if off < 0 or n < 0 or end > self.size:
            return None
        if end <= len(self.head):
            return self.head[off:end]
        if self.fd is None:
            return None
        data = os.pread(self.fd, n, off)
        return data if len(data) == n else None

    def string(self, start: int, limit: int) -> bytes | None:
        """The NUL-terminated bytes at `start`, looking no further than `limit`."""
        step = 256
        while True:
            n = min(step, limit - start)
            chunk = self.read(start, n)
            if chunk is None:
                return None
            end = chunk.find(b"\0")
            if end >= 0:
                return chunk[:end]
            if start + n >= limit:
                return None
            step *= 16


class _Layout(NamedTuple):
    """What the header, the program headers and PT_DYNAMIC say, before any string is read."""

    ei_class: int
    order: str
    osabi: int
    abiversion: int
    etype: int
    machine: int
    eflags: int
    loads: list[tuple[int, int, int]]  # (vaddr, offset, filesz) of each PT_LOAD
    interp: str | None
    has_dynamic: bool
    tags: dict[int, int]
    needed_offsets: list[int]


def _layout(src: _Source, name: str) -> _Layout:
    size = src.size
    ident = src.head[:16]
    if ident[:4] != ELF_MAGIC:
        if size < 4:
            raise NotElf(f"{name}: not an ELF file ({size} bytes)")
        if ident[:2] == b"#!":
            raise NotElf(f"{name}: not an ELF file (a script)")
        raise NotElf(f"{name}: not an ELF file")
    if size < 16:
        raise CorruptElf(f"{name}: truncated ELF identification ({size} bytes)")
    ei_class, ei_data, ei_version, osabi, abiversion = ident[4:9]
    if ei_class not in (ELFCLASS32, ELFCLASS64):
        raise CorruptElf(f"{name}: invalid ELF class {ei_class}")
    if ei_data not in (ELFDATA2LSB, ELFDATA2MSB):
        raise CorruptElf(f"{name}: invalid ELF byte order {ei_data}")
    if ei_version != 1:
        raise CorruptElf(f"{name}: invalid ELF version {ei_version}")
    order = "<" if ei_data == ELFDATA2LSB else ">"
    ehdr = _EHDR[(ei_class, order)]
    raw = src.read(16, ehdr.size)
    if raw is None:
        raise CorruptElf(f"{name}: truncated ELF header ({size} bytes)")
    (etype, machine, _version, _entry, phoff, shoff, eflags, _ehsize, phentsize, phnum,
     _shentsize, _shnum, _shstrndx) = ehdr.unpack(raw)
    if etype not in (ET_EXEC, ET_DYN):
        what = _ET_NAMES.get(etype, f"type {etype}")
        raise UnsupportedElf(f"{name}: ELF {what} is not a program or shared library")

    phdr = _PHDR[(ei_class, order)]
    if phnum == PN_XNUM:
        sh0 = src.read(shoff + _SH0_INFO[ei_class], 4)
        if sh0 is None:
            raise CorruptElf(f"{name}: section header 0 lies outside the file")
        (phnum,) = struct.unpack(order + "I", sh0)
    if phnum and phentsize < phdr.size:
        raise CorruptElf(f"{name}: program header entry size {phentsize} is too small")
    table = src.read(phoff, phnum * phentsize)
    if table is None:
        raise CorruptElf(f"{name}: program headers run past the end of the file")

    loads: list[tuple[int, int, int]] = []  # (vaddr, offset, filesz)
    interp: str | None = None
    dynamic: bytes | None = None
    if phentsize == phdr.size:
        headers = phdr.iter_unpack(table)
    else:
        headers = (phdr.unpack_from(table, i * phentsize) for i in range(phnum))
    for p_type, p_offset, p_vaddr, p_filesz in headers:
        if p_type > PT_INTERP:  # PT_NOTE, PT_PHDR, PT_GNU_*...: half of them, not used
            continue
        if p_type == PT_LOAD:
            loads.append((p_vaddr, p_offset, p_filesz))
        elif p_type == PT_INTERP:
            data = src.read(p_offset, p_filesz) if p_filesz else None
            if data is None:
                raise CorruptElf(f"{name}: PT_INTERP lies outside the file")
            interp = os.fsdecode(data.split(b"\0", 1)[0])
        elif p_type == PT_DYNAMIC:
            dynamic = src.read(p_offset, p_filesz)
            if dynamic is None:
                raise CorruptElf(f"{name}: PT_DYNAMIC runs past the end of the file")

    tags: dict[int, int] = {}
    needed_offsets: list[int] = []
    if dynamic is not None:
        # All entries in one unpack (tags read unsigned: no defined tag is negative). As in
        # glibc's get-dynamic-info.h, a repeated tag's last entry counts; DT_NEEDED all do.
        word = "Q" if ei_class == ELFCLASS64 else "I"
        count = len(dynamic) // (16 if ei_class == ELFCLASS64 else 8)
        words = struct.unpack_from(f"{order}{2 * count}{word}", dynamic)
        kinds, values = words[0::2], words[1::2]
        if DT_NULL in kinds:
            end = kinds.index(DT_NULL)
            kinds, values = kinds[:end], values[:end]
        tags = dict(zip(kinds, values, strict=True))
        if DT_NEEDED in tags:
            needed_offsets = list(compress(values, map(DT_NEEDED.__eq__, kinds)))
    return _Layout(ei_class, order, osabi, abiversion, etype, machine, eflags, loads, interp,
                   dynamic is not None, tags, needed_offsets)


def _string_table(src: _Source, lay: _Layout, name: str) -> tuple[int, int]:
    """Where DT_STRTAB starts in the file, and where it ends (DT_STRSZ, or the file's end)."""
    tags = lay.tags
    if DT_STRTAB not in tags:
        raise CorruptElf(f"{name}: dynamic section has names but no DT_STRTAB")
    strtab = _vaddr_to_offset(lay.loads, tags[DT_STRTAB], name)
    return strtab, min(src.size, strtab + tags.get(DT_STRSZ, src.size - strtab))


def _string_at(src: _Source, strtab: int, limit: int, offset: int, name: str) -> str:
    if strtab + offset >= limit:
        raise CorruptElf(f"{name}: dynamic string at {offset:#x} lies outside the string table")
    found = src.string(strtab + offset, limit)
    if found is None:
        raise CorruptElf(f"{name}: unterminated dynamic string at {offset:#x}")
    return found.decode("utf-8", "surrogateescape")  # os.fsdecode, without its checks


def _strings(src: _Source, lay: _Layout, name: str) -> Callable[[int], str]:
    """A reader of dynamic strings by their DT_STRTAB offset, bounded by DT_STRSZ."""
    strtab, limit = _string_table(src, lay, name)
    return lambda offset: _string_at(src, strtab, limit, offset, name)


_WINDOW = 65536  # the most read at once for the names of one file


def _names(src: _Source, lay: _Layout, name: str, offsets: list[int]) -> list[str]:
    """The dynamic strings at these offsets (DT_NEEDED, DT_SONAME...), cut from one buffer:
    the first bytes already read when they lie there, else one read spanning them all (they
    sit close together); a name reaching past that buffer is read on its own."""
    strtab, limit = _string_table(src, lay, name)
    lo = strtab + min(offsets)
    hi = min(limit, strtab + max(offsets) + 256)
    window, base = src.head, 0
    if hi > len(window) and lo < limit and 0 < hi - lo <= _WINDOW:
        window, base = src.read(lo, hi - lo) or b"", lo
    end_in_window = min(limit, base + len(window)) - base
    out = []
    for offset in offsets:
        start = strtab + offset - base
        end = window.find(b"\0", start, end_in_window) if 0 <= start < end_in_window else -1
        if end >= 0:
            out.append(window[start:end].decode("utf-8", "surrogateescape"))
        else:
            out.append(_string_at(src, strtab, limit, offset, name))
    return out


def _parse(src: _Source, name: str) -> ElfInfo:
    lay = _layout(src, name)
    tags, needed_offsets = lay.tags, lay.needed_offsets
    needed: tuple[str, ...] = ()
    soname = rpath = runpath = None
    named = [tags.get(DT_SONAME), tags.get(DT_RPATH), tags.get(DT_RUNPATH)]
    if needed_offsets or named != [None, None, None]:
        names = _names(src, lay, name, needed_offsets + [o for o in named if o is not None])
        needed = tuple(names[:len(needed_offsets)])
        rest = iter(names[len(needed_offsets):])
        soname, rpath, runpath = (None if o is None else next(rest) for o in named)

    return _info(name, 32 if lay.ei_class == ELFCLASS32 else 64, lay.order == "<", lay.machine,
                 lay.osabi, lay.abiversion, lay.etype, lay.eflags, lay.interp, lay.has_dynamic,
                 needed, soname, rpath, runpath, tags.get(DT_FLAGS_1, 0))


def _info(name: str, elf_class: int, little_endian: bool, machine: int, osabi: int,
          abiversion: int, etype: int, flags: int, interpreter: str | None, has_dynamic: bool,
          needed: tuple[str, ...], soname: str | None, rpath: str | None, runpath: str | None,
          flags_1: int) -> ElfInfo:
    """The facts as read (both readers give them in this order, slimmer/_elfscan.c's tuple
    included). Positional, in field order: keywords cost measurably on this hot path. glibc's
    get-dynamic-info.h: "If both RUNPATH and RPATH are given, the latter is ignored." """
    return ElfInfo(name, elf_class, little_endian, machine, osabi, abiversion, etype, flags,
                   interpreter, has_dynamic, needed, soname,
                   None if runpath is not None else rpath, runpath, rpath, flags_1)


def _vaddr_to_offset(loads: list[tuple[int, int, int]], addr: int, name: str) -> int:
    for vaddr, offset, filesz in loads:
        if vaddr <= addr < vaddr + filesz:
            return offset + (addr - vaddr)
    raise CorruptElf(f"{name}: DT_STRTAB address {addr:#x} is in no loaded segment")


DT_HASH, DT_SYMTAB, DT_SYMENT = 4, 6, 11
DT_GNU_HASH = 0x6FFFFEF5
SHN_UNDEF = 0
# st_name and st_shndx of a symbol table entry, by class and byte order
_SYM = {
    (ELFCLASS64, "<"): (struct.Struct("<IBBH16x"), 24),
    (ELFCLASS64, ">"): (struct.Struct(">IBBH16x"), 24),
    (ELFCLASS32, "<"): (struct.Struct("<I8xBBH"), 16),
    (ELFCLASS32, ">"): (struct.Struct(">I8xBBH"), 16),
}


def read_imports(host_path: str, shown: str | None = None) -> frozenset[str]:
    """Names of the dynamic symbols an object uses without defining them (SHN_UNDEF in its
    DT_SYMTAB): what it expects some other object, or a dlopen, to provide."""
    return _from_file(host_path, shown or host_path, _imports)


if TYPE_CHECKING:
    from typing import TypeVar

    from slimmer._elfscan import Facts

    T = TypeVar("T")


def _from_file(host_path: str, name: str, parse: Callable[[_Source, str], T]) -> T:
    """Run a reader over a file through bounded preads (the file is not mapped or slurped)."""
    try:
        fd = os.open(host_path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise FileProblem(f"{name}: cannot open ({exc.strerror})") from None
    try:
        return parse(_Source(fd, os.pread(fd, _HEAD, 0), os.fstat(fd).st_size), name)
    finally:
        os.close(fd)


def parse_imports(data: bytes, name: str) -> frozenset[str]:
    """read_imports for a buffer holding the whole file."""
    return _imports(_Source(None, bytes(data), len(data)), name)


def _imports(src: _Source, name: str) -> frozenset[str]:
    lay = _layout(src, name)
    if DT_SYMTAB not in lay.tags or DT_STRTAB not in lay.tags:
        return frozenset()
    count = _symbol_count(src, lay, name)
    sym, default_size = _SYM[(lay.ei_class, lay.order)]
    size = lay.tags.get(DT_SYMENT, default_size)
    at = _vaddr_to_offset(lay.loads, lay.tags[DT_SYMTAB], name)
    table = src.read(at, count * size) if size >= sym.size else None
    strtab = _vaddr_to_offset(lay.loads, lay.tags[DT_STRTAB], name)
    strings = src.read(strtab, min(lay.tags.get(DT_STRSZ, 0), src.size - strtab))
    if table is None or strings is None:
        raise CorruptElf(f"{name}: dynamic symbol table lies outside the file")
    if fast_undefined is not None:
        found = fast_undefined(table, strings, count, size, lay.ei_class == ELFCLASS64,
                               lay.order == "<")
        if found is not None:
            return frozenset(n.decode("utf-8", "surrogateescape") for n in found)
    names = set()
    for i in range(count):
        st_name, _info, _other, shndx = sym.unpack_from(table, i * size)
        if shndx == SHN_UNDEF and st_name:
            end = strings.find(b"\0", st_name)
            if end < 0:
                raise CorruptElf(f"{name}: unterminated symbol name at {st_name:#x}")
            names.add(strings[st_name:end].decode("utf-8", "surrogateescape"))
    return frozenset(names)


def _symbol_count(src: _Source, lay: _Layout, name: str) -> int:
    """How many entries DT_SYMTAB has: DT_HASH says it; with only DT_GNU_HASH, one past the
    highest symbol its buckets and chains reach."""
    word = struct.Struct(lay.order + "I")
    if DT_HASH in lay.tags:
        head = src.read(_vaddr_to_offset(lay.loads, lay.tags[DT_HASH], name), 8)
        if head is None:
            raise CorruptElf(f"{name}: DT_HASH lies outside the file")
        nchain: int = struct.unpack(lay.order + "II", head)[1]
        return nchain
    if DT_GNU_HASH not in lay.tags:
        return 0
    at = _vaddr_to_offset(lay.loads, lay.tags[DT_GNU_HASH], name)
    head = src.read(at, 16)
    if head is None:
        raise CorruptElf(f"{name}: DT_GNU_HASH lies outside the file")
    nbuckets, symoffset, bloom_size, _shift = (int(v) for v in struct.unpack(lay.order + "IIII",
                                                                             head))
    buckets_at = at + 16 + bloom_size * (8 if lay.ei_class == ELFCLASS64 else 4)
    buckets = src.read(buckets_at, 4 * nbuckets)
    if buckets is None:
        raise CorruptElf(f"{name}: DT_GNU_HASH buckets lie outside the file")
    last: int = max(struct.unpack(f"{lay.order}{nbuckets}I", buckets), default=0)
    if last < symoffset:
        return symoffset
    chains_at = buckets_at + 4 * nbuckets
    while True:
        entry = src.read(chains_at + 4 * (last - symoffset), 4)
        if entry is None:
            raise CorruptElf(f"{name}: DT_GNU_HASH chain runs past the end of the file")
        if word.unpack(entry)[0] & 1:
            return last + 1
        last += 1


DT_VERDEF, DT_VERDEFNUM = 0x6FFFFFFC, 0x6FFFFFFD
DT_VERNEED, DT_VERNEEDNUM = 0x6FFFFFFE, 0x6FFFFFFF
VER_FLG_BASE, VER_FLG_WEAK = 0x1, 0x2


class Versions(NamedTuple):
    """Symbol versions: what an object defines (DT_VERDEF) and needs from each library by its
    DT_NEEDED name (DT_VERNEED; weak needs left out)."""

    defined: frozenset[str]
    needed: tuple[tuple[str, tuple[str, ...]], ...]  # (library, versions)


def read_versions(host_path: str, shown: str | None = None) -> Versions:
    return _from_file(host_path, shown or host_path, _versions)


def parse_versions(data: bytes, name: str) -> Versions:
    return _versions(_Source(None, bytes(data), len(data)), name)


def _versions(src: _Source, name: str) -> Versions:
    lay = _layout(src, name)
    tags = lay.tags
    if DT_STRTAB not in tags:
        return Versions(frozenset(), ())
    string = _strings(src, lay, name)
    o = lay.order

    def record(at: int, fmt: str, what: str) -> tuple[int, ...]:
        data = src.read(at, struct.calcsize(o + fmt))
        if data is None:
            raise CorruptElf(f"{name}: {what} lies outside the file")
        return struct.unpack(o + fmt, data)

    defined: set[str] = set()
    if DT_VERDEF in tags:
        at = _vaddr_to_offset(lay.loads, tags[DT_VERDEF], name)
        for _ in range(tags.get(DT_VERDEFNUM, 0)):
            _v, flags, _ndx, cnt, _hash, aux, nxt = record(at, "HHHHIII", "DT_VERDEF")
            if cnt and not flags & VER_FLG_BASE:
                defined.add(string(record(at + aux, "II", "Verdaux")[0]))
            if not nxt:
                break
            at += nxt
    needed: list[tuple[str, tuple[str, ...]]] = []
    if DT_VERNEED in tags:
        at = _vaddr_to_offset(lay.loads, tags[DT_VERNEED], name)
        for _ in range(tags.get(DT_VERNEEDNUM, 0)):
            _v, cnt, file, aux, nxt = record(at, "HHIII", "DT_VERNEED")
            versions = []
            here = at + aux
            for _ in range(cnt):
                _hash, flags, _other, vname, anext = record(here, "IHHII", "Vernaux")
                if not flags & VER_FLG_WEAK:
                    versions.append(string(vname))
                if not anext:
                    break
                here += anext
            needed.append((string(file), tuple(versions)))
            if not nxt:
                break
            at += nxt
    return Versions(frozenset(defined), tuple(needed))
