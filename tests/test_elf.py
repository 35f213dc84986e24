"""The ELF reader: facts it reads, and files it must refuse without crashing."""

from __future__ import annotations

import os
import random
import struct
import subprocess
from pathlib import Path

import pytest

from slimmer.errors import CorruptElf, FileProblem, NotElf, SlimmerError, UnsupportedElf
from slimmer.loader.elf import DF_1_NODEFLIB, Kind, parse_elf, read_elf
from tests.support.compile import Compile, lib_source, main_source


def readelf_dynamic(path: Path | str) -> str:
    return subprocess.run(["readelf", "-dW", str(path)], capture_output=True, text=True).stdout


def test_facts_of_a_dynamic_program(cc: Compile, tmp_path: Path) -> None:
    prog = cc("prog", main_source(), "-Wl,-rpath,/opt/a:$ORIGIN", "-Wl,--enable-new-dtags",
              "-Wl,-z,nodefaultlib")
    info = read_elf(str(prog))
    assert info.kind is Kind.DYNAMIC
    assert info.arch_name == "x86_64" and info.elf_class == 64 and info.little_endian
    assert info.interpreter == "/lib64/ld-linux-x86-64.so.2"
    assert info.needed == ("libc.so.6",)
    assert info.runpath == "/opt/a:$ORIGIN" and info.rpath is None
    assert info.flags_1 & DF_1_NODEFLIB
    assert "(RUNPATH)" in readelf_dynamic(prog)


def _dynamic_entries(data: bytes) -> list[tuple[int, int, int]]:
    """(file offset, tag, value) of each entry of PT_DYNAMIC in a 64-bit little-endian file."""
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    for i in range(phnum):
        p_type, _flags, p_offset, _vaddr, _paddr, p_filesz = struct.unpack_from(
            "<IIQQQQ", data, phoff + i * phentsize)
        if p_type == 2:
            return [(p_offset + j, *struct.unpack_from("<qQ", data, p_offset + j))
                    for j in range(0, p_filesz, 16)]
    raise AssertionError("no PT_DYNAMIC")


def test_rpath_is_ignored_when_runpath_is_present(cc: Compile, tmp_path: Path) -> None:
    # ld writes one of the two; turn DT_DEBUG into a DT_RUNPATH naming the same string so that
    # the file has both, as old toolchains wrote them. glibc then ignores DT_RPATH.
    prog = cc("prog", main_source(), "-Wl,-rpath,/r1", "-Wl,--disable-new-dtags")
    data = bytearray(prog.read_bytes())
    entries = _dynamic_entries(bytes(data))
    rpath_value = next(v for _, t, v in entries if t == 15)
    debug_at = next(o for o, t, _ in entries if t == 21)
    struct.pack_into("<qQ", data, debug_at, 29, rpath_value)
    both = tmp_path / "both"
    both.write_bytes(bytes(data))
    info = read_elf(str(both))
    assert (info.rpath, info.runpath, info.raw_rpath) == (None, "/r1", "/r1")
    assert "(RPATH)" in readelf_dynamic(both) and "(RUNPATH)" in readelf_dynamic(both)


def test_shared_library_soname_and_kinds(cc: Compile) -> None:
    lib = cc("libk.so.1", lib_source("k"), "-shared", "-fPIC", "-Wl,-soname,libk.so.1")
    info = read_elf(str(lib))
    assert info.kind is Kind.SHARED_LIBRARY and info.soname == "libk.so.1"
    assert info.interpreter is None
    assert read_elf(str(cc("st", main_source(), "-static"))).kind is Kind.STATIC
    assert read_elf(str(cc("sp", main_source(), "-static-pie"))).kind is Kind.STATIC_PIE
    libc = read_elf(os.path.realpath("/lib/x86_64-linux-gnu/libc.so.6"))
    assert libc.kind is Kind.SHARED_LIBRARY  # it has PT_INTERP, yet it is a library
    assert libc.soname == "libc.so.6"


def test_32_bit(cc: Compile) -> None:
    info = read_elf(str(cc("p32", main_source(), "-m32")))
    assert (info.elf_class, info.arch_name, info.interpreter) == (32, "i386", "/lib/ld-linux.so.2")


def test_stripped_section_headers_do_not_matter(cc: Compile, tmp_path: Path) -> None:
    prog = cc("prog", main_source(), "-Wl,-rpath,/x")
    data = bytearray(prog.read_bytes())
    # Wipe e_shoff, e_shentsize, e_shnum and e_shstrndx, and the section headers themselves.
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    data[shoff:] = b""
    struct.pack_into("<Q", data, 0x28, 0)
    struct.pack_into("<HHH", data, 0x3A, 0, 0, 0)
    stripped = tmp_path / "stripped"
    stripped.write_bytes(bytes(data))
    stripped.chmod(0o755)
    assert "no sections" in subprocess.run(["readelf", "-S", str(stripped)], capture_output=True,
                                           text=True).stdout
    assert read_elf(str(stripped)) == read_elf(str(prog))._replace(path=str(stripped))
    # and the real kernel and loader still run it
    assert subprocess.run([str(stripped)], capture_output=True, text=True).stdout == "0\n"


def test_not_elf_files(tmp_path: Path) -> None:
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    with pytest.raises(NotElf, match=r"script.sh: not an ELF file \(a script\)"):
        read_elf(str(script))
    text = tmp_path / "text"
    text.write_text("hello world")
    with pytest.raises(NotElf, match="text: not an ELF file"):
        read_elf(str(text))
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    with pytest.raises(NotElf, match=r"empty: not an ELF file \(0 bytes\)"):
        read_elf(str(empty))
    with pytest.raises(FileProblem, match="is a directory"):
        read_elf(str(tmp_path))
    with pytest.raises(FileProblem, match="no such file"):
        read_elf(str(tmp_path / "nothing"))


def test_object_files_and_core_types_are_refused(cc: Compile, tmp_path: Path) -> None:
    obj = cc("obj.o", lib_source("o"), "-c")
    with pytest.raises(UnsupportedElf, match="ET_REL"):
        read_elf(str(obj))


def _all_truncations(data: bytes) -> list[int]:
    """Every length up to the end of the dynamic strings, then a sample of the rest."""
    head = list(range(0, min(len(data), 5000)))
    rng = random.Random(1)
    return head + sorted(rng.sample(range(5000, len(data)), min(300, len(data) - 5000)))


def test_truncated_files_never_crash(cc: Compile) -> None:
    data = cc("prog", main_source(), "-Wl,-rpath,/opt/x").read_bytes()
    outcomes = {"ok": 0, "refused": 0}
    for n in _all_truncations(data):
        try:
            parse_elf(data[:n], "prog")
            outcomes["ok"] += 1
        except SlimmerError as exc:
            assert str(exc).startswith("prog: ")
            outcomes["refused"] += 1
    assert outcomes["refused"] > 0 and outcomes["ok"] > 0


def test_corrupt_files_never_crash(cc: Compile) -> None:
    data = cc("prog", main_source(), "-Wl,-rpath,/opt/x").read_bytes()
    rng = random.Random(7)
    refused = 0
    for _ in range(3000):
        mutated = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            pos = rng.randrange(0, 4096)  # headers, program headers, .dynamic strings
            mutated[pos] = rng.randrange(256)
        try:
            parse_elf(bytes(mutated), "prog")
        except SlimmerError:
            refused += 1
    assert refused > 0


@pytest.mark.parametrize(
    ("offset", "value", "error", "message"),
    [
        (4, b"\x09", CorruptElf, "invalid ELF class 9"),
        (5, b"\x07", CorruptElf, "invalid ELF byte order 7"),
        (6, b"\x02", CorruptElf, "invalid ELF version 2"),
        (0x20, struct.pack("<Q", 1 << 40), CorruptElf, "program headers run past the end"),
    ],
)
def test_specific_corruptions(cc: Compile, offset: int, value: bytes,
                              error: type[SlimmerError], message: str) -> None:
    data = bytearray(cc("prog", main_source()).read_bytes())
    data[offset:offset + len(value)] = value
    with pytest.raises(error, match=message):
        parse_elf(bytes(data), "prog")


def nm_undefined(path: str) -> set[str]:
    out = subprocess.run(["nm", "-D", "--undefined-only", path], capture_output=True, text=True,
                         check=True).stdout
    names = set()
    for line in out.splitlines():
        name = line.split()[-1]
        names.add(name.split("@")[0])
    return names


@pytest.mark.parametrize("path", ["/usr/bin/jq", "/lib/x86_64-linux-gnu/libc.so.6",
                                  "/usr/bin/curl", "/lib/x86_64-linux-gnu/libstdc++.so.6"])
def test_imports_agree_with_nm(path: str) -> None:
    from slimmer.loader.elf import read_imports

    real = os.path.realpath(path)
    assert read_imports(real) == nm_undefined(real)


def test_imports_of_a_program_calling_pthread_cancel(cc: Compile) -> None:
    from slimmer.loader.elf import read_imports

    src = "#include <pthread.h>\nint main(void) { return pthread_cancel(pthread_self()); }\n"
    prog = cc("canceller", src, "-pthread")
    assert "pthread_cancel" in read_imports(str(prog))
    for flags in ((), ("-m32",)):  # DT_GNU_HASH only, and 32-bit
        lib = cc(f"libh{len(flags)}.so", "#include <iconv.h>\n"
                 "void *f(void) { return iconv_open(\"UTF-16\", \"UTF-8\"); }\n",
                 "-shared", "-fPIC", "-Wl,--hash-style=gnu", *flags)
        assert read_imports(str(lib)) == nm_undefined(str(lib))
        assert "iconv_open" in read_imports(str(lib))
