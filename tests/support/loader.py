"""The real loader as the tests' oracle: what `ld.so --list` opens for a program."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.support.host import LOADER as HOST_LOADER

_LIST_LINE = re.compile(r"^\s*(\S+)(?: => (.*?))? \(0x[0-9a-f]+\)$")
_NOT_FOUND = re.compile(r"^\s*(\S+) => not found$")


_FATAL = re.compile(r"error while loading shared libraries: (\S+): cannot open shared object")


def loader_list(program: str | Path, env: dict[str, str] | None = None,
                loader: str = HOST_LOADER) -> list[str]:
    """What the real loader opens for `program`, in its order (test oracle only): paths, and
    `MISSING:name` for names it could not find. The vDSO is left out. glibc's `--list` stops
    at the first library it cannot find, so then the answer is just that `MISSING:name`."""
    return parse_loader_list(subprocess.run([loader, "--list", str(program)],
                                            capture_output=True, text=True, env=env or {}))


def parse_loader_list(done: subprocess.CompletedProcess[str]) -> list[str]:
    """The output of `ld.so --list` (however it was run) as `loader_list` returns it."""
    fatal = _FATAL.search(done.stderr)
    if fatal:
        return [f"MISSING:{fatal.group(1)}"]
    assert done.returncode == 0, done.stderr
    out: list[str] = []
    for line in done.stdout.splitlines():
        miss = _NOT_FOUND.match(line)
        if miss:
            out.append(f"MISSING:{miss.group(1)}")
            continue
        m = _LIST_LINE.match(line)
        if m is None:
            continue
        path = m.group(2) or m.group(1)
        if "/" in path:
            out.append(path)
    return out


__all__ = ["HOST_LOADER", "loader_list", "parse_loader_list"]
