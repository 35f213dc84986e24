"""slimmer: minimal, reproducible container images from a program, found statically."""

from slimmer.elf import ElfInfo, Kind, read_elf
from slimmer.errors import SlimmerError
from slimmer.resolve import Closure, Library, Missing, Options, Resolver
from slimmer.sysroot import SysRoot

__all__ = [
    "Closure",
    "ElfInfo",
    "Kind",
    "Library",
    "Missing",
    "Options",
    "Resolver",
    "SlimmerError",
    "SysRoot",
    "read_elf",
]
__version__ = "0.1.0"
