"""What differs per architecture: names, ld.so.cache flags, default directories, tokens.

Facts from glibc (sysdeps/*/dl-cache.h, ldconfig.h, the Debian multiarch triplets) and musl
(arch/*/reloc.h LDSO_ARCH). The ELF header gives machine, class, byte order and flags; `detect`
turns them into one `Arch`.
"""

from __future__ import annotations

from typing import NamedTuple

# e_machine values
EM_386 = 3
EM_MIPS = 8
EM_PPC64 = 21
EM_S390 = 22
EM_ARM = 40
EM_X86_64 = 62
EM_AARCH64 = 183
EM_RISCV = 243
EM_LOONGARCH = 258

EF_ARM_ABI_FLOAT_HARD = 0x400
EF_RISCV_FLOAT_ABI_DOUBLE = 0x4
EF_RISCV_FLOAT_ABI_MASK = 0x6

# ld.so.cache entry flags (glibc sysdeps/generic/ldconfig.h)
FLAG_ELF = 0x0001
FLAG_ELF_LIBC6 = 0x0003


class Arch(NamedTuple):
    """One ABI: everything the resolver and the image writer need to know about it."""

    name: str  # slimmer's name, also shown to users
    machine: int
    elf_class: int  # 32 or 64
    little_endian: bool
    triplet: str  # Debian multiarch triplet
    cache_flags: tuple[int, ...]  # ld.so.cache entry flags this ABI accepts; ldconfig's first
    lib64: bool  # Fedora-style /lib64 on non-multiarch systems
    platform: str  # AT_PLATFORM as the kernel reports it, for $PLATFORM
    musl_name: str  # LDSO_ARCH, as in /etc/ld-musl-<name>.path
    oci_arch: str
    oci_variant: str = ""
    hwcaps: tuple[str, ...] = ()  # glibc-hwcaps subdirectory names, best first
    # legacy hwcap names (glibc < 2.37) every CPU of the ABI has, in bit order
    legacy_hwcaps: tuple[str, ...] = ()

    def default_dirs(self, multiarch: bool) -> tuple[str, ...]:
        """glibc's compiled-in system directories when the interpreter does not tell us."""
        if multiarch:
            return (f"/lib/{self.triplet}", f"/usr/lib/{self.triplet}", "/lib", "/usr/lib")
        if self.lib64:
            return ("/lib64", "/usr/lib64")
        return ("/lib", "/usr/lib")

    def lib_token(self, multiarch: bool) -> str:
        """What glibc expands $LIB to."""
        if multiarch:
            return f"lib/{self.triplet}"
        return "lib64" if self.lib64 else "lib"


def _libc6(required: int) -> tuple[int, ...]:
    return (FLAG_ELF_LIBC6 | required,)


ARCHES: tuple[Arch, ...] = (
    Arch("x86_64", EM_X86_64, 64, True, "x86_64-linux-gnu", _libc6(0x0300), True, "x86_64",
         "x86_64", "amd64", hwcaps=("x86-64-v4", "x86-64-v3", "x86-64-v2"),
         legacy_hwcaps=("x86_64",)),
    Arch("i386", EM_386, 32, True, "i386-linux-gnu", (FLAG_ELF_LIBC6, FLAG_ELF), False, "i686",
         "i386", "386", legacy_hwcaps=("sse2",)),
    Arch("aarch64", EM_AARCH64, 64, True, "aarch64-linux-gnu", _libc6(0x0A00), True, "aarch64",
         "aarch64", "arm64", "v8"),
    Arch("armhf", EM_ARM, 32, True, "arm-linux-gnueabihf", _libc6(0x0900), False, "v7l",
         "armhf", "arm", "v7"),
    Arch("armel", EM_ARM, 32, True, "arm-linux-gnueabi", (FLAG_ELF_LIBC6 | 0x0B00, FLAG_ELF_LIBC6),
         False, "v5l", "arm", "arm", "v5"),
    Arch("riscv64", EM_RISCV, 64, True, "riscv64-linux-gnu", _libc6(0x1000), True, "riscv64",
         "riscv64", "riscv64"),
    Arch("ppc64le", EM_PPC64, 64, True, "powerpc64le-linux-gnu", _libc6(0x0500), True, "ppc64le",
         "powerpc64le", "ppc64le", hwcaps=("power10", "power9")),
    Arch("s390x", EM_S390, 64, False, "s390x-linux-gnu", _libc6(0x0400), True, "s390x", "s390x",
         "s390x", hwcaps=("z16", "z15", "z14", "z13")),
    Arch("loong64", EM_LOONGARCH, 64, True, "loongarch64-linux-gnu", _libc6(0x1200), True,
         "loongarch64", "loongarch64", "loong64"),
)

# The bits of legacy ld.so.cache entries (glibc < 2.37) on x86, as ldconfig sets them for a
# library in a hwcap or platform subdirectory (sysdeps/x86/dl-hwcap.h; platforms from
# _DL_FIRST_PLATFORM, 48) and as ld.so's search_cache checks them. Other architectures: none.
LEGACY_HWCAP_BITS = {EM_X86_64: {"sse2": 0, "x86_64": 1, "avx512_1": 2},
                     EM_386: {"sse2": 0, "x86_64": 1, "avx512_1": 2}}
LEGACY_PLATFORM_BITS = {EM_X86_64: {"haswell": 50, "xeon_phi": 51},
                        EM_386: {"i586": 48, "i686": 49, "haswell": 50, "xeon_phi": 51}}
LEGACY_PLATFORM_MASK = {EM_X86_64: 0xF << 48, EM_386: 0xF << 48}


_MACHINE_NAMES = {
    EM_386: "i386", EM_MIPS: "mips", EM_PPC64: "ppc64", EM_S390: "s390", EM_ARM: "arm",
    EM_X86_64: "x86-64", EM_AARCH64: "aarch64", EM_RISCV: "riscv", EM_LOONGARCH: "loongarch",
}


def machine_name(machine: int) -> str:
    return _MACHINE_NAMES.get(machine, f"machine {machine}")


def detect(machine: int, elf_class: int, little_endian: bool, flags: int) -> Arch | None:
    """The ABI of an ELF header, or None when slimmer does not know it."""
    for arch in ARCHES:
        if (arch.machine, arch.elf_class) != (machine, elf_class):
            continue
        if arch.little_endian != little_endian:
            continue
        if machine == EM_ARM:
            hard = bool(flags & EF_ARM_ABI_FLOAT_HARD)
            if hard != (arch.name == "armhf"):
                continue
        return arch
    return None
