"""ld.so.cache parsing, checked against the real `ldconfig -p` of this machine."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from slimmer import SysRoot
from slimmer.errors import CorruptCache, FileProblem
from slimmer.loader.arch import ARCHES
from slimmer.loader.ldcache import parse_ldcache, read_ldcache

X86_64 = next(a for a in ARCHES if a.name == "x86_64")
_LINE = re.compile(r"^\s+(\S+) \(([^)]*)\) => (\S+)$")


def ldconfig_p(cache: str) -> list[tuple[str, str]]:
    out = subprocess.run(["ldconfig", "-p", "-C", cache], capture_output=True, text=True,
                         check=True).stdout
    return [(m.group(1), m.group(3)) for m in map(_LINE.match, out.splitlines()) if m]


def test_host_cache_agrees_with_ldconfig_p() -> None:
    cache = parse_ldcache(Path("/etc/ld.so.cache").read_bytes())
    expected = ldconfig_p("/etc/ld.so.cache")
    assert len(expected) > 100
    assert [(e.soname, e.path) for e in cache.entries] == expected
    assert cache.generator is not None and "GLIBC" in cache.generator


def test_lookup_picks_the_entry_for_the_architecture() -> None:
    cache = parse_ldcache(Path("/etc/ld.so.cache").read_bytes())
    entry = cache.lookup("libc.so.6", X86_64.cache_flags)
    assert entry is not None and entry.path == "/lib/x86_64-linux-gnu/libc.so.6"
    i386 = next(a for a in ARCHES if a.name == "i386")
    lib32 = cache.lookup("libc.so.6", i386.cache_flags)
    # gcc-multilib puts a 32-bit libc in /usr/lib32 (listed by ldconfig with flags libc6)
    assert lib32 is not None and "32" in lib32.path
    assert cache.lookup("libnothing.so.9", X86_64.cache_flags) is None


@pytest.mark.parametrize("fmt", ["old", "compat", "new"])
def test_every_format_ldconfig_writes(tmp_path: Path, fmt: str) -> None:
    target = tmp_path / f"{fmt}.cache"
    subprocess.run(["ldconfig", "-c", fmt, "-C", str(target)], check=True)
    cache = parse_ldcache(target.read_bytes())
    assert [(e.soname, e.path) for e in cache.entries] == ldconfig_p(str(target))
    if fmt != "old":
        assert cache.generator is not None and "GLIBC" in cache.generator


def test_corrupt_caches_give_a_clear_error() -> None:
    data = Path("/etc/ld.so.cache").read_bytes()
    with pytest.raises(CorruptCache, match=r"not an ld\.so\.cache file"):
        parse_ldcache(b"garbage" * 10, "/etc/ld.so.cache")
    with pytest.raises(CorruptCache, match=r"truncated"):
        parse_ldcache(data[:30], "/etc/ld.so.cache")
    for cut in (60, 1000, len(data) // 2):
        try:
            parse_ldcache(data[:cut], "/etc/ld.so.cache")
        except CorruptCache as exc:
            assert str(exc).startswith("/etc/ld.so.cache: ")


def test_libcmp_orders_the_host_cache_as_ldconfig_does() -> None:
    import functools

    from slimmer.loader.ldcache import libcmp

    names = [e.soname for e in parse_ldcache(Path("/etc/ld.so.cache").read_bytes()).entries]
    def descending(a: str, b: str) -> int:
        return libcmp(b, a)

    assert names == sorted(names, key=functools.cmp_to_key(descending))
    assert libcmp("libfoo.so.10", "libfoo.so.9") > 0 > libcmp("libfoo.so.9", "libfoo.so.10")
    assert libcmp("libz.so.1", "libz.so.1") == 0
    assert libcmp("lib1", "liba") > 0


def test_written_cache_reads_back_in_ldconfig_and_in_slimmer(tmp_path: Path) -> None:
    from slimmer.loader.ldcache import write_ldcache

    pairs = [("libc.so.6", "/lib/x86_64-linux-gnu/libc.so.6"),
             ("libfoo.so.10", "/opt/v/lib/libfoo.so.10"),
             ("libfoo.so.9", "/opt/old/libfoo.so.9"),
             ("libz.so.1", "/usr/lib/x86_64-linux-gnu/libz.so.1")]
    data = write_ldcache(list(reversed(pairs)), X86_64.cache_flags[0])
    assert data == write_ldcache(pairs, X86_64.cache_flags[0])  # input order does not matter
    target = tmp_path / "ld.so.cache"
    target.write_bytes(data)
    listed = ldconfig_p(str(target))
    assert sorted(listed) == sorted(pairs)
    cache = parse_ldcache(data)
    for soname, path in pairs:
        entry = cache.lookup(soname, X86_64.cache_flags)
        assert entry is not None and entry.path == path


def test_a_huge_cache_is_refused_before_it_is_read(tmp_path: Path) -> None:
    # A 1.5 GB sparse file: read whole, it would cost 1.5 GB of memory.
    (tmp_path / "etc").mkdir()
    cache = tmp_path / "etc/ld.so.cache"
    with open(cache, "wb") as fh:
        fh.write(b"glibc-ld.so.cache1.1")
        fh.truncate(1536 << 20)
    with pytest.raises(FileProblem) as caught:
        read_ldcache(SysRoot(tmp_path))
    assert str(caught.value) == (f"/etc/ld.so.cache (in root {tmp_path}): {1536 << 20} bytes, "
                                 "more than the 64 MiB an ld.so.cache may have")
    # one within the limit is read (here: a header saying no entries, then zeros)
    os.truncate(cache, 1 << 20)
    empty = read_ldcache(SysRoot(tmp_path))
    assert empty is not None and empty.entries == ()
    cache.write_bytes(Path("/etc/ld.so.cache").read_bytes())
    found = read_ldcache(SysRoot(tmp_path))
    assert found is not None and found.lookup("libc.so.6", X86_64.cache_flags) is not None
