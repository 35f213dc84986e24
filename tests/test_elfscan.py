"""The ELF reader's C fast path (slimmer/_elfscan.c) against the Python reader (slimmer.loader.elf):
the same facts for every ELF file on the machine; for damaged copies, either the same facts or
None (the Python reader then reads the file and names the problem)."""

from __future__ import annotations

import mmap
import os
import random
import stat
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from slimmer.errors import SlimmerError
from slimmer.loader import elf, strings

DIRS = ("/usr/bin", "/usr/sbin", "/usr/lib", "/usr/libexec", "/usr/lib32", "/usr/libx32")


Scan = Callable[[str], object]


@pytest.fixture(scope="module")
def scan() -> Scan:
    if elf.fast_scan is None:
        if os.environ.get("CI") == "true":
            pytest.fail("slimmer._elfscan was not built (gcc and python3-dev are needed)")
        pytest.skip("slimmer._elfscan was not built")
    return elf.fast_scan


def elf_files() -> Iterator[str]:
    for top in DIRS:
        for directory, _dirs, files in os.walk(top):
            for name in files:
                path = os.path.join(directory, name)
                try:
                    st = os.lstat(path)
                    if not stat.S_ISREG(st.st_mode) or st.st_size < 64:
                        continue
                    with open(path, "rb") as fh:
                        if fh.read(4) == b"\x7fELF":
                            yield path
                except OSError:
                    continue


def python_facts(path: str) -> elf.ElfInfo | None:
    try:
        return elf.read_elf_python(path, path)
    except SlimmerError:
        return None


@pytest.mark.slow
def test_same_facts_for_every_elf_file(scan: Scan) -> None:
    checked = fast = 0
    for path in elf_files():
        expected = python_facts(path)
        got = scan(path)
        if expected is None:
            assert got is None, path
            continue
        checked += 1
        if got is not None:
            fast += 1
            assert elf.read_elf(path) == expected, path
    assert checked > 1000, checked
    assert fast == checked, f"the fast path passed over {checked - fast} well-formed files"


def damaged_copies(source: bytes, rng: random.Random) -> Iterator[bytes]:
    size = len(source)
    for cut in (0, 3, 15, 16, 40, 63, 64, 100, 500, 1000, 4096, size // 2, size - 1):
        yield source[:cut]
    for _ in range(300):
        data = bytearray(source)
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(0, min(size, 4096))
            data[at] = rng.randrange(256)
        yield bytes(data)
    # the dynamic section and the string table too
    for _ in range(100):
        data = bytearray(source)
        at = rng.randrange(0, size)
        data[at:at + 8] = rng.randbytes(8)
        yield bytes(data[:size])


@pytest.mark.parametrize("source", ["/usr/bin/jq", "/usr/lib/x86_64-linux-gnu/libc.so.6",
                                    "/usr/bin/ffmpeg"])
def test_damaged_files_give_the_same_facts_or_none(scan: Scan, source: str,
                                                   tmp_path: Path) -> None:
    rng = random.Random(source)
    original = Path(source).read_bytes()
    target = tmp_path / "damaged"
    refused = agreed = 0
    for data in damaged_copies(original, rng):
        target.write_bytes(data)
        expected = python_facts(str(target))
        got = scan(str(target))
        if expected is None:
            assert got is None, f"C read facts from a file Python refuses ({len(data)} bytes)"
            refused += 1
        elif got is not None:
            assert elf.read_elf(str(target)) == expected
            agreed += 1
    assert refused and agreed


def test_what_it_does_not_read_goes_to_python(scan: Scan, tmp_path: Path) -> None:
    (tmp_path / "script").write_text("#!/bin/sh\n")
    (tmp_path / "dir").mkdir()
    for path in (tmp_path / "script", tmp_path / "dir", tmp_path / "absent"):
        assert scan(str(path)) is None
        with pytest.raises(SlimmerError):
            elf.read_elf(str(path))


def test_an_offset_that_wraps_past_2_64_is_refused_by_both(scan: Scan, tmp_path: Path) -> None:
    # The PT_LOAD holding DT_STRTAB moved to vaddr 0 with a file offset just below 2^64:
    # offset + (DT_STRTAB - vaddr) lies past 2^64. Python's integers do not wrap, so the
    # strings lie outside the file; C's uint64_t would wrap to a place inside it.
    data = bytearray(Path("/usr/bin/jq").read_bytes())
    phoff, phentsize, phnum = (struct.unpack_from("<Q", data, 32)[0],
                               *struct.unpack_from("<HH", data, 54))
    info = elf.read_elf_python("/usr/bin/jq", "jq")
    assert info.needed  # so DT_STRTAB is used
    headers = [phoff + i * phentsize for i in range(phnum)]
    loads = [at for at in headers if struct.unpack_from("<I", data, at)[0] == 1]
    for at in loads:
        # every PT_LOAD: wherever DT_STRTAB is, it maps through the first one
        struct.pack_into("<QQQQ", data, at + 8, 2**64 - 0x100, 0, 0, 2**63)
    target = tmp_path / "wrapped"
    target.write_bytes(bytes(data))
    assert python_facts(str(target)) is None
    assert scan(str(target)) is None
    with pytest.raises(SlimmerError, match="outside the string table"):
        elf.read_elf(str(target))


# ---- strings and undefined symbols: the C scans against the Python ones ----------------------


@pytest.fixture(scope="module")
def fast_strings() -> Callable[..., tuple[list[bytes], list[bytes], list[bytes]]]:
    if strings.fast_strings is None:
        if os.environ.get("CI") == "true":
            pytest.fail("slimmer._elfscan was not built (gcc and python3-dev are needed)")
        pytest.skip("slimmer._elfscan was not built")
    return strings.fast_strings


@pytest.mark.parametrize("data, start, end", [
    (b"\x00/usr/share/x\x00libz.so.1\x00lib.so\x00/\x00libx.so.1.22\x00", 0, None),
    (b"\x00/a\x00/" + b"b" * 1023 + b"\x00/" + b"c" * 1024 + b"\x00/d\x00", 0, None),
    (b"\x00/a b\x00/\x7f\x00/ok\x00lib\x00libfoo.so.\x00libfoo.so.1.so\x00liba.so.x\x00", 0,
     None),
    (b"\x00mylib.so\x00lib-x+y_z.so.0\x00lib\xc3\xa9.so\x00LIBX.so\x00lib.so.1.2.3\x00", 0, None),
    (b"/first\x00/second\x00libq.so\x00/unterminated", 0, None),
    (b"\x00/a\x00/b\x00/c\x00", 3, None),  # a NUL before the range does not count
    (b"\x00/a\x00/b\x00/c\x00", 0, 5),  # nor one after it
    (b"", 0, 0),
    (b"\x00C.UTF-8\x00C.utf8\x00C.UTF-8x\x00xC.utf8\x00C.UTF-8", 0, None),  # whole, ended
])
def test_strings_edge_cases(fast_strings: Callable[..., object], data: bytes, start: int,
                            end: int | None) -> None:
    stop = len(data) if end is None else end
    assert fast_strings(data, start, stop) == strings.strings_python(data, start, stop)


@pytest.mark.slow
def test_same_strings_for_every_elf_file(fast_strings: Callable[..., object]) -> None:
    checked = 0
    for path in elf_files():
        with open(path, "rb") as fh:
            try:
                data = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
            except (OSError, ValueError):
                continue
        with data:
            for start, end in strings.read_only_sections(data):
                assert fast_strings(data, start, end) == strings.strings_python(
                    data, start, end), path
                checked += 1
    assert checked > 1000, checked


def python_imports(path: str, monkeypatch: pytest.MonkeyPatch) -> frozenset[str] | None:
    with monkeypatch.context() as m:
        m.setattr(elf, "fast_undefined", None)
        try:
            return elf.read_imports(path)
        except SlimmerError:
            return None


@pytest.mark.slow
def test_same_imports_for_every_elf_file(scan: Scan, monkeypatch: pytest.MonkeyPatch) -> None:
    assert elf.fast_undefined is not None
    checked = 0
    for path in elf_files():
        expected = python_imports(path, monkeypatch)
        if expected is None:
            continue
        assert elf.read_imports(path) == expected, path
        checked += 1
    assert checked > 1000, checked


@pytest.mark.parametrize("source", ["/usr/bin/jq", "/usr/lib/x86_64-linux-gnu/libc.so.6"])
def test_damaged_symbol_tables_give_the_same_imports_or_the_same_error(
        scan: Scan, source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(source + "imports")
    original = Path(source).read_bytes()
    target = tmp_path / "damaged"
    refused = agreed = 0
    for data in damaged_copies(original, rng):
        target.write_bytes(data)
        expected = python_imports(str(target), monkeypatch)
        if expected is None:
            with pytest.raises(SlimmerError):
                elf.read_imports(str(target))
            refused += 1
        else:
            assert elf.read_imports(str(target)) == expected
            agreed += 1
    assert refused and agreed
