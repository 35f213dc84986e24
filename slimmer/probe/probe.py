"""What a probe keeps: of every path the workload touched successfully, those that are files,
directories or symlinks of the root, except

- pseudo file systems: /proc, /sys, /dev (the container engine provides them);
- what the run itself writes: /tmp and /var/tmp (a tmpfs of the sandbox's own; nothing else is
  writable in the sandbox, so nothing else can be the run's own output);
- caches: /var/cache and any `.cache` directory (rebuilt when missing).

A file is kept with the symlinks on the way to it; a directory that was only opened, listed or
looked up is kept as a directory, without what it holds (what of it the workload used was
touched by name). Each path keeps the first reason it was touched for: `probe: opened by
PROGRAM`, `probe: executed`, `probe: listed by PROGRAM`, `probe: looked up by PROGRAM`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from slimmer.loader.root import Root

if TYPE_CHECKING:  # the sandbox (subprocess and all) is imported only by a probe that runs
    from slimmer.probe.sandbox import Run
    from slimmer.probe.trace import Touch

PSEUDO = ("/proc", "/sys", "/dev")
PRIVATE = ("/tmp", "/var/tmp")
CACHES = ("/var/cache",)
PREFIX = "probe: "
_VERBS = {"open": "opened by", "list": "listed by", "stat": "looked up by"}
_STRENGTH = {"exec": 3, "open": 2, "list": 1, "stat": 0}  # the reason a path is kept for


@dataclass(frozen=True, slots=True)
class Probed:
    """A path the probe keeps, and why."""

    path: str
    reason: str


def _under(path: str, tops: tuple[str, ...]) -> bool:
    return any(path == top or path.startswith(top + "/") for top in tops)


def excluded(path: str) -> bool:
    """Pseudo, private to the run, or a cache (module docstring)."""
    return (_under(path, PSEUDO + PRIVATE + CACHES) or "/.cache/" in path
            or path.endswith("/.cache"))


def reason(touch: Touch) -> str:
    if touch.kind == "exec":
        return f"{PREFIX}executed"
    return f"{PREFIX}{_VERBS[touch.kind]} {touch.program}"


def kept(root: Root, runs: list[Run]) -> tuple[Probed, ...]:
    """The paths the runs touched that the image keeps (module docstring), each once, in the
    order first touched, with the strongest reason it was touched for (executed, opened,
    listed, looked up)."""
    out: dict[str, tuple[int, Probed]] = {}
    for run in runs:
        for touch in run.touched:
            for path in (touch.path, touch.opened):
                if path is None or excluded(path):
                    continue
                strength = _STRENGTH[touch.kind]
                if path in out:
                    if strength > out[path][0]:
                        out[path] = (strength, Probed(path, reason(touch)))
                    continue
                if root.lookup(path) is not None:
                    out[path] = (strength, Probed(path, reason(touch)))
    return tuple(p for _, p in out.values())
