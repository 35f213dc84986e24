"""slimmer: minimal, reproducible container images from a program, found statically."""

from __future__ import annotations

from typing import TYPE_CHECKING

from slimmer.errors import SlimmerError
from slimmer.loader.elf import ElfInfo, Kind, read_elf
from slimmer.loader.resolve import Closure, Library, Missing, Options, Resolver
from slimmer.loader.root import SysRoot

if TYPE_CHECKING:
    from typing import Any

    from slimmer.assemble.pack import PackResult


def pack(programs: list[str] | tuple[str, ...], output: str, **options: Any) -> PackResult:
    """Pack programs (absolute paths inside `root`, default /) into an image archive at
    `output`. Keyword options: tag, the image spec's (entrypoint, cmd, env, workdir, user,
    labels, annotations, expose, stop_signal) and the fields of
    slimmer.assemble.options.BuildOptions (add, root, library_path, compression, keep_setuid,
    epoch, layers: a count or None for auto, workers: threads compressing, default 1;
    cache_dir: the layer cache, default none, ...). The CLI's `slimmer pack` is a thin layer
    over this (all CPUs, the cache on)."""
    from slimmer.assemble.options import from_keywords
    from slimmer.assemble.pack import pack as run

    return run(*from_keywords(tuple(programs), output, **options))


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
    "pack",
    "read_elf",
]
__version__ = "0.1.0"
