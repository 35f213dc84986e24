"""Finding a program by name: the one PATH lookup of `deps`/`pack` arguments, of a slimmed
image's entry program and of `#!/usr/bin/env NAME`.

The working directory and PATH are arguments: the library never reads the process's own. The
default PATH is the one images get (Docker's), not the build machine's, so that a bare name
means the same program on every machine.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from slimmer.errors import FileProblem
from slimmer.loader.root import Root, SysRoot

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def find_in_path(root: Root, name: str, directories: Iterable[str],
                 executable: bool = False) -> str | None:
    """The first `DIR/name` of `directories` that is a regular file in the root (with an
    execute bit, when `executable`), or None. Empty and relative directories are skipped: they
    name no place inside the root."""
    for directory in directories:
        if not directory.startswith("/"):
            continue
        candidate = f"{directory.rstrip('/')}/{name}"
        found = root.lookup(candidate)
        if found is not None and found.is_file and (not executable or found.mode & 0o111):
            return candidate
    return None


def program_path(root: SysRoot, given: str, cwd: str, path: str = DEFAULT_PATH) -> str:
    """The in-root absolute path of a program argument. On the host root a relative path is
    relative to `cwd`; a bare name that is no file there is looked up in `path`."""
    if given.startswith("/"):
        return given
    if root.root == "/":
        here = os.path.normpath(os.path.join(cwd, given))
        if "/" in given or os.path.lexists(here):
            return here
    elif "/" in given:
        return "/" + given
    found = find_in_path(root, given, path.split(":"))
    if found is not None:
        return found
    return "/" + given if root.root != "/" else os.path.join(cwd, given)


def find_program(root: SysRoot, given: str, cwd: str, path: str = DEFAULT_PATH) -> str:
    """`program_path`, refusing a bare name found nowhere with both places it looked: the
    current directory (on the host root) and PATH."""
    found = program_path(root, given, cwd, path)
    if "/" in given or root.lookup(found) is not None:
        return found
    if root.root == "/":
        raise FileProblem(f"{given}: not in the current directory, nor in PATH ({path})",
                          code="program-not-found")
    raise FileProblem(f"{given}: not in PATH ({path}) inside the root {root.root}",
                      code="program-not-found")
