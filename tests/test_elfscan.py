"""The ELF reader's C fast path (slimmer/_elfscan.c) against the Python reader (slimmer.loader.elf):
the same facts for every ELF file on the machine; for damaged copies, either the same facts or
None (the Python reader then reads the file and names the problem)."""

from __future__ import annotations

import os
import random
import stat
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from slimmer.errors import SlimmerError
from slimmer.loader import elf

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
