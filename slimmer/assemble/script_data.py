"""Where static evidence ends for a script: the data files its own package ships that nothing
kept. A packaged script reads its package's data by names its text builds at run time (cowsay's
`$cowpath/$f.cow`); when no literal, recipe, rule, `--add`, `--keep` or probe brought them, one
warning per script names the script, one of the files, how many there are, and the flags that
keep them.

A data file here is a file of a package that owns the script (dpkg): not documentation and the
like (evidence.filtered), not under a directory that is never one program's (evidence.NEVER),
not a program (executable) and not an ELF file (the loader and the commands' evidence decide on
those), present in the root. Without a package database nothing is said.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterable

from slimmer.assemble.evidence import GENERIC, NEVER, filtered
from slimmer.errors import SlimmerError
from slimmer.loader.dpkg import PackageDb
from slimmer.loader.root import Resolved, Root
from slimmer.notices import Notice

CODE = "script-data-left-out"
# What a package ships for the system rather than for its programs to read (evidence.filtered
# leaves out the rest of this kind).
SERVICE = ("/usr/lib/tmpfiles.d/", "/usr/lib/sysusers.d/", "/etc/apt/", "/usr/lib/udev/",
           "/etc/udev/", "/etc/profile.d/", "/etc/sudoers.d/", "/etc/X11/", "/etc/pam.d/",
           "/usr/share/polkit-1/", "/etc/sysctl.d/", "/usr/lib/sysctl.d/", "/etc/modprobe.d/",
           "/usr/share/lintian/", "/usr/share/doc-base/", "/etc/emacs/", "/usr/share/emacs/")


def left_out(root: Root, db: PackageDb, scripts: Iterable[str], kept: Callable[[str], bool],
             show: Callable[[str], str] = str) -> list[Notice]:
    """One notice for each script whose packages ship data files the image lacks; `kept(real)`
    says whether a file of the root (its real path) is in the image."""
    notices = []
    for script in scripts:
        found = _lookup(root, script)
        if found is None or not db:
            continue
        owners = db.owners_of(found.real) or db.owners_of(db.real(found.real))
        for package in owners:
            missing = _missing(root, db.files.get(package, ()), found.real, kept)
            if missing:
                notices.append(_notice(show(script), package, missing))
                break
    return notices


def _missing(root: Root, listed: Iterable[str], script: str, kept: Callable[[str], bool]
             ) -> list[str]:
    out = []
    for path in listed:
        if filtered(path) or any(path == d or path.startswith(d + "/") for d in NEVER):
            continue
        found = _lookup(root, path)
        if found is None or not found.is_file or found.real == script or kept(found.real):
            continue
        if found.mode & 0o111 or root.read_bytes(found.real, 4) == b"\x7fELF" \
                or any(path.startswith(d) for d in SERVICE):
            continue  # a program or a library
        out.append(path)
    return sorted(out)


def _notice(script: str, package: str, missing: list[str]) -> Notice:
    """The warning: the directory to keep is where all the files are, else the one holding the
    most of them (the first such), and the example is a file in it."""
    directory = os.path.commonpath(missing)  # the file itself when it is the only one
    if directory in GENERIC:
        counts = Counter(os.path.dirname(p) for p in missing)  # in the order of `missing`
        directory = max(counts, key=counts.__getitem__)
    example = next(p for p in missing if p == directory or p.startswith(directory + "/"))
    files = "file" if len(missing) == 1 else "files"
    return Notice(
        CODE, script,
        f"{len(missing)} data {files} of its package {package} left out (such as {example}), "
        "which it may read at run time",
        f"--add {directory}:{directory} (pack), --keep {directory} (slim), or --probe-args ARGS")


def _lookup(root: Root, path: str) -> Resolved | None:
    try:
        return root.lookup(path)
    except SlimmerError:
        return None
