"""Architecture facts for ELF headers of every supported ABI (headers made here, byte by byte)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from slimmer.loader.arch import ARCHES, EF_ARM_ABI_FLOAT_HARD, EM_ARM, detect
from slimmer.loader.elf import Kind, parse_elf
from slimmer.loader.ldpaths import glibc_defaults
from slimmer.loader.root import SysRoot


def header(machine: int, elf_class: int, little: bool, flags: int = 0) -> bytes:
    """A minimal ET_DYN file with one PT_INTERP segment."""
    order = "<" if little else ">"
    interp = b"/lib/ld.so.1\0"
    if elf_class == 64:
        ehdr = struct.pack(order + "HHIQQQIHHHHHH", 3, machine, 1, 0, 64, 0, flags, 64, 56, 1,
                           0, 0, 0)
        phdr = struct.pack(order + "IIQQQQQQ", 3, 4, 120, 0, 0, len(interp), len(interp), 1)
    else:
        ehdr = struct.pack(order + "HHIIIIIHHHHHH", 3, machine, 1, 0, 52, 0, flags, 52, 32, 1,
                           0, 0, 0)
        phdr = struct.pack(order + "IIIIIIII", 3, 84, 0, 0, len(interp), len(interp), 4, 1)
    ident = b"\x7fELF" + bytes([1 if elf_class == 32 else 2, 1 if little else 2, 1]) + b"\0" * 9
    return ident + ehdr + phdr + interp


@pytest.mark.parametrize("arch", ARCHES, ids=[a.name for a in ARCHES])
def test_every_abi_is_recognised(arch: object, tmp_path: Path) -> None:
    from slimmer.loader.arch import Arch

    assert isinstance(arch, Arch)
    flags = EF_ARM_ABI_FLOAT_HARD if arch.name == "armhf" else 0
    info = parse_elf(header(arch.machine, arch.elf_class, arch.little_endian, flags), "x")
    assert info.arch == arch and info.arch_name == arch.name
    assert info.kind is Kind.DYNAMIC and info.interpreter == "/lib/ld.so.1"
    # A Debian root of that architecture: multiarch directories; any other: lib64 or lib.
    debian = tmp_path / "debian"
    (debian / "usr/lib" / arch.triplet).mkdir(parents=True)
    defaults = glibc_defaults(SysRoot(debian), None, arch)
    assert defaults.dirs == (f"/lib/{arch.triplet}", f"/usr/lib/{arch.triplet}", "/lib",
                             "/usr/lib")
    assert defaults.lib_token == f"lib/{arch.triplet}"
    other = glibc_defaults(SysRoot(tmp_path), None, arch)
    assert other.dirs == (("/lib64", "/usr/lib64") if arch.lib64 else ("/lib", "/usr/lib"))


def test_arm_float_abi_decides_between_armhf_and_armel() -> None:
    assert detect(EM_ARM, 32, True, EF_ARM_ABI_FLOAT_HARD).name == "armhf"  # type: ignore[union-attr]
    assert detect(EM_ARM, 32, True, 0).name == "armel"  # type: ignore[union-attr]


def test_unknown_machine() -> None:
    info = parse_elf(header(0x1234, 64, True), "odd")
    assert info.arch is None and info.arch_name == "machine 4660-64"


def test_cache_flags_match_ldconfig_on_this_machine() -> None:
    # x86-64 entries in this machine's cache carry 0x303, i386 ones 0x003 (gcc-multilib).
    from slimmer.loader.ldcache import parse_ldcache

    cache = parse_ldcache(Path("/etc/ld.so.cache").read_bytes())
    flags = {e.flags for e in cache.entries}
    x86_64 = next(a for a in ARCHES if a.name == "x86_64")
    assert x86_64.cache_flags == (0x303,) and 0x303 in flags
    # the first flags are the ones an image's cache is written with: ldconfig's for i386
    # libraries linked with libc6 (the loader itself, linked with nothing, gets plain 0x001)
    i386 = next(a for a in ARCHES if a.name == "i386")
    lib32 = {e.flags for e in cache.entries
             if e.path.startswith("/lib32/") and "ld-linux" not in e.path}
    assert lib32 == {i386.cache_flags[0]} == {0x003}
